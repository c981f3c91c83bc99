"""Snapshot decodes on two cores (prefault.h, _snapshot.pyx run_load): the load runs on a
loader thread while the calling thread has the kernel fault the decoded table's new memory in
(MADV_POPULATE_WRITE) ahead of it. Faulting writes nothing, so a decode this way must give
exactly the table a decode on one thread gives, on good files and on corrupt ones, whether the
faulting keeps ahead of the load (modes 1 and 2) or races it over every page (mode 3); the
loader thread must be joined on every path, and an exception the load raises there must be
raised by the caller. "The helper" below is this arrangement.

The tables here are 40,000 producers (a slab, about 5 MB: below the 16 MB from which the
default mode uses a loader thread, so modes 2 and 3 force it) with every batch count from 1 to
the window, ongoing transactions, and offset and timestamp gaps and offset deltas too wide for
the narrow entry (escapes in the full format, wide entries in both).

The fast set keeps the mode hook, one decode with the helper (full format, mode 2) and the
exceptions of the load; -m slow runs the other decodes, the corrupt files, the 19 MB default
and the threads.
"""

from __future__ import annotations

import functools
import os
import random
import threading

import crc32c as pypi_crc32c
import numpy as np
import pytest
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from snapshot_builders import kafka_file, state

from dedup import decode_snapshot, encode_snapshot
from dedup.errors import CorruptSnapshotError
from dedup.tools.bench import filled_table

_state = pytest.importorskip("dedup._state")
from dedup import _testing  # noqa: E402

PRODUCERS = 40_000
WINDOW = 5
# Whether this machine can run the helper at all (Linux 5.14 and newer): then modes 2 and 3
# must start one thread per decode.
PRESENT = _testing.prefault_mode(2) == 2
_testing.prefault_mode(1)


@pytest.fixture(autouse=True)
def default_mode_after():
    yield
    _testing.prefault_mode(1)


def varied_table(producers=PRODUCERS, window=WINDOW, seed=7):
    table = _state.ProducerStateTable(window)
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1_000, 1_000 + producers, dtype=np.int64))
    rounds = rng.integers(1, window + 2, size=producers)  # window + 1: the ring has turned
    for sequence in range(window + 1):
        chosen = ids[rounds > sequence]
        n = chosen.shape[0]
        result = table.append_many(
            chosen,
            np.zeros(n, np.int16),
            np.full(n, sequence, np.int32),
            np.ones(n, np.int32),
            rng.integers(1_700_000_000_000, 1_700_000_100_000, size=n),
            log_end_offset=table.map_end_offset,
        )
        assert (result.error_codes == 0).all()
    for k in range(50):  # wide entries, escapes, ongoing transactions
        producer_id = 10**12 + k
        ongoing = k % 2 == 0
        table.append(producer_id, 0, 0, 1, table.map_end_offset, max_timestamp=5, transactional=ongoing)
        gap = (1 << 33) if k % 3 == 0 else 1
        stamp = 5 + (1 << 40) * (k % 5 == 0)
        records = 70_000 if k % 7 == 0 else 1  # an offset delta over 0xFFFF: wide in Kafka's format too
        table.append(producer_id, 0, 1, records, table.map_end_offset + gap, max_timestamp=stamp, transactional=ongoing)
    return table


@pytest.fixture(scope="module")
def table():
    return varied_table()


@pytest.fixture(scope="module")
def snapshots(table):
    return {kind: encode_snapshot(table, kind) for kind in ("full", "kafka")}


def decoded(data, mode, **kwargs):
    """(table or the CorruptSnapshotError's message, helpers started, bytes they populated)."""
    _testing.prefault_mode(mode)
    threads, populated = _testing.prefault_counts()
    try:
        result = decode_snapshot(data, **kwargs)
    except CorruptSnapshotError as error:
        result = str(error)
    after_threads, after_populated = _testing.prefault_counts()
    return result, after_threads - threads, after_populated - populated


def outcome(result):
    return result if isinstance(result, str) else state(result)


def test_the_mode_hook_takes_only_its_modes():
    for bad in (-1, 4, 99):
        with pytest.raises(ValueError, match="prefault mode"):
            _testing.prefault_mode(bad)
    assert _testing.prefault_mode(0) == 0
    assert _testing.prefault_mode(1) == (1 if PRESENT else 0)


def test_the_helper_runs_on_this_machine():
    """CI runs on Linux 6: the helper must be there, or every other test here proves little."""
    if os.uname().sysname == "Linux" and tuple(map(int, os.uname().release.split(".")[:2])) >= (5, 14):
        assert PRESENT


@pytest.mark.parametrize(
    ("kind", "mode"),
    [
        ("full", 2),
        pytest.param("full", 3, marks=pytest.mark.slow),
        pytest.param("kafka", 2, marks=pytest.mark.slow),
        pytest.param("kafka", 3, marks=pytest.mark.slow),
    ],
)
def test_a_decode_with_the_helper_is_the_decode_without(table, snapshots, kind, mode):
    data = snapshots[kind]
    plain, started, populated = decoded(data, 0, map_end_offset=table.map_end_offset)
    assert (started, populated) == (0, 0)
    helped, started, populated = decoded(data, mode, map_end_offset=table.map_end_offset)
    assert started == (1 if PRESENT else 0)
    assert state(helped) == state(plain)
    assert encode_snapshot(helped, kind) == data
    assert helped.memory_bytes() == plain.memory_bytes()
    if kind == "full":
        assert state(helped) == state(table)
    new_memory = len(helped) * (helped.capacity_report()["entry_bytes"] + 8 + 8)  # entry, stamp, note
    if mode == 3 and PRESENT:
        # Every page of the slab part the load fills and of the notes: all but chunk 0's
        # entries (at most a chunk of 128 KiB), each range rounded to whole pages.
        assert new_memory - 2 * 128 * 1024 <= populated <= new_memory + 3 * 2 * 4096
    else:
        assert populated <= new_memory + 3 * 2 * 4096
    # The decoded table works on: the retry of a batch it holds is a duplicate.
    last = table.entry(10**12 + 3).batches[-1]
    retry = helped.append(10**12 + 3, 0, last.last_sequence, 1, helped.map_end_offset)
    assert retry.duplicate and retry.last_offset == last.last_offset


