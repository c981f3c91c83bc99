"""The one selector of the implementation (dedup._backend): what the public names bind to, and
how a function given a table finds that table's own twin."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import dedup
from dedup import _backend, records, reference

try:
    from dedup import _state
except ImportError:  # pragma: no cover - conftest's guard fails the run then
    _state = None


def run_python(code: str, **environment: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "DEDUP_PURE_PYTHON"}
    env.update(environment)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def compiled_implementation():
    if _state is None:
        pytest.fail("dedup._state did not load: build it with `pip install -e .`")
    return _backend.implementation_of(_state.ProducerStateTable())


def test_the_public_names_bind_to_the_default_implementation():
    default = _backend.DEFAULT
    assert default.name == ("reference" if dedup.PURE_PYTHON else "compiled")
    assert (dedup.ProducerStateTable, dedup.AppendResult) == (default.ProducerStateTable, default.AppendResult)
    assert dedup.crc32c is records.crc32c is default.crc32c
    for name in ("scan_batches", "validate_batches", "crc_valid", "check_one_batch"):
        assert getattr(records, name) is getattr(default.records, name), name


def test_both_implementations_have_every_name_the_public_modules_use():
    for implementation in (_backend.TWIN, compiled_implementation()):
        assert issubclass(implementation.AppendResult, object) and callable(implementation.crc32c)
        for name in ("scan_batches", "validate_batches", "crc_valid", "check_one_batch", "append_batches"):
            assert callable(getattr(implementation.records, name)), (implementation.name, name)
        for name in ("encode_full", "encode_kafka", "decode_full", "decode_kafka"):
            assert callable(getattr(implementation.snapshot, name)), (implementation.name, name)
    assert _backend.TWIN.ProducerStateTable is reference.ProducerStateTable


def test_a_table_goes_to_its_own_twin_subclasses_included():
    compiled = compiled_implementation()
    assert compiled.name == "compiled" and compiled.ProducerStateTable is _state.ProducerStateTable
    assert _backend.implementation_of(reference.ProducerStateTable()) is _backend.TWIN

    class Twin(reference.ProducerStateTable):
        pass

    class Compiled(_state.ProducerStateTable):
        pass

    assert _backend.implementation_of(Twin()) is _backend.TWIN
    assert _backend.implementation_of(Compiled()) is compiled
    assert _backend.resolve_table_class(Twin) == (Twin, _backend.TWIN)
    assert _backend.resolve_table_class(Compiled) == (Compiled, compiled)
    assert _backend.resolve_table_class(None) == (dedup.ProducerStateTable, _backend.DEFAULT)


@pytest.mark.parametrize("value", [None, object(), reference.ProducerStateTable, "ProducerStateTable"])
def test_anything_but_a_table_is_a_type_error_naming_table(value):
    with pytest.raises(TypeError, match=r"^table must be a ProducerStateTable \(dedup._state or dedup.reference\)"):
        _backend.implementation_of(value)


@pytest.mark.parametrize("value", [object, reference.ProducerStateTable(), "ProducerStateTable", dict])
def test_anything_but_a_table_class_is_a_type_error_naming_table_class(value):
    with pytest.raises(TypeError, match=r"^table_class must be a ProducerStateTable class"):
        _backend.resolve_table_class(value)


def test_under_the_switch_the_compiled_core_loads_only_for_a_compiled_table():
    code = "\n".join(
        [
            "import sys, dedup",
            "from dedup import _backend",
            "compiled = [m for m in sys.modules if m in ('dedup._state', 'dedup._records', 'dedup._snapshot')]",
            "assert dedup.PURE_PYTHON and _backend.DEFAULT is _backend.TWIN and not compiled, compiled",
            "table = dedup.ProducerStateTable()",
            "assert _backend.implementation_of(table) is _backend.TWIN and 'dedup._state' not in sys.modules",
            "from dedup import _state",
            "given = _state.ProducerStateTable()",
            "given.append(1, 0, 0, 1, 0)",
            "assert _backend.implementation_of(given).name == 'compiled'",
            "copy = dedup.decode_snapshot(dedup.encode_snapshot(given), table_class=_state.ProducerStateTable)",
            "assert type(copy) is _state.ProducerStateTable and copy.entry(1) == given.entry(1)",
            "print('ok')",
        ]
    )
    result = run_python(code, DEDUP_PURE_PYTHON="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
