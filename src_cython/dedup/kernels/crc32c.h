/* CRC-32C (Castagnoli), the checksum of Kafka's v2 record batches and producer-state
 * snapshots (spec §8.5): reflected polynomial 0x82F63B78, initial value and final xor
 * 0xFFFFFFFF, the same as the JDK's java.util.zip.CRC32C that Kafka's Crc32C wraps.
 *
 * Header-only (static functions): each Cython module that includes it gets its own copy, with
 * its own mode. Kernels, scalar version and run-time dispatcher side by side: the table-driven
 * fallback (dedup_crc32c_software), the CRC instruction in three streams (SSE 4.2 or ARMv8),
 * and dedup_crc32c_setup / dedup_crc32c, which pick the best the CPU has. Spec: docs/spec.md §8.5 (the CRC), §4.7 (its
 * check value), §4.2 and §8.1 (the bytes it covers in a snapshot and in a batch).
 *
 *   dedup_crc32c(crc, data, length)   CRC of data, continuing from `crc`, the finished CRC
 *                                     of the bytes before it (0 to start)
 *
 * The CPU's CRC instruction is used where it exists: SSE 4.2's crc32 on x86-64, the CRC
 * extension of ARMv8 (crc32c*), each compiled for its target with a function attribute and
 * chosen at run time after a CPU check (platform/cpu.h, which DEDUP_DISABLE_CPU_FEATURES
 * overrides for a whole process), so the module also runs on CPUs without it. The fallback is
 * table driven, eight bytes at a time ("slicing by 8"). dedup_crc32c_use_hardware(0) forces
 * the fallback in one module (tests compare the two).
 *
 * The instruction takes 3 cycles and the CPU starts one per cycle, so one stream runs at a
 * third of what the unit can do. Buffers of 3 x 256 bytes or more run in three streams: each
 * round checksums three lanes of L bytes at once (L = 4096 while 3 lanes are left, then 256),
 * the first from the running register, the others from 0, and joins them. The register
 * without the final xor is linear: R(s, A B C) = Z(Z(R(s, A)) ^ R(0, B)) ^ R(0, C), where Z
 * appends L zero bytes, i.e. multiplies by x^(8L) mod P; that product, a linear map of 32
 * bits, is read from four 256-entry tables per lane length (built once, with the GF(2)
 * multiply below). Shorter buffers and the tail after the rounds run in one stream.
 *
 * Folding with carry-less multiplies on 512-bit registers (AVX-512 VPCLMULQDQ), about twice
 * the streams' speed on megabytes, was tried and removed: it was slower than the streams on
 * the 1 KiB batches of validate_batches and gained under 10% of a snapshot encode or decode
 * (benchmarks/RESULTS.md, "The bar for low-level code").
 */
#ifndef DEDUP_CRC32C_H
#define DEDUP_CRC32C_H

#include <stddef.h>
#include <stdint.h>
#include "platform/cpu.h"
#include <string.h>

#define DEDUP_CRC32C_POLY 0x82F63B78u

static uint32_t dedup_crc32c_table[8][256];
/* -1: not decided yet; 0: table driven; 1: CPU instruction. */
static int dedup_crc32c_mode = -1;

static void dedup_crc32c_build_table(void)
{
    uint32_t n, c;
    int k;
    for (n = 0; n < 256; n++) {
        c = n;
        for (k = 0; k < 8; k++)
            c = (c & 1u) ? (c >> 1) ^ DEDUP_CRC32C_POLY : c >> 1;
        dedup_crc32c_table[0][n] = c;
    }
    for (n = 0; n < 256; n++) {
        c = dedup_crc32c_table[0][n];
        for (k = 1; k < 8; k++) {
            c = dedup_crc32c_table[0][c & 0xFFu] ^ (c >> 8);
            dedup_crc32c_table[k][n] = c;
        }
    }
}

