"""Both twins driven by the same random operations, checked against each other and the spec.

A hypothesis ``RuleBasedStateMachine`` feeds one compiled table and one reference table the
same operations (CLIENT, COORDINATOR and REPLICATION appends, retries, gaps, epoch changes,
transactions and markers, expiration, check/update, append_many) and requires, after every
step, identical verdicts (same result fields, or the same exception class, ``.code`` and
message) and identical state. A third, independent oracle, ``Model`` (spec_model.py), is the
spec's decision procedure (docs/spec.md §2.8) written out: it decides every verdict from the
rules alone and keeps the state §1.2/§3.2/§6 say the table must hold, so a bug shared by both
twins fails too.

Spec references: §1.2 (entry, mutators), §2.1 rules 8, 10, 12, 15, 16, 17, 18, §2.2 (markers
M2-M5), §2.3 (COORDINATOR), §2.4 (REPLICATION), §3.1 (check does not mutate), §3.2 step 6
(map end offset), §6 (expiration), §8.4 (sequence wraparound).
"""

from __future__ import annotations

import logging
from collections import deque

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from spec_model import Model, decrement_sequence, in_sequence, increment_sequence

from dedup import reference
from dedup._types import Origin
from dedup.errors import KafkaError
from dedup.snapshot import encode_snapshot

_state = pytest.importorskip("dedup._state")
from dedup import _testing  # noqa: E402

INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1
INT32_MAX = (1 << 31) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

# A small pool so producers collide, plus ids at the top of the int64 range.
PRODUCER_IDS = [0, 1, 2, 3, INT64_MAX - 1, INT64_MAX]
ABSENT_IDS = [4, 1 << 40]  # never used: `in` must say no on both
NOT_PRODUCER_IDS = [-1, 1 << 63, "1", 1.0, None, True]  # cannot be producer ids: `in` is False, not an error

pids = st.sampled_from(PRODUCER_IDS)
epochs = st.sampled_from([0, 1, 2, -1, 3, INT16_MAX, INT16_MIN])
sequences = st.one_of(st.integers(0, 10), st.integers(INT32_MAX - 5, INT32_MAX), st.just(-1))
record_counts = st.sampled_from([1, 1, 1, 2, 3, 5, 1000, INT32_MAX])
offset_gaps = st.sampled_from([0, 0, 0, 1, 7])
# Mostly near the clock; sometimes far enough (either way: CreateTime comes from clients) that
# the compiled table's int32 timestamp gaps do not fit and the entry goes wide.
timestamp_noise = st.one_of(
    st.integers(-3, 3),
    st.integers(-3, 3),
    st.integers(-3, 3),
    st.sampled_from([2**31 - 1, 2**31, 2**31 + 1, -(2**31), -(2**31) - 1, 2**40, -(2**40), 2**62, -(2**62)]),
)
origins = st.sampled_from([Origin.CLIENT, Origin.CLIENT, Origin.REPLICATION, Origin.COORDINATOR])


# --- the spec's arithmetic (§8.4): the model's, pinned to the spec's examples ------------------


def test_sequence_helpers_match_the_spec_examples():
    """§8.4's worked examples, so the model's arithmetic is pinned to the spec."""
    assert increment_sequence(INT32_MAX, 1) == 0
    assert increment_sequence(INT32_MAX - 10, 20) == 9
    assert decrement_sequence(0, 1) == INT32_MAX
    assert decrement_sequence(9, 20) == INT32_MAX - 10
    assert in_sequence(INT32_MAX, 0) and not in_sequence(INT32_MAX - 1, 0)
    assert in_sequence(-1, 0) and not in_sequence(-1, 1)


# --- running one operation on both twins -----------------------------------------------------


def event(label):
    """Count what a run covered (--hypothesis-show-statistics); a no-op when steps are replayed."""
    try:
        hypothesis_event(label)
    except InvalidArgument:
        pass


def outcome(call, table):
    """("value", v) or ("raise", exception) of call(table); only the errors the API documents."""
    try:
        return ("value", call(table))
    except (KafkaError, ValueError, TypeError) as error:
        return ("raise", error)


def snapshot_bytes(table, snapshot_format):
    """The table's snapshot, or ValueError where the format cannot hold the table."""
    try:
        return encode_snapshot(table, snapshot_format)
    except ValueError:
        return ValueError


