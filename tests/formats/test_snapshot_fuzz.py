"""Snapshot readers against damaged input: every single-bit flip and every truncation of small
valid files in both formats (exhaustively), the same with the CRC recomputed (so the layout
and value checks are reached, not only the CRC), every value of every header byte, random
bytes, and hypothesis over larger files.

Each input must give a ``CorruptSnapshotError`` or a table (never another exception, a crash
or a hang), and the two twins must agree: the same message, or the same state. Every reader
is run: the public ``decode_snapshot`` (format detection) and each codec's Kafka and full
readers on any bytes.

Spec references: §4.4 (Kafka's reader: version, layout, CRC over [6, end)), §4.7 (vector),
§8.5 (CRC-32C detects every single-bit error).
"""

from __future__ import annotations

import logging
import struct

import crc32c as pypi_crc32c
import pytest
from conftest import TWINS
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from snapshot_builders import apply, full2_file, full_file, kafka_file, operations, state, windows
from snapshot_vectors import TWO_ENTRY_KAFKA_VECTOR

from dedup._types import INT64_MAX
from dedup.errors import CorruptSnapshotError
from dedup.snapshot import decode_snapshot, encode_snapshot

_state = pytest.importorskip("dedup._state")


def outcome(read, data):
    try:
        table = read(data)
    except CorruptSnapshotError as error:
        return "corrupt", str(error)
    return "table", state(table)


def readers(twin):
    cls, codec = twin.ProducerStateTable, twin.snapshot
    return (
        lambda data: decode_snapshot(data, table_class=cls),
        lambda data: codec.decode_kafka(data, 5, 0, cls),
        lambda data: codec.decode_full(data, cls),
    )


def outcomes(data):
    """What each reader makes of ``data``, the same in both twins (asserted)."""
    results = {name: tuple(outcome(read, data) for read in readers(twin)) for name, twin in TWINS.items()}
    assert results["compiled"] == results["reference"], data.hex()
    return results["compiled"]


def fix_crc(data):
    """``data`` with its CRC recomputed where its format (from the original's first bytes) keeps it."""
    data = bytearray(data)
    if data[:4] == b"DDPS":
        if len(data) >= 4:
            struct.pack_into(">I", data, len(data) - 4, pypi_crc32c.crc32c(bytes(data[:-4])))
    elif len(data) >= 6:
        struct.pack_into(">I", data, 2, pypi_crc32c.crc32c(bytes(data[6:])))
    return bytes(data)


def small_tables():
    """Small tables of window 3: a wrapped ring, a transaction, a marker-only producer; and one
    whose older batches need every kind of escaped value (the full format's version 2)."""
    files = {}
    for name, twin in TWINS.items():
        table = twin.ProducerStateTable(3)
        end = 0
        for sequence in range(4):
            end = table.append(1000, 5, 2 * sequence, 2, end, max_timestamp=100 + sequence).last_offset + 1
        end = table.append(7, 0, 0, 1, end, max_timestamp=200, transactional=True).last_offset + 1
        table.append_marker(9, 2, 4, end, commit=True, timestamp=300)
        escaping = twin.ProducerStateTable(3)
        escaping.append(1, 0, 0, 1, 0, max_timestamp=-5)
        escaping.append(1, 0, 1, 70_000, 1 << 33, max_timestamp=1 << 40)
        escaping.append(1, 0, 70_001, 1, (1 << 33) + 70_000, max_timestamp=(1 << 40) + 1)
        files[name] = {kind: encode_snapshot(table, kind) for kind in ("full", "kafka")}
        files[name]["full-escapes"] = encode_snapshot(escaping, "full")
        files[name]["full-v1"] = full_file(
            [
                (
                    producer_id,
                    entry.producer_epoch,
                    entry.coordinator_epoch,
                    entry.last_timestamp,
                    -1 if entry.current_txn_first_offset is None else entry.current_txn_first_offset,
                    [
                        (batch.last_sequence, batch.offset_delta, batch.last_offset, batch.timestamp)
                        for batch in entry.batches
                    ],
                )
                for producer_id in table
                for entry in (table.entry(producer_id),)
            ],
            window=3,
            map_end_offset=table.map_end_offset,
        )
    assert files["compiled"] == files["reference"]
    assert struct.unpack_from(">i", files["compiled"]["full-escapes"], len(files["compiled"]["full-escapes"]) - 8) == (
        4,
    )
    return files["compiled"]


