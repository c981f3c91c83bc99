"""An ordinary Kafka application against ``dedup serve`` (issue 14, "Done when"), once with each of
confluent-kafka (librdkafka), kafka-python and aiokafka:

- the library's admin client lists every topic (Metadata for all topics) and creates a topic of 6
  partitions (CreateTopics);
- a keyed idempotent producer of the library spreads messages over the 6 partitions while 15% of
  produce responses are lost after the append and the leader of a partition holding data crashes
  mid-stream: every partition read back holds every message exactly once, each key's messages in
  one partition and in send order. The same run with ``deduplicate=False`` stores duplicates, so
  the test can fail;
- a 3-member consumer group of the library (members are subprocesses, so one can be killed with
  SIGKILL) on the 6-partition topic of ``python -m dedup serve`` (a subprocess, as users run it),
  ``enable.auto.commit=false`` with a synchronous commit after every message, reads every message
  exactly once while one member is killed mid-stream and the survivors take its partitions over
  from its committed offsets; then the server itself is killed with SIGKILL and restarted on the
  same ``--dir`` and ports, and the group goes on from its committed offsets.

What "exactly once" means for a group of at-least-once consumers, checked exactly: a member prints
``processed`` for a message, commits the message's offset + 1 synchronously, then prints
``committed`` (or ``failed`` when the commit is refused, e.g. during a rebalance, and then seeks
back to the message). Every message must be committed (confirmed) exactly once over the whole
group, at consecutive offsets of its partition (no gap, no overlap), and be processed exactly
1 + (unconfirmed processings) times: the only redeliveries are of messages whose commit did not
happen. The member to be killed is made to stop after ``processed`` and before its commit (a hold
file), so its uncommitted tail is exactly that message, which a survivor must process again, and
the survivor's first offset on each of its partitions is the killed member's committed offset.

On the code before issue 14 (7b55d9f) every test here fails: topics have one partition
(``topics=[("clicks", 6)]`` and ``serve --topic clicks:6`` are refused), ``list_topics()`` for all
topics breaks librdkafka's connection (Metadata v9's tagged field), CreateTopics and the group
APIs are not served.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from dedup.server import Faults, ServerThread

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka = pytest.importorskip("kafka")
aiokafka = pytest.importorskip("aiokafka")
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402
from kafka.admin import KafkaAdminClient  # noqa: E402

LIBRARIES = ["confluent-kafka", "kafka-python", "aiokafka"]
TOPIC = "clicks"
PARTITIONS = 6
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def quiet_clients() -> None:
    # The clients log every broken connection at ERROR; the assertions say what matters.
    for name in ("kafka", "aiokafka", "dedup.server", "dedup.log", "dedup.cluster", "dedup.coordinator"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


# --- the admin client: all topics, and a topic of 6 partitions ------------------------------------------------


def admin_confluent(bootstrap: str) -> tuple[set[str], int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    [future] = admin.create_topics([confluent_kafka.admin.NewTopic("orders", 6, 3)]).values()
    future.result(timeout=15)
    topics = admin.list_topics(timeout=10).topics  # Metadata for all topics
    return set(topics), len(topics["orders"].partitions)


def admin_kafka_python(bootstrap: str) -> tuple[set[str], int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        admin.create_topics([kafka.admin.NewTopic("orders", 6, 3)])
        [described] = admin.describe_topics(["orders"])
        return set(admin.list_topics()), len(described["partitions"])
    finally:
        admin.close()


def admin_aiokafka(bootstrap: str) -> tuple[set[str], int]:
    async def run() -> tuple[set[str], int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        await admin.start()
        try:
            await admin.create_topics([aiokafka.admin.NewTopic("orders", 6, 3)])
            [described] = await admin.describe_topics(["orders"])
            return set(await admin.list_topics()), len(described["partitions"])
        finally:
            await admin.close()

    return asyncio.run(asyncio.wait_for(run(), 60))


ADMINS = {"confluent-kafka": admin_confluent, "kafka-python": admin_kafka_python, "aiokafka": admin_aiokafka}


@pytest.mark.parametrize("library", LIBRARIES)
def test_the_admin_client_lists_all_topics_and_creates_six_partitions(tmp_path, library):
    with ServerThread(tmp_path, brokers=3, topics=[TOPIC, "views"]) as server:
        topics, partitions = ADMINS[library](server.bootstrap_servers)
        assert topics == {TOPIC, "views", "orders"}
        assert partitions == 6
        leaders = server.run(lambda: [server.server.leader("orders", p) for p in range(6)])
        assert leaders == [0, 1, 2, 0, 1, 2]  # spread over the brokers, the preferred replica first


# --- keyed idempotent production over 6 partitions through lost responses and a leader crash -----------------

KEYS = 24
PER_KEY = 12


def keyed_messages() -> list[tuple[bytes, bytes]]:
    """Interleaved keys: key k's j-th message is ``(b"user-k", b"user-k:j")``."""
    return [(b"user-%02d" % k, b"user-%02d:%03d" % (k, j)) for j in range(PER_KEY) for k in range(KEYS)]


