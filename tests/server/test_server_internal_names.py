"""The server's own files cannot collide with topics (issue 16, item 5): every name the server
or its logs use for a file or directory is a legal topic name that works as one, and a
directory in the layout from before partitioned topics (``<dir>/<topic>/broker-<b>/<topic>-0``,
where ``--topic producer-id-block`` failed with ``[Errno 21] Is a directory``) is migrated
on start without losing a record."""

from __future__ import annotations

import logging
import os

import pytest

from dedup.batch import encode_batch
from dedup.cluster import Cluster
from dedup.server import ServerThread

kafka = pytest.importorskip("kafka")

#: Every name dedup serve puts on disk (that is a legal topic name), at any depth.
SERVER_NAMES = [
    "producer-id-block", "controller-leader-epoch", "controller-leader-epoch-clicks-0", "broker-0", "broker-1",
    "broker", "topics", "leader-epoch-checkpoint", "recovery-point-offset-checkpoint", "replication-offset-checkpoint",
    "log-start-offset-checkpoint", "cleaner-offset-checkpoint", ".kafka_cleanshutdown", "00000000000000000000.log",
    "00000000000000000000.snapshot", "migrating-clicks", "clicks",
]  # fmt: skip


def _produce(bootstrap: str, topics: list[str]) -> None:
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                                   api_version=(2, 5), request_timeout_ms=10000)  # fmt: skip
    futures = [producer.send(topic, value=f"{topic}:{i}".encode()) for topic in topics for i in range(2)]
    producer.flush(30)
    producer.close(5)
    assert all(future.succeeded() for future in futures)


def test_every_server_owned_name_works_as_a_topic_across_a_restart(tmp_path):
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    with ServerThread(tmp_path, brokers=2, topics=SERVER_NAMES) as running:
        _produce(running.bootstrap_servers, SERVER_NAMES)  # InitProducerId writes producer-id-block
    assert os.path.isfile(tmp_path / "producer-id-block")
    with ServerThread(tmp_path, brokers=2, topics=SERVER_NAMES) as running:
        _produce(running.bootstrap_servers, SERVER_NAMES)
        for topic in SERVER_NAMES:
            values = [record.value for record in running.run(running.server.partition(topic, 0).consume)]
            assert values == [f"{topic}:{i}".encode() for i in (0, 1)] * 2, topic


def _old_layout(directory, topics: list[str]) -> None:
    """Topics as the server before partitioned topics kept them: ``<dir>/<topic>/`` each, with
    a ``controller-leader-epoch`` file."""
    for topic in topics:
        cluster = Cluster(os.path.join(directory, topic), brokers=3, topic=topic)
        for i in range(3):
            cluster.produce(encode_batch([f"{topic}:{i}".encode()], timestamp=1_700_000_000_000))
        cluster.close()
        os.rename(os.path.join(directory, topic, f"controller-leader-epoch-{topic}-0"),
                  os.path.join(directory, topic, "controller-leader-epoch"))  # fmt: skip


def test_old_layout_directories_are_migrated_on_start(tmp_path, caplog):
    _old_layout(tmp_path, ["clicks", "producer-id-block", "broker-2"])
    with caplog.at_level(logging.WARNING, logger="dedup.server"):
        with ServerThread(tmp_path, brokers=3, topics=["clicks"]) as running:
            for topic in ("clicks", "producer-id-block", "broker-2"):
                cluster = running.server.partition(topic, 0)
                assert cluster is not None, topic
                values = [record.value for record in running.run(cluster.consume)]
                assert values == [f"{topic}:{i}".encode() for i in range(3)]
                assert running.run(lambda c=cluster: c.leader_epoch) >= 1  # the recorded epoch, bumped
    assert sum("migrated topic" in r.getMessage() for r in caplog.records) == 3
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["@topics", "broker-0", "broker-1", "broker-2", "controller-leader-epoch-broker-2-0",
         "controller-leader-epoch-clicks-0", "controller-leader-epoch-producer-id-block-0"]
    )  # fmt: skip
    assert os.path.isdir(tmp_path / "broker-2" / "broker-2-0")


def test_a_migration_interrupted_after_the_renames_completes_on_the_next_start(tmp_path):
    _old_layout(tmp_path, ["clicks"])
    os.rename(tmp_path / "clicks", tmp_path / "@migrating-clicks")  # a crash right after the first rename
    os.makedirs(tmp_path / "broker-0")
    os.rename(tmp_path / "@migrating-clicks" / "broker-0" / "clicks-0", tmp_path / "broker-0" / "clicks-0")
    with ServerThread(tmp_path, brokers=3, topics=["clicks"]) as running:
        cluster = running.server.partition("clicks", 0)
        assert [record.value for record in running.run(cluster.consume)] == [b"clicks:0", b"clicks:1", b"clicks:2"]
    assert not os.path.exists(tmp_path / "@migrating-clicks")
