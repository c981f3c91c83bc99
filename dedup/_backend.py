"""The one place that picks dedup's implementation: the compiled core or the pure-Python twin.

Each twin is an :class:`Implementation`: its table classes and the functions that work on its
tables (records, snapshot codec) and on bytes (CRC-32C). The public names bind to
:data:`DEFAULT`: the compiled core, or with ``DEDUP_PURE_PYTHON=1`` the twin
(:mod:`dedup.reference`). Without the switch a missing extension is a loud ImportError that
says how to build it, never a silent fallback. A function given a table works with that
table's own twin (:func:`implementation_of`), so a compiled table given explicitly still
goes through the compiled functions under the switch.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any, NamedTuple

from ._layout import CompiledCopyError
from .reference import crc32c as _twin_crc32c
from .reference import records as _twin_records
from .reference import snapshot as _twin_snapshot
from .reference import table as _twin_table

__all__ = [
    "DEFAULT", "PURE_PYTHON", "TWIN", "Implementation", "implementation_of", "load_compiled", "resolve_table_class",
]

#: ``DEDUP_PURE_PYTHON=1``: bind the public names to the pure-Python twin.
PURE_PYTHON: bool = os.environ.get("DEDUP_PURE_PYTHON", "") not in ("", "0")


class Implementation(NamedTuple):
    """One twin, under the same names on either side."""

    name: str  # "compiled" or "reference"
    ProducerStateTable: type
    AppendResult: type
    records: Any  # scan_batches, validate_batches, check_one_batch, crc_valid, append_batches
    snapshot: Any  # encode_full, encode_kafka, decode_full, decode_kafka
    crc32c: Any


TWIN = Implementation(
    "reference", _twin_table.ProducerStateTable, _twin_table.AppendResult, _twin_records, _twin_snapshot,
    _twin_crc32c.crc32c,
)  # fmt: skip


@functools.cache
def load_compiled() -> Implementation:
    """The compiled core as an :class:`Implementation` (ImportError if it is not built)."""
    from . import _records, _snapshot, _state

    return Implementation(
        "compiled", _state.ProducerStateTable, _state.AppendResult, _records, _snapshot, _records.crc32c
    )


if PURE_PYTHON:
    DEFAULT = TWIN
else:
    try:
        DEFAULT = load_compiled()
    except CompiledCopyError:  # built, but from other definitions: its message says what differs
        raise
    except ImportError as error:  # pragma: no cover - exercised by a subprocess test
        raise ImportError(
            f"dedup's compiled core ({error.name or 'dedup._state'}) is not built. Build it with "
            "`pip install -e .` (needs a C compiler), or set DEDUP_PURE_PYTHON=1 to use the "
            f"pure-Python twin, about 50x slower. Cause: {error}"
        ) from error


def _other() -> Implementation | None:
    """The twin that is not DEFAULT, if it can have tables. Under the switch the compiled core
    is loaded only for a compiled table, which cannot exist before dedup._state is imported."""
    if not PURE_PYTHON:
        return TWIN
    return load_compiled() if "dedup._state" in sys.modules else None


def implementation_of(table: object) -> Implementation:
    """The twin ``table`` belongs to; ``TypeError`` naming ``table`` if it is neither twin's
    ProducerStateTable (nor a subclass)."""
    if isinstance(table, DEFAULT.ProducerStateTable):
        return DEFAULT
    other = _other()
    if other is not None and isinstance(table, other.ProducerStateTable):
        return other
    raise TypeError(f"table must be a ProducerStateTable (dedup._state or dedup.reference), got {type(table).__name__}")


def resolve_table_class(table_class: object) -> tuple[type, Implementation]:
    """The class to build tables with and its twin: :data:`DEFAULT`'s table for ``None``, else
    ``table_class`` itself if it is either twin's ProducerStateTable or a subclass;
    ``TypeError`` naming ``table_class`` otherwise."""
    if table_class is None:
        return DEFAULT.ProducerStateTable, DEFAULT
    if isinstance(table_class, type):
        for implementation in (DEFAULT, _other()):
            if implementation is not None and issubclass(table_class, implementation.ProducerStateTable):
                return table_class, implementation
    raise TypeError(
        f"table_class must be a ProducerStateTable class (dedup._state or dedup.reference), got {table_class!r}"
    )