SMALL = small_tables()
VALID = {
    "kafka-vector": TWO_ENTRY_KAFKA_VECTOR,
    "kafka-table": SMALL["kafka"],
    "full-table": SMALL["full"],
    "full-escapes": SMALL["full-escapes"],
    "full-v1-table": SMALL["full-v1"],
}


def header_positions(name, data):
    """The bytes that say how long things are or how to read them: headers, the full format's
    batch counts, version 2's escape count."""
    if name.startswith("kafka"):
        return list(range(10))
    positions = list(range(20))
    if name.startswith("full-v1"):
        position = 20
        while position < len(data) - 4:
            positions.append(position + 30)
            position += 31 + 24 * data[position + 30]
        return positions
    size = 55 + 12 * (3 - 1)
    positions += [20 + size * n + 30 for n in range(struct.unpack_from(">i", data, 16)[0])]
    return positions + list(range(len(data) - 8, len(data) - 4))


@pytest.fixture(autouse=True)
def _quiet_replication_warnings():
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize("name", list(VALID))
def test_the_small_files_are_valid(name):
    assert outcomes(VALID[name])[0][0] == "table"


@pytest.mark.parametrize("name", list(VALID))
def test_every_single_bit_flip_is_corrupt(name):
    """CRC-32C catches every single-bit error; a flip in a length field is caught before it."""
    data = VALID[name]
    for bit in range(8 * len(data)):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        results = outcomes(bytes(flipped))
        assert all(kind == "corrupt" for kind, _ in results), (bit, results)


@pytest.mark.parametrize("name", list(VALID))
def test_every_single_bit_flip_with_the_crc_recomputed(name):
    """With the CRC made right again, a flip reaches the layout and value checks: the result is
    a table (a value the reader accepts) or a CorruptSnapshotError, the same in both twins."""
    data = VALID[name]
    seen = set()
    for bit in range(8 * len(data)):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        results = outcomes(fix_crc(flipped))
        seen.add(results[0][0])
    assert seen == {"table", "corrupt"}


@pytest.mark.parametrize("name", list(VALID))
def test_every_truncation_and_extension_is_corrupt(name):
    data = VALID[name]
    for size in range(len(data)):
        assert all(kind == "corrupt" for kind, _ in outcomes(data[:size])), size
    for tail in (b"\x00", b"\xff" * 3, data):
        assert all(kind == "corrupt" for kind, _ in outcomes(data + tail))
        assert all(kind == "corrupt" for kind, _ in outcomes(fix_crc(data + tail)))


@pytest.mark.parametrize("name", list(VALID))
def test_every_value_of_every_header_byte(name):
    """Version, magic, window, map end offset and count take every byte value, the CRC made
    right, as do every entry's batch count byte of the full format and version 2's escape count."""
    data = VALID[name]
    positions = header_positions(name, data)
    for position in positions:
        for value in range(256):
            changed = bytearray(data)
            changed[position] = value
            outcomes(fix_crc(changed))


def test_unaligned_and_writable_buffers_read_the_same():
    for data in VALID.values():
        expected = outcomes(data)
        shifted = bytearray(b"x" + data)
        assert outcomes(memoryview(shifted)[1:]) == expected
        assert outcomes(bytearray(data)) == expected


@given(data=st.binary(max_size=600))
@example(data=b"")
@example(data=b"DDPS")
@example(data=b"\x00\x01")
def test_random_bytes(data):
    outcomes(data)


