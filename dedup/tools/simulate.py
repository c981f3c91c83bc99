"""Deterministic fault simulation of a replicated partition: ``python -m dedup simulate``.

One seed fixes a whole run, as in FoundationDB's and TigerBeetle's simulators: the cluster's
settings, the producers (idempotent ones, and some with a stable identity that write in
transactions), and a plan of actions: producers sending and polling (the
:class:`~dedup.producer.IdempotentProducer` model: up to 5 requests in flight, lost requests
and responses, reordering, all from per-producer seeded networks), leader crashes, broker
restarts with recovery (some after a clean shutdown), a torn last write and snapshot files
deleted, truncated or bit-flipped while a broker is down, a full disk during the leader's
write (a real ``EFBIG`` from ``RLIMIT_FSIZE``), stale duplicates of old requests arriving at
the leader, clock jumps that expire idle producers, application restarts (a new producer id)
and identity restarts (the same transactional id, a bumped epoch, the old instance fenced),
and unclean leader elections in runs that allow them. The logs are real files (in
``/dev/shm`` when it exists), the time is simulated.

At the end every broker is restarted, the producers get a last chance to deliver, and the
run is checked (:func:`check`):

1. every acknowledged batch is in the leader's committed log exactly once, at the offsets it
   was acknowledged with, with its records; a batch missing from it lies in an offset range
   an unclean election reported as lost (:attr:`Cluster.data_loss <dedup.cluster.Cluster>`);
2. each producer's batches are in the log in sequence order;
3. no replica's log holds a batch twice (the same producer id, epoch and sequence);
4. every live replica's producer table equals a table rebuilt from its own log (a replay of
   every batch from the log start), except where expiration made them differ the way Kafka's
   do (for a producer that expired, the live entry's batches are the newest of the rebuilt);
5. every in-sync replica's log equals the leader's up to the high watermark;
6. without an unclean election nothing is reported lost.

A failing run is shrunk (actions removed one at a time while it still fails) and its trace
printed; ``python -m dedup simulate --seed N`` replays a seed exactly.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .. import _args
from .._types import Origin
from ..cluster import Cluster, ProduceResponse
from ..errors import KafkaError, KafkaStorageError, NotEnoughReplicasAfterAppendError
from ..producer import IdempotentProducer, Network, ProducerBatch
from ..records import append_batches, scan_batches

__all__ = ["Action", "Outcome", "Summary", "check", "plan", "run_seed", "simulate", "main"]

START_MS = 1_767_225_600_000
EXPIRATION_MS = 600_000  # producer.id.expiration.ms in the simulation (10 minutes)
#: Kafka's delivery.timeout.ms default: no copy of a request outlives it (the client has given
#: up on the batch), so stale duplicates come from the last 2 minutes only. (A copy older than
#: producer.id.expiration.ms would be taken as new: Kafka forgets expired producers; its
#: defaults keep the two 12 hours or more apart.)
DELIVERY_TIMEOUT_MS = 120_000
SEGMENT_BYTES = 2048  # small segments: rolls, snapshots and recovery of several segments
STEPS = 150
FLUSH_POLLS = 400  # polls a producer gets to deliver at the end, or before a commit

# Damage done to a stopped broker's files before it restarts (bits of Action.detail).
TORN_TAIL, DELETE_SNAPSHOT, TRUNCATE_SNAPSHOT, FLIP_SNAPSHOT = 1, 2, 4, 8


class Action(NamedTuple):
    """One step of a plan. ``target`` is a producer index or a broker id; an action whose
    target does not fit the state when it runs (restarting a live broker) does nothing, so
    any subset of a plan is itself a plan (what shrinking needs)."""

    kind: str
    target: int = 0
    detail: int = 0

    def __str__(self) -> str:
        return f"{self.kind}({self.target}, {self.detail})"


@dataclass
class Settings:
    brokers: int
    producers: int
    stable: int  # the first `stable` producers have a transactional id
    min_insync_replicas: int
    unclean: bool
    drop_request: float
    drop_response: float


def settings_for(seed: int, unclean_share: float) -> Settings:
    rng = random.Random(f"settings-{seed}")
    producers = rng.randint(1, 4)
    return Settings(
        brokers=3,
        producers=producers,
        stable=rng.randint(0, min(2, producers)),
        min_insync_replicas=rng.choice([1, 2]),
        unclean=rng.random() < unclean_share,
        drop_request=rng.choice([0.0, 0.05, 0.15]),
        drop_response=rng.choice([0.0, 0.1, 0.25]),
    )


def plan(seed: int, settings: Settings, steps: int = STEPS) -> list[Action]:
    """The actions of seed ``seed``'s run."""
    rng = random.Random(f"plan-{seed}")
    kinds = [
        ("poll", 50), ("send", 22), ("crash", 3), ("restart", 5), ("clean_restart", 1), ("duplicate", 3),
        ("clock_jump", 1), ("disk_full", 1.5), ("commit", 3), ("app_restart", 1), ("identity_restart", 1),
    ]  # fmt: skip
    names = [name for name, _ in kinds]
    weights = [weight for _, weight in kinds]
    actions = []
    for _ in range(steps):
        kind = rng.choices(names, weights)[0]
        if kind in ("poll", "send", "duplicate", "commit", "app_restart", "identity_restart"):
            target = rng.randrange(settings.producers)
        else:
            target = rng.randrange(settings.brokers)
        detail = 0
        if kind == "send":
            detail = rng.randint(1, 3)  # records
        elif kind == "poll":
            detail = rng.randint(1, 6)  # polls
        elif kind == "restart":
            detail = sum(bit for bit in (TORN_TAIL, DELETE_SNAPSHOT, TRUNCATE_SNAPSHOT, FLIP_SNAPSHOT)
                         if rng.random() < 0.2)  # fmt: skip
        elif kind == "duplicate":
            detail = rng.randrange(1 << 16)  # which earlier batch
        elif kind == "disk_full":
            detail = rng.randint(0, 200)  # bytes the leader's segment may still grow
        elif kind == "commit":
            detail = int(rng.random() < 0.3)  # 1: abort instead
        elif kind == "crash":
            detail = int(rng.random() < 0.7)  # 1: the leader, else broker `target`
        actions.append(Action(kind, target, detail))
    return actions


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

    def __init__(self, run: _Run) -> None:
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


