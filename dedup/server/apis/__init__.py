"""The requests the front end answers, each mapped onto dedup's cluster and logs, one module
per API family.

One function per API: it takes the broker state (:class:`~dedup.server.core.KafkaServer`),
the id of the broker the request came to and the parsed request, and returns the response
body as a kio entity (None: no response, as for Produce with ``acks=0``), or an awaitable of
one (JoinGroup and SyncGroup wait for the rebalance). Error codes are
Kafka's, per topic partition where Kafka puts them there.
"""

from __future__ import annotations

from ..wire import ApiKey
from .cluster import describe_cluster
from .configs import describe_configs
from .fetch import fetch_partitions, list_offsets
from .groups import (
    delete_groups,
    describe_groups,
    find_coordinator,
    heartbeat,
    join_group,
    leave_group,
    list_groups,
    offset_commit,
    offset_delete,
    offset_fetch,
    sync_group,
)
from .metadata import api_versions, metadata
from .produce import produce, strip_producer_ids
from .sasl import sasl_authenticate, sasl_handshake
from .topics import create_topics, delete_topics
from .transactions import (
    add_offsets_to_txn,
    add_partitions_to_txn,
    describe_transactions,
    end_txn,
    init_producer_id,
    list_transactions,
    txn_offset_commit,
)

__all__ = ["HANDLERS", "fetch_partitions", "strip_producer_ids"]

#: The handler of each API Fetch excepted (it may wait for data: see core.KafkaServer).
HANDLERS = {
    ApiKey.API_VERSIONS: api_versions,
    ApiKey.METADATA: metadata,
    ApiKey.INIT_PRODUCER_ID: init_producer_id,
    ApiKey.PRODUCE: produce,
    ApiKey.LIST_OFFSETS: list_offsets,
    ApiKey.CREATE_TOPICS: create_topics,
    ApiKey.DELETE_TOPICS: delete_topics,
    ApiKey.DESCRIBE_CONFIGS: describe_configs,
    ApiKey.DESCRIBE_CLUSTER: describe_cluster,
    ApiKey.FIND_COORDINATOR: find_coordinator,
    ApiKey.JOIN_GROUP: join_group,
    ApiKey.SYNC_GROUP: sync_group,
    ApiKey.HEARTBEAT: heartbeat,
    ApiKey.LEAVE_GROUP: leave_group,
    ApiKey.OFFSET_COMMIT: offset_commit,
    ApiKey.OFFSET_FETCH: offset_fetch,
    ApiKey.LIST_GROUPS: list_groups,
    ApiKey.DESCRIBE_GROUPS: describe_groups,
    ApiKey.DELETE_GROUPS: delete_groups,
    ApiKey.OFFSET_DELETE: offset_delete,
    ApiKey.ADD_PARTITIONS_TO_TXN: add_partitions_to_txn,
    ApiKey.ADD_OFFSETS_TO_TXN: add_offsets_to_txn,
    ApiKey.END_TXN: end_txn,
    ApiKey.TXN_OFFSET_COMMIT: txn_offset_commit,
    ApiKey.DESCRIBE_TRANSACTIONS: describe_transactions,
    ApiKey.LIST_TRANSACTIONS: list_transactions,
    ApiKey.SASL_HANDSHAKE: sasl_handshake,
    ApiKey.SASL_AUTHENTICATE: sasl_authenticate,
}
