"""dedup's errors, named after Kafka's.

:class:`KafkaError` and its subclasses are what a partition leader returns for a produce
request: each carries Kafka's wire error code in ``.code`` and Kafka's error name in
``.error_name`` (spec §2.7), both from the one table of codes, :class:`dedup._layout.ErrorCode`.
Both twins raise exactly these classes, and the vectorised paths report the same codes per
batch; :func:`error_for_code` maps a code back to its class.
:class:`CorruptSnapshotError` (Kafka's CorruptSnapshotException) has no wire code: a
snapshot file never crosses the wire. Everything derives from :class:`DedupError`.
"""

from __future__ import annotations

from typing import Any

from ._layout import ErrorCode

__all__ = [
    "DedupError",
    "KafkaError",
    "CorruptSnapshotError",
    "CorruptRecordError",
    "TruncatedBatchError",
    "OutOfOrderSequenceError",
    "DuplicateSequenceError",
    "InvalidProducerEpochError",
    "InvalidTxnStateError",
    "TransactionCoordinatorFencedError",
    "InvalidRecordError",
    "ThrottlingQuotaExceededError",
    "OffsetOutOfRangeError",
    "NotLeaderOrFollowerError",
    "NotEnoughReplicasError",
    "NotEnoughReplicasAfterAppendError",
    "KafkaStorageError",
    "FencedLeaderEpochError",
    "ProducerFencedError",
    "CorruptCheckpointError",
    "NONE",
    "error_for_code",
]

#: Kafka's code for "no error".
NONE = int(ErrorCode.NONE)

#: Each code's class, filled in as the classes are defined.
_BY_CODE: dict[int, type[KafkaError]] = {}


class DedupError(Exception):
    """Base class of every error dedup raises on purpose (not for bad arguments: those are
    ``TypeError``/``ValueError``)."""


class KafkaError(DedupError):
    """Base class of every error with a Kafka wire code: a subclass names its code in the
    class statement (``class X(KafkaError, error=ErrorCode.NAME)``) or inherits its base's."""

    code: int = -1
    error_name: str = "UNKNOWN_SERVER_ERROR"

    def __init_subclass__(cls, error: ErrorCode | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if error is not None:
            cls.code, cls.error_name = int(error), error.name
            _BY_CODE[cls.code] = cls


class CorruptRecordError(KafkaError, error=ErrorCode.CORRUPT_MESSAGE):
    """CORRUPT_MESSAGE: a batch failed its CRC-32C or cannot be parsed (spec §2.1 rule 5)."""


class TruncatedBatchError(CorruptRecordError):
    """The last batch of a buffer is cut short (a torn write, or a fetch that ended mid-batch).

    Recovery cuts a log segment at ``valid_bytes``, where the last complete batch ends;
    ``headers`` holds the complete batches before it. Scanners set both attributes on every
    error that ends a scan (a truncated, too-short or non-v2 batch).
    """


class OutOfOrderSequenceError(KafkaError, error=ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER):
    """OUT_OF_ORDER_SEQUENCE_NUMBER: a gap in a producer's sequence (spec §2.1 rules 15-16)."""


class DuplicateSequenceError(KafkaError, error=ErrorCode.DUPLICATE_SEQUENCE_NUMBER):
    """DUPLICATE_SEQUENCE_NUMBER: listed for the code table only.

    Brokers have not returned it since 1.1 (spec §2.1 rule 10): a duplicate is answered
    with error NONE and the original offsets. dedup never raises it.
    """


class InvalidProducerEpochError(KafkaError, error=ErrorCode.INVALID_PRODUCER_EPOCH):
    """INVALID_PRODUCER_EPOCH: a batch or marker from an older (fenced) epoch (rule 12, M2)."""


class InvalidTxnStateError(KafkaError, error=ErrorCode.INVALID_TXN_STATE):
    """INVALID_TXN_STATE: a non-transactional batch during an ongoing transaction (rule 18)."""


class TransactionCoordinatorFencedError(KafkaError, error=ErrorCode.TRANSACTION_COORDINATOR_FENCED):
    """TRANSACTION_COORDINATOR_FENCED: a marker from an older coordinator epoch (M3)."""


class InvalidRecordError(KafkaError, error=ErrorCode.INVALID_RECORD):
    """INVALID_RECORD: a batch breaks a record-level rule (spec §2.1 rules 1, 3, 6-8)."""


class ThrottlingQuotaExceededError(KafkaError, error=ErrorCode.THROTTLING_QUOTA_EXCEEDED):
    """THROTTLING_QUOTA_EXCEEDED (KIP-599's retriable code): a new producer refused by a table
    capped at ``max_producers`` whose producers all have an ongoing transaction (none can be
    evicted); the client retries once transactions complete (dedup's own rule, in the spirit of
    KIP-936's throttling of producer ids)."""


class OffsetOutOfRangeError(KafkaError, error=ErrorCode.OFFSET_OUT_OF_RANGE):
    """OFFSET_OUT_OF_RANGE: a fetch or truncation offset outside [log start, log end]."""


class NotLeaderOrFollowerError(KafkaError, error=ErrorCode.NOT_LEADER_OR_FOLLOWER):
    """NOT_LEADER_OR_FOLLOWER: the broker is not the partition's leader (produce) or replica."""


class NotEnoughReplicasError(KafkaError, error=ErrorCode.NOT_ENOUGH_REPLICAS):
    """NOT_ENOUGH_REPLICAS: fewer in-sync replicas than ``min.insync.replicas``; nothing was
    written (acks=all)."""


class NotEnoughReplicasAfterAppendError(KafkaError, error=ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND):
    """NOT_ENOUGH_REPLICAS_AFTER_APPEND: written on the leader, but the in-sync replica set
    shrank below ``min.insync.replicas`` before every member had it. The producer retries."""


class KafkaStorageError(KafkaError, error=ErrorCode.KAFKA_STORAGE_ERROR):
    """KAFKA_STORAGE_ERROR: a write to the log failed (disk full, I/O error). As in Kafka the
    replica stops serving; the producer-state table was not changed by the failed append."""


class FencedLeaderEpochError(KafkaError, error=ErrorCode.FENCED_LEADER_EPOCH):
    """FENCED_LEADER_EPOCH: a request carried a leader epoch older than the replica's."""


class ProducerFencedError(KafkaError, error=ErrorCode.PRODUCER_FENCED):
    """PRODUCER_FENCED: another instance with the same ``transactional.id`` took over the
    producer id with a higher epoch (returned by InitProducerId/the coordinator)."""


class CorruptSnapshotError(DedupError):
    """A producer-state snapshot that fails validation (Kafka's CorruptSnapshotException,
    spec §4.4): wrong version or magic, short file, impossible count, trailing bytes, CRC
    mismatch. The message says what was expected and what was found."""


class CorruptCheckpointError(DedupError):
    """A checkpoint file (``leader-epoch-checkpoint``, ``recovery-point-offset-checkpoint``,
    ...) that does not parse: Kafka fails the log load with an IOException naming the file;
    dedup raises this, naming the file, the line, expected versus found."""


def error_for_code(code: int) -> type[KafkaError]:
    """The error class for a Kafka wire code; ``KeyError`` for 0 (NONE) or an unknown code."""
    return _BY_CODE[int(code)]
