"""The pure-Python twins: the oracles the compiled modules are tested against.

Written for clarity, one Kafka rule per branch, with the spec's rule numbers
(``docs/spec.md``). ``DEDUP_PURE_PYTHON=1`` makes ``dedup`` export
these instead of the compiled modules.
"""

from .table import AppendResult, ProducerStateTable

__all__ = ["AppendResult", "ProducerStateTable"]
