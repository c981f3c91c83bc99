"""Bad arguments to the batch functions, on both twins (``dedup._records`` and
``dedup.reference.records``): a ``TypeError`` or ``ValueError`` naming the argument, the same
class and message from both, and nothing applied (the table and the buffer unchanged). Buffers
that are not C-contiguous or are read-only where offsets are to be written, headers of the
wrong type or outside the buffer (read from memory that faults past its end), the other twin's
table, and every keyword of ``append_batches``, ``validate_batches`` and ``scan_batches``.
"""

from __future__ import annotations

import gc
import mmap
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from batch_buffers import (  # compiled_loaded and watchdog: autouse fixtures
    SANITIZER,
    Guarded,
    client_buffer,
    compiled_loaded,  # noqa: F401
    seeded_table,
    table_state,
    watchdog,  # noqa: F401
)
from conftest import TWINS

import dedup.records
from dedup import Origin
from dedup._types import BATCH_HEADER_DTYPE

ROOT = Path(__file__).resolve().parents[2]
INT64_MAX = (1 << 63) - 1


# --- bad arguments --------------------------------------------------------------------------

GOOD = client_buffer()


def raises_the_same(call, expected, names):
    """``call(module, table_class)`` raises ``expected`` on both twins, with the same message
    naming one of ``names``; returns the messages."""
    messages = []
    for twin in TWINS.values():
        with pytest.raises(expected) as caught:
            call(twin.records, twin.ProducerStateTable)
        message = str(caught.value)
        assert any(name in message for name in names), f"{twin}: {message!r} does not name {names}"
        messages.append(message)
    assert messages[0] == messages[1]
    return messages


def non_contiguous():
    doubled = np.frombuffer(bytes(b for pair in zip(GOOD, GOOD, strict=True) for b in pair), dtype=np.uint8)
    return doubled[::2]


