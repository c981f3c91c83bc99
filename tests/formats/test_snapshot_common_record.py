"""The compiled reader of the full format (version 2) takes a short path for the common record
(full2_batches_common in _snapshot.pyx: no escaped field, every value valid, a narrow entry)
and its general loop for anything else; at window 5 the writer does the same (record_batches_w5),
and both handle the four older slots in vector registers (snapshot_w5.h) where the CPU can.
Every test runs with those vectors on (where the CPU has them) and off.

The files below sit on each side of every condition of the short path, field by field, written
raw (not through a table), and the compiled reader must do exactly what the pure-Python twin
does: the same table, or the same error. Tables at window 5 with every head and count, and
fields on each side of their escapes, must write the twin's bytes.

The conditions, for a record's newest batch N and each older batch B (slot fields as stored):
N's offset delta at most 0xFFFF, N's last offset at least its delta and below the map end
offset; B's offset gap at most 2^31 (the table's gap -gap in an int32; 0xFFFFFFFF escapes),
gap + B's offset delta at most N's last offset (B's first offset >= 0), and no escape value in
the timestamp gap (-2^31), sequence gap (0xFFFF) or offset delta (0xFFFF).
"""

from __future__ import annotations

import struct

import crc32c as pypi_crc32c
import pytest
from conftest import vectors_and_scalar
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from snapshot_builders import apply, state

from dedup import reference
from dedup._types import INT32_MAX, INT64_MAX, Origin
from dedup.errors import CorruptSnapshotError
from dedup.reference import snapshot as twin_codec

_state = pytest.importorskip("dedup._state")
from dedup import _snapshot as compiled_codec  # noqa: E402
from dedup import _testing  # noqa: E402

window5_vectors = vectors_and_scalar(_testing.use_window5_vectors)


OFFSET_GAPS = [0, 1, 7, (1 << 31) - 1, 1 << 31, (1 << 31) + 1, 0xFFFFFFFE, 0xFFFFFFFF]
TIMESTAMP_GAPS = [0, 1, 0x7FFFFFFF, 0x80000000, 0x80000001, 0xFFFFFFFF]  # as stored: uint32 of an int32
SEQUENCE_GAPS = [0, 1, 0xFFFE, 0xFFFF]
OFFSET_DELTAS = [0, 1, 0xFFFE, 0xFFFF]
NEWEST_DELTAS = [0, 1, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF]  # as stored: uint32 of an int32
MAP_END_OFFSETS = [1 << 31, (1 << 32) + 5, INT64_MAX]


def raw_file(records, *, window, map_end_offset, escaped, escapes=None):
    """A version 2 file from raw records: (producer_id, txn, count, newest, slots), newest =
    (sequence, offset delta as uint32, last offset, timestamp), slots = [(offset gap, timestamp
    gap, sequence gap, offset delta)] as stored, padded with zeros to window - 1."""
    body = struct.pack(">4shhqi", b"DDPS", 2, window, map_end_offset, len(records))
    for producer_id, txn, count, newest, slots in records:
        sequence, delta, last_offset, timestamp = newest
        body += struct.pack(">qhiqqB", producer_id, 3, 4, 1_000, txn, count)
        body += struct.pack(">iIqq", sequence, delta, last_offset, timestamp)
        body += b"".join(struct.pack(">IIHH", *slot) for slot in slots).ljust(12 * (window - 1), b"\0")
    body += b"".join(struct.pack(">q", value) for value in escaped)
    body += struct.pack(">i", len(escaped) if escapes is None else escapes)
    return body + struct.pack(">I", pypi_crc32c.crc32c(body))


def outcome(codec, data):
    try:
        table = codec.decode_full(data)
    except CorruptSnapshotError as error:
        return "corrupt", str(error)
    return "table", state(table)


def escapes_needed(records):
    return sum(
        (gap == 0xFFFFFFFF) + (timestamp_gap == 0x80000000) + (sequence_gap == 0xFFFF) + (delta == 0xFFFF)
        for *_, count, _, slots in records
        for gap, timestamp_gap, sequence_gap, delta in slots[: max(count - 1, 0)]
    )


def assert_same(data):
    compiled, twin = outcome(compiled_codec, data), outcome(twin_codec, data)
    assert compiled == twin
    if compiled[0] == "table":
        # And back: the compiled table writes what the twin's writes.
        assert compiled_codec.encode_full(compiled_codec.decode_full(data)) == twin_codec.encode_full(
            twin_codec.decode_full(data)
        )
    return compiled


