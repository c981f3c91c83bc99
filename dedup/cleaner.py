"""Log compaction: Kafka's log cleaner for partitions with ``cleanup.policy=compact``.

A compacted log keeps, for every key, at least the last record written with it; older records of
the same key go, and so do tombstones (a null value) once ``delete.retention.ms`` has passed since
the cleaner first kept them. This module is Kafka's ``kafka.log.Cleaner`` (``LogCleaner.scala``:
``doClean``, ``buildOffsetMap``, ``groupSegmentsBySize``, ``cleanSegments``, ``cleanInto``), its
per-batch rules from ``MemoryRecords.filterTo``, and the offsets it cleans between from
``LogCleanerManager.cleanableOffsets``; :func:`clean_log` is one cleaning pass over one
:class:`~dedup.log.PartitionLog`.

What one pass does, as Kafka's:

1. **Cleanable range** (:func:`cleanable_offsets`): from the first dirty offset (the
   ``cleaner-offset-checkpoint``, or the log start) to the first uncleanable offset, the smallest
   of the last stable offset (nothing of a transaction still open is cleaned, nor anything
   after its first offset), the active segment's base offset (the active segment is never
   cleaned) and, with ``min.compaction.lag.ms`` (KIP-58), the base of the first segment with a
   record younger than the lag.
2. **Offset map** (``buildOffsetMap``/``buildOffsetMapForSegment``): key -> offset of its last
   record in the dirty range, from plain and committed transactional records; the records of
   aborted transactions (from the ``.txnindex`` files, ``collectAbortedTransactions``) and the
   markers do not enter it. Kafka's map is a fixed-size hash of key digests (``SkimpyOffsetMap``)
   that may cover only part of the range; dedup's is a dict of the keys themselves and always
   covers all of it.
3. **Rewrite** (``cleanSegments``/``cleanInto``) every segment below the first uncleanable offset,
   in groups whose sizes add up to at most ``segment.bytes`` (``groupSegmentsBySize``), each group
   into one segment named after its first: a record stays if no later record has its key, and a
   tombstone only until its batch's delete horizon. Batches keep their base offset, last offset
   delta, producer id, epoch and base sequence (records keep their offsets; the batch's last offset
   is kept so the producer's last sequence survives: ``buildRetainedRecordsInto``); a batch that
   lost records is rebuilt with a new CRC-32C; a batch whose records all go is dropped, unless it
   must stay for the producer state (then its header stays, empty: ``BatchRetention.RETAIN_EMPTY``).
4. **Swap** (``LocalLog.replaceSegments``): the group is written to ``<base>.log.cleaned`` and
   fsynced, renamed ``<base>.log.swap``, the old segments deleted, the swap renamed ``<base>.log``.
   :func:`dedup.recovery.load` completes a swap found at opening (Kafka's ``LogLoader``) and
   deletes a ``.cleaned`` file, so a crash leaves the old segments or the new one, never a mix.
5. The first dirty offset becomes the first uncleanable offset (``cleaner-offset-checkpoint``).

The rules, with Kafka's reasons:

- **Records without a key** are dropped by the cleaner (``Cleaner.shouldRetainRecord``: "invalid
  message", counted in the stats). Kafka's broker refuses them on append to a compacted topic
  (``LogValidator``: "Compacted topic cannot accept message without key", INVALID_RECORD); the
  group coordinator never writes one.
- **Tombstones** (KIP-534): the first pass that keeps a tombstone rebuilds its batch with the
  delete-horizon attribute (bit 6) and the horizon, now + ``delete.retention.ms``, as its base
  timestamp; a pass after the horizon drops it. So a consumer that reads the log within
  ``delete.retention.ms`` of a tombstone's first cleaning still sees it.
- **Producer state** (``lastRecordsOfActiveProducers``): Kafka keeps, for every producer the
  producer-state table still holds, the batch with its last data offset (or, without one, its
  markers of its current epoch), so a replay of the log after a lost snapshot finds the
  producer's last sequence and epoch. dedup keeps every
  batch in each producer's duplicate window (a superset: the ``"full"`` snapshot format remembers
  the whole window, and a replay must find it too). The table itself is not touched: it is rebuilt
  from snapshots, which cleaning does not change.
- **Transactions** (KIP-98, ``CleanedTransactionMetadata``): the pass reads the log in order
  with the aborted transactions of the ``.txnindex`` files of each segment it rewrites. A
  committed transaction's records are cleaned as any other (a later record or tombstone of the
  key supersedes them). An aborted transaction's batches go whole (their header stays, empty,
  only for the producer state or as a group's last batch). A marker stays while a batch of its
  transaction was read in the same pass (an empty one kept for the producer state counts);
  once none was, the pass that finds it so sets its delete horizon, now + ``delete.retention.ms``
  (KIP-534, as for a tombstone), and the first pass at or after the horizon removes it. The
  cleaned segment's ``.txnindex`` holds the aborted transactions whose ABORT marker it keeps
  and of which a batch was read in the pass (Kafka's ``cleanedIndex``); a recovery that rebuilds
  it from the batches finds the same or fewer (an aborted transaction without data completes
  nothing, KAFKA-10702): a ``read_committed`` fetch gets the same records either way.
- **Compressed batches** are not decompressed: one of an aborted transaction goes as Kafka's
  (its records are not needed); any other is copied as it is and its records do not enter the
  offset map (they never shadow an older record). Nothing dedup keeps is wrong; it keeps more
  than Kafka would.
- **Each group keeps its last batch** (empty if all its records go). Kafka keeps the last batch of
  the whole round only (``upperBoundOffsetOfCleaningRound``); keeping each group's makes the
  ``.swap`` file's own offset range name every segment it replaces, which is how ``LogLoader``
  finds the old segments to delete when it completes a swap.
"""

