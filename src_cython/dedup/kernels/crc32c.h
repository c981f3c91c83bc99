/* CRC-32C (Castagnoli), the checksum of Kafka's v2 record batches and producer-state
 * snapshots (spec §8.5): reflected polynomial 0x82F63B78, initial value and final xor
 * 0xFFFFFFFF, the same as the JDK's java.util.zip.CRC32C that Kafka's Crc32C wraps.
 *
 * Header-only (static functions): each Cython module that includes it gets its own copy, with
 * its own mode. Kernels, scalar version and run-time dispatcher side by side: the table-driven
 * fallback (dedup_crc32c_software), the CRC instruction in three streams (SSE 4.2 or ARMv8),
 * folding with carry-less multiplies (AVX-512 VPCLMULQDQ), and dedup_crc32c_setup /
 * dedup_crc32c, which pick the best the CPU has. Spec: docs/spec.md §8.5 (the CRC), §4.7 (its
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
 * Where the CPU also multiplies without carries on 512-bit registers (x86-64 with AVX-512 and
 * VPCLMULQDQ), buffers of DEDUP_CRC32C_FOLD_MIN bytes and more are folded instead, about twice
 * as fast as the three streams here (50 against 25 GB/s on the benchmark machine): 256 bytes
 * at a time in four registers, each 128-bit lane replaced by its product with x^D mod P (D the
 * distance folded over), the register mod P unchanged; the last 128 bits then go through two
 * crc32 instructions and the tail (under 64 bytes) through the streams above.
 */
#ifndef DEDUP_CRC32C_H
#define DEDUP_CRC32C_H

#include <stddef.h>
#include <stdint.h>
#include "platform/cpu.h"
#include <string.h>

#define DEDUP_CRC32C_POLY 0x82F63B78u

static uint32_t dedup_crc32c_table[8][256];
/* -1: not decided yet; 0: table driven; 1: CPU instruction; 2: folding (x86-64 AVX-512). */
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

#if (defined(__GNUC__) && __GNUC__ >= 9) || (defined(__clang__) && __clang_major__ >= 8)
#include <immintrin.h>
#define DEDUP_CRC32C_FOLD 1
#define DEDUP_CRC32C_FOLD_MIN 512
#define DEDUP_CRC32C_FOLD_TARGET __attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.2")))

/* Per fold distance D (bits: 2048 for the four registers, 512 from one register to the next,
 * 384, 256 and 128 between the lanes of the last): the multipliers of a lane's low and high
 * 64 bits. The low 64 bits hold the lane's first 8 bytes, i.e. the lane's polynomial is
 * L x^64 + H; moving it D bits on multiplies it by x^D, and L x^(D+64) + H x^D mod P fits the
 * lane it lands on. A carry-less multiply of two bit-reflected 64-bit values yields their
 * product times x (the reflected product is one bit short of 128), hence x^(D+63) and x^(D-1),
 * each placed in the high 32 bits of its 64 (bit 63 - d holds the coefficient of x^d). */
static uint64_t dedup_crc32c_fold_k[5][2];

static void dedup_crc32c_build_fold(void)
{
    static const uint64_t distance[5] = {2048, 512, 384, 256, 128};
    int i;
    for (i = 0; i < 5; i++) {
        dedup_crc32c_fold_k[i][0] = (uint64_t)dedup_crc32c_xnmodp(distance[i] + 63) << 32;
        dedup_crc32c_fold_k[i][1] = (uint64_t)dedup_crc32c_xnmodp(distance[i] - 1) << 32;
    }
}

DEDUP_CRC32C_FOLD_TARGET
static inline __m512i dedup_crc32c_fold512(__m512i x, __m512i k, __m512i data)
{
    return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11),
                                     data, 0x96);   /* a ^ b ^ c */
}

DEDUP_CRC32C_FOLD_TARGET
static inline __m128i dedup_crc32c_fold128(__m128i x, int distance, __m128i data)
{
    __m128i k = _mm_loadu_si128((const __m128i *)dedup_crc32c_fold_k[distance]);
    return _mm_ternarylogic_epi64(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11), data, 0x96);
}

