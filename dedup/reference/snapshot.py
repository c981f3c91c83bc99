"""Producer-state snapshots in pure Python: the twin of the compiled codec (``dedup._snapshot``).

Written for clarity with :mod:`struct`; it reads and writes :class:`dedup.reference.ProducerStateTable`
(its ``_producers`` dict of ``_Entry``, ``_map_end_offset`` and ``_window``). Both twins
write the same bytes for the same state, validate in the same order and raise
:class:`~dedup.errors.CorruptSnapshotError` with the same message (tests/formats/test_snapshot.py and
tests/formats/test_snapshot_fuzz.py hold them to it). The public API is :mod:`dedup.snapshot`.

Two formats, both big-endian with fixed widths.

**Kafka's, version 1** (spec §4.2-4.4), byte for byte what a broker writes::

    0   int16  version = 1
    2   uint32 crc = CRC-32C of bytes [6, end)
    6   int32  count
    10  count x 46-byte entries: ProducerId int64, Epoch int16, LastSequence int32,
        LastOffset int64, OffsetDelta int32, Timestamp int64, CoordinatorEpoch int32,
        CurrentTxnFirstOffset int64

It keeps only each producer's last batch, so after a reload the duplicate window is one batch.

**dedup's full-window format** keeps every retained batch. Version 2 is written; version 1
is still read. Both start with the same header::

    0   4 bytes magic b"DDPS"
    4   int16  version (1 or 2)
    6   int16  window W (1..255)
    8   int64  map_end_offset (>= 0)
    16  int32  count (>= 0)

Version 2: count fixed-width records of R = 55 + 12 x (W - 1) bytes, then the escaped values::

    20               count records: producer_id int64, producer_epoch int16, coordinator_epoch int32,
                     last_timestamp int64, current_txn_first_offset int64 (-1: none), batch_count uint8
                     (0..W), the newest batch {last_sequence int32, offset_delta int32, last_offset int64,
                     timestamp int64} (zeros without one), then W - 1 slots of 12 bytes for the older
                     batches, oldest first (batch_count - 1 used, the rest zeros), each relative to the
                     newest batch N: offset gap uint32 (N.last_offset - last_offset), timestamp gap
                     int32 (N.timestamp - timestamp), sequence gap uint16 (N.last_sequence -
                     last_sequence, modulo 2^32), offset_delta uint16
    20 + R x count   escapes x int64: the values that did not fit their slot field, in file order
    end-8  int32  escapes (>= 0)
    end-4  uint32 crc = CRC-32C of bytes [0, end-4)

A slot field that does not fit holds its escape value (0xFFFFFFFF, -2^31, 0xFFFF, 0xFFFF) and the
value itself is the next escaped value. Gaps wrap (64 bits for offsets and timestamps, 32 for
sequences), so a field decodes to exactly the value written; an escaped sequence or offset delta
is the low 32 bits of its int64.

Version 1: count entries of variable length, then the crc::

    20  count entries: producer_id int64, producer_epoch int16, coordinator_epoch int32,
        last_timestamp int64, current_txn_first_offset int64 (-1: none), batch_count uint8
        (0..window), then batch_count x {last_sequence int32, offset_delta int32,
        last_offset int64, timestamp int64}, oldest first
    end-4  uint32 crc = CRC-32C of bytes [0, end-4)

Validation order (both twins): the header, the layout (lengths, counts), the CRC, then each
entry's values in file order (version 2: batch count, producer id, transaction, repeated id,
then the batches oldest first, each slot's escapes resolved before its values are checked;
last, that every escaped value was used). So a damaged byte is reported as a CRC mismatch, and a value
check fires only on a file whose checksum is right (written by a buggy writer).
"""

from __future__ import annotations

import struct
from typing import Any

from .. import _args
from .._types import DEFAULT_WINDOW, BatchMetadata
from ..errors import CorruptSnapshotError
from .crc32c import crc32c
from .table import ProducerStateTable, _Entry

