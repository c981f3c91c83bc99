"""The pure-Python twin of ``dedup._records``: v2 batch headers, the record-level rules and
appends of a buffer of batches, written for clarity (struct, one batch at a time).

Same functions, same results, same errors as the compiled module; the tests run both on the
same bytes. The byte layout is spec §8.1; the rules are spec §2.1 rules 1, 3, 5-8.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from .. import _args
from .._layout import (
    ATTR_COMPRESSION_MASK,
    ATTR_CONTROL,
    ATTR_TIMESTAMP_TYPE,
    ATTR_TRANSACTIONAL,
    ATTRIBUTES_OFFSET,
    BASE_OFFSET_OFFSET,
    BATCH_LENGTH_OFFSET,
    HEADER,
    LOG_OVERHEAD,
    MAGIC_OFFSET,
    MAGIC_V2,
    MIN_BATCH_LENGTH,
    PARTITION_LEADER_EPOCH_OFFSET,
    RECORDS_OFFSET,
    Reason,
    field_struct,
)
from .._messages import record_error, scan_error
from .._types import BATCH_HEADER_DTYPE, INT32_MAX, INT64_MAX, BatchesAppendResult, CompletedTxn, Origin
from ..errors import CorruptRecordError, InvalidRecordError, KafkaError
from .crc32c import crc32c
from .table import ProducerStateTable, verdict_columns

__all__ = ["append_batches", "crc_valid", "scan_batches", "validate_batches"]

_BATCH_LENGTH = field_struct("batch_length")
_MAGIC = field_struct("magic")
_BASE_OFFSET = field_struct("base_offset")
_PARTITION_LEADER_EPOCH = field_struct("partition_leader_epoch")


def _scan(view: memoryview, tail: str) -> tuple[np.ndarray, int]:
    if tail not in ("raise", "ignore"):
        raise ValueError(f"tail must be 'raise' or 'ignore', got {tail!r}")
    rows = []
    position, length, problem = 0, len(view), None
    while position < length:
        left = length - position
        if left < LOG_OVERHEAD:
            problem = ("truncated", 0, 0)
            break
        (batch_length,) = _BATCH_LENGTH.unpack_from(view, position + BATCH_LENGTH_OFFSET)
        if batch_length < MIN_BATCH_LENGTH:
            problem = ("length", batch_length, 0)
            break
        if batch_length > left - LOG_OVERHEAD:
            problem = ("truncated", 0, batch_length + LOG_OVERHEAD)
            break
        (magic,) = _MAGIC.unpack_from(view, position + MAGIC_OFFSET)
        if magic != MAGIC_V2:
            problem = ("magic", magic, 0)
            break
        fields = HEADER.unpack_from(view, position)
        attributes = fields[5]
        rows.append(
            (position, fields[0], fields[7], fields[8], fields[9], fields[1], fields[2], fields[4], fields[6],
             fields[11], fields[12], attributes, fields[10], fields[3], attributes & ATTR_COMPRESSION_MASK,
             bool(attributes & ATTR_TIMESTAMP_TYPE), bool(attributes & ATTR_TRANSACTIONAL),
             bool(attributes & ATTR_CONTROL))
        )
        position += batch_length + LOG_OVERHEAD
    headers = np.zeros(len(rows), dtype=BATCH_HEADER_DTYPE)  # zeroed padding: same bytes as compiled
    if rows:
        headers[:] = rows
    if problem is None or (problem[0] == "truncated" and tail == "ignore"):
        return headers, position
    kind, found, needed = problem
    error = scan_error(kind, len(rows), position, found, needed, length - position)
    error.valid_bytes = position  # type: ignore[attr-defined]
    error.headers = headers  # type: ignore[attr-defined]
    raise error


def scan_batches(data: Any, *, tail: str = "raise") -> np.ndarray:
    """The header of every v2 batch in ``data`` (see ``dedup._records.scan_batches``)."""
    with _args.viewing(data) as view:
        return _scan(view, tail)[0]


def _check(view: memoryview, header: Any, origin: Origin) -> tuple[int, int, int, int]:
    """(Kafka code, reason, expected, found) of the record-level rules, in Kafka's order."""
    position = int(header["position"])
    if origin == Origin.CLIENT and header["base_offset"] != 0:  # rule 3
        return InvalidRecordError.code, Reason.BASE_OFFSET, 0, int(header["base_offset"])
    end = position + int(header["batch_length"]) + LOG_OVERHEAD
    computed = crc32c(view[position + ATTRIBUTES_OFFSET : end])
    if computed != header["crc"]:  # rule 5
        return CorruptRecordError.code, Reason.CRC, computed, int(header["crc"])
    delta = int(header["last_offset_delta"])
    if delta < 0 or delta == INT32_MAX:  # offsets running backwards; a count past int32
        return CorruptRecordError.code, Reason.OFFSET_DELTA, 0, delta
    pid, sequence = int(header["producer_id"]), int(header["base_sequence"])
    if origin != Origin.CLIENT:
        if pid >= 0 and sequence < -1:
            return InvalidRecordError.code, Reason.NO_SEQUENCE, 0, sequence
        return 0, 0, 0, 0
    count = int(header["record_count"])
    if count <= 0 or delta + 1 != count:  # rule 6
        return InvalidRecordError.code, Reason.RECORD_COUNT, delta + 1, count
    if header["is_control"]:  # rule 7
        return InvalidRecordError.code, Reason.CONTROL_FROM_CLIENT, 0, 0
    if pid >= 0 and sequence < 0:  # rule 8
        return InvalidRecordError.code, Reason.NO_SEQUENCE, 0, sequence
    return 0, 0, 0, 0


