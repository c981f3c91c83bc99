# The producer-state table, as a C header: layouts, the C-level API and the cdef classes of
# dedup._state (implemented in _state.pyx and the table/*.pxi it includes), cimported by
# _records, _snapshot and _testing. Its inline helpers are compiled into each of them.
#
# One partition replica's state (docs/spec.md §1.1): per producer id an entry (§1.2) with its
# epoch, the metadata of its last `window` batches (§1.3), coordinator epoch, last timestamp
# and the first offset of an ongoing transaction; the sequence helpers below are §8.4's, the
# error codes §2.7's. Semantics, rule by rule: docs/spec.md.
#
# Memory layout (no Python object per producer or per batch):
#   * entries live in a dense array, split into chunks of 2^chunk_shift entries so that
#     growth never copies more than the first chunk and never holds twice the memory;
#     presizing (table_reserve) allocates the chunks it adds as one slab in transparent huge
#     pages, so that filling a large table (a snapshot being loaded) takes few page faults;
#     a reserved slab's last chunk holds only the entries asked for (top_capacity), made a
#     full chunk when the table grows past it; a large table growing without the hint adds
#     growth slabs of whole huge pages, each freed once all its chunks are spare; when the
#     first growth slab comes, the single chunks before it but chunk 0 move into huge pages
#     (one copy; each still freed alone);
#     entry i is at entry_chunks[i >> chunk_shift] + (i & chunk_mask) * stride;
#   * last_timestamp sits in a column beside each chunk (ts_chunks), so expiration scans
#     8 bytes per producer instead of a whole entry;
#   * an open-addressing index of uint32 slots maps a producer id to its entry number:
#     slot = (hash tag in the high bits) | (entry number in the low bits), linear probing,
#     load factor (live and deleted slots) kept at most 0.8, 0.6 after a resize, the hash
#     keyed with a random per-table seed; the probe loop and its sentinels: table/index.pxi;
#   * removal (remove_expired) leaves holes: a removed entry keeps its number, marked with
#     producer_id HOLE_ID, on a free list that inserts take first (last freed, first taken);
#     nothing moves, so expiring many producers costs the timestamp scan and the removed ones.
#     When at most half the numbers in use would stay live, removal compacts instead: the last
#     live entry fills each hole or removed entry (swap-remove), so whole chunks at the tail
#     can be freed. The table's order (numbers in use, holes skipped) is that of both twins.
#
# Entry layout, for window W (byte offsets; a ring of W batches, oldest at `head`); 40 + 14 W
# bytes rounded up to 8, 112 at W = 5. Offsets and timestamps (spec §1.3's int64 values) are
# stored exactly as int32 gaps from two bases in the header, offset_delta as a uint16:
#   0              EntryHeader (40 bytes: offset_base and timestamp_base last)
#   40             int32 last_sequence[W]
#   off_gap        int32 offset_gap[W]          last_offset = offset_base + offset_gap
#   off_ts_gap     int32 timestamp_gap[W]       timestamp = timestamp_base + timestamp_gap
#   off_delta      uint16 offset_delta[W]       (= record count - 1; doubles as the sequence delta)
#   stride         = (off_delta + 2 * W) rounded up to 8
# (sums modulo 2^64: any value within 2^31 of its base is exact). The bases are those of
# some batch the entry held (set when a batch goes into an empty ring, moved to the newest
# batch when a value stops fitting), so an append writes one slot and reads nothing but the
# entry. An entry whose values do not fit (offsets 2^31 apart within its window, timestamps
# 2^31 ms, ~24.8 days, apart either way, a batch of more than 65,536 records) is "wide":
# offset_base < 0 names a ring in t.wide (ring -1 - offset_base, of 3 W int64: last_offset[W],
# timestamp[W], offset_delta[W], by ring slot) holding them exactly; last_sequence stays in
# the entry. ring_encode picks the form; slot_last_offset, slot_timestamp, slot_offset_delta
# and ring_decode read either.

from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef enum AppendOrigin:
    ORIGIN_CLIENT = 0
    ORIGIN_REPLICATION = 1
    ORIGIN_COORDINATOR = 2


# Kafka wire error codes (spec §2.7).
cdef enum ErrorCode:
    ERR_NONE = 0
    ERR_CORRUPT_MESSAGE = 2
    ERR_OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    ERR_INVALID_PRODUCER_EPOCH = 47
    ERR_INVALID_TXN_STATE = 48
    ERR_TRANSACTION_COORDINATOR_FENCED = 52
    ERR_INVALID_RECORD = 87
    ERR_THROTTLING_QUOTA_EXCEEDED = 89   # a capped table full of open transactions (table/eviction.pxi)


