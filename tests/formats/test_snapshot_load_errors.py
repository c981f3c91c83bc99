"""Snapshot decodes on the caller's thread with the GIL released: several at once in several
threads give each its table, and an exception the load raises part way (a failed allocation)
is raised by decode_snapshot, after which the next decode works.

The tables here are 40,000 producers with every batch count from 1 to the window, ongoing
transactions, and offset and timestamp gaps and offset deltas too wide for the narrow entry
(escapes in the full format, wide entries in both).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from snapshot_builders import state

from dedup import decode_snapshot, encode_snapshot

_state = pytest.importorskip("dedup._state")
from dedup import _testing  # noqa: E402

#: The compiled table, named: its decodes are the ones under test, DEDUP_PURE_PYTHON=1 or not.
Compiled = _state.ProducerStateTable

PRODUCERS = 40_000
WINDOW = 5

def varied_table(producers=PRODUCERS, window=WINDOW, seed=7):
    table = _state.ProducerStateTable(window)
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1_000, 1_000 + producers, dtype=np.int64))
    rounds = rng.integers(1, window + 2, size=producers)  # window + 1: the ring has turned
    for sequence in range(window + 1):
        chosen = ids[rounds > sequence]
        n = chosen.shape[0]
        result = table.append_many(
            chosen,
            np.zeros(n, np.int16),
            np.full(n, sequence, np.int32),
            np.ones(n, np.int32),
            rng.integers(1_700_000_000_000, 1_700_000_100_000, size=n),
            log_end_offset=table.map_end_offset,
        )
        assert (result.error_codes == 0).all()
    for k in range(50):  # wide entries, escapes, ongoing transactions
        producer_id = 10**12 + k
        ongoing = k % 2 == 0
        table.append(producer_id, 0, 0, 1, table.map_end_offset, max_timestamp=5, transactional=ongoing)
        gap = (1 << 33) if k % 3 == 0 else 1
        stamp = 5 + (1 << 40) * (k % 5 == 0)
        records = 70_000 if k % 7 == 0 else 1  # an offset delta over 0xFFFF: wide in Kafka's format too
        table.append(producer_id, 0, 1, records, table.map_end_offset + gap, max_timestamp=stamp, transactional=ongoing)
    return table


@pytest.fixture(scope="module")
def table():
    return varied_table()


@pytest.fixture(scope="module")
def snapshots(table):
    return {kind: encode_snapshot(table, kind) for kind in ("full", "kafka")}


def test_decodes_in_several_threads_at_once(table, snapshots):
    """With the GIL released the decodes overlap; each gives the table."""
    expected = state(table)
    results, errors = [], []

    def decode_some():
        try:
            for _ in range(3):
                results.append(state(decode_snapshot(snapshots["full"], table_class=Compiled)) == expected)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    workers = [threading.Thread(target=decode_some) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors and results == [True] * 9


@pytest.mark.parametrize("kind", ["full", "kafka"])
def test_an_exception_of_the_load_is_raised_by_the_caller(table, snapshots, kind):
    """When growing the wide-entry pool fails part way (the test hook makes its second growth
    fail, as a failed allocation would), the decode raises that MemoryError with the same
    message each time, and the next decode works."""
    data = snapshots[kind]
    messages = []
    try:
        for _ in range(2):
            _testing.fail_wide_growth(1)
            with pytest.raises(MemoryError, match="producer-state table: cannot allocate") as caught:
                decode_snapshot(data, map_end_offset=table.map_end_offset, table_class=Compiled)
            messages.append(str(caught.value))
    finally:
        _testing.fail_wide_growth(-1)
    assert messages[0] == messages[1]
    loaded = decode_snapshot(data, map_end_offset=table.map_end_offset, table_class=Compiled)
    assert encode_snapshot(loaded, kind) == data
