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

from ..cluster import Cluster, ProduceResponse
from ..errors import KafkaError, KafkaStorageError, NotEnoughReplicasAfterAppendError
from ..producer import IdempotentProducer, Network
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


@dataclass
class Counts:
    faults: Counter[str] = field(default_factory=Counter)
    acknowledged: int = 0
    duplicates: int = 0  # retries the leader recognised (rule 10)
    kafka_shortcut: int = 0  # table entries Kafka's rebuild shortcut left behind their log (spec §5.3)
    lost_batches: int = 0  # acknowledged batches lost to reported unclean elections
    unclean_elections: int = 0


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


@dataclass
class _Instance:
    """One producer instance; ``slot`` is the producer index of the plan. ``ready`` once
    InitProducerId succeeded (it fails while the partition is offline if the coordinator
    must abort the previous instance's transaction there)."""

    producer: IdempotentProducer
    slot: int
    ready: bool = False


class Run:
    """One run: seed ``seed``'s settings and ``actions`` carried out on a cluster in
    ``directory`` (:meth:`execute`), with the counts, the trace and what the checks need."""

    def __init__(self, seed: int, settings: Settings, actions: Sequence[Action], directory: str) -> None:
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
        self.instances: list[_Instance] = []  # every instance ever made
        self.current: list[_Instance] = []  # the live instance of each slot
        self.generation = Counter[int]()
        self.disk_full: int | None = None
        self.expired_ids: set[int] = set()
        #: Per broker, ranges Kafka's rebuild shortcut did not replay (PartitionLog.skipped_replays).
        self.skipped: dict[int, set[tuple[int, int]]] = {}
        for slot in range(settings.producers):
            self.current.append(self._new_instance(slot))

    def clock(self) -> int:
        return self.now

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
        instance = _Instance(producer, slot)
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
            return None
        return instance.producer

    def produce(self, records: Any, *, acks: str = "all") -> ProduceResponse:
        if self.disk_full is None or self.cluster.leader is None or not hasattr(signal, "SIGXFSZ"):
            return self.cluster.produce(records, acks=acks)
        room, self.disk_full = self.disk_full, None
        leader = self.cluster.leader_id
        log = self.cluster.leader_log
        limit = log._segments[-1].size + room  # the active segment may grow `room` more bytes
        with _file_size_limit(limit):
            response = self.cluster.append_to_leader(records, acks=acks)
        if isinstance(response.error, KafkaStorageError):
            # Kafka's log directory failure handling: the replica goes offline, another leads.
            self.counts.faults["disk full"] += 1
            self.log(f"disk full on leader {leader} during a write: KAFKA_STORAGE_ERROR, the broker goes down")
            self.cluster.stop_broker(leader)  # type: ignore[arg-type]
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
        self._heal()
        self._note_skipped_replays()

    def _note_skipped_replays(self) -> None:
        for broker in self.cluster.brokers:
            if broker.log is not None and broker.log.skipped_replays:
                self.skipped.setdefault(broker.broker_id, set()).update(broker.log.skipped_replays)

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
        if producer.transactional_id is not None and not producer._in_transaction:
            try:
                producer.begin_transaction()
            except KafkaError:
                return
        for _ in range(action.detail):
            producer.send(b"p%d-%d" % (action.target, sum(len(b.values) for b in producer.batches)))

    def _commit(self, action: Action) -> None:
        producer = self._producer(action.target)
        if producer is None or producer.transactional_id is None or not producer._in_transaction:
            return
        if not self._drain(producer) or self.cluster.leader_id is None:
            return
        try:
            offset = producer.abort_transaction() if action.detail else producer.commit_transaction()
        except (KafkaError, TimeoutError) as error:
            self.log(f"producer {action.target}: end of transaction failed: {error!r}")
            return
        self.log(f"producer {action.target}: {'abort' if action.detail else 'commit'} marker at {offset}")

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
        self.cluster.stop_broker(victim)
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
        self.cluster.stop_broker(action.target, clean=True)
        self.cluster.start_broker(action.target)
        self._note_election(f"broker {action.target} shut down cleanly and restarted")

    def _restart(self, action: Action) -> None:
        broker = self.cluster.brokers[action.target]
        if broker.alive:
            return
        self._damage(broker.directory, action.detail)
        self.counts.faults["restart"] += 1
        log = self.cluster.start_broker(action.target)
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

    def _heal(self) -> None:
        """Every broker back, a leader, the producers' last chance to deliver."""
        self.now += 1000
        for broker in self.cluster.brokers:
            if not broker.alive:
                self.cluster.start_broker(broker.broker_id)
                self._note_election(f"broker {broker.broker_id} restarted to end the run")
        if self.cluster.leader_id is None:
            self.cluster.elect_leader()
            self._note_election("election to end the run")
        for instance in self.current:
            if instance.ready and instance.producer.fatal_error is None:
                self._drain(instance.producer)


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
