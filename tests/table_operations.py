"""Random operations on a ProducerStateTable, shared by test_table_copy and test_table_update_from.

An operation models what reaches a partition's producer state: a client batch continuing a
producer's sequence ("next"), a retry of a batch the producer's entry retains ("retry"), any
append at all, with odd epochs, sequences, origins or the transactional flag ("append"), a
transaction marker ("marker"), and either expiry of idle producers ("expire") or batches
without a producer id, which only move the map end offset ("skip").

An operation names no offsets: `apply` derives them, and the epoch and sequence of "next" and
"retry", from the table it is applied to, and `run` gives each operation a timestamp from a
clock. So two tables holding the same state, given the same list, get the same calls; the tests
compare what that gives on a source and its copy, or on a staged copy and the live table, and
the `impl` fixture drives both twins (compiled and reference) through them alike.

Also shared: `state` (what a copy must reproduce), `outcome` (a verdict as plain values),
`busy_table` (producers in every state an entry can hold) and `compiled_twin` (the compiled
class, for the tests only it can run).
"""

from __future__ import annotations

import pytest
from conftest import TWINS
from hypothesis import strategies as st

from dedup import Origin
from dedup._types import INT16_MAX, INT32_MAX, wrap_increment
from dedup.errors import KafkaError

PIDS = [0, 1, 2, 3, 1 << 40]
counts = st.sampled_from([1, 1, 2, 5])
gaps = st.sampled_from([0, 0, 1, 9])


def entries(table):
    return {pid: table.entry(pid) for pid in table}


def state(table):
    """Everything a copy, or update_from, must reproduce, producer order included."""
    return table.window, table.map_end_offset, list(table), entries(table)


def outcome(call):
    """A verdict as plain values, or the Kafka error's class and code."""
    try:
        result = call()
    except KafkaError as error:
        return type(error).__name__, error.code
    if result is None or not hasattr(result, "duplicate"):
        return result
    return result.duplicate, result.base_offset, result.last_offset, result.timestamp


def busy_table(impl, window=3, *, after_bump=2):
    """Producers in every kind of state an entry can hold; returns the table. Producer 2 appends
    `after_bump` batches (1 or 2) after its epoch bump."""
    table = impl(window)
    end = 0
    # 1: the ring has wrapped more than once (head is neither 0 nor the last slot).
    for seq in range(2 * window + 1):
        end = table.append(1, 0, seq, 1, end, max_timestamp=100 + seq).last_offset + 1
    # 2: batches of several records, a bumped epoch; 3: a sequence wrapping past 2^31-1.
    end = table.append(2, 0, 0, 4, end, max_timestamp=7).last_offset + 1
    end = table.append(2, 1, 0, 2, end, max_timestamp=8).last_offset + 1
    if after_bump == 2:
        end = table.append(2, 1, 2, 3, end, max_timestamp=9).last_offset + 1
    end = table.append(3, 4, INT32_MAX - 1, 3, end, max_timestamp=-5).last_offset + 1
    # 4: an ongoing transaction; 5: a completed one (coordinator epoch, marker timestamp).
    end = table.append(4, 2, 0, 2, end, max_timestamp=11, transactional=True).last_offset + 1
    end = table.append(5, 0, 0, 1, end, transactional=True).last_offset + 1
    table.append_marker(5, 0, 6, end, commit=False, timestamp=555)
    end += 1
    # 6: created by a marker alone; 7: a replicated batch without a sequence.
    table.append_marker(6, 3, 1, end, commit=True, timestamp=66)
    end += 1
    table.append(7, 0, -1, 2, end, origin=Origin.REPLICATION, max_timestamp=70)
    table.update_map_end_offset(table.map_end_offset + 5)
    return table


def compiled_twin():
    """The compiled twin's table class, for the tests only it can run; the test fails when
    dedup._state did not load."""
    if "compiled" not in TWINS:
        pytest.fail("dedup._state did not load: build it with `pip install -e .`")
    return TWINS["compiled"].ProducerStateTable


def in_order(pids):
    """ "next" continues a producer's sequence and "retry" resends a retained batch (read from each
    table's own entry), so that accepted batches and duplicates are common, not only errors."""
    return st.one_of(
        st.tuples(st.just("next"), st.sampled_from(pids), counts, gaps, st.booleans()),
        st.tuples(st.just("retry"), st.sampled_from(pids), st.integers(0, 5)),
    )


def _operation(pids, last):
    ordered = in_order(pids)
    return st.one_of(
        ordered,
        ordered,
        st.tuples(
            st.just("append"),
            st.sampled_from(pids),
            st.sampled_from([0, 0, 0, 1, -1, 2, INT16_MAX]),  # epoch
            st.one_of(st.integers(-1, 12), st.integers(INT32_MAX - 3, INT32_MAX)),  # base sequence
            counts,
            gaps,
            st.sampled_from([Origin.CLIENT, Origin.CLIENT, Origin.REPLICATION]),
            st.booleans(),  # transactional
        ),
        st.tuples(
            st.just("marker"),
            st.sampled_from(pids),
            st.sampled_from([0, 1, 2]),  # epoch
            st.integers(-1, 3),  # coordinator epoch
            st.booleans(),  # commit
            st.sampled_from([Origin.COORDINATOR, Origin.REPLICATION]),
        ),
        last,
    )


def operation(pids=PIDS):
    """Operations on producers `pids`, and expiry ("expire", now, expiration); never "skip"."""
    return _operation(pids, st.tuples(st.just("expire"), st.integers(0, 40), st.integers(1, 30)))


def operation_with_skips(pids=PIDS):
    """Operations on producers `pids`, and ("skip", records): batches without a producer id in
    place of expiry; never "expire"."""
    return _operation(pids, st.tuples(st.just("skip"), st.integers(1, 20)))


def apply(table, op, clock):
    """One operation at the table's own map end offset, timestamped `clock`; its verdict."""
    kind, *args = op
    end = table.map_end_offset
    if kind in ("next", "retry"):
        entry = table.entry(args[0])
        epoch = entry.producer_epoch if entry is not None and entry.producer_epoch >= 0 else 0
        batches = entry.batches if entry is not None else ()
        if kind == "next":
            pid, count, gap, transactional = args
            # A stored last sequence may be -1 (NO_SEQUENCE, a replicated batch): 0 follows it.
            seq = wrap_increment(batches[-1].last_sequence, 1) if batches else 0
            op = ("append", pid, epoch, seq, count, gap, Origin.CLIENT, transactional)
        else:
            pid, back = args
            if not batches:
                return "no batch to retry"
            batch = batches[-1 - back % len(batches)]
            op = ("append", pid, epoch, batch.first_sequence, batch.offset_delta + 1, 0, Origin.CLIENT, False)
        kind, *args = op
    if kind == "append":
        pid, epoch, seq, count, gap, origin, transactional = args
        return outcome(
            lambda: table.append(
                pid, epoch, seq, count, end + gap, max_timestamp=clock, origin=origin, transactional=transactional
            )
        )
    if kind == "marker":
        pid, epoch, coordinator, commit, origin = args
        return outcome(
            lambda: table.append_marker(pid, epoch, coordinator, end, commit=commit, timestamp=clock, origin=origin)
        )
    if kind == "skip":
        return table.update_map_end_offset(end + args[0])
    now, expiration = args
    return table.remove_expired(now, expiration)


def run(table, ops, clock=0):
    """The operations in turn, the k-th timestamped clock + k; their verdicts."""
    return [apply(table, op, clock + k) for k, op in enumerate(ops)]
