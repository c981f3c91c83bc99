"""ProducerStateTable.copy: an exact, independent copy of all or some producers (spec §3.1 staging)."""

from __future__ import annotations

import logging
from functools import partial

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from table_operations import PIDS, busy_table, compiled_twin, entries, operation, outcome, run, state

from dedup import InvalidProducerEpochError, InvalidTxnStateError, Origin, OutOfOrderSequenceError, reference
from dedup._protocol import ProducerStateTableProtocol

try:
    from dedup import _snapshot as compiled_codec
except ImportError:  # pragma: no cover - conftest fails the run in that case
    compiled_codec = None


# --- what a copy holds --------------------------------------------------------------------


@pytest.mark.parametrize("window", [1, 3, 5, 255])
def test_copy_of_every_producer_equals_the_source(impl, window):
    table = busy_table(impl, window)
    copy = table.copy()
    assert type(copy) is impl and isinstance(copy, ProducerStateTableProtocol)
    assert len(copy) == len(table) == 7
    assert state(copy) == state(table)
    assert copy.window == window and copy.map_end_offset == table.map_end_offset
    assert entries(copy)[4].current_txn_first_offset is not None
    assert state(copy.copy()) == state(table)


def test_copy_of_an_empty_table(impl):
    table = impl(7)
    table.update_map_end_offset(40)
    copy = table.copy()
    assert len(copy) == 0 and copy.window == 7 and copy.map_end_offset == 40
    assert copy.append(1, 0, 0, 1, 40).base_offset == 40
    assert len(table) == 0


def test_copy_of_a_subset_holds_those_producers_in_their_order(impl):
    table = busy_table(impl)
    copy = table.copy([6, 1, 4])
    assert list(copy) == [6, 1, 4]
    assert entries(copy) == {pid: table.entry(pid) for pid in (6, 1, 4)}
    assert copy.window == table.window and copy.map_end_offset == table.map_end_offset


def test_ids_the_table_does_not_hold_are_skipped(impl):
    table = busy_table(impl)
    copy = table.copy([99, 2, (1 << 63) - 1, 0, 2, 2])  # a repeated id is copied once
    assert list(copy) == [2] and copy.entry(2) == table.entry(2)
    assert len(table.copy([123, 456])) == 0 and len(table.copy([])) == 0
    assert table.copy(np.array([], dtype=np.int64)).map_end_offset == table.map_end_offset


@pytest.mark.parametrize(
    "ids",
    [
        [3, 5],
        (3, 5),
        {3: "x", 5: "y"},
        range(3, 6, 2),
        np.array([3, 5], dtype=np.int64),
        np.array([3, 5], dtype=np.int32),
        np.array([3, 5], dtype=np.uint64),
        np.array([3, 0, 5, 0], dtype=np.int64)[::2],  # not contiguous
        [np.int64(3), np.int16(5)],
    ],
    ids=["list", "tuple", "dict", "range", "int64", "int32", "uint64", "strided", "numpy-scalars"],
)
def test_any_iterable_of_ids(impl, ids):
    table = busy_table(impl)
    assert entries(table.copy(ids)) == {3: table.entry(3), 5: table.entry(5)}


def test_an_iterator_a_set_and_a_read_only_array(impl):
    table = busy_table(impl)
    assert list(table.copy(pid for pid in [5, 3])) == [5, 3]
    assert sorted(table.copy({3, 5})) == [3, 5]
    frozen = np.array([5, 3], dtype=np.int64)
    frozen.flags.writeable = False
    assert list(table.copy(frozen)) == [5, 3]
    assert list(table.copy(table.producer_ids()[::-1])) == list(table)[::-1]


