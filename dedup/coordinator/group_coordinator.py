"""Kafka's group coordinator for the classic protocol, over plain Python values.

Follows Kafka's ``GroupCoordinator.scala`` (``kafka.coordinator.group``, Kafka 2.x-3.x) and its
successor ``GroupMetadataManager.java`` (classic groups) in ``group-coordinator``: JoinGroup and
SyncGroup wait (Kafka's purgatory: here asyncio futures), timers (session expiry, the
rebalance timeout, ``group.initial.rebalance.delay.ms``) run on a :class:`Timer` (the event
loop's, or a :class:`ManualTimer` in tests), and every change a client must be able to rely on
(committed offsets, a generation's assignment) is appended to the group's ``__consumer_offsets``
partition through its leader with ``acks=all`` before it is acknowledged.

A group's coordinator is the leader of ``__consumer_offsets`` partition
:func:`partition_for` ``(group_id)``; when that partition's leader changes (a broker stopped,
restarted), its groups are unloaded and loaded again from the new leader's log (Kafka's
``onResignation``/``onElection`` and ``loadGroupsForPartition``), and the old broker answers
NOT_COORDINATOR.

Not done here: compaction of the offsets log (it only grows; a reload replays it all), and
transactional offset commits (TxnOffsetCommit).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kio.schema.errors import ErrorCode

from ..batch import encode_batch
from ..cluster import Cluster
from ..errors import KafkaError
from .group import GroupMetadata, GroupState, MemberMetadata
from .offsets import (
    CorruptOffsetsRecord,
    GroupMetadataValue,
    MemberMetadataValue,
    OffsetCommitValue,
    decode_group_metadata_value,
    decode_key,
    decode_offset_commit_value,
    encode_group_metadata_key,
    encode_group_metadata_value,
    encode_offset_commit_key,
    encode_offset_commit_value,
)

__all__ = [
    "GroupCoordinator",
    "JoinResult",
    "ManualTimer",
    "OFFSETS_TOPIC",
    "OffsetsStorage",
    "SyncResult",
    "java_string_hash",
    "partition_for",
]

logger = logging.getLogger("dedup.coordinator")

OFFSETS_TOPIC = "__consumer_offsets"
#: Kafka's ``offset.metadata.max.bytes`` default.
OFFSET_METADATA_MAX_BYTES = 4096
#: The largest protocol metadata (all of a member's protocols together) or assignment a
#: member may send: Kafka's ``message.max.bytes`` (1 MiB + 12), since a group's metadata record
#: holding more could never be stored. Kafka itself accepts the JoinGroup and fails at the
#: store; dedup refuses it up front with INVALID_REQUEST, so a hostile member cannot make the
#: coordinator hold more than this per member.
MAX_MEMBER_METADATA_BYTES = 1048588
#: Kafka's JoinGroupRequest.UNKNOWN_MEMBER_ID and UNKNOWN_GENERATION_ID.
UNKNOWN_MEMBER_ID = ""
NO_GENERATION = -1


def java_string_hash(value: str) -> int:
    """Java's ``String.hashCode``: ``s[0]*31^(n-1) + ... + s[n-1]`` over UTF-16 code units, as a
    signed 32-bit int."""
    data = value.encode("utf-16-be", "surrogatepass")
    result = 0
    for index in range(0, len(data), 2):
        result = (result * 31 + ((data[index] << 8) | data[index + 1])) & 0xFFFFFFFF
    return result - (1 << 32) if result >= 1 << 31 else result


def partition_for(group_id: str, num_partitions: int) -> int:
    """Kafka's ``Utils.abs(groupId.hashCode) % numPartitions`` (GroupMetadataManager.partitionFor);
    ``Utils.abs`` maps Integer.MIN_VALUE to 0, where ``Math.abs`` would leave it negative."""
    code = java_string_hash(group_id)
    return (0 if code == -(1 << 31) else abs(code)) % num_partitions


# --- timers -------------------------------------------------------------------------------------


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Timer(Protocol):
    """Runs ``callback()`` after ``delay_ms`` unless the handle is cancelled first."""

    def schedule(self, delay_ms: int, callback: Callable[[], None]) -> TimerHandle: ...


class AsyncioTimer:
    """The server's event loop's ``call_later``: the running loop, or (while a KafkaServer is
    built, before its loop runs: groups reloaded at start) the thread's current loop."""

    def schedule(self, delay_ms: int, callback: Callable[[], None]) -> TimerHandle:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        return loop.call_later(max(delay_ms, 0) / 1000, callback)


class _ManualHandle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualTimer:
    """A clock and timer the test moves by hand (Kafka's MockTime and MockTimer): ``now()``
    is the clock; :meth:`advance` runs, in deadline order, every callback that falls due."""

    def __init__(self, start_ms: int = 1_000_000) -> None:
        self.now_ms = start_ms
        self._queue: list[tuple[int, int, _ManualHandle, Callable[[], None]]] = []
        self._sequence = itertools.count()

    def now(self) -> int:
        return self.now_ms

    def schedule(self, delay_ms: int, callback: Callable[[], None]) -> TimerHandle:
        handle = _ManualHandle()
        heapq.heappush(self._queue, (self.now_ms + max(delay_ms, 0), next(self._sequence), handle, callback))
        return handle

    def advance(self, ms: int) -> None:
        until = self.now_ms + ms
        while self._queue and self._queue[0][0] <= until:
            deadline, _, handle, callback = heapq.heappop(self._queue)
            self.now_ms = max(self.now_ms, deadline)
            if not handle.cancelled:
                callback()
        self.now_ms = until


# --- the offsets topic --------------------------------------------------------------------------


class OffsetsStorage(Protocol):
    """Where the coordinator keeps its records: the partitions of ``__consumer_offsets``
    (:class:`dedup.server.topics.OffsetsTopic` over the broker's topics)."""

    num_partitions: int

    def created(self) -> list[int]:
        """The partitions that exist (none before the topic is created)."""
        ...

    def partition(self, partition: int) -> Cluster | None:
        """Partition ``partition``, the topic created first if need be; None if it cannot be."""
        ...

    def leader(self, partition: int) -> int | None: ...


