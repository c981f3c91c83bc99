"""Bounded producer state (issue 16 item 6, KIP-936's problem): ``max_producers``.

A capped table evicts the least recently used producer without an ongoing transaction when a
new one comes (last use = the last offset of the newest retained batch, Kafka's
lastDataOffset, -1 without one; ties by producer id), refuses a new CLIENT producer with
THROTTLING_QUOTA_EXCEEDED when open transactions fill it, and keeps both twins identical:
here for the staging path (copy / update_from), snapshots and the storm of distinct ids; the
single-append rules run in the state machine (test_state_machine.py, with small caps).
"""

from __future__ import annotations

import gc
import os
import resource

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dedup import reference
from dedup._types import Origin
from dedup.errors import KafkaError, OutOfOrderSequenceError, ThrottlingQuotaExceededError
from dedup.snapshot import decode_snapshot, encode_snapshot

_state = pytest.importorskip("dedup._state")


def columns(ids):
    n = len(ids)
    return np.asarray(ids, np.int64), np.zeros(n, np.int16), np.zeros(n, np.int32), np.ones(n, np.int32)


def test_a_capped_table_keeps_the_most_recently_used(impl):
    table = impl(max_producers=3)
    for offset, producer_id in enumerate(range(10)):
        table.append(producer_id, 0, 0, 1, offset)
    assert sorted(table) == [7, 8, 9] and table.evictions == 7
    table.append(7, 0, 1, 1, 10)  # 7 is now the most recently used: 8 goes next
    table.append(100, 0, 0, 1, 11)
    assert sorted(table) == [7, 9, 100] and table.evictions == 8
    assert table.max_producers == 3


def test_an_evicted_producer_is_accepted_at_any_sequence_and_a_kept_one_still_deduplicates(impl):
    table = impl(max_producers=2)
    table.append(1, 0, 0, 1, 0)
    table.append(2, 0, 0, 1, 1)
    table.append(1, 0, 1, 1, 2)
    table.append(3, 0, 0, 1, 3)  # evicts 2, the least recently used
    assert 2 not in table
    # KIP-360: an unknown producer's batch is accepted at any sequence.
    result = table.append(2, 0, 57, 1, 4)
    assert not result.duplicate and result.base_offset == 4
    # 1 was evicted by 2's return; 3 is kept and its retry is a duplicate with the original offsets.
    assert sorted(table) == [2, 3]
    retry = table.append(3, 0, 0, 1, 5)
    assert retry.duplicate and retry.base_offset == 3
    with pytest.raises(OutOfOrderSequenceError):
        table.append(3, 0, 5, 1, 5)  # a kept producer's sequence is still checked


def test_the_uncapped_table_keeps_every_producer(impl):
    table = impl()
    table.append_many(*columns(range(1000)), log_end_offset=0)
    assert len(table) == 1000 and table.evictions == 0 and table.max_producers is None


def test_open_transactions_are_never_evicted_and_a_full_table_refuses_clients_only(impl):
    table = impl(max_producers=2)
    table.append(1, 0, 0, 1, 0, transactional=True)
    table.append(2, 0, 0, 1, 1)
    table.append(3, 0, 0, 1, 2, transactional=True)  # evicts 2, not 1 (older but in a transaction)
    assert sorted(table) == [1, 3]
    with pytest.raises(ThrottlingQuotaExceededError) as raised:
        table.append(4, 0, 0, 1, 3)
    assert raised.value.code == 89 and 4 not in table
    verdict = table.append_many(*columns([4, 5]), log_end_offset=3)
    assert verdict.error_codes.tolist() == [89, 89]
    # A follower mirrors its leader: never refused, the table goes past its cap.
    table.append(6, 0, 0, 1, 3, origin=Origin.REPLICATION)
    assert sorted(table) == [1, 3, 6] and table.evictions == 1
    # A marker ends 1's transaction: 1 can go again, and the next client producer is taken.
    table.append_marker(1, 0, 0, 4, commit=True)
    table.append(7, 0, 0, 1, 5)
    assert sorted(table) == [3, 7] and table.evictions == 3  # 1 (last use 0) and 6 (last use 3)


