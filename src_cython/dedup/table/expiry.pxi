# remove_expired (part of _state.pyx, which includes it): the producers idle for at least
# expiration_ms and not in a transaction leave the table, as holes on a free list or by
# compaction, and the index is edited in place, swept once (kernels/expiry.h) or rebuilt.
#
# Spec: docs/spec.md §6 (isProducerExpired: no ongoing transaction and now - lastTimestamp >=
# producerIdExpirationMs; producers in a transaction never expire).

# --- expiration (spec §6) -----------------------------------------------------------------

cdef extern from "kernels/expiry.h":
    uint64_t dedup_mark_expired(const int64_t* stamps, size_t n, int64_t threshold) noexcept nogil
    void dedup_index_sweep(uint32_t* index, size_t capacity, uint32_t idx_mask, const uint32_t* removed,
                           uint32_t last, uint32_t tail, const uint32_t* moved_to) noexcept nogil
    size_t dedup_count_bits(const uint32_t* bits, size_t words) noexcept nogil
    int dedup_expiry_use_avx2() noexcept nogil

cdef extern from "platform/compiler.h":
    # The position of the lowest set bit of a non-zero word.
    Py_ssize_t dedup_lowest_bit(uint32_t word) noexcept nogil


cdef inline bint is_expired(int64_t now_ms, int64_t last_timestamp, int64_t expiration_ms) noexcept nogil:
    # now - last >= expiration, exactly: the difference can pass 2^63 (Kafka's long would wrap).
    if last_timestamp > now_ms:
        return False
    return <uint64_t>now_ms - <uint64_t>last_timestamp >= <uint64_t>expiration_ms


cdef inline bint expires(const Table* t, Py_ssize_t i, int64_t now_ms, int64_t expiration_ms) noexcept nogil:
    # The timestamp column first: the entry itself is read only for an expired producer.
    return (is_expired(now_ms, last_timestamp_at(t, i)[0], expiration_ms)
            and (<EntryHeader*>entry_at(t, i)).current_txn_first_offset == NO_TXN)


cdef inline bint index_will_shrink(const Table* t, Py_ssize_t producers) noexcept nogil:
    # reindex_after_removal's test: a table of at most `producers` gets a new, smaller index.
    return index_capacity_for(max(producers, t.reserved)) * 2 <= t.index_capacity


# A small removal edits the index through a queue: each edit's home slot is prefetched when the edit
# is queued and the edit is applied INDEX_EDIT_QUEUE edits later, oldest first, so the cache
# misses of many edits overlap instead of following one another (a 1,000,000-producer index is
# 6.7 MB, its slots random).
cdef enum:
    INDEX_EDIT_QUEUE = 32              # a power of two


ctypedef struct IndexEdit:
    uint64_t h                         # the producer id's hash
    uint32_t old_value                 # the slot to find (its tag and entry number)
    uint32_t new_value                 # what it becomes: DEDUP_INDEX_DELETED or a new number


ctypedef struct IndexEdits:
    IndexEdit queue[INDEX_EDIT_QUEUE]  # a ring: edits [applied, queued) are pending
    size_t applied
    size_t queued


cdef inline void index_edit_apply(Table* t, IndexEdits* edits) noexcept nogil:
    """Apply the oldest pending edit. Edits go in the order they were queued: an entry number
    freed by one may be given to another entry by a later one."""
    cdef IndexEdit* edit = &edits.queue[edits.applied & (INDEX_EDIT_QUEUE - 1)]
    cdef uint32_t capacity = t.index_capacity
    cdef uint32_t slot = home_slot(edit.h, capacity)
    # Terminates: the slot holding old_value is in the probe sequence of its hash.
    while t.index[slot] != edit.old_value:
        slot += 1
        if slot == capacity:
            slot = 0
    t.index[slot] = edit.new_value
    edits.applied += 1


cdef inline void index_edit(Table* t, IndexEdits* edits, int64_t producer_id, Py_ssize_t old,
                            uint32_t new_value) noexcept nogil:
    """Queue: the slot of producer_id's entry number `old` becomes new_value (the entry number
    it moved to, or DEDUP_INDEX_DELETED)."""
    cdef uint64_t h = hash_producer_id(t, producer_id)
    cdef uint32_t tag = <uint32_t>h & t.tag_mask
    cdef IndexEdit* edit
    if edits.queued - edits.applied == INDEX_EDIT_QUEUE:
        index_edit_apply(t, edits)
    dedup_prefetch_write(t.index + home_slot(h, t.index_capacity))
    edit = &edits.queue[edits.queued & (INDEX_EDIT_QUEUE - 1)]
    edit.h = h
    edit.old_value = tag | <uint32_t>old
    if new_value == DEDUP_INDEX_DELETED:
        edit.new_value = DEDUP_INDEX_DELETED
        t.index_deleted += 1
    else:
        edit.new_value = tag | new_value
    edits.queued += 1


