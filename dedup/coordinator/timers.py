"""The coordinator's clock and timers: the event loop's, or a manual one in tests.

Kafka's group coordinator schedules its deadlines (session expiry, the rebalance timeout,
``group.initial.rebalance.delay.ms``, the pending-sync timeout, the offsets-retention check) on
a ``Timer`` (``CoordinatorTimer`` in ``coordinator-common``) and reads ``Time.milliseconds()``;
its tests swap in ``MockTime``/``MockTimer``. Here :class:`AsyncioTimer` is the server's event
loop and :class:`ManualTimer` the test's.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Protocol

__all__ = ["AsyncioTimer", "ManualTimer", "Timer", "TimerHandle"]


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Timer(Protocol):
    """Runs ``callback()`` after ``delay_ms`` unless the handle is cancelled first."""

    def schedule(self, delay_ms: int, callback: Callable[[], None]) -> TimerHandle: ...


class AsyncioTimer:
    """The server's event loop's ``call_later``: the running loop, or (while a KafkaServer is
    built, before its loop runs: groups reloaded at start) the thread's current loop."""

    def schedule(self, delay_ms: int, callback: Callable[[], None]) -> TimerHandle:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        return loop.call_later(max(delay_ms, 0) / 1000, callback)


class _ManualHandle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualTimer:
    """A clock and timer the test moves by hand (Kafka's MockTime and MockTimer): ``now()``
    is the clock; :meth:`advance` runs, in deadline order, every callback that falls due."""

    def __init__(self, start_ms: int = 1_000_000) -> None:
        self.now_ms = start_ms
        self._queue: list[tuple[int, int, _ManualHandle, Callable[[], None]]] = []
        self._sequence = itertools.count()

    def now(self) -> int:
        return self.now_ms

    def schedule(self, delay_ms: int, callback: Callable[[], None]) -> TimerHandle:
        handle = _ManualHandle()
        heapq.heappush(self._queue, (self.now_ms + max(delay_ms, 0), next(self._sequence), handle, callback))
        return handle

    def advance(self, ms: int) -> None:
        until = self.now_ms + ms
        while self._queue and self._queue[0][0] <= until:
            deadline, _, handle, callback = heapq.heappop(self._queue)
            self.now_ms = max(self.now_ms, deadline)
            if not handle.cancelled:
                callback()
        self.now_ms = until
