"""Real consumers with ``isolation.level=read_committed`` against ``dedup serve`` (issue 15 item 3).

Transactions are driven through the library on the server's thread (transactional batches
from kafka-python's encoder, markers through ``Cluster.write_marker`` as the transaction
coordinator writes them) and read over the wire: a read_committed consumer (librdkafka through
confluent-kafka, kafka-python, aiokafka) gets the committed records and the idempotent ones, none of an
aborted transaction (Fetch's ``aborted_transactions``, from the ``.txnindex``), and nothing at
or past an open transaction (the last stable offset); a marker wakes its long-poll fetch. A
read_uncommitted consumer sees the aborted records (the control run: the check can fail).
Leader failover and a restart of the whole server give the same answers.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from kafka_batches import build

from dedup.server import ServerThread

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka = pytest.importorskip("kafka")

TOPIC = "clicks"

PLAIN_A = [b"plain-a0", b"plain-a1"]
COMMITTED = [b"commit-0", b"commit-1"]
ABORTED = [b"abort-0", b"abort-1", b"abort-2"]
PLAIN_B = [b"plain-b0"]
OPEN = [b"open-0", b"open-1"]
PLAIN_C = [b"plain-c0", b"plain-c1"]

#: What read_committed sees while pid 9's transaction is open (the LSO is its first offset, 10).
STABLE = PLAIN_A + COMMITTED + PLAIN_B
#: Everything below the high watermark, aborted and open transactions included.
EVERYTHING = PLAIN_A + COMMITTED + ABORTED + PLAIN_B + OPEN + PLAIN_C


def scenario(server: ServerThread) -> None:
    """Offsets: 0-1 plain, 2-3 pid 7, 4-6 pid 8, 7 plain, 8 ABORT(8), 9 COMMIT(7), 10-11 pid 9
    (left open), 12-13 plain."""
    cluster = server.run(server.server.partition, TOPIC, 0)

    def produce(batch: bytes) -> None:
        response = server.run(cluster.produce, batch)
        assert response.error is None, response.error

    def end_txn(producer_id: int, commit: bool) -> None:
        server.run(lambda: cluster.write_marker(producer_id, 0, commit=commit, coordinator_epoch=0))

    produce(build(1, 0, 0, 2, value=b"plain-a"))
    produce(build(7, 0, 0, 2, transactional=True, value=b"commit-"))
    produce(build(8, 0, 0, 3, transactional=True, value=b"abort-"))
    produce(build(1, 0, 2, 1, value=b"plain-b"))
    end_txn(8, commit=False)
    end_txn(7, commit=True)
    produce(build(9, 0, 0, 2, transactional=True, value=b"open-"))
    produce(build(1, 0, 3, 2, value=b"plain-c"))


def commit_open_transaction(server: ServerThread) -> None:
    cluster = server.run(server.server.partition, TOPIC, 0)
    server.run(lambda: cluster.write_marker(9, 0, commit=True, coordinator_epoch=0))


def confluent_values(bootstrap: str, isolation: str, expected: int, quiet: float = 1.5, timeout: float = 20.0):
    """Values read by a librdkafka consumer (assigned partition 0 from offset 0) until
    ``expected`` arrived and nothing more came for ``quiet`` seconds, or ``timeout``."""
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"rc-{uuid.uuid4().hex}", "enable.auto.commit": False,
        "isolation.level": isolation, "fetch.wait.max.ms": 100, "socket.timeout.ms": 5000,
    })  # fmt: skip
    consumer.assign([confluent_kafka.TopicPartition(TOPIC, 0, 0)])
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                got.append(message.value())
                last_new = time.monotonic()
            elif len(got) >= expected and time.monotonic() - last_new > quiet:
                break
    finally:
        consumer.close()
    return got


def kafka_python_consumer(bootstrap: str, isolation: str, **options):
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation,
        request_timeout_ms=15000, retry_backoff_ms=50, **options,
    )  # fmt: skip
    consumer.assign([kafka.TopicPartition(TOPIC, 0)])
    consumer.seek(kafka.TopicPartition(TOPIC, 0), 0)
    return consumer


def kafka_python_values(bootstrap: str, isolation: str, expected: int, timeout: float = 20.0):
    consumer = kafka_python_consumer(bootstrap, isolation, fetch_max_wait_ms=100)
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    quiet_since = None
    try:
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            new = [record.value for records in batch.values() for record in records]
            got += new
            if new:
                quiet_since = None
            elif len(got) >= expected:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 1.5:
                    break
    finally:
        consumer.close()
    return got


def aiokafka_values(bootstrap: str, isolation: str, expected: int, timeout: float = 20.0):
    aiokafka = pytest.importorskip("aiokafka")

    async def read() -> list[bytes]:
        consumer = aiokafka.AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation, fetch_max_wait_ms=100,
        )  # fmt: skip
        await consumer.start()
        got: list[bytes] = []
        try:
            partition = aiokafka.TopicPartition(TOPIC, 0)
            consumer.assign([partition])
            consumer.seek(partition, 0)
            deadline = time.monotonic() + timeout
            quiet_since = None
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                new = [record.value for records in batch.values() for record in records]
                got += new
                if new:
                    quiet_since = None
                elif len(got) >= expected:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > 1.5:
                        break
        finally:
            await consumer.stop()
        return got

    return asyncio.run(read())


READERS = {"confluent-kafka": confluent_values, "kafka-python": kafka_python_values, "aiokafka": aiokafka_values}


@pytest.mark.slow
@pytest.mark.parametrize("client", sorted(READERS))
def test_read_committed_sees_committed_records_only_and_stops_at_an_open_transaction(tmp_path, client):
    read = READERS[client]
    with ServerThread(tmp_path, brokers=3, topics=[TOPIC]) as server:
        scenario(server)
        assert read(server.bootstrap_servers, "read_committed", len(STABLE)) == STABLE
        # The control run: read_uncommitted gets the aborted and the open transaction's records.
        assert read(server.bootstrap_servers, "read_uncommitted", len(EVERYTHING)) == EVERYTHING
        commit_open_transaction(server)
        final = STABLE + OPEN + PLAIN_C
        assert read(server.bootstrap_servers, "read_committed", len(final)) == final


@pytest.mark.slow
def test_failover_and_restart_keep_the_same_answers(tmp_path):
    with ServerThread(tmp_path, brokers=3, topics=[TOPIC]) as server:
        scenario(server)
        server.stop_leader(TOPIC)  # a crash: the new leader answers from what it replicated
        assert confluent_values(server.bootstrap_servers, "read_committed", len(STABLE)) == STABLE
        assert kafka_python_values(server.bootstrap_servers, "read_committed", len(STABLE)) == STABLE
    with ServerThread(tmp_path, brokers=3, topics=[TOPIC]) as server:  # every broker reopens its files
        assert confluent_values(server.bootstrap_servers, "read_committed", len(STABLE)) == STABLE
        commit_open_transaction(server)
        final = STABLE + OPEN + PLAIN_C
        assert kafka_python_values(server.bootstrap_servers, "read_committed", len(final)) == final
        assert confluent_values(server.bootstrap_servers, "read_uncommitted", len(EVERYTHING)) == EVERYTHING


@pytest.mark.slow
def test_list_offsets_latest_is_the_last_stable_offset_for_read_committed(tmp_path):
    with ServerThread(tmp_path, brokers=3, topics=[TOPIC]) as server:
        scenario(server)
        partition = kafka.TopicPartition(TOPIC, 0)
        ends = {}
        for isolation in ("read_committed", "read_uncommitted"):
            consumer = kafka_python_consumer(server.bootstrap_servers, isolation)
            try:
                ends[isolation] = consumer.end_offsets([partition])[partition]
            finally:
                consumer.close()
        assert ends == {"read_committed": 10, "read_uncommitted": 14}


@pytest.mark.slow
def test_a_marker_wakes_a_waiting_read_committed_fetch(tmp_path):
    # The consumer's fetch waits up to 10 s for data past the LSO; the marker must answer it
    # at once (Kafka completes delayed fetches after appending markers).
    with ServerThread(tmp_path, brokers=3, topics=[TOPIC]) as server:
        scenario(server)
        consumer = kafka_python_consumer(server.bootstrap_servers, "read_committed", fetch_max_wait_ms=10_000)
        try:
            got: list[bytes] = []
            deadline = time.monotonic() + 20
            while len(got) < len(STABLE) and time.monotonic() < deadline:
                got += [r.value for records in consumer.poll(timeout_ms=500).values() for r in records]
            assert got == STABLE
            consumer.poll(timeout_ms=300)  # a fetch is now waiting past the LSO
            committed_at: list[float] = []

            def commit_soon() -> None:
                time.sleep(0.5)
                commit_open_transaction(server)
                committed_at.append(time.monotonic())

            committer = threading.Thread(target=commit_soon)
            committer.start()
            deadline = time.monotonic() + 20
            while len(got) < len(STABLE) + 4 and time.monotonic() < deadline:
                got += [r.value for records in consumer.poll(timeout_ms=200).values() for r in records]
            arrived = time.monotonic()
            committer.join(timeout=20)
            assert got == STABLE + OPEN + PLAIN_C
            assert arrived - committed_at[0] < 4.0, f"the marker's records came {arrived - committed_at[0]:.1f} s late"
        finally:
            consumer.close()


@pytest.mark.parametrize("version", [4, 11])
def test_fetch_responses_carry_the_lso_and_the_aborted_transactions_of_the_range(tmp_path, version):
    from test_server_protocol import call, connect, fetch_body, fetched

    from dedup.records import scan_batches
    from dedup.server.wire import ApiKey

    def fetch(sock, offset: int, isolation_level: int):
        body = fetch_body(offset)
        body["isolation_level"] = isolation_level
        partition = fetched(call(sock, ApiKey.FETCH, version, body))
        headers = scan_batches(bytes(partition.records or b""))
        last = int(headers["base_offset"][-1]) + int(headers["last_offset_delta"][-1]) if len(headers) else None
        aborted = partition.aborted_transactions
        listed = None if aborted is None else [(t.producer_id, t.first_offset) for t in aborted]
        return partition.error_code, partition.high_watermark, partition.last_stable_offset, last, listed

    with ServerThread(tmp_path, brokers=3, topics=[TOPIC]) as server:
        scenario(server)
        with connect(server) as sock:
            # Kafka's FetchIsolation: read_committed stops below the LSO (10, pid 9's open
            # transaction) and lists pid 8's aborted transaction from its first offset (4).
            assert fetch(sock, 0, 1) == (0, 14, 10, 9, [(8, 4)])
            assert fetch(sock, 7, 1) == (0, 14, 10, 9, [(8, 4)])  # its marker (8) is in the range
            assert fetch(sock, 9, 1) == (0, 14, 10, 9, [])
            assert fetch(sock, 10, 1) == (0, 14, 10, None, [])  # nothing is stable yet
            # read_uncommitted: up to the high watermark, no list (Kafka sends null), the same LSO.
            assert fetch(sock, 0, 0) == (0, 14, 10, 13, None)
