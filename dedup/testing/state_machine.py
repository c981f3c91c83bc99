"""``ProducerStateMachine``: any producer-state table driven against ``dedup.reference``.

A hypothesis ``RuleBasedStateMachine`` that applies the same operations to the table under
test and to dedup's pure-Python twin (:class:`dedup.reference.ProducerStateTable`, the
readable statement of Kafka's ``ProducerStateManager`` rules, docs/spec.md) and fails on the
first operation whose verdict or resulting state differs. Hypothesis then shrinks the run
to the fewest steps that still diverge and prints them, one call per line, followed by the
:class:`TableDivergence` naming the operation and both answers.

The table under test is any object with the table's protocol
(:class:`dedup._protocol.ProducerStateTableProtocol`): ``append``, ``check``/``update``,
``append_marker``, ``update_map_end_offset``, ``remove_expired``, ``entry``, ``len``,
iteration over producer ids and ``map_end_offset``. Snapshots are compared and restored when
:meth:`ProducerStateMachine.snapshot` and :meth:`ProducerStateMachine.restore` can (by
default: for dedup's own twins and their subclasses).

Usage, in a test module::

    from dedup.testing import ProducerStateMachine
    TestMyTable = ProducerStateMachine.for_table(MyTable).TestCase

Operations: a client's next batch, a retry of any of the last ``window + 2`` batches of a
producer (in the window: a duplicate with its original offsets, Kafka's rule; out of it:
OUT_OF_ORDER_SEQUENCE_NUMBER), a gap, an epoch change (older fenced, a newer one from 0),
arbitrary batches near the edges (sequence 2^31-1, epoch 32767, no sequence), replicated
and coordinator appends, ``check`` with and without ``update``, transaction markers, offsets
skipped, expiration (``producer.id.expiration.ms``) and a restart from a snapshot.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from .._backend import implementation_of
from .._types import DEFAULT_WINDOW, INT16_MAX, INT32_MAX, INT64_MAX, Origin, wrap_increment
from ..errors import KafkaError
from ..reference import ProducerStateTable as ReferenceTable
from ..snapshot import decode_snapshot, encode_snapshot

__all__ = ["ProducerStateMachine", "TableDivergence"]

#: Producers of a run: few, so that they collide, and one at the top of int64.
PRODUCER_IDS = (0, 1, 2, INT64_MAX)
_pids = st.sampled_from(PRODUCER_IDS)
_txn = st.sampled_from([False, False, False, True])
_counts = st.sampled_from([1, 1, 1, 2, 3, 7])
_gaps = st.sampled_from([0, 0, 0, 1, 5])
_origins = st.sampled_from([Origin.CLIENT, Origin.CLIENT, Origin.REPLICATION, Origin.COORDINATOR])
_epochs = st.sampled_from([0, 0, 1, 2, INT16_MAX - 1, INT16_MAX])
_sequences = st.one_of(st.integers(0, 6), st.integers(INT32_MAX - 3, INT32_MAX), st.just(-1))


class TableDivergence(AssertionError):
    """The table under test answered an operation differently from ``dedup.reference``, or
    holds a different state after it. The message names the operation and both answers."""


def _outcome(call: Callable[[], Any]) -> Any:
    """An answer as plain values: a verdict's fields, a Kafka error's class and code, an
    argument error's class (messages may differ), or a plain return value."""
    try:
        value = call()
    except KafkaError as error:
        return ("error", type(error).__name__, error.code)
    except (ValueError, TypeError) as error:
        return ("refused", type(error).__name__)
    if hasattr(value, "duplicate"):
        return ("duplicate" if value.duplicate else "append", value.base_offset, value.last_offset, value.timestamp)
    return value


def _is_twin(table: Any) -> bool:
    try:
        implementation_of(table)
    except TypeError:
        return False
    return True


