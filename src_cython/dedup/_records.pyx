# Kafka v2 record batches: CRC-32C now; header scanning, validation and appends from bytes
# follow in this module. Layout and the C-level API: _records.pxd.

from libc.stdint cimport uint32_t

dedup_crc32c_setup()  # decided once, with the GIL, before any nogil caller

#: Which CPU instruction computes CRC-32C here ("sse4.2", "armv8-crc"), or "" for the table.
CRC32C_HARDWARE = DEDUP_CRC32C_HARDWARE.decode() if dedup_crc32c_setup() else ""


def crc32c(data, uint32_t crc=0):
    """CRC-32C (Castagnoli) of ``data`` (any buffer), continuing from ``crc``, the CRC of the
    bytes before it (0 to start). The same as Kafka's Crc32C and the JDK's CRC32C."""
    cdef const unsigned char[::1] view = _bytes_view(data)
    with nogil:
        crc = dedup_crc32c(crc, &view[0] if view.shape[0] else NULL, view.shape[0])
    return crc


def crc32c_software(data, uint32_t crc=0):
    """crc32c() with the table-driven fallback forced (to check it against the CPU's)."""
    cdef const unsigned char[::1] view = _bytes_view(data)
    cdef int mode = dedup_crc32c_setup()
    dedup_crc32c_use_hardware(0)
    try:
        crc = dedup_crc32c(crc, &view[0] if view.shape[0] else NULL, view.shape[0])
    finally:
        dedup_crc32c_use_hardware(mode)
    return crc


cdef const unsigned char[::1] _bytes_view(object data):
    """Any C-contiguous buffer (bytes, bytearray, memoryview, mmap, numpy), as bytes."""
    cdef const unsigned char[::1] view
    try:
        view = memoryview(data).cast("B")
    except TypeError as error:
        raise TypeError(f"data must be a C-contiguous buffer, got {type(data).__name__}: {error}") from None
    return view