/* The register (no inversion) over p[0, n), n >= 256. */
DEDUP_CRC32C_FOLD_TARGET
static inline uint32_t dedup_crc32c_fold(uint32_t crc, const unsigned char *p, size_t n)
{
    __m512i x0 = _mm512_loadu_si512(p), x1 = _mm512_loadu_si512(p + 64);
    __m512i x2 = _mm512_loadu_si512(p + 128), x3 = _mm512_loadu_si512(p + 192), k;
    __m128i y;
    uint64_t c;
    /* The register xored into the first 4 bytes: the rest is then a CRC from 0. */
    x0 = _mm512_xor_si512(x0, _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)crc)));
    p += 256;
    n -= 256;
    k = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)dedup_crc32c_fold_k[0]));
    while (n >= 256) {
        x0 = dedup_crc32c_fold512(x0, k, _mm512_loadu_si512(p));
        x1 = dedup_crc32c_fold512(x1, k, _mm512_loadu_si512(p + 64));
        x2 = dedup_crc32c_fold512(x2, k, _mm512_loadu_si512(p + 128));
        x3 = dedup_crc32c_fold512(x3, k, _mm512_loadu_si512(p + 192));
        p += 256;
        n -= 256;
    }
    k = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)dedup_crc32c_fold_k[1]));
    x1 = dedup_crc32c_fold512(x0, k, x1);
    x2 = dedup_crc32c_fold512(x1, k, x2);
    x3 = dedup_crc32c_fold512(x2, k, x3);
    while (n >= 64) {
        x3 = dedup_crc32c_fold512(x3, k, _mm512_loadu_si512(p));
        p += 64;
        n -= 64;
    }
    y = _mm512_extracti32x4_epi32(x3, 3);
    y = dedup_crc32c_fold128(_mm512_extracti32x4_epi32(x3, 0), 2, y);
    y = dedup_crc32c_fold128(_mm512_extracti32x4_epi32(x3, 1), 3, y);
    y = dedup_crc32c_fold128(_mm512_extracti32x4_epi32(x3, 2), 4, y);
    /* 128 bits left, congruent to everything so far: their CRC from 0 is the register. */
    c = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(y));
    c = _mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(y, 1));
    return dedup_crc32c_hardware((uint32_t)c, p, n);
}

static int dedup_crc32c_fold_present(void)
{
    return dedup_cpu_has("sse4.2") && dedup_cpu_has("avx512f") && dedup_cpu_has("avx512vl")
           && dedup_cpu_has("vpclmulqdq") && dedup_cpu_has("pclmul");
}
#endif

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

#ifndef DEDUP_CRC32C_FOLD
#define DEDUP_CRC32C_FOLD 0
#define DEDUP_CRC32C_FOLD_MIN ((size_t)-1)
static inline void dedup_crc32c_build_fold(void) {}
static inline uint32_t dedup_crc32c_fold(uint32_t crc, const unsigned char *p, size_t n)
{
    return dedup_crc32c_hardware(crc, p, n);
}
static int dedup_crc32c_fold_present(void)
{
    return 0;
}
#endif

/* The best mode up to `wanted` that this CPU has. */
static int dedup_crc32c_best(int wanted)
{
    if (wanted >= 2 && dedup_crc32c_fold_present())
        return 2;
    return (wanted >= 1 && dedup_crc32c_hardware_present()) ? 1 : 0;
}

/* Decide once which implementation runs; cheap to call again. Returns the mode. */
static int dedup_crc32c_setup(void)
{
    if (dedup_crc32c_mode < 0) {
        dedup_crc32c_build_table();
        dedup_crc32c_build_shift(dedup_crc32c_shift_long, DEDUP_CRC32C_LONG_LANE);
        dedup_crc32c_build_shift(dedup_crc32c_shift_short, DEDUP_CRC32C_SHORT_LANE);
        dedup_crc32c_build_fold();
        dedup_crc32c_mode = dedup_crc32c_best(2);
    }
    return dedup_crc32c_mode;
}

/* The mode to use: 0 the table, 1 the CRC instruction alone, 2 folding where the CPU can (and
 * else the best of the others); returns the mode now in force. Tests compare them. */
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
    if (dedup_crc32c_mode == 2 && length >= DEDUP_CRC32C_FOLD_MIN)
        state = dedup_crc32c_fold(state, p, length);
    else
        state = dedup_crc32c_mode ? dedup_crc32c_hardware(state, p, length)
                                  : dedup_crc32c_software(state, p, length);
    return ~state;
}

#endif /* DEDUP_CRC32C_H */
