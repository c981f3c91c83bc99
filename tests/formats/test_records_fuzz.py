"""Bad input to the batch functions: never a crash, never a hang, never an untyped exception,
and both twins give the same answer.

Every call goes to ``dedup._records`` and ``dedup.reference.records`` alike: ``scan_batches``
(both tails), ``validate_batches`` (every origin), ``crc_valid`` and ``append_batches`` (a
leader writing offsets in place, a follower, the coordinator) on the same seeded table. Each
must return or raise a ``dedup.errors.KafkaError`` subclass; the twins must agree on the
exception class and message (and ``.valid_bytes``/``.headers``), or on every result field,
the bytes written and the table's state afterwards.

The compiled side reads from memory that ends at an inaccessible page (a read past the end
is a segfault, not silent garbage) and, unless it was asked to write offsets, from pages
mapped read-only (a stray write is a segfault too). A watchdog dumps the stacks and ends the
run if a test hangs (a loop in C without the GIL cannot be interrupted otherwise).

- random bytes, and random batch-shaped bytes (valid lengths and magic, right or wrong CRC,
  control batches with marker-like records) (hypothesis);
- EVERY single-bit flip and EVERY truncation (and every start offset) of two small valid
  buffers: a client's (kafka-python batches, one transactional) and a follower's (a
  transaction and the spec §8.6 COMMIT marker), exhaustive; a flip under the CRC must be
  caught (CRC-32C catches every single-bit error), and kafka-python agrees on every CRC;
- larger buffers of real batches with a few random byte changes (hypothesis).

Bad arguments are test_records_arguments.py's; the guarded memory, the seeded table and the
small buffers are in batch_buffers.py.
"""

from __future__ import annotations

import gc
import mmap
import random
import struct
from functools import partial

import numpy as np
import pytest
from batch_buffers import (  # compiled_loaded and watchdog: autouse fixtures
    COMMIT_MARKER_BYTES,
    TIMESTAMP,
    Guarded,
    client_buffer,
    compiled_loaded,  # noqa: F401
    follower_buffer,
    kafka_python_batch,
    seeded_table,
    table_state,
    watchdog,  # noqa: F401
)
from conftest import TWINS, examples
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch as KafkaPythonBatch
from kafka_batches import varint

from dedup import Origin
from dedup._types import BatchesAppendResult
from dedup.errors import CorruptRecordError, InvalidRecordError, KafkaError, TruncatedBatchError

INT32_MAX = (1 << 31) - 1
INT64_MAX = (1 << 63) - 1
ORIGINS = [Origin.CLIENT, Origin.REPLICATION, Origin.COORDINATOR]
ERROR_CODES = {0, 2, 45, 47, 48, 52, 87}


# --- the twins and what a call gives ------------------------------------------------------


def normal(value):
    """A comparable, hashable-enough picture of a result."""
    if isinstance(value, np.ndarray):
        return value.dtype.str if value.dtype.names is None else "headers", value.shape, value.tobytes()
    if isinstance(value, BatchesAppendResult):
        fields = value._asdict()
        fields["errors"] = sorted((row, type(error), str(error), error.code) for row, error in value.errors.items())
        return {name: normal(item) if isinstance(item, np.ndarray) else item for name, item in fields.items()}
    return value


def error_picture(error: KafkaError):
    headers = getattr(error, "headers", None)
    return (
        "error", type(error), str(error), error.code, getattr(error, "valid_bytes", None),
        None if headers is None else normal(headers),
    )


def outcome(call, what):
    """("ok", result) or ("error", ...) for a KafkaError; anything else fails the test."""
    try:
        return "ok", call()
    except KafkaError as error:
        # Drop the traceback: in the twin its frames hold views of the buffer in a cycle.
        return error_picture(error.with_traceback(None))
    except Exception as error:  # noqa: BLE001 - the point is to catch it and say so
        pytest.fail(f"{what} raised an untyped {type(error).__name__}: {error}")