RESULT_FIELDS = (
    "duplicate",
    "base_offset",
    "last_offset",
    "timestamp",
    "producer_id",
    "producer_epoch",
    "base_sequence",
    "last_sequence",
    "transactional",
    "origin",
)


def result_fields(result):
    return tuple(getattr(result, name) for name in RESULT_FIELDS)


def comparable(value):
    """An AppendResult as its fields (the twins have different classes); anything else as is."""
    return result_fields(value) if hasattr(value, "last_sequence") else value


def same_raise(compiled, ref):
    """Same class, same Kafka code and the same message (both twins word errors in _messages)."""
    assert type(compiled) is type(ref), (compiled, ref)
    assert getattr(compiled, "code", None) == getattr(ref, "code", None)
    assert str(compiled) == str(ref)


def assert_verdict(expected, kind, got, pid, epoch, seq, count, base_offset, ts, origin, transactional):
    """The outcome of one append or check equals the model's verdict."""
    verdict, detail = expected
    if verdict == "err":
        assert kind == "raise" and isinstance(got, KafkaError), (expected, got)
        assert got.code == detail, (expected, got)
        return
    assert kind == "value", (expected, got)
    last_seq = -1 if seq == -1 else increment_sequence(seq, count - 1)
    # The request's own fields come back unchanged, duplicate or not.
    assert (got.producer_id, got.producer_epoch, got.base_sequence, got.last_sequence) == (pid, epoch, seq, last_seq)
    assert (got.transactional, got.origin) == (transactional, origin)
    if verdict == "dup":
        # Rule 10: the ORIGINAL batch's offsets and stored timestamp.
        assert got.duplicate
        assert (got.base_offset, got.last_offset, got.timestamp) == (
            detail.last_offset - detail.offset_delta,
            detail.last_offset,
            detail.timestamp,
        )
    else:
        assert not got.duplicate
        assert (got.base_offset, got.last_offset, got.timestamp) == (base_offset, base_offset + count - 1, ts)


