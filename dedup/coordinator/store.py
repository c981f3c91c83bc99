"""Where groups live on disk: the ``__consumer_offsets`` partitions, written and replayed.

Kafka's ``GroupMetadataManager`` owns a group's records: ``partitionFor`` places a group on a
partition of the offsets topic, ``storeGroup``/``storeOffsets`` append its records there (acks=all:
a change is acknowledged only once every in-sync replica has it), and
``loadGroupsForPartition`` replays a partition's log into groups when its leadership moves here.
:class:`GroupStore` is that part; the record layouts are :mod:`dedup.coordinator.offsets`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from kio.schema.errors import ErrorCode

from .._types import Origin
from ..batch import Record as LogRecord
from ..batch import decode_records, encode_batch
from ..cluster import FETCH_MAX_BYTES, Cluster
from ..errors import KafkaError, NotEnoughReplicasAfterAppendError
from ..records import scan_batches
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
)

__all__ = ["OFFSETS_TOPIC", "GroupStore", "OffsetsStorage", "java_string_hash", "partition_for"]

logger = logging.getLogger("dedup.coordinator")

OFFSETS_TOPIC = "__consumer_offsets"

#: A record to append: its key and its value (None: a tombstone).
Record = tuple[bytes, bytes | None]


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


class GroupStore:
    """The groups' records in ``offsets`` (the ``__consumer_offsets`` partitions), batches
    stamped with ``clock()`` (ms)."""

    def __init__(self, offsets: OffsetsStorage, clock: Callable[[], int]) -> None:
        self.offsets = offsets
        self.clock = clock
        #: The log offset of the last record appended (the order of commits, for transactional offsets).
        self.last_offset = -1

    def partition_for(self, group_id: str) -> int:
        return partition_for(group_id, self.offsets.num_partitions)

    def append(self, group_id: str, records: list[Record]) -> ErrorCode:
        """Append ``(key, value)`` records to the group's offsets partition with acks=all:
        NONE, or the coordinator error Kafka maps the append's failure to."""
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
                self.last_offset = response.last_offset
        return self._append_error(group_id, response_error)

    def append_transactional(
        self, group_id: str, records: list[Record], producer_id: int, producer_epoch: int
    ) -> ErrorCode:
        """TxnOffsetCommit's records as Kafka's group coordinator writes them: one transactional
        batch of ``producer_id``/``producer_epoch`` (base sequence 0: the coordinator reuses it,
        KAFKA-8335), appended by the leader with origin COORDINATOR (no sequence check, the
        epoch checked: a stale one is INVALID_PRODUCER_EPOCH) and replicated, acks=all. The
        transaction's marker, written there by the transaction coordinator, completes them."""
        if not records:
            return ErrorCode.none
        cluster = self.offsets.partition(self.partition_for(group_id))
        if cluster is None:
            return ErrorCode.coordinator_not_available
        batch = encode_batch([v for _, v in records], keys=[k for k, _ in records], timestamp=self.clock(),
                             producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=0,
                             transactional=True)  # fmt: skip
        failure: KafkaError | None = None
        try:
            info = cluster.leader_log.append_as_leader(batch, leader_epoch=cluster.leader_epoch,
                                                       origin=Origin.COORDINATOR)  # fmt: skip
            cluster.replicate()
            if cluster.high_watermark <= info.last_offset:
                failure = NotEnoughReplicasAfterAppendError(
                    f"offset {info.last_offset} is on the leader but not yet on every in-sync replica"
                )
            else:
                self.last_offset = info.last_offset
        except KafkaError as error:
            failure = error
        if failure is not None and ErrorCode(failure.code) in (ErrorCode.invalid_producer_epoch,
                                                                ErrorCode.producer_fenced):  # fmt: skip
            return ErrorCode.invalid_producer_epoch
        return self._append_error(group_id, failure)

    def _append_error(self, group_id: str, response_error: KafkaError | None) -> ErrorCode:
        if response_error is None:
            return ErrorCode.none
        code = ErrorCode(response_error.code)
        logger.warning("group %s: append to %s-%d failed: %s", group_id, OFFSETS_TOPIC,
                       self.partition_for(group_id), response_error)  # fmt: skip
        return _APPEND_ERRORS.get(code, ErrorCode.unknown_server_error)

    def store_group(self, group: GroupMetadata, assignments: dict[str, bytes] | None = None) -> ErrorCode:
        """GroupMetadataManager.storeGroup: the group's generation, protocol, leader, the time
        of its state and each member's subscription and assignment (``assignments``, or the
        members' current ones)."""
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
        return self.append(group.group_id, [(encode_group_metadata_key(group.group_id),
                                             encode_group_metadata_value(value))])  # fmt: skip

    def replay(self, partition: int, cluster: Cluster) -> list[GroupMetadata]:
        """Kafka's loadGroupsForPartition: the groups of ``cluster``'s log (its leader's, up to
        the high watermark), latest record per key, tombstones applied; a group with members
        comes back Stable in its last generation, one without Empty. A record that does not
        parse is logged and skipped."""
        offsets: dict[str, dict[tuple[str, int], OffsetCommitValue]] = {}
        positions: dict[tuple[str, str, int], int] = {}  # the log offset each loaded offset came from
        metadata: dict[str, GroupMetadataValue | None] = {}
        # GroupMetadataManager.loadGroupsAndOffsets: transactional offsets wait for their marker.
        pending: dict[int, dict[tuple[str, str, int], tuple[int, OffsetCommitValue]]] = {}
        for producer_id, record in _replay_records(cluster):
            if isinstance(record, bool):  # a marker of producer_id's transaction: COMMIT (True) or ABORT
                held = pending.pop(producer_id, {})
                for where, (offset, held_value) in held.items() if record else ():
                    # Kafka's loader: the later of it and a plain commit still there wins
                    if where[1:] not in offsets.get(where[0], {}) or positions.get(where, -1) < offset:
                        offsets.setdefault(where[0], {})[where[1:]] = held_value
                        positions[where] = offset
                continue
            if record.key is None:
                continue
            try:
                group_id, topic, topic_partition = decode_key(record.key)
                if topic is None:
                    value = None if record.value is None else decode_group_metadata_value(record.value)
                    metadata[group_id] = value
                    if value is None:
                        offsets.pop(group_id, None)
                elif producer_id >= 0 and record.value is not None:
                    committed = decode_offset_commit_value(record.value)
                    pending.setdefault(producer_id, {})[(group_id, topic, topic_partition)] = (record.offset, committed)
                elif record.value is None:
                    offsets.get(group_id, {}).pop((topic, topic_partition), None)
                else:
                    committed = decode_offset_commit_value(record.value)
                    offsets.setdefault(group_id, {})[(topic, topic_partition)] = committed
                    positions[(group_id, topic, topic_partition)] = record.offset
            except CorruptOffsetsRecord as error:
                logger.error("offsets partition %d, offset %d: skipped: %s", partition, record.offset, error)
        still_open: dict[str, dict[int, dict[tuple[str, int], tuple[int, OffsetCommitValue]]]] = {}
        for producer_id, held in pending.items():
            for (group_id, topic, topic_partition), entry in held.items():
                by_producer = still_open.setdefault(group_id, {}).setdefault(producer_id, {})
                by_producer[(topic, topic_partition)] = entry
        groups = []
        for group_id in sorted(set(offsets) | set(still_open) | {g for g, v in metadata.items() if v is not None}):
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
                if value.current_state_timestamp >= 0:
                    # Kafka's currentStateTimestamp: when an Empty group became empty, the base of
                    # its offsets' retention (ClassicGroup.offsetExpirationCondition).
                    group.state_timestamp_ms = value.current_state_timestamp
            group.offsets = offsets.get(group_id, {})
            group.pending_transactional_offsets = still_open.get(group_id, {})
            group.offset_order = {(t, p): at for (g, t, p), at in positions.items() if g == group_id}
            groups.append(group)
        return groups


