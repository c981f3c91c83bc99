"""Opening a partition directory: Kafka's LogLoader, and the rebuild of the producer state
that a truncation shares with it (spec §5; snapshots chosen, set aside and deleted as in
§4.4 and §4.6).

- :func:`load` is what ``PartitionLog(directory)`` runs (Kafka's ``LogLoader.load``, spec
  §5.4): leftovers of interrupted writes removed, the segments opened, those from the
  recovery point on checked batch by batch after an unclean shutdown and a torn tail cut
  off, the offsets read back from the checkpoint files, and the producer state rebuilt. It
  returns a :class:`LoadReport`.
- :func:`rebuild_producer_state` is Kafka's ``UnifiedLog.rebuildProducerState`` (§5.3) with
  ``ProducerStateManager.truncateAndReload`` (§5.2) and ``loadFromSnapshot`` (§5.1): the
  newest valid snapshot at or below the target, then a replay (origin REPLICATION, §2.4) of
  the batches after it. ``PartitionLog.truncate_to`` calls it too (§5.5).

These functions are the loading half of :class:`dedup.log.PartitionLog`, kept apart as
Kafka keeps LogLoader apart from UnifiedLog: they work on the log's segments (its
:class:`~dedup.local_log.LocalLog`, which :func:`load` fills as LogLoader fills Kafka's
LogSegments), producer-state table and snapshot files, and the log calls them; nothing else
should.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ._files import fsync_directory as _fsync_directory
from ._types import Origin
from .checkpoints import (
    LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
    REPLICATION_OFFSET_CHECKPOINT,
    read_offsets,
)
from .errors import CorruptCheckpointError, CorruptRecordError, CorruptSnapshotError
from .records import append_batches, scan_batches
from .segment import LogSegment, segment_file_name
from .snapshot import read_snapshot
from .transaction_index import TXN_INDEX_SUFFIX, track_transactions, txn_index_file_name

if TYPE_CHECKING:
    from .log import PartitionLog

__all__ = [
    "CLEAN_SHUTDOWN_FILE",
    "CORRUPT_SUFFIX",
    "LoadReport",
    "load",
    "rebuild_producer_state",
    "rebuild_transaction_indexes",
]

logger = logging.getLogger("dedup.log")  # the log's own logger: loading is part of the log

#: Kafka's LogLoader.CleanShutdownFile: written by a clean close, removed on opening.
CLEAN_SHUTDOWN_FILE = ".kafka_cleanshutdown"
#: A snapshot that failed validation is renamed to this suffix and kept for inspection
#: (Kafka deletes it, spec §4.4; either way it is never read again).
CORRUPT_SUFFIX = ".corrupt"
_SEGMENT_NAME = re.compile(r"([0-9]{20})\.log")
_CLEANED_NAME = re.compile(r"([0-9]{20})\.log\.cleaned")
_SWAP_NAME = re.compile(r"([0-9]{20})\.log\.swap")
_TXN_INDEX_NAME = re.compile(r"([0-9]{20})" + re.escape(TXN_INDEX_SUFFIX))


class LoadReport(NamedTuple):
    """How opening the directory went: what recovery found and did, and how long it took:
    ``log_load_ms`` to open the segments (and check those that needed it), then the producer
    state's two phases as Kafka logs them ("Producer state recovery took X ms for snapshot
    load and Y ms for segment recovery": the replay of the batches after the snapshot)."""

    clean_shutdown: bool
    recovered_segments: int
    truncated_bytes: int
    deleted_segments: tuple[int, ...]
    snapshot_offset: int | None
    snapshots_set_aside: tuple[str, ...]
    replayed_batches: int
    replayed_bytes: int
    log_load_ms: float
    snapshot_load_ms: float
    segment_recovery_ms: float


class _Rebuilt(NamedTuple):
    """What one rebuild of the producer state did (for the LoadReport)."""

    snapshot_offset: int | None
    snapshots_set_aside: list[str]
    replayed_batches: int
    replayed_bytes: int
    snapshot_load_seconds: float


