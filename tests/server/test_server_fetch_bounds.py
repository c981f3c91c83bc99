"""Fetch bounded as Kafka bounds it, and sent without reading the log into memory (issue 16, item 1).

Kafka's ``ReplicaManager.readFromLog`` (KIP-74): the response's limit is ``min(max_bytes,
fetch.max.bytes)``; each partition reads at most ``min(partition_max_bytes, what is left)``; the
first partition with data returns at least one whole batch even if it is larger. dedup returns
whole batches only, and the records go from the segment file to the socket with ``sendfile``:
a ``serve`` process fetched by 16 clients at ``max_bytes=2^31-1`` from a 1 GB log stays under
200 MB of RSS, also when the clients reset mid-response (the old code read a whole segment per
fetch: several GB).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kio.index import load_response_schema
from kio.serial import entity_reader
from test_server_protocol import frame

from dedup.batch import encode_batch
from dedup.records import scan_batches
from dedup.server import ServerThread
from dedup.server.core import KafkaServer
from dedup.server.wire import ApiKey

NO_WAIT = datetime.timedelta(0)
INT32_MAX = (1 << 31) - 1


def fetch_request(partitions: list[tuple[int, int, int]], max_bytes: int, topic: str = "bounds") -> bytes:
    """Fetch v11 of ``(partition, fetch_offset, partition_max_bytes)``, in that order."""
    wanted = [{"partition": p, "fetch_offset": offset, "log_start_offset": -1, "partition_max_bytes": limit,
               "current_leader_epoch": -1} for p, offset, limit in partitions]  # fmt: skip
    body = {"replica_id": -1, "max_wait": NO_WAIT, "min_bytes": 0, "max_bytes": max_bytes, "isolation_level": 0,
            "session_id": 0, "session_epoch": -1, "topics": [{"topic": topic, "partitions": wanted}],
            "forgotten_topics_data": [], "rack_id": ""}  # fmt: skip
    return frame(ApiKey.FETCH, 11, body)


def receive_exactly(sock: socket.socket, count: int) -> bytes:
    chunks = []
    while count:
        chunk = sock.recv(min(count, 1 << 20))
        assert chunk, "the server closed the connection"
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def fetch(port: int, request: bytes) -> list:
    """The partitions of a Fetch v11 response, in request order."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        size = struct.unpack(">i", receive_exactly(sock, 4))[0]
        data = receive_exactly(sock, size)
    schema = load_response_schema(ApiKey.FETCH, 11)
    _, used = entity_reader(schema.__header_schema__)(data, 0)
    response, rest = entity_reader(schema)(data, used)
    assert used + rest == len(data)
    [topic] = response.responses
    return list(topic.partitions)


def batch_sizes(records: bytes | None) -> list[int]:
    """The sizes of the whole batches of ``records`` (the scanner refuses a partial one)."""
    if not records:
        return []
    headers = scan_batches(bytes(records))
    sizes = [int(length) + 12 for length in headers["batch_length"]]
    assert sum(sizes) == len(records), "the records end inside a batch"
    return sizes


@pytest.fixture(scope="module")
def bounded(tmp_path_factory):
    """One broker, topic ``bounds`` with 2 partitions: partition 0 has ten batches of ~1000
    bytes then one of ~5000; partition 1 has ten of ~1000; ``fetch.max.bytes`` 3000."""
    with ServerThread(tmp_path_factory.mktemp("bounds"), brokers=1, topics=[("bounds", 2)],
                      fetch_max_bytes=3000) as running:  # fmt: skip

        def fill() -> None:
            for partition, sizes in ((0, [1000] * 10 + [5000]), (1, [1000] * 10)):
                cluster = running.server.partition("bounds", partition)
                for size in sizes:
                    cluster.produce(encode_batch([os.urandom(size)], timestamp=1_700_000_000_000))

        running.run(fill)
        yield running.server.ports[0]


def test_a_fetch_is_capped_by_the_broker_fetch_max_bytes(bounded):
    [first, second] = fetch(bounded, fetch_request([(0, 0, INT32_MAX), (1, 0, INT32_MAX)], INT32_MAX))
    sizes = batch_sizes(first.records)
    assert len(sizes) == 2 and sum(sizes) <= 3000  # two batches of ~1070 fit in 3000, three do not
    assert batch_sizes(second.records) == [] or sum(sizes) + len(second.records) <= 3000
    assert first.error_code == second.error_code == 0 and first.high_watermark == 11


def test_partition_max_bytes_bounds_each_partition_and_the_total_bounds_the_rest(bounded):
    [first, second] = fetch(bounded, fetch_request([(0, 0, 2500), (1, 0, 2500)], 2800))
    assert len(batch_sizes(first.records)) == 2  # 2 of ~1070 bytes within 2500
    assert batch_sizes(second.records) == []  # 2800 - ~2140 left: less than one batch, and not the first data


