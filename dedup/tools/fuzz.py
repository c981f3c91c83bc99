"""``python -m dedup fuzz``: a seeded, time-bounded mutation fuzzer over everything that reads bytes.

Seed inputs come from a corpus directory (``tests/fuzz_corpus/`` in the repository: v2 batches,
snapshot files of both formats, Kafka request frames, and in ``found/`` the inputs of past
findings; :func:`seed_inputs` when there is no directory). Each execution takes a seed, mutates
it (bit flips, bytes and big-endian fields set to interesting values, length-field edits,
truncation, extension, splicing with another input, CRCs made right again half of the time so
the checks behind the CRC are reached) and feeds it to one target. Each target states the
exceptions bad bytes may raise (its contract):

- ``scan_batches``: the compiled scan, both tails, equal to the pure-Python twin's, batches back
  to back from 0. May raise ``CorruptRecordError`` (``TruncatedBatchError`` included) and
  ``InvalidRecordError``, carrying ``.valid_bytes`` and ``.headers``.
- ``validate_batches``: every origin, and ``tail="ignore"``. The same two.
- ``crc_valid``: without headers (the scan's errors), then with the headers of a good scan
  (nothing: it must return, with the same verdicts).
- ``append_batches``: into a small seeded compiled table, as a leader writing offsets into a
  writable copy, a follower, the coordinator; verdicts, offsets and the bytes written checked.
  The scan's errors (a batch's own verdict is in the result, not raised).
- ``decode_records``: ``dedup.batch.decode_records``, control batches skipped and kept.
  ``CorruptRecordError``.
- ``decode_snapshot``: ``decode_snapshot`` and each codec's Kafka and full reader, both twins,
  which must agree (the message, or the state). ``CorruptSnapshotError``.
- ``read_snapshot``: the bytes written to a Kafka-named file and read back, as
  ``decode_snapshot`` reads them. ``CorruptSnapshotError``.
- ``parse_request``: ``dedup.server.wire.parse_request``. ``BadRequest``.
- ``serve_request``: a request that parses goes through its handler in ``dedup.server.apis`` on
  an in-process ``KafkaServer`` (no sockets; Fetch without its wait) and the response is
  encoded. ``BadRequest`` from parsing; nothing from a handler (the server would log an
  internal error and close the connection).

Anything else is a finding: an untyped exception, a broken invariant, an "Exception ignored"
(a swallowed error in a ``noexcept`` function), a crash (a signal) or a hang (an execution
longer than ``--timeout``). The input is saved to ``--crashes DIR`` as ``<target>-<hash>.bin``
with ``<target>-<hash>.txt`` beside it (the traceback, or the signal and the faulthandler dump).

The executions run in a forked worker process that records each input in shared memory before
running it, so a crash or a hang still names its input; the parent saves it and starts a new
worker for the rest of the time. ``--replay DIR`` runs every file under DIR (the corpus, saved
findings) through every target once: what the AddressSanitizer build replays (``tools/asan.sh``).

Usage::

    python -m dedup fuzz --seconds 60 --seed 1
    python -m dedup fuzz --target scan_batches --target append_batches --seconds 300
    python -m dedup fuzz --replay tests/fuzz_corpus --replay fuzz-crashes

The exit status is 0 with no finding, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import gc
import hashlib
import json
import logging
import mmap
import os
import random
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TARGETS", "FuzzInvariantError", "Target", "main", "mutate", "seed_inputs"]

MAX_INPUT = 1 << 16  # mutated inputs are cut here: the bugs worth finding show up in small inputs
DEFAULT_CORPUS = Path("tests") / "fuzz_corpus"
KINDS = ("batches", "snapshots", "frames")
TIMESTAMP = 1_767_225_600_000
SERVER_REFRESH = 2000  # serve_request executions before the in-process server starts afresh

_INTERESTING_BYTES = (0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF)
_INTERESTING_16 = (0, 1, -1, 2, 0x7FFF, -0x8000, 5, 255)
_INTERESTING_32 = (0, 1, -1, 2, 12, 49, 61, 0x7FFFFFFF, -0x80000000, 0x7FFFFFF0, 65535)
_INTERESTING_64 = (0, 1, -1, (1 << 63) - 1, -(1 << 63), 1 << 32, TIMESTAMP)


class FuzzInvariantError(AssertionError):
    """A call returned (or raised a typed error), but what it gave is impossible."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise FuzzInvariantError(message)


# --- targets ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    kinds: tuple[str, ...]  # the corpus inputs it starts from most of the time
    expected: Callable[[], tuple[type[BaseException], ...]]  # the errors bad bytes may raise
    contract: str  # the same, said for a reader: anything else is a finding


