"""dedup.batch: v2 batches built and read at record level (spec §8), against kafka-python and
aiokafka as independent readers and builders.

1. batches from ``encode_batch``/``encode_marker`` read by kafka-python and aiokafka (both
   its compiled and pure-Python batch classes) give the same records, and ``scan_batches``
   the right header fields;
2. batches from kafka-python's and aiokafka's builders decode to the records they were given,
   and ``encode_batch`` writes the same bytes for the same inputs;
3. the spec §8.6 vectors byte for byte, and markers the table accepts;
4. hypothesis: round trips (bad bytes are test_batch_corrupt.py's);
5. bad arguments: TypeError/ValueError naming the argument.

``decode_records`` reads headers and CRCs through ``dedup.records``; the ``scanner`` fixture
(conftest) runs the decoding tests with the compiled functions and with the pure-Python twin's.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.record import default_records as aiokafka_records
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kafka.record import MemoryRecords
from kafka.record.default_records import DefaultRecordBatchBuilder as KafkaPythonBuilder
from kafka_batches import COMMIT_MARKER, IDEMPOTENT_BATCH, TIMESTAMP, build, patch, varint

from dedup import CompletedTxn, Origin
from dedup._types import INT16_MAX, INT32_MAX, INT64_MAX, INT64_MIN, increment_sequence
from dedup.batch import (
    Record,
    decode_records,
    decode_varint,
    decode_varlong,
    encode_batch,
    encode_marker,
    encode_varint,
    encode_varlong,
)
from dedup.errors import CorruptRecordError, TruncatedBatchError
from dedup.records import scan_batches, validate_batches

ROOT = Path(__file__).resolve().parents[2]
PID = 1000

AIOKAFKA_BATCHES = {"aiokafka-py": aiokafka_records._DefaultRecordBatchPy}
if not aiokafka_records.NO_EXTENSIONS:
    AIOKAFKA_BATCHES["aiokafka-c"] = aiokafka_records._DefaultRecordBatchCython
AIOKAFKA_BUILDERS = {"aiokafka-py": aiokafka_records._DefaultRecordBatchBuilderPy}
if not aiokafka_records.NO_EXTENSIONS:
    AIOKAFKA_BUILDERS["aiokafka-c"] = aiokafka_records._DefaultRecordBatchBuilderCython


property_settings = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- helpers -----------------------------------------------------------------------------------


def as_tuples(records):
    return [(r.offset, r.timestamp, r.key, r.value, tuple(tuple(h) for h in r.headers)) for r in records]


def kafka_python_read(data, control=False):
    """Every record as kafka-python's MemoryRecords reads it (CRC checked)."""
    out, memory = [], MemoryRecords(bytes(data))
    while (batch := memory.next_batch()) is not None:
        assert batch.validate_crc()
        if batch.is_control_batch and not control:
            continue
        out += as_tuples(batch)
    return out


def aiokafka_read(data, batch_class, control=False):
    """Every record as one of aiokafka's batch classes reads it, batch by batch."""
    out, position = [], 0
    while position < len(data):
        (length,) = struct.unpack_from(">i", data, position + 8)
        batch = batch_class(bytes(data[position : position + 12 + length]))
        assert batch.validate_crc()
        if control or not batch.is_control_batch:
            out += as_tuples(batch)
        position += 12 + length
    return out


def expected_records(values, keys, headers, timestamps, base_offset=0):
    keys = keys or [None] * len(values)
    headers = headers or [[] for _ in values]
    return [
        Record(base_offset + i, t, k, v, tuple((hk, hv) for hk, hv in h))
        for i, (v, k, h, t) in enumerate(zip(values, keys, headers, timestamps, strict=True))
    ]


# --- 1. encode_batch read by kafka-python and aiokafka ----------------------------------------------

