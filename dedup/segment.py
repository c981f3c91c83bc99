"""One log segment: a ``%020d.log`` file of Kafka v2 batches, as Kafka's LogSegment keeps it.

The file holds whole batches back to back, exactly as a Kafka broker writes them, so
``kafka-dump-log.sh`` (or ``python -m dedup dump-log``) reads it. The segment is named after
its base offset, the first offset it can hold. Kafka keeps an offset index file beside it
(``.index``, one entry per ``index.interval.bytes`` = 4096 bytes of batches); dedup keeps the
same sparse index in memory and rebuilds it from the batch headers when the segment is
opened, so no index file can be stale or corrupt. Kafka's transaction index (``.txnindex``,
the aborted transactions whose markers the segment holds) is a file beside it
(:mod:`dedup.transaction_index`): it goes wherever the segment goes (truncation, deletion),
and one that is missing, corrupt or past the segment's end is flagged
(``txn_index_needs_rebuild``) for recovery to rebuild from the batches.

A segment never decides anything about producers: the partition log (:mod:`dedup.log`)
validates, assigns offsets and updates the producer-state table; the segment stores bytes,
finds the batch that holds an offset, cuts a torn tail and truncates.
"""

from __future__ import annotations

import mmap
import os
from array import array
from bisect import bisect_right
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ._layout import LOG_OVERHEAD, header_prefix
from .errors import CorruptRecordError, KafkaStorageError, OffsetOutOfRangeError
from .records import crc_valid, scan_batches
from .transaction_index import CorruptIndexError, TransactionIndex

__all__ = ["INDEX_INTERVAL_BYTES", "LOG_SUFFIX", "FileRegion", "LogSegment", "segment_file_name"]

LOG_SUFFIX = ".log"
#: Kafka's ``index.interval.bytes`` default: one index entry per this many bytes of batches.
INDEX_INTERVAL_BYTES = 4096
#: The header from the base offset through the last offset delta (spec §8.1, bytes [0, 27)).
_PREFIX = header_prefix("last_offset_delta")


def segment_file_name(base_offset: int) -> str:
    """Kafka's segment file name: ``"%020d.log"``.

    >>> segment_file_name(1234)
    '00000000000000001234.log'
    """
    return f"{base_offset:020d}{LOG_SUFFIX}"


class FileRegion:
    """``size`` bytes of a segment file from ``position``, not read: what a fetch response
    carries for a partition's records, to go to the socket with ``sendfile`` (Kafka's
    ``FileRecords.slice``, written by ``FileRecords.writeTo`` with ``transferTo``).

    The region owns a duplicate of the segment's descriptor, so the bytes stay readable if the
    segment is closed or deleted meanwhile (a deleted file lives until its last descriptor
    closes). :meth:`close` releases it (and so does the garbage collector, at once: a region
    holds no reference to anything else, so it never sits in a reference cycle).
    ``next_offset`` is the offset after its last batch (-1 if unknown): the upper bound of
    the aborted transactions a ``read_committed`` fetch of it lists (Kafka's
    ``LogSegment.fetchUpperBoundOffset``).
    """

    __slots__ = ("fd", "next_offset", "position", "size")

    def __init__(self, descriptor: int, position: int, size: int, next_offset: int = -1) -> None:
        self.fd = os.dup(descriptor)
        self.position = position
        self.size = size
        self.next_offset = next_offset

    def read(self) -> bytes:
        """The bytes themselves (for a caller that needs them in memory: tests, a fuzzer);
        ``KafkaStorageError`` if the file no longer holds them (truncated meanwhile)."""
        data = os.pread(self.fd, self.size, self.position)
        if len(data) != self.size:
            raise KafkaStorageError(f"a region of {self.size} bytes at {self.position}: only {len(data)} are left")
        return data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __len__(self) -> int:
        return self.size

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FileRegion fd={self.fd} position={self.position} size={self.size} next_offset={self.next_offset}>"


