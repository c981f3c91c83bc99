"""The bad-input matrix (see test_bad_input_matrix.py), part 1: the producer-state table, its
constructor and every method, on both twins (the same class raised, nothing applied), and the
sequence arithmetic (spec §8.4)."""

from __future__ import annotations

import numpy as np
import pytest
from bad_input import (
    INT32_MAX,
    INT64_MAX,
    ids,
    other_table_class,
    row,
    seeded,
    table_state,
)

import dedup

# --- the producer-state table: constructor and every method ---------------------------------

TABLE_ROWS = [
    # constructor
    row("ProducerStateTable", "window", "None", lambda t, T: T(None), TypeError),
    row("ProducerStateTable", "window", "bool", lambda t, T: T(True), TypeError),
    row("ProducerStateTable", "window", "float", lambda t, T: T(5.0), TypeError),
    row("ProducerStateTable", "window", "zero", lambda t, T: T(0), ValueError),
    row("ProducerStateTable", "window", "beyond uint8", lambda t, T: T(256), ValueError),
    row("ProducerStateTable", "window", "beyond int64", lambda t, T: T(1 << 64), ValueError),
    row("ProducerStateTable", "capacity", "None", lambda t, T: T(capacity=None), TypeError),
    row("ProducerStateTable", "capacity", "negative", lambda t, T: T(capacity=-1), ValueError),
    row("ProducerStateTable", "capacity", "beyond int32", lambda t, T: T(capacity=1 << 31), ValueError),
    # append (the full scalar matrix is tests/table/test_arguments.py)
    row("append", "producer_id", "None", lambda t, T: t.append(None, 0, 0, 1, 20), TypeError),
    row("append", "producer_id", "negative", lambda t, T: t.append(-1, 0, 0, 1, 20), ValueError),
    row("append", "producer_epoch", "beyond int16", lambda t, T: t.append(2, 1 << 15, 0, 1, 20), ValueError),
    row("append", "base_sequence", "beyond int32", lambda t, T: t.append(2, 0, 1 << 31, 1, 20), ValueError),
    row("append", "record_count", "str", lambda t, T: t.append(2, 0, 0, "1", 20), TypeError),
    row("append", "base_offset", "beyond int64", lambda t, T: t.append(2, 0, 0, 1, 1 << 63), ValueError),
    # §3.2 step 6: the map end offset only moves up.
    row(
        "append",
        "base_offset",
        "backwards",
        lambda t, T: t.append(2, 0, 0, 1, 14),
        ValueError,
        r"base_offset 14 is below the table's map_end_offset 15",
    ),
    row(
        "append",
        "max_timestamp",
        "beyond int64",
        lambda t, T: t.append(2, 0, 0, 1, 20, max_timestamp=1 << 63),
        ValueError,
    ),
    row("append", "origin", "None", lambda t, T: t.append(2, 0, 0, 1, 20, origin=None), TypeError),
    row("append", "transactional", "None", lambda t, T: t.append(2, 0, 0, 1, 20, transactional=None), TypeError),
    # check / update
    row("check", "producer_id", "float", lambda t, T: t.check(2.0, 0, 0, 1, 20), TypeError),
    row("check", "base_offset", "backwards", lambda t, T: t.check(2, 0, 0, 1, 0), ValueError),
    row("update", "result", "None", lambda t, T: t.update(None), TypeError),
    row("update", "result", "wrong type", lambda t, T: t.update((1, 0, 0)), TypeError),
    row("update", "result", "duplicate", lambda t, T: t.update(t.check(1, 0, 0, 5, 20)), ValueError),
    row("update", "result", "another table's", lambda t, T: t.update(T().check(2, 0, 0, 1, 20)), ValueError),
    # append_many: three smoke rows; the boundary's matrix is tests/table/test_append_many.py.
    row(
        "append_many",
        "producer_ids",
        "None",
        lambda t, T: t.append_many(None, [0], [0], [1], log_end_offset=20),
        TypeError,
    ),
    row(
        "append_many",
        "base_sequences",
        "float",
        lambda t, T: t.append_many([2], [0], np.array([0.0]), [1], log_end_offset=20),
        TypeError,
    ),
    row(
        "append_many",
        "log_end_offset",
        "backwards",
        lambda t, T: t.append_many([2], [0], [0], [1], log_end_offset=14),
        ValueError,
    ),
    # append_marker (spec §2.2)
    row("append_marker", "producer_id", "None", lambda t, T: t.append_marker(None, 0, 0, 20, commit=True), TypeError),
    row(
        "append_marker", "producer_id", "negative", lambda t, T: t.append_marker(-1, 0, 0, 20, commit=True), ValueError
    ),
    row(
        "append_marker",
        "producer_epoch",
        "beyond int16",
        lambda t, T: t.append_marker(2, 1 << 15, 0, 20, commit=True),
        ValueError,
    ),
    row(
        "append_marker",
        "coordinator_epoch",
        "beyond int32",
        lambda t, T: t.append_marker(2, 0, 1 << 31, 20, commit=True),
        ValueError,
    ),
    row(
        "append_marker",
        "coordinator_epoch",
        "None",
        lambda t, T: t.append_marker(2, 0, None, 20, commit=True),
        TypeError,
    ),
    row(
        "append_marker",
        "offset",
        "backwards",
        lambda t, T: t.append_marker(2, 0, 0, 5, commit=True),
        ValueError,
        r"offset 5 is below the table's map_end_offset 15",
    ),
    row(
        "append_marker",
        "offset",
        "int64 max (no log end after it)",
        lambda t, T: t.append_marker(2, 0, 0, INT64_MAX, commit=True),
        ValueError,
    ),
    row("append_marker", "commit", "None", lambda t, T: t.append_marker(2, 0, 0, 20, commit=None), TypeError),
    row("append_marker", "commit", "int", lambda t, T: t.append_marker(2, 0, 0, 20, commit=1), TypeError),
    row(
        "append_marker",
        "timestamp",
        "float",
        lambda t, T: t.append_marker(2, 0, 0, 20, commit=True, timestamp=1.5),
        TypeError,
    ),
    row(
        "append_marker",
        "timestamp",
        "beyond int64",
        lambda t, T: t.append_marker(2, 0, 0, 20, commit=True, timestamp=1 << 63),
        ValueError,
    ),
    row(
        "append_marker",
        "origin",
        "out of the enum",
        lambda t, T: t.append_marker(2, 0, 0, 20, commit=True, origin=9),
        ValueError,
    ),
    # entry
    row("entry", "producer_id", "None", lambda t, T: t.entry(None), TypeError),
    row("entry", "producer_id", "bool", lambda t, T: t.entry(True), TypeError),
    row("entry", "producer_id", "str", lambda t, T: t.entry("1"), TypeError),
    row("entry", "producer_id", "numpy float", lambda t, T: t.entry(np.float64(1)), TypeError),
    row("entry", "producer_id", "negative", lambda t, T: t.entry(-1), ValueError),
    row("entry", "producer_id", "beyond int64", lambda t, T: t.entry(1 << 63), ValueError),
    # update_map_end_offset (§3.2 step 6)
    row("update_map_end_offset", "offset", "None", lambda t, T: t.update_map_end_offset(None), TypeError),
    row("update_map_end_offset", "offset", "bool", lambda t, T: t.update_map_end_offset(True), TypeError),
    row("update_map_end_offset", "offset", "float", lambda t, T: t.update_map_end_offset(20.0), TypeError),
    row("update_map_end_offset", "offset", "negative", lambda t, T: t.update_map_end_offset(-1), ValueError),
    row("update_map_end_offset", "offset", "beyond int64", lambda t, T: t.update_map_end_offset(1 << 63), ValueError),
    row(
        "update_map_end_offset",
        "offset",
        "backwards",
        lambda t, T: t.update_map_end_offset(3),
        ValueError,
        r"offset 3 is below the table's map_end_offset 15",
    ),
    # remove_expired (spec §6)
    row("remove_expired", "now_ms", "None", lambda t, T: t.remove_expired(None, 1), TypeError),
    row("remove_expired", "now_ms", "float", lambda t, T: t.remove_expired(1.5, 1), TypeError),
    row("remove_expired", "now_ms", "below int64", lambda t, T: t.remove_expired(-(1 << 63) - 1, 1), ValueError),
    row("remove_expired", "expiration_ms", "None", lambda t, T: t.remove_expired(0, None), TypeError),
    row("remove_expired", "expiration_ms", "zero", lambda t, T: t.remove_expired(0, 0), ValueError),
    row("remove_expired", "expiration_ms", "beyond int64", lambda t, T: t.remove_expired(0, 1 << 63), ValueError),
    # copy: the same numpy boundary as append_many's producer_ids
    row("copy", "producer_ids", "negative", lambda t, T: t.copy([1, -1]), ValueError),
    row("copy", "producer_ids", "beyond int64", lambda t, T: t.copy(np.array([1 << 63], dtype=np.uint64)), ValueError),
    row("copy", "producer_ids", "float array", lambda t, T: t.copy(np.array([1.0])), TypeError),
    row("copy", "producer_ids", "object array", lambda t, T: t.copy(np.array([1], dtype=object)), TypeError),
    row("copy", "producer_ids", "bool array", lambda t, T: t.copy(np.array([True])), TypeError),
    row("copy", "producer_ids", "2-D", lambda t, T: t.copy(np.ones((1, 1), dtype=np.int64)), ValueError),
    row("copy", "producer_ids", "list holding None", lambda t, T: t.copy([None]), TypeError),
    row("copy", "producer_ids", "str", lambda t, T: t.copy("1"), TypeError),
    row("copy", "producer_ids", "scalar", lambda t, T: t.copy(1), TypeError),
    # update_from (spec §3.2 step 4)
    row("update_from", "staged", "None", lambda t, T: t.update_from(None), TypeError),
    row("update_from", "staged", "the other twin", lambda t, T: t.update_from(other_table_class(T)()), TypeError),
    row("update_from", "staged", "another window", lambda t, T: t.update_from(T(3)), ValueError),
    row("update_from", "staged", "itself", lambda t, T: t.update_from(t), ValueError),
]


