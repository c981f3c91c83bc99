"""Checkpoint files (dedup.checkpoints): Kafka's text format, offset checkpoints, the
leader-epoch cache and partition directory names, on real files.

Tests named after one in Kafka's LeaderEpochFileCacheTest (storage/src/test/java/org/apache/
kafka/storage/internals/epoch/) mirror it: same operations, same expected entries.
"""

from __future__ import annotations

import doctest
import itertools
import os
import tempfile

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dedup import checkpoints
from dedup.checkpoints import (
    LEADER_EPOCH_CHECKPOINT,
    UNDEFINED_EPOCH,
    UNDEFINED_EPOCH_OFFSET,
    EpochEntry,
    LeaderEpochCache,
    OffsetCheckpoint,
    parse_partition_directory,
    partition_directory_name,
    read_checkpoint,
    read_offsets,
    write_checkpoint,
    write_offsets,
)
from dedup.errors import CorruptCheckpointError

UNDEFINED = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)


def test_doctests(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    failures, tried = doctest.testmod(checkpoints)
    assert tried > 0 and failures == 0


# --- the format ---------------------------------------------------------------------------


def test_write_gives_kafkas_bytes(tmp_path):
    path = tmp_path / LEADER_EPOCH_CHECKPOINT
    write_checkpoint(path, 0, ["0 0", "3 120"])
    assert path.read_bytes() == b"0\n2\n0 0\n3 120\n"


def test_a_bytes_path_is_written(tmp_path):
    path = tmp_path / "leader-epoch-checkpoint"
    write_checkpoint(os.fsencode(path), 0, ["0 0"])  # was a TypeError joining bytes and str
    assert path.read_bytes() == b"0\n1\n0 0\n" and os.listdir(tmp_path) == [path.name]


def test_write_no_entries(tmp_path):
    path = tmp_path / "checkpoint"
    write_checkpoint(path, 0, [])
    assert path.read_bytes() == b"0\n0\n"
    assert read_checkpoint(path, 0, str) == []


def test_round_trip_keeps_lines_and_order(tmp_path):
    path = tmp_path / "checkpoint"
    lines = ["b 1", "a 0", "", "ünïcode 7"]
    write_checkpoint(path, 3, iter(lines))  # any iterable
    assert read_checkpoint(path, 3, str) == lines


def test_rewrite_replaces_whole_file(tmp_path):
    path = tmp_path / "checkpoint"
    write_checkpoint(path, 0, ["x"] * 50)
    write_checkpoint(path, 0, ["y"])
    assert path.read_bytes() == b"0\n1\ny\n"


def test_missing_file_is_empty(tmp_path):
    assert read_checkpoint(tmp_path / "absent", 0, str) == []
    assert read_checkpoint(tmp_path / "no-such-dir" / "absent", 0, str) == []


def test_empty_file_is_empty(tmp_path):
    # Kafka's CheckpointFile constructor creates the file empty; it reads as no entries.
    path = tmp_path / "checkpoint"
    path.write_bytes(b"")
    assert read_checkpoint(path, 0, str) == []


@pytest.mark.parametrize(
    "data",
    [b"0\n2\n0 0\n3 120\n", b"0\r\n2\r\n0 0\r\n3 120\r\n", b"0\r2\r0 0\r3 120\r", b"0\n2\n0 0\n3 120"],
    ids=["lf", "crlf", "cr", "no-final-newline"],
)
def test_line_ends_as_java_readline(tmp_path, data):
    path = tmp_path / "checkpoint"
    path.write_bytes(data)
    assert read_checkpoint(path, 0, str) == ["0 0", "3 120"]


def test_parse_line_gets_each_entry(tmp_path):
    path = tmp_path / "checkpoint"
    path.write_bytes(b"7\n2\n10\n20\n")
    assert read_checkpoint(path, 7, int) == [10, 20]


@pytest.mark.parametrize(
    ("data", "line", "words"),
    [
        (b"\n0\n", 1, "expected the version, an int32, found ''"),
        (b"x\n0\n", 1, "expected the version, an int32, found 'x'"),
        (b"0 \n0\n", 1, "found '0 '"),
        (b"2147483648\n0\n", 1, "found '2147483648'"),
        (b"1\n0\n", 1, "expected version 0, found version 1"),
        (b"0\n", 2, "expected the entry count, found the end of the file"),
        (b"0\nx\n", 2, "expected the entry count, an int32 >= 0, found 'x'"),
        (b"0\n-1\n", 2, "found '-1'"),
        (b"0\n2\n0 0\n", 4, "expected 2 entries (the count on line 2), found 1 and then the end of the file"),
        (b"0\n3\n", 3, "expected 3 entries (the count on line 2), found 0"),
        (b"0\n1\n0 0\n3 120\n", 4, "expected 1 entries (the count on line 2) and then the end of the file"),
        (b"0\n1\n0 0\n\n", 4, "found another line: ''"),
        (b"0\n0\ngarbage\nmore\n", 3, "trailing garbage: 2 lines"),
        (b"0\n1\n0 0\xff\n", 3, "expected UTF-8 text, found byte 0xff"),
    ],
)
def test_malformed_file(tmp_path, data, line, words):
    path = tmp_path / "checkpoint"
    path.write_bytes(data)
    with pytest.raises(CorruptCheckpointError) as raised:
        read_checkpoint(path, 0, str)
    message = str(raised.value)
    assert repr(str(path)) in message
    assert f"line {line}:" in message
    assert words in message


def test_parse_line_error_names_the_line(tmp_path):
    path = tmp_path / "checkpoint"
    path.write_bytes(b"0\n3\n1\n2\nthree\n")
    with pytest.raises(CorruptCheckpointError, match=r"line 5: invalid literal for int\(\) with base 10: 'three'"):
        read_checkpoint(path, 0, int)


def test_other_os_errors_propagate(tmp_path):
    with pytest.raises(IsADirectoryError):
        read_checkpoint(tmp_path, 0, str)


@pytest.mark.parametrize(
    ("version", "lines", "error"),
    [
        (0, ["a\nb"], ValueError),
        (0, ["a\rb"], ValueError),
        (0, [b"0 0"], TypeError),
        (0, ["\udc80"], UnicodeEncodeError),
        (1 << 31, [], ValueError),
        ("0", [], TypeError),
    ],
)
def test_bad_arguments_write_nothing(tmp_path, version, lines, error):
    path = tmp_path / "checkpoint"
    path.write_bytes(b"0\n0\n")
    with pytest.raises(error):
        write_checkpoint(path, version, lines)
    assert path.read_bytes() == b"0\n0\n"
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]


