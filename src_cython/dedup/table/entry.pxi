# One producer's entry beyond its fixed fields (part of _state.pyx, which includes it; Kafka's
# ProducerStateEntry): the ring of retained batches stored compactly, as int32 gaps from two
# bases, or in a wide ring when a value does not fit; re-encoding a ring (ring_encode), dropping
# the batches on an epoch change and copying an entry between tables.
#
# Spec: docs/spec.md §1.2 (the entry, its deque of at most `window` batches, and
# maybeUpdateProducerEpoch: an epoch change drops them) and §1.3 (BatchMetadata's four stored
# values, kept exactly whatever their size).

# --- wide entries: exact offsets and timestamps that do not fit the gaps -------------------
#
# Rings of wide entries live in one pool (t.wide) with a free list; an entry names its ring in
# offset_base, so the ring moves along when remove_expired moves the entry. The pool is freed
# when its last ring is given back (wide_trim).

cdef inline bint fits_int32(uint64_t value) noexcept nogil:
    # value, read as an int64, is in [-2^31, 2^31).
    return value + <uint64_t>0x80000000ULL <= <uint64_t>0xFFFFFFFFULL


# The pool's growths to let through before one fails, or -1 (none fails): set by the test hook
# dedup._testing.fail_wide_growth (through wide_growth_failure_after, _state.pyx) while no load
# runs.
cdef Py_ssize_t wide_growths_before_failure = -1


cdef int wide_reserve(Table* t, Py_ssize_t rings) except -1 nogil:
    """Room for `rings` more wide rings, so that that many wide_acquire calls cannot fail."""
    global wide_growths_before_failure
    cdef Py_ssize_t needed = t.wide_used + rings
    cdef Py_ssize_t capacity
    cdef size_t ring_bytes = 3 * <size_t>t.window * sizeof(int64_t)
    cdef int64_t* grown
    if needed <= t.wide_capacity:
        return 0
    capacity = max(needed, max(<Py_ssize_t>4, t.wide_capacity * 2))
    if <size_t>capacity > (<size_t>-1) / ring_bytes:
        out_of_memory(capacity, ring_bytes)
    if wide_growths_before_failure >= 0:
        wide_growths_before_failure -= 1
        if wide_growths_before_failure < 0:
            out_of_memory(capacity, ring_bytes)
    grown = <int64_t*>PyMem_RawRealloc(t.wide, <size_t>capacity * ring_bytes)
    if grown == NULL:
        out_of_memory(capacity, ring_bytes)
    t.wide = grown
    t.bytes += <size_t>(capacity - t.wide_capacity) * ring_bytes
    t.wide_capacity = capacity
    return 0


cdef int64_t wide_acquire(Table* t) except? -1 nogil:
    """A free ring's number (grows the pool if none is free; MemoryError changes nothing)."""
    cdef int64_t ring
    if t.wide_free >= 0:
        ring = t.wide_free
        t.wide_free = t.wide[ring * 3 * t.window]
    else:
        if t.wide_top == t.wide_capacity:
            wide_reserve(t, 1)
        ring = t.wide_top
        t.wide_top += 1
    t.wide_used += 1
    return ring


cdef void wide_release(Table* t, char* e) noexcept nogil:
    """Give back the ring of wide entry e; the entry becomes narrow (its gaps are stale)."""
    cdef EntryHeader* header = <EntryHeader*>e
    cdef int64_t ring = -1 - header.offset_base
    header.offset_base = 0
    t.wide[ring * 3 * t.window] = t.wide_free
    t.wide_free = ring
    t.wide_used -= 1


cdef void wide_trim(Table* t) noexcept nogil:
    """Free the pool once no entry is wide. Not in wide_release: update_from gives rings back
    and takes others in one loop that must not allocate."""
    if t.wide_used == 0 and t.wide != NULL:
        PyMem_RawFree(t.wide)
        t.bytes -= <size_t>t.wide_capacity * 3 * <size_t>t.window * sizeof(int64_t)
        t.wide = NULL
        t.wide_capacity = t.wide_top = 0
        t.wide_free = -1


