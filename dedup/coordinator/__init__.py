"""Kafka's group coordinator (classic protocol): consumer groups and committed offsets, stored
in ``__consumer_offsets``."""

from .group import GroupMetadata, GroupState, MemberMetadata
from .group_coordinator import (
    GroupCoordinator,
    JoinResult,
    ManualTimer,
    OffsetsStorage,
    SyncResult,
    java_string_hash,
    partition_for,
)

__all__ = [
    "GroupCoordinator",
    "GroupMetadata",
    "GroupState",
    "JoinResult",
    "ManualTimer",
    "MemberMetadata",
    "OffsetsStorage",
    "SyncResult",
    "java_string_hash",
    "partition_for",
]