CASES = {
    "one null-key record": dict(values=[b"v"], timestamps=[TIMESTAMP]),
    "nulls and empties": dict(values=[None, b"", b"x"], keys=[b"", None, b"k"], timestamps=[1, 2, 3]),
    "multibyte lengths": dict(values=[b"a" * 64, b"b" * 300, b"c" * 20_000], keys=[b"k" * 200, None, b"q"],
                              timestamps=[TIMESTAMP] * 3),
    "headers": dict(
        values=[b"v0", b"v1", None],
        headers=[[("trace", b"abc"), ("empty", b""), ("null", None)], [], [("ключ-日本", b"\xff" * 130)]],
        timestamps=[TIMESTAMP, TIMESTAMP + 1, TIMESTAMP + 2],
    ),
    "timestamps out of order": dict(values=[b"a", b"b", b"c", b"d"],
                                    timestamps=[TIMESTAMP, TIMESTAMP - 5_000, 0, TIMESTAMP + (1 << 40)]),
    "no timestamp": dict(values=[b"a", b"b"], timestamps=[-1, -1]),
    "200 records": dict(values=[b"%d" % i for i in range(200)], timestamps=[TIMESTAMP + i for i in range(200)]),
}  # fmt: skip
PRODUCERS = {
    "no producer id": dict(),
    "idempotent": dict(producer_id=PID, producer_epoch=5, base_sequence=0),
    "transactional, leader's offsets": dict(
        producer_id=PID, producer_epoch=2, base_sequence=17, transactional=True, base_offset=1 << 40,
        partition_leader_epoch=9,
    ),
    "largest ids": dict(producer_id=INT64_MAX, producer_epoch=INT16_MAX, base_sequence=INT32_MAX - 1),
}  # fmt: skip


@pytest.mark.parametrize("producer", PRODUCERS, ids=list(PRODUCERS))
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_encoded_batch_reads_the_same_in_kafka_python_and_aiokafka(case, producer, scanner):
    fields, state = CASES[case], PRODUCERS[producer]
    data = encode_batch(
        fields["values"], keys=fields.get("keys"), headers=fields.get("headers"),
        timestamps=fields["timestamps"], **state,
    )  # fmt: skip
    count = len(fields["values"])
    base_offset = state.get("base_offset", 0)
    expected = expected_records(
        fields["values"], fields.get("keys"), fields.get("headers"), fields["timestamps"], base_offset
    )
    assert decode_records(data) == expected
    assert kafka_python_read(data) == as_tuples(expected)
    for batch_class in AIOKAFKA_BATCHES.values():
        assert aiokafka_read(data, batch_class) == as_tuples(expected)

    (header,) = scan_batches(data)
    pid, epoch, sequence = (state.get(name, -1) for name in ("producer_id", "producer_epoch", "base_sequence"))
    assert (header["producer_id"], header["producer_epoch"], header["base_sequence"]) == (pid, epoch, sequence)
    assert (header["record_count"], header["last_offset_delta"]) == (count, count - 1)
    assert header["base_offset"] == base_offset
    assert header["partition_leader_epoch"] == state.get("partition_leader_epoch", -1)
    assert header["base_timestamp"] == fields["timestamps"][0]
    assert header["max_timestamp"] == max(fields["timestamps"])
    assert bool(header["is_transactional"]) == state.get("transactional", False)
    assert not header["is_control"] and header["compression"] == 0 and header["timestamp_type"] == 0
    assert header["batch_length"] + 12 == len(data)
    batch = MemoryRecords(data).next_batch()
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (pid, epoch, sequence)
    assert batch.last_sequence == (-1 if sequence == -1 else increment_sequence(sequence, count - 1))
    assert validate_batches(data, origin=Origin.CLIENT if base_offset == 0 else Origin.REPLICATION).shape == (1,)


def test_sequences_wrap_past_int32_max_as_kafka_does():
    # Spec §8.4: the records after 2^31-1 are numbered from 0 again (2^31-2, 2^31-1, 0, 1).
    data = encode_batch(
        [b"a", b"b", b"c", b"d"], producer_id=PID, producer_epoch=0, base_sequence=INT32_MAX - 1, timestamp=1
    )
    (header,) = scan_batches(data)
    assert header["base_sequence"] == INT32_MAX - 1
    assert increment_sequence(int(header["base_sequence"]), int(header["last_offset_delta"])) == 1
    assert MemoryRecords(data).next_batch().last_sequence == 1


def test_single_timestamp_is_every_records():
    data = encode_batch([b"a", b"b"], timestamp=TIMESTAMP)
    assert [record.timestamp for record in decode_records(data)] == [TIMESTAMP, TIMESTAMP]
    (header,) = scan_batches(data)
    assert header["base_timestamp"] == header["max_timestamp"] == TIMESTAMP