def _typed(
    expected: tuple[type[BaseException], ...], call: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> tuple[Any, BaseException | None]:
    """(call(*args, **kwargs), None), or (None, error) for an ``expected`` error; anything else propagates."""
    try:
        return call(*args, **kwargs), None
    except expected as error:
        return None, error.with_traceback(None)  # the twin's traceback would keep views of the input


def _scan_errors() -> tuple[type[BaseException], ...]:
    from ..errors import CorruptRecordError, InvalidRecordError

    return CorruptRecordError, InvalidRecordError


def _record_errors() -> tuple[type[BaseException], ...]:
    from ..errors import CorruptRecordError

    return (CorruptRecordError,)


def _snapshot_errors() -> tuple[type[BaseException], ...]:
    from ..errors import CorruptSnapshotError

    return (CorruptSnapshotError,)


def _request_errors() -> tuple[type[BaseException], ...]:
    from ..server.wire import BadRequest

    return (BadRequest,)


def _picture(result: Any, error: BaseException | None) -> Any:
    if error is not None:
        return type(error).__name__, str(error), getattr(error, "valid_bytes", None)
    return result.tobytes()


def _check_scan(data: bytes, headers: Any, complete: bool) -> None:
    """Whatever the bytes, a scan returns batches back to back from 0, each of magic 2 and at least
    the minimum length, and nothing after them but (tail="ignore") a torn batch."""
    end = 0
    for position, length, magic in zip(
        headers["position"].tolist(), headers["batch_length"].tolist(), headers["magic"].tolist(), strict=True
    ):
        _require(position == end, f"batch at {position}, expected {end}")
        _require(length >= 49 and magic == 2, f"batch at {position}: length {length}, magic {magic}")
        end = position + 12 + length
    _require(end <= len(data), f"batches run to {end}, past the {len(data)} bytes")
    rest = data[end:]
    if complete:
        _require(not rest, f"tail='raise' returned with {len(rest)} bytes after the batches")
    elif len(rest) >= 12:
        length = int.from_bytes(rest[8:12], "big", signed=True)
        _require(49 <= length and length + 12 > len(rest), "tail='ignore' left out more than a torn batch")


def _check_scan_error(error: BaseException, data: bytes) -> None:
    valid_bytes: Any = getattr(error, "valid_bytes", None)
    headers = getattr(error, "headers", None)
    _require(valid_bytes is not None and headers is not None, f"{error!r} lacks .valid_bytes or .headers")
    _require(0 <= valid_bytes <= len(data), f"valid_bytes {valid_bytes} outside the {len(data)} bytes")
    _check_scan(data[:valid_bytes], headers, complete=True)


def run_scan_batches(data: bytes) -> None:
    from .. import _records
    from ..errors import TruncatedBatchError
    from ..reference import records as twin

    for tail in ("raise", "ignore"):
        headers, error = _typed(_scan_errors(), _records.scan_batches, data, tail=tail)
        if error is None:
            _check_scan(data, headers, complete=tail == "raise")
        else:
            _check_scan_error(error, data)
            _require(tail == "raise" or not isinstance(error, TruncatedBatchError), "tail='ignore' raised a torn tail")
        twin_headers, twin_error = _typed(_scan_errors(), twin.scan_batches, data, tail=tail)
        _require(
            _picture(headers, error) == _picture(twin_headers, twin_error),
            f"scan_batches(tail={tail!r}): the twins differ: {_picture(headers, error)!r:.300} "
            f"against {_picture(twin_headers, twin_error)!r:.300}",
        )


def run_validate_batches(data: bytes) -> None:
    from .. import _records
    from .._types import Origin

    for origin in (Origin.CLIENT, Origin.REPLICATION, Origin.COORDINATOR):
        headers, error = _typed(_scan_errors(), _records.validate_batches, data, origin=origin)
        if error is None:
            _check_scan(data, headers, complete=True)
    headers, error = _typed(_scan_errors(), _records.validate_batches, data, tail="ignore")
    if error is None:
        _check_scan(data, headers, complete=False)


def run_crc_valid(data: bytes) -> None:
    from .. import _records

    valid, error = _typed(_scan_errors(), _records.crc_valid, data)
    headers, scan_error = _typed(_scan_errors(), _records.scan_batches, data, tail="ignore")
    _require((error is None) == (scan_error is None), "crc_valid(data) and scan_batches(tail='ignore') disagree")
    if headers is not None:
        again = _records.crc_valid(data, headers)  # good headers: must not raise
        _require(again.tolist() == valid.tolist(), "crc_valid with and without headers differ")
        _require(len(again) == len(headers), "crc_valid: one verdict per batch")


def seeded_table() -> Any:
    """A small compiled table with history: producer 1000 (epoch 5, sequences 0-2), producer 2000
    (epoch 1) in a transaction since offset 3, producer 3000 known from a marker. Map end 6."""
    from .._state import ProducerStateTable
    from .._types import Origin

    table = ProducerStateTable()
    table.append(1000, 5, 0, 3, 0, max_timestamp=TIMESTAMP)
    table.append(2000, 1, 0, 2, 3, max_timestamp=TIMESTAMP, transactional=True)
    table.append_marker(3000, 2, 4, 5, commit=True, timestamp=TIMESTAMP, origin=Origin.COORDINATOR)
    return table


_ERROR_CODES = {0, 2, 45, 47, 48, 52, 87}


def _check_append(result: Any, before: bytes, after: bytes, leader: bool) -> None:
    codes = result.error_codes.tolist()
    rows = len(result.headers)
    for column in (result.duplicate, result.base_offsets, result.last_offsets, result.timestamps):
        _require(len(column) == rows, "a result column of the wrong length")
    _require(set(codes) <= _ERROR_CODES, f"unexpected error codes {sorted(set(codes) - _ERROR_CODES)}")
    refused = [row for row, code in enumerate(codes) if code]
    _require(sorted(result.errors) == refused, "errors does not match the refused rows")
    for row in refused:
        _require(result.errors[row].code == codes[row], f"row {row}: the error's code differs from the column")
        _require(result.base_offsets[row] == result.last_offsets[row] == -1, f"row {row}: refused with offsets")
    written = [row for row in range(rows) if codes[row] == 0 and not result.duplicate[row]]
    if leader and written:
        starts, ends = result.base_offsets[written].tolist(), result.last_offsets[written].tolist()
        _require(all(s == e + 1 for s, e in zip(starts[1:], ends[:-1], strict=True)), "leader offsets with a gap")
        _require(result.log_end_offset == ends[-1] + 1, "log_end_offset is not after the last batch")
    allowed: set[int] = set()
    for row in written:
        position = int(result.headers["position"][row])
        allowed.update(range(position, position + 8))
        allowed.update(range(position + 12, position + 16))
    changed = {i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b}
    _require(changed <= allowed, "bytes changed outside an accepted batch's base offset and leader epoch")


def run_append_batches(data: bytes) -> None:
    from .. import _records
    from .._types import Origin

    for origin, write, tail in (
        (Origin.CLIENT, True, "ignore"),
        (Origin.REPLICATION, False, "raise"),
        (Origin.COORDINATOR, False, "ignore"),
    ):
        table = seeded_table()
        before = (table.map_end_offset, len(table), [table.entry(pid) for pid in table])
        buffer = bytearray(data) if write else data
        leader = origin != Origin.REPLICATION
        result, error = _typed(
            _scan_errors(), _records.append_batches, table, buffer, origin=origin,
            log_end_offset=10 if leader else None, write_offsets=write, partition_leader_epoch=9 if write else None,
            tail=tail,
        )  # fmt: skip
        if error is None:
            _check_append(result, data, bytes(buffer), leader)
        else:
            after = (table.map_end_offset, len(table), [table.entry(pid) for pid in table])
            _require(after == before and bytes(buffer) == data, "a raised append applied something")


def run_decode_records(data: bytes) -> None:
    from ..batch import decode_records
    from ..errors import CorruptRecordError

    for control in (False, True):
        _typed((CorruptRecordError,), decode_records, data, control=control)


def _snapshot_readers() -> list[tuple[str, Any, Any]]:
    from .. import _snapshot, _state, reference
    from ..reference import snapshot as twin_codec

    return [("compiled", _state.ProducerStateTable, _snapshot), ("reference", reference.ProducerStateTable, twin_codec)]


def _table_state(table: Any) -> Any:
    return table.window, table.map_end_offset, tuple(table.entry(producer_id) for producer_id in table)


def run_decode_snapshot(data: bytes) -> None:
    from ..errors import CorruptSnapshotError
    from ..snapshot import decode_snapshot

    pictures = []
    for _, cls, codec in _snapshot_readers():
        picture = []
        for read, arguments in (
            (decode_snapshot, {"table_class": cls}),
            (codec.decode_kafka, {"window": 5, "map_end_offset": 0, "table_class": cls}),
            (codec.decode_full, {"table_class": cls}),
        ):
            table, error = _typed((CorruptSnapshotError,), read, data, **arguments)
            picture.append(str(error) if error is not None else _table_state(table))
        pictures.append(picture)
    _require(pictures[0] == pictures[1], f"the twins differ: {pictures[0]!r:.300} against {pictures[1]!r:.300}")


def run_read_snapshot(data: bytes) -> None:
    from ..errors import CorruptSnapshotError
    from ..snapshot import decode_snapshot, read_snapshot

    path = _scratch() / "00000000000000000042.snapshot"
    path.write_bytes(data)
    table, error = _typed((CorruptSnapshotError,), read_snapshot, path)
    named = None if data[:4] == b"DDPS" else 42  # Kafka's format takes its map end offset from the name
    again, again_error = _typed((CorruptSnapshotError,), decode_snapshot, data, map_end_offset=named)
    read = str(error) if error is not None else _table_state(table)
    decoded = str(again_error) if again_error is not None else _table_state(again)
    _require(read == decoded, "read_snapshot and decode_snapshot differ")


def run_parse_request(data: bytes) -> None:
    from ..server.wire import BadRequest, parse_request

    _typed((BadRequest,), parse_request, data)


def run_serve_request(data: bytes) -> None:
    from ..server.apis import HANDLERS, fetch_partitions
    from ..server.wire import ApiKey, BadRequest, build, encode_response, parse_request, response_schema

    request, _ = _typed((BadRequest,), parse_request, data)
    if request is None:
        return
    server = _server()
    if request.api_key == ApiKey.FETCH:  # what KafkaServer._fetch answers, without the wait
        responses, _ = fetch_partitions(server, 0, request)
        body = build(response_schema(request), {"error_code": 0, "session_id": 0, "responses": responses})
    else:
        body = HANDLERS[ApiKey(request.api_key)](server, 0, request)
    if body is not None:
        encode_response(request, body)


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target("scan_batches", run_scan_batches, ("batches",), _scan_errors, "CorruptRecordError, InvalidRecordError"),
        Target(
            "validate_batches",
            run_validate_batches,
            ("batches",),
            _scan_errors,
            "CorruptRecordError, InvalidRecordError",
        ),
        Target("crc_valid", run_crc_valid, ("batches",), _scan_errors, "the scan's errors; none with good headers"),
        Target(
            "append_batches",
            run_append_batches,
            ("batches",),
            _scan_errors,
            "CorruptRecordError, InvalidRecordError (a batch's verdict is in the result)",
        ),
        Target("decode_records", run_decode_records, ("batches",), _record_errors, "CorruptRecordError"),
        Target("decode_snapshot", run_decode_snapshot, ("snapshots",), _snapshot_errors, "CorruptSnapshotError"),
        Target("read_snapshot", run_read_snapshot, ("snapshots",), _snapshot_errors, "CorruptSnapshotError"),
        Target("parse_request", run_parse_request, ("frames",), _request_errors, "BadRequest"),
        Target(
            "serve_request",
            run_serve_request,
            ("frames",),
            _request_errors,
            "BadRequest from parsing; none from a handler",
        ),
    )
}


