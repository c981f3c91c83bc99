"""``python -m dedup bench``: the headline figures of this machine, against the peers and the limit.

The limit is ``reference_loop.c`` (beside this module, shipped with the package): the least a
producer-state table must do per batch (one hash lookup by producer id, one window update), in
plain C, built here with the compiler and ``-O3`` of the extension build and loaded with
:mod:`ctypes`. Every kernel is reported as a fraction of it, measured in the same run. The
benchmark suite (``python -m pytest benchmarks/``) uses the same pieces:
:class:`ReferenceTable`, :class:`Stream`, :func:`build_reference_loop`.

Usage: ``python -m dedup bench [--full] [--plot FILE.png]``. The quick run (under a minute on a
2-core machine) prints one table; ``--full`` adds the scaling sweep (100 to 10,000,000
producers, random and in-order, windows 5 and 64, every engine); ``--plot`` draws throughput
against producer count for each engine (needs matplotlib: ``pip install 'dedup[bench]'``).

The C source ships inside the package (``dedup/tools/reference_loop.c``), so an installed wheel
has it too; a machine without a C compiler prints "limit: not available" instead of the ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
import time
from collections.abc import Sequence

from . import cli
from .bench_loop import (
    REFERENCE_SOURCE,
    ReferenceLoopUnavailable,
    ReferenceTable,
    build_reference_loop,
    compiler_command,
)
from .bench_measure import FULL, QUICK, SMOKE, Bench, Progress, fits_in_memory
from .bench_report import kernels, machine, plot, sweep_lines, table_lines
from .bench_streams import C_LOOPS, ORDERS, Stream, filled_table, in_sequence_ranks

__all__ = [  # what benchmarks/ and the tests take from here
    "C_LOOPS",
    "ORDERS",
    "ReferenceLoopUnavailable",
    "ReferenceTable",
    "Stream",
    "build_reference_loop",
    "filled_table",
    "fits_in_memory",
    "in_sequence_ranks",
    "main",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No numbers to give: the sizes of a run are fixed (quick, ``--full``), so that runs compare."""
    parser.add_argument("--full", action="store_true", help="add the scaling sweep: every size, order and window")
    parser.add_argument("--plot", metavar="FILE.png", help="draw throughput against producer count (matplotlib)")
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
    print(f"dedup bench ({run} run): {machine()}")
    print(f"kernels: {kernels()}")
    if bench.limit_error is None:
        print(
            f"limit: the C reference loop ({REFERENCE_SOURCE.name}, {shlex.join(compiler_command())} -O3), "
            "the faster of its two layouts, measured in this run"
        )
    else:
        print(f"limit: not available ({bench.limit_error})")
    print("ratio: dedup's speed / the other's (memory: the other's bytes / dedup's); above 1, dedup is ahead")
    print()
    for line in table_lines(rows):
        print(line)
    if args.full or args.smoke:
        print()
        for line in sweep_lines(bench.points):
            print(line)
    print(f"\n{time.perf_counter() - started:.1f} s; the whole suite: python -m pytest benchmarks/ --full")
    if args.plot:
        plot(bench.points, args.plot)
        print(f"plot: {args.plot}")
    return 0


COMMAND = cli.Command("bench", __doc__, add_arguments, run_command)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dedup bench ARGV`` in this process."""
    return COMMAND.main(argv)
