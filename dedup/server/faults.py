"""Faults the front end injects between the log and the client, reproducibly by seed.

The producer-side failures that make idempotence necessary, as a broker would cause them:

- a **lost response**: the leader appends the batch (and replicates it), then the response
  never reaches the client and the connection breaks, as when a broker's network fails
  right after a write. The client retries the same batch on a new connection;
- a **delayed response**: sent only after ``delay_seconds``, so a client whose request
  timeout is shorter gives up on it, reconnects and retries while the original is stored;
- a **closed connection** before a request is handled (the request is lost, nothing is
  written).

Leader failover and broker restarts are operations of :class:`~dedup.server.KafkaServer`
(``stop_broker``, ``start_broker``), not random faults, so tests place them exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum

from .. import _args

__all__ = ["Fate", "Faults"]


class Fate(Enum):
    DELIVER = "deliver"
    DROP = "drop"
    DELAY = "delay"


def _share(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number (a share between 0 and 1), got {type(value).__name__}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a share between 0 and 1, got {value!r}")
    return float(value)


@dataclass
class Faults:
    """Shares of produce responses dropped or delayed (after the append) and of requests
    whose connection is closed before they are handled. Draws come from one
    ``random.Random(seed)``, so a seed and the order of requests fix every fate. The
    counters say what was injected. The shares may be changed while the server runs."""

    drop_responses: float = 0.0
    delay_responses: float = 0.0
    delay_seconds: float = 1.0
    close_connections: float = 0.0
    seed: int | None = None
    dropped: int = 0
    delayed: int = 0
    closed: int = 0
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _share("drop_responses", self.drop_responses)
        _share("delay_responses", self.delay_responses)
        _share("close_connections", self.close_connections)
        if self.drop_responses + self.delay_responses > 1.0:
            raise ValueError("drop_responses + delay_responses must be at most 1")
        delay = self.delay_seconds
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise TypeError(f"delay_seconds must be a number of seconds, got {type(delay).__name__}")
        if not 0 <= delay < float("inf"):
            raise ValueError(f"delay_seconds must be >= 0 and finite, got {delay!r}")
        if self.seed is not None:
            _args.integer("seed", self.seed, -(1 << 63), (1 << 63) - 1, "an int64 or None")
        self._random = random.Random(self.seed)

    def close_before_handling(self) -> bool:
        """Whether to close the connection instead of handling the next request."""
        if self.close_connections and self._random.random() < self.close_connections:
            self.closed += 1
            return True
        return False

    def produce_response_fate(self) -> Fate:
        """What happens to a produce response, once its batch is appended."""
        if not (self.drop_responses or self.delay_responses):
            return Fate.DELIVER
        draw = self._random.random()
        if draw < self.drop_responses:
            self.dropped += 1
            return Fate.DROP
        if draw < self.drop_responses + self.delay_responses:
            self.delayed += 1
            return Fate.DELAY
        return Fate.DELIVER

    def summary(self) -> str:
        return f"{self.dropped} responses dropped, {self.delayed} delayed, {self.closed} connections closed"
