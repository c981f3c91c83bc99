"""Typed stub of the compiled producer-state table (src_cython/dedup/_state.pyx)."""

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

from ._types import AppendManyResult, CompletedTxn, Origin, ProducerStateEntry

class AppendResult:
    @property
    def duplicate(self) -> bool: ...
    @property
    def base_offset(self) -> int: ...
    @property
    def last_offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def producer_id(self) -> int: ...
    @property
    def producer_epoch(self) -> int: ...
    @property
    def base_sequence(self) -> int: ...
    @property
    def last_sequence(self) -> int: ...
    @property
    def transactional(self) -> bool: ...
    @property
    def origin(self) -> Origin: ...

class ProducerStateTable:
    def __init__(self, window: int = 5, *, capacity: int = 0) -> None: ...
    @property
    def window(self) -> int: ...
    @property
    def map_end_offset(self) -> int: ...
    def __len__(self) -> int: ...
    def __contains__(self, producer_id: object) -> bool: ...
    def __iter__(self) -> Iterator[int]: ...
    def producer_ids(self) -> npt.NDArray[np.int64]: ...
    def entry(self, producer_id: int) -> ProducerStateEntry | None: ...
    def memory_bytes(self) -> int: ...
    def capacity_report(self) -> dict[str, Any]: ...
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
    ) -> AppendResult: ...
    def update(self, result: AppendResult) -> None: ...
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
    ) -> AppendResult: ...
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
    def copy(self, producer_ids: Iterable[int] | npt.NDArray[np.int64] | None = None) -> ProducerStateTable: ...
    def update_from(self, staged: ProducerStateTable) -> None: ...
