"""Kafka's ``.txnindex`` (TransactionIndex, AbortedTxn): the 34-byte version-0 entries, the
search a read_committed fetch makes, and the file going with its segment through retention,
truncation, the cleaner's swap and recovery (rebuilt from the batches when missing, corrupt or
belonging to a recovered segment)."""

from __future__ import annotations

import os
import struct

import pytest
from kafka_batches import build, marker

from dedup._types import Origin
from dedup.batch import encode_batch
from dedup.cleaner import clean_log
from dedup.log import PartitionLog
from dedup.transaction_index import (
    ABORTED_TXN_SIZE,
    AbortedTxn,
    CorruptIndexError,
    TransactionIndex,
    collect_aborted_transactions,
    txn_index_file_name,
)

NOW = 1_700_000_000_000

# AbortedTxn.java, version 0: version int16, producerId int64, firstOffset int64,
# lastOffset int64, lastStableOffset int64, big-endian, TOTAL_SIZE 34.
KNOWN = AbortedTxn(producer_id=0x0102030405060708, first_offset=10, last_offset=20, last_stable_offset=21)
KNOWN_BYTES = bytes.fromhex(
    "0000" "0102030405060708" "000000000000000a" "0000000000000014" "0000000000000015"
)  # fmt: skip


def test_an_entry_is_kafkas_34_byte_version_0_layout():
    assert ABORTED_TXN_SIZE == 34
    assert KNOWN.to_bytes() == KNOWN_BYTES
    assert AbortedTxn.from_bytes(KNOWN_BYTES) == KNOWN
    assert txn_index_file_name(1234) == "00000000000000001234.txnindex"


def test_the_file_holds_the_entries_back_to_back_and_reopens(tmp_path):
    index = TransactionIndex.create(str(tmp_path), 5)
    second = AbortedTxn(9, 30, 40, 41)
    index.append(KNOWN)
    index.append(second)
    index.close()
    assert (tmp_path / txn_index_file_name(5)).read_bytes() == KNOWN_BYTES + second.to_bytes()
    again = TransactionIndex.open(str(tmp_path), 5)
    assert again.entries == [KNOWN, second]
    with pytest.raises(ValueError, match="must increase"):  # TransactionIndex.append's check
        again.append(AbortedTxn(3, 1, 40, 41))
    again.truncate_to(40)  # drops the entry whose marker is at 40
    assert again.entries == [KNOWN] and (tmp_path / txn_index_file_name(5)).read_bytes() == KNOWN_BYTES
    again.close()


@pytest.mark.parametrize(
    "content, message",
    [
        (KNOWN_BYTES[:-1], "whole number"),
        (struct.pack(">h", 1) + KNOWN_BYTES[2:], "version 1"),
        (AbortedTxn(1, 0, 4, 5).to_bytes(), "less than start offset"),  # Kafka's sanityCheck
        (KNOWN_BYTES + KNOWN_BYTES, "do not increase"),
    ],
)
def test_a_corrupt_file_is_refused(tmp_path, content, message):
    (tmp_path / txn_index_file_name(5)).write_bytes(content)
    with pytest.raises(CorruptIndexError, match=message):
        TransactionIndex.open(str(tmp_path), 5)


def test_collect_is_kafkas_overlap_rule_and_stops_at_a_complete_search(tmp_path):
    first = TransactionIndex.create(str(tmp_path), 0)
    first.append(AbortedTxn(1, 0, 5, 3))  # another transaction was open at 3
    first.append(AbortedTxn(2, 3, 8, 20))
    later = TransactionIndex.create(str(tmp_path), 10)
    later.append(AbortedTxn(3, 12, 15, 16))
    # lastOffset >= fetch offset and firstOffset < upper bound.
    assert first.collect_aborted_txns(6, 9) == ([AbortedTxn(2, 3, 8, 20)], True)
    assert first.collect_aborted_txns(0, 3) == ([AbortedTxn(1, 0, 5, 3)], True)  # complete: LSO 3 >= 3
    assert collect_aborted_transactions([first, later], 0, 21) == [
        AbortedTxn(1, 0, 5, 3), AbortedTxn(2, 3, 8, 20), AbortedTxn(3, 12, 15, 16)
    ]  # fmt: skip
    # The search ends at the first segment whose entry's LSO reaches the bound.
    assert collect_aborted_transactions([first, later], 0, 13) == [AbortedTxn(1, 0, 5, 3), AbortedTxn(2, 3, 8, 20)]
    first.close()
    later.close()


