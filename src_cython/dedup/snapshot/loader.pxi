# A large snapshot load on two cores (part of _snapshot.pyx, which includes it): the load of
# decode_kafka or decode_full runs on a loader thread while the calling thread faults the new
# table's memory in ahead of it (platform/prefault.h), from 16 MB on with two CPUs; otherwise
# on the calling thread. The table is the same either way.
#
# Spec: none of its own (how fast, not what: docs/spec.md §4.4 and §5.1 define the load).

# --- large loads on two cores (platform/prefault.h) ---------------------------------------

cdef extern from "Python.h":
    ctypedef struct PyInterpreterState:
        pass
    PyInterpreterState* PyInterpreterState_Get()
    PyInterpreterState* PyInterpreterState_Main()


cdef extern from "platform/prefault.h":
    ctypedef struct dedup_prefault:
        pass
    ctypedef struct dedup_loader:
        int (*fn)(void* ctx) noexcept nogil
        void* ctx
        dedup_prefault* pf
        int result
        PyObject* type
        PyObject* value
        PyObject* traceback
    int dedup_prefault_plan(dedup_prefault* pf) noexcept nogil
    int dedup_prefault_step(dedup_prefault* pf) noexcept nogil
    void dedup_prefault_account(dedup_prefault* pf) noexcept nogil
    int dedup_loader_start(dedup_loader* loader) noexcept nogil
    int DEDUP_LOAD_NOT_RUN
    void dedup_loader_join(dedup_loader* loader) noexcept nogil
    int dedup_prefault_use(int mode) noexcept nogil
    size_t dedup_prefault_threads
    size_t dedup_prefault_bytes


ctypedef struct LoadCall:
    Table* t
    const unsigned char* data
    Py_ssize_t size
    const Layout* layout
    BulkLoad* bulk
    Problem* p
    bint full
    bint threads                       # a loader thread may run it (the main interpreter)
    int kind


cdef int load_call(void* ctx) except -1 nogil:
    """The load of decode_full or decode_kafka, as run_load hands it to the loader thread:
    the problem kind in call.kind (the load ends with bulk_finish)."""
    cdef LoadCall* call = <LoadCall*>ctx
    if call.full:
        call.kind = full_load(call.t, call.data, call.size, call.layout, call.bulk, call.p)
    else:
        call.kind = kafka_load(call.t, call.data, call.size, call.layout, call.bulk, call.p)
    return 0


cdef int run_load(LoadCall* call) except -1 nogil:
    """The load of a bulk_begin'd table, on a loader thread while this thread faults the new
    memory in ahead of it when platform/prefault.h's plan says so (a large load, two CPUs) and the
    caller runs in the main interpreter (the thread takes its Python thread state with
    PyGILState_Ensure, which knows no other), else here. The table is the same either way;
    an exception of the load is raised here."""
    cdef dedup_loader loader
    cdef dedup_prefault* pf = <dedup_prefault*>&call.bulk.prefault
    cdef int planned = dedup_prefault_plan(pf)
    # load_call through a pointer without Cython's exception check: on -1 the loader thread
    # fetches the exception itself (dedup_loader_main) and it is raised here.
    loader.fn = <int (*)(void*) noexcept nogil>load_call
    loader.ctx = call
    loader.pf = pf
    if not (call.threads and planned and dedup_loader_start(&loader)):
        return load_call(call)
    while dedup_prefault_step(pf):
        pass
    dedup_loader_join(&loader)
    dedup_prefault_account(pf)
    if loader.result == DEDUP_LOAD_NOT_RUN:
        return load_call(call)
    if loader.result == -1:
        with gil:
            PyErr_Restore(loader.type, loader.value, loader.traceback)
        return -1
    return 0
