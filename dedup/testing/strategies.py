"""Hypothesis strategies for Kafka's idempotent producer: values at their edges, client-like
streams of batches, Kafka v2 batch bytes and corruptions of them.

- :func:`producer_ids`, :func:`producer_epochs`, :func:`sequences`, :func:`record_counts`:
  the fields of a batch's producer state (``RecordBatch``: int64 producer id, int16 epoch,
  int32 base sequence), drawn mostly near the edges where Kafka's arithmetic wraps or
  overflows (``DefaultRecordBatch.incrementSequence`` wraps at 2^31-1).
- :func:`client_streams`: what a partition leader receives from idempotent producers as a
  real client sends it: up to ``max.in.flight.requests.per.connection`` batches outstanding,
  responses lost (the batch was appended; the client retries it), requests reordered on the
  way, retries of any batch in flight, epoch bumps after an error (KIP-360) and restarts
  with a new producer id. Each item is a :class:`ProducedBatch`.
- :func:`batch_bytes`: one v2 batch as bytes (data or control, optionally gzip-compressed
  records with the compression attribute set), readable by kafka-python's
  ``DefaultRecordBatch``.
- :func:`corruptions`: those bytes damaged as a disk or a network damages them: bit flips,
  truncations, and length fields that lie.

Needs hypothesis (``pip install 'dedup[testing]'``).
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from hypothesis import strategies as st

from .._layout import (
    ATTR_COMPRESSION_MASK,
    ATTRIBUTES_OFFSET,
    BATCH_LENGTH_OFFSET,
    CRC_OFFSET,
    LOG_OVERHEAD,
    RECORDS_COUNT_OFFSET,
    RECORDS_OFFSET,
    field_struct,
)
from .._types import INT16_MAX, INT32_MAX, INT64_MAX, wrap_increment
from ..batch import encode_batch, encode_marker
from ..errors import KafkaError
from ..records import crc32c
from ..reference import ProducerStateTable as ReferenceTable

__all__ = [
    "GZIP",
    "ProducedBatch",
    "batch_bytes",
    "client_streams",
    "corruptions",
    "producer_epochs",
    "producer_ids",
    "record_counts",
    "sequences",
]

#: Kafka's compression codec id for gzip (``CompressionType.GZIP``, attributes bits 0-2).
GZIP = 1

_CRC = field_struct("crc")
_BATCH_LENGTH = field_struct("batch_length")
_TIMESTAMP = 1_767_225_600_000  # 2026-01-01, a plausible CreateTime


def producer_ids(*, edges: bool = True) -> st.SearchStrategy[int]:
    """Producer ids in [0, 2^63-1] (``RecordBatch.NO_PRODUCER_ID`` is -1), a third of them at
    the edges: 0, 1, Kafka's first allocated block (1000) and the top of int64."""
    anywhere = st.integers(0, INT64_MAX)
    if not edges:
        return anywhere
    return st.one_of(st.sampled_from([0, 1, 1000, INT64_MAX - 1, INT64_MAX]), anywhere)


def producer_epochs(*, edges: bool = True) -> st.SearchStrategy[int]:
    """Producer epochs in [0, 32767] (int16; ``NO_PRODUCER_EPOCH`` is -1), a third of them at
    the edges: 0, 1, and the last epochs before ``Short.MAX_VALUE``, where Kafka's
    TransactionManager must take a new producer id instead of bumping."""
    anywhere = st.integers(0, INT16_MAX)
    if not edges:
        return anywhere
    return st.one_of(st.sampled_from([0, 1, INT16_MAX - 1, INT16_MAX]), anywhere)


def sequences(*, edges: bool = True) -> st.SearchStrategy[int]:
    """Base sequences in [0, 2^31-1] (``NO_SEQUENCE`` is -1), mostly near 0 and near 2^31-1,
    where a batch's last sequence wraps to 0 (``DefaultRecordBatch.incrementSequence``)."""
    anywhere = st.integers(0, INT32_MAX)
    if not edges:
        return anywhere
    return st.one_of(st.integers(0, 8), st.integers(INT32_MAX - 8, INT32_MAX), anywhere)


def record_counts(max_count: int = 10) -> st.SearchStrategy[int]:
    """Records in a batch: 1 to ``max_count``, 1 most often (``batch.num.messages=1``)."""
    return st.one_of(st.just(1), st.integers(1, max_count))


class ProducedBatch(NamedTuple):
    """One batch as it reaches the partition leader, and why it was sent.

    ``event`` is ``"new"`` (first send), ``"retry"`` (a resend of a batch in flight: its
    response was lost, or it was answered with an error), ``"reordered"`` (a batch that
    overtook an earlier one of its producer on the way), ``"epoch_bump"`` (the first batch
    after a bump, from sequence 0) or ``"restart"`` (the first batch of a new producer id).
    ``response_lost``: the broker's answer to this send never reached the client."""

    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int
    event: str
    response_lost: bool


@dataclass
class _InFlight:
    base_sequence: int
    record_count: int
    sent: bool = False  # reached the broker at least once
    acked: bool = False  # answered, but a batch before it was not yet: it still takes a slot


