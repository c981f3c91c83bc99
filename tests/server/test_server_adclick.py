"""The ad-click test Kafka users write, with a real producer (librdkafka) against ``dedup
serve``: "send the same click twice, count it once", and where that stops being true.

1. One producer whose acknowledgement is lost retries the same click (the same producer
   id, epoch and sequence): the leader recognises the retry (spec §2.1 rule 10) and answers
   with the original offset, so the click is stored once.
2. The application restarts (a new producer, hence a new producer id from InitProducerId)
   and sends the click it never saw acknowledged again: the broker cannot know the two are
   the same click, so it is stored twice. This is Kafka's documented limit: the idempotent
   producer deduplicates within one producer session only (KIP-98); surviving a restart
   takes a ``transactional.id`` (the library's ``TransactionCoordinator``) or idempotent
   consumers.
"""

from __future__ import annotations

import logging
import time

import pytest

from dedup.server import Faults, ServerThread

confluent_kafka = pytest.importorskip("confluent_kafka")

TOPIC = "clicks"
CLICK = b'{"ad": "summer-sale", "user": 42, "click_id": "c-0001"}'


@pytest.fixture(autouse=True)
def quiet() -> None:
    for name in ("dedup.server", "dedup.log", "dedup.cluster"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def new_producer(server: ServerThread) -> confluent_kafka.Producer:
    return confluent_kafka.Producer({
        "bootstrap.servers": server.bootstrap_servers, "enable.idempotence": True, "acks": "all",
        "linger.ms": 0, "retry.backoff.ms": 20, "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 100,
        "message.timeout.ms": 30000,
    })  # fmt: skip


def stored_clicks(server: ServerThread) -> int:
    return server.run(lambda: [r.value for r in server.server.partition(TOPIC, 0).consume()].count(CLICK))


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# Slow (a real client through a lost acknowledgement and a restart); the fast set's real-client
# run is in test_server_clients.py.
@pytest.mark.slow
def test_a_retried_click_is_stored_once_and_a_restarted_producer_stores_it_again(tmp_path):
    faults = Faults(seed=1)
    with ServerThread(tmp_path, brokers=3, topics=[TOPIC], faults=faults) as server:
        # 1. The first produce response is lost after the append; the producer retries.
        producer = new_producer(server)
        producer.produce(TOPIC, value=b"warm-up")
        assert producer.flush(20) == 0
        server.run(setattr, faults, "drop_responses", 1.0)
        delivered = []
        producer.produce(TOPIC, value=CLICK, on_delivery=lambda error, message: delivered.append(error))
        producer.poll(0)
        wait_until(lambda: faults.dropped >= 1)
        server.run(setattr, faults, "drop_responses", 0.0)
        assert producer.flush(20) == 0
        assert delivered == [None]
        assert stored_clicks(server) == 1  # the retry was recognised (rule 10)
        assert server.run(lambda: server.server.stats.duplicates) >= 1

        # 2. The application crashes before it learns the click was stored: every response
        # to its next attempt is lost, and it gives up with the click unacknowledged.
        server.run(setattr, faults, "drop_responses", 1.0)
        crashed = new_producer(server)
        crashed.produce(TOPIC, value=b"warm-up-2")
        crashed.poll(0)
        second_click = CLICK.replace(b"c-0001", b"c-0002")
        crashed.produce(TOPIC, value=second_click)
        wait_until(lambda: server.run(lambda: [r.value for r in server.server.partition(TOPIC, 0).consume()]
                                      .count(second_click)) == 1)  # fmt: skip
        crashed.purge(in_queue=True, in_flight=True)
        crashed.flush(0)
        del crashed
        server.run(setattr, faults, "drop_responses", 0.0)

        # The restarted application gets a new producer id and sends the click again.
        restarted = new_producer(server)
        restarted.produce(TOPIC, value=second_click)
        assert restarted.flush(20) == 0
        values = server.run(lambda: [r.value for r in server.server.partition(TOPIC, 0).consume()])
        # Kafka's documented limit (KIP-98): idempotence holds within one producer session;
        # a new producer id is a new producer, so the same click is stored twice.
        assert values.count(second_click) == 2
        assert values.count(CLICK) == 1