# --- atomicity ----------------------------------------------------------------------------


def test_crash_before_rename_leaves_old_contents(tmp_path):
    path = tmp_path / LEADER_EPOCH_CHECKPOINT
    write_checkpoint(path, 0, ["0 0"])
    # A crash after the temporary file was written and before the rename leaves it behind,
    # in our naming and in Kafka's (<name>.tmp): a reader sees the old file only.
    (tmp_path / f".{LEADER_EPOCH_CHECKPOINT}.0123456789abcdef.tmp").write_bytes(b"0\n2\n0 0\n3 120\n")
    (tmp_path / f"{LEADER_EPOCH_CHECKPOINT}.tmp").write_bytes(b"garbage")
    assert read_checkpoint(path, 0, str) == ["0 0"]
    assert LeaderEpochCache(path).epoch_entries() == [(0, 0)]
    # The next write is not disturbed by the stray files, and leaves them alone.
    write_checkpoint(path, 0, ["5 500"])
    assert read_checkpoint(path, 0, str) == ["5 500"]
    assert len(os.listdir(tmp_path)) == 3


def test_crash_before_first_write_leaves_no_file(tmp_path):
    path = tmp_path / "checkpoint"
    (tmp_path / ".checkpoint.0123456789abcdef.tmp").write_bytes(b"0\n1\nx\n")
    assert read_checkpoint(path, 0, str) == []