def test_timestamp_deltas_past_int64_wrap_as_javas_long_does(scanner):
    # -1 then 2^63-1: the delta 2^63 is written as a wrapped varlong and read back wrapped.
    data = encode_batch([b"a", b"b"], timestamps=[-1, INT64_MAX])
    assert [record.timestamp for record in decode_records(data)] == [-1, INT64_MAX]


def test_a_log_of_batches_and_markers(scanner):
    log = b"".join([
        encode_batch([b"a", b"b"], producer_id=1, producer_epoch=0, base_sequence=0, transactional=True,
                     timestamp=10, base_offset=0),
        encode_batch([b"c"], timestamp=11, base_offset=2),
        encode_marker(producer_id=1, producer_epoch=0, commit=True, coordinator_epoch=3, timestamp=12, base_offset=3),
        encode_batch([b"d"], producer_id=2, producer_epoch=1, base_sequence=4, timestamp=13, base_offset=4),
    ])  # fmt: skip
    data = [(0, 10, None, b"a", ()), (1, 10, None, b"b", ()), (2, 11, None, b"c", ()), (4, 13, None, b"d", ())]
    assert as_tuples(decode_records(log)) == data == kafka_python_read(log)
    commit = (3, 12, struct.pack(">hh", 0, 1), struct.pack(">hi", 0, 3), ())
    everything = data[:3] + [commit] + data[3:]
    assert as_tuples(decode_records(log, control=True)) == everything == kafka_python_read(log, control=True)
    for batch_class in AIOKAFKA_BATCHES.values():
        assert aiokafka_read(log, batch_class, control=True) == everything


def test_any_buffer_type_and_an_mmap_that_closes_after(tmp_path, scanner):
    data = encode_batch([b"x", None], keys=[b"k", b"l"], timestamp=5) + COMMIT_MARKER
    expected = decode_records(data)
    path = tmp_path / "00000000000000000000.log"
    path.write_bytes(data)
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    assert decode_records(mapped) == expected
    mapped.close()  # BufferError if a view were still held
    path.write_bytes(data[:-1])
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    with pytest.raises(TruncatedBatchError):
        decode_records(mapped)  # a torn tail: the error's traceback must not hold a view either
    mapped.close()
    for buffer in (bytearray(data), memoryview(data), memoryview(bytearray(data)).toreadonly()):
        assert decode_records(buffer) == expected
    assert decode_records(b"") == []


def test_log_append_time_batches_read_the_max_timestamp(scanner):
    # Kafka's reader gives every record of a LogAppendTime batch the batch's max timestamp.
    data = patch(encode_batch([b"a", b"b"], timestamps=[5, 3]), attributes=0x08, max_timestamp=TIMESTAMP)
    assert [record.timestamp for record in decode_records(data)] == [TIMESTAMP, TIMESTAMP]
    assert [record[1] for record in kafka_python_read(data)] == [TIMESTAMP, TIMESTAMP]


# --- 2. batches from kafka-python's and aiokafka's builders ----------------------------------------------


def build_with(builder_class, records, producer_id=-1, producer_epoch=-1, base_sequence=-1, transactional=False):
    builder = builder_class(
        magic=2, compression_type=0, is_transactional=int(transactional), producer_id=producer_id,
        producer_epoch=producer_epoch, base_sequence=base_sequence, batch_size=1 << 24,
    )  # fmt: skip
    for offset, (timestamp, key, value, headers) in enumerate(records):
        assert builder.append(offset, timestamp, key, value, headers) is not None
    return bytes(builder.build())


BUILDERS = {"kafka-python": KafkaPythonBuilder, **AIOKAFKA_BUILDERS}
# kafka-python writes partition leader epoch 0 where Kafka's producer (and aiokafka) writes -1;
# the field is outside the CRC, so that is the only difference.
LEADER_EPOCH = {"kafka-python": 0, "aiokafka-py": -1, "aiokafka-c": -1}


