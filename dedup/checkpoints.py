"""Kafka's checkpoint files: offsets per partition and the leader-epoch cache.

Kafka keeps small text files beside its logs (``CheckpointFile``): line 1 the format version,
line 2 the number of entries, then one entry per line, fields separated by spaces::

    0            <- version
    2            <- entry count
    0 0          <- leader-epoch-checkpoint: "epoch start_offset"
    3 120

- :func:`write_checkpoint`/:func:`read_checkpoint`: the format, for any entry type. A write
  is atomic (temporary file, fsync, rename, fsync of the directory, as :func:`dedup.snapshot.
  write_snapshot`); a missing or empty file reads as no entries (Kafka creates checkpoint
  files empty); anything else that does not parse raises :class:`~dedup.errors.
  CorruptCheckpointError` naming the file, the line, expected versus found.
- :func:`write_offsets`/:func:`read_offsets` (and :class:`OffsetCheckpoint`): the per-log-dir
  files with lines ``topic partition offset`` (Kafka's OffsetCheckpointFile):
  ``recovery-point-offset-checkpoint``, ``replication-offset-checkpoint`` (high watermarks),
  ``log-start-offset-checkpoint``.
- :class:`LeaderEpochCache`: Kafka's LeaderEpochFileCache over the partition directory's
  ``leader-epoch-checkpoint``.
- :func:`parse_partition_directory`/:func:`partition_directory_name`: Kafka's
  ``<topic>-<partition>`` directory names.

>>> parse_partition_directory("orders-eu-3")
('orders-eu', 3)
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, TypeVar

from . import _args
from ._files import write_all, write_atomically
from ._types import INT32_MAX, INT64_MAX
from .errors import CorruptCheckpointError

__all__ = [
    "UNDEFINED_EPOCH",
    "UNDEFINED_EPOCH_OFFSET",
    "LEADER_EPOCH_CHECKPOINT",
    "RECOVERY_POINT_CHECKPOINT",
    "REPLICATION_OFFSET_CHECKPOINT",
    "LOG_START_OFFSET_CHECKPOINT",
    "OFFSET_CHECKPOINT_VERSION",
    "LEADER_EPOCH_CHECKPOINT_VERSION",
    "write_checkpoint",
    "read_checkpoint",
    "write_offsets",
    "read_offsets",
    "OffsetCheckpoint",
    "EpochEntry",
    "LeaderEpochCache",
    "parse_partition_directory",
    "partition_directory_name",
]

T = TypeVar("T")

#: Kafka's OffsetsForLeaderEpochResponse.UNDEFINED_EPOCH and UNDEFINED_EPOCH_OFFSET.
UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1

#: File names, as Kafka spells them: the first in each partition directory, the others in
#: each log directory.
LEADER_EPOCH_CHECKPOINT = "leader-epoch-checkpoint"
RECOVERY_POINT_CHECKPOINT = "recovery-point-offset-checkpoint"
REPLICATION_OFFSET_CHECKPOINT = "replication-offset-checkpoint"
LOG_START_OFFSET_CHECKPOINT = "log-start-offset-checkpoint"

#: The versions Kafka writes (OffsetCheckpointFile.CURRENT_VERSION, LeaderEpochCheckpointFile's).
OFFSET_CHECKPOINT_VERSION = 0
LEADER_EPOCH_CHECKPOINT_VERSION = 0

_INT32_MIN = -(1 << 31)
_JAVA_INTEGER = re.compile(r"[+-]?[0-9]+")  # what Integer.parseInt/Long.parseLong accept (ASCII)
# Java's "\s+" minus the line terminators, which never reach a line: Kafka splits entries on it.
_FIELD_SEPARATOR = re.compile(r"[ \t\x0b\x0c]+")
_LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]+")
_MAX_TOPIC_LENGTH = 249  # Kafka's Topic.MAX_NAME_LENGTH


# --- the format ---------------------------------------------------------------------------


def _java_integer(text: str, low: int, high: int) -> int | None:
    """``text`` as Java's parseInt/parseLong reads it, if it is in ``[low, high]``; else None."""
    if not _JAVA_INTEGER.fullmatch(text):
        return None
    number = int(text)
    return number if low <= number <= high else None