cdef enum:
    INT32_MAX_VALUE = 2147483647
    NO_PRODUCER_EPOCH = -1
    NO_SEQUENCE = -1
    NO_TXN = -1                  # current_txn_first_offset when no transaction is ongoing
    ENTRY_HEADER_SIZE = 40
    MAX_WINDOW = 255             # head and count are uint8
    HOLE_ID = -1                 # producer_id of a removed entry's number (no producer id is negative)


ctypedef struct EntryHeader:
    int64_t producer_id
    int64_t current_txn_first_offset   # NO_TXN if none is ongoing
    int32_t coordinator_epoch
    int16_t producer_epoch
    uint8_t head                       # ring slot of the oldest retained batch
    uint8_t count                      # retained batches, 0..window
    int64_t offset_base                # >= 0: offsets are this plus the gaps; < 0: wide (see above)
    int64_t timestamp_base             # timestamps are this plus the gaps (narrow entries)


# One data batch as the table sees it.
ctypedef struct Batch:
    int64_t producer_id
    int64_t base_offset
    int64_t max_timestamp
    int32_t base_sequence
    int32_t last_sequence              # NO_SEQUENCE if base_sequence is
    int32_t offset_delta               # record count - 1
    int16_t producer_epoch
    uint8_t transactional
    uint8_t origin


# The vectorised path's input and output columns, one row per batch (see append_many).
ctypedef struct BatchColumns:
    const int64_t* producer_ids
    const int16_t* producer_epochs
    const int32_t* base_sequences
    const int32_t* record_counts
    const int64_t* max_timestamps
    const uint8_t* transactional       # NULL: no batch is transactional


ctypedef struct VerdictColumns:
    int16_t* error_codes
    uint8_t* duplicate
    int64_t* base_offsets
    int64_t* last_offsets
    int64_t* timestamps


# What validation found: the original batch of a duplicate, or what an error refers to.
ctypedef struct Verdict:
    int64_t base_offset
    int64_t last_offset
    int64_t timestamp
    int64_t current_txn_first_offset
    int32_t current_last_sequence
    int32_t current_coordinator_epoch
    int16_t current_epoch
    uint8_t duplicate
    uint8_t epoch_regression           # REPLICATION accepted an older epoch (Kafka warns)
    uint8_t coordinator_epoch_regression  # REPLICATION accepted an older coordinator epoch


# One record of the eviction heap (table/eviction.pxi): a producer's entry number and its
# last use when the record was pushed, ordered by (last_use, producer_id).
ctypedef struct LruRecord:
    int64_t last_use                   # the entry's last data offset (Kafka's lastDataOffset), -1: none
    int64_t producer_id
    Py_ssize_t entry


ctypedef struct Table:
    char** entry_chunks
    int64_t** ts_chunks                # last_timestamp column, one per entry chunk
    uint8_t* chunk_in_slab             # CHUNK_SINGLE, CHUNK_MAPPED, or how its slab is freed (table/storage.pxi)
    Py_ssize_t n_chunks
    Py_ssize_t chunk_slots             # length of the three per-chunk arrays
    char** slab_entries                # slabs: many chunks in one block (platform/slab.h), entries then timestamps
    size_t* slab_sizes                 # each slab's mapped length
    Py_ssize_t n_slabs
    Py_ssize_t slab_slots
    Py_ssize_t slab_floor              # chunks below this index are never released singly
    # entries the last chunk holds: a full chunk, but for chunk 0 alone (grows to one) or a
    # reserved slab's last
    Py_ssize_t top_capacity
    Py_ssize_t chunk_mask
    int chunk_shift
    int window
    Py_ssize_t count                   # entry numbers in use, 0..count-1: live entries and holes
    Py_ssize_t holes                   # numbers below count that are holes (producer_id HOLE_ID)
    Py_ssize_t free_hole               # the hole an insert takes first, or -1 (a hole's timestamp_base links the next)
    Py_ssize_t open_txns               # entries with an ongoing transaction (current_txn_first_offset set)
    Py_ssize_t reserved                # the capacity hint: never shrink below it
    Py_ssize_t stride
    Py_ssize_t off_gap
    Py_ssize_t off_ts_gap
    Py_ssize_t off_delta
    int64_t* wide                      # rings of wide entries, 3 * window int64 each
    Py_ssize_t wide_capacity           # rings allocated
    Py_ssize_t wide_used               # rings held by entries (= wide entries)
    Py_ssize_t wide_top                # rings [wide_top, wide_capacity) were never handed out
    Py_ssize_t wide_free               # a free ring below wide_top (its first value links the next), or -1
    uint32_t* index
    uint64_t hash_seed                 # random per table: keys the producer-id hash
    uint32_t index_capacity
    uint32_t idx_mask
    uint32_t tag_mask
    uint32_t index_deleted             # slots marked deleted by remove_expired (fills padding)
    int64_t map_end_offset
    uint64_t generation                # bumped by every mutation; stale check() results fail
    size_t bytes                       # memory held by the allocations above
    # max_producers (table/eviction.pxi): 0 for none; else a new producer first evicts the
    # least recently used producer without an ongoing transaction, or is refused (CLIENT)
    # when open transactions fill the table.
    Py_ssize_t max_producers
    Py_ssize_t outside_open_txns       # a staging copy: open transactions of its table outside it
    uint8_t staging                    # a copy(): refuses as its table would, never evicts
    int64_t evictions                  # producers evicted so far
    LruRecord* lru                     # the eviction heap, NULL until an eviction needs it
    Py_ssize_t lru_size
    Py_ssize_t lru_capacity


