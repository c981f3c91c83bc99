"""Value types shared by both twins of the producer-state table.

These are plain, immutable Python objects: what ``table.entry(pid)`` returns and what the
vectorised paths return. Neither twin keeps them as its internal state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from .errors import KafkaError

INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

# Kafka's sentinels (spec §8.4).
NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_TIMESTAMP = -1

#: Kafka's NUM_BATCHES_TO_RETAIN: the client's limit of in-flight requests with idempotence.
DEFAULT_WINDOW = 5
#: The largest window the table accepts (KIP-1269 proposes making 5 configurable).
MAX_WINDOW = 255


class Origin(enum.IntEnum):
    """Who is appending (Kafka's AppendOrigin, spec §1.5).

    ``REPLICATION`` is also the origin of log recovery and rebuild: Kafka has no separate one.
    """

    CLIENT = 0
    REPLICATION = 1
    COORDINATOR = 2


def wrap_increment(sequence: int, increment: int) -> int:
    """Kafka's incrementSequence without argument checks, for callers whose values are
    already int32 (the table, the producer): wraps from 2^31-1 to 0 (spec §8.4)."""
    if sequence > INT32_MAX - increment:
        return increment - (INT32_MAX - sequence) - 1
    return sequence + increment


def wrap_decrement(sequence: int, decrement: int) -> int:
    """Kafka's decrementSequence without argument checks: wraps from 0 to 2^31-1 (spec §8.4)."""
    if sequence < decrement:
        return INT32_MAX - (decrement - sequence) + 1
    return sequence - decrement


def follows(last_sequence: int, next_sequence: int) -> bool:
    """Kafka's inSequence without argument checks (see :func:`in_sequence`)."""
    return next_sequence == last_sequence + 1 or (next_sequence == 0 and last_sequence == INT32_MAX)


def _sequence(name: str, value: object) -> int:
    from ._args import integer  # (_args imports this module)

    return integer(name, value, 0, INT32_MAX, "in [0, 2^31-1] (a sequence or a count of records)")


def _int32(name: str, value: object) -> int:
    from ._args import integer

    return integer(name, value, INT32_MIN, INT32_MAX, "an int32")


def increment_sequence(sequence: int, increment: int) -> int:
    """Kafka's incrementSequence: wraps from 2^31-1 to 0 (spec §8.4).

    Both arguments are in [0, 2^31-1] (sequences are non-negative); otherwise ``TypeError``
    (not an integer) or ``ValueError`` (out of range), naming the argument.
    """
    return wrap_increment(_sequence("sequence", sequence), _sequence("increment", increment))


def decrement_sequence(sequence: int, decrement: int) -> int:
    """Kafka's decrementSequence: wraps from 0 to 2^31-1 (spec §8.4). Both arguments are in
    [0, 2^31-1], as for :func:`increment_sequence`."""
    return wrap_decrement(_sequence("sequence", sequence), _sequence("decrement", decrement))


def in_sequence(last_sequence: int, next_sequence: int) -> bool:
    """True if ``next_sequence`` directly follows ``last_sequence`` (spec §8.4).

    ``last_sequence + 1`` is unbounded here, so 2^31-1 is followed only by 0, and -1 (no
    batch yet) only by 0. Both arguments are Java ints (int32), as in Kafka; otherwise
    ``TypeError``/``ValueError`` naming the argument.
    """
    return follows(_int32("last_sequence", last_sequence), _int32("next_sequence", next_sequence))


@dataclass(frozen=True)
class BatchMetadata:
    """One retained batch of a producer (Kafka's BatchMetadata, spec §1.3).

    Kafka stores the four fields below; the first sequence and first offset are derived,
    the offset delta doubling as the sequence delta.
    """

    last_sequence: int
    last_offset: int
    offset_delta: int
    timestamp: int

    @property
    def first_sequence(self) -> int:
        return wrap_decrement(self.last_sequence, self.offset_delta)

    @property
    def first_offset(self) -> int:
        return self.last_offset - self.offset_delta


@dataclass(frozen=True)
class ProducerStateEntry:
    """A read-only copy of one producer's state (Kafka's ProducerStateEntry, spec §1.2).

    ``batches`` is oldest first. ``current_txn_first_offset`` is ``None`` when no
    transaction is ongoing (Kafka's empty OptionalLong; -1 in a snapshot file).
    """

    producer_id: int
    producer_epoch: int
    batches: tuple[BatchMetadata, ...]
    coordinator_epoch: int
    last_timestamp: int
    current_txn_first_offset: int | None

    @property
    def is_empty(self) -> bool:
        """No batch metadata (the entry itself may still hold an epoch)."""
        return not self.batches

    @property
    def first_sequence(self) -> int:
        return self.batches[0].first_sequence if self.batches else NO_SEQUENCE

    @property
    def last_sequence(self) -> int:
        return self.batches[-1].last_sequence if self.batches else NO_SEQUENCE

    @property
    def first_data_offset(self) -> int:
        return self.batches[0].first_offset if self.batches else -1

    @property
    def last_data_offset(self) -> int:
        return self.batches[-1].last_offset if self.batches else -1


class AppendManyResult(NamedTuple):
    """Per-batch verdicts of ``append_many``, one row per input batch.

    ``error_codes`` is 0 (NONE) for an appended batch and for a duplicate, else Kafka's
    code. ``base_offsets``/``last_offsets``/``timestamps`` are the assigned offsets and the
    recorded max timestamp of an appended batch, the ORIGINAL batch's for a duplicate, and -1
    for an error. ``log_end_offset`` is the log end offset after the call.
    """

    error_codes: np.ndarray  # int16
    duplicate: np.ndarray  # bool
    base_offsets: np.ndarray  # int64
    last_offsets: np.ndarray  # int64
    timestamps: np.ndarray  # int64
    log_end_offset: int


class CompletedTxn(NamedTuple):
    """A transaction ended by a COMMIT or ABORT marker (Kafka's CompletedTxn, spec §1.1)."""

    producer_id: int
    first_offset: int
    last_offset: int
    is_aborted: bool


#: One row per v2 record batch, as the header scanners return them (spec §8.1). The layout
#: is the compiled scanner's C struct (checked when dedup._records loads): aligned fields,
#: 80 bytes a row. ``position`` is where the batch starts in the scanned buffer; the last
#: five fields are decoded from ``attributes`` (spec §8.2).
BATCH_HEADER_DTYPE = np.dtype(
    {
        "names": [
            "position", "base_offset", "base_timestamp", "max_timestamp", "producer_id",
            "batch_length", "partition_leader_epoch", "crc", "last_offset_delta", "base_sequence",
            "record_count", "attributes", "producer_epoch", "magic", "compression",
            "timestamp_type", "is_transactional", "is_control",
        ],
        "formats": [
            "<i8", "<i8", "<i8", "<i8", "<i8",
            "<i4", "<i4", "<u4", "<i4", "<i4",
            "<i4", "<i2", "<i2", "i1", "u1",
            "u1", "?", "?",
        ],
        "offsets": [0, 8, 16, 24, 32, 40, 44, 48, 52, 56, 60, 64, 66, 68, 69, 70, 71, 72],
        "itemsize": 80,
    }
)


class BatchesAppendResult(NamedTuple):
    """Per-batch verdicts of ``append_batches``, one row per batch of the buffer.

    As :class:`AppendManyResult`: ``error_codes`` 0 for an appended batch or a duplicate,
    else Kafka's code (2 CORRUPT_MESSAGE and 87 INVALID_RECORD for the record-level rules;
    45, 47, 48, 52 from the producer-state table); offsets and timestamp are the batch's
    own, the ORIGINAL batch's for a duplicate, -1 for an error. ``errors`` maps the batch
    index of each refused batch to its error (the message names the field, expected versus
    found). ``completed_transactions`` lists what COMMIT/ABORT markers ended, in order.
    ``valid_bytes`` is where the last complete batch ends (less than the buffer's length
    when a torn tail was ignored).
    """

    headers: np.ndarray  # BATCH_HEADER_DTYPE
    error_codes: np.ndarray  # int16
    duplicate: np.ndarray  # bool
    base_offsets: np.ndarray  # int64
    last_offsets: np.ndarray  # int64
    timestamps: np.ndarray  # int64
    log_end_offset: int
    valid_bytes: int
    errors: dict[int, KafkaError]
    completed_transactions: list[CompletedTxn]
