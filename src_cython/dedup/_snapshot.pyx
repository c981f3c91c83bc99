# The compiled snapshot codec: Kafka's producer-state snapshot (version 1, spec §4.2-4.4) and
# dedup's full-window format, straight between bytes and the table's C struct. Layouts and the
# C-level API: _snapshot.pxd. The public API (format detection, files): dedup/snapshot.py.
#
# No Python object per producer: the encoder sizes the output in one pass over the entry
# headers and fills a bytes object of exactly that size; the decoder validates the file, then
# presizes the table (table_reserve) and writes each entry's header, ring and last_timestamp
# in place. Both loops run without the GIL.
#
# Readers validate in a fixed order, the same as the twin's: header, layout (lengths, counts),
# CRC, then each entry's values in file order. Every read is bounds-checked against the
# buffer's length first, so no input can make them read outside it or loop past its end.

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy

from dedup._state cimport (
    NO_SEQUENCE,
    NO_TXN,
    EntryHeader,
    ProducerStateTable,
    Table,
    entry_at,
    last_timestamp_at,
    ring_last_offset,
    ring_last_sequence,
    ring_offset_delta,
    ring_timestamp,
    table_find_or_insert,
    table_reserve,
)

from dedup import _args
from dedup.errors import CorruptSnapshotError

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define DEDUP_PREFETCH(p) __builtin_prefetch((const void *)(p), 0, 1)
    #else
    #define DEDUP_PREFETCH(p) ((void)(p))
    #endif
    """
    # A hint to the CPU to start loading the cache line at p; never faults, may do nothing.
    void DEDUP_PREFETCH(const void* p) noexcept nogil

dedup_crc32c_setup()  # decided once, with the GIL, before any nogil caller

cdef const char* DDPS = b"DDPS"

#: The full format's magic.
MAGIC = DDPS[:4]
#: The version both formats write and accept.
VERSION = SNAPSHOT_VERSION


# --- loading: the index probe, started early -------------------------------------------------

cdef enum:
    # Loads run this many entries ahead of the inserts: each insert's first index probe is a
    # cache miss (a 1,000,000-producer index is 6.7 MB, its slots random), and prefetching
    # them overlaps the misses instead of paying for them one after another.
    PREFETCH_DISTANCE = 16


cdef inline void prefetch_index_slot(const Table* t, int64_t producer_id) noexcept nogil:
    """Start loading the index slot where table_find_or_insert will look for producer_id.

    Mirrors hash_producer_id and home_slot of _state.pyx (not declared in its .pxd): a hint
    only, so a change there costs speed here, never correctness.
    """
    cdef uint64_t h = <uint64_t>producer_id ^ t.hash_seed
    h ^= h >> 33
    h *= <uint64_t>0xff51afd7ed558ccdULL
    h ^= h >> 33
    h *= <uint64_t>0xc4ceb9fe1a85ec53ULL
    h ^= h >> 33
    DEDUP_PREFETCH(t.index + <uint32_t>(((h >> 32) * <uint64_t>t.index_capacity) >> 32))


# --- Kafka's format -------------------------------------------------------------------------

cdef Py_ssize_t kafka_size(const Table* t) noexcept nogil:
    return KAFKA_HEADER_SIZE + KAFKA_ENTRY_SIZE * t.count


cdef void kafka_header(const Table* t, unsigned char* out) noexcept nogil:
    """Version and count into out[0, 10), the crc field 0: Kafka patches it last (spec §4.3)."""
    dedup_store_be16(out + KAFKA_VERSION, SNAPSHOT_VERSION)
    dedup_store_be32(out + KAFKA_CRC, 0)
    dedup_store_be32(out + KAFKA_COUNT, <uint32_t>t.count)


cdef Py_ssize_t kafka_entries(const Table* t, Py_ssize_t first, Py_ssize_t stop, unsigned char* out,
                              uint32_t* crc) noexcept nogil:
    """Entries [first, stop) into out, 46 bytes each, *crc continued over them; returns the
    bytes written. Only each entry's last retained batch is written (spec §4.3); Timestamp is
    the entry's last_timestamp, not the batch's."""
    cdef Py_ssize_t i
    cdef unsigned char* q = out
    cdef const unsigned char* crc_from = out
    cdef char* e
    cdef const EntryHeader* header
    cdef int last
    for i in range(first, stop):
        e = entry_at(t, i)
        header = <const EntryHeader*>e
        dedup_store_be64(q + KAFKA_PRODUCER_ID, <uint64_t>header.producer_id)
        dedup_store_be16(q + KAFKA_EPOCH, <uint16_t>header.producer_epoch)
        if header.count:
            last = header.head + header.count - 1
            if last >= t.window:
                last -= t.window
            dedup_store_be32(q + KAFKA_LAST_SEQUENCE, <uint32_t>ring_last_sequence(e)[last])
            dedup_store_be64(q + KAFKA_LAST_OFFSET, <uint64_t>ring_last_offset(t, e)[last])
            dedup_store_be32(q + KAFKA_OFFSET_DELTA, <uint32_t>ring_offset_delta(t, e)[last])
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
    cdef uint32_t stored, computed
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
    stored = dedup_load_be32(data + KAFKA_CRC)
    computed = dedup_crc32c(0, data + KAFKA_CRC_START, size - KAFKA_CRC_START)
    if stored != computed:
        p.found = stored
        p.other = computed
        return problem(p, KAFKA_BAD_CRC)
    layout.count = count
    return PROBLEM_NONE


cdef int kafka_load(Table* t, const unsigned char* data, Py_ssize_t size, const Layout* layout,
                    Problem* p) except -1 nogil:
    """Kafka's snapshot into an empty table (spec §4.4 step 3). layout.count was read once by
    kafka_check and size == 10 + 46 * count, so every entry read below is inside data."""
    cdef Py_ssize_t n, i
    cdef const unsigned char* q
    cdef int64_t producer_id, last_offset, txn
    cdef int32_t offset_delta
    cdef char* e
    cdef EntryHeader* header
    table_reserve(t, layout.count)  # no reallocation and no rehash from here on
    for n in range(min(<Py_ssize_t>PREFETCH_DISTANCE, layout.count)):
        prefetch_index_slot(t, <int64_t>dedup_load_be64(data + KAFKA_HEADER_SIZE + n * KAFKA_ENTRY_SIZE))
    for n in range(layout.count):
        if n + PREFETCH_DISTANCE < layout.count:
            prefetch_index_slot(t, <int64_t>dedup_load_be64(
                data + KAFKA_HEADER_SIZE + (n + PREFETCH_DISTANCE) * KAFKA_ENTRY_SIZE))
        q = data + KAFKA_HEADER_SIZE + n * KAFKA_ENTRY_SIZE
        producer_id = <int64_t>dedup_load_be64(q + KAFKA_PRODUCER_ID)
        last_offset = <int64_t>dedup_load_be64(q + KAFKA_LAST_OFFSET)
        offset_delta = <int32_t>dedup_load_be32(q + KAFKA_OFFSET_DELTA)
        # Values the table cannot hold: stricter than Kafka, which checks none of them. The
        # first offset (LastOffset - OffsetDelta) is not checked: the spec's own vector (§4.7)
        # has LastOffset 2 and OffsetDelta 3.
        if producer_id < 0:
            p.entry = n
            p.producer_id = producer_id
            return problem(p, KAFKA_NEGATIVE_PRODUCER_ID)
        if last_offset >= 0 and offset_delta < 0:
            p.entry = n
            p.producer_id = producer_id
            p.found = offset_delta
            return problem(p, KAFKA_NEGATIVE_OFFSET_DELTA)
        # A producer id seen twice: the later entry wins and the producer keeps its first
        # position, as Kafka's producers.put() into its map: every field is overwritten.
        i = table_find_or_insert(t, producer_id)
        e = entry_at(t, i)
        header = <EntryHeader*>e
        header.producer_epoch = <int16_t>dedup_load_be16(q + KAFKA_EPOCH)
        header.coordinator_epoch = <int32_t>dedup_load_be32(q + KAFKA_COORDINATOR_EPOCH)
        txn = <int64_t>dedup_load_be64(q + KAFKA_CURRENT_TXN_FIRST_OFFSET)
        header.current_txn_first_offset = txn if txn >= 0 else NO_TXN  # a transaction iff >= 0
        header.head = 0
        header.count = 0
        if last_offset >= 0:  # one batch iff LastOffset >= 0; slot 0 (head 0, count 1)
            ring_last_sequence(e)[0] = <int32_t>dedup_load_be32(q + KAFKA_LAST_SEQUENCE)
            ring_offset_delta(t, e)[0] = offset_delta
            ring_last_offset(t, e)[0] = last_offset
            ring_timestamp(t, e)[0] = <int64_t>dedup_load_be64(q + KAFKA_TIMESTAMP)
            header.count = 1
        last_timestamp_at(t, i)[0] = <int64_t>dedup_load_be64(q + KAFKA_TIMESTAMP)
    return PROBLEM_NONE


# --- dedup's full-window format -------------------------------------------------------------

cdef Py_ssize_t full_size(const Table* t) noexcept nogil:
    cdef Py_ssize_t i, batches = 0
    for i in range(t.count):
        batches += (<const EntryHeader*>entry_at(t, i)).count
    return FULL_MIN_SIZE + FULL_ENTRY_SIZE * t.count + FULL_BATCH_SIZE * batches


cdef void full_header(const Table* t, unsigned char* out) noexcept nogil:
    """Magic, version, window, map end offset and count into out[0, 20)."""
    memcpy(out + FULL_MAGIC, DDPS, 4)
    dedup_store_be16(out + FULL_VERSION, SNAPSHOT_VERSION)
    dedup_store_be16(out + FULL_WINDOW, <uint16_t>t.window)
    dedup_store_be64(out + FULL_MAP_END_OFFSET, <uint64_t>t.map_end_offset)
    dedup_store_be32(out + FULL_COUNT, <uint32_t>t.count)


cdef int full_entries(const Table* t, Py_ssize_t* next, Py_ssize_t capacity, unsigned char* out,
                      Py_ssize_t* written, uint32_t* crc, Problem* p) noexcept nogil:
    """Whole entries from *next on, each with every retained batch oldest first, while they fit
    in out[0, capacity); advances *next, sets *written and continues *crc over them.

    Returns 0, or a problem kind when the table holds what the reader would reject: offsets at
    or past the map end offset, a negative first offset (only a table loaded from a Kafka
    snapshot can hold them).
    """
    cdef Py_ssize_t i
    cdef unsigned char* q = out
    cdef const unsigned char* crc_from = out
    cdef char* e
    cdef const EntryHeader* header
    cdef int k, pos, kind = PROBLEM_NONE
    cdef int window = t.window
    cdef int64_t map_end_offset = t.map_end_offset
    cdef int64_t last_offset
    cdef int32_t offset_delta
    for i in range(next[0], t.count):
        e = entry_at(t, i)
        header = <const EntryHeader*>e
        if (q - out) + FULL_ENTRY_SIZE + FULL_BATCH_SIZE * header.count > capacity:
            break
        if header.current_txn_first_offset != NO_TXN and header.current_txn_first_offset >= map_end_offset:
            p.producer_id = header.producer_id
            p.found = header.current_txn_first_offset
            p.bound = map_end_offset
            kind = problem(p, FULL_BAD_TXN_FIRST_OFFSET)
            break
        dedup_store_be64(q + FULL_PRODUCER_ID, <uint64_t>header.producer_id)
        dedup_store_be16(q + FULL_PRODUCER_EPOCH, <uint16_t>header.producer_epoch)
        dedup_store_be32(q + FULL_COORDINATOR_EPOCH, <uint32_t>header.coordinator_epoch)
        dedup_store_be64(q + FULL_LAST_TIMESTAMP, <uint64_t>last_timestamp_at(t, i)[0])
        dedup_store_be64(q + FULL_CURRENT_TXN_FIRST_OFFSET, <uint64_t>header.current_txn_first_offset)
        (q + FULL_BATCH_COUNT)[0] = header.count
        q += FULL_ENTRY_SIZE
        pos = header.head
        for k in range(header.count):
            last_offset = ring_last_offset(t, e)[pos]
            offset_delta = ring_offset_delta(t, e)[pos]
            if last_offset < offset_delta or last_offset >= map_end_offset:
                p.producer_id = header.producer_id
                p.item = k
                p.found = last_offset
                p.other = offset_delta
                p.bound = map_end_offset
                kind = problem(p, FULL_NEGATIVE_FIRST_OFFSET if last_offset < offset_delta
                               else FULL_OFFSET_PAST_MAP_END)
                break
            dedup_store_be32(q + FULL_LAST_SEQUENCE, <uint32_t>ring_last_sequence(e)[pos])
            dedup_store_be32(q + FULL_OFFSET_DELTA, <uint32_t>offset_delta)
            dedup_store_be64(q + FULL_LAST_OFFSET, <uint64_t>last_offset)
            dedup_store_be64(q + FULL_TIMESTAMP, <uint64_t>ring_timestamp(t, e)[pos])
            q += FULL_BATCH_SIZE
            pos += 1
            if pos == window:
                pos = 0
        if kind:
            break
        next[0] = i + 1
        if q - crc_from >= CRC_BLOCK:
            crc[0] = dedup_crc32c(crc[0], crc_from, q - crc_from)
            crc_from = q
    crc[0] = dedup_crc32c(crc[0], crc_from, q - crc_from)
    written[0] = q - out
    return kind


cdef int full_encode(const Table* t, unsigned char* out, Problem* p) noexcept nogil:
    """The full-window snapshot of the table into out[0, full_size(t)), entries in the table's
    order; 0 or a problem kind (see full_entries)."""
    cdef Py_ssize_t next = 0, written = 0
    cdef uint32_t crc
    cdef int kind
    full_header(t, out)
    crc = dedup_crc32c(0, out, FULL_HEADER_SIZE)
    kind = full_entries(t, &next, full_size(t) - FULL_MIN_SIZE, out + FULL_HEADER_SIZE, &written, &crc, p)
    if kind == PROBLEM_NONE:
        dedup_store_be32(out + FULL_HEADER_SIZE + written, crc)
    return kind


cdef inline int entry_fits(const unsigned char* data, Py_ssize_t position, Py_ssize_t end, int window,
                           Py_ssize_t n, Problem* p) noexcept nogil:
    """0 if entry n, at `position`, fits before `end` with at most `window` batches; else the
    problem. Reads only the batch count byte, after checking it is there."""
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
    cdef int16_t version, window
    cdef int64_t map_end_offset
    cdef int32_t count
    cdef Py_ssize_t n, end, position
    cdef const unsigned char* crc_from
    cdef uint32_t crc = 0, stored
    cdef int kind
    if size < 4 or memcmp(data + FULL_MAGIC, DDPS, 4) != 0:
        return problem(p, FULL_BAD_MAGIC)
    if size < 6:
        return problem(p, FULL_TOO_SHORT)
    version = <int16_t>dedup_load_be16(data + FULL_VERSION)
    if version != SNAPSHOT_VERSION:
        p.found = version
        return problem(p, FULL_BAD_VERSION)
    if size < FULL_MIN_SIZE:
        return problem(p, FULL_TOO_SHORT)
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
    # The layout walk: each step is bounded by the bytes left (entry_fits), so a huge count in
    # a short file stops at the first entry that does not fit. The CRC follows the walk block
    # by block, while the bytes are in cache.
    end = size - FULL_CRC_SIZE
    position = FULL_HEADER_SIZE
    crc_from = data
    for n in range(count):
        kind = entry_fits(data, position, end, window, n, p)
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
    layout.count = count
    layout.window = window
    layout.map_end_offset = map_end_offset
    return PROBLEM_NONE


cdef int full_load(Table* t, const unsigned char* data, Py_ssize_t size, const Layout* layout,
                   Problem* p) except -1 nogil:
    """A full-window snapshot that full_check accepted into an empty table of its window."""
    cdef Py_ssize_t n, i, before
    cdef Py_ssize_t end = size - FULL_CRC_SIZE
    cdef Py_ssize_t position = FULL_HEADER_SIZE
    cdef int64_t map_end_offset = layout.map_end_offset
    cdef const unsigned char* q
    cdef const unsigned char* b
    cdef int64_t producer_id, txn, last_offset
    cdef int32_t offset_delta
    cdef int k, batch_count, kind
    cdef char* e
    cdef EntryHeader* header
    cdef Py_ssize_t ahead = FULL_HEADER_SIZE  # the entry PREFETCH_DISTANCE entries ahead
    cdef Py_ssize_t n_ahead = 0
    table_reserve(t, layout.count)  # no reallocation and no rehash from here on
    for n in range(layout.count):
        # Entries vary in length: a second cursor walks ahead, bounds-checked like the first.
        while n_ahead < layout.count and n_ahead <= n + PREFETCH_DISTANCE and end - ahead >= FULL_ENTRY_SIZE:
            prefetch_index_slot(t, <int64_t>dedup_load_be64(data + ahead + FULL_PRODUCER_ID))
            ahead += FULL_ENTRY_SIZE + FULL_BATCH_SIZE * (data + ahead + FULL_BATCH_COUNT)[0]
            n_ahead += 1
        # full_check walked these bytes, but a writable buffer (a bytearray) may have changed
        # since: the bounds that keep the reads inside data and the ring writes inside the
        # window are checked again (two compares per entry).
        kind = entry_fits(data, position, end, layout.window, n, p)
        if kind:
            return kind
        q = data + position
        batch_count = (q + FULL_BATCH_COUNT)[0]
        producer_id = <int64_t>dedup_load_be64(q + FULL_PRODUCER_ID)
        txn = <int64_t>dedup_load_be64(q + FULL_CURRENT_TXN_FIRST_OFFSET)
        p.entry = n
        p.producer_id = producer_id
        if producer_id < 0:
            return problem(p, FULL_NEGATIVE_PRODUCER_ID)
        # A transaction starts at a batch the table has seen: below the map end offset.
        if txn != NO_TXN and (txn < 0 or txn >= map_end_offset):
            p.found = txn
            p.bound = map_end_offset
            return problem(p, FULL_BAD_TXN_FIRST_OFFSET)
        before = t.count
        i = table_find_or_insert(t, producer_id)
        if i < before:
            # Unlike Kafka's format, our writer never repeats a producer id. Entry numbers and
            # table positions agree: the table was empty and every entry so far was new.
            p.item = i
            return problem(p, FULL_REPEATED_PRODUCER_ID)
        e = entry_at(t, i)
        header = <EntryHeader*>e
        header.producer_epoch = <int16_t>dedup_load_be16(q + FULL_PRODUCER_EPOCH)
        header.coordinator_epoch = <int32_t>dedup_load_be32(q + FULL_COORDINATOR_EPOCH)
        header.current_txn_first_offset = txn
        last_timestamp_at(t, i)[0] = <int64_t>dedup_load_be64(q + FULL_LAST_TIMESTAMP)
        # The ring invariant of _state.pyx: while count < window, head is 0 and the batches sit
        # in slots [0, count). Oldest first into slots 0.. keeps it (and holds at count == window).
        header.head = 0
        header.count = 0
        b = q + FULL_ENTRY_SIZE
        for k in range(batch_count):
            offset_delta = <int32_t>dedup_load_be32(b + FULL_OFFSET_DELTA)
            last_offset = <int64_t>dedup_load_be64(b + FULL_LAST_OFFSET)
            if offset_delta < 0 or last_offset < offset_delta or last_offset >= map_end_offset:
                p.item = k
                p.found = offset_delta if offset_delta < 0 else last_offset
                p.other = offset_delta
                p.bound = map_end_offset
                return problem(p, FULL_NEGATIVE_OFFSET_DELTA if offset_delta < 0
                               else FULL_NEGATIVE_FIRST_OFFSET if last_offset < offset_delta
                               else FULL_OFFSET_PAST_MAP_END)
            ring_last_sequence(e)[k] = <int32_t>dedup_load_be32(b + FULL_LAST_SEQUENCE)
            ring_offset_delta(t, e)[k] = offset_delta
            ring_last_offset(t, e)[k] = last_offset
            ring_timestamp(t, e)[k] = <int64_t>dedup_load_be64(b + FULL_TIMESTAMP)
            b += FULL_BATCH_SIZE
        header.count = <uint8_t>batch_count
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
        return f"full snapshot: too short: expected at least {FULL_MIN_SIZE} bytes (header and crc), found {size}"
    if kind == FULL_BAD_VERSION:
        return f"full snapshot: unknown version: expected {SNAPSHOT_VERSION}, found {found}"
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
    if kind == FULL_NEGATIVE_PRODUCER_ID:
        return f"full snapshot: entry {entry}: producer id {pid} is negative: expected >= 0"
    where = f"full snapshot: entry {entry} (producer id {pid})"
    if kind == FULL_BAD_TXN_FIRST_OFFSET:
        return f"{where}: current txn first offset {found}: expected -1 (none) or an offset in [0, {bound})"
    if kind == FULL_REPEATED_PRODUCER_ID:
        return (f"full snapshot: entry {entry}: producer id {pid} repeats entry {item}: "
                "expected unique producer ids")
    where = f"{where}, batch {item}"
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

cdef const unsigned char[::1] bytes_view(object data):
    """Any C-contiguous buffer (bytes, bytearray, memoryview, mmap), as unsigned bytes."""
    cdef const unsigned char[::1] view
    try:
        view = memoryview(data).cast("B")
    except TypeError as error:
        raise TypeError(f"data must be a C-contiguous buffer, got {type(data).__name__}: {error}") from None
    return view


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
    """dedup's full-window snapshot of the table, as bytes: every retained batch, oldest first.

    ``ValueError`` if the table holds offsets at or past its map end offset, or a negative
    first offset (only a table loaded from a Kafka snapshot can): the reader would reject them.
    """
    table._check_idle()
    cdef Table* t = &table.t
    cdef Problem p
    cdef int kind
    problem_clear(&p)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, full_size(t))
    cdef unsigned char* buffer = <unsigned char*>PyBytes_AS_STRING(out)
    dedup_advise_huge_pages(buffer, full_size(t))
    table._busy = 1
    try:
        with nogil:
            kind = full_encode(t, buffer, &p)
    finally:
        table._busy = 0
    if kind:
        raise ValueError(unwritable_message(&p))
    return out


cdef enum:
    # The smallest buffer SnapshotWriter.fill takes: the full format's largest entry
    # (31 + 24 * 255 = 6151 bytes) after its header, so every fill makes progress.
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
    (spec §4.3); the full format's crc comes last, in the pieces. While the block is open the
    table is busy: another thread gets a RuntimeError instead of changing it between pieces.
    """

    cdef ProducerStateTable table
    cdef bint full
    cdef bint entered
    cdef int stage                     # 0: header next, 1: entries, 2: trailer, 3: done
    cdef Py_ssize_t next               # the next entry to write
    cdef Py_ssize_t count              # entries when the block opened
    cdef uint64_t generation           # the table's generation when the block opened
    cdef uint32_t running_crc

    def __cinit__(self, ProducerStateTable table not None, format):
        if format not in ("full", "kafka"):
            raise ValueError(f"format must be one of ('full', 'kafka'), got {format!r}")
        self.table = table
        self.full = format == "full"

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
        self.running_crc = 0
        return self

    def __exit__(self, *exc_info):
        if self.entered:
            self.entered = False
            self.table._busy = 0
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
        if self.stage != 3:
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
        cdef Py_ssize_t written = 0, piece = 0, entries
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
                    self.running_crc = dedup_crc32c(0, out + KAFKA_CRC_START, KAFKA_HEADER_SIZE - KAFKA_CRC_START)
                    written = KAFKA_HEADER_SIZE
                self.stage = 1
            if self.stage == 1:
                if self.full:
                    kind = full_entries(t, &self.next, capacity - written, out + written, &piece,
                                        &self.running_crc, &p)
                    written += piece
                else:
                    entries = min((capacity - written) // KAFKA_ENTRY_SIZE, t.count - self.next)
                    written += kafka_entries(t, self.next, self.next + entries, out + written, &self.running_crc)
                    self.next += entries
                if kind == PROBLEM_NONE and self.next == t.count:
                    self.stage = 2
            if self.stage == 2:
                if not self.full:
                    self.stage = 3
                elif capacity - written >= FULL_CRC_SIZE:
                    dedup_store_be32(out + written, self.running_crc)
                    written += FULL_CRC_SIZE
                    self.stage = 3
        if kind:
            raise ValueError(unwritable_message(&p))
        return written


def decode_kafka(data, window=5, map_end_offset=0, table_class=ProducerStateTable):
    """A table from Kafka's snapshot (spec §4.4); ``CorruptSnapshotError`` if it is not one.

    ``window`` is the new table's window (the file keeps at most one batch per producer) and
    ``map_end_offset`` its map end offset (Kafka takes it from the file name).
    """
    cdef const unsigned char[::1] view = bytes_view(data)
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
    with nogil:
        kind = kafka_load(&table.t, octets, size, &layout, &p)
    if kind:
        raise_corrupt(&p, view)
    table.t.map_end_offset = end_offset
    table.t.generation += 1
    return table


def decode_full(data, table_class=ProducerStateTable):
    """A table from a full-window snapshot, with the file's window and map end offset;
    ``CorruptSnapshotError`` if it is not a valid one."""
    cdef const unsigned char[::1] view = bytes_view(data)
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
    with nogil:
        kind = full_load(&table.t, octets, size, &layout, &p)
    if kind:
        raise_corrupt(&p, view)
    table.t.map_end_offset = layout.map_end_offset
    table.t.generation += 1
    return table
