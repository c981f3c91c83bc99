"""DEDUP_DISABLE_CPU_FEATURES (platform/cpu.h): one process-wide switch that every run-time
kernel choice in kernels/ honours. Each setting runs in a process of its own (the variable is
read once): the kernels it leaves in use are the ones the CPU has minus the ones it names, and
every result (CRC-32C in both modules, full snapshots written and read, remove_expired) is the
same as with every kernel the CPU has.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dedup._state")

ROOT = Path(__file__).resolve().parents[2]

# Run in the child: the kernels chosen, and digests of results that go through each kernel.
CHILD = r"""
import hashlib, json
import numpy as np
from dedup import ProducerStateTable, _records, _testing, decode_snapshot, encode_snapshot

rng = np.random.default_rng(5)
data = rng.integers(0, 256, size=300_001, dtype=np.uint8).tobytes()
crcs = [_records.crc32c(data[:n]) for n in (0, 7, 63, 64, 767, 768, 4097, 300_001)]
crcs += [_testing.crc32c_in_mode(data[:n], 0, 1)[1] for n in (0, 7, 767, 768, 300_001)]

table = ProducerStateTable(5)
producers = 20_000
ids = rng.permutation(np.arange(1_000, 1_000 + producers, dtype=np.int64))
rounds = rng.integers(1, 7, size=producers)
for sequence in range(6):
    chosen = ids[rounds > sequence]
    n = len(chosen)
    stamps = np.where(chosen % 10 == 0, 1_000, 100_000).astype(np.int64)
    result = table.append_many(chosen, np.zeros(n, np.int16), np.full(n, sequence, np.int32),
                               np.ones(n, np.int32), stamps, log_end_offset=table.map_end_offset)
    assert (result.error_codes == 0).all()
full = encode_snapshot(table, "full")
loaded = decode_snapshot(full)
assert encode_snapshot(loaded, "full") == full
removed = [loaded.remove_expired(50_000, 10_000), loaded.remove_expired(200_000, 10_000)]
again = decode_snapshot(full)
removed.append(again.remove_expired(50_000, 10_000))
digest = hashlib.sha256(full + encode_snapshot(again, "full") + encode_snapshot(loaded, "full")).hexdigest()
print(json.dumps({"kernels": _testing.kernels(), "crcs": crcs, "snapshot": digest, "removed": removed}))
"""


def run(disabled: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DEDUP_DISABLE_CPU_FEATURES"}
    if disabled is not None:
        env["DEDUP_DISABLE_CPU_FEATURES"] = disabled
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def every_kernel() -> dict:
    """The child's answer with no feature disabled: what this CPU has."""
    return run(None)


def expected_kernels(cpu: dict, disabled: set[str]) -> dict:
    crc = cpu["crc32c"]
    instruction = "crc32" if platform.machine() in ("aarch64", "arm64") else "sse4.2"
    if instruction in disabled:
        crc = "table"
    return {
        "crc32c": crc,
        "snapshot_w5": cpu["snapshot_w5"] and not disabled & {"avx512f", "avx512bw", "avx512vl", "avx512vbmi"},
        "expiry_avx2": cpu["expiry_avx2"] and not disabled & {"avx2", "popcnt"},
    }


@pytest.mark.parametrize(
    "disabled",
    [
        "avx512f",
        "avx512bw",
        "avx512vbmi",
        "avx2",
        "sse4.2",
        "crc32",
        "avx512f avx2 sse4.2",
        " avx512f,avx2,,sse4.2 ",
        "no-such-feature",
        "",
    ],
)
def test_each_kernel_falls_back_and_the_results_stay(every_kernel, disabled):
    names = {name for name in disabled.replace(",", " ").split()}
    answer = run(disabled)
    assert answer["kernels"] == expected_kernels(every_kernel["kernels"], names)
    assert {k: v for k, v in answer.items() if k != "kernels"} == {
        k: v for k, v in every_kernel.items() if k != "kernels"
    }


def test_the_switch_reaches_every_kernel_on_this_cpu(every_kernel):
    """On a CPU with the instruction sets (CI's), the scalar setting changes every choice: else
    the test above could pass with a switch that reaches nothing."""
    cpu = every_kernel["kernels"]
    if not all(cpu.values()) or cpu["crc32c"] != "instruction":
        pytest.skip(f"this CPU lacks some kernels' instruction sets: {cpu}")
    scalar = run("avx512f avx2 sse4.2")["kernels"]
    assert scalar == {"crc32c": "table", "snapshot_w5": False, "expiry_avx2": False}


def test_the_kernels_report_changes_nothing():
    # dedup bench prints _testing.kernels() with every run: asking must not switch a kernel
    # back on that a test (or the switch) turned off.
    from dedup import _testing

    before = _testing.use_window5_vectors(False)
    try:
        assert _testing.kernels()["snapshot_w5"] is False
        assert _testing.kernels()["snapshot_w5"] is False
    finally:
        _testing.use_window5_vectors(before)
    assert _testing.kernels()["snapshot_w5"] is before
