"""Transactions across leader failover and restarts: every replica follows the transactions of
the batches it replicates (spec §3.4: the same code path as the leader), so a new leader serves
the same last stable offset, the same aborted-transaction list and the same read_committed
records as the old one, and a restarted broker rebuilds them from its files."""

from __future__ import annotations

import pytest
from kafka_batches import build

from dedup.cluster import Cluster

NOW = 1_700_000_000_000


def transactional(cluster, producer_id, sequence, values, epoch=0):
    batch = build(producer_id, epoch, sequence, len(values), transactional=True, value=values[0])
    response = cluster.produce(batch)
    assert response.error is None, response.error
    return response


def answers(cluster):
    log = cluster.leader_log
    return (
        log.last_stable_offset,
        log.ongoing_transactions,
        log.collect_aborted_transactions(log.log_start_offset, log.high_watermark),
        [record.offset for record in cluster.consume(isolation="read_committed")],
        [record.offset for record in cluster.consume(isolation="read_uncommitted")],
    )


def scenario(cluster):
    """pid 7 commits, pid 8 aborts, pid 9 stays open, with idempotent records between."""
    cluster.produce(build(1, 0, 0, 2))  # 0-1
    transactional(cluster, 7, 0, [b"c"] * 2)  # 2-3
    transactional(cluster, 8, 0, [b"a"] * 2)  # 4-5
    cluster.write_marker(7, 0, commit=True, coordinator_epoch=0)  # 6
    cluster.produce(build(1, 0, 2, 1))  # 7
    cluster.write_marker(8, 0, commit=False, coordinator_epoch=0)  # 8
    cluster.produce(build(1, 0, 3, 1))  # 9
    transactional(cluster, 9, 0, [b"o"] * 1)  # 10
    cluster.produce(build(1, 0, 4, 1))  # 11


EXPECTED_COMMITTED = [0, 1, 2, 3, 7, 9]  # 8's aborted 4-5 are dropped; 9's open 10 holds the LSO


def test_read_committed_in_the_cluster(tmp_path):
    with Cluster(tmp_path, brokers=3, clock=lambda: NOW) as cluster:
        scenario(cluster)
        lso, ongoing, aborted, committed, uncommitted = answers(cluster)
        assert lso == 10 and ongoing == {9: 10}
        assert [(t.producer_id, t.first_offset, t.last_offset) for t in aborted] == [(8, 4, 8)]
        assert committed == EXPECTED_COMMITTED
        assert uncommitted == [0, 1, 2, 3, 4, 5, 7, 9, 10, 11]  # the control run: the aborted records are there


@pytest.mark.parametrize("clean", [False, True], ids=["crash", "controlled"])
def test_a_new_leader_gives_the_same_answers(tmp_path, clean):
    with Cluster(tmp_path, brokers=3, clock=lambda: NOW) as cluster:
        scenario(cluster)
        before = answers(cluster)
        old = cluster.leader_id
        cluster.stop_broker(old, clean=clean)
        assert cluster.leader_id != old
        assert answers(cluster) == before
        # The transaction left open completes on the new leader as it would have on the old.
        cluster.write_marker(9, 0, commit=False, coordinator_epoch=0)  # 12
        lso, ongoing, aborted, committed, _ = answers(cluster)
        assert lso == cluster.high_watermark == 13 and ongoing == {}
        assert [(t.producer_id, t.first_offset, t.last_offset) for t in aborted] == [(8, 4, 8), (9, 10, 12)]
        assert committed == [*EXPECTED_COMMITTED, 11]
        # The old leader comes back, catches up from the new one and gives the same answers.
        cluster.start_broker(old)
        after = answers(cluster)
        for broker_id in cluster.replicas:
            if broker_id != old:
                cluster.stop_broker(broker_id)
        assert cluster.leader_id == old
        assert answers(cluster) == after


def test_every_broker_restarted_from_its_files_gives_the_same_answers(tmp_path):
    with Cluster(tmp_path, brokers=3, segment_bytes=300, clock=lambda: NOW) as cluster:
        scenario(cluster)
        before = answers(cluster)
        for broker in list(cluster.brokers):
            broker.stop(clean=False)  # every broker crashes at once
    with Cluster(tmp_path, brokers=3, segment_bytes=300, clock=lambda: NOW) as again:
        assert answers(again) == before


def test_a_follower_down_during_the_markers_catches_up_to_the_same_answers(tmp_path):
    with Cluster(tmp_path, brokers=3, min_insync_replicas=1, clock=lambda: NOW) as cluster:
        cluster.produce(build(1, 0, 0, 1))
        transactional(cluster, 8, 0, [b"a"] * 2)
        down = [b for b in cluster.replicas if b != cluster.leader_id][0]
        cluster.stop_broker(down)
        cluster.write_marker(8, 0, commit=False, coordinator_epoch=0)
        transactional(cluster, 7, 0, [b"c"])
        cluster.write_marker(7, 0, commit=True, coordinator_epoch=0)
        before = answers(cluster)
        cluster.start_broker(down)
        for broker in cluster.brokers:  # everyone else fails: the follower that was down leads
            if broker.broker_id != down:
                cluster.stop_broker(broker.broker_id)
        assert cluster.leader_id == down
        assert answers(cluster) == before
