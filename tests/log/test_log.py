"""The partition log on real files (spec §3.2, §4.5-4.6, §5, §6): leader and follower
appends, rolls and snapshots, clean and unclean recovery, a torn tail, corrupt snapshots,
retention, expiration, truncation. Batches come from kafka-python's encoder
(tests/kafka_batches.py); every test runs on both twins of the table."""

from __future__ import annotations

import os
import struct

import pytest
from kafka_batches import build, marker, patch

from dedup import (
    CorruptRecordError,
    InvalidProducerEpochError,
    InvalidRecordError,
    OutOfOrderSequenceError,
    scan_batches,
    snapshot_file_name,
)
from dedup.errors import OffsetOutOfRangeError
from dedup.log import CLEAN_SHUTDOWN_FILE, PartitionLog
from dedup.records import crc_valid
from dedup.recovery import CORRUPT_SUFFIX
from dedup.segment import segment_file_name

NOW = 1_700_000_000_000


class Clock:
    """The broker's clock, moved by hand."""

    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def state(table):
    """Everything a table holds, comparable: map end offset and every producer's entry."""
    return table.map_end_offset, {pid: table.entry(pid) for pid in table}


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def open_log(tmp_path, impl, clock):
    """Open (or reopen) the partition log in tmp_path/clicks-0 with this test's twin."""
    opened = []

    def opener(**options):
        options.setdefault("clock", clock)
        log = PartitionLog(tmp_path / "clicks-0", table_class=impl, **options)
        opened.append(log)
        return log

    yield opener
    for log in opened:
        log.close_uncleanly()


def segment_headers(log, base_offset=0):
    with open(os.path.join(log.directory, segment_file_name(base_offset)), "rb") as handle:
        data = handle.read()
    return data, scan_batches(data)


def test_the_directory_is_one_absolute_str_whatever_kind_of_path_names_it(tmp_path, impl, clock):
    # A bytes path once stayed bytes and failed on the first file name joined to it.
    for name in (tmp_path / "a-0", str(tmp_path / "b-0"), os.fsencode(tmp_path / "c-0")):
        with PartitionLog(name, table_class=impl, clock=clock) as log:
            assert type(log.directory) is str and log.directory == os.path.abspath(os.fsdecode(name))
            log.append_as_leader(build(1, 0, 0))
        with PartitionLog(name, table_class=impl, clock=clock) as again:
            assert again.load_report.clean_shutdown and again.append_as_leader(build(1, 0, 0)).duplicate


# -- leader appends ---------------------------------------------------------------------------


def test_leader_append_assigns_offsets_writes_and_updates_the_table(open_log):
    log = open_log()
    first = log.append_as_leader(build(1000, 0, 0, 3), leader_epoch=7)
    second = log.append_as_leader(build(1000, 0, 3, 2), leader_epoch=7)
    assert (first.base_offset, first.last_offset, first.duplicate) == (0, 2, False)
    assert (second.base_offset, second.last_offset) == (3, 4)
    assert log.log_end_offset == 5 and log.producer_state.map_end_offset == 5
    data, headers = segment_headers(log)
    # Kafka's bytes on disk: offsets and leader epoch written in place, CRCs still valid.
    assert headers["base_offset"].tolist() == [0, 3]
    assert headers["partition_leader_epoch"].tolist() == [7, 7]
    assert crc_valid(data, headers).all()
    entry = log.producer_state.entry(1000)
    assert [(b.last_sequence, b.last_offset) for b in entry.batches] == [(2, 2), (4, 4)]


def test_the_callers_buffer_is_not_changed(open_log):
    log = open_log()
    log.append_as_leader(build(1, 0, 0))
    batch = bytearray(build(1, 0, 1))
    before = bytes(batch)
    assert log.append_as_leader(batch, leader_epoch=3).base_offset == 1
    assert batch == before


def test_a_retried_batch_gets_its_original_offsets_and_is_not_written_again(open_log):
    # Spec §2.1 rule 10: a duplicate is answered with error NONE and the original offsets.
    log = open_log()
    batch = build(1000, 0, 0, 2)
    log.append_as_leader(batch)
    log.append_as_leader(build(2000, 0, 0))
    size = log.size_bytes
    retry = log.append_as_leader(batch)
    assert retry.duplicate and (retry.base_offset, retry.last_offset) == (0, 1)
    assert log.size_bytes == size and log.log_end_offset == 3


