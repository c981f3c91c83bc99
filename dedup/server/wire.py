"""Kafka's wire framing, request and response headers, and the APIs the front end speaks.

Every request and response body is a type generated from Kafka's own message schemas by
`kio <https://pypi.org/project/kio/>`_; this module only frames them. A frame is a 4-byte
big-endian size and that many bytes: the request header (api_key, api_version,
correlation_id, client_id, and tagged fields in flexible versions), then the body.

What a broker does with a request it cannot serve (Kafka's SocketServer and RequestContext):

- a frame larger than ``socket.request.max.bytes`` (100 MiB): the connection is closed
  (InvalidReceiveException);
- an API key it does not know, a version it does not speak, or bytes that do not parse: the
  connection is closed (InvalidRequestException from SocketServer.parseRequestHeader, when
  ApiVersionManager.isApiEnabled says no, or from RequestContext.parseRequest), except that ApiVersions in a version it
  does not speak gets UNSUPPORTED_VERSION with a v0 body listing what it speaks (KIP-511),
  so the client can retry in a version both know;
- tagged fields it does not know, in the header or at any depth of a flexible body: skipped
  (KIP-482), and bytes after the body: ignored (AbstractRequest.parseRequest reads the body
  and keeps no count of what is left).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import io
import os
import struct
import typing
from enum import IntEnum
from typing import Any, NamedTuple

from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer
from kio.serial._introspect import classify_field, get_field_tag, get_schema_field_type, is_optional
from kio.static.primitive import i32Timedelta

from ..segment import FileRegion

__all__ = [
    "MAX_REQUEST_BYTES",
    "ApiKey",
    "BadRequest",
    "Request",
    "ResponseFrame",
    "SUPPORTED_VERSIONS",
    "build",
    "encode_response",
    "encode_response_frame",
    "parse_request",
    "send_response",
]

#: Kafka's ``socket.request.max.bytes`` default: the largest request frame accepted.
MAX_REQUEST_BYTES = 104_857_600

_NO_THROTTLE = i32Timedelta.parse(datetime.timedelta(0))

# kio finds a schema by importing its dotted path (pkgutil.resolve_name) on every call: about 10 us
# a request and as much a response, for a class that never changes. Looked up once per version here.
_request_schema = functools.cache(load_request_schema)
_response_schema = functools.cache(load_response_schema)
_HEADER = struct.Struct(">hhi")  # api_key, api_version, correlation_id: the same in every header version


class ApiKey(IntEnum):
    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    SASL_HANDSHAKE = 17
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    INIT_PRODUCER_ID = 22
    ADD_PARTITIONS_TO_TXN = 24
    ADD_OFFSETS_TO_TXN = 25
    END_TXN = 26
    TXN_OFFSET_COMMIT = 28
    DESCRIBE_CONFIGS = 32
    SASL_AUTHENTICATE = 36
    DELETE_GROUPS = 42
    OFFSET_DELETE = 47
    DESCRIBE_CLUSTER = 60
    DESCRIBE_TRANSACTIONS = 65
    LIST_TRANSACTIONS = 66


#: The versions served, per API. Produce starts at v3 (the first to carry v2 batches); Fetch
#: at v4 (librdkafka sends v2 batches only to brokers that speak Fetch v4 or later); Fetch
#: stops at v11 and Metadata at v9, before topic ids; the rest are what Kafka 2.5 served.
SUPPORTED_VERSIONS: dict[int, tuple[int, int]] = {
    ApiKey.PRODUCE: (3, 9),
    ApiKey.FETCH: (4, 11),
    ApiKey.LIST_OFFSETS: (1, 5),
    ApiKey.METADATA: (0, 9),
    ApiKey.API_VERSIONS: (0, 3),
    ApiKey.INIT_PRODUCER_ID: (0, 5),
    ApiKey.CREATE_TOPICS: (2, 6),  # v0-v1 are gone from Kafka 4.0 (KIP-896); v7 carries topic ids
    ApiKey.DELETE_TOPICS: (1, 5),  # v0 is gone from Kafka 4.0 (KIP-896); v6 carries topic ids
    ApiKey.DESCRIBE_CONFIGS: (1, 4),  # Kafka 4 serves 1 to 4 (v0 removed, KIP-896)
    ApiKey.DESCRIBE_CLUSTER: (0, 1),
    # The classic group protocol, as Kafka 4.0 serves it (OffsetCommit from v2 as there, KIP-896;
    # OffsetCommit and OffsetFetch stop before v10's topic ids, FindCoordinator before v5's
    # transaction and v6's share-group keys, ListGroups before v5's type filter and
    # DescribeGroups before v6's GROUP_ID_NOT_FOUND for unknown groups).
    ApiKey.FIND_COORDINATOR: (0, 4),
    ApiKey.JOIN_GROUP: (0, 9),
    ApiKey.SYNC_GROUP: (0, 5),
    ApiKey.HEARTBEAT: (0, 4),
    ApiKey.LEAVE_GROUP: (0, 5),
    ApiKey.OFFSET_COMMIT: (2, 9),
    ApiKey.OFFSET_FETCH: (1, 9),
    ApiKey.LIST_GROUPS: (0, 4),
    ApiKey.DESCRIBE_GROUPS: (0, 5),
    ApiKey.DELETE_GROUPS: (0, 2),
    ApiKey.OFFSET_DELETE: (0, 0),
    # Transactions as Kafka 4.0 serves them to clients: AddPartitionsToTxn v4+ is broker to
    # broker (KIP-890's verification); EndTxn stops before v5's epoch bump per transaction
    # (transaction version 2, not served).
    ApiKey.ADD_PARTITIONS_TO_TXN: (0, 3),
    ApiKey.ADD_OFFSETS_TO_TXN: (0, 4),
    ApiKey.END_TXN: (0, 4),
    ApiKey.TXN_OFFSET_COMMIT: (0, 4),
    ApiKey.DESCRIBE_TRANSACTIONS: (0, 0),
    ApiKey.LIST_TRANSACTIONS: (0, 1),
    # SASL (KIP-43, KIP-84, KIP-152): answered by security/authenticator.py before authentication.
    ApiKey.SASL_HANDSHAKE: (0, 1),
    ApiKey.SASL_AUTHENTICATE: (0, 2),
}


class BadRequest(Exception):
    """A frame the broker cannot serve: the connection is closed (and the reason logged)."""


class Request(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: Any  # the kio request entity; None for ApiVersions in an unsupported version
    client_host: str = ""  # the peer's address as Kafka's RequestContext.clientAddress shows it: "/127.0.0.1"
    listener: str = "PLAINTEXT"  # the name of the listener it came in on (RequestContext.listenerName)

    @property
    def name(self) -> str:
        return ApiKey(self.api_key).name


def parse_request(frame: bytes) -> Request:
    """A request frame (without its size prefix) as a :class:`Request`; ``BadRequest`` if
    the broker must close the connection instead of answering."""
    if len(frame) < _HEADER.size:
        raise BadRequest(f"a request of {len(frame)} bytes is shorter than a request header")
    api_key, api_version, correlation_id = _HEADER.unpack_from(frame)
    if api_key not in SUPPORTED_VERSIONS:
        raise BadRequest(f"unknown or unserved API key {api_key}")
    low, high = SUPPORTED_VERSIONS[api_key]
    if not low <= api_version <= high:
        if api_key == ApiKey.API_VERSIONS:  # KIP-511: answered, in v0
            return Request(api_key, api_version, correlation_id, None, None)
        raise BadRequest(f"{ApiKey(api_key).name} v{api_version} is not served (v{low} to v{high} are)")
    schema = _request_schema(api_key, api_version)
    if api_key != ApiKey.PRODUCE or not plain_produce_request(frame, api_version):
        frame = known_fields_only(schema, frame)
    try:
        header, size = entity_reader(schema.__header_schema__)(frame, 0)
        body, _ = entity_reader(schema)(frame, size)
    except Exception as error:  # kio raises several types on malformed bytes
        raise BadRequest(f"{ApiKey(api_key).name} v{api_version}: malformed request: {error!r}") from None
    # Bytes after the body are ignored, as Kafka's AbstractRequest.parseRequest does.
    return Request(api_key, api_version, correlation_id, header.client_id, body)


# --- sizes checked and unknown tagged fields removed before kio reads -------------------------------
#
# kio's reader (native code) reserves an array's memory from the count on the wire before it reads
# the elements: the count 2^31 in a frame of 24 bytes asks for hundreds of GB, and the failed
# allocation aborts the process, every broker of it (found by ``python -m dedup fuzz``). Kafka's
# readers refuse a count larger than the bytes left; known_fields_only does the same before kio
# runs, by walking the frame with the request's schema. Every array element and every field takes
# at least one byte, so a count or length larger than the bytes left is never a valid request.
#
# The same walk removes the tagged fields the schema does not know (KIP-482): Kafka's generated
# readers keep them aside as unknown tagged fields and go on (``_unknownTaggedFields`` in every
# ``*Data.read``), in the request header and in every flexible struct at any depth; kio's reader
# raises ``KeyError('Unknown tagged field tag: N')`` instead.

_FIXED_SIZES = {
    "int8": 1, "uint8": 1, "bool": 1, "int16": 2, "uint16": 2, "error_code": 2, "int32": 4, "uint32": 4,
    "timedelta_i32": 4, "int64": 8, "uint64": 8, "float64": 8, "timedelta_i64": 8, "datetime_i64": 8, "uuid": 16,
}  # fmt: skip

# A plan is (steps, flexible, known tags); a step is ("fixed", size), ("string", width, name,
# nullable) with width 0 for a compact length, 2 or 4 for a legacy one, ("entity", plan) or
# ("array", element step, name, nullable).
_Plan = tuple[tuple[tuple[Any, ...], ...], bool, frozenset[int]]
# A replacement of frame[start:end] by new bytes: a tagged-field section without its unknown fields.
_Edit = tuple[int, int, bytes]


@functools.cache
def _plan(entity: Any, header: bool = False) -> _Plan:
    flexible = bool(entity.__flexible__)
    steps = []
    known_tags = set()
    for schema_field in dataclasses.fields(entity):
        tag = get_field_tag(schema_field)
        if tag is not None:
            known_tags.add(tag)  # in the tagged fields at the end, each with its size: kio reads it
            continue
        kind = classify_field(schema_field)
        name, nullable = schema_field.name, is_optional(schema_field)
        step: tuple[Any, ...]
        if dataclasses.is_dataclass(kind.type_):
            if not kind.is_array and nullable:
                raise NotImplementedError(f"{entity.__name__}.{name}: a nullable entity")
            step = ("entity", _plan(kind.type_))
        else:
            kafka_type = get_schema_field_type(schema_field)
            if header and name == "client_id":  # always a legacy string (Kafka's RequestHeader)
                step = ("string", 2, name, True)
            elif kafka_type in _FIXED_SIZES:
                step = ("fixed", _FIXED_SIZES[kafka_type])
            elif kafka_type in ("string", "bytes", "records"):
                width = 0 if flexible else 2 if kafka_type == "string" else 4
                step = ("string", width, name, nullable and not kind.is_array)
            else:
                raise NotImplementedError(f"{entity.__name__}.{name}: kafka type {kafka_type}")
        steps.append(("array", step, name, nullable) if kind.is_array else step)
    return tuple(steps), flexible, frozenset(known_tags)


def _unsigned_varint(frame: bytes, at: int, what: str) -> tuple[int, int]:
    value = shift = 0
    for _ in range(5):
        if at >= len(frame):
            raise BadRequest(f"{what}: the request ends inside a varint")
        byte = frame[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
    raise BadRequest(f"{what}: a varint longer than 5 bytes")


def encode_unsigned_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _signed(frame: bytes, at: int, width: int, what: str) -> int:
    if at + width > len(frame):
        raise BadRequest(f"{what}: the request ends at byte {len(frame)}, inside a field at {at}")
    return int.from_bytes(frame[at : at + width], "big", signed=True)


def _fits(count: int, frame: bytes, at: int, what: str) -> None:
    if count < 0:
        raise BadRequest(f"{what}: a length of {count}")
    if count > len(frame) - at:
        raise BadRequest(f"{what}: a length of {count} with {len(frame) - at} bytes left in the request")


def _null(step: tuple[Any, ...], what: str) -> None:
    if not step[3]:  # Kafka's reader: "non-nullable field X was serialized as null"
        raise BadRequest(f"{what}: non-nullable field {step[2]} was serialized as null")


def _walk_step(step: tuple[Any, ...], frame: bytes, at: int, flexible: bool, what: str, edits: list[_Edit]) -> int:
    kind = step[0]
    if kind == "fixed":
        return at + int(step[1])
    if kind == "entity":
        return _walk(step[1], frame, at, what, edits)
    if kind == "string":
        if step[1] == 0:
            length, at = _unsigned_varint(frame, at, what)
            length -= 1  # 0 is null
        else:
            length = _signed(frame, at, step[1], what)
            at += step[1]
        if length == -1:
            _null(step, what)
            return at
        _fits(length, frame, at, f"{what}: {step[2]}")
        return at + length
    # an array: a compact (varint n + 1, 0 null) or legacy (int32, -1 null) count, then the elements
    if flexible:
        count, at = _unsigned_varint(frame, at, what)
        count -= 1
    else:
        count = _signed(frame, at, 4, what)
        at += 4
    if count == -1:
        _null(step, what)
        return at
    _fits(count, frame, at, f"{what}: {step[2]}")
    element = step[1]
    if element[0] == "fixed":
        return at + count * int(element[1])
    for index in range(count):
        at = _walk_step(element, frame, at, flexible, f"{what}[{index}]", edits)
        if at > len(frame):
            break
    return at


def _walk(plan: _Plan, frame: bytes, at: int, what: str, edits: list[_Edit]) -> int:
    steps, flexible, known_tags = plan
    for step in steps:
        at = _walk_step(step, frame, at, flexible, what, edits)
        if at > len(frame):
            raise BadRequest(f"{what}: the request ends at byte {len(frame)}, before its fields do")
    if flexible:
        start = at
        count, at = _unsigned_varint(frame, at, f"{what}: tagged fields")
        _fits(count, frame, at, f"{what}: tagged fields")
        kept: list[bytes] = []
        for _ in range(count):
            field_start = at
            tag, at = _unsigned_varint(frame, at, f"{what}: tag")
            size, at = _unsigned_varint(frame, at, f"{what}: tagged field size")
            _fits(size, frame, at, f"{what}: tagged field")
            at += size
            if tag in known_tags:
                kept.append(frame[field_start:at])
        if len(kept) < count:
            edits.append((start, at, encode_unsigned_varint(len(kept)) + b"".join(kept)))
    return at


_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")


def _varint_at(frame: bytes, at: int) -> tuple[int, int]:
    """An unsigned varint at ``at`` and the position after it; ValueError past 5 bytes,
    IndexError past the end (the callers treat both as "not plain")."""
    value = shift = 0
    for _ in range(5):
        byte = frame[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
    raise ValueError("a varint longer than 5 bytes")


def plain_produce_request(frame: bytes, version: int) -> bool:
    """True when a Produce request frame (v3-v9, header included) is one that
    :func:`known_fields_only` would return unchanged without raising: every string, bytes and
    array length within the bytes left, nothing null that is not nullable, and no tagged field
    at all (flexible versions). False sends the frame the generic way, which removes unknown
    tagged fields and says what is wrong; False is always safe.

    The generic walk interprets the schema step by step in Python, about a quarter of a small
    produce request's server CPU; Produce, the request a broker serves most, is walked here by
    hand (Kafka's ProduceRequest.json: transactional_id, acks, timeout_ms, topic_data [name,
    partition_data [index, records]])."""
    flexible = version >= 9
    end = len(frame)
    try:
        at = 8  # request_api_key, request_api_version, correlation_id
        (length,) = _INT16.unpack_from(frame, at)  # client_id: a nullable legacy string in every header version
        at += 2
        if length < -1 or length > end - at:
            return False
        at += max(length, 0)
        if flexible:
            if frame[at] != 0:  # the header's tagged fields
                return False
            at += 1
            length, at = _varint_at(frame, at)  # transactional_id: nullable
            length -= 1
        else:
            (length,) = _INT16.unpack_from(frame, at)
            at += 2
        if length < -1 or length > end - at:
            return False
        at += max(length, 0) + 6  # acks (int16), timeout_ms (int32)
        topics, at = _plain_count(frame, at, flexible)
        if topics < 0 or topics > end - at:  # topic_data is not nullable
            return False
        for _ in range(topics):
            if flexible:
                length, at = _varint_at(frame, at)  # name: not nullable
                length -= 1
            else:
                (length,) = _INT16.unpack_from(frame, at)
                at += 2
            if length < 0 or length > end - at:
                return False
            at += length
            partitions, at = _plain_count(frame, at, flexible)
            if partitions < 0 or partitions > end - at:  # partition_data is not nullable
                return False
            for _ in range(partitions):
                at += 4  # index
                if flexible:
                    length, at = _varint_at(frame, at)  # records: nullable
                    length -= 1
                else:
                    (length,) = _INT32.unpack_from(frame, at)
                    at += 4
                if length < -1 or length > end - at:
                    return False
                at += max(length, 0)
                if flexible:
                    if frame[at] != 0:
                        return False
                    at += 1
            if flexible:
                if frame[at] != 0:
                    return False
                at += 1
        if flexible:
            if frame[at] != 0:
                return False
            at += 1
    except (IndexError, ValueError, struct.error):
        return False
    return at <= end


def _plain_count(frame: bytes, at: int, flexible: bool) -> tuple[int, int]:
    """An array's count (-1: null) and the position after it."""
    if flexible:
        count, at = _varint_at(frame, at)
        return count - 1, at
    return _INT32.unpack_from(frame, at)[0], at + 4


