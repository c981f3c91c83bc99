"""The transaction APIs: InitProducerId (with a transactional id), AddPartitionsToTxn,
AddOffsetsToTxn, EndTxn, TxnOffsetCommit, DescribeTransactions, ListTransactions.

Wire glue only, as Kafka's ``KafkaApis.handle*`` are: each handler reads the kio request of
its version, calls the broker's :class:`~dedup.coordinator.transaction_coordinator.TransactionCoordinator`
(TxnOffsetCommit: the :class:`~dedup.coordinator.GroupCoordinator`) and answers with Kafka's
error codes. PRODUCER_FENCED (90) is answered INVALID_PRODUCER_EPOCH (47) to the versions that
predate it (InitProducerId v0-v3, AddPartitionsToTxn, AddOffsetsToTxn and EndTxn v0-v1), as
``KafkaApis`` does; TxnOffsetCommit v0-v1 get COORDINATOR_NOT_AVAILABLE for
COORDINATOR_LOAD_IN_PROGRESS (KAFKA-7296).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from ..wire import Request, build, response_schema
from .groups import _ms
from .produce import init_producer_id as init_idempotent_producer_id

if TYPE_CHECKING:
    from ..core import KafkaServer

__all__ = [
    "add_offsets_to_txn",
    "add_partitions_to_txn",
    "describe_transactions",
    "end_txn",
    "init_producer_id",
    "list_transactions",
    "txn_offset_commit",
]


def _fenced(error: ErrorCode, version: int, first_version_with_fenced: int) -> ErrorCode:
    """KafkaApis: older clients cannot read PRODUCER_FENCED and get INVALID_PRODUCER_EPOCH."""
    if error == ErrorCode.producer_fenced and version < first_version_with_fenced:
        return ErrorCode.invalid_producer_epoch
    return error


def init_producer_id(server: KafkaServer, broker_id: int, request: Request) -> Any:
    """KafkaApis.handleInitProducerIdRequest: without a transactional id, a new producer id
    (the idempotent producer, :func:`dedup.server.apis.produce.init_producer_id`); with one,
    the transaction coordinator (v3+: KIP-360's producer id and epoch, both or neither)."""
    body = request.body
    if body.transactional_id is None:
        return init_idempotent_producer_id(server, broker_id, request)
    schema = response_schema(request)
    producer_id = getattr(body, "producer_id", -1)
    producer_epoch = getattr(body, "producer_epoch", -1)
    if (producer_id == -1) != (producer_epoch == -1):
        return build(schema, {"error_code": ErrorCode.invalid_request, "producer_id": -1, "producer_epoch": -1})
    result = server.transactions.init_producer_id(broker_id, body.transactional_id, _ms(body.transaction_timeout),
                                                  producer_id, producer_epoch)  # fmt: skip
    return build(schema, {"error_code": _fenced(result.error, request.api_version, 4),
                          "producer_id": result.producer_id, "producer_epoch": result.producer_epoch})  # fmt: skip


def add_partitions_to_txn(server: KafkaServer, broker_id: int, request: Request) -> Any:
    """KafkaApis.handleAddPartitionsToTxnRequest for the client versions (v0-v3): a partition
    that does not exist fails the whole request (UNKNOWN_TOPIC_OR_PARTITION there,
    OPERATION_NOT_ATTEMPTED for the others); otherwise one error for every partition."""
    body = request.body
    transactional_id = body.v3_and_below_transactional_id
    producer_id, producer_epoch = body.v3_and_below_producer_id, body.v3_and_below_producer_epoch
    wanted = [(topic.name, int(p)) for topic in body.v3_and_below_topics for p in topic.partitions]
    missing = {tp for tp in wanted if server.partition(*tp) is None}
    if missing:
        errors = {tp: ErrorCode.unknown_topic_or_partition if tp in missing else ErrorCode.operation_not_attempted
                  for tp in wanted}  # fmt: skip
    else:
        error = server.transactions.add_partitions(broker_id, transactional_id, producer_id, producer_epoch, wanted)
        errors = dict.fromkeys(wanted, _fenced(error, request.api_version, 2))
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for (topic, index), error in errors.items():
        by_topic.setdefault(topic, []).append({"partition_index": index, "partition_error_code": error})
    results = [{"name": name, "results_by_partition": partitions} for name, partitions in by_topic.items()]
    return build(response_schema(request), {"results_by_topic_v3_and_below": results})


def add_offsets_to_txn(server: KafkaServer, broker_id: int, request: Request) -> Any:
    """KafkaApis.handleAddOffsetsToTxnRequest: the group's ``__consumer_offsets`` partition
    joins the transaction."""
    body = request.body
    partition = ("__consumer_offsets", server.groups.partition_for(body.group_id))
    error = server.transactions.add_partitions(broker_id, body.transactional_id, body.producer_id,
                                               body.producer_epoch, [partition])  # fmt: skip
    return build(response_schema(request), {"error_code": _fenced(error, request.api_version, 2)})


def end_txn(server: KafkaServer, broker_id: int, request: Request) -> Any:
    """KafkaApis.handleEndTxnRequest (v0-v4: transaction version 0, no epoch bump per transaction)."""
    body = request.body
    error = server.transactions.end_transaction(broker_id, body.transactional_id, body.producer_id,
                                                body.producer_epoch, commit=body.committed)  # fmt: skip
    return build(response_schema(request), {"error_code": _fenced(error, request.api_version, 2)})


def txn_offset_commit(server: KafkaServer, broker_id: int, request: Request) -> Any:
    """KafkaApis.handleTxnOffsetCommitRequest: partitions of topics that do not exist get
    UNKNOWN_TOPIC_OR_PARTITION; the others go to the group coordinator, which holds them as
    pending until the transaction's marker reaches the group's offsets partition."""
    body = request.body
    errors: dict[tuple[str, int], ErrorCode] = {}
    offsets: dict[tuple[str, int], tuple[int, int, str | None]] = {}
    for topic in body.topics:
        for p in topic.partitions:
            key = (topic.name, p.partition_index)
            if server.partition(*key) is None:
                errors[key] = ErrorCode.unknown_topic_or_partition
            else:
                offsets[key] = (p.committed_offset, getattr(p, "committed_leader_epoch", -1), p.committed_metadata)
    if offsets:
        errors.update(server.groups.commit_transactional_offsets(
            broker_id, body.transactional_id, body.group_id, body.producer_id, body.producer_epoch,
            getattr(body, "generation_id", -1), getattr(body, "member_id", ""),
            getattr(body, "group_instance_id", None), offsets, server.transactions.verify_partition,
        ))  # fmt: skip
    if request.api_version < 2:
        errors = {k: ErrorCode.coordinator_not_available if e == ErrorCode.coordinator_load_in_progress else e
                  for k, e in errors.items()}  # fmt: skip
    by_topic: dict[str, list[dict[str, Any]]] = {}
    for (topic, index), error in errors.items():
        by_topic.setdefault(topic, []).append({"partition_index": index, "error_code": error})
    return build(response_schema(request), {
        "topics": [{"name": name, "partitions": partitions} for name, partitions in by_topic.items()]
    })  # fmt: skip


def _time(ms: int) -> datetime.datetime:
    # Kafka writes -1 for a transaction not started; kio's writer takes any datetime (ms = round(timestamp * 1000)).
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)


