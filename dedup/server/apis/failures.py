"""What a broker answers when a request's handler fails: Kafka's error response, never a closed
connection.

Kafka's ``KafkaApis.handleError`` answers a request whose handling threw with
``request.getErrorResponse(e)``: the API's response with ``Errors.forException(e)`` as its error
code (KAFKA_STORAGE_ERROR for a ``KafkaStorageException``, UNKNOWN_SERVER_ERROR for an
exception it does not know). :func:`error_response` builds that response for any served API
from the response schema: every ``error_code`` field takes the code, arrays are empty, numbers
-1 where Kafka's default is -1 and 0 otherwise, strings empty (or null where nullable).
:func:`error_code_for` is ``Errors.forException``.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from typing import Any

from kio.schema.errors import ErrorCode
from kio.serial._introspect import classify_field, get_schema_field_type, is_optional

from ...errors import KafkaError, KafkaStorageError
from ..wire import Request, response_schema

__all__ = ["error_code_for", "error_response"]


def error_code_for(error: BaseException) -> ErrorCode:
    """Kafka's ``Errors.forException``: a dedup :class:`~dedup.errors.KafkaError` keeps its code,
    an I/O error (a full disk, a file that cannot be written) is KAFKA_STORAGE_ERROR, anything
    else UNKNOWN_SERVER_ERROR."""
    if isinstance(error, KafkaError):
        return ErrorCode(error.code)
    if isinstance(error, OSError | KafkaStorageError):
        return ErrorCode.kafka_storage_error
    return ErrorCode.unknown_server_error


def error_response(request: Request, code: ErrorCode) -> Any:
    """The response to ``request`` (its version) that carries only ``code``."""
    return _filled(response_schema(request), code)


_ZEROS: dict[str, Any] = {
    "bool": False, "string": "", "bytes": b"", "records": None, "uuid": None, "float64": 0.0,
    "timedelta_i32": datetime.timedelta(0), "timedelta_i64": datetime.timedelta(0),
    "datetime_i64": datetime.datetime.fromtimestamp(0, datetime.UTC),
}  # fmt: skip


def _filled(entity: Any, code: ErrorCode) -> Any:
    """An instance of the kio entity type ``entity`` with ``code`` in its error codes."""
    kwargs: dict[str, Any] = {}
    for field in _required_fields(entity):
        kind = classify_field(field)
        kind_type: Any = kind.type_
        if kind.is_array:
            kwargs[field.name] = ()
        elif dataclasses.is_dataclass(kind.type_):
            kwargs[field.name] = _filled(kind.type_, code)
        else:
            kafka_type = get_schema_field_type(field)
            if kafka_type == "error_code":
                kwargs[field.name] = code
            elif kafka_type in _ZEROS:
                value = _ZEROS[kafka_type]
                kwargs[field.name] = None if value is None or (is_optional(field) and kafka_type == "string") else value
                if kafka_type.startswith("timedelta"):
                    kwargs[field.name] = kind_type.parse(value)
            else:  # the integer types
                kwargs[field.name] = kind_type(-1 if field.name.endswith(("_id", "_epoch", "_offset")) else 0)
    for field in dataclasses.fields(entity):
        if field.name == "error_code" and field.name not in kwargs:
            kwargs[field.name] = code
    return entity(**kwargs)


@functools.cache
def _required_fields(entity: Any) -> tuple[dataclasses.Field[Any], ...]:
    missing = dataclasses.MISSING
    return tuple(f for f in dataclasses.fields(entity) if f.default is missing and f.default_factory is missing)