class LeaderCrash:
    """Half-way through the stream, the leader of the partition holding the most data crashes."""

    def __init__(self, server: ServerThread, at: int) -> None:
        self.server, self.at_sent = server, at
        self.partition: int | None = None
        self.broker: int | None = None

    def __call__(self, sent: int) -> None:
        if sent != self.at_sent:
            return
        sizes = self.server.run(lambda: [self.server.server.partition(TOPIC, p).high_watermark
                                         for p in range(PARTITIONS)])  # fmt: skip
        self.partition = max(range(PARTITIONS), key=sizes.__getitem__)
        assert sizes[self.partition] > 0
        self.broker = self.server.stop_leader(TOPIC, self.partition)


Chaos = Callable[[int], None]


def produce_confluent(bootstrap: str, messages: list[tuple[bytes, bytes]], chaos: Chaos) -> list[str]:
    errors: list[str] = []
    producer = confluent_kafka.Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 1,
        "batch.num.messages": 2, "retry.backoff.ms": 20, "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200,
        "message.timeout.ms": 60000, "socket.timeout.ms": 5000, "topic.metadata.refresh.interval.ms": 1000,
    })  # fmt: skip

    def delivered(error: object, message: object) -> None:
        if error is not None:
            errors.append(str(error))

    for sent, (key, value) in enumerate(messages):
        chaos(sent)
        producer.produce(TOPIC, key=key, value=value, on_delivery=delivered)
        producer.poll(0)
        if sent == 0:
            producer.flush(30)  # a producer id before the stream starts
        time.sleep(0.002)  # a stream, not one burst: failures land between requests in flight
    remaining = producer.flush(60)
    return errors + ([f"{remaining} messages undelivered after 60 s"] if remaining else [])


def produce_kafka_python(bootstrap: str, messages: list[tuple[bytes, bytes]], chaos: Chaos) -> list[str]:
    producer = kafka.KafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=1, batch_size=64,
        retry_backoff_ms=20, reconnect_backoff_ms=20, reconnect_backoff_max_ms=200, request_timeout_ms=5000,
        delivery_timeout_ms=60000, metadata_max_age_ms=1000,
    )  # fmt: skip
    futures = []
    for sent, (key, value) in enumerate(messages):
        chaos(sent)
        futures.append(producer.send(TOPIC, key=key, value=value))
        if sent == 0:
            producer.flush(30)
        time.sleep(0.002)
    producer.flush(60)
    errors = [repr(future.exception) for future in futures if not future.succeeded()]
    producer.close(5)
    return errors


def produce_aiokafka(bootstrap: str, messages: list[tuple[bytes, bytes]], chaos: Chaos) -> list[str]:
    async def run() -> list[str]:
        producer = aiokafka.AIOKafkaProducer(
            bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=1, max_batch_size=64,
            retry_backoff_ms=20, request_timeout_ms=5000, metadata_max_age_ms=1000,
        )  # fmt: skip
        await producer.start()
        futures = []
        try:
            for sent, (key, value) in enumerate(messages):
                await asyncio.to_thread(chaos, sent)  # the server's control calls block
                futures.append(await producer.send(TOPIC, key=key, value=value))
                if sent == 0:
                    await producer.flush()
                await asyncio.sleep(0.002)
            results = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            await producer.stop()
        return [repr(result) for result in results if isinstance(result, BaseException)]

    return asyncio.run(asyncio.wait_for(run(), 120))


PRODUCERS = {"confluent-kafka": produce_confluent, "kafka-python": produce_kafka_python, "aiokafka": produce_aiokafka}


