"""Partitions on cores (issue 18 item 4): throughput against threads, one partition per thread.

Partitions are independent: each has its own producer-state table and its own log, and the
compiled core releases the GIL in its bulk loops (``append_many``, ``append_batches``, the scan
and CRC of ``validate_batches``, ``copy``, ``update_from``, the CRC of a batch of 8 KiB or more
in ``check_one_batch``). N partitions on N threads of one process then run on N cores as far
as the work done with the GIL held (the Python around each call) allows. Measured here for N
from 1 to ``os.cpu_count()``, in alternating rounds (N=1, N=2, ..., N=1, ...), the best round
of each N kept, since other processes share the machine:

- (a) ``ProducerStateTable.append_many`` on N tables (10,000 and 1,000,000 producers each, every producer
  holding an entry before timing starts), calls of 100,000 batches at random, each producer in
  sequence;
- (b) ``PartitionLog.append_as_leader`` on N logs (files in a temporary directory, fsync off as
  in ``test_bench_log.py``), 1 KiB client batches of 10,000 producers, 1 batch per call (a
  produce request's usual content: the log's one-batch path) and 256 per call (the path
  through ``append_batches``).

Each N also gets where its threads spent the round (Linux schedstat): on a CPU, runnable but
waiting for a CPU (the machine's other load), asleep (waiting for the GIL, or in I/O); and the
work done per CPU-second against N=1's (below 1: the threads slow each other: the GIL, the
memory system). Beside each, the time per call spent with the GIL held, measured on one
thread: for (a) the Python boundary of ``append_many`` (argument checks, output arrays, the
result) timed on its own, against the whole call; for (b) the call against ``os.pwrite`` of the same bytes and the
compiled kernels of the call, timed on their own (the rest holds the GIL). Amdahl's law with
that share gives the speed-up the GIL allows, printed beside the measured one.

Run: ``python -m pytest benchmarks/test_bench_cores.py -s -p no:cacheprovider``; the lines
``cores: ...`` give N=1 and N=2 (up to ``os.cpu_count()``) side by side. Targets are not
asserted: a shared 2-core machine cannot promise a second core.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time

import numpy as np
import pytest
from test_bench_log import BATCH_BYTES, RECORDS_PER_BATCH, BatchStream
from test_bench_log import PRODUCERS as LOG_PRODUCERS

from dedup import PartitionLog, _args, validate_batches
from dedup.records import append_batches
from dedup.tools.bench_report import cpu_model, kernels

#: N = 1 .. os.cpu_count() (every N up to 8, then powers of two and the count itself).
CPUS = os.cpu_count() or 1
THREADS = sorted({n for n in range(1, min(CPUS, 8) + 1)} | {1 << k for k in range(CPUS.bit_length()) if 1 << k <= CPUS}
                 | {CPUS})  # fmt: skip
ROUNDS = 15
WAIT_S = 600.0

# (a) append_many
PRODUCERS = 1_000_000  # per partition at most; fewer if the machine's memory says so (see producers_per_table)
TABLE_BYTES_PER_PRODUCER = 200  # presized 127 B, grown up to ~170 B: a margin for the estimate
CALLS_PER_ROUND = 6  # calls of CALL_ROWS rows per thread per round (about 0.1 s at 1M producers)
STREAM_CALLS = 8  # distinct calls built per partition; later passes raise the sequences

# (b) PartitionLog.append_as_leader
LOG_PER_CALL = (1, 256)
LOG_ROUND_BYTES = 4 << 20  # per thread per round
SEGMENT_BYTES = 256 << 20


def producers_per_table() -> int:
    """PRODUCERS, or as many as a table per thread can hold in a third of the free memory."""
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return PRODUCERS
    fits = free // 3 // (max(THREADS) * TABLE_BYTES_PER_PRODUCER)
    return int(min(PRODUCERS, max(10_000, fits)))


def schedstat() -> tuple[float, float]:
    """The calling thread's seconds on a CPU and seconds runnable but waiting for one (Linux's
    /proc/thread-self/schedstat); (thread CPU time, 0) where there is no such file. A thread
    waiting for the GIL is asleep, in neither."""
    try:
        with open("/proc/thread-self/schedstat") as stat:
            run_ns, wait_ns = stat.read().split()[:2]
        return int(run_ns) / 1e9, int(wait_ns) / 1e9
    except OSError:
        return time.thread_time(), 0.0


def run_threads(n: int, work) -> tuple[float, list[tuple[float, float]]]:
    """Run ``work(i)`` for i in [0, n) on n threads started together; (wall seconds from the
    start to the last thread's end, each thread's (seconds on a CPU, seconds waiting for one))."""
    start = threading.Barrier(n + 1)
    used = [(0.0, 0.0)] * n
    errors: list[BaseException] = []

    def body(i):
        try:
            start.wait(WAIT_S)
            run, wait = schedstat()
            work(i)
            run_after, wait_after = schedstat()
            used[i] = (run_after - run, wait_after - wait)
        except BaseException as error:  # noqa: BLE001 - re-raised on the main thread
            errors.append(error)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    start.wait(WAIT_S)
    began = time.perf_counter()
    for thread in threads:
        thread.join(WAIT_S)
    wall = time.perf_counter() - began
    assert not any(thread.is_alive() for thread in threads), "a partition's thread did not finish"
    if errors:
        raise errors[0]
    return wall, used


def alternate(rounds: int, prepare, work, units_per_thread: float) -> dict[int, dict[str, float]]:
    """Rounds of every N in turn. Per N, from the best round (highest throughput): units per
    second (all threads), CPU seconds per wall second (cores busy), the share of the threads'
    time spent runnable but without a CPU (the machine's other load) and asleep (waiting for
    the GIL, or in I/O); the median round's throughput; the most units per CPU-second of any
    round (the work a core does, whatever the machine's load)."""
    rates: dict[int, list[tuple[float, ...]]] = {n: [] for n in THREADS}
    for _ in range(rounds):
        for n in THREADS:
            payload = [prepare(i) for i in range(n)]  # outside the timed region
            wall, used = run_threads(n, lambda i: work(i, payload[i]))  # noqa: B023 - used at once
            run, wait = sum(u[0] for u in used), sum(u[1] for u in used)
            rates[n].append((n * units_per_thread / wall, run / wall, wait / (n * wall),
                             max(0.0, 1 - (run + wait) / (n * wall)), n * units_per_thread / max(run, 1e-9)))
    out = {}
    for n, values in rates.items():
        best = max(values)
        out[n] = {"per_s_best": best[0], "per_s_median": float(np.median([v[0] for v in values])),
                  "cores_busy_best_round": best[1], "waiting_for_a_cpu_best_round": best[2],
                  "asleep_best_round": best[3], "per_cpu_s_best": max(v[4] for v in values)}  # fmt: skip
    return out


def amdahl(held_share: float, n: int) -> float:
    """The speed-up of n threads when `held_share` of each call's time holds the GIL."""
    return 1.0 / (held_share + (1.0 - held_share) / n)


def best_of(function, repeat: int = 7) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - began)
    return best


