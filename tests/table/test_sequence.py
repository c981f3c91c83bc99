"""Sequence arithmetic, spec §8.4: both twins' helpers against the spec's own examples."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dedup import _types

try:
    from dedup import _testing
except ImportError:  # pragma: no cover
    _testing = None

MAX = (1 << 31) - 1
HELPERS = [("reference", _types.increment_sequence, _types.decrement_sequence, _types.in_sequence)]
if _testing is not None:
    HELPERS.append(("compiled", _testing.increment_sequence_c, _testing.decrement_sequence_c, _testing.in_sequence_c))


@pytest.fixture(params=HELPERS, ids=lambda helper: helper[0])
def helpers(request):
    return request.param[1:]


def test_spec_examples(helpers):
    increment, decrement, in_sequence = helpers
    assert increment(MAX, 1) == 0
    assert increment(MAX - 10, 20) == 9
    assert decrement(0, 1) == MAX
    assert decrement(9, 20) == MAX - 10
    assert in_sequence(MAX, 0)
    assert not in_sequence(MAX, -(1 << 31))  # MAX + 1 is not computed in 32 bits
    assert in_sequence(-1, 0) and not in_sequence(-1, 1)
    assert in_sequence(41, 42) and not in_sequence(41, 43) and not in_sequence(41, 41)


@given(st.integers(0, MAX), st.integers(0, MAX))
def test_decrement_undoes_increment(sequence, delta):
    incremented = _types.increment_sequence(sequence, delta)
    assert 0 <= incremented <= MAX
    assert _types.decrement_sequence(incremented, delta) == sequence
    if _testing is not None:
        assert _testing.increment_sequence_c(sequence, delta) == incremented
        assert _testing.decrement_sequence_c(incremented, delta) == sequence


@given(st.integers(-1, MAX), st.integers(0, MAX))
def test_in_sequence_matches_between_twins(last, following):
    expected = following == (0 if last == MAX else last + 1)
    assert _types.in_sequence(last, following) == expected
    if _testing is not None:
        assert _testing.in_sequence_c(last, following) == expected
