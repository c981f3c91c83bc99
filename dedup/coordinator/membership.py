"""Membership of classic groups: JoinGroup, SyncGroup, Heartbeat, LeaveGroup and the rebalance.

Kafka's ``GroupMetadataManager`` (classic groups: ``classicGroupJoin``, ``classicGroupSync``,
``classicGroupHeartbeat``, ``classicGroupLeave``, with the old ``GroupCoordinator.scala``'s
``handleJoinGroup``... as their ancestors). JoinGroup and SyncGroup wait (Kafka's purgatory: here
asyncio futures); the deadlines run on a :class:`~dedup.coordinator.timers.Timer`: a member's
session, the rebalance timeout (members that do not rejoin are removed), the initial rebalance
delay of a new group (``group.initial.rebalance.delay.ms``), and the pending-sync timeout
(members that do not send SyncGroup after a rebalance are removed). A generation's assignment
is stored (:class:`~dedup.coordinator.store.GroupStore`) before any member gets its own.

The caller (:class:`~dedup.coordinator.GroupCoordinator`) has checked that this broker
coordinates the group and that the group id is not empty.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kio.schema.errors import ErrorCode

from .group import GroupMetadata, GroupState, MemberMetadata
from .store import GroupStore
from .timers import Timer, TimerHandle

__all__ = [
    "MAX_MEMBER_METADATA_BYTES",
    "NO_GENERATION",
    "UNKNOWN_MEMBER_ID",
    "GroupMembership",
    "JoinResult",
    "SyncResult",
]

logger = logging.getLogger("dedup.coordinator")

#: The largest protocol metadata (all of a member's protocols together) or assignment a
#: member may send: Kafka's ``message.max.bytes`` (1 MiB + 12), since a group's metadata record
#: holding more could never be stored. Kafka itself accepts the JoinGroup and fails at the
#: store; dedup refuses it up front with INVALID_REQUEST, so a hostile member cannot make the
#: coordinator hold more than this per member.
MAX_MEMBER_METADATA_BYTES = 1048588
#: Kafka's JoinGroupRequest.UNKNOWN_MEMBER_ID and UNKNOWN_GENERATION_ID.
UNKNOWN_MEMBER_ID = ""
NO_GENERATION = -1

class JoinArgs(NamedTuple):
    """What a JoinGroup carries besides its ids."""

    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]


@dataclass
class JoinResult:
    error: ErrorCode
    member_id: str = UNKNOWN_MEMBER_ID
    generation_id: int = NO_GENERATION
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str = ""
    members: list[tuple[str, str | None, bytes]] = field(default_factory=list)
    skip_assignment: bool = False


@dataclass
class SyncResult:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


def _resolved(value: Any) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


def _complete(future: asyncio.Future[Any] | None, value: Any) -> None:
    if future is not None and not future.done():
        future.set_result(value)


class GroupMembership:
    """The members of ``groups`` (group id -> group, shared with the coordinator) and their
    rebalances. Options are Kafka's ``group.*`` broker settings in snake case."""

    def __init__(
        self,
        groups: dict[str, GroupMetadata],
        store: GroupStore,
        clock: Callable[[], int],
        timer: Timer,
        *,
        group_initial_rebalance_delay_ms: int,
        group_min_session_timeout_ms: int,
        group_max_session_timeout_ms: int,
        group_max_size: int,
    ) -> None:
        self.groups = groups
        self.store = store
        self.clock = clock
        self.timer = timer
        self.initial_rebalance_delay_ms = group_initial_rebalance_delay_ms
        self.min_session_timeout_ms = group_min_session_timeout_ms
        self.max_session_timeout_ms = group_max_session_timeout_ms
        self.max_size = group_max_size
        self._heartbeats: dict[tuple[str, str], TimerHandle] = {}
        self._joins: dict[str, TimerHandle] = {}
        self._syncs: dict[str, TimerHandle] = {}
        self._initial_join: dict[str, int] = {}  # group -> rebalance time left after the initial delays

    def cancel_timers(self, group: GroupMetadata) -> None:
        """Every deadline of ``group`` (it is unloaded, deleted or the coordinator closes)."""
        for key in [k for k in self._heartbeats if k[0] == group.group_id]:
            self._heartbeats.pop(key).cancel()
        for timers in (self._joins, self._syncs):
            handle = timers.pop(group.group_id, None)
            if handle is not None:
                handle.cancel()
        self._initial_join.pop(group.group_id, None)

    def answer_waiting(self, group: GroupMetadata, error: ErrorCode) -> None:
        """Every JoinGroup and SyncGroup of ``group`` still waiting gets ``error``."""
        for member in group.members.values():
            _complete(member.awaiting_join, JoinResult(error, member.member_id))
            _complete(member.awaiting_sync, SyncResult(error))

    # -- timers ------------------------------------------------------------------------------------

    def schedule_heartbeat(self, group: GroupMetadata, member: MemberMetadata) -> None:
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
            self.schedule_heartbeat(group, member)
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
        self._remove_sync_expiration(group)
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

    def _schedule_pending_sync(self, group: GroupMetadata) -> None:
        """GroupMetadataManager.schedulePendingSync: every member of the new generation must
        send SyncGroup within the group's rebalance timeout."""
        generation = group.generation_id
        self._remove_sync_expiration(group, clear=False)
        self._syncs[group.group_id] = self.timer.schedule(
            group.max_rebalance_timeout_ms(), lambda: self._on_pending_sync_expired(group, generation)
        )

    def _remove_sync_expiration(self, group: GroupMetadata, *, clear: bool = True) -> None:
        if clear:
            group.pending_sync_members.clear()
        handle = self._syncs.pop(group.group_id, None)
        if handle is not None:
            handle.cancel()

    def _received_sync(self, group: GroupMetadata, member_id: str) -> None:
        """GroupMetadataManager.removePendingSyncMember."""
        group.pending_sync_members.discard(member_id)
        if not group.pending_sync_members:
            self._remove_sync_expiration(group)

    def _on_pending_sync_expired(self, group: GroupMetadata, generation: int) -> None:
        """GroupMetadataManager.expirePendingSync: the members of ``generation`` that never
        sent SyncGroup are removed (their heartbeats alone do not keep them) and the group
        rebalances without them."""
        self._syncs.pop(group.group_id, None)
        if self.groups.get(group.group_id) is not group or group.generation_id != generation:
            return
        if not group.is_state(GroupState.COMPLETING_REBALANCE, GroupState.STABLE) or not group.pending_sync_members:
            return
        missing = sorted(group.pending_sync_members)
        for member_id in missing:
            self._remove_heartbeat(group, member_id)
            group.remove(member_id)
        logger.info("group %s: members %s sent no SyncGroup in generation %d: removed", group.group_id, missing,
                    generation)  # fmt: skip
        self._prepare_rebalance(group)

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
            error = self.store.store_group(group, {})
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
            self.schedule_heartbeat(group, member)
            group.pending_sync_members.add(member.member_id)
        self._schedule_pending_sync(group)

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
        """GroupCoordinator.handleJoinGroup. The future completes when the rebalance does (or at
        once with an error). ``require_known_member_id`` is JoinGroup v4+ (KIP-394): a new
        member without an id gets MEMBER_ID_REQUIRED and its new id, and rejoins with it.
        ``supports_skip_assignment`` is JoinGroup v9+ (KIP-814), see
        :meth:`_update_static_member_and_rebalance`."""
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
        if (
            len(group.members) + len(group.pending_members) >= self.max_size
            and not known
            and (group_instance_id is None or group_instance_id not in group.static_members)
        ):
            return _resolved(JoinResult(ErrorCode.group_max_size_reached, member_id))
        future: asyncio.Future[JoinResult] = asyncio.get_running_loop().create_future()
        args = JoinArgs(client_id, client_host, rebalance_timeout_ms, session_timeout_ms, protocol_type, protocols)
        if is_unknown:
            self._unknown_member_join(group, group_instance_id, require_known_member_id, args, future,
                                      supports_skip_assignment)  # fmt: skip
        else:
            self._known_member_join(group, member_id, group_instance_id, args, future)
        return future

    def _unknown_member_join(
        self,
        group: GroupMetadata,
        group_instance_id: str | None,
        require_known_member_id: bool,
        args: JoinArgs,
        future: asyncio.Future[JoinResult],
        supports_skip_assignment: bool,
    ) -> None:
        client_id, protocol_type, protocols = args.client_id, args.protocol_type, args.protocols
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
            logger.info("group %s: static member %s: %s replaces %s", group.group_id, group_instance_id,
                        new_member_id, old_member_id)  # fmt: skip
            self._update_static_member_and_rebalance(
                group, group_instance_id, old_member_id, new_member_id, args, future, supports_skip_assignment
            )
        elif group_instance_id is None and require_known_member_id:
            # KIP-394: the new member learns its id first, and must rejoin with it within its session.
            group.pending_members.add(new_member_id)
            pending = MemberMetadata(new_member_id, None, client_id, "", 0, args.session_timeout_ms, protocol_type,
                                     protocols)  # fmt: skip
            self.schedule_heartbeat(group, pending)
            future.set_result(JoinResult(ErrorCode.member_id_required, new_member_id))
        else:
            self._add_member_and_rebalance(group, new_member_id, group_instance_id, args, future)

    def _update_static_member_and_rebalance(
        self,
        group: GroupMetadata,
        group_instance_id: str,
        old_member_id: str,
        new_member_id: str,
        args: JoinArgs,
        future: asyncio.Future[JoinResult],
        supports_skip_assignment: bool,
    ) -> None:
        """KIP-345: a static member rejoining without its member id (the instance restarted)
        takes its old place under ``new_member_id`` (GroupMetadataManager
        .updateStaticMemberThenRebalanceOrCompleteJoin). In a Stable group whose selected protocol
        it does not change, there is no rebalance: the group is stored with the new member id and
        the member is answered at once in the current generation, then gets its assignment from
        SyncGroup. It is told the leader as it was before the replacement, so a rejoining leader
        does not compute a new assignment, unless it can be told to skip it (JoinGroup v9+,
        KIP-814: it gets the members with ``skip_assignment``). If the store fails, the
        replacement is undone and the member gets the error (the old member id stays valid)."""
        current_leader = group.leader_id or ""
        member = group.replace_static_member(group_instance_id, old_member_id, new_member_id)
        self.schedule_heartbeat(group, member)
        old_fields = (member.rebalance_timeout_ms, member.session_timeout_ms, member.protocols)
        member.rebalance_timeout_ms, member.session_timeout_ms = args.rebalance_timeout_ms, args.session_timeout_ms
        member.protocols = args.protocols
        if group.is_state(GroupState.STABLE):
            if group.protocol_name != group.select_protocol():
                member.awaiting_join = future
                self._maybe_prepare_rebalance(group)
                return
            stored = self.store.store_group(group)
            if stored != ErrorCode.none:
                member.rebalance_timeout_ms, member.session_timeout_ms, member.protocols = old_fields
                self._remove_heartbeat(group, new_member_id)
                self.schedule_heartbeat(group, group.replace_static_member(group_instance_id, new_member_id,
                                                                           old_member_id))  # fmt: skip
                future.set_result(JoinResult(stored, UNKNOWN_MEMBER_ID, group.generation_id, group.protocol_type,
                                             group.protocol_name, current_leader))  # fmt: skip
                return
            logger.info("group %s: static member %s rejoined a Stable group: no rebalance", group.group_id,
                        group_instance_id)  # fmt: skip
            result = JoinResult(ErrorCode.none, new_member_id, group.generation_id, group.protocol_type,
                                group.protocol_name, current_leader)  # fmt: skip
            if supports_skip_assignment:
                result.leader_id = group.leader_id or ""
                if group.leader_id == new_member_id:
                    result.members, result.skip_assignment = group.current_member_metadata(), True
            future.set_result(result)
            return
        member.awaiting_join = future
        if group.is_state(GroupState.COMPLETING_REBALANCE):
            # The leader may already have been given the old member id to assign: start over.
            self._prepare_rebalance(group)
        else:  # PreparingRebalance
            self._check_join(group)

    def _known_member_join(
        self,
        group: GroupMetadata,
        member_id: str,
        group_instance_id: str | None,
        args: JoinArgs,
        future: asyncio.Future[JoinResult],
    ) -> None:
        protocol_type, protocols = args.protocol_type, args.protocols
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
        args: JoinArgs,
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
        self.schedule_heartbeat(group, member)
        self._maybe_prepare_rebalance(group)
        self._check_join(group)

    def _update_member_and_rebalance(
        self,
        group: GroupMetadata,
        member: MemberMetadata,
        args: JoinArgs,
        future: asyncio.Future[JoinResult],
    ) -> None:
        member.rebalance_timeout_ms, member.session_timeout_ms = args.rebalance_timeout_ms, args.session_timeout_ms
        member.protocols = args.protocols
        _complete(member.awaiting_join, JoinResult(ErrorCode.rebalance_in_progress, member.member_id))
        member.awaiting_join = future
        self._maybe_prepare_rebalance(group)
        self._check_join(group)

    # -- SyncGroup ---------------------------------------------------------------------------------

    def sync_group(
        self,
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
            self._received_sync(group, member_id)
            self.schedule_heartbeat(group, member)
            return _resolved(SyncResult(ErrorCode.none, group.protocol_type, group.protocol_name, member.assignment))
        # CompletingRebalance
        self._received_sync(group, member_id)
        future: asyncio.Future[SyncResult] = asyncio.get_running_loop().create_future()
        _complete(member.awaiting_sync, SyncResult(ErrorCode.rebalance_in_progress))
        member.awaiting_sync = future
        self.schedule_heartbeat(group, member)
        if member_id == group.leader_id:
            full = {m: assignments.get(m, b"") for m in group.members}
            stored = self.store.store_group(group, full)
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

    def heartbeat(self, group_id: str, generation_id: int, member_id: str, group_instance_id: str | None) -> ErrorCode:
        """GroupCoordinator.handleHeartbeat."""
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
        self.schedule_heartbeat(group, member)
        if group.is_state(GroupState.PREPARING_REBALANCE):
            return ErrorCode.rebalance_in_progress
        return ErrorCode.none

    def leave_group(self, group_id: str, members: list[tuple[str, str | None]]) -> tuple[ErrorCode, list[ErrorCode]]:
        """GroupCoordinator.handleLeaveGroup: the group-level error and one per leaving member
        (``(member_id, group_instance_id)``; v3+ may name a static member by instance id only)."""
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
