"""Log compaction (dedup.cleaner, Kafka's LogCleaner): a cleaned log keeps the latest record per
key with its offset, tombstones until delete.retention.ms after their first cleaning, batches
any v2 reader parses (kafka-python's DefaultRecordBatch validates their CRCs), each producer's
retained batches; and a crash at every step of the segment swap reopens to the old segments or
the new one, never a mix or a loss."""

from __future__ import annotations

import os
import shutil

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch

from dedup import scan_batches
from dedup.batch import decode_records, encode_batch
from dedup.cleaner import CLEANED_SUFFIX, SWAP_SUFFIX, clean_log
from dedup.log import PartitionLog
from dedup.segment import LogSegment, segment_file_name

NOW = 1_700_000_000_000
RETENTION = 86_400_000


def append(log, records, *, timestamp=NOW, **producer):
    """One batch of (key, value) records, appended by the leader."""
    return log.append_as_leader(
        encode_batch([v for _, v in records], keys=[k for k, _ in records], timestamp=timestamp, **producer)
    )


def batches(log):
    """Every batch of the log, as (header row, bytes)."""
    out = []
    for segment in log._local_log.segments:
        with segment.batches_from(segment.base_offset) as view:
            data = bytes(view)
        for header in scan_batches(data):
            start = int(header["position"])
            out.append((header, data[start : start + int(header["batch_length"]) + 12]))
    return out


def records(log):
    """Every record of the log (offset, key, value, timestamp), in offset order."""
    return [(r.offset, r.key, r.value, r.timestamp) for _, raw in batches(log) for r in decode_records(raw)]


def replay(rows):
    """The oracle: a dict replay, a tombstone deleting its key."""
    state = {}
    for _, key, value, _ in rows:
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    return state


def latest_per_key(rows, end):
    """The records below ``end`` that no later record below ``end`` supersedes, and all at or
    above ``end``."""
    last = {key: offset for offset, key, _, _ in rows if offset < end}
    return [row for row in rows if row[0] >= end or last[row[1]] == row[0]]


def open_log(path, **options):
    options.setdefault("segment_bytes", 400)
    options.setdefault("clock", lambda: NOW)
    return PartitionLog(path, **options)


operations = st.lists(
    st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c", b"d", b"e"]), st.none() | st.binary(max_size=12)),
             min_size=1, max_size=4),
    min_size=1, max_size=60,
)  # fmt: skip


@given(ops=operations, segment_bytes=st.integers(100, 900), extra=st.integers(0, 3))
def test_a_cleaned_log_keeps_exactly_the_latest_record_per_key(tmp_path_factory, ops, segment_bytes, extra):
    log = open_log(tmp_path_factory.mktemp("log") / "t-0", segment_bytes=segment_bytes)
    try:
        for batch in ops:
            append(log, batch)
        log.roll()
        for i in range(extra):  # records in the active segment: never cleaned
            append(log, [(b"a", b"active%d" % i)])
        log.update_high_watermark(log.log_end_offset)
        before = records(log)
        end_before = log.log_end_offset
        stats = clean_log(log, now_ms=NOW, delete_retention_ms=RETENTION)
        end = log._local_log.segments[-1].base_offset
        assert stats is not None and stats.end_offset == end
        after = records(log)
        # Exactly the latest record per key below the first uncleanable offset, each with its
        # offset, key, value and timestamp; everything above untouched; the same dict replay.
        assert after == latest_per_key(before, end)
        assert replay(after) == replay(before)
        assert log.log_end_offset == end_before
        # Every batch parses with an independent reader, its CRC valid.
        for _, raw in batches(log):
            assert DefaultRecordBatch(raw).validate_crc()
        # The tombstones are kept until delete.retention.ms has passed since this cleaning (the
        # records after ``end`` may supersede some: later passes map them).
        append(log, [(b"z", b"dirty")])
        log.roll()
        log.update_high_watermark(log.log_end_offset)
        before = records(log)
        assert clean_log(log, now_ms=NOW + RETENTION - 1, delete_retention_ms=RETENTION) is not None
        assert records(log) == latest_per_key(before, log._local_log.segments[-1].base_offset)
        append(log, [(b"y", b"dirty")])
        log.roll()
        log.update_high_watermark(log.log_end_offset)
        before = records(log)
        assert clean_log(log, now_ms=NOW + RETENTION, delete_retention_ms=RETENTION) is not None
        final = records(log)
        assert final == [r for r in latest_per_key(before, log._local_log.segments[-1].base_offset) if r[2] is not None]
        assert replay(final) == replay(before)
        # And reopened after a crash, the same records.
        log.close_uncleanly()
        log = open_log(log.directory, segment_bytes=segment_bytes)
        assert records(log) == final
    finally:
        log.close()


