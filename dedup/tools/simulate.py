"""Deterministic fault simulation of a replicated partition: ``python -m dedup simulate``.

One seed fixes a whole run, as in FoundationDB's and TigerBeetle's simulators: the cluster's
settings, the producers (idempotent ones, and some with a stable identity that write in
transactions), and a plan of actions: producers sending and polling (the
:class:`~dedup.producer.IdempotentProducer` model: up to 5 requests in flight, lost requests
and responses, reordering, all from per-producer seeded networks), leader crashes, broker
restarts with recovery (some after a clean shutdown), a torn last write and snapshot files
deleted, truncated or bit-flipped while a broker is down, a full disk during the leader's
write (a real ``EFBIG`` from ``RLIMIT_FSIZE``), stale duplicates of old requests arriving at
the leader, clock jumps that expire idle producers, application restarts (a new producer id)
and identity restarts (the same transactional id, a bumped epoch, the old instance fenced),
and unclean leader elections in runs that allow them. The logs are real files (in
``/dev/shm`` when it exists), the time is simulated.

Producers with a stable identity go through Kafka's transaction coordinator, the code ``serve``
runs (:mod:`dedup.tools.simulate_txn`: its ``__transaction_state`` partitions replicated on the
same brokers, its timers on the simulated clock, the wire left out): each transaction writes
on the producer model's partition and once on a second partition, and the plan adds the
coordinator's faults: a crash of its broker after the PrepareCommit/PrepareAbort record and
before the first marker or between the markers of the two partitions (then a new coordinator
loads the log and completes the transaction), the failover of a ``__transaction_state``
leader, a restart of the coordinator, ``transaction.timeout.ms`` passing while a producer is
slow (an abort with the epoch bumped), and zombies (an older instance going on after a newer
one took its epoch).

At the end every broker is restarted, the producers get a last chance to deliver (and end
their transactions), and the run is checked (:func:`check`):

1. every acknowledged batch is in the leader's committed log exactly once, at the offsets it
   was acknowledged with, with its records; a batch missing from it lies in an offset range
   an unclean election reported as lost (:attr:`Cluster.data_loss <dedup.cluster.Cluster>`);
2. each producer's batches are in the log in sequence order;
3. no replica's log holds a batch twice (the same producer id, epoch and sequence);
4. every live replica's producer table equals a table rebuilt from its own log (a replay of
   every batch from the log start), except where expiration made them differ the way Kafka's
   do (for a producer that expired, the live entry's batches are the newest of the rebuilt);
5. every in-sync replica's log equals the leader's up to the high watermark;
6. without an unclean election nothing is reported lost;
7. each replica's ``.txnindex`` equals one rebuilt from its log, except for transactions
   spanning a range Kafka's empty-before-truncation shortcut did not replay (Kafka's index
   differs there too, spec §5.3; counted apart);
8. without an unclean election, a read_committed reader sees every record of every committed
   transaction exactly once, no record of an aborted one (by its producer, or by the
   coordinator: fenced, timed out), all or nothing of one whose EndTxn answer was lost; no
   transaction is left open and the last stable offset is the high watermark;
9. the coordinator settled every transactional id (Empty, CompleteCommit, CompleteAbort) and
   a coordinator loading ``__transaction_state`` afresh agrees on each one's producer id,
   epoch and state;

and along the run: the last stable offset never above the high watermark nor past an open
transaction (after every step), each transactional id's producer id, epoch and state after
every reload equal to those before the crash (PrepareX completed), no zombie commit.

A failing run is shrunk (actions removed one at a time while it still fails) and its trace
printed; ``python -m dedup simulate --seed N`` replays a seed exactly.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import _args
from ..coordinator.transaction_coordinator import TransactionCoordinator
from . import cli
from .simulate_check import check
from .simulate_plan import STEPS, Action, Settings, plan, settings_for
from .simulate_run import Outcome, Run

__all__ = ["Action", "Outcome", "Summary", "check", "plan", "run_seed", "simulate", "main"]


# --- runs ------------------------------------------------------------------------------------------


def _scratch() -> str:
    return tempfile.mkdtemp(prefix="dedup-sim-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


def execute(seed: int, settings: Settings, actions: Sequence[Action],
            coordinator_class: type[TransactionCoordinator] | None = TransactionCoordinator) -> Outcome:  # fmt: skip
    """Run ``actions`` with ``seed``'s settings in a fresh directory and check the result
    (``coordinator_class``: the transaction coordinator built, a broken one in tests; None:
    the library's small coordinator of :mod:`dedup.cluster`, as before Kafka's)."""
    directory = _scratch()
    try:
        run = Run(seed, settings, actions, directory, coordinator_class)
        try:
            run.execute()
            violations = check(run)
        except Exception as error:  # an exception escaping the cluster is a failure of the run
            violations = [f"exception: {error!r}"]
        finally:
            run.close()
        return Outcome(seed, settings, list(actions), violations, run.counts, run.trace)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run_seed(seed: int, *, unclean_share: float = 0.25, steps: int = STEPS, kafka_coordinator: bool = True) -> Outcome:
    """One run: the settings and actions that ``seed`` fixes (``steps`` of them; a share
    ``unclean_share`` of seeds allow unclean elections), executed and checked; without
    ``kafka_coordinator``, transactions go through the library's small coordinator, with the
    plans from before (what the regression seeds found then replay).
    ``TypeError``/``ValueError`` naming a bad argument, before anything runs."""
    seed = _args.integer("seed", seed, 0, (1 << 63) - 1, "in [0, 2^63-1]")
    steps = _args.integer("steps", steps, 0, (1 << 31) - 1, "in [0, 2^31-1]")
    if isinstance(unclean_share, bool) or not isinstance(unclean_share, int | float):
        raise TypeError(f"unclean_share must be a number in [0, 1], got {type(unclean_share).__name__}")
    if not 0.0 <= unclean_share <= 1.0:
        raise ValueError(f"unclean_share must be in [0, 1], got {unclean_share!r}")
    settings = settings_for(seed, unclean_share)
    actions = plan(seed, settings, steps, coordinator=kafka_coordinator)
    return execute(seed, settings, actions, TransactionCoordinator if kafka_coordinator else None)


def shrink(outcome: Outcome, budget: int = 400) -> Outcome:
    """A shorter plan that still fails: actions dropped one at a time (last first) while the
    run keeps failing, at most ``budget`` re-runs."""
    best = outcome
    index = len(best.actions) - 1
    while index >= 0 and budget > 0:
        candidate = best.actions[:index] + best.actions[index + 1 :]
        budget -= 1
        trial = execute(best.seed, best.settings, candidate)
        if not trial.ok:
            best = trial
        index -= 1
    return best


@dataclass
class Summary:
    runs: int = 0
    failures: list[int] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    acknowledged: int = 0
    duplicates: int = 0
    losses: int = 0
    unclean_elections: int = 0
    kafka_shortcut: int = 0
    committed_transactions: int = 0
    aborted_transactions: int = 0
    reloads_checked: int = 0
    txnindex_kafka_shortcut: int = 0
    seconds: float = 0.0

    def add(self, outcome: Outcome) -> None:
        self.runs += 1
        if not outcome.ok:
            self.failures.append(outcome.seed)
        self.faults.update(outcome.counts.faults)
        self.acknowledged += outcome.counts.acknowledged
        self.duplicates += outcome.counts.duplicates
        self.losses += outcome.counts.lost_batches
        self.unclean_elections += outcome.counts.unclean_elections
        self.kafka_shortcut += outcome.counts.kafka_shortcut
        self.committed_transactions += outcome.counts.committed_transactions
        self.aborted_transactions += outcome.counts.aborted_transactions
        self.reloads_checked += outcome.counts.reloads_checked
        self.txnindex_kafka_shortcut += outcome.counts.txnindex_kafka_shortcut

    def merge(self, other: Summary) -> None:
        """Add the counts of ``other`` (a worker's share of the seeds); the seconds stay."""
        self.runs += other.runs
        self.failures += other.failures
        self.faults.update(other.faults)
        self.acknowledged += other.acknowledged
        self.duplicates += other.duplicates
        self.losses += other.losses
        self.unclean_elections += other.unclean_elections
        self.kafka_shortcut += other.kafka_shortcut
        self.committed_transactions += other.committed_transactions
        self.aborted_transactions += other.aborted_transactions
        self.reloads_checked += other.reloads_checked
        self.txnindex_kafka_shortcut += other.txnindex_kafka_shortcut

    def transactions_line(self) -> str:
        return (
            f"transactions through Kafka's coordinator: {self.committed_transactions} committed, "
            f"{self.aborted_transactions} aborted by their producer; {self.reloads_checked} transactional ids' "
            "state compared before a coordinator crash and after its reload; "
            f"{self.txnindex_kafka_shortcut} .txnindex entries differing from their log by Kafka's rebuild shortcut "
            "(spec §5.3, counted apart)"
        )

    def line(self) -> str:
        return (
            f"{self.runs} runs, {len(self.failures)} failed; {sum(self.faults.values())} faults injected; "
            f"{self.acknowledged} batches acknowledged; {self.duplicates} retries recognised as duplicates; "
            f"{self.losses} acknowledged batches lost, all to {self.unclean_elections} reported unclean elections; "
            f"invariant violations: {len(self.failures)}; {self.kafka_shortcut} table entries left behind their log "
            f"by Kafka's rebuild shortcut (spec §5.3, counted apart); {self.seconds:.1f} s"
        )


#: In a worker process of ``--jobs``: the parent's event asking it to stop after the run it is in.
_STOP: Any = None


def simulate(seeds: Sequence[int], *, unclean_share: float = 0.25, steps: int = STEPS,
             progress: bool = False) -> tuple[Summary, list[Outcome]]:  # fmt: skip
    """Run every seed of ``seeds``: the summary, and the outcomes of the runs that failed."""
    summary = Summary()
    failed: list[Outcome] = []
    started = time.perf_counter()
    try:
        for count, seed in enumerate(seeds, 1):
            if _STOP is not None and _STOP.is_set():
                break
            outcome = run_seed(seed, unclean_share=unclean_share, steps=steps)
            summary.add(outcome)
            if not outcome.ok:
                failed.append(outcome)
            if progress and count % 100 == 0:
                print(f"\r{count}/{len(seeds)} runs, {len(summary.failures)} failed", end="", file=sys.stderr,
                      flush=True)  # fmt: skip
    finally:
        if progress:
            print(file=sys.stderr)  # the progress line ends, even when Ctrl-C ends the runs
    summary.seconds = time.perf_counter() - started
    return summary, failed


def report(outcome: Outcome) -> str:
    lines = [f"seed {outcome.seed} FAILED ({outcome.settings})", *[f"  violation: {v}" for v in outcome.violations]]
    lines.append(f"  minimal plan ({len(outcome.actions)} actions): {', '.join(map(str, outcome.actions))}")
    lines += [f"  {line}" for line in outcome.trace]
    return "\n".join(lines)


def quiet_logs() -> None:
    """The logs and the cluster warn at every crash, election and recovery: the trace says it."""
    for name in ("dedup.log", "dedup.cluster", "dedup.segment", "dedup.snapshot", "dedup.coordinator"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _start_worker(stop: Any) -> None:
    global _STOP
    _STOP = stop
    quiet_logs()


def _chunk(args: tuple[list[int], float, int]) -> tuple[Summary, list[Outcome]]:
    seeds, unclean_share, steps = args
    return simulate(seeds, unclean_share=unclean_share, steps=steps)


def simulate_in_processes(seeds: Sequence[int], jobs: int, *, unclean_share: float = 0.25,
                          steps: int = STEPS) -> tuple[Summary, list[Outcome]]:  # fmt: skip
    """:func:`simulate` with the seeds shared among ``jobs`` worker processes.

    The workers are born ignoring SIGINT, so that Ctrl-C (which a terminal sends to every
    process of the group) reaches the parent alone: it then asks the workers to stop after the
    run each is in (their scratch directories removed as usual), waits for them, and raises
    ``KeyboardInterrupt``.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    chunks = [(list(seeds[i::jobs]), unclean_share, steps) for i in range(jobs)]
    started = time.perf_counter()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the spawned workers
    try:
        pool = context.Pool(jobs, initializer=_start_worker, initargs=(stop,))
    finally:
        signal.signal(signal.SIGINT, previous)
    with pool:
        try:
            parts = pool.map(_chunk, chunks)
        except KeyboardInterrupt:
            stop.set()
            pool.close()
            pool.join()
            raise
    summary = Summary()
    failed: list[Outcome] = []
    for part, outcomes in parts:
        summary.merge(part)
        failed += outcomes
    summary.seconds = time.perf_counter() - started
    return summary, failed


# --- command line ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=cli.seed, default=0, help="first seed (default 0)")
    parser.add_argument("--runs", type=cli.positive_int, default=1,
                        help="runs, seeds SEED to SEED + RUNS - 1 (default 1)")  # fmt: skip
    parser.add_argument("--steps", type=cli.int_in(0, (1 << 31) - 1), default=STEPS,
                        help=f"actions per run (default {STEPS})")  # fmt: skip
    parser.add_argument("--unclean-share", type=cli.share, default=0.25, metavar="SHARE",
                        help="share of runs that allow unclean leader elections (default 0.25)")  # fmt: skip
    parser.add_argument("--jobs", type=cli.positive_int, default=1, help="worker processes (default 1)")
    parser.add_argument("--trace", action="store_true", help="print the trace of every run (with --runs 1)")


def run_command(args: argparse.Namespace) -> int:
    if args.seed + args.runs - 1 > (1 << 63) - 1:
        raise cli.UsageError(f"argument --seed: seeds {args.seed} to {args.seed} + {args.runs} - 1 pass 2^63-1")
    quiet_logs()
    seeds = range(args.seed, args.seed + args.runs)
    if args.jobs > 1:
        summary, failed = simulate_in_processes(seeds, args.jobs, unclean_share=args.unclean_share, steps=args.steps)
    else:
        summary, failed = simulate(seeds, unclean_share=args.unclean_share, steps=args.steps,
                                   progress=sys.stderr.isatty())  # fmt: skip
    if args.trace and args.runs == 1:
        outcome = run_seed(args.seed, unclean_share=args.unclean_share, steps=args.steps)
        print("\n".join(outcome.trace))
    for outcome in failed[:3]:
        print(report(shrink(outcome)))
    if summary.failures:
        print("failed seeds: " + " ".join(map(str, sorted(summary.failures))))
    print(summary.line())
    print(summary.transactions_line())
    print("faults: " + ", ".join(f"{name} {count}" for name, count in sorted(summary.faults.items())))
    return 1 if failed else 0


COMMAND = cli.Command("simulate", __doc__, add_arguments, run_command)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dedup simulate ARGV`` in this process."""
    return COMMAND.main(argv)