def side_by_side(kit, what: str, unit: str, scaling: dict[int, dict[str, float]], held_share: float | None,
                 scale: float = 1e6, shown: str = "M ") -> None:
    """Record and print one workload's line: N=1, N=2, ... with the speed-up over N=1
    (throughputs in ``unit`` per second, printed divided by ``scale``)."""
    one = scaling[1]["per_s_best"]
    numbers: dict[str, float] = {} if held_share is None else {"gil_held_share_one_thread": held_share}
    cells = []
    for n, row in scaling.items():
        speedup = row["per_s_best"] / one
        numbers[f"N{n}_{unit}_per_s_best"] = row["per_s_best"]
        numbers[f"N{n}_{unit}_per_s_median"] = row["per_s_median"]
        numbers[f"N{n}_speedup"] = speedup
        allows = ""
        if held_share is not None:
            numbers[f"N{n}_speedup_gil_allows"] = amdahl(held_share, n)
            allows = f"; GIL allows x{amdahl(held_share, n):.2f}"
        numbers[f"N{n}_cores_busy"] = row["cores_busy_best_round"]
        extra = ""
        if "per_cpu_s_best" in row:
            per_cpu = row["per_cpu_s_best"] / scaling[1]["per_cpu_s_best"]
            numbers[f"N{n}_waiting_for_a_cpu"] = row["waiting_for_a_cpu_best_round"]
            numbers[f"N{n}_asleep"] = row["asleep_best_round"]
            numbers[f"N{n}_{unit}_per_cpu_s_best"] = row["per_cpu_s_best"]
            extra = (f", {row['waiting_for_a_cpu_best_round']:.0%} waiting for a CPU, "
                     f"{row['asleep_best_round']:.0%} asleep (GIL, I/O); per CPU-second x{per_cpu:.2f}")
        cells.append(f"N={n} {row['per_s_best'] / scale:,.2f}{shown}{unit}/s (x{speedup:.2f}{allows}; "
                     f"{row['cores_busy_best_round']:.2f} cores busy{extra})")  # fmt: skip
    kit.record(None, f"cores: {what}", **numbers)
    held = "" if held_share is None else f" | GIL held {held_share:.1%} of a call on one thread"
    print(f"\ncores: {what}: " + " | ".join(cells) + held)


