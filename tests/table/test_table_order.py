"""The table's order after remove_expired, and what removal leaves behind (issue #5).

Both twins number their producers the same way. remove_expired leaves holes: a removed
producer's number stays in use, skipped by producer_ids(), iteration and snapshots, and the
next new producer takes the hole freed last. When at most half of the numbers in use would
stay live, it compacts instead: going forward, a removed producer's (or an older hole's) place
is taken by the last number in use, which is checked in turn (swap-remove), and emptied tail
chunks are freed. Kafka's HashMap promises no order; the twins share this one, so
producer_ids(), iteration and snapshots agree byte for byte. The compiled table keeps its
index exact by marking removed slots deleted (and renumbering moved entries after a
compaction), and rebuilds it when most producers go.
"""

from __future__ import annotations

import numpy as np
import pytest

from dedup import reference
from dedup.snapshot import encode_snapshot

try:
    from dedup._state import ProducerStateTable as Compiled
except ImportError:  # pragma: no cover - conftest fails the run in that case
    Compiled = None

needs_compiled = pytest.mark.skipif(Compiled is None, reason="compiled module missing (conftest fails the run)")


def stamped(table, stamps, start=0):
    """Producers start, start+1, ... with one batch each, last timestamp stamps[k]."""
    stamps = list(stamps)
    ids = np.arange(start, start + len(stamps), dtype=np.int64)
    n = len(stamps)
    result = table.append_many(
        ids,
        np.zeros(n, dtype=np.int16),
        np.zeros(n, dtype=np.int32),
        np.ones(n, dtype=np.int32),
        np.array(stamps, dtype=np.int64),
        log_end_offset=table.map_end_offset,
    )
    assert (result.error_codes == 0).all()
    return ids


def after_removal(numbers, expired):
    """The numbers in use after remove_expired, spelled out (None: a hole); `numbers` may hold
    holes already."""
    numbers = list(numbers)
    live = sum(1 for pid in numbers if pid is not None and pid not in expired)
    if not any(pid in expired for pid in numbers if pid is not None):
        return numbers
    if live * 2 > len(numbers):  # holes
        return [None if pid in expired else pid for pid in numbers]
    position = 0  # compaction: swap-remove over the expired and the holes
    while position < len(numbers):
        if numbers[position] is None or numbers[position] in expired:
            last = numbers.pop()
            if position < len(numbers):
                numbers[position] = last
        else:
            position += 1
    return numbers


def order_of(numbers):
    return [pid for pid in numbers if pid is not None]


@pytest.mark.parametrize(
    ("stamps", "expected"),
    [
        ([0, 9, 0, 9, 9], [1, 3, 4]),  # 3 of 5 stay (over half): holes at 0 and 2
        ([9, 9, 9, 0, 0], [0, 1, 2]),  # holes at 3 and 4
        ([0, 9, 9, 9, 0], [1, 2, 3]),  # holes at 0 and 4: the others keep their place
        ([9, 9, 9, 9, 0], [0, 1, 2, 3]),  # the last entry alone: a hole
        ([0, 0, 9, 9, 9, 9], [2, 3, 4, 5]),  # 4 of 6 stay: holes
        ([0, 0, 0, 9, 9, 9], [5, 4, 3]),  # 3 of 6 stay (half): compaction, 5 and 4 fill 0 and 1
        ([0, 9, 0, 0, 9], [4, 1]),  # 2 of 5: 4 fills 0; 3 would fill 2 but goes too
        ([0, 0, 0, 0, 0], []),  # every entry
        ([9, 9, 9, 9, 9], [0, 1, 2, 3, 4]),  # none
        ([0], []),
    ],
)
def test_order_after_removal(impl, stamps, expected):
    table = impl()
    stamped(table, stamps)
    assert table.remove_expired(10, 5) == len(stamps) - len(expected)
    assert table.producer_ids().tolist() == expected == list(table)
    assert order_of(after_removal(range(len(stamps)), {k for k, stamp in enumerate(stamps) if stamp == 0})) == expected
    for pid in range(len(stamps)):
        assert (pid in table) == (pid in expected)