NOT_BUFFERS = {
    "int": 123,
    "None": None,
    "str": GOOD.hex(),
    "list": list(GOOD),
    "object": object(),
    "strided numpy": non_contiguous(),
    "fortran numpy": np.asfortranarray(np.frombuffer(GOOD[: len(GOOD) // 3 * 3], np.uint8).reshape(3, -1)),
}


@pytest.mark.parametrize("kind", list(NOT_BUFFERS))
@pytest.mark.parametrize("function", ["scan_batches", "validate_batches", "crc_valid", "append_batches"])
def test_not_a_contiguous_buffer(function, kind):
    assert np.array_equal(non_contiguous(), np.frombuffer(GOOD, np.uint8))  # same bytes, other layout
    data = NOT_BUFFERS[kind]
    tables = {}

    def call(module, table_class):
        if function == "append_batches":
            table = tables[module] = seeded_table(table_class)
            return module.append_batches(table, data, log_end_offset=10)
        return getattr(module, function)(data)

    raises_the_same(call, TypeError, ["data must be a C-contiguous buffer"])
    for table in tables.values():
        assert table_state(table) == table_state(seeded_table(type(table)))


def read_only_buffers(tmp_path):
    readonly = np.frombuffer(bytearray(GOOD), np.uint8)
    readonly.flags.writeable = False
    path = tmp_path / "segment.log"
    path.write_bytes(GOOD)
    handle = open(path, "rb")  # noqa: SIM115 - closed by the caller
    return {
        "bytes": GOOD,
        "memoryview of bytes": memoryview(GOOD),
        "read-only numpy": readonly,
        "mmap ACCESS_READ": mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ),
    }, handle


def test_read_only_buffer_with_write_offsets(tmp_path):
    buffers, handle = read_only_buffers(tmp_path)
    try:
        for kind, data in buffers.items():
            tables = {}

            def call(module, table_class, data=data, tables=tables):
                table = tables[module] = seeded_table(table_class)
                return module.append_batches(table, data, log_end_offset=10, write_offsets=True)

            raises_the_same(call, TypeError, ["data is read-only"])
            for table in tables.values():
                assert table_state(table) == table_state(seeded_table(type(table))), kind
            assert bytes(data) == GOOD, kind
            # the same buffer is fine to read
            for twin in TWINS.values():
                result = twin.records.append_batches(seeded_table(twin.ProducerStateTable), data, log_end_offset=10)
                assert (result.error_codes == 0).all(), kind
    finally:
        gc.collect()  # pytest.raises keeps the traceback (and the twin's views) in a cycle
        buffers["mmap ACCESS_READ"].close()
        handle.close()


def scanned_headers():
    return TWINS["compiled"].records.scan_batches(GOOD)


BAD_HEADER_TYPES = {
    "int64 array": lambda: np.arange(3, dtype=np.int64),
    "list of rows": lambda: scanned_headers().tolist(),
    "other structured dtype": lambda: np.zeros(3, dtype=[("position", "<i8"), ("batch_length", "<i4")]),
    "big-endian copy": lambda: scanned_headers().astype(BATCH_HEADER_DTYPE.newbyteorder(">")),
    "2-D": lambda: scanned_headers().reshape(1, -1),
    "raw bytes": lambda: scanned_headers().tobytes(),
}


@pytest.mark.parametrize("kind", list(BAD_HEADER_TYPES))
def test_crc_valid_headers_of_the_wrong_type(kind):
    raises_the_same(lambda module, _: module.crc_valid(GOOD, BAD_HEADER_TYPES[kind]()), TypeError, ["headers"])


def moved(row, **fields):
    headers = scanned_headers()
    for name, value in fields.items():
        headers[name][row] = value
    return headers


BAD_HEADER_ROWS = {
    "negative position": (0, {"position": -1}),
    "position past the end": (2, {"position": len(GOOD)}),
    "one byte past the end": (2, {"batch_length": len(GOOD) - int(scanned_headers()["position"][2]) - 11}),
    "length below the minimum": (1, {"batch_length": 48}),
    "negative length": (1, {"batch_length": -12}),
    "most negative position": (0, {"position": -(1 << 63)}),
}


@pytest.mark.parametrize("kind", list(BAD_HEADER_ROWS))
def test_crc_valid_headers_outside_the_buffer(kind):
    row, fields = BAD_HEADER_ROWS[kind]
    headers = moved(row, **fields)
    with Guarded(GOOD) as guarded:
        raises_the_same(lambda module, _: module.crc_valid(guarded.view, headers), ValueError, [f"headers[{row}]"])


def test_crc_valid_headers_whose_end_overflows_int64():
    """A position so large that position + batch_length + 12 wraps past 2^63-1: the end
    check must not be fooled into reading there. Run in a child process: the failure mode
    is a segfault."""
    program = (
        "import numpy as np\n"
        "from dedup import _records\n"
        f"data = bytes.fromhex({GOOD.hex()!r})\n"
        "headers = _records.scan_batches(data)\n"
        f"headers['position'][0] = {INT64_MAX - 20}\n"
        "try:\n"
        "    _records.crc_valid(data, headers)\n"
        "except ValueError as error:\n"
        "    print('ValueError', error)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", **SANITIZER},
    )
    assert child.returncode == 0, f"crc_valid crashed (exit status {child.returncode}): {child.stderr[-500:]}"
    assert child.stdout.startswith("ValueError headers[0] does not describe a batch inside data")
    # the twin, in this process
    headers = moved(0, position=INT64_MAX - 20)
    with pytest.raises(ValueError, match=r"headers\[0\] does not describe a batch inside data"):
        TWINS["reference"].records.crc_valid(GOOD, headers)


def test_crc_valid_takes_read_only_headers():
    """Read-only input arrays must work (STYLE habit 6): headers kept from an earlier scan,
    or memory-mapped from a file, are read-only."""
    headers = scanned_headers()
    headers.flags.writeable = False
    for twin in TWINS.values():
        assert twin.records.crc_valid(GOOD, headers).tolist() == [True, True, True]


def test_crc_valid_takes_a_strided_view_of_headers():
    headers = TWINS["compiled"].records.scan_batches(GOOD + GOOD)
    for twin in TWINS.values():
        assert twin.records.crc_valid(GOOD + GOOD, headers[::2]).tolist() == [True, True, True]


WRONG_TABLES = {"None": lambda: None, "dict": dict}


@pytest.mark.parametrize("kind", ["the other twin", "None", "dict"])
def test_append_batches_wrong_table(kind):
    messages = []
    for twin in TWINS.values():
        if kind == "the other twin":
            (other,) = (other.ProducerStateTable for other in TWINS.values() if other is not twin)
            table = seeded_table(other)
        else:
            table = WRONG_TABLES[kind]()
        before = table_state(table) if kind == "the other twin" else None
        with pytest.raises(TypeError, match="table must be a dedup") as caught:
            twin.records.append_batches(table, bytearray(GOOD), log_end_offset=10, write_offsets=True)
        messages.append(str(caught.value))
        if before is not None:
            assert table_state(table) == before
    # the public function picks the implementation from the table's class
    for twin in TWINS.values():
        table = seeded_table(twin.ProducerStateTable)
        assert (dedup.records.append_batches(table, GOOD, log_end_offset=10).error_codes == 0).all()


def test_the_wrong_table_message_points_somewhere_that_works():
    """The compiled refusal suggests the twin's append_batches "takes either twin": then it
    must take a compiled table."""
    compiled, reference = TWINS["compiled"], TWINS["reference"]
    with pytest.raises(TypeError) as caught:
        compiled.records.append_batches(seeded_table(reference.ProducerStateTable), GOOD, log_end_offset=10)
    if "takes either twin" in str(caught.value):
        result = reference.records.append_batches(seeded_table(compiled.ProducerStateTable), GOOD, log_end_offset=10)
        assert (result.error_codes == 0).all()


# (argument overrides, expected exception, the name the message must contain)
BAD_APPEND_ARGUMENTS = {
    "origin str": ({"origin": "CLIENT"}, TypeError, "origin"),
    "origin 3": ({"origin": 3}, ValueError, "origin"),
    "origin -1": ({"origin": -1}, ValueError, "origin"),
    "origin True": ({"origin": True}, TypeError, "origin"),
    "origin None": ({"origin": None}, TypeError, "origin"),
    "origin float": ({"origin": 0.0}, TypeError, "origin"),
    "tail strict": ({"tail": "strict"}, ValueError, "tail"),
    "tail None": ({"tail": None}, ValueError, "tail"),
    "tail upper": ({"tail": "IGNORE"}, ValueError, "tail"),
    "log_end_offset -1": ({"log_end_offset": -1}, ValueError, "log_end_offset"),
    "log_end_offset 2^63": ({"log_end_offset": 1 << 63}, ValueError, "log_end_offset"),
    "log_end_offset str": ({"log_end_offset": "10"}, TypeError, "log_end_offset"),
    "log_end_offset float": ({"log_end_offset": 10.0}, TypeError, "log_end_offset"),
    "log_end_offset bool": ({"log_end_offset": True}, TypeError, "log_end_offset"),
    "log_end_offset None (leader)": ({"log_end_offset": None}, TypeError, "log_end_offset"),
    "log_end_offset backwards": ({"log_end_offset": 5}, ValueError, "log_end_offset"),
    "log_end_offset overflow": ({"log_end_offset": INT64_MAX - 3}, ValueError, "log_end_offset"),
    "follower log_end_offset backwards": (
        {"origin": Origin.REPLICATION, "write_offsets": False, "partition_leader_epoch": None, "log_end_offset": 0},
        ValueError, "log_end_offset",
    ),
    "partition_leader_epoch 2^31": ({"partition_leader_epoch": 1 << 31}, ValueError, "partition_leader_epoch"),
    "partition_leader_epoch below int32": (
        {"partition_leader_epoch": -(1 << 31) - 1}, ValueError, "partition_leader_epoch",
    ),
    "partition_leader_epoch str": ({"partition_leader_epoch": "1"}, TypeError, "partition_leader_epoch"),
    "partition_leader_epoch without write_offsets": (
        {"write_offsets": False}, ValueError, "partition_leader_epoch",
    ),
    "write_offsets 1": ({"write_offsets": 1}, TypeError, "write_offsets"),
    "write_offsets str": ({"write_offsets": "yes"}, TypeError, "write_offsets"),
    "write_offsets as follower": (
        {"origin": Origin.REPLICATION, "partition_leader_epoch": None, "log_end_offset": None},
        ValueError, "write_offsets",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_APPEND_ARGUMENTS))
def test_append_batches_bad_arguments_apply_nothing(kind):
    overrides, expected, name = BAD_APPEND_ARGUMENTS[kind]
    arguments = {"origin": Origin.CLIENT, "log_end_offset": 10, "write_offsets": True, "partition_leader_epoch": 4,
                 "tail": "raise"}
    arguments.update(overrides)
    tables, buffers = {}, {}

    def call(module, table_class):
        table = tables[module] = seeded_table(table_class)
        data = buffers[module] = bytearray(GOOD)
        return module.append_batches(table, data, **arguments)

    raises_the_same(call, expected, [name])
    for module, table in tables.items():
        assert table_state(table) == table_state(seeded_table(type(table)))
        assert buffers[module] == GOOD


@pytest.mark.parametrize(
    ("overrides", "expected", "name"),
    [
        ({"origin": "CLIENT"}, TypeError, "origin"),
        ({"origin": 7}, ValueError, "origin"),
        ({"tail": "strict"}, ValueError, "tail"),
        ({"tail": None}, ValueError, "tail"),
    ],
    ids=["origin str", "origin 7", "tail strict", "tail None"],
)
@pytest.mark.parametrize("data", [GOOD, GOOD[:-1], b"\x00" * 30], ids=["valid", "torn", "corrupt"])
def test_validate_and_scan_bad_arguments(data, overrides, expected, name):
    """A bad argument is reported as such even when the bytes are bad too."""
    raises_the_same(lambda module, _: module.validate_batches(data, **overrides), expected, [name])
    if "tail" in overrides:
        raises_the_same(lambda module, _: module.scan_batches(data, **overrides), expected, [name])


def test_keyword_only_arguments():
    for twin in TWINS.values():
        with pytest.raises(TypeError):
            twin.records.scan_batches(GOOD, "ignore")
        with pytest.raises(TypeError):
            twin.records.validate_batches(GOOD, Origin.CLIENT)
        with pytest.raises(TypeError):
            twin.records.append_batches(seeded_table(twin.ProducerStateTable), GOOD, Origin.CLIENT, 10)