def test_kafka_batches_build_decodes(scanner):
    log = build(PID, 0, 0, 3) + build(PID, 0, 3, 1, transactional=True) + build(-1, -1, -1, 2, value=b"")
    values = [b"click0", b"click1", b"click2", b"click0", b"0", b"1"]
    stamps = [TIMESTAMP, TIMESTAMP + 1, TIMESTAMP + 2, TIMESTAMP, TIMESTAMP, TIMESTAMP + 1]
    offsets = [0, 1, 2, 0, 0, 1]  # every batch from a client starts at offset 0
    assert decode_records(log) == [Record(o, t, None, v, ()) for o, t, v in zip(offsets, stamps, values, strict=True)]
    assert build(PID, 3, 9, 2, transactional=True) == encode_batch(
        [b"click0", b"click1"], producer_id=PID, producer_epoch=3, base_sequence=9, transactional=True,
        timestamps=[TIMESTAMP, TIMESTAMP + 1], partition_leader_epoch=0,
    )  # fmt: skip


@pytest.mark.parametrize("name", BUILDERS)
def test_builders_with_keys_and_headers_decode_and_match_byte_for_byte(name, scanner):
    records = [
        (TIMESTAMP, b"key", b"value", [("h1", b"x"), ("h2", None)]),
        (TIMESTAMP - 7, None, None, []),
        (TIMESTAMP + 1000, b"", b"v" * 400, [("ü", b"")]),
    ]
    state = dict(producer_id=PID, producer_epoch=4, base_sequence=100, transactional=True)
    data = build_with(BUILDERS[name], records, **state)
    assert as_tuples(decode_records(data)) == [
        (offset, t, k, v, tuple(h)) for offset, (t, k, v, h) in enumerate(records)
    ]
    ours = encode_batch(
        [r[2] for r in records], keys=[r[1] for r in records], headers=[r[3] for r in records],
        timestamps=[r[0] for r in records], partition_leader_epoch=LEADER_EPOCH[name], **state,
    )  # fmt: skip
    assert ours == data


# --- 3. markers ------------------------------------------------------------------------------------


def test_spec_vectors_byte_for_byte():
    assert COMMIT_MARKER == encode_marker(
        producer_id=PID, producer_epoch=5, commit=True, coordinator_epoch=7, timestamp=TIMESTAMP,
        base_offset=42, partition_leader_epoch=0,
    )  # fmt: skip
    assert IDEMPOTENT_BATCH == encode_batch([b"v"], producer_id=PID, producer_epoch=5, base_sequence=0,
                                            timestamp=TIMESTAMP)  # fmt: skip


@pytest.mark.parametrize("commit", [True, False])
def test_markers_scan_and_decode_as_control_records(commit, scanner):
    data = encode_marker(producer_id=7, producer_epoch=3, commit=commit, coordinator_epoch=INT32_MAX, timestamp=99)
    (header,) = scan_batches(data)
    assert header["attributes"] == 0x30 and header["is_control"] and header["is_transactional"]
    assert (header["producer_id"], header["producer_epoch"], header["base_sequence"]) == (7, 3, -1)
    assert (header["record_count"], header["last_offset_delta"], header["partition_leader_epoch"]) == (1, 0, -1)
    assert header["base_timestamp"] == header["max_timestamp"] == 99
    assert decode_records(data) == []
    key, value = struct.pack(">hh", 0, int(commit)), struct.pack(">hi", 0, INT32_MAX)
    assert decode_records(data, control=True) == [Record(0, 99, key, value, ())]
    assert kafka_python_read(data, control=True) == [(0, 99, key, value, ())]
    assert MemoryRecords(data).next_batch().is_control_batch


def test_table_accepts_the_markers(twin):
    # A transaction from a follower's point of view (the leader's offsets), then the
    # coordinator's ABORT written by a leader (spec §2.2).
    append_batches = twin.records.append_batches
    table = twin.ProducerStateTable()
    log = (
        encode_batch([b"a", b"b"], producer_id=PID, producer_epoch=5, base_sequence=0, transactional=True,
                     timestamp=TIMESTAMP, base_offset=0)
        + encode_marker(producer_id=PID, producer_epoch=5, commit=True, coordinator_epoch=7, timestamp=TIMESTAMP + 1,
                        base_offset=2)
    )  # fmt: skip
    result = append_batches(table, log, origin=Origin.REPLICATION)
    assert result.error_codes.tolist() == [0, 0]
    assert result.completed_transactions == [CompletedTxn(PID, 0, 2, False)]
    entry = table.entry(PID)
    assert (entry.coordinator_epoch, entry.last_timestamp, entry.current_txn_first_offset) == (7, TIMESTAMP + 1, None)
    assert table.map_end_offset == 3

    client = encode_batch([b"c"], producer_id=PID, producer_epoch=5, base_sequence=2, transactional=True, timestamp=1)
    assert append_batches(table, client, log_end_offset=3).error_codes.tolist() == [0]
    abort = encode_marker(producer_id=PID, producer_epoch=5, commit=False, coordinator_epoch=7, timestamp=2)
    result = append_batches(table, abort, origin=Origin.COORDINATOR, log_end_offset=4)
    assert result.error_codes.tolist() == [0]
    assert result.completed_transactions == [CompletedTxn(PID, 3, 4, True)]


