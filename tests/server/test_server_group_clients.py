"""Real consumer groups against ``dedup serve``: confluent-kafka (librdkafka), kafka-python and
aiokafka each run a 3-member group in subprocesses, with ``enable.auto.commit=false`` and a
synchronous commit after what they read; one member is killed with SIGKILL (no LeaveGroup)
and its partition is taken over from its committed offset after the session timeout; the
committed offsets survive a restart of the server on the same directory.

Topics have one partition here, so the group subscribes to three single-partition topics
with the round-robin assignor: each member gets one. On the code before the group
coordinator these fail: FindCoordinator is not served (librdkafka waits silently,
kafka-python raises IncompatibleBrokerVersion).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from dedup.server import ServerThread

confluent_kafka = pytest.importorskip("confluent_kafka")
pytest.importorskip("kafka")
pytest.importorskip("aiokafka")

TOPICS = ["t1", "t2", "t3"]
GROUP = "billing"
PER_TOPIC = 20

WORKER = textwrap.dedent(
    """
    import asyncio, sys, time
    library, bootstrap, group = sys.argv[1:4]
    topics = ["t1", "t2", "t3"]

    def emit(topic, partition, offset, value):
        print(f"{topic} {partition} {offset} {value.decode()}", flush=True)

    if library == "confluent":
        from confluent_kafka import Consumer
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                             "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
                             "heartbeat.interval.ms": 500, "partition.assignment.strategy": "roundrobin"})
        consumer.subscribe(topics)
        while True:
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            consumer.commit(message=message, asynchronous=False)
            emit(message.topic(), message.partition(), message.offset(), message.value())
    elif library == "kafka-python":
        from kafka import KafkaConsumer
        from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                 auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=500,
                                 partition_assignment_strategy=[RoundRobinPartitionAssignor])
        consumer.subscribe(topics)
        while True:
            batches = consumer.poll(timeout_ms=200)
            if batches:
                consumer.commit()
                for records in batches.values():
                    for r in records:
                        emit(r.topic, r.partition, r.offset, r.value)
    else:
        from aiokafka import AIOKafkaConsumer

        async def main():
            consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=group,
                                        enable_auto_commit=False, auto_offset_reset="earliest",
                                        session_timeout_ms=6000, heartbeat_interval_ms=500)
            await consumer.start()
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                if batches:
                    await consumer.commit()
                    for records in batches.values():
                        for r in records:
                            emit(r.topic, r.partition, r.offset, r.value)

        asyncio.run(main())
    """
)


class Worker:
    """A group member in its own process; ``lines`` is what it has read (and committed)."""

    def __init__(self, script: str, library: str, bootstrap: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen([sys.executable, script, library, bootstrap, GROUP], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, env=env, text=True)  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.strip())

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def produce(bootstrap: str, first: int, count: int) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for topic in TOPICS:
        for i in range(first, first + count):
            producer.produce(topic, value=f"{topic}-{i}".encode())
    assert producer.flush(30) == 0


def read(workers: list[Worker]) -> list[str]:
    return [line for worker in workers for line in worker.lines]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def group_summary(server: ServerThread) -> dict:
    def describe() -> dict:
        groups = server.server.groups
        coordinator = groups.coordinator_id(GROUP)
        return groups.describe_group(coordinator, GROUP)[1] if coordinator is not None else {}

    return server.run(describe)


def stable_with(server: ServerThread, members: int) -> bool:
    summary = group_summary(server)
    return summary.get("group_state") == "Stable" and len(summary["members"]) == members


def committed(bootstrap: str) -> dict[str, int]:
    """The group's committed offsets, asked over the wire (OffsetFetch) by a client outside it."""
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP})
    try:
        wanted = [confluent_kafka.TopicPartition(topic, 0) for topic in TOPICS]
        return {tp.topic: tp.offset for tp in consumer.committed(wanted, timeout=15)}
    finally:
        consumer.close()


@pytest.mark.slow
@pytest.mark.parametrize("library", ["confluent", "kafka-python", "aiokafka"])
def test_a_three_member_group_reads_everything_once_and_survives_a_killed_member(tmp_path, library):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    directory = tmp_path / "serve"
    options = {"brokers": 3, "topics": TOPICS, "group_initial_rebalance_delay_ms": 0,
               "group_min_session_timeout_ms": 1000}  # fmt: skip
    workers: list[Worker] = []
    with ServerThread(directory, **options) as server:
        bootstrap = server.bootstrap_servers
        try:
            workers = [Worker(str(script), library, bootstrap) for _ in range(3)]
            wait_for(lambda: stable_with(server, 3), 90, "a stable group of 3")
            produce(bootstrap, 0, PER_TOPIC)
            wait_for(lambda: len(read(workers)) >= 3 * PER_TOPIC, 90, "the first messages")
            time.sleep(1)  # nothing more may come
            first = read(workers)
            assert sorted(first) == sorted(f"{t} 0 {i} {t}-{i}" for t in TOPICS for i in range(PER_TOPIC))
            # One topic (partition) per member: each member's lines name one topic.
            assert sorted(len({line.split()[0] for line in w.lines}) for w in workers) == [1, 1, 1]
            victim = workers[0]
            victim_topic = victim.lines[0].split()[0]
            victim.kill()  # no LeaveGroup: the coordinator notices after the session timeout (6 s)
            produce(bootstrap, PER_TOPIC, PER_TOPIC)
            wait_for(lambda: len(read(workers)) >= 6 * PER_TOPIC, 90, "the takeover")
            time.sleep(1)
            everything = read(workers)
            expected = [f"{t} 0 {i} {t}-{i}" for t in TOPICS for i in range(2 * PER_TOPIC)]
            assert sorted(everything) == sorted(expected)  # every message once: none lost, none twice
            taken_over = [line for w in workers[1:] for line in w.lines if line.startswith(victim_topic + " ")]
            assert taken_over and int(taken_over[0].split()[2]) == PER_TOPIC  # from the committed offset
        finally:
            for worker in workers:
                worker.stop()
        assert committed(bootstrap) == dict.fromkeys(TOPICS, 2 * PER_TOPIC)
    with ServerThread(directory, **options) as restarted:  # a fresh server on the same directory
        assert committed(restarted.bootstrap_servers) == dict.fromkeys(TOPICS, 2 * PER_TOPIC)
