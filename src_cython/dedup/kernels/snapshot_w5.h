/* The full snapshot format's (version 2) older-batch slots for window 5, Kafka's window (the
 * broker keeps the last 5 batches of each producer, spec §1.2), in 512-bit registers: all four
 * slots of a record read or written, checked and byte-swapped with a few permutes instead of a
 * loop of scalar loads, compares and stores per field (the slot loop was about 11 of the 30 ms
 * of encoding 1,000,000 producers). x86-64 with AVX-512 F, BW, VL and VBMI (byte permutes),
 * chosen at run time (platform/cpu.h); elsewhere, or switched off (there, by
 * DEDUP_DISABLE_CPU_FEATURES, or by the test hook), the scalar loops of
 * snapshot/full_writer.pxi and snapshot/full_reader.pxi run.
 *
 * Both directions handle only the common entry (narrow, no escaped field, values the reader
 * takes) and say so by returning 1; on 0 the caller's general loop starts over from the
 * record's first slot, so the bytes written and every error are the scalar loops'.
 *
 * The table's ring for window 5 (_state.pxd): entry + 40 holds int32 last_sequence[5], then
 * int32 offset_gap[5] (+60), int32 timestamp_gap[5] (+80), uint16 offset_delta[5] (+100) and
 * 2 bytes of padding (112-byte entries); the caller checks those offsets before calling.
 * A record's slots (_snapshot.pxd, Full2Slot): 4 x 12 bytes, big-endian uint32 offset gap,
 * int32 timestamp gap, uint16 sequence gap, uint16 offset delta; unused slots are zeros.
 *
 * Kernels and run-time dispatcher here (dedup_w5_use sets dedup_w5_mode from a CPU check;
 * window5_layout in snapshot/full_writer.pxi reads it); the scalar versions are not: they are
 * the general loops of snapshot/full_writer.pxi (full_records) and snapshot/full_reader.pxi
 * (full2_batches_common, full2_load), which also take every record these decline, and which the
 * stand-ins on other targets always leave to them.
 *
 * Spec: dedup's own format (not Kafka's, docs/spec.md §4.3); the batches are §1.3's.
 */
#ifndef DEDUP_SNAPSHOT_W5_H
#define DEDUP_SNAPSHOT_W5_H

#include <stdint.h>
#include "platform/cpu.h"

#define DEDUP_W5_RING 40              /* last_sequence[5] in the entry */
#define DEDUP_W5_OFFSET_GAP 60
#define DEDUP_W5_TIMESTAMP_GAP 80
#define DEDUP_W5_OFFSET_DELTA 100
#define DEDUP_W5_ENTRY_SIZE 112

/* -1: not decided; 0: the scalar loops; 1: these. */
static int dedup_w5_mode = -1;

#if defined(__x86_64__) && ((defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 9) \
                            || (defined(__clang__) && __clang_major__ >= 8))
#include <immintrin.h>
#define DEDUP_W5_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi")))

/* Lane j: ring slot (head + j % 4) % 5 of the older batch j % 4, for each head. */
static int32_t dedup_w5_rotation[5][16];
/* Encoding: the record's slot bytes from [offset gaps, timestamp gaps, sequence gaps, deltas],
 * four little-endian uint32 each. Decoding: those four from the slot bytes, and the entry's
 * ring bytes [40, 104) and [104, 112) from the decoded values (0-63) and the newest batch's
 * (64-127) when it sits in slot 4. */
static uint8_t dedup_w5_slot_bytes[64];
static uint8_t dedup_w5_slot_fields[64];
static uint64_t dedup_w5_slot_field_bytes;   /* bytes of dedup_w5_slot_fields that are data */
static uint8_t dedup_w5_ring_bytes[64];
static uint8_t dedup_w5_ring_tail[64];

