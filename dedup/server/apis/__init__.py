"""The requests the front end answers, each mapped onto dedup's cluster and logs, one module
per API family.

One function per API: it takes the broker state (:class:`~dedup.server.core.KafkaServer`),
the id of the broker the request came to and the parsed request, and returns the response
body as a kio entity (None: no response, as for Produce with ``acks=0``). Error codes are
Kafka's, per topic partition where Kafka puts them there.
"""

from __future__ import annotations

from ..wire import ApiKey
from .cluster import describe_cluster
from .configs import describe_configs
from .fetch import fetch_partitions, list_offsets
from .metadata import api_versions, metadata
from .produce import init_producer_id, produce, strip_producer_ids
from .topics import create_topics, delete_topics

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
}
