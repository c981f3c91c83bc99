# The table's memory (part of _state.pyx, which includes it): allocation that reports failure
# as MemoryError, blocks (platform/slab.h: huge pages from 2 MiB on), the entry chunks and the
# timestamp column beside each, slabs of many chunks, growth and giving chunks back, and
# table_init / table_free. The layout is described in _state.pxd.
#
# Spec: no rule of its own; it holds what docs/spec.md §1.1 (one table per partition replica)
# and §1.2 (an entry per producer) describe. All but table_init runs without the GIL.

# --- allocation ---------------------------------------------------------------------------

cdef void* try_alloc(size_t count, size_t size) noexcept nogil:
    """PyMem_RawMalloc (tracemalloc sees it) of count*size bytes, overflow-checked; NULL on failure."""
    if size != 0 and count > (<size_t>-1) / size:
        return NULL
    return PyMem_RawMalloc(count * size if count * size else 1)


cdef int out_of_memory(size_t count, size_t size) except -1 nogil:
    with gil:
        raise MemoryError(f"producer-state table: cannot allocate {count} x {size} bytes")


cdef void* alloc_array(size_t count, size_t size) except NULL nogil:
    cdef void* p = try_alloc(count, size)
    if p == NULL:
        out_of_memory(count, size)
    return p


# The index and a bulk load's notes are blocks: from BLOCK_SLAB_FROM bytes on a slab
# (platform/slab.h: 2 MiB-aligned huge pages, as the entries; a large table's index is 6.7 MB,
# and malloc would leave the ends of such a block in 4 KiB pages, which cost the kernel about
# 4x as much per byte to zero), else PyMem_RawMalloc. Either way tracemalloc sees them.
cdef enum:
    BLOCK_SLAB_FROM = 2 * 1024 * 1024


cdef inline size_t block_bytes(size_t size) noexcept nogil:
    """What a block of `size` bytes holds in memory."""
    return dedup_slab_length(size, 0) if size >= BLOCK_SLAB_FROM else size


cdef void* try_block(size_t size) noexcept nogil:
    """A block of `size` bytes (freed by free_block with the same size), or NULL."""
    cdef size_t mapped
    if size >= BLOCK_SLAB_FROM:
        return dedup_slab_alloc(size, 0, &mapped)
    return PyMem_RawMalloc(size if size else 1)


cdef void free_block(void* p, size_t size) noexcept nogil:
    if size >= BLOCK_SLAB_FROM:
        dedup_slab_free(p, block_bytes(size))
    else:
        PyMem_RawFree(p)


# --- entry storage ------------------------------------------------------------------------

cdef inline Py_ssize_t entry_capacity(const Table* t) noexcept nogil:
    if t.n_chunks == 0:
        return 0
    return ((t.n_chunks - 1) << t.chunk_shift) + t.top_capacity


cdef int ensure_chunk_slots(Table* t, Py_ssize_t slots) except -1 nogil:
    if slots <= t.chunk_slots:
        return 0
    cdef Py_ssize_t fresh_slots = max(<Py_ssize_t>4, t.chunk_slots * 2)
    while fresh_slots < slots:
        fresh_slots *= 2
    cdef char** entries = <char**>try_alloc(fresh_slots, sizeof(char*))
    cdef int64_t** stamps = <int64_t**>try_alloc(fresh_slots, sizeof(int64_t*))
    cdef uint8_t* in_slab = <uint8_t*>try_alloc(fresh_slots, sizeof(uint8_t))
    if entries == NULL or stamps == NULL or in_slab == NULL:
        PyMem_RawFree(entries)
        PyMem_RawFree(stamps)
        PyMem_RawFree(in_slab)
        out_of_memory(fresh_slots, sizeof(char*))
    if t.n_chunks:
        memcpy(entries, t.entry_chunks, t.n_chunks * sizeof(char*))
        memcpy(stamps, t.ts_chunks, t.n_chunks * sizeof(int64_t*))
        memcpy(in_slab, t.chunk_in_slab, t.n_chunks * sizeof(uint8_t))
    PyMem_RawFree(t.entry_chunks)
    PyMem_RawFree(t.ts_chunks)
    PyMem_RawFree(t.chunk_in_slab)
    t.entry_chunks = entries
    t.ts_chunks = stamps
    t.chunk_in_slab = in_slab
    t.bytes += <size_t>(fresh_slots - t.chunk_slots) * (sizeof(char*) + sizeof(int64_t*) + sizeof(uint8_t))
    t.chunk_slots = fresh_slots
    return 0


