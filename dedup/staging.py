"""A leader's append of several batches checked in Kafka's order against staged producer
state: Kafka's ``UnifiedLog.analyzeAndValidateProducerState`` (spec §2.1 rules 10-18, §3.1
staging, §3.2 step 2).

:func:`analyze_and_validate` is what :meth:`dedup.log.PartitionLog.append_as_leader` runs
on an append of several batches before it writes anything. For each batch with a producer id
Kafka first looks for a duplicate in the producer's *committed* entry
(``producerStateManager.lastEntry(producerId)`` and ``findDuplicateBatch``, rule 10): the
first one found answers the whole append, and nothing is written. Otherwise the batch is
validated by the producer's ``ProducerAppendInfo``, which stages the batches of this append
one after the other (``updatedEntry``) while still knowing the entry from before the append
(``currentEntry``): rules 12 and 15 look at the staged epoch, rule 16 expects the staged
last sequence but exempts every batch of a producer whose committed epoch is -1 (a producer
unknown before the append), and rule 18 looks at the staged transaction.

dedup stages on ``table.copy(producer_ids)``, where the table's own check applies the same
rules with one entry: the staged one, which already holds the earlier batches of this append.
For a producer's first batch in the append the staged entry is its committed one and the two
agree. For a later batch they can differ in two ways: the table would look the batch up
among this append's earlier batches (the same batch sent twice in one request is no
duplicate to Kafka), and it would apply rule 16 to a producer unknown before the append.
So the append is first checked as a whole on the copy (the compiled loop, the usual case);
if a later batch of a producer is where that check stops, or repeats a committed batch, the
append is checked again batch by batch as Kafka does.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import numpy as np

from ._layout import write_leader_fields
from ._messages import batch_error
from ._types import NO_PRODUCER_EPOCH, BatchMetadata, Origin, follows, wrap_increment
from .errors import KafkaError, OutOfOrderSequenceError
from .records import append_batches

__all__ = ["Analysis", "analyze_and_validate"]

#: Up to this many batches of one producer are looked up in its committed entry by the
#: table's check (about 2 us each, an exception included), more by reading the entry out
#: once (about 9 us) and comparing them all at once.
_PROBES = 4


class Analysis(NamedTuple):
    """What :func:`analyze_and_validate` found: a ``duplicate`` (the original batch's
    ``(base_offset, last_offset, timestamp)``: nothing is to be written), or else the
    ``staged`` table holding the append's batches, to apply with ``update_from`` once they
    are written, and the ``log_end_offset`` after them."""

    duplicate: tuple[int, int, int] | None
    staged: Any
    log_end_offset: int


class _Committed:
    """The producers' entries from before the append (Kafka's ``lastEntry``), each read out
    once, where a batch's duplicate is looked up (rule 10, ``findDuplicateBatch``)."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self._entries: dict[int, tuple[int, dict[tuple[int, int], BatchMetadata]]] = {}

    def read(self, producer_id: int) -> tuple[int, dict[tuple[int, int], BatchMetadata]]:
        """The producer's epoch (-1 for an unknown producer) and its batches by first and last
        sequence (the oldest of two equal ones, as Kafka's findFirst)."""
        found = self._entries.get(producer_id)
        if found is None:
            entry = self._table.entry(producer_id)
            batches: dict[tuple[int, int], BatchMetadata] = {}
            for batch in entry.batches if entry is not None else ():
                batches.setdefault((batch.first_sequence, batch.last_sequence), batch)
            epoch = NO_PRODUCER_EPOCH if entry is None else entry.producer_epoch
            found = self._entries[producer_id] = (epoch, batches)
        return found

    def duplicate(self, producer_id: int, epoch: int, base_sequence: int, count: int) -> BatchMetadata | None:
        committed_epoch, batches = self.read(producer_id)
        if epoch != committed_epoch:
            return None
        return batches.get((base_sequence, wrap_increment(base_sequence, count - 1)))


def analyze_and_validate(
    table: Any, data: bytearray, headers: np.ndarray, *, origin: Origin, log_end_offset: int, leader_epoch: int
) -> Analysis:
    """Check the batches of ``data`` (scanned into ``headers``, record-level rules already
    applied) against a staged copy of ``table``'s producers, in Kafka's order, and write
    each batch's offset (consecutive from ``log_end_offset``) and ``leader_epoch`` (if >= 0)
    into ``data``. Raises the first refused batch's Kafka error; a duplicate comes back in
    the :class:`Analysis`. ``table`` is not changed."""
    producer_ids = headers["producer_id"]
    order = np.argsort(producer_ids, kind="stable")  # (one sort gives both: cheaper than np.unique)
    ranked = producer_ids[order]
    first = np.empty(len(ranked), dtype=bool)  # in ranked order: a producer's first batch here
    first[:1] = True
    np.not_equal(ranked[1:], ranked[:-1], out=first[1:])
    idempotent = ranked >= 0
    producers = ranked[first & idempotent]  # ascending, as np.unique gives them
    staged = table.copy(producers)
    verdict = append_batches(
        staged,
        data,
        origin=origin,
        log_end_offset=log_end_offset,
        partition_leader_epoch=None if leader_epoch < 0 else leader_epoch,
        write_offsets=True,
    )
    stops = np.flatnonzero((verdict.error_codes != 0) | verdict.duplicate)
    # Other origins have no duplicate or sequence check to differ in; with each producer once
    # the staged entries are the committed ones (fewer producers than batches: some producer
    # has several batches here, or some batch has no producer id).
    if origin == Origin.CLIENT and len(producers) < len(ranked):
        later = ~first & idempotent  # the batches of a producer with an earlier one here
        if len(stops):
            later &= order <= stops[0]
        rows = order[later]  # grouped by producer
        # Where the staged check stopped at such a batch (a duplicate among this append's
        # batches, or rule 16 applied to a producer unknown before the append), or where the
        # committed entry holds one (Kafka's duplicate, dropped from the staged window), the
        # staged verdicts may not be Kafka's.
        if len(rows) and (
            (len(stops) and bool((rows == stops[0]).any())) or _committed_holds(table, headers, rows, log_end_offset)
        ):
            return _one_by_one(table, data, headers, log_end_offset, leader_epoch)
    if len(stops):
        row = int(stops[0])
        if verdict.error_codes[row]:
            raise verdict.errors[row]
        duplicate = (int(verdict.base_offsets[row]), int(verdict.last_offsets[row]), int(verdict.timestamps[row]))
        return Analysis(duplicate, None, log_end_offset)
    return Analysis(None, staged, verdict.log_end_offset)


