"""Exactly-once with real clients, end to end (issue 15, the first "Done when" test).

A transactional application (librdkafka through confluent-kafka, or aiokafka) writes 2,000
records in transactions of 10 over the two partitions of ``clicks`` on a 3-broker
``ServerThread`` that drops 15% of its produce responses after the append (the producer
retries what is already stored). The application is a child process: it is killed with SIGKILL
twice, each time with a transaction written but not committed, and restarted with the same
``transactional.id``. Each instance first calls InitProducerId (which fences the previous one and
aborts its open transaction), then asks a ``read_committed`` consumer what is committed, and
resumes after it, as a real application resumes from its input offsets. Meanwhile the leader of
``clicks-0`` crashes and restarts.

Then a ``read_committed`` consumer reads every record exactly once and none of the killed
instances' uncommitted transactions; a ``read_uncommitted`` consumer reads those too (the
control: the check can fail). Each record's key names the instance and attempt that wrote it,
so an aborted copy is told from the committed one with the same value.

The module is also the application: ``python test_server_exactly_once.py CLIENT BOOTSTRAP TID``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

TOPIC = "clicks"
PARTITIONS = 2
RECORDS = 2000
PER_TRANSACTION = 10
KILLS = (500, 1300)  # SIGKILL once an instance has flushed, not committed, the transaction ending here
LEADER_CRASH = (800, 1000)  # the leader of clicks-0 stops after this many are committed, restarts after that
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def value(number: int) -> bytes:
    return b"record-%05d" % number


# --- the application (a child process) ---------------------------------------------------------------------


def committed_confluent(bootstrap: str) -> set[bytes]:
    """What a read_committed consumer reads from the start of both partitions to their ends."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "resume", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True})  # fmt: skip
    consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    values: set[bytes] = set()
    ended: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while len(ended) < PARTITIONS:
            if time.monotonic() > deadline:
                raise TimeoutError("the read_committed consumer did not reach the end of the partitions")
            for message in consumer.consume(100, 0.5):
                error = message.error()
                if error is None:
                    values.add(message.value())
                elif error.code() == KafkaError._PARTITION_EOF:
                    ended.add(message.partition())
    finally:
        consumer.close()
    return values


def pause(sent: int, pause_at: int) -> None:
    """Tell the parent what is written; at ``pause_at`` wait (bounded) to be killed before the commit."""
    print("sent", sent, flush=True)
    if sent == pause_at:
        time.sleep(60)


def run_confluent(bootstrap: str, tid: str, pause_at: int) -> None:
    from confluent_kafka import KafkaException, Producer

    incarnation = os.getpid()
    producer = Producer({
        "bootstrap.servers": bootstrap, "transactional.id": tid, "linger.ms": 5, "acks": "all",
        "retry.backoff.ms": 20, "reconnect.backoff.ms": 20, "reconnect.backoff.max.ms": 200,
        "log.connection.close": False, "log_level": 0, "message.timeout.ms": 60000,
    })  # fmt: skip
    producer.init_transactions(60)  # fences the previous instance; its open transaction is aborted
    start = resume_point(committed_confluent(bootstrap))
    print("resumed", start, flush=True)
    failed: list[object] = []  # the delivery errors of the current attempt
    for first in range(start, RECORDS, PER_TRANSACTION):
        for attempt in range(20):
            producer.begin_transaction()
            failed.clear()
            for number in range(first, first + PER_TRANSACTION):
                producer.produce(TOPIC, key=f"{incarnation}-{attempt}", value=value(number), partition=number % 2,
                                 on_delivery=lambda error, _: failed.append(error) if error else None)  # fmt: skip
            try:
                if producer.flush(60) or failed:
                    raise KafkaException(failed[0] if failed else "flush timed out")
                pause(first + PER_TRANSACTION, pause_at)
                commit_confluent(producer)
                break
            except KafkaException as error:
                if not error.args[0].txn_requires_abort():
                    raise
                producer.abort_transaction(60)
        else:
            raise RuntimeError(f"the transaction ending at {first + PER_TRANSACTION} never committed")
        print("committed", first + PER_TRANSACTION, flush=True)