# What chunk_in_slab says of a chunk.
cdef enum:
    CHUNK_SINGLE = 0                   # allocated alone, freed alone
    CHUNK_RESERVED = 1                 # in a slab of table_reserve: stays until table_free
    CHUNK_GROWTH_FIRST = 2             # the first chunk of a growth slab
    CHUNK_GROWTH = 3                   # a later chunk of one: the slab is freed when all are spare
    CHUNK_MAPPED = 4                   # in pages of its own, freed alone (gather_chunks)


cdef Py_ssize_t mapped_run_end(const Table* t, Py_ssize_t k, Py_ssize_t end) noexcept nogil:
    """The end of the run of mapped chunks from k (a mapped chunk) that lie one after the other
    in memory (gather_chunks), at most `end`: such a run is freed in one unmapping
    (dedup_page_run_free)."""
    cdef size_t one = mapped_chunk_bytes(t)
    k += 1
    while k < end and t.chunk_in_slab[k] == CHUNK_MAPPED and t.entry_chunks[k] == t.entry_chunks[k - 1] + one:
        k += 1
    return k


cdef int alloc_slab(Table* t, Py_ssize_t chunks, bint growth=False, Py_ssize_t top=0) except -1 nogil:
    """`chunks` chunks after the last one (which must be full) in one slab (platform/slab.h: huge
    pages), the entries first and the timestamp columns after them; the last of them holds `top`
    entries (0: a full chunk), so that a presized table holds no more entries than asked for.
    Slab chunks are freed with their slab, never singly: a reserved slab (table_reserve) in
    table_free, a growth slab (a large table growing without the hint) once all its chunks are
    spare (release_spare_chunks)."""
    cdef Py_ssize_t chunk = <Py_ssize_t>1 << t.chunk_shift
    if top <= 0 or top > chunk:
        top = chunk
    cdef Py_ssize_t held = (chunks - 1) * chunk + top  # entries in the slab
    cdef Py_ssize_t k
    cdef char** slab_entries
    cdef size_t* slab_sizes
    cdef size_t entry_bytes, mapped
    ensure_chunk_slots(t, t.n_chunks + chunks)
    if t.n_slabs == t.slab_slots:
        slab_entries = <char**>try_alloc(t.slab_slots * 2 + 4, sizeof(char*))
        slab_sizes = <size_t*>try_alloc(t.slab_slots * 2 + 4, sizeof(size_t))
        if slab_entries == NULL or slab_sizes == NULL:
            PyMem_RawFree(slab_entries)
            PyMem_RawFree(slab_sizes)
            out_of_memory(t.slab_slots * 2 + 4, sizeof(char*))
        if t.n_slabs:
            memcpy(slab_entries, t.slab_entries, t.n_slabs * sizeof(char*))
            memcpy(slab_sizes, t.slab_sizes, t.n_slabs * sizeof(size_t))
        PyMem_RawFree(t.slab_entries)
        PyMem_RawFree(t.slab_sizes)
        t.slab_entries = slab_entries
        t.slab_sizes = slab_sizes
        t.bytes += <size_t>(t.slab_slots * 2 + 4 - t.slab_slots) * (sizeof(char*) + sizeof(size_t))
        t.slab_slots = t.slab_slots * 2 + 4
    if <size_t>held > (<size_t>-1) / (<size_t>t.stride + sizeof(int64_t)):
        out_of_memory(held, t.stride + sizeof(int64_t))
    entry_bytes = <size_t>held * <size_t>t.stride  # a multiple of 8: stamps stay aligned
    cdef size_t stamp_bytes = <size_t>held * sizeof(int64_t)
    cdef char* entries = <char*>dedup_slab_alloc(entry_bytes + stamp_bytes, growth, &mapped)
    if entries == NULL:
        out_of_memory(held, t.stride + sizeof(int64_t))
    cdef int64_t* stamps = <int64_t*>(entries + entry_bytes)
    t.slab_entries[t.n_slabs] = entries
    t.slab_sizes[t.n_slabs] = mapped
    t.n_slabs += 1
    for k in range(chunks):
        t.entry_chunks[t.n_chunks] = entries + k * chunk * t.stride
        t.ts_chunks[t.n_chunks] = stamps + k * chunk
        t.chunk_in_slab[t.n_chunks] = (CHUNK_GROWTH_FIRST if k == 0 else CHUNK_GROWTH) if growth else CHUNK_RESERVED
        t.n_chunks += 1
    if not growth:
        t.slab_floor = t.n_chunks
    t.top_capacity = top
    t.bytes += mapped
    return 0


