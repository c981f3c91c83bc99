# The checks of one data batch and of one transaction marker against a producer's entry, and
# recording them (part of _state.pyx, which includes it; Kafka's ProducerAppendInfo and the
# entry's addBatch / update). Nothing here allocates a Python object.
#
# Spec: docs/spec.md §2.1 rules 7, 8, 10, 12, 15, 16, 17 and 18 (data batches from a client;
# rules 11, 13 and 14 need transaction verification, which is not modelled), §2.3
# (COORDINATOR batches), §2.4 (REPLICATION), §2.2 M2-M5 (markers), §1.2 (addBatch, update) and
# §8.4 (sequence arithmetic, in _state.pxd).

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
    # A capped table full of open transactions takes no new client producer (table/eviction.pxi).
    if i < 0 and refuses_new_producer(t, b.origin):
        return ERR_THROTTLING_QUOTA_EXCEEDED
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
        i = admit_new(t, b.producer_id, h)
    _record_batch(t, i, b)
    return ERR_NONE


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
        i = admit_new(t, producer_id, h)
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
    lru_push(t, i)  # its transaction ended, or its last use dropped to -1 (table/eviction.pxi)
    t.map_end_offset = offset + 1
    t.generation += 1
    return ERR_NONE
