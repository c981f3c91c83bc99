"""``python -m dedup bench``: the headline figures of this machine, against the peers and two limits.

Every kernel is reported against two C loops (beside this module, shipped with the package,
compiled here and loaded with :mod:`ctypes`), both measured in the same run:

- the **bare limit** (``bare_loop.c``): the least any producer-state table must do per batch (find
  the producer with dedup's keyed hash, compare against the last 5 batches only as far as the
  verdict needs, record the batch), with dedup's own memory tricks (prefetch, huge pages), built
  with the extension's flags plus ``-march=native``, presized, writing only the verdict's columns;
- the **C implementation of the same rules** (``reference_loop.c``, "C loop"): the five result
  columns of ``append_many``, no prefetch, malloc, ``-O3`` as the extension; the faster of its
  two layouts.

The benchmark suite (``python -m pytest benchmarks/``) uses the same pieces:
:class:`BareTable`, :class:`ReferenceTable`, :class:`Stream`, :func:`build_reference_loop`.

Usage: ``python -m dedup bench [--full] [--json] [--plot FILE.png]``. The quick run (about a
minute on a 2-core machine) prints one table and the sweep of ``append_many`` over producer
counts; ``--full`` sweeps 100 to 10,000,000 producers, random and in-order, windows 5 and 64,
every engine; ``--json`` prints the same figures as one JSON object instead (:func:`report`:
machine, CPU model and the CPU features found, ``DEDUP_DISABLE_CPU_FEATURES``, the kernels
chosen, both limits, every row and every point of the sweep with both ratios); ``--plot`` draws
throughput against producer count for each engine (needs matplotlib: ``pip install 'dedup[bench]'``).

A machine without a C compiler prints "limit: not available" and "bare limit: not available"
(in JSON: ``"available": false`` and the reason) instead of the ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import cli
from .bench_loop import (
    BARE_SOURCE,
    REFERENCE_SOURCE,
    BareTable,
    BareVerdicts,
    ReferenceLoopUnavailable,
    ReferenceTable,
    bare_compile_flags,
    build_bare_loop,
    build_reference_loop,
    compiler_command,
)
from .bench_measure import FULL, QUICK, SMOKE, Bench, Progress, fits_in_memory
from .bench_report import (
    DISABLE_VARIABLE,
    Row,
    cpu_features,
    cpu_model,
    kernel_choices,
    kernels,
    machine,
    plot,
    rates_of,
    ratio_of,
    streams,
    sweep_lines,
    table_lines,
)
from .bench_streams import BARE, C_LOOPS, ORDERS, Stream, filled_table, in_sequence_ranks

__all__ = [  # what benchmarks/ and the tests take from here
    "BARE",
    "C_LOOPS",
    "ORDERS",
    "BareTable",
    "BareVerdicts",
    "ReferenceLoopUnavailable",
    "ReferenceTable",
    "Stream",
    "build_bare_loop",
    "build_reference_loop",
    "filled_table",
    "fits_in_memory",
    "in_sequence_ranks",
    "main",
    "report",
]

#: The version of :func:`report`'s layout; a change of a key's meaning bumps it.
JSON_SCHEMA = "dedup-bench/1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No numbers to give: the sizes of a run are fixed (quick, ``--full``), so that runs compare."""
    parser.add_argument("--full", action="store_true", help="add the scaling sweep: every size, order and window")
    parser.add_argument("--plot", metavar="FILE.png", help="draw throughput against producer count (matplotlib)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object, not as tables")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tiny sizes, for the tests