def test_failed_rename_keeps_old_file_and_removes_temporary(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint"
    write_checkpoint(path, 0, ["old"])

    def fail(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        write_checkpoint(path, 0, ["new"])
    assert read_checkpoint(path, 0, str) == ["old"]
    assert os.listdir(tmp_path) == ["checkpoint"]


@pytest.mark.parametrize(("sync", "fsyncs"), [(True, 2), (False, 0)])
def test_sync_fsyncs_file_and_directory(tmp_path, monkeypatch, sync, fsyncs):
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda descriptor: (calls.append(descriptor), real_fsync(descriptor)))
    path = tmp_path / "checkpoint"
    write_checkpoint(path, 0, ["0 0"], sync=sync)
    assert len(calls) == (fsyncs if os.name == "posix" else fsyncs // 2)
    assert path.read_bytes() == b"0\n1\n0 0\n"


# --- offset checkpoints -------------------------------------------------------------------


def test_offsets_known_bytes(tmp_path):
    path = tmp_path / checkpoints.RECOVERY_POINT_CHECKPOINT
    write_offsets(path, {("orders", 1): 5, ("my-topic", 10): 0, ("my-topic", 2): 1 << 40})
    assert path.read_bytes() == b"0\n3\nmy-topic 2 1099511627776\nmy-topic 10 0\norders 1 5\n"


def test_offsets_read_kafka_file(tmp_path):
    # Kafka writes a HashMap's order; any order reads the same. Kafka splits on "\s+".
    path = tmp_path / checkpoints.REPLICATION_OFFSET_CHECKPOINT
    path.write_bytes(b"0\n3\n__consumer_offsets 49 1234\nt.x-y_z 0\t7\nt 3 9223372036854775807  \n")
    assert read_offsets(path) == {("__consumer_offsets", 49): 1234, ("t.x-y_z", 0): 7, ("t", 3): (1 << 63) - 1}


def test_offsets_missing_file_is_empty(tmp_path):
    assert read_offsets(tmp_path / checkpoints.LOG_START_OFFSET_CHECKPOINT) == {}


def test_offsets_duplicate_partition_keeps_last(tmp_path):
    path = tmp_path / "checkpoint"
    path.write_bytes(b"0\n2\nt 0 5\nt 0 7\n")
    assert read_offsets(path) == {("t", 0): 7}


def test_offset_checkpoint_object(tmp_path):
    checkpoint = OffsetCheckpoint(tmp_path / checkpoints.LOG_START_OFFSET_CHECKPOINT)
    assert checkpoint.read() == {}
    checkpoint.write({("t", 0): 3}, sync=False)
    assert checkpoint.read() == {("t", 0): 3}
    assert "log-start-offset-checkpoint" in repr(checkpoint)


@pytest.mark.parametrize(
    "line",
    [
        "t 0",
        "t 0 5 6",
        " t 0 5",
        "t x 5",
        "t 0 x",
        "t -1 5",
        "t 0 -5",
        "t 2147483648 5",
        "t 0 9223372036854775808",
        "bad/topic 0 5",
        ".. 0 5",
        "t" * 250 + " 0 5",
    ],
)
def test_offsets_malformed_line(tmp_path, line):
    path = tmp_path / "checkpoint"
    path.write_text(f"0\n2\nok 0 1\n{line}\n")
    with pytest.raises(CorruptCheckpointError, match=r"line 4: expected 'topic partition offset'"):
        read_offsets(path)


def test_offsets_wrong_version(tmp_path):
    path = tmp_path / "checkpoint"
    path.write_bytes(b"1\n0\n")
    with pytest.raises(CorruptCheckpointError, match="line 1: expected version 0, found version 1"):
        read_offsets(path)


@pytest.mark.parametrize(
    ("offsets", "error"),
    [
        ({("bad topic", 0): 1}, ValueError),
        ({("", 0): 1}, ValueError),
        ({("t", -1): 1}, ValueError),
        ({("t", 0): -1}, ValueError),
        ({("t", 0): 1 << 63}, ValueError),
        ({("t", 0): 1.5}, TypeError),
        ({"t-0": 1}, TypeError),
        ({(0, 0): 1}, TypeError),
    ],
)
def test_offsets_bad_arguments_write_nothing(tmp_path, offsets, error):
    path = tmp_path / "checkpoint"
    with pytest.raises(error):
        write_offsets(path, offsets)
    assert os.listdir(tmp_path) == []


topics = st.text(alphabet="abcXYZ019._-", min_size=1, max_size=20).filter(lambda name: name not in (".", ".."))


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.tuples(topics, st.integers(0, (1 << 31) - 1)), st.integers(0, (1 << 63) - 1), max_size=20))
def test_offsets_round_trip(offsets):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, checkpoints.RECOVERY_POINT_CHECKPOINT)
        write_offsets(path, offsets, sync=False)
        assert read_offsets(path) == offsets


