"""What several APIs share: whether a broker serves a partition, and as what; the operations a
client may perform on a resource."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kio.schema.errors import ErrorCode

if TYPE_CHECKING:
    from ...cluster import Cluster


def server_alive(cluster: Cluster, broker_id: int) -> bool:
    """Whether broker ``broker_id`` holds a live replica of the partition."""
    return broker_id in cluster.replicas and cluster.broker(broker_id).alive


def replica_offline(cluster: Cluster, broker_id: int) -> bool:
    """Whether broker ``broker_id`` runs with its replica of the partition offline after a
    failed write: Kafka's ReplicaManager answers KAFKA_STORAGE_ERROR for such a partition
    (HostedPartition.Offline), and clients refresh their metadata and go to the new leader."""
    return broker_id in cluster.replicas and cluster.broker(broker_id).offline


def leader_error(cluster: Cluster | None, broker_id: int, current_leader_epoch: int) -> ErrorCode:
    """Whether ``broker_id`` may serve the partition ``cluster`` (from
    :meth:`KafkaServer.partition <dedup.server.core.KafkaServer.partition>`, None for a topic
    or partition that does not exist) as its leader, as Kafka's ReplicaManager decides."""
    if cluster is None:
        return ErrorCode.unknown_topic_or_partition
    if replica_offline(cluster, broker_id):
        return ErrorCode.kafka_storage_error
    if cluster.leader_id != broker_id or not server_alive(cluster, broker_id):
        return ErrorCode.not_leader_or_follower
    if current_leader_epoch >= 0 and current_leader_epoch != cluster.leader_epoch:  # KIP-320
        if current_leader_epoch < cluster.leader_epoch:
            return ErrorCode.fenced_leader_epoch
        return ErrorCode.unknown_leader_epoch
    return ErrorCode.none


# --- authorized operations (KIP-430) --------------------------------------------------------------

#: Kafka's AclOperation codes.
READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION = 3, 4, 5, 6, 7, 8, 9
DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE = 10, 11, 12

#: The operations each resource type supports (Kafka 4.0's AclEntry.supportedOperations). Without
#: an authorizer, Kafka's AuthHelper.authorizedOperations allows all of them, and dedup has none.
SUPPORTED_OPERATIONS = {
    "topic": (READ, WRITE, CREATE, DESCRIBE, DELETE, ALTER, DESCRIBE_CONFIGS, ALTER_CONFIGS),
    "group": (READ, DESCRIBE, DELETE, DESCRIBE_CONFIGS, ALTER_CONFIGS),
    "cluster": (CREATE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, ALTER, DESCRIBE),
}

#: The value of an ``*_authorized_operations`` field the client did not ask for (Integer.MIN_VALUE).
AUTHORIZED_OPERATIONS_OMITTED = -(1 << 31)


def authorized_operations(resource_type: str, included: bool) -> int:
    """An ``*_authorized_operations`` field: the bit set of the operations allowed on a resource
    of ``resource_type`` (bit ``1 << code`` per operation) when the request ``included`` the
    ask, :data:`AUTHORIZED_OPERATIONS_OMITTED` otherwise."""
    if not included:
        return AUTHORIZED_OPERATIONS_OMITTED
    return sum(1 << operation for operation in SUPPORTED_OPERATIONS[resource_type])
