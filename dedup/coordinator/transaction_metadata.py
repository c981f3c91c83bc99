"""One transactional id's state: Kafka's ``TransactionMetadata`` and its state machine.

Follows ``core/src/main/scala/kafka/coordinator/transaction/TransactionMetadata.scala``: a
transactional id has a producer id and epoch, a state, the partitions of its ongoing
transaction, and a *pending* state while a transition is being written to
``__transaction_state``. A transition is prepared (``prepare_*``: checked against the state's
valid previous states, the pending state set, a :class:`TxnTransitMetadata` returned), written
to the log, and only then completed (:meth:`TransactionMetadata.complete_transition_to`), or
abandoned (:meth:`TransactionMetadata.abort_pending`) if the append failed.

States and their valid previous states (Kafka's ``TransactionState``)::

    Empty              <- Empty, CompleteCommit, CompleteAbort
    Ongoing            <- Ongoing, Empty, CompleteCommit, CompleteAbort
    PrepareCommit      <- Ongoing
    PrepareAbort       <- Ongoing, PrepareEpochFence
    CompleteCommit     <- PrepareCommit
    CompleteAbort      <- PrepareAbort
    Dead               <- Empty, CompleteAbort, CompleteCommit
    PrepareEpochFence  <- Ongoing

Epoch rules: InitProducerId bumps the epoch (:meth:`prepare_increment_producer_epoch`, with
KIP-360's expected epoch: a retry of a successful bump gets the same epoch back, an old
epoch gets PRODUCER_FENCED); an epoch at or above ``Short.MaxValue - 1`` is exhausted and the
next InitProducerId rotates to a new producer id at epoch 0 (:meth:`prepare_producer_id_rotation`);
fencing an ongoing transaction (a new instance, or ``transaction.timeout.ms``) bumps the
epoch once (:meth:`prepare_fence_producer_epoch`, not again after a failed fence) and aborts
with it. Only transaction version 0 (TV_0, KIP-890 part 2's per-transaction epoch bump not
served): the epoch changes only through InitProducerId and fencing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "NO_PRODUCER_EPOCH",
    "NO_PRODUCER_ID",
    "SHORT_MAX",
    "TransactionMetadata",
    "TransactionState",
    "TxnTransitMetadata",
    "is_epoch_exhausted",
]

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
SHORT_MAX = (1 << 15) - 1

#: A topic partition of a transaction: (topic, partition).
TopicPartition = tuple[str, int]


class TransactionState(enum.Enum):
    """Kafka's TransactionState: the id written in TransactionLogValue's TransactionStatus,
    and the name DescribeTransactions and ListTransactions report."""

    EMPTY = (0, "Empty")
    ONGOING = (1, "Ongoing")
    PREPARE_COMMIT = (2, "PrepareCommit")
    PREPARE_ABORT = (3, "PrepareAbort")
    COMPLETE_COMMIT = (4, "CompleteCommit")
    COMPLETE_ABORT = (5, "CompleteAbort")
    DEAD = (6, "Dead")
    PREPARE_EPOCH_FENCE = (7, "PrepareEpochFence")

    @property
    def id(self) -> int:
        return int(self.value[0])

    @property
    def state_name(self) -> str:
        return str(self.value[1])

    @classmethod
    def from_id(cls, state_id: int) -> TransactionState:
        """TransactionState.fromId; ValueError for an unknown id (Kafka: IllegalStateException)."""
        state = _STATES_BY_ID.get(state_id)
        if state is None:
            raise ValueError(f"Unknown transaction state id {state_id} from the transaction status message")
        return state

    @classmethod
    def from_name(cls, name: str) -> TransactionState | None:
        return next((state for state in cls if state.state_name == name), None)

    @property
    def valid_previous_states(self) -> frozenset[TransactionState]:
        return _VALID_PREVIOUS[self]

    @property
    def is_expiration_allowed(self) -> bool:
        """Whether an idle transactional id in this state may expire (``transactional.id.expiration.ms``)."""
        return self in (TransactionState.EMPTY, TransactionState.COMPLETE_COMMIT, TransactionState.COMPLETE_ABORT)


# from_id runs once per record a load replays: a dict, not a search over the members.
_STATES_BY_ID: dict[int, TransactionState] = {state.id: state for state in TransactionState}

_S = TransactionState
_VALID_PREVIOUS: dict[TransactionState, frozenset[TransactionState]] = {
    _S.EMPTY: frozenset({_S.EMPTY, _S.COMPLETE_COMMIT, _S.COMPLETE_ABORT}),
    _S.ONGOING: frozenset({_S.ONGOING, _S.EMPTY, _S.COMPLETE_COMMIT, _S.COMPLETE_ABORT}),
    _S.PREPARE_COMMIT: frozenset({_S.ONGOING}),
    _S.PREPARE_ABORT: frozenset({_S.ONGOING, _S.PREPARE_EPOCH_FENCE}),
    _S.COMPLETE_COMMIT: frozenset({_S.PREPARE_COMMIT}),
    _S.COMPLETE_ABORT: frozenset({_S.PREPARE_ABORT}),
    _S.DEAD: frozenset({_S.EMPTY, _S.COMPLETE_ABORT, _S.COMPLETE_COMMIT}),
    _S.PREPARE_EPOCH_FENCE: frozenset({_S.ONGOING}),
}


def is_epoch_exhausted(producer_epoch: int) -> bool:
    """TransactionMetadata.isEpochExhausted: ``Short.MaxValue`` is kept for the coordinator,
    so that it can always fence the current producer."""
    return producer_epoch >= SHORT_MAX - 1


class IllegalTransition(RuntimeError):
    """A transition Kafka's TransactionMetadata refuses with IllegalStateException (a bug in
    the caller, never a client's doing)."""