@dataclass
class _Client:
    producer_id: int
    producer_epoch: int
    next_sequence: int
    in_flight: list[_InFlight] = field(default_factory=list)
    fresh: str = "new"  # the event of the next first send: "new", "epoch_bump" or "restart"


def _resequence(client: _Client, first: int) -> None:
    """Kafka's TransactionManager after a bump or a new id: the batches in flight get new
    sequences from ``first``, in order, and count as not sent yet."""
    client.in_flight = [batch for batch in client.in_flight if not batch.acked]
    sequence = first
    for batch in client.in_flight:
        batch.base_sequence, batch.sent = sequence, False
        sequence = wrap_increment(sequence, batch.record_count)
    client.next_sequence = sequence


@st.composite
def client_streams(
    draw: st.DrawFn,
    *,
    producers: int = 3,
    max_in_flight: int = 5,
    max_batches: int = 40,
    first_sequences: st.SearchStrategy[int] | None = None,
    lose_responses: bool = True,
    reorder: bool = True,
    bumps: bool = True,
    restarts: bool = True,
) -> list[ProducedBatch]:
    """What a leader receives from ``producers`` idempotent clients, at most ``max_batches``
    sends, each client with at most ``max_in_flight`` batches unanswered (Kafka's clients
    allow 5 with idempotence).

    The clients see the answers of a reference broker (``dedup.reference``): a batch stays in
    flight until a response to it arrives, and is retried (with the same producer id, epoch
    and sequence) when its response is lost or says OUT_OF_ORDER_SEQUENCE_NUMBER (a batch
    before it has not arrived yet). A client that bumps its epoch (KIP-360) or restarts
    with a new producer id resequences what it has in flight from 0. A new producer's
    first sequence comes from ``first_sequences`` (default 0, as a client starts; pass
    :func:`sequences` to start near 2^31-1 and cross the wraparound: a producer unknown to
    the broker may start anywhere, KIP-360).
    """
    first = st.just(0) if first_sequences is None else first_sequences
    next_id = draw(st.integers(0, INT64_MAX - producers - 64), label="first producer id")
    broker = ReferenceTable()
    clients: list[_Client] = []
    for _ in range(producers):
        clients.append(_Client(next_id, draw(producer_epochs(), label="epoch"), draw(first, label="sequence")))
        next_id += 1
    sends: list[ProducedBatch] = []
    log_end_offset = 0
    actions = ["send", "send", "send", "retry"]
    actions += ["bump"] * bumps + ["restart"] * restarts
    length = draw(st.integers(1, max_batches), label="sends")
    for _ in range(4 * max_batches):  # bumps and restarts send nothing: bounded all the same
        if len(sends) >= length:
            break
        client = clients[draw(st.integers(0, producers - 1), label="client")]
        action = draw(st.sampled_from(actions), label="action")
        if action in ("bump", "restart"):
            if action == "bump" and client.producer_epoch < INT16_MAX:
                client.producer_epoch += 1
                client.fresh, start = "epoch_bump", 0
            else:  # a restart, or an exhausted epoch: a new producer id, as Kafka's client takes
                client.producer_id, client.producer_epoch = next_id, 0
                client.fresh, start = "restart", draw(first, label="sequence")
                next_id += 1
            _resequence(client, start)
            continue
        if action == "send" and len(client.in_flight) < max_in_flight:
            count = draw(record_counts(), label="records")
            client.in_flight.append(_InFlight(client.next_sequence, count))
            client.next_sequence = wrap_increment(client.next_sequence, count)
        unsent = [batch for batch in client.in_flight if not batch.sent]
        if action == "retry" or not unsent:
            waiting = [batch for batch in client.in_flight if batch.sent and not batch.acked]
            if not waiting:
                continue
            batch = waiting[draw(st.integers(0, len(waiting) - 1), label="retried")]
            event = "retry"
        else:
            index = draw(st.integers(0, len(unsent) - 1), label="overtakes") if reorder else 0
            batch = unsent[index]
            event = "reordered" if index else client.fresh
            client.fresh = "new"
        batch.sent = True
        lost = lose_responses and draw(st.integers(0, 4), label="response lost") == 0
        sends.append(ProducedBatch(client.producer_id, client.producer_epoch, batch.base_sequence,
                                   batch.record_count, event, lost))  # fmt: skip
        try:
            answer = broker.append(client.producer_id, client.producer_epoch, batch.base_sequence,
                                   batch.record_count, log_end_offset)  # fmt: skip
        except KafkaError:
            continue  # an error: the batch stays in flight, to be retried
        if not answer.duplicate:
            log_end_offset = answer.last_offset + 1
        if not lost:
            # Kafka's clients complete a partition's batches in order: a slot is freed only once
            # every batch before it is answered too.
            batch.acked = True
            while client.in_flight and client.in_flight[0].acked:
                client.in_flight.pop(0)
    return sends


