# The index from producer id to entry number (part of _state.pyx, which includes it): open
# addressing over uint32 slots (hash tag | entry number), linear probing, the sentinels of
# table/limits.h, resizing, and inserting a producer's new entry. The keyed hash itself is in
# _state.pxd (the snapshot loader hashes too).
#
# Spec: docs/spec.md §1.1 (producers: a map from producer id to its entry) and §1.2 (the
# initial values of an unknown producer's entry, which insert_new gives it).

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


# --- a new producer -----------------------------------------------------------------------

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
    return admit_new(t, producer_id, h)