__all__ = ["FULL_FORMAT_VERSION", "MAGIC", "VERSION", "decode_full", "decode_kafka", "encode_full", "encode_kafka"]

VERSION = 1  # Kafka's format
FULL_FORMAT_VERSION = 2  # the full format's version encode_full writes (decode_full reads 1 too)
NO_TXN = -1  # CurrentTxnFirstOffset when no transaction is ongoing

# Kafka's format (spec §4.2).
KAFKA_HEADER = struct.Struct(">hIi")  # version, crc, count
KAFKA_ENTRY = struct.Struct(">qhiqiqiq")  # see the module docstring, field by field
KAFKA_CRC_START = 6  # the crc covers [6, end): count and entries
assert KAFKA_HEADER.size == 10 and KAFKA_ENTRY.size == 46

# dedup's full-window format.
MAGIC = b"DDPS"
FULL_HEADER = struct.Struct(">4shhqi")  # magic, version, window, map_end_offset, count
FULL_ENTRY = struct.Struct(">qhiqqB")  # producer id, epoch, coordinator epoch, last timestamp, txn, batch count
FULL_BATCH = struct.Struct(">iiqq")  # last_sequence, offset_delta, last_offset, timestamp
FULL_CRC = struct.Struct(">I")
FULL_MIN_SIZE = FULL_HEADER.size + FULL_CRC.size
MAX_WINDOW = 255
assert (FULL_HEADER.size, FULL_ENTRY.size, FULL_BATCH.size, FULL_MIN_SIZE) == (20, 31, 24, 24)
# Version 2.
RECORD = struct.Struct(">qhiqqBiiqq")  # the fixed part and the newest batch
SLOT = struct.Struct(">IiHH")  # offset gap, timestamp gap, sequence gap, offset delta
FULL2_TRAILER = struct.Struct(">iI")  # escape count, crc
FULL2_MIN_SIZE = FULL_HEADER.size + FULL2_TRAILER.size
ESCAPE = struct.Struct(">q")
OFFSET_ESCAPE, TIMESTAMP_ESCAPE, SEQUENCE_ESCAPE, DELTA_ESCAPE = 0xFFFFFFFF, -(2**31), 0xFFFF, 0xFFFF
assert (RECORD.size, SLOT.size, FULL2_MIN_SIZE) == (55, 12, 28)


def record_size(window: int) -> int:
    """The size of a version 2 record for ``window``: 55 + 12 x (window - 1) bytes."""
    return RECORD.size + SLOT.size * (window - 1)


def _int64(value: int) -> int:
    """value modulo 2^64, as a signed int64 (C's wrapping arithmetic)."""
    return (value + 2**63) % 2**64 - 2**63


def _int32(value: int) -> int:
    """The low 32 bits of value, as a signed int32."""
    return (value + 2**31) % 2**32 - 2**31


def _twin(table: Any) -> ProducerStateTable:
    if not isinstance(table, ProducerStateTable):
        raise TypeError(f"table must be a dedup.reference.ProducerStateTable, got {type(table).__name__}")
    return table


def _octets(data: Any) -> bytes:
    """Any C-contiguous buffer as bytes (a copy: the bytes cannot change while we read)."""
    try:
        return bytes(memoryview(data).cast("B"))
    except TypeError as error:
        raise TypeError(f"data must be a C-contiguous buffer, got {type(data).__name__}: {error}") from None


def _new_table(table_class: type[ProducerStateTable], window: int) -> ProducerStateTable:
    if not (isinstance(table_class, type) and issubclass(table_class, ProducerStateTable)):
        raise TypeError(f"table_class must be dedup.reference.ProducerStateTable or a subclass, got {table_class!r}")
    table = table_class(window)
    if len(table) or table.window != window:
        raise TypeError(f"table_class({window}) must make an empty table of window {window}")
    return table


# --- Kafka's format -------------------------------------------------------------------------