def check_scan(data: bytes, headers: np.ndarray, complete: bool):
    """What any successful scan must look like, whatever the bytes: batches back to back
    from 0, and (tail="ignore") nothing left but a torn batch."""
    positions = headers["position"].astype(np.int64)
    sizes = headers["batch_length"].astype(np.int64) + 12
    assert (headers["batch_length"] >= 49).all()
    assert (headers["magic"] == 2).all()
    assert positions.tolist() == np.concatenate(([0], np.cumsum(sizes)[:-1]))[: len(headers)].tolist()
    end = int(positions[-1] + sizes[-1]) if len(headers) else 0
    rest = data[end:]
    if complete:
        assert not rest
    elif len(rest) >= 12:
        length = int.from_bytes(rest[8:12], "big", signed=True)
        assert 49 <= length and length + 12 > len(rest), "tail='ignore' left out more than a torn batch"


def check_append(result: BatchesAppendResult, before: bytes, after: bytes, leader: bool, wrote: bool):
    rows = len(result.headers)
    for column in (result.error_codes, result.duplicate, result.base_offsets, result.last_offsets, result.timestamps):
        assert len(column) == rows
    assert set(result.error_codes.tolist()) <= ERROR_CODES
    refused = np.flatnonzero(result.error_codes).tolist()
    assert sorted(result.errors) == refused
    for row in refused:
        assert result.errors[row].code == result.error_codes[row]
        assert result.base_offsets[row] == result.last_offsets[row] == -1
    assert not (result.duplicate & (result.error_codes != 0)).any()
    written = (result.error_codes == 0) & ~result.duplicate
    if leader:  # consecutive offsets from the log end offset
        starts, ends = result.base_offsets[written], result.last_offsets[written]
        assert (starts[1:] == ends[:-1] + 1).all()
        if len(ends):
            assert result.log_end_offset == ends[-1] + 1
    changed = np.flatnonzero(np.frombuffer(before, np.uint8) != np.frombuffer(after, np.uint8))
    if not wrote:
        assert len(changed) == 0
    allowed = set()
    for row in np.flatnonzero(written).tolist():
        position = int(result.headers["position"][row])
        allowed.update(range(position, position + 8))
        allowed.update(range(position + 12, position + 16))
    assert set(changed.tolist()) <= allowed, "bytes changed outside an accepted batch's offset and epoch"


def run_one(twin, data: bytes):
    """Every function of one twin on ``data``: a list of (call, outcome) pairs."""
    module, table_class = twin.records, twin.ProducerStateTable
    outcomes = []
    cycles = twin.name == "reference"
    guarded = Guarded(data)
    try:
        for tail in ("raise", "ignore"):
            got = outcome(partial(module.scan_batches, guarded.view, tail=tail), f"scan_batches(tail={tail})")
            if got[0] == "ok":
                check_scan(data, got[1], complete=tail == "raise")
            else:
                assert got[4] is not None and got[5] is not None, "a scan error carries valid_bytes and headers"
            outcomes.append((f"scan {tail}", got))
        scanned = outcomes[-1][1]
        for origin in ORIGINS:
            got = outcome(partial(module.validate_batches, guarded.view, origin=origin), f"validate({origin!r})")
            outcomes.append((f"validate {origin!r}", got))
        got = outcome(partial(module.validate_batches, guarded.view, tail="ignore"), "validate(tail=ignore)")
        outcomes.append(("validate ignore", got))
        got = outcome(partial(module.crc_valid, guarded.view), "crc_valid")
        outcomes.append(("crc_valid", got))
        if scanned[0] == "ok":
            headers = scanned[1]
            valid = outcome(partial(module.crc_valid, guarded.view, headers), "crc_valid(headers)")
            assert valid[0] == "ok" and len(valid[1]) == len(headers)
            assert normal(valid[1]) == normal(got[1])
            outcomes.append(("crc_valid headers", valid))
        for origin, write in ((Origin.CLIENT, True), (Origin.REPLICATION, False), (Origin.COORDINATOR, False)):
            table = seeded_table(table_class)
            before = table_state(table)
            leader = origin != Origin.REPLICATION
            target = Guarded(data, writable=write)
            try:
                # (the result must not outlive the buffer: the twin's errors carry tracebacks
                # whose frames hold views of it)
                got = outcome(
                    partial(
                        module.append_batches, table, target.view, origin=origin,
                        log_end_offset=10 if leader else None, write_offsets=write,
                        partition_leader_epoch=9 if write else None, tail="ignore",
                    ),
                    f"append_batches({origin!r})",
                )
                after = target.bytes()
                if got[0] == "ok":
                    for error in got[1].errors.values():
                        error.with_traceback(None)
                    check_append(got[1], data, after, leader, write)
                    got = ("ok", normal(got[1]), after, table_state(table))
                else:
                    assert table_state(table) == before and after == data, "a raised append applied something"
                outcomes.append((f"append {origin!r}", got))
                del got
            finally:
                target.close(collect=cycles)
    finally:
        guarded.close(collect=cycles)
    return outcomes


