"""DescribeCluster (API 60, KIP-700; v1 adds the endpoint type, KIP-919): the live brokers, the
controller and the cluster id, as Kafka's ``AuthHelper.computeDescribeClusterResponse`` answers
on a broker listener. A broker serves endpoint type BROKERS (1); CONTROLLERS (2) is
MISMATCHED_ENDPOINT_TYPE, another type UNSUPPORTED_ENDPOINT_TYPE (both INVALID_REQUEST in v0).
``include_cluster_authorized_operations`` is answered as Kafka without an authorizer does: every
operation the cluster resource supports."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from ..wire import Request, build, response_schema
from .common import authorized_operations

if TYPE_CHECKING:
    from ..core import KafkaServer

#: DescribeClusterRequest endpoint types (EndpointType).
BROKERS, CONTROLLERS = 1, 2


def describe_cluster(server: KafkaServer, broker_id: int, request: Request) -> Any:
    schema = response_schema(request)
    endpoint_type = getattr(request.body, "endpoint_type", BROKERS)
    if endpoint_type != BROKERS:
        if endpoint_type == CONTROLLERS:
            error = ErrorCode.mismatched_endpoint_type
            message = "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER"
        else:
            error = ErrorCode.unsupported_endpoint_type
            message = f"Unsupported endpoint type {endpoint_type}"
        if request.api_version == 0:
            error = ErrorCode.invalid_request
        return build(schema, {"error_code": error, "error_message": message, "cluster_id": server.cluster_id,
                              "brokers": [], "endpoint_type": BROKERS})  # fmt: skip
    alive = server.live_brokers()
    return build(
        schema,
        {
            "error_code": ErrorCode.none,
            "endpoint_type": BROKERS,
            "cluster_id": server.cluster_id,
            "controller_id": alive[0] if alive else -1,  # as Metadata names it
            "brokers": [{"broker_id": b, **server.advertised(b, request.listener)} for b in alive],
            "cluster_authorized_operations": authorized_operations(
                "cluster", request.body.include_cluster_authorized_operations
            ),
        },
    )