# --- the worker's scratch space and in-process server -------------------------------------------

_WORKER: dict[str, Any] = {}


def _scratch() -> Path:
    return Path(_WORKER["scratch"])


def _server() -> Any:
    """The in-process KafkaServer of this worker (two brokers, topic "clicks"), started afresh every
    SERVER_REFRESH requests so its logs stay small."""
    from ..server.core import KafkaServer

    uses = _WORKER.get("server_uses", 0)
    if "server" not in _WORKER or uses >= SERVER_REFRESH:
        _close_server()
        directory = tempfile.mkdtemp(prefix="server-", dir=_scratch())
        _WORKER["server"] = KafkaServer(directory, brokers=2, topics=("clicks", "views"))
        uses = 0
    _WORKER["server_uses"] = uses + 1
    return _WORKER["server"]


def _close_server() -> None:
    server = _WORKER.pop("server", None)
    if server is not None:
        asyncio.run(server.close())
        shutil.rmtree(server.directory, ignore_errors=True)


# --- seeds -------------------------------------------------------------------------------------


def seed_inputs() -> dict[str, bytes]:
    """The corpus: small valid inputs, keyed ``"<kind>/<name>.bin"`` (kind: batches, snapshots,
    frames). ``python -m dedup fuzz --write-corpus DIR`` writes them."""
    seeds = {f"batches/{name}.bin": data for name, data in _batch_seeds().items()}
    seeds.update({f"snapshots/{name}.bin": data for name, data in _snapshot_seeds().items()})
    seeds.update({f"frames/{name}.bin": data for name, data in _frame_seeds().items()})
    return seeds


