"""One partition replicated over in-process brokers (spec §3.4, §5.5, §5.6): acks=all and
the high watermark, failover with the table kept, divergent replicas truncated by leader
epoch, restart with recovery, unclean election and its reported loss, producer ids and
fencing. Real logs in temporary directories; batches from kafka-python's encoder."""

from __future__ import annotations

import os

import pytest
from kafka_batches import build

from dedup.cluster import Cluster
from dedup.errors import (
    InvalidProducerEpochError,
    NotEnoughReplicasError,
    NotLeaderOrFollowerError,
    ProducerFencedError,
)


def state(log):
    table = log.producer_state
    return table.map_end_offset, {pid: table.entry(pid) for pid in table}


@pytest.fixture
def cluster(tmp_path, impl):
    with Cluster(tmp_path / "cluster", table_class=impl, segment_bytes=4096) as made:
        yield made


def values(records):
    return [record.value for record in records]


def test_acks_all_replicates_to_every_in_sync_replica_before_acknowledging(cluster):
    response = cluster.produce(build(1000, 0, 0, 3, value=b"click"))
    assert response.error is None and (response.base_offset, response.last_offset) == (0, 2)
    assert cluster.high_watermark == 3 and cluster.isr == {0, 1, 2}
    leader = cluster.leader_log
    for broker in cluster.brokers:
        assert broker.log.log_end_offset == 3 and broker.log.high_watermark == 3
        assert state(broker.log) == state(leader)  # spec §3.4: followers hold the leader's table
    assert values(cluster.consume()) == [b"click0", b"click1", b"click2"]


def test_a_bytes_directory_is_taken_as_the_str_it_names(tmp_path, impl):
    with Cluster(os.fsencode(tmp_path / "cluster"), table_class=impl) as made:
        assert type(made.directory) is str and made.directory == str(tmp_path / "cluster")
        assert made.produce(build(1000, 0, 0)).error is None
        assert made.brokers[2].log.directory == os.path.join(made.directory, "broker-2", "clicks-0")


def test_too_few_in_sync_replicas_refuse_the_write(cluster):
    cluster.stop_broker(1)
    cluster.stop_broker(2)
    response = cluster.produce(build(1000, 0, 0))
    assert isinstance(response.error, NotEnoughReplicasError) and response.error_code == 19
    assert cluster.leader_log.log_end_offset == 0
    cluster.start_broker(1)
    assert cluster.isr == {0, 1} and cluster.produce(build(1000, 0, 0)).error is None


def test_after_failover_a_retry_is_answered_with_its_original_offsets(cluster):
    # Spec §5.6: the new leader uses the table it built as a follower.
    first = build(1000, 0, 0, 2)
    cluster.produce(first)
    cluster.produce(build(1000, 0, 2))
    cluster.stop_broker(0)
    assert cluster.leader_id == 1 and cluster.leader_epoch == 1 and cluster.isr == {1, 2}
    retry = cluster.produce(first)
    assert retry.error is None and retry.duplicate and (retry.base_offset, retry.last_offset) == (0, 1)
    assert cluster.leader_log.log_end_offset == 3


def test_a_batch_the_old_leader_wrote_alone_is_truncated_when_it_returns(cluster):
    cluster.produce(build(1000, 0, 0))
    lost = build(1000, 0, 1)
    assert cluster.append_to_leader(lost).error is None  # written on broker 0 only...
    cluster.stop_broker(0)  # ...which fails before any follower fetched it: never acknowledged
    response = cluster.produce(lost)  # the client's retry goes to the new leader
    assert response.error is None and not response.duplicate and response.base_offset == 1
    cluster.produce(build(1000, 0, 2))
    log = cluster.start_broker(0)
    assert not log.load_report.clean_shutdown
    # KIP-279: broker 0's epoch 0 ends at 1 on the new leader: its own offset 1 (epoch 0) goes.
    assert state(log) == state(cluster.leader_log) and log.log_end_offset == 3
    assert cluster.isr == {0, 1, 2}
    assert values(cluster.consume()) == [b"click0", b"click0", b"click0"]
    ends = [broker.log.read(1) for broker in cluster.brokers]
    assert ends[0] == ends[1] == ends[2]


def test_a_restarted_broker_recovers_from_disk_and_rejoins(cluster):
    for sequence in range(0, 200, 2):  # 100 batches: two segment rolls, two snapshots
        cluster.produce(build(1000, 0, sequence, 2))
    before = state(cluster.brokers[2].log)
    cluster.stop_broker(2)
    cluster.produce(build(1000, 0, 200))
    log = cluster.start_broker(2)
    report = log.load_report
    assert not report.clean_shutdown and report.snapshot_offset is not None and report.replayed_batches > 0
    assert cluster.isr == {0, 1, 2} and log.log_end_offset == 201
    assert state(log) == state(cluster.leader_log) != before
    cluster.stop_broker(1, clean=True)
    assert cluster.start_broker(1).load_report.clean_shutdown