def test_the_first_partition_with_data_gets_one_whole_batch_larger_than_every_limit(bounded):
    """KIP-74: the ~5000-byte batch comes whole at max_bytes 100, partition_max_bytes 100; the
    next partition gets nothing (minOneMessage is only for the first partition with data)."""
    [first, second] = fetch(bounded, fetch_request([(0, 10, 100), (1, 0, 100)], 100))
    [size] = batch_sizes(first.records)
    assert size > 5000
    assert batch_sizes(second.records) == []
    # An empty first partition leaves the rule to the next one.
    [empty, data] = fetch(bounded, fetch_request([(0, 11, 100), (1, 0, 100)], 100))
    assert batch_sizes(empty.records) == [] and len(batch_sizes(data.records)) == 1


def test_a_cut_is_at_a_batch_boundary_from_any_offset(bounded):
    for offset in range(10):
        for limit in (1, 1070, 1100, 2200, 2999):
            [partition, _] = fetch(bounded, fetch_request([(0, offset, limit), (1, 0, 0)], INT32_MAX))
            sizes = batch_sizes(partition.records)
            assert sizes and (len(sizes) == 1 or sum(sizes) <= limit)
            assert scan_batches(bytes(partition.records))["base_offset"][0] == offset


def test_fetch_max_bytes_is_a_broker_config_with_kafkas_default(tmp_path):
    from dedup.server.config import BROKER_CONFIGS

    key = BROKER_CONFIGS["fetch.max.bytes"]
    assert (key.default, key.low, key.kwarg) == (57671680, 1024, "fetch_max_bytes")
    server = KafkaServer(tmp_path, brokers=1)
    try:
        assert server.fetch_max_bytes == 57671680
    finally:
        asyncio.run(server.close())


# --- a 1 GB log, 16 clients at max_bytes 2^31-1, RSS of the serve process --------------------------

GB_TOPIC = "big"
RSS_LIMIT_MB = 200
#: Past this the run is stopped (the old code reads a segment per fetch: 16 GB would not fit).
RSS_ABORT_MB = 1500
CLIENTS = 16


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def gigabyte_log(tmp_path_factory) -> Path:
    """A serve directory whose topic ``big`` holds ~1 GB: 1024 batches of 1 MiB, appended
    straight through the library (one encoded batch, appended again and again)."""
    directory = tmp_path_factory.mktemp("gigabyte")
    server = KafkaServer(directory, brokers=1, topics=[GB_TOPIC])
    try:
        log = server.partition(GB_TOPIC, 0).leader_log  # type: ignore[union-attr]
        records = encode_batch([os.urandom(1 << 16)] * 16, timestamp=1_700_000_000_000)
        for _ in range(1024):
            log.append_as_leader(bytearray(records), leader_epoch=0)
        log.update_high_watermark(log.log_end_offset)
    finally:
        asyncio.run(server.close())
    return directory


class Serve:
    """``python -m dedup serve`` on ``directory`` (one broker), its RSS sampled every 50 ms."""

    def __init__(self, directory: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dedup", "serve", "--dir", str(directory), "--brokers", "1", "--topic", GB_TOPIC,
             "--port", "0", "--override", "log.cleaner.enable=false"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
        )  # fmt: skip
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("bootstrap.servers="), line + self.process.stderr.read()  # type: ignore[union-attr]
        self.port = int(line.strip().rsplit(":", 1)[1])
        self.peak = rss_mb(self.process.pid)
        self.baseline = self.peak
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, rss_mb(self.process.pid))
            except (OSError, AssertionError):
                return
            if self.peak > RSS_ABORT_MB:
                self.process.kill()  # the blow-up is shown; the machine is spared
                return

    def open_descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def close(self) -> str:
        self._stop.set()
        self._sampler.join(5)
        if self.process.poll() is None:
            self.process.terminate()
        try:
            _, stderr = self.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate(timeout=30)
        return stderr


def big_fetch() -> bytes:
    return fetch_request([(0, 0, INT32_MAX)], INT32_MAX, topic=GB_TOPIC)