def encode_kafka(table: Any) -> bytes:
    """Kafka's snapshot (version 1) of the twin table, entries in the table's order (spec §4.3).

    Each entry keeps only its last retained batch (LastSequence, LastOffset, OffsetDelta;
    -1, -1, 0 without one); Timestamp is the entry's ``last_timestamp``, not the batch's.
    """
    producers = _twin(table)._producers
    out = bytearray(KAFKA_HEADER.size + KAFKA_ENTRY.size * len(producers))
    KAFKA_HEADER.pack_into(out, 0, VERSION, 0, len(producers))
    position = KAFKA_HEADER.size
    for producer_id, live in producers.items():
        if live.batches:
            last = live.batches[-1]
            last_sequence, last_offset, offset_delta = last.last_sequence, last.last_offset, last.offset_delta
        else:
            last_sequence, last_offset, offset_delta = -1, -1, 0
        txn = NO_TXN if live.current_txn_first_offset is None else live.current_txn_first_offset
        KAFKA_ENTRY.pack_into(
            out,
            position,
            producer_id,
            live.producer_epoch,
            last_sequence,
            last_offset,
            offset_delta,
            live.last_timestamp,
            live.coordinator_epoch,
            txn,
        )
        position += KAFKA_ENTRY.size
    # Kafka writes the crc as 0, computes it over [6, end) and patches it in (spec §4.3).
    struct.pack_into(">I", out, 2, crc32c(memoryview(out)[KAFKA_CRC_START:]))
    return bytes(out)


def decode_kafka(
    data: Any,
    window: int = DEFAULT_WINDOW,
    map_end_offset: int = 0,
    table_class: type[ProducerStateTable] = ProducerStateTable,
) -> ProducerStateTable:
    """A twin table from Kafka's snapshot (spec §4.4); ``CorruptSnapshotError`` if it is not one.

    ``window`` is the new table's window (the file keeps at most one batch per producer) and
    ``map_end_offset`` its map end offset (Kafka takes it from the file name).
    """
    octets = _octets(data)
    window = _args.window(window)
    map_end_offset = _args.offset("map_end_offset", map_end_offset)
    size = len(octets)
    if size >= 2:
        (version,) = struct.unpack_from(">h", octets, 0)
        if version != VERSION:
            raise CorruptSnapshotError(f"Kafka snapshot: unknown file version: expected {VERSION}, found {version}")
    if size < KAFKA_HEADER.size:
        raise CorruptSnapshotError(
            f"Kafka snapshot: too short: expected at least {KAFKA_HEADER.size} bytes (version, crc, count), "
            f"found {size}"
        )
    _, stored_crc, count = KAFKA_HEADER.unpack_from(octets, 0)
    if count < 0:
        raise CorruptSnapshotError(f"Kafka snapshot: negative producer count: expected >= 0, found {count}")
    # Stricter than Kafka on trailing bytes: Kafka's parser stops after the last entry and its
    # crc covers whatever follows, so it accepts them; here the length must be exact.
    expected = KAFKA_HEADER.size + KAFKA_ENTRY.size * count
    if size != expected:
        what = "short file" if size < expected else f"{size - expected} trailing bytes"
        raise CorruptSnapshotError(
            f"Kafka snapshot: {what}: {count} producers need 10 + 46 x {count} = {expected} bytes, found {size}"
        )
    computed_crc = crc32c(memoryview(octets)[KAFKA_CRC_START:])
    if computed_crc != stored_crc:
        raise CorruptSnapshotError(
            f"Kafka snapshot: CRC-32C of bytes [{KAFKA_CRC_START}, {size}) does not match: "
            f"stored crc {stored_crc:#010x}, computed crc {computed_crc:#010x}"
        )

    table = _new_table(table_class, window)
    producers = table._producers
    for number in range(count):
        (producer_id, epoch, last_sequence, last_offset, offset_delta, timestamp, coordinator_epoch, txn) = (
            KAFKA_ENTRY.unpack_from(octets, KAFKA_HEADER.size + KAFKA_ENTRY.size * number)
        )
        # Values the table cannot hold: stricter than Kafka, which checks none of them.
        if producer_id < 0:
            raise CorruptSnapshotError(
                f"Kafka snapshot: entry {number}: producer id {producer_id} is negative: expected >= 0"
            )
        live = _Entry(window)
        live.producer_epoch = epoch
        if last_offset >= 0:  # one batch iff LastOffset >= 0 (spec §4.4 step 3)
            # The offset delta is a record count - 1. The first offset (LastOffset - OffsetDelta)
            # is not checked: the spec's own vector (§4.7) has LastOffset 2 and OffsetDelta 3.
            if offset_delta < 0:
                raise CorruptSnapshotError(
                    f"Kafka snapshot: entry {number} (producer id {producer_id}): offset delta {offset_delta} "
                    "is negative: expected >= 0"
                )
            live.batches.append(BatchMetadata(last_sequence, last_offset, offset_delta, timestamp))
        live.coordinator_epoch = coordinator_epoch
        live.last_timestamp = timestamp
        live.current_txn_first_offset = txn if txn >= 0 else None
        # A producer id seen twice: the later entry wins and the producer keeps its first
        # position, as Kafka's producers.put() into its map (a dict does the same).
        producers[producer_id] = live
    table._map_end_offset = map_end_offset
    table._generation += 1
    return table


