"""Snapshot files (spec §4): Kafka's format byte for byte, dedup's full-window format, both
twins writing the same bytes and raising the same errors, atomic files.

Spec references: §1.2 (entry fields, window of 5), §1.3 (BatchMetadata), §4.1 (file names),
§4.2 (Kafka's layout), §4.3 (what is written: the last batch, Timestamp = lastTimestamp),
§4.4 (reading: one batch iff LastOffset >= 0, txn iff >= 0, CRC over [6, end)), §4.7 (test
vectors), §5.1 (a reload: producers.put, later entries win), §8.4 (decrementSequence), §8.5
(CRC-32C), §10 (write to a temporary file and rename).

Test files are built here with :mod:`struct` and the PyPI ``crc32c`` package, independently
of both codecs.
"""

from __future__ import annotations

import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

import crc32c as pypi_crc32c
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from snapshot_vectors import BAD_CRC_VECTOR, EMPTY_KAFKA_VECTOR, TWO_ENTRY_KAFKA_VECTOR

import dedup
from dedup import reference, snapshot
from dedup._types import BatchMetadata, Origin, ProducerStateEntry
from dedup.errors import CorruptSnapshotError, KafkaError
from dedup.reference import snapshot as twin_codec
from dedup.snapshot import (
    SNAPSHOT_FORMATS,
    decode_snapshot,
    encode_snapshot,
    read_snapshot,
    snapshot_file_name,
    snapshot_format,
    snapshot_offset,
    write_snapshot,
)

_state = pytest.importorskip("dedup._state")
from dedup import _snapshot as compiled_codec  # noqa: E402
from dedup import _testing  # noqa: E402

Compiled = _state.ProducerStateTable
Twin = reference.ProducerStateTable
CODECS = {"compiled": compiled_codec, "reference": twin_codec}

INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

TWO_ENTRIES = (
    ProducerStateEntry(
        producer_id=1,
        producer_epoch=2,
        batches=(BatchMetadata(last_sequence=1, last_offset=2, offset_delta=3, timestamp=-1),),
        coordinator_epoch=3,
        last_timestamp=-1,
        current_txn_first_offset=100,
    ),
    ProducerStateEntry(
        producer_id=11,
        producer_epoch=12,
        batches=(),
        coordinator_epoch=13,
        last_timestamp=123456,
        current_txn_first_offset=None,
    ),
)


# --- independent writers of test files ------------------------------------------------------


def kafka_file(entries, *, version=1, count=None, crc=None, trailing=b""):
    """Kafka's layout (§4.2) from 8-tuples (ProducerId, Epoch, LastSequence, LastOffset,
    OffsetDelta, Timestamp, CoordinatorEpoch, CurrentTxnFirstOffset); the crc covers
    [6, end), trailing bytes included, as Kafka's would."""
    body = struct.pack(">i", len(entries) if count is None else count)
    body += b"".join(struct.pack(">qhiqiqiq", *entry) for entry in entries) + trailing
    return struct.pack(">hI", version, pypi_crc32c.crc32c(body) if crc is None else crc) + body


def full_file(entries, *, window=5, map_end_offset=100, count=None, version=1, magic=b"DDPS", trailing=b"", crc=None):
    """The full format from (producer_id, epoch, coordinator_epoch, last_timestamp, txn,
    batches[, batch_count]) with batches as (last_sequence, offset_delta, last_offset, timestamp)."""
    body = struct.pack(">4shhqi", magic, version, window, map_end_offset, len(entries) if count is None else count)
    for producer_id, epoch, coordinator_epoch, last_timestamp, txn, batches, *batch_count in entries:
        written = batch_count[0] if batch_count else len(batches)
        body += struct.pack(">qhiqqB", producer_id, epoch, coordinator_epoch, last_timestamp, txn, written)
        body += b"".join(struct.pack(">iiqq", *batch) for batch in batches)
    body += trailing
    return body + struct.pack(">I", pypi_crc32c.crc32c(body) if crc is None else crc)


def full2_file(
    entries,
    *,
    window=5,
    map_end_offset=100,
    count=None,
    version=2,
    magic=b"DDPS",
    escaped=None,
    escapes=None,
    trailing=b"",
    crc=None,
):
    """The full format's version 2 from the same tuples as full_file: records of 55 + 12 x
    (window - 1) bytes, the newest batch in full, the older ones as gaps from it in narrow
    fields, what does not fit escaped to the list after the records. ``escaped`` replaces that
    list, ``escapes`` the count written, ``trailing`` comes between the list and the count;
    batches beyond the window's slots are dropped."""
    body = struct.pack(">4shhqi", magic, version, window, map_end_offset, len(entries) if count is None else count)
    escaped_values = []
    for producer_id, epoch, coordinator_epoch, last_timestamp, txn, batches, *batch_count in entries:
        written = batch_count[0] if batch_count else len(batches)
        newest_sequence, newest_delta, newest_offset, newest_timestamp = batches[-1] if batches else (0, 0, 0, 0)
        body += struct.pack(">qhiqqB", producer_id, epoch, coordinator_epoch, last_timestamp, txn, written)
        body += struct.pack(">iiqq", newest_sequence, newest_delta, newest_offset, newest_timestamp)
        slots = b""
        for last_sequence, offset_delta, last_offset, timestamp in batches[:-1][: window - 1]:
            offset_gap = (newest_offset - last_offset) % 2**64
            if offset_gap >= 0xFFFFFFFF:
                offset_gap = 0xFFFFFFFF
                escaped_values.append(last_offset)
            timestamp_gap = (newest_timestamp - timestamp + 2**63) % 2**64 - 2**63
            if not -(2**31) < timestamp_gap < 2**31:
                timestamp_gap = -(2**31)
                escaped_values.append(timestamp)
            sequence_gap = (newest_sequence - last_sequence) % 2**32
            if sequence_gap >= 0xFFFF:
                sequence_gap = 0xFFFF
                escaped_values.append(last_sequence)
            if not 0 <= offset_delta < 0xFFFF:
                escaped_values.append(offset_delta)
                offset_delta = 0xFFFF
            slots += struct.pack(">IiHH", offset_gap, timestamp_gap, sequence_gap, offset_delta)
        body += slots.ljust(12 * (window - 1), b"\0")
    escaped = escaped_values if escaped is None else escaped
    body += b"".join(struct.pack(">q", value) for value in escaped) + trailing
    body += struct.pack(">i", len(escaped) if escapes is None else escapes)
    return body + struct.pack(">I", pypi_crc32c.crc32c(body) if crc is None else crc)


