"""Kafka's TransactionMetadata state machine: valid previous states, the epoch rules of
InitProducerId (KIP-360), fencing, exhaustion, and the sanity checks of a completed transition."""

from __future__ import annotations

import pytest

from dedup.coordinator.transaction_metadata import (
    IllegalTransition,
    TransactionMetadata,
    TransactionState,
    is_epoch_exhausted,
)

S = TransactionState


def metadata(state: TransactionState = S.EMPTY, epoch: int = 3, **kwargs) -> TransactionMetadata:
    return TransactionMetadata("t", 1000, epoch, txn_timeout_ms=1000, state=state, txn_last_update_timestamp=0,
                               **kwargs)  # fmt: skip


def apply(m: TransactionMetadata, transit) -> TransactionMetadata:
    m.complete_transition_to(transit)
    return m


def test_valid_previous_states_are_kafkas():
    expected = {
        S.EMPTY: {S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT},
        S.ONGOING: {S.ONGOING, S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT},
        S.PREPARE_COMMIT: {S.ONGOING},
        S.PREPARE_ABORT: {S.ONGOING, S.PREPARE_EPOCH_FENCE},
        S.COMPLETE_COMMIT: {S.PREPARE_COMMIT},
        S.COMPLETE_ABORT: {S.PREPARE_ABORT},
        S.DEAD: {S.EMPTY, S.COMPLETE_ABORT, S.COMPLETE_COMMIT},
        S.PREPARE_EPOCH_FENCE: {S.ONGOING},
    }
    assert {state: set(state.valid_previous_states) for state in S} == expected


def test_a_full_transaction_walks_the_states_and_clears_its_partitions():
    m = metadata()
    apply(m, m.prepare_add_partitions({("a", 0)}, 10))
    assert (m.state, m.txn_start_timestamp, m.topic_partitions) == (S.ONGOING, 10, {("a", 0)})
    apply(m, m.prepare_add_partitions({("b", 1)}, 20))
    assert (m.txn_start_timestamp, m.topic_partitions) == (10, {("a", 0), ("b", 1)})  # the start stays
    apply(m, m.prepare_abort_or_commit(S.PREPARE_COMMIT, 30))
    apply(m, m.prepare_complete(40))
    assert (m.state, m.topic_partitions, m.producer_epoch, m.txn_last_update_timestamp) == (
        S.COMPLETE_COMMIT, set(), 3, 40)  # fmt: skip


def test_a_pending_transition_blocks_another_and_an_invalid_one_is_refused():
    m = metadata()
    m.prepare_add_partitions({("a", 0)}, 10)
    with pytest.raises(IllegalTransition, match="pending"):
        m.prepare_add_partitions({("a", 1)}, 10)
    m.abort_pending()
    assert m.state is S.EMPTY and m.topic_partitions == set()  # nothing applied
    with pytest.raises(IllegalTransition, match="not a valid previous state"):
        m.prepare_abort_or_commit(S.PREPARE_COMMIT, 10)


def test_init_producer_id_bumps_the_epoch_and_kip_360_retries_get_the_same_epoch():
    m = metadata(epoch=3)
    apply(m, m.prepare_increment_producer_epoch(1000, None, 5))
    assert (m.producer_epoch, m.last_producer_epoch) == (4, -1)
    apply(m, m.prepare_increment_producer_epoch(1000, 4, 6))  # the producer names its current epoch
    assert (m.producer_epoch, m.last_producer_epoch) == (5, 4)
    retry = m.prepare_increment_producer_epoch(1000, 4, 7)  # the same request again: no second bump
    assert retry is not None and retry.producer_epoch == 5
    m.abort_pending()
    assert m.prepare_increment_producer_epoch(1000, 2, 8) is None  # an older epoch: PRODUCER_FENCED


def test_fencing_bumps_once_even_if_the_fence_failed_before():
    m = metadata(S.ONGOING, topic_partitions={("a", 0)}, txn_start_timestamp=1)
    assert m.prepare_fence_producer_epoch().producer_epoch == 4
    m.abort_pending()
    m.has_failed_epoch_fence = True
    assert m.prepare_fence_producer_epoch().producer_epoch == 3


def test_an_exhausted_epoch_rotates_to_a_new_producer_id_at_epoch_0():
    assert not is_epoch_exhausted(32765) and is_epoch_exhausted(32766)
    m = metadata(epoch=32766)
    with pytest.raises(IllegalTransition, match="Cannot allocate any more producer epochs"):
        m.prepare_increment_producer_epoch(1000, None, 1)
    apply(m, m.prepare_producer_id_rotation(2000, 1000, 1, record_last_epoch=True))
    assert (m.producer_id, m.producer_epoch, m.last_producer_epoch, m.previous_producer_id) == (2000, 0, 32766, 1000)


def test_complete_transition_checks_the_epoch():
    m = metadata(S.ONGOING, topic_partitions={("a", 0)}, txn_start_timestamp=1)
    transit = m.prepare_abort_or_commit(S.PREPARE_ABORT, 2)
    m.producer_epoch = 9  # something changed the epoch under the pending transition
    with pytest.raises(IllegalTransition, match="failed transition"):
        m.complete_transition_to(transit)


def test_only_idle_states_may_expire():
    assert {s for s in S if s.is_expiration_allowed} == {S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT}
