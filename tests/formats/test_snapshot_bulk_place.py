"""The snapshot loaders' bulk index (table/bulk.pxi, bulk_finish placing each note with
bulk_place): the repeats found as one insert per entry would find them, every producer
findable, the table usable after; the loads reach hash tags met on the way, long runs, the
index's end and deleted slots.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from snapshot_builders import first_repeat

_state = pytest.importorskip("dedup._state")
from dedup import _testing  # noqa: E402


@given(
    ids=st.lists(st.integers(0, 60), max_size=80),
    existing=st.lists(st.integers(0, 200), unique=True, max_size=20),
    remove=st.booleans(),
)
@example(ids=[1, 2, 1, 2, 1], existing=[], remove=False)
@example(ids=[3, 4, 4, 3], existing=[3], remove=True)
def test_the_first_repeat_with_and_without_deleted_slots(ids, existing, remove):
    table = _state.ProducerStateTable(5)
    for n, producer_id in enumerate(existing):
        table.append(producer_id, 0, 0, 1, n, max_timestamp=n % 2)
    if remove:
        table.remove_expired(10, 10)  # the even ones: deleted slots in the index
    expected = first_repeat(ids, list(table))
    assert _testing.bulk_append_c(table, ids) == expected
    if expected == (-1, -1):
        assert all(producer_id in table for producer_id in ids)


@pytest.mark.parametrize("producers", [1, 15, 16, 17, 1_000, 200_000])
def test_a_large_load_finds_everyone_and_keeps_working(producers):
    """200,000 ids at the decoded table's load factor: runs of 16 slots and more, homes near the
    index's end, tags shared by different ids all occur."""
    ids = random.Random(producers).sample(range(1 << 62), producers)
    table = _state.ProducerStateTable(5)
    assert _testing.bulk_append_c(table, ids) == (-1, -1)
    assert list(table) == ids and all(producer_id in table for producer_id in ids)
    assert not any(producer_id in table for producer_id in (1 << 62, (1 << 62) + 1))
    for n, producer_id in enumerate(ids[:300] + [1 << 62]):
        assert not table.append(producer_id, 0, 0, 1, n, max_timestamp=n).duplicate
    assert table.append(ids[0], 0, 0, 1, table.map_end_offset).duplicate  # the retry of its batch
    assert len(table) == producers + 1 and all(producer_id in table for producer_id in ids)


@pytest.mark.parametrize("position", [1, 15, 16, 17, 9_999])
def test_a_repeat_anywhere_in_a_large_load(position):
    ids = list(range(10_000, 20_000))
    ids.insert(position + 1, ids[position // 2])
    table = _state.ProducerStateTable(5)
    assert _testing.bulk_append_c(table, ids) == (position + 1, position // 2)