from __future__ import annotations

import heapq
import logging
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NamedTuple

from ._files import fsync_directory, write_all
from ._layout import (
    ATTR_COMPRESSION_MASK,
    ATTR_CONTROL,
    ATTR_DELETE_HORIZON,
    ATTR_TIMESTAMP_TYPE,
    ATTR_TRANSACTIONAL,
    ATTRIBUTES_OFFSET,
    CRC_OFFSET,
    HEADER,
    LOG_OVERHEAD,
    RECORDS_OFFSET,
    field_struct,
)
from .batch import Record, _record, _wrap64, decode_records
from .checkpoints import read_offsets, write_offsets
from .errors import CorruptCheckpointError
from .records import crc32c, scan_batches
from .segment import LogSegment, segment_file_name
from .transaction_index import CONTROL_ABORT, CONTROL_COMMIT, AbortedTxn, control_type

if TYPE_CHECKING:
    from .log import PartitionLog

__all__ = [
    "CLEANED_SUFFIX",
    "CLEANER_OFFSET_CHECKPOINT",
    "DEFAULT_DELETE_RETENTION_MS",
    "DEFAULT_MIN_CLEANABLE_DIRTY_RATIO",
    "SWAP_SUFFIX",
    "CleanerStats",
    "cleanable_offsets",
    "clean_log",
    "dirty_ratio",
    "group_segments_by_size",
]

logger = logging.getLogger("dedup.cleaner")

#: Kafka's ``delete.retention.ms`` default (1 day).
DEFAULT_DELETE_RETENTION_MS = 86_400_000
#: Kafka's ``min.cleanable.dirty.ratio`` default.
DEFAULT_MIN_CLEANABLE_DIRTY_RATIO = 0.5
#: Kafka's file with each log's first dirty offset (one per log directory in Kafka; here, as the
#: other checkpoints, in the partition directory).
CLEANER_OFFSET_CHECKPOINT = "cleaner-offset-checkpoint"
#: Kafka's LogFileUtils suffixes of a segment being cleaned and of one being swapped in.
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"

_CRC = field_struct("crc")
_NO_TIMESTAMP = -1


class CleanerStats(NamedTuple):
    """What one pass did (Kafka's CleanerStats): the cleaned range ``[first_dirty_offset,
    end_offset)``, the segments read and written, records and bytes before and after, tombstones
    and keyless records removed."""

    first_dirty_offset: int
    end_offset: int
    segments_read: int
    segments_written: int
    records_read: int
    records_retained: int
    bytes_read: int
    bytes_written: int
    tombstones_removed: int
    invalid_records: int


# -- which offsets to clean (LogCleanerManager) ---------------------------------------------------


def _checkpoint_path(log: PartitionLog) -> str:
    return os.path.join(log.directory, CLEANER_OFFSET_CHECKPOINT)