# --- the leader-epoch cache ---------------------------------------------------------------


@pytest.fixture
def cache(tmp_path):
    return LeaderEpochCache.in_directory(tmp_path)


def on_disk(cache):
    return LeaderEpochCache(cache.path).epoch_entries()


def test_file_is_kafkas(cache, tmp_path):
    cache.assign(0, 0)
    cache.assign(3, 120)
    assert cache.path == os.path.join(tmp_path, "leader-epoch-checkpoint")
    assert (tmp_path / "leader-epoch-checkpoint").read_bytes() == b"0\n2\n0 0\n3 120\n"


def test_empty_cache(cache, tmp_path):
    assert cache.latest_epoch is None
    assert cache.epoch_entries() == [] and len(cache) == 0
    assert cache.epoch_for_offset(0) is None
    assert not (tmp_path / LEADER_EPOCH_CHECKPOINT).exists()  # nothing written until a change


def test_shouldAddEpochAndMessageOffsetToCache(cache):
    assert cache.assign(2, 10)
    assert cache.latest_epoch == 2
    assert cache.epoch_entries() == [EpochEntry(2, 10)]
    assert cache.end_offset_for(2, 11) == (2, 11)


def test_shouldPersistEpochsBetweenInstances(cache):
    cache.assign(2, 6)
    assert LeaderEpochCache(cache.path).epoch_entries() == [(2, 6)]


def test_shouldNotOverwriteLogEndOffsetForALeaderEpochOnceItHasBeenAssigned(cache):
    cache.assign(2, 9)
    assert not cache.assign(2, 10)
    assert cache.epoch_entries() == [(2, 9)]


def test_shouldNotUpdateEpochAndStartOffsetIfItDidNotChange(cache):
    cache.assign(2, 6)
    os.unlink(cache.path)
    assert not cache.assign(2, 7)
    assert not cache.assign(2, 6)
    assert cache.epoch_entries() == [(2, 6)]
    assert not os.path.exists(cache.path)  # an ignored assign writes nothing


def test_shouldEnforceMonotonicallyIncreasingStartOffsets(cache):
    cache.assign(2, 9)
    assert cache.assign(3, 9)
    assert cache.epoch_entries() == [(3, 9)]
    assert on_disk(cache) == [(3, 9)]


def test_shouldEnforceMonotonicallyIncreasingEpochs(cache):
    # An older epoch is not ignored: it truncates every newer entry, and its own older start.
    cache.assign(1, 5)
    cache.assign(2, 6)
    assert cache.assign(1, 7)
    assert cache.latest_epoch == 1
    assert cache.end_offset_for(1, 8) == (1, 8)
    assert cache.end_offset_for(2, 8) == UNDEFINED
    assert cache.epoch_entries() == [(1, 7)]


def test_shouldEnforceOffsetsIncreaseMonotonically(cache):
    cache.assign(2, 6)
    cache.assign(3, 5)
    assert cache.epoch_entries() == [(3, 5)]


def test_shouldTruncateIfMatchingEpochButEarlierStartingOffset(cache):
    cache.assign(5, 11)
    cache.assign(6, 12)
    cache.assign(7, 13)
    assert cache.assign(7, 12)  # the latest epoch at an earlier offset replaces epoch 6 and 7
    assert cache.epoch_entries() == [(5, 11), (7, 12)]
    assert cache.end_offset_for(5, 0) == (5, 12)
    assert cache.end_offset_for(6, 0) == (5, 12)