def read_partitions(bootstrap: str, expected: int, timeout: float = 30.0) -> dict[int, list[bytes]]:
    """Every value of every partition (kafka-python's consumer, assigned, from the beginning),
    until ``expected`` values arrived and nothing more comes for a second."""
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                                   consumer_timeout_ms=1000, request_timeout_ms=5000, retry_backoff_ms=50)  # fmt: skip
    consumer.assign([kafka.TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
    got: dict[int, list[bytes]] = collections.defaultdict(list)
    count = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            before = count
            for message in consumer:
                got[message.partition].append(message.value)
                count += 1
            if count >= expected and count == before:
                break
    finally:
        consumer.close()
    return got


def produce_with_faults(tmp_path: Path, library: str, *, deduplicate: bool):
    faults = Faults(drop_responses=0.15, seed=14)
    messages = keyed_messages()
    with ServerThread(tmp_path, brokers=3, topics=[(TOPIC, PARTITIONS)], deduplicate=deduplicate,
                      faults=faults) as server:  # fmt: skip
        crash = LeaderCrash(server, len(messages) // 2)
        errors = PRODUCERS[library](server.bootstrap_servers, messages, crash)
        got = read_partitions(server.bootstrap_servers, len(messages))
        duplicates = server.run(lambda: server.server.stats.duplicates)
    assert crash.broker is not None, "the leader never crashed: the run tested nothing"
    assert faults.dropped > 0, "no response was dropped: the run tested nothing"
    return messages, got, errors, duplicates


def one_fast(libraries: list[str]) -> list:
    """kafka-python (the quickest run) in the default set, the others slow."""
    return [pytest.param(name, marks=[] if name == "kafka-python" else pytest.mark.slow) for name in libraries]


@pytest.mark.parametrize("library", one_fast(LIBRARIES))
def test_keyed_idempotent_production_over_six_partitions_is_exactly_once_in_key_order(tmp_path, library):
    messages, got, errors, duplicates = produce_with_faults(tmp_path, library, deduplicate=True)
    assert errors == []
    assert duplicates > 0  # retries reached the leaders and were recognised, not written again
    assert sorted(got) == list(range(PARTITIONS)), "the keys should reach every partition"
    sent_by_key: dict[bytes, list[bytes]] = collections.defaultdict(list)
    for key, value in messages:
        sent_by_key[key].append(value)
    home: dict[bytes, int] = {}
    for partition, values in got.items():
        stored_by_key: dict[bytes, list[bytes]] = collections.defaultdict(list)
        for value in values:
            key = value.split(b":")[0]
            stored_by_key[key].append(value)
            assert home.setdefault(key, partition) == partition, f"{key!r} in two partitions"
        for key, stored in stored_by_key.items():
            assert stored == sent_by_key[key], f"partition {partition}: {key!r} out of order or not exactly once"
    assert sorted(home) == sorted(sent_by_key)  # every key (and with it every message) arrived


@pytest.mark.slow
@pytest.mark.parametrize("library", LIBRARIES)
def test_without_deduplication_the_same_production_stores_duplicates(tmp_path, library):
    messages, got, errors, duplicates = produce_with_faults(tmp_path, library, deduplicate=False)
    assert errors == []
    assert duplicates == 0
    stored = [value for values in got.values() for value in values]
    assert set(stored) == {value for _, value in messages}  # nothing lost ...
    assert len(stored) > len(messages), "a retried batch should have been stored again"  # ... but some twice


# --- a consumer group of 3 members on ``python -m dedup serve``: a member killed, the server restarted ----------

GROUP = "billing"
SESSION_TIMEOUT_MS = 3000

# One member of the group, in its own process (so that it can be killed with SIGKILL): commits
# every message's offset + 1 synchronously after processing it, and prints what it does.
WORKER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    library, bootstrap, group, topic, hold, session_timeout_ms = sys.argv[1:7]
    session_timeout_ms = int(session_timeout_ms)

    def emit(*words):
        print(*words, flush=True)

    def assigned(partitions):
        emit("assigned", ",".join(str(p) for p in sorted(partitions)) or "-")

    def processed(partition, offset, value):
        emit("processed", partition, offset, value.decode())
        if os.path.exists(hold):  # the test is about to kill this member: stop before the commit
            emit("holding", partition, offset)
            time.sleep(120)
            sys.exit(3)

    if library == "confluent-kafka":
        from confluent_kafka import Consumer, KafkaException, TopicPartition
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                             "auto.offset.reset": "earliest", "session.timeout.ms": session_timeout_ms,
                             "heartbeat.interval.ms": 300, "reconnect.backoff.max.ms": 500})
        consumer.subscribe([topic], on_assign=lambda c, tps: assigned(tp.partition for tp in tps))
        while True:
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            partition, offset = message.partition(), message.offset()
            processed(partition, offset, message.value())
            try:
                consumer.commit(offsets=[TopicPartition(topic, partition, offset + 1)], asynchronous=False)
            except KafkaException as error:
                emit("failed", partition, offset, error.args[0].name())
                try:  # processed, not committed: process it again (a rebalance may assign it elsewhere)
                    consumer.seek(TopicPartition(topic, partition, offset))
                except KafkaException:
                    pass
            else:
                emit("committed", partition, offset)
    elif library == "kafka-python":
        from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                pass

            def on_partitions_assigned(self, partitions):
                assigned(tp.partition for tp in partitions)

        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                 auto_offset_reset="earliest", session_timeout_ms=session_timeout_ms,
                                 heartbeat_interval_ms=300, reconnect_backoff_max_ms=500)
        consumer.subscribe([topic], listener=Listener())
        while True:
            try:  # kafka-python 3 raises from poll() while no broker answers (the server restarting)
                batches = consumer.poll(timeout_ms=200)
            except KafkaError as error:
                emit("poll-failed", type(error).__name__)
                time.sleep(0.2)
                continue
            for tp, records in batches.items():
                for r in records:
                    processed(r.partition, r.offset, r.value)
                    try:
                        consumer.commit({tp: OffsetAndMetadata(r.offset + 1, "", -1)})
                    except KafkaError as error:
                        emit("failed", r.partition, r.offset, type(error).__name__)
                        try:
                            consumer.seek(tp, r.offset)
                        except Exception:
                            pass
                        break
                    emit("committed", r.partition, r.offset)
    else:
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
        from aiokafka.errors import KafkaError

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                pass

            async def on_partitions_assigned(self, partitions):
                assigned(tp.partition for tp in partitions)

        async def main():
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                        auto_offset_reset="earliest", session_timeout_ms=session_timeout_ms,
                                        heartbeat_interval_ms=300, retry_backoff_ms=100)
            consumer.subscribe([topic], listener=Listener())
            await consumer.start()
            while True:
                try:
                    batches = await consumer.getmany(timeout_ms=200)
                except KafkaError as error:
                    emit("poll-failed", type(error).__name__)
                    await asyncio.sleep(0.2)
                    continue
                for tp, records in batches.items():
                    for r in records:
                        processed(r.partition, r.offset, r.value)
                        try:
                            await consumer.commit({tp: r.offset + 1})
                        except KafkaError as error:
                            emit("failed", r.partition, r.offset, type(error).__name__)
                            try:
                                consumer.seek(tp, r.offset)
                            except Exception:
                                pass
                            break
                        emit("committed", r.partition, r.offset)

        asyncio.run(main())
    """
)


class Member:
    """A group member in its own process; ``lines`` is what it printed, split into words."""

    def __init__(self, script: Path, library: str, bootstrap: str, hold: Path) -> None:
        self.hold = hold
        self.stderr = hold.with_suffix(".stderr")  # the member's tracebacks, if any, for the failure message
        with open(self.stderr, "w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(script), library, bootstrap, GROUP, TOPIC, str(hold), str(SESSION_TIMEOUT_MS)],
                stdout=subprocess.PIPE, stderr=stderr, env=dict(os.environ, PYTHONUNBUFFERED="1"), text=True,
            )  # fmt: skip
        self.lines: list[list[str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.split())

    def assignment(self) -> list[int] | None:
        """The partitions of its last assignment (None before the first)."""
        last = [words[1] for words in list(self.lines) if words[0] == "assigned"]
        return None if not last else [] if last[-1] == "-" else [int(p) for p in last[-1].split(",")]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class Serve:
    """``python -m dedup serve`` as a user runs it, in its own process, on ports ``port`` to ``port + 2``."""

    def __init__(self, directory: Path, port: int) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.stderr = directory.with_suffix(".stderr")
        with open(self.stderr, "a") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dedup", "serve", "--dir", str(directory), "--port", str(port),
                 "--topic", f"{TOPIC}:{PARTITIONS}", "--override", "group.initial.rebalance.delay.ms=0",
                 "--override", "group.min.session.timeout.ms=1000"],
                stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
            )  # fmt: skip
        assert self.process.stdout is not None
        watchdog = threading.Timer(60, self.process.kill)  # a serve that never prints cannot hang the test
        watchdog.start()
        line = self.process.stdout.readline()
        watchdog.cancel()
        match = re.fullmatch(r"bootstrap\.servers=(\S+)\n", line)
        if match is None:
            self.kill()
            pytest.fail(f"serve printed {line!r}; stderr: {self.stderr.read_text()}")
        self.bootstrap = match.group(1)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.communicate(timeout=10)


class Printed:
    """A member's printed lines, without a process: for the check itself."""

    def __init__(self, *lines: str) -> None:
        self.lines = [line.split() for line in lines]


