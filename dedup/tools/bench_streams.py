"""The workloads of ``python -m dedup bench`` and of ``benchmarks/``: streams of batches
(:class:`Stream`), the tables of each engine (:func:`table_for`), the timed loop over a stream
(:func:`run_stream`), Kafka batches in bytes (:func:`kafka_batches`) and filled tables
(:func:`filled_table`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .bench_loop import BareTable, ReferenceTable

#: Calls of ``append_many`` take this many rows (as in ``benchmarks/conftest.py``).
CALL_ROWS = 100_000
#: Kafka's producer ids are handed out sequentially by the coordinator; start somewhere not 0.
FIRST_PRODUCER_ID = 1_000
TIMESTAMP = 1_767_225_600_000
ORDERS = ("random", "in-order")
#: The C loop in its two layouts (see reference_loop.c); the limit of a case is the faster.
C_LOOPS = ("C loop, dense", "C loop, by slot")
#: The bare limit (bare_loop.c): the least any table must do, with dedup's memory tricks.
BARE = "bare limit"
ENGINES = ("compiled", "twin", *C_LOOPS, BARE)


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
    if engine == BARE:
        return BareTable(producers, window)
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


def kafka_batches(buffer_bytes: int, producers: int = 10_000) -> tuple[bytes, int, np.ndarray]:
    """``buffer_bytes`` of 1 KiB v2 batches (8 records each) from ``producers``
    producers interleaved at random, each in sequence from 8 on; and the producers' ids."""
    from ..batch import encode_batch

    def batch(producer_id: int, base_sequence: int, extra: int) -> bytes:
        values = [b"v" * (101 + (extra if i == 0 else 0)) for i in range(8)]
        return encode_batch(
            values, keys=[b"key-%06d" % i for i in range(8)], timestamp=TIMESTAMP,
            producer_id=producer_id, producer_epoch=0, base_sequence=base_sequence,
        )  # fmt: skip

    extra = next(e for e in range(64) if len(batch(1, 0, e)) == 1024)
    count = buffer_bytes // 1024
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
