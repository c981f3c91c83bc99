"""The in-process follower's append (``append_as_follower(records, scanned=...)``, fed by
``Cluster.replicate`` with the leader's own bytes and scan) against the full follower append
that a fetch from another broker or a recovery gets (spec §3.4, §2.4).

Kafka's ``UnifiedLog.appendAsFollower`` scans and CRC-checks the fetched batches
(``analyzeAndValidateRecords``) and updates producer state with origin REPLICATION
(``analyzeAndValidateProducerState``). In one process the leader's bytes were already
scanned and checked; the fast entry skips that, but must leave the follower exactly as the
full path does: the same table, segments, snapshots, ``.txnindex`` files, leader epochs and
transactions, and the same refusals.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dedup import InvalidTxnStateError, Origin, scan_batches
from dedup.batch import encode_batch, encode_marker
from dedup.errors import KafkaError
from dedup.log import PartitionLog

NOW = 1_700_000_000_000
PRODUCERS = (11, 12, 13)


def files(log, *, snapshots=True):
    """The replica's segments, snapshots and .txnindex files and its leader epochs, byte for byte."""
    out = {}
    kinds = (".log", ".txnindex", "leader-epoch-checkpoint") + ((".snapshot",) if snapshots else ())
    for name in sorted(os.listdir(log.directory)):
        if name.endswith(kinds):
            with open(os.path.join(log.directory, name), "rb") as file:
                out[name] = file.read()
    return out


def state(log, *, snapshots=True):
    table = log.producer_state
    return {
        "map_end_offset": table.map_end_offset,
        "entries": {int(pid): table.entry(pid) for pid in table},
        "log_end_offset": log.log_end_offset,
        "ongoing": log.ongoing_transactions,
        "first_unstable_offset": log.first_unstable_offset,
        "last_stable_offset": log.last_stable_offset,
        "aborted": log.collect_aborted_transactions(0, log.log_end_offset),
        "epochs": log.end_offset_for_epoch(log.latest_epoch) if log.latest_epoch is not None else None,
        "files": files(log, snapshots=snapshots),
    }


class Producer:
    def __init__(self, producer_id):
        self.producer_id, self.epoch, self.sequence = producer_id, 0, 0

    def batch(self, count, *, transactional=False):
        batch = encode_batch(
            [b"v%d" % i for i in range(count)],
            producer_id=self.producer_id,
            producer_epoch=self.epoch,
            base_sequence=self.sequence,
            transactional=transactional,
            timestamp=NOW,
        )
        return batch


# One step: ("data", producer index, records, transactional), ("plain", records),
# ("marker", producer index, commit), ("bump", producer index), ("snapshot",), ("epoch",).
step = st.one_of(
    st.tuples(st.just("data"), st.integers(0, 2), st.integers(1, 4), st.booleans()),
    st.tuples(st.just("plain"), st.integers(1, 3)),
    st.tuples(st.just("marker"), st.integers(0, 2), st.booleans()),
    st.tuples(st.just("bump"), st.integers(0, 2)),
    st.tuples(st.just("snapshot")),
    st.tuples(st.just("epoch")),
)
# A request: one step, or several data/plain batches appended at once.
request = st.one_of(
    step.map(lambda one: [one]),
    st.lists(
        st.one_of(
            st.tuples(st.just("data"), st.integers(0, 2), st.integers(1, 3), st.booleans()),
            st.tuples(st.just("plain"), st.integers(1, 2)),
        ),
        min_size=2,
        max_size=4,
    ),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    requests=st.lists(request, min_size=1, max_size=25),
    segment_bytes=st.integers(300, 3000),
    max_producers=st.sampled_from([None, 2]),
)
# Found by CI: a plain batch beside one producer's batch in one append. The leader stages the
# two on a copy; the follower must too, or with a producer cap it evicts another producer.
@example(requests=[[("data", 1, 1, False)], [("data", 2, 1, False)], [("plain", 1), ("data", 0, 1, False)]],
         segment_bytes=300, max_producers=2)  # fmt: skip
