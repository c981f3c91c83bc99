"""A replica whose write fails (a full disk) goes offline and the partition fails over, as in Kafka.

Kafka's LogDirFailureChannel takes a log directory offline on an IOException; the broker stops
serving its replicas, the controller removes them from the ISR and elects a new leader from
the live in-sync replicas. The failed append is answered KAFKA_STORAGE_ERROR (56), the
producer's retry goes to the new leader (which built the same producer state as a follower),
and the failed replica comes back through recovery when its broker restarts. The disk is made
to fail here by an ENOSPC from the segment write of one broker's directory; the server test
(``tests/server/test_server_storage.py``) fills a real tmpfs.
"""

from __future__ import annotations

import errno
import os

import pytest

from dedup.batch import encode_batch
from dedup.cluster import Cluster
from dedup.errors import KafkaStorageError
from dedup.segment import LogSegment

STORAGE_ERROR = 56


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk.add(directory)``: every later segment write under ``directory`` fails with
    ENOSPC (the file is left as it was, as a real short write is cut back)."""
    full: set[str] = set()
    original = LogSegment.append

    def append(self, data, base_offset, next_offset, max_timestamp):
        if any(self.directory.startswith(directory) for directory in full):
            error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise KafkaStorageError(f"segment {self.path}: write failed: {error}") from error
        return original(self, data, base_offset, next_offset, max_timestamp)

    monkeypatch.setattr(LogSegment, "append", append)
    return full


def batch(sequence: int, producer_id: int = 7) -> bytes:
    return encode_batch([f"m{sequence}".encode()], producer_id=producer_id, producer_epoch=0,
                        base_sequence=sequence, timestamp=1_700_000_000_000)  # fmt: skip


def values(cluster: Cluster) -> list[bytes]:
    return [record.value for record in cluster.consume()]  # type: ignore[misc]


def test_the_leaders_full_disk_fails_the_partition_over_to_an_in_sync_replica(tmp_path, full_disk):
    cluster = Cluster(tmp_path, brokers=3)
    for sequence in range(3):
        assert cluster.produce(batch(sequence)).error is None
    full_disk.add(str(tmp_path / "broker-0"))
    failed = cluster.produce(batch(3))
    assert failed.error_code == STORAGE_ERROR
    assert cluster.leader_id == 1 and cluster.isr == {1, 2} and cluster.leader_epoch == 1
    assert cluster.broker(0).offline and not cluster.broker(0).alive
    # The producer's retry (same sequence) is the next batch at the new leader: nothing lost, nothing twice.
    retried = cluster.produce(batch(3))
    assert retried.error is None and not retried.duplicate and retried.base_offset == 3
    assert cluster.produce(batch(2)).duplicate  # the new leader knows the producer's window
    assert values(cluster) == [b"m0", b"m1", b"m2", b"m3"]
    # The broker restarts with space: recovery, truncation, catch-up, back in the ISR.
    full_disk.clear()
    cluster.stop_broker(0)
    log = cluster.start_broker(0)
    assert cluster.isr == {0, 1, 2} and not log.offline
    assert log.read(0, 1 << 20) == cluster.leader_log.read(0, 1 << 20)


def test_a_followers_full_disk_takes_it_out_of_the_isr_and_the_writes_go_on(tmp_path, full_disk):
    cluster = Cluster(tmp_path, brokers=3)
    assert cluster.produce(batch(0)).error is None
    full_disk.add(str(tmp_path / "broker-2"))
    response = cluster.produce(batch(1))
    assert response.error is None and response.base_offset == 1
    assert cluster.leader_id == 0 and cluster.isr == {0, 1}
    assert cluster.high_watermark == 2


def test_the_last_in_sync_replica_failing_takes_the_partition_offline(tmp_path, full_disk):
    cluster = Cluster(tmp_path, brokers=2, min_insync_replicas=1)
    cluster.stop_broker(1)
    assert cluster.produce(batch(0)).error is None
    full_disk.add(str(tmp_path / "broker-0"))
    assert cluster.produce(batch(1)).error_code == STORAGE_ERROR
    assert cluster.leader_id is None and cluster.isr == {0}  # Kafka never empties the ISR
    cluster.start_broker(1)  # not in sync: no clean election
    assert cluster.leader_id is None
    full_disk.clear()
    cluster.stop_broker(0)
    cluster.start_broker(0)
    assert cluster.leader_id == 0 and values(cluster) == [b"m0"]


def test_a_full_disk_at_close_closes_every_other_replica_and_leaves_it_to_recovery(tmp_path, monkeypatch):
    cluster = Cluster(tmp_path, brokers=3)
    assert cluster.produce(batch(0)).error is None
    original = os.fsync

    def fsync(descriptor):  # the clean-shutdown marker of broker 1 cannot be written
        if "broker-1" in os.readlink(f"/proc/self/fd/{descriptor}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(KafkaStorageError):
        cluster.close()
    monkeypatch.undo()
    assert all(broker.log is None for broker in cluster.brokers)
    assert os.path.exists(tmp_path / "broker-0" / "clicks-0" / ".kafka_cleanshutdown")
    assert os.path.exists(tmp_path / "broker-2" / "clicks-0" / ".kafka_cleanshutdown")
    reopened = Cluster(tmp_path, brokers=3)
    assert values(reopened) == [b"m0"]
    reopened.close()