class _ReplayError(Exception):
    """A batch that a replay refused: the segment holding it needs recovery."""

    def __init__(self, segment: LogSegment, error: Exception) -> None:
        super().__init__(str(error))
        self.segment = segment
        self.error = error


def load(log: PartitionLog) -> LoadReport:
    """Kafka's LogLoader.load (spec §5.4) on the freshly made ``log``: its segments, offsets,
    leader epochs and producer-state table come from the directory."""
    started = time.perf_counter()
    directory = log.directory
    marker = os.path.join(directory, CLEAN_SHUTDOWN_FILE)
    clean = os.path.exists(marker)
    if clean:  # whatever happens from here on, the next open is unclean until close()
        os.unlink(marker)
        _fsync_directory(directory)
    _remove_temporary_files(directory)
    local_log = log._local_log
    local_log.recovery_point = _read_checkpoint(log, RECOVERY_POINT_CHECKPOINT) or 0
    bases = sorted(int(m.group(1)) for m in map(_SEGMENT_NAME.fullmatch, os.listdir(directory)) if m)
    recovered = truncated = 0
    deleted: list[int] = []
    for position, base in enumerate(bases):
        if deleted:
            break
        must_recover = not clean and base >= local_log.recovery_point
        try:
            segment = LogSegment.open(directory, base)
        except CorruptRecordError:
            must_recover = True  # torn or corrupt even after a clean shutdown: Kafka recovers it
            segment = LogSegment.open_for_recovery(directory, base)
        cut = 0
        if must_recover:
            cut = segment.recover()
            segment.txn_index_needs_rebuild = True  # Kafka's LogSegment.recover rebuilds the .txnindex
            recovered += 1
            truncated += cut
        if local_log.segments and segment.base_offset < local_log.log_end_offset:
            cut = max(cut, 1)  # overlapping offsets: keep the older segment, drop the rest
            deleted.append(segment.base_offset)
            segment.delete()
        else:
            local_log.add_segment(segment)
        if cut:
            logger.warning("log %s: segment %d cut by %d bytes at recovery", directory, base, cut)
            for later in bases[position + 1 :]:
                _delete_file(os.path.join(directory, segment_file_name(later)))
                _delete_file(os.path.join(directory, txn_index_file_name(later)))
                deleted.append(later)
    log_start = _read_checkpoint(log, LOG_START_OFFSET_CHECKPOINT) or 0
    if not local_log.segments:
        local_log.add_segment(LogSegment.create(directory, log_start))
    log._log_start_offset = max(log_start, local_log.segments[0].base_offset)
    if log._log_start_offset > log.log_end_offset:  # files deleted behind our back (§5.4 step 3)
        start = log._log_start_offset
        log._log_start_offset = log.log_end_offset
        log.truncate_fully_and_start_at(start)
    end = log.log_end_offset
    log.leader_epochs.truncate_from_end(end)
    log.leader_epochs.truncate_from_start(log._log_start_offset)
    for offset in deleted:
        log._delete_snapshot(offset)

    _remove_stray_txn_indexes(log)
    loaded = time.perf_counter()
    _remove_stray_snapshots(log)
    rebuilt = _rebuild_with_recovery(log, end, clean)
    rebuild_transaction_indexes(log)
    finished = time.perf_counter()
    snapshot_time = rebuilt.snapshot_load_seconds
    logger.info(
        "log %s: producer state recovery took %.1f ms for snapshot load and %.1f ms for segment recovery",
        directory,
        snapshot_time * 1000,
        (finished - loaded - snapshot_time) * 1000,
    )
    high_watermark = _read_checkpoint(log, REPLICATION_OFFSET_CHECKPOINT) or 0
    log._high_watermark = min(max(high_watermark, log._log_start_offset), end)
    local_log.recovery_point = min(local_log.recovery_point, end)
    if not clean:
        log._write_checkpoints(sync=False)
    return LoadReport(
        clean_shutdown=clean,
        recovered_segments=recovered,
        truncated_bytes=truncated,
        deleted_segments=tuple(deleted),
        snapshot_offset=rebuilt.snapshot_offset,
        snapshots_set_aside=tuple(rebuilt.snapshots_set_aside),
        replayed_batches=rebuilt.replayed_batches,
        replayed_bytes=rebuilt.replayed_bytes,
        log_load_ms=round((loaded - started) * 1000, 3),
        snapshot_load_ms=round(snapshot_time * 1000, 3),
        segment_recovery_ms=round((finished - loaded - snapshot_time) * 1000, 3),
    )


