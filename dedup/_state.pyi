"""Typed stub of the compiled producer-state table (src_cython/dedup/_state.pyx).

The table's signatures are written once, in :mod:`dedup._protocol`, and inherited here:
``mypy.stubtest`` looks up every member the compiled class defines through the stub class's
MRO, so it checks the inherited signatures against the compiled methods exactly as if they
were spelled here (a wrong name, kind or default in the protocol fails stubtest). Spelling
them here again would add a third copy for no extra check. Only what the protocol cannot
say is written below: the constructor (``__cinit__``, so ``__new__``), the compiled table's
own ``capacity_report``, and ``@disjoint_base`` (a C-level layout).
"""

from typing import Any, Self

from typing_extensions import disjoint_base

from ._protocol import AppendResultProtocol, ProducerStateTableProtocol

@disjoint_base
class AppendResult(AppendResultProtocol): ...

@disjoint_base
class ProducerStateTable(ProducerStateTableProtocol[AppendResult]):
    def __new__(cls, window: int = 5, *, capacity: int = 0) -> Self: ...
    def capacity_report(self) -> dict[str, Any]: ...

def _c_constants() -> dict[str, int]: ...
