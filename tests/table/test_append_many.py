"""append_many: the vectorised path is append() in a loop, and its numpy boundary is strict.

The contract (dedup/_types.py AppendManyResult, spec §2.1 and §3.2): row by row the same
verdict as ``append``; accepted batches take consecutive offsets from ``log_end_offset``;
a duplicate (rule 10) reports the ORIGINAL batch's offsets and timestamp; a Kafka error
becomes that row's code (offsets and timestamp -1) and does not stop the other rows. An
argument problem raises TypeError/ValueError naming the argument before anything is applied.

Spec: docs/spec.md (rules 8, 10, 12, 15, 16, 18; §2.3, §2.4; §3.2
step 6 for the map end offset; §8.4 for sequences).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spec_model import INVALID_PRODUCER_EPOCH, INVALID_RECORD, INVALID_TXN_STATE, OUT_OF_ORDER_SEQUENCE_NUMBER

from dedup import reference
from dedup._types import AppendManyResult, Origin
from dedup.errors import KafkaError

_state = pytest.importorskip("dedup._state")

INT16_MAX = (1 << 15) - 1
INT32_MAX = (1 << 31) - 1
INT64_MAX = (1 << 63) - 1

NONE = 0  # no error (Kafka's wire codes, spec §2.7: spec_model.py)

COLUMNS = ("producer_ids", "producer_epochs", "base_sequences", "record_counts", "max_timestamps")
CANONICAL = {
    "producer_ids": np.int64,
    "producer_epochs": np.int16,
    "base_sequences": np.int32,
    "record_counts": np.int32,
    "max_timestamps": np.int64,
}


@pytest.fixture(autouse=True)
def _quiet_replication_warnings(caplog):
    # REPLICATION epoch regressions are logged at WARN (§2.4); they are expected here.
    caplog.set_level(logging.CRITICAL, logger="dedup")


# --- helpers --------------------------------------------------------------------------------


def batch(pids, epochs, seqs, counts, stamps=None, transactional=None):
    """append_many's keyword arguments, in the kernel's own dtypes."""
    args = {
        "producer_ids": np.asarray(pids, dtype=np.int64),
        "producer_epochs": np.asarray(epochs, dtype=np.int16),
        "base_sequences": np.asarray(seqs, dtype=np.int32),
        "record_counts": np.asarray(counts, dtype=np.int32),
        "max_timestamps": None if stamps is None else np.asarray(stamps, dtype=np.int64),
    }
    if transactional is not None:
        args["transactional"] = np.asarray(transactional, dtype=np.bool_)
    return args


def state(table):
    """Everything observable about a table, order-free (iteration order may differ)."""
    return {pid: table.entry(pid) for pid in table}, len(table), table.map_end_offset


def rows(result):
    """An AppendManyResult as plain tuples, one per row."""
    return [
        (int(code), bool(dup), int(first), int(last), int(ts))
        for code, dup, first, last, ts in zip(
            result.error_codes,
            result.duplicate,
            result.base_offsets,
            result.last_offsets,
            result.timestamps,
            strict=True,
        )
    ]


def append_loop(table, args, log_end_offset, origin=Origin.CLIENT):
    """What append_many must equal: append() per row, accepted rows at consecutive offsets."""
    n = len(args["producer_ids"])
    stamps = args.get("max_timestamps")
    txn = args.get("transactional")
    out = []
    for i in range(n):
        try:
            result = table.append(
                int(args["producer_ids"][i]),
                int(args["producer_epochs"][i]),
                int(args["base_sequences"][i]),
                int(args["record_counts"][i]),
                log_end_offset,
                max_timestamp=-1 if stamps is None else int(stamps[i]),
                origin=origin,
                transactional=False if txn is None else bool(txn[i]),
            )
        except KafkaError as error:
            out.append((error.code, False, -1, -1, -1))
            continue
        out.append((NONE, result.duplicate, result.base_offset, result.last_offset, result.timestamp))
        if not result.duplicate:
            log_end_offset = result.last_offset + 1
    return out, log_end_offset


def assert_rejected(table, error, name, **kwargs):
    """An argument error naming ``name``, with the table left exactly as it was."""
    kwargs.setdefault("log_end_offset", table.map_end_offset)
    before = state(table)
    with pytest.raises(error, match=name):
        table.append_many(**kwargs)
    assert state(table) == before


def assert_column_rejected(impl, error, name, column):
    """``append_many`` on a seeded table with ``name``'s column replaced by ``column``: an
    argument error naming it, nothing applied."""
    table = impl()
    end = seeded(table)
    columns = valid_columns()
    columns[name] = column
    assert_rejected(table, error, name, **columns, log_end_offset=end)


def seeded(table):
    """A table holding producer 1 (epoch 0, sequences 0..2 at offsets 0..2) and producer 2
    inside a transaction; returns the log end offset."""
    table.append(1, 0, 0, 3, 0, max_timestamp=100)
    table.append(2, 0, 0, 1, 3, max_timestamp=100, transactional=True)
    return 4


# --- the property: append_many == append in a loop -------------------------------------------


@st.composite
def client_columns(draw, max_rows=25):
    """Columns a few producers could send: mostly in order, with retries, gaps, epoch changes."""
    pool = draw(st.lists(st.sampled_from([0, 7, 8, INT64_MAX]), min_size=1, max_size=3, unique=True))
    n = draw(st.integers(0, max_rows))
    client = {pid: {"epoch": 0, "next": 0, "sent": []} for pid in pool}
    pids, epochs, seqs, counts = [], [], [], []
    for _ in range(n):
        pid = draw(st.sampled_from(pool))
        c = client[pid]
        count = draw(st.integers(1, 5))
        action = draw(
            st.sampled_from(
                ["next", "next", "next", "next", "retry", "gap", "epoch up", "epoch down", "wrap", "no sequence"]
            )
        )
        if action == "retry" and c["sent"]:
            epoch, seq, count = draw(st.sampled_from(c["sent"][-7:]))
        else:
            if action == "gap":
                c["next"] = (c["next"] + draw(st.integers(1, 3))) % (1 << 31)
            elif action == "epoch up":
                c["epoch"], c["next"] = c["epoch"] + 1, 0
            elif action == "epoch down":
                c["epoch"], c["next"] = c["epoch"] - 1, 0
            elif action == "wrap":  # §8.4: sequences crossing 2^31-1
                c["next"] = INT32_MAX - draw(st.integers(0, 3))
            epoch = c["epoch"]
            seq = -1 if action == "no sequence" else c["next"]
            c["next"] = (c["next"] + count) % (1 << 31)
            c["sent"].append((epoch, seq, count))
        pids.append(pid)
        epochs.append(epoch)
        seqs.append(seq)
        counts.append(count)
    stamps = draw(st.none() | st.lists(st.integers(-1, 10**6), min_size=n, max_size=n))
    transactional = draw(st.none() | st.lists(st.booleans(), min_size=n, max_size=n))
    return batch(pids, epochs, seqs, counts, stamps, transactional)


any_origin = st.sampled_from([Origin.CLIENT, Origin.CLIENT, Origin.REPLICATION, Origin.COORDINATOR])
property_settings = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@property_settings
@given(
    prelude=client_columns(max_rows=8),
    columns=client_columns(),
    origin=any_origin,
    gap=st.integers(0, 3),
    data=st.data(),
)
def test_append_many_equals_append_in_a_loop(impl, prelude, columns, origin, gap, data):
    """Row by row the verdicts of append() (rules 8-18 for the origin, §2.3, §2.4): same codes,
    duplicate flags, offsets and timestamps, same log end offset and same final state."""
    window = data.draw(st.sampled_from([1, 2, 5]), label="window")
    many, loop = impl(window), impl(window)
    for table in (many, loop):
        append_loop(table, prelude, 0)
    assert state(many) == state(loop)
    log_end_offset = many.map_end_offset + gap

    result = many.append_many(**columns, log_end_offset=log_end_offset, origin=origin)
    expected, expected_end = append_loop(loop, columns, log_end_offset, origin)

    assert rows(result) == expected
    assert result.log_end_offset == expected_end
    assert state(many) == state(loop)


@property_settings
@given(
    prelude=client_columns(max_rows=8),
    columns=client_columns(),
    origin=any_origin,
    window=st.sampled_from([1, 2, 5, 7]),
)
def test_compiled_append_many_equals_reference(prelude, columns, origin, window):
    """The two twins' append_many agree array by array, with the same dtypes."""
    compiled, ref = _state.ProducerStateTable(window), reference.ProducerStateTable(window)
    results = []
    for table in (compiled, ref):
        first = table.append_many(**prelude, log_end_offset=0)
        second = table.append_many(**columns, log_end_offset=first.log_end_offset, origin=origin)
        results.append((first, second))
    for left, right in zip(*results, strict=True):
        for name in ("error_codes", "duplicate", "base_offsets", "last_offsets", "timestamps"):
            a, b = getattr(left, name), getattr(right, name)
            assert a.dtype == b.dtype, name
            np.testing.assert_array_equal(a, b, err_msg=name)
        assert left.log_end_offset == right.log_end_offset
    assert state(compiled) == state(ref)