def test_the_active_segment_and_what_is_past_the_high_watermark_are_not_cleaned(tmp_path):
    log = open_log(tmp_path / "t-0")
    for i in range(6):
        append(log, [(b"k", b"v%d" % i)])
        log.roll()
    log.update_high_watermark(3)
    assert clean_log(log, now_ms=NOW).end_offset == 3
    assert [r[:3] for r in records(log)] == [(2, b"k", b"v2"), (3, b"k", b"v3"), (4, b"k", b"v4"), (5, b"k", b"v5")]
    log.update_high_watermark(log.log_end_offset)
    append(log, [(b"k", b"v6")])  # the active segment, at 6, is never cleaned
    assert clean_log(log, now_ms=NOW).end_offset == 6
    assert [r[:3] for r in records(log)] == [(5, b"k", b"v5"), (6, b"k", b"v6")]
    assert clean_log(log, now_ms=NOW) is None  # nothing dirty left
    log.close()


def test_a_batch_that_lost_every_record_goes_and_offsets_keep_their_gaps(tmp_path):
    log = open_log(tmp_path / "t-0", segment_bytes=1 << 20)
    append(log, [(b"a", b"1"), (b"b", b"1")])  # offsets 0-1: superseded, dropped
    append(log, [(b"a", b"2"), (b"c", b"1")])  # offsets 2-3: a stays, c stays
    append(log, [(b"b", b"2")])  # offset 4: the last of the group, stays
    log.roll()
    log.update_high_watermark(log.log_end_offset)
    clean_log(log, now_ms=NOW)
    found = batches(log)
    assert [(int(h["base_offset"]), int(h["last_offset_delta"]), int(h["record_count"])) for h, _ in found] == [
        (2, 1, 2),
        (4, 0, 1),
    ]
    assert log.read(0)[:8] == (2).to_bytes(8, "big")  # a fetch from 0 starts at the next batch
    assert [r[:3] for r in records(log)] == [(2, b"a", b"2"), (3, b"c", b"1"), (4, b"b", b"2")]
    log.close()


def test_records_without_a_key_are_removed(tmp_path):
    """Kafka's Cleaner.shouldRetainRecord drops a keyless record ("invalid message")."""
    log = open_log(tmp_path / "t-0", segment_bytes=1 << 20)
    append(log, [(None, b"no key"), (b"a", b"1")])
    append(log, [(b"a", b"2")])
    log.roll()
    log.update_high_watermark(log.log_end_offset)
    stats = clean_log(log, now_ms=NOW)
    assert stats.invalid_records == 1
    assert [r[:3] for r in records(log)] == [(2, b"a", b"2")]
    log.close()