def _committed_holds(table: Any, headers: np.ndarray, rows: np.ndarray, log_end_offset: int) -> bool:
    """Whether a batch at ``rows`` (grouped by producer) repeats a batch of its producer's
    committed entry (rule 10)."""
    producer_ids = headers["producer_id"][rows]  # (field by field: a row of all fields costs more)
    epochs = headers["producer_epoch"][rows]
    bases = headers["base_sequence"][rows].astype(np.int64)
    deltas = headers["last_offset_delta"][rows]
    edges = [0, *(np.flatnonzero(producer_ids[1:] != producer_ids[:-1]) + 1).tolist(), len(rows)]
    for start, end in itertools.pairwise(edges):
        producer_id = int(producer_ids[start])
        if end - start <= _PROBES:
            # Rule 10 is the first thing the table's own check does: a few batches ask it.
            batches = zip(
                epochs[start:end].tolist(), bases[start:end].tolist(), deltas[start:end].tolist(), strict=True
            )
            for epoch, base_sequence, delta in batches:
                try:
                    if table.check(producer_id, epoch, base_sequence, delta + 1, log_end_offset).duplicate:
                        return True
                except KafkaError:  # refused by the rules after rule 10: not a duplicate
                    pass
        else:
            # Many batches of one producer: its committed batches read out once, compared at once.
            committed_epoch, committed = _Committed(table).read(producer_id)
            firsts = bases[start:end]
            lasts = (firsts + deltas[start:end]) % (1 << 31)  # §8.4: wraps past 2^31-1
            keys = ((firsts << 31) | lasts)[epochs[start:end] == committed_epoch]
            if not {(first << 31) | last for first, last in committed}.isdisjoint(keys.tolist()):
                return True
    return False


def _one_by_one(table: Any, data: bytearray, headers: np.ndarray, log_end_offset: int, leader_epoch: int) -> Analysis:
    """analyzeAndValidateProducerState itself, for a client append: per batch, the committed
    duplicate first (rule 10), then the producer's staged checks (:func:`_check_staged`)."""
    producer_ids = headers["producer_id"]
    staged = table.copy(np.unique(producer_ids[producer_ids >= 0]))
    committed = _Committed(table)
    offset = log_end_offset
    for header in headers:
        position, count = int(header["position"]), int(header["last_offset_delta"]) + 1
        write_leader_fields(data, position, offset, leader_epoch)
        producer_id = int(header["producer_id"])
        if producer_id < 0:
            staged.update_map_end_offset(offset + count)  # §3.2 step 6, for data without a producer id
        else:
            original = committed.duplicate(
                producer_id, int(header["producer_epoch"]), int(header["base_sequence"]), count
            )
            if original is not None:
                answer = (original.first_offset, original.last_offset, original.timestamp)
                return Analysis(answer, None, log_end_offset)
            staged.update(_check_staged(staged, committed.read(producer_id)[0], header, offset))
        offset += count
    return Analysis(None, staged, offset)


def _check_staged(staged: Any, committed_epoch: int, header: Any, offset: int) -> Any:
    """Kafka's ProducerAppendInfo checks of one client batch at ``offset`` (rules 12, 15, 16
    and 18) against the ``staged`` entry, the producer's epoch before the append being
    ``committed_epoch``; the table's verdict, or its Kafka error raised."""
    producer_id, epoch = int(header["producer_id"]), int(header["producer_epoch"])
    base_sequence, count = int(header["base_sequence"]), int(header["last_offset_delta"]) + 1
    batch = (producer_id, epoch, base_sequence, count, offset)
    options = {"max_timestamp": int(header["max_timestamp"]), "transactional": bool(header["is_transactional"])}
    current = staged.entry(producer_id)
    if current is None or epoch != current.producer_epoch:
        # Another epoch: rules 12 and 15 look at the staged epoch in Kafka too, and a batch of
        # another epoch is nobody's duplicate.
        return staged.check(*batch, **options)
    # Rule 16: the staged last sequence is Kafka's expected one (the committed entry's until
    # this append adds a batch), and a producer unknown before the append is exempt.
    if committed_epoch != NO_PRODUCER_EPOCH and not follows(current.last_sequence, base_sequence):
        transaction = current.current_txn_first_offset
        raise batch_error(
            OutOfOrderSequenceError.code,
            producer_id,
            offset,
            epoch,
            base_sequence,
            current.producer_epoch,
            current.last_sequence,
            -1 if transaction is None else transaction,
        )
    # What is left, rule 12 (equal epochs pass) and rule 18, is the table's COORDINATOR
    # check (spec §2.3: no duplicate or sequence check).
    return staged.check(*batch, origin=Origin.COORDINATOR, **options)