# --- 4. hypothesis: round trips ----------------------------------------------------------------------

nullable_bytes = st.one_of(
    st.none(),
    st.binary(max_size=40),
    # lengths around the varint boundaries (1 byte up to 63, 2 up to 8191, then 3)
    st.builds(
        lambda byte, size: byte * size,
        st.binary(min_size=1, max_size=1),
        st.sampled_from([63, 64, 300, 8191, 8192, 20_000]),
    ),
)
headers_strategy = st.lists(st.tuples(st.text(max_size=12), st.one_of(st.none(), st.binary(max_size=200))), max_size=4)
# -1 (no timestamp) or any non-negative int64, with the extremes and real clock values likely
timestamps_strategy = st.one_of(
    st.just(-1), st.integers(0, INT64_MAX), st.integers(TIMESTAMP - 10**6, TIMESTAMP + 10**6), st.just(INT64_MAX)
)


@st.composite
def batches(draw, timestamps=timestamps_strategy):
    count = draw(st.integers(1, 8))
    record = {
        "values": st.lists(nullable_bytes, min_size=count, max_size=count),
        "keys": st.one_of(st.none(), st.lists(nullable_bytes, min_size=count, max_size=count)),
        "headers": st.one_of(st.none(), st.lists(headers_strategy, min_size=count, max_size=count)),
        "timestamps": st.lists(timestamps, min_size=count, max_size=count),
    }
    fields = {name: draw(strategy) for name, strategy in record.items()}
    if draw(st.booleans()):
        fields["producer_id"] = draw(st.integers(0, INT64_MAX))
        fields["producer_epoch"] = draw(st.integers(0, INT16_MAX))
        fields["base_sequence"] = draw(st.integers(0, INT32_MAX))
        fields["transactional"] = draw(st.booleans())
    fields["base_offset"] = draw(st.one_of(st.just(0), st.integers(0, INT64_MAX - count)))
    fields["partition_leader_epoch"] = draw(st.integers(-1, INT32_MAX))
    return fields


def log_of(batches_and_markers):
    """The batches one after the other, each followed by a COMMIT marker where asked."""
    parts = []
    for fields, marker in batches_and_markers:
        parts.append(encode_batch(**fields))
        if marker:
            parts.append(encode_marker(producer_id=3, producer_epoch=1, commit=True, coordinator_epoch=0, timestamp=4))
    return b"".join(parts)


@property_settings
@given(st.lists(st.tuples(batches(), st.booleans()), min_size=1, max_size=3))
@example(
    [(dict(values=[b"a", b"b"], keys=None, headers=None, timestamps=[-1, INT64_MAX], base_offset=INT64_MAX - 1,
           partition_leader_epoch=-1), True)],
).via("a timestamp delta past int64, last offset 2^63-1")  # fmt: skip
def test_round_trip(scanner, batches_and_markers):
    log = log_of(batches_and_markers)
    expected = []
    for fields, _ in batches_and_markers:
        expected += expected_records(
            fields["values"], fields["keys"], fields["headers"], fields["timestamps"], fields["base_offset"]
        )
    assert decode_records(log) == expected
    markers = sum(marker for _, marker in batches_and_markers)
    assert len(decode_records(log, control=True)) == len(expected) + markers
    headers = scan_batches(log)
    data_headers = headers[~headers["is_control"]]
    batch_fields = [fields for fields, _ in batches_and_markers]
    assert data_headers["record_count"].tolist() == [len(fields["values"]) for fields in batch_fields]
    assert data_headers["last_offset_delta"].tolist() == [len(fields["values"]) - 1 for fields in batch_fields]
    for name in ("producer_id", "producer_epoch", "base_sequence"):
        assert data_headers[name].tolist() == [fields.get(name, -1) for fields in batch_fields]
    assert data_headers["base_offset"].tolist() == [fields["base_offset"] for fields in batch_fields]


