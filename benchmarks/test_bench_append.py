"""One ``append`` at a time, both twins side by side (issue #2, target 1).

Done when one ``append`` through the compiled table costs at most 300 ns and is at least 20x
faster than the pure-Python twin. The steady state: one producer (or a few, round-robin)
appending in sequence with full windows, so each call looks its producer up, scans the
retained batches for a duplicate, checks the sequence and records the batch in the ring.

A round is a loop of ``BLOCK`` calls over pre-built ``(producer_id, base_sequence,
base_offset)`` tuples on a fresh table whose windows were filled in the (untimed) setup; the
numbers are per call and include the caller's loop, measured on its own by
``test_append_loop_alone``. The ratio is checked by ``test_append_targets``, which reads this
run's results (so it is skipped when the benchmarks it needs did not run).
"""

from __future__ import annotations

import pytest

BLOCK = 1_000  # appends per round
# About 0.2 s of compiled rounds and 0.6 s of reference rounds: a compiled run of a few tens of
# milliseconds can fall entirely inside one burst of a neighbour's load and move the median.
ROUNDS = {"compiled": 1_000, "reference": 100, "loop": 1_000}
WARMUP_ROUNDS = 2
WINDOW = 5

APPEND_NS_TARGET = 300
SPEEDUP_TARGET = 20

PRODUCER_COUNTS = [1, 8]


def stream(producers: int, batches_each: int, first_offset: int = 0, first_sequence: int = 0):
    """``(producer_id, base_sequence, base_offset)`` rows: producers round-robin, each in
    sequence, one record per batch, offsets consecutive from ``first_offset``."""
    rows = []
    offset = first_offset
    for sequence in range(first_sequence, first_sequence + batches_each):
        for producer_id in range(1_000, 1_000 + producers):
            rows.append((producer_id, sequence, offset))
            offset += 1
    return rows


def append_block(append, rows) -> None:
    for producer_id, base_sequence, base_offset in rows:
        append(producer_id, 0, base_sequence, 1, base_offset)


def loop_alone(append, rows) -> None:
    for _producer_id, _base_sequence, _base_offset in rows:
        pass


def key(name: str, producers: int) -> str:
    return f"append, {name}, {producers} producer{'s' if producers > 1 else ''}"


@pytest.mark.parametrize("producers", PRODUCER_COUNTS)
def test_append(benchmark, kit, twin, producers):
    name, table_class = twin
    # The setup fills every window, so the timed calls run on a wrapped ring (steady state).
    prime = stream(producers, WINDOW)
    rows = stream(producers, BLOCK // producers, first_offset=len(prime), first_sequence=WINDOW)

    def setup():
        table = table_class(WINDOW)
        append_block(table.append, prime)
        return (table.append, rows), {}

    def teardown(append, rows):
        table = append.__self__
        # Every batch was accepted (append raises on an error; a duplicate would not move the end).
        assert table.map_end_offset == rows[-1][2] + 1
        assert len(table) == producers

    benchmark.group = "append, one call at a time"
    benchmark.pedantic(append_block, setup=setup, teardown=teardown, rounds=ROUNDS[name], warmup_rounds=WARMUP_ROUNDS)
    seconds = kit.per_unit(benchmark, len(rows))
    if seconds is None:
        return
    numbers = {"ns_per_append_median": seconds["median"] * 1e9, "ns_per_append_min": seconds["min"] * 1e9}
    compiled = kit.RESULTS.get(key("compiled", producers))
    if name == "reference" and compiled:
        numbers["compiled_speedup_median"] = numbers["ns_per_append_median"] / compiled["ns_per_append_median"]
    kit.record(benchmark, key(name, producers), **numbers)


def test_append_loop_alone(benchmark, kit):
    """The caller's loop without the call: what every number above includes."""
    rows = stream(1, BLOCK)
    benchmark.group = "append, one call at a time"
    benchmark.pedantic(loop_alone, args=(None, rows), rounds=ROUNDS["loop"], warmup_rounds=WARMUP_ROUNDS)
    seconds = kit.per_unit(benchmark, len(rows))
    if seconds is not None:
        kit.record(
            benchmark,
            "append, the caller's loop alone",
            ns_per_row_median=seconds["median"] * 1e9,
            ns_per_row_min=seconds["min"] * 1e9,
        )


@pytest.mark.parametrize("producers", PRODUCER_COUNTS)
def test_append_targets(kit, producers):
    """Issue #2 target 1, from the two measurements of this run."""
    compiled = kit.RESULTS.get(key("compiled", producers))
    twin = kit.RESULTS.get(key("reference", producers))
    if compiled is None or twin is None:
        pytest.skip("needs test_append on both twins in this run (with timing on)")
    speedup = twin["ns_per_append_median"] / compiled["ns_per_append_median"]
    kit.record(
        None,
        f"append, compiled vs reference, {producers} producer{'s' if producers > 1 else ''}",
        speedup_median=speedup,
        speedup_min=twin["ns_per_append_min"] / compiled["ns_per_append_min"],
    )
    assert compiled["ns_per_append_median"] <= APPEND_NS_TARGET, compiled
    assert speedup >= SPEEDUP_TARGET, (compiled, twin)
