"""The partition log and the cluster with a capped producer table (``max_producers``, dedup's
``producer.state.max.producers``; issue 16 item 6): the cap reaches every table the log makes
or loads, and the trade it makes shows in the log: an evicted producer's retry is written
again, a kept producer's is answered with its original offsets."""

from __future__ import annotations

import pytest
from kafka_batches import TIMESTAMP, build

from dedup.cluster import Cluster
from dedup.errors import ThrottlingQuotaExceededError
from dedup.log import PartitionLog


class Clock:
    """The broker's time: the batches' own, so nothing expires on loading."""

    def __call__(self) -> int:
        return TIMESTAMP


@pytest.fixture
def open_log(tmp_path, impl):
    opened = []

    def opener(**options):
        options.setdefault("clock", Clock())
        log = PartitionLog(tmp_path / "clicks-0", table_class=impl, **options)
        opened.append(log)
        return log

    yield opener
    for log in opened:
        log.close_uncleanly()


def test_a_capped_log_keeps_its_most_recent_producers_and_pays_with_old_duplicates(open_log):
    log = open_log(max_producers=3)
    for producer_id in range(1, 11):
        log.append_as_leader(build(producer_id, 0, 0))
    assert sorted(log.producer_state) == [8, 9, 10] and log.producer_state.evictions == 7
    kept = log.append_as_leader(build(10, 0, 0))
    assert kept.duplicate and kept.base_offset == 9  # still deduplicated
    evicted = log.append_as_leader(build(1, 0, 0))
    assert not evicted.duplicate and evicted.base_offset == 10  # unknown again: written twice (KIP-360)
    # Several batches in one append go through the staged copy and update_from: the cap holds.
    log.append_as_leader(build(20, 0, 0) + build(21, 0, 0) + build(22, 0, 0) + build(23, 0, 0))
    assert sorted(log.producer_state) == [21, 22, 23]


def test_a_full_table_of_open_transactions_refuses_a_new_producer(open_log):
    log = open_log(max_producers=2)
    log.append_as_leader(build(1, 0, 0, transactional=True))
    log.append_as_leader(build(2, 0, 0, transactional=True))
    with pytest.raises(ThrottlingQuotaExceededError):
        log.append_as_leader(build(3, 0, 0))
    with pytest.raises(ThrottlingQuotaExceededError):
        log.append_as_leader(build(3, 0, 0) + build(4, 0, 0))
    assert log.log_end_offset == 2  # nothing written


def test_a_table_loaded_from_a_snapshot_gets_the_cap(open_log):
    log = open_log()
    for producer_id in range(1, 11):
        log.append_as_leader(build(producer_id, 0, 0))
    log.close()
    reopened = open_log(max_producers=4)
    assert reopened.load_report is not None
    # The snapshot held 10; the least recently used went on loading.
    assert sorted(reopened.producer_state) == [7, 8, 9, 10] and reopened.producer_state.max_producers == 4
    reopened.close_uncleanly()  # recovery replays the active segment into a capped table too
    again = open_log(max_producers=4)
    assert sorted(again.producer_state) == [7, 8, 9, 10]
    assert open_log(max_producers=0).producer_state.max_producers is None  # 0: unbounded, as the broker key


def test_every_replica_of_a_cluster_has_the_cap(tmp_path):
    cluster = Cluster(tmp_path, brokers=3, max_producers=5)
    try:
        for producer_id in range(1, 21):
            cluster.produce(build(producer_id, 0, 0))
        for broker in cluster.brokers:
            assert broker.log is not None
            table = broker.log.producer_state
            assert table.max_producers == 5 and sorted(table) == list(range(16, 21))
    finally:
        cluster.close()


def test_a_refused_producer_gets_the_kafka_error_code_in_the_produce_response(tmp_path):
    cluster = Cluster(tmp_path, brokers=1, min_insync_replicas=1, max_producers=1)
    try:
        assert cluster.produce(build(1, 0, 0, transactional=True)).error is None
        refused = cluster.produce(build(2, 0, 0))
        assert isinstance(refused.error, ThrottlingQuotaExceededError) and refused.error.code == 89
    finally:
        cluster.close()