def first_dirty_offset(log: PartitionLog) -> int:
    """The checkpointed first dirty offset, reset to the log start offset when it is missing,
    corrupt, below the log start or past the log end (LogCleanerManager.cleanableOffsets)."""
    try:
        checkpointed = read_offsets(_checkpoint_path(log)).get((log.topic, log.partition))
    except CorruptCheckpointError as error:
        logger.warning("log %s: ignoring a corrupt cleaner checkpoint: %s", log.directory, error)
        checkpointed = None
    if checkpointed is None or not log.log_start_offset <= checkpointed <= log.log_end_offset:
        return log.log_start_offset
    return checkpointed


def cleanable_offsets(log: PartitionLog, now_ms: int, min_compaction_lag_ms: int = 0) -> tuple[int, int]:
    """``(first dirty offset, first uncleanable offset)``: the cleaner maps the keys of the dirty
    range between them and rewrites every segment below the second (LogCleanerManager
    .cleanableOffsets). Uncleanable: the active segment, anything at or past the last stable
    offset (so the records of a transaction still open, and everything after its first offset,
    are never cleaned: the cleaner could not tell whether they will be committed or aborted;
    the LSO is at or below the high watermark), and with ``min_compaction_lag_ms`` > 0 the first
    segment holding a record younger than it."""
    first_dirty = first_dirty_offset(log)
    segments = log._local_log.segments
    candidates = [log.last_stable_offset, segments[-1].base_offset]
    if min_compaction_lag_ms > 0:
        for segment in segments[:-1]:
            if segment.next_offset > first_dirty and segment.max_timestamp > now_ms - min_compaction_lag_ms:
                candidates.append(segment.base_offset)
                break
    return first_dirty, max(first_dirty, min(candidates))


def dirty_ratio(log: PartitionLog, first_dirty: int, first_uncleanable: int) -> float:
    """Dirty bytes over clean plus dirty bytes, by whole segments (Kafka's LogToClean
    .cleanableRatio): what ``min.cleanable.dirty.ratio`` is compared with."""
    clean = dirty = 0
    for segment in log._local_log.segments:
        if segment.base_offset >= first_uncleanable:
            break
        if segment.next_offset <= first_dirty:
            clean += segment.size
        else:
            dirty += segment.size
    total = clean + dirty
    return dirty / total if total else 0.0


def group_segments_by_size(segments: list[LogSegment], max_size: int) -> list[list[LogSegment]]:
    """Consecutive segments in groups of at most ``max_size`` bytes together (a segment larger
    alone is a group alone): Kafka's groupSegmentsBySize, so cleaned segments do not shrink to
    nothing. Kafka also bounds the index sizes and the offset span (2^31-1); dedup has no index
    files and int64 offsets in memory."""
    groups: list[list[LogSegment]] = []
    for segment in segments:
        if groups and sum(s.size for s in groups[-1]) + segment.size <= max_size:
            groups[-1].append(segment)
        else:
            groups.append([segment])
    return groups


# -- one batch (MemoryRecords.filterTo) ----------------------------------------------------------


class _Batch(NamedTuple):
    base_offset: int
    last_offset_delta: int
    partition_leader_epoch: int
    attributes: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def delete_horizon(self) -> int | None:
        return self.base_timestamp if self.attributes & ATTR_DELETE_HORIZON else None

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & ATTR_CONTROL)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & ATTR_TRANSACTIONAL)

    @property
    def is_compressed(self) -> bool:
        """dedup does not decompress: a compressed data batch that is not aborted is copied as
        it is and its records do not enter the offset map (see the module's docstring)."""
        return bool(self.attributes & ATTR_COMPRESSION_MASK)


def _batches(data: bytes) -> Iterator[tuple[_Batch, memoryview]]:
    view = memoryview(data)
    for header in scan_batches(view):
        position = int(header["position"])
        raw = view[position : position + int(header["batch_length"]) + LOG_OVERHEAD]
        fields = HEADER.unpack_from(raw)
        # HEADER: base_offset, batch_length, leader_epoch, magic, crc, attributes, last_offset_delta, ...
        yield _Batch(fields[0], fields[6], fields[2], fields[5], *fields[7:]), raw


