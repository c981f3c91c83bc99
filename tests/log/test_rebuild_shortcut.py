"""Kafka's empty-before-truncation shortcut and the transaction index (spec §5.3 step 3).

Kafka's UnifiedLog.rebuildProducerState (storage/.../log/UnifiedLog.java) takes
``isEmptyBeforeTruncation = producerStateManager.isEmpty() && mapEndOffset() >= lastOffset``
before ``truncateAndReload`` and replays the log only ``if (lastOffset > mapEndOffset() &&
!isEmptyBeforeTruncation)``. A table is empty once its producers expired, which
ProducerStateManager.isProducerExpired allows as soon as their transactions completed. A
follower that then truncates below those markers (an unclean election) reloads an older
snapshot, or none, and does not replay the rest; ProducerAppendInfo.appendEndTxnMarker emits a
CompletedTxn only for an entry with a ``currentTxnFirstOffset``, and UnifiedLog.append writes
the AbortedTxn from it (LogSegment.updateTxnIndex). So Kafka's ``.txnindex`` can then disagree
with the log: the simulator's seeds 176, 1313 and 1692 are these two cases. dedup does what
Kafka does and records the range in ``PartitionLog.skipped_replays``.
"""

from __future__ import annotations

import pytest
from kafka_batches import build, marker

from dedup._types import Origin
from dedup.log import PartitionLog
from dedup.transaction_index import AbortedTxn

NOW = 1_700_000_000_000
LATER = NOW + 7 * 24 * 3600 * 1000  # past producer.id.expiration.ms (one day)


@pytest.fixture
def log(tmp_path, impl):
    opened = PartitionLog(tmp_path / "clicks-0", table_class=impl, clock=lambda: NOW,
                          producer_id_expiration_ms=24 * 3600 * 1000)  # fmt: skip
    yield opened
    opened.close_uncleanly()


def _index(log: PartitionLog) -> list[AbortedTxn]:
    return [entry for segment in log._local_log.segments for entry in segment.txn_index.entries]


def _end_txn(log: PartitionLog, producer_id: int, *, commit: bool) -> int:
    return log.append_as_leader(marker(producer_id, 0, 0, commit=commit), origin=Origin.COORDINATOR).base_offset


def _new_leaders_abort(log: PartitionLog, producer_id: int) -> None:
    """The ABORT marker a new leader (after an unclean election) writes at the follower's log end."""
    log.append_as_follower(marker(producer_id, 0, 1, commit=False, base_offset=log.log_end_offset))


def _committed_transaction_across_a_roll(log: PartitionLog) -> None:
    log.append_as_leader(build(7, 0, 0, 2, transactional=True))  # 0-1, transaction open from 0
    log.roll()  # snapshot at 2: producer 7 with its transaction open since 0
    log.append_as_leader(build(7, 0, 2, 1, transactional=True))  # 2
    assert _end_txn(log, 7, commit=True) == 3
    log.append_as_leader(build(8, 0, 0, 1))  # 4
    log.update_high_watermark(log.log_end_offset)


def test_a_transaction_the_skipped_range_closes_stays_open_from_the_older_snapshot(log):
    _committed_transaction_across_a_roll(log)
    assert log.remove_expired_producers(LATER) == 2  # both idle, no transaction open: the table is empty
    assert log.truncate_to(4)  # below the newest snapshot (5), above the COMMIT at 3
    # truncateAndReload loads the snapshot at 2, where producer 7's transaction is open; the
    # replay of [2, 4), which holds its COMMIT, is skipped.
    assert log.skipped_replays == [(2, 4)]
    assert log.ongoing_transactions == {7: 0}
    assert log.first_unstable_offset == 0  # the last stable offset is held at 0 by a committed transaction
    _new_leaders_abort(log, 7)
    # the ABORT completes the transaction with the snapshot's first offset: Kafka's index claims
    # offsets 0-2, which the COMMIT at 3 made visible, were aborted (a rebuild finds no entry)
    assert _index(log) == [AbortedTxn(7, 0, 4, 5)]
    assert log.collect_aborted_transactions(0, 5) == [AbortedTxn(7, 0, 4, 5)]


def test_a_transaction_the_skipped_range_opens_is_lost_and_its_abort_completes_nothing(log):
    """Fails without the change to rebuild_producer_state: a skip that reloads no producer
    (no snapshot at or below the target) was not recorded in ``skipped_replays``."""
    log.append_as_leader(build(8, 0, 0, 1))  # 0
    log.append_as_leader(build(7, 0, 0, 2, transactional=True))  # 1-2, open from 1
    assert _end_txn(log, 7, commit=False) == 3
    log.append_as_leader(build(8, 0, 1, 1))  # 4
    log.update_high_watermark(log.log_end_offset)
    log.roll()  # snapshot at 5 only
    assert _index(log) == [AbortedTxn(7, 1, 3, 4)]
    assert log.remove_expired_producers(LATER) == 2
    assert log.truncate_to(3)  # below the ABORT: the transaction from 1 is open in the log again
    assert log.skipped_replays == [(0, 3)]  # no snapshot at or below 3: the table starts at the log start
    assert log.ongoing_transactions == {} and log.first_unstable_offset is None  # Kafka loses it
    assert _index(log) == []  # LogSegment.truncateTo dropped the entry of the ABORT at 3
    _new_leaders_abort(log, 7)
    assert _index(log) == []  # a rebuild from the log finds AbortedTxn(7, 1, 3, 4)


def test_with_a_producer_left_in_the_table_the_replay_happens_and_the_index_follows_the_log(log):
    # the control: the same log as the first test without the expiration
    _committed_transaction_across_a_roll(log)
    assert log.truncate_to(4)
    assert log.skipped_replays == []
    assert log.ongoing_transactions == {}
    _new_leaders_abort(log, 7)
    assert _index(log) == []  # the ABORT closes nothing: the COMMIT at 3 did
