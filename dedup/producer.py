"""A deterministic model of Kafka's idempotent producer client, talking to a :class:`~dedup.cluster.Cluster`.

:class:`IdempotentProducer` numbers its batches as Kafka's Java client does (one producer id
and epoch from InitProducerId, consecutive sequences per batch, wrapping at 2^31-1, spec
§8.4), keeps up to ``max_in_flight`` requests in flight, and resends the *same bytes* (same
producer id, epoch and sequence) when a request or its response is lost or the leader
answers with a retriable error. A seeded :class:`Network` decides which requests are lost
before the leader, which responses are lost after the append, and in which order in-flight
requests arrive. Everything is synchronous and reproducible from the seed.

Response handling mirrors the Java client (``Sender.completeBatch``,
``TransactionManager.canRetry``/``handleFailedBatch`` and
``RecordAccumulator.shouldStopDrainBatchesForPartition`` in
``clients/src/main/java/org/apache/kafka/clients/producer/internals``, Kafka trunk of October
2024; the pre-KIP-360 behaviour from the 2.4.0 tag):

- no error: the batch is acknowledged (``duplicate`` when the leader recognised a retry
  and answered with the original offsets, spec §2.1 rule 10);
- NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS(_AFTER_APPEND), KAFKA_STORAGE_ERROR, a lost
  connection: retriable (``RetriableException``), the batch is resent;
- OUT_OF_ORDER_SEQUENCE_NUMBER: retried when an earlier batch of this producer is still
  unacknowledged (``canRetry``: "retry the OutOfOrderSequenceException if the batch is
  _not_ the next batch", i.e. its base sequence is not the last acknowledged one + 1: the
  earlier batch failed or arrived late, and this one will follow it). For the batch that
  *is* next the error means a gap in the log (acknowledged data lost, e.g. by an unclean
  election): the producer stops with :attr:`IdempotentProducer.fatal_error`, as clients
  before Kafka 2.5 failed it. Since 2.5 (KIP-360, KAFKA-8710) the Java idempotent producer
  instead bumps its epoch and resumes at sequence 0 (``requestEpochBumpForPartition``),
  which keeps it running but accepts the gap; a transactional one makes it an abortable
  error. The model stops so that the loss stays visible.
- INVALID_PRODUCER_EPOCH (rule 12): a newer instance with the same ``transactional_id`` took
  over; this instance is fenced and stops. (Since Kafka 2.7, KAFKA-10687, the Java client
  first makes it an abortable error; the abort then fails at the coordinator with
  PRODUCER_FENCED, so the instance ends fenced all the same.) Any other error stops it too
  (the Java client fails just that batch for, say, INVALID_RECORD; well-formed batches never
  get one).

Sending follows the Java client's accumulator: retries go first, in sequence order, and a
retry goes out only once its batch is the oldest unacknowledged one, nothing else being sent
meanwhile; a batch counts as in flight until it is acknowledged, so a new batch goes out only
within ``max_in_flight`` of the oldest unacknowledged one. The Java client gets one more rule
from its single TCP connection, which the model's network lacks: until the leader has
acknowledged one batch, only one request is in flight (a leader takes any first sequence from
a producer it does not know, spec §2.1 rule 15). The model is simpler where the broker sees
no difference: a lost request or response is noticed when the network delivers it (Java
waits for ``request.timeout.ms`` and closes the connection), there is no delivery timeout
(``flush`` gives up after ``max_polls`` steps instead), and a request issued to a leader that
has since failed gets NOT_LEADER_OR_FOLLOWER from it, or a lost connection if it is down.

Kafka's client refuses ``max.in.flight.requests.per.connection`` above 5 with idempotence
(ProducerConfig: "Must set max.in.flight.requests.per.connection to at most 5 to use the
idempotent producer"); the model allows it, to show why: :func:`window_overflow_example`.
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from . import _args
from ._types import DEFAULT_WINDOW, INT32_MAX, wrap_increment
from .batch import encode_batch
from .cluster import Cluster, ProduceResponse
from .errors import (
    KafkaError,
    KafkaStorageError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderOrFollowerError,
    OutOfOrderSequenceError,
    ProducerFencedError,
)

__all__ = [
    "IdempotentProducer",
    "Network",
    "ProducerBatch",
    "ProducerStats",
    "WindowOverflow",
    "window_overflow_example",
]


class _Disconnected(KafkaError):
    """Kafka's NetworkException: the connection to the broker broke with the request in
    flight (client-side, retriable)."""

    error_name = "NETWORK_EXCEPTION"


#: Errors the Java client retries (subclasses of Kafka's RetriableException).
RETRIABLE_ERRORS = (
    NotLeaderOrFollowerError,
    NotEnoughReplicasError,
    NotEnoughReplicasAfterAppendError,
    KafkaStorageError,
    _Disconnected,
)


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1) (at 1 nothing would ever get through), got {value}")
    return float(value)


class Network:
    """The network between one producer and the partition leader, decided by ``random.Random(seed)``.

    ``drop_request``: the probability that a request is lost before it reaches the leader
    (never appended); ``drop_response``: that the response is lost after the leader handled
    it (the producer times out and retries, not knowing whether it was appended); with
    ``reorder`` any in-flight request may arrive next, else the oldest does. A subclass may
    override the three decisions to script a scenario.
    """

    def __init__(self, seed: int = 0, *, drop_request: float = 0.0, drop_response: float = 0.0, reorder: bool = True):
        self.seed = _args.integer("seed", seed, -(1 << 63), (1 << 63) - 1, "an int64")
        self.drop_request = _probability("drop_request", drop_request)
        self.drop_response = _probability("drop_response", drop_response)
        self.reorder = _args.flag("reorder", reorder)
        self.random = random.Random(seed)

    def __repr__(self) -> str:
        return (
            f"Network(seed={self.seed}, drop_request={self.drop_request}, drop_response={self.drop_response}, "
            f"reorder={self.reorder})"
        )

    def next_arrival(self, in_flight: Sequence[ProducerBatch]) -> int:
        """The index in ``in_flight`` (oldest first, non-empty) of the request that arrives next."""
        return self.random.randrange(len(in_flight)) if self.reorder and len(in_flight) > 1 else 0

    def lose_request(self, batch: ProducerBatch) -> bool:
        """Whether this request of ``batch`` is lost before the leader."""
        return self.drop_request > 0 and self.random.random() < self.drop_request

    def lose_response(self, batch: ProducerBatch) -> bool:
        """Whether the leader's response to this request of ``batch`` is lost."""
        return self.drop_response > 0 and self.random.random() < self.drop_response


