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
   of the high watermark (Kafka: the last stable offset, which is at or below it), the active
   segment's base offset (the active segment is never cleaned) and, with ``min.compaction.lag.ms``
   (KIP-58), the base of the first segment with a record younger than the lag.
2. **Offset map** (``buildOffsetMap``): key -> offset of its last record in the dirty range. Kafka's
   map is a fixed-size hash of key digests (``SkimpyOffsetMap``) that may cover only part of the
   range; dedup's is a dict of the keys themselves and always covers all of it.
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
  producer-state table still holds, the batch with its last data offset (or its last marker), so
  a replay of the log after a lost snapshot finds the producer's last sequence. dedup keeps every
  batch in each producer's duplicate window (a superset: the ``"full"`` snapshot format remembers
  the whole window, and a replay must find it too). The table itself is not touched: it is rebuilt
  from snapshots, which cleaning does not change.
- **Transactional and control batches, and compressed batches**, are copied as they are, and
  their records do not enter the offset map (they never shadow an older record). Kafka cleans
  them, tracking aborted transactions (``CleanedTransactionMetadata``) and markers; dedup leaves
  that to later: nothing it keeps is wrong, it keeps more than Kafka would.
- **Each group keeps its last batch** (empty if all its records go). Kafka keeps the last batch of
  the whole round only (``upperBoundOffsetOfCleaningRound``); keeping each group's makes the
  ``.swap`` file's own offset range name every segment it replaces, which is how ``LogLoader``
  finds the old segments to delete when it completes a swap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
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
    .cleanableOffsets). Uncleanable: the active segment, anything at or past the high watermark,
    and with ``min_compaction_lag_ms`` > 0 the first segment holding a record younger than it."""
    first_dirty = first_dirty_offset(log)
    segments = log._segments
    candidates = [log.high_watermark, segments[-1].base_offset]
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
    for segment in log._segments:
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
    def cleanable(self) -> bool:
        """A batch whose records the cleaner filters: dedup leaves transactional, control and
        compressed batches as they are (see the module's docstring)."""
        return not self.attributes & (ATTR_TRANSACTIONAL | ATTR_CONTROL | ATTR_COMPRESSION_MASK)


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
    attributes = batch.attributes & ~ATTR_DELETE_HORIZON
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


class _Pass:
    """The state of one cleaning pass: the offset map and the retention rules."""

    def __init__(self, log: PartitionLog, now_ms: int, delete_retention_ms: int, first_dirty: int, end: int) -> None:
        self.now_ms = now_ms
        self.delete_retention_ms = delete_retention_ms
        self.first_dirty = first_dirty
        self.end = end
        self.offset_map: dict[bytes, int] = {}
        self.latest_offset = -1
        # lastRecordsOfActiveProducers, widened to every batch in each producer's window.
        table = log.producer_state
        self.producer_batches: set[tuple[int, int]] = set()
        for producer_id in table.producer_ids().tolist():
            entry = table.entry(producer_id)
            if entry is not None:
                self.producer_batches.update((producer_id, kept.last_offset) for kept in entry.batches)
        self.records_read = self.records_retained = self.tombstones_removed = self.invalid_records = 0

    def build_offset_map(self, segments: list[LogSegment]) -> None:
        """Kafka's buildOffsetMap over [first dirty, end): each key's last offset."""
        for segment in segments:
            if segment.next_offset <= self.first_dirty or segment.base_offset >= self.end:
                continue
            with segment.batches_from(max(self.first_dirty, segment.base_offset), self.end) as view:
                data = bytes(view)
            for batch, raw in _batches(data):
                if not batch.cleanable:
                    continue
                for record in decode_records(raw):
                    if self.first_dirty <= record.offset < self.end and record.key is not None:
                        self.offset_map[record.key] = record.offset
                        self.latest_offset = max(self.latest_offset, record.offset)

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

    def filter(self, data: bytes, keep_last: bool) -> bytes:
        """The batches of ``data`` (one segment) cleaned (MemoryRecords.filterTo); the last batch
        stays, empty if need be, when ``keep_last``."""
        out: list[bytes] = []
        batches = list(_batches(data))
        for index, (batch, raw) in enumerate(batches):
            if not batch.cleanable:
                out.append(bytes(raw))
                continue
            records = decode_records(raw)
            self.records_read += len(records)
            kept = [record for record in records if self._retain(batch, record)]
            self.records_retained += len(kept)
            tombstones = any(record.value is None for record in kept)
            set_horizon = tombstones and batch.delete_horizon is None
            if kept and len(kept) == len(records) and not set_horizon:
                out.append(bytes(raw))
            elif kept:
                horizon = self.now_ms + self.delete_retention_ms if set_horizon else batch.delete_horizon
                out.append(_build_batch(batch, kept, horizon))
            elif (batch.producer_id >= 0 and (batch.producer_id, batch.last_offset) in self.producer_batches) or (
                keep_last and index == len(batches) - 1
            ):
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
    segments = [segment for segment in log._segments[:-1] if segment.base_offset < end]
    if not segments:
        return None
    state = _Pass(log, now, delete_retention_ms, first_dirty, end)
    state.build_offset_map(segments)
    bytes_read = bytes_written = written = 0
    for group in group_segments_by_size(segments, log.segment_bytes):
        parts = []
        for position, segment in enumerate(group):
            with segment.batches_from(segment.base_offset) as view:
                data = bytes(view)
            bytes_read += len(data)
            parts.append(state.filter(data, keep_last=position == len(group) - 1))
        cleaned = b"".join(parts)
        bytes_written += len(cleaned)
        path = _write_cleaned(log.directory, group[0].base_offset, cleaned)
        log.replace_segments(path, group)
        written += 1
    write_offsets(_checkpoint_path(log), {(log.topic, log.partition): end}, sync=True)
    stats = CleanerStats(
        first_dirty, end, len(segments), written, state.records_read, state.records_retained, bytes_read,
        bytes_written, state.tombstones_removed, state.invalid_records,
    )  # fmt: skip
    logger.info("log %s: cleaned %s", log.directory, stats)
    return stats
