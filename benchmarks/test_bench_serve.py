"""Idempotent produce from librdkafka through ``python -m dedup serve`` on loopback (#6).

The server runs as its own process (``python -m dedup serve``), as a user runs it; the
producer is confluent-kafka (librdkafka) with ``enable.idempotence=true`` and ``acks=all``,
1 KiB messages, librdkafka's default batching (linger 5 ms, batches up to 1 MB). A round
sends ``MESSAGES`` messages and waits for every acknowledgement; MB/s counts message
values. The server's summary at exit says how long it spent on produce requests and how
much of that inside ``Cluster.produce`` (the log append, the producer-state table and
synchronous replication to the followers): the engine's share. Brokers: 3 (replication
factor 3, min.insync.replicas 2) and 1 (no replication), side by side in one run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")

MESSAGE_BYTES = 1024
MESSAGES = 50_000
ROUNDS = 3
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Served:
    def __init__(self, brokers: int, topics: tuple[str, ...] = ("bench",), overrides: tuple[str, ...] = ()) -> None:
        """``topics``: ``NAME[:PARTITIONS]`` each; ``overrides``: broker settings, ``KEY=VALUE`` each."""
        self.directory = tempfile.TemporaryDirectory(prefix="dedup-bench-serve-")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dedup", "serve", "--port", "0", "--brokers", str(brokers),
             "--dir", self.directory.name, *[f"--topic={topic}" for topic in topics],
             *[f"--override={setting}" for setting in overrides]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        line = self.process.stdout.readline()
        match = re.fullmatch(r"bootstrap\.servers=(\S+)\n", line)
        assert match, (line, self.process.stderr.read())
        self.bootstrap = match.group(1)

    def stop(self) -> tuple[float, float]:
        """Stop the server; (seconds on produce requests, seconds of it in the engine)."""
        self.process.send_signal(signal.SIGINT)
        out, err = self.process.communicate(timeout=120)
        assert self.process.returncode == 130, err  # Ctrl-C's status, after the clean stop
        self.directory.cleanup()
        match = re.search(r"produce requests: ([\d.]+) s handled, ([\d.]+) s of it in the engine", out)
        assert match, out
        return float(match.group(1)), float(match.group(2))


def produce_round(bootstrap: str, keyed: bool = False) -> float:
    """One round of ``MESSAGES`` messages to topic ``bench``; ``keyed``: each with its own key,
    spread over the topic's partitions by librdkafka's default partitioner."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    value = os.urandom(MESSAGE_BYTES)
    producer.produce("bench", value=b"warm-up")
    producer.flush(30)
    failed = []
    started = time.perf_counter()
    for i in range(MESSAGES):
        key = b"%d" % i if keyed else None
        while True:
            try:
                producer.produce("bench", value=value, key=key,
                                 on_delivery=lambda e, m: failed.append(e) if e else None)  # fmt: skip
                break
            except BufferError:  # the local queue is full: let deliveries drain
                producer.poll(0.001)
        producer.poll(0)
    assert producer.flush(120) == 0
    seconds = time.perf_counter() - started
    assert not failed, failed[:3]
    return seconds


@pytest.mark.parametrize("brokers", [3, 1])
def test_bench_serve_librdkafka_idempotent_produce(benchmark, kit, brokers):
    served = Served(brokers)
    rounds: list[float] = []
    try:
        benchmark.pedantic(lambda: rounds.append(produce_round(served.bootstrap)), rounds=ROUNDS, iterations=1)
    finally:
        produce_seconds, engine_seconds = served.stop()
    best = min(rounds)
    total = sum(rounds)
    kit.record(
        benchmark, f"serve, librdkafka, {brokers} broker(s)",
        mb_per_s=MESSAGES * MESSAGE_BYTES / best / 1e6,
        engine_share_of_produce=engine_seconds / produce_seconds,
        engine_share_of_wall=engine_seconds / total,
        produce_handling_share_of_wall=produce_seconds / total,
    )  # fmt: skip


#: (label, topics the server holds, keyed): one partition alone; the same with an idle
#: 12-partition topic beside it (adding partitions must not slow it by more than 10%);
#: 12 partitions with keyed messages spread over them.
PARTITION_CASES = [
    ("1 partition", ("bench",), False),
    ("1 partition beside 12 idle", ("bench", "idle:12"), False),
    ("12 partitions, keyed", ("bench:12",), True),
]


@pytest.mark.parametrize("brokers", [3, 1])
def test_bench_serve_partitions(kit, brokers):
    """The three cases side by side, each its own server, ``ROUNDS`` rounds each, best counted;
    the single partition beside 12 idle ones keeps at least 90% of its rate alone (issue 14)."""
    rates = {}
    for label, topics, keyed in PARTITION_CASES:
        served = Served(brokers, topics)
        try:
            best = min(produce_round(served.bootstrap, keyed) for _ in range(ROUNDS))
        finally:
            served.stop()
        rates[label] = MESSAGES * MESSAGE_BYTES / best / 1e6
        kit.record(None, f"serve partitions, {brokers} broker(s), {label}", mb_per_s=rates[label])
    assert rates["1 partition beside 12 idle"] >= 0.9 * rates["1 partition"], rates


