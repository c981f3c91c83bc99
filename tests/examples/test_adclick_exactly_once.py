"""examples/adclick/exactly_once.py: the consume-transform-produce billing group (transactions with
``send_offsets_to_transaction``, ``read_committed`` downstream) run as a user runs it.

With transactions every click is billed exactly once although a member is killed between
writing a batch of bills and committing it, and a transaction coordinator (a broker) crashes and
restarts; with ``--no-transactions`` (offsets committed after the bills) the same run bills the
killed member's batch twice: the control that shows the first result is the transactions' doing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("confluent_kafka")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(ROOT, "examples", "adclick", "exactly_once.py")


def run_example(*argv: str) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, RUN, *argv], capture_output=True, text=True, env=env, timeout=240)
    return done.returncode, done.stdout + done.stderr


def check_the_crashes(output: str) -> int:
    """The member kill and the coordinator crash happened; the number of bills the kill cut short."""
    killed = re.search(r"killed billing-1 \(SIGKILL\) with (\d+) bills written and not committed", output)
    assert killed and int(killed[1]) > 0, output
    crashed = re.search(r"broker (\d), the transaction coordinator of billing-[12], crashed", output)
    assert crashed and f"broker {crashed[1]} restarted" in output, output
    return int(killed[1])


@pytest.mark.slow
def test_every_click_is_billed_once_through_a_member_kill_and_a_coordinator_crash():
    status, output = run_example("--clicks", "2000")
    assert status == 0, output
    cut = check_the_crashes(output)
    assert "bills read by a read_committed consumer: 2000, 2000 distinct clicks, 0 billed more than once" in output
    aborted = re.search(r"bills in the log \(read_uncommitted\): (\d+), (\d+) of them in aborted", output)
    assert aborted and int(aborted[2]) >= cut and int(aborted[1]) == 2000 + int(aborted[2]), output
    assert "bill: exact, every one of the 2000 clicks billed once" in output


@pytest.mark.slow
def test_without_transactions_the_killed_members_batch_is_billed_twice():
    status, output = run_example("--clicks", "2000", "--no-transactions")
    assert status == 1, output
    cut = check_the_crashes(output)
    twice = re.search(r"2000 distinct clicks, (\d+) billed more than once, 0 not billed", output)
    assert twice and int(twice[1]) >= cut, output
    assert "bill: WRONG" in output
