"""What the snapshot readers and functions refuse, both twins alike: every check of Kafka's
reader and the full format's (spec §4.4: version, layout, CRC over [6, end), values), in the
order they come, the edges they accept, format detection, and the public API's arguments.

Test files are built with :mod:`struct` and the PyPI ``crc32c`` package (tests/snapshot_builders.py),
independently of both codecs.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import TWINS
from snapshot_builders import both_reject, full2_file, full_entry, full_file, kafka_file, state
from snapshot_vectors import EMPTY_KAFKA_VECTOR, TWO_ENTRIES, TWO_ENTRY_KAFKA_VECTOR

from dedup import reference
from dedup._types import INT16_MAX, INT16_MIN, INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, BatchMetadata
from dedup.errors import CorruptSnapshotError
from dedup.snapshot import decode_snapshot, encode_snapshot, snapshot_format

_state = pytest.importorskip("dedup._state")

Compiled = _state.ProducerStateTable
Twin = reference.ProducerStateTable


# --- readers reject, both twins alike (§4.4) ------------------------------------------------

GOOD_KAFKA_ENTRY = (5, 0, 3, 10, 1, 7, -1, -1)


def rejected(cases, width):
    """(data, the start of the expected message) cases as parameters, named by the message."""
    return pytest.mark.parametrize(
        "data, expected", cases, ids=lambda value: value[:width] if isinstance(value, str) else None
    )


KAFKA_REJECTED = [
    (kafka_file([], version=2), "Kafka snapshot: unknown file version: expected 1, found 2"),
    (kafka_file([], version=-1)[:3], "Kafka snapshot: unknown file version: expected 1, found -1"),
    (b"", "Kafka snapshot: too short: expected at least 10 bytes (version, crc, count), found 0"),
    (b"\x00", "Kafka snapshot: too short: expected at least 10 bytes (version, crc, count), found 1"),
    (
        EMPTY_KAFKA_VECTOR[:9],
        "Kafka snapshot: too short: expected at least 10 bytes (version, crc, count), found 9",
    ),
    (kafka_file([], count=-1), "Kafka snapshot: negative producer count: expected >= 0, found -1"),
    (
        kafka_file([GOOD_KAFKA_ENTRY], count=2),
        "Kafka snapshot: short file: 2 producers need 10 + 46 x 2 = 102 bytes, found 56",
    ),
    (
        kafka_file([], count=INT32_MAX),
        f"Kafka snapshot: short file: {INT32_MAX} producers need 10 + 46 x {INT32_MAX} = "
        f"{10 + 46 * INT32_MAX} bytes, found 10",
    ),
    (
        kafka_file([GOOD_KAFKA_ENTRY], trailing=b"\x00"),
        "Kafka snapshot: 1 trailing bytes: 1 producers need 10 + 46 x 1 = 56 bytes, found 57",
    ),
    (
        kafka_file([GOOD_KAFKA_ENTRY], crc=0x12345678),
        "Kafka snapshot: CRC-32C of bytes [6, 56) does not match: stored crc 0x12345678, computed crc 0x",
    ),
    (
        kafka_file([GOOD_KAFKA_ENTRY, (-5, 0, 0, 0, 0, 0, 0, 0)]),
        "Kafka snapshot: entry 1: producer id -5 is negative: expected >= 0",
    ),
    (
        kafka_file([(5, 0, 3, 10, -1, 7, -1, -1)]),
        "Kafka snapshot: entry 0 (producer id 5): offset delta -1 is negative: expected >= 0",
    ),
]


@rejected(KAFKA_REJECTED, 40)
def test_kafka_reader_rejects(data, expected):
    assert both_reject("decode_kafka", data).startswith(expected)


FULL_REJECTED = [
    (b"", "full snapshot: bad magic: expected b'DDPS', found b''"),
    (b"DDP", "full snapshot: bad magic: expected b'DDPS', found b'DDP'"),
    (full_file([], magic=b"DDPT"), "full snapshot: bad magic: expected b'DDPS', found b'DDPT'"),
    (b"DDPS\x00", "full snapshot: too short: expected at least 24 bytes (header and crc), found 5"),
    (full_file([], version=3), "full snapshot: unknown version: expected 1 or 2, found 3"),
    (full_file([], version=0), "full snapshot: unknown version: expected 1 or 2, found 0"),
    (full_file([])[:23], "full snapshot: too short: expected at least 24 bytes (header and crc), found 23"),
    (full_file([], window=0), "full snapshot: window out of range: expected 1..255, found 0"),
    (full_file([], window=256), "full snapshot: window out of range: expected 1..255, found 256"),
    (full_file([], window=-3), "full snapshot: window out of range: expected 1..255, found -3"),
    (full_file([], map_end_offset=-1), "full snapshot: negative map end offset: expected >= 0, found -1"),
    (full_file([], count=-2), "full snapshot: negative producer count: expected >= 0, found -2"),
    (
        full_file([full_entry()], count=2),
        "full snapshot: short file: entry 1 of 2 needs 31 bytes at byte 75, found 0 before the crc",
    ),
    (
        full_file([full_entry()], count=INT32_MAX),
        f"full snapshot: short file: entry 1 of {INT32_MAX} needs 31 bytes at byte 75, found 0 before the crc",
    ),
    (
        full_file([full_entry(batches=[(0, 0, 1, 0)] * 6)]),
        "full snapshot: entry 0: batch count 6 exceeds the window: expected 0..5",
    ),
    (
        full_file([full_entry(batches=[(0, 0, 1, 0)] * 2, batch_count=3)]),
        "full snapshot: short file: the 3 batches of entry 0 of 1 need 72 bytes at byte 51, "
        "found 48 before the crc",
    ),
    (
        full_file([full_entry()], trailing=b"\x00" * 5),
        "full snapshot: 5 trailing bytes: 1 producers end at byte 75, expected a 79-byte file, found 84 bytes",
    ),
    (
        full_file([full_entry()], crc=1),
        "full snapshot: CRC-32C of bytes [0, 75) does not match: stored crc 0x00000001, computed crc 0x",
    ),
    (
        full_file([full_entry(), full_entry(pid=-1)]),
        "full snapshot: entry 1: producer id -1 is negative: expected >= 0",
    ),
    (
        full_file([full_entry(txn=-2)]),
        "full snapshot: entry 0 (producer id 5): current txn first offset -2: "
        "expected -1 (none) or an offset in [0, 100)",
    ),
    (
        full_file([full_entry(txn=100)]),
        "full snapshot: entry 0 (producer id 5): current txn first offset 100: "
        "expected -1 (none) or an offset in [0, 100)",
    ),
    (
        full_file([full_entry(), full_entry(pid=6), full_entry()]),
        "full snapshot: entry 2: producer id 5 repeats entry 0: expected unique producer ids",
    ),
    (
        full_file([full_entry(batches=[(0, 0, 1, 0), (0, -1, 1, 0)])]),
        "full snapshot: entry 0 (producer id 5), batch 1: offset delta -1 is negative: expected >= 0",
    ),
    (
        full_file([full_entry(batches=[(0, 3, 2, 0)])]),
        "full snapshot: entry 0 (producer id 5), batch 0: last offset 2 is below its offset delta 3: "
        "expected last offset >= offset delta (a first offset >= 0)",
    ),
    (
        full_file([full_entry(batches=[(0, 0, 100, 0)])]),
        "full snapshot: entry 0 (producer id 5), batch 0: last offset 100 is not below the map end offset: "
        "expected < 100",
    ),
]


@rejected(FULL_REJECTED, 50)
def test_full_reader_rejects(data, expected):
    assert both_reject("decode_full", data).startswith(expected)


FULL2_REJECTED = [
    (
        full2_file([])[:27],
        "full snapshot: too short: expected at least 28 bytes (header, escape count and crc), found 27",
    ),
    (full2_file([], window=0), "full snapshot: window out of range: expected 1..255, found 0"),
    (full2_file([], count=-1), "full snapshot: negative producer count: expected >= 0, found -1"),
    (full2_file([], escapes=-1), "full snapshot: negative escaped value count: expected >= 0, found -1"),
    (
        full2_file([full_entry()], count=2),
        "full snapshot: short file: 2 producers of 103 bytes (window 5) and 0 escaped values need "
        "20 + 103 x 2 + 8 x 0 + 8 = 234 bytes, found 131",
    ),
    (
        full2_file([full_entry()], trailing=b"xy"),
        "full snapshot: 2 trailing bytes: 1 producers of 103 bytes (window 5) and 0 escaped values need "
        "20 + 103 x 1 + 8 x 0 + 8 = 131 bytes, found 133",
    ),
    (
        full2_file([full_entry()], escaped=[0]),
        "full snapshot: 1 escaped values unused: the records use 0 of the 1 the file holds",
    ),
    (
        full2_file([], crc=0),
        "full snapshot: CRC-32C of bytes [0, 24) does not match: stored crc 0x00000000, computed crc ",
    ),
    (
        full2_file([full_entry(batches=[(3, 1, 10, 7)] * 2, count=9)]),
        "full snapshot: entry 0: batch count 9 exceeds the window: expected 0..5",
    ),
    (full2_file([full_entry(pid=-1)]), "full snapshot: entry 0: producer id -1 is negative: expected >= 0"),
    (
        full2_file([full_entry(txn=100)]),
        "full snapshot: entry 0 (producer id 5): current txn first offset 100: expected -1 (none) or an offset "
        "in [0, 100)",
    ),
    (
        full2_file([full_entry(), full_entry()]),
        "full snapshot: entry 1: producer id 5 repeats entry 0: expected unique producer ids",
    ),
    (
        full2_file([full_entry(batches=[(1, 0, 1 << 40, 7), (3, 1, 10, 7)])], escaped=[]),
        "full snapshot: entry 0 (producer id 5), batch 0: escaped value 0 is missing: the file holds 0",
    ),
    (
        full2_file([full_entry(batches=[(1, 0, 4, 7), (3, -1, 10, 7)])]),
        "full snapshot: entry 0 (producer id 5), batch 1: offset delta -1 is negative: expected >= 0",
    ),
    (
        full2_file([full_entry(batches=[(1, 70_000, 4, 7), (3, 1, 10, 7)])]),
        "full snapshot: entry 0 (producer id 5), batch 0: last offset 4 is below its offset delta 70000",
    ),
    (
        full2_file([full_entry(batches=[(1, 0, 4, 7), (3, 1, 100, 7)])]),
        "full snapshot: entry 0 (producer id 5), batch 1: last offset 100 is not below the map end offset: "
        "expected < 100",
    ),
]


@rejected(FULL2_REJECTED, 50)
def test_full_version_2_reader_rejects(data, expected):
    assert both_reject("decode_full", data).startswith(expected)


def test_full_reader_accepts_the_edges():
    entries = [
        (0, INT16_MIN, INT32_MIN, INT64_MIN, 0, [(-1, 0, 0, INT64_MAX)] * 255),
        (INT64_MAX, INT16_MAX, INT32_MAX, INT64_MAX, 99, []),
        (1, 0, 0, 0, -1, [(INT32_MAX, INT32_MAX, INT32_MAX, INT64_MIN), (INT32_MIN, 0, INT64_MAX - 1, INT64_MAX)]),
    ]
    for data in (
        full_file(entries, window=255, map_end_offset=INT64_MAX),
        full2_file(entries, window=255, map_end_offset=INT64_MAX),
    ):
        for cls in (Compiled, Twin):
            table = decode_snapshot(data, table_class=cls)
            assert table.window == 255 and len(table.entry(0).batches) == 255
            assert table.entry(INT64_MAX).current_txn_first_offset == 99
            assert list(table.entry(1).batches) == [
                BatchMetadata(INT32_MAX, INT32_MAX, INT32_MAX, INT64_MIN),
                BatchMetadata(INT32_MIN, INT64_MAX - 1, 0, INT64_MAX),
            ]
            assert encode_snapshot(table) == full2_file(entries, window=255, map_end_offset=INT64_MAX)


def test_checks_come_in_order_layout_then_crc_then_values():
    # A bad value under a bad crc is a crc error; a short file under a bad crc is a length error.
    assert "CRC-32C" in both_reject("decode_full", full_file([full_entry(pid=-1)], crc=7))
    assert "CRC-32C" in both_reject("decode_full", full2_file([full_entry(pid=-1)], crc=7))
    assert "CRC-32C" in both_reject("decode_full", full2_file([full_entry()], escaped=[0], crc=7))
    assert "short file" in both_reject("decode_full", full2_file([full_entry()], count=2, crc=7))
    assert "CRC-32C" in both_reject("decode_kafka", kafka_file([(-1, 0, 0, 0, 0, 0, 0, 0)], crc=7))
    assert "short file" in both_reject("decode_full", full_file([full_entry()], count=2, crc=7))
    assert "trailing" in both_reject("decode_kafka", kafka_file([], trailing=b"x", crc=7))


def test_format_detection():
    assert snapshot_format(EMPTY_KAFKA_VECTOR) == "kafka"
    assert snapshot_format(b"DDPS") == "full"
    with pytest.raises(CorruptSnapshotError, match="snapshot too short: expected at least 10 bytes, found 1"):
        decode_snapshot(b"\x00")
    with pytest.raises(
        CorruptSnapshotError,
        match=r"unknown file version: expected version 1 \(Kafka's format\) or magic b'DDPS' \(full format\), "
        r"found version 2 \(first bytes b'\\x00\\x02\\x00\\x00'\)",
    ):
        decode_snapshot(kafka_file([], version=2, crc=0))
    with pytest.raises(CorruptSnapshotError, match="unknown file version"):
        decode_snapshot(b"DDPT" + bytes(20))


# --- the public API's arguments -------------------------------------------------------------


def test_decode_arguments(impl):
    data = encode_snapshot(impl(7))
    assert decode_snapshot(data, window=7, map_end_offset=0, table_class=impl).window == 7
    with pytest.raises(ValueError, match="window 5 differs from the full snapshot's window 7"):
        decode_snapshot(data, window=5, table_class=impl)
    with pytest.raises(ValueError, match="map_end_offset 3 differs from the full snapshot's map end offset 0"):
        decode_snapshot(data, map_end_offset=3, table_class=impl)
    kafka = decode_snapshot(EMPTY_KAFKA_VECTOR, window=255, map_end_offset=42, table_class=impl)
    assert (kafka.window, kafka.map_end_offset) == (255, 42)
    with pytest.raises(ValueError, match="window must be in"):
        decode_snapshot(EMPTY_KAFKA_VECTOR, window=0, table_class=impl)
    with pytest.raises(ValueError, match="map_end_offset must be in"):
        decode_snapshot(EMPTY_KAFKA_VECTOR, map_end_offset=-1, table_class=impl)
    with pytest.raises(TypeError, match="window must be an integer"):
        decode_snapshot(EMPTY_KAFKA_VECTOR, window="5", table_class=impl)


def test_decode_rejects_what_is_not_a_buffer_or_a_table_class():
    with pytest.raises(TypeError, match="data must be a C-contiguous buffer, got str"):
        decode_snapshot("0001")
    with pytest.raises(TypeError, match="data must be a C-contiguous buffer"):
        decode_snapshot(memoryview(EMPTY_KAFKA_VECTOR * 2)[::2])
    with pytest.raises(TypeError, match="table_class must be a ProducerStateTable class"):
        decode_snapshot(EMPTY_KAFKA_VECTOR, table_class=dict)
    with pytest.raises(TypeError, match="table_class must be a ProducerStateTable class"):
        decode_snapshot(EMPTY_KAFKA_VECTOR, table_class=Compiled())
    for twin in TWINS.values():
        (other,) = (other.ProducerStateTable for other in TWINS.values() if other is not twin)
        with pytest.raises(TypeError, match="table_class must be"):
            twin.snapshot.decode_kafka(EMPTY_KAFKA_VECTOR, 5, 0, other)
        with pytest.raises(TypeError, match="data must be a C-contiguous buffer"):
            twin.snapshot.decode_full(12)


@pytest.mark.parametrize("buffer", [bytearray, memoryview], ids=["bytearray", "memoryview"])
def test_decode_takes_any_buffer(impl, buffer):
    assert state(decode_snapshot(buffer(TWO_ENTRY_KAFKA_VECTOR), map_end_offset=101, table_class=impl)) == (
        5,
        101,
        TWO_ENTRIES,
    )


def test_decode_of_a_subclass():
    class Mine(Compiled):
        pass

    class MyTwin(Twin):
        pass

    assert type(decode_snapshot(EMPTY_KAFKA_VECTOR, table_class=Mine)) is Mine
    assert type(decode_snapshot(EMPTY_KAFKA_VECTOR, table_class=MyTwin)) is MyTwin


def test_encode_arguments(impl):
    with pytest.raises(ValueError, match=r"format must be one of \('full', 'kafka'\), got 'json'"):
        encode_snapshot(impl(), "json")
    with pytest.raises(TypeError, match="format must be one of"):
        encode_snapshot(impl(), None)
    with pytest.raises(TypeError, match="table must be a ProducerStateTable .*, got dict"):
        encode_snapshot({}, "kafka")
    with pytest.raises(TypeError, match="table must be"):
        TWINS["reference"].snapshot.encode_full(Compiled())
    with pytest.raises(TypeError):
        TWINS["compiled"].snapshot.encode_kafka(Twin())


def test_full_format_refuses_a_table_its_reader_would_reject(impl):
    """A Kafka snapshot loaded below its own offsets cannot be written in the full format
    (its reader would reject the file); the error says why, the same in both twins."""
    messages = set()
    for cls in (Compiled, Twin):
        with pytest.raises(ValueError, match="cannot write a full snapshot: producer 1") as caught:
            encode_snapshot(decode_snapshot(TWO_ENTRY_KAFKA_VECTOR, map_end_offset=50, table_class=cls))
        messages.add(str(caught.value))
        with pytest.raises(ValueError, match="below its offset delta 3 .a negative first offset"):
            encode_snapshot(decode_snapshot(TWO_ENTRY_KAFKA_VECTOR, map_end_offset=101, table_class=cls))
    assert len(messages) == 1
    assert encode_snapshot(decode_snapshot(TWO_ENTRY_KAFKA_VECTOR, table_class=impl), "kafka") == TWO_ENTRY_KAFKA_VECTOR


def test_pure_python_mode_decodes_into_the_twin():
    code = (
        "import dedup, dedup.snapshot as s, dedup.reference as r\n"
        "t = dedup.ProducerStateTable(); t.append(1, 0, 0, 1, 0)\n"
        "loaded = s.decode_snapshot(s.encode_snapshot(t))\n"
        "assert type(loaded) is r.ProducerStateTable and loaded.append(1, 0, 0, 1, 1).duplicate\n"
        "print('twin')\n"
    )
    env = dict(os.environ, DEDUP_PURE_PYTHON="1")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "twin"
