"""Memory under churn (issue #7): millions of producers appear and expire over time (spec §6,
``remove_expired``), and the table's memory returns to its baseline; deleting a table frees
everything. Measured three ways that must agree: the table's own ``memory_bytes()``,
tracemalloc (the table allocates through ``PyMem_RawMalloc``, which tracemalloc traces) and,
for the whole process, RSS is left to the benchmarks (it is noisy in a test process)."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from dedup import reference
from dedup._state import ProducerStateTable  # the compiled table: its memory is what is measured

EXPIRATION_MS = 60_000
START_MS = 1_767_225_600_000
ROWS = 100_000


def add_producers(table, first_id: int, count: int, now_ms: int) -> None:
    """``count`` new producers (ids from ``first_id``), one batch each, at ``now_ms``."""
    for start in range(0, count, ROWS):
        n = min(ROWS, count - start)
        ids = np.arange(first_id + start, first_id + start + n, dtype=np.int64)
        table.append_many(
            ids, np.zeros(n, np.int16), np.zeros(n, np.int32), np.ones(n, np.int32), np.full(n, now_ms, np.int64),
            log_end_offset=table.map_end_offset,
        )  # fmt: skip


def traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


@pytest.fixture
def tracing():
    tracemalloc.start()
    yield
    tracemalloc.stop()


# The millions are slow (-m slow); the fast set keeps the twin's expiry below.
@pytest.mark.slow
def test_a_million_producers_three_times_over_return_to_the_baseline(tracing):
    before = traced()
    table = ProducerStateTable()
    floors = []
    peak = 0
    for round_number in range(4):
        now = START_MS + round_number * 10 * EXPIRATION_MS
        add_producers(table, 1_000_000 * (round_number + 1), 1_000_000, now)
        assert len(table) == 1_000_000
        peak = max(peak, table.memory_bytes())
        # Spec §6: every producer idle for producer.id.expiration.ms is removed.
        assert table.remove_expired(now + EXPIRATION_MS, EXPIRATION_MS) == 1_000_000
        assert len(table) == 0
        floors.append((table.memory_bytes(), traced() - before))
    # The entry chunks and the index shrink back to the same small floor every time (the first
    # entry chunk and a minimal index stay, as after the first producer): no creep.
    assert len({table_bytes for table_bytes, _ in floors}) == 1, floors
    assert floors[0][0] <= 256 * 1024
    # tracemalloc agrees (within the test's own small Python objects, such as this list).
    assert all(abs(traced_bytes - floors[0][0]) <= 64 * 1024 for _, traced_bytes in floors), floors
    assert peak >= 100_000_000  # the million producers really took memory (about 127 MB)
    holding = traced()
    del table
    # Deleting the table frees everything it allocated: what remains are this test's objects.
    assert holding - traced() >= floors[0][0]
    assert traced() - before <= 16 * 1024


@pytest.mark.slow
def test_steady_churn_keeps_memory_bounded(tracing):
    # Producers keep arriving; those idle past the expiration leave: the live set stays near
    # two rounds' worth, and so must the memory, however many have passed through.
    table = ProducerStateTable()
    per_round = 200_000
    memory = []
    for round_number in range(12):
        now = START_MS + round_number * EXPIRATION_MS
        add_producers(table, 10_000_000 + round_number * per_round, per_round, now)
        table.remove_expired(now, 2 * EXPIRATION_MS - 1)  # keeps this round and the last
        assert len(table) == min(round_number + 1, 2) * per_round
        memory.append(table.memory_bytes())
    steady = memory[2:]
    assert max(steady) <= 1.25 * min(steady), memory  # no growth with 2.4M producers through it
    assert traced() <= 1.25 * max(steady) + 1_000_000
    del table
    assert traced() < 1_000_000


def test_the_twin_frees_expired_producers_too():
    # The pure-Python twin keeps a dict: after expiry it must not hold the producers.
    table = reference.ProducerStateTable()
    add_producers(table, 1, 20_000, START_MS)
    assert table.remove_expired(START_MS + EXPIRATION_MS, EXPIRATION_MS) == 20_000
    assert len(table) == 0 and list(table.producer_ids()) == []
