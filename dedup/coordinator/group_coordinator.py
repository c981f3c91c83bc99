"""Kafka's group coordinator for the classic protocol: the service the group APIs call.

Follows Kafka's ``GroupCoordinatorService`` and ``GroupCoordinatorShard`` (``group-coordinator``;
``GroupCoordinator.scala`` before them): each request names the broker it came to, and only the
group's coordinator answers it; the work is done by the managers, as in Kafka:

- :mod:`~dedup.coordinator.membership` (``GroupMetadataManager``'s classic groups): JoinGroup,
  SyncGroup, Heartbeat, LeaveGroup, the rebalance and its timers;
- :mod:`~dedup.coordinator.offsets_manager` (``OffsetMetadataManager``): OffsetCommit,
  OffsetFetch, OffsetDelete, and the expiry of old offsets;
- :mod:`~dedup.coordinator.store` (``GroupMetadataManager``'s records): the ``__consumer_offsets``
  partitions, appended to with acks=all and replayed on load;
- :mod:`~dedup.coordinator.timers`: the clock and timer they all run on.

A group's coordinator is the leader of ``__consumer_offsets`` partition :func:`partition_for`
``(group_id)``; when that partition's leader changes (a broker stopped, restarted), its groups
are unloaded and loaded again from the new leader's log (Kafka's ``onResignation``/``onElection``
and ``loadGroupsForPartition``), and the old broker answers NOT_COORDINATOR.

Loading is synchronous: a partition's groups are replayed inside the call that first needs them
(on the event loop, before that request's answer), so no request ever sees a partition half
loaded and COORDINATOR_LOAD_IN_PROGRESS (14), Kafka's answer while its loader thread replays a
partition in the background, is never needed and never sent. The price is that a request
arriving just after a failover waits for the replay instead of retrying: the offsets log is
small here, and a client treats both the same way.

Transactional offsets (TxnOffsetCommit) are written in the producer's transactional batch and
held as pending (:meth:`GroupCoordinator.complete_transaction` applies them when the
transaction coordinator's marker reaches the offsets partition; a reload applies those whose
COMMIT marker is in the log and keeps the others pending).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from kio.schema.errors import ErrorCode

from .group import GroupMetadata, GroupState
from .membership import NO_GENERATION, UNKNOWN_MEMBER_ID, GroupMembership, JoinResult, SyncResult, _resolved
from .offsets import encode_group_metadata_key, encode_offset_commit_key
from .offsets_manager import OFFSET_METADATA_MAX_BYTES, CommittedOffset, OffsetManager
from .store import OFFSETS_TOPIC, GroupStore, OffsetsStorage, Record, java_string_hash, partition_for
from .timers import AsyncioTimer, ManualTimer, Timer, TimerHandle

__all__ = [
    "NO_GENERATION",
    "OFFSETS_TOPIC",
    "UNKNOWN_MEMBER_ID",
    "CommittedOffset",
    "GroupCoordinator",
    "JoinResult",
    "ManualTimer",
    "OffsetsStorage",
    "SyncResult",
    "java_string_hash",
    "partition_for",
]

logger = logging.getLogger("dedup.coordinator")


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
        self.groups: dict[str, GroupMetadata] = {}
        self.store = GroupStore(offsets, self.clock)
        self.membership = GroupMembership(
            self.groups, self.store, self.clock, self.timer,
            group_initial_rebalance_delay_ms=group_initial_rebalance_delay_ms,
            group_min_session_timeout_ms=group_min_session_timeout_ms,
            group_max_session_timeout_ms=group_max_session_timeout_ms,
            group_max_size=group_max_size,
        )  # fmt: skip
        self.offset_manager = OffsetManager(self.groups, self.store, self.clock,
                                            offset_metadata_max_bytes=offset_metadata_max_bytes)  # fmt: skip
        self.offsets_retention_ms = offsets_retention_minutes * 60_000
        self.offsets_retention_check_interval_ms = offsets_retention_check_interval_ms
        # Per offsets partition: the (leader id, leader epoch) its groups were loaded under.
        self._loaded: dict[int, tuple[int | None, int]] = {}
        self._closed = False
        self._cleanup: TimerHandle | None = None
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
        if self._cleanup is None and not self._closed:
            # Started by the first request rather than at construction: the server's loop runs by then.
            self._schedule_cleanup()
        return self.offsets.leader(partition)

    def coordinator_error(self, group_id: str, broker_id: int) -> ErrorCode:
        """NONE if ``broker_id`` coordinates ``group_id``, else Kafka's answer (INVALID_GROUP_ID
        for an empty id; NOT_COORDINATOR; COORDINATOR_NOT_AVAILABLE once the coordinator is
        closed)."""
        if not group_id:
            return ErrorCode.invalid_group_id
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
            for group in self.store.replay(partition, cluster):
                self.groups[group.group_id] = group
                for member in group.members.values():
                    self.membership.schedule_heartbeat(group, member)
            logger.info("offsets partition %d loaded from broker %s: %d groups", partition, cluster.leader_id,
                        len([g for g in self.groups if self.partition_for(g) == partition]))  # fmt: skip

    def leadership_changed(self) -> None:
        """After brokers stop or start: every partition whose leader moved is unloaded here
        and loaded from the new leader's log (Kafka's onResignation / onElection)."""
        for partition in self.offsets.created():
            self._ensure_loaded(partition)

    def _unload(self, partition: int) -> None:
        """Kafka's onResignation: the groups leave memory; waiting requests get NOT_COORDINATOR."""
        for group_id in [g for g in self.groups if self.partition_for(g) == partition]:
            group = self.groups.pop(group_id)
            self.membership.cancel_timers(group)
            self.membership.answer_waiting(group, ErrorCode.not_coordinator)
            group.state = GroupState.DEAD
        logger.info("offsets partition %d unloaded", partition)

    def close(self) -> None:
        """Cancel every timer and answer every waiting request (COORDINATOR_NOT_AVAILABLE)."""
        self._closed = True
        if self._cleanup is not None:
            self._cleanup.cancel()
        for group in self.groups.values():
            self.membership.cancel_timers(group)
            self.membership.answer_waiting(group, ErrorCode.coordinator_not_available)
        self.groups.clear()

    # -- offsets retention (KIP-211) ---------------------------------------------------------------

    def _schedule_cleanup(self) -> None:
        self._cleanup = self.timer.schedule(self.offsets_retention_check_interval_ms, self._on_cleanup)

    def _on_cleanup(self) -> None:
        if self._closed:
            return
        try:
            self.cleanup_group_metadata()
        finally:
            self._schedule_cleanup()

    def cleanup_group_metadata(self) -> int:
        """GroupCoordinatorShard.cleanupGroupMetadata, every ``offsets.retention.check.interval.ms``:
        the expired offsets of every loaded group are deleted (tombstones written), and an Empty
        group left without offsets is deleted too (a group tombstone; it goes Dead and leaves
        memory, GroupMetadataManager.maybeDeleteGroup). Returns how many offsets expired. A group
        whose append fails keeps everything until the next check."""
        now = self.clock()
        expired_count = 0
        for group_id, group in list(self.groups.items()):
            if self.groups.get(group_id) is not group or group.is_state(GroupState.DEAD):
                continue
            expired, all_expired = self.offset_manager.expired_offsets(group, now, self.offsets_retention_ms)
            delete_group = all_expired and group.is_state(GroupState.EMPTY)
            records = self.offset_manager.tombstones(group_id, expired)
            if delete_group:
                records.append((encode_group_metadata_key(group_id), None))
            if self.store.append(group_id, records) != ErrorCode.none:
                continue
            for key in expired:
                group.offsets.pop(key, None)
            expired_count += len(expired)
            if expired:
                logger.info("group %s: %d offsets expired", group_id, len(expired))
            if delete_group:
                group.transition_to(GroupState.DEAD, now)
                self.membership.cancel_timers(group)
                del self.groups[group_id]
                logger.info("group %s: empty and without offsets: removed", group_id)
        return expired_count

    # -- JoinGroup, SyncGroup, Heartbeat, LeaveGroup -----------------------------------------------

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
        supports_skip_assignment: bool = False,
    ) -> asyncio.Future[JoinResult]:
        """GroupCoordinator.handleJoinGroup (:meth:`GroupMembership.join_group`). The future
        completes when the rebalance does (or at once with an error). ``require_known_member_id``
        is JoinGroup v4+ (KIP-394), ``supports_skip_assignment`` v9+ (KIP-814)."""
        error = self.coordinator_error(group_id, broker_id)
        if error != ErrorCode.none:
            return _resolved(JoinResult(error, member_id))
        return self.membership.join_group(
            group_id, member_id, group_instance_id, protocol_type, protocols,
            session_timeout_ms=session_timeout_ms, rebalance_timeout_ms=rebalance_timeout_ms, client_id=client_id,
            client_host=client_host, require_known_member_id=require_known_member_id,
            supports_skip_assignment=supports_skip_assignment,
        )  # fmt: skip

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
        """GroupCoordinator.handleSyncGroup (:meth:`GroupMembership.sync_group`)."""
        error = self.coordinator_error(group_id, broker_id)
        if error != ErrorCode.none:
            return _resolved(SyncResult(error))
        return self.membership.sync_group(group_id, generation_id, member_id, group_instance_id, assignments,
                                          protocol_type=protocol_type, protocol_name=protocol_name)  # fmt: skip

    def heartbeat(
        self, broker_id: int, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None
    ) -> ErrorCode:
        """GroupCoordinator.handleHeartbeat (:meth:`GroupMembership.heartbeat`)."""
        error = self.coordinator_error(group_id, broker_id)
        if error != ErrorCode.none:
            return error
        return self.membership.heartbeat(group_id, generation_id, member_id, group_instance_id)

    def leave_group(
        self, broker_id: int, group_id: str, members: list[tuple[str, str | None]]
    ) -> tuple[ErrorCode, list[ErrorCode]]:
        """GroupCoordinator.handleLeaveGroup (:meth:`GroupMembership.leave_group`): the
        group-level error and one per leaving member."""
        error = self.coordinator_error(group_id, broker_id)
        if error != ErrorCode.none:
            return error, []
        return self.membership.leave_group(group_id, members)

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
        """GroupCoordinator.handleCommitOffsets (:meth:`OffsetManager.commit_offsets`); a
        commit of a member counts as its heartbeat, as in Kafka."""
        error = self.coordinator_error(group_id, broker_id)
        if error != ErrorCode.none:
            return dict.fromkeys(offsets, error)
        results = self.offset_manager.commit_offsets(group_id, generation_id, member_id, group_instance_id, offsets)
        group = self.groups.get(group_id)
        member = None if group is None else group.members.get(member_id)
        if group is not None and member is not None:
            self.membership.schedule_heartbeat(group, member)
        return results

    def fetch_offsets(
        self, broker_id: int, group_id: str, partitions: list[tuple[str, int]] | None, require_stable: bool = False
    ) -> tuple[ErrorCode, list[CommittedOffset]]:
        """GroupCoordinator.handleFetchOffsets (:meth:`OffsetManager.fetch_offsets`)."""
        error = self.coordinator_error(group_id, broker_id)
        if error != ErrorCode.none:
            return error, []
        return self.offset_manager.fetch_offsets(group_id, partitions, require_stable)

    def commit_transactional_offsets(
        self,
        broker_id: int,
        transactional_id: str,
        group_id: str,
        producer_id: int,
        producer_epoch: int,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        offsets: dict[tuple[str, int], tuple[int, int, str | None]],
        verify: Callable[[str, int, int, tuple[str, int]], ErrorCode],
    ) -> dict[tuple[str, int], ErrorCode]:
        """TxnOffsetCommit (:meth:`OffsetManager.commit_transactional_offsets`), once ``verify``
        (the transaction coordinator's check of the group's offsets partition in the
        transaction, KIP-890's verification: INVALID_TXN_STATE if it was not added,
        INVALID_PRODUCER_EPOCH for an old epoch) passes."""
        error = self.coordinator_error(group_id, broker_id)
        if error == ErrorCode.none:
            error = verify(transactional_id, producer_id, producer_epoch, (OFFSETS_TOPIC, self.partition_for(group_id)))
        if error != ErrorCode.none:
            return dict.fromkeys(offsets, error)
        return self.offset_manager.commit_transactional_offsets(group_id, producer_id, producer_epoch, generation_id,
                                                                member_id, group_instance_id, offsets)  # fmt: skip

    def complete_transaction(self, partition: int, producer_id: int, commit: bool) -> None:
        """A transaction marker was written on offsets partition ``partition`` (Kafka's
        GroupCoordinator.onTransactionCompleted): the producer's pending offsets of its groups
        are committed or dropped."""
        groups = [group_id for group_id in self.groups if self.partition_for(group_id) == partition]
        committed = self.offset_manager.complete_transaction(groups, producer_id, commit)
        if committed:
            logger.info("offsets partition %d: %d transactional offsets of producer %d committed", partition,
                        committed, producer_id)  # fmt: skip

    def delete_offsets(
        self, broker_id: int, group_id: str, partitions: list[tuple[str, int]]
    ) -> tuple[ErrorCode, dict[tuple[str, int], ErrorCode]]:
        """GroupCoordinator.handleDeleteOffsets (:meth:`OffsetManager.delete_offsets`)."""
        error = self.coordinator_error(group_id, broker_id)
        if error != ErrorCode.none:
            return error, {}
        return self.offset_manager.delete_offsets(group_id, partitions)

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
        error = self.coordinator_error(group_id, broker_id)
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
            error = self.coordinator_error(group_id, broker_id)
            group = self.groups.get(group_id) if error == ErrorCode.none else None
            if error != ErrorCode.none:
                out[group_id] = error
            elif group is None or group.is_state(GroupState.DEAD):
                out[group_id] = ErrorCode.group_id_not_found
            elif not group.is_state(GroupState.EMPTY):
                out[group_id] = ErrorCode.non_empty_group
            else:
                records: list[Record] = [
                    (encode_offset_commit_key(group_id, topic, partition), None) for topic, partition in group.offsets
                ]
                records.append((encode_group_metadata_key(group_id), None))
                stored = self.store.append(group_id, records)
                if stored == ErrorCode.none:
                    group.transition_to(GroupState.DEAD, self.clock())
                    self.membership.cancel_timers(group)
                    del self.groups[group_id]
                out[group_id] = stored
        return out
