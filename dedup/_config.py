"""Settings read once from the environment, before any other dedup module loads."""

from __future__ import annotations

import os

#: ``DEDUP_PURE_PYTHON=1``: bind the public names to the pure-Python twins.
PURE_PYTHON: bool = os.environ.get("DEDUP_PURE_PYTHON", "") not in ("", "0")