@pytest.mark.parametrize("map_end_offset", MAP_END_OFFSETS)
@pytest.mark.parametrize("offset_gap", OFFSET_GAPS)
@pytest.mark.parametrize("delta", OFFSET_DELTAS)
def test_offset_gap_and_delta_against_the_newest_offset(map_end_offset, offset_gap, delta):
    """B's first offset (newest - gap - delta) at -1, 0 and 1, for every gap and delta."""
    for newest_offset in {offset_gap + delta - 1, offset_gap + delta, offset_gap + delta + 1, map_end_offset - 1}:
        if not 0 <= newest_offset < 1 << 63:
            continue
        records = [(9, -1, 2, (5, 0, newest_offset, 50), [(offset_gap, 3, 1, delta)])]
        escaped = [newest_offset - offset_gap - 1] * escapes_needed(records)  # offset escape: a valid offset
        assert_same(raw_file(records, window=2, map_end_offset=map_end_offset, escaped=escaped))


@pytest.mark.parametrize("newest_delta", NEWEST_DELTAS)
@pytest.mark.parametrize("count", [1, 2, 5])
def test_the_newest_batch(newest_delta, count):
    for newest_offset in (0, 1, 0xFFFE, 0xFFFF, 0x10000, 99, 100):
        slots = [(0, 0, 0, 0)] * (count - 1)
        records = [(1, -1, count, (7, newest_delta, newest_offset, -5), slots)]
        assert_same(raw_file(records, window=5, map_end_offset=100, escaped=[]))


@pytest.mark.parametrize("timestamp_gap", TIMESTAMP_GAPS)
@pytest.mark.parametrize("sequence_gap", SEQUENCE_GAPS)
@pytest.mark.parametrize("newest_timestamp", [0, -(1 << 63), INT64_MAX])
def test_timestamp_and_sequence_gaps(timestamp_gap, sequence_gap, newest_timestamp):
    records = [(2, -1, 3, (0, 0, 50, newest_timestamp), [(2, timestamp_gap, sequence_gap, 0), (1, 0, 0, 0)])]
    escaped = [12_345, -(1 << 63), INT64_MAX][: escapes_needed(records)]
    assert_same(raw_file(records, window=3, map_end_offset=1 << 40, escaped=escaped))


def test_a_bad_slot_after_a_good_record_and_before_a_bad_one():
    """The short path writes slots before it knows; the general loop then reports the first
    problem in file order, here batch 1 of entry 1, not entry 2's."""
    good = (1, -1, 3, (3, 0, 10, 0), [(2, 0, 2, 0), (1, 0, 1, 0)])
    bad = (2, -1, 3, (3, 0, 10, 0), [(2, 0, 2, 0), (11, 0, 1, 0)])  # first offset -1
    worse = (3, 5000, 3, (3, 0, 10, 0), [(2, 0, 2, 0), (1, 0, 1, 0)])  # bad transaction
    kind, message = assert_same(raw_file([good, bad, worse], window=3, map_end_offset=100, escaped=[]))
    assert kind == "corrupt" and "entry 1 (producer id 2), batch 1" in message


slot_fields = st.tuples(
    st.sampled_from(OFFSET_GAPS),
    st.sampled_from(TIMESTAMP_GAPS),
    st.sampled_from(SEQUENCE_GAPS),
    st.sampled_from(OFFSET_DELTAS),
)
common_slot = st.tuples(
    st.integers(0, 1000), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFE), st.integers(0, 0xFFFE)
)


@st.composite
def files(draw):
    window = draw(st.sampled_from([1, 2, 3, 5, 7]))
    map_end_offset = draw(st.sampled_from([2000, *MAP_END_OFFSETS]))
    records = []
    for producer_id in range(draw(st.integers(1, 4))):
        count = draw(st.integers(0, window))
        newest = (
            draw(st.integers(-(1 << 31), (1 << 31) - 1)),
            draw(st.one_of(st.integers(0, 3), st.sampled_from(NEWEST_DELTAS))),
            draw(
                st.one_of(
                    st.integers(1000, 1999), st.sampled_from([0, (1 << 31) + 1, map_end_offset - 1, map_end_offset])
                )
            ),
            draw(st.sampled_from([0, 1, -(1 << 63), INT64_MAX])),
        )
        slots = draw(
            st.lists(st.one_of(common_slot, common_slot, slot_fields), min_size=window - 1, max_size=window - 1)
        )
        records.append((producer_id, -1, count, newest, slots))
    needed = escapes_needed(records)
    escaped = draw(st.lists(st.sampled_from([0, 1, 999, -1, 1 << 40, INT64_MAX]), min_size=needed, max_size=needed))
    return raw_file(records, window=window, map_end_offset=map_end_offset, escaped=escaped)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=files())
