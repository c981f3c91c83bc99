"""Connection hygiene from outside, with raw sockets (issue 16, item 3): idle connections,
half-sent frames and a slowloris are closed after ``connections.max.idle.ms``; connections
beyond ``max.connections`` and ``max.connections.per.ip`` are refused; ``queued.max.requests``
holds back a broker's requests; and a flood of connections under ``ulimit -n 64`` leaves the
server answering new clients afterwards with a short log."""

from __future__ import annotations

import datetime
import io
import logging
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer

from dedup.server import ServerThread
from dedup.server.connections import RefusalLog
from dedup.server.wire import ApiKey, build

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOPIC = "clicks"


def frame(api_key: int, version: int, body: dict, correlation_id: int = 1) -> bytes:
    schema = load_request_schema(api_key, version)
    buffer = io.BytesIO()
    header = schema.__header_schema__
    entity_writer(header)(buffer, header(request_api_key=api_key, request_api_version=version,
                                         correlation_id=correlation_id, client_id="test"))  # fmt: skip
    entity_writer(schema)(buffer, build(schema, body))
    data = buffer.getvalue()
    return struct.pack(">i", len(data)) + data


API_VERSIONS = frame(ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})


def receive(sock: socket.socket) -> bytes | None:
    """One response frame, or None once the server has closed the connection."""
    data = b""
    while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        data += chunk
    return data[4:]


def api_versions(sock: socket.socket) -> int:
    """ApiVersions v3 on ``sock``: its error code."""
    sock.sendall(API_VERSIONS)
    data = receive(sock)
    assert data is not None, "the server closed the connection"
    schema = load_response_schema(ApiKey.API_VERSIONS, 3)
    _, size = entity_reader(schema.__header_schema__)(data, 0)
    response, _ = entity_reader(schema)(data, size)
    return int(response.error_code)


