# Module dedup._records: Kafka v2 record batches, compiled: CRC-32C, header scanning straight
# from any buffer, the record-level rules of a produce request (docs/spec.md §2.1 rules 1, 3,
# 5-8; control batches §8.3), and appends of a whole buffer of batches to the producer-state
# table with offsets written in place (§3.2 step 1). Layout and the C-level API: _records.pxd.

from libc.stdint cimport INT64_MAX, int8_t, int16_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t

from dedup._state cimport (
    INT32_MAX_VALUE,
    ERR_CORRUPT_MESSAGE,
    ERR_INVALID_RECORD,
    ERR_NONE,
    NO_SEQUENCE,
    NO_TXN,
    ORIGIN_CLIENT,
    ORIGIN_REPLICATION,
    Batch,
    ProducerStateTable,
    Table,
    Verdict,
    append_batch,
    append_marker,
    increment_sequence,
    table_find_or_insert,
)

import numpy as np

from dedup import _args
from dedup._types import Origin

_CLIENT = Origin.CLIENT

dedup_crc32c_setup()  # decided once, with the GIL, before any nogil caller

#: Which CPU instruction computes CRC-32C here ("sse4.2", "armv8-crc"), or "" for the table.
CRC32C_HARDWARE = DEDUP_CRC32C_HARDWARE.decode() if dedup_crc32c_setup() else ""


# --- buffers ------------------------------------------------------------------------------

cdef const unsigned char[::1] readable_bytes(object data, str name):
    """Any C-contiguous buffer (bytes, bytearray, memoryview, mmap, numpy) as bytes, no copy."""
    cdef const unsigned char[::1] view
    try:
        view = memoryview(data).cast("B")
    except TypeError as error:
        raise TypeError(f"{name} must be a C-contiguous buffer, got {type(data).__name__}: {error}") from None
    return view


cdef unsigned char[::1] writable_bytes(object data, str name):
    cdef unsigned char[::1] view
    try:
        view = memoryview(data).cast("B")
    except TypeError as error:
        raise TypeError(f"{name} must be a C-contiguous buffer, got {type(data).__name__}: {error}") from None
    except BufferError:
        raise TypeError(f"{name} is read-only: writing offsets in place needs a writable buffer "
                        f"(bytearray, mmap, numpy), got {type(data).__name__}") from None
    return view


