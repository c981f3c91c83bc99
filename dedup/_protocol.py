"""The contract both twins of the producer-state table satisfy, written once.

:class:`ProducerStateTableProtocol` and :class:`AppendResultProtocol` hold every signature of
the table's API. The compiled module's stub (``dedup/_state.pyi``) inherits them instead of
repeating them, so ``python -m mypy.stubtest dedup._state`` checks these very signatures
against the compiled class (names, kinds, defaults). The pure-Python twin
(:mod:`dedup.reference.table`), whose code must spell its signatures, is checked against them
by mypy (a typed assignment at the end of that module) and by ``tests/table/test_contract.py``
(``inspect.signature`` of the protocol, the compiled class and the twin, member for member).

The protocol is generic in the result type: each twin's ``check`` returns, and its
``update`` takes, its own ``AppendResult``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Never, Protocol, Self, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from ._types import AppendManyResult, CompletedTxn, Origin, ProducerStateEntry

__all__ = ["AppendResultProtocol", "ProducerStateTableProtocol", "ResultT"]


def _declared_only() -> Never:
    """The body of every member below, where a protocol would have ``...``: mypy takes a member
    whose body is ``...`` for abstract, and the compiled stub inherits these members as the
    compiled class's own (abstract ones would make ``ProducerStateTable()`` an error). Never
    runs: no class inherits from the protocols at run time."""
    raise TypeError("a member of dedup's typing contract, declared only")


@runtime_checkable
class AppendResultProtocol(Protocol):
    """The verdict on one batch: appended (or to be appended) at these offsets, or a duplicate.

    For a duplicate, ``base_offset``, ``last_offset`` and ``timestamp`` are the original
    batch's (spec §2.1 rule 10); otherwise this batch's offsets and max timestamp.
    """

    @property
    def duplicate(self) -> bool:
        _declared_only()

    @property
    def base_offset(self) -> int:
        _declared_only()

    @property
    def last_offset(self) -> int:
        _declared_only()

    @property
    def timestamp(self) -> int:
        _declared_only()

    @property
    def producer_id(self) -> int:
        _declared_only()

    @property
    def producer_epoch(self) -> int:
        _declared_only()

    @property
    def base_sequence(self) -> int:
        _declared_only()

    @property
    def last_sequence(self) -> int:
        _declared_only()

    @property
    def transactional(self) -> bool:
        _declared_only()

    @property
    def origin(self) -> Origin:
        _declared_only()


#: The table's own result type: its ``check`` returns it and its ``update`` takes only it.
ResultT = TypeVar("ResultT", bound=AppendResultProtocol)


@runtime_checkable
class ProducerStateTableProtocol(Protocol[ResultT]):
    """One partition replica's producer state (spec §1), compiled or pure Python.

    A protocol has no constructor: both twins take ``(window=5, *, capacity=0,
    max_producers=None)``, which the contract test checks.
    """

    @property
    def max_producers(self) -> int | None:
        _declared_only()

    @max_producers.setter
    def max_producers(self, value: int | None) -> None:
        _declared_only()

    @property
    def evictions(self) -> int:
        _declared_only()

    @property
    def window(self) -> int:
        _declared_only()

    @property
    def map_end_offset(self) -> int:
        _declared_only()

    def __len__(self) -> int:
        _declared_only()

    def __contains__(self, producer_id: object, /) -> bool:
        _declared_only()

    def __iter__(self) -> Iterator[int]:
        _declared_only()

    def producer_ids(self) -> npt.NDArray[np.int64]:
        _declared_only()

    def entry(self, producer_id: int) -> ProducerStateEntry | None:
        _declared_only()

    def memory_bytes(self) -> int:
        _declared_only()

    def check(
        self,
        producer_id: int,
        producer_epoch: int,
        base_sequence: int,
        record_count: int,
        base_offset: int,
        *,
        max_timestamp: int = -1,
        origin: Origin = Origin.CLIENT,
        transactional: bool = False,
    ) -> ResultT:
        _declared_only()

    def update(self, result: ResultT) -> None:
        _declared_only()

    def append(
        self,
        producer_id: int,
        producer_epoch: int,
        base_sequence: int,
        record_count: int,
        base_offset: int,
        *,
        max_timestamp: int = -1,
        origin: Origin = Origin.CLIENT,
        transactional: bool = False,
    ) -> ResultT:
        _declared_only()

    def append_many(
        self,
        producer_ids: npt.ArrayLike,
        producer_epochs: npt.ArrayLike,
        base_sequences: npt.ArrayLike,
        record_counts: npt.ArrayLike,
        max_timestamps: npt.ArrayLike | None = None,
        *,
        log_end_offset: int,
        origin: Origin = Origin.CLIENT,
        transactional: npt.ArrayLike | None = None,
    ) -> AppendManyResult:
        _declared_only()

    def append_marker(
        self,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int,
        offset: int,
        *,
        commit: bool,
        timestamp: int = -1,
        origin: Origin = Origin.COORDINATOR,
    ) -> CompletedTxn | None:
        _declared_only()

    def update_map_end_offset(self, offset: int) -> None:
        _declared_only()

    def remove_expired(self, now_ms: int, expiration_ms: int) -> int:
        _declared_only()

    def copy(self, producer_ids: Iterable[int] | npt.NDArray[np.int64] | None = None) -> Self:
        _declared_only()

    def update_from(self, staged: Self) -> None:
        _declared_only()