# -- the log's indexes ---------------------------------------------------------------------------------


@pytest.fixture
def open_log(tmp_path, impl):
    opened = []

    def opener(**options):
        options.setdefault("clock", lambda: NOW)
        log = PartitionLog(tmp_path / "clicks-0", table_class=impl, **options)
        opened.append(log)
        return log

    yield opener
    for log in opened:
        log.close_uncleanly()


def end_txn(log, producer_id, *, commit, epoch=0):
    return log.append_as_leader(marker(producer_id, epoch, 0, commit=commit), origin=Origin.COORDINATOR).base_offset


def index_entries(log):
    """Every segment's entries, read from the files."""
    out = {}
    for base in log.segment_base_offsets:
        data = open(os.path.join(log.directory, txn_index_file_name(base)), "rb").read()
        out[base] = [AbortedTxn.from_bytes(data, p) for p in range(0, len(data), ABORTED_TXN_SIZE)]
    return out


def three_transactions(log):
    """pid 7 aborted, pid 8 committed, pid 9 aborted while 8 was open: offsets 0..8."""
    log.append_as_leader(build(7, 0, 0, 2, transactional=True))  # 0-1
    log.append_as_leader(build(8, 0, 0, 1, transactional=True))  # 2
    end_txn(log, 7, commit=False)  # 3
    log.append_as_leader(build(9, 0, 0, 2, transactional=True))  # 4-5
    end_txn(log, 9, commit=False)  # 6
    log.append_as_leader(build(8, 0, 1, 1, transactional=True))  # 7
    end_txn(log, 8, commit=True)  # 8
    log.update_high_watermark(log.log_end_offset)


EXPECTED = [AbortedTxn(7, 0, 3, 2), AbortedTxn(9, 4, 6, 2)]  # 8's transaction from 2 still open at both


def test_an_abort_marker_writes_an_entry_a_commit_does_not(open_log):
    log = open_log()
    three_transactions(log)
    assert index_entries(log) == {0: EXPECTED}
    assert log.collect_aborted_transactions(0, 9) == EXPECTED
    assert log.collect_aborted_transactions(4, 9) == [AbortedTxn(9, 4, 6, 2)]
    assert log.collect_aborted_transactions(7, 9) == []


def test_a_marker_without_an_open_transaction_writes_nothing(open_log):
    log = open_log()
    log.append_as_leader(build(7, 0, 0, 1))  # idempotent, not transactional
    end_txn(log, 7, commit=False)  # KAFKA-10702: an empty transaction completes nothing
    assert index_entries(log) == {0: []}


def test_the_entry_goes_to_the_segment_holding_the_marker(open_log):
    log = open_log()
    log.append_as_leader(build(7, 0, 0, 2, transactional=True))
    log.roll()
    log.append_as_leader(build(1, 0, 0, 1))
    log.roll()
    end_txn(log, 7, commit=False)  # 3
    log.update_high_watermark(log.log_end_offset)
    assert index_entries(log) == {0: [], 2: [], 3: [AbortedTxn(7, 0, 3, 4)]}
    # A fetch from the first segment searches on into the later ones.
    assert log.collect_aborted_transactions(0, 2) == [AbortedTxn(7, 0, 3, 4)]


def test_the_index_goes_with_its_segment_on_retention_and_truncation(open_log):
    log = open_log(retention_ms=1000, clock=lambda: NOW + 10_000)
    log.append_as_leader(build(7, 0, 0, 1, transactional=True, timestamp=NOW))
    end_txn(log, 7, commit=False)
    log.roll()
    log.append_as_leader(build(8, 0, 0, 1, transactional=True, timestamp=NOW + 10_000))  # 2
    end_txn(log, 8, commit=False)  # 3
    log.append_as_leader(build(9, 0, 0, 1, transactional=True, timestamp=NOW + 10_000))  # 4
    end_txn(log, 9, commit=False)  # 5
    log.update_high_watermark(log.log_end_offset)
    assert index_entries(log) == {0: [AbortedTxn(7, 0, 1, 2)], 2: [AbortedTxn(8, 2, 3, 4), AbortedTxn(9, 4, 5, 6)]}
    assert log.apply_retention() == 1
    assert not os.path.exists(os.path.join(log.directory, txn_index_file_name(0)))
    log.truncate_to(4)
    assert index_entries(log) == {2: [AbortedTxn(8, 2, 3, 4)]}
    assert log.ongoing_transactions == {} and log.collect_aborted_transactions(2, 4) == [AbortedTxn(8, 2, 3, 4)]
    log.truncate_to(3)  # the marker goes: 8's transaction is open again, from the rebuilt table
    assert index_entries(log) == {2: []} and log.ongoing_transactions == {8: 2}


