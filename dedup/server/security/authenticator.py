"""The broker side of a SASL connection before it is authenticated: Kafka's
SaslServerAuthenticator (KIP-43, KIP-84, KIP-152).

Until the client has authenticated, a connection on a SASL listener may send only:

- ApiVersions (answered as always, so the client can find the SASL versions);
- SaslHandshake v0 or v1 with a mechanism of ``sasl.enabled.mechanisms``: answered with the
  enabled mechanisms; a mechanism not enabled gets UNSUPPORTED_SASL_MECHANISM (33) and the
  connection is closed. After v1, the SASL tokens come in SaslAuthenticate requests; after v0
  (KIP-43), as bare size-prefixed tokens, answered the same way, a failure closing the
  connection without an answer (v0 has no way to say why);
- SaslAuthenticate (v0-v2): the next token; a wrong password or an unknown user gets
  SASL_AUTHENTICATION_FAILED (58) with Kafka's message, then the connection is closed.

Any other request, or SaslAuthenticate before a handshake, closes the connection (Kafka:
IllegalSaslStateException, "Unexpected Kafka request of type X during SASL handshake"). Once
authenticated, SaslHandshake and SaslAuthenticate are answered ILLEGAL_SASL_STATE (34) by
their handlers (KafkaApis; KIP-368 re-authentication is not served).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from kio.schema.errors import ErrorCode

from ..wire import ApiKey, Request, build, encode_response, response_schema
from .listeners import Listener
from .mechanisms import AuthenticationFailed, PlainServer, SaslServer, ScramServer

__all__ = ["Authenticator", "CloseConnection"]

logger = logging.getLogger("dedup.server")


class CloseConnection(Exception):
    """The connection must be closed (after sending ``response``, a response frame, when
    there is one)."""

    def __init__(self, reason: str, response: bytes | None = None) -> None:
        super().__init__(reason)
        self.response = response


class Authenticator:
    """One connection's SASL exchange on ``listener``."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.authenticated = False
        self.username: str | None = None
        self._server: SaslServer | None = None
        #: After SaslHandshake v0, frames are bare SASL tokens, not requests.
        self.raw_tokens = False

    def _start(self, mechanism: str) -> SaslServer:
        if mechanism == "PLAIN":
            return PlainServer(self.listener.plain_users)
        return ScramServer(mechanism, self.listener.scram_credentials[mechanism])

    def handshake(self, request: Request) -> Any:
        """SaslHandshake before authentication: the response body (CloseConnection for a
        mechanism not enabled, with the response to send first)."""
        if self._server is not None:
            raise CloseConnection("a second SaslHandshake")
        mechanism = request.body.mechanism
        enabled = list(self.listener.mechanisms)
        if mechanism not in enabled:
            body = build(response_schema(request), {"error_code": ErrorCode.unsupported_sasl_mechanism,
                                                    "mechanisms": enabled})  # fmt: skip
            raise CloseConnection(f"SASL mechanism {mechanism!r} is not enabled", encode_response(request, body))
        self._server = self._start(mechanism)
        self.raw_tokens = request.api_version == 0
        return build(response_schema(request), {"error_code": ErrorCode.none, "mechanisms": enabled})

    def _evaluate(self, token: bytes) -> bytes:
        assert self._server is not None
        response = self._server.evaluate(token)
        if self._server.complete:
            self.authenticated, self.username = True, self._server.username
            self.raw_tokens = False
            logger.info("listener %s: %s authenticated", self.listener.name, self.username)
        return response

    def authenticate(self, request: Request) -> Any:
        """SaslAuthenticate before authentication: the response body; CloseConnection (with
        SASL_AUTHENTICATION_FAILED to send) when the client fails."""
        if self._server is None or self.raw_tokens:
            raise CloseConnection("SaslAuthenticate before a SaslHandshake v1")
        schema = response_schema(request)
        try:
            token = self._evaluate(bytes(request.body.auth_bytes))
        except AuthenticationFailed as error:
            body = build(schema, {"error_code": ErrorCode.sasl_authentication_failed, "error_message": str(error),
                                  "auth_bytes": b"", "session_lifetime": datetime.timedelta(0)})  # fmt: skip
            raise CloseConnection(f"authentication failed: {error}", encode_response(request, body)) from None
        return build(schema, {"error_code": ErrorCode.none, "error_message": None, "auth_bytes": token,
                              "session_lifetime": datetime.timedelta(0)})  # fmt: skip

    def raw_token(self, frame: bytes) -> bytes:
        """A bare SASL token after SaslHandshake v0: the answer frame (size prefix included);
        CloseConnection when the client fails."""
        try:
            token = self._evaluate(frame)
        except AuthenticationFailed as error:
            raise CloseConnection(f"authentication failed: {error}") from None
        return len(token).to_bytes(4, "big") + token

    def request(self, request: Request) -> Any:
        """A request before authentication: the SASL response, or None for ApiVersions (the
        caller answers it); CloseConnection for anything else."""
        if request.api_key == ApiKey.API_VERSIONS:
            return None
        if request.api_key == ApiKey.SASL_HANDSHAKE:
            return self.handshake(request)
        if request.api_key == ApiKey.SASL_AUTHENTICATE:
            return self.authenticate(request)
        raise CloseConnection(f"unexpected Kafka request of type {request.name} during SASL handshake")
