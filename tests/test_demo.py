"""``python -m dedup demo`` prints what the table did, one line per step, on a real process."""

from __future__ import annotations

import subprocess
import sys

from dedup import demo


def test_demo_runs_and_tells_the_story():
    result = subprocess.run([sys.executable, "-m", "dedup", "demo"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "appended at offsets 0-9" in lines[1]
    assert "duplicate: answered with the original offsets 10-19" in lines[3]
    assert "OUT_OF_ORDER_SEQUENCE_NUMBER (45)" in lines[4]
    assert "appended at offsets 20-24" in lines[5]
    assert "INVALID_PRODUCER_EPOCH (47)" in lines[6]
    assert "producer 1001" in lines[7] and "appended at offsets 25-34" in lines[7]
    assert lines[-1] == "log end offset 35; producers in the table: [1000, 1001]"


def test_both_twins_tell_the_same_story(impl):
    reference_lines = list(demo.steps(demo.ProducerStateTable()))[1:]
    assert list(demo.steps(impl()))[1:] == reference_lines