def free_ports(count: int) -> int:
    """A first port with ``count`` consecutive free ports (serve listens on PORT + b), from port 0."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count - 1 > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as other:
                    other.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise AssertionError("no consecutive free ports")


def produce_numbered(bootstrap: str, first: int, count: int, pause: float = 0.0) -> dict[tuple[int, int], str]:
    """``count`` messages ``m-NNNNN`` round robin over the partitions (librdkafka, idempotent);
    where each was stored: ``{(partition, offset): value}``."""
    stored: dict[tuple[int, int], str] = {}
    errors: list[str] = []
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 1})

    def delivered(error, message) -> None:
        if error is not None:
            errors.append(str(error))
        else:
            stored[(message.partition(), message.offset())] = message.value().decode()

    for i in range(first, first + count):
        producer.produce(TOPIC, value=b"m-%05d" % i, partition=i % PARTITIONS, on_delivery=delivered)
        producer.poll(0)
        time.sleep(pause)
    assert producer.flush(30) == 0 and errors == []
    return stored


def events(members: Sequence[Member | Printed], kind: str) -> list[tuple[int, int, int]]:
    """``(member, partition, offset)`` of every line of a kind, in each member's order."""
    return [(m, int(words[1]), int(words[2])) for m, member in enumerate(members) for words in list(member.lines)
            if words[0] == kind]  # fmt: skip


