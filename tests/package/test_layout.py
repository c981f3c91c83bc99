"""One definition of the batch layout and the codes (dedup._layout), and the checks that keep
the compiled core's C copies (the enums of _records.pxd and _state.pxd) equal to it."""

from __future__ import annotations

import enum
import os
import struct
import subprocess
import sys

import pytest

from dedup import _layout, errors
from dedup._layout import ErrorCode, Reason
from dedup._types import BATCH_HEADER_DTYPE, Origin

try:
    from dedup import _records, _state
except ImportError:  # pragma: no cover - conftest's guard fails the run then
    _records = _state = None

COMPILED = {"dedup._records": _records, "dedup._state": _state}
C_CONSTANTS = [
    (module, name) for module, compiled in COMPILED.items() if compiled is not None for name in compiled._c_constants()
]


def run_python(code: str, **environment: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "DEDUP_PURE_PYTHON"}
    env.update(environment)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


# How a C name maps to its Python definition (the rule dedup._layout.python_value states).
ENUM_PREFIXES = {"ERR_": "ErrorCode", "REASON_": "Reason", "ORIGIN_": "Origin"}


def test_header_offsets_are_those_of_spec_8_1():
    # Spelled out from the spec's table, not from the struct they are derived from.
    assert {
        "BASE_OFFSET_OFFSET": 0, "BATCH_LENGTH_OFFSET": 8, "PARTITION_LEADER_EPOCH_OFFSET": 12, "MAGIC_OFFSET": 16,
        "CRC_OFFSET": 17, "ATTRIBUTES_OFFSET": 21, "LAST_OFFSET_DELTA_OFFSET": 23, "BASE_TIMESTAMP_OFFSET": 27,
        "MAX_TIMESTAMP_OFFSET": 35, "PRODUCER_ID_OFFSET": 43, "PRODUCER_EPOCH_OFFSET": 51, "BASE_SEQUENCE_OFFSET": 53,
        "RECORDS_COUNT_OFFSET": 57, "RECORDS_OFFSET": 61, "LOG_OVERHEAD": 12, "MIN_BATCH_LENGTH": 49, "MAGIC_V2": 2,
    } == {name: getattr(_layout, name) for name in (
        "BASE_OFFSET_OFFSET", "BATCH_LENGTH_OFFSET", "PARTITION_LEADER_EPOCH_OFFSET", "MAGIC_OFFSET", "CRC_OFFSET",
        "ATTRIBUTES_OFFSET", "LAST_OFFSET_DELTA_OFFSET", "BASE_TIMESTAMP_OFFSET", "MAX_TIMESTAMP_OFFSET",
        "PRODUCER_ID_OFFSET", "PRODUCER_EPOCH_OFFSET", "BASE_SEQUENCE_OFFSET", "RECORDS_COUNT_OFFSET",
        "RECORDS_OFFSET", "LOG_OVERHEAD", "MIN_BATCH_LENGTH", "MAGIC_V2",
    )}  # fmt: skip
    # Each field is read where the struct puts it, and the names are the header rows' columns.
    values = tuple(range(1, len(_layout.HEADER_FIELDS) + 1))
    packed = _layout.HEADER.pack(*values)
    for (name, _), value in zip(_layout.HEADER_FIELDS, values, strict=True):
        assert _layout.field_struct(name).unpack_from(packed, _layout.field_offset(name)) == (value,), name
        assert name in BATCH_HEADER_DTYPE.names
    assert _layout.header_prefix("last_offset_delta").size == _layout.BASE_TIMESTAMP_OFFSET == 27
    with pytest.raises(ValueError):
        _layout.field_offset("records")


def test_attribute_bits_and_compression_names_are_those_of_spec_8_2():
    assert (_layout.ATTR_COMPRESSION_MASK, _layout.ATTR_TIMESTAMP_TYPE, _layout.ATTR_TRANSACTIONAL) == (7, 8, 16)
    assert (_layout.ATTR_CONTROL, _layout.ATTR_DELETE_HORIZON) == (32, 64)
    assert _layout.COMPRESSION_NAMES == ("none", "gzip", "snappy", "lz4", "zstd")


def test_each_error_class_takes_its_code_and_name_from_the_one_table():
    for code in ErrorCode:
        if code == ErrorCode.NONE:
            assert errors.NONE == 0
            continue
        cls = errors.error_for_code(code)
        assert (cls.code, cls.error_name) == (int(code), code.name)
        assert type(cls.code) is int
    assert errors.TruncatedBatchError.code == ErrorCode.CORRUPT_MESSAGE  # inherited, not its own
    assert errors.error_for_code(2) is errors.CorruptRecordError


# --- the compiled copies -------------------------------------------------------------------------


def test_the_compiled_modules_report_every_shared_constant():
    if None in COMPILED.values():
        pytest.fail("the compiled core did not load: build it with `pip install -e .`")
    records, state = _records._c_constants(), _state._c_constants()
    offsets = {name for name in dir(_layout) if name.endswith("_OFFSET") or name.startswith("ATTR_")}
    assert offsets | {"LOG_OVERHEAD", "MIN_BATCH_LENGTH", "MAGIC_V2"} <= set(records)
    assert {f"REASON_{reason.name}" for reason in Reason} <= set(records)
    assert {f"ORIGIN_{origin.name}" for origin in Origin} <= set(state)
    table_codes = ("NONE", "CORRUPT_MESSAGE", "OUT_OF_ORDER_SEQUENCE_NUMBER", "INVALID_PRODUCER_EPOCH",
                   "INVALID_TXN_STATE", "TRANSACTION_COORDINATOR_FENCED", "INVALID_RECORD")  # fmt: skip
    assert {f"ERR_{name}" for name in table_codes} <= set(state)
    for module, compiled in COMPILED.items():
        _layout.check_compiled(module, compiled._c_constants())  # they agree now


