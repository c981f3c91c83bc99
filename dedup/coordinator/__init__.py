"""Kafka's group coordinator (classic protocol): consumer groups and committed offsets, stored
in ``__consumer_offsets``.

``group_coordinator`` (the service the APIs call: placement, loading, entry points),
``membership`` (join, sync, heartbeat, leave, rebalance), ``offsets_manager`` (commit, fetch,
delete, expiry), ``store`` (the offsets topic's records written and replayed), ``group`` (a
group and its members), ``offsets`` (the record layouts), ``timers`` (clock and timers)."""

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
