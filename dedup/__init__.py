"""dedup: the broker side of Kafka's idempotent producer.

``ProducerStateTable`` is the compiled table (``dedup._state``). With the environment
variable ``DEDUP_PURE_PYTHON=1`` the public names bind to the pure-Python twin in
:mod:`dedup.reference` instead; without it, a missing extension is an ImportError that says
how to build it, never a silent fallback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import errors
from ._backend import DEFAULT as _DEFAULT
from ._backend import PURE_PYTHON
from ._types import (
    DEFAULT_WINDOW,
    MAX_WINDOW,
    AppendManyResult,
    BatchMetadata,
    CompletedTxn,
    Origin,
    ProducerStateEntry,
    decrement_sequence,
    in_sequence,
    increment_sequence,
)
from .errors import (
    CorruptCheckpointError,
    CorruptRecordError,
    CorruptSnapshotError,
    DedupError,
    DuplicateSequenceError,
    FencedLeaderEpochError,
    InvalidProducerEpochError,
    InvalidRecordError,
    InvalidTxnStateError,
    KafkaError,
    KafkaStorageError,
    NotEnoughReplicasAfterAppendError,
    NotEnoughReplicasError,
    NotLeaderOrFollowerError,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
    ProducerFencedError,
    TransactionCoordinatorFencedError,
    TruncatedBatchError,
)
from .log import LoadReport, LogAppendInfo, PartitionLog
from .records import (
    BATCH_HEADER_DTYPE,
    BatchesAppendResult,
    append_batches,
    crc32c,
    crc_valid,
    scan_batches,
    validate_batches,
)
from .snapshot import (
    SNAPSHOT_FORMATS,
    decode_snapshot,
    encode_snapshot,
    read_snapshot,
    snapshot_file_name,
    snapshot_format,
    snapshot_offset,
    write_snapshot,
)

if TYPE_CHECKING:
    from ._state import AppendResult, ProducerStateTable
else:
    AppendResult, ProducerStateTable = _DEFAULT.AppendResult, _DEFAULT.ProducerStateTable

__version__ = "0.1.0"

__all__ = [
    "CorruptCheckpointError",
    "FencedLeaderEpochError",
    "KafkaStorageError",
    "LoadReport",
    "LogAppendInfo",
    "NotEnoughReplicasAfterAppendError",
    "NotEnoughReplicasError",
    "NotLeaderOrFollowerError",
    "OffsetOutOfRangeError",
    "PartitionLog",
    "ProducerFencedError",
    "BATCH_HEADER_DTYPE",
    "BatchesAppendResult",
    "CorruptSnapshotError",
    "DedupError",
    "SNAPSHOT_FORMATS",
    "TruncatedBatchError",
    "append_batches",
    "crc32c",
    "crc_valid",
    "decode_snapshot",
    "encode_snapshot",
    "read_snapshot",
    "scan_batches",
    "snapshot_file_name",
    "snapshot_format",
    "snapshot_offset",
    "validate_batches",
    "write_snapshot",
    "AppendManyResult",
    "AppendResult",
    "BatchMetadata",
    "CompletedTxn",
    "CorruptRecordError",
    "DEFAULT_WINDOW",
    "DuplicateSequenceError",
    "InvalidProducerEpochError",
    "InvalidRecordError",
    "InvalidTxnStateError",
    "KafkaError",
    "MAX_WINDOW",
    "Origin",
    "OutOfOrderSequenceError",
    "PURE_PYTHON",
    "ProducerStateEntry",
    "ProducerStateTable",
    "TransactionCoordinatorFencedError",
    "decrement_sequence",
    "errors",
    "in_sequence",
    "increment_sequence",
]