def known_fields_only(schema: Any, frame: bytes) -> bytes:
    """``frame`` (a request of ``schema``, header included) without the tagged fields its
    schema does not know, at any depth (KIP-482: Kafka's readers skip them); ``frame`` itself
    when it has none.

    ``BadRequest`` if an array count, a string or bytes length or a tagged field count or size
    is larger than the bytes left after it, or negative, or null where the field is not
    nullable (kio would read None there); the rest is left to kio's reader. Run before it: kio
    reserves memory from the counts and cannot survive an absurd one, and raises on an unknown
    tag. Bytes after the body are left in place (Kafka ignores them)."""
    name = schema.__name__
    edits: list[_Edit] = []
    at = _walk(_plan(schema.__header_schema__, header=True), frame, 0, f"{name} header", edits)
    _walk(_plan(schema), frame, at, name, edits)
    if not edits:
        return frame
    parts, last = [], 0
    for start, end, replacement in edits:  # in frame order: the walk goes front to back
        parts += [frame[last:start], replacement]
        last = end
    parts.append(frame[last:])
    return b"".join(parts)


def encode_response(request: Request, body: Any) -> bytes:
    """The response frame (size prefix included) for ``request``, whose body is the kio
    entity ``body``; the header version follows the body's (ApiVersions always v0)."""
    schema = type(body)
    buffer = io.BytesIO()
    buffer.write(b"\0\0\0\0")
    header = schema.__header_schema__
    entity_writer(header)(buffer, header(correlation_id=request.correlation_id))
    entity_writer(schema)(buffer, body)
    data = buffer.getbuffer()
    struct.pack_into(">i", data, 0, len(data) - 4)
    return bytes(data)


