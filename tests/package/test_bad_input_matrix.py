"""A bad-input matrix over every public entry point (issue #7 part 3).

One row per (entry point, argument, bad-value class): the call, the exception class expected
and a regex that must find the argument's name in the message. Every row that touches a
producer-state table runs on both twins (compiled ``dedup._state`` and pure-Python
``dedup.reference``), which must raise the same class; every row also asserts that nothing
was applied (the table's producers, entries and map end offset, the log's offsets, the files
on disk). Bad bytes are a typed Kafka/snapshot error (``CorruptSnapshotError``,
``TruncatedBatchError``) that says expected versus found, never a crash.

Deliberately not repeated here (each has its own thorough tests): the numpy boundary of
``append_many`` (``tests/table/test_append_many.py``: dtypes, shapes, strides, read-only arrays,
lengths, value ranges; three smoke rows below), ``append``/``check`` scalars
(``tests/table/test_arguments.py``), the batch codec's bad bytes (``tests/formats/test_batch.py``,
``tests/formats/test_records_fuzz.py``) and corrupt snapshots (``tests/formats/test_snapshot_fuzz.py``).

Valid edge cases sit beside the rows: empty inputs to the readers and an empty table to the
snapshot functions work.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import pytest
from conftest import TWINS

import dedup
from dedup import Origin, PartitionLog, checkpoints
from dedup import batch as batches
from dedup import snapshot as snapshots
from dedup.cluster import Cluster
from dedup.errors import CorruptSnapshotError, InvalidRecordError, OffsetOutOfRangeError, TruncatedBatchError
from dedup.producer import IdempotentProducer, Network
from dedup.server import Faults, KafkaServer
from dedup.tools.simulate import run_seed

INT16_MAX, INT32_MAX, INT64_MAX = (1 << 15) - 1, (1 << 31) - 1, (1 << 63) - 1


class Bad(NamedTuple):
    entry: str  # the entry point
    argument: str  # the argument at fault
    kind: str  # the bad-value class
    call: Callable[..., Any]
    error: type[BaseException]
    match: str  # regex that must find the argument's name (or the rule) in the message


def row(entry, argument, kind, call, error, match=None):
    return Bad(entry, argument, kind, call, error, match or argument)


def ids(rows):
    return [f"{r.entry}-{r.argument}-{r.kind}" for r in rows]


def other_table_class(table_class):
    return next(twin.table_class for twin in TWINS.values() if twin.table_class is not table_class)


def table_state(table):
    return len(table), table.map_end_offset, [(pid, table.entry(pid)) for pid in table]


def seeded(table_class):
    """One producer (1, epoch 0, sequences 0-4 at offsets 10-14): map end offset 15."""
    table = table_class()
    table.append(1, 0, 0, 5, 10, max_timestamp=7)
    return table


GOOD_BATCH = batches.encode_batch([b"v"], timestamp=1, producer_id=7, producer_epoch=0, base_sequence=0)
STRIDED = memoryview(GOOD_BATCH + GOOD_BATCH)[::2]  # the numpy "non-contiguous" case for bytes
TRUNCATED = GOOD_BATCH[:-1]


# --- the producer-state table: constructor and every method ---------------------------------

TABLE_ROWS = [
    # constructor
    row("ProducerStateTable", "window", "None", lambda t, T: T(None), TypeError),
    row("ProducerStateTable", "window", "bool", lambda t, T: T(True), TypeError),
    row("ProducerStateTable", "window", "float", lambda t, T: T(5.0), TypeError),
    row("ProducerStateTable", "window", "zero", lambda t, T: T(0), ValueError),
    row("ProducerStateTable", "window", "beyond uint8", lambda t, T: T(256), ValueError),
    row("ProducerStateTable", "window", "beyond int64", lambda t, T: T(1 << 64), ValueError),
    row("ProducerStateTable", "capacity", "None", lambda t, T: T(capacity=None), TypeError),
    row("ProducerStateTable", "capacity", "negative", lambda t, T: T(capacity=-1), ValueError),
    row("ProducerStateTable", "capacity", "beyond int32", lambda t, T: T(capacity=1 << 31), ValueError),
    # append (the full scalar matrix is tests/table/test_arguments.py)
    row("append", "producer_id", "None", lambda t, T: t.append(None, 0, 0, 1, 20), TypeError),
    row("append", "producer_id", "negative", lambda t, T: t.append(-1, 0, 0, 1, 20), ValueError),
    row("append", "producer_epoch", "beyond int16", lambda t, T: t.append(2, 1 << 15, 0, 1, 20), ValueError),
    row("append", "base_sequence", "beyond int32", lambda t, T: t.append(2, 0, 1 << 31, 1, 20), ValueError),
    row("append", "record_count", "str", lambda t, T: t.append(2, 0, 0, "1", 20), TypeError),
    row("append", "base_offset", "beyond int64", lambda t, T: t.append(2, 0, 0, 1, 1 << 63), ValueError),
    # §3.2 step 6: the map end offset only moves up.
    row(
        "append",
        "base_offset",
        "backwards",
        lambda t, T: t.append(2, 0, 0, 1, 14),
        ValueError,
        r"base_offset 14 is below the table's map_end_offset 15",
    ),
    row(
        "append",
        "max_timestamp",
        "beyond int64",
        lambda t, T: t.append(2, 0, 0, 1, 20, max_timestamp=1 << 63),
        ValueError,
    ),
    row("append", "origin", "None", lambda t, T: t.append(2, 0, 0, 1, 20, origin=None), TypeError),
    row("append", "transactional", "None", lambda t, T: t.append(2, 0, 0, 1, 20, transactional=None), TypeError),
    # check / update
    row("check", "producer_id", "float", lambda t, T: t.check(2.0, 0, 0, 1, 20), TypeError),
    row("check", "base_offset", "backwards", lambda t, T: t.check(2, 0, 0, 1, 0), ValueError),
    row("update", "result", "None", lambda t, T: t.update(None), TypeError),
    row("update", "result", "wrong type", lambda t, T: t.update((1, 0, 0)), TypeError),
    row("update", "result", "duplicate", lambda t, T: t.update(t.check(1, 0, 0, 5, 20)), ValueError),
    row("update", "result", "another table's", lambda t, T: t.update(T().check(2, 0, 0, 1, 20)), ValueError),
    # append_many: three smoke rows; the boundary's matrix is tests/table/test_append_many.py.
    row(
        "append_many",
        "producer_ids",
        "None",
        lambda t, T: t.append_many(None, [0], [0], [1], log_end_offset=20),
        TypeError,
    ),
    row(
        "append_many",
        "base_sequences",
        "float",
        lambda t, T: t.append_many([2], [0], np.array([0.0]), [1], log_end_offset=20),
        TypeError,
    ),
    row(
        "append_many",
        "log_end_offset",
        "backwards",
        lambda t, T: t.append_many([2], [0], [0], [1], log_end_offset=14),
        ValueError,
    ),
    # append_marker (spec §2.2)
    row("append_marker", "producer_id", "None", lambda t, T: t.append_marker(None, 0, 0, 20, commit=True), TypeError),
    row(
        "append_marker", "producer_id", "negative", lambda t, T: t.append_marker(-1, 0, 0, 20, commit=True), ValueError
    ),
    row(
        "append_marker",
        "producer_epoch",
        "beyond int16",
        lambda t, T: t.append_marker(2, 1 << 15, 0, 20, commit=True),
        ValueError,
    ),
    row(
        "append_marker",
        "coordinator_epoch",
        "beyond int32",
        lambda t, T: t.append_marker(2, 0, 1 << 31, 20, commit=True),
        ValueError,
    ),
    row(
        "append_marker",
        "coordinator_epoch",
        "None",
        lambda t, T: t.append_marker(2, 0, None, 20, commit=True),
        TypeError,
    ),
    row(
        "append_marker",
        "offset",
        "backwards",
        lambda t, T: t.append_marker(2, 0, 0, 5, commit=True),
        ValueError,
        r"offset 5 is below the table's map_end_offset 15",
    ),
    row(
        "append_marker",
        "offset",
        "int64 max (no log end after it)",
        lambda t, T: t.append_marker(2, 0, 0, INT64_MAX, commit=True),
        ValueError,
    ),
    row("append_marker", "commit", "None", lambda t, T: t.append_marker(2, 0, 0, 20, commit=None), TypeError),
    row("append_marker", "commit", "int", lambda t, T: t.append_marker(2, 0, 0, 20, commit=1), TypeError),
    row(
        "append_marker",
        "timestamp",
        "float",
        lambda t, T: t.append_marker(2, 0, 0, 20, commit=True, timestamp=1.5),
        TypeError,
    ),
    row(
        "append_marker",
        "timestamp",
        "beyond int64",
        lambda t, T: t.append_marker(2, 0, 0, 20, commit=True, timestamp=1 << 63),
        ValueError,
    ),
    row(
        "append_marker",
        "origin",
        "out of the enum",
        lambda t, T: t.append_marker(2, 0, 0, 20, commit=True, origin=9),
        ValueError,
    ),
    # entry
    row("entry", "producer_id", "None", lambda t, T: t.entry(None), TypeError),
    row("entry", "producer_id", "bool", lambda t, T: t.entry(True), TypeError),
    row("entry", "producer_id", "str", lambda t, T: t.entry("1"), TypeError),
    row("entry", "producer_id", "numpy float", lambda t, T: t.entry(np.float64(1)), TypeError),
    row("entry", "producer_id", "negative", lambda t, T: t.entry(-1), ValueError),
    row("entry", "producer_id", "beyond int64", lambda t, T: t.entry(1 << 63), ValueError),
    # update_map_end_offset (§3.2 step 6)
    row("update_map_end_offset", "offset", "None", lambda t, T: t.update_map_end_offset(None), TypeError),
    row("update_map_end_offset", "offset", "bool", lambda t, T: t.update_map_end_offset(True), TypeError),
    row("update_map_end_offset", "offset", "float", lambda t, T: t.update_map_end_offset(20.0), TypeError),
    row("update_map_end_offset", "offset", "negative", lambda t, T: t.update_map_end_offset(-1), ValueError),
    row("update_map_end_offset", "offset", "beyond int64", lambda t, T: t.update_map_end_offset(1 << 63), ValueError),
    row(
        "update_map_end_offset",
        "offset",
        "backwards",
        lambda t, T: t.update_map_end_offset(3),
        ValueError,
        r"offset 3 is below the table's map_end_offset 15",
    ),
    # remove_expired (spec §6)
    row("remove_expired", "now_ms", "None", lambda t, T: t.remove_expired(None, 1), TypeError),
    row("remove_expired", "now_ms", "float", lambda t, T: t.remove_expired(1.5, 1), TypeError),
    row("remove_expired", "now_ms", "below int64", lambda t, T: t.remove_expired(-(1 << 63) - 1, 1), ValueError),
    row("remove_expired", "expiration_ms", "None", lambda t, T: t.remove_expired(0, None), TypeError),
    row("remove_expired", "expiration_ms", "zero", lambda t, T: t.remove_expired(0, 0), ValueError),
    row("remove_expired", "expiration_ms", "beyond int64", lambda t, T: t.remove_expired(0, 1 << 63), ValueError),
    # copy: the same numpy boundary as append_many's producer_ids
    row("copy", "producer_ids", "negative", lambda t, T: t.copy([1, -1]), ValueError),
    row("copy", "producer_ids", "beyond int64", lambda t, T: t.copy(np.array([1 << 63], dtype=np.uint64)), ValueError),
    row("copy", "producer_ids", "float array", lambda t, T: t.copy(np.array([1.0])), TypeError),
    row("copy", "producer_ids", "object array", lambda t, T: t.copy(np.array([1], dtype=object)), TypeError),
    row("copy", "producer_ids", "bool array", lambda t, T: t.copy(np.array([True])), TypeError),
    row("copy", "producer_ids", "2-D", lambda t, T: t.copy(np.ones((1, 1), dtype=np.int64)), ValueError),
    row("copy", "producer_ids", "list holding None", lambda t, T: t.copy([None]), TypeError),
    row("copy", "producer_ids", "str", lambda t, T: t.copy("1"), TypeError),
    row("copy", "producer_ids", "scalar", lambda t, T: t.copy(1), TypeError),
    # update_from (spec §3.2 step 4)
    row("update_from", "staged", "None", lambda t, T: t.update_from(None), TypeError),
    row("update_from", "staged", "the other twin", lambda t, T: t.update_from(other_table_class(T)()), TypeError),
    row("update_from", "staged", "another window", lambda t, T: t.update_from(T(3)), ValueError),
    row("update_from", "staged", "itself", lambda t, T: t.update_from(t), ValueError),
]


@pytest.mark.parametrize("bad", TABLE_ROWS, ids=ids(TABLE_ROWS))
def test_table(twin, bad):
    table_class = twin.table_class
    table = seeded(table_class)
    before = table_state(table)
    with pytest.raises(bad.error, match=bad.match):
        bad.call(table, table_class)
    assert table_state(table) == before


def test_table_valid_edges(twin):
    """Empty, strided and read-only id arrays are fine for copy; an empty staged table
    changes nothing, and one behind the live table never moves its map end offset down."""
    table_class = twin.table_class
    table = seeded(table_class)
    before = table_state(table)
    read_only = np.array([1, 99])
    read_only.flags.writeable = False
    assert len(table.copy([])) == 0
    assert len(table.copy(np.arange(4)[1::2])) == 1  # ids 1 and 3, strided
    assert len(table.copy(read_only)) == 1
    table.update_from(table_class())
    assert table_state(table) == before
    assert table.memory_bytes() > 0


# --- sequence arithmetic (spec §8.4) ------------------------------------------------------------

SEQUENCE_ROWS = [
    row("increment_sequence", "sequence", "None", lambda: dedup.increment_sequence(None, 1), TypeError),
    row("increment_sequence", "sequence", "bool", lambda: dedup.increment_sequence(True, 1), TypeError),
    row("increment_sequence", "sequence", "float", lambda: dedup.increment_sequence(1.5, 1), TypeError),
    row("increment_sequence", "sequence", "str", lambda: dedup.increment_sequence("1", 1), TypeError),
    row("increment_sequence", "sequence", "negative", lambda: dedup.increment_sequence(-5, 1), ValueError),
    row("increment_sequence", "sequence", "beyond int32", lambda: dedup.increment_sequence(1 << 31, 1), ValueError),
    row("increment_sequence", "increment", "negative", lambda: dedup.increment_sequence(1, -3), ValueError),
    row("increment_sequence", "increment", "beyond int32", lambda: dedup.increment_sequence(1, 1 << 31), ValueError),
    row("increment_sequence", "increment", "None", lambda: dedup.increment_sequence(1, None), TypeError),
    row("decrement_sequence", "sequence", "negative", lambda: dedup.decrement_sequence(-5, 1), ValueError),
    row("decrement_sequence", "sequence", "beyond int64", lambda: dedup.decrement_sequence(1 << 70, 1), ValueError),
    row("decrement_sequence", "decrement", "float", lambda: dedup.decrement_sequence(1, 1.0), TypeError),
    row("decrement_sequence", "decrement", "negative", lambda: dedup.decrement_sequence(1, -3), ValueError),
    row("in_sequence", "last_sequence", "None", lambda: dedup.in_sequence(None, 1), TypeError),
    row("in_sequence", "last_sequence", "beyond int32", lambda: dedup.in_sequence(1 << 31, 0), ValueError),
    row("in_sequence", "next_sequence", "None", lambda: dedup.in_sequence(1, None), TypeError),
    row("in_sequence", "next_sequence", "float", lambda: dedup.in_sequence(1, 2.0), TypeError),
    row("in_sequence", "next_sequence", "below int32", lambda: dedup.in_sequence(1, -(1 << 31) - 1), ValueError),
]


@pytest.mark.parametrize("bad", SEQUENCE_ROWS, ids=ids(SEQUENCE_ROWS))
def test_sequence_helpers(bad):
    with pytest.raises(bad.error, match=bad.match):
        bad.call()


def test_sequence_helpers_take_their_whole_ranges():
    assert dedup.increment_sequence(INT32_MAX, 1) == 0 and dedup.decrement_sequence(0, 1) == INT32_MAX
    assert dedup.in_sequence(-1, 0) and dedup.in_sequence(INT32_MAX, 0)
    assert not dedup.in_sequence(INT32_MAX, -(1 << 31))


# --- record batches: both twins of dedup.records ------------------------------------------------


def _read_only_for_write(records, T):
    return records.append_batches(T(), GOOD_BATCH, log_end_offset=20, write_offsets=True)


RECORDS_ROWS = [
    row(
        "append_batches", "table", "None", lambda r, T: r.append_batches(None, GOOD_BATCH, log_end_offset=20), TypeError
    ),
    row(
        "append_batches",
        "table",
        "the other twin's",
        lambda r, T: r.append_batches(other_table_class(T)(), GOOD_BATCH, log_end_offset=20),
        TypeError,
    ),
    row("append_batches", "data", "None", lambda r, T: r.append_batches(T(), None, log_end_offset=20), TypeError),
    row("append_batches", "data", "str", lambda r, T: r.append_batches(T(), "batch", log_end_offset=20), TypeError),
    row(
        "append_batches",
        "data",
        "non-contiguous",
        lambda r, T: r.append_batches(T(), STRIDED, log_end_offset=20),
        TypeError,
    ),
    row("append_batches", "data", "read-only where written", _read_only_for_write, TypeError, "read-only"),
    row(
        "append_batches",
        "data",
        "truncated",
        lambda r, T: r.append_batches(T(), TRUNCATED, log_end_offset=20),
        TruncatedBatchError,
        "truncated: the batch needs 69 bytes, 68 are left",
    ),
    row("append_batches", "log_end_offset", "None (leader)", lambda r, T: r.append_batches(T(), GOOD_BATCH), TypeError),
    row(
        "append_batches",
        "log_end_offset",
        "bool",
        lambda r, T: r.append_batches(T(), GOOD_BATCH, log_end_offset=True),
        TypeError,
    ),
    row(
        "append_batches",
        "log_end_offset",
        "float",
        lambda r, T: r.append_batches(T(), GOOD_BATCH, log_end_offset=20.0),
        TypeError,
    ),
    row(
        "append_batches",
        "log_end_offset",
        "negative",
        lambda r, T: r.append_batches(T(), GOOD_BATCH, log_end_offset=-1),
        ValueError,
    ),
    row(
        "append_batches",
        "log_end_offset",
        "beyond int64",
        lambda r, T: r.append_batches(T(), GOOD_BATCH, log_end_offset=1 << 63),
        ValueError,
    ),
    row(
        "append_batches",
        "log_end_offset",
        "int64 max (no room for the batch)",
        lambda r, T: r.append_batches(T(), GOOD_BATCH, log_end_offset=INT64_MAX),
        ValueError,
    ),
    row(
        "append_batches",
        "partition_leader_epoch",
        "beyond int32",
        lambda r, T: r.append_batches(
            T(), bytearray(GOOD_BATCH), log_end_offset=20, write_offsets=True, partition_leader_epoch=1 << 31
        ),
        ValueError,
    ),
    row(
        "append_batches",
        "partition_leader_epoch",
        "str",
        lambda r, T: r.append_batches(
            T(), bytearray(GOOD_BATCH), log_end_offset=20, write_offsets=True, partition_leader_epoch="1"
        ),
        TypeError,
    ),
    row(
        "append_batches",
        "partition_leader_epoch",
        "without write_offsets",
        lambda r, T: r.append_batches(T(), GOOD_BATCH, log_end_offset=20, partition_leader_epoch=1),
        ValueError,
    ),
    row(
        "append_batches",
        "write_offsets",
        "int",
        lambda r, T: r.append_batches(T(), bytearray(GOOD_BATCH), log_end_offset=20, write_offsets=1),
        TypeError,
    ),
    row(
        "append_batches",
        "write_offsets",
        "with REPLICATION",
        lambda r, T: r.append_batches(T(), bytearray(GOOD_BATCH), origin=Origin.REPLICATION, write_offsets=True),
        ValueError,
    ),
    row(
        "append_batches",
        "origin",
        "None",
        lambda r, T: r.append_batches(T(), GOOD_BATCH, log_end_offset=20, origin=None),
        TypeError,
    ),
    row(
        "append_batches",
        "origin",
        "out of the enum",
        lambda r, T: r.append_batches(T(), GOOD_BATCH, log_end_offset=20, origin=3),
        ValueError,
    ),
    row(
        "append_batches",
        "tail",
        "None",
        lambda r, T: r.append_batches(T(), GOOD_BATCH, log_end_offset=20, tail=None),
        ValueError,
    ),
    row(
        "append_batches",
        "tail",
        "int",
        lambda r, T: r.append_batches(T(), GOOD_BATCH, log_end_offset=20, tail=1),
        ValueError,
    ),
    row("scan_batches", "data", "None", lambda r, T: r.scan_batches(None), TypeError),
    row("scan_batches", "data", "int", lambda r, T: r.scan_batches(5), TypeError),
    row("scan_batches", "data", "non-contiguous", lambda r, T: r.scan_batches(STRIDED), TypeError),
    row("scan_batches", "data", "truncated", lambda r, T: r.scan_batches(TRUNCATED), TruncatedBatchError, "truncated"),
    row("scan_batches", "tail", "unknown", lambda r, T: r.scan_batches(GOOD_BATCH, tail="cut"), ValueError),
    row("scan_batches", "tail", "int", lambda r, T: r.scan_batches(GOOD_BATCH, tail=1), ValueError),
    row("validate_batches", "data", "None", lambda r, T: r.validate_batches(None), TypeError),
    row("validate_batches", "origin", "None", lambda r, T: r.validate_batches(GOOD_BATCH, origin=None), TypeError),
    row("validate_batches", "tail", "int", lambda r, T: r.validate_batches(GOOD_BATCH, tail=1), ValueError),
    row("check_one_batch", "data", "None", lambda r, T: r.check_one_batch(None), TypeError),
    row("check_one_batch", "origin", "str", lambda r, T: r.check_one_batch(GOOD_BATCH, origin="CLIENT"), TypeError),
    row("crc_valid", "data", "None", lambda r, T: r.crc_valid(None), TypeError),
    row("crc_valid", "data", "non-contiguous", lambda r, T: r.crc_valid(STRIDED), TypeError),
    row("crc_valid", "headers", "float array", lambda r, T: r.crc_valid(GOOD_BATCH, np.zeros(1)), TypeError),
    row("crc_valid", "headers", "list", lambda r, T: r.crc_valid(GOOD_BATCH, [0]), TypeError),
    row(
        "crc_valid",
        "headers",
        "another buffer's",
        lambda r, T: r.crc_valid(GOOD_BATCH[:20], r.scan_batches(GOOD_BATCH)),
        ValueError,
    ),
]


@pytest.mark.parametrize("bad", RECORDS_ROWS, ids=ids(RECORDS_ROWS))
def test_records(twin, bad):
    table_class, records = twin.table_class, twin.records
    with pytest.raises(bad.error, match=bad.match):
        bad.call(records, table_class)


@pytest.mark.parametrize(
    "log_end_offset, error",
    [(14, ValueError), (-1, ValueError), (2.0, TypeError)],
    ids=["backwards", "negative", "float"],
)
def test_append_batches_applies_nothing_on_a_bad_log_end_offset(twin, log_end_offset, error):
    table_class, records = twin.table_class, twin.records
    table = seeded(table_class)
    before = table_state(table)
    with pytest.raises(error, match="log_end_offset"):
        records.append_batches(table, GOOD_BATCH, log_end_offset=log_end_offset)
    assert table_state(table) == before


def test_follower_batch_below_the_log_end_is_refused_per_batch(twin):
    """Spec §3.4: a follower keeps the leader's offsets; one below the log end offset is
    INVALID_RECORD for that batch and nothing is recorded."""
    table_class, records = twin.table_class, twin.records
    table = seeded(table_class)
    before = table_state(table)
    behind = batches.encode_batch([b"v"], timestamp=1, producer_id=7, producer_epoch=0, base_sequence=0, base_offset=3)
    result = records.append_batches(table, behind, origin=Origin.REPLICATION)
    assert result.error_codes.tolist() == [InvalidRecordError.code]
    assert isinstance(result.errors[0], InvalidRecordError) and "offsets go backwards" in str(result.errors[0])
    assert table_state(table) == before


CRC_ROWS = [
    row("crc32c", "data", "None", lambda crc: crc(None), TypeError),
    row("crc32c", "data", "str", lambda crc: crc("123"), TypeError),
    row("crc32c", "data", "non-contiguous", lambda crc: crc(STRIDED), TypeError),
    row("crc32c", "crc", "None", lambda crc: crc(b"x", None), TypeError),
    row("crc32c", "crc", "negative", lambda crc: crc(b"x", -1), ValueError),
    row("crc32c", "crc", "beyond uint32", lambda crc: crc(b"x", 1 << 32), ValueError),
]


@pytest.mark.parametrize("bad", CRC_ROWS, ids=ids(CRC_ROWS))
def test_crc32c(twin, bad):
    with pytest.raises(bad.error, match=bad.match):
        bad.call(twin.crc32c)


def test_records_valid_empty_inputs(twin):
    table_class, records, crc32c = twin.table_class, twin.records, twin.crc32c
    assert len(records.scan_batches(b"")) == 0 and len(records.validate_batches(bytearray())) == 0
    assert records.crc_valid(b"").tolist() == [] and records.check_one_batch(b"") is None
    assert crc32c(b"") == 0
    table = seeded(table_class)
    before = table_state(table)
    result = records.append_batches(table, b"", log_end_offset=20)
    assert len(result.error_codes) == 0 and result.log_end_offset == 20
    assert table_state(table) == before


# --- snapshots (spec §4) ------------------------------------------------------------------------

SNAPSHOT_ROWS = [
    row("encode_snapshot", "table", "None", lambda T, d: snapshots.encode_snapshot(None), TypeError),
    row("encode_snapshot", "table", "object", lambda T, d: snapshots.encode_snapshot(object()), TypeError),
    row("encode_snapshot", "format", "None", lambda T, d: snapshots.encode_snapshot(T(), None), TypeError),
    row("encode_snapshot", "format", "unknown", lambda T, d: snapshots.encode_snapshot(T(), "csv"), ValueError),
    row("decode_snapshot", "data", "None", lambda T, d: snapshots.decode_snapshot(None, table_class=T), TypeError),
    row("decode_snapshot", "data", "str", lambda T, d: snapshots.decode_snapshot("DDPS", table_class=T), TypeError),
    row(
        "decode_snapshot",
        "data",
        "non-contiguous",
        lambda T, d: snapshots.decode_snapshot(memoryview(snapshots.encode_snapshot(T()) * 2)[::2], table_class=T),
        TypeError,
    ),
    row(
        "decode_snapshot",
        "data",
        "empty",
        lambda T, d: snapshots.decode_snapshot(b"", table_class=T),
        CorruptSnapshotError,
        "too short: expected at least 10 bytes, found 0",
    ),
    row(
        "decode_snapshot",
        "data",
        "unknown version",
        lambda T, d: snapshots.decode_snapshot(b"\x00\x07" * 8, table_class=T),
        CorruptSnapshotError,
        "found version 7",
    ),
    row(
        "decode_snapshot",
        "window",
        "zero",
        lambda T, d: snapshots.decode_snapshot(snapshots.encode_snapshot(T()), window=0, table_class=T),
        ValueError,
    ),
    row(
        "decode_snapshot",
        "window",
        "bool",
        lambda T, d: snapshots.decode_snapshot(snapshots.encode_snapshot(T()), window=True, table_class=T),
        TypeError,
    ),
    row(
        "decode_snapshot",
        "window",
        "differs from the file",
        lambda T, d: snapshots.decode_snapshot(snapshots.encode_snapshot(T()), window=7, table_class=T),
        ValueError,
    ),
    row(
        "decode_snapshot",
        "map_end_offset",
        "negative",
        lambda T, d: snapshots.decode_snapshot(snapshots.encode_snapshot(T()), map_end_offset=-1, table_class=T),
        ValueError,
    ),
    row(
        "decode_snapshot",
        "map_end_offset",
        "float",
        lambda T, d: snapshots.decode_snapshot(snapshots.encode_snapshot(T()), map_end_offset=1.0, table_class=T),
        TypeError,
    ),
    row(
        "decode_snapshot",
        "table_class",
        "not a table class",
        lambda T, d: snapshots.decode_snapshot(snapshots.encode_snapshot(T()), table_class=dict),
        TypeError,
    ),
    row("snapshot_format", "data", "None", lambda T, d: snapshots.snapshot_format(None), TypeError),
    row(
        "snapshot_format",
        "data",
        "empty",
        lambda T, d: snapshots.snapshot_format(b""),
        CorruptSnapshotError,
        "too short",
    ),
    row("write_snapshot", "path", "None", lambda T, d: snapshots.write_snapshot(None, T()), TypeError),
    row("write_snapshot", "path", "int", lambda T, d: snapshots.write_snapshot(5, T()), TypeError),
    row("write_snapshot", "table", "None", lambda T, d: snapshots.write_snapshot(d / "a.snapshot", None), TypeError),
    row("write_snapshot", "format", "int", lambda T, d: snapshots.write_snapshot(d / "a.snapshot", T(), 1), TypeError),
    row(
        "write_snapshot",
        "sync",
        "None",
        lambda T, d: snapshots.write_snapshot(d / "a.snapshot", T(), sync=None),
        TypeError,
    ),
    row("read_snapshot", "path", "None", lambda T, d: snapshots.read_snapshot(None, table_class=T), TypeError),
    row(
        "read_snapshot",
        "path",
        "empty file",
        lambda T, d: (
            (d / "e.snapshot").write_bytes(b"") and 0 or snapshots.read_snapshot(d / "e.snapshot", table_class=T)
        ),
        CorruptSnapshotError,
        "too short",
    ),
    row("snapshot_file_name", "offset", "None", lambda T, d: snapshots.snapshot_file_name(None), TypeError),
    row("snapshot_file_name", "offset", "bool", lambda T, d: snapshots.snapshot_file_name(True), TypeError),
    row("snapshot_file_name", "offset", "float", lambda T, d: snapshots.snapshot_file_name(1.0), TypeError),
    row("snapshot_file_name", "offset", "negative", lambda T, d: snapshots.snapshot_file_name(-1), ValueError),
    row("snapshot_file_name", "offset", "beyond int64", lambda T, d: snapshots.snapshot_file_name(1 << 63), ValueError),
    row("snapshot_offset", "path", "None", lambda T, d: snapshots.snapshot_offset(None), TypeError),
    row("snapshot_offset", "path", "int", lambda T, d: snapshots.snapshot_offset(5), TypeError),
    row("snapshot_offset", "path", "empty", lambda T, d: snapshots.snapshot_offset(""), ValueError),
    row("snapshot_offset", "path", "negative", lambda T, d: snapshots.snapshot_offset("-1.snapshot"), ValueError),
    row(
        "snapshot_offset",
        "path",
        "beyond int64",
        lambda T, d: snapshots.snapshot_offset("9" * 20 + ".snapshot"),
        ValueError,
    ),
]


@pytest.mark.parametrize("bad", SNAPSHOT_ROWS, ids=ids(SNAPSHOT_ROWS))
def test_snapshots(twin, tmp_path, bad):
    (tmp_path / "e.snapshot").write_bytes(b"")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(bad.error, match=bad.match):
        bad.call(twin.table_class, tmp_path)
    assert sorted(os.listdir(tmp_path)) == before  # a refused write leaves nothing behind


@pytest.mark.parametrize("kind", ["full", "kafka"])
def test_an_empty_table_is_a_valid_snapshot(twin, tmp_path, kind):
    table_class = twin.table_class
    data = snapshots.encode_snapshot(table_class(), kind)
    assert snapshots.snapshot_format(data) == kind
    assert table_state(snapshots.decode_snapshot(data, table_class=table_class)) == (0, 0, [])
    path = tmp_path / snapshots.snapshot_file_name(0)
    snapshots.write_snapshot(path, table_class(), kind)
    assert table_state(snapshots.read_snapshot(path, table_class=table_class)) == (0, 0, [])


# --- the batch codec ----------------------------------------------------------------------------


def encode(**overrides):
    arguments = dict(timestamp=1, producer_id=7, producer_epoch=0, base_sequence=0)
    arguments.update(overrides)
    return batches.encode_batch(arguments.pop("values", [b"v"]), **arguments)


def marker(**overrides):
    arguments = dict(producer_id=7, producer_epoch=0, commit=True, coordinator_epoch=0, timestamp=1)
    arguments.update(overrides)
    return batches.encode_marker(**arguments)


BATCH_ROWS = [
    row("encode_batch", "values", "None", lambda: encode(values=None), TypeError),
    row("encode_batch", "values", "str", lambda: encode(values="abc"), TypeError),
    row("encode_batch", "values", "empty", lambda: encode(values=[]), ValueError),
    row("encode_batch", "values", "int items", lambda: encode(values=np.array([1, 2])), TypeError, r"values\[0\]"),
    row("encode_batch", "keys", "mismatched length", lambda: encode(keys=[b"a", b"b"]), ValueError),
    row("encode_batch", "timestamp", "float", lambda: encode(timestamp=1.0), TypeError),
    row("encode_batch", "timestamp", "negative", lambda: encode(timestamp=-2), ValueError),
    row(
        "encode_batch", "timestamps", "mismatched length", lambda: encode(timestamp=None, timestamps=[1, 2]), ValueError
    ),
    row("encode_batch", "timestamp", "missing", lambda: encode(timestamp=None), TypeError),
    row("encode_batch", "producer_id", "negative", lambda: encode(producer_id=-2), ValueError),
    row("encode_batch", "producer_id", "beyond int64", lambda: encode(producer_id=1 << 63), ValueError),
    row("encode_batch", "producer_epoch", "beyond int16", lambda: encode(producer_epoch=1 << 15), ValueError),
    row("encode_batch", "base_sequence", "beyond int32", lambda: encode(base_sequence=1 << 31), ValueError),
    row(
        "encode_batch", "base_sequence", "-1 with a producer id (rule 8)", lambda: encode(base_sequence=-1), ValueError
    ),
    row("encode_batch", "base_offset", "negative", lambda: encode(base_offset=-1), ValueError),
    row(
        "encode_batch",
        "partition_leader_epoch",
        "beyond int32",
        lambda: encode(partition_leader_epoch=1 << 31),
        ValueError,
    ),
    row("encode_batch", "transactional", "int", lambda: encode(transactional=1), TypeError),
    row("encode_marker", "producer_id", "None", lambda: marker(producer_id=None), TypeError),
    row("encode_marker", "producer_id", "negative", lambda: marker(producer_id=-1), ValueError),
    row("encode_marker", "producer_epoch", "beyond int16", lambda: marker(producer_epoch=1 << 15), ValueError),
    row("encode_marker", "commit", "int", lambda: marker(commit=1), TypeError),
    row("encode_marker", "coordinator_epoch", "beyond int32", lambda: marker(coordinator_epoch=1 << 31), ValueError),
    row("encode_marker", "timestamp", "float", lambda: marker(timestamp=1.5), TypeError),
    row("decode_records", "data", "None", lambda: batches.decode_records(None), TypeError),
    row("decode_records", "data", "non-contiguous", lambda: batches.decode_records(STRIDED), TypeError),
    row(
        "decode_records",
        "data",
        "truncated",
        lambda: batches.decode_records(TRUNCATED),
        TruncatedBatchError,
        "truncated",
    ),
    row("decode_records", "control", "int", lambda: batches.decode_records(b"", control=1), TypeError),
]


@pytest.mark.parametrize("bad", BATCH_ROWS, ids=ids(BATCH_ROWS))
def test_batch_codec(bad):
    with pytest.raises(bad.error, match=bad.match):
        bad.call()


def test_batch_codec_valid_edges():
    assert batches.decode_records(b"") == []
    assert [r.value for r in batches.decode_records(encode(values=[None, b""]))] == [None, b""]


# --- checkpoints --------------------------------------------------------------------------------


def epochs(directory):
    cache = checkpoints.LeaderEpochCache(directory / checkpoints.LEADER_EPOCH_CHECKPOINT)
    cache.assign(0, 0)
    return cache


CHECKPOINT_ROWS = [
    row("write_checkpoint", "path", "None", lambda d: checkpoints.write_checkpoint(None, 0, []), TypeError),
    row("write_checkpoint", "version", "str", lambda d: checkpoints.write_checkpoint(d / "c", "0", []), TypeError),
    row(
        "write_checkpoint",
        "version",
        "beyond int32",
        lambda d: checkpoints.write_checkpoint(d / "c", 1 << 31, []),
        ValueError,
    ),
    row(
        "write_checkpoint",
        "lines",
        "bytes line",
        lambda d: checkpoints.write_checkpoint(d / "c", 0, [b"0 0"]),
        TypeError,
        "line",
    ),
    row(
        "write_checkpoint",
        "lines",
        "line with a newline",
        lambda d: checkpoints.write_checkpoint(d / "c", 0, ["a\nb"]),
        ValueError,
        "line",
    ),
    row("read_checkpoint", "path", "None", lambda d: checkpoints.read_checkpoint(None, 0, int), TypeError),
    row("write_offsets", "offsets", "None", lambda d: checkpoints.write_offsets(d / "o", None), TypeError),
    row(
        "write_offsets",
        "topic",
        "illegal name",
        lambda d: checkpoints.write_offsets(d / "o", {("a/b", 0): 1}),
        ValueError,
    ),
    row(
        "write_offsets",
        "partition",
        "negative",
        lambda d: checkpoints.write_offsets(d / "o", {("a", -1): 1}),
        ValueError,
    ),
    row(
        "write_offsets", "offset", "negative", lambda d: checkpoints.write_offsets(d / "o", {("a", 0): -1}), ValueError
    ),
    row("read_offsets", "path", "None", lambda d: checkpoints.read_offsets(None), TypeError),
    row("LeaderEpochCache.assign", "epoch", "negative", lambda d: epochs(d).assign(-1, 5), ValueError),
    row("LeaderEpochCache.assign", "start_offset", "negative", lambda d: epochs(d).assign(1, -1), ValueError),
    row("LeaderEpochCache.assign", "epoch", "None", lambda d: epochs(d).assign(None, 5), TypeError),
    row(
        "LeaderEpochCache.epoch_for_offset", "offset", "negative", lambda d: epochs(d).epoch_for_offset(-1), ValueError
    ),
    row(
        "LeaderEpochCache.end_offset_for",
        "requested_epoch",
        "None",
        lambda d: epochs(d).end_offset_for(None, 0),
        TypeError,
    ),
    row(
        "LeaderEpochCache.end_offset_for",
        "log_end_offset",
        "negative",
        lambda d: epochs(d).end_offset_for(0, -1),
        ValueError,
    ),
    row(
        "LeaderEpochCache.truncate_from_end",
        "end_offset",
        "below -1",
        lambda d: epochs(d).truncate_from_end(-2),
        ValueError,
    ),
    row(
        "LeaderEpochCache.truncate_from_start",
        "start_offset",
        "float",
        lambda d: epochs(d).truncate_from_start(1.0),
        TypeError,
    ),
    row("parse_partition_directory", "name", "None", lambda d: checkpoints.parse_partition_directory(None), TypeError),
    row(
        "parse_partition_directory",
        "name",
        "no partition",
        lambda d: checkpoints.parse_partition_directory("abc"),
        ValueError,
        "abc",
    ),
    row(
        "partition_directory_name", "topic", "None", lambda d: checkpoints.partition_directory_name(None, 0), TypeError
    ),
    row(
        "partition_directory_name",
        "partition",
        "negative",
        lambda d: checkpoints.partition_directory_name("a", -1),
        ValueError,
    ),
]


@pytest.mark.parametrize("bad", CHECKPOINT_ROWS, ids=ids(CHECKPOINT_ROWS))
def test_checkpoints(tmp_path, bad):
    with pytest.raises(bad.error, match=bad.match):
        bad.call(tmp_path)
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()
    leftovers = [name for name in os.listdir(tmp_path) if name != checkpoints.LEADER_EPOCH_CHECKPOINT]
    assert leftovers == []


def test_checkpoints_valid_empty_inputs(tmp_path):
    checkpoints.write_offsets(tmp_path / "o", {})
    assert checkpoints.read_offsets(tmp_path / "o") == {}
    assert checkpoints.read_checkpoint(tmp_path / "missing", 0, int) == []
    (tmp_path / "empty").write_bytes(b"")
    assert checkpoints.read_checkpoint(tmp_path / "empty", 0, int) == []


# --- the partition log --------------------------------------------------------------------------


def log_state(log):
    return (
        log.log_start_offset,
        log.log_end_offset,
        log.high_watermark,
        log.latest_epoch,
        log.size_bytes,
        table_state(log.producer_state),
        sorted(os.listdir(log.directory)),
    )


def open_log(directory, table_class, **options):
    log = PartitionLog(directory / "clicks-0", table_class=table_class, **options)
    log.append_as_leader(GOOD_BATCH, leader_epoch=0)
    log.update_high_watermark(1)
    return log


LOG_CONSTRUCTOR_ROWS = [
    row("PartitionLog", "directory", "None", lambda d, T: PartitionLog(None, table_class=T), TypeError),
    row("PartitionLog", "directory", "int", lambda d, T: PartitionLog(5, table_class=T), TypeError),
    row(
        "PartitionLog",
        "segment_bytes",
        "below the batch overhead",
        lambda d, T: PartitionLog(d, segment_bytes=10, table_class=T),
        ValueError,
    ),
    row(
        "PartitionLog",
        "segment_bytes",
        "None",
        lambda d, T: PartitionLog(d, segment_bytes=None, table_class=T),
        TypeError,
    ),
    row("PartitionLog", "window", "zero", lambda d, T: PartitionLog(d, window=0, table_class=T), ValueError),
    row(
        "PartitionLog",
        "producer_id_expiration_ms",
        "zero",
        lambda d, T: PartitionLog(d, producer_id_expiration_ms=0, table_class=T),
        ValueError,
    ),
    row(
        "PartitionLog",
        "retention_bytes",
        "below -1",
        lambda d, T: PartitionLog(d, retention_bytes=-2, table_class=T),
        ValueError,
    ),
    row(
        "PartitionLog",
        "retention_ms",
        "float",
        lambda d, T: PartitionLog(d, retention_ms=1.5, table_class=T),
        TypeError,
    ),
    row(
        "PartitionLog",
        "snapshot_format",
        "None",
        lambda d, T: PartitionLog(d, snapshot_format=None, table_class=T),
        TypeError,
    ),
    row(
        "PartitionLog",
        "snapshot_format",
        "unknown",
        lambda d, T: PartitionLog(d, snapshot_format="csv", table_class=T),
        ValueError,
    ),
    row("PartitionLog", "fsync", "int", lambda d, T: PartitionLog(d, fsync=1, table_class=T), TypeError),
    row("PartitionLog", "clock", "not callable", lambda d, T: PartitionLog(d, clock=5, table_class=T), TypeError),
    row("PartitionLog", "capacity", "negative", lambda d, T: PartitionLog(d, capacity=-1, table_class=T), ValueError),
    row("PartitionLog", "table_class", "not a table class", lambda d, T: PartitionLog(d, table_class=int), TypeError),
    row("PartitionLog", "table_class", "an instance", lambda d, T: PartitionLog(d, table_class=T()), TypeError),
]


@pytest.mark.parametrize("bad", LOG_CONSTRUCTOR_ROWS, ids=ids(LOG_CONSTRUCTOR_ROWS))
def test_log_constructor(twin, tmp_path, bad):
    directory = tmp_path / "clicks-0"
    with pytest.raises(bad.error, match=bad.match):
        bad.call(directory, twin.table_class)
    assert not directory.exists()  # checked before anything is created


def _follower_behind(log):
    return log.append_as_follower(encode(base_offset=0))


LOG_ROWS = [
    row("append_as_leader", "records", "None", lambda log: log.append_as_leader(None), TypeError),
    row("append_as_leader", "records", "str", lambda log: log.append_as_leader("batch"), TypeError),
    row("append_as_leader", "records", "int", lambda log: log.append_as_leader(69), TypeError),
    row("append_as_leader", "records", "non-contiguous", lambda log: log.append_as_leader(STRIDED), TypeError),
    row(
        "append_as_leader",
        "records",
        "truncated",
        lambda log: log.append_as_leader(TRUNCATED),
        TruncatedBatchError,
        "truncated",
    ),
    row(
        "append_as_leader",
        "leader_epoch",
        "below -1",
        lambda log: log.append_as_leader(GOOD_BATCH, leader_epoch=-2),
        ValueError,
    ),
    row(
        "append_as_leader",
        "leader_epoch",
        "None",
        lambda log: log.append_as_leader(GOOD_BATCH, leader_epoch=None),
        TypeError,
    ),
    row(
        "append_as_leader",
        "leader_epoch",
        "beyond int32",
        lambda log: log.append_as_leader(GOOD_BATCH, leader_epoch=1 << 31),
        ValueError,
    ),
    row("append_as_leader", "origin", "None", lambda log: log.append_as_leader(GOOD_BATCH, origin=None), TypeError),
    row(
        "append_as_leader",
        "origin",
        "REPLICATION",
        lambda log: log.append_as_leader(GOOD_BATCH, origin=Origin.REPLICATION),
        ValueError,
        "append_as_follower",
    ),
    row("append_as_follower", "records", "None", lambda log: log.append_as_follower(None), TypeError),
    row("append_as_follower", "records", "str", lambda log: log.append_as_follower("batch"), TypeError),
    row("append_as_follower", "records", "non-contiguous", lambda log: log.append_as_follower(STRIDED), TypeError),
    row(
        "append_as_follower",
        "records",
        "truncated",
        lambda log: log.append_as_follower(TRUNCATED),
        TruncatedBatchError,
        "truncated",
    ),
    # Spec §3.4: the leader's offsets, which must not go below the log end offset.
    row(
        "append_as_follower",
        "records",
        "offsets below the log end",
        _follower_behind,
        InvalidRecordError,
        r"base_offset: expected at least 1 \(the log end offset\), found 0: offsets go backwards",
    ),
    row("read", "offset", "None", lambda log: log.read(None), TypeError),
    row("read", "offset", "negative", lambda log: log.read(-1), ValueError),
    row("read", "offset", "above the log end", lambda log: log.read(5), OffsetOutOfRangeError, "offset 5"),
    row("read", "max_bytes", "negative", lambda log: log.read(0, -1), ValueError),
    row("read", "max_offset", "float", lambda log: log.read(0, max_offset=1.0), TypeError),
    row("truncate_to", "offset", "None", lambda log: log.truncate_to(None), TypeError),
    row("truncate_to", "offset", "negative", lambda log: log.truncate_to(-1), ValueError),
    row("truncate_fully_and_start_at", "offset", "None", lambda log: log.truncate_fully_and_start_at(None), TypeError),
    row(
        "truncate_fully_and_start_at", "offset", "negative", lambda log: log.truncate_fully_and_start_at(-1), ValueError
    ),
    row(
        "truncate_fully_and_start_at",
        "offset",
        "beyond int64",
        lambda log: log.truncate_fully_and_start_at(1 << 63),
        ValueError,
    ),
    row("delete_records", "offset", "None", lambda log: log.delete_records(None), TypeError),
    row("delete_records", "offset", "negative", lambda log: log.delete_records(-1), ValueError),
    row(
        "delete_records",
        "offset",
        "above the high watermark",
        lambda log: log.delete_records(5),
        OffsetOutOfRangeError,
        "up to 5: above the high watermark 1",
    ),
    row("update_high_watermark", "offset", "None", lambda log: log.update_high_watermark(None), TypeError),
    row("update_high_watermark", "offset", "negative", lambda log: log.update_high_watermark(-1), ValueError),
    row("remove_expired_producers", "now_ms", "str", lambda log: log.remove_expired_producers("now"), TypeError),
    row("remove_expired_producers", "now_ms", "float", lambda log: log.remove_expired_producers(1.5), TypeError),
    row("apply_retention", "now_ms", "str", lambda log: log.apply_retention("now"), TypeError),
    row("apply_retention", "now_ms", "beyond int64", lambda log: log.apply_retention(1 << 63), ValueError),
    row("assign_leader_epoch", "epoch", "None", lambda log: log.assign_leader_epoch(None), TypeError),
    row("assign_leader_epoch", "epoch", "negative", lambda log: log.assign_leader_epoch(-1), ValueError),
    row("assign_leader_epoch", "epoch", "beyond int32", lambda log: log.assign_leader_epoch(1 << 31), ValueError),
    row("end_offset_for_epoch", "requested_epoch", "None", lambda log: log.end_offset_for_epoch(None), TypeError),
    row("take_snapshot", "sync", "int", lambda log: log.take_snapshot(sync=1), TypeError),
    row("snapshot_path", "offset", "negative", lambda log: log.snapshot_path(-1), ValueError),
]


@pytest.mark.parametrize("bad", LOG_ROWS, ids=ids(LOG_ROWS))
def test_log(twin, tmp_path, bad):
    log = open_log(tmp_path, twin.table_class)
    try:
        before = log_state(log)
        with pytest.raises(bad.error, match=bad.match):
            bad.call(log)
        assert log_state(log) == before
    finally:
        log.close()


def test_log_valid_edges(twin, tmp_path):
    """Empty appends are no-ops; truncating at or above the log end is a no-op (spec §5.5:
    target >= LEO); a high watermark past the log end is kept at the log end."""
    log = open_log(tmp_path, twin.table_class)
    try:
        before = log_state(log)
        assert log.append_as_leader(b"").batches == 0 and log.append_as_follower(bytearray()).batches == 0
        assert log.truncate_to(1) is False and log.truncate_to(99) is False
        assert log.read(1) == b""
        assert log.update_high_watermark(50) == 1
        assert log.delete_records(0) == 0
        assert log_state(log) == before
    finally:
        log.close()


# --- the replicated cluster ---------------------------------------------------------------------


def cluster_state(cluster):
    return (
        cluster.leader_id,
        cluster.leader_epoch,
        sorted(cluster.isr),
        [(broker.alive, broker.log and broker.log.log_end_offset) for broker in cluster.brokers],
    )


CLUSTER_CONSTRUCTOR_ROWS = [
    row("Cluster", "directory", "None", lambda d: Cluster(None), TypeError),
    row("Cluster", "brokers", "zero", lambda d: Cluster(d, brokers=0), ValueError),
    row("Cluster", "brokers", "None", lambda d: Cluster(d, brokers=None), TypeError),
    row("Cluster", "brokers", "beyond 64", lambda d: Cluster(d, brokers=65), ValueError),
    # The topic names the replicas' directories: "../x" would write outside the cluster.
    row("Cluster", "topic", "None", lambda d: Cluster(d, topic=None), TypeError),
    row("Cluster", "topic", "empty", lambda d: Cluster(d, topic=""), ValueError),
    row("Cluster", "topic", "a path", lambda d: Cluster(d, topic="../x"), ValueError),
    row(
        "Cluster",
        "min_insync_replicas",
        "more than the brokers",
        lambda d: Cluster(d, min_insync_replicas=4),
        ValueError,
    ),
    row("Cluster", "unclean_leader_election", "int", lambda d: Cluster(d, unclean_leader_election=1), TypeError),
    row("Cluster", "clock", "not callable", lambda d: Cluster(d, clock=5), TypeError),
]


@pytest.mark.parametrize("bad", CLUSTER_CONSTRUCTOR_ROWS, ids=ids(CLUSTER_CONSTRUCTOR_ROWS))
def test_cluster_constructor(tmp_path, bad):
    directory = tmp_path / "cluster"
    with pytest.raises(bad.error, match=bad.match):
        bad.call(directory)
    assert not directory.exists() and os.listdir(tmp_path) == []


CLUSTER_ROWS = [
    row("Cluster.produce", "records", "None", lambda c: c.produce(None), TypeError),
    row("Cluster.produce", "records", "non-contiguous", lambda c: c.produce(STRIDED), TypeError),
    row("Cluster.produce", "acks", "None", lambda c: c.produce(GOOD_BATCH, acks=None), ValueError),
    row("Cluster.produce", "acks", "int", lambda c: c.produce(GOOD_BATCH, acks=1), ValueError),
    # A negative id would index from the end and stop the last broker.
    row("Cluster.stop_broker", "broker_id", "negative", lambda c: c.stop_broker(-1), ValueError),
    row("Cluster.stop_broker", "broker_id", "past the last", lambda c: c.stop_broker(3), ValueError),
    row("Cluster.stop_broker", "broker_id", "None", lambda c: c.stop_broker(None), TypeError),
    row("Cluster.stop_broker", "broker_id", "str", lambda c: c.stop_broker("0"), TypeError),
    row("Cluster.stop_broker", "broker_id", "bool", lambda c: c.stop_broker(True), TypeError),
    row("Cluster.stop_broker", "broker_id", "float", lambda c: c.stop_broker(1.0), TypeError),
    row("Cluster.stop_broker", "clean", "int", lambda c: c.stop_broker(1, clean=1), TypeError),
    row("Cluster.start_broker", "broker_id", "negative", lambda c: c.start_broker(-1), ValueError),
    row("Cluster.start_broker", "broker_id", "past the last", lambda c: c.start_broker(3), ValueError),
    row("Cluster.start_broker", "broker_id", "bool", lambda c: c.start_broker(True), TypeError),
    row("Cluster.consume", "isolation", "unknown", lambda c: c.consume(isolation="dirty"), ValueError),
    row("Cluster.consume", "offset", "negative", lambda c: c.consume(from_offset=-1), ValueError),
    row(
        "Cluster.write_marker",
        "producer_id",
        "None",
        lambda c: c.write_marker(None, 0, commit=True, coordinator_epoch=0),
        TypeError,
    ),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One cluster for every row (each refused call must leave it as it was), broker 2 down."""
    with Cluster(tmp_path_factory.mktemp("cluster"), clock=lambda: 1_700_000_000_000) as made:
        assert made.produce(GOOD_BATCH).error is None
        made.stop_broker(2)
        yield made


