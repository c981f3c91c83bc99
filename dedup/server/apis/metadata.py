"""ApiVersions and Metadata: what the brokers speak, and which topics and leaders they have."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from ..wire import SUPPORTED_VERSIONS, Request, build, response_schema

if TYPE_CHECKING:
    from ..core import KafkaServer


def api_versions(server: KafkaServer, broker_id: int, request: Request) -> Any:
    keys = [
        {"api_key": key, "min_version": low, "max_version": high} for key, (low, high) in SUPPORTED_VERSIONS.items()
    ]
    if request.body is None:  # a version we do not speak: UNSUPPORTED_VERSION in v0 (KIP-511)
        return build(response_schema(request, 0), {"error_code": ErrorCode.unsupported_version, "api_keys": keys})
    return build(response_schema(request), {"error_code": ErrorCode.none, "api_keys": keys})


def metadata(server: KafkaServer, broker_id: int, request: Request) -> Any:
    body = request.body
    if body.topics is None or (request.api_version == 0 and not body.topics):
        names = list(server.clusters)  # every topic (v0 asks so with an empty list)
    else:
        names = [topic.name for topic in body.topics]
    alive = server.live_brokers()
    topics = []
    for name in names:
        cluster = server.clusters.get(name)
        if cluster is None:  # topics are not created on demand (auto.create.topics.enable=false)
            topics.append({"error_code": ErrorCode.unknown_topic_or_partition, "name": name, "partitions": []})
            continue
        leader = -1 if cluster.leader_id is None else cluster.leader_id
        partition = {
            "error_code": ErrorCode.none if leader >= 0 else ErrorCode.leader_not_available,
            "partition_index": 0,
            "leader_id": leader,
            "leader_epoch": cluster.leader_epoch,
            "replica_nodes": [broker.broker_id for broker in cluster.brokers],
            "isr_nodes": sorted(cluster.isr),
            "offline_replicas": [broker.broker_id for broker in cluster.brokers if not broker.alive],
        }
        topics.append({"error_code": ErrorCode.none, "name": name, "partitions": [partition]})
    return build(
        response_schema(request),
        {
            "brokers": [{"node_id": b, "host": server.host, "port": server.ports[b]} for b in alive],
            "cluster_id": server.cluster_id,
            "controller_id": alive[0] if alive else -1,
            "topics": topics,
        },
    )