cdef int alloc_chunk(Table* t, Py_ssize_t entries, char** entry_block, int64_t** stamp_block) except -1 nogil:
    """Both blocks of a chunk, or neither."""
    entry_block[0] = <char*>try_alloc(entries, t.stride)
    stamp_block[0] = <int64_t*>try_alloc(entries, sizeof(int64_t))
    if entry_block[0] == NULL or stamp_block[0] == NULL:
        PyMem_RawFree(entry_block[0])
        PyMem_RawFree(stamp_block[0])
        entry_block[0] = NULL
        stamp_block[0] = NULL
        out_of_memory(entries, t.stride + sizeof(int64_t))
    t.bytes += <size_t>entries * (t.stride + sizeof(int64_t))
    return 0


cdef inline size_t mapped_chunk_bytes(const Table* t) noexcept nogil:
    """What a mapped chunk holds in memory: its entries and timestamps in whole 4 KiB pages
    (122,880 B at window 5, exactly)."""
    return dedup_slab_length((<size_t>1 << t.chunk_shift) * (<size_t>t.stride + sizeof(int64_t)), 0)


cdef void gather_chunks(Table* t) noexcept nogil:
    """A grown table reaching DEDUP_GROWTH_FROM chunks: its single chunks from
    DEDUP_GATHER_FROM (PyMem_RawMalloc blocks, in 4 KiB pages) move into one run of mapped
    chunks in huge pages (platform/slab.h: 19.5 MB at window 5, copied once), so that all of
    a large grown table but chunk 0 is in huge pages (a fresh table's remove_expired spent
    its extra time on TLB misses in the small pages). Each is then freed on its own, as a
    single chunk is; memory_bytes() is unchanged at window 5 (a mapped chunk is its bytes in
    whole 4 KiB pages), and at most that much more is held during the copy; the heap is
    trimmed after (dedup_heap_trim), so that the freed blocks leave the resident set. Does
    nothing if those chunks are not all single (a table presized there) or if the run cannot
    be had (they stay where they are)."""
    cdef Py_ssize_t chunk = <Py_ssize_t>1 << t.chunk_shift
    cdef Py_ssize_t chunks = DEDUP_GROWTH_FROM - DEDUP_GATHER_FROM, k, c, held
    cdef size_t one = mapped_chunk_bytes(t), mapped
    cdef char* block
    if t.n_chunks != DEDUP_GROWTH_FROM:
        return
    for k in range(DEDUP_GATHER_FROM, DEDUP_GROWTH_FROM):
        if t.chunk_in_slab[k] != CHUNK_SINGLE:
            return
    cdef size_t chunk_bytes = <size_t>chunk * (<size_t>t.stride + sizeof(int64_t))
    cdef char* run = <char*>dedup_page_run_alloc(chunk_bytes, <size_t>chunks, &mapped)
    if run == NULL:
        return
    for k in range(chunks):
        c = DEDUP_GATHER_FROM + k
        block = run + <size_t>k * one
        held = min(chunk, max(<Py_ssize_t>0, t.count - c * chunk))  # entries in use (a reserve may leave some unused)
        memcpy(block, t.entry_chunks[c], held * t.stride)
        memcpy(block + chunk * t.stride, t.ts_chunks[c], held * sizeof(int64_t))
        PyMem_RawFree(t.entry_chunks[c])
        PyMem_RawFree(t.ts_chunks[c])
        t.entry_chunks[c] = block
        t.ts_chunks[c] = <int64_t*>(block + chunk * t.stride)
        t.chunk_in_slab[c] = CHUNK_MAPPED
    t.bytes += <size_t>chunks * (one - chunk_bytes)
    dedup_heap_trim()


