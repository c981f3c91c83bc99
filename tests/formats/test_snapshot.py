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
from pathlib import Path

import crc32c as pypi_crc32c
import pytest
from hypothesis import HealthCheck, example, given, settings
from snapshot_builders import (
    apply,
    full2_file,
    full_file,
    kafka_file,
    operations,
    state,
    windows,
)
from snapshot_vectors import BAD_CRC_VECTOR, EMPTY_KAFKA_VECTOR, TWO_ENTRIES, TWO_ENTRY_KAFKA_VECTOR

import dedup
from dedup import reference, snapshot
from dedup._types import INT32_MAX, INT64_MAX, BatchMetadata, Origin, ProducerStateEntry
from dedup.errors import CorruptSnapshotError
from dedup.snapshot import (
    SNAPSHOT_FORMATS,
    decode_snapshot,
    encode_snapshot,
    read_snapshot,
    snapshot_file_name,
    snapshot_offset,
    write_snapshot,
)

_state = pytest.importorskip("dedup._state")
from dedup import _snapshot as compiled_codec  # noqa: E402

Compiled = _state.ProducerStateTable
Twin = reference.ProducerStateTable



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


@settings(suppress_health_check=[HealthCheck.too_slow])
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


@settings(suppress_health_check=[HealthCheck.too_slow])
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


# A large decode: the full format in the fast set, Kafka's in the slow one.
@pytest.mark.parametrize("kind", ["full", pytest.param("kafka", marks=pytest.mark.slow)])
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