def commit_confluent(producer: object) -> None:
    from confluent_kafka import KafkaException

    for _ in range(20):
        try:
            producer.commit_transaction(60)  # type: ignore[attr-defined]
            return
        except KafkaException as error:
            if not error.args[0].retriable():
                raise
            time.sleep(0.1)
    raise RuntimeError("commit_transaction kept failing with retriable errors")


async def committed_aiokafka(bootstrap: str) -> set[bytes]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        partitions = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)  # read_committed: the last stable offsets
        values: set[bytes] = set()
        deadline = time.monotonic() + 60
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise TimeoutError("the read_committed consumer did not reach the end of the partitions")
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values.update(record.value for record in records if record.value is not None)
        return values
    finally:
        await consumer.stop()


async def run_aiokafka(bootstrap: str, tid: str, pause_at: int) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    incarnation = os.getpid()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=tid, enable_idempotence=True,
                                linger_ms=5, retry_backoff_ms=20, request_timeout_ms=5000)  # fmt: skip
    await producer.start()  # InitProducerId: fences the previous instance, its open transaction aborted
    try:
        start = resume_point(await committed_aiokafka(bootstrap))
        print("resumed", start, flush=True)
        for first in range(start, RECORDS, PER_TRANSACTION):
            for attempt in range(20):
                try:
                    async with producer.transaction():  # aborted if the block raises
                        sent = [
                            await producer.send(
                                TOPIC, key=f"{incarnation}-{attempt}".encode(), value=value(n), partition=n % 2
                            )
                            for n in range(first, first + PER_TRANSACTION)
                        ]
                        await asyncio.gather(*sent)
                        pause(first + PER_TRANSACTION, pause_at)
                    break
                except KafkaError as error:
                    print(f"retrying the transaction ending at {first + PER_TRANSACTION}: {error!r}",
                          file=sys.stderr, flush=True)  # fmt: skip
            else:
                raise RuntimeError(f"the transaction ending at {first + PER_TRANSACTION} never committed")
            print("committed", first + PER_TRANSACTION, flush=True)
    finally:
        await producer.stop()


def resume_point(committed: set[bytes]) -> int:
    """Where to resume: the committed records must be whole transactions from the first record."""
    start = len(committed)
    if committed != {value(n) for n in range(start)} or start % PER_TRANSACTION:
        raise RuntimeError(f"the committed records are not a prefix of whole transactions: {sorted(committed)[:5]}")
    return start


# --- the test ---------------------------------------------------------------------------------------------------


class Application:
    """The application in a child process; a thread collects the numbers it prints."""

    def __init__(self, client: str, bootstrap: str, tid: str, pause_at: int) -> None:
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__), client, bootstrap, tid,
                                         str(pause_at)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
        self.resumed: int | None = None
        self.sent = self.committed = 0
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.process.stderr), daemon=True).start()  # type: ignore[arg-type]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event, number = line.split()
            if event == "resumed":
                self.resumed = int(number)
            elif event == "sent":
                self.sent = int(number)
            elif event == "committed":
                self.committed = int(number)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)


