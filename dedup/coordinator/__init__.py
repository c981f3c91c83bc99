"""Kafka's group coordinator (classic protocol): consumer groups and committed offsets, stored
in ``__consumer_offsets``; and Kafka's transaction coordinator, its state stored in
``__transaction_state`` (``transaction_coordinator``: the handlers, loading and timers;
``transaction_metadata``: one transactional id's state machine; ``transaction_log``: the records).

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
from .transaction_coordinator import InitProducerIdResult, TransactionCoordinator
from .transaction_metadata import TransactionMetadata, TransactionState

__all__ = [
    "GroupCoordinator",
    "GroupMetadata",
    "GroupState",
    "InitProducerIdResult",
    "JoinResult",
    "ManualTimer",
    "MemberMetadata",
    "OffsetsStorage",
    "SyncResult",
    "TransactionCoordinator",
    "TransactionMetadata",
    "TransactionState",
    "java_string_hash",
    "partition_for",
]