def same_on_both_twins(data: bytes):
    """Runs everything on both twins, requires identical outcomes; returns the compiled's."""
    compiled, reference = (run_one(twin, data) for twin in TWINS.values())
    for (call, left), (_, right) in zip(compiled, reference, strict=True):
        if left[0] == "ok" and right[0] == "ok" and not isinstance(left[1], dict):
            left, right = ("ok", normal(left[1])), ("ok", normal(right[1]))
        assert left == right, f"{call}: the twins disagree on {data.hex()}"
    return dict(compiled)


# --- random bytes ---------------------------------------------------------------------------


def header(length_after, *, base_offset=0, leader_epoch=-1, magic=2, crc=0, attributes=0, delta=0,
           base_timestamp=TIMESTAMP, max_timestamp=TIMESTAMP, producer_id=7, producer_epoch=0,
           base_sequence=2, count=1):
    return struct.pack(
        ">qiibIhiqqqhii", base_offset, length_after, leader_epoch, magic, crc, attributes, delta,
        base_timestamp, max_timestamp, producer_id, producer_epoch, base_sequence, count,
    )


def batch_bytes(fields: dict, body: bytes, fix_crc: bool) -> bytes:
    data = bytearray(header(49 + len(body), **fields) + body)
    if fix_crc:
        data[17:21] = TWINS["compiled"].crc32c(bytes(data[21:])).to_bytes(4, "big")
    return bytes(data)


@st.composite
def marker_records(draw):
    """The records of a control batch: a marker-like first record whose lengths may lie."""
    key = draw(st.sampled_from([b"\x00\x00\x00\x01", b"\x00\x00\x00\x00", b"\x00\x00\x00\x02", b"\xff\xff\xff\xff",
                                b"\x00\x00", b""]) | st.binary(max_size=8))
    value = draw(st.sampled_from([b"\x00\x00\x00\x00\x00\x07", b"\x00\x00\xff\xff\xff\xff"]) | st.binary(max_size=10))
    key_length = draw(st.sampled_from([len(key), len(key), -1, len(key) + 1, 1 << 30]))
    value_length = draw(st.sampled_from([len(value), len(value), -1, len(value) + 3]))
    timestamp_delta = draw(st.sampled_from([0, 5, -(1 << 62), (1 << 62)]))
    body = (b"\x00" + varint(timestamp_delta) + varint(0) + varint(key_length) + key + varint(value_length)
            + value + varint(0))
    record_length = draw(st.sampled_from([len(body), len(body), len(body) - 1, len(body) + 5, -1, 1 << 40]))
    tail = draw(st.binary(max_size=6))
    return varint(record_length) + body + tail


interesting_ints32 = st.sampled_from([0, 1, -1, -2, 2, INT32_MAX, INT32_MAX - 1, -(1 << 31)])
interesting_ints64 = st.sampled_from([0, 1, -1, 7, 8, 1000, INT64_MAX, INT64_MAX - 1, -(1 << 63), 1 << 40])
interesting_ints16 = st.sampled_from([0, 1, -1, 5, 32767, -32768])