def read_all(bootstrap: str, isolation: str) -> list[tuple[bytes, bytes]]:
    """(key, value) of every record a consumer with ``isolation`` reads from both partitions."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False,
                         "isolation.level": isolation, "enable.partition.eof": True})  # fmt: skip
    consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    records: list[tuple[bytes, bytes]] = []
    ended: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while len(ended) < PARTITIONS:
            assert time.monotonic() < deadline, f"the {isolation} consumer did not reach the end"
            for message in consumer.consume(500, 0.5):
                error = message.error()
                if error is None:
                    records.append((message.key(), message.value()))
                elif error.code() == KafkaError._PARTITION_EOF:
                    ended.add(message.partition())
                else:
                    raise AssertionError(f"{isolation} consumer: {error}")
    finally:
        consumer.close()
    return records


@pytest.mark.slow
@pytest.mark.parametrize("client", ["confluent", "aiokafka"])
def test_every_record_exactly_once_through_dropped_responses_a_leader_crash_and_two_kills(tmp_path, client):
    pytest.importorskip("confluent_kafka")  # the checking consumers
    pytest.importorskip(client if client == "aiokafka" else "confluent_kafka")
    from dedup.server import Faults, ServerThread

    for name in ("dedup.server", "dedup.log", "dedup.cluster", "dedup.coordinator"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    faults = Faults(drop_responses=0.15, seed=15)
    tid = f"exactly-once-{client}"
    with ServerThread(tmp_path, brokers=3, topics=[(TOPIC, PARTITIONS)], faults=faults,
                      transaction_state_log_num_partitions=3) as server:  # fmt: skip
        bootstrap = server.bootstrap_servers
        killed: list[tuple[int, str]] = []  # (the last record of the transaction cut short, its instance's key)
        crashed: int | None = None
        restarted = False
        deadline = time.monotonic() + 480
        app = Application(client, bootstrap, tid, KILLS[0])
        resumed: list[int | None] = []
        try:
            while True:
                assert time.monotonic() < deadline, f"the application stalled at {app.committed}: {app.stderr[-5:]}"
                if len(killed) < len(KILLS) and app.sent == KILLS[len(killed)]:
                    app.kill()  # paused with the transaction ending at app.sent written, its EndTxn never sent
                    killed.append((app.sent, str(app.process.pid)))
                    resumed.append(app.resumed)
                    pause_at = KILLS[len(killed)] if len(killed) < len(KILLS) else -1
                    app = Application(client, bootstrap, tid, pause_at)
                    continue
                if crashed is None and app.committed >= LEADER_CRASH[0]:
                    crashed = server.stop_leader(TOPIC, 0)
                elif crashed is not None and not restarted and app.committed >= LEADER_CRASH[1]:
                    server.start_broker(crashed)
                    restarted = True
                if app.process.poll() is not None:
                    time.sleep(0.2)  # its last lines
                    break
                time.sleep(0.01)
            assert app.process.returncode == 0, "".join(app.stderr[-20:])
            resumed.append(app.resumed)
        finally:
            if app.process.poll() is None:
                app.kill()
        assert app.committed == RECORDS and len(killed) == 2 and restarted and faults.dropped > 0
        # each instance resumed after the last commit it could read: the cut transaction was not
        assert resumed == [0, KILLS[0] - PER_TRANSACTION, KILLS[1] - PER_TRANSACTION]

        committed = read_all(bootstrap, "read_committed")
        uncommitted = read_all(bootstrap, "read_uncommitted")

    counts = Counter(v for _, v in committed)
    assert sorted(counts) == [value(n) for n in range(RECORDS)]  # every record ...
    assert set(counts.values()) == {1}  # ... exactly once
    for last, instance in killed:  # the killed instances' uncommitted transactions: aborted, not read
        cut = {(k, value(n)) for k, v in uncommitted for n in range(last - PER_TRANSACTION, last)
               if v == value(n) and k.decode().startswith(instance + "-")}  # fmt: skip
        assert len(cut) == PER_TRANSACTION, (last, instance)
        assert not cut & set(committed)
    # The control: the read_uncommitted consumer sees the aborted copies, so the check above can fail.
    assert len(uncommitted) >= RECORDS + len(KILLS) * PER_TRANSACTION
    assert Counter(v for _, v in uncommitted) != counts


if __name__ == "__main__":
    client_name, bootstrap_servers, transactional_id, pause_at = sys.argv[1:5]
    if client_name == "confluent":
        run_confluent(bootstrap_servers, transactional_id, int(pause_at))
    else:
        asyncio.run(run_aiokafka(bootstrap_servers, transactional_id, int(pause_at)))
