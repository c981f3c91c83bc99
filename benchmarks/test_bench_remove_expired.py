"""``remove_expired`` over 1,000,000 producers (issue #2, context numbers).

Kafka's expiration check runs every few minutes over every producer of a partition. Three
cases on a table of 1,000,000 producers with one batch each: nothing expired (one pass over the
8-byte timestamp column), every tenth producer expired (the survivors are compacted and the
index rebuilt), and all of them. A round that removed producers gets a fresh table in the
(untimed) setup; the number removed is checked every round.
"""

from __future__ import annotations

import numpy as np
import pytest

PRODUCERS = 1_000_000
ROUNDS = 5
CALL_ROWS = 100_000
NOW_MS = 1_767_225_600_000
EXPIRATION_MS = 60_000

# name: (now_ms, expiration_ms, producers removed). Every tenth producer's last batch is
# EXPIRATION_MS older than the others' (stamped NOW_MS).
CASES = {
    "none expired": (NOW_MS, 2 * EXPIRATION_MS, 0),
    "10% expired": (NOW_MS, EXPIRATION_MS, PRODUCERS // 10),
    "all expired": (NOW_MS + EXPIRATION_MS, EXPIRATION_MS, PRODUCERS),
}


def build_table(table_class, producers: int = PRODUCERS):
    table = table_class(5)
    ids = np.arange(1_000, 1_000 + producers, dtype=np.int64)
    stamps = np.where(np.arange(producers) % 10 == 0, NOW_MS - EXPIRATION_MS, NOW_MS).astype(np.int64)
    epochs = np.zeros(CALL_ROWS, dtype=np.int16)
    sequences = np.zeros(CALL_ROWS, dtype=np.int32)
    counts = np.ones(CALL_ROWS, dtype=np.int32)
    for start in range(0, producers, CALL_ROWS):
        stop = min(start + CALL_ROWS, producers)
        n = stop - start
        result = table.append_many(
            ids[start:stop],
            epochs[:n],
            sequences[:n],
            counts[:n],
            stamps[start:stop],
            log_end_offset=table.map_end_offset,
        )
        assert (result.error_codes == 0).all()
    return table


@pytest.mark.parametrize("case", list(CASES))
def test_remove_expired(benchmark, kit, case):
    now_ms, expiration_ms, removed = CASES[case]
    cls = kit.compiled_table()
    holder = {}

    def setup():
        table = holder.get("table")
        if table is None or len(table) != PRODUCERS:
            holder.pop("table", None)  # free the old table before building the next
            table = holder["table"] = build_table(cls)
        return (now_ms, expiration_ms), {}

    def remove_expired(now_ms, expiration_ms):
        return holder["table"].remove_expired(now_ms, expiration_ms)

    def teardown(now_ms, expiration_ms):
        assert len(holder["table"]) == PRODUCERS - removed

    benchmark.group = "remove_expired, compiled, 1,000,000 producers"
    assert benchmark.pedantic(remove_expired, setup=setup, teardown=teardown, rounds=ROUNDS, warmup_rounds=1) == removed
    seconds = kit.timing(benchmark)
    if seconds is not None:
        kit.record(
            benchmark,
            f"remove_expired, compiled, 1,000,000 producers, {case}",
            ms_per_call_median=seconds["median"] * 1e3,
            ms_per_call_min=seconds["min"] * 1e3,
            ns_per_producer_median=seconds["median"] / PRODUCERS * 1e9,
        )
