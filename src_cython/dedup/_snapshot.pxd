# Producer-state snapshot files, as a C header: both byte layouts, field by field, and the
# C-level codec of dedup._snapshot (_snapshot.pyx and the snapshot/*.pxi it includes). The
# pure-Python twin (dedup/reference/snapshot.py) writes the same bytes and raises the same
# errors; the public API is dedup/snapshot.py.
#
# Spec: docs/spec.md §4.2 (Kafka's layout, version 1), §4.3-4.4 (what is written and read),
# §8.5 (CRC-32C); the full format is dedup's own, documented here.
#
# All formats are big-endian with fixed widths. Offsets are in bytes from the start of the
# file, of an entry, of a record or of a slot.

from dedup._cheaders cimport *
from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t

from dedup._state cimport BulkLoad, Table


cdef enum:
    SNAPSHOT_VERSION = 1               # Kafka's format
    FULL_VERSION_1 = 1                 # dedup's full format, read only
    FULL_VERSION_2 = 2                 # dedup's full format, written
    # The encoders checksum their output in blocks of this many bytes, while they are still in
    # the L1/L2 cache; the loaders do the same with their input. A multiple of three lanes
    # (dedup_crc32c in kernels/crc32c.h runs three CRC streams of 4096 bytes side by side).
    CRC_BLOCK = 24576


# --- Kafka's format, version 1 (spec §4.2; identical from Kafka 0.11 to 4.x) --------------

cdef enum KafkaHeader:
    KAFKA_VERSION = 0                  # int16, 1
    KAFKA_CRC = 2                      # uint32, CRC-32C of bytes [KAFKA_CRC_START, end)
    KAFKA_COUNT = 6                    # int32, number of entries
    KAFKA_HEADER_SIZE = 10             # entry i starts at 10 + 46 * i
    KAFKA_CRC_START = 6


cdef enum KafkaEntry:
    KAFKA_PRODUCER_ID = 0              # int64
    KAFKA_EPOCH = 8                    # int16
    KAFKA_LAST_SEQUENCE = 10           # int32, of the last retained batch (-1: none)
    KAFKA_LAST_OFFSET = 14             # int64, of the last retained batch (-1: none)
    KAFKA_OFFSET_DELTA = 22            # int32, of the last retained batch (0: none)
    KAFKA_TIMESTAMP = 26               # int64, the entry's last_timestamp (not the batch's)
    KAFKA_COORDINATOR_EPOCH = 34       # int32
    KAFKA_CURRENT_TXN_FIRST_OFFSET = 38  # int64, -1: no ongoing transaction
    KAFKA_ENTRY_SIZE = 46


# --- dedup's full-window format -----------------------------------------------------------
# Kafka's keeps one batch per producer, so a reload shrinks the duplicate window to one
# batch; this one keeps every retained batch. Both versions share the header.

cdef enum FullHeader:
    FULL_MAGIC = 0                     # 4 bytes, b"DDPS"
    FULL_VERSION = 4                   # int16, 1 or 2
    FULL_WINDOW = 6                    # int16, 1..255
    FULL_MAP_END_OFFSET = 8            # int64, >= 0
    FULL_COUNT = 16                    # int32, >= 0
    FULL_HEADER_SIZE = 20              # the first entry (version 1) or record (version 2)
    FULL_CRC_SIZE = 4                  # last: uint32 CRC-32C of bytes [0, end - 4)
    FULL_MIN_SIZE = 24                 # version 1: header and crc, no entries


# Version 2 (written): one fixed-width record per producer, R = 55 + 12 * (window - 1) bytes,
# so that a reader finds record n at 20 + R * n without walking the file. A record holds
# the newest batch in full and the older ones relative to it, in narrow fields (12 bytes
# instead of 24: 103 bytes per producer at window 5, against 151 in version 1). A value
# that does not fit its narrow field is written as the field's escape value, and the value
# itself goes to the escape list after the records, as an int64, in file order (record by
# record, slot by slot, field by field in the order below):
#
#   20                   count records
#   20 + R * count       escapes x int64, the escaped values
#   end - 8              int32 escapes (>= 0)
#   end - 4              uint32 CRC-32C of bytes [0, end - 4)
#
# file size = 20 + R * count + 8 * escapes + 8.

cdef enum Full2Trailer:
    FULL2_ESCAPE_SIZE = 8              # one escaped value, int64
    FULL2_TRAILER_SIZE = 8             # int32 escape count, uint32 crc
    FULL2_MIN_SIZE = 28                # header and trailer, no records