def test_new_producers_take_the_holes_freed_last_first(impl):
    table = impl()
    stamped(table, [9, 0, 9, 0, 9, 9, 9, 9])  # 6 of 8 stay: holes at 1 and 3
    assert table.remove_expired(10, 5) == 2
    assert table.producer_ids().tolist() == [0, 2, 4, 5, 6, 7]
    stamped(table, [20, 20, 20], start=100)  # 100 takes hole 3, 101 hole 1, 102 a new number
    assert table.producer_ids().tolist() == [0, 101, 2, 100, 4, 5, 6, 7, 102]
    # Expiring 6 of 9 leaves 3: at most half, so the holes-to-be and the tail compact.
    assert table.remove_expired(20, 5) == 6
    assert table.producer_ids().tolist() == [102, 101, 100]


@needs_compiled
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("layout", ["spread", "head", "tail", "random"])
def test_twins_agree_on_order_and_snapshot_bytes(fraction, layout):
    producers = 5_000
    rng = np.random.default_rng(7)
    expired = int(producers * fraction)
    mask = np.zeros(producers, dtype=bool)
    if layout == "spread" and expired:
        mask[np.linspace(0, producers - 1, expired).astype(int)] = True
    elif layout == "head":
        mask[:expired] = True
    elif layout == "tail":
        mask[producers - expired :] = True
    elif layout == "random":
        mask[rng.choice(producers, expired, replace=False)] = True
    stamps = np.where(mask, 0, 100)
    compiled, twin = Compiled(), reference.ProducerStateTable()
    ids = stamped(compiled, stamps)
    stamped(twin, stamps)
    compiled.append_marker(int(ids[-1]), 0, 0, compiled.map_end_offset, commit=True, timestamp=0)
    twin.append_marker(int(ids[-1]), 0, 0, twin.map_end_offset, commit=True, timestamp=0)
    expected_order = order_of(after_removal(ids.tolist(), {int(pid) for pid in ids[mask]} | {int(ids[-1])}))
    assert compiled.remove_expired(50, 10) == twin.remove_expired(50, 10) == producers - len(expected_order)
    assert compiled.producer_ids().tolist() == twin.producer_ids().tolist() == expected_order
    for snapshot_format in ("kafka", "full"):
        assert encode_snapshot(compiled, snapshot_format) == encode_snapshot(twin, snapshot_format)
    for pid in ids.tolist():
        assert compiled.entry(pid) == twin.entry(pid)
    # The tables go on working the same after the removal: old producers and new ones.
    for pid in expected_order[:50] + list(range(10_000, 10_050)):
        sequence = 1 if pid < 10_000 else 0
        a = compiled.append(pid, 0, sequence, 1, compiled.map_end_offset, max_timestamp=200)
        b = twin.append(pid, 0, sequence, 1, twin.map_end_offset, max_timestamp=200)
        assert (a.base_offset, a.duplicate) == (b.base_offset, b.duplicate)
    assert compiled.producer_ids().tolist() == twin.producer_ids().tolist()


def test_ongoing_transactions_keep_their_place_or_fill_a_hole(impl):
    table = impl()
    stamped(table, [0, 0, 0, 0])
    table.append(4, 0, 0, 1, table.map_end_offset, max_timestamp=0, transactional=True)
    # 4 never expires (spec §6): 1 of 5 stays, so compaction: 4 fills 0, then 3, 2 and 1 go.
    assert table.remove_expired(100, 10) == 4
    assert table.producer_ids().tolist() == [4]


@needs_compiled
def test_mass_expiry_frees_tail_chunks_and_shrinks_the_index():
    table = Compiled()
    stamped(table, [0] * 90_000 + [100] * 10_000)
    full = table.capacity_report()
    assert table.remove_expired(50, 10) == 90_000
    report = table.capacity_report()
    assert report["producers"] == 10_000 and report["chunks"] < full["chunks"] / 5
    assert report["index_capacity"] < full["index_capacity"] / 4 and report["index_deleted"] == 0
    assert table.memory_bytes() == report["bytes"] < full["bytes"] / 4
    assert sorted(table.producer_ids().tolist()) == list(range(90_000, 100_000))
    assert all(pid in table for pid in range(90_000, 100_000)) and 0 not in table


