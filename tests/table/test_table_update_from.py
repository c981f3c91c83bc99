"""ProducerStateTable.update_from: a staged copy's entries become the live ones (spec §3.2 step 4)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from table_operations import PIDS, busy_table, compiled_twin, operation_with_skips, outcome, run, state

from dedup import Origin, reference

try:
    from dedup import _snapshot as compiled_codec
    from dedup._state import ProducerStateTable as Compiled
except ImportError:  # pragma: no cover - conftest fails the run in that case
    Compiled = compiled_codec = None


def live_table(impl, window=3):
    """busy_table's producers, with one batch of producer 2 after its epoch bump, not two."""
    return busy_table(impl, window, after_bump=1)


def staged_appends(window):
    """One append's worth of changes, on any table holding live_table's producers: each is
    (kind, call); duplicates and refusals are in the list too (they change nothing)."""
    retried = 2 * window  # producer 1's newest batch
    return [
        lambda t, e: t.append(1, 0, retried, 1, e),  # a duplicate
        lambda t, e: t.append(1, 0, 2 * window + 1, 2, e, max_timestamp=900),  # 1's next batch, 2 records
        lambda t, e: t.append(1, 0, 2 * window + 3, 1, e, max_timestamp=901),
        lambda t, e: t.append(2, 2, 0, 1, e, max_timestamp=902),  # an epoch bump drops 2's batches
        lambda t, e: t.append(2, 2, 5, 1, e),  # a gap: refused
        lambda t, e: t.append(3, 4, 1, 1, e, max_timestamp=903),  # 3 after the wrap past 2^31-1
        lambda t, e: t.append(4, 2, 2, 3, e, transactional=True, max_timestamp=904),  # 4's txn goes on
        lambda t, e: t.append_marker(4, 2, 3, e, commit=True, timestamp=905),  # and commits
        lambda t, e: t.append(5, 0, 1, 1, e, transactional=True, max_timestamp=906),  # 5 starts a txn
        lambda t, e: t.append(40, 0, 0, 1, e, max_timestamp=907),  # a new producer
        lambda t, e: t.append(41, 7, 12, 3, e, origin=Origin.REPLICATION, max_timestamp=908),  # another
        lambda t, e: t.append_marker(42, 1, 0, e, commit=False, timestamp=909),  # a marker makes a third
        lambda t, e: t.append(40, 0, 0, 1, e),  # a duplicate of the new producer's batch
        lambda t, e: t.append(6, 1, 0, 1, e),  # an older epoch: fenced
        lambda t, e: t.update_map_end_offset(e + 3),  # batches without producer id
    ]


def drive(table, calls):
    """Each call at the table's own map end offset; the verdicts."""
    return [outcome(lambda call=call: call(table, table.map_end_offset)) for call in calls]


STAGED = [1, 2, 3, 4, 5, 6, 40, 41, 42]  # every producer the appends touch (40-42 are new)


# --- the live table after update_from -----------------------------------------------------


@pytest.mark.parametrize("window", [1, 3, 5, 255])
def test_update_from_gives_what_the_same_appends_on_the_live_table_give(impl, window):
    live, direct = live_table(impl, window), live_table(impl, window)
    staged = live.copy(STAGED)
    calls = staged_appends(window)
    verdicts = drive(staged, calls)
    assert verdicts == drive(direct, calls)
    assert any(v[0] is True for v in verdicts if isinstance(v, tuple))  # duplicates were seen
    assert any(isinstance(v, tuple) and isinstance(v[0], str) for v in verdicts)  # and refusals
    staged_state = state(staged)
    live.update_from(staged)
    assert state(live) == state(direct)
    assert list(live) == [1, 2, 3, 4, 5, 6, 7, 40, 41, 42]  # new producers after the others, in order
    assert live.entry(4).current_txn_first_offset is None and live.entry(5).current_txn_first_offset is not None
    assert state(staged) == staged_state  # staged is only read
    # The live table goes on as the directly appended one does, expiration included.
    follow = staged_appends(window)[1:3] + [lambda t, e: t.remove_expired(904, 100)]
    assert drive(live, follow) == drive(direct, follow)
    assert state(live) == state(direct)


def test_producers_not_in_staged_are_untouched(impl):
    live = live_table(impl)
    others = {pid: live.entry(pid) for pid in (3, 6, 7)}
    staged = live.copy([1, 2])
    drive(staged, staged_appends(3)[1:4])
    live.update_from(staged)
    assert {pid: live.entry(pid) for pid in (3, 6, 7)} == others
    assert live.entry(1) == staged.entry(1) and live.entry(2) == staged.entry(2)
    assert live.entry(1).batches[-1].timestamp == 901