def read_whole_response(port: int, results: list[int]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(big_fetch())
        size = struct.unpack(">i", receive_exactly(sock, 4))[0]
        left = size
        while left:
            chunk = sock.recv(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
        results.append(size - left)


def reset_mid_response(port: int, results: list[int]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(big_fetch())
        received = len(receive_exactly(sock, 4 + (1 << 20)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
    results.append(received)


def run_clients(target, port: int, count: int) -> list[int]:
    results: list[int] = []
    threads = [threading.Thread(target=target, args=(port, results), daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    return results


@pytest.mark.slow
def test_sixteen_fetches_of_two_gigabytes_from_a_one_gigabyte_log_keep_rss_under_200_mb(gigabyte_log):
    serve = Serve(gigabyte_log)
    try:
        started = time.monotonic()
        sizes = run_clients(read_whole_response, serve.port, CLIENTS)
        elapsed = time.monotonic() - started
    finally:
        stderr = serve.close()
    print(f"serve RSS {serve.baseline:.0f} MB at start, peak {serve.peak:.0f} MB; {len(sizes)} responses of "
          f"{max(sizes, default=0) / 1e6:.1f} MB in {elapsed:.1f} s")  # fmt: skip
    assert serve.peak < RSS_LIMIT_MB, f"serve RSS reached {serve.peak:.0f} MB"
    assert len(sizes) == CLIENTS
    # Each response: fetch.max.bytes (55 MiB) of whole 1 MiB batches, and the headers.
    assert all(57671680 - (1 << 21) < size <= 57671680 + 200 for size in sizes), sizes
    assert "Traceback" not in stderr, stderr


@pytest.mark.slow
def test_clients_that_reset_mid_response_leave_nothing_held(gigabyte_log):
    serve = Serve(gigabyte_log)
    try:
        run_clients(read_whole_response, serve.port, 1)  # warm: every lazy import done
        descriptors = serve.open_descriptors()
        for _ in range(3):
            received = run_clients(reset_mid_response, serve.port, CLIENTS)
            assert len(received) == CLIENTS
        deadline = time.monotonic() + 30
        while serve.open_descriptors() > descriptors and time.monotonic() < deadline:
            time.sleep(0.1)  # the server notices the resets
        held = serve.open_descriptors()
        settled = rss_mb(serve.process.pid)
    finally:
        stderr = serve.close()
    print(f"serve RSS {serve.baseline:.0f} MB at start, peak {serve.peak:.0f} MB, {settled:.0f} MB after "
          f"{3 * CLIENTS} resets; descriptors {descriptors} -> {held}")  # fmt: skip
    assert serve.peak < RSS_LIMIT_MB, f"serve RSS reached {serve.peak:.0f} MB"
    assert held <= descriptors, "a reset connection's file regions are still open"
    assert "Traceback" not in stderr, stderr


def test_records_go_in_bounded_chunks_where_the_transport_cannot_sendfile(bounded, monkeypatch):
    """A transport without sendfile (loop.sendfile raises RuntimeError): the region goes
    through the stream in chunks of at most SEND_CHUNK_BYTES, and the client gets the same
    bytes."""
    import dedup.server.wire as wire

    expected = fetch(bounded, fetch_request([(0, 0, INT32_MAX), (1, 0, INT32_MAX)], INT32_MAX))
    writes: list[int] = []

    async def no_sendfile(*_args, **_kwargs):
        raise RuntimeError("sendfile is not supported for this transport")

    original_write = asyncio.StreamWriter.write

    def write(self, data):
        writes.append(len(data))
        return original_write(self, data)

    monkeypatch.setattr(asyncio.BaseEventLoop, "sendfile", no_sendfile)
    monkeypatch.setattr(asyncio.StreamWriter, "write", write)
    monkeypatch.setattr(wire, "SEND_CHUNK_BYTES", 1000)
    got = fetch(bounded, fetch_request([(0, 0, INT32_MAX), (1, 0, INT32_MAX)], INT32_MAX))
    assert [bytes(p.records or b"") for p in got] == [bytes(p.records or b"") for p in expected]
    assert max(writes) <= 1000 and len(writes) > 3


@pytest.mark.parametrize("version", [11, 12, 16])
def test_a_region_is_spliced_into_a_response_of_any_version(tmp_path, version):
    """encode_response_frame rewrites the records' length prefix (an int32, or a compact
    varint in a flexible version) and leaves the region's bytes in place of the placeholder."""
    from kio.index import load_response_schema as response_type

    from dedup.segment import FileRegion
    from dedup.server.wire import Request, build, encode_response_frame, new_placeholder

    data = encode_batch([os.urandom(300)], timestamp=1_700_000_000_000) * 3
    path = tmp_path / "segment"
    path.write_bytes(b"x" * 100 + data)
    descriptor = os.open(path, os.O_RDONLY)
    try:
        region = FileRegion(descriptor, 100, len(data))
    finally:
        os.close(descriptor)
    placeholder = new_placeholder()
    schema = response_type(ApiKey.FETCH, version)
    partition = {"partition_index": 0, "error_code": 0, "high_watermark": 3, "last_stable_offset": 3,
                 "log_start_offset": 0, "aborted_transactions": [], "preferred_read_replica": -1,
                 "records": placeholder}  # fmt: skip
    topic = {"topic": "bounds", "topic_id": __import__("uuid").UUID(int=1), "partitions": [partition]}
    body = build(schema, {"error_code": 0, "session_id": 0, "responses": [topic]})
    request = Request(ApiKey.FETCH, version, 42, None, None)
    response = encode_response_frame(request, body, {placeholder: region})
    encoded = response.to_bytes()
    response.close()
    assert region.fd == -1  # the frame owned the region
    assert struct.unpack(">i", encoded[:4])[0] == len(encoded) - 4
    header, used = entity_reader(schema.__header_schema__)(encoded, 4)
    decoded, rest = entity_reader(schema)(encoded, 4 + used)
    assert header.correlation_id == 42 and 4 + used + rest == len(encoded)
    assert bytes(decoded.responses[0].partitions[0].records) == data
