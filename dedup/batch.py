"""Kafka's v2 record batches at record level (spec §8): built from records and read back.

For the record-log layer, the producer model and the demo, where whole records matter (the
table only ever needs headers: see :mod:`dedup.records`). Written for clarity, not speed, but
linear in the size of the data.

- :func:`encode_batch` builds one uncompressed data batch, as a Java producer's
  MemoryRecordsBuilder writes it (CreateTime, offset deltas 0..n-1, timestamp deltas from
  the first record's timestamp).
- :func:`encode_marker` builds a COMMIT or ABORT marker, as the broker's
  ``MemoryRecords.withEndTransactionMarker`` writes it.
- :func:`decode_records` reads every record of a buffer of batches, checking framing (via
  :func:`dedup.records.scan_batches`), CRC-32C and every record field.
- :func:`encode_varint` / :func:`encode_varlong` / :func:`decode_varint` /
  :func:`decode_varlong` are the zig-zag varints of Kafka's ``ByteUtils``.

Example::

    >>> data = encode_batch([b"v"], producer_id=1000, producer_epoch=5, base_sequence=0, timestamp=7)
    >>> decode_records(data)
    [Record(offset=0, timestamp=7, key=None, value=b'v', headers=())]
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from . import _args
from ._layout import (
    ATTR_CONTROL,
    ATTR_TRANSACTIONAL,
    ATTRIBUTES_OFFSET,
    COMPRESSION_NAMES,
    CRC_OFFSET,
    HEADER,
    LOG_OVERHEAD,
    MAGIC_V2,
    RECORDS_OFFSET,
    field_struct,
)
from ._types import INT16_MAX, INT32_MAX, INT64_MAX, INT64_MIN
from .errors import CorruptRecordError, KafkaError
from .records import crc32c, crc_valid, scan_batches

__all__ = [
    "Record",
    "decode_records",
    "decode_varint",
    "decode_varlong",
    "encode_batch",
    "encode_marker",
    "encode_varint",
    "encode_varlong",
]

# --- layout: the batch header is dedup._layout's (spec §8.1, §8.2) --------------------------

_CRC = field_struct("crc")
_NO_TIMESTAMP = -1

# Control record keys and values (spec §8.3): version 0 + type; version 0 + coordinator epoch.
_CONTROL_KEY = struct.Struct(">hh")
_MARKER_VALUE = struct.Struct(">hi")
_ABORT, _COMMIT = 0, 1

_BYTES_LIKE = (bytes, bytearray, memoryview)


class Record(NamedTuple):
    """One record of a v2 batch, with Kafka's absolute offset and timestamp.

    ``offset`` is the batch's base offset plus the record's offset delta; ``timestamp`` its
    base timestamp plus the timestamp delta (the batch's max timestamp for LogAppendTime).
    ``key`` and ``value`` are None for Kafka's null; ``headers`` are (key, value) pairs in
    wire order, keys decoded from UTF-8, values None for null.
    """

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


# --- varints (Kafka's ByteUtils) ----------------------------------------------------------------


def _zigzag_bytes(raw: int) -> bytes:
    """The unsigned ``raw`` as 7-bit groups, least significant first, the high bit meaning
    "more follow"."""
    out = bytearray()
    while raw >= 0x80:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


def encode_varint(value: int) -> bytes:
    """An int32 as Kafka's zig-zag varint (ByteUtils.writeVarint): 1 to 5 bytes, small
    magnitudes of either sign short (0 → 00, -1 → 01, 1 → 02, -64 → 7f, 64 → 8001).

    ``TypeError`` unless an int, ``ValueError`` outside int32.
    """
    value = _integer("value", value, -(1 << 31), INT32_MAX, "an int32")
    return _zigzag_bytes(((value << 1) ^ (value >> 31)) & 0xFFFFFFFF)


def encode_varlong(value: int) -> bytes:
    """An int64 as Kafka's zig-zag varlong (ByteUtils.writeVarlong): 1 to 10 bytes.

    ``TypeError`` unless an int, ``ValueError`` outside int64.
    """
    value = _integer("value", value, INT64_MIN, INT64_MAX, "an int64")
    return _zigzag_bytes(((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF)


class _Malformed(Exception):
    """A field that cannot be read; the message is "field: expected ..., found ..." and the
    caller adds where (batch, record) it is."""


def _read_varint(buf: bytes, cursor: int, end: int, field: str, bits: int, scope: str) -> tuple[int, int]:
    """The zig-zag varint (bits 32) or varlong (bits 64) at ``cursor``, reading no further
    than ``end``: (value, cursor after it).

    Stricter than Kafka's reader, which drops the bits past 32 or 64: those are corruption.
    """
    limit = 5 if bits == 32 else 10
    raw = shift = 0
    start = cursor
    while True:
        if cursor >= end:
            raise _Malformed(
                f"{field}: expected a varint, found {cursor - start} byte(s) with the continuation bit "
                f"and then the end of the {scope}"
            )
        if cursor - start == limit:
            raise _Malformed(f"{field}: expected a varint of at most {limit} bytes, found a longer one")
        byte = buf[cursor]
        cursor += 1
        raw |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    if raw >> bits:
        raise _Malformed(f"{field}: expected a varint that fits in {bits} bits, found one of {raw.bit_length()} bits")
    return (raw >> 1) ^ -(raw & 1), cursor


def _decode_one(data: Any, position: int, bits: int) -> tuple[int, int]:
    position = _integer("position", position, 0, INT64_MAX, "0 or more")
    with _args.viewing(data) as view:
        # At most 10 bytes are read: copy those, not the buffer.
        chunk = bytes(view[position : position + 10])
    try:
        value, used = _read_varint(chunk, 0, len(chunk), "varint" if bits == 32 else "varlong", bits, "data")
    except _Malformed as problem:
        raise CorruptRecordError(f"at position {position}: {problem}") from None
    return value, position + used


def decode_varint(data: Any, position: int = 0) -> tuple[int, int]:
    """The zig-zag varint (int32) at ``position`` of ``data``: (value, position after it).

    ``CorruptRecordError`` if it runs past the data, is longer than 5 bytes or does not fit
    in 32 bits.
    """
    return _decode_one(data, position, 32)


def decode_varlong(data: Any, position: int = 0) -> tuple[int, int]:
    """The zig-zag varlong (int64) at ``position`` of ``data``: (value, position after it).

    ``CorruptRecordError`` if it runs past the data, is longer than 10 bytes or does not
    fit in 64 bits.
    """
    return _decode_one(data, position, 64)


# --- arguments ----------------------------------------------------------------------------------


def _integer(name: str, value: Any, low: int, high: int, what: str) -> int:
    """``value`` as an int in ``[low, high]`` (a bool is not an integer here)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be {what}, got {value}")
    return int(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def _column(name: str, value: Any) -> list[Any]:
    """A per-record argument as a list (one item per record)."""
    if isinstance(value, (str, *_BYTES_LIKE)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a sequence with one item per record, got {type(value).__name__}")
    return list(value)


def _nullable_bytes(name: str, value: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, _BYTES_LIKE):
        raise TypeError(f"{name} must be bytes, bytearray, memoryview or None, got {type(value).__name__}")
    return bytes(value)


def _timestamp(name: str, value: Any) -> int:
    # Kafka's producer refuses negative timestamps and -1 is NO_TIMESTAMP; below -1 the
    # Java builder's max timestamp (which starts at -1) would no longer be the maximum.
    return _integer(name, value, _NO_TIMESTAMP, INT64_MAX, "-1 (no timestamp) or a timestamp in [0, 2^63-1]")


def _record_headers(name: str, value: Any) -> list[tuple[bytes, bytes | None]]:
    """One record's headers as (UTF-8 key, value) pairs."""
    pairs = []
    for index, pair in enumerate(_column(name, value)):
        where = f"{name}[{index}]"
        if isinstance(pair, (str, *_BYTES_LIKE)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise TypeError(f"{where} must be a (str, bytes or None) pair, got {pair!r}")
        key, header_value = pair
        if not isinstance(key, str):
            raise TypeError(f"{where} key must be a str (Kafka's header keys are strings), got {type(key).__name__}")
        try:
            encoded = key.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(f"{where} key is not encodable as UTF-8: {error.reason}") from None
        pairs.append((encoded, _nullable_bytes(f"{where} value", header_value)))
    return pairs


# --- encoding -------------------------------------------------------------------------------------


def _length_prefixed(value: bytes | None) -> bytes:
    return b"\x01" if value is None else encode_varint(len(value)) + value  # 01: zig-zag -1, null


def _record(
    timestamp_delta: int,
    offset_delta: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[bytes, bytes | None]],
) -> bytes:
    """One record (spec §8.3), its length varint first."""
    parts = [b"\x00", encode_varlong(timestamp_delta), encode_varint(offset_delta)]  # attributes: unused
    parts += [_length_prefixed(key), _length_prefixed(value), encode_varint(len(headers))]
    for header_key, header_value in headers:
        parts += [_length_prefixed(header_key), _length_prefixed(header_value)]
    body = b"".join(parts)
    return encode_varint(len(body)) + body


def _wrap64(value: int) -> int:
    """``value`` wrapped into int64, as Java's long arithmetic does."""
    return ((value + (1 << 63)) & 0xFFFFFFFFFFFFFFFF) - (1 << 63)


def _batch(
    records: Sequence[tuple[int, bytes | None, bytes | None, Sequence[tuple[bytes, bytes | None]]]],
    *,
    attributes: int,
    base_offset: int,
    partition_leader_epoch: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
) -> bytes:
    """A v2 batch of (timestamp, key, value, headers) records, offset deltas 0..n-1."""
    base_timestamp = records[0][0]  # the first record's, as Kafka's builder does
    max_timestamp = _NO_TIMESTAMP  # Kafka's builder starts here; timestamps are all >= -1
    body = []
    for offset_delta, (timestamp, key, value, headers) in enumerate(records):
        max_timestamp = max(max_timestamp, timestamp)
        # Java's long subtraction: -1 then 2^63-1 wraps, and the reader's addition wraps back.
        body.append(_record(_wrap64(timestamp - base_timestamp), offset_delta, key, value, headers))
    records_bytes = b"".join(body)
    batch_length = RECORDS_OFFSET - LOG_OVERHEAD + len(records_bytes)
    if batch_length > INT32_MAX:
        raise ValueError(
            f"the batch would be {batch_length + LOG_OVERHEAD} bytes: a v2 batch holds at most "
            f"2^31-1 bytes after its length field"
        )
    header = bytearray(
        HEADER.pack(
            base_offset, batch_length, partition_leader_epoch, MAGIC_V2, 0, attributes, len(records) - 1,
            base_timestamp, max_timestamp, producer_id, producer_epoch, base_sequence, len(records),
        )
    )  # fmt: skip
    crc = crc32c(bytes(header[ATTRIBUTES_OFFSET:]) + records_bytes)
    _CRC.pack_into(header, CRC_OFFSET, crc)
    return bytes(header) + records_bytes


def encode_batch(
    values: Iterable[bytes | bytearray | memoryview | None],
    *,
    keys: Iterable[bytes | bytearray | memoryview | None] | None = None,
    headers: Iterable[Iterable[tuple[str, bytes | bytearray | memoryview | None]]] | None = None,
    timestamp: int | None = None,
    timestamps: Iterable[int] | None = None,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    base_offset: int = 0,
    transactional: bool = False,
    partition_leader_epoch: int = -1,
) -> bytes:
    """One uncompressed v2 data batch holding one record per item of ``values``.

    ``keys`` and ``headers`` (each record's list of (str, bytes or None) pairs) have one item
    per record, or are None (null keys, no headers). Exactly one of ``timestamp`` (every
    record's create time) and ``timestamps`` (one per record, in any order: deltas may be
    negative) is required; each is -1 (NO_TIMESTAMP) or in [0, 2^63-1]. The batch is as a
    Java producer's MemoryRecordsBuilder writes it: CreateTime, offset deltas 0..n-1, base
    timestamp the first record's, max timestamp the largest, CRC-32C over attributes..end.

    Producer state follows Kafka's rules: without a producer id (-1, the default) the epoch
    and base sequence must be -1 too and the batch cannot be transactional; with one
    (0..2^63-1) the epoch must be in [0, 32767] and the base sequence in [0, 2^31-1]
    (spec §2.1 rule 8). Sequences may run past 2^31-1: the records after it are numbered
    from 0 again, as Kafka's incrementSequence wraps (spec §8.4). ``base_offset`` is 0 from a
    client (a leader assigns offsets) and the last offset must fit in int64;
    ``partition_leader_epoch`` is -1 from a producer, else the leader's epoch (0..2^31-1).

    ``TypeError`` for an argument of the wrong type, ``ValueError`` for one out of range or
    an empty ``values`` (Kafka refuses a batch with no records), naming the argument.
    """
    value_list = [_nullable_bytes(f"values[{i}]", value) for i, value in enumerate(_column("values", values))]
    count = len(value_list)
    if count == 0:
        raise ValueError("values must hold at least one record: Kafka refuses a batch with no records")
    if keys is None:
        key_list: list[bytes | None] = [None] * count
    else:
        key_list = [_nullable_bytes(f"keys[{i}]", key) for i, key in enumerate(_column("keys", keys))]
        if len(key_list) != count:
            raise ValueError(f"keys must have one item per record ({count}), got {len(key_list)}")
    if headers is None:
        header_list: list[list[tuple[bytes, bytes | None]]] = [[]] * count
    else:
        header_list = [_record_headers(f"headers[{i}]", pairs) for i, pairs in enumerate(_column("headers", headers))]
        if len(header_list) != count:
            raise ValueError(f"headers must have one item per record ({count}), got {len(header_list)}")
    if (timestamp is None) == (timestamps is None):
        raise TypeError(
            "encode_batch needs exactly one of timestamp= (every record's) and timestamps= (one per record)"
        )
    if timestamps is None:
        time_list = [_timestamp("timestamp", timestamp)] * count
    else:
        time_list = [_timestamp(f"timestamps[{i}]", stamp) for i, stamp in enumerate(_column("timestamps", timestamps))]
        if len(time_list) != count:
            raise ValueError(f"timestamps must have one item per record ({count}), got {len(time_list)}")

    producer_id = _integer("producer_id", producer_id, -1, INT64_MAX, "-1 (none) or in [0, 2^63-1]")
    producer_epoch = _integer("producer_epoch", producer_epoch, -1, INT16_MAX, "-1 (none) or in [0, 32767]")
    base_sequence = _integer("base_sequence", base_sequence, -1, INT32_MAX, "-1 (none) or in [0, 2^31-1]")
    transactional = _flag("transactional", transactional)
    if producer_id == -1:
        if producer_epoch != -1 or base_sequence != -1:
            raise ValueError(
                f"producer_epoch and base_sequence must be -1 without a producer id, got {producer_epoch} "
                f"and {base_sequence}"
            )
        if transactional:
            raise ValueError("a transactional batch needs a producer_id (Kafka: no transactional messages without one)")
    else:
        if producer_epoch == -1:
            raise ValueError(f"producer_epoch must be in [0, 32767] with producer_id {producer_id}, got -1")
        if base_sequence == -1:
            raise ValueError(f"base_sequence must be in [0, 2^31-1] with producer_id {producer_id}, got -1 (rule 8)")
    base_offset = _integer("base_offset", base_offset, 0, INT64_MAX, "in [0, 2^63-1]")
    if base_offset > INT64_MAX - (count - 1):
        raise ValueError(f"base_offset {base_offset} + {count} records would put the last offset past 2^63-1")
    partition_leader_epoch = _integer(
        "partition_leader_epoch", partition_leader_epoch, -1, INT32_MAX, "-1 (none) or in [0, 2^31-1]"
    )
    return _batch(
        list(zip(time_list, key_list, value_list, header_list, strict=True)),
        attributes=ATTR_TRANSACTIONAL if transactional else 0,
        base_offset=base_offset,
        partition_leader_epoch=partition_leader_epoch,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
    )


def encode_marker(
    *,
    producer_id: int,
    producer_epoch: int,
    commit: bool,
    coordinator_epoch: int,
    timestamp: int,
    base_offset: int = 0,
    partition_leader_epoch: int = -1,
) -> bytes:
    """A COMMIT (``commit=True``) or ABORT transaction marker, as the broker writes it
    (``MemoryRecords.withEndTransactionMarker``, spec §8.3): a transactional control batch
    with base sequence -1, CreateTime, and one control record whose key is version 0 + type
    (COMMIT 1, ABORT 0) and whose value is version 0 + ``coordinator_epoch``; the record's
    timestamp is ``timestamp`` (the writer's clock).

    ``producer_id`` in [0, 2^63-1], ``producer_epoch`` in [0, 32767], ``coordinator_epoch``
    in [0, 2^31-1], ``timestamp`` -1 or in [0, 2^63-1], ``base_offset`` in [0, 2^63-1],
    ``partition_leader_epoch`` -1 or in [0, 2^31-1]; ``TypeError``/``ValueError`` otherwise.
    """
    producer_id = _integer("producer_id", producer_id, 0, INT64_MAX, "in [0, 2^63-1]")
    producer_epoch = _integer("producer_epoch", producer_epoch, 0, INT16_MAX, "in [0, 32767]")
    commit = _flag("commit", commit)
    coordinator_epoch = _integer("coordinator_epoch", coordinator_epoch, 0, INT32_MAX, "in [0, 2^31-1]")
    timestamp = _timestamp("timestamp", timestamp)
    base_offset = _integer("base_offset", base_offset, 0, INT64_MAX, "in [0, 2^63-1]")
    partition_leader_epoch = _integer(
        "partition_leader_epoch", partition_leader_epoch, -1, INT32_MAX, "-1 (none) or in [0, 2^31-1]"
    )
    key = _CONTROL_KEY.pack(0, _COMMIT if commit else _ABORT)
    value = _MARKER_VALUE.pack(0, coordinator_epoch)
    return _batch(
        [(timestamp, key, value, ())],
        attributes=ATTR_TRANSACTIONAL | ATTR_CONTROL,
        base_offset=base_offset,
        partition_leader_epoch=partition_leader_epoch,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=-1,
    )


# --- decoding -------------------------------------------------------------------------------------


def _sized(buf: bytes, cursor: int, end: int, field: str, nullable: bool) -> tuple[bytes | None, int]:
    """A length-prefixed field of a record: (bytes, or None for a null, cursor after it)."""
    length, cursor = _read_varint(buf, cursor, end, f"{field} length", 32, "record")
    if length == -1 and nullable:
        return None, cursor
    if not (-1 if nullable else 0) <= length <= end - cursor:
        # Kafka's reader takes any negative length as null; only -1 is, and only where
        # the field may be null.
        low = "-1 (null)" if nullable else "0 (a header key is a non-null string)"
        raise _Malformed(
            f"{field} length: expected {low} to {end - cursor} (the bytes left in the record), found {length}"
        )
    return buf[cursor : cursor + length], cursor + length


def _read_record(
    buf: bytes, cursor: int, end: int, base_offset: int, base_timestamp: int, log_append_time: int | None
) -> tuple[Record, int]:
    """The record at ``cursor`` (its length varint first): (record, cursor after it)."""
    length, cursor = _read_varint(buf, cursor, end, "length", 32, "batch")
    if not 0 <= length <= end - cursor:
        raise _Malformed(f"length: expected 0 to {end - cursor} (the bytes left in the batch), found {length}")
    start, record_end = cursor, cursor + length
    if cursor == record_end:
        raise _Malformed("attributes: expected 1 byte, found the end of the record")
    cursor += 1  # record attributes: unused by Kafka
    timestamp_delta, cursor = _read_varint(buf, cursor, record_end, "timestamp_delta", 64, "record")
    offset_delta, cursor = _read_varint(buf, cursor, record_end, "offset_delta", 32, "record")
    key, cursor = _sized(buf, cursor, record_end, "key", nullable=True)
    value, cursor = _sized(buf, cursor, record_end, "value", nullable=True)
    header_count, cursor = _read_varint(buf, cursor, record_end, "header_count", 32, "record")
    if header_count < 0:
        raise _Malformed(f"header_count: expected 0 or more, found {header_count}")
    headers = []
    for index in range(header_count):  # each header takes 2 bytes or more: bounded by the record
        raw_key, cursor = _sized(buf, cursor, record_end, f"header {index} key", nullable=False)
        assert raw_key is not None  # not nullable
        try:
            header_key = raw_key.decode("utf-8")
        except UnicodeDecodeError as error:
            bad = raw_key[error.start : error.end].hex()
            raise _Malformed(
                f"header {index} key: expected UTF-8 (Kafka's header keys are strings), found bytes {bad} "
                f"at byte {error.start}: {error.reason}"
            ) from None
        header_value, cursor = _sized(buf, cursor, record_end, f"header {index} value", nullable=True)
        headers.append((header_key, header_value))
    if cursor != record_end:
        raise _Malformed(f"length: expected the record's fields to take {length} bytes, found {cursor - start}")
    offset = base_offset + offset_delta
    if not INT64_MIN <= offset <= INT64_MAX:
        raise _Malformed(f"offset_delta: expected base_offset + offset_delta within int64, found {offset}")
    if log_append_time is None:
        timestamp = _wrap64(base_timestamp + timestamp_delta)  # Java's long addition
    else:
        timestamp = log_append_time
    return Record(offset, timestamp, key, value, tuple(headers)), record_end


def _batch_records(buf: bytes, where: str, start: int, fields: dict[str, int]) -> list[Record]:
    """Every record of one uncompressed batch; ``buf`` is its records section, which begins
    at byte ``start`` of the data."""
    count = fields["record_count"]
    if count < 0:
        raise CorruptRecordError(f"{where}: record_count: expected 0 or more, found {count}")
    log_append_time = fields["max_timestamp"] if fields["timestamp_type"] else None
    records: list[Record] = []
    cursor, end = 0, len(buf)
    while len(records) < count:  # a huge count ends with the bytes: every record takes some
        if cursor == end:
            raise CorruptRecordError(f"{where}: record_count: expected {count} records, found {len(records)}")
        try:
            record, cursor = _read_record(
                buf, cursor, end, fields["base_offset"], fields["base_timestamp"], log_append_time
            )
        except _Malformed as problem:
            raise CorruptRecordError(
                f"{where}: record {len(records)} at position {start + cursor}: {problem}"
            ) from None
        records.append(record)
    if cursor != end:
        raise CorruptRecordError(
            f"{where}: record_count: expected {count} records to fill the batch, found {end - cursor} "
            f"more bytes after them"
        )
    return records


_COLUMNS = (
    "position", "batch_length", "crc", "compression", "is_control", "record_count", "base_offset",
    "base_timestamp", "max_timestamp", "timestamp_type",
)  # fmt: skip


def decode_records(data: Any, *, control: bool = False) -> list[Record]:
    """Every record of every v2 batch in ``data``, in order, as a list of :class:`Record`.

    ``data`` is any C-contiguous buffer (bytes, bytearray, memoryview, mmap, numpy) of
    whole batches; it is read, never kept (the list holds copies, so an mmap can be closed
    after). Control batches (transaction markers) are skipped unless ``control=True``, which
    returns their records too (key and value as raw bytes).

    Each batch's framing is checked by :func:`dedup.records.scan_batches` and its CRC-32C by
    :func:`dedup.records.crc_valid`, skipped control batches included. Offset deltas are
    taken as written (compaction leaves gaps; Kafka's reader does not check them either).

    Bad bytes raise :class:`~dedup.errors.CorruptRecordError` (or its subclass
    :class:`~dedup.errors.TruncatedBatchError` for a torn tail, from the scan), naming the
    batch index and position, the record and the field, expected versus found: a bad CRC,
    a varint that runs past its record, is too long or overflows, a length that runs past
    the record or batch, a record count that disagrees with the records, a header key that
    is not UTF-8, a compressed batch ("compressed batches are not decoded"), or a magic
    other than 2 (which scan_batches reports as InvalidRecordError: a v0/v1 message set is
    not read here). A buffer that is not bytes-like is a ``TypeError``.
    """
    control = _flag("control", control)
    with _args.viewing(data) as view:
        try:
            headers = scan_batches(view)
        except KafkaError as error:
            if isinstance(error, CorruptRecordError):
                raise
            corrupt = CorruptRecordError(f"{error}: decode_records reads v2 batches only")
            corrupt.valid_bytes = error.valid_bytes  # type: ignore[attr-defined]
            corrupt.headers = error.headers  # type: ignore[attr-defined]
            raise corrupt from error
        valid = crc_valid(view, headers).tolist()
        columns = {name: headers[name].tolist() for name in _COLUMNS}
        records: list[Record] = []
        for index in range(len(headers)):
            fields = {name: int(column[index]) for name, column in columns.items()}
            position = fields["position"]
            where = f"batch {index} at position {position}"
            end = position + fields["batch_length"] + LOG_OVERHEAD
            if not valid[index]:
                computed = crc32c(view[position + ATTRIBUTES_OFFSET : end])
                raise CorruptRecordError(
                    f"{where}: crc: expected {computed} (computed), found {fields['crc']} (stored): Record is corrupt"
                )
            if fields["is_control"] and not control:
                continue
            compression = fields["compression"]
            if compression:
                name = COMPRESSION_NAMES[compression] if compression < len(COMPRESSION_NAMES) else "unknown"
                raise CorruptRecordError(
                    f"{where}: compression: expected 0 (none), found {compression} ({name}): "
                    f"compressed batches are not decoded"
                )
            start = position + RECORDS_OFFSET
            records += _batch_records(bytes(view[start:end]), where, start, fields)
    return records