@dataclass(eq=False)
class ProducerBatch:
    """One batch of the producer, and what became of it (what a Java client's futures tell).

    ``index`` is its place in the producer's batch order. ``base_sequence`` is -1 until it is
    first sent; from then on ``data`` holds the exact bytes every attempt sends. Once
    acknowledged, ``base_offset``/``last_offset`` are where the records are in the log
    (``duplicate``: the leader recognised a retry and answered with the original offsets).
    ``responses`` are the answers the producer received (lost ones are not there);
    ``error`` is the error that stopped the producer on this batch, if any.
    """

    index: int
    values: list[bytes | None] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    base_sequence: int = -1
    data: bytes | None = None
    attempts: int = 0
    acknowledged: bool = False
    duplicate: bool = False
    base_offset: int = -1
    last_offset: int = -1
    transactional: bool = False
    responses: list[ProduceResponse] = field(default_factory=list)
    error: KafkaError | None = None
    _sent_to: int | None = None  # the leader the current attempt was sent to

    @property
    def record_count(self) -> int:
        return len(self.values)

    @property
    def last_sequence(self) -> int:
        """The sequence of the batch's last record (-1 until sent), wrapping as Kafka's do."""
        if self.base_sequence < 0:
            return -1
        return wrap_increment(self.base_sequence, self.record_count - 1)

    def __repr__(self) -> str:
        state = "acknowledged" if self.acknowledged else "failed" if self.error is not None else "pending"
        return (
            f"<ProducerBatch {self.index} seq {self.base_sequence}-{self.last_sequence} {self.record_count} records "
            f"{state} attempts={self.attempts} offsets={self.base_offset}-{self.last_offset}>"
        )


