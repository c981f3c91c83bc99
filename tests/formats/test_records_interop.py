"""Kafka v2 batches from and to real Kafka libraries: kafka-python and aiokafka are the
independent encoders and parsers, and the PyPI ``crc32c`` the independent CRC-32C.

- Batches built by kafka-python's and aiokafka's ``DefaultRecordBatchBuilder`` (aiokafka's
  compiled class and its pure-Python one), idempotent, transactional, plain, with a sequence
  that wraps, uncompressed and gzip: ``scan_batches`` reads the header fields those libraries
  read from the same bytes, ``crc_valid`` agrees with their ``validate_crc()``, and
  ``validate_batches`` accepts them as a client's (spec §8.1, §8.2, §8.5, §2.1 rules 1-8).
- A segment of many such batches: every batch found at the position the libraries' own
  ``MemoryRecords`` find it; a torn tail ends where kafka-python's ``valid_bytes()`` says.
- Batches dedup wrote offsets into (``append_batches(write_offsets=True)``): the libraries
  read the assigned base offset, the leader epoch and record offsets ``base + i``, and the
  CRC still validates (it does not cover those fields).
- The spec's test vectors (§8.6), and the COMMIT marker completing a transaction (§2.2 M5).
- A retried batch (the same bytes) is answered with the original offsets and not written;
  the same records from a restarted producer are a new batch (§2.1 rule 10).

Every test runs on both twins (``dedup._records`` and ``dedup.reference.records``).
"""

from __future__ import annotations

import mmap
import random
import struct

import crc32c as pypi_crc32c
import numpy as np
import pytest
from aiokafka.record import _crecords as aiokafka_compiled
from aiokafka.record import default_records as aiokafka_default
from aiokafka.record import memory_records as aiokafka_memory
from aiokafka.record.control_record import ABORT_MARKER, COMMIT_MARKER, ControlRecord
from conftest import TWINS
from kafka.record.default_records import DefaultRecordBatch as KafkaPythonBatch
from kafka.record.default_records import DefaultRecordBatchBuilder as KafkaPythonBuilder
from kafka.record.memory_records import MemoryRecords as KafkaPythonMemoryRecords

from dedup import CompletedTxn, Origin
from dedup.errors import CorruptRecordError, InvalidRecordError, TruncatedBatchError
from dedup.tools.dump import batch_description

INT32_MAX = (1 << 31) - 1
NONE, GZIP = 0, 1  # Kafka's compression codes (spec §8.2); snappy/lz4/zstd need extra packages
TIMESTAMP = 1_767_225_600_000  # 2026-01-01, in ms


# --- the libraries' builders and parsers ----------------------------------------------------


def _kafka_python(compression, transactional, producer_id, producer_epoch, base_sequence, records):
    builder = KafkaPythonBuilder(
        magic=2, compression_type=compression, is_transactional=int(transactional), producer_id=producer_id,
        producer_epoch=producer_epoch, base_sequence=base_sequence, batch_size=1 << 20,
    )
    for offset, (timestamp, key, value, headers) in enumerate(records):
        assert builder.append(offset, timestamp=timestamp, key=key, value=value, headers=headers) is not None
    return bytes(builder.build())


def _aiokafka(builder_class):
    def build(compression, transactional, producer_id, producer_epoch, base_sequence, records):
        # The compiled class takes positional arguments only.
        builder = builder_class(2, compression, int(transactional), producer_id, producer_epoch, base_sequence,
                                1 << 20)
        for offset, (timestamp, key, value, headers) in enumerate(records):
            assert builder.append(offset, timestamp, key, value, headers) is not None
        return bytes(builder.build())

    return build


BUILDERS = {
    "kafka-python": _kafka_python,
    "aiokafka-compiled": _aiokafka(aiokafka_compiled.DefaultRecordBatchBuilder),
    "aiokafka-python": _aiokafka(aiokafka_default._DefaultRecordBatchBuilderPy),
}

#: aiokafka's two batch readers (kafka-python's is used by name: it has more accessors).
AIOKAFKA_PARSERS = {
    "aiokafka-compiled": aiokafka_compiled.DefaultRecordBatch,
    "aiokafka-python": aiokafka_default._DefaultRecordBatchPy,
}


