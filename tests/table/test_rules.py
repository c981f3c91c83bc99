"""Kafka's validation rules, one test per rule, on both twins (spec §2, §3.1, §6, §8.4).

Every test names the rule of docs/spec.md it pins.
"""

from __future__ import annotations

import logging

import pytest

from dedup import (
    CompletedTxn,
    InvalidProducerEpochError,
    InvalidRecordError,
    InvalidTxnStateError,
    Origin,
    OutOfOrderSequenceError,
    TransactionCoordinatorFencedError,
)

INT32_MAX = (1 << 31) - 1
PID = 1000


class Log:
    """A log end offset that only moves forward, as the partition log hands them out."""

    def __init__(self, table):
        self.table = table
        self.end = 0

    def append(self, pid, epoch, seq, count=1, **kwargs):
        result = self.table.append(pid, epoch, seq, count, self.end, **kwargs)
        if not result.duplicate:
            self.end = result.last_offset + 1
        return result

    def marker(self, pid, epoch, coordinator_epoch, commit=True, **kwargs):
        completed = self.table.append_marker(pid, epoch, coordinator_epoch, self.end, commit=commit, **kwargs)
        self.end += 1
        return completed


@pytest.fixture
def log(table):
    return Log(table)


# --- §2.1 rule 8 ----------------------------------------------------------------------------


def test_rule8_client_batch_with_producer_id_needs_a_sequence(log):
    with pytest.raises(InvalidRecordError) as caught:
        log.append(PID, 0, -1)
    assert caught.value.code == 87
    assert PID not in log.table


@pytest.mark.parametrize("origin", [Origin.REPLICATION, Origin.COORDINATOR])
def test_rule8_only_applies_to_clients(log, origin):
    # §2.3: coordinator batches may carry -1 sequences; §2.4: followers take what the leader wrote.
    result = log.append(PID, 0, -1, 3, origin=origin)
    assert not result.duplicate
    assert log.table.entry(PID).batches[-1].last_sequence == -1


# --- §2.1 rule 10: duplicates -----------------------------------------------------------------


def test_rule10_retry_is_answered_with_the_original_offsets_and_not_recorded(log):
    first = log.append(PID, 0, 0, 10, max_timestamp=111)
    log.append(PID, 0, 10, 5, max_timestamp=222)
    before = log.table.entry(PID)
    end = log.end
    retry = log.append(PID, 0, 0, 10, max_timestamp=999)
    assert retry.duplicate
    assert (retry.base_offset, retry.last_offset) == (first.base_offset, first.last_offset) == (0, 9)
    # logAppendTime of a duplicate is the stored max timestamp of the original batch
    assert retry.timestamp == 111
    assert log.table.entry(PID) == before
    assert log.table.map_end_offset == end


def test_rule10_each_of_the_last_window_batches_is_recognised(impl):
    for window in (1, 5, 64):
        log = Log(impl(window))
        originals = [log.append(PID, 0, seq) for seq in range(window + 3)]
        retained = originals[-window:]
        for original in retained:
            retry = log.table.append(PID, 0, original.base_sequence, 1, log.end)
            assert retry.duplicate and retry.base_offset == original.base_offset
        # Older than the window: not a duplicate any more, so a sequence error (rule 16).
        with pytest.raises(OutOfOrderSequenceError):
            log.append(PID, 0, originals[-window - 1].base_sequence)


def test_rule10_is_checked_before_the_epoch_and_sequence_checks(log):
    log.append(PID, 0, 0)
    log.append(PID, 0, 1)
    log.append(PID, 0, 2)
    # seq 1 is not in sequence after 2, but it is a retained batch: a duplicate, no error.
    assert log.append(PID, 0, 1).duplicate


def test_rule10_compares_epoch_and_both_sequences_only(log):
    log.append(PID, 0, 0, 5)
    # Same base sequence, different last sequence (record count): a partial overlap, not a duplicate.
    with pytest.raises(OutOfOrderSequenceError):
        log.append(PID, 0, 0, 3)
    # Same sequences with another epoch is not a duplicate either (a new epoch must start at 0;
    # here it does, so it is appended).
    assert not log.append(PID, 1, 0, 5).duplicate


def test_rule10_transactional_flag_and_timestamp_do_not_matter(log):
    log.append(PID, 0, 0, 2, max_timestamp=5)
    retry = log.append(PID, 0, 0, 2, max_timestamp=77, transactional=False)
    assert retry.duplicate and retry.timestamp == 5