static void dedup_w5_build(void)
{
    int head, j, k, b, s;
    for (head = 0; head < 5; head++)
        for (j = 0; j < 16; j++)
            dedup_w5_rotation[head][j] = (head + j % 4) % 5;
    dedup_w5_slot_field_bytes = 0;
    for (k = 0; k < 4; k++) {
        for (b = 0; b < 4; b++) {
            dedup_w5_slot_bytes[12 * k + b] = (uint8_t)(4 * k + 3 - b);           /* offset gap */
            dedup_w5_slot_bytes[12 * k + 4 + b] = (uint8_t)(16 + 4 * k + 3 - b);  /* timestamp gap */
            dedup_w5_slot_fields[4 * k + b] = (uint8_t)(12 * k + 3 - b);
            dedup_w5_slot_fields[16 + 4 * k + b] = (uint8_t)(12 * k + 4 + 3 - b);
        }
        for (b = 0; b < 2; b++) {
            dedup_w5_slot_bytes[12 * k + 8 + b] = (uint8_t)(32 + 4 * k + 1 - b);  /* sequence gap */
            dedup_w5_slot_bytes[12 * k + 10 + b] = (uint8_t)(48 + 4 * k + 1 - b); /* offset delta */
            dedup_w5_slot_fields[32 + 4 * k + b] = (uint8_t)(12 * k + 8 + 1 - b);
            dedup_w5_slot_fields[48 + 4 * k + b] = (uint8_t)(12 * k + 10 + 1 - b);
        }
        dedup_w5_slot_field_bytes |= (uint64_t)0xF << (4 * k) | (uint64_t)0xF << (16 + 4 * k)
                                     | (uint64_t)0x3 << (32 + 4 * k) | (uint64_t)0x3 << (48 + 4 * k);
    }
    for (k = 48; k < 64; k++)
        dedup_w5_slot_bytes[k] = 0;
    /* The decoded values: lanes 0-3 offset gaps, 4-7 timestamp gaps, 8-11 sequences, 12-15
     * deltas (slots 0-3); the second source: lane 16 + 0..3 the same for slot 4. */
    for (j = 0; j < 64; j++) {
        s = j < 60 ? (j % 20) / 4 : (j - 60) / 2;
        b = j < 60 ? j % 4 : (j - 60) % 2;
        if (j < 20)        /* last_sequence[s] */
            dedup_w5_ring_bytes[j] = (uint8_t)(s < 4 ? 32 + 4 * s + b : 64 + 8 + b);
        else if (j < 40)   /* offset_gap[s] */
            dedup_w5_ring_bytes[j] = (uint8_t)(s < 4 ? 4 * s + b : 64 + b);
        else if (j < 60)   /* timestamp_gap[s] */
            dedup_w5_ring_bytes[j] = (uint8_t)(s < 4 ? 16 + 4 * s + b : 64 + 4 + b);
        else               /* offset_delta[0], [1] */
            dedup_w5_ring_bytes[j] = (uint8_t)(48 + 4 * s + b);
    }
    for (j = 0; j < 64; j++)  /* offset_delta[2], [3], [4], then 2 bytes of zeros */
        dedup_w5_ring_tail[j] = (uint8_t)(j < 4 ? 48 + 4 * (2 + j / 2) + j % 2 : j < 6 ? 64 + 12 + j - 4 : 64 + 14);
}

/* Entry e's older batches (head, count 1..5 of them, newest at (head + count - 1) % 5) as
 * the record's four slots at out (48 bytes, unused ones zeros). 1 if no field escapes and
 * each older batch's gap plus offset delta is at most `limit` (min(newest last offset,
 * 0xFFFFFFFE): a first offset >= 0, a gap under its escape); else 0, out untouched. */