# --- responses with file regions (zero copy) -----------------------------------------------------
#
# A Fetch response carries its records as FileRegions of segment files: the frame is encoded with
# a placeholder of PLACEHOLDER_SIZE unique bytes where each partition's records go, then cut
# around them, so the records are never read into memory and go to the socket with sendfile, as
# Kafka's FetchResponse goes out through FileRecords.writeTo (transferTo).

#: The size of a records placeholder: random bytes, unique per response.
PLACEHOLDER_SIZE = 16


class ResponseFrame:
    """A response frame (its size prefix included) as ``parts``: bytes, and
    :class:`~dedup.segment.FileRegion` s sent from their files. :meth:`close` releases the
    regions; :func:`send_response` does it once the frame is sent or the send fails."""

    __slots__ = ("parts", "size")

    def __init__(self, parts: list[bytes | FileRegion]) -> None:
        self.parts = parts
        self.size = sum(len(part) for part in parts)

    def close(self) -> None:
        for part in self.parts:
            if isinstance(part, FileRegion):
                part.close()
        self.parts = []

    def to_bytes(self) -> bytes:
        """The whole frame in memory (tests, the fuzzer)."""
        return b"".join(part.read() if isinstance(part, FileRegion) else part for part in self.parts)


def new_placeholder() -> bytes:
    """A records placeholder for :func:`encode_response_frame` (16 random bytes: a collision
    with the rest of a response is out of reach)."""
    return os.urandom(PLACEHOLDER_SIZE)