def _read_checkpoint(log: PartitionLog, name: str) -> int | None:
    """This partition's offset in a checkpoint file, None if absent. A corrupt file (they
    are written atomically, so only outside damage does this) counts as absent, which is
    safe: no recovery point recovers every segment, no high watermark starts at the log
    start, and the log start comes from the first segment."""
    try:
        return read_offsets(os.path.join(log.directory, name)).get((log.topic, log.partition))
    except CorruptCheckpointError as error:
        logger.warning("log %s: ignoring a corrupt checkpoint: %s", log.directory, error)
        return None


def _remove_temporary_files(directory: str) -> None:
    """Kafka's LogLoader.removeTempFilesAndCollectSwapFiles and completion of swaps (§5.4 step
    1): ``.deleted`` leftovers go; a ``.cleaned`` segment (a cleaning interrupted before its
    swap began) goes, with any ``.swap`` at or above the smallest ``.cleaned`` base offset
    (KAFKA-6264); every other ``<base>.log.swap`` is a swap the cleaner began
    (:meth:`PartitionLog.replace_segments`): the segments whose base offsets fall in the swap
    files' offset range are deleted and the swap renamed ``<base>.log``, as Kafka's LogLoader
    does. dedup's leftovers are also the temporary files of an interrupted snapshot or
    checkpoint write (``.NAME.<hex>.tmp``)."""
    names = os.listdir(directory)
    cleaned = [int(m.group(1)) for m in map(_CLEANED_NAME.fullmatch, names) if m]
    smallest_cleaned = min(cleaned, default=None)
    swaps = []
    for name in names:
        match = _SWAP_NAME.fullmatch(name)
        if match and (smallest_cleaned is None or int(match.group(1)) < smallest_cleaned):
            swaps.append(int(match.group(1)))
        elif name.endswith((".deleted", ".cleaned", ".swap")) or (name.startswith(".") and name.endswith(".tmp")):
            _delete_file(os.path.join(directory, name))
    if not swaps:
        return
    low, high = min(swaps), max(_swap_next_offset(directory, base) for base in swaps)
    for name in os.listdir(directory):
        match = _SEGMENT_NAME.fullmatch(name)
        if match and low <= int(match.group(1)) < high:
            logger.info("log %s: deleting segment %s replaced by an interrupted swap", directory, name)
            _delete_file(os.path.join(directory, name))
        # The replaced segments' .txnindex files go too, and the swapped-in segment's may be
        # an old one's or half written: missing, it is rebuilt from the batches.
        match = _TXN_INDEX_NAME.fullmatch(name)
        if match and low <= int(match.group(1)) < high:
            _delete_file(os.path.join(directory, name))
    for base in swaps:
        final = os.path.join(directory, segment_file_name(base))
        os.replace(final + ".swap", final)
    _fsync_directory(directory)


def _swap_next_offset(directory: str, base: int) -> int:
    """The offset after the last batch of ``<base>.log.swap`` (Kafka's readNextOffset). The
    swap was fsynced before it was named ``.swap``: it holds whole batches."""
    with open(os.path.join(directory, segment_file_name(base) + ".swap"), "rb") as handle:
        headers = scan_batches(handle.read(), tail="ignore")
    if not len(headers):
        return base
    return int(headers["base_offset"][-1]) + int(headers["last_offset_delta"][-1]) + 1