def test_older_epoch_between_entries_keeps_the_older_ones(cache):
    for epoch, start in [(1, 0), (3, 100), (5, 200)]:
        cache.assign(epoch, start)
    assert cache.assign(4, 300)
    assert cache.epoch_entries() == [(1, 0), (3, 100), (4, 300)]
    assert on_disk(cache) == [(1, 0), (3, 100), (4, 300)]


def test_assign_rejects_negative(cache):
    with pytest.raises(ValueError, match="epoch"):
        cache.assign(-1, 0)
    with pytest.raises(ValueError, match="start_offset"):
        cache.assign(0, -1)
    with pytest.raises(ValueError, match="epoch"):
        cache.assign(1 << 31, 0)
    with pytest.raises(TypeError):
        cache.assign(0, 1.0)
    assert cache.epoch_entries() == []


def test_shouldReturnLogEndOffsetIfLatestEpochRequested(cache):
    cache.assign(2, 11)
    cache.assign(2, 12)
    assert cache.end_offset_for(2, 14) == (2, 14)


def test_shouldReturnUndefinedOffsetIfUndefinedEpochRequested(cache):
    cache.assign(2, 11)
    cache.assign(3, 12)
    assert cache.end_offset_for(UNDEFINED_EPOCH, 0) == UNDEFINED


def test_shouldReturnUnsupportedIfNoEpochRecorded(cache):
    assert cache.end_offset_for(0, 0) == UNDEFINED


def test_shouldReturnUnsupportedIfNoEpochRecordedAndUndefinedEpochRequested(cache):
    assert cache.end_offset_for(UNDEFINED_EPOCH, 73) == UNDEFINED


def test_shouldFetchEndOffsetOfEmptyCache(cache):
    assert cache.end_offset_for(7, 0) == UNDEFINED


def test_shouldReturnFirstEpochIfRequestedEpochLessThanFirstEpoch(cache):
    # Since KIP-279 (Kafka 2.0) the requested epoch comes back with the first epoch's start
    # offset; Kafka 1.x returned UNDEFINED_EPOCH_OFFSET here (its javadoc still says so).
    cache.assign(5, 11)
    cache.assign(6, 12)
    cache.assign(7, 13)
    assert cache.end_offset_for(4, 0) == (4, 11)
    assert cache.end_offset_for(0, 0) == (0, 11)
    assert cache.end_offset_for(-5, 0) == (-5, 11)  # only -1 is UNDEFINED_EPOCH


def test_shouldGetFirstOffsetOfSubsequentEpochWhenOffsetRequestedForPreviousEpoch(cache):
    for epoch, start in [(1, 11), (1, 12), (2, 13), (2, 14), (3, 15), (3, 16)]:
        cache.assign(epoch, start)
    assert cache.end_offset_for(2, 17) == (2, 15)


def test_shouldReturnNextAvailableEpochIfThereIsNoExactEpochForTheOneRequested(cache):
    cache.assign(0, 10)
    cache.assign(2, 13)
    cache.assign(4, 17)
    assert cache.end_offset_for(1, 0) == (0, 13)
    assert cache.end_offset_for(2, 0) == (2, 17)
    assert cache.end_offset_for(3, 0) == (2, 17)


def test_shouldReturnInvalidOffsetIfEpochIsRequestedWhichIsNotCurrentlyTracked(cache):
    cache.assign(2, 100)
    assert cache.end_offset_for(3, 100) == UNDEFINED


def test_shouldSupportEpochsThatDoNotStartFromZero(cache):
    cache.assign(2, 6)
    assert cache.end_offset_for(2, 7) == (2, 7)
    assert cache.epoch_entries() == [(2, 6)]


def test_latest_epoch_gets_log_end_offset_even_below_its_start(cache):
    # Kafka does not compare: the latest epoch's end is whatever log end offset is passed.
    cache.assign(3, 100)
    assert cache.end_offset_for(3, 50) == (3, 50)


