"""The pure-Python twin of the producer-state table: the oracle the compiled table is tested against.

Written for clarity, one Kafka rule per branch, with the spec's rule numbers
(``docs/spec.md``). Same API, same exceptions and the same results
as :class:`dedup._state.ProducerStateTable`; ``DEDUP_PURE_PYTHON=1`` makes ``dedup`` export
this one instead.

Not modelled, in either twin: transaction verification (KIP-890, rules 2, 11, 13, 14; as if
``transaction.partition.verification.enable=false``) and the post-4.0 marker epoch rule
(M2 variant). dedup follows Kafka 4.0.
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _args
from .._layout import ErrorCode
from .._messages import batch_error, marker_error
from .._types import (
    DEFAULT_WINDOW,
    NO_PRODUCER_EPOCH,
    NO_SEQUENCE,
    NO_TIMESTAMP,
    AppendManyResult,
    BatchMetadata,
    CompletedTxn,
    Origin,
    ProducerStateEntry,
    follows,
    wrap_increment,
)
from ..errors import KafkaError

__all__ = ["AppendResult", "ProducerStateTable"]

log = logging.getLogger("dedup")


@dataclass(frozen=True, slots=True, eq=False)
class AppendResult:
    """The verdict on one batch: appended (or to be appended) at these offsets, or a duplicate.

    For a duplicate, ``base_offset``, ``last_offset`` and ``timestamp`` are the ORIGINAL
    batch's (spec §2.1 rule 10); otherwise they are this batch's offsets and max timestamp.
    A result of :meth:`ProducerStateTable.check` is passed to
    :meth:`ProducerStateTable.update` once the batch is written.
    """

    duplicate: bool
    base_offset: int
    last_offset: int
    timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    last_sequence: int
    origin: Origin
    transactional: bool
    _table: ProducerStateTable
    _generation: int

    def __repr__(self) -> str:
        kind = "duplicate" if self.duplicate else "append"
        return (
            f"AppendResult({kind}, producer_id={self.producer_id}, base_offset={self.base_offset}, "
            f"last_offset={self.last_offset}, timestamp={self.timestamp})"
        )


class _Entry:
    """The live, mutable state of one producer (spec §1.2)."""

    __slots__ = ("producer_epoch", "batches", "coordinator_epoch", "last_timestamp", "current_txn_first_offset")

    def __init__(self, window: int) -> None:
        self.producer_epoch = NO_PRODUCER_EPOCH
        self.batches: deque[BatchMetadata] = deque(maxlen=window)
        self.coordinator_epoch = -1
        self.last_timestamp = NO_TIMESTAMP
        self.current_txn_first_offset: int | None = None

    @property
    def last_sequence(self) -> int:
        return self.batches[-1].last_sequence if self.batches else NO_SEQUENCE

    def copy(self) -> _Entry:
        """An independent copy (the BatchMetadata in it are immutable, so they are shared)."""
        twin = _Entry.__new__(_Entry)
        twin.producer_epoch = self.producer_epoch
        twin.batches = deque(self.batches, maxlen=self.batches.maxlen)
        twin.coordinator_epoch = self.coordinator_epoch
        twin.last_timestamp = self.last_timestamp
        twin.current_txn_first_offset = self.current_txn_first_offset
        return twin

    def maybe_update_producer_epoch(self, epoch: int) -> None:
        # The only place a sequence "reset" happens: any epoch change (up or down) drops the
        # batch metadata (spec §1.2).
        if epoch != self.producer_epoch:
            self.batches.clear()
            self.producer_epoch = epoch

    def find_duplicate(self, epoch: int, first_sequence: int, last_sequence: int) -> BatchMetadata | None:
        if epoch != self.producer_epoch:
            return None
        for batch in self.batches:
            if batch.first_sequence == first_sequence and batch.last_sequence == last_sequence:
                return batch
        return None


class _Slots(MutableMapping[int, _Entry]):
    """The twin's producers, in the table's order, numbered as the compiled table numbers its
    entries: each number in use holds a producer or is a hole (a removed producer's number,
    None here), and a new producer takes the hole freed last, else the next number. Deleting
    a producer makes a hole; :meth:`compact` is remove_expired's compaction. Iteration is in
    number order, holes skipped. The snapshot and records twins use it as a dict."""

    __slots__ = ("_entries", "_number", "_numbers", "_free")

    def __init__(self) -> None:
        self._entries: dict[int, _Entry] = {}
        self._number: dict[int, int] = {}
        self._numbers: list[int | None] = []
        self._free: list[int] = []

    def __getitem__(self, producer_id: int) -> _Entry:
        return self._entries[producer_id]

    def get(self, producer_id: int, default: Any = None) -> Any:
        return self._entries.get(producer_id, default)

    def __contains__(self, producer_id: object) -> bool:
        return producer_id in self._entries

    def __setitem__(self, producer_id: int, entry: _Entry) -> None:
        if producer_id not in self._entries:
            if self._free:
                number = self._free.pop()
                self._numbers[number] = producer_id
            else:
                number = len(self._numbers)
                self._numbers.append(producer_id)
            self._number[producer_id] = number
        self._entries[producer_id] = entry

    def __delitem__(self, producer_id: int) -> None:
        del self._entries[producer_id]
        number = self._number.pop(producer_id)
        self._numbers[number] = None
        self._free.append(number)

    def __iter__(self) -> Iterator[int]:
        return (producer_id for producer_id in self._numbers if producer_id is not None)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._number.clear()
        self._numbers.clear()
        self._free.clear()

    def in_use(self) -> int:
        """Numbers in use: producers and holes."""
        return len(self._numbers)

    def compact(self, gone: set[int]) -> None:
        """Remove the producers in `gone` and every hole by swap-remove, as the compiled
        table's compaction: going forward, a removed producer's or a hole's place is taken by
        the last number in use, which is checked in turn."""
        order = list(self._numbers)
        position = 0
        while position < len(order):
            producer_id = order[position]
            if producer_id is None or producer_id in gone:
                last = order.pop()
                if position < len(order):
                    order[position] = last
            else:
                position += 1
        for producer_id in gone:
            del self._entries[producer_id]
        self._numbers = order
        # No hole (None) is left in order: the guard only tells the type checker.
        self._number = {producer_id: number for number, producer_id in enumerate(order) if producer_id is not None}
        self._free = []

    def memory_bytes(self) -> int:
        return sum(sys.getsizeof(part) for part in (self._entries, self._number, self._numbers, self._free))


def _copy_ids(producer_ids: Any) -> np.ndarray:
    """``copy()``'s ``producer_ids`` as a C-contiguous int64 array, checked like ``append_many``'s
    column (the same as ``copy_ids`` in the compiled ``dedup._state``)."""
    if not isinstance(producer_ids, np.ndarray):
        iterator = None
        if not isinstance(producer_ids, (str, bytes, bytearray)):
            try:
                iterator = iter(producer_ids)
            except TypeError:
                pass
        if iterator is None:
            raise TypeError(
                "producer_ids must be an iterable of producer ids, an int64 array or None, "
                f"got {type(producer_ids).__name__}"
            )
        producer_ids = list(iterator)
    return _args._column(*_args._COLUMNS[0], producer_ids)


def _qualified(value: object) -> str:
    """``module.Class`` of a value, naming which twin a table is."""
    return f"{type(value).__module__}.{type(value).__qualname__}"



def verdict_columns(rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The per-row verdicts of ``append_many`` and ``append_batches`` before any row is decided:
    error codes 0, no duplicate, base and last offsets and timestamps -1."""
    none = np.full(rows, -1, dtype=np.int64)
    return np.zeros(rows, dtype=np.int16), np.zeros(rows, dtype=np.bool_), none, none.copy(), none.copy()