def state(table):
    """Everything a table holds, in its order."""
    return table.window, table.map_end_offset, tuple(table.entry(producer_id) for producer_id in table)


def kafka_view(table_state):
    """What Kafka's format keeps of a state (§4.3, §4.4): the last batch, stamped with the
    entry's last_timestamp (the file has one Timestamp field)."""
    window, map_end_offset, entries = table_state
    kept = []
    for entry in entries:
        batches = ()
        if entry.batches:
            last = entry.batches[-1]
            batches = (BatchMetadata(last.last_sequence, last.last_offset, last.offset_delta, entry.last_timestamp),)
        kept.append(
            ProducerStateEntry(
                entry.producer_id,
                entry.producer_epoch,
                batches,
                entry.coordinator_epoch,
                entry.last_timestamp,
                entry.current_txn_first_offset,
            )
        )
    return window, map_end_offset, tuple(kept)


def both_reject(function_name, data, *args):
    """Both codecs reject ``data`` with the same CorruptSnapshotError message; returns it."""
    messages = []
    for codec in CODECS.values():
        with pytest.raises(CorruptSnapshotError) as caught:
            getattr(codec, function_name)(data, *args)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    return messages[0]


# --- random tables, the same operations on both twins --------------------------------------

pids = st.sampled_from([0, 1, 2, 3, 1000, INT64_MAX])
epochs = st.sampled_from([0] * 8 + [1, 2, -1, INT16_MAX, INT16_MIN])  # mostly 0: an epoch change clears batches
sequences = st.one_of(st.integers(0, 6), st.integers(INT32_MAX - 2, INT32_MAX), st.just(-1))
timestamps = st.one_of(st.integers(-3, 50), st.sampled_from([INT64_MIN, INT64_MAX]))
gaps = st.sampled_from([0, 0, 1, 5])
appends = st.tuples(
    st.just("append"),
    pids,
    epochs,
    sequences,
    st.sampled_from([1, 1, 2, 3, 100]),
    gaps,
    timestamps,
    st.sampled_from([Origin.REPLICATION, Origin.REPLICATION, Origin.CLIENT, Origin.COORDINATOR]),
    st.sampled_from([False] * 5 + [True]),  # rarely: a transaction refuses plain batches until its marker
)
markers = st.tuples(
    st.just("marker"),
    pids,
    epochs,
    st.sampled_from([0, 1, 5]),
    gaps,
    st.booleans(),
    timestamps,
    st.sampled_from([Origin.COORDINATOR, Origin.REPLICATION]),
)
expirations = st.tuples(st.just("expire"), st.integers(-5, 60), st.sampled_from([10, 40, 1 << 62]))
operations = st.lists(st.one_of(*[appends] * 8, markers, expirations), min_size=10, max_size=80)
windows = st.sampled_from([1, 2, 3, 5, 7])


def apply(table, ops):
    """Run ``ops`` on ``table``; the outcome of each (verdict, completed txn, count or error)."""
    outcomes = []
    for op in ops:
        try:
            if op[0] == "append":
                _, pid, epoch, sequence, count, gap, stamp, origin, txn = op
                result = table.append(
                    pid,
                    epoch,
                    sequence,
                    count,
                    table.map_end_offset + gap,
                    max_timestamp=stamp,
                    origin=origin,
                    transactional=txn,
                )
                outcomes.append((result.duplicate, result.base_offset, result.last_offset, result.timestamp))
            elif op[0] == "marker":
                _, pid, epoch, coordinator_epoch, gap, commit, stamp, origin = op
                offset = table.map_end_offset + gap
                outcomes.append(
                    table.append_marker(
                        pid, epoch, coordinator_epoch, offset, commit=commit, timestamp=stamp, origin=origin
                    )
                )
            else:
                _, now, expiration = op
                outcomes.append(table.remove_expired(now, expiration))
        except KafkaError as error:
            outcomes.append((type(error).__name__, str(error)))
    return outcomes


# --- §4.7: the spec's vectors, byte for byte ------------------------------------------------


def test_empty_table_is_the_spec_vector_in_kafkas_format(impl):
    assert encode_snapshot(impl(), "kafka") == EMPTY_KAFKA_VECTOR
    assert decode_snapshot(EMPTY_KAFKA_VECTOR, table_class=impl).map_end_offset == 0


def test_two_entry_vector_reads_as_the_spec_says_and_writes_back_byte_for_byte(impl):
    """§4.7 and §4.4: pid 1 has one batch (LastOffset 2 >= 0) and a transaction at 100; pid 11
    has none (LastOffset -1) and no transaction (-1). Entries keep the file's order."""
    table = decode_snapshot(TWO_ENTRY_KAFKA_VECTOR, map_end_offset=101, table_class=impl)
    assert type(table) is impl
    assert state(table) == (5, 101, TWO_ENTRIES)
    assert encode_snapshot(table, "kafka") == TWO_ENTRY_KAFKA_VECTOR
    assert table.entry(1).first_sequence == INT32_MAX - 1  # decrementSequence(1, 3), §8.4


def test_the_vectors_second_entry_from_the_tables_own_operations(impl):
    """A marker for an unknown producer makes exactly the vector's pid 11 (no batch, §2.2 M4)."""
    table = impl()
    table.append_marker(11, 12, 13, 0, commit=True, timestamp=123456)
    data = encode_snapshot(table, "kafka")
    assert data == kafka_file([(11, 12, -1, -1, 0, 123456, 13, -1)])
    assert data[10:] == TWO_ENTRY_KAFKA_VECTOR[56:]  # the vector's second entry, byte for byte