@pytest.mark.parametrize("bad", TABLE_ROWS, ids=ids(TABLE_ROWS))
def test_table(twin, bad):
    table_class = twin.ProducerStateTable
    table = seeded(table_class)
    before = table_state(table)
    with pytest.raises(bad.error, match=bad.match):
        bad.call(table, table_class)
    assert table_state(table) == before


def test_table_valid_edges(twin):
    """Empty, strided and read-only id arrays are fine for copy; an empty staged table
    changes nothing, and one behind the live table never moves its map end offset down."""
    table_class = twin.ProducerStateTable
    table = seeded(table_class)
    before = table_state(table)
    read_only = np.array([1, 99])
    read_only.flags.writeable = False
    assert len(table.copy([])) == 0
    assert len(table.copy(np.arange(4)[1::2])) == 1  # ids 1 and 3, strided
    assert len(table.copy(read_only)) == 1
    table.update_from(table_class())
    assert table_state(table) == before
    assert table.memory_bytes() > 0


# --- sequence arithmetic (spec §8.4) ------------------------------------------------------------

SEQUENCE_ROWS = [
    row("increment_sequence", "sequence", "None", lambda: dedup.increment_sequence(None, 1), TypeError),
    row("increment_sequence", "sequence", "bool", lambda: dedup.increment_sequence(True, 1), TypeError),
    row("increment_sequence", "sequence", "float", lambda: dedup.increment_sequence(1.5, 1), TypeError),
    row("increment_sequence", "sequence", "str", lambda: dedup.increment_sequence("1", 1), TypeError),
    row("increment_sequence", "sequence", "negative", lambda: dedup.increment_sequence(-5, 1), ValueError),
    row("increment_sequence", "sequence", "beyond int32", lambda: dedup.increment_sequence(1 << 31, 1), ValueError),
    row("increment_sequence", "increment", "negative", lambda: dedup.increment_sequence(1, -3), ValueError),
    row("increment_sequence", "increment", "beyond int32", lambda: dedup.increment_sequence(1, 1 << 31), ValueError),
    row("increment_sequence", "increment", "None", lambda: dedup.increment_sequence(1, None), TypeError),
    row("decrement_sequence", "sequence", "negative", lambda: dedup.decrement_sequence(-5, 1), ValueError),
    row("decrement_sequence", "sequence", "beyond int64", lambda: dedup.decrement_sequence(1 << 70, 1), ValueError),
    row("decrement_sequence", "decrement", "float", lambda: dedup.decrement_sequence(1, 1.0), TypeError),
    row("decrement_sequence", "decrement", "negative", lambda: dedup.decrement_sequence(1, -3), ValueError),
    row("in_sequence", "last_sequence", "None", lambda: dedup.in_sequence(None, 1), TypeError),
    row("in_sequence", "last_sequence", "beyond int32", lambda: dedup.in_sequence(1 << 31, 0), ValueError),
    row("in_sequence", "next_sequence", "None", lambda: dedup.in_sequence(1, None), TypeError),
    row("in_sequence", "next_sequence", "float", lambda: dedup.in_sequence(1, 2.0), TypeError),
    row("in_sequence", "next_sequence", "below int32", lambda: dedup.in_sequence(1, -(1 << 31) - 1), ValueError),
]


@pytest.mark.parametrize("bad", SEQUENCE_ROWS, ids=ids(SEQUENCE_ROWS))
def test_sequence_helpers(bad):
    with pytest.raises(bad.error, match=bad.match):
        bad.call()


def test_sequence_helpers_take_their_whole_ranges():
    assert dedup.increment_sequence(INT32_MAX, 1) == 0 and dedup.decrement_sequence(0, 1) == INT32_MAX
    assert dedup.in_sequence(-1, 0) and dedup.in_sequence(INT32_MAX, 0)
    assert not dedup.in_sequence(INT32_MAX, -(1 << 31))