def test_setting_the_cap_evicts_down_to_it(impl):
    table = impl()
    table.append_many(*columns(range(10)), log_end_offset=0)
    table.max_producers = 4
    assert sorted(table) == [6, 7, 8, 9] and table.evictions == 6
    with pytest.raises(ValueError, match="max_producers"):
        table.max_producers = 0
    with pytest.raises(TypeError, match="max_producers"):
        impl(max_producers="10")
    table.max_producers = None
    table.append_many(*columns(range(10, 20)), log_end_offset=10)
    assert len(table) == 14


@pytest.mark.parametrize("snapshot_format", ["kafka", "full"])
def test_a_snapshot_round_trip_keeps_the_producers_and_their_order(impl, snapshot_format):
    """Both formats keep each producer's newest batch offset, the order evictions follow: a
    reloaded table evicts exactly as the original goes on to."""
    table = impl(max_producers=50)
    rng = np.random.default_rng(7)
    end = 0
    for _ in range(20):
        ids = rng.integers(0, 200, 30)
        ids = ids[np.unique(ids, return_index=True)[1]]
        end = table.append_many(*columns(ids), log_end_offset=end, origin=Origin.REPLICATION).log_end_offset
    loaded = decode_snapshot(encode_snapshot(table, snapshot_format), window=5, map_end_offset=end,
                             table_class=type(table))
    loaded.max_producers = 50
    assert sorted(loaded) == sorted(table) and loaded.evictions == 0
    before = table.evictions
    for more in (columns(range(1000, 1030)), columns([1, 2, 3, 1031])):
        a = table.append_many(*more, log_end_offset=end, origin=Origin.REPLICATION)
        b = loaded.append_many(*more, log_end_offset=end, origin=Origin.REPLICATION)
        assert a.error_codes.tolist() == b.error_codes.tolist()
        end = a.log_end_offset
    assert sorted(loaded) == sorted(table)
    assert loaded.evictions == table.evictions - before > 0


def test_a_staging_copy_refuses_as_its_table_would_and_update_from_evicts(impl):
    table = impl(max_producers=3)
    table.append(1, 0, 0, 1, 0, transactional=True)
    table.append(2, 0, 0, 1, 1, transactional=True)
    table.append(3, 0, 0, 1, 2)
    staged = table.copy([3])
    assert staged.max_producers == 3
    staged.append(4, 0, 0, 1, 3)  # taken: 3 can be evicted in the live table
    staged.append(3, 0, 1, 1, 4, transactional=True)
    with pytest.raises(ThrottlingQuotaExceededError):
        staged.append(5, 0, 0, 1, 5)  # 1, 2 and now 3 hold open transactions
    assert len(staged) == 2 and staged.evictions == 0  # a staging copy never evicts
    table.update_from(staged)
    # 4 came in, and is then the one producer without a transaction when the cap applies.
    assert sorted(table) == [1, 2, 3] and table.evictions == 1
    table.append_marker(2, 0, 0, 5, commit=True)
    staged = table.copy([])
    staged.append(6, 0, 0, 1, 6)
    table.update_from(staged)
    assert sorted(table) == [1, 3, 6] and table.evictions == 2  # 2, its transaction ended, went


# --- the twins agree on the staging path, under small caps ----------------------------------

operation = st.tuples(
    st.sampled_from(["append", "txn", "marker", "stage", "expire", "cap"]),
    st.lists(st.integers(0, 7), min_size=1, max_size=4),
    st.booleans(),
)