@needs_compiled
def test_removal_of_every_producer_returns_the_memory_of_a_grown_table():
    table = Compiled()
    stamped(table, [0] * 60_000)
    full = table.memory_bytes()
    assert table.remove_expired(50, 10) == 60_000
    report = table.capacity_report()
    assert len(table) == 0 and report["chunks"] == 1  # chunk 0 stays, as before
    assert table.memory_bytes() == report["bytes"] < full / 50
    stamped(table, [0] * 100)  # the emptied table still works
    assert table.producer_ids().tolist() == list(range(100))


@needs_compiled
def test_deleted_slots_are_counted_reused_and_never_fill_the_index():
    """A few percent expiring at a time leaves deleted index slots (no rebuild); inserts reuse
    them or trigger a rehash, so live + deleted slots stay at most 0.8 of the index and every
    lookup stays right."""
    table = Compiled()
    twin = reference.ProducerStateTable()
    start = 0
    deleted_seen = 0
    for round_ in range(40):
        stamps = [round_] * 2_000
        stamped(table, stamps, start=start)
        stamped(twin, stamps, start=start)
        start += 2_000
        removed = table.remove_expired(round_, 3)
        assert removed == twin.remove_expired(round_, 3)
        report = table.capacity_report()
        assert (report["producers"] + report["index_deleted"]) / report["index_capacity"] <= 0.8
        assert table.producer_ids().tolist() == twin.producer_ids().tolist()
        deleted_seen = max(deleted_seen, report["index_deleted"])
    assert deleted_seen >= 2_000  # removal did leave deleted slots rather than rebuild
    for pid in range(0, start, 37):
        assert (pid in table) == (pid in twin)
        assert table.entry(pid) == twin.entry(pid)


@needs_compiled
def test_a_presized_table_after_expiry_grows_for_update_from_without_failing():
    """update_from reserves room first; deleted slots count against that room."""
    live = Compiled(capacity=20_000)
    stamped(live, [0, 100, 100, 100, 100] * 4_000)
    assert live.remove_expired(50, 10) == 4_000
    assert live.capacity_report()["index_deleted"] == 4_000
    for new_producers in (3_000, 15_000):  # within the capacity hint, then past it
        staged = live.copy([])
        start = 100_000 + len(live)
        stamped(staged, [200] * new_producers, start=start)
        live.update_from(staged)
        report = live.capacity_report()
        assert (report["producers"] + report["index_deleted"]) <= 0.8 * report["index_capacity"]
        assert all(pid in live for pid in range(start, start + new_producers, 7))
    assert len(live) == 34_000
    assert all(pid in live for pid in range(1, 20_000, 5)) and 0 not in live and 5 not in live


# --- the index after removal: edited in place, swept, or rebuilt (spec §6) ---------------------
#
# remove_expired (spec §6: every expired producer without an ongoing transaction goes, in one
# linear pass, §10) fixes the index in one of three ways: a few candidates are edited in place,
# more are swept (every slot rewritten once from what the entry pass recorded), mass expiry
# rebuilds a smaller index. Each way must leave every survivor findable under its new number,
# no removed producer findable, and inserts working; the twin gives the expected order.


