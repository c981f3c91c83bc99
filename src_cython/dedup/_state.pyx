# Module dedup._state: the compiled producer-state table of one partition replica. Layouts and
# the C-level API that _records and _snapshot cimport: _state.pxd. This file holds the module's
# imports and C declarations and its Python boundary (argument conversion, AppendResult,
# ProducerStateTable); the table's C-level code is in table/, included below:
#   table/storage.pxi  memory: chunks, slabs, growth      table/bulk.pxi     bulk loading
#   table/index.pxi    producer id -> entry number        table/entry.pxi    one producer's entry
#   table/append.pxi   one batch, one marker (§2.1-2.4)   table/columns.pxi  append_many
#   table/expiry.pxi   remove_expired (§6)                table/copy.pxi     copies (§3.1)
#   table/eviction.pxi max_producers: evicting the least recently used producer (KIP-936's problem)
# Semantics, rule by rule: docs/spec.md (the rule and section numbers in comments are its).
#
# Not modelled (as in dedup.reference): transaction verification (KIP-890; rules 2, 11, 13,
# 14: as if transaction.partition.verification.enable=false) and the post-4.0 marker epoch
# rule. dedup follows Kafka 4.0.

cimport cython
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from cpython.mem cimport PyMem_RawFree, PyMem_RawMalloc, PyMem_RawRealloc
from libc.stdint cimport INT64_MAX, INT64_MIN, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

import functools
import logging
import os

import numpy as np

from dedup import _args
from dedup._messages import batch_error, marker_error
from dedup._types import AppendManyResult, BatchMetadata, CompletedTxn, Origin, ProducerStateEntry

cdef extern from "platform/slab.h":
    # A block of at least size bytes in huge pages where the system has them (*mapped: its
    # length, for dedup_slab_free; rounded up to whole huge pages if asked), traced by
    # tracemalloc; NULL if none.
    void* dedup_slab_alloc(size_t size, int whole_huge_pages, size_t* mapped) noexcept nogil
    # count blocks of size bytes (*mapped: each one's length, in whole 4 KiB pages) one after
    # the other in one mapping in huge pages, each freed on its own by dedup_slab_free; NULL
    # if none, and always without mappings.
    void* dedup_page_run_alloc(size_t size, size_t count, size_t* mapped) noexcept nogil
    void dedup_slab_free(void* p, size_t mapped) noexcept nogil
    # count blocks of unit bytes of dedup_page_run_alloc, one after the other from p, in one go.
    void dedup_page_run_free(char* p, size_t unit, size_t count) noexcept nogil
    # Give the heap's free pages back to the system (glibc's malloc_trim; nothing elsewhere).
    void dedup_heap_trim() noexcept nogil
    size_t dedup_slab_length(size_t size, int whole_huge_pages) noexcept nogil

cdef extern from "platform/prefetch.h":
    # Start loading the cache line at p (to read, or to write); a hint that never faults.
    void dedup_prefetch(const void* p) noexcept nogil
    void dedup_prefetch_write(const void* p) noexcept nogil

cdef extern from "table/limits.h":
    # An index slot that holds no entry, and one whose entry was removed (a tombstone: probes
    # go on past it, an insert may take it). A real slot never equals either, nor exceeds
    # them: the entry number in its low bits is at most 0.8 x the index capacity, itself below
    # 2^bits, so it stays below 2^bits - 2 (see index_masks).
    const uint32_t DEDUP_INDEX_EMPTY
    const uint32_t DEDUP_INDEX_DELETED
    # Entries are allocated in chunks of at most this many bytes (entries + timestamps).
    const Py_ssize_t DEDUP_CHUNK_BYTES
    const Py_ssize_t DEDUP_MAX_PRODUCERS
    # table_reserve puts the chunks it adds in one slab from this many on.
    const Py_ssize_t DEDUP_SLAB_MIN_CHUNKS
    # A grown table's single chunks from this index move into huge pages when it reaches
    # DEDUP_GROWTH_FROM chunks (gather_chunks).
    const Py_ssize_t DEDUP_GATHER_FROM
    # A table of this many chunks grows by slabs of up to DEDUP_GROWTH_PAGES huge pages (reserve_entries).
    const Py_ssize_t DEDUP_GROWTH_FROM
    const Py_ssize_t DEDUP_GROWTH_PAGES