@pytest.mark.parametrize(
    ("ids", "error", "message"),
    [
        (5, TypeError, "producer_ids must be an iterable of producer ids, an int64 array or None, got int"),
        ("12", TypeError, "producer_ids must be an iterable .* got str"),
        (b"\x01", TypeError, "producer_ids must be an iterable .* got bytes"),
        (object(), TypeError, "producer_ids must be an iterable .* got object"),
        ([1.0], TypeError, "producer_ids must have an integer dtype, got float64"),
        ([True], TypeError, "producer_ids must have an integer dtype, got bool"),
        ([1, None], TypeError, "producer_ids must have an integer dtype, got object"),
        (np.array([1.0]), TypeError, "producer_ids must have an integer dtype"),
        ([-1], ValueError, r"producer_ids\[0\] is -1, outside \[0, 9223372036854775807\]"),
        (np.array([4, -7], dtype=np.int8), ValueError, r"producer_ids\[1\] is -7"),
        ([1 << 63], ValueError, r"producer_ids\[0\] is 9223372036854775808"),
        (np.zeros((2, 2), dtype=np.int64), ValueError, "producer_ids must be 1-D, got 2 dimensions"),
    ],
)
def test_argument_errors_name_producer_ids(impl, ids, error, message):
    table = busy_table(impl)
    before = state(table)
    with pytest.raises(error, match=message):
        table.copy(ids)
    with pytest.raises(error):
        table.copy(producer_ids=ids)
    assert state(table) == before


def test_a_negative_id_is_a_value_error_as_in_entry(impl):
    table = busy_table(impl)
    with pytest.raises(ValueError):
        table.entry(-1)
    with pytest.raises(ValueError, match="producer_ids"):
        table.copy([1, -1])


# --- independence -------------------------------------------------------------------------


def test_changing_the_copy_never_changes_the_source(impl):
    table = busy_table(impl)
    before = state(table)
    copy = table.copy()
    end = copy.map_end_offset
    end = copy.append(1, 0, 7, 1, end).last_offset + 1  # 1's next batch
    end = copy.append(2, 2, 0, 1, end).last_offset + 1  # a new epoch drops 2's batches
    end = copy.append(40, 0, 0, 1, end).last_offset + 1  # a new producer
    copy.append_marker(4, 2, 3, end, commit=True)  # ends 4's transaction
    copy.update_map_end_offset(copy.map_end_offset + 100)
    assert copy.remove_expired(10**6, 1) > 0
    assert state(table) == before
    subset = table.copy([1, 2])
    subset.append(1, 1, 0, 1, subset.map_end_offset)
    assert state(table) == before


def test_changing_the_source_never_changes_the_copy(impl):
    table = busy_table(impl)
    copy = table.copy()
    subset = table.copy([4, 1])
    copied, copied_subset = state(copy), state(subset)
    end = table.map_end_offset
    end = table.append(1, 0, 7, 1, end).last_offset + 1
    end = table.append(1, 0, 8, 1, end).last_offset + 1
    end = table.append(3, 5, 0, 1, end).last_offset + 1
    table.append_marker(4, 3, 9, end, commit=False, timestamp=1)
    end += 1
    assert table.remove_expired(10**6, 1) > 0
    assert len(table) < len(copy)
    for pid in range(1000, 1100):  # growth of the source (new chunks, a rehash)
        end = table.append(pid, 0, 0, 1, end).last_offset + 1
    assert state(copy) == copied and state(subset) == copied_subset


def test_the_same_appends_give_the_same_verdicts(impl):
    table = busy_table(impl, window=3)
    copy = table.copy()
    end = table.map_end_offset
    retained = table.entry(1).batches
    calls = [lambda t, b=b: t.append(1, 0, b.first_sequence, 1, end) for b in retained]  # duplicates
    calls += [
        lambda t: t.append(1, 0, retained[0].first_sequence - 1, 1, end),  # evicted: out of order
        lambda t: t.append(1, 0, 9, 1, end),  # a gap
        lambda t: t.append(2, 0, 0, 1, end),  # an older epoch
        lambda t: t.append(4, 2, 2, 1, end),  # a plain batch inside 4's transaction
        lambda t: t.append(3, 4, 1, 1, end, max_timestamp=3),  # after the wrap past 2^31-1
        lambda t: t.append(2, 1, 5, 2, end + 1),
        lambda t: t.append(2, 1, 5, 2, end + 9),  # a duplicate of the previous one
        lambda t: t.append(1, 0, 7, 1, end + 20),
        lambda t: t.append(1, 0, 8, 1, end + 30),
        lambda t: t.append(1, 0, retained[0].first_sequence, 1, end + 40),  # evicted by the last two
        lambda t: t.append_marker(4, 1, 0, end + 50, commit=True),  # fenced epoch
        lambda t: t.append_marker(4, 2, 3, end + 50, commit=True),
    ]
    verdicts = [(outcome(partial(call, table)), outcome(partial(call, copy))) for call in calls]
    assert [source for source, _ in verdicts] == [copied for _, copied in verdicts]
    kinds = [source for source, _ in verdicts]
    assert kinds[: len(retained)] == [(True, b.first_offset, b.last_offset, b.timestamp) for b in retained]
    assert kinds[len(retained) : len(retained) + 4] == [
        ("OutOfOrderSequenceError", OutOfOrderSequenceError.code),
        ("OutOfOrderSequenceError", OutOfOrderSequenceError.code),
        ("InvalidProducerEpochError", InvalidProducerEpochError.code),
        ("InvalidTxnStateError", InvalidTxnStateError.code),
    ]
    assert kinds[-3:-1] == [
        ("OutOfOrderSequenceError", OutOfOrderSequenceError.code),
        ("InvalidProducerEpochError", InvalidProducerEpochError.code),
    ]
    assert kinds[-1] is not None  # the marker completed 4's transaction, in both
    assert state(copy) == state(table)