def _fields(line: str) -> list[str]:
    """``line`` split as Kafka's formatters split it (``Pattern.split("\\s+")``): leading
    whitespace gives an empty first field, trailing whitespace is dropped."""
    fields = _FIELD_SEPARATOR.split(line)
    while len(fields) > 1 and not fields[-1]:
        fields.pop()
    return fields


def _show(line: str) -> str:
    return repr(line if len(line) <= 80 else line[:77] + "...")


def write_checkpoint(path: Any, version: int, lines: Iterable[str], *, sync: bool = True) -> None:
    """Write a checkpoint file at ``path``: ``version``, the number of ``lines``, the lines.

    Atomic as Kafka's CheckpointFile.write (which goes through ``<name>.tmp``): the text goes
    to a new temporary file ``.<name>.<random hex>.tmp`` in the same directory, which is
    fsynced, renamed over ``path`` and the directory fsynced. A reader sees the old file or
    the new one, whole; on any error before the rename the temporary file is removed and
    ``path`` is untouched. ``sync=False`` skips both fsyncs (still atomic for readers, not
    durable across a power loss). The text is UTF-8 with ``"\\n"`` line ends.

    ``TypeError``/``ValueError`` (before anything is written) if ``version`` is not an int32
    or a line is not a ``str`` or holds a line break.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "leader-epoch-checkpoint")
    >>> write_checkpoint(path, 0, ["0 0", "3 120"])
    >>> open(path, "rb").read()
    b'0\\n2\\n0 0\\n3 120\\n'
    """
    version = _args.integer("version", version, _INT32_MIN, INT32_MAX, "an int32")
    sync = _args.flag("sync", sync)
    entries = list(lines)
    for number, line in enumerate(entries):
        if not isinstance(line, str):
            raise TypeError(f"lines[{number}] must be a str, got {type(line).__name__}")
        if "\n" in line or "\r" in line:
            raise ValueError(f"lines[{number}] must not contain a line break, got {_show(line)}")
    data = "".join(f"{line}\n" for line in [str(version), str(len(entries)), *entries]).encode("utf-8")
    write_atomically(path, lambda descriptor: write_all(descriptor, data), sync=sync)


def read_checkpoint(path: Any, version: int, parse_line: Callable[[str], T]) -> list[T]:
    """The entries of the checkpoint file at ``path``, each the result of ``parse_line(line)``.

    ``parse_line`` raises ``ValueError`` for a line it cannot parse, with a message that says
    what it expected and what it found; that becomes a ``CorruptCheckpointError``.

    A missing file, or an empty one, has no entries (Kafka creates checkpoint files empty and
    reads them so). Lines end as Java's ``readLine`` ends them (``"\\n"``, ``"\\r\\n"`` or
    ``"\\r"``), the last one optionally. ``CorruptCheckpointError``, naming the file and the
    line, for: bytes that are not UTF-8; a version line that is not an int32 or not
    ``version``; a missing or negative entry count; fewer entry lines than the count, or more
    (trailing garbage, an empty line included); a line ``parse_line`` rejects. Other
    ``OSError`` s (a directory, no permission) propagate.

    Stricter than Kafka in one place: a file that stops after its version line is corrupt
    here, where Kafka reads it as empty (Kafka's writer never produces one).
    """
    version = _args.integer("version", version, _INT32_MIN, INT32_MAX, "an int32")
    shown = os.fsdecode(_args.path("path", path))
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return []  # Kafka: a missing checkpoint (a new log dir or partition) is empty

    def corrupt(line_number: int, problem: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"checkpoint file {shown!r}: line {line_number}: {problem}")

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line_number = data.count(b"\n", 0, error.start) + 1
        raise corrupt(line_number, f"expected UTF-8 text, found byte {data[error.start]:#04x}") from None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()  # the last line's end (optional, as for readLine)
    if not lines:
        return []
    found = _java_integer(lines[0], _INT32_MIN, INT32_MAX)
    if found is None:
        raise corrupt(1, f"expected the version, an int32, found {_show(lines[0])}")
    if found != version:
        raise corrupt(1, f"expected version {version}, found version {found}")
    if len(lines) < 2:
        raise corrupt(2, "expected the entry count, found the end of the file")
    count = _java_integer(lines[1], 0, INT32_MAX)
    if count is None:
        raise corrupt(2, f"expected the entry count, an int32 >= 0, found {_show(lines[1])}")
    body = lines[2:]
    if len(body) > count:
        first_extra = 3 + count
        raise corrupt(
            first_extra,
            f"expected {count} entries (the count on line 2) and then the end of the file, "
            f"found another line: {_show(body[count])} (trailing garbage: {len(body) - count} lines)",
        )
    entries = []
    for line_number, line in enumerate(body, start=3):
        try:
            entries.append(parse_line(line))
        except ValueError as error:
            raise corrupt(line_number, str(error)) from None
    if len(body) < count:
        raise corrupt(
            len(lines) + 1,
            f"expected {count} entries (the count on line 2), found {len(body)} and then the end of the file",
        )
    return entries