class _Run:
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


# --- the invariants ------------------------------------------------------------------------------


class _Stored(NamedTuple):
    offset: int
    last_offset: int
    key: tuple[int, int, int]  # producer id, epoch, base sequence


def _log_batches(log: Any, up_to: int | None = None) -> list[_Stored]:
    """Every data batch with a producer id in ``log`` (below ``up_to``)."""
    stored = []
    offset = log.log_start_offset
    end = log.log_end_offset if up_to is None else up_to
    while offset < end:
        data = log.read(offset, 1 << 20, max_offset=end)
        if not data:
            break
        headers = scan_batches(data)
        for row in headers:
            base = int(row["base_offset"])
            if int(row["producer_id"]) >= 0 and not row["is_control"]:
                key = (int(row["producer_id"]), int(row["producer_epoch"]), int(row["base_sequence"]))
                stored.append(_Stored(base, base + int(row["last_offset_delta"]), key))
        offset = int(headers["base_offset"][-1]) + int(headers["last_offset_delta"][-1]) + 1
    return stored


def _rebuilt_table(log: Any) -> Any:
    """The producer table a replay of every batch of ``log`` from its start gives."""
    table = type(log.producer_state)(window=log.window)
    offset = log.log_start_offset
    table.update_map_end_offset(offset)
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        if not data:
            break
        append_batches(table, data, origin=Origin.REPLICATION, log_end_offset=offset)
        headers = scan_batches(data)
        offset = int(headers["base_offset"][-1]) + int(headers["last_offset_delta"][-1]) + 1
    table.update_map_end_offset(max(table.map_end_offset, log.log_end_offset))
    return table