# --- random appends on the source and the copy --------------------------------------------


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    window=st.sampled_from([1, 2, 3, 5]),
    before=st.lists(operation(), max_size=40),
    after=st.lists(operation(), max_size=40),
    subset=st.none() | st.lists(st.sampled_from([*PIDS, 77]), max_size=6),
)
@example(  # a full ring whose head has moved, then a duplicate of its oldest batch
    window=2,
    before=[("append", 1, 0, s, 1, 0, Origin.CLIENT, False) for s in range(3)],
    after=[("append", 1, 0, 1, 1, 0, Origin.CLIENT, False), ("append", 1, 0, 3, 1, 0, Origin.CLIENT, False)],
    subset=None,
)
@example(  # the source's holes: a new producer takes one there, the next number in the copy
    window=1,
    before=[
        ("next", 0, 1, 0, False), ("next", 0, 1, 0, True), ("next", 2, 1, 0, True),
        ("append", 1, 0, 0, 1, 0, Origin.CLIENT, True), ("append", 3, 0, 0, 1, 0, Origin.CLIENT, False),
        ("expire", 5, 1), ("next", 0, 1, 0, False), ("next", 0, 1, 0, False),
    ],
    after=[("marker", 0, 0, 0, False, Origin.COORDINATOR), ("expire", 1, 1)],
    subset=None,
)
def test_source_and_copy_driven_alike_stay_alike(impl, caplog, window, before, after, subset):
    caplog.set_level(logging.ERROR, logger="dedup")  # replication warnings are expected here
    table = impl(window)
    run(table, before)
    snapshot = state(table)
    copy = table.copy(subset)
    copied = set(copy)
    assert copied == (set(table) if subset is None else set(table) & set(subset))
    if subset is None:
        assert state(copy) == snapshot  # the order too, right after the copy
    for pid in copied:
        assert copy.entry(pid) == table.entry(pid)
    # Only the copied producers are driven: an absent one is a new producer in the copy alone.
    ops = [op for op in after if op[0] == "expire" or op[1] in copied]
    if subset is not None:
        ops = [op for op in ops if op[0] != "expire"]  # others' timestamps would differ
    assert run(copy, ops) == run(table, ops)
    assert copy.map_end_offset == table.map_end_offset
    assert set(copy) == set(table) & copied
    for pid in copy:
        assert copy.entry(pid) == table.entry(pid)
    if subset is None:
        # The same producers and entries; their order may differ after later inserts and
        # removals, because the copy has no holes (copy() drops them, as a snapshot reload
        # does): a new producer takes a hole in the source and the next number in the copy.
        assert entries(copy) == entries(table)  # a dict: order aside
    # The source after the copy's changes is what the same operations make of a fresh run.
    replay = impl(window)
    run(replay, before)
    assert state(replay) == snapshot
    run(replay, ops)
    assert state(replay) == state(table)


# --- the compiled copy --------------------------------------------------------------------


@pytest.fixture
def compiled():
    return compiled_twin()


