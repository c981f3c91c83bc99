"""The package around the table: which twin is exported, the build guard, stubs, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import dedup
from dedup import errors

PACKAGE = Path(dedup.__file__).parent


def run_python(code: str, **environment: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "DEDUP_PURE_PYTHON"}
    env.update(environment)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_compiled_table_is_exported_unless_pure_python_is_asked_for():
    # The guard: a build that silently fell back to the twin would be ~40x slower.
    if dedup.PURE_PYTHON:
        from dedup import reference

        assert dedup.ProducerStateTable is reference.ProducerStateTable
    else:
        from dedup import _state

        assert dedup.ProducerStateTable is _state.ProducerStateTable
        assert dedup.AppendResult is _state.AppendResult


def test_pure_python_switch_binds_the_twin():
    result = run_python(
        "import dedup, dedup.reference as r; "
        "assert dedup.PURE_PYTHON and dedup.ProducerStateTable is r.ProducerStateTable; print('twin')",
        DEDUP_PURE_PYTHON="1",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "twin"


BLOCK_COMPILED = (
    "import sys, importlib.abc\n"
    "class Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name in ('dedup._state', 'dedup._records', 'dedup._snapshot'):\n"
    "            raise ImportError('no compiled module here')\n"
    "sys.meta_path.insert(0, Block())\n"
)


def test_pure_python_mode_needs_no_compiled_module():
    # With the switch, every public name works from the twins alone: the table, the batch
    # scanner and append path, and the snapshot codec.
    result = run_python(
        BLOCK_COMPILED
        + "import dedup\n"
        "table = dedup.ProducerStateTable()\n"
        "table.append(1, 0, 0, 1, 0)\n"
        "batch = bytes.fromhex('000000000000000000000039ffffffff02a605d7d30000000000000000018bcfe568000000018bcfe5"
        "680000000000000003e8000500000000000000010e00000001027600')\n"
        "assert dedup.scan_batches(batch)['producer_id'][0] == 1000\n"
        "assert dedup.append_batches(table, batch, log_end_offset=1).error_codes.tolist() == [0]\n"
        "copy = dedup.decode_snapshot(dedup.encode_snapshot(table))\n"
        "assert {p: copy.entry(p) for p in copy} == {p: table.entry(p) for p in table}\n"
        "print(type(copy).__module__)\n",
        DEDUP_PURE_PYTHON="1",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "dedup.reference.table"


def test_missing_extension_is_a_loud_import_error():
    blocker = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'dedup._state': raise ImportError('no compiled module here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import dedup\n"
    )
    result = run_python(blocker)
    assert result.returncode != 0
    assert "ImportError" in result.stderr and "pip install -e ." in result.stderr
    assert "DEDUP_PURE_PYTHON=1" in result.stderr


def test_typing_files_are_shipped():
    # The stubs' content is checked by stubtest (.ci/run) and tests/table/test_contract.py.
    assert (PACKAGE / "py.typed").exists() and (PACKAGE / "_protocol.py").exists()
    for module in ("_state", "_records", "_snapshot", "_testing"):
        assert (PACKAGE / f"{module}.pyi").exists(), module


def test_error_classes_carry_kafkas_codes():
    # Spec §2.7.
    expected = {
        errors.CorruptRecordError: (2, "CORRUPT_MESSAGE"),
        errors.OutOfOrderSequenceError: (45, "OUT_OF_ORDER_SEQUENCE_NUMBER"),
        errors.DuplicateSequenceError: (46, "DUPLICATE_SEQUENCE_NUMBER"),
        errors.InvalidProducerEpochError: (47, "INVALID_PRODUCER_EPOCH"),
        errors.InvalidTxnStateError: (48, "INVALID_TXN_STATE"),
        errors.TransactionCoordinatorFencedError: (52, "TRANSACTION_COORDINATOR_FENCED"),
        errors.InvalidRecordError: (87, "INVALID_RECORD"),
        # The log and cluster layer (Kafka's Errors.java).
        errors.OffsetOutOfRangeError: (1, "OFFSET_OUT_OF_RANGE"),
        errors.NotLeaderOrFollowerError: (6, "NOT_LEADER_OR_FOLLOWER"),
        errors.NotEnoughReplicasError: (19, "NOT_ENOUGH_REPLICAS"),
        errors.NotEnoughReplicasAfterAppendError: (20, "NOT_ENOUGH_REPLICAS_AFTER_APPEND"),
        errors.KafkaStorageError: (56, "KAFKA_STORAGE_ERROR"),
        errors.FencedLeaderEpochError: (74, "FENCED_LEADER_EPOCH"),
        errors.ProducerFencedError: (90, "PRODUCER_FENCED"),
    }
    for cls, (code, name) in expected.items():
        assert issubclass(cls, errors.KafkaError)
        assert (cls.code, cls.error_name) == (code, name)
        assert errors.error_for_code(code) is cls
    with pytest.raises(KeyError):
        errors.error_for_code(0)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_exception_ignored_guard_catches_swallowed_errors(unraisable):
    # The autouse guard in conftest (and pytest's own warning, made an error in pyproject)
    # fails a test that leaves "Exception ignored" behind; here we provoke one, check the
    # guard saw it, and clear it so this one test passes.
    class Broken:
        def __del__(self):
            raise RuntimeError("swallowed")

    Broken()
    assert unraisable and isinstance(unraisable[0].exc_value, RuntimeError)
    unraisable.clear()