def _batch_seeds() -> dict[str, bytes]:
    from ..batch import encode_batch, encode_marker

    def batch(values: Any, **fields: Any) -> bytes:
        if "timestamps" not in fields:
            fields.setdefault("timestamp", TIMESTAMP)
        return encode_batch(values, **fields)

    next_1000 = batch([b"a", b"bb"], keys=[b"k", None], headers=[[("h", b"1")], [("n", None)]], producer_id=1000,
                      producer_epoch=5, base_sequence=3)  # fmt: skip
    transaction = batch([b"t"], producer_id=2000, producer_epoch=1, base_sequence=2, transactional=True)
    commit = encode_marker(producer_id=2000, producer_epoch=1, commit=True, coordinator_epoch=4, timestamp=TIMESTAMP)
    follower = b"".join(
        (
            batch(
                [b"x"] * 3,
                producer_id=1000,
                producer_epoch=5,
                base_sequence=3,
                base_offset=10,
                partition_leader_epoch=3,
            ),  # fmt: skip
            batch(
                [b"y"],
                producer_id=2000,
                producer_epoch=1,
                base_sequence=2,
                transactional=True,
                base_offset=13,
                partition_leader_epoch=3,
            ),  # fmt: skip
            encode_marker(
                producer_id=2000,
                producer_epoch=1,
                commit=False,
                coordinator_epoch=4,
                timestamp=TIMESTAMP,
                base_offset=14,
                partition_leader_epoch=3,
            ),  # fmt: skip
        )
    )
    return {
        "idempotent": next_1000,
        "plain": batch([b"no producer id", None]),
        "transactional": transaction,
        "commit-marker": commit,
        "abort-marker": encode_marker(producer_id=7, producer_epoch=0, commit=False, coordinator_epoch=0, timestamp=1),
        "retry": next_1000 + next_1000,
        "leader-buffer": next_1000
        + batch([b"c"], producer_id=1000, producer_epoch=5, base_sequence=5)
        + transaction
        + commit,
        "follower-buffer": follower,
        "timestamps": batch(
            [b"1", b"2", b"3"], timestamps=[TIMESTAMP, 5, -1], producer_id=4000, producer_epoch=0, base_sequence=0
        ),  # fmt: skip
        "sequence-wrap": batch([b"w"] * 3, producer_id=1000, producer_epoch=6, base_sequence=(1 << 31) - 2),
    }


