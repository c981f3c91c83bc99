# dedup's full-window snapshot format, the readers of versions 1 and 2 (part of _snapshot.pyx,
# which includes it): the header and length checks, and the loads into an empty table: the
# common version 2 record in one pass without branches on its values (or through
# kernels/snapshot_w5.h), anything unusual through a general loop that finds the problems in
# file order.
#
# Spec: docs/spec.md §4.4 (a reader refuses a corrupt file: here, whatever the table could not
# hold, worded in problems.pxi), §1.2 and §1.3 (what an entry and its batches may hold) and
# §8.5 (the CRC).

# --- reading the full format (both versions) -------------------------------------------------

cdef inline int entry_fits(const unsigned char* data, Py_ssize_t position, Py_ssize_t end, int window,
                           Py_ssize_t n, Problem* p) noexcept nogil:
    """Version 1: 0 if entry n, at `position`, fits before `end` with at most `window` batches;
    else the problem. Reads only the batch count byte, after checking it is there."""
    cdef int batch_count
    if end - position < FULL_ENTRY_SIZE:
        p.entry = n
        p.position = position
        p.found = end - position
        return problem(p, FULL_SHORT_ENTRY)
    batch_count = (data + position + FULL_BATCH_COUNT)[0]
    if batch_count > window:
        p.entry = n
        p.found = batch_count
        p.bound = window
        return problem(p, FULL_BATCH_COUNT_OVER_WINDOW)
    if end - position - FULL_ENTRY_SIZE < <Py_ssize_t>FULL_BATCH_SIZE * batch_count:
        p.entry = n
        p.position = position + FULL_ENTRY_SIZE
        p.found = end - position - FULL_ENTRY_SIZE
        p.other = batch_count
        return problem(p, FULL_SHORT_BATCHES)
    return PROBLEM_NONE


cdef int full_check(const unsigned char* data, Py_ssize_t size, Layout* layout, Problem* p) noexcept nogil:
    """The header, then version 2's size (its CRC is checked by full_load, along the way) or
    version 1's layout walk and CRC."""
    cdef int16_t version, window
    cdef int64_t map_end_offset, expected
    cdef int32_t count, escapes
    if size < 4 or memcmp(data + FULL_MAGIC, DDPS, 4) != 0:
        return problem(p, FULL_BAD_MAGIC)
    if size < 6:
        p.bound = FULL_MIN_SIZE
        return problem(p, FULL_TOO_SHORT)
    version = <int16_t>dedup_load_be16(data + FULL_VERSION)
    if version != FULL_VERSION_1 and version != FULL_VERSION_2:
        p.found = version
        return problem(p, FULL_BAD_VERSION)
    p.bound = <int>FULL_MIN_SIZE if version == FULL_VERSION_1 else <int>FULL2_MIN_SIZE
    if size < p.bound:
        return problem(p, FULL_TOO_SHORT)
    p.bound = 0
    window = <int16_t>dedup_load_be16(data + FULL_WINDOW)
    map_end_offset = <int64_t>dedup_load_be64(data + FULL_MAP_END_OFFSET)
    count = <int32_t>dedup_load_be32(data + FULL_COUNT)
    p.count = count
    if window < 1 or window > 255:
        p.found = window
        return problem(p, FULL_BAD_WINDOW)
    if map_end_offset < 0:
        p.found = map_end_offset
        return problem(p, FULL_NEGATIVE_MAP_END_OFFSET)
    if count < 0:
        p.found = count
        return problem(p, FULL_NEGATIVE_COUNT)
    layout.version = version
    layout.window = window
    layout.map_end_offset = map_end_offset
    layout.count = count
    layout.escapes = 0
    if version == FULL_VERSION_1:
        return full1_layout(data, size, layout, p)
    escapes = <int32_t>dedup_load_be32(data + size - FULL2_TRAILER_SIZE)
    if escapes < 0:
        p.found = escapes
        return problem(p, FULL2_NEGATIVE_ESCAPE_COUNT)
    expected = (FULL_HEADER_SIZE + <int64_t>full_record_size(window) * count
                + <int64_t>FULL2_ESCAPE_SIZE * escapes + FULL2_TRAILER_SIZE)
    if size != expected:
        p.found = window
        p.other = escapes
        p.position = full_record_size(window)
        p.bound = expected
        return problem(p, FULL2_SIZE)
    layout.escapes = escapes
    return PROBLEM_NONE


