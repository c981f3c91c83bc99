"""CRC-32C (Castagnoli) in pure Python: the twin of :func:`dedup._records.crc32c`.

The checksum of Kafka's v2 record batches and producer-state snapshots (spec §8.5): reflected
polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF, the same as the JDK's
``java.util.zip.CRC32C`` that Kafka's ``Crc32C`` wraps. CRC-32C("123456789") = 0xE3069283.

Table driven, one byte per step: written to be read and checked against, not to be fast (the
compiled one uses the CPU's CRC instruction).
"""

from __future__ import annotations

from typing import Any

from .. import _args

__all__ = ["POLYNOMIAL", "crc32c"]

#: The Castagnoli polynomial, bit-reversed (the register shifts right).
POLYNOMIAL = 0x82F63B78
_MASK32 = 0xFFFFFFFF


def _byte_table() -> tuple[int, ...]:
    """The register update for each byte value: eight shifts, xoring the polynomial in
    whenever a 1 falls off the low end."""
    table = []
    for byte in range(256):
        register = byte
        for _ in range(8):
            register = (register >> 1) ^ POLYNOMIAL if register & 1 else register >> 1
        table.append(register)
    return tuple(table)


_TABLE = _byte_table()


def crc32c(data: Any, crc: int = 0) -> int:
    """CRC-32C of ``data`` (any C-contiguous buffer), continuing from ``crc``, the CRC of the
    bytes before it (0 to start).

    ``crc32c(b + c) == crc32c(c, crc32c(b))``. ``TypeError`` for anything but a C-contiguous
    buffer or an integer ``crc``; ``ValueError`` for a ``crc`` outside [0, 2^32-1] (the
    same contract as the compiled :func:`dedup._records.crc32c`).

    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    """
    try:
        octets = bytes(memoryview(data).cast("B"))
    except TypeError as error:
        raise TypeError(f"data must be a C-contiguous buffer, got {type(data).__name__}: {error}") from None
    crc = _args.integer("crc", crc, 0, _MASK32, "a uint32")
    table = _TABLE
    register = crc ^ _MASK32  # the register holds the inverted CRC between calls
    for byte in octets:
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register ^ _MASK32
