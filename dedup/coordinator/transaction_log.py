"""The records of Kafka's ``__transaction_state`` topic, and the topic written and replayed.

Layouts from Kafka's ``transaction-coordinator/src/main/resources/common/message/``
``TransactionLogKey.json`` and ``TransactionLogValue.json``, written as Kafka's
``TransactionLog.keyToBytes``/``valueToBytes`` write them (``MessageUtil.toVersionPrefixedBytes``:
an int16 version, then the message), big-endian:

- key v0: ``TransactionalId`` string (int16 length + UTF-8);
- value v0 (written, as Kafka does until ``transaction.version`` 1 is finalised):
  ``ProducerId`` int64, ``ProducerEpoch`` int16, ``TransactionTimeoutMs`` int32,
  ``TransactionStatus`` int8 (:class:`TransactionState` id), ``TransactionPartitions``
  (int32 count, -1 for null: Empty writes null; each ``Topic`` string and ``PartitionIds``
  int32 count + int32s), ``TransactionLastUpdateTimestampMs`` int64,
  ``TransactionStartTimestampMs`` int64;
- value v1 (read): the same fields, flexible (compact lengths, unsigned varint + 1, and
  tagged fields after each struct), with tagged ``PreviousProducerId`` (0), ``NextProducerId``
  (1) and ``ClientTransactionVersion`` (2).

A null value (a tombstone) removes the id (``transactional.id.expiration.ms``).
:class:`TransactionLog` appends records to the id's partition (``partitionFor``: the
transactional id's Java hash modulo ``transaction.state.log.num.partitions``) with acks=all,
and replays a partition into :class:`TransactionMetadata` (Kafka's
``TransactionStateManager.loadTransactionMetadata``: the latest record per key wins).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass

from kio.schema.errors import ErrorCode

from ..batch import encode_batch
from ..cluster import Cluster
from ..errors import KafkaError
from .record_fields import INT16 as _INT16
from .record_fields import INT32 as _INT32
from .record_fields import INT64 as _INT64
from .record_fields import FieldReader
from .store import OffsetsStorage, partition_for
from .transaction_metadata import NO_PRODUCER_EPOCH, NO_PRODUCER_ID, TransactionMetadata, TransactionState

__all__ = [
    "TRANSACTION_STATE_TOPIC",
    "CorruptTransactionRecord",
    "TransactionLog",
    "TransactionLogValue",
    "decode_key",
    "decode_value",
    "encode_key",
    "encode_value",
]

logger = logging.getLogger("dedup.coordinator")

TRANSACTION_STATE_TOPIC = "__transaction_state"
KEY_VERSION = 0
VALUE_VERSION = 0  # Kafka writes v0 until transaction.version 1 (flexible records) is finalised

_INT8 = struct.Struct(">b")
# Fast paths of a load (one unpack where the reader takes a field at a time): the fields every
# value version starts with, the two timestamps, and a key's version and length.
_VALUE_HEAD = struct.Struct(">hqhib")  # version, producerId, producerEpoch, transactionTimeoutMs, transactionStatus
_TIMESTAMPS = struct.Struct(">qq")  # transactionLastUpdateTimestampMs, transactionStartTimestampMs
_KEY_HEAD = struct.Struct(">hh")  # version, the transactionalId's length


class CorruptTransactionRecord(ValueError):
    """A key or value of ``__transaction_state`` that does not parse."""


@dataclass(frozen=True)
class TransactionLogValue:
    """TransactionLogValue's fields (``partitions``: None where the record has null)."""

    producer_id: int
    producer_epoch: int
    transaction_timeout_ms: int
    transaction_status: int
    partitions: tuple[tuple[str, tuple[int, ...]], ...] | None
    last_update_timestamp_ms: int
    start_timestamp_ms: int
    previous_producer_id: int = NO_PRODUCER_ID  # v1 tagged 0
    next_producer_id: int = NO_PRODUCER_ID  # v1 tagged 1
    client_transaction_version: int = 0  # v1 tagged 2

    @classmethod
    def of(cls, metadata: TransactionMetadata) -> TransactionLogValue:
        """TransactionLog.valueToBytes' fields for a metadata (partitions grouped by topic;
        null for Empty, which must have none)."""
        partitions: tuple[tuple[str, tuple[int, ...]], ...] | None = None
        if metadata.state != TransactionState.EMPTY:
            by_topic: dict[str, list[int]] = {}
            for topic, partition in sorted(metadata.topic_partitions):
                by_topic.setdefault(topic, []).append(partition)
            partitions = tuple((topic, tuple(ids)) for topic, ids in by_topic.items())
        elif metadata.topic_partitions:
            raise ValueError(f"Transaction is not expected to have any partitions since its state is Empty: {metadata}")
        return cls(metadata.producer_id, metadata.producer_epoch, metadata.txn_timeout_ms, metadata.state.id,
                   partitions, metadata.txn_last_update_timestamp, metadata.txn_start_timestamp)  # fmt: skip

    def metadata(self, transactional_id: str) -> TransactionMetadata:
        """TransactionLog.readTxnRecordValue: the metadata this record describes (last epoch
        unknown, -1, as in Kafka)."""
        state = TransactionState.from_id(self.transaction_status)
        partitions: set[tuple[str, int]] = set()
        if state != TransactionState.EMPTY:
            partitions = {(topic, p) for topic, ids in self.partitions or () for p in ids}
        return TransactionMetadata(
            transactional_id, self.producer_id, self.producer_epoch, NO_PRODUCER_EPOCH, self.transaction_timeout_ms,
            state, partitions, self.start_timestamp_ms, self.last_update_timestamp_ms, self.previous_producer_id,
        )  # fmt: skip