# --- dedup's full-window format -------------------------------------------------------------


_UNWRITABLE = "; only a table loaded from a Kafka snapshot can hold this, and the full format's reader would reject it"


def encode_full(table: Any) -> bytes:
    """The full-window snapshot (version 2) of the twin table: every retained batch, records in
    the table's order.

    ``ValueError`` if the table holds offsets at or past its map end offset, or a negative
    first offset (only a table loaded from a Kafka snapshot can): the reader would reject them.
    """
    table = _twin(table)
    producers = table._producers
    map_end_offset = table._map_end_offset
    window = table._window
    parts = [FULL_HEADER.pack(MAGIC, FULL_FORMAT_VERSION, window, map_end_offset, len(producers))]
    escapes: list[int] = []
    for producer_id, live in producers.items():
        txn = NO_TXN if live.current_txn_first_offset is None else live.current_txn_first_offset
        if txn != NO_TXN and txn >= map_end_offset:
            raise ValueError(
                f"cannot write a full snapshot: producer {producer_id}: current txn first offset {txn} "
                f"is not below the table's map end offset {map_end_offset}{_UNWRITABLE}"
            )
        batches = list(live.batches)
        for index, batch in enumerate(batches):
            if batch.last_offset < batch.offset_delta:
                raise ValueError(
                    f"cannot write a full snapshot: producer {producer_id}, batch {index}: last offset "
                    f"{batch.last_offset} is below its offset delta {batch.offset_delta} (a negative first offset)"
                    f"{_UNWRITABLE}"
                )
            if batch.last_offset >= map_end_offset:
                raise ValueError(
                    f"cannot write a full snapshot: producer {producer_id}, batch {index}: last offset "
                    f"{batch.last_offset} is not below the table's map end offset {map_end_offset}{_UNWRITABLE}"
                )
        newest = batches[-1] if batches else BatchMetadata(0, 0, 0, 0)
        parts.append(
            RECORD.pack(
                producer_id,
                live.producer_epoch,
                live.coordinator_epoch,
                live.last_timestamp,
                txn,
                len(batches),
                newest.last_sequence,
                newest.offset_delta,
                newest.last_offset,
                newest.timestamp,
            )
        )
        for batch in batches[:-1]:
            # Each field relative to the newest batch, or its escape value and the value itself
            # in the escape list, in this order.
            offset_gap = (newest.last_offset - batch.last_offset) % 2**64
            if offset_gap >= OFFSET_ESCAPE:
                offset_gap = OFFSET_ESCAPE
                escapes.append(batch.last_offset)
            timestamp_gap = _int64(newest.timestamp - batch.timestamp)
            if not TIMESTAMP_ESCAPE < timestamp_gap < 2**31:
                timestamp_gap = TIMESTAMP_ESCAPE
                escapes.append(batch.timestamp)
            sequence_gap = (newest.last_sequence - batch.last_sequence) % 2**32
            if sequence_gap >= SEQUENCE_ESCAPE:
                sequence_gap = SEQUENCE_ESCAPE
                escapes.append(batch.last_sequence)
            offset_delta = batch.offset_delta
            if not 0 <= offset_delta < DELTA_ESCAPE:
                offset_delta = DELTA_ESCAPE
                escapes.append(batch.offset_delta)
            parts.append(SLOT.pack(offset_gap, timestamp_gap, sequence_gap, offset_delta))
        parts.append(bytes(SLOT.size * (window - max(len(batches), 1))))  # the unused slots
    parts.extend(ESCAPE.pack(value) for value in escapes)
    parts.append(struct.pack(">i", len(escapes)))
    body = b"".join(parts)
    return body + FULL_CRC.pack(crc32c(body))


