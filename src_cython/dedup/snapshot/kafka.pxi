# Kafka's producer-state snapshot, version 1 (part of _snapshot.pyx, which includes it): its
# size, the writer (whole, or in pieces for SnapshotWriter), the header and length check, and
# the loader into an empty table. Byte layout: _snapshot.pxd (KafkaHeader, KafkaEntry).
#
# Spec: docs/spec.md §4.2 (the layout), §4.3 (what is written: every entry, only its last
# batch, the entry's lastTimestamp; the CRC patched last), §4.4 steps 1-3 (reading: the
# version, CRC-32C over bytes [6, end), one batch iff LastOffset >= 0, a transaction iff
# CurrentTxnFirstOffset >= 0) and §8.5 (the CRC).

# --- Kafka's format -------------------------------------------------------------------------

cdef Py_ssize_t kafka_size(const Table* t) noexcept nogil:
    return KAFKA_HEADER_SIZE + KAFKA_ENTRY_SIZE * table_live(t)


cdef void kafka_header(const Table* t, unsigned char* out) noexcept nogil:
    """Version and count into out[0, 10), the crc field 0: Kafka patches it last (spec §4.3)."""
    dedup_store_be16(out + KAFKA_VERSION, SNAPSHOT_VERSION)
    dedup_store_be32(out + KAFKA_CRC, 0)
    dedup_store_be32(out + KAFKA_COUNT, <uint32_t>table_live(t))


cdef Py_ssize_t kafka_entries(const Table* t, Py_ssize_t first, Py_ssize_t stop, unsigned char* out,
                              uint32_t* crc) noexcept nogil:
    """Entries [first, stop) into out (holes skipped), 46 bytes each, *crc continued over them;
    returns the bytes written. Only each entry's last retained batch is written (spec §4.3);
    Timestamp is the entry's last_timestamp, not the batch's."""
    cdef Py_ssize_t i
    cdef unsigned char* q = out
    cdef const unsigned char* crc_from = out
    cdef char* e
    cdef const EntryHeader* header
    cdef int last
    for i in range(first, stop):
        e = entry_at(t, i)
        header = <const EntryHeader*>e
        if is_hole(e):
            continue
        dedup_store_be64(q + KAFKA_PRODUCER_ID, <uint64_t>header.producer_id)
        dedup_store_be16(q + KAFKA_EPOCH, <uint16_t>header.producer_epoch)
        if header.count:
            last = header.head + header.count - 1
            if last >= t.window:
                last -= t.window
            dedup_store_be32(q + KAFKA_LAST_SEQUENCE, <uint32_t>ring_last_sequence(e)[last])
            dedup_store_be64(q + KAFKA_LAST_OFFSET, <uint64_t>slot_last_offset(t, e, last))
            dedup_store_be32(q + KAFKA_OFFSET_DELTA, <uint32_t>slot_offset_delta(t, e, last))
        else:
            dedup_store_be32(q + KAFKA_LAST_SEQUENCE, <uint32_t>NO_SEQUENCE)
            dedup_store_be64(q + KAFKA_LAST_OFFSET, <uint64_t><int64_t>-1)
            dedup_store_be32(q + KAFKA_OFFSET_DELTA, 0)
        dedup_store_be64(q + KAFKA_TIMESTAMP, <uint64_t>last_timestamp_at(t, i)[0])
        dedup_store_be32(q + KAFKA_COORDINATOR_EPOCH, <uint32_t>header.coordinator_epoch)
        dedup_store_be64(q + KAFKA_CURRENT_TXN_FIRST_OFFSET, <uint64_t>header.current_txn_first_offset)
        q += KAFKA_ENTRY_SIZE
        if q - crc_from >= CRC_BLOCK:
            crc[0] = dedup_crc32c(crc[0], crc_from, q - crc_from)
            crc_from = q
    crc[0] = dedup_crc32c(crc[0], crc_from, q - crc_from)
    return q - out


cdef void kafka_encode(const Table* t, unsigned char* out) noexcept nogil:
    """Kafka's snapshot of the table into out[0, kafka_size(t)), entries in the table's order."""
    cdef uint32_t crc
    kafka_header(t, out)
    crc = dedup_crc32c(0, out + KAFKA_CRC_START, KAFKA_HEADER_SIZE - KAFKA_CRC_START)
    kafka_entries(t, 0, t.count, out + KAFKA_HEADER_SIZE, &crc)
    dedup_store_be32(out + KAFKA_CRC, crc)


cdef int kafka_check(const unsigned char* data, Py_ssize_t size, Layout* layout, Problem* p) noexcept nogil:
    cdef int16_t version
    cdef int32_t count
    cdef int64_t expected
    if size >= 2:
        version = <int16_t>dedup_load_be16(data + KAFKA_VERSION)
        if version != SNAPSHOT_VERSION:
            p.found = version
            return problem(p, KAFKA_BAD_VERSION)
    if size < KAFKA_HEADER_SIZE:
        return problem(p, KAFKA_TOO_SHORT)
    count = <int32_t>dedup_load_be32(data + KAFKA_COUNT)
    p.count = count
    if count < 0:
        return problem(p, KAFKA_NEGATIVE_COUNT)
    # Stricter than Kafka on trailing bytes: Kafka's parser stops after the last entry and its
    # crc covers whatever follows, so it accepts them; here the length must be exact.
    expected = KAFKA_HEADER_SIZE + <int64_t>KAFKA_ENTRY_SIZE * count
    if size != expected:
        p.bound = expected
        return problem(p, KAFKA_SIZE)
    layout.count = count
    return PROBLEM_NONE