class ProducerStateTable:
    """The producer state of one partition replica (pure Python).

    ``window`` is how many batches per producer are retained for duplicate detection
    (Kafka: 5). ``capacity`` is a presizing hint; the twin ignores it. ``max_producers``
    (None: unbounded) caps the producers held (see :attr:`max_producers`).
    """

    def __init__(self, window: int = DEFAULT_WINDOW, *, capacity: int = 0, max_producers: int | None = None) -> None:
        self._window = _args.window(window)
        _args.capacity(capacity)
        self._max_producers = _args.max_producers(max_producers)
        self._producers = _Slots()
        self._map_end_offset = 0
        self._generation = 0
        self._evictions = 0
        # A copy() is a staging table: it refuses a new producer as its table would (counting
        # the open transactions its table holds outside it) and never evicts.
        self._staging = False
        self._outside_open_txns = 0

    # -- inspection -------------------------------------------------------------------------

    @property
    def window(self) -> int:
        return self._window

    @property
    def map_end_offset(self) -> int:
        """Exclusive end offset of what the table reflects (Kafka's mapEndOffset)."""
        return self._map_end_offset

    def __len__(self) -> int:
        return len(self._producers)

    def __contains__(self, producer_id: object, /) -> bool:
        number = _args.maybe_producer_id(producer_id)
        return number is not None and number in self._producers

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._producers))

    def producer_ids(self) -> np.ndarray:
        return np.fromiter(self._producers, dtype=np.int64, count=len(self._producers))

    def entry(self, producer_id: int) -> ProducerStateEntry | None:
        producer_id = _args.producer_id(producer_id)
        live = self._producers.get(producer_id)
        if live is None:
            return None
        return ProducerStateEntry(
            producer_id=producer_id,
            producer_epoch=live.producer_epoch,
            batches=tuple(live.batches),
            coordinator_epoch=live.coordinator_epoch,
            last_timestamp=live.last_timestamp,
            current_txn_first_offset=live.current_txn_first_offset,
        )

    def memory_bytes(self) -> int:
        """An estimate of the Python objects the twin holds (the compiled table is exact)."""
        total = self._producers.memory_bytes()
        for live in self._producers.values():
            total += sys.getsizeof(live) + sys.getsizeof(live.batches)
            total += sum(sys.getsizeof(batch) for batch in live.batches)
        return total

    def __repr__(self) -> str:
        return f"<dedup.reference.ProducerStateTable window={self._window} producers={len(self)}>"

    # -- bounded producer state (KIP-936's problem; the compiled table/eviction.pxi) -------------

    @property
    def max_producers(self) -> int | None:
        """The most producers the table holds, or None (unbounded, as Kafka).

        When the table holds that many and a new producer comes (append, update,
        append_marker, update_from), the least recently used producer without an ongoing
        transaction is evicted first: the one with the smallest last use, the last offset of
        its newest retained batch (Kafka's ``lastDataOffset``, -1 if it retains none), ties by
        producer id. Snapshots keep that offset, so the order survives a round trip. An
        evicted producer is unknown: its next batch is accepted at any sequence (KIP-360),
        trading the dedup of long-idle producers for bounded memory (Redpanda's
        ``max_concurrent_producer_ids``). When producers with an ongoing transaction fill the
        table, a new CLIENT producer is refused with ``ThrottlingQuotaExceededError`` (89,
        retriable); REPLICATION and COORDINATOR never are, and may take the table past the
        cap until transactions end. Setting it evicts down to it at once. A :meth:`copy`
        keeps it for its refusals but never evicts: :meth:`update_from` does.
        """
        return self._max_producers

    @max_producers.setter
    def max_producers(self, value: int | None) -> None:
        self._max_producers = _args.max_producers(value)
        if self._max_producers is not None:
            self._evict(self._max_producers)

    @property
    def evictions(self) -> int:
        """How many producers :attr:`max_producers` has evicted from this table."""
        return self._evictions

    def _open_txns(self) -> int:
        return sum(1 for live in self._producers.values() if live.current_txn_first_offset is not None)

    def _refuses_new_producer(self, origin: Origin) -> bool:
        """A new CLIENT producer is refused when open transactions fill the capped table."""
        return (
            self._max_producers is not None
            and origin == Origin.CLIENT
            and self._open_txns() + self._outside_open_txns >= self._max_producers
        )

    def _evict(self, keep: int) -> None:
        """Evict the least recently used producers without an ongoing transaction until at
        most ``keep`` stay or none is left to evict."""
        evicted = 0
        while len(self._producers) > keep:
            candidates = [
                (live.batches[-1].last_offset if live.batches else -1, producer_id)
                for producer_id, live in self._producers.items()
                if live.current_txn_first_offset is None
            ]
            if not candidates:
                break
            del self._producers[min(candidates)[1]]  # its number becomes the hole taken next
            evicted += 1
        if evicted:
            self._evictions += evicted
            self._generation += 1

    def _admit(self, producer_id: int) -> _Entry:
        """A new producer's entry; a capped table holding max_producers evicts first (a
        staging copy never does)."""
        if self._max_producers is not None and not self._staging and len(self._producers) >= self._max_producers:
            self._evict(self._max_producers - 1)
        live = self._producers[producer_id] = _Entry(self._window)
        return live

    # -- data batches -----------------------------------------------------------------------

    def check(
        self,
        producer_id: int,
        producer_epoch: int,
        base_sequence: int,
        record_count: int,
        base_offset: int,
        *,
        max_timestamp: int = NO_TIMESTAMP,
        origin: Origin = Origin.CLIENT,
        transactional: bool = False,
    ) -> AppendResult:
        """Validate one batch without changing the table (spec §3.1 staging).

        Returns the verdict: a duplicate (answered with the original batch's offsets and
        timestamp) or a batch to write at ``base_offset``; raises the Kafka error otherwise.
        """
        producer_id = _args.producer_id(producer_id)
        epoch = _args.producer_epoch(producer_epoch)
        base_sequence = _args.base_sequence(base_sequence)
        count = _args.record_count(record_count)
        base_offset = _args.offset("base_offset", base_offset)
        max_timestamp = _args.timestamp("max_timestamp", max_timestamp)
        origin = _args.origin(origin)
        transactional = _args.flag("transactional", transactional)
        last_offset = _args.last_offset(base_offset, count)
        _args.not_backwards("base_offset", base_offset, self._map_end_offset)

        last_sequence = NO_SEQUENCE if base_sequence == NO_SEQUENCE else wrap_increment(base_sequence, count - 1)
        live = self._producers.get(producer_id)

        def result(duplicate: bool, first: int, last: int, stamp: int) -> AppendResult:
            return AppendResult(
                duplicate=duplicate,
                base_offset=first,
                last_offset=last,
                timestamp=stamp,
                producer_id=producer_id,
                producer_epoch=epoch,
                base_sequence=base_sequence,
                last_sequence=last_sequence,
                origin=origin,
                transactional=transactional,
                _table=self,
                _generation=self._generation,
            )

        def reject(code: int) -> KafkaError:
            return batch_error(
                code,
                producer_id,
                base_offset,
                epoch,
                base_sequence,
                live.producer_epoch if live is not None else NO_PRODUCER_EPOCH,
                live.last_sequence if live is not None else NO_SEQUENCE,
                -1 if live is None or live.current_txn_first_offset is None else live.current_txn_first_offset,
            )

        # Rule 8: a client batch with a producer id must carry a sequence.
        if origin == Origin.CLIENT and base_sequence == NO_SEQUENCE:
            raise reject(ErrorCode.INVALID_RECORD)
        current_epoch = live.producer_epoch if live is not None else NO_PRODUCER_EPOCH

        # Rule 10: a duplicate is found before any other check, for clients only.
        if origin == Origin.CLIENT and live is not None:
            original = live.find_duplicate(epoch, base_sequence, last_sequence)
            if original is not None:
                return result(True, original.first_offset, original.last_offset, original.timestamp)

        # Rule 12: an older epoch is fenced; a follower only warns (§2.4).
        if epoch < current_epoch:
            if origin != Origin.REPLICATION:
                raise reject(ErrorCode.INVALID_PRODUCER_EPOCH)
            log.warning(
                "producer %d: epoch %d is older than the current epoch %d; accepted from replication",
                producer_id, epoch, current_epoch,
            )

        # Rules 15-16: sequence checks, for clients only.
        if origin == Origin.CLIENT:
            if epoch != current_epoch:
                # Rule 15: a new epoch starts at 0, unless the producer is unknown (KIP-360).
                if base_sequence != 0 and current_epoch != NO_PRODUCER_EPOCH:
                    raise reject(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)
            elif current_epoch != NO_PRODUCER_EPOCH:
                # Rule 16: same epoch: the batch must follow the last one (wrapping at 2^31-1).
                assert live is not None
                if not follows(live.last_sequence, base_sequence):
                    raise reject(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER)

        # Rule 18: no plain batch inside an ongoing transaction, whatever the origin.
        if live is not None and live.current_txn_first_offset is not None and not transactional:
            raise reject(ErrorCode.INVALID_TXN_STATE)
        # A capped table full of open transactions takes no new client producer.
        if live is None and self._refuses_new_producer(origin):
            raise reject(ErrorCode.THROTTLING_QUOTA_EXCEEDED)
        return result(False, base_offset, last_offset, max_timestamp)

    def update(self, result: AppendResult) -> None:
        """Record a batch that :meth:`check` accepted and the log has written (spec §3.2 step 4).

        ``ValueError`` for a duplicate (nothing to record) or a stale result (the table
        changed since the check); ``TypeError`` for anything but this table's own result.
        """
        if not isinstance(result, AppendResult):
            raise TypeError(f"result must be an AppendResult from check(), got {type(result).__name__}")
        if result._table is not self:
            raise ValueError("result comes from another table's check()")
        if result.duplicate:
            raise ValueError("result is a duplicate: there is nothing to record")
        if result._generation != self._generation:
            raise ValueError("result is stale: the table changed since check(); check the batch again")
        live = self._producers.get(result.producer_id)
        if live is None:
            live = self._admit(result.producer_id)
        # Rule 17: record the batch (an epoch change drops the older batches first).
        live.maybe_update_producer_epoch(result.producer_epoch)
        offset_delta = result.last_offset - result.base_offset
        live.batches.append(BatchMetadata(result.last_sequence, result.last_offset, offset_delta, result.timestamp))
        live.last_timestamp = result.timestamp
        # Rule 18: the first transactional batch starts a transaction.
        if result.transactional and live.current_txn_first_offset is None:
            live.current_txn_first_offset = result.base_offset
        self._map_end_offset = result.last_offset + 1
        self._generation += 1

    def append(
        self,
        producer_id: int,
        producer_epoch: int,
        base_sequence: int,
        record_count: int,
        base_offset: int,
        *,
        max_timestamp: int = NO_TIMESTAMP,
        origin: Origin = Origin.CLIENT,
        transactional: bool = False,
    ) -> AppendResult:
        """:meth:`check`, then :meth:`update` unless the batch is a duplicate."""
        result = self.check(
            producer_id,
            producer_epoch,
            base_sequence,
            record_count,
            base_offset,
            max_timestamp=max_timestamp,
            origin=origin,
            transactional=transactional,
        )
        if not result.duplicate:
            self.update(result)
        return result

    def append_many(
        self,
        producer_ids: Any,
        producer_epochs: Any,
        base_sequences: Any,
        record_counts: Any,
        max_timestamps: Any = None,
        *,
        log_end_offset: int,
        origin: Origin = Origin.CLIENT,
        transactional: Any = None,
    ) -> AppendManyResult:
        """:meth:`append` for each row, accepted batches taking consecutive offsets from
        ``log_end_offset``; a Kafka error becomes that row's code instead of an exception."""
        pids, epochs, seqs, counts, stamps, txn = _args.batch_arrays(
            producer_ids, producer_epochs, base_sequences, record_counts, max_timestamps, transactional
        )
        log_end_offset = _args.offset("log_end_offset", log_end_offset)
        _args.not_backwards("log_end_offset", log_end_offset, self._map_end_offset)
        _args.total_records_fit(log_end_offset, counts)
        origin = _args.origin(origin)
        rows = len(pids)
        codes, duplicate, firsts, lasts, times = verdict_columns(rows)
        for row in range(rows):
            try:
                result = self.append(
                    int(pids[row]),
                    int(epochs[row]),
                    int(seqs[row]),
                    int(counts[row]),
                    log_end_offset,
                    max_timestamp=int(stamps[row]),
                    origin=origin,
                    transactional=bool(txn[row]) if txn is not None else False,
                )
            except KafkaError as error:
                codes[row] = error.code
                continue
            duplicate[row] = result.duplicate
            firsts[row], lasts[row], times[row] = result.base_offset, result.last_offset, result.timestamp
            if not result.duplicate:
                log_end_offset = result.last_offset + 1
        return AppendManyResult(codes, duplicate, firsts, lasts, times, log_end_offset)

    def update_map_end_offset(self, offset: int) -> None:
        """The log wrote batches without producer state (no producer id) up to ``offset``,
        exclusive: Kafka's updateMapEndOffset (spec §3.2 step 6). ``ValueError`` if it
        would go backwards."""
        offset = _args.offset("offset", offset)
        _args.not_backwards("offset", offset, self._map_end_offset)
        if offset != self._map_end_offset:
            self._map_end_offset = offset
            self._generation += 1

    # -- transaction markers ----------------------------------------------------------------

    def append_marker(
        self,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int,
        offset: int,
        *,
        commit: bool,
        timestamp: int = NO_TIMESTAMP,
        origin: Origin = Origin.COORDINATOR,
    ) -> CompletedTxn | None:
        """Apply a COMMIT or ABORT marker written at ``offset`` (spec §2.2).

        Returns the completed transaction, or ``None`` when none was ongoing (an empty
        transaction completes nothing, KAFKA-10702). Raises ``InvalidProducerEpochError``
        (M2) or ``TransactionCoordinatorFencedError`` (M3) for the coordinator; a follower
        (``REPLICATION``) logs and applies instead. A client cannot send a marker (rule 7).
        """
        producer_id = _args.producer_id(producer_id)
        epoch = _args.producer_epoch(producer_epoch)
        coordinator_epoch = _args.coordinator_epoch(coordinator_epoch)
        offset = _args.marker_offset(offset)
        commit = _args.flag("commit", commit)
        timestamp = _args.timestamp("timestamp", timestamp)
        origin = _args.origin(origin)
        _args.not_backwards("offset", offset, self._map_end_offset)
        live = self._producers.get(producer_id)
        current_epoch = live.producer_epoch if live is not None else NO_PRODUCER_EPOCH
        current_coordinator_epoch = live.coordinator_epoch if live is not None else -1

        def reject(code: int) -> KafkaError:
            return marker_error(
                code, producer_id, offset, epoch, coordinator_epoch, current_epoch, current_coordinator_epoch
            )

        if origin == Origin.CLIENT:  # rule 7: clients cannot write control batches
            raise reject(ErrorCode.INVALID_RECORD)
        if epoch < current_epoch:  # M2
            if origin != Origin.REPLICATION:
                raise reject(ErrorCode.INVALID_PRODUCER_EPOCH)
            log.warning(
                "producer %d: marker epoch %d is older than the current epoch %d; accepted from replication",
                producer_id, epoch, current_epoch,
            )
        if current_coordinator_epoch > coordinator_epoch:  # M3
            if origin != Origin.REPLICATION:
                raise reject(ErrorCode.TRANSACTION_COORDINATOR_FENCED)
            log.info(
                "producer %d: marker coordinator epoch %d is older than %d; accepted from replication",
                producer_id, coordinator_epoch, current_coordinator_epoch,
            )
        if live is None:  # M4: a marker for an unknown producer creates its entry
            live = self._admit(producer_id)
        completed = None
        if live.current_txn_first_offset is not None:  # M5
            completed = CompletedTxn(producer_id, live.current_txn_first_offset, offset, not commit)
        live.maybe_update_producer_epoch(epoch)
        live.coordinator_epoch = coordinator_epoch
        live.current_txn_first_offset = None
        live.last_timestamp = timestamp
        self._map_end_offset = offset + 1
        self._generation += 1
        return completed

    # -- copies -----------------------------------------------------------------------------

    def copy(self, producer_ids: Any = None) -> ProducerStateTable:
        """A new table with the same window and map end offset holding copies of the entries
        of ``producer_ids`` (any iterable of ints or an int64 numpy array; ids the table does
        not hold are skipped), or of every producer when None. Changing the copy never
        changes this table, nor the reverse. The record log uses it to stage an append of
        several batches (spec §3.1: validate against a copy, write, then apply to the live
        table).

        The copy keeps the producers' order (the order of ``producer_ids``, first occurrence,
        for a subset). It has no holes (the numbers removed producers left, spec §6), so a
        producer added later may take another place in its order than in this table.
        ``TypeError`` or ``ValueError`` naming ``producer_ids`` for anything but producer ids
        (a negative id is a ``ValueError``, as in :meth:`entry`).
        """
        if producer_ids is None:
            chosen: Any = self._producers
        else:
            chosen = _copy_ids(producer_ids).tolist()
        fresh = ProducerStateTable(self._window, max_producers=self._max_producers)
        fresh._map_end_offset = self._map_end_offset
        for producer_id in chosen:
            live = self._producers.get(producer_id)
            if live is not None and producer_id not in fresh._producers:
                fresh._producers[producer_id] = live.copy()
        fresh._staging = True
        fresh._outside_open_txns = self._open_txns() + self._outside_open_txns - fresh._open_txns()
        return fresh

    def update_from(self, staged: ProducerStateTable) -> None:
        """Make the entries of ``staged`` (a table made by this table's :meth:`copy`, then
        appended to) the live ones: every producer in ``staged`` replaces (or adds) its entry
        here, byte for byte, and this table's map end offset moves up to staged's (never
        down). Kafka's ProducerStateManager.update(appendInfo) after the log write (spec §3.2
        step 4)::

            staged = live.copy(producer_ids)   # validate the append against the copy
            ...                                # append to staged, write the log
            live.update_from(staged)

        Producers not in ``staged`` are untouched; ``staged`` is not changed and shares
        nothing with this table afterwards. Results of :meth:`check` made before are stale
        (unless nothing changed: ``staged`` empty and its map end offset not ahead).

        ``TypeError`` unless ``staged`` is a table of this same implementation;
        ``ValueError`` if it has another window or is this table itself.
        """
        if not isinstance(staged, ProducerStateTable):
            raise TypeError(
                f"staged must be a {_qualified(self)} made by this table's copy(), got {_qualified(staged)}"
            )
        if staged is self:
            raise ValueError("staged is this table itself: update_from takes a copy made by copy()")
        if staged._window != self._window:
            raise ValueError(
                f"staged has window {staged._window}, this table has window {self._window}: "
                "staged must be made by this table's copy()"
            )
        for producer_id, entry in staged._producers.items():
            # A copy: staged may be appended to again without changing this table.
            self._producers[producer_id] = entry.copy()
        if self._max_producers is not None and not self._staging:
            self._evict(self._max_producers)  # once the staged entries are in
        if not staged._producers and staged._map_end_offset <= self._map_end_offset:
            return  # nothing changes: check() results stay valid
        self._map_end_offset = max(self._map_end_offset, staged._map_end_offset)
        self._generation += 1

    # -- expiration -------------------------------------------------------------------------

    def remove_expired(self, now_ms: int, expiration_ms: int) -> int:
        """Remove producers idle for at least ``expiration_ms`` (spec §6); returns how many.

        A producer is expired when it has no ongoing transaction and
        ``now_ms - last_timestamp >= expiration_ms`` (exact integer arithmetic). A removed
        producer's number becomes a hole that the next new producer takes (the hole freed
        last first); when at most half the numbers in use would stay live, the table is
        compacted instead by swap-remove. The same in the compiled table.
        """
        now_ms = _args.timestamp("now_ms", now_ms)
        expiration_ms = _args.integer("expiration_ms", expiration_ms, 1, (1 << 63) - 1, "in [1, 2^63-1]")
        producers = self._producers

        def expired(producer_id: int) -> bool:
            live = producers[producer_id]
            return live.current_txn_first_offset is None and now_ms - live.last_timestamp >= expiration_ms

        # Kafka's HashMap promises no order; the twins share this one (the compiled table's
        # table_remove_expired), so that producer_ids() and snapshots agree.
        gone = [producer_id for producer_id in producers if expired(producer_id)]
        removed = len(gone)
        if not removed:
            return 0
        if (len(producers) - removed) * 2 <= producers.in_use():
            producers.compact(set(gone))
        else:
            for producer_id in gone:  # in the table's order: the last one is reused first
                del producers[producer_id]
        self._generation += 1
        return removed


if TYPE_CHECKING:  # mypy checks the twin against the typing contract the compiled stub inherits
    from .._protocol import ProducerStateTableProtocol

    _satisfies_the_contract: type[ProducerStateTableProtocol[AppendResult]] = ProducerStateTable