def test_a_follower_fed_the_leaders_scan_ends_byte_identical_to_one_fed_through_the_full_path(
    tmp_path_factory, impl, requests, segment_bytes, max_producers
):
    root = tmp_path_factory.mktemp("replicas")
    options = {
        "table_class": impl,
        "clock": lambda: NOW,
        "segment_bytes": segment_bytes,
        "max_producers": max_producers,
    }
    leader = PartitionLog(root / "leader" / "clicks-0", **options)
    full = PartitionLog(root / "full" / "clicks-0", **options)
    fast = PartitionLog(root / "fast" / "clicks-0", **options)
    producers = [Producer(producer_id) for producer_id in PRODUCERS]
    in_txn: set[int] = set()
    leader_epoch = 0
    try:
        for steps in requests:
            kind = steps[0][0]
            if kind == "snapshot":
                assert leader.take_snapshot() == full.take_snapshot() == fast.take_snapshot()
                continue
            if kind == "epoch":
                leader_epoch += 1
                continue
            if kind == "bump":
                producer = producers[steps[0][1]]
                producer.epoch, producer.sequence = producer.epoch + 1, 0
                continue
            start = leader.log_end_offset
            try:
                if kind == "marker":
                    producer = producers[steps[0][1]]
                    marker = encode_marker(
                        producer_id=producer.producer_id,
                        producer_epoch=producer.epoch,
                        commit=steps[0][2],
                        coordinator_epoch=0,
                        timestamp=NOW,
                    )
                    leader.append_as_leader(marker, leader_epoch=leader_epoch, origin=Origin.COORDINATOR)
                    in_txn.discard(producer.producer_id)
                else:
                    parts, sent = [], []
                    for one in steps:
                        if one[0] == "plain":
                            parts.append(encode_batch([b"p"] * one[1], timestamp=NOW))
                            continue
                        producer = producers[one[1]]
                        transactional = one[3] or producer.producer_id in in_txn  # (no INVALID_TXN_STATE)
                        parts.append(producer.batch(one[2], transactional=transactional))
                        producer.sequence += one[2]
                        sent.append((producer, one[2], transactional))
                    try:
                        leader.append_as_leader(b"".join(parts), leader_epoch=leader_epoch)
                    except KafkaError:
                        for producer, count, _ in sent:
                            producer.sequence -= count
                        raise
                    in_txn.update(producer.producer_id for producer, _, txn in sent if txn)
            except KafkaError:
                continue
            if leader.log_end_offset == start:
                continue  # a duplicate
            # The full path reads the leader's file, as a fetch from another broker does.
            full.append_as_follower(leader.read(start, 1 << 24))
            appended = leader.take_leader_append()
            assert appended is not None and appended[0] == start
            fast.append_as_follower(appended[1], scanned=scan_batches(appended[1]))
            assert fast.log_end_offset == full.log_end_offset == leader.log_end_offset
        for log in (leader, full, fast):
            log.update_high_watermark(log.log_end_offset)
        for log in (leader, full, fast):
            log.take_snapshot()
        # The fast path records a lone batch as the leader does (check, write, update on the
        # live table), so it keeps the leader's table byte for byte. The full path stages it on
        # a copy: with a producer cap (max_producers, dedup's own) the same entries come out of
        # update_from in another order, and a snapshot lists them in that order; without a cap
        # all three are identical.
        assert state(fast) == state(leader)
        assert state(fast, snapshots=max_producers is None) == state(full, snapshots=max_producers is None)
        assert full.read(0, 1 << 24) == fast.read(0, 1 << 24) == leader.read(0, 1 << 24)
    finally:
        for log in (leader, full, fast):
            log.close_uncleanly()
    # Both reopen to the same state (the snapshots and segments they left).
    full, fast = (PartitionLog(root / name / "clicks-0", **options) for name in ("full", "fast"))
    try:
        assert state(fast, snapshots=max_producers is None) == state(full, snapshots=max_producers is None)
    finally:
        full.close_uncleanly()
        fast.close_uncleanly()


@pytest.mark.parametrize("scanned", [False, True])
def test_a_plain_batch_during_the_followers_open_transaction_is_refused_on_both_paths(tmp_path, impl, scanned):
    # Rule 18 holds for REPLICATION too (spec §2.4): a follower whose table has pid 11 in a
    # transaction refuses a non-transactional batch of it, and writes nothing.
    log = PartitionLog(tmp_path / "clicks-0", table_class=impl, clock=lambda: NOW)
    try:
        opening = encode_batch(
            [b"a"], producer_id=11, producer_epoch=0, base_sequence=0, transactional=True, timestamp=NOW
        )
        log.append_as_follower(opening, scanned=scan_batches(opening) if scanned else None)
        plain = encode_batch([b"b"], producer_id=11, producer_epoch=0, base_sequence=1, timestamp=NOW, base_offset=1)
        before = (log.log_end_offset, log.producer_state.entry(11), files(log))
        with pytest.raises(InvalidTxnStateError):
            log.append_as_follower(plain, scanned=scan_batches(plain) if scanned else None)
        assert (log.log_end_offset, log.producer_state.entry(11), files(log)) == before
    finally:
        log.close_uncleanly()


def test_the_leaders_last_append_is_taken_once_and_only_while_the_log_ends_with_it(tmp_path, impl):
    log = PartitionLog(tmp_path / "clicks-0", table_class=impl, clock=lambda: NOW)
    try:
        first = encode_batch([b"a", b"b"], producer_id=11, producer_epoch=0, base_sequence=0, timestamp=NOW)
        log.append_as_leader(first, leader_epoch=3)
        offset, records = log.take_leader_append()
        assert offset == 0 and bytes(records) == log.read(0)
        scanned = scan_batches(records)
        assert scanned["base_offset"].tolist() == [0] and scanned["partition_leader_epoch"].tolist() == [3]
        assert log.take_leader_append() is None  # taken: the log holds no request after its round
        second = encode_batch([b"c"], producer_id=11, producer_epoch=0, base_sequence=2, timestamp=NOW)
        log.append_as_leader(second, leader_epoch=3)
        log.truncate_to(2)
        assert log.take_leader_append() is None  # the log no longer ends where the append did
    finally:
        log.close_uncleanly()
