"""The Kafka errors a rejected batch or marker raises, worded in one place for both twins.

The wording follows the broker's log lines where Kafka has one (for example "Out of order
sequence number for producer P at offset O: S (incoming seq. number), L (current end
sequence number)", spec §9).
"""

from __future__ import annotations

from ._layout import LOG_OVERHEAD, MAGIC_V2, MIN_BATCH_LENGTH, Reason
from .errors import (
    CorruptRecordError,
    InvalidProducerEpochError,
    InvalidRecordError,
    InvalidTxnStateError,
    KafkaError,
    OutOfOrderSequenceError,
    ThrottlingQuotaExceededError,
    TransactionCoordinatorFencedError,
    TruncatedBatchError,
)


def batch_error(
    code: int,
    producer_id: int,
    base_offset: int,
    producer_epoch: int,
    base_sequence: int,
    current_epoch: int,
    current_last_sequence: int,
    current_txn_first_offset: int,
) -> KafkaError:
    """The error for a data batch rejected with Kafka code ``code``."""
    if code == InvalidRecordError.code:
        return InvalidRecordError(
            f"batch of producer {producer_id} has a producer id but base_sequence {base_sequence} (rule 8)"
        )
    if code == InvalidProducerEpochError.code:
        return InvalidProducerEpochError(
            f"epoch {producer_epoch} of producer {producer_id} at offset {base_offset} is older than "
            f"the current epoch {current_epoch}"
        )
    if code == OutOfOrderSequenceError.code:
        if producer_epoch != current_epoch:
            return OutOfOrderSequenceError(
                f"Invalid sequence number for new epoch of producer {producer_id} at offset {base_offset}: "
                f"{producer_epoch} (request epoch), {base_sequence} (seq. number), "
                f"{current_epoch} (current producer epoch)"
            )
        return OutOfOrderSequenceError(
            f"Out of order sequence number for producer {producer_id} at offset {base_offset}: "
            f"{base_sequence} (incoming seq. number), {current_last_sequence} (current end sequence number)"
        )
    if code == InvalidTxnStateError.code:
        return InvalidTxnStateError(
            f"Expected transactional write from producer {producer_id} at offset {base_offset}: "
            f"its transaction started at offset {current_txn_first_offset}"
        )
    if code == ThrottlingQuotaExceededError.code:
        return ThrottlingQuotaExceededError(
            f"producer {producer_id} at offset {base_offset} is new, and the partition's table holds its "
            "max_producers (producer.state.max.producers), each with an ongoing transaction: none can be "
            "evicted; retry once a transaction completes"
        )
    raise AssertionError(f"no batch error has code {code}")


def marker_error(
    code: int,
    producer_id: int,
    offset: int,
    producer_epoch: int,
    coordinator_epoch: int,
    current_epoch: int,
    current_coordinator_epoch: int,
) -> KafkaError:
    """The error for a transaction marker rejected with Kafka code ``code``."""
    if code == InvalidRecordError.code:
        return InvalidRecordError(f"producer {producer_id} sent a control batch as a client (rule 7)")
    if code == InvalidProducerEpochError.code:
        return InvalidProducerEpochError(
            f"marker epoch {producer_epoch} of producer {producer_id} at offset {offset} is older than "
            f"the current epoch {current_epoch}"
        )
    if code == TransactionCoordinatorFencedError.code:
        return TransactionCoordinatorFencedError(
            f"marker of producer {producer_id} at offset {offset} has coordinator epoch "
            f"{coordinator_epoch}, older than the current {current_coordinator_epoch}"
        )
    raise AssertionError(f"no marker error has code {code}")


#: The error class and message of each record-level reason (dedup._layout.Reason).
_RECORD_PROBLEMS: dict[int, tuple[type[KafkaError], str]] = {
    Reason.BASE_OFFSET: (InvalidRecordError, "base_offset: expected 0 from a client (rule 3), found {found}"),
    Reason.CRC: (CorruptRecordError, "Record is corrupt (stored crc = {found}, computed crc = {expected}) (rule 5)"),
    Reason.RECORD_COUNT: (
        InvalidRecordError,
        "record_count: expected {expected} (last_offset_delta + 1), found {found} (rule 6)",
    ),
    Reason.CONTROL_FROM_CLIENT: (InvalidRecordError, "attributes: a client may not send a control batch (rule 7)"),
    Reason.NO_SEQUENCE: (
        InvalidRecordError,
        "base_sequence: expected >= 0 from a client with a producer id (rule 8), -1 or more from a "
        "leader, found {found}",
    ),
    Reason.OFFSET_DELTA: (CorruptRecordError, "last_offset_delta: expected in [0, 2^31-2], found {found}"),
    Reason.OFFSETS_BACKWARDS: (
        InvalidRecordError,
        "base_offset: expected at least {expected} (the log end offset), found {found}: offsets go backwards",
    ),
    Reason.MARKER: (
        InvalidRecordError,
        "control batch: its first record is not an uncompressed COMMIT or ABORT marker",
    ),
    Reason.OFFSET_OVERFLOW: (InvalidRecordError, "offsets: the log end offset after it would pass 2^63-1"),
}


def record_error(index: int, position: int, reason: int, expected: int, found: int) -> KafkaError:
    """The error for batch ``index`` (at byte ``position``) refused for a record-level reason."""
    cls, template = _RECORD_PROBLEMS[reason]
    return cls(f"batch {index} at position {position}: " + template.format(expected=expected, found=found))


def scan_error(kind: str, index: int, position: int, found: int, needed: int = 0, left: int = 0) -> KafkaError:
    """The error that ends a scan at batch ``index``: ``truncated``, ``length`` or ``magic``."""
    where = f"batch {index} at position {position}"
    if kind == "truncated":
        if needed:
            detail = f"truncated: the batch needs {needed} bytes, {left} are left"
        else:
            detail = f"truncated: {left} bytes left, fewer than the {LOG_OVERHEAD} of a batch's length prefix"
        return TruncatedBatchError(f"{where}: {detail}")
    if kind == "length":
        return CorruptRecordError(f"{where}: batch_length: expected at least {MIN_BATCH_LENGTH}, found {found}")
    return InvalidRecordError(f"{where}: magic: expected {MAGIC_V2} (rule 1), found {found}")
