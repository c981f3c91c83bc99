"""Typed stub of the compiled snapshot codec (src_cython/dedup/_snapshot.pyx)."""

from ._state import ProducerStateTable

_Buffer = bytes | bytearray | memoryview

MAGIC: bytes
VERSION: int

def encode_kafka(table: ProducerStateTable) -> bytes: ...
def encode_full(table: ProducerStateTable) -> bytes: ...
def decode_kafka(
    data: _Buffer,
    window: int = 5,
    map_end_offset: int = 0,
    table_class: type[ProducerStateTable] = ...,
) -> ProducerStateTable: ...
def decode_full(data: _Buffer, table_class: type[ProducerStateTable] = ...) -> ProducerStateTable: ...
