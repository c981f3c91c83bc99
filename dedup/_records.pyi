"""Typed stub of the compiled batch scanner (src_cython/dedup/_records.pyx)."""

from typing import Any

import numpy as np

from ._state import ProducerStateTable
from ._types import BatchesAppendResult, Origin

#: Which CPU instruction computes CRC-32C here ("sse4.2", "armv8-crc"), or "" for the table.
CRC32C_HARDWARE: str

def crc32c(data: Any, crc: int = 0) -> int: ...
def crc32c_software(data: Any, crc: int = 0) -> int: ...
def scan_batches(data: Any, *, tail: str = "raise") -> np.ndarray: ...
def crc_valid(data: Any, headers: np.ndarray | None = None) -> np.ndarray: ...
def validate_batches(data: Any, *, origin: Origin = ..., tail: str = "raise") -> np.ndarray: ...
def check_one_batch(data: Any, *, origin: Origin = ...) -> tuple[int, ...] | None: ...
def append_batches(
    table: ProducerStateTable,
    data: Any,
    *,
    origin: Origin = ...,
    log_end_offset: int | None = None,
    partition_leader_epoch: int | None = None,
    write_offsets: bool = False,
    tail: str = "raise",
) -> BatchesAppendResult: ...
def _c_constants() -> dict[str, int]: ...
