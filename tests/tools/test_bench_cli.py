"""``python -m dedup bench``: the table's rows and ratios, the progress bar, the limit, ``--plot``.

Each test runs the command in a fresh interpreter with the hidden ``--smoke`` option (tiny
sizes: a second or two). Nothing here times anything: the figures are checked for form only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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


# --- issue 18: the bare limit and --json ---------------------------------------------------

JSON_KEYS = {"schema", "run", "seconds", "machine", "cpu", "kernels", "limits", "rows", "append_many"}
NO_VECTORS = "avx512f avx2 sse4.2 popcnt"


def bench_json(*arguments: str, **environment: str) -> dict:
    done = bench("--smoke", "--json", *arguments, **environment)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # the whole of stdout is one object: nothing printed beside it


@pytest.fixture(scope="module")
def smoke_json():
    return bench_json()


def test_json_carries_the_machine_the_kernels_and_both_limits(smoke_json):
    report = smoke_json
    assert set(report) == JSON_KEYS
    assert report["schema"] == "dedup-bench/1" and report["run"] == "smoke"
    machine = report["machine"]
    assert machine["cpu_model"] and machine["cpus"] >= 1 and len(machine["load_average"]) == 3
    assert set(machine["cpu_model"]) and isinstance(report["cpu"]["features_found"], list)
    assert report["cpu"]["disabled"] is None
    assert set(report["kernels"]) == {"crc32c", "snapshot_w5", "expiry_avx2"}
    for name, source in (("bare", "bare_loop.c"), ("reference", "reference_loop.c")):
        limit = report["limits"][name]
        assert limit["available"] is True and limit["error"] is None and limit["source"] == source
    assert "-march=native" in report["limits"]["bare"]["command"]
    assert "-march=native" not in report["limits"]["reference"]["command"]


def test_json_rows_and_sweep_have_both_ratios(smoke_json):
    rows = smoke_json["rows"]
    assert {"what", "value", "unit", "peer", "peer_value", "ratio", "target", "met"} == set(rows[0])
    append_many = [row for row in rows if row["what"].startswith("append_many") and row["ratio"] is not None]
    assert {row["peer"] for row in append_many} >= {"bare limit", "C loop"}
    sweep = smoke_json["append_many"]
    assert [point["producers"] for point in sweep] == [100, 1_000, 20_000]
    for point in sweep:
        rates = point["batches_per_s"]
        assert {"compiled", "bare limit", "C loop"} <= set(rates), point
        assert point["ratio_to_bare"] == pytest.approx(rates["compiled"] / rates["bare limit"])
        assert point["ratio_to_c_loop"] == pytest.approx(rates["compiled"] / rates["C loop"])


def test_json_with_the_vector_kernels_disabled():
    report = bench_json(DEDUP_DISABLE_CPU_FEATURES=NO_VECTORS)
    assert report["cpu"]["disabled"] == NO_VECTORS
    # Whatever the CPU has, the scalar kernels ran: the report says which were chosen.
    assert report["kernels"] == {"crc32c": "table", "snapshot_w5": False, "expiry_avx2": False}


def test_the_text_names_both_limits(smoke):
    assert "bare limit: bare_loop.c" in smoke.stdout and "-march=native" in smoke.stdout
    header = next(line for line in smoke.stdout.splitlines() if line.lstrip().startswith("producers"))
    assert "compiled / bare" in header and "compiled / C loop" in header


def test_without_a_compiler_neither_limit_is_available():
    compiler = str(ROOT / "no-such-compiler")
    done = bench("--smoke", CC=compiler)
    assert done.returncode == 0, done.stderr
    assert "bare limit: not available" in done.stdout and "no-such-compiler" in done.stdout
    assert not any(row["compared with"].startswith("bare limit ") for row in table(done.stdout))
    report = bench_json(CC=compiler)
    for limit in report["limits"].values():
        assert limit["available"] is False and "no-such-compiler" in limit["error"]
    assert all(point["ratio_to_bare"] is None for point in report["append_many"])


def kafka_stream(rows: int, producers: int, seed: int) -> tuple[np.ndarray, ...]:
    """Batches of ``producers`` producers: mostly in sequence, with retries of one of the last
    five batches (duplicates), of an older one or with a gap (45), fenced epochs (47) and
    epoch bumps (a new epoch at sequence 0, or at another: 45)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1_000, 1_000 + producers, rows).astype(np.int64)
    epochs, sequences = np.zeros(rows, np.int16), np.zeros(rows, np.int32)
    counts = rng.integers(1, 5, rows).astype(np.int32)
    state: dict[int, tuple[int, int, list[tuple[int, int]]]] = {}  # id: epoch, next sequence, batches
    for row, producer_id in enumerate(ids.tolist()):
        epoch, sequence, sent = state.get(producer_id, (0, 0, []))
        roll, this_epoch, this_sequence = rng.random(), epoch, sequence
        if roll < 0.12 and sent:  # a retry of one of the last batches (older than five: 45)
            this_sequence, counts[row] = sent[-1 - int(rng.integers(min(len(sent), 7)))]
        elif roll < 0.16:
            this_sequence += int(rng.integers(1, 4))  # a gap
        elif roll < 0.19 and epoch > 0:
            this_epoch -= 1  # a fenced producer
        elif roll < 0.2:  # a new epoch not at sequence 0 (45)
            this_epoch, this_sequence = epoch + 1, 5
        elif roll < 0.22:  # an epoch bump, at sequence 0
            epoch, this_epoch, this_sequence = epoch + 1, epoch + 1, 0
            sent, sequence = [(0, int(counts[row]))], int(counts[row])
        else:
            sent = [*sent, (sequence, int(counts[row]))][-8:]
            sequence += int(counts[row])  # accepted: the producer moves on
        epochs[row], sequences[row] = this_epoch, this_sequence
        state[producer_id] = (epoch, sequence, sent)
    return ids, epochs, sequences, counts, np.arange(rows, dtype=np.int64)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("oracle", ["compiled", "twin", "C loop, dense"])