def test_a_producers_retained_batches_stay_even_when_empty_and_replay_to_the_same_state(tmp_path):
    log = open_log(tmp_path / "t-0", segment_bytes=1 << 20, window=2)
    append(log, [(b"a", b"1")], producer_id=7, producer_epoch=0, base_sequence=0)  # 0: out of the window
    append(log, [(b"a", b"2")], producer_id=7, producer_epoch=0, base_sequence=1)  # 1: in the window
    append(log, [(b"a", b"3")], producer_id=7, producer_epoch=0, base_sequence=2)  # 2: in the window
    append(log, [(b"a", b"4")])  # 3: no producer
    append(log, [(b"b", b"1")])  # 4
    log.roll()
    log.update_high_watermark(log.log_end_offset)
    entry = log.producer_state.entry(7)
    clean_log(log, now_ms=NOW)
    found = [(int(h["base_offset"]), int(h["producer_id"]), int(h["base_sequence"]), int(h["record_count"]))
             for h, _ in batches(log)]  # fmt: skip
    # Kafka's RETAIN_EMPTY: the producer's batches in its window stay as empty headers.
    assert found == [(1, 7, 1, 0), (2, 7, 2, 0), (3, -1, -1, 1), (4, -1, -1, 1)]
    for _, raw in batches(log):
        assert DefaultRecordBatch(raw).validate_crc()
    # Without any snapshot the table comes from a replay of the cleaned log: the same entry.
    log.flush()
    log.close_uncleanly()  # (after a clean shutdown without snapshots Kafka skips the replay)
    for name in os.listdir(log.directory):
        if name.endswith(".snapshot"):
            os.unlink(os.path.join(log.directory, name))
    reopened = open_log(log.directory, segment_bytes=1 << 20, window=2)
    assert reopened.producer_state.entry(7) == entry
    # A retry of the producer's last batch is still a duplicate.
    retry = append(reopened, [(b"a", b"3")], producer_id=7, producer_epoch=0, base_sequence=2)
    assert retry.duplicate and retry.base_offset == 2
    reopened.close()


def test_an_open_transactions_batch_is_left_as_it_is(tmp_path):
    """The last stable offset bounds the pass (the rest: test_cleaner_transactions.py)."""
    log = open_log(tmp_path / "t-0", segment_bytes=1 << 20)
    append(log, [(b"a", b"t")], producer_id=9, producer_epoch=0, base_sequence=0, transactional=True)
    append(log, [(b"a", b"plain")])
    log.roll()
    log.update_high_watermark(log.log_end_offset)
    before = [raw for _, raw in batches(log)][0]
    clean_log(log, now_ms=NOW)
    assert [raw for _, raw in batches(log)][0] == before
    log.close()


def test_small_cleaned_segments_are_grouped(tmp_path):
    log = open_log(tmp_path / "t-0", segment_bytes=1000)
    for i in range(30):
        append(log, [(b"k%d" % (i % 2), b"x" * 40)])
        log.roll()
    log.update_high_watermark(log.log_end_offset)
    assert len(log.segment_base_offsets) == 31
    clean_log(log, now_ms=NOW)
    append(log, [(b"k0", b"y")])
    log.roll()
    log.update_high_watermark(log.log_end_offset)
    clean_log(log, now_ms=NOW)
    assert len(log.segment_base_offsets) <= 3
    # The snapshots of the segments merged away went with them.
    assert set(log.snapshot_offsets()) <= set(log.segment_base_offsets)
    log.close()
    reopened = open_log(log.directory, segment_bytes=1000)
    assert [r[:3] for r in records(reopened)] == [(29, b"k1", b"x" * 40), (30, b"k0", b"y")]
    reopened.close()


# -- a crash at each step of the swap ---------------------------------------------------------------


class Crash(Exception):
    pass


def build_log(path):
    log = open_log(path, segment_bytes=10_000)
    for i in range(12):
        append(log, [(b"k%d" % (i % 3), b"v%d" % i)])
        if i % 3 == 2:
            log.roll()  # four small segments of three records: cleaned as one group
    append(log, [(b"k0", b"active")])
    log.update_high_watermark(log.log_end_offset)
    return log


