/* bulk_finish's common placement (table/bulk.pxi) in one 512-bit compare: the 16
 * index slots from a note's home slot are read at once; if one is empty and no slot before it
 * holds the note's hash tag (so no producer id before it can be the note's), the note goes in
 * the first empty slot, exactly where bulk_place's probe loop would put it in an index without
 * deleted slots. Anything else (a tag met, no empty slot among the 16, the 16 running past the
 * index's end) is left to bulk_place. Placing 1,000,000 notes (a decoded table's, load factor
 * 0.6 at the end) took 4.3 instead of 6.7 ms in a C model of the loop, and bulk_finish's part of
 * a full-format decode went from about 5.3 to 4.1 ms (perf samples times the decode's time):
 * the probe loop branches on every slot it reads, this on nothing but the rare slow case.
 * x86-64 with AVX-512 F, chosen at run time; elsewhere bulk_place alone.
 *
 * Kernel and run-time dispatcher here (dedup_bulk16_use sets dedup_bulk16_mode from a CPU
 * check; bulk_finish reads it); the scalar version is not: it is bulk_place, the probe loop in
 * table/bulk.pxi, which also takes every case this kernel declines (it returns 0 for them, and
 * its stand-in on other targets always does).
 *
 * Spec: none of its own; the index it builds is the one one insert per entry would (§4.4, §5.1).
 */
#ifndef DEDUP_BULK_PLACE16_H
#define DEDUP_BULK_PLACE16_H

#include <stdint.h>
#include "platform/cpu.h"

/* -1: not decided; 0: bulk_place alone; 1: this first. */
static int dedup_bulk16_mode = -1;

#if defined(__x86_64__) && ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 9) \
                            || (defined(__clang__) && __clang_major__ >= 8))
#include <immintrin.h>

/* 1 if the note (home slot << 32 | slot value) was placed; 0: bulk_place must. The index has
 * no deleted slot (the caller checks); EMPTY is 0xFFFFFFFF. */
__attribute__((target("avx512f")))
static inline int dedup_bulk_place16(uint32_t *index, uint32_t capacity, uint32_t tag_mask, uint64_t note)
{
    uint32_t slot = (uint32_t)(note >> 32), value = (uint32_t)note;
    __m512i slots;
    __mmask16 empty, before;
    if (slot > capacity - 16u || capacity < 16u)
        return 0;
    slots = _mm512_loadu_si512(index + slot);
    empty = _mm512_cmpeq_epi32_mask(slots, _mm512_set1_epi32(-1));
    if (!empty)
        return 0;
    before = (__mmask16)((empty & -empty) - 1u);   /* the slots before the first empty one */
    if (_mm512_mask_cmpeq_epi32_mask(before, _mm512_and_si512(slots, _mm512_set1_epi32((int)tag_mask)),
                                     _mm512_set1_epi32((int)(value & tag_mask))))
        return 0;
    index[slot + (uint32_t)__builtin_ctz(empty)] = value;
    return 1;
}

static int dedup_bulk16_present(void)
{
    return dedup_cpu_has("avx512f");
}

#else
static inline int dedup_bulk_place16(uint32_t *index, uint32_t capacity, uint32_t tag_mask, uint64_t note)
{
    (void)index; (void)capacity; (void)tag_mask; (void)note;
    return 0;
}

static int dedup_bulk16_present(void)
{
    return 0;
}
#endif

/* Use it where the CPU can (wanted 1) or never (0); returns the mode now in force. */
static int dedup_bulk16_use(int wanted)
{
    dedup_bulk16_mode = wanted && dedup_bulk16_present();
    return dedup_bulk16_mode;
}

#endif /* DEDUP_BULK_PLACE16_H */