def test_an_unchanged_copy_changes_nothing(impl):
    live = live_table(impl)
    before = state(live)
    live.update_from(live.copy())
    live.update_from(live.copy([3, 99]))
    live.update_from(live.copy([]))
    assert state(live) == before


def test_an_empty_live_table_takes_every_staged_producer(impl):
    live = impl(3)
    staged = live.copy()
    direct = impl(3)
    calls = staged_appends(3)[9:13] + staged_appends(3)[-1:]  # new producers, a duplicate, no-id batches
    assert drive(staged, calls) == drive(direct, calls)
    live.update_from(staged)
    assert state(live) == state(direct) and list(live) == [40, 41, 42]


def test_staged_and_live_share_nothing_afterwards(impl):
    live = live_table(impl)
    staged = live.copy([1, 4])
    drive(staged, staged_appends(3)[1:3])
    live.update_from(staged)
    applied = state(live)
    # Appending to staged again (a retried stage) leaves the live table alone...
    end = staged.map_end_offset
    staged.append(1, 0, 10, 1, end)
    staged.append(4, 3, 0, 1, end + 1, transactional=True)  # an epoch bump clears the staged ring
    staged.append_marker(4, 3, 9, end + 2, commit=True)
    assert state(live) == applied
    # ...and the live table's appends leave staged alone.
    staged_state = state(staged)
    end = live.map_end_offset
    live.append(1, 0, 10, 1, end, max_timestamp=1)
    live.append(1, 0, 11, 1, end + 1, max_timestamp=2)
    live.append_marker(4, 2, 3, end + 2, commit=False)
    assert state(staged) == staged_state


# --- the map end offset -------------------------------------------------------------------


def test_the_map_end_offset_moves_up_to_staged(impl):
    live = live_table(impl)
    staged = live.copy([])
    staged.update_map_end_offset(live.map_end_offset + 40)  # batches without a producer id
    live.update_from(staged)
    assert live.map_end_offset == staged.map_end_offset and len(live) == 7


def test_the_map_end_offset_never_goes_down(impl):
    live = live_table(impl)
    staged = live.copy([1])
    staged.append(1, 0, 7, 1, staged.map_end_offset)
    live.update_map_end_offset(live.map_end_offset + 1000)
    ahead = live.map_end_offset
    live.update_from(staged)
    assert live.map_end_offset == ahead > staged.map_end_offset
    assert live.entry(1) == staged.entry(1)
    live.update_from(live.copy([]))
    assert live.map_end_offset == ahead


# --- staleness ----------------------------------------------------------------------------


def test_a_check_made_before_is_stale_afterwards(impl):
    live = live_table(impl)
    end = live.map_end_offset
    result = live.check(3, 4, 1, 1, end + 100)
    staged = live.copy([1])
    staged.append(1, 0, 7, 1, end)
    live.update_from(staged)
    with pytest.raises(ValueError, match="stale"):
        live.update(result)
    # Even when only the map end offset moved.
    result = live.check(3, 4, 1, 1, end + 100)
    staged = live.copy([])
    staged.update_map_end_offset(end + 50)
    live.update_from(staged)
    with pytest.raises(ValueError, match="stale"):
        live.update(result)
    live.update(live.check(3, 4, 1, 1, end + 100))
    assert live.entry(3).batches[-1].last_offset == end + 100


def test_a_check_stays_valid_when_nothing_changes(impl):
    live = live_table(impl)
    result = live.check(3, 4, 1, 1, live.map_end_offset)
    live.update_from(live.copy([99]))  # no producer, same map end offset
    live.update(result)
    assert live.entry(3).batches[-1].last_sequence == 1


def test_a_check_on_staged_is_not_the_live_tables(impl):
    live = live_table(impl)
    staged = live.copy([3])
    result = staged.check(3, 4, 1, 1, staged.map_end_offset)
    live.update_from(staged)
    with pytest.raises(ValueError, match="another table"):
        live.update(result)


# --- argument errors ----------------------------------------------------------------------


def refused(live, error, match, *args, **kwargs):
    """``live.update_from(*args, **kwargs)`` raises ``error`` (message matching ``match``) and
    changes nothing."""
    before = state(live)
    with pytest.raises(error, match=match):
        live.update_from(*args, **kwargs)
    assert state(live) == before