def test_a_refused_batch_changes_nothing(open_log):
    log = open_log()
    log.append_as_leader(build(1000, 0, 0))
    before, size = state(log.producer_state), log.size_bytes
    with pytest.raises(OutOfOrderSequenceError):  # rule 15: a gap
        log.append_as_leader(build(1000, 0, 5))
    assert state(log.producer_state) == before and log.size_bytes == size and log.log_end_offset == 1
    log.append_as_leader(build(1000, 0, 1))  # the next in sequence still goes in
    assert log.log_end_offset == 2


def test_an_older_epoch_is_fenced(open_log):
    # Spec §2.1 rule 12.
    log = open_log()
    log.append_as_leader(build(1000, 3, 0))
    with pytest.raises(InvalidProducerEpochError):
        log.append_as_leader(build(1000, 2, 1))


def test_record_level_rules_refuse_before_anything_is_written(open_log):
    log = open_log()
    with pytest.raises(InvalidRecordError):  # rule 3: a client's batch has base offset 0
        log.append_as_leader(patch(build(1000, 0, 0), base_offset=5))
    corrupt = bytearray(build(1000, 0, 0))
    corrupt[-1] ^= 1
    with pytest.raises(CorruptRecordError):  # rule 5: the CRC
        log.append_as_leader(bytes(corrupt))
    assert log.log_end_offset == 0 and log.size_bytes == 0 and len(log.producer_state) == 0


def test_a_batch_without_producer_id_is_written_and_moves_only_the_map_end(open_log):
    # Spec §3.2 step 6: mapEndOffset moves even for non-idempotent data.
    log = open_log()
    info = log.append_as_leader(build(-1, -1, -1, 4))
    assert (info.base_offset, info.last_offset) == (0, 3)
    assert len(log.producer_state) == 0 and log.producer_state.map_end_offset == 4


def test_several_batches_in_one_append_are_all_or_nothing(open_log):
    log = open_log()
    log.append_as_leader(build(1, 0, 0))
    good, gap = build(1, 0, 1), build(2, 0, 0) + build(1, 0, 9)
    with pytest.raises(OutOfOrderSequenceError):
        log.append_as_leader(good + gap)
    assert log.log_end_offset == 1 and 2 not in log.producer_state
    # Staged in order: the second batch of a producer is checked against the first.
    info = log.append_as_leader(build(1, 0, 1) + build(1, 0, 2, 3) + build(2, 0, 0))
    assert (info.base_offset, info.last_offset, info.batches) == (1, 5, 3)
    assert log.producer_state.entry(1).batches[-1].last_sequence == 4
    # The first duplicate answers the whole append, as Kafka's analyzeAndValidateProducerState.
    again = log.append_as_leader(build(1, 0, 2, 3) + build(3, 0, 0))
    assert again.duplicate and (again.base_offset, again.last_offset) == (2, 4) and 3 not in log.producer_state


def test_transaction_markers_from_the_coordinator(open_log):
    from dedup import Origin

    log = open_log()
    log.append_as_leader(build(7, 0, 0, transactional=True))
    assert log.producer_state.entry(7).current_txn_first_offset == 0
    with pytest.raises(InvalidRecordError):  # rule 7: a client cannot write a control batch
        log.append_as_leader(marker(7, 0, 1))
    info = log.append_as_leader(marker(7, 0, 1), origin=Origin.COORDINATOR)
    assert info.base_offset == 1
    assert log.producer_state.entry(7).current_txn_first_offset is None


# -- follower appends -------------------------------------------------------------------------


