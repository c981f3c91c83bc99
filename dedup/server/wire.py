"""Kafka's wire framing, request and response headers, and the APIs the front end speaks.

Every request and response body is a type generated from Kafka's own message schemas by
`kio <https://pypi.org/project/kio/>`_; this module only frames them. A frame is a 4-byte
big-endian size and that many bytes: the request header (api_key, api_version,
correlation_id, client_id, and tagged fields in flexible versions), then the body.

What a broker does with a request it cannot serve (Kafka's SocketServer and RequestContext):

- a frame larger than ``socket.request.max.bytes`` (100 MiB): the connection is closed
  (InvalidReceiveException);
- an API key it does not know, a version it does not speak, or bytes that do not parse: the
  connection is closed (InvalidRequestException), except that ApiVersions in a version it
  does not speak gets UNSUPPORTED_VERSION with a v0 body listing what it speaks (KIP-511),
  so the client can retry in a version both know.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import io
import struct
import typing
from enum import IntEnum
from typing import Any, NamedTuple

from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i32Timedelta

__all__ = [
    "MAX_REQUEST_BYTES",
    "ApiKey",
    "BadRequest",
    "Request",
    "SUPPORTED_VERSIONS",
    "build",
    "encode_response",
    "parse_request",
]

#: Kafka's ``socket.request.max.bytes`` default: the largest request frame accepted.
MAX_REQUEST_BYTES = 104_857_600

_NO_THROTTLE = i32Timedelta.parse(datetime.timedelta(0))
_HEADER = struct.Struct(">hhi")  # api_key, api_version, correlation_id: the same in every header version


class ApiKey(IntEnum):
    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    API_VERSIONS = 18
    INIT_PRODUCER_ID = 22


#: The versions served, per API. Produce starts at v3 (the first to carry v2 batches); Fetch
#: at v4 (librdkafka sends v2 batches only to brokers that speak Fetch v4 or later); Fetch
#: stops at v11 and Metadata at v9, before topic ids; the rest are what Kafka 2.5 served.
SUPPORTED_VERSIONS: dict[int, tuple[int, int]] = {
    ApiKey.PRODUCE: (3, 9),
    ApiKey.FETCH: (4, 11),
    ApiKey.LIST_OFFSETS: (1, 5),
    ApiKey.METADATA: (0, 9),
    ApiKey.API_VERSIONS: (0, 3),
    ApiKey.INIT_PRODUCER_ID: (0, 4),
}


class BadRequest(Exception):
    """A frame the broker cannot serve: the connection is closed (and the reason logged)."""


class Request(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: Any  # the kio request entity; None for ApiVersions in an unsupported version

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
    schema = load_request_schema(api_key, api_version)
    try:
        header, size = entity_reader(schema.__header_schema__)(frame, 0)
        body, body_size = entity_reader(schema)(frame, size)
    except Exception as error:  # kio raises several types on malformed bytes
        raise BadRequest(f"{ApiKey(api_key).name} v{api_version}: malformed request: {error!r}") from None
    if size + body_size != len(frame):
        raise BadRequest(
            f"{ApiKey(api_key).name} v{api_version}: {len(frame) - size - body_size} bytes after the request"
        )
    return Request(api_key, api_version, correlation_id, header.client_id, body)


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


def response_schema(request: Request, version: int | None = None) -> Any:
    return load_response_schema(request.api_key, request.api_version if version is None else version)


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
