# Kafka v2 record batches, as a C header: the byte layout (docs/spec.md §8.1, attributes
# §8.2), CRC-32C (§8.5) and big-endian access (kernels/crc32c.h, platform/bigendian.h through
# _cheaders.pxd), and the C-level API of dedup._records (_records.pyx). The reasons a batch is
# refused name the rules of §2.1 (1, 3, 5-8) they enforce.

from dedup._cheaders cimport *
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t


# --- the v2 batch header (spec §8.1): big-endian, offsets from the batch's first byte -----

cdef enum:
    BASE_OFFSET_OFFSET = 0
    BATCH_LENGTH_OFFSET = 8                 # bytes after this field: batch size = length + 12
    PARTITION_LEADER_EPOCH_OFFSET = 12      # not covered by the CRC
    MAGIC_OFFSET = 16
    CRC_OFFSET = 17                         # CRC-32C of [ATTRIBUTES_OFFSET, end of batch)
    ATTRIBUTES_OFFSET = 21
    LAST_OFFSET_DELTA_OFFSET = 23
    BASE_TIMESTAMP_OFFSET = 27
    MAX_TIMESTAMP_OFFSET = 35
    PRODUCER_ID_OFFSET = 43
    PRODUCER_EPOCH_OFFSET = 51
    BASE_SEQUENCE_OFFSET = 53
    RECORDS_COUNT_OFFSET = 57
    RECORDS_OFFSET = 61                     # RECORD_BATCH_OVERHEAD: the records start here
    LOG_OVERHEAD = 12                       # base offset + batch length
    MIN_BATCH_LENGTH = 49                   # RECORD_BATCH_OVERHEAD - LOG_OVERHEAD
    MAGIC_V2 = 2


# Attributes (spec §8.2): only the low byte is used.
cdef enum:
    ATTR_COMPRESSION_MASK = 0x07
    ATTR_TIMESTAMP_TYPE = 0x08              # 1 = LogAppendTime
    ATTR_TRANSACTIONAL = 0x10
    ATTR_CONTROL = 0x20
    ATTR_DELETE_HORIZON = 0x40


# One row of dedup.records.BATCH_HEADER_DTYPE (the same layout, checked at import).
ctypedef struct BatchHeader:
    int64_t position                        # of the batch's first byte in the buffer
    int64_t base_offset
    int64_t base_timestamp
    int64_t max_timestamp
    int64_t producer_id
    int32_t batch_length
    int32_t partition_leader_epoch
    uint32_t crc
    int32_t last_offset_delta
    int32_t base_sequence
    int32_t record_count
    int16_t attributes
    int16_t producer_epoch
    int8_t magic
    uint8_t compression
    uint8_t timestamp_type
    uint8_t is_transactional
    uint8_t is_control
    uint8_t _pad[3]


# How a scan ended.
cdef enum ScanEnd:
    SCAN_COMPLETE = 0                       # every byte belongs to a complete batch
    SCAN_TRUNCATED = 1                      # a torn batch (or < 12 bytes) at the end
    SCAN_BAD_LENGTH = 2                     # a batch length below the minimum: corrupt
    SCAN_BAD_MAGIC = 3                      # not a v2 batch


ctypedef struct ScanStatus:
    Py_ssize_t batches                      # complete batches before the end
    Py_ssize_t valid_bytes                  # where the last complete batch ends
    int end                                 # ScanEnd
    int64_t found                           # the bad length or magic


# Why a batch was refused: the field at fault, for the error message.
cdef enum Reason:
    REASON_NONE = 0
    REASON_BASE_OFFSET = 1                  # rule 3: a client batch must have base offset 0
    REASON_CRC = 2                          # rule 5
    REASON_RECORD_COUNT = 3                 # rule 6
    REASON_CONTROL_FROM_CLIENT = 4          # rule 7
    REASON_NO_SEQUENCE = 5                  # rule 8
    REASON_OFFSET_DELTA = 6                 # a negative last offset delta
    REASON_OFFSETS_BACKWARDS = 7            # a follower batch below the log end offset
    REASON_MARKER = 8                       # a control batch whose first record is no marker
    REASON_TABLE = 9                        # the producer-state table refused it (45, 47, 48, 52)
    REASON_OFFSET_OVERFLOW = 10             # the log end offset after it would pass 2^63-1


ctypedef struct Problem:
    uint8_t reason                          # Reason
    int64_t expected
    int64_t found


cdef const unsigned char[::1] readable_bytes(object data, str name)
cdef int read_header(const unsigned char* batch, int64_t position, BatchHeader* h) noexcept nogil
cdef int scan_buffer(const unsigned char* data, Py_ssize_t length, BatchHeader* out,
                     Py_ssize_t capacity, ScanStatus* status) noexcept nogil
cdef int check_batch(const unsigned char* batch, const BatchHeader* h, uint8_t origin,
                     Problem* problem) noexcept nogil


# --- for dedup._testing only (in _records.pyx) --------------------------------------------
# kernels/crc32c.h's mode is a static variable in each module that includes it: this runs this
# module's copy in a mode a test chooses.

cdef uint32_t crc32c_forced(int mode, uint32_t crc, const unsigned char* data, size_t length,
                            int* used) noexcept nogil