_log = logging.getLogger("dedup")
# The slow paths of the argument checks, bound once: looking them up per call would cost
# more than the table's own work.
_producer_id_arg = _args.producer_id
_producer_epoch_arg = _args.producer_epoch
_base_sequence_arg = _args.base_sequence
_record_count_arg = _args.record_count
_origin_arg = _args.origin
_flag_arg = _args.flag
_base_offset_arg = functools.partial(_args.offset, "base_offset")
_max_timestamp_arg = functools.partial(_args.timestamp, "max_timestamp")
cdef object _CLIENT = Origin.CLIENT


include "table/storage.pxi"
include "table/index.pxi"
include "table/bulk.pxi"
include "table/entry.pxi"
include "table/append.pxi"
include "table/columns.pxi"
include "table/expiry.pxi"
include "table/copy.pxi"
include "table/eviction.pxi"


# --- Python boundary ----------------------------------------------------------------------

cdef inline int64_t as_int64(object value, int64_t low, int64_t high, object slow) except? -1:
    """An exact int in [low, high] converted in C; anything else goes to `slow`, the
    dedup._args check that converts it or raises the error naming the argument."""
    cdef int overflow = 0
    cdef long long number
    if PyLong_CheckExact(value):
        number = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0 and low <= number <= high:
            return number
    return slow(value)


cdef inline uint8_t as_origin(object value) except 255:
    cdef int overflow = 0
    cdef long long number
    if value is _CLIENT:  # the default: no conversion
        return ORIGIN_CLIENT
    if type(value) is Origin or PyLong_CheckExact(value):
        # An Origin is an int subclass: its value is read in C, without a Python comparison.
        number = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0 and 0 <= number <= 2:
            return <uint8_t>number
    return <uint8_t>(<int>_origin_arg(value))


cdef inline uint8_t as_flag(object value, str name) except 255:
    if value is True:
        return 1
    if value is False:
        return 0
    return 1 if _flag_arg(name, value) else 0


cdef str _qualified(object value):
    """`module.Class` of a value, naming which twin a table is."""
    return f"{type(value).__module__}.{type(value).__qualname__}"


cdef object copy_ids(object producer_ids):
    """copy()'s producer_ids as a C-contiguous int64 array, checked like append_many's column
    (the same as dedup.reference.table._copy_ids)."""
    if not isinstance(producer_ids, np.ndarray):
        if isinstance(producer_ids, (str, bytes, bytearray)):
            iterator = None
        else:
            try:
                iterator = iter(producer_ids)
            except TypeError:
                iterator = None
        if iterator is None:
            raise TypeError("producer_ids must be an iterable of producer ids, an int64 array or None, "
                            f"got {type(producer_ids).__name__}")
        producer_ids = list(iterator)
    return _args._column(*_args._COLUMNS[0], producer_ids)


cdef inline int load_batch(const Table* t, Batch* b, object producer_id, object producer_epoch,
                           object base_sequence, object record_count, object base_offset,
                           object max_timestamp, object origin, object transactional) except -1:
    """The arguments of check()/append() as a Batch; the same checks, in the same order,
    as dedup.reference (TypeError/ValueError naming the argument). Returns 1 when the batch
    is below the table's map end offset: the caller first checks that no other thread's call
    holds the table (the conversions here may run Python code, where such a call may start;
    then the offset read here is not to be trusted), then raises (loaded_slowly)."""
    cdef int64_t count
    b.producer_id = as_int64(producer_id, 0, INT64_MAX, _producer_id_arg)
    b.producer_epoch = <int16_t>as_int64(producer_epoch, -32768, 32767, _producer_epoch_arg)
    b.base_sequence = <int32_t>as_int64(base_sequence, -1, INT32_MAX_VALUE, _base_sequence_arg)
    count = as_int64(record_count, 1, INT32_MAX_VALUE, _record_count_arg)
    b.base_offset = as_int64(base_offset, 0, INT64_MAX, _base_offset_arg)
    b.max_timestamp = as_int64(max_timestamp, INT64_MIN, INT64_MAX, _max_timestamp_arg)
    b.origin = as_origin(origin)
    b.transactional = as_flag(transactional, "transactional")
    if b.base_offset > INT64_MAX - count:
        _args.last_offset(b.base_offset, count)  # raises: last offset + 1 must fit in int64
    b.offset_delta = <int32_t>(count - 1)
    b.last_sequence = (NO_SEQUENCE if b.base_sequence == NO_SEQUENCE
                       else increment_sequence(b.base_sequence, b.offset_delta))
    return b.base_offset < t.map_end_offset


