"""The compiled table stores each retained batch's offset and timestamp as int32 gaps (issue #5,
memory); values that do not fit make the entry "wide" (exact int64 values on the side) until
they leave the window. None of this may show: verdicts, entries, errors and snapshot bytes are
the pure-Python twin's, whatever the gaps. Every test here runs on both twins (`impl`) and
compares with a reference table driven the same way; the compiled-only tests also check that
the escape was taken (`capacity_report()["wide_entries"]`) and given back.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from table_operations import compiled_twin, outcome, state

from dedup import Origin, reference
from dedup._types import INT32_MAX
from dedup.snapshot import decode_snapshot, encode_snapshot

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
# Timestamps whose gaps to a neighbour miss int32 (about 24.8 days of ms) by one, or far.
FAR_TIMESTAMPS = [
    0,
    2**31 - 1,
    2**31,
    -1,
    -(2**31),
    -(2**31) - 1,
    1_767_225_600_000,
    1_767_225_600_000 - 25 * 86_400_000,  # CreateTime from a client whose clock went back
    INT64_MAX,
    INT64_MIN,
    5,
]
# Offsets (a producer's batches) whose gaps miss int32 or uint32, or are far apart.
FAR_OFFSETS = [0, 1, 2**31 - 1, 2**31 + 1, 2**32 + 7, 2**40, 2**62, INT64_MAX - 10]


def drive(table, steps):
    """Apply (kind, args) steps; the outcome of each, as plain values."""
    seen = []
    for kind, args in steps:
        if kind == "append":
            *batch, ts = args
            seen.append(outcome(partial(table.append, *batch, max_timestamp=ts, origin=Origin.REPLICATION)))
        elif kind == "client":
            *batch, ts = args
            seen.append(outcome(partial(table.append, *batch, max_timestamp=ts)))
        elif kind == "marker":
            pid, epoch, offset, ts = args
            call = partial(
                table.append_marker, pid, epoch, 0, offset, commit=True, timestamp=ts, origin=Origin.REPLICATION
            )
            seen.append(outcome(call))
        elif kind == "expire":
            seen.append(table.remove_expired(*args))
    return seen


def assert_twins_agree(table, twin):
    assert state(table) == state(twin)
    for format in ("full", "kafka"):
        assert encode_snapshot(table, format) == encode_snapshot(twin, format)


def wide_entries(table):
    return table.capacity_report()["wide_entries"] if hasattr(table, "capacity_report") else None


def far_steps(pid, offsets, timestamps, *, epoch=0):
    """One batch per (offset, timestamp), in sequence, then a retry of each (duplicates while
    retained, out of order once gone)."""
    steps = [
        ("append", (pid, epoch, k, 1, offset, ts))
        for k, (offset, ts) in enumerate(zip(offsets, timestamps, strict=True))
    ]
    end = offsets[-1] + 1
    steps += [("client", (pid, epoch, k, 1, end, 0)) for k in range(len(offsets))]
    return steps


@pytest.mark.parametrize("window", [1, 2, 5, 64, 255])
def test_far_offsets_and_timestamps_are_exact(impl, window):
    offsets = FAR_OFFSETS
    timestamps = (FAR_TIMESTAMPS * 2)[: len(offsets)]
    steps = far_steps(7, offsets, timestamps)
    table, twin = impl(window), reference.ProducerStateTable(window)
    assert drive(table, steps) == drive(twin, steps)
    assert_twins_agree(table, twin)
    batches = table.entry(7).batches
    assert [b.last_offset for b in batches] == offsets[-min(window, len(offsets)) :]
    assert [b.timestamp for b in batches] == timestamps[-min(window, len(offsets)) :]


@pytest.mark.parametrize("window", [1, 2, 5, 7, 255])
@pytest.mark.parametrize("timestamp", FAR_TIMESTAMPS)
def test_each_far_timestamp_between_near_ones(impl, window, timestamp):
    """A batch with a far (or backward) timestamp among near ones: the retry of each batch
    answers with its own stored timestamp."""
    timestamps = [1_000, 1_001, timestamp, 1_002, 999, 1_003]
    offsets = list(range(10, 10 + len(timestamps)))
    steps = far_steps(3, offsets, timestamps)
    table, twin = impl(window), reference.ProducerStateTable(window)
    assert drive(table, steps) == drive(twin, steps)
    assert_twins_agree(table, twin)


def test_wide_then_narrow_again_when_the_far_batch_leaves_the_window(impl):
    window = 3
    table, twin = impl(window), reference.ProducerStateTable(window)
    # A near start, one batch 2^40 offsets on and 30 days later, then near batches again.
    offsets = [5, 6, 2**40, 2**40 + 1, 2**40 + 2, 2**40 + 3]
    timestamps = [100, 101, 100 + 30 * 86_400_000, 100 + 30 * 86_400_000 + 1, 100 + 30 * 86_400_000 + 2, 7]
    wide = []
    for k, (offset, ts) in enumerate(zip(offsets, timestamps, strict=True)):
        step = [("append", (1, 0, k, 1, offset, ts))]
        assert drive(table, step) == drive(twin, step)
        wide.append(wide_entries(table))
        assert_twins_agree(table, twin)
    if impl is not reference.ProducerStateTable:
        # Wide while 5/6 and 2^40 share the window; narrow once they no longer do; the last
        # batch goes back 30 days, which does not fit, so wide again.
        assert wide == [0, 0, 1, 1, 0, 1]
        assert table.capacity_report()["bytes"] == table.memory_bytes()


def test_an_epoch_change_drops_a_wide_ring(impl):
    table, twin = impl(5), reference.ProducerStateTable(5)
    steps = [
        ("append", (1, 0, 0, 1, 0, 0)),
        ("append", (1, 0, 1, 1, 2**35, -(2**40))),
        ("append", (1, 1, 0, 1, 2**35 + 1, 3)),
    ]
    assert drive(table, steps[:2]) == drive(twin, steps[:2])
    if impl is not reference.ProducerStateTable:
        assert wide_entries(table) == 1
    assert drive(table, steps[2:]) == drive(twin, steps[2:])
    assert_twins_agree(table, twin)
    if impl is not reference.ProducerStateTable:
        assert wide_entries(table) == 0


@pytest.mark.parametrize("marker_timestamp", [2**31 + 200, -(2**31), 2**31 - 1 + 100, 150, INT64_MIN, INT64_MAX])
def test_a_marker_moves_last_timestamp_away_from_the_batches(impl, marker_timestamp):
    """last_timestamp is the marker's afterwards; the retained batches keep their own (their
    duplicates answer with them) and Kafka's snapshot writes the marker's."""
    table, twin = impl(5), reference.ProducerStateTable(5)
    steps = [("append", (1, 0, k, 1, k, 100 + k)) for k in range(3)]
    steps += [("marker", (1, 0, 10, marker_timestamp))]
    steps += [("client", (1, 0, k, 1, 11, 0)) for k in range(3)]
    steps += [("append", (1, 0, 3, 1, 11, 104)), ("client", (1, 0, 0, 1, 12, 0))]
    assert drive(table, steps) == drive(twin, steps)
    assert_twins_agree(table, twin)
    assert [b.timestamp for b in table.entry(1).batches] == [100, 101, 102, 104]


def busy_far_table(cls, window=4, producers=60):
    """Producers of which every third is wide (far offsets and timestamps) and every fifth has
    an old last_timestamp, so that remove_expired moves wide entries into holes."""
    table = cls(window)
    end = 0
    for seq in range(window + 1):
        for pid in range(producers):
            ts = 1_000 + seq
            if pid % 5 == 0:
                ts = 10 + seq
            if pid % 3 == 0 and seq == window - 1:
                end += 2**33
                ts = -(2**35)
            table.append(pid, 0, seq, 1, end, max_timestamp=ts, origin=Origin.REPLICATION)
            end += 1
    return table


def test_remove_expired_moves_and_drops_wide_entries(impl):
    table, twin = busy_far_table(impl), busy_far_table(reference.ProducerStateTable)
    assert_twins_agree(table, twin)
    wide_before = wide_entries(table)
    assert table.remove_expired(900, 100) == twin.remove_expired(900, 100) > 0
    assert_twins_agree(table, twin)
    if impl is not reference.ProducerStateTable:
        assert 0 < wide_entries(table) < wide_before
    assert table.remove_expired(INT64_MAX, 1) == twin.remove_expired(INT64_MAX, 1) > 0
    assert len(table) == 0 and wide_entries(table) in (0, None)
    busy = busy_far_table(impl)
    assert busy.remove_expired(INT64_MAX, 1) == 60
    if impl is not reference.ProducerStateTable:
        assert busy.capacity_report()["wide_entries"] == 0


def test_copies_and_update_from_carry_wide_entries(impl):
    table, twin = busy_far_table(impl), busy_far_table(reference.ProducerStateTable)
    full = table.copy()
    assert_twins_agree(full, twin)
    subset = [3, 4, 9, 9, 30, 31, 59, 1000]
    staged, staged_twin = table.copy(subset), twin.copy(subset)
    assert_twins_agree(staged, staged_twin)
    # Change the staged copies: 3 goes narrow (epoch change), 4 goes wide, a new one is wide.
    steps = [
        ("append", (3, 1, 0, 1, 2**40, 5)),
        ("append", (4, 0, 5, 1, 2**41, 5)),
        ("append", (777, 0, 0, 1, 2**41 + 1, 5)),
        ("append", (777, 0, 1, 1, 2**41 + 2, 2**50)),
    ]
    assert drive(staged, steps) == drive(staged_twin, steps)
    table.update_from(staged)
    twin.update_from(staged_twin)
    assert_twins_agree(table, twin)
    # The copies share nothing: changing the source leaves them as they were.
    before = state(full)
    table.remove_expired(INT64_MAX, 1)
    assert state(full) == before
    assert_twins_agree(full, busy_far_table(reference.ProducerStateTable))


@pytest.mark.parametrize("window", [1, 3, 5, 255])
def test_snapshots_of_wide_entries_round_trip(impl, window):
    table, twin = busy_far_table(impl, window, 40), busy_far_table(reference.ProducerStateTable, window, 40)
    twin.append_marker(6, 0, 0, twin.map_end_offset, commit=True, timestamp=INT64_MIN, origin=Origin.REPLICATION)
    table.append_marker(6, 0, 0, table.map_end_offset, commit=True, timestamp=INT64_MIN, origin=Origin.REPLICATION)
    data = encode_snapshot(table)
    assert data == encode_snapshot(twin)
    loaded = decode_snapshot(data, table_class=impl)
    assert_twins_agree(loaded, twin)
    if impl is not reference.ProducerStateTable and window > 1:
        assert loaded.capacity_report()["wide_entries"] == table.capacity_report()["wide_entries"] > 0
    kafka = decode_snapshot(
        encode_snapshot(table, "kafka"), window=window, map_end_offset=table.map_end_offset, table_class=impl
    )
    assert_twins_agree(
        kafka,
        decode_snapshot(
            encode_snapshot(twin, "kafka"),
            window=window,
            map_end_offset=twin.map_end_offset,
            table_class=reference.ProducerStateTable,
        ),
    )


def test_append_many_with_far_timestamps(impl):
    pids = np.repeat(np.arange(20, dtype=np.int64), 6)
    seqs = np.tile(np.arange(6, dtype=np.int32), 20)
    rng = np.random.default_rng(5)
    stamps = rng.choice(np.array(FAR_TIMESTAMPS, dtype=np.int64), len(pids))
    table, twin = impl(3), reference.ProducerStateTable(3)
    args = (pids, np.zeros(len(pids), np.int16), seqs, np.ones(len(pids), np.int32), stamps)
    got, expected = table.append_many(*args, log_end_offset=0), twin.append_many(*args, log_end_offset=0)
    for name in ("error_codes", "duplicate", "base_offsets", "last_offsets", "timestamps"):
        assert (getattr(got, name) == getattr(expected, name)).all()
    assert_twins_agree(table, twin)
    retry = table.append_many(*args, log_end_offset=table.map_end_offset)
    retry_twin = twin.append_many(*args, log_end_offset=twin.map_end_offset)
    assert (retry.timestamps == retry_twin.timestamps).all() and retry.duplicate.any()


def test_wide_pool_is_counted_and_freed():
    compiled = compiled_twin()
    table = compiled(5)
    for pid in range(100):
        table.append(pid, 0, 0, 1, table.map_end_offset, max_timestamp=0)
    narrow = table.memory_bytes()
    for pid in range(100):
        table.append(pid, 0, 1, 1, table.map_end_offset + 2**32, max_timestamp=0)
    assert table.capacity_report()["wide_entries"] == 100
    assert table.memory_bytes() >= narrow + 100 * 2 * 5 * 8
    assert table.remove_expired(INT64_MAX, 1) == 100
    assert table.memory_bytes() <= narrow


def test_sequence_values_are_untouched_by_the_escapes(impl):
    """last_sequence and offset_delta stay int32 in the entry, wide or not."""
    table, twin = impl(2), reference.ProducerStateTable(2)
    steps = [
        ("append", (1, 0, INT32_MAX - 1, 2, 0, 0)),
        ("append", (1, 0, 1, INT32_MAX, 2**33, 2**40)),
        ("client", (1, 0, 1, INT32_MAX, 2**34, 0)),
        ("client", (1, 0, INT32_MAX - 1, 2, 2**34, 0)),
    ]
    assert drive(table, steps) == drive(twin, steps)
    assert_twins_agree(table, twin)


@pytest.mark.parametrize("window", [1, 2, 5, 255])
def test_batches_of_more_than_65_536_records(impl, window):
    """offset_delta is kept in 16 bits unless a batch of the window has more records."""
    table, twin = impl(window), reference.ProducerStateTable(window)
    counts = [1, 65_535, 65_536, 65_537, INT32_MAX, 3, 1, 1, 1, 1, 1, 1]
    steps, offset, seq = [], 0, 0
    for count in counts:
        steps.append(("append", (9, 0, seq, count, offset, 1_000)))
        offset += count + 4
        seq = (seq + count) % (INT32_MAX + 1)
    steps += [("client", (9, 0, step[1][2], step[1][3], offset, 0)) for step in steps]
    assert drive(table, steps) == drive(twin, steps)
    assert_twins_agree(table, twin)
    if impl is not reference.ProducerStateTable:
        # Wide while a batch of more than 65,536 records is retained (window 255 keeps them all).
        assert wide_entries(table) == (1 if window == 255 else 0)
    loaded = decode_snapshot(encode_snapshot(table), table_class=impl)
    assert_twins_agree(loaded, twin)