@st.composite
def batch_bytes(
    draw: st.DrawFn,
    *,
    control: bool | None = None,
    compression: bool | None = None,
    producer_id: st.SearchStrategy[int] | None = None,
) -> bytes:
    """One Kafka v2 record batch, CRC-32C valid: a data batch (1-5 records with keys, values,
    headers; idempotent, transactional or without a producer) as a Java producer writes it,
    or a control batch (a COMMIT or ABORT marker, as the broker writes it) when ``control``
    (None: either). ``compression`` (None: either) gzips a data batch's records and sets the
    codec in the attributes (bits 0-2, ``CompressionType.GZIP``), as Kafka's
    ``MemoryRecordsBuilder`` does: only the records after the 61-byte header are compressed.
    """
    pids = producer_ids() if producer_id is None else producer_id
    is_control = draw(st.booleans(), label="control") if control is None else control
    if is_control:
        return encode_marker(producer_id=draw(pids), producer_epoch=draw(producer_epochs()),
                             commit=draw(st.booleans()), coordinator_epoch=draw(st.integers(0, INT32_MAX)),
                             timestamp=draw(st.sampled_from([_TIMESTAMP, -1, 0])))  # fmt: skip
    count = draw(st.integers(1, 5), label="records")
    optional = st.none() | st.binary(max_size=24)
    values = draw(st.lists(optional, min_size=count, max_size=count), label="values")
    keys = draw(st.lists(optional, min_size=count, max_size=count), label="keys")
    headers = draw(
        st.lists(st.lists(st.tuples(st.text(max_size=6), optional), max_size=2), min_size=count, max_size=count)
    )
    timestamps = draw(st.lists(st.integers(_TIMESTAMP - 1000, _TIMESTAMP + 1000), min_size=count, max_size=count))
    kind = draw(st.sampled_from(["idempotent", "transactional", "plain"]), label="kind")
    pid_fields: dict[str, Any] = {}
    if kind != "plain":
        pid_fields = dict(producer_id=draw(pids), producer_epoch=draw(producer_epochs()),
                          base_sequence=draw(sequences()), transactional=kind == "transactional")  # fmt: skip
    data = encode_batch(values, keys=keys, headers=headers, timestamps=timestamps, **pid_fields)
    if draw(st.booleans(), label="gzip") if compression is None else compression:
        data = gzip_records(data)
    return data


def gzip_records(data: bytes) -> bytes:
    """A one-batch buffer with its records gzip-compressed (codec 1 in the attributes), the
    batch length and CRC-32C rewritten; the header is unchanged otherwise."""
    records = gzip.compress(data[RECORDS_OFFSET:], mtime=0)
    out = bytearray(data[:RECORDS_OFFSET] + records)
    attributes = struct.unpack_from(">h", out, ATTRIBUTES_OFFSET)[0]
    struct.pack_into(">h", out, ATTRIBUTES_OFFSET, (attributes & ~ATTR_COMPRESSION_MASK) | GZIP)
    _BATCH_LENGTH.pack_into(out, BATCH_LENGTH_OFFSET, len(out) - LOG_OVERHEAD)
    _CRC.pack_into(out, CRC_OFFSET, crc32c(bytes(out[ATTRIBUTES_OFFSET:])))
    return bytes(out)


#: The length fields of a batch a corruption lies in: (offset, struct format).
_LENGTH_FIELDS: Sequence[tuple[int, str]] = ((BATCH_LENGTH_OFFSET, ">i"), (RECORDS_COUNT_OFFSET, ">i"))


@st.composite
def corruptions(draw: st.DrawFn, data: bytes | st.SearchStrategy[bytes] | None = None) -> bytes:
    """``data`` (default: a :func:`batch_bytes`) damaged once: bits flipped (1 to 3), cut
    short, extended with garbage, or a length field (the batch length or the record count)
    set to a lie (negative, zero, one off, or huge). The result always differs from ``data``;
    a bit flip leaves the CRC as it was, so a reader that checks CRC-32C finds it unless the
    flip is in the partition leader epoch or base offset (outside the CRC, as in Kafka)."""
    if data is None:
        data = draw(batch_bytes())
    elif isinstance(data, st.SearchStrategy):
        data = draw(data)
    out = bytearray(data)
    kind = draw(st.sampled_from(["flip", "truncate", "extend", "length"]), label="corruption")
    if kind == "flip" and out:
        for position in draw(st.lists(st.integers(0, len(out) * 8 - 1), min_size=1, max_size=3, unique=True)):
            out[position // 8] ^= 1 << (position % 8)
    elif kind == "truncate" and len(out) > 1:
        del out[draw(st.integers(1, len(out) - 1), label="cut at") :]
    elif kind == "length" and len(out) >= RECORDS_OFFSET:
        offset, fmt = draw(st.sampled_from(list(_LENGTH_FIELDS)), label="field")
        (true,) = struct.unpack_from(fmt, out, offset)
        lie = draw(st.sampled_from([-1, 0, true - 1, true + 1, INT32_MAX, -(1 << 31)]).filter(lambda v: v != true))
        struct.pack_into(fmt, out, offset, lie)
    else:
        out += draw(st.binary(min_size=1, max_size=16), label="garbage")
    return bytes(out)