# --- writing ------------------------------------------------------------------------------------


def _string(value: str) -> bytes:
    data = value.encode()
    if len(data) > 0x7FFF:
        raise ValueError(f"a string of {len(data)} bytes does not fit Kafka's int16 length")
    return _INT16.pack(len(data)) + data


def encode_key(transactional_id: str) -> bytes:
    """TransactionLog.keyToBytes: version 0, the transactional id."""
    return _INT16.pack(KEY_VERSION) + _string(transactional_id)


def encode_value(value: TransactionLogValue) -> bytes:
    """TransactionLog.valueToBytes at version 0."""
    parts = [
        _INT16.pack(VALUE_VERSION),
        _INT64.pack(value.producer_id),
        _INT16.pack(value.producer_epoch),
        _INT32.pack(value.transaction_timeout_ms),
        _INT8.pack(value.transaction_status),
    ]
    if value.partitions is None:
        parts.append(_INT32.pack(-1))
    else:
        parts.append(_INT32.pack(len(value.partitions)))
        for topic, ids in value.partitions:
            parts += [_string(topic), _INT32.pack(len(ids)), *(_INT32.pack(i) for i in ids)]
    parts += [_INT64.pack(value.last_update_timestamp_ms), _INT64.pack(value.start_timestamp_ms)]
    return b"".join(parts)


# --- reading ------------------------------------------------------------------------------------


def decode_key(data: bytes) -> str:
    """The transactional id of a key (version 0)."""
    if len(data) >= _KEY_HEAD.size:
        version, length = _KEY_HEAD.unpack_from(data)
        if version == KEY_VERSION and length == len(data) - _KEY_HEAD.size:
            try:
                return str(data[_KEY_HEAD.size :], "utf-8")
            except UnicodeDecodeError:
                pass  # the reader below says why
    reader = FieldReader(data, "TransactionLogKey", CorruptTransactionRecord)
    version = reader.fixed(_INT16, "version")
    if version != KEY_VERSION:
        raise CorruptTransactionRecord(f"TransactionLogKey: version: expected 0, found {version}")
    transactional_id = reader.string("transactionalId", False)
    reader.end()
    return transactional_id


def decode_value(data: bytes) -> TransactionLogValue:
    """A value of version 0 or 1 (Kafka: IllegalStateException for another version)."""
    reader = FieldReader(data, "TransactionLogValue", CorruptTransactionRecord)
    if len(data) >= _VALUE_HEAD.size:
        version, producer_id, producer_epoch, timeout, status = _VALUE_HEAD.unpack_from(data)
        reader.at = _VALUE_HEAD.size
    else:  # too short: the reader names the field that is missing
        version = reader.fixed(_INT16, "version")
    if version not in (0, 1):
        raise CorruptTransactionRecord(f"TransactionLogValue: version: expected 0 or 1, found {version}")
    flexible = version >= 1
    if reader.at < _VALUE_HEAD.size:
        producer_id = reader.fixed(_INT64, "producerId")
        producer_epoch = reader.fixed(_INT16, "producerEpoch")
        timeout = reader.fixed(_INT32, "transactionTimeoutMs")
        status = reader.fixed(_INT8, "transactionStatus")
    count = reader.count("transactionPartitions", flexible)
    partitions: tuple[tuple[str, tuple[int, ...]], ...] | None = None
    if count >= 0:
        entries = []
        for _ in range(count):
            topic = reader.string("topic", flexible)
            ids = reader.count("partitionIds", flexible)
            if ids < 0:
                raise CorruptTransactionRecord("TransactionLogValue: partitionIds: null")
            entries.append((topic, tuple(reader.fixed(_INT32, "partitionId") for _ in range(ids))))
            if flexible:
                reader.tagged_fields()
        partitions = tuple(entries)
    if len(data) - reader.at >= _TIMESTAMPS.size:
        last_update, start = _TIMESTAMPS.unpack_from(data, reader.at)
        reader.at += _TIMESTAMPS.size
    else:
        last_update = reader.fixed(_INT64, "transactionLastUpdateTimestampMs")
        start = reader.fixed(_INT64, "transactionStartTimestampMs")
    previous, following, client_version = NO_PRODUCER_ID, NO_PRODUCER_ID, 0
    if flexible:
        tagged = reader.tagged_fields()
        if 0 in tagged:
            previous = _tagged(tagged[0], _INT64, "previousProducerId")
        if 1 in tagged:
            following = _tagged(tagged[1], _INT64, "nextProducerId")
        if 2 in tagged:
            client_version = _tagged(tagged[2], _INT16, "clientTransactionVersion")
    reader.end()
    try:
        TransactionState.from_id(status)
    except ValueError as error:
        raise CorruptTransactionRecord(f"TransactionLogValue: {error}") from None
    return TransactionLogValue(producer_id, producer_epoch, timeout, status, partitions, last_update, start,
                               previous, following, client_version)  # fmt: skip


