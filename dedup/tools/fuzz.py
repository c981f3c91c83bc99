"""``python -m dedup fuzz``: a seeded, time-bounded mutation fuzzer over everything that reads bytes.

Seed inputs come from a corpus directory (``tests/fuzz_corpus/`` in the repository: v2 batches,
snapshot files of both formats, Kafka request frames, and in ``found/`` the inputs of past
findings; :func:`seed_inputs` when there is no directory). Each execution takes a seed, mutates
it (bit flips, bytes and big-endian fields set to interesting values, length-field edits,
truncation, extension, splicing with another input, CRCs made right again half of the time so
the checks behind the CRC are reached) and feeds it to one target. Each target states the
exceptions bad bytes may raise (its contract):

- ``scan_batches``: the compiled scan, both tails, equal to the pure-Python twin's, batches back
  to back from 0. May raise ``CorruptRecordError`` (``TruncatedBatchError`` included) and
  ``InvalidRecordError``, carrying ``.valid_bytes`` and ``.headers``.
- ``validate_batches``: every origin, and ``tail="ignore"``. The same two.
- ``crc_valid``: without headers (the scan's errors), then with the headers of a good scan
  (nothing: it must return, with the same verdicts).
- ``append_batches``: into a small seeded compiled table, as a leader writing offsets into a
  writable copy, a follower, the coordinator; verdicts, offsets and the bytes written checked.
  The scan's errors (a batch's own verdict is in the result, not raised).
- ``decode_records``: ``dedup.batch.decode_records``, control batches skipped and kept.
  ``CorruptRecordError``.
- ``decode_snapshot``: ``decode_snapshot`` and each codec's Kafka and full reader, both twins,
  which must agree (the message, or the state). ``CorruptSnapshotError``.
- ``read_snapshot``: the bytes written to a Kafka-named file and read back, as
  ``decode_snapshot`` reads them. ``CorruptSnapshotError``.
- ``parse_request``: ``dedup.server.wire.parse_request``. ``BadRequest``.
- ``serve_request``: a request that parses goes through its handler in ``dedup.server.apis`` on
  an in-process ``KafkaServer`` (no sockets; Fetch without its wait) and the response is
  encoded. ``BadRequest`` from parsing; nothing from a handler (the server would log an
  internal error and answer UNKNOWN_SERVER_ERROR).

Anything else is a finding: an untyped exception, a broken invariant, an "Exception ignored"
(a swallowed error in a ``noexcept`` function), a crash (a signal) or a hang (an execution
longer than ``--timeout``). The input is saved to ``--crashes DIR`` as ``<target>-<hash>.bin``
with ``<target>-<hash>.txt`` beside it (the traceback, or the signal and the faulthandler dump).

The executions run in a forked worker process that records each input in shared memory before
running it, so a crash or a hang still names its input; the parent saves it and starts a new
worker for the rest of the time. ``--replay DIR`` runs every file under DIR (the corpus, saved
findings) through every target once: what the AddressSanitizer build replays (``tools/asan.sh``).
Ctrl-C ends the worker and the run (exit status 130): the execution it cut short is no finding.

Usage::

    python -m dedup fuzz --seconds 60 --seed 1
    python -m dedup fuzz --target scan_batches --target append_batches --seconds 300
    python -m dedup fuzz --replay tests/fuzz_corpus --replay fuzz-crashes

The exit status is 0 with no finding, 1 otherwise.
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import hashlib
import json
import logging
import mmap
import os
import random
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import cli
from .fuzz_inputs import KINDS, MAX_INPUT, load_corpus, mutate, seed_inputs
from .fuzz_targets import _WORKER, TARGETS, FuzzInvariantError, Target, _close_server

__all__ = ["KINDS", "TARGETS", "FuzzInvariantError", "Target", "load_corpus", "main", "mutate", "seed_inputs"]

DEFAULT_CORPUS = Path("tests") / "fuzz_corpus"


# --- the worker --------------------------------------------------------------------------------

# The in-flight record, in memory shared with the parent: a status byte, the target's index, the
# replay job's index, the input's length, then the input.
_INFLIGHT = struct.Struct(">BBII")
_IDLE, _RUNNING = 0, 1


@dataclass
class Options:
    seconds: float = 10.0
    seed: int = 0
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    corpus: Path | None = None
    crashes: Path = Path("fuzz-crashes")
    replay: list[Path] = field(default_factory=list)
    timeout: float = 10.0


@dataclass
class Report:
    executions: dict[str, int] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)  # the saved inputs
    next_job: int = 0  # replay: the first job not run


def _signature(target: str, error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    return f"{target}:{type(error).__name__}:{where}"


def save_finding(crashes: Path, target: str, data: bytes, what: str) -> Path:
    """The input as ``<target>-<hash>.bin`` under ``crashes``, with ``what`` in the ``.txt`` beside it."""
    crashes.mkdir(parents=True, exist_ok=True)
    stem = f"{target}-{hashlib.sha1(data).hexdigest()[:12]}"
    (crashes / f"{stem}.bin").write_bytes(data)
    (crashes / f"{stem}.txt").write_text(f"target: {target}\nlength: {len(data)}\n\n{what}\n")
    return crashes / f"{stem}.bin"


class _Worker:
    def __init__(self, options: Options, inflight: mmap.mmap, report: Report, dump: Any) -> None:
        self.options = options
        self.dump = dump  # where faulthandler writes the stacks of a crash or a hang
        self.inflight = inflight
        self.report = report
        self.targets = [TARGETS[name] for name in options.targets]
        self.signatures: set[str] = set()
        self.ignored: list[str] = []
        self.armed = 0.0

    def execute(self, target: Target, data: bytes, job: int = 0) -> None:
        now = time.monotonic()
        if now - self.armed > 0.5:  # re-armed now and then: each call starts a thread
            faulthandler.dump_traceback_later(self.options.timeout + 0.5, exit=True, file=self.dump)
            self.armed = now
        _INFLIGHT.pack_into(self.inflight, 0, _IDLE, list(TARGETS).index(target.name), job, len(data))
        self.inflight[_INFLIGHT.size : _INFLIGHT.size + len(data)] = data
        self.inflight[0] = _RUNNING
        try:
            try:
                target.run(data)
            except target.expected():  # within the contract (the targets catch their own, mostly)
                pass
            problem = None
            if self.ignored:
                problem = "an exception was ignored (a swallowed error):\n" + "\n".join(self.ignored)
                signature = f"{target.name}:ignored"
        except Exception as error:  # noqa: BLE001 - every escape is a finding
            problem = "".join(traceback.format_exception(error))
            signature = _signature(target.name, error)
        self.inflight[0] = _IDLE
        self.ignored.clear()
        self.report.executions[target.name] = self.report.executions.get(target.name, 0) + 1
        if problem is not None and signature not in self.signatures:  # one input per distinct failure
            self.signatures.add(signature)
            what = f"contract: {target.contract}\n{problem}"
            self.report.findings.append(str(save_finding(self.options.crashes, target.name, data, what)))

    def fuzz(self) -> None:
        corpus = load_corpus(self.options.corpus)
        if not corpus:
            raise SystemExit(f"python -m dedup fuzz: no inputs in {self.options.corpus}")
        by_kind = {kind: [data for name, data in corpus.items() if name.split("/")[0] == kind] for kind in KINDS}
        everything = list(corpus.values())
        rng = random.Random(self.options.seed)
        deadline = time.monotonic() + self.options.seconds
        while time.monotonic() < deadline:
            for target in self.targets:
                preferred = [data for kind in target.kinds for data in by_kind[kind]]
                pool = preferred if preferred and rng.random() < 0.85 else everything
                self.execute(target, mutate(rng, rng.choice(pool), everything))

    def replay(self, jobs: list[tuple[Path, str]]) -> None:
        for index in range(self.report.next_job, len(jobs)):
            path, name = jobs[index]
            self.report.next_job = index + 1
            self.execute(TARGETS[name], path.read_bytes(), index)


def _replay_jobs(options: Options) -> list[tuple[Path, str]]:
    files = []
    for directory in options.replay:
        if not directory.is_dir():
            raise ValueError(f"--replay {directory}: not a directory")
        files += [directory / name for name in load_corpus(directory)]
    return [(path, name) for path in files for name in options.targets]


def _run_worker(
    options: Options, inflight: mmap.mmap, jobs: list[tuple[Path, str]], start: int, out: int, dump: Any, scratch: str
) -> None:
    """In the forked child: run, then write the report to the pipe ``out`` as JSON."""
    faulthandler.enable(file=dump)  # a crash's stacks, for the finding's notes
    report = Report(next_job=start)
    worker = _Worker(options, inflight, report, dump)
    _WORKER["scratch"] = scratch
    logging.disable(logging.WARNING)  # the server logs every refusal
    sys.unraisablehook = lambda unraisable: worker.ignored.append(
        f"{unraisable.err_msg or 'Exception ignored in'}: {unraisable.object!r}: {unraisable.exc_value!r}"
    )
    try:
        if options.replay:
            worker.replay(jobs)
        else:
            worker.fuzz()
        gc.collect()
    finally:
        faulthandler.cancel_dump_traceback_later()
        _close_server()
    os.write(out, json.dumps(report.__dict__).encode())


def _start_worker(options: Options, inflight: mmap.mmap, jobs: list[tuple[Path, str]], start: int,
                  scratch: str) -> tuple[int, int, Any]:  # fmt: skip
    """Fork a worker: (its pid, the pipe its report comes on, the file of its stacks)."""
    reader, writer = os.pipe()
    dump = tempfile.TemporaryFile()
    child = os.fork()
    if child == 0:  # pragma: no cover - the worker process
        status = 1
        try:
            # Ctrl-C reaches every process of the terminal's group: the parent decides, and ends
            # the worker itself (an interrupted execution is no finding).
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            os.close(reader)
            _run_worker(options, inflight, jobs, start, writer, dump, scratch)
            status = 0
        except BaseException:  # noqa: BLE001 - the child must never return into the caller
            dump.write(traceback.format_exc().encode())
            dump.flush()
        finally:
            os._exit(status)
    os.close(writer)
    return child, reader, dump


def _wait(child: int, reader: int) -> tuple[bytes, int]:
    """The worker's report (empty if it died) and its wait status. Interrupted (Ctrl-C), the
    worker is killed and reaped before the interruption goes on."""
    try:
        with os.fdopen(reader, "rb") as pipe:
            output = pipe.read()
        return output, os.waitpid(child, 0)[1]
    except BaseException:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        raise


def run(options: Options, log: Callable[[str], None] = print) -> Report:
    """Fuzz (or replay) in forked workers until the time is up: a worker that dies (a crash, or the
    watchdog ending a hang) leaves its input in shared memory; it is saved as a finding and a new
    worker carries on (the next seed; in a replay, the next job). The workers' scratch directory
    is made and removed here, so that a worker that dies leaves nothing behind.
    ``KeyboardInterrupt`` (Ctrl-C) ends the worker and goes on to the caller."""
    total = Report()
    jobs = _replay_jobs(options) if options.replay else []
    largest = max([MAX_INPUT, *(path.stat().st_size for path, _ in jobs)])
    inflight = mmap.mmap(-1, _INFLIGHT.size + largest)  # shared with the forked workers
    deadline = time.monotonic() + options.seconds
    scratch = tempfile.mkdtemp(prefix="dedup-fuzz-")
    try:
        restarts = 0
        while True:
            inflight[0] = _IDLE
            seed = options.seed + 1_000_003 * restarts
            remaining = max(deadline - time.monotonic(), 0.0)
            worker_options = Options(**{**options.__dict__, "seed": seed, "seconds": remaining})
            child, reader, dump = _start_worker(worker_options, inflight, jobs, total.next_job, scratch)
            with dump:
                output, wait_status = _wait(child, reader)
                dump.seek(0)
                stacks = dump.read().decode(errors="replace")
            if output:
                part = Report(**json.loads(output))
                for name, count in part.executions.items():
                    total.executions[name] = total.executions.get(name, 0) + count
                total.findings += part.findings
                total.next_job = part.next_job
                break
            # The worker died. Whatever it was running is the finding.
            state, index, job, length = _INFLIGHT.unpack_from(inflight, 0)
            if os.WIFSIGNALED(wait_status):
                how = f"the process was killed by {signal.Signals(os.WTERMSIG(wait_status)).name}"
            else:
                how = f"the process exited with status {os.waitstatus_to_exitcode(wait_status)}"
                if "Timeout" in stacks:
                    how = f"a hang: the execution ran past {options.timeout} s and the watchdog ended the process"
            if state != _RUNNING:
                raise RuntimeError(f"python -m dedup fuzz: the worker failed outside an execution ({how}):\n{stacks}")
            name = list(TARGETS)[index]
            data = bytes(inflight[_INFLIGHT.size : _INFLIGHT.size + length])
            saved = save_finding(options.crashes, name, data, f"{how}\n\n{stacks}")
            log(f"python -m dedup fuzz: {name}: {how}; input saved as {saved}")
            total.findings.append(str(saved))
            total.executions[name] = total.executions.get(name, 0) + 1
            restarts += 1
            if options.replay:
                total.next_job = job + 1
                if total.next_job >= len(jobs):
                    break
            elif time.monotonic() >= deadline:
                break
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return total


# --- command line ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=cli.non_negative_float, default=10.0, help="how long to fuzz (default 10)")
    parser.add_argument("--seed", type=cli.seed, default=0, help="the random seed (default 0)")
    parser.add_argument("--target", action="append", choices=list(TARGETS), metavar="NAME",
                        help=f"a target (repeatable; default all): {', '.join(TARGETS)}")  # fmt: skip
    parser.add_argument("--corpus", type=Path, metavar="DIR",
                        help=f"seed inputs (default {DEFAULT_CORPUS} if present, else built in)")  # fmt: skip
    parser.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"), metavar="DIR",
                        help="where findings are saved (default fuzz-crashes)")  # fmt: skip
    replay = "run every file under DIR through every target once, no mutation (repeatable)"
    parser.add_argument("--replay", type=Path, action="append", default=[], metavar="DIR", help=replay)
    parser.add_argument("--timeout", type=cli.positive_float, default=10.0,
                        help="seconds an execution may take (default 10)")  # fmt: skip
    parser.add_argument("--write-corpus", type=Path, metavar="DIR", help="write the built-in seed inputs to DIR")


def run_command(args: argparse.Namespace) -> int:
    try:
        from .. import _records, _snapshot, _state  # noqa: F401
    except ImportError as error:
        print(f"python -m dedup fuzz: the compiled core did not load ({error}); build it first", file=sys.stderr)
        return 1
    if args.write_corpus is not None:
        for name, data in seed_inputs().items():
            path = args.write_corpus / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        print(f"wrote {len(seed_inputs())} inputs under {args.write_corpus}")
        return 0
    for directory in args.replay:
        if not directory.is_dir():
            raise cli.UsageError(f"argument --replay: {directory}: not a directory")
    corpus = args.corpus
    if corpus is None and DEFAULT_CORPUS.is_dir():
        corpus = DEFAULT_CORPUS
    elif corpus is not None and not args.replay and not load_corpus(corpus):
        raise cli.UsageError(f"argument --corpus: no inputs in {corpus}")
    options = Options(
        seconds=args.seconds, seed=args.seed, targets=args.target or list(TARGETS), corpus=corpus,
        crashes=args.crashes, replay=args.replay, timeout=args.timeout,
    )  # fmt: skip
    started = time.monotonic()
    report = run(options)
    elapsed = time.monotonic() - started
    counts = ", ".join(f"{name} {report.executions.get(name, 0)}" for name in options.targets)
    mode = f"replay of {', '.join(map(str, options.replay))}" if options.replay else f"seed {options.seed}"
    total = sum(report.executions.values())
    print(f"dedup fuzz ({mode}): {total} executions in {elapsed:.1f} s ({counts}); {len(report.findings)} findings")
    for finding in report.findings:
        print(f"  finding: {finding} (see {Path(finding).with_suffix('.txt')})")
    return 1 if report.findings else 0


COMMAND = cli.Command("fuzz", __doc__, add_arguments, run_command)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dedup fuzz ARGV`` in this process."""
    return COMMAND.main(argv)
