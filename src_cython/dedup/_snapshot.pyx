# The compiled snapshot codec: Kafka's producer-state snapshot (version 1, spec §4.2-4.4) and
# dedup's full-window format (writes version 2, reads 1 and 2), straight between bytes and the
# table's C struct. Layouts and the C-level API: _snapshot.pxd. The public API (format
# detection, files): dedup/snapshot.py.
#
# No Python object per producer: the encoders fill a bytes object sized from the table (the
# full format's fixed-width records need no sizing pass; the rare escaped values are collected
# on the side and appended); the decoders check the header and the length, presize the table
# (table_reserve) and write each entry's header, ring and last_timestamp in place, with the CRC
# (crc32c.h) computed a block behind. Both loops run without the GIL, on the caller's thread.
#
# Readers report problems in a fixed order, the same as the twin's: header, layout (lengths,
# counts), CRC, then each entry's values in file order (a CRC computed along the load still
# wins over a value problem found before it). Every read is bounds-checked against the
# buffer's length first, so no input can make them read outside it or loop past its end.

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from cpython.exc cimport PyErr_Restore
from cpython.mem cimport PyMem_RawFree, PyMem_RawRealloc
from cpython.ref cimport PyObject
from libc.string cimport memcmp, memcpy, memset

from dedup._state cimport (
    ENTRY_HEADER_SIZE,
    NO_SEQUENCE,
    NO_TXN,
    BulkLoad,
    EntryHeader,
    ProducerStateTable,
    Table,
    MAX_WINDOW,
    bulk_append,
    bulk_begin,
    bulk_finish,
    bulk_free,
    entry_at,
    entry_drop_batches,
    is_hole,
    last_timestamp_at,
    ring_decode,
    ring_encode,
    ring_last_sequence,
    ring_offset_delta16,
    ring_offset_gap,
    ring_timestamp_gap,
    slot_last_offset,
    slot_offset_delta,
    table_find_or_insert,
    table_live,
    wide_ring,
    table_reserve,
)
from dedup._records cimport readable_bytes

from dedup import _args
from dedup.errors import CorruptSnapshotError

cdef extern from "snapshot_w5.h":
    int dedup_w5_mode
    int DEDUP_W5_RING
    int DEDUP_W5_OFFSET_GAP
    int DEDUP_W5_TIMESTAMP_GAP
    int DEDUP_W5_OFFSET_DELTA
    int DEDUP_W5_ENTRY_SIZE
    int dedup_w5_use(int wanted) noexcept nogil
    int dedup_w5_encode_slots(const char* e, unsigned char* out, int head, int count, int64_t limit) noexcept nogil
    int dedup_w5_decode_slots(const unsigned char* slots, char* e, int count, uint32_t newest_sequence,
                              uint32_t newest_delta, uint32_t limit) noexcept nogil

dedup_crc32c_setup()  # decided once, with the GIL, before any nogil caller
dedup_w5_use(1)  # likewise: window 5's slots in vector registers where the CPU has them

cdef const char* DDPS = b"DDPS"

#: The full format's magic.
MAGIC = DDPS[:4]
#: The version of Kafka's format (the only one).
VERSION = SNAPSHOT_VERSION
#: The full format's version that encode_full writes; decode_full also reads version 1.
FULL_FORMAT_VERSION = FULL_VERSION_2


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


# --- dedup's full-window format, version 2 (written) ----------------------------------------

cdef Py_ssize_t full_record_size(int window) noexcept nogil:
    return REC_FIXED_SIZE + SLOT_SIZE * (window - 1)


cdef inline bint offset_gap_fits(uint64_t gap) noexcept nogil:
    return gap < <uint64_t>0xFFFFFFFFU


cdef inline bint timestamp_gap_fits(int64_t gap) noexcept nogil:
    return gap > -2147483648LL and gap <= 2147483647LL


