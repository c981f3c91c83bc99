# dedup's full-window snapshot format, the writer of version 2 (part of _snapshot.pyx, which
# includes it): one fixed-width record per producer holding every retained batch, the older
# ones as narrow gaps from the newest, values that do not fit escaped to a list after the
# records; window 5's slots through kernels/snapshot_w5.h where the CPU can. Byte layout:
# _snapshot.pxd (FullHeader, Full2Record, Full2Slot).
#
# Spec: the format is dedup's own (Kafka's keeps one batch per producer, docs/spec.md §4.3);
# it holds the entry of §1.2 with every BatchMetadata of §1.3, and its CRC is §8.5's CRC-32C.

# --- dedup's full-window format, version 2 (written) ----------------------------------------

cdef Py_ssize_t full_record_size(int window) noexcept nogil:
    return REC_FIXED_SIZE + SLOT_SIZE * (window - 1)


cdef inline bint offset_gap_fits(uint64_t gap) noexcept nogil:
    return gap < <uint64_t>0xFFFFFFFFU


cdef inline bint timestamp_gap_fits(int64_t gap) noexcept nogil:
    return gap > -2147483648LL and gap <= 2147483647LL


cdef inline bint fits_int32(uint64_t value) noexcept nogil:
    # value, read as an int64, is in [-2^31, 2^31) (as in table/entry.pxi).
    return value + <uint64_t>0x80000000ULL <= <uint64_t>0xFFFFFFFFULL


cdef Py_ssize_t full_escape_count(const Table* t) noexcept nogil:
    """The escaped values full_records writes for the table (what the file's size needs)."""
    cdef Py_ssize_t i, escapes = 0
    cdef char* e
    cdef const EntryHeader* header
    cdef int pos, newest, window = t.window
    cdef bint narrow
    cdef const int32_t* offset_gaps
    cdef const int32_t* timestamp_gaps
    for i in range(t.count):
        e = entry_at(t, i)
        header = <const EntryHeader*>e
        if header.count < 2:
            continue
        newest = header.head + header.count - 1
        if newest >= window:
            newest -= window
        pos = header.head
        narrow = header.offset_base >= 0
        offset_gaps = ring_offset_gap(t, e)
        timestamp_gaps = ring_timestamp_gap(t, e)
        for _ in range(header.count - 1):
            if narrow:
                # The differences of two gaps: the bases cancel.
                escapes += not offset_gap_fits(<uint64_t><int64_t>offset_gaps[newest]
                                               - <uint64_t><int64_t>offset_gaps[pos])
                escapes += not timestamp_gap_fits(<int64_t>timestamp_gaps[newest] - <int64_t>timestamp_gaps[pos])
            else:
                escapes += not offset_gap_fits(<uint64_t>wide_ring(t, e)[newest] - <uint64_t>wide_ring(t, e)[pos])
                escapes += not timestamp_gap_fits(<int64_t>(<uint64_t>wide_ring(t, e)[window + newest]
                                                            - <uint64_t>wide_ring(t, e)[window + pos]))
            escapes += (<uint32_t>ring_last_sequence(e)[newest] - <uint32_t>ring_last_sequence(e)[pos]) >= 0xFFFFU
            escapes += not (0 <= slot_offset_delta(t, e, pos) < 0xFFFF)
            pos += 1
            if pos == window:
                pos = 0
    return escapes


cdef Py_ssize_t full_size(const Table* t) noexcept nogil:
    return (FULL_HEADER_SIZE + full_record_size(t.window) * table_live(t)
            + FULL2_ESCAPE_SIZE * full_escape_count(t) + FULL2_TRAILER_SIZE)


