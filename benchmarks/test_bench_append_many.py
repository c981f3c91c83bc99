"""The vectorised path: ``append_many`` over many producers (issue #2, targets 2 and 4).

Done when ``append_many`` over 10,000 producers, batches of different producers interleaved
at random and each producer's own batches in sequence, takes at least 20 million batches per
second. 100 and 1,000,000 producers, and window 64 against 5, are recorded for context.

Each case builds its whole stream up front (``kit.Workload``): every producer gets its entry
before timing starts, then each round (warm-up included) is the next call of
``CALL_ROWS`` rows, so sequences continue from one round to the next on the same table. The
setup of a round checks that the previous call accepted every row (each accepted batch moves
``map_end_offset`` by one record), the last call's verdicts are checked in full.
"""

from __future__ import annotations

import pytest

ROUNDS = 30
WARMUP_ROUNDS = 1
BATCHES_PER_SECOND_TARGET = 20_000_000
TARGET_CASE = (10_000, 5)

CASES = [(100, 5), (10_000, 5), (1_000_000, 5), (10_000, 64)]


def key(producers: int, window: int) -> str:
    return f"append_many, compiled, {producers:,} producers, window {window}"


def run_stream(benchmark, kit, table, workload, rounds: int, warmup_rounds: int):
    """Time ``table.append_many`` over the next ``rounds`` calls of ``workload`` (after
    ``warmup_rounds`` untimed ones); returns the last call's result."""
    calls = iter(range(rounds + warmup_rounds))
    expected = [table.map_end_offset]

    def setup():
        assert table.map_end_offset == expected[0], "the previous call rejected batches or found duplicates"
        expected[0] = table.map_end_offset + workload.rows
        return workload.arguments(next(calls), table.map_end_offset)

    result = benchmark.pedantic(table.append_many, setup=setup, rounds=rounds, warmup_rounds=warmup_rounds)
    assert (result.error_codes == 0).all()
    assert not result.duplicate.any()
    assert table.map_end_offset == expected[0]
    return result


def batches_per_second(kit, benchmark, rows: int):
    seconds = kit.per_unit(benchmark, rows)
    if seconds is None:
        return None
    return {
        "batches_per_s_median": 1 / seconds["median"],
        "batches_per_s_best": 1 / seconds["min"],
        "ns_per_batch_median": seconds["median"] * 1e9,
    }


@pytest.mark.parametrize(("producers", "window"), CASES, ids=[f"{p}producers-window{w}" for p, w in CASES])
def test_append_many(benchmark, kit, producers, window):
    workload = kit.Workload(producers, calls=ROUNDS + WARMUP_ROUNDS)
    table = kit.compiled_table()(window)
    workload.fill(table)
    benchmark.group = "append_many, compiled, calls of 100,000 batches"
    run_stream(benchmark, kit, table, workload, ROUNDS, WARMUP_ROUNDS)
    numbers = batches_per_second(kit, benchmark, workload.rows)
    if numbers is None:
        return
    window_5 = kit.RESULTS.get(key(producers, 5))
    if window != 5 and window_5:
        numbers["times_window_5_median"] = numbers["ns_per_batch_median"] / window_5["ns_per_batch_median"]
    kit.record(benchmark, key(producers, window), **numbers)
    if (producers, window) == TARGET_CASE:
        assert numbers["batches_per_s_median"] >= BATCHES_PER_SECOND_TARGET, numbers


# The twin takes ~6 us a batch, so the side-by-side case uses calls of 10,000 rows.
TWIN_PRODUCERS = 10_000
TWIN_CALL_ROWS = 10_000
TWIN_ROUNDS = 5


def twin_key(name: str) -> str:
    return f"append_many, {name}, {TWIN_PRODUCERS:,} producers, calls of {TWIN_CALL_ROWS:,}"


def test_append_many_twins(benchmark, kit, twin):
    """Both twins on the same stream (10,000 producers), for the ratio."""
    name, table_class = twin
    workload = kit.Workload(TWIN_PRODUCERS, calls=TWIN_ROUNDS + 1, rows=TWIN_CALL_ROWS)
    table = table_class(5)
    workload.fill(table)
    benchmark.group = "append_many, both twins, calls of 10,000 batches"
    run_stream(benchmark, kit, table, workload, TWIN_ROUNDS, 1)
    numbers = batches_per_second(kit, benchmark, workload.rows)
    if numbers is None:
        return
    compiled = kit.RESULTS.get(twin_key("compiled"))
    if name == "reference" and compiled:
        numbers["compiled_speedup_median"] = numbers["ns_per_batch_median"] / compiled["ns_per_batch_median"]
    kit.record(benchmark, twin_key(name), **numbers)


# The workload above gives every batch the same max timestamp. Real batches carry their
# producer's clock: each row here is 1 ms after the previous one, across calls too, so that a
# table storing timestamps relative to something (issue #5's compact entries) does that work.
CLOCK_CASES = [10_000, 1_000_000]


def clock_key(producers: int) -> str:
    return f"append_many, compiled, {producers:,} producers, window 5, timestamps 1 ms apart"


@pytest.mark.parametrize("producers", CLOCK_CASES, ids=[f"{p}producers" for p in CLOCK_CASES])
def test_append_many_with_a_clock(benchmark, kit, producers):
    import numpy as np

    workload = kit.Workload(producers, calls=ROUNDS + WARMUP_ROUNDS)
    table = kit.compiled_table()(5)
    workload.fill(table)
    ticks = np.arange(workload.rows, dtype=np.int64)
    plain = workload.arguments

    def arguments(call, log_end_offset):
        args, kwargs = plain(call, log_end_offset)
        return (*args[:4], workload.max_timestamps + (call + 1) * workload.rows + ticks), kwargs

    workload.arguments = arguments
    benchmark.group = "append_many, compiled, calls of 100,000 batches, timestamps 1 ms apart"
    run_stream(benchmark, kit, table, workload, ROUNDS, WARMUP_ROUNDS)
    numbers = batches_per_second(kit, benchmark, workload.rows)
    if numbers is not None:
        kit.record(benchmark, clock_key(producers), **numbers)
