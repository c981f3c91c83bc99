"""The compiled table on threads: one writer per table, tables on threads of their own.

The bulk calls (``append_many``, ``append_batches``, ``remove_expired``, ``copy``,
``update_from``) release the GIL while they work, so partitions (one table each) run on as
many cores as there are threads. A table itself has one writer at a time, as Kafka's
ProducerStateManager has (its log's lock guards it): a second call on a table that a call
holds gets ``RuntimeError`` instead of racing it. The table's busy mark is tested and set under
the GIL with no Python code between (``_claim``), after the arguments are converted: converting
them may run Python code (``__index__``, ``__array__``), where another thread can take the GIL
and start a call. The tests below put another thread's call exactly there.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from dedup import Origin

try:
    from dedup import _records, _snapshot
    from dedup._state import ProducerStateTable as Compiled
except ImportError:  # pragma: no cover - conftest fails the run in that case
    Compiled = _records = _snapshot = None

pytestmark = pytest.mark.skipif(Compiled is None, reason="the compiled extension did not load")

#: Rows of the long call another thread runs: new producers, so the table grows under it
#: (about 0.1 s; the checks below need it to outlast a few dozen microseconds of Python).
LONG_ROWS = 1_000_000
WAIT_S = 30.0
#: Offsets of the second call: far above the first call's, so that only the busy mark stops it.
FAR = 1 << 40


def long_append_many(table, first_id=1_000_000):
    """Appends LONG_ROWS new producers' first batches to ``table`` from its map end offset."""
    ids = np.arange(first_id, first_id + LONG_ROWS, dtype=np.int64)
    zeros32 = np.zeros(LONG_ROWS, dtype=np.int32)
    return table.append_many(ids, np.zeros(LONG_ROWS, dtype=np.int16), zeros32, zeros32 + 1,
                             log_end_offset=table.map_end_offset)


def in_use(table) -> bool:
    try:
        _ = 1 in table
    except RuntimeError as error:
        assert "the table is in use" in str(error)
        return True
    return False


class OtherThreadCall:
    """Starts ``call`` on another thread and returns once the table is marked busy by it (the
    other thread is inside the call, without the GIL, since this thread runs). ``join`` waits
    for it and re-raises what it raised."""

    def __init__(self, table, call):
        self.table, self.call, self.result, self.error = table, call, None, None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            self.result = self.call()
        except BaseException as error:  # noqa: BLE001 - handed to join()
            self.error = error

    def start_and_wait_until_inside(self):
        self.thread.start()
        deadline = time.monotonic() + WAIT_S
        while not in_use(self.table):
            assert self.thread.is_alive() or self.error is not None, "the call ended before it was seen busy"
            assert self.error is None, self.error
            assert time.monotonic() < deadline, "the other thread's call was never seen inside"
            time.sleep(0.0005)

    def join(self):
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the other thread's call did not finish"
        if self.error is not None:
            raise self.error
        return self.result


class Hook:
    """An argument whose conversion (``__index__`` or ``__array__``) starts ``other`` on
    another thread and waits until it is inside its call, then converts as ``value``."""

    def __init__(self, value, other: OtherThreadCall):
        self.value, self.other, self.fired = value, other, False

    def _fire(self):
        if not self.fired:
            self.fired = True
            self.other.start_and_wait_until_inside()

    def __index__(self):
        self._fire()
        return int(self.value)

    def __array__(self, dtype=None, copy=None):
        self._fire()
        return np.asarray(self.value, dtype=dtype)


def test_a_second_append_many_on_a_busy_table_fails():
    """Thread B's append_many converts its columns (an ``__array__``) while thread A's starts;
    B must then find the table busy, not run its loop beside A's."""
    table = Compiled(5)
    other = OtherThreadCall(table, lambda: long_append_many(table))
    hooked = Hook(np.array([7], dtype=np.int64), other)
    with pytest.raises(RuntimeError, match="the table is in use"):
        table.append_many(hooked, np.zeros(1, np.int16), np.zeros(1, np.int32), np.ones(1, np.int32),
                          log_end_offset=FAR)
    result = other.join()
    assert hooked.fired
    assert (result.error_codes == 0).all() and len(table) == LONG_ROWS
    assert 7 not in table and table.map_end_offset == LONG_ROWS


