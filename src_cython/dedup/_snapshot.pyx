# Module dedup._snapshot: the compiled snapshot codec. Kafka's producer-state snapshot
# (version 1, docs/spec.md §4.2-4.4) and dedup's full-window format (writes version 2, reads 1
# and 2), straight between bytes and the table's C struct. Layouts and the C-level API:
# _snapshot.pxd. The public API (format detection, files): dedup/snapshot.py. This file holds
# the module's imports and its Python boundary (encode_*, decode_*, SnapshotWriter); the codec
# is in snapshot/, included below:
#   snapshot/kafka.pxi        Kafka's format: size, writer, check, loader (§4.2-4.4)
#   snapshot/full_writer.pxi  the full format's writer (version 2)
#   snapshot/full_reader.pxi  the full format's checks and loaders (versions 1 and 2)
#   snapshot/problems.pxi     what a reader found wrong, in words
#
# No Python object per producer: the encoders fill a bytes object sized from the table (the
# full format's fixed-width records need no sizing pass; the rare escaped values are collected
# on the side and appended); the decoders check the header and the length, presize the table
# (table_reserve) and write each entry's header, ring and last_timestamp in place, with the CRC
# (kernels/crc32c.h) computed a block behind. Both loops run without the GIL, on the caller's
# thread.
#
# Readers report problems in a fixed order, the same as the twin's: header, layout (lengths,
# counts), CRC, then each entry's values in file order (a CRC computed along the load still
# wins over a value problem found before it). Every read is bounds-checked against the
# buffer's length first, so no input can make them read outside it or loop past its end.

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from cpython.mem cimport PyMem_RawFree, PyMem_RawRealloc
from libc.string cimport memcmp, memcpy, memset

from dedup._state cimport (
    ENTRY_HEADER_SIZE,
    NO_SEQUENCE,
    NO_TXN,
    BulkLoad,
    EntryHeader,
    ProducerStateTable,
    Table,
    MAX_WINDOW,
    bulk_append,
    bulk_begin,
    bulk_finish,
    bulk_free,
    entry_at,
    entry_drop_batches,
    is_hole,
    last_timestamp_at,
    ring_decode,
    ring_encode,
    ring_last_sequence,
    ring_offset_delta16,
    ring_offset_gap,
    ring_timestamp_gap,
    slot_last_offset,
    slot_offset_delta,
    table_find_or_insert,
    table_live,
    wide_ring,
    table_reserve,
)
from dedup._records cimport readable_bytes

from dedup import _args
from dedup.errors import CorruptSnapshotError

cdef extern from "kernels/snapshot_w5.h":
    int dedup_w5_mode
    int DEDUP_W5_RING
    int DEDUP_W5_OFFSET_GAP
    int DEDUP_W5_TIMESTAMP_GAP
    int DEDUP_W5_OFFSET_DELTA
    int DEDUP_W5_ENTRY_SIZE
    int dedup_w5_use(int wanted) noexcept nogil
    int dedup_w5_in_use() noexcept nogil
    int dedup_w5_encode_slots(const char* e, unsigned char* out, int head, int count, int64_t limit) noexcept nogil
    int dedup_w5_decode_slots(const unsigned char* slots, char* e, int count, uint32_t newest_sequence,
                              uint32_t newest_delta, uint32_t limit) noexcept nogil

dedup_crc32c_setup()  # decided once, with the GIL, before any nogil caller
dedup_w5_use(1)  # likewise: window 5's slots in vector registers where the CPU has them

cdef const char* DDPS = b"DDPS"

#: The full format's magic.
MAGIC = DDPS[:4]
#: The version of Kafka's format (the only one).
VERSION = SNAPSHOT_VERSION
#: The full format's version that encode_full writes; decode_full also reads version 1.
FULL_FORMAT_VERSION = FULL_VERSION_2


include "snapshot/kafka.pxi"
include "snapshot/full_writer.pxi"
include "snapshot/full_reader.pxi"
include "snapshot/problems.pxi"


# --- Python boundary ------------------------------------------------------------------------

cdef ProducerStateTable new_table(object table_class, int window):
    if not (isinstance(table_class, type) and issubclass(table_class, ProducerStateTable)):
        raise TypeError(f"table_class must be dedup._state.ProducerStateTable or a subclass, got {table_class!r}")
    table = table_class(window)
    cdef ProducerStateTable fresh = <ProducerStateTable?>table
    if fresh.t.count or fresh.t.window != window:
        raise TypeError(f"table_class({window}) must make an empty table of window {window}")
    return fresh