@pytest.fixture(scope="module", autouse=True)
def header(kit):
    kit.compiled_table()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\ncores: {cpu_model()}, {CPUS} CPUs, threads {THREADS}, kernels: {kernels()}; load average {load} "
          f"(a shared machine: best of {ROUNDS} alternating rounds)")  # fmt: skip


# --- (a) append_many on N tables --------------------------------------------------------------


class Partition:
    """One table and its stream; :meth:`next_calls` hands out the arguments of the next calls,
    passes after the first raising every base sequence by the producer's batches per pass."""

    def __init__(self, kit, table_class, producers: int, seed: int):
        self.stream = kit.Workload(producers, calls=STREAM_CALLS, seed=seed)
        flat = self.stream.producer_ids.ravel()
        per_producer = np.bincount(flat - flat.min())
        self.per_pass = per_producer[self.stream.producer_ids - flat.min()].astype(np.int32)
        self.table = table_class(5)
        self.stream.fill(self.table)
        self.calls = 0

    def next_calls(self, count: int):
        out = []
        for _ in range(count):
            call, passes = self.calls % STREAM_CALLS, self.calls // STREAM_CALLS
            args, _ = self.stream.arguments(call, 0)
            sequences = self.stream.base_sequences[call] + passes * self.per_pass[call]
            out.append((args[0], args[1], sequences, args[3], args[4]))
            self.calls += 1
        return out


def append_calls(table, calls) -> None:
    for ids, epochs, sequences, counts, stamps in calls:
        result = table.append_many(ids, epochs, sequences, counts, stamps, log_end_offset=table.map_end_offset)
        if result.error_codes.any() or result.duplicate.any():
            raise AssertionError("a batch was refused or answered as a duplicate")


def boundary_only(table, ids, epochs, sequences, counts, stamps) -> None:
    """What append_many does with the GIL held, in the same order (dedup/_state.pyx)."""
    pids, epochs, seqs, counts, stamps, _ = _args.batch_arrays(ids, epochs, sequences, counts, stamps, None)
    end = _args.offset("log_end_offset", table.map_end_offset)
    _args.not_backwards("log_end_offset", end, table.map_end_offset)
    _args.total_records_fit(end, counts)
    rows = len(pids)
    codes, duplicate = np.zeros(rows, dtype=np.int16), np.zeros(rows, dtype=np.bool_)
    firsts, lasts, times = (np.empty(rows, dtype=np.int64) for _ in range(3))
    codes.any(), duplicate.any()  # the caller's check, as append_calls does
    (codes, duplicate, firsts, lasts, times, end)  # noqa: B018 - the result tuple


@pytest.mark.parametrize("size", ["10,000", "1,000,000"])
def test_append_many_on_threads(kit, size):
    """10,000 producers a table (in cache: the threads share no memory traffic to speak of) and
    1,000,000 (each batch a miss to memory: the threads share the memory system)."""
    producers = min(int(size.replace(",", "")), producers_per_table())
    partitions = [Partition(kit, kit.compiled_table(), producers, seed=20_260_101 + i) for i in range(max(THREADS))]
    append_calls(partitions[0].table, partitions[0].next_calls(1))  # warm-up
    scaling = alternate(ROUNDS, lambda i: partitions[i].next_calls(CALLS_PER_ROUND),
                        lambda i, calls: append_calls(partitions[i].table, calls),
                        CALLS_PER_ROUND * kit.CALL_ROWS)  # fmt: skip
    # The GIL-held share on one thread: the boundary alone against whole calls, alternately.
    probe = partitions[0]
    whole, boundary = [], []
    for _ in range(5):
        calls = probe.next_calls(1)
        whole.append(best_of(lambda: append_calls(probe.table, calls), repeat=1))  # noqa: B023
        boundary.append(best_of(lambda: boundary_only(probe.table, *calls[0])))  # noqa: B023
    held = min(boundary) / min(whole)
    kit.record(None, f"cores: append_many per call, one thread, {producers:,} producers",
               us_per_call=min(whole) * 1e6, us_gil_held=min(boundary) * 1e6, producers=producers)  # fmt: skip
    side_by_side(kit, f"append_many, {producers:,} producers per table, calls of {kit.CALL_ROWS:,}", "batches",
                 scaling, held)  # fmt: skip
    for partition in partitions:
        assert partition.table.map_end_offset == producers + partition.calls * kit.CALL_ROWS


