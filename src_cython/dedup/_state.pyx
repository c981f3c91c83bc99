# The compiled producer-state table. Layouts and the C-level API: _state.pxd.
# Semantics, rule by rule: docs/spec.md (rule numbers below are its).
#
# Not modelled (as in dedup.reference): transaction verification (KIP-890; rules 2, 11, 13,
# 14: as if transaction.partition.verification.enable=false) and the post-4.0 marker epoch
# rule. dedup follows Kafka 4.0.

cimport cython
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from libc.stdint cimport INT64_MAX, INT64_MIN, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

import functools
import logging
import os

import numpy as np

from dedup import _args
from dedup._messages import batch_error, marker_error
from dedup._types import AppendManyResult, BatchMetadata, CompletedTxn, Origin, ProducerStateEntry

cdef extern from "slab.h":
    # A block of at least size bytes in huge pages where the system has them (*mapped: its
    # length, for dedup_slab_free; rounded up to whole huge pages if asked), traced by
    # tracemalloc; NULL if none.
    void* dedup_slab_alloc(size_t size, int whole_huge_pages, size_t* mapped) noexcept nogil
    void dedup_slab_free(void* p, size_t mapped) noexcept nogil
    size_t dedup_slab_length(size_t size, int whole_huge_pages) noexcept nogil

cdef extern from *:
    """
    /* An exact int of at most two 30-bit digits (|v| < 2^60: ids, sequences, offsets and
     * millisecond timestamps) read from its digits, without a call; 0 for anything else,
     * which then takes PyLong_AsLongLongAndOverflow. */
    static inline int dedup_small_long(PyObject *o, long long *out)
    {
    #if PY_VERSION_HEX >= 0x030C0000
        if (PyUnstable_Long_IsCompact((PyLongObject *)o)) {
            *out = (long long)PyUnstable_Long_CompactValue((PyLongObject *)o);
            return 1;
        }
        return 0;
    #elif PYLONG_BITS_IN_DIGIT == 30 && !defined(PYPY_VERSION)
        const digit *d = ((PyLongObject *)o)->ob_digit;
        switch (Py_SIZE(o)) {
        case 0: *out = 0; return 1;
        case 1: *out = (long long)d[0]; return 1;
        case -1: *out = -(long long)d[0]; return 1;
        case 2: *out = (long long)d[0] | ((long long)d[1] << 30); return 1;
        case -2: *out = -((long long)d[0] | ((long long)d[1] << 30)); return 1;
        default: return 0;
        }
    #else
        (void)o; (void)out;
        return 0;
    #endif
    }
    """
    bint dedup_small_long(object value, long long* out) noexcept

cdef extern from "prefetch.h":
    # Start loading the cache line at p (to read, or to write); a hint that never faults.
    void dedup_prefetch(const void* p) noexcept nogil
    void dedup_prefetch_write(const void* p) noexcept nogil

cdef extern from *:
    """
    #define DEDUP_SLAB_MIN_CHUNKS 8
    #define DEDUP_GROWTH_FROM 64
    #define DEDUP_GROWTH_CHUNKS 64
    #define DEDUP_INDEX_EMPTY ((uint32_t)0xFFFFFFFFu)
    #define DEDUP_INDEX_DELETED ((uint32_t)0xFFFFFFFEu)
    #define DEDUP_CHUNK_BYTES ((Py_ssize_t)128 * 1024)
    #define DEDUP_MAX_PRODUCERS ((Py_ssize_t)2147483646)
    """
    # An index slot that holds no entry, and one whose entry was removed (a tombstone: probes
    # go on past it, an insert may take it). A real slot never equals either, nor exceeds
    # them: the entry number in its low bits is at most 0.8 x the index capacity, itself below
    # 2^bits, so it stays below 2^bits - 2 (see index_masks).
    const uint32_t DEDUP_INDEX_EMPTY
    const uint32_t DEDUP_INDEX_DELETED
    # Entries are allocated in chunks of at most this many bytes (entries + timestamps).
    const Py_ssize_t DEDUP_CHUNK_BYTES
    const Py_ssize_t DEDUP_MAX_PRODUCERS
    # table_reserve puts the chunks it adds in one slab from this many on.
    const Py_ssize_t DEDUP_SLAB_MIN_CHUNKS
    # A table of this many chunks grows by slabs of DEDUP_GROWTH_CHUNKS chunks (reserve_entries).
    const Py_ssize_t DEDUP_GROWTH_FROM
    const Py_ssize_t DEDUP_GROWTH_CHUNKS

_log = logging.getLogger("dedup")
# The slow paths of the argument checks, bound once: looking them up per call would cost
# more than the table's own work.
_producer_id_arg = _args.producer_id
_producer_epoch_arg = _args.producer_epoch
_base_sequence_arg = _args.base_sequence
_record_count_arg = _args.record_count
_origin_arg = _args.origin
_flag_arg = _args.flag
_base_offset_arg = functools.partial(_args.offset, "base_offset")
_max_timestamp_arg = functools.partial(_args.timestamp, "max_timestamp")
cdef object _CLIENT = Origin.CLIENT


# --- allocation ---------------------------------------------------------------------------

cdef void* try_alloc(size_t count, size_t size) noexcept nogil:
    """PyMem_RawMalloc (tracemalloc sees it) of count*size bytes, overflow-checked; NULL on failure."""
    if size != 0 and count > (<size_t>-1) / size:
        return NULL
    return PyMem_RawMalloc(count * size if count * size else 1)


cdef int out_of_memory(size_t count, size_t size) except -1 nogil:
    with gil:
        raise MemoryError(f"producer-state table: cannot allocate {count} x {size} bytes")


cdef void* alloc_array(size_t count, size_t size) except NULL nogil:
    cdef void* p = try_alloc(count, size)
    if p == NULL:
        out_of_memory(count, size)
    return p


# The index and a bulk load's notes are blocks: from BLOCK_SLAB_FROM bytes on a slab (slab.h:
# 2 MiB-aligned huge pages, as the entries; a large table's index is 6.7 MB, and malloc would
# leave the ends of such a block in 4 KiB pages, which cost the kernel about 4x as much per
# byte to zero), else PyMem_RawMalloc. Either way tracemalloc sees them.
cdef enum:
    BLOCK_SLAB_FROM = 2 * 1024 * 1024


cdef inline size_t block_bytes(size_t size) noexcept nogil:
    """What a block of `size` bytes holds in memory."""
    return dedup_slab_length(size, 0) if size >= BLOCK_SLAB_FROM else size


cdef void* try_block(size_t size) noexcept nogil:
    """A block of `size` bytes (freed by free_block with the same size), or NULL."""
    cdef size_t mapped
    if size >= BLOCK_SLAB_FROM:
        return dedup_slab_alloc(size, 0, &mapped)
    return PyMem_RawMalloc(size if size else 1)


cdef void free_block(void* p, size_t size) noexcept nogil:
    if size >= BLOCK_SLAB_FROM:
        dedup_slab_free(p, block_bytes(size))
    else:
        PyMem_RawFree(p)


# --- hashing and the index ----------------------------------------------------------------

# hash_producer_id and home_slot: _state.pxd (the snapshot loader needs them too).