def test_aiokafka_classes_are_the_ones_meant():
    """The compiled and pure-Python classes really are different implementations."""
    assert aiokafka_compiled.DefaultRecordBatchBuilder.__module__ == "aiokafka.record._crecords.default_records"
    assert aiokafka_default._DefaultRecordBatchBuilderPy.__module__ == "aiokafka.record.default_records"
    assert aiokafka_compiled.DefaultRecordBatchBuilder is not aiokafka_default._DefaultRecordBatchBuilderPy


def records_for(count, seed=0, timestamp=TIMESTAMP):
    """``count`` records (timestamp, key, value, headers) with null and empty keys and values,
    headers with null values, and timestamps out of order (max timestamp not the last). The
    first record compresses well, so that gzip batches are really compressed (the builders
    fall back to no compression when it does not pay)."""
    rng = random.Random(seed)
    shapes = [
        lambda i: (b"key-%d" % i, b"value-%d" % i, []),
        lambda i: (None, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))),
                   [("trace-id", b"%08x" % i), ("null", None)]),
        lambda i: (b"", None, [("\u00e9t\u00e9", b"")]),  # empty key, tombstone, non-ASCII header key
        lambda i: (b"k" * 200, b"\x00\xff" * rng.randrange(0, 100), []),
    ]
    records = [(timestamp + rng.randrange(-5, 50), *shapes[(i + seed) % len(shapes)](i)) for i in range(count)]
    records[0] = (timestamp, b"first", b"a" * 300, [("compressible", b"yes")])
    return records


# (transactional, producer_id, producer_epoch, base_sequence, record count)
KINDS = {
    "idempotent": (False, 1000, 5, 0, 4),
    "transactional": (True, (1 << 40) + 7, 32767, 17, 3),
    "sequence-wraps": (False, 0, 0, INT32_MAX - 1, 4),  # last sequence wraps to 2 (spec §8.4)
    "plain": (False, -1, -1, -1, 2),  # no producer id: not idempotent
    "one-record": (False, (1 << 63) - 1, 0, INT32_MAX, 1),
}


def build(library, kind, compression=NONE, seed=0, count=None, producer_id=None, base_sequence=None):
    transactional, pid, epoch, sequence, default_count = KINDS[kind]
    pid = pid if producer_id is None else producer_id
    sequence = sequence if base_sequence is None else base_sequence
    records = records_for(default_count if count is None else count, seed)
    return BUILDERS[library](compression, transactional, pid, epoch, sequence, records)


HEADER_FIELDS = [
    "position", "base_offset", "base_timestamp", "max_timestamp", "producer_id", "batch_length",
    "partition_leader_epoch", "crc", "last_offset_delta", "base_sequence", "record_count", "attributes",
    "producer_epoch", "magic", "compression", "timestamp_type", "is_transactional", "is_control",
]


#: dedup's header field: the attribute kafka-python's and aiokafka's batch classes both read it as.
BOTH_READ = {
    "base_offset": "base_offset",
    "base_timestamp": "first_timestamp",
    "max_timestamp": "max_timestamp",
    "producer_id": "producer_id",
    "crc": "crc",
    "last_offset_delta": "last_offset_delta",
    "base_sequence": "base_sequence",
    "attributes": "attributes",
    "producer_epoch": "producer_epoch",
    "magic": "magic",
    "compression": "compression_type",
    "timestamp_type": "timestamp_type",
    "is_transactional": "is_transactional",
    "is_control": "is_control_batch",
}


def aiokafka_fields(batch) -> dict:
    """What aiokafka reads (it has no accessor for the length, leader epoch or record count)."""
    return {name: getattr(batch, attribute) for name, attribute in BOTH_READ.items()}


def kafka_python_fields(batch: KafkaPythonBatch, position: int) -> dict:
    """What kafka-python reads from a batch, in dedup's field names: what aiokafka reads, the
    length, the leader epoch and the record count."""
    return {
        "position": position,
        **{name: getattr(batch, attribute) for name, attribute in BOTH_READ.items()},
        "batch_length": batch.size_in_bytes - 12,
        "partition_leader_epoch": batch.leader_epoch,
        "record_count": batch.records_count,
    }


