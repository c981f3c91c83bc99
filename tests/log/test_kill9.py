"""Crash safety on real processes (issue #7): a worker process appends idempotent batches and
takes snapshots in a loop and is killed with SIGKILL at a random moment, 200 times in a
row on the same directory (20 in the fast set). After every kill, before anything else
touches the directory:

- every snapshot file present is whole (snapshots are written to a temporary file and
  renamed: spec §4.5); none is half-written;
- recovery (spec §5) keeps every acknowledged batch, exactly once, at the offsets it was
  acknowledged with, and nothing the worker did not send;
- the next worker's retry of each producer's last stored batch is recognised (rule 10).

The worker is forked from a fork server (tests/kill9_worker.py) so that a kill costs
milliseconds, not an interpreter start.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
from kill9_worker import SEGMENT_BYTES, TIMESTAMP

from dedup import PartitionLog
from dedup.records import scan_batches
from dedup.snapshot import read_snapshot

KILLS = int(os.environ.get("DEDUP_KILLS", "200"))
#: The fast set's run: the same checks after fewer kills (-m slow runs KILLS).
FAST_KILLS = 20
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kill9_worker.py")
ROOT = os.path.dirname(os.path.dirname(WORKER))


@pytest.fixture
def fork_server():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = subprocess.Popen([sys.executable, WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=env)  # fmt: skip
    yield server
    server.stdin.close()
    server.wait(timeout=30)


def ask(server: subprocess.Popen, line: str) -> str:
    server.stdin.write(line + "\n")
    server.stdin.flush()
    return server.stdout.readline().strip()


def wait_for_ready(ack_path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(ack_path):
            with open(ack_path) as file:
                if "ready" in file.read():
                    return
        time.sleep(0.001)
    raise AssertionError(f"the worker never became ready: {open(ack_path).read() if os.path.exists(ack_path) else ''}")


def stored_batches(directory: str, scratch: str) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """(producer id, base sequence) -> [(base offset, last offset)] of every batch the log
    holds once recovered: a copy of the directory is opened (recovery writes: a truncated
    tail, a snapshot), so that the next worker meets exactly what the kill left."""
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(directory, scratch)
    log = PartitionLog(scratch, segment_bytes=SEGMENT_BYTES, clock=lambda: TIMESTAMP)
    try:
        found: dict[tuple[int, int], list[tuple[int, int]]] = {}
        offset = log.log_start_offset
        while offset < log.log_end_offset:
            data = log.read(offset, 1 << 20)
            headers = scan_batches(data)
            bases, deltas = headers["base_offset"].tolist(), headers["last_offset_delta"].tolist()
            keys = zip(headers["producer_id"].tolist(), headers["base_sequence"].tolist(), strict=True)
            for key, base, delta in zip(keys, bases, deltas, strict=True):
                found.setdefault(key, []).append((base, base + delta))
            offset = bases[-1] + deltas[-1] + 1
        return found
    finally:
        log.close_uncleanly()


@pytest.mark.parametrize("kills", [FAST_KILLS, pytest.param(KILLS, marks=pytest.mark.slow)])
def test_kills_in_a_row_lose_nothing_acknowledged(tmp_path, fork_server, kills):
    directory = str(tmp_path / "clicks-0")
    rng = random.Random(2026_11_28)
    acknowledged: dict[tuple[int, int], tuple[int, int]] = {}
    for kill in range(kills):
        ack_path = str(tmp_path / f"acks-{kill}")
        pid = int(ask(fork_server, f"{directory} {kill} {ack_path}"))
        wait_for_ready(ack_path)
        time.sleep(rng.uniform(0.0, 0.03))
        os.kill(pid, signal.SIGKILL)
        assert ask(fork_server, f"reap {pid}") == "reaped"
        with open(ack_path) as file:
            lines = file.read().splitlines()
        assert not [line for line in lines if line.startswith("VIOLATION")], lines
        for line in lines:
            if line.startswith("ack "):
                _, producer_id, sequence, base, last = line.split()
                acknowledged[(int(producer_id), int(sequence))] = (int(base), int(last))
        # Every snapshot present is whole (temporary files may be left: recovery removes them).
        for name in os.listdir(directory):
            if name.endswith(".snapshot"):
                read_snapshot(os.path.join(directory, name))
        stored = stored_batches(directory, str(tmp_path / "recovered"))
        for key, offsets in acknowledged.items():
            assert stored.get(key) == [offsets], (
                f"kill {kill}: acknowledged batch {key} at {offsets} is {stored.get(key)}"
            )
        assert all(len(copies) == 1 for copies in stored.values()), f"kill {kill}: a batch stored twice"
    assert len(acknowledged) > kills  # the workers got real work done between the kills