def test_shouldIncreaseAndTrackEpochsAsLeadersChangeManyTimes(cache):
    cache.assign(0, 0)
    cache.assign(1, 0)
    assert cache.latest_epoch == 1
    assert cache.end_offset_for(1, 0) == (1, 0)
    # Epoch 0 was replaced (it had no records), so 0 is below the first epoch: its start.
    assert cache.end_offset_for(0, 0) == (0, 0)
    assert cache.epoch_entries() == [(1, 0)]
    assert cache.end_offset_for(1, 5) == (1, 5)
    cache.assign(2, 5)
    assert cache.end_offset_for(2, 10) == (2, 10)
    assert cache.end_offset_for(1, 10) == (1, 5)
    assert cache.end_offset_for(0, 10) == (0, 0)


def test_shouldIncreaseAndTrackEpochsAsFollowerReceivesManyMessages(cache):
    for offset in range(9):
        cache.assign(offset // 3, offset)
    assert cache.epoch_entries() == [(0, 0), (1, 3), (2, 6)]
    assert cache.end_offset_for(2, 9) == (2, 9)
    assert cache.end_offset_for(0, 9) == (0, 3)
    assert cache.end_offset_for(1, 9) == (1, 6)


def test_end_offset_for_bad_arguments(cache):
    with pytest.raises(ValueError, match="log_end_offset"):
        cache.end_offset_for(0, -1)
    with pytest.raises(ValueError, match="requested_epoch"):
        cache.end_offset_for(1 << 31, 0)


def test_shouldFetchEpochForGivenOffset(cache):
    cache.assign(0, 10)
    cache.assign(1, 20)
    cache.assign(5, 30)
    assert cache.epoch_for_offset(25) == 1
    assert cache.epoch_for_offset(20) == 1
    assert cache.epoch_for_offset(30) == 5
    assert cache.epoch_for_offset(50) == 5
    assert cache.epoch_for_offset(5) is None


@pytest.fixture
def three(cache):
    for epoch, start in [(2, 6), (3, 8), (4, 11)]:
        cache.assign(epoch, start)
    return cache


def test_shouldDropEntriesOnEpochBoundaryWhenRemovingLatestEntries(three):
    three.truncate_from_end(8)
    assert three.epoch_entries() == [(2, 6)]
    assert on_disk(three) == [(2, 6)]


def test_shouldDropEntriesBetweenEpochBoundaryWhenRemovingNewest(three):
    three.truncate_from_end(9)
    assert three.latest_epoch == 3
    assert three.epoch_entries() == [(2, 6), (3, 8)]
    assert on_disk(three) == [(2, 6), (3, 8)]


def test_truncate_from_end_past_latest_changes_nothing(three):
    os.unlink(three.path)
    three.truncate_from_end(12)
    assert three.epoch_entries() == [(2, 6), (3, 8), (4, 11)]
    assert not os.path.exists(three.path)


def test_truncate_from_end_to_zero_empties(three):
    three.truncate_from_end(0)
    assert three.epoch_entries() == [] and three.latest_epoch is None
    assert open(three.path, "rb").read() == b"0\n0\n"


def test_shouldPreserveResetOffsetOnClearEarliestIfOneExists(three):
    three.truncate_from_start(8)
    assert three.epoch_entries() == [(3, 8), (4, 11)]
    assert on_disk(three) == [(3, 8), (4, 11)]


def test_shouldNotClearAnythingIfOffsetTooEarly(three):
    three.truncate_from_start(1)
    assert three.epoch_entries() == [(2, 6), (3, 8), (4, 11)]


def test_shouldNotClearAnythingIfOffsetIsFirstOffset(three):
    os.unlink(three.path)
    three.truncate_from_start(6)
    assert three.epoch_entries() == [(2, 6), (3, 8), (4, 11)]
    assert not os.path.exists(three.path)  # no change, no write


def test_shouldRetainLatestEpochOnClearAllEarliest(three):
    three.truncate_from_start(11)
    assert three.epoch_entries() == [(4, 11)]


def test_shouldUpdateOffsetBetweenEpochBoundariesOnClearEarliest(three):
    three.truncate_from_start(9)
    assert three.epoch_entries() == [(3, 9), (4, 11)]
    assert on_disk(three) == [(3, 9), (4, 11)]


def test_shouldUpdateOffsetBetweenFirstTwoEpochBoundariesOnClearEarliest(cache):
    cache.assign(0, 0)
    cache.assign(1, 7)
    cache.assign(2, 10)
    cache.truncate_from_start(5)
    assert cache.epoch_entries() == [(0, 5), (1, 7), (2, 10)]


def test_shouldRetainLatestEpochOnClearAllEarliestAndUpdateItsOffset(three):
    three.truncate_from_start(15)
    assert three.epoch_entries() == [(4, 15)]
    assert on_disk(three) == [(4, 15)]


def test_shouldNotResetEpochHistoryHeadIfUndefinedPassed(three):
    three.truncate_from_start(UNDEFINED_EPOCH_OFFSET)
    assert len(three) == 3


def test_shouldNotResetEpochHistoryTailIfUndefinedPassed(three):
    three.truncate_from_end(UNDEFINED_EPOCH_OFFSET)
    assert len(three) == 3


def test_truncate_bad_arguments(three):
    with pytest.raises(ValueError, match="end_offset"):
        three.truncate_from_end(-2)
    with pytest.raises(ValueError, match="start_offset"):
        three.truncate_from_start(-2)
    assert len(three) == 3


def test_shouldClearEarliestOnEmptyCache_and_shouldClearLatestOnEmptyCache(cache):
    cache.truncate_from_start(7)
    cache.truncate_from_end(7)
    assert cache.epoch_entries() == []


def test_shouldWriteCheckpointOnTruncation(three):
    three.truncate_from_end(11)
    three.truncate_from_start(8)
    assert on_disk(three) == [(3, 8)]


def test_shouldClearAllEntries(three):
    three.clear()
    assert three.epoch_entries() == []
    assert open(three.path, "rb").read() == b"0\n0\n"


def test_failed_write_leaves_cache_unchanged(three, monkeypatch):
    def fail(source, target):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", fail)
    for change in (lambda: three.assign(5, 20), lambda: three.truncate_from_end(8), three.clear):
        with pytest.raises(OSError):
            change()
        assert three.epoch_entries() == [(2, 6), (3, 8), (4, 11)]


def test_load_applies_assign_rule_without_rewriting(tmp_path):
    # Kafka's constructor passes each line to assign(): a file going backwards loads truncated.
    path = tmp_path / LEADER_EPOCH_CHECKPOINT
    data = b"0\n4\n1 0\n3 100\n2 50\n2 60\n"
    path.write_bytes(data)
    assert LeaderEpochCache(path).epoch_entries() == [(1, 0), (2, 50)]
    assert path.read_bytes() == data


@pytest.mark.parametrize(
    "line",
    ["0", "0 0 0", "x 0", "0 x", "-1 0", "0 -1", "2147483648 0", "0 9223372036854775808", " 0 0"],
)
def test_load_malformed_epoch_line(tmp_path, line):
    path = tmp_path / LEADER_EPOCH_CHECKPOINT
    path.write_text(f"0\n2\n0 0\n{line}\n")
    with pytest.raises(CorruptCheckpointError, match=r"line 4: expected 'epoch start_offset'"):
        LeaderEpochCache(path)


def test_load_accepts_kafkas_whitespace(tmp_path):
    path = tmp_path / LEADER_EPOCH_CHECKPOINT
    path.write_bytes(b"0\n2\n0  1\n1\t2 \n")  # Kafka's javadoc example has two spaces
    assert LeaderEpochCache(path).epoch_entries() == [(0, 1), (1, 2)]


def test_load_wrong_version(tmp_path):
    path = tmp_path / LEADER_EPOCH_CHECKPOINT
    path.write_bytes(b"1\n0\n")
    with pytest.raises(CorruptCheckpointError, match="line 1: expected version 0, found version 1"):
        LeaderEpochCache(path)


# --- hypothesis: the cache against a model --------------------------------------------------


def model_end_offset_for(entries, requested_epoch, log_end_offset):
    """Kafka 2.0's endOffsetFor (LeaderEpochFileCache.scala), restated over a list."""
    if requested_epoch == UNDEFINED_EPOCH:
        return UNDEFINED
    if entries and entries[-1][0] == requested_epoch:
        return requested_epoch, log_end_offset
    subsequent = [entry for entry in entries if entry[0] > requested_epoch]
    previous = [entry for entry in entries if entry[0] <= requested_epoch]
    if not subsequent:
        return UNDEFINED
    if not previous:
        return requested_epoch, subsequent[0][1]
    return previous[-1][0], subsequent[0][1]


def model_assign(entries, epoch, start_offset):
    if entries and entries[-1][0] == epoch and start_offset >= entries[-1][1]:
        return entries
    return [entry for entry in entries if entry[0] < epoch and entry[1] < start_offset] + [(epoch, start_offset)]


epochs = st.integers(0, 12)
offsets = st.integers(0, 60)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("assign"), epochs, offsets),
        st.tuples(st.just("truncate_from_end"), st.integers(-1, 60)),
        st.tuples(st.just("truncate_from_start"), st.integers(-1, 60)),
    ),
    max_size=25,
)


