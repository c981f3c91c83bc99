"""Random buffers at any alignment, for the CRC-32C kernels' tests: hypothesis draws a length,
a start offset into the allocation, a seed for the bytes and a CRC to continue from (shown as
those four numbers when a test fails), and ``unaligned`` makes the buffer."""

from __future__ import annotations

import random

from hypothesis import strategies as st


def buffers(max_length: int, max_start: int) -> dict:
    """Keyword strategies for ``@given``: length, start, seed and crc."""
    return {
        "length": st.integers(0, max_length),
        "start": st.integers(0, max_start),
        "seed": st.integers(0, 2**32 - 1),
        "crc": st.integers(0, 0xFFFFFFFF),
    }


def unaligned(length: int, start: int, seed: int) -> memoryview:
    """``length`` seeded random bytes, ``start`` bytes into their allocation."""
    return memoryview(random.Random(seed).randbytes(start + length))[start:]