def test_a_single_append_converted_while_append_many_starts_fails():
    """append() holds the GIL throughout, but converting ``producer_id`` runs Python code: the
    busy check comes after it."""
    table = Compiled(5)
    other = OtherThreadCall(table, lambda: long_append_many(table))
    hooked = Hook(7, other)
    with pytest.raises(RuntimeError, match="the table is in use"):
        table.append(hooked, 0, 0, 1, FAR)
    other.join()
    assert hooked.fired and 7 not in table and len(table) == LONG_ROWS


def test_append_batches_converted_while_append_many_starts_fails(template_batch):
    table = Compiled(5)
    other = OtherThreadCall(table, lambda: long_append_many(table))
    hooked = Hook(FAR, other)
    with pytest.raises(RuntimeError, match="the table is in use"):
        _records.append_batches(table, bytearray(template_batch), log_end_offset=hooked)
    other.join()
    assert hooked.fired and len(table) == LONG_ROWS


def test_remove_expired_converted_while_append_many_starts_fails():
    table = Compiled(5)
    other = OtherThreadCall(table, lambda: long_append_many(table))
    with pytest.raises(RuntimeError, match="the table is in use"):
        table.remove_expired(Hook(10, other), 1)
    other.join()
    assert len(table) == LONG_ROWS


def test_entry_holds_the_table_while_it_builds_python_objects(monkeypatch):
    """entry() runs Python code (it makes BatchMetadata objects) while it reads an entry:
    another call would find the table busy then; its argument is converted before the mark."""
    from dedup import _state

    table = Compiled(5)
    table.append(3, 0, 0, 1, 0)
    made_while_busy = []
    real = _state.BatchMetadata

    def watched(*fields):
        made_while_busy.append(in_use(table))
        return real(*fields)

    monkeypatch.setattr(_state, "BatchMetadata", watched)
    assert table.entry(3).batches[-1].last_sequence == 0
    assert made_while_busy == [True] and not in_use(table)
    monkeypatch.setattr(_state, "BatchMetadata", real)
    other = OtherThreadCall(table, lambda: long_append_many(table))
    with pytest.raises(RuntimeError, match="the table is in use"):
        table.entry(Hook(3, other))
    other.join()
    assert table.entry(3).batches[-1].last_sequence == 0 and len(table) == LONG_ROWS + 1


def test_the_mark_is_cleared_after_an_error():
    table = Compiled(5)
    with pytest.raises(ValueError):
        table.append_many(np.array([1]), np.array([0]), np.array([0]), np.array([0]), log_end_offset=0)
    with pytest.raises(TypeError):
        table.entry("x")
    assert not in_use(table)
    table.append(1, 0, 0, 1, 0)
    assert table.entry(1).batches[-1].last_offset == 0


# --- tables on threads of their own ------------------------------------------------------------


def partition_stream(partition: int, calls: int, rows: int, producers: int):
    """The append_many columns of one partition: ``calls`` calls of ``rows`` batches of
    ``producers`` producers at random, each producer's batches in sequence, some with 2 records."""
    rng = np.random.default_rng(20_260_107 + partition)
    ids = rng.integers(0, producers, size=calls * rows).astype(np.int64) + partition * 10_000_000
    counts = (1 + (ids % 2)).astype(np.int32)
    order = np.argsort(ids, kind="stable")
    sequences = np.empty(len(ids), dtype=np.int32)
    sorted_counts = counts[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ids[order])) + 1]
    running = np.cumsum(sorted_counts) - sorted_counts
    running -= np.repeat(running[starts], np.diff(np.r_[starts, len(ids)]))
    sequences[order] = running
    epochs = np.zeros(len(ids), dtype=np.int16)
    stamps = np.arange(len(ids), dtype=np.int64)
    return [tuple(column[k * rows:(k + 1) * rows] for column in (ids, epochs, sequences, counts, stamps))
            for k in range(calls)]