cdef inline Py_ssize_t growth_slab_chunks(const Table* t) noexcept nogil:
    """The chunks of the next growth slab: as many whole chunks as fit in h huge pages, h the
    whole pages in a tenth of the chunks held (at least 1, at most DEDUP_GROWTH_PAGES). Whole
    chunks in whole pages leave under one chunk per slab unused (at window 5, 17 chunks of
    122,880 B in 2 MiB: 0.5 B per entry; 64 chunks in 8 MiB left 8), and from DEDUP_GROWTH_FROM
    chunks on a slab is at most 17/160 of the table (12.8 B per entry at window 5), so that a
    grown table stays within 140 B per producer (issue 18; 138.3 at worst, at 738,305)."""
    cdef size_t page = <size_t>2 << 20  # platform/slab.h's huge page
    cdef size_t chunk_bytes = (<size_t>1 << t.chunk_shift) * (<size_t>t.stride + sizeof(int64_t))
    cdef size_t pages = <size_t>t.n_chunks * chunk_bytes // 10 // page
    pages = min(<size_t>DEDUP_GROWTH_PAGES, max(<size_t>1, pages))
    return <Py_ssize_t>max(<size_t>1, pages * page // chunk_bytes)


cdef int reserve_entries(Table* t, Py_ssize_t needed, bint slab=False) except -1 nogil:
    """Room for `needed` entries. Chunk 0 doubles up to a full chunk, then whole chunks are
    added: growth copies at most one chunk and never holds twice the memory. With `slab`
    (presizing), many missing chunks come as one slab in huge pages. Without it, the single
    chunks from DEDUP_GATHER_FROM are moved into huge pages when the table reaches
    DEDUP_GROWTH_FROM chunks (gather_chunks). A table past
    DEDUP_GROWTH_FROM chunks grows by growth slabs of whole huge pages (growth_slab_chunks:
    at window 5, 17 chunks to a 2 MiB page), so that filling, scanning and freeing a
    large table take few page faults and TLB misses; growth then holds at most one slab
    more than needed (growth_slab_chunks: a slab grows with the table, up to 4 huge pages)."""
    cdef Py_ssize_t chunk = <Py_ssize_t>1 << t.chunk_shift
    cdef Py_ssize_t fresh0
    cdef char* entries
    cdef int64_t* stamps
    if needed <= entry_capacity(t):
        return 0
    if t.n_chunks <= 1 and t.top_capacity < chunk:
        fresh0 = max(<Py_ssize_t>8, t.top_capacity * 2)
        while fresh0 < needed and fresh0 < chunk:
            fresh0 *= 2
        fresh0 = min(fresh0, chunk)
        ensure_chunk_slots(t, 1)
        t.chunk_in_slab[0] = 0
        alloc_chunk(t, fresh0, &entries, &stamps)
        if t.n_chunks == 1:
            memcpy(entries, t.entry_chunks[0], t.count * t.stride)
            memcpy(stamps, t.ts_chunks[0], t.count * sizeof(int64_t))
            PyMem_RawFree(t.entry_chunks[0])
            PyMem_RawFree(t.ts_chunks[0])
            t.bytes -= <size_t>t.top_capacity * (t.stride + sizeof(int64_t))
        t.entry_chunks[0] = entries
        t.ts_chunks[0] = stamps
        t.n_chunks = 1
        t.top_capacity = fresh0
    elif t.top_capacity < chunk:
        # The last chunk ends a reserved slab and holds only what was reserved: its entries move
        # to a full chunk of their own (the slab keeps the old place until table_free).
        alloc_chunk(t, chunk, &entries, &stamps)
        memcpy(entries, t.entry_chunks[t.n_chunks - 1], t.top_capacity * t.stride)
        memcpy(stamps, t.ts_chunks[t.n_chunks - 1], t.top_capacity * sizeof(int64_t))
        t.entry_chunks[t.n_chunks - 1] = entries
        t.ts_chunks[t.n_chunks - 1] = stamps
        t.chunk_in_slab[t.n_chunks - 1] = CHUNK_SINGLE
        t.top_capacity = chunk
    if needed <= entry_capacity(t):
        return 0
    cdef Py_ssize_t missing = (needed - entry_capacity(t) + chunk - 1) // chunk
    if slab and missing >= DEDUP_SLAB_MIN_CHUNKS:
        alloc_slab(t, missing, False, needed - entry_capacity(t) - (missing - 1) * chunk)
    while entry_capacity(t) < needed:
        if t.n_chunks >= DEDUP_GROWTH_FROM:
            gather_chunks(t)
            alloc_slab(t, growth_slab_chunks(t), True)
            continue
        ensure_chunk_slots(t, t.n_chunks + 1)
        alloc_chunk(t, chunk, &t.entry_chunks[t.n_chunks], &t.ts_chunks[t.n_chunks])
        t.chunk_in_slab[t.n_chunks] = CHUNK_SINGLE
        t.n_chunks += 1
        t.top_capacity = chunk
    return 0


cdef void release_spare_chunks(Table* t) noexcept nogil:
    """Free whole chunks beyond what the live entries (or the capacity hint) need."""
    cdef Py_ssize_t keep = max(t.count, t.reserved)
    cdef Py_ssize_t needed = 1 if keep <= t.chunk_mask + 1 else ((keep - 1) >> t.chunk_shift) + 1
    cdef Py_ssize_t chunk = <Py_ssize_t>1 << t.chunk_shift
    cdef Py_ssize_t first, k
    needed = max(needed, t.slab_floor)  # reserved slabs go in table_free
    while t.n_chunks > needed:
        first = t.n_chunks - 1
        if t.chunk_in_slab[first] == CHUNK_MAPPED:
            # With the mapped chunks below it that lie just before it, down to `needed`.
            while (first > needed and t.chunk_in_slab[first - 1] == CHUNK_MAPPED
                   and t.entry_chunks[first - 1] + mapped_chunk_bytes(t) == t.entry_chunks[first]):
                first -= 1
            dedup_page_run_free(t.entry_chunks[first], mapped_chunk_bytes(t), <size_t>(t.n_chunks - first))
            t.bytes -= mapped_chunk_bytes(t) * <size_t>(t.n_chunks - first)
        elif t.chunk_in_slab[first] != CHUNK_SINGLE:
            # The top chunk is in a growth slab, the last slab allocated: all of it or none.
            while t.chunk_in_slab[first] != CHUNK_GROWTH_FIRST:
                first -= 1
            if first < needed:
                return
            t.n_slabs -= 1
            dedup_slab_free(t.slab_entries[t.n_slabs], t.slab_sizes[t.n_slabs])
            t.bytes -= t.slab_sizes[t.n_slabs]
        else:
            PyMem_RawFree(t.entry_chunks[first])
            PyMem_RawFree(t.ts_chunks[first])
            t.bytes -= <size_t>chunk * (t.stride + sizeof(int64_t))
        for k in range(first, t.n_chunks):
            t.entry_chunks[k] = NULL
            t.ts_chunks[k] = NULL
            t.chunk_in_slab[k] = CHUNK_SINGLE
        t.n_chunks = first
        t.top_capacity = chunk  # chunks below a freed one are full (reserve_entries fills each first)


cdef int table_reserve(Table* t, Py_ssize_t producers) except -1 nogil:
    """Room for `producers` entries in all, entries and index, so that inserting up to that
    many (a snapshot being loaded) neither reallocates nor rehashes."""
    return reserve_producers(t, producers, True)


cdef int reserve_producers(Table* t, Py_ssize_t producers, bint slab) except -1 nogil:
    """table_reserve; without `slab`, missing chunks are added one by one as inserts would add
    them, so that remove_expired can release them again (slab chunks stay until table_free)."""
    if producers > DEDUP_MAX_PRODUCERS:
        with gil:
            raise MemoryError(f"producer-state table: more than {DEDUP_MAX_PRODUCERS} producers")
    reserve_entries(t, producers, slab)
    # Deleted slots count: inserts up to `producers` must then neither fail nor rehash.
    if <uint64_t>(producers + t.index_deleted) * 5 > <uint64_t>t.index_capacity * 4:
        index_resize(t, index_capacity_for(max(producers, t.reserved)))
    return 0


cdef int table_init(Table* t, int window, Py_ssize_t capacity) except -1:
    memset(t, 0, sizeof(Table))
    t.hash_seed = int.from_bytes(os.urandom(8), "little")
    t.window = window
    t.off_gap = ENTRY_HEADER_SIZE + 4 * window
    t.off_ts_gap = t.off_gap + 4 * window
    t.off_delta = t.off_ts_gap + 4 * window
    t.stride = (t.off_delta + 2 * window + 7) & ~7  # entries stay 8-aligned
    t.wide_free = -1
    t.free_hole = -1
    t.chunk_shift = 4
    while ((t.stride + 8) << (t.chunk_shift + 1)) <= DEDUP_CHUNK_BYTES and t.chunk_shift < 20:
        t.chunk_shift += 1
    t.chunk_mask = (<Py_ssize_t>1 << t.chunk_shift) - 1
    t.reserved = capacity
    if capacity > 0:
        table_reserve(t, capacity)
    return 0


cdef void table_free(Table* t) noexcept nogil:
    cdef Py_ssize_t k = 0, end
    while k < t.n_chunks:
        end = k + 1
        if t.chunk_in_slab[k] == CHUNK_SINGLE:
            PyMem_RawFree(t.entry_chunks[k])
            PyMem_RawFree(t.ts_chunks[k])
        elif t.chunk_in_slab[k] == CHUNK_MAPPED:
            end = mapped_run_end(t, k, t.n_chunks)
            dedup_page_run_free(t.entry_chunks[k], mapped_chunk_bytes(t), <size_t>(end - k))
        k = end
    for k in range(t.n_slabs):
        dedup_slab_free(t.slab_entries[k], t.slab_sizes[k])
    PyMem_RawFree(t.entry_chunks)
    PyMem_RawFree(t.ts_chunks)
    PyMem_RawFree(t.chunk_in_slab)
    PyMem_RawFree(t.slab_entries)
    PyMem_RawFree(t.slab_sizes)
    free_block(t.index, <size_t>t.index_capacity * sizeof(uint32_t))
    PyMem_RawFree(t.wide)
    PyMem_RawFree(t.lru)
    memset(t, 0, sizeof(Table))