# Few examples: each fills several storage chunks of both twins.
@settings(max_examples=examples(8))
@given(window=st.sampled_from([255, 7]), producers=st.integers(300, 2600), seed=st.integers(0, 2**32 - 1))
def test_many_producers_across_storage_chunks_match_reference(window, producers, seed):
    """Enough producers to fill several of the compiled table's storage chunks, then
    expiration (§6) of a random half and retries (rule 10) of everything: same as the twin."""
    rng = np.random.default_rng(seed)
    pids = rng.permutation(np.arange(producers, dtype=np.int64) * 7919 + 1)
    stamps = rng.integers(0, 1000, size=producers)
    first = batch(pids, np.zeros(producers), np.zeros(producers), np.ones(producers), stamps)
    compiled, ref = _state.ProducerStateTable(window), reference.ProducerStateTable(window)
    for table in (compiled, ref):
        table.append_many(**first, log_end_offset=0)
        assert table.remove_expired(1000, 500) == int(np.count_nonzero(1000 - stamps >= 500))
    assert state(compiled) == state(ref)
    # Retries of the first batch (duplicates for survivors, accepted anew for expired ones)
    # and the next batch of every producer, shuffled.
    again = np.concatenate([pids, pids])
    order = rng.permutation(len(again))
    seqs = np.concatenate([np.zeros(producers), np.ones(producers)])[order]
    second = batch(
        again[order], np.zeros(len(again)), seqs, np.ones(len(again)), rng.integers(1000, 2000, size=len(again))
    )
    out = [t.append_many(**second, log_end_offset=t.map_end_offset) for t in (compiled, ref)]
    assert rows(out[0]) == rows(out[1])
    assert out[0].log_end_offset == out[1].log_end_offset
    assert state(compiled) == state(ref)