# Removal records what it did to entry numbers, and the index is then rewritten in one
# sequential sweep (dedup_index_sweep in kernels/expiry.h): two random edits per removed
# producer on a 6.7 MB index (1,000,000 producers) cost more than reading and writing all of it
# once.
# What the entry pass did, for the sweep. marked: a bitmap over [0, idx_mask], bit i set for
# entry i expired by its timestamp and cleared again if it stays (a transaction), so that
# after the pass it holds exactly the removed. moved_to[count - 1 - n]: where tail entry n
# went, or DEDUP_INDEX_DELETED (written for the tail [kept, count) only: at most candidates +
# holes records); NULL when the index is to be rebuilt smaller (it is then refilled if that
# fails).
ctypedef struct Removal:
    uint32_t* marked
    uint32_t* moved_to
    Py_ssize_t candidates              # marked by the timestamp column


cdef inline bint is_marked(const uint32_t* bits, Py_ssize_t i) noexcept nogil:
    return (bits[i >> 5] >> (i & 31)) & 1


cdef inline void unmark(uint32_t* bits, Py_ssize_t i) noexcept nogil:
    bits[i >> 5] &= ~(<uint32_t>1 << (i & 31))


cdef inline Py_ssize_t next_marked(const uint32_t* bits, Py_ssize_t i, Py_ssize_t end) noexcept nogil:
    """The first marked position in [i, end), or end (i <= end)."""
    cdef Py_ssize_t w = i >> 5
    cdef uint32_t word
    if i >= end:
        return end
    word = bits[w] & (<uint32_t>0xFFFFFFFFu << (i & 31))
    while word == 0:
        w += 1
        if w << 5 >= end:
            return end
        word = bits[w]
    return min(end, (w << 5) + dedup_lowest_bit(word))


cdef enum:
    # A sweep costs about what 2 random index edits (one removed producer) do per 50 slots.
    SWEEP_SLOTS_PER_REMOVAL = 48
    # A hole needs one edit (nothing is renumbered): 100,000 edits took 1.2 ms here, the sweep
    # of 1,666,667 slots 1.6 ms (1,000,000 producers, 10% removed).
    SWEEP_SLOTS_PER_HOLE = 12
    MARK_AHEAD = 2048                  # timestamps prefetched ahead of the marking (16 KiB)
    REMOVE_AHEAD = 8                   # candidates, and entries from the end, fetched ahead


cdef inline void prefetch_entry(const Table* t, Py_ssize_t i) noexcept nogil:
    # Every line of entry i (it may span three), to be written.
    cdef const char* e = entry_at(t, i)
    dedup_prefetch_write(e)
    dedup_prefetch_write(e + 64)
    dedup_prefetch_write(e + t.stride - 1)


cdef Py_ssize_t mark_expired(const Table* t, int64_t threshold, uint32_t* bits) noexcept nogil:
    """Bits [0, t.count) of the bitmap: entry i's last timestamp is at most threshold (higher
    bits of the last word 0); returns how many are set. One pass over the timestamp column."""
    cdef Py_ssize_t start, size, k
    cdef uint64_t word
    for start in range(0, t.count, 64):
        size = min(<Py_ssize_t>64, t.count - start)
        if start + MARK_AHEAD < t.count:
            # The column is a strip of 8 KiB per chunk: the prefetcher stops at each strip's end.
            for k in range(0, 64, 8):
                dedup_prefetch(last_timestamp_at(t, start + MARK_AHEAD + k))
        if t.chunk_shift >= 6:
            # 64 entries from a multiple of 64 lie in one chunk (2^chunk_shift entries).
            word = dedup_mark_expired(last_timestamp_at(t, start), <size_t>size, threshold)
        else:
            word = 0
            for k in range(size):
                word |= <uint64_t>(last_timestamp_at(t, start + k)[0] <= threshold) << k
        bits[start >> 5] = <uint32_t>word
        if size > 32:
            bits[(start >> 5) + 1] = <uint32_t>(word >> 32)
    return <Py_ssize_t>dedup_count_bits(bits, (<size_t>t.count + 31) >> 5)


cdef inline bint keeps_transaction(const Table* t, Py_ssize_t i) noexcept nogil:
    """Candidate i stays: an ongoing transaction never expires (spec §6). The entry is read
    only if the table has one (t.open_txns): expiring idempotent producers reads nothing but
    the timestamp column."""
    return t.open_txns != 0 and (<EntryHeader*>entry_at(t, i)).current_txn_first_offset != NO_TXN