@pytest.mark.parametrize("bad", CLUSTER_ROWS, ids=ids(CLUSTER_ROWS))
def test_cluster(cluster, bad):
    before = cluster_state(cluster)
    with pytest.raises(bad.error, match=bad.match):
        bad.call(cluster)
    assert cluster_state(cluster) == before


# --- producer, network, server, simulation ------------------------------------------------------

CLIENT_ROWS = [
    # The full option matrix is tests/cluster/test_producer.py (test_bad_producer_arguments_name_themselves).
    row("IdempotentProducer", "cluster", "None", lambda: IdempotentProducer(None), TypeError),
    row("IdempotentProducer", "cluster", "object", lambda: IdempotentProducer(object()), TypeError),
    row("Network", "seed", "None", lambda: Network(None), TypeError),
    row("Network", "seed", "float", lambda: Network(1.5), TypeError),
    row("Network", "drop_request", "None", lambda: Network(drop_request=None), TypeError),
    row("Network", "drop_request", "1 (nothing gets through)", lambda: Network(drop_request=1.0), ValueError),
    row("Network", "drop_response", "negative", lambda: Network(drop_response=-0.1), ValueError),
    row("Network", "reorder", "int", lambda: Network(reorder=1), TypeError),
    row("Faults", "drop_responses", "None", lambda: Faults(drop_responses=None), TypeError),
    row("Faults", "drop_responses", "str", lambda: Faults(drop_responses="0.1"), TypeError),
    row("Faults", "drop_responses", "above 1", lambda: Faults(drop_responses=1.5), ValueError),
    row("Faults", "delay_responses", "negative", lambda: Faults(delay_responses=-0.5), ValueError),
    row("Faults", "close_connections", "bool", lambda: Faults(close_connections=True), TypeError),
    row(
        "Faults",
        "delay_responses",
        "shares above 1 together",
        lambda: Faults(drop_responses=0.6, delay_responses=0.6),
        ValueError,
    ),
    row("Faults", "delay_seconds", "None", lambda: Faults(delay_seconds=None), TypeError),
    row("Faults", "delay_seconds", "negative", lambda: Faults(delay_seconds=-1), ValueError),
    row("Faults", "delay_seconds", "infinite", lambda: Faults(delay_seconds=float("inf")), ValueError),
    row("Faults", "seed", "float", lambda: Faults(seed=1.5), TypeError),
    row("Faults", "seed", "list", lambda: Faults(seed=[1]), TypeError),
    row("run_seed", "seed", "None", lambda: run_seed(None, steps=0), TypeError),
    row("run_seed", "seed", "str", lambda: run_seed("7", steps=0), TypeError),
    row("run_seed", "seed", "float", lambda: run_seed(1.5, steps=0), TypeError),
    row("run_seed", "seed", "negative", lambda: run_seed(-1, steps=0), ValueError),
    row("run_seed", "unclean_share", "str", lambda: run_seed(1, unclean_share="x", steps=0), TypeError),
    row("run_seed", "unclean_share", "above 1", lambda: run_seed(1, unclean_share=2.0, steps=0), ValueError),
    row("run_seed", "unclean_share", "None", lambda: run_seed(1, unclean_share=None, steps=0), TypeError),
    row("run_seed", "steps", "negative", lambda: run_seed(1, steps=-1), ValueError),
    row("run_seed", "steps", "None", lambda: run_seed(1, steps=None), TypeError),
    row("run_seed", "steps", "float", lambda: run_seed(1, steps=1.5), TypeError),
]


