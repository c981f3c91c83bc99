# The C headers that every module of the batch and snapshot codecs uses (kernels/crc32c.h,
# platform/bigendian.h), declared once: a .pxd of extern declarations only,
# with no module of its own. Each module that cimports it compiles its own copy of the headers.
#
# Spec: docs/spec.md §8.5 (CRC-32C), §4.2 and §8.1 (big-endian fields).

from libc.stdint cimport uint16_t, uint32_t, uint64_t


cdef extern from "kernels/crc32c.h":
    uint32_t dedup_crc32c(uint32_t crc, const void* data, size_t length) noexcept nogil
    int dedup_crc32c_setup() noexcept nogil
    int dedup_crc32c_use_hardware(int wanted) noexcept nogil
    const char* DEDUP_CRC32C_HARDWARE


cdef extern from "platform/bigendian.h":
    uint16_t dedup_load_be16(const unsigned char* p) noexcept nogil
    uint32_t dedup_load_be32(const unsigned char* p) noexcept nogil
    uint64_t dedup_load_be64(const unsigned char* p) noexcept nogil
    void dedup_store_be16(unsigned char* p, uint16_t v) noexcept nogil
    void dedup_store_be32(unsigned char* p, uint32_t v) noexcept nogil
    void dedup_store_be64(unsigned char* p, uint64_t v) noexcept nogil