def _change_python_side(monkeypatch, c_name):
    """Make dedup._layout's definition of C constant ``c_name`` differ by 100."""
    for prefix, enum_name in ENUM_PREFIXES.items():
        if c_name.startswith(prefix):
            member = c_name[len(prefix) :]
            codes = getattr(_layout, enum_name)
            values = {code.name: code.value + (100 if code.name == member else 0) for code in codes}
            monkeypatch.setattr(_layout, enum_name, enum.IntEnum(enum_name, values))
            return
    monkeypatch.setattr(_layout, c_name, getattr(_layout, c_name) + 100)


@pytest.mark.parametrize("module, name", C_CONSTANTS, ids=[f"{m}-{n}" for m, n in C_CONSTANTS])
def test_a_python_definition_that_differs_from_its_c_copy_fails_the_check(monkeypatch, module, name):
    constants = COMPILED[module]._c_constants()
    _change_python_side(monkeypatch, name)
    expected = rf"^{module}: the C constant {name} is {constants[name]} in its \.pxd"
    with pytest.raises(ImportError, match=expected) as caught:
        _layout.check_compiled(module, constants)
    assert isinstance(caught.value, _layout.CompiledCopyError) and caught.value.name == module


@pytest.mark.parametrize("module, name", C_CONSTANTS, ids=[f"{m}-{n}" for m, n in C_CONSTANTS])
def test_a_c_copy_that_differs_from_its_python_definition_fails_the_check(module, name):
    constants = dict(COMPILED[module]._c_constants())
    constants[name] -= 1
    with pytest.raises(ImportError, match=rf"\b{name} is {constants[name]} in its \.pxd but is {constants[name] + 1}"):
        _layout.check_compiled(module, constants)


def test_a_c_constant_without_a_python_definition_fails_the_check():
    with pytest.raises(ImportError, match="REASON_UNHEARD_OF is 11 in its .pxd but has no definition"):
        _layout.check_compiled("dedup._records", {"REASON_NONE": 0, "REASON_UNHEARD_OF": 11})
    with pytest.raises(ImportError, match="HEADER_SIZE is 61 in its .pxd but has no definition"):
        _layout.check_compiled("dedup._records", {"HEADER_SIZE": 61})


@pytest.mark.parametrize(
    "change, module, name",
    [
        ("L.PRODUCER_ID_OFFSET = 44", "dedup._records", "PRODUCER_ID_OFFSET"),
        ("L.Reason = enum.IntEnum('Reason', {**{r.name: r.value for r in L.Reason}, 'CRC': 12})", "dedup._records",
         "REASON_CRC"),
        ("L.ErrorCode = enum.IntEnum('ErrorCode', {**{c.name: c.value for c in L.ErrorCode}, 'INVALID_RECORD': 88})",
         "dedup._state", "ERR_INVALID_RECORD"),
    ],
    ids=["offset", "reason", "error-code"],
)  # fmt: skip
def test_a_compiled_module_checks_its_copies_when_it_is_imported(change, module, name):
    # Under the switch importing dedup loads no compiled module, so the definitions can be
    # changed before the compiled module is imported for the first time.
    code = "\n".join(
        [
            "import enum, sys, dedup, dedup._layout as L",
            f"assert {module!r} not in sys.modules",
            change,
            f"import {module}",
        ]
    )
    result = run_python(code, DEDUP_PURE_PYTHON="1")
    assert result.returncode != 0
    assert f"CompiledCopyError: {module}: the C constant {name} is " in result.stderr
    assert result.stdout == ""


def test_header_struct_is_the_one_the_twins_and_formats_use():
    # The Python copies are gone: each module reads the one definition.
    from dedup import batch, segment
    from dedup.reference import records as twin_records

    assert twin_records.HEADER is _layout.HEADER is batch.HEADER
    assert segment._PREFIX.format == _layout.HEADER.format[:8]
    assert struct.calcsize(_layout.HEADER.format) == _layout.RECORDS_OFFSET


def test_without_the_switch_a_differing_copy_fails_import_dedup_naming_the_constant():
    # dedup._layout is loaded (and changed) under a bare package first, so that the real
    # `import dedup` afterwards loads the compiled modules against the changed definition.
    code = "\n".join(
        [
            "import sys, types",
            "package = types.ModuleType('dedup')",
            f"package.__path__ = [{os.path.dirname(_layout.__file__)!r}]",
            "sys.modules['dedup'] = package",
            "import dedup._layout as L",
            "L.ATTR_CONTROL = 0x40",
            "del sys.modules['dedup']",
            "import dedup",
        ]
    )
    result = run_python(code)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("dedup._layout.CompiledCopyError: dedup._records: the C constant ATTR_CONTROL is 32")
    assert "is not built" not in result.stderr
