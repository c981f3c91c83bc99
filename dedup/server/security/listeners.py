"""Listeners as Kafka names them (SocketServerConfigs, KIP-103): ``listeners``,
``listener.security.protocol.map``, ``advertised.listeners``, and what each listener asks of
a client (TLS, SASL mechanisms and their credentials).

``listeners=PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9093``: each listener is
``NAME://HOST:PORT``, its security protocol ``listener.security.protocol.map[NAME]`` (by
default a name is its own protocol: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL). dedup runs
several brokers in one process: broker ``b`` listens on ``PORT + b`` of every listener (0:
any free port). Metadata, FindCoordinator and DescribeCluster answer with the endpoints of
the listener the request came in on (Kafka's ``request.context.listenerName``), advertised
as ``advertised.listeners`` says (by default the listener's own host and port).

Authentication is required where a client can reach the broker from elsewhere: a listener
on an address that is not loopback (``0.0.0.0``, an empty host, a public address) must be
SASL_PLAINTEXT, SASL_SSL, or SSL with ``ssl.client.auth=required``, unless the operator
says ``--allow-unauthenticated`` (Kafka has no such check: its defaults accept anyone).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .jaas import PLAIN_MODULE, SCRAM_MODULE, JaasEntry, JaasError, parse_jaas_config, parse_jaas_file
from .mechanisms import MECHANISMS, SCRAM_HASHES, ScramCredential, scram_credential
from .tls import server_context

__all__ = ["Listener", "SecurityError", "configure_listeners", "is_loopback", "parse_listeners"]

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: Kafka's default listener.security.protocol.map (SocketServerConfigs).
DEFAULT_PROTOCOL_MAP = ",".join(f"{name}:{name}" for name in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")) + (
    ",CONTROLLER:PLAINTEXT"
)
_ENDPOINT = re.compile(r"([A-Za-z0-9_]+)://(\[[^\]]*\]|[^:/]*):([0-9]+)")


class SecurityError(ValueError):
    """A listener or security configuration that cannot be served; one line naming the key."""


@dataclass
class Listener:
    """One listener: name, security protocol, bind host, first broker's port, what it
    advertises, and what it asks of clients."""

    name: str
    protocol: str
    host: str
    port: int
    advertised_host: str | None = None
    advertised_port: int | None = None
    ssl_context: ssl.SSLContext | None = None
    mechanisms: tuple[str, ...] = ()
    plain_users: dict[str, str] = field(default_factory=dict)
    scram_credentials: dict[str, dict[str, ScramCredential]] = field(default_factory=dict)

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def authenticates(self) -> bool:
        """Whether a client must prove who it is: SASL, or TLS with a required client certificate."""
        return self.sasl or (self.ssl_context is not None and self.ssl_context.verify_mode == ssl.CERT_REQUIRED)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine (``localhost`` or a loopback address)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listeners(text: str, key: str = "listeners") -> list[tuple[str, str, int]]:
    """``NAME://HOST:PORT,...`` as (NAME upper-cased, host, port); names must be distinct."""
    out: list[tuple[str, str, int]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = _ENDPOINT.fullmatch(item)
        if match is None or int(match.group(3)) > 65535:
            raise SecurityError(f"{key}: unable to parse {item} to a broker endpoint")
        name = match.group(1).upper()
        if any(name == other for other, _, _ in out):
            raise SecurityError(f"{key}: each listener must have a different name, {name} is repeated")
        out.append((name, match.group(2).strip("[]"), int(match.group(3))))
    return out


def _protocol_map(text: str) -> dict[str, str]:
    mapping = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        name, colon, protocol = item.partition(":")
        if not colon or protocol.upper() not in PROTOCOLS:
            raise SecurityError(f"listener.security.protocol.map: {item!r} is not NAME:PROTOCOL with PROTOCOL one of "
                                f"{', '.join(PROTOCOLS)}")  # fmt: skip
        mapping[name.strip().upper()] = protocol.upper()
    return mapping


def _credentials(listener: str, mechanism: str, configs: Mapping[str, Any],
                 jaas_sections: Mapping[str, list[JaasEntry]]) -> dict[str, str]:  # fmt: skip
    """The ``user_<name>`` passwords for ``mechanism`` on ``listener``: the listener's
    ``sasl.jaas.config`` property, else the JAAS file's ``<listener>.KafkaServer`` section,
    else its ``KafkaServer`` (Kafka's JaasContext.loadServerContext order)."""
    module = PLAIN_MODULE if mechanism == "PLAIN" else SCRAM_MODULE
    key = f"listener.name.{listener.lower()}.{mechanism.lower()}.sasl.jaas.config"
    entries: list[JaasEntry] | None = None
    if key in configs:
        try:
            entries = parse_jaas_config(str(configs[key]))
        except JaasError as error:
            raise SecurityError(f"{key}: {error}") from None
    else:
        entries = jaas_sections.get(f"{listener.lower()}.KafkaServer", jaas_sections.get("KafkaServer"))
    users: dict[str, str] = {}
    for entry in entries or []:
        if entry.module == module:
            users.update(entry.users())
    if not users:
        raise SecurityError(f"{key}: no {module} entry with user_<name>=\"<password>\" credentials for {mechanism} "
                            f"on listener {listener} (nor in a --jaas file's KafkaServer section)")  # fmt: skip
    return users


def configure_listeners(
    configs: Mapping[str, Any],
    *,
    host: str,
    port: int,
    jaas_file: str | None = None,
    allow_unauthenticated: bool = False,
) -> list[Listener]:
    """The listeners of ``configs`` (Kafka keys; ``listeners`` absent: one PLAINTEXT
    listener), the first listener named PLAINTEXT (else the first) on ``host``:``port`` (the
    ``--host``/``--port`` flags win over ``listeners``), each with its TLS context and SASL
    credentials; :class:`SecurityError` for anything that cannot be served, checked before any
    socket is bound."""
    entries = parse_listeners(str(configs["listeners"])) if configs.get("listeners") else [("PLAINTEXT", host, port)]
    entries = [entry for entry in entries if entry[0] != "CONTROLLER"]  # KRaft's, not for clients
    if not entries:
        raise SecurityError("listeners: no listener for clients (only CONTROLLER)")
    primary = next((i for i, entry in enumerate(entries) if entry[0] == "PLAINTEXT"), 0)
    entries[primary] = (entries[primary][0], host, port)
    protocols = _protocol_map(str(configs.get("listener.security.protocol.map") or DEFAULT_PROTOCOL_MAP))
    advertised = {name: (h, p) for name, h, p in parse_listeners(str(configs.get("advertised.listeners") or ""),
                                                                 "advertised.listeners")}  # fmt: skip
    for name in advertised:
        if name not in {entry[0] for entry in entries}:
            raise SecurityError(f"advertised.listeners: {name} is not one of the listeners")
    jaas_sections: dict[str, list[JaasEntry]] = {}
    if jaas_file is not None:
        try:
            with open(jaas_file, encoding="utf-8") as file:
                jaas_sections = parse_jaas_file(file.read())
        except OSError as error:
            raise SecurityError(f"--jaas: {error.strerror}: {jaas_file}") from None
        except JaasError as error:
            raise SecurityError(f"--jaas {jaas_file}: {error}") from None
    mechanisms = [str(m) for m in configs.get("sasl.enabled.mechanisms") or ["GSSAPI"]]
    listeners = []
    context: ssl.SSLContext | None = None
    for name, bind_host, bind_port in entries:
        if name not in protocols:
            raise SecurityError(f"listener.security.protocol.map: no security protocol for listener {name}")
        listener = Listener(name, protocols[name], bind_host, bind_port)
        if name in advertised:
            listener.advertised_host, listener.advertised_port = advertised[name]
        if listener.sasl:
            unserved = [m for m in mechanisms if m not in MECHANISMS]
            if unserved:
                raise SecurityError(f"sasl.enabled.mechanisms: {', '.join(unserved)} not served (dedup serves "
                                    f"{', '.join(MECHANISMS)}); set sasl.enabled.mechanisms")  # fmt: skip
            listener.mechanisms = tuple(mechanisms)
            for mechanism in mechanisms:
                users = _credentials(name, mechanism, configs, jaas_sections)
                if mechanism == "PLAIN":
                    listener.plain_users = users
                else:
                    listener.scram_credentials[mechanism] = {
                        user: scram_credential(mechanism, password) for user, password in users.items()
                    }
        if listener.protocol in ("SSL", "SASL_SSL"):
            context = context or server_context(configs)
            listener.ssl_context = context
        if not is_loopback(bind_host) and not listener.authenticates and not allow_unauthenticated:
            raise SecurityError(
                f"listener {name}://{bind_host}:{bind_port} accepts unauthenticated clients on a "
                "non-loopback address: use SASL_SSL or SASL_PLAINTEXT, or --allow-unauthenticated"
            )
        listeners.append(listener)
    return listeners


def advertised_host(listener: Listener) -> str:
    """The host a listener advertises: ``advertised.listeners``', else its own, else (an
    empty or wildcard bind address) the machine's canonical name, as Kafka does."""
    host = listener.advertised_host or listener.host
    if not host or host in ("0.0.0.0", "::"):
        return socket.getfqdn()
    return host


__all__ += ["DEFAULT_PROTOCOL_MAP", "PROTOCOLS", "SCRAM_HASHES", "advertised_host"]
