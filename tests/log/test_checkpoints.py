"""Checkpoint files (dedup.checkpoints): Kafka's text format, its atomic rewrite, offset
checkpoints and partition directory names, on real files. The leader-epoch cache, kept in such a
file, is test_leader_epoch_cache.py's.
"""

from __future__ import annotations

import doctest
import os
import tempfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dedup import checkpoints
from dedup.checkpoints import (
    LEADER_EPOCH_CHECKPOINT,
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


@given(st.dictionaries(st.tuples(topics, st.integers(0, (1 << 31) - 1)), st.integers(0, (1 << 63) - 1), max_size=20))
def test_offsets_round_trip(offsets):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, checkpoints.RECOVERY_POINT_CHECKPOINT)
        write_offsets(path, offsets, sync=False)
        assert read_offsets(path) == offsets


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
