"""Snapshot files built independently of both codecs (:mod:`struct` and the PyPI ``crc32c``
package), and random tables driven alike on both twins: shared by the snapshot tests in
tests/formats and tests/kernels.

- ``kafka_file``, ``full_file``, ``full2_file``: Kafka's layout (spec §4.2) and the full format's
  versions 1 and 2, from plain tuples, with any field (count, version, crc, trailing bytes) forced.
- ``state``: everything a table holds, in its order; ``both_reject``: both codecs refuse a file
  with the same message.
- ``operations``, ``windows``, ``apply``: random operations (appends, markers, expiry) and their
  outcomes, the same on both twins.
- ``first_repeat``: where the bulk index must report a repeated producer id.
"""

from __future__ import annotations

import struct

import crc32c as pypi_crc32c
import pytest
from conftest import TWINS
from hypothesis import strategies as st

from dedup._types import INT16_MAX, INT16_MIN, INT32_MAX, INT64_MAX, INT64_MIN, Origin
from dedup.errors import CorruptSnapshotError, KafkaError

# --- independent writers of test files ------------------------------------------------------


def kafka_file(entries, *, version=1, count=None, crc=None, trailing=b""):
    """Kafka's layout (§4.2) from 8-tuples (ProducerId, Epoch, LastSequence, LastOffset,
    OffsetDelta, Timestamp, CoordinatorEpoch, CurrentTxnFirstOffset); the crc covers
    [6, end), trailing bytes included, as Kafka's would."""
    body = struct.pack(">i", len(entries) if count is None else count)
    body += b"".join(struct.pack(">qhiqiqiq", *entry) for entry in entries) + trailing
    return struct.pack(">hI", version, pypi_crc32c.crc32c(body) if crc is None else crc) + body


def full_file(entries, *, window=5, map_end_offset=100, count=None, version=1, magic=b"DDPS", trailing=b"", crc=None):
    """The full format from (producer_id, epoch, coordinator_epoch, last_timestamp, txn,
    batches[, batch_count]) with batches as (last_sequence, offset_delta, last_offset, timestamp)."""
    body = struct.pack(">4shhqi", magic, version, window, map_end_offset, len(entries) if count is None else count)
    for producer_id, epoch, coordinator_epoch, last_timestamp, txn, batches, *batch_count in entries:
        written = batch_count[0] if batch_count else len(batches)
        body += struct.pack(">qhiqqB", producer_id, epoch, coordinator_epoch, last_timestamp, txn, written)
        body += b"".join(struct.pack(">iiqq", *batch) for batch in batches)
    body += trailing
    return body + struct.pack(">I", pypi_crc32c.crc32c(body) if crc is None else crc)


def full2_file(
    entries,
    *,
    window=5,
    map_end_offset=100,
    count=None,
    version=2,
    magic=b"DDPS",
    escaped=None,
    escapes=None,
    trailing=b"",
    crc=None,
):
    """The full format's version 2 from the same tuples as full_file: records of 55 + 12 x
    (window - 1) bytes, the newest batch in full, the older ones as gaps from it in narrow
    fields, what does not fit escaped to the list after the records. ``escaped`` replaces that
    list, ``escapes`` the count written, ``trailing`` comes between the list and the count;
    batches beyond the window's slots are dropped."""
    body = struct.pack(">4shhqi", magic, version, window, map_end_offset, len(entries) if count is None else count)
    escaped_values = []
    for producer_id, epoch, coordinator_epoch, last_timestamp, txn, batches, *batch_count in entries:
        written = batch_count[0] if batch_count else len(batches)
        newest_sequence, newest_delta, newest_offset, newest_timestamp = batches[-1] if batches else (0, 0, 0, 0)
        body += struct.pack(">qhiqqB", producer_id, epoch, coordinator_epoch, last_timestamp, txn, written)
        body += struct.pack(">iiqq", newest_sequence, newest_delta, newest_offset, newest_timestamp)
        slots = b""
        for last_sequence, offset_delta, last_offset, timestamp in batches[:-1][: window - 1]:
            offset_gap = (newest_offset - last_offset) % 2**64
            if offset_gap >= 0xFFFFFFFF:
                offset_gap = 0xFFFFFFFF
                escaped_values.append(last_offset)
            timestamp_gap = (newest_timestamp - timestamp + 2**63) % 2**64 - 2**63
            if not -(2**31) < timestamp_gap < 2**31:
                timestamp_gap = -(2**31)
                escaped_values.append(timestamp)
            sequence_gap = (newest_sequence - last_sequence) % 2**32
            if sequence_gap >= 0xFFFF:
                sequence_gap = 0xFFFF
                escaped_values.append(last_sequence)
            if not 0 <= offset_delta < 0xFFFF:
                escaped_values.append(offset_delta)
                offset_delta = 0xFFFF
            slots += struct.pack(">IiHH", offset_gap, timestamp_gap, sequence_gap, offset_delta)
        body += slots.ljust(12 * (window - 1), b"\0")
    escaped = escaped_values if escaped is None else escaped
    body += b"".join(struct.pack(">q", value) for value in escaped) + trailing
    body += struct.pack(">i", len(escaped) if escapes is None else escapes)
    return body + struct.pack(">I", pypi_crc32c.crc32c(body) if crc is None else crc)