def encode_kafka(ProducerStateTable table not None):
    """Kafka's snapshot (version 1, spec §4.2-4.3) of the table, as bytes.

    Entries in the table's order, each with only its last retained batch; the loop runs
    without the GIL.
    """
    table._check_idle()
    cdef Table* t = &table.t
    cdef bytes out = PyBytes_FromStringAndSize(NULL, kafka_size(t))
    cdef unsigned char* buffer = <unsigned char*>PyBytes_AS_STRING(out)
    table._busy = 1  # other threads get a RuntimeError instead of changing the table under us
    try:
        with nogil:
            kafka_encode(t, buffer)
    finally:
        table._busy = 0
    return out


def encode_full(ProducerStateTable table not None):
    """dedup's full-window snapshot (version 2) of the table, as bytes: every retained batch.

    ``ValueError`` if the table holds offsets at or past its map end offset, or a negative
    first offset (only a table loaded from a Kafka snapshot can): the reader would reject them.
    """
    table._check_idle()
    cdef Table* t = &table.t
    cdef Problem p
    cdef int kind = PROBLEM_NONE
    cdef Escapes escapes
    cdef Py_ssize_t next = 0, j
    cdef Py_ssize_t records_end = FULL_HEADER_SIZE + full_record_size(t.window) * table_live(t)
    cdef uint32_t crc = 0
    problem_clear(&p)
    escapes.values = NULL
    escapes.count = 0
    escapes.capacity = 0
    # Sized for no escaped values (the common case); grown below if the records escaped any.
    cdef bytes out = PyBytes_FromStringAndSize(NULL, records_end + FULL2_TRAILER_SIZE)
    cdef bytes whole
    cdef unsigned char* buffer = <unsigned char*>PyBytes_AS_STRING(out)
    cdef unsigned char* trailer
    try:
        table._busy = 1
        try:
            with nogil:
                full_header(t, buffer)
                crc = dedup_crc32c(0, buffer, FULL_HEADER_SIZE)
                kind = full_records(t, &next, t.count, buffer + FULL_HEADER_SIZE, &escapes, &crc, &p)
        finally:
            table._busy = 0
        if kind:
            raise ValueError(unwritable_message(&p))
        if escapes.count:
            whole = PyBytes_FromStringAndSize(NULL, records_end + FULL2_ESCAPE_SIZE * escapes.count
                                              + FULL2_TRAILER_SIZE)
            memcpy(PyBytes_AS_STRING(whole), buffer, records_end)
            out = whole
            buffer = <unsigned char*>PyBytes_AS_STRING(out)
            for j in range(escapes.count):
                dedup_store_be64(buffer + records_end + FULL2_ESCAPE_SIZE * j, <uint64_t>escapes.values[j])
            crc = dedup_crc32c(crc, buffer + records_end, FULL2_ESCAPE_SIZE * escapes.count)
        trailer = buffer + records_end + FULL2_ESCAPE_SIZE * escapes.count
        dedup_store_be32(trailer, <uint32_t>escapes.count)
        crc = dedup_crc32c(crc, trailer, 4)
        dedup_store_be32(trailer + 4, crc)
    finally:
        escapes_free(&escapes)
    return out


cdef enum:
    # The smallest buffer SnapshotWriter.fill takes: the full format's largest record
    # (55 + 12 * 254 = 3103 bytes) after its header, so every fill makes progress.
    MIN_WRITER_BUFFER = 8192