def _build_batch(batch: _Batch, records: list[Record], delete_horizon: int | None) -> bytes:
    """``batch`` with only ``records``, as buildRetainedRecordsInto (and writeEmptyHeader for
    none) writes it: same base offset, last offset delta, leader epoch and producer fields; base
    timestamp the delete horizon if one is set, else the first record's (-1 for an empty batch);
    max timestamp the largest kept (the original's for LogAppendTime and for an empty batch);
    CRC-32C recomputed."""
    # The body is written uncompressed (an empty one too: Kafka's writeEmptyHeader sets no codec).
    attributes = batch.attributes & ~(ATTR_DELETE_HORIZON | ATTR_COMPRESSION_MASK)
    if delete_horizon is not None and records:
        attributes |= ATTR_DELETE_HORIZON
        base_timestamp = delete_horizon
    else:
        base_timestamp = records[0].timestamp if records else _NO_TIMESTAMP
    if records and not batch.attributes & ATTR_TIMESTAMP_TYPE:
        max_timestamp = max(_NO_TIMESTAMP, *(record.timestamp for record in records))
    else:
        max_timestamp = batch.max_timestamp
    body = b"".join(
        _record(
            _wrap64(record.timestamp - base_timestamp),
            record.offset - batch.base_offset,
            record.key,
            record.value,
            [(key.encode("utf-8"), value) for key, value in record.headers],
        )
        for record in records
    )
    header = bytearray(HEADER.pack(
        batch.base_offset, RECORDS_OFFSET - LOG_OVERHEAD + len(body), batch.partition_leader_epoch, 2, 0,
        attributes, batch.last_offset_delta, base_timestamp, max_timestamp, batch.producer_id,
        batch.producer_epoch, batch.base_sequence, len(records),
    ))  # fmt: skip
    _CRC.pack_into(header, CRC_OFFSET, crc32c(bytes(header[ATTRIBUTES_OFFSET:]) + body))
    return bytes(header) + body


class _AbortedTransaction:
    """Kafka's AbortedTransactionMetadata: an aborted transaction being read, and the last
    offset of its batches seen so far in this pass (None: no batch of it is left)."""

    __slots__ = ("entry", "last_observed_batch_offset")

    def __init__(self, entry: AbortedTxn) -> None:
        self.entry = entry
        self.last_observed_batch_offset: int | None = None


class _TransactionMetadata:
    """Kafka's CleanedTransactionMetadata (LogCleaner.scala): the transactions the cleaner is
    reading through, batch by batch, from the aborted transactions of the ``.txnindex`` files
    (:meth:`add_aborted_transactions`, fed with ``log.collectAbortedTransactions``). It tells
    whether a data batch belongs to an aborted transaction (its records can go) and whether a
    marker can go (no batch of its transaction is left), and collects the cleaned segment's
    ``.txnindex``: the aborted transactions of which a batch was still seen."""

    def __init__(self) -> None:
        self.ongoing_committed: set[int] = set()
        self.ongoing_aborted: dict[int, _AbortedTransaction] = {}
        # A min-heap of the aborted transactions not yet reached, by first offset; each segment's
        # search may return one already read (its range overlaps two segments): it is taken once.
        self._aborted: list[tuple[int, int, int, AbortedTxn]] = []
        self._added: set[AbortedTxn] = set()
        #: The cleaned segment's index entries (Kafka's cleanedIndex); None while mapping offsets.
        self.cleaned_index: list[AbortedTxn] | None = None

    def add_aborted_transactions(self, entries: Iterable[AbortedTxn]) -> None:
        for entry in entries:
            if entry in self._added:
                continue
            self._added.add(entry)
            heapq.heappush(self._aborted, (entry.first_offset, entry.last_offset, entry.producer_id, entry))

    def _consume_aborted_up_to(self, offset: int) -> None:
        while self._aborted and self._aborted[0][0] <= offset:
            entry = heapq.heappop(self._aborted)[3]
            self.ongoing_aborted.setdefault(entry.producer_id, _AbortedTransaction(entry))

    def on_control_batch_read(self, batch: _Batch, raw: memoryview) -> bool:
        """Kafka's onControlBatchRead: whether the marker ``batch`` can be discarded. An ABORT
        stays while a batch of its transaction was seen in this pass (its entry then goes to
        the cleaned index), a COMMIT while one of its batches was; an empty control batch (a
        marker emptied before) can go; another control type stays."""
        self._consume_aborted_up_to(batch.last_offset)
        kind = control_type(raw, 0, batch.record_count)
        if kind is None:
            return True
        if kind == CONTROL_ABORT:
            aborted = self.ongoing_aborted.pop(batch.producer_id, None)
            if aborted is not None and aborted.last_observed_batch_offset is not None:
                if self.cleaned_index is not None:
                    self.cleaned_index.append(aborted.entry)
                return False
            return True
        if kind == CONTROL_COMMIT:
            if batch.producer_id in self.ongoing_committed:
                self.ongoing_committed.discard(batch.producer_id)
                return False
            return True
        return False

    def on_batch_read(self, batch: _Batch) -> bool:
        """Kafka's onBatchRead: whether the data ``batch`` belongs to an aborted transaction
        (then it can be discarded); a transactional batch of any other transaction keeps its
        COMMIT marker."""
        self._consume_aborted_up_to(batch.last_offset)
        if not batch.is_transactional:
            return False
        aborted = self.ongoing_aborted.get(batch.producer_id)
        if aborted is not None:
            aborted.last_observed_batch_offset = batch.last_offset
            return True
        self.ongoing_committed.add(batch.producer_id)
        return False


