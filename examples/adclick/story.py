"""What the ad-click stories share (``run.py``, the idempotent one; ``exactly_once.py``, the
transactional one): the ads and their prices, the timed narration, a bounded wait. Each story
runs as a script from this directory, which puts this module on its path."""

from __future__ import annotations

import time
from collections.abc import Callable

# ad id -> price of one click, in cents
ADS = {"summer-sale": 25, "winter-boots": 40, "city-bikes": 15, "sea-view": 60, "night-train": 35, "green-tea": 10}
started = time.monotonic()


def say(text: str) -> None:
    """``text`` on stdout after the seconds since the story started."""
    print(f"[{time.monotonic() - started:5.1f} s] {text}", flush=True)


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Until ``condition()`` holds; TimeoutError naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {seconds:.0f} s waiting for {what}")
        time.sleep(0.05)
