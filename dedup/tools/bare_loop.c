/* The bare limit: the least any producer-state table must do per batch, over the same stream,
 * with every memory trick dedup's own table uses (issue 18, item 1).
 *
 * `python -m dedup bench` reports every kernel against it ("bare limit") beside the C
 * implementation of the same rules (reference_loop.c), both measured in the same run.
 * dedup.tools.bench_loop compiles it with the extension's compiler flags (sysconfig's CC,
 * CFLAGS and CCSHARED, then -O3 as setup.py adds) plus -march=native, and loads it with ctypes.
 *
 * Per batch it does, and only does, what a broker must to give Kafka's verdict
 * (ProducerStateManager / ProducerAppendInfo: findDuplicateBatch, checkProducerEpoch,
 * checkSequence):
 *   - find the producer: open addressing with linear probing, the key inside its entry (one
 *     region of memory per lookup), sized for load 0.6 like dedup's index and presized; hashed
 *     with dedup's keyed MurmurHash3 finaliser and fastrange (_state.pxd mix_producer_id,
 *     home_slot), because a broker must not let clients pick colliding ids;
 *   - decide: the epoch, then the sequence against the newest retained batch; only a batch out
 *     of sequence is compared with the other retained batches (a batch in sequence cannot repeat
 *     one), the first match ends the scan;
 *   - record the batch: (last_offset, last_sequence, offset_delta) in a ring of `window` slots,
 *     16 bytes each (what a duplicate's answer needs: the original's offsets), and the
 *     producer's last timestamp (what expiry needs);
 *   - write only what the verdict needs: the error code, the duplicate flag and the base offset
 *     (the last offset is base + record_count - 1 either way; a duplicate matches on it).
 *
 * The memory tricks of dedup's table, the same way:
 *   - prefetch (table/columns.pxi append_client_columns): the producer id APPEND_AHEAD rows
 *     ahead is hashed and its home entry prefetched (both ends of the entry), a ring of hashes;
 *   - huge pages (platform/slab.h dedup_slab_alloc): one private anonymous mapping, 2 MiB
 *     aligned, whole huge pages, advised MADV_HUGEPAGE; malloc where there is no mmap.
 *
 * It skips what a real table adds: growth, removal and expiry, transactions, replication and
 * coordinator origins, argument checks, snapshots, epoch rules beyond "a new epoch starts at
 * sequence 0", the per-batch last offsets and timestamps as output columns.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define BARE_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 3)
#else
#define BARE_PREFETCH(p) ((void)(p))
#endif

enum {
    ERR_NONE = 0,
    ERR_OUT_OF_ORDER_SEQUENCE_NUMBER = 45,
    ERR_INVALID_PRODUCER_EPOCH = 47,
    APPEND_AHEAD = 16, /* as table/columns.pxi: a power of two, the ring of hashes */
};

#define EMPTY_KEY ((int64_t)-1) /* Kafka's "no producer id": never a key of the table */
#define INT32_MAX_VALUE 2147483647
#define HUGE_PAGE ((size_t)2 << 20)

typedef struct {
    int64_t last_offset;
    int32_t last_sequence;
    int32_t offset_delta; /* record count - 1 */
} Slot;                   /* one retained batch: 16 bytes */

typedef struct {
    int64_t producer_id; /* EMPTY_KEY: a free slot of the table */
    int64_t last_timestamp;
    int16_t producer_epoch;
    uint8_t head;  /* ring slot of the oldest retained batch */
    uint8_t count; /* retained batches, 0..window */
    int32_t unused;
    Slot slots[];
} Entry; /* 24 + 16 * window bytes: 104 with Kafka's window of 5 */

typedef struct {
    char *entries;
    size_t mapped; /* bytes mapped (0: malloc) */
    uint64_t capacity;
    uint64_t limit; /* most producers: the number it was sized for */
    uint64_t count;
    uint64_t seed;
    size_t stride;
    int window;
} BareTable;

