"""Reading the fields of the coordinators' records, as Kafka's generated message readers do.

The keys and values of ``__consumer_offsets`` (:mod:`dedup.coordinator.offsets`) and of
``__transaction_state`` (:mod:`dedup.coordinator.transaction_log`) are Kafka messages
(``OffsetCommitKey``, ``GroupMetadataValue``, ``TransactionLogValue``, ...): big-endian fixed
fields, strings and arrays with int16/int32 lengths, and in flexible versions (KIP-482) unsigned
varint lengths plus one and tagged fields. :class:`FieldReader` reads them from bytes, raising
its caller's error type (a ``ValueError``) with the record and the field named, never reading
past the end.
"""

from __future__ import annotations

import struct

__all__ = ["INT16", "INT32", "INT64", "FieldReader"]

INT16 = struct.Struct(">h")
INT32 = struct.Struct(">i")
INT64 = struct.Struct(">q")


class FieldReader:
    """The fields of ``data`` in order, from ``at``; ``error(message)`` for bytes that do not
    parse, each message starting with ``what`` (the record) and the field's name."""

    __slots__ = ("at", "data", "error", "what")

    def __init__(self, data: bytes, what: str, error: type[ValueError]) -> None:
        self.data = data
        self.at = 0
        self.what = what
        self.error = error

    def take(self, size: int, name: str) -> bytes:
        if size < 0 or self.at + size > len(self.data):
            raise self.error(f"{self.what}: {name}: {size} bytes needed at {self.at}, {len(self.data) - self.at} left")
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def fixed(self, layout: struct.Struct, name: str) -> int:
        """One fixed-size integer field of ``layout`` (e.g. ``>h``)."""
        return int(layout.unpack(self.take(layout.size, name))[0])

    def int16(self, name: str) -> int:
        return self.fixed(INT16, name)

    def int32(self, name: str) -> int:
        return self.fixed(INT32, name)

    def int64(self, name: str) -> int:
        return self.fixed(INT64, name)

    def varint(self, name: str) -> int:
        """An unsigned varint (a flexible version's lengths and tags), at most 5 bytes."""
        value = shift = 0
        for _ in range(5):
            byte = self.take(1, name)[0]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
        raise self.error(f"{self.what}: {name}: a varint longer than 5 bytes")

    def nullable_string(self, name: str, flexible: bool = False) -> str | None:
        length = self.varint(name) - 1 if flexible else self.int16(name)
        if length == -1:
            return None
        try:
            return self.take(length, name).decode()
        except UnicodeDecodeError as error:
            raise self.error(f"{self.what}: {name}: not UTF-8 ({error})") from None

    def string(self, name: str, flexible: bool = False) -> str:
        value = self.nullable_string(name, flexible)
        if value is None:
            raise self.error(f"{self.what}: {name}: null where Kafka's schema has a string")
        return value

    def bytes_field(self, name: str) -> bytes:
        """A non-flexible ``bytes`` field (int32 length)."""
        return self.take(self.int32(name), name)

    def count(self, name: str, flexible: bool) -> int:
        """An array's length; -1 for null."""
        count = self.varint(name) - 1 if flexible else self.int32(name)
        if count < -1 or count > len(self.data) - self.at:
            raise self.error(f"{self.what}: {name}: a count of {count} with {len(self.data) - self.at} bytes left")
        return count

    def tagged_fields(self) -> dict[int, bytes]:
        """A flexible version's tagged fields: tag -> its bytes."""
        fields = {}
        for _ in range(self.varint("tagged fields")):
            tag = self.varint("tag")
            fields[tag] = self.take(self.varint("tagged field size"), f"tagged field {tag}")
        return fields

    def end(self) -> None:
        if self.at != len(self.data):
            raise self.error(f"{self.what}: {len(self.data) - self.at} bytes after the last field")