def row_fields(row, names=HEADER_FIELDS) -> dict:
    return {name: row[name].item() for name in names}


def headers_equal(left: np.ndarray, right: np.ndarray) -> bool:
    """Same rows, byte for byte (padding included: both twins zero it)."""
    return left.dtype == right.dtype and left.tobytes() == right.tobytes()


# --- 1. batches built by the libraries, one at a time --------------------------------------


@pytest.mark.parametrize("compression", [NONE, GZIP], ids=["none", "gzip"])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("library", list(BUILDERS))
def test_header_fields_are_what_the_libraries_read(twin, library, kind, compression):
    data = build(library, kind, compression, seed=len(kind))
    headers = twin.records.scan_batches(data)
    assert len(headers) == 1
    row = headers[0]
    parsed = KafkaPythonBatch(data)
    assert row_fields(row) == kafka_python_fields(parsed, 0)
    assert row["batch_length"] + 12 == len(data)
    assert row["compression"] == compression
    # dedup's derived last sequence (the one dump-log prints) is kafka-python's
    assert batch_description(row, True)["lastSequence"] == parsed.last_sequence
    # the header's record count is the number of records kafka-python reads (after gunzip)
    assert len(list(KafkaPythonBatch(data))) == row["record_count"] == KINDS[kind][4]
    for parser in AIOKAFKA_PARSERS.values():
        batch = parser(data)
        assert row_fields(row, list(aiokafka_fields(batch))) == aiokafka_fields(batch)
        assert batch.validate_crc()
    # CRC-32C of bytes [21, end) (spec §8.5), by the PyPI package and by dedup's own
    assert row["crc"] == pypi_crc32c.crc32c(data[21:]) == twin.crc32c(data[21:])
    assert parsed.validate_crc()
    assert twin.records.crc_valid(data).tolist() == [True]
    assert twin.records.crc_valid(data, headers).tolist() == [True]
    assert headers_equal(twin.records.validate_batches(data, origin=Origin.CLIENT), headers)


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_builders_write_the_same_bytes_but_the_leader_epoch(kind):
    """The premise of using three builders: one format (kafka-python writes leader epoch 0,
    aiokafka -1; both are outside the CRC)."""
    built = {library: build(library, kind) for library in BUILDERS}
    reference_bytes = built["kafka-python"]
    for library, data in built.items():
        assert data[:12] + data[16:] == reference_bytes[:12] + reference_bytes[16:], library
    assert KafkaPythonBatch(built["kafka-python"]).leader_epoch == 0
    assert KafkaPythonBatch(built["aiokafka-compiled"]).leader_epoch == -1


@pytest.mark.parametrize("library", list(BUILDERS))
def test_a_flipped_bit_fails_the_crc_for_dedup_and_the_libraries(twin, library):
    data = bytearray(build(library, "transactional", GZIP))
    data[len(data) // 2] ^= 0x10
    assert twin.records.crc_valid(data).tolist() == [False]
    assert not KafkaPythonBatch(bytes(data)).validate_crc()
    assert not aiokafka_compiled.DefaultRecordBatch(bytes(data)).validate_crc()
    with pytest.raises(CorruptRecordError, match="batch 0 at position 0: Record is corrupt") as caught:
        twin.records.validate_batches(data)
    assert caught.value.code == 2


# --- 2. a segment of many batches -----------------------------------------------------------


def segment(count=150, seed=2026):
    """``count`` batches from all three builders, every kind, both compressions, 1 to 12
    records: (bytes, list of batch sizes)."""
    rng = random.Random(seed)
    batches = []
    for i in range(count):
        library = rng.choice(list(BUILDERS))
        kind = rng.choice(list(KINDS))
        batches.append(build(library, kind, rng.choice([NONE, GZIP]), seed=i, count=rng.randint(1, 12)))
    return b"".join(batches), [len(batch) for batch in batches]


@pytest.fixture(scope="module")
def segment_bytes():
    return segment()


def as_buffer(kind, data, tmp_path):
    """``data`` as a buffer of the given kind (all C-contiguous)."""
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(bytearray(b"\xff" * 7 + data))[7:]  # not at the start of its object
    if kind == "numpy":
        return np.frombuffer(data, dtype=np.uint8)
    path = tmp_path / "00000000000000000000.log"
    path.write_bytes(data)
    with open(path, "rb") as handle:
        return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)