cdef inline uint64_t index_capacity_for(Py_ssize_t producers) noexcept nogil:
    # Load factor 0.6 after a resize; insert_new resizes again past 0.8.
    return max(<uint64_t>8, <uint64_t>producers * 5 // 3 + 1)


cdef void index_masks(Table* t) noexcept nogil:
    cdef int bits = 0
    while bits < 32 and (<uint64_t>1 << bits) <= t.index_capacity:
        bits += 1
    t.idx_mask = <uint32_t>((<uint64_t>1 << bits) - 1)
    t.tag_mask = ~t.idx_mask


cdef inline void index_place(Table* t, uint64_t h, Py_ssize_t i) noexcept nogil:
    """Entry i, of a producer id hashing to h and known to be absent, at the first free
    (empty or deleted) slot of its probe sequence."""
    cdef uint32_t capacity = t.index_capacity
    cdef uint32_t slot = home_slot(h, capacity)
    # Terminates: live and deleted slots stay at most 0.8 of the index, so an empty one exists.
    while t.index[slot] < DEDUP_INDEX_DELETED:
        slot += 1
        if slot == capacity:
            slot = 0
    if t.index[slot] == DEDUP_INDEX_DELETED:
        t.index_deleted -= 1
    t.index[slot] = (<uint32_t>h & t.tag_mask) | <uint32_t>i


cdef void index_fill(Table* t) noexcept nogil:
    cdef Py_ssize_t i
    memset(t.index, 0xFF, <size_t>t.index_capacity * sizeof(uint32_t))
    t.index_deleted = 0
    cdef const EntryHeader* header
    for i in range(t.count):
        header = <const EntryHeader*>entry_at(t, i)
        if header.producer_id != HOLE_ID:
            index_place(t, hash_producer_id(t, header.producer_id), i)


cdef void index_adopt(Table* t, uint32_t* fresh, uint32_t capacity) noexcept nogil:
    """Replace the index array by `fresh` (to be filled by index_fill)."""
    if t.index != NULL:
        free_block(t.index, <size_t>t.index_capacity * sizeof(uint32_t))
        t.bytes -= block_bytes(<size_t>t.index_capacity * sizeof(uint32_t))
    t.index = fresh
    t.index_capacity = capacity
    t.bytes += block_bytes(<size_t>capacity * sizeof(uint32_t))
    index_masks(t)


cdef int index_resize(Table* t, uint64_t capacity) except -1 nogil:
    if capacity > <uint64_t>0xFFFFFFFE:
        with gil:
            raise MemoryError(f"producer-state table: an index of {capacity} slots is too large")
    cdef uint32_t* fresh = <uint32_t*>try_block(<size_t>capacity * sizeof(uint32_t))
    if fresh == NULL:
        out_of_memory(<size_t>capacity, sizeof(uint32_t))
    index_adopt(t, fresh, <uint32_t>capacity)
    index_fill(t)
    return 0


cdef inline Py_ssize_t probe_index(const uint32_t* index, uint32_t capacity, uint32_t tag_mask,
                                   uint32_t idx_mask, char** entry_chunks, int chunk_shift,
                                   Py_ssize_t chunk_mask, Py_ssize_t stride, int64_t producer_id,
                                   uint64_t h) noexcept nogil:
    """The probe loop: the entry number of producer_id (hash h) in a non-empty index, or -1.
    Its fields are passed one by one so that append_columns can hold them in registers (its
    TableView) while find_hashed reads them from the Table."""
    cdef uint32_t slot = home_slot(h, capacity)
    cdef uint32_t tag = <uint32_t>h & tag_mask
    cdef uint32_t value
    cdef Py_ssize_t i
    while True:
        value = index[slot]
        if value == DEDUP_INDEX_EMPTY:
            return -1
        if (value & tag_mask) == tag and value != DEDUP_INDEX_DELETED:
            i = value & idx_mask
            if (<EntryHeader*>(entry_chunks[i >> chunk_shift] + (i & chunk_mask) * stride)).producer_id == producer_id:
                return i
        slot += 1
        if slot == capacity:
            slot = 0


cdef inline Py_ssize_t find_hashed(const Table* t, int64_t producer_id, uint64_t h) noexcept nogil:
    if t.count == 0:
        return -1
    return probe_index(t.index, t.index_capacity, t.tag_mask, t.idx_mask, t.entry_chunks, t.chunk_shift,
                       t.chunk_mask, t.stride, producer_id, h)


cdef Py_ssize_t table_find(const Table* t, int64_t producer_id) noexcept nogil:
    """The entry number of producer_id, or -1."""
    return find_hashed(t, producer_id, hash_producer_id(t, producer_id))


# --- entry storage ------------------------------------------------------------------------

cdef inline Py_ssize_t entry_capacity(const Table* t) noexcept nogil:
    if t.n_chunks == 0:
        return 0
    if t.n_chunks == 1:
        return t.chunk0_capacity
    return t.n_chunks << t.chunk_shift


cdef int ensure_chunk_slots(Table* t, Py_ssize_t slots) except -1 nogil:
    if slots <= t.chunk_slots:
        return 0
    cdef Py_ssize_t fresh_slots = max(<Py_ssize_t>4, t.chunk_slots * 2)
    while fresh_slots < slots:
        fresh_slots *= 2
    cdef char** entries = <char**>try_alloc(fresh_slots, sizeof(char*))
    cdef int64_t** stamps = <int64_t**>try_alloc(fresh_slots, sizeof(int64_t*))
    cdef uint8_t* in_slab = <uint8_t*>try_alloc(fresh_slots, sizeof(uint8_t))
    if entries == NULL or stamps == NULL or in_slab == NULL:
        PyMem_RawFree(entries)
        PyMem_RawFree(stamps)
        PyMem_RawFree(in_slab)
        out_of_memory(fresh_slots, sizeof(char*))
    if t.n_chunks:
        memcpy(entries, t.entry_chunks, t.n_chunks * sizeof(char*))
        memcpy(stamps, t.ts_chunks, t.n_chunks * sizeof(int64_t*))
        memcpy(in_slab, t.chunk_in_slab, t.n_chunks * sizeof(uint8_t))
    PyMem_RawFree(t.entry_chunks)
    PyMem_RawFree(t.ts_chunks)
    PyMem_RawFree(t.chunk_in_slab)
    t.entry_chunks = entries
    t.ts_chunks = stamps
    t.chunk_in_slab = in_slab
    t.bytes += <size_t>(fresh_slots - t.chunk_slots) * (sizeof(char*) + sizeof(int64_t*) + sizeof(uint8_t))
    t.chunk_slots = fresh_slots
    return 0


# What chunk_in_slab says of a chunk.
cdef enum:
    CHUNK_SINGLE = 0                   # allocated alone, freed alone
    CHUNK_RESERVED = 1                 # in a slab of table_reserve: stays until table_free
    CHUNK_GROWTH_FIRST = 2             # the first chunk of a growth slab
    CHUNK_GROWTH = 3                   # a later chunk of one: the slab is freed when all are spare


cdef int alloc_slab(Table* t, Py_ssize_t chunks, bint growth=False) except -1 nogil:
    """`chunks` whole chunks after the last one in one slab (slab.h: huge pages), the entries
    first and the timestamp columns after them. Slab chunks are freed with their slab, never
    singly: a reserved slab (table_reserve) in table_free, a growth slab (a large table growing
    without the hint) once all its chunks are spare (release_spare_chunks)."""
    cdef Py_ssize_t chunk = <Py_ssize_t>1 << t.chunk_shift
    cdef Py_ssize_t k
    cdef char** slab_entries
    cdef size_t* slab_sizes
    cdef size_t entry_bytes, mapped
    ensure_chunk_slots(t, t.n_chunks + chunks)
    if t.n_slabs == t.slab_slots:
        slab_entries = <char**>try_alloc(t.slab_slots * 2 + 4, sizeof(char*))
        slab_sizes = <size_t*>try_alloc(t.slab_slots * 2 + 4, sizeof(size_t))
        if slab_entries == NULL or slab_sizes == NULL:
            PyMem_RawFree(slab_entries)
            PyMem_RawFree(slab_sizes)
            out_of_memory(t.slab_slots * 2 + 4, sizeof(char*))
        if t.n_slabs:
            memcpy(slab_entries, t.slab_entries, t.n_slabs * sizeof(char*))
            memcpy(slab_sizes, t.slab_sizes, t.n_slabs * sizeof(size_t))
        PyMem_RawFree(t.slab_entries)
        PyMem_RawFree(t.slab_sizes)
        t.slab_entries = slab_entries
        t.slab_sizes = slab_sizes
        t.bytes += <size_t>(t.slab_slots * 2 + 4 - t.slab_slots) * (sizeof(char*) + sizeof(size_t))
        t.slab_slots = t.slab_slots * 2 + 4
    if <size_t>(chunks * chunk) > (<size_t>-1) / (<size_t>t.stride + sizeof(int64_t)):
        out_of_memory(chunks * chunk, t.stride + sizeof(int64_t))
    entry_bytes = <size_t>(chunks * chunk) * <size_t>t.stride  # a multiple of 8: stamps stay aligned
    cdef size_t stamp_bytes = <size_t>(chunks * chunk) * sizeof(int64_t)
    cdef char* entries = <char*>dedup_slab_alloc(entry_bytes + stamp_bytes, growth, &mapped)
    if entries == NULL:
        out_of_memory(chunks * chunk, t.stride + sizeof(int64_t))
    cdef int64_t* stamps = <int64_t*>(entries + entry_bytes)
    t.slab_entries[t.n_slabs] = entries
    t.slab_sizes[t.n_slabs] = mapped
    t.n_slabs += 1
    for k in range(chunks):
        t.entry_chunks[t.n_chunks] = entries + k * chunk * t.stride
        t.ts_chunks[t.n_chunks] = stamps + k * chunk
        t.chunk_in_slab[t.n_chunks] = (CHUNK_GROWTH_FIRST if k == 0 else CHUNK_GROWTH) if growth else CHUNK_RESERVED
        t.n_chunks += 1
    if not growth:
        t.slab_floor = t.n_chunks
    t.bytes += mapped
    return 0


cdef int alloc_chunk(Table* t, Py_ssize_t entries, char** entry_block, int64_t** stamp_block) except -1 nogil:
    """Both blocks of a chunk, or neither."""
    entry_block[0] = <char*>try_alloc(entries, t.stride)
    stamp_block[0] = <int64_t*>try_alloc(entries, sizeof(int64_t))
    if entry_block[0] == NULL or stamp_block[0] == NULL:
        PyMem_RawFree(entry_block[0])
        PyMem_RawFree(stamp_block[0])
        entry_block[0] = NULL
        stamp_block[0] = NULL
        out_of_memory(entries, t.stride + sizeof(int64_t))
    t.bytes += <size_t>entries * (t.stride + sizeof(int64_t))
    return 0


cdef int reserve_entries(Table* t, Py_ssize_t needed, bint slab=False) except -1 nogil:
    """Room for `needed` entries. Chunk 0 doubles up to a full chunk, then whole chunks are
    added: growth copies at most one chunk and never holds twice the memory. With `slab`
    (presizing), many missing chunks come as one slab in huge pages. A table past
    DEDUP_GROWTH_FROM chunks grows by growth slabs of DEDUP_GROWTH_CHUNKS chunks (7.9 MB at
    window 5, mapped as 8 MB: whole huge pages), so that filling, scanning and freeing a
    large table take few page faults and TLB misses; growth then holds at most one slab
    more than needed."""
    cdef Py_ssize_t chunk = <Py_ssize_t>1 << t.chunk_shift
    cdef Py_ssize_t fresh0
    cdef char* entries
    cdef int64_t* stamps
    if needed <= entry_capacity(t):
        return 0
    if t.n_chunks <= 1 and t.chunk0_capacity < chunk:
        fresh0 = max(<Py_ssize_t>8, t.chunk0_capacity * 2)
        while fresh0 < needed and fresh0 < chunk:
            fresh0 *= 2
        fresh0 = min(fresh0, chunk)
        ensure_chunk_slots(t, 1)
        t.chunk_in_slab[0] = 0
        alloc_chunk(t, fresh0, &entries, &stamps)
        if t.n_chunks == 1:
            memcpy(entries, t.entry_chunks[0], t.count * t.stride)
            memcpy(stamps, t.ts_chunks[0], t.count * sizeof(int64_t))
            PyMem_RawFree(t.entry_chunks[0])
            PyMem_RawFree(t.ts_chunks[0])
            t.bytes -= <size_t>t.chunk0_capacity * (t.stride + sizeof(int64_t))
        t.entry_chunks[0] = entries
        t.ts_chunks[0] = stamps
        t.n_chunks = 1
        t.chunk0_capacity = fresh0
    cdef Py_ssize_t missing = (needed - entry_capacity(t) + chunk - 1) // chunk
    if slab and missing >= DEDUP_SLAB_MIN_CHUNKS:
        alloc_slab(t, missing)
    while entry_capacity(t) < needed:
        if t.n_chunks >= DEDUP_GROWTH_FROM:
            alloc_slab(t, DEDUP_GROWTH_CHUNKS, True)
            continue
        ensure_chunk_slots(t, t.n_chunks + 1)
        alloc_chunk(t, chunk, &t.entry_chunks[t.n_chunks], &t.ts_chunks[t.n_chunks])
        t.chunk_in_slab[t.n_chunks] = CHUNK_SINGLE
        t.n_chunks += 1
    return 0


cdef void release_spare_chunks(Table* t) noexcept nogil:
    """Free whole chunks beyond what the live entries (or the capacity hint) need."""
    cdef Py_ssize_t keep = max(t.count, t.reserved)
    cdef Py_ssize_t needed = 1 if keep <= t.chunk_mask + 1 else ((keep - 1) >> t.chunk_shift) + 1
    cdef Py_ssize_t chunk = <Py_ssize_t>1 << t.chunk_shift
    cdef Py_ssize_t first, k
    needed = max(needed, t.slab_floor)  # reserved slabs go in table_free
    while t.n_chunks > needed:
        first = t.n_chunks - 1
        if t.chunk_in_slab[first] != CHUNK_SINGLE:
            # The top chunk is in a growth slab, the last slab allocated: all of it or none.
            while t.chunk_in_slab[first] != CHUNK_GROWTH_FIRST:
                first -= 1
            if first < needed:
                return
            t.n_slabs -= 1
            dedup_slab_free(t.slab_entries[t.n_slabs], t.slab_sizes[t.n_slabs])
            t.bytes -= t.slab_sizes[t.n_slabs]
        else:
            PyMem_RawFree(t.entry_chunks[first])
            PyMem_RawFree(t.ts_chunks[first])
            t.bytes -= <size_t>chunk * (t.stride + sizeof(int64_t))
        for k in range(first, t.n_chunks):
            t.entry_chunks[k] = NULL
            t.ts_chunks[k] = NULL
            t.chunk_in_slab[k] = CHUNK_SINGLE
        t.n_chunks = first


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


cdef Py_ssize_t insert_new(Table* t, int64_t producer_id, uint64_t h) except -1 nogil:
    """A fresh entry for a producer id known to be absent (spec §1.2 initial values): the
    hole freed last if there is one, else number t.count."""
    cdef Py_ssize_t live = table_live(t) + 1
    cdef Py_ssize_t i
    if t.holes == 0:
        if t.count + 1 > DEDUP_MAX_PRODUCERS:
            with gil:
                raise MemoryError(f"producer-state table: more than {DEDUP_MAX_PRODUCERS} producers")
        reserve_entries(t, t.count + 1)
    if <uint64_t>(live + t.index_deleted) * 5 > <uint64_t>t.index_capacity * 4:
        # A rehash drops the deleted slots; the capacity hint is kept (no rehash below it).
        index_resize(t, index_capacity_for(max(live, t.reserved)))
    if t.holes:
        i = t.free_hole
        t.free_hole = (<EntryHeader*>entry_at(t, i)).timestamp_base
        t.holes -= 1
    else:
        i = t.count
        t.count += 1
    (<EntryHeader*>entry_at(t, i)).producer_id = producer_id
    entry_init(t, i)
    index_place(t, h, i)
    return i


cdef Py_ssize_t table_find_or_insert(Table* t, int64_t producer_id) except -1 nogil:
    cdef uint64_t h = hash_producer_id(t, producer_id)
    cdef Py_ssize_t i = find_hashed(t, producer_id, h)
    if i >= 0:
        return i
    return insert_new(t, producer_id, h)


cdef int table_reserve(Table* t, Py_ssize_t producers) except -1 nogil:
    """Room for `producers` entries in all, entries and index, so that inserting up to that
    many (a snapshot being loaded) neither reallocates nor rehashes."""
    return reserve_producers(t, producers, True)


cdef int reserve_producers(Table* t, Py_ssize_t producers, bint slab) except -1 nogil:
    """table_reserve; without `slab`, missing chunks are added one by one as inserts would add
    them, so that remove_expired can release them again (slab chunks stay until table_free)."""
    if producers > DEDUP_MAX_PRODUCERS:
        with gil:
            raise MemoryError(f"producer-state table: more than {DEDUP_MAX_PRODUCERS} producers")
    reserve_entries(t, producers, slab)
    # Deleted slots count: inserts up to `producers` must then neither fail nor rehash.
    if <uint64_t>(producers + t.index_deleted) * 5 > <uint64_t>t.index_capacity * 4:
        index_resize(t, index_capacity_for(max(producers, t.reserved)))
    return 0


cdef int table_init(Table* t, int window, Py_ssize_t capacity) except -1:
    memset(t, 0, sizeof(Table))
    t.hash_seed = int.from_bytes(os.urandom(8), "little")
    t.window = window
    t.off_gap = ENTRY_HEADER_SIZE + 4 * window
    t.off_ts_gap = t.off_gap + 4 * window
    t.off_delta = t.off_ts_gap + 4 * window
    t.stride = (t.off_delta + 2 * window + 7) & ~7  # entries stay 8-aligned
    t.wide_free = -1
    t.free_hole = -1
    t.chunk_shift = 4
    while ((t.stride + 8) << (t.chunk_shift + 1)) <= DEDUP_CHUNK_BYTES and t.chunk_shift < 20:
        t.chunk_shift += 1
    t.chunk_mask = (<Py_ssize_t>1 << t.chunk_shift) - 1
    t.reserved = capacity
    if capacity > 0:
        table_reserve(t, capacity)
    return 0


cdef void table_free(Table* t) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(t.n_chunks):
        if not t.chunk_in_slab[k]:
            PyMem_RawFree(t.entry_chunks[k])
            PyMem_RawFree(t.ts_chunks[k])
    for k in range(t.n_slabs):
        dedup_slab_free(t.slab_entries[k], t.slab_sizes[k])
    PyMem_RawFree(t.entry_chunks)
    PyMem_RawFree(t.ts_chunks)
    PyMem_RawFree(t.chunk_in_slab)
    PyMem_RawFree(t.slab_entries)
    PyMem_RawFree(t.slab_sizes)
    free_block(t.index, <size_t>t.index_capacity * sizeof(uint32_t))
    PyMem_RawFree(t.wide)
    memset(t, 0, sizeof(Table))


# --- bulk loading: entries written first, indexed after ------------------------------------
#
# A snapshot's producers arrive in file order and hash to random index slots. Inserting each
# one as it is read (table_find_or_insert) put a random index probe in the middle of the
# loader's streams (the file read, the entries written), a third of a 1,000,000-producer
# decode. Instead the loader notes each entry's home slot and slot value (bulk_append, in
# _state.pxd), and bulk_finish places the notes afterwards in a loop of their own, where the
# probes of the next notes are prefetched while one is placed. The order of insertion is
# that of the entries, so the index is the one table_find_or_insert would have built.

cdef enum:
    BULK_PREFETCH = 24                 # notes placed ahead of their probe's first cache line

cdef extern from "bulk_place16.h":
    int dedup_bulk16_mode
    int dedup_bulk16_use(int wanted) noexcept nogil
    int dedup_bulk_place16(uint32_t* index, uint32_t capacity, uint32_t tag_mask, uint64_t note) noexcept nogil

dedup_bulk16_use(1)  # decided once, at import (bulk_place16.h: AVX-512 where the CPU has it)


def bulk_vectors(bint wanted):
    """Test hook: bulk_finish with bulk_place16.h first (where the CPU can) or bulk_place
    alone; returns whether the vector placement is in use now."""
    return dedup_bulk16_use(wanted) == 1


cdef int bulk_begin(Table* t, BulkLoad* bulk, Py_ssize_t entries) except -1 nogil:
    """Presize t for `entries` more (table_reserve) and make room for their notes; the new
    memory the appends will write is noted in bulk.prefault (for _snapshot.pyx run_load)."""
    memset(bulk, 0, sizeof(BulkLoad))
    bulk.first = t.count
    cdef Py_ssize_t slabs = t.n_slabs
    table_reserve(t, t.count + entries)  # the index capacity is fixed from here on
    bulk.notes = <uint64_t*>try_block(<size_t>max(entries, 1) * sizeof(uint64_t))
    if bulk.notes == NULL:
        out_of_memory(<size_t>max(entries, 1), sizeof(uint64_t))
    bulk.capacity = entries
    if t.n_slabs > slabs:
        prefault_ranges(t, &bulk.prefault, t.count + entries)
    bulk.prefault.start[bulk.prefault.ranges] = <char*>bulk.notes
    bulk.prefault.length[bulk.prefault.ranges] = <size_t>entries * sizeof(uint64_t)
    bulk.prefault.ranges += 1
    bulk.prefault.total = entries
    return 0


cdef void prefault_ranges(Table* t, dedup_prefault* pf, Py_ssize_t needed) noexcept nogil:
    """The parts of the slab table_reserve has just made (the last slab, chunks c0 to the
    end) that entries below `needed` will fill: entries, then their timestamps."""
    cdef Py_ssize_t c0 = t.n_chunks - 1
    cdef char* slab = t.slab_entries[t.n_slabs - 1]
    while c0 > 0 and t.entry_chunks[c0] != slab:
        c0 -= 1
    cdef Py_ssize_t used = min(needed - (c0 << t.chunk_shift), (t.n_chunks - c0) << t.chunk_shift)
    if t.entry_chunks[c0] != slab or used <= 0:
        return
    pf.start[0] = slab
    pf.length[0] = <size_t>used * <size_t>t.stride
    pf.start[1] = <char*>t.ts_chunks[c0]
    pf.length[1] = <size_t>used * sizeof(int64_t)
    pf.ranges = 2


cdef inline bint same_producer(const Table* t, uint32_t a, uint32_t b) noexcept nogil:
    return (<EntryHeader*>entry_at(t, a)).producer_id == (<EntryHeader*>entry_at(t, b)).producer_id


cdef inline void bulk_place(Table* t, uint64_t note, Py_ssize_t* repeat, Py_ssize_t* repeated) noexcept nogil:
    """The note's slot value at the first free slot of its probe sequence, unless its producer
    id is there already: then, if it is the first repeat, its entry and the one found."""
    cdef uint32_t* index = t.index
    cdef uint32_t capacity = t.index_capacity
    cdef uint32_t slot = <uint32_t>(note >> 32)
    cdef uint32_t value = <uint32_t>note
    cdef uint32_t stored, free = capacity  # capacity: no deleted slot met yet
    # Terminates: live and deleted slots stay at most 0.8 of the index (bulk_begin reserved).
    while True:
        stored = index[slot]
        if stored == DEDUP_INDEX_EMPTY:
            break
        if stored == DEDUP_INDEX_DELETED:
            if free == capacity:
                free = slot
        elif ((stored & t.tag_mask) == (value & t.tag_mask)
              and same_producer(t, stored & t.idx_mask, value & t.idx_mask)):
            # One producer id twice (a corrupt file, or Kafka's with an id repeated; rare).
            # Notes come in entry order: the first met is the first repeat, and the entry in
            # the slot is the id's first.
            if repeat[0] < 0:
                repeat[0] = value & t.idx_mask
                repeated[0] = stored & t.idx_mask
            return
        slot += 1
        if slot == capacity:
            slot = 0
    if free != capacity:
        slot = free
        t.index_deleted -= 1
    index[slot] = value


cdef int bulk_finish(Table* t, BulkLoad* bulk, Py_ssize_t* repeat, Py_ssize_t* repeated) except -1 nogil:
    """Index the entries appended since bulk_begin. repeat: the smallest entry number whose
    producer id an earlier entry has too, or -1; repeated: the first entry with that id. With
    a repeat the index names one entry per producer id and the table must be discarded."""
    cdef Py_ssize_t k, n = t.count - bulk.first
    # Without deleted slots (always so in a new table) most notes take the vector placement.
    cdef bint vectors = dedup_bulk16_mode == 1 and t.index_deleted == 0
    repeat[0] = -1
    repeated[0] = -1
    for k in range(n):
        if k + BULK_PREFETCH < n:
            dedup_prefetch_write(t.index + <uint32_t>(bulk.notes[k + BULK_PREFETCH] >> 32))
        if not (vectors and dedup_bulk_place16(t.index, t.index_capacity, t.tag_mask, bulk.notes[k])):
            bulk_place(t, bulk.notes[k], repeat, repeated)
    return 0


cdef void bulk_free(BulkLoad* bulk) noexcept nogil:
    if bulk.notes != NULL:
        free_block(bulk.notes, <size_t>max(bulk.capacity, 1) * sizeof(uint64_t))
    memset(bulk, 0, sizeof(BulkLoad))


# --- wide entries: exact offsets and timestamps that do not fit the gaps -------------------
#
# Rings of wide entries live in one pool (t.wide) with a free list; an entry names its ring in
# offset_base, so the ring moves along when remove_expired moves the entry. The pool is freed
# when its last ring is given back (wide_trim).

cdef inline bint fits_int32(uint64_t value) noexcept nogil:
    # value, read as an int64, is in [-2^31, 2^31).
    return value + <uint64_t>0x80000000ULL <= <uint64_t>0xFFFFFFFFULL


# Test hook (fail_wide_growth): the pool's growths to let through before one fails, or -1.
# Tests set it while no load runs; a load on its loader thread reads it.
cdef Py_ssize_t wide_growths_before_failure = -1


def fail_wide_growth(Py_ssize_t after):
    """Test hook: the wide-entry pool's growth after `after` more (0: the next one) raises
    MemoryError as if the allocation had failed; -1: none does. For the error paths of loads
    (a snapshot decode on its loader thread raises it in the caller)."""
    global wide_growths_before_failure
    wide_growths_before_failure = after if after >= 0 else -1


cdef int wide_reserve(Table* t, Py_ssize_t rings) except -1 nogil:
    """Room for `rings` more wide rings, so that that many wide_acquire calls cannot fail."""
    global wide_growths_before_failure
    cdef Py_ssize_t needed = t.wide_used + rings
    cdef Py_ssize_t capacity
    cdef size_t ring_bytes = 3 * <size_t>t.window * sizeof(int64_t)
    cdef int64_t* grown
    if needed <= t.wide_capacity:
        return 0
    capacity = max(needed, max(<Py_ssize_t>4, t.wide_capacity * 2))
    if <size_t>capacity > (<size_t>-1) / ring_bytes:
        out_of_memory(capacity, ring_bytes)
    if wide_growths_before_failure >= 0:
        wide_growths_before_failure -= 1
        if wide_growths_before_failure < 0:
            out_of_memory(capacity, ring_bytes)
    grown = <int64_t*>PyMem_RawRealloc(t.wide, <size_t>capacity * ring_bytes)
    if grown == NULL:
        out_of_memory(capacity, ring_bytes)
    t.wide = grown
    t.bytes += <size_t>(capacity - t.wide_capacity) * ring_bytes
    t.wide_capacity = capacity
    return 0


cdef int64_t wide_acquire(Table* t) except? -1 nogil:
    """A free ring's number (grows the pool if none is free; MemoryError changes nothing)."""
    cdef int64_t ring
    if t.wide_free >= 0:
        ring = t.wide_free
        t.wide_free = t.wide[ring * 3 * t.window]
    else:
        if t.wide_top == t.wide_capacity:
            wide_reserve(t, 1)
        ring = t.wide_top
        t.wide_top += 1
    t.wide_used += 1
    return ring


cdef void wide_release(Table* t, char* e) noexcept nogil:
    """Give back the ring of wide entry e; the entry becomes narrow (its gaps are stale)."""
    cdef EntryHeader* header = <EntryHeader*>e
    cdef int64_t ring = -1 - header.offset_base
    header.offset_base = 0
    t.wide[ring * 3 * t.window] = t.wide_free
    t.wide_free = ring
    t.wide_used -= 1


cdef void wide_trim(Table* t) noexcept nogil:
    """Free the pool once no entry is wide. Not in wide_release: update_from gives rings back
    and takes others in one loop that must not allocate."""
    if t.wide_used == 0 and t.wide != NULL:
        PyMem_RawFree(t.wide)
        t.bytes -= <size_t>t.wide_capacity * 3 * <size_t>t.window * sizeof(int64_t)
        t.wide = NULL
        t.wide_capacity = t.wide_top = 0
        t.wide_free = -1


cdef void entry_drop_batches(Table* t, char* e) noexcept nogil:
    """Entry e retains no batch (an epoch change, spec §1.2): count 0, narrow."""
    cdef EntryHeader* header = <EntryHeader*>e
    if header.offset_base < 0:
        wide_release(t, e)
        wide_trim(t)
    header.offset_base = 0
    header.count = 0
    header.head = 0


cdef int ring_encode(Table* t, char* e, int head, int count, const int64_t* last_offsets,
                     const int64_t* timestamps, const int32_t* offset_deltas) except -1 nogil:
    """Store the offsets, timestamps and offset deltas of ring slots head, head + 1, ... (count
    of them, by ring slot in the arrays) in entry e: as gaps from the newest batch's offset
    and timestamp if they all fit, else in a wide ring. Does not touch the header's head and
    count. MemoryError (no ring to be had) changes nothing."""
    cdef EntryHeader* header = <EntryHeader*>e
    cdef int window = t.window
    cdef int pos, newest = head + count - 1
    cdef bint narrow = True
    cdef int64_t* ring
    if newest >= window:
        newest -= window
    cdef uint64_t base = <uint64_t>last_offsets[newest] if count else 0
    cdef uint64_t timestamp_base = <uint64_t>timestamps[newest] if count else 0
    pos = head
    for _ in range(count):
        narrow = (narrow and fits_int32(<uint64_t>last_offsets[pos] - base)
                  and fits_int32(<uint64_t>timestamps[pos] - timestamp_base)
                  and 0 <= offset_deltas[pos] <= 0xFFFF)
        pos = pos + 1 if pos + 1 < window else 0
    if narrow:
        if header.offset_base < 0:
            wide_release(t, e)
            wide_trim(t)
        header.offset_base = <int64_t>base
        header.timestamp_base = <int64_t>timestamp_base
        pos = head
        for _ in range(count):
            ring_offset_gap(t, e)[pos] = <int32_t>(<uint64_t>last_offsets[pos] - base)
            ring_timestamp_gap(t, e)[pos] = <int32_t>(<uint64_t>timestamps[pos] - timestamp_base)
            ring_offset_delta16(t, e)[pos] = <uint16_t>offset_deltas[pos]
            pos = pos + 1 if pos + 1 < window else 0
        return 0
    if header.offset_base >= 0:
        header.offset_base = -1 - wide_acquire(t)
    ring = wide_ring(t, e)
    pos = head
    for _ in range(count):
        ring[pos] = last_offsets[pos]
        ring[window + pos] = timestamps[pos]
        ring[2 * window + pos] = offset_deltas[pos]
        pos = pos + 1 if pos + 1 < window else 0
    return 0


cdef int entry_copy(Table* dst, Py_ssize_t j, const Table* src, Py_ssize_t i) except -1 nogil:
    """Entry i of src over entry j of dst (same window), wide ring included. A wide src entry
    takes a ring in dst (MemoryError unless wide_reserve made room: then dst is unchanged)."""
    cdef char* to = entry_at(dst, j)
    cdef char* source = entry_at(src, i)
    cdef int64_t ring = -1
    if (<EntryHeader*>source).offset_base < 0:
        ring = (-1 - (<EntryHeader*>to).offset_base) if (<EntryHeader*>to).offset_base < 0 else wide_acquire(dst)
    elif (<EntryHeader*>to).offset_base < 0:
        wide_release(dst, to)
    dst.open_txns += (((<EntryHeader*>source).current_txn_first_offset != NO_TXN)
                      - ((<EntryHeader*>to).current_txn_first_offset != NO_TXN))
    memcpy(to, source, src.stride)
    last_timestamp_at(dst, j)[0] = last_timestamp_at(src, i)[0]
    if ring >= 0:
        (<EntryHeader*>to).offset_base = -1 - ring
        memcpy(wide_ring(dst, to), wide_ring(src, source), 3 * <size_t>src.window * sizeof(int64_t))
    return 0


# --- data batches (spec §2.1, §2.3, §2.4) -------------------------------------------------

cdef int validate_batch(const Table* t, Py_ssize_t i, const Batch* b, Verdict* v) noexcept nogil:
    return _validate_batch(t, i, b, v)


cdef inline int _validate_batch(const Table* t, Py_ssize_t i, const Batch* b, Verdict* v) noexcept nogil:
    """Kafka's checks on one batch against entry i (-1: unknown producer), without mutating.

    Returns 0 (accepted, or a duplicate when v.duplicate is set) or a Kafka error code.
    """
    cdef char* e = NULL
    cdef EntryHeader* header = NULL
    cdef int window = t.window
    cdef int pos, count = 0, match, rank, match_rank = 0
    cdef int32_t* sequences
    v.duplicate = 0
    v.epoch_regression = 0
    v.current_epoch = NO_PRODUCER_EPOCH
    v.current_last_sequence = NO_SEQUENCE
    v.current_txn_first_offset = NO_TXN
    if i >= 0:
        e = entry_at(t, i)
        header = <EntryHeader*>e
        count = header.count
        v.current_epoch = header.producer_epoch
        v.current_txn_first_offset = header.current_txn_first_offset
        if count:
            pos = header.head + count - 1
            v.current_last_sequence = ring_last_sequence(e)[pos - window if pos >= window else pos]

    if b.origin == ORIGIN_CLIENT:
        # Rule 8: a client batch with a producer id must carry a sequence.
        if b.base_sequence < 0:
            return ERR_INVALID_RECORD
        # Rule 10: a retained batch with the same epoch and sequences is a duplicate; this
        # comes before every other check. The scan runs over the physical slots [0, count)
        # (head is 0 until the window is full, see _record_batch), with no wrap branch per
        # slot; two matches (possible only from replication) resolve to the oldest, as
        # Kafka's findFirst over its deque.
        if count and b.producer_epoch == v.current_epoch:
            sequences = ring_last_sequence(e)
            match = -1
            for pos in range(count):
                if (sequences[pos] == b.last_sequence
                        and decrement_sequence(sequences[pos], slot_offset_delta(t, e, pos)) == b.base_sequence):
                    rank = pos - header.head
                    if rank < 0:
                        rank += window
                    if match < 0 or rank < match_rank:
                        match = pos
                        match_rank = rank
            if match >= 0:
                v.duplicate = 1
                v.last_offset = slot_last_offset(t, e, match)
                v.base_offset = v.last_offset - slot_offset_delta(t, e, match)
                v.timestamp = slot_timestamp(t, e, match)
                return ERR_NONE

    # Rule 12: an older epoch is fenced; a follower (and recovery) only warns (§2.4).
    if b.producer_epoch < v.current_epoch:
        if b.origin != ORIGIN_REPLICATION:
            return ERR_INVALID_PRODUCER_EPOCH
        v.epoch_regression = 1

    if b.origin == ORIGIN_CLIENT:
        if b.producer_epoch != v.current_epoch:
            # Rule 15: a new epoch starts at 0, unless the producer is unknown (KIP-360).
            if b.base_sequence != 0 and v.current_epoch != NO_PRODUCER_EPOCH:
                return ERR_OUT_OF_ORDER_SEQUENCE_NUMBER
        elif v.current_epoch != NO_PRODUCER_EPOCH:
            # Rule 16: same epoch: the batch must follow the last one (wrapping at 2^31-1).
            if not in_sequence(v.current_last_sequence, b.base_sequence):
                return ERR_OUT_OF_ORDER_SEQUENCE_NUMBER

    # Rule 18: no plain batch inside an ongoing transaction, whatever the origin.
    if v.current_txn_first_offset != NO_TXN and not b.transactional:
        return ERR_INVALID_TXN_STATE
    v.base_offset = b.base_offset
    v.last_offset = b.base_offset + b.offset_delta
    v.timestamp = b.max_timestamp
    return ERR_NONE


cdef int record_batch(Table* t, Py_ssize_t i, const Batch* b) except -1 nogil:
    return _record_batch(t, i, b)


cdef inline int _record_batch(Table* t, Py_ssize_t i, const Batch* b) except -1 nogil:
    """Merge a validated batch into entry i (Kafka's addBatch + update, spec §1.2, §3.2).

    -1 with MemoryError set (and entry i unchanged) only if the entry must go wide and no
    ring can be had; a new entry or an epoch change never does."""
    cdef char* e = entry_at(t, i)
    cdef EntryHeader* header = <EntryHeader*>e
    cdef int window = t.window
    cdef int pos, count
    cdef int64_t last_offset = b.base_offset + b.offset_delta
    cdef uint64_t offset_gap = 0, timestamp_gap = 0
    # Rule 17: an epoch change (up or down) drops the retained batches first.
    if b.producer_epoch != header.producer_epoch:
        header.producer_epoch = b.producer_epoch
        entry_drop_batches(t, e)
    count = header.count
    if count < window:
        # Until the window is full the ring has not wrapped: head is 0 and the batches sit
        # in slots [0, count). validate_batch's duplicate scan relies on this.
        pos = count
    else:
        # The window is full: the oldest batch makes room.
        pos = header.head
    if count == 0 and header.offset_base >= 0:
        # An empty ring takes this batch's values as its bases.
        header.offset_base = last_offset
        header.timestamp_base = b.max_timestamp
    else:
        offset_gap = <uint64_t>last_offset - <uint64_t>header.offset_base
        timestamp_gap = <uint64_t>b.max_timestamp - <uint64_t>header.timestamp_base
    if (header.offset_base >= 0 and fits_int32(offset_gap) and fits_int32(timestamp_gap)
            and <uint32_t>b.offset_delta <= 0xFFFF):
        ring_offset_gap(t, e)[pos] = <int32_t>offset_gap
        ring_timestamp_gap(t, e)[pos] = <int32_t>timestamp_gap
        ring_offset_delta16(t, e)[pos] = <uint16_t>b.offset_delta
    else:
        record_slow(t, e, pos, last_offset, b.max_timestamp, b.offset_delta)
    if count < window:
        header.count = count + 1
    else:
        header.head = 0 if pos + 1 == window else pos + 1
    ring_last_sequence(e)[pos] = b.last_sequence
    last_timestamp_at(t, i)[0] = b.max_timestamp
    # Rule 18: the first transactional batch starts a transaction.
    if b.transactional and header.current_txn_first_offset == NO_TXN:
        header.current_txn_first_offset = b.base_offset
        t.open_txns += 1
    t.map_end_offset = b.base_offset + b.offset_delta + 1
    t.generation += 1
    return 0


cdef int record_slow(Table* t, char* e, int pos, int64_t last_offset, int64_t timestamp,
                     int32_t offset_delta) except -1 nogil:
    """_record_batch's offsets, timestamps and deltas when the entry is wide or the new batch
    does not fit its bases: the ring with the new batch in slot pos, encoded afresh from the
    newest batch (narrow again if everything now fits)."""
    cdef EntryHeader* header = <EntryHeader*>e
    cdef int64_t last_offsets[MAX_WINDOW]
    cdef int64_t timestamps[MAX_WINDOW]
    cdef int32_t offset_deltas[MAX_WINDOW]
    cdef int head = header.head, count = header.count
    ring_decode(t, e, last_offsets, timestamps, offset_deltas)
    last_offsets[pos] = last_offset
    timestamps[pos] = timestamp
    offset_deltas[pos] = offset_delta
    if count < t.window:
        count += 1
    else:
        head = 0 if pos + 1 == t.window else pos + 1
    return ring_encode(t, e, head, count, last_offsets, timestamps, offset_deltas)


cdef int append_batch(Table* t, const Batch* b, Verdict* v) except -1 nogil:
    return _append_batch(t, b, v)


cdef inline int _append_batch(Table* t, const Batch* b, Verdict* v) except -1 nogil:
    """validate_batch, then record_batch unless rejected or a duplicate: one hash lookup.

    Returns 0 or the Kafka error code; -1 with MemoryError set if a new entry cannot be made.
    """
    return _append_hashed(t, b, v, hash_producer_id(t, b.producer_id))


cdef inline int _append_hashed(Table* t, const Batch* b, Verdict* v, uint64_t h) except -1 nogil:
    """_append_batch for a producer id whose hash is h."""
    cdef Py_ssize_t i = find_hashed(t, b.producer_id, h)
    cdef int error = _validate_batch(t, i, b, v)
    if error != ERR_NONE or v.duplicate:
        return error
    if i < 0:
        i = insert_new(t, b.producer_id, h)
    _record_batch(t, i, b)
    return ERR_NONE


# append_columns looks rows ahead (rows in random producer order make each lookup a cache
# miss in a large table): APPEND_AHEAD rows ahead it hashes the producer id and prefetches
# its home index slot; in a table of at least APPEND_PREFETCH_ENTRIES_FROM bytes of entries,
# APPEND_AHEAD / 2 rows ahead it also reads that slot and, if it names an entry with the
# right tag, prefetches the entry and its last_timestamp. Hints only: the row's own lookup
# is unchanged, so a slot or entry that moved in between costs a miss.
#
# The entry prefetch costs ~25 instructions a row: at 10,000 producers (1.1 MB of entries,
# in L3) the loop is faster without it (42 against 39M batches/s), at 100,000 (11 MB) it is
# faster with it (31 against 26M/s), and at 1,000,000 it takes 13M/s against 9M/s; at
# 30,000 (3.4 MB) the two are level (measured on a 2-core AMD EPYC, 1 MB L2, 32 MB L3).
cdef enum:
    APPEND_AHEAD = 16                  # a power of two: the ring of hashes below
    APPEND_PREFETCH_ENTRIES_FROM = 4 << 20


cdef extern from *:
    """
    #if defined(__SSE2__)
    #include <emmintrin.h>
    #endif
    #if defined(__GNUC__) || defined(__clang__)
    #define dedup_likely(x) __builtin_expect(!!(x), 1)
    #else
    #define dedup_likely(x) (x)
    #endif

    /* Whether one of the `count` (<= 8) int32 at values equals x, reading 16 bytes at values
     * if count <= 4 and 32 if count <= 8 (the caller guarantees they are readable). */
    static inline int dedup_any_equal_i32x8(const int32_t *values, int count, int32_t x)
    {
    #if defined(__SSE2__)
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
    #if defined(__SSE2__)
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
    """
    bint dedup_likely(bint condition) noexcept nogil
    bint dedup_any_equal_i32x8(const int32_t* values, int count, int32_t x) noexcept nogil
    bint dedup_any_equal_i32(const int32_t* values, int count, int32_t x) noexcept nogil


cdef inline void prefetch_home_slot(const Table* t, uint64_t h) noexcept nogil:
    dedup_prefetch(t.index + home_slot(h, t.index_capacity))


cdef inline Py_ssize_t home_hint(const uint32_t* index, uint32_t capacity, uint32_t tag_mask,
                                 uint32_t idx_mask, Py_ssize_t count, uint64_t h) noexcept nogil:
    """The entry that the home index slot of hash h names if its tag matches (most likely the
    producer's entry, to prefetch), or -1. The index must exist (count > 0).

    The prefetches themselves stay in the caller's loop: GCC (12) takes a function whose only
    effect is a prefetch for one without side effects and drops its calls."""
    cdef uint32_t value = index[home_slot(h, capacity)]
    cdef Py_ssize_t i
    if value < DEDUP_INDEX_DELETED and (value & tag_mask) == (<uint32_t>h & tag_mask):
        i = value & idx_mask
        if i < count:
            return i
    return -1


cdef inline Py_ssize_t entry_hint(const Table* t, uint64_t h) noexcept nogil:
    if t.count == 0:
        return -1
    return home_hint(t.index, t.index_capacity, t.tag_mask, t.idx_mask, t.count, h)


cdef int append_row(Table* t, const BatchColumns* batches, VerdictColumns* out, Py_ssize_t row,
                    uint8_t origin, int64_t* log_end_offset, Py_ssize_t* epoch_regressions,
                    uint64_t h) except -1 nogil:
    """Row `row` of append_columns, whatever its origin and entry: _append_hashed and the
    row's verdict columns."""
    cdef Batch b
    cdef Verdict v
    cdef int error
    b.origin = origin
    b.transactional = 0 if batches.transactional == NULL else batches.transactional[row]
    b.producer_id = batches.producer_ids[row]
    b.producer_epoch = batches.producer_epochs[row]
    b.base_sequence = batches.base_sequences[row]
    b.offset_delta = batches.record_counts[row] - 1
    b.max_timestamp = batches.max_timestamps[row]
    b.last_sequence = (NO_SEQUENCE if b.base_sequence == NO_SEQUENCE
                       else increment_sequence(b.base_sequence, b.offset_delta))
    b.base_offset = log_end_offset[0]
    error = _append_hashed(t, &b, &v, h)
    out.error_codes[row] = <int16_t>error
    out.duplicate[row] = v.duplicate
    if error == ERR_NONE:
        out.base_offsets[row] = v.base_offset
        out.last_offsets[row] = v.last_offset
        out.timestamps[row] = v.timestamp
        if not v.duplicate:
            log_end_offset[0] = v.last_offset + 1
            epoch_regressions[0] += v.epoch_regression
    else:
        out.base_offsets[row] = -1
        out.last_offsets[row] = -1
        out.timestamps[row] = -1
    return 0


cdef int append_columns(Table* t, const BatchColumns* batches, VerdictColumns* out,
                        Py_ssize_t rows, uint8_t origin, int64_t* log_end_offset,
                        Py_ssize_t* done, Py_ssize_t* epoch_regressions) except -1 nogil:
    """append_batch for each row; accepted batches take consecutive offsets from
    *log_end_offset. Rows [0, *done) have their verdicts in `out`."""
    if origin == ORIGIN_CLIENT:
        return append_client_columns(t, batches, out, rows, log_end_offset, done, epoch_regressions)
    cdef Py_ssize_t row, i
    cdef uint64_t hashes[APPEND_AHEAD]   # row r's hash at r % APPEND_AHEAD, from r - APPEND_AHEAD on
    cdef uint64_t h
    cdef char* e
    cdef bint entries_ahead = t.count * t.stride >= APPEND_PREFETCH_ENTRIES_FROM
    for row in range(min(rows, <Py_ssize_t>APPEND_AHEAD)):
        hashes[row] = hash_producer_id(t, batches.producer_ids[row])
        prefetch_home_slot(t, hashes[row])
    for row in range(rows):
        h = hashes[row & (APPEND_AHEAD - 1)]
        if row + APPEND_AHEAD < rows:
            hashes[row & (APPEND_AHEAD - 1)] = hash_producer_id(t, batches.producer_ids[row + APPEND_AHEAD])
            prefetch_home_slot(t, hashes[row & (APPEND_AHEAD - 1)])
        if entries_ahead and row + APPEND_AHEAD // 2 < rows:
            # As in append_client_columns.
            i = entry_hint(t, hashes[(row + APPEND_AHEAD // 2) & (APPEND_AHEAD - 1)])
            if i >= 0:
                e = entry_at(t, i)
                dedup_prefetch(e)
                dedup_prefetch(e + t.stride - 1)
                if t.stride > 64:
                    dedup_prefetch(e + 64)
                dedup_prefetch(last_timestamp_at(t, i))
        append_row(t, batches, out, row, origin, log_end_offset, epoch_regressions, h)
        done[0] = row + 1
    return 0


# The client loop keeps the table's layout in locals (a TableView) rather than reading it
# through `t` per row: every store to an entry or an output column (char and uint8 stores
# may alias anything) would make the compiler read the fields of *t again.
ctypedef struct TableView:
    uint32_t* index
    char** entry_chunks
    int64_t** ts_chunks
    uint64_t hash_seed
    Py_ssize_t count
    Py_ssize_t chunk_mask
    Py_ssize_t stride
    uint32_t index_capacity
    uint32_t idx_mask
    uint32_t tag_mask
    int chunk_shift


cdef inline void view_table(const Table* t, TableView* view) noexcept nogil:
    view.index = t.index
    view.entry_chunks = t.entry_chunks
    view.ts_chunks = t.ts_chunks
    view.hash_seed = t.hash_seed
    view.count = t.count
    view.chunk_mask = t.chunk_mask
    view.stride = t.stride
    view.index_capacity = t.index_capacity
    view.idx_mask = t.idx_mask
    view.tag_mask = t.tag_mask
    view.chunk_shift = t.chunk_shift


cdef inline uint64_t view_hash(const TableView* view, int64_t producer_id) noexcept nogil:
    return mix_producer_id(view.hash_seed, producer_id)


cdef inline char* view_entry(const TableView* view, Py_ssize_t i) noexcept nogil:
    return view.entry_chunks[i >> view.chunk_shift] + (i & view.chunk_mask) * view.stride


cdef inline Py_ssize_t view_find(const TableView* view, int64_t producer_id, uint64_t h) noexcept nogil:
    """find_hashed through the view (its count must not be 0: the index may not exist)."""
    return probe_index(view.index, view.index_capacity, view.tag_mask, view.idx_mask, view.entry_chunks,
                       view.chunk_shift, view.chunk_mask, view.stride, producer_id, h)


cdef inline Py_ssize_t view_entry_hint(const TableView* view, uint64_t h) noexcept nogil:
    """entry_hint through the view (its count must not be 0)."""
    return home_hint(view.index, view.index_capacity, view.tag_mask, view.idx_mask, view.count, h)


cdef int append_client_columns(Table* t, const BatchColumns* batches, VerdictColumns* out,
                               Py_ssize_t rows, int64_t* log_end_offset, Py_ssize_t* done,
                               Py_ssize_t* epoch_regressions) except -1 nogil:
    """append_columns for origin CLIENT. A row of a known producer, same epoch, a non-empty
    narrow entry, no transaction on either side, in sequence and fitting the entry's bases
    with no retained batch of the same last sequence (the common case) is validated and
    recorded here, with exactly _append_hashed's result; any other row goes to append_row.

    Why each condition makes the shortcut exact (_validate_batch, then _record_batch):
      * rule 8 passes (base_sequence >= 0); rule 10 finds no duplicate, as no retained batch
        has the batch's last sequence; rules 12 and 15 pass (same epoch); rule 16 is the
        in_sequence test against the newest retained batch (the ring is not empty), or is not
        applied at all when the epoch is NO_PRODUCER_EPOCH, which then accepts the batch
        anyway; rule 18 passes (no ongoing transaction, not transactional);
      * recording keeps the epoch (no drop), the ring is not empty (the gaps are from the
        bases) and every value fits, so record_slow is not needed; no transaction starts.
    The table's map_end_offset and generation are kept in locals and stored before a row
    goes to append_row and at the end (nothing reads them in between: the GIL is released
    and the table is busy)."""
    cdef TableView view
    cdef const int64_t* producer_ids = batches.producer_ids
    cdef const int16_t* producer_epochs = batches.producer_epochs
    cdef const int32_t* base_sequences = batches.base_sequences
    cdef const int32_t* record_counts = batches.record_counts
    cdef const int64_t* max_timestamps = batches.max_timestamps
    cdef const uint8_t* transactional = batches.transactional
    cdef int16_t* error_codes = out.error_codes
    cdef uint8_t* duplicate = out.duplicate
    cdef int64_t* base_offsets = out.base_offsets
    cdef int64_t* last_offsets = out.last_offsets
    cdef int64_t* timestamps = out.timestamps
    cdef int64_t end = log_end_offset[0]
    cdef Py_ssize_t first_new = 0        # rows [first_new, row) were all accepted here
    cdef uint64_t hashes[APPEND_AHEAD]   # row r's hash at r % APPEND_AHEAD, from r - APPEND_AHEAD on
    cdef uint64_t h, offset_gap, timestamp_gap
    cdef Py_ssize_t row, i
    cdef char* e
    cdef char* slot
    cdef EntryHeader* header
    cdef int32_t* sequences
    cdef int32_t base_sequence, offset_delta, last_sequence
    cdef int64_t max_timestamp, last_offset
    cdef int count, newest, pos
    cdef int window = t.window
    # A batch's offset gap is 4 * window bytes after its last_sequence, its timestamp gap
    # 8 * window bytes after it (see the entry layout in _state.pxd).
    cdef Py_ssize_t to_offset_gap = t.off_gap - ENTRY_HEADER_SIZE
    cdef Py_ssize_t off_delta = t.off_delta
    # Up to 8 retained batches are scanned 4 at a time (see dedup_any_equal_i32x8: 32 bytes
    # from last_sequence stay inside an entry of window >= 5).
    cdef bint scan8 = window <= 8
    view_table(t, &view)
    # Prefetching entries pays only when they are beyond the caches (see the enum above).
    cdef bint entries_ahead = view.count != 0 and view.count * view.stride >= APPEND_PREFETCH_ENTRIES_FROM
    for row in range(min(rows, <Py_ssize_t>APPEND_AHEAD)):
        hashes[row] = view_hash(&view, producer_ids[row])
        dedup_prefetch(view.index + home_slot(hashes[row], view.index_capacity))
    for row in range(rows):
        h = hashes[row & (APPEND_AHEAD - 1)]
        if row + APPEND_AHEAD < rows:
            hashes[row & (APPEND_AHEAD - 1)] = view_hash(&view, producer_ids[row + APPEND_AHEAD])
            dedup_prefetch(view.index + home_slot(hashes[row & (APPEND_AHEAD - 1)], view.index_capacity))
        if entries_ahead and row + APPEND_AHEAD // 2 < rows:
            # The lines of the entry (first, last, and the one between when it spans 3:
            # up to 128 bytes, window <= 6) and of its last_timestamp, read prefetches:
            # dedup_prefetch_write is no instruction where the target lacks PREFETCHW
            # (x86-64 without -march), and a line read first is then written in place.
            i = view_entry_hint(&view, hashes[(row + APPEND_AHEAD // 2) & (APPEND_AHEAD - 1)])
            if i >= 0:
                e = view_entry(&view, i)
                dedup_prefetch(e)
                dedup_prefetch(e + view.stride - 1)
                if view.stride > 64:
                    dedup_prefetch(e + 64)
                dedup_prefetch(view.ts_chunks[i >> view.chunk_shift] + (i & view.chunk_mask))
        i = view_find(&view, producer_ids[row], h) if dedup_likely(view.count != 0) else -1
        if dedup_likely(i >= 0):
            e = view_entry(&view, i)
            header = <EntryHeader*>e
            base_sequence = base_sequences[row]
            count = header.count
            if dedup_likely(producer_epochs[row] == header.producer_epoch
                            and count != 0 and base_sequence >= 0 and header.offset_base >= 0
                            and header.current_txn_first_offset == NO_TXN
                            and (transactional == NULL or not transactional[row])):
                sequences = ring_last_sequence(e)
                newest = header.head + count - 1
                if newest >= window:
                    newest -= window
                offset_delta = record_counts[row] - 1
                # increment_sequence: base_sequence is in [0, 2^31-1] and the delta in
                # [0, 2^31-2] (append_many checks record counts are in [1, 2^31-1]), so the
                # sum fits 32 unsigned bits, and past 2^31-1 it wraps to sum - 2^31.
                last_sequence = <int32_t>((<uint32_t>base_sequence + <uint32_t>offset_delta) & INT32_MAX_VALUE)
                last_offset = end + offset_delta
                max_timestamp = max_timestamps[row]
                offset_gap = <uint64_t>last_offset - <uint64_t>header.offset_base
                timestamp_gap = <uint64_t>max_timestamp - <uint64_t>header.timestamp_base
                if dedup_likely(in_sequence(sequences[newest], base_sequence)
                                and fits_int32(offset_gap) and fits_int32(timestamp_gap)
                                and <uint32_t>offset_delta <= 0xFFFF
                                and not (dedup_any_equal_i32x8(sequences, count, last_sequence) if scan8
                                         else dedup_any_equal_i32(sequences, count, last_sequence))):
                    if count < window:
                        pos = count
                        header.count = count + 1
                    else:
                        pos = header.head
                        header.head = 0 if pos + 1 == window else pos + 1
                    sequences[pos] = last_sequence
                    slot = <char*>(sequences + pos)
                    (<int32_t*>(slot + to_offset_gap))[0] = <int32_t>offset_gap
                    (<int32_t*>(slot + 2 * to_offset_gap))[0] = <int32_t>timestamp_gap
                    (<uint16_t*>(e + off_delta))[pos] = <uint16_t>offset_delta
                    view.ts_chunks[i >> view.chunk_shift][i & view.chunk_mask] = max_timestamp
                    error_codes[row] = ERR_NONE
                    duplicate[row] = 0
                    base_offsets[row] = end
                    last_offsets[row] = last_offset
                    timestamps[row] = max_timestamp
                    end = last_offset + 1
                    continue
        # Any other row: the general path, with the table's fields up to date around it.
        flush_client_loop(t, row - first_new, end, log_end_offset)
        done[0] = row
        append_row(t, batches, out, row, ORIGIN_CLIENT, log_end_offset, epoch_regressions, h)
        end = log_end_offset[0]
        first_new = row + 1
        view_table(t, &view)
    flush_client_loop(t, rows - first_new, end, log_end_offset)
    done[0] = rows
    return 0


cdef inline void flush_client_loop(Table* t, Py_ssize_t accepted, int64_t end, int64_t* log_end_offset) noexcept nogil:
    """The table's fields as if append_client_columns had stored them row by row, after it
    accepted `accepted` rows itself since it last called append_row: each took a generation
    and moved map_end_offset to the log end offset."""
    if accepted:
        t.generation += <uint64_t>accepted
        t.map_end_offset = end
    log_end_offset[0] = end


# --- transaction markers (spec §2.2) ------------------------------------------------------

cdef int validate_marker(const Table* t, Py_ssize_t i, int16_t producer_epoch,
                         int32_t coordinator_epoch, int origin, Verdict* v) noexcept nogil:
    cdef EntryHeader* header
    v.duplicate = 0
    v.epoch_regression = 0
    v.coordinator_epoch_regression = 0
    v.current_epoch = NO_PRODUCER_EPOCH
    v.current_coordinator_epoch = -1
    v.current_txn_first_offset = NO_TXN
    if i >= 0:
        header = <EntryHeader*>entry_at(t, i)
        v.current_epoch = header.producer_epoch
        v.current_coordinator_epoch = header.coordinator_epoch
        v.current_txn_first_offset = header.current_txn_first_offset
    if origin == ORIGIN_CLIENT:  # rule 7: clients cannot write control batches
        return ERR_INVALID_RECORD
    if producer_epoch < v.current_epoch:  # M2
        if origin != ORIGIN_REPLICATION:
            return ERR_INVALID_PRODUCER_EPOCH
        v.epoch_regression = 1
    if v.current_coordinator_epoch > coordinator_epoch:  # M3
        if origin != ORIGIN_REPLICATION:
            return ERR_TRANSACTION_COORDINATOR_FENCED
        v.coordinator_epoch_regression = 1
    return ERR_NONE


cdef int append_marker(Table* t, int64_t producer_id, int16_t producer_epoch,
                       int32_t coordinator_epoch, int64_t offset, int64_t timestamp,
                       int origin, Verdict* v) except -1 nogil:
    """Validate and apply a COMMIT/ABORT marker. On success v.current_txn_first_offset is
    the first offset of the transaction it completed (NO_TXN: none was ongoing)."""
    cdef uint64_t h = hash_producer_id(t, producer_id)
    cdef Py_ssize_t i = find_hashed(t, producer_id, h)
    cdef int error = validate_marker(t, i, producer_epoch, coordinator_epoch, origin, v)
    if error != ERR_NONE:
        return error
    if i < 0:  # M4: a marker for an unknown producer creates its entry
        i = insert_new(t, producer_id, h)
    cdef char* e = entry_at(t, i)
    cdef EntryHeader* header = <EntryHeader*>e
    # M5: Kafka's update(epoch, coordinatorEpoch, timestamp): an epoch change drops the
    # batches; the transaction ends; coordinator epoch and timestamp are replaced.
    if producer_epoch != header.producer_epoch:
        header.producer_epoch = producer_epoch
        entry_drop_batches(t, e)
    header.coordinator_epoch = coordinator_epoch
    if header.current_txn_first_offset != NO_TXN:
        header.current_txn_first_offset = NO_TXN
        t.open_txns -= 1
    last_timestamp_at(t, i)[0] = timestamp
    t.map_end_offset = offset + 1
    t.generation += 1
    return ERR_NONE


# --- expiration (spec §6) -----------------------------------------------------------------

cdef extern from "expiry.h":
    uint64_t dedup_mark_expired(const int64_t* stamps, size_t n, int64_t threshold) noexcept nogil
    void dedup_index_sweep(uint32_t* index, size_t capacity, uint32_t idx_mask, const uint32_t* removed,
                           uint32_t last, uint32_t tail, const uint32_t* moved_to) noexcept nogil
    size_t dedup_count_bits(const uint32_t* bits, size_t words) noexcept nogil

cdef extern from *:
    """
    #define dedup_lowest_bit(word) ((Py_ssize_t)__builtin_ctz(word))
    """
    # The position of the lowest set bit of a non-zero word.
    Py_ssize_t dedup_lowest_bit(uint32_t word) noexcept nogil


cdef inline bint is_expired(int64_t now_ms, int64_t last_timestamp, int64_t expiration_ms) noexcept nogil:
    # now - last >= expiration, exactly: the difference can pass 2^63 (Kafka's long would wrap).
    if last_timestamp > now_ms:
        return False
    return <uint64_t>now_ms - <uint64_t>last_timestamp >= <uint64_t>expiration_ms


cdef inline bint expires(const Table* t, Py_ssize_t i, int64_t now_ms, int64_t expiration_ms) noexcept nogil:
    # The timestamp column first: the entry itself is read only for an expired producer.
    return (is_expired(now_ms, last_timestamp_at(t, i)[0], expiration_ms)
            and (<EntryHeader*>entry_at(t, i)).current_txn_first_offset == NO_TXN)


cdef inline bint index_will_shrink(const Table* t, Py_ssize_t producers) noexcept nogil:
    # reindex_after_removal's test: a table of at most `producers` gets a new, smaller index.
    return index_capacity_for(max(producers, t.reserved)) * 2 <= t.index_capacity


# A small removal edits the index through a queue: each edit's home slot is prefetched when the edit
# is queued and the edit is applied INDEX_EDIT_QUEUE edits later, oldest first, so the cache
# misses of many edits overlap instead of following one another (a 1,000,000-producer index is
# 6.7 MB, its slots random).
cdef enum:
    INDEX_EDIT_QUEUE = 32              # a power of two


ctypedef struct IndexEdit:
    uint64_t h                         # the producer id's hash
    uint32_t old_value                 # the slot to find (its tag and entry number)
    uint32_t new_value                 # what it becomes: DEDUP_INDEX_DELETED or a new number


ctypedef struct IndexEdits:
    IndexEdit queue[INDEX_EDIT_QUEUE]  # a ring: edits [applied, queued) are pending
    size_t applied
    size_t queued


cdef inline void index_edit_apply(Table* t, IndexEdits* edits) noexcept nogil:
    """Apply the oldest pending edit. Edits go in the order they were queued: an entry number
    freed by one may be given to another entry by a later one."""
    cdef IndexEdit* edit = &edits.queue[edits.applied & (INDEX_EDIT_QUEUE - 1)]
    cdef uint32_t capacity = t.index_capacity
    cdef uint32_t slot = home_slot(edit.h, capacity)
    # Terminates: the slot holding old_value is in the probe sequence of its hash.
    while t.index[slot] != edit.old_value:
        slot += 1
        if slot == capacity:
            slot = 0
    t.index[slot] = edit.new_value
    edits.applied += 1


cdef inline void index_edit(Table* t, IndexEdits* edits, int64_t producer_id, Py_ssize_t old,
                            uint32_t new_value) noexcept nogil:
    """Queue: the slot of producer_id's entry number `old` becomes new_value (the entry number
    it moved to, or DEDUP_INDEX_DELETED)."""
    cdef uint64_t h = hash_producer_id(t, producer_id)
    cdef uint32_t tag = <uint32_t>h & t.tag_mask
    cdef IndexEdit* edit
    if edits.queued - edits.applied == INDEX_EDIT_QUEUE:
        index_edit_apply(t, edits)
    dedup_prefetch_write(t.index + home_slot(h, t.index_capacity))
    edit = &edits.queue[edits.queued & (INDEX_EDIT_QUEUE - 1)]
    edit.h = h
    edit.old_value = tag | <uint32_t>old
    if new_value == DEDUP_INDEX_DELETED:
        edit.new_value = DEDUP_INDEX_DELETED
        t.index_deleted += 1
    else:
        edit.new_value = tag | new_value
    edits.queued += 1


# Removal records what it did to entry numbers, and the index is then rewritten in one
# sequential sweep (dedup_index_sweep in expiry.h): two random edits per removed producer on a
# 6.7 MB index (1,000,000 producers) cost more than reading and writing all of it once.
# What the entry pass did, for the sweep. marked: a bitmap over [0, idx_mask], bit i set for
# entry i expired by its timestamp and cleared again if it stays (a transaction), so that
# after the pass it holds exactly the removed. moved_to[count - 1 - n]: where tail entry n
# went, or DEDUP_INDEX_DELETED (written for the tail [kept, count) only: at most candidates +
# holes records); NULL when the index is to be rebuilt smaller (it is then refilled if that
# fails).
ctypedef struct Removal:
    uint32_t* marked
    uint32_t* moved_to
    Py_ssize_t candidates              # marked by the timestamp column


cdef inline bint is_marked(const uint32_t* bits, Py_ssize_t i) noexcept nogil:
    return (bits[i >> 5] >> (i & 31)) & 1


cdef inline void unmark(uint32_t* bits, Py_ssize_t i) noexcept nogil:
    bits[i >> 5] &= ~(<uint32_t>1 << (i & 31))


cdef inline Py_ssize_t next_marked(const uint32_t* bits, Py_ssize_t i, Py_ssize_t end) noexcept nogil:
    """The first marked position in [i, end), or end (i <= end)."""
    cdef Py_ssize_t w = i >> 5
    cdef uint32_t word
    if i >= end:
        return end
    word = bits[w] & (<uint32_t>0xFFFFFFFFu << (i & 31))
    while word == 0:
        w += 1
        if w << 5 >= end:
            return end
        word = bits[w]
    return min(end, (w << 5) + dedup_lowest_bit(word))


cdef enum:
    # A sweep costs about what 2 random index edits (one removed producer) do per 50 slots.
    SWEEP_SLOTS_PER_REMOVAL = 48
    # A hole needs one edit (nothing is renumbered): 100,000 edits took 1.2 ms here, the sweep
    # of 1,666,667 slots 1.6 ms (1,000,000 producers, 10% removed).
    SWEEP_SLOTS_PER_HOLE = 12
    MARK_AHEAD = 2048                  # timestamps prefetched ahead of the marking (16 KiB)
    REMOVE_AHEAD = 8                   # candidates, and entries from the end, fetched ahead


cdef inline void prefetch_entry(const Table* t, Py_ssize_t i) noexcept nogil:
    # Every line of entry i (it may span three), to be written.
    cdef const char* e = entry_at(t, i)
    dedup_prefetch_write(e)
    dedup_prefetch_write(e + 64)
    dedup_prefetch_write(e + t.stride - 1)


cdef Py_ssize_t mark_expired(const Table* t, int64_t threshold, uint32_t* bits) noexcept nogil:
    """Bits [0, t.count) of the bitmap: entry i's last timestamp is at most threshold (higher
    bits of the last word 0); returns how many are set. One pass over the timestamp column."""
    cdef Py_ssize_t start, size, k
    cdef uint64_t word
    for start in range(0, t.count, 64):
        size = min(<Py_ssize_t>64, t.count - start)
        if start + MARK_AHEAD < t.count:
            # The column is a strip of 8 KiB per chunk: the prefetcher stops at each strip's end.
            for k in range(0, 64, 8):
                dedup_prefetch(last_timestamp_at(t, start + MARK_AHEAD + k))
        if t.chunk_shift >= 6:
            # 64 entries from a multiple of 64 lie in one chunk (2^chunk_shift entries).
            word = dedup_mark_expired(last_timestamp_at(t, start), <size_t>size, threshold)
        else:
            word = 0
            for k in range(size):
                word |= <uint64_t>(last_timestamp_at(t, start + k)[0] <= threshold) << k
        bits[start >> 5] = <uint32_t>word
        if size > 32:
            bits[(start >> 5) + 1] = <uint32_t>(word >> 32)
    return <Py_ssize_t>dedup_count_bits(bits, (<size_t>t.count + 31) >> 5)


cdef inline bint keeps_transaction(const Table* t, Py_ssize_t i) noexcept nogil:
    """Candidate i stays: an ongoing transaction never expires (spec §6). The entry is read
    only if the table has one (t.open_txns): expiring idempotent producers reads nothing but
    the timestamp column."""
    return t.open_txns != 0 and (<EntryHeader*>entry_at(t, i)).current_txn_first_offset != NO_TXN


cdef inline void entry_forget(Table* t, Py_ssize_t i) noexcept nogil:
    """Removal's part in entry i's storage: the ring of a wide entry goes back to the pool
    (read only if some entry is wide)."""
    if t.wide_used != 0 and (<EntryHeader*>entry_at(t, i)).offset_base < 0:
        wide_release(t, entry_at(t, i))


cdef inline void entry_move(Table* t, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """Entry n, the last that stays, fills hole i (swap-remove)."""
    memcpy(entry_at(t, i), entry_at(t, n), t.stride)
    last_timestamp_at(t, i)[0] = last_timestamp_at(t, n)[0]


cdef int removal_start(const Table* t, int64_t threshold, Removal* r) noexcept nogil:
    """Allocate removal's records and mark the candidates; -1 (nothing allocated, no error set)
    if memory is short: removal then goes on without records and refills the index."""
    cdef size_t words = (<size_t>t.idx_mask >> 5) + 1
    cdef size_t written = (<size_t>t.count + 31) >> 5
    r.marked = <uint32_t*>try_alloc(words, sizeof(uint32_t))
    if r.marked == NULL:
        return -1
    r.candidates = mark_expired(t, threshold, r.marked)
    # The sweep reads a bit for every slot value, sentinels included: zero up to idx_mask.
    memset(r.marked + written, 0, (words - written) * sizeof(uint32_t))
    if index_will_shrink(t, table_live(t) - r.candidates):
        return 0  # the index will be rebuilt smaller: no sweep, nothing to record for it
    # One record per tail position compaction empties: at most every candidate and every hole
    # (mark_holes adds the holes to the marked entries).
    r.moved_to = <uint32_t*>try_alloc(<size_t>max(r.candidates + t.holes, <Py_ssize_t>1), sizeof(uint32_t))
    if r.moved_to == NULL:
        PyMem_RawFree(r.marked)
        r.marked = NULL
        return -1
    return 0


cdef void removal_end(Removal* r) noexcept nogil:
    PyMem_RawFree(r.marked)
    PyMem_RawFree(r.moved_to)
    r.marked = r.moved_to = NULL


cdef Py_ssize_t remove_recorded(Table* t, Removal* r, IndexEdits* edits) noexcept nogil:
    """The swap-remove pass (compaction) over the marked entries, candidates and holes;
    returns the entries kept. Each change is also queued as an index edit when `edits` is not
    NULL (a hole has no slot to edit).

    Going forward from i, each removed entry's hole is filled by the last entry that stays,
    found going back from the end (n): removed ones there are simply dropped. Only candidates
    are read at the front and only entries that move are copied from the back."""
    cdef Py_ssize_t count = t.count, i, n = t.count, ahead, k, _
    cdef uint32_t* bits = r.marked
    i = next_marked(bits, 0, n)
    # The entries of the next candidates and of the last entries are cache misses: start them
    # early (`ahead` runs REMOVE_AHEAD candidates before i).
    ahead = i
    for _ in range(REMOVE_AHEAD):
        prefetch_entry(t, ahead)
        ahead = next_marked(bits, ahead + 1, count - 1)
    for k in range(1, REMOVE_AHEAD + 1):
        prefetch_entry(t, max(count - k, 0))
    while i < n:
        prefetch_entry(t, ahead)
        ahead = next_marked(bits, ahead + 1, count - 1)
        if keeps_transaction(t, i):
            unmark(bits, i)
            i = next_marked(bits, i + 1, n)
            continue
        if edits != NULL and not is_hole(entry_at(t, i)):
            index_edit(t, edits, (<EntryHeader*>entry_at(t, i)).producer_id, i, DEDUP_INDEX_DELETED)
        entry_forget(t, i)
        n -= 1
        prefetch_entry(t, max(n - REMOVE_AHEAD, 0))
        while n > i and is_marked(bits, n):
            if keeps_transaction(t, n):
                unmark(bits, n)
                break
            if edits != NULL and not is_hole(entry_at(t, n)):
                index_edit(t, edits, (<EntryHeader*>entry_at(t, n)).producer_id, n, DEDUP_INDEX_DELETED)
            entry_forget(t, n)
            if r.moved_to != NULL:
                r.moved_to[count - 1 - n] = DEDUP_INDEX_DELETED
            n -= 1
            prefetch_entry(t, max(n - REMOVE_AHEAD, 0))
        if n > i:
            entry_move(t, i, n)
            if r.moved_to != NULL:
                r.moved_to[count - 1 - n] = <uint32_t>i
            if edits != NULL:
                index_edit(t, edits, (<EntryHeader*>entry_at(t, i)).producer_id, n, <uint32_t>i)
            i = next_marked(bits, i + 1, n)
        elif r.moved_to != NULL:
            r.moved_to[count - 1 - n] = DEDUP_INDEX_DELETED  # no entry left to fill hole i
    if edits != NULL:
        while edits.applied != edits.queued:
            index_edit_apply(t, edits)
    return n


cdef inline bint removable(const Table* t, Py_ssize_t i, int64_t now_ms, int64_t expiration_ms) noexcept nogil:
    return is_hole(entry_at(t, i)) or expires(t, i, now_ms, expiration_ms)


cdef Py_ssize_t remove_unrecorded(Table* t, int64_t now_ms, int64_t expiration_ms) noexcept nogil:
    """remove_recorded's compaction without its records (memory was short for them), holes
    and expired entries alike; returns the entries kept. The index must then be rebuilt."""
    cdef Py_ssize_t i = 0, n = t.count
    while i < n:
        if not removable(t, i, now_ms, expiration_ms):
            i += 1
            continue
        entry_forget(t, i)
        n -= 1
        while n > i and removable(t, n, now_ms, expiration_ms):
            entry_forget(t, n)
            n -= 1
        if n > i:
            entry_move(t, i, n)
            i += 1
    return n


cdef Py_ssize_t settle_candidates(const Table* t, Removal* r) noexcept nogil:
    """How many candidates go: all of them unless some entry has an ongoing transaction
    (t.open_txns); then each candidate is read and those in one are unmarked (spec §6)."""
    cdef Py_ssize_t i, removed = 0, count = t.count
    cdef uint32_t* bits = r.marked
    if t.open_txns == 0:
        return r.candidates
    i = next_marked(bits, 0, count)
    while i < count:
        if keeps_transaction(t, i):
            unmark(bits, i)
        else:
            removed += 1
        i = next_marked(bits, i + 1, count)
    return removed


cdef void mark_holes(const Table* t, Removal* r) noexcept nogil:
    """Add the holes to the marked entries (compaction removes them too)."""
    cdef Py_ssize_t i = t.free_hole
    while i >= 0:
        r.marked[i >> 5] |= <uint32_t>1 << (i & 31)
        i = (<EntryHeader*>entry_at(t, i)).timestamp_base


cdef inline void make_hole(Table* t, Py_ssize_t i) noexcept nogil:
    """Entry i becomes a hole, first on the free list. Only its header (and timestamp) is
    written; the timestamp INT64_MAX keeps it from ever being a candidate (no threshold
    reaches it: expiration_ms is at least 1)."""
    cdef EntryHeader* header = <EntryHeader*>entry_at(t, i)
    header.producer_id = HOLE_ID
    header.current_txn_first_offset = NO_TXN
    header.head = 0
    header.count = 0
    header.offset_base = 0
    header.timestamp_base = t.free_hole
    last_timestamp_at(t, i)[0] = INT64_MAX
    t.free_hole = i
    t.holes += 1


cdef void make_holes(Table* t, Removal* r, IndexEdits* edits) noexcept nogil:
    """Every marked entry becomes a hole, in ascending order (so inserts take them back from
    the highest); its index slot is queued as deleted when `edits` is not NULL. Nothing
    moves: each removed entry's header line is written, and read only for an index edit or a
    wide ring."""
    cdef Py_ssize_t count = t.count, i, ahead, _
    cdef const uint32_t* bits = r.marked
    cdef const char* e
    i = next_marked(bits, 0, count)
    ahead = i
    for _ in range(REMOVE_AHEAD):
        if ahead < count:
            e = entry_at(t, ahead)
            dedup_prefetch_write(e)
            dedup_prefetch_write(e + ENTRY_HEADER_SIZE - 1)
        ahead = next_marked(bits, ahead + 1, count)
    while i < count:
        if ahead < count:
            e = entry_at(t, ahead)
            dedup_prefetch_write(e)
            dedup_prefetch_write(e + ENTRY_HEADER_SIZE - 1)
            ahead = next_marked(bits, ahead + 1, count)
        if edits != NULL:
            index_edit(t, edits, (<EntryHeader*>entry_at(t, i)).producer_id, i, DEDUP_INDEX_DELETED)
        entry_forget(t, i)
        make_hole(t, i)
        i = next_marked(bits, i + 1, count)
    if edits != NULL:
        while edits.applied != edits.queued:
            index_edit_apply(t, edits)


cdef void reindex_after_removal(Table* t, const Removal* r, Py_ssize_t count, Py_ssize_t removed,
                                Py_ssize_t tail, bint exact) noexcept nogil:
    """A smaller index if one can be had (memory returns after mass expiry), else the same one:
    kept if `exact` (removal edited it), else swept with removal's records `r` (of a table
    that had `count` entry numbers in use, `tail` of them from the end renumbered by
    compaction, `removed` producers gone), or refilled when there are none. This cannot fail,
    so removal never leaves the index stale."""
    cdef uint64_t target = index_capacity_for(max(table_live(t), t.reserved))
    cdef uint32_t* fresh
    if target * 2 <= t.index_capacity:
        fresh = <uint32_t*>try_block(<size_t>target * sizeof(uint32_t))
        if fresh != NULL:
            index_adopt(t, fresh, <uint32_t>target)
            index_fill(t)
            return
    if exact:
        return
    if r.moved_to == NULL or table_live(t) == 0:
        index_fill(t)  # with no entry left, a memset
        return
    dedup_index_sweep(t.index, t.index_capacity, t.idx_mask, r.marked, <uint32_t>(count - 1),
                      <uint32_t>tail, r.moved_to)
    # Every removed entry's slot is now a deleted slot.
    t.index_deleted += <uint32_t>removed


cdef Py_ssize_t table_remove_expired(Table* t, int64_t now_ms, int64_t expiration_ms) noexcept nogil:
    """Remove every producer that is expired and has no ongoing transaction; returns how many.

    The timestamp column marks the candidates in a bitmap (holes never are: their timestamp
    is INT64_MAX); entries are read only if some entry has an ongoing transaction (to keep
    those) or is wide (to free its ring). Then one of:

    - holes (more than half the numbers in use stay live): each removed entry becomes a hole
      on the free list, nothing moves, and inserts take the holes back, last freed first;
    - compaction (at most half stay live): swap-remove over the removed entries and the
      holes, from both ends (the hole is filled by the last entry that stays; removed
      entries at the tail are simply dropped), so whole chunks at the tail are freed; when
      every producer goes and none is in a transaction, nothing is read or moved at all.

    The index is edited in place when few are removed, else swept once from the bitmap (and
    the compaction's renumbering), or rebuilt smaller after mass expiry.

    dedup.reference does the same (its remove_expired spells out the same holes and moves):
    Kafka's table is a HashMap and promises no order, so any order that both twins share
    (their snapshots list entries in it) will do.
    """
    cdef Py_ssize_t count = t.count, live = table_live(t), kept, removed = 0, tail = 0
    cdef Removal r
    cdef IndexEdits edits
    cdef bint exact = False
    r.marked = r.moved_to = NULL
    if live == 0 or now_ms < INT64_MIN + expiration_ms:
        return 0  # no timestamp is expiration_ms before now_ms
    # is_expired(now, last, expiration) is exactly last <= now - expiration (no overflow here).
    if removal_start(t, now_ms - expiration_ms, &r) == 0:
        # A few removals edit the index in place; more pay for a sweep of all of it, and mass
        # expiry (the index is then rebuilt smaller) for neither. (For compaction; holes
        # decide below.)
        exact = (r.candidates * SWEEP_SLOTS_PER_REMOVAL < t.index_capacity
                 and not index_will_shrink(t, live - r.candidates))
        edits.applied = edits.queued = 0
        if r.candidates == live and t.open_txns == 0:
            # Every producer expired and none is in a transaction: nothing to read or move.
            removed = live
            t.count = t.holes = 0
            t.free_hole = -1
            t.wide_used = 0  # every ring is free: wide_trim frees the pool
        elif r.candidates:
            removed = settle_candidates(t, &r)
            if removed and (live - removed) * 2 <= count:
                mark_holes(t, &r)
                kept = remove_recorded(t, &r, &edits if exact else NULL)
                tail = count - kept
                t.count = kept
                t.holes = 0
                t.free_hole = -1
            elif removed:
                exact = (removed * SWEEP_SLOTS_PER_HOLE < t.index_capacity
                         and not index_will_shrink(t, live - removed))
                make_holes(t, &r, &edits if exact else NULL)
    else:
        kept = remove_unrecorded(t, now_ms, expiration_ms)
        removed = live - kept
        t.count = kept
        t.holes = 0
        t.free_hole = -1
    wide_trim(t)
    if removed or t.count != count:  # (without records, holes are compacted away too)
        release_spare_chunks(t)
        reindex_after_removal(t, &r, count, removed, tail, exact)
        t.generation += 1
    removal_end(&r)
    return removed


# --- copies (spec §3.1: a batch append staged on a copy) ----------------------------------

cdef int table_copy_all(Table* dst, const Table* src) except -1 nogil:
    """Every entry of src into dst, an empty table of the same window, in src's order.

    Entry numbers are kept, so entries and the timestamp column are copied a chunk at a
    time: both tables have the same stride, hence the same chunk_shift, and chunk k holds
    entries [k << chunk_shift, (k + 1) << chunk_shift) in either. Then one index pass.
    """
    cdef Py_ssize_t chunk = <Py_ssize_t>1 << src.chunk_shift
    cdef Py_ssize_t first = 0, rows, i
    if table_live(src) == 0:
        return 0
    table_reserve(dst, table_live(src))  # a no-op when dst was made with this capacity
    wide_reserve(dst, src.wide_capacity)  # before any entry is copied
    if src.holes:
        # The live entries one by one, in order: the copy has no holes (as the twin's).
        for i in range(src.count):
            if not is_hole(entry_at(src, i)):
                memcpy(entry_at(dst, first), entry_at(src, i), src.stride)
                last_timestamp_at(dst, first)[0] = last_timestamp_at(src, i)[0]
                first += 1
    while first < src.count - src.holes:
        rows = min(chunk, src.count - first)
        memcpy(entry_at(dst, first), entry_at(src, first), rows * src.stride)
        memcpy(last_timestamp_at(dst, first), last_timestamp_at(src, first), rows * sizeof(int64_t))
        first += rows
    if src.wide_used:
        # The pool is copied as it is: the entries name the same rings in dst.
        memcpy(dst.wide, src.wide, <size_t>src.wide_top * 3 * <size_t>src.window * sizeof(int64_t))
        dst.wide_used = src.wide_used
        dst.wide_top = src.wide_top
        dst.wide_free = src.wide_free
    dst.count = table_live(src)
    dst.open_txns = src.open_txns
    index_fill(dst)
    dst.generation += 1
    return 0


cdef Py_ssize_t find_entries(const Table* t, const int64_t* producer_ids, Py_ssize_t rows,
                             int64_t* entries) noexcept nogil:
    """The entry numbers of the ids t holds, in their order, into entries; returns how many."""
    cdef Py_ssize_t row, i, found = 0
    for row in range(rows):
        i = table_find(t, producer_ids[row])
        if i >= 0:
            entries[found] = i
            found += 1
    return found


cdef int table_copy_entries(Table* dst, const Table* src, const int64_t* entries,
                            Py_ssize_t n) except -1 nogil:
    """Entries `entries[0..n)` of src into dst (same window), each a byte copy of the entry
    (ring and head included) and of its last_timestamp; a repeated entry is copied once."""
    cdef Py_ssize_t k, i, j
    table_reserve(dst, dst.count + n)
    wide_reserve(dst, src.wide_used)
    for k in range(n):
        i = entries[k]
        j = table_find_or_insert(dst, (<EntryHeader*>entry_at(src, i)).producer_id)
        entry_copy(dst, j, src, i)
    dst.generation += 1
    return 0


cdef int table_update_from(Table* dst, const Table* src) except -1 nogil:
    """Every entry of src (a staged copy: same window, another table) into dst, each a byte
    copy of the entry and of its last_timestamp, replacing dst's entry of that producer or
    added after dst's last one, in src's order; dst's map end offset moves up to src's.

    All or nothing: the first pass counts the producers dst lacks and grows dst for them
    (MemoryError here changes no entry); after that insert_new neither reallocates nor
    rehashes, so the copy loop cannot fail. Entry numbers are looked up afresh per producer
    and no pointer into dst is kept across an insert.
    """
    cdef Py_ssize_t i, j, missing = 0
    for i in range(src.count):
        if not is_hole(entry_at(src, i)) and table_find(dst, (<EntryHeader*>entry_at(src, i)).producer_id) < 0:
            missing += 1
    if missing:
        reserve_producers(dst, dst.count + missing, False)
    wide_reserve(dst, src.wide_used)  # entry_copy then cannot fail either
    for i in range(src.count):
        if is_hole(entry_at(src, i)):
            continue
        j = table_find_or_insert(dst, (<EntryHeader*>entry_at(src, i)).producer_id)
        entry_copy(dst, j, src, i)
    wide_trim(dst)
    if table_live(src) == 0 and src.map_end_offset <= dst.map_end_offset:
        return 0  # nothing changes: check() results stay valid
    if src.map_end_offset > dst.map_end_offset:
        dst.map_end_offset = src.map_end_offset
    dst.generation += 1
    return 0


# --- Python boundary ----------------------------------------------------------------------

cdef inline int64_t as_int64(object value, int64_t low, int64_t high, object slow) except? -1:
    """An exact int in [low, high] converted in C; anything else goes to `slow`, the
    dedup._args check that converts it or raises the error naming the argument."""
    cdef int overflow = 0
    cdef long long number
    if PyLong_CheckExact(value):
        if not dedup_small_long(value, &number):
            number = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0 and low <= number <= high:
            return number
    return slow(value)


cdef inline uint8_t as_origin(object value) except 255:
    cdef int overflow = 0
    cdef long long number
    if value is _CLIENT:  # the default: no conversion
        return ORIGIN_CLIENT
    if type(value) is Origin or PyLong_CheckExact(value):
        # An Origin is an int subclass: its value is read in C, without a Python comparison.
        number = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0 and 0 <= number <= 2:
            return <uint8_t>number
    return <uint8_t>(<int>_origin_arg(value))


cdef inline uint8_t as_flag(object value, str name) except 255:
    if value is True:
        return 1
    if value is False:
        return 0
    return 1 if _flag_arg(name, value) else 0


cdef str _qualified(object value):
    """`module.Class` of a value, naming which twin a table is."""
    return f"{type(value).__module__}.{type(value).__qualname__}"


cdef object copy_ids(object producer_ids):
    """copy()'s producer_ids as a C-contiguous int64 array, checked like append_many's column
    (the same as dedup.reference.table._copy_ids)."""
    if not isinstance(producer_ids, np.ndarray):
        if isinstance(producer_ids, (str, bytes, bytearray)):
            iterator = None
        else:
            try:
                iterator = iter(producer_ids)
            except TypeError:
                iterator = None
        if iterator is None:
            raise TypeError("producer_ids must be an iterable of producer ids, an int64 array or None, "
                            f"got {type(producer_ids).__name__}")
        producer_ids = list(iterator)
    return _args._column(*_args._COLUMNS[0], producer_ids)


cdef inline int load_batch(const Table* t, Batch* b, object producer_id, object producer_epoch,
                           object base_sequence, object record_count, object base_offset,
                           object max_timestamp, object origin, object transactional) except -1:
    """The arguments of check()/append() as a Batch; the same checks, in the same order,
    as dedup.reference (TypeError/ValueError naming the argument)."""
    cdef int64_t count
    b.producer_id = as_int64(producer_id, 0, INT64_MAX, _producer_id_arg)
    b.producer_epoch = <int16_t>as_int64(producer_epoch, -32768, 32767, _producer_epoch_arg)
    b.base_sequence = <int32_t>as_int64(base_sequence, -1, INT32_MAX_VALUE, _base_sequence_arg)
    count = as_int64(record_count, 1, INT32_MAX_VALUE, _record_count_arg)
    b.base_offset = as_int64(base_offset, 0, INT64_MAX, _base_offset_arg)
    b.max_timestamp = as_int64(max_timestamp, INT64_MIN, INT64_MAX, _max_timestamp_arg)
    b.origin = as_origin(origin)
    b.transactional = as_flag(transactional, "transactional")
    if b.base_offset > INT64_MAX - count:
        _args.last_offset(b.base_offset, count)  # raises: last offset + 1 must fit in int64
    if b.base_offset < t.map_end_offset:
        _args.not_backwards("base_offset", b.base_offset, t.map_end_offset)
    b.offset_delta = <int32_t>(count - 1)
    b.last_sequence = (NO_SEQUENCE if b.base_sequence == NO_SEQUENCE
                       else increment_sequence(b.base_sequence, b.offset_delta))
    return 0


@cython.freelist(32)
@cython.auto_pickle(False)
cdef class AppendResult:
    """The verdict on one batch: appended (or to be appended) at these offsets, or a duplicate.

    For a duplicate, ``base_offset``, ``last_offset`` and ``timestamp`` are the ORIGINAL
    batch's (spec §2.1 rule 10); otherwise they are this batch's offsets and max timestamp.
    A result of :meth:`ProducerStateTable.check` is passed to
    :meth:`ProducerStateTable.update` once the batch is written.
    """

    def __init__(self):
        raise TypeError("AppendResult is made by ProducerStateTable.check() or append()")

    @property
    def origin(self):
        return Origin(self._origin)

    def __repr__(self):
        kind = "duplicate" if self.duplicate else "append"
        return (f"AppendResult({kind}, producer_id={self.producer_id}, base_offset={self.base_offset}, "
                f"last_offset={self.last_offset}, timestamp={self.timestamp})")


cdef AppendResult make_result(ProducerStateTable table, const Batch* b, const Verdict* v, uint64_t generation):
    cdef AppendResult r = AppendResult.__new__(AppendResult)
    r.duplicate = v.duplicate
    r.base_offset = v.base_offset
    r.last_offset = v.last_offset
    r.timestamp = v.timestamp
    r.producer_id = b.producer_id
    r.producer_epoch = b.producer_epoch
    r.base_sequence = b.base_sequence
    r.last_sequence = b.last_sequence
    r.transactional = b.transactional
    r._origin = b.origin
    r._table = table
    r._generation = generation
    return r


cdef object raise_batch_error(int error, const Batch* b, const Verdict* v):
    raise batch_error(error, b.producer_id, b.base_offset, b.producer_epoch, b.base_sequence,
                      v.current_epoch, v.current_last_sequence, v.current_txn_first_offset)


cdef void warn_epoch_regression(const Batch* b, const Verdict* v):
    _log.warning("producer %d: epoch %d is older than the current epoch %d; accepted from replication",
                 b.producer_id, b.producer_epoch, v.current_epoch)


@cython.auto_pickle(False)
cdef class ProducerStateTable:
    """The producer state of one partition replica (compiled).

    ``window`` is how many batches per producer are retained for duplicate detection
    (Kafka: 5, configurable up to 255). ``capacity`` presizes the table for that many
    producers, so that it does not reallocate until it holds more.
    """

    def __cinit__(self, window=5, *, capacity=0):
        table_init(&self.t, _args.window(window), _args.capacity(capacity))

    def __dealloc__(self):
        table_free(&self.t)

    cdef int _check_idle(self) except -1:
        if self._busy:
            raise RuntimeError("the table is in use: another thread is running a call on it without the GIL "
                               "(append_many, append_batches, remove_expired, copy, update_from or a snapshot write)")
        return 0

    cdef int _load_batch(self, Batch* b, object producer_id, object producer_epoch,
                         object base_sequence, object record_count, object base_offset,
                         object max_timestamp, object origin, object transactional) except -1:
        """The arguments of check()/append() as a Batch (see load_batch)."""
        return load_batch(&self.t, b, producer_id, producer_epoch, base_sequence, record_count,
                          base_offset, max_timestamp, origin, transactional)

    # -- inspection -------------------------------------------------------------------------

    @property
    def window(self):
        return self.t.window

    @property
    def map_end_offset(self):
        """Exclusive end offset of what the table reflects (Kafka's mapEndOffset)."""
        return self.t.map_end_offset

    def __len__(self):
        return table_live(&self.t)

    def __contains__(self, producer_id):
        self._check_idle()
        cdef object number = _args.maybe_producer_id(producer_id)
        return number is not None and table_find(&self.t, <int64_t>number) >= 0

    def __iter__(self):
        return iter(self.producer_ids().tolist())

    def producer_ids(self):
        """The producer ids in the table, as an int64 array (in the table's order)."""
        self._check_idle()
        ids = np.empty(table_live(&self.t), dtype=np.int64)
        cdef int64_t[::1] out = ids
        cdef Py_ssize_t i, k = 0
        cdef int64_t producer_id
        for i in range(self.t.count):
            producer_id = (<EntryHeader*>entry_at(&self.t, i)).producer_id
            if producer_id != HOLE_ID:
                out[k] = producer_id
                k += 1
        return ids

    def entry(self, producer_id):
        """A read-only copy of the producer's state, or None if the table has no entry."""
        self._check_idle()
        cdef Py_ssize_t i = table_find(&self.t, _args.producer_id(producer_id))
        if i < 0:
            return None
        cdef char* e = entry_at(&self.t, i)
        cdef EntryHeader* header = <EntryHeader*>e
        cdef int k, pos
        batches = []
        for k in range(header.count):
            pos = (header.head + k) % self.t.window
            batches.append(BatchMetadata(ring_last_sequence(e)[pos], slot_last_offset(&self.t, e, pos),
                                         slot_offset_delta(&self.t, e, pos), slot_timestamp(&self.t, e, pos)))
        return ProducerStateEntry(
            producer_id=header.producer_id,
            producer_epoch=header.producer_epoch,
            batches=tuple(batches),
            coordinator_epoch=header.coordinator_epoch,
            last_timestamp=last_timestamp_at(&self.t, i)[0],
            current_txn_first_offset=(None if header.current_txn_first_offset == NO_TXN
                                      else header.current_txn_first_offset),
        )

    def memory_bytes(self):
        """Bytes held by the table's allocations: entries, timestamp column, index."""
        return self.t.bytes

    def capacity_report(self):
        """How the table is sized: producers, entry and index capacity, load factor (live slots),
        index slots marked deleted by remove_expired (reused by inserts), chunks, wide entries,
        entries with an ongoing transaction, slabs (blocks of many chunks in huge pages), bytes."""
        return {
            "producers": table_live(&self.t),
            "holes": self.t.holes,
            "entry_capacity": entry_capacity(&self.t),
            "index_capacity": self.t.index_capacity,
            "load_factor": <double>table_live(&self.t) / self.t.index_capacity if self.t.index_capacity else 0.0,
            "index_deleted": self.t.index_deleted,
            "chunks": self.t.n_chunks,
            "entry_bytes": self.t.stride,
            "wide_entries": self.t.wide_used,
            "open_transactions": self.t.open_txns,
            "slabs": self.t.n_slabs,
            "bytes": self.t.bytes,
        }

    def __repr__(self):
        return f"<dedup.ProducerStateTable window={self.t.window} producers={table_live(&self.t)}>"

    # -- data batches -----------------------------------------------------------------------

    def check(self, producer_id, producer_epoch, base_sequence, record_count, base_offset, *,
              max_timestamp=-1, origin=_CLIENT, transactional=False):
        """Validate one batch without changing the table (spec §3.1 staging).

        Returns the verdict: a duplicate (answered with the original batch's offsets and
        timestamp) or a batch to write at ``base_offset``; raises the Kafka error otherwise.
        """
        cdef Batch b
        cdef Verdict v
        if self._busy:
            self._check_idle()
        load_batch(&self.t, &b, producer_id, producer_epoch, base_sequence, record_count, base_offset,
                   max_timestamp, origin, transactional)
        cdef int error = validate_batch(&self.t, table_find(&self.t, b.producer_id), &b, &v)
        if error:
            raise_batch_error(error, &b, &v)
        if v.epoch_regression:
            warn_epoch_regression(&b, &v)
        return make_result(self, &b, &v, self.t.generation)

    def update(self, result):
        """Record a batch that :meth:`check` accepted and the log has written (spec §3.2 step 4).

        ``ValueError`` for a duplicate (nothing to record) or a stale result (the table
        changed since the check); ``TypeError`` for anything but this table's own result.
        """
        cdef Batch b
        self._check_idle()
        if type(result) is not AppendResult:
            raise TypeError(f"result must be an AppendResult from check(), got {type(result).__name__}")
        cdef AppendResult r = <AppendResult>result
        if r._table is not self:
            raise ValueError("result comes from another table's check()")
        if r.duplicate:
            raise ValueError("result is a duplicate: there is nothing to record")
        if r._generation != self.t.generation:
            raise ValueError("result is stale: the table changed since check(); check the batch again")
        b.producer_id = r.producer_id
        b.producer_epoch = r.producer_epoch
        b.base_sequence = r.base_sequence
        b.last_sequence = r.last_sequence
        b.base_offset = r.base_offset
        b.offset_delta = <int32_t>(r.last_offset - r.base_offset)
        b.max_timestamp = r.timestamp
        b.transactional = r.transactional
        b.origin = <uint8_t>r._origin
        record_batch(&self.t, table_find_or_insert(&self.t, b.producer_id), &b)

    def append(self, producer_id, producer_epoch, base_sequence, record_count, base_offset, *,
               max_timestamp=-1, origin=_CLIENT, transactional=False):
        """:meth:`check`, then :meth:`update` unless the batch is a duplicate; one lookup."""
        cdef Batch b
        cdef Verdict v
        if self._busy:
            self._check_idle()
        load_batch(&self.t, &b, producer_id, producer_epoch, base_sequence, record_count, base_offset,
                   max_timestamp, origin, transactional)
        cdef uint64_t generation = self.t.generation
        cdef int error = append_batch(&self.t, &b, &v)
        if error:
            raise_batch_error(error, &b, &v)
        if v.epoch_regression:
            warn_epoch_regression(&b, &v)
        return make_result(self, &b, &v, generation)

    def append_many(self, producer_ids, producer_epochs, base_sequences, record_counts,
                    max_timestamps=None, *, log_end_offset, origin=_CLIENT, transactional=None):
        """:meth:`append` for each row, accepted batches taking consecutive offsets from
        ``log_end_offset``; a Kafka error becomes that row's code instead of an exception.

        Columns: ``producer_ids`` int64, ``producer_epochs`` int16, ``base_sequences`` int32,
        ``record_counts`` int32, ``max_timestamps`` int64 (None: -1), ``transactional`` bool
        (None: all False). Other integer dtypes are converted when every value fits. The loop
        runs without the GIL. Returns an :class:`AppendManyResult`.
        """
        self._check_idle()
        pids, epochs, seqs, counts, stamps, txn = _args.batch_arrays(
            producer_ids, producer_epochs, base_sequences, record_counts, max_timestamps, transactional)
        cdef int64_t end = _args.offset("log_end_offset", log_end_offset)
        _args.not_backwards("log_end_offset", end, self.t.map_end_offset)
        _args.total_records_fit(end, counts)
        cdef uint8_t append_origin = as_origin(origin)
        cdef Py_ssize_t rows = len(pids)
        codes = np.zeros(rows, dtype=np.int16)
        duplicate = np.zeros(rows, dtype=np.bool_)
        firsts = np.empty(rows, dtype=np.int64)
        lasts = np.empty(rows, dtype=np.int64)
        times = np.empty(rows, dtype=np.int64)
        if rows == 0:
            return AppendManyResult(codes, duplicate, firsts, lasts, times, end)

        cdef const int64_t[::1] pid_view = pids
        cdef const int16_t[::1] epoch_view = epochs
        cdef const int32_t[::1] seq_view = seqs
        cdef const int32_t[::1] count_view = counts
        cdef const int64_t[::1] stamp_view = stamps
        cdef const uint8_t[::1] txn_view
        cdef int16_t[::1] code_view = codes
        cdef uint8_t[::1] dup_view = duplicate.view(np.uint8)
        cdef int64_t[::1] first_view = firsts
        cdef int64_t[::1] last_view = lasts
        cdef int64_t[::1] time_view = times
        cdef BatchColumns columns
        cdef VerdictColumns out
        cdef Py_ssize_t done = 0, regressions = 0
        columns.producer_ids = &pid_view[0]
        columns.producer_epochs = &epoch_view[0]
        columns.base_sequences = &seq_view[0]
        columns.record_counts = &count_view[0]
        columns.max_timestamps = &stamp_view[0]
        columns.transactional = NULL
        if txn is not None:
            txn_view = txn.view(np.uint8)
            columns.transactional = &txn_view[0]
        out.error_codes = &code_view[0]
        out.duplicate = &dup_view[0]
        out.base_offsets = &first_view[0]
        out.last_offsets = &last_view[0]
        out.timestamps = &time_view[0]

        self._busy = 1
        try:
            with nogil:
                append_columns(&self.t, &columns, &out, rows, append_origin, &end, &done, &regressions)
        except MemoryError as error:
            error.args = (f"{error.args[0] if error.args else 'out of memory'}; rows [0, {done}) were "
                          f"applied: their verdicts are in .partial_result",)
            error.partial_result = AppendManyResult(
                codes[:done], duplicate[:done], firsts[:done], lasts[:done], times[:done], end)
            raise
        finally:
            self._busy = 0
        if regressions:
            _log.warning("%d batches from replication carried an epoch older than their producer's; "
                         "accepted (spec §2.4)", regressions)
        return AppendManyResult(codes, duplicate, firsts, lasts, times, end)

    def update_map_end_offset(self, offset):
        """The log wrote batches without producer state (no producer id) up to ``offset``,
        exclusive: Kafka's updateMapEndOffset (spec §3.2 step 6). ``ValueError`` if it
        would go backwards."""
        self._check_idle()
        cdef int64_t end = _args.offset("offset", offset)
        _args.not_backwards("offset", end, self.t.map_end_offset)
        if end != self.t.map_end_offset:
            self.t.map_end_offset = end
            self.t.generation += 1

    # -- transaction markers ----------------------------------------------------------------

    def append_marker(self, producer_id, producer_epoch, coordinator_epoch, offset, *, commit,
                      timestamp=-1, origin=Origin.COORDINATOR):
        """Apply a COMMIT or ABORT marker written at ``offset`` (spec §2.2).

        Returns the completed transaction, or ``None`` when none was ongoing (an empty
        transaction completes nothing, KAFKA-10702). Raises ``InvalidProducerEpochError``
        (M2) or ``TransactionCoordinatorFencedError`` (M3) for the coordinator; a follower
        (``REPLICATION``) logs and applies instead. A client cannot send a marker (rule 7).
        """
        cdef Verdict v
        self._check_idle()
        cdef int64_t pid = _args.producer_id(producer_id)
        cdef int16_t epoch = _args.producer_epoch(producer_epoch)
        cdef int32_t coordinator = _args.coordinator_epoch(coordinator_epoch)
        cdef int64_t marker_offset = _args.marker_offset(offset)
        cdef bint is_commit = _args.flag("commit", commit)
        cdef int64_t stamp = _args.timestamp("timestamp", timestamp)
        cdef uint8_t marker_origin = as_origin(origin)
        _args.not_backwards("offset", marker_offset, self.t.map_end_offset)
        cdef int error = append_marker(&self.t, pid, epoch, coordinator, marker_offset, stamp,
                                       marker_origin, &v)
        if error:
            raise marker_error(error, pid, marker_offset, epoch, coordinator, v.current_epoch,
                               v.current_coordinator_epoch)
        if v.epoch_regression:
            _log.warning("producer %d: marker epoch %d is older than the current epoch %d; "
                         "accepted from replication", pid, epoch, v.current_epoch)
        if v.coordinator_epoch_regression:
            _log.info("producer %d: marker coordinator epoch %d is older than %d; accepted from "
                      "replication", pid, coordinator, v.current_coordinator_epoch)
        if v.current_txn_first_offset == NO_TXN:
            return None
        return CompletedTxn(pid, v.current_txn_first_offset, marker_offset, not is_commit)

    # -- copies -----------------------------------------------------------------------------

    def copy(self, producer_ids=None):
        """A new table with the same window and map end offset holding copies of the entries
        of ``producer_ids`` (any iterable of ints or an int64 numpy array; ids the table does
        not hold are skipped), or of every producer when None. Changing the copy never
        changes this table, nor the reverse. The record log uses it to stage an append of
        several batches (spec §3.1: validate against a copy, write, then apply to the live
        table).

        The copy is presized for the producers it holds and keeps their order (the order of
        ``producer_ids``, first occurrence, for a subset). ``TypeError`` or ``ValueError``
        naming ``producer_ids`` for anything but producer ids (a negative id is a
        ``ValueError``, as in :meth:`entry`).
        """
        self._check_idle()
        ids = None if producer_ids is None else copy_ids(producer_ids)
        cdef const int64_t[::1] id_view
        cdef int64_t[::1] entry_view
        cdef Py_ssize_t rows, found = 0
        cdef ProducerStateTable fresh
        self._busy = 1  # the loops below read this table without the GIL
        try:
            if ids is None:
                fresh = ProducerStateTable.__new__(ProducerStateTable, self.t.window, capacity=table_live(&self.t))
                with nogil:
                    table_copy_all(&fresh.t, &self.t)
            else:
                rows = len(ids)
                entries = np.empty(rows, dtype=np.int64)
                if rows:
                    id_view = ids
                    entry_view = entries
                    with nogil:
                        found = find_entries(&self.t, &id_view[0], rows, &entry_view[0])
                fresh = ProducerStateTable.__new__(ProducerStateTable, self.t.window, capacity=found)
                if found:
                    with nogil:
                        table_copy_entries(&fresh.t, &self.t, &entry_view[0], found)
        finally:
            self._busy = 0
        fresh.t.map_end_offset = self.t.map_end_offset
        return fresh

    def update_from(self, staged):
        """Make the entries of ``staged`` (a table made by this table's :meth:`copy`, then
        appended to) the live ones: every producer in ``staged`` replaces (or adds) its entry
        here, byte for byte, and this table's map end offset moves up to staged's (never
        down). Kafka's ProducerStateManager.update(appendInfo) after the log write (spec §3.2
        step 4)::

            staged = live.copy(producer_ids)   # validate the append against the copy
            ...                                # append to staged, write the log
            live.update_from(staged)

        Producers not in ``staged`` are untouched; ``staged`` is not changed and shares
        nothing with this table afterwards. Results of :meth:`check` made before are stale
        (unless nothing changed: ``staged`` empty and its map end offset not ahead). All or
        nothing: a ``MemoryError`` (growing this table) leaves every entry as it was.

        ``TypeError`` unless ``staged`` is a table of this same implementation;
        ``ValueError`` if it has another window or is this table itself.
        """
        self._check_idle()
        if not isinstance(staged, ProducerStateTable):
            raise TypeError(f"staged must be a {_qualified(self)} made by this table's copy(), "
                            f"got {_qualified(staged)}")
        cdef ProducerStateTable source = <ProducerStateTable>staged
        if source is self:
            raise ValueError("staged is this table itself: update_from takes a copy made by copy()")
        if source.t.window != self.t.window:
            raise ValueError(f"staged has window {source.t.window}, this table has window {self.t.window}: "
                             f"staged must be made by this table's copy()")
        source._check_idle()
        self._busy = 1  # the loop below changes this table and reads staged without the GIL
        source._busy = 1
        try:
            with nogil:
                table_update_from(&self.t, &source.t)
        finally:
            self._busy = 0
            source._busy = 0

    # -- expiration -------------------------------------------------------------------------

    def remove_expired(self, now_ms, expiration_ms):
        """Remove producers idle for at least ``expiration_ms`` (spec §6); returns how many.

        A producer is expired when it has no ongoing transaction and
        ``now_ms - last_timestamp >= expiration_ms`` (exact integer arithmetic). One pass
        over an 8-byte timestamp column, then work for the removed producers only: each
        leaves a hole in the table's order that the next new producer takes (the hole freed
        last first); nothing else moves. When at most half the table would stay, it is
        compacted instead (the last producers fill the holes) and its memory given back. The
        same in dedup.reference.
        """
        self._check_idle()
        cdef int64_t now = _args.timestamp("now_ms", now_ms)
        cdef int64_t expiration = _args.integer("expiration_ms", expiration_ms, 1, INT64_MAX, "in [1, 2^63-1]")
        cdef Py_ssize_t removed
        self._busy = 1
        try:
            with nogil:
                removed = table_remove_expired(&self.t, now, expiration)
        finally:
            self._busy = 0
        return removed


def increment_sequence_c(int32_t sequence, int32_t increment):
    """The compiled incrementSequence (spec §8.4), exposed for tests."""
    return increment_sequence(sequence, increment)


def decrement_sequence_c(int32_t sequence, int32_t decrement):
    """The compiled decrementSequence (spec §8.4), exposed for tests."""
    return decrement_sequence(sequence, decrement)


def in_sequence_c(int32_t last_sequence, int32_t next_sequence):
    """The compiled inSequence (spec §8.4), exposed for tests."""
    return in_sequence(last_sequence, next_sequence)


def open_transactions_c(ProducerStateTable table not None):
    """(the table's count of entries with an ongoing transaction, a recount of them), exposed
    for tests: remove_expired reads no entry when the count is 0, so it must be exact."""
    cdef Table* t = &table.t
    cdef Py_ssize_t i, recount = 0
    for i in range(t.count):
        recount += (<EntryHeader*>entry_at(t, i)).current_txn_first_offset != NO_TXN
    return t.open_txns, recount


def bulk_append_c(ProducerStateTable table not None, producer_ids):
    """The snapshot loaders' bulk path (bulk_begin, bulk_append, bulk_finish), exposed for
    tests: an entry without batches for each id, as an insert would make it. Returns (repeat,
    repeated) as bulk_finish; with a repeat the table must be discarded."""
    table._check_idle()
    cdef const int64_t[::1] ids = np.ascontiguousarray(producer_ids, dtype=np.int64)
    cdef Table* t = &table.t
    cdef BulkLoad bulk
    cdef Py_ssize_t k, repeat = -1, repeated = -1
    memset(&bulk, 0, sizeof(BulkLoad))
    try:
        bulk_begin(t, &bulk, ids.shape[0])
        for k in range(ids.shape[0]):
            bulk_append(t, &bulk, ids[k])
            entry_init(t, t.count - 1)
        bulk_finish(t, &bulk, &repeat, &repeated)
    finally:
        bulk_free(&bulk)
        t.generation += 1
    return repeat, repeated


def _c_constants():
    """The enums of _state.pxd that Python shares, by name, for dedup._layout to check against
    its definitions: the Kafka error codes the table reports and the append origins."""
    return {
        "ERR_NONE": ERR_NONE, "ERR_CORRUPT_MESSAGE": ERR_CORRUPT_MESSAGE,
        "ERR_OUT_OF_ORDER_SEQUENCE_NUMBER": ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
        "ERR_INVALID_PRODUCER_EPOCH": ERR_INVALID_PRODUCER_EPOCH, "ERR_INVALID_TXN_STATE": ERR_INVALID_TXN_STATE,
        "ERR_TRANSACTION_COORDINATOR_FENCED": ERR_TRANSACTION_COORDINATOR_FENCED,
        "ERR_INVALID_RECORD": ERR_INVALID_RECORD,
        "ORIGIN_CLIENT": ORIGIN_CLIENT, "ORIGIN_REPLICATION": ORIGIN_REPLICATION,
        "ORIGIN_COORDINATOR": ORIGIN_COORDINATOR,
    }


from dedup._layout import check_compiled

check_compiled(__name__, _c_constants())