# --- rule 10 inside one call ----------------------------------------------------------------


def test_duplicate_inside_one_call_returns_the_first_offsets(table):
    """Rule 10: a batch repeated later in the same arrays is a duplicate of the first one, and
    reports the first one's offsets and max timestamp; it takes no offsets itself."""
    result = table.append_many(
        **batch([7, 7, 7, 9], [0, 0, 0, 0], [0, 2, 0, 0], [2, 1, 2, 1], [50, 60, 70, 80]), log_end_offset=100
    )
    assert rows(result) == [
        (NONE, False, 100, 101, 50),
        (NONE, False, 102, 102, 60),
        (NONE, True, 100, 101, 50),  # the first row's offsets and timestamp, not 70
        (NONE, False, 103, 103, 80),
    ]
    assert result.log_end_offset == 104
    assert table.map_end_offset == 104
    assert len(table.entry(7).batches) == 2


def test_duplicate_of_an_earlier_append_returns_its_offsets(table):
    """Rule 10 across calls: the original's offsets and stored timestamp, error NONE."""
    end = seeded(table)
    result = table.append_many(**batch([1], [0], [0], [3], [999]), log_end_offset=end)
    assert rows(result) == [(NONE, True, 0, 2, 100)]
    assert result.log_end_offset == end


def test_kafka_error_on_one_row_does_not_stop_the_others(table):
    """Each row gets its own verdict: rule 16 (gap), rule 12 (old epoch), rule 18 (plain batch
    inside a transaction), rule 8 (no sequence); the rows around them are appended."""
    end = seeded(table)  # producer 1 at epoch 0 up to sequence 2; producer 2 in a transaction
    table.append(1, 1, 0, 1, end)  # producer 1 moves to epoch 1
    end += 1
    result = table.append_many(
        **batch([1, 1, 1, 2, 3, 1], [1, 1, 0, 0, 0, 1], [1, 5, 3, 1, -1, 2], [1, 1, 1, 1, 1, 1], [10] * 6),
        log_end_offset=end,
    )
    assert rows(result) == [
        (NONE, False, end, end, 10),
        (OUT_OF_ORDER_SEQUENCE_NUMBER, False, -1, -1, -1),
        (INVALID_PRODUCER_EPOCH, False, -1, -1, -1),
        (INVALID_TXN_STATE, False, -1, -1, -1),
        (INVALID_RECORD, False, -1, -1, -1),
        (NONE, False, end + 1, end + 1, 10),
    ]
    assert result.log_end_offset == end + 2
    assert 3 not in table