def decode_full(data: Any, table_class: type[ProducerStateTable] = ProducerStateTable) -> ProducerStateTable:
    """A twin table from a full-window snapshot (version 1 or 2), with the file's window and map
    end offset; ``CorruptSnapshotError`` if it is not a valid one."""
    octets = _octets(data)
    size = len(octets)
    if octets[:4] != MAGIC:
        raise CorruptSnapshotError(f"full snapshot: bad magic: expected {MAGIC!r}, found {octets[:4]!r}")
    if size < 6:
        raise CorruptSnapshotError(
            f"full snapshot: too short: expected at least {FULL_MIN_SIZE} bytes (header and crc), found {size}"
        )
    (version,) = struct.unpack_from(">h", octets, 4)
    if version not in (1, FULL_FORMAT_VERSION):
        raise CorruptSnapshotError(
            f"full snapshot: unknown version: expected 1 or {FULL_FORMAT_VERSION}, found {version}"
        )
    if version == 1 and size < FULL_MIN_SIZE:
        raise CorruptSnapshotError(
            f"full snapshot: too short: expected at least {FULL_MIN_SIZE} bytes (header and crc), found {size}"
        )
    if version == FULL_FORMAT_VERSION and size < FULL2_MIN_SIZE:
        raise CorruptSnapshotError(
            f"full snapshot: too short: expected at least {FULL2_MIN_SIZE} bytes (header, escape count and crc), "
            f"found {size}"
        )
    _, _, window, map_end_offset, count = FULL_HEADER.unpack_from(octets, 0)
    if not 1 <= window <= MAX_WINDOW:
        raise CorruptSnapshotError(f"full snapshot: window out of range: expected 1..{MAX_WINDOW}, found {window}")
    if map_end_offset < 0:
        raise CorruptSnapshotError(f"full snapshot: negative map end offset: expected >= 0, found {map_end_offset}")
    if count < 0:
        raise CorruptSnapshotError(f"full snapshot: negative producer count: expected >= 0, found {count}")
    load = _load_full_v1 if version == 1 else _load_full_v2
    table = load(octets, window, map_end_offset, count, table_class)
    table._map_end_offset = map_end_offset
    table._generation += 1
    return table


def _loaded_entry(window: int, epoch: int, coordinator_epoch: int, last_timestamp: int, txn: int) -> _Entry:
    """An entry of a full snapshot (either version) with its header fields, no batches yet."""
    live = _Entry(window)
    live.producer_epoch = epoch
    live.coordinator_epoch = coordinator_epoch
    live.last_timestamp = last_timestamp
    live.current_txn_first_offset = None if txn == NO_TXN else txn
    return live


