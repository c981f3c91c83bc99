# Copies between tables (part of _state.pyx, which includes it): copy() of every producer or
# of some, and update_from, which makes a staged copy's entries the live ones.
#
# Spec: docs/spec.md §3.1 (an append is staged on copies of the entries, nothing changes until
# it is written) and §3.2 step 4 (the staged entries replace the live ones).

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
    cdef int64_t producer_id
    cdef uint64_t h
    for i in range(src.count):
        if not is_hole(entry_at(src, i)) and table_find(dst, (<EntryHeader*>entry_at(src, i)).producer_id) < 0:
            missing += 1
    if missing:
        reserve_producers(dst, dst.count + missing, False)
    wide_reserve(dst, src.wide_used)  # entry_copy then cannot fail either
    for i in range(src.count):
        if is_hole(entry_at(src, i)):
            continue
        producer_id = (<EntryHeader*>entry_at(src, i)).producer_id
        h = hash_producer_id(dst, producer_id)
        j = find_hashed(dst, producer_id, h)
        if j < 0:
            j = insert_new(dst, producer_id, h)  # no eviction inside the loop: it cannot fail
        entry_copy(dst, j, src, i)
    wide_trim(dst)
    if dst.lru != NULL:
        for i in range(src.count):
            if not is_hole(entry_at(src, i)):
                lru_push(dst, table_find(dst, (<EntryHeader*>entry_at(src, i)).producer_id))
    if dst.max_producers and not dst.staging and table_live(dst) > dst.max_producers:
        # A capped table evicts once the staged entries are in (table/eviction.pxi): a MemoryError
        # here leaves them in and the table above its cap.
        table_evict(dst, dst.max_producers)
    if table_live(src) == 0 and src.map_end_offset <= dst.map_end_offset:
        return 0  # nothing changes: check() results stay valid
    if src.map_end_offset > dst.map_end_offset:
        dst.map_end_offset = src.map_end_offset
    dst.generation += 1
    return 0
