"""Kafka's TransactionCoordinator over a real ``__transaction_state`` (3 brokers, 3 partitions)
on a manual clock: InitProducerId, AddPartitionsToTxn, EndTxn and their errors, markers on
the partitions, fencing, timeouts, expiry, and reloading from the log."""

from __future__ import annotations

import itertools

import pytest
from kio.schema.errors import ErrorCode

from dedup.cluster import _is_commit
from dedup.coordinator.timers import ManualTimer
from dedup.coordinator.transaction_coordinator import TransactionCoordinator
from dedup.coordinator.transaction_log import TransactionLogValue
from dedup.coordinator.transaction_metadata import TransactionState
from dedup.records import scan_batches
from dedup.server.topics import Topics, TransactionStateTopic

S = TransactionState
A, B = ("clicks", 0), ("clicks", 1)


class Harness:
    def __init__(self, directory, **options) -> None:
        self.timer = ManualTimer()
        self.topics = Topics(str(directory), brokers=3, cluster_options={"min_insync_replicas": 2})
        if "clicks" not in self.topics:
            self.topics.ensure("clicks", 2, 3, live_brokers=range(3))
        self.storage = TransactionStateTopic(self.topics, num_partitions=3, replication_factor=3,
                                             live_brokers=lambda: range(3))  # fmt: skip
        self.ids = itertools.count(5000)
        self.markers_seen: list[tuple[str, int, int, bool]] = []
        self.coordinator = TransactionCoordinator(
            self.storage, generate_producer_id=lambda: next(self.ids), partition=self.topics.partition,
            on_marker=lambda *marker: self.markers_seen.append(marker), clock=self.timer.now, timer=self.timer,
            **options,
        )  # fmt: skip
        self.coordinator.start()  # as KafkaServer.start does

    def broker(self, tid: str = "t") -> int:
        broker = self.coordinator.coordinator_id(tid)
        self.timer.advance(0)  # the partition's load runs
        assert broker is not None
        return broker

    def init(self, tid: str = "t", timeout: int = 60_000, pid: int = -1, epoch: int = -1):
        return self.coordinator.init_producer_id(self.broker(tid), tid, timeout, pid, epoch)

    def add(self, pid: int, epoch: int, partitions=(A, B), tid: str = "t") -> ErrorCode:
        return self.coordinator.add_partitions(self.broker(tid), tid, pid, epoch, list(partitions))

    def end(self, pid: int, epoch: int, commit: bool, tid: str = "t") -> ErrorCode:
        return self.coordinator.end_transaction(self.broker(tid), tid, pid, epoch, commit=commit)

    def state(self, tid: str = "t"):
        return self.coordinator.transactions[tid]

    def log_end(self, tid: str = "t") -> int:
        cluster = self.storage.partition(self.coordinator.partition_for(tid))
        assert cluster is not None
        return cluster.leader_log.log_end_offset

    def markers(self, partition: tuple[str, int] = A) -> list[tuple[bool, int, int]]:
        """(commit, producer id, epoch) of every control batch in the partition's leader log."""
        cluster = self.topics.partition(*partition)
        assert cluster is not None
        log = cluster.leader_log
        data = log.read(log.log_start_offset, 1 << 20, max_offset=log.high_watermark)
        out = []
        for header in scan_batches(data) if data else []:
            if header["is_control"]:
                start = int(header["position"])
                batch = memoryview(data)[start : start + int(header["batch_length"]) + 12]
                out.append((_is_commit(batch), int(header["producer_id"]), int(header["producer_epoch"])))
        return out

    def close(self) -> None:
        self.coordinator.close()
        self.topics.close()


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def test_init_gives_a_new_id_epoch_0_then_bumps_the_epoch(h):
    first = h.init()
    assert (first.error, first.producer_epoch) == (ErrorCode.none, 0)
    second = h.init()
    assert (second.error, second.producer_id, second.producer_epoch) == (ErrorCode.none, first.producer_id, 1)
    assert h.state().state is S.EMPTY


def test_commit_and_abort_write_markers_on_every_partition_and_complete(h):
    pid = h.init().producer_id
    assert h.add(pid, 0) == ErrorCode.none
    assert h.state().state is S.ONGOING
    assert h.end(pid, 0, commit=True) == ErrorCode.none
    assert h.state().state is S.COMPLETE_COMMIT and h.state().topic_partitions == set()
    assert h.add(pid, 0, [A]) == ErrorCode.none
    assert h.end(pid, 0, commit=False) == ErrorCode.none
    assert h.state().state is S.COMPLETE_ABORT
    assert h.markers(A) == [(True, pid, 0), (False, pid, 0)]
    assert h.markers(B) == [(True, pid, 0)]
    assert h.markers_seen == [("clicks", 0, pid, True), ("clicks", 1, pid, True), ("clicks", 0, pid, False)]
    # a retried EndTxn of the completed transaction is answered NONE, the other outcome INVALID_TXN_STATE
    assert h.end(pid, 0, commit=False) == ErrorCode.none
    assert h.end(pid, 0, commit=True) == ErrorCode.invalid_txn_state