def test_a_follower_keeps_the_leaders_offsets_and_ends_with_the_same_table(tmp_path, impl, clock):
    leader = PartitionLog(tmp_path / "clicks-0", table_class=impl, clock=clock)
    follower = PartitionLog(tmp_path / "follower" / "clicks-0", table_class=impl, clock=clock)
    for pid, seq in [(1, 0), (2, 0), (1, 2), (-1, -1), (2, 2)]:
        leader.append_as_leader(build(pid, 0 if pid > 0 else -1, seq, 2), leader_epoch=4)
    fetched = leader.read(0, 1 << 20)
    info = follower.append_as_follower(fetched)
    assert (info.base_offset, info.last_offset) == (0, 9)
    assert follower.log_end_offset == leader.log_end_offset == 10
    assert state(follower.producer_state) == state(leader.producer_state)
    assert follower.end_offset_for_epoch(4) == (4, 10)
    with pytest.raises(InvalidRecordError):  # offsets must not go backwards
        follower.append_as_follower(leader.read(4))
    assert follower.log_end_offset == 10
    leader.close(), follower.close()


# -- rolls, snapshots, clean and unclean recovery -----------------------------------------------


def fill(log, producers=5, rounds=12, records=3):
    for round_ in range(rounds):
        for pid in range(1, producers + 1):
            log.append_as_leader(build(pid * 1000, 0, round_ * records, records))


def test_segments_roll_by_size_with_a_snapshot_at_each_new_base_offset(open_log):
    log = open_log(segment_bytes=1024)
    fill(log)
    bases = log.segment_base_offsets
    assert len(bases) > 3 and bases[0] == 0
    names = set(os.listdir(log.directory))
    assert {segment_file_name(base) for base in bases} <= names
    # Spec §4.5: a snapshot at every roll, at the new segment's base offset.
    assert log.snapshot_offsets() == bases[1:]
    for segment in bases[:-1]:
        assert os.path.getsize(os.path.join(log.directory, segment_file_name(segment))) <= 1024


def test_clean_shutdown_then_open_loads_the_snapshot_and_replays_nothing(open_log):
    log = open_log(segment_bytes=1024)
    fill(log)
    before = state(log.producer_state)
    log.close()
    assert os.path.exists(os.path.join(log.directory, CLEAN_SHUTDOWN_FILE))
    assert log.snapshot_offsets()[-1] == log.log_end_offset  # close() snapshots at the log end
    again = open_log(segment_bytes=1024)
    report = again.load_report
    assert report.clean_shutdown and report.replayed_batches == 0 and report.recovered_segments == 0
    assert report.snapshot_offset == again.log_end_offset
    assert state(again.producer_state) == before
    assert not os.path.exists(os.path.join(log.directory, CLEAN_SHUTDOWN_FILE))


def test_unclean_shutdown_recovers_the_active_segment_and_replays_after_the_snapshot(open_log):
    log = open_log(segment_bytes=1024)
    fill(log)
    before, end = state(log.producer_state), log.log_end_offset
    log.close_uncleanly()  # a crash: no flush, no snapshot, no marker
    again = open_log(segment_bytes=1024)
    report = again.load_report
    assert not report.clean_shutdown and report.recovered_segments == 1 and report.truncated_bytes == 0
    assert report.snapshot_offset == log.segment_base_offsets[-1] and report.replayed_batches > 0
    assert again.log_end_offset == end and state(again.producer_state) == before