cdef int full1_layout(const unsigned char* data, Py_ssize_t size, Layout* layout, Problem* p) noexcept nogil:
    """Version 1's layout walk and CRC: each step is bounded by the bytes left (entry_fits), so
    a huge count in a short file stops at the first entry that does not fit. The CRC follows
    the walk block by block, while the bytes are in cache."""
    cdef Py_ssize_t n, position
    cdef Py_ssize_t end = size - FULL_CRC_SIZE
    cdef const unsigned char* crc_from = data
    cdef uint32_t crc = 0, stored
    cdef int kind
    position = FULL_HEADER_SIZE
    for n in range(layout.count):
        kind = entry_fits(data, position, end, layout.window, n, p)
        if kind:
            return kind
        position += FULL_ENTRY_SIZE + FULL_BATCH_SIZE * (data + position + FULL_BATCH_COUNT)[0]
        if (data + position) - crc_from >= CRC_BLOCK:
            crc = dedup_crc32c(crc, crc_from, (data + position) - crc_from)
            crc_from = data + position
    if position != end:
        p.position = position
        return problem(p, FULL_TRAILING_BYTES)
    crc = dedup_crc32c(crc, crc_from, (data + end) - crc_from)
    stored = dedup_load_be32(data + end)
    if stored != crc:
        p.found = stored
        p.other = crc
        return problem(p, FULL_BAD_CRC)
    return PROBLEM_NONE


cdef int full_load(Table* t, const unsigned char* data, Py_ssize_t size, const Layout* layout,
                   BulkLoad* bulk, Problem* p) except -1 nogil:
    cdef int kind
    cdef Py_ssize_t repeat, repeated
    if layout.version == FULL_VERSION_1:
        kind = full1_load(t, data, size, layout, bulk, p)
    else:
        kind = full2_load(t, data, size, layout, bulk, p)
    if kind == FULL_BAD_CRC:
        return kind
    # The index is built after the entries: a repeated producer id is reported as the loop
    # would have, entry by entry: before any problem of a later entry (the loaders stop at
    # their first problem, after appending that entry only if its id was checked) or of the
    # same entry's batches.
    bulk_finish(t, bulk, &repeat, &repeated)
    if repeat >= 0:
        p.entry = repeat
        p.producer_id = (<EntryHeader*>entry_at(t, repeat)).producer_id
        p.item = repeated
        return problem(p, FULL_REPEATED_PRODUCER_ID)
    return kind


cdef inline char* full_entry(Table* t, BulkLoad* bulk, const unsigned char* q, int64_t map_end_offset,
                             Py_ssize_t n, Problem* p) noexcept nogil:
    """Both versions (the fixed fields are at the same offsets): entry n, at q, checked and
    appended with no batch; NULL if its producer id or transaction is wrong (p.kind says which)."""
    cdef int64_t producer_id = <int64_t>dedup_load_be64(q + FULL_PRODUCER_ID)
    cdef int64_t txn = <int64_t>dedup_load_be64(q + FULL_CURRENT_TXN_FIRST_OFFSET)
    p.entry = n
    p.producer_id = producer_id
    if producer_id < 0:
        problem(p, FULL_NEGATIVE_PRODUCER_ID)
        return NULL
    # A transaction starts at a batch the table has seen: below the map end offset.
    if txn != NO_TXN and (txn < 0 or txn >= map_end_offset):
        p.found = txn
        p.bound = map_end_offset
        problem(p, FULL_BAD_TXN_FIRST_OFFSET)
        return NULL
    last_timestamp_at(t, t.count)[0] = <int64_t>dedup_load_be64(q + FULL_LAST_TIMESTAMP)
    cdef char* e = bulk_append(t, bulk, producer_id)
    cdef EntryHeader* header = <EntryHeader*>e
    header.current_txn_first_offset = txn
    t.open_txns += txn != NO_TXN
    header.coordinator_epoch = <int32_t>dedup_load_be32(q + FULL_COORDINATOR_EPOCH)
    header.producer_epoch = <int16_t>dedup_load_be16(q + FULL_PRODUCER_EPOCH)
    # The ring invariant of table/append.pxi (_record_batch): while count < window, head is 0
    # and the batches sit in slots [0, count). Oldest first into slots 0.. keeps it (and holds
    # at count == window).
    header.head = 0
    header.count = 0
    header.offset_base = 0  # narrow until the batches are in
    header.timestamp_base = 0
    return e


cdef inline int batch_values(int k, int32_t offset_delta, int64_t last_offset, int64_t map_end_offset,
                             Problem* p) noexcept nogil:
    """Both versions: 0, or what is wrong with batch k (from the oldest) of the entry."""
    if offset_delta >= 0 and last_offset >= offset_delta and last_offset < map_end_offset:
        return PROBLEM_NONE
    p.item = k
    p.found = offset_delta if offset_delta < 0 else last_offset
    p.other = offset_delta
    p.bound = map_end_offset
    return problem(p, FULL_NEGATIVE_OFFSET_DELTA if offset_delta < 0
                   else FULL_NEGATIVE_FIRST_OFFSET if last_offset < offset_delta
                   else FULL_OFFSET_PAST_MAP_END)