cdef int loaded_slowly(ProducerStateTable table, const Batch* b) except -1:
    """After load_batch returned 1 or with the table marked busy: RuntimeError if another
    thread's call holds the table, else the ValueError of a batch below its map end offset
    (if it still is)."""
    table._check_idle()
    _args.not_backwards("base_offset", b.base_offset, table.t.map_end_offset)
    return 0


@cython.freelist(32)
@cython.auto_pickle(False)
cdef class AppendResult:
    """The verdict on one batch: appended (or to be appended) at these offsets, or a duplicate.

    For a duplicate, ``base_offset``, ``last_offset`` and ``timestamp`` are the ORIGINAL
    batch's (spec §2.1 rule 10); otherwise they are this batch's offsets and max timestamp.
    A result of :meth:`ProducerStateTable.check` is passed to
    :meth:`ProducerStateTable.update` once the batch is written.
    """

    def __init__(self):
        raise TypeError("AppendResult is made by ProducerStateTable.check() or append()")

    @property
    def origin(self):
        return Origin(self._origin)

    def __repr__(self):
        kind = "duplicate" if self.duplicate else "append"
        return (f"AppendResult({kind}, producer_id={self.producer_id}, base_offset={self.base_offset}, "
                f"last_offset={self.last_offset}, timestamp={self.timestamp})")


cdef AppendResult make_result(ProducerStateTable table, const Batch* b, const Verdict* v, uint64_t generation):
    cdef AppendResult r = AppendResult.__new__(AppendResult)
    r.duplicate = v.duplicate
    r.base_offset = v.base_offset
    r.last_offset = v.last_offset
    r.timestamp = v.timestamp
    r.producer_id = b.producer_id
    r.producer_epoch = b.producer_epoch
    r.base_sequence = b.base_sequence
    r.last_sequence = b.last_sequence
    r.transactional = b.transactional
    r._origin = b.origin
    r._table = table
    r._generation = generation
    return r


cdef object raise_batch_error(int error, const Batch* b, const Verdict* v):
    raise batch_error(error, b.producer_id, b.base_offset, b.producer_epoch, b.base_sequence,
                      v.current_epoch, v.current_last_sequence, v.current_txn_first_offset)


cdef void warn_epoch_regression(const Batch* b, const Verdict* v):
    _log.warning("producer %d: epoch %d is older than the current epoch %d; accepted from replication",
                 b.producer_id, b.producer_epoch, v.current_epoch)