def check_after_removal(compiled, twin, ids, now, expiration):
    before = set(compiled.producer_ids().tolist())
    removed = compiled.remove_expired(now, expiration)
    assert removed == twin.remove_expired(now, expiration)
    order = compiled.producer_ids().tolist()
    assert order == twin.producer_ids().tolist()
    assert all(pid in compiled for pid in order)
    gone = before - set(order)
    assert len(gone) == removed and not any(pid in compiled for pid in gone)
    report = compiled.capacity_report()
    assert report["producers"] + report["index_deleted"] <= 0.8 * report["index_capacity"]
    # Every id again: survivors append in sequence, removed ones come back as new producers.
    for pid in ids.tolist():
        sequence = 1 if pid in compiled else 0
        a = compiled.append(pid, 0, sequence, 1, compiled.map_end_offset, max_timestamp=now)
        b = twin.append(pid, 0, sequence, 1, twin.map_end_offset, max_timestamp=now)
        assert (a.base_offset, a.duplicate) == (b.base_offset, b.duplicate)
    assert compiled.producer_ids().tolist() == twin.producer_ids().tolist()
    assert all(compiled.entry(pid) == twin.entry(pid) for pid in ids.tolist()[::97])
    return removed


@needs_compiled
@pytest.mark.parametrize(
    "pattern",
    [
        "every tenth",  # swept: many candidates, no shrink
        "every third",
        "first 2%",  # few candidates: edited in place
        "last 20%",  # the tail only: dropped, nothing moves
        "all",  # the index is rebuilt smaller
        "first 60%",  # more than half: rebuilt smaller
    ],
)
def test_index_after_removal_patterns(pattern):
    producers = 30_000
    k = np.arange(producers)
    mask = {
        "every tenth": k % 10 == 0,
        "every third": k % 3 == 1,
        "first 2%": k < producers // 50,
        "last 20%": k >= producers * 4 // 5,
        "all": k >= 0,
        "first 60%": k < producers * 3 // 5,
    }[pattern]
    compiled, twin = Compiled(), reference.ProducerStateTable()
    ids = stamped(compiled, np.where(mask, 0, 100))
    stamped(twin, np.where(mask, 0, 100))
    assert check_after_removal(compiled, twin, ids, 50, 10) == mask.sum()


@needs_compiled
def test_sweep_with_deleted_slots_and_transactions_already_there():
    """A second removal meets the deleted slots of the first, and candidates with an ongoing
    transaction at both ends stay (spec §6), moved or not."""
    producers = 40_000
    compiled, twin = Compiled(capacity=producers), reference.ProducerStateTable()
    k = np.arange(producers)
    stamps = np.where(k % 7 == 0, 0, np.where(k % 5 == 0, 20, 100))
    ids = stamped(compiled, stamps)
    stamped(twin, stamps)
    for pid in (0, 35, producers - 5, producers - 10):  # expired by timestamp, transactional
        for table in (compiled, twin):
            table.append(pid, 0, 1, 1, table.map_end_offset, max_timestamp=0, transactional=True)
    # Every 7th goes (swept), leaving deleted slots; then every 5th, sweeping over them.
    assert compiled.remove_expired(15, 10) == twin.remove_expired(15, 10) == producers // 7 + 1 - 2
    assert compiled.capacity_report()["index_deleted"] == producers // 7 + 1 - 2
    assert compiled.producer_ids().tolist() == twin.producer_ids().tolist()
    check_after_removal(compiled, twin, ids, 120, 100)
    for pid in (0, 35, producers - 5, producers - 10):
        assert pid in compiled


@needs_compiled
def test_sweep_moves_wide_entries():
    """Wide entries (offsets 2^31 apart) give their rings back when removed and keep them
    when moved into a hole."""
    compiled, twin = Compiled(), reference.ProducerStateTable()
    producers = 6_000
    for table in (compiled, twin):
        for pid in range(producers):
            table.append(pid, 0, 0, 1, 10 * pid, max_timestamp=0 if pid % 4 == 0 else 100)
        for pid in range(0, producers, 3):  # a second batch 2^32 offsets later: the entry goes wide
            table.append(pid, 0, 1, 1, 2**32 + 10 * pid, max_timestamp=0 if pid % 4 == 0 else 100)
    wide_before = compiled.capacity_report()["wide_entries"]
    assert wide_before > 0
    check_after_removal(compiled, twin, np.arange(producers, dtype=np.int64), 50, 10)
    for pid in range(1, producers, 4):
        assert compiled.entry(pid) == twin.entry(pid)