static inline uint64_t hash_id(uint64_t seed, int64_t producer_id) {
    uint64_t h = (uint64_t)producer_id ^ seed;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static inline uint64_t home_slot(uint64_t h, uint64_t capacity) { return ((h >> 32) * capacity) >> 32; }

static inline int32_t increment_sequence(int32_t sequence, int32_t increment) {
    int64_t next = (int64_t)sequence + increment;
    return (int32_t)(next > INT32_MAX_VALUE ? next - INT32_MAX_VALUE - 1 : next);
}

/* `size` bytes (rounded up to whole huge pages) at a 2 MiB boundary, advised huge pages. */
static char *huge_alloc(size_t size, size_t *mapped) {
#if defined(__linux__) && defined(MAP_ANONYMOUS)
    size_t length = (size + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    char *raw = mmap(NULL, length + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    char *start = (char *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (start > raw) munmap(raw, (size_t)(start - raw));
    if (raw + length + HUGE_PAGE > start + length)
        munmap(start + length, (size_t)(raw + length + HUGE_PAGE - (start + length)));
#if defined(MADV_HUGEPAGE)
    (void)madvise(start, length, MADV_HUGEPAGE);
#endif
    *mapped = length;
    return start;
#else
    *mapped = 0;
    return malloc(size);
#endif
}

BareTable *bare_new(int64_t producers, int window, uint64_t seed) {
    if (producers < 1 || producers > ((int64_t)1 << 31) || window < 1 || window > 255) return NULL;
    BareTable *t = calloc(1, sizeof(BareTable));
    if (t == NULL) return NULL;
    t->capacity = (uint64_t)producers * 5 / 3 + 1;
    if (t->capacity < 8) t->capacity = 8;
    t->limit = (uint64_t)producers;
    t->seed = seed;
    t->window = window;
    t->stride = sizeof(Entry) + (size_t)window * sizeof(Slot);
    t->entries = huge_alloc(t->capacity * t->stride, &t->mapped);
    if (t->entries == NULL) {
        free(t);
        return NULL;
    }
    for (uint64_t slot = 0; slot < t->capacity; slot++) /* presized: every page touched now */
        ((Entry *)(t->entries + slot * t->stride))->producer_id = EMPTY_KEY;
    return t;
}

void bare_free(BareTable *t) {
    if (t == NULL) return;
#if defined(__linux__) && defined(MAP_ANONYMOUS)
    munmap(t->entries, t->mapped);
#else
    free(t->entries);
#endif
    free(t);
}

uint64_t bare_memory_bytes(const BareTable *t) { return t->capacity * t->stride; }

uint64_t bare_len(const BareTable *t) { return t->count; }

/* append_many's loop: returns the new log end offset, or -1 - row if row is a producer beyond
 * the table's size (rows before it are applied). `window` is a constant in the caller of
 * Kafka's window (5), so the compiler unrolls the ring arithmetic for it. */
static inline int64_t append_loop(BareTable *t, const int window, int64_t rows, const int64_t *producer_ids,
                                  const int16_t *producer_epochs, const int32_t *base_sequences,
                                  const int32_t *record_counts, const int64_t *max_timestamps, int64_t log_end_offset,
                                  int16_t *error_codes, uint8_t *duplicate, int64_t *base_offsets) {
    const uint64_t capacity = t->capacity, seed = t->seed;
    const size_t stride = t->stride;
    char *const entries = t->entries;
    uint64_t hashes[APPEND_AHEAD]; /* row r's hash at r % APPEND_AHEAD, from r - APPEND_AHEAD on */
    for (int64_t row = 0; row < rows && row < APPEND_AHEAD; row++) {
        hashes[row] = hash_id(seed, producer_ids[row]);
        const char *e = entries + home_slot(hashes[row], capacity) * stride;
        BARE_PREFETCH(e);
        BARE_PREFETCH(e + stride - 1);
    }
    for (int64_t row = 0; row < rows; row++) {
        const uint64_t h = hashes[row & (APPEND_AHEAD - 1)];
        if (row + APPEND_AHEAD < rows) {
            const uint64_t ahead = hash_id(seed, producer_ids[row + APPEND_AHEAD]);
            hashes[row & (APPEND_AHEAD - 1)] = ahead;
            const char *e = entries + home_slot(ahead, capacity) * stride;
            BARE_PREFETCH(e);
            BARE_PREFETCH(e + stride - 1);
        }
        const int64_t producer_id = producer_ids[row];
        const int16_t epoch = producer_epochs[row];
        const int32_t base_sequence = base_sequences[row];
        const int32_t offset_delta = record_counts[row] - 1;

        uint64_t slot = home_slot(h, capacity);
        Entry *e = (Entry *)(entries + slot * stride);
        while (e->producer_id != producer_id && e->producer_id != EMPTY_KEY) {
            if (++slot == capacity) slot = 0;
            e = (Entry *)(entries + slot * stride);
        }
        int16_t code = ERR_NONE;
        if (e->producer_id == EMPTY_KEY) { /* a new producer: any sequence */
            if (t->count == t->limit) return -1 - row;
            t->count++;
            e->producer_id = producer_id;
            e->producer_epoch = epoch;
            e->head = 0;
            e->count = 0;
        } else if (epoch != e->producer_epoch) {
            if (epoch < e->producer_epoch) {
                code = ERR_INVALID_PRODUCER_EPOCH;
            } else if (base_sequence != 0) {
                code = ERR_OUT_OF_ORDER_SEQUENCE_NUMBER;
            } else { /* a new epoch starts an empty window */
                e->producer_epoch = epoch;
                e->head = 0;
                e->count = 0;
            }
        } else if (e->count > 0) {
            int newest = e->head + e->count - 1;
            if (newest >= window) newest -= window;
            if (base_sequence != increment_sequence(e->slots[newest].last_sequence, 1)) {
                const int32_t last_sequence = increment_sequence(base_sequence, offset_delta);
                const Slot *original = NULL;
                for (int k = 0, at = e->head; k < e->count; k++, at = at + 1 == window ? 0 : at + 1) {
                    const Slot *s = &e->slots[at];
                    if (s->last_sequence == last_sequence && s->offset_delta == offset_delta) {
                        original = s;
                        break;
                    }
                }
                if (original != NULL) {
                    error_codes[row] = ERR_NONE;
                    duplicate[row] = 1;
                    base_offsets[row] = original->last_offset - original->offset_delta;
                    continue;
                }
                code = ERR_OUT_OF_ORDER_SEQUENCE_NUMBER;
            }
        }
        error_codes[row] = code;
        duplicate[row] = 0;
        if (code != ERR_NONE) {
            base_offsets[row] = -1;
            continue;
        }
        int next;
        if (e->count < window) {
            next = e->head + e->count;
            if (next >= window) next -= window;
            e->count++;
        } else { /* full: the oldest slot takes the new batch, the head moves */
            next = e->head;
            e->head = (uint8_t)(next + 1 == window ? 0 : next + 1);
        }
        Slot *s = &e->slots[next];
        s->last_sequence = increment_sequence(base_sequence, offset_delta);
        s->offset_delta = offset_delta;
        s->last_offset = log_end_offset + offset_delta;
        e->last_timestamp = max_timestamps[row];
        base_offsets[row] = log_end_offset;
        log_end_offset += (int64_t)offset_delta + 1;
    }
    return log_end_offset;
}

int64_t bare_append_many(BareTable *t, int64_t rows, const int64_t *producer_ids, const int16_t *producer_epochs,
                         const int32_t *base_sequences, const int32_t *record_counts, const int64_t *max_timestamps,
                         int64_t log_end_offset, int16_t *error_codes, uint8_t *duplicate, int64_t *base_offsets) {
    if (t->window == 5)
        return append_loop(t, 5, rows, producer_ids, producer_epochs, base_sequences, record_counts, max_timestamps,
                           log_end_offset, error_codes, duplicate, base_offsets);
    return append_loop(t, t->window, rows, producer_ids, producer_epochs, base_sequences, record_counts,
                       max_timestamps, log_end_offset, error_codes, duplicate, base_offsets);
}
