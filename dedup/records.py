"""Kafka's v2 record batches (spec §8): headers read straight from bytes, the record-level
rules of a produce request (spec §2.1 rules 1, 3, 5-8), and appends of a whole buffer of
batches to a producer-state table, with offsets written in place as a leader does.

The functions are the compiled ones (``dedup._records``) unless ``DEDUP_PURE_PYTHON=1``
binds the pure-Python twins (``dedup.reference.records``): see :mod:`dedup._backend`.
:func:`append_batches` works with the implementation of the table it is given.
"""

from __future__ import annotations

from typing import Any

from ._backend import DEFAULT, implementation_of
from ._types import BATCH_HEADER_DTYPE, BatchesAppendResult

__all__ = [
    "BATCH_HEADER_DTYPE",
    "BatchesAppendResult",
    "append_batches",
    "check_one_batch",
    "crc32c",
    "crc_valid",
    "scan_batches",
    "validate_batches",
]

check_one_batch = DEFAULT.records.check_one_batch
crc32c = DEFAULT.crc32c
crc_valid = DEFAULT.records.crc_valid
scan_batches = DEFAULT.records.scan_batches
validate_batches = DEFAULT.records.validate_batches


def append_batches(table: Any, data: Any, **options: Any) -> BatchesAppendResult:
    """Append a buffer of v2 batches to ``table`` as Kafka's log does, one verdict per batch.

    The keywords (``origin``, ``log_end_offset``, ``partition_leader_epoch``,
    ``write_offsets``, ``tail``) and the result are ``dedup._records.append_batches``'s; the
    implementation is that of the table's twin, compiled for the compiled table, the twin's
    for the twin (``TypeError`` naming ``table`` for anything else).
    """
    return implementation_of(table).records.append_batches(table, data, **options)