DEDUP_W5_TARGET
static int dedup_w5_encode_slots(const char *e, unsigned char *out, int head, int count, int64_t limit)
{
    const __m512i base = _mm512_setr_epi32(5, 5, 5, 5, 10, 10, 10, 10, 0, 0, 0, 0, 0, 0, 0, 0);
    __m512i ring = _mm512_loadu_si512(e + DEDUP_W5_RING);   /* sequences, offset gaps, timestamp gaps */
    __m512i rotation = _mm512_loadu_si512(dedup_w5_rotation[head]);
    __m128i deltas16 = _mm_srli_si128(_mm_loadu_si128((const __m128i *)(e + DEDUP_W5_OFFSET_DELTA - 4)), 4);
    int newest = head + count - 1 >= 5 ? head + count - 6 : head + count - 1;
    __m512i older = _mm512_permutexvar_epi32(_mm512_add_epi32(base, rotation), ring);
    __m512i newer = _mm512_permutexvar_epi32(_mm512_add_epi32(base, _mm512_set1_epi32(newest)), ring);
    __m128i deltas = _mm256_castsi256_si128(
        _mm256_permutexvar_epi32(_mm512_castsi512_si256(rotation), _mm256_cvtepu16_epi32(deltas16)));
    /* The differences of two gaps (the bases cancel), exact in 64 bits. */
    __m256i offset_gaps = _mm256_sub_epi64(_mm256_cvtepi32_epi64(_mm512_castsi512_si128(newer)),
                                           _mm256_cvtepi32_epi64(_mm512_castsi512_si128(older)));
    __m256i timestamp_gaps = _mm256_sub_epi64(_mm256_cvtepi32_epi64(_mm512_extracti32x4_epi32(newer, 1)),
                                              _mm256_cvtepi32_epi64(_mm512_extracti32x4_epi32(older, 1)));
    __m128i sequence_gaps = _mm_sub_epi32(_mm512_extracti32x4_epi32(newer, 2), _mm512_extracti32x4_epi32(older, 2));
    __mmask8 used = (__mmask8)((1u << (count - 1)) - 1u);
    __mmask8 bad;
    __m512i fields;
    bad = _mm256_mask_cmpgt_epi64_mask(used, _mm256_setzero_si256(), offset_gaps);
    bad |= _mm256_mask_cmpgt_epi64_mask(used, _mm256_add_epi64(offset_gaps, _mm256_cvtepu32_epi64(deltas)),
                                        _mm256_set1_epi64x(limit));
    bad |= _mm256_mask_cmpgt_epi64_mask(used, timestamp_gaps, _mm256_set1_epi64x(0x7FFFFFFF));
    bad |= _mm256_mask_cmpgt_epi64_mask(used, _mm256_set1_epi64x(-0x7FFFFFFF), timestamp_gaps);
    bad |= _mm_mask_cmpgt_epu32_mask(used, sequence_gaps, _mm_set1_epi32(0xFFFE));
    bad |= _mm_mask_cmpgt_epu32_mask(used, deltas, _mm_set1_epi32(0xFFFE));
    if (bad)
        return 0;
    fields = _mm512_castsi128_si512(_mm256_cvtepi64_epi32(offset_gaps));
    fields = _mm512_inserti32x4(fields, _mm256_cvtepi64_epi32(timestamp_gaps), 1);
    fields = _mm512_inserti32x4(fields, sequence_gaps, 2);
    fields = _mm512_inserti32x4(fields, deltas, 3);
    _mm512_mask_storeu_epi8(out, ((__mmask64)1 << 48) - 1,
                            _mm512_maskz_permutexvar_epi8(((__mmask64)1 << (12 * (count - 1))) - 1,
                                                          _mm512_loadu_si512(dedup_w5_slot_bytes), fields));
    return 1;
}

/* A record's four slots (48 bytes at slots) and its newest batch into entry e's ring, oldest
 * first from slot 0 (count 1..5), unused ring slots zeros. 1 if no field escapes and each
 * older batch's offset gap is at most 2^31 (the table's gap, its negation, is an int32) and
 * gap plus offset delta at most `limit` (min(newest last offset, 0xFFFFFFFF): a first offset
 * >= 0); the caller checked the newest batch (newest_delta <= 0xFFFF). Else 0, e untouched. */