cdef inline bint fits_int32(uint64_t value) noexcept nogil:
    # value, read as an int64, is in [-2^31, 2^31) (as in _state.pyx).
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
    """The table is one snapshot_w5.h reads and writes: window 5, the ring where it expects."""
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
        dedup_store_be64(q + REC_PRODUCER_ID, <uint64_t>header.producer_id)
        dedup_store_be16(q + REC_PRODUCER_EPOCH, <uint16_t>header.producer_epoch)
        dedup_store_be32(q + REC_COORDINATOR_EPOCH, <uint32_t>header.coordinator_epoch)
        last_timestamp = last_timestamp_at(t, i)[0]
        dedup_store_be64(q + REC_LAST_TIMESTAMP, <uint64_t>last_timestamp)
        dedup_store_be64(q + REC_CURRENT_TXN_FIRST_OFFSET, <uint64_t>header.current_txn_first_offset)
        (q + REC_BATCH_COUNT)[0] = <uint8_t>count
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
    # The ring invariant of _state.pyx: while count < window, head is 0 and the batches sit
    # in slots [0, count). Oldest first into slots 0.. keeps it (and holds at count == window).
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
    `w5` (window5_layout) all four at once, in snapshot_w5.h."""
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
        batch_count = (q + REC_BATCH_COUNT)[0]
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


# --- problems -------------------------------------------------------------------------------

cdef inline int problem(Problem* p, int kind) noexcept nogil:
    p.kind = kind
    return kind


cdef void problem_clear(Problem* p) noexcept nogil:
    p.kind = PROBLEM_NONE
    p.entry = -1
    p.item = -1
    p.count = 0
    p.producer_id = 0
    p.found = 0
    p.other = 0
    p.bound = 0
    p.position = 0


cdef str problem_message(const Problem* p, Py_ssize_t size, object first_bytes):
    """What a reader found, as expected versus found. The twin words each one the same."""
    cdef int kind = p.kind
    entry, item, count, pid = p.entry, p.item, p.count, p.producer_id
    found, other, bound, position = p.found, p.other, p.bound, p.position
    if kind == KAFKA_BAD_VERSION:
        return f"Kafka snapshot: unknown file version: expected {SNAPSHOT_VERSION}, found {found}"
    if kind == KAFKA_TOO_SHORT:
        return (f"Kafka snapshot: too short: expected at least {KAFKA_HEADER_SIZE} bytes (version, crc, count), "
                f"found {size}")
    if kind == KAFKA_NEGATIVE_COUNT:
        return f"Kafka snapshot: negative producer count: expected >= 0, found {count}"
    if kind == KAFKA_SIZE:
        what = "short file" if size < bound else f"{size - bound} trailing bytes"
        return f"Kafka snapshot: {what}: {count} producers need 10 + 46 x {count} = {bound} bytes, found {size}"
    if kind == KAFKA_BAD_CRC:
        return (f"Kafka snapshot: CRC-32C of bytes [{KAFKA_CRC_START}, {size}) does not match: "
                f"stored crc {found:#010x}, computed crc {other:#010x}")
    if kind == KAFKA_NEGATIVE_PRODUCER_ID:
        return f"Kafka snapshot: entry {entry}: producer id {pid} is negative: expected >= 0"
    if kind == KAFKA_NEGATIVE_OFFSET_DELTA:
        return (f"Kafka snapshot: entry {entry} (producer id {pid}): offset delta {found} is negative: "
                f"expected >= 0")
    if kind == FULL_BAD_MAGIC:
        return f"full snapshot: bad magic: expected {MAGIC!r}, found {first_bytes!r}"
    if kind == FULL_TOO_SHORT:
        what = "header and crc" if bound == FULL_MIN_SIZE else "header, escape count and crc"
        return f"full snapshot: too short: expected at least {bound} bytes ({what}), found {size}"
    if kind == FULL_BAD_VERSION:
        return f"full snapshot: unknown version: expected {FULL_VERSION_1} or {FULL_VERSION_2}, found {found}"
    if kind == FULL_BAD_WINDOW:
        return f"full snapshot: window out of range: expected 1..255, found {found}"
    if kind == FULL_NEGATIVE_MAP_END_OFFSET:
        return f"full snapshot: negative map end offset: expected >= 0, found {found}"
    if kind == FULL_NEGATIVE_COUNT:
        return f"full snapshot: negative producer count: expected >= 0, found {found}"
    if kind == FULL_SHORT_ENTRY:
        return (f"full snapshot: short file: entry {entry} of {count} needs {FULL_ENTRY_SIZE} bytes at byte "
                f"{position}, found {found} before the crc")
    if kind == FULL_BATCH_COUNT_OVER_WINDOW:
        return f"full snapshot: entry {entry}: batch count {found} exceeds the window: expected 0..{bound}"
    if kind == FULL_SHORT_BATCHES:
        return (f"full snapshot: short file: the {other} batches of entry {entry} of {count} need "
                f"{FULL_BATCH_SIZE * other} bytes at byte {position}, found {found} before the crc")
    if kind == FULL_TRAILING_BYTES:
        return (f"full snapshot: {size - FULL_CRC_SIZE - position} trailing bytes: {count} producers end at byte "
                f"{position}, expected a {position + FULL_CRC_SIZE}-byte file, found {size} bytes")
    if kind == FULL_BAD_CRC:
        return (f"full snapshot: CRC-32C of bytes [0, {size - FULL_CRC_SIZE}) does not match: "
                f"stored crc {found:#010x}, computed crc {other:#010x}")
    if kind == FULL2_NEGATIVE_ESCAPE_COUNT:
        return f"full snapshot: negative escaped value count: expected >= 0, found {found}"
    if kind == FULL2_SIZE:
        what = "short file" if size < bound else f"{size - bound} trailing bytes"
        return (f"full snapshot: {what}: {count} producers of {position} bytes (window {found}) and {other} "
                f"escaped values need 20 + {position} x {count} + 8 x {other} + 8 = {bound} bytes, found {size}")
    if kind == FULL2_UNUSED_ESCAPES:
        return (f"full snapshot: {bound - found} escaped values unused: the records use {found} of the {bound} "
                "the file holds")
    if kind == FULL_NEGATIVE_PRODUCER_ID:
        return f"full snapshot: entry {entry}: producer id {pid} is negative: expected >= 0"
    where = f"full snapshot: entry {entry} (producer id {pid})"
    if kind == FULL_BAD_TXN_FIRST_OFFSET:
        return f"{where}: current txn first offset {found}: expected -1 (none) or an offset in [0, {bound})"
    if kind == FULL_REPEATED_PRODUCER_ID:
        return (f"full snapshot: entry {entry}: producer id {pid} repeats entry {item}: "
                "expected unique producer ids")
    where = f"{where}, batch {item}"
    if kind == FULL2_MISSING_ESCAPE:
        return f"{where}: escaped value {found} is missing: the file holds {bound}"
    if kind == FULL_NEGATIVE_OFFSET_DELTA:
        return f"{where}: offset delta {found} is negative: expected >= 0"
    if kind == FULL_NEGATIVE_FIRST_OFFSET:
        return (f"{where}: last offset {found} is below its offset delta {other}: "
                "expected last offset >= offset delta (a first offset >= 0)")
    if kind == FULL_OFFSET_PAST_MAP_END:
        return f"{where}: last offset {found} is not below the map end offset: expected < {bound}"
    return f"snapshot problem {kind}"  # pragma: no cover - every kind is worded above


cdef str unwritable_message(const Problem* p):
    """Why full_encode refused a table. The twin words it the same."""
    hint = ("; only a table loaded from a Kafka snapshot can hold this, and the full format's reader "
            "would reject it")
    if p.kind == FULL_BAD_TXN_FIRST_OFFSET:
        return (f"cannot write a full snapshot: producer {p.producer_id}: current txn first offset {p.found} "
                f"is not below the table's map end offset {p.bound}{hint}")
    if p.kind == FULL_NEGATIVE_FIRST_OFFSET:
        return (f"cannot write a full snapshot: producer {p.producer_id}, batch {p.item}: last offset {p.found} "
                f"is below its offset delta {p.other} (a negative first offset){hint}")
    return (f"cannot write a full snapshot: producer {p.producer_id}, batch {p.item}: last offset {p.found} "
            f"is not below the table's map end offset {p.bound}{hint}")


cdef int raise_corrupt(const Problem* p, const unsigned char[::1] view) except -1:
    raise CorruptSnapshotError(problem_message(p, view.shape[0], bytes(view[:4])))


# --- Python boundary ------------------------------------------------------------------------

def use_window5_vectors(bint wanted):
    """Test hook: window 5's slots through snapshot_w5.h (where the CPU can) or the scalar loops
    only; returns whether the vectors are in use now."""
    return dedup_w5_use(wanted) == 1


def window5_vectors_apply(ProducerStateTable table not None):
    """Test hook: whether the table's snapshots go through snapshot_w5.h (window 5, its ring
    where the header expects it, the vectors in use)."""
    return window5_layout(&table.t)


def crc32c_in_mode(data, crc, int mode):
    """Test hook: (the mode used, the CRC-32C of ``data`` from ``crc``) through this module's
    copy of crc32c.h in ``mode`` (0 the table, 1 the CRC instruction in three streams, 2 folding
    with carry-less multiplies), or the best mode below it that the CPU has; then back to the
    mode chosen at import."""
    if not 0 <= mode <= 2:
        raise ValueError(f"mode must be 0, 1 or 2, got {mode}")
    cdef const unsigned char[::1] view = readable_bytes(data, "data")
    cdef uint32_t value = <uint32_t>crc
    cdef int chosen = dedup_crc32c_setup()
    cdef int used = dedup_crc32c_use_hardware(mode)
    try:
        value = dedup_crc32c(value, &view[0] if view.shape[0] else NULL, view.shape[0])
    finally:
        dedup_crc32c_use_hardware(chosen)
    return used, value


cdef ProducerStateTable new_table(object table_class, int window):
    if not (isinstance(table_class, type) and issubclass(table_class, ProducerStateTable)):
        raise TypeError(f"table_class must be dedup._state.ProducerStateTable or a subclass, got {table_class!r}")
    table = table_class(window)
    cdef ProducerStateTable fresh = <ProducerStateTable?>table
    if fresh.t.count or fresh.t.window != window:
        raise TypeError(f"table_class({window}) must make an empty table of window {window}")
    return fresh


def encode_kafka(ProducerStateTable table not None):
    """Kafka's snapshot (version 1, spec §4.2-4.3) of the table, as bytes.

    Entries in the table's order, each with only its last retained batch; the loop runs
    without the GIL.
    """
    table._check_idle()
    cdef Table* t = &table.t
    cdef bytes out = PyBytes_FromStringAndSize(NULL, kafka_size(t))
    cdef unsigned char* buffer = <unsigned char*>PyBytes_AS_STRING(out)
    dedup_advise_huge_pages(buffer, kafka_size(t))
    table._busy = 1  # other threads get a RuntimeError instead of changing the table under us
    try:
        with nogil:
            kafka_encode(t, buffer)
    finally:
        table._busy = 0
    return out


def encode_full(ProducerStateTable table not None):
    """dedup's full-window snapshot (version 2) of the table, as bytes: every retained batch.

    ``ValueError`` if the table holds offsets at or past its map end offset, or a negative
    first offset (only a table loaded from a Kafka snapshot can): the reader would reject them.
    """
    table._check_idle()
    cdef Table* t = &table.t
    cdef Problem p
    cdef int kind = PROBLEM_NONE
    cdef Escapes escapes
    cdef Py_ssize_t next = 0, j
    cdef Py_ssize_t records_end = FULL_HEADER_SIZE + full_record_size(t.window) * table_live(t)
    cdef uint32_t crc = 0
    problem_clear(&p)
    escapes.values = NULL
    escapes.count = 0
    escapes.capacity = 0
    # Sized for no escaped values (the common case); grown below if the records escaped any.
    cdef bytes out = PyBytes_FromStringAndSize(NULL, records_end + FULL2_TRAILER_SIZE)
    cdef bytes whole
    cdef unsigned char* buffer = <unsigned char*>PyBytes_AS_STRING(out)
    cdef unsigned char* trailer
    try:
        dedup_advise_huge_pages(buffer, records_end)
        table._busy = 1
        try:
            with nogil:
                full_header(t, buffer)
                crc = dedup_crc32c(0, buffer, FULL_HEADER_SIZE)
                kind = full_records(t, &next, t.count, buffer + FULL_HEADER_SIZE, &escapes, &crc, &p)
        finally:
            table._busy = 0
        if kind:
            raise ValueError(unwritable_message(&p))
        if escapes.count:
            whole = PyBytes_FromStringAndSize(NULL, records_end + FULL2_ESCAPE_SIZE * escapes.count
                                              + FULL2_TRAILER_SIZE)
            memcpy(PyBytes_AS_STRING(whole), buffer, records_end)
            out = whole
            buffer = <unsigned char*>PyBytes_AS_STRING(out)
            for j in range(escapes.count):
                dedup_store_be64(buffer + records_end + FULL2_ESCAPE_SIZE * j, <uint64_t>escapes.values[j])
            crc = dedup_crc32c(crc, buffer + records_end, FULL2_ESCAPE_SIZE * escapes.count)
        trailer = buffer + records_end + FULL2_ESCAPE_SIZE * escapes.count
        dedup_store_be32(trailer, <uint32_t>escapes.count)
        crc = dedup_crc32c(crc, trailer, 4)
        dedup_store_be32(trailer + 4, crc)
    finally:
        escapes_free(&escapes)
    return out


cdef enum:
    # The smallest buffer SnapshotWriter.fill takes: the full format's largest record
    # (55 + 12 * 254 = 3103 bytes) after its header, so every fill makes progress.
    MIN_WRITER_BUFFER = 8192


@cython.final
cdef class SnapshotWriter:
    """A table's snapshot, piece by piece into a buffer the caller reuses: the file is written
    without ever holding all of it in memory (write_snapshot's path for the compiled table).

        with SnapshotWriter(table, "kafka") as pieces:
            while n := pieces.fill(buffer):
                write(buffer[:n])
        # then Kafka's crc at byte pieces.crc_offset: pieces.crc

    The pieces concatenated are exactly encode_kafka(table) or encode_full(table), except that
    Kafka's crc field (bytes 2-5) is 0 until the caller patches it, as Kafka's writer does
    (spec §4.3); the full format's escaped values, escape count and crc come last, in the
    pieces. While the block is open the table is busy: another thread gets a RuntimeError
    instead of changing it between pieces.
    """

    cdef ProducerStateTable table
    cdef bint full
    cdef bint entered
    cdef int stage                     # 0: header next, 1: entries, 2: escapes, 3: trailer, 4: done
    cdef Py_ssize_t next               # the next entry to write
    cdef Py_ssize_t count              # entries when the block opened
    cdef Py_ssize_t escapes_written    # escaped values written so far
    cdef Escapes escapes               # the full format's escaped values, held until the records end
    cdef uint64_t generation           # the table's generation when the block opened
    cdef uint32_t running_crc

    def __cinit__(self, ProducerStateTable table not None, format):
        if format not in ("full", "kafka"):
            raise ValueError(f"format must be one of ('full', 'kafka'), got {format!r}")
        self.table = table
        self.full = format == "full"

    def __dealloc__(self):
        escapes_free(&self.escapes)

    def __enter__(self):
        if self.entered:
            raise RuntimeError("SnapshotWriter is already open")
        self.table._check_idle()
        self.table._busy = 1
        self.entered = True
        self.generation = self.table.t.generation
        self.count = self.table.t.count
        self.stage = 0
        self.next = 0
        self.escapes_written = 0
        escapes_free(&self.escapes)
        self.running_crc = 0
        return self

    def __exit__(self, *exc_info):
        if self.entered:
            self.entered = False
            self.table._busy = 0
        escapes_free(&self.escapes)
        return False

    @property
    def size(self):
        """The snapshot's length in bytes."""
        return full_size(&self.table.t) if self.full else kafka_size(&self.table.t)

    @property
    def crc_offset(self):
        """Where Kafka's crc goes once known (2); None for the full format (its crc is a piece)."""
        return None if self.full else KAFKA_CRC

    @property
    def crc(self):
        """The snapshot's CRC-32C, once fill() has returned 0."""
        if self.stage != 4:
            raise RuntimeError("the crc is known once fill() has returned 0")
        return self.running_crc

    def fill(self, buffer):
        """Write the next piece into ``buffer`` (writable, at least 8192 bytes) from its start;
        returns the piece's length, 0 once the snapshot is complete.

        ``ValueError`` (as encode_full) if the table cannot be written in the full format.
        """
        if not self.entered:
            raise RuntimeError("SnapshotWriter.fill() needs an open block: with SnapshotWriter(...) as pieces")
        cdef unsigned char[::1] view
        try:
            view = memoryview(buffer).cast("B")
        except (TypeError, BufferError) as error:
            raise TypeError(f"buffer must be a writable C-contiguous buffer, got {type(buffer).__name__}: "
                            f"{error}") from None
        cdef Py_ssize_t capacity = view.shape[0]
        if capacity < MIN_WRITER_BUFFER:
            raise ValueError(f"buffer must hold at least {MIN_WRITER_BUFFER} bytes, got {capacity}")
        cdef Table* t = &self.table.t
        if t.generation != self.generation or t.count != self.count:
            raise RuntimeError("the table changed while its snapshot was being written")
        cdef unsigned char* out = &view[0]
        cdef Py_ssize_t written = 0, entries, before, j
        cdef Py_ssize_t record_size = full_record_size(t.window)
        cdef Problem p
        cdef int kind = PROBLEM_NONE
        problem_clear(&p)
        with nogil:
            if self.stage == 0:
                if self.full:
                    full_header(t, out)
                    self.running_crc = dedup_crc32c(0, out, FULL_HEADER_SIZE)
                    written = FULL_HEADER_SIZE
                else:
                    kafka_header(t, out)
                    self.running_crc = dedup_crc32c(0, out + KAFKA_CRC_START,
                                                    KAFKA_HEADER_SIZE - KAFKA_CRC_START)
                    written = KAFKA_HEADER_SIZE
                self.stage = 1
            if self.stage == 1:
                if self.full:
                    entries = min((capacity - written) // record_size, t.count - self.next)
                    before = self.next
                    kind = full_records(t, &self.next, self.next + entries, out + written, &self.escapes,
                                        &self.running_crc, &p)
                    for j in range(before, self.next):
                        written += 0 if is_hole(entry_at(t, j)) else record_size
                else:
                    entries = min((capacity - written) // KAFKA_ENTRY_SIZE, t.count - self.next)
                    written += kafka_entries(t, self.next, self.next + entries, out + written, &self.running_crc)
                    self.next += entries
                if kind == PROBLEM_NONE and self.next == t.count:
                    self.stage = 2 if self.full else 4
            if self.stage == 2:
                entries = min((capacity - written) // FULL2_ESCAPE_SIZE, self.escapes.count - self.escapes_written)
                for j in range(entries):
                    dedup_store_be64(out + written + FULL2_ESCAPE_SIZE * j,
                                     <uint64_t>self.escapes.values[self.escapes_written + j])
                self.running_crc = dedup_crc32c(self.running_crc, out + written, FULL2_ESCAPE_SIZE * entries)
                written += FULL2_ESCAPE_SIZE * entries
                self.escapes_written += entries
                if self.escapes_written == self.escapes.count:
                    self.stage = 3
            if self.stage == 3 and capacity - written >= FULL2_TRAILER_SIZE:
                dedup_store_be32(out + written, <uint32_t>self.escapes.count)
                self.running_crc = dedup_crc32c(self.running_crc, out + written, 4)
                dedup_store_be32(out + written + 4, self.running_crc)
                written += FULL2_TRAILER_SIZE
                self.stage = 4
        if kind:
            raise ValueError(unwritable_message(&p))
        return written


# --- large loads on two cores (prefault.h) --------------------------------------------------

cdef extern from "Python.h":
    ctypedef struct PyInterpreterState:
        pass
    PyInterpreterState* PyInterpreterState_Get()
    PyInterpreterState* PyInterpreterState_Main()


cdef extern from "prefault.h":
    ctypedef struct dedup_prefault:
        pass
    ctypedef struct dedup_loader:
        int (*fn)(void* ctx) noexcept nogil
        void* ctx
        dedup_prefault* pf
        int result
        PyObject* type
        PyObject* value
        PyObject* traceback
    int dedup_prefault_plan(dedup_prefault* pf) noexcept nogil
    int dedup_prefault_step(dedup_prefault* pf) noexcept nogil
    void dedup_prefault_account(dedup_prefault* pf) noexcept nogil
    int dedup_loader_start(dedup_loader* loader) noexcept nogil
    int DEDUP_LOAD_NOT_RUN
    void dedup_loader_join(dedup_loader* loader) noexcept nogil
    int dedup_prefault_use(int mode) noexcept nogil
    size_t dedup_prefault_threads
    size_t dedup_prefault_bytes


def prefault_mode(int mode):
    """Test and benchmark hook: large snapshot loads run on a thread of their own while the
    caller faults their new memory in (prefault.h): never (0), from 16 MB on with two CPUs or
    more (1, the default), at any size (2), or at any size faulting every page, racing the load
    (3). Returns the mode in use now: 0 where that cannot run (not Linux 5.14+)."""
    if not 0 <= mode <= 3:
        raise ValueError(f"prefault mode {mode}: 0, 1, 2 or 3")
    return dedup_prefault_use(mode)


def prefault_counts():
    """Test hook: (loader threads started, bytes faulted in ahead of loads) since import."""
    return dedup_prefault_threads, dedup_prefault_bytes


ctypedef struct LoadCall:
    Table* t
    const unsigned char* data
    Py_ssize_t size
    const Layout* layout
    BulkLoad* bulk
    Problem* p
    bint full
    bint threads                       # a loader thread may run it (the main interpreter)
    int kind


cdef int load_call(void* ctx) except -1 nogil:
    """The load of decode_full or decode_kafka, as run_load hands it to the loader thread:
    the problem kind in call.kind (the load ends with bulk_finish)."""
    cdef LoadCall* call = <LoadCall*>ctx
    if call.full:
        call.kind = full_load(call.t, call.data, call.size, call.layout, call.bulk, call.p)
    else:
        call.kind = kafka_load(call.t, call.data, call.size, call.layout, call.bulk, call.p)
    return 0


cdef int run_load(LoadCall* call) except -1 nogil:
    """The load of a bulk_begin'd table, on a loader thread while this thread faults the new
    memory in ahead of it when prefault.h's plan says so (a large load, two CPUs) and the
    caller runs in the main interpreter (the thread takes its Python thread state with
    PyGILState_Ensure, which knows no other), else here. The table is the same either way;
    an exception of the load is raised here."""
    cdef dedup_loader loader
    cdef dedup_prefault* pf = <dedup_prefault*>&call.bulk.prefault
    cdef int planned = dedup_prefault_plan(pf)
    # load_call through a pointer without Cython's exception check: on -1 the loader thread
    # fetches the exception itself (dedup_loader_main) and it is raised here.
    loader.fn = <int (*)(void*) noexcept nogil>load_call
    loader.ctx = call
    loader.pf = pf
    if not (call.threads and planned and dedup_loader_start(&loader)):
        return load_call(call)
    while dedup_prefault_step(pf):
        pass
    dedup_loader_join(&loader)
    dedup_prefault_account(pf)
    if loader.result == DEDUP_LOAD_NOT_RUN:
        return load_call(call)
    if loader.result == -1:
        with gil:
            PyErr_Restore(loader.type, loader.value, loader.traceback)
        return -1
    return 0


def decode_kafka(data, window=5, map_end_offset=0, table_class=ProducerStateTable):
    """A table from Kafka's snapshot (spec §4.4); ``CorruptSnapshotError`` if it is not one.

    ``window`` is the new table's window (the file keeps at most one batch per producer) and
    ``map_end_offset`` its map end offset (Kafka takes it from the file name).
    """
    cdef const unsigned char[::1] view = readable_bytes(data, "data")
    cdef int table_window = _args.window(window)
    cdef int64_t end_offset = _args.offset("map_end_offset", map_end_offset)
    cdef Py_ssize_t size = view.shape[0]
    cdef const unsigned char* octets = &view[0] if size else NULL
    cdef Layout layout
    cdef Problem p
    cdef int kind
    problem_clear(&p)
    with nogil:
        kind = kafka_check(octets, size, &layout, &p)
    if kind:
        raise_corrupt(&p, view)
    cdef ProducerStateTable table = new_table(table_class, table_window)
    cdef BulkLoad bulk
    memset(&bulk, 0, sizeof(BulkLoad))  # bulk_free's precondition, should bulk_begin fail
    cdef LoadCall call
    cdef bint threads = PyInterpreterState_Get() == PyInterpreterState_Main()
    with nogil:
        try:
            bulk_begin(&table.t, &bulk, layout.count)  # no reallocation and no rehash from here on
            call = LoadCall(&table.t, octets, size, &layout, &bulk, &p, False, threads, 0)
            run_load(&call)
            kind = call.kind
        finally:
            bulk_free(&bulk)
    if kind == KAFKA_REPEATED_PRODUCER_ID:
        # Not Kafka's writer's (its snapshot is a map's entries), but valid: load again, entry
        # by entry, so that the later entry of a producer overwrites the earlier (rare).
        problem_clear(&p)
        table = new_table(table_class, table_window)
        with nogil:
            table_reserve(&table.t, layout.count)
            kind = kafka_load(&table.t, octets, size, &layout, NULL, &p)
    if kind:
        raise_corrupt(&p, view)
    table.t.map_end_offset = end_offset
    table.t.generation += 1
    return table


def decode_full(data, table_class=ProducerStateTable):
    """A table from a full-window snapshot (version 1 or 2), with the file's window and map end
    offset; ``CorruptSnapshotError`` if it is not a valid one."""
    cdef const unsigned char[::1] view = readable_bytes(data, "data")
    cdef Py_ssize_t size = view.shape[0]
    cdef const unsigned char* octets = &view[0] if size else NULL
    cdef Layout layout
    cdef Problem p
    cdef int kind
    problem_clear(&p)
    with nogil:
        kind = full_check(octets, size, &layout, &p)
    if kind:
        raise_corrupt(&p, view)
    cdef ProducerStateTable table = new_table(table_class, layout.window)
    cdef BulkLoad bulk
    memset(&bulk, 0, sizeof(BulkLoad))  # bulk_free's precondition, should bulk_begin fail
    cdef LoadCall call
    cdef bint threads = PyInterpreterState_Get() == PyInterpreterState_Main()
    with nogil:
        try:
            bulk_begin(&table.t, &bulk, layout.count)  # no reallocation and no rehash from here on
            call = LoadCall(&table.t, octets, size, &layout, &bulk, &p, True, threads, 0)
            run_load(&call)
            kind = call.kind
        finally:
            bulk_free(&bulk)
    if kind:
        raise_corrupt(&p, view)
    table.t.map_end_offset = layout.map_end_offset
    table.t.generation += 1
    return table
