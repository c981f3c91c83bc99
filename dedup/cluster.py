"""One replicated partition across N in-process brokers: Kafka's replication on real logs.

Each :class:`Broker` that is a replica of the partition holds it in its own directory (a
:class:`~dedup.log.PartitionLog`), laid out as Kafka's ``log.dirs``:
``<directory>/broker-<b>/<topic>-<partition>``, so every partition of every topic can share one
``directory``. A :class:`Cluster` plays Kafka's controller and replica fetchers for the
partition, synchronously and deterministically:

- **Produce** (:meth:`Cluster.produce`): the leader appends (spec §3.2), the in-sync replicas
  fetch what they lack (``append_as_follower``, spec §3.4), the high watermark becomes the
  smallest log end offset in the in-sync replica set (ISR), and with ``acks=all`` the batch is
  acknowledged once the high watermark passes it. Fewer in-sync replicas than
  ``min_insync_replicas`` refuse the write first (NOT_ENOUGH_REPLICAS).
- **Failure** (:meth:`Cluster.stop_broker`): a stopped broker leaves the ISR at once (Kafka
  waits ``replica.lag.time.max.ms``). If it led, the controller elects the first live ISR
  member in assignment order, with a bumped leader epoch; the new leader keeps the table it
  built as a follower, so client retries are still recognised (spec §5.6). With no live ISR
  member the partition goes offline, unless ``unclean_leader_election`` allows any live
  replica: then acknowledged batches past its log end are lost, and the cluster reports the
  lost offsets (:attr:`Cluster.data_loss`), as Kafka's unclean election metric and log do.
- **Restart** (:meth:`Cluster.start_broker`): the broker reopens its directory (recovery,
  spec §5), truncates what diverges from the leader by leader epoch (KIP-101/279,
  spec §5.5), catches up and rejoins the ISR.
- **Producer ids** (:class:`TransactionCoordinator`): InitProducerId hands out unique ids;
  with a stable identity (Kafka's ``transactional.id``) the same id comes back with a bumped
  epoch, an ongoing transaction of the old instance is aborted with the new epoch, and the
  old instance is fenced (INVALID_PRODUCER_EPOCH at the partition, PRODUCER_FENCED at the
  coordinator).

Consumers read committed data with :meth:`Cluster.consume` (up to the high watermark;
``read_committed`` reads up to the last stable offset and drops the aborted transactions the
``.txnindex`` lists, as a Kafka consumer does with a fetch response's ``aborted_transactions``).
Every replica tracks its open transactions and aborted-transaction index from the batches it
holds (:class:`~dedup.log.PartitionLog`), so a new leader serves the same last stable offset
and aborted list as the old one.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from . import _args
from ._types import Origin
from .batch import Record, decode_records, encode_marker
from .checkpoints import _partition, _topic, partition_directory_name, read_checkpoint, write_checkpoint
from .cleaner import CleanerStats, clean_log
from .errors import (
    KafkaError,
    KafkaStorageError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderOrFollowerError,
    ProducerFencedError,
)
from .log import LogAppendInfo, PartitionLog
from .records import scan_batches

__all__ = ["Broker", "Cluster", "DataLoss", "ProduceResponse", "TransactionCoordinator"]

logger = logging.getLogger("dedup.cluster")

#: Kafka's replica.fetch.max.bytes default.
FETCH_MAX_BYTES = 1 << 20


class ProduceResponse(NamedTuple):
    """The partition's answer to one produce request (Kafka's PartitionResponse).

    ``error`` is None when the batch is acknowledged (``duplicate`` tells a retry answered
    with the original offsets), else the Kafka error the client sees (``error.code``).
    """

    error: KafkaError | None
    base_offset: int
    last_offset: int
    duplicate: bool
    leader_id: int | None
    leader_epoch: int

    @property
    def error_code(self) -> int:
        return 0 if self.error is None else self.error.code


class DataLoss(NamedTuple):
    """Acknowledged offsets ``[first_offset, end_offset)`` lost by an unclean election."""

    leader_epoch: int
    new_leader_id: int
    first_offset: int
    end_offset: int


class Broker:
    """One broker's replica of the partition, in ``directory``."""

    def __init__(self, broker_id: int, directory: str, log_options: dict[str, Any]) -> None:
        self.broker_id = broker_id
        self.directory = directory
        self._log_options = log_options
        self.log: PartitionLog | None = None
        self.start()

    @property
    def alive(self) -> bool:
        """Whether the replica serves: its broker runs and its log is not offline."""
        return self.log is not None and not self.log.offline

    @property
    def offline(self) -> bool:
        """Whether the broker runs but a failed write took its log offline (Kafka's offline
        log directory): the replica serves nothing until the broker restarts."""
        return self.log is not None and self.log.offline

    def start(self) -> PartitionLog:
        """Open the replica's directory (recovering it; an offline log is closed and
        reopened, as a broker restarting with its log directory back); returns the log."""
        if self.log is not None and self.log.offline:
            self.log.close()
            self.log = None
        if self.log is None:
            self.log = PartitionLog(self.directory, **self._log_options)
        return self.log

    def stop(self, *, clean: bool = False) -> None:
        """A controlled shutdown (``clean``: flush, snapshot, clean-shutdown marker) or a crash
        (the files are left as they are)."""
        log, self.log = self.log, None
        if log is not None:
            if clean:
                log.close()  # KafkaStorageError on a full disk: the files are released all the same
            else:
                log.close_uncleanly()

    def __repr__(self) -> str:
        state = "down" if self.log is None else f"log_end_offset={self.log.log_end_offset}"
        return f"<Broker {self.broker_id} {state}>"