@dataclass
class ProducerStats:
    """What the producer did. ``requests == batches_sent + retries``; every request was lost
    (``lost_requests``), had its response lost (``lost_responses``), got an error
    (``errors``, by Kafka error name), acknowledged a batch, or is still in flight.
    ``lost_acknowledgements`` counts the lost responses that carried an acknowledgement (the
    batch was written): the model knows, a real client cannot tell. ``duplicates`` counts
    the acknowledgements of retries the leader recognised (original offsets, nothing written).
    """

    records_sent: int = 0  # records in batches sent at least once
    batches_sent: int = 0  # batches sent at least once (each got its sequence then)
    requests: int = 0  # produce requests: first sends and retries
    retries: int = 0  # requests that resent a batch
    duplicates: int = 0
    acknowledged_batches: int = 0
    acknowledged_records: int = 0
    lost_requests: int = 0
    lost_responses: int = 0
    lost_acknowledgements: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class IdempotentProducer:
    """An idempotent Kafka producer for the partition of ``cluster``, as a step-by-step model.

    ``max_in_flight`` (Kafka's ``max.in.flight.requests.per.connection``, 5; Kafka refuses
    more with idempotence, the model allows it), ``transactional_id`` (a stable identity:
    InitProducerId gives back the same producer id with a bumped epoch, fencing the previous
    instance), ``network`` (a :class:`Network`; default ``Network()``: no loss, reordering
    with seed 0), ``batch_records`` (records per batch), ``clock`` (the client's time in ms
    for record timestamps; the wall clock by default: give the cluster the same clock, since
    brokers expire producers by these timestamps), ``enable_idempotence`` (Kafka's
    ``enable.idempotence``: with False, batches carry no producer id, sequence or epoch, and
    the brokers cannot recognise a retry).

    Use: :meth:`init`, then :meth:`send` records and :meth:`flush` (or :meth:`poll` step by
    step). Batches are in :attr:`batches`, counters in :attr:`stats`; a producer that
    stopped on an error has it in :attr:`fatal_error`. ``TypeError``/``ValueError`` for
    bad arguments; ``RuntimeError`` for a call in the wrong state (Java's
    IllegalStateException).

    Example::

        >>> producer = IdempotentProducer(cluster, network=Network(seed=1, drop_response=0.2))
        >>> producer.init()
        >>> for value in (b"a", b"b", b"c"):
        ...     _ = producer.send(value)
        >>> producer.flush()
        >>> [record.value for record in cluster.consume()]
        [b'a', b'b', b'c']
    """

    def __init__(
        self,
        cluster: Cluster,
        *,
        max_in_flight: int = 5,
        transactional_id: str | None = None,
        network: Network | None = None,
        batch_records: int = 1,
        clock: Callable[[], int] | None = None,
        enable_idempotence: bool = True,
    ) -> None:
        if not callable(getattr(cluster, "produce", None)) or not hasattr(cluster, "coordinator"):
            raise TypeError(f"cluster must be a dedup.cluster.Cluster, got {type(cluster).__name__}")
        if transactional_id is not None and (not isinstance(transactional_id, str) or not transactional_id):
            raise TypeError(f"transactional_id must be a non-empty str or None, got {transactional_id!r}")
        if network is not None and not isinstance(network, Network):
            raise TypeError(f"network must be a dedup.producer.Network or None, got {type(network).__name__}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning milliseconds, got {type(clock).__name__}")
        self.cluster = cluster
        self.max_in_flight = _args.integer("max_in_flight", max_in_flight, 1, INT32_MAX, "1 or more")
        self.batch_records = _args.integer("batch_records", batch_records, 1, INT32_MAX, "1 or more")
        self.enable_idempotence = _args.flag("enable_idempotence", enable_idempotence)
        if transactional_id is not None and not self.enable_idempotence:
            raise ValueError("a transactional_id needs enable_idempotence=True (as in Kafka)")
        self.transactional_id = transactional_id
        self.network = network if network is not None else Network()
        self._clock = clock or _wall_clock_ms
        self.producer_id = -1
        self.producer_epoch = -1
        self.batches: list[ProducerBatch] = []
        self.in_flight: list[ProducerBatch] = []
        self.fatal_error: KafkaError | None = None
        self.stats = ProducerStats()
        self._open: ProducerBatch | None = None  # the batch send() is filling
        self._ready: deque[ProducerBatch] = deque()  # full batches never sent
        self._retry: list[ProducerBatch] = []  # batches to resend, in batch order
        self._next_sequence = 0
        self._first_unacknowledged = 0  # index into batches: everything before it is acknowledged
        self._initialised = False
        self._in_transaction = False

    def __repr__(self) -> str:
        return (
            f"<IdempotentProducer producer_id={self.producer_id} epoch={self.producer_epoch} "
            f"batches={len(self.batches)} in_flight={len(self.in_flight)} fatal_error={self.fatal_error!r}>"
        )

    # -- lifecycle -------------------------------------------------------------------------------

    def init(self) -> tuple[int, int]:
        """InitProducerId (``cluster.coordinator.init_producer_id``): sets and returns
        ``(producer_id, producer_epoch)``; with a ``transactional_id`` this fences every older
        instance and aborts its open transaction. A producer without idempotence keeps -1."""
        if self._initialised:
            raise RuntimeError("init() was already called on this producer")
        if self.enable_idempotence:
            self.producer_id, self.producer_epoch = self.cluster.coordinator.init_producer_id(self.transactional_id)
        self._initialised = True
        return self.producer_id, self.producer_epoch

    def send(self, value: bytes | None, key: bytes | None = None) -> ProducerBatch:
        """Queue one record; returns the batch it joins (acknowledged once :meth:`flush` is done).

        Raises the producer's :attr:`fatal_error` if it has stopped, ``RuntimeError`` before
        :meth:`init` or, for a transactional producer, outside a transaction.
        """
        self._check_usable()
        if self.transactional_id is not None and not self._in_transaction:
            raise RuntimeError("a transactional producer sends only inside begin_transaction()/commit_transaction()")
        value = _nullable_bytes("value", value)
        key = _nullable_bytes("key", key)
        if self._open is None:
            self._open = ProducerBatch(index=len(self.batches), transactional=self._in_transaction)
            self.batches.append(self._open)
        self._open.values.append(value)
        self._open.keys.append(key)
        self._open.timestamps.append(int(self._clock()))
        batch = self._open
        if batch.record_count == self.batch_records:
            self._close_open_batch()
        return batch

    def poll(self) -> bool:
        """One step: send the next batch (a retry first) if fewer than ``max_in_flight``
        requests are in flight, otherwise deliver the in-flight request the network picks and
        handle its outcome. A partly filled batch is sent when nothing else is left (Kafka's
        linger). Returns False when there was nothing to do (or the producer has stopped)."""
        if self.fatal_error is not None:
            return False
        self._check_usable()
        if len(self.in_flight) < self.max_in_flight:
            if not self._retry and not self._ready and not self.in_flight:
                self._close_open_batch()
            batch = self._next_to_send()
            if batch is not None:
                self._issue(batch)
                return True
        if not self.in_flight:
            return False
        batch = self.in_flight.pop(self.network.next_arrival(self.in_flight))
        self._deliver(batch)
        return True

    def flush(self, *, max_polls: int = 1_000_000) -> None:
        """Poll until every batch is acknowledged or the producer has stopped (check
        :attr:`fatal_error`). ``TimeoutError`` after ``max_polls`` steps (Kafka's
        ``delivery.timeout.ms``: say, the partition stays offline)."""
        max_polls = _args.integer("max_polls", max_polls, 1, (1 << 63) - 1, "1 or more")
        if not self._initialised:
            raise RuntimeError("call init() first (InitProducerId)")
        if self.fatal_error is not None:
            return
        self._close_open_batch()
        for _ in range(max_polls):
            if not self.poll():
                return
        errors = ", ".join(f"{name} x{count}" for name, count in self.stats.errors.items()) or "none"
        raise TimeoutError(
            f"flush: {len(self.in_flight) + len(self._retry) + len(self._ready)} batches still unacknowledged "
            f"after {max_polls} polls (errors so far: {errors})"
        )

    @property
    def done(self) -> bool:
        """True when nothing is left to send or wait for (every batch acknowledged, or stopped)."""
        if self.fatal_error is not None:
            return True
        return self._open is None and not self._ready and not self._retry and not self.in_flight

    def acknowledged_values(self) -> list[bytes | None]:
        """The values of every acknowledged record, in send order."""
        return [value for batch in self.batches if batch.acknowledged for value in batch.values]

    def unacknowledged_values(self) -> list[bytes | None]:
        """The values of every record not (yet) acknowledged, in send order: what an
        application that restarts would send again."""
        return [value for batch in self.batches if not batch.acknowledged for value in batch.values]

    # -- transactions (a stable identity; minimal) -----------------------------------------------

    def begin_transaction(self) -> None:
        """Start a transaction on the partition (AddPartitionsToTxn via
        ``cluster.coordinator.begin``); records sent until :meth:`commit_transaction` are
        transactional. ``ProducerFencedError`` if a newer instance took over."""
        self._check_usable()
        if self.transactional_id is None:
            raise RuntimeError("begin_transaction() needs a transactional_id")
        if self._in_transaction:
            raise RuntimeError("a transaction is already open")
        self._coordinator_call(self.cluster.coordinator.begin)
        self._in_transaction = True

    def commit_transaction(self) -> int:
        """Flush, then EndTxn(COMMIT); returns the marker's offset. Raises the error that
        stopped the producer (INVALID_PRODUCER_EPOCH when fenced at the partition), or
        ``ProducerFencedError`` from the coordinator."""
        return self._end_transaction(commit=True)

    def abort_transaction(self) -> int:
        """Flush, then EndTxn(ABORT); returns the marker's offset. read_committed consumers
        never see the transaction's records."""
        return self._end_transaction(commit=False)

    def _end_transaction(self, *, commit: bool) -> int:
        self._check_usable()
        if not self._in_transaction:
            raise RuntimeError("no transaction is open")
        self.flush()
        if self.fatal_error is not None:
            raise self.fatal_error
        offset = self._coordinator_call(self.cluster.coordinator.end_transaction, commit=commit)
        self._in_transaction = False
        return int(offset)

    def _coordinator_call(self, call: Callable[..., Any], **options: Any) -> Any:
        assert self.transactional_id is not None
        try:
            return call(self.transactional_id, self.producer_id, self.producer_epoch, **options)
        except ProducerFencedError as error:
            self._stop(None, error)
            raise

    # -- the model -------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self.fatal_error is not None:
            raise self.fatal_error
        if not self._initialised:
            raise RuntimeError("call init() first (InitProducerId)")

    def _close_open_batch(self) -> None:
        if self._open is not None:
            self._ready.append(self._open)
            self._open = None

    def _next_to_send(self) -> ProducerBatch | None:
        if self._retry:
            # RecordAccumulator.shouldStopDrainBatchesForPartition: a retry is sent only once it is
            # the first unacknowledged batch, and nothing is sent while it waits.
            if self.enable_idempotence and self._retry[0].index != self._first_unacknowledged:
                return None
            return self._retry.pop(0)
        if self._ready:
            if self.enable_idempotence:
                # A leader takes any sequence from a producer it has no state for (spec §2.1 rule 15):
                # until one batch is acknowledged, a second request could overtake the first and be
                # written ahead of it. Kafka relies on one connection's order; this network reorders.
                if self.in_flight and not self.stats.acknowledged_batches:
                    return None
                # A batch counts as in flight until acknowledged, even while it waits for a retry (the
                # Java client's inflightBatchesBySequence; there a lost response breaks the connection
                # and fails every request behind it): at most max_in_flight - 1 batches after an
                # unacknowledged one are ever written, so its retry is still in the leader's window.
                if self._ready[0].index >= self._first_unacknowledged + self.max_in_flight:
                    return None
            return self._ready.popleft()
        return None

    def _issue(self, batch: ProducerBatch) -> None:
        if batch.data is None:  # the first attempt fixes the bytes every retry resends
            if self.enable_idempotence:
                batch.base_sequence = self._next_sequence
                self._next_sequence = wrap_increment(self._next_sequence, batch.record_count)
            batch.data = encode_batch(
                batch.values,
                keys=batch.keys,
                timestamps=batch.timestamps,
                producer_id=self.producer_id,
                producer_epoch=self.producer_epoch,
                base_sequence=batch.base_sequence,
                transactional=batch.transactional,
            )
            self.stats.batches_sent += 1
            self.stats.records_sent += batch.record_count
        else:
            self.stats.retries += 1
        batch.attempts += 1
        batch._sent_to = self.cluster.leader_id
        self.stats.requests += 1
        self.in_flight.append(batch)

    def _deliver(self, batch: ProducerBatch) -> None:
        if self.network.lose_request(batch):
            self.stats.lost_requests += 1
            self._retry_later(batch)
            return
        response = self._request(batch)
        if self.network.lose_response(batch):
            self.stats.lost_responses += 1
            self.stats.lost_acknowledgements += response.error is None
            self._retry_later(batch)
            return
        batch.responses.append(response)
        if response.error is None:
            self._acknowledge(batch, response)
            return
        self.stats.errors[response.error.error_name] += 1
        if self._can_retry(batch, response.error):
            self._retry_later(batch)
        else:
            self._stop(batch, response.error)

    def _request(self, batch: ProducerBatch) -> ProduceResponse:
        """The produce request as the broker it was sent to answers it."""
        assert batch.data is not None
        cluster = self.cluster
        sent_to = batch._sent_to
        if sent_to is not None and sent_to != cluster.leader_id:
            if not cluster.brokers[sent_to].alive:
                error: KafkaError = _Disconnected(f"broker {sent_to} went down with the request in flight")
            else:
                error = NotLeaderOrFollowerError(f"broker {sent_to} is no longer the leader of the partition")
            return ProduceResponse(error, -1, -1, False, cluster.leader_id, cluster.leader_epoch)
        return cluster.produce(batch.data, acks="all")

    def _can_retry(self, batch: ProducerBatch, error: KafkaError) -> bool:
        if isinstance(error, RETRIABLE_ERRORS):
            return True
        if isinstance(error, OutOfOrderSequenceError):
            # TransactionManager.canRetry: not the next batch, so an earlier one is missing
            # and this one is retried after it; the next batch itself means a gap.
            return self._first_unacknowledged < batch.index
        return False

    def _retry_later(self, batch: ProducerBatch) -> None:
        # RecordAccumulator.reenqueue keeps retries in sequence order, ahead of new batches.
        position = 0
        while position < len(self._retry) and self._retry[position].index < batch.index:
            position += 1
        self._retry.insert(position, batch)

    def _acknowledge(self, batch: ProducerBatch, response: ProduceResponse) -> None:
        batch.acknowledged = True
        batch.duplicate = response.duplicate
        batch.base_offset, batch.last_offset = response.base_offset, response.last_offset
        self.stats.acknowledged_batches += 1
        self.stats.acknowledged_records += batch.record_count
        self.stats.duplicates += int(response.duplicate)
        while self._first_unacknowledged < len(self.batches) and self.batches[self._first_unacknowledged].acknowledged:
            self._first_unacknowledged += 1

    def _stop(self, batch: ProducerBatch | None, error: KafkaError) -> None:
        """A fatal error: the producer stops and abandons every unacknowledged batch."""
        self.fatal_error = error
        if batch is not None:
            batch.error = error
        self.in_flight.clear()
        self._retry.clear()
        self._ready.clear()
        self._open = None


