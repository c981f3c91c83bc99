"""Fetch and ListOffsets: reading a partition up to its high watermark (``read_uncommitted``)
or its last stable offset (``read_committed``, with the aborted transactions of the range
read), and finding offsets."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from ..._layout import LOG_OVERHEAD
from ...batch import decode_records
from ...errors import KafkaError, KafkaStorageError, NotLeaderOrFollowerError, OffsetOutOfRangeError
from ...records import scan_batches
from ...segment import FileRegion
from ..wire import Request, ResponseFrame, build, encode_response_frame, new_placeholder, response_schema
from .common import leader_error

if TYPE_CHECKING:
    from ...cluster import Cluster
    from ...log import PartitionLog
    from ..core import KafkaServer

logger = logging.getLogger("dedup.server")

# ListOffsets' special timestamps.
LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2
# Kafka's IsolationLevel (Fetch v4+, ListOffsets v2+).
READ_UNCOMMITTED = 0
READ_COMMITTED = 1


def fetch_partitions(server: KafkaServer, broker_id: int, request: Request) -> tuple[list[dict[str, Any]], int]:
    """Fetch's per-topic answers and the bytes of records in them, bounded as Kafka's
    ``ReplicaManager.readFromLog`` bounds them (KIP-74): the response's limit is the request's
    ``max_bytes`` capped by the broker's ``fetch.max.bytes`` (KafkaApis.handleFetchRequest);
    each partition reads at most ``min(partition_max_bytes, what is left)``, whole batches,
    except that the first partition with data returns at least its first batch even if it is
    larger (``minOneMessage``), so a large batch cannot stall a consumer.

    A partition's ``records`` is a :class:`~dedup.segment.FileRegion` of a segment file (or
    ``b""``): :func:`fetch_response` encodes them without reading them, and whoever drops the
    answers instead closes them (:func:`release`)."""
    body = request.body
    limit = max(0, min(body.max_bytes, server.fetch_max_bytes))
    min_one_batch = True  # hardMaxBytesLimit is for Fetch v0-v2, which are not served
    isolation_level = getattr(body, "isolation_level", READ_UNCOMMITTED)
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
                error = _read_partition(cluster, wanted, entry, max(0, min(wanted.partition_max_bytes, limit)),
                                        min_one_batch, isolation_level)  # fmt: skip
                size = len(entry["records"])
                if size:
                    min_one_batch = False
                    total += size
                    limit = max(0, limit - size)
            entry["error_code"] = error
            partitions.append(entry)
        responses.append({"topic": topic.topic, "partitions": partitions})
    return responses, total


def _read_partition(cluster: Cluster, wanted: Any, entry: dict[str, Any], max_bytes: int,
                    min_one_batch: bool, isolation_level: int) -> ErrorCode:  # fmt: skip
    """One partition of a Fetch from its leader's log into ``entry``: whole batches below the
    high watermark, or below the last stable offset with the aborted transactions of the range
    read for ``read_committed``; the partition's error. A log that failed (offline, or a read
    that fails) answers KAFKA_STORAGE_ERROR, as Kafka's ReplicaManager answers a partition
    whose log directory is offline."""
    try:
        log = cluster.leader_log
        entry.update(high_watermark=log.high_watermark, last_stable_offset=log.last_stable_offset,
                     log_start_offset=log.log_start_offset)  # fmt: skip
        region = log.read_region(wanted.fetch_offset, max_bytes, max_offset=fetch_upper_bound(log, isolation_level),
                                 min_one_batch=min_one_batch)  # fmt: skip
        entry["aborted_transactions"] = aborted_transactions(log, isolation_level, wanted.fetch_offset, region)
    except OffsetOutOfRangeError:
        return ErrorCode.offset_out_of_range
    except NotLeaderOrFollowerError:
        return ErrorCode.not_leader_or_follower
    except (KafkaStorageError, OSError) as failure:
        logger.warning("Fetch from %s failed: %s", cluster.name, failure)
        return ErrorCode.kafka_storage_error
    if region is not None:
        entry["records"] = region
    return ErrorCode.none


def release(responses: list[dict[str, Any]]) -> None:
    """Close the file regions of answers from :func:`fetch_partitions` that will not be sent."""
    for topic in responses:
        for partition in topic["partitions"]:
            if isinstance(partition["records"], FileRegion):
                partition["records"].close()


def fetch_response(request: Request, responses: list[dict[str, Any]]) -> ResponseFrame:
    """The Fetch response frame for answers from :func:`fetch_partitions`, their records left
    in the segment files (:class:`~dedup.server.wire.ResponseFrame`, which owns them now)."""
    regions: dict[bytes, FileRegion] = {}
    for topic in responses:
        for partition in topic["partitions"]:
            if isinstance(partition["records"], FileRegion):
                placeholder = new_placeholder()
                regions[placeholder] = partition["records"]
                partition["records"] = placeholder
    try:
        body = build(response_schema(request), {"error_code": 0, "session_id": 0, "responses": responses})
        return encode_response_frame(request, body, regions)
    except BaseException:
        for region in regions.values():
            region.close()
        raise


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
                    isolation_level = getattr(request.body, "isolation_level", READ_UNCOMMITTED)
                    timestamp, offset = _offset_for(cluster, wanted.timestamp, isolation_level)
                except (KafkaError, OSError) as failure:
                    logger.warning("ListOffsets for %s at %d failed: %s", cluster.name, wanted.timestamp, failure)
                    storage = isinstance(failure, KafkaStorageError | OSError)
                    error = ErrorCode.kafka_storage_error if storage else ErrorCode.unknown_server_error
                else:
                    entry.update(timestamp=timestamp, offset=offset, leader_epoch=cluster.leader_epoch)
            entry["error_code"] = error
            partitions.append(entry)
        topics.append({"name": topic.name, "partitions": partitions})
    return build(response_schema(request), {"topics": topics})


def _offset_for(cluster: Cluster, timestamp: int, isolation_level: int = READ_UNCOMMITTED) -> tuple[int, int]:
    """Kafka's Partition.fetchOffsetForTimestamp for a consumer: latest (its last fetchable
    offset: the high watermark, the last stable offset for ``read_committed``), earliest (the
    log start offset), or the first record at or after ``timestamp`` below the last fetchable
    offset ((-1, -1) if none)."""
    log = cluster.leader_log
    last_fetchable = fetch_upper_bound(log, isolation_level)
    if timestamp == LATEST_TIMESTAMP:
        return -1, last_fetchable
    if timestamp == EARLIEST_TIMESTAMP:
        return -1, log.log_start_offset
    offset = log.log_start_offset
    while offset < last_fetchable:
        data = log.read(offset, 1 << 20, max_offset=last_fetchable)
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


# -- isolation (read_committed) -------------------------------------------------------------------


def fetch_upper_bound(log: PartitionLog, isolation_level: int) -> int:
    """The offset a consumer's fetch stops before (Kafka's FetchIsolation): the last stable
    offset for ``read_committed`` (TXN_COMMITTED), else the high watermark (HIGH_WATERMARK)."""
    return log.last_stable_offset if isolation_level == READ_COMMITTED else log.high_watermark


def aborted_transactions(
    log: PartitionLog, isolation_level: int, fetch_offset: int, region: FileRegion | None
) -> list[dict[str, int]] | None:
    """A fetch response's ``aborted_transactions`` for the batches of ``region`` read from
    ``fetch_offset``: null for ``read_uncommitted`` (Kafka sends none), else the aborted
    transactions overlapping the range read (UnifiedLog.addAbortedTransactions: up to the
    offset after the last batch returned, ``region.next_offset``), as (producer id, first
    offset)."""
    if isolation_level != READ_COMMITTED:
        return None
    if region is None or not region.size:
        return []
    return [
        {"producer_id": txn.producer_id, "first_offset": txn.first_offset}
        for txn in log.collect_aborted_transactions(fetch_offset, region.next_offset)
    ]