def _remove_stray_txn_indexes(log: PartitionLog) -> None:
    """A ``.txnindex`` whose segment is gone (a crash between the two deletions) goes too:
    a new segment at that base must not inherit its entries."""
    bases = set(log._local_log.base_offsets)
    for name in os.listdir(log.directory):
        match = _TXN_INDEX_NAME.fullmatch(name)
        if match and int(match.group(1)) not in bases:
            _delete_file(os.path.join(log.directory, name))


def rebuild_transaction_indexes(log: PartitionLog) -> int:
    """Rebuild every ``.txnindex`` flagged as missing, corrupt or belonging to a recovered
    segment from the batches (Kafka's LogSegment.recover with LogLoader's recoverSegment). A
    transaction can start segments before its marker (TransactionIndex's class comment:
    "recovering the index therefore requires scanning the earlier segments"), so the batch
    headers are scanned from the first segment through the last flagged one, only control
    batches decoded. Returns how many indexes were rebuilt."""
    segments = log._local_log.segments
    flagged = [i for i, segment in enumerate(segments) if segment.txn_index_needs_rebuild]
    if not flagged:
        return 0
    ongoing: dict[int, int] = {}
    for segment in segments[: flagged[-1] + 1]:
        with segment.batches_from(segment.base_offset) as view:
            completed = track_transactions(view, scan_batches(view), ongoing) if len(view) else []
        if segment.txn_index_needs_rebuild:
            segment.txn_index.reset(entry for entry, aborted in completed if aborted)
            segment.txn_index.flush()
            segment.txn_index_needs_rebuild = False
            logger.info("log %s: rebuilt the transaction index of segment %d", log.directory, segment.base_offset)
    return len(flagged)


def _remove_stray_snapshots(log: PartitionLog) -> None:
    """Kafka's removeStraySnapshots (§4.6): a snapshot not at a segment base offset is a
    stray; only the largest stray survives, and only if it is at or above the last segment's
    base offset (the clean-shutdown snapshot at the log end)."""
    bases = set(log._local_log.base_offsets)
    strays = [offset for offset in log.snapshot_offsets() if offset not in bases]
    keep = strays[-1] if strays and strays[-1] >= log._local_log.base_offsets[-1] else None
    for offset in strays:
        if offset != keep:
            log._delete_snapshot(offset)


def _rebuild_with_recovery(log: PartitionLog, end: int, clean: bool) -> _Rebuilt:
    """The rebuild; if a replayed batch turns out corrupt (a clean shutdown does not
    check CRCs up front), the segment holding it is recovered and the rebuild redone."""
    while True:
        try:
            return rebuild_producer_state(log, end, clean=clean)
        except _ReplayError as error:
            segment = error.segment
            logger.warning(
                "log %s: replay found a corrupt batch in segment %d: %s; recovering it",
                log.directory,
                segment.base_offset,
                error,
            )
            segments = log._local_log.segments
            later = segments[segments.index(segment) + 1 :]
            segment.txn_index_needs_rebuild = True
            if not segment.recover():
                # Sound bytes the table refuses: Kafka's load fails too. Never cut them.
                raise error.error from None
            log._local_log.remove_and_delete_segments(later)
            for deleted in later:
                log._delete_snapshot(deleted.base_offset)
            end = log.log_end_offset
            log.leader_epochs.truncate_from_end(end)
            log._table = log._new_table()
            log._last_snapshot_offset = 0
            clean = False


