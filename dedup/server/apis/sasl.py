"""SaslHandshake and SaslAuthenticate once a connection needs no authentication (it has
authenticated, or its listener is PLAINTEXT or SSL): ILLEGAL_SASL_STATE (34), as Kafka's
KafkaApis answers them. Before authentication on a SASL listener they never get here: the
connection's :class:`~dedup.server.security.Authenticator` answers them."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from ..wire import Request, build, response_schema

if TYPE_CHECKING:
    from ..core import KafkaServer


def sasl_handshake(server: KafkaServer, broker_id: int, request: Request) -> Any:
    return build(response_schema(request), {"error_code": ErrorCode.illegal_sasl_state, "mechanisms": []})


def sasl_authenticate(server: KafkaServer, broker_id: int, request: Request) -> Any:
    message = "SaslAuthenticate request received after successful authentication"
    return build(response_schema(request), {"error_code": ErrorCode.illegal_sasl_state, "error_message": message,
                                            "auth_bytes": b"", "session_lifetime": datetime.timedelta(0)})  # fmt: skip
