"""What several APIs ask of a partition: whether a broker serves it, and as what."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kio.schema.errors import ErrorCode

if TYPE_CHECKING:
    from ...cluster import Cluster


def server_alive(cluster: Cluster, broker_id: int) -> bool:
    return cluster.brokers[broker_id].alive


def leader_error(cluster: Cluster | None, partition: int, broker_id: int, current_leader_epoch: int) -> ErrorCode:
    if cluster is None or partition != 0:
        return ErrorCode.unknown_topic_or_partition
    if cluster.leader_id != broker_id or not server_alive(cluster, broker_id):
        return ErrorCode.not_leader_or_follower
    if current_leader_epoch >= 0 and current_leader_epoch != cluster.leader_epoch:  # KIP-320
        if current_leader_epoch < cluster.leader_epoch:
            return ErrorCode.fenced_leader_epoch
        return ErrorCode.unknown_leader_epoch
    return ErrorCode.none