# A record opens with version 1's entry header (FullEntry below: producer id, epochs, last
# timestamp, ongoing transaction, batch count: bytes [0, 31)), then:
cdef enum Full2Record:
    # the newest batch (zeros when batch_count is 0):
    REC_LAST_SEQUENCE = 31             # int32
    REC_OFFSET_DELTA = 35              # int32
    REC_LAST_OFFSET = 39               # int64
    REC_TIMESTAMP = 47                 # int64
    REC_SLOTS = 55                     # window - 1 slots: the older batches, oldest first,
    REC_FIXED_SIZE = 55                # batch_count - 1 of them used, the rest zeros


# An older batch B against the newest N; arithmetic wraps (64 bits for offsets and timestamps,
# 32 for sequences), so a narrow field always decodes to exactly the value written.
cdef enum Full2Slot:
    SLOT_OFFSET_GAP = 0                # uint32, N.last_offset - B.last_offset; escape 0xFFFFFFFF
    SLOT_TIMESTAMP_GAP = 4             # int32, N.timestamp - B.timestamp; escape -2^31
    SLOT_SEQUENCE_GAP = 8              # uint16, N.last_sequence - B.last_sequence; escape 0xFFFF
    SLOT_OFFSET_DELTA = 10             # uint16, B.offset_delta; escape 0xFFFF
    SLOT_SIZE = 12


cdef enum FullEntry:
    FULL_PRODUCER_ID = 0               # int64
    FULL_PRODUCER_EPOCH = 8            # int16
    FULL_COORDINATOR_EPOCH = 10        # int32
    FULL_LAST_TIMESTAMP = 14           # int64
    FULL_CURRENT_TXN_FIRST_OFFSET = 22  # int64, -1: no ongoing transaction
    FULL_BATCH_COUNT = 30              # uint8, 0..window
    FULL_ENTRY_SIZE = 31               # then batch_count batches


cdef enum FullBatch:
    FULL_LAST_SEQUENCE = 0             # int32
    FULL_OFFSET_DELTA = 4              # int32
    FULL_LAST_OFFSET = 8               # int64
    FULL_TIMESTAMP = 16                # int64
    FULL_BATCH_SIZE = 24


# --- what a reader found wrong ------------------------------------------------------------

# One kind per message; the wording lives in snapshot/problems.pxi (problem_message) and,
# written independently, in the twin. The writer of the full format reuses the last kinds for a
# table it cannot write (one loaded from a Kafka snapshot whose offsets pass its map end offset).
cdef enum ProblemKind:
    PROBLEM_NONE = 0
    KAFKA_BAD_VERSION
    KAFKA_TOO_SHORT                    # under 10 bytes
    KAFKA_NEGATIVE_COUNT
    KAFKA_SIZE                         # not 10 + 46 * count: short, or trailing bytes
    KAFKA_BAD_CRC
    KAFKA_NEGATIVE_PRODUCER_ID
    KAFKA_NEGATIVE_OFFSET_DELTA
    FULL_BAD_MAGIC
    FULL_TOO_SHORT                     # under 24 bytes (version 1) or 28 (version 2)
    FULL_BAD_VERSION
    FULL_BAD_WINDOW
    FULL_NEGATIVE_MAP_END_OFFSET
    FULL_NEGATIVE_COUNT
    FULL_SHORT_ENTRY                   # an entry's fixed part runs into the crc
    FULL_BATCH_COUNT_OVER_WINDOW
    FULL_SHORT_BATCHES                 # an entry's batches run into the crc
    FULL_TRAILING_BYTES
    FULL_BAD_CRC
    FULL_NEGATIVE_PRODUCER_ID
    FULL_BAD_TXN_FIRST_OFFSET          # not -1 and not in [0, map_end_offset)
    FULL_REPEATED_PRODUCER_ID
    FULL_NEGATIVE_OFFSET_DELTA
    FULL_NEGATIVE_FIRST_OFFSET         # last_offset < offset_delta
    FULL_OFFSET_PAST_MAP_END           # last_offset >= map_end_offset
    FULL2_NEGATIVE_ESCAPE_COUNT
    FULL2_SIZE                         # not 28 + R * count + 8 * escapes: short, or trailing bytes
    FULL2_MISSING_ESCAPE               # a field escapes past the end of the escape list
    FULL2_UNUSED_ESCAPES               # the records use fewer escaped values than the list holds
    KAFKA_REPEATED_PRODUCER_ID         # not a problem: kafka_load's bulk load met an id twice