# --- offset checkpoints --------------------------------------------------------------------


def _is_topic(name: str) -> bool:
    """Whether ``name`` is a legal Kafka topic name (Topic.validate)."""
    return bool(_LEGAL_TOPIC.fullmatch(name)) and name not in (".", "..") and len(name) <= _MAX_TOPIC_LENGTH


def _topic(value: Any) -> str:
    """``value`` if it is a legal Kafka topic name, else ``TypeError``/``ValueError``."""
    if not isinstance(value, str):
        raise TypeError(f"topic must be a str, got {type(value).__name__}")
    if not _is_topic(value):
        raise ValueError(
            f"topic must be a legal Kafka topic name (1-{_MAX_TOPIC_LENGTH} of [a-zA-Z0-9._-], "
            f"not '.' or '..'), got {value!r}"
        )
    return value


def _partition(value: Any) -> int:
    return _args.integer("partition", value, 0, INT32_MAX, "in [0, 2^31-1]")


def _offset_line(topic: str, partition: int, offset: int) -> str:
    return f"{topic} {partition} {offset}"


def _parse_offset_line(line: str) -> tuple[tuple[str, int], int]:
    fields = _fields(line)
    expected = "expected 'topic partition offset' (a topic name, an int32 >= 0, an int64 >= 0)"
    if len(fields) != 3:
        raise ValueError(f"{expected}, found {len(fields)} fields: {_show(line)}")
    topic, partition_text, offset_text = fields
    partition = _java_integer(partition_text, 0, INT32_MAX)
    offset = _java_integer(offset_text, 0, INT64_MAX)
    if not _is_topic(topic) or partition is None or offset is None:
        raise ValueError(f"{expected}, found {_show(line)}")
    return (topic, partition), offset


def write_offsets(path: Any, offsets: Mapping[tuple[str, int], int], *, sync: bool = True) -> None:
    """Write ``{(topic, partition): offset}`` to the offset checkpoint at ``path`` (version 0),
    one ``topic partition offset`` line each, sorted by topic and partition, atomically
    (:func:`write_checkpoint`). ``TypeError``/``ValueError`` for an illegal topic name, a
    partition outside int32 >= 0 or an offset outside int64 >= 0; nothing is written then.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), RECOVERY_POINT_CHECKPOINT)
    >>> write_offsets(path, {("orders", 1): 5, ("audit", 0): 70})
    >>> open(path).read()
    '0\\n2\\naudit 0 70\\norders 1 5\\n'
    """
    if not isinstance(offsets, Mapping):
        raise TypeError(f"offsets must be a mapping of (topic, partition) to offset, got {type(offsets).__name__}")
    checked = []
    for key, offset in offsets.items():
        if not isinstance(key, tuple) or len(key) != 2:
            raise TypeError(f"offsets keys must be (topic, partition) tuples, got {key!r}")
        topic, partition = _topic(key[0]), _partition(key[1])
        checked.append((topic, partition, _args.offset(f"offset of {topic}-{partition}", offset)))
    checked.sort()
    write_checkpoint(path, OFFSET_CHECKPOINT_VERSION, (_offset_line(*entry) for entry in checked), sync=sync)


