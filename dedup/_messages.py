"""The Kafka errors a rejected batch or marker raises, worded in one place for both twins.

The wording follows the broker's log lines where Kafka has one (for example "Out of order
sequence number for producer P at offset O: S (incoming seq. number), L (current end
sequence number)", spec §9).
"""

from __future__ import annotations

from .errors import (
    InvalidProducerEpochError,
    InvalidRecordError,
    InvalidTxnStateError,
    KafkaError,
    OutOfOrderSequenceError,
    TransactionCoordinatorFencedError,
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