def encode_response_frame(request: Request, body: Any, regions: dict[bytes, FileRegion]) -> ResponseFrame:
    """The frame of :func:`encode_response`, with each ``records`` (bytes) field of ``body``
    that holds a placeholder of ``regions`` (from :func:`new_placeholder`) replaced by that
    region: its length prefix rewritten (int32, or an unsigned varint of length + 1 in a
    flexible version) and the region left as a part of its own. The frame owns the regions."""
    encoded = encode_response(request, body)
    if not regions:
        return ResponseFrame([encoded])
    flexible = bool(type(body).__flexible__)
    found = sorted((encoded.index(placeholder), placeholder) for placeholder in regions)
    parts: list[bytes | FileRegion] = []
    last = 0
    for at, placeholder in found:
        region = regions[placeholder]
        if flexible:  # compact bytes: uvarint(length + 1)
            prefix_at, prefix = at - 1, encode_unsigned_varint(region.size + 1)
            expected = encode_unsigned_varint(PLACEHOLDER_SIZE + 1)
        else:
            prefix_at, prefix = at - 4, struct.pack(">i", region.size)
            expected = struct.pack(">i", PLACEHOLDER_SIZE)
        if encoded[prefix_at:at] != expected:  # pragma: no cover - the placeholder is not a records field
            raise AssertionError(f"placeholder at {at} is not preceded by a records length")
        parts += [encoded[last:prefix_at] + prefix, region]
        last = at + PLACEHOLDER_SIZE
    parts.append(encoded[last:])
    size = sum(len(part) for part in parts) - 4
    parts[0] = struct.pack(">i", size) + parts[0][4:]  # type: ignore[index]
    return ResponseFrame(parts)