def test_bad_requests_get_kafkas_errors_and_log_nothing(h):
    pid = h.init().producer_id
    before = h.log_end()
    assert h.end(pid, 0, commit=True, tid="unknown") == ErrorCode.invalid_producer_id_mapping
    assert h.add(pid + 1, 0) == ErrorCode.invalid_producer_id_mapping
    assert h.add(pid, 7) == ErrorCode.producer_fenced
    assert h.end(pid, 0, commit=True) == ErrorCode.invalid_txn_state  # no transaction (Empty)
    assert h.init(timeout=900_001).error == ErrorCode.invalid_transaction_timeout
    assert h.init(timeout=0).error == ErrorCode.invalid_transaction_timeout
    assert h.coordinator.init_producer_id(h.broker(), "", 1000).error == ErrorCode.invalid_request
    other = next(b for b in range(3) if b != h.broker())
    assert h.coordinator.end_transaction(other, "t", pid, 0, commit=True) == ErrorCode.not_coordinator
    assert h.log_end() == before
    assert (h.state().state, h.state().producer_epoch) == (S.EMPTY, 0)


def test_a_new_instance_fences_the_open_transaction_of_the_old(h):
    pid = h.init().producer_id
    assert h.add(pid, 0) == ErrorCode.none
    fenced = h.init()  # the second instance: the open transaction is aborted with epoch 1
    assert fenced.error == ErrorCode.concurrent_transactions
    assert h.markers(A) == h.markers(B) == [(False, pid, 1)]
    assert h.state().state is S.COMPLETE_ABORT
    retry = h.init()
    assert (retry.error, retry.producer_id, retry.producer_epoch) == (ErrorCode.none, pid, 2)
    assert h.end(pid, 0, commit=True) == ErrorCode.producer_fenced  # the zombie
    assert h.add(pid, 0) == ErrorCode.producer_fenced


def test_kip_360_a_producer_naming_its_epoch_is_bumped_and_a_stale_one_fenced(h):
    pid = h.init().producer_id
    bumped = h.init(pid=pid, epoch=0)
    assert (bumped.error, bumped.producer_epoch) == (ErrorCode.none, 1)
    assert h.init(pid=pid, epoch=0).producer_epoch == 1  # a retry of the bump that succeeded
    assert h.init(pid=pid + 7, epoch=1).error == ErrorCode.producer_fenced  # another producer id
    h.init()  # a new instance: epoch 2, the last epoch forgotten
    assert h.init(pid=pid, epoch=0).error == ErrorCode.producer_fenced


def test_an_exhausted_epoch_rolls_over_to_a_new_producer_id(h):
    pid = h.init().producer_id
    h.state().producer_epoch = 32766  # as after 32,766 restarts
    rolled = h.init()
    assert rolled.error == ErrorCode.none and rolled.producer_id != pid and rolled.producer_epoch == 0


def test_a_timed_out_transaction_is_aborted_with_the_epoch_bumped(tmp_path):
    h = Harness(tmp_path, transaction_abort_timed_out_transaction_cleanup_interval_ms=1000)
    try:
        pid = h.init(timeout=5000).producer_id
        assert h.add(pid, 0) == ErrorCode.none
        h.timer.advance(4000)
        assert h.state().state is S.ONGOING  # not yet
        h.timer.advance(3000)
        assert (h.state().state, h.state().producer_epoch) == (S.COMPLETE_ABORT, 1)
        assert h.markers(A) == h.markers(B) == [(False, pid, 1)]
        assert h.end(pid, 0, commit=True) == ErrorCode.producer_fenced
        # KIP-588 as Kafka's coordinator has it (TV_0): the fence forgot the last epoch, so the timed-out
        # producer naming its epoch is fenced; a new instance (no epoch named) gets the next one.
        assert h.init(timeout=5000, pid=pid, epoch=0).error == ErrorCode.producer_fenced
        assert h.init(timeout=5000).producer_epoch == 2
    finally:
        h.close()