def _snapshot_seeds() -> dict[str, bytes]:
    from .._state import ProducerStateTable
    from ..records import crc32c
    from ..snapshot import encode_snapshot

    table = ProducerStateTable(3)
    end = 0
    for sequence in range(4):  # a wrapped window
        end = table.append(1000, 5, 2 * sequence, 2, end, max_timestamp=100 + sequence).last_offset + 1
    end = table.append(7, 0, 0, 1, end, max_timestamp=200, transactional=True).last_offset + 1
    table.append_marker(9, 2, 4, end, commit=True, timestamp=300)
    escaping = ProducerStateTable(3)  # values the full format's version 2 escapes
    escaping.append(1, 0, 0, 1, 0, max_timestamp=-5)
    escaping.append(1, 0, 1, 70_000, 1 << 33, max_timestamp=1 << 40)
    escaping.append(1, 0, 70_001, 1, (1 << 33) + 70_000, max_timestamp=(1 << 40) + 1)
    # Version 1 of the full format (still read): every batch in full, 24 bytes each.
    body = struct.pack(">4shhqi", b"DDPS", 1, 3, table.map_end_offset, len(table))
    for producer_id in table:
        entry: Any = table.entry(producer_id)
        txn = -1 if entry.current_txn_first_offset is None else entry.current_txn_first_offset
        body += struct.pack(">qhiqqB", producer_id, entry.producer_epoch, entry.coordinator_epoch,
                            entry.last_timestamp, txn, len(entry.batches))  # fmt: skip
        for batch in entry.batches:
            body += struct.pack(">iiqq", batch.last_sequence, batch.offset_delta, batch.last_offset, batch.timestamp)
    return {
        "kafka-empty": encode_snapshot(ProducerStateTable(), "kafka"),
        "kafka-table": encode_snapshot(table, "kafka"),
        "full-empty": encode_snapshot(ProducerStateTable(), "full"),
        "full-table": encode_snapshot(table, "full"),
        "full-escapes": encode_snapshot(escaping, "full"),
        "full-v1-table": body + struct.pack(">I", crc32c(body)),
    }


def _frame_seeds() -> dict[str, bytes]:
    import datetime
    import io

    from kio.index import load_request_schema
    from kio.serial import entity_writer

    from ..batch import encode_batch
    from ..server.wire import ApiKey, build

    def frame(api_key: int, version: int, body: dict[str, Any]) -> bytes:
        schema = load_request_schema(api_key, version)
        buffer = io.BytesIO()
        header = schema.__header_schema__
        fields: dict[str, Any] = {
            "request_api_key": api_key,
            "request_api_version": version,
            "correlation_id": 7,
            "client_id": "fuzz",
        }
        entity_writer(header)(buffer, header(**fields))
        entity_writer(schema)(buffer, build(schema, body))
        return buffer.getvalue()

    records = encode_batch([b"x", b"y"], producer_id=1000, producer_epoch=0, base_sequence=0, timestamp=TIMESTAMP)
    produce = {"acks": -1, "timeout": datetime.timedelta(seconds=5),
               "topic_data": [{"name": "clicks", "partition_data": [{"index": 0, "records": records}]}]}  # fmt: skip
    metadata = {"topics": [{"name": "clicks"}, {"name": "nope"}], "allow_auto_topic_creation": False}
    metadata.update(include_cluster_authorized_operations=False, include_topic_authorized_operations=False)
    partition = {"partition": 0, "fetch_offset": 0, "log_start_offset": -1, "partition_max_bytes": 1 << 20,
                 "current_leader_epoch": -1}  # fmt: skip
    fetch = {"replica_id": -1, "max_wait": datetime.timedelta(0), "min_bytes": 0, "max_bytes": 1 << 20,
             "isolation_level": 0, "session_id": 0, "session_epoch": -1,
             "topics": [{"topic": "clicks", "partitions": [partition]}], "forgotten_topics_data": [],
             "rack_id": ""}  # fmt: skip
    list_offsets = {"replica_id": -1, "isolation_level": 0, "topics": [{"name": "clicks", "partitions": [
        {"partition_index": 0, "timestamp": timestamp, "current_leader_epoch": -1}
        for timestamp in (-1, -2, TIMESTAMP)]}]}  # fmt: skip
    init = {"transactional_id": None, "transaction_timeout": datetime.timedelta(0), "producer_id": -1,
            "producer_epoch": -1}  # fmt: skip
    return {
        "api-versions-v0": frame(ApiKey.API_VERSIONS, 0, {}),
        "api-versions-v3": frame(ApiKey.API_VERSIONS, 3, {"client_software_name": "f", "client_software_version": "1"}),
        "metadata-v0": frame(ApiKey.METADATA, 0, metadata),
        "metadata-v1-all": frame(ApiKey.METADATA, 1, {**metadata, "topics": None}),
        "metadata-v9": frame(ApiKey.METADATA, 9, metadata),
        "init-producer-id-v0": frame(ApiKey.INIT_PRODUCER_ID, 0, init),
        "init-producer-id-v4": frame(ApiKey.INIT_PRODUCER_ID, 4, init),
        "produce-v3": frame(ApiKey.PRODUCE, 3, produce),
        "produce-v9": frame(ApiKey.PRODUCE, 9, produce),
        "fetch-v4": frame(ApiKey.FETCH, 4, fetch),
        "fetch-v11": frame(ApiKey.FETCH, 11, fetch),
        "list-offsets-v1": frame(ApiKey.LIST_OFFSETS, 1, list_offsets),
        "list-offsets-v5": frame(ApiKey.LIST_OFFSETS, 5, list_offsets),
    }