class Cluster:
    """Partition ``partition`` of topic ``topic``, replicated on the brokers ``replicas`` (ids
    in ``[0, brokers)``, in assignment order; default: every broker, ``0..brokers-1``) under
    ``directory`` (``<directory>/broker-<id>/<topic>-<partition>``). The first replica (Kafka's
    preferred replica) leads a new partition, in leader epoch 0; :attr:`brokers` lists the
    replicas in assignment order (with the default ``replicas``, ``brokers[b]`` is broker
    ``b``; :meth:`broker` finds one by id). Opening the directories of an existing cluster
    recovers every replica and continues.

    The controller's record of the partition's latest leader epoch is
    ``<directory>/controller-leader-epoch-<topic>-<partition>`` (a name no replica directory
    takes: those are under ``broker-<b>/``); a partition 0 also reads the single-partition
    clusters' older ``<directory>/controller-leader-epoch``, so their directories reopen.

    ``min_insync_replicas`` (Kafka's ``min.insync.replicas``, here 2 by default as in most
    production setups), ``unclean_leader_election`` (``unclean.leader.election.enable``,
    off), ``clock`` (broker time in ms), ``on_marker`` (called after every transaction marker
    written: the server wakes its waiting fetches) and the :class:`~dedup.log.PartitionLog` options
    (``window``, ``segment_bytes``, ``snapshot_format``, ``producer_id_expiration_ms``,
    ``fsync``, ``max_producers``, ``table_class``) apply to every broker.
    """

    def __init__(
        self,
        directory: Any,
        *,
        brokers: int = 3,
        topic: str = "clicks",
        partition: int = 0,
        replicas: Iterable[int] | None = None,
        min_insync_replicas: int = 2,
        unclean_leader_election: bool = False,
        clock: Callable[[], int] | None = None,
        on_marker: Callable[[], None] | None = None,
        **log_options: Any,
    ) -> None:
        count = _args.integer("brokers", brokers, 1, 64, "between 1 and 64")
        #: Called after each marker is written and replicated: the last stable offset may have
        #: moved, so waiting read_committed fetches are due an answer (Kafka's ReplicaManager
        #: completes delayed fetches after appending markers).
        self.on_marker = None if on_marker is None else _args.function("on_marker", on_marker, "a callable")
        self.min_insync_replicas = _args.integer("min_insync_replicas", min_insync_replicas, 1, count, "1..brokers")
        self.unclean_leader_election = _args.flag("unclean_leader_election", unclean_leader_election)
        self.topic = _topic(topic)  # it names the replicas' directories
        self.partition = _partition(partition)
        self.replicas: list[int] = _replicas(replicas, count)
        #: ``<topic>-<partition>``, as Kafka's TopicPartition prints.
        self.name = partition_directory_name(self.topic, self.partition)
        self.directory: str = os.path.abspath(os.fsdecode(_args.path("directory", directory)))
        if clock is not None:
            log_options["clock"] = _args.function("clock", clock, "a callable returning milliseconds")
        self.broker_count = count
        self.brokers = [
            Broker(broker_id, os.path.join(self.directory, f"broker-{broker_id}", self.name), log_options)
            for broker_id in self.replicas
        ]
        self._by_id = {broker.broker_id: broker for broker in self.brokers}
        # The preferred replica leads a new partition; reopened directories are led by the
        # replica with the newest epoch and the most data, ties to assignment order (Kafka's
        # controller would pick from the ISR it kept in its metadata: with clean elections
        # that replica is in it).
        def newest(position: int) -> tuple[int, int, int]:
            log = self.brokers[position].log
            assert log is not None
            return (log.latest_epoch or 0, log.log_end_offset, -position)

        self.leader_id: int | None = self.brokers[max(range(len(self.brokers)), key=newest)].broker_id
        self.leader_epoch = 0
        self.isr: set[int] = set(self.replicas)
        self.data_loss: list[DataLoss] = []
        self.elections = 0
        self.unclean_elections = 0
        self.coordinator = TransactionCoordinator(self)
        # Reopening a cluster's directories: the controller's first election bumps the newest
        # epoch it recorded (Kafka keeps it in the cluster metadata) or any replica has seen.
        epochs = [b.log.latest_epoch for b in self.brokers if b.log is not None and b.log.latest_epoch is not None]
        recorded = read_checkpoint(self._controller_file, 0, int)
        if self.partition == 0:  # a single-partition cluster's directory, from before partitions
            recorded += read_checkpoint(os.path.join(self.directory, "controller-leader-epoch"), 0, int)
        if epochs or recorded:
            self.leader_epoch = max(epochs + recorded) + 1
        self._record_leader_epoch()
        #: The highest high watermark the leader has reached: what has been acknowledged.
        self.committed_offset = self.leader_log.high_watermark
        self.leader_log.assign_leader_epoch(self.leader_epoch)
        self._catch_up_all()

    # -- state -----------------------------------------------------------------------------------

    @property
    def _controller_file(self) -> str:
        return os.path.join(self.directory, f"controller-leader-epoch-{self.name}")

    def _record_leader_epoch(self) -> None:
        write_checkpoint(self._controller_file, 0, [str(self.leader_epoch)])

    def broker(self, broker_id: int) -> Broker:
        """The replica on broker ``broker_id``; ``KeyError`` if the broker holds none."""
        return self._by_id[broker_id]

    @property
    def leader(self) -> Broker | None:
        return None if self.leader_id is None else self._by_id[self.leader_id]

    @property
    def leader_log(self) -> PartitionLog:
        """The leader's log; ``NotLeaderOrFollowerError`` when the partition has no leader."""
        leader = self.leader
        if leader is None or leader.log is None:
            raise NotLeaderOrFollowerError(f"partition {self.name} has no leader (offline)")
        return leader.log

    @property
    def high_watermark(self) -> int:
        return self.leader_log.high_watermark

    def __repr__(self) -> str:
        return (
            f"<Cluster {self.name} replicas={self.replicas} leader={self.leader_id} epoch={self.leader_epoch} "
            f"isr={sorted(self.isr)} brokers={self.brokers}>"
        )

    # -- produce ---------------------------------------------------------------------------------

    def produce(self, records: Any, *, acks: str = "all") -> ProduceResponse:
        """A produce request for the partition: :meth:`append_to_leader`, then replication,
        then the acknowledgement (``acks="all"``: once every in-sync replica has the batch;
        ``"1"``: once the leader has it). A leader whose write fails (KAFKA_STORAGE_ERROR: its
        log went offline) gives the partition up: :meth:`replica_failed`."""
        response = self.append_to_leader(records, acks=acks)
        if response.error is not None:
            leader = self.leader
            if isinstance(response.error, KafkaStorageError) and leader is not None and leader.offline:
                self.replica_failed(leader.broker_id)  # KAFKA_STORAGE_ERROR, and another replica leads
            return response
        self.replicate()
        if acks == "all" and self.high_watermark <= response.last_offset:
            error = NotEnoughReplicasAfterAppendError(
                f"offset {response.last_offset} is on the leader but not yet on every in-sync replica"
            )
            return response._replace(error=error)
        return response

    def append_to_leader(self, records: Any, *, acks: str = "all") -> ProduceResponse:
        """The leader's half of a produce request: the append, no replication yet (what a
        leader that fails right after writing leaves behind). Errors come back in the
        response, as on the wire."""
        if acks not in ("all", "1"):
            raise ValueError(f"acks must be 'all' or '1', got {acks!r}")
        try:
            log = self.leader_log
            if acks == "all" and len(self.isr) < self.min_insync_replicas:
                raise NotEnoughReplicasError(
                    f"{len(self.isr)} in-sync replicas {sorted(self.isr)}, min.insync.replicas is "
                    f"{self.min_insync_replicas}"
                )
            info: LogAppendInfo = log.append_as_leader(records, leader_epoch=self.leader_epoch)
        except KafkaError as error:
            return ProduceResponse(error, -1, -1, False, self.leader_id, self.leader_epoch)
        return ProduceResponse(
            None, info.base_offset, info.last_offset, info.duplicate, self.leader_id, self.leader_epoch
        )

    def write_marker(self, producer_id: int, producer_epoch: int, *, commit: bool, coordinator_epoch: int) -> int:
        """WriteTxnMarkers for the partition: a COMMIT or ABORT control batch written by the
        leader with origin COORDINATOR (spec §2.2) and replicated. Returns its offset."""
        marker = encode_marker(
            producer_id=producer_id,
            producer_epoch=producer_epoch,
            commit=commit,
            coordinator_epoch=coordinator_epoch,
            timestamp=self._now(),
        )
        info = self.leader_log.append_as_leader(marker, leader_epoch=self.leader_epoch, origin=Origin.COORDINATOR)
        self.replicate()
        if self.on_marker is not None:
            self.on_marker()
        return info.base_offset

    @property
    def last_stable_offset(self) -> int:
        """The leader's last stable offset (:attr:`dedup.log.PartitionLog.last_stable_offset`)."""
        return self.leader_log.last_stable_offset

    def _now(self) -> int:
        return self.leader_log._clock()

    # -- replication -----------------------------------------------------------------------------

    def replicate(self) -> None:
        """Every live follower fetches from the leader until it has the leader's log end (a
        follower at the start of the leader's last append takes the leader's own bytes, which
        the leader validated in this process, and updates its producer state from their scan
        without scanning and CRC-checking them again: ``append_as_follower(..., scanned=...)``);
        a follower that catches up rejoins the ISR; then the high watermark moves to the
        smallest log end offset in the ISR and followers learn it (as from a fetch response)."""
        leader = self.leader_log
        fetched: dict[int, bytes] = {}  # the round's first read of the leader, for followers at the same offset
        appended = leader.take_leader_append()
        appended_at = -1 if appended is None else appended[0]
        scanned = None  # the leader's bytes scanned once, at the first follower that takes them
        for broker in self.brokers:
            if broker.broker_id == self.leader_id or broker.log is None or broker.log.offline:
                continue
            try:
                if appended is not None and broker.log.log_end_offset == appended_at:
                    # The leader's own validated bytes, in this process: no re-scan, no CRC.
                    if scanned is None:
                        scanned = scan_batches(appended[1])
                    broker.log.append_as_follower(appended[1], scanned=scanned)
                self._fetch_until_caught_up(broker.log, leader, fetched)
            except KafkaStorageError:
                self.replica_failed(broker.broker_id)
                continue
            if broker.log.log_end_offset == leader.log_end_offset:
                self.isr.add(broker.broker_id)
        ends = [log.log_end_offset for member in self.isr if (log := self._by_id[member].log) is not None]
        high_watermark = leader.update_high_watermark(max(min(ends), leader.high_watermark))
        self.committed_offset = max(self.committed_offset, high_watermark)
        for broker in self.brokers:
            if broker.alive and broker.log is not None and broker.broker_id != self.leader_id:
                broker.log.update_high_watermark(min(high_watermark, broker.log.log_end_offset))

    @staticmethod
    def _fetch_until_caught_up(follower: PartitionLog, leader: PartitionLog, fetched: dict[int, bytes]) -> None:
        """``follower`` fetches from ``leader`` until it has its log end, each read fully
        validated by the follower as from another broker. ``fetched`` keeps the first read of
        the replication round by offset (at most one, FETCH_MAX_BYTES): followers at the same
        offset read the leader's file once."""
        while follower.log_end_offset < leader.log_end_offset:
            offset = follower.log_end_offset
            data = fetched.get(offset)
            if data is None:
                data = leader.read(offset, FETCH_MAX_BYTES)
                if not fetched:
                    fetched[offset] = data
            if not data:  # pragma: no cover - a gap the leader cannot serve
                break
            follower.append_as_follower(data)

    def _truncate_divergent(self, follower: PartitionLog, leader: PartitionLog) -> int:
        """KIP-279, as Kafka's AbstractFetcherThread.getOffsetTruncationState does it: the
        follower asks the leader where its latest epoch ends. If the leader answers with an
        epoch the follower also has, the follower truncates to the smaller of the two ends of
        that epoch and is done. If the follower does not have the leader's epoch, it truncates
        to the end of its own largest epoch below it and asks again (several rounds after
        several unclean elections: one round would keep a divergent older epoch). A leader
        that knows no epoch at all, or a follower without epochs, truncates to the
        follower's high watermark. Returns the offset truncated to."""
        while True:
            latest = follower.latest_epoch
            if latest is None:  # no epochs to compare (an empty replica): Kafka's old rule, the high watermark
                target = follower.high_watermark
                break
            epoch, leader_end = leader.end_offset_for_epoch(latest)
            if epoch == -1:
                target = follower.high_watermark
                break
            follower_epoch, follower_end = follower.end_offset_for_epoch(epoch)
            if follower_end == -1:  # the follower has no epoch to match: Kafka trusts the leader's end
                target = min(leader_end, follower.log_end_offset)
                break
            if follower_epoch == epoch:
                target = min(follower_end, leader_end, follower.log_end_offset)
                break
            # The follower never had the leader's epoch: back to where its own largest epoch
            # below it ends, then ask again with the epoch that is now its latest.
            intermediate = min(follower_end, follower.log_end_offset)
            if intermediate < follower.log_end_offset:
                follower.truncate_to(intermediate)
            else:  # only epochs without batches past it (led, nothing written): they go too
                follower.leader_epochs.truncate_from_end(intermediate)
            if follower.latest_epoch == latest:  # pragma: no cover - every round drops an epoch
                raise AssertionError(f"KIP-279 truncation made no progress at epoch {latest}")
        target = min(target, leader.log_end_offset)
        follower.truncate_to(target)
        return target

    def _catch_up_all(self) -> None:
        leader = self.leader_log
        for broker in self.brokers:
            if broker.alive and broker.log is not None and broker.broker_id != self.leader_id:
                try:
                    self._truncate_divergent(broker.log, leader)
                except KafkaStorageError:
                    self.replica_failed(broker.broker_id)
        self.replicate()

    # -- failures --------------------------------------------------------------------------------

    def _broker_id(self, value: Any) -> int:
        """A broker id of this cluster that holds a replica of the partition: ``ValueError``
        for one outside ``[0, brokers)`` (a negative one would index from the end) or one
        that holds no replica (the server calls only the partition's replicas)."""
        last = self.broker_count - 1
        broker_id = _args.integer("broker_id", value, 0, last, f"in [0, {last}]")
        if broker_id not in self._by_id:
            raise ValueError(f"broker_id: broker {broker_id} holds no replica of {self.name} ({self.replicas})")
        return broker_id

    def stop_broker(self, broker_id: int, *, clean: bool = False) -> None:
        """Stop a broker (a crash unless ``clean``); it leaves the ISR (unless it is the last
        member: then the partition waits for it, offline), and if it led, a new leader is
        elected. ``ValueError`` for a broker that holds no replica of the partition."""
        broker_id = self._broker_id(broker_id)
        broker = self._by_id[broker_id]
        broker.stop(clean=_args.flag("clean", clean))
        if self.isr != {broker_id}:  # Kafka never empties the ISR: the last member stays, down
            self.isr.discard(broker_id)
        if broker_id == self.leader_id:
            self.elect_leader()

    def replica_failed(self, broker_id: int) -> None:
        """A write to broker ``broker_id``'s replica failed and took its log offline (Kafka's
        LogDirFailureChannel, then the controller's handling of the offline replica): it
        leaves the ISR (unless it is the last member: then the partition waits for it,
        offline), and if it led, a live in-sync replica is elected leader. The broker keeps
        running; the replica comes back when it restarts (:meth:`start_broker`), through
        recovery."""
        logger.error("%s: the replica on broker %d is offline (a failed write)", self.name, broker_id)
        if self.isr != {broker_id}:
            self.isr.discard(broker_id)
        if broker_id == self.leader_id:
            self.elect_leader()

    def start_broker(self, broker_id: int) -> PartitionLog:
        """Restart a broker: recovery from its directory, then (if there is a leader) the
        truncation of what diverges and the catch-up; a partition without a leader gets it
        as leader if it is eligible. Returns its log (``log.load_report`` says what recovery
        did). ``ValueError`` for a broker that holds no replica of the partition."""
        broker_id = self._broker_id(broker_id)
        broker = self._by_id[broker_id]
        log = broker.start()
        if self.leader_id is None:
            self.elect_leader()
        elif broker_id != self.leader_id:
            self._truncate_divergent(log, self.leader_log)
            self.replicate()
        return log

    def elect_leader(self) -> int | None:
        """The controller's election: the first live ISR member (assignment order); with no
        live ISR member, the first live replica if unclean elections are allowed (reporting
        the acknowledged offsets it lacks), else no leader. The leader epoch is bumped."""
        candidates = [b for b in self.brokers if b.alive and b.broker_id in self.isr]
        unclean = False
        if not candidates and self.unclean_leader_election:
            candidates = [b for b in self.brokers if b.alive]
            unclean = bool(candidates)
        if not candidates:
            self.leader_id = None
            logger.warning("partition %s is offline: no live in-sync replica", self.name)
            return None
        new = candidates[0]
        assert new.log is not None
        try:
            new.log.assign_leader_epoch(self.leader_epoch + 1)
        except KafkaStorageError:  # its disk is full too: the next candidate
            if self.isr != {new.broker_id}:
                self.isr.discard(new.broker_id)
            return self.elect_leader()
        self.leader_epoch += 1
        self._record_leader_epoch()
        self.elections += 1
        self.leader_id = new.broker_id
        if unclean:
            self.unclean_elections += 1
            self.isr = {new.broker_id}
            if new.log.log_end_offset < self.committed_offset:
                loss = DataLoss(self.leader_epoch, new.broker_id, new.log.log_end_offset, self.committed_offset)
                self.data_loss.append(loss)
                logger.warning(
                    "%s: unclean leader election of broker %d in epoch %d: acknowledged offsets [%d, %d) are lost",
                    self.name,
                    new.broker_id,
                    self.leader_epoch,
                    loss.first_offset,
                    loss.end_offset,
                )
                self.committed_offset = new.log.log_end_offset
        self._catch_up_all()
        return new.broker_id

    def clean(self, **options: Any) -> list[CleanerStats | None]:
        """Kafka's log cleaner on the partition (``cleanup.policy=compact``): every live replica
        cleans its own log (:func:`dedup.cleaner.clean_log` with ``options``), as each Kafka
        broker's LogCleaner cleans the logs it holds; what each pass did, in replica order
        (None for a replica down or with nothing to clean). A replica cleans only below its own
        high watermark, so a follower never loses what it has not yet reported to the leader."""
        return [clean_log(b.log, **options) if b.alive and b.log is not None else None for b in self.brokers]

    def close(self) -> None:
        """Shut every live broker down cleanly; a replica whose close fails (a full disk:
        ``KafkaStorageError``, no clean-shutdown marker) does not keep the others open: the
        first failure is raised once every broker is closed."""
        failures: list[KafkaStorageError] = []
        for broker in self.brokers:
            try:
                broker.stop(clean=True)
            except KafkaStorageError as error:
                failures.append(error)
        if failures:
            raise failures[0]

    def delete(self) -> None:
        """Kafka's topic deletion for this partition: every replica stops and its directory is
        removed from its broker, and the controller's leader-epoch record goes too."""
        for broker in self.brokers:
            broker.stop(clean=False)
            shutil.rmtree(broker.directory, ignore_errors=True)
        try:
            os.unlink(self._controller_file)
        except FileNotFoundError:
            pass

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- consuming -------------------------------------------------------------------------------

    def consume(self, *, isolation: str = "read_uncommitted", from_offset: int | None = None) -> list[Record]:
        """Every record from the leader (``from_offset`` defaults to the log start), as a
        Kafka consumer reads it: ``read_uncommitted`` up to the high watermark, every data
        record; ``read_committed`` (Kafka's isolation level) up to the last stable offset,
        without the records of the aborted transactions the ``.txnindex`` lists for the range
        read (a fetch response's ``aborted_transactions``). Control records are never
        returned."""
        if isolation not in ("read_uncommitted", "read_committed"):
            raise ValueError(f"isolation must be 'read_uncommitted' or 'read_committed', got {isolation!r}")
        log = self.leader_log
        offset = log.log_start_offset if from_offset is None else from_offset
        committed = isolation == "read_committed"
        end = log.last_stable_offset if committed else log.high_watermark
        out: list[Record] = []
        aborted: list[tuple[int, int]] = []  # (first offset, producer id) not yet reached, ascending
        if committed and offset < end:
            listed = log.collect_aborted_transactions(offset, end)
            aborted = sorted((txn.first_offset, txn.producer_id) for txn in listed)
        skipping: set[int] = set()  # producers whose aborted transaction the reader is inside
        while offset < end:
            chunk = log.read(offset, FETCH_MAX_BYTES, max_offset=end)
            if not chunk:
                break
            headers = scan_batches(chunk)
            for header in headers:
                start = int(header["position"])
                batch = memoryview(chunk)[start : start + int(header["batch_length"]) + 12]
                producer_id = int(header["producer_id"])
                # Kafka's consumer (Fetcher's CompletedFetch): an aborted transaction's
                # producer is skipped from its first offset to its ABORT marker.
                last_offset = int(header["base_offset"]) + int(header["last_offset_delta"])
                while aborted and aborted[0][0] <= last_offset:
                    skipping.add(aborted.pop(0)[1])
                if header["is_control"]:
                    if not _is_commit(batch):
                        skipping.discard(producer_id)
                    continue
                if header["is_transactional"] and producer_id in skipping:
                    continue
                out.extend(decode_records(batch))
            offset = int(headers["base_offset"][-1]) + int(headers["last_offset_delta"][-1]) + 1
        return [record for record in out if record.offset < end]


