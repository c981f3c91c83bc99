"""What ``python -m dedup bench`` prints and draws: the rows of its table (:class:`Row`), the
points of its sweep (:class:`Point`), their formatting, the machine's description, and the plot.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass

from .bench_streams import BARE, C_LOOPS, ORDERS


@dataclass
class Row:
    """One line of the table: dedup's figure, a peer's (or the limit's), their ratio
    (greater than 1: dedup ahead), the issue's target and whether it is met."""

    what: str
    value: float
    unit: str
    peer: str = ""
    peer_value: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None


@dataclass
class Point:
    """Throughput of one engine on one stream (a point of the sweep and of the plot)."""

    engine: str
    producers: int
    order: str
    window: int
    batches_per_s: float


def fmt_count(n: int) -> str:
    return f"{n:,}"


def fmt_rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}K"
    return f"{value:.0f}"


def fmt_value(value: float, unit: str) -> str:
    if unit in ("batches/s",):
        return f"{fmt_rate(value)} {unit}"
    if unit == "bytes/producer":
        return f"{value:.1f} B/producer"
    return f"{value:.3g} {unit}" if value < 100 else f"{value:,.0f} {unit}"


def table_lines(rows: Sequence[Row]) -> list[str]:
    header = ("what", "dedup", "compared with", "ratio", "target", "met")
    body = []
    for row in rows:
        peer = row.peer if row.peer_value is None else f"{row.peer} {fmt_value(row.peer_value, row.unit)}"
        ratio = "" if row.ratio is None else f"{row.ratio:.3g}"
        met = "" if row.met is None else ("yes" if row.met else "no")
        body.append((row.what, fmt_value(row.value, row.unit), peer, ratio, row.target, met))
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]
    lines = []
    for line in (header, tuple("-" * w for w in widths), *body):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return lines


def with_limits(points: Sequence[Point]) -> list[Point]:
    """``points`` and, per stream, a "C loop" point: the faster of the two C loop layouts."""
    best: dict[tuple[int, str, int], float] = {}
    for p in points:
        if p.engine in C_LOOPS:
            stream = (p.producers, p.order, p.window)
            best[stream] = max(best.get(stream, 0.0), p.batches_per_s)
    return [*points, *(Point("C loop", n, order, window, rate) for (n, order, window), rate in best.items())]


def streams(points: Sequence[Point]) -> list[tuple[int, str, int]]:
    """The (producers, order, window) of the points, by window, order and producers."""
    return sorted({(p.producers, p.order, p.window) for p in points}, key=lambda k: (k[2], ORDERS.index(k[1]), k[0]))


def rates_of(points: Sequence[Point], stream: tuple[int, str, int]) -> dict[str, float]:
    """Batches/s by engine on one stream, "C loop" (the faster layout) included."""
    return {p.engine: p.batches_per_s for p in with_limits(points) if (p.producers, p.order, p.window) == stream}


def ratio_of(rates: dict[str, float], limit: str) -> float | None:
    """The compiled table's speed as a fraction of ``limit``'s, None if either is missing."""
    return rates["compiled"] / rates[limit] if {"compiled", limit} <= rates.keys() else None


def sweep_lines(points: Sequence[Point]) -> list[str]:
    """Batches/s by stream and engine, and compiled as a fraction of the bare limit and of the
    C implementation of the same rules (the faster C loop layout)."""
    columns = ("compiled", "twin", *C_LOOPS, BARE)
    header = ["producers", "order", "window", *columns, "compiled / bare", "compiled / C loop"]
    body = []
    for stream in streams(points):
        n, order, window = stream
        rates = rates_of(points, stream)
        ratios = [ratio_of(rates, BARE), ratio_of(rates, "C loop")]
        body.append(
            [f"{n:,}", order, str(window), *(fmt_rate(rates[e]) if e in rates else "-" for e in columns),
             *("-" if ratio is None else f"{ratio:.3g}" for ratio in ratios)]
        )  # fmt: skip
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]
    lines = []
    for line in (header, *body):
        cells = (
            cell.ljust(w) if i == 1 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        lines.append("  ".join(cells))
    return lines


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else the machine type (``x86_64``)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


#: The CPU features dedup's kernels ask for (platform/cpu.h, GCC's names) and their names in
#: /proc/cpuinfo's "flags" (x86-64) or "Features" (ARM).
CPU_FEATURES = {
    "sse4.2": "sse4_2",
    "popcnt": "popcnt",
    "avx2": "avx2",
    "avx512f": "avx512f",
    "avx512vl": "avx512vl",
    "avx512bw": "avx512bw",
    "avx512vbmi": "avx512vbmi",
    "crc32": "crc32",
}
DISABLE_VARIABLE = "DEDUP_DISABLE_CPU_FEATURES"


def cpu_features() -> list[str]:
    """The features of :data:`CPU_FEATURES` that /proc/cpuinfo lists for the first CPU, by
    dedup's names (before DEDUP_DISABLE_CPU_FEATURES); empty where there is no /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            line = next(line for line in cpuinfo if line.startswith(("flags", "Features")))
    except (OSError, StopIteration):
        return []
    found = set(line.split(":", 1)[1].split())
    return [name for name, flag in CPU_FEATURES.items() if flag in found]


def kernel_choices() -> dict[str, object]:
    """The kernels the compiled core chose in this process (the CPU's features less
    DEDUP_DISABLE_CPU_FEATURES), by dispatcher."""
    from .. import _testing  # a private report, for tools and benchmarks

    return {name: list(value) if isinstance(value, tuple) else value for name, value in _testing.kernels().items()}


def kernels() -> str:
    """:func:`kernel_choices` in a line, as every figure must say."""
    return ", ".join(f"{name} {value}" for name, value in kernel_choices().items())


def machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{cpu_model()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average {load}"


def plot(points: Sequence[Point], path: str) -> None:
    """Throughput against producer count, one line per engine (random order, window 5 solid;
    in-order dashed, window 64 dotted, when measured)."""
    import matplotlib  # an optional extra: dedup[bench]

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5.6), dpi=100)
    colours = {"compiled": "tab:blue", "twin": "tab:green", "C loop": "tab:red", BARE: "tab:purple"}
    labels = {"C loop": "C loop (faster layout)"}
    points = with_limits(points)
    styles = {("random", 5): "-", ("in-order", 5): "--", ("random", 64): ":", ("in-order", 64): "-."}
    for (order, window), style in styles.items():
        for engine in colours:
            line = sorted(
                (p.producers, p.batches_per_s)
                for p in points
                if (p.engine, p.order, p.window) == (engine, order, window)
            )
            if line:
                xs, ys = zip(*line, strict=True)
                axes.plot(xs, ys, style, marker="o", markersize=3, color=colours[engine],
                          label=f"{labels.get(engine, engine)}, {order}, window {window}")  # fmt: skip
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("producers")
    axes.set_ylabel("append_many, batches per second")
    axes.set_title("dedup: throughput against producer count", fontsize=10)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize=6, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.13))  # below the axes
    figure.text(0.01, 0.01, machine(), fontsize=5, color="grey")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
