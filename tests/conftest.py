"""One fixture runs every behavioural test on both twins of the table.

Also two guards: the compiled module must have loaded (unless DEDUP_PURE_PYTHON=1 asked for
the twin), and no test may leave an "Exception ignored" behind (a swallowed error in a
``noexcept`` Cython function surfaces only there).
"""

from __future__ import annotations

import sys

import pytest

import dedup
from dedup import reference

try:
    from dedup import _state
except ImportError:  # pragma: no cover - the guard below turns this into a failure
    _state = None

TWINS = {"reference": reference.ProducerStateTable}
if _state is not None:
    TWINS["compiled"] = _state.ProducerStateTable


def pytest_report_header(config):
    kind = "pure-Python twin (DEDUP_PURE_PYTHON=1)" if dedup.PURE_PYTHON else "compiled"
    return f"dedup.ProducerStateTable: {kind}; compiled module loaded: {_state is not None}"


@pytest.fixture(params=["compiled", "reference"])
def impl(request):
    """The table class of one twin; every test using it runs on both."""
    if request.param == "compiled" and _state is None:
        pytest.fail("dedup._state did not load: build it with `pip install -e .`")
    return TWINS[request.param]


@pytest.fixture
def table(impl):
    return impl()


@pytest.fixture
def unraisable():
    """The unraisable exceptions seen so far in this test (a test may inspect and clear it)."""
    return _seen


_seen: list = []


@pytest.fixture(autouse=True)
def _fail_on_exception_ignored():
    _seen.clear()
    previous = sys.unraisablehook

    def record(info):
        _seen.append(info)
        previous(info)

    sys.unraisablehook = record
    try:
        yield
    finally:
        sys.unraisablehook = previous
    if _seen:
        first = _seen[0]
        _seen.clear()
        pytest.fail(f"Exception ignored in {first.object!r}: {first.exc_type.__name__}: {first.exc_value}")