@pytest.mark.slow
def test_the_default_starts_a_helper_from_16_mb_with_two_cpus():
    _testing.prefault_mode(1)
    small = encode_snapshot(varied_table(2_000), "full")
    _, started, _ = decoded(small, 1)
    assert started == 0
    large_table = filled_table(150_000, WINDOW, WINDOW, capacity=150_000)  # 150,000 x 128 bytes: 19 MB
    large = encode_snapshot(large_table, "full")
    loaded, started, _ = decoded(large, 1)
    assert started == (1 if PRESENT and len(os.sched_getaffinity(0)) >= 2 else 0)
    assert state(loaded) == state(large_table)


@functools.cache
def full_snapshot():
    """The module table's full snapshot, for hypothesis (which shows a fixture's value)."""
    return encode_snapshot(varied_table(), "full")


# Few examples: each decodes a 40,000-producer snapshot twice.
@pytest.mark.slow
@settings(max_examples=examples(40))
@given(position=st.integers(0, 10**9), xor=st.integers(1, 255), fix_crc=st.booleans(), mode=st.sampled_from([2, 3]))
def test_a_corrupt_full_snapshot_gives_the_same_error_with_the_helper(position, xor, fix_crc, mode):
    """A flipped byte anywhere: the same error or the same table. With the CRC made right
    again, the load stops at the bad value part way through, with the helper still running."""
    data = bytearray(full_snapshot())
    data[position % (len(data) - 4)] ^= xor
    if fix_crc:
        data[-4:] = pypi_crc32c.crc32c(bytes(data[:-4])).to_bytes(4, "big")
    data = bytes(data)
    plain, _, _ = decoded(data, 0)
    helped, started, _ = decoded(data, mode)
    # A header the checks before the load reject starts no helper; the load always does.
    assert started <= (1 if PRESENT else 0)
    if not isinstance(plain, str):
        assert started == (1 if PRESENT else 0)
    assert outcome(helped) == outcome(plain)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [2, 3])
def test_corrupt_kafka_snapshots_and_a_repeated_id_with_the_helper(snapshots, mode):
    data = snapshots["kafka"]
    for damaged in (data[:-7], data[: len(data) // 2], data[:100] + bytes([data[100] ^ 1]) + data[101:]):
        plain, _, _ = decoded(damaged, 0, map_end_offset=1 << 40)
        helped, _, _ = decoded(damaged, mode, map_end_offset=1 << 40)
        assert isinstance(plain, str) and helped == plain
    # A producer id twice: the bulk load finds it and the table is loaded again entry by entry.
    entries = [(pid, 0, 3, pid, 0, 7, -1, -1) for pid in random.Random(3).sample(range(1 << 40), 30_000)]
    entries.append((entries[5][0], 1, 9, 40, 0, 8, -1, -1))
    repeated = kafka_file(entries)
    plain, _, _ = decoded(repeated, 0, map_end_offset=1 << 41)
    helped, started, _ = decoded(repeated, mode, map_end_offset=1 << 41)
    assert started == (1 if PRESENT else 0)
    assert len(helped) == 30_000 and helped.entry(entries[5][0]).producer_epoch == 1
    assert state(helped) == state(plain)


@pytest.mark.slow
def test_decodes_in_several_threads_at_once(table, snapshots):
    """Each decode has its own helper; with the GIL released they overlap."""
    _testing.prefault_mode(3)
    expected = state(table)
    results, errors = [], []

    def decode_some():
        try:
            for _ in range(3):
                results.append(state(decode_snapshot(snapshots["full"])) == expected)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    workers = [threading.Thread(target=decode_some) for _ in range(3)]
    threads_before, _ = _testing.prefault_counts()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors and results == [True] * 9
    assert _testing.prefault_counts()[0] - threads_before == (9 if PRESENT else 0)


@pytest.mark.parametrize("mode", [0, 2])
@pytest.mark.parametrize("kind", ["full", "kafka"])
def test_an_exception_of_the_load_is_raised_by_the_caller(table, snapshots, kind, mode):
    """The load runs on the loader thread (mode 2) or here (0). When growing the wide-entry pool
    fails part way (the test hook makes its second growth fail, as a failed allocation would),
    the decode raises that MemoryError here with the same message either way, and the next
    decode works."""
    data = snapshots[kind]
    messages = []
    try:
        for _ in range(2):
            _testing.fail_wide_growth(1)
            _testing.prefault_mode(mode)
            threads, _ = _testing.prefault_counts()
            with pytest.raises(MemoryError, match="producer-state table: cannot allocate") as caught:
                decode_snapshot(data, map_end_offset=table.map_end_offset)
            assert _testing.prefault_counts()[0] - threads == (1 if PRESENT and mode else 0)
            messages.append(str(caught.value))
    finally:
        _testing.fail_wide_growth(-1)
    assert messages[0] == messages[1]
    loaded = decode_snapshot(data, map_end_offset=table.map_end_offset)
    assert encode_snapshot(loaded, kind) == data