ctypedef struct Problem:
    int kind                           # a ProblemKind
    Py_ssize_t entry                   # entry number (from 0), -1 if not about one entry
    Py_ssize_t item                    # batch number, or the earlier entry of a repeated id
    int64_t count                      # the header's producer count
    int64_t producer_id
    int64_t found                      # the offending value (or size, or stored crc)
    int64_t other                      # a second value: the computed crc, the offset delta
    int64_t bound                      # the limit broken: window, map end offset, expected size
    int64_t position                   # byte position where a part starts


# What the header of a valid file says (filled by the *_check functions).
ctypedef struct Layout:
    Py_ssize_t count
    int version                        # full format only
    int window                         # full format only
    int64_t map_end_offset             # full format only
    Py_ssize_t escapes                 # full format version 2 only


# The values a version 2 writer escaped, in file order; grown by escapes_push.
ctypedef struct Escapes:
    int64_t* values
    Py_ssize_t count
    Py_ssize_t capacity


# --- the C-level codec (in snapshot/*.pxi, which _snapshot.pyx includes) ------------------

cdef Py_ssize_t kafka_size(const Table* t) noexcept nogil
# Kafka's file, into out[0, kafka_size(t)).
cdef void kafka_encode(const Table* t, unsigned char* out) noexcept nogil
# Pieces, for a writer that reuses a small buffer: the header, then entries range by range with
# the CRC carried along (Kafka's crc field is patched at the end, as Kafka's writer does).
cdef void kafka_header(const Table* t, unsigned char* out) noexcept nogil
cdef Py_ssize_t kafka_entries(const Table* t, Py_ssize_t first, Py_ssize_t stop, unsigned char* out,
                              uint32_t* crc) noexcept nogil
# The full format, version 2: the record size for a window, the escapes a table needs (one
# pass over its batches), the file's size; the header into out[0, 20); records [*next, stop)
# into out (R bytes each), escaped values appended to `escapes`, *crc continued. 0, a problem
# kind (the table holds a state the reader would reject), or -1 with MemoryError set.
cdef Py_ssize_t full_record_size(int window) noexcept nogil
cdef Py_ssize_t full_escape_count(const Table* t) noexcept nogil
cdef Py_ssize_t full_size(const Table* t) noexcept nogil
cdef void full_header(const Table* t, unsigned char* out) noexcept nogil
cdef int full_records(const Table* t, Py_ssize_t* next, Py_ssize_t stop, unsigned char* out,
                      Escapes* escapes, uint32_t* crc, Problem* p) except -1 nogil
# Headers and lengths (the full format's version 1 also its layout walk and CRC); 0 or a
# problem kind. Read only inside data[0, size).
cdef int kafka_check(const unsigned char* data, Py_ssize_t size, Layout* layout, Problem* p) noexcept nogil
cdef int full_check(const unsigned char* data, Py_ssize_t size, Layout* layout, Problem* p) noexcept nogil
# Fill an empty table from a file the matching *_check accepted, appending the entries through
# `bulk` (bulk_begin'd for layout.count; kafka_load also takes NULL: entry by entry into a
# table presized for it); 0 or a problem kind. Kafka's format and version 2 check the CRC as
# they go, block by block: a CRC mismatch is reported before any value problem, as if it had
# been checked first. On a problem the table is half filled.
cdef int kafka_load(Table* t, const unsigned char* data, Py_ssize_t size, const Layout* layout,
                    BulkLoad* bulk, Problem* p) except -1 nogil
cdef int full_load(Table* t, const unsigned char* data, Py_ssize_t size, const Layout* layout,
                   BulkLoad* bulk, Problem* p) except -1 nogil


# --- for dedup._testing only: switches of this module's C state (in _snapshot.pyx) --------
# A header's mode is a static variable in each module that includes the header, so a test flips
# this module's copy through these.

cdef uint32_t crc32c_forced(int mode, uint32_t crc, const unsigned char* data, size_t length,
                            int* used) noexcept nogil
cdef int window5_vectors_use(int wanted) noexcept nogil
cdef int window5_vectors_in_use() noexcept nogil
cdef bint window5_applies(const Table* t) noexcept nogil
