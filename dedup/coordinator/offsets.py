"""The records of Kafka's ``__consumer_offsets`` topic: keys and values as Kafka writes them.

Layouts from Kafka's ``group-coordinator/src/main/resources/common/message/`` schemas
(``OffsetCommitKey.json``, ``OffsetCommitValue.json``, ``GroupMetadataKey.json``,
``GroupMetadataValue.json``), read back by Kafka's ``GroupCoordinatorRecordSerde``. Every key
and value starts with its int16 schema version; strings are int16-length UTF-8 (-1 for null),
bytes int32-length, all big-endian (versions 0-3: the non-flexible ones).

- Key versions 0 and 1: an offset commit, ``group``, ``topic``, ``partition`` (int32).
  Key version 2: a group's metadata, ``group``.
- ``OffsetCommitValue`` v3 (written): ``offset`` int64, ``leaderEpoch`` int32,
  ``metadata`` string, ``commitTimestamp`` int64. v0 lacks the leader epoch; v1 adds
  ``expireTimestamp`` int64 after the commit timestamp; v2 is v0's layout.
- ``GroupMetadataValue`` v3 (written, as Kafka 2.3+ does): ``protocolType``, ``generation``
  int32, ``protocol`` (nullable), ``leader`` (nullable), ``currentStateTimestamp`` int64
  (v2+), then ``members``: int32 count, each ``memberId``, ``groupInstanceId`` (v3+,
  nullable), ``clientId``, ``clientHost``, ``rebalanceTimeout`` int32 (v1+),
  ``sessionTimeout`` int32, ``subscription`` bytes, ``assignment`` bytes.

A null value (a tombstone) deletes the key: an offset removed by OffsetDelete, a group
removed by DeleteGroups. Version 4 of the values (flexible, KIP-915) is neither written nor
read: a record of it is a :class:`CorruptOffsetsRecord`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .record_fields import INT16 as _INT16
from .record_fields import INT32 as _INT32
from .record_fields import INT64 as _INT64
from .record_fields import FieldReader

__all__ = [
    "CorruptOffsetsRecord",
    "GroupMetadataValue",
    "MemberMetadataValue",
    "OffsetCommitValue",
    "decode_group_metadata_value",
    "decode_key",
    "decode_offset_commit_value",
    "encode_group_metadata_key",
    "encode_group_metadata_value",
    "encode_offset_commit_key",
    "encode_offset_commit_value",
]

OFFSET_COMMIT_KEY_VERSION = 1
GROUP_METADATA_KEY_VERSION = 2
OFFSET_COMMIT_VALUE_VERSION = 3
GROUP_METADATA_VALUE_VERSION = 3



class CorruptOffsetsRecord(ValueError):
    """A key or value of ``__consumer_offsets`` that does not parse (names what and where)."""


@dataclass(frozen=True)
class OffsetCommitValue:
    offset: int
    leader_epoch: int = -1
    metadata: str = ""
    commit_timestamp: int = -1
    expire_timestamp: int = -1  # v1 only


@dataclass(frozen=True)
class MemberMetadataValue:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


@dataclass(frozen=True)
class GroupMetadataValue:
    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp: int = -1
    members: list[MemberMetadataValue] = field(default_factory=list)


# --- writing ------------------------------------------------------------------------------------


def _string(value: str | None) -> bytes:
    if value is None:
        return _INT16.pack(-1)
    data = value.encode()
    if len(data) > 0x7FFF:
        raise ValueError(f"a string of {len(data)} bytes does not fit Kafka's int16 length")
    return _INT16.pack(len(data)) + data


def _bytes(value: bytes) -> bytes:
    return _INT32.pack(len(value)) + value


def encode_offset_commit_key(group: str, topic: str, partition: int) -> bytes:
    return _INT16.pack(OFFSET_COMMIT_KEY_VERSION) + _string(group) + _string(topic) + _INT32.pack(partition)


def encode_group_metadata_key(group: str) -> bytes:
    return _INT16.pack(GROUP_METADATA_KEY_VERSION) + _string(group)


def encode_offset_commit_value(value: OffsetCommitValue) -> bytes:
    return b"".join((
        _INT16.pack(OFFSET_COMMIT_VALUE_VERSION),
        _INT64.pack(value.offset),
        _INT32.pack(value.leader_epoch),
        _string(value.metadata),
        _INT64.pack(value.commit_timestamp),
    ))  # fmt: skip


def encode_group_metadata_value(value: GroupMetadataValue) -> bytes:
    parts = [
        _INT16.pack(GROUP_METADATA_VALUE_VERSION),
        _string(value.protocol_type),
        _INT32.pack(value.generation),
        _string(value.protocol),
        _string(value.leader),
        _INT64.pack(value.current_state_timestamp),
        _INT32.pack(len(value.members)),
    ]
    for member in value.members:
        parts += [
            _string(member.member_id),
            _string(member.group_instance_id),
            _string(member.client_id),
            _string(member.client_host),
            _INT32.pack(member.rebalance_timeout_ms),
            _INT32.pack(member.session_timeout_ms),
            _bytes(member.subscription),
            _bytes(member.assignment),
        ]
    return b"".join(parts)


# --- reading ------------------------------------------------------------------------------------


def decode_key(data: bytes) -> tuple[str, str | None, int]:
    """``(group, topic, partition)`` for an offset commit key (versions 0 and 1),
    ``(group, None, -1)`` for a group metadata key (version 2)."""
    reader = FieldReader(data, "__consumer_offsets key", CorruptOffsetsRecord)
    version = reader.int16("version")
    group = reader.string("group")
    if version in (0, 1):
        topic = reader.string("topic")
        partition = reader.int32("partition")
        reader.end()
        return group, topic, partition
    if version == GROUP_METADATA_KEY_VERSION:
        reader.end()
        return group, None, -1
    raise CorruptOffsetsRecord(f"__consumer_offsets key: version: expected 0, 1 or 2, found {version}")


def decode_offset_commit_value(data: bytes) -> OffsetCommitValue:
    reader = FieldReader(data, "OffsetCommitValue", CorruptOffsetsRecord)
    version = reader.int16("version")
    if not 0 <= version <= 3:
        raise CorruptOffsetsRecord(f"OffsetCommitValue: version: expected 0 to 3, found {version}")
    offset = reader.int64("offset")
    leader_epoch = reader.int32("leaderEpoch") if version >= 3 else -1
    metadata = reader.string("metadata")
    commit_timestamp = reader.int64("commitTimestamp")
    expire_timestamp = reader.int64("expireTimestamp") if version == 1 else -1
    reader.end()
    return OffsetCommitValue(offset, leader_epoch, metadata, commit_timestamp, expire_timestamp)


def decode_group_metadata_value(data: bytes) -> GroupMetadataValue:
    reader = FieldReader(data, "GroupMetadataValue", CorruptOffsetsRecord)
    version = reader.int16("version")
    if not 0 <= version <= 3:
        raise CorruptOffsetsRecord(f"GroupMetadataValue: version: expected 0 to 3, found {version}")
    protocol_type = reader.string("protocolType")
    generation = reader.int32("generation")
    protocol = reader.nullable_string("protocol")
    leader = reader.nullable_string("leader")
    timestamp = reader.int64("currentStateTimestamp") if version >= 2 else -1
    count = reader.int32("members")
    if count < 0 or count > len(data):
        raise CorruptOffsetsRecord(f"GroupMetadataValue: members: a count of {count} in {len(data)} bytes")
    members = []
    for _ in range(count):
        member_id = reader.string("memberId")
        instance = reader.nullable_string("groupInstanceId") if version >= 3 else None
        client_id = reader.string("clientId")
        client_host = reader.string("clientHost")
        rebalance_timeout = reader.int32("rebalanceTimeout") if version >= 1 else -1
        session_timeout = reader.int32("sessionTimeout")
        if version == 0:
            rebalance_timeout = session_timeout  # v0 had one timeout for both (Kafka's reader does the same)
        subscription = reader.bytes_field("subscription")
        assignment = reader.bytes_field("assignment")
        members.append(MemberMetadataValue(member_id, instance, client_id, client_host, rebalance_timeout,
                                           session_timeout, subscription, assignment))  # fmt: skip
    reader.end()
    return GroupMetadataValue(protocol_type, generation, protocol, leader, timestamp, members)