def full_entry(pid=5, txn=-1, batches=((3, 1, 10, 7),), **extra):
    """An entry for ``full_file`` and ``full2_file``: epoch 0, coordinator epoch -1, last
    timestamp 7; ``extra`` values (a batch count) go after the batches."""
    return (pid, 0, -1, 7, txn, list(batches), *extra.values())


def state(table):
    """Everything a table holds, in its order."""
    return table.window, table.map_end_offset, tuple(table.entry(producer_id) for producer_id in table)


def both_reject(function_name, data, *args):
    """Both codecs reject ``data`` with the same CorruptSnapshotError message; returns it."""
    messages = []
    for twin in TWINS.values():
        with pytest.raises(CorruptSnapshotError) as caught:
            getattr(twin.snapshot, function_name)(data, *args)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    return messages[0]


# --- random tables, the same operations on both twins --------------------------------------

pids = st.sampled_from([0, 1, 2, 3, 1000, INT64_MAX])
epochs = st.sampled_from([0] * 8 + [1, 2, -1, INT16_MAX, INT16_MIN])  # mostly 0: an epoch change clears batches
sequences = st.one_of(st.integers(0, 6), st.integers(INT32_MAX - 2, INT32_MAX), st.just(-1))
timestamps = st.one_of(st.integers(-3, 50), st.sampled_from([INT64_MIN, INT64_MAX]))
gaps = st.sampled_from([0, 0, 1, 5])
appends = st.tuples(
    st.just("append"),
    pids,
    epochs,
    sequences,
    st.sampled_from([1, 1, 2, 3, 100]),
    gaps,
    timestamps,
    st.sampled_from([Origin.REPLICATION, Origin.REPLICATION, Origin.CLIENT, Origin.COORDINATOR]),
    st.sampled_from([False] * 5 + [True]),  # rarely: a transaction refuses plain batches until its marker
)
markers = st.tuples(
    st.just("marker"),
    pids,
    epochs,
    st.sampled_from([0, 1, 5]),
    gaps,
    st.booleans(),
    timestamps,
    st.sampled_from([Origin.COORDINATOR, Origin.REPLICATION]),
)
expirations = st.tuples(st.just("expire"), st.integers(-5, 60), st.sampled_from([10, 40, 1 << 62]))
operations = st.lists(st.one_of(*[appends] * 8, markers, expirations), min_size=10, max_size=80)
windows = st.sampled_from([1, 2, 3, 5, 7])


def apply(table, ops):
    """Run ``ops`` on ``table``; the outcome of each (verdict, completed txn, count or error)."""
    outcomes = []
    for op in ops:
        try:
            if op[0] == "append":
                _, pid, epoch, sequence, count, gap, stamp, origin, txn = op
                result = table.append(
                    pid,
                    epoch,
                    sequence,
                    count,
                    table.map_end_offset + gap,
                    max_timestamp=stamp,
                    origin=origin,
                    transactional=txn,
                )
                outcomes.append((result.duplicate, result.base_offset, result.last_offset, result.timestamp))
            elif op[0] == "marker":
                _, pid, epoch, coordinator_epoch, gap, commit, stamp, origin = op
                offset = table.map_end_offset + gap
                outcomes.append(
                    table.append_marker(
                        pid, epoch, coordinator_epoch, offset, commit=commit, timestamp=stamp, origin=origin
                    )
                )
            else:
                _, now, expiration = op
                outcomes.append(table.remove_expired(now, expiration))
        except KafkaError as error:
            outcomes.append((type(error).__name__, str(error)))
    return outcomes


# --- the bulk index -------------------------------------------------------------------------


def first_repeat(ids, existing=()):
    """(the first entry number whose id came before, the entry number it came first at)."""
    seen = {producer_id: n for n, producer_id in enumerate(existing)}
    for n, producer_id in enumerate(ids, start=len(existing)):
        if producer_id in seen:
            return n, seen[producer_id]
        seen[producer_id] = n
    return -1, -1
