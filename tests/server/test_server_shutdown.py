"""``dedup serve`` stops cleanly on SIGINT and SIGTERM, whatever its clients are doing (issue 16, item 4).

With clients connected and a Fetch long-polling, a signal closes every broker (each replica
writes its clean-shutdown marker), prints the summary and exits 0 (SIGTERM) or 130 with one
``interrupted`` line (SIGINT, as every command ends on Ctrl-C), with no traceback: the old code
logged asyncio's ``CancelledError`` tracebacks for the connections it cancelled. On a full disk
the replica that cannot be closed cleanly is named in one line after the summary, every other
broker is still closed, and the exit status is 1 (the old code exited 2 with an ENOSPC
traceback and left the other brokers unclosed).
"""

from __future__ import annotations

import datetime
import errno
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
from kio.index import load_response_schema
from kio.serial import entity_reader
from test_server_protocol import batch, frame, partition_of, produce_body, receive

from dedup.recovery import CLEAN_SHUTDOWN_FILE
from dedup.server.wire import ApiKey

TOPIC = "clicks"
BROKERS = 3


def start_serve(directory) -> tuple[subprocess.Popen, list[int]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "dedup", "serve", "--dir", str(directory), "--port", "0", "--brokers", str(BROKERS),
         "--topic", TOPIC, "--override", "log.cleaner.enable=false"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )  # fmt: skip
    line = process.stdout.readline()  # type: ignore[union-attr]
    match = re.fullmatch(r"bootstrap\.servers=(\S+)\n", line)
    if match is None:
        process.kill()
        pytest.fail(f"serve did not start: {line!r} {process.communicate(timeout=30)[1]}")
    return process, [int(address.rsplit(":", 1)[1]) for address in match.group(1).split(",")]


def produce(port: int, count: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for sequence in range(count):
            sock.sendall(frame(ApiKey.PRODUCE, 9, produce_body(batch(11, sequence))))
            data = receive(sock)
            assert data is not None
            schema = load_response_schema(ApiKey.PRODUCE, 9)
            _, used = entity_reader(schema.__header_schema__)(data, 0)
            response, _ = entity_reader(schema)(data, used)
            assert partition_of(response).error_code == 0


def long_poll(port: int, offset: int) -> socket.socket:
    """A connection with a Fetch at the log end waiting up to 60 s for data."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    partition = {"partition": 0, "fetch_offset": offset, "log_start_offset": -1, "partition_max_bytes": 1 << 20,
                 "current_leader_epoch": -1}  # fmt: skip
    body = {"replica_id": -1, "max_wait": datetime.timedelta(seconds=60), "min_bytes": 1, "max_bytes": 1 << 20,
            "isolation_level": 0, "session_id": 0, "session_epoch": -1,
            "topics": [{"topic": TOPIC, "partitions": [partition]}], "forgotten_topics_data": [], "rack_id": ""}
    sock.sendall(frame(ApiKey.FETCH, 11, body))  # fmt: skip
    return sock


def stop(process: subprocess.Popen, signum: int) -> tuple[str, str, float]:
    started = time.monotonic()
    process.send_signal(signum)
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate(timeout=30)
        pytest.fail("serve did not stop within 60 s of the signal")
    return out, err, time.monotonic() - started


def markers(directory) -> list[bool]:
    return [os.path.exists(directory / f"broker-{b}" / f"{TOPIC}-0" / CLEAN_SHUTDOWN_FILE) for b in range(BROKERS)]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_with_clients_connected_and_a_fetch_waiting_stops_cleanly(tmp_path, signum):
    process, ports = start_serve(tmp_path)
    clients = []
    try:
        produce(ports[0], 3)
        clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for port in ports for _ in range(3)]
        clients.append(long_poll(ports[0], 3))
        time.sleep(0.5)  # the fetch is waiting in the server
        out, err, took = stop(process, signum)
    finally:
        for client in clients:
            client.close()
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
    assert "Traceback" not in err and "CancelledError" not in err, err
    assert took < 20, f"the waiting fetch held the shutdown up for {took:.1f} s"
    assert "served:" in out.splitlines()[-1]
    if signum == signal.SIGTERM:
        assert (process.returncode, err) == (0, "")
    else:
        assert (process.returncode, err) == (130, "python -m dedup serve: interrupted\n")
    assert markers(tmp_path) == [True] * BROKERS


def fill(directory) -> None:
    """Fill the filesystem of ``directory`` to the last byte."""
    chunk = b"\0" * (1 << 16)
    with open(directory / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    with open(directory / "filler-tail", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0")
        except OSError:
            pass


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_on_a_full_disk_closes_every_other_broker_and_names_the_failure(tmp_path, signum):
    small = tmp_path / "broker-0"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], capture_output=True,
                             timeout=30)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        process, ports = start_serve(tmp_path)
        try:
            produce(ports[0], 3)  # broker 0 has a producer to snapshot at close
            fill(small)
            out, err, _ = stop(process, signum)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate(timeout=30)
        assert "Traceback" not in err, err
        assert process.returncode == 1, err
        assert "served:" in out.splitlines()[-1]
        last = err.splitlines()[-1]
        assert last.startswith("python -m dedup serve: ") and "No space left on device" in last, err
        assert markers(tmp_path) == [False, True, True]  # broker 0 is recovered at the next start
    finally:
        subprocess.run(["umount", "-l", str(small)], timeout=30)
