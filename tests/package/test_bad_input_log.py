"""The bad-input matrix (see test_bad_input_matrix.py), part 3: the checkpoint files and the
partition log, its constructor and every method, on both twins' tables: the argument named,
nothing applied (the log's offsets and the files on disk unchanged)."""

from __future__ import annotations

import os

import pytest
from bad_input import (
    GOOD_BATCH,
    STRIDED,
    TRUNCATED,
    encode,
    ids,
    row,
    table_state,
)

from dedup import Origin, PartitionLog, checkpoints
from dedup.errors import InvalidRecordError, OffsetOutOfRangeError, TruncatedBatchError

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
        bad.call(directory, twin.ProducerStateTable)
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
    log = open_log(tmp_path, twin.ProducerStateTable)
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
    log = open_log(tmp_path, twin.ProducerStateTable)
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
