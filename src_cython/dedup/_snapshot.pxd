# Producer-state snapshot files, as a C header: both byte layouts, field by field, and the
# C-level codec of _snapshot.pyx. The pure-Python twin (dedup/reference/snapshot.py) writes
# the same bytes and raises the same errors; the public API is dedup/snapshot.py.
#
# Both formats are big-endian with fixed widths. Offsets are in bytes from the start of the
# file, of an entry or of a batch.

from dedup._cheaders cimport *
from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t

from dedup._state cimport Table


cdef enum:
    SNAPSHOT_VERSION = 1
    # The encoder checksums its output in blocks of this many bytes, while they are still in
    # the L1 cache; the layout walk of the full format does the same with its input.
    CRC_BLOCK = 16384


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


# --- dedup's full-window format, version 1 ------------------------------------------------
# Kafka's keeps one batch per producer, so a reload shrinks the duplicate window to one
# batch; this one keeps every retained batch, oldest first.

cdef enum FullHeader:
    FULL_MAGIC = 0                     # 4 bytes, b"DDPS"
    FULL_VERSION = 4                   # int16, 1
    FULL_WINDOW = 6                    # int16, 1..255
    FULL_MAP_END_OFFSET = 8            # int64, >= 0
    FULL_COUNT = 16                    # int32, >= 0
    FULL_HEADER_SIZE = 20              # the first entry
    FULL_CRC_SIZE = 4                  # trailer: uint32 CRC-32C of bytes [0, end - 4)
    FULL_MIN_SIZE = 24                 # header and crc, no entries


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

# One kind per message; the wording lives in _snapshot.pyx (problem_message) and, written
# independently, in the twin. The writer of the full format reuses the last kinds for a table
# it cannot write (one loaded from a Kafka snapshot whose offsets pass its map end offset).
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
    FULL_TOO_SHORT                     # under 24 bytes
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
    int window                         # full format only
    int64_t map_end_offset             # full format only


# --- the C-level codec (implemented in _snapshot.pyx) ------------------------------------

cdef Py_ssize_t kafka_size(const Table* t) noexcept nogil
cdef Py_ssize_t full_size(const Table* t) noexcept nogil
# Whole files, into out[0, *_size(t)).
cdef void kafka_encode(const Table* t, unsigned char* out) noexcept nogil
# 0, or a problem kind: the table holds a state the full format's reader would reject.
cdef int full_encode(const Table* t, unsigned char* out, Problem* p) noexcept nogil
# Pieces, for a writer that reuses a small buffer: headers, then entries range by range with
# the CRC carried along (Kafka's crc field is patched at the end, as Kafka's writer does).
cdef void kafka_header(const Table* t, unsigned char* out) noexcept nogil
cdef Py_ssize_t kafka_entries(const Table* t, Py_ssize_t first, Py_ssize_t stop, unsigned char* out,
                              uint32_t* crc) noexcept nogil
cdef void full_header(const Table* t, unsigned char* out) noexcept nogil
cdef int full_entries(const Table* t, Py_ssize_t* next, Py_ssize_t capacity, unsigned char* out,
                      Py_ssize_t* written, uint32_t* crc, Problem* p) noexcept nogil
# Header, size and CRC; 0 or a problem kind. Reads only inside data[0, size).
cdef int kafka_check(const unsigned char* data, Py_ssize_t size, Layout* layout, Problem* p) noexcept nogil
cdef int full_check(const unsigned char* data, Py_ssize_t size, Layout* layout, Problem* p) noexcept nogil
# Fill an empty table from a file the matching *_check accepted; 0 or a problem kind (a value
# the table cannot hold), -1 with MemoryError set. On a problem the table is half filled.
cdef int kafka_load(Table* t, const unsigned char* data, Py_ssize_t size, const Layout* layout,
                    Problem* p) except -1 nogil
cdef int full_load(Table* t, const unsigned char* data, Py_ssize_t size, const Layout* layout,
                   Problem* p) except -1 nogil