class _Pass:
    """The state of one cleaning pass: the offset map, the retention rules and the transactions
    read through (Kafka's Cleaner with one CleanedTransactionMetadata per pass)."""

    def __init__(self, log: PartitionLog, now_ms: int, delete_retention_ms: int, first_dirty: int, end: int) -> None:
        self.log = log
        self.now_ms = now_ms
        self.delete_retention_ms = delete_retention_ms
        self.first_dirty = first_dirty
        self.end = end
        self.offset_map: dict[bytes, int] = {}
        self.latest_offset = -1
        self.transactions = _TransactionMetadata()
        # lastRecordsOfActiveProducers, widened to every batch in each producer's window; a
        # producer with no batch left keeps its markers of its current epoch (its last epoch,
        # needed for fencing).
        table = log.producer_state
        self.producer_batches: set[tuple[int, int]] = set()
        self.marker_epochs: dict[int, int] = {}
        for producer_id in table.producer_ids().tolist():
            entry = table.entry(producer_id)
            if entry is None:
                continue
            if entry.batches:
                self.producer_batches.update((producer_id, kept.last_offset) for kept in entry.batches)
            else:
                self.marker_epochs[producer_id] = entry.producer_epoch
        self.records_read = self.records_retained = self.tombstones_removed = self.invalid_records = 0

    def build_offset_map(self, segments: list[LogSegment]) -> None:
        """Kafka's buildOffsetMap over [first dirty, end): each key's last offset, from
        non-transactional and committed transactional records; the records of aborted
        transactions (``collectAbortedTransactions``) and markers enter no map. The latest
        offset is the range's last (``updateLatestOffset``): every record below it is judged."""
        transactions = _TransactionMetadata()
        transactions.add_aborted_transactions(self.log.collect_aborted_transactions(self.first_dirty, self.end))
        for segment in segments:
            if segment.next_offset <= self.first_dirty or segment.base_offset >= self.end:
                continue
            self.latest_offset = self.end - 1
            with segment.batches_from(max(self.first_dirty, segment.base_offset), self.end) as view:
                data = bytes(view)
            for batch, raw in _batches(data):
                if batch.is_control:
                    transactions.on_control_batch_read(batch, raw)
                    continue
                if transactions.on_batch_read(batch) or batch.is_compressed:
                    continue
                for record in decode_records(raw):
                    if self.first_dirty <= record.offset < self.end and record.key is not None:
                        self.offset_map[record.key] = record.offset

    def _retain(self, batch: _Batch, record: Record) -> bool:
        """Kafka's Cleaner.shouldRetainRecord."""
        if record.offset > self.latest_offset:
            return True
        if record.key is None:
            self.invalid_records += 1
            return False
        if record.offset < self.offset_map.get(record.key, -1):
            return False
        horizon = batch.delete_horizon
        if record.value is None and horizon is not None and self.now_ms >= horizon:
            self.tombstones_removed += 1
            return False
        return True

    def _last_of_active_producer(self, batch: _Batch) -> bool:
        """Kafka's isBatchLastRecordOfProducer, widened to the producer's window."""
        if batch.producer_id < 0:
            return False
        if (batch.producer_id, batch.last_offset) in self.producer_batches:
            return True
        return batch.is_control and self.marker_epochs.get(batch.producer_id) == batch.producer_epoch

    def filter(self, data: bytes, keep_last: bool) -> bytes:
        """The batches of ``data`` (one segment) cleaned: Kafka's cleanInto filter
        (checkBatchRetention, shouldRetainRecord) through MemoryRecords.filterTo. The last batch
        stays, empty if need be, when ``keep_last``."""
        out: list[bytes] = []
        batches = list(_batches(data))
        for index, (batch, raw) in enumerate(batches):
            if batch.is_control:
                can_discard = self.transactions.on_control_batch_read(batch, raw)
                horizon = batch.delete_horizon
                discard_records = can_discard and horizon is not None and horizon <= self.now_ms
            else:
                can_discard = discard_records = self.transactions.on_batch_read(batch)
            self.records_read += batch.record_count
            retain_empty = self._last_of_active_producer(batch) or (keep_last and index == len(batches) - 1)
            if discard_records:
                if retain_empty:
                    out.append(_build_batch(batch, [], None))  # BatchRetention.RETAIN_EMPTY
                continue
            if batch.is_compressed:
                out.append(bytes(raw))
                self.records_retained += batch.record_count
                continue
            if batch.is_control:
                kept = decode_records(raw, control=True)
                # A marker whose transaction has no data left gets a delete horizon (KIP-534).
                set_horizon = can_discard and batch.delete_horizon is None
            else:
                records = decode_records(raw)
                kept = [record for record in records if self._retain(batch, record)]
                set_horizon = any(record.value is None for record in kept) and batch.delete_horizon is None
            self.records_retained += len(kept)
            if kept and len(kept) == batch.record_count and not set_horizon:
                out.append(bytes(raw))
            elif kept:
                horizon = self.now_ms + self.delete_retention_ms if set_horizon else batch.delete_horizon
                out.append(_build_batch(batch, kept, horizon))
            elif retain_empty:
                out.append(_build_batch(batch, [], None))  # BatchRetention.RETAIN_EMPTY
        return b"".join(out)


