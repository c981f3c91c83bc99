"""``python -m dedup bench``: the table's rows and ratios, the progress bar, the limit, ``--plot``.

Each test runs the command in a fresh interpreter with the hidden ``--smoke`` option (tiny
sizes: a second or two). Nothing here times anything: the figures are checked for form only.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROWS = [
    "append, one call",
    "append_many, 1,000 producers",
    "append_many, 20,000 producers",
    "append from bytes",
    "header scan",
    "remove_expired",
    "snapshot encode",
    "snapshot decode",
    "memory",
]


def bench(*arguments: str, **environment: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", **environment}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "dedup", "bench", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )


def table(stdout: str) -> list[dict[str, str]]:
    """The printed table as dicts by column name, cut at the columns of its dash line."""
    lines = stdout.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("-----"))
    spans, start = [], 0
    for dashes in lines[rule].split("  "):
        spans.append((start, start + len(dashes)))
        start += len(dashes) + 2
    names = [lines[rule - 1][a:b].strip() for a, b in spans]
    rows = []
    for line in lines[rule + 1 :]:
        if not line.strip():
            break
        rows.append({name: line[a:b].strip() for name, (a, b) in zip(names, spans, strict=True)})
    return rows


@pytest.fixture(scope="module")
def smoke():
    done = bench("--smoke")
    assert done.returncode == 0, done.stderr
    return done


def test_the_table_has_every_headline_row(smoke):
    rows = table(smoke.stdout)
    for prefix in ROWS:
        assert any(row["what"].startswith(prefix) for row in rows), (prefix, smoke.stdout)
    assert all(row["dedup"] and row["dedup"][0].isdigit() for row in rows), smoke.stdout


def test_ratios_are_numbers_against_the_limit_and_the_peers(smoke):
    rows = table(smoke.stdout)
    assert "limit: the C reference loop" in smoke.stdout
    against_loop = [row for row in rows if row["compared with"].startswith("C loop")]
    assert {row["what"].split(",")[0] for row in against_loop} == {"append_many", "memory"}
    twin = [row for row in rows if row["compared with"].startswith("twin")]
    assert twin, smoke.stdout
    for row in against_loop + twin:
        assert float(row["ratio"]) > 0, row
    for row in rows:
        if row["ratio"]:
            float(row["ratio"])
        assert row["met"] in ("", "yes", "no"), row


def test_the_sweep_and_the_progress_bar(smoke):
    sweep = smoke.stdout.split("compiled / C loop", 1)[1].strip().splitlines()
    assert sweep[0].split()[:3] == ["100", "random", "5"]
    float(sweep[0].split()[-1])
    # The bar redraws one line with "\r" (text mode reads it as a line break).
    assert smoke.stderr.count("[#") >= 2 and "] 0/" in smoke.stderr and smoke.stderr.rstrip().endswith("done")


def test_without_a_compiler_the_limit_is_not_available():
    done = bench("--smoke", CC=str(ROOT / "no-such-compiler"))
    assert done.returncode == 0, done.stderr
    assert "limit: not available" in done.stdout
    rows = table(done.stdout)
    assert not any(row["compared with"].startswith("C loop") for row in rows)
    assert any(row["what"].startswith("append_many") for row in rows)


def test_plot(tmp_path):
    target = tmp_path / "scaling.png"
    if importlib.util.find_spec("matplotlib") is None:
        done = bench("--plot", str(target))
        assert done.returncode == 2
        assert "--plot needs matplotlib" in done.stderr and "pip install" in done.stderr
        assert not target.exists()
    else:
        done = bench("--smoke", "--plot", str(target))
        assert done.returncode == 0, done.stderr
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
