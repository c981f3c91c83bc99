"""Real Kafka producers against ``dedup serve``: exactly once under lost acknowledgements,
leader failover and a broker restart (issue #6).

Three independent client implementations produce idempotently (librdkafka through
confluent-kafka, kafka-python, aiokafka) while the server drops a share of produce
responses after appending the batch (the client sees its connection break and retries the
same batch: spec §2.1 rule 10 must answer the retry with the original offsets), the leader
crashes mid-stream (the new leader deduplicates with the table it built as a follower,
spec §5.6), and the crashed broker restarts from its directory (snapshot plus replay,
spec §5) and leads again. A real consumer (kafka-python, over Fetch) reads the partition
back: every message exactly once, in send order.

The same run with ``deduplicate=False`` (a broker without idempotence) stores retries
again, so these tests can fail; the duplicates it shows are the ones dedup removes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import pytest

from dedup.server import Faults, ServerThread

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka = pytest.importorskip("kafka")
aiokafka = pytest.importorskip("aiokafka")

TOPIC = "clicks"
MESSAGES = 300


def values(count: int) -> list[bytes]:
    return [b"click-%05d" % i for i in range(count)]


def consume_all(bootstrap: str, expected: int, timeout: float = 30.0) -> list[bytes]:
    """Every value of the partition, read with kafka-python's consumer (Fetch and
    ListOffsets against the current leader), until ``expected`` arrived and nothing more
    comes for a second."""
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
        consumer_timeout_ms=1000, request_timeout_ms=5000, retry_backoff_ms=50,
    )  # fmt: skip
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


class Chaos:
    """The failures of one run, placed by how many messages have been handed to the client:
    at a third, the leader crashes; at two thirds, the crashed broker restarts (recovery from
    disk) and the then-current leader crashes, so the restarted broker leads."""

    def __init__(self, server: ServerThread) -> None:
        self.server = server
        self.first_leader: int | None = None
        self.second_leader: int | None = None

    def at(self, sent: int) -> None:
        if sent == MESSAGES // 3:
            self.first_leader = self.server.stop_leader(TOPIC)
        elif sent == 2 * MESSAGES // 3:
            assert self.first_leader is not None
            self.server.start_broker(self.first_leader)
            self.second_leader = self.server.stop_leader(TOPIC)


def produce_confluent(
    bootstrap: str, messages: list[bytes], chaos: Callable[[int], None], timeout_ms: int = 5000
) -> list[str]:
    errors: list[str] = []
    producer = confluent_kafka.Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
        "linger.ms": 1, "batch.num.messages": 1, "retry.backoff.ms": 20,
        "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200,
        "message.timeout.ms": 60000, "socket.timeout.ms": timeout_ms, "topic.metadata.refresh.interval.ms": 1000,
    })  # fmt: skip

    def delivered(error: object, message: object) -> None:
        if error is not None:
            errors.append(str(error))

    for sent, value in enumerate(messages):
        chaos(sent)
        producer.produce(TOPIC, value=value, on_delivery=delivered)
        producer.poll(0)
        if sent == 0:
            producer.flush(30)  # connected, with a producer id, before the stream starts
        time.sleep(0.002)  # a stream, not one burst: failures land between requests in flight
    remaining = producer.flush(60)
    if remaining:
        errors.append(f"{remaining} messages still undelivered after 60 s")
    return errors


def produce_kafka_python(
    bootstrap: str, messages: list[bytes], chaos: Callable[[int], None], timeout_ms: int = 5000
) -> list[str]:
    producer = kafka.KafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=1, batch_size=64,
        retry_backoff_ms=20, reconnect_backoff_ms=20, reconnect_backoff_max_ms=200,
        request_timeout_ms=timeout_ms, delivery_timeout_ms=60000, metadata_max_age_ms=1000,
    )  # fmt: skip
    futures = []
    for sent, value in enumerate(messages):
        chaos(sent)
        futures.append(producer.send(TOPIC, value=value))
        if sent == 0:
            producer.flush(30)
        time.sleep(0.002)
    producer.flush(60)
    errors = [repr(future.exception) for future in futures if not future.succeeded()]
    producer.close(5)
    return errors


def produce_aiokafka(
    bootstrap: str, messages: list[bytes], chaos: Callable[[int], None], timeout_ms: int = 5000
) -> list[str]:
    async def run() -> list[str]:
        producer = aiokafka.AIOKafkaProducer(
            bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=1, max_batch_size=64,
            retry_backoff_ms=20, request_timeout_ms=timeout_ms, metadata_max_age_ms=1000,
        )  # fmt: skip
        await producer.start()
        futures = []
        try:
            for sent, value in enumerate(messages):
                # The server's control calls block: run them off this event loop.
                await asyncio.to_thread(chaos, sent)
                futures.append(await producer.send(TOPIC, value=value))
                if sent == 0:
                    await producer.flush()
                await asyncio.sleep(0.002)
            results = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            await producer.stop()
        return [repr(result) for result in results if isinstance(result, BaseException)]

    return asyncio.run(run())


PRODUCERS = {"confluent-kafka": produce_confluent, "kafka-python": produce_kafka_python, "aiokafka": produce_aiokafka}


def run_with_faults(
    tmp_path: object,
    produce: Callable[..., list[str]],
    *,
    deduplicate: bool,
    faults: Faults | None = None,
    timeout_ms: int = 5000,
):
    faults = Faults(drop_responses=0.15, seed=6) if faults is None else faults
    with ServerThread(tmp_path, brokers=3, topics=[TOPIC], deduplicate=deduplicate, faults=faults) as server:
        chaos = Chaos(server)
        messages = values(MESSAGES)
        errors = produce(server.bootstrap_servers, messages, chaos.at, timeout_ms)
        got = consume_all(server.bootstrap_servers, MESSAGES)
        stats = server.run(lambda: (server.server.stats.batches, server.server.stats.duplicates))
        return messages, got, errors, faults, chaos, stats


@pytest.fixture(autouse=True)
def quiet_clients(caplog: pytest.LogCaptureFixture) -> None:
    # The clients log every broken connection at ERROR; the assertions say what matters.
    for name in ("kafka", "aiokafka", "dedup.server", "dedup.log", "dedup.cluster"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def one_fast(clients):
    """The clients as parameters, all but kafka-python (the quickest run) in the slow set."""
    return [pytest.param(client, marks=[] if client == "kafka-python" else pytest.mark.slow) for client in clients]


# The fast set keeps one real-client run, kafka-python's; -m slow runs the other clients and
# the runs below.
@pytest.mark.parametrize("client", one_fast(sorted(PRODUCERS)))
def test_exactly_once_under_lost_responses_failover_and_restart(tmp_path, client):
    messages, got, errors, faults, chaos, (batches, duplicates) = run_with_faults(
        tmp_path, PRODUCERS[client], deduplicate=True
    )
    assert errors == []
    assert faults.dropped > 0, "no response was dropped: the run tested nothing"
    assert chaos.first_leader is not None and chaos.second_leader is not None
    assert chaos.first_leader != chaos.second_leader
    # Retries reached the leaders and were recognised (rule 10), not written again.
    assert duplicates > 0
    assert got == messages, f"{len(got)} values back for {len(messages)} sent"


@pytest.mark.slow
@pytest.mark.parametrize("client", sorted(PRODUCERS))
def test_without_deduplication_the_same_run_stores_duplicates(tmp_path, client):
    messages, got, errors, faults, _, (_, duplicates) = run_with_faults(tmp_path, PRODUCERS[client], deduplicate=False)
    assert errors == []
    assert faults.dropped > 0
    assert duplicates == 0  # the table never saw a producer id
    assert set(got) == set(messages)  # nothing lost ...
    assert len(got) > len(messages), "a retried batch should have been stored again"  # ... but stored twice


def test_server_thread_reports_a_bad_configuration(tmp_path):
    with pytest.raises(ValueError, match="ports"):
        ServerThread(tmp_path, brokers=2, ports=[0])
    assert not [t for t in threading.enumerate() if t.name == "dedup-serve" and t.is_alive()]


# aiokafka is left out: its send() waits for the partition's previous batch to drain with the
# same request timeout and raises KafkaTimeoutError when a response is delayed past it, so
# the run fails in the client's back-pressure before any retry (lost responses cover it above).
@pytest.mark.slow
@pytest.mark.parametrize("client", ["confluent-kafka", "kafka-python"])
def test_exactly_once_under_delayed_responses_and_closed_connections(tmp_path, client):
    # A response delayed past the client's 1.5 s request timeout: the client gives up on the
    # connection and retries on a new one while the original batch is already stored (the
    # duplicates). A connection closed before its request is handled loses the request: the
    # retry is its first append. One message per request (about 300 requests), so that 3% of
    # them are certain to meet each fault.
    faults = Faults(delay_responses=0.03, delay_seconds=2.0, close_connections=0.03, seed=11)
    messages, got, errors, faults, _, (_, duplicates) = run_with_faults(
        tmp_path, PRODUCERS[client], deduplicate=True, faults=faults, timeout_ms=1500
    )
    assert errors == []
    assert faults.delayed > 0 and faults.closed > 0
    assert duplicates > 0
    assert got == messages
