"""``ProducerStateMachine``: our compiled table passes through it, and a user's ten-line test
finds a planted bug (a table that forgets the oldest batch) and prints the shrunk example."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dedup import reference
from dedup.testing import ProducerStateMachine, TableDivergence

ROOT = Path(__file__).resolve().parents[2]
_state = pytest.importorskip("dedup._state")

# Our compiled table, driven against dedup.reference by the public machine.
TestCompiledTable = ProducerStateMachine.for_table(_state.ProducerStateTable).TestCase
# The machine's own control: the reference against itself, snapshots restored through the twin's codec.
TestReferenceAgainstItself = ProducerStateMachine.for_table(reference.ProducerStateTable).TestCase

USER_TEST = """\
from dedup.reference import ProducerStateTable
from dedup.testing import ProducerStateMachine


class ForgetsOldest:
    \"\"\"My table: dedup's, but it keeps one batch fewer than Kafka's five (the planted bug).\"\"\"

    def __init__(self, window):
        self._table = ProducerStateTable(window - {forget})

    def __getattr__(self, name):
        return getattr(self._table, name)

    def __iter__(self):
        return iter(self._table)

    def __len__(self):
        return len(self._table)


TestForgetsOldest = ProducerStateMachine.for_table(ForgetsOldest).TestCase
"""


def run_user_test(tmp_path: Path, forget: int) -> subprocess.CompletedProcess[str]:
    """The user's test file, run by pytest in a directory of its own, as a user runs it."""
    (tmp_path / "test_my_table.py").write_text(USER_TEST.format(forget=forget))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.pop("HYPOTHESIS_PROFILE", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-seed=1", "test_my_table.py"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_user_test_finds_a_table_that_forgets_the_oldest_batch_and_prints_the_shrunk_example(tmp_path):
    done = run_user_test(tmp_path, forget=1)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    # The divergence names the operation's result and both answers ...
    assert "TableDivergence: entry(0): dedup.reference holds ProducerStateEntry(producer_id=0" in out, out
    # ... after the shrunk run: five batches of one producer, the fifth pushing the oldest out.
    # Only the traceback's lines ("E   ..."): under CI (the CI variable set) pytest's summary
    # repeats the exception's notes, and Hypothesis's ci profile adds a @reproduce_failure line.
    steps = [line.removeprefix("E").strip() for line in out.splitlines() if line.startswith("E ") and "state." in line]
    calls = [step for step in steps if step.startswith("state.") and "same_state" not in step]
    assert calls == ["state.start()", "state.client_burst(batches=5, count=1, pid=0)", "state.teardown()"], steps


def test_the_same_user_test_passes_without_the_bug(tmp_path):
    """The control: the wrapped table keeping Kafka's five batches passes, so the failure above
    is the planted bug's."""
    done = run_user_test(tmp_path, forget=0)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


class AnswersRetriesWrongly(reference.ProducerStateTable):
    """A verdict bug: a retry of the oldest retained batch is answered with the newest's offsets."""

    def append(self, producer_id, producer_epoch, base_sequence, record_count, base_offset, **options):
        entry = self.entry(producer_id)
        if entry is not None and len(entry.batches) > 1 and entry.batches[0].first_sequence == base_sequence:
            base_sequence = entry.batches[-1].first_sequence
            record_count = entry.batches[-1].offset_delta + 1
        return super().append(producer_id, producer_epoch, base_sequence, record_count, base_offset, **options)


def test_a_wrong_verdict_is_reported_with_both_answers():
    machine = ProducerStateMachine.for_table(AnswersRetriesWrongly)()
    machine.start()
    machine.client_burst(pid=1, batches=3, count=1)
    machine.retry(1, back=2)  # not the oldest: the bug does not show
    with pytest.raises(TableDivergence, match=r"append\(producer_id=1, .*dedup.reference answered \('duplicate', 0, 0"):
        machine.retry(1, back=3)