def _batch_key(producer: IdempotentProducer, batch: ProducerBatch) -> tuple[int, int, int]:
    return (producer.producer_id, producer.producer_epoch, batch.base_sequence)


def check(run: _Run) -> list[str]:
    """The invariants of the module docstring; a list of violations (empty: the run is good)."""
    violations: list[str] = []
    cluster = run.cluster
    if cluster.leader_id is None:
        return ["no leader at the end of the run"]
    leader = cluster.leader_log
    committed = _log_batches(leader, leader.high_watermark)
    by_key: dict[tuple[int, int, int], list[_Stored]] = {}
    for stored in committed:
        by_key.setdefault(stored.key, []).append(stored)
    lost_ranges = [(loss.first_offset, loss.end_offset) for loss in cluster.data_loss]

    # 1, 6: acknowledged batches, exactly once, or reported lost.
    for instance in run.instances:
        producer = instance.producer
        for batch in producer.batches:
            if not batch.acknowledged:
                continue
            run.counts.acknowledged += 1
            run.counts.duplicates += int(batch.duplicate)
            found = by_key.get(_batch_key(producer, batch), [])
            reported = any(first <= batch.base_offset < end for first, end in lost_ranges)
            if len(found) > 1:
                violations.append(f"acknowledged batch {_batch_key(producer, batch)} is in the log {len(found)} times")
            elif not found or (found[0].offset, found[0].last_offset) != (batch.base_offset, batch.last_offset):
                if reported:
                    run.counts.lost_batches += 1
                else:
                    where = "missing" if not found else f"at {found[0].offset}-{found[0].last_offset}"
                    violations.append(
                        f"acknowledged batch {_batch_key(producer, batch)} at {batch.base_offset}-{batch.last_offset} "
                        f"is {where} in the committed log, and no unclean election reported it lost"
                    )
    if lost_ranges and not cluster.unclean_elections:
        violations.append(f"losses reported without an unclean election: {cluster.data_loss}")

    # 2: sequence order per producer id and epoch.
    last_sequence: dict[tuple[int, int], int] = {}
    for stored in committed:
        producer_key = stored.key[:2]
        if producer_key in last_sequence and stored.key[2] <= last_sequence[producer_key]:
            violations.append(f"producer {producer_key}: sequence {stored.key[2]} at offset {stored.offset} "
                              f"follows {last_sequence[producer_key]}")  # fmt: skip
        last_sequence[producer_key] = stored.key[2]

    for broker in cluster.brokers:
        log = broker.log
        if log is None:
            continue
        # 3: no batch twice in any replica's log.
        keys = Counter(stored.key for stored in _log_batches(log))
        for key, count in keys.items():
            if count > 1:
                violations.append(f"broker {broker.broker_id}: batch {key} is stored {count} times")
        # 4: the live table against a replay of the replica's own log.
        live = log.producer_state
        rebuilt = _rebuilt_table(log)
        for producer_id in sorted({*map(int, live.producer_ids()), *map(int, rebuilt.producer_ids())}):
            mine, replayed = live.entry(producer_id), rebuilt.entry(producer_id)
            if mine == replayed:
                continue
            if producer_id in run.expired_ids and (
                mine is None
                or (
                    replayed is not None
                    and replayed.batches[len(replayed.batches) - len(mine.batches) :] == mine.batches
                )  # fmt: skip
            ):
                continue
            skipped = run.skipped.get(broker.broker_id, set())
            if replayed is not None and any(
                start <= batch.last_offset < end
                for batch in replayed.batches
                if mine is None or batch not in mine.batches
                for start, end in skipped
            ):
                run.counts.kafka_shortcut += 1  # Kafka's own behaviour (spec §5.3 step 3), counted apart
                continue
            violations.append(f"broker {broker.broker_id}: producer {producer_id}'s entry {mine} differs from the "
                              f"one its log rebuilds, {replayed}")  # fmt: skip
        # 5: in-sync replicas agree with the leader up to the high watermark.
        if broker.broker_id in cluster.isr and broker.broker_id != cluster.leader_id:
            high_watermark = leader.high_watermark
            if log.log_end_offset >= high_watermark:
                mine_bytes = _read_all(log, high_watermark)
                if mine_bytes != _read_all(leader, high_watermark):
                    violations.append(f"in-sync broker {broker.broker_id} differs from the leader below the high "
                                      f"watermark {high_watermark}")  # fmt: skip
            else:
                violations.append(f"in-sync broker {broker.broker_id} ends at {log.log_end_offset}, below the high "
                                  f"watermark {high_watermark}")  # fmt: skip
    return violations