/* The table-driven register update (no pre/post inversion). */
static uint32_t dedup_crc32c_software(uint32_t crc, const unsigned char *p, size_t n)
{
    const uint32_t (*t)[256] = (const uint32_t (*)[256])dedup_crc32c_table;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t word;
    while (n >= 8) {
        memcpy(&word, p, 8);
        word ^= crc;
        crc = t[7][word & 0xFF] ^ t[6][(word >> 8) & 0xFF] ^ t[5][(word >> 16) & 0xFF]
            ^ t[4][(word >> 24) & 0xFF] ^ t[3][(word >> 32) & 0xFF] ^ t[2][(word >> 40) & 0xFF]
            ^ t[1][(word >> 48) & 0xFF] ^ t[0][word >> 56];
        p += 8;
        n -= 8;
    }
#endif
    while (n--)
        crc = t[0][(crc ^ *p++) & 0xFFu] ^ (crc >> 8);
    return crc;
}

/* Polynomials mod P in the reflected order of the register: bit 31 is x^0, bit 0 x^31. */
static uint32_t dedup_crc32c_multmodp(uint32_t a, uint32_t b)
{
    uint32_t product = 0, m;
    for (m = 0x80000000u; m; m >>= 1) {
        if (a & m)
            product ^= b;
        b = (b & 1u) ? (b >> 1) ^ DEDUP_CRC32C_POLY : b >> 1;   /* b * x */
    }
    return product;
}

/* x^(8 n) mod P: what appending n zero bytes multiplies the register by. */
static uint32_t dedup_crc32c_x8nmodp(size_t n)
{
    uint32_t power = 0x00800000u, result = 0x80000000u;   /* x^8, 1 */
    for (; n; n >>= 1) {
        if (n & 1)
            result = dedup_crc32c_multmodp(power, result);
        power = dedup_crc32c_multmodp(power, power);
    }
    return result;
}

/* x^n mod P, n in bits. */
static inline uint32_t dedup_crc32c_xnmodp(uint64_t n)
{
    uint32_t power = 0x40000000u, result = 0x80000000u;   /* x, 1 */
    for (; n; n >>= 1) {
        if (n & 1)
            result = dedup_crc32c_multmodp(power, result);
        power = dedup_crc32c_multmodp(power, power);
    }
    return result;
}

#define DEDUP_CRC32C_LONG_LANE 4096
#define DEDUP_CRC32C_SHORT_LANE 256
/* Z for each lane length: shift[k][v] = (v << 8k) * x^(8L) mod P. */
static uint32_t dedup_crc32c_shift_long[4][256];
static uint32_t dedup_crc32c_shift_short[4][256];

static void dedup_crc32c_build_shift(uint32_t shift[4][256], size_t lane)
{
    uint32_t factor = dedup_crc32c_x8nmodp(lane), low;
    int k, v;
    for (k = 0; k < 4; k++) {
        shift[k][0] = 0;
        for (v = 1; v < 256; v++) {
            low = (uint32_t)(v & -v);
            shift[k][v] = (uint32_t)v == low ? dedup_crc32c_multmodp(factor, low << (8 * k))
                                              : shift[k][v ^ low] ^ shift[k][low];
        }
    }
}

static inline uint32_t dedup_crc32c_shift(const uint32_t shift[4][256], uint32_t c)
{
    return shift[0][c & 0xFFu] ^ shift[1][(c >> 8) & 0xFFu] ^ shift[2][(c >> 16) & 0xFFu] ^ shift[3][c >> 24];
}

/* Three streams over a CPU's 8-byte CRC step STEP(register, word): rounds of three lanes of
 * LANE bytes while they fit, joined into c0 through SHIFT (Z for LANE). */
#define DEDUP_CRC32C_ROUNDS(STEP, LANE, SHIFT)                                               \
    while (n >= 3 * (size_t)(LANE)) {                                                        \
        uint64_t c1 = 0, c2 = 0, w0, w1, w2;                                                 \
        size_t i;                                                                            \
        for (i = 0; i < (LANE); i += 8) {                                                    \
            memcpy(&w0, p + i, 8);                                                           \
            memcpy(&w1, p + (LANE) + i, 8);                                                  \
            memcpy(&w2, p + 2 * (LANE) + i, 8);                                              \
            c0 = STEP(c0, w0);                                                               \
            c1 = STEP(c1, w1);                                                               \
            c2 = STEP(c2, w2);                                                               \
        }                                                                                    \
        c0 = dedup_crc32c_shift(SHIFT, dedup_crc32c_shift(SHIFT, (uint32_t)c0) ^ (uint32_t)c1) \
             ^ (uint32_t)c2;                                                                 \
        p += 3 * (size_t)(LANE);                                                             \
        n -= 3 * (size_t)(LANE);                                                             \
    }

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define DEDUP_CRC32C_HARDWARE "sse4.2"

