"""Transactions through ``python -m dedup serve`` (issue 15): librdkafka's transactional producer
against its idempotent one, and the transaction coordinator's recovery of 100,000 ids.

**Throughput.** One ``serve`` process per broker count (1, and 3 with replication factor 3);
against it, in alternating rounds (the order of the three modes reversed every other round, so
that a drift of the shared machine's load falls on every mode alike), librdkafka (confluent-kafka)
sends ``MESSAGES`` 1 KiB values to one partition: ``enable.idempotence=true`` with ``acks=all``,
then ``transactional.id`` with transactions of 100 and of 1,000 messages (``begin_transaction``,
the messages, ``commit_transaction``: AddPartitionsToTxn, the produce requests, EndTxn and the
COMMIT markers Kafka's ``TransactionCoordinator`` writes). Every mode uses librdkafka's defaults
otherwise, ``linger.ms`` 5 as in ``test_bench_serve.py``. Per cell: MB/s (values), messages/s,
the server's CPU time per message (utime + stime of the ``serve`` process from ``/proc``, over
the round), and the ratio transactional / idempotent of the same round pair.

**Recovery.** ``__transaction_state`` is filled with ``IDS`` transactional ids, written in Kafka's
record format by the coordinator's own writer (``transaction_log.encode_key``/``encode_value``:
``TransactionLog.keyToBytes``/``valueToBytes``), each id in its partition
(``TransactionStateManager.partitionFor``), batches of ``WRITE_BATCH`` records appended with
acks=all by the partition's ``Cluster``, as ``TransactionLog.append`` appends one. Then, each in a
fresh process: ``serve`` restarted on the directory until a librdkafka producer with one of the
ids has ``init_transactions`` answered (FindCoordinator, then InitProducerId: the coordinator
must have loaded the id's partition, COORDINATOR_LOAD_IN_PROGRESS before), against the same with
a directory of one id (the fixed cost: interpreter, log recovery, librdkafka's connection);
and the load alone (``TransactionLog.replay`` over every partition, Kafka's
``loadTransactionMetadata``), with records per second and the RSS it adds.

Run: ``python -m pytest benchmarks/test_bench_transactions.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")

from test_bench_serve import Served  # noqa: E402

MESSAGE_BYTES = 1024
MESSAGES = 100_000
ROUNDS = 5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")

#: (label, messages per transaction; None: idempotent, no transactions)
MODES = [("idempotent", None), ("transactions of 100", 100), ("transactions of 1,000", 1000)]


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (``/proc/<pid>/stat`` fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def send(producer, value: bytes, count: int, failed: list) -> None:
    for _ in range(count):
        while True:
            try:
                producer.produce("bench", value=value, on_delivery=lambda e, m: failed.append(e) if e else None)
                break
            except BufferError:  # the local queue is full: let deliveries drain
                producer.poll(0.001)
        producer.poll(0)


def produce_round(bootstrap: str, transaction: int | None, name: str) -> float:
    """Seconds to have ``MESSAGES`` messages acknowledged (idempotent) or committed in
    transactions of ``transaction`` messages (``transactional.id`` ``name``); the producer's
    start and a warm-up message are outside the timed part."""
    config = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    if transaction is not None:
        config["transactional.id"] = name
    producer = confluent_kafka.Producer(config)
    value = os.urandom(MESSAGE_BYTES)
    failed: list = []
    if transaction is None:
        producer.produce("bench", value=b"warm-up")
        assert producer.flush(30) == 0
        started = time.perf_counter()
        send(producer, value, MESSAGES, failed)
        assert producer.flush(120) == 0
    else:
        producer.init_transactions(60)
        producer.begin_transaction()
        producer.produce("bench", value=b"warm-up")
        producer.commit_transaction(60)
        started = time.perf_counter()
        for _ in range(MESSAGES // transaction):
            producer.begin_transaction()
            send(producer, value, transaction, failed)
            producer.commit_transaction(120)  # flushes, then EndTxn(commit)
    seconds = time.perf_counter() - started
    assert not failed, failed[:3]
    return seconds


@pytest.mark.parametrize("brokers", [1, 3])
def test_bench_serve_transactional_vs_idempotent(kit, brokers):
    """``ROUNDS`` rounds of the three modes, the order reversed every other round; per mode the
    best round's MB/s and messages/s, the median of the server's CPU per message, and the
    median over rounds of the per-round ratio transactional / idempotent (messages/s)."""
    served = Served(brokers)
    seconds: dict[str, list[float]] = {label: [] for label, _ in MODES}
    cpu: dict[str, list[float]] = {label: [] for label, _ in MODES}
    loads = [os.getloadavg()[0]]
    try:
        for round_ in range(ROUNDS):
            order = MODES if round_ % 2 == 0 else MODES[::-1]
            for label, transaction in order:
                before = cpu_seconds(served.process.pid)
                seconds[label].append(produce_round(served.bootstrap, transaction, f"bench-{round_}-{label}"))
                cpu[label].append((cpu_seconds(served.process.pid) - before) / MESSAGES)
            loads.append(os.getloadavg()[0])
    finally:
        served.stop()
    for label, transaction in MODES:
        best = min(seconds[label])
        numbers = {
            "mb_per_s": MESSAGES * MESSAGE_BYTES / best / 1e6,
            "messages_per_s": MESSAGES / best,
            "messages_per_s_median": MESSAGES / sorted(seconds[label])[ROUNDS // 2],
            "server_cpu_us_per_message": 1e6 * sorted(cpu[label])[ROUNDS // 2],
            "load_min": min(loads),
            "load_max": max(loads),
        }
        if transaction is not None:
            ratios = sorted(i / t for i, t in zip(seconds["idempotent"], seconds[label], strict=True))
            numbers["ratio_to_idempotent_median"] = ratios[ROUNDS // 2]
            numbers["ratio_to_idempotent_min"] = ratios[0]
            numbers["ratio_to_idempotent_max"] = ratios[-1]
        kit.record(None, f"serve transactions, librdkafka, {brokers} broker(s), {label}", **numbers)


# --- the coordinator's recovery ------------------------------------------------------------------

IDS = 100_000
WRITE_BATCH = 1000

#: Fills ``__transaction_state`` of a new directory with ``ids`` transactional ids
#: (``bench-txn-<i>``): half Empty (an id after InitProducerId), half CompleteCommit with no
#: partitions (after a commit), epochs 0-9, as TransactionLogValue v0 records.
WRITER = """
import asyncio, json, sys, time
from dedup.batch import encode_batch
from dedup.coordinator.transaction_log import TransactionLogValue, encode_key, encode_value
from dedup.coordinator.transaction_metadata import TransactionState
from dedup.server.core import KafkaServer