@dataclass(frozen=True)
class TxnTransitMetadata:
    """The target of a transition (Kafka's TxnTransitMetadata): what is written to the log."""

    producer_id: int
    prev_producer_id: int
    producer_epoch: int
    last_producer_epoch: int
    txn_timeout_ms: int
    txn_state: TransactionState
    topic_partitions: frozenset[TopicPartition]
    txn_start_timestamp: int
    txn_last_update_timestamp: int


@dataclass
class TransactionMetadata:
    """One transactional id (Kafka's TransactionMetadata, TV_0)."""

    transactional_id: str
    producer_id: int
    producer_epoch: int = NO_PRODUCER_EPOCH
    last_producer_epoch: int = NO_PRODUCER_EPOCH
    txn_timeout_ms: int = 60_000
    state: TransactionState = TransactionState.EMPTY
    topic_partitions: set[TopicPartition] = field(default_factory=set)
    txn_start_timestamp: int = -1
    txn_last_update_timestamp: int = -1
    previous_producer_id: int = NO_PRODUCER_ID
    pending_state: TransactionState | None = None
    #: A fence whose write failed: the epoch was bumped in memory only, and is not bumped again.
    has_failed_epoch_fence: bool = False

    @property
    def pending_transition_in_progress(self) -> bool:
        return self.pending_state is not None

    @property
    def is_producer_epoch_exhausted(self) -> bool:
        return is_epoch_exhausted(self.producer_epoch)

    @property
    def has_pending_transaction(self) -> bool:
        return self.state in (_S.ONGOING, _S.PREPARE_ABORT, _S.PREPARE_COMMIT)

    # -- preparing ---------------------------------------------------------------------------------

    def prepare_fence_producer_epoch(self) -> TxnTransitMetadata:
        """Fence the current producer of an ongoing transaction: PrepareEpochFence with the
        epoch + 1 (not again if a previous fence failed to be written)."""
        if self.producer_epoch == SHORT_MAX:
            raise IllegalTransition("Cannot fence producer with epoch equal to Short.MaxValue since this would "
                                    "overflow")
        bumped = self.producer_epoch if self.has_failed_epoch_fence else self.producer_epoch + 1
        return self._prepare(_S.PREPARE_EPOCH_FENCE, self.producer_id, bumped, NO_PRODUCER_EPOCH, self.txn_timeout_ms,
                             frozenset(self.topic_partitions), self.txn_start_timestamp,
                             self.txn_last_update_timestamp)  # fmt: skip

    def prepare_increment_producer_epoch(
        self, new_txn_timeout_ms: int, expected_producer_epoch: int | None, update_timestamp: int
    ) -> TxnTransitMetadata | None:
        """InitProducerId's epoch bump (KIP-360): None means PRODUCER_FENCED (the expected
        epoch is neither the current one nor, for a retry of a bump that succeeded, the last one)."""
        if self.is_producer_epoch_exhausted:
            raise IllegalTransition(f"Cannot allocate any more producer epochs for producerId {self.producer_id}")
        bumped = self.producer_epoch + 1
        if expected_producer_epoch is None:
            next_epoch, last_epoch = bumped, NO_PRODUCER_EPOCH
        elif self.producer_epoch == NO_PRODUCER_EPOCH or expected_producer_epoch == self.producer_epoch:
            next_epoch, last_epoch = bumped, self.producer_epoch
        elif expected_producer_epoch == self.last_producer_epoch:
            next_epoch, last_epoch = self.producer_epoch, self.last_producer_epoch  # a retry: no second bump
        else:
            return None
        return self._prepare(_S.EMPTY, self.producer_id, next_epoch, last_epoch, new_txn_timeout_ms, frozenset(), -1,
                             update_timestamp)  # fmt: skip

    def prepare_producer_id_rotation(
        self, new_producer_id: int, new_txn_timeout_ms: int, update_timestamp: int, record_last_epoch: bool
    ) -> TxnTransitMetadata:
        """The epoch is exhausted: a new producer id at epoch 0."""
        if self.has_pending_transaction:
            raise IllegalTransition("Cannot rotate producer ids while a transaction is still pending")
        return self._prepare(_S.EMPTY, new_producer_id, 0,
                             self.producer_epoch if record_last_epoch else NO_PRODUCER_EPOCH, new_txn_timeout_ms,
                             frozenset(), -1, update_timestamp)  # fmt: skip

    def prepare_add_partitions(self, added: set[TopicPartition], update_timestamp: int) -> TxnTransitMetadata:
        """AddPartitionsToTxn / AddOffsetsToTxn: Ongoing, the transaction starting now if none was."""
        start = update_timestamp if self.state in (_S.EMPTY, _S.COMPLETE_ABORT, _S.COMPLETE_COMMIT) else (
            self.txn_start_timestamp)  # fmt: skip
        return self._prepare(_S.ONGOING, self.producer_id, self.producer_epoch, self.last_producer_epoch,
                             self.txn_timeout_ms, frozenset(self.topic_partitions | added), start,
                             update_timestamp)  # fmt: skip

    def prepare_abort_or_commit(self, new_state: TransactionState, update_timestamp: int) -> TxnTransitMetadata:
        """EndTxn: PrepareCommit or PrepareAbort, same epoch (TV_0)."""
        return self._prepare(new_state, self.producer_id, self.producer_epoch, self.last_producer_epoch,
                             self.txn_timeout_ms, frozenset(self.topic_partitions), self.txn_start_timestamp,
                             update_timestamp)  # fmt: skip

    def prepare_complete(self, update_timestamp: int) -> TxnTransitMetadata:
        """Every marker written: CompleteCommit or CompleteAbort, no partitions."""
        new_state = _S.COMPLETE_COMMIT if self.state == _S.PREPARE_COMMIT else _S.COMPLETE_ABORT
        self.has_failed_epoch_fence = False
        return self._prepare(new_state, self.producer_id, self.producer_epoch, self.producer_epoch,
                             self.txn_timeout_ms, frozenset(), self.txn_start_timestamp, update_timestamp)  # fmt: skip

    def prepare_dead(self) -> TxnTransitMetadata:
        """``transactional.id.expiration.ms``: the id is about to be removed (a tombstone)."""
        return self._prepare(_S.DEAD, self.producer_id, self.producer_epoch, self.last_producer_epoch,
                             self.txn_timeout_ms, frozenset(), self.txn_start_timestamp,
                             self.txn_last_update_timestamp)  # fmt: skip

    def _prepare(
        self,
        state: TransactionState,
        producer_id: int,
        epoch: int,
        last_epoch: int,
        timeout_ms: int,
        partitions: frozenset[TopicPartition],
        start: int,
        update_timestamp: int,
    ) -> TxnTransitMetadata:
        if self.pending_state is not None:
            raise IllegalTransition(f"Preparing transaction state transition to {state.state_name} while it already "
                                    f"a pending state {self.pending_state.state_name}")  # fmt: skip
        if producer_id < 0:
            raise IllegalTransition(f"Illegal new producer id {producer_id}")
        if state != _S.DEAD and epoch < 0:
            raise IllegalTransition(f"Illegal new producer epoch {epoch}")
        if self.state not in state.valid_previous_states:
            raise IllegalTransition(f"Preparing transaction state transition to {state.state_name} failed since the "
                                    f"target state {state.state_name} is not a valid previous state of the current "
                                    f"state {self.state.state_name}")  # fmt: skip
        self.pending_state = state
        return TxnTransitMetadata(producer_id, self.producer_id, epoch, last_epoch, timeout_ms, state, partitions,
                                  start, update_timestamp)  # fmt: skip

    # -- completing --------------------------------------------------------------------------------

    def abort_pending(self) -> None:
        """The transition's append failed: the pending state is dropped, nothing changes."""
        self.pending_state = None

    def complete_transition_to(self, transit: TxnTransitMetadata) -> None:
        """TransactionMetadata.completeTransitionTo: apply a transition written to the log,
        after Kafka's sanity checks (IllegalTransition if one fails)."""
        to_state = self.pending_state
        if to_state is None or to_state != transit.txn_state:
            raise IllegalTransition(f"TransactionalId {self.transactional_id} completing transition to "
                                    f"{transit.txn_state.state_name} while pending {to_state}")  # fmt: skip
        if to_state == _S.EMPTY:
            if ((self.producer_epoch != transit.producer_epoch and not self._valid_epoch_bump(transit))
                    or transit.topic_partitions or transit.txn_start_timestamp != -1):
                self._failure(transit)
            self.txn_timeout_ms = transit.txn_timeout_ms
            self.producer_epoch = transit.producer_epoch
            self.last_producer_epoch = transit.last_producer_epoch
            self.producer_id = transit.producer_id
            self.previous_producer_id = transit.prev_producer_id
        elif to_state == _S.ONGOING:
            if (not self._valid_epoch(transit) or not self.topic_partitions <= transit.topic_partitions
                    or self.txn_timeout_ms != transit.txn_timeout_ms):
                self._failure(transit)
            self.txn_start_timestamp = transit.txn_start_timestamp
            self.topic_partitions |= transit.topic_partitions
        elif to_state in (_S.PREPARE_ABORT, _S.PREPARE_COMMIT):
            if (not self._valid_epoch(transit) or set(self.topic_partitions) != transit.topic_partitions
                    or self.txn_timeout_ms != transit.txn_timeout_ms
                    or self.txn_start_timestamp != transit.txn_start_timestamp):
                self._failure(transit)
        elif to_state in (_S.COMPLETE_ABORT, _S.COMPLETE_COMMIT):
            if (not self._valid_epoch(transit) or self.txn_timeout_ms != transit.txn_timeout_ms
                    or transit.txn_start_timestamp == -1):
                self._failure(transit)
            self.txn_start_timestamp = transit.txn_start_timestamp
            self.topic_partitions.clear()
        else:  # PrepareEpochFence and Dead are never completed (Kafka: IllegalStateException)
            self._failure(transit)
        self.txn_last_update_timestamp = transit.txn_last_update_timestamp
        self.pending_state = None
        self.state = to_state

    def _valid_epoch(self, transit: TxnTransitMetadata) -> bool:
        return transit.producer_epoch == self.producer_epoch and transit.producer_id == self.producer_id

    def _valid_epoch_bump(self, transit: TxnTransitMetadata) -> bool:
        return transit.producer_epoch == self.producer_epoch + 1 or (
            transit.producer_epoch == 0 and transit.producer_id != self.producer_id
        )

    def _failure(self, transit: TxnTransitMetadata) -> None:
        raise IllegalTransition(f"TransactionalId {self.transactional_id} failed transition to state {transit} due "
                                "to unexpected metadata")  # fmt: skip