def test_kafka_layout_field_by_field(impl):
    """§4.2/§4.3 read back with struct at the documented offsets: the last retained batch, the
    entry's last_timestamp as Timestamp (not the batch's), -1 for no transaction."""
    table = impl(3)
    end = 0
    for sequence in range(4):  # four batches through a window of 3: the ring wraps
        end = table.append(1000, 5, 2 * sequence, 2, end, max_timestamp=10 + sequence).last_offset + 1
    table.append_marker(7, 1, 3, end, commit=False, timestamp=99)
    table.append(7, 1, 0, 1, end + 1, max_timestamp=44, transactional=True)
    data = encode_snapshot(table, "kafka")
    assert len(data) == 10 + 46 * 2
    version, crc, count = struct.unpack_from(">hIi", data, 0)
    assert (version, count) == (1, 2) and crc == pypi_crc32c.crc32c(data[6:])
    assert struct.unpack_from(">qhiqiqiq", data, 10) == (1000, 5, 7, 7, 1, 13, -1, -1)
    assert struct.unpack_from(">qhiqiqiq", data, 56) == (7, 1, 0, 9, 0, 44, 3, 9)


def test_full_layout_field_by_field(impl):
    table = impl(3)
    end = 0
    for sequence in range(4):
        end = table.append(1000, 5, 2 * sequence, 2, end, max_timestamp=10 + sequence).last_offset + 1
    table.append_marker(7, 1, 3, end, commit=False, timestamp=99)
    data = encode_snapshot(table, "full")
    assert data[:4] == b"DDPS"
    assert struct.unpack_from(">hhqi", data, 4) == (2, 3, end + 1, 2)
    # Records of 55 + 12 x 2 = 79 bytes: the fixed part and the newest batch, then the older
    # batches oldest first as (offset gap, timestamp gap, sequence gap, offset delta).
    assert struct.unpack_from(">qhiqqBiiqq", data, 20) == (1000, 5, -1, 13, -1, 3, 7, 1, 7, 13)
    assert [struct.unpack_from(">IiHH", data, 75 + 12 * k) for k in range(2)] == [(4, 2, 4, 1), (2, 1, 2, 1)]
    assert struct.unpack_from(">qhiqqBiiqq", data, 99) == (7, 1, 3, 99, -1, 0, 0, 0, 0, 0)
    assert data[154:178] == bytes(24)  # a producer without batches: its slots are zeros
    assert struct.unpack_from(">i", data, 178) == (0,)  # no escaped values
    assert len(data) == 20 + 2 * 79 + 8
    assert struct.unpack_from(">I", data, len(data) - 4)[0] == pypi_crc32c.crc32c(data[:-4])
    assert data == full2_file(
        [(1000, 5, -1, 13, -1, [(3, 1, 3, 11), (5, 1, 5, 12), (7, 1, 7, 13)]), (7, 1, 3, 99, -1, [])],
        window=3,
        map_end_offset=end + 1,
    )


def test_full_format_escapes_what_does_not_fit(impl):
    """Gaps past a narrow field (offsets 2^33 apart, timestamps 2^40 ms, sequences 70,001, an
    offset delta of 69,999) go to the escape list, in file order, and come back exactly."""
    table = impl(3)
    table.append(1, 0, 0, 1, 0, max_timestamp=-5)
    table.append(1, 0, 1, 70_000, 1 << 33, max_timestamp=1 << 40)
    table.append(1, 0, 70_001, 1, (1 << 33) + 70_000, max_timestamp=(1 << 40) + 1)
    data = encode_snapshot(table, "full")
    slots = [struct.unpack_from(">IiHH", data, 75 + 12 * k) for k in range(2)]
    assert slots == [(0xFFFFFFFF, -(2**31), 0xFFFF, 0), (1, 1, 1, 0xFFFF)]
    # slot 0: last offset, timestamp, last sequence; slot 1: offset delta
    assert struct.unpack_from(">4q", data, 20 + 79) == (0, -5, 0, 69_999)
    assert struct.unpack_from(">i", data, len(data) - 8) == (4,)
    assert len(data) == 20 + 79 + 4 * 8 + 8
    batches = [
        (0, 0, 0, -5),
        (70_000, 69_999, (1 << 33) + 69_999, 1 << 40),
        (70_001, 0, (1 << 33) + 70_000, (1 << 40) + 1),
    ]
    assert data == full2_file([(1, 0, -1, (1 << 40) + 1, -1, batches)], window=3, map_end_offset=(1 << 33) + 70_001)
    for cls in (Compiled, Twin):
        assert state(decode_snapshot(data, table_class=cls)) == state(table)


def test_full_format_version_1_is_still_read(impl):
    """Files written before version 2 read as before; they are rewritten as version 2."""
    entries = [(1000, 5, -1, 13, -1, [(3, 1, 3, 11), (5, 1, 5, 12), (7, 1, 7, 13)]), (7, 1, 3, 99, -1, [])]
    table = decode_snapshot(full_file(entries, window=3, map_end_offset=9), table_class=impl)
    assert table.window == 3 and table.map_end_offset == 9
    assert [batch.last_offset for batch in table.entry(1000).batches] == [3, 5, 7]
    assert encode_snapshot(table) == full2_file(entries, window=3, map_end_offset=9)


def test_empty_table_in_the_full_format(impl):
    body = b"DDPS" + struct.pack(">hhqii", 2, 5, 0, 0, 0)
    assert encode_snapshot(impl()) == body + struct.pack(">I", pypi_crc32c.crc32c(body))
    assert encode_snapshot(impl(255), "full")[6:8] == b"\x00\xff"


