"""``python -m dedup fuzz``: a short seeded run and a replay of the committed corpus find nothing, the
corpus is what the seed builder makes, and the fuzzer does find (and save) what it is meant to: an
untyped exception, a crash and a hang planted in a target.

The planted failures go through the same forked worker as a real run: a target replaced here is
inherited by the worker, so a segfault or a hang ends the worker, not the test.

The runs of several seconds are slow (-m slow); the fast set keeps the corpus checks, every
target on edge inputs, the command line and a replay that finds a planted crash.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dedup.errors import CorruptRecordError
from dedup.tools import fuzz

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fuzz_corpus"
#: What a child Python needs to load the extension as this process did: an AddressSanitizer
#: build (tools/asan.sh) needs its runtime preloaded.
SANITIZER = {name: os.environ[name] for name in ("LD_PRELOAD", "ASAN_OPTIONS", "PYTHONMALLOC") if name in os.environ}


def summary(capsys) -> str:
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("dedup fuzz")]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.slow
def test_a_short_seeded_run_finds_nothing(tmp_path, capsys):
    crashes = tmp_path / "crashes"
    status = fuzz.main(["--seconds", "4", "--seed", "7", "--corpus", str(CORPUS), "--crashes", str(crashes)])
    line = summary(capsys)
    assert status == 0, line
    assert line.endswith("; 0 findings")
    assert not crashes.exists()
    for name in fuzz.TARGETS:  # every target ran, more than the corpus alone
        assert int(line.split(f"{name} ")[1].split(",")[0].split(")")[0]) > 10, line


def test_the_corpus_replays_clean(tmp_path, capsys):
    files = [path for path in CORPUS.rglob("*.bin")]
    status = fuzz.main(["--replay", str(CORPUS), "--crashes", str(tmp_path / "crashes")])
    line = summary(capsys)
    assert status == 0, line
    assert f"{len(files) * len(fuzz.TARGETS)} executions" in line, line


def test_the_committed_corpus_is_what_the_seed_builder_makes():
    """Regenerate with ``python -m dedup fuzz --write-corpus tests/fuzz_corpus``. (``found/`` holds
    the inputs of past findings, kept for the replay.)"""
    committed = {name: data for name, data in fuzz.load_corpus(CORPUS).items() if not name.startswith("found/")}
    seeds = fuzz.seed_inputs()
    assert set(committed) == set(seeds)
    changed = [name for name in seeds if committed[name] != seeds[name]]
    assert not changed, f"{changed}: regenerate with python -m dedup fuzz --write-corpus tests/fuzz_corpus"
    assert {name.split("/")[0] for name in seeds} == set(fuzz.KINDS)


def test_the_corpus_inputs_are_valid():
    """Seeds that already fail would only test the first check: every batch, snapshot and frame
    in the corpus is accepted by its reader."""
    from dedup import Origin
    from dedup.records import validate_batches
    from dedup.server.wire import parse_request
    from dedup.snapshot import decode_snapshot

    for name, data in fuzz.seed_inputs().items():
        kind = name.split("/")[0]
        if kind == "batches":
            validate_batches(data, origin=Origin.REPLICATION)
            if "marker" not in name and "buffer" not in name:  # a client sends no control batch (rule 7)
                validate_batches(data, origin=Origin.CLIENT)
        elif kind == "snapshots":
            decode_snapshot(data)
        else:
            assert parse_request(data).body is not None, name


def negative_record_count(data: bytes) -> bool:
    """A batch at 0 whose record count (bytes 57-60) is negative: length-field edits reach it."""
    return len(data) >= 61 and int.from_bytes(data[57:61], "big", signed=True) < 0


def planted(monkeypatch, failure):
    """scan_batches, with ``failure(data)`` called first on inputs with a negative record count."""
    real = fuzz.TARGETS["scan_batches"]

    def run(data: bytes) -> None:
        if negative_record_count(data):
            failure(data)
        real.run(data)

    monkeypatch.setitem(
        fuzz.TARGETS, "scan_batches", fuzz.Target("scan_batches", run, real.kinds, real.expected, real.contract)
    )


def fuzz_scan_batches(tmp_path, seconds: float, *extra: str) -> int:
    arguments = ["--target", "scan_batches", "--seconds", str(seconds), "--seed", "3", "--corpus", str(CORPUS)]
    return fuzz.main([*arguments, "--crashes", str(tmp_path / "crashes"), *extra])


def findings(tmp_path) -> list[tuple[bytes, str]]:
    crashes = tmp_path / "crashes"
    return [(path.read_bytes(), path.with_suffix(".txt").read_text()) for path in sorted(crashes.glob("*.bin"))]


@pytest.mark.slow
def test_an_untyped_exception_is_found_and_saved(tmp_path, monkeypatch, capsys):
    def untyped(data):
        raise KeyError("planted")

    planted(monkeypatch, untyped)
    assert fuzz_scan_batches(tmp_path, 3) == 1
    assert "; 1 findings" in summary(capsys)  # the same failure again is not saved twice
    [(data, notes)] = findings(tmp_path)
    assert negative_record_count(data)
    assert "KeyError: 'planted'" in notes and "contract: CorruptRecordError, InvalidRecordError" in notes


@pytest.mark.slow
def test_a_typed_error_is_not_a_finding(tmp_path, monkeypatch, capsys):
    def typed(data):
        raise CorruptRecordError("planted, but within the contract")

    planted(monkeypatch, typed)
    assert fuzz_scan_batches(tmp_path, 2) == 0, summary(capsys)
    assert findings(tmp_path) == []


@pytest.mark.slow
def test_a_broken_invariant_is_a_finding(tmp_path, monkeypatch, capsys):
    """A compiled scan that loses its last batch on some input is caught by the checks on what
    it returns (the batches must cover the bytes; the twins must agree), not by an exception."""
    from dedup import _records

    real_scan = _records.scan_batches

    def lossy(data, *, tail="raise"):
        headers = real_scan(data, tail=tail)
        return headers[:-1] if negative_record_count(data) and len(headers) > 1 else headers

    monkeypatch.setattr(_records, "scan_batches", lossy)
    assert fuzz_scan_batches(tmp_path, 3) == 1, summary(capsys)
    [(data, notes)] = findings(tmp_path)
    assert "FuzzInvariantError" in notes


@pytest.mark.slow
def test_a_crash_is_found_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    planted(monkeypatch, lambda data: ctypes.string_at(0))  # a read of address 0: SIGSEGV
    started = time.monotonic()
    assert fuzz_scan_batches(tmp_path, 4) == 1
    line = summary(capsys)
    assert time.monotonic() - started >= 4  # new workers carried on after each crash
    saved = findings(tmp_path)
    assert saved and all(negative_record_count(data) for data, _ in saved), line
    # (SIGABRT under AddressSanitizer, whose handler runs after faulthandler's and aborts)
    assert re.search("killed by SIG(SEGV|ABRT)", saved[0][1]) and "Fatal Python error" in saved[0][1]


@pytest.mark.slow
def test_a_hang_is_found(tmp_path, monkeypatch, capsys):
    planted(monkeypatch, lambda data: time.sleep(3600))
    assert fuzz_scan_batches(tmp_path, 2, "--timeout", "0.5") == 1
    summary(capsys)
    [(data, notes), *_] = findings(tmp_path)
    assert negative_record_count(data)
    assert "a hang" in notes and "Timeout" in notes


def test_a_replay_names_each_failing_file(tmp_path, monkeypatch, capsys):
    """--replay runs every file through every target once: a crash on one file is saved and the
    replay goes on with the next."""
    directory = tmp_path / "inputs"
    directory.mkdir()
    good = fuzz.seed_inputs()["batches/idempotent.bin"]
    bad = bytearray(good)
    bad[57:61] = (-1).to_bytes(4, "big", signed=True)
    (directory / "a-bad.bin").write_bytes(bytes(bad))
    (directory / "b-good.bin").write_bytes(good)
    (directory / "notes.txt").write_text("not an input")
    planted(monkeypatch, lambda data: ctypes.string_at(0))
    status = fuzz.main(["--replay", str(directory), "--target", "scan_batches", "--target", "decode_records",
                        "--crashes", str(tmp_path / "crashes")])  # fmt: skip
    line = summary(capsys)
    assert status == 1
    assert "4 executions" in line and "1 findings" in line, line
    [(data, notes)] = findings(tmp_path)
    assert data == bytes(bad) and re.search("killed by SIG(SEGV|ABRT)", notes)


def test_the_command_line(tmp_path):
    """Through ``python -m dedup``, as CI runs it; a bad option is argparse's usage error."""
    env = {"PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", **SANITIZER}
    done = subprocess.run(
        [sys.executable, "-m", "dedup", "fuzz", "--seconds", "1", "--target", "parse_request"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("dedup fuzz (seed 0): ") and "parse_request " in done.stdout
    bad = subprocess.run([sys.executable, "-m", "dedup", "fuzz", "--target", "nope"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, env=env)  # fmt: skip
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


@pytest.mark.parametrize("name", list(fuzz.TARGETS))
def test_every_target_takes_any_bytes(name, tmp_path, monkeypatch):
    """Each target on a few edge inputs directly (in this process): empty, one byte, a header's
    worth of 0xFF, the first half of every seed."""
    monkeypatch.setitem(fuzz._WORKER, "scratch", str(tmp_path))
    try:
        for data in (b"", b"\x00", b"\xff" * 61, *[seed[: len(seed) // 2] for seed in fuzz.seed_inputs().values()]):
            fuzz.TARGETS[name].run(data)
    finally:
        fuzz._close_server()