cdef inline bint full2_batches_common(Table* t, char* e, const unsigned char* q, int batch_count,
                                      int64_t map_end_offset, bint w5) noexcept nogil:
    """Version 2, the common record: batches 1..window, no field escaped, every value valid and
    the entry narrow. Then its batches into entry e (as full2_load's loop would write them) and
    True; else False, having written only ring slots that the loop writes again (no escape
    used, no problem set). Every slot is read and checked without a branch on its values; with
    `w5` (window5_layout) all four at once, in kernels/snapshot_w5.h."""
    cdef uint32_t newest_sequence = dedup_load_be32(q + REC_LAST_SEQUENCE)
    cdef uint32_t newest_delta = dedup_load_be32(q + REC_OFFSET_DELTA)
    cdef int64_t newest_offset = <int64_t>dedup_load_be64(q + REC_LAST_OFFSET)
    cdef int64_t newest_timestamp = <int64_t>dedup_load_be64(q + REC_TIMESTAMP)
    cdef const unsigned char* s = q + REC_SLOTS
    cdef int32_t* sequences = ring_last_sequence(e)
    cdef int32_t* offset_gaps = ring_offset_gap(t, e)
    cdef int32_t* timestamp_gaps = ring_timestamp_gap(t, e)
    cdef uint16_t* deltas = ring_offset_delta16(t, e)
    cdef EntryHeader* header = <EntryHeader*>e
    cdef uint32_t offset_gap, timestamp_gap, sequence_gap, delta
    cdef int k, newest = batch_count - 1
    # The newest batch: an offset delta that fits 16 bits, a first offset >= 0, a last offset
    # below the map end offset.
    cdef int bad = ((newest_delta > 0xFFFFU) | (newest_offset < <int64_t>newest_delta)
                    | (newest_offset >= map_end_offset))
    if w5:
        if bad or not dedup_w5_decode_slots(s, e, batch_count, newest_sequence, newest_delta,
                                            <uint32_t>min(newest_offset, <int64_t>0xFFFFFFFF)):
            return False
        header.offset_base = newest_offset
        header.timestamp_base = newest_timestamp
        header.count = <uint8_t>batch_count
        return True
    for k in range(newest):
        offset_gap = dedup_load_be32(s + SLOT_OFFSET_GAP)
        timestamp_gap = dedup_load_be32(s + SLOT_TIMESTAMP_GAP)
        sequence_gap = dedup_load_be16(s + SLOT_SEQUENCE_GAP)
        delta = dedup_load_be16(s + SLOT_OFFSET_DELTA)
        # An older batch's last offset (newest - gap) at least its delta: a first offset >= 0,
        # and below the map end as the newest is. A gap up to 2^31 keeps the table's gap
        # (-gap) in an int32, and is never the escape 0xFFFFFFFF; a timestamp gap other than
        # its escape always fits.
        bad |= ((offset_gap > 0x80000000U) | (<int64_t>offset_gap + delta > newest_offset)
                | (timestamp_gap == 0x80000000U) | (sequence_gap == 0xFFFFU) | (delta == 0xFFFFU))
        sequences[k] = <int32_t>(newest_sequence - sequence_gap)
        offset_gaps[k] = <int32_t>(0U - offset_gap)
        timestamp_gaps[k] = <int32_t>(0U - timestamp_gap)
        deltas[k] = <uint16_t>delta
        s += SLOT_SIZE
    if bad:
        return False
    sequences[newest] = <int32_t>newest_sequence
    offset_gaps[newest] = 0
    timestamp_gaps[newest] = 0
    deltas[newest] = <uint16_t>newest_delta
    header.offset_base = newest_offset
    header.timestamp_base = newest_timestamp
    header.count = <uint8_t>batch_count
    return True


