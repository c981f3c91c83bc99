"""Kafka's transaction coordinator: the service the transaction APIs call.

Follows Kafka's ``TransactionCoordinator`` (handlers), ``TransactionStateManager`` (the
metadata of the ids, their partition of ``__transaction_state``, loading, timed-out
transactions and expired ids) and ``TransactionMarkerChannelManager`` (the COMMIT/ABORT
markers), in ``core/src/main/scala/kafka/coordinator/transaction/``. A transactional id's
coordinator is the leader of ``__transaction_state`` partition :meth:`partition_for`; the
coordinator epoch written into its markers is that partition's leader epoch.

Every transition is prepared on the :class:`TransactionMetadata`, appended to the log with
acks=all (:class:`TransactionLog`) and only then applied. EndTxn: PrepareCommit/PrepareAbort
is logged, the client is answered NONE, and the markers are written on each partition's
leader (``Cluster.write_marker``); once every partition has its marker, CompleteCommit /
CompleteAbort is logged. A marker that cannot be written yet (no leader, too few replicas) is
retried every :data:`MARKER_RETRY_BACKOFF_MS` while the transaction stays in PrepareX, as
Kafka's marker channel keeps retrying. A marker on a ``__consumer_offsets`` partition also
completes the transactional offsets there (``on_marker``, Kafka's
``GroupCoordinator.onTransactionCompleted``).

Loading (Kafka's ``loadTransactionsForTxnTopicPartition``) is scheduled on the timer at
:meth:`TransactionCoordinator.start` and when a partition's leadership is first seen or
moves: until it has run, requests for its ids get COORDINATOR_LOAD_IN_PROGRESS. A transaction
found in PrepareCommit or PrepareAbort is then completed (its markers written, then CompleteX
logged).

Timers: every ``transaction.abort.timed.out.transaction.cleanup.interval.ms`` an Ongoing
transaction older than its ``transaction.timeout.ms`` is aborted with the epoch bumped
(PrepareEpochFence, then PrepareAbort at epoch + 1: the old producer is fenced); every
``transaction.remove.expired.transaction.cleanup.interval.ms`` an id idle (Empty,
CompleteCommit, CompleteAbort) for ``transactional.id.expiration.ms`` is removed with a
tombstone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kio.schema.errors import ErrorCode

from ..cluster import Cluster
from ..errors import KafkaError
from .store import OffsetsStorage
from .timers import AsyncioTimer, Timer, TimerHandle
from .transaction_log import TransactionLog, TransactionLogValue
from .transaction_metadata import (
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    TransactionMetadata,
    TransactionState,
    TxnTransitMetadata,
    is_epoch_exhausted,
)

__all__ = ["MARKER_RETRY_BACKOFF_MS", "InitProducerIdResult", "TransactionCoordinator"]

logger = logging.getLogger("dedup.coordinator")

_S = TransactionState

#: How long a marker that could not be written waits before the next attempt.
MARKER_RETRY_BACKOFF_MS = 100

# A marker write that fails with one of these is retried (the partition will have a leader and
# replicas again); any other error drops that partition's marker, as Kafka's
# TransactionMarkerRequestCompletionHandler does for UNKNOWN_TOPIC_OR_PARTITION.
_RETRIABLE_MARKER_ERRORS = {
    ErrorCode.not_leader_or_follower,
    ErrorCode.not_enough_replicas,
    ErrorCode.not_enough_replicas_after_append,
    ErrorCode.kafka_storage_error,
    ErrorCode.request_timed_out,
}

#: ``(topic, partition, producer_id, commit)``: a marker was written (and replicated) there.
MarkerListener = Callable[[str, int, int, bool], None]


@dataclass(frozen=True)
class InitProducerIdResult:
    error: ErrorCode
    producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH


@dataclass
class _PendingMarkers:
    """A transaction whose markers are being written: the partitions still without one."""

    commit: bool
    coordinator_epoch: int
    remaining: set[tuple[str, int]] = field(default_factory=set)
    complete: TxnTransitMetadata | None = None
    retry: TimerHandle | None = None


class TransactionCoordinator:
    """Every transactional id whose ``__transaction_state`` partition is led by a live broker.

    ``storage``: the ``__transaction_state`` partitions (:class:`~dedup.server.topics.TransactionStateTopic`);
    ``generate_producer_id``: the broker's producer id manager; ``partition(topic, index)``:
    the partition a marker goes to (None if it does not exist); ``on_marker``: told of each
    marker written. ``clock`` (ms) and ``timer`` default to wall time and the running event
    loop. Options are Kafka's ``transaction.*`` broker settings in snake case.
    """

    def __init__(
        self,
        storage: OffsetsStorage,
        *,
        generate_producer_id: Callable[[], int],
        partition: Callable[[str, int], Cluster | None],
        on_marker: MarkerListener | None = None,
        clock: Callable[[], int] | None = None,
        timer: Timer | None = None,
        transaction_max_timeout_ms: int = 900_000,
        transactional_id_expiration_ms: int = 604_800_000,
        transaction_abort_timed_out_transaction_cleanup_interval_ms: int = 10_000,
        transaction_remove_expired_transaction_cleanup_interval_ms: int = 3_600_000,
    ) -> None:
        self.storage = storage
        self.clock = clock or (lambda: int(time.time() * 1000))
        self.timer: Timer = timer or AsyncioTimer()
        self.log = TransactionLog(storage, self.clock)
        self.generate_producer_id = generate_producer_id
        self.partition = partition
        self.on_marker = on_marker
        self.transaction_max_timeout_ms = transaction_max_timeout_ms
        self.transactional_id_expiration_ms = transactional_id_expiration_ms
        self.abort_interval_ms = transaction_abort_timed_out_transaction_cleanup_interval_ms
        self.expiration_interval_ms = transaction_remove_expired_transaction_cleanup_interval_ms
        self.transactions: dict[str, TransactionMetadata] = {}
        self._markers: dict[str, _PendingMarkers] = {}
        # Per partition: the (leader id, leader epoch) it was loaded (or is loading) under.
        self._loaded: dict[int, tuple[int | None, int]] = {}
        self._loading: set[int] = set()
        self._timers: list[TimerHandle] = []
        self._closed = False

    def start(self) -> None:
        """Kafka's TransactionCoordinator.startup, on the running event loop (the server's
        start): the partitions on disk are loaded and the timers scheduled, so that a restarted
        broker completes its prepared transactions and aborts those that timed out while it was
        down without waiting for a request. A request before it does the same for its partition."""
        for index in self.storage.created():
            self._ensure_loaded(index)
        self._start_timers()

    # -- placement and loading ---------------------------------------------------------------------

    def partition_for(self, transactional_id: str) -> int:
        return self.log.partition_for(transactional_id)

    def coordinator_id(self, transactional_id: str) -> int | None:
        """The broker coordinating ``transactional_id`` (its partition's leader), or None."""
        index = self.partition_for(transactional_id)
        self._ensure_loaded(index)
        self._start_timers()
        return self.storage.leader(index)

    def coordinator_epoch(self, transactional_id: str) -> int:
        cluster = self.storage.partition(self.partition_for(transactional_id))
        return 0 if cluster is None else max(cluster.leader_epoch, 0)

    def _error(self, transactional_id: str, broker_id: int) -> ErrorCode:
        """NONE if ``broker_id`` coordinates ``transactional_id`` and its partition is loaded."""
        if self._closed:
            return ErrorCode.coordinator_not_available
        if self.coordinator_id(transactional_id) != broker_id:
            return ErrorCode.not_coordinator
        if self.partition_for(transactional_id) in self._loading:
            return ErrorCode.coordinator_load_in_progress
        return ErrorCode.none

    def _ensure_loaded(self, index: int) -> None:
        cluster = self.storage.partition(index)
        if cluster is None:
            return
        current = (cluster.leader_id, cluster.leader_epoch)
        if self._loaded.get(index) == current:
            return
        if index in self._loaded:
            self._unload(index)
        self._loaded[index] = current
        if cluster.leader_id is not None:
            self._loading.add(index)
            self.timer.schedule(0, lambda: self._load(index, current))

    def _load(self, index: int, expected: tuple[int | None, int]) -> None:
        """TransactionStateManager.loadTransactionsForTxnTopicPartition."""
        if self._closed or self._loaded.get(index) != expected:
            return
        cluster = self.storage.partition(index)
        if cluster is None:
            return
        loaded = self.log.replay(index, cluster)
        self.transactions.update(loaded)
        self._loading.discard(index)
        logger.info("%s-%d loaded from broker %s: %d transactional ids", "__transaction_state", index,
                    cluster.leader_id, len(loaded))  # fmt: skip
        for transactional_id, metadata in loaded.items():
            if metadata.state in (_S.PREPARE_COMMIT, _S.PREPARE_ABORT):
                logger.info("transactional id %s: completing its %s found at load", transactional_id,
                            metadata.state.state_name)  # fmt: skip
                self._send_markers(metadata, metadata.state == _S.PREPARE_COMMIT, max(expected[1], 0))

    def leadership_changed(self) -> None:
        """After brokers stop or start: partitions whose leader moved are unloaded and loaded again."""
        for index in self.storage.created():
            self._ensure_loaded(index)

    def _unload(self, index: int) -> None:
        """Kafka's removeTransactionsForTxnTopicPartition: the ids leave memory, their markers stop."""
        for transactional_id in [t for t in self.transactions if self.partition_for(t) == index]:
            del self.transactions[transactional_id]
            pending = self._markers.pop(transactional_id, None)
            if pending is not None and pending.retry is not None:
                pending.retry.cancel()
        self._loading.discard(index)

    def close(self) -> None:
        self._closed = True
        for handle in self._timers:
            handle.cancel()
        for pending in self._markers.values():
            if pending.retry is not None:
                pending.retry.cancel()
        self._markers.clear()
        self.transactions.clear()

    # -- InitProducerId ----------------------------------------------------------------------------

    def init_producer_id(
        self,
        broker_id: int,
        transactional_id: str,
        transaction_timeout_ms: int,
        expected_producer_id: int = NO_PRODUCER_ID,
        expected_producer_epoch: int = NO_PRODUCER_EPOCH,
    ) -> InitProducerIdResult:
        """TransactionCoordinator.handleInitProducerId for a transactional id (``expected_*``:
        InitProducerId v3+'s producer id and epoch, KIP-360; -1 when not given). PRODUCER_FENCED
        is mapped to INVALID_PRODUCER_EPOCH for old versions by the caller."""
        if not transactional_id:
            return InitProducerIdResult(ErrorCode.invalid_request)
        if not 0 < transaction_timeout_ms <= self.transaction_max_timeout_ms:
            return InitProducerIdResult(ErrorCode.invalid_transaction_timeout)
        error = self._error(transactional_id, broker_id)
        if error != ErrorCode.none:
            return InitProducerIdResult(error)
        expected = None if expected_producer_id == NO_PRODUCER_ID else (expected_producer_id, expected_producer_epoch)
        metadata = self.transactions.get(transactional_id)
        if metadata is None:
            metadata = TransactionMetadata(transactional_id, self.generate_producer_id(),
                                           txn_timeout_ms=transaction_timeout_ms,
                                           txn_last_update_timestamp=self.clock())  # fmt: skip
            self.transactions[transactional_id] = metadata
        transit = self._prepare_init_producer_id(metadata, transaction_timeout_ms, expected)
        if isinstance(transit, ErrorCode):
            return InitProducerIdResult(transit)
        if transit.txn_state == _S.PREPARE_EPOCH_FENCE:
            # Abort the ongoing transaction with the bumped epoch; the client retries after
            # CONCURRENT_TRANSACTIONS and gets a second bump (a new id if that one exhausts).
            error = self._end_transaction(transactional_id, transit.producer_id, transit.producer_epoch, commit=False,
                                          from_client=False)  # fmt: skip
            if metadata.pending_state == _S.PREPARE_EPOCH_FENCE:
                metadata.abort_pending()
            return InitProducerIdResult(error if error != ErrorCode.none else ErrorCode.concurrent_transactions)
        error = self._append(metadata, transit)
        if error != ErrorCode.none:
            return InitProducerIdResult(error)
        logger.info("transactional id %s: producer id %d, epoch %d", transactional_id, transit.producer_id,
                    transit.producer_epoch)  # fmt: skip
        return InitProducerIdResult(ErrorCode.none, transit.producer_id, transit.producer_epoch)

    def _prepare_init_producer_id(
        self, metadata: TransactionMetadata, timeout_ms: int, expected: tuple[int, int] | None
    ) -> TxnTransitMetadata | ErrorCode:
        """TransactionCoordinator.prepareInitProducerIdTransit."""
        if metadata.pending_transition_in_progress:
            return ErrorCode.concurrent_transactions
        if expected is not None and not (
            metadata.producer_epoch == NO_PRODUCER_EPOCH
            or expected[0] == metadata.producer_id
            or (expected[0] == metadata.previous_producer_id and is_epoch_exhausted(expected[1]))
        ):
            return ErrorCode.producer_fenced
        if metadata.state in (_S.PREPARE_ABORT, _S.PREPARE_COMMIT):
            return ErrorCode.concurrent_transactions
        if metadata.state in (_S.COMPLETE_ABORT, _S.COMPLETE_COMMIT, _S.EMPTY):
            if metadata.is_producer_epoch_exhausted and (expected is None or expected[1] == metadata.producer_epoch):
                return metadata.prepare_producer_id_rotation(self.generate_producer_id(), timeout_ms, self.clock(),
                                                             expected is not None)  # fmt: skip
            transit = metadata.prepare_increment_producer_epoch(timeout_ms, None if expected is None else expected[1],
                                                                self.clock())  # fmt: skip
            return ErrorCode.producer_fenced if transit is None else transit
        if metadata.state == _S.ONGOING:
            return metadata.prepare_fence_producer_epoch()
        raise RuntimeError(f"Found transactionalId {metadata.transactional_id} with state {metadata.state.state_name}. "
                           "This is illegal as we should never have transitioned to this state.")  # fmt: skip

    # -- AddPartitionsToTxn, AddOffsetsToTxn -------------------------------------------------------

    def add_partitions(
        self,
        broker_id: int,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        partitions: Iterable[tuple[str, int]],
    ) -> ErrorCode:
        """TransactionCoordinator.handleAddPartitionsToTransaction: one error for the whole
        request (NONE: every partition is in the transaction, logged)."""
        if not transactional_id:
            return ErrorCode.invalid_request
        error = self._error(transactional_id, broker_id)
        if error != ErrorCode.none:
            return error
        metadata = self.transactions.get(transactional_id)
        added = set(partitions)
        if metadata is None or metadata.producer_id != producer_id:
            return ErrorCode.invalid_producer_id_mapping
        if metadata.producer_epoch != producer_epoch:
            return ErrorCode.producer_fenced
        if metadata.pending_transition_in_progress or metadata.state in (_S.PREPARE_COMMIT, _S.PREPARE_ABORT):
            return ErrorCode.concurrent_transactions
        if metadata.state == _S.ONGOING and added <= metadata.topic_partitions:
            return ErrorCode.none
        return self._append(metadata, metadata.prepare_add_partitions(added, self.clock()))

    def verify_partition(self, transactional_id: str, producer_id: int, producer_epoch: int,
                         partition: tuple[str, int]) -> ErrorCode:  # fmt: skip
        """TransactionCoordinator.handleVerifyPartitionsInTransaction for one partition, with
        the errors AddPartitionsToTxnManager gives a client of the old versions (PRODUCER_FENCED
        as INVALID_PRODUCER_EPOCH, TRANSACTION_ABORTABLE as INVALID_TXN_STATE): what the
        group coordinator checks before a TxnOffsetCommit is written."""
        if self._closed:
            return ErrorCode.coordinator_not_available
        if self.partition_for(transactional_id) in self._loading:
            return ErrorCode.coordinator_load_in_progress
        metadata = self.transactions.get(transactional_id)
        if metadata is None or metadata.producer_id != producer_id:
            return ErrorCode.invalid_producer_id_mapping
        if metadata.producer_epoch != producer_epoch:
            return ErrorCode.invalid_producer_epoch
        if metadata.state in (_S.PREPARE_COMMIT, _S.PREPARE_ABORT):
            return ErrorCode.concurrent_transactions
        if partition not in metadata.topic_partitions:
            return ErrorCode.invalid_txn_state
        return ErrorCode.none

    # -- EndTxn ------------------------------------------------------------------------------------

    def end_transaction(
        self, broker_id: int, transactional_id: str, producer_id: int, producer_epoch: int, *, commit: bool
    ) -> ErrorCode:
        """TransactionCoordinator.handleEndTransaction (TV_0)."""
        if not transactional_id:
            return ErrorCode.invalid_request
        error = self._error(transactional_id, broker_id)
        if error != ErrorCode.none:
            return error
        return self._end_transaction(transactional_id, producer_id, producer_epoch, commit=commit, from_client=True)

    def _end_transaction(
        self, transactional_id: str, producer_id: int, producer_epoch: int, *, commit: bool, from_client: bool
    ) -> ErrorCode:
        metadata = self.transactions.get(transactional_id)
        if metadata is None:
            return ErrorCode.invalid_producer_id_mapping
        fencing = metadata.pending_state == _S.PREPARE_EPOCH_FENCE
        valid_epoch = (not from_client or producer_epoch == metadata.producer_epoch) and (
            producer_epoch >= metadata.producer_epoch
        )
        if metadata.producer_id != producer_id:
            return ErrorCode.invalid_producer_id_mapping
        if not valid_epoch:
            return ErrorCode.producer_fenced
        if metadata.pending_transition_in_progress and not fencing:
            return ErrorCode.concurrent_transactions
        state = metadata.state
        if state == _S.ONGOING:
            if fencing and not commit:
                # The fence's bumped epoch goes into the PrepareAbort record (never PrepareEpochFence itself).
                metadata.pending_state = None
                metadata.producer_epoch = producer_epoch
                metadata.last_producer_epoch = NO_PRODUCER_EPOCH
            new_state = _S.PREPARE_COMMIT if commit else _S.PREPARE_ABORT
            transit = metadata.prepare_abort_or_commit(new_state, self.clock())
            coordinator_epoch = self.coordinator_epoch(transactional_id)
            error = self._append(metadata, transit)
            if error != ErrorCode.none:
                if fencing:
                    metadata.has_failed_epoch_fence = True
                return error
            self._send_markers(metadata, commit, coordinator_epoch)
            return ErrorCode.none
        if state == _S.COMPLETE_COMMIT:
            return ErrorCode.none if commit else ErrorCode.invalid_txn_state
        if state == _S.COMPLETE_ABORT:
            return ErrorCode.none if not commit else ErrorCode.invalid_txn_state
        if state == _S.PREPARE_COMMIT:
            return ErrorCode.concurrent_transactions if commit else ErrorCode.invalid_txn_state
        if state == _S.PREPARE_ABORT:
            return ErrorCode.concurrent_transactions if not commit else ErrorCode.invalid_txn_state
        if state == _S.EMPTY:
            return ErrorCode.invalid_txn_state
        raise RuntimeError(f"Found transactionalId {transactional_id} with state {state.state_name}. "
                           "This is illegal as we should never have transitioned to this state.")  # fmt: skip

    # -- markers -----------------------------------------------------------------------------------

    def _send_markers(self, metadata: TransactionMetadata, commit: bool, coordinator_epoch: int) -> None:
        """TransactionMarkerChannelManager.addTxnMarkersToSend: a marker on every partition of
        the transaction, then CompleteCommit/CompleteAbort logged."""
        complete = metadata.prepare_complete(self.clock())
        pending = _PendingMarkers(commit, coordinator_epoch, set(metadata.topic_partitions), complete)
        self._markers[metadata.transactional_id] = pending
        self._write_markers(metadata.transactional_id)

    def _write_markers(self, transactional_id: str) -> None:
        pending = self._markers.get(transactional_id)
        metadata = self.transactions.get(transactional_id)
        if pending is None or metadata is None or self._closed:
            return
        pending.retry = None
        for topic, index in sorted(pending.remaining):
            cluster = self.partition(topic, index)
            if cluster is None:
                logger.warning("transactional id %s: %s-%d no longer exists: its marker is dropped", transactional_id,
                               topic, index)  # fmt: skip
                pending.remaining.discard((topic, index))
                continue
            try:
                cluster.write_marker(metadata.producer_id, metadata.producer_epoch, commit=pending.commit,
                                     coordinator_epoch=pending.coordinator_epoch)  # fmt: skip
            except KafkaError as error:
                if ErrorCode(error.code) in _RETRIABLE_MARKER_ERRORS:
                    logger.info("transactional id %s: marker for %s-%d not written yet: %s", transactional_id, topic,
                                index, error)  # fmt: skip
                    continue
                logger.error("transactional id %s: marker for %s-%d refused: %s: dropped", transactional_id, topic,
                             index, error)  # fmt: skip
                pending.remaining.discard((topic, index))
                continue
            pending.remaining.discard((topic, index))
            if self.on_marker is not None:
                self.on_marker(topic, index, metadata.producer_id, pending.commit)
        if not pending.remaining:
            self._complete(transactional_id, metadata, pending)
        if transactional_id in self._markers:
            pending.retry = self.timer.schedule(MARKER_RETRY_BACKOFF_MS, lambda: self._write_markers(transactional_id))

    def _complete(self, transactional_id: str, metadata: TransactionMetadata, pending: _PendingMarkers) -> None:
        """Every marker written: CompleteCommit/CompleteAbort logged (retried if the append fails)."""
        assert pending.complete is not None
        stored = self.log.append(transactional_id, TransactionLogValue.of(_as_metadata(metadata, pending.complete)))
        if stored != ErrorCode.none:
            logger.warning("transactional id %s: %s not logged yet: %s", transactional_id,
                           pending.complete.txn_state.state_name, stored.name)  # fmt: skip
            return
        metadata.complete_transition_to(pending.complete)
        del self._markers[transactional_id]
        logger.info("transactional id %s: %s", transactional_id, metadata.state.state_name)

    # -- the log -----------------------------------------------------------------------------------

    def _append(self, metadata: TransactionMetadata, transit: TxnTransitMetadata) -> ErrorCode:
        """TransactionStateManager.appendTransactionToLog: the transition logged, then applied;
        on failure the pending state is dropped and the error returned."""
        index = self.partition_for(metadata.transactional_id)
        coordinator = self.storage.leader(index)
        stored = self.log.append(metadata.transactional_id, TransactionLogValue.of(_as_metadata(metadata, transit)))
        if stored == ErrorCode.none and self.storage.leader(index) != coordinator:
            stored = ErrorCode.not_coordinator
        if stored != ErrorCode.none:
            metadata.abort_pending()
            return stored
        metadata.complete_transition_to(transit)
        return ErrorCode.none

    # -- timers ------------------------------------------------------------------------------------

    def _start_timers(self) -> None:
        if self._timers or self._closed:
            return
        self._timers = [self.timer.schedule(self.abort_interval_ms, self._on_abort_timer),
                        self.timer.schedule(self.expiration_interval_ms, self._on_expiration_timer)]  # fmt: skip

    def _on_abort_timer(self) -> None:
        if self._closed:
            return
        try:
            self.abort_timed_out_transactions()
        finally:
            self._timers[0] = self.timer.schedule(self.abort_interval_ms, self._on_abort_timer)

    def _on_expiration_timer(self) -> None:
        if self._closed:
            return
        try:
            self.remove_expired_transactional_ids()
        finally:
            self._timers[1] = self.timer.schedule(self.expiration_interval_ms, self._on_expiration_timer)

    def abort_timed_out_transactions(self) -> list[str]:
        """TransactionCoordinator.abortTimedOutTransactions: every Ongoing transaction past its
        timeout is aborted with the epoch bumped (the producer is fenced). Returns their ids."""
        now = self.clock()
        aborted = []
        for transactional_id, metadata in list(self.transactions.items()):
            if self.partition_for(transactional_id) in self._loading or metadata.pending_transition_in_progress:
                continue
            if metadata.state != _S.ONGOING or metadata.txn_start_timestamp + metadata.txn_timeout_ms >= now:
                continue
            transit = metadata.prepare_fence_producer_epoch()
            error = self._end_transaction(transactional_id, transit.producer_id, transit.producer_epoch, commit=False,
                                          from_client=False)  # fmt: skip
            if error == ErrorCode.none:
                logger.info("transactional id %s: timed out after %d ms: aborted, epoch bumped to %d",
                            transactional_id, metadata.txn_timeout_ms, metadata.producer_epoch)  # fmt: skip
                aborted.append(transactional_id)
            else:
                metadata.abort_pending()
                logger.warning("transactional id %s: timed out, abort failed: %s", transactional_id, error.name)
        return aborted

    def remove_expired_transactional_ids(self) -> list[str]:
        """TransactionStateManager.removeExpiredTransactionalIds: ids idle for
        ``transactional.id.expiration.ms`` in Empty/CompleteCommit/CompleteAbort get a tombstone
        and leave memory. Returns their ids."""
        now = self.clock()
        removed = []
        for transactional_id, metadata in list(self.transactions.items()):
            if self.partition_for(transactional_id) in self._loading or metadata.pending_transition_in_progress:
                continue
            if not metadata.state.is_expiration_allowed:
                continue
            if metadata.txn_last_update_timestamp > now - self.transactional_id_expiration_ms:
                continue
            metadata.prepare_dead()
            if self.log.append(transactional_id, None) != ErrorCode.none:
                metadata.abort_pending()
                continue
            del self.transactions[transactional_id]
            removed.append(transactional_id)
            logger.info("transactional id %s: expired", transactional_id)
        return removed

    # -- DescribeTransactions, ListTransactions ----------------------------------------------------

    def describe_transaction(self, broker_id: int, transactional_id: str) -> tuple[ErrorCode, dict[str, Any]]:
        """TransactionCoordinator.handleDescribeTransactions."""
        if not transactional_id:
            return ErrorCode.invalid_request, {}
        error = self._error(transactional_id, broker_id)
        if error != ErrorCode.none:
            return error, {}
        metadata = self.transactions.get(transactional_id)
        if metadata is None or metadata.state == _S.DEAD:
            return ErrorCode.transactional_id_not_found, {}
        topics: dict[str, list[int]] = {}
        for topic, index in sorted(metadata.topic_partitions):
            topics.setdefault(topic, []).append(index)
        return ErrorCode.none, {
            "producer_id": metadata.producer_id,
            "producer_epoch": metadata.producer_epoch,
            "transaction_state": metadata.state.state_name,
            "transaction_timeout_ms": metadata.txn_timeout_ms,
            "transaction_start_time_ms": metadata.txn_start_timestamp,
            "topics": topics,
        }

    def list_transactions(
        self, broker_id: int, states: Iterable[str] = (), producer_ids: Iterable[int] = (), duration_ms: int = -1
    ) -> tuple[ErrorCode, list[tuple[str, int, str]], list[str]]:
        """TransactionStateManager.listTransactionStates over the partitions ``broker_id`` leads:
        the error, ``(transactional_id, producer_id, state)`` and the unknown state filters."""
        if self._closed:
            return ErrorCode.coordinator_not_available, [], []
        self.leadership_changed()
        if self._loading:
            return ErrorCode.coordinator_load_in_progress, [], []
        wanted_names = set(states)
        wanted = {s for s in TransactionState if s.state_name in wanted_names}
        unknown = sorted(name for name in wanted_names if TransactionState.from_name(name) is None)
        pids = set(producer_ids)
        now = self.clock()
        out = []
        for transactional_id, metadata in sorted(self.transactions.items()):
            if self.storage.leader(self.partition_for(transactional_id)) != broker_id or metadata.state == _S.DEAD:
                continue
            if pids and metadata.producer_id not in pids:
                continue
            if wanted_names and metadata.state not in wanted:
                continue
            if duration_ms >= 0 and now - metadata.txn_start_timestamp <= duration_ms:
                continue
            out.append((transactional_id, metadata.producer_id, metadata.state.state_name))
        return ErrorCode.none, out, unknown


def _as_metadata(metadata: TransactionMetadata, transit: TxnTransitMetadata) -> TransactionMetadata:
    """What the log records for ``transit`` (TransactionLog.valueToBytes writes the transit)."""
    return TransactionMetadata(
        metadata.transactional_id, transit.producer_id, transit.producer_epoch, transit.last_producer_epoch,
        transit.txn_timeout_ms, transit.txn_state, set(transit.topic_partitions), transit.txn_start_timestamp,
        transit.txn_last_update_timestamp,
    )  # fmt: skip
