"""``Cluster.replicate`` hands the leader's own bytes, scanned once, to the in-sync followers
(``append_as_follower(..., scanned=...)``); a follower that is behind reads the leader's log
and validates it in full, as from another broker."""

from __future__ import annotations

import pytest
from kafka_batches import build

from dedup.cluster import Cluster
from dedup.log import PartitionLog


def state(log):
    table = log.producer_state
    return table.map_end_offset, {pid: table.entry(pid) for pid in table}, log.read(0, 1 << 24)


@pytest.fixture
def calls(monkeypatch):
    """(follower directory, whether it was given the leader's scan) of every follower append."""
    seen: list[tuple[str, bool]] = []
    original = PartitionLog.append_as_follower

    def spy(self, records, *, scanned=None):
        seen.append((self.directory, scanned is not None))
        return original(self, records, scanned=scanned)

    monkeypatch.setattr(PartitionLog, "append_as_follower", spy)
    return seen


def test_in_sync_followers_take_the_leaders_bytes_and_one_behind_reads_the_log(tmp_path, impl, calls):
    with Cluster(tmp_path / "cluster", table_class=impl, segment_bytes=4096) as cluster:
        response = cluster.produce(build(1000, 0, 0, 3))
        assert response.error is None and cluster.high_watermark == 3
        assert [scanned for _, scanned in calls] == [True, True]
        assert cluster.leader_log.take_leader_append() is None  # the round took it
        calls.clear()
        cluster.stop_broker(2)
        cluster.produce(build(1000, 0, 3, 2))
        assert [scanned for _, scanned in calls] == [True]
        calls.clear()
        cluster.start_broker(2)  # behind by one batch: it fetches from the leader's file
        assert [scanned for _, scanned in calls] == [False]
        assert cluster.isr == {0, 1, 2}
        leader = state(cluster.leader_log)
        for broker in cluster.brokers:
            assert state(broker.log) == leader
