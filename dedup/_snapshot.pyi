"""Typed stub of the compiled snapshot codec (src_cython/dedup/_snapshot.pyx).

The pure-Python twin is :mod:`dedup.reference.snapshot`, with the same signatures
(``tests/table/test_contract.py`` compares them).
"""

from typing import Literal, Self, final

from typing_extensions import Buffer

from ._state import ProducerStateTable

#: The full format's magic.
MAGIC: bytes
#: The version of Kafka's format (the only one).
VERSION: int
#: The full format's version that encode_full writes; decode_full also reads version 1.
FULL_FORMAT_VERSION: int

def encode_kafka(table: ProducerStateTable) -> bytes: ...
def encode_full(table: ProducerStateTable) -> bytes: ...
def decode_kafka(
    data: Buffer,
    window: int = 5,
    map_end_offset: int = 0,
    table_class: type[ProducerStateTable] = ...,
) -> ProducerStateTable: ...
def decode_full(data: Buffer, table_class: type[ProducerStateTable] = ...) -> ProducerStateTable: ...

@final  # @cython.final: a final class is a disjoint base too
class SnapshotWriter:
    # The arguments go to __cinit__, which is the type's __new__.
    def __new__(cls, table: ProducerStateTable, format: Literal["full", "kafka"]) -> Self: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc_info: object) -> Literal[False]: ...
    @property
    def size(self) -> int: ...
    @property
    def crc_offset(self) -> int | None: ...
    @property
    def crc(self) -> int: ...
    def fill(self, buffer: Buffer) -> int: ...