def test_replication_and_coordinator_rows_skip_sequence_checks(table):
    """§2.3/§2.4: no duplicate detection and no sequence validation; §2.4: an older epoch is
    accepted from replication; rule 18 still applies to every origin."""
    end = seeded(table)
    replicated = table.append_many(
        **batch([1, 1, 1, 2], [0, 0, -3, 0], [0, 9, -1, 5], [3, 1, 1, 1]), log_end_offset=end, origin=Origin.REPLICATION
    )
    assert rows(replicated) == [
        (NONE, False, end, end + 2, -1),
        (NONE, False, end + 3, end + 3, -1),
        (NONE, False, end + 4, end + 4, -1),
        (INVALID_TXN_STATE, False, -1, -1, -1),
    ]
    assert table.entry(1).producer_epoch == -3
    coordinator = table.append_many(
        **batch([1, 1], [-3, -4], [0, 0], [1, 1]), log_end_offset=replicated.log_end_offset, origin=Origin.COORDINATOR
    )
    assert rows(coordinator) == [
        (NONE, False, end + 5, end + 5, -1),
        (INVALID_PRODUCER_EPOCH, False, -1, -1, -1),
    ]


def test_transactional_column_starts_a_transaction(table):
    """Rule 18: the first transactional row starts the transaction at its base offset; a
    later plain row of the same producer is INVALID_TXN_STATE."""
    result = table.append_many(
        **batch([5, 5, 5], [0, 0, 0], [0, 2, 3], [2, 1, 1], transactional=[True, True, False]), log_end_offset=10
    )
    assert rows(result) == [
        (NONE, False, 10, 11, -1),
        (NONE, False, 12, 12, -1),
        (INVALID_TXN_STATE, False, -1, -1, -1),
    ]
    assert table.entry(5).current_txn_first_offset == 10


def test_log_end_offset_may_jump_ahead(table):
    """Accepted rows start at log_end_offset, which may be past the map end offset; the table's
    map end offset follows the last accepted row (§3.2 step 6)."""
    seeded(table)
    result = table.append_many(**batch([1], [0], [3], [4]), log_end_offset=1000)
    assert rows(result) == [(NONE, False, 1000, 1003, -1)]
    assert result.log_end_offset == table.map_end_offset == 1004