def validate_batches(data: Any, *, origin: Origin = Origin.CLIENT, tail: str = "raise") -> np.ndarray:
    """scan_batches(), then the record-level rules; raises the first failure."""
    with _args.viewing(data) as view:
        origin = _args.origin(origin)
        headers, _ = _scan(view, tail)
        for index, header in enumerate(headers):
            code, reason, expected, found = _check(view, header, origin)
            if code:
                raise record_error(index, int(header["position"]), reason, expected, found)
    return headers


def check_one_batch(data: Any, *, origin: Origin = Origin.CLIENT) -> tuple[int, ...] | None:
    """The record-level rules and fields of ``data`` if it is exactly one whole v2 batch,
    else None (see ``dedup._records.check_one_batch``)."""
    with _args.viewing(data) as view:
        origin = _args.origin(origin)
        if len(view) < RECORDS_OFFSET:
            return None
        if _BATCH_LENGTH.unpack_from(view, BATCH_LENGTH_OFFSET)[0] + LOG_OVERHEAD != len(view):
            return None
        if view[MAGIC_OFFSET] != MAGIC_V2:
            return None
        header = _scan(view, "raise")[0][0]
        code, reason, expected, found = _check(view, header, origin)
        if code:
            raise record_error(0, 0, reason, expected, found)
        return tuple(
            int(header[name])
            for name in (
                "attributes",
                "last_offset_delta",
                "max_timestamp",
                "producer_id",
                "producer_epoch",
                "base_sequence",
                "record_count",
            )
        )


def _varint(view: memoryview, cursor: int, end: int, max_bytes: int) -> tuple[int, int]:
    """A zig-zag varint at ``cursor``: (value, next cursor); ValueError if unreadable."""
    raw = 0
    for i in range(max_bytes):
        if cursor >= end:
            raise ValueError("varint runs past the record")
        byte = view[cursor]
        cursor += 1
        raw |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return (raw >> 1) ^ -(raw & 1), cursor
    raise ValueError("varint too long")


def _wrap64(value: int) -> int:
    return ((value + (1 << 63)) % (1 << 64)) - (1 << 63)