cdef void entry_drop_batches(Table* t, char* e) noexcept nogil:
    """Entry e retains no batch (an epoch change, spec §1.2): count 0, narrow."""
    cdef EntryHeader* header = <EntryHeader*>e
    if header.offset_base < 0:
        wide_release(t, e)
        wide_trim(t)
    header.offset_base = 0
    header.count = 0
    header.head = 0


cdef int ring_encode(Table* t, char* e, int head, int count, const int64_t* last_offsets,
                     const int64_t* timestamps, const int32_t* offset_deltas) except -1 nogil:
    """Store the offsets, timestamps and offset deltas of ring slots head, head + 1, ... (count
    of them, by ring slot in the arrays) in entry e: as gaps from the newest batch's offset
    and timestamp if they all fit, else in a wide ring. Does not touch the header's head and
    count. MemoryError (no ring to be had) changes nothing."""
    cdef EntryHeader* header = <EntryHeader*>e
    cdef int window = t.window
    cdef int pos, newest = head + count - 1
    cdef bint narrow = True
    cdef int64_t* ring
    if newest >= window:
        newest -= window
    cdef uint64_t base = <uint64_t>last_offsets[newest] if count else 0
    cdef uint64_t timestamp_base = <uint64_t>timestamps[newest] if count else 0
    pos = head
    for _ in range(count):
        narrow = (narrow and fits_int32(<uint64_t>last_offsets[pos] - base)
                  and fits_int32(<uint64_t>timestamps[pos] - timestamp_base)
                  and 0 <= offset_deltas[pos] <= 0xFFFF)
        pos = pos + 1 if pos + 1 < window else 0
    if narrow:
        if header.offset_base < 0:
            wide_release(t, e)
            wide_trim(t)
        header.offset_base = <int64_t>base
        header.timestamp_base = <int64_t>timestamp_base
        pos = head
        for _ in range(count):
            ring_offset_gap(t, e)[pos] = <int32_t>(<uint64_t>last_offsets[pos] - base)
            ring_timestamp_gap(t, e)[pos] = <int32_t>(<uint64_t>timestamps[pos] - timestamp_base)
            ring_offset_delta16(t, e)[pos] = <uint16_t>offset_deltas[pos]
            pos = pos + 1 if pos + 1 < window else 0
        return 0
    if header.offset_base >= 0:
        header.offset_base = -1 - wide_acquire(t)
    ring = wide_ring(t, e)
    pos = head
    for _ in range(count):
        ring[pos] = last_offsets[pos]
        ring[window + pos] = timestamps[pos]
        ring[2 * window + pos] = offset_deltas[pos]
        pos = pos + 1 if pos + 1 < window else 0
    return 0


cdef int entry_copy(Table* dst, Py_ssize_t j, const Table* src, Py_ssize_t i) except -1 nogil:
    """Entry i of src over entry j of dst (same window), wide ring included. A wide src entry
    takes a ring in dst (MemoryError unless wide_reserve made room: then dst is unchanged)."""
    cdef char* to = entry_at(dst, j)
    cdef char* source = entry_at(src, i)
    cdef int64_t ring = -1
    if (<EntryHeader*>source).offset_base < 0:
        ring = (-1 - (<EntryHeader*>to).offset_base) if (<EntryHeader*>to).offset_base < 0 else wide_acquire(dst)
    elif (<EntryHeader*>to).offset_base < 0:
        wide_release(dst, to)
    dst.open_txns += (((<EntryHeader*>source).current_txn_first_offset != NO_TXN)
                      - ((<EntryHeader*>to).current_txn_first_offset != NO_TXN))
    memcpy(to, source, src.stride)
    last_timestamp_at(dst, j)[0] = last_timestamp_at(src, i)[0]
    if ring >= 0:
        (<EntryHeader*>to).offset_base = -1 - ring
        memcpy(wide_ring(dst, to), wide_ring(src, source), 3 * <size_t>src.window * sizeof(int64_t))
    return 0