cdef int kafka_load(Table* t, const unsigned char* data, Py_ssize_t size, const Layout* layout,
                    BulkLoad* bulk, Problem* p) except -1 nogil:
    """Kafka's snapshot into an empty table presized for it (spec §4.4 steps 2-3). layout.count
    was read once by kafka_check and size == 10 + 46 * count, so every read is inside data.

    The CRC runs along, a block behind the entries (they are still in cache), and is compared
    at the end: a mismatch wins over a value problem found on the way, so the result is the
    same as checking the CRC first (as the twin does) at one pass over the file instead of two.

    With `bulk` (bulk_begin'd for layout.count) each entry is appended and the index built at
    the end; a producer id met twice then gives KAFKA_REPEATED_PRODUCER_ID, and the caller
    loads again into a new table with bulk NULL: entry by entry through the index.
    """
    cdef Py_ssize_t n, i, repeat, repeated
    cdef const unsigned char* q
    cdef const unsigned char* crc_from = data + KAFKA_HEADER_SIZE
    cdef int64_t producer_id, last_offset, txn, timestamp
    cdef int32_t offset_delta
    cdef uint32_t crc, stored
    cdef char* e
    cdef EntryHeader* header
    cdef int kind = PROBLEM_NONE
    crc = dedup_crc32c(0, data + KAFKA_CRC_START, KAFKA_HEADER_SIZE - KAFKA_CRC_START)
    for n in range(layout.count):
        q = data + KAFKA_HEADER_SIZE + n * KAFKA_ENTRY_SIZE
        if q - crc_from >= CRC_BLOCK:
            crc = dedup_crc32c(crc, crc_from, q - crc_from)
            crc_from = q
        producer_id = <int64_t>dedup_load_be64(q + KAFKA_PRODUCER_ID)
        last_offset = <int64_t>dedup_load_be64(q + KAFKA_LAST_OFFSET)
        offset_delta = <int32_t>dedup_load_be32(q + KAFKA_OFFSET_DELTA)
        # Values the table cannot hold: stricter than Kafka, which checks none of them. The
        # first offset (LastOffset - OffsetDelta) is not checked: the spec's own vector (§4.7)
        # has LastOffset 2 and OffsetDelta 3.
        if producer_id < 0:
            p.entry = n
            p.producer_id = producer_id
            kind = problem(p, KAFKA_NEGATIVE_PRODUCER_ID)
            break
        if last_offset >= 0 and offset_delta < 0:
            p.entry = n
            p.producer_id = producer_id
            p.found = offset_delta
            kind = problem(p, KAFKA_NEGATIVE_OFFSET_DELTA)
            break
        if bulk != NULL:
            i = t.count
            e = bulk_append(t, bulk, producer_id)
            header = <EntryHeader*>e
            header.head = 0
            header.count = 0
            header.offset_base = 0  # narrow, no batch
            header.timestamp_base = 0
        else:
            # A producer id seen twice: the later entry wins and the producer keeps its first
            # position, as Kafka's producers.put() into its map: every field is overwritten.
            i = table_find_or_insert(t, producer_id)
            e = entry_at(t, i)
            header = <EntryHeader*>e
            entry_drop_batches(t, e)
            t.open_txns -= header.current_txn_first_offset != NO_TXN
        header.producer_epoch = <int16_t>dedup_load_be16(q + KAFKA_EPOCH)
        header.coordinator_epoch = <int32_t>dedup_load_be32(q + KAFKA_COORDINATOR_EPOCH)
        txn = <int64_t>dedup_load_be64(q + KAFKA_CURRENT_TXN_FIRST_OFFSET)
        header.current_txn_first_offset = txn if txn >= 0 else NO_TXN  # a transaction iff >= 0
        t.open_txns += txn >= 0
        timestamp = <int64_t>dedup_load_be64(q + KAFKA_TIMESTAMP)
        if last_offset >= 0:  # one batch iff LastOffset >= 0; slot 0 (head 0, count 1)
            # Its timestamp is the entry's last_timestamp (the one Timestamp field). One batch
            # is its own base (gaps 0), unless its offset delta needs a wide ring.
            ring_last_sequence(e)[0] = <int32_t>dedup_load_be32(q + KAFKA_LAST_SEQUENCE)
            if <uint32_t>offset_delta <= 0xFFFF:
                header.offset_base = last_offset
                header.timestamp_base = timestamp
                ring_offset_gap(t, e)[0] = 0
                ring_timestamp_gap(t, e)[0] = 0
                ring_offset_delta16(t, e)[0] = <uint16_t>offset_delta
            else:
                ring_encode(t, e, 0, 1, &last_offset, &timestamp, &offset_delta)
            header.count = 1
        last_timestamp_at(t, i)[0] = timestamp
    crc = dedup_crc32c(crc, crc_from, (data + size) - crc_from)
    stored = dedup_load_be32(data + KAFKA_CRC)
    if stored != crc:
        p.found = stored
        p.other = crc
        return problem(p, KAFKA_BAD_CRC)
    if kind == PROBLEM_NONE and bulk != NULL:
        bulk_finish(t, bulk, &repeat, &repeated)
        if repeat >= 0:
            return problem(p, KAFKA_REPEATED_PRODUCER_ID)
    return kind
