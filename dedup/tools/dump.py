"""``python -m dedup dump-log FILE`` and ``dump-snapshot FILE``: Kafka's files as
``kafka-dump-log.sh`` prints them (``DumpLogSegments``), one line per batch, per aborted
transaction (a ``.txnindex``) or per producer, or one JSON document with ``--json``. Exit
status 1, with one line on stderr, for a file that is not sound.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import struct
import sys
from collections.abc import Sequence
from typing import Any

from .._layout import ATTR_DELETE_HORIZON, COMPRESSION_NAMES, LOG_OVERHEAD
from .._types import wrap_increment
from ..errors import CorruptSnapshotError, KafkaError
from ..records import crc_valid, scan_batches
from ..snapshot import read_snapshot, snapshot_format
from ..transaction_index import ABORTED_TXN_SIZE, ABORTED_TXN_VERSION, TXN_INDEX_SUFFIX, AbortedTxn, CorruptIndexError
from . import cli

# --- dump-log -----------------------------------------------------------------------------


def batch_description(header: Any, valid: bool) -> dict[str, Any]:
    """One batch as kafka-dump-log.sh describes it (Kafka's field names)."""
    attributes = int(header["attributes"])
    base_offset, delta = int(header["base_offset"]), int(header["last_offset_delta"])
    compression, sequence = int(header["compression"]), int(header["base_sequence"])
    return {
        "baseOffset": base_offset,
        "lastOffset": base_offset + delta,
        "count": int(header["record_count"]),
        "baseSequence": int(header["base_sequence"]),
        "lastSequence": -1 if sequence == -1 else wrap_increment(sequence, delta),
        "producerId": int(header["producer_id"]),
        "producerEpoch": int(header["producer_epoch"]),
        "partitionLeaderEpoch": int(header["partition_leader_epoch"]),
        "isTransactional": bool(header["is_transactional"]),
        "isControl": bool(header["is_control"]),
        "deleteHorizonMs": int(header["base_timestamp"]) if attributes & ATTR_DELETE_HORIZON else None,
        "position": int(header["position"]),
        "timestampType": "LogAppendTime" if header["timestamp_type"] else "CreateTime",
        "maxTimestamp": int(header["max_timestamp"]),
        "size": int(header["batch_length"]) + LOG_OVERHEAD,
        "magic": int(header["magic"]),
        "compresscodec": COMPRESSION_NAMES[compression] if compression < len(COMPRESSION_NAMES) else str(compression),
        "crc": int(header["crc"]),
        "isvalid": bool(valid),
    }


def _java(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def batch_line(batch: dict[str, Any]) -> str:
    """The line kafka-dump-log.sh prints for a v2 batch (DumpLogSegments.printBatchLevel)."""
    horizon = batch["deleteHorizonMs"]
    names = ("baseOffset", "lastOffset", "count", "baseSequence", "lastSequence", "producerId", "producerEpoch",
             "partitionLeaderEpoch", "isTransactional", "isControl")
    line = " ".join(f"{name}: {_java(batch[name])}" for name in names)
    line += " deleteHorizonMs: " + ("OptionalLong.empty" if horizon is None else f"OptionalLong[{horizon}]")
    line += f" position: {batch['position']} {batch['timestampType']}: {batch['maxTimestamp']}"
    line += " ".join(
        ["", *(f"{name}: {_java(batch[name])}" for name in ("size", "magic", "compresscodec", "crc", "isvalid"))]
    )
    return line


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", help="a Kafka log segment (.log) or any file of v2 batches, or a transaction index (.txnindex)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON document instead of lines")


def _log_problems(error: KafkaError | None, batches: list[dict[str, Any]], invalid_bytes: int) -> list[str]:
    """What makes the segment corrupt, for the one line on stderr (empty: it is sound)."""
    problems = [str(error)] if error is not None else []
    bad = [batch for batch in batches if not batch["isvalid"]]
    if bad:
        which = "batch fails" if len(bad) == 1 else "batches fail"
        first = bad[0]["position"]
        problems.append(f"{len(bad)} {which} the CRC check (isvalid: false), the first at position {first}")
    if error is None and invalid_bytes:
        problems.append(f"{invalid_bytes} invalid bytes at the end (a torn batch)")
    return problems


def read_txn_index(data: bytes, base_offset: int | None) -> tuple[list[AbortedTxn], CorruptIndexError | None]:
    """The entries of a ``.txnindex`` file's bytes, up to the first that cannot be right, and
    the :class:`~dedup.transaction_index.CorruptIndexError` saying why (None for a sound file):
    a version other than 0 (Kafka's TransactionIndex iterator: "Unexpected aborted transaction
    version"), a last offset below the segment's base offset (``base_offset``, from the file
    name; TransactionIndex.sanityCheck), last offsets that do not increase (TransactionIndex
    .append's rule), or a torn entry at the end."""
    entries: list[AbortedTxn] = []
    whole = len(data) - len(data) % ABORTED_TXN_SIZE
    for position in range(0, whole, ABORTED_TXN_SIZE):
        try:
            entry = AbortedTxn.from_bytes(data, position)
        except CorruptIndexError as error:
            return entries, error
        if base_offset is not None and entry.last_offset < base_offset:
            return entries, CorruptIndexError(
                f"last offset of aborted transaction {entry} at position {position} is less than "
                f"start offset {base_offset}"
            )
        if entries and entry.last_offset <= entries[-1].last_offset:
            return entries, CorruptIndexError(
                f"last offsets do not increase at position {position}: {entry.last_offset} after "
                f"{entries[-1].last_offset}"
            )
        entries.append(entry)
    if whole < len(data):
        return entries, CorruptIndexError(
            f"{len(data) - whole} bytes at the end are not a whole {ABORTED_TXN_SIZE}-byte entry"
        )
    return entries, None


def txn_line(entry: AbortedTxn) -> str:
    """The line kafka-dump-log.sh prints for an aborted transaction (DumpLogSegments.dumpTxnIndex)."""
    return (
        f"version: {ABORTED_TXN_VERSION} producerId: {entry.producer_id} firstOffset: {entry.first_offset} "
        f"lastOffset: {entry.last_offset} lastStableOffset: {entry.last_stable_offset}"
    )


def dump_txn_index(args: argparse.Namespace) -> int:
    """dump-log of a ``.txnindex``: one line per AbortedTxn, as kafka-dump-log.sh prints it
    (DumpLogSegments.dumpTxnIndex), or ``--json``. A corrupt file prints the entries before the
    corruption, then one line on stderr (the CorruptIndexError), exit status 1."""
    name = os.path.basename(args.file)
    try:
        with open(args.file, "rb") as handle:
            data = handle.read()
    except OSError as caught:
        print(f"dump-log: {args.file}: {caught.strerror or caught}", file=sys.stderr)
        return 1
    start = name[: -len(TXN_INDEX_SUFFIX)]
    base_offset = int(start) if start.isdigit() else None
    entries, error = read_txn_index(data, base_offset)
    if args.json:
        document = {
            "file": args.file,
            "base_offset": base_offset,
            "aborted_transactions": [
                {
                    "version": ABORTED_TXN_VERSION,
                    "producerId": entry.producer_id,
                    "firstOffset": entry.first_offset,
                    "lastOffset": entry.last_offset,
                    "lastStableOffset": entry.last_stable_offset,
                }
                for entry in entries
            ],
            "error": None if error is None else f"{type(error).__name__}: {error}",
        }
        print(json.dumps(document, indent=1))
    else:
        print(f"Dumping {args.file}")
        for entry in entries:
            print(txn_line(entry))
    if error is not None:
        sys.stdout.flush()
        print(f"dump-log: {args.file}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


def dump_log(args: argparse.Namespace) -> int:
    """``python -m dedup dump-log FILE [--json]``: every batch of a ``.log`` segment, one line
    each, as Kafka's kafka-dump-log.sh prints them (CRC checked); ``--json`` for machines. A
    ``.txnindex`` file prints one line per aborted transaction, as Kafka's tool does.

    A torn tail is reported as Kafka does ("Found N invalid bytes at the end of ..."). Exit
    status 1 with one line on stderr when the file is not sound: unreadable, a corrupt batch
    header (the batches before it are still printed), a batch whose CRC does not match
    (printed with ``isvalid: false``), a torn tail, or a corrupt transaction index (the
    entries before the corruption are printed)."""
    name = os.path.basename(args.file)
    if name.endswith(TXN_INDEX_SUFFIX):
        return dump_txn_index(args)
    try:
        with open(args.file, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            data: Any = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        try:
            error: KafkaError | None = None
            try:
                headers = scan_batches(data, tail="ignore")
            except KafkaError as caught:  # corrupt mid-file: what came before it is still shown
                error, headers = caught, caught.headers  # type: ignore[attr-defined]
            valid = crc_valid(data, headers)
        finally:
            if size:
                data.close()
    except OSError as caught:
        print(f"dump-log: {args.file}: {caught.strerror or caught}", file=sys.stderr)
        return 1
    batches = [batch_description(header, ok) for header, ok in zip(headers, valid, strict=True)]
    valid_bytes = int(headers["position"][-1] + headers["batch_length"][-1] + LOG_OVERHEAD) if len(headers) else 0
    start = name.split(".")[0]
    if args.json:
        document = {
            "file": args.file,
            "log_start_offset": int(start) if name.endswith(".log") and start.isdigit() else None,
            "batches": batches,
            "valid_bytes": valid_bytes,
            "invalid_bytes": size - valid_bytes,
            "error": str(error) if error else None,
        }
        print(json.dumps(document, indent=1))
    else:
        print(f"Dumping {args.file}")
        if name.endswith(".log") and start.isdigit():
            print(f"Log starting offset: {int(start)}")
        for batch in batches:
            print(batch_line(batch))
        if error is None and size > valid_bytes:
            print(f"Found {size - valid_bytes} invalid bytes at the end of {name}")
    problems = _log_problems(error, batches, size - valid_bytes)
    if problems:
        sys.stdout.flush()  # the lines first, then the verdict, when both go to one terminal
        print(f"dump-log: {args.file}: {'; '.join(problems)}", file=sys.stderr)
        return 1
    return 0


DUMP_LOG = cli.Command("dump-log", dump_log.__doc__, add_log_arguments, dump_log)


def dump_log_main(argv: Sequence[str] | None = None) -> int:
    """``python -m dedup dump-log ARGV`` in this process."""
    return DUMP_LOG.main(argv)


# --- dump-snapshot ------------------------------------------------------------------------


def _optional_long(value: int | None) -> str:
    """Java's OptionalLong.toString, as kafka-dump-log.sh prints currentTxnFirstOffset."""
    return "OptionalLong.empty" if value is None else f"OptionalLong[{value}]"


def _producer_document(entry: Any) -> dict[str, Any]:
    return {
        "producer_id": entry.producer_id,
        "producer_epoch": entry.producer_epoch,
        "coordinator_epoch": entry.coordinator_epoch,
        "current_txn_first_offset": entry.current_txn_first_offset,
        "last_timestamp": entry.last_timestamp,
        "batches": [
            {
                "first_sequence": batch.first_sequence,
                "last_sequence": batch.last_sequence,
                "first_offset": batch.first_offset,
                "last_offset": batch.last_offset,
                "offset_delta": batch.offset_delta,
                "timestamp": batch.timestamp,
            }
            for batch in entry.batches
        ],
    }


def _producer_line(entry: Any) -> str:
    """The line kafka-dump-log.sh prints for a producer (DumpLogSegments.dumpProducerIdSnapshot,
    Kafka 4.x), with every retained batch where Kafka's format has at most one."""
    line = (
        f"producerId: {entry.producer_id} producerEpoch: {entry.producer_epoch} "
        f"coordinatorEpoch: {entry.coordinator_epoch} "
        f"currentTxnFirstOffset: {_optional_long(entry.current_txn_first_offset)} "
        f"lastTimestamp: {entry.last_timestamp}"
    )
    for batch in entry.batches:
        line += (
            f" firstSequence: {batch.first_sequence} lastSequence: {batch.last_sequence} "
            f"lastOffset: {batch.last_offset} offsetDelta: {batch.offset_delta} timestamp: {batch.timestamp}"
        )
    return line


def add_snapshot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a producer-state snapshot (Kafka's <offset>.snapshot or dedup's full format)")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of lines")


def dump_snapshot(args: argparse.Namespace) -> int:
    """``python -m dedup dump-snapshot FILE [--json]``: every producer of a snapshot file,
    one line each, as Kafka's kafka-dump-log.sh prints a ``.snapshot``; ``--json`` for machines.

    Either format. Kafka's lines are its own (4.x wording); for the full format a line lists
    every retained batch, oldest first, after a ``version: ... window: ... mapEndOffset: ...``
    line. The file is validated whole before anything is printed (every length, count and
    the CRC): a corrupt, truncated, unreadable or missing file is one line on stderr and exit
    status 1, with nothing on stdout.
    """
    try:
        table = read_snapshot(args.file)
        with open(args.file, "rb") as handle:  # read_snapshot has validated it: its first bytes say what it is
            head = handle.read(6)
        kind = snapshot_format(head)
        (version,) = struct.unpack_from(">h", head, 4 if kind == "full" else 0)
    except OSError as error:
        print(f"dump-snapshot: {args.file}: {error.strerror or error}", file=sys.stderr)
        return 1
    except CorruptSnapshotError as error:
        print(f"dump-snapshot: {args.file}: {error}", file=sys.stderr)
        return 1
    entries = [table.entry(producer_id) for producer_id in table]
    if args.json:
        document = {
            "file": args.file,
            "format": kind,
            "version": version,
            "window": table.window if kind == "full" else None,  # Kafka's file has none (one batch)
            "map_end_offset": table.map_end_offset,
            "producers": [_producer_document(entry) for entry in entries],
        }
        print(json.dumps(document, indent=1))
        return 0
    print(f"Dumping {args.file}")
    if kind == "full":
        print(f"version: {version} window: {table.window} mapEndOffset: {table.map_end_offset}")
    for entry in entries:
        print(_producer_line(entry))
    return 0


DUMP_SNAPSHOT = cli.Command("dump-snapshot", dump_snapshot.__doc__, add_snapshot_arguments, dump_snapshot)


def dump_snapshot_main(argv: Sequence[str] | None = None) -> int:
    """``python -m dedup dump-snapshot ARGV`` in this process."""
    return DUMP_SNAPSHOT.main(argv)