__attribute__((target("sse4.2")))
static uint32_t dedup_crc32c_hardware(uint32_t crc, const unsigned char *p, size_t n)
{
    uint64_t c0 = crc, word;
    DEDUP_CRC32C_ROUNDS(_mm_crc32_u64, DEDUP_CRC32C_LONG_LANE, dedup_crc32c_shift_long)
    DEDUP_CRC32C_ROUNDS(_mm_crc32_u64, DEDUP_CRC32C_SHORT_LANE, dedup_crc32c_shift_short)
    while (n >= 8) {
        memcpy(&word, p, 8);
        c0 = _mm_crc32_u64(c0, word);
        p += 8;
        n -= 8;
    }
    while (n--)
        c0 = _mm_crc32_u8((uint32_t)c0, *p++);
    return (uint32_t)c0;
}

static int dedup_crc32c_hardware_present(void)
{
    return dedup_cpu_has("sse4.2");
}

#elif defined(__aarch64__) && defined(__GNUC__) && defined(__linux__)
#include <arm_acle.h>
#define DEDUP_CRC32C_HARDWARE "armv8-crc"

#define DEDUP_CRC32C_ARM_STEP(c, w) ((uint64_t)__crc32cd((uint32_t)(c), (w)))

__attribute__((target("+crc")))
static uint32_t dedup_crc32c_hardware(uint32_t crc, const unsigned char *p, size_t n)
{
    uint64_t c0 = crc, word;
    DEDUP_CRC32C_ROUNDS(DEDUP_CRC32C_ARM_STEP, DEDUP_CRC32C_LONG_LANE, dedup_crc32c_shift_long)
    DEDUP_CRC32C_ROUNDS(DEDUP_CRC32C_ARM_STEP, DEDUP_CRC32C_SHORT_LANE, dedup_crc32c_shift_short)
    crc = (uint32_t)c0;
    while (n >= 8) {
        memcpy(&word, p, 8);
        crc = __crc32cd(crc, word);
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = __crc32cb(crc, *p++);
    return crc;
}

static int dedup_crc32c_hardware_present(void)
{
    return dedup_cpu_has("crc32");
}

#else
#define DEDUP_CRC32C_HARDWARE ""

static uint32_t dedup_crc32c_hardware(uint32_t crc, const unsigned char *p, size_t n)
{
    return dedup_crc32c_software(crc, p, n);
}

static int dedup_crc32c_hardware_present(void)
{
    return 0;
}
#endif

/* The best mode up to `wanted` that this CPU has. */
static int dedup_crc32c_best(int wanted)
{
    return (wanted >= 1 && dedup_crc32c_hardware_present()) ? 1 : 0;
}

/* Decide once which implementation runs; cheap to call again. Returns the mode. */
static int dedup_crc32c_setup(void)
{
    if (dedup_crc32c_mode < 0) {
        dedup_crc32c_build_table();
        dedup_crc32c_build_shift(dedup_crc32c_shift_long, DEDUP_CRC32C_LONG_LANE);
        dedup_crc32c_build_shift(dedup_crc32c_shift_short, DEDUP_CRC32C_SHORT_LANE);
        dedup_crc32c_mode = dedup_crc32c_best(1);
    }
    return dedup_crc32c_mode;
}

/* The mode to use: 0 the table, 1 the CRC instruction where the CPU has it (else the table);
 * returns the mode now in force. Tests compare them. */
static int dedup_crc32c_use_hardware(int wanted)
{
    dedup_crc32c_setup();
    dedup_crc32c_mode = dedup_crc32c_best(wanted);
    return dedup_crc32c_mode;
}

static uint32_t dedup_crc32c(uint32_t crc, const void *data, size_t length)
{
    const unsigned char *p = (const unsigned char *)data;
    uint32_t state = ~crc;
    if (dedup_crc32c_mode < 0)
        dedup_crc32c_setup();
    state = dedup_crc32c_mode ? dedup_crc32c_hardware(state, p, length) : dedup_crc32c_software(state, p, length);
    return ~state;
}

#endif /* DEDUP_CRC32C_H */