def _replicas(value: Any, brokers: int) -> list[int]:
    """Distinct broker ids in ``[0, brokers)``, at least one, in assignment order (default:
    every broker)."""
    if value is None:
        return list(range(brokers))
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"replicas must be an iterable of broker ids or None, got {type(value).__name__}")
    ids = [
        _args.integer(f"replicas[{i}]", broker_id, 0, brokers - 1, f"a broker id in [0, {brokers - 1}]")
        for i, broker_id in enumerate(value)
    ]
    if not ids or len(set(ids)) != len(ids):
        raise ValueError(f"replicas: one or more distinct broker ids, got {ids!r}")
    return ids


def _is_commit(control_batch: Any) -> bool:
    """Whether a control batch is a COMMIT marker (its first record's key: version, type 1)."""
    records = decode_records(control_batch, control=True)
    key = records[0].key if records else None
    return key is not None and len(key) >= 4 and int.from_bytes(key[2:4], "big") == 1


class TransactionCoordinator:
    """Kafka's InitProducerId and EndTxn for one partition (the transaction coordinator and
    the producer-id manager in one).

    :meth:`init_producer_id` without ``transactional_id`` hands out a new producer id, epoch
    0 (an idempotent producer: every restart gets a new id, and its old batches are no longer
    recognised). With a ``transactional_id`` (a stable identity) the id stays and the epoch
    goes up by one; if the previous instance left a transaction open, it is aborted with the
    new epoch, which fences the old instance at the partition.
    """

    def __init__(self, cluster: Cluster, first_producer_id: int = 1000) -> None:
        self._cluster = cluster
        self._next_producer_id = first_producer_id
        self._identities: dict[str, tuple[int, int]] = {}
        self._open: set[str] = set()
        self.coordinator_epoch = 0

    def init_producer_id(self, transactional_id: str | None = None) -> tuple[int, int]:
        """InitProducerId: ``(producer_id, producer_epoch)``."""
        if transactional_id is None:
            return self._new_producer_id(), 0
        if transactional_id not in self._identities:
            identity = (self._new_producer_id(), 0)
        else:
            producer_id, epoch = self._identities[transactional_id]
            identity = (self._new_producer_id(), 0) if epoch >= 32766 else (producer_id, epoch + 1)
            if transactional_id in self._open:
                # Kafka aborts the old instance's transaction with the bumped epoch: the marker
                # raises the partition's epoch for this id, fencing the old instance there.
                self._cluster.write_marker(*identity, commit=False, coordinator_epoch=self.coordinator_epoch)
                self._open.discard(transactional_id)
        self._identities[transactional_id] = identity
        return identity

    def _new_producer_id(self) -> int:
        producer_id = self._next_producer_id
        self._next_producer_id += 1
        return producer_id

    def begin(self, transactional_id: str, producer_id: int, producer_epoch: int) -> None:
        """AddPartitionsToTxn: the instance starts a transaction on the partition."""
        self._check_current(transactional_id, producer_id, producer_epoch)
        self._open.add(transactional_id)

    def end_transaction(self, transactional_id: str, producer_id: int, producer_epoch: int, *, commit: bool) -> int:
        """EndTxn: write the COMMIT or ABORT marker; PRODUCER_FENCED for an old instance.
        Returns the marker's offset."""
        self._check_current(transactional_id, producer_id, producer_epoch)
        offset = self._cluster.write_marker(
            producer_id, producer_epoch, commit=commit, coordinator_epoch=self.coordinator_epoch
        )
        self._open.discard(transactional_id)
        return offset

    def _check_current(self, transactional_id: str, producer_id: int, producer_epoch: int) -> None:
        if self._identities.get(transactional_id) != (producer_id, producer_epoch):
            raise ProducerFencedError(
                f"transactional id {transactional_id!r}: producer {producer_id} epoch {producer_epoch} is fenced by "
                f"{self._identities.get(transactional_id)}"
            )


def records_by_value(records: Iterable[Record]) -> dict[bytes | None, int]:
    """How many times each value occurs (what "exactly once" is checked with)."""
    counts: dict[bytes | None, int] = {}
    for record in records:
        counts[record.value] = counts.get(record.value, 0) + 1
    return counts