@pytest.mark.parametrize("staged", [None, 5, object(), {1: 2}, "table"], ids=["None", "int", "object", "dict", "str"])
def test_staged_must_be_a_table(impl, staged):
    match = r"staged must be a dedup\..*ProducerStateTable made by this table's copy"
    refused(live_table(impl), TypeError, match, staged)


def test_staged_must_be_the_same_twin(impl):
    other = reference.ProducerStateTable if impl is not reference.ProducerStateTable else Compiled
    staged = live_table(other)
    refused(live_table(impl), TypeError, rf"got {type(staged).__module__}\.ProducerStateTable", staged)


def test_staged_must_have_the_same_window(impl):
    staged = live_table(impl, window=5)
    refused(live_table(impl, window=3), ValueError, "staged has window 5, this table has window 3", staged)


def test_staged_must_not_be_the_table_itself(impl):
    live = live_table(impl)
    refused(live, ValueError, "staged is this table itself", live)
    refused(live, ValueError, "staged is this table itself", staged=live)


def test_staged_is_positional_or_keyword_and_required(impl):
    live = live_table(impl)
    with pytest.raises(TypeError):
        live.update_from()
    with pytest.raises(TypeError):
        live.update_from(live.copy(), live.copy())


# --- random appends: staged then update_from, or applied directly -------------------------

NEW = [9, 1 << 50]  # never in the live table: new producers of the staged append
operation = operation_with_skips(PIDS + NEW)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    window=st.sampled_from([1, 2, 3, 5]),
    before=st.lists(operation.filter(lambda op: op[0] == "skip" or op[1] in PIDS), max_size=40),
    subset=st.lists(st.sampled_from(PIDS + NEW + [77]), max_size=7),
    during=st.lists(operation, max_size=30),
    expire=st.none() | st.tuples(st.integers(0, 200), st.integers(1, 120)),
)
@example(  # a full ring whose head has moved, staged past another wrap; a new producer
    window=2,
    before=[("append", 1, 0, s, 1, 0, Origin.CLIENT, False) for s in range(3)],
    subset=[1, 9],
    during=[("next", 1, 1, 0, False), ("next", 1, 2, 0, True), ("next", 9, 1, 0, False), ("retry", 1, 0)],
    expire=None,
)
@example(  # an epoch bump, then a marker ending the transaction it started
    window=3,
    before=[("append", 2, 0, 0, 2, 0, Origin.CLIENT, True), ("next", 2, 1, 0, True)],
    subset=[2],
    during=[("append", 2, 1, 0, 1, 0, Origin.CLIENT, True), ("marker", 2, 1, 0, False, Origin.COORDINATOR)],
    expire=(10, 1),
)
def test_staged_then_update_from_equals_appending_directly(impl, caplog, window, before, subset, during, expire):
    caplog.set_level(logging.ERROR, logger="dedup")  # replication warnings are expected here
    live, direct = impl(window), impl(window)
    run(live, before)
    run(direct, before)
    staged = live.copy(subset)
    # The append touches only producers staged, or ones the live table does not hold (new).
    ops = [op for op in during if op[0] == "skip" or op[1] in set(staged) or op[1] not in set(live)]
    untouched = {pid: live.entry(pid) for pid in live if pid not in set(staged)}
    assert run(staged, ops, clock=100) == run(direct, ops, clock=100)
    end = live.map_end_offset
    live.update_from(staged)
    assert state(live) == state(direct)
    assert live.map_end_offset >= end
    assert {pid: live.entry(pid) for pid in untouched} == untouched
    if expire is not None:  # the last-timestamp column came over too
        assert live.remove_expired(*expire) == direct.remove_expired(*expire)
        assert state(live) == state(direct)


# --- the compiled update_from -------------------------------------------------------------


@pytest.fixture
def compiled():
    return compiled_twin()


def test_compiled_and_twin_agree(compiled):
    results = {}
    for name, impl in (("compiled", compiled), ("reference", reference.ProducerStateTable)):
        live = live_table(impl, 4)
        staged = live.copy(np.array(STAGED, dtype=np.int64))
        verdicts = drive(staged, staged_appends(4))
        stale = live.check(7, 0, -1, 1, live.map_end_offset, origin=Origin.REPLICATION)
        live.update_from(staged)
        with pytest.raises(ValueError, match="stale") as refusal:
            live.update(stale)
        results[name] = verdicts, state(live), state(staged), str(refusal.value)
    assert results["compiled"] == results["reference"]


