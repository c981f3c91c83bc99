# Bulk loading (part of _state.pyx, which includes it): a snapshot decode appends its entries
# first and indexes them afterwards in one pass (bulk_begin, bulk_finish, bulk_free here;
# bulk_append, the per-entry step, in _state.pxd). The table comes out as one insert per entry
# would make it.
#
# Spec: docs/spec.md §4.4 step 3 and §5.1 (a snapshot read into the table); a producer id
# met twice is reported to the loader (Kafka's map would keep the later entry).

# --- bulk loading: entries written first, indexed after ------------------------------------
#
# A snapshot's producers arrive in file order and hash to random index slots. Inserting each
# one as it is read (table_find_or_insert) put a random index probe in the middle of the
# loader's streams (the file read, the entries written), a third of a 1,000,000-producer
# decode. Instead the loader notes each entry's home slot and slot value (bulk_append, in
# _state.pxd), and bulk_finish places the notes afterwards in a loop of their own (prefetching
# the probes of notes ahead gained 6% of a decode, under the bar of benchmarks/RESULTS.md). The
# order of insertion is that of the entries, so the index is the one table_find_or_insert would
# have built.


cdef int bulk_begin(Table* t, BulkLoad* bulk, Py_ssize_t entries) except -1 nogil:
    """Presize t for `entries` more (table_reserve) and make room for their notes."""
    memset(bulk, 0, sizeof(BulkLoad))
    bulk.first = t.count
    table_reserve(t, t.count + entries)  # the index capacity is fixed from here on
    bulk.notes = <uint64_t*>try_block(<size_t>max(entries, 1) * sizeof(uint64_t))
    if bulk.notes == NULL:
        out_of_memory(<size_t>max(entries, 1), sizeof(uint64_t))
    bulk.capacity = entries
    return 0


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
    repeat[0] = -1
    repeated[0] = -1
    for k in range(n):
        bulk_place(t, bulk.notes[k], repeat, repeated)
    return 0


cdef void bulk_free(BulkLoad* bulk) noexcept nogil:
    if bulk.notes != NULL:
        free_block(bulk.notes, <size_t>max(bulk.capacity, 1) * sizeof(uint64_t))
    memset(bulk, 0, sizeof(BulkLoad))