def test_the_bare_loop_gives_the_tables_verdicts(seed, oracle):
    """The bare limit does the real work: on a stream with duplicates and every client error its
    verdicts (code, duplicate flag, base offset) and log end offset equal those of the compiled
    table, of the pure-Python twin (dedup.reference) and of the C reference loop."""
    from dedup.tools.bench import BareTable
    from dedup.tools.bench_streams import table_for

    producers = 300
    columns = kafka_stream(20_000, producers, seed)
    table, bare = table_for(oracle, producers, 5), BareTable(producers, 5)
    expected, end = [], 0
    found = []
    for start in range(0, 20_000, 4_096):  # several calls: state carries over between them
        part = [column[start : start + 4_096] for column in columns]
        want = table.append_many(*part, log_end_offset=table.map_end_offset)
        got = bare.append_many(*part, log_end_offset=end)
        np.testing.assert_array_equal(got.error_codes, want.error_codes)
        np.testing.assert_array_equal(got.duplicate, want.duplicate)
        np.testing.assert_array_equal(got.base_offsets, want.base_offsets)
        assert got.log_end_offset == want.log_end_offset
        end = got.log_end_offset
        expected.append(want.error_codes.copy())
        found.append(int(want.duplicate.sum()))
    codes = np.concatenate(expected)
    assert {0, 45, 47} <= set(codes.tolist()) and sum(found) > 500, (np.unique(codes, return_counts=True), found)
    assert len(bare) == producers and bare.memory_bytes() >= producers * (24 + 16 * 5)


def test_the_bare_loop_refuses_a_producer_beyond_its_size():
    from dedup.tools.bench import BareTable

    bare = BareTable(2, 5)
    ids = np.array([1, 2, 3], np.int64)
    with pytest.raises(MemoryError, match="row 2"):
        bare.append_many(ids, np.zeros(3, np.int16), np.zeros(3, np.int32), np.ones(3, np.int32),
                         np.zeros(3, np.int64), log_end_offset=0)  # fmt: skip
    assert len(bare) == 2
