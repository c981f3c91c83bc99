# Bounded producer state (part of _state.pyx, which includes it): max_producers, the eviction
# of the least recently used producer without an ongoing transaction, and the heap that finds it.
#
# Spec: docs/spec.md §6.1 (dedup's own rule). Not Kafka 4.0's behaviour: Kafka's table grows
# until producer.id.expiration.ms, and a client calling InitProducerId in a loop grows every
# partition's table without bound (the problem of KIP-936, which throttles InitProducerId per
# principal instead). A capped table bounds it as Redpanda's max_concurrent_producer_ids does
# (its producer_state_manager evicts the least recently used producer that can be evicted,
# never one inside a transaction):
#
#   * a producer's last use is the last offset of its newest retained batch (Kafka's
#     ProducerStateEntry.lastDataOffset), -1 if it retains none; producers are ordered by
#     (last use, producer id). Both snapshot formats keep that offset, so the order survives a
#     snapshot round trip with no field of its own. A marker is not a use (unless its epoch
#     change drops the batches: the producer's last use is then -1);
#   * a new producer (append, update, append_marker, update_from) in a table holding
#     max_producers first evicts the least recently used producer without an ongoing
#     transaction; an evicted producer is unknown again, so its next batch is accepted at any
#     sequence as KIP-360 accepts an unknown producer: dedup of very old producers is traded
#     for bounded memory;
#   * when open transactions fill the table (open_txns >= max_producers), a new CLIENT
#     producer is refused with THROTTLING_QUOTA_EXCEEDED (89, retriable: KIP-599's code, the
#     throttle of KIP-936) rather than evicting a transaction's first offset (the last stable
#     offset needs it); REPLICATION and COORDINATOR are never refused (a follower mirrors its
#     leader) and may take the table past max_producers until transactions end;
#   * a copy() is a staging table: it refuses as its table would (counting the open
#     transactions its table holds outside it) and never evicts; update_from evicts in the
#     live table once the staged entries are in.
#
# The heap: records (last use, producer id, entry number), least first, kept only once an
# eviction has needed it (an uncapped table, or a capped one below its cap, pays nothing on
# the append path). A record is checked when it reaches the top: the producer gone from that
# number (evicted, expired) or inside a transaction drops it; a last use that has grown since
# (an append: appends push nothing) moves it down to its place. Whatever else changes an
# entry's last use or ends its transaction pushes a fresh record (a new producer, a marker,
# update_from); remove_expired, which moves entries, drops the heap, as does a failed growth.

cdef void* try_realloc(void* p, size_t count, size_t size) noexcept nogil:
    """PyMem_RawRealloc of p to count*size bytes, overflow-checked; NULL (p unchanged) on failure."""
    if size != 0 and count > (<size_t>-1) / size:
        return NULL
    return PyMem_RawRealloc(p, count * size)


cdef inline int64_t entry_last_use(const Table* t, Py_ssize_t i) noexcept nogil:
    """Entry i's last data offset (its newest retained batch's last offset), -1 if none."""
    cdef char* e = entry_at(t, i)
    cdef const EntryHeader* header = <const EntryHeader*>e
    cdef int newest
    if header.count == 0:
        return -1
    newest = header.head + header.count - 1
    if newest >= t.window:
        newest -= t.window
    return slot_last_offset(t, e, newest)


cdef inline bint lru_before(const LruRecord* a, const LruRecord* b) noexcept nogil:
    return a.last_use < b.last_use or (a.last_use == b.last_use and a.producer_id < b.producer_id)


cdef void lru_sift_down(LruRecord* heap, Py_ssize_t size, Py_ssize_t k) noexcept nogil:
    cdef LruRecord item = heap[k]
    cdef Py_ssize_t child
    while True:
        child = 2 * k + 1
        if child >= size:
            break
        if child + 1 < size and lru_before(&heap[child + 1], &heap[child]):
            child += 1
        if not lru_before(&heap[child], &item):
            break
        heap[k] = heap[child]
        k = child
    heap[k] = item


cdef void lru_sift_up(LruRecord* heap, Py_ssize_t k) noexcept nogil:
    cdef LruRecord item = heap[k]
    cdef Py_ssize_t parent
    while k > 0:
        parent = (k - 1) >> 1
        if not lru_before(&item, &heap[parent]):
            break
        heap[k] = heap[parent]
        k = parent
    heap[k] = item


cdef void lru_drop(Table* t) noexcept nogil:
    """Free the heap; the next eviction builds it afresh."""
    if t.lru != NULL:
        PyMem_RawFree(t.lru)
        t.bytes -= <size_t>t.lru_capacity * sizeof(LruRecord)
        t.lru = NULL
        t.lru_size = t.lru_capacity = 0


cdef void lru_fill(Table* t) noexcept nogil:
    """The heap afresh: one record per producer without an ongoing transaction (the capacity
    is at least the producers), heapified."""
    cdef Py_ssize_t i, k
    cdef const EntryHeader* header
    t.lru_size = 0
    for i in range(t.count):
        header = <const EntryHeader*>entry_at(t, i)
        if header.producer_id == HOLE_ID or header.current_txn_first_offset != NO_TXN:
            continue
        t.lru[t.lru_size].last_use = entry_last_use(t, i)
        t.lru[t.lru_size].producer_id = header.producer_id
        t.lru[t.lru_size].entry = i
        t.lru_size += 1
    k = t.lru_size // 2
    while k > 0:
        k -= 1
        lru_sift_down(t.lru, t.lru_size, k)