def rebuild_producer_state(log: PartitionLog, target: int, *, clean: bool = False) -> _Rebuilt:
    """Kafka's rebuildProducerState (spec §5.3) with truncateAndReload (§5.2): ``log``'s
    table becomes the producer state at offset ``target``."""
    started = time.perf_counter()
    existing = log.snapshot_offsets()
    if clean and not existing:
        # Kafka's fast path (KAFKA-5435): a clean shutdown with no snapshot means the log
        # had no producer state to keep; write the snapshots without scanning the log.
        log._table = log._new_table()
        log._table.update_map_end_offset(target)
        log._last_snapshot_offset = 0
        log.take_snapshot(sync=False)
        return _Rebuilt(None, [], 0, 0, time.perf_counter() - started)
    table = log._table
    was_empty = len(table) == 0 and table.map_end_offset >= target
    snapshot_offset, set_aside = _truncate_and_reload(log, target)
    loaded = time.perf_counter() - started
    table = log._table
    batches = replayed = 0
    if was_empty and target > table.map_end_offset:
        # Kafka skips this replay too (UnifiedLog.rebuildProducerState's isEmptyBeforeTruncation),
        # also when the range opens or closes transactions: recorded, as the open ones are lost.
        log.skipped_replays.append((table.map_end_offset, target))
        logger.info("log %s: Kafka's empty-before-truncation shortcut skips the replay of [%d, %d)",
                    log.directory, table.map_end_offset, target)  # fmt: skip
    if target > table.map_end_offset and not was_empty:
        to_snapshot = {target, *log._local_log.base_offsets[-2:]}
        for segment in log._local_log.segments:
            if segment.next_offset <= table.map_end_offset or segment.base_offset >= target:
                continue
            start = max(segment.base_offset, table.map_end_offset, log.log_start_offset)
            table.update_map_end_offset(start)
            if segment.base_offset in to_snapshot:
                log.take_snapshot(sync=False)
            with segment.batches_from(start, target) as view:
                try:
                    result = append_batches(table, view, origin=Origin.REPLICATION, log_end_offset=start)
                except CorruptRecordError as error:
                    raise _ReplayError(segment, error) from error
                refused = np.flatnonzero(result.error_codes)
                if len(refused):
                    raise _ReplayError(segment, result.errors[int(refused[0])])
                batches += len(result.error_codes)
                replayed += len(view)
    table.update_map_end_offset(max(target, table.map_end_offset))
    log.take_snapshot(sync=False)
    return _Rebuilt(snapshot_offset, set_aside, batches, replayed, loaded)


def _truncate_and_reload(log: PartitionLog, target: int) -> tuple[int | None, list[str]]:
    """Kafka's truncateAndReload (spec §5.2): delete the snapshots above ``target`` or at
    or below the log start offset; unless the table is already at ``target``, start over
    from the newest remaining valid snapshot (a corrupt one is set aside and the next
    older tried, §5.1), dropping producers that expired meanwhile."""
    for offset in log.snapshot_offsets():
        if offset > target or offset <= log.log_start_offset:
            log._delete_snapshot(offset)
    if log._table.map_end_offset == target:
        return None, []
    set_aside: list[str] = []
    for offset in reversed(log.snapshot_offsets()):
        path = log.snapshot_path(offset)
        try:
            table = read_snapshot(path, window=log.window, table_class=log._table_class)
            if table.map_end_offset != offset:
                raise CorruptSnapshotError(
                    f"snapshot {path}: map end offset {table.map_end_offset} differs from its name's {offset}"
                )
        except (CorruptSnapshotError, ValueError) as error:
            logger.warning("log %s: snapshot %s is unusable, set aside: %s", log.directory, path, error)
            os.replace(path, path + CORRUPT_SUFFIX)
            set_aside.append(os.path.basename(path))
            continue
        table.remove_expired(log._clock(), log.producer_id_expiration_ms)
        table.max_producers = log.max_producers  # (evicts down to it: the snapshot may hold more)
        log._table = table
        log._last_snapshot_offset = offset
        return offset, set_aside
    log._table = log._new_table()
    log._table.update_map_end_offset(log.log_start_offset)
    log._last_snapshot_offset = log.log_start_offset
    return None, set_aside


def _delete_file(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