class ProducerStateMachine(RuleBasedStateMachine):
    """The table of :meth:`make_table` against ``dedup.reference``, operation by operation.

    Subclass it and override :meth:`make_table` (or use :meth:`for_table`); ``window`` is
    the tables' window (Kafka's 5). The subclass's ``TestCase`` is a ``unittest.TestCase``
    that pytest runs."""

    window: ClassVar[int] = DEFAULT_WINDOW

    def make_table(self, window: int) -> Any:
        """A new, empty table under test with ``window`` batches per producer."""
        raise NotImplementedError("override make_table(window), or use ProducerStateMachine.for_table(factory)")

    def snapshot(self, table: Any, format: str) -> bytes | None:
        """``table``'s snapshot in ``format`` (``"kafka"`` or ``"full"``), or None when the
        table has none; by default dedup's codec for dedup's twins."""
        return encode_snapshot(table, format) if _is_twin(table) else None

    def restore(self, data: bytes, window: int, map_end_offset: int) -> Any | None:
        """A new table under test loaded from ``data`` (made by the reference), or None when
        the table cannot load one; by default dedup's codec for dedup's twins."""
        if not _is_twin(self.table):
            return None
        return decode_snapshot(data, window=window, map_end_offset=map_end_offset, table_class=type(self.table))

    @classmethod
    def for_table(cls, factory: Callable[[int], Any], *, window: int = DEFAULT_WINDOW) -> type[ProducerStateMachine]:
        """A machine whose tables under test are ``factory(window)``."""

        class Machine(cls):  # type: ignore[valid-type,misc]
            def make_table(self, window: int) -> Any:
                return factory(window)

        Machine.window = window
        Machine.__name__ = Machine.__qualname__ = f"{cls.__name__}[{getattr(factory, '__name__', 'table')}]"
        Machine.TestCase.settings = settings(
            stateful_step_count=50,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        return Machine

    # -- the two tables --------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        self.table = self.make_table(self.window)
        self.reference = ReferenceTable(self.window)
        self.clock = 1_000
        self.log_end_offset = 0
        # Each producer's recent batches, newest last, for retries in and just out of the window.
        self.sent: dict[int, deque[tuple[int, int, int, bool]]] = {}

    def both(self, what: str, call: Callable[[Any], Any]) -> Any:
        """``call`` on both tables; TableDivergence if the answers differ; the answer."""
        expected = _outcome(lambda: call(self.reference))
        got = _outcome(lambda: call(self.table))
        if got != expected:
            raise TableDivergence(f"{what}: dedup.reference answered {expected!r}, the table under test {got!r}")
        return expected

    def batch(self, pid: int, epoch: int, seq: int, count: int, gap: int, origin: Origin, txn: bool) -> None:
        base_offset = max(self.log_end_offset, self.reference.map_end_offset) + gap
        self.clock += 1
        stamp = self.clock
        what = (
            f"append(producer_id={pid}, producer_epoch={epoch}, base_sequence={seq}, record_count={count}, "
            f"base_offset={base_offset}, max_timestamp={stamp}, origin={origin.name}, transactional={txn})"
        )
        answer = self.both(what, lambda t: t.append(pid, epoch, seq, count, base_offset, max_timestamp=stamp,
                                                    origin=origin, transactional=txn))  # fmt: skip
        if answer[0] == "append":
            self.log_end_offset = answer[2] + 1
            self.sent.setdefault(pid, deque(maxlen=self.window + 2)).append((epoch, seq, count, txn))

    def next_in_sequence(self, pid: int) -> tuple[int, int]:
        entry = self.reference.entry(pid)
        if entry is None or entry.producer_epoch < 0:
            return 0, 0
        last = entry.last_sequence
        return entry.producer_epoch, 0 if last < 0 else wrap_increment(last, 1)

    # -- rules -----------------------------------------------------------------------------------

    @rule(pid=_pids, batches=st.integers(2, DEFAULT_WINDOW + 2), count=_counts)
    def client_burst(self, pid: int, batches: int, count: int) -> None:
        """A client's next few batches, in sequence, as ``max.in.flight`` lets it send them."""
        for _ in range(batches):
            epoch, seq = self.next_in_sequence(pid)
            self.batch(pid, epoch, seq, count, 0, Origin.CLIENT, False)

    @rule(pid=_pids, count=_counts, gap=_gaps, txn=_txn)
    def client_next(self, pid: int, count: int, gap: int, txn: bool) -> None:
        """A client's next batch, in sequence."""
        epoch, seq = self.next_in_sequence(pid)
        self.batch(pid, epoch, seq, count, gap, Origin.CLIENT, txn)

    @precondition(lambda self: bool(getattr(self, "sent", None)))
    @rule(data=st.data())
    def client_retry(self, data: st.DataObject) -> None:
        """A retry of one of the producer's last window+2 batches (its response was lost)."""
        pid = data.draw(st.sampled_from(sorted(self.sent)), label="pid")
        self.retry(pid, data.draw(st.integers(1, len(self.sent[pid])), label="back"))

    def retry(self, pid: int, back: int) -> None:
        """The producer's ``back``-th most recent batch again (1: the last one)."""
        epoch, seq, count, txn = self.sent[pid][-back]
        self.batch(pid, epoch, seq, count, 0, Origin.CLIENT, txn)

    @rule(pid=_pids, skip=st.integers(1, 3), count=_counts)
    def client_gap(self, pid: int, skip: int, count: int) -> None:
        """A batch after a missing one (OUT_OF_ORDER_SEQUENCE_NUMBER for a known producer)."""
        epoch, seq = self.next_in_sequence(pid)
        self.batch(pid, epoch, wrap_increment(seq, skip), count, 0, Origin.CLIENT, False)

    @rule(pid=_pids, delta=st.sampled_from([1, -1, 2]), from_zero=st.booleans(), count=_counts, origin=_origins)
    def epoch_change(self, pid: int, delta: int, from_zero: bool, count: int, origin: Origin) -> None:
        """A newer epoch (from 0, or wrongly not), or an older one (fenced from a client)."""
        epoch, seq = self.next_in_sequence(pid)
        self.batch(pid, min(max(epoch + delta, 0), INT16_MAX), 0 if from_zero else seq, count, 0, origin, False)

    @rule(pid=_pids, epoch=_epochs, seq=_sequences, count=_counts, gap=_gaps, origin=_origins, txn=_txn)
    def any_batch(self, pid: int, epoch: int, seq: int, count: int, gap: int, origin: Origin, txn: bool) -> None:
        """Any batch: sequences near 2^31-1 (wraparound), no sequence, the last epochs."""
        self.batch(pid, epoch, seq, count, gap, origin, txn)

    @rule(pid=_pids, count=_counts, update=st.booleans())
    def check_then_update(self, pid: int, count: int, update: bool) -> None:
        """``check`` (which changes nothing), then ``update`` with its result or not at all."""
        epoch, seq = self.next_in_sequence(pid)
        base_offset = max(self.log_end_offset, self.reference.map_end_offset)
        what = f"check(producer_id={pid}, producer_epoch={epoch}, base_sequence={seq}, record_count={count}, " \
               f"base_offset={base_offset})"  # fmt: skip
        results: dict[str, Any] = {}

        def check(table: Any) -> Any:
            results["reference" if table is self.reference else "table"] = result = table.check(
                pid, epoch, seq, count, base_offset, max_timestamp=self.clock
            )
            return result

        answer = self.both(what, check)
        if update and answer[0] == "append":
            self.both(f"update(<the result of {what}>)", lambda t: t.update(
                results["reference" if t is self.reference else "table"]))  # fmt: skip
            self.log_end_offset = answer[2] + 1
            self.sent.setdefault(pid, deque(maxlen=self.window + 2)).append((epoch, seq, count, False))

    @rule(pid=_pids, epoch=st.sampled_from([0, 1, 2]), coordinator_epoch=st.integers(0, 3), commit=st.booleans(),
          origin=st.sampled_from([Origin.COORDINATOR, Origin.REPLICATION]))  # fmt: skip
    def marker(self, pid: int, epoch: int, coordinator_epoch: int, commit: bool, origin: Origin) -> None:
        """A COMMIT or ABORT transaction marker."""
        offset = max(self.log_end_offset, self.reference.map_end_offset)
        self.clock += 1
        stamp = self.clock
        what = (f"append_marker(producer_id={pid}, producer_epoch={epoch}, coordinator_epoch={coordinator_epoch}, "
                f"offset={offset}, commit={commit}, timestamp={stamp}, origin={origin.name})")  # fmt: skip
        answer = self.both(what, lambda t: t.append_marker(pid, epoch, coordinator_epoch, offset, commit=commit,
                                                           timestamp=stamp, origin=origin))  # fmt: skip
        if not (isinstance(answer, tuple) and answer[0] in ("error", "refused")):
            self.log_end_offset = offset + 1

    @rule(records=st.integers(1, 20))
    def skip_offsets(self, records: int) -> None:
        """Batches without a producer id: only the map end offset moves."""
        offset = max(self.log_end_offset, self.reference.map_end_offset) + records
        self.both(f"update_map_end_offset({offset})", lambda t: t.update_map_end_offset(offset))
        self.log_end_offset = offset

    @rule(advance=st.integers(0, 30), expiration=st.integers(1, 20))
    def expire(self, advance: int, expiration: int) -> None:
        """``remove_expired(now, producer.id.expiration.ms)``: idle producers go."""
        self.clock += advance
        now = self.clock
        self.both(f"remove_expired({now}, {expiration})", lambda t: t.remove_expired(now, expiration))
        self.sent = {pid: history for pid, history in self.sent.items() if pid in self.reference}

    @rule(format=st.sampled_from(["kafka", "full"]))
    def restart_from_snapshot(self, format: str) -> None:
        """A broker restart: both tables reloaded from the reference's snapshot (Kafka's format
        keeps each producer's last batch only)."""
        data = encode_snapshot(self.reference, format)
        end = self.reference.map_end_offset
        table = self.restore(data, self.window, end)
        if table is None:
            return
        self.table = table
        self.reference = decode_snapshot(data, window=self.window, map_end_offset=end, table_class=ReferenceTable)
        self.sent = {pid: history for pid, history in self.sent.items() if pid in self.reference}

    # -- after every step ------------------------------------------------------------------------

    @invariant()
    def same_state(self) -> None:
        """The same producers, entries, map end offset and snapshot bytes."""
        if not hasattr(self, "table"):
            return
        ids, expected_ids = sorted(self.table), sorted(self.reference)
        if ids != expected_ids:
            raise TableDivergence(f"producers: dedup.reference holds {expected_ids}, the table under test {ids}")
        if len(self.table) != len(self.reference):
            raise TableDivergence(f"len: dedup.reference {len(self.reference)}, the table under test {len(self.table)}")
        for pid in expected_ids:
            expected, got = self.reference.entry(pid), self.table.entry(pid)
            if got != expected:
                raise TableDivergence(f"entry({pid}): dedup.reference holds {expected!r}, the table under test {got!r}")
        if self.table.map_end_offset != self.reference.map_end_offset:
            raise TableDivergence(f"map_end_offset: dedup.reference {self.reference.map_end_offset}, the table "
                                  f"under test {self.table.map_end_offset}")  # fmt: skip
        for format in ("kafka", "full"):
            got_bytes = _outcome(lambda: self.snapshot(self.table, format))  # noqa: B023
            if got_bytes is None:
                continue
            expected_bytes = _outcome(lambda: encode_snapshot(self.reference, format))  # noqa: B023
            if got_bytes != expected_bytes:
                raise TableDivergence(f"{format} snapshot: dedup.reference gives {expected_bytes!r}, the table under "
                                      f"test {got_bytes!r}")  # fmt: skip
