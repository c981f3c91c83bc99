"""The two C loops of ``python -m dedup bench`` (package data beside this module), compiled at
run time and loaded with ctypes, each with the compiled table's ``append_many``:

- the bare limit (``bare_loop.c``, :class:`BareTable`, :func:`build_bare_loop`): the least any
  producer-state table must do per batch, with dedup's prefetch and huge pages, built with the
  extension's compiler flags plus ``-march=native`` (:func:`bare_compile_flags`);
- the C implementation of the same rules (``reference_loop.c``, :class:`ReferenceTable`,
  :func:`build_reference_loop`): five result columns, no prefetch, malloc, built with ``-O3``
  as the extension is.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shlex
import subprocess
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .._types import AppendManyResult

#: The C loop's source, package data beside this module.
REFERENCE_SOURCE = Path(__file__).resolve().parent / "reference_loop.c"
#: The bare limit's source, package data beside this module.
BARE_SOURCE = Path(__file__).resolve().parent / "bare_loop.c"
#: The hash seed of the C loop's table (dedup's is random per table; any value does).
REFERENCE_SEED = 0x9E3779B97F4A7C15



def _input_columns(who: str, *columns: np.ndarray) -> tuple[np.ndarray, ...]:
    """append_many's five input columns, checked for a C loop: equal lengths, C-contiguous,
    the table's dtypes (int64 producer ids, int16 epochs, int32 sequences and counts, int64
    timestamps); ``TypeError`` naming ``who`` otherwise."""
    rows = len(columns[0])
    for column, dtype in zip(columns, (np.int64, np.int16, np.int32, np.int32, np.int64), strict=True):
        if column.dtype != dtype or len(column) != rows or not column.flags.c_contiguous:
            raise TypeError(f"{who}: every column needs {rows} contiguous {np.dtype(dtype)} values")
    return columns

class ReferenceLoopUnavailable(RuntimeError):
    """A C loop (the reference loop or the bare limit) could not be found or built; the
    message says why."""


def reference_loop_source() -> Path:
    """``reference_loop.c``, shipped beside this module."""
    return _shipped(REFERENCE_SOURCE)


def _shipped(source: Path) -> Path:
    if not source.is_file():
        raise ReferenceLoopUnavailable(f"{source} not found: the package was installed without its data files")
    return source


def compiler_command() -> list[str]:
    """The C compiler Python's build uses (``sysconfig``'s CC), as an argument list."""
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(compiler)


def bare_compile_flags() -> list[str]:
    """The flags the bare limit is built with: the extension's (sysconfig's CFLAGS and CCSHARED,
    then the ``-O3`` setup.py adds) and ``-march=native``."""
    extension = [shlex.split(sysconfig.get_config_var(name) or "") for name in ("CFLAGS", "CCSHARED")]
    return [*extension[0], *extension[1], "-O3", "-march=native"]


def _compile(source: str, flags: Sequence[str]) -> ctypes.CDLL:
    """``source`` compiled with ``flags`` into a temporary shared library, loaded."""
    name = Path(source).stem
    with tempfile.TemporaryDirectory(prefix=f"dedup-{name}-") as directory:
        library = os.path.join(directory, f"{name}.so")
        command = [*compiler_command(), *flags, "-fPIC", "-shared", "-o", library, source]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as error:
            raise ReferenceLoopUnavailable(f"cannot run the C compiler {shlex.join(command)}: {error}") from error
        if done.returncode != 0:
            raise ReferenceLoopUnavailable(
                f"the C compiler failed ({shlex.join(command)}, exit {done.returncode}):\n{done.stderr.strip()}"
            )
        return ctypes.CDLL(library)  # mapped: the file can go with the directory


@functools.cache
def _build_bare(source: str, mtime_ns: int) -> ctypes.CDLL:
    return _declare(_compile(source, bare_compile_flags()), "bare", [ctypes.c_int, ctypes.c_uint64], outputs=3)


def build_bare_loop(source: str | os.PathLike[str] | None = None) -> ctypes.CDLL:
    """Compile the bare limit into a temporary shared library and load it; built once per
    process (per source file and modification time). ``ReferenceLoopUnavailable`` says why
    when there is no source or no working compiler."""
    path = Path(source) if source is not None else _shipped(BARE_SOURCE)
    return _build_bare(str(path.resolve()), path.stat().st_mtime_ns)


@functools.cache
def _build(source: str, mtime_ns: int) -> ctypes.CDLL:
    lib = _compile(source, ["-O3"])  # -O3 as setup.py builds the extension; no -march, like the extension
    return _declare(lib, "ref", [ctypes.c_int, ctypes.c_uint64, ctypes.c_int], outputs=5)


def _declare(lib: ctypes.CDLL, prefix: str, new_options: list[Any], *, outputs: int) -> ctypes.CDLL:
    """The C signatures both loops share, under ``prefix``: ``<prefix>_new(producers,
    *new_options)``, ``_free``, ``_memory_bytes``, ``_len``, and ``_append_many(table, rows,
    five input columns, log_end_offset, outputs result columns)``."""
    pointer, i64, u64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64
    signatures = {
        "new": ([i64, *new_options], pointer),
        "free": ([pointer], None),
        "memory_bytes": ([pointer], u64),
        "len": ([pointer], u64),
        "append_many": ([pointer, i64, *[pointer] * 5, i64, *[pointer] * outputs], i64),
    }
    for name, (argtypes, restype) in signatures.items():
        function = getattr(lib, f"{prefix}_{name}")
        function.argtypes, function.restype = argtypes, restype
    return lib


def build_reference_loop(source: str | os.PathLike[str] | None = None) -> ctypes.CDLL:
    """Compile the C reference loop into a temporary shared library and load it; built once
    per process (per source file and modification time). ``ReferenceLoopUnavailable`` says
    why when there is no source or no working compiler."""
    path = Path(source) if source is not None else reference_loop_source()
    return _build(str(path.resolve()), path.stat().st_mtime_ns)


class _LoopTable:
    """What both C loops' tables share: the C handle (``<prefix>_new`` made it, ``<prefix>_free``
    frees it), its length and memory, and one ``<prefix>_append_many`` call over the compiled
    table's columns into result columns of ``_OUTPUTS``' types, reused by the next call of the
    same size or smaller."""

    _PREFIX: str
    _WHO: str
    _OUTPUTS: tuple[type, ...]

    def __init__(self, lib: ctypes.CDLL, table: int | None, producers: int, window: int) -> None:
        self._lib = lib
        self._table = table
        if not table:
            raise MemoryError(f"{self._WHO}: no memory for {producers:,} producers, window {window}")
        self.window = window
        self.map_end_offset = 0
        self._outputs: tuple[np.ndarray, ...] = ()

    def __del__(self) -> None:
        table, self._table = getattr(self, "_table", None), None
        if table:
            getattr(self._lib, f"{self._PREFIX}_free")(table)

    def __len__(self) -> int:
        return int(getattr(self._lib, f"{self._PREFIX}_len")(self._table))

    def memory_bytes(self) -> int:
        return int(getattr(self._lib, f"{self._PREFIX}_memory_bytes")(self._table))

    def _append_many(self, columns: Sequence[np.ndarray], log_end_offset: int) -> tuple[np.ndarray, ...]:
        """The result columns of one call over ``columns``; sets ``map_end_offset``."""
        columns = _input_columns(self._WHO, *columns)
        rows = len(columns[0])
        if not self._outputs or len(self._outputs[0]) < rows:
            self._outputs = tuple(np.empty(rows, dtype) for dtype in self._OUTPUTS)
        end = getattr(self._lib, f"{self._PREFIX}_append_many")(
            self._table, rows, *[column.ctypes.data for column in columns], log_end_offset,
            *[output.ctypes.data for output in self._outputs],
        )  # fmt: skip
        if end < 0:
            raise MemoryError(f"{self._WHO}: row {-1 - end} is a producer beyond the table's size")
        self.map_end_offset = end
        return tuple(output[:rows] for output in self._outputs)


class ReferenceTable(_LoopTable):
    """The C loop's table, with ``append_many`` taking the compiled table's columns.

    Sized for ``producers`` (load factor 0.6), a producer beyond them is a ``MemoryError``.
    ``dense``: entries in insertion order (dedup's layout), else the entry of key slot s is
    entry s. The result columns are reused by the next call of the same size or smaller:
    copy them to keep them.
    """

    _PREFIX, _WHO = "ref", "C reference loop"
    _OUTPUTS = (np.int16, np.bool_, np.int64, np.int64, np.int64)

    def __init__(self, producers: int, window: int = 5, *, dense: bool = True, lib: ctypes.CDLL | None = None):
        lib = lib if lib is not None else build_reference_loop()
        super().__init__(lib, lib.ref_new(producers, window, REFERENCE_SEED, int(dense)), producers, window)

    def append_many(
        self,
        producer_ids: np.ndarray,
        producer_epochs: np.ndarray,
        base_sequences: np.ndarray,
        record_counts: np.ndarray,
        max_timestamps: np.ndarray,
        *,
        log_end_offset: int,
    ) -> AppendManyResult:
        columns = (producer_ids, producer_epochs, base_sequences, record_counts, max_timestamps)
        codes, duplicate, firsts, lasts, times = self._append_many(columns, log_end_offset)
        return AppendManyResult(codes, duplicate, firsts, lasts, times, self.map_end_offset)


class BareVerdicts(NamedTuple):
    """What the bare limit writes per batch: Kafka's error code, the duplicate flag, the base
    offset (the original's for a duplicate, -1 for an error); and the log end offset after."""

    error_codes: np.ndarray  # int16
    duplicate: np.ndarray  # bool
    base_offsets: np.ndarray  # int64
    log_end_offset: int


class BareTable(_LoopTable):
    """The bare limit's table (``bare_loop.c``), with ``append_many`` taking the compiled
    table's columns and answering :class:`BareVerdicts`.

    Presized for ``producers`` (load factor 0.6), a producer beyond them is a ``MemoryError``.
    The result columns are reused by the next call of the same size or smaller: copy them to
    keep them.
    """

    _PREFIX, _WHO = "bare", "bare limit"
    _OUTPUTS = (np.int16, np.bool_, np.int64)

    def __init__(self, producers: int, window: int = 5, *, lib: ctypes.CDLL | None = None):
        lib = lib if lib is not None else build_bare_loop()
        super().__init__(lib, lib.bare_new(producers, window, REFERENCE_SEED), producers, window)

    def append_many(
        self,
        producer_ids: np.ndarray,
        producer_epochs: np.ndarray,
        base_sequences: np.ndarray,
        record_counts: np.ndarray,
        max_timestamps: np.ndarray,
        *,
        log_end_offset: int,
    ) -> BareVerdicts:
        columns = (producer_ids, producer_epochs, base_sequences, record_counts, max_timestamps)
        codes, duplicate, base_offsets = self._append_many(columns, log_end_offset)
        return BareVerdicts(codes, duplicate, base_offsets, self.map_end_offset)