# --- the result -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 6])
def test_result_arrays_have_the_documented_dtypes_and_lengths(table, n):
    result = table.append_many(**batch(np.arange(n), np.zeros(n), np.zeros(n), np.ones(n)), log_end_offset=3)
    assert isinstance(result, AppendManyResult)
    expected = {
        "error_codes": np.int16,
        "duplicate": np.bool_,
        "base_offsets": np.int64,
        "last_offsets": np.int64,
        "timestamps": np.int64,
    }
    for name, dtype in expected.items():
        array = getattr(result, name)
        assert isinstance(array, np.ndarray) and array.dtype == dtype and array.shape == (n,), name
    assert type(result.log_end_offset) is int
    assert result.log_end_offset == 3 + n


def test_empty_arrays_give_an_empty_result(table):
    """No rows: nothing happens, the log end offset comes back as given."""
    seeded(table)
    before = state(table)
    for empty in ([], np.array([], dtype=np.int64)):
        result = table.append_many(empty, empty, empty, empty, log_end_offset=50)
        assert all(len(getattr(result, name)) == 0 for name in result._fields[:5])
        assert result.error_codes.dtype == np.int16 and result.duplicate.dtype == np.bool_
        assert result.log_end_offset == 50
    assert state(table) == before


# --- accepted inputs ------------------------------------------------------------------------


def canonical_columns():
    """Six rows over three producers with a duplicate, a gap and a transaction."""
    return batch(
        [3, 3, 4, 3, 4, INT64_MAX],
        [0, 0, 2, 0, 2, 1],
        [0, 1, 7, 0, 9, INT32_MAX],
        [1, 2, 3, 1, 1, 2],
        [5, 6, 7, 8, 9, 10],
        [False, False, True, False, True, False],
    )


def reference_rows(impl, columns):
    table = impl()
    result = table.append_many(**columns, log_end_offset=20)
    return rows(result), result.log_end_offset, state(table)


def test_read_only_inputs_work(impl):
    """Read-only arrays (pandas' `writable` case) must be accepted as they are."""
    columns = canonical_columns()
    expected = reference_rows(impl, columns)
    for array in columns.values():
        array.flags.writeable = False
    table = impl()
    result = table.append_many(**columns, log_end_offset=20)
    assert (rows(result), result.log_end_offset, state(table)) == expected
    # Read-only arrays that also need a dtype conversion.
    converted = {
        name: (None if a is None else np.array(a, dtype=np.int64 if a.dtype != np.bool_ else np.bool_))
        for name, a in columns.items()
    }
    for array in converted.values():
        array.flags.writeable = False
    table = impl()
    result = table.append_many(**converted, log_end_offset=20)
    assert (rows(result), result.log_end_offset, state(table)) == expected


@pytest.mark.parametrize("layout", ["every other", "reversed", "column of 2-D"])
def test_strided_inputs_work(impl, layout):
    """Non-contiguous views give the same verdicts as contiguous copies."""
    columns = canonical_columns()
    expected = reference_rows(impl, columns)
    strided = {}
    for name, array in columns.items():
        if layout == "every other":
            wide = np.empty(2 * len(array), dtype=array.dtype)
            wide[0::2] = array
            wide[1::2] = array[::-1]  # junk the kernel must not read
            view = wide[0::2]
        elif layout == "reversed":
            view = array[::-1].copy()[::-1]
        else:
            grid = np.empty((len(array), 3), dtype=array.dtype)
            grid[:, 1] = array
            grid[:, 0] = grid[:, 2] = array[::-1]
            view = grid[:, 1]
        assert not view.flags.c_contiguous
        strided[name] = view
    table = impl()
    result = table.append_many(**strided, log_end_offset=20)
    assert (rows(result), result.log_end_offset, state(table)) == expected