# --- both twins, the same bytes -------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window=windows, ops=operations)
@example(window=1, ops=[("append", 1, 0, 0, 1, 0, 5, Origin.CLIENT, False)] * 2)
@example(window=3, ops=[("append", 1, 0, s, 1, 0, s, Origin.CLIENT, False) for s in range(8)])
def test_twins_write_identical_bytes_and_read_them_back(window, ops):
    compiled, twin = Compiled(window), Twin(window)
    assert apply(compiled, ops) == apply(twin, ops)
    original = state(compiled)
    assert state(twin) == original
    for kind in SNAPSHOT_FORMATS:
        data = encode_snapshot(compiled, kind)
        assert encode_snapshot(twin, kind) == data, kind
        for cls in (Compiled, Twin):
            loaded = decode_snapshot(data, window=window, map_end_offset=compiled.map_end_offset, table_class=cls)
            assert type(loaded) is cls
            assert state(loaded) == (original if kind == "full" else kafka_view(original))
            assert encode_snapshot(loaded, kind) == data


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window=windows, before=operations, after=operations)
def test_a_full_snapshot_reload_is_invisible(window, before, after):
    """The full format keeps the whole window: after a reload, the same operations give the
    same verdicts (duplicates included) and the same state as on the table never reloaded.

    The same entries: a snapshot lists the live entries only, so the holes that
    remove_expired left in the original are not in the reloaded table, and a producer added
    after the reload may come at another place in the table's order than in the original."""
    original = Compiled(window)
    apply(original, before)
    data = encode_snapshot(original)
    reloaded = [decode_snapshot(data, table_class=cls) for cls in (Compiled, Twin)]
    assert all(state(table) == state(original) for table in reloaded)
    expected = apply(original, after)
    for table in reloaded:
        assert apply(table, after) == expected
        window_, map_end_offset, entries = state(table)
        assert (window_, map_end_offset) == state(original)[:2]
        assert sorted(entries, key=by_producer) == sorted(state(original)[2], key=by_producer)
    assert state(reloaded[0]) == state(reloaded[1])  # the twins agree on the order, though


def by_producer(entry):
    return entry.producer_id


def test_kafka_format_keeps_one_batch_per_producer_and_full_keeps_the_window(impl):
    table = impl()
    end = 0
    for sequence in range(7):
        for pid in (1, 2):
            end = table.append(pid, 0, sequence, 1, end, max_timestamp=sequence).last_offset + 1
    full = decode_snapshot(encode_snapshot(table, "full"), table_class=impl)
    kafka = decode_snapshot(encode_snapshot(table, "kafka"), map_end_offset=end, table_class=impl)
    for pid in (1, 2):
        assert full.entry(pid) == table.entry(pid) and len(full.entry(pid).batches) == 5
        assert kafka.entry(pid).batches == (table.entry(pid).batches[-1],)


def test_duplicates_after_a_reload(impl):
    """§4.3: after Kafka's format only the last batch is a duplicate, an older retry is out of
    order; after the full format every batch of the window is still a duplicate."""
    table = impl()
    end = 0
    offsets = []
    for sequence in range(5):
        result = table.append(1000, 5, sequence, 1, end, max_timestamp=100 + sequence)
        offsets.append(result.base_offset)
        end = result.last_offset + 1
    full = decode_snapshot(encode_snapshot(table, "full"), table_class=impl)
    for sequence in range(5):
        retry = full.append(1000, 5, sequence, 1, end)
        assert retry.duplicate and retry.base_offset == offsets[sequence] and retry.timestamp == 100 + sequence
    kafka = decode_snapshot(encode_snapshot(table, "kafka"), map_end_offset=end, table_class=impl)
    assert kafka.append(1000, 5, 4, 1, end).duplicate
    with pytest.raises(dedup.OutOfOrderSequenceError):
        kafka.append(1000, 5, 3, 1, end)
    assert kafka.append(1000, 5, 5, 1, end).base_offset == end  # the next one goes on


def test_a_reloaded_full_window_keeps_turning(impl):
    """The ring invariant after a load (head 0, batches in slots 0..count-1): the next batch
    evicts the oldest, as on the original."""
    table = impl(3)
    end = 0
    for sequence in range(5):
        end = table.append(9, 0, sequence, 1, end).last_offset + 1
    loaded = decode_snapshot(encode_snapshot(table), table_class=impl)
    for t in (table, loaded):
        t.append(9, 0, 5, 1, end)
        t.append(9, 0, 6, 1, end + 1)
    assert state(loaded) == state(table)
    assert [b.last_sequence for b in loaded.entry(9).batches] == [4, 5, 6]


def test_a_repeated_producer_id_in_kafkas_format_later_wins_first_position_stays(impl):
    """Kafka loads entries with producers.put: a later entry for the same id replaces the
    earlier one and the map keeps its first position (our table: its first slot)."""
    data = kafka_file(
        [
            (5, 0, 0, 0, 0, 1, -1, -1),
            (6, 0, 0, 1, 0, 2, -1, -1),
            (5, 3, 9, 7, 2, 8, 4, 6),
        ]
    )
    table = decode_snapshot(data, map_end_offset=10, table_class=impl)
    assert list(table) == [5, 6]
    assert table.entry(5) == ProducerStateEntry(5, 3, (BatchMetadata(9, 7, 2, 8),), 4, 8, 6)


def test_kafka_entries_without_a_batch_ignore_its_fields(impl):
    """§4.4: a batch iff LastOffset >= 0 (so -7 is none too); a transaction iff >= 0."""
    data = kafka_file([(5, 1, 12, -7, -3, 40, 2, -9)])
    entry = decode_snapshot(data, table_class=impl).entry(5)
    assert entry == ProducerStateEntry(5, 1, (), 2, 40, None)


def test_entries_follow_the_table_order_after_expiration(impl):
    table = impl()
    end = 0
    for pid in (30, 10, 20, 40):
        end = table.append(pid, 0, 0, 1, end, max_timestamp=pid).last_offset + 1
    table.remove_expired(35, 10)  # removes 10 and 20
    data = encode_snapshot(table, "kafka")
    assert [struct.unpack_from(">q", data, 10 + 46 * i)[0] for i in range(2)] == [30, 40]


def test_decoded_compiled_table_is_presized_and_usable():
    table = Compiled()
    pids = list(range(5000))
    table.append_many(pids, [0] * 5000, [0] * 5000, [1] * 5000, log_end_offset=0)
    loaded = decode_snapshot(encode_snapshot(table), table_class=Compiled)
    report = loaded.capacity_report()
    assert report["producers"] == 5000 and report["entry_capacity"] >= 5000 and report["load_factor"] <= 0.8
    assert loaded.entry(0).last_sequence == 0
    result = loaded.check(4999, 0, 1, 1, 5000)
    loaded.update(result)  # the decoded table's generation is consistent with its checks
    assert loaded.entry(4999).last_sequence == 1