# Timestamps whose deltas fit in int64, and offsets Python's readers add without wrapping.
interop_timestamps = st.one_of(st.just(-1), st.integers(0, 1 << 62), st.integers(TIMESTAMP - 10**6, TIMESTAMP + 10**6))


@given(batches(timestamps=interop_timestamps))
def test_kafka_python_and_aiokafka_read_what_we_write_and_build_the_same_bytes(fields):
    values = fields["values"]
    data = encode_batch(**fields)
    expected = as_tuples(expected_records(values, fields["keys"], fields["headers"], fields["timestamps"],
                                          fields["base_offset"]))  # fmt: skip
    assert kafka_python_read(data) == expected
    for batch_class in AIOKAFKA_BATCHES.values():
        assert aiokafka_read(data, batch_class) == expected
    records = list(zip(fields["timestamps"], fields["keys"] or [None] * len(values), values,
                       fields["headers"] or [[]] * len(values), strict=True))  # fmt: skip
    state = {name: fields[name] for name in ("producer_id", "producer_epoch", "base_sequence", "transactional")
             if name in fields}  # fmt: skip
    theirs = build_with(KafkaPythonBuilder, records, **state)
    # Their builders write base offset 0 and their own leader epoch: compare with those.
    ours = encode_batch(**{**fields, "base_offset": 0, "partition_leader_epoch": 0})
    assert ours == theirs
    for name, builder in AIOKAFKA_BUILDERS.items():
        if name == "aiokafka-c" and fields["timestamps"][0] == -1:
            continue  # its compiled builder takes a first timestamp of -1 for "none yet" (see below)
        ours = encode_batch(**{**fields, "base_offset": 0, "partition_leader_epoch": LEADER_EPOCH[name]})
        assert ours == build_with(builder, records, **state)


def test_aiokafka_compiled_builder_quirk_with_a_first_timestamp_of_minus_one():
    # aiokafka's compiled builder uses -1 as "no first timestamp yet": after a first record
    # with timestamp -1 it makes the second record's timestamp the base, and the first record
    # reads back with that timestamp, not -1. Kafka's builder (and ours, kafka-python's and
    # aiokafka's pure-Python one) keep the first record's.
    records = [(-1, None, b"a", []), (0, None, b"b", [])]
    ours = encode_batch([b"a", b"b"], timestamps=[-1, 0])
    assert ours == build_with(aiokafka_records._DefaultRecordBatchBuilderPy, records)
    assert scan_batches(ours)["base_timestamp"].tolist() == [-1]
    if "aiokafka-c" in AIOKAFKA_BUILDERS:
        theirs = build_with(AIOKAFKA_BUILDERS["aiokafka-c"], records)
        assert scan_batches(theirs)["base_timestamp"].tolist() == [0]
        assert [record.timestamp for record in decode_records(theirs)] == [0, 0]
    assert [record.timestamp for record in decode_records(ours)] == [-1, 0]
    assert [record[1] for record in kafka_python_read(ours)] == [-1, 0]