@pytest.mark.parametrize(
    "dtypes",
    [
        {"producer_ids": np.int32, "base_sequences": np.int64},
        {"producer_ids": np.uint64, "producer_epochs": np.int64, "record_counts": np.uint8},
        {"producer_epochs": np.int8, "base_sequences": np.int16, "max_timestamps": np.int32},
        {"producer_ids": ">i8", "base_sequences": ">i4", "max_timestamps": np.uint32},
    ],
    ids=["int32 ids, int64 sequences", "uint64 ids, int64 epochs, uint8 counts", "narrow", "byte-swapped"],
)
def test_other_integer_dtypes_are_converted_when_values_fit(impl, dtypes):
    columns = batch(
        [3, 3, 4, 3, 4, 100],
        [0, 0, 2, 0, 2, 1],
        [0, 1, 7, 0, 9, 30000],
        [1, 2, 3, 1, 1, 2],
        [5, 6, 7, 8, 9, 10],
        [False, False, True, False, True, False],
    )
    expected = reference_rows(impl, columns)
    for name, dtype in dtypes.items():
        columns[name] = columns[name].astype(dtype)
    table = impl()
    result = table.append_many(**columns, log_end_offset=20)
    assert (rows(result), result.log_end_offset, state(table)) == expected


# --- rejected inputs: named, and nothing applied --------------------------------------------


def valid_columns(n=3):
    return batch([10 + i for i in range(n)], [0] * n, [0] * n, [1] * n, [1] * n)


@pytest.mark.parametrize(
    "name, array",
    [
        ("producer_ids", np.array([1, 2, -1], dtype=np.int64)),
        ("producer_ids", np.array([1, 2, 1 << 63], dtype=np.uint64)),
        ("producer_epochs", np.array([0, 0, INT16_MAX + 1], dtype=np.int32)),
        ("producer_epochs", np.array([0, 0, -(1 << 15) - 1], dtype=np.int64)),
        ("base_sequences", np.array([0, 0, INT32_MAX + 1], dtype=np.int64)),
        ("base_sequences", np.array([0, 0, -2], dtype=np.int32)),
        ("base_sequences", np.array([0, 0, 1 << 31], dtype=np.uint32)),
        ("record_counts", np.array([1, 1, 0], dtype=np.int32)),
        ("record_counts", np.array([1, 1, -1], dtype=np.int64)),
        ("record_counts", np.array([1, 1, (1 << 32) + 1], dtype=np.uint64)),  # would wrap to 1
        ("max_timestamps", np.array([0, 0, 1 << 63], dtype=np.uint64)),
    ],
)
def test_values_that_do_not_fit_are_a_value_error(impl, name, array):
    assert_column_rejected(impl, ValueError, name, array)


@pytest.mark.parametrize("name", COLUMNS)
@pytest.mark.parametrize(
    "bad",
    [
        np.array([1.0, 2.0, 3.0]),
        np.array([1, 2, 3], dtype=object),
        np.array([True, False, True]),
        np.array(["1", "2", "3"]),
        np.array([1 + 0j, 2, 3]),
    ],
    ids=["float", "object", "bool", "str", "complex"],
)
def test_non_integer_arrays_are_a_type_error(impl, name, bad):
    assert_column_rejected(impl, TypeError, name, bad)


@pytest.mark.parametrize("name", COLUMNS + ("transactional",))
@pytest.mark.parametrize("shape", ["2-D", "0-D"])
def test_arrays_must_be_one_dimensional(impl, name, shape):
    dtype = CANONICAL.get(name, np.bool_)
    column = np.ones((3, 1), dtype=dtype) if shape == "2-D" else np.array(1, dtype=dtype)
    assert_column_rejected(impl, ValueError, name, column)