def test_rule10_not_for_replication_or_coordinator(log):
    log.append(PID, 0, 0, origin=Origin.REPLICATION)
    # A follower appends duplicates (testDuplicateAppendToFollower).
    again = log.append(PID, 0, 0, origin=Origin.REPLICATION)
    assert not again.duplicate
    assert len(log.table.entry(PID).batches) == 2
    assert not log.append(PID, 0, 0, origin=Origin.COORDINATOR).duplicate


def test_rule10_duplicate_at_the_wraparound(log):
    log.append(PID, 0, INT32_MAX - 1, 4)  # sequences MAX-1, MAX, 0, 1
    retry = log.append(PID, 0, INT32_MAX - 1, 4)
    assert retry.duplicate and (retry.base_offset, retry.last_offset) == (0, 3)
    assert log.table.entry(PID).batches[0].first_sequence == INT32_MAX - 1
    assert log.table.entry(PID).last_sequence == 1


# --- §2.1 rule 12: epochs ---------------------------------------------------------------------


def test_rule12_older_epoch_is_fenced(log):
    log.append(PID, 3, 0)
    with pytest.raises(InvalidProducerEpochError) as caught:
        log.append(PID, 2, 1)
    assert caught.value.code == 47
    assert log.table.entry(PID).producer_epoch == 3


def test_rule12_older_epoch_from_coordinator_is_fenced(log):
    log.append(PID, 3, 0, origin=Origin.COORDINATOR)
    with pytest.raises(InvalidProducerEpochError):
        log.append(PID, 2, 0, origin=Origin.COORDINATOR)


def test_rule12_follower_warns_and_applies_an_older_epoch(log, caplog):
    # §2.4: logged at WARN, not rejected, applied: the epoch moves back and the batches go.
    log.append(PID, 3, 0, origin=Origin.REPLICATION)
    with caplog.at_level(logging.WARNING, logger="dedup"):
        log.append(PID, 2, 7, origin=Origin.REPLICATION)
    assert any("older" in record.getMessage() for record in caplog.records)
    entry = log.table.entry(PID)
    assert entry.producer_epoch == 2
    assert [batch.last_sequence for batch in entry.batches] == [7]


# --- §2.1 rules 15 and 16: sequences ------------------------------------------------------


def test_rule15_new_epoch_must_start_at_zero(log):
    log.append(PID, 0, 0)
    with pytest.raises(OutOfOrderSequenceError) as caught:
        log.append(PID, 1, 5)
    assert caught.value.code == 45
    assert "new epoch" in str(caught.value)


def test_rule15_new_epoch_at_zero_resets_the_window(log):
    log.append(PID, 0, 0)
    log.append(PID, 0, 1)
    log.append(PID, 1, 0)
    entry = log.table.entry(PID)
    assert entry.producer_epoch == 1
    assert [batch.last_sequence for batch in entry.batches] == [0]
    # The old epoch's batches are gone: its retry is fenced, not a duplicate.
    with pytest.raises(InvalidProducerEpochError):
        log.append(PID, 0, 1)


def test_rule15_unknown_producer_accepts_any_sequence(log):
    # §2.5 / KIP-360 (2.5+): an unknown producer id starts wherever it starts.
    result = log.append(PID, 4, 12345, 3)
    assert not result.duplicate
    assert log.table.entry(PID).last_sequence == 12347
    with pytest.raises(OutOfOrderSequenceError):
        log.append(PID, 4, 12349)


def test_rule16_gap_is_out_of_order(log):
    log.append(PID, 0, 0, 10)
    with pytest.raises(OutOfOrderSequenceError) as caught:
        log.append(PID, 0, 11)
    message = str(caught.value)
    assert "11 (incoming seq. number)" in message and "9 (current end sequence number)" in message
    assert log.table.entry(PID).last_sequence == 9


def test_rule16_in_sequence_batch_is_appended(log):
    log.append(PID, 0, 0, 10)
    result = log.append(PID, 0, 10, 2)
    assert (result.base_offset, result.last_offset, result.last_sequence) == (10, 11, 11)


def test_rule16_wraps_from_int32_max_to_zero(log):
    # §8.4: MAX is followed by 0, not by MAX+1.
    log.append(PID, 0, INT32_MAX)
    assert not log.append(PID, 0, 0).duplicate
    assert log.table.entry(PID).last_sequence == 0