directory, brokers, ids, write_batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

async def main():
    server = KafkaServer(brokers=brokers, topics=["bench"], directory=directory)
    log = server.transactions.log
    now = int(time.time() * 1000)
    records = {}
    for i in range(ids):
        transactional_id = f"bench-txn-{i}"
        status = TransactionState.EMPTY if i % 2 == 0 else TransactionState.COMPLETE_COMMIT
        value = TransactionLogValue(1_000_000 + i, i % 10, 60_000, status.id,
                                    None if status == TransactionState.EMPTY else (), now, now)
        records.setdefault(log.partition_for(transactional_id), []).append(
            (encode_key(transactional_id), encode_value(value)))
    started = time.perf_counter()
    written = 0
    for partition, pairs in sorted(records.items()):
        cluster = log.storage.partition(partition)
        for start in range(0, len(pairs), write_batch):
            chunk = pairs[start:start + write_batch]
            batch = encode_batch([v for _, v in chunk], keys=[k for k, _ in chunk], timestamp=now)
            response = cluster.produce(batch, acks="all")
            assert response.error is None, response.error
            written += len(chunk)
    seconds = time.perf_counter() - started
    await server.close()
    print(json.dumps({"written": written, "partitions": len(records), "seconds": seconds}), flush=True)

asyncio.run(main())
"""

#: In a fresh process: the server built on the directory (its logs recovered, nothing served),
#: then ``TransactionLog.replay`` of every ``__transaction_state`` partition, timed alone, with
#: the RSS before and after; ``profile``: under cProfile, the top functions printed to stderr.
LOADER = """
import asyncio, cProfile, json, pstats, sys, time

def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

from dedup.server.core import KafkaServer

directory, brokers, profile = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"

async def main():
    started = time.perf_counter()
    server = KafkaServer(brokers=brokers, topics=["bench"], directory=directory)
    opened = time.perf_counter() - started
    coordinator = server.transactions
    clusters = [(index, coordinator.storage.partition(index)) for index in coordinator.storage.created()]
    before = rss()
    profiler = cProfile.Profile() if profile else None
    loaded = {}
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    for index, cluster in clusters:
        loaded.update(coordinator.log.replay(index, cluster))
    if profiler:
        profiler.disable()
    seconds = time.perf_counter() - started
    after = rss()
    records = sum(cluster.high_watermark - cluster.leader_log.log_start_offset for _, cluster in clusters)
    sample = loaded["bench-txn-77"]
    print(json.dumps({"opened": opened, "seconds": seconds, "ids": len(loaded), "records": records,
                      "partitions": len(clusters), "rss_before": before, "rss_after": after,
                      "sample": [sample.producer_id, sample.producer_epoch, sample.state.state_name]}), flush=True)
    if profiler:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(15)
    await server.close()