def confirmed(members: Sequence[Member | Printed]) -> set[tuple[int, int]]:
    return {(partition, offset) for _, partition, offset in events(members, "committed")}


def check_exactly_once(members: Sequence[Member | Printed], stored: dict[tuple[int, int], str]) -> None:
    """Every stored message committed exactly once by the group (its partition's offsets
    without gap or overlap), processed once more for each time its commit did not happen,
    and each processing saw the value stored at its offset."""
    values = {(int(w[1]), int(w[2])): w[3] for m in members for w in list(m.lines) if w[0] == "processed"}
    assert values == stored
    commits = collections.Counter((p, o) for _, p, o in events(members, "committed"))
    assert set(commits) == set(stored) and set(commits.values()) == {1}
    for partition in range(PARTITIONS):
        offsets = sorted(o for p, o in stored if p == partition)
        assert offsets == list(range(len(offsets)))  # the log's offsets: no gap
    processings = collections.Counter((p, o) for _, p, o in events(members, "processed"))
    unconfirmed = collections.Counter((p, o) for _, p, o in events(members, "failed") + events(members, "holding"))
    for at, times in processings.items():
        assert times == 1 + unconfirmed[at], f"{at} processed {times} times, {unconfirmed[at]} without its commit"


@pytest.mark.slow
@pytest.mark.parametrize("library", LIBRARIES)
def test_a_three_member_group_reads_exactly_once_through_a_killed_member_and_a_server_restart(tmp_path, library):
    script = tmp_path / "member.py"
    script.write_text(WORKER)
    port = free_ports(3)
    serve = Serve(tmp_path / "serve", port)
    members: list[Member] = []
    try:
        members = [Member(script, library, serve.bootstrap, tmp_path / f"hold-{m}") for m in range(3)]
        wait_for(lambda: sorted(len(m.assignment() or []) for m in members) == [2, 2, 2], 90, "2 partitions each")
        assert sorted(p for m in members for p in m.assignment() or []) == list(range(PARTITIONS))

        # 1. A stream while all three members run.
        stored = produce_numbered(serve.bootstrap, 0, 60)
        wait_for(lambda: confirmed(members) == set(stored), 60, "the first messages, committed")
        check_exactly_once(members, stored)

        # 2. Mid-stream, one member stops after processing a message and before committing it;
        # it is killed (no LeaveGroup) while the stream goes on: after the session timeout
        # the survivors take its partitions over from its committed offsets.
        victim, survivors = members[0], members[1:]
        victim_partitions = victim.assignment()
        assert victim_partitions is not None
        committed_by_victim = {p: max((o + 1 for _, q, o in events([victim], "committed") if q == p), default=0)
                               for p in victim_partitions}  # fmt: skip
        victim.hold.touch()
        stream = threading.Thread(target=lambda: stored.update(produce_numbered(serve.bootstrap, 60, 120, 0.02)))
        stream.start()
        wait_for(lambda: bool(events([victim], "holding")), 30, "the victim to hold a message")
        victim.kill()
        stream.join(60)
        assert not stream.is_alive() and len(stored) == 180
        wait_for(lambda: confirmed(members) == set(stored), 90, "the takeover, every message committed")
        check_exactly_once(members, stored)
        [(_, held_partition, held_offset)] = events([victim], "holding")
        assert held_offset == committed_by_victim[held_partition]  # the uncommitted tail: that one message
        assert sorted(p for m in survivors for p in m.assignment() or []) == list(range(PARTITIONS))
        for partition in victim_partitions:
            first_taken = min(o for _, p, o in events(survivors, "processed") if p == partition)
            assert first_taken == committed_by_victim[partition]  # from the committed offset, the held one again

        # 3. The server is killed with SIGKILL and restarted on the same directory and ports;
        # the survivors stay and go on from the group's committed offsets: nothing read again.
        time.sleep(1)  # quiet: nothing processed without its commit
        before = [len(m.lines) for m in survivors]
        serve.kill()
        serve = Serve(tmp_path / "serve", port)
        more = produce_numbered(serve.bootstrap, 180, 60)
        assert set(more).isdisjoint(stored)  # the log kept its offsets
        stored.update(more)
        wait_for(lambda: confirmed(members) == set(stored), 90, "the messages after the restart, committed")
        check_exactly_once(members, stored)
        after = [(int(w[1]), int(w[2])) for m, start in zip(survivors, before, strict=True) for w in m.lines[start:]
                 if w[0] == "processed"]  # fmt: skip
        assert set(after) == set(more), "after the restart the group should read what is new, and only that"
    except AssertionError as error:  # what the members and the server said, for the reader of the failure
        said = "\n".join(f"member {m}: last lines {member.lines[-5:]}; stderr: {member.stderr.read_text()[-1500:]}"
                         for m, member in enumerate(members))  # fmt: skip
        raise AssertionError(f"{error}\n{said}\nserve stderr: {serve.stderr.read_text()[-1500:]}") from error
    finally:
        for member in members:
            member.stop()
        serve.kill()


def test_the_exactly_once_check_refuses_a_redelivery_after_a_commit_and_a_gap():
    stored = {(0, 0): "m-0", (0, 1): "m-1"}
    fine = Printed("processed 0 0 m-0", "committed 0 0", "processed 0 1 m-1", "failed 0 1 REBALANCE_IN_PROGRESS",
                   "processed 0 1 m-1", "committed 0 1")  # fmt: skip
    check_exactly_once([fine], stored)
    read_twice = Printed("processed 0 0 m-0", "committed 0 0", "processed 0 1 m-1", "committed 0 1")
    again = Printed("processed 0 1 m-1", "committed 0 1")  # committed, yet delivered to another member
    with pytest.raises(AssertionError):
        check_exactly_once([read_twice, again], stored)
    redelivered = Printed("processed 0 0 m-0", "committed 0 0", "processed 0 0 m-0", "processed 0 1 m-1",
                          "committed 0 1")  # fmt: skip
    with pytest.raises(AssertionError):
        check_exactly_once([redelivered], stored)
    with pytest.raises(AssertionError):  # offset 1 never committed
        check_exactly_once([Printed("processed 0 0 m-0", "committed 0 0", "processed 0 1 m-1")], stored)
