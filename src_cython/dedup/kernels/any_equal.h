/* Whether a producer's retained batches hold a sequence number: the duplicate test of the
 * client fast path in append_many (table/columns.pxi, append_client_columns), docs/spec.md
 * §2.1 rule 10 (a batch whose last sequence no retained batch has cannot be a duplicate).
 *
 * Kernel, scalar version and dispatcher side by side: the SSE2 form (4 int32 per compare) and
 * the scalar loop are the two branches of one #if in each function, chosen when compiling,
 * not at run time: SSE2 is part of x86-64 itself, so every CPU that runs an x86-64 build has
 * it; other targets compile the loop. */
#ifndef DEDUP_ANY_EQUAL_H
#define DEDUP_ANY_EQUAL_H

#include <stdint.h>
#if defined(__SSE2__) && !defined(DEDUP_NO_SSE2)
#include <emmintrin.h>
#endif

/* Whether one of the `count` (<= 8) int32 at values equals x, reading 16 bytes at values
 * if count <= 4 and 32 if count <= 8 (the caller guarantees they are readable). */
static inline int dedup_any_equal_i32x8(const int32_t *values, int count, int32_t x)
{
#if defined(__SSE2__) && !defined(DEDUP_NO_SSE2)
    const __m128i key = _mm_set1_epi32(x);
    uint32_t hits = (uint32_t)_mm_movemask_epi8(
        _mm_cmpeq_epi32(_mm_loadu_si128((const __m128i *)values), key));
    if (count > 4)
        hits |= (uint32_t)_mm_movemask_epi8(
            _mm_cmpeq_epi32(_mm_loadu_si128((const __m128i *)(values + 4)), key)) << 16;
    /* 4 mask bits per value: keep those of values [0, count). */
    static const uint32_t lanes[9] = {0x0u, 0xFu, 0xFFu, 0xFFFu, 0xFFFFu, 0xFFFFFu, 0xFFFFFFu,
                                      0xFFFFFFFu, 0xFFFFFFFFu};
    return (hits & lanes[count]) != 0;
#else
    int k;
    for (k = 0; k < count; k++)
        if (values[k] == x)
            return 1;
    return 0;
#endif
}

/* Whether one of values[0..count) equals x (reading nothing else). */
static inline int dedup_any_equal_i32(const int32_t *values, int count, int32_t x)
{
    int k = 0;
#if defined(__SSE2__) && !defined(DEDUP_NO_SSE2)
    const __m128i key = _mm_set1_epi32(x);
    for (; k + 4 <= count; k += 4)
        if (_mm_movemask_epi8(_mm_cmpeq_epi32(_mm_loadu_si128((const __m128i *)(values + k)), key)))
            return 1;
#endif
    for (; k < count; k++)
        if (values[k] == x)
            return 1;
    return 0;
}

#endif /* DEDUP_ANY_EQUAL_H */