@example(data=raw_file([(0, -1, 2, (0, 0, 5, 0), [(5, 0, 0, 0)])], window=2, map_end_offset=6, escaped=[]))
def test_random_records_near_every_condition(data):
    assert_same(data)


# --- the writer at window 5: every head and count, fields on each side of their escapes -----


def test_window5_every_head_and_count_writes_as_the_twin():
    """Producer n has had n batches: counts 1 to 5 at head 0, then heads 1, 2, 3, 4, 0, ..."""
    ops = [
        ("append", producer_id, 0, sequence, 1 + sequence % 3, sequence % 2, 1_000 + sequence, Origin.CLIENT, False)
        for producer_id in range(1, 13)
        for sequence in range(producer_id)
    ]
    compiled, twin = _state.ProducerStateTable(5), reference.ProducerStateTable(5)
    assert apply(compiled, ops) == apply(twin, ops)
    data = twin_codec.encode_full(twin)
    assert compiled_codec.encode_full(compiled) == data
    assert state(compiled_codec.decode_full(data)) == state(twin)


GAPS = [0, 1, 5, (1 << 31) - 2, (1 << 32) - 3, (1 << 32) - 1, 1 << 32]
STAMPS = [0, 1, (1 << 31) - 1, 1 << 31, -(1 << 31), -(1 << 31) - 1, 1 << 40]
SEQUENCES = [0, 1, 0xFFFE, 0xFFFF, 0x10000, INT32_MAX]
RECORD_COUNTS = [1, 2, 0xFFFF, 0x10000, 0x10001]
appends = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.sampled_from(SEQUENCES),
        st.sampled_from(RECORD_COUNTS),
        st.sampled_from(GAPS),
        st.sampled_from(STAMPS),
    ),
    min_size=1,
    max_size=40,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(appends=appends)
@example(appends=[(0, 0, 1, 0, 0), (0, 0xFFFF, 0xFFFF, (1 << 32) - 3, (1 << 31) - 1)] * 3)
@example(appends=[(0, 0, 1, 0, 1 << 31), (0, 1, 1, 0, 0)])  # timestamp gap -2^31: escaped
@example(appends=[(0, 0, 1, 0, 1 << 31), (0, 1, 1, 0, 1)])  # -2^31 + 1: not
@example(appends=[(0, 0, 1, 0, 0), (0, 1, 1, 0, (1 << 31) - 1)])  # 2^31 - 1: not
@example(appends=[(0, 0, 1, 0, 0), (0, 1, 1, 0, 1 << 31)])  # 2^31: escaped
# A narrow entry whose oldest and newest last offsets are 2^32 - 1 apart (escaped), 2^32 - 2 (not):
# the middle batch moved the base, so both gaps from it fit an int32.
@example(appends=[(0, 0, 1, 0, 0), (0, 1, 1, (1 << 31) - 1, 0), (0, 2, 1, (1 << 31) - 2, 0)])
@example(appends=[(0, 0, 1, 0, 0), (0, 1, 1, (1 << 31) - 1, 0), (0, 2, 1, (1 << 31) - 3, 0)])
def test_window5_tables_write_as_the_twins(appends):
    """Followers' batches (no sequence check) with offset gaps, timestamp gaps, sequence gaps
    and offset deltas at, under and over their escapes, and wide entries."""
    ops = [
        ("append", producer_id, 0, sequence, count, gap, stamp, Origin.REPLICATION, False)
        for producer_id, sequence, count, gap, stamp in appends
    ]
    compiled, twin = _state.ProducerStateTable(5), reference.ProducerStateTable(5)
    assert apply(compiled, ops) == apply(twin, ops)
    data = twin_codec.encode_full(twin)
    assert compiled_codec.encode_full(compiled) == data
    assert state(compiled_codec.decode_full(data)) == state(twin)


def test_window5_vectors_engage_where_the_cpu_has_them():
    """A table layout change (the ring moved) or a failed CPU check would silently leave the
    snapshot codec on its scalar loops: correct, 8 ms slower at 1,000,000 producers."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((set(line.split(":")[1].split()) for line in cpuinfo if line.startswith("flags")), set())
    except OSError:
        pass
    expected = {"avx512f", "avx512bw", "avx512vl", "avx512vbmi"} <= flags
    vectors = _testing.use_window5_vectors(True)
    if expected:
        assert vectors
    assert _testing.window5_vectors_apply(_state.ProducerStateTable(5)) == vectors
    assert not _testing.window5_vectors_apply(_state.ProducerStateTable(4))
    _testing.use_window5_vectors(False)
    assert not _testing.window5_vectors_apply(_state.ProducerStateTable(5))