def load_corpus(directory: Path | None) -> dict[str, bytes]:
    """Every file under ``directory`` (hidden files and ``.txt``/``.md`` notes left out), keyed by
    its path relative to it; :func:`seed_inputs` when ``directory`` is None."""
    if directory is None:
        return seed_inputs()
    files = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if not path.is_file() or any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix in (".txt", ".md"):
            continue
        files[relative.as_posix()] = path.read_bytes()
    return files


# --- mutations ------------------------------------------------------------------------------------


def _batch_starts(data: bytes | bytearray) -> list[int]:
    """Where v2 batches begin, walking lengths from 0 (as far as they hold together)."""
    starts, position = [], 0
    while position + 61 <= len(data):
        length = int.from_bytes(data[position + 8 : position + 12], "big", signed=True)
        if length < 49 or position + 12 + length > len(data):
            break
        starts.append(position)
        position += 12 + length
    return starts


def _length_fields(data: bytearray) -> list[tuple[int, int]]:
    """(offset, width) of fields that say how long or how many, by the layout the input looks like."""
    if data[:4] == b"DDPS":
        return [(6, 2), (16, 4)] + [(len(data) - 8, 4)] * (len(data) >= 28)
    if data[:2] == b"\x00\x01":
        return [(6, 4)]
    fields = [(position + 8, 4) for position in _batch_starts(data)]
    fields += [(position + 57, 4) for position in _batch_starts(data)]  # record count
    return fields or [(0, 4)]


def fix_crcs(data: bytearray) -> None:
    """Make the CRCs right again where the input's layout keeps them (snapshot formats, v2 batches
    laid end to end from 0), so a mutation reaches the checks behind the CRC."""
    from ..records import crc32c

    if data[:4] == b"DDPS" and len(data) >= 8:
        struct.pack_into(">I", data, len(data) - 4, crc32c(bytes(data[:-4])))
    elif data[:2] == b"\x00\x01" and len(data) >= 6:
        struct.pack_into(">I", data, 2, crc32c(bytes(data[6:])))
    else:
        for position in _batch_starts(data):
            if data[position + 16] == 2:
                end = position + 12 + int.from_bytes(data[position + 8 : position + 12], "big", signed=True)
                struct.pack_into(">I", data, position + 17, crc32c(bytes(data[position + 21 : end])))


def _put(data: bytearray, at: int, width: int, value: int) -> None:
    if at + width <= len(data):
        data[at : at + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "big")


def mutate(rng: random.Random, data: bytes, corpus: Sequence[bytes]) -> bytes:
    """``data`` changed by one to eight mutations, its CRCs then made right half of the time."""
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        kind = rng.randrange(11)
        at = rng.randrange(len(out)) if out else 0
        if kind == 0 and out:  # bit flip
            out[at] ^= 1 << rng.randrange(8)
        elif kind == 1 and out:  # an interesting byte
            out[at] = rng.choice(_INTERESTING_BYTES) if rng.random() < 0.8 else rng.randrange(256)
        elif kind == 2:  # an interesting big-endian field
            width = rng.choice((2, 4, 4, 8))
            values = {
                2: _INTERESTING_16,
                4: _INTERESTING_32 + (len(out), len(out) - 12, len(out) - 11),
                8: _INTERESTING_64,
            }
            _put(out, at, width, rng.choice(values[width]))
        elif kind == 3:  # a length or count field: set or nudged
            offset, width = rng.choice(_length_fields(out))
            if offset + width <= len(out):
                current = int.from_bytes(out[offset : offset + width], "big", signed=True)
                nudged = current + rng.choice((-1, 1, -2, 2, -12, 12, 1 << 16))
                _put(out, offset, width, nudged if rng.random() < 0.6 else rng.choice(_INTERESTING_32))
        elif kind == 4:  # truncation
            del out[rng.randrange(len(out) + 1) :]
        elif kind == 5:  # extension: random bytes, a copy of itself, or another input
            choice = rng.randrange(3)
            if choice == 0:
                out += rng.randbytes(rng.randrange(1, 32))
            elif choice == 1:
                out += out[at : at + rng.randrange(1, 128)]
            else:
                out += rng.choice(corpus)
        elif kind == 6 and out:  # a chunk deleted
            del out[at : at + rng.randrange(1, 16)]
        elif kind == 7:  # random bytes inserted
            out[at:at] = rng.randbytes(rng.randrange(1, 9))
        elif kind == 8:  # spliced with another input
            other = rng.choice(corpus)
            out = out[:at] + other[rng.randrange(len(other) + 1) :]
        elif kind == 9 and out:  # a chunk copied over another place
            source = rng.randrange(len(out))
            chunk = out[source : source + rng.randrange(1, 16)]
            out[at : at + len(chunk)] = chunk
        elif kind == 10 and out:  # random bytes over a place
            out[at : at + 4] = rng.randbytes(min(4, len(out) - at))
        if len(out) > MAX_INPUT:
            del out[MAX_INPUT:]
    if rng.random() < 0.5:
        fix_crcs(out)
    return bytes(out)


# --- the worker --------------------------------------------------------------------------------

# The in-flight record, in memory shared with the parent: a status byte, the target's index, the
# replay job's index, the input's length, then the input.
_INFLIGHT = struct.Struct(">BBII")
_IDLE, _RUNNING = 0, 1


