"""The assignment stays on the client (Kafka's classic protocol): the leader's SyncGroup carries
the assignments it computed, and the broker hands each member its own. librdkafka's three
assignors run against ``dedup serve``: ``range`` and ``roundrobin`` (eager: every member gives
up everything at a rebalance) and ``cooperative-sticky`` (KIP-429: incremental, two rebalances,
a member keeps what it still owns). A second member joins a group whose first member is
consuming; together they read every message of a 6-partition topic, each once unless its
commit failed (a synchronous commit after each message: during a cooperative rebalance a commit
sent with the generation being replaced is ILLEGAL_GENERATION, as in Kafka, and the message may
come again), and the final assignments split the partitions.
"""

from __future__ import annotations

import time

import pytest

from dedup.server import ServerThread

confluent_kafka = pytest.importorskip("confluent_kafka")

TOPIC = "clicks"
PARTITIONS = 6
MESSAGES = 120


class Member:
    def __init__(self, bootstrap: str, strategy: str) -> None:
        self.consumer = confluent_kafka.Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"billing-{strategy}", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "partition.assignment.strategy": strategy,
            "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
        })  # fmt: skip
        self.consumer.subscribe([TOPIC])
        self.read: list[tuple[int, int]] = []
        self.failed: list[tuple[int, int]] = []  # read, but the commit was refused

    def poll(self) -> None:
        message = self.consumer.poll(0.05)
        if message is None or message.error():
            return
        self.read.append((message.partition(), message.offset()))
        try:
            self.consumer.commit(message=message, asynchronous=False)
        except confluent_kafka.KafkaException as error:
            code = error.args[0].code()
            assert code in (confluent_kafka.KafkaError.ILLEGAL_GENERATION,
                            confluent_kafka.KafkaError.REBALANCE_IN_PROGRESS), error  # fmt: skip
            self.failed.append((message.partition(), message.offset()))

    def assigned(self) -> list[int]:
        return sorted(tp.partition for tp in self.consumer.assignment())


def test_one_cooperative_member_gets_every_partition(tmp_path):
    # The fast representative of this file: one member, the cooperative protocol's first round.
    with ServerThread(tmp_path, brokers=1, topics=[(TOPIC, PARTITIONS)], group_initial_rebalance_delay_ms=0) as server:
        member = Member(server.bootstrap_servers, "cooperative-sticky")
        try:
            deadline = time.monotonic() + 20
            while member.assigned() != list(range(PARTITIONS)) and time.monotonic() < deadline:
                member.poll()
            assert member.assigned() == list(range(PARTITIONS))
        finally:
            member.consumer.close()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["range", "roundrobin", "cooperative-sticky"])
def test_each_librdkafka_assignor_splits_the_partitions_and_reads_everything_once(tmp_path, strategy):
    with ServerThread(tmp_path, brokers=3, topics=[(TOPIC, PARTITIONS)], group_initial_rebalance_delay_ms=0,
                      group_min_session_timeout_ms=1000) as server:  # fmt: skip
        producer = confluent_kafka.Producer({"bootstrap.servers": server.bootstrap_servers, "enable.idempotence": True})
        for i in range(MESSAGES):
            producer.produce(TOPIC, value=b"%d" % i, partition=i % PARTITIONS)
        assert producer.flush(30) == 0
        first = Member(server.bootstrap_servers, strategy)
        deadline = time.monotonic() + 30
        while len(first.read) < MESSAGES // 4 and time.monotonic() < deadline:
            first.poll()
        assert first.assigned() == list(range(PARTITIONS))
        second = Member(server.bootstrap_servers, strategy)
        members = [first, second]
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                for member in members:
                    member.poll()
                done = len(set(first.read + second.read)) >= MESSAGES
                if done and all(m.assigned() for m in members):
                    break
            read = first.read + second.read
            failed = first.failed + second.failed
            assert set(read) == {(p, o) for p in range(PARTITIONS) for o in range(MESSAGES // PARTITIONS)}
            for message in set(read):  # read again only after a refused commit
                assert read.count(message) - 1 <= failed.count(message), message
            a, b = first.assigned(), second.assigned()
            assert a and b and sorted(a + b) == list(range(PARTITIONS)), (a, b)
            if strategy == "cooperative-sticky":  # the first member kept what it did not have to give up
                assert len(a) == PARTITIONS // 2
        finally:
            for member in members:
                member.consumer.close()
