"""``python -m dedup bench``: the headline figures of this machine, against the peers and the limit.

The limit is ``reference_loop.c`` (beside this module, shipped with the package): the least a
producer-state table must do per batch (one hash lookup by producer id, one window update), in
plain C, built here with the compiler and ``-O3`` of the extension build and loaded with
:mod:`ctypes`. Every kernel is reported as a fraction of it, measured in the same run. The
benchmark suite (``python -m pytest benchmarks/``) uses the same pieces:
:class:`ReferenceTable`, :class:`Stream`, :func:`build_reference_loop`.

Usage: ``python -m dedup bench [--full] [--plot FILE.png]``. The quick run (under a minute on a
2-core machine) prints one table; ``--full`` adds the scaling sweep (100 to 10,000,000
producers, random and in-order, windows 5 and 64, every engine); ``--plot`` draws throughput
against producer count for each engine (needs matplotlib: ``pip install 'dedup[bench]'``).

The C source ships inside the package (``dedup/tools/reference_loop.c``), so an installed wheel
has it too; a machine without a C compiler prints "limit: not available" instead of the ratios.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import os
import platform
import shlex
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._types import AppendManyResult

#: Calls of ``append_many`` take this many rows (as in ``benchmarks/conftest.py``).
CALL_ROWS = 100_000
#: Kafka's producer ids are handed out sequentially by the coordinator; start somewhere not 0.
FIRST_PRODUCER_ID = 1_000
TIMESTAMP = 1_767_225_600_000
ORDERS = ("random", "in-order")
#: The C loop in its two layouts (see reference_loop.c); the limit of a case is the faster.
C_LOOPS = ("C loop, dense", "C loop, by slot")
ENGINES = ("compiled", "twin", *C_LOOPS)
#: The C loop's source, package data beside this module.
REFERENCE_SOURCE = Path(__file__).resolve().parent / "reference_loop.c"
#: The hash seed of the C loop's table (dedup's is random per table; any value does).
REFERENCE_SEED = 0x9E3779B97F4A7C15


# --- the C reference loop -------------------------------------------------------------------


class ReferenceLoopUnavailable(RuntimeError):
    """The C reference loop could not be found or built; the message says why."""


def reference_loop_source() -> Path:
    """``reference_loop.c``, shipped beside this module."""
    source = REFERENCE_SOURCE
    if not source.is_file():
        raise ReferenceLoopUnavailable(f"{source} not found: the package was installed without its data files")
    return source


def compiler_command() -> list[str]:
    """The C compiler Python's build uses (``sysconfig``'s CC), as an argument list."""
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(compiler)


@functools.cache
def _build(source: str, mtime_ns: int) -> ctypes.CDLL:
    compiler = compiler_command()
    with tempfile.TemporaryDirectory(prefix="dedup-reference-loop-") as directory:
        library = os.path.join(directory, "reference_loop.so")
        # -O3 as setup.py builds the extension; no -march, like the extension.
        command = [*compiler, "-O3", "-fPIC", "-shared", "-o", library, source]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as error:
            raise ReferenceLoopUnavailable(f"cannot run the C compiler {shlex.join(command)}: {error}") from error
        if done.returncode != 0:
            raise ReferenceLoopUnavailable(
                f"the C compiler failed ({shlex.join(command)}, exit {done.returncode}):\n{done.stderr.strip()}"
            )
        lib = ctypes.CDLL(library)  # mapped: the file can go with the directory
    pointer, i64, u64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64
    lib.ref_new.argtypes = [i64, ctypes.c_int, u64, ctypes.c_int]
    lib.ref_new.restype = pointer
    lib.ref_free.argtypes = [pointer]
    lib.ref_free.restype = None
    lib.ref_memory_bytes.argtypes = [pointer]
    lib.ref_memory_bytes.restype = u64
    lib.ref_len.argtypes = [pointer]
    lib.ref_len.restype = u64
    lib.ref_append_many.argtypes = [pointer, i64, *[pointer] * 5, i64, *[pointer] * 5]
    lib.ref_append_many.restype = i64
    return lib


def build_reference_loop(source: str | os.PathLike[str] | None = None) -> ctypes.CDLL:
    """Compile the C reference loop into a temporary shared library and load it; built once
    per process (per source file and modification time). ``ReferenceLoopUnavailable`` says
    why when there is no source or no working compiler."""
    path = Path(source) if source is not None else reference_loop_source()
    return _build(str(path.resolve()), path.stat().st_mtime_ns)


class ReferenceTable:
    """The C loop's table, with ``append_many`` taking the compiled table's columns.

    Sized for ``producers`` (load factor 0.6), a producer beyond them is a ``MemoryError``.
    ``dense``: entries in insertion order (dedup's layout), else the entry of key slot s is
    entry s. The result columns are reused by the next call of the same size or smaller:
    copy them to keep them.
    """

    def __init__(self, producers: int, window: int = 5, *, dense: bool = True, lib: ctypes.CDLL | None = None):
        self._lib = lib if lib is not None else build_reference_loop()
        self._table = self._lib.ref_new(producers, window, REFERENCE_SEED, int(dense))
        if not self._table:
            raise MemoryError(f"C reference loop: no memory for {producers:,} producers, window {window}")
        self.window = window
        self.map_end_offset = 0
        self._outputs: tuple[np.ndarray, ...] = ()

    def __del__(self) -> None:
        table, self._table = getattr(self, "_table", None), None
        if table:
            self._lib.ref_free(table)

    def __len__(self) -> int:
        return int(self._lib.ref_len(self._table))

    def memory_bytes(self) -> int:
        return int(self._lib.ref_memory_bytes(self._table))

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
        rows = len(producer_ids)
        columns = (producer_ids, producer_epochs, base_sequences, record_counts, max_timestamps)
        for column, dtype in zip(columns, (np.int64, np.int16, np.int32, np.int32, np.int64), strict=True):
            if column.dtype != dtype or len(column) != rows or not column.flags.c_contiguous:
                raise TypeError(f"C reference loop: every column needs {rows} contiguous {np.dtype(dtype)} values")
        if not self._outputs or len(self._outputs[0]) < rows:
            self._outputs = (
                np.empty(rows, np.int16),
                np.empty(rows, np.bool_),
                np.empty(rows, np.int64),
                np.empty(rows, np.int64),
                np.empty(rows, np.int64),
            )
        outputs = self._outputs
        end = self._lib.ref_append_many(
            self._table, rows, *[column.ctypes.data for column in columns], log_end_offset,
            *[output.ctypes.data for output in outputs],
        )  # fmt: skip
        if end < 0:
            raise MemoryError(f"C reference loop: row {-1 - end} is a producer beyond the table's size")
        self.map_end_offset = end
        codes, duplicate, firsts, lasts, times = (output[:rows] for output in outputs)
        return AppendManyResult(codes, duplicate, firsts, lasts, times, end)


# --- workloads ------------------------------------------------------------------------------


class Stream:
    """Batches of ``producers`` producers cut into ``calls`` calls of ``rows`` rows, each
    producer's own batches in sequence (record_count 1), after :meth:`fill` gave every
    producer its entry (sequence 0).

    ``order="random"``: producers interleaved at random, the table filled in a random order;
    ``order="in-order"``: producers round-robin in id order, the table filled in id order.
    """

    def __init__(
        self, producers: int, calls: int, rows: int = CALL_ROWS, order: str = "random", seed: int = 20_260_101
    ):
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
        rng = np.random.default_rng(seed)
        ids = np.arange(FIRST_PRODUCER_ID, FIRST_PRODUCER_ID + producers, dtype=np.int64)
        self.producers, self.calls, self.rows, self.order = producers, calls, rows, order
        if order == "random":
            self.prefill_ids = rng.permutation(ids)
            flat = ids[rng.integers(0, producers, size=calls * rows)]
            sequences = in_sequence_ranks(flat, start=1)
        else:
            self.prefill_ids = ids
            position = np.arange(calls * rows, dtype=np.int64)
            flat = ids[position % producers]
            sequences = (position // producers + 1).astype(np.int32)
        self.producer_ids = flat.reshape(calls, rows)
        self.base_sequences = sequences.reshape(calls, rows)
        self.producer_epochs = np.zeros(rows, dtype=np.int16)
        self.record_counts = np.ones(rows, dtype=np.int32)
        self.max_timestamps = np.full(rows, TIMESTAMP, dtype=np.int64)

    def fill(self, table: Any) -> None:
        """Every producer's first batch (sequence 0): the untimed start of a steady state."""
        zeros = np.zeros(self.rows, dtype=np.int32)
        for start in range(0, self.producers, self.rows):
            ids = self.prefill_ids[start : start + self.rows]
            n = len(ids)
            result = table.append_many(
                ids, self.producer_epochs[:n], zeros[:n], self.record_counts[:n], self.max_timestamps[:n],
                log_end_offset=table.map_end_offset,
            )  # fmt: skip
            if not (result.error_codes == 0).all():
                raise AssertionError("the fill was refused")

    def arguments(self, call: int, log_end_offset: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` of call number ``call``."""
        args = (
            self.producer_ids[call],
            self.producer_epochs,
            self.base_sequences[call],
            self.record_counts,
            self.max_timestamps,
        )
        return args, {"log_end_offset": log_end_offset}


def in_sequence_ranks(producer_ids: np.ndarray, start: int = 0) -> np.ndarray:
    """For each row, how many earlier rows carry the same producer id, plus ``start``."""
    order = np.argsort(producer_ids, kind="stable")
    grouped = producer_ids[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    ranks = np.arange(len(grouped)) - np.repeat(starts, np.diff(np.r_[starts, len(grouped)]))
    sequences = np.empty(len(producer_ids), dtype=np.int32)
    sequences[order] = ranks + start
    return sequences


def table_for(engine: str, producers: int, window: int) -> Any:
    """An empty table of ``engine`` (one of :data:`ENGINES`)."""
    if engine == "compiled":
        from .._state import ProducerStateTable

        return ProducerStateTable(window)
    if engine == "twin":
        from ..reference import ProducerStateTable as Twin

        return Twin(window)
    if engine in C_LOOPS:
        return ReferenceTable(producers, window, dense=engine == "C loop, dense")
    raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")


def run_stream(table: Any, stream: Stream, rounds: int, warmup_rounds: int = 1) -> list[float]:
    """Seconds of each timed call of ``table.append_many`` over the stream's next calls;
    every batch must be accepted."""
    seconds = []
    for call in range(warmup_rounds + rounds):
        args, kwargs = stream.arguments(call, table.map_end_offset)
        before = time.perf_counter()
        result = table.append_many(*args, **kwargs)
        elapsed = time.perf_counter() - before
        if result.log_end_offset != kwargs["log_end_offset"] + stream.rows:
            raise AssertionError(f"{type(table).__name__}: a batch of the stream was refused or a duplicate")
        if call >= warmup_rounds:
            seconds.append(elapsed)
    return seconds


# --- the measurements -----------------------------------------------------------------------


@dataclass
class Scale:
    """Sizes of one run: the quick run's, the full run's, or a smoke test's."""

    rows: int = CALL_ROWS
    rounds: int = 20
    twin_rows: int = 10_000
    twin_rounds: int = 3
    small: int = 10_000  # the "10,000 producers" headline
    large: int = 1_000_000  # the "1,000,000 producers" headline
    sizes: tuple[int, ...] = (100, 10_000, 1_000_000)
    twin_sizes: tuple[int, ...] = (100, 10_000)
    orders: tuple[str, ...] = ("random",)
    windows: tuple[int, ...] = (5,)
    append_block: int = 1_000
    append_rounds: int = 200
    buffer_bytes: int = 16 << 20
    table_rounds: int = 5


QUICK = Scale()
FULL = Scale(
    sizes=(100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000),
    twin_sizes=(100, 1_000, 10_000, 100_000),
    orders=ORDERS,
    windows=(5, 64),
)
SMOKE = Scale(
    rows=2_000, rounds=2, twin_rows=500, twin_rounds=1, small=1_000, large=20_000, sizes=(100, 1_000),
    twin_sizes=(100,), append_block=100, append_rounds=3, buffer_bytes=64 << 10, table_rounds=1,
)  # fmt: skip


@dataclass
class Row:
    """One line of the table: dedup's figure, a peer's (or the limit's), their ratio
    (greater than 1: dedup ahead), the issue's target and whether it is met."""

    what: str
    value: float
    unit: str
    peer: str = ""
    peer_value: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None


@dataclass
class Point:
    """Throughput of one engine on one stream (a point of the sweep and of the plot)."""

    engine: str
    producers: int
    order: str
    window: int
    batches_per_s: float


def batches_per_second(engine: str, producers: int, order: str, window: int, scale: Scale) -> float:
    """Median batches/s of ``append_many`` on ``engine`` over a stream of ``producers``."""
    rows, rounds = (scale.twin_rows, scale.twin_rounds) if engine == "twin" else (scale.rows, scale.rounds)
    stream = Stream(producers, calls=rounds + 1, rows=rows, order=order)
    table = table_for(engine, producers, window)
    stream.fill(table)
    return rows / statistics.median(run_stream(table, stream, rounds))


def memory_available() -> int:
    """MemAvailable of /proc/meminfo in bytes (0 if unknown)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def fits_in_memory(engine: str, producers: int, window: int) -> bool:
    """Whether a table of ``engine`` with ``producers`` fits in a third of the free memory."""
    per_producer = {
        "compiled": 40 + 24 * window,
        "C loop, dense": 27 + 8 + 24 * window,
        "C loop, by slot": (24 + 24 * window) * 5 / 3,
        "twin": 1_800,
    }[engine]
    available = memory_available()
    return available == 0 or per_producer * producers < available / 3


def sweep_cases(scale: Scale) -> list[tuple[str, int, str, int]]:
    cases = []
    for window in scale.windows:
        for order in scale.orders:
            for producers in scale.sizes:
                for engine in ENGINES:
                    if engine == "twin" and producers not in scale.twin_sizes:
                        continue
                    if window != 5 and producers > 1_000_000:
                        continue
                    cases.append((engine, producers, order, window))
    return cases


def append_one_call(table_class: type, scale: Scale) -> float:
    """Median ns of one ``append`` (1 producer, window 5, full window), the caller's loop included."""
    rows = [(FIRST_PRODUCER_ID, sequence, sequence) for sequence in range(5 + scale.append_block)]
    prime, timed = rows[:5], rows[5:]
    seconds = []
    for _ in range(scale.append_rounds):
        table = table_class(5)
        append = table.append
        for producer_id, sequence, offset in prime:
            append(producer_id, 0, sequence, 1, offset)
        before = time.perf_counter()
        for producer_id, sequence, offset in timed:
            append(producer_id, 0, sequence, 1, offset)
        seconds.append(time.perf_counter() - before)
    return statistics.median(seconds) / len(timed) * 1e9


def kafka_batches(scale: Scale, producers: int = 10_000) -> tuple[bytes, int, np.ndarray]:
    """``scale.buffer_bytes`` of 1 KiB v2 batches (8 records each) from ``producers``
    producers interleaved at random, each in sequence from 8 on; and the producers' ids."""
    from ..batch import encode_batch

    def batch(producer_id: int, base_sequence: int, extra: int) -> bytes:
        values = [b"v" * (101 + (extra if i == 0 else 0)) for i in range(8)]
        return encode_batch(
            values, keys=[b"key-%06d" % i for i in range(8)], timestamp=TIMESTAMP,
            producer_id=producer_id, producer_epoch=0, base_sequence=base_sequence,
        )  # fmt: skip

    extra = next(e for e in range(64) if len(batch(1, 0, e)) == 1024)
    count = scale.buffer_bytes // 1024
    rng = np.random.default_rng(20_260_101)
    ids = np.arange(FIRST_PRODUCER_ID, FIRST_PRODUCER_ID + producers, dtype=np.int64)
    stream = ids[rng.integers(0, producers, size=count)]
    sequences = in_sequence_ranks(stream, start=1) * 8
    data = b"".join(batch(int(pid), int(seq), extra) for pid, seq in zip(stream, sequences, strict=True))
    return data, count, ids


def filled_table(producers: int, window: int, batches_each: int, capacity: int = 0, stamps: Any = None) -> Any:
    """A compiled table of ``producers`` producers with ``batches_each`` batches each."""
    from .._state import ProducerStateTable

    table = ProducerStateTable(window, capacity=capacity)
    ids = np.arange(FIRST_PRODUCER_ID, FIRST_PRODUCER_ID + producers, dtype=np.int64)
    stamps = np.full(producers, TIMESTAMP, dtype=np.int64) if stamps is None else stamps
    rows = min(producers, CALL_ROWS)
    epochs, counts = np.zeros(rows, np.int16), np.ones(rows, np.int32)
    for sequence in range(batches_each):
        sequences = np.full(rows, sequence, np.int32)
        for start in range(0, producers, rows):
            stop = min(start + rows, producers)
            n = stop - start
            table.append_many(
                ids[start:stop], epochs[:n], sequences[:n], counts[:n], stamps[start:stop],
                log_end_offset=table.map_end_offset,
            )  # fmt: skip
    return table


def median_seconds(call: Callable[[], Any], rounds: int, setup: Callable[[], Any] | None = None) -> float:
    """Median seconds of ``call()`` over ``rounds`` rounds after one warm-up, ``setup()``
    (untimed) before each."""
    seconds = []
    for round_number in range(rounds + 1):
        if setup is not None:
            setup()
        before = time.perf_counter()
        call()
        elapsed = time.perf_counter() - before
        if round_number:
            seconds.append(elapsed)
    return statistics.median(seconds)


def fmt_count(n: int) -> str:
    return f"{n:,}"


def fmt_rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}K"
    return f"{value:.0f}"


# --- the run --------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr: ``[#####.....] 5/10 what``."""

    def __init__(self, total: int, stream: Any = None, width: int = 30):
        self.total, self.done, self.width = max(total, 1), 0, width
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.perf_counter()

    def show(self, label: str) -> None:
        filled = self.width * self.done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.perf_counter() - self.started
        line = f"[{bar}] {self.done}/{self.total} {elapsed:5.1f}s {label}"
        self.stream.write("\r" + line[:100].ljust(100))
        self.stream.flush()

    def step(self, label: str) -> None:
        self.show(label)
        self.done += 1

    def close(self) -> None:
        self.show("done")
        self.stream.write("\n")
        self.stream.flush()


class Bench:
    """The measurements of one run, in the order they run; :meth:`run` returns the rows."""

    def __init__(self, scale: Scale, progress: Progress | None = None):
        self.scale = scale
        self.progress = progress
        self.points: list[Point] = []
        self.limit_error: str | None = None
        try:
            build_reference_loop()
        except ReferenceLoopUnavailable as error:
            self.limit_error = str(error)

    def engines(self) -> tuple[str, ...]:
        return ENGINES if self.limit_error is None else ("compiled", "twin")

    def limit(self, producers: int, order: str = "random", window: int = 5) -> Point | None:
        """The faster C loop layout of this stream, as the point of engine "C loop"."""
        points = [p for engine in C_LOOPS if (p := self.point(engine, producers, order, window)) is not None]
        if not points:
            return None
        best = max(points, key=lambda p: p.batches_per_s)
        return Point("C loop", producers, order, window, best.batches_per_s)

    def tasks(self) -> list[tuple[str, Callable[[], list[Row]]]]:
        s = self.scale
        tasks: list[tuple[str, Callable[[], list[Row]]]] = [("append, one call", self.append_rows)]
        for engine, producers, order, window in sweep_cases(s):
            if engine in self.engines():
                label = f"append_many, {engine}, {fmt_count(producers)} producers, {order}, window {window}"
                tasks.append((label, functools.partial(self.sweep_point, engine, producers, order, window)))
        for producers in (s.small, s.large):
            for engine in self.engines():
                if engine != "twin" and (producers not in s.sizes):
                    label = f"append_many, {engine}, {fmt_count(producers)} producers"
                    tasks.append((label, functools.partial(self.sweep_point, engine, producers, "random", 5)))
        tasks += [
            ("append_many rows", self.append_many_rows),
            ("append from bytes, header scans", self.bytes_rows),
            ("remove_expired", self.remove_expired_rows),
            ("snapshot encode/decode, memory", self.snapshot_rows),
        ]
        return tasks

    def run(self) -> list[Row]:
        rows: list[Row] = []
        tasks = self.tasks()
        if self.progress is not None:
            self.progress.total = len(tasks)
        for label, task in tasks:
            if self.progress is not None:
                self.progress.step(label)
            rows += task()
        if self.progress is not None:
            self.progress.close()
        return rows

    def sweep_point(self, engine: str, producers: int, order: str, window: int) -> list[Row]:
        if not fits_in_memory(engine, producers, window):
            return []
        rate = batches_per_second(engine, producers, order, window, self.scale)
        self.points.append(Point(engine, producers, order, window, rate))
        return []

    def point(self, engine: str, producers: int, order: str = "random", window: int = 5) -> Point | None:
        return next(
            (
                p
                for p in self.points
                if (p.engine, p.producers, p.order, p.window) == (engine, producers, order, window)
            ),
            None,
        )

    def append_rows(self) -> list[Row]:
        from .._state import ProducerStateTable
        from ..reference import ProducerStateTable as Twin

        compiled = append_one_call(ProducerStateTable, self.scale)
        twin_scale = Scale(append_block=self.scale.append_block, append_rounds=max(1, self.scale.append_rounds // 10))
        twin = append_one_call(Twin, twin_scale)
        return [
            Row("append, one call (1 producer, window 5)", compiled, "ns", "twin", twin, twin / compiled,
                "<= 150 ns", compiled <= 150),
        ]  # fmt: skip

    def append_many_rows(self) -> list[Row]:
        rows = []
        s = self.scale
        for producers, target in ((s.small, ">= 0.6 of the loop, >= 40M/s"), (s.large, ">= 0.6 of the loop")):
            compiled = self.point("compiled", producers)
            if compiled is None:
                continue
            rate = compiled.batches_per_s
            row = Row(f"append_many, {fmt_count(producers)} producers, random", rate, "batches/s", target=target)
            limit = self.limit(producers)
            if limit is not None:
                row.peer, row.peer_value, row.ratio = "C loop", limit.batches_per_s, rate / limit.batches_per_s
                row.met = row.ratio >= 0.6 and (producers != s.small or rate >= 40e6)
            else:
                row.peer = "limit: not available"  # the reason is printed above the table
            rows.append(row)
            twin = self.point("twin", producers)
            if twin is not None:
                rows.append(
                    Row(f"append_many, {fmt_count(producers)} producers, random", rate, "batches/s", "twin",
                        twin.batches_per_s, rate / twin.batches_per_s)
                )  # fmt: skip
        return rows

    def bytes_rows(self) -> list[Row]:
        from .. import _records
        from .._state import ProducerStateTable

        data, batches, ids = kafka_batches(self.scale)
        buffer = bytearray(data)
        holder: dict[str, Any] = {}

        def setup() -> None:
            buffer[:] = data
            table = holder["table"] = ProducerStateTable(5)
            n = len(ids)
            table.append_many(
                ids, np.zeros(n, np.int16), np.zeros(n, np.int32), np.full(n, 8, np.int32),
                np.full(n, TIMESTAMP, np.int64), log_end_offset=0,
            )  # fmt: skip

        def append() -> None:
            result = _records.append_batches(
                holder["table"], buffer, log_end_offset=holder["table"].map_end_offset, write_offsets=True
            )
            holder["result"] = result

        seconds = median_seconds(append, self.scale.table_rounds * 2, setup)
        if not (holder["result"].error_codes == 0).all():
            raise AssertionError("append_batches refused a batch of the benchmark")
        rows = [
            Row("append from bytes (1 KiB batches, CRC checked)", len(data) / seconds / 1e9, "GB/s",
                target=">= 4 GB/s", met=len(data) / seconds / 1e9 >= 4)
        ]  # fmt: skip
        scan = batches / median_seconds(lambda: _records.scan_batches(data), self.scale.table_rounds * 4)
        for name, reader in peer_readers().items():
            if reader is None:
                rows.append(Row("header scan, 1 KiB batches", scan, "batches/s", f"{name}: not installed"))
                continue
            if reader(data) != batches:
                raise AssertionError(f"{name} read a different number of batches")
            peer = batches / median_seconds(functools.partial(reader, data), max(1, self.scale.table_rounds // 2))
            rows.append(Row("header scan, 1 KiB batches", scan, "batches/s", name, peer, scan / peer))
        return rows

    def remove_expired_rows(self) -> list[Row]:
        producers = self.scale.large
        stamps = np.where(np.arange(producers) % 10 == 0, TIMESTAMP - 60_000, TIMESTAMP).astype(np.int64)
        holder: dict[str, Any] = {}

        def fresh() -> None:
            holder.pop("table", None)
            holder["table"] = filled_table(producers, 5, 1, stamps=stamps)

        def keep() -> None:
            if "table" not in holder:
                fresh()

        none = median_seconds(lambda: holder["table"].remove_expired(TIMESTAMP, 120_000), self.scale.table_rounds, keep)
        tenth = median_seconds(lambda: holder["table"].remove_expired(TIMESTAMP, 60_000), 3, fresh)
        if len(holder["table"]) != producers - (producers + 9) // 10:
            raise AssertionError("remove_expired removed the wrong producers")
        # Kafka's own benchmark (ProducerStateManagerBench, PR #16075: 5.7 ms) expires all of them.
        every = median_seconds(lambda: holder["table"].remove_expired(TIMESTAMP + 60_000, 60_000), 3, fresh)
        if len(holder["table"]) != 0:
            raise AssertionError("remove_expired left producers that had expired")
        holder.clear()
        what = f"remove_expired, {fmt_count(producers)} producers"
        return [
            Row(f"{what}, none expired", none * 1e3, "ms", target="<= 3 ms", met=none <= 3e-3),
            Row(f"{what}, 10% expired", tenth * 1e3, "ms", target="<= 3 ms", met=tenth <= 3e-3),
            Row(f"{what}, all expired (Kafka's benchmark)", every * 1e3, "ms", target="<= 3 ms", met=every <= 3e-3),
        ]

    def snapshot_rows(self) -> list[Row]:
        from ..snapshot import decode_snapshot, encode_snapshot

        producers = self.scale.large
        table = filled_table(producers, 5, 5, capacity=producers)
        rounds = self.scale.table_rounds
        what = f"{fmt_count(producers)} producers"
        memory = table.memory_bytes() / producers
        rows = []
        for kind, name in (("kafka", "Kafka's format"), ("full", "full format")):
            encode = median_seconds(functools.partial(encode_snapshot, table, kind), rounds)
            data = encode_snapshot(table, kind)
            decode_data = functools.partial(decode_snapshot, data, map_end_offset=table.map_end_offset)
            decode = median_seconds(decode_data, rounds * 2)
            rows += [
                Row(f"snapshot encode, {name}, {what}", encode * 1e3, "ms", target="<= 30 ms", met=encode <= 0.03),
                Row(f"snapshot decode, {name}, {what}", decode * 1e3, "ms", target="<= 30 ms", met=decode <= 0.03),
            ]
        row = Row(f"memory, {what}, window 5, presized", memory, "bytes/producer", target="<= 128", met=memory <= 128)
        if self.limit_error is None:
            loop = ReferenceTable(producers, 5, dense=True)
            row.peer, row.peer_value = "C loop, dense", loop.memory_bytes() / producers
            row.ratio = row.peer_value / memory
            del loop
        rows.append(row)
        return rows


def peer_readers() -> dict[str, Callable[[bytes], int] | None]:
    """Header readers of the Kafka libraries, None when one is not installed."""
    readers: dict[str, Callable[[bytes], int] | None] = {}
    try:
        from aiokafka.record import _crecords

        def aiokafka_headers(data: bytes) -> int:
            records, batches = _crecords.MemoryRecords(data), 0
            while records.has_next():
                batch = records.next_batch()
                _ = batch.base_offset, batch.producer_id, batch.producer_epoch, batch.base_sequence
                _ = batch.last_offset_delta
                batches += 1
            return batches

        readers["aiokafka compiled"] = aiokafka_headers
    except ImportError:
        readers["aiokafka compiled"] = None
    try:
        from kafka.record.memory_records import MemoryRecords

        def kafka_python_headers(data: bytes) -> int:
            records, batches = MemoryRecords(data), 0
            while records.has_next():
                batch = records.next_batch()
                _ = batch.base_offset, batch.producer_id, batch.producer_epoch, batch.base_sequence
                _ = batch.records_count
                batches += 1
            return batches

        readers["kafka-python"] = kafka_python_headers
    except ImportError:
        readers["kafka-python"] = None
    return readers


# --- output ---------------------------------------------------------------------------------


def fmt_value(value: float, unit: str) -> str:
    if unit in ("batches/s",):
        return f"{fmt_rate(value)} {unit}"
    if unit == "bytes/producer":
        return f"{value:.1f} B/producer"
    return f"{value:.3g} {unit}" if value < 100 else f"{value:,.0f} {unit}"


def table_lines(rows: Sequence[Row]) -> list[str]:
    header = ("what", "dedup", "compared with", "ratio", "target", "met")
    body = []
    for row in rows:
        peer = row.peer if row.peer_value is None else f"{row.peer} {fmt_value(row.peer_value, row.unit)}"
        ratio = "" if row.ratio is None else f"{row.ratio:.3g}"
        met = "" if row.met is None else ("yes" if row.met else "no")
        body.append((row.what, fmt_value(row.value, row.unit), peer, ratio, row.target, met))
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]
    lines = []
    for line in (header, tuple("-" * w for w in widths), *body):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return lines


def with_limits(points: Sequence[Point]) -> list[Point]:
    """``points`` and, per stream, a "C loop" point: the faster of the two C loop layouts."""
    best: dict[tuple[int, str, int], float] = {}
    for p in points:
        if p.engine in C_LOOPS:
            stream = (p.producers, p.order, p.window)
            best[stream] = max(best.get(stream, 0.0), p.batches_per_s)
    return [*points, *(Point("C loop", n, order, window, rate) for (n, order, window), rate in best.items())]


def sweep_lines(points: Sequence[Point]) -> list[str]:
    """Batches/s by stream and engine, and compiled as a fraction of the limit (the faster C loop)."""
    columns = ("compiled", "twin", *C_LOOPS)
    header = ["producers", "order", "window", *columns, "compiled / C loop"]
    body = []
    for n, order, window in sorted({(p.producers, p.order, p.window) for p in points},
                                   key=lambda k: (k[2], ORDERS.index(k[1]), k[0])):  # fmt: skip
        rates = {
            p.engine: p.batches_per_s
            for p in with_limits(points)
            if (p.producers, p.order, p.window) == (n, order, window)
        }
        ratio = f"{rates['compiled'] / rates['C loop']:.3g}" if {"compiled", "C loop"} <= rates.keys() else "-"
        body.append(
            [f"{n:,}", order, str(window), *(fmt_rate(rates[e]) if e in rates else "-" for e in columns), ratio]
        )
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]
    lines = []
    for line in (header, *body):
        cells = (
            cell.ljust(w) if i == 1 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        lines.append("  ".join(cells))
    return lines


def machine() -> str:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average {load}"


def plot(points: Sequence[Point], path: str) -> None:
    """Throughput against producer count, one line per engine (random order, window 5 solid;
    in-order dashed, window 64 dotted, when measured)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5.6), dpi=100)
    colours = {"compiled": "tab:blue", "twin": "tab:green", "C loop": "tab:red"}
    labels = {"C loop": "C loop (faster layout)"}
    points = with_limits(points)
    styles = {("random", 5): "-", ("in-order", 5): "--", ("random", 64): ":", ("in-order", 64): "-."}
    for (order, window), style in styles.items():
        for engine in colours:
            line = sorted(
                (p.producers, p.batches_per_s)
                for p in points
                if (p.engine, p.order, p.window) == (engine, order, window)
            )
            if line:
                xs, ys = zip(*line, strict=True)
                axes.plot(xs, ys, style, marker="o", markersize=3, color=colours[engine],
                          label=f"{labels.get(engine, engine)}, {order}, window {window}")  # fmt: skip
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("producers")
    axes.set_ylabel("append_many, batches per second")
    axes.set_title("dedup: throughput against producer count", fontsize=10)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize=6, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.13))  # below the axes
    figure.text(0.01, 0.01, machine(), fontsize=5, color="grey")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dedup bench",
        description="The headline figures of this machine, against the peers and the limit (a C loop, same run).",
    )
    parser.add_argument("--full", action="store_true", help="add the scaling sweep: every size, order and window")
    parser.add_argument("--plot", metavar="FILE.png", help="draw throughput against producer count (matplotlib)")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tiny sizes, for the tests
    args = parser.parse_args(argv)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print(
                "python -m dedup bench: --plot needs matplotlib, which is not installed: "
                "pip install 'dedup[bench]' (or pip install matplotlib)",
                file=sys.stderr,
            )
            return 2
    try:
        from .. import _state  # noqa: F401
    except ImportError as error:
        print(f"python -m dedup bench: the compiled table did not load ({error}); build it first", file=sys.stderr)
        return 1
    scale = SMOKE if args.smoke else FULL if args.full else QUICK
    bench = Bench(scale, Progress(0))
    started = time.perf_counter()
    rows = bench.run()
    run = "smoke" if args.smoke else "full" if args.full else "quick"
    print(f"dedup bench ({run} run): {machine()}")
    if bench.limit_error is None:
        print(
            f"limit: the C reference loop ({REFERENCE_SOURCE.name}, {shlex.join(compiler_command())} -O3), "
            "the faster of its two layouts, measured in this run"
        )
    else:
        print(f"limit: not available ({bench.limit_error})")
    print("ratio: dedup's speed / the other's (memory: the other's bytes / dedup's); above 1, dedup is ahead")
    print()
    for line in table_lines(rows):
        print(line)
    if args.full or args.smoke:
        print()
        for line in sweep_lines(bench.points):
            print(line)
    print(f"\n{time.perf_counter() - started:.1f} s; the whole suite: python -m pytest benchmarks/ --full")
    if args.plot:
        plot(bench.points, args.plot)
        print(f"plot: {args.plot}")
    return 0
