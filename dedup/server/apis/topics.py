"""CreateTopics and DeleteTopics: the controller's topic operations, answered by any broker
(KRaft brokers forward them to the controller; here every broker is in the same process).

CreateTopics is served from v2 and DeleteTopics from v1: Kafka 4.0 removed the older versions
(KIP-896). CreateTopics stops at v6 and DeleteTopics at v5, before topic ids (v7 and v6 carry
them), as Metadata stops at v9.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from ..topics import MAX_PARTITIONS_PER_REQUEST, TopicError
from ..wire import Request, build, response_schema
from .configs import topic_configs

if TYPE_CHECKING:
    from ..core import KafkaServer


def _requested_partitions(server: KafkaServer, topic: Any) -> int:
    """A topic's partitions as ReplicationControlManager.validateTotalNumberOfPartitions
    counts them."""
    if topic.assignments:
        return len(topic.assignments)
    if topic.num_partitions == -1:
        return server.num_partitions
    return max(topic.num_partitions, 0)


def create_topics(server: KafkaServer, broker_id: int, request: Request) -> Any:
    """Kafka's ControllerApis.createTopics and ReplicationControlManager.createTopics: each
    topic is created or refused on its own, with its error code and message; a name given
    twice is INVALID_REQUEST for both; more than 10,000 partitions in the request refuse
    every topic with POLICY_VIOLATION before anything else. ``validate_only`` answers as if
    the topics were created and creates nothing. v5+ answers with the partitions, the
    replication factor and the topic's configs."""
    body = request.body
    names = [topic.name for topic in body.topics]
    total = sum(_requested_partitions(server, topic) for topic in body.topics)
    results = []
    for topic in body.topics:
        result: dict[str, Any] = {
            "name": topic.name,
            "error_code": ErrorCode.none,
            "error_message": None,
            "num_partitions": -1,
            "replication_factor": -1,
            "configs": None,
        }
        try:
            if total > MAX_PARTITIONS_PER_REQUEST:
                raise TopicError(ErrorCode.policy_violation, "Excessively large number of partitions per request.")
            if names.count(topic.name) > 1:
                raise TopicError(ErrorCode.invalid_request, "Duplicate topic name.")
            plan = server.topics.validate(
                topic.name,
                topic.num_partitions,
                topic.replication_factor,
                {config.name: config.value for config in topic.configs},
                live_brokers=server.live_brokers(),
                assignments={a.partition_index: list(a.broker_ids) for a in topic.assignments},
            )
            if not body.validate_only:
                server.topics.create(plan)
        except TopicError as error:
            result.update(error_code=error.code, error_message=error.message)
        else:
            result.update(
                num_partitions=len(plan.assignment),
                replication_factor=len(plan.assignment[0]),
                configs=topic_configs(server, broker_id, plan.configs),  # validate_only too, as Kafka answers
            )
        results.append(result)
    return build(response_schema(request), {"topics": results})


def delete_topics(server: KafkaServer, broker_id: int, request: Request) -> Any:
    """Kafka's DeleteTopics: each topic deleted (its files removed from every broker) or
    UNKNOWN_TOPIC_OR_PARTITION."""
    responses = []
    for name in request.body.topic_names:
        entry: dict[str, Any] = {"name": name, "error_code": ErrorCode.none}
        try:
            server.topics.delete(name)
        except TopicError as error:
            entry.update(error_code=error.code, error_message=error.message)
        responses.append(entry)
    return build(response_schema(request), {"responses": responses})