cdef void full_header(const Table* t, unsigned char* out) noexcept nogil:
    """Magic, version, window, map end offset and count into out[0, 20)."""
    memcpy(out + FULL_MAGIC, DDPS, 4)
    dedup_store_be16(out + FULL_VERSION, FULL_VERSION_2)
    dedup_store_be16(out + FULL_WINDOW, <uint16_t>t.window)
    dedup_store_be64(out + FULL_MAP_END_OFFSET, <uint64_t>t.map_end_offset)
    dedup_store_be32(out + FULL_COUNT, <uint32_t>table_live(t))


cdef int escapes_push(Escapes* escapes, int64_t value) except -1 nogil:
    cdef Py_ssize_t capacity
    cdef int64_t* grown
    if escapes.count == escapes.capacity:
        capacity = max(<Py_ssize_t>64, escapes.capacity * 2)
        grown = <int64_t*>PyMem_RawRealloc(escapes.values, <size_t>capacity * sizeof(int64_t))
        if grown == NULL:
            with gil:
                raise MemoryError(f"snapshot: {capacity} escaped values ({capacity * 8} bytes)")
        escapes.values = grown
        escapes.capacity = capacity
    escapes.values[escapes.count] = value
    escapes.count += 1
    return 0


cdef void escapes_free(Escapes* escapes) noexcept nogil:
    PyMem_RawFree(escapes.values)
    escapes.values = NULL
    escapes.count = 0
    escapes.capacity = 0


cdef inline int unwritable_batch(const EntryHeader* header, int k, int64_t last_offset, int32_t offset_delta,
                                 int64_t map_end_offset, Problem* p) noexcept nogil:
    """0, or why batch k (from the oldest) cannot be written: the reader would reject it."""
    if last_offset >= offset_delta and last_offset < map_end_offset:
        return PROBLEM_NONE
    p.producer_id = header.producer_id
    p.item = k
    p.found = last_offset
    p.other = offset_delta
    p.bound = map_end_offset
    return problem(p, FULL_NEGATIVE_FIRST_OFFSET if last_offset < offset_delta else FULL_OFFSET_PAST_MAP_END)


cdef inline bint window5_layout(const Table* t) noexcept nogil:
    """The table is one kernels/snapshot_w5.h reads and writes: window 5, the ring where it expects."""
    return (dedup_w5_mode == 1 and t.window == 5 and ENTRY_HEADER_SIZE == DEDUP_W5_RING
            and t.off_gap == DEDUP_W5_OFFSET_GAP
            and t.off_ts_gap == DEDUP_W5_TIMESTAMP_GAP and t.off_delta == DEDUP_W5_OFFSET_DELTA
            and t.stride >= DEDUP_W5_ENTRY_SIZE)


cdef inline bint record_batches_w5(const Table* t, char* e, unsigned char* q, int64_t map_end_offset) noexcept nogil:
    """Window 5 (window5_layout): the batches of entry e (narrow, at least one) into the record
    at q, if no field needs an escape and the reader would take each batch: then True; else
    False, and full_records' loop writes them (nothing written here is left over: the slots
    are untouched, the newest batch's fields written only on success)."""
    cdef const EntryHeader* header = <const EntryHeader*>e
    cdef int count = header.count
    cdef int newest = header.head + count - 1
    if newest >= 5:
        newest -= 5
    cdef int64_t newest_offset = <int64_t>(<uint64_t>header.offset_base
                                           + <uint64_t><int64_t>ring_offset_gap(t, e)[newest])
    cdef uint32_t newest_delta = ring_offset_delta16(t, e)[newest]
    # The newest batch as the reader checks it: a first offset >= 0, below the map end offset.
    if newest_offset < <int64_t>newest_delta or newest_offset >= map_end_offset:
        return False
    if not dedup_w5_encode_slots(e, q + REC_SLOTS, header.head, count, min(newest_offset, <int64_t>0xFFFFFFFE)):
        return False
    dedup_store_be32(q + REC_LAST_SEQUENCE, <uint32_t>ring_last_sequence(e)[newest])
    dedup_store_be32(q + REC_OFFSET_DELTA, newest_delta)
    dedup_store_be64(q + REC_LAST_OFFSET, <uint64_t>newest_offset)
    dedup_store_be64(q + REC_TIMESTAMP, <uint64_t>header.timestamp_base
                     + <uint64_t><int64_t>ring_timestamp_gap(t, e)[newest])
    return True