@st.composite
def shaped_batches(draw):
    """One batch with a right length and (mostly) magic 2, random fields and body."""
    control = draw(st.booleans())
    attributes = draw(st.sampled_from([0, 0x10, 0x30, 0x20, 0x08, 0x01, 0x31, 0x40, 0x07, -1]))
    if control:
        attributes |= 0x20
    fields = {
        "base_offset": draw(st.sampled_from([0, 0, 10, 42, 5, INT64_MAX, -1])),
        "leader_epoch": draw(interesting_ints32),
        "magic": draw(st.sampled_from([2, 2, 2, 2, 1, 0, -1, 3])),
        "attributes": attributes,
        "delta": draw(st.sampled_from([0, 0, 1, 2, -1, INT32_MAX, INT32_MAX - 1])),
        "base_timestamp": draw(st.sampled_from([TIMESTAMP, -1, INT64_MAX, -(1 << 63)])),
        "max_timestamp": draw(st.sampled_from([TIMESTAMP, -1, INT64_MAX])),
        "producer_id": draw(st.sampled_from([7, 8, 1000, -1, 0, INT64_MAX, -5])),
        "producer_epoch": draw(interesting_ints16),
        "base_sequence": draw(st.sampled_from([2, 0, -1, -2, INT32_MAX, 3])),
        "count": draw(st.sampled_from([1, 1, 2, 0, -1, INT32_MAX])),
    }
    body = draw(marker_records()) if control and draw(st.booleans()) else draw(st.binary(max_size=40))
    return batch_bytes(fields, body, fix_crc=draw(st.booleans()) or control)


#: A control batch with no records (left by compaction): a no-op for the table (spec §2.2).
EMPTY_CONTROL_BATCH = batch_bytes(
    {"attributes": 0x20, "producer_id": 7, "base_sequence": 2, "count": 1}, b"", fix_crc=True
)
#: A batch length of 2^31-1 with 61 bytes there: a torn tail, the message says how many it needs.
HUGE_LENGTH = b"\x00" * 8 + b"\x7f\xff\xff\xff" + b"\x00" * 49