class TwinTables(RuleBasedStateMachine):
    """One compiled and one reference table, the same operations, the same answers."""

    @initialize(window=st.sampled_from([1, 2, 5, 7]), max_producers=st.sampled_from([None, None, 1, 2, 3, 5]))
    def start(self, window, max_producers=None):
        self.window = window
        # Small caps (max_producers) make evictions and refusals common among the six ids.
        self.compiled = _state.ProducerStateTable(window, max_producers=max_producers)
        self.reference = reference.ProducerStateTable(window, max_producers=max_producers)
        self.model = Model(window, max_producers)
        self.log_end_offset = 0  # the partition's LEO: only moves forward
        self.clock = 1_000
        # Recorded batches per producer, newest last: window + 2 of them, so a retry can pick
        # one still in the dedup window or one that just fell out of it.
        self.recorded: dict[int, deque] = {}
        self.mutations = 0  # successful state changes, for the stale-update rule

    # -- helpers ---------------------------------------------------------------------------

    def both(self, call):
        """call on both twins; require the same outcome; return it (compiled's objects)."""
        compiled = outcome(call, self.compiled)
        ref = outcome(call, self.reference)
        assert compiled[0] == ref[0], (compiled, ref)
        if compiled[0] == "raise":
            same_raise(compiled[1], ref[1])
        else:
            assert comparable(compiled[1]) == comparable(ref[1])
        return compiled

    def next_offset(self, gap):
        return max(self.log_end_offset, self.model.map_end_offset) + gap

    def timestamp(self, noise):
        return self.clock + noise

    def remember(self, pid, epoch, seq, count, transactional):
        self.recorded.setdefault(pid, deque(maxlen=self.window + 2)).append((epoch, seq, count, transactional))

    def data_batch(self, pid, epoch, seq, count, gap=0, ts=-1, origin=Origin.CLIENT, transactional=False):
        """One append on both twins, checked against each other and the model."""
        base_offset = self.next_offset(gap)
        if base_offset + count > INT64_MAX:
            kind, error = self.both(
                lambda t: t.append(
                    pid, epoch, seq, count, base_offset, max_timestamp=ts, origin=origin, transactional=transactional
                )
            )
            assert kind == "raise" and type(error) is ValueError  # offsets must stay below 2^63
            return
        expected = self.model.append(pid, epoch, seq, count, base_offset, ts, origin, transactional)
        event(f"append {origin.name}: {expected[0]} {expected[1] if expected[0] == 'err' else ''}")
        kind, got = self.both(
            lambda t: t.append(
                pid, epoch, seq, count, base_offset, max_timestamp=ts, origin=origin, transactional=transactional
            )
        )
        self.compare_verdict(expected, kind, got, pid, epoch, seq, count, base_offset, ts, origin, transactional)

    def compare_verdict(self, expected, kind, got, pid, epoch, seq, count, base_offset, ts, origin, transactional):
        """The twins' agreed outcome is the model's; a recorded batch moves the log end offset."""
        assert_verdict(expected, kind, got, pid, epoch, seq, count, base_offset, ts, origin, transactional)
        if expected[0] == "ok":
            self.log_end_offset = base_offset + count
            self.remember(pid, epoch, seq, count, transactional)
            self.mutations += 1

    # -- data batches ----------------------------------------------------------------------

    @rule(pid=pids, count=record_counts, gap=offset_gaps, noise=timestamp_noise, transactional=st.booleans())
    def client_in_sequence(self, pid, count, gap, noise, transactional):
        """§2.1 rule 16: the next batch of a well-behaved client."""
        epoch, seq = self.model.next_in_sequence(pid)
        self.data_batch(pid, epoch, seq, count, gap, self.timestamp(noise), Origin.CLIENT, transactional)

    @precondition(lambda self: self.recorded)
    @rule(data=st.data(), noise=timestamp_noise, origin=origins)
    def retry(self, data, noise, origin):
        """Rule 10: a client's retry of one of the last window+2 recorded batches is a duplicate
        while it is in the window (original offsets, original timestamp) and OUT_OF_ORDER once it
        fell out; from a follower or the coordinator it is appended again (§2.3, §2.4)."""
        pid = data.draw(st.sampled_from(sorted(self.recorded)), label="pid")
        history = self.recorded[pid]
        back = data.draw(st.integers(1, len(history)), label="back")
        epoch, seq, count, transactional = history[-back]
        self.data_batch(pid, epoch, seq, count, 0, self.timestamp(noise), origin, transactional)

    @rule(pid=pids, skip=st.integers(1, 3), count=record_counts, noise=timestamp_noise, transactional=st.booleans())
    def client_gap(self, pid, skip, count, noise, transactional):
        """Rule 16: a gap is OUT_OF_ORDER_SEQUENCE_NUMBER for a known epoch."""
        epoch, seq = self.model.next_in_sequence(pid)
        self.data_batch(
            pid, epoch, increment_sequence(seq, skip), count, 0, self.timestamp(noise), Origin.CLIENT, transactional
        )

    @rule(
        pid=pids,
        delta=st.sampled_from([1, -1, 2, -2]),
        from_zero=st.booleans(),
        count=record_counts,
        noise=timestamp_noise,
        transactional=st.booleans(),
        origin=origins,
    )
    def epoch_change(self, pid, delta, from_zero, count, noise, transactional, origin):
        """Rule 12 (lower epoch fenced, unless replicated §2.4), rule 15 (a new epoch starts at 0),
        §1.2 (any epoch change drops the retained batches)."""
        epoch, seq = self.model.next_in_sequence(pid)
        epoch = min(max(epoch + delta, INT16_MIN), INT16_MAX)
        self.data_batch(pid, epoch, 0 if from_zero else seq, count, 0, self.timestamp(noise), origin, transactional)

    @rule(
        pid=pids,
        epoch=epochs,
        seq=sequences,
        count=record_counts,
        gap=offset_gaps,
        noise=timestamp_noise,
        origin=origins,
        transactional=st.booleans(),
    )
    def arbitrary_batch(self, pid, epoch, seq, count, gap, noise, origin, transactional):
        """Any batch: sequences near 2^31-1 (§8.4), missing sequences (rule 8 for clients; fine
        for §2.3/§2.4), extreme epochs."""
        self.data_batch(pid, epoch, seq, count, gap, self.timestamp(noise), origin, transactional)

    @rule(pid=pids, below=st.integers(1, 4), count=record_counts, noise=timestamp_noise)
    def near_wraparound(self, pid, below, count, noise):
        """§8.4: a follower sets the producer's sequence just below 2^31-1 (§2.4: no sequence
        check), then the client continues across the wrap to 0."""
        epoch, _ = self.model.next_in_sequence(pid)
        live = self.model.producers.get(pid)
        transactional = live is not None and live.txn_first_offset is not None
        self.data_batch(pid, epoch, INT32_MAX - below, 1, 0, self.timestamp(noise), Origin.REPLICATION, transactional)
        for _ in range(2):
            epoch, seq = self.model.next_in_sequence(pid)
            self.data_batch(pid, epoch, seq, count, 0, self.timestamp(noise), Origin.CLIENT, transactional)

    @rule(
        pid=pids,
        epoch=epochs,
        seq=sequences,
        count=record_counts,
        noise=timestamp_noise,
        origin=origins,
        backwards=st.integers(1, 3),
    )
    def offset_goes_backwards(self, pid, epoch, seq, count, noise, origin, backwards):
        """An argument error, not a Kafka error: ValueError on both, nothing applied."""
        base_offset = self.model.map_end_offset - backwards
        if base_offset < 0:
            return
        kind, error = self.both(
            lambda t: t.append(pid, epoch, seq, count, base_offset, max_timestamp=self.timestamp(noise), origin=origin)
        )
        assert kind == "raise" and type(error) is ValueError and "base_offset" in str(error)

    @rule(
        pid=pids,
        bad=st.sampled_from(
            [
                ("producer_epoch", INT16_MAX + 1),
                ("producer_epoch", INT16_MIN - 1),
                ("base_sequence", -2),
                ("base_sequence", INT32_MAX + 1),
                ("record_count", 0),
                ("record_count", INT32_MAX + 1),
            ]
        ),
    )
    def bad_argument(self, pid, bad):
        """Out-of-range arguments: ValueError naming the argument on both, nothing applied."""
        args = {"producer_epoch": 0, "base_sequence": 0, "record_count": 1}
        name, value = bad
        args[name] = value
        base_offset = self.next_offset(0)
        kind, error = self.both(
            lambda t: t.append(pid, args["producer_epoch"], args["base_sequence"], args["record_count"], base_offset)
        )
        assert kind == "raise" and type(error) is ValueError and name in str(error)

    @rule(distance=st.integers(0, 1 << 34))
    def log_end_near_the_top(self, distance):
        """Offsets near 2^63-1: batches that would pass it are ValueErrors, nothing applied."""
        self.log_end_offset = max(self.log_end_offset, INT64_MAX - distance)

    # -- markers ---------------------------------------------------------------------------

    @rule(
        pid=pids,
        epoch_delta=st.sampled_from([0, 0, 1, -1]),
        coordinator_delta=st.sampled_from([0, 0, 1, -1]),
        commit=st.booleans(),
        gap=offset_gaps,
        noise=timestamp_noise,
        origin=st.sampled_from([Origin.COORDINATOR, Origin.COORDINATOR, Origin.REPLICATION, Origin.CLIENT]),
    )
    def marker(self, pid, epoch_delta, coordinator_delta, commit, gap, noise, origin):
        """§2.2 M2-M5 (and rule 7 for a client), REPLICATION applying regressions (§2.4)."""
        live = self.model.producers.get(pid)
        epoch = min(max((live.epoch if live else 0) + epoch_delta, INT16_MIN), INT16_MAX)
        coordinator_epoch = (live.coordinator_epoch if live else 0) + coordinator_delta
        self.run_marker(pid, epoch, coordinator_epoch, self.next_offset(gap), commit, self.timestamp(noise), origin)

    def run_marker(self, pid, epoch, coordinator_epoch, offset, commit, ts, origin):
        if offset >= INT64_MAX:  # the log end offset after it would not fit in int64
            kind, error = self.both(lambda t: t.append_marker(pid, epoch, coordinator_epoch, offset, commit=commit))
            assert kind == "raise" and type(error) is ValueError
            return
        expected = self.model.marker(pid, epoch, coordinator_epoch, offset, commit, ts, origin)
        event(f"marker: {expected[0]} {'completes' if expected[0] == 'ok' and expected[1] else expected[1]}")
        kind, got = self.both(
            lambda t: t.append_marker(pid, epoch, coordinator_epoch, offset, commit=commit, timestamp=ts, origin=origin)
        )
        if expected[0] == "err":
            assert kind == "raise" and getattr(got, "code", None) == expected[1], (expected, got)
        else:
            assert kind == "value" and got == expected[1], (expected, got)
            self.log_end_offset = offset + 1
            self.mutations += 1

    # -- expiration ------------------------------------------------------------------------

    @rule(advance=st.integers(0, 20))
    def tick(self, advance):
        self.clock += advance

    @rule(jump=st.sampled_from([2**31 - 2, 2**31, 2**33, -(2**31) - 5, -(2**33), 25 * 86_400_000]))
    def clock_jump(self, jump):
        """The clock moves by about 2^31 ms or more, forward or back: later batches' timestamps
        are far from the retained ones' (wide entries, then narrow again in the compiled table)."""
        self.clock += jump

    @rule(
        ahead=st.one_of(st.integers(-5, 40), st.sampled_from([INT64_MAX, INT64_MIN])),
        expiration_ms=st.sampled_from([1, 2, 5, 10, 30, INT64_MAX]),
    )
    def remove_expired(self, ahead, expiration_ms):
        """§6: idle for at least expiration_ms and no ongoing transaction (those never expire)."""
        now_ms = ahead if ahead in (INT64_MAX, INT64_MIN) else self.clock + ahead
        self.run_remove_expired(now_ms, expiration_ms)

    def run_remove_expired(self, now_ms, expiration_ms):
        expected = self.model.expire(now_ms, expiration_ms)
        event(f"remove_expired: {'some' if expected else 'none'} removed")
        kind, got = self.both(lambda t: t.remove_expired(now_ms, expiration_ms))
        assert (kind, got) == ("value", expected)
        if expected:
            self.mutations += 1

    # -- check, then update ----------------------------------------------------------------

    @rule(
        pid=pids,
        count=record_counts,
        noise=timestamp_noise,
        transactional=st.booleans(),
        retry_back=st.integers(0, 3),
        between=st.sampled_from(
            ["nothing", "same producer", "other producer", "rejected batch", "marker", "remove_expired", "append_many"]
        ),
    )
    def check_then_update(self, pid, count, noise, transactional, retry_back, between):
        """§3.1: check() does not mutate; update() records it, unless the table changed in
        between (stale: ValueError) or it is a duplicate (ValueError)."""
        history = self.recorded.get(pid)
        if retry_back and history and retry_back <= len(history):
            epoch, seq, count, transactional = history[-retry_back]
        else:
            epoch, seq = self.model.next_in_sequence(pid)
        base_offset = self.next_offset(0)
        ts = self.timestamp(noise)
        if base_offset + count > INT64_MAX:
            return
        before = self.state(self.compiled), self.state(self.reference)
        expected = self.model.copy().append(pid, epoch, seq, count, base_offset, ts, Origin.CLIENT, transactional)
        checked = {}
        for name, table in (("compiled", self.compiled), ("reference", self.reference)):
            checked[name] = outcome(
                lambda t: t.check(pid, epoch, seq, count, base_offset, max_timestamp=ts, transactional=transactional),
                table,
            )
        assert checked["compiled"][0] == checked["reference"][0]
        if checked["compiled"][0] == "raise":
            same_raise(checked["compiled"][1], checked["reference"][1])
        else:
            assert result_fields(checked["compiled"][1]) == result_fields(checked["reference"][1])
        assert (self.state(self.compiled), self.state(self.reference)) == before  # nothing mutated
        assert_verdict(
            expected, *checked["compiled"], pid, epoch, seq, count, base_offset, ts, Origin.CLIENT, transactional
        )
        if checked["compiled"][0] == "raise":
            return

        mutations = self.mutations
        if between == "same producer":
            next_epoch, next_seq = self.model.next_in_sequence(pid)
            self.data_batch(pid, next_epoch, next_seq, 1, 0, ts)
        elif between == "other producer":
            other = PRODUCER_IDS[(PRODUCER_IDS.index(pid) + 1) % len(PRODUCER_IDS)]
            next_epoch, next_seq = self.model.next_in_sequence(other)
            self.data_batch(other, next_epoch, next_seq, 1, 0, ts)
        elif between == "rejected batch":
            self.data_batch(pid, INT16_MIN, 0, 1, 0, ts)  # fenced (rule 12) unless the producer is at -32768
        elif between == "marker":
            live = self.model.producers.get(pid)
            self.run_marker(
                pid,
                live.epoch if live else 0,
                live.coordinator_epoch if live else 0,
                self.next_offset(0),
                True,
                ts,
                Origin.COORDINATOR,
            )
        elif between == "remove_expired":
            self.run_remove_expired(self.clock + 10, 10)
        elif between == "append_many":
            other = PRODUCER_IDS[(PRODUCER_IDS.index(pid) + 2) % len(PRODUCER_IDS)]
            next_epoch, next_seq = self.model.next_in_sequence(other)
            self.run_append_many([(other, next_epoch, next_seq, 1, ts, False)], self.next_offset(0), Origin.CLIENT)
        changed = self.mutations != mutations
        event(f"check/update: {expected[0]}, {'stale' if changed else 'fresh'}")

        kind, error = self.both_update(checked)
        if expected[0] == "dup" or changed:
            assert kind == "raise" and type(error) is ValueError, (expected, changed, error)
        else:
            assert kind == "value", error
            recorded = self.model.append(pid, epoch, seq, count, base_offset, ts, Origin.CLIENT, transactional)
            assert recorded == expected
            self.log_end_offset = base_offset + count
            self.remember(pid, epoch, seq, count, transactional)
            self.mutations += 1

    def both_update(self, checked):
        compiled = outcome(lambda t: t.update(checked["compiled"][1]), self.compiled)
        ref = outcome(lambda t: t.update(checked["reference"][1]), self.reference)
        assert compiled[0] == ref[0], (compiled, ref)
        if compiled[0] == "raise":
            same_raise(compiled[1], ref[1])
        return compiled

    @precondition(lambda self: len(self.compiled) > 0)
    @rule(pid=pids)
    def update_with_the_other_twins_result(self, pid):
        """update() takes only its own table's check() result: TypeError across twins."""
        epoch, seq = self.model.next_in_sequence(pid)
        base_offset = self.next_offset(0)
        try:
            from_compiled = self.compiled.check(pid, epoch, seq, 1, base_offset)
            from_reference = self.reference.check(pid, epoch, seq, 1, base_offset)
        except (KafkaError, ValueError):  # the verdicts themselves are compared elsewhere
            return
        for table, foreign in ((self.compiled, from_reference), (self.reference, from_compiled)):
            with pytest.raises(TypeError):
                table.update(foreign)

    # -- append_many -----------------------------------------------------------------------

    @rule(
        data=st.data(),
        rows=st.integers(0, 8),
        gap=offset_gaps,
        origin=st.sampled_from([Origin.CLIENT, Origin.CLIENT, Origin.REPLICATION, Origin.COORDINATOR]),
        with_timestamps=st.booleans(),
        with_transactional=st.booleans(),
    )
    def append_many_chunk(self, data, rows, gap, origin, with_timestamps, with_transactional):
        """append_many = append in a loop at consecutive offsets; a Kafka error on one row does not
        stop the others; duplicates report their original offsets (rule 10)."""
        log_end_offset = self.next_offset(gap)
        planner = self.model.copy()  # follows the rows as they are drawn, so "next" keeps in sequence
        recorded = {pid: deque(h, maxlen=self.window + 2) for pid, h in self.recorded.items()}
        columns = []
        end = log_end_offset
        for _ in range(rows):
            kind = data.draw(st.sampled_from(["next", "next", "retry", "gap", "epoch", "arbitrary"]), label="row")
            pid = data.draw(pids, label="pid")
            epoch, seq = planner.next_in_sequence(pid)
            count = data.draw(record_counts, label="count")
            transactional = data.draw(st.booleans(), label="txn") if with_transactional else False
            if kind == "retry" and recorded.get(pid):
                history = recorded[pid]
                epoch, seq, count, txn = history[-data.draw(st.integers(1, len(history)), label="back")]
                transactional = txn if with_transactional else False
            elif kind == "gap":
                seq = increment_sequence(seq, data.draw(st.integers(1, 3), label="skip"))
            elif kind == "epoch":
                epoch = min(max(epoch + data.draw(st.sampled_from([1, -1]), label="delta"), INT16_MIN), INT16_MAX)
                seq = 0
            elif kind == "arbitrary":
                epoch, seq = data.draw(epochs, label="epoch"), data.draw(sequences, label="seq")
            ts = self.timestamp(data.draw(timestamp_noise, label="noise")) if with_timestamps else -1
            columns.append((pid, epoch, seq, count, ts, transactional))
            if planner.append(pid, epoch, seq, count, end, ts, origin, transactional)[0] == "ok":
                recorded.setdefault(pid, deque(maxlen=self.window + 2)).append((epoch, seq, count, transactional))
                end += count
        self.run_append_many(columns, log_end_offset, origin, with_timestamps, with_transactional)

    def run_append_many(self, columns, log_end_offset, origin, with_timestamps=True, with_transactional=True):
        """One append_many on both twins, each row checked against the model's verdict."""
        by_column = [list(column) for column in zip(*columns, strict=True)] or [[]] * 6
        pid_col, epoch_col, seq_col, count_col, ts_col, txn_col = by_column
        arrays = dict(
            producer_ids=np.array(pid_col, dtype=np.int64),
            producer_epochs=np.array(epoch_col, dtype=np.int16),
            base_sequences=np.array(seq_col, dtype=np.int32),
            record_counts=np.array(count_col, dtype=np.int32),
            max_timestamps=np.array(ts_col, dtype=np.int64) if with_timestamps else None,
            transactional=np.array(txn_col, dtype=np.bool_) if with_transactional else None,
        )
        total = sum(count_col)
        kind, got = self.both_many(arrays, log_end_offset, origin)
        if log_end_offset + total > INT64_MAX:
            assert kind == "raise" and type(got) is ValueError  # nothing applied (the invariant checks)
            return
        assert kind == "value", got
        scratch = self.model.copy()
        recorded = {pid: deque(h, maxlen=self.window + 2) for pid, h in self.recorded.items()}
        end = log_end_offset
        applied = False
        for row, (pid, epoch, seq, count, ts, txn) in enumerate(columns):
            ts = ts if with_timestamps else -1
            txn = txn if with_transactional else False
            verdict = scratch.append(pid, epoch, seq, count, end, ts, origin, txn)
            event(f"append_many {origin.name}: {verdict[0]} {verdict[1] if verdict[0] == 'err' else ''}")
            if verdict[0] == "ok":
                recorded.setdefault(pid, deque(maxlen=self.window + 2)).append((epoch, seq, count, txn))
                want = (0, False, end, end + count - 1, ts)
                end += count
                applied = True
            elif verdict[0] == "dup":
                batch = verdict[1]
                want = (0, True, batch.last_offset - batch.offset_delta, batch.last_offset, batch.timestamp)
            else:
                want = (verdict[1], False, -1, -1, -1)
            row_got = (
                int(got.error_codes[row]),
                bool(got.duplicate[row]),
                int(got.base_offsets[row]),
                int(got.last_offsets[row]),
                int(got.timestamps[row]),
            )
            assert row_got == want, (row, verdict, row_got, want)
        assert got.log_end_offset == end
        if applied:
            self.mutations += 1
        self.model = scratch
        self.recorded = recorded
        self.log_end_offset = max(self.log_end_offset, end)

    def both_many(self, arrays, log_end_offset, origin):
        compiled = outcome(
            lambda t: t.append_many(**arrays, log_end_offset=log_end_offset, origin=origin), self.compiled
        )
        ref = outcome(lambda t: t.append_many(**arrays, log_end_offset=log_end_offset, origin=origin), self.reference)
        assert compiled[0] == ref[0], (compiled, ref)
        if compiled[0] == "raise":
            same_raise(compiled[1], ref[1])
            return compiled
        a, b = compiled[1], ref[1]
        for name in ("error_codes", "duplicate", "base_offsets", "last_offsets", "timestamps"):
            left, right = getattr(a, name), getattr(b, name)
            assert left.dtype == right.dtype and left.shape == right.shape, name
            np.testing.assert_array_equal(left, right, err_msg=name)
        assert a.log_end_offset == b.log_end_offset
        return compiled

    @precondition(lambda self: self.model.map_end_offset > 0)
    @rule(backwards=st.integers(1, 3))
    def append_many_below_map_end(self, backwards):
        """log_end_offset below map_end_offset: ValueError before anything is applied."""
        log_end_offset = max(self.model.map_end_offset - backwards, 0)
        arrays = dict(producer_ids=[PRODUCER_IDS[0]], producer_epochs=[0], base_sequences=[0], record_counts=[1])
        kind, error = self.both_many(arrays, log_end_offset, Origin.REPLICATION)
        assert kind == "raise" and type(error) is ValueError and "log_end_offset" in str(error)

    # -- invariants ------------------------------------------------------------------------

    @staticmethod
    def state(table):
        return {pid: table.entry(pid) for pid in table}, len(table), table.map_end_offset

    @invariant()
    def identical_state(self):
        """Both twins hold the state the model says §1.2/§3.2/§6 leave behind."""
        if not hasattr(self, "model"):
            return
        compiled, ref = self.state(self.compiled), self.state(self.reference)
        assert compiled == ref
        if self.compiled.capacity_report()["wide_entries"]:
            event("invariant: some compiled entries are wide")
        if self.compiled.capacity_report()["holes"]:
            event("invariant: the compiled table has holes (removed producers' numbers)")
        # remove_expired reads no entry while the count of ongoing transactions is 0: exact.
        count, recount = _testing.open_transactions_c(self.compiled)
        assert count == recount
        entries, length, map_end_offset = compiled
        assert entries == self.model.entries()
        assert length == len(self.model.producers)
        assert self.compiled.evictions == self.reference.evictions == self.model.evictions
        if self.model.evictions:
            event("invariant: the capped table has evicted")
        assert map_end_offset == self.model.map_end_offset
        assert sorted(self.compiled.producer_ids().tolist()) == sorted(self.model.producers)
        # The twins share one order (remove_expired swap-removes in both), so snapshots, which
        # list entries in table order, agree byte for byte.
        assert self.compiled.producer_ids().tolist() == self.reference.producer_ids().tolist()
        assert list(self.compiled) == list(self.reference)
        for snapshot_format in ("kafka", "full"):
            assert snapshot_bytes(self.compiled, snapshot_format) == snapshot_bytes(self.reference, snapshot_format)
        for pid in PRODUCER_IDS + ABSENT_IDS:
            assert (pid in self.compiled) == (pid in self.reference) == (pid in self.model.producers)
        for key in NOT_PRODUCER_IDS:
            assert key not in self.compiled and key not in self.reference
        assert all(len(e.batches) <= self.window for e in entries.values())


