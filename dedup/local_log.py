"""The segments of one partition replica on disk: Kafka's LocalLog, under :mod:`dedup.log`.

Kafka splits its partition log in two, ``UnifiedLog`` on top of ``LocalLog`` (both in
core/src/main/scala/kafka/log/ until they moved to
storage/src/main/java/org/apache/kafka/storage/internals/log/, LocalLog.java by KAFKA-14483 and
UnifiedLog.java by KAFKA-14484), and dedup follows the same seam:
:class:`LocalLog` is the list of ``%020d.log`` segments (:mod:`dedup.segment`) with their
``.txnindex`` files, and knows nothing of producers, transactions, snapshots or the high
watermark; :class:`dedup.log.PartitionLog` (Kafka's UnifiedLog) holds one and decides what
happens to it. Here, as in Kafka's LocalLog:

- the segment list (Kafka's ``LogSegments``), the log end offset and the size in bytes;
- :meth:`~LocalLog.roll` a new active segment at the log end (``LocalLog.roll``);
- :meth:`~LocalLog.read_region` the batches from an offset as a region of one segment file
  (``LocalLog.read``) and :meth:`~LocalLog.collect_aborted_transactions` from the segments'
  ``.txnindex`` files (``LocalLog.collectAbortedTransactions``);
- :meth:`~LocalLog.remove_and_delete_segments` (``removeAndDeleteSegments``),
  :meth:`~LocalLog.replace_segments` (``LocalLog.replaceSegments``, the cleaner's swap),
  :meth:`~LocalLog.truncate_to` and :meth:`~LocalLog.truncate_fully_and_start_at` (the last two
  return the segments they deleted): the partition log deletes the deleted segments' producer
  snapshots after them (``UnifiedLog.deleteProducerSnapshots``);
- :meth:`~LocalLog.flush` of the segments, the :attr:`~LocalLog.recovery_point` (offsets below
  it are on disk) and :meth:`~LocalLog.close` of the files.

What stays with the partition log, as in Kafka's UnifiedLog: when to roll (``maybeRoll``), the
producer snapshot a roll takes, which segments retention deletes (``deletableSegments``), the
orchestration of a truncation, the checkpoint files and taking the log offline after a failed
write (Kafka's ``maybeHandleIOException``): the methods here raise ``OSError`` as they get it.
So does the write of a batch: Kafka's ``LocalLog.append`` is the active segment's append plus
the log end update, and dedup's append paths call the active segment (``segments[-1]``)
directly, so that a batch costs no extra call.

Where dedup differs from Kafka: there are no ``.index``/``.timeindex`` files (the sparse offset
index is rebuilt in memory, see :mod:`dedup.segment`) and a deleted segment is removed at once
(Kafka renames it ``.deleted`` and removes it later).
"""

from __future__ import annotations

import os
from bisect import bisect_right

from ._files import create_temporary, write_all
from ._files import fsync_directory as _fsync_directory
from .segment import FileRegion, LogSegment, segment_file_name
from .transaction_index import AbortedTxn, collect_aborted_transactions, txn_index_file_name

__all__ = ["LocalLog"]


def _write_txn_index(directory: str, base_offset: int, entries: list[AbortedTxn]) -> str:
    """A fsynced temporary file beside ``<base_offset>.txnindex`` holding ``entries``; returns its path."""
    descriptor, temporary = create_temporary(directory, txn_index_file_name(base_offset))
    try:
        write_all(descriptor, b"".join(entry.to_bytes() for entry in entries))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return temporary