class LogSegment:
    """The batches of one ``<base_offset>.log`` file.

    ``next_offset`` is the offset after the segment's last batch (``base_offset`` when it is
    empty); ``size`` its length in bytes; ``max_timestamp`` the largest batch max timestamp
    in it (-1 when empty: what time-based retention looks at). Open an existing file with
    :meth:`open` (which reads the batch headers to rebuild the index), a new one with
    :meth:`create`.
    """

    def __init__(self, directory: str, base_offset: int, descriptor: int) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.path = os.path.join(directory, segment_file_name(base_offset))
        self._fd = descriptor
        self.size = 0
        self.next_offset = base_offset
        self.max_timestamp = -1
        # Sparse index, as Kafka's .index: (base offset, position) of a batch whenever
        # INDEX_INTERVAL_BYTES have been written since the last entry; the first batch always.
        self._index_offsets = array("q")
        self._index_positions = array("q")
        self._bytes_since_index = 0
        self.flushed_size = 0
        #: Kafka's LogSegment.txnIndex (attached by create/open).
        self.txn_index: TransactionIndex = None  # type: ignore[assignment]
        #: The .txnindex was missing or failed Kafka's sanityCheck: recovery rebuilds it.
        self.txn_index_needs_rebuild = False

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: str, base_offset: int) -> LogSegment:
        """A new, empty segment file (``FileExistsError`` if one is there)."""
        path = os.path.join(directory, segment_file_name(base_offset))
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        segment = cls(directory, base_offset, os.open(path, flags, 0o666))
        segment.txn_index = TransactionIndex.create(directory, base_offset)
        return segment

    @classmethod
    def open(cls, directory: str, base_offset: int) -> LogSegment:
        """An existing segment file, its index rebuilt from the batch headers (no CRC check:
        call :meth:`recover` for that). A segment whose bytes do not scan as whole batches
        raises the scanner's error (``CorruptRecordError``, with ``valid_bytes``): the caller
        recovers it."""
        segment = cls.open_for_recovery(directory, base_offset)
        try:
            segment._load(check_crc=False)
        except BaseException:
            segment.close()
            raise
        return segment

    @classmethod
    def open_for_recovery(cls, directory: str, base_offset: int) -> LogSegment:
        """An existing segment file, not read yet: what recovery opens when :meth:`open`
        refused the file, to cut it with :meth:`recover` before anything else."""
        path = os.path.join(directory, segment_file_name(base_offset))
        flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        segment = cls(directory, base_offset, os.open(path, flags))
        try:
            segment.txn_index = TransactionIndex.open(directory, base_offset)
        except (FileNotFoundError, CorruptIndexError):
            segment.txn_index = TransactionIndex.create(directory, base_offset)
            segment.txn_index_needs_rebuild = True
        return segment

    def _load(self, *, check_crc: bool) -> int:
        """Rebuild size, next offset, max timestamp and the index from the file. With
        ``check_crc`` (recovery) the file is cut at the first batch that is torn, fails its
        CRC, is not a v2 batch, or whose offsets are not above the previous batch's; returns
        the number of bytes cut. Without it, such a batch raises ``CorruptRecordError``."""
        size = os.fstat(self._fd).st_size
        with self._mapped(0, size) as data:
            if check_crc:
                try:
                    headers = scan_batches(data, tail="ignore")
                except CorruptRecordError as error:  # bad length or magic: keep what precedes it
                    headers = error.headers  # type: ignore[attr-defined]
                valid = crc_valid(data, headers) if len(headers) else np.ones(0, dtype=bool)
            else:
                headers = scan_batches(data, tail="raise")
                valid = np.ones(len(headers), dtype=bool)
        keep = _good_prefix(headers, valid, self.base_offset)
        if not check_crc and keep < len(headers):
            raise CorruptRecordError(
                f"segment {self.path}: batch {keep} at position {int(headers['position'][keep])} has offsets "
                f"out of order (base offset {int(headers['base_offset'][keep])})"
            )
        headers = headers[:keep]
        valid_bytes = int(headers["position"][-1]) + int(headers["batch_length"][-1]) + LOG_OVERHEAD if keep else 0
        cut = size - valid_bytes
        if cut:
            os.ftruncate(self._fd, valid_bytes)
        self.size = self.flushed_size = valid_bytes
        self._rebuild_index(headers)
        if (
            self.txn_index is not None
            and self.txn_index.entries
            and (self.txn_index.entries[-1].last_offset >= self.next_offset)
        ):
            self.txn_index_needs_rebuild = True  # markers it names are gone (a cut tail)
        return cut

    def _rebuild_index(self, headers: np.ndarray) -> None:
        self._index_offsets = array("q")
        self._index_positions = array("q")
        self._bytes_since_index = 0
        if not len(headers):
            self.next_offset, self.max_timestamp = self.base_offset, -1
            return
        positions = headers["position"]
        # One entry for the first batch in each INDEX_INTERVAL_BYTES block of the file: as
        # sparse as Kafka's .index (an entry per 4 KiB written), computed without a loop.
        blocks = positions // INDEX_INTERVAL_BYTES
        chosen = np.flatnonzero(np.diff(blocks, prepend=-1))
        # From the int64 bytes directly: a list in between parses every entry (30 ms per GiB).
        self._index_offsets.frombytes(np.ascontiguousarray(headers["base_offset"][chosen], dtype=np.int64).tobytes())
        self._index_positions.frombytes(np.ascontiguousarray(positions[chosen], dtype=np.int64).tobytes())
        end = int(positions[-1]) + int(headers["batch_length"][-1]) + LOG_OVERHEAD
        self._bytes_since_index = end - int(positions[chosen[-1]])
        self.next_offset = int(headers["base_offset"][-1]) + int(headers["last_offset_delta"][-1]) + 1
        self.max_timestamp = int(headers["max_timestamp"].max())

    def recover(self) -> int:
        """Kafka's LogSegment.recover: check every batch (framing, magic, CRC, offsets going
        up) and cut the file at the first bad one, a torn write's tail included. Returns the
        number of bytes cut (0 for a sound segment)."""
        return self._load(check_crc=True)

    # -- writing -------------------------------------------------------------------------------

    def append(self, data: Any, base_offset: int, next_offset: int, max_timestamp: int) -> int:
        """Write ``data`` (whole batches, offsets ``[base_offset, next_offset)``) at the end.
        Returns the position it was written at. On an I/O error (a full disk) the file is cut
        back to its previous length and ``KafkaStorageError`` raised: nothing was appended."""
        position = self.size
        view = memoryview(data)
        try:
            written = 0
            while written < len(view):  # os.write may write less than asked
                written += os.pwrite(self._fd, view[written:], position + written)
        except OSError as error:
            try:
                os.ftruncate(self._fd, position)
            except OSError:  # pragma: no cover - the disk is failing; the log goes offline anyway
                pass
            raise KafkaStorageError(f"segment {self.path}: write at position {position} failed: {error}") from error
        if not self._index_offsets or self._bytes_since_index >= INDEX_INTERVAL_BYTES:
            self._index_offsets.append(base_offset)
            self._index_positions.append(position)
            self._bytes_since_index = 0
        self._bytes_since_index += len(view)
        self.size = position + len(view)
        self.next_offset = next_offset
        if max_timestamp > self.max_timestamp:
            self.max_timestamp = max_timestamp
        return position

    def flush(self) -> None:
        """fsync the file (Kafka's LogSegment.flush)."""
        if self.flushed_size != self.size or self.size == 0:
            os.fsync(self._fd)
            self.flushed_size = self.size
        self.txn_index.flush()

    def truncate_to(self, offset: int) -> int:
        """Drop every batch whose last offset is at or above ``offset`` (Kafka's
        LogSegment.truncateTo: it cuts at the first batch that reaches ``offset``, so a batch
        that straddles it goes whole). Returns the bytes removed."""
        if offset >= self.next_offset:
            return 0
        position = self.position_of(offset) if offset > self.base_offset else 0
        removed = self.size - position
        os.ftruncate(self._fd, position)
        self.size = position
        self.flushed_size = min(self.flushed_size, position)
        with self._mapped(0, position) as data:
            self._rebuild_index(scan_batches(data))
        self.txn_index.truncate_to(offset)
        return removed

    # -- reading -------------------------------------------------------------------------------

    def _batch_prefix(self, position: int) -> tuple[int, int, int]:
        """(base offset, size, last offset delta) of the batch at ``position``."""
        prefix = os.pread(self._fd, _PREFIX.size, position)
        if len(prefix) < _PREFIX.size:
            raise CorruptRecordError(f"segment {self.path}: a batch header is cut short at position {position}")
        base_offset, length, _, _, _, _, delta = _PREFIX.unpack(prefix)
        return base_offset, length + LOG_OVERHEAD, delta

    def position_of(self, offset: int) -> int:
        """The position of the first batch whose last offset is at or above ``offset`` (the
        batch that holds it, if any); ``size`` if there is none. Kafka's translateOffset:
        the sparse index, then a walk over at most ~4 KiB of headers."""
        if offset >= self.next_offset:
            return self.size
        entry = bisect_right(self._index_offsets, offset) - 1
        position = self._index_positions[entry] if entry >= 0 else 0
        while position < self.size:
            base_offset, size, delta = self._batch_prefix(position)
            if base_offset + delta >= offset:
                return position
            position += size
        return self.size

    def read(self, offset: int, max_bytes: int, max_offset: int | None = None) -> bytes:
        """Whole batches from the one that holds ``offset``, at most ``max_bytes`` of them but
        at least one (Kafka's KIP-74 rule, so a large batch cannot stall a fetch), none at or
        past ``max_offset`` (the high watermark, for a consumer's fetch).
        ``OffsetOutOfRangeError`` if ``offset`` is below the segment."""
        position, size = self.slice(offset, max_bytes, max_offset)
        return os.pread(self._fd, size, position) if size else b""

    def slice(self, offset: int, max_bytes: int, max_offset: int | None = None, *,
              min_one_batch: bool = True) -> tuple[int, int]:  # fmt: skip
        """(position, size) of the whole batches :meth:`read` returns, without reading them
        (Kafka's LogSegment.read: the first batch even past ``max_bytes`` with
        ``min_one_batch``, KIP-74; without it, nothing if the first batch is larger). Unlike
        Kafka, which sends ``max_bytes`` and lets the consumer drop a partial last batch, the
        slice ends at a batch boundary: only the headers of the batches near the cut are read,
        from the sparse index's entry before it."""
        if offset < self.base_offset:
            raise OffsetOutOfRangeError(f"offset {offset} is below segment {self.base_offset}")
        start = self.position_of(offset)
        end = self.size if max_offset is None else self.position_of(max_offset)
        if start >= end:
            return start, 0
        first_size = self._batch_prefix(start)[1]
        limit = start + (max(max_bytes, first_size) if min_one_batch else max_bytes)
        if end <= limit:
            return start, end - start
        # The last batch boundary at or below limit: walk from the index entry before it.
        entry = bisect_right(self._index_positions, limit) - 1
        position = max(start, self._index_positions[entry]) if entry >= 0 else start
        while position < end:
            size = self._batch_prefix(position)[1]
            if position + size > limit:
                break
            position += size
        return start, position - start

    @property
    def fd(self) -> int:
        """The segment file's descriptor (a :class:`FileRegion` duplicates it)."""
        return self._fd

    @contextmanager
    def _mapped(self, position: int, end: int) -> Iterator[Any]:
        if end <= position:
            yield b""
            return
        with mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)[position:end]
            try:
                yield view
            finally:
                view.release()

    @contextmanager
    def batches_from(self, offset: int, up_to: int | None = None) -> Iterator[Any]:
        """A read-only view (memory-mapped) of the batches from the one that holds ``offset``
        to the end, or to the batch that holds ``up_to`` (exclusive): what recovery replays.
        The view is released when the block ends."""
        start = self.position_of(offset) if offset > self.base_offset else 0
        end = self.size if up_to is None else self.position_of(up_to)
        with self._mapped(start, end) as view:
            yield view

    # -- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.txn_index is not None:
            self.txn_index.close()

    def delete(self) -> None:
        """Close and remove the file (Kafka renames it ``.deleted`` first and removes it
        later; dedup removes it at once, nothing else reads it)."""
        self.close()
        deleted = self.path + ".deleted"
        os.replace(self.path, deleted)
        os.unlink(deleted)
        if self.txn_index is not None:
            self.txn_index.delete()

    def __repr__(self) -> str:
        return f"<LogSegment {self.base_offset} size={self.size} next_offset={self.next_offset}>"


def _good_prefix(headers: np.ndarray, valid: np.ndarray, base_offset: int) -> int:
    """How many leading batches are sound: CRC valid, at or above the segment's base offset,
    each starting after the previous one ends (offsets strictly increasing)."""
    if not len(headers):
        return 0
    firsts = headers["base_offset"]
    lasts = firsts + headers["last_offset_delta"].astype(np.int64)
    previous_end = np.concatenate(([base_offset], lasts[:-1] + 1))
    ok = valid & (firsts >= previous_end) & (headers["last_offset_delta"] >= 0)
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if len(bad) else len(headers)


