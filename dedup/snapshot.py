"""Producer-state snapshot files: Kafka's format and dedup's full-window format.

A snapshot is the state of a producer-state table at its map end offset (spec §4). Two
formats, big-endian, checksummed with CRC-32C (layouts field by field in
``src_cython/dedup/_snapshot.pxd`` and :mod:`dedup.reference.snapshot`):

``"kafka"``
    Byte for byte Kafka's ``<offset>.snapshot`` (version 1, spec §4.2-4.4): only each
    producer's last batch, so after a reload the duplicate window is one batch until new
    batches arrive.
``"full"``
    dedup's own: every retained batch (the whole window), the window and the map end offset,
    under a magic (``b"DDPS"``) and a CRC over everything. The default. Version 2 is written:
    one fixed-width record per producer (55 + 12 x (window - 1) bytes: 103 at window 5), the
    newest batch in full and the older ones as narrow gaps from it, any value that does not fit
    its field escaped to a list after the records. Version 1 (every batch in 24 bytes: 151
    bytes per producer at window 5) is still read.

:func:`encode_snapshot`/:func:`decode_snapshot` work on bytes, :func:`write_snapshot`/
:func:`read_snapshot` on files (atomically written). A compiled table goes through the
compiled codec (``dedup._snapshot``, straight from the C struct), a pure-Python one through
the twin (:mod:`dedup.reference.snapshot`); both give the same bytes and the same errors.
A file that fails validation raises :class:`~dedup.errors.CorruptSnapshotError`; a bad
argument ``TypeError``/``ValueError`` naming it.

>>> from dedup import ProducerStateTable
>>> table = ProducerStateTable()
>>> _ = table.append(1000, 0, 0, 1, 0)
>>> copy = decode_snapshot(encode_snapshot(table))
>>> copy.append(1000, 0, 0, 1, 1).duplicate
True
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from typing import Any

from . import _args
from ._backend import implementation_of, resolve_table_class
from ._files import write_all, write_atomically
from ._types import DEFAULT_WINDOW, INT64_MAX
from .errors import CorruptSnapshotError

__all__ = [
    "SNAPSHOT_FORMATS",
    "decode_snapshot",
    "encode_snapshot",
    "read_snapshot",
    "snapshot_file_name",
    "snapshot_format",
    "snapshot_offset",
    "write_snapshot",
]

#: The formats :func:`encode_snapshot` and :func:`write_snapshot` can write.
SNAPSHOT_FORMATS = ("full", "kafka")

MAGIC = b"DDPS"
SNAPSHOT_SUFFIX = ".snapshot"
_KAFKA_FILE_NAME = re.compile(r"([0-9]{20})\.snapshot")
_KAFKA_CRC_OFFSET = 2  # where Kafka's crc sits, patched once the entries are written (spec §4.3)
#: The compiled writer's piece size: small enough to stay in the L2 cache between the encoder
#: writing it and the kernel copying it, large enough that the system calls do not count.
WRITE_BUFFER_BYTES = 256 * 1024
#: Files from this size on are read through a read-only memory map rather than copied.
MMAP_MIN_BYTES = 1 << 20


# --- arguments ----------------------------------------------------------------------------


def _format(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"format must be one of {SNAPSHOT_FORMATS}, got {value!r}")
    if value not in SNAPSHOT_FORMATS:
        raise ValueError(f"format must be one of {SNAPSHOT_FORMATS}, got {value!r}")
    return value


def _buffer(data: Any) -> memoryview:
    try:
        return memoryview(data).cast("B")
    except TypeError as error:
        raise TypeError(f"data must be a C-contiguous buffer, got {type(data).__name__}: {error}") from None


# --- bytes --------------------------------------------------------------------------------


def encode_snapshot(table: Any, format: str = "full") -> bytes:
    """The snapshot of ``table`` in ``format`` (``"full"`` or ``"kafka"``), as bytes.

    Entries are written in the table's order (insertion order in both twins), so the same
    state gives the same bytes from either twin. ``"kafka"`` keeps each producer's last batch
    only (spec §4.3). ``"full"`` raises ``ValueError`` for a table its reader would reject
    (offsets at or past the map end offset: only a table loaded from a Kafka snapshot with a
    smaller ``map_end_offset`` can hold them).
    """
    codec = implementation_of(table).snapshot
    if _format(format) == "full":
        return codec.encode_full(table)
    return codec.encode_kafka(table)


def snapshot_format(data: Any) -> str:
    """Which format ``data`` is in: ``"full"`` if it starts with ``b"DDPS"``, ``"kafka"`` if
    it starts with version 1 (int16); ``CorruptSnapshotError`` otherwise. Only the first
    bytes are looked at: :func:`decode_snapshot` validates the rest."""
    view = _buffer(data)
    if view[:4] == MAGIC:
        return "full"
    if len(view) < 2:
        raise CorruptSnapshotError(f"snapshot too short: expected at least 10 bytes, found {len(view)}")
    (version,) = struct.unpack_from(">h", view, 0)
    if version == 1:
        return "kafka"
    raise CorruptSnapshotError(
        f"unknown file version: expected version 1 (Kafka's format) or magic {MAGIC!r} (full format), "
        f"found version {version} (first bytes {bytes(view[:4])!r})"
    )


def decode_snapshot(
    data: Any,
    *,
    window: int | None = None,
    map_end_offset: int | None = None,
    table_class: type | None = None,
) -> Any:
    """A new table holding the state in ``data`` (either format, detected by
    :func:`snapshot_format`); ``CorruptSnapshotError`` if it fails validation.

    - Full format: the file carries its window and map end offset. ``window`` and
      ``map_end_offset`` may be given to assert them: a different value is a ``ValueError``.
    - Kafka's format: ``window`` is the new table's (default 5, Kafka's; the file holds at most
      one batch per producer) and ``map_end_offset`` its map end offset (default 0; Kafka takes
      it from the file name, as :func:`read_snapshot` does).

    ``table_class`` is the class of the new table: ``None`` for ``dedup.ProducerStateTable``
    (the compiled one unless ``DEDUP_PURE_PYTHON=1``), or either twin's class.
    """
    view = _buffer(data)
    cls, implementation = resolve_table_class(table_class)
    codec = implementation.snapshot
    if window is not None:
        window = _args.window(window)
    if map_end_offset is not None:
        map_end_offset = _args.offset("map_end_offset", map_end_offset)
    if snapshot_format(view) == "kafka":
        return codec.decode_kafka(
            view,
            DEFAULT_WINDOW if window is None else window,
            0 if map_end_offset is None else map_end_offset,
            cls,
        )
    table = codec.decode_full(view, cls)
    if window is not None and window != table.window:
        raise ValueError(f"window {window} differs from the full snapshot's window {table.window}")
    if map_end_offset is not None and map_end_offset != table.map_end_offset:
        raise ValueError(
            f"map_end_offset {map_end_offset} differs from the full snapshot's map end offset {table.map_end_offset}"
        )
    return table


# --- files --------------------------------------------------------------------------------


def snapshot_file_name(offset: int) -> str:
    """Kafka's name for the snapshot at ``offset`` (spec §4.1): ``"%020d.snapshot"``.

    >>> snapshot_file_name(1234)
    '00000000000000001234.snapshot'
    """
    return f"{_args.offset('offset', offset):020d}{SNAPSHOT_SUFFIX}"


def snapshot_offset(path: Any) -> int:
    """The offset in a snapshot file's name: the digits before the first ``"."`` (spec §4.1,
    as Kafka parses it); ``ValueError`` if there are none or they pass 2^63-1.

    >>> snapshot_offset("/data/topic-0/00000000000000001234.snapshot")
    1234
    """
    name = os.path.basename(os.fsdecode(_args.path("path", path)))
    digits, dot, _ = name.partition(".")
    if not dot or not re.fullmatch(r"[0-9]+", digits) or int(digits) > INT64_MAX:
        raise ValueError(
            f"path {os.fsdecode(path)!r}: expected a file name that starts with an offset and a '.' "
            f"(like {snapshot_file_name(1234)!r}), found {name!r}"
        )
    return int(digits)


def _write_pieces(descriptor: int, writer: Any, table: Any, format: str) -> None:
    """The compiled table's snapshot through one small buffer, reused: the file is never whole in
    memory (151 MB for 1,000,000 producers with full windows). The table is busy meanwhile."""
    buffer = bytearray(WRITE_BUFFER_BYTES)
    view = memoryview(buffer)
    with writer(table, format) as pieces:
        while size := pieces.fill(buffer):
            write_all(descriptor, view[:size])
        if pieces.crc_offset is not None:
            os.lseek(descriptor, pieces.crc_offset, os.SEEK_SET)
            write_all(descriptor, struct.pack(">I", pieces.crc))


def write_snapshot(path: Any, table: Any, format: str = "full", *, sync: bool = True) -> None:
    """Write the snapshot of ``table`` to ``path``, atomically.

    The bytes go to a new temporary file in the same directory, which is fsynced, renamed over
    ``path`` (``os.replace``) and the directory fsynced: a reader sees the old file or the new
    one, whole, never a mix, and after a crash the new one survives. On any error before the
    rename, the temporary file is removed and ``path`` is untouched. ``sync=False`` skips
    both fsyncs (Kafka's ``takeSnapshot(sync=false)`` on a segment roll, spec §4.5): still
    atomic for readers, not durable across a power loss.

    Unlike Kafka's writer, which opens the file without truncating it (spec §10), rewriting an
    existing snapshot with a shorter one cannot leave stale bytes behind.

    A compiled table is encoded piece by piece into a small reused buffer (the bytes equal
    :func:`encode_snapshot`'s); meanwhile it is busy: another thread using it gets a
    ``RuntimeError``. A pure-Python table is encoded whole first.
    """
    path = _args.path("path", path)
    codec = implementation_of(table).snapshot  # a bad argument changes nothing on disk
    format = _format(format)
    sync = _args.flag("sync", sync)
    writer = getattr(codec, "SnapshotWriter", None)  # the compiled codec writes in pieces
    data = None if writer is not None else encode_snapshot(table, format)

    def write(descriptor: int) -> None:
        if data is None:
            _write_pieces(descriptor, writer, table, format)
        else:
            write_all(descriptor, data)

    write_atomically(path, write, sync=sync)


def _read(path: Any, window: int | None, map_end_offset: int | None, table_class: Any) -> tuple[str, int, Any]:
    """The format, its version and the table of the snapshot file at ``path``."""
    with open(_args.path("path", path), "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        # A large file is mapped, not copied: the page cache is read in place (about 4x faster
        # for 151 MB here than read() into fresh memory). The mapping is unmapped when the last
        # view of it goes. A snapshot is never changed in place (write_snapshot renames a new
        # file over it), so it cannot shrink under the reader; a file that another program
        # truncates while it is read would end the process with SIGBUS, as for Kafka's own
        # memory-mapped index files.
        data: Any = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size >= MMAP_MIN_BYTES else handle.read()
    kind = snapshot_format(data)
    if kind == "kafka" and map_end_offset is None:
        found = _KAFKA_FILE_NAME.fullmatch(os.path.basename(os.fsdecode(path)))
        map_end_offset = int(found.group(1)) if found and int(found.group(1)) <= INT64_MAX else 0
    table = decode_snapshot(data, window=window, map_end_offset=map_end_offset, table_class=table_class)
    return kind, struct.unpack_from(">h", data, 4 if kind == "full" else 0)[0], table


def read_snapshot(
    path: Any,
    *,
    window: int | None = None,
    map_end_offset: int | None = None,
    table_class: type | None = None,
) -> Any:
    """A new table from the snapshot file at ``path`` (either format), as :func:`decode_snapshot`.

    For Kafka's format, ``map_end_offset`` defaults to the offset in the file's name when it is
    Kafka's ``%020d.snapshot`` (spec §4.1), else 0. ``OSError`` if the file cannot be read,
    ``CorruptSnapshotError`` if it fails validation (Kafka then deletes it and tries the
    next-latest snapshot, spec §4.4: that is the caller's decision here).
    """
    return _read(path, window, map_end_offset, table_class)[2]

