"""Kafka's v2 record batches (spec §8): headers read straight from bytes, the record-level
rules of a produce request (spec §2.1 rules 1, 3, 5-8), and appends of a whole buffer of
batches to a producer-state table, with offsets written in place as a leader does.

The functions are the compiled ones (``dedup._records``) unless ``DEDUP_PURE_PYTHON=1``
binds the pure-Python twins (``dedup.reference.records``). :func:`append_batches` picks the
implementation that matches the table it is given.

``python -m dedup dump-log FILE`` prints a ``.log`` segment the way Kafka's
``kafka-dump-log.sh`` does (see :func:`dump_main`).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import sys
from collections.abc import Sequence
from typing import Any

from ._config import PURE_PYTHON
from ._types import BATCH_HEADER_DTYPE, BatchesAppendResult, Origin, wrap_increment
from .errors import KafkaError
from .reference import records as _twin

if PURE_PYTHON:
    from .reference.crc32c import crc32c
    from .reference.records import check_one_batch, crc_valid, scan_batches, validate_batches
else:
    from ._records import (  # type: ignore[no-redef]
        check_one_batch,
        crc32c,
        crc_valid,
        scan_batches,
        validate_batches,
    )

__all__ = [
    "BATCH_HEADER_DTYPE",
    "BatchesAppendResult",
    "append_batches",
    "check_one_batch",
    "crc32c",
    "crc_valid",
    "dump_main",
    "scan_batches",
    "validate_batches",
]

COMPRESSION_NAMES = ("none", "gzip", "snappy", "lz4", "zstd")


def append_batches(
    table: Any,
    data: Any,
    *,
    origin: Origin = Origin.CLIENT,
    log_end_offset: int | None = None,
    partition_leader_epoch: int | None = None,
    write_offsets: bool = False,
    tail: str = "raise",
) -> BatchesAppendResult:
    """Append a buffer of v2 batches to ``table`` as Kafka's log does, one verdict per batch
    (see ``dedup._records.append_batches``); compiled for the compiled table, the twin's
    for the twin."""
    implementation = _twin.append_batches
    if type(table).__module__ == "dedup._state":  # the compiled table, even with DEDUP_PURE_PYTHON=1
        implementation = _compiled_append_batches()

    return implementation(
        table,
        data,
        origin=origin,
        log_end_offset=log_end_offset,
        partition_leader_epoch=partition_leader_epoch,
        write_offsets=write_offsets,
        tail=tail,
    )


def _compiled_append_batches() -> Any:
    global _COMPILED_APPEND_BATCHES
    if _COMPILED_APPEND_BATCHES is None:
        from ._records import append_batches as compiled

        _COMPILED_APPEND_BATCHES = compiled
    return _COMPILED_APPEND_BATCHES


_COMPILED_APPEND_BATCHES: Any = None


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
        "deleteHorizonMs": int(header["base_timestamp"]) if attributes & 0x40 else None,
        "position": int(header["position"]),
        "timestampType": "LogAppendTime" if header["timestamp_type"] else "CreateTime",
        "maxTimestamp": int(header["max_timestamp"]),
        "size": int(header["batch_length"]) + 12,
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


def dump_main(argv: Sequence[str] | None = None) -> int:
    """``python -m dedup dump-log FILE [--json]``: every batch of a ``.log`` segment, one line
    each, as Kafka's kafka-dump-log.sh prints them (CRC checked); ``--json`` for machines.
    A torn tail is reported as Kafka does ("Found N invalid bytes at the end of ..."); a
    corrupt or unreadable file is one line on stderr and exit status 1."""
    parser = argparse.ArgumentParser(prog="python -m dedup dump-log", description=dump_main.__doc__)
    parser.add_argument("file", help="a Kafka log segment (.log), or any file of v2 batches")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of lines")
    args = parser.parse_args(argv)
    name = os.path.basename(args.file)
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
    valid_bytes = int(headers["position"][-1] + headers["batch_length"][-1] + 12) if len(headers) else 0
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
    if error is not None:
        print(f"dump-log: {args.file}: {error}", file=sys.stderr)
        return 1
    return 0

