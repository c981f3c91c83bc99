"""The measurements of ``python -m dedup bench``: the sizes of a run (:class:`Scale`), the
timing helpers, and :class:`Bench`, which runs every measurement in order and returns the rows
of the table (with a progress bar on stderr).
"""

from __future__ import annotations

import functools
import operator
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .bench_loop import ReferenceLoopUnavailable, ReferenceTable, build_bare_loop, build_reference_loop
from .bench_report import Point, Row, fmt_count
from .bench_streams import (
    BARE,
    C_LOOPS,
    CALL_ROWS,
    ENGINES,
    FIRST_PRODUCER_ID,
    ORDERS,
    TIMESTAMP,
    Stream,
    filled_table,
    kafka_batches,
    run_stream,
    table_for,
)


@dataclass
class Scale:
    """Sizes of one run: the quick run's, the full run's, or a smoke test's."""

    rows: int = CALL_ROWS
    rounds: int = 20
    twin_rows: int = 10_000
    twin_rounds: int = 3
    small: int = 10_000  # the "10,000 producers" headline
    large: int = 1_000_000  # the "1,000,000 producers" headline
    sizes: tuple[int, ...] = (100, 10_000, 100_000, 1_000_000)
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
        BARE: (24 + 16 * window) * 5 / 3,
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
        self.limit_error: str | None = None  # why the C reference loop is not available
        self.bare_error: str | None = None  # why the bare limit is not available
        try:
            build_reference_loop()
        except ReferenceLoopUnavailable as error:
            self.limit_error = str(error)
        try:
            build_bare_loop()
        except ReferenceLoopUnavailable as error:
            self.bare_error = str(error)

    def engines(self) -> tuple[str, ...]:
        unavailable = (*(C_LOOPS if self.limit_error else ()), *((BARE,) if self.bare_error else ()))
        return tuple(engine for engine in ENGINES if engine not in unavailable)

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
        try:
            for label, task in tasks:
                if self.progress is not None:
                    self.progress.step(label)
                rows += task()
        except BaseException:  # Ctrl-C, or a failed measurement: what follows starts on a line of its own
            if self.progress is not None:
                self.progress.stream.write("\n")
                self.progress.stream.flush()
            raise
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
        # Issue 18's goals against the bare limit: 0.5 at 10,000 producers, 0.8 from 1,000,000 up.
        for producers, target, bare_goal in (
            (s.small, ">= 0.6 of the loop, >= 40M/s", 0.5),
            (s.large, ">= 0.6 of the loop", 0.8),
        ):
            compiled = self.point("compiled", producers)
            if compiled is None:
                continue
            rate = compiled.batches_per_s
            what = f"append_many, {fmt_count(producers)} producers, random"
            bare = self.point(BARE, producers)
            row = Row(what, rate, "batches/s", target=f">= {bare_goal} of the bare limit")
            if bare is not None:
                row.peer, row.peer_value, row.ratio = BARE, bare.batches_per_s, rate / bare.batches_per_s
                row.met = row.ratio >= bare_goal
            else:
                row.peer = "bare limit: not available"  # the reason is printed above the table
            rows.append(row)
            row = Row(what, rate, "batches/s", target=target)
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

        data, batches, ids = kafka_batches(self.scale.buffer_bytes)
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


def _header_reader(memory_records: Callable[[bytes], Any], *fields: str) -> Callable[[bytes], int]:
    """A peer library's walk over the batches of a buffer, reading the header fields the table
    needs from each (one ``attrgetter`` call, as cheap as the attribute loads it replaces)."""
    read_fields = operator.attrgetter(*fields)

    def headers(data: bytes) -> int:
        records, batches = memory_records(data), 0
        while records.has_next():
            read_fields(records.next_batch())
            batches += 1
        return batches

    return headers


def peer_readers() -> dict[str, Callable[[bytes], int] | None]:
    """Header readers of the Kafka libraries, None when one is not installed."""
    readers: dict[str, Callable[[bytes], int] | None] = {}
    fields = ("base_offset", "producer_id", "producer_epoch", "base_sequence")
    try:
        from aiokafka.record import _crecords

        readers["aiokafka compiled"] = _header_reader(_crecords.MemoryRecords, *fields, "last_offset_delta")
    except ImportError:
        readers["aiokafka compiled"] = None
    try:
        from kafka.record.memory_records import MemoryRecords

        readers["kafka-python"] = _header_reader(MemoryRecords, *fields, "records_count")
    except ImportError:
        readers["kafka-python"] = None
    return readers
