"""One simulation run carried out: the cluster on real files with simulated time, the
producer instances, and each kind of action of a plan (sends and polls through the producer
model, crashes, restarts with damaged files, a full disk, stale duplicates, clock jumps,
application and identity restarts), with the counts and the trace the report prints.

The plan comes from :mod:`dedup.tools.simulate_plan`; :mod:`dedup.tools.simulate_check`
checks the cluster a run leaves.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import signal
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..batch import encode_batch
from ..cluster import Cluster, ProduceResponse
from ..coordinator.transaction_coordinator import TransactionCoordinator
from ..errors import KafkaError, KafkaStorageError, NotEnoughReplicasAfterAppendError
from ..producer import IdempotentProducer, Network
from ..records import scan_batches
from ..transaction_index import CONTROL_ABORT, CONTROL_COMMIT, control_type
from .simulate_plan import (
    DELETE_SNAPSHOT,
    DELIVERY_TIMEOUT_MS,
    EXPIRATION_MS,
    FLIP_SNAPSHOT,
    FLUSH_POLLS,
    SEGMENT_BYTES,
    START_MS,
    TORN_TAIL,
    TRUNCATE_SNAPSHOT,
    Action,
    Settings,
)
from .simulate_txn import (
    ABORT_INTERVAL_MS,
    DATA_PARTITIONS,
    STATE_PARTITIONS,
    TRANSACTION_TIMEOUT_MS,
    SimulatedCoordinator,
    TransactionStateStorage,
)


@dataclass
class Counts:
    faults: Counter[str] = field(default_factory=Counter)
    acknowledged: int = 0
    duplicates: int = 0  # retries the leader recognised (rule 10)
    kafka_shortcut: int = 0  # table entries Kafka's rebuild shortcut left behind their log (spec §5.3)
    lost_batches: int = 0  # acknowledged batches lost to reported unclean elections
    unclean_elections: int = 0
    committed_transactions: int = 0  # EndTxn(COMMIT) answered NONE
    aborted_transactions: int = 0  # EndTxn(ABORT) answered NONE
    txnindex_kafka_shortcut: int = 0  # .txnindex entries Kafka's rebuild shortcut made differ from the log (§5.3)
    reloads_checked: int = 0  # transactional ids whose state after a reload was compared with the one before


@dataclass
class Outcome:
    seed: int
    settings: Settings
    actions: list[Action]
    violations: list[str]
    counts: Counts
    trace: list[str]

    @property
    def ok(self) -> bool:
        return not self.violations


class _ClusterView:
    """What the producers see as the cluster: the real one, except that a produce request
    may meet a full disk on the leader (armed by the ``disk_full`` action)."""

    def __init__(self, run: Run) -> None:
        self._run = run

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run.cluster, name)

    def produce(self, records: Any, *, acks: str = "all") -> ProduceResponse:
        return self._run.produce(records, acks=acks)

    @property
    def coordinator(self) -> Any:
        """The real transaction coordinator when the run has transactional producers."""
        run = self._run
        return run.coordinator if run.coordinator is not None else run.cluster.coordinator


@dataclass
class Transaction:
    """One transaction of a transactional instance: its batches ``[first_batch, end_batch)``
    of the producer model (``end_batch`` None while open), the values written on the second
    partition, and what the client knows of its outcome: ``open`` (never ended: aborted by
    the coordinator when the instance is fenced or times out), ``committed``, ``aborted``, or
    ``unknown`` (an EndTxn(COMMIT) whose answer was lost: all of it or none of it is visible)."""

    instance: _Instance
    first_batch: int
    end_batch: int | None = None
    side_values: list[bytes] = field(default_factory=list)
    outcome: str = "open"
    ending: bool | None = None  # the EndTxn being attempted: True commit, False abort

    def values(self) -> list[bytes | None]:
        batches = self.instance.producer.batches[self.first_batch : self.end_batch]
        return [value for batch in batches if batch.acknowledged for value in batch.values] + list(self.side_values)


@dataclass
class _Instance:
    """One producer instance; ``slot`` is the producer index of the plan. ``ready`` once
    InitProducerId succeeded (it fails while the partition is offline if the coordinator
    must abort the previous instance's transaction there)."""

    producer: IdempotentProducer
    slot: int
    generation: int = 0
    ready: bool = False
    transaction: Transaction | None = None  # the open one
    side_sequence: int = 0  # the next base sequence on the second partition


class Run:
    """One run: seed ``seed``'s settings and ``actions`` carried out on a cluster in
    ``directory`` (:meth:`execute`), with the counts, the trace and what the checks need."""

    def __init__(self, seed: int, settings: Settings, actions: Sequence[Action], directory: str,
                 coordinator_class: type[TransactionCoordinator] | None = TransactionCoordinator) -> None:  # fmt: skip
        self.seed = seed
        self.settings = settings
        self.actions = list(actions)
        self.now = START_MS
        self.trace: list[str] = []
        self.counts = Counts()
        self.directory = directory
        self.cluster = Cluster(
            directory, brokers=settings.brokers, min_insync_replicas=settings.min_insync_replicas,
            unclean_leader_election=settings.unclean, clock=self.clock, segment_bytes=SEGMENT_BYTES,
            producer_id_expiration_ms=EXPIRATION_MS,
        )  # fmt: skip
        self.view = _ClusterView(self)
        #: Every partition the run's brokers hold: the data partition first.
        self.clusters: list[Cluster] = [self.cluster]
        #: Violations seen during the run (the checks at the end add theirs).
        self.violations: list[str] = []
        self.transactions: list[Transaction] = []
        self.coordinator: SimulatedCoordinator | None = None
        self.side: Cluster | None = None
        if settings.stable and coordinator_class is not None:
            options: dict[str, Any] = dict(
                brokers=settings.brokers, min_insync_replicas=settings.min_insync_replicas, clock=self.clock,
                segment_bytes=SEGMENT_BYTES, producer_id_expiration_ms=EXPIRATION_MS,
            )  # fmt: skip
            self.side = Cluster(directory, topic="clicks", partition=1, unclean_leader_election=settings.unclean,
                                **options)  # fmt: skip
            state = [Cluster(directory, topic="__transaction_state", partition=i, **options)
                     for i in range(STATE_PARTITIONS)]  # fmt: skip
            self.clusters += [self.side, *state]
            data = {DATA_PARTITIONS[0]: self.cluster, DATA_PARTITIONS[1]: self.side}
            self.coordinator = SimulatedCoordinator(self, TransactionStateStorage(state), data, coordinator_class)
        self.instances: list[_Instance] = []  # every instance ever made
        self.current: list[_Instance] = []  # the live instance of each slot
        self.generation = Counter[int]()
        self.disk_full: int | None = None
        self.expired_ids: set[int] = set()
        #: Per (partition, broker), ranges Kafka's rebuild shortcut did not replay
        #: (PartitionLog.skipped_replays).
        self.skipped: dict[tuple[str, int], set[tuple[int, int]]] = {}
        for slot in range(settings.producers):
            self.current.append(self._new_instance(slot))

    def clock(self) -> int:
        return self.now

    def close(self) -> None:
        if self.coordinator is not None:
            self.coordinator.coordinator.close()
        for cluster in self.clusters:
            cluster.close()

    def log(self, text: str) -> None:
        self.trace.append(f"t+{self.now - START_MS:>7} ms  {text}")

    # -- producers ----------------------------------------------------------------------------------

    def _new_instance(self, slot: int) -> _Instance:
        self.generation[slot] += 1
        network = Network(
            seed=(self.seed * 1_000_003 + slot * 1_009 + self.generation[slot]) & 0x7FFF_FFFF_FFFF,
            drop_request=self.settings.drop_request, drop_response=self.settings.drop_response,
        )  # fmt: skip
        transactional_id = f"stable-{slot}" if slot < self.settings.stable else None
        view: Any = self.view  # the cluster, as the producer model sees it
        producer = IdempotentProducer(view, transactional_id=transactional_id, network=network, clock=self.clock)
        instance = _Instance(producer, slot, self.generation[slot])
        self.instances.append(instance)
        self._init(instance)
        return instance

    def _init(self, instance: _Instance) -> bool:
        try:
            instance.producer.init()
        except KafkaError as error:
            self.log(f"producer {instance.slot}: InitProducerId failed ({error.error_name}); retried later")
            return False
        instance.ready = True
        self.log(f"producer {instance.slot} instance {self.generation[instance.slot]}: producer id "
                 f"{instance.producer.producer_id} epoch {instance.producer.producer_epoch}")  # fmt: skip
        return True

    def _producer(self, slot: int) -> IdempotentProducer | None:
        instance = self.current[slot]
        if not instance.ready and not self._init(instance):
            return None
        if instance.producer.fatal_error is not None:
            if self.coordinator is None or slot >= self.settings.stable:
                return None
            # The application closes a fenced transactional producer and starts another with the
            # same transactional.id (the coordinator aborted or will abort what it left open).
            self.log(f"producer {slot}: stopped on {instance.producer.fatal_error.error_name}; the application "
                     "starts a new instance")  # fmt: skip
            self.current[slot] = instance = self._new_instance(slot)
            if not instance.ready:
                return None
        return instance.producer

    # -- brokers: every partition of the run ------------------------------------------------------

    def stop_broker(self, broker_id: int, *, clean: bool = False) -> None:
        """The broker goes down: its replica of every partition (data and ``__transaction_state``)."""
        for cluster in self.clusters:
            if cluster.broker(broker_id).log is not None:  # running, its log offline or not
                cluster.stop_broker(broker_id, clean=clean)
        if self.coordinator is not None:
            self.coordinator.leadership_changed()

    def start_broker(self, broker_id: int) -> None:
        for cluster in self.clusters[1:]:
            if not cluster.broker(broker_id).alive:
                cluster.start_broker(broker_id)
        if self.coordinator is not None:
            self.coordinator.leadership_changed()

    def produce(self, records: Any, *, acks: str = "all") -> ProduceResponse:
        if self.disk_full is None or self.cluster.leader is None or not hasattr(signal, "SIGXFSZ"):
            return self.cluster.produce(records, acks=acks)
        room, self.disk_full = self.disk_full, None
        leader = self.cluster.leader_id
        log = self.cluster.leader_log
        limit = log._local_log.segments[-1].size + room  # the active segment may grow `room` more bytes
        with _file_size_limit(limit):
            response = self.cluster.append_to_leader(records, acks=acks)
        if isinstance(response.error, KafkaStorageError):
            # Kafka's log directory failure handling: the replica goes offline, another leads.
            self.counts.faults["disk full"] += 1
            self.log(f"disk full on leader {leader} during a write: KAFKA_STORAGE_ERROR, the broker goes down")
            self.stop_broker(leader)  # type: ignore[arg-type]
            self._note_election(f"broker {leader} went down")
            return response
        if response.error is not None:
            return response
        # The rest of Cluster.produce: replication, then the acknowledgement.
        self.cluster.replicate()
        if acks == "all" and self.cluster.high_watermark <= response.last_offset:
            return response._replace(error=NotEnoughReplicasAfterAppendError("not yet on every in-sync replica"))
        return response

    # -- actions ------------------------------------------------------------------------------------

    def execute(self) -> None:
        for step, action in enumerate(self.actions):
            self.now += 1 + (step * 7919 + self.seed) % 20
            getattr(self, "_" + action.kind)(action)
            self._note_skipped_replays()
            if self.coordinator is not None:
                self.coordinator.settle()
                self._check_stable_offsets()
        self._heal()
        self._note_skipped_replays()

    def _check_stable_offsets(self) -> None:
        """After every step, on each data partition's leader: the last stable offset is at most
        the high watermark and never past the first offset of a transaction still open (found
        by a scan of the log, independent of the log's own bookkeeping)."""
        for cluster in (self.cluster, self.side):
            if cluster is None or cluster.leader is None or cluster.leader.log is None:
                continue
            log = cluster.leader.log
            stable, high_watermark = log.last_stable_offset, log.high_watermark
            if stable > high_watermark:
                self.violations.append(f"{cluster.name}: last stable offset {stable} above the high watermark "
                                       f"{high_watermark}")  # fmt: skip
            open_first = min(open_transactions(log).values(), default=None)
            if open_first is not None and stable > max(open_first, log.log_start_offset):
                self.violations.append(f"{cluster.name}: last stable offset {stable} passes a transaction open since "
                                       f"{open_first}")  # fmt: skip

    def _note_skipped_replays(self) -> None:
        for cluster in (self.cluster, self.side):
            if cluster is None:
                continue
            for broker in cluster.brokers:
                if broker.log is not None and broker.log.skipped_replays:
                    self.skipped.setdefault((cluster.name, broker.broker_id), set()).update(broker.log.skipped_replays)

    def _poll(self, action: Action) -> None:
        producer = self._producer(action.target)
        if producer is None:
            return
        for _ in range(action.detail):
            if not producer.poll():
                break

    def _send(self, action: Action) -> None:
        producer = self._producer(action.target)
        if producer is None:
            return
        instance = self.current[action.target]
        if instance.transaction is not None and instance.transaction.ending is not None:
            # Kafka's client: no send while an EndTxn is in progress (COMMITTING/ABORTING_TRANSACTION); it retries it.
            self._end_transaction(action.target, commit=instance.transaction.ending)
            return
        if producer.transactional_id is not None and not producer._in_transaction:
            try:
                producer.begin_transaction()
            except KafkaError:
                return
            instance.transaction = Transaction(instance, len(producer.batches))
            self.transactions.append(instance.transaction)
        for _ in range(action.detail):
            sent = sum(len(batch.values) for batch in producer.batches)
            producer.send(b"p%d.%d-%d" % (action.target, instance.generation, sent))

    def _commit(self, action: Action) -> None:
        self._end_transaction(action.target, commit=not action.detail)

    def _end_transaction(self, slot: int, *, commit: bool) -> None:
        """EndTxn for the slot's open transaction, once its batches are delivered; with the
        real coordinator the transaction first writes one record on the second partition
        (an abort if that fails). An EndTxn whose answer was lost is retried the same way."""
        producer = self._producer(slot)
        instance = self.current[slot]
        transaction = instance.transaction
        if producer is None or producer.transactional_id is None or not producer._in_transaction:
            return
        if not self._drain(producer) or self.cluster.leader_id is None:
            return
        if transaction is not None:
            if transaction.ending is None:
                if commit and self.side is not None and not self._write_side(instance, transaction):
                    commit = False
                transaction.ending = commit
                transaction.end_batch = len(producer.batches)
            commit = transaction.ending
        try:
            producer.commit_transaction() if commit else producer.abort_transaction()
        except (KafkaError, TimeoutError) as error:
            self.log(f"producer {slot}: end of transaction failed: {error!r}")
            if transaction is not None and commit and transaction.outcome == "open":
                transaction.outcome = "unknown"
            return
        if transaction is not None:
            transaction.outcome = "committed" if commit else "aborted"
            if commit:
                self.counts.committed_transactions += 1
            else:
                self.counts.aborted_transactions += 1
            instance.transaction = None
        self.log(f"producer {slot}: transaction {'committed' if commit else 'aborted'}")

    def _write_side(self, instance: _Instance, transaction: Transaction) -> bool:
        """One transactional record of the instance on the second partition (retried with the
        same bytes, so that a lost acknowledgement is recognised as a duplicate)."""
        assert self.side is not None
        producer = instance.producer
        value = b"side-%d.%d-%d" % (instance.slot, instance.generation, instance.side_sequence)
        batch = encode_batch([value], timestamp=self.now, producer_id=producer.producer_id,
                             producer_epoch=producer.producer_epoch, base_sequence=instance.side_sequence,
                             transactional=True)  # fmt: skip
        for _ in range(3):
            if self.side.leader_id is None:
                return False
            response = self.side.produce(batch, acks="all")
            if response.error is None:
                instance.side_sequence += 1
                transaction.side_values.append(value)
                return True
            if not isinstance(response.error, NotEnoughReplicasAfterAppendError):
                break
        instance.side_sequence += 1  # the record may be on the leader: its sequence is spent
        transaction.side_values.append(value)  # all or nothing of the transaction, as for any record
        return False

    def _drain(self, producer: IdempotentProducer) -> bool:
        for _ in range(FLUSH_POLLS):
            producer._close_open_batch()
            if not producer.poll():
                break
        return producer.done and producer.fatal_error is None

    def _crash(self, action: Action) -> None:
        victim = self.cluster.leader_id if action.detail else action.target
        if victim is None or not self.cluster.brokers[victim].alive:
            return
        self.counts.faults["crash"] += 1
        self.stop_broker(victim)
        self._note_election(f"broker {victim} crashed")

    def _note_election(self, what: str) -> None:
        unclean = self.cluster.unclean_elections - self.counts.unclean_elections
        self.counts.unclean_elections = self.cluster.unclean_elections
        self.log(f"{what}; leader {self.cluster.leader_id} epoch {self.cluster.leader_epoch} "
                 f"isr {sorted(self.cluster.isr)}{' (UNCLEAN election)' if unclean else ''}")  # fmt: skip

    def _clean_restart(self, action: Action) -> None:
        broker = self.cluster.brokers[action.target]
        if not broker.alive or self.cluster.leader_id == action.target:
            return
        self.counts.faults["clean restart"] += 1
        self.stop_broker(action.target, clean=True)
        self.cluster.start_broker(action.target)
        self.start_broker(action.target)
        self._note_election(f"broker {action.target} shut down cleanly and restarted")

    def _restart(self, action: Action) -> None:
        broker = self.cluster.brokers[action.target]
        if broker.alive:
            return
        self._damage(broker.directory, action.detail)
        self.counts.faults["restart"] += 1
        log = self.cluster.start_broker(action.target)
        self.start_broker(action.target)
        report = log.load_report
        self._note_election(f"broker {action.target} restarted (recovery: snapshot {report.snapshot_offset}, "
                            f"{report.replayed_batches} batches replayed, {report.truncated_bytes} bytes cut, "
                            f"{len(report.snapshots_set_aside)} snapshots set aside)")  # fmt: skip

    def _damage(self, directory: str, damage: int) -> None:
        segments = sorted(name for name in os.listdir(directory) if name.endswith(".log"))
        snapshots = sorted(name for name in os.listdir(directory) if name.endswith(".snapshot"))
        rng = random.Random(f"damage-{self.seed}-{self.now}")
        if damage & TORN_TAIL and segments:
            # A crash in the middle of a write: part of a batch at the end of the active segment.
            path = os.path.join(directory, segments[-1])
            with open(path, "r+b") as file:
                data = file.read()
                tail = data[-rng.randint(1, 60) :] if data else b"\x00" * 7
                file.seek(0, os.SEEK_END)
                file.write(tail[: max(1, len(tail) - 1)])
            self.counts.faults["torn write"] += 1
            self.log(f"torn write at the end of {segments[-1]}")
        if snapshots and damage & (DELETE_SNAPSHOT | TRUNCATE_SNAPSHOT | FLIP_SNAPSHOT):
            path = os.path.join(directory, snapshots[-1])
            if damage & DELETE_SNAPSHOT:
                os.unlink(path)
                self.counts.faults["snapshot deleted"] += 1
                self.log(f"snapshot {snapshots[-1]} deleted")
            elif damage & TRUNCATE_SNAPSHOT:
                size = os.path.getsize(path)
                os.truncate(path, rng.randrange(size) if size else 0)
                self.counts.faults["snapshot truncated"] += 1
                self.log(f"snapshot {snapshots[-1]} truncated")
            else:
                with open(path, "r+b") as file:
                    content = bytearray(file.read())
                    if content:
                        content[rng.randrange(len(content))] ^= 1 << rng.randrange(8)
                        file.seek(0)
                        file.write(content)
                self.counts.faults["snapshot bit flip"] += 1
                self.log(f"snapshot {snapshots[-1]}: a bit flipped")

    def _duplicate(self, action: Action) -> None:
        """A stale copy of an earlier request of the producer reaches the leader again (a
        network duplicate); its answer goes nowhere."""
        sent = [batch for i in self.instances if i.slot == action.target for batch in i.producer.batches
                if batch.data is not None and self.now - batch.timestamps[-1] < DELIVERY_TIMEOUT_MS]  # fmt: skip
        if not sent or self.cluster.leader_id is None:
            return
        batch = sent[action.detail % len(sent)]
        self.counts.faults["duplicate request"] += 1
        response = self.cluster.produce(batch.data, acks="all")
        outcome = response.error.error_name if response.error else "duplicate" if response.duplicate else "appended"
        self.log(f"a stale duplicate of producer {action.target}'s batch seq {batch.base_sequence}: {outcome}")

    def _clock_jump(self, action: Action) -> None:
        """Time passes beyond producer.id.expiration.ms with every producer idle: the brokers'
        periodic expiration check removes them (spec §6)."""
        for instance in self.current:
            if instance.ready and instance.producer.fatal_error is None:
                if not self._drain(instance.producer):
                    return  # someone still has requests out: no jump now
                if self.coordinator is not None and instance.producer._in_transaction:
                    # Idle means no transaction open either: a fenced instance whose partition state
                    # expired could otherwise open a transaction no marker ever ends (KIP-890's case).
                    self._end_transaction(instance.slot, commit=True)
                    if instance.producer._in_transaction and instance.producer.fatal_error is None:
                        return
        self.now += EXPIRATION_MS + 1
        self.counts.faults["clock jump"] += 1
        # Every producer so far is idle past the expiration: live brokers drop it now, stopped
        # ones when they next load a snapshot (their replay may bring its later batches back).
        self.expired_ids.update(instance.producer.producer_id for instance in self.instances if instance.ready)
        removed = 0
        for broker in self.cluster.brokers:
            if broker.log is not None:
                removed = broker.log.remove_expired_producers()
        self.log(f"clock jump past producer.id.expiration.ms: {removed} producers expired")

    def _disk_full(self, action: Action) -> None:
        if threading.current_thread() is threading.main_thread():  # SIGXFSZ is ignored from the main thread only
            self.disk_full = action.detail

    def _app_restart(self, action: Action) -> None:
        """The application restarts: a new producer, a new producer id; what the old one had
        not delivered is abandoned (a new instance would send it again, as new records)."""
        if action.target < self.settings.stable:
            return
        self.counts.faults["application restart"] += 1
        self.current[action.target] = self._new_instance(action.target)

    def _identity_restart(self, action: Action) -> None:
        """A producer with a stable identity restarts: InitProducerId bumps its epoch, aborts
        the old instance's open transaction and fences it."""
        if action.target >= self.settings.stable:
            return
        self.counts.faults["identity restart"] += 1
        self.current[action.target] = self._new_instance(action.target)

    # -- the transaction coordinator's faults (no-ops in runs without transactional producers) ------

    def _coordinator_crash(self, action: Action) -> None:
        """Arm a crash of the coordinator's broker in its next EndTxn (or timeout abort, or
        completion at load): after the PrepareCommit/PrepareAbort record and ``detail`` markers."""
        if self.coordinator is not None:
            self.coordinator.crash_after_markers = action.detail

    def _coordinator_failover(self, action: Action) -> None:
        """The leader of a ``__transaction_state`` partition crashes: another broker loads it."""
        if self.coordinator is None:
            return
        victim = self.coordinator.storage.leader(action.target % STATE_PARTITIONS)
        if victim is None:
            return
        self.counts.faults["coordinator failover"] += 1
        self.stop_broker(victim)
        self._note_election(f"broker {victim} (a transaction coordinator) crashed")

    def _coordinator_restart(self, action: Action) -> None:
        if self.coordinator is not None:
            self.coordinator.restart()

    def _txn_timeout(self, action: Action) -> None:
        """A slow producer: transaction.timeout.ms passes with its requests still in flight; the
        coordinator aborts the open transactions with the epoch bumped (the producers fenced)."""
        if self.coordinator is None:
            return
        self.counts.faults["transaction timeout"] += 1
        self.now += TRANSACTION_TIMEOUT_MS + ABORT_INTERVAL_MS
        self.log("transaction.timeout.ms passes with the producers slow")

    def _zombie(self, action: Action) -> None:
        """An older instance of a transactional slot goes on: its requests in flight arrive, it
        tries to commit. It is fenced: nothing it writes is ever visible to read_committed."""
        old = [i for i in self.instances if i.slot == action.target and i is not self.current[action.target]]
        if self.coordinator is None or not old or not old[-1].ready or old[-1].producer.transactional_id is None:
            return
        zombie = old[-1]
        producer = zombie.producer
        newer = self.current[action.target]
        if not newer.ready:
            return  # no newer instance has its epoch yet: the old one is not fenced
        if any(self.now - batch.timestamps[0] >= DELIVERY_TIMEOUT_MS for batch in producer.batches
               if not batch.acknowledged):  # fmt: skip
            return  # the client gave its batches up (delivery.timeout.ms)
        self.counts.faults["zombie"] += 1
        for _ in range(action.detail):
            if not producer.poll():
                break
        if producer.fatal_error is None and producer._in_transaction:
            try:
                producer.commit_transaction()
            except (KafkaError, TimeoutError) as error:
                self.log(f"zombie of producer {action.target}: commit refused: {type(error).__name__}")
                return
            self.violations.append(f"a zombie of producer {action.target} (epoch {producer.producer_epoch}) committed")

    def _heal(self) -> None:
        """Every broker back, a leader, the producers' last chance to deliver; with transactions,
        each open one ended and the coordinator given the time to complete what it started."""
        self.now += 1000
        for broker in self.cluster.brokers:
            if not broker.alive:
                self.cluster.start_broker(broker.broker_id)
                self.start_broker(broker.broker_id)
                self._note_election(f"broker {broker.broker_id} restarted to end the run")
        for cluster in self.clusters:
            if cluster.leader_id is None:
                cluster.elect_leader()
                self._note_election(f"election of {cluster.name} to end the run")
        if self.coordinator is not None:
            self.coordinator.leadership_changed()
            self.coordinator.crash_after_markers = None
            self.coordinator.settle()
        for instance in self.current:
            if instance.ready and instance.producer.fatal_error is None:
                self._drain(instance.producer)
        if self.coordinator is None:
            return
        for slot in range(self.settings.stable):
            for _ in range(3):  # a lost answer is retried
                self._end_transaction(slot, commit=True)
        # Whatever is still open times out; the coordinator's marker retries finish.
        for _ in range(4):
            self.now += TRANSACTION_TIMEOUT_MS + ABORT_INTERVAL_MS
            self.coordinator.settle()


def transactional_batches(log: Any) -> Iterator[tuple[int, int, int | None]]:
    """``(producer id, base offset, control type or None for data)`` of every transactional
    batch of ``log``, in offset order, read from the batches alone."""
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        if not data:
            break
        headers = scan_batches(data)
        for header in headers:
            if header["is_transactional"]:
                kind = None
                if header["is_control"]:
                    kind = control_type(data, int(header["position"]), int(header["record_count"]))
                yield int(header["producer_id"]), int(header["base_offset"]), kind
        offset = int(headers["base_offset"][-1]) + int(headers["last_offset_delta"][-1]) + 1


def open_transactions(log: Any) -> dict[int, int]:
    """Producer id -> first offset of each transaction open at the end of ``log`` (a
    transactional data batch opens one, a COMMIT or ABORT marker of its producer closes it),
    read from the batches alone."""
    ongoing: dict[int, int] = {}
    for producer_id, base, kind in transactional_batches(log):
        if kind is None:
            ongoing.setdefault(producer_id, base)
        elif kind in (CONTROL_ABORT, CONTROL_COMMIT):
            ongoing.pop(producer_id, None)
    return ongoing


@contextlib.contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    """RLIMIT_FSIZE for the duration: a write past ``limit`` bytes fails with EFBIG (what a
    full disk does to a write), SIGXFSZ ignored so the process is not killed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (min(limit, hard) if hard != resource.RLIM_INFINITY else limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