# --- readers reject, both twins alike (§4.4) ------------------------------------------------

GOOD_KAFKA_ENTRY = (5, 0, 3, 10, 1, 7, -1, -1)


@pytest.mark.parametrize(
    "data, expected",
    [
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
    ],
    ids=lambda value: value[:40] if isinstance(value, str) else None,
)
def test_kafka_reader_rejects(data, expected):
    assert both_reject("decode_kafka", data).startswith(expected)


def full_entry(pid=5, txn=-1, batches=((3, 1, 10, 7),), **extra):
    return (pid, 0, -1, 7, txn, list(batches), *extra.values())


@pytest.mark.parametrize(
    "data, expected",
    [
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
    ],
    ids=lambda value: value[:50] if isinstance(value, str) else None,
)
def test_full_reader_rejects(data, expected):
    assert both_reject("decode_full", data).startswith(expected)


def full2_entry(pid=5, txn=-1, batches=((3, 1, 10, 7),), **extra):
    return (pid, 0, -1, 7, txn, list(batches), *extra.values())


@pytest.mark.parametrize(
    "data, expected",
    [
        (
            full2_file([])[:27],
            "full snapshot: too short: expected at least 28 bytes (header, escape count and crc), found 27",
        ),
        (full2_file([], window=0), "full snapshot: window out of range: expected 1..255, found 0"),
        (full2_file([], count=-1), "full snapshot: negative producer count: expected >= 0, found -1"),
        (full2_file([], escapes=-1), "full snapshot: negative escaped value count: expected >= 0, found -1"),
        (
            full2_file([full2_entry()], count=2),
            "full snapshot: short file: 2 producers of 103 bytes (window 5) and 0 escaped values need "
            "20 + 103 x 2 + 8 x 0 + 8 = 234 bytes, found 131",
        ),
        (
            full2_file([full2_entry()], trailing=b"xy"),
            "full snapshot: 2 trailing bytes: 1 producers of 103 bytes (window 5) and 0 escaped values need "
            "20 + 103 x 1 + 8 x 0 + 8 = 131 bytes, found 133",
        ),
        (
            full2_file([full2_entry()], escaped=[0]),
            "full snapshot: 1 escaped values unused: the records use 0 of the 1 the file holds",
        ),
        (
            full2_file([], crc=0),
            "full snapshot: CRC-32C of bytes [0, 24) does not match: stored crc 0x00000000, computed crc ",
        ),
        (
            full2_file([full2_entry(batches=[(3, 1, 10, 7)] * 2, count=9)]),
            "full snapshot: entry 0: batch count 9 exceeds the window: expected 0..5",
        ),
        (full2_file([full2_entry(pid=-1)]), "full snapshot: entry 0: producer id -1 is negative: expected >= 0"),
        (
            full2_file([full2_entry(txn=100)]),
            "full snapshot: entry 0 (producer id 5): current txn first offset 100: expected -1 (none) or an offset "
            "in [0, 100)",
        ),
        (
            full2_file([full2_entry(), full2_entry()]),
            "full snapshot: entry 1: producer id 5 repeats entry 0: expected unique producer ids",
        ),
        (
            full2_file([full2_entry(batches=[(1, 0, 1 << 40, 7), (3, 1, 10, 7)])], escaped=[]),
            "full snapshot: entry 0 (producer id 5), batch 0: escaped value 0 is missing: the file holds 0",
        ),
        (
            full2_file([full2_entry(batches=[(1, 0, 4, 7), (3, -1, 10, 7)])]),
            "full snapshot: entry 0 (producer id 5), batch 1: offset delta -1 is negative: expected >= 0",
        ),
        (
            full2_file([full2_entry(batches=[(1, 70_000, 4, 7), (3, 1, 10, 7)])]),
            "full snapshot: entry 0 (producer id 5), batch 0: last offset 4 is below its offset delta 70000",
        ),
        (
            full2_file([full2_entry(batches=[(1, 0, 4, 7), (3, 1, 100, 7)])]),
            "full snapshot: entry 0 (producer id 5), batch 1: last offset 100 is not below the map end offset: "
            "expected < 100",
        ),
    ],
    ids=lambda value: value[:50] if isinstance(value, str) else None,
)
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
    for codec in CODECS.values():
        with pytest.raises(TypeError, match="table_class must be"):
            codec.decode_kafka(EMPTY_KAFKA_VECTOR, 5, 0, Twin if codec is compiled_codec else Compiled)
        with pytest.raises(TypeError, match="data must be a C-contiguous buffer"):
            codec.decode_full(12)


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
        twin_codec.encode_full(Compiled())
    with pytest.raises(TypeError):
        compiled_codec.encode_kafka(Twin())


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


# --- files ----------------------------------------------------------------------------------


def filled(cls, producers=3):
    table = cls()
    end = 0
    for sequence in range(3):
        for pid in range(producers):
            end = table.append(pid, 0, sequence, 1, end, max_timestamp=sequence).last_offset + 1
    return table


def test_file_names_and_offsets():
    assert snapshot_file_name(1234) == "00000000000000001234.snapshot"  # §4.1
    assert snapshot_file_name(INT64_MAX) == "09223372036854775807.snapshot"
    assert snapshot_offset("00000000000000001234.snapshot") == 1234
    assert snapshot_offset(Path("/a/b") / "00000000000000000007.snapshot.deleted") == 7
    assert snapshot_offset(b"/a/00000000000000000009.snapshot") == 9
    for name in ("abc.snapshot", "1234", ".snapshot", "99999999999999999999.snapshot", "\u0661\u0662.snapshot", "-1.s"):
        with pytest.raises(ValueError, match="expected a file name that starts with an offset"):
            snapshot_offset(name)
    with pytest.raises(ValueError, match="offset must be in"):
        snapshot_file_name(-1)
    with pytest.raises(TypeError, match="offset must be an integer"):
        snapshot_file_name("1")