def model_apply(entries, operation):
    name, *args = operation
    if name == "assign":
        return model_assign(entries, *args)
    (offset,) = args
    if offset < 0:
        return entries
    if name == "truncate_from_end":
        return [entry for entry in entries if entry[1] < offset]
    below = [entry for entry in entries if entry[1] <= offset]
    if not below:
        return entries
    return [(below[-1][0], offset)] + [entry for entry in entries if entry[1] > offset]


@settings(max_examples=300, deadline=None)
@given(operations, st.integers(-3, 14), st.integers(0, 80))
@example([("assign", 5, 11), ("assign", 6, 12), ("assign", 7, 13)], 4, 0)  # below the first epoch
@example([("assign", 2, 100)], 3, 100)  # past the latest epoch
@example([], 0, 0)  # empty cache
def test_end_offset_for_matches_model(steps, requested_epoch, log_end_offset):
    with tempfile.TemporaryDirectory() as directory:
        cache = LeaderEpochCache.in_directory(directory)
        entries: list = []
        for step in steps:
            getattr(cache, step[0])(*step[1:])
            entries = model_apply(entries, step)
        assert cache.epoch_entries() == entries
        assert cache.end_offset_for(requested_epoch, log_end_offset) == model_end_offset_for(
            entries, requested_epoch, log_end_offset
        )
        # Strictly increasing in both columns, and the file holds exactly the cache.
        assert all(a[0] < b[0] and a[1] < b[1] for a, b in itertools.pairwise(entries))
        assert LeaderEpochCache(cache.path).epoch_entries() == entries
        for offset in range(0, 62, 7):
            starts = [entry for entry in entries if entry[1] <= offset]
            assert cache.epoch_for_offset(offset) == (starts[-1][0] if starts else None)