def _nullable_bytes(name: str, value: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{name} must be bytes, bytearray, memoryview or None, got {type(value).__name__}")
    return bytes(value)


# -- why max_in_flight must not exceed the window ---------------------------------------------------


class WindowOverflow(NamedTuple):
    """What :func:`window_overflow_example` saw.

    ``base_offset``: where the oldest batch was written (its acknowledgement was lost);
    ``retry_response``: the leader's answer to its retry; ``recognised``: the retry was
    answered as a duplicate with the original offset; ``copies``: how often its record is
    in the log; ``producer_error``: the error that stopped the producer, if any.
    """

    max_in_flight: int
    window: int
    base_offset: int
    retry_response: ProduceResponse
    recognised: bool
    copies: int
    producer_error: KafkaError | None


class _LoseOneResponse(Network):
    """In-order delivery; only the response to the first attempt of batch ``index`` is lost."""

    def __init__(self, index: int) -> None:
        super().__init__(0, reorder=False)
        self.index = index

    def lose_response(self, batch: ProducerBatch) -> bool:
        return batch.index == self.index and batch.attempts == 1


def window_overflow_example(directory: Any, *, max_in_flight: int = 6, window: int = DEFAULT_WINDOW) -> WindowOverflow:
    """Why ``max_in_flight`` must not exceed the table's window (Kafka: 5 and 5).

    In a one-broker cluster under ``directory`` (whose table keeps ``window`` batches per
    producer), a producer that the leader already knows sends ``max_in_flight`` one-record
    batches at once. The oldest is written, but its response is lost; the producer resends
    it, now behind the other ``max_in_flight - 1``. When they arrive first, the leader's
    window holds the newest ``window`` batches: if ``max_in_flight <= window`` the retry is
    still there and is answered with its original offset; with one more in flight it has
    been evicted, the retry looks like a new batch out of sequence
    (OUT_OF_ORDER_SEQUENCE_NUMBER), and the producer, whose batch was written after all,
    stops on a gap that is not there. Deterministic.

        >>> window_overflow_example(tmp, max_in_flight=5, window=5).recognised
        True
        >>> window_overflow_example(tmp2, max_in_flight=6, window=5).retry_response.error.error_name
        'OUT_OF_ORDER_SEQUENCE_NUMBER'
    """
    max_in_flight = _args.integer("max_in_flight", max_in_flight, 1, 1000, "in [1, 1000]")
    window = _args.window(window)
    ticks = iter(range(1_700_000_000_000, 1 << 62))
    clock = ticks.__next__
    with Cluster(directory, brokers=1, min_insync_replicas=1, window=window, clock=clock) as cluster:
        network = _LoseOneResponse(index=1)
        producer = IdempotentProducer(cluster, max_in_flight=max_in_flight, network=network, clock=clock)
        producer.init()
        producer.send(b"known")  # batch 0: from now on the leader has state for the producer
        producer.flush()
        for index in range(max_in_flight):
            producer.send(b"in-flight-%d" % index)
        producer.flush()
        oldest = producer.batches[network.index]
        written = [record.offset for record in cluster.consume() if record.value == oldest.values[0]]
    return WindowOverflow(
        max_in_flight=max_in_flight,
        window=window,
        base_offset=written[0],
        retry_response=oldest.responses[-1],
        recognised=oldest.acknowledged and oldest.duplicate,
        copies=len(written),
        producer_error=producer.fatal_error,
    )
