# Module dedup._testing: the test hooks of the compiled core, kept out of the public modules
# (dedup._state, dedup._snapshot, dedup._records) and their stubs. Private, for tests, tools/
# and the benchmarks only: nothing here is API, and any of it may change with the tests.
#
# What the hooks do: expose C-level helpers to compare with the twin (the sequence arithmetic,
# the bulk loader, a recount of open transactions), report and force the paths of the vector
# kernels (kernels/*.h; a whole process's: DEDUP_DISABLE_CPU_FEATURES, platform/cpu.h) and
# make an allocation fail. A header's mode is a static variable in every module that includes
# the header, so a hook that flips one calls a small cdef function that the module owning that
# copy exports in its .pxd (no module-level C variable is reached across modules). The inline
# helpers of _state.pxd are compiled into this module too.
#
# Spec: docs/spec.md §8.4 (incrementSequence, decrementSequence, inSequence), §6 (the count of
# ongoing transactions that remove_expired trusts), §4.4 step 3 (the bulk load of a snapshot's
# entries) and §8.5 (CRC-32C in each of kernels/crc32c.h's modes).

from libc.stdint cimport int32_t, int64_t, uint32_t
from libc.string cimport memset

from dedup._records cimport crc32c_forced as records_crc32c_forced
from dedup._records cimport readable_bytes
from dedup._snapshot cimport crc32c_forced as snapshot_crc32c_forced
from dedup._snapshot cimport window5_applies, window5_vectors_in_use, window5_vectors_use
from dedup._state cimport (
    NO_TXN,
    BulkLoad,
    EntryHeader,
    ProducerStateTable,
    Table,
    bulk_append,
    bulk_begin,
    bulk_finish,
    bulk_free,
    decrement_sequence,
    entry_at,
    entry_init,
    expiry_vectors_in_use,
    in_sequence,
    increment_sequence,
    wide_growth_failure_after,
)

import numpy as np

from dedup import _args


# --- _state: the table --------------------------------------------------------------------

def increment_sequence_c(int32_t sequence, int32_t increment):
    """The compiled incrementSequence (spec §8.4)."""
    return increment_sequence(sequence, increment)


def decrement_sequence_c(int32_t sequence, int32_t decrement):
    """The compiled decrementSequence (spec §8.4)."""
    return decrement_sequence(sequence, decrement)


def in_sequence_c(int32_t last_sequence, int32_t next_sequence):
    """The compiled inSequence (spec §8.4)."""
    return in_sequence(last_sequence, next_sequence)


def open_transactions_c(ProducerStateTable table not None):
    """(the table's count of entries with an ongoing transaction, a recount of them):
    remove_expired reads no entry when the count is 0, so it must be exact."""
    cdef Table* t = &table.t
    cdef Py_ssize_t i, recount = 0
    for i in range(t.count):
        recount += (<EntryHeader*>entry_at(t, i)).current_txn_first_offset != NO_TXN
    return t.open_txns, recount


def bulk_append_c(ProducerStateTable table not None, producer_ids):
    """The snapshot loaders' bulk path (bulk_begin, bulk_append, bulk_finish): an entry
    without batches for each id, as an insert would make it. Returns (repeat, repeated) as
    bulk_finish; with a repeat the table must be discarded."""
    table._check_idle()
    cdef const int64_t[::1] ids = np.ascontiguousarray(producer_ids, dtype=np.int64)
    cdef Table* t = &table.t
    cdef BulkLoad bulk
    cdef Py_ssize_t k, repeat = -1, repeated = -1
    memset(&bulk, 0, sizeof(BulkLoad))
    try:
        bulk_begin(t, &bulk, ids.shape[0])
        for k in range(ids.shape[0]):
            bulk_append(t, &bulk, ids[k])
            entry_init(t, t.count - 1)
        bulk_finish(t, &bulk, &repeat, &repeated)
    finally:
        bulk_free(&bulk)
        t.generation += 1
    return repeat, repeated


def kernels():
    """The kernels each run-time dispatcher of kernels/*.h has chosen in this process (from
    the CPU and DEDUP_DISABLE_CPU_FEATURES, platform/cpu.h): {"crc32c": "table" or
    "instruction" (dedup._records and dedup._snapshot, each its own copy), "snapshot_w5",
    "expiry_avx2": bools}. Benchmarks print it with every run."""
    cdef int records_mode, snapshot_mode
    cdef uint32_t value = 0
    records_crc32c_forced(1, value, NULL, 0, &records_mode)
    snapshot_crc32c_forced(1, value, NULL, 0, &snapshot_mode)
    names = ("table", "instruction")
    return {
        "crc32c": names[records_mode] if records_mode == snapshot_mode else (names[records_mode], names[snapshot_mode]),
        "snapshot_w5": window5_vectors_in_use() == 1,
        "expiry_avx2": expiry_vectors_in_use() == 1,
    }


def fail_wide_growth(Py_ssize_t after):
    """The wide-entry pool's growth after `after` more (0: the next one) raises MemoryError as
    if the allocation had failed; -1: none does. For the error paths of loads (a snapshot
    decode raises it). Set it while no load runs."""
    wide_growth_failure_after(after)


# --- _snapshot: the codec -----------------------------------------------------------------

def crc32c_in_mode(data, crc, int mode):
    """(the mode used, the CRC-32C of ``data`` from ``crc``) through dedup._snapshot's copy of
    kernels/crc32c.h in ``mode`` (0 the table, 1 the CRC instruction in three streams), or
    the best mode below it that the CPU has; then back to the mode chosen at import."""
    if not 0 <= mode <= 1:
        raise ValueError(f"mode must be 0 or 1, got {mode}")
    cdef const unsigned char[::1] view = readable_bytes(data, "data")
    cdef uint32_t value = <uint32_t>crc
    cdef int used
    value = snapshot_crc32c_forced(mode, value, &view[0] if view.shape[0] else NULL, view.shape[0], &used)
    return used, value


def use_window5_vectors(bint wanted):
    """Window 5's slots through kernels/snapshot_w5.h (where the CPU can) or the scalar loops
    only; returns whether the vectors are in use now."""
    return window5_vectors_use(wanted) == 1


def window5_vectors_apply(ProducerStateTable table not None):
    """Whether the table's snapshots go through kernels/snapshot_w5.h (window 5, its ring
    where the header expects it, the vectors in use)."""
    return window5_applies(&table.t)


# --- _records: batches --------------------------------------------------------------------

def crc32c_software(data, crc=0):
    """dedup._records.crc32c() with the table-driven fallback forced, through that module's
    copy of kernels/crc32c.h (to check it against the CPU's)."""
    cdef const unsigned char[::1] view = readable_bytes(data, "data")
    cdef uint32_t value = _args.integer("crc", crc, 0, 0xFFFFFFFF, "a uint32")
    cdef int used
    return records_crc32c_forced(0, value, &view[0] if view.shape[0] else NULL, view.shape[0], &used)
