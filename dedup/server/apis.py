"""The requests the front end answers, each mapped onto dedup's cluster and logs.

One function per API: it takes the broker state (:class:`~dedup.server.core.KafkaServer`),
the id of the broker the request came to and the parsed request, and returns the response
body as a kio entity (None: no response, as for Produce with ``acks=0``). Error codes are
Kafka's, per topic partition where Kafka puts them there.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from .. import crc32c
from .._layout import (
    ATTR_TRANSACTIONAL,
    ATTRIBUTES_OFFSET,
    BATCH_LENGTH_OFFSET,
    CRC_OFFSET,
    LOG_OVERHEAD,
    MAGIC_OFFSET,
    MAGIC_V2,
    PRODUCER_ID_OFFSET,
    RECORDS_COUNT_OFFSET,
    field_struct,
)
from ..batch import decode_records
from ..errors import KafkaError, OffsetOutOfRangeError
from ..records import scan_batches
from .wire import SUPPORTED_VERSIONS, ApiKey, Request, build, response_schema

if TYPE_CHECKING:
    from ..cluster import Cluster
    from .core import KafkaServer

logger = logging.getLogger("dedup.server")

__all__ = ["HANDLERS", "strip_producer_ids"]

_CRC = field_struct("crc")
_BATCH_LENGTH = field_struct("batch_length")
_PRODUCER_FIELDS = RECORDS_COUNT_OFFSET - PRODUCER_ID_OFFSET

# ListOffsets' special timestamps.
LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2


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


def init_producer_id(server: KafkaServer, broker_id: int, request: Request) -> Any:
    schema = response_schema(request)
    if request.body.transactional_id is not None:
        # Transactions (FindCoordinator, AddPartitionsToTxn, EndTxn) are not served over the
        # wire; the library's TransactionCoordinator has them.
        logger.warning("broker %d: InitProducerId for transactional id %r refused: transactions are not served",
                       broker_id, request.body.transactional_id)  # fmt: skip
        return build(schema, {"error_code": ErrorCode.invalid_request, "producer_id": -1, "producer_epoch": -1})
    # Kafka hands an idempotent producer a new id every time it asks, whatever it sends (v3+
    # may carry its current id and epoch): its TransactionCoordinator.handleInitProducerId.
    producer_id = server.producer_ids.next_id()
    return build(schema, {"error_code": ErrorCode.none, "producer_id": producer_id, "producer_epoch": 0})


def strip_producer_ids(records: bytes) -> bytes:
    """The batches of ``records`` as a producer without idempotence would have sent them:
    producer id, epoch and base sequence -1, CRC-32C recomputed. What ``deduplicate=False``
    appends, so that the table never sees the producer and a retry is stored again."""
    data = bytearray(records)
    headers = scan_batches(data)
    for position, length, attributes in zip(
        headers["position"].tolist(), headers["batch_length"].tolist(), headers["attributes"].tolist(), strict=True
    ):
        if attributes & ATTR_TRANSACTIONAL:  # transactional batches keep their producer (not served anyway)
            continue
        # producerId, producerEpoch, baseSequence: all -1
        data[position + PRODUCER_ID_OFFSET : position + RECORDS_COUNT_OFFSET] = b"\xff" * _PRODUCER_FIELDS
        crc = crc32c(data[position + ATTRIBUTES_OFFSET : position + LOG_OVERHEAD + length])
        _CRC.pack_into(data, position + CRC_OFFSET, crc)
    return bytes(data)


def one_batch_problem(records: bytes, version: int) -> str | None:
    """Kafka's ProduceRequest.validateRecords for v3 and later: exactly one batch, of magic 2
    (INVALID_RECORD otherwise); None if the records pass. A batch cut short or with a bad
    length is left to the append, which answers CORRUPT_MESSAGE as Kafka's LogValidator does."""
    what = f"Produce requests with version {version}"
    if len(records) <= MAGIC_OFFSET:
        return f"{what} must have at least one record batch per partition"
    if records[MAGIC_OFFSET] != MAGIC_V2:
        return f"{what} are only allowed to contain record batches with magic version 2"
    if LOG_OVERHEAD + _BATCH_LENGTH.unpack_from(records, BATCH_LENGTH_OFFSET)[0] < len(records):
        return f"{what} are only allowed to contain exactly one record batch per partition"
    return None