# --- sequence arithmetic (spec §8.4) ------------------------------------------------------

cdef inline int32_t increment_sequence(int32_t sequence, int32_t increment) noexcept nogil:
    if sequence > INT32_MAX_VALUE - increment:
        return increment - (INT32_MAX_VALUE - sequence) - 1
    return sequence + increment


cdef inline int32_t decrement_sequence(int32_t sequence, int32_t decrement) noexcept nogil:
    if sequence < decrement:
        return INT32_MAX_VALUE - (decrement - sequence) + 1
    return sequence - decrement


cdef inline bint in_sequence(int32_t last_sequence, int32_t next_sequence) noexcept nogil:
    # last + 1 in 64 bits: 2^31-1 is followed only by 0.
    return (<int64_t>next_sequence == <int64_t>last_sequence + 1
            or (next_sequence == 0 and last_sequence == INT32_MAX_VALUE))


# --- entry access -------------------------------------------------------------------------

cdef inline Py_ssize_t table_live(const Table* t) noexcept nogil:
    """The producers the table holds (entry numbers in use less the holes)."""
    return t.count - t.holes


cdef inline bint is_hole(const char* e) noexcept nogil:
    return (<const EntryHeader*>e).producer_id < 0


cdef inline char* entry_at(const Table* t, Py_ssize_t i) noexcept nogil:
    return t.entry_chunks[i >> t.chunk_shift] + (i & t.chunk_mask) * t.stride


cdef inline int64_t* last_timestamp_at(const Table* t, Py_ssize_t i) noexcept nogil:
    return t.ts_chunks[i >> t.chunk_shift] + (i & t.chunk_mask)


cdef inline void entry_init(Table* t, Py_ssize_t i) noexcept nogil:
    """Entry i's fields but its producer id at their initial values (spec §1.2)."""
    cdef EntryHeader* header = <EntryHeader*>entry_at(t, i)
    header.current_txn_first_offset = NO_TXN
    header.coordinator_epoch = -1
    header.producer_epoch = NO_PRODUCER_EPOCH
    header.head = 0
    header.count = 0
    header.offset_base = 0
    header.timestamp_base = 0
    last_timestamp_at(t, i)[0] = -1


cdef inline int32_t* ring_last_sequence(char* e) noexcept nogil:
    return <int32_t*>(e + ENTRY_HEADER_SIZE)


cdef inline uint16_t* ring_offset_delta16(const Table* t, char* e) noexcept nogil:
    """A narrow entry's offset deltas (a wide entry's are in its wide ring)."""
    return <uint16_t*>(e + t.off_delta)


cdef inline int32_t* ring_offset_gap(const Table* t, char* e) noexcept nogil:
    return <int32_t*>(e + t.off_gap)


cdef inline int32_t* ring_timestamp_gap(const Table* t, char* e) noexcept nogil:
    return <int32_t*>(e + t.off_ts_gap)


cdef inline int64_t* wide_ring(const Table* t, const char* e) noexcept nogil:
    """A wide entry's ring: last_offset[window], timestamp[window], offset_delta[window]."""
    return t.wide + (-1 - (<const EntryHeader*>e).offset_base) * 3 * t.window


