"""Argument checks at the public boundary, shared by both twins.

A bad argument is the caller's bug, not a Kafka error: it raises ``TypeError`` (not an
integer) or ``ValueError`` (out of range), and the message names the argument. The compiled
table does the scalar checks in C with the same wording; both use :func:`batch_arrays` for
the numpy boundary.
"""

from __future__ import annotations

import functools
import operator
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ._types import INT16_MAX, INT16_MIN, INT32_MAX, INT64_MAX, INT64_MIN, MAX_WINDOW, Origin


def integer(name: str, value: Any, low: int, high: int, what: str) -> int:
    """``value`` as an int in ``[low, high]``; ``what`` describes the range in messages."""
    if isinstance(value, bool) or value is None:
        raise TypeError(f"{name} must be an integer, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if not low <= number <= high:
        raise ValueError(f"{name} must be {what}, got {number}")
    return number


def producer_id(value: Any) -> int:
    return integer("producer_id", value, 0, INT64_MAX, "in [0, 2^63-1]")


def maybe_producer_id(value: Any) -> int | None:
    """``value`` as a producer id, or ``None`` if it cannot be one (for ``in``)."""
    if isinstance(value, bool):
        return None
    try:
        number = operator.index(value)
    except TypeError:
        return None
    return number if 0 <= number <= INT64_MAX else None


def producer_epoch(value: Any) -> int:
    return integer("producer_epoch", value, INT16_MIN, INT16_MAX, "an int16")


def base_sequence(value: Any) -> int:
    return integer("base_sequence", value, -1, INT32_MAX, "in [-1, 2^31-1]")


def record_count(value: Any) -> int:
    return integer("record_count", value, 1, INT32_MAX, "in [1, 2^31-1]")


def offset(name: str, value: Any) -> int:
    return integer(name, value, 0, INT64_MAX, "in [0, 2^63-1]")


def timestamp(name: str, value: Any) -> int:
    return integer(name, value, INT64_MIN, INT64_MAX, "an int64")


def coordinator_epoch(value: Any) -> int:
    return integer("coordinator_epoch", value, -(1 << 31), INT32_MAX, "an int32")


def window(value: Any) -> int:
    return integer("window", value, 1, MAX_WINDOW, f"in [1, {MAX_WINDOW}]")


def capacity(value: Any) -> int:
    return integer("capacity", value, 0, (1 << 31) - 2, "in [0, 2^31-2]")


def max_producers(value: Any) -> int | None:
    """None (unbounded) or the most producers a table holds, in [1, 2^31-2]."""
    if value is None:
        return None
    return integer("max_producers", value, 1, (1 << 31) - 2, "None or in [1, 2^31-2]")


def origin(value: Any) -> Origin:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"origin must be an Origin, got {value!r}")
    try:
        return Origin(value)
    except ValueError:
        raise ValueError(f"origin must be an Origin (CLIENT, REPLICATION or COORDINATOR), got {value!r}") from None


def flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def path(name: str, value: Any) -> str:
    """``value`` (str, bytes or os.PathLike) as a str path: ``os.fsdecode``, which a bytes
    name survives (undecodable bytes become surrogates that os functions encode back), so
    every join and message downstream is str. ``TypeError`` naming ``name`` otherwise."""
    try:
        return os.fsdecode(value)
    except TypeError:
        raise TypeError(f"{name} must be a path (str, bytes or os.PathLike), got {type(value).__name__}") from None


def choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of the strings ``choices``: ``TypeError`` if not a str,
    ``ValueError`` if another str."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {choices}, got {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def function(name: str, value: Any, what: str) -> Any:
    """``value`` if it is callable (checked when given, not when first called)."""
    if not callable(value):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    return value


def last_offset(base_offset: int, count: int) -> int:
    """The batch's last offset; ``ValueError`` unless the log end offset after it
    (last offset + 1, Kafka's long) still fits in int64."""
    if base_offset > INT64_MAX - count:
        raise ValueError(
            f"base_offset {base_offset} + record_count {count} would put the log end offset past 2^63-1"
        )
    return base_offset + count - 1


def marker_offset(value: Any) -> int:
    """A marker's offset: the log end offset after it must fit in int64 too."""
    return integer("offset", value, 0, INT64_MAX - 1, "in [0, 2^63-2]")


def not_backwards(name: str, value: int, map_end_offset: int) -> None:
    if value < map_end_offset:
        raise ValueError(
            f"{name} {value} is below the table's map_end_offset {map_end_offset}: offsets must not go backwards"
        )


