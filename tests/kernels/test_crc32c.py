"""CRC-32C (spec §8.5): the compiled one (CPU instruction and table fallback), the pure-Python
twin, and the PyPI ``crc32c`` package as an independent oracle, all agreeing.

Spec references: §4.7 (CRC-32C("123456789") = e3069283), §8.5 (Castagnoli, reflected
0x82F63B78, init and xorout 0xFFFFFFFF; the snapshot CRC covers bytes 6 to the end).
"""

from __future__ import annotations

import crc32c as pypi_crc32c
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from random_buffers import buffers, unaligned

from dedup import _records, _testing
from dedup.reference.crc32c import POLYNOMIAL
from dedup.reference.crc32c import crc32c as python_crc32c

IMPLEMENTATIONS = {
    "compiled": _records.crc32c,
    "compiled-software": _testing.crc32c_software,
    "python": python_crc32c,
    "pypi": lambda data, crc=0: pypi_crc32c.crc32c(bytes(data), crc),
}


@pytest.fixture(params=list(IMPLEMENTATIONS))
def crc(request):
    return IMPLEMENTATIONS[request.param]


def test_check_value_of_the_spec(crc):
    """§4.7: CRC-32C("123456789") = e3069283 (the CRC catalogue's check value)."""
    assert crc(b"123456789") == 0xE3069283


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", 0x00000000),
        (bytes(32), 0x8A9136AA),  # RFC 3720 (iSCSI) B.4: 32 bytes of zeros
        (b"\xff" * 32, 0x62A8AB43),  # 32 bytes of ones
        (bytes(range(32)), 0x46DD794E),  # incrementing 0x00..0x1f
        (bytes(range(31, -1, -1)), 0x113FDB5C),  # decrementing 0x1f..0x00
    ],
)
def test_published_vectors(crc, data, expected):
    assert crc(data) == expected


def test_the_polynomial_is_castagnolis_reflected():
    # 0x1EDC6F41 with its 32 bits reversed (§8.5).
    assert POLYNOMIAL == int(f"{0x1EDC6F41:032b}"[::-1], 2) == 0x82F63B78


def test_snapshot_crc_of_the_empty_kafka_vector(crc):
    """§4.7: the empty snapshot's crc (48674bc7) covers bytes [6, 10), the zero count."""
    assert crc(bytes(4)) == 0x48674BC7


@pytest.mark.parametrize("length", range(18))
def test_every_short_length_agrees(length):
    """Lengths 0-17 cover the byte tail, one and two 8-byte words and the tail after them."""
    data = bytes((7 * i + 3) & 0xFF for i in range(length))
    results = {name: fn(data) for name, fn in IMPLEMENTATIONS.items()}
    assert len(set(results.values())) == 1, results


@given(data=st.binary(max_size=4096), start=st.integers(0, 15), crc=st.integers(0, 0xFFFFFFFF))
@example(data=b"", start=0, crc=0)
@example(data=b"\x00" * 17, start=1, crc=0xFFFFFFFF)
def test_all_four_agree_on_random_data_and_unaligned_slices(data, start, crc):
    # A slice that starts at an odd address: the word loops read through memcpy, any alignment.
    view = memoryview(data)[min(start, len(data)) :]
    results = {name: fn(view, crc) for name, fn in IMPLEMENTATIONS.items()}
    assert len(set(results.values())) == 1, results


# crc32c.h runs buffers of 3 x 256 bytes and more in three streams, joined by shifting a CRC
# over a lane of zero bytes (a multiply by x^(8L) mod P): rounds of three 4096-byte lanes,
# then of three 256-byte lanes, then one stream for the tail. These lengths sit on each side
# of every switch, with one or two rounds of each and tails of 0 to 255 bytes.
LANE_LENGTHS = sorted(
    {rounds * lanes + extra for lanes in (768, 12288) for rounds in (1, 2) for extra in (-8, -1, 0, 1, 7, 8, 255)}
    | {12288 + 768 + 7, 2 * 12288 + 2 * 768 + 255, 1 << 20}
)


@pytest.mark.parametrize("length", LANE_LENGTHS)
def test_three_streams_agree_at_every_lane_boundary(length):
    data = bytes((13 * i + (i >> 8)) & 0xFF for i in range(length + 3))
    for view in (memoryview(data)[:length], memoryview(data)[3:]):  # aligned and not
        fns = {name: fn for name, fn in IMPLEMENTATIONS.items() if name != "python" or length < 40_000}
        results = {name: fn(view, 0x9E3779B9) for name, fn in fns.items()}
        assert len(set(results.values())) == 1, results


@given(**buffers(max_length=40_000, max_start=15))
@example(length=12288, start=0, seed=0, crc=0)
@example(length=768 + 7, start=5, seed=1, crc=0xFFFFFFFF)
def test_long_buffers_agree_with_the_pypi_package(length, start, seed, crc):
    """Random lengths past the three-stream thresholds, at every alignment, from any crc: the
    CPU's path (three streams), the table fallback (one stream) and the PyPI package agree."""
    view = unaligned(length, start, seed)
    expected = pypi_crc32c.crc32c(bytes(view), crc)
    assert _records.crc32c(view, crc) == expected
    assert _testing.crc32c_software(view, crc) == expected


def test_zeros_and_ones_over_many_rounds():
    """A CRC of zeros is the lane shift alone: any error in the x^(8L) tables shows here."""
    for data in (bytes(1 << 16), b"\xff" * (1 << 16) + bytes(777)):
        assert _records.crc32c(data) == _testing.crc32c_software(data) == pypi_crc32c.crc32c(data)


@pytest.mark.parametrize("name", list(IMPLEMENTATIONS))
@given(first=st.binary(max_size=100), second=st.binary(max_size=100))
def test_continuing_from_a_crc_equals_one_pass(name, first, second):
    crc = IMPLEMENTATIONS[name]
    assert crc(second, crc(first)) == crc(first + second)


@pytest.mark.parametrize(
    "buffer",
    [bytearray(b"123456789"), memoryview(b"123456789"), np.frombuffer(b"123456789", dtype=np.uint8)],
    ids=["bytearray", "memoryview", "numpy"],
)
def test_any_contiguous_buffer(buffer):
    assert _records.crc32c(buffer) == python_crc32c(buffer) == 0xE3069283


def test_a_multi_byte_item_buffer_is_read_as_its_bytes():
    words = np.arange(5, dtype=">i8")
    assert python_crc32c(words) == _records.crc32c(words) == pypi_crc32c.crc32c(words.tobytes())


@pytest.mark.parametrize("fn", [_records.crc32c, python_crc32c], ids=["compiled", "python"])
def test_bad_arguments_are_rejected_alike(fn):
    with pytest.raises(TypeError, match="data must be a C-contiguous buffer"):
        fn("123456789")
    with pytest.raises(TypeError, match="data must be a C-contiguous buffer"):
        fn(memoryview(b"123456789")[::2])
    with pytest.raises(ValueError, match="crc must be a uint32"):
        fn(b"x", -1)
    with pytest.raises(ValueError, match="crc must be a uint32"):
        fn(b"x", 1 << 32)
    with pytest.raises(TypeError, match="crc must be an integer"):
        fn(b"x", 1.0)
    assert fn(b"x", 0xFFFFFFFF) == pypi_crc32c.crc32c(b"x", 0xFFFFFFFF)


def test_python_twin_rejects_a_float_crc():
    with pytest.raises(TypeError):
        python_crc32c(b"x", 1.0)
