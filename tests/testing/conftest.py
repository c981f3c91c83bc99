"""dedup.testing's own tests use its pytest plugin's fixtures as a user's tests do (the entry
point loads the plugin where dedup is installed; these imports make it independent of that)."""

from dedup.testing.plugin import dedup_broker, dedup_broker_factory, pytest_configure  # noqa: F401
