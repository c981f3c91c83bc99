"""A full disk under ``dedup serve``: Kafka's storage-failure handling, seen from clients (issue 16, item 2).

Kafka (LogDirFailureChannel, then the controller): a failed write takes the replica's log
offline, the broker gives up the partition, a live in-sync replica is elected; the failed
replica answers KAFKA_STORAGE_ERROR (56), so clients refresh their metadata and go to the new
leader; Metadata shows the new leader, the ISR without the failed replica and it among the
offline replicas. No handler answers a failure by closing the connection: a request whose
handling fails gets Kafka's error response (KafkaApis.handleError).

The raw-socket tests make one broker's segment writes fail with ENOSPC; the slow test mounts a
real 20 MB tmpfs as one broker's directory and fills it with a real idempotent librdkafka
producer (skipped where mounting is not permitted).
"""

from __future__ import annotations

import datetime
import errno
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from test_server_protocol import (
    batch,
    call,
    fetch_body,
    fetched,
    metadata_body,
    partition_of,
    produce_body,
)

from dedup.errors import KafkaStorageError
from dedup.segment import LogSegment
from dedup.server import ServerThread
from dedup.server.wire import ApiKey

TOPIC = "clicks"
STORAGE_ERROR = 56
NOT_LEADER_OR_FOLLOWER = 6


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk.add(directory)``: every later segment write under ``directory`` fails with ENOSPC."""
    full: set[str] = set()
    original = LogSegment.append

    def append(self, data, base_offset, next_offset, max_timestamp):
        if any(self.directory.startswith(directory) for directory in full):
            error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise KafkaStorageError(f"segment {self.path}: write failed: {error}") from error
        return original(self, data, base_offset, next_offset, max_timestamp)

    monkeypatch.setattr(LogSegment, "append", append)
    return full


def connect(server: ServerThread, broker: int):
    import socket

    return socket.create_connection(("127.0.0.1", server.server.ports[broker]), timeout=10)


def test_a_full_disk_on_the_leader_moves_the_partition_and_answers_kafka_storage_error(tmp_path, full_disk):
    with ServerThread(tmp_path, brokers=3, topics=[TOPIC]) as server:
        with connect(server, 0) as sock:
            for sequence in range(3):
                assert partition_of(call(sock, ApiKey.PRODUCE, 9, produce_body(batch(7, sequence)))).error_code == 0
            full_disk.add(str(tmp_path / "broker-0"))
            failed = partition_of(call(sock, ApiKey.PRODUCE, 9, produce_body(batch(7, 3))))
            again = partition_of(call(sock, ApiKey.PRODUCE, 9, produce_body(batch(7, 3))))
            stale_fetch = fetched(call(sock, ApiKey.FETCH, 11, fetch_body(0)))
            [topic] = call(sock, ApiKey.METADATA, 9, metadata_body([{"name": TOPIC}])).topics
        assert failed.error_code == again.error_code == STORAGE_ERROR
        assert stale_fetch.error_code == STORAGE_ERROR
        [partition] = topic.partitions
        assert partition.leader_id == 1 and list(partition.isr_nodes) == [1, 2]
        assert list(partition.offline_replicas) == [0]
        with connect(server, 1) as sock:
            retried = partition_of(call(sock, ApiKey.PRODUCE, 9, produce_body(batch(7, 3))))
            records = fetched(call(sock, ApiKey.FETCH, 11, fetch_body(0)))
        assert retried.error_code == 0 and retried.base_offset == 3
        assert records.error_code == 0 and records.high_watermark == 4
        # The other brokers answer NOT_LEADER_OR_FOLLOWER as before.
        with connect(server, 2) as sock:
            assert partition_of(call(sock, ApiKey.PRODUCE, 9, produce_body(batch(7, 4)))).error_code == (
                NOT_LEADER_OR_FOLLOWER
            )
        # Broker 0 restarts with space: recovery, catch-up, back in the ISR.
        full_disk.clear()
        server.stop_broker(0)
        server.start_broker(0)
        with connect(server, 0) as sock:
            [topic] = call(sock, ApiKey.METADATA, 9, metadata_body([{"name": TOPIC}])).topics
        [partition] = topic.partitions
        assert list(partition.isr_nodes) == [0, 1, 2] and list(partition.offline_replicas) == []


def test_a_handler_that_fails_answers_a_kafka_error_and_keeps_the_connection(tmp_path):
    """InitProducerId when the producer-id block cannot be written (a full disk): Kafka's error
    response with KAFKA_STORAGE_ERROR; a bug answers UNKNOWN_SERVER_ERROR (-1). Before, the
    connection was closed after an ``internal error`` traceback."""
    with ServerThread(tmp_path, brokers=1, topics=[TOPIC]) as server:
        blocks = server.server.producer_ids

        def full(*_):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        init_body = {"transactional_id": None, "transaction_timeout": datetime.timedelta(minutes=1)}
        with connect(server, 0) as sock:
            server.run(setattr, blocks, "next_id", full)
            stored = call(sock, ApiKey.INIT_PRODUCER_ID, 4, init_body)
            server.run(setattr, blocks, "next_id", lambda: 1 // 0)
            bug = call(sock, ApiKey.INIT_PRODUCER_ID, 0, init_body)
            after = call(sock, ApiKey.API_VERSIONS, 0, {})
        assert stored.error_code == STORAGE_ERROR and stored.producer_id == -1
        assert bug.error_code == -1
        assert after.error_code == 0


# --- a real 20 MB tmpfs, a real idempotent librdkafka producer ------------------------------------


def mount_tmpfs(path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, timeout=30)  # fmt: skip
    return result.returncode == 0


def start_serve(directory, *options: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "dedup", "serve", "--dir", str(directory), "--port", "0", "--brokers", "3",
         "--topic", TOPIC, "--override", "log.cleaner.enable=false", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )  # fmt: skip
    line = process.stdout.readline()  # type: ignore[union-attr]
    match = re.fullmatch(r"bootstrap\.servers=(\S+)\n", line)
    if match is None:
        process.kill()
        pytest.fail(f"serve did not start: {line!r} {process.communicate(timeout=30)[1]}")
    return process, match.group(1)


def stop_serve(process: subprocess.Popen) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    try:
        return process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate(timeout=30)
        pytest.fail(f"serve did not stop on SIGTERM: {err}")


def consume(bootstrap: str, expected: int, timeout: float = 60.0) -> list[bytes]:
    """Every value of clicks-0 from offset 0 (kafka-python's consumer, no group), until
    ``expected`` arrived and nothing more comes for a second."""
    kafka = pytest.importorskip("kafka")
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                   auto_offset_reset="earliest", consumer_timeout_ms=1000, request_timeout_ms=10000,
                                   retry_backoff_ms=50, metadata_max_age_ms=1000)  # fmt: skip
    consumer.assign([kafka.TopicPartition(TOPIC, 0)])
    consumer.seek_to_beginning()
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            before = len(got)
            got += [message.value for message in consumer]
            if len(got) >= expected and len(got) == before:
                break
    finally:
        consumer.close()
    return got


def assert_shut_down(process: subprocess.Popen, out: str, err: str) -> None:
    """A clean shutdown: the summary, no traceback; exit 0, or 1 with one line naming a
    replica that could not be closed cleanly."""
    assert "Traceback" not in err, err
    assert "served:" in out
    if process.returncode == 1:
        assert err.splitlines()[-1].startswith("python -m dedup serve: "), err
    else:
        assert process.returncode == 0, err


def partition_state(confluent_kafka, bootstrap: str) -> tuple[int, list[int]]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    partition = admin.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions[0]
    return partition.leader, sorted(partition.isrs)


@pytest.mark.slow
def test_a_real_full_tmpfs_fails_over_and_a_restart_with_space_loses_and_doubles_nothing(tmp_path):
    confluent_kafka = pytest.importorskip("confluent_kafka")

    directory = tmp_path / "serve"
    small = directory / "broker-0"
    if not mount_tmpfs(small, "20m"):
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        process, bootstrap = start_serve(directory)
        acknowledged: dict[int, bytes] = {}
        errors: list[str] = []
        try:
            producer = confluent_kafka.Producer({
                "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                "retry.backoff.ms": 50, "message.timeout.ms": 120000, "topic.metadata.refresh.interval.ms": 1000,
            })  # fmt: skip

            def delivered(error, message) -> None:
                if error is not None:
                    errors.append(str(error))
                else:
                    acknowledged[message.offset()] = message.value()

            payload = os.urandom(8000)
            count = 4000  # 32 MB: more than the 20 MB broker 0 has
            for index in range(count):
                while True:
                    try:
                        producer.produce(TOPIC, value=b"%06d" % index + payload, on_delivery=delivered)
                        break
                    except BufferError:
                        producer.poll(0.1)
                producer.poll(0)
            assert producer.flush(120) == 0
            assert not errors, errors[:5]
            leader, isr = partition_state(confluent_kafka, bootstrap)
            assert leader != 0 and 0 not in isr, (leader, isr)
            # Every acknowledged message, read without a restart, once, in order.
            got = consume(bootstrap, len(acknowledged))
        finally:
            out, err = stop_serve(process)
        assert_shut_down(process, out, err)
        assert "No space left on device" in err  # the failure was real: broker 0's write failed
        expected = [acknowledged[offset] for offset in sorted(acknowledged)]
        assert len(expected) == count
        assert got == expected
        assert sorted(acknowledged) == list(range(count))  # no gap, no offset twice
        # A restart with space: broker 0's replica recovers, catches up and rejoins the ISR.
        subprocess.run(["mount", "-o", "remount,size=200m", str(small)], check=True, timeout=30)
        process, bootstrap = start_serve(directory)
        try:
            got = consume(bootstrap, count)
            leader, isr = partition_state(confluent_kafka, bootstrap)
        finally:
            out, err = stop_serve(process)
        assert got == expected
        assert isr == [0, 1, 2], isr
        assert_shut_down(process, out, err)
        assert process.returncode == 0, err
    finally:
        subprocess.run(["umount", "-l", str(small)], timeout=30)