@pytest.mark.parametrize("kind", SNAPSHOT_FORMATS)
def test_write_then_read(tmp_path, impl, kind):
    table = filled(impl)
    path = tmp_path / snapshot_file_name(table.map_end_offset)
    write_snapshot(path, table, kind)
    assert path.read_bytes() == encode_snapshot(table, kind)
    assert os.listdir(tmp_path) == [path.name]
    loaded = read_snapshot(path, table_class=impl)
    expected = state(table) if kind == "full" else kafka_view(state(table))
    assert state(loaded) == expected  # Kafka's format: map end offset from the file name
    if kind == "kafka":
        assert read_snapshot(str(path), map_end_offset=3, table_class=impl).map_end_offset == 3
    else:
        with pytest.raises(ValueError, match="differs from the full snapshot's map end offset"):
            read_snapshot(str(path), map_end_offset=3, table_class=impl)


@pytest.mark.parametrize("kind", SNAPSHOT_FORMATS)
def test_a_bytes_path_is_written_and_read(tmp_path, impl, kind):
    # A bytes path is decoded once where it enters (dedup._args.path), so the temporary file's
    # name joins as str: it was "Can't mix strings and bytes in path components".
    table = filled(impl)
    path = tmp_path / snapshot_file_name(table.map_end_offset)
    write_snapshot(os.fsencode(path), table, kind)
    assert os.listdir(tmp_path) == [path.name]
    assert path.read_bytes() == encode_snapshot(table, kind)
    assert read_snapshot(os.fsencode(path), table_class=impl).map_end_offset == table.map_end_offset


def test_kafka_map_end_offset_without_kafkas_file_name_is_zero(tmp_path):
    path = tmp_path / "state.snapshot"
    write_snapshot(path, Twin(), "kafka")
    assert read_snapshot(path).map_end_offset == 0
    named = tmp_path / "42.snapshot"  # not 20 digits: not Kafka's name
    write_snapshot(named, Twin(), "kafka")
    assert read_snapshot(named).map_end_offset == 0


def test_written_file_has_the_umasks_permissions(tmp_path):
    path = tmp_path / "a.snapshot"
    write_snapshot(path, Twin())
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_a_shorter_rewrite_leaves_no_stale_bytes(tmp_path):
    """§10: Kafka opens without truncating, so a shorter rewrite would keep a tail that fails
    the CRC; a new file renamed over the old one cannot."""
    path = tmp_path / "a.snapshot"
    write_snapshot(path, filled(Compiled, 50), "kafka")
    write_snapshot(path, Compiled(), "kafka")
    assert path.read_bytes() == EMPTY_KAFKA_VECTOR


@pytest.mark.parametrize("failing", ["write", "fsync", "replace", "interrupt"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, impl, failing):
    path = tmp_path / "00000000000000000009.snapshot"
    write_snapshot(path, filled(impl))
    old = path.read_bytes()

    def boom(*args, **kwargs):
        if failing == "interrupt":
            raise KeyboardInterrupt
        raise OSError(28, "No space left on device")

    table = filled(impl, 40)
    monkeypatch.setattr(os, "write" if failing == "interrupt" else failing, boom)
    with pytest.raises(KeyboardInterrupt if failing == "interrupt" else OSError):
        write_snapshot(path, table)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == [path.name]
    table.append(0, 0, 3, 1, table.map_end_offset)  # not left busy


def test_an_unwritable_table_leaves_nothing_behind(tmp_path, impl):
    path = tmp_path / "a.snapshot"
    path.write_bytes(b"old")
    table = decode_snapshot(TWO_ENTRY_KAFKA_VECTOR, map_end_offset=50, table_class=impl)
    with pytest.raises(ValueError, match="cannot write a full snapshot"):
        write_snapshot(path, table)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.snapshot"]
    write_snapshot(path, table, "kafka")  # Kafka's format holds it
    assert read_snapshot(path, map_end_offset=50, table_class=impl).entry(1) == TWO_ENTRIES[0]


@pytest.mark.parametrize("kind", SNAPSHOT_FORMATS)
@pytest.mark.parametrize("size", [8192, 8193, 9000, 65536, 1 << 20])
@pytest.mark.parametrize("holes", [False, True])
def test_compiled_writer_pieces_are_the_snapshot(kind, size, holes):
    """The pieces write_snapshot streams are encode_snapshot's bytes, whatever the buffer size
    (Kafka's crc patched at its offset afterwards, as Kafka's writer does, §4.3), and with
    holes left by remove_expired among the entries (skipped, as by encode_snapshot)."""
    table = Compiled(7)
    for sequence in range(9):  # windows full and wrapped, entries of 31 + 7 x 24 bytes
        stamps = [10 if holes and pid % 3 == 0 else 100 for pid in range(400)]
        table.append_many(list(range(400)), [0] * 400, [sequence] * 400, [1] * 400, stamps,
                          log_end_offset=table.map_end_offset)  # fmt: skip
    if holes:
        assert table.remove_expired(50, 10) == 134
        assert table.capacity_report()["holes"] == 134
        twin = decode_snapshot(encode_snapshot(table, "full"), table_class=reference.ProducerStateTable)
        assert twin.producer_ids().tolist() == [pid for pid in range(400) if pid % 3]
    buffer = bytearray(size)
    pieces = []
    with compiled_codec.SnapshotWriter(table, kind) as writer:
        while length := writer.fill(buffer):
            assert length <= size
            pieces.append(bytes(buffer[:length]))
        assert writer.fill(buffer) == 0
        data = bytearray(b"".join(pieces))
        assert len(data) == writer.size
        if writer.crc_offset is not None:
            assert data[2:6] == bytes(4)
            struct.pack_into(">I", data, writer.crc_offset, writer.crc)
    assert bytes(data) == encode_snapshot(table, kind)


def test_compiled_writer_keeps_the_table_busy_and_checks_its_arguments():
    table = filled(Compiled)
    writer = compiled_codec.SnapshotWriter(table, "full")
    with pytest.raises(RuntimeError, match="needs an open block"):
        writer.fill(bytearray(8192))
    with writer:
        with pytest.raises(RuntimeError, match="the table is in use"):
            table.append(0, 0, 3, 1, table.map_end_offset)
        with pytest.raises(RuntimeError, match="the table is in use"):
            encode_snapshot(table)
        with pytest.raises(RuntimeError, match="the crc is known once fill"):
            _ = writer.crc
        with pytest.raises(ValueError, match="buffer must hold at least 8192 bytes, got 100"):
            writer.fill(bytearray(100))
        with pytest.raises(TypeError, match="buffer must be a writable"):
            writer.fill(bytes(8192))
    table.append(0, 0, 3, 1, table.map_end_offset)
    with pytest.raises(ValueError, match="format must be one of"):
        compiled_codec.SnapshotWriter(table, "csv")


@pytest.mark.parametrize("kind", SNAPSHOT_FORMATS)
def test_large_files_are_read_through_a_memory_map(tmp_path, impl, kind):
    table = Compiled()
    table.append_many(list(range(40_000)), [0] * 40_000, [0] * 40_000, [1] * 40_000, log_end_offset=0)
    path = tmp_path / snapshot_file_name(table.map_end_offset)
    write_snapshot(path, table, kind)
    assert path.stat().st_size >= snapshot.MMAP_MIN_BYTES
    loaded = read_snapshot(path, table_class=impl)
    assert state(loaded) == (state(table) if kind == "full" else kafka_view(state(table)))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(data)
    with pytest.raises(CorruptSnapshotError, match="CRC-32C"):  # not a BufferError from the map
        read_snapshot(path, table_class=impl)


def test_partial_writes_are_continued(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    path = tmp_path / "a.snapshot"
    table = filled(Twin, 10)
    write_snapshot(path, table)
    assert path.read_bytes() == encode_snapshot(table)


@pytest.mark.parametrize("sync, expected", [(True, 2), (False, 0)])
def test_sync_fsyncs_the_file_and_the_directory(tmp_path, monkeypatch, sync, expected):
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd) or real_fsync(fd))
    write_snapshot(tmp_path / "a.snapshot", Twin(), sync=sync)
    assert len(calls) == expected
    with pytest.raises(TypeError, match="sync must be a bool"):
        write_snapshot(tmp_path / "b.snapshot", Twin(), sync=1)


