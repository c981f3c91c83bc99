"""Bad arguments: a TypeError or ValueError that names the argument, never a crash, never a
silently wrong answer, and nothing recorded. The numpy boundary of append_many is in
test_append_many.py."""

from __future__ import annotations

import numpy as np
import pytest

from dedup import Origin

GOOD = dict(producer_id=1, producer_epoch=0, base_sequence=0, record_count=1, base_offset=0)

BAD_SCALARS = [
    ("producer_id", -1, ValueError),
    ("producer_id", 1 << 63, ValueError),
    ("producer_id", 1.0, TypeError),
    ("producer_id", "1", TypeError),
    ("producer_id", None, TypeError),
    ("producer_id", True, TypeError),
    ("producer_epoch", 1 << 15, ValueError),
    ("producer_epoch", -(1 << 15) - 1, ValueError),
    ("producer_epoch", 0.5, TypeError),
    ("base_sequence", -2, ValueError),
    ("base_sequence", 1 << 31, ValueError),
    ("base_sequence", [0], TypeError),
    ("record_count", 0, ValueError),
    ("record_count", -5, ValueError),
    ("record_count", 1 << 31, ValueError),
    ("base_offset", -1, ValueError),
    ("base_offset", 1 << 63, ValueError),
    ("base_offset", 2.0, TypeError),
]


def call(method, overrides=(), **keywords):
    args = dict(GOOD)
    args.update(overrides)
    return method(
        args["producer_id"],
        args["producer_epoch"],
        args["base_sequence"],
        args["record_count"],
        args["base_offset"],
        **keywords,
    )


@pytest.mark.parametrize("method", ["append", "check"])
@pytest.mark.parametrize("name,value,error", BAD_SCALARS, ids=lambda v: repr(v)[:20])
def test_bad_batch_argument_names_it(table, method, name, value, error):
    with pytest.raises(error, match=name):
        call(getattr(table, method), {name: value})
    assert len(table) == 0 and table.map_end_offset == 0


@pytest.mark.parametrize("method", ["append", "check"])
@pytest.mark.parametrize(
    "keyword,value,error",
    [
        ("max_timestamp", 1 << 63, ValueError),
        ("max_timestamp", -(1 << 63) - 1, ValueError),
        ("max_timestamp", "now", TypeError),
        ("origin", 3, ValueError),
        ("origin", -1, ValueError),
        ("origin", "CLIENT", TypeError),
        ("origin", True, TypeError),
        ("transactional", 1, TypeError),
        ("transactional", None, TypeError),
    ],
)
def test_bad_keyword_names_it(table, method, keyword, value, error):
    with pytest.raises(error, match=keyword):
        call(getattr(table, method), **{keyword: value})
    assert len(table) == 0


def test_numpy_scalars_are_accepted(table):
    result = table.append(np.int64(5), np.int16(1), np.int32(0), np.int32(2), np.uint64(0), max_timestamp=np.int64(3))
    assert result.last_offset == 1 and table.entry(5).last_timestamp == 3
    assert table.append(5, 1, 2, 1, 2, transactional=np.bool_(False)).last_sequence == 2


def test_plain_int_origin_is_accepted(table):
    assert table.append(5, 0, 0, 1, 0, origin=1).origin is Origin.REPLICATION


def test_offsets_must_not_go_backwards(table):
    table.append(1, 0, 0, 5, 10)  # map end offset becomes 15
    with pytest.raises(ValueError, match="base_offset 14 is below the table's map_end_offset 15"):
        table.append(2, 0, 0, 1, 14)
    with pytest.raises(ValueError, match="base_offset"):
        table.check(2, 0, 0, 1, 0)
    with pytest.raises(ValueError, match="offset"):
        table.append_marker(2, 0, 0, 3, commit=True)
    assert 2 not in table
    table.append(2, 0, 0, 1, 15)  # equal is fine; gaps are fine (other producers' batches)


def test_log_end_offset_past_int64_is_refused(table):
    # The log end offset after a batch (last offset + 1) is a Kafka long.
    with pytest.raises(ValueError, match="base_offset"):
        table.append(1, 0, 0, 5, (1 << 63) - 5)
    assert len(table) == 0
    result = table.append(1, 0, 0, 5, (1 << 63) - 6)
    assert result.last_offset == (1 << 63) - 2 and table.map_end_offset == (1 << 63) - 1


@pytest.mark.parametrize(
    "keywords,name",
    [
        ({"producer_id": -1}, "producer_id"),
        ({"producer_epoch": 1 << 15}, "producer_epoch"),
        ({"coordinator_epoch": 1 << 31}, "coordinator_epoch"),
        ({"offset": -1}, "offset"),
        ({"commit": 1}, "commit"),
        ({"timestamp": 1.5}, "timestamp"),
        ({"origin": 9}, "origin"),
    ],
)
def test_bad_marker_argument_names_it(table, keywords, name):
    args = dict(producer_id=1, producer_epoch=0, coordinator_epoch=0, offset=0, commit=True)
    args.update(keywords)
    with pytest.raises((TypeError, ValueError), match=name):
        positional = [args.pop(key) for key in ("producer_id", "producer_epoch", "coordinator_epoch", "offset")]
        table.append_marker(*positional, **args)
    assert len(table) == 0


@pytest.mark.parametrize(
    "args,name",
    [((0, 0), "expiration_ms"), ((0, -1), "expiration_ms"), ((1 << 63, 1), "now_ms"), (("0", 1), "now_ms")],
)
def test_bad_expiration_argument_names_it(table, args, name):
    with pytest.raises((TypeError, ValueError), match=name):
        table.remove_expired(*args)


@pytest.mark.parametrize("window,error", [(0, ValueError), (256, ValueError), (-1, ValueError), (5.0, TypeError)])
def test_bad_window(impl, window, error):
    with pytest.raises(error, match="window"):
        impl(window)


@pytest.mark.parametrize("capacity,error", [(-1, ValueError), (1 << 31, ValueError), ("1", TypeError)])
def test_bad_capacity(impl, capacity, error):
    with pytest.raises(error, match="capacity"):
        impl(capacity=capacity)


def test_entry_argument(table):
    assert table.entry(3) is None
    with pytest.raises(ValueError, match="producer_id"):
        table.entry(-3)
    with pytest.raises(TypeError, match="producer_id"):
        table.entry("3")


@pytest.mark.parametrize("value", [-1, 1 << 64, "1", 1.0, None, True, (1,)])
def test_membership_of_non_producer_ids_is_false(table, value):
    table.append(1, 0, 0, 1, 0)
    assert (value in table) is False
