"""One typing contract: dedup/_protocol.py, satisfied by both twins member for member.

The compiled stub (dedup/_state.pyi) inherits the protocol's signatures, and ``mypy.stubtest``
(run by .ci/run) checks them against the compiled class. Here the same signatures are
compared at run time, in the daily loop: the protocol's, the compiled class's
(``embedsignature`` makes them readable) and the pure-Python twin's, by parameter name, kind
and default; and the compiled records and snapshot functions against their twins'.
"""

from __future__ import annotations

import ast
import inspect
import types
from pathlib import Path

import pytest

import dedup
from dedup import _records, _snapshot, _state, reference
from dedup._protocol import AppendResultProtocol, ProducerStateTableProtocol
from dedup.reference import crc32c as twin_crc32c
from dedup.reference import records as twin_records
from dedup.reference import snapshot as twin_snapshot

TWINS = {"compiled": _state, "reference": reference.table}
#: What one twin has beyond the contract: the compiled table reports its slots and growth.
EXTRAS = {"compiled": {"capacity_report"}, "reference": set()}


def written_in(protocol: type) -> dict[str, object]:
    """The members written in the protocol's body, not those typing.Protocol adds."""
    found = {}
    for name, value in vars(protocol).items():
        function = value.fget if isinstance(value, property) else value
        if inspect.isfunction(function) and function.__qualname__ == f"{protocol.__qualname__}.{name}":
            found[name] = value
    return found


TABLE = written_in(ProducerStateTableProtocol)
RESULT = written_in(AppendResultProtocol)
TABLE_METHODS = sorted(name for name, value in TABLE.items() if not isinstance(value, property))


def shape(function, *, method: bool = True) -> list[tuple]:
    """(name, kind, default) of each parameter after self. A positional-only parameter's
    name is nobody's business (the compiled ``__contains__`` calls it ``key``); a default
    class is compared by name (each twin's default table_class is its own table)."""
    parameters = list(inspect.signature(function).parameters.values())[1 if method else 0 :]
    return [
        (
            None if p.kind is p.POSITIONAL_ONLY else p.name,
            p.kind,
            p.default.__name__ if isinstance(p.default, type) else p.default,
        )
        for p in parameters
    ]


def public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def is_read_only_attribute(cls: type, name: str) -> bool:
    found = inspect.getattr_static(cls, name)
    if isinstance(found, property):
        return found.fset is None
    return isinstance(found, types.GetSetDescriptorType | types.MemberDescriptorType)


def test_the_contract_is_what_the_table_api_is():
    assert set(TABLE) == {
        "window", "map_end_offset", "__len__", "__contains__", "__iter__", "producer_ids", "entry",
        "memory_bytes", "check", "update", "append", "append_many", "append_marker",
        "update_map_end_offset", "remove_expired", "copy", "update_from", "max_producers", "evictions",
    }  # fmt: skip
    assert {name for name, value in TABLE.items() if isinstance(value, property)} == {
        "window", "map_end_offset", "max_producers", "evictions",
    }  # fmt: skip
    assert all(isinstance(value, property) for value in RESULT.values())


@pytest.mark.parametrize("twin", TWINS)
def test_each_twin_has_the_contracts_members_and_only_its_extras(twin):
    module = TWINS[twin]
    assert public(module.ProducerStateTable) == public(ProducerStateTableProtocol) | EXTRAS[twin]
    assert public(module.AppendResult) == set(RESULT)
    table = module.ProducerStateTable()
    assert isinstance(table, ProducerStateTableProtocol)
    assert isinstance(table.append(1, 0, 0, 1, 0), AppendResultProtocol)


@pytest.mark.parametrize("name", TABLE_METHODS)
def test_method_signatures_equal_the_contracts(name):
    contract = shape(TABLE[name])
    assert shape(getattr(_state.ProducerStateTable, name)) == contract, "compiled"
    assert shape(getattr(reference.ProducerStateTable, name)) == contract, "reference"


#: The one property a table's owner sets: a log applies its cap to a table loaded from a snapshot.
SETTABLE = {"max_producers"}


@pytest.mark.parametrize("twin", TWINS)
def test_properties_are_read_only_on_both_twins(twin):
    module = TWINS[twin]
    for name, value in TABLE.items():
        if isinstance(value, property) and name in SETTABLE:
            table = module.ProducerStateTable()
            setattr(table, name, 3)
            assert getattr(table, name) == 3, name
        elif isinstance(value, property):
            assert is_read_only_attribute(module.ProducerStateTable, name), name
    for name in RESULT:
        assert is_read_only_attribute(module.AppendResult, name), name


def test_constructors_take_window_then_capacity_by_keyword(impl):
    # A protocol has no constructor: the stub's __new__ (the compiled __cinit__) and the
    # twin's __init__ are checked by calling them.
    assert inspect.signature(reference.ProducerStateTable).parameters.keys() == {"window", "capacity", "max_producers"}
    assert impl().window == 5 and impl(7).window == impl(window=7, capacity=100).window == 7
    with pytest.raises(TypeError):
        impl(5, 100)  # capacity is keyword-only


def test_the_compiled_stub_inherits_the_contract_instead_of_repeating_it():
    stub = ast.parse((Path(dedup.__file__).parent / "_state.pyi").read_text())
    classes = {node.name: node for node in stub.body if isinstance(node, ast.ClassDef)}
    table, result = classes["ProducerStateTable"], classes["AppendResult"]
    assert ast.unparse(table.bases[0]) == "ProducerStateTableProtocol[AppendResult]"
    assert ast.unparse(result.bases[0]) == "AppendResultProtocol"
    declared = {node.name for node in table.body if isinstance(node, ast.FunctionDef)}
    assert declared == {"__new__"} | EXTRAS["compiled"]  # nothing of the protocol twice
    assert all(isinstance(node, ast.Expr) for node in result.body)  # `...` only


FUNCTIONS = [
    (_records, twin_records, "scan_batches"),
    (_records, twin_records, "crc_valid"),
    (_records, twin_records, "validate_batches"),
    (_records, twin_records, "check_one_batch"),
    (_records, twin_records, "append_batches"),
    (_records, twin_crc32c, "crc32c"),
    (_snapshot, twin_snapshot, "encode_kafka"),
    (_snapshot, twin_snapshot, "encode_full"),
    (_snapshot, twin_snapshot, "decode_kafka"),
    (_snapshot, twin_snapshot, "decode_full"),
]


@pytest.mark.parametrize(("compiled", "twin", "name"), FUNCTIONS, ids=[name for _, _, name in FUNCTIONS])
def test_records_and_snapshot_functions_equal_their_twins(compiled, twin, name):
    assert shape(getattr(compiled, name), method=False) == shape(getattr(twin, name), method=False)


def test_every_public_function_of_the_compiled_modules_has_a_twin():
    def functions(module):
        return {
            name
            for name, value in vars(module).items()
            if not name.startswith("_") and callable(value) and getattr(value, "__module__", None) == module.__name__
        }

    assert functions(_records) | functions(_snapshot) == {name for _, _, name in FUNCTIONS} | {"SnapshotWriter"}