cdef int full2_load(Table* t, const unsigned char* data, Py_ssize_t size, const Layout* layout,
                    BulkLoad* bulk, Problem* p) except -1 nogil:
    """Version 2 into an empty table presized for it. full_check read count, window and escape
    count once and matched them with size, so every record, slot and escape read is inside
    data; batch_count is checked against the window before a slot is read. The CRC runs a
    block behind the records and wins over a value problem (see kafka_load)."""
    cdef Py_ssize_t n
    cdef Py_ssize_t record_size = full_record_size(layout.window)
    cdef Py_ssize_t escape_count = layout.escapes
    cdef Py_ssize_t used = 0
    cdef const unsigned char* records = data + FULL_HEADER_SIZE
    cdef const unsigned char* escapes = records + record_size * layout.count
    cdef const unsigned char* end = data + size - FULL_CRC_SIZE
    cdef const unsigned char* crc_from = data
    cdef const unsigned char* q
    cdef const unsigned char* s
    cdef int64_t map_end_offset = layout.map_end_offset
    cdef int64_t last_offset, timestamp, newest_offset, newest_timestamp
    cdef bint narrow
    cdef int64_t last_offsets[MAX_WINDOW]
    cdef int64_t timestamps[MAX_WINDOW]
    cdef int32_t offset_deltas[MAX_WINDOW]
    cdef uint64_t value
    cdef int32_t offset_delta, last_sequence, newest_sequence
    cdef uint32_t crc = 0, stored
    cdef int k, batch_count, kind = PROBLEM_NONE
    cdef int window = layout.window
    cdef char* e
    cdef EntryHeader* header
    cdef bint w5 = window5_layout(t)
    for n in range(layout.count):
        q = records + n * record_size
        if q - crc_from >= CRC_BLOCK:
            crc = dedup_crc32c(crc, crc_from, q - crc_from)
            crc_from = q
        batch_count = (q + FULL_BATCH_COUNT)[0]
        if batch_count > window:
            p.entry = n
            p.found = batch_count
            p.bound = window
            kind = problem(p, FULL_BATCH_COUNT_OVER_WINDOW)
            break
        e = full_entry(t, bulk, q, map_end_offset, n, p)
        if e == NULL:
            kind = p.kind
            break
        header = <EntryHeader*>e
        if batch_count == 0:
            continue
        if full2_batches_common(t, e, q, batch_count, map_end_offset, w5):
            continue
        # Anything unusual (an escape, a wide entry, a bad value): the loop below, from the
        # start of the batches, finds it in file order.
        newest_sequence = <int32_t>dedup_load_be32(q + REC_LAST_SEQUENCE)
        newest_offset = <int64_t>dedup_load_be64(q + REC_LAST_OFFSET)
        newest_timestamp = <int64_t>dedup_load_be64(q + REC_TIMESTAMP)
        narrow = True
        s = q + REC_SLOTS
        for k in range(batch_count - 1):
            # Each field: its narrow value, or (the escape value) the next escaped value.
            value = dedup_load_be32(s + SLOT_OFFSET_GAP)
            if value == 0xFFFFFFFFU:
                if used == escape_count:
                    kind = missing_escape(k, used, escape_count, p)
                    break
                last_offset = <int64_t>dedup_load_be64(escapes + FULL2_ESCAPE_SIZE * used)
                used += 1
            else:
                last_offset = <int64_t>(<uint64_t>newest_offset - value)
            value = dedup_load_be32(s + SLOT_TIMESTAMP_GAP)
            if value == 0x80000000U:
                if used == escape_count:
                    kind = missing_escape(k, used, escape_count, p)
                    break
                timestamp = <int64_t>dedup_load_be64(escapes + FULL2_ESCAPE_SIZE * used)
                used += 1
            else:
                timestamp = <int64_t>(<uint64_t>newest_timestamp - <uint64_t><int64_t><int32_t><uint32_t>value)
            value = dedup_load_be16(s + SLOT_SEQUENCE_GAP)
            if value == 0xFFFFU:
                if used == escape_count:
                    kind = missing_escape(k, used, escape_count, p)
                    break
                last_sequence = <int32_t><uint32_t>dedup_load_be64(escapes + FULL2_ESCAPE_SIZE * used)
                used += 1
            else:
                last_sequence = <int32_t>(<uint32_t>newest_sequence - <uint32_t>value)
            value = dedup_load_be16(s + SLOT_OFFSET_DELTA)
            if value == 0xFFFFU:
                if used == escape_count:
                    kind = missing_escape(k, used, escape_count, p)
                    break
                offset_delta = <int32_t><uint32_t>dedup_load_be64(escapes + FULL2_ESCAPE_SIZE * used)
                used += 1
            else:
                offset_delta = <int32_t>value
            kind = batch_values(k, offset_delta, last_offset, map_end_offset, p)
            if kind:
                break
            ring_last_sequence(e)[k] = last_sequence
            # The table's gaps are from the newest batch's offset and timestamp, as the file's
            # (ring_encode takes over below when one does not fit).
            value = <uint64_t>last_offset - <uint64_t>newest_offset
            narrow = narrow and fits_int32(value)
            ring_offset_gap(t, e)[k] = <int32_t><uint32_t>value
            value = <uint64_t>timestamp - <uint64_t>newest_timestamp
            narrow = narrow and fits_int32(value) and <uint32_t>offset_delta <= 0xFFFF
            ring_timestamp_gap(t, e)[k] = <int32_t><uint32_t>value
            ring_offset_delta16(t, e)[k] = <uint16_t>offset_delta
            last_offsets[k] = last_offset
            timestamps[k] = timestamp
            offset_deltas[k] = offset_delta
            s += SLOT_SIZE
        if kind:
            break
        k = batch_count - 1
        offset_delta = <int32_t>dedup_load_be32(q + REC_OFFSET_DELTA)
        kind = batch_values(k, offset_delta, newest_offset, map_end_offset, p)
        if kind:
            break
        ring_last_sequence(e)[k] = newest_sequence
        ring_offset_gap(t, e)[k] = 0
        ring_timestamp_gap(t, e)[k] = 0
        ring_offset_delta16(t, e)[k] = <uint16_t>offset_delta
        if narrow and <uint32_t>offset_delta <= 0xFFFF:
            header.offset_base = newest_offset
            header.timestamp_base = newest_timestamp
        else:
            last_offsets[k] = newest_offset
            timestamps[k] = newest_timestamp
            offset_deltas[k] = offset_delta
            ring_encode(t, e, 0, batch_count, last_offsets, timestamps, offset_deltas)
        header.count = <uint8_t>batch_count
    if kind == PROBLEM_NONE and used != escape_count:
        p.entry = -1
        p.found = used
        p.bound = escape_count
        kind = problem(p, FULL2_UNUSED_ESCAPES)
    crc = dedup_crc32c(crc, crc_from, end - crc_from)
    stored = dedup_load_be32(end)
    if stored != crc:
        p.found = stored
        p.other = crc
        return problem(p, FULL_BAD_CRC)
    return kind


