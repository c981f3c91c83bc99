"""``python -m dedup serve`` as a user runs it: a subprocess, a real producer and consumer
(kafka-python) on the ports it prints, faults from the command line, a clean stop on
SIGINT with a summary of what it served."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys

import pytest

kafka = pytest.importorskip("kafka")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def start(*options: str) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        [sys.executable, "-m", "dedup", "serve", "--port", "0", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.fullmatch(r"bootstrap\.servers=(\S+)\n", line)
    if match is None:
        process.kill()
        pytest.fail(f"unexpected first line {line!r}; stderr: {process.stderr.read() if process.stderr else ''}")
    return process, match.group(1)


# The two runs of the server process are slow; the fast set keeps the bad options (same entry
# point, no client).
@pytest.mark.slow
def test_serve_with_dropped_responses_stores_each_message_once(tmp_path):
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    process, bootstrap = start("--dir", str(tmp_path), "--drop-responses", "0.3", "--seed", "4", "--topic", "ads")
    try:
        producer = kafka.KafkaProducer(
            bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=0, batch_size=64,
            retry_backoff_ms=20, reconnect_backoff_ms=20, request_timeout_ms=5000,
        )  # fmt: skip
        futures = [producer.send("ads", value=b"ad-%03d" % i) for i in range(60)]
        producer.flush(60)
        assert all(future.succeeded() for future in futures)
        producer.close(5)
        consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                       enable_auto_commit=False, consumer_timeout_ms=1500)  # fmt: skip
        consumer.assign([kafka.TopicPartition("ads", 0)])
        got = [message.value for message in consumer]
        consumer.close()
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err  # Ctrl-C's status, after the clean stop and the summary
    assert got == [b"ad-%03d" % i for i in range(60)]
    summary = out.splitlines()[-1]
    dropped = int(re.search(r"(\d+) responses dropped", summary).group(1))
    recognised = int(re.search(r"(\d+) retries recognised", summary).group(1))
    assert dropped > 0
    assert recognised > 0
    assert os.path.isdir(tmp_path / "broker-0" / "ads-0")  # the log is where --dir said (log.dirs layout)


@pytest.mark.slow
def test_serve_crashes_and_restarts_leaders_from_the_command_line():
    process, _ = start("--crash-leader-every", "0.3", "--restart-after", "0.1", "--exit-after", "1.5")
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert re.search(r"crashed broker \d, the leader of clicks-0; now led by \d", out)
    assert "restarted broker" in out


def test_serve_rejects_bad_options():
    process = subprocess.run(
        [sys.executable, "-m", "dedup", "serve", "--drop-responses", "1.5", "--port", "0"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=30,
    )  # fmt: skip
    assert process.returncode == 2
    assert "argument --drop-responses: must be a share in [0, 1], got '1.5'" in process.stderr
