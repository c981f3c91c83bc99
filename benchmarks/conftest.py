"""Shared pieces of dedup's benchmark suite (pytest-benchmark), run with ``python -m pytest benchmarks/``.

Every ratio is measured side by side in one run: a benchmark records its headline numbers in
:data:`RESULTS` (and in ``benchmark.extra_info``, so ``--benchmark-json`` keeps them); the
assertions that compare two benchmarks read them back, and the terminal summary prints them.
Workloads are built outside the timed region. Timing is never asserted in ``tests/``.
"""

from __future__ import annotations

import os

# numpy's bundled OpenBLAS starts spinning threads that steal the second core of a 2-core
# machine from the timed thread; this must happen before anything imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import platform  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import dedup  # noqa: E402
from dedup import reference  # noqa: E402
from dedup.tools.bench import Stream, in_sequence_ranks  # noqa: E402, F401 - kit.in_sequence_ranks

try:
    from dedup import _state
except ImportError:  # pragma: no cover - the guard below turns this into a failure
    _state = None

TWINS = {
    "compiled": _state.ProducerStateTable if _state is not None else None,
    "reference": reference.ProducerStateTable,
}

#: Headline numbers of this run, by benchmark: filled by :func:`record`, read by the ratio
#: checks and by the terminal summary.
RESULTS: dict[str, dict[str, float]] = {}

#: Calls of ``append_many`` take this many rows: big enough that the Python boundary is noise,
#: small enough that the output arrays do not turn into page faults.
CALL_ROWS = 100_000

#: Kafka's producer ids are handed out sequentially by the coordinator; start somewhere not 0.
FIRST_PRODUCER_ID = 1_000


@pytest.fixture(scope="session")
def kit():
    """This module: the workload builders and :func:`record`, for the benchmark modules.

    (A fixture rather than ``import conftest``: with ``tests/`` in the same run, the name
    ``conftest`` may belong to the other directory's module.)
    """
    return sys.modules[__name__]


def compiled_table():
    """The compiled table class; a loud failure (not a skip) if the extension did not load."""
    if _state is None:
        pytest.fail("dedup._state did not load: build it with `python setup.py build_ext --inplace`")
    return _state.ProducerStateTable


@pytest.fixture(params=["compiled", "reference"])
def twin(request):
    """``(name, table class)`` of one twin; a benchmark using it is measured on both."""
    if request.param == "compiled":
        compiled_table()
    return request.param, TWINS[request.param]


def timing(benchmark) -> dict[str, float] | None:
    """Seconds per round (min, median, mean, max, rounds) of a finished benchmark, or None when
    timing is off (``--benchmark-disable``/``--benchmark-skip``)."""
    meta = getattr(benchmark, "stats", None)
    if not meta or not meta.stats:
        return None
    stats = meta.stats
    return {"min": stats.min, "median": stats.median, "mean": stats.mean, "max": stats.max, "rounds": stats.rounds}


def record(benchmark, key: str, **numbers: float) -> None:
    """Keep ``numbers`` as ``RESULTS[key]`` for this run and, given a benchmark, as its
    ``extra_info`` (which ``--benchmark-json`` saves)."""
    if benchmark is not None:
        benchmark.extra_info.update(numbers)
    RESULTS.setdefault(key, {}).update(numbers)


def per_unit(benchmark, units: int) -> dict[str, float] | None:
    """Seconds per unit of work at the min and the median round (a round does ``units``)."""
    seconds = timing(benchmark)
    if seconds is None:
        return None
    return {"min": seconds["min"] / units, "median": seconds["median"] / units, "rounds": seconds["rounds"]}


class Workload(Stream):
    """Batches of ``producers`` producers interleaved at random, each producer's own batches
    in sequence (record_count 1), cut into calls of ``rows`` rows: ``dedup.tools.bench.Stream`` in
    random order, the builder ``python -m dedup bench`` uses too.

    :meth:`fill` gives every producer its entry (sequence 0, in random order), so that the
    timed calls (``calls`` of them, sequences from 1 on) measure the steady state, not inserts.
    """

    def __init__(self, producers: int, calls: int, rows: int = CALL_ROWS, seed: int = 20_260_101):
        super().__init__(producers, calls, rows, "random", seed)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} CPUs; Python {platform.python_version()}; numpy {np.__version__}; "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}; load average {load}"
    )


def pytest_addoption(parser):
    parser.addoption(
        "--full",
        action="store_true",
        default=False,
        help="dedup: also run the heavy benchmarks (marked `full`: 10,000,000 producers, every order and window)",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "full: a heavy benchmark, run only with --full or -m full")


def pytest_collection_modifyitems(config, items):
    """Without ``--full`` (or a ``-m`` naming ``full``), the heavy cases are deselected, not skipped."""
    if config.getoption("--full") or "full" in (config.getoption("-m") or ""):
        return
    heavy = [item for item in items if item.get_closest_marker("full")]
    if heavy:
        config.hook.pytest_deselected(items=heavy)
        items[:] = [item for item in items if not item.get_closest_marker("full")]


@pytest.fixture(scope="session")
def reference_loop():
    """The C reference loop (``dedup/tools/reference_loop.c``), compiled once per session with
    sysconfig's compiler at -O3; a loud failure, not a skip, if it cannot be built."""
    from dedup.tools.bench import ReferenceLoopUnavailable, build_reference_loop

    try:
        return build_reference_loop()
    except ReferenceLoopUnavailable as error:
        pytest.fail(f"the C reference loop could not be built: {error}")


def pytest_report_header(config):
    loaded = "compiled module loaded" if _state is not None else "COMPILED MODULE MISSING"
    return [
        f"dedup benchmarks: {machine()}",
        f"dedup {dedup.__version__}: {loaded}; timed region excludes workload construction",
    ]


def _fmt(value: float) -> str:
    if abs(value) >= 1e6:
        return f"{value / 1e6:,.2f}M"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not RESULTS:
        return
    terminalreporter.section("dedup benchmark summary (this run)")
    for key in sorted(RESULTS):
        numbers = ", ".join(f"{name}={_fmt(value)}" for name, value in RESULTS[key].items())
        terminalreporter.write_line(f"{key}: {numbers}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    terminalreporter.write_line(f"load average at the end: {load}")
