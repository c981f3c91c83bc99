"""The bad-input matrix (see test_bad_input_matrix.py), part 2: Kafka's bytes. The batch
functions of both twins (``dedup._records`` and ``dedup.reference.records``) and CRC-32C, the
snapshot functions (spec §4) and the batch codec: a ``TypeError`` or ``ValueError`` naming the
argument, or a typed Kafka/snapshot error for bad bytes, and nothing applied."""

from __future__ import annotations

import os

import numpy as np
import pytest
from bad_input import (
    GOOD_BATCH,
    INT64_MAX,
    STRIDED,
    TRUNCATED,
    encode,
    ids,
    other_table_class,
    row,
    seeded,
    table_state,
)

from dedup import Origin
from dedup import batch as batches
from dedup import snapshot as snapshots
from dedup.errors import CorruptSnapshotError, InvalidRecordError, TruncatedBatchError

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
    table_class, records = twin.ProducerStateTable, twin.records
    with pytest.raises(bad.error, match=bad.match):
        bad.call(records, table_class)


@pytest.mark.parametrize(
    "log_end_offset, error",
    [(14, ValueError), (-1, ValueError), (2.0, TypeError)],
    ids=["backwards", "negative", "float"],
)
def test_append_batches_applies_nothing_on_a_bad_log_end_offset(twin, log_end_offset, error):
    table_class, records = twin.ProducerStateTable, twin.records
    table = seeded(table_class)
    before = table_state(table)
    with pytest.raises(error, match="log_end_offset"):
        records.append_batches(table, GOOD_BATCH, log_end_offset=log_end_offset)
    assert table_state(table) == before


def test_follower_batch_below_the_log_end_is_refused_per_batch(twin):
    """Spec §3.4: a follower keeps the leader's offsets; one below the log end offset is
    INVALID_RECORD for that batch and nothing is recorded."""
    table_class, records = twin.ProducerStateTable, twin.records
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
    table_class, records, crc32c = twin.ProducerStateTable, twin.records, twin.crc32c
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
        bad.call(twin.ProducerStateTable, tmp_path)
    assert sorted(os.listdir(tmp_path)) == before  # a refused write leaves nothing behind


@pytest.mark.parametrize("kind", ["full", "kafka"])
def test_an_empty_table_is_a_valid_snapshot(twin, tmp_path, kind):
    table_class = twin.ProducerStateTable
    data = snapshots.encode_snapshot(table_class(), kind)
    assert snapshots.snapshot_format(data) == kind
    assert table_state(snapshots.decode_snapshot(data, table_class=table_class)) == (0, 0, [])
    path = tmp_path / snapshots.snapshot_file_name(0)
    snapshots.write_snapshot(path, table_class(), kind)
    assert table_state(snapshots.read_snapshot(path, table_class=table_class)) == (0, 0, [])


# --- the batch codec ----------------------------------------------------------------------------


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