def run_partition(table, calls):
    results = []
    for ids, epochs, sequences, counts, stamps in calls:
        result = table.append_many(ids, epochs, sequences, counts, stamps, log_end_offset=table.map_end_offset)
        results.append(tuple(np.array(column) for column in result[:5]))
    return results


def test_tables_on_threads_give_the_serial_results():
    """Four partitions, one table each, appended from four threads at once: every verdict and
    every table (its full snapshot, byte for byte) is what a serial run gives."""
    partitions = 4
    streams = [partition_stream(p, calls=8, rows=50_000, producers=20_000) for p in range(partitions)]
    serial_tables = [Compiled(5) for _ in range(partitions)]
    serial = [run_partition(table, stream) for table, stream in zip(serial_tables, streams, strict=True)]
    threaded_tables = [Compiled(5) for _ in range(partitions)]
    threaded: list = [None] * partitions
    start = threading.Barrier(partitions)

    def work(p):
        start.wait(WAIT_S)
        threaded[p] = run_partition(threaded_tables[p], streams[p])

    threads = [threading.Thread(target=work, args=(p,), daemon=True) for p in range(partitions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S * 4)
        assert not thread.is_alive()
    for p in range(partitions):
        assert threaded[p] is not None
        for serial_call, threaded_call in zip(serial[p], threaded[p], strict=True):
            for a, b in zip(serial_call, threaded_call, strict=True):
                np.testing.assert_array_equal(a, b)
        assert (np.concatenate([call[0] for call in serial[p]]) == 0).all()  # every batch accepted
        assert _snapshot.encode_full(threaded_tables[p]) == _snapshot.encode_full(serial_tables[p])


def test_append_batches_on_threads_give_the_serial_results(template_batch):
    """append_batches on one table per thread, writing offsets into each partition's buffer."""
    partitions = 3
    buffers = []
    for p in range(partitions):
        batches = bytearray()
        for sequence in range(200):
            batches += batch_with(template_batch, producer_id=100 + p * 7 + sequence % 7, base_sequence=sequence // 7)
        buffers.append(batches)

    def run(table, data):
        result = _records.append_batches(table, data, origin=Origin.CLIENT, log_end_offset=0, write_offsets=True)
        return result.error_codes.copy(), result.base_offsets.copy(), bytes(data)

    serial = [run(Compiled(5), bytearray(buffer)) for buffer in buffers]
    tables = [Compiled(5) for _ in range(partitions)]
    outcome: list = [None] * partitions

    def work(p):
        outcome[p] = run(tables[p], bytearray(buffers[p]))

    threads = [threading.Thread(target=work, args=(p,), daemon=True) for p in range(partitions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
        assert not thread.is_alive()
    for p in range(partitions):
        codes, offsets, data = outcome[p]
        assert (codes == 0).all()
        np.testing.assert_array_equal(codes, serial[p][0])
        np.testing.assert_array_equal(offsets, serial[p][1])
        assert data == serial[p][2]


@pytest.fixture
def template_batch():
    """One client batch (producer 1, epoch 0, sequence 0, one record) from kafka-python."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=1,
                                        producer_epoch=0, base_sequence=0, batch_size=1 << 16)
    builder.append(0, timestamp=1_767_225_600_000, key=b"k", value=b"v" * 100, headers=[])
    return bytes(builder.build())


def batch_with(template: bytes, *, producer_id: int, base_sequence: int) -> bytes:
    """``template`` with another producer id and base sequence, its CRC-32C recomputed."""
    batch = bytearray(template)
    batch[43:51] = producer_id.to_bytes(8, "big")
    batch[53:57] = base_sequence.to_bytes(4, "big", signed=True)
    batch[17:21] = _records.crc32c(bytes(batch[21:])).to_bytes(4, "big")
    return bytes(batch)