def _marker(view: memoryview, header: Any) -> tuple[int, int, int] | None:
    """(type, coordinator epoch, timestamp) of a control batch's first record; type -1 for a
    batch with no records; None if the first record is not a readable COMMIT/ABORT marker."""
    position = int(header["position"])
    cursor, end = position + RECORDS_OFFSET, position + int(header["batch_length"]) + LOG_OVERHEAD
    if cursor == end:
        return -1, 0, int(header["max_timestamp"])
    if header["compression"] != 0:
        return None
    try:
        record_length, cursor = _varint(view, cursor, end, 5)
        if record_length < 0 or record_length > end - cursor:
            return None
        record_end = cursor + record_length
        if record_end - cursor < 1:
            return None
        cursor += 1  # record attributes
        timestamp_delta, cursor = _varint(view, cursor, record_end, 10)
        _offset_delta, cursor = _varint(view, cursor, record_end, 5)
        key_length, cursor = _varint(view, cursor, record_end, 5)
        if key_length < 4 or key_length > record_end - cursor:
            return None
        _key_version, marker_type = struct.unpack_from(">hh", view, cursor)
        if marker_type not in (0, 1):
            return None
        cursor += key_length
        value_length, cursor = _varint(view, cursor, record_end, 5)
        if value_length < 6 or value_length > record_end - cursor:
            return None
        _value_version, coordinator_epoch = struct.unpack_from(">hi", view, cursor)
    except ValueError:
        return None
    if header["timestamp_type"]:
        timestamp = int(header["max_timestamp"])
    else:
        timestamp = _wrap64(int(header["base_timestamp"]) + timestamp_delta)
    return marker_type, coordinator_epoch, timestamp


