"""Aborted transactions beside each segment: Kafka's ``.txnindex`` (TransactionIndex, AbortedTxn).

A :class:`TransactionIndex` is the ``%020d.txnindex`` file of one segment: one fixed-size
:class:`AbortedTxn` entry for every ABORT marker written in that segment, in marker order.
A ``read_committed`` fetch asks the indexes for the aborted transactions overlapping the
range it returns (Kafka's ``TransactionIndex.collectAbortedTxns`` via
``UnifiedLog.collectAbortedTransactions``), and the consumer drops their records.

The entry is Kafka's ``AbortedTxn`` (``storage/.../internals/log/AbortedTxn.java``), version
0, 34 bytes, big-endian::

    version int16 | producer_id int64 | first_offset int64 | last_offset int64 | last_stable_offset int64

``first_offset`` is the transaction's first data offset, ``last_offset`` the ABORT marker's
offset, ``last_stable_offset`` the partition's first unstable offset once the transaction is
complete (the first offset of the earliest transaction of another producer still open, else
``last_offset + 1``: ``ProducerStateManager.lastStableOffset(CompletedTxn)``); a search stops
at the first entry whose last stable offset reaches its upper bound, since no transaction
aborted later can start below it.

This module also holds the scan that tells, batch by batch, which transactions a run of
batches starts and ends (:func:`track_transactions`): the log uses it on every append, as
leader and follower, and recovery uses it to rebuild an index from the segment's batches.

Where dedup differs from Kafka: Kafka creates the file only when its first entry is written;
dedup creates it with the segment, so a missing file means a lost one and recovery rebuilds
it (Kafka can only rebuild it when the segment itself is recovered). The entries are also
kept in memory (a segment has few), as dedup keeps the offset index.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

from ._layout import RECORDS_OFFSET
from .batch import decode_varint, decode_varlong
from .errors import CorruptRecordError

__all__ = [
    "ABORTED_TXN_SIZE",
    "ABORTED_TXN_VERSION",
    "TXN_INDEX_SUFFIX",
    "AbortedTxn",
    "CorruptIndexError",
    "TransactionIndex",
    "collect_aborted_transactions",
    "track_transactions",
    "txn_index_file_name",
]

#: Kafka's TransactionIndex file suffix (LogFileUtils.TXN_INDEX_FILE_SUFFIX).
TXN_INDEX_SUFFIX = ".txnindex"
#: AbortedTxn.CURRENT_VERSION.
ABORTED_TXN_VERSION = 0
#: AbortedTxn's layout, declared once: every offset and the total size (TOTAL_SIZE) derive from it.
_ENTRY = struct.Struct(">hqqqq")
ABORTED_TXN_SIZE = _ENTRY.size
assert ABORTED_TXN_SIZE == 34  # AbortedTxn.TOTAL_SIZE
#: A control record's key is version int16 + type int16 (Kafka's ControlRecordType).
_CONTROL_KEY = struct.Struct(">hh")
CONTROL_ABORT = 0
CONTROL_COMMIT = 1


class CorruptIndexError(Exception):
    """A ``.txnindex`` that cannot be right (Kafka's CorruptIndexException): recovery rebuilds it."""


def txn_index_file_name(base_offset: int) -> str:
    """Kafka's transaction index file name: ``"%020d.txnindex"``.

    >>> txn_index_file_name(1234)
    '00000000000000001234.txnindex'
    """
    return f"{base_offset:020d}{TXN_INDEX_SUFFIX}"


class AbortedTxn(NamedTuple):
    """One entry of a ``.txnindex`` (Kafka's AbortedTxn, version 0)."""

    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int

    def to_bytes(self) -> bytes:
        """The 34-byte entry.

        >>> AbortedTxn(7, 10, 12, 13).to_bytes().hex()
        '00000000000000000007000000000000000a000000000000000c000000000000000d'
        """
        return _ENTRY.pack(ABORTED_TXN_VERSION, *self)

    @classmethod
    def from_bytes(cls, data: Any, position: int = 0) -> AbortedTxn:
        """The entry at ``position``; ``CorruptIndexError`` for a version other than 0
        (Kafka refuses a version above CURRENT_VERSION; 0 is the only one there is)."""
        version, producer_id, first_offset, last_offset, last_stable_offset = _ENTRY.unpack_from(data, position)
        if version != ABORTED_TXN_VERSION:
            raise CorruptIndexError(
                f"unexpected aborted transaction version {version} at position {position}, "
                f"current version is {ABORTED_TXN_VERSION}"
            )
        return cls(producer_id, first_offset, last_offset, last_stable_offset)


class TransactionIndex:
    """The ``.txnindex`` of the segment at ``base_offset`` in ``directory``.

    :meth:`create` makes a new empty file, :meth:`open` reads an existing one
    (``FileNotFoundError`` if it is missing, :class:`CorruptIndexError` if it is not whole
    version-0 entries with last offsets increasing and at or above ``base_offset``: Kafka's
    sanityCheck). ``entries`` holds what the file holds.
    """

    def __init__(self, directory: str, base_offset: int, descriptor: int, entries: list[AbortedTxn]) -> None:
        self.base_offset = base_offset
        self.path = os.path.join(directory, txn_index_file_name(base_offset))
        self._fd = descriptor
        self.entries = entries
        self._synced = True

    @classmethod
    def create(cls, directory: str, base_offset: int) -> TransactionIndex:
        """A new, empty index (an existing file is emptied: it belonged to a segment that is gone)."""
        path = os.path.join(directory, txn_index_file_name(base_offset))
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        return cls(directory, base_offset, os.open(path, flags, 0o666), [])

    @classmethod
    def open(cls, directory: str, base_offset: int) -> TransactionIndex:
        path = os.path.join(directory, txn_index_file_name(base_offset))
        descriptor = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
        try:
            entries = _parse(path, _read_all(descriptor), base_offset)
        except BaseException:
            os.close(descriptor)
            raise
        return cls(directory, base_offset, descriptor, entries)

    def append(self, entry: AbortedTxn) -> None:
        """Write one entry at the end (TransactionIndex.append: last offsets must increase)."""
        if self.entries and entry.last_offset <= self.entries[-1].last_offset:
            raise ValueError(
                f"{self.path}: the last offset of appended transactions must increase, "
                f"{entry.last_offset} is not above {self.entries[-1].last_offset}"
            )
        data = entry.to_bytes()
        position = len(self.entries) * ABORTED_TXN_SIZE
        written = 0
        while written < len(data):
            written += os.pwrite(self._fd, data[written:], position + written)
        self.entries.append(entry)
        self._synced = False

    def reset(self, entries: Iterable[AbortedTxn] = ()) -> None:
        """Replace every entry (Kafka's reset, then the appends of a recovery)."""
        os.ftruncate(self._fd, 0)
        self.entries = []
        for entry in entries:
            self.append(entry)
        self._synced = False

    def truncate_to(self, offset: int) -> None:
        """Drop the entries whose marker is at or above ``offset`` (TransactionIndex.truncateTo)."""
        keep = next((i for i, entry in enumerate(self.entries) if entry.last_offset >= offset), len(self.entries))
        if keep < len(self.entries):
            os.ftruncate(self._fd, keep * ABORTED_TXN_SIZE)
            del self.entries[keep:]
            self._synced = False

    def collect_aborted_txns(self, fetch_offset: int, upper_bound_offset: int) -> tuple[list[AbortedTxn], bool]:
        """Kafka's collectAbortedTxns: the entries overlapping ``[fetch_offset,
        upper_bound_offset)`` (last offset at or above the fetch offset, first offset below
        the bound), and whether the search is complete (an entry's last stable offset reached
        the bound: no later segment can hold one that overlaps)."""
        found = []
        for entry in self.entries:
            if entry.last_offset >= fetch_offset and entry.first_offset < upper_bound_offset:
                found.append(entry)
            if entry.last_stable_offset >= upper_bound_offset:
                return found, True
        return found, False

    def flush(self) -> None:
        if not self._synced and self._fd >= 0:
            os.fsync(self._fd)
            self._synced = True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def delete(self) -> None:
        """Close and remove the file (with its segment)."""
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __repr__(self) -> str:
        return f"<TransactionIndex {self.base_offset} entries={len(self.entries)}>"


def _read_all(descriptor: int) -> bytes:
    size = os.fstat(descriptor).st_size
    return os.pread(descriptor, size, 0) if size else b""


def _parse(path: str, data: bytes, base_offset: int) -> list[AbortedTxn]:
    if len(data) % ABORTED_TXN_SIZE:
        raise CorruptIndexError(f"{path}: {len(data)} bytes is not a whole number of {ABORTED_TXN_SIZE}-byte entries")
    entries: list[AbortedTxn] = []
    for position in range(0, len(data), ABORTED_TXN_SIZE):
        try:
            entry = AbortedTxn.from_bytes(data, position)
        except CorruptIndexError as error:
            raise CorruptIndexError(f"{path}: {error}") from None
        if entry.last_offset < base_offset:
            raise CorruptIndexError(
                f"{path}: last offset of aborted transaction {entry} is less than start offset {base_offset}"
            )
        if entries and entry.last_offset <= entries[-1].last_offset:
            raise CorruptIndexError(f"{path}: last offsets do not increase at {entry}")
        entries.append(entry)
    return entries


def collect_aborted_transactions(
    indexes: Iterable[TransactionIndex], fetch_offset: int, upper_bound_offset: int
) -> list[AbortedTxn]:
    """Kafka's UnifiedLog.collectAbortedTransactions: the indexes of the segment holding
    ``fetch_offset`` and of every later one, in order, until one search is complete."""
    found: list[AbortedTxn] = []
    for index in indexes:
        entries, complete = index.collect_aborted_txns(fetch_offset, upper_bound_offset)
        found += entries
        if complete:
            break
    return found


def control_type(data: Any, position: int, record_count: int) -> int | None:
    """The ControlRecordType of the control batch at ``position`` (its first record's key:
    ABORT 0, COMMIT 1, ...); None for a batch without records (compaction emptied it:
    Kafka's ProducerAppendInfo skips it)."""
    if record_count <= 0:
        return None
    cursor = position + RECORDS_OFFSET
    _, cursor = decode_varint(data, cursor)  # record length
    cursor += 1  # attributes
    _, cursor = decode_varlong(data, cursor)  # timestamp delta
    _, cursor = decode_varint(data, cursor)  # offset delta
    key_length, cursor = decode_varint(data, cursor)
    if key_length < _CONTROL_KEY.size:
        raise CorruptRecordError(f"control batch at position {position}: a key of {key_length} bytes")
    return int(_CONTROL_KEY.unpack_from(data, cursor)[1])


def track_transactions(data: Any, headers: np.ndarray, ongoing: dict[int, int]) -> list[tuple[AbortedTxn, bool]]:
    """Follow the batches of ``data`` (scanned into ``headers``, with their final offsets)
    through ``ongoing`` (producer id -> first offset of its open transaction, kept in order of
    first offset): a transactional data batch opens its producer's transaction if none is
    open (ProducerAppendInfo: ``currentTxnFirstOffset``), a COMMIT or ABORT marker closes it.
    Returns each transaction closed, as ``(AbortedTxn-shaped entry, is_aborted)``, in order;
    the entry's last stable offset is the first offset of the earliest transaction of another
    producer still open at that marker, else the marker's offset + 1
    (ProducerStateManager.lastStableOffset). A marker closing no open transaction completes
    nothing (KAFKA-10702), as in the table."""
    if not len(headers) or not headers["is_transactional"].any():
        return []
    completed: list[tuple[AbortedTxn, bool]] = []
    rows = np.flatnonzero(headers["is_transactional"]).tolist()
    for row in rows:
        header = headers[row]
        producer_id = int(header["producer_id"])
        if not header["is_control"]:
            ongoing.setdefault(producer_id, int(header["base_offset"]))
            continue
        kind = control_type(data, int(header["position"]), int(header["record_count"]))
        if kind not in (CONTROL_ABORT, CONTROL_COMMIT):
            continue
        first_offset = ongoing.pop(producer_id, None)
        if first_offset is None:
            continue
        marker_offset = int(header["base_offset"])
        last_stable_offset = next(iter(ongoing.values()), marker_offset + 1)
        completed.append(
            (AbortedTxn(producer_id, first_offset, marker_offset, last_stable_offset), kind == CONTROL_ABORT)
        )
    return completed