# --- varints -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,hex_bytes",
    [
        (0, "00"),
        (-1, "01"),
        (1, "02"),
        (-64, "7f"),
        (64, "8001"),
        (INT32_MAX, "feffffff0f"),
        (-(1 << 31), "ffffffff0f"),
    ],
)
def test_varint_examples(value, hex_bytes):
    assert encode_varint(value).hex() == hex_bytes == varint(value).hex()
    assert decode_varint(bytes.fromhex(hex_bytes)) == (value, len(hex_bytes) // 2)


@given(st.integers(INT64_MIN, INT64_MAX), st.binary(max_size=3))
def test_varlongs_round_trip_and_match_the_test_encoder(value, prefix):
    encoded = encode_varlong(value)
    assert encoded == varint(value) and 1 <= len(encoded) <= 10
    assert decode_varlong(prefix + encoded + b"\xff", len(prefix)) == (value, len(prefix) + len(encoded))
    if -(1 << 31) <= value <= INT32_MAX:
        assert encode_varint(value) == encoded and decode_varint(encoded) == (value, len(encoded))


@pytest.mark.parametrize(
    "function,data,words",
    [
        (decode_varint, b"", "expected a varint, found 0 byte(s)"),
        (decode_varint, b"\x80\x80", "found 2 byte(s) with the continuation bit and then the end of the data"),
        (decode_varint, b"\xff" * 5 + b"\x00", "at most 5 bytes"),
        (decode_varint, b"\xff\xff\xff\xff\x1f", "fits in 32 bits"),
        (decode_varlong, b"\xff" * 9 + b"\x02", "fits in 64 bits"),
    ],
)
def test_bad_varints_are_corrupt(function, data, words):
    with pytest.raises(CorruptRecordError, match=re.escape(words)):
        function(data)


# --- 5. arguments -------------------------------------------------------------------------------------

ARGUMENT_ERRORS = [
    (dict(values=[]), ValueError, "values must hold at least one record: Kafka refuses a batch with no records"),
    (dict(values=b"abc"), TypeError, "values must be a sequence with one item per record, got bytes"),
    (dict(values="abc"), TypeError, "values must be a sequence"),
    (dict(values=5), TypeError, "values must be a sequence"),
    (dict(values=["text"]), TypeError, r"values\[0\] must be bytes, bytearray, memoryview or None, got str"),
    (dict(keys=[b"k", b"l"]), ValueError, r"keys must have one item per record \(1\), got 2"),
    (dict(keys=[1]), TypeError, r"keys\[0\] must be bytes"),
    (dict(headers=[[("k", b"v")], []]), ValueError, "headers must have one item per record"),
    (dict(headers=[[(b"k", b"v")]]), TypeError, r"headers\[0\]\[0\] key must be a str"),
    (dict(headers=[[("k", "v")]]), TypeError, r"headers\[0\]\[0\] value must be bytes"),
    (dict(headers=[[("k",)]]), TypeError, r"headers\[0\]\[0\] must be a \(str, bytes or None\) pair"),
    (dict(headers=[["kv"]]), TypeError, r"headers\[0\]\[0\] must be a \(str, bytes or None\) pair"),
    (dict(headers=[[("\ud800", b"")]]), ValueError, r"headers\[0\]\[0\] key is not encodable as UTF-8"),
    (dict(timestamp=None), TypeError, "needs exactly one of timestamp= .* and timestamps="),
    (dict(timestamps=[1]), TypeError, "needs exactly one of timestamp="),
    (dict(timestamp=-2), ValueError, r"timestamp must be -1 \(no timestamp\) or a timestamp in \[0, 2\^63-1\], got -2"),
    (dict(timestamp=1.5), TypeError, "timestamp must be an integer, got float"),
    (dict(timestamp=None, timestamps=[1, 2]), ValueError, r"timestamps must have one item per record \(1\), got 2"),
    (dict(timestamp=None, timestamps=[1 << 63]), ValueError, r"timestamps\[0\] must be -1"),
    (dict(producer_id=-2), ValueError, r"producer_id must be -1 \(none\) or in \[0, 2\^63-1\], got -2"),
    (dict(producer_id=1 << 63), ValueError, "producer_id must be"),
    (dict(producer_id=True), TypeError, "producer_id must be an integer, got bool"),
    (dict(producer_id=1, producer_epoch=0, base_sequence=0, transactional=1), TypeError,
     "transactional must be a bool"),
    (dict(producer_id=1, producer_epoch=1 << 15, base_sequence=0), ValueError, "producer_epoch must be"),
    (dict(producer_id=1, producer_epoch=0, base_sequence=1 << 31), ValueError, "base_sequence must be"),
    (dict(producer_id=1, producer_epoch=-1, base_sequence=0), ValueError, "producer_epoch must be in .* got -1"),
    (dict(producer_id=1, producer_epoch=0, base_sequence=-1), ValueError, r"base_sequence .* got -1 \(rule 8\)"),
    (dict(producer_epoch=0), ValueError, "producer_epoch and base_sequence must be -1 without a producer id"),
    (dict(base_sequence=0), ValueError, "producer_epoch and base_sequence must be -1 without a producer id"),
    (dict(transactional=True), ValueError, "a transactional batch needs a producer_id"),
    (dict(base_offset=-1), ValueError, r"base_offset must be in \[0, 2\^63-1\], got -1"),
    (dict(values=[b"a", b"b"], base_offset=INT64_MAX), ValueError, "would put the last offset past 2"),
    (dict(partition_leader_epoch=-2), ValueError, "partition_leader_epoch must be"),
    (dict(partition_leader_epoch=1 << 31), ValueError, "partition_leader_epoch must be"),
]  # fmt: skip


@pytest.mark.parametrize("kwargs,error,words", ARGUMENT_ERRORS)
def test_encode_batch_arguments(kwargs, error, words):
    arguments = {"values": [b"v"], "timestamp": 1, **kwargs}
    values = arguments.pop("values")
    with pytest.raises(error, match=words):
        encode_batch(values, **arguments)


MARKER_ERRORS = [
    (dict(producer_id=-1), ValueError, r"producer_id must be in \[0, 2\^63-1\], got -1"),
    (dict(producer_epoch=-1), ValueError, r"producer_epoch must be in \[0, 32767\], got -1"),
    (dict(commit=1), TypeError, "commit must be a bool, got 1"),
    (dict(coordinator_epoch=-1), ValueError, r"coordinator_epoch must be in \[0, 2\^31-1\]"),
    (dict(timestamp=-5), ValueError, "timestamp must be -1"),
    (dict(timestamp="now"), TypeError, "timestamp must be an integer, got str"),
    (dict(base_offset=-1), ValueError, "base_offset must be"),
    (dict(partition_leader_epoch=-3), ValueError, "partition_leader_epoch must be"),
]


@pytest.mark.parametrize("kwargs,error,words", MARKER_ERRORS)
def test_encode_marker_arguments(kwargs, error, words):
    arguments = {**dict(producer_id=1, producer_epoch=0, commit=True, coordinator_epoch=0, timestamp=1), **kwargs}
    with pytest.raises(error, match=words):
        encode_marker(**arguments)
    del arguments["commit"]
    with pytest.raises(TypeError):
        encode_marker(**arguments)  # every field is a required keyword


def test_decode_and_varint_arguments():
    with pytest.raises(TypeError, match="data must be a C-contiguous buffer, got str"):
        decode_records("not bytes")
    with pytest.raises(TypeError, match="data must be a C-contiguous buffer, got NoneType"):
        decode_records(None)
    with pytest.raises(TypeError, match="control must be a bool"):
        decode_records(b"", control=1)
    with pytest.raises(ValueError, match="value must be an int32"):
        encode_varint(1 << 31)
    with pytest.raises(ValueError, match="value must be an int64"):
        encode_varlong(1 << 63)
    with pytest.raises(TypeError, match="value must be an integer"):
        encode_varint(1.0)
    with pytest.raises(ValueError, match="position must be 0 or more"):
        decode_varint(b"\x00", -1)


def test_keys_values_and_iterables_of_any_kind():
    data = encode_batch(
        (value for value in [bytearray(b"a"), memoryview(b"b")]), keys=(b"x", b"y"),
        headers=[(("h", bytearray(b"1")),), []], timestamps=iter([1, 2]),
    )  # fmt: skip
    assert decode_records(data) == [Record(0, 1, b"x", b"a", (("h", b"1"),)), Record(1, 2, b"y", b"b", ())]


# --- the pure-Python build -------------------------------------------------------------------------------


def test_works_under_dedup_pure_python():
    script = (
        "import dedup.batch, dedup.reference.records as twin, sys; sys.path.insert(0, 'tests');"
        "from kafka_batches import COMMIT_MARKER;"
        "assert dedup.batch.scan_batches is twin.scan_batches;"
        "m = dedup.batch.encode_marker(producer_id=1000, producer_epoch=5, commit=True, coordinator_epoch=7,"
        " timestamp=1_700_000_000_000, base_offset=42, partition_leader_epoch=0);"
        "assert m == COMMIT_MARKER;"
        "assert len(dedup.batch.decode_records(m + dedup.batch.encode_batch([b'a'], timestamp=1), control=True)) == 2"
    )
    env = {**os.environ, "DEDUP_PURE_PYTHON": "1", "PYTHONPATH": str(ROOT)}
    completed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