def append_batches(
    table: ProducerStateTable,
    data: Any,
    *,
    origin: Origin = Origin.CLIENT,
    log_end_offset: int | None = None,
    partition_leader_epoch: int | None = None,
    write_offsets: bool = False,
    tail: str = "raise",
) -> BatchesAppendResult:
    """Append a buffer of v2 batches to ``table`` as Kafka's log does (see
    ``dedup._records.append_batches``): per batch the record-level rules, then offsets, then
    the table's own ``append`` / ``append_marker``."""
    if not isinstance(table, ProducerStateTable):
        raise TypeError(
            f"table must be a dedup.reference.ProducerStateTable, got {type(table).__name__} "
            f"(dedup.records.append_batches picks the twin that matches the table)"
        )
    origin = _args.origin(origin)
    leader = origin != Origin.REPLICATION
    write = _args.flag("write_offsets", write_offsets)
    if write and not leader:
        raise ValueError("write_offsets is for leader appends: a follower keeps the leader's offsets")
    if partition_leader_epoch is not None:
        if not write:
            raise ValueError("partition_leader_epoch is written with the offsets: pass write_offsets=True")
        partition_leader_epoch = _args.integer(
            "partition_leader_epoch", partition_leader_epoch, -(1 << 31), (1 << 31) - 1, "an int32"
        )
    if log_end_offset is None:
        if leader:
            raise TypeError("log_end_offset is required for a leader append (origin CLIENT or COORDINATOR)")
        end = table.map_end_offset
    else:
        end = _args.offset("log_end_offset", log_end_offset)
        _args.not_backwards("log_end_offset", end, table.map_end_offset)
    with _args.viewing(data, writable=write) as view:
        headers, valid_bytes = _scan(view, tail)
        if leader and len(headers):
            deltas = headers["last_offset_delta"]
            _args.total_records_fit(end, deltas[deltas >= 0].astype(np.int64) + 1)

        rows = len(headers)
        codes, duplicate, firsts, lasts, times = verdict_columns(rows)
        errors: dict[int, KafkaError] = {}
        completed: list[CompletedTxn] = []
        for index, header in enumerate(headers):
            position = int(header["position"])
            code, reason, expected, found = _check(view, header, origin)
            if code:
                codes[index] = code
                errors[index] = record_error(index, position, reason, expected, found)
                continue
            delta = int(header["last_offset_delta"])
            base_offset = end if leader else int(header["base_offset"])
            if base_offset < end:
                codes[index] = InvalidRecordError.code
                errors[index] = record_error(index, position, Reason.OFFSETS_BACKWARDS, end, base_offset)
                continue
            if base_offset > INT64_MAX - (delta + 1):
                codes[index] = InvalidRecordError.code
                errors[index] = record_error(index, position, Reason.OFFSET_OVERFLOW, 0, base_offset)
                continue
            last_offset = base_offset + delta
            timestamp = int(header["max_timestamp"])
            pid = int(header["producer_id"])
            try:
                if pid < 0:
                    pass  # no producer id: no producer state (spec §2.1)
                elif header["is_control"]:
                    marker = _marker(view, header)
                    if marker is None:
                        codes[index] = InvalidRecordError.code
                        errors[index] = record_error(index, position, Reason.MARKER, 0, 0)
                        continue
                    marker_type, coordinator_epoch, timestamp = marker
                    if marker_type < 0:
                        # Emptied by compaction: a no-op, but Kafka's update still puts the
                        # producer's (unchanged or empty) entry in the table.
                        if pid not in table._producers:
                            table._admit(pid)  # (a capped table evicts first)
                        table._generation += 1
                    else:
                        ended = table.append_marker(
                            pid, int(header["producer_epoch"]), coordinator_epoch, base_offset,
                            commit=marker_type == 1, timestamp=timestamp, origin=origin,
                        )
                        if ended is not None:
                            completed.append(ended)
                else:
                    result = table.append(
                        pid, int(header["producer_epoch"]), int(header["base_sequence"]), delta + 1, base_offset,
                        max_timestamp=timestamp, origin=origin, transactional=bool(header["is_transactional"]),
                    )
                    if result.duplicate:
                        duplicate[index] = True
                        firsts[index], lasts[index] = result.base_offset, result.last_offset
                        times[index] = result.timestamp
                        continue
            except KafkaError as error:
                codes[index] = error.code
                errors[index] = error
                continue
            firsts[index], lasts[index], times[index] = base_offset, last_offset, timestamp
            end = last_offset + 1
            table.update_map_end_offset(end)  # Kafka's updateMapEndOffset, for every batch (§3.2 step 6)
            if write:
                _BASE_OFFSET.pack_into(view, position + BASE_OFFSET_OFFSET, base_offset)
                if partition_leader_epoch is not None:
                    at = position + PARTITION_LEADER_EPOCH_OFFSET
                    _PARTITION_LEADER_EPOCH.pack_into(view, at, partition_leader_epoch)
        return BatchesAppendResult(headers, codes, duplicate, firsts, lasts, times, end, valid_bytes, errors, completed)


def crc_valid(data: Any, headers: np.ndarray | None = None) -> np.ndarray:
    """Per batch, whether its stored CRC-32C matches its bytes (spec §8.5)."""
    with _args.viewing(data) as view:
        if headers is None:
            headers = _scan(view, "ignore")[0]
        elif not isinstance(headers, np.ndarray) or headers.dtype != BATCH_HEADER_DTYPE or headers.ndim != 1:
            raise TypeError("headers must be a 1-D BATCH_HEADER_DTYPE array from scan_batches")
        valid = np.zeros(len(headers), dtype=np.bool_)
        for row, header in enumerate(headers):
            position, batch_length = int(header["position"]), int(header["batch_length"])
            outside = position < 0 or position + batch_length + LOG_OVERHEAD > len(view)
            if outside or batch_length < MIN_BATCH_LENGTH:
                raise ValueError(
                    f"headers[{row}] does not describe a batch inside data "
                    f"(position {position}, batch_length {batch_length})"
                )
            start, end = position + ATTRIBUTES_OFFSET, position + batch_length + LOG_OVERHEAD
            valid[row] = crc32c(view[start:end]) == header["crc"]  # no named slice: the view is released
        return valid