cdef int missing_escape(int k, Py_ssize_t used, Py_ssize_t escape_count, Problem* p) noexcept nogil:
    p.item = k
    p.found = used
    p.bound = escape_count
    return problem(p, FULL2_MISSING_ESCAPE)


cdef int full1_load(Table* t, const unsigned char* data, Py_ssize_t size, const Layout* layout,
                    BulkLoad* bulk, Problem* p) except -1 nogil:
    """Version 1, which full_check walked and checksummed, into an empty table presized for it."""
    cdef Py_ssize_t n
    cdef Py_ssize_t end = size - FULL_CRC_SIZE
    cdef Py_ssize_t position = FULL_HEADER_SIZE
    cdef int64_t map_end_offset = layout.map_end_offset
    cdef const unsigned char* q
    cdef const unsigned char* b
    cdef int64_t last_offset
    cdef int64_t last_offsets[MAX_WINDOW]
    cdef int64_t timestamps[MAX_WINDOW]
    cdef int32_t offset_deltas[MAX_WINDOW]
    cdef int32_t offset_delta
    cdef int k, batch_count, kind
    cdef char* e
    for n in range(layout.count):
        # full_check walked these bytes, but a writable buffer (a bytearray) may have changed
        # since: the bounds that keep the reads inside data and the ring writes inside the
        # window are checked again (two compares per entry).
        kind = entry_fits(data, position, end, layout.window, n, p)
        if kind:
            return kind
        q = data + position
        batch_count = (q + FULL_BATCH_COUNT)[0]
        e = full_entry(t, bulk, q, map_end_offset, n, p)
        if e == NULL:
            return p.kind
        b = q + FULL_ENTRY_SIZE
        for k in range(batch_count):
            offset_delta = <int32_t>dedup_load_be32(b + FULL_OFFSET_DELTA)
            last_offset = <int64_t>dedup_load_be64(b + FULL_LAST_OFFSET)
            kind = batch_values(k, offset_delta, last_offset, map_end_offset, p)
            if kind:
                return kind
            ring_last_sequence(e)[k] = <int32_t>dedup_load_be32(b + FULL_LAST_SEQUENCE)
            offset_deltas[k] = offset_delta
            last_offsets[k] = last_offset
            timestamps[k] = <int64_t>dedup_load_be64(b + FULL_TIMESTAMP)
            b += FULL_BATCH_SIZE
        ring_encode(t, e, 0, batch_count, last_offsets, timestamps, offset_deltas)
        (<EntryHeader*>e).count = <uint8_t>batch_count
        position += FULL_ENTRY_SIZE + FULL_BATCH_SIZE * batch_count
    return PROBLEM_NONE
