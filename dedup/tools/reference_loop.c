/* The limit: the least a producer-state table must do per batch, as plain C.
 *
 * The yardstick of issue #5: every table kernel is reported as a fraction of this loop,
 * measured in the same run (benchmarks/test_bench_scaling.py, `python -m dedup bench`).
 * dedup.bench compiles it with the compiler and -O3 of the extension build and loads it
 * with ctypes; the arguments are the numpy columns ProducerStateTable.append_many takes.
 *
 * Per batch it does, and only does:
 *   - one lookup by producer id in an open-addressing table of int64 keys (linear probing,
 *     sized like dedup's index: capacity = producers * 5 / 3 + 1, so load 0.6 when full;
 *     presized and fixed: more producers than it was sized for are refused), hashed with
 *     the same keyed MurmurHash3 finaliser and fastrange as dedup, because a broker must not
 *     let clients choose colliding ids;
 *   - the checks that decide a client batch's verdict: the epoch, then the sequence against
 *     the newest retained batch (a batch in sequence cannot repeat a retained one, so the
 *     window is scanned for a duplicate only when it is out of sequence);
 *   - one window update: the batch's (last_sequence, offset_delta, last_offset, timestamp)
 *     written into a ring of `window` slots per producer, whose head moves when it is full;
 *   - the five result columns of append_many (error code, duplicate flag, base offset, last
 *     offset, timestamp), so no work can be dropped by the compiler.
 *
 * It skips what a real table adds on top: growth (the capacity is fixed), transactions,
 * replication and coordinator origins, argument checks, the epoch-bump rules beyond "a new
 * epoch starts at sequence 0", removal.
 *
 * Two layouts (ref_new's `dense`), entries of 8 + 24 * window bytes, key slots of 16 bytes
 * (the key and an entry number):
 *   - dense: entries in insertion order, the key slot gives the entry number (dedup's layout:
 *     a stream in the order of the table's fill walks the entries in memory order);
 *   - by slot: the entry of key slot s is entry s, so its address is known from the home slot
 *     before the key is compared, and the two cache misses of a batch overlap.
 * The limit of a case is the faster of the two, measured in the same run.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
    ERR_NONE = 0,
    ERR_OUT_OF_ORDER_SEQUENCE_NUMBER = 45,
    ERR_INVALID_PRODUCER_EPOCH = 47,
};

#define EMPTY_KEY ((int64_t)-1) /* Kafka's "no producer id": never a key of the table */
#define INT32_MAX_VALUE 2147483647

typedef struct {
    int32_t last_sequence;
    int32_t offset_delta; /* record count - 1 */
    int64_t last_offset;
    int64_t timestamp;
} Slot; /* one retained batch: 24 bytes */

typedef struct {
    int16_t producer_epoch;
    uint8_t head;  /* ring slot of the oldest retained batch */
    uint8_t count; /* retained batches, 0..window */
    int32_t unused;
    Slot slots[];
} Entry;

typedef struct {
    int64_t key;
    int64_t entry; /* entry number: dense layout only */
} KeySlot;

typedef struct {
    KeySlot* keys;
    char* entries;
    uint64_t capacity;
    uint64_t limit; /* most keys: the producers it was sized for (load 0.6) */
    uint64_t count;
    uint64_t seed;
    size_t stride;
    int window;
    int dense; /* 1: entries dense in insertion order; 0: entry number = slot number */
} RefTable;