cdef inline int64_t slot_last_offset(const Table* t, char* e, int pos) noexcept nogil:
    """The last offset of the batch in ring slot pos of entry e."""
    cdef int64_t base = (<EntryHeader*>e).offset_base
    if base >= 0:
        return <int64_t>(<uint64_t>base + <uint64_t><int64_t>ring_offset_gap(t, e)[pos])
    return wide_ring(t, e)[pos]


cdef inline int64_t slot_timestamp(const Table* t, char* e, int pos) noexcept nogil:
    """The timestamp of the batch in ring slot pos of entry e."""
    cdef const EntryHeader* header = <const EntryHeader*>e
    if header.offset_base >= 0:
        return <int64_t>(<uint64_t>header.timestamp_base + <uint64_t><int64_t>ring_timestamp_gap(t, e)[pos])
    return wide_ring(t, e)[t.window + pos]


cdef inline int32_t slot_offset_delta(const Table* t, char* e, int pos) noexcept nogil:
    """The offset delta (record count - 1) of the batch in ring slot pos of entry e."""
    if (<EntryHeader*>e).offset_base >= 0:
        return ring_offset_delta16(t, e)[pos]
    return <int32_t>wide_ring(t, e)[2 * t.window + pos]


cdef inline void ring_decode(const Table* t, char* e, int64_t* last_offsets, int64_t* timestamps,
                             int32_t* offset_deltas) noexcept nogil:
    """Entry e's retained offsets, timestamps and offset deltas into the arrays, by ring slot:
    the slots [0, count) are the retained ones whether or not the ring has wrapped (head is 0
    until the window is full)."""
    cdef const EntryHeader* header = <const EntryHeader*>e
    cdef int pos
    cdef uint64_t base = <uint64_t>header.offset_base
    cdef uint64_t timestamp_base = <uint64_t>header.timestamp_base
    cdef const int32_t* offset_gaps
    cdef const int32_t* timestamp_gaps
    cdef const uint16_t* deltas
    cdef const int64_t* ring
    if header.offset_base >= 0:
        offset_gaps = ring_offset_gap(t, e)
        timestamp_gaps = ring_timestamp_gap(t, e)
        deltas = ring_offset_delta16(t, e)
        for pos in range(header.count):
            last_offsets[pos] = <int64_t>(base + <uint64_t><int64_t>offset_gaps[pos])
            timestamps[pos] = <int64_t>(timestamp_base + <uint64_t><int64_t>timestamp_gaps[pos])
            offset_deltas[pos] = deltas[pos]
    else:
        ring = wide_ring(t, e)
        for pos in range(header.count):
            last_offsets[pos] = ring[pos]
            timestamps[pos] = ring[t.window + pos]
            offset_deltas[pos] = <int32_t>ring[2 * t.window + pos]


# --- the index's hash (the probe loop and its sentinels: table/index.pxi) -----------------

cdef inline uint64_t mix_producer_id(uint64_t seed, int64_t producer_id) noexcept nogil:
    # MurmurHash3's 64-bit finaliser over the id keyed with the table's random seed: producer
    # ids are handed out sequentially, every bit of the result depends on every bit of the
    # id, and a client choosing ids (Kafka accepts unknown ones) cannot aim them at one slot.
    # Every step is invertible, so two ids have the same hash only if they are equal.
    cdef uint64_t h = <uint64_t>producer_id ^ seed
    h ^= h >> 33
    h *= <uint64_t>0xff51afd7ed558ccdULL
    h ^= h >> 33
    h *= <uint64_t>0xc4ceb9fe1a85ec53ULL
    h ^= h >> 33
    return h


cdef inline uint64_t hash_producer_id(const Table* t, int64_t producer_id) noexcept nogil:
    return mix_producer_id(t.hash_seed, producer_id)


cdef inline uint32_t home_slot(uint64_t h, uint32_t capacity) noexcept nogil:
    # The high 32 bits of the hash scaled to [0, capacity) (Lemire's fastrange), so the
    # capacity need not be a power of two; the low bits give the tag.
    return <uint32_t>(((h >> 32) * <uint64_t>capacity) >> 32)


# --- loading many entries at once (a snapshot being decoded) -------------------------------
#
# bulk_begin presizes the table; bulk_append writes entry number t.count (its producer id
# only: the caller writes every other field) and notes its home slot and slot value instead
# of probing the index; bulk_finish places the notes in one pass of its own. Until then the
# appended entries are not in the index (table_find does not see them). Always bulk_free after.