# --- group consumption ---------------------------------------------------------------------------

GROUP_TOPIC_PARTITIONS = 12
GROUP_MESSAGES = 200_000

#: One member of a consumer group, in its own process: reads its partitions to their end
#: (``enable.partition.eof``), prints one JSON line (first and last message times, messages,
#: value bytes, the assignments it was given), then stays in the group until its stdin closes,
#: so that no member's departure rebalances the others (which would re-read, nothing being committed).
GROUP_MEMBER = """
import json, sys, time
from confluent_kafka import Consumer, KafkaError
bootstrap, group, topic = sys.argv[1:4]
assignments = []
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                     "auto.offset.reset": "earliest", "enable.partition.eof": True})
consumer.subscribe([topic], on_assign=lambda c, ps: assignments.append(sorted(p.partition for p in ps)))
first = last = None
messages = size = 0
ended = set()
deadline = time.monotonic() + 300
while time.monotonic() < deadline and not (assignments and ended >= set(assignments[-1])):
    batch = consumer.consume(1000, 0.2)
    for message in batch:
        error = message.error()
        if error is None:
            messages += 1
            size += len(message.value())
        elif error.code() == KafkaError._PARTITION_EOF:
            ended.add(message.partition())
    if messages and first is None:
        first = time.time()  # wall clock: comparable across the members' processes
    if batch and batch[-1].error() is None:
        last = time.time()
print(json.dumps({"first": first, "last": last, "messages": messages, "bytes": size,
                  "assignments": assignments}), flush=True)
sys.stdin.read()
consumer.close()
"""


def prefill(bootstrap: str, topic: str, messages: int) -> None:
    """``messages`` 1 KiB messages, keyed (spread over the partitions), idempotent, acks=all."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    value = os.urandom(MESSAGE_BYTES)
    for i in range(messages):
        while True:
            try:
                producer.produce(topic, value=value, key=b"%d" % i)
                break
            except BufferError:
                producer.poll(0.001)
        producer.poll(0)
    assert producer.flush(300) == 0


def consume_as_group(bootstrap: str, topic: str, group: str, members: int) -> list[dict]:
    """Each member's report (see :data:`GROUP_MEMBER`), once all have read their partitions."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", GROUP_MEMBER, bootstrap, group, topic],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        for _ in range(members)
    ]
    try:
        return [json.loads(process.stdout.readline()) for process in processes]  # each gives up after 300 s
    finally:
        for process in processes:
            process.stdin.close()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_bench_serve_group_consumption(kit):
    """A 12-partition topic of 200,000 1 KiB messages, read by a consumer group of 1, then of 3
    (each its own group, from the start). The members are processes, not threads in one: the
    broker is one Python process either way, and in one client process the members' Python
    side (a ``Message`` object per message, under one GIL) would be measured with it. Time runs
    from the first message any member reads to the last one; Kafka's initial rebalance delay
    (raised to 5 s) lets all members join before the first assignment, and each member checks
    it was assigned once: every message is read exactly once. ``ROUNDS`` rounds each, the best
    counted (the worst is recorded too)."""
    served = Served(1, (f"bench:{GROUP_TOPIC_PARTITIONS}",), ("group.initial.rebalance.delay.ms=5000",))
    try:
        prefill(served.bootstrap, "bench", GROUP_MESSAGES)
        for members in (1, 3):
            rates = []
            for round_ in range(ROUNDS):  # a new group each round: read from the start again
                reports = consume_as_group(served.bootstrap, "bench", f"bench-{members}-{round_}", members)
                assert sum(r["messages"] for r in reports) == GROUP_MESSAGES, reports
                assert sum(r["bytes"] for r in reports) == GROUP_MESSAGES * MESSAGE_BYTES, reports
                assert all(len(r["assignments"]) == 1 for r in reports), reports  # no rebalance while reading
                assigned = sorted(p for r in reports for p in r["assignments"][0])
                assert assigned == list(range(GROUP_TOPIC_PARTITIONS)), reports
                rates.append(GROUP_MESSAGES / (max(r["last"] for r in reports) - min(r["first"] for r in reports)))
            kit.record(
                None, f"serve group consumption, 1 broker, {members} consumer(s), best of {ROUNDS}",
                mb_per_s=max(rates) * MESSAGE_BYTES / 1e6, messages_per_s=max(rates),
                messages_per_s_worst=min(rates),
            )  # fmt: skip
    finally:
        served.stop()
