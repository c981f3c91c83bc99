"""ApiVersions and Metadata: what the brokers speak, and which topics and leaders they have."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from ...checkpoints import _is_topic
from ..topics import TopicError, is_internal
from ..wire import SUPPORTED_VERSIONS, Request, build, response_schema
from .common import authorized_operations, server_alive

if TYPE_CHECKING:
    from ..core import KafkaServer

logger = logging.getLogger("dedup.server")


def api_versions(server: KafkaServer, broker_id: int, request: Request) -> Any:
    keys = [
        {"api_key": key, "min_version": low, "max_version": high} for key, (low, high) in SUPPORTED_VERSIONS.items()
    ]
    if request.body is None:  # a version we do not speak: UNSUPPORTED_VERSION in v0 (KIP-511)
        return build(response_schema(request, 0), {"error_code": ErrorCode.unsupported_version, "api_keys": keys})
    return build(response_schema(request), {"error_code": ErrorCode.none, "api_keys": keys})


def metadata(server: KafkaServer, broker_id: int, request: Request) -> Any:
    """Kafka's KafkaApis.handleTopicMetadataRequest: every topic for a null list (v1+) or an
    empty one (v0); each topic's partitions with leader, leader epoch, replicas in assignment
    order, ISR and offline replicas. A topic that does not exist is created when
    ``auto.create.topics.enable`` and the request (v4+ ``allow_auto_topic_creation``) allow
    it, with ``num.partitions`` and ``default.replication.factor``; the response that creates
    it answers LEADER_NOT_AVAILABLE without partitions, as Kafka's (KafkaApis.createTopic /
    AutoTopicCreationManager), and the client asks again. Otherwise UNKNOWN_TOPIC_OR_PARTITION,
    or INVALID_TOPIC_EXCEPTION for an illegal name. The coordinators' internal topics are not
    created here (their coordinators create them)."""
    body = request.body
    all_topics = body.topics is None or (request.api_version == 0 and not body.topics)
    names = list(server.topics) if all_topics else [topic.name for topic in body.topics]
    allow = server.auto_create_topics_enable and not all_topics and getattr(body, "allow_auto_topic_creation", True)
    alive = server.live_brokers()
    topics = []
    for name in names:
        topic = server.topics.get(name)
        if topic is None:
            topics.append({"error_code": _unknown_topic(server, name, allow), "name": name,
                           "is_internal": is_internal(name), "partitions": []})  # fmt: skip
            continue
        partitions = []
        for index, cluster in enumerate(topic.partitions):
            leader = -1 if cluster.leader_id is None else cluster.leader_id
            partitions.append({
                "error_code": ErrorCode.none if leader >= 0 else ErrorCode.leader_not_available,
                "partition_index": index,
                "leader_id": leader,
                "leader_epoch": cluster.leader_epoch,
                "replica_nodes": list(cluster.replicas),
                "isr_nodes": [b for b in cluster.replicas if b in cluster.isr],
                "offline_replicas": [b for b in cluster.replicas if not server_alive(cluster, b)],
            })  # fmt: skip
        topics.append({"error_code": ErrorCode.none, "name": name, "is_internal": topic.internal,
                       "partitions": partitions, "topic_authorized_operations": authorized_operations(
                           "topic", getattr(body, "include_topic_authorized_operations", False))})  # fmt: skip
    return build(
        response_schema(request),
        {
            "brokers": [{"node_id": b, **server.advertised(b, request.listener)} for b in alive],
            "cluster_id": server.cluster_id,
            "controller_id": alive[0] if alive else -1,
            "topics": topics,
            "cluster_authorized_operations": authorized_operations(
                "cluster", getattr(body, "include_cluster_authorized_operations", False)
            ),
        },
    )


def _unknown_topic(server: KafkaServer, name: str, allow: bool) -> ErrorCode:
    if not _is_topic(name):
        return ErrorCode.invalid_topic_exception
    if not allow or is_internal(name):
        return ErrorCode.unknown_topic_or_partition
    try:
        server.topics.ensure(name, live_brokers=server.live_brokers())
    except TopicError as error:
        logger.warning("auto-creation of topic %s refused: %s", name, error.message)
        return error.code
    return ErrorCode.leader_not_available
