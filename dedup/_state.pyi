"""Typed stub of the compiled producer-state table (src_cython/dedup/_state.pyx).

The table's signatures are written once, in :mod:`dedup._protocol`, and inherited here rather
than repeated, because that verifies as much with one copy fewer: ``mypy.stubtest`` looks up
each member the compiled class defines through the stub class's MRO, so it checks the
protocol's signatures against the compiled methods (a parameter renamed, made keyword-only or
given another default in the protocol fails stubtest, as it would here). Stubtest does not
notice a protocol member missing from the compiled class (it visits the runtime's members and
the stub's own); ``tests/table/test_contract.py`` checks the member lists of both twins.

Written here is only what the protocol cannot say: the constructor (``__cinit__`` is the
type's ``__new__``), the compiled table's own ``capacity_report``, and ``@disjoint_base``
(a C layout: no class can inherit from both this and another such class).
"""

from typing import Any, Self

from typing_extensions import disjoint_base

from ._protocol import AppendResultProtocol, ProducerStateTableProtocol

@disjoint_base
class AppendResult(AppendResultProtocol): ...

@disjoint_base
class ProducerStateTable(ProducerStateTableProtocol[AppendResult]):
    def __new__(cls, window: int = 5, *, capacity: int = 0, max_producers: int | None = None) -> Self: ...
    def capacity_report(self) -> dict[str, Any]: ...

def _c_constants() -> dict[str, int]: ...
