"""The fuzz targets of ``python -m dedup fuzz``: each reader of bytes called on one input,
with the errors bad bytes may raise (its contract, listed in :mod:`dedup.tools.fuzz`) and the
invariants its results must keep (:class:`FuzzInvariantError` otherwise); and the worker's
scratch directory and in-process ``KafkaServer`` the targets use.
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fuzz_inputs import TIMESTAMP

SERVER_REFRESH = 2000  # serve_request executions before the in-process server starts afresh


class FuzzInvariantError(AssertionError):
    """A call returned (or raised a typed error), but what it gave is impossible."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise FuzzInvariantError(message)



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
    from ..server.apis.fetch import fetch_response
    from ..server.wire import ApiKey, BadRequest, ResponseFrame, encode_response, parse_request

    request, _ = _typed((BadRequest,), parse_request, data)
    if request is None:
        return
    server = _server()
    if request.api_key == ApiKey.FETCH:  # what KafkaServer._fetch answers, without the wait
        responses, _ = fetch_partitions(server, 0, request)
        fetch_response(request, responses).close()
        return
    body = asyncio.run(_handle(HANDLERS[ApiKey(request.api_key)], server, request))
    if isinstance(body, ResponseFrame):  # encoded by the handler (Produce)
        body.close()
    elif body is not None:
        encode_response(request, body)


#: How long a request that waits (JoinGroup, SyncGroup: a rebalance, as in Kafka's purgatory) is
#: given before the fuzzer moves on without its answer, as a client that gives up would.
HANDLER_WAIT_SECONDS = 0.05


async def _handle(handler: Callable[..., Any], server: Any, request: Any) -> Any:
    """``handler``'s answer as ``KafkaServer._serve`` gets it (on an event loop, awaited if it
    waits), or None if it still waits after :data:`HANDLER_WAIT_SECONDS`."""
    body = handler(server, 0, request)
    if inspect.isawaitable(body):
        try:
            body = await asyncio.wait_for(body, HANDLER_WAIT_SECONDS)
        except TimeoutError:
            return None
    return body


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