# --- (b) PartitionLog.append_as_leader on N logs ----------------------------------------------


class LogPartition:
    """One log in its own directory, every producer's first batch in it; each round appends
    the next requests of a stream shared by all partitions (the logs are independent)."""

    def __init__(self, directory: str, requests):
        self.log = PartitionLog(directory, segment_bytes=SEGMENT_BYTES, fsync=False)
        for request in requests.prefill:
            self.log.append_as_leader(request)
        self.used = 0

    def next_requests(self, calls: list[bytes], count: int) -> list[bytes]:
        out = calls[self.used : self.used + count]
        assert len(out) == count, "not enough pre-built batches for the rounds"
        self.used += count
        return out


class SharedRequests:
    """Client batches for every log: each producer's first, then enough for every round."""

    def __init__(self, kit, batches_after_prefill: int):
        self.batches = LOG_PRODUCERS + batches_after_prefill
        stream = BatchStream(kit, self.batches, prefill=True, seed=20_260_103)
        self.data = stream.rows(0, self.batches).tobytes()
        self.prefill = [self.data[s * BATCH_BYTES : min(s + 256, LOG_PRODUCERS) * BATCH_BYTES]
                        for s in range(0, LOG_PRODUCERS, 256)]  # fmt: skip

    def calls(self, per_call: int) -> list[bytes]:
        size = per_call * BATCH_BYTES
        return [self.data[p : p + size] for p in range(LOG_PRODUCERS * BATCH_BYTES, len(self.data), size)]