# --- results ------------------------------------------------------------------------------------


@dataclass
class JoinResult:
    error: ErrorCode
    member_id: str = UNKNOWN_MEMBER_ID
    generation_id: int = NO_GENERATION
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str = ""
    members: list[tuple[str, str | None, bytes]] = field(default_factory=list)


@dataclass
class SyncResult:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass
class CommittedOffset:
    topic: str
    partition: int
    offset: int
    leader_epoch: int
    metadata: str
    error: ErrorCode


def _resolved(value: Any) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


def _complete(future: asyncio.Future[Any] | None, value: Any) -> None:
    if future is not None and not future.done():
        future.set_result(value)


# Kafka's GroupMetadataManager maps a failed append of the offsets partition to these codes.
_APPEND_ERRORS = {
    ErrorCode.unknown_topic_or_partition: ErrorCode.coordinator_not_available,
    ErrorCode.not_enough_replicas: ErrorCode.coordinator_not_available,
    ErrorCode.not_enough_replicas_after_append: ErrorCode.coordinator_not_available,
    ErrorCode.request_timed_out: ErrorCode.coordinator_not_available,
    ErrorCode.not_leader_or_follower: ErrorCode.not_coordinator,
    ErrorCode.kafka_storage_error: ErrorCode.not_coordinator,
    ErrorCode.message_too_large: ErrorCode.invalid_commit_offset_size,
    ErrorCode.record_list_too_large: ErrorCode.invalid_commit_offset_size,
    ErrorCode.invalid_fetch_size: ErrorCode.invalid_commit_offset_size,
}