def test_a_new_segment_never_inherits_a_stale_index(open_log):
    log = open_log()
    with open(os.path.join(log.directory, txn_index_file_name(5)), "wb") as handle:
        handle.write(AbortedTxn(1, 5, 6, 7).to_bytes())  # left behind by a segment that is gone
    log.close()
    log = open_log()  # recovery removes a .txnindex without its segment
    log.truncate_fully_and_start_at(5)
    assert index_entries(log) == {5: []}


@pytest.mark.parametrize("damage", ["missing", "corrupt", "stale"])
def test_recovery_rebuilds_a_missing_or_corrupt_index_from_the_batches(open_log, damage):
    log = open_log(segment_bytes=250)
    three_transactions(log)
    assert len(log.segment_base_offsets) > 1
    before = index_entries(log)
    log.close()
    target = max(base for base, entries in before.items() if entries)
    path = os.path.join(log.directory, txn_index_file_name(target))
    if damage == "missing":
        os.unlink(path)
    elif damage == "corrupt":
        with open(path, "ab") as handle:
            handle.write(b"\x00\x01")
    else:  # an entry past the segment's end: a marker the segment no longer holds
        with open(path, "ab") as handle:
            handle.write(AbortedTxn(1, 100, 100, 101).to_bytes())
    again = open_log(segment_bytes=250)
    assert index_entries(again) == before
    assert again.collect_aborted_transactions(0, 9) == EXPECTED


def test_an_unclean_shutdown_rebuilds_the_index_of_every_recovered_segment(open_log):
    log = open_log()
    three_transactions(log)
    with open(os.path.join(log.directory, txn_index_file_name(0)), "r+b") as handle:
        handle.truncate(0)  # a write the crash lost: a recovered segment's index is rebuilt
    log.close_uncleanly()
    again = open_log()
    assert again.load_report.recovered_segments == 1
    assert index_entries(again) == {0: EXPECTED}


def test_the_cleaners_swap_carries_the_old_segments_entries(tmp_path):
    log = PartitionLog(tmp_path / "t-0", segment_bytes=400, clock=lambda: NOW)
    offsets = []
    for i in range(6):
        log.append_as_leader(encode_batch([b"v%d" % i], keys=[b"k"], timestamp=NOW))
        log.append_as_leader(
            encode_batch([b"t%d" % i], keys=[b"k"], timestamp=NOW, producer_id=50 + i, producer_epoch=0,
                         base_sequence=0, transactional=True)
        )  # fmt: skip
        offsets.append(end_txn(log, 50 + i, commit=False))
    log.append_as_leader(encode_batch([b"last"], keys=[b"k"], timestamp=NOW))
    log.update_high_watermark(log.log_end_offset)
    before = [entry for entries in index_entries(log).values() for entry in entries]
    assert [entry.last_offset for entry in before] == offsets
    segments = len(log.segment_base_offsets)
    log.close()
    log = PartitionLog(tmp_path / "t-0", segment_bytes=4000, clock=lambda: NOW)  # the cleaner merges small segments
    assert clean_log(log, now_ms=NOW) is not None
    after = index_entries(log)
    assert len(after) < segments  # segments were merged: their entries went into one file
    assert [entry for entries in after.values() for entry in entries] == before
    assert log.collect_aborted_transactions(0, log.log_end_offset) == before
    log.close()
    again = PartitionLog(tmp_path / "t-0", segment_bytes=4000, clock=lambda: NOW)
    assert again.load_report.clean_shutdown
    assert [entry for entries in index_entries(again).values() for entry in entries] == before
    again.close()