def test_bad_arguments_touch_nothing(tmp_path):
    with pytest.raises(TypeError, match="table must be"):
        write_snapshot(tmp_path / "a.snapshot", object())
    with pytest.raises(ValueError, match="format must be"):
        write_snapshot(tmp_path / "a.snapshot", Twin(), "csv")
    with pytest.raises(FileNotFoundError):
        write_snapshot(tmp_path / "missing" / "a.snapshot", Twin())
    assert os.listdir(tmp_path) == []


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_snapshot(tmp_path / "nothing.snapshot")
    path = tmp_path / "00000000000000000001.snapshot"
    path.write_bytes(BAD_CRC_VECTOR)
    with pytest.raises(CorruptSnapshotError, match="CRC-32C"):
        read_snapshot(path)


# --- the decoded table's index, built after its entries (bulk_append/bulk_finish, _state.pyx) -
#
# The compiled decoders append entries in file order and index them region by region at the
# end; these check that the result is the table the entry-by-entry load made: every producer
# findable, later inserts and removals working, and repeated producer ids met as before.


def filled_twins(producers, seed):
    """Both twins with the same `producers` random ids, 1 to 3 batches each, spread timestamps."""
    import random

    rng = random.Random(seed)
    ids = rng.sample(range(1 << 62), producers)
    tables = (Compiled(5), Twin(5))
    for table in tables:
        offset = 0
        for n, producer_id in enumerate(ids):
            for sequence in range(1 + n % 3):
                table.append(producer_id, 0, sequence, 1, offset, max_timestamp=1_000 + n)
                offset += 1
    return ids, tables