def run_command(args: argparse.Namespace) -> int:
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        print(
            "python -m dedup bench: --plot needs matplotlib, which is not installed: "
            "pip install 'dedup[bench]' (or pip install matplotlib)",
            file=sys.stderr,
        )
        return 2
    try:
        from .. import _state  # noqa: F401
    except ImportError as error:
        print(f"python -m dedup bench: the compiled table did not load ({error}); build it first", file=sys.stderr)
        return 1
    scale = SMOKE if args.smoke else FULL if args.full else QUICK
    bench = Bench(scale, Progress(0))
    started = time.perf_counter()
    rows = bench.run()
    run = "smoke" if args.smoke else "full" if args.full else "quick"
    if args.json:
        print(json.dumps(report(bench, rows, run, time.perf_counter() - started), indent=1))
    else:
        print(f"dedup bench ({run} run): {machine()}")
        print(f"kernels: {kernels()}")
        if bench.bare_error is None:
            print(
                f"bare limit: {BARE_SOURCE.name} ({shlex.join([*compiler_command(), *bare_compile_flags()])}), "
                "the least any table must do, with prefetch and huge pages, measured in this run"
            )
        else:
            print(f"bare limit: not available ({bench.bare_error})")
        if bench.limit_error is None:
            print(
                f"limit: the C reference loop ({REFERENCE_SOURCE.name}, {shlex.join(compiler_command())} -O3), "
                "a C implementation of the same rules, the faster of its two layouts, measured in this run"
            )
        else:
            print(f"limit: not available ({bench.limit_error})")
        print("ratio: dedup's speed / the other's (memory: the other's bytes / dedup's); above 1, dedup is ahead")
        print()
        for line in table_lines(rows):
            print(line)
        print()
        for line in sweep_lines(bench.points):
            print(line)
        print(f"\n{time.perf_counter() - started:.1f} s; the whole suite: python -m pytest benchmarks/ --full")
    if args.plot:
        plot(bench.points, args.plot)
        print(f"plot: {args.plot}")
    return 0


def report(bench: Bench, rows: Sequence[Row], run: str, seconds: float) -> dict[str, Any]:
    """The figures of a run as one JSON-ready object (``--json``), laid out as :data:`JSON_SCHEMA`:

    - ``schema``, ``run`` ("quick", "full" or "smoke"), ``seconds``;
    - ``machine``: ``cpu_model`` (/proc/cpuinfo), ``cpus``, ``python``, ``load_average`` (1, 5 and
      15 minutes: the machine may be shared);
    - ``cpu``: ``features_found`` (the features dedup's kernels ask for that the CPU lists, by
      dedup's names), ``disabled`` (DEDUP_DISABLE_CPU_FEATURES, null if unset);
    - ``kernels``: the kernel each dispatcher chose in this process;
    - ``limits``: ``bare`` and ``reference``, each ``available``, ``source``, ``command`` (the
      compiler's argument list) and ``error`` (null, or why it is not available);
    - ``rows``: the table's rows (``what``, ``value``, ``unit``, ``peer``, ``peer_value``,
      ``ratio``, ``target``, ``met``);
    - ``append_many``: per stream (``producers``, ``order``, ``window``) the ``batches_per_s``
      of each engine ("C loop" is the faster layout), ``ratio_to_bare`` and ``ratio_to_c_loop``
      (compiled / the limit, null where one was not measured).
    """
    load = os.getloadavg()
    limits = {
        "bare": {
            "available": bench.bare_error is None,
            "source": BARE_SOURCE.name,
            "command": [*compiler_command(), *bare_compile_flags()],
            "error": bench.bare_error,
        },
        "reference": {
            "available": bench.limit_error is None,
            "source": REFERENCE_SOURCE.name,
            "command": [*compiler_command(), "-O3"],
            "error": bench.limit_error,
        },
    }
    sweep = []
    for stream in streams(bench.points):
        rates = rates_of(bench.points, stream)
        sweep.append(
            {
                "producers": stream[0],
                "order": stream[1],
                "window": stream[2],
                "batches_per_s": rates,
                "ratio_to_bare": ratio_of(rates, BARE),
                "ratio_to_c_loop": ratio_of(rates, "C loop"),
            }
        )
    return {
        "schema": JSON_SCHEMA,
        "run": run,
        "seconds": round(seconds, 3),
        "machine": {
            "cpu_model": cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": [round(x, 2) for x in load],
        },
        "cpu": {"features_found": cpu_features(), "disabled": os.environ.get(DISABLE_VARIABLE)},
        "kernels": kernel_choices(),
        "limits": limits,
        "rows": [dataclasses.asdict(row) for row in rows],
        "append_many": sweep,
    }


COMMAND = cli.Command("bench", __doc__, add_arguments, run_command)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dedup bench ARGV`` in this process."""
    return COMMAND.main(argv)
