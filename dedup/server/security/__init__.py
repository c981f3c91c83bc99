"""Who may talk to the broker: listeners and their security protocols, TLS from PEM, SASL
PLAIN and SCRAM with credentials in Kafka's JAAS form (issue 16, item 7)."""

from .authenticator import Authenticator, CloseConnection
from .listeners import Listener, SecurityError, advertised_host, configure_listeners, is_loopback
from .tls import TlsError

__all__ = [
    "Authenticator",
    "CloseConnection",
    "Listener",
    "SecurityError",
    "TlsError",
    "advertised_host",
    "configure_listeners",
    "is_loopback",
]
