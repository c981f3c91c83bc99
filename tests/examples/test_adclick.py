"""examples/adclick: the ad-click application (idempotent producer, 6 partitions, a billing group
of 3 with a member killed mid-stream) run as a user runs it, and its report.

With deduplication the bill equals the clicks sent although produce responses were lost and
retried; with ``--no-dedup`` (serve stores retries again, as a broker without idempotence)
the same run overbills: the control that shows the first result is the broker's doing.
The fast set keeps :func:`test_the_report_bills_a_reread_click_once_and_a_stored_duplicate_twice`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("confluent_kafka")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(ROOT, "examples", "adclick", "run.py")


def run_demo(*argv: str) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, RUN, *argv], capture_output=True, text=True, env=env, timeout=180)
    return done.returncode, done.stdout + done.stderr


def table(output: str) -> tuple[dict[str, tuple[int, int, int]], tuple[int, int]]:
    """(sent, stored, billed) per partition, and (clicks sent, clicks billed) of the total row."""
    partitions = {m[1]: (int(m[2]), int(m[3]), int(m[4]))
                  for m in re.finditer(r"^(clicks-\d)\s+(\d+)\s+(\d+)\s+(\d+)$", output, re.M)}  # fmt: skip
    total = re.search(r"^total\s+(\d+)\s+(\d+)\s", output, re.M)
    assert len(partitions) == 6 and total, output
    return partitions, (int(total[1]), int(total[2]))


def check_the_kill_and_the_takeover(output: str) -> None:
    killed = re.search(r"killed billing-1 \(SIGKILL\) after it billed (\d+) clicks; committed: (.*)", output)
    assert killed and int(killed[1]) > 0, output  # killed mid-stream, not before it billed anything
    victims = re.findall(r"clicks-(\d) at offset (\d+)", killed[2])
    assert len(victims) == 2, output  # its two partitions
    for partition, offset in victims:  # each taken over by a survivor from the committed offset
        assert re.search(rf"billing-[23] resumed clicks-{partition} at offset {offset}: the committed offset", output)


@pytest.mark.slow
def test_the_bill_is_exact_with_deduplication():
    status, output = run_demo("--clicks", "2000")
    assert status == 0, output
    partitions, (sent, billed) = table(output)
    assert sent == billed == 2000, output
    assert all(p_sent == stored == p_billed > 0 for p_sent, stored, p_billed in partitions.values()), output
    retried = re.search(r"serve: (\d+) produce responses lost, .*; (\d+) retried batches recognised", output)
    assert retried and int(retried[1]) > 0 and int(retried[2]) > 0, output  # retries happened, and were dropped
    check_the_kill_and_the_takeover(output)
    assert "bill: exact, 2000 clicks sent, 2000 billed" in output


@pytest.mark.slow
def test_without_deduplication_the_same_run_overbills():
    status, output = run_demo("--clicks", "2000", "--no-dedup")
    assert status == 1, output
    partitions, (sent, billed) = table(output)
    assert sent == 2000 and billed > sent, output
    assert sum(stored > p_sent for p_sent, stored, _ in partitions.values()) >= 2, output  # across partitions
    check_the_kill_and_the_takeover(output)
    assert "bill: WRONG" in output


def test_the_report_bills_a_reread_click_once_and_a_stored_duplicate_twice(capsys, monkeypatch):
    monkeypatch.syspath_prepend(os.path.dirname(RUN))  # story.py, as a script run from there has it
    spec = importlib.util.spec_from_file_location("adclick_run", RUN)
    assert spec and spec.loader
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    sent = [(p, "sea-view", 60) for p in range(6)]
    stored = dict.fromkeys(range(6), 1)
    ledger = [("billing-1", p, 0, "sea-view", 60) for p in range(6)]
    # Read again at the same offset by the partition's next owner: the same click, billed once.
    assert run.report(sent, stored, [*ledger, ("billing-2", 0, 0, "sea-view", 60)], "")
    assert "bill: exact" in capsys.readouterr().out
    # Stored twice (a retry the broker did not recognise): a second offset, billed twice.
    assert not run.report(sent, stored | {0: 2}, [*ledger, ("billing-2", 0, 1, "sea-view", 60)], "")
    assert "bill: WRONG, 6 clicks sent, 7 billed: $0.60 overbilled" in capsys.readouterr().out