@pytest.mark.parametrize("buffer_kind", ["bytes", "bytearray", "memoryview", "numpy", "mmap"])
def test_segment_every_batch_found_where_the_libraries_find_it(twin, segment_bytes, buffer_kind, tmp_path):
    data, sizes = segment_bytes
    buffer = as_buffer(buffer_kind, data, tmp_path)
    headers = twin.records.scan_batches(buffer)
    assert len(headers) == len(sizes)
    assert headers["position"].tolist() == np.concatenate(([0], np.cumsum(sizes)[:-1])).tolist()
    assert (headers["batch_length"] + 12).tolist() == sizes
    # kafka-python's consumer-side reader over the same bytes
    records = KafkaPythonMemoryRecords(data)
    seen = []
    position = 0
    while records.has_next():
        batch = records.next_batch()
        seen.append(kafka_python_fields(batch, position))
        position += batch.size_in_bytes
    assert [row_fields(row) for row in headers] == seen
    assert records.valid_bytes() == len(data)
    # aiokafka's compiled reader
    records = aiokafka_compiled.MemoryRecords(data)
    seen = []
    while records.has_next():
        seen.append(aiokafka_fields(records.next_batch()))
    assert [row_fields(row, list(seen[0])) for row in headers] == seen
    assert twin.records.crc_valid(buffer, headers).all()
    assert headers_equal(twin.records.validate_batches(buffer), headers)
    if buffer_kind == "mmap":
        del headers
        buffer.close()


