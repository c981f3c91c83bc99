# Kafka v2 record batches, as a C header: the byte layout (spec §8.1), CRC-32C and
# big-endian access (C headers beside this file), and the C-level API of _records.pyx.

from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "crc32c.h":
    uint32_t dedup_crc32c(uint32_t crc, const void* data, size_t length) noexcept nogil
    int dedup_crc32c_setup() noexcept nogil
    int dedup_crc32c_use_hardware(int wanted) noexcept nogil
    const char* DEDUP_CRC32C_HARDWARE


cdef extern from "bigendian.h":
    uint16_t dedup_load_be16(const unsigned char* p) noexcept nogil
    uint32_t dedup_load_be32(const unsigned char* p) noexcept nogil
    uint64_t dedup_load_be64(const unsigned char* p) noexcept nogil
    void dedup_store_be16(unsigned char* p, uint16_t v) noexcept nogil
    void dedup_store_be32(unsigned char* p, uint32_t v) noexcept nogil
    void dedup_store_be64(unsigned char* p, uint64_t v) noexcept nogil
