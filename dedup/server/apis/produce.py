"""InitProducerId and Produce: producer ids for idempotent producers, and their batches
through the leader's log (the table's checks, spec §2.1) with ``acks=all``."""

from __future__ import annotations

import logging
import struct
import time
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from ... import crc32c
from ..._layout import (
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
from ...errors import KafkaError
from ...records import scan_batches
from ..wire import Request, ResponseFrame, build, encode_unsigned_varint, response_schema
from .common import replica_offline

if TYPE_CHECKING:
    from ...cluster import Cluster
    from ..core import KafkaServer

logger = logging.getLogger("dedup.server")

_CRC = field_struct("crc")
_BATCH_LENGTH = field_struct("batch_length")
_ATTRIBUTES = field_struct("attributes")
_PRODUCER_FIELDS = RECORDS_COUNT_OFFSET - PRODUCER_ID_OFFSET


def init_producer_id(server: KafkaServer, broker_id: int, request: Request) -> Any:
    """InitProducerId without a transactional id (the transactional path is
    :func:`dedup.server.apis.transactions.init_producer_id`)."""
    schema = response_schema(request)
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
        if attributes & ATTR_TRANSACTIONAL:  # transactional batches keep their producer (markers need it)
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


def has_transactional_records(body: Any) -> bool:
    """Kafka's RequestUtils.hasTransactionalRecords: whether the first batch of any partition's
    records is transactional. Records too short to hold a whole first batch have no batch there
    (ByteBufferLogInputStream.nextBatch), and only magic 2 has the transactional bit."""
    for topic in body.topic_data:
        for data in topic.partition_data:
            records = data.records
            if not records or len(records) < LOG_OVERHEAD or records[MAGIC_OFFSET] != MAGIC_V2:
                continue
            if LOG_OVERHEAD + _BATCH_LENGTH.unpack_from(records, BATCH_LENGTH_OFFSET)[0] > len(records):
                continue
            if _ATTRIBUTES.unpack_from(records, ATTRIBUTES_OFFSET)[0] & ATTR_TRANSACTIONAL:
                return True
    return False


def refuse_all(body: Any, error_code: ErrorCode) -> list[dict[str, Any]]:
    """Kafka's ProduceRequest.getErrorResponse: ``error_code`` for every partition of the request
    (once each), base offset and log start offset -1, no message for the error's own text."""
    responses: dict[str, dict[int, dict[str, Any]]] = {}
    for topic in body.topic_data:
        partitions = responses.setdefault(topic.name, {})
        for data in topic.partition_data:
            partitions[data.index] = {"index": data.index, "error_code": error_code, "base_offset": -1,
                                      "log_start_offset": -1}  # fmt: skip
    return [{"name": name, "partition_responses": list(partitions.values())} for name, partitions in responses.items()]


def produce(server: KafkaServer, broker_id: int, request: Request) -> ResponseFrame | None:
    """Produce: each partition's batch through its leader (:func:`_append`); the response frame
    (:func:`encode_produce_response`), or None with ``acks=0`` (Kafka sends no response)."""
    body = request.body
    acks = body.acks
    if body.transactional_id is None and has_transactional_records(body):
        # Kafka's KafkaApis.handleProduceRequest: transactional records need a transactional id
        # (which an authorizer would then check; dedup has none, so any id passes), before any
        # other check and with nothing appended.
        if acks == 0:
            return None
        responses = refuse_all(body, ErrorCode.transactional_id_authorization_failed)
        return ResponseFrame([encode_produce_response(request.correlation_id, request.api_version, responses)])
    responses = []
    for topic in body.topic_data:
        partitions = []
        for data in topic.partition_data:
            # Kafka's Produce never creates a topic (only Metadata does): an unknown one is
            # UNKNOWN_TOPIC_OR_PARTITION (ReplicaManager.appendToLocalLog).
            cluster = server.partition(topic.name, data.index)
            entry: dict[str, Any] = {"index": data.index, "base_offset": -1}
            if cluster is None:
                entry["error_code"] = ErrorCode.unknown_topic_or_partition
            elif acks not in (-1, 0, 1):
                entry["error_code"] = ErrorCode.invalid_required_acks
            elif replica_offline(cluster, broker_id):
                entry["error_code"] = ErrorCode.kafka_storage_error
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
    return ResponseFrame([encode_produce_response(request.correlation_id, request.api_version, responses)])


# --- the response, encoded directly ----------------------------------------------------------------
#
# Kafka's ProduceResponse (clients/src/main/resources/common/message/ProduceResponse.json) in the
# versions served, 3 to 9, written field by field as Kafka's generated ProduceResponseData.write
# does: building kio's entities and walking them with kio's generic writer took about 40% of a
# small produce request's CPU in the server. tests/server/test_server_produce_response.py compares
# every version byte for byte with kio's encoding of the same response.

_PARTITION_HEAD = struct.Struct(">ihqq")  # index, error_code, base_offset, log_append_time_ms
_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_NO_THROTTLE = b"\0\0\0\0"  # throttle_time_ms 0: never throttled here
_NO_TAGS = b"\0"  # an empty tagged-field section (flexible versions)


def _string(value: str | None, flexible: bool) -> bytes:
    """A (nullable) string: int16 length (-1: null), or in a flexible version an unsigned
    varint of length + 1 (0: null), then UTF-8."""
    if value is None:
        return _NO_TAGS if flexible else b"\xff\xff"
    data = value.encode()
    return (encode_unsigned_varint(len(data) + 1) if flexible else _INT16.pack(len(data))) + data


def _count(count: int, flexible: bool) -> bytes:
    """An array's length: int32, or an unsigned varint of length + 1 (flexible)."""
    return encode_unsigned_varint(count + 1) if flexible else _INT32.pack(count)


def encode_produce_response(correlation_id: int, version: int, responses: list[dict[str, Any]]) -> bytes:
    """The response frame (size prefix and header included) of Produce v3-v9: ``responses`` as
    :func:`produce` collects them, ``{"name", "partition_responses": [{"index", "error_code",
    "base_offset", "log_start_offset"?, "error_message"?}]}``; log_append_time_ms is -1 (CreateTime),
    record_errors empty, throttle_time_ms 0. The header is v1 (tagged fields) from v9 on."""
    flexible = version >= 9
    parts = [b"", _INT32.pack(correlation_id)]
    if flexible:
        parts.append(_NO_TAGS)
    parts.append(_count(len(responses), flexible))
    for topic in responses:
        partitions = topic["partition_responses"]
        parts += [_string(topic["name"], flexible), _count(len(partitions), flexible)]
        for entry in partitions:
            parts.append(_PARTITION_HEAD.pack(entry["index"], entry["error_code"], entry["base_offset"], -1))
            if version >= 5:
                parts.append(_INT64.pack(entry.get("log_start_offset", -1)))
            if version >= 8:
                parts += [_count(0, flexible), _string(entry.get("error_message"), flexible)]  # record_errors: none
            if flexible:
                parts.append(_NO_TAGS)
        if flexible:
            parts.append(_NO_TAGS)
    parts.append(_NO_THROTTLE)
    if flexible:
        parts.append(_NO_TAGS)
    size = sum(len(part) for part in parts)
    parts[0] = _INT32.pack(size)
    return b"".join(parts)


def _append(server: KafkaServer, cluster: Cluster, records: bytes, acks: int) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        if not server.deduplicate:
            records = strip_producer_ids(records)
        response = cluster.produce(records, acks="all" if acks == -1 else "1")
    except KafkaError as error:  # bytes that are not v2 batches, before the append
        return {"error_code": ErrorCode(error.code), "error_message": str(error)}
    except OSError as error:  # a file the log could not write outside an append: Kafka's storage error
        return {"error_code": ErrorCode.kafka_storage_error, "error_message": str(error)}
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