def test_idle_ids_expire_with_a_tombstone_and_do_not_come_back(tmp_path):
    h = Harness(tmp_path, transactional_id_expiration_ms=10_000,
                transaction_remove_expired_transaction_cleanup_interval_ms=1000)  # fmt: skip
    try:
        pid = h.init("idle").producer_id
        h.init("busy")
        h.timer.advance(5000)
        h.init("busy")  # updated: not idle
        h.timer.advance(6000)
        assert "idle" not in h.coordinator.transactions and "busy" in h.coordinator.transactions
    finally:
        h.close()
    again = Harness(tmp_path)
    try:
        again.broker("idle"), again.broker("busy")
        assert "idle" not in again.coordinator.transactions  # the tombstone removed it for good
        assert again.state("busy").producer_epoch == 1
        assert pid not in {m.producer_id for m in again.coordinator.transactions.values()}
    finally:
        again.close()


def test_state_is_reloaded_and_a_prepared_commit_is_completed_with_its_markers(tmp_path):
    h = Harness(tmp_path)
    pid = h.init().producer_id
    assert h.add(pid, 0) == ErrorCode.none
    # The coordinator wrote PrepareCommit and crashed before any marker: write that record as it would have.
    metadata = h.state()
    transit = metadata.prepare_abort_or_commit(S.PREPARE_COMMIT, h.timer.now())
    metadata.complete_transition_to(transit)
    assert h.coordinator.log.append("t", TransactionLogValue.of(metadata)) == ErrorCode.none
    assert h.markers(A) == []
    h.close()

    again = Harness(tmp_path)
    try:
        broker = again.coordinator.coordinator_id("t")
        assert broker is not None
        assert again.coordinator.end_transaction(broker, "t", pid, 0, commit=True) == (
            ErrorCode.coordinator_load_in_progress)  # fmt: skip
        again.timer.advance(0)
        assert again.state().state is S.COMPLETE_COMMIT
        assert again.markers(A) == again.markers(B) == [(True, pid, 0)]
        assert again.init().producer_epoch == 1  # the id and its epoch survived
    finally:
        again.close()


def test_a_marker_that_cannot_be_written_is_retried_and_the_transaction_waits(h):
    pid = h.init().producer_id
    assert h.add(pid, 0) == ErrorCode.none
    cluster = h.topics.partition(*B)
    for broker in list(cluster.replicas):  # B is offline
        cluster.stop_broker(broker)
    assert h.end(pid, 0, commit=True) == ErrorCode.none
    assert h.state().state is S.PREPARE_COMMIT
    assert h.add(pid, 0) == ErrorCode.concurrent_transactions
    assert h.init().error == ErrorCode.concurrent_transactions
    for broker in list(cluster.replicas):
        cluster.start_broker(broker)
    h.timer.advance(200)
    assert h.state().state is S.COMPLETE_COMMIT
    assert h.markers(B) == [(True, pid, 0)]


def test_describe_and_list_transactions(h):
    pid = h.init().producer_id
    h.add(pid, 0, [A])
    error, found = h.coordinator.describe_transaction(h.broker(), "t")
    assert error == ErrorCode.none
    assert (found["transaction_state"], found["producer_id"], found["topics"]) == ("Ongoing", pid, {"clicks": [0]})
    assert h.coordinator.describe_transaction(h.broker("nope"), "nope")[0] == ErrorCode.transactional_id_not_found
    assert h.coordinator.list_transactions(0)[0] == ErrorCode.coordinator_load_in_progress  # the other partitions
    h.timer.advance(0)
    listed = [h.coordinator.list_transactions(b, ["Ongoing", "Nope"]) for b in range(3)]
    assert [entry for _, found, _ in listed for entry in found] == [("t", pid, "Ongoing")]
    assert all(unknown == ["Nope"] for _, _, unknown in listed)


def test_an_id_too_long_for_the_log_record_is_an_error_code_not_an_exception(h):
    result = h.init("x" * 40_000)  # flexible InitProducerId (v2+) carries it; the log key's int16 length cannot
    assert result.error == ErrorCode.unknown_server_error


def test_a_restarted_coordinator_aborts_a_timed_out_transaction_without_a_request(tmp_path):
    h = Harness(tmp_path)
    pid = h.init(timeout=5000).producer_id
    assert h.add(pid, 0) == ErrorCode.none
    h.close()
    again = Harness(tmp_path, transaction_abort_timed_out_transaction_cleanup_interval_ms=1000)
    try:
        again.timer.advance(0)  # the load
        again.timer.now_ms += 10_000
        again.timer.advance(1000)  # the abort check: nothing but the timers ran
        state = again.coordinator.transactions["t"]
        assert (state.state, state.producer_epoch) == (S.COMPLETE_ABORT, 1)
        assert again.markers(A) == [(False, pid, 1)]
    finally:
        again.close()