# (argument name, dtype, low, high) of append_many's arrays, in signature order.
_COLUMNS = (
    ("producer_ids", np.int64, 0, INT64_MAX),
    ("producer_epochs", np.int16, INT16_MIN, INT16_MAX),
    ("base_sequences", np.int32, -1, INT32_MAX),
    ("record_counts", np.int32, 1, INT32_MAX),
    ("max_timestamps", np.int64, INT64_MIN, INT64_MAX),
)


@functools.cache
def _integer_info(dtype: Any) -> Any:
    return np.iinfo(dtype)


def _column(name: str, dtype: Any, low: int, high: int, value: Any) -> np.ndarray:
    if value is None:
        raise TypeError(f"{name} must be a 1-D integer array, got None")
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got {array.ndim} dimensions")
    if array.dtype.kind not in "iu" and not (array.size == 0 and not isinstance(value, np.ndarray)):
        raise TypeError(f"{name} must have an integer dtype, got {array.dtype}")
    info = _integer_info(dtype)
    if array.size and (array.dtype != dtype or (low, high) != (info.min, info.max)):
        # Two reductions first (cheap for the few-row arrays of a produce request); the row
        # at fault is looked for only when there is one.
        if array.min() < low or array.max() > high:
            at = int(np.flatnonzero((array < low) | (array > high))[0])
            raise ValueError(f"{name}[{at}] is {int(array[at])}, outside [{low}, {high}]")
    # A copy only when the dtype or the layout differs; read-only input stays read-only.
    return np.ascontiguousarray(array, dtype=dtype)


def batch_arrays(
    producer_ids: Any,
    producer_epochs: Any,
    base_sequences: Any,
    record_counts: Any,
    max_timestamps: Any,
    transactional: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """The numpy boundary of ``append_many``: checked, C-contiguous arrays of the kernel's dtypes.

    Integer arrays of another width are converted when every value fits; anything else is a
    ``TypeError`` (not an integer array) or ``ValueError`` (wrong shape, length or value)
    naming the argument. ``max_timestamps=None`` means -1 (NO_TIMESTAMP) for every batch and
    ``transactional=None`` means no batch is transactional.
    """
    pids = _column(*_COLUMNS[0], producer_ids)
    epochs = _column(*_COLUMNS[1], producer_epochs)
    seqs = _column(*_COLUMNS[2], base_sequences)
    counts = _column(*_COLUMNS[3], record_counts)
    count = len(pids)
    if max_timestamps is None:
        stamps = np.full(count, -1, dtype=np.int64)
    else:
        stamps = _column(*_COLUMNS[4], max_timestamps)
    for (name, *_), array in zip(_COLUMNS[1:], (epochs, seqs, counts, stamps), strict=True):
        if len(array) != count:
            raise ValueError(f"{name} has {len(array)} rows but producer_ids has {count}")
    txn: np.ndarray | None = None
    if transactional is not None:
        txn = np.asarray(transactional)
        if txn.dtype != np.bool_:
            raise TypeError(f"transactional must be a bool array, got {txn.dtype}")
        if txn.ndim != 1 or len(txn) != count:
            raise ValueError(f"transactional must be 1-D with {count} rows, got shape {txn.shape}")
        txn = np.ascontiguousarray(txn)
    return pids, epochs, seqs, counts, stamps, txn


def total_records_fit(log_end_offset: int, record_counts: np.ndarray) -> None:
    """``ValueError`` unless every batch could be appended with the log end offset staying
    within int64 (counted before any row is applied, duplicates included)."""
    total = int(record_counts.sum(dtype=np.uint64)) if len(record_counts) else 0
    if log_end_offset > INT64_MAX - total:
        raise ValueError(
            f"log_end_offset {log_end_offset} + {total} records would put the log end offset past 2^63-1"
        )


@contextmanager
def viewing(data: Any, name: str = "data", writable: bool = False) -> Iterator[memoryview]:
    """``data`` as a memoryview of bytes, released on the way out, even on an error: an
    exception's traceback keeps the frames alive, and a view left in one would keep the
    caller's buffer exported (an mmap could not be closed)."""
    try:
        outer = memoryview(data)
    except TypeError as error:
        raise TypeError(f"{name} must be a C-contiguous buffer, got {type(data).__name__}: {error}") from None
    try:
        view = outer.cast("B")
    except TypeError as error:
        outer.release()
        raise TypeError(f"{name} must be a C-contiguous buffer, got {type(data).__name__}: {error}") from None
    try:
        if writable and view.readonly:
            raise TypeError(
                f"{name} is read-only: writing offsets in place needs a writable buffer "
                f"(bytearray, mmap, numpy), got {type(data).__name__}"
            )
        yield view
    finally:
        view.release()
        outer.release()