def test_rule16_sequence_after_marker_only_entry_must_be_zero(log):
    # §2.5: a known epoch with no batch metadata: the same epoch must restart at 0.
    log.marker(PID, 2, 0)
    with pytest.raises(OutOfOrderSequenceError):
        log.append(PID, 2, 5)
    assert not log.append(PID, 2, 0).duplicate


def test_rule16_not_for_replication_or_coordinator(log):
    log.append(PID, 0, 0)
    log.append(PID, 0, 50, origin=Origin.REPLICATION)  # gap accepted on a replica
    log.append(PID, 0, 7, origin=Origin.COORDINATOR)  # §2.3: no sequence validation
    assert log.table.entry(PID).last_sequence == 7


# --- §2.1 rules 17 and 18, §1.2: recording and transactions ---------------------------------


def test_rule17_window_keeps_the_last_batches_oldest_first(impl):
    log = Log(impl(3))
    for seq in range(5):
        log.append(PID, 0, seq, max_timestamp=100 + seq)
    entry = log.table.entry(PID)
    assert [batch.last_sequence for batch in entry.batches] == [2, 3, 4]
    assert [batch.first_offset for batch in entry.batches] == [2, 3, 4]
    assert entry.last_timestamp == 104
    assert (entry.first_sequence, entry.last_sequence) == (2, 4)
    assert (entry.first_data_offset, entry.last_data_offset) == (2, 4)


def test_rule17_batch_metadata_derives_first_sequence_and_offset(log):
    log.append(PID, 0, 0, 1)
    log.append(PID, 0, 1, 7)
    batch = log.table.entry(PID).batches[-1]
    assert (batch.first_sequence, batch.last_sequence, batch.offset_delta) == (1, 7, 6)
    assert (batch.first_offset, batch.last_offset) == (1, 7)


def test_rule18_transactional_batch_starts_a_transaction(log):
    log.append(PID, 0, 0)
    first = log.append(PID, 0, 1, 2, transactional=True)
    log.append(PID, 0, 3, transactional=True)
    assert log.table.entry(PID).current_txn_first_offset == first.base_offset


def test_rule18_plain_batch_inside_a_transaction_is_invalid_txn_state(log):
    log.append(PID, 0, 0, transactional=True)
    with pytest.raises(InvalidTxnStateError) as caught:
        log.append(PID, 0, 1)
    assert caught.value.code == 48
    assert log.table.entry(PID).last_sequence == 0


def test_rule18_also_on_followers(log):
    # §2.4: still enforced on a follower and during recovery.
    log.append(PID, 0, 0, transactional=True, origin=Origin.REPLICATION)
    with pytest.raises(InvalidTxnStateError):
        log.append(PID, 0, 1, origin=Origin.REPLICATION)


def test_rule18_comes_after_the_epoch_and_sequence_checks(log):
    log.append(PID, 1, 0, transactional=True)
    with pytest.raises(OutOfOrderSequenceError):
        log.append(PID, 1, 5)
    with pytest.raises(InvalidProducerEpochError):
        log.append(PID, 0, 1)


def test_transaction_survives_an_epoch_bump(log):
    # maybeUpdateProducerEpoch clears batches, not the transaction (§1.2, rule 18).
    log.append(PID, 0, 0, transactional=True)
    log.append(PID, 1, 0, transactional=True)
    entry = log.table.entry(PID)
    assert entry.current_txn_first_offset == 0
    assert entry.producer_epoch == 1 and len(entry.batches) == 1


# --- §2.2: transaction markers -----------------------------------------------------------------


def test_marker_completes_the_ongoing_transaction(log):
    log.append(PID, 0, 0, transactional=True)
    log.append(PID, 0, 1, transactional=True)
    completed = log.marker(PID, 0, 5, commit=True, timestamp=999)
    assert completed == CompletedTxn(PID, 0, 2, False)
    entry = log.table.entry(PID)
    assert entry.current_txn_first_offset is None
    assert entry.coordinator_epoch == 5 and entry.last_timestamp == 999
    assert entry.last_sequence == 1  # same epoch: batches stay (M5)
    assert log.table.map_end_offset == 3


def test_marker_abort_is_reported_as_aborted(log):
    log.append(PID, 0, 0, transactional=True)
    assert log.marker(PID, 0, 0, commit=False).is_aborted


