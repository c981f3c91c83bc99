"""The broker side of the SASL mechanisms served: PLAIN (RFC 4616, Kafka's PlainSaslServer)
and SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802 and RFC 7677, Kafka's ScramSaslServer, KIP-84).

A mechanism is a small state machine: :meth:`evaluate` takes the client's next token and
returns the server's, :attr:`complete` says when the exchange is done, :attr:`username` who
authenticated. A wrong password, an unknown user or a malformed message raises
:class:`AuthenticationFailed` with Kafka's message; the broker answers it with
SASL_AUTHENTICATION_FAILED (58) and closes the connection.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "AuthenticationFailed",
    "MECHANISMS",
    "PlainServer",
    "SaslServer",
    "ScramCredential",
    "ScramServer",
    "scram_credential",
]

#: The mechanisms served, and the hash of each SCRAM one.
SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
MECHANISMS = ("PLAIN", *SCRAM_HASHES)
#: Kafka's ScramMechanism minimum (and kafka-configs' default) iteration count.
SCRAM_ITERATIONS = 4096


class AuthenticationFailed(Exception):
    """The client did not authenticate; the message is what Kafka tells it."""


class SaslServer(Protocol):
    complete: bool
    username: str | None

    def evaluate(self, token: bytes) -> bytes: ...


class PlainServer:
    """PLAIN: one message ``authzid NUL authcid NUL password``, checked against ``users``
    (name -> password); the answer is empty. As Kafka's PlainSaslServer, an authorization id
    other than the user name is refused."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = users
        self.complete = False
        self.username: str | None = None

    def evaluate(self, token: bytes) -> bytes:
        parts = token.split(b"\0")
        if len(parts) != 3:
            raise AuthenticationFailed("Invalid SASL/PLAIN response: expected 3 tokens, got " + str(len(parts)))
        authzid, username, password = (part.decode("utf-8", "replace") for part in parts)
        if not username:
            raise AuthenticationFailed("Authentication failed: username not specified")
        if not password:
            raise AuthenticationFailed("Authentication failed: password not specified")
        expected = self._users.get(username)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            raise AuthenticationFailed("Authentication failed: Invalid username or password")
        if authzid and authzid != username:
            raise AuthenticationFailed("Authentication failed: Client requested an authorization id that is "
                                       "different from username")  # fmt: skip
        self.complete, self.username = True, username
        return b""


@dataclass(frozen=True)
class ScramCredential:
    """What a broker keeps of a SCRAM password (Kafka's ScramCredential): salt, stored key,
    server key and iteration count."""

    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int