def read_offsets(path: Any) -> dict[tuple[str, int], int]:
    """``{(topic, partition): offset}`` from the offset checkpoint at ``path`` (version 0);
    ``{}`` if the file is missing or empty. ``CorruptCheckpointError`` as :func:`read_checkpoint`,
    and for a line that is not a legal topic name, an int32 >= 0 and an int64 >= 0. A
    partition listed twice keeps its last offset, as Kafka's map does."""
    return dict(read_checkpoint(path, OFFSET_CHECKPOINT_VERSION, _parse_offset_line))


class OffsetCheckpoint:
    """One offset checkpoint file (Kafka's OffsetCheckpointFile): :meth:`read` and :meth:`write`
    are :func:`read_offsets` and :func:`write_offsets` on ``path``.

    >>> import os, tempfile
    >>> log_dir = tempfile.mkdtemp()
    >>> high_watermarks = OffsetCheckpoint(os.path.join(log_dir, REPLICATION_OFFSET_CHECKPOINT))
    >>> high_watermarks.write({("orders", 0): 42})
    >>> high_watermarks.read()
    {('orders', 0): 42}
    """

    def __init__(self, path: Any) -> None:
        self.path = os.fspath(path)

    def read(self) -> dict[tuple[str, int], int]:
        return read_offsets(self.path)

    def write(self, offsets: Mapping[tuple[str, int], int], *, sync: bool = True) -> None:
        write_offsets(self.path, offsets, sync=sync)

    def __repr__(self) -> str:
        return f"OffsetCheckpoint({self.path!r})"


# --- the leader-epoch cache ----------------------------------------------------------------


class EpochEntry(NamedTuple):
    """Leader epoch ``epoch`` starts at ``start_offset`` (Kafka's EpochEntry)."""

    epoch: int
    start_offset: int


def _parse_epoch_line(line: str) -> EpochEntry:
    fields = _fields(line)
    expected = "expected 'epoch start_offset' (an int32 >= 0, an int64 >= 0)"
    if len(fields) != 2:
        raise ValueError(f"{expected}, found {len(fields)} fields: {_show(line)}")
    # Kafka's loader passes each entry to assign(), which rejects negative ones.
    epoch = _java_integer(fields[0], 0, INT32_MAX)
    start_offset = _java_integer(fields[1], 0, INT64_MAX)
    if epoch is None or start_offset is None:
        raise ValueError(f"{expected}, found {_show(line)}")
    return EpochEntry(epoch, start_offset)


def _assigned(entries: list[EpochEntry], new: EpochEntry) -> list[EpochEntry] | None:
    """``entries`` after Kafka's assign(new), or None if Kafka leaves them as they are."""
    # isUpdateNeeded: only the latest epoch again at the same or a later offset is ignored.
    # An older epoch, or the latest one at an earlier offset, is taken.
    if entries and new.epoch == entries[-1].epoch and new.start_offset >= entries[-1].start_offset:
        return None
    # maybeTruncateNonMonotonicEntries: from the end, drop every entry whose epoch >= the new
    # epoch or whose start offset >= the new start offset, so both columns stay strictly
    # increasing (assign(1, 5), assign(2, 6), assign(1, 7) leaves only (1, 7)).
    kept = len(entries)
    while kept and (entries[kept - 1].epoch >= new.epoch or entries[kept - 1].start_offset >= new.start_offset):
        kept -= 1
    return [*entries[:kept], new]