def _entry(numbers: dict[int, int], number: int, producer_id: int, txn: int, map_end_offset: int) -> str:
    """Both versions: entry ``number``'s producer id and transaction checked; where it is, for messages."""
    if producer_id < 0:
        raise CorruptSnapshotError(
            f"full snapshot: entry {number}: producer id {producer_id} is negative: expected >= 0"
        )
    where = f"full snapshot: entry {number} (producer id {producer_id})"
    # A transaction starts at a batch the table has seen: below the map end offset.
    if txn != NO_TXN and not 0 <= txn < map_end_offset:
        raise CorruptSnapshotError(
            f"{where}: current txn first offset {txn}: expected -1 (none) or an offset in [0, {map_end_offset})"
        )
    if producer_id in numbers:  # unlike Kafka's format, our writer never repeats one
        raise CorruptSnapshotError(
            f"full snapshot: entry {number}: producer id {producer_id} repeats entry {numbers[producer_id]}: "
            "expected unique producer ids"
        )
    numbers[producer_id] = number
    return where


def _batch(
    at: str, last_sequence: int, last_offset: int, offset_delta: int, timestamp: int, map_end_offset: int
) -> BatchMetadata:
    """Both versions: one batch's values checked."""
    if offset_delta < 0:
        raise CorruptSnapshotError(f"{at}: offset delta {offset_delta} is negative: expected >= 0")
    if last_offset < offset_delta:
        raise CorruptSnapshotError(
            f"{at}: last offset {last_offset} is below its offset delta {offset_delta}: "
            "expected last offset >= offset delta (a first offset >= 0)"
        )
    if last_offset >= map_end_offset:
        raise CorruptSnapshotError(
            f"{at}: last offset {last_offset} is not below the map end offset: expected < {map_end_offset}"
        )
    return BatchMetadata(last_sequence, last_offset, offset_delta, timestamp)


def _check_crc(octets: bytes, end: int) -> None:
    (stored_crc,) = FULL_CRC.unpack_from(octets, end)
    computed_crc = crc32c(memoryview(octets)[:end])
    if computed_crc != stored_crc:
        raise CorruptSnapshotError(
            f"full snapshot: CRC-32C of bytes [0, {end}) does not match: "
            f"stored crc {stored_crc:#010x}, computed crc {computed_crc:#010x}"
        )


def _load_full_v2(
    octets: bytes, window: int, map_end_offset: int, count: int, table_class: type[ProducerStateTable]
) -> ProducerStateTable:
    size = len(octets)
    (escape_count,) = struct.unpack_from(">i", octets, size - FULL2_TRAILER.size)
    if escape_count < 0:
        raise CorruptSnapshotError(f"full snapshot: negative escaped value count: expected >= 0, found {escape_count}")
    length = record_size(window)
    expected = FULL_HEADER.size + length * count + ESCAPE.size * escape_count + FULL2_TRAILER.size
    if size != expected:
        what = "short file" if size < expected else f"{size - expected} trailing bytes"
        raise CorruptSnapshotError(
            f"full snapshot: {what}: {count} producers of {length} bytes (window {window}) and {escape_count} "
            f"escaped values need 20 + {length} x {count} + 8 x {escape_count} + 8 = {expected} bytes, found {size}"
        )
    _check_crc(octets, size - FULL_CRC.size)

    table = _new_table(table_class, window)
    escapes_at = FULL_HEADER.size + length * count
    used = 0
    producers = table._producers
    numbers: dict[int, int] = {}
    for number in range(count):
        position = FULL_HEADER.size + length * number
        (producer_id, epoch, coordinator_epoch, last_timestamp, txn, batch_count, *newest) = RECORD.unpack_from(
            octets, position
        )
        newest_sequence, newest_delta, newest_offset, newest_timestamp = newest
        if batch_count > window:
            raise CorruptSnapshotError(
                f"full snapshot: entry {number}: batch count {batch_count} exceeds the window: expected 0..{window}"
            )
        where = _entry(numbers, number, producer_id, txn, map_end_offset)
        live = _loaded_entry(window, epoch, coordinator_epoch, last_timestamp, txn)
        for index in range(batch_count - 1):
            fields = list(SLOT.unpack_from(octets, position + RECORD.size + SLOT.size * index))
            at = f"{where}, batch {index}"
            for field, escape in enumerate((OFFSET_ESCAPE, TIMESTAMP_ESCAPE, SEQUENCE_ESCAPE, DELTA_ESCAPE)):
                if fields[field] == escape:
                    if used == escape_count:
                        raise CorruptSnapshotError(
                            f"{at}: escaped value {used} is missing: the file holds {escape_count}"
                        )
                    (fields[field],) = ESCAPE.unpack_from(octets, escapes_at + ESCAPE.size * used)
                    used += 1
                    fields[field] = (fields[field], True)
                else:
                    fields[field] = (fields[field], False)
            (offset, offset_escaped), (stamp, stamp_escaped), (sequence, sequence_escaped), (delta, _) = fields
            last_offset = offset if offset_escaped else _int64(newest_offset - offset)
            timestamp = stamp if stamp_escaped else _int64(newest_timestamp - stamp)
            last_sequence = _int32(sequence) if sequence_escaped else _int32(newest_sequence - sequence)
            live.batches.append(_batch(at, last_sequence, last_offset, _int32(delta), timestamp, map_end_offset))
        if batch_count:
            live.batches.append(
                _batch(
                    f"{where}, batch {batch_count - 1}",
                    newest_sequence,
                    newest_offset,
                    newest_delta,
                    newest_timestamp,
                    map_end_offset,
                )
            )
        producers[producer_id] = live
    if used != escape_count:
        raise CorruptSnapshotError(
            f"full snapshot: {escape_count - used} escaped values unused: the records use {used} of the "
            f"{escape_count} the file holds"
        )
    return table


