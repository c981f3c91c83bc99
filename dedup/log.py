"""One partition replica on disk: Kafka's UnifiedLog on top of the producer-state table.

A :class:`PartitionLog` is a directory of ``%020d.log`` segments (real v2 batches, see
:mod:`dedup.segment`), producer state snapshots (``%020d.snapshot``, spec §4) and Kafka's
small checkpoint files (:mod:`dedup.checkpoints`). This file holds what the log does once it
is open: it appends as a partition leader (:meth:`~PartitionLog.append_as_leader`, spec §2.1,
§3.1-§3.2) or follower (:meth:`~PartitionLog.append_as_follower`, §3.4) in Kafka's order:
scan and validate, answer a duplicate with its original offsets, assign offsets, write, and
only then update the producer-state table, so a failed write leaves the table as it was. It
keeps the high watermark and the leader epochs, takes snapshots when it rolls a segment
(§4.5), decides which old segments retention and DeleteRecords delete and deletes their
snapshots (§4.6, §3.3), expires producers (§6), orchestrates a truncation (§5.5) and closes,
cleanly or as a crash would.

The segments themselves are a :class:`~dedup.local_log.LocalLog` that the partition log holds,
as Kafka's UnifiedLog (core/src/main/scala/kafka/log/UnifiedLog.scala) holds a LocalLog: the
segment list, rolling, reading a file region, deleting, replacing and truncating segments,
flushing them, the recovery point and closing the files (:mod:`dedup.local_log`). The appends
write to the active segment directly, without a call through the LocalLog per batch.

Transactions (spec §3.2 steps 5 and 7, §3.3): every replica, leader or follower, follows the
transactions of the batches it writes (Kafka's ``ongoingTxns`` and ``unreplicatedTxns``), so
it knows its :attr:`~PartitionLog.first_unstable_offset` and
:attr:`~PartitionLog.last_stable_offset` (what a ``read_committed`` consumer reads below), and
an ABORT marker appends an entry to the ``.txnindex`` of the segment holding it
(:mod:`dedup.transaction_index`), which :meth:`~PartitionLog.collect_aborted_transactions`
reads for a fetch.

Opening a directory is :mod:`dedup.recovery` (Kafka's LogLoader, spec §5): after an unclean
shutdown the segments from the recovery point on are checked batch by batch and a torn tail
is cut off; then the table is rebuilt from the newest valid snapshot at or below the log end
plus a replay of the batches after it.

The default snapshot format is dedup's ``"full"`` one: it keeps every producer's whole
duplicate window, so a table rebuilt from it equals the table before the restart. Kafka's own
format (``snapshot_format="kafka"``) keeps one batch per producer: after a restart a retry of
any older batch in the window is no longer recognised (spec §4.3), exactly as on a Kafka
broker.

Where dedup differs from Kafka, by design of a single-partition library: the checkpoint files
Kafka keeps once per log directory (``recovery-point-offset-checkpoint``,
``replication-offset-checkpoint``, ``log-start-offset-checkpoint``, ``.kafka_cleanshutdown``)
are kept here in the partition directory; timestamps are always CreateTime; segments roll by
size only (for the segment files, see :mod:`dedup.local_log`). A PartitionLog is not
thread-safe: Kafka holds the log lock around the same calls.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from . import _args
from ._backend import resolve_table_class
from ._files import fsync_directory as _fsync_directory
from ._layout import ATTR_TRANSACTIONAL, write_leader_fields
from ._types import DEFAULT_WINDOW, Origin
from .checkpoints import (
    LEADER_EPOCH_CHECKPOINT,
    LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
    REPLICATION_OFFSET_CHECKPOINT,
    LeaderEpochCache,
    parse_partition_directory,
    write_offsets,
)
from .errors import KafkaStorageError, OffsetOutOfRangeError
from .local_log import LocalLog
from .records import BATCH_HEADER_DTYPE, append_batches, check_one_batch, scan_batches, validate_batches
from .recovery import CLEAN_SHUTDOWN_FILE, LoadReport, load, rebuild_producer_state
from .segment import FileRegion, LogSegment
from .snapshot import SNAPSHOT_FORMATS, snapshot_file_name, write_snapshot
from .staging import analyze_and_validate
from .transaction_index import AbortedTxn, track_transactions

__all__ = [
    "DEFAULT_PRODUCER_ID_EXPIRATION_MS",
    "DEFAULT_SEGMENT_BYTES",
    "LoadReport",
    "LogAppendInfo",
    "PartitionLog",
]

logger = logging.getLogger("dedup.log")

#: Kafka's ``log.segment.bytes`` default (1 GiB).
DEFAULT_SEGMENT_BYTES = 1 << 30
#: Kafka's ``producer.id.expiration.ms`` default (1 day, KIP-854).
DEFAULT_PRODUCER_ID_EXPIRATION_MS = 86_400_000
#: Kafka's ``retention.ms`` default (7 days).
DEFAULT_RETENTION_MS = 7 * 86_400_000

_SNAPSHOT_NAME = re.compile(r"([0-9]{20})\.snapshot")

# Positions of a scanned batch's fields in ``headers.tolist()``'s tuples.
_FIELDS = BATCH_HEADER_DTYPE.names or ()
_BASE_OFFSET = _FIELDS.index("base_offset")
_MAX_TIMESTAMP = _FIELDS.index("max_timestamp")
_PRODUCER_ID = _FIELDS.index("producer_id")
_PARTITION_LEADER_EPOCH = _FIELDS.index("partition_leader_epoch")
_LAST_OFFSET_DELTA = _FIELDS.index("last_offset_delta")
_BASE_SEQUENCE = _FIELDS.index("base_sequence")
_PRODUCER_EPOCH = _FIELDS.index("producer_epoch")
_IS_TRANSACTIONAL = _FIELDS.index("is_transactional")
_IS_CONTROL = _FIELDS.index("is_control")


class LogAppendInfo(NamedTuple):
    """What an append did (Kafka's LogAppendInfo, as a produce response needs it).

    ``base_offset``/``last_offset`` are the offsets the batches got, or for a duplicate
    the ORIGINAL batch's (``duplicate`` True, nothing written); ``max_timestamp`` the largest
    batch timestamp (the stored one for a duplicate); -1 for all three on an empty append.
    ``base_offset`` is Kafka's ``firstOffset`` in LogAppendInfo, named here as the produce
    response names it (``base_offset``) and as :class:`dedup.AppendResult` and
    :class:`dedup.cluster.ProduceResponse` do.
    """

    base_offset: int
    last_offset: int
    max_timestamp: int
    duplicate: bool
    batches: int
    log_start_offset: int


def _table_class(value: Any) -> type:
    """``value`` if it is either twin's ProducerStateTable class (or a subclass);
    ``dedup.ProducerStateTable`` for None."""
    return resolve_table_class(value)[0]  # TypeError naming table_class otherwise


def _records_view(records: Any) -> memoryview:
    """``records`` as a memoryview (any C-contiguous buffer: bytes, bytearray, memoryview,
    mmap, numpy); ``TypeError`` naming ``records`` otherwise. bytearray(5) or a list of ints
    is not one, and a strided view is refused rather than read as its gathered items."""
    try:
        view = memoryview(records)
    except TypeError:
        view = None
    if view is None or not view.c_contiguous:
        raise TypeError(f"records must be a C-contiguous buffer of v2 batches, got {type(records).__name__}")
    return view if view.ndim == 1 and view.format == "B" else view.cast("B")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class PartitionLog:
    """One partition replica in ``directory`` (created if missing), recovered on opening.

    Parameters (Kafka's topic configs in parentheses): ``segment_bytes`` (``segment.bytes``,
    1 GiB), ``window`` (batches kept per producer, 5), ``producer_id_expiration_ms``
    (``producer.id.expiration.ms``, 1 day), ``retention_bytes``/``retention_ms``
    (``retention.bytes`` -1 = unlimited, ``retention.ms`` 7 days; applied by
    :meth:`apply_retention`), ``snapshot_format`` (``"full"`` or ``"kafka"``), ``fsync``
    (fsync every append, Kafka's ``flush.messages=1``; by default the active segment is
    fsynced only when it rolls and on :meth:`flush`/:meth:`close`: its latest appends survive
    a process crash but not a power loss, as Kafka relies on replication), ``clock`` (a
    callable giving the broker's time in ms, for expiration and retention), ``capacity`` (a
    presizing hint for the producer table), ``max_producers`` (the table's cap, dedup's
    ``producer.state.max.producers``: None or 0 unbounded, as Kafka; see
    ``ProducerStateTable.max_producers``; a table loaded from a snapshot gets it too),
    ``table_class`` (either twin's ``ProducerStateTable``; default ``dedup.ProducerStateTable``).

    :attr:`load_report` says what opening the directory found.
    """

    def __init__(
        self,
        directory: Any,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        window: int = DEFAULT_WINDOW,
        producer_id_expiration_ms: int = DEFAULT_PRODUCER_ID_EXPIRATION_MS,
        retention_bytes: int = -1,
        retention_ms: int = DEFAULT_RETENTION_MS,
        snapshot_format: str = "full",
        fsync: bool = False,
        clock: Callable[[], int] | None = None,
        capacity: int = 0,
        max_producers: int | None = None,
        table_class: type | None = None,
    ) -> None:
        table_class = _table_class(table_class)
        # One str from here on (a bytes path decoded as the file system does): every file
        # name below is joined to it and every message shows it.
        self.directory: str = os.path.abspath(os.fsdecode(_args.path("directory", directory)))
        self.segment_bytes = _args.integer("segment_bytes", segment_bytes, 62, (1 << 31) - 1, "an int32 >= 62")
        self.window = _args.window(window)
        self.producer_id_expiration_ms = _args.integer(
            "producer_id_expiration_ms", producer_id_expiration_ms, 1, (1 << 63) - 1, "a positive int64"
        )
        self.retention_bytes = _args.integer("retention_bytes", retention_bytes, -1, (1 << 63) - 1, "an int64 >= -1")
        self.retention_ms = _args.integer("retention_ms", retention_ms, -1, (1 << 63) - 1, "an int64 >= -1")
        self.snapshot_format = _args.choice("snapshot_format", snapshot_format, SNAPSHOT_FORMATS)
        self.fsync = _args.flag("fsync", fsync)
        self._clock = _now_ms if clock is None else _args.function("clock", clock, "a callable returning milliseconds")
        self._capacity = _args.capacity(capacity)
        self.max_producers = _args.max_producers(None if max_producers == 0 else max_producers)
        self._table_class = table_class
        try:
            self.topic, self.partition = parse_partition_directory(os.path.basename(self.directory))
        except ValueError:
            self.topic, self.partition = os.path.basename(self.directory), 0
        os.makedirs(self.directory, exist_ok=True)
        #: The segments (Kafka's UnifiedLog.localLog): :mod:`dedup.recovery` fills them.
        self._local_log = LocalLog(self.directory)
        self._unsynced_snapshots: set[int] = set()
        self._last_snapshot_offset = 0
        self._offline: str | None = None
        #: Ranges [start, end) whose batches a rebuild did not replay: Kafka's shortcut in
        #: rebuildProducerState (spec §5.3 step 3, ``isEmptyBeforeTruncation``) decides from the
        #: table *before* truncateAndReload, so a table that was empty only because its producers
        #: expired (after their transactions completed in the part being truncated) skips the
        #: replay of [older snapshot or log start, target). The table then lacks what the range
        #: holds: a transaction the range opens stays unknown (its ABORT marker, fetched later,
        #: completes nothing, so no AbortedTxn), and one the range closes stays open from the
        #: snapshot (a later marker completes it with the old first offset). dedup reproduces
        #: Kafka and records the range here (tests/log/test_rebuild_shortcut.py pins it).
        self.skipped_replays: list[tuple[int, int]] = []
        self._closed = False
        self._high_watermark = 0
        self._log_start_offset = 0
        #: Kafka's ProducerStateManager.ongoingTxns: producer id -> first offset of its open
        #: transaction, in order of first offset (a transaction opens at the log end).
        self._ongoing_txns: dict[int, int] = {}
        #: Kafka's unreplicatedTxns: (first offset, marker offset) of transactions whose
        #: marker is written but not yet below the high watermark.
        self._unreplicated_txns: list[tuple[int, int]] = []
        #: This replica's last append as leader, until the replication round after it takes it
        #: (:meth:`take_leader_append`): (base offset, end offset, the bytes written).
        self._last_leader_append: tuple[int, int, bytearray] | None = None
        self._table = self._new_table()
        self.leader_epochs = LeaderEpochCache(os.path.join(self.directory, LEADER_EPOCH_CHECKPOINT))
        self.load_report = load(self)
        self._reload_transactions()

    # -- state ---------------------------------------------------------------------------------

    @property
    def producer_state(self) -> Any:
        """The producer-state table. A truncation or reload replaces it: do not keep it."""
        return self._table

    @property
    def offline(self) -> bool:
        """Whether a failed write took the log offline (Kafka's LogDirFailureChannel): it
        serves nothing until it is reopened, which recovers it."""
        return self._offline is not None

    @property
    def log_end_offset(self) -> int:
        # (not self._local_log.log_end_offset: one property call per append, not two)
        return self._local_log.segments[-1].next_offset

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def high_watermark(self) -> int:
        return self._high_watermark

    @property
    def first_unstable_offset(self) -> int | None:
        """Kafka's firstUnstableOffset: the first offset of the earliest transaction still open
        or whose marker is not yet below the high watermark, at least the log start offset;
        None when there is none (ProducerStateManager.firstUnstableOffset, UnifiedLog's clamp)."""
        first = next(iter(self._ongoing_txns.values()), None)
        for txn_first, _ in self._unreplicated_txns:
            if first is None or txn_first < first:
                first = txn_first
        return None if first is None else max(first, self._log_start_offset)

    @property
    def last_stable_offset(self) -> int:
        """Kafka's UnifiedLog.lastStableOffset: the first unstable offset if it is below the
        high watermark, else the high watermark. A ``read_committed`` consumer reads below it."""
        first = self.first_unstable_offset
        return self._high_watermark if first is None or first >= self._high_watermark else first

    @property
    def ongoing_transactions(self) -> dict[int, int]:
        """Producer id -> first offset of each open transaction (a copy), in order of first offset."""
        return dict(self._ongoing_txns)

    @property
    def recovery_point(self) -> int:
        """Offsets below it are fsynced (or were complete when the last segment rolled)."""
        return self._local_log.recovery_point

    @property
    def segment_base_offsets(self) -> list[int]:
        return list(self._local_log.base_offsets)

    @property
    def size_bytes(self) -> int:
        return self._local_log.size_bytes

    @property
    def latest_epoch(self) -> int | None:
        return self.leader_epochs.latest_epoch

    def snapshot_offsets(self) -> list[int]:
        """The offsets of the snapshot files in the directory, ascending."""
        found = (_SNAPSHOT_NAME.fullmatch(name) for name in os.listdir(self.directory))
        return sorted(int(match.group(1)) for match in found if match)

    def snapshot_path(self, offset: int) -> str:
        return os.path.join(self.directory, snapshot_file_name(offset))

    def __repr__(self) -> str:
        return (
            f"<PartitionLog {self.directory} log_start_offset={self._log_start_offset} "
            f"log_end_offset={self.log_end_offset} high_watermark={self._high_watermark} "
            f"producers={len(self._table)}>"
        )

    def _new_table(self) -> Any:
        return self._table_class(self.window, capacity=self._capacity, max_producers=self.max_producers)

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError(f"the log in {self.directory} is closed")
        if self._offline is not None:
            raise KafkaStorageError(f"the log in {self.directory} is offline after a failed write: {self._offline}")

    # -- appends -------------------------------------------------------------------------------

    def append_as_leader(
        self, records: Any, *, leader_epoch: int = -1, origin: Origin = Origin.CLIENT
    ) -> LogAppendInfo:
        """Append a produce request's batches as the partition leader (spec §3.2).

        ``records`` is any buffer of v2 batches (a client's have base offset 0). In Kafka's
        order: every batch is checked (record-level rules, then the producer-state rules
        against a staged copy of the producers involved, a duplicate being one of the
        committed entry's batches: :mod:`dedup.staging`); the first refused batch fails the
        whole append with its Kafka error and nothing is written; the first duplicate answers
        the whole append with its original offsets and nothing is written. Otherwise the
        batches get consecutive offsets from the log end offset and ``leader_epoch`` as their
        partition leader epoch, are written, and only then recorded in the table. ``records``
        itself is not changed. ``origin`` is CLIENT (a producer) or COORDINATOR (transaction
        markers, which must come from the coordinator).
        """
        self._check_usable()
        if origin is not Origin.CLIENT:  # (the checks below cost as much as the rest of a small append)
            origin = _args.origin(origin)
            if origin == Origin.REPLICATION:
                raise ValueError(
                    "append_as_leader takes origin CLIENT or COORDINATOR; a follower uses append_as_follower"
                )
        if type(leader_epoch) is not int or not -1 <= leader_epoch < 1 << 31:
            leader_epoch = _args.integer("leader_epoch", leader_epoch, -1, (1 << 31) - 1, "an int32 >= -1")
        with _records_view(records) as view:
            data = bytearray(view)
        if origin == Origin.CLIENT:
            fields = check_one_batch(data)  # the record-level rules (spec §2.1 rules 1, 3, 5-8)
            if fields is not None:
                return self._append_one(data, fields, leader_epoch)
            headers = validate_batches(data, origin=origin)
        else:
            headers = scan_batches(data)
        if not len(headers):
            return LogAppendInfo(-1, -1, -1, False, 0, self._log_start_offset)
        start = self.log_end_offset
        analysis = analyze_and_validate(
            self._table, data, headers, origin=origin, log_end_offset=start, leader_epoch=leader_epoch
        )
        if analysis.duplicate is not None:
            # Kafka answers the whole append with the first duplicate it finds (rule 10).
            base_offset, last_offset, timestamp = analysis.duplicate
            return LogAppendInfo(base_offset, last_offset, timestamp, True, len(headers), self._log_start_offset)
        end = analysis.log_end_offset
        max_timestamp = int(headers["max_timestamp"].max())
        self._write(data, start, end, max_timestamp)
        self._table.update_from(analysis.staged)  # spec §3.2 step 4: the staged entries become the live ones
        self._last_leader_append = (start, end, data)
        if headers["is_transactional"].any():
            self._complete_transactions(data, scan_batches(data))  # (the headers have the client's offsets)
        if leader_epoch >= 0:
            self._assign_epoch(leader_epoch, start)
        return LogAppendInfo(start, end - 1, max_timestamp, False, len(headers), self._log_start_offset)

    def _append_one(self, data: bytearray, fields: tuple[int, ...], leader_epoch: int) -> LogAppendInfo:
        """A produce request's usual case, one client batch, already checked record by
        record: the table's check() verdict, the write, then update() (spec §3.2)."""
        attributes, delta, max_timestamp, producer_id, producer_epoch, base_sequence, _ = fields
        start = self.log_end_offset
        end = start + delta + 1
        if end > (1 << 63) - 1:
            _args.total_records_fit(start, np.array([delta + 1]))  # raises, as append_batches does
        result = None
        if producer_id >= 0:
            result = self._table.check(
                producer_id,
                producer_epoch,
                base_sequence,
                delta + 1,
                start,
                max_timestamp=max_timestamp,
                transactional=bool(attributes & ATTR_TRANSACTIONAL),
            )
            if result.duplicate:
                return LogAppendInfo(
                    result.base_offset, result.last_offset, result.timestamp, True, 1, self._log_start_offset
                )
        write_leader_fields(data, 0, start, leader_epoch)
        self._write(data, start, end, max_timestamp)
        self._last_leader_append = (start, end, data)
        if result is None:
            self._table.update_map_end_offset(end)
        else:
            self._table.update(result)
            if attributes & ATTR_TRANSACTIONAL:  # a client batch is never a control batch
                self._ongoing_txns.setdefault(producer_id, start)
        if leader_epoch >= 0:
            self._assign_epoch(leader_epoch, start)
        return LogAppendInfo(start, end - 1, max_timestamp, False, 1, self._log_start_offset)

    def append_as_follower(self, records: Any, *, scanned: Any = None) -> LogAppendInfo:
        """Append batches fetched from the leader, with the leader's offsets (spec §3.4).

        Kafka's ``UnifiedLog.appendAsFollower``: ``append(validateAndAssignOffsets = false,
        origin = REPLICATION)``. Every batch is checked (framing, CRC, offsets at or above the
        log end offset and increasing: ``analyzeAndValidateRecords``) and run through a staged
        copy of the producers involved with the REPLICATION origin
        (``analyzeAndValidateProducerState``); any refusal fails the whole append and nothing
        is written. Then the bytes are written as they came, the table updated, and the
        leader epochs of the batches recorded (Kafka's leader epoch cache).

        ``scanned`` is for a follower in the leader's process only (``Cluster.replicate``):
        ``scan_batches`` of ``records``, where ``records`` are the very bytes the leader of
        this partition wrote in this process (:meth:`take_leader_append`), after checking them
        (a client's: CRC and record-level rules) or having built them (the coordinators'
        batches, whose CRC ``encode_batch`` computed). Then the record-level checks and the CRC
        are not done again: Kafka's follower checks them against corruption on the network and
        on disk, and these bytes crossed neither (they are the leader's buffer, unchanged in
        memory since it wrote them). The producer state is still updated with the REPLICATION
        rules, which refuse no epoch or sequence but still refuse a plain batch of a producer
        in a transaction (rule 18, INVALID_TXN_STATE, §2.4). Anything read from a file or a
        socket goes without ``scanned``.
        """
        self._check_usable()
        self._last_leader_append = None  # (a follower's log end moves past its last leader append)
        view = records if isinstance(records, bytes | bytearray) else _records_view(records)
        if scanned is not None:
            return self._append_leaders_batches(view, scanned)
        headers = scan_batches(view)
        if not len(headers):
            return LogAppendInfo(-1, -1, -1, False, 0, self._log_start_offset)
        start = self.log_end_offset
        staged = self._table.copy(np.unique(headers["producer_id"][headers["producer_id"] >= 0]))
        verdict = append_batches(staged, view, origin=Origin.REPLICATION, log_end_offset=start)
        refused = np.flatnonzero(verdict.error_codes)
        if len(refused):
            raise verdict.errors[int(refused[0])]
        first = int(headers["base_offset"][0])
        end = verdict.log_end_offset
        max_timestamp = int(headers["max_timestamp"].max())
        self._write(view, first, end, max_timestamp)
        self._table.update_from(staged)
        self._complete_transactions(view, headers)
        epochs = headers["partition_leader_epoch"]
        for row in np.flatnonzero(np.diff(epochs, prepend=-1) != 0).tolist():
            if epochs[row] >= 0:
                self._assign_epoch(int(epochs[row]), int(headers["base_offset"][row]))
        return LogAppendInfo(first, end - 1, max_timestamp, False, len(headers), self._log_start_offset)

    def _append_leaders_batches(self, data: Any, headers: Any) -> LogAppendInfo:
        """:meth:`append_as_follower` of batches this process's leader validated and wrote,
        ``headers`` their scan: the same table, log, snapshots and .txnindex as the full path
        (tests/log/test_follower_fast_path.py), without its scan, CRC and record-level checks.

        The producer-state rules are the table's own with origin REPLICATION: a lone batch
        with a producer id (a produce request's) is checked on the live table and recorded
        after the write (check() changes nothing), an append of several batches is staged on a
        copy, each as the leader appended it (with a producer cap, dedup's own rule, the two
        leave the table's entries in different orders, so the follower follows the leader's).
        A control batch or a batch below the log end goes the full path (markers are one per
        transaction; a batch below the log end is refused there)."""
        if not isinstance(headers, np.ndarray) or headers.dtype != BATCH_HEADER_DTYPE:
            raise TypeError("scanned must be scan_batches() of records")
        rows = headers.tolist()  # one tuple per batch, fields in BATCH_HEADER_DTYPE order
        if not rows:
            return LogAppendInfo(-1, -1, -1, False, 0, self._log_start_offset)
        first = rows[0][_BASE_OFFSET]
        if first < self.log_end_offset or any(row[_IS_CONTROL] for row in rows):
            return self.append_as_follower(data)
        table = self._table
        producers = [row for row in rows if row[_PRODUCER_ID] >= 0]
        result = staged = None
        if len(rows) == 1 and producers:  # as append_as_leader's one-batch path: the same table order
            result = self._replicated(table.check, producers[0])
        elif producers:
            staged = table.copy({row[_PRODUCER_ID] for row in producers})
            for row in producers:
                self._replicated(staged.append, row)
        last = rows[-1]
        end = last[_BASE_OFFSET] + last[_LAST_OFFSET_DELTA] + 1
        max_timestamp = max(row[_MAX_TIMESTAMP] for row in rows)
        self._write(data, first, end, max_timestamp)
        if result is not None:
            table.update(result)
        elif staged is not None:
            table.update_from(staged)
        if table.map_end_offset < end:  # batches without a producer id after the last with one
            table.update_map_end_offset(end)
        if any(row[_IS_TRANSACTIONAL] for row in rows):
            self._complete_transactions(data, headers)
        epoch = -1
        for row in rows:  # the leader epoch cache, where the epoch changes (as the full path)
            if row[_PARTITION_LEADER_EPOCH] != epoch:
                epoch = row[_PARTITION_LEADER_EPOCH]
                if epoch >= 0:
                    self._assign_epoch(epoch, row[_BASE_OFFSET])
        return LogAppendInfo(first, end - 1, max_timestamp, False, len(rows), self._log_start_offset)

    @staticmethod
    def _replicated(call: Callable[..., Any], row: tuple[Any, ...]) -> Any:
        """``table.check`` or ``table.append`` of one scanned data batch with origin REPLICATION."""
        return call(
            row[_PRODUCER_ID],
            row[_PRODUCER_EPOCH],
            row[_BASE_SEQUENCE],
            row[_LAST_OFFSET_DELTA] + 1,
            row[_BASE_OFFSET],
            max_timestamp=row[_MAX_TIMESTAMP],
            origin=Origin.REPLICATION,
            transactional=row[_IS_TRANSACTIONAL],
        )

    def take_leader_append(self) -> tuple[int, bytearray] | None:
        """``(base_offset, records)``: the bytes of this replica's last append as leader, as
        written (the leader's offsets and epoch), if the log still ends where that append
        ended; ``None`` otherwise. Taken once: the log lets go of them, so a partition holds
        its last request only until the replication round after it (``Cluster.replicate``,
        which feeds them with their scan to ``append_as_follower(..., scanned=...)`` of the
        followers at ``base_offset``)."""
        last, self._last_leader_append = self._last_leader_append, None
        if last is None or last[1] != self.log_end_offset:
            return None
        return last[0], last[2]

    def _complete_transactions(self, data: Any, headers: Any) -> None:
        """Spec §3.2 steps 5-7 for written batches (leader and follower alike): transactions
        opened and closed; each aborted one gets its AbortedTxn in the .txnindex of the
        segment holding its marker (the active one: an append never spans segments), and a
        completed one stays unstable until its marker is below the high watermark
        (UnifiedLog.append's completedTxns loop, LogSegment.updateTxnIndex, completeTxn)."""
        for entry, aborted in track_transactions(data, headers, self._ongoing_txns):
            if aborted:
                self._local_log.segments[-1].txn_index.append(entry)
            if entry.last_offset >= self._high_watermark:
                self._unreplicated_txns.append((entry.first_offset, entry.last_offset))

    def _reload_transactions(self) -> None:
        """After the table was rebuilt (opening, truncation): the open transactions are the
        table's entries with a ``current_txn_first_offset`` (Kafka's loadProducerEntry puts
        them in ongoingTxns); unreplicatedTxns starts empty (truncateAndReload clears it)."""
        table = self._table
        ongoing = []
        for producer_id in table:
            entry = table.entry(producer_id)
            if entry is not None and entry.current_txn_first_offset is not None:
                ongoing.append((entry.current_txn_first_offset, int(producer_id)))
        self._ongoing_txns = {producer_id: first for first, producer_id in sorted(ongoing)}
        self._unreplicated_txns = []

    def collect_aborted_transactions(self, fetch_offset: int, upper_bound_offset: int) -> list[AbortedTxn]:
        """Kafka's UnifiedLog.collectAbortedTransactions: the aborted transactions that
        overlap ``[fetch_offset, upper_bound_offset)``, from the .txnindex of the segment
        holding ``fetch_offset`` and of the later ones until a search is complete."""
        return self._local_log.collect_aborted_transactions(fetch_offset, upper_bound_offset)

    def _write(self, data: Any, base_offset: int, end_offset: int, max_timestamp: int) -> None:
        try:
            active = self._local_log.segments[-1]
            if active.size and active.size + len(data) > self.segment_bytes:
                active = self.roll()
            active.append(data, base_offset, end_offset, max_timestamp)
            if self.fsync:
                active.flush()
        except (KafkaStorageError, OSError) as error:  # the table is unchanged
            raise self._went_offline(error) from error

    def _went_offline(self, error: BaseException) -> KafkaStorageError:
        """Take the log offline after a failed write (Kafka's LogDirFailureChannel: an
        IOException takes the log directory offline and the broker stops serving its
        replicas); the error to raise."""
        if self._offline is None:
            self._offline = str(error)
            logger.error("log %s is offline: %s", self.directory, error)
        if isinstance(error, KafkaStorageError):
            return error
        return KafkaStorageError(f"log {self.directory}: {error}")

    def _assign_epoch(self, epoch: int, start_offset: int) -> None:
        latest = self.leader_epochs.latest_epoch
        if latest is None or epoch > latest:
            try:
                self.leader_epochs.assign(epoch, start_offset)
            except OSError as error:  # the leader-epoch-checkpoint could not be written
                raise self._went_offline(error) from error

    # -- reading -------------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int = 1 << 20, *, max_offset: int | None = None) -> bytes:
        """Whole batches from the one holding ``offset``: at most ``max_bytes`` but at least
        one batch, from one segment, none at or past ``max_offset`` (pass the high watermark
        for a consumer). Empty at the log end. ``OffsetOutOfRangeError`` outside
        ``[log_start_offset, log_end_offset]`` (Kafka's fetch error)."""
        region = self.read_region(offset, max_bytes, max_offset=max_offset)
        if region is None:
            return b""
        try:
            return region.read()
        finally:
            region.close()

    def read_region(self, offset: int, max_bytes: int = 1 << 20, *, max_offset: int | None = None,
                    min_one_batch: bool = True) -> FileRegion | None:  # fmt: skip
        """What :meth:`read` returns, as a :class:`~dedup.segment.FileRegion` of a segment file
        (None for nothing), for a fetch to send with ``sendfile`` without reading the bytes
        (Kafka's UnifiedLog.read returns such a slice). Without ``min_one_batch`` a first batch
        larger than ``max_bytes`` gives None (Kafka's ``minOneMessage=false``, for the
        partitions of a fetch after the first that returned data, KIP-74). The caller closes
        the region."""
        self._check_usable()
        offset = _args.offset("offset", offset)
        max_bytes = _args.integer("max_bytes", max_bytes, 0, (1 << 31) - 1, "an int32 >= 0")
        if max_offset is not None:
            max_offset = _args.offset("max_offset", max_offset)
        if offset < self._log_start_offset or offset > self.log_end_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside the log [{self._log_start_offset}, {self.log_end_offset}] "
                f"of {self.directory}"
            )
        return self._local_log.read_region(offset, max_bytes, max_offset, min_one_batch=min_one_batch)

    def assign_leader_epoch(self, epoch: int) -> None:
        """Record that ``epoch`` starts at the log end offset: what a replica does when it
        becomes the partition's leader (Kafka's maybeAssignEpochStartOffset in makeLeader)."""
        self._check_usable()
        self._assign_epoch(_args.integer("epoch", epoch, 0, (1 << 31) - 1, "an int32 >= 0"), self.log_end_offset)

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """Kafka's OffsetsForLeaderEpoch answer: (the largest epoch at or below ``epoch``, the
        offset where it ends); (-1, -1) if the log knows no epoch that old."""
        return self.leader_epochs.end_offset_for(epoch, self.log_end_offset)

    # -- high watermark, roll, flush, snapshots ------------------------------------------------

    def update_high_watermark(self, offset: int) -> int:
        """Set the high watermark, kept within [log_start_offset, log_end_offset]; returns it."""
        offset = _args.offset("offset", offset)
        self._high_watermark = min(max(offset, self._log_start_offset), self.log_end_offset)
        if self._unreplicated_txns:  # Kafka's onHighWatermarkUpdated: replicated markers are stable
            self._unreplicated_txns = [txn for txn in self._unreplicated_txns if txn[1] >= self._high_watermark]
        return self._high_watermark

    def roll(self) -> LogSegment:
        """Start a new segment at the log end offset; a snapshot at that offset is written
        first (spec §4.5), then the rolled segment and the snapshot are fsynced and the
        recovery point moves to the new segment. Returns the new segment."""
        self._check_usable()
        local_log = self._local_log
        active = local_log.segments[-1]
        if not active.size:
            return active
        new_base = active.next_offset
        self._table.update_map_end_offset(new_base)
        self.take_snapshot(sync=False)
        segment = local_log.roll()
        # The rolled segment is complete: Kafka flushes it (asynchronously, KAFKA-15046) and
        # then moves the recovery point, so recovery after a crash starts at the new segment.
        active.flush()
        self._sync_snapshots()
        local_log.recovery_point = new_base
        self._write_checkpoints(sync=True)
        return segment

    def take_snapshot(self, *, sync: bool = True) -> int | None:
        """Write the table's snapshot at its map end offset, if that is past the last one
        (Kafka's takeSnapshot, spec §4.5); returns the offset written or None."""
        offset = self._table.map_end_offset
        if offset <= self._last_snapshot_offset:
            return None
        write_snapshot(self.snapshot_path(offset), self._table, self.snapshot_format, sync=sync)
        if not sync:
            self._unsynced_snapshots.add(offset)
        self._last_snapshot_offset = offset
        return offset

    def _sync_snapshots(self) -> None:
        for offset in sorted(self._unsynced_snapshots):
            try:
                descriptor = os.open(self.snapshot_path(offset), os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        if self._unsynced_snapshots:
            _fsync_directory(self.directory)
        self._unsynced_snapshots.clear()

    def flush(self) -> None:
        """fsync every segment and snapshot; the recovery point becomes the log end offset."""
        self._check_usable()
        self._local_log.flush()
        self._sync_snapshots()
        self._local_log.recovery_point = self.log_end_offset
        self._write_checkpoints(sync=True)

    def _write_checkpoints(self, *, sync: bool) -> None:
        key = (self.topic, self.partition)
        for name, value in (
            (RECOVERY_POINT_CHECKPOINT, self._local_log.recovery_point),
            (REPLICATION_OFFSET_CHECKPOINT, self._high_watermark),
            (LOG_START_OFFSET_CHECKPOINT, self._log_start_offset),
        ):
            write_offsets(os.path.join(self.directory, name), {key: value}, sync=sync)

    # -- expiration, retention, truncation -----------------------------------------------------

    def remove_expired_producers(self, now_ms: int | None = None) -> int:
        """Kafka's PeriodicProducerExpirationCheck (spec §6): drop producers idle for
        ``producer_id_expiration_ms`` with no ongoing transaction. Returns how many."""
        self._check_usable()
        now = self._clock() if now_ms is None else now_ms
        return int(self._table.remove_expired(now, self.producer_id_expiration_ms))

    def delete_records(self, offset: int) -> int:
        """Kafka's DeleteRecords: move the log start offset up to ``offset`` (at most the high
        watermark) and delete the segments wholly below it, with their snapshots (§4.6).
        Producers stay in the table (spec §3.3: since 2.4 they outlive their data). Returns
        the new log start offset."""
        self._check_usable()
        offset = _args.offset("offset", offset)
        if offset > self._high_watermark:
            raise OffsetOutOfRangeError(
                f"cannot delete records up to {offset}: above the high watermark {self._high_watermark}"
            )
        if offset > self._log_start_offset:
            self._log_start_offset = offset
            self.leader_epochs.truncate_from_start(offset)
            self._delete_segments(lambda segment, following: following is not None and following.base_offset <= offset)
            self._write_checkpoints(sync=self.fsync)
        return self._log_start_offset

    def apply_retention(self, now_ms: int | None = None) -> int:
        """Delete old segments by ``retention_ms`` (a segment whose newest batch timestamp is
        older) and ``retention_bytes`` (oldest first while the log is larger), only segments
        wholly below the high watermark and never the active one, as Kafka's
        deleteOldSegments. Their snapshots go with them. Returns how many were deleted."""
        self._check_usable()
        now = self._clock() if now_ms is None else _args.timestamp("now_ms", now_ms)
        excess = self.size_bytes - self.retention_bytes if self.retention_bytes >= 0 else 0

        def expired(segment: LogSegment, following: LogSegment | None) -> bool:
            nonlocal excess
            if following is None or following.base_offset > self._high_watermark:
                return False
            if (
                self.retention_ms >= 0
                and 0 <= segment.max_timestamp
                and now - segment.max_timestamp > self.retention_ms
            ):
                excess -= segment.size
                return True
            if excess > 0 and excess - segment.size >= 0:
                excess -= segment.size
                return True
            return False

        deleted = self._delete_segments(expired)
        if deleted:
            self._log_start_offset = max(self._log_start_offset, self._local_log.segments[0].base_offset)
            self.leader_epochs.truncate_from_start(self._log_start_offset)
            self._write_checkpoints(sync=self.fsync)
        return deleted

    def _delete_segments(self, predicate: Callable[[LogSegment, LogSegment | None], bool]) -> int:
        """Delete the leading segments while ``predicate(segment, next segment)`` holds (never
        the active one: Kafka's deletableSegments), then their snapshots (deleteSegments)."""
        segments = self._local_log.segments
        deletable = 0
        while deletable < len(segments) - 1 and predicate(segments[deletable], segments[deletable + 1]):
            deletable += 1
        deleted = segments[:deletable]
        self._local_log.remove_and_delete_segments(deleted)
        for segment in deleted:
            self._delete_snapshot(segment.base_offset)
        return deletable

    def replace_segments(
        self, cleaned_path: str, old_segments: list[LogSegment], txn_entries: list[AbortedTxn] | None = None
    ) -> LogSegment:
        """Swap the segment written at ``cleaned_path`` (``<base>.log.cleaned``, fsynced, its
        base the first old segment's) in for ``old_segments`` (consecutive, inactive), as Kafka's
        UnifiedLog.replaceSegments: the segment files are swapped by
        :meth:`LocalLog.replace_segments <dedup.local_log.LocalLog.replace_segments>` (rename it
        ``.swap``, delete the old segments, rename the swap ``<base>.log``; a crash before the
        first rename leaves the old segments, after it the new one: :mod:`dedup.recovery`), then
        the snapshots at the other old segments' base offsets go. The new segment's ``.txnindex``
        holds ``txn_entries`` (the cleaner's cleaned index: Kafka's
        CleanedTransactionMetadata.cleanedIndex), or the old segments' entries when None.
        Returns the new segment."""
        self._check_usable()
        segment = self._local_log.replace_segments(cleaned_path, old_segments, txn_entries)
        for old in old_segments[1:]:
            self._delete_snapshot(old.base_offset)
        return segment

    def _delete_snapshot(self, offset: int) -> None:
        path = self.snapshot_path(offset)
        try:
            os.replace(path, path + ".deleted")  # KAFKA-12964: rename first, then delete
            os.unlink(path + ".deleted")
        except FileNotFoundError:
            pass
        self._unsynced_snapshots.discard(offset)

    def truncate_to(self, offset: int) -> bool:
        """Kafka's UnifiedLog.truncateTo (spec §5.5): drop every batch at or above ``offset``
        (a batch that straddles it goes whole), the segments and snapshots above it and the
        leader epochs that start there, then rebuild the producer state from the newest
        snapshot at or below the new log end plus a replay. Returns whether anything was
        dropped."""
        self._check_usable()
        offset = _args.offset("offset", offset)
        if offset >= self.log_end_offset:
            return False
        try:
            self._truncate_to(offset)
        except OSError as error:
            raise self._went_offline(error) from error
        return True

    def _truncate_to(self, offset: int) -> None:
        self._last_leader_append = None
        if self._local_log.segments[0].base_offset > offset:
            self.truncate_fully_and_start_at(offset)
            return
        for segment in self._local_log.truncate_to(offset):
            self._delete_snapshot(segment.base_offset)
        end = self.log_end_offset
        self.leader_epochs.truncate_from_end(end)
        self._log_start_offset = min(self._log_start_offset, end)
        rebuild_producer_state(self, end)
        self._reload_transactions()
        if self._high_watermark > end:
            self._high_watermark = end
        self._write_checkpoints(sync=self.fsync)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Kafka's truncateFullyAndStartAt: delete every segment and snapshot, clear the
        producer state and the leader epochs, and start an empty log at ``offset``."""
        self._check_usable()
        offset = _args.offset("offset", offset)
        self._local_log.truncate_fully_and_start_at(offset)
        for snapshot in self.snapshot_offsets():
            self._delete_snapshot(snapshot)
        self._log_start_offset = self._high_watermark = offset
        self.leader_epochs.clear()
        self._table = self._new_table()
        self._table.update_map_end_offset(offset)
        self._ongoing_txns, self._unreplicated_txns = {}, []
        self._last_leader_append = None
        self._last_snapshot_offset = 0
        self._write_checkpoints(sync=self.fsync)

    # -- closing -------------------------------------------------------------------------------

    def close(self) -> None:
        """A clean shutdown: fsync everything, write the checkpoints and a synced snapshot
        at the log end, then the clean-shutdown marker, so the next open skips recovery. An
        offline log only releases its files; a write that fails here (a full disk) takes the
        log offline, releases the files and raises ``KafkaStorageError`` (without a marker,
        the next open recovers it)."""
        if self._closed:
            return
        try:
            if self._offline is None:
                self.flush()
                self._table.update_map_end_offset(self.log_end_offset)
                self.take_snapshot(sync=True)
                self._local_log.close()
                marker = os.path.join(self.directory, CLEAN_SHUTDOWN_FILE)
                with open(marker, "wb") as handle:
                    handle.flush()
                    os.fsync(handle.fileno())
                _fsync_directory(self.directory)
        except OSError as error:
            # A full disk: no clean-shutdown marker, so the next open recovers the log.
            raise self._went_offline(error) from error
        finally:
            self._release_files()

    def close_uncleanly(self) -> None:
        """Leave the log as a crash would: its files are released with no flush, no
        snapshot, no checkpoint and no clean-shutdown marker, so the next open recovers it as
        after an unclean shutdown (spec §5.4). Kafka's ``UnifiedLog.closeHandlers``, which a
        broker calls when a log directory fails and Kafka's own tests call to simulate a
        crash."""
        self._release_files()

    def _release_files(self) -> None:
        self._local_log.close()
        self._closed = True

    def __enter__(self) -> PartitionLog:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
