"""What the batch functions' fuzz and argument tests share (test_records_fuzz.py,
test_records_arguments.py): memory that faults on a read past the end, a seeded table the same
on both twins, the two small valid buffers (a client's and a follower's), and two autouse
fixtures a test module imports to use: a watchdog for hangs in C and the compiled twin's guard.
"""

from __future__ import annotations

import ctypes
import faulthandler
import gc
import mmap
import os

import pytest
from conftest import TWINS
from kafka.record.default_records import DefaultRecordBatchBuilder as KafkaPythonBuilder

from dedup import Origin

TIMESTAMP = 1_767_225_600_000
WATCHDOG_SECONDS = 120
#: What a child Python needs to load the extension as this process did: an AddressSanitizer
#: build (tools/asan.sh) needs its runtime preloaded.
SANITIZER = {name: os.environ[name] for name in ("LD_PRELOAD", "ASAN_OPTIONS", "PYTHONMALLOC") if name in os.environ}


@pytest.fixture(autouse=True)
def watchdog():
    """A hang in C (no GIL, no signal check) ends the run with every thread's stack."""
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(autouse=True, scope="module")
def compiled_loaded():
    if "compiled" not in TWINS:
        pytest.fail("dedup._records did not load: build it with `python setup.py build_ext --inplace`")


# --- memory that faults on a read past the end (or a write where none is asked for) -----

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PROT_NONE, PROT_READ = 0, 1


class Guarded:
    """``data`` copied so that it ends where an inaccessible page begins; its own pages are
    read-only unless ``writable``. ``.view`` is a memoryview of exactly ``data``."""

    def __init__(self, data: bytes, writable: bool = False):
        pages = (len(data) + PAGE - 1) // PAGE
        self.map = mmap.mmap(-1, (pages + 1) * PAGE)
        start = pages * PAGE - len(data)
        self.map[start : start + len(data)] = data
        window = (ctypes.c_char * len(self.map)).from_buffer(self.map)
        address = ctypes.addressof(window)
        del window
        self._protect(address + pages * PAGE, PAGE, PROT_NONE)
        if pages and not writable:
            self._protect(address, pages * PAGE, PROT_READ)
        self.view = memoryview(self.map)[start : start + len(data)]

    @staticmethod
    def _protect(address, length, protection):
        if _libc.mprotect(address, length, protection) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")

    def bytes(self) -> bytes:
        return bytes(self.view)

    def close(self, collect: bool = False):
        """Unmap; the buffer must no longer be exported. ``collect``: first let the garbage
        collector free reference cycles that hold a view of it (a pure-Python error's
        traceback holds the frames, and so the memoryviews, that raised it)."""
        self.view.release()
        try:
            self.map.close()
        except BufferError:
            if not collect:
                raise AssertionError("something kept a view of the buffer after the call returned") from None
            gc.collect()
            self.map.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(collect=True)  # pytest.raises keeps the traceback (and the twin's views) in a cycle


# --- a seeded table, two small valid buffers --------------------------------------------


def seeded_table(table_class):
    """A table with some history, the same on both twins: producer 7 (epoch 0, sequences
    0-1), producer 1000 (epoch 5) with a transaction ongoing since offset 2, producer 8 known
    only from a marker (epoch 1, coordinator epoch 3). Map end offset 6."""
    table = table_class()
    table.append(7, 0, 0, 2, 0, max_timestamp=TIMESTAMP)
    table.append(1000, 5, 0, 3, 2, max_timestamp=TIMESTAMP, transactional=True, origin=Origin.REPLICATION)
    table.append_marker(8, 1, 3, 5, commit=True, timestamp=TIMESTAMP, origin=Origin.COORDINATOR)
    assert table.map_end_offset == 6
    return table


def table_state(table):
    return table.map_end_offset, len(table), [table.entry(pid) for pid in sorted(table)]


def kafka_python_batch(producer_id, producer_epoch, base_sequence, records, transactional=False, compression=0):
    builder = KafkaPythonBuilder(
        magic=2, compression_type=compression, is_transactional=int(transactional), producer_id=producer_id,
        producer_epoch=producer_epoch, base_sequence=base_sequence, batch_size=1 << 20,
    )
    for offset, (key, value) in enumerate(records):
        builder.append(offset, timestamp=TIMESTAMP + offset, key=key, value=value, headers=[("h", b"1")])
    return bytes(builder.build())


COMMIT_MARKER_BYTES = bytes.fromhex(
    "000000000000002a00000042000000000240d514e90030000000000000018bcfe568000000018bcfe5680000000000000003e8"
    "0005ffffffff000000012000000008000000010c00000000000700"
)


def client_buffer() -> bytes:
    """What a leader might get: producer 7's next batch (sequence 2, two records), producer
    8's first transactional batch, and a batch without a producer id."""
    return (
        kafka_python_batch(7, 0, 2, [(b"a", b"1"), (None, b"22")])
        + kafka_python_batch(8, 1, 0, [(b"t", b"x")], transactional=True)
        + kafka_python_batch(-1, -1, -1, [(None, b"plain")])
    )


def follower_buffer() -> bytes:
    """What a follower might get: producer 1000's transactional batch at offsets 10-11 (the
    base offset is outside the CRC), then the spec §8.6 COMMIT marker at offset 42."""
    data = bytearray(kafka_python_batch(1000, 5, 3, [(b"k", b"v"), (b"k2", None)], transactional=True))
    data[:8] = (10).to_bytes(8, "big")
    return bytes(data) + COMMIT_MARKER_BYTES
