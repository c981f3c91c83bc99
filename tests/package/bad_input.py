"""The bad-input matrix's row type and what its parts share (tests/package/test_bad_input_*.py).

A row is (entry point, argument, bad-value class): the call, the exception class expected and a
regex that must find the argument's name in the message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from conftest import TWINS

from dedup import batch as batches
from dedup._types import INT16_MAX, INT32_MAX, INT64_MAX

__all__ = [
    "GOOD_BATCH", "INT16_MAX", "INT32_MAX", "INT64_MAX", "STRIDED", "TRUNCATED",
    "Bad", "encode", "ids", "other_table_class", "row", "seeded", "table_state",
]  # fmt: skip


class Bad(NamedTuple):
    entry: str  # the entry point
    argument: str  # the argument at fault
    kind: str  # the bad-value class
    call: Callable[..., Any]
    error: type[BaseException]
    match: str  # regex that must find the argument's name (or the rule) in the message


def row(entry, argument, kind, call, error, match=None):
    return Bad(entry, argument, kind, call, error, match or argument)


def ids(rows):
    return [f"{r.entry}-{r.argument}-{r.kind}" for r in rows]


def other_table_class(table_class):
    return next(twin.ProducerStateTable for twin in TWINS.values() if twin.ProducerStateTable is not table_class)


def table_state(table):
    return len(table), table.map_end_offset, [(pid, table.entry(pid)) for pid in table]


def seeded(table_class):
    """One producer (1, epoch 0, sequences 0-4 at offsets 10-14): map end offset 15."""
    table = table_class()
    table.append(1, 0, 0, 5, 10, max_timestamp=7)
    return table


def encode(**overrides):
    """A one-record idempotent batch (producer 7, epoch 0, sequence 0), fields overridden."""
    arguments = dict(timestamp=1, producer_id=7, producer_epoch=0, base_sequence=0)
    arguments.update(overrides)
    return batches.encode_batch(arguments.pop("values", [b"v"]), **arguments)


GOOD_BATCH = batches.encode_batch([b"v"], timestamp=1, producer_id=7, producer_epoch=0, base_sequence=0)
STRIDED = memoryview(GOOD_BATCH + GOOD_BATCH)[::2]  # the numpy "non-contiguous" case for bytes
TRUNCATED = GOOD_BATCH[:-1]