async def send_response(writer: asyncio.StreamWriter, frame: ResponseFrame) -> None:
    """Write ``frame`` to the connection: bytes through the stream, regions with
    ``loop.sendfile`` (``os.sendfile`` on a plain socket; bounded chunks on a transport that
    cannot, such as TLS). The regions are closed when it returns or raises. A region whose
    file was cut meanwhile (a truncation) cannot complete the frame: ``ConnectionAbortedError``
    (the caller closes the connection, the client retries)."""
    loop = asyncio.get_running_loop()
    try:
        for part in frame.parts:
            if isinstance(part, FileRegion):
                await writer.drain()
                if writer.is_closing():  # loop.sendfile would raise RuntimeError
                    raise ConnectionResetError("the connection closed before the response was sent")
                try:
                    # Native sendfile only: asyncio's fallback reads through the file's offset,
                    # which every descriptor duplicated from the segment's shares (a fallback
                    # from position 0 skips the seek and reads where the last one stopped).
                    with open(part.fd, "rb", buffering=0, closefd=False) as file:
                        sent = await loop.sendfile(writer.transport, file, part.position, part.size, fallback=False)
                except (RuntimeError, NotImplementedError):  # SendfileNotAvailableError: TLS, or no sendfile
                    sent = await _send_in_chunks(writer, part)
                if sent != part.size:
                    raise ConnectionAbortedError(f"{sent} of a region's {part.size} bytes were left to send")
            else:
                writer.write(part)
        await writer.drain()
    finally:
        frame.close()


