"""The transaction coordinator of a simulation run: Kafka's :class:`TransactionCoordinator`
(the code ``serve`` runs, :mod:`dedup.coordinator.transaction_coordinator`) driven in-process
on simulated time, with its ``__transaction_state`` partitions as replicated clusters on the
run's brokers, and the faults the coordinator must survive.

What is real: the coordinator object, its state machine, its ``__transaction_state`` records
(appended with acks=all to :class:`~dedup.cluster.Cluster` partitions replicated on the same
three brokers as the data, crashed and restarted with them), loading (PrepareCommit and
PrepareAbort completed at load), the markers written through the partition leaders, the
transaction timeout (an abort with the epoch bumped) and its timers (fired by the run's clock
instead of the event loop). What is in-process: the wire (the producer model calls the
coordinator as the API handlers of :mod:`dedup.server.apis.transactions` do, with the broker id
FindCoordinator would give); a coordinator *restart* is a new coordinator object over the same
replicated ``__transaction_state`` partitions (a ``serve`` process killed and started again,
without reopening the data partitions' files).

:class:`SimulatedCoordinator` is what the producer model sees as ``cluster.coordinator``
(``init_producer_id``, ``begin``, ``end_transaction``), mapping the coordinator's error codes to
:class:`~dedup.errors.KafkaError` and retrying the retriable ones as Kafka's client does.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from ..cluster import Cluster
from ..coordinator.transaction_coordinator import MARKER_RETRY_BACKOFF_MS, TransactionCoordinator
from ..coordinator.transaction_metadata import TransactionState
from ..errors import KafkaError, ProducerFencedError, error_for_code

if TYPE_CHECKING:
    from .simulate_run import Run

__all__ = [
    "DATA_PARTITIONS",
    "TRANSACTION_TIMEOUT_MS",
    "CoordinatorCrash",
    "SimulatedCoordinator",
    "SimulatedTimer",
    "TransactionStateStorage",
    "settled_state",
]

#: transaction.timeout.ms of the simulation's producers (Kafka's client default is 60 s).
TRANSACTION_TIMEOUT_MS = 30_000
#: transaction.abort.timed.out.transaction.cleanup.interval.ms (Kafka's default).
ABORT_INTERVAL_MS = 10_000
#: transaction.state.log.num.partitions in the simulation.
STATE_PARTITIONS = 2
#: The partitions of every transaction: the producer model's (0) and a second one the run writes once per transaction.
DATA_PARTITIONS = (("clicks", 0), ("clicks", 1))
#: The client's attempts at a coordinator request that gets a retriable error (retry.backoff.ms apart).
_ATTEMPTS = 6
_RETRIABLE = {
    ErrorCode.concurrent_transactions,
    ErrorCode.coordinator_load_in_progress,
    ErrorCode.not_coordinator,
    ErrorCode.coordinator_not_available,
}
_COMPLETED = {TransactionState.PREPARE_COMMIT: TransactionState.COMPLETE_COMMIT,
              TransactionState.PREPARE_ABORT: TransactionState.COMPLETE_ABORT}  # fmt: skip


class CoordinatorCrash(Exception):
    """The coordinator's broker dies in the middle of what it was doing (raised from inside the
    coordinator, at a marker write, so nothing after that point of its code runs)."""


class SimulatedTimer:
    """The coordinator's :class:`~dedup.coordinator.timers.Timer` on the run's clock: callbacks
    run in deadline order when :meth:`run_due` is called (after the clock moved)."""

    def __init__(self, clock: Callable[[], int]) -> None:
        self.clock = clock
        self._queue: list[tuple[int, int, _Handle, Callable[[], None]]] = []
        self._sequence = itertools.count()

    def schedule(self, delay_ms: int, callback: Callable[[], None]) -> _Handle:
        handle = _Handle()
        heapq.heappush(self._queue, (self.clock() + max(delay_ms, 0), next(self._sequence), handle, callback))
        return handle

    def run_due(self, limit: int = 1000) -> None:
        """Every callback due by now (a callback scheduled at delay 0 by another runs too);
        at most ``limit``, so that a loop of zero-delay callbacks cannot hang a run."""
        for _ in range(limit):
            if not self._queue or self._queue[0][0] > self.clock():
                return
            _, _, handle, callback = heapq.heappop(self._queue)
            if not handle.cancelled:
                callback()


class _Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class TransactionStateStorage:
    """``__transaction_state`` as :class:`~dedup.coordinator.store.OffsetsStorage`: ``partitions``
    replicated clusters (they exist from the start, as after the first FindCoordinator)."""

    def __init__(self, partitions: list[Cluster]) -> None:
        self.partitions = partitions
        self.num_partitions = len(partitions)

    def created(self) -> list[int]:
        return list(range(self.num_partitions))

    def partition(self, partition: int) -> Cluster | None:
        return self.partitions[partition]

    def leader(self, partition: int) -> int | None:
        return self.partitions[partition].leader_id


def settled_state(coordinator: TransactionCoordinator) -> dict[str, tuple[int, int, str]]:
    """``transactional_id -> (producer_id, producer_epoch, state name)`` of every id in memory."""
    return {tid: (m.producer_id, m.producer_epoch, m.state.state_name) for tid, m in coordinator.transactions.items()}


def _kafka_error(code: ErrorCode, what: str) -> KafkaError:
    try:
        cls = error_for_code(int(code))
    except KeyError:
        error = KafkaError(f"{code.name.upper()}: {what}")
        error.code, error.error_name = int(code), code.name.upper()
        return error
    return cls(f"{code.name.upper()}: {what}")


class SimulatedCoordinator:
    """The run's transaction coordinator, as the producer model calls it (``cluster.coordinator``).

    ``run`` gives the clock, the brokers and the faults; ``coordinator_class`` is the class
    built (a test passes a broken one to show the checks catch it).
    """

    def __init__(self, run: Run, storage: TransactionStateStorage, data: dict[tuple[str, int], Cluster],
                 coordinator_class: type[TransactionCoordinator] = TransactionCoordinator) -> None:  # fmt: skip
        self.run = run
        self.storage = storage
        self.data = data
        self.coordinator_class = coordinator_class
        self.timer = SimulatedTimer(run.clock)
        self._next_producer_id = itertools.count(1000)
        #: Marker writes left before the armed crash (None: no crash armed).
        self.crash_after_markers: int | None = None
        self.current_transactional_id: str | None = None
        #: Before a crash: the state of each id (and whether a fence of it failed to be logged),
        #: to compare with the state after reload.
        self.pending_reload_checks: dict[str, tuple[int, int, str, bool]] = {}
        self.coordinator = self._new()

    def _new(self) -> TransactionCoordinator:
        coordinator = self.coordinator_class(
            self.storage, generate_producer_id=lambda: next(self._next_producer_id), partition=self._partition,
            clock=self.run.clock, timer=self.timer, transaction_max_timeout_ms=900_000,
            transaction_abort_timed_out_transaction_cleanup_interval_ms=ABORT_INTERVAL_MS,
        )  # fmt: skip
        coordinator.start()
        return coordinator

    def _partition(self, topic: str, index: int) -> Cluster | None:
        """Where a marker goes; the armed crash happens here, after the prepare record and
        ``crash_after_markers`` markers."""
        if self.crash_after_markers is not None:
            if self.crash_after_markers == 0:
                self.crash_after_markers = None
                raise CoordinatorCrash(f"before the marker of {topic}-{index}")
            self.crash_after_markers -= 1
        return self.data.get((topic, index))

    # -- driving -----------------------------------------------------------------------------------

    def settle(self) -> None:
        """Run the timers that are due (loads, marker retries, timeouts), a crash inside them
        handled; then compare the ids reloaded since a crash with their state before it."""
        try:
            self.timer.run_due()
        except CoordinatorCrash as crash:
            self.crashed(crash)
            self.timer.run_due()
        self._check_reloaded()

    def crashed(self, crash: CoordinatorCrash) -> None:
        """The coordinator's broker died mid-way: it is crashed on every partition, and the
        coordinator restarts from ``__transaction_state`` (a new object: its memory is gone)."""
        tid = self.current_transactional_id
        index = self.coordinator.partition_for(tid) if tid is not None else 0
        victim = self.storage.leader(index)
        self.run.log(f"coordinator crash {crash}: broker {victim} down, the coordinator restarts")
        self.run.counts.faults["coordinator crash mid-markers"] += 1
        self.restart(fault=None)
        if victim is not None:
            self.run.stop_broker(victim)

    def restart(self, *, fault: str | None = "coordinator restart") -> None:
        """A new coordinator over the same ``__transaction_state``; its state after loading is
        checked against the old one's."""
        self._remember_state()
        self.coordinator.close()
        self.coordinator = self._new()
        if fault is not None:
            self.run.counts.faults[fault] += 1
            self.run.log("the transaction coordinator restarts (a new process loads __transaction_state)")

    def leadership_changed(self) -> None:
        """Brokers stopped or started: the coordinator's partitions may have moved (serve's path)."""
        moved = any(self.coordinator._loaded.get(i) != (c.leader_id, c.leader_epoch)
                    for i, c in enumerate(self.storage.partitions))  # fmt: skip
        if moved:
            self._remember_state()
        self.coordinator.leadership_changed()

    def _remember_state(self) -> None:
        for tid, metadata in self.coordinator.transactions.items():
            self.pending_reload_checks.setdefault(tid, (metadata.producer_id, metadata.producer_epoch,
                                                        metadata.state.state_name, metadata.has_failed_epoch_fence))

    def _check_reloaded(self) -> None:
        coordinator = self.coordinator
        for tid, (producer_id, epoch, state, failed_fence) in list(self.pending_reload_checks.items()):
            index = coordinator.partition_for(tid)
            if index in coordinator._loading or coordinator._loaded.get(index, (None, 0))[0] is None:
                continue  # not loaded yet
            del self.pending_reload_checks[tid]
            self.run.counts.reloads_checked += 1
            metadata = coordinator.transactions.get(tid)
            if metadata is None:
                self.run.violations.append(f"transactional id {tid}: gone after reload (was {state})")
                continue
            found = (metadata.producer_id, metadata.producer_epoch)
            before = TransactionState.from_name(state)
            allowed = {state} | ({_COMPLETED[before].state_name} if before in _COMPLETED else set())
            # Kafka's endTransaction bumps the epoch in memory before a fence's PrepareAbort is
            # logged; when that append fails (hasFailedEpochFence) the log still has the epoch before.
            epochs = {epoch, epoch - 1} if failed_fence else {epoch}
            if found[0] != producer_id or found[1] not in epochs or metadata.state.state_name not in allowed:
                self.run.violations.append(
                    f"transactional id {tid}: after reload producer {found} {metadata.state.state_name}, before the "
                    f"crash producer {(producer_id, epoch)} {state}"
                )

    # -- what the producer model calls -------------------------------------------------------------

    def _call(self, transactional_id: str, request: Callable[[int], Any]) -> Any:
        """A coordinator request: sent to the broker FindCoordinator names, retried on the
        retriable errors; a crash inside it loses the response (a disconnection)."""
        self.current_transactional_id = transactional_id
        result: Any = None
        try:
            for attempt in range(_ATTEMPTS):
                if attempt:
                    self.run.now += MARKER_RETRY_BACKOFF_MS  # retry.backoff.ms
                self.settle()
                broker = self.coordinator.coordinator_id(transactional_id)
                self.settle()
                if broker is None:
                    result = ErrorCode.coordinator_not_available
                    continue
                try:
                    result = request(broker)
                except CoordinatorCrash as crash:
                    self.crashed(crash)
                    self.settle()
                    raise _kafka_error(ErrorCode.request_timed_out, "the coordinator died with the request") from None
                code = result if isinstance(result, ErrorCode) else result.error
                if code not in _RETRIABLE:
                    break
            return result
        finally:
            self.current_transactional_id = None

    def init_producer_id(self, transactional_id: str | None = None) -> tuple[int, int]:
        if transactional_id is None:
            return next(self._next_producer_id), 0
        result = self._call(transactional_id, lambda broker: self.coordinator.init_producer_id(
            broker, transactional_id, TRANSACTION_TIMEOUT_MS))  # fmt: skip
        code = result if isinstance(result, ErrorCode) else result.error
        if code != ErrorCode.none:
            raise _kafka_error(code, f"InitProducerId for {transactional_id}")
        return int(result.producer_id), int(result.producer_epoch)

    def begin(self, transactional_id: str, producer_id: int, producer_epoch: int) -> None:
        code = self._call(transactional_id, lambda broker: self.coordinator.add_partitions(
            broker, transactional_id, producer_id, producer_epoch, DATA_PARTITIONS))  # fmt: skip
        if code == ErrorCode.producer_fenced:
            raise ProducerFencedError(f"AddPartitionsToTxn: {transactional_id} producer {producer_id} "
                                      f"epoch {producer_epoch} is fenced")  # fmt: skip
        if code != ErrorCode.none:
            raise _kafka_error(code, f"AddPartitionsToTxn for {transactional_id}")

    def end_transaction(self, transactional_id: str, producer_id: int, producer_epoch: int, *, commit: bool) -> int:
        code = self._call(transactional_id, lambda broker: self.coordinator.end_transaction(
            broker, transactional_id, producer_id, producer_epoch, commit=commit))  # fmt: skip
        if code == ErrorCode.producer_fenced:
            raise ProducerFencedError(f"EndTxn: {transactional_id} producer {producer_id} epoch {producer_epoch} "
                                      "is fenced")  # fmt: skip
        if code != ErrorCode.none:
            raise _kafka_error(code, f"EndTxn for {transactional_id}")
        return -1  # the coordinator answers once PrepareX is logged; the markers follow