@pytest.mark.parametrize("producers", [0, 1, 7, 3_000, 20_000])
@pytest.mark.parametrize("kind", SNAPSHOT_FORMATS)
def test_a_decoded_table_finds_every_producer_and_keeps_working(kind, producers):
    ids, (compiled, twin) = filled_twins(producers, seed=producers)
    data = encode_snapshot(twin, kind)
    assert encode_snapshot(compiled, kind) == data
    loaded = [decode_snapshot(data, map_end_offset=twin.map_end_offset, table_class=cls) for cls in (Compiled, Twin)]
    assert state(loaded[0]) == state(loaded[1])
    assert list(loaded[0]) == ids and all(producer_id in loaded[0] for producer_id in ids)
    assert not any(producer_id in loaded[0] for producer_id in (-1, 1 << 62, 2, 3) if producer_id not in ids)
    # Then as a table filled by inserts: new producers, retries, appends, removals.
    for table in loaded:
        end = table.map_end_offset
        for n, producer_id in enumerate(ids[:500]):  # the next batch of each (1 to 3 so far)
            assert not table.append(producer_id, 0, 1 + n % 3, 1, end + n, max_timestamp=5_000).duplicate
        for n, producer_id in enumerate(range(1 << 62, (1 << 62) + 300)):
            assert not table.append(producer_id, 0, 0, 1, end + 500 + n, max_timestamp=5_000).duplicate
        table.remove_expired(1_000 + producers // 2 + 10_000, 10_000)  # the first half, but those just appended
    assert state(loaded[0]) == state(loaded[1])
    assert all(producer_id in loaded[0] for producer_id in loaded[1])


def test_kafkas_repeated_ids_in_a_large_file_load_as_kafkas_map():
    """The bulk load meets the repeats and loads again entry by entry: later entries win, the
    first position stays (§5.1), as the twin does."""
    entries = [(1000 + n, 0, n, 10 + n, 0, 7, 1, -1) for n in range(20_000)]
    for later, earlier in ((15_000, 3), (15_001, 3), (19_999, 19_998), (40, 7_000)):
        entries[later] = (1000 + earlier,) + entries[later][1:]
    data = kafka_file(entries)
    loaded = [decode_snapshot(data, map_end_offset=100_000, table_class=cls) for cls in (Compiled, Twin)]
    assert state(loaded[0]) == state(loaded[1])
    assert len(loaded[0]) == 20_000 - 4
    assert loaded[0].entry(1003).batches[0].last_offset == 10 + 15_001


def repeat_cases(size):
    """(entry tuples of `size` producers with some edited, the reader's expected message start)."""
    base = [full2_entry(pid=100 + n) for n in range(size)]
    past_map_end = [(3, 1, 100, 7)]  # last offset at the map end offset: a batch problem
    a, b, c, d = size // 7, size // 3, size // 2, size - 1

    def edit(**changes):
        entries = list(base)
        for position, entry in changes.items():
            entries[int(position[1:])] = entry
        return entries

    def repeats(later, earlier):
        return f"full snapshot: entry {later}: producer id {100 + earlier} repeats entry {earlier}"

    return [
        # two ids repeated, the second one's repeat first in the file
        (edit(**{f"e{d}": full2_entry(pid=100 + a), f"e{c}": full2_entry(pid=100 + b)}), repeats(c, b)),
        # three occurrences: the second names the first
        (edit(**{f"e{b}": full2_entry(pid=100 + a), f"e{d}": full2_entry(pid=100 + a)}), repeats(b, a)),
        # a repeat, then a batch problem in a later entry: the repeat
        (edit(**{f"e{b}": full2_entry(pid=100 + a), f"e{c}": full2_entry(pid=100 + c, batches=past_map_end)}),
         repeats(b, a)),
        # a batch problem, then a repeat: the batch problem
        (edit(**{f"e{b}": full2_entry(pid=100 + b, batches=past_map_end), f"e{c}": full2_entry(pid=100 + a)}),
         f"full snapshot: entry {b} (producer id {100 + b}), batch 0: last offset 100 is not below"),
        # a repeat with a batch problem of its own: the repeat (checked first, as the id)
        (edit(**{f"e{c}": full2_entry(pid=100 + a, batches=past_map_end)}), repeats(c, a)),
        # a repeat whose transaction is wrong: the transaction (checked before the id's place)
        (edit(**{f"e{c}": full2_entry(pid=100 + a, txn=100)}),
         f"full snapshot: entry {c} (producer id {100 + a}): current txn first offset 100"),
        # a negative id, then a repeat: the id
        (edit(**{f"e{b}": full2_entry(pid=-5), f"e{c}": full2_entry(pid=100 + a)}),
         f"full snapshot: entry {b}: producer id -5 is negative"),
        # a batch count over the window in an entry that repeats: the batch count
        (edit(**{f"e{c}": full2_entry(pid=100 + a, batches=[(3, 1, 10, 7)] * 2, count=9)}),
         f"full snapshot: entry {c}: batch count 9 exceeds the window"),
    ]  # fmt: skip


@pytest.mark.parametrize("size", [9, 5_000])  # one region of the index, several
@pytest.mark.parametrize("version", [1, 2])
def test_the_first_repeated_producer_id_is_reported_as_entry_by_entry(version, size):
    for entries, expected in repeat_cases(size):
        if version == 1:
            entries = [entry for entry in entries if len(entry) == 6]  # version 1 has no batch count over
            if len(entries) < size:
                continue
            data = full_file(entries)
        else:
            data = full2_file(entries)
        assert both_reject("decode_full", data).startswith(expected), expected


@pytest.mark.parametrize("version", [1, 2])
def test_a_bad_crc_still_wins_over_a_repeated_producer_id(version):
    entries = [full2_entry(pid=100 + n) for n in range(5_000)] + [full2_entry(pid=100)]
    data = (full_file if version == 1 else full2_file)(entries, crc=1)
    assert "CRC-32C of bytes" in both_reject("decode_full", data)


def first_repeat(ids, existing=()):
    """(the first entry number whose id came before, the entry number it came first at)."""
    seen = {producer_id: n for n, producer_id in enumerate(existing)}
    for n, producer_id in enumerate(ids, start=len(existing)):
        if producer_id in seen:
            return n, seen[producer_id]
        seen[producer_id] = n
    return -1, -1


@settings(max_examples=300, deadline=None)
@given(
    ids=st.lists(st.integers(0, 60), max_size=80),
    existing=st.lists(st.integers(0, 200), unique=True, max_size=20),
)
@example(ids=[1, 2, 1, 2, 1], existing=[])
@example(ids=[3, 4, 4, 3], existing=[3])
def test_the_bulk_index_reports_the_first_repeat(ids, existing):
    """Also against producers inserted before (already in the index, some removed)."""
    table = Compiled(5)
    for n, producer_id in enumerate(existing):
        table.append(producer_id, 0, 0, 1, n, max_timestamp=n % 2)
    table.remove_expired(10, 10)  # the even ones: deleted slots in the index
    expected = first_repeat(ids, list(table))
    assert _testing.bulk_append_c(table, ids) == expected


def test_the_bulk_index_after_inserts_and_removals():
    """Bulk entries after normal ones and tombstones (remove_expired): all found, then usable."""
    table = Compiled(5)
    old = list(range(1_000, 6_000))
    for n, producer_id in enumerate(old):
        table.append(producer_id, 0, 0, 1, n, max_timestamp=n)
    table.remove_expired(5_000, 2_500)  # producers 1000..3499: swap-removed, their slots deleted
    kept = list(table)
    new = list(range(1 << 40, (1 << 40) + 20_000, 2))
    assert _testing.bulk_append_c(table, new) == (-1, -1)
    assert list(table) == kept + new and len(table) == len(kept) + len(new)
    assert all(producer_id in table for producer_id in kept + new)
    assert not any(producer_id in table for producer_id in range(1_000, 3_500))
    assert table.entry(new[7]) == ProducerStateEntry(new[7], -1, (), -1, -1, None)
    end = table.map_end_offset
    for n, producer_id in enumerate(new + list(range(1_000, 1_100))):  # fresh ones too
        assert not table.append(producer_id, 0, 0, 1, end + n, max_timestamp=10_000).duplicate
    assert table.append(new[3], 0, 0, 1, table.map_end_offset).duplicate  # the retry of its batch
    assert table.remove_expired(10_000, 2_000) == len(kept)
    assert sorted(table) == sorted(new + list(range(1_000, 1_100)))
    assert all(producer_id in table for producer_id in new)
