"""crc32c.h's three modes, compared through the snapshot module's copy of the header
(``_testing.crc32c_in_mode``): 0 the table, 1 the CRC instruction in three streams, 2 folding
with carry-less multiplies (x86-64 with AVX-512 and VPCLMULQDQ). Whatever this CPU has, each
mode asked for must give the PyPI package's CRC; modes it lacks fall back to the best below.

Folding takes buffers of 512 bytes and more: four 64-byte registers while 256 bytes are left,
then one, then four 16-byte lanes joined and the tail (under 64 bytes) in the instruction's
streams. The lengths below sit on each side of those steps.
"""

from __future__ import annotations

import random

import crc32c as pypi_crc32c
import pytest
from hypothesis import example, given
from random_buffers import buffers, unaligned

from dedup import _testing

FOLD_LENGTHS = sorted(
    {
        base + extra
        for base in (256, 512, 768, 1024, 4096, 24576)
        for extra in (-65, -64, -63, -1, 0, 1, 15, 16, 63, 64, 255)
    }
    | {1 << 20, (1 << 20) + 17}
)


def test_the_modes_fall_back_to_what_the_cpu_has():
    used = [_testing.crc32c_in_mode(b"123456789", 0, mode) for mode in (0, 1, 2)]
    assert [crc for _, crc in used] == [0xE3069283] * 3
    assert used[0][0] == 0 and used[1][0] in (0, 1) and used[2][0] in (used[1][0], 2)


@pytest.mark.parametrize("length", FOLD_LENGTHS)
def test_every_mode_agrees_around_the_fold_steps(length):
    data = random.Random(length).randbytes(length + 5)
    for start in (0, 1, 5):  # aligned and not
        view = memoryview(data)[start : start + length]
        expected = pypi_crc32c.crc32c(bytes(view), 0x9E3779B9)
        assert [_testing.crc32c_in_mode(view, 0x9E3779B9, mode)[1] for mode in (0, 1, 2)] == [expected] * 3


@given(**buffers(max_length=20_000, max_start=63))
@example(length=512, start=0, seed=0, crc=0)
@example(length=511, start=63, seed=1, crc=0xFFFFFFFF)
def test_random_buffers_agree_in_every_mode(length, start, seed, crc):
    view = unaligned(length, start, seed)
    expected = pypi_crc32c.crc32c(bytes(view), crc)
    assert [_testing.crc32c_in_mode(view, crc, mode)[1] for mode in (0, 1, 2)] == [expected] * 3


def test_zeros_and_ones_fold_like_the_table():
    """A CRC of zeros is the fold multipliers alone: a wrong x^D mod P shows here."""
    for data in (bytes(1 << 16), b"\xff" * (1 << 16) + bytes(777), b"\x01" + bytes(4095)):
        expected = pypi_crc32c.crc32c(data)
        assert [_testing.crc32c_in_mode(data, 0, mode)[1] for mode in (0, 1, 2)] == [expected] * 3


def test_continuing_from_a_crc_in_every_mode():
    data = random.Random(7).randbytes(70_000)
    for mode in (0, 1, 2):
        for cut in (0, 1, 511, 512, 4097, 69_999):
            _, first = _testing.crc32c_in_mode(data[:cut], 0, mode)
            assert _testing.crc32c_in_mode(data[cut:], first, mode)[1] == pypi_crc32c.crc32c(data)


@pytest.mark.parametrize("mode", [-1, 3, 99])
def test_the_hook_refuses_a_mode_it_does_not_have(mode):
    with pytest.raises(ValueError, match="mode must be 0, 1 or 2"):
        _testing.crc32c_in_mode(b"123456789", 0, mode)
