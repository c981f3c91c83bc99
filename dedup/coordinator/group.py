"""A classic consumer group: its members and its state machine.

Follows Kafka's classic group (``GroupMetadata.scala`` in the old ``kafka.coordinator.group``,
``ClassicGroup.java`` / ``ClassicGroupMember.java`` in ``group-coordinator``)::

    Empty ──join──> PreparingRebalance ──all joined / rebalance timeout──> CompletingRebalance
      ^                  ^       |                                              |
      |                  |       └──every member gone──> Empty                  | leader's SyncGroup
      |                  └──join, leave, expiry─────────────────────────────────┤
      |                                                                         v
      └──────────────────────────────── (members leave) ─────────────────── Stable
    any state ──DeleteGroups, partition unloaded──> Dead

A member's protocols are ``(name, metadata)`` pairs in the member's order of preference;
the group's protocol is chosen by vote among the protocols every member supports
(``ClassicGroup.selectProtocol``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = ["GroupMetadata", "GroupState", "MemberMetadata", "VALID_PREVIOUS_STATES"]


class GroupState(Enum):
    """Kafka's ClassicGroupState; the values are the names DescribeGroups and ListGroups show."""

    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


#: The transitions Kafka allows (ClassicGroupState's validPreviousStates).
VALID_PREVIOUS_STATES = {
    GroupState.EMPTY: {GroupState.PREPARING_REBALANCE},
    GroupState.PREPARING_REBALANCE: {GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY},
    GroupState.COMPLETING_REBALANCE: {GroupState.PREPARING_REBALANCE},
    GroupState.STABLE: {GroupState.COMPLETING_REBALANCE},
    GroupState.DEAD: {
        GroupState.STABLE, GroupState.PREPARING_REBALANCE, GroupState.COMPLETING_REBALANCE,
        GroupState.EMPTY, GroupState.DEAD,
    },
}  # fmt: skip


@dataclass
class MemberMetadata:
    """One member (Kafka's ClassicGroupMember). ``awaiting_join`` / ``awaiting_sync`` are the
    futures of its JoinGroup or SyncGroup waiting in purgatory; ``is_new`` marks a member
    added in the current rebalance (it expires after Kafka's NewMemberJoinTimeoutMs if it
    never rejoins)."""

    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    awaiting_join: asyncio.Future[Any] | None = None
    awaiting_sync: asyncio.Future[Any] | None = None
    is_new: bool = False
    heartbeat_deadline_ms: int = 0

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def metadata(self, protocol: str) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        raise KeyError(f"member {self.member_id} does not support protocol {protocol!r}")

    def matches(self, protocols: list[tuple[str, bytes]]) -> bool:
        return self.protocols == protocols

    def vote(self, candidates: set[str]) -> str:
        """The member's most preferred protocol among ``candidates`` (ClassicGroupMember.vote)."""
        for name in self.protocol_names():
            if name in candidates:
                return name
        raise ValueError(f"member {self.member_id} supports none of {sorted(candidates)}")


