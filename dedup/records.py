"""Kafka's v2 record batches (spec §8): headers read straight from bytes, the record-level
rules of a produce request (spec §2.1 rules 1, 3, 5-8), and appends of a whole buffer of
batches to a producer-state table, with offsets written in place as a leader does.

The functions are the compiled ones (``dedup._records``) unless ``DEDUP_PURE_PYTHON=1``
binds the pure-Python twins (``dedup.reference.records``). :func:`append_batches` picks the
implementation that matches the table it is given.
"""

from __future__ import annotations

from typing import Any

from ._config import PURE_PYTHON
from ._types import BATCH_HEADER_DTYPE, BatchesAppendResult, Origin
from .reference import records as _twin

if PURE_PYTHON:
    from .reference.crc32c import crc32c
    from .reference.records import check_one_batch, crc_valid, scan_batches, validate_batches
else:
    from ._records import (  # type: ignore[no-redef]
        check_one_batch,
        crc32c,
        crc_valid,
        scan_batches,
        validate_batches,
    )

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

def append_batches(
    table: Any,
    data: Any,
    *,
    origin: Origin = Origin.CLIENT,
    log_end_offset: int | None = None,
    partition_leader_epoch: int | None = None,
    write_offsets: bool = False,
    tail: str = "raise",
) -> BatchesAppendResult:
    """Append a buffer of v2 batches to ``table`` as Kafka's log does, one verdict per batch
    (see ``dedup._records.append_batches``); compiled for the compiled table, the twin's
    for the twin."""
    implementation = _twin.append_batches
    if type(table).__module__ == "dedup._state":  # the compiled table, even with DEDUP_PURE_PYTHON=1
        implementation = _compiled_append_batches()

    return implementation(
        table,
        data,
        origin=origin,
        log_end_offset=log_end_offset,
        partition_leader_epoch=partition_leader_epoch,
        write_offsets=write_offsets,
        tail=tail,
    )


def _compiled_append_batches() -> Any:
    global _COMPILED_APPEND_BATCHES
    if _COMPILED_APPEND_BATCHES is None:
        from ._records import append_batches as compiled

        _COMPILED_APPEND_BATCHES = compiled
    return _COMPILED_APPEND_BATCHES


_COMPILED_APPEND_BATCHES: Any = None