@pytest.mark.parametrize("bad", CLIENT_ROWS, ids=ids(CLIENT_ROWS))
def test_clients_and_simulation(bad):
    with pytest.raises(bad.error, match=bad.match):
        bad.call()


SERVER_ROWS = [
    row("KafkaServer", "directory", "int", lambda d: KafkaServer(5, brokers=1), TypeError),
    row("KafkaServer", "brokers", "zero", lambda d: KafkaServer(d, brokers=0), ValueError),
    # A str would be read as its letters, one topic each; a path would leave the directory.
    row("KafkaServer", "topics", "str", lambda d: KafkaServer(d, brokers=1, topics="abc"), TypeError),
    row("KafkaServer", "topics", "None", lambda d: KafkaServer(d, brokers=1, topics=None), TypeError),
    row("KafkaServer", "topics", "empty", lambda d: KafkaServer(d, brokers=1, topics=[]), ValueError),
    row("KafkaServer", "topics", "repeated", lambda d: KafkaServer(d, brokers=1, topics=["a", "a"]), ValueError),
    row(
        "KafkaServer", "topics", "int name", lambda d: KafkaServer(d, brokers=1, topics=[1]), TypeError, r"topics\[0\]"
    ),
    row(
        "KafkaServer",
        "topics",
        "a path",
        lambda d: KafkaServer(d, brokers=1, topics=["../x"]),
        ValueError,
        r"topics\[0\]",
    ),
    row("KafkaServer", "ports", "int", lambda d: KafkaServer(d, brokers=1, ports=5), TypeError),
    row(
        "KafkaServer", "ports", "str port", lambda d: KafkaServer(d, brokers=1, ports=["80"]), TypeError, r"ports\[0\]"
    ),
    row(
        "KafkaServer", "ports", "float port", lambda d: KafkaServer(d, brokers=1, ports=[1.5]), TypeError, r"ports\[0\]"
    ),
    row(
        "KafkaServer",
        "ports",
        "negative port",
        lambda d: KafkaServer(d, brokers=1, ports=[-1]),
        ValueError,
        r"ports\[0\]",
    ),
    row(
        "KafkaServer",
        "ports",
        "beyond uint16",
        lambda d: KafkaServer(d, brokers=1, ports=[70000]),
        ValueError,
        r"ports\[0\]",
    ),
    row("KafkaServer", "ports", "mismatched length", lambda d: KafkaServer(d, brokers=2, ports=[0]), ValueError),
    row("KafkaServer", "host", "None", lambda d: KafkaServer(d, brokers=1, host=None), TypeError),
    row("KafkaServer", "host", "empty", lambda d: KafkaServer(d, brokers=1, host=""), ValueError),
    row("KafkaServer", "deduplicate", "int", lambda d: KafkaServer(d, brokers=1, deduplicate=1), TypeError),
    row("KafkaServer", "faults", "int", lambda d: KafkaServer(d, brokers=1, faults=5), TypeError),
    row(
        "KafkaServer",
        "max_request_bytes",
        "too small",
        lambda d: KafkaServer(d, brokers=1, max_request_bytes=1),
        ValueError,
    ),
    row("KafkaServer", "cluster_id", "None", lambda d: KafkaServer(d, brokers=1, cluster_id=None), TypeError),
]