def test_no_live_in_sync_replica_leaves_the_partition_offline(tmp_path):
    with Cluster(tmp_path / "cluster", min_insync_replicas=1) as cluster:
        cluster.stop_broker(1)
        cluster.stop_broker(2)
        cluster.produce(build(1000, 0, 0))
        cluster.stop_broker(0)
        assert cluster.leader_id is None
        with pytest.raises(NotLeaderOrFollowerError):
            cluster.leader_log  # noqa: B018
        response = cluster.append_to_leader(build(1000, 0, 1))
        assert isinstance(response.error, NotLeaderOrFollowerError) and response.error_code == 6
        cluster.start_broker(1)  # out of sync: not eligible without unclean election
        assert cluster.leader_id is None
        cluster.start_broker(0)  # the last in-sync replica comes back and leads
        assert cluster.leader_id == 0 and cluster.produce(build(1000, 0, 1)).error is None


def test_an_unclean_election_reports_the_acknowledged_offsets_it_loses(tmp_path):
    with Cluster(tmp_path / "cluster", min_insync_replicas=1, unclean_leader_election=True) as cluster:
        cluster.produce(build(1000, 0, 0, 2))  # offsets 0-1 on all three
        cluster.stop_broker(1)
        cluster.stop_broker(2)
        acknowledged = cluster.produce(build(1000, 0, 2, 3))  # offsets 2-4 on broker 0 alone
        assert acknowledged.error is None and cluster.high_watermark == 5
        cluster.stop_broker(0)
        cluster.start_broker(1)  # elected although out of sync
        assert cluster.leader_id == 1 and cluster.unclean_elections == 1
        assert [(loss.first_offset, loss.end_offset) for loss in cluster.data_loss] == [(2, 5)]
        # The producer's next batch is ahead of what the new leader knows: Kafka's symptom.
        assert cluster.produce(build(1000, 0, 5)).error_code == 45
        cluster.start_broker(0)  # its acknowledged offsets 2-4 diverge and are truncated
        assert cluster.brokers[0].log.log_end_offset == 2 and cluster.isr == {0, 1}


def test_producer_ids_and_fencing_with_a_stable_identity(cluster):
    coordinator = cluster.coordinator
    assert coordinator.init_producer_id() != coordinator.init_producer_id()  # restarts get new ids
    pid, epoch = coordinator.init_producer_id("ad-clicks")
    coordinator.begin("ad-clicks", pid, epoch)
    assert cluster.produce(build(pid, epoch, 0, 2, transactional=True)).error is None
    new_pid, new_epoch = coordinator.init_producer_id("ad-clicks")  # the restarted instance
    assert (new_pid, new_epoch) == (pid, epoch + 1)
    # The old instance's open transaction was aborted with the new epoch: it is fenced.
    zombie = cluster.produce(build(pid, epoch, 2, transactional=True))
    assert isinstance(zombie.error, InvalidProducerEpochError) and zombie.error_code == 47
    with pytest.raises(ProducerFencedError):
        coordinator.end_transaction("ad-clicks", pid, epoch, commit=True)
    assert cluster.consume(isolation="read_committed") == []
    assert len(cluster.consume()) == 2  # read_uncommitted still sees the aborted records


def test_read_committed_drops_aborts_and_stops_at_the_first_open_transaction(cluster):
    coordinator = cluster.coordinator
    committed = coordinator.init_producer_id("committed")
    aborted = coordinator.init_producer_id("aborted")
    open_ = coordinator.init_producer_id("open")
    plain = coordinator.init_producer_id()
    for name, (pid, epoch) in (("committed", committed), ("aborted", aborted)):
        coordinator.begin(name, pid, epoch)
        cluster.produce(build(pid, epoch, 0, transactional=True, value=name.encode()))
    coordinator.end_transaction("committed", *committed, commit=True)
    coordinator.end_transaction("aborted", *aborted, commit=False)
    cluster.produce(build(*plain, 0, value=b"before"))
    coordinator.begin("open", *open_)
    cluster.produce(build(*open_, 0, transactional=True, value=b"open"))
    cluster.produce(build(*plain, 1, value=b"after"))
    assert values(cluster.consume(isolation="read_committed")) == [b"committed0", b"before0"]
    assert values(cluster.consume()) == [b"committed0", b"aborted0", b"before0", b"open0", b"after0"]


def test_a_cluster_reopened_from_its_directories_continues(tmp_path):
    with Cluster(tmp_path / "cluster") as cluster:
        cluster.produce(build(1000, 0, 0))
        cluster.stop_broker(0)
        epoch = cluster.leader_epoch
    with Cluster(tmp_path / "cluster") as again:
        assert again.leader_epoch == epoch + 1 and again.high_watermark == 1
        assert again.produce(build(1000, 0, 0)).duplicate
        assert again.produce(build(1000, 0, 1)).base_offset == 1