@pytest.fixture(scope="module")
def workdir():
    parent = tempfile.mkdtemp(prefix="dedup-bench-cores-")
    try:
        yield parent
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def log_held_share(log: PartitionLog, requests: list[bytes], per_call: int, directory: str,
                   repeat: int = 3) -> tuple[float, float, float]:
    """(GIL-held share, us per call, us released per call) of append_as_leader on one thread:
    the calls against the parts that release the GIL, each timed alone on the same requests
    (best of ``repeat``): ``os.pwrite`` (the segment write) and, for several batches a call,
    the compiled kernels of the call (``validate_batches``: scan and CRC; ``append_batches``
    on a copy of the table as it was before the calls: scan and the producer-state loop,
    which the log runs on its staged copy). For one batch a call the log's checks hold the
    GIL (check_one_batch's CRC below 8 KiB, the table's check and update)."""
    before = log.producer_state.copy() if per_call > 1 else None
    chunk = max(1, len(requests) // repeat)
    call = float("inf")
    for start in range(0, chunk * repeat, chunk):  # the log's calls cannot be repeated: best chunk
        began = time.perf_counter()
        for request in requests[start : start + chunk]:
            log.append_as_leader(request)
        call = min(call, (time.perf_counter() - began) / chunk)
    requests = requests[: chunk * repeat]
    fd, path = tempfile.mkstemp(dir=directory)
    try:

        def write():  # to an empty file, as the log's writes extend its segment
            os.ftruncate(fd, 0)
            position = 0
            for request in requests:
                position += os.pwrite(fd, request, position)

        released = best_of(write, repeat) / len(requests)
    finally:
        os.close(fd)
        os.unlink(path)
    if before is not None:
        kernels = float("inf")
        for _ in range(repeat):
            table = before.copy()
            copies = [bytearray(request) for request in requests]
            began = time.perf_counter()
            end = table.map_end_offset
            for data in copies:
                validate_batches(data)
                end = append_batches(table, data, log_end_offset=end, write_offsets=True).log_end_offset
            kernels = min(kernels, time.perf_counter() - began)
        released += kernels / len(requests)
    return max(0.0, 1.0 - released / call), call * 1e6, released * 1e6


@pytest.mark.parametrize("per_call", LOG_PER_CALL)
def test_log_append_on_threads(kit, workdir, per_call):
    calls_per_round = LOG_ROUND_BYTES // (per_call * BATCH_BYTES)
    # Partition 0 takes part in every round of every N (the most), plus the held-share probe.
    needed = (ROUNDS * len(THREADS) + 3) * calls_per_round * per_call
    requests = SharedRequests(kit, needed)
    calls = requests.calls(per_call)
    partitions = [LogPartition(os.path.join(workdir, f"cores-{per_call}-{i}"), requests) for i in range(max(THREADS))]

    def work(i, chunk):
        append = partitions[i].log.append_as_leader
        for request in chunk:
            append(request)

    work(0, partitions[0].next_requests(calls, calls_per_round))  # warm-up
    scaling = alternate(ROUNDS, lambda i: partitions[i].next_requests(calls, calls_per_round), work,
                        calls_per_round * per_call * BATCH_BYTES)  # fmt: skip
    probe = partitions[0].next_requests(calls, 3 * max(1, calls_per_round // 2))  # whole chunks of 3
    held, us_call, us_released = log_held_share(partitions[0].log, probe, per_call, workdir)
    kit.record(None, f"cores: append_as_leader per call, one thread, {per_call} per call",
               us_per_call=us_call, us_released=us_released)  # fmt: skip
    side_by_side(kit, f"PartitionLog.append_as_leader, {per_call} x 1 KiB batch per call, fsync off", "B",
                 scaling, held, shown=" M")  # fmt: skip
    for partition in partitions:
        expected = (LOG_PRODUCERS + partition.used * per_call) * RECORDS_PER_BATCH
        assert partition.log.log_end_offset == expected  # every batch written once, none a duplicate
        partition.log.close()


# --- (c) python -m dedup serve: N partitions, one librdkafka producer each -----------------------

SERVE_MESSAGES = 50_000  # 1 KiB values per producer per round
SERVE_ROUNDS = 3
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


#: One producer in its own process (so that no client shares a GIL with another): connects,
#: takes its producer id and sends 100 messages, prints "ready", waits for a line on stdin, sends
#: its messages to its partition, prints "done" once every one is acknowledged.
PRODUCER = """
import os, sys
from confluent_kafka import Producer
bootstrap, partition, messages, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
value, failed = os.urandom(size), []
def send(count):
    for _ in range(count):
        while True:
            try:
                producer.produce("bench", value=value, partition=partition,
                                 on_delivery=lambda e, m: failed.append(e) if e else None)
                break
            except BufferError:
                producer.poll(0.001)
        producer.poll(0)
    assert producer.flush(120) == 0 and not failed, failed[:3]
send(100)
print("ready", flush=True)
sys.stdin.readline()
send(messages)
print("done", flush=True)
"""


def produce_round(bootstrap: str, n: int, pid: int) -> tuple[float, float]:
    """N producer processes, one per partition, started together; (wall seconds, server CPU seconds)."""
    import subprocess
    import sys

    producers = [subprocess.Popen([sys.executable, "-c", PRODUCER, bootstrap, str(i), str(SERVE_MESSAGES),
                                   str(BATCH_BYTES)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                 for i in range(n)]  # fmt: skip
    try:
        for producer in producers:
            assert producer.stdout.readline() == "ready\n"
        before = process_cpu_seconds(pid)
        began = time.perf_counter()
        for producer in producers:
            producer.stdin.write("go\n")
            producer.stdin.flush()
        for producer in producers:
            assert producer.stdout.readline() == "done\n"
        wall = time.perf_counter() - began
        return wall, process_cpu_seconds(pid) - before
    finally:
        for producer in producers:
            producer.stdin.close()
            producer.wait(60)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc for the server's CPU time")
def test_serve_partitions_on_threads(kit):
    """One server (``python -m dedup serve``, 1 broker, topic ``bench`` with max(THREADS)
    partitions); N producers (confluent-kafka), each to its own partition from a process of
    its own. The server answers every request on one asyncio
    event loop, and its produce handler appends on that loop: the server's CPU stays at one
    core whatever N, which the ``cores busy`` figures show."""
    pytest.importorskip("confluent_kafka")
    from test_bench_serve import Served

    served = Served(1, (f"bench:{max(THREADS)}",))
    rates: dict[int, list[tuple[float, float]]] = {n: [] for n in THREADS}
    try:
        for _ in range(SERVE_ROUNDS):
            for n in THREADS:
                wall, server_cpu = produce_round(served.bootstrap, n, served.process.pid)
                rates[n].append((n * SERVE_MESSAGES * BATCH_BYTES / wall, server_cpu / wall))
    finally:
        served.stop()
    scaling = {}
    for n, values in rates.items():
        best = max(values)
        scaling[n] = {"per_s_best": best[0], "per_s_median": float(np.median([v[0] for v in values])),
                      "cores_busy_best_round": best[1]}  # fmt: skip
    # Everything the server does holds the GIL on its one loop thread, bar the kernels and writes.
    side_by_side(kit, "python -m dedup serve, 1 broker, one librdkafka producer per partition, 1 KiB values "
                 "(cores busy: the server's)", "B", scaling, None, shown=" M")  # fmt: skip
