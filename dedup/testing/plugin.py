"""The pytest plugin of ``dedup.testing``: a Kafka broker for a test, one fixture away.

Installed with dedup (entry point ``pytest11``), it only defines fixtures, which cost nothing
until a test asks for one: this module imports pytest alone, and the server when a fixture
starts it. Without the installed entry point (or with ``-p no:dedup``), ``-p
dedup.testing.plugin`` or ``pytest_plugins = ["dedup.testing.plugin"]`` in a conftest.py
enables it.

- ``dedup_broker``: a :class:`dedup.testing.Broker` for the test, closed after it. Its
  options come from the marker ``@pytest.mark.dedup_broker(topics=["orders"],
  deduplicate=False, ...)``.
- ``dedup_broker_factory``: a function ``make(**options) -> Broker``, for a test that needs
  several brokers or chooses their options at run time; every broker it made is closed after
  the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .broker import Broker

__all__ = ["dedup_broker", "dedup_broker_factory"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "dedup_broker(**options): the options of the dedup_broker fixture (dedup.testing.Broker's)"
    )


@pytest.fixture
def dedup_broker_factory() -> Iterator[Callable[..., Broker]]:
    """``make(**options)``: a new :class:`~dedup.testing.Broker`; all closed after the test."""
    from .broker import Broker

    made: list[Broker] = []

    def make(**options: Any) -> Broker:
        broker = Broker(**options)
        made.append(broker)
        return broker

    yield make
    for broker in reversed(made):
        broker.close()


@pytest.fixture
def dedup_broker(request: pytest.FixtureRequest, dedup_broker_factory: Callable[..., Broker]) -> Broker:
    """A :class:`~dedup.testing.Broker` with the options of the test's ``dedup_broker`` marker."""
    marker = request.node.get_closest_marker("dedup_broker")
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    return dedup_broker_factory(**options)