def connect(port: int, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closes ``sock`` (reading and discarding), None if it is still
    open after ``seconds``."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - started


@pytest.fixture
def idle_server(tmp_path):
    with ServerThread(tmp_path, brokers=1, topics=[TOPIC], connections_max_idle_ms=400) as running:
        yield running


def test_an_idle_connection_is_closed_and_an_active_one_is_kept(idle_server):
    port = idle_server.server.ports[0]
    with connect(port) as idle, connect(port) as active:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # a request every 100 ms keeps it open
            assert api_versions(active) == 0
            time.sleep(0.1)
        took = closed_within(idle, 5)
        assert took is not None, "an idle connection was kept past connections.max.idle.ms"
        assert api_versions(active) == 0


def test_a_half_sent_frame_is_closed(idle_server):
    with connect(idle_server.server.ports[0]) as sock:
        sock.sendall(API_VERSIONS[: len(API_VERSIONS) // 2])
        started = time.monotonic()
        assert closed_within(sock, 5) is not None, "a half-sent frame held the connection"
        assert time.monotonic() - started < 3


def test_a_slowloris_at_one_byte_a_second_is_closed(tmp_path):
    # Kafka's Selector counts every byte as activity and would keep this connection forever.
    with ServerThread(tmp_path, brokers=1, topics=[TOPIC], connections_max_idle_ms=1500) as running:
        with connect(running.server.ports[0]) as sock:
            started = time.monotonic()
            closed = False
            for byte in API_VERSIONS:
                try:
                    sock.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                if closed_within(sock, 1.0) is not None:
                    closed = True
                    break
            assert closed, "a slowloris completed its frame"
            assert time.monotonic() - started < 5


def test_a_connection_waiting_for_its_answer_is_not_idle(tmp_path):
    with ServerThread(tmp_path, brokers=1, topics=[TOPIC], connections_max_idle_ms=300) as running:
        with connect(running.server.ports[0]) as sock:
            sock.sendall(frame(ApiKey.FETCH, 4, fetch_body(max_wait_ms=1200)))
            started = time.monotonic()
            assert receive(sock) is not None, "a fetch in its wait was closed as idle"
            assert time.monotonic() - started >= 1.0


def fetch_body(max_wait_ms: int) -> dict:
    partition = {"partition": 0, "fetch_offset": 0, "log_start_offset": -1, "partition_max_bytes": 1 << 20,
                 "current_leader_epoch": -1}  # fmt: skip
    return {"replica_id": -1, "max_wait": datetime.timedelta(milliseconds=max_wait_ms), "min_bytes": 1,
            "max_bytes": 1 << 20, "isolation_level": 0, "session_id": 0, "session_epoch": -1,
            "topics": [{"topic": TOPIC, "partitions": [partition]}], "forgotten_topics_data": [],
            "rack_id": ""}  # fmt: skip


def test_max_connections_per_ip_refuses_the_next_and_admits_after_a_close(tmp_path, caplog):
    with ServerThread(tmp_path, brokers=1, topics=[TOPIC], max_connections_per_ip=3) as running:
        port = running.server.ports[0]
        with caplog.at_level(logging.WARNING, logger="dedup.server"):
            admitted = [connect(port) for _ in range(3)]
            for sock in admitted:
                assert api_versions(sock) == 0
            refused = [connect(port) for _ in range(5)]
            for sock in refused:
                assert closed_within(sock, 5) is not None, "a connection past max.connections.per.ip was served"
                sock.close()
            admitted.pop().close()
            deadline = time.monotonic() + 5
            while True:  # the server sees the close a moment later
                with connect(port) as sock:
                    try:
                        if api_versions(sock) == 0:
                            break
                    except AssertionError:
                        assert time.monotonic() < deadline, "no connection admitted after one closed"
                        time.sleep(0.05)
            for sock in admitted:
                sock.close()
    refusals = [r.getMessage() for r in caplog.records if "refused connections" in r.getMessage()]
    assert 1 <= len(refusals) <= 2, refusals  # the first at once, the rest in one summary at close
    assert "max.connections.per.ip=3 from 127.0.0.1" in refusals[0]


def test_max_connections_refuses_beyond_the_broker_limit(tmp_path):
    with ServerThread(tmp_path, brokers=2, topics=[TOPIC], max_connections=2) as running:
        first, second = (connect(running.server.ports[0]) for _ in range(2))
        try:
            assert api_versions(first) == api_versions(second) == 0
            with connect(running.server.ports[0]) as third:
                assert closed_within(third, 5) is not None
            with connect(running.server.ports[1]) as other_broker:  # each broker counts its own
                assert api_versions(other_broker) == 0
        finally:
            first.close()
            second.close()


@pytest.mark.parametrize("queued_max_requests", [1, 500])
def test_queued_max_requests_holds_back_the_brokers_next_request(tmp_path, queued_max_requests):
    with ServerThread(tmp_path, brokers=1, topics=[TOPIC], queued_max_requests=queued_max_requests) as running:
        port = running.server.ports[0]
        with connect(port) as fetching, connect(port) as other:
            fetching.sendall(frame(ApiKey.FETCH, 4, fetch_body(max_wait_ms=1500)))
            time.sleep(0.2)  # the fetch is read and waits for data
            started = time.monotonic()
            assert api_versions(other) == 0
            waited = time.monotonic() - started
            assert receive(fetching) is not None
    if queued_max_requests == 1:
        assert waited > 0.8, "a request was read past queued.max.requests"
    else:
        assert waited < 0.8


def test_refusal_log_reports_once_per_interval_with_a_count(caplog):
    now = [0.0]
    log = RefusalLog(interval=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="dedup.server"):
        for step in range(1000):
            now[0] = step * 0.025  # 1000 refusals over 25 s
            log.refused("accept() failed: Too many open files")
        log.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines  # at 0 s, 10 s, 20 s, and the rest at the flush
    assert sum(int(re.search(r": (\d+) \(", line).group(1)) for line in lines) == 1000
    assert log.total == {"accept() failed: Too many open files": 1000}


def test_a_connection_flood_under_ulimit_64_leaves_a_short_log_and_new_clients_served(tmp_path):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        [sys.executable, "-m", "dedup", "serve", "--port", "0", "--brokers", "1", "--dir", str(tmp_path / "d"),
         "--override", "connections.max.idle.ms=60000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=limit,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(r"bootstrap\.servers=127\.0\.0\.1:(\d+)\n", line)
        assert match, line
        port = int(match.group(1))
        flood = []
        for _ in range(200):  # without waiting: a connection the backlog cannot take stays in SYN_SENT
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            flood.append(sock)
        time.sleep(3)  # the server meets EMFILE for a while
        for sock in flood:
            sock.close()
        deadline = time.monotonic() + 20
        while True:
            try:
                with connect(port, timeout=2) as sock:
                    sock.settimeout(2)
                    if api_versions(sock) == 0:
                        break
            except (OSError, AssertionError):
                pass
            assert time.monotonic() < deadline, "no answer to a new client after the flood"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Traceback" not in err, err[:2000]
    assert len(err.splitlines()) <= 10, err[:2000]
    assert "refused connections" in err and "Too many open files" in err, err