def test_marker_for_an_empty_transaction_completes_nothing(log):
    # M5 / KAFKA-10702 (2.8+).
    log.append(PID, 0, 0)
    assert log.marker(PID, 0, 0) is None


def test_marker_with_a_new_epoch_clears_the_batches(log):
    log.append(PID, 0, 0, transactional=True)
    log.marker(PID, 1, 0, commit=False)
    entry = log.table.entry(PID)
    assert entry.producer_epoch == 1 and entry.batches == ()


def test_marker_creates_an_entry_for_an_unknown_producer(log):
    # M4.
    assert log.marker(PID, 3, 2) is None
    entry = log.table.entry(PID)
    assert (entry.producer_epoch, entry.coordinator_epoch, entry.batches) == (3, 2, ())


def test_marker_from_an_older_epoch_is_fenced(log):
    # M2.
    log.append(PID, 2, 0, transactional=True)
    with pytest.raises(InvalidProducerEpochError):
        log.marker(PID, 1, 0)
    assert log.table.entry(PID).current_txn_first_offset == 0


def test_marker_from_an_older_coordinator_is_fenced(log):
    # M3: equal or higher is accepted.
    log.append(PID, 0, 0, transactional=True)
    log.marker(PID, 0, 4)
    log.append(PID, 0, 1, transactional=True)
    with pytest.raises(TransactionCoordinatorFencedError) as caught:
        log.marker(PID, 0, 3)
    assert caught.value.code == 52
    assert log.marker(PID, 0, 4) is not None


def test_marker_regressions_are_applied_on_followers(log):
    # §2.4: epoch and coordinator epoch regressions are logged and applied.
    log.append(PID, 5, 0, origin=Origin.REPLICATION)
    log.marker(PID, 5, 9, origin=Origin.REPLICATION)
    log.marker(PID, 4, 3, origin=Origin.REPLICATION)
    entry = log.table.entry(PID)
    assert (entry.producer_epoch, entry.coordinator_epoch) == (4, 3)


def test_client_cannot_send_a_marker(log):
    # Rule 7: a client sent a control batch.
    with pytest.raises(InvalidRecordError):
        log.table.append_marker(PID, 0, 0, 0, commit=True, origin=Origin.CLIENT)


# --- §6: expiration ---------------------------------------------------------------------------


def test_expiration_removes_idle_producers(log):
    log.append(1, 0, 0, max_timestamp=1_000)
    log.append(2, 0, 0, max_timestamp=5_000)
    assert log.table.remove_expired(now_ms=10_999, expiration_ms=10_000) == 0
    assert log.table.remove_expired(now_ms=11_000, expiration_ms=10_000) == 1  # now - ts >= expiration
    assert list(log.table) == [2]
    assert log.table.entry(1) is None


def test_expiration_skips_producers_in_a_transaction(log):
    log.append(1, 0, 0, max_timestamp=0, transactional=True)
    log.append(2, 0, 0, max_timestamp=0)
    assert log.table.remove_expired(now_ms=10**12, expiration_ms=1) == 1
    assert 1 in log.table and 2 not in log.table
    log.marker(1, 0, 0, timestamp=0)
    assert log.table.remove_expired(now_ms=10**12, expiration_ms=1) == 1
    assert len(log.table) == 0


def test_expired_producer_is_new_again(log):
    # §2.5: a producer removed by expiration is indistinguishable from a new one.
    log.append(PID, 3, 0, max_timestamp=0)
    log.table.remove_expired(now_ms=100, expiration_ms=100)
    assert not log.append(PID, 0, 777).duplicate
    assert log.table.entry(PID).producer_epoch == 0


def test_expiration_uses_exact_arithmetic(log):
    # A very old timestamp must not wrap the difference negative.
    log.append(1, 0, 0, max_timestamp=-(1 << 63))
    log.append(2, 0, 0, max_timestamp=(1 << 63) - 1)
    assert log.table.remove_expired(now_ms=(1 << 63) - 1, expiration_ms=(1 << 63) - 1) == 1
    assert list(log.table) == [2]


def test_marker_timestamp_refreshes_expiration(log):
    # KAFKA-9144 (2.5+): markers count as activity.
    log.append(PID, 0, 0, max_timestamp=0, transactional=True)
    log.marker(PID, 0, 0, timestamp=50_000)
    assert log.table.remove_expired(now_ms=59_999, expiration_ms=10_000) == 0