# --- partition directories ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("orders-0", ("orders", 0)),
        ("my-topic-12", ("my-topic", 12)),
        ("a-b-c-2147483647", ("a-b-c", (1 << 31) - 1)),
        ("__consumer_offsets-49", ("__consumer_offsets", 49)),
        ("topic--1", ("topic-", 1)),  # the last '-' separates: Kafka reads it so too
        ("t.x_y-3", ("t.x_y", 3)),
    ],
)
def test_parse_partition_directory(name, expected):
    assert parse_partition_directory(name) == expected
    assert partition_directory_name(*expected) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "orders",
        "-0",
        "orders-",
        "orders-x",
        "orders-+1",
        "orders-01",
        "orders- 1",
        "orders-2147483648",
        "orders-0.1c2d3e-delete",
        "orders-0.1c2d3e-future",
        "orders-0.1c2d3e-stray",
        "bad topic-0",
        "a/b-0",
        "..-0",
        "t" * 250 + "-0",
    ],
)
def test_parse_partition_directory_rejects(name):
    with pytest.raises(ValueError, match="expected '<topic>-<partition>'"):
        parse_partition_directory(name)


def test_partition_directory_arguments():
    with pytest.raises(TypeError):
        parse_partition_directory(b"orders-0")
    with pytest.raises(ValueError):
        partition_directory_name("orders", -1)
    with pytest.raises(ValueError):
        partition_directory_name("bad topic", 0)