def _replay_records(cluster: Cluster) -> list[tuple[int, LogRecord | bool]]:
    """The leader's log up to the high watermark in order: ``(producer_id, record)`` for each
    record (producer id -1 unless the batch is transactional), ``(producer_id, commit)`` for
    each transaction marker."""
    log = cluster.leader_log
    offset, end = log.log_start_offset, log.high_watermark
    out: list[tuple[int, LogRecord | bool]] = []
    while offset < end:
        chunk = log.read(offset, FETCH_MAX_BYTES, max_offset=end)
        if not chunk:
            break
        headers = scan_batches(chunk)
        for header in headers:
            start = int(header["position"])
            batch = memoryview(chunk)[start : start + int(header["batch_length"]) + 12]
            producer_id = int(header["producer_id"]) if header["is_transactional"] else -1
            if header["is_control"]:
                control = decode_records(batch, control=True)
                key = control[0].key if control else None
                if key is not None and len(key) >= 4 and int.from_bytes(key[2:4], "big") in (0, 1):
                    out.append((producer_id, int.from_bytes(key[2:4], "big") == 1))
                continue
            out.extend((producer_id, record) for record in decode_records(batch) if record.offset < end)
        offset = int(headers["base_offset"][-1]) + int(headers["last_offset_delta"][-1]) + 1
    return out
