"""Kafka's staging order (spec §3.1, §3.2): validate without mutating, write, then update."""

from __future__ import annotations

import pytest

from dedup import InvalidProducerEpochError, Origin, OutOfOrderSequenceError

PID = 42


def state(table):
    return {pid: table.entry(pid) for pid in table}, len(table), table.map_end_offset


def test_check_does_not_mutate(table):
    # testPrepareUpdateDoesNotMutate.
    table.append(PID, 0, 0, 3, 0)
    before = state(table)
    verdict = table.check(PID, 0, 3, 2, 3, max_timestamp=9)
    assert not verdict.duplicate
    assert (verdict.base_offset, verdict.last_offset, verdict.timestamp) == (3, 4, 9)
    assert state(table) == before
    table.check(7, 0, 0, 1, 5)  # an unknown producer is not created by a check
    assert 7 not in table and state(table) == before


def test_check_raises_what_append_would(table):
    table.append(PID, 1, 0, 1, 0)
    with pytest.raises(OutOfOrderSequenceError):
        table.check(PID, 1, 5, 1, 1)
    with pytest.raises(InvalidProducerEpochError):
        table.check(PID, 0, 1, 1, 1)


def test_update_records_the_checked_batch(table):
    verdict = table.check(PID, 0, 0, 4, 10, max_timestamp=77, transactional=True)
    table.update(verdict)
    entry = table.entry(PID)
    assert entry.last_sequence == 3 and entry.last_data_offset == 13
    assert entry.last_timestamp == 77 and entry.current_txn_first_offset == 10
    assert table.map_end_offset == 14


def test_append_is_check_then_update(impl):
    composed, direct = impl(), impl()
    batches = [(PID, 0, 0, 2, 0), (PID, 0, 2, 1, 2), (PID, 0, 0, 2, 3), (PID, 1, 0, 1, 3)]
    for pid, epoch, seq, count, offset in batches:
        verdict = composed.check(pid, epoch, seq, count, offset)
        if not verdict.duplicate:
            composed.update(verdict)
        result = direct.append(pid, epoch, seq, count, offset)
        assert (result.duplicate, result.base_offset, result.last_offset) == (
            verdict.duplicate,
            verdict.base_offset,
            verdict.last_offset,
        )
    assert state(composed) == state(direct)


def test_update_refuses_a_duplicate(table):
    table.append(PID, 0, 0, 1, 0)
    verdict = table.check(PID, 0, 0, 1, 1)
    assert verdict.duplicate
    with pytest.raises(ValueError, match="duplicate"):
        table.update(verdict)


def test_update_refuses_a_stale_check(table):
    # Two checks against the same state: the second is stale once the first is recorded,
    # as Kafka validates and updates under one log lock.
    first = table.check(PID, 0, 0, 1, 0)
    second = table.check(PID, 0, 0, 1, 0)
    table.update(first)
    with pytest.raises(ValueError, match="stale"):
        table.update(second)
    with pytest.raises(ValueError, match="stale"):
        table.update(first)  # nor can one verdict be recorded twice
    assert len(table.entry(PID).batches) == 1


def test_result_of_append_cannot_be_recorded_again(table):
    result = table.append(PID, 0, 0, 1, 0)
    with pytest.raises(ValueError):
        table.update(result)


def test_update_refuses_another_tables_result(impl):
    one, other = impl(), impl()
    with pytest.raises(ValueError, match="another table"):
        other.update(one.check(PID, 0, 0, 1, 0))


def test_update_refuses_anything_else(table):
    with pytest.raises(TypeError, match="AppendResult"):
        table.update((PID, 0, 0, 1, 0))


def test_result_is_read_only_and_describes_the_batch(table):
    result = table.append(PID, 3, 5, 4, 0, origin=Origin.REPLICATION, transactional=True)
    assert (result.producer_id, result.producer_epoch, result.base_sequence, result.last_sequence) == (PID, 3, 5, 8)
    assert result.origin is Origin.REPLICATION and result.transactional is True
    with pytest.raises(AttributeError):
        result.base_offset = 99
    assert "AppendResult(append" in repr(result)
