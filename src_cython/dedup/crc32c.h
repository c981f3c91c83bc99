/* CRC-32C (Castagnoli), the checksum of Kafka's v2 record batches and producer-state
 * snapshots (spec §8.5): reflected polynomial 0x82F63B78, initial value and final xor
 * 0xFFFFFFFF, the same as the JDK's java.util.zip.CRC32C that Kafka's Crc32C wraps.
 *
 * Header-only (static functions): each Cython module that includes it gets its own copy.
 *
 *   dedup_crc32c(crc, data, length)   CRC of data, continuing from `crc`, the finished CRC
 *                                     of the bytes before it (0 to start)
 *
 * The CPU's CRC instruction is used where it exists: SSE 4.2's crc32 on x86-64, the CRC
 * extension of ARMv8 (crc32c*), each compiled for its target with a function attribute and
 * chosen at run time after a CPU check, so the module also runs on CPUs without it. The
 * fallback is table driven, eight bytes at a time ("slicing by 8").
 * dedup_crc32c_use_hardware(0) forces the fallback (tests compare the two).
 */
#ifndef DEDUP_CRC32C_H
#define DEDUP_CRC32C_H

#include <stddef.h>
#include <stdint.h>
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

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define DEDUP_CRC32C_HARDWARE "sse4.2"

__attribute__((target("sse4.2")))
static uint32_t dedup_crc32c_hardware(uint32_t crc, const unsigned char *p, size_t n)
{
    uint64_t c = crc, word;
    while (n >= 8) {
        memcpy(&word, p, 8);
        c = _mm_crc32_u64(c, word);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = _mm_crc32_u8((uint32_t)c, *p++);
    return (uint32_t)c;
}

static int dedup_crc32c_hardware_present(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2");
}

#elif defined(__aarch64__) && defined(__GNUC__) && defined(__linux__)
#include <arm_acle.h>
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#define DEDUP_CRC32C_HARDWARE "armv8-crc"

__attribute__((target("+crc")))
static uint32_t dedup_crc32c_hardware(uint32_t crc, const unsigned char *p, size_t n)
{
    uint64_t word;
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
    return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
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

/* Decide once which implementation runs; cheap to call again. Returns the mode. */
static int dedup_crc32c_setup(void)
{
    if (dedup_crc32c_mode < 0) {
        dedup_crc32c_build_table();
        dedup_crc32c_mode = dedup_crc32c_hardware_present() ? 1 : 0;
    }
    return dedup_crc32c_mode;
}

/* Use the CPU instruction (if present) or not; returns the mode now in force. */
static int dedup_crc32c_use_hardware(int wanted)
{
    dedup_crc32c_setup();
    dedup_crc32c_mode = (wanted && dedup_crc32c_hardware_present()) ? 1 : 0;
    return dedup_crc32c_mode;
}

static uint32_t dedup_crc32c(uint32_t crc, const void *data, size_t length)
{
    const unsigned char *p = (const unsigned char *)data;
    uint32_t state = ~crc;
    if (dedup_crc32c_mode < 0)
        dedup_crc32c_setup();
    state = dedup_crc32c_mode ? dedup_crc32c_hardware(state, p, length)
                              : dedup_crc32c_software(state, p, length);
    return ~state;
}

#endif /* DEDUP_CRC32C_H */
