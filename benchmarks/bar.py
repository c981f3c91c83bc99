"""The bar for low-level code (benchmarks/RESULTS.md, "The bar for low-level code"): every
mechanism's headline figures with and without it, in the cases that matter.

    python benchmarks/bar.py --wait 60 --json /tmp/bar.json  # every row, every case
    python benchmarks/bar.py --only slab,prefetch            # some mechanisms, in that order
    python benchmarks/bar.py --cases a,b                     # some cases
    python benchmarks/bar.py --report /tmp/bar.json          # a saved run as markdown

Cases:
  a  fresh process: the first call of the operation in a new interpreter (each sample its own
     process: the first decode of a broker starting), setup untimed;
  b  other core busy: steady state (a warm-up call, then the median of --rounds calls) while a
     spinning process runs pinned to CPU 1 and the measured one is pinned to CPU 0 (not
     pinned in the loader thread's row, which would otherwise see one CPU and not start);
  c  no AVX-512: steady state with DEDUP_DISABLE_CPU_FEATURES=avx512f (platform/cpu.h), on
     both sides; for an instruction-set kernel, its scalar path's figure instead;
  d  steady state on a quiet machine, for reference.

The two sides of a row differ in one thing: DEDUP_DISABLE_CPU_FEATURES (the run-time kernels),
a scratch build with one -DDEDUP_NO_... macro (mechanisms chosen when compiling), or the
loader thread's mode. Samples alternate (A B, B A, ...), so that drift hits both sides; each
sample is its own process. Scratch builds go to --scratch (default /tmp/dedup-bar), never into
the tree; a removed mechanism's row builds the last commit that had it. Run it on a quiet
machine: it starts when the 1-minute load is under 0.5 and each cell when others use under
10% of the CPUs (--wait MINUTES: waits that long in all, else exits), and prints the CPU, its
vector flags, the load and the kernels each side chose.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

PRODUCERS = 1_000_000
WINDOW = 5
ROWS = 100_000
TIMESTAMP = 1_767_225_600_000
EXPIRATION_MS = 60_000
FIRST_PRODUCER_ID = 1_000
BATCH_BYTES = 1024
BATCHES_MIB = 16

# Scratch builds: name -> the C macro that switches the mechanism off (those of removed
# mechanisms exist only in the commits their rows build, below).
BUILDS = {
    "base": None,
    "no-prefetch": "DEDUP_NO_PREFETCH",
    "no-slab": "DEDUP_NO_SLAB",
    "no-thp": "DEDUP_NO_HUGE_PAGE_HINT",
    "no-small-long": "DEDUP_NO_SMALL_LONG",
    "no-sse2": "DEDUP_NO_SSE2",
    "no-likely": "DEDUP_NO_LIKELY",
    "no-avx2-sweep": "DEDUP_NO_AVX2_SWEEP",
}


@dataclass(frozen=True)
class Side:
    build: str = "base"
    disable: str = ""  # DEDUP_DISABLE_CPU_FEATURES
    threads: int = 1  # decode_snapshot's loader thread (2: with it)


@dataclass(frozen=True)
class Mechanism:
    name: str
    what: str
    figures: tuple[str, ...]
    with_: Side
    without: Side
    instruction_set: bool  # judged by (a), (b); (c) records the scalar path's figure
    tree: str = ""  # the commit both sides are built from ("": this checkout); a removed one's last


# Mechanisms that failed the bar were removed; their rows build the last commit that had them
# (with the -DDEDUP_NO_... macro of their measurement): the loader thread, bulk_place16.h,
# any_equal.h, the THP hint on encode outputs and bulk_finish's prefetch at BEFORE_REMOVALS;
# CRC folding, the AVX2 index sweep, small_long.h and the branch hint at BEFORE_LAST_REMOVALS.
BEFORE_REMOVALS = "b12bcdb"
BEFORE_LAST_REMOVALS = "f032e82"

MECHANISMS = [
    Mechanism(
        "crc-instruction",
        "kernels/crc32c.h: the CRC instruction (SSE 4.2) against the table",
        ("validate", "encode", "decode"),
        Side(),
        Side(disable="sse4.2"),
        True,
    ),
    Mechanism(
        "crc-fold",
        "kernels/crc32c.h: AVX-512 carry-less folding against the instruction (removed)",
        ("validate", "encode", "decode"),
        Side(),
        Side(disable="vpclmulqdq"),
        True,
        tree=BEFORE_LAST_REMOVALS,
    ),
    Mechanism(
        "snapshot-w5",
        "kernels/snapshot_w5.h: AVX-512 window-5 slots",
        ("encode", "decode"),
        Side(),
        Side(disable="avx512vbmi"),
        True,
    ),
    Mechanism(
        "bulk-place16",
        "kernels/bulk_place16.h: AVX-512 index placement (removed)",
        ("decode",),
        Side(disable="vpclmulqdq avx512vbmi"),
        Side(disable="avx512f"),
        True,
        tree=BEFORE_REMOVALS,
    ),
    Mechanism(
        "expiry-avx2",
        "kernels/expiry.h: AVX2 marking and POPCNT count",
        ("expire-none", "expire-10", "expire-all"),
        Side(),
        Side(disable="avx2"),
        True,
    ),
    Mechanism(
        "expiry-avx2-sweep",
        "kernels/expiry.h: the AVX2 index sweep alone, the marking's AVX2 form on both sides (removed)",
        ("expire-10",),
        Side(),
        Side(build="no-avx2-sweep"),
        True,
        tree=BEFORE_LAST_REMOVALS,
    ),
    Mechanism(
        "any-equal-sse2",
        "kernels/any_equal.h: SSE2 sequence compare (removed)",
        ("append_many-10k", "append_many-1M"),
        Side(),
        Side(build="no-sse2"),
        False,
        tree=BEFORE_REMOVALS,
    ),
    Mechanism(
        "slab", "platform/slab.h: huge-page growth slabs", ("expire-all", "grow"), Side(), Side(build="no-slab"), False
    ),
    Mechanism(
        "thp-hint",
        "platform/memory.h: MADV_HUGEPAGE on encode outputs (removed)",
        ("encode", "decode"),
        Side(),
        Side(build="no-thp"),
        False,
        tree=BEFORE_REMOVALS,
    ),
    Mechanism(
        "loader-thread",
        "platform/prefault.h + snapshot/loader.pxi: decode on a loader thread (removed)",
        ("decode",),
        Side(threads=2),
        Side(threads=1),
        False,
        tree=BEFORE_REMOVALS,
    ),
    Mechanism(
        "prefetch",
        "platform/prefetch.h: the prefetch-ahead loops of append_many and remove_expired",
        ("append_many-10k", "append_many-1M", "expire-10"),
        Side(),
        Side(build="no-prefetch"),
        False,
    ),
    Mechanism(
        "prefetch-bulk",
        "table/bulk.pxi: bulk_finish's prefetch-ahead, the only prefetch a decode runs (removed)",
        ("decode",),
        Side(),
        Side(build="no-prefetch"),
        False,
        tree=BEFORE_REMOVALS,
    ),
    Mechanism(
        "likely-hint",
        "platform/compiler.h: dedup_likely, the client fast path's branch hint (removed)",
        ("append_many-10k", "append_many-1M"),
        Side(),
        Side(build="no-likely"),
        False,
        tree=BEFORE_LAST_REMOVALS,
    ),
    Mechanism(
        "small-long",
        "platform/small_long.h: a PyLong's digits read directly (removed)",
        ("append",),
        Side(),
        Side(build="no-small-long"),
        False,
        tree=BEFORE_LAST_REMOVALS,
    ),
]

# figure -> (unit, higher is better)
UNITS = {
    "validate": ("GB/s", True),
    "encode": ("ms", False),
    "decode": ("ms", False),
    "expire-none": ("ms", False),
    "expire-10": ("ms", False),
    "expire-all": ("ms", False),
    "append_many-10k": ("M rows/s", True),
    "append_many-1M": ("M rows/s", True),
    "grow": ("ms", False),
    "append": ("ns", False),
}


# --- the worker: one process, one side, one figure ----------------------------------------


def in_sequence_ranks(ids, start):
    """For each row, how many earlier rows have the same id, plus start (int32)."""
    import numpy as np

    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    first = np.r_[0, np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1]
    run_start = np.repeat(first, np.diff(np.r_[first, len(ids)]))
    ranks = np.empty(len(ids), dtype=np.int64)
    ranks[order] = np.arange(len(ids)) - run_start
    return (ranks + start).astype(np.int32)


def full_table(cls, producers=PRODUCERS):
    """producers producers with a full window of 5 (the snapshot benchmarks' table)."""
    import numpy as np

    table = cls(WINDOW, capacity=producers)
    ids = np.arange(FIRST_PRODUCER_ID, FIRST_PRODUCER_ID + producers, dtype=np.int64)
    epochs = np.zeros(ROWS, np.int16)
    counts = np.ones(ROWS, np.int32)
    stamps = np.full(ROWS, TIMESTAMP, np.int64)
    for sequence in range(WINDOW):
        sequences = np.full(ROWS, sequence, np.int32)
        for start in range(0, producers, ROWS):
            n = min(ROWS, producers - start)
            result = table.append_many(
                ids[start : start + n],
                epochs[:n],
                sequences[:n],
                counts[:n],
                stamps[:n],
                log_end_offset=table.map_end_offset,
            )
            assert (result.error_codes == 0).all()
    return table


def expiry_table(cls):
    """remove_expired's benchmark table: 1,000,000 producers, one batch each, every tenth
    stamped EXPIRATION_MS earlier."""
    import numpy as np

    table = cls(WINDOW)
    ids = np.arange(FIRST_PRODUCER_ID, FIRST_PRODUCER_ID + PRODUCERS, dtype=np.int64)
    stamps = np.where(np.arange(PRODUCERS) % 10 == 0, TIMESTAMP - EXPIRATION_MS, TIMESTAMP).astype(np.int64)
    zeros16, zeros32, ones = np.zeros(ROWS, np.int16), np.zeros(ROWS, np.int32), np.ones(ROWS, np.int32)
    for start in range(0, PRODUCERS, ROWS):
        result = table.append_many(
            ids[start : start + ROWS],
            zeros16,
            zeros32,
            ones,
            stamps[start : start + ROWS],
            log_end_offset=table.map_end_offset,
        )
        assert (result.error_codes == 0).all()
    return table


EXPIRY = {
    "expire-none": (TIMESTAMP, 2 * EXPIRATION_MS, 0),
    "expire-10": (TIMESTAMP, EXPIRATION_MS, PRODUCERS // 10),
    "expire-all": (TIMESTAMP + EXPIRATION_MS, EXPIRATION_MS, PRODUCERS),
}


def workload(figure, scratch, threads):
    """(setup, call, value): setup() prepares a round (untimed), call() is timed, value(seconds)
    the figure in its unit."""
    import numpy as np

    from dedup import Origin, ProducerStateTable, _records, decode_snapshot, encode_snapshot

    state = {}
    if figure == "validate":
        data = (Path(scratch) / "batches.bin").read_bytes()

        def call():
            _records.validate_batches(data, origin=Origin.CLIENT)

        return (lambda: None), call, lambda s: len(data) / s / 1e9
    if figure == "encode":
        table = full_table(ProducerStateTable)
        return (lambda: None), (lambda: encode_snapshot(table, "full")), lambda s: s * 1e3
    if figure == "decode":
        data = (Path(scratch) / "snapshot.full").read_bytes()
        kwargs = {}
        try:
            from dedup import _testing

            _testing.prefault_mode(1 if threads == 2 else 0)  # the loader thread, as measured
        except AttributeError:
            kwargs = {"threads": threads} if threads != 1 else {}

        def decode():
            state.pop("table", None)  # the previous round's table freed first, as a broker would
            state["table"] = decode_snapshot(data, **kwargs)

        return (lambda: state.pop("table", None)), decode, lambda s: s * 1e3
    if figure in EXPIRY:
        now, expiration, removed = EXPIRY[figure]

        def setup():
            if state.get("table") is None or len(state["table"]) != PRODUCERS:
                state.pop("table", None)
                state["table"] = expiry_table(ProducerStateTable)

        def call():
            assert state["table"].remove_expired(now, expiration) == removed

        return setup, call, lambda s: s * 1e3
    if figure.startswith("append_many"):
        producers = 10_000 if figure.endswith("10k") else PRODUCERS
        rows = 10_000
        calls = 12
        rng = np.random.default_rng(20_260_101)
        ids = np.arange(FIRST_PRODUCER_ID, FIRST_PRODUCER_ID + producers, dtype=np.int64)
        table = ProducerStateTable(WINDOW)
        prefill = rng.permutation(ids)
        for start in range(0, producers, ROWS):
            n = min(ROWS, producers - start)
            table.append_many(
                prefill[start : start + n],
                np.zeros(n, np.int16),
                np.zeros(n, np.int32),
                np.ones(n, np.int32),
                np.full(n, TIMESTAMP, np.int64),
                log_end_offset=table.map_end_offset,
            )
        flat = ids[rng.integers(0, producers, size=calls * rows)]
        sequences = in_sequence_ranks(flat, start=1).reshape(calls, rows)
        flat = flat.reshape(calls, rows)
        epochs, counts, stamps = np.zeros(rows, np.int16), np.ones(rows, np.int32), np.full(rows, TIMESTAMP, np.int64)
        state["k"] = 0

        def call():
            k = state["k"]
            state["k"] = k + 1
            result = table.append_many(
                flat[k], epochs, sequences[k], counts, stamps, log_end_offset=table.map_end_offset
            )
            assert (result.error_codes == 0).all()

        return (lambda: None), call, lambda s: rows / s / 1e6
    if figure == "grow":
        ids = np.arange(FIRST_PRODUCER_ID, FIRST_PRODUCER_ID + PRODUCERS, dtype=np.int64)
        zeros16, zeros32, ones = np.zeros(ROWS, np.int16), np.zeros(ROWS, np.int32), np.ones(ROWS, np.int32)
        stamps = np.full(ROWS, TIMESTAMP, np.int64)

        def setup():
            state.pop("table", None)
            state["table"] = ProducerStateTable(WINDOW)

        def call():
            table = state["table"]
            for start in range(0, PRODUCERS, ROWS):
                table.append_many(
                    ids[start : start + ROWS], zeros16, zeros32, ones, stamps, log_end_offset=table.map_end_offset
                )

        return setup, call, lambda s: s * 1e3
    if figure == "append":
        n = 20_000
        table = ProducerStateTable(WINDOW)
        pids = [FIRST_PRODUCER_ID + k for k in range(1000)]
        for offset, pid in enumerate(pids):
            table.append(pid, 0, 0, 1, offset, max_timestamp=TIMESTAMP)
        state["seq"] = 1
        state["offset"] = 1000

        def call():
            append = table.append
            sequence, offset = state["seq"], state["offset"]
            for k in range(n):
                append(pids[k % 1000], 0, sequence + k // 1000, 1, offset + k, max_timestamp=TIMESTAMP)
            state["seq"] = sequence + n // 1000
            state["offset"] = offset + n

        return (lambda: None), call, lambda s: s / n * 1e9
    raise ValueError(f"unknown figure {figure}")


def worker(args) -> None:
    setup, call, value = workload(args.figure, args.scratch, args.threads)
    results = []
    for round_number in range(1 if args.fresh else args.rounds + 1):
        setup()
        before = time.perf_counter()
        call()
        elapsed = time.perf_counter() - before
        if args.fresh or round_number:
            results.append(value(elapsed))
    from dedup import _testing

    extra = {}
    if args.figure == "grow":  # the grown table's memory: what it reports, and the process's
        with open("/proc/self/statm") as statm:
            extra["rss_mb"] = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    print(json.dumps({"value": statistics.median(results), "kernels": _testing.kernels(), **extra}))


# --- the driver ---------------------------------------------------------------------------


def busy_fraction(seconds: float = 1.0) -> float:
    """The share of all CPUs' time spent busy over the next `seconds` (from /proc/stat): this
    driver runs nothing meanwhile, so it is everyone else's."""

    def times():
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait

    total0, idle0 = times()
    time.sleep(seconds)
    total1, idle1 = times()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


def quiet(wait: float, limit: float, busy_limit: float) -> str:
    """'load, busy share' once the machine is quiet: the 1-minute load under `limit` when the
    run starts (our own samples raise it later), and at most 10% of the CPUs busy in a second
    before each cell (--busy-limit). Waits up to `wait` minutes in all (saying so every 20
    minutes), then exits."""
    start = time.monotonic()
    deadline = start + wait * 60
    said = start
    while True:
        load = os.getloadavg()[0]
        busy = busy_fraction()
        if busy < busy_limit and (load < limit or quiet.started):
            quiet.started = True
            return f"{load:.2f},{busy:.0%}"
        if time.monotonic() - said > 20 * 60:
            said = time.monotonic()
            print(f"# waiting for a quiet machine: load {load:.2f}, {busy:.0%} busy", flush=True)
        if time.monotonic() > deadline:
            top = subprocess.run(["ps", "aux", "--sort=-%cpu"], capture_output=True, text=True).stdout
            raise SystemExit(f"load {load:.2f}, {busy:.0%} busy: not quiet\n" + "\n".join(top.splitlines()[:6]))
        time.sleep(15)


quiet.started = False


def source_digest(tree: str) -> str:
    """What a scratch build is built from: the commit, or a digest of this checkout's core."""
    if tree:
        return subprocess.run(["git", "rev-parse", tree], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    digest = hashlib.sha256()
    sources = list((ROOT / "src_cython").rglob("*")) + list((ROOT / "dedup").rglob("*.py")) + [ROOT / "setup.py"]
    for path in sorted(sources):
        if path.is_file():
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build(scratch: Path, name: str, rebuild: bool, tree: str = "") -> Path:
    """A scratch copy of the package and core, built with the macro of `name`: of this
    checkout, or of commit `tree` (to measure a mechanism removed since). Built again when its
    sources or flags changed."""
    where = scratch / ("builds" if not tree else f"builds-{tree}") / name
    marker = where / ".built"
    macro = BUILDS[name]
    cflags = (os.environ.get("CFLAGS", "") + (f" -D{macro}" if macro else "")).strip()
    stamp = f"{cflags}\n{source_digest(tree)}"
    if marker.exists() and marker.read_text() == stamp and not rebuild:
        return where
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    parts = ["setup.py", "pyproject.toml", "README.md", "MANIFEST.in"]
    if tree:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", tree, "src_cython", "dedup", *parts],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    else:
        for part in parts:
            if (ROOT / part).exists():
                shutil.copy2(ROOT / part, where / part)
        shutil.copytree(ROOT / "src_cython", where / "src_cython")
        shutil.copytree(ROOT / "dedup", where / "dedup", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        if (ROOT / "build" / "cython").exists():  # the same generated C: only the C compile differs
            shutil.copytree(ROOT / "build" / "cython", where / "build" / "cython")
    env = {**os.environ, "CFLAGS": cflags}
    subprocess.run(
        [PYTHON, "setup.py", "build_ext", "--inplace", "--force", "-j", "2"],
        cwd=where,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker.write_text(stamp)
    return where


def inputs(scratch: Path) -> None:
    """The bytes the decode and validate figures read: a full-format snapshot of 1,000,000
    producers and 16 MiB of 1 KiB v2 batches (built once, by the tree's own package)."""
    if (scratch / "snapshot.full").exists() and (scratch / "batches.bin").exists():
        return
    code = f"""
import sys; sys.path.insert(0, {str(ROOT / "benchmarks")!r})
from pathlib import Path
import numpy as np
from bar import full_table
from dedup import ProducerStateTable, encode_snapshot
Path({str(scratch / "snapshot.full")!r}).write_bytes(encode_snapshot(full_table(ProducerStateTable), "full"))
from kafka.record.default_records import DefaultRecordBatchBuilder
rng = np.random.default_rng(20_260_101)
pieces = []
for k in range({BATCHES_MIB} * 1024 * 1024 // {BATCH_BYTES}):
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=1000 + k % 10000,
                                  producer_epoch=0, base_sequence=k // 10000, batch_size=1 << 20)
    b.append(0, timestamp={TIMESTAMP}, key=b"k" * 10, value=b"v" * 940, headers=[])
    pieces.append(bytes(b.build()))
Path({str(scratch / "batches.bin")!r}).write_bytes(b"".join(pieces))
"""
    subprocess.run([PYTHON, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)


def sample(where: Path, side: Side, figure: str, case: str, rounds: int, scratch: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(where), "OPENBLAS_NUM_THREADS": "1"}
    disable = side.disable
    if case == "c":
        disable = (disable + " avx512f").strip()
    env["DEDUP_DISABLE_CPU_FEATURES"] = disable
    command = [
        PYTHON,
        str(Path(__file__).resolve()),
        "--worker",
        figure,
        "--scratch",
        str(scratch),
        "--threads",
        str(side.threads),
        "--rounds",
        str(rounds),
    ]
    if case == "a":
        command.append("--fresh")
    if case == "b" and side.threads == 1:
        command = ["taskset", "-c", "0"] + command
    # (b) with the loader thread: the measured process is not pinned, else the loader would
    # see one allowed CPU and never start; the spinner still holds CPU 1.
    out = subprocess.run(command, env=env, capture_output=True, text=True, cwd="/tmp")
    if out.returncode:
        raise SystemExit(f"worker failed: {' '.join(command)}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def short(kernels: dict) -> str:
    """The kernels chosen, in a few letters: crc32c's mode, then the vector kernels in use."""
    names = {"table": "table", "instruction": "instr", "avx512-fold": "fold"}  # fold: older trees
    crc = names.get(kernels["crc32c"], str(kernels["crc32c"]))
    on = [name for name in ("snapshot_w5", "bulk_place16", "expiry_avx2") if kernels.get(name)]  # bulk: older
    return "crc=" + crc + "".join(" " + name for name in on)


def machine() -> list[str]:
    """The header of a run: when, which commit, the CPU model and its vector flags."""
    with open("/proc/cpuinfo") as cpuinfo:
        lines = cpuinfo.read().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    vector = " ".join(f for f in flags if f.startswith(("avx512", "avx2", "sse4_2", "vpclmul", "pclmul")))
    git = ["git", "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, cwd=ROOT, capture_output=True, text=True).stdout.strip()
    when = datetime.datetime.now().isoformat(timespec="seconds")
    return [f"# {when}  commit {commit}  CPU {cpu}, {os.cpu_count()} CPUs", f"# flags: {vector}"]


def gain(with_value: float, without_value: float, higher_better: bool) -> float:
    """How much the mechanism gains, as a fraction of the figure without it."""
    if higher_better:
        return with_value / without_value - 1
    return without_value / with_value - 1


def report(paths: list[str]) -> str:
    """The rows of saved runs (--json) as one markdown table: per mechanism and figure, each
    case's with / without / gain (a later file's cell replaces an earlier one's)."""
    cells: dict[tuple[str, str], dict[str, dict]] = {}
    for path in paths:
        for row in json.loads(Path(path).read_text()):
            cells.setdefault((row["mechanism"], row["figure"]), {})[row["case"]] = row
    lines = [
        "| mechanism | figure | (a) fresh process | (b) other core busy | (c) no AVX-512 | (d) quiet, steady |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (mechanism, figure), by_case in cells.items():
        unit = next(iter(by_case.values()))["unit"]
        out = []
        for case in "abcd":
            row = by_case.get(case)
            out.append("" if row is None else f"{row['with']:.3g} / {row['without']:.3g} ({row['gain']:+.0%})")
        lines.append(f"| {mechanism} | {figure} ({unit}) | " + " | ".join(out) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--figure", help=argparse.SUPPRESS)
    parser.add_argument("--fresh", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--only", default="", help="comma-separated mechanisms, run in that order (default: all)")
    parser.add_argument("--figures", default="", help="comma-separated figures (default: each mechanism's)")
    parser.add_argument("--cases", default="a,b,c,d", help="comma-separated cases among a, b, c, d")
    parser.add_argument("--pairs", type=int, default=5, help="alternated with/without samples per row and case")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per steady-state sample")
    parser.add_argument("--scratch", default="/tmp/dedup-bar", help="scratch directory (builds, inputs)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the scratch builds")
    parser.add_argument("--tree", default="", help="build a commit's core instead of this checkout's")
    parser.add_argument("--wait", type=float, default=0, help="minutes to wait in all for a quiet machine")
    parser.add_argument("--load-limit", type=float, default=0.5, help="1-minute load to start under")
    parser.add_argument("--busy-limit", type=float, default=0.10, help="share of the CPUs others may use")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--report", nargs="+", metavar="JSON", help="print saved runs as one markdown table")
    args = parser.parse_args(argv)
    if args.worker:
        args.figure = args.worker
        worker(args)
        return 0
    if args.report:
        print(report(args.report))
        return 0
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    only = [name for name in args.only.split(",") if name]
    by_name = {m.name: m for m in MECHANISMS}
    if set(only) - set(by_name):
        parser.error(f"unknown mechanisms {sorted(set(only) - set(by_name))}")
    mechanisms = [by_name[name] for name in only] if only else MECHANISMS  # in the order given
    cases = [c for c in args.cases.split(",") if c]
    wanted_figures = set(filter(None, args.figures.split(",")))
    # Built once, before any sample: an edit of the checkout during the run changes nothing.
    builds = {
        (tree, name): build(scratch, name, args.rebuild, tree)
        for tree, name in sorted({(args.tree or m.tree, s.build) for m in mechanisms for s in (m.with_, m.without)})
    }
    inputs(scratch)
    print("\n".join(machine()))
    print(f"# {args.pairs} alternated pairs per cell; steady state: median of {args.rounds} calls after one")
    rows = []
    head = f"{'mechanism':16} {'figure':16} case {'with':>10} {'without':>10} {'gain':>7}"
    print(f"{head} load,busy  kernels with | without")
    for m in mechanisms:
        for figure in m.figures:
            if wanted_figures and figure not in wanted_figures:
                continue
            unit, higher = UNITS[figure]
            for case in cases:
                if case == "c" and m.instruction_set:
                    continue  # its (c) figure is the scalar path's: the "without" of (d)
                spinner = None
                load = quiet(args.wait, args.load_limit, args.busy_limit)
                try:
                    if case == "b":
                        spinner = subprocess.Popen(["taskset", "-c", "1", PYTHON, "-c", "while True: pass"])
                        time.sleep(0.5)
                    values = {"with": [], "without": []}
                    kernels = {}
                    rss = {"with": [], "without": []}
                    for pair in range(args.pairs):
                        order = ("with", "without") if pair % 2 == 0 else ("without", "with")
                        for label in order:
                            side = m.with_ if label == "with" else m.without
                            result = sample(
                                builds[(args.tree or m.tree, side.build)],
                                side,
                                figure,
                                case,
                                args.rounds,
                                scratch,
                            )
                            values[label].append(result["value"])
                            kernels[label] = result["kernels"]
                            rss[label].append(result)
                finally:
                    if spinner is not None:
                        spinner.kill()
                        spinner.wait()
                w, wo = statistics.median(values["with"]), statistics.median(values["without"])
                g = gain(w, wo, higher)
                if figure == "grow":
                    ks = (
                        f"RSS MB {statistics.median(r['rss_mb'] for r in rss['with']):.0f} with, "
                        f"{statistics.median(r['rss_mb'] for r in rss['without']):.0f} without; "
                    )
                else:
                    ks = ""
                ks += short(kernels["with"]) + " | " + short(kernels["without"])
                print(f"{m.name:16} {figure:16} {case:4} {w:10.3f} {wo:10.3f} {g:+7.1%} {load:>8}  {ks}", flush=True)
                rows.append(
                    {
                        "mechanism": m.name,
                        "figure": figure,
                        "unit": unit,
                        "case": case,
                        "with": w,
                        "without": wo,
                        "gain": g,
                        "load": load,
                        "samples": values,
                        "kernels": kernels,
                    }
                )
                if args.json:  # after every cell: a run cut short keeps what it measured
                    Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
