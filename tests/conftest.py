"""What every test shares: the twin fixture, the hypothesis profiles and two guards.

**The twins.** ``twin`` runs a test once on each implementation of dedup's compiled parts,
``compiled`` and ``reference`` (the pure-Python twin), and yields a :class:`Twin`: the table
class, the batch functions (``dedup._records`` or ``dedup.reference.records``), the snapshot
codec and CRC-32C of that implementation. ``impl`` (the table class), ``table`` (a new table)
and ``scanner`` (dedup.batch reading through that twin) are derived from it. ``TWINS`` holds
both, for a test that compares them in one run; it is built in one place, :func:`_load_twins`.
:func:`vectors_and_scalar` makes the autouse fixture of a module whose tests must run with a
vector kernel on and off.

**Guards.** The compiled modules must have loaded: a ``compiled`` run fails otherwise (with
``DEDUP_PURE_PYTHON=1`` too: that switch binds the public names to the twin, it does not excuse
a missing build). No test may leave an "Exception ignored" behind (a swallowed error in a
``noexcept`` Cython function surfaces only there).

**Hypothesis profiles**, chosen by the environment variable ``HYPOTHESIS_PROFILE``:

- ``dev`` (the default): 20 examples a test, a fresh random draw each run; the daily loop.
- ``ci`` (``.ci/run``): 200 examples a test, a fresh random draw each run (hypothesis's own
  ``ci`` profile derandomizes; this one does not, so CI explores), and a failure prints the
  blob that reproduces it.

Both run without a deadline: on a shared 2-core machine a deadline fails on load, not on a bug.

The rule for a test's own ``max_examples``: none where it would only size the run (the profile
does). A test whose count is part of its design states it through :func:`examples`, which
scales it by the profile: fewer than the profile's because each example is expensive (a
cluster, a log recovered after crashes, a 40,000-producer decode) or more because each costs
microseconds and volume is the point (the byte fuzzers). ``@example``\\ s, seeds and
exhaustive loops are not sized by the profile.

**The slow set.** ``@pytest.mark.slow`` marks what dominates the run (real clients against the
server, kill -9, the simulator's 1,000 seeds, large decodes, the fuzz command, mutated frames);
``python -m pytest`` deselects it (``addopts`` in pyproject.toml), ``python -m pytest -m slow``
runs it, ``-m ""`` runs everything (a slow test named on the command line needs one of them
too). Each slow file keeps a fast representative in the default set, named in a comment there.
"""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import settings

import dedup
from dedup import _backend

# --- hypothesis profiles ----------------------------------------------------------------------

#: Examples a test runs in CI; the dev profile runs a tenth.
CI_EXAMPLES = 200
settings.register_profile("dev", max_examples=CI_EXAMPLES // 10, deadline=None)
settings.register_profile("ci", max_examples=CI_EXAMPLES, derandomize=False, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def examples(n: int) -> int:
    """``n`` examples in CI, scaled by the loaded profile (a tenth in dev, at least one)."""
    return max(1, round(n * settings.default.max_examples / CI_EXAMPLES))


# --- the twins --------------------------------------------------------------------------------


#: One twin: dedup._backend's Implementation (name, ProducerStateTable, AppendResult, records,
#: snapshot, crc32c), the same object the library dispatches on.
Twin = _backend.Implementation


def _load_twins() -> dict[str, Twin]:
    """Both twins; "compiled" is missing when the extension did not load."""
    twins = {}
    try:
        twins["compiled"] = _backend.load_compiled()
    except ImportError:  # pragma: no cover - the twin fixture turns this into a failure
        pass
    twins["reference"] = _backend.TWIN
    return twins


TWINS = _load_twins()


def pytest_report_header(config):
    kind = "pure-Python twin (DEDUP_PURE_PYTHON=1)" if dedup.PURE_PYTHON else "compiled"
    return (
        f"dedup.ProducerStateTable: {kind}; compiled module loaded: {'compiled' in TWINS}; "
        f"hypothesis profile: {settings.get_current_profile_name()}"
    )


@pytest.fixture(params=["compiled", "reference"])
def twin(request) -> Twin:
    """One twin; every test using it (or ``impl``, ``table``) runs on both."""
    if request.param not in TWINS:
        pytest.fail("dedup._state, _records or _snapshot did not load: build them with `pip install -e .`")
    return TWINS[request.param]


@pytest.fixture
def impl(twin):
    """The table class of one twin."""
    return twin.ProducerStateTable


@pytest.fixture
def table(impl):
    return impl()


@pytest.fixture
def scanner(twin, monkeypatch):
    """Bind dedup.batch's header scan and CRC functions to one twin for the test (whatever
    DEDUP_PURE_PYTHON made dedup.records bind); the twin's name."""
    import dedup.batch

    monkeypatch.setattr(dedup.batch, "scan_batches", twin.records.scan_batches)
    monkeypatch.setattr(dedup.batch, "crc_valid", twin.records.crc_valid)
    monkeypatch.setattr(dedup.batch, "crc32c", twin.crc32c)
    return twin.name


def vectors_and_scalar(switch):
    """An autouse fixture for a module whose tests must run both ways: ``switch(wanted)`` (a test
    hook) turns a vector path on (where the CPU has it) or off; on again after each test."""

    @pytest.fixture(autouse=True, params=[True, False], ids=["vectors", "scalar"])
    def both_ways(request):
        switch(request.param)
        yield
        switch(True)

    return both_ways


# --- "Exception ignored" ----------------------------------------------------------------------


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