def _read_all(log: Any, end: int) -> list[tuple[int, int]]:
    """(base offset, CRC) of every batch below ``end``: what two replicas must agree on
    (the leader epoch field sits outside the CRC and is compared by the epoch cache)."""
    out = []
    offset = log.log_start_offset
    while offset < end:
        data = log.read(offset, 1 << 20, max_offset=end)
        if not data:
            break
        headers = scan_batches(data)
        out += list(zip(headers["base_offset"].tolist(), headers["crc"].tolist(), strict=True))
        offset = int(headers["base_offset"][-1]) + int(headers["last_offset_delta"][-1]) + 1
    return out


# --- runs ------------------------------------------------------------------------------------------


def _scratch() -> str:
    return tempfile.mkdtemp(prefix="dedup-sim-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


def execute(seed: int, settings: Settings, actions: Sequence[Action]) -> Outcome:
    """Run ``actions`` with ``seed``'s settings in a fresh directory and check the result."""
    directory = _scratch()
    try:
        run = _Run(seed, settings, actions, directory)
        try:
            run.execute()
            violations = check(run)
        except Exception as error:  # an exception escaping the cluster is a failure of the run
            violations = [f"exception: {error!r}"]
        finally:
            run.cluster.close()
        return Outcome(seed, settings, list(actions), violations, run.counts, run.trace)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run_seed(seed: int, *, unclean_share: float = 0.25, steps: int = STEPS) -> Outcome:
    """One run: the settings and actions that ``seed`` fixes (``steps`` of them; a share
    ``unclean_share`` of seeds allow unclean elections), executed and checked.
    ``TypeError``/``ValueError`` naming a bad argument, before anything runs."""
    seed = _args.integer("seed", seed, 0, (1 << 63) - 1, "in [0, 2^63-1]")
    steps = _args.integer("steps", steps, 0, (1 << 31) - 1, "in [0, 2^31-1]")
    if isinstance(unclean_share, bool) or not isinstance(unclean_share, int | float):
        raise TypeError(f"unclean_share must be a number in [0, 1], got {type(unclean_share).__name__}")
    if not 0.0 <= unclean_share <= 1.0:
        raise ValueError(f"unclean_share must be in [0, 1], got {unclean_share!r}")
    settings = settings_for(seed, unclean_share)
    return execute(seed, settings, plan(seed, settings, steps))


def shrink(outcome: Outcome, budget: int = 400) -> Outcome:
    """A shorter plan that still fails: actions dropped one at a time (last first) while the
    run keeps failing, at most ``budget`` re-runs."""
    best = outcome
    index = len(best.actions) - 1
    while index >= 0 and budget > 0:
        candidate = best.actions[:index] + best.actions[index + 1 :]
        budget -= 1
        trial = execute(best.seed, best.settings, candidate)
        if not trial.ok:
            best = trial
        index -= 1
    return best


@dataclass
class Summary:
    runs: int = 0
    failures: list[int] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    acknowledged: int = 0
    duplicates: int = 0
    losses: int = 0
    unclean_elections: int = 0
    kafka_shortcut: int = 0
    seconds: float = 0.0

    def add(self, outcome: Outcome) -> None:
        self.runs += 1
        if not outcome.ok:
            self.failures.append(outcome.seed)
        self.faults.update(outcome.counts.faults)
        self.acknowledged += outcome.counts.acknowledged
        self.duplicates += outcome.counts.duplicates
        self.losses += outcome.counts.lost_batches
        self.unclean_elections += outcome.counts.unclean_elections
        self.kafka_shortcut += outcome.counts.kafka_shortcut

    def line(self) -> str:
        return (
            f"{self.runs} runs, {len(self.failures)} failed; {sum(self.faults.values())} faults injected; "
            f"{self.acknowledged} batches acknowledged; {self.duplicates} retries recognised as duplicates; "
            f"{self.losses} acknowledged batches lost, all to {self.unclean_elections} reported unclean elections; "
            f"invariant violations: {len(self.failures)}; {self.kafka_shortcut} table entries left behind their log "
            f"by Kafka's rebuild shortcut (spec §5.3, counted apart); {self.seconds:.1f} s"
        )


def simulate(seeds: Sequence[int], *, unclean_share: float = 0.25, steps: int = STEPS,
             progress: bool = False) -> tuple[Summary, list[Outcome]]:  # fmt: skip
    summary = Summary()
    failed: list[Outcome] = []
    started = time.perf_counter()
    for count, seed in enumerate(seeds, 1):
        outcome = run_seed(seed, unclean_share=unclean_share, steps=steps)
        summary.add(outcome)
        if not outcome.ok:
            failed.append(outcome)
        if progress and count % 100 == 0:
            print(f"\r{count}/{len(seeds)} runs, {len(summary.failures)} failed", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    summary.seconds = time.perf_counter() - started
    return summary, failed


def report(outcome: Outcome) -> str:
    lines = [f"seed {outcome.seed} FAILED ({outcome.settings})", *[f"  violation: {v}" for v in outcome.violations]]
    lines.append(f"  minimal plan ({len(outcome.actions)} actions): {', '.join(map(str, outcome.actions))}")
    lines += [f"  {line}" for line in outcome.trace]
    return "\n".join(lines)


def quiet_logs() -> None:
    """The logs and the cluster warn at every crash, election and recovery: the trace says it."""
    for name in ("dedup.log", "dedup.cluster", "dedup.segment", "dedup.snapshot"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _chunk(args: tuple[list[int], float, int]) -> tuple[Summary, list[Outcome]]:
    seeds, unclean_share, steps = args
    quiet_logs()
    return simulate(seeds, unclean_share=unclean_share, steps=steps)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dedup simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--runs", type=int, default=1, help="runs, seeds SEED to SEED + RUNS - 1 (default 1)")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"actions per run (default {STEPS})")
    parser.add_argument(
        "--unclean-share",
        type=float,
        default=0.25,
        help="share of runs that allow unclean leader elections (default 0.25)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--trace", action="store_true", help="print the trace of every run (with --runs 1)")
    args = parser.parse_args(argv)
    quiet_logs()
    seeds = list(range(args.seed, args.seed + args.runs))
    if args.jobs > 1:
        import multiprocessing

        chunks = [(seeds[i :: args.jobs], args.unclean_share, args.steps) for i in range(args.jobs)]
        started = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
            parts = pool.map(_chunk, chunks)
        summary = Summary()
        failed: list[Outcome] = []
        for part, outcomes in parts:
            summary.runs += part.runs
            summary.failures += part.failures
            summary.faults.update(part.faults)
            summary.acknowledged += part.acknowledged
            summary.duplicates += part.duplicates
            summary.losses += part.losses
            summary.unclean_elections += part.unclean_elections
            summary.kafka_shortcut += part.kafka_shortcut
            failed += outcomes
        summary.seconds = time.perf_counter() - started
    else:
        summary, failed = simulate(seeds, unclean_share=args.unclean_share, steps=args.steps,
                                   progress=sys.stderr.isatty())  # fmt: skip
    if args.trace and args.runs == 1:
        outcome = run_seed(args.seed, unclean_share=args.unclean_share, steps=args.steps)
        print("\n".join(outcome.trace))
    for outcome in failed[:3]:
        print(report(shrink(outcome)))
    if summary.failures:
        print("failed seeds: " + " ".join(map(str, sorted(summary.failures))))
    print(summary.line())
    print("faults: " + ", ".join(f"{name} {count}" for name, count in sorted(summary.faults.items())))
    return 1 if failed else 0
