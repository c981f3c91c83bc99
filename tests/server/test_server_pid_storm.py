"""A PID storm against ``dedup serve`` with ``producer.state.max.producers`` (issue 16 item 6,
KIP-936's problem): real idempotent producers, each with its own producer id from
InitProducerId, through a broker whose tables are capped; the table stays at the cap, the
evicted producers keep producing without an error (KIP-360 accepts an unknown producer), and
every message is stored once."""

from __future__ import annotations

import logging

import kafka
import pytest

from dedup.server import ServerThread
from dedup.server.config import BrokerConfig

TOPIC = "clicks"
CAP = 4
PRODUCERS = 10


@pytest.fixture(autouse=True)
def quiet_clients() -> None:
    for name in ("kafka", "dedup.server"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def test_the_broker_key_sets_the_cap_of_every_partition():
    assert BrokerConfig({"producer.state.max.producers": "100000"}).server_kwargs() == {"max_producers": 100000}
    assert BrokerConfig({}).value("producer.state.max.producers") == 0  # unbounded, as Kafka


def test_a_storm_of_idempotent_producers_stays_at_the_cap_and_loses_nothing(tmp_path):
    with ServerThread(tmp_path, brokers=1, topics=[TOPIC], max_producers=CAP) as server:
        producers = [
            kafka.KafkaProducer(bootstrap_servers=server.bootstrap_servers, enable_idempotence=True, acks="all",
                                linger_ms=0, request_timeout_ms=10000, max_block_ms=10000)
            for _ in range(PRODUCERS)
        ]  # fmt: skip
        try:
            sent = []
            for round_number in range(2):  # the second round: every producer was evicted once
                for index, producer in enumerate(producers):
                    value = f"{round_number}-{index}".encode()
                    producer.send(TOPIC, value=value, partition=0).get(timeout=30)
                    sent.append(value)
        finally:
            for producer in producers:
                producer.close(5)

        def table_state():
            table = server.server.partition(TOPIC, 0).leader.log.producer_state
            return len(table), table.max_producers, table.evictions

        held, cap, evictions = server.run(table_state)
        assert (held, cap) == (CAP, CAP)
        assert evictions == 2 * PRODUCERS - CAP  # each new producer id, and each return, evicted one
        stored = server.run(lambda: [r.value for r in server.server.partition(TOPIC, 0).consume()])
        assert stored == sent
