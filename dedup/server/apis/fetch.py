"""Fetch and ListOffsets: reading a partition up to its high watermark, and finding offsets."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from ..._layout import LOG_OVERHEAD
from ...batch import decode_records
from ...errors import KafkaError, OffsetOutOfRangeError
from ...records import scan_batches
from ..wire import Request, build, response_schema
from .common import leader_error

if TYPE_CHECKING:
    from ...cluster import Cluster
    from ..core import KafkaServer

logger = logging.getLogger("dedup.server")

# ListOffsets' special timestamps.
LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2


def fetch_partitions(server: KafkaServer, broker_id: int, request: Request) -> tuple[list[dict[str, Any]], int]:
    """Fetch's per-topic answers and the bytes of records in them."""
    body = request.body
    budget = body.max_bytes
    total = 0
    responses = []
    for topic in body.topics:
        partitions = []
        for wanted in topic.partitions:
            cluster = server.partition(topic.topic, wanted.partition)
            entry: dict[str, Any] = {
                "partition_index": wanted.partition,
                "high_watermark": -1,
                "last_stable_offset": -1,
                "log_start_offset": -1,
                "aborted_transactions": [],
                "preferred_read_replica": -1,
                "records": b"",
            }
            error = leader_error(cluster, broker_id, getattr(wanted, "current_leader_epoch", -1))
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
        partitions = []
        for wanted in topic.partitions:
            cluster = server.partition(topic.name, wanted.partition_index)
            entry: dict[str, Any] = {"partition_index": wanted.partition_index, "timestamp": -1, "offset": -1}
            epoch = getattr(wanted, "current_leader_epoch", -1)
            error = leader_error(cluster, broker_id, epoch)
            if error == ErrorCode.none:
                assert cluster is not None
                try:
                    timestamp, offset = _offset_for(cluster, wanted.timestamp)
                except KafkaError as failure:
                    logger.warning("ListOffsets for %s at %d failed: %s", cluster.name, wanted.timestamp, failure)
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
