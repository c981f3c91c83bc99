"""crc32c.h's two modes, compared through the snapshot module's copy of the header
(``_testing.crc32c_in_mode``): 0 the table, 1 the CRC instruction (SSE 4.2 or ARMv8) in three
streams. Whatever this CPU has, each mode asked for must give the PyPI package's CRC; a CPU
without the instruction falls back to the table.

The streams take buffers of 3 x 256 bytes and more: rounds of three 4,096-byte lanes while
three are left, then of three 256-byte lanes, joined through the shift tables, then the tail
in one stream. The lengths below sit on each side of those steps.
"""

from __future__ import annotations

import random

import crc32c as pypi_crc32c
import pytest
from hypothesis import example, given
from random_buffers import buffers, unaligned

from dedup import _testing

STREAM_LENGTHS = sorted(
    {
        base + extra
        for base in (256, 768, 1024, 3 * 4096, 3 * 4096 + 768, 24576)
        for extra in (-257, -256, -9, -8, -7, -1, 0, 1, 7, 8, 255, 256)
    }
    | {1 << 20, (1 << 20) + 17}
)


def test_the_modes_fall_back_to_what_the_cpu_has():
    used = [_testing.crc32c_in_mode(b"123456789", 0, mode) for mode in (0, 1)]
    assert [crc for _, crc in used] == [0xE3069283] * 2
    assert used[0][0] == 0 and used[1][0] in (0, 1)


@pytest.mark.parametrize("length", STREAM_LENGTHS)
def test_every_mode_agrees_around_the_stream_steps(length):
    data = random.Random(length).randbytes(length + 5)
    for start in (0, 1, 5):  # aligned and not
        view = memoryview(data)[start : start + length]
        expected = pypi_crc32c.crc32c(bytes(view), 0x9E3779B9)
        assert [_testing.crc32c_in_mode(view, 0x9E3779B9, mode)[1] for mode in (0, 1)] == [expected] * 2


@given(**buffers(max_length=20_000, max_start=63))
@example(length=768, start=0, seed=0, crc=0)
@example(length=767, start=63, seed=1, crc=0xFFFFFFFF)
def test_random_buffers_agree_in_every_mode(length, start, seed, crc):
    view = unaligned(length, start, seed)
    expected = pypi_crc32c.crc32c(bytes(view), crc)
    assert [_testing.crc32c_in_mode(view, crc, mode)[1] for mode in (0, 1)] == [expected] * 2


def test_zeros_and_ones_stream_like_the_table():
    """A CRC of zeros is the streams' shift tables alone: a wrong x^(8L) mod P shows here."""
    for data in (bytes(1 << 16), b"\xff" * (1 << 16) + bytes(777), b"\x01" + bytes(4095)):
        expected = pypi_crc32c.crc32c(data)
        assert [_testing.crc32c_in_mode(data, 0, mode)[1] for mode in (0, 1)] == [expected] * 2


def test_continuing_from_a_crc_in_every_mode():
    data = random.Random(7).randbytes(70_000)
    for mode in (0, 1):
        for cut in (0, 1, 767, 768, 4097, 12_289, 69_999):
            _, first = _testing.crc32c_in_mode(data[:cut], 0, mode)
            assert _testing.crc32c_in_mode(data[cut:], first, mode)[1] == pypi_crc32c.crc32c(data)


@pytest.mark.parametrize("mode", [-1, 2, 99])
def test_the_hook_refuses_a_mode_it_does_not_have(mode):
    with pytest.raises(ValueError, match="mode must be 0 or 1"):
        _testing.crc32c_in_mode(b"123456789", 0, mode)
