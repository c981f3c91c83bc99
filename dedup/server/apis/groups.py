"""The group APIs (classic protocol): FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
LeaveGroup, OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete.

Wire glue only: each handler reads the kio request of its version, calls the broker's
:class:`~dedup.coordinator.GroupCoordinator` with plain values and builds the response with
Kafka's error codes. JoinGroup and SyncGroup return a coroutine (the request waits for the
rebalance, as in Kafka's purgatory); ``core.KafkaServer`` awaits it.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from ...coordinator.membership import NO_GENERATION, JoinResult, SyncResult
from ...coordinator.offsets_manager import CommittedOffset
from ..wire import Request, build, response_schema
from .common import authorized_operations

if TYPE_CHECKING:
    from ..core import KafkaServer

# FindCoordinator key types (Kafka's CoordinatorType).
KEY_TYPE_GROUP = 0
KEY_TYPE_TRANSACTION = 1


def _ms(value: datetime.timedelta | int) -> int:
    if isinstance(value, datetime.timedelta):
        return value // datetime.timedelta(milliseconds=1)
    return int(value)


# -- FindCoordinator -----------------------------------------------------------------------------


def _coordinator(server: KafkaServer, key: str, key_type: int, listener: str = "PLAINTEXT") -> dict[str, Any]:
    found: dict[str, Any] = {"key": key, "node_id": -1, "host": "", "port": -1}
    if key_type == KEY_TYPE_TRANSACTION:
        leader = server.transactions.coordinator_id(key)
        what = "the transactional id's __transaction_state partition"
    elif key_type == KEY_TYPE_GROUP:
        leader = server.groups.coordinator_id(key)
        what = "the group's offsets partition"
    else:
        return found | {"error_code": ErrorCode.invalid_request, "error_message": f"unknown key type {key_type}"}
    if leader is None or leader not in server.live_brokers():
        return found | {"error_code": ErrorCode.coordinator_not_available,
                        "error_message": f"{what} has no leader"}  # fmt: skip
    return found | {"error_code": ErrorCode.none, "error_message": None, "node_id": leader,
                    **server.advertised(leader, listener)}  # fmt: skip


def find_coordinator(server: KafkaServer, broker_id: int, request: Request) -> Any:
    body = request.body
    key_type = getattr(body, "key_type", KEY_TYPE_GROUP)
    if request.api_version >= 4:  # KIP-699: batched keys
        coordinators = [_coordinator(server, key, key_type, request.listener) for key in body.coordinator_keys]
        return build(response_schema(request), {"coordinators": coordinators})
    return build(response_schema(request), _coordinator(server, body.key, key_type, request.listener))


# -- JoinGroup, SyncGroup, Heartbeat, LeaveGroup -------------------------------------------------


def join_group(server: KafkaServer, broker_id: int, request: Request) -> Any:
    body = request.body
    session_timeout_ms = _ms(body.session_timeout)
    rebalance_timeout = getattr(body, "rebalance_timeout", None)  # v0: the session timeout serves for both
    future = server.groups.join_group(
        broker_id,
        body.group_id,
        body.member_id,
        getattr(body, "group_instance_id", None),
        body.protocol_type,
        [(protocol.name, bytes(protocol.metadata)) for protocol in body.protocols],
        session_timeout_ms=session_timeout_ms,
        rebalance_timeout_ms=session_timeout_ms if rebalance_timeout is None else _ms(rebalance_timeout),
        client_id=request.client_id or "",
        client_host=request.client_host,
        require_known_member_id=request.api_version >= 4,
        supports_skip_assignment=request.api_version >= 9,
    )

    async def respond() -> Any:
        result: JoinResult = await future
        nullable = request.api_version >= 7  # protocol_type and protocol_name are nullable from v7
        return build(response_schema(request), {
            "error_code": result.error,
            "generation_id": result.generation_id if result.error == ErrorCode.none else NO_GENERATION,
            "protocol_type": result.protocol_type if nullable else result.protocol_type or "",
            "protocol_name": result.protocol_name if nullable else result.protocol_name or "",
            "leader": result.leader_id,
            "skip_assignment": result.skip_assignment,
            "member_id": result.member_id,
            "members": [
                {"member_id": member_id, "group_instance_id": instance_id, "metadata": metadata}
                for member_id, instance_id, metadata in result.members
            ],
        })  # fmt: skip

    return respond()


def sync_group(server: KafkaServer, broker_id: int, request: Request) -> Any:
    body = request.body
    future = server.groups.sync_group(
        broker_id,
        body.group_id,
        body.generation_id,
        body.member_id,
        getattr(body, "group_instance_id", None),
        {assignment.member_id: bytes(assignment.assignment) for assignment in body.assignments},
        protocol_type=getattr(body, "protocol_type", None),
        protocol_name=getattr(body, "protocol_name", None),
    )

    async def respond() -> Any:
        result: SyncResult = await future
        return build(response_schema(request), {
            "error_code": result.error,
            "protocol_type": result.protocol_type,
            "protocol_name": result.protocol_name,
            "assignment": result.assignment,
        })  # fmt: skip

    return respond()


def heartbeat(server: KafkaServer, broker_id: int, request: Request) -> Any:
    body = request.body
    error = server.groups.heartbeat(
        broker_id, body.group_id, body.generation_id, body.member_id, getattr(body, "group_instance_id", None)
    )
    return build(response_schema(request), {"error_code": error})


def leave_group(server: KafkaServer, broker_id: int, request: Request) -> Any:
    body = request.body
    if request.api_version < 3:
        error, errors = server.groups.leave_group(broker_id, body.group_id, [(body.member_id, None)])
        if error == ErrorCode.none and errors:
            error = errors[0]
        return build(response_schema(request), {"error_code": error})
    leaving = [(member.member_id, member.group_instance_id) for member in body.members]
    error, errors = server.groups.leave_group(broker_id, body.group_id, leaving)
    members = [
        {"member_id": member_id, "group_instance_id": instance_id, "error_code": member_error}
        for (member_id, instance_id), member_error in zip(leaving, errors, strict=False)
    ]
    return build(response_schema(request), {"error_code": error, "members": members if errors else []})


# -- OffsetCommit, OffsetFetch, OffsetDelete -----------------------------------------------------


def offset_commit(server: KafkaServer, broker_id: int, request: Request) -> Any:
    body = request.body
    generation = getattr(body, "generation_id", None)
    if generation is None:
        generation = body.generation_id_or_member_epoch  # v9's name for it
    offsets: dict[tuple[str, int], tuple[int, int, str | None]] = {}
    for topic in body.topics:
        for partition in topic.partitions:
            leader_epoch = getattr(partition, "committed_leader_epoch", -1)
            offsets[(topic.name, partition.partition_index)] = (
                partition.committed_offset, leader_epoch, partition.committed_metadata
            )  # fmt: skip
    results = server.groups.commit_offsets(
        broker_id, body.group_id, generation, body.member_id, getattr(body, "group_instance_id", None), offsets
    )
    topics = [
        {
            "name": topic.name,
            "partitions": [
                {"partition_index": p.partition_index, "error_code": results[(topic.name, p.partition_index)]}
                for p in topic.partitions
            ],
        }
        for topic in body.topics
    ]
    return build(response_schema(request), {"topics": topics})


def _fetched_group(
    server: KafkaServer, broker_id: int, group_id: str, topics: Any, require_stable: bool = False
) -> tuple[ErrorCode, list[Any]]:
    wanted = None if topics is None else [(t.name, p) for t in topics for p in t.partition_indexes]
    error, committed = server.groups.fetch_offsets(broker_id, group_id, wanted, require_stable)
    if error != ErrorCode.none and wanted is not None:
        # Per partition too (OffsetFetch v1 has no group-level error).
        committed = [CommittedOffset(t, p, -1, -1, "", error) for t, p in wanted]
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for entry in committed:
        by_topic.setdefault(entry.topic, []).append({
            "partition_index": entry.partition,
            "committed_offset": entry.offset,
            "committed_leader_epoch": entry.leader_epoch,
            "metadata": entry.metadata,
            "error_code": entry.error,
        })  # fmt: skip
    return error, [{"name": name, "partitions": partitions} for name, partitions in by_topic.items()]


def offset_fetch(server: KafkaServer, broker_id: int, request: Request) -> Any:
    body = request.body
    if request.api_version >= 8:  # KIP-709: several groups per request
        groups = []
        for group in body.groups:
            error, topics = _fetched_group(server, broker_id, group.group_id, group.topics, body.require_stable)
            groups.append({"group_id": group.group_id, "topics": topics, "error_code": error})
        return build(response_schema(request), {"groups": groups})
    error, topics = _fetched_group(server, broker_id, body.group_id, body.topics,
                                   getattr(body, "require_stable", False))  # fmt: skip
    return build(response_schema(request), {"topics": topics, "error_code": error})


def offset_delete(server: KafkaServer, broker_id: int, request: Request) -> Any:
    body = request.body
    wanted = [(t.name, p.partition_index) for t in body.topics for p in t.partitions]
    error, results = server.groups.delete_offsets(broker_id, body.group_id, wanted)
    topics = []
    if error == ErrorCode.none:
        topics = [
            {
                "name": t.name,
                "partitions": [
                    {"partition_index": p.partition_index, "error_code": results[(t.name, p.partition_index)]}
                    for p in t.partitions
                ],
            }
            for t in body.topics
        ]
    return build(response_schema(request), {"error_code": error, "topics": topics})


# -- ListGroups, DescribeGroups, DeleteGroups ----------------------------------------------------


def list_groups(server: KafkaServer, broker_id: int, request: Request) -> Any:
    states = getattr(request.body, "states_filter", ())
    groups = [
        {"group_id": group_id, "protocol_type": protocol_type, "group_state": state}
        for group_id, protocol_type, state in server.groups.list_groups(broker_id, states)
    ]
    return build(response_schema(request), {"error_code": ErrorCode.none, "groups": groups})


def describe_groups(server: KafkaServer, broker_id: int, request: Request) -> Any:
    body = request.body
    include = getattr(body, "include_authorized_operations", False)
    described = []
    for group_id in body.groups:
        error, summary = server.groups.describe_group(broker_id, group_id)
        entry: dict[str, Any] = {"error_code": error, "group_id": group_id, "group_state": "",
                                 "protocol_type": "", "protocol_data": "", "members": []}  # fmt: skip
        entry.update(summary)
        entry["authorized_operations"] = authorized_operations("group", include)
        described.append(entry)
    return build(response_schema(request), {"groups": described})


def delete_groups(server: KafkaServer, broker_id: int, request: Request) -> Any:
    results = server.groups.delete_groups(broker_id, list(request.body.groups_names))
    return build(response_schema(request), {
        "results": [{"group_id": group_id, "error_code": error} for group_id, error in results.items()]
    })  # fmt: skip
