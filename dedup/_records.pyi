"""Typed stub of the compiled batch scanner (src_cython/dedup/_records.pyx).

The pure-Python twin is :mod:`dedup.reference.records`, with the same signatures
(``tests/table/test_contract.py`` compares them). ``data`` is any C-contiguous buffer, read
in place; ``BATCH_HEADER_DTYPE`` rows are the scanned headers.
"""

from typing import Literal

import numpy as np
import numpy.typing as npt
from typing_extensions import Buffer

from ._state import ProducerStateTable
from ._types import BATCH_HEADER_DTYPE as BATCH_HEADER_DTYPE
from ._types import BatchesAppendResult, Origin

_Tail = Literal["raise", "ignore"]

#: Which CPU instruction computes CRC-32C here ("sse4.2", "armv8-crc"), or "" for the table.
CRC32C_HARDWARE: str

def crc32c(data: Buffer, crc: int = 0) -> int: ...
def scan_batches(data: Buffer, *, tail: _Tail = "raise") -> npt.NDArray[np.void]: ...
def crc_valid(data: Buffer, headers: npt.NDArray[np.void] | None = None) -> npt.NDArray[np.bool_]: ...
def validate_batches(
    data: Buffer, *, origin: Origin = Origin.CLIENT, tail: _Tail = "raise"
) -> npt.NDArray[np.void]: ...

# (attributes, last_offset_delta, max_timestamp, producer_id, producer_epoch, base_sequence, record_count)
def check_one_batch(
    data: Buffer, *, origin: Origin = Origin.CLIENT
) -> tuple[int, int, int, int, int, int, int] | None: ...
def append_batches(
    table: ProducerStateTable,
    data: Buffer,
    *,
    origin: Origin = Origin.CLIENT,
    log_end_offset: int | None = None,
    partition_leader_epoch: int | None = None,
    write_offsets: bool = False,
    tail: _Tail = "raise",
) -> BatchesAppendResult: ...
def _c_constants() -> dict[str, int]: ...
