/* The sequential kernels of remove_expired (table/expiry.pxi): marking the expired producers
 * in a bitmap from the timestamp column (and counting them), and rewriting the index in one
 * sweep once entries have moved. Kernel, scalar version and run-time dispatcher side by side:
 * the marking and the count come in a portable form and, on x86-64 with GCC or clang, an AVX2
 * (and POPCNT) form, which dedup_mark_expired and dedup_count_bits pick at run time
 * (platform/cpu.h: avx2 and popcnt, which DEDUP_DISABLE_CPU_FEATURES can switch off); the
 * sweep is portable only (an AVX2 form with gathers gained nothing: benchmarks/RESULTS.md,
 * "The bar for low-level code").
 *
 * Spec: docs/spec.md §6 (the expiry predicate, whose timestamp half is marked here: now -
 * lastTimestamp >= expiration, as lastTimestamp <= threshold; ongoing transactions are kept by
 * the caller). */
#ifndef DEDUP_EXPIRY_H
#define DEDUP_EXPIRY_H

#include <stddef.h>
#include <stdint.h>
#include "platform/cpu.h"

#define DEDUP_EXPIRY_EMPTY ((uint32_t)0xFFFFFFFFu)
#define DEDUP_EXPIRY_DELETED ((uint32_t)0xFFFFFFFEu)

/* Bit k of the result: stamps[k] <= threshold, for k < n <= 64 (higher bits 0). */
#define DEDUP_MARK_BODY                                                                     \
    uint64_t word = 0;                                                                      \
    size_t k;                                                                               \
    for (k = 0; k < n; k++)                                                                 \
        word |= (uint64_t)(stamps[k] <= threshold) << k;                                    \
    return word;

/* The index sweep: every slot's new value from its old one. A slot holds (tag | v), v the
 * entry number in its low bits (idx_mask), or a sentinel (EMPTY, DELETED: their low bits are
 * idx_mask and idx_mask - 1, above every entry number). Entry v:
 *   - was removed (bit v of `removed`; below `kept` only, zero from the old count up to
 *     idx_mask): the slot becomes DELETED;
 *   - was in the tail, the numbers [kept, last] with last = old count - 1: the slot takes
 *     moved_to[last - v] (its new number, or DELETED when it was removed);
 *   - else (it stayed, or the slot is a sentinel): unchanged.
 * Written without branches: slots are random, so any branch on them would be mispredicted. */
#define DEDUP_SWEEP_BODY                                                                    \
    const uint32_t tag_mask = ~idx_mask;                                                    \
    size_t k;                                                                               \
    for (k = 0; k < capacity; k++) {                                                        \
        uint32_t s = index[k];                                                              \
        uint32_t v = s & idx_mask;                                                          \
        uint32_t gone = (uint32_t)(removed[v >> 5] >> (v & 31)) & 1u;                       \
        uint32_t j = last - v;                                                              \
        uint32_t in_tail = j < tail;                                                        \
        uint32_t moved = moved_to[in_tail ? j : 0];                                         \
        uint32_t low = gone ? DEDUP_EXPIRY_DELETED : v;                                     \
        low = in_tail ? moved : low;                                                        \
        /* DELETED's high bits are all set: OR-ing a tag into it leaves it DELETED. */      \
        index[k] = (s & tag_mask) | low;                                                    \
    }

static uint64_t dedup_mark_expired_portable(const int64_t *stamps, size_t n, int64_t threshold)
{
    DEDUP_MARK_BODY
}

/* How many bits of bits[0, words) are set (with POPCNT where compiled for it). */
#define DEDUP_COUNT_BODY                                                                    \
    size_t k, n = 0;                                                                        \
    for (k = 0; k < words; k++)                                                             \
        n += (size_t)__builtin_popcount(bits[k]);                                           \
    return n;

static size_t dedup_count_bits_portable(const uint32_t *bits, size_t words)
{
    DEDUP_COUNT_BODY
}

/* Rewrite the `capacity` slots of index as DEDUP_SWEEP_BODY says. `removed` is a bitmap of
 * 32-bit words covering [0, idx_mask]; moved_to has at least `tail` entries (and one when
 * tail is 0). */
static void dedup_index_sweep(uint32_t *restrict index, size_t capacity, uint32_t idx_mask,
                              const uint32_t *restrict removed, uint32_t last, uint32_t tail,
                              const uint32_t *restrict moved_to)
{
    DEDUP_SWEEP_BODY
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

__attribute__((target("avx2")))
static uint64_t dedup_mark_expired_avx2(const int64_t *stamps, size_t n, int64_t threshold)
{
    uint64_t word = 0;
    size_t k = 0;
    __m256i limit = _mm256_set1_epi64x(threshold);
    for (; k + 4 <= n; k += 4) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(stamps + k));
        unsigned later = (unsigned)_mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(v, limit)));
        word |= (uint64_t)(~later & 0xFu) << k;
    }
    for (; k < n; k++)
        word |= (uint64_t)(stamps[k] <= threshold) << k;
    return word;
}

__attribute__((target("popcnt")))
static size_t dedup_count_bits_popcnt(const uint32_t *bits, size_t words)
{
    DEDUP_COUNT_BODY
}

static int dedup_expiry_avx2 = -1;  /* -1: not asked yet; a benign race (every thread agrees) */

static int dedup_expiry_use_avx2(void)
{
    if (dedup_expiry_avx2 < 0) {
        dedup_expiry_avx2 = dedup_cpu_has("avx2") && dedup_cpu_has("popcnt");
    }
    return dedup_expiry_avx2;
}
#else
static int dedup_expiry_use_avx2(void) { return 0; }
#define dedup_mark_expired_avx2 dedup_mark_expired_portable
#define dedup_count_bits_popcnt dedup_count_bits_portable
#endif

/* How many bits of bits[0, words) are set (every AVX2 CPU has POPCNT). */
static size_t dedup_count_bits(const uint32_t *bits, size_t words)
{
    return dedup_expiry_use_avx2() ? dedup_count_bits_popcnt(bits, words) : dedup_count_bits_portable(bits, words);
}

/* Bit k: stamps[k] <= threshold, for the n <= 64 stamps (higher bits 0). */
static uint64_t dedup_mark_expired(const int64_t *stamps, size_t n, int64_t threshold)
{
    return dedup_expiry_use_avx2() ? dedup_mark_expired_avx2(stamps, n, threshold)
                                   : dedup_mark_expired_portable(stamps, n, threshold);
}

#endif /* DEDUP_EXPIRY_H */