def produce(server: KafkaServer, broker_id: int, request: Request) -> Any:
    body = request.body
    acks = body.acks
    responses = []
    for topic in body.topic_data:
        cluster = server.clusters.get(topic.name)
        partitions = []
        for data in topic.partition_data:
            entry: dict[str, Any] = {"index": data.index, "base_offset": -1, "record_errors": []}
            if cluster is None or data.index != 0:
                entry["error_code"] = ErrorCode.unknown_topic_or_partition
            elif body.transactional_id is not None:
                entry["error_code"] = ErrorCode.invalid_request
                entry["error_message"] = "transactions are not served by dedup serve"
            elif acks not in (-1, 0, 1):
                entry["error_code"] = ErrorCode.invalid_required_acks
            elif cluster.leader_id != broker_id:
                entry["error_code"] = ErrorCode.not_leader_or_follower
            else:
                records = bytes(data.records or b"")
                problem = one_batch_problem(records, request.api_version)
                if problem is None:
                    entry.update(_append(server, cluster, records, acks))
                else:
                    entry.update(error_code=ErrorCode.invalid_record, error_message=problem)
            partitions.append(entry)
        responses.append({"name": topic.name, "partition_responses": partitions})
    server.data_arrived()
    if acks == 0:
        return None
    return build(response_schema(request), {"responses": responses})


def _append(server: KafkaServer, cluster: Cluster, records: bytes, acks: int) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        if not server.deduplicate:
            records = strip_producer_ids(records)
        response = cluster.produce(records, acks="all" if acks == -1 else "1")
    except KafkaError as error:  # bytes that are not v2 batches, before the append
        return {"error_code": ErrorCode(error.code), "error_message": str(error)}
    finally:
        server.stats.engine_seconds += time.perf_counter() - started
    server.stats.batches += 1
    if response.error is not None:
        return {"error_code": ErrorCode(response.error.code), "error_message": str(response.error)}
    if response.duplicate:
        server.stats.duplicates += 1
    return {
        "error_code": ErrorCode.none,
        "base_offset": response.base_offset,
        "log_start_offset": cluster.leader_log.log_start_offset,
    }


def server_alive(cluster: Cluster, broker_id: int) -> bool:
    return cluster.brokers[broker_id].alive


def _leader_error(cluster: Cluster | None, partition: int, broker_id: int, current_leader_epoch: int) -> ErrorCode:
    if cluster is None or partition != 0:
        return ErrorCode.unknown_topic_or_partition
    if cluster.leader_id != broker_id or not server_alive(cluster, broker_id):
        return ErrorCode.not_leader_or_follower
    if current_leader_epoch >= 0 and current_leader_epoch != cluster.leader_epoch:  # KIP-320
        if current_leader_epoch < cluster.leader_epoch:
            return ErrorCode.fenced_leader_epoch
        return ErrorCode.unknown_leader_epoch
    return ErrorCode.none