def test_a_copy_of_100_000_producers(compiled):
    producers = 100_000
    table = compiled(5)
    pids = np.arange(producers, dtype=np.int64) * 7919 + 3
    end = 0
    epochs = np.zeros(producers, dtype=np.int16)
    twos = np.full(producers, 2, dtype=np.int32)
    for seq in range(7):  # every ring wraps: head 2
        result = table.append_many(pids, epochs, twos * seq, twos, pids + seq, log_end_offset=end)
        assert (result.error_codes == 0).all()
        end = result.log_end_offset
    table.append_marker(int(pids[5]), 0, 4, end, commit=True, timestamp=5)
    copy = table.copy()
    assert len(copy) == producers and copy.map_end_offset == table.map_end_offset
    assert (copy.producer_ids() == table.producer_ids()).all()
    report = copy.capacity_report()
    assert report["producers"] == producers and report["chunks"] > 1
    # Presized for exactly its producers: at most the last chunk is partly empty.
    assert 0 <= report["entry_capacity"] - producers < report["entry_capacity"] // report["chunks"]
    assert report["load_factor"] <= 0.8
    rng = np.random.default_rng(7)
    for pid in [*rng.choice(pids, 500, replace=False).tolist(), int(pids[0]), int(pids[-1]), int(pids[5])]:
        assert copy.entry(pid) == table.entry(pid)
    # Its rings behave as the source's: a duplicate of the oldest retained batch, then the next.
    first = int(pids[1])
    oldest = table.entry(first).batches[0]
    for t in (table, copy):
        retried = outcome(partial(t.append, first, 0, oldest.first_sequence, 2, end + 1))
        assert retried == (True, oldest.first_offset, oldest.last_offset, oldest.timestamp)
        assert t.append(first, 0, 14, 1, end + 1).base_offset == end + 1
    assert copy.entry(first) == table.entry(first)
    # A subset, given as an array, with ids the table does not hold.
    chosen = np.concatenate([pids[::2], pids[:100] + 1])
    subset = table.copy(chosen)
    assert len(subset) == producers // 2
    assert (subset.producer_ids() == pids[::2]).all()
    for pid in rng.choice(pids[::2], 200, replace=False).tolist():
        assert subset.entry(pid) == table.entry(pid)


def test_a_copy_after_removals_and_growth(compiled):
    table = compiled(4)
    end = 0
    for pid in range(5000):  # grown one insert at a time: chunk 0 doubles, then whole chunks
        end = table.append(pid, 0, 0, 1, end, max_timestamp=pid).last_offset + 1
    assert table.remove_expired(4000, 1000) == 3001  # survivors are moved down, chunks released
    for pid in range(9000, 9100):
        end = table.append(pid, 0, 0, 1, end, max_timestamp=10**6).last_offset + 1
    copy = table.copy()
    assert state(copy) == state(table)
    assert all(copy.append(pid, 0, 0, 1, end).duplicate for pid in copy)


def test_copy_refuses_a_busy_table(compiled):
    table = busy_table(compiled)
    with compiled_codec.SnapshotWriter(table, "full"):
        with pytest.raises(RuntimeError, match="the table is in use"):
            table.copy()
        with pytest.raises(RuntimeError, match="the table is in use"):
            table.copy([1])
    assert len(table.copy()) == len(table)


def test_compiled_and_twin_copies_agree(compiled):
    ops = [
        ("append", pid, 0, seq * (1 + pid % 3), 1 + pid % 3, pid % 2, Origin.CLIENT, pid == 3)
        for seq in range(7)
        for pid in range(6)
    ]
    ops += [("marker", 3, 1, 2, True, Origin.COORDINATOR), ("append", 4, 2, 0, 1, 0, Origin.CLIENT, False)]
    ops += [("append", 5, 0, -1, 4, 3, Origin.REPLICATION, False), ("expire", 3, 200)]
    follow = [("append", pid, 0, 7, 1, 0, Origin.CLIENT, False) for pid in range(6)]
    follow += [("append", pid, 0, 3, 1, 0, Origin.CLIENT, False) for pid in range(6)]
    follow += [("marker", 0, 0, 0, False, Origin.COORDINATOR), ("expire", 1000, 500)]
    tables = {}
    for name, impl in (("compiled", compiled), ("reference", reference.ProducerStateTable)):
        table = impl(5)
        run(table, ops)
        whole, subset = table.copy(), table.copy(np.array([4, 2, 9, 0], dtype=np.int64))
        verdicts = run(whole, follow), run(subset, follow)
        tables[name] = [state(t) for t in (table, whole, subset)], verdicts
    assert tables["compiled"] == tables["reference"]
    (source, whole, subset), _ = tables["compiled"]
    assert whole != source  # the copies moved on; the sources did not
