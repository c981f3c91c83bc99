"""TLS for SSL and SASL_SSL listeners, from PEM as Kafka's ``ssl.keystore.type=PEM`` takes it
(KIP-651, DefaultSslEngineFactory):

- the key and its certificate chain, either in one file ``ssl.keystore.location`` (the
  private key, encrypted with ``ssl.key.password`` or not, then the chain), or inline in
  ``ssl.keystore.key`` and ``ssl.keystore.certificate.chain``;
- the trusted certificates (for client certificates), in ``ssl.truststore.location`` or
  inline in ``ssl.truststore.certificates`` (``ssl.truststore.type=PEM``);
- ``ssl.client.auth``: ``none`` (default), ``requested`` or ``required``.

JKS and PKCS12 stores are Java's; dedup reads PEM only and says so.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Mapping
from typing import Any

__all__ = ["TlsError", "server_context"]


class TlsError(ValueError):
    """A TLS configuration that cannot be used; the message names the key."""


def server_context(configs: Mapping[str, Any]) -> ssl.SSLContext:
    """The server's SSLContext from the ``ssl.*`` keys (their values as text)."""
    for key in ("ssl.keystore.type", "ssl.truststore.type"):
        kind = configs.get(key)
        if kind is not None and str(kind).upper() != "PEM":
            raise TlsError(f"{key}={kind}: dedup reads PEM stores only (ssl.keystore.type=PEM)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    location: Any = configs.get("ssl.keystore.location")
    inline_key, chain = configs.get("ssl.keystore.key"), configs.get("ssl.keystore.certificate.chain")
    password = configs.get("ssl.key.password")
    try:
        if location is not None:
            context.load_cert_chain(str(location), password=None if password is None else str(password))
        elif inline_key is not None and chain is not None:
            with tempfile.TemporaryDirectory(prefix="dedup-tls-") as directory:  # ssl loads keys from files only
                path = os.path.join(directory, "keystore.pem")
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w") as file:
                    file.write(f"{inline_key}\n{chain}\n")
                context.load_cert_chain(path, password=None if password is None else str(password))
        else:
            raise TlsError("ssl.keystore.location (or ssl.keystore.key and ssl.keystore.certificate.chain) is "
                           "required by an SSL or SASL_SSL listener")  # fmt: skip
    except (OSError, ssl.SSLError) as error:
        raise TlsError(f"ssl.keystore: cannot load the key and certificate chain: {error}") from None
    trust_location, trusted = configs.get("ssl.truststore.location"), configs.get("ssl.truststore.certificates")
    try:
        if trust_location is not None:
            context.load_verify_locations(cafile=str(trust_location))
        elif trusted is not None:
            context.load_verify_locations(cadata=str(trusted))
    except (OSError, ssl.SSLError) as error:
        raise TlsError(f"ssl.truststore: cannot load the trusted certificates: {error}") from None
    client_auth = str(configs.get("ssl.client.auth") or "none").lower()
    modes = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
    if client_auth not in modes:
        raise TlsError(f"ssl.client.auth={client_auth}: expected one of none, requested, required")
    if client_auth != "none" and trust_location is None and trusted is None:
        raise TlsError(f"ssl.client.auth={client_auth} needs ssl.truststore.location or ssl.truststore.certificates")
    context.verify_mode = modes[client_auth]
    return context