ctypedef struct BulkLoad:
    uint64_t* notes                    # per appended entry: home slot << 32 | index slot value
    Py_ssize_t first                   # t.count at bulk_begin: entry first + k has notes[k]
    Py_ssize_t capacity                # entries bulk_append may add


cdef int bulk_begin(Table* t, BulkLoad* bulk, Py_ssize_t entries) except -1 nogil
cdef int bulk_finish(Table* t, BulkLoad* bulk, Py_ssize_t* repeat, Py_ssize_t* repeated) except -1 nogil
cdef void bulk_free(BulkLoad* bulk) noexcept nogil


cdef inline char* bulk_append(Table* t, BulkLoad* bulk, int64_t producer_id) noexcept nogil:
    """Entry number t.count (at most bulk.capacity appends after bulk_begin), with its
    producer id; the caller writes the other fields."""
    cdef Py_ssize_t i = t.count
    cdef uint64_t h = hash_producer_id(t, producer_id)
    cdef char* e = entry_at(t, i)
    (<EntryHeader*>e).producer_id = producer_id
    bulk.notes[i - bulk.first] = ((<uint64_t>home_slot(h, t.index_capacity) << 32)
                                  | ((<uint32_t>h & t.tag_mask) | <uint32_t>i))
    t.count = i + 1
    return e


# --- the C-level API (in table/*.pxi, which _state.pyx includes) --------------------------

cdef int table_init(Table* t, int window, Py_ssize_t capacity) except -1
cdef void table_free(Table* t) noexcept nogil
cdef Py_ssize_t table_find(const Table* t, int64_t producer_id) noexcept nogil
cdef Py_ssize_t table_find_or_insert(Table* t, int64_t producer_id) except -1 nogil
cdef int table_reserve(Table* t, Py_ssize_t producers) except -1 nogil
cdef int validate_batch(const Table* t, Py_ssize_t i, const Batch* b, Verdict* v) noexcept nogil
cdef int record_batch(Table* t, Py_ssize_t i, const Batch* b) except -1 nogil
cdef int ring_encode(Table* t, char* e, int head, int count, const int64_t* last_offsets,
                     const int64_t* timestamps, const int32_t* offset_deltas) except -1 nogil
cdef void entry_drop_batches(Table* t, char* e) noexcept nogil
cdef int append_batch(Table* t, const Batch* b, Verdict* v) except -1 nogil
cdef int validate_marker(const Table* t, Py_ssize_t i, int16_t producer_epoch,
                         int32_t coordinator_epoch, int origin, Verdict* v) noexcept nogil
cdef int append_marker(Table* t, int64_t producer_id, int16_t producer_epoch,
                       int32_t coordinator_epoch, int64_t offset, int64_t timestamp,
                       int origin, Verdict* v) except -1 nogil
cdef int append_columns(Table* t, const BatchColumns* batches, VerdictColumns* out,
                        Py_ssize_t rows, uint8_t origin, int64_t* log_end_offset,
                        Py_ssize_t* done, Py_ssize_t* epoch_regressions) except -1 nogil
cdef Py_ssize_t table_remove_expired(Table* t, int64_t now_ms, int64_t expiration_ms) noexcept nogil
cdef Py_ssize_t table_evict(Table* t, Py_ssize_t keep) except -1 nogil


# --- for dedup._testing only: switches of this module's C state (in _state.pyx) -----------
# A header's mode is a static variable in each module that includes the header, so a test flips
# this module's copy through these.

cdef int expiry_vectors_in_use() noexcept nogil
cdef void wide_growth_failure_after(Py_ssize_t after) noexcept nogil


cdef class AppendResult:
    cdef readonly bint duplicate
    cdef readonly int64_t base_offset
    cdef readonly int64_t last_offset
    cdef readonly int64_t timestamp
    cdef readonly int64_t producer_id
    cdef readonly int16_t producer_epoch
    cdef readonly int32_t base_sequence
    cdef readonly int32_t last_sequence
    cdef readonly bint transactional
    cdef int _origin
    cdef object _table
    cdef uint64_t _generation


cdef class ProducerStateTable:
    cdef Table t
    cdef int _busy                     # set while a call works on the table across a GIL release
    cdef int _check_idle(self) except -1
    cdef int _claim(self) except -1
    cdef int _load_batch(self, Batch* b, object producer_id, object producer_epoch,
                         object base_sequence, object record_count, object base_offset,
                         object max_timestamp, object origin, object transactional) except -1