def append_rounds(table, pids, rounds, records=2):
    """`rounds` batches of `records` records for each producer id, all accepted: the ids below
    10**9 continue from sequence 3, the others start at 0. Returns the next sequences' round."""
    rows = len(pids)
    first = np.where(pids < 10**9, 3, 0).astype(np.int32)
    for k in range(rounds):
        result = table.append_many(
            pids,
            np.zeros(rows, np.int16),
            first + k * records,
            np.full(rows, records, np.int32),
            pids % 1000 + k,
            log_end_offset=table.map_end_offset,
        )
        assert (result.error_codes == 0).all()


def test_100_000_staged_producers_grow_the_live_table(compiled):
    producers = 100_000
    live, direct = compiled(5), compiled(5)
    old = np.arange(200, dtype=np.int64) * 3  # 200 producers: chunk 0 (256 of 1,024 entries) is not full
    for table in (live, direct):
        for seq in range(3):
            ones = np.ones(200, np.int32)
            result = table.append_many(old, np.zeros(200, np.int16), ones * seq, ones, log_end_offset=seq * 200)
            assert (result.error_codes == 0).all()
    small = live.capacity_report()
    assert small["chunks"] == 1 and small["entry_capacity"] == 256
    new = np.arange(producers, dtype=np.int64) * 7919 + 10**9
    pids = np.concatenate([old[::2], new, old[1::2]])  # live and new producers interleaved
    staged = live.copy(np.unique(pids))  # as the log stages an append: the old producers only
    assert len(staged) == 200
    append_rounds(staged, pids, 7)  # every ring wraps
    append_rounds(direct, pids, 7)
    live.update_from(staged)
    assert len(live) == producers + 200
    assert (live.producer_ids() == direct.producer_ids()).all()
    assert live.map_end_offset == direct.map_end_offset == staged.map_end_offset
    report = live.capacity_report()
    assert report["chunks"] > 90 and report["load_factor"] <= 0.8  # chunks of 1,024 entries at window 5
    assert report["entry_capacity"] == direct.capacity_report()["entry_capacity"]
    rng = np.random.default_rng(11)
    for pid in [*rng.choice(pids, 1000, replace=False).tolist(), int(old[0]), int(new[0]), int(new[-1])]:
        assert live.entry(pid) == direct.entry(pid) == staged.entry(pid)
    # The grown table behaves as the directly appended one: duplicates, next batches, expiry.
    first = int(new[1])
    oldest = live.entry(first).batches[0]
    for table in (live, direct):
        retried = outcome(lambda table=table: table.append(first, 0, oldest.first_sequence, 2, table.map_end_offset))
        assert retried == (True, oldest.first_offset, oldest.last_offset, oldest.timestamp)
        assert table.append(first, 0, 14, 1, table.map_end_offset).base_offset == table.map_end_offset - 1
    assert live.remove_expired(10**6, 1) == direct.remove_expired(10**6, 1) == producers + 200
    # The chunks update_from added go back when their producers expire, as appended ones do.
    assert live.capacity_report()["chunks"] == direct.capacity_report()["chunks"] == 1


def test_many_new_producers_into_a_busy_live_table(compiled):
    live = live_table(compiled, 5)
    staged = live.copy([1, 4])
    direct = live_table(compiled, 5)
    for table in (staged, direct):
        end = table.map_end_offset
        for pid in range(1000, 6000):  # grown one insert at a time in staged: chunk 0 doubles, then chunks
            end = table.append(pid, 0, 0, 1, end, max_timestamp=pid).last_offset + 1
        table.append_marker(4, 2, 1, end, commit=True)
    live.update_from(staged)
    assert state(live) == state(direct)
    report = live.capacity_report()
    assert report["entry_capacity"] == direct.capacity_report()["entry_capacity"]
    assert report["load_factor"] <= 0.8


def test_update_from_refuses_a_busy_table(compiled):
    live = live_table(compiled)
    staged = live.copy([1])
    staged.append(1, 0, 7, 1, staged.map_end_offset)
    before = state(live)
    for busy in (live, staged):
        with compiled_codec.SnapshotWriter(busy, "full"):
            with pytest.raises(RuntimeError, match="the table is in use"):
                live.update_from(staged)
        assert state(live) == before
    live.update_from(staged)
    assert live.entry(1) == staged.entry(1)
    # Both tables are usable afterwards: update_from released them.
    staged.append(1, 0, 8, 1, staged.map_end_offset)
    live.append(1, 0, 8, 1, live.map_end_offset)
    assert live.entry(1).batches[-1].last_sequence == staged.entry(1).batches[-1].last_sequence == 8