def run(table, operations):
    """Run the operations; every outcome, the state and snapshots, comparable across twins."""
    out = []
    end = 0
    clock = 1000
    for kind, ids, flag in operations:
        clock += 1
        try:
            if kind in ("append", "txn"):
                for producer_id in ids:
                    entry = table.entry(producer_id)
                    seq = 0 if entry is None or not entry.batches else entry.batches[-1].last_sequence + 1
                    table.append(producer_id, 0, seq, 1, end, max_timestamp=clock, transactional=kind == "txn")
                    end += 1
            elif kind == "marker":
                table.append_marker(ids[0], 0, 0, end, commit=flag, timestamp=clock)
                end += 1
            elif kind == "stage":
                staged = table.copy(ids[:2])
                for producer_id in ids:
                    entry = staged.entry(producer_id)
                    seq = 0 if entry is None or not entry.batches else entry.batches[-1].last_sequence + 1
                    staged.append(producer_id, 0, seq, 1, end, max_timestamp=clock, transactional=flag)
                    end += 1
                table.update_from(staged)
            elif kind == "expire":
                out.append(table.remove_expired(clock, 3))
            else:
                table.max_producers = None if flag else 1 + ids[0] % 4
            out.append("ok")
        except KafkaError as error:
            out.append((type(error).__name__, str(error)))
        out.append((table.producer_ids().tolist(), table.evictions, {p: table.entry(p) for p in table}))
    out.append((encode_snapshot(table, "full"), encode_snapshot(table, "kafka")))
    return out


@settings(max_examples=300, deadline=None)
@given(cap=st.integers(1, 4), operations=st.lists(operation, max_size=30))
def test_the_twins_agree_under_caps_through_copies_and_update_from(cap, operations):
    compiled = run(_state.ProducerStateTable(max_producers=cap), operations)
    assert compiled == run(reference.ProducerStateTable(max_producers=cap), operations)


# --- a storm of distinct producer ids (KIP-936's problem) ------------------------------------


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


STORM = 10_000_000
CAP = 100_000
CHUNK = 500_000


def test_a_storm_of_ten_million_producer_ids_keeps_memory_flat():
    """10 million distinct ids, one batch each, through a table capped at 100,000: after the
    first million the table's memory_bytes() and the process RSS stay flat; the uncapped control
    holding the first million grows tenfold and more. (About 5 s.)"""
    table = _state.ProducerStateTable(max_producers=CAP)
    end = 0
    sizes, rss = [], []
    for first in range(0, STORM, CHUNK):
        verdict = table.append_many(*columns(np.arange(first, first + CHUNK)), log_end_offset=end)
        assert not verdict.error_codes.any()
        end = verdict.log_end_offset
        assert len(table) == CAP
        sizes.append(table.memory_bytes())
        del verdict  # (its 13.5 MB of verdict columns would make RSS a sawtooth)
        gc.collect()
        rss.append(rss_bytes())
    assert table.evictions == STORM - CAP
    assert sorted(table.producer_ids().tolist()) == list(range(STORM - CAP, STORM))  # the most recent
    assert max(sizes[2:]) == min(sizes[2:]), sizes  # not one byte more after the first million
    assert max(rss[2:]) - min(rss[2:]) < 16 << 20, rss  # RSS flat within 16 MiB
    control = _state.ProducerStateTable()
    for first in range(0, 1_000_000, CHUNK):
        control.append_many(*columns(np.arange(first, first + CHUNK)), log_end_offset=first)
    assert control.memory_bytes() > 5 * sizes[-1], (control.memory_bytes(), sizes[-1])


def test_a_storm_through_the_twin_keeps_the_same_producers():
    """The same storm, small, through both twins: the same survivors, evictions and bytes."""
    tables = [_state.ProducerStateTable(max_producers=100), reference.ProducerStateTable(max_producers=100)]
    for table in tables:
        end = 0
        for first in range(0, 3000, 500):
            end = table.append_many(*columns(np.arange(first, first + 500)), log_end_offset=end).log_end_offset
            table.append(first, 0, 1, 1, end)  # the chunk's first producer, evicted: back at sequence 1
            end += 1
    compiled, twin = tables
    assert compiled.producer_ids().tolist() == twin.producer_ids().tolist()
    assert compiled.evictions == twin.evictions == 3000 + 6 - 100
    assert encode_snapshot(compiled, "full") == encode_snapshot(twin, "full")
    assert sorted(compiled) == [2500, *range(2901, 3000)]  # the last 99 and the one used again
