"""``dedup serve`` killed with SIGKILL 10 times during a librdkafka idempotent stream (issue 16).

Each time the process is restarted on the same ``--dir`` and ports: recovery of every replica
from its files (no clean-shutdown marker), the producer-state tables rebuilt from snapshots
and the log, so the producer's retries of what was in flight are recognised. At the end every
acknowledged message is in the partition exactly once, in the order it was sent, and nothing
is stored twice.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka = pytest.importorskip("kafka")

TOPIC = "clicks"
BROKERS = 3
KILLS = 10


def consecutive_free_ports(count: int, attempts: int = 50) -> int:
    """A port P such that P..P+count-1 are free now (serve's brokers listen on PORT + b)."""
    for _ in range(attempts):
        probes: list[socket.socket] = []
        try:
            first = socket.socket()
            probes.append(first)
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port + count - 1 > 65535:
                continue
            for offset in range(1, count):
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port + offset))
            return port
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    pytest.skip(f"no {count} consecutive free ports found")


class Serve:
    def __init__(self, directory, port: int) -> None:
        self.directory = directory
        self.port = port
        self.process: subprocess.Popen | None = None
        self.stderr: list[str] = []

    def start(self) -> None:
        deadline = time.monotonic() + 60
        while True:  # a port of the killed process may take a moment to be free
            process = subprocess.Popen(
                [sys.executable, "-m", "dedup", "serve", "--dir", str(self.directory), "--port", str(self.port),
                 "--brokers", str(BROKERS), "--topic", TOPIC, "--override", "log.cleaner.enable=false"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
            )  # fmt: skip
            line = process.stdout.readline()  # type: ignore[union-attr]
            if re.fullmatch(r"bootstrap\.servers=\S+\n", line):
                self.process = process
                return
            _, err = process.communicate(timeout=30)
            if time.monotonic() > deadline or "address already in use" not in err.lower():
                pytest.fail(f"serve did not restart: {line!r} {err}")
            time.sleep(0.2)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        _, err = self.process.communicate(timeout=30)
        self.stderr.append(err)

    def stop(self) -> tuple[int, str]:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=60)
        self.stderr.append(err)
        return self.process.returncode, err

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.port + b}" for b in range(BROKERS))


def consume_all(bootstrap: str, expected: int, timeout: float = 90.0) -> list[bytes]:
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                   auto_offset_reset="earliest", consumer_timeout_ms=1500, request_timeout_ms=10000,
                                   retry_backoff_ms=50)  # fmt: skip
    consumer.assign([kafka.TopicPartition(TOPIC, 0)])
    consumer.seek_to_beginning()
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            before = len(got)
            got += [message.value for message in consumer]
            if len(got) >= expected and len(got) == before:
                break
    finally:
        consumer.close()
    return got


@pytest.mark.slow
def test_ten_sigkills_during_an_idempotent_stream_lose_and_double_nothing(tmp_path):
    serve = Serve(tmp_path, consecutive_free_ports(BROKERS))
    serve.start()
    acknowledged: list[bytes] = []
    failed: list[str] = []
    producer = confluent_kafka.Producer({
        "bootstrap.servers": serve.bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 2,
        "retry.backoff.ms": 50, "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500,
        "message.timeout.ms": 180000, "socket.timeout.ms": 5000,
    })  # fmt: skip

    def delivered(error, message) -> None:
        if error is None:
            acknowledged.append(message.value())
        else:
            failed.append(str(error))

    stop = threading.Event()
    kills: list[float] = []

    def killer() -> None:
        for _ in range(KILLS):
            if stop.wait(1.0):  # a second of stream, then SIGKILL
                return
            serve.kill()
            kills.append(time.monotonic())
            serve.start()

    chaos = threading.Thread(target=killer, daemon=True)
    index = 0
    try:
        producer.produce(TOPIC, value=b"m%07d" % index, on_delivery=delivered)
        index += 1
        assert producer.flush(30) == 0, "the first message was not delivered"
        chaos.start()
        deadline = time.monotonic() + 300
        while chaos.is_alive() and time.monotonic() < deadline:
            try:
                producer.produce(TOPIC, value=b"m%07d" % index, on_delivery=delivered)
                index += 1
            except BufferError:
                pass
            producer.poll(0.002)
        stop.set()
        chaos.join(60)
        remaining = producer.flush(180)
        assert len(kills) == KILLS, f"only {len(kills)} kills in the time given"
        got = consume_all(serve.bootstrap, len(acknowledged))
    finally:
        stop.set()
        code, err = serve.stop() if serve.process and serve.process.poll() is None else (0, "")
    assert remaining == 0, f"{remaining} messages still in flight"
    assert "Traceback" not in "".join(serve.stderr), serve.stderr
    assert code == 0, err
    assert len(got) == len(set(got)), "a message is stored twice"
    assert got == sorted(got), "the log is not in the order the messages were sent"
    assert set(acknowledged) <= set(got), f"{len(set(acknowledged) - set(got))} acknowledged messages are missing"
    print(f"{index} messages sent, {len(acknowledged)} acknowledged, {len(failed)} failed, {len(got)} in the log, "
          f"{len(kills)} SIGKILLs")  # fmt: skip