@cython.auto_pickle(False)
cdef class ProducerStateTable:
    """The producer state of one partition replica (compiled).

    ``window`` is how many batches per producer are retained for duplicate detection
    (Kafka: 5, configurable up to 255). ``capacity`` presizes the table for that many
    producers, so that it does not reallocate until it holds more. ``max_producers`` (None:
    unbounded, Kafka's behaviour) caps the producers held: a new one first evicts the least
    recently used producer without an ongoing transaction (see :attr:`max_producers`).
    """

    def __cinit__(self, window=5, *, capacity=0, max_producers=None):
        cdef object cap = _args.max_producers(max_producers)
        table_init(&self.t, _args.window(window), _args.capacity(capacity))
        self.t.max_producers = 0 if cap is None else cap

    def __dealloc__(self):
        table_free(&self.t)

    cdef int _check_idle(self) except -1:
        if self._busy:
            raise RuntimeError("the table is in use: another thread is running a call on it without the GIL "
                               "(append_many, append_batches, remove_expired, copy, update_from, entry or a "
                               "snapshot write); a table has one writer at a time, as Kafka's "
                               "ProducerStateManager under its log's lock")
        return 0

    cdef int _claim(self) except -1:
        """Mark the table busy for a call that releases the GIL (or runs Python code) while it
        works on it; RuntimeError if another call has it. The test and the set run under the
        GIL with no Python code between them, so two threads cannot both pass: call it after
        the arguments are converted (converting them may run Python code, where another
        thread can take the GIL), immediately before the work, and clear _busy in a finally."""
        if self._busy:
            self._check_idle()
        self._busy = 1
        return 0

    cdef int _load_batch(self, Batch* b, object producer_id, object producer_epoch,
                         object base_sequence, object record_count, object base_offset,
                         object max_timestamp, object origin, object transactional) except -1:
        """The arguments of check()/append() as a Batch (see load_batch)."""
        if load_batch(&self.t, b, producer_id, producer_epoch, base_sequence, record_count,
                      base_offset, max_timestamp, origin, transactional) or self._busy:
            loaded_slowly(self, b)
        return 0

    # -- inspection -------------------------------------------------------------------------

    @property
    def window(self):
        return self.t.window

    @property
    def map_end_offset(self):
        """Exclusive end offset of what the table reflects (Kafka's mapEndOffset)."""
        return self.t.map_end_offset

    def __len__(self):
        return table_live(&self.t)

    def __contains__(self, producer_id):
        cdef object number = _args.maybe_producer_id(producer_id)
        self._check_idle()  # after the conversion (Python code, where another thread may start a call)
        return number is not None and table_find(&self.t, <int64_t>number) >= 0

    def __iter__(self):
        return iter(self.producer_ids().tolist())

    def producer_ids(self):
        """The producer ids in the table, as an int64 array (in the table's order)."""
        self._check_idle()
        cdef Py_ssize_t live = table_live(&self.t)
        ids = np.empty(live, dtype=np.int64)
        cdef int64_t[::1] out = ids
        cdef Py_ssize_t i, k = 0
        cdef int64_t producer_id
        # np.empty may run Python code, where another thread may have changed the table.
        self._check_idle()
        if table_live(&self.t) != live:
            raise RuntimeError("the table changed while producer_ids() read it: another thread appended to it; "
                               "a table has one writer at a time")
        for i in range(self.t.count):
            producer_id = (<EntryHeader*>entry_at(&self.t, i)).producer_id
            if producer_id != HOLE_ID:
                out[k] = producer_id
                k += 1
        return ids

    def entry(self, producer_id):
        """A read-only copy of the producer's state, or None if the table has no entry."""
        cdef int64_t pid = _args.producer_id(producer_id)
        cdef Py_ssize_t i
        cdef char* e
        cdef EntryHeader* header
        cdef int k, pos
        # Claimed: building the result runs Python code, where another thread could otherwise
        # start a call that moves the entry under `e`.
        self._claim()
        try:
            i = table_find(&self.t, pid)
            if i < 0:
                return None
            e = entry_at(&self.t, i)
            header = <EntryHeader*>e
            batches = []
            for k in range(header.count):
                pos = (header.head + k) % self.t.window
                batches.append(BatchMetadata(ring_last_sequence(e)[pos], slot_last_offset(&self.t, e, pos),
                                             slot_offset_delta(&self.t, e, pos), slot_timestamp(&self.t, e, pos)))
            return ProducerStateEntry(
                producer_id=header.producer_id,
                producer_epoch=header.producer_epoch,
                batches=tuple(batches),
                coordinator_epoch=header.coordinator_epoch,
                last_timestamp=last_timestamp_at(&self.t, i)[0],
                current_txn_first_offset=(None if header.current_txn_first_offset == NO_TXN
                                          else header.current_txn_first_offset),
            )
        finally:
            self._busy = 0

    def memory_bytes(self):
        """Bytes held by the table's allocations: entries, timestamp column, index, eviction heap."""
        return self.t.bytes

    @property
    def max_producers(self):
        """The most producers the table holds, or None (unbounded, as Kafka). When the table
        holds that many and a new producer comes (append, update, append_marker, update_from),
        the least recently used producer without an ongoing transaction is evicted first. A
        producer's last use is the last offset of its newest retained batch (Kafka's
        lastDataOffset; -1 if none), ties by producer id; snapshots keep it, so the order
        survives a round trip. An evicted producer is unknown: its next batch is accepted at
        any sequence (KIP-360), which trades the dedup of long-idle producers for bounded
        memory, as Redpanda's max_concurrent_producer_ids does. When producers with an
        ongoing transaction fill the table, a new CLIENT producer is refused with
        ``ThrottlingQuotaExceededError`` (89, retriable); REPLICATION and COORDINATOR never
        are, and may take the table past the cap until transactions end.

        Setting it evicts down to it at once (a table loaded from a snapshot with more).
        A :meth:`copy` keeps it for its refusals but never evicts: :meth:`update_from` does.
        """
        return None if self.t.max_producers == 0 else self.t.max_producers

    @max_producers.setter
    def max_producers(self, value):
        cdef object cap = _args.max_producers(value)
        self._check_idle()
        self.t.max_producers = 0 if cap is None else cap
        if cap is not None:
            table_evict(&self.t, self.t.max_producers)

    @property
    def evictions(self):
        """How many producers :attr:`max_producers` has evicted from this table."""
        return self.t.evictions

    def capacity_report(self):
        """How the table is sized: producers, entry and index capacity, load factor (live slots),
        index slots marked deleted by remove_expired (reused by inserts), chunks, wide entries,
        entries with an ongoing transaction, slabs (blocks of many chunks in huge pages), chunks
        a grown table moved into huge pages of their own (mapped_chunks: gather_chunks), bytes."""
        cdef Py_ssize_t k, mapped = 0
        for k in range(self.t.n_chunks):
            mapped += self.t.chunk_in_slab[k] == CHUNK_MAPPED
        return {
            "producers": table_live(&self.t),
            "holes": self.t.holes,
            "entry_capacity": entry_capacity(&self.t),
            "index_capacity": self.t.index_capacity,
            "load_factor": <double>table_live(&self.t) / self.t.index_capacity if self.t.index_capacity else 0.0,
            "index_deleted": self.t.index_deleted,
            "chunks": self.t.n_chunks,
            "entry_bytes": self.t.stride,
            "wide_entries": self.t.wide_used,
            "open_transactions": self.t.open_txns,
            "max_producers": self.max_producers,
            "evictions": self.t.evictions,
            "eviction_heap": self.t.lru_size,
            "slabs": self.t.n_slabs,
            "mapped_chunks": mapped,
            "bytes": self.t.bytes,
        }

    def __repr__(self):
        return f"<dedup.ProducerStateTable window={self.t.window} producers={table_live(&self.t)}>"

    # -- data batches -----------------------------------------------------------------------

    def check(self, producer_id, producer_epoch, base_sequence, record_count, base_offset, *,
              max_timestamp=-1, origin=_CLIENT, transactional=False):
        """Validate one batch without changing the table (spec §3.1 staging).

        Returns the verdict: a duplicate (answered with the original batch's offsets and
        timestamp) or a batch to write at ``base_offset``; raises the Kafka error otherwise.
        """
        cdef Batch b
        cdef Verdict v
        if load_batch(&self.t, &b, producer_id, producer_epoch, base_sequence, record_count, base_offset,
                      max_timestamp, origin, transactional) or self._busy:
            loaded_slowly(self, &b)  # after the conversions, which may let another thread's call in
        cdef int error = validate_batch(&self.t, table_find(&self.t, b.producer_id), &b, &v)
        if error:
            raise_batch_error(error, &b, &v)
        if v.epoch_regression:
            warn_epoch_regression(&b, &v)
        return make_result(self, &b, &v, self.t.generation)

    def update(self, result):
        """Record a batch that :meth:`check` accepted and the log has written (spec §3.2 step 4).

        ``ValueError`` for a duplicate (nothing to record) or a stale result (the table
        changed since the check); ``TypeError`` for anything but this table's own result.
        """
        cdef Batch b
        self._check_idle()
        if type(result) is not AppendResult:
            raise TypeError(f"result must be an AppendResult from check(), got {type(result).__name__}")
        cdef AppendResult r = <AppendResult>result
        if r._table is not self:
            raise ValueError("result comes from another table's check()")
        if r.duplicate:
            raise ValueError("result is a duplicate: there is nothing to record")
        if r._generation != self.t.generation:
            raise ValueError("result is stale: the table changed since check(); check the batch again")
        b.producer_id = r.producer_id
        b.producer_epoch = r.producer_epoch
        b.base_sequence = r.base_sequence
        b.last_sequence = r.last_sequence
        b.base_offset = r.base_offset
        b.offset_delta = <int32_t>(r.last_offset - r.base_offset)
        b.max_timestamp = r.timestamp
        b.transactional = r.transactional
        b.origin = <uint8_t>r._origin
        record_batch(&self.t, table_find_or_insert(&self.t, b.producer_id), &b)

    def append(self, producer_id, producer_epoch, base_sequence, record_count, base_offset, *,
               max_timestamp=-1, origin=_CLIENT, transactional=False):
        """:meth:`check`, then :meth:`update` unless the batch is a duplicate; one lookup."""
        cdef Batch b
        cdef Verdict v
        if load_batch(&self.t, &b, producer_id, producer_epoch, base_sequence, record_count, base_offset,
                      max_timestamp, origin, transactional) or self._busy:
            loaded_slowly(self, &b)  # after the conversions, which may let another thread's call in
        cdef uint64_t generation = self.t.generation
        cdef int error = append_batch(&self.t, &b, &v)
        if error:
            raise_batch_error(error, &b, &v)
        if v.epoch_regression:
            warn_epoch_regression(&b, &v)
        return make_result(self, &b, &v, generation)

    def append_many(self, producer_ids, producer_epochs, base_sequences, record_counts,
                    max_timestamps=None, *, log_end_offset, origin=_CLIENT, transactional=None):
        """:meth:`append` for each row, accepted batches taking consecutive offsets from
        ``log_end_offset``; a Kafka error becomes that row's code instead of an exception.

        Columns: ``producer_ids`` int64, ``producer_epochs`` int16, ``base_sequences`` int32,
        ``record_counts`` int32, ``max_timestamps`` int64 (None: -1), ``transactional`` bool
        (None: all False). Other integer dtypes are converted when every value fits. The loop
        runs without the GIL. Returns an :class:`AppendManyResult`.
        """
        self._check_idle()
        pids, epochs, seqs, counts, stamps, txn = _args.batch_arrays(
            producer_ids, producer_epochs, base_sequences, record_counts, max_timestamps, transactional)
        cdef int64_t end = _args.offset("log_end_offset", log_end_offset)
        self._check_idle()  # again: the conversions ran Python code, where another thread may have started a call
        _args.not_backwards("log_end_offset", end, self.t.map_end_offset)
        _args.total_records_fit(end, counts)
        cdef uint8_t append_origin = as_origin(origin)
        cdef Py_ssize_t rows = len(pids)
        codes = np.zeros(rows, dtype=np.int16)
        duplicate = np.zeros(rows, dtype=np.bool_)
        firsts = np.empty(rows, dtype=np.int64)
        lasts = np.empty(rows, dtype=np.int64)
        times = np.empty(rows, dtype=np.int64)
        if rows == 0:
            return AppendManyResult(codes, duplicate, firsts, lasts, times, end)

        cdef const int64_t[::1] pid_view = pids
        cdef const int16_t[::1] epoch_view = epochs
        cdef const int32_t[::1] seq_view = seqs
        cdef const int32_t[::1] count_view = counts
        cdef const int64_t[::1] stamp_view = stamps
        cdef const uint8_t[::1] txn_view
        cdef int16_t[::1] code_view = codes
        cdef uint8_t[::1] dup_view = duplicate.view(np.uint8)
        cdef int64_t[::1] first_view = firsts
        cdef int64_t[::1] last_view = lasts
        cdef int64_t[::1] time_view = times
        cdef BatchColumns columns
        cdef VerdictColumns out
        cdef Py_ssize_t done = 0, regressions = 0
        columns.producer_ids = &pid_view[0]
        columns.producer_epochs = &epoch_view[0]
        columns.base_sequences = &seq_view[0]
        columns.record_counts = &count_view[0]
        columns.max_timestamps = &stamp_view[0]
        columns.transactional = NULL
        if txn is not None:
            txn_view = txn.view(np.uint8)
            columns.transactional = &txn_view[0]
        out.error_codes = &code_view[0]
        out.duplicate = &dup_view[0]
        out.base_offsets = &first_view[0]
        out.last_offsets = &last_view[0]
        out.timestamps = &time_view[0]

        self._claim()  # here, not at the top: the conversions above may let another thread in
        try:
            if end < self.t.map_end_offset:  # a call of another thread ran since the check above
                _args.not_backwards("log_end_offset", end, self.t.map_end_offset)
            with nogil:
                append_columns(&self.t, &columns, &out, rows, append_origin, &end, &done, &regressions)
        except MemoryError as error:
            error.args = (f"{error.args[0] if error.args else 'out of memory'}; rows [0, {done}) were "
                          f"applied: their verdicts are in .partial_result",)
            error.partial_result = AppendManyResult(
                codes[:done], duplicate[:done], firsts[:done], lasts[:done], times[:done], end)
            raise
        finally:
            self._busy = 0
        if regressions:
            _log.warning("%d batches from replication carried an epoch older than their producer's; "
                         "accepted (spec §2.4)", regressions)
        return AppendManyResult(codes, duplicate, firsts, lasts, times, end)

    def update_map_end_offset(self, offset):
        """The log wrote batches without producer state (no producer id) up to ``offset``,
        exclusive: Kafka's updateMapEndOffset (spec §3.2 step 6). ``ValueError`` if it
        would go backwards."""
        cdef int64_t end = _args.offset("offset", offset)
        self._check_idle()
        _args.not_backwards("offset", end, self.t.map_end_offset)
        if end != self.t.map_end_offset:
            self.t.map_end_offset = end
            self.t.generation += 1

    # -- transaction markers ----------------------------------------------------------------

    def append_marker(self, producer_id, producer_epoch, coordinator_epoch, offset, *, commit,
                      timestamp=-1, origin=Origin.COORDINATOR):
        """Apply a COMMIT or ABORT marker written at ``offset`` (spec §2.2).

        Returns the completed transaction, or ``None`` when none was ongoing (an empty
        transaction completes nothing, KAFKA-10702). Raises ``InvalidProducerEpochError``
        (M2) or ``TransactionCoordinatorFencedError`` (M3) for the coordinator; a follower
        (``REPLICATION``) logs and applies instead. A client cannot send a marker (rule 7).
        """
        cdef Verdict v
        cdef int64_t pid = _args.producer_id(producer_id)
        cdef int16_t epoch = _args.producer_epoch(producer_epoch)
        cdef int32_t coordinator = _args.coordinator_epoch(coordinator_epoch)
        cdef int64_t marker_offset = _args.marker_offset(offset)
        cdef bint is_commit = _args.flag("commit", commit)
        cdef int64_t stamp = _args.timestamp("timestamp", timestamp)
        cdef uint8_t marker_origin = as_origin(origin)
        _args.not_backwards("offset", marker_offset, self.t.map_end_offset)
        self._check_idle()  # after the conversions (Python code, where another thread may start a call)
        cdef int error = append_marker(&self.t, pid, epoch, coordinator, marker_offset, stamp,
                                       marker_origin, &v)
        if error:
            raise marker_error(error, pid, marker_offset, epoch, coordinator, v.current_epoch,
                               v.current_coordinator_epoch)
        if v.epoch_regression:
            _log.warning("producer %d: marker epoch %d is older than the current epoch %d; "
                         "accepted from replication", pid, epoch, v.current_epoch)
        if v.coordinator_epoch_regression:
            _log.info("producer %d: marker coordinator epoch %d is older than %d; accepted from "
                      "replication", pid, coordinator, v.current_coordinator_epoch)
        if v.current_txn_first_offset == NO_TXN:
            return None
        return CompletedTxn(pid, v.current_txn_first_offset, marker_offset, not is_commit)

    # -- copies -----------------------------------------------------------------------------

    def copy(self, producer_ids=None):
        """A new table with the same window and map end offset holding copies of the entries
        of ``producer_ids`` (any iterable of ints or an int64 numpy array; ids the table does
        not hold are skipped), or of every producer when None. Changing the copy never
        changes this table, nor the reverse. The record log uses it to stage an append of
        several batches (spec §3.1: validate against a copy, write, then apply to the live
        table).

        The copy is presized for the producers it holds and keeps their order (the order of
        ``producer_ids``, first occurrence, for a subset). It has no holes (the numbers removed
        producers left, spec §6), so a producer added later may take another place in its
        order than in this table. ``TypeError`` or ``ValueError``
        naming ``producer_ids`` for anything but producer ids (a negative id is a
        ``ValueError``, as in :meth:`entry`).
        """
        self._check_idle()
        ids = None if producer_ids is None else copy_ids(producer_ids)
        cdef const int64_t[::1] id_view
        cdef int64_t[::1] entry_view
        cdef Py_ssize_t rows, found = 0
        cdef ProducerStateTable fresh
        self._claim()  # the loops below read this table without the GIL
        try:
            if ids is None:
                fresh = ProducerStateTable.__new__(ProducerStateTable, self.t.window, capacity=table_live(&self.t))
                with nogil:
                    table_copy_all(&fresh.t, &self.t)
            else:
                rows = len(ids)
                entries = np.empty(rows, dtype=np.int64)
                if rows:
                    id_view = ids
                    entry_view = entries
                    with nogil:
                        found = find_entries(&self.t, &id_view[0], rows, &entry_view[0])
                fresh = ProducerStateTable.__new__(ProducerStateTable, self.t.window, capacity=found)
                if found:
                    with nogil:
                        table_copy_entries(&fresh.t, &self.t, &entry_view[0], found)
        finally:
            self._busy = 0
        fresh.t.map_end_offset = self.t.map_end_offset
        # A staging table: it refuses a new producer as this one would, and never evicts.
        fresh.t.max_producers = self.t.max_producers
        fresh.t.staging = 1
        fresh.t.outside_open_txns = self.t.open_txns + self.t.outside_open_txns - fresh.t.open_txns
        return fresh

    def update_from(self, staged):
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
        (unless nothing changed: ``staged`` empty and its map end offset not ahead). All or
        nothing: a ``MemoryError`` (growing this table) leaves every entry as it was.

        ``TypeError`` unless ``staged`` is a table of this same implementation;
        ``ValueError`` if it has another window or is this table itself.
        """
        self._check_idle()
        if not isinstance(staged, ProducerStateTable):
            raise TypeError(f"staged must be a {_qualified(self)} made by this table's copy(), "
                            f"got {_qualified(staged)}")
        cdef ProducerStateTable source = <ProducerStateTable>staged
        if source is self:
            raise ValueError("staged is this table itself: update_from takes a copy made by copy()")
        if source.t.window != self.t.window:
            raise ValueError(f"staged has window {source.t.window}, this table has window {self.t.window}: "
                             f"staged must be made by this table's copy()")
        source._check_idle()
        self._claim()  # the loop below changes this table and reads staged without the GIL
        source._busy = 1
        try:
            with nogil:
                table_update_from(&self.t, &source.t)
        finally:
            self._busy = 0
            source._busy = 0

    # -- expiration -------------------------------------------------------------------------

    def remove_expired(self, now_ms, expiration_ms):
        """Remove producers idle for at least ``expiration_ms`` (spec §6); returns how many.

        A producer is expired when it has no ongoing transaction and
        ``now_ms - last_timestamp >= expiration_ms`` (exact integer arithmetic). One pass
        over an 8-byte timestamp column, then work for the removed producers only: each
        leaves a hole in the table's order that the next new producer takes (the hole freed
        last first); nothing else moves. When at most half the table would stay, it is
        compacted instead (the last producers fill the holes) and its memory given back. The
        same in dedup.reference.
        """
        self._check_idle()
        cdef int64_t now = _args.timestamp("now_ms", now_ms)
        cdef int64_t expiration = _args.integer("expiration_ms", expiration_ms, 1, INT64_MAX, "in [1, 2^63-1]")
        cdef Py_ssize_t removed
        self._claim()
        try:
            with nogil:
                removed = table_remove_expired(&self.t, now, expiration)
        finally:
            self._busy = 0
        return removed


# --- for dedup._testing (cdef: no Python name here) ---------------------------------------

cdef int expiry_vectors_in_use() noexcept nogil:
    """Whether remove_expired's kernels (kernels/expiry.h) run their AVX2 forms: where the CPU
    has AVX2 and POPCNT and DEDUP_DISABLE_CPU_FEATURES names neither."""
    return dedup_expiry_use_avx2()


cdef void wide_growth_failure_after(Py_ssize_t after) noexcept nogil:
    """The wide-entry pool's growth after `after` more (0: the next one) fails as if its
    allocation had (MemoryError); a negative `after`: none does."""
    global wide_growths_before_failure
    wide_growths_before_failure = after if after >= 0 else -1


def _c_constants():
    """The enums of _state.pxd that Python shares, by name, for dedup._layout to check against
    its definitions: the Kafka error codes the table reports and the append origins."""
    return {
        "ERR_NONE": ERR_NONE, "ERR_CORRUPT_MESSAGE": ERR_CORRUPT_MESSAGE,
        "ERR_OUT_OF_ORDER_SEQUENCE_NUMBER": ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
        "ERR_INVALID_PRODUCER_EPOCH": ERR_INVALID_PRODUCER_EPOCH, "ERR_INVALID_TXN_STATE": ERR_INVALID_TXN_STATE,
        "ERR_TRANSACTION_COORDINATOR_FENCED": ERR_TRANSACTION_COORDINATOR_FENCED,
        "ERR_INVALID_RECORD": ERR_INVALID_RECORD,
        "ERR_THROTTLING_QUOTA_EXCEEDED": ERR_THROTTLING_QUOTA_EXCEEDED,
        "ORIGIN_CLIENT": ORIGIN_CLIENT, "ORIGIN_REPLICATION": ORIGIN_REPLICATION,
        "ORIGIN_COORDINATOR": ORIGIN_COORDINATOR,
    }


from dedup._layout import check_compiled

check_compiled(__name__, _c_constants())