@cython.final
cdef class SnapshotWriter:
    """A table's snapshot, piece by piece into a buffer the caller reuses: the file is written
    without ever holding all of it in memory (write_snapshot's path for the compiled table).

        with SnapshotWriter(table, "kafka") as pieces:
            while n := pieces.fill(buffer):
                write(buffer[:n])
        # then Kafka's crc at byte pieces.crc_offset: pieces.crc

    The pieces concatenated are exactly encode_kafka(table) or encode_full(table), except that
    Kafka's crc field (bytes 2-5) is 0 until the caller patches it, as Kafka's writer does
    (spec §4.3); the full format's escaped values, escape count and crc come last, in the
    pieces. While the block is open the table is busy: another thread gets a RuntimeError
    instead of changing it between pieces.
    """

    cdef ProducerStateTable table
    cdef bint full
    cdef bint entered
    cdef int stage                     # 0: header next, 1: entries, 2: escapes, 3: trailer, 4: done
    cdef Py_ssize_t next               # the next entry to write
    cdef Py_ssize_t count              # entries when the block opened
    cdef Py_ssize_t escapes_written    # escaped values written so far
    cdef Escapes escapes               # the full format's escaped values, held until the records end
    cdef uint64_t generation           # the table's generation when the block opened
    cdef uint32_t running_crc

    def __cinit__(self, ProducerStateTable table not None, format):
        if format not in ("full", "kafka"):
            raise ValueError(f"format must be one of ('full', 'kafka'), got {format!r}")
        self.table = table
        self.full = format == "full"

    def __dealloc__(self):
        escapes_free(&self.escapes)

    def __enter__(self):
        if self.entered:
            raise RuntimeError("SnapshotWriter is already open")
        self.table._check_idle()
        self.table._busy = 1
        self.entered = True
        self.generation = self.table.t.generation
        self.count = self.table.t.count
        self.stage = 0
        self.next = 0
        self.escapes_written = 0
        escapes_free(&self.escapes)
        self.running_crc = 0
        return self

    def __exit__(self, *exc_info):
        if self.entered:
            self.entered = False
            self.table._busy = 0
        escapes_free(&self.escapes)
        return False

    @property
    def size(self):
        """The snapshot's length in bytes."""
        return full_size(&self.table.t) if self.full else kafka_size(&self.table.t)

    @property
    def crc_offset(self):
        """Where Kafka's crc goes once known (2); None for the full format (its crc is a piece)."""
        return None if self.full else KAFKA_CRC

    @property
    def crc(self):
        """The snapshot's CRC-32C, once fill() has returned 0."""
        if self.stage != 4:
            raise RuntimeError("the crc is known once fill() has returned 0")
        return self.running_crc

    def fill(self, buffer):
        """Write the next piece into ``buffer`` (writable, at least 8192 bytes) from its start;
        returns the piece's length, 0 once the snapshot is complete.

        ``ValueError`` (as encode_full) if the table cannot be written in the full format.
        """
        if not self.entered:
            raise RuntimeError("SnapshotWriter.fill() needs an open block: with SnapshotWriter(...) as pieces")
        cdef unsigned char[::1] view
        try:
            view = memoryview(buffer).cast("B")
        except (TypeError, BufferError) as error:
            raise TypeError(f"buffer must be a writable C-contiguous buffer, got {type(buffer).__name__}: "
                            f"{error}") from None
        cdef Py_ssize_t capacity = view.shape[0]
        if capacity < MIN_WRITER_BUFFER:
            raise ValueError(f"buffer must hold at least {MIN_WRITER_BUFFER} bytes, got {capacity}")
        cdef Table* t = &self.table.t
        if t.generation != self.generation or t.count != self.count:
            raise RuntimeError("the table changed while its snapshot was being written")
        cdef unsigned char* out = &view[0]
        cdef Py_ssize_t written = 0, entries, before, j
        cdef Py_ssize_t record_size = full_record_size(t.window)
        cdef Problem p
        cdef int kind = PROBLEM_NONE
        problem_clear(&p)
        with nogil:
            if self.stage == 0:
                if self.full:
                    full_header(t, out)
                    self.running_crc = dedup_crc32c(0, out, FULL_HEADER_SIZE)
                    written = FULL_HEADER_SIZE
                else:
                    kafka_header(t, out)
                    self.running_crc = dedup_crc32c(0, out + KAFKA_CRC_START,
                                                    KAFKA_HEADER_SIZE - KAFKA_CRC_START)
                    written = KAFKA_HEADER_SIZE
                self.stage = 1
            if self.stage == 1:
                if self.full:
                    entries = min((capacity - written) // record_size, t.count - self.next)
                    before = self.next
                    kind = full_records(t, &self.next, self.next + entries, out + written, &self.escapes,
                                        &self.running_crc, &p)
                    for j in range(before, self.next):
                        written += 0 if is_hole(entry_at(t, j)) else record_size
                else:
                    entries = min((capacity - written) // KAFKA_ENTRY_SIZE, t.count - self.next)
                    written += kafka_entries(t, self.next, self.next + entries, out + written, &self.running_crc)
                    self.next += entries
                if kind == PROBLEM_NONE and self.next == t.count:
                    self.stage = 2 if self.full else 4
            if self.stage == 2:
                entries = min((capacity - written) // FULL2_ESCAPE_SIZE, self.escapes.count - self.escapes_written)
                for j in range(entries):
                    dedup_store_be64(out + written + FULL2_ESCAPE_SIZE * j,
                                     <uint64_t>self.escapes.values[self.escapes_written + j])
                self.running_crc = dedup_crc32c(self.running_crc, out + written, FULL2_ESCAPE_SIZE * entries)
                written += FULL2_ESCAPE_SIZE * entries
                self.escapes_written += entries
                if self.escapes_written == self.escapes.count:
                    self.stage = 3
            if self.stage == 3 and capacity - written >= FULL2_TRAILER_SIZE:
                dedup_store_be32(out + written, <uint32_t>self.escapes.count)
                self.running_crc = dedup_crc32c(self.running_crc, out + written, 4)
                dedup_store_be32(out + written + 4, self.running_crc)
                written += FULL2_TRAILER_SIZE
                self.stage = 4
        if kind:
            raise ValueError(unwritable_message(&p))
        return written


ctypedef int (*Loader)(Table* t, const unsigned char* data, Py_ssize_t size, const Layout* layout,
                       BulkLoad* bulk, Problem* p) except -1 nogil


cdef int load_in_bulk(Table* t, Loader load, const unsigned char* data, Py_ssize_t size,
                      const Layout* layout, Problem* p) except -1 nogil:
    """A checked file (layout) into the empty table t by `load` (kafka_load, full_load), the
    entries written first and indexed at the end (table/bulk.pxi): no reallocation and no
    rehash on the way. Returns the load's kind (0, or the problem it found)."""
    cdef BulkLoad bulk
    memset(&bulk, 0, sizeof(BulkLoad))  # bulk_free's precondition, should bulk_begin fail
    try:
        bulk_begin(t, &bulk, layout.count)
        return load(t, data, size, layout, &bulk, p)
    finally:
        bulk_free(&bulk)


def decode_kafka(data, window=5, map_end_offset=0, table_class=ProducerStateTable):
    """A table from Kafka's snapshot (spec §4.4); ``CorruptSnapshotError`` if it is not one.

    ``window`` is the new table's window (the file keeps at most one batch per producer) and
    ``map_end_offset`` its map end offset (Kafka takes it from the file name).
    """
    cdef const unsigned char[::1] view = readable_bytes(data, "data")
    cdef int table_window = _args.window(window)
    cdef int64_t end_offset = _args.offset("map_end_offset", map_end_offset)
    cdef Py_ssize_t size = view.shape[0]
    cdef const unsigned char* octets = &view[0] if size else NULL
    cdef Layout layout
    cdef Problem p
    cdef int kind
    problem_clear(&p)
    with nogil:
        kind = kafka_check(octets, size, &layout, &p)
    if kind:
        raise_corrupt(&p, view)
    cdef ProducerStateTable table = new_table(table_class, table_window)
    with nogil:
        kind = load_in_bulk(&table.t, kafka_load, octets, size, &layout, &p)
    if kind == KAFKA_REPEATED_PRODUCER_ID:
        # Not Kafka's writer's (its snapshot is a map's entries), but valid: load again, entry
        # by entry, so that the later entry of a producer overwrites the earlier (rare).
        problem_clear(&p)
        table = new_table(table_class, table_window)
        with nogil:
            table_reserve(&table.t, layout.count)
            kind = kafka_load(&table.t, octets, size, &layout, NULL, &p)
    if kind:
        raise_corrupt(&p, view)
    table.t.map_end_offset = end_offset
    table.t.generation += 1
    return table


def decode_full(data, table_class=ProducerStateTable):
    """A table from a full-window snapshot (version 1 or 2), with the file's window and map end
    offset; ``CorruptSnapshotError`` if it is not a valid one."""
    cdef const unsigned char[::1] view = readable_bytes(data, "data")
    cdef Py_ssize_t size = view.shape[0]
    cdef const unsigned char* octets = &view[0] if size else NULL
    cdef Layout layout
    cdef Problem p
    cdef int kind
    problem_clear(&p)
    with nogil:
        kind = full_check(octets, size, &layout, &p)
    if kind:
        raise_corrupt(&p, view)
    cdef ProducerStateTable table = new_table(table_class, layout.window)
    with nogil:
        kind = load_in_bulk(&table.t, full_load, octets, size, &layout, &p)
    if kind:
        raise_corrupt(&p, view)
    table.t.map_end_offset = layout.map_end_offset
    table.t.generation += 1
    return table


# --- for dedup._testing (cdef: no Python name here) ---------------------------------------

cdef uint32_t crc32c_forced(int mode, uint32_t crc, const unsigned char* data, size_t length,
                            int* used) noexcept nogil:
    """The CRC-32C of data[0, length) from crc through this module's copy of kernels/crc32c.h
    in `mode` (0 the table, 1 the CRC instruction in three streams) or the best mode below it
    that the CPU has (*used); then back to the mode chosen at import."""
    cdef int chosen = dedup_crc32c_setup()
    used[0] = dedup_crc32c_use_hardware(mode)
    crc = dedup_crc32c(crc, data, length)
    dedup_crc32c_use_hardware(chosen)
    return crc


cdef int window5_vectors_use(int wanted) noexcept nogil:
    """Window 5's slots through kernels/snapshot_w5.h (wanted 1: where the CPU can) or the
    scalar loops only (0); returns the mode now in force (1: the vectors)."""
    return dedup_w5_use(wanted)


cdef int window5_vectors_in_use() noexcept nogil:
    """Whether window 5's slots go through kernels/snapshot_w5.h now (1) or not (0)."""
    return dedup_w5_in_use()


cdef bint window5_applies(const Table* t) noexcept nogil:
    """Whether the table's snapshots go through kernels/snapshot_w5.h (window 5, its ring where
    the header expects it, the vectors in use)."""
    return window5_layout(t)