@pytest.mark.parametrize("cut", [1, 11, 12, 13, 60, 61, 62, "half", "last-byte"])
def test_segment_torn_tail_ends_where_kafka_python_says(twin, segment_bytes, cut):
    data, sizes = segment_bytes
    last = sizes[-1]
    cut = {"half": last // 2, "last-byte": last - 1}.get(cut, cut)
    torn = data[: len(data) - last + cut]
    complete = twin.records.scan_batches(data)[:-1]
    with pytest.raises(TruncatedBatchError) as caught:
        twin.records.scan_batches(torn)
    error = caught.value
    assert isinstance(error, CorruptRecordError) and error.code == 2
    assert error.valid_bytes == len(data) - last == KafkaPythonMemoryRecords(torn).valid_bytes()
    assert headers_equal(error.headers, complete)
    assert f"batch {len(sizes) - 1} at position {len(data) - last}: truncated" in str(error)
    assert headers_equal(twin.records.scan_batches(torn, tail="ignore"), complete)
    assert headers_equal(twin.records.validate_batches(torn, tail="ignore"), complete)
    assert twin.records.crc_valid(torn).all() and len(twin.records.crc_valid(torn)) == len(sizes) - 1


# --- 3. batches dedup wrote offsets into, read back by the libraries ---------------------


def produce_stream(seed=7):
    """40 batches of 10 producers as a leader receives them: each producer's batches in
    sequence, producers interleaved, two of them transactional, some gzip; kafka-python and
    aiokafka builders mixed. Returns (bytes, record counts, producer ids)."""
    rng = random.Random(seed)
    producers = {1000 + i: {"sequence": 0, "transactional": i in (3, 7), "epoch": i % 3} for i in range(10)}
    batches, counts, pids = [], [], []
    for i in range(40):
        pid = rng.choice(list(producers))
        state = producers[pid]
        count = rng.randint(1, 9)
        library = rng.choice(list(BUILDERS))
        records = records_for(count, seed=i)
        batches.append(BUILDERS[library](rng.choice([NONE, GZIP]), state["transactional"], pid, state["epoch"],
                                         state["sequence"], records))
        state["sequence"] += count
        counts.append(count)
        pids.append(pid)
    return b"".join(batches), counts, pids


LEADER_EPOCH = 7
LOG_END_OFFSET = 1_000


def test_written_offsets_are_read_back_by_kafka_python_and_aiokafka(twin):
    original, counts, pids = produce_stream()
    buffer = bytearray(original)
    table = twin.ProducerStateTable()
    result = twin.records.append_batches(
        table, buffer, log_end_offset=LOG_END_OFFSET, write_offsets=True, partition_leader_epoch=LEADER_EPOCH
    )
    assert result.error_codes.tolist() == [0] * len(counts), result.errors
    assert not result.duplicate.any()
    bases = LOG_END_OFFSET + np.concatenate(([0], np.cumsum(counts)[:-1]))
    assert result.base_offsets.tolist() == bases.tolist()
    assert (result.last_offsets - result.base_offsets + 1).tolist() == counts
    assert result.log_end_offset == table.map_end_offset == LOG_END_OFFSET + sum(counts)
    data = bytes(buffer)
    for row, base, count in zip(result.headers, bases.tolist(), counts, strict=True):
        position, size = int(row["position"]), int(row["batch_length"]) + 12
        batch = data[position : position + size]
        # only the base offset and the leader epoch changed (spec §8.1)
        before = original[position : position + size]
        assert batch[8:12] + batch[16:] == before[8:12] + before[16:]
        parsed = KafkaPythonBatch(batch)
        assert (parsed.base_offset, parsed.leader_epoch) == (base, LEADER_EPOCH)
        assert parsed.validate_crc()
        assert [record.offset for record in KafkaPythonBatch(batch)] == list(range(base, base + count))
        for parser in AIOKAFKA_PARSERS.values():
            parsed = parser(batch)
            assert parsed.base_offset == base
            assert parsed.validate_crc()
            assert [record.offset for record in parser(batch)] == list(range(base, base + count))
    # a consumer reading the whole buffer sees consecutive offsets across batches
    kafka_python_offsets = [record.offset for batch in KafkaPythonMemoryRecords(data) for record in batch]
    aiokafka_offsets = []
    records = aiokafka_memory.MemoryRecords(data)
    while records.has_next():
        aiokafka_offsets.extend(record.offset for record in records.next_batch())
    expected = list(range(LOG_END_OFFSET, LOG_END_OFFSET + sum(counts)))
    assert kafka_python_offsets == aiokafka_offsets == expected
    # dedup reads back what it wrote; its CRC check agrees
    assert twin.records.scan_batches(data)["base_offset"].tolist() == bases.tolist()
    assert (twin.records.scan_batches(data)["partition_leader_epoch"] == LEADER_EPOCH).all()
    assert twin.records.crc_valid(data).all()
    # the table holds each producer's last batch at its offsets
    for pid in set(pids):
        last = max(i for i, p in enumerate(pids) if p == pid)
        assert table.entry(pid).batches[-1].last_offset == result.last_offsets[last]


def test_written_offsets_are_the_same_on_both_twins():
    original, counts, _ = produce_stream(seed=11)
    outcomes = []
    for twin in TWINS.values():
        buffer = bytearray(original)
        table = twin.ProducerStateTable()
        result = twin.records.append_batches(
            table, buffer, log_end_offset=5, write_offsets=True, partition_leader_epoch=-3
        )
        outcomes.append((bytes(buffer), result.headers.tobytes(), result.base_offsets.tolist(),
                         result.last_offsets.tolist(), result.timestamps.tolist(), result.log_end_offset,
                         [table.entry(pid) for pid in sorted(table)]))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("library", list(BUILDERS))
def test_without_an_epoch_the_builders_leader_epoch_is_left_alone(twin, library):
    original = build(library, "idempotent", GZIP)
    buffer = bytearray(original)
    result = twin.records.append_batches(twin.ProducerStateTable(), buffer, log_end_offset=77, write_offsets=True)
    assert result.base_offsets.tolist() == [77]
    parsed = KafkaPythonBatch(bytes(buffer))
    assert parsed.base_offset == 77
    assert parsed.leader_epoch == KafkaPythonBatch(original).leader_epoch  # 0 or -1, as built
    assert bytes(buffer)[8:] == original[8:]
    assert parsed.validate_crc()


def test_without_write_offsets_the_buffer_is_only_read(twin):
    original, counts, _ = produce_stream(seed=3)
    result = twin.records.append_batches(twin.ProducerStateTable(), original, log_end_offset=10)
    assert (result.error_codes == 0).all()
    assert result.base_offsets[0] == 10
    assert KafkaPythonBatch(original).base_offset == 0


# --- 4. the spec's test vectors (§8.6) ------------------------------------------------------

COMMIT_MARKER_BYTES = bytes.fromhex(
    "000000000000002a00000042000000000240d514e90030000000000000018bcfe568000000018bcfe5680000000000000003e8"
    "0005ffffffff000000012000000008000000010c00000000000700"
)
IDEMPOTENT_BYTES = bytes.fromhex(
    "000000000000000000000039ffffffff02a605d7d30000000000000000018bcfe568000000018bcfe5680000000000000003e8"
    "000500000000000000010e00000001027600"
)
SPEC_TIMESTAMP = 1_700_000_000_000

SPEC_VECTORS = {
    "commit-marker": (COMMIT_MARKER_BYTES, {
        "position": 0, "base_offset": 42, "batch_length": 66, "partition_leader_epoch": 0, "magic": 2,
        "crc": 0x40D514E9, "attributes": 0x30, "last_offset_delta": 0, "base_timestamp": SPEC_TIMESTAMP,
        "max_timestamp": SPEC_TIMESTAMP, "producer_id": 1000, "producer_epoch": 5, "base_sequence": -1,
        "record_count": 1, "compression": 0, "timestamp_type": 0, "is_transactional": True, "is_control": True,
    }),
    "idempotent": (IDEMPOTENT_BYTES, {
        "position": 0, "base_offset": 0, "batch_length": 57, "partition_leader_epoch": -1, "magic": 2,
        "crc": 0xA605D7D3, "attributes": 0, "last_offset_delta": 0, "base_timestamp": SPEC_TIMESTAMP,
        "max_timestamp": SPEC_TIMESTAMP, "producer_id": 1000, "producer_epoch": 5, "base_sequence": 0,
        "record_count": 1, "compression": 0, "timestamp_type": 0, "is_transactional": False, "is_control": False,
    }),
}


@pytest.mark.parametrize("name", list(SPEC_VECTORS))
def test_spec_vectors_scan_to_the_documented_fields(twin, name):
    data, fields = SPEC_VECTORS[name]
    assert len(data) == {"commit-marker": 78, "idempotent": 69}[name]
    headers = twin.records.scan_batches(data)
    assert len(headers) == 1
    assert row_fields(headers[0]) == fields
    assert row_fields(headers[0]) == kafka_python_fields(KafkaPythonBatch(data), 0)
    assert fields["crc"] == pypi_crc32c.crc32c(data[21:]) == twin.crc32c(data[21:])
    assert twin.records.crc_valid(data).tolist() == [True]
    assert KafkaPythonBatch(data).validate_crc() and aiokafka_compiled.DefaultRecordBatch(data).validate_crc()
    assert headers_equal(twin.records.validate_batches(data, origin=Origin.REPLICATION), headers)


def test_spec_vectors_records_as_the_libraries_read_them():
    (marker,) = list(KafkaPythonBatch(COMMIT_MARKER_BYTES))
    assert (marker.offset, marker.commit, marker.version, marker.timestamp) == (42, True, 0, SPEC_TIMESTAMP)
    assert struct.unpack(">hi", marker.value) == (0, 7)  # version 0, coordinator epoch 7
    (record,) = list(aiokafka_compiled.DefaultRecordBatch(COMMIT_MARKER_BYTES))
    assert ControlRecord.parse(record.key) == COMMIT_MARKER != ABORT_MARKER
    (record,) = list(KafkaPythonBatch(IDEMPOTENT_BYTES))
    assert (record.offset, record.key, record.value, record.timestamp) == (0, None, b"v", SPEC_TIMESTAMP)


def test_spec_commit_marker_from_a_client_breaks_rule_3_first(twin):
    # A control batch at base offset 42: rule 3 (base offset 0) comes before rule 7 (control).
    with pytest.raises(InvalidRecordError, match="base_offset: expected 0 from a client .*found 42") as caught:
        twin.records.validate_batches(COMMIT_MARKER_BYTES)
    assert caught.value.code == 87
    client_marker = bytearray(COMMIT_MARKER_BYTES)
    client_marker[:8] = bytes(8)  # the base offset is outside the CRC
    with pytest.raises(InvalidRecordError, match="a client may not send a control batch"):
        twin.records.validate_batches(client_marker)


def transactional_batch(producer_id=1000, producer_epoch=5, count=3):
    return _kafka_python(NONE, True, producer_id, producer_epoch, 0, records_for(count, seed=1))


def commit_marker_scenario(twin):
    """A follower's log: a transaction of pid 1000 (epoch 5) at offsets 0-2, then the §8.6
    COMMIT marker at offset 42. Returns (results, the table)."""
    table = twin.ProducerStateTable()
    data = twin.records.append_batches(table, transactional_batch(), origin=Origin.REPLICATION)
    assert data.error_codes.tolist() == [0] and data.base_offsets.tolist() == [0]
    assert table.entry(1000).current_txn_first_offset == 0
    marker = twin.records.append_batches(table, COMMIT_MARKER_BYTES, origin=Origin.REPLICATION)
    return (data, marker), table


def test_spec_commit_marker_completes_the_ongoing_transaction(twin):
    (_, marker), table = commit_marker_scenario(twin)
    assert marker.error_codes.tolist() == [0], marker.errors
    assert marker.completed_transactions == [CompletedTxn(1000, 0, 42, False)]
    assert (marker.base_offsets.tolist(), marker.last_offsets.tolist()) == ([42], [42])
    assert marker.timestamps.tolist() == [SPEC_TIMESTAMP]  # the marker record's timestamp
    assert marker.log_end_offset == table.map_end_offset == 43
    entry = table.entry(1000)
    assert entry.current_txn_first_offset is None
    assert (entry.producer_epoch, entry.coordinator_epoch, entry.last_timestamp) == (5, 7, SPEC_TIMESTAMP)
    assert entry.batches[-1].last_offset == 2  # a marker adds no batch metadata (spec §2.2 M5)


def test_spec_commit_marker_same_on_both_twins():
    outcomes = []
    for twin in TWINS.values():
        results, table = commit_marker_scenario(twin)
        outcomes.append((
            [(r.headers.tobytes(), r.error_codes.tolist(), r.duplicate.tolist(), r.base_offsets.tolist(),
              r.last_offsets.tolist(), r.timestamps.tolist(), r.log_end_offset, r.valid_bytes,
              r.completed_transactions) for r in results],
            table.entry(1000), table.map_end_offset, len(table),
        ))
    assert outcomes[0] == outcomes[1]


def test_spec_commit_marker_without_a_transaction_completes_nothing(twin):
    table = twin.ProducerStateTable()
    result = twin.records.append_batches(table, COMMIT_MARKER_BYTES, origin=Origin.REPLICATION)
    assert result.error_codes.tolist() == [0]
    assert result.completed_transactions == []  # an empty transaction emits nothing (§2.2 M5)
    assert table.entry(1000).coordinator_epoch == 7


def test_spec_idempotent_vector_appended_then_its_retry_is_a_duplicate(twin):
    table = twin.ProducerStateTable()
    first = bytearray(IDEMPOTENT_BYTES)
    result = twin.records.append_batches(table, first, log_end_offset=500, write_offsets=True,
                                         partition_leader_epoch=2)
    assert (result.base_offsets.tolist(), result.error_codes.tolist()) == ([500], [0])
    assert KafkaPythonBatch(bytes(first)).base_offset == 500 and KafkaPythonBatch(bytes(first)).validate_crc()
    retry = bytearray(IDEMPOTENT_BYTES)
    again = twin.records.append_batches(table, retry, log_end_offset=501, write_offsets=True,
                                        partition_leader_epoch=2)
    assert again.duplicate.tolist() == [True] and again.base_offsets.tolist() == [500]
    assert retry == IDEMPOTENT_BYTES


# --- 5. retries and restarted producers (spec §2.1 rule 10) ------------------------------


def table_state(table):
    return table.map_end_offset, len(table), [table.entry(pid) for pid in sorted(table)]


def test_a_resent_batch_gets_the_original_offsets_and_is_not_written(twin):
    table = twin.ProducerStateTable()
    original = _kafka_python(GZIP, False, 4242, 0, 0, records_for(4, seed=5))
    first = bytearray(original)
    result = twin.records.append_batches(table, first, log_end_offset=100, write_offsets=True,
                                         partition_leader_epoch=3)
    assert (result.base_offsets.tolist(), result.last_offsets.tolist()) == ([100], [103])
    max_timestamp = KafkaPythonBatch(original).max_timestamp
    assert result.timestamps.tolist() == [max_timestamp]
    # another producer writes in between
    other = bytearray(_kafka_python(NONE, False, 77, 0, 0, records_for(2, seed=6)))
    twin.records.append_batches(table, other, log_end_offset=table.map_end_offset, write_offsets=True,
                                partition_leader_epoch=3)
    before = table_state(table)
    # the producer did not see the answer and sends the same bytes again
    retry = bytearray(original)
    again = twin.records.append_batches(table, retry, log_end_offset=table.map_end_offset, write_offsets=True,
                                        partition_leader_epoch=3)
    assert again.error_codes.tolist() == [0] and again.duplicate.tolist() == [True]
    assert (again.base_offsets.tolist(), again.last_offsets.tolist()) == ([100], [103])
    assert again.timestamps.tolist() == [max_timestamp]  # the stored max timestamp
    assert again.log_end_offset == before[0] == 106  # nothing to write: the log end does not move
    assert table_state(table) == before
    assert retry == original  # header untouched: no offset, no leader epoch written
    assert KafkaPythonBatch(bytes(retry)).base_offset == 0


def test_a_retry_in_the_same_buffer_is_a_duplicate_of_the_first(twin):
    table = twin.ProducerStateTable()
    batch = _kafka_python(NONE, False, 9, 2, 0, records_for(3, seed=8))
    buffer = bytearray(batch + batch)
    result = twin.records.append_batches(table, buffer, log_end_offset=0, write_offsets=True)
    assert result.duplicate.tolist() == [False, True]
    assert result.base_offsets.tolist() == [0, 0] and result.last_offsets.tolist() == [2, 2]
    assert result.log_end_offset == 3
    assert buffer[len(batch) :] == batch  # the second copy is not written


def test_only_the_last_five_batches_are_retried_as_duplicates(twin):
    table = twin.ProducerStateTable()
    batches = [_kafka_python(NONE, False, 31, 0, 2 * i, records_for(2, seed=i)) for i in range(6)]
    result = twin.records.append_batches(table, b"".join(batches), log_end_offset=0)
    assert (result.error_codes == 0).all()
    retry = twin.records.append_batches(table, batches[1], log_end_offset=12)
    assert retry.duplicate.tolist() == [True] and retry.base_offsets.tolist() == [2]
    too_old = twin.records.append_batches(table, batches[0], log_end_offset=12)
    assert too_old.error_codes.tolist() == [45] and not too_old.duplicate.any()
    assert "Out of order sequence number for producer 31" in str(too_old.errors[0])


def test_a_restarted_producer_with_a_new_producer_id_is_appended(twin):
    table = twin.ProducerStateTable()
    records = records_for(3, seed=9)
    original = _kafka_python(NONE, False, 5000, 0, 0, records)
    twin.records.append_batches(table, original, log_end_offset=0)
    # the producer restarts: a new producer id from InitProducerId, sequences from 0 again
    restarted = bytearray(_kafka_python(NONE, False, 5001, 0, 0, records))
    assert restarted[21:43] + restarted[51:] == original[21:43] + original[51:]  # only pid and CRC differ
    result = twin.records.append_batches(table, restarted, log_end_offset=3, write_offsets=True,
                                         partition_leader_epoch=1)
    assert result.error_codes.tolist() == [0] and result.duplicate.tolist() == [False]
    assert result.base_offsets.tolist() == [3] and result.log_end_offset == 6
    parsed = KafkaPythonBatch(bytes(restarted))
    assert (parsed.base_offset, parsed.producer_id, parsed.leader_epoch) == (3, 5001, 1)
    assert parsed.validate_crc()
    assert [r.value for r in KafkaPythonBatch(bytes(restarted))] == [value for _, _, value, _ in records]
    assert sorted(table) == [5000, 5001]
    assert table.entry(5000).batches[-1].last_offset == 2