#: The chunk a region is sent in where sendfile cannot be used (asyncio's own fallback reads 256 KiB).
SEND_CHUNK_BYTES = 1 << 18


async def _send_in_chunks(writer: asyncio.StreamWriter, region: FileRegion) -> int:
    """``region`` written through the stream ``SEND_CHUNK_BYTES`` at a time, each drained
    before the next is read, so at most one chunk is in memory; the bytes sent."""
    sent = 0
    while sent < region.size:
        if writer.is_closing():
            raise ConnectionResetError("the connection closed while a response was sent")
        chunk = os.pread(region.fd, min(SEND_CHUNK_BYTES, region.size - sent), region.position + sent)
        if not chunk:
            break
        writer.write(chunk)
        sent += len(chunk)
        del chunk
        await writer.drain()
    return sent


def response_schema(request: Request, version: int | None = None) -> Any:
    return _response_schema(request.api_key, request.api_version if version is None else version)


@functools.cache
def _nested_types(schema: type) -> dict[str, type | None]:
    """For each field of a kio entity type, the entity type its values are (or are tuples
    of), or None for a primitive field."""
    hints = typing.get_type_hints(schema)
    nested: dict[str, type | None] = {}
    for field in dataclasses.fields(schema):
        hint = hints[field.name]
        found: type | None = None
        candidates = [hint, *typing.get_args(hint)]
        for candidate in candidates:
            for inner in (candidate, *typing.get_args(candidate)):
                if dataclasses.is_dataclass(inner) and isinstance(inner, type):
                    found = inner
        if hint is ErrorCode:
            found = ErrorCode
        nested[field.name] = found
    return nested


def build(schema: type, values: dict[str, Any]) -> Any:
    """A kio entity of type ``schema`` from a dict, nested entities given as dicts (or lists
    of dicts). Keys the version does not have are dropped, so one dict serves every version
    of a response; fields not given take their schema default."""
    nested = _nested_types(schema)
    kwargs: dict[str, Any] = {}
    for name, kind in nested.items():
        if name not in values:
            if name == "throttle_time":  # required in some versions: never throttled here
                kwargs[name] = _NO_THROTTLE
            continue
        value = values[name]
        if kind is ErrorCode:
            value = ErrorCode(value)
        elif kind is not None and value is not None:
            if isinstance(value, list | tuple):
                value = tuple(build(kind, item) for item in value)
            else:
                value = build(kind, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return schema(**kwargs)