cdef int full_records(const Table* t, Py_ssize_t* next, Py_ssize_t stop, unsigned char* out,
                      Escapes* escapes, uint32_t* crc, Problem* p) except -1 nogil:
    """Records of entries [*next, stop) into out (holes skipped), R bytes each, the older
    batches relative to the newest; escaped values appended to `escapes`, *crc continued over
    the records. Advances *next past the entries written; returns 0, a problem kind (the
    table holds what the reader would reject: offsets at or past the map end offset, a
    negative first offset; only a table loaded from a Kafka snapshot can), or -1 with
    MemoryError set."""
    cdef Py_ssize_t i
    cdef Py_ssize_t size = full_record_size(t.window)
    cdef unsigned char* q = out
    cdef unsigned char* s
    cdef const unsigned char* crc_from = out
    cdef char* e
    cdef const EntryHeader* header
    cdef int k, pos, newest, count, kind = PROBLEM_NONE
    cdef int window = t.window
    cdef int64_t map_end_offset = t.map_end_offset
    cdef int64_t last_offset, newest_offset, newest_timestamp, timestamp_gap, last_timestamp
    cdef bint narrow
    cdef const int32_t* offset_gaps
    cdef const int32_t* timestamp_gaps
    cdef const uint16_t* deltas
    cdef int64_t last_offsets[MAX_WINDOW]
    cdef int64_t timestamps[MAX_WINDOW]
    cdef int32_t offset_deltas[MAX_WINDOW]
    cdef uint64_t offset_gap
    cdef int32_t offset_delta, newest_sequence
    cdef uint32_t sequence_gap
    cdef bint w5 = window5_layout(t)
    for i in range(next[0], stop):
        e = entry_at(t, i)
        header = <const EntryHeader*>e
        if is_hole(e):
            next[0] = i + 1
            continue
        count = header.count
        if header.current_txn_first_offset != NO_TXN and header.current_txn_first_offset >= map_end_offset:
            p.producer_id = header.producer_id
            p.found = header.current_txn_first_offset
            p.bound = map_end_offset
            kind = problem(p, FULL_BAD_TXN_FIRST_OFFSET)
            break
        dedup_store_be64(q + FULL_PRODUCER_ID, <uint64_t>header.producer_id)
        dedup_store_be16(q + FULL_PRODUCER_EPOCH, <uint16_t>header.producer_epoch)
        dedup_store_be32(q + FULL_COORDINATOR_EPOCH, <uint32_t>header.coordinator_epoch)
        last_timestamp = last_timestamp_at(t, i)[0]
        dedup_store_be64(q + FULL_LAST_TIMESTAMP, <uint64_t>last_timestamp)
        dedup_store_be64(q + FULL_CURRENT_TXN_FIRST_OFFSET, <uint64_t>header.current_txn_first_offset)
        (q + FULL_BATCH_COUNT)[0] = <uint8_t>count
        if count == 0:
            memset(q + REC_LAST_SEQUENCE, 0, size - REC_LAST_SEQUENCE)
        elif not (w5 and header.offset_base >= 0 and record_batches_w5(t, e, q, map_end_offset)):
            # Another window, a wide entry, an escape, a batch the reader would reject: the
            # general loop, from the record's first slot.
            newest = header.head + count - 1
            if newest >= window:
                newest -= window
            newest_sequence = ring_last_sequence(e)[newest]
            # A narrow entry's values are read from its gaps in the loop (the gaps between two
            # batches are differences of gaps); a wide one's are decoded once.
            narrow = header.offset_base >= 0
            offset_gaps = ring_offset_gap(t, e)
            timestamp_gaps = ring_timestamp_gap(t, e)
            deltas = ring_offset_delta16(t, e)
            if narrow:
                newest_offset = <int64_t>(<uint64_t>header.offset_base + <uint64_t><int64_t>offset_gaps[newest])
                newest_timestamp = <int64_t>(<uint64_t>header.timestamp_base
                                             + <uint64_t><int64_t>timestamp_gaps[newest])
            else:
                ring_decode(t, e, last_offsets, timestamps, offset_deltas)
                newest_offset = last_offsets[newest]
                newest_timestamp = timestamps[newest]
            pos = header.head
            s = q + REC_SLOTS
            for k in range(count - 1):
                if narrow:
                    last_offset = <int64_t>(<uint64_t>header.offset_base + <uint64_t><int64_t>offset_gaps[pos])
                    timestamp_gap = <int64_t>timestamp_gaps[newest] - <int64_t>timestamp_gaps[pos]
                    offset_delta = deltas[pos]
                else:
                    last_offset = last_offsets[pos]
                    timestamp_gap = <int64_t>(<uint64_t>newest_timestamp - <uint64_t>timestamps[pos])
                    offset_delta = offset_deltas[pos]
                kind = unwritable_batch(header, k, last_offset, offset_delta, map_end_offset, p)
                if kind:
                    break
                offset_gap = <uint64_t>newest_offset - <uint64_t>last_offset
                if offset_gap_fits(offset_gap):
                    dedup_store_be32(s + SLOT_OFFSET_GAP, <uint32_t>offset_gap)
                else:
                    dedup_store_be32(s + SLOT_OFFSET_GAP, 0xFFFFFFFFU)
                    escapes_push(escapes, last_offset)
                if timestamp_gap_fits(timestamp_gap):
                    dedup_store_be32(s + SLOT_TIMESTAMP_GAP, <uint32_t>timestamp_gap)
                else:
                    dedup_store_be32(s + SLOT_TIMESTAMP_GAP, 0x80000000U)
                    escapes_push(escapes, <int64_t>(<uint64_t>newest_timestamp - <uint64_t>timestamp_gap))
                sequence_gap = <uint32_t>newest_sequence - <uint32_t>ring_last_sequence(e)[pos]
                if sequence_gap < 0xFFFFU:
                    dedup_store_be16(s + SLOT_SEQUENCE_GAP, <uint16_t>sequence_gap)
                else:
                    dedup_store_be16(s + SLOT_SEQUENCE_GAP, 0xFFFFU)
                    escapes_push(escapes, ring_last_sequence(e)[pos])
                if 0 <= offset_delta < 0xFFFF:
                    dedup_store_be16(s + SLOT_OFFSET_DELTA, <uint16_t>offset_delta)
                else:
                    dedup_store_be16(s + SLOT_OFFSET_DELTA, 0xFFFFU)
                    escapes_push(escapes, offset_delta)
                s += SLOT_SIZE
                pos += 1
                if pos == window:
                    pos = 0
            if kind:
                break
            offset_delta = deltas[newest] if narrow else offset_deltas[newest]
            kind = unwritable_batch(header, count - 1, newest_offset, offset_delta, map_end_offset, p)
            if kind:
                break
            dedup_store_be32(q + REC_LAST_SEQUENCE, <uint32_t>newest_sequence)
            dedup_store_be32(q + REC_OFFSET_DELTA, <uint32_t>offset_delta)
            dedup_store_be64(q + REC_LAST_OFFSET, <uint64_t>newest_offset)
            dedup_store_be64(q + REC_TIMESTAMP, <uint64_t>newest_timestamp)
            if (q + size) - s:
                memset(s, 0, (q + size) - s)  # the unused slots
        q += size
        next[0] = i + 1
        if q - crc_from >= CRC_BLOCK:
            crc[0] = dedup_crc32c(crc[0], crc_from, q - crc_from)
            crc_from = q
    crc[0] = dedup_crc32c(crc[0], crc_from, q - crc_from)
    return kind