@pytest.mark.parametrize("name", COLUMNS[1:] + ("transactional",))
@pytest.mark.parametrize("length", [2, 4])
def test_mismatched_lengths_are_a_value_error_naming_the_argument(impl, name, length):
    assert_column_rejected(impl, ValueError, name, np.ones(length, dtype=CANONICAL.get(name, np.bool_)))


@pytest.mark.parametrize("name", COLUMNS[:4])
def test_none_for_a_required_column_is_a_type_error(impl, name):
    assert_column_rejected(impl, TypeError, name, None)


@pytest.mark.parametrize(
    "bad", [np.array([0, 1, 0]), [0, 1, 0], np.array([0.0, 1.0, 0.0])], ids=["int array", "int list", "float"]
)
def test_transactional_must_be_a_bool_array(impl, bad):
    table = impl()
    end = seeded(table)
    assert_rejected(table, TypeError, "transactional", **valid_columns(), transactional=bad, log_end_offset=end)


def test_transactional_accepts_a_bool_list(impl):
    table = impl()
    result = table.append_many(**valid_columns(), transactional=[True, False, True], log_end_offset=0)
    assert [table.entry(pid).current_txn_first_offset for pid in (10, 11, 12)] == [0, None, 2]
    assert rows(result)[1] == (NONE, False, 1, 1, 1)


def test_log_end_offset_below_the_map_end_offset_is_a_value_error(impl):
    """Offsets never go backwards: the map end offset is where the log already is."""
    table = impl()
    end = seeded(table)
    assert_rejected(table, ValueError, "log_end_offset", **valid_columns(), log_end_offset=end - 1)
    assert_rejected(table, ValueError, "log_end_offset", **valid_columns(), log_end_offset=-1)
    assert_rejected(table, TypeError, "log_end_offset", **valid_columns(), log_end_offset=float(end))
    # The boundary itself is fine.
    assert table.append_many(**valid_columns(), log_end_offset=end).log_end_offset == end + 3


def test_log_end_offset_is_required(impl):
    table = impl()
    with pytest.raises(TypeError):
        table.append_many(**valid_columns())
    assert len(table) == 0


@pytest.mark.parametrize("origin, error", [(5, ValueError), ("CLIENT", TypeError), (True, TypeError)])
def test_bad_origin_is_rejected_before_anything_is_applied(impl, origin, error):
    table = impl()
    end = seeded(table)
    assert_rejected(table, error, "origin", **valid_columns(), log_end_offset=end, origin=origin)


def test_offsets_that_would_pass_the_largest_offset_are_a_value_error(impl):
    """The log end offset after every row must fit in int64 (checked before any row is applied)."""
    table = impl()
    end = seeded(table)
    columns = batch([10, 11, 12], [0, 0, 0], [0, 0, 0], [2, 2, 3])  # 7 records
    assert_rejected(table, ValueError, "log_end_offset", **columns, log_end_offset=INT64_MAX - 6)
    huge = batch([10, 11], [0, 0], [0, 0], [INT32_MAX, INT32_MAX])
    assert_rejected(table, ValueError, "log_end_offset", **huge, log_end_offset=INT64_MAX - 2 * INT32_MAX + 1)
    assert table.map_end_offset == end


def test_offsets_may_end_just_below_the_largest_offset(impl):
    """7 records from 2^63-8 end at 2^63-2: accepted. The map end offset is then last + 1
    (§3.2 step 6) = 2^63-1, and every later offset would go backwards."""
    table = impl()
    columns = batch([10, 11, 12], [0, 0, 0], [0, 0, 0], [2, 2, 3])
    result = table.append_many(**columns, log_end_offset=INT64_MAX - 7)
    assert result.last_offsets.tolist() == [INT64_MAX - 6, INT64_MAX - 4, INT64_MAX - 1]
    assert result.log_end_offset == INT64_MAX
    assert table.map_end_offset == INT64_MAX
    with pytest.raises(ValueError, match="base_offset"):
        table.append(13, 0, 0, 1, 0)
    assert 13 not in table
