"""dedup.testing: Kafka's idempotent-producer rules as test tools for your own code.

- :mod:`dedup.testing.strategies`: hypothesis strategies (producer ids, epochs and
  sequences at their edges, client-like streams of batches, v2 batch bytes, corruptions);
- :class:`ProducerStateMachine`: any producer-state table against ``dedup.reference``, the
  first divergence shrunk by hypothesis;
- :func:`kafka_broker` / :class:`Broker`: ``dedup serve`` on a free loopback port for an
  application's tests, with faults (lost and delayed responses, a crashed leader);
- the pytest plugin :mod:`dedup.testing.plugin`: the fixtures ``dedup_broker`` and
  ``dedup_broker_factory``.

Needs hypothesis for the strategies and the machine: ``pip install 'dedup[testing]'``. The
broker alone does not. See docs/testing.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import strategies
    from .broker import Broker, kafka_broker
    from .state_machine import ProducerStateMachine, TableDivergence

__all__ = ["Broker", "ProducerStateMachine", "TableDivergence", "kafka_broker", "strategies"]


#: Where each public name lives. Imported on first use: the pytest plugin imports this package
#: in every run of an environment where dedup is installed, so it must cost nothing; and
#: hypothesis (the ``testing`` extra) is needed only by the strategies and the machine.
_LOCATIONS = {
    "Broker": ".broker",
    "kafka_broker": ".broker",
    "ProducerStateMachine": ".state_machine",
    "TableDivergence": ".state_machine",
}


def __getattr__(name: str) -> Any:
    if name == "strategies":
        return importlib.import_module(".strategies", __name__)
    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name], __name__), name)
    raise AttributeError(f"module 'dedup.testing' has no attribute {name!r}")