@dataclass
class GroupMetadata:
    """One group's state (Kafka's ClassicGroup): members, static members (instance id ->
    member id), members pending after MEMBER_ID_REQUIRED (KIP-394), members of the generation
    that have not sent SyncGroup yet (``pending_sync_members``), the generation and the chosen
    protocol, and its committed offsets ((topic, partition) -> OffsetCommitValue)."""

    group_id: str
    state: GroupState = GroupState.EMPTY
    state_timestamp_ms: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    generation_id: int = 0
    leader_id: str | None = None
    members: dict[str, MemberMetadata] = field(default_factory=dict)
    static_members: dict[str, str] = field(default_factory=dict)
    pending_members: set[str] = field(default_factory=set)
    pending_sync_members: set[str] = field(default_factory=set)
    new_member_added: bool = False
    offsets: dict[tuple[str, int], Any] = field(default_factory=dict)
    #: Transactional offsets written but not yet committed or aborted, by producer id (Kafka's
    #: GroupMetadata.pendingTransactionalOffsetCommits), each with the log offset of its record:
    #: a COMMIT marker moves them into ``offsets``.
    pending_transactional_offsets: dict[int, dict[tuple[str, int], tuple[int, Any]]] = field(default_factory=dict)
    #: The log offset of each committed offset's record: a pending offset replaces only an older one.
    offset_order: dict[tuple[str, int], int] = field(default_factory=dict)

    def is_state(self, *states: GroupState) -> bool:
        return self.state in states

    def transition_to(self, state: GroupState, now_ms: int) -> None:
        if self.state not in VALID_PREVIOUS_STATES[state]:
            raise RuntimeError(f"group {self.group_id}: {self.state.value} -> {state.value} is not a valid transition")
        self.state = state
        self.state_timestamp_ms = now_ms

    # -- members -----------------------------------------------------------------------------------

    def add(self, member: MemberMetadata) -> None:
        if not self.members:
            self.protocol_type = member.protocol_type
        self.members[member.member_id] = member
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = member.member_id
        if self.leader_id is None:
            self.leader_id = member.member_id

    def remove(self, member_id: str) -> MemberMetadata | None:
        member = self.members.pop(member_id, None)
        self.pending_sync_members.discard(member_id)
        if member is not None and member.group_instance_id is not None:
            if self.static_members.get(member.group_instance_id) == member_id:
                del self.static_members[member.group_instance_id]
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)
        return member

    def replace_static_member(self, instance_id: str, old_member_id: str, new_member_id: str) -> MemberMetadata:
        """KIP-345: a static member rejoining with an unknown member id takes the old member's
        place under a new id (ClassicGroup.replaceStaticMember); the old id is fenced."""
        member = self.members.pop(old_member_id)
        member.member_id = new_member_id
        self.members[new_member_id] = member
        self.static_members[instance_id] = new_member_id
        if old_member_id in self.pending_sync_members:
            self.pending_sync_members.discard(old_member_id)
            self.pending_sync_members.add(new_member_id)
        if self.leader_id == old_member_id:
            self.leader_id = new_member_id
        return member

    def is_static_member_fenced(self, group_instance_id: str | None, member_id: str) -> bool:
        """A request naming a known instance id with another member id (FENCED_INSTANCE_ID)."""
        if group_instance_id is None:
            return False
        known = self.static_members.get(group_instance_id)
        return known is not None and known != member_id

    def not_yet_rejoined(self) -> list[MemberMetadata]:
        return [member for member in self.members.values() if member.awaiting_join is None]

    def has_all_members_joined(self) -> bool:
        return not self.pending_members and all(m.awaiting_join is not None for m in self.members.values())

    def max_rebalance_timeout_ms(self) -> int:
        return max((member.rebalance_timeout_ms for member in self.members.values()), default=0)

    # -- protocols ---------------------------------------------------------------------------------

    def candidate_protocols(self) -> set[str]:
        """The protocols every member supports."""
        sets = [set(member.protocol_names()) for member in self.members.values()]
        return set.intersection(*sets) if sets else set()

    def supports_protocols(self, protocol_type: str, protocols: list[tuple[str, bytes]]) -> bool:
        """ClassicGroup.supportsProtocols: an empty group takes any non-empty type and list;
        otherwise the type must be the group's and one protocol common to every member."""
        names = {name for name, _ in protocols}
        if self.is_state(GroupState.EMPTY) and not self.members:
            return bool(protocol_type) and bool(names)
        return protocol_type == self.protocol_type and bool(names & self.candidate_protocols())

    def select_protocol(self) -> str:
        """The protocol with the most votes (each member votes for its preferred candidate;
        ties go to the name first in sorted order, deterministically)."""
        candidates = self.candidate_protocols()
        votes = Counter(member.vote(candidates) for member in self.members.values())
        return max(sorted(votes), key=lambda name: votes[name])

    def current_member_metadata(self) -> list[tuple[str, str | None, bytes]]:
        """What the leader's JoinGroup response carries: each member's id, instance id and
        metadata for the group's protocol."""
        assert self.protocol_name is not None
        return [(m.member_id, m.group_instance_id, m.metadata(self.protocol_name)) for m in self.members.values()]

    def subscribed_topics(self) -> set[str] | None:
        """The topics the consumer members subscribe to (from ConsumerProtocolSubscription,
        any version: int16 version, then an int32 count of int16-length topic names), or None
        if the group is not a consumer group or a subscription does not parse (Kafka then
        treats every topic as subscribed)."""
        if self.protocol_type != "consumer" or self.protocol_name is None:
            return None
        topics: set[str] = set()
        for member in self.members.values():
            data = member.metadata(self.protocol_name)
            try:
                count = int.from_bytes(data[2:6], "big", signed=True)
                at = 6
                for _ in range(count):
                    length = int.from_bytes(data[at : at + 2], "big", signed=True)
                    if length < 0 or at + 2 + length > len(data):
                        return None
                    topics.add(data[at + 2 : at + 2 + length].decode())
                    at += 2 + length
            except (UnicodeDecodeError, ValueError):
                return None
            if count < 0 or len(data) < 6:
                return None
        return topics
