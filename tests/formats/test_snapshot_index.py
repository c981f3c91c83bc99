"""The decoded table's index, built after its entries (bulk_append/bulk_finish, _state.pyx):
the compiled decoders append entries in file order and index them region by region at the end;
the result must be the table the entry-by-entry load made (every producer findable, later
inserts and removals working), and a repeated producer id must be met as before (spec §5.1: a
reload is producers.put, later entries win).
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from snapshot_builders import both_reject, first_repeat, full2_file, full_entry, full_file, kafka_file, state

from dedup import reference
from dedup._types import ProducerStateEntry
from dedup.snapshot import SNAPSHOT_FORMATS, decode_snapshot, encode_snapshot

_state = pytest.importorskip("dedup._state")
from dedup import _testing  # noqa: E402

Compiled = _state.ProducerStateTable
Twin = reference.ProducerStateTable


# --- the decoded table's index, built after its entries (bulk_append/bulk_finish, _state.pyx) -
#
# The compiled decoders append entries in file order and index them region by region at the
# end; these check that the result is the table the entry-by-entry load made: every producer
# findable, later inserts and removals working, and repeated producer ids met as before.


def filled_twins(producers, seed):
    """Both twins with the same `producers` random ids, 1 to 3 batches each, spread timestamps."""
    import random

    rng = random.Random(seed)
    ids = rng.sample(range(1 << 62), producers)
    tables = (Compiled(5), Twin(5))
    for table in tables:
        offset = 0
        for n, producer_id in enumerate(ids):
            for sequence in range(1 + n % 3):
                table.append(producer_id, 0, sequence, 1, offset, max_timestamp=1_000 + n)
                offset += 1
    return ids, tables


# Several regions of the index in the fast set (3,000 producers), many in the slow one.
@pytest.mark.parametrize("producers", [0, 1, 7, 3_000, pytest.param(20_000, marks=pytest.mark.slow)])
@pytest.mark.parametrize("kind", SNAPSHOT_FORMATS)
def test_a_decoded_table_finds_every_producer_and_keeps_working(kind, producers):
    ids, (compiled, twin) = filled_twins(producers, seed=producers)
    data = encode_snapshot(twin, kind)
    assert encode_snapshot(compiled, kind) == data
    loaded = [decode_snapshot(data, map_end_offset=twin.map_end_offset, table_class=cls) for cls in (Compiled, Twin)]
    assert state(loaded[0]) == state(loaded[1])
    assert list(loaded[0]) == ids and all(producer_id in loaded[0] for producer_id in ids)
    assert not any(producer_id in loaded[0] for producer_id in (-1, 1 << 62, 2, 3) if producer_id not in ids)
    # Then as a table filled by inserts: new producers, retries, appends, removals.
    for table in loaded:
        end = table.map_end_offset
        for n, producer_id in enumerate(ids[:500]):  # the next batch of each (1 to 3 so far)
            assert not table.append(producer_id, 0, 1 + n % 3, 1, end + n, max_timestamp=5_000).duplicate
        for n, producer_id in enumerate(range(1 << 62, (1 << 62) + 300)):
            assert not table.append(producer_id, 0, 0, 1, end + 500 + n, max_timestamp=5_000).duplicate
        table.remove_expired(1_000 + producers // 2 + 10_000, 10_000)  # the first half, but those just appended
    assert state(loaded[0]) == state(loaded[1])
    assert all(producer_id in loaded[0] for producer_id in loaded[1])


def test_kafkas_repeated_ids_in_a_large_file_load_as_kafkas_map():
    """The bulk load meets the repeats and loads again entry by entry: later entries win, the
    first position stays (§5.1), as the twin does."""
    entries = [(1000 + n, 0, n, 10 + n, 0, 7, 1, -1) for n in range(20_000)]
    for later, earlier in ((15_000, 3), (15_001, 3), (19_999, 19_998), (40, 7_000)):
        entries[later] = (1000 + earlier,) + entries[later][1:]
    data = kafka_file(entries)
    loaded = [decode_snapshot(data, map_end_offset=100_000, table_class=cls) for cls in (Compiled, Twin)]
    assert state(loaded[0]) == state(loaded[1])
    assert len(loaded[0]) == 20_000 - 4
    assert loaded[0].entry(1003).batches[0].last_offset == 10 + 15_001


def repeat_cases(size):
    """(entry tuples of `size` producers with some edited, the reader's expected message start)."""
    base = [full_entry(pid=100 + n) for n in range(size)]
    past_map_end = [(3, 1, 100, 7)]  # last offset at the map end offset: a batch problem
    a, b, c, d = size // 7, size // 3, size // 2, size - 1

    def edit(**changes):
        entries = list(base)
        for position, entry in changes.items():
            entries[int(position[1:])] = entry
        return entries

    def repeats(later, earlier):
        return f"full snapshot: entry {later}: producer id {100 + earlier} repeats entry {earlier}"

    return [
        # two ids repeated, the second one's repeat first in the file
        (edit(**{f"e{d}": full_entry(pid=100 + a), f"e{c}": full_entry(pid=100 + b)}), repeats(c, b)),
        # three occurrences: the second names the first
        (edit(**{f"e{b}": full_entry(pid=100 + a), f"e{d}": full_entry(pid=100 + a)}), repeats(b, a)),
        # a repeat, then a batch problem in a later entry: the repeat
        (edit(**{f"e{b}": full_entry(pid=100 + a), f"e{c}": full_entry(pid=100 + c, batches=past_map_end)}),
         repeats(b, a)),
        # a batch problem, then a repeat: the batch problem
        (edit(**{f"e{b}": full_entry(pid=100 + b, batches=past_map_end), f"e{c}": full_entry(pid=100 + a)}),
         f"full snapshot: entry {b} (producer id {100 + b}), batch 0: last offset 100 is not below"),
        # a repeat with a batch problem of its own: the repeat (checked first, as the id)
        (edit(**{f"e{c}": full_entry(pid=100 + a, batches=past_map_end)}), repeats(c, a)),
        # a repeat whose transaction is wrong: the transaction (checked before the id's place)
        (edit(**{f"e{c}": full_entry(pid=100 + a, txn=100)}),
         f"full snapshot: entry {c} (producer id {100 + a}): current txn first offset 100"),
        # a negative id, then a repeat: the id
        (edit(**{f"e{b}": full_entry(pid=-5), f"e{c}": full_entry(pid=100 + a)}),
         f"full snapshot: entry {b}: producer id -5 is negative"),
        # a batch count over the window in an entry that repeats: the batch count
        (edit(**{f"e{c}": full_entry(pid=100 + a, batches=[(3, 1, 10, 7)] * 2, count=9)}),
         f"full snapshot: entry {c}: batch count 9 exceeds the window"),
    ]  # fmt: skip


@pytest.mark.parametrize("size", [9, 5_000])  # one region of the index, several
@pytest.mark.parametrize("version", [1, 2])
def test_the_first_repeated_producer_id_is_reported_as_entry_by_entry(version, size):
    for entries, expected in repeat_cases(size):
        if version == 1:
            entries = [entry for entry in entries if len(entry) == 6]  # version 1 has no batch count over
            if len(entries) < size:
                continue
            data = full_file(entries)
        else:
            data = full2_file(entries)
        assert both_reject("decode_full", data).startswith(expected), expected


@pytest.mark.parametrize("version", [1, 2])
def test_a_bad_crc_still_wins_over_a_repeated_producer_id(version):
    entries = [full_entry(pid=100 + n) for n in range(5_000)] + [full_entry(pid=100)]
    data = (full_file if version == 1 else full2_file)(entries, crc=1)
    assert "CRC-32C of bytes" in both_reject("decode_full", data)


@given(
    ids=st.lists(st.integers(0, 60), max_size=80),
    existing=st.lists(st.integers(0, 200), unique=True, max_size=20),
)
@example(ids=[1, 2, 1, 2, 1], existing=[])
@example(ids=[3, 4, 4, 3], existing=[3])
def test_the_bulk_index_reports_the_first_repeat(ids, existing):
    """Also against producers inserted before (already in the index, some removed)."""
    table = Compiled(5)
    for n, producer_id in enumerate(existing):
        table.append(producer_id, 0, 0, 1, n, max_timestamp=n % 2)
    table.remove_expired(10, 10)  # the even ones: deleted slots in the index
    expected = first_repeat(ids, list(table))
    assert _testing.bulk_append_c(table, ids) == expected


def test_the_bulk_index_after_inserts_and_removals():
    """Bulk entries after normal ones and tombstones (remove_expired): all found, then usable."""
    table = Compiled(5)
    old = list(range(1_000, 6_000))
    for n, producer_id in enumerate(old):
        table.append(producer_id, 0, 0, 1, n, max_timestamp=n)
    table.remove_expired(5_000, 2_500)  # producers 1000..3499: swap-removed, their slots deleted
    kept = list(table)
    new = list(range(1 << 40, (1 << 40) + 20_000, 2))
    assert _testing.bulk_append_c(table, new) == (-1, -1)
    assert list(table) == kept + new and len(table) == len(kept) + len(new)
    assert all(producer_id in table for producer_id in kept + new)
    assert not any(producer_id in table for producer_id in range(1_000, 3_500))
    assert table.entry(new[7]) == ProducerStateEntry(new[7], -1, (), -1, -1, None)
    end = table.map_end_offset
    for n, producer_id in enumerate(new + list(range(1_000, 1_100))):  # fresh ones too
        assert not table.append(producer_id, 0, 0, 1, end + n, max_timestamp=10_000).duplicate
    assert table.append(new[3], 0, 0, 1, table.map_end_offset).duplicate  # the retry of its batch
    assert table.remove_expired(10_000, 2_000) == len(kept)
    assert sorted(table) == sorted(new + list(range(1_000, 1_100)))
    assert all(producer_id in table for producer_id in new)