@pytest.mark.parametrize("bad", SERVER_ROWS, ids=ids(SERVER_ROWS))
def test_server_constructor(tmp_path, bad):
    directory = tmp_path / "server"
    with pytest.raises(bad.error, match=bad.match):
        bad.call(directory)
    assert os.listdir(tmp_path) == []  # checked before anything is created


@pytest.mark.parametrize(
    "method, broker_id, keywords, error",
    [
        ("stop_broker", -1, {}, ValueError),
        ("stop_broker", 2, {}, ValueError),
        ("stop_broker", True, {}, TypeError),
        ("stop_broker", 1, {"clean": 1}, TypeError),
        ("start_broker", -1, {}, ValueError),
        ("start_broker", None, {}, TypeError),
    ],
)
def test_server_broker_ids(tmp_path, method, broker_id, keywords, error):
    server = KafkaServer(tmp_path, brokers=2)
    try:
        before = [cluster_state(cluster) for cluster in server.clusters.values()], server.live_brokers()
        match = "clean" if keywords else "broker_id"
        with pytest.raises(error, match=match):
            asyncio.run(getattr(server, method)(broker_id, **keywords))
        assert ([cluster_state(cluster) for cluster in server.clusters.values()], server.live_brokers()) == before
    finally:
        asyncio.run(server.close())