# -- a pass --------------------------------------------------------------------------------------


def _write_cleaned(directory: str, base_offset: int, data: bytes) -> str:
    """``<base>.log.cleaned`` holding ``data``, fsynced (Kafka: createNewCleanedSegment, flush)."""
    path = os.path.join(directory, segment_file_name(base_offset) + CLEANED_SUFFIX)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    descriptor = os.open(path, flags, 0o666)
    try:
        write_all(descriptor, data)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    fsync_directory(directory)
    return path


def clean_log(
    log: PartitionLog,
    *,
    now_ms: int | None = None,
    delete_retention_ms: int = DEFAULT_DELETE_RETENTION_MS,
    min_compaction_lag_ms: int = 0,
    min_cleanable_ratio: float = 0.0,
) -> CleanerStats | None:
    """One cleaning pass over ``log`` (Kafka's Cleaner.doClean); None when there is nothing
    dirty to clean or the dirty ratio is below ``min_cleanable_ratio`` (Kafka's
    ``min.cleanable.dirty.ratio``; 0 cleans whatever is dirty). ``now_ms`` defaults to the log's
    clock. The caller holds the log, as Kafka's cleaner holds the log's lock for the swap."""
    log._check_usable()
    now = log._clock() if now_ms is None else now_ms
    first_dirty, end = cleanable_offsets(log, now, min_compaction_lag_ms)
    if end <= first_dirty or dirty_ratio(log, first_dirty, end) < min_cleanable_ratio:
        return None
    segments = [segment for segment in log._local_log.segments[:-1] if segment.base_offset < end]
    if not segments:
        return None
    state = _Pass(log, now, delete_retention_ms, first_dirty, end)
    state.build_offset_map(segments)
    bytes_read = bytes_written = written = 0
    for group in group_segments_by_size(segments, log.segment_bytes):
        parts = []
        cleaned_index: list[AbortedTxn] = []
        state.transactions.cleaned_index = cleaned_index
        for position, segment in enumerate(group):
            # cleanSegments: the aborted transactions overlapping the whole segment, so the
            # cleaned index is complete.
            upper = group[position + 1].base_offset if position + 1 < len(group) else segment.next_offset
            state.transactions.add_aborted_transactions(log.collect_aborted_transactions(segment.base_offset, upper))
            with segment.batches_from(segment.base_offset) as view:
                data = bytes(view)
            bytes_read += len(data)
            parts.append(state.filter(data, keep_last=position == len(group) - 1))
        cleaned = b"".join(parts)
        bytes_written += len(cleaned)
        path = _write_cleaned(log.directory, group[0].base_offset, cleaned)
        log.replace_segments(path, group, cleaned_index)
        written += 1
    write_offsets(_checkpoint_path(log), {(log.topic, log.partition): end}, sync=True)
    stats = CleanerStats(
        first_dirty, end, len(segments), written, state.records_read, state.records_retained, bytes_read,
        bytes_written, state.tombstones_removed, state.invalid_records,
    )  # fmt: skip
    logger.info("log %s: cleaned %s", log.directory, stats)
    return stats
