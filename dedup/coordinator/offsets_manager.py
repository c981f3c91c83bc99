"""Committed offsets: OffsetCommit, OffsetFetch, OffsetDelete and their expiry.

Kafka's ``OffsetMetadataManager`` (``group-coordinator``): a commit is validated against the
group (``ClassicGroup.validateOffsetCommit``), stored in the group's ``__consumer_offsets``
partition with acks=all, and only then visible to OffsetFetch; OffsetDelete (KIP-496) writes
tombstones; offsets older than ``offsets.retention.minutes`` expire (KIP-211,
:meth:`OffsetManager.expired_offsets`). The caller (:class:`~dedup.coordinator.GroupCoordinator`) has checked that this
broker coordinates the group and that the group id is not empty.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from kio.schema.errors import ErrorCode

from .group import GroupMetadata, GroupState
from .membership import UNKNOWN_MEMBER_ID
from .offsets import OffsetCommitValue, encode_offset_commit_key, encode_offset_commit_value
from .store import GroupStore, Record

__all__ = ["OFFSET_METADATA_MAX_BYTES", "CommittedOffset", "OffsetManager"]

logger = logging.getLogger("dedup.coordinator")

#: Kafka's ``offset.metadata.max.bytes`` default.
OFFSET_METADATA_MAX_BYTES = 4096


@dataclass
class CommittedOffset:
    topic: str
    partition: int
    offset: int
    leader_epoch: int
    metadata: str
    error: ErrorCode


class OffsetManager:
    """The committed offsets of ``groups`` (group id -> group, shared with the coordinator;
    each group's ``offsets`` maps ``(topic, partition)`` to its :class:`OffsetCommitValue`)."""

    def __init__(
        self,
        groups: dict[str, GroupMetadata],
        store: GroupStore,
        clock: Callable[[], int],
        *,
        offset_metadata_max_bytes: int = OFFSET_METADATA_MAX_BYTES,
    ) -> None:
        self.groups = groups
        self.store = store
        self.clock = clock
        self.offset_metadata_max_bytes = offset_metadata_max_bytes

    def commit_offsets(
        self,
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
        results, records, accepted = self._commit_records(group_id, offsets)
        stored = self.store.append(group_id, records)
        if stored == ErrorCode.none:
            group.offsets.update(accepted)
            group.offset_order.update(dict.fromkeys(accepted, self.store.last_offset))
        for key in accepted:
            results[key] = stored
        return results

    def _commit_records(
        self, group_id: str, offsets: dict[tuple[str, int], tuple[int, int, str | None]]
    ) -> tuple[dict[tuple[str, int], ErrorCode], list[Record], dict[tuple[str, int], OffsetCommitValue]]:
        """The records of a commit of ``offsets`` (OffsetCommit's and TxnOffsetCommit's alike):
        ``(results, records, accepted)``, where ``results`` holds the partitions refused
        already (metadata over ``offset.metadata.max.bytes``: OFFSET_METADATA_TOO_LARGE, as
        GroupMetadataManager.validateOffsetMetadataLength) and ``accepted`` the values to keep
        once the records are stored."""
        results: dict[tuple[str, int], ErrorCode] = {}
        records: list[Record] = []
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
        return results, records, accepted

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

    # -- transactional offsets (KIP-98, KIP-447) ---------------------------------------------------

    def commit_transactional_offsets(
        self,
        group_id: str,
        producer_id: int,
        producer_epoch: int,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        offsets: dict[tuple[str, int], tuple[int, int, str | None]],
    ) -> dict[tuple[str, int], ErrorCode]:
        """TxnOffsetCommit (GroupMetadata.prepareTxnOffsetCommit): the offsets are written in a
        transactional batch of the producer and held as pending until the transaction's marker
        reaches the group's offsets partition (:meth:`complete_transaction`). The caller has
        checked the transaction (its coordinator knows the producer and the partition is in it)."""
        group = self.groups.get(group_id)
        if group is None:  # Kafka creates the group (GroupCoordinator.handleTxnCommitOffsets)
            group = self.groups[group_id] = GroupMetadata(group_id, state_timestamp_ms=self.clock())
        error = self._validate_transactional_commit(group, generation_id, member_id, group_instance_id)
        if error != ErrorCode.none:
            return dict.fromkeys(offsets, error)
        results, records, accepted = self._commit_records(group_id, offsets)
        stored = self.store.append_transactional(group_id, records, producer_id, producer_epoch)
        if stored == ErrorCode.none and accepted:
            held = group.pending_transactional_offsets.setdefault(producer_id, {})
            held.update({key: (self.store.last_offset, value) for key, value in accepted.items()})
        for key in accepted:
            results[key] = stored
        return results

    def _validate_transactional_commit(
        self, group: GroupMetadata, generation_id: int, member_id: str, group_instance_id: str | None
    ) -> ErrorCode:
        """ClassicGroup.validateOffsetCommit with isTransactional: a member's commit is checked
        as OffsetCommit's, without the rebalance and Empty-group conditions."""
        if group.is_state(GroupState.DEAD):
            return ErrorCode.coordinator_not_available
        if generation_id >= 0 or member_id != UNKNOWN_MEMBER_ID or group_instance_id is not None:
            if group.is_static_member_fenced(group_instance_id, member_id):
                return ErrorCode.fenced_instance_id
            if member_id not in group.members:
                return ErrorCode.unknown_member_id
            if generation_id != group.generation_id:
                return ErrorCode.illegal_generation
        return ErrorCode.none

    def complete_transaction(self, group_ids: list[str], producer_id: int, commit: bool) -> int:
        """GroupMetadata.completePendingTxnOffsetCommit for every group of ``group_ids``: the
        producer's pending offsets become committed (COMMIT) or are dropped (ABORT); a pending
        offset does not replace one whose record is later in the log (a plain OffsetCommit
        between the TxnOffsetCommit and the marker wins, as Kafka compares their log offsets).
        Returns how many offsets were committed."""
        committed = 0
        for group_id in group_ids:
            group = self.groups.get(group_id)
            pending = None if group is None else group.pending_transactional_offsets.pop(producer_id, None)
            if group is None or pending is None or not commit:
                continue
            for key, (at, value) in pending.items():
                if key not in group.offsets or group.offset_order.get(key, -1) < at:
                    group.offsets[key] = value
                    group.offset_order[key] = at
                    committed += 1
        return committed

    def has_pending_transactional_offsets(self, group: GroupMetadata, topic: str, partition: int) -> bool:
        return any((topic, partition) in held for held in group.pending_transactional_offsets.values())

    def fetch_offsets(
        self, group_id: str, partitions: list[tuple[str, int]] | None, require_stable: bool = False
    ) -> tuple[ErrorCode, list[CommittedOffset]]:
        """GroupCoordinator.handleFetchOffsets: the committed offsets of ``partitions`` (None:
        every partition the group has committed), -1 where none is committed. With
        ``require_stable`` (OffsetFetch v7+, KIP-447) a partition with a transactional offset
        still pending gets UNSTABLE_OFFSET_COMMIT instead."""
        group = self.groups.get(group_id)
        committed = {} if group is None or group.is_state(GroupState.DEAD) else group.offsets
        wanted = sorted(committed) if partitions is None else partitions
        out = []
        for topic, partition in wanted:
            value = committed.get((topic, partition))
            if require_stable and group is not None and self.has_pending_transactional_offsets(group, topic, partition):
                out.append(CommittedOffset(topic, partition, -1, -1, "", ErrorCode.unstable_offset_commit))
            elif value is None:
                out.append(CommittedOffset(topic, partition, -1, -1, "", ErrorCode.none))
            else:
                out.append(CommittedOffset(topic, partition, value.offset, value.leader_epoch, value.metadata,
                                           ErrorCode.none))  # fmt: skip
        return ErrorCode.none, out

    def delete_offsets(
        self, group_id: str, partitions: list[tuple[str, int]]
    ) -> tuple[ErrorCode, dict[tuple[str, int], ErrorCode]]:
        """GroupCoordinator.handleDeleteOffsets (KIP-496): offsets of topics the group's
        members subscribe to stay (GROUP_SUBSCRIBED_TO_TOPIC); a non-empty group that is not a
        consumer group cannot have offsets deleted (NON_EMPTY_GROUP)."""
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
        records: list[Record] = []
        for topic, partition in partitions:
            if topic in subscribed:
                results[(topic, partition)] = ErrorCode.group_subscribed_to_topic
            else:
                results[(topic, partition)] = ErrorCode.none
                if (topic, partition) in group.offsets:
                    records.append((encode_offset_commit_key(group_id, topic, partition), None))
        stored = self.store.append(group_id, records)
        if stored != ErrorCode.none:
            return stored, {}
        for topic, partition in partitions:
            if results[(topic, partition)] == ErrorCode.none:
                group.offsets.pop((topic, partition), None)
        return ErrorCode.none, results

    # -- expiry ------------------------------------------------------------------------------------

    def expired_offsets(
        self, group: GroupMetadata, now_ms: int, retention_ms: int
    ) -> tuple[list[tuple[str, int]], bool]:
        """OffsetMetadataManager.cleanupExpiredOffsets: the partitions of ``group`` whose
        committed offsets have expired at ``now_ms``, and whether every offset of the group has
        (a group with none counts as all expired). KIP-211 (ClassicGroup.offsetExpirationCondition):

        - an Empty group with a protocol type: retention counts from when it became Empty
          (its state timestamp), or from the commit where that is unknown;
        - a Stable consumer group whose subscriptions parse: retention counts from the commit,
          for topics no member subscribes to;
        - a group without protocol type (commits outside group management): from the commit;
        - any other group: nothing expires.

        An offset stored with an explicit expire timestamp (OffsetCommitValue v1) expires then."""
        if not group.offsets:
            return [], True
        subscribed: set[str] = set()
        if group.protocol_type is None:
            from_state = False
        elif group.is_state(GroupState.EMPTY):
            from_state = group.state_timestamp_ms >= 0
        elif group.is_state(GroupState.STABLE) and (topics := group.subscribed_topics()) is not None:
            from_state, subscribed = False, topics
        else:
            return [], False
        expired = []
        for (topic, partition), value in group.offsets.items():
            if topic in subscribed:
                continue
            if value.expire_timestamp >= 0:
                due = now_ms >= value.expire_timestamp
            else:
                base = group.state_timestamp_ms if from_state else value.commit_timestamp
                due = now_ms - base >= retention_ms
            if due:
                expired.append((topic, partition))
        return expired, len(expired) == len(group.offsets)

    def tombstones(self, group_id: str, partitions: list[tuple[str, int]]) -> list[Record]:
        """The records that delete the committed offsets of ``partitions``."""
        return [(encode_offset_commit_key(group_id, topic, partition), None) for topic, partition in partitions]