DEDUP_W5_TARGET
static int dedup_w5_decode_slots(const unsigned char *slots, char *e, int count, uint32_t newest_sequence,
                                 uint32_t newest_delta, uint32_t limit)
{
    __m512i raw = _mm512_maskz_loadu_epi8(((__mmask64)1 << 48) - 1, slots);
    __m512i fields = _mm512_maskz_permutexvar_epi8(dedup_w5_slot_field_bytes,
                                                   _mm512_loadu_si512(dedup_w5_slot_fields), raw);
    __m128i offset_gaps = _mm512_castsi512_si128(fields);
    __m128i timestamp_gaps = _mm512_extracti32x4_epi32(fields, 1);
    __m128i sequence_gaps = _mm512_extracti32x4_epi32(fields, 2);
    __m128i deltas = _mm512_extracti32x4_epi32(fields, 3);
    __mmask8 used = (__mmask8)((1u << (count - 1)) - 1u);
    __mmask16 keep, newest;
    __mmask8 bad;
    __m512i values, last;
    bad = _mm_mask_cmpgt_epu32_mask(used, offset_gaps, _mm_set1_epi32((int)0x80000000u));
    /* No wrap: a gap over 2^31 is refused above, and deltas are 16 bits. */
    bad |= _mm_mask_cmpgt_epu32_mask(used, _mm_add_epi32(offset_gaps, deltas), _mm_set1_epi32((int)limit));
    bad |= _mm_mask_cmpeq_epi32_mask(used, timestamp_gaps, _mm_set1_epi32((int)0x80000000u));
    bad |= _mm_mask_cmpeq_epi32_mask(used, sequence_gaps, _mm_set1_epi32(0xFFFF));
    bad |= _mm_mask_cmpeq_epi32_mask(used, deltas, _mm_set1_epi32(0xFFFF));
    if (bad)
        return 0;
    /* The table's values: gaps from the newest batch (the negated file gaps), sequences. */
    values = _mm512_mask_sub_epi32(fields, 0x0FFF,
                                   _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, (int)newest_sequence, (int)newest_sequence,
                                                     (int)newest_sequence, (int)newest_sequence, 0, 0, 0, 0),
                                   fields);
    /* Slots k < count - 1 hold older batches; slot count - 1 the newest; the rest zeros. */
    keep = (__mmask16)(used * 0x1111u);
    last = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, (int)newest_sequence, (int)newest_sequence, (int)newest_sequence,
                             (int)newest_sequence, (int)newest_delta, (int)newest_delta, (int)newest_delta,
                             (int)newest_delta);
    newest = (__mmask16)(count < 5 ? (1u << (count - 1)) * 0x1111u : 0u);
    values = _mm512_mask_mov_epi32(_mm512_maskz_mov_epi32(keep, values), newest, last);
    last = count == 5 ? _mm512_setr_epi32(0, 0, (int)newest_sequence, (int)newest_delta, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                           0, 0)
                      : _mm512_setzero_si512();
    _mm512_storeu_si512(e + DEDUP_W5_RING,
                        _mm512_permutex2var_epi8(values, _mm512_loadu_si512(dedup_w5_ring_bytes), last));
    _mm_storel_epi64((__m128i *)(e + DEDUP_W5_RING + 64),
                     _mm512_castsi512_si128(_mm512_permutex2var_epi8(values, _mm512_loadu_si512(dedup_w5_ring_tail),
                                                                     last)));
    return 1;
}

static int dedup_w5_present(void)
{
    return dedup_cpu_has("avx512f") && dedup_cpu_has("avx512bw") && dedup_cpu_has("avx512vl")
           && dedup_cpu_has("avx512vbmi");
}

#else
static void dedup_w5_build(void) {}
static int dedup_w5_encode_slots(const char *e, unsigned char *out, int head, int count, int64_t limit)
{
    (void)e; (void)out; (void)head; (void)count; (void)limit;
    return 0;
}
static int dedup_w5_decode_slots(const unsigned char *slots, char *e, int count, uint32_t newest_sequence,
                                 uint32_t newest_delta, uint32_t limit)
{
    (void)slots; (void)e; (void)count; (void)newest_sequence; (void)newest_delta; (void)limit;
    return 0;
}
static int dedup_w5_present(void)
{
    return 0;
}
#endif

/* Use these where the CPU can (wanted 1) or never (0); returns the mode now in force. */
static int dedup_w5_use(int wanted)
{
    if (dedup_w5_mode < 0)
        dedup_w5_build();
    dedup_w5_mode = wanted && dedup_w5_present();
    return dedup_w5_mode;
}

/* Whether these are in use now (1) or the scalar loops (0), without changing it. */
static int dedup_w5_in_use(void)
{
    return dedup_w5_mode == 1;
}

#endif /* DEDUP_SNAPSHOT_W5_H */