def _tagged(data: bytes, layout: struct.Struct, name: str) -> int:
    if len(data) != layout.size:
        raise CorruptTransactionRecord(f"TransactionLogValue: {name}: {len(data)} bytes, {layout.size} expected")
    return int(layout.unpack(data)[0])


# --- the topic ----------------------------------------------------------------------------------

# TransactionStateManager.appendTransactionToLog maps a failed append to these codes.
_APPEND_ERRORS = {
    ErrorCode.unknown_topic_or_partition: ErrorCode.coordinator_not_available,
    ErrorCode.not_enough_replicas: ErrorCode.coordinator_not_available,
    ErrorCode.not_enough_replicas_after_append: ErrorCode.coordinator_not_available,
    ErrorCode.request_timed_out: ErrorCode.coordinator_not_available,
    ErrorCode.not_leader_or_follower: ErrorCode.not_coordinator,
    ErrorCode.kafka_storage_error: ErrorCode.not_coordinator,
    ErrorCode.message_too_large: ErrorCode.unknown_server_error,
    ErrorCode.record_list_too_large: ErrorCode.unknown_server_error,
}


class TransactionLog:
    """The transactional ids' records in ``storage`` (the ``__transaction_state`` partitions,
    :class:`dedup.server.topics.TransactionStateTopic`), batches stamped with ``clock()``."""

    def __init__(self, storage: OffsetsStorage, clock: Callable[[], int]) -> None:
        self.storage = storage
        self.clock = clock

    def partition_for(self, transactional_id: str) -> int:
        """TransactionStateManager.partitionFor: ``Utils.abs(transactionalId.hashCode) % partitions``."""
        return partition_for(transactional_id, self.storage.num_partitions)

    def append(self, transactional_id: str, value: TransactionLogValue | None) -> ErrorCode:
        """The id's record (None: a tombstone) appended with acks=all: NONE, or the
        coordinator error Kafka maps the append's failure to."""
        cluster = self.storage.partition(self.partition_for(transactional_id))
        if cluster is None:
            return ErrorCode.coordinator_not_available
        try:
            record = (encode_key(transactional_id), None if value is None else encode_value(value))
        except ValueError as error:  # an id longer than the record's int16 length (flexible requests allow it)
            logger.warning("transactional id of %d characters: %s", len(transactional_id), error)
            return ErrorCode.unknown_server_error
        batch = encode_batch([record[1]], keys=[record[0]], timestamp=self.clock())
        try:
            response = cluster.produce(batch, acks="all")
        except KafkaError as error:
            failure: KafkaError | None = error
        else:
            failure = response.error
        if failure is None:
            return ErrorCode.none
        logger.warning("transactional id %s: append to %s-%d failed: %s", transactional_id, TRANSACTION_STATE_TOPIC,
                       self.partition_for(transactional_id), failure)  # fmt: skip
        return _APPEND_ERRORS.get(ErrorCode(failure.code), ErrorCode.unknown_server_error)

    def replay(self, partition: int, cluster: Cluster) -> dict[str, TransactionMetadata]:
        """TransactionStateManager.loadTransactionMetadata: the ids of ``cluster``'s log up to
        its high watermark, the latest record per key, tombstones applied; a record that does
        not parse is logged and skipped."""
        loaded: dict[str, TransactionLogValue | None] = {}
        for record in cluster.consume():
            if record.key is None:
                continue
            try:
                transactional_id = decode_key(record.key)
                loaded[transactional_id] = None if record.value is None else decode_value(record.value)
            except CorruptTransactionRecord as error:
                logger.error("%s-%d, offset %d: skipped: %s", TRANSACTION_STATE_TOPIC, partition, record.offset, error)
        return {tid: value.metadata(tid) for tid, value in loaded.items() if value is not None}