@pytest.mark.parametrize("step", ["cleaned", "swap", "one-deleted", "all-deleted", "done"])
def test_a_crash_at_each_step_of_the_swap_reopens_to_the_old_or_the_new_segments(tmp_path, monkeypatch, step):
    # The new segments, from a copy cleaned without a crash.
    reference = build_log(tmp_path / "ref" / "t-0")
    old = records(reference)
    clean_log(reference, now_ms=NOW)
    new = records(reference)
    new_files = sorted(os.listdir(reference.directory))
    reference.close()
    assert len(new) < len(old)

    log = build_log(tmp_path / "crash" / "t-0")
    real_replace, real_delete = os.replace, LogSegment.delete
    deleted = []

    def replace(source, target, *args, **kwargs):
        source = os.fspath(source)
        if (step == "cleaned" and source.endswith(CLEANED_SUFFIX)) or (
            step == "all-deleted" and source.endswith(SWAP_SUFFIX)
        ):
            raise Crash
        real_replace(source, target, *args, **kwargs)
        if step == "swap" and source.endswith(CLEANED_SUFFIX):
            raise Crash

    def delete(segment):
        real_delete(segment)
        deleted.append(segment.base_offset)
        if step == "one-deleted":
            raise Crash

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(LogSegment, "delete", delete)
    if step == "done":
        clean_log(log, now_ms=NOW)
    else:
        with pytest.raises(Crash):
            clean_log(log, now_ms=NOW)
    monkeypatch.undo()
    leftovers = {name.rsplit(".", 1)[-1] for name in os.listdir(log.directory)}
    if step == "cleaned":
        assert "cleaned" in leftovers
    elif step != "done":
        assert "swap" in leftovers
    log.close_uncleanly()
    reopened = open_log(log.directory, segment_bytes=10_000)
    try:
        assert records(reopened) == (old if step == "cleaned" else new)
        assert replay(records(reopened)) == replay(old)
        assert not [n for n in os.listdir(reopened.directory) if n.endswith((CLEANED_SUFFIX, SWAP_SUFFIX, ".deleted"))]
        if step != "cleaned":
            assert [n for n in os.listdir(reopened.directory) if n.endswith(".log")] == [
                n for n in new_files if n.endswith(".log")
            ]
    finally:
        reopened.close()


def test_a_leftover_cleaned_file_is_deleted_and_the_old_segments_stay(tmp_path):
    log = build_log(tmp_path / "t-0")
    old = records(log)
    log.close()
    directory = log.directory
    # A .cleaned file the cleaner never swapped in: deleted, the old segments stay.
    shutil.copy(
        os.path.join(directory, segment_file_name(0)), os.path.join(directory, segment_file_name(0) + ".cleaned")
    )
    reopened = open_log(directory, segment_bytes=10_000)
    assert records(reopened) == old
    assert not os.path.exists(os.path.join(directory, segment_file_name(0) + ".cleaned"))
    reopened.close()


# -- every replica cleans its own log ------------------------------------------------------------


def test_each_replica_cleans_its_own_log_and_a_late_follower_catches_up_from_a_cleaned_leader(tmp_path):
    from dedup.cluster import Cluster

    cluster = Cluster(tmp_path, brokers=3, topic="t", segment_bytes=300, clock=lambda: NOW)
    try:
        producer = {"producer_id": 5, "producer_epoch": 0}
        cluster.stop_broker(2)  # down while the leader cleans: it catches up through the gaps
        for i in range(40):
            batch = encode_batch([b"v%d" % i], keys=[b"k%d" % (i % 4)], timestamp=NOW, base_sequence=i, **producer)
            assert cluster.produce(batch).error is None
        sizes = [cluster.broker(b).log.size_bytes for b in (0, 1)]
        stats = cluster.clean(now_ms=NOW)
        assert stats[0] is not None and stats[1] is not None and stats[2] is None
        assert [cluster.broker(b).log.size_bytes for b in (0, 1)] < sizes
        cluster.start_broker(2)
        follower = cluster.broker(2).log
        assert records(follower) == records(cluster.broker(0).log)
        assert follower.producer_state.entry(5) == cluster.broker(0).log.producer_state.entry(5)
        values = {r.key: r.value for r in cluster.consume()}
        assert values == {b"k%d" % k: b"v%d" % (36 + k) for k in range(4)}
        # The producer's next batch follows on every replica (its state survived the cleaning).
        batch = encode_batch([b"v40"], keys=[b"k0"], timestamp=NOW, base_sequence=40, **producer)
        assert cluster.produce(batch).error is None
    finally:
        cluster.close()
