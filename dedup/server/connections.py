"""Connection hygiene, as Kafka's ``SocketServer`` (``Acceptor``, ``Processor``,
``ConnectionQuotas``) and ``Selector`` keep it: which connections a broker accepts, when it
closes an idle one, and how many requests it holds at once.

The keys (:data:`~dedup.server.config.BROKER_CONFIGS`, all with Kafka's defaults):

- ``max.connections`` (Int.MaxValue) and ``max.connections.per.ip`` (Int.MaxValue): counted
  per broker, as each Kafka broker counts its own. A connection beyond either is closed as soon
  as it is accepted (Kafka's ``ConnectionQuotas.inc`` throws ``TooManyConnectionsException``
  for the per-IP limit and the acceptor closes the socket; for the broker-wide limit Kafka's
  acceptor stops accepting, ``waitForConnectionSlot``, and new connections wait in the
  listen backlog instead: here they are refused too, so a client sees the refusal at once).
- ``connections.max.idle.ms`` (600000, 10 minutes). Kafka's ``Selector`` closes a connection
  that has had no socket activity at all for that long, and has no timeout for a partial frame:
  a client sending one byte a second keeps a Kafka connection forever. Here the rule is
  stricter: a connection with no request in service must *complete* a request within
  ``connections.max.idle.ms`` of its last complete request or response, so an idle
  connection, a half-sent frame and a slowloris trickling bytes are all closed after the same
  bound. A connection waiting for its answer (a Fetch in its wait, a JoinGroup in its
  rebalance) is never idle.
- ``queued.max.requests`` (500): Kafka's ``RequestChannel`` holds at most that many requests
  read and not yet taken by a handler; when it is full the network threads block and no
  connection is read. Each connection is muted while one of its requests is served (one at a
  time, in order), so its unanswered requests never exceed one. Here the bound is the broker's
  requests read and not yet answered: a connection that would exceed it is not read (its
  frame stays in the socket, back-pressure on the client) until another request is answered.
  A Fetch waiting for data holds its place (in Kafka it waits in the purgatory, outside the
  queue), so a broker with ``queued.max.requests`` fetches waiting delays others by at most
  their ``max_wait_ms``.

Refusals (a limit reached, or ``accept()`` failing for want of file descriptors, EMFILE) are
logged once per :data:`REFUSAL_LOG_INTERVAL` seconds with a count, never once per attempt:
asyncio's own handler logs a traceback per failed ``accept()``, which filled 11 MB of log in
14 s under ``ulimit -n 64``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["REFUSAL_LOG_INTERVAL", "Connection", "ConnectionQuotas", "RefusalLog", "accept_failures"]

logger = logging.getLogger("dedup.server")

#: Seconds between two log lines about refused connections.
REFUSAL_LOG_INTERVAL = 10.0


class RefusalLog:
    """Counts refused connections by reason and logs them at most once per ``interval``
    seconds: the first refusal at once, the ones after it in a summary line when the interval
    has passed (or at :meth:`flush`)."""

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._pending: Counter[str] = Counter()
        self._last: float | None = None
        self.total: Counter[str] = Counter()

    def refused(self, reason: str) -> None:
        self.total[reason] += 1
        self._pending[reason] += 1
        now = self._clock()
        if self._last is None or now - self._last >= self.interval:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        if self._pending:
            what = ", ".join(f"{count} ({reason})" for reason, count in sorted(self._pending.items()))
            logger.warning("refused connections: %s; next report in %g s at the earliest", what, self.interval)
            self._pending.clear()
        self._last = self._clock() if now is None else now


@dataclass(eq=False)  # by identity: each connection is its own
class Connection:
    """One client connection of a broker: its peer and what the idle rule needs."""

    peer: Any
    ip: str
    writer: asyncio.StreamWriter
    last_active: float = field(default_factory=time.monotonic)  # the last complete request or response
    in_service: bool = False  # a request read and not yet answered


class ConnectionQuotas:
    """The connections of one broker, counted as Kafka's ``ConnectionQuotas`` counts them."""

    def __init__(self, max_connections: int, max_connections_per_ip: int, refusals: RefusalLog) -> None:
        self.max_connections = max_connections
        self.max_connections_per_ip = max_connections_per_ip
        self.refusals = refusals
        self.connections: set[Connection] = set()
        self._per_ip: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self.connections)

    def admit(self, connection: Connection) -> bool:
        """Count ``connection`` in; False (logged with the others) when a limit refuses it."""
        if len(self.connections) >= self.max_connections:
            self.refusals.refused(f"max.connections={self.max_connections}")
            return False
        if self._per_ip[connection.ip] >= self.max_connections_per_ip:
            self.refusals.refused(f"max.connections.per.ip={self.max_connections_per_ip} from {connection.ip}")
            return False
        self.connections.add(connection)
        self._per_ip[connection.ip] += 1
        return True

    def remove(self, connection: Connection) -> None:
        if connection in self.connections:
            self.connections.discard(connection)
            self._per_ip[connection.ip] -= 1
            if not self._per_ip[connection.ip]:
                del self._per_ip[connection.ip]

    def close_idle(self, max_idle_seconds: float, now: float) -> int:
        """Close the connections idle for longer than ``max_idle_seconds``; how many."""
        idle = [c for c in self.connections if not c.in_service and now - c.last_active > max_idle_seconds]
        for connection in idle:
            logger.info("closing %s: no complete request for %.3f s (connections.max.idle.ms)",
                        connection.peer, now - connection.last_active)  # fmt: skip
            connection.writer.close()
        return len(idle)


#: The message asyncio's selector loop passes its exception handler when ``accept()`` fails
#: with EMFILE, ENFILE, ENOBUFS or ENOMEM (it then stops accepting for a second and retries).
_ACCEPT_FAILURE = "socket.accept() out of system resource"


def accept_failures(loop: asyncio.AbstractEventLoop, refusals: RefusalLog) -> Callable[[], None]:
    """Route ``loop``'s accept failures (out of file descriptors) to ``refusals`` instead of a
    traceback per attempt; every other context goes to the handler that was there. Returns the
    function that puts the previous handler back."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == _ACCEPT_FAILURE:
            error = context.get("exception")
            refusals.refused(f"accept() failed: {getattr(error, 'strerror', None) or error}")
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)

    def restore() -> None:
        if loop.get_exception_handler() is handler:
            loop.set_exception_handler(previous)

    return restore
