"""The contract both twins of the producer-state table satisfy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, Self, runtime_checkable

from ._types import AppendManyResult, CompletedTxn, Origin, ProducerStateEntry


@runtime_checkable
class ProducerStateTableProtocol(Protocol):
    """One partition replica's producer state (spec §1), compiled or pure Python."""

    @property
    def window(self) -> int: ...
    @property
    def map_end_offset(self) -> int: ...
    def __len__(self) -> int: ...
    def __contains__(self, producer_id: object) -> bool: ...
    def __iter__(self) -> Iterator[int]: ...
    def producer_ids(self) -> Any: ...
    def entry(self, producer_id: int) -> ProducerStateEntry | None: ...
    def memory_bytes(self) -> int: ...
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
    ) -> Any: ...
    def update(self, result: Any) -> None: ...
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
    ) -> Any: ...
    def append_many(
        self,
        producer_ids: Any,
        producer_epochs: Any,
        base_sequences: Any,
        record_counts: Any,
        max_timestamps: Any = None,
        *,
        log_end_offset: int,
        origin: Origin = Origin.CLIENT,
        transactional: Any = None,
    ) -> AppendManyResult: ...
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
    ) -> CompletedTxn | None: ...
    def update_map_end_offset(self, offset: int) -> None: ...
    def remove_expired(self, now_ms: int, expiration_ms: int) -> int: ...
    def copy(self, producer_ids: Any = None) -> ProducerStateTableProtocol: ...
    def update_from(self, staged: Self) -> None: ...