# Byte fuzzing: an example costs microseconds and volume is the point.
fuzz_settings = settings(
    max_examples=examples(1000), suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@fuzz_settings
@given(st.binary(max_size=300))
@example(b"")
@example(b"\x00" * 12)
@example(b"\x00" * 8 + b"\x00\x00\x00\x31" + b"\x00" * 4 + b"\x02" + b"\x00" * 44)
@example(HUGE_LENGTH)
@example(b"\x00" * 8 + b"\x80\x00\x00\x00" + b"\x00" * 49)
def test_random_bytes(data):
    same_on_both_twins(data)


@fuzz_settings
@given(st.lists(shaped_batches(), min_size=1, max_size=4), st.binary(max_size=13))
@example([EMPTY_CONTROL_BATCH], b"")
def test_random_batch_shaped_bytes(batches, trailing):
    same_on_both_twins(b"".join(batches) + trailing)


# The two disagreements between the twins the fuzzing found, as plain tests.


def test_torn_tail_message_for_a_length_near_int32_max():
    """The error says how many bytes the torn batch needs: 2^31-1 + 12, not an int32 that
    wrapped (compiled: "needs -2147483637 bytes")."""
    for twin in TWINS.values():
        with pytest.raises(TruncatedBatchError) as caught:
            twin.records.scan_batches(HUGE_LENGTH)
        assert str(caught.value) == "batch 0 at position 0: truncated: the batch needs 2147483659 bytes, 61 are left"
        assert caught.value.valid_bytes == 0


@pytest.mark.parametrize("origin", [Origin.REPLICATION, Origin.COORDINATOR], ids=["REPLICATION", "COORDINATOR"])
def test_empty_control_batch_has_the_same_timestamp_on_both_twins(origin):
    """A control batch without records is a no-op; both twins must report the same
    timestamp for it (it was: compiled the batch's max timestamp, reference 0)."""
    results = []
    # A follower keeps the leader's offsets, which must not go below the table's map end (6);
    # the base offset is outside the CRC.
    batch = (10).to_bytes(8, "big") + EMPTY_CONTROL_BATCH[8:] if origin == Origin.REPLICATION else EMPTY_CONTROL_BATCH
    for twin in TWINS.values():
        table = seeded_table(twin.ProducerStateTable)
        result = twin.records.append_batches(table, batch, origin=origin,
                                             log_end_offset=None if origin == Origin.REPLICATION else 10)
        assert result.error_codes.tolist() == [0]
        results.append((result.base_offsets.tolist(), result.timestamps.tolist(), table_state(table)))
    assert results[0] == results[1]


# --- exhaustive: every bit flip and every truncation of small valid buffers --------------


def boundaries(data: bytes) -> list[int]:
    return [int(p) for p in TWINS["compiled"].records.scan_batches(data)["position"]] + [len(data)]


def test_the_small_buffers_are_valid_and_accepted():
    """The starting points of the exhaustive tests are fine as they are."""
    outcomes = same_on_both_twins(client_buffer())
    assert outcomes["validate <Origin.CLIENT: 0>"][0] == "ok"
    _, result, _, _ = outcomes["append <Origin.CLIENT: 0>"]
    assert result["error_codes"][2] == np.zeros(3, np.int16).tobytes()
    outcomes = same_on_both_twins(follower_buffer())
    assert outcomes["validate <Origin.REPLICATION: 1>"][0] == "ok"
    _, result, _, _ = outcomes["append <Origin.REPLICATION: 1>"]
    assert result["error_codes"][2] == np.zeros(2, np.int16).tobytes()
    assert len(result["completed_transactions"]) == 1


# Exhaustive: the follower's buffer in the fast set, the client's (larger) in the slow one.
@pytest.mark.parametrize("name", [pytest.param("client", marks=pytest.mark.slow), "follower"])
def test_every_single_bit_flip(name):
    original = client_buffer() if name == "client" else follower_buffer()
    starts = boundaries(original)
    kafka_python_crc = 0
    for bit in range(len(original) * 8):
        data = bytearray(original)
        data[bit // 8] ^= 1 << (bit % 8)
        data = bytes(data)
        outcomes = same_on_both_twins(data)
        batch = max(i for i, start in enumerate(starts[:-1]) if start <= bit // 8)
        at = bit // 8 - starts[batch]
        scanned = outcomes["scan raise"]
        if at >= 17:  # under the CRC, or the CRC itself: the batch fails its CRC, no other does
            assert scanned[0] == "ok"
            expected = [i != batch for i in range(len(starts) - 1)]
            assert outcomes["crc_valid"][1].tolist() == expected, (bit, at)
            error = outcomes["validate <Origin.REPLICATION: 1>"]
            assert error[1] is CorruptRecordError, (bit, error)
            assert error[2].startswith(f"batch {batch} at position {starts[batch]}: Record is corrupt"), error
            codes = np.frombuffer(outcomes["append <Origin.REPLICATION: 1>"][1]["error_codes"][2], np.int16)
            assert codes[batch] == 2
        elif at == 16:  # magic
            assert scanned[1] is InvalidRecordError and scanned[4] == starts[batch]
        elif 12 <= at < 16:  # partition leader epoch: outside the CRC, harmless
            assert outcomes["crc_valid"][1].all()
            assert outcomes["validate <Origin.REPLICATION: 1>"][0] == "ok"
        elif at < 8 and name == "client":  # base offset: rule 3 for a client
            error = outcomes["validate <Origin.CLIENT: 0>"]
            assert error[1] is InvalidRecordError and "base_offset: expected 0" in error[2]
        if scanned[0] == "ok":  # kafka-python reads the same batches and agrees on each CRC
            for row, valid in zip(scanned[1], outcomes["crc_valid"][1], strict=True):
                position, size = int(row["position"]), int(row["batch_length"]) + 12
                assert KafkaPythonBatch(data[position : position + size]).validate_crc() == valid
                kafka_python_crc += 1
    assert kafka_python_crc > len(original) * 8


@pytest.mark.parametrize("name", ["client", "follower"])
def test_every_truncation_and_every_start(name):
    original = client_buffer() if name == "client" else follower_buffer()
    starts = boundaries(original)
    for length in range(len(original) + 1):
        outcomes = same_on_both_twins(original[:length])
        complete = max(start for start in starts if start <= length)
        scanned = outcomes["scan raise"]
        if length in starts:
            assert scanned[0] == "ok" and len(scanned[1]) == starts.index(length)
        else:
            assert scanned[1] is TruncatedBatchError and scanned[4] == complete, (length, scanned)
            ignored = outcomes["scan ignore"]
            assert ignored[0] == "ok" and len(ignored[1]) == starts.index(complete)
    for start in range(1, len(original)):  # a reader that lost its place
        same_on_both_twins(original[start:])


def test_a_kept_error_does_not_pin_the_buffer(tmp_path):
    """A caller keeps the error (or a result with errors) and closes its mmap: nothing may
    still hold a view of it. (The twin's errors carry tracebacks whose frames hold views in
    a reference cycle; `python -m dedup dump-log` on a corrupt file with DEDUP_PURE_PYTHON=1
    dies with BufferError that way.)"""
    path = tmp_path / "corrupt.log"
    path.write_bytes(client_buffer() + b"\x00" * 8 + b"\x00\x00\x00\x05" + b"\x00" * 20)
    gc.disable()  # a collection would hide the cycle
    try:
        for twin in TWINS.values():
            with open(path, "rb") as handle:
                data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            kept = []
            try:
                twin.records.scan_batches(data)
            except CorruptRecordError as error:
                kept.append(error)
            try:
                data.close()
            except BufferError:
                pytest.fail(f"{twin}: a kept scan error still holds a view of the buffer")
            assert kept
            # producer 7's next batch, then one with a gap in its sequence (the table refuses it)
            segment = kafka_python_batch(7, 0, 2, [(b"a", b"1")]) + kafka_python_batch(7, 0, 9, [(b"b", b"2")])
            mapped = mmap.mmap(-1, len(segment))
            mapped[:] = segment
            result = twin.records.append_batches(seeded_table(twin.ProducerStateTable), mapped, log_end_offset=10)
            assert result.error_codes.tolist() == [0, 45]
            try:
                mapped.close()
            except BufferError:
                pytest.fail(f"{twin}: an append result with errors still holds a view of the buffer")
    finally:
        gc.enable()


# --- larger buffers with a few random changes ---------------------------------------------


def pool() -> list[bytes]:
    """Real batches: producers 7 and 8 continuing the seeded table, others new, gzip and
    transactional ones, batches without producer id, the COMMIT marker."""
    rng = random.Random(99)
    batches, sequences = [], {7: 2, 8: 0, 1000: 3, 20: 0, 21: 0}
    for _ in range(24):
        pid = rng.choice(list(sequences))
        count = rng.randint(1, 6)
        records = [(b"key-%d" % j, rng.randbytes(rng.randrange(0, 60))) for j in range(count)]
        batches.append(kafka_python_batch(pid, 1 if pid == 8 else 5 if pid == 1000 else 0, sequences[pid], records,
                                          transactional=pid in (8, 1000), compression=rng.choice([0, 1])))
        sequences[pid] += count
    batches.append(kafka_python_batch(-1, -1, -1, [(None, b"no producer id")]))
    batches.append(COMMIT_MARKER_BYTES)
    return batches


POOL = pool()


@st.composite
def mutated_buffers(draw):
    picks = draw(st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=12))
    data = bytearray(b"".join(POOL[i] for i in picks))
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["set", "xor-bit", "delete", "insert"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "xor-bit" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "delete" and data:
            del data[at : at + draw(st.integers(1, 4))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@settings(max_examples=examples(600), suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_buffers())
def test_larger_buffers_with_a_few_changes(data):
    same_on_both_twins(data)