class LocalLog:
    """The segments of the partition replica in ``directory`` (Kafka's LocalLog).

    Made empty; :func:`dedup.recovery.load` (Kafka's LogLoader) fills it with
    :meth:`add_segment` and sets the :attr:`recovery_point`. From then on it holds at least one
    segment, the last being the active one. Not thread-safe: the partition log calls it under
    what would be Kafka's log lock.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        #: The segments, oldest first; the last is the active one (Kafka's LogSegments).
        self.segments: list[LogSegment] = []
        #: Their base offsets, in the same order (the keys of Kafka's LogSegments map).
        self.base_offsets: list[int] = []
        #: Kafka's LocalLog.recoveryPoint: offsets below it are fsynced (or were complete when
        #: the last segment rolled); recovery after a crash checks the segments from it on.
        self.recovery_point = 0

    @property
    def log_end_offset(self) -> int:
        """The offset after the last batch (Kafka's LocalLog.logEndOffset)."""
        return self.segments[-1].next_offset

    @property
    def size_bytes(self) -> int:
        """The segments' bytes together (Kafka's LogSegments.sizeInBytes)."""
        return sum(segment.size for segment in self.segments)

    def add_segment(self, segment: LogSegment) -> None:
        """Put ``segment`` after the last one (Kafka's LogSegments.add, as LogLoader loads them)."""
        self.segments.append(segment)
        self.base_offsets.append(segment.base_offset)

    def roll(self) -> LogSegment:
        """A new, empty active segment at the log end offset (Kafka's LocalLog.roll); returns it.
        The caller decides when (UnifiedLog.maybeRoll), and flushes the rolled one."""
        segment = LogSegment.create(self.directory, self.log_end_offset)
        self.add_segment(segment)
        return segment

    def flush(self) -> None:
        """fsync every segment and its ``.txnindex``. The caller moves the recovery point."""
        for segment in self.segments:
            segment.flush()

    # -- reading -------------------------------------------------------------------------------

    def read_region(
        self, offset: int, max_bytes: int, max_offset: int | None, *, min_one_batch: bool
    ) -> FileRegion | None:
        """Kafka's LocalLog.read, for an ``offset`` the caller checked is within the log:
        whole batches from the one holding ``offset``, from one segment (the first from it on
        that has any), at most ``max_bytes`` but at least one batch if ``min_one_batch``, none
        at or past ``max_offset``; as a :class:`~dedup.segment.FileRegion` of the segment file,
        None for nothing."""
        index = bisect_right(self.base_offsets, offset) - 1
        while index < len(self.segments):
            segment = self.segments[index]
            if max_offset is not None and segment.base_offset >= max_offset:
                return None
            position, size = segment.slice(max(offset, segment.base_offset), max_bytes, max_offset,
                                           min_one_batch=min_one_batch)  # fmt: skip
            if size:
                end = position + size
                next_offset = segment.next_offset if end >= segment.size else segment._batch_prefix(end)[0]
                return FileRegion(segment.fd, position, size, next_offset)
            if segment.position_of(max(offset, segment.base_offset)) < segment.size:
                return None  # a first batch larger than max_bytes, without min_one_batch
            index += 1
        return None

    def collect_aborted_transactions(self, fetch_offset: int, upper_bound_offset: int) -> list[AbortedTxn]:
        """Kafka's LocalLog.collectAbortedTransactions: the aborted transactions that overlap
        ``[fetch_offset, upper_bound_offset)``, from the .txnindex of the segment holding
        ``fetch_offset`` and of the later ones until a search is complete."""
        index = max(bisect_right(self.base_offsets, fetch_offset) - 1, 0)
        return collect_aborted_transactions(
            (segment.txn_index for segment in self.segments[index:]), fetch_offset, upper_bound_offset
        )

    # -- deleting, replacing and truncating segments -------------------------------------------

    def remove_and_delete_segments(self, segments: list[LogSegment]) -> None:
        """Kafka's removeAndDeleteSegments: each of ``segments`` (never all of them: one must
        stay) leaves the list, then its files are deleted. Its producer snapshot is the
        caller's."""
        for segment in segments:
            index = self.segments.index(segment)
            del self.segments[index], self.base_offsets[index]
            segment.delete()

    def replace_segments(
        self, cleaned_path: str, old_segments: list[LogSegment], txn_entries: list[AbortedTxn] | None
    ) -> LogSegment:
        """Kafka's LocalLog.replaceSegments: swap the segment written at ``cleaned_path``
        (``<base>.log.cleaned``, fsynced, its base the first old segment's) in for
        ``old_segments`` (consecutive, inactive): rename it ``.swap``, delete the old segments,
        rename the swap ``<base>.log``. A crash before the first rename leaves the old segments
        (recovery deletes ``.cleaned``), after it the new one (recovery completes the swap:
        :mod:`dedup.recovery`). The new segment's ``.txnindex`` holds ``txn_entries``, or the
        old segments' entries when None. ``ValueError`` before any file is touched if the old
        segments are not consecutive inactive segments of this log. Returns the new segment."""
        base = old_segments[0].base_offset
        index = self.base_offsets.index(base)
        if self.segments[index : index + len(old_segments)] != old_segments or index + len(old_segments) >= len(
            self.segments
        ):
            raise ValueError("replace_segments takes consecutive inactive segments of this log")
        final = os.path.join(self.directory, segment_file_name(base))
        swap = final + ".swap"
        # Without txn_entries the new segment holds the old ones' markers, so its .txnindex is
        # theirs, in order. Written aside first, put in place before the swap completes (a crash
        # in between leaves it missing: recovery rebuilds it).
        if txn_entries is None:
            txn_entries = [entry for segment in old_segments for entry in segment.txn_index.entries]
        index_temporary = _write_txn_index(self.directory, base, txn_entries)
        os.replace(cleaned_path, swap)
        _fsync_directory(self.directory)
        for segment in old_segments:
            segment.delete()
        os.replace(index_temporary, os.path.join(self.directory, txn_index_file_name(base)))
        os.replace(swap, final)
        _fsync_directory(self.directory)
        segment = LogSegment.open(self.directory, base)
        self.segments[index : index + len(old_segments)] = [segment]
        self.base_offsets[index : index + len(old_segments)] = [base]
        return segment

    def truncate_to(self, offset: int) -> list[LogSegment]:
        """Kafka's LocalLog.truncateTo, for an ``offset`` at or above the first segment's base:
        the segments above ``offset`` are deleted (newest first) and the batches at or above it
        cut from the last one left (a batch that straddles it goes whole); the recovery point
        goes no further than the new log end (LocalLog.updateLogEndOffset). Returns the deleted
        segments."""
        deleted = []
        while len(self.segments) > 1 and self.segments[-1].base_offset > offset:
            segment = self.segments.pop()
            self.base_offsets.pop()
            segment.delete()
            deleted.append(segment)
        self.segments[-1].truncate_to(offset)
        self.recovery_point = min(self.recovery_point, self.log_end_offset)
        return deleted

    def truncate_fully_and_start_at(self, offset: int) -> list[LogSegment]:
        """Kafka's LocalLog.truncateFullyAndStartAt: every segment is deleted and an empty one
        started at ``offset``, which becomes the recovery point (nothing below it is left to
        recover). Returns the deleted segments."""
        deleted = self.segments
        for segment in deleted:
            segment.delete()
        self.segments = [LogSegment.create(self.directory, offset)]
        self.base_offsets = [offset]
        self.recovery_point = offset
        return deleted

    # -- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        """Release every segment's files without a flush (Kafka's LocalLog.close and
        closeHandlers: the flush, if any, is the caller's). Closing twice does nothing more."""
        for segment in self.segments:
            segment.close()