class LeaderEpochCache:
    """Kafka's LeaderEpochFileCache: where each leader epoch starts in a partition's log,
    persisted in the checkpoint file at ``path`` (the partition directory's
    ``leader-epoch-checkpoint``, see :meth:`in_directory`) and loaded from it here.

    Epochs and start offsets both increase strictly from entry to entry. Each change is
    written to the file (atomically, fsynced) before the cache shows it: if the write fails
    the ``OSError`` propagates and the cache is unchanged. Kafka writes the truncations in
    the background; here every change is written before the method returns.

    Loading applies Kafka's :meth:`assign` rule to each line in order, as Kafka's constructor
    does, without rewriting the file: a file whose entries go backwards loads truncated, as in
    Kafka. ``CorruptCheckpointError`` if the file does not parse (:func:`read_checkpoint`,
    with lines ``epoch start_offset``, both >= 0).

    >>> import os, tempfile
    >>> cache = LeaderEpochCache.in_directory(tempfile.mkdtemp())
    >>> cache.assign(0, 0), cache.assign(3, 120)
    (True, True)
    >>> cache.end_offset_for(0, log_end_offset=200)
    (0, 120)
    >>> open(cache.path).read()
    '0\\n2\\n0 0\\n3 120\\n'
    """

    def __init__(self, path: Any) -> None:
        self.path = os.fspath(path)
        entries: list[EpochEntry] = []
        for entry in read_checkpoint(self.path, LEADER_EPOCH_CHECKPOINT_VERSION, _parse_epoch_line):
            entries = _assigned(entries, entry) or entries
        self._entries = entries

    @classmethod
    def in_directory(cls, partition_directory: Any) -> LeaderEpochCache:
        """The cache of the partition whose log is in ``partition_directory``."""
        return cls(os.path.join(os.fspath(partition_directory), LEADER_EPOCH_CHECKPOINT))

    def _persist(self, entries: list[EpochEntry]) -> None:
        lines = [f"{entry.epoch} {entry.start_offset}" for entry in entries]
        write_checkpoint(self.path, LEADER_EPOCH_CHECKPOINT_VERSION, lines)
        self._entries = entries

    # --- reading ---

    @property
    def latest_epoch(self) -> int | None:
        """The latest epoch (the current leader's, on a leader), or None if the cache is empty."""
        return self._entries[-1].epoch if self._entries else None

    def epoch_entries(self) -> list[EpochEntry]:
        """Every entry, oldest first (a copy)."""
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"LeaderEpochCache({self.path!r}, entries={self._entries!r})"

    def epoch_for_offset(self, offset: int) -> int | None:
        """The epoch of the record at ``offset``: the latest epoch starting at or before it, or
        None if the first epoch starts after it (or the cache is empty). Kafka's epochForOffset:
        an offset past the log end still gets the latest epoch."""
        offset = _args.offset("offset", offset)
        at = bisect.bisect_right([entry.start_offset for entry in self._entries], offset)
        return self._entries[at - 1].epoch if at else None

    def end_offset_for(self, requested_epoch: int, log_end_offset: int) -> tuple[int, int]:
        """Kafka's endOffsetFor (OffsetsForLeaderEpoch, KIP-101/279): ``(epoch, end_offset)``.

        - ``requested_epoch`` is UNDEFINED_EPOCH (-1): ``(-1, -1)``;
        - it is the latest epoch: ``(latest, log_end_offset)``;
        - no epoch is greater (an empty cache, or an epoch past the latest):
          ``(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)``;
        - it is below the first epoch: ``(requested_epoch, first start offset)``. Kafka's
          javadoc still says UNDEFINED_EPOCH_OFFSET here, as Kafka 1.x returned; since 2.0
          (KIP-279) the follower gets the first epoch's start and truncates there;
        - otherwise ``(largest epoch <= requested_epoch, start offset of the first epoch >
          requested_epoch)``.

        ``ValueError`` unless ``requested_epoch`` is an int32 and ``log_end_offset`` >= 0.
        """
        requested_epoch = _args.integer("requested_epoch", requested_epoch, _INT32_MIN, INT32_MAX, "an int32")
        log_end_offset = _args.offset("log_end_offset", log_end_offset)
        entries = self._entries
        if requested_epoch == UNDEFINED_EPOCH:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if entries and entries[-1].epoch == requested_epoch:
            return requested_epoch, log_end_offset
        higher = bisect.bisect_right([entry.epoch for entry in entries], requested_epoch)
        if higher == len(entries):
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if higher == 0:
            return requested_epoch, entries[0].start_offset
        return entries[higher - 1].epoch, entries[higher].start_offset

    # --- changing ---

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that ``epoch`` starts at ``start_offset``; True if the cache changed (and the
        file was written), False if Kafka ignores it.

        Kafka's rule (LeaderEpochFileCache.assign): ignored only when ``epoch`` is the latest
        epoch and ``start_offset`` is not before its start (an epoch's start is never moved
        later). Otherwise every entry with an epoch >= ``epoch`` or a start offset >=
        ``start_offset`` is dropped and the new entry appended, so an older epoch is taken too,
        truncating the newer ones. ``ValueError`` for a negative epoch or start offset (Kafka's
        IllegalArgumentException).
        """
        epoch = _args.integer("epoch", epoch, 0, INT32_MAX, "in [0, 2^31-1]")
        start_offset = _args.offset("start_offset", start_offset)
        entries = _assigned(self._entries, EpochEntry(epoch, start_offset))
        if entries is None:
            return False
        self._persist(entries)
        return True

    def truncate_from_end(self, end_offset: int) -> None:
        """Drop every entry starting at or after ``end_offset`` (a replica truncating its log to
        ``end_offset``, KIP-101/279). UNDEFINED_EPOCH_OFFSET (-1) changes nothing, as in Kafka;
        ``ValueError`` below -1."""
        end_offset = _args.integer("end_offset", end_offset, -1, INT64_MAX, "-1 or in [0, 2^63-1]")
        if end_offset < 0:
            return
        kept = len(self._entries)
        while kept and self._entries[kept - 1].start_offset >= end_offset:
            kept -= 1
        if kept != len(self._entries):
            self._persist(self._entries[:kept])

    def truncate_from_start(self, start_offset: int) -> None:
        """The log start offset moved to ``start_offset``: drop the entries starting at or
        before it and put the last of them back starting at ``start_offset`` (the epoch of the
        record there). Nothing changes if the first epoch starts at or after ``start_offset``.
        UNDEFINED_EPOCH_OFFSET (-1) changes nothing, as in Kafka; ``ValueError`` below -1."""
        start_offset = _args.integer("start_offset", start_offset, -1, INT64_MAX, "-1 or in [0, 2^63-1]")
        entries = self._entries
        dropped = bisect.bisect_right([entry.start_offset for entry in entries], start_offset)
        if dropped == 0:
            return
        moved = EpochEntry(entries[dropped - 1].epoch, start_offset)
        if dropped == 1 and moved == entries[0]:
            return  # the first epoch starts exactly there: Kafka rewrites the same entry
        self._persist([moved, *entries[dropped:]])

    def clear(self) -> None:
        """Drop every entry and write the empty checkpoint (Kafka's clearAndFlush)."""
        self._persist([])


# --- partition directories -----------------------------------------------------------------


def parse_partition_directory(name: str) -> tuple[str, int]:
    """``(topic, partition)`` from a partition directory's name, ``<topic>-<partition>``
    (Kafka's parseTopicPartitionName): the topic is everything before the last ``-`` (it may
    hold ``-`` itself) and must be a legal topic name, the partition the decimal digits after
    it, an int32 without leading zeros.

    ``ValueError`` for anything else, Kafka's ``.<id>-delete``, ``-future`` and ``-stray``
    directories included (a log being deleted or moved, not one to load); ``TypeError`` if
    ``name`` is not a ``str``.

    >>> parse_partition_directory("__consumer_offsets-49")
    ('__consumer_offsets', 49)
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    topic, dash, digits = name.rpartition("-")
    expected = "expected '<topic>-<partition>' (a legal topic name, a partition number in [0, 2^31-1])"
    if not dash or not re.fullmatch(r"0|[1-9][0-9]*", digits) or int(digits) > INT32_MAX:
        raise ValueError(f"{expected}, found {name!r}")
    if not _is_topic(topic):
        raise ValueError(f"{expected}, found {name!r}: {topic!r} is not a legal topic name")
    return topic, int(digits)


def partition_directory_name(topic: str, partition: int) -> str:
    """Kafka's directory name for a partition: ``f"{topic}-{partition}"``.

    >>> partition_directory_name("orders-eu", 3)
    'orders-eu-3'
    """
    return f"{_topic(topic)}-{_partition(partition)}"
