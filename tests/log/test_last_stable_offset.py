"""The partition's first unstable offset and last stable offset (spec §3.3): Kafka's
ProducerStateManager (ongoingTxns, unreplicatedTxns, firstUnstableOffset) and
UnifiedLog.lastStableOffset = min(first unstable offset, high watermark), on the leader, on a
follower fed the same batches, and after a restart (clean or not) and a truncation."""

from __future__ import annotations

import pytest
from kafka_batches import build, marker

from dedup._types import Origin
from dedup.log import PartitionLog

NOW = 1_700_000_000_000


@pytest.fixture
def open_log(tmp_path, impl):
    opened = []

    def opener(name="clicks-0", **options):
        options.setdefault("clock", lambda: NOW)
        log = PartitionLog(tmp_path / name, table_class=impl, **options)
        opened.append(log)
        return log

    yield opener
    for log in opened:
        log.close_uncleanly()


def end_txn(log, producer_id, *, commit, epoch=0):
    return log.append_as_leader(marker(producer_id, epoch, 0, commit=commit), origin=Origin.COORDINATOR).base_offset


def caught_up(log):
    log.update_high_watermark(log.log_end_offset)
    return log


def test_without_transactions_the_lso_is_the_high_watermark(open_log):
    log = open_log()
    log.append_as_leader(build(1, 0, 0, 3))
    assert log.first_unstable_offset is None and log.last_stable_offset == 0
    caught_up(log)
    assert log.last_stable_offset == log.high_watermark == 3


def test_an_open_transaction_holds_the_lso_at_its_first_offset(open_log):
    log = open_log()
    log.append_as_leader(build(1, 0, 0, 2))  # 0-1
    log.append_as_leader(build(7, 0, 0, 2, transactional=True))  # 2-3
    log.append_as_leader(build(1, 0, 2, 2))  # 4-5: other producers' records do not move it
    log.append_as_leader(build(8, 0, 0, 1, transactional=True))  # 6
    caught_up(log)
    assert log.ongoing_transactions == {7: 2, 8: 6}
    assert log.first_unstable_offset == 2 and log.last_stable_offset == 2
    log.append_as_leader(build(7, 0, 2, 1, transactional=True))  # 7: same transaction, first offset kept
    end_txn(log, 7, commit=True)  # 8
    caught_up(log)
    assert log.ongoing_transactions == {8: 6} and log.last_stable_offset == 6
    end_txn(log, 8, commit=False)  # 9
    caught_up(log)
    assert log.ongoing_transactions == {} and log.last_stable_offset == log.high_watermark == 10


def test_a_marker_not_yet_replicated_keeps_its_transaction_unstable(open_log):
    # Kafka's unreplicatedTxns: completed, but unstable until the marker is below the HW.
    log = open_log()
    log.append_as_leader(build(7, 0, 0, 2, transactional=True))  # 0-1
    log.append_as_leader(build(1, 0, 0, 1))  # 2
    end_txn(log, 7, commit=True)  # 3
    log.update_high_watermark(3)
    assert log.ongoing_transactions == {} and log.first_unstable_offset == 0 and log.last_stable_offset == 0
    log.update_high_watermark(4)
    assert log.first_unstable_offset is None and log.last_stable_offset == 4


def test_the_lso_is_never_below_the_log_start_offset(open_log):
    log = open_log()
    log.append_as_leader(build(7, 0, 0, 2, transactional=True))  # 0-1
    log.append_as_leader(build(1, 0, 0, 2))  # 2-3
    caught_up(log)
    log.delete_records(1)
    assert log.first_unstable_offset == 1 and log.last_stable_offset == 1


def feed(log):
    """Transactions of three producers with other records between: offsets 0..10."""
    log.append_as_leader(build(7, 0, 0, 2, transactional=True))  # 0-1
    log.append_as_leader(build(8, 0, 0, 1, transactional=True))  # 2
    log.append_as_leader(build(1, 0, 0, 1))  # 3
    end_txn(log, 7, commit=False)  # 4
    log.append_as_leader(build(9, 0, 0, 2, transactional=True))  # 5-6
    end_txn(log, 8, commit=True)  # 7
    log.append_as_leader(build(7, 0, 2, 1, transactional=True))  # 8: 7's next transaction
    log.append_as_leader(build(1, 0, 1, 2))  # 9-10
    caught_up(log)


def answers(log):
    return (
        log.ongoing_transactions,
        log.first_unstable_offset,
        log.last_stable_offset,
        log.collect_aborted_transactions(0, log.log_end_offset),
    )


EXPECTED = ({9: 5, 7: 8}, 5, 5)


def test_a_follower_fed_the_leaders_batches_has_the_same_answers(open_log):
    leader = open_log()
    feed(leader)
    follower = open_log("follower-0")
    position = 0
    while position < leader.log_end_offset:  # in small pieces, as a replica fetcher may get them
        data = leader.read(position, 1)
        follower.append_as_follower(data)
        position = follower.log_end_offset
    caught_up(follower)
    assert answers(leader)[:3] == EXPECTED
    assert answers(follower) == answers(leader)
    assert follower.collect_aborted_transactions(0, 11)[0].producer_id == 7


@pytest.mark.parametrize("clean", [True, False], ids=["clean", "crash"])
@pytest.mark.parametrize("snapshot_format", ["full", "kafka"])
def test_a_restart_gives_the_same_answers(open_log, clean, snapshot_format):
    log = open_log(snapshot_format=snapshot_format, segment_bytes=200)
    feed(log)
    before = answers(log)
    assert before[:3] == EXPECTED
    if clean:
        log.close()
    else:
        log.flush()  # the high watermark checkpoint is written; the crash loses no batch
        log.close_uncleanly()
    again = open_log(snapshot_format=snapshot_format, segment_bytes=200)
    assert again.load_report.clean_shutdown == clean
    assert answers(again) == before


def test_a_truncation_reopens_a_transaction_whose_marker_it_drops(open_log):
    log = open_log()
    feed(log)
    log.truncate_to(7)  # 8's COMMIT at 7 goes
    assert log.ongoing_transactions == {8: 2, 9: 5}
    assert log.first_unstable_offset == 2 and log.last_stable_offset == 2
    log.truncate_to(4)  # and 7's ABORT at 4, with its index entry
    assert log.ongoing_transactions == {7: 0, 8: 2}
    assert log.collect_aborted_transactions(0, 4) == []


def test_a_transaction_open_across_a_roll_keeps_the_lso(open_log):
    log = open_log()
    log.append_as_leader(build(7, 0, 0, 1, transactional=True))
    log.roll()
    log.append_as_leader(build(1, 0, 0, 3))
    caught_up(log)
    log.close()
    again = open_log()
    assert again.ongoing_transactions == {7: 0} and again.last_stable_offset == 0