TwinTables.TestCase.settings = settings(
    stateful_step_count=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_twin_tables = TwinTables.TestCase


@pytest.fixture(autouse=True)
def _quiet_replication_warnings(caplog):
    # REPLICATION epoch regressions are logged at WARN (§2.4); thousands of them are noise here.
    caplog.set_level(logging.CRITICAL, logger="dedup")


# --- regressions found by the machine, replayed step by step --------------------------------


def test_regression_batch_ending_at_the_largest_offset():
    """Found by TwinTables: a batch ending at 2^63-1 would leave a log end offset of 2^63,
    past Kafka's long; the compiled table wrapped it to -2^63. Both twins now refuse it
    (ValueError, nothing applied) and the machine replays cleanly."""
    state = TwinTables()
    state.start(window=1)
    state.log_end_near_the_top(distance=0)
    state.near_wraparound(below=1, count=1, noise=0, pid=0)
    state.identical_state()
    state.teardown()


@pytest.mark.parametrize("impl_name", ["compiled", "reference"])
@pytest.mark.parametrize("how", ["append", "check+update", "marker"])
def test_offsets_do_not_go_backwards_after_the_largest_offset(impl_name, how):
    """The minimal form of the regression above: whatever ends at 2^63-1 is refused; what
    ends at 2^63-2 leaves the map end offset at 2^63-1 (§3.2 step 6: last offset + 1), and
    every later offset below it is refused (ValueError, nothing applied)."""
    table = (_state if impl_name == "compiled" else reference).ProducerStateTable()
    with pytest.raises(ValueError, match="offset"):
        if how == "append":
            table.append(1, 0, 0, 1, INT64_MAX)
        elif how == "check+update":
            table.check(1, 0, 0, 2, INT64_MAX - 1)
        else:
            table.append_marker(1, 0, 0, INT64_MAX, commit=True)
    assert len(table) == 0 and table.map_end_offset == 0
    if how == "append":
        table.append(1, 0, 0, 1, INT64_MAX - 1)
    elif how == "check+update":
        table.update(table.check(1, 0, 0, 2, INT64_MAX - 2))
    else:
        table.append_marker(1, 0, 0, INT64_MAX - 1, commit=True)
    assert table.map_end_offset == INT64_MAX
    before = {pid: table.entry(pid) for pid in table}
    with pytest.raises(ValueError, match="base_offset"):
        table.append(2, 0, 0, 1, 0)
    with pytest.raises(ValueError, match="offset"):
        table.append_marker(2, 0, 0, 5, commit=False)
    with pytest.raises(ValueError, match="offset"):
        table.append(2, 0, 0, 1, INT64_MAX)  # even at the map end: the end after it would not fit
    assert {pid: table.entry(pid) for pid in table} == before
