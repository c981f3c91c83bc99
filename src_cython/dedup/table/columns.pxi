# append_many's loops (part of _state.pyx, which includes it): append_batch for every row of
# the column arrays, hashing and prefetching rows ahead, and the client fast path that checks
# and records the common row in place with exactly append.pxi's result (its docstring says why
# each condition makes that so).
#
# Spec: docs/spec.md §2.1 rules 8, 10, 12, 15, 16 and 18 (through append.pxi, or the fast
# path's equivalent), §2.3, §2.4, and §3.2 step 1 (accepted batches take consecutive offsets
# from the log end offset).

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


cdef inline bint any_equal(const int32_t* values, int count, int32_t x) noexcept nogil:
    # Whether one of the `count` retained last sequences equals x: a plain loop (an SSE2
    # compare gained nothing measurable, benchmarks/RESULTS.md "The bar for low-level code").
    cdef int k
    for k in range(count):
        if values[k] == x:
            return True
    return False


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
        i = view_find(&view, producer_ids[row], h) if view.count != 0 else -1
        if i >= 0:
            e = view_entry(&view, i)
            header = <EntryHeader*>e
            base_sequence = base_sequences[row]
            count = header.count
            if (producer_epochs[row] == header.producer_epoch
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
                if (in_sequence(sequences[newest], base_sequence)
                        and fits_int32(offset_gap) and fits_int32(timestamp_gap)
                        and <uint32_t>offset_delta <= 0xFFFF
                        and not any_equal(sequences, count, last_sequence)):
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