# --- the matrix itself --------------------------------------------------------------------------

ALL_ROWS = (
    TABLE_ROWS
    + SEQUENCE_ROWS
    + RECORDS_ROWS
    + CRC_ROWS
    + SNAPSHOT_ROWS
    + BATCH_ROWS
    + CHECKPOINT_ROWS
    + LOG_CONSTRUCTOR_ROWS
    + LOG_ROWS
    + CLUSTER_CONSTRUCTOR_ROWS
    + CLUSTER_ROWS
    + CLIENT_ROWS
    + SERVER_ROWS
)


def test_every_public_name_of_the_package_that_takes_arguments_is_in_the_matrix():
    covered = {bad.entry.split(".")[0] for bad in ALL_ROWS}
    takes_arguments = {
        "ProducerStateTable",
        "PartitionLog",
        "append_batches",
        "crc32c",
        "crc_valid",
        "decode_snapshot",
        "encode_snapshot",
        "read_snapshot",
        "scan_batches",
        "snapshot_file_name",
        "snapshot_format",
        "snapshot_offset",
        "validate_batches",
        "write_snapshot",
        "decrement_sequence",
        "in_sequence",
        "increment_sequence",
    }
    assert takes_arguments <= set(dedup.__all__)
    # Methods are rows under their own names; the classes' constructors under the class's.
    assert takes_arguments - covered == set()
    assert len(ALL_ROWS) == len(set(ids(ALL_ROWS))), "two rows with the same id"