class GroupCoordinator:
    """Every classic group whose ``__consumer_offsets`` partition is led by a live broker.

    Requests name the broker they came to: the group's coordinator is the leader of its
    offsets partition, and any other broker answers NOT_COORDINATOR. ``clock`` (ms) and
    ``timer`` default to wall time and the running event loop; a :class:`ManualTimer` gives
    both to a test. Options are the broker settings of Kafka's name (``group.*``,
    ``offsets.*``) in snake case.
    """

    def __init__(
        self,
        offsets: OffsetsStorage,
        *,
        clock: Callable[[], int] | None = None,
        timer: Timer | None = None,
        group_initial_rebalance_delay_ms: int = 3000,
        group_min_session_timeout_ms: int = 6000,
        group_max_session_timeout_ms: int = 1_800_000,
        group_max_size: int = 2_147_483_647,
        offsets_retention_minutes: int = 10080,
        offsets_retention_check_interval_ms: int = 600_000,
        offset_metadata_max_bytes: int = OFFSET_METADATA_MAX_BYTES,
    ) -> None:
        self.offsets = offsets
        self.clock = clock or (lambda: int(time.time() * 1000))
        self.timer: Timer = timer or AsyncioTimer()
        self.initial_rebalance_delay_ms = group_initial_rebalance_delay_ms
        self.min_session_timeout_ms = group_min_session_timeout_ms
        self.max_session_timeout_ms = group_max_session_timeout_ms
        self.max_size = group_max_size
        self.offsets_retention_ms = offsets_retention_minutes * 60_000
        self.offsets_retention_check_interval_ms = offsets_retention_check_interval_ms
        self.offset_metadata_max_bytes = offset_metadata_max_bytes
        self.groups: dict[str, GroupMetadata] = {}
        # Per offsets partition: the (leader id, leader epoch) its groups were loaded under.
        self._loaded: dict[int, tuple[int | None, int]] = {}
        self._heartbeats: dict[tuple[str, str], TimerHandle] = {}
        self._joins: dict[str, TimerHandle] = {}
        self._initial_join: dict[str, int] = {}  # group -> rebalance time left after the initial delays
        self._closed = False
        for partition in offsets.created():
            self._ensure_loaded(partition)

    # -- placement and loading ---------------------------------------------------------------------

    def partition_for(self, group_id: str) -> int:
        return partition_for(group_id, self.offsets.num_partitions)

    def coordinator_id(self, group_id: str) -> int | None:
        """The broker coordinating ``group_id`` (its offsets partition's leader), or None (no
        leader, or the offsets topic cannot be created: too few live brokers)."""
        partition = self.partition_for(group_id)
        self._ensure_loaded(partition)
        return self.offsets.leader(partition)

    def coordinator_error(self, group_id: str, broker_id: int) -> ErrorCode:
        """NONE if ``broker_id`` coordinates ``group_id``, else Kafka's answer (NOT_COORDINATOR;
        COORDINATOR_NOT_AVAILABLE once the coordinator is closed)."""
        if self._closed:
            return ErrorCode.coordinator_not_available
        if self.coordinator_id(group_id) != broker_id:
            return ErrorCode.not_coordinator
        return ErrorCode.none

    def _ensure_loaded(self, partition: int) -> None:
        cluster = self.offsets.partition(partition)
        if cluster is None:
            return
        current = (cluster.leader_id, cluster.leader_epoch)
        if self._loaded.get(partition) == current:
            return
        if partition in self._loaded:
            self._unload(partition)
        self._loaded[partition] = current
        if cluster.leader_id is not None:
            self._load(partition, cluster)

    def leadership_changed(self) -> None:
        """After brokers stop or start: every partition whose leader moved is unloaded here
        and loaded from the new leader's log (Kafka's onResignation / onElection)."""
        for partition in self.offsets.created():
            self._ensure_loaded(partition)

    def _unload(self, partition: int) -> None:
        """Kafka's onResignation: the groups leave memory; waiting requests get NOT_COORDINATOR."""
        for group_id in [g for g in self.groups if self.partition_for(g) == partition]:
            group = self.groups.pop(group_id)
            self._cancel_group_timers(group)
            for member in group.members.values():
                _complete(member.awaiting_join, JoinResult(ErrorCode.not_coordinator, member.member_id))
                _complete(member.awaiting_sync, SyncResult(ErrorCode.not_coordinator))
            group.state = GroupState.DEAD
        logger.info("offsets partition %d unloaded", partition)

    def _load(self, partition: int, cluster: Cluster) -> None:
        """Kafka's loadGroupsForPartition: replay the leader's log up to its high watermark."""
        offsets: dict[str, dict[tuple[str, int], OffsetCommitValue]] = {}
        metadata: dict[str, GroupMetadataValue | None] = {}
        for record in cluster.consume():
            if record.key is None:
                continue
            try:
                group_id, topic, topic_partition = decode_key(record.key)
                if topic is None:
                    value = None if record.value is None else decode_group_metadata_value(record.value)
                    metadata[group_id] = value
                    if value is None:
                        offsets.pop(group_id, None)
                elif record.value is None:
                    offsets.get(group_id, {}).pop((topic, topic_partition), None)
                else:
                    committed = decode_offset_commit_value(record.value)
                    offsets.setdefault(group_id, {})[(topic, topic_partition)] = committed
            except CorruptOffsetsRecord as error:
                logger.error("offsets partition %d, offset %d: skipped: %s", partition, record.offset, error)
        for group_id in set(offsets) | {g for g, v in metadata.items() if v is not None}:
            group = GroupMetadata(group_id, state_timestamp_ms=self.clock())
            value = metadata.get(group_id)
            if value is not None:
                group.protocol_type = value.protocol_type or None
                group.protocol_name = value.protocol
                group.generation_id = value.generation
                for saved in value.members:
                    group.add(MemberMetadata(
                        saved.member_id, saved.group_instance_id, saved.client_id, saved.client_host,
                        saved.rebalance_timeout_ms, saved.session_timeout_ms, value.protocol_type,
                        [(value.protocol or "", saved.subscription)], assignment=saved.assignment,
                    ))  # fmt: skip
                group.leader_id = value.leader if value.leader in group.members else group.leader_id
                group.state = GroupState.STABLE if group.members else GroupState.EMPTY
            group.offsets = offsets.get(group_id, {})
            self.groups[group_id] = group
            for member in group.members.values():
                self._schedule_heartbeat(group, member)
        logger.info("offsets partition %d loaded from broker %s: %d groups", partition, cluster.leader_id,
                    len([g for g in self.groups if self.partition_for(g) == partition]))  # fmt: skip

    def close(self) -> None:
        """Cancel every timer and answer every waiting request (COORDINATOR_NOT_AVAILABLE)."""
        self._closed = True
        for group in self.groups.values():
            self._cancel_group_timers(group)
            for member in group.members.values():
                _complete(member.awaiting_join, JoinResult(ErrorCode.coordinator_not_available, member.member_id))
                _complete(member.awaiting_sync, SyncResult(ErrorCode.coordinator_not_available))
        self.groups.clear()

    def _cancel_group_timers(self, group: GroupMetadata) -> None:
        for key in [k for k in self._heartbeats if k[0] == group.group_id]:
            self._heartbeats.pop(key).cancel()
        handle = self._joins.pop(group.group_id, None)
        if handle is not None:
            handle.cancel()
        self._initial_join.pop(group.group_id, None)

    # -- the log -----------------------------------------------------------------------------------

    def _append(self, group_id: str, records: list[tuple[bytes, bytes | None]]) -> ErrorCode:
        """Append ``(key, value)`` records to the group's offsets partition with acks=all."""
        if not records:
            return ErrorCode.none
        cluster = self.offsets.partition(self.partition_for(group_id))
        if cluster is None:  # the offsets topic cannot be created: no coordinator
            return ErrorCode.coordinator_not_available
        batch = encode_batch([v for _, v in records], keys=[k for k, _ in records], timestamp=self.clock())
        try:
            response = cluster.produce(batch, acks="all")
        except KafkaError as error:
            response_error: KafkaError | None = error
        else:
            response_error = response.error
        if response_error is None:
            return ErrorCode.none
        code = ErrorCode(response_error.code)
        logger.warning("group %s: append to %s-%d failed: %s", group_id, OFFSETS_TOPIC,
                       self.partition_for(group_id), response_error)  # fmt: skip
        return _APPEND_ERRORS.get(code, ErrorCode.unknown_server_error)

    def _store_group(self, group: GroupMetadata, assignments: dict[str, bytes] | None = None) -> ErrorCode:
        """GroupMetadataManager.storeGroup: the group's generation, protocol, leader and each
        member's subscription and assignment."""
        members = []
        if group.protocol_name is not None:
            for member in group.members.values():
                assignment = member.assignment if assignments is None else assignments.get(member.member_id, b"")
                members.append(MemberMetadataValue(
                    member.member_id, member.group_instance_id, member.client_id, member.client_host,
                    member.rebalance_timeout_ms, member.session_timeout_ms, member.metadata(group.protocol_name),
                    assignment,
                ))  # fmt: skip
        value = GroupMetadataValue(group.protocol_type or "", group.generation_id, group.protocol_name,
                                   group.leader_id if members else None, group.state_timestamp_ms, members)  # fmt: skip
        return self._append(group.group_id, [(encode_group_metadata_key(group.group_id),
                                              encode_group_metadata_value(value))])  # fmt: skip

    # -- timers ------------------------------------------------------------------------------------

    def _schedule_heartbeat(self, group: GroupMetadata, member: MemberMetadata) -> None:
        """Kafka's completeAndScheduleNextHeartbeatExpiration: the session restarts now."""
        key = (group.group_id, member.member_id)
        old = self._heartbeats.pop(key, None)
        if old is not None:
            old.cancel()
        member.heartbeat_deadline_ms = self.clock() + member.session_timeout_ms
        self._heartbeats[key] = self.timer.schedule(
            member.session_timeout_ms, lambda: self._on_heartbeat_expired(group, member.member_id)
        )

    def _on_heartbeat_expired(self, group: GroupMetadata, member_id: str) -> None:
        self._heartbeats.pop((group.group_id, member_id), None)
        if self.groups.get(group.group_id) is not group:
            return
        if member_id in group.pending_members:
            group.pending_members.discard(member_id)
            self._check_join(group)
            return
        member = group.members.get(member_id)
        if member is None:
            return
        if member.awaiting_join is not None or member.awaiting_sync is not None:
            # shouldKeepAlive: a member waiting in JoinGroup or SyncGroup is bounded by the
            # rebalance timeout instead.
            self._schedule_heartbeat(group, member)
            return
        logger.info("group %s: member %s expired (session timeout %d ms)", group.group_id, member_id,
                    member.session_timeout_ms)  # fmt: skip
        self._remove_member_and_update_group(group, member)

    # -- rebalancing -------------------------------------------------------------------------------

    def _maybe_prepare_rebalance(self, group: GroupMetadata) -> None:
        if group.is_state(GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY):
            self._prepare_rebalance(group)

    def _prepare_rebalance(self, group: GroupMetadata) -> None:
        if group.is_state(GroupState.COMPLETING_REBALANCE):
            self._reset_and_propagate_assignment_error(group, ErrorCode.rebalance_in_progress)
        old = self._joins.pop(group.group_id, None)
        if old is not None:
            old.cancel()
        if group.is_state(GroupState.EMPTY):
            # InitialDelayedJoin: wait group.initial.rebalance.delay.ms for more members, again
            # while new ones keep coming, up to the rebalance timeout.
            delay = self.initial_rebalance_delay_ms
            self._initial_join[group.group_id] = max(group.max_rebalance_timeout_ms() - delay, 0)
            self._joins[group.group_id] = self.timer.schedule(delay, lambda: self._on_initial_delay(group, delay))
        else:
            self._initial_join.pop(group.group_id, None)
            self._joins[group.group_id] = self.timer.schedule(
                group.max_rebalance_timeout_ms(), lambda: self._on_join_timeout(group)
            )
        group.transition_to(GroupState.PREPARING_REBALANCE, self.clock())
        logger.info("group %s: preparing to rebalance (generation %d)", group.group_id, group.generation_id)
        self._check_join(group)  # tryCompleteElseWatch: with everybody already rejoined (or gone), at once

    def _on_initial_delay(self, group: GroupMetadata, delay: int) -> None:
        self._joins.pop(group.group_id, None)
        remaining = self._initial_join.get(group.group_id, 0)
        if group.new_member_added and remaining > 0:
            group.new_member_added = False
            step = min(delay, remaining)
            self._initial_join[group.group_id] = remaining - step
            self._joins[group.group_id] = self.timer.schedule(step, lambda: self._on_initial_delay(group, delay))
            return
        self._initial_join.pop(group.group_id, None)
        self._complete_join(group)

    def _on_join_timeout(self, group: GroupMetadata) -> None:
        self._joins.pop(group.group_id, None)
        self._complete_join(group)

    def _check_join(self, group: GroupMetadata) -> None:
        """DelayedJoin.tryComplete: complete the rebalance once every member has rejoined
        (never during the initial delay, which always runs out)."""
        if (
            group.is_state(GroupState.PREPARING_REBALANCE)
            and group.group_id not in self._initial_join
            and group.has_all_members_joined()
        ):
            handle = self._joins.pop(group.group_id, None)
            if handle is not None:
                handle.cancel()
            self._complete_join(group)

    def _complete_join(self, group: GroupMetadata) -> None:
        """GroupCoordinator.onCompleteJoin: members that did not rejoin are removed; the next
        generation starts (Empty if nobody is left) and every waiting JoinGroup is answered,
        the leader's with every member's metadata."""
        if self.groups.get(group.group_id) is not group or not group.is_state(GroupState.PREPARING_REBALANCE):
            return
        for member in group.not_yet_rejoined():
            logger.info("group %s: member %s did not rejoin in time: removed", group.group_id, member.member_id)
            self._remove_heartbeat(group, member.member_id)
            group.remove(member.member_id)
        group.generation_id += 1
        now = self.clock()
        if not group.members:
            group.protocol_name = None
            group.transition_to(GroupState.EMPTY, now)
            error = self._store_group(group, {})
            if error != ErrorCode.none:
                logger.warning("group %s: storing the empty generation %d failed: %s", group.group_id,
                               group.generation_id, error.name)  # fmt: skip
            logger.info("group %s: generation %d is empty", group.group_id, group.generation_id)
            return
        group.protocol_name = group.select_protocol()
        group.transition_to(GroupState.COMPLETING_REBALANCE, now)
        logger.info("group %s: generation %d with %d members, protocol %s", group.group_id, group.generation_id,
                    len(group.members), group.protocol_name)  # fmt: skip
        everyone = group.current_member_metadata()
        assert group.leader_id is not None
        for member in group.members.values():
            result = JoinResult(
                ErrorCode.none, member.member_id, group.generation_id, group.protocol_type, group.protocol_name,
                group.leader_id, everyone if member.member_id == group.leader_id else [],
            )  # fmt: skip
            future, member.awaiting_join = member.awaiting_join, None
            member.is_new = False
            _complete(future, result)
            self._schedule_heartbeat(group, member)

    def _reset_and_propagate_assignment_error(self, group: GroupMetadata, error: ErrorCode) -> None:
        for member in group.members.values():
            member.assignment = b""
            future, member.awaiting_sync = member.awaiting_sync, None
            _complete(future, SyncResult(error))

    def _remove_heartbeat(self, group: GroupMetadata, member_id: str) -> None:
        handle = self._heartbeats.pop((group.group_id, member_id), None)
        if handle is not None:
            handle.cancel()

    def _remove_member_and_update_group(self, group: GroupMetadata, member: MemberMetadata) -> None:
        self._remove_heartbeat(group, member.member_id)
        future, member.awaiting_join = member.awaiting_join, None
        _complete(future, JoinResult(ErrorCode.unknown_member_id, member.member_id))
        future, member.awaiting_sync = member.awaiting_sync, None
        _complete(future, SyncResult(ErrorCode.unknown_member_id))
        group.remove(member.member_id)
        if group.is_state(GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._maybe_prepare_rebalance(group)
        elif group.is_state(GroupState.PREPARING_REBALANCE):
            self._check_join(group)

    # -- JoinGroup ---------------------------------------------------------------------------------

    def join_group(
        self,
        broker_id: int,
        group_id: str,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        *,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        client_id: str = "",
        client_host: str = "",
        require_known_member_id: bool = True,
    ) -> asyncio.Future[JoinResult]:
        """GroupCoordinator.handleJoinGroup. The future completes when the rebalance does (or at
        once with an error). ``require_known_member_id`` is JoinGroup v4+ (KIP-394): a new
        member without an id gets MEMBER_ID_REQUIRED and its new id, and rejoins with it."""
        if not group_id:
            return _resolved(JoinResult(ErrorCode.invalid_group_id, member_id))
        error = self.coordinator_error(group_id, broker_id)
        if error != ErrorCode.none:
            return _resolved(JoinResult(error, member_id))
        if not self.min_session_timeout_ms <= session_timeout_ms <= self.max_session_timeout_ms:
            return _resolved(JoinResult(ErrorCode.invalid_session_timeout, member_id))
        if sum(len(metadata) for _, metadata in protocols) > MAX_MEMBER_METADATA_BYTES:
            return _resolved(JoinResult(ErrorCode.invalid_request, member_id))
        group = self.groups.get(group_id)
        is_unknown = member_id == UNKNOWN_MEMBER_ID
        if group is None:
            if not is_unknown:
                return _resolved(JoinResult(ErrorCode.unknown_member_id, member_id))
            group = self.groups[group_id] = GroupMetadata(group_id, state_timestamp_ms=self.clock())
        known = member_id in group.members or member_id in group.pending_members
        if len(group.members) + len(group.pending_members) >= self.max_size and not known and (
            group_instance_id is None or group_instance_id not in group.static_members
        ):
            return _resolved(JoinResult(ErrorCode.group_max_size_reached, member_id))
        future: asyncio.Future[JoinResult] = asyncio.get_running_loop().create_future()
        args = (client_id, client_host, rebalance_timeout_ms, session_timeout_ms, protocol_type, protocols)
        if is_unknown:
            self._unknown_member_join(group, group_instance_id, require_known_member_id, args, future)
        else:
            self._known_member_join(group, member_id, group_instance_id, args, future)
        return future

    def _unknown_member_join(
        self,
        group: GroupMetadata,
        group_instance_id: str | None,
        require_known_member_id: bool,
        args: tuple[str, str, int, int, str, list[tuple[str, bytes]]],
        future: asyncio.Future[JoinResult],
    ) -> None:
        client_id, _, _, _, protocol_type, protocols = args
        if group.is_state(GroupState.DEAD):
            future.set_result(JoinResult(ErrorCode.coordinator_not_available))
            return
        if not group.supports_protocols(protocol_type, protocols):
            future.set_result(JoinResult(ErrorCode.inconsistent_group_protocol))
            return
        new_member_id = f"{group_instance_id or client_id}-{uuid.uuid4()}"
        if group_instance_id is not None and group_instance_id in group.static_members:
            # KIP-345: the instance's old member id is fenced, the member continues under the new one.
            old_member_id = group.static_members[group_instance_id]
            self._remove_heartbeat(group, old_member_id)
            old = group.members[old_member_id]
            _complete(old.awaiting_join, JoinResult(ErrorCode.fenced_instance_id, old_member_id))
            _complete(old.awaiting_sync, SyncResult(ErrorCode.fenced_instance_id))
            old.awaiting_join = old.awaiting_sync = None
            member = group.replace_static_member(group_instance_id, old_member_id, new_member_id)
            logger.info("group %s: static member %s: %s replaces %s", group.group_id, group_instance_id,
                        new_member_id, old_member_id)  # fmt: skip
            self._update_member_and_rebalance(group, member, args, future)
        elif group_instance_id is None and require_known_member_id:
            # KIP-394: the new member learns its id first, and must rejoin with it within its session.
            group.pending_members.add(new_member_id)
            pending = MemberMetadata(new_member_id, None, client_id, "", 0, args[3], protocol_type, protocols)
            self._schedule_heartbeat(group, pending)
            future.set_result(JoinResult(ErrorCode.member_id_required, new_member_id))
        else:
            self._add_member_and_rebalance(group, new_member_id, group_instance_id, args, future)

    def _known_member_join(
        self,
        group: GroupMetadata,
        member_id: str,
        group_instance_id: str | None,
        args: tuple[str, str, int, int, str, list[tuple[str, bytes]]],
        future: asyncio.Future[JoinResult],
    ) -> None:
        protocol_type, protocols = args[4], args[5]
        if group.is_state(GroupState.DEAD):
            future.set_result(JoinResult(ErrorCode.coordinator_not_available, member_id))
        elif not group.supports_protocols(protocol_type, protocols):
            future.set_result(JoinResult(ErrorCode.inconsistent_group_protocol, member_id))
        elif member_id in group.pending_members:
            self._add_member_and_rebalance(group, member_id, group_instance_id, args, future)
        elif group.is_static_member_fenced(group_instance_id, member_id):
            future.set_result(JoinResult(ErrorCode.fenced_instance_id, member_id))
        elif member_id not in group.members:
            future.set_result(JoinResult(ErrorCode.unknown_member_id, member_id))
        else:
            member = group.members[member_id]
            if group.is_state(GroupState.PREPARING_REBALANCE):
                self._update_member_and_rebalance(group, member, args, future)
            elif group.is_state(GroupState.COMPLETING_REBALANCE):
                if member.matches(protocols):
                    # A member that lost its JoinGroup response: the same answer again.
                    assert group.leader_id is not None
                    members = group.current_member_metadata() if member_id == group.leader_id else []
                    future.set_result(JoinResult(ErrorCode.none, member_id, group.generation_id, group.protocol_type,
                                                 group.protocol_name, group.leader_id, members))  # fmt: skip
                else:
                    self._update_member_and_rebalance(group, member, args, future)
            elif group.is_state(GroupState.STABLE):
                if member_id == group.leader_id or not member.matches(protocols):
                    # The leader rejoins to trigger a rebalance (e.g. new topics), or the
                    # member's subscription changed.
                    self._update_member_and_rebalance(group, member, args, future)
                else:
                    future.set_result(JoinResult(ErrorCode.none, member_id, group.generation_id, group.protocol_type,
                                                 group.protocol_name, group.leader_id or "", []))  # fmt: skip
            else:  # Empty
                future.set_result(JoinResult(ErrorCode.unknown_member_id, member_id))

    def _add_member_and_rebalance(
        self,
        group: GroupMetadata,
        member_id: str,
        group_instance_id: str | None,
        args: tuple[str, str, int, int, str, list[tuple[str, bytes]]],
        future: asyncio.Future[JoinResult],
    ) -> None:
        client_id, client_host, rebalance_timeout_ms, session_timeout_ms, protocol_type, protocols = args
        member = MemberMetadata(member_id, group_instance_id, client_id, client_host, rebalance_timeout_ms,
                                session_timeout_ms, protocol_type, protocols, awaiting_join=future,
                                is_new=True)  # fmt: skip
        group.pending_members.discard(member_id)
        group.add(member)
        if group.is_state(GroupState.PREPARING_REBALANCE) and group.generation_id == 0:
            group.new_member_added = True
        self._schedule_heartbeat(group, member)
        self._maybe_prepare_rebalance(group)
        self._check_join(group)

    def _update_member_and_rebalance(
        self,
        group: GroupMetadata,
        member: MemberMetadata,
        args: tuple[str, str, int, int, str, list[tuple[str, bytes]]],
        future: asyncio.Future[JoinResult],
    ) -> None:
        _, _, member.rebalance_timeout_ms, member.session_timeout_ms, _, member.protocols = args
        _complete(member.awaiting_join, JoinResult(ErrorCode.rebalance_in_progress, member.member_id))
        member.awaiting_join = future
        self._maybe_prepare_rebalance(group)
        self._check_join(group)

    # -- SyncGroup ---------------------------------------------------------------------------------

    def sync_group(
        self,
        broker_id: int,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        assignments: dict[str, bytes],
        *,
        protocol_type: str | None = None,
        protocol_name: str | None = None,
    ) -> asyncio.Future[SyncResult]:
        """GroupCoordinator.handleSyncGroup: the leader's SyncGroup carries every member's
        assignment, stored with the group before any member gets its own."""
        if not group_id:
            return _resolved(SyncResult(ErrorCode.invalid_group_id))
        error = self.coordinator_error(group_id, broker_id)
        if error != ErrorCode.none:
            return _resolved(SyncResult(error))
        group = self.groups.get(group_id)
        if group is None:
            return _resolved(SyncResult(ErrorCode.unknown_member_id))
        if group.is_state(GroupState.DEAD):
            return _resolved(SyncResult(ErrorCode.coordinator_not_available))
        if group.is_static_member_fenced(group_instance_id, member_id):
            return _resolved(SyncResult(ErrorCode.fenced_instance_id))
        member = group.members.get(member_id)
        if member is None:
            return _resolved(SyncResult(ErrorCode.unknown_member_id))
        if generation_id != group.generation_id:
            return _resolved(SyncResult(ErrorCode.illegal_generation))
        if (protocol_type is not None and protocol_type != group.protocol_type) or (
            protocol_name is not None and protocol_name != group.protocol_name
        ):
            return _resolved(SyncResult(ErrorCode.inconsistent_group_protocol))
        if any(len(assignment) > MAX_MEMBER_METADATA_BYTES for assignment in assignments.values()):
            return _resolved(SyncResult(ErrorCode.invalid_request))
        if group.is_state(GroupState.EMPTY):
            return _resolved(SyncResult(ErrorCode.unknown_member_id))
        if group.is_state(GroupState.PREPARING_REBALANCE):
            return _resolved(SyncResult(ErrorCode.rebalance_in_progress))
        if group.is_state(GroupState.STABLE):
            self._schedule_heartbeat(group, member)
            return _resolved(SyncResult(ErrorCode.none, group.protocol_type, group.protocol_name, member.assignment))
        # CompletingRebalance
        future: asyncio.Future[SyncResult] = asyncio.get_running_loop().create_future()
        _complete(member.awaiting_sync, SyncResult(ErrorCode.rebalance_in_progress))
        member.awaiting_sync = future
        self._schedule_heartbeat(group, member)
        if member_id == group.leader_id:
            full = {m: assignments.get(m, b"") for m in group.members}
            stored = self._store_group(group, full)
            if stored != ErrorCode.none:
                self._reset_and_propagate_assignment_error(group, stored)
                self._maybe_prepare_rebalance(group)
            else:
                for other in group.members.values():
                    other.assignment = full[other.member_id]
                    waiting, other.awaiting_sync = other.awaiting_sync, None
                    _complete(waiting, SyncResult(ErrorCode.none, group.protocol_type, group.protocol_name,
                                                  other.assignment))  # fmt: skip
                group.transition_to(GroupState.STABLE, self.clock())
                logger.info("group %s: generation %d is stable", group.group_id, group.generation_id)
        return future

    # -- Heartbeat, LeaveGroup ---------------------------------------------------------------------

    def heartbeat(
        self, broker_id: int, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None
    ) -> ErrorCode:
        """GroupCoordinator.handleHeartbeat."""
        if not group_id:
            return ErrorCode.invalid_group_id
        error = self.coordinator_error(group_id, broker_id)
        if error != ErrorCode.none:
            return error
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.unknown_member_id
        if group.is_state(GroupState.DEAD):
            return ErrorCode.coordinator_not_available
        if group.is_static_member_fenced(group_instance_id, member_id):
            return ErrorCode.fenced_instance_id
        member = group.members.get(member_id)
        if group.is_state(GroupState.EMPTY) or member is None:
            return ErrorCode.unknown_member_id
        if generation_id != group.generation_id:
            return ErrorCode.illegal_generation
        self._schedule_heartbeat(group, member)
        if group.is_state(GroupState.PREPARING_REBALANCE):
            return ErrorCode.rebalance_in_progress
        return ErrorCode.none

    def leave_group(
        self, broker_id: int, group_id: str, members: list[tuple[str, str | None]]
    ) -> tuple[ErrorCode, list[ErrorCode]]:
        """GroupCoordinator.handleLeaveGroup: the group-level error and one per leaving member
        (``(member_id, group_instance_id)``; v3+ may name a static member by instance id only)."""
        if not group_id:
            return ErrorCode.invalid_group_id, []
        error = self.coordinator_error(group_id, broker_id)
        if error != ErrorCode.none:
            return error, []
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.none, [ErrorCode.unknown_member_id for _ in members]
        if group.is_state(GroupState.DEAD):
            return ErrorCode.coordinator_not_available, []
        results = []
        for member_id, instance_id in members:
            if instance_id is not None and member_id == UNKNOWN_MEMBER_ID:
                member_id = group.static_members.get(instance_id, UNKNOWN_MEMBER_ID)
            if group.is_static_member_fenced(instance_id, member_id):
                results.append(ErrorCode.fenced_instance_id)
            elif member_id in group.pending_members:
                group.pending_members.discard(member_id)
                self._remove_heartbeat(group, member_id)
                self._check_join(group)
                results.append(ErrorCode.none)
            elif member_id not in group.members:
                results.append(ErrorCode.unknown_member_id)
            else:
                logger.info("group %s: member %s leaves", group_id, member_id)
                self._remove_member_and_update_group(group, group.members[member_id])
                results.append(ErrorCode.none)
        return ErrorCode.none, results

    # -- offsets -----------------------------------------------------------------------------------

    def commit_offsets(
        self,
        broker_id: int,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        offsets: dict[tuple[str, int], tuple[int, int, str | None]],
    ) -> dict[tuple[str, int], ErrorCode]:
        """GroupCoordinator.handleCommitOffsets: ``(topic, partition) -> (offset, leader
        epoch, metadata)``; an error per partition. Acknowledged only once the commit is on
        every in-sync replica of the group's offsets partition."""

        def every(code: ErrorCode) -> dict[tuple[str, int], ErrorCode]:
            return dict.fromkeys(offsets, code)

        if not group_id:
            return every(ErrorCode.invalid_group_id)
        error = self.coordinator_error(group_id, broker_id)
        if error != ErrorCode.none:
            return every(error)
        group = self.groups.get(group_id)
        if group is None:
            if generation_id >= 0 or member_id != UNKNOWN_MEMBER_ID or group_instance_id is not None:
                # A member of a generation the coordinator does not know (it was lost, or this
                # is an old request): Kafka rejects the commit.
                return every(ErrorCode.illegal_generation)
            # A commit outside group management (assign(), the admin client): the group is created.
            group = self.groups[group_id] = GroupMetadata(group_id, state_timestamp_ms=self.clock())
        error = self._validate_commit(group, generation_id, member_id, group_instance_id)
        if error != ErrorCode.none:
            return every(error)
        results: dict[tuple[str, int], ErrorCode] = {}
        records: list[tuple[bytes, bytes | None]] = []
        accepted: dict[tuple[str, int], OffsetCommitValue] = {}
        now = self.clock()
        for (topic, partition), (offset, leader_epoch, metadata) in offsets.items():
            text = metadata or ""
            if len(text.encode()) > self.offset_metadata_max_bytes:
                results[(topic, partition)] = ErrorCode.offset_metadata_too_large
                continue
            value = OffsetCommitValue(offset, leader_epoch, text, now)
            accepted[(topic, partition)] = value
            records.append((encode_offset_commit_key(group_id, topic, partition), encode_offset_commit_value(value)))
        stored = self._append(group_id, records)
        if stored == ErrorCode.none:
            group.offsets.update(accepted)
        for key in accepted:
            results[key] = stored
        member = group.members.get(member_id)
        if member is not None:
            self._schedule_heartbeat(group, member)
        return results

    def _validate_commit(
        self, group: GroupMetadata, generation_id: int, member_id: str, group_instance_id: str | None
    ) -> ErrorCode:
        """ClassicGroup.validateOffsetCommit."""
        if group.is_state(GroupState.DEAD):
            return ErrorCode.coordinator_not_available
        if generation_id < 0 and group.is_state(GroupState.EMPTY):
            return ErrorCode.none  # a simple commit (no group management)
        if generation_id >= 0 or member_id != UNKNOWN_MEMBER_ID or group_instance_id is not None:
            if group.is_static_member_fenced(group_instance_id, member_id):
                return ErrorCode.fenced_instance_id
            if member_id not in group.members:
                return ErrorCode.unknown_member_id
            if generation_id != group.generation_id:
                return ErrorCode.illegal_generation
            if group.is_state(GroupState.COMPLETING_REBALANCE):
                # The member has the new generation but not its assignment yet.
                return ErrorCode.rebalance_in_progress
            return ErrorCode.none
        if not group.is_state(GroupState.EMPTY):
            # Without member id and generation, commits are only taken while the group is empty.
            return ErrorCode.unknown_member_id
        return ErrorCode.none

    def fetch_offsets(
        self, broker_id: int, group_id: str, partitions: list[tuple[str, int]] | None
    ) -> tuple[ErrorCode, list[CommittedOffset]]:
        """GroupCoordinator.handleFetchOffsets: the committed offsets of ``partitions`` (None:
        every partition the group has committed), -1 where none is committed."""
        error = self.coordinator_error(group_id, broker_id) if group_id else ErrorCode.invalid_group_id
        if error != ErrorCode.none:
            return error, []
        group = self.groups.get(group_id)
        committed = {} if group is None or group.is_state(GroupState.DEAD) else group.offsets
        wanted = sorted(committed) if partitions is None else partitions
        out = []
        for topic, partition in wanted:
            value = committed.get((topic, partition))
            if value is None:
                out.append(CommittedOffset(topic, partition, -1, -1, "", ErrorCode.none))
            else:
                out.append(CommittedOffset(topic, partition, value.offset, value.leader_epoch, value.metadata,
                                           ErrorCode.none))  # fmt: skip
        return ErrorCode.none, out

    # -- administration ----------------------------------------------------------------------------

    def list_groups(self, broker_id: int, states: Iterable[str] = ()) -> list[tuple[str, str, str]]:
        """``(group_id, protocol_type, state)`` of the groups ``broker_id`` coordinates, those
        in ``states`` only if any are given (KIP-518; case-insensitive, as Kafka)."""
        self.leadership_changed()
        wanted = {state.lower() for state in states}
        out = []
        for group_id, group in sorted(self.groups.items()):
            if self.offsets.leader(self.partition_for(group_id)) != broker_id:
                continue
            if wanted and group.state.value.lower() not in wanted:
                continue
            out.append((group_id, group.protocol_type or "", group.state.value))
        return out

    def describe_group(self, broker_id: int, group_id: str) -> tuple[ErrorCode, dict[str, Any]]:
        """GroupCoordinator.handleDescribeGroup: a group that does not exist is described as
        Dead with no members (DescribeGroups before v6)."""
        error = self.coordinator_error(group_id, broker_id) if group_id else ErrorCode.invalid_group_id
        if error != ErrorCode.none:
            return error, {}
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.none, {"group_state": GroupState.DEAD.value, "protocol_type": "", "protocol_data": "",
                                    "members": []}  # fmt: skip
        stable = group.is_state(GroupState.STABLE)
        members = []
        for member in group.members.values():
            members.append({
                "member_id": member.member_id,
                "group_instance_id": member.group_instance_id,
                "client_id": member.client_id,
                "client_host": member.client_host,
                "member_metadata": member.metadata(group.protocol_name) if stable and group.protocol_name else b"",
                "member_assignment": member.assignment if stable else b"",
            })  # fmt: skip
        return ErrorCode.none, {
            "group_state": group.state.value,
            "protocol_type": group.protocol_type or "",
            "protocol_data": (group.protocol_name or "") if stable else "",
            "members": members,
        }

    def delete_groups(self, broker_id: int, group_ids: list[str]) -> dict[str, ErrorCode]:
        """GroupCoordinator.handleDeleteGroups: only Empty groups are deleted (NON_EMPTY_GROUP
        otherwise); tombstones for the group and each of its offsets are written first."""
        out: dict[str, ErrorCode] = {}
        for group_id in group_ids:
            error = self.coordinator_error(group_id, broker_id) if group_id else ErrorCode.invalid_group_id
            group = self.groups.get(group_id) if error == ErrorCode.none else None
            if error != ErrorCode.none:
                out[group_id] = error
            elif group is None or group.is_state(GroupState.DEAD):
                out[group_id] = ErrorCode.group_id_not_found
            elif not group.is_state(GroupState.EMPTY):
                out[group_id] = ErrorCode.non_empty_group
            else:
                records: list[tuple[bytes, bytes | None]] = [
                    (encode_offset_commit_key(group_id, topic, partition), None) for topic, partition in group.offsets
                ]
                records.append((encode_group_metadata_key(group_id), None))
                stored = self._append(group_id, records)
                if stored == ErrorCode.none:
                    group.transition_to(GroupState.DEAD, self.clock())
                    self._cancel_group_timers(group)
                    del self.groups[group_id]
                out[group_id] = stored
        return out

    def delete_offsets(
        self, broker_id: int, group_id: str, partitions: list[tuple[str, int]]
    ) -> tuple[ErrorCode, dict[tuple[str, int], ErrorCode]]:
        """GroupCoordinator.handleDeleteOffsets (KIP-496): offsets of topics the group's
        members subscribe to stay (GROUP_SUBSCRIBED_TO_TOPIC); a non-empty group that is not a
        consumer group cannot have offsets deleted (NON_EMPTY_GROUP)."""
        error = self.coordinator_error(group_id, broker_id) if group_id else ErrorCode.invalid_group_id
        if error != ErrorCode.none:
            return error, {}
        group = self.groups.get(group_id)
        if group is None or group.is_state(GroupState.DEAD):
            return ErrorCode.group_id_not_found, {}
        subscribed: set[str] = set()
        if not group.is_state(GroupState.EMPTY):
            topics = group.subscribed_topics()
            if topics is None:
                return ErrorCode.non_empty_group, {}
            subscribed = topics
        results: dict[tuple[str, int], ErrorCode] = {}
        records: list[tuple[bytes, bytes | None]] = []
        for topic, partition in partitions:
            if topic in subscribed:
                results[(topic, partition)] = ErrorCode.group_subscribed_to_topic
            else:
                results[(topic, partition)] = ErrorCode.none
                if (topic, partition) in group.offsets:
                    records.append((encode_offset_commit_key(group_id, topic, partition), None))
        stored = self._append(group_id, records)
        if stored != ErrorCode.none:
            return stored, {}
        for topic, partition in partitions:
            if results[(topic, partition)] == ErrorCode.none:
                group.offsets.pop((topic, partition), None)
        return ErrorCode.none, results
