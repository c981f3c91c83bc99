"""What several APIs ask of a partition: whether a broker serves it, and as what."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kio.schema.errors import ErrorCode

if TYPE_CHECKING:
    from ...cluster import Cluster


def server_alive(cluster: Cluster, broker_id: int) -> bool:
    """Whether broker ``broker_id`` holds a live replica of the partition."""
    return broker_id in cluster.replicas and cluster.broker(broker_id).alive


def leader_error(cluster: Cluster | None, broker_id: int, current_leader_epoch: int) -> ErrorCode:
    """Whether ``broker_id`` may serve the partition ``cluster`` (from
    :meth:`KafkaServer.partition <dedup.server.core.KafkaServer.partition>`, None for a topic
    or partition that does not exist) as its leader, as Kafka's ReplicaManager decides."""
    if cluster is None:
        return ErrorCode.unknown_topic_or_partition
    if cluster.leader_id != broker_id or not server_alive(cluster, broker_id):
        return ErrorCode.not_leader_or_follower
    if current_leader_epoch >= 0 and current_leader_epoch != cluster.leader_epoch:  # KIP-320
        if current_leader_epoch < cluster.leader_epoch:
            return ErrorCode.fenced_leader_epoch
        return ErrorCode.unknown_leader_epoch
    return ErrorCode.none