def scram_credential(mechanism: str, password: str, *, iterations: int = SCRAM_ITERATIONS,
                     salt: bytes | None = None) -> ScramCredential:  # fmt: skip
    """RFC 5802's SaltedPassword = Hi(password, salt, i), ClientKey, StoredKey and ServerKey
    (Kafka's ScramFormatter.generateCredential)."""
    name = SCRAM_HASHES[mechanism]
    salt = os.urandom(32) if salt is None else salt
    salted = hashlib.pbkdf2_hmac(name, password.encode("utf-8"), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", name)
    return ScramCredential(salt, hashlib.new(name, client_key).digest(), hmac.digest(salted, b"Server Key", name),
                           iterations)  # fmt: skip


def _attributes(message: str) -> dict[str, str]:
    out = {}
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise AuthenticationFailed(f"Invalid SCRAM message: {message!r}")
        out[part[0]] = part[2:]
    return out


def _saslname(name: str) -> str:
    """RFC 5802's saslname: ``=2C`` is ``,`` and ``=3D`` is ``=``; any other ``=`` is invalid."""
    if re.search(r"=(?!2C|3D)", name):
        raise AuthenticationFailed(f"Invalid username: {name}")
    return name.replace("=2C", ",").replace("=3D", "=")


class ScramServer:
    """SCRAM-SHA-256 or SCRAM-SHA-512, the server side of RFC 5802's exchange:
    client-first (``n,,n=user,r=cnonce``) -> server-first (``r=cnonce+snonce,s=salt,i=4096``)
    -> client-final (``c=biws,r=nonce,p=proof``) -> server-final (``v=signature``).
    Channel binding is not supported (gs2 ``p=`` refused), as in Kafka."""

    def __init__(self, mechanism: str, credentials: dict[str, ScramCredential], *,
                 server_nonce: str | None = None) -> None:  # fmt: skip
        """``server_nonce``: the server's part of the nonce (default: 24 random bytes in
        base64; given only to replay RFC 7677's example)."""
        self._server_nonce = server_nonce or base64.b64encode(os.urandom(24)).decode().rstrip("=")
        self.mechanism = mechanism
        self._hash = SCRAM_HASHES[mechanism]
        self._credentials = credentials
        self._state = "client-first"
        self.complete = False
        self.username: str | None = None

    def evaluate(self, token: bytes) -> bytes:
        try:
            message = token.decode("utf-8")
        except UnicodeDecodeError:
            raise AuthenticationFailed("Invalid SCRAM message: not UTF-8") from None
        if self._state == "client-first":
            return self._client_first(message)
        if self._state == "client-final":
            return self._client_final(message)
        raise AuthenticationFailed("Unexpected SCRAM message after the exchange completed")

    def _client_first(self, message: str) -> bytes:
        match = re.fullmatch(r"([ny]|p=[^,]*),(a=[^,]*)?,(.*)", message, re.S)
        if match is None:
            raise AuthenticationFailed(f"Invalid SCRAM client first message: {message!r}")
        if match.group(1).startswith("p="):
            raise AuthenticationFailed("Channel binding is not supported")
        self._gs2_header = f"{match.group(1)},{match.group(2) or ''},"
        self._client_first_bare = match.group(3)
        attributes = _attributes(self._client_first_bare)
        if "n" not in attributes or "r" not in attributes:
            raise AuthenticationFailed(f"Invalid SCRAM client first message: {message!r}")
        username = _saslname(attributes["n"])
        credential = self._credentials.get(username)
        if credential is None:  # Kafka: the same message whoever is unknown
            raise AuthenticationFailed("Authentication failed: Invalid user credentials")
        self._credential, self._username = credential, username
        self._nonce = attributes["r"] + self._server_nonce
        self._server_first = (f"r={self._nonce},s={base64.b64encode(credential.salt).decode()},"
                              f"i={credential.iterations}")  # fmt: skip
        self._state = "client-final"
        return self._server_first.encode()

    def _client_final(self, message: str) -> bytes:
        without_proof, comma, proof_part = message.rpartition(",")
        attributes = _attributes(message)
        if not comma or not proof_part.startswith("p=") or "c" not in attributes or "r" not in attributes:
            raise AuthenticationFailed(f"Invalid SCRAM client final message: {message!r}")
        if attributes["r"] != self._nonce:
            raise AuthenticationFailed("Invalid client nonce in the final client message.")
        try:
            binding = base64.b64decode(attributes["c"], validate=True)
            proof = base64.b64decode(attributes["p"], validate=True)
        except ValueError:
            raise AuthenticationFailed("Invalid SCRAM client final message: bad base64") from None
        if binding != self._gs2_header.encode():
            raise AuthenticationFailed("Invalid channel binding in the final client message.")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        credential = self._credential
        signature = hmac.digest(credential.stored_key, auth_message, self._hash)
        if len(proof) != len(signature):
            raise AuthenticationFailed("Authentication failed: Invalid user credentials")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.new(self._hash, client_key).digest(), credential.stored_key):
            raise AuthenticationFailed("Authentication failed: Invalid user credentials")
        server_signature = hmac.digest(credential.server_key, auth_message, self._hash)
        self._state = "done"
        self.complete, self.username = True, self._username
        return b"v=" + base64.b64encode(server_signature)