asyncio.run(main())
"""


def python(script: str, *args: object, timeout: float = 600) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # cwd: ``-c`` puts the working directory first on sys.path, ahead of PYTHONPATH
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    if done.stderr.strip():
        sys.stderr.write(done.stderr)
    return json.loads(done.stdout.splitlines()[-1])


def restart_until_initialised(directory: str, brokers: int, transactional_id: str) -> dict[str, float]:
    """``serve`` started on ``directory``; seconds from the start to the bootstrap line, and to a
    librdkafka producer with ``transactional_id`` having ``init_transactions`` answered."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "dedup", "serve", "--port", "0", "--brokers", str(brokers), "--dir", directory,
         "--topic=bench"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        listening = time.perf_counter() - started
        match = re.fullmatch(r"bootstrap\.servers=(\S+)\n", line)
        assert match, (line, process.stderr.read())
        producer = confluent_kafka.Producer(
            {"bootstrap.servers": match.group(1), "transactional.id": transactional_id, "acks": "all"}
        )
        producer.init_transactions(120)  # retried by librdkafka on COORDINATOR_LOAD_IN_PROGRESS
        answered = time.perf_counter() - started
        producer.begin_transaction()  # the id works: a transaction commits after the restart
        producer.produce("bench", value=b"after restart")
        producer.commit_transaction(60)
    finally:
        process.send_signal(2)
        try:
            process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
    return {"listening": listening, "answered": answered}


@pytest.mark.parametrize("brokers", [1, 3])
def test_bench_transaction_coordinator_recovery(kit, brokers):
    """``IDS`` ids against 1 id, restarted alternately (three pairs, the order swapped every
    other pair; medians recorded), then the load alone in three fresh processes (the best
    recorded, the worst beside it), and the records per second it gives."""
    with tempfile.TemporaryDirectory(prefix="dedup-bench-txnload-") as base:
        full, empty = os.path.join(base, "full"), os.path.join(base, "one")
        wrote = python(WRITER, full, brokers, IDS, WRITE_BATCH)
        assert wrote["written"] == IDS, wrote
        python(WRITER, empty, brokers, 1, WRITE_BATCH)
        restarts: dict[str, list[dict[str, float]]] = {"full": [], "one": []}
        loads = [os.getloadavg()[0]]
        for round_ in range(3):
            for name in ("full", "one") if round_ % 2 == 0 else ("one", "full"):
                directory = full if name == "full" else empty
                restarts[name].append(restart_until_initialised(directory, brokers, f"bench-txn-{round_}"))
            loads.append(os.getloadavg()[0])
        replays = [python(LOADER, full, brokers, 0) for _ in range(3)]
        loads.append(os.getloadavg()[0])
    for replay in replays:
        # every id, none lost: the latest record per key; id 77: producer id 1,000,077, epoch 7,
        # CompleteCommit, as written (restarts bumped the epochs of ids 0-2 only)
        assert replay["ids"] == IDS, replay
        assert replay["sample"] == [1_000_077, 7, "CompleteCommit"], replay
    best = min(replays, key=lambda r: r["seconds"])
    answered = {name: sorted(r["answered"] for r in runs) for name, runs in restarts.items()}
    listening = {name: sorted(r["listening"] for r in runs) for name, runs in restarts.items()}
    kit.record(
        None, f"coordinator recovery, {IDS:,} transactional ids, {brokers} broker(s)",
        restart_to_init_s=answered["full"][1],
        restart_to_init_s_one_id=answered["one"][1],
        restart_to_listening_s=listening["full"][1],
        restart_to_listening_s_one_id=listening["one"][1],
        load_s=best["seconds"],
        load_records_per_s=best["records"] / best["seconds"],
        load_s_worst=max(r["seconds"] for r in replays),
        open_s=best["opened"],
        rss_added_mb=(best["rss_after"] - best["rss_before"]) / 2**20,
        rss_mb=best["rss_after"] / 2**20,
        records=best["records"],
        load_min=min(loads),
        load_max=max(loads),
    )  # fmt: skip