@dataclass
class Options:
    seconds: float = 10.0
    seed: int = 0
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    corpus: Path | None = None
    crashes: Path = Path("fuzz-crashes")
    replay: list[Path] = field(default_factory=list)
    timeout: float = 10.0


@dataclass
class Report:
    executions: dict[str, int] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)  # the saved inputs
    next_job: int = 0  # replay: the first job not run


def _signature(target: str, error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    return f"{target}:{type(error).__name__}:{where}"


def save_finding(crashes: Path, target: str, data: bytes, what: str) -> Path:
    """The input as ``<target>-<hash>.bin`` under ``crashes``, with ``what`` in the ``.txt`` beside it."""
    crashes.mkdir(parents=True, exist_ok=True)
    stem = f"{target}-{hashlib.sha1(data).hexdigest()[:12]}"
    (crashes / f"{stem}.bin").write_bytes(data)
    (crashes / f"{stem}.txt").write_text(f"target: {target}\nlength: {len(data)}\n\n{what}\n")
    return crashes / f"{stem}.bin"


class _Worker:
    def __init__(self, options: Options, inflight: mmap.mmap, report: Report, dump: Any) -> None:
        self.options = options
        self.dump = dump  # where faulthandler writes the stacks of a crash or a hang
        self.inflight = inflight
        self.report = report
        self.targets = [TARGETS[name] for name in options.targets]
        self.signatures: set[str] = set()
        self.ignored: list[str] = []
        self.armed = 0.0

    def execute(self, target: Target, data: bytes, job: int = 0) -> None:
        now = time.monotonic()
        if now - self.armed > 0.5:  # re-armed now and then: each call starts a thread
            faulthandler.dump_traceback_later(self.options.timeout + 0.5, exit=True, file=self.dump)
            self.armed = now
        _INFLIGHT.pack_into(self.inflight, 0, _IDLE, list(TARGETS).index(target.name), job, len(data))
        self.inflight[_INFLIGHT.size : _INFLIGHT.size + len(data)] = data
        self.inflight[0] = _RUNNING
        try:
            try:
                target.run(data)
            except target.expected():  # within the contract (the targets catch their own, mostly)
                pass
            problem = None
            if self.ignored:
                problem = "an exception was ignored (a swallowed error):\n" + "\n".join(self.ignored)
                signature = f"{target.name}:ignored"
        except Exception as error:  # noqa: BLE001 - every escape is a finding
            problem = "".join(traceback.format_exception(error))
            signature = _signature(target.name, error)
        self.inflight[0] = _IDLE
        self.ignored.clear()
        self.report.executions[target.name] = self.report.executions.get(target.name, 0) + 1
        if problem is not None and signature not in self.signatures:  # one input per distinct failure
            self.signatures.add(signature)
            what = f"contract: {target.contract}\n{problem}"
            self.report.findings.append(str(save_finding(self.options.crashes, target.name, data, what)))

    def fuzz(self) -> None:
        corpus = load_corpus(self.options.corpus)
        if not corpus:
            raise SystemExit(f"python -m dedup fuzz: no inputs in {self.options.corpus}")
        by_kind = {kind: [data for name, data in corpus.items() if name.split("/")[0] == kind] for kind in KINDS}
        everything = list(corpus.values())
        rng = random.Random(self.options.seed)
        deadline = time.monotonic() + self.options.seconds
        while time.monotonic() < deadline:
            for target in self.targets:
                preferred = [data for kind in target.kinds for data in by_kind[kind]]
                pool = preferred if preferred and rng.random() < 0.85 else everything
                self.execute(target, mutate(rng, rng.choice(pool), everything))

    def replay(self, jobs: list[tuple[Path, str]]) -> None:
        for index in range(self.report.next_job, len(jobs)):
            path, name = jobs[index]
            self.report.next_job = index + 1
            self.execute(TARGETS[name], path.read_bytes(), index)


def _replay_jobs(options: Options) -> list[tuple[Path, str]]:
    files = []
    for directory in options.replay:
        if not directory.is_dir():
            raise SystemExit(f"python -m dedup fuzz: --replay {directory}: not a directory")
        files += [directory / name for name in load_corpus(directory)]
    return [(path, name) for path in files for name in options.targets]


def _run_worker(
    options: Options, inflight: mmap.mmap, jobs: list[tuple[Path, str]], start: int, out: int, dump: Any
) -> None:
    """In the forked child: run, then write the report to the pipe ``out`` as JSON."""
    faulthandler.enable(file=dump)  # a crash's stacks, for the finding's notes
    report = Report(next_job=start)
    worker = _Worker(options, inflight, report, dump)
    _WORKER["scratch"] = tempfile.mkdtemp(prefix="dedup-fuzz-")
    logging.disable(logging.WARNING)  # the server logs every refusal
    sys.unraisablehook = lambda unraisable: worker.ignored.append(
        f"{unraisable.err_msg or 'Exception ignored in'}: {unraisable.object!r}: {unraisable.exc_value!r}"
    )
    try:
        if options.replay:
            worker.replay(jobs)
        else:
            worker.fuzz()
        gc.collect()
    finally:
        faulthandler.cancel_dump_traceback_later()
        _close_server()
        shutil.rmtree(_WORKER.pop("scratch"), ignore_errors=True)
    os.write(out, json.dumps(report.__dict__).encode())


def run(options: Options, log: Callable[[str], None] = print) -> Report:
    """Fuzz (or replay) in forked workers until the time is up: a worker that dies (a crash, or the
    watchdog ending a hang) leaves its input in shared memory; it is saved as a finding and a new
    worker carries on (the next seed; in a replay, the next job)."""
    total = Report()
    jobs = _replay_jobs(options) if options.replay else []
    largest = max([MAX_INPUT, *(path.stat().st_size for path, _ in jobs)])
    inflight = mmap.mmap(-1, _INFLIGHT.size + largest)  # shared with the forked workers
    deadline = time.monotonic() + options.seconds
    restarts = 0
    while True:
        inflight[0] = _IDLE
        reader, writer = os.pipe()
        dump = tempfile.TemporaryFile()
        seed = options.seed + 1_000_003 * restarts
        remaining = max(deadline - time.monotonic(), 0.0)
        child = os.fork()
        if child == 0:  # pragma: no cover - the worker process
            status = 1
            try:
                os.close(reader)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                worker_options = Options(**{**options.__dict__, "seed": seed, "seconds": remaining})
                _run_worker(worker_options, inflight, jobs, total.next_job, writer, dump)
                status = 0
            except BaseException:  # noqa: BLE001 - the child must never return into the caller
                dump.write(traceback.format_exc().encode())
                dump.flush()
            finally:
                os._exit(status)
        os.close(writer)
        with os.fdopen(reader, "rb") as pipe:
            output = pipe.read()
        _, wait_status = os.waitpid(child, 0)
        if output:
            part = Report(**json.loads(output))
            for name, count in part.executions.items():
                total.executions[name] = total.executions.get(name, 0) + count
            total.findings += part.findings
            total.next_job = part.next_job
            dump.close()
            break
        # The worker died. Whatever it was running is the finding.
        state, index, job, length = _INFLIGHT.unpack_from(inflight, 0)
        dump.seek(0)
        stacks = dump.read().decode(errors="replace")
        dump.close()
        if os.WIFSIGNALED(wait_status):
            how = f"the process was killed by {signal.Signals(os.WTERMSIG(wait_status)).name}"
        else:
            how = f"the process exited with status {os.waitstatus_to_exitcode(wait_status)}"
            if "Timeout" in stacks:
                how = f"a hang: the execution ran past {options.timeout} s and the watchdog ended the process"
        if state != _RUNNING:
            raise RuntimeError(f"python -m dedup fuzz: the worker failed outside an execution ({how}):\n{stacks}")
        name = list(TARGETS)[index]
        data = bytes(inflight[_INFLIGHT.size : _INFLIGHT.size + length])
        saved = save_finding(options.crashes, name, data, f"{how}\n\n{stacks}")
        log(f"python -m dedup fuzz: {name}: {how}; input saved as {saved}")
        total.findings.append(str(saved))
        total.executions[name] = total.executions.get(name, 0) + 1
        restarts += 1
        if options.replay:
            total.next_job = job + 1
            if total.next_job >= len(jobs):
                break
        elif time.monotonic() >= deadline:
            break
    return total


# --- command line ------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dedup fuzz",
        description="Mutation fuzzing of everything that reads bytes: the batch scanner, the append path, "
        "the snapshot readers, the Kafka-protocol front end. Exit status 1 if anything was found.",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to fuzz (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="the random seed (default 0)")
    parser.add_argument("--target", action="append", choices=list(TARGETS), help="a target (repeatable; default all)")
    parser.add_argument("--corpus", type=Path, help=f"seed inputs (default {DEFAULT_CORPUS} if present, else built in)")
    parser.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"), help="where findings are saved")
    replay = "run every file under DIR through every target once, no mutation (repeatable)"
    parser.add_argument("--replay", type=Path, action="append", default=[], metavar="DIR", help=replay)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds an execution may take (default 10)")
    parser.add_argument("--write-corpus", type=Path, metavar="DIR", help="write the built-in seed inputs to DIR")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        from .. import _records, _snapshot, _state  # noqa: F401
    except ImportError as error:
        print(f"python -m dedup fuzz: the compiled core did not load ({error}); build it first", file=sys.stderr)
        return 1
    if args.write_corpus is not None:
        for name, data in seed_inputs().items():
            path = args.write_corpus / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        print(f"wrote {len(seed_inputs())} inputs under {args.write_corpus}")
        return 0
    corpus = args.corpus
    if corpus is None and DEFAULT_CORPUS.is_dir():
        corpus = DEFAULT_CORPUS
    options = Options(
        seconds=args.seconds, seed=args.seed, targets=args.target or list(TARGETS), corpus=corpus,
        crashes=args.crashes, replay=args.replay, timeout=args.timeout,
    )  # fmt: skip
    started = time.monotonic()
    report = run(options)
    elapsed = time.monotonic() - started
    counts = ", ".join(f"{name} {report.executions.get(name, 0)}" for name in options.targets)
    mode = f"replay of {', '.join(map(str, options.replay))}" if options.replay else f"seed {options.seed}"
    total = sum(report.executions.values())
    print(f"dedup fuzz ({mode}): {total} executions in {elapsed:.1f} s ({counts}); {len(report.findings)} findings")
    for finding in report.findings:
        print(f"  finding: {finding} (see {Path(finding).with_suffix('.txt')})")
    return 1 if report.findings else 0