cdef inline void entry_forget(Table* t, Py_ssize_t i) noexcept nogil:
    """Removal's part in entry i's storage: the ring of a wide entry goes back to the pool
    (read only if some entry is wide)."""
    if t.wide_used != 0 and (<EntryHeader*>entry_at(t, i)).offset_base < 0:
        wide_release(t, entry_at(t, i))


cdef inline void entry_move(Table* t, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """Entry n, the last that stays, fills hole i (swap-remove)."""
    memcpy(entry_at(t, i), entry_at(t, n), t.stride)
    last_timestamp_at(t, i)[0] = last_timestamp_at(t, n)[0]


cdef int removal_start(const Table* t, int64_t threshold, Removal* r) noexcept nogil:
    """Allocate removal's records and mark the candidates; -1 (nothing allocated, no error set)
    if memory is short: removal then goes on without records and refills the index."""
    cdef size_t words = (<size_t>t.idx_mask >> 5) + 1
    cdef size_t written = (<size_t>t.count + 31) >> 5
    r.marked = <uint32_t*>try_alloc(words, sizeof(uint32_t))
    if r.marked == NULL:
        return -1
    r.candidates = mark_expired(t, threshold, r.marked)
    # The sweep reads a bit for every slot value, sentinels included: zero up to idx_mask.
    memset(r.marked + written, 0, (words - written) * sizeof(uint32_t))
    if index_will_shrink(t, table_live(t) - r.candidates):
        return 0  # the index will be rebuilt smaller: no sweep, nothing to record for it
    # One record per tail position compaction empties: at most every candidate and every hole
    # (mark_holes adds the holes to the marked entries).
    r.moved_to = <uint32_t*>try_alloc(<size_t>max(r.candidates + t.holes, <Py_ssize_t>1), sizeof(uint32_t))
    if r.moved_to == NULL:
        PyMem_RawFree(r.marked)
        r.marked = NULL
        return -1
    return 0


cdef void removal_end(Removal* r) noexcept nogil:
    PyMem_RawFree(r.marked)
    PyMem_RawFree(r.moved_to)
    r.marked = r.moved_to = NULL


cdef Py_ssize_t remove_recorded(Table* t, Removal* r, IndexEdits* edits) noexcept nogil:
    """The swap-remove pass (compaction) over the marked entries, candidates and holes;
    returns the entries kept. Each change is also queued as an index edit when `edits` is not
    NULL (a hole has no slot to edit).

    Going forward from i, each removed entry's hole is filled by the last entry that stays,
    found going back from the end (n): removed ones there are simply dropped. Only candidates
    are read at the front and only entries that move are copied from the back."""
    cdef Py_ssize_t count = t.count, i, n = t.count, ahead, k, _
    cdef uint32_t* bits = r.marked
    i = next_marked(bits, 0, n)
    # The entries of the next candidates and of the last entries are cache misses: start them
    # early (`ahead` runs REMOVE_AHEAD candidates before i).
    ahead = i
    for _ in range(REMOVE_AHEAD):
        prefetch_entry(t, ahead)
        ahead = next_marked(bits, ahead + 1, count - 1)
    for k in range(1, REMOVE_AHEAD + 1):
        prefetch_entry(t, max(count - k, 0))
    while i < n:
        prefetch_entry(t, ahead)
        ahead = next_marked(bits, ahead + 1, count - 1)
        if keeps_transaction(t, i):
            unmark(bits, i)
            i = next_marked(bits, i + 1, n)
            continue
        if edits != NULL and not is_hole(entry_at(t, i)):
            index_edit(t, edits, (<EntryHeader*>entry_at(t, i)).producer_id, i, DEDUP_INDEX_DELETED)
        entry_forget(t, i)
        n -= 1
        prefetch_entry(t, max(n - REMOVE_AHEAD, 0))
        while n > i and is_marked(bits, n):
            if keeps_transaction(t, n):
                unmark(bits, n)
                break
            if edits != NULL and not is_hole(entry_at(t, n)):
                index_edit(t, edits, (<EntryHeader*>entry_at(t, n)).producer_id, n, DEDUP_INDEX_DELETED)
            entry_forget(t, n)
            if r.moved_to != NULL:
                r.moved_to[count - 1 - n] = DEDUP_INDEX_DELETED
            n -= 1
            prefetch_entry(t, max(n - REMOVE_AHEAD, 0))
        if n > i:
            entry_move(t, i, n)
            if r.moved_to != NULL:
                r.moved_to[count - 1 - n] = <uint32_t>i
            if edits != NULL:
                index_edit(t, edits, (<EntryHeader*>entry_at(t, i)).producer_id, n, <uint32_t>i)
            i = next_marked(bits, i + 1, n)
        elif r.moved_to != NULL:
            r.moved_to[count - 1 - n] = DEDUP_INDEX_DELETED  # no entry left to fill hole i
    if edits != NULL:
        while edits.applied != edits.queued:
            index_edit_apply(t, edits)
    return n


cdef inline bint removable(const Table* t, Py_ssize_t i, int64_t now_ms, int64_t expiration_ms) noexcept nogil:
    return is_hole(entry_at(t, i)) or expires(t, i, now_ms, expiration_ms)


cdef Py_ssize_t remove_unrecorded(Table* t, int64_t now_ms, int64_t expiration_ms) noexcept nogil:
    """remove_recorded's compaction without its records (memory was short for them), holes
    and expired entries alike; returns the entries kept. The index must then be rebuilt."""
    cdef Py_ssize_t i = 0, n = t.count
    while i < n:
        if not removable(t, i, now_ms, expiration_ms):
            i += 1
            continue
        entry_forget(t, i)
        n -= 1
        while n > i and removable(t, n, now_ms, expiration_ms):
            entry_forget(t, n)
            n -= 1
        if n > i:
            entry_move(t, i, n)
            i += 1
    return n


cdef Py_ssize_t settle_candidates(const Table* t, Removal* r) noexcept nogil:
    """How many candidates go: all of them unless some entry has an ongoing transaction
    (t.open_txns); then each candidate is read and those in one are unmarked (spec §6)."""
    cdef Py_ssize_t i, removed = 0, count = t.count
    cdef uint32_t* bits = r.marked
    if t.open_txns == 0:
        return r.candidates
    i = next_marked(bits, 0, count)
    while i < count:
        if keeps_transaction(t, i):
            unmark(bits, i)
        else:
            removed += 1
        i = next_marked(bits, i + 1, count)
    return removed


cdef void mark_holes(const Table* t, Removal* r) noexcept nogil:
    """Add the holes to the marked entries (compaction removes them too)."""
    cdef Py_ssize_t i = t.free_hole
    while i >= 0:
        r.marked[i >> 5] |= <uint32_t>1 << (i & 31)
        i = (<EntryHeader*>entry_at(t, i)).timestamp_base


cdef inline void make_hole(Table* t, Py_ssize_t i) noexcept nogil:
    """Entry i becomes a hole, first on the free list. Only its header (and timestamp) is
    written; the timestamp INT64_MAX keeps it from ever being a candidate (no threshold
    reaches it: expiration_ms is at least 1)."""
    cdef EntryHeader* header = <EntryHeader*>entry_at(t, i)
    header.producer_id = HOLE_ID
    header.current_txn_first_offset = NO_TXN
    header.head = 0
    header.count = 0
    header.offset_base = 0
    header.timestamp_base = t.free_hole
    last_timestamp_at(t, i)[0] = INT64_MAX
    t.free_hole = i
    t.holes += 1


cdef void make_holes(Table* t, Removal* r, IndexEdits* edits) noexcept nogil:
    """Every marked entry becomes a hole, in ascending order (so inserts take them back from
    the highest); its index slot is queued as deleted when `edits` is not NULL. Nothing
    moves: each removed entry's header line is written, and read only for an index edit or a
    wide ring."""
    cdef Py_ssize_t count = t.count, i, ahead, _
    cdef const uint32_t* bits = r.marked
    cdef const char* e
    i = next_marked(bits, 0, count)
    ahead = i
    for _ in range(REMOVE_AHEAD):
        if ahead < count:
            e = entry_at(t, ahead)
            dedup_prefetch_write(e)
            dedup_prefetch_write(e + ENTRY_HEADER_SIZE - 1)
        ahead = next_marked(bits, ahead + 1, count)
    while i < count:
        if ahead < count:
            e = entry_at(t, ahead)
            dedup_prefetch_write(e)
            dedup_prefetch_write(e + ENTRY_HEADER_SIZE - 1)
            ahead = next_marked(bits, ahead + 1, count)
        if edits != NULL:
            index_edit(t, edits, (<EntryHeader*>entry_at(t, i)).producer_id, i, DEDUP_INDEX_DELETED)
        entry_forget(t, i)
        make_hole(t, i)
        i = next_marked(bits, i + 1, count)
    if edits != NULL:
        while edits.applied != edits.queued:
            index_edit_apply(t, edits)


cdef void reindex_after_removal(Table* t, const Removal* r, Py_ssize_t count, Py_ssize_t removed,
                                Py_ssize_t tail, bint exact) noexcept nogil:
    """A smaller index if one can be had (memory returns after mass expiry), else the same one:
    kept if `exact` (removal edited it), else swept with removal's records `r` (of a table
    that had `count` entry numbers in use, `tail` of them from the end renumbered by
    compaction, `removed` producers gone), or refilled when there are none. This cannot fail,
    so removal never leaves the index stale."""
    cdef uint64_t target = index_capacity_for(max(table_live(t), t.reserved))
    cdef uint32_t* fresh
    if target * 2 <= t.index_capacity:
        fresh = <uint32_t*>try_block(<size_t>target * sizeof(uint32_t))
        if fresh != NULL:
            index_adopt(t, fresh, <uint32_t>target)
            index_fill(t)
            return
    if exact:
        return
    if r.moved_to == NULL or table_live(t) == 0:
        index_fill(t)  # with no entry left, a memset
        return
    dedup_index_sweep(t.index, t.index_capacity, t.idx_mask, r.marked, <uint32_t>(count - 1),
                      <uint32_t>tail, r.moved_to)
    # Every removed entry's slot is now a deleted slot.
    t.index_deleted += <uint32_t>removed


cdef Py_ssize_t table_remove_expired(Table* t, int64_t now_ms, int64_t expiration_ms) noexcept nogil:
    """Remove every producer that is expired and has no ongoing transaction; returns how many.

    The timestamp column marks the candidates in a bitmap (holes never are: their timestamp
    is INT64_MAX); entries are read only if some entry has an ongoing transaction (to keep
    those) or is wide (to free its ring). Then one of:

    - holes (more than half the numbers in use stay live): each removed entry becomes a hole
      on the free list, nothing moves, and inserts take the holes back, last freed first;
    - compaction (at most half stay live): swap-remove over the removed entries and the
      holes, from both ends (the hole is filled by the last entry that stays; removed
      entries at the tail are simply dropped), so whole chunks at the tail are freed; when
      every producer goes and none is in a transaction, nothing is read or moved at all.

    The index is edited in place when few are removed, else swept once from the bitmap (and
    the compaction's renumbering), or rebuilt smaller after mass expiry.

    dedup.reference does the same (its remove_expired spells out the same holes and moves):
    Kafka's table is a HashMap and promises no order, so any order that both twins share
    (their snapshots list entries in it) will do.
    """
    cdef Py_ssize_t count = t.count, live = table_live(t), kept, removed = 0, tail = 0
    cdef Removal r
    cdef IndexEdits edits
    cdef bint exact = False
    r.marked = r.moved_to = NULL
    if live == 0 or now_ms < INT64_MIN + expiration_ms:
        return 0  # no timestamp is expiration_ms before now_ms
    # is_expired(now, last, expiration) is exactly last <= now - expiration (no overflow here).
    if removal_start(t, now_ms - expiration_ms, &r) == 0:
        # A few removals edit the index in place; more pay for a sweep of all of it, and mass
        # expiry (the index is then rebuilt smaller) for neither. (For compaction; holes
        # decide below.)
        exact = (r.candidates * SWEEP_SLOTS_PER_REMOVAL < t.index_capacity
                 and not index_will_shrink(t, live - r.candidates))
        edits.applied = edits.queued = 0
        if r.candidates == live and t.open_txns == 0:
            # Every producer expired and none is in a transaction: nothing to read or move.
            removed = live
            t.count = t.holes = 0
            t.free_hole = -1
            t.wide_used = 0  # every ring is free: wide_trim frees the pool
        elif r.candidates:
            removed = settle_candidates(t, &r)
            if removed and (live - removed) * 2 <= count:
                mark_holes(t, &r)
                kept = remove_recorded(t, &r, &edits if exact else NULL)
                tail = count - kept
                t.count = kept
                t.holes = 0
                t.free_hole = -1
            elif removed:
                exact = (removed * SWEEP_SLOTS_PER_HOLE < t.index_capacity
                         and not index_will_shrink(t, live - removed))
                make_holes(t, &r, &edits if exact else NULL)
    else:
        kept = remove_unrecorded(t, now_ms, expiration_ms)
        removed = live - kept
        t.count = kept
        t.holes = 0
        t.free_hole = -1
    wide_trim(t)
    if removed or t.count != count:  # (without records, holes are compacted away too)
        lru_drop(t)  # entries moved: the eviction heap is built afresh when next needed
        release_spare_chunks(t)
        reindex_after_removal(t, &r, count, removed, tail, exact)
        t.generation += 1
    removal_end(&r)
    return removed