cdef inline const unsigned char* start_of(const unsigned char[::1] view) noexcept nogil:
    return &view[0] if view.shape[0] else NULL


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli) of ``data`` (any buffer), continuing from ``crc``, the CRC of the
    bytes before it (0 to start). The same as Kafka's Crc32C and the JDK's CRC32C."""
    cdef const unsigned char[::1] view = readable_bytes(data, "data")
    cdef uint32_t value = _args.integer("crc", crc, 0, 0xFFFFFFFF, "a uint32")
    with nogil:
        value = dedup_crc32c(value, start_of(view), view.shape[0])
    return value


# --- the header and the scan --------------------------------------------------------------

cdef int read_header(const unsigned char* batch, int64_t position, BatchHeader* h) noexcept nogil:
    """The 61-byte header at `batch` (the caller checked that it is there)."""
    h.position = position
    h.base_offset = <int64_t>dedup_load_be64(batch + BASE_OFFSET_OFFSET)
    h.batch_length = <int32_t>dedup_load_be32(batch + BATCH_LENGTH_OFFSET)
    h.partition_leader_epoch = <int32_t>dedup_load_be32(batch + PARTITION_LEADER_EPOCH_OFFSET)
    h.magic = <int8_t>batch[MAGIC_OFFSET]
    h.crc = dedup_load_be32(batch + CRC_OFFSET)
    h.attributes = <int16_t>dedup_load_be16(batch + ATTRIBUTES_OFFSET)
    h.last_offset_delta = <int32_t>dedup_load_be32(batch + LAST_OFFSET_DELTA_OFFSET)
    h.base_timestamp = <int64_t>dedup_load_be64(batch + BASE_TIMESTAMP_OFFSET)
    h.max_timestamp = <int64_t>dedup_load_be64(batch + MAX_TIMESTAMP_OFFSET)
    h.producer_id = <int64_t>dedup_load_be64(batch + PRODUCER_ID_OFFSET)
    h.producer_epoch = <int16_t>dedup_load_be16(batch + PRODUCER_EPOCH_OFFSET)
    h.base_sequence = <int32_t>dedup_load_be32(batch + BASE_SEQUENCE_OFFSET)
    h.record_count = <int32_t>dedup_load_be32(batch + RECORDS_COUNT_OFFSET)
    h.compression = h.attributes & ATTR_COMPRESSION_MASK
    h.timestamp_type = (h.attributes & ATTR_TIMESTAMP_TYPE) != 0
    h.is_transactional = (h.attributes & ATTR_TRANSACTIONAL) != 0
    h.is_control = (h.attributes & ATTR_CONTROL) != 0
    h._pad[0] = h._pad[1] = h._pad[2] = 0
    return 0


cdef int scan_buffer(const unsigned char* data, Py_ssize_t length, BatchHeader* out,
                     Py_ssize_t capacity, ScanStatus* status) noexcept nogil:
    """Walk the batches of data[0:length] by their lengths, without reading the records;
    the first `capacity` headers go to `out` (NULL: count only). Every read is checked
    against `length` first. Kafka's log readers stop the same way: at a torn tail (which
    recovery cuts) or at a length below the minimum (corrupt)."""
    cdef Py_ssize_t position = 0, count = 0, remaining
    cdef int64_t batch_length
    status.end = SCAN_COMPLETE
    status.found = 0
    while position < length:
        remaining = length - position
        if remaining < LOG_OVERHEAD:
            status.end = SCAN_TRUNCATED
            break
        batch_length = <int32_t>dedup_load_be32(data + position + BATCH_LENGTH_OFFSET)
        if batch_length < MIN_BATCH_LENGTH:
            status.end = SCAN_BAD_LENGTH
            status.found = batch_length
            break
        if batch_length > remaining - LOG_OVERHEAD:
            status.end = SCAN_TRUNCATED
            break
        if data[position + MAGIC_OFFSET] != MAGIC_V2:
            status.end = SCAN_BAD_MAGIC
            status.found = <int8_t>data[position + MAGIC_OFFSET]
            break
        if out != NULL and count < capacity:
            read_header(data + position, position, &out[count])
        count += 1
        position += batch_length + LOG_OVERHEAD
    status.batches = count
    status.valid_bytes = position
    return 0


# --- record-level rules (spec §2.1) -------------------------------------------------------

cdef int check_batch(const unsigned char* batch, const BatchHeader* h, uint8_t origin,
                     Problem* problem) noexcept nogil:
    """The record-level rules in Kafka's order; 0 or the Kafka error code, with the field at
    fault in `problem`. A client gets all of them (LogValidator); replication and the
    coordinator get the CRC (UnifiedLog checks it on every append) and a non-negative
    offset delta (else the batch's offsets would run backwards). Magic (rule 1) was checked
    by the scan."""
    cdef uint32_t computed
    problem.reason = REASON_NONE
    problem.expected = 0
    problem.found = 0
    if origin == ORIGIN_CLIENT and h.base_offset != 0:  # rule 3
        problem.reason = REASON_BASE_OFFSET
        problem.found = h.base_offset
        return ERR_INVALID_RECORD
    computed = dedup_crc32c(0, batch + ATTRIBUTES_OFFSET, h.batch_length + LOG_OVERHEAD - ATTRIBUTES_OFFSET)
    if computed != h.crc:  # rule 5
        problem.reason = REASON_CRC
        problem.expected = computed
        problem.found = h.crc
        return ERR_CORRUPT_MESSAGE
    if h.last_offset_delta < 0 or h.last_offset_delta == INT32_MAX_VALUE:
        # Negative: the batch's offsets would run backwards; 2^31-1: its record count
        # (delta + 1) would not fit Kafka's int32.
        problem.reason = REASON_OFFSET_DELTA
        problem.found = h.last_offset_delta
        return ERR_CORRUPT_MESSAGE
    if origin != ORIGIN_CLIENT:
        if h.producer_id >= 0 and h.base_sequence < NO_SEQUENCE:
            # Only -1 means "no sequence"; the leader never writes a sequence below it.
            problem.reason = REASON_NO_SEQUENCE
            problem.found = h.base_sequence
            return ERR_INVALID_RECORD
        return ERR_NONE
    if h.record_count <= 0 or <int64_t>h.last_offset_delta + 1 != h.record_count:  # rule 6
        problem.reason = REASON_RECORD_COUNT
        problem.expected = <int64_t>h.last_offset_delta + 1
        problem.found = h.record_count
        return ERR_INVALID_RECORD
    if h.is_control:  # rule 7
        problem.reason = REASON_CONTROL_FROM_CLIENT
        return ERR_INVALID_RECORD
    if h.producer_id >= 0 and h.base_sequence < 0:  # rule 8
        problem.reason = REASON_NO_SEQUENCE
        problem.found = h.base_sequence
        return ERR_INVALID_RECORD
    return ERR_NONE


# --- control batches (spec §8.3) ----------------------------------------------------------

cdef inline int read_varint(const unsigned char** cursor, const unsigned char* end, int max_bytes,
                            int64_t* value) noexcept nogil:
    """A zig-zag varint (max_bytes 5) or varlong (10) at *cursor, advancing it; -1 if it
    runs past `end` or is too long."""
    cdef uint64_t raw = 0
    cdef int shift = 0, _attempt
    cdef unsigned char byte
    for _attempt in range(max_bytes):
        if cursor[0] >= end:
            return -1
        byte = cursor[0][0]
        cursor[0] += 1
        raw |= <uint64_t>(byte & 0x7F) << shift
        if not (byte & 0x80):
            value[0] = <int64_t>(raw >> 1) ^ -<int64_t>(raw & 1)
            return 0
        shift += 7
    return -1


cdef int read_marker(const unsigned char* batch, const BatchHeader* h, int16_t* marker_type,
                     int32_t* coordinator_epoch, int64_t* timestamp) noexcept nogil:
    """The end-transaction marker in the first record of a control batch: 0 with
    marker_type ABORT (0) or COMMIT (1), or marker_type -1 for a batch with no records
    (emptied by compaction, a no-op); -1 if the first record is not a readable marker."""
    cdef const unsigned char* cursor = batch + RECORDS_OFFSET
    cdef const unsigned char* end = batch + h.batch_length + LOG_OVERHEAD
    cdef int64_t record_length, timestamp_delta, offset_delta, key_length, value_length
    cdef const unsigned char* record_end
    if cursor == end:
        marker_type[0] = -1
        return 0
    if h.compression != 0:
        return -1  # Kafka writes markers uncompressed; dedup does not decompress
    if read_varint(&cursor, end, 5, &record_length) or record_length < 0 or record_length > end - cursor:
        return -1
    record_end = cursor + record_length
    if record_end - cursor < 1:
        return -1
    cursor += 1  # record attributes (unused)
    if (read_varint(&cursor, record_end, 10, &timestamp_delta)
            or read_varint(&cursor, record_end, 5, &offset_delta)
            or read_varint(&cursor, record_end, 5, &key_length)
            or key_length < 4 or key_length > record_end - cursor):
        return -1
    # key: int16 version, int16 type (ABORT 0, COMMIT 1; the others are not end markers)
    marker_type[0] = <int16_t>dedup_load_be16(cursor + 2)
    if marker_type[0] != 0 and marker_type[0] != 1:
        return -1
    cursor += key_length
    if (read_varint(&cursor, record_end, 5, &value_length)
            or value_length < 6 or value_length > record_end - cursor):
        return -1
    # value: int16 version, int32 coordinator epoch
    coordinator_epoch[0] = <int32_t>dedup_load_be32(cursor + 2)
    timestamp[0] = (h.max_timestamp if h.timestamp_type
                    else <int64_t>(<uint64_t>h.base_timestamp + <uint64_t>timestamp_delta))
    return 0


# --- appends from bytes -------------------------------------------------------------------

ctypedef struct AppendColumns:
    int16_t* error_codes
    uint8_t* duplicate
    int64_t* base_offsets
    int64_t* last_offsets
    int64_t* timestamps
    uint8_t* reasons                        # Reason, for the error message
    int64_t* expected                       # detail of a refusal (see record_error/batch_error)
    int64_t* found
    int64_t* extra                          # a marker's own coordinator epoch, when refused
    int64_t* txn_first_offsets              # first offset of the transaction a marker ended, or -1
    uint8_t* aborted


cdef inline void refuse(AppendColumns* out, Py_ssize_t row, int code, uint8_t reason,
                        int64_t expected, int64_t found) noexcept nogil:
    out.error_codes[row] = <int16_t>code
    out.reasons[row] = reason
    out.expected[row] = expected
    out.found[row] = found


cdef int append_scanned(Table* t, unsigned char* data, const BatchHeader* headers, Py_ssize_t rows,
                        uint8_t origin, int64_t* log_end_offset, bint write_offsets,
                        bint write_epoch, int32_t leader_epoch, AppendColumns* out,
                        Py_ssize_t* done) except -1 nogil:
    """Append each scanned batch as Kafka's log does (spec §3.2), in order: the record-level
    rules, then offsets (the leader assigns them from *log_end_offset; a follower keeps the
    leader's, which must not go backwards), then the producer-state table (data batches
    through append_batch, COMMIT/ABORT markers through append_marker, batches without a
    producer id only move the map end offset). An accepted batch gets its base offset and
    leader epoch written into its header when asked (the CRC does not cover them).
    Rows [0, *done) have their verdicts in `out`; -1 only with MemoryError set."""
    cdef Py_ssize_t row
    cdef const BatchHeader* h
    cdef unsigned char* batch
    cdef Batch b
    cdef Verdict v
    cdef Problem problem
    cdef int code
    cdef bint leader = origin != ORIGIN_REPLICATION
    cdef int64_t base_offset, last_offset, timestamp
    cdef int16_t marker_type
    cdef int32_t coordinator_epoch
    for row in range(rows):
        h = &headers[row]
        batch = data + h.position
        out.error_codes[row] = ERR_NONE
        out.duplicate[row] = 0
        out.base_offsets[row] = -1
        out.last_offsets[row] = -1
        out.timestamps[row] = -1
        out.reasons[row] = REASON_NONE
        out.expected[row] = 0
        out.found[row] = 0
        out.extra[row] = 0
        out.txn_first_offsets[row] = -1
        out.aborted[row] = 0
        done[0] = row + 1
        code = check_batch(batch, h, origin, &problem)
        if code != ERR_NONE:
            refuse(out, row, code, problem.reason, problem.expected, problem.found)
            continue
        base_offset = log_end_offset[0] if leader else h.base_offset
        if base_offset < log_end_offset[0]:
            refuse(out, row, ERR_INVALID_RECORD, REASON_OFFSETS_BACKWARDS, log_end_offset[0], base_offset)
            continue
        if base_offset > INT64_MAX - (<int64_t>h.last_offset_delta + 1):
            refuse(out, row, ERR_INVALID_RECORD, REASON_OFFSET_OVERFLOW, 0, base_offset)
            continue
        last_offset = base_offset + h.last_offset_delta
        timestamp = h.max_timestamp
        if h.producer_id < 0:
            pass  # no producer id: no producer state (spec §2.1), only the map end offset moves
        elif h.is_control:
            if read_marker(batch, h, &marker_type, &coordinator_epoch, &timestamp) < 0:
                refuse(out, row, ERR_INVALID_RECORD, REASON_MARKER, 0, 0)
                continue
            if marker_type < 0:
                # Emptied by compaction: a no-op, but Kafka's update still puts the producer's
                # (unchanged or empty) entry in the table.
                table_find_or_insert(t, h.producer_id)
                t.generation += 1
            else:
                code = append_marker(t, h.producer_id, h.producer_epoch, coordinator_epoch, base_offset,
                                     timestamp, origin, &v)
                if code != ERR_NONE:
                    refuse(out, row, code, REASON_TABLE, v.current_coordinator_epoch, v.current_epoch)
                    out.extra[row] = coordinator_epoch
                    continue
                if v.current_txn_first_offset != NO_TXN:
                    out.txn_first_offsets[row] = v.current_txn_first_offset
                    out.aborted[row] = marker_type == 0
        else:
            b.producer_id = h.producer_id
            b.producer_epoch = h.producer_epoch
            b.base_sequence = h.base_sequence
            b.offset_delta = h.last_offset_delta
            b.last_sequence = (NO_SEQUENCE if h.base_sequence == NO_SEQUENCE
                               else increment_sequence(h.base_sequence, h.last_offset_delta))
            b.base_offset = base_offset
            b.max_timestamp = h.max_timestamp
            b.transactional = h.is_transactional
            b.origin = origin
            code = append_batch(t, &b, &v)
            if code != ERR_NONE:
                refuse(out, row, code, REASON_TABLE,
                       v.current_txn_first_offset if code == 48 else v.current_last_sequence,
                       v.current_epoch)
                continue
            if v.duplicate:
                out.duplicate[row] = 1
                out.base_offsets[row] = v.base_offset
                out.last_offsets[row] = v.last_offset
                out.timestamps[row] = v.timestamp
                continue
        out.base_offsets[row] = base_offset
        out.last_offsets[row] = last_offset
        out.timestamps[row] = timestamp
        log_end_offset[0] = last_offset + 1
        t.map_end_offset = last_offset + 1  # Kafka's updateMapEndOffset, for every batch (§3.2 step 6)
        if write_offsets:
            dedup_store_be64(batch + BASE_OFFSET_OFFSET, <uint64_t>base_offset)
        if write_epoch:
            dedup_store_be32(batch + PARTITION_LEADER_EPOCH_OFFSET, <uint32_t>leader_epoch)
    return 0


# --- Python boundary ----------------------------------------------------------------------

cdef enum:
    # check_one_batch releases the GIL for batches from this size: the CRC of 8 KiB takes about
    # 0.3 us here, three times what releasing and retaking an uncontended GIL costs (~0.1 us);
    # below it, releasing would slow the common 1 KiB produce request for no gain
    # (benchmarks/RESULTS.md, "Partitions on cores").
    CHECK_WITHOUT_GIL_FROM = 8192


from dedup._messages import batch_error, marker_error, record_error, scan_error
from dedup._types import BATCH_HEADER_DTYPE, BatchesAppendResult, CompletedTxn


def _check_layout():
    """BATCH_HEADER_DTYPE must describe BatchHeader byte for byte."""
    cdef BatchHeader h
    cdef char* base = <char*>&h
    offsets = {
        "position": <char*>&h.position - base, "base_offset": <char*>&h.base_offset - base,
        "base_timestamp": <char*>&h.base_timestamp - base, "max_timestamp": <char*>&h.max_timestamp - base,
        "producer_id": <char*>&h.producer_id - base, "batch_length": <char*>&h.batch_length - base,
        "partition_leader_epoch": <char*>&h.partition_leader_epoch - base, "crc": <char*>&h.crc - base,
        "last_offset_delta": <char*>&h.last_offset_delta - base, "base_sequence": <char*>&h.base_sequence - base,
        "record_count": <char*>&h.record_count - base, "attributes": <char*>&h.attributes - base,
        "producer_epoch": <char*>&h.producer_epoch - base, "magic": <char*>&h.magic - base,
        "compression": <char*>&h.compression - base, "timestamp_type": <char*>&h.timestamp_type - base,
        "is_transactional": <char*>&h.is_transactional - base, "is_control": <char*>&h.is_control - base,
    }
    expected = {name: BATCH_HEADER_DTYPE.fields[name][1] for name in BATCH_HEADER_DTYPE.names}
    if offsets != expected or sizeof(BatchHeader) != BATCH_HEADER_DTYPE.itemsize:
        raise ImportError(f"dedup._records: BatchHeader {offsets} ({sizeof(BatchHeader)} bytes) "
                          f"does not match BATCH_HEADER_DTYPE {expected}")


_check_layout()


cdef BatchHeader* header_rows(object headers) except? NULL:
    """The rows of a BATCH_HEADER_DTYPE array as C structs (NULL for none)."""
    cdef unsigned char[::1] raw
    if len(headers) == 0:
        return NULL
    raw = headers.view(np.uint8)
    return <BatchHeader*>&raw[0]


cdef object scan(const unsigned char[::1] view, object tail):
    """(headers, valid_bytes) of the complete batches of `view`, headers as a
    BATCH_HEADER_DTYPE array. Raises the error that ended the scan, with .valid_bytes and
    .headers set, unless it is a torn tail and `tail` is "ignore"."""
    cdef ScanStatus status
    cdef const unsigned char* data = start_of(view)
    cdef Py_ssize_t length = view.shape[0]
    if tail not in ("raise", "ignore"):
        raise ValueError(f"tail must be 'raise' or 'ignore', got {tail!r}")
    with nogil:
        scan_buffer(data, length, NULL, 0, &status)
    headers = np.zeros(status.batches, dtype=BATCH_HEADER_DTYPE)
    cdef BatchHeader* rows = header_rows(headers)
    with nogil:
        scan_buffer(data, length, rows, status.batches, &status)
    if status.end == SCAN_COMPLETE or (status.end == SCAN_TRUNCATED and tail == "ignore"):
        return headers, status.valid_bytes
    cdef Py_ssize_t left = length - status.valid_bytes
    cdef int64_t needed = 0
    if status.end == SCAN_TRUNCATED:
        if left >= LOG_OVERHEAD:
            needed = <int64_t><int32_t>dedup_load_be32(data + status.valid_bytes + BATCH_LENGTH_OFFSET) + LOG_OVERHEAD
        error = scan_error("truncated", status.batches, status.valid_bytes, 0, needed, left)
    elif status.end == SCAN_BAD_LENGTH:
        error = scan_error("length", status.batches, status.valid_bytes, status.found)
    else:
        error = scan_error("magic", status.batches, status.valid_bytes, status.found)
    error.valid_bytes = status.valid_bytes
    error.headers = headers
    raise error


def scan_batches(data, *, tail="raise"):
    """The header of every v2 batch in ``data``, without reading the records.

    ``data`` is any C-contiguous buffer (bytes, bytearray, memoryview, mmap, numpy), read
    in place. Returns a ``BATCH_HEADER_DTYPE`` array, one row per batch. A batch cut short
    at the end raises ``TruncatedBatchError`` (``tail="ignore"``: the complete batches are
    returned and the torn tail left out); a batch length below the minimum raises
    ``CorruptRecordError`` and a magic other than 2 ``InvalidRecordError``. Every such
    error carries ``.valid_bytes`` (where the last complete batch ends) and ``.headers``.
    """
    return scan(readable_bytes(data, "data"), tail)[0]


def crc_valid(data, headers=None):
    """Per batch, whether its stored CRC-32C matches its bytes (spec §8.5); ``headers``
    from :func:`scan_batches` of the same ``data`` (scanned here when None, torn tail
    ignored)."""
    cdef const unsigned char[::1] view = readable_bytes(data, "data")
    if headers is None:
        headers = scan(view, "ignore")[0]
    elif not isinstance(headers, np.ndarray) or headers.dtype != BATCH_HEADER_DTYPE or headers.ndim != 1:
        raise TypeError("headers must be a 1-D BATCH_HEADER_DTYPE array from scan_batches")
    headers = np.ascontiguousarray(headers)
    cdef Py_ssize_t row, rows = len(headers), length = view.shape[0]
    valid = np.zeros(rows, dtype=np.bool_)
    cdef uint8_t[::1] out
    cdef const unsigned char[::1] header_bytes
    if rows == 0:
        return valid
    header_bytes = headers.view(np.uint8)  # const: read-only headers are fine
    cdef const BatchHeader* rows_ptr = <const BatchHeader*>&header_bytes[0]
    out = valid.view(np.uint8)
    cdef const unsigned char* base = start_of(view)
    cdef int64_t position
    for row in range(rows):  # positions come from the caller: check them against the buffer
        position = rows_ptr[row].position
        # Compared without adding, so a position near 2^63 cannot wrap past the check.
        if (position < 0 or position > length or rows_ptr[row].batch_length < MIN_BATCH_LENGTH
                or rows_ptr[row].batch_length > length - position - LOG_OVERHEAD):
            raise ValueError(f"headers[{row}] does not describe a batch inside data "
                             f"(position {position}, batch_length {rows_ptr[row].batch_length})")
    with nogil:
        for row in range(rows):
            out[row] = dedup_crc32c(0, base + rows_ptr[row].position + ATTRIBUTES_OFFSET,
                                    rows_ptr[row].batch_length + LOG_OVERHEAD - ATTRIBUTES_OFFSET) == rows_ptr[row].crc
    return valid


cdef object make_table_error(int code, const BatchHeader* h, int64_t offset, int64_t expected,
                             int64_t found, int64_t extra):
    if h.is_control:
        return marker_error(code, h.producer_id, offset, h.producer_epoch, extra, found, expected)
    return batch_error(code, h.producer_id, offset, h.producer_epoch, h.base_sequence,
                       found, expected, expected)


def validate_batches(data, *, origin=Origin.CLIENT, tail="raise"):
    """scan_batches(), then the record-level rules on every batch (spec §2.1 rules 1, 3,
    5-8 for a client; the CRC and the offset delta for replication); raises the first
    failure (``CorruptRecordError`` code 2 or ``InvalidRecordError`` code 87, naming the
    batch and the field, expected versus found). Returns the headers."""
    cdef const unsigned char[::1] view = readable_bytes(data, "data")
    cdef uint8_t checked_origin = int(_args.origin(origin))
    headers, _ = scan(view, tail)
    cdef BatchHeader* rows = header_rows(headers)
    cdef const unsigned char* base = start_of(view)
    cdef Py_ssize_t row, rows_count = len(headers)
    cdef Problem problem
    cdef int code = 0
    with nogil:
        for row in range(rows_count):
            code = check_batch(base + rows[row].position, &rows[row], checked_origin, &problem)
            if code != ERR_NONE:
                break
    if code != ERR_NONE:
        raise record_error(row, rows[row].position, problem.reason, problem.expected, problem.found)
    return headers


def check_one_batch(data, *, origin=Origin.CLIENT):
    """A produce request's usual content, one batch (Kafka's ProduceRequest v3+ holds exactly
    one per partition), checked without building a header array.

    If ``data`` is exactly one whole v2 batch: the record-level rules of
    :func:`validate_batches` (the same errors) and the batch's fields ``(attributes,
    last_offset_delta, max_timestamp, producer_id, producer_epoch, base_sequence,
    record_count)``. None for anything else (no batch, several, torn, not v2): ask
    :func:`validate_batches`, which says what is wrong.
    """
    cdef const unsigned char[::1] view = readable_bytes(data, "data")
    cdef uint8_t checked_origin = ORIGIN_CLIENT if origin is _CLIENT else int(_args.origin(origin))
    cdef Py_ssize_t length = view.shape[0]
    if length < RECORDS_OFFSET:
        return None
    cdef const unsigned char* base = start_of(view)
    # One whole batch and nothing else: its length field covers the rest of the buffer.
    if <int64_t><int32_t>dedup_load_be32(base + BATCH_LENGTH_OFFSET) + LOG_OVERHEAD != length:
        return None
    if base[MAGIC_OFFSET] != MAGIC_V2:
        return None
    cdef BatchHeader h
    cdef Problem problem
    cdef int code
    read_header(base, 0, &h)
    if length >= CHECK_WITHOUT_GIL_FROM:
        with nogil:  # the CRC of a large batch: other partitions' threads run meanwhile
            code = check_batch(base, &h, checked_origin, &problem)
    else:
        code = check_batch(base, &h, checked_origin, &problem)
    if code != ERR_NONE:
        raise record_error(0, 0, problem.reason, problem.expected, problem.found)
    return (h.attributes, h.last_offset_delta, h.max_timestamp, h.producer_id, h.producer_epoch, h.base_sequence,
            h.record_count)


def append_batches(table, data, *, origin=Origin.CLIENT, log_end_offset=None,
                   partition_leader_epoch=None, write_offsets=False, tail="raise"):
    """Append a buffer of v2 batches to ``table`` as Kafka's log does, one verdict per batch.

    As leader (``origin`` CLIENT or COORDINATOR) accepted batches take consecutive offsets
    from ``log_end_offset``; as follower (REPLICATION) they keep the leader's offsets, which
    must not go below ``log_end_offset`` (default: the table's map end offset). Each batch
    is checked (the record-level rules of :func:`validate_batches`) and goes through the
    table: duplicates are answered with their original offsets, producer-state errors get
    their Kafka code, COMMIT/ABORT markers end transactions. The same semantics as calling
    ``table.append`` per batch; the loop runs in C without the GIL. With
    ``write_offsets=True`` (leader only; ``data`` must be writable) each accepted batch gets
    its base offset, and ``partition_leader_epoch`` if given, written into its header; the
    CRC does not cover them. Returns a :class:`BatchesAppendResult`.
    """
    if not isinstance(table, ProducerStateTable):
        raise TypeError(f"table must be a dedup._state.ProducerStateTable, got {type(table).__name__} "
                        f"(dedup.records.append_batches picks the twin that matches the table)")
    cdef ProducerStateTable live = <ProducerStateTable>table
    live._check_idle()
    cdef uint8_t append_origin = int(_args.origin(origin))
    cdef bint leader = append_origin != ORIGIN_REPLICATION
    cdef bint write = _args.flag("write_offsets", write_offsets)
    if write and not leader:
        raise ValueError("write_offsets is for leader appends: a follower keeps the leader's offsets")
    cdef bint write_epoch = partition_leader_epoch is not None
    cdef int32_t leader_epoch = -1
    if write_epoch:
        if not write:
            raise ValueError("partition_leader_epoch is written with the offsets: pass write_offsets=True")
        leader_epoch = _args.integer("partition_leader_epoch", partition_leader_epoch, -(1 << 31), (1 << 31) - 1,
                                     "an int32")
    cdef int64_t end
    if log_end_offset is None:
        if leader:
            raise TypeError("log_end_offset is required for a leader append (origin CLIENT or COORDINATOR)")
        live._check_idle()
        end = live.t.map_end_offset
    else:
        end = _args.offset("log_end_offset", log_end_offset)
        live._check_idle()  # again: the conversions ran Python code, where another thread may have started a call
        _args.not_backwards("log_end_offset", end, live.t.map_end_offset)

    cdef const unsigned char[::1] readable
    cdef unsigned char[::1] writable
    if write:
        writable = writable_bytes(data, "data")
        readable = writable
    else:
        readable = readable_bytes(data, "data")
    headers, valid_bytes = scan(readable, tail)
    cdef Py_ssize_t rows = len(headers), row
    cdef BatchHeader* scanned
    cdef uint64_t records = 0
    if leader and rows:
        # Every batch must fit below 2^63-1 with the log end offset (duplicates included).
        scanned = header_rows(headers)
        for row in range(rows):
            if scanned[row].last_offset_delta >= 0:
                records += <uint64_t>scanned[row].last_offset_delta + 1
        if records > <uint64_t>(INT64_MAX - end):
            _args.total_records_fit(end, np.array([records], dtype=np.uint64))  # raises, naming both

    # Three allocations for the eleven output columns (their rows are C-contiguous views):
    # a produce request of one or a few batches pays for allocations more than for the loop.
    wide = np.full((4, rows), -1, dtype=np.int64)
    firsts, lasts, times, txn_firsts = wide
    details = np.zeros((3, rows), dtype=np.int64)
    expected, found, extra = details
    flags = np.zeros((3, rows), dtype=np.uint8)
    duplicate_bytes, reasons, aborted = flags
    duplicate = duplicate_bytes.view(np.bool_)
    codes = np.zeros(rows, dtype=np.int16)
    if rows == 0:
        return BatchesAppendResult(headers, codes, duplicate, firsts, lasts, times, end, valid_bytes, {}, [])

    cdef int16_t[::1] code_view = codes
    cdef uint8_t[::1] dup_view = duplicate_bytes
    cdef int64_t[::1] first_view = firsts, last_view = lasts, time_view = times
    cdef uint8_t[::1] reason_view = reasons, aborted_view = aborted
    cdef int64_t[::1] expected_view = expected, found_view = found, extra_view = extra, txn_view = txn_firsts
    cdef AppendColumns out
    out.error_codes = &code_view[0]
    out.duplicate = &dup_view[0]
    out.base_offsets = &first_view[0]
    out.last_offsets = &last_view[0]
    out.timestamps = &time_view[0]
    out.reasons = &reason_view[0]
    out.expected = &expected_view[0]
    out.found = &found_view[0]
    out.extra = &extra_view[0]
    out.txn_first_offsets = &txn_view[0]
    out.aborted = &aborted_view[0]
    cdef BatchHeader* header_ptr = header_rows(headers)
    # Writes happen only through `writable` (write_offsets); otherwise the buffer is only read.
    cdef unsigned char* data_ptr = <unsigned char*>start_of(readable)
    cdef Py_ssize_t done = 0
    cdef int64_t first_end = end
    live._claim()  # here, not at the top: the conversions and allocations above may let another thread in
    try:
        if end < live.t.map_end_offset:  # a call of another thread ran since the check above
            _args.not_backwards("log_end_offset", end, live.t.map_end_offset)
        with nogil:
            append_scanned(&live.t, data_ptr, header_ptr, rows, append_origin, &end, write,
                           write_epoch, leader_epoch, &out, &done)
    finally:
        live._busy = 0

    errors = {}
    completed = []
    refused = np.flatnonzero(codes).tolist() if codes.any() else []
    if refused:
        # The offset each refused batch would have had (the leader's log end offset then).
        appended = (codes == 0) & ~duplicate
        ends = np.maximum.accumulate(np.where(appended, lasts + 1, first_end))
        tried = np.concatenate(([first_end], ends[: len(ends) - 1])) if leader else headers["base_offset"]
    for row in refused:
        if reasons[row] == REASON_TABLE:
            errors[row] = make_table_error(codes[row], &header_ptr[row], tried[row], expected[row], found[row],
                                           extra[row])
        else:
            errors[row] = record_error(row, header_ptr[row].position, reasons[row], expected[row], found[row])
    for row in (np.flatnonzero(txn_firsts >= 0).tolist() if (txn_firsts >= 0).any() else ()):
        completed.append(CompletedTxn(int(headers["producer_id"][row]), int(txn_firsts[row]), int(firsts[row]),
                                      bool(aborted[row])))
    return BatchesAppendResult(headers, codes, duplicate, firsts, lasts, times, end, valid_bytes, errors, completed)


# --- for dedup._testing (cdef: no Python name here) ---------------------------------------

cdef uint32_t crc32c_forced(int mode, uint32_t crc, const unsigned char* data, size_t length,
                            int* used) noexcept nogil:
    """The CRC-32C of data[0, length) from crc through this module's copy of kernels/crc32c.h
    in `mode` (0 the table, 1 the CRC instruction) or the best mode below it that the CPU has
    (*used); then back to the mode chosen at import."""
    cdef int chosen = dedup_crc32c_setup()
    used[0] = dedup_crc32c_use_hardware(mode)
    crc = dedup_crc32c(crc, data, length)
    dedup_crc32c_use_hardware(chosen)
    return crc


def _c_constants():
    """The enums of _records.pxd by name, for dedup._layout to check against its definitions."""
    return {
        "BASE_OFFSET_OFFSET": BASE_OFFSET_OFFSET, "BATCH_LENGTH_OFFSET": BATCH_LENGTH_OFFSET,
        "PARTITION_LEADER_EPOCH_OFFSET": PARTITION_LEADER_EPOCH_OFFSET, "MAGIC_OFFSET": MAGIC_OFFSET,
        "CRC_OFFSET": CRC_OFFSET, "ATTRIBUTES_OFFSET": ATTRIBUTES_OFFSET,
        "LAST_OFFSET_DELTA_OFFSET": LAST_OFFSET_DELTA_OFFSET, "BASE_TIMESTAMP_OFFSET": BASE_TIMESTAMP_OFFSET,
        "MAX_TIMESTAMP_OFFSET": MAX_TIMESTAMP_OFFSET, "PRODUCER_ID_OFFSET": PRODUCER_ID_OFFSET,
        "PRODUCER_EPOCH_OFFSET": PRODUCER_EPOCH_OFFSET, "BASE_SEQUENCE_OFFSET": BASE_SEQUENCE_OFFSET,
        "RECORDS_COUNT_OFFSET": RECORDS_COUNT_OFFSET, "RECORDS_OFFSET": RECORDS_OFFSET,
        "LOG_OVERHEAD": LOG_OVERHEAD, "MIN_BATCH_LENGTH": MIN_BATCH_LENGTH, "MAGIC_V2": MAGIC_V2,
        "ATTR_COMPRESSION_MASK": ATTR_COMPRESSION_MASK, "ATTR_TIMESTAMP_TYPE": ATTR_TIMESTAMP_TYPE,
        "ATTR_TRANSACTIONAL": ATTR_TRANSACTIONAL, "ATTR_CONTROL": ATTR_CONTROL,
        "ATTR_DELETE_HORIZON": ATTR_DELETE_HORIZON,
        "REASON_NONE": REASON_NONE, "REASON_BASE_OFFSET": REASON_BASE_OFFSET, "REASON_CRC": REASON_CRC,
        "REASON_RECORD_COUNT": REASON_RECORD_COUNT, "REASON_CONTROL_FROM_CLIENT": REASON_CONTROL_FROM_CLIENT,
        "REASON_NO_SEQUENCE": REASON_NO_SEQUENCE, "REASON_OFFSET_DELTA": REASON_OFFSET_DELTA,
        "REASON_OFFSETS_BACKWARDS": REASON_OFFSETS_BACKWARDS, "REASON_MARKER": REASON_MARKER,
        "REASON_TABLE": REASON_TABLE, "REASON_OFFSET_OVERFLOW": REASON_OFFSET_OVERFLOW,
    }


from dedup._layout import check_compiled

check_compiled(__name__, _c_constants())
