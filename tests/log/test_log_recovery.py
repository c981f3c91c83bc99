"""Crash and recover the partition log at random points (spec §5), on real files.

A hypothesis test drives one log with producers that send, retry and misbehave, and crashes
it at random moments: between appends, in the middle of a write (a torn batch at the end of
the active segment), in the middle of a snapshot write (a half-written temporary file), with
a damaged snapshot file. After every recovery the table must equal the table the log had
before the crash, and every acknowledged batch must be in the log exactly once at the
offsets it was acknowledged with. A failed write (a real write refused by the kernel)
must leave the table unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from collections import Counter

import pytest
from conftest import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_batches import build, patch

from dedup import DuplicateSequenceError, KafkaError, scan_batches
from dedup.log import PartitionLog
from dedup.segment import segment_file_name

PRODUCERS = 4


def state(table):
    return table.map_end_offset, {pid: table.entry(pid) for pid in table}


def logged_batches(log):
    """(producer id, epoch, base sequence) -> [(first offset, last offset)] over the whole log."""
    found: dict = {}
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        chunk = log.read(offset, 1 << 20)
        headers = scan_batches(chunk)
        for header in headers:
            first = int(header["base_offset"])
            key = (int(header["producer_id"]), int(header["producer_epoch"]), int(header["base_sequence"]))
            found.setdefault(key, []).append((first, first + int(header["last_offset_delta"])))
        offset = int(headers["base_offset"][-1] + headers["last_offset_delta"][-1] + 1)
    return found


operations = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, PRODUCERS - 1), st.integers(1, 4)),
        st.tuples(st.just("retry"), st.integers(0, PRODUCERS - 1), st.integers(0, 6)),
        st.tuples(st.just("gap"), st.integers(0, PRODUCERS - 1), st.integers(2, 5)),
        st.tuples(
            st.just("crash"),
            st.sampled_from(["plain", "torn", "flipped", "snapshot-tmp", "snapshot-damaged"]),
            st.integers(0, 10_000),
        ),
        st.tuples(st.just("restart"), st.just(0), st.just(0)),
        st.tuples(st.just("roll"), st.just(0), st.just(0)),
    ),
    min_size=1,
    max_size=60,
)


# Few examples: each is a log written, crashed and recovered many times.
@settings(max_examples=examples(60), suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(steps=operations)
def test_recovery_after_random_crashes_restores_the_table_and_every_acknowledged_batch(twin, steps):
    table_class = twin.ProducerStateTable
    with tempfile.TemporaryDirectory() as root:
        directory = os.path.join(root, "clicks-0")
        options = {"segment_bytes": 700, "table_class": table_class, "clock": lambda: 1_700_000_000_000}
        log = PartitionLog(directory, **options)
        next_sequence = [0] * PRODUCERS
        sent: list[list[tuple[bytes, int, int]]] = [[] for _ in range(PRODUCERS)]  # (batch, first, last)
        try:
            for kind, a, b in steps:
                if kind == "send":
                    pid = 1000 + a
                    batch = build(pid, 0, next_sequence[a], b)
                    info = log.append_as_leader(batch, leader_epoch=1)
                    assert not info.duplicate
                    sent[a].append((batch, info.base_offset, info.last_offset))
                    next_sequence[a] += b
                elif kind == "retry" and sent[a]:
                    batch, first, last = sent[a][-1 - b % len(sent[a])]
                    if b % len(sent[a]) < log.window:  # within the window: answered as a duplicate
                        info = log.append_as_leader(batch, leader_epoch=1)
                        assert info.duplicate and (info.base_offset, info.last_offset) == (first, last)
                    else:
                        with pytest.raises(KafkaError) as refused:  # too old: not recognised
                            log.append_as_leader(batch, leader_epoch=1)
                        assert not isinstance(refused.value, DuplicateSequenceError)
                elif kind == "gap" and sent[a]:  # a producer the table knows (spec §2.1 rule 15)
                    with pytest.raises(KafkaError):
                        log.append_as_leader(build(1000 + a, 0, next_sequence[a] + b, 1), leader_epoch=1)
                elif kind == "roll":
                    log.roll()
                elif kind == "restart":
                    before = state(log.producer_state)
                    log.close()
                    log = PartitionLog(directory, **options)
                    assert log.load_report.clean_shutdown
                    assert state(log.producer_state) == before
                elif kind == "crash":
                    before, end = state(log.producer_state), log.log_end_offset
                    log.close_uncleanly()
                    damage(directory, a, b, end)
                    log = PartitionLog(directory, **options)
                    assert not log.load_report.clean_shutdown
                    assert log.log_end_offset == end
                    assert state(log.producer_state) == before
                check_acknowledged(log, sent)
        finally:
            log.close_uncleanly()


def damage(directory: str, how: str, seed: int, log_end_offset: int) -> None:
    """What a crash can leave behind, besides the page cache's contents."""
    names = sorted(os.listdir(directory))
    segments = [name for name in names if name.endswith(".log")]
    snapshots = [name for name in names if name.endswith(".snapshot")]
    if how == "torn":  # the write of a batch was cut: part of it is at the segment's end
        batch = build(999, 0, 0, 3)
        with open(os.path.join(directory, segments[-1]), "ab") as handle:
            handle.write(batch[: 1 + seed % (len(batch) - 1)])
    elif how == "flipped":  # a whole batch, offsets in order, one bit wrong: only its CRC tells
        batch = bytearray(patch(build(999, 0, 0, 3), base_offset=log_end_offset))
        bit = 21 * 8 + seed % ((len(batch) - 21) * 8)  # anywhere the CRC covers
        batch[bit // 8] ^= 1 << bit % 8
        with open(os.path.join(directory, segments[-1]), "ab") as handle:
            handle.write(batch)
    elif how == "snapshot-tmp":  # killed while writing a snapshot: the temporary file stays
        with open(
            os.path.join(directory, f".{snapshots[-1] if snapshots else '0.snapshot'}.{seed:016x}.tmp"), "wb"
        ) as handle:
            handle.write(b"DDPS" + bytes(seed % 64))
    elif how == "snapshot-damaged" and snapshots:  # a snapshot file hit by a bad write
        path = os.path.join(directory, snapshots[seed % len(snapshots)])
        size = os.path.getsize(path)
        with open(path, "r+b") as handle:
            if seed % 2:
                handle.truncate(seed % size)
            else:
                handle.seek(seed % size)
                byte = handle.read(1)
                handle.seek(seed % size)
                handle.write(bytes([byte[0] ^ (1 << seed % 8)]))


def check_acknowledged(log, sent) -> None:
    """Every acknowledged batch is in the log once, at its acknowledged offsets; nothing else is."""
    found = logged_batches(log)
    expected = Counter()
    for index, batches in enumerate(sent):
        for batch, first, last in batches:
            header = scan_batches(batch)[0]
            key = (1000 + index, int(header["producer_epoch"]), int(header["base_sequence"]))
            assert found.get(key) == [(first, last)], key
            expected[key] += 1
    assert sum(len(offsets) for offsets in found.values()) == sum(expected.values())


# -- a write the kernel refuses ----------------------------------------------------------------

_FULL_DISK = textwrap.dedent(
    """
    import os, resource, signal, sys
    sys.path[:0] = sys.argv[2:]
    from dedup import KafkaStorageError
    from dedup.log import PartitionLog
    from kafka_batches import build, patch

    log = PartitionLog(sys.argv[1])
    log.append_as_leader(build(1000, 0, 0, 2))
    entry, size = log.producer_state.entry(1000), log.size_bytes
    # The file may not grow past its current size: the next write fails as on a full disk
    # (EFBIG instead of ENOSPC; SIGXFSZ ignored so that the write returns the error).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, resource.RLIM_INFINITY))
    try:
        log.append_as_leader(build(1000, 0, 2, 2))
    except KafkaStorageError as error:
        print("refused:", error.code)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert log.producer_state.entry(1000) == entry, "the table changed"
    assert os.path.getsize(os.path.join(sys.argv[1], "00000000000000000000.log")) == size, "bytes left behind"
    try:
        log.append_as_leader(build(1000, 0, 2, 2))
    except KafkaStorageError:
        print("offline")
    log.close_uncleanly()
    again = PartitionLog(sys.argv[1])
    assert again.producer_state.entry(1000) == entry and again.log_end_offset == 2
    print("recovered", again.log_end_offset)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_failed_write_leaves_the_table_unchanged_and_takes_the_log_offline(tmp_path):
    # Spec §3.2: the table is updated only after the write succeeded. The write really fails
    # (the kernel refuses it), in a subprocess so that the limit does not touch pytest.
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/: kafka_batches
    root = os.path.dirname(here)
    result = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(tmp_path / "clicks-0"), root, here],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["refused: 56", "offline", "recovered 2"]


def test_segment_files_are_named_by_base_offset():
    assert segment_file_name(0) == "00000000000000000000.log"
    assert segment_file_name(2**63 - 1) == "09223372036854775807.log"
