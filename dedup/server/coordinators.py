"""The broker's coordinators built from its configuration: the group coordinator over
``__consumer_offsets`` and the transaction coordinator over ``__transaction_state``, their
settings taken from :data:`~dedup.server.config.BROKER_CONFIGS` (the keys' one definition, with
Kafka's defaults and ranges), and the log cleaner's settings. :class:`~dedup.server.core.KafkaServer`
makes them; ``serve``'s command line accepts these keywords."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .. import _args
from ..coordinator.group_coordinator import GroupCoordinator
from ..coordinator.transaction_coordinator import TransactionCoordinator
from .config import BROKER_CONFIGS, INT_MAX, LONG_MAX, ConfigKey
from .topics import OffsetsTopic, Topics, TransactionStateTopic

__all__ = ["CLEANER_OPTIONS", "GROUP_OPTIONS", "TRANSACTION_OPTIONS", "group_coordinator", "transaction_coordinator"]


#: KafkaServer's group coordinator settings: the keyword arguments of the broker configuration's
#: ``group.*`` and ``offsets.*`` keys (:data:`~dedup.server.config.BROKER_CONFIGS`, their one
#: definition, with Kafka's defaults and ranges).
GROUP_OPTIONS: dict[str, ConfigKey] = {
    key.kwarg: key for key in BROKER_CONFIGS.values() if key.kwarg and key.name.startswith(("group.", "offsets."))
}

#: This server's bound on ``offsets.topic.num.partitions`` (Kafka has none; each partition is a
#: replicated log with its files).
_MAX_OFFSETS_PARTITIONS = 10_000

#: The log cleaner's settings: KafkaServer keyword -> Kafka key (CleanerConfig).
CLEANER_OPTIONS = {
    "log_cleaner_enable": "log.cleaner.enable",
    "log_cleaner_backoff_ms": "log.cleaner.backoff.ms",
    "log_cleaner_delete_retention_ms": "log.cleaner.delete.retention.ms",
}


def group_coordinator(
    topics: Topics, brokers: int, options: dict[str, Any], live_brokers: Callable[[], Iterable[int]]
) -> GroupCoordinator:
    """The broker's group coordinator over ``__consumer_offsets`` among ``topics``: ``options``
    by keyword (:data:`GROUP_OPTIONS`), the others at Kafka's defaults, except
    ``offsets_topic_replication_factor``: min(3, brokers) unless given (Kafka's 3 needs 3
    brokers), which is written back into ``options``."""
    highest = {"offsets_topic_replication_factor": brokers, "offsets_topic_num_partitions": _MAX_OFFSETS_PARTITIONS}
    settings: dict[str, Any] = {}
    for kwarg, key in GROUP_OPTIONS.items():
        value = options.get(kwarg, key.default)
        if kwarg == "offsets_topic_replication_factor" and kwarg not in options:
            value = min(key.default, brokers)
        low = 0 if key.low is None else key.low
        high = highest.get(kwarg, INT_MAX if key.type == "INT" else LONG_MAX)
        settings[kwarg] = _args.integer(kwarg, value, low, high, f"in [{low}, {high}]")
    options["offsets_topic_replication_factor"] = settings["offsets_topic_replication_factor"]
    if settings["group_min_session_timeout_ms"] > settings["group_max_session_timeout_ms"]:
        raise ValueError("group_min_session_timeout_ms must not exceed group_max_session_timeout_ms")
    offsets = OffsetsTopic(topics, num_partitions=settings.pop("offsets_topic_num_partitions"),
                           replication_factor=settings.pop("offsets_topic_replication_factor"),
                           segment_bytes=settings.pop("offsets_topic_segment_bytes"),
                           live_brokers=live_brokers)  # fmt: skip
    return GroupCoordinator(offsets, **settings)


#: The transaction coordinator's settings: the keyword arguments of the broker configuration's
#: ``transaction.*`` and ``transactional.*`` keys (:data:`~dedup.server.config.BROKER_CONFIGS`).
TRANSACTION_OPTIONS: dict[str, ConfigKey] = {
    key.kwarg: key
    for key in BROKER_CONFIGS.values()
    if key.kwarg and key.name.startswith(("transaction.", "transactional."))
}


def transaction_coordinator(
    topics: Topics,
    brokers: int,
    options: dict[str, Any],
    live_brokers: Callable[[], Iterable[int]],
    generate_producer_id: Callable[[], int],
    groups: GroupCoordinator,
) -> TransactionCoordinator:
    """The broker's transaction coordinator over ``__transaction_state`` among ``topics``:
    ``options`` by keyword (:data:`TRANSACTION_OPTIONS`), the others at Kafka's defaults, except
    ``transaction_state_log_replication_factor``: min(3, brokers) unless given, written back
    into ``options``. Markers on ``__consumer_offsets`` complete ``groups``' transactional offsets."""
    settings: dict[str, Any] = {}
    for kwarg, key in TRANSACTION_OPTIONS.items():
        value = options.get(kwarg, key.default)
        if kwarg == "transaction_state_log_replication_factor" and kwarg not in options:
            value = min(key.default, brokers)
        low = 1 if key.low is None else key.low
        high = {"transaction_state_log_replication_factor": brokers,
                "transaction_state_log_num_partitions": _MAX_OFFSETS_PARTITIONS}.get(kwarg, INT_MAX)  # fmt: skip
        settings[kwarg] = _args.integer(kwarg, value, low, high, f"in [{low}, {high}]")
    options["transaction_state_log_replication_factor"] = settings["transaction_state_log_replication_factor"]
    storage = TransactionStateTopic(topics, num_partitions=settings.pop("transaction_state_log_num_partitions"),
                                    replication_factor=settings.pop("transaction_state_log_replication_factor"),
                                    segment_bytes=settings.pop("transaction_state_log_segment_bytes"),
                                    live_brokers=live_brokers)  # fmt: skip

    def on_marker(topic: str, partition: int, producer_id: int, commit: bool) -> None:
        if topic == OffsetsTopic.NAME:  # Kafka's GroupCoordinator.onTransactionCompleted
            groups.complete_transaction(partition, producer_id, commit)

    return TransactionCoordinator(storage, generate_producer_id=generate_producer_id, partition=topics.partition,
                                  on_marker=on_marker, **settings)  # fmt: skip
