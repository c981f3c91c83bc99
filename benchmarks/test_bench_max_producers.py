"""Bounded producer state (issue 16 item 6): what ``max_producers`` costs the hot path.

Done when ``append_many`` and ``append`` over 10,000, 100,000 and 1,000,000 producers cost at
most 10% more with a cap above the working set (``max_producers`` = 2 x producers: nothing is
evicted) than without one. The two sides of each case run back to back on the same stream
(the same ``kit.Workload``, filled before timing: the steady state of known producers), and
``test_cap_costs_at_most_ten_percent`` reads both from this run.

Run it as is (the AVX-512 kernels where the CPU has them) and with the scalar paths forced,
``DEDUP_DISABLE_CPU_FEATURES="avx512f avx2 sse4.2 popcnt"`` (platform/cpu.h): the append
path has no kernel of its own, so both runs should agree; the summary names the kernels.

For context (not judged): a storm of new producer ids, each one evicting, against the same
ids growing an uncapped table.
"""

from __future__ import annotations

import numpy as np
import pytest

ROUNDS = 60
WARMUP_ROUNDS = 2
APPEND_ROWS = 10_000  # append(): rows per round, one Python call each
MAX_RATIO = 1.10

PRODUCERS = [10_000, 100_000, 1_000_000]
SIDES = ("uncapped", "capped")


def kernels_short() -> str:
    from dedup import _testing

    chosen = _testing.kernels()
    on = [name for name in ("snapshot_w5", "expiry_avx2") if chosen.get(name)]
    return f"crc32c {chosen['crc32c']}, vectors: {', '.join(on) or 'none (scalar)'}"


def append_rows(append, producer_ids, producer_epochs, base_sequences, log_end_offset):
    """append() row by row, as a produce request of one batch each would call it."""
    offset = log_end_offset
    for producer_id, producer_epoch, base_sequence in zip(producer_ids, producer_epochs, base_sequences, strict=True):
        append(producer_id, producer_epoch, base_sequence, 1, offset)
        offset += 1


def measure_pair(benchmark, kit, path: str, producers: int) -> dict[str, float] | None:
    """Both sides on the same stream, one call each per round, their order alternating, so a
    neighbour's load falls on both alike; the per-round ratios capped/uncapped, their median."""
    from time import perf_counter

    rows = kit.CALL_ROWS if path == "append_many" else APPEND_ROWS
    workload = kit.Workload(producers, calls=ROUNDS + WARMUP_ROUNDS, rows=rows)
    tables = {side: kit.compiled_table()(5, max_producers=None if side == "uncapped" else 2 * producers)
              for side in SIDES}  # fmt: skip
    for table in tables.values():
        workload.fill(table)
    seconds: dict[str, list[float]] = {side: [] for side in SIDES}
    calls = iter(range(ROUNDS + WARMUP_ROUNDS))

    def one_round():
        call = next(calls)
        for side in SIDES if call % 2 else SIDES[::-1]:
            table = tables[side]
            args, kwargs = workload.arguments(call, table.map_end_offset)
            if path == "append_many":
                started = perf_counter()
                table.append_many(*args, **kwargs)
            else:
                columns = (args[0].tolist(), args[1].tolist(), args[2].tolist())
                started = perf_counter()
                append_rows(table.append, *columns, kwargs["log_end_offset"])
            seconds[side].append(perf_counter() - started)

    benchmark.group = f"max_producers: {path}, capped and uncapped in each round"
    benchmark.pedantic(one_round, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS)
    for table in tables.values():
        # Every batch accepted (a duplicate or an error would not move the end), nothing evicted.
        assert table.map_end_offset == producers + (ROUNDS + WARMUP_ROUNDS) * rows
        assert len(table) == producers and table.evictions == 0
    pairs = zip(seconds["capped"][WARMUP_ROUNDS:], seconds["uncapped"][WARMUP_ROUNDS:], strict=True)
    ratios = sorted(capped / uncapped for capped, uncapped in pairs)
    median = {side: sorted(times[WARMUP_ROUNDS:])[ROUNDS // 2] for side, times in seconds.items()}
    numbers = {
        "ns_per_batch_uncapped": median["uncapped"] / rows * 1e9,
        "ns_per_batch_capped": median["capped"] / rows * 1e9,
        "ratio_median": ratios[len(ratios) // 2],
    }
    kit.record(benchmark, f"max_producers, {path}, {producers:,} producers [{kernels_short()}]", **numbers)
    return numbers


@pytest.mark.parametrize("path", ["append_many", "append"])
@pytest.mark.parametrize("producers", PRODUCERS, ids=[f"{p}producers" for p in PRODUCERS])
def test_a_cap_above_the_working_set_costs_at_most_ten_percent(benchmark, kit, path, producers):
    numbers = measure_pair(benchmark, kit, path, producers)
    assert numbers is not None and numbers["ratio_median"] <= MAX_RATIO, numbers


STORM_PRODUCERS = 1_000_000
STORM_CAP = 100_000
STORM_ROWS = 100_000


@pytest.mark.parametrize("side", SIDES)
def test_storm_of_new_producer_ids(benchmark, kit, side):
    """Context: every row a new producer id (KIP-936's storm); capped, each one evicts."""
    table = kit.compiled_table()(5, max_producers=None if side == "uncapped" else STORM_CAP)
    rounds = STORM_PRODUCERS // STORM_ROWS
    chunks = iter(range(rounds + 1))
    zeros16, zeros32 = np.zeros(STORM_ROWS, np.int16), np.zeros(STORM_ROWS, np.int32)
    ones = np.ones(STORM_ROWS, np.int32)

    def setup():
        first = next(chunks) * STORM_ROWS
        ids = np.arange(first, first + STORM_ROWS, dtype=np.int64)
        return (ids, zeros16, zeros32, ones), {"log_end_offset": table.map_end_offset}

    benchmark.group = "max_producers: a storm of new producer ids"
    benchmark.pedantic(table.append_many, setup=setup, rounds=rounds, warmup_rounds=1)
    assert len(table) == (STORM_CAP if side == "capped" else STORM_PRODUCERS + STORM_ROWS)
    seconds = kit.per_unit(benchmark, STORM_ROWS)
    if seconds is not None:
        kit.record(benchmark, f"max_producers, storm of new ids, {side}", ns_per_batch_median=seconds["median"] * 1e9,
                   memory_bytes=table.memory_bytes())  # fmt: skip