static inline uint64_t hash_id(const RefTable* t, int64_t producer_id) {
    uint64_t h = (uint64_t)producer_id ^ t->seed;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static inline int32_t increment_sequence(int32_t sequence, int32_t increment) {
    int64_t next = (int64_t)sequence + increment;
    return (int32_t)(next > INT32_MAX_VALUE ? next - INT32_MAX_VALUE - 1 : next);
}

RefTable* ref_new(int64_t producers, int window, uint64_t seed, int dense) {
    if (producers < 1 || window < 1 || window > 255) return NULL;
    RefTable* t = calloc(1, sizeof(RefTable));
    if (t == NULL) return NULL;
    t->capacity = (uint64_t)producers * 5 / 3 + 1;
    if (t->capacity < 8) t->capacity = 8;
    t->limit = (uint64_t)producers;
    t->seed = seed;
    t->window = window;
    t->dense = dense;
    t->stride = sizeof(Entry) + (size_t)window * sizeof(Slot);
    t->keys = malloc(t->capacity * sizeof(KeySlot));
    t->entries = malloc((dense ? t->limit : t->capacity) * t->stride);
    if (t->keys == NULL || t->entries == NULL) {
        free(t->keys);
        free(t->entries);
        free(t);
        return NULL;
    }
    memset(t->keys, 0xFF, t->capacity * sizeof(KeySlot)); /* every key EMPTY_KEY */
    return t;
}

void ref_free(RefTable* t) {
    if (t == NULL) return;
    free(t->keys);
    free(t->entries);
    free(t);
}

uint64_t ref_memory_bytes(const RefTable* t) {
    return t->capacity * sizeof(KeySlot) + (t->dense ? t->limit : t->capacity) * t->stride;
}

uint64_t ref_len(const RefTable* t) { return t->count; }

/* append_many's loop: returns the new log end offset, or -1 - row if row is a producer
 * beyond the table's size (rows before it are applied). `dense` is a constant in each caller,
 * so the compiler makes one loop per layout. */
static inline int64_t append_loop(RefTable* t, const int dense, int64_t rows, const int64_t* producer_ids,
                                  const int16_t* producer_epochs, const int32_t* base_sequences,
                                  const int32_t* record_counts, const int64_t* max_timestamps, int64_t log_end_offset,
                                  int16_t* error_codes, uint8_t* duplicate, int64_t* base_offsets,
                                  int64_t* last_offsets, int64_t* timestamps) {
    const uint64_t capacity = t->capacity;
    const int window = t->window;
    for (int64_t row = 0; row < rows; row++) {
        const int64_t producer_id = producer_ids[row];
        const int16_t epoch = producer_epochs[row];
        const int32_t base_sequence = base_sequences[row];
        const int32_t offset_delta = record_counts[row] - 1;
        const int32_t last_sequence = increment_sequence(base_sequence, offset_delta);
        const int64_t timestamp = max_timestamps[row];

        uint64_t slot = ((hash_id(t, producer_id) >> 32) * capacity) >> 32;
        while (t->keys[slot].key != producer_id && t->keys[slot].key != EMPTY_KEY) {
            if (++slot == capacity) slot = 0;
        }
        KeySlot* k = &t->keys[slot];
        const int found = k->key != EMPTY_KEY;
        if (!found) { /* a new producer: any sequence */
            if (t->count == t->limit) return -1 - row;
            k->key = producer_id;
            k->entry = (int64_t)t->count++;
        }
        Entry* e = (Entry*)(t->entries + (dense ? (size_t)k->entry : slot) * t->stride);
        int16_t code = ERR_NONE;
        if (!found) {
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
                const Slot* original = NULL;
                for (int k = 0; k < e->count; k++) {
                    const Slot* s = &e->slots[(e->head + k) % window];
                    if (s->last_sequence == last_sequence && s->offset_delta == offset_delta) original = s;
                }
                if (original != NULL) {
                    error_codes[row] = ERR_NONE;
                    duplicate[row] = 1;
                    base_offsets[row] = original->last_offset - original->offset_delta;
                    last_offsets[row] = original->last_offset;
                    timestamps[row] = original->timestamp;
                    continue;
                }
                code = ERR_OUT_OF_ORDER_SEQUENCE_NUMBER;
            }
        }
        error_codes[row] = code;
        duplicate[row] = 0;
        if (code != ERR_NONE) {
            base_offsets[row] = last_offsets[row] = timestamps[row] = -1;
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
        Slot* s = &e->slots[next];
        s->last_sequence = last_sequence;
        s->offset_delta = offset_delta;
        s->last_offset = log_end_offset + offset_delta;
        s->timestamp = timestamp;
        base_offsets[row] = log_end_offset;
        last_offsets[row] = s->last_offset;
        timestamps[row] = timestamp;
        log_end_offset += (int64_t)offset_delta + 1;
    }
    return log_end_offset;
}

#define REF_APPEND_MANY_ARGS                                                                                        \
    RefTable *t, int64_t rows, const int64_t *producer_ids, const int16_t *producer_epochs,                        \
        const int32_t *base_sequences, const int32_t *record_counts, const int64_t *max_timestamps,                 \
        int64_t log_end_offset, int16_t *error_codes, uint8_t *duplicate, int64_t *base_offsets,                    \
        int64_t *last_offsets, int64_t *timestamps
#define REF_APPEND_MANY_CALL(dense)                                                                                 \
    append_loop(t, dense, rows, producer_ids, producer_epochs, base_sequences, record_counts, max_timestamps,        \
                log_end_offset, error_codes, duplicate, base_offsets, last_offsets, timestamps)

int64_t ref_append_many(REF_APPEND_MANY_ARGS) {
    return t->dense ? REF_APPEND_MANY_CALL(1) : REF_APPEND_MANY_CALL(0);
}