@given(body=st.binary(max_size=400), window=st.integers(-2, 260), count=st.integers(-2, 12), crc_right=st.booleans())
def test_random_bytes_under_valid_looking_headers(body, window, count, crc_right):
    kafka = struct.pack(">hIi", 1, 0, count) + body
    full = b"DDPS" + struct.pack(">hhqi", 1, window, 1000, count) + body + bytes(4)
    full2 = b"DDPS" + struct.pack(">hhqi", 2, window, 1000, count) + body + struct.pack(">iI", count, 0)
    for data in (kafka, full, full2):
        outcomes(fix_crc(data) if crc_right else data)


producer_ids = st.sampled_from([-1, 0, 5, 5, 6, INT64_MAX])
txns = st.sampled_from([-2, -1, -1, -1, 0, 50, 99, 100, 200])
batches = st.tuples(
    st.sampled_from([-1, 0, 7, 70_000, 2**31 - 1]),  # last_sequence
    st.sampled_from([-1, 0, 0, 3, 70_000]),  # offset_delta
    st.sampled_from([-1, 0, 2, 50, 99, 100, 2**40]),  # last_offset
    st.integers(-(2**63), 2**63 - 1),  # timestamp
)
full_entries = st.tuples(
    producer_ids,
    st.integers(-(2**15), 2**15 - 1),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1),
    txns,
    st.lists(batches, max_size=6),
)
kafka_entries = st.tuples(
    producer_ids,
    st.integers(-(2**15), 2**15 - 1),
    st.sampled_from([-1, 0, 5]),
    st.sampled_from([-2, -1, 0, 2, 99]),
    st.sampled_from([-1, 0, 3]),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**31), 2**31 - 1),
    txns,
)


@given(entries=st.lists(full_entries, max_size=5), window=st.sampled_from([1, 3, 5]), map_end=st.sampled_from([0, 100]))
def test_structured_full_files_with_any_values(entries, window, map_end):
    outcomes(full_file(entries, window=window, map_end_offset=map_end))


@given(
    entries=st.lists(full_entries, max_size=5),
    window=st.sampled_from([1, 3, 5]),
    map_end=st.sampled_from([0, 100]),
    drop=st.integers(0, 3),
    extra=st.sampled_from([None, [], [0], [5, -1]]),
)
def test_structured_full_version_2_files_with_any_values(entries, window, map_end, drop, extra):
    """Version 2 from any values: escaped or not, batch counts past the window, the escape list
    cut short by ``drop`` values or replaced by ``extra``."""
    data = full2_file(entries, window=window, map_end_offset=map_end)
    outcomes(data)
    (escapes,) = struct.unpack_from(">i", data, len(data) - 8)
    if drop and escapes >= drop:  # a slot escapes past the end of the list
        values = list(struct.unpack_from(f">{escapes}q", data, len(data) - 8 - 8 * escapes))
        outcomes(full2_file(entries, window=window, map_end_offset=map_end, escaped=values[: escapes - drop]))
    if extra is not None:
        outcomes(full2_file(entries, window=window, map_end_offset=map_end, escaped=extra))


@given(entries=st.lists(kafka_entries, max_size=6))
def test_structured_kafka_files_with_any_values(entries):
    outcomes(kafka_file(entries))


mutations = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)), min_size=1, max_size=4)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    window=windows,
    ops=operations,
    kind=st.sampled_from(["full", "kafka"]),
    changes=mutations,
    crc_right=st.booleans(),
    cut=st.one_of(st.none(), st.integers(0, 1 << 20)),
)
def test_larger_snapshots_damaged_at_random(window, ops, kind, changes, crc_right, cut):
    table = _state.ProducerStateTable(window)
    apply(table, ops)
    original = encode_snapshot(table, kind)
    data = bytearray(original)
    for position, xor in changes:
        data[position % len(data)] ^= xor
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    data = bytes(data)
    results = outcomes(fix_crc(data) if crc_right else data)
    if not crc_right and cut is None and data != original:  # (two changes may cancel out)
        assert results[0][0] == "corrupt"  # the CRC or a length check sees it (a CRC miss: 2^-32)