def fetch_partitions(server: KafkaServer, broker_id: int, request: Request) -> tuple[list[dict[str, Any]], int]:
    """Fetch's per-topic answers and the bytes of records in them."""
    body = request.body
    budget = body.max_bytes
    total = 0
    responses = []
    for topic in body.topics:
        cluster = server.clusters.get(topic.topic)
        partitions = []
        for wanted in topic.partitions:
            entry: dict[str, Any] = {
                "partition_index": wanted.partition,
                "high_watermark": -1,
                "last_stable_offset": -1,
                "log_start_offset": -1,
                "aborted_transactions": [],
                "preferred_read_replica": -1,
                "records": b"",
            }
            error = _leader_error(cluster, wanted.partition, broker_id, getattr(wanted, "current_leader_epoch", -1))
            if error == ErrorCode.none and wanted.fetch_offset < 0:  # below any log start offset
                error = ErrorCode.offset_out_of_range
            if error == ErrorCode.none:
                assert cluster is not None
                log = cluster.leader_log
                # The last stable offset is the high watermark: no transaction is open over the
                # wire (read_committed reads the same as read_uncommitted here).
                high_watermark = log.high_watermark
                entry.update(high_watermark=high_watermark, last_stable_offset=high_watermark,
                             log_start_offset=log.log_start_offset)  # fmt: skip
                try:
                    limit = min(wanted.partition_max_bytes, budget) if total else wanted.partition_max_bytes
                    data = log.read(wanted.fetch_offset, max(limit, 0), max_offset=high_watermark)
                except OffsetOutOfRangeError:
                    error = ErrorCode.offset_out_of_range
                else:
                    entry["records"] = data
                    total += len(data)
                    budget -= len(data)
            entry["error_code"] = error
            partitions.append(entry)
        responses.append({"topic": topic.topic, "partitions": partitions})
    return responses, total


def list_offsets(server: KafkaServer, broker_id: int, request: Request) -> Any:
    topics = []
    for topic in request.body.topics:
        cluster = server.clusters.get(topic.name)
        partitions = []
        for wanted in topic.partitions:
            entry: dict[str, Any] = {"partition_index": wanted.partition_index, "timestamp": -1, "offset": -1}
            epoch = getattr(wanted, "current_leader_epoch", -1)
            error = _leader_error(cluster, wanted.partition_index, broker_id, epoch)
            if error == ErrorCode.none:
                assert cluster is not None
                try:
                    timestamp, offset = _offset_for(cluster, wanted.timestamp)
                except KafkaError as failure:
                    logger.warning("ListOffsets for %s-0 at %d failed: %s", topic.name, wanted.timestamp, failure)
                    error = ErrorCode.unknown_server_error
                else:
                    entry.update(timestamp=timestamp, offset=offset, leader_epoch=cluster.leader_epoch)
            entry["error_code"] = error
            partitions.append(entry)
        topics.append({"name": topic.name, "partitions": partitions})
    return build(response_schema(request), {"topics": topics})


def _offset_for(cluster: Cluster, timestamp: int) -> tuple[int, int]:
    """Kafka's fetchOffsetByTimestamp for a consumer: latest (the high watermark; the last
    stable offset is the same here), earliest (the log start offset), or the first record
    at or after ``timestamp`` below the high watermark ((-1, -1) if none)."""
    log = cluster.leader_log
    if timestamp == LATEST_TIMESTAMP:
        return -1, log.high_watermark
    if timestamp == EARLIEST_TIMESTAMP:
        return -1, log.log_start_offset
    offset = log.log_start_offset
    while offset < log.high_watermark:
        data = log.read(offset, 1 << 20, max_offset=log.high_watermark)
        if not data:
            break
        headers = scan_batches(data)
        for index in range(len(headers)):
            if int(headers["max_timestamp"][index]) >= timestamp and not headers["is_control"][index]:
                position = int(headers["position"][index])
                batch = data[position : position + LOG_OVERHEAD + int(headers["batch_length"][index])]
                for record in decode_records(batch):
                    if record.timestamp >= timestamp and record.offset >= log.log_start_offset:
                        return record.timestamp, record.offset
        offset = int(headers["base_offset"][-1]) + int(headers["last_offset_delta"][-1]) + 1
    return -1, -1


#: The handler of each API Fetch excepted (it may wait for data: see core.KafkaServer).
HANDLERS = {
    ApiKey.API_VERSIONS: api_versions,
    ApiKey.METADATA: metadata,
    ApiKey.INIT_PRODUCER_ID: init_producer_id,
    ApiKey.PRODUCE: produce,
    ApiKey.LIST_OFFSETS: list_offsets,
}