cdef int lru_build(Table* t) except -1 nogil:
    """The heap of every producer (MemoryError, changing nothing, if it cannot be had)."""
    cdef Py_ssize_t capacity = max(<Py_ssize_t>64, 2 * table_live(t))
    cdef LruRecord* heap = <LruRecord*>alloc_array(capacity, sizeof(LruRecord))
    lru_drop(t)
    t.lru = heap
    t.lru_capacity = capacity
    t.bytes += <size_t>capacity * sizeof(LruRecord)
    lru_fill(t)
    return 0


cdef void lru_push(Table* t, Py_ssize_t i) noexcept nogil:
    """Note entry i's last use, if the heap is kept. Never fails: a heap that cannot grow is
    dropped (the next eviction builds it afresh); one mostly of stale records starts over."""
    cdef LruRecord* grown
    cdef Py_ssize_t capacity
    cdef const EntryHeader* header = <const EntryHeader*>entry_at(t, i)
    if t.lru == NULL:
        return
    if t.lru_size == t.lru_capacity:
        if t.lru_size > 2 * table_live(t) + 64:
            lru_fill(t)  # (entry i included)
            return
        capacity = t.lru_capacity * 2
        grown = <LruRecord*>try_realloc(t.lru, capacity, sizeof(LruRecord))
        if grown == NULL:
            lru_drop(t)
            return
        t.bytes += <size_t>(capacity - t.lru_capacity) * sizeof(LruRecord)
        t.lru = grown
        t.lru_capacity = capacity
    if header.current_txn_first_offset != NO_TXN:
        return  # pushed again when its transaction ends
    t.lru[t.lru_size].last_use = entry_last_use(t, i)
    t.lru[t.lru_size].producer_id = header.producer_id
    t.lru[t.lru_size].entry = i
    lru_sift_up(t.lru, t.lru_size)
    t.lru_size += 1


cdef inline void lru_pop(Table* t) noexcept nogil:
    t.lru_size -= 1
    if t.lru_size:
        t.lru[0] = t.lru[t.lru_size]
        lru_sift_down(t.lru, t.lru_size, 0)


cdef Py_ssize_t lru_victim(Table* t) except -2 nogil:
    """The least recently used producer without an ongoing transaction, its record popped;
    -1 if there is none."""
    cdef LruRecord* top
    cdef const EntryHeader* header
    cdef int64_t last_use
    cdef Py_ssize_t i
    if t.lru == NULL:
        lru_build(t)
    while t.lru_size:
        top = &t.lru[0]
        i = top.entry
        if i >= t.count:
            lru_pop(t)  # gone: compacted away
            continue
        header = <const EntryHeader*>entry_at(t, i)
        if header.producer_id != top.producer_id or header.current_txn_first_offset != NO_TXN:
            lru_pop(t)  # gone (a hole, or another producer's number now), or in a transaction
            continue
        last_use = entry_last_use(t, i)
        if last_use > top.last_use:
            top.last_use = last_use  # appended to since: to its place
            lru_sift_down(t.lru, t.lru_size, 0)
            continue
        if last_use < top.last_use:
            lru_pop(t)  # its batches were dropped since: a record with its last use was pushed then
            continue
        lru_pop(t)
        return i
    return -1


cdef void entry_evict(Table* t, Py_ssize_t i) noexcept nogil:
    """Producer i leaves the table: its index slot is marked deleted, its entry becomes a hole
    (first on the free list: the new producer takes its number, as in the twin)."""
    cdef uint64_t h = hash_producer_id(t, (<const EntryHeader*>entry_at(t, i)).producer_id)
    cdef uint32_t capacity = t.index_capacity
    cdef uint32_t slot = home_slot(h, capacity)
    cdef uint32_t value = (<uint32_t>h & t.tag_mask) | <uint32_t>i
    # Terminates: the producer is in the index, on its probe sequence.
    while t.index[slot] != value:
        slot += 1
        if slot == capacity:
            slot = 0
    t.index[slot] = DEDUP_INDEX_DELETED
    t.index_deleted += 1
    entry_forget(t, i)
    make_hole(t, i)


cdef Py_ssize_t table_evict(Table* t, Py_ssize_t keep) except -1 nogil:
    """Evict the least recently used producers without an ongoing transaction until the table
    holds at most `keep` or none is left to evict; returns how many went. MemoryError (the
    heap cannot be built) before any is evicted."""
    cdef Py_ssize_t i, evicted = 0
    while table_live(t) > keep:
        i = lru_victim(t)
        if i < 0:
            break
        entry_evict(t, i)
        evicted += 1
    if evicted:
        wide_trim(t)
        t.evictions += evicted
        t.generation += 1
    return evicted


cdef Py_ssize_t admit_new(Table* t, int64_t producer_id, uint64_t h) except -1 nogil:
    """insert_new for a producer the table takes in (append, update, marker): a capped table
    holding max_producers first evicts (a staging copy never does)."""
    cdef Py_ssize_t i
    if t.max_producers and not t.staging and table_live(t) >= t.max_producers:
        table_evict(t, t.max_producers - 1)
    i = insert_new(t, producer_id, h)
    lru_push(t, i)
    return i


cdef inline bint refuses_new_producer(const Table* t, int origin) noexcept nogil:
    """A new CLIENT producer is refused when open transactions fill the capped table."""
    return (t.max_producers != 0 and origin == ORIGIN_CLIENT
            and t.open_txns + t.outside_open_txns >= t.max_producers)