def _load_full_v1(
    octets: bytes, window: int, map_end_offset: int, count: int, table_class: type[ProducerStateTable]
) -> ProducerStateTable:
    size = len(octets)
    # The layout: where each entry starts. Every step is bounded by the bytes left, so a huge
    # count in a short file stops at the first entry that does not fit.
    end = size - FULL_CRC.size
    starts = []
    position = FULL_HEADER.size
    for number in range(count):
        if end - position < FULL_ENTRY.size:
            raise CorruptSnapshotError(
                f"full snapshot: short file: entry {number} of {count} needs {FULL_ENTRY.size} bytes at byte "
                f"{position}, found {end - position} before the crc"
            )
        batch_count = octets[position + FULL_ENTRY.size - 1]
        if batch_count > window:
            raise CorruptSnapshotError(
                f"full snapshot: entry {number}: batch count {batch_count} exceeds the window: expected 0..{window}"
            )
        batches_at = position + FULL_ENTRY.size
        if end - batches_at < FULL_BATCH.size * batch_count:
            raise CorruptSnapshotError(
                f"full snapshot: short file: the {batch_count} batches of entry {number} of {count} need "
                f"{FULL_BATCH.size * batch_count} bytes at byte {batches_at}, found {end - batches_at} before the crc"
            )
        starts.append(position)
        position = batches_at + FULL_BATCH.size * batch_count
    if position != end:
        raise CorruptSnapshotError(
            f"full snapshot: {end - position} trailing bytes: {count} producers end at byte {position}, "
            f"expected a {position + FULL_CRC.size}-byte file, found {size} bytes"
        )
    _check_crc(octets, end)

    table = _new_table(table_class, window)
    producers = table._producers
    numbers: dict[int, int] = {}  # producer id -> its entry number, to name both of a repeated pair
    for number, position in enumerate(starts):
        producer_id, epoch, coordinator_epoch, last_timestamp, txn, batch_count = FULL_ENTRY.unpack_from(
            octets, position
        )
        where = _entry(numbers, number, producer_id, txn, map_end_offset)
        live = _loaded_entry(window, epoch, coordinator_epoch, last_timestamp, txn)
        for index in range(batch_count):
            last_sequence, offset_delta, last_offset, timestamp = FULL_BATCH.unpack_from(
                octets, position + FULL_ENTRY.size + FULL_BATCH.size * index
            )
            live.batches.append(
                _batch(f"{where}, batch {index}", last_sequence, last_offset, offset_delta, timestamp, map_end_offset)
            )
        producers[producer_id] = live
    return table