def test_a_torn_last_batch_is_cut_off_by_its_crc(open_log):
    log = open_log()
    fill(log, rounds=3)
    before, end = state(log.producer_state), log.log_end_offset
    log.close_uncleanly()
    torn = patch(build(9000, 0, 0, 5), base_offset=end)  # offsets in order: only the CRC can tell
    path = os.path.join(log.directory, segment_file_name(0))
    size = os.path.getsize(path)
    with open(path, "ab") as handle:  # a crash mid-write: only part of the batch reached the file
        handle.write(torn[: len(torn) // 2])
    again = open_log()
    assert again.load_report.truncated_bytes == len(torn) // 2
    assert os.path.getsize(path) == size
    assert again.log_end_offset == end and state(again.producer_state) == before
    # A whole batch with a flipped bit in its records is cut the same way.
    again.close_uncleanly()
    with open(path, "ab") as handle:
        handle.write(torn[:-1] + bytes([torn[-1] ^ 0x40]))
    third = open_log()
    assert third.load_report.truncated_bytes == len(torn) and state(third.producer_state) == before


def test_a_corrupt_snapshot_is_set_aside_and_the_next_older_one_used(open_log):
    log = open_log(segment_bytes=1024)
    fill(log)
    before = state(log.producer_state)
    log.close()
    newest = log.snapshot_offsets()[-1]
    path = os.path.join(log.directory, snapshot_file_name(newest))
    with open(path, "r+b") as handle:
        handle.seek(40)
        byte = handle.read(1)
        handle.seek(40)
        handle.write(bytes([byte[0] ^ 1]))
    again = open_log(segment_bytes=1024)
    report = again.load_report
    assert report.snapshots_set_aside == (snapshot_file_name(newest),)
    assert os.path.exists(path + CORRUPT_SUFFIX)
    assert report.snapshot_offset < newest and report.replayed_batches > 0
    assert state(again.producer_state) == before


def test_with_no_usable_snapshot_the_whole_log_is_replayed(open_log):
    log = open_log(segment_bytes=1024)
    fill(log)
    before = state(log.producer_state)
    log.close_uncleanly()
    snapshots = log.snapshot_offsets()
    for offset in snapshots:
        with open(log.snapshot_path(offset), "r+b") as handle:
            handle.truncate(7)
    again = open_log(segment_bytes=1024)
    assert again.load_report.snapshot_offset is None
    assert again.load_report.snapshots_set_aside == tuple(snapshot_file_name(offset) for offset in reversed(snapshots))
    assert again.load_report.replayed_batches == 60
    assert state(again.producer_state) == before


def test_kafka_snapshot_format_keeps_one_batch_per_producer(open_log):
    # Spec §4.3: after a reload from Kafka's snapshot the duplicate window is one batch; the
    # full format keeps the whole window.
    for snapshot_format, retry_is_duplicate in [("kafka", False), ("full", True)]:
        log = open_log(snapshot_format=snapshot_format)
        log.truncate_fully_and_start_at(0)
        first = build(1000, 0, 0)
        log.append_as_leader(first)
        log.append_as_leader(build(1000, 0, 1))
        log.close()
        again = open_log(snapshot_format=snapshot_format)
        assert len(again.producer_state.entry(1000).batches) == (2 if retry_is_duplicate else 1)
        if retry_is_duplicate:
            assert again.append_as_leader(first).duplicate
        else:
            with pytest.raises(OutOfOrderSequenceError):  # seq 0 after last seq 1, not recognised
                again.append_as_leader(first)
        again.close()


def test_stray_temporary_files_and_snapshots_are_removed_at_load(open_log):
    log = open_log(segment_bytes=1024)
    fill(log)
    log.close()
    directory = log.directory
    leftovers = [".00000000000000000042.snapshot.0123456789abcdef.tmp", "00000000000000000007.log.deleted"]
    for name in leftovers:
        with open(os.path.join(directory, name), "wb") as handle:
            handle.write(b"half")
    stray = snapshot_file_name(3)  # not a segment base offset and below the last one
    with open(os.path.join(directory, stray), "wb") as handle:
        handle.write(b"x")
    again = open_log(segment_bytes=1024)
    names = set(os.listdir(directory))
    assert not names & {*leftovers, stray}
    assert again.load_report.snapshots_set_aside == ()


# -- reads --------------------------------------------------------------------------------------


def test_read_returns_whole_batches_from_the_one_holding_the_offset(open_log):
    log = open_log(segment_bytes=1024)
    fill(log, rounds=4)
    data = log.read(4, 1)  # at least one batch, even past max_bytes (KIP-74)
    headers = scan_batches(data)
    assert len(headers) == 1 and headers["base_offset"][0] == 3
    everything = b""
    offset = 0
    while offset < log.log_end_offset:
        chunk = log.read(offset, 300)
        headers = scan_batches(chunk)
        everything += chunk
        offset = int(headers["base_offset"][-1] + headers["last_offset_delta"][-1] + 1)
    assert len(scan_batches(everything)) == 20
    assert log.read(log.log_end_offset) == b""
    assert scan_batches(log.read(0, 1 << 20, max_offset=6))["base_offset"].tolist() == [0, 3]
    with pytest.raises(OffsetOutOfRangeError):
        log.read(log.log_end_offset + 1)


# -- retention, expiration ---------------------------------------------------------------------


def test_delete_records_deletes_segments_and_their_snapshots_but_keeps_producers(open_log):
    log = open_log(segment_bytes=1024)
    fill(log)
    bases = log.segment_base_offsets
    producers = set(log.producer_state)
    with pytest.raises(OffsetOutOfRangeError):  # only below the high watermark
        log.delete_records(bases[2])
    log.update_high_watermark(log.log_end_offset)
    assert log.delete_records(bases[2]) == bases[2]
    assert log.segment_base_offsets == bases[2:] and log.log_start_offset == bases[2]
    assert not os.path.exists(log.snapshot_path(bases[1]))
    assert set(log.producer_state) == producers  # spec §3.3: producers are not removed
    log.close()
    again = open_log(segment_bytes=1024)
    assert again.log_start_offset == bases[2] and set(again.producer_state) == producers


def test_retention_by_bytes_and_time(open_log, clock):
    log = open_log(segment_bytes=1024, retention_bytes=3000)
    fill(log)
    count = len(log.segment_base_offsets)
    assert log.apply_retention() == 0  # nothing is below the high watermark yet
    log.update_high_watermark(log.log_end_offset)
    deleted = log.apply_retention()
    assert deleted > 0 and len(log.segment_base_offsets) == count - deleted
    assert (
        log.size_bytes - os.path.getsize(os.path.join(log.directory, segment_file_name(log.segment_base_offsets[0])))
        < 3000
    )
    assert log.log_start_offset == log.segment_base_offsets[0]
    log.close()
    timed = open_log(segment_bytes=1024, retention_ms=1000)
    timed.update_high_watermark(timed.log_end_offset)
    clock.now = NOW + 10**12
    segments = len(timed.segment_base_offsets)
    assert segments > 1 and timed.apply_retention() == segments - 1  # never the active segment
    assert timed.segment_base_offsets == [timed.log_start_offset]


def test_producers_expire_after_producer_id_expiration_ms(open_log, clock):
    # Spec §6: now - lastTimestamp >= producer.id.expiration.ms; batch timestamps are CreateTime.
    log = open_log(producer_id_expiration_ms=60_000)
    log.append_as_leader(build(1, 0, 0, timestamp=NOW))
    log.append_as_leader(build(2, 0, 0, timestamp=NOW + 30_000))
    clock.now = NOW + 60_000
    assert log.remove_expired_producers() == 1 and set(log.producer_state) == {2}
    log.close_uncleanly()
    clock.now = NOW + 90_000
    again = open_log(producer_id_expiration_ms=60_000)  # replay does not expire (spec §5.3)
    assert set(again.producer_state) == {1, 2}
    again.close()
    clock.now = NOW + 89_999
    third = open_log(producer_id_expiration_ms=60_000)  # a snapshot load filters expired ones (§5.1)
    assert set(third.producer_state) == {2}


# -- truncation ---------------------------------------------------------------------------------


def test_truncate_to_drops_batches_snapshots_and_state_above_the_offset(open_log, impl, tmp_path):
    log = open_log(segment_bytes=1024)
    fill(log)
    target = log.segment_base_offsets[2] + 6
    # The table a log holding only the batches below target would have.
    reference = PartitionLog(tmp_path / "reference-0", table_class=impl)
    reference.append_as_follower(b"".join(_batches_below(log, target)))
    assert log.truncate_to(target)
    assert log.log_end_offset == target
    assert all(offset <= target for offset in log.snapshot_offsets())
    assert state(log.producer_state) == state(reference.producer_state)
    # Appends go on from there: the producers' sequences are those of the kept batches.
    entry = log.producer_state.entry(1000)
    assert log.append_as_leader(build(1000, 0, entry.batches[-1].last_sequence + 1)).base_offset == target
    reference.close()


def _batches_below(log, offset):
    position = 0
    while position < offset:
        chunk = log.read(position, 1 << 20, max_offset=offset)
        if not chunk:
            return
        yield chunk
        headers = scan_batches(chunk)
        position = int(headers["base_offset"][-1] + headers["last_offset_delta"][-1] + 1)


def test_truncate_fully_and_start_at(open_log):
    log = open_log(segment_bytes=1024)
    fill(log)
    log.truncate_fully_and_start_at(500)
    assert (log.log_start_offset, log.log_end_offset, len(log.producer_state)) == (500, 500, 0)
    assert log.snapshot_offsets() == [] and log.segment_base_offsets == [500]
    assert log.append_as_leader(build(1000, 0, 0)).base_offset == 500  # a new producer: any sequence


def test_leader_epochs_answer_offsets_for_leader_epoch(open_log):
    log = open_log()
    log.append_as_leader(build(1, 0, 0, 2), leader_epoch=1)
    log.append_as_leader(build(1, 0, 2, 2), leader_epoch=3)
    log.append_as_leader(build(1, 0, 4, 2), leader_epoch=3)
    assert log.end_offset_for_epoch(1) == (1, 2)
    assert log.end_offset_for_epoch(2) == (1, 2)
    assert log.end_offset_for_epoch(3) == (3, 6)
    log.close()
    again = open_log()
    assert again.end_offset_for_epoch(1) == (1, 2) and again.latest_epoch == 3


def test_header_layout_of_the_written_segment_is_kafkas(open_log):
    # The segment is a plain concatenation of v2 batches (spec §8.1): the first batch's
    # base offset and batch length are the file's first 12 bytes.
    log = open_log()
    log.append_as_leader(build(1, 0, 0, 2), leader_epoch=5)
    with open(os.path.join(log.directory, segment_file_name(0)), "rb") as handle:
        base_offset, length, epoch, magic = struct.unpack(">qiib", handle.read(17))
    assert (base_offset, epoch, magic) == (0, 5, 2) and length + 12 == log.size_bytes


def test_a_corrupt_checkpoint_file_is_ignored_safely(open_log):
    log = open_log(segment_bytes=1024)
    fill(log)
    before, end = state(log.producer_state), log.log_end_offset
    log.close_uncleanly()
    with open(os.path.join(log.directory, "recovery-point-offset-checkpoint"), "w") as handle:
        handle.write("0\n1\nclicks 0 not-a-number\n")
    again = open_log(segment_bytes=1024)
    # No recovery point: every segment is checked, nothing is lost.
    assert again.load_report.recovered_segments == len(log.segment_base_offsets)
    assert again.log_end_offset == end and state(again.producer_state) == before


def test_a_follower_refuses_a_fetch_with_a_corrupt_batch_as_a_whole(tmp_path, impl, clock):
    leader = PartitionLog(tmp_path / "clicks-0", table_class=impl, clock=clock)
    follower = PartitionLog(tmp_path / "follower" / "clicks-0", table_class=impl, clock=clock)
    for sequence in range(3):
        leader.append_as_leader(build(1000, 0, sequence), leader_epoch=2)
    fetched = bytearray(leader.read(0))
    fetched[-1] ^= 1  # the last batch's records: its CRC no longer matches
    with pytest.raises(CorruptRecordError):
        follower.append_as_follower(bytes(fetched))
    assert follower.log_end_offset == 0 and len(follower.producer_state) == 0 and follower.size_bytes == 0
    follower.append_as_follower(leader.read(0))
    assert state(follower.producer_state) == state(leader.producer_state)
    leader.close(), follower.close()


@pytest.mark.parametrize("records", [5, [0, 1, 2], None, "batch", 1.5])
def test_records_that_are_not_a_buffer_are_a_type_error(open_log, records):
    log = open_log()
    with pytest.raises(TypeError, match="records must be a C-contiguous buffer"):
        log.append_as_leader(records)
    with pytest.raises(TypeError):
        log.append_as_follower(records)
    assert log.log_end_offset == 0 and log.size_bytes == 0


def test_read_arguments_are_checked(open_log):
    log = open_log()
    log.append_as_leader(build(1000, 0, 0))
    for call, error in [
        (lambda: log.read(-1), ValueError),
        (lambda: log.read("0"), TypeError),
        (lambda: log.read(0, -5), ValueError),
        (lambda: log.read(0, max_offset=-2), ValueError),
    ]:
        with pytest.raises(error):
            call()
    assert log.read(0, 0) == log.read(0, 1 << 20)  # at least one batch (KIP-74)