def describe_transactions(server: KafkaServer, broker_id: int, request: Request) -> Any:
    """KafkaApis.handleDescribeTransactionsRequest: one state per id, asked of its coordinator."""
    states = []
    for transactional_id in request.body.transactional_ids:
        error, found = server.transactions.describe_transaction(broker_id, transactional_id)
        states.append({
            "error_code": error,
            "transactional_id": transactional_id,
            "transaction_state": found.get("transaction_state", ""),
            "transaction_timeout": datetime.timedelta(milliseconds=found.get("transaction_timeout_ms", 0)),
            "transaction_start_time": _time(found.get("transaction_start_time_ms", -1)),
            "producer_id": found.get("producer_id", -1),
            "producer_epoch": found.get("producer_epoch", -1),
            "topics": [{"topic": topic, "partitions": partitions}
                       for topic, partitions in found.get("topics", {}).items()],
        })  # fmt: skip
    return build(response_schema(request), {"transaction_states": states})


def list_transactions(server: KafkaServer, broker_id: int, request: Request) -> Any:
    """KafkaApis.handleListTransactionsRequest: the transactions this broker coordinates
    (state, producer id and, v1, duration filters; unknown state names reported back)."""
    body = request.body
    error, found, unknown = server.transactions.list_transactions(
        broker_id, body.state_filters, body.producer_id_filters, getattr(body, "duration_filter", -1)
    )
    return build(response_schema(request), {
        "error_code": error,
        "unknown_state_filters": unknown,
        "transaction_states": [
            {"transactional_id": tid, "producer_id": pid, "transaction_state": state} for tid, pid, state in found
        ],
    })  # fmt: skip
