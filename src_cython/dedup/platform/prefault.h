/* A large snapshot load on two cores: a loader thread runs the load while the calling thread
 * faults the load's new memory in, ahead of it (snapshot/loader.pxi, run_load; table/bulk.pxi,
 * bulk loading). A platform facility (threads, madvise), not a kernel; the mode (below) is
 * static, so each module that includes this header has its own: _snapshot's is the one used.
 * Spec: none of its own (how fast a load is, not what it does: docs/spec.md §4.4, §5.1).
 *
 * A snapshot decode writes every byte of memory the kernel has just mapped: the entries, the
 * timestamp column and the notes of 1,000,000 producers are 128 MB, and the kernel zeroes each
 * page on its first write fault. That zeroing (clear_page_erms) was 12 of a full-format
 * decode's 32.5 ms on this machine, all of it on the decoding thread. Here the calling thread
 * asks the kernel for those pages with madvise(MADV_POPULATE_WRITE), a step at a time in the
 * order the load writes them (a slice of every range per step), while a short-lived thread
 * runs the load.
 *
 * Why the caller faults and the new thread loads, not the other way round: the caller is
 * where the memory of earlier tables was freed, and the kernel keeps freed pages in per-CPU
 * lists; faulting on the other core took older pages, which this machine (a VM that reports
 * free pages to its host) gave back up to 2.5 times slower (benchmarks/RESULTS.md).
 *
 * MADV_POPULATE_WRITE faults pages in as a write would and writes nothing: a page the load has
 * written already is left as it is, so the two threads never race on content. The result is
 * the same with it, without it, or with it stopped halfway. Linux 5.14 and newer; where
 * madvise refuses (an older kernel) the faulting stops at its first call and the load faults
 * its pages itself.
 *
 * The loader thread holds a Python thread state for its whole life (PyGILState_Ensure, then
 * the GIL released), so that an exception the load raises (MemoryError growing the wide-entry
 * pool) is kept and handed to the caller, which raises it.
 *
 * One CPU (or one allowed by the affinity mask): no loader thread, since it could only take
 * turns with the caller. Mode 0: never; 1 (the default): ranges of DEDUP_PREFAULT_MIN_BYTES in
 * all and more; 2 (tests): any size; 3 (tests): any size, and every page of every range,
 * racing the load instead of keeping ahead of it, even after the load ended.
 */
#ifndef DEDUP_PREFAULT_H
#define DEDUP_PREFAULT_H

#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>
#endif

#define DEDUP_PREFAULT_RANGES 4
#define DEDUP_PREFAULT_MIN_BYTES ((size_t)16 << 20)
#define DEDUP_PREFAULT_STEP ((size_t)2 << 20) /* of the largest range: one huge page */

typedef struct {
    char *start[DEDUP_PREFAULT_RANGES];
    size_t length[DEDUP_PREFAULT_RANGES];
    int ranges;
    /* The load's progress: `done` of `total` entries (dedup_prefault_progress); `finished`
     * once the load has returned. Atomic: the two threads share them. */
    Py_ssize_t done, total;
    int finished;
    int mode;           /* dedup_prefault_mode when the load was planned */
    size_t step, steps; /* the next faulting step, of `steps` */
    int faulting;       /* steps remain and madvise has not refused */
    size_t populated;   /* bytes faulted in */
} dedup_prefault;

/* A load run on its own thread: fn(ctx) returns -1 with a Python exception set, which is kept
 * in type/value/traceback for the caller. result stays DEDUP_LOAD_NOT_RUN if the thread never
 * ran fn (CPython ends a thread that asks for the GIL while it finalizes): the caller then
 * runs the load itself. */
#define DEDUP_LOAD_NOT_RUN (-2)
typedef struct {
    int (*fn)(void *ctx);
    void *ctx;
    dedup_prefault *pf;
    int result;
    PyObject *type, *value, *traceback;
#if defined(__linux__)
    pthread_t thread;
#endif
} dedup_loader;

static int dedup_prefault_mode = 1;
/* Test hooks: loader threads started and bytes populated since the module was loaded. */
static size_t dedup_prefault_threads = 0;
static size_t dedup_prefault_bytes = 0;

/* The load has written `done` entries of `total`. */
static inline void dedup_prefault_progress(dedup_prefault *pf, Py_ssize_t done)
{
    __atomic_store_n(&pf->done, done, __ATOMIC_RELAXED);
}

#if defined(__linux__) && defined(MADV_POPULATE_WRITE)
#define DEDUP_PREFAULT_PRESENT 1

static int dedup_prefault_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        return CPU_COUNT(&set);
    return (int)sysconf(_SC_NPROCESSORS_ONLN);
}

/* Whether this load is to run on a loader thread, by the mode, the size of its ranges and
 * the CPUs; sets up the faulting steps either way. */
static inline int dedup_prefault_plan(dedup_prefault *pf)
{
    size_t total = 0, largest = 0;
    int r;
    pf->done = 0;
    pf->finished = 0;
    pf->step = 0;
    pf->populated = 0;
    pf->mode = dedup_prefault_mode;
    for (r = 0; r < pf->ranges; r++) {
        total += pf->length[r];
        if (pf->length[r] > largest)
            largest = pf->length[r];
    }
    pf->steps = (largest + DEDUP_PREFAULT_STEP - 1) / DEDUP_PREFAULT_STEP;
    pf->faulting = pf->steps > 0;
    if (pf->mode == 0 || total == 0)
        return 0;
    return pf->mode != 1 || (total >= DEDUP_PREFAULT_MIN_BYTES && dedup_prefault_cpus() >= 2);
}

/* The step that the load's next write falls in (steps: the load is done). */
static inline size_t dedup_prefault_at(dedup_prefault *pf)
{
    Py_ssize_t done = __atomic_load_n(&pf->done, __ATOMIC_RELAXED);
    if (done <= 0 || pf->total <= 0)
        return 0;
    if (done >= pf->total)
        return pf->steps;
    return (size_t)done * pf->steps / (size_t)pf->total;
}

/* Fault the next step in; 0 when there is none left to do (all done, the load finished, or
 * madvise refused). */
static int dedup_prefault_step(dedup_prefault *pf)
{
    const size_t page = 4096;
    size_t step = pf->step;
    int r;
    if (!pf->faulting)
        return 0;
    if (pf->mode != 3) {
        /* At least two steps past the load's (the step its next write falls in): pages the
         * load is about to write, it faults in itself rather than both doing so (the kernel
         * would zero a huge page for each and keep one). */
        size_t at = dedup_prefault_at(pf);
        if (step < at + 2)
            step = at + 2;
        if (__atomic_load_n(&pf->finished, __ATOMIC_RELAXED))
            step = pf->steps;
    }
    if (step >= pf->steps) {
        pf->faulting = 0;
        return 0;
    }
    for (r = 0; r < pf->ranges; r++) {
        /* Slice `step` of range r, widened to whole pages: still inside the mapping that
         * holds the range (mappings are whole pages). */
        uintptr_t from = (uintptr_t)pf->start[r] + (uintptr_t)(pf->length[r] / pf->steps * step);
        uintptr_t to = step + 1 == pf->steps
                           ? (uintptr_t)pf->start[r] + pf->length[r]
                           : (uintptr_t)pf->start[r] + pf->length[r] / pf->steps * (step + 1);
        from &= ~(uintptr_t)(page - 1);
        to = (to + page - 1) & ~(uintptr_t)(page - 1);
        if (to <= from)
            continue;
        if (madvise((void *)from, (size_t)(to - from), MADV_POPULATE_WRITE) != 0) {
            pf->faulting = 0; /* an older kernel, or no memory to spare: the load faults them */
            return 0;
        }
        pf->populated += (size_t)(to - from);
    }
    pf->step = step + 1;
    return 1;
}

static void *dedup_loader_main(void *arg)
{
    dedup_loader *loader = (dedup_loader *)arg;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyThreadState *state = PyEval_SaveThread();
    loader->result = loader->fn(loader->ctx);
    PyEval_RestoreThread(state);
    if (loader->result == -1)
        PyErr_Fetch(&loader->type, &loader->value, &loader->traceback);
    PyGILState_Release(gil);
    __atomic_store_n(&loader->pf->finished, 1, __ATOMIC_RELAXED);
    return NULL;
}

/* Start the load on its own thread; 1 if it runs (dedup_loader_join after, always), 0 if the
 * thread could not be made (the caller runs the load itself). */
static inline int dedup_loader_start(dedup_loader *loader)
{
    pthread_attr_t attr;
    sigset_t all, before;
    int started, blocked;
    loader->result = DEDUP_LOAD_NOT_RUN;
    loader->type = loader->value = loader->traceback = NULL;
    if (pthread_attr_init(&attr) != 0)
        return 0;
    /* The loads use little stack: no recursion, a few windows of int64 on it. */
    (void)pthread_attr_setstacksize(&attr, (size_t)256 << 10);
    /* The thread inherits a mask that blocks every signal: signals stay with the threads
     * that handle them (Python's, in the main thread). */
    (void)sigfillset(&all);
    blocked = pthread_sigmask(SIG_SETMASK, &all, &before) == 0;
    started = pthread_create(&loader->thread, &attr, dedup_loader_main, loader) == 0;
    if (blocked)
        (void)pthread_sigmask(SIG_SETMASK, &before, NULL);
    (void)pthread_attr_destroy(&attr);
    if (started)
        __atomic_fetch_add(&dedup_prefault_threads, 1, __ATOMIC_RELAXED);
    return started;
}

/* Wait for the load's thread. */
static inline void dedup_loader_join(dedup_loader *loader)
{
    (void)pthread_join(loader->thread, NULL);
}

#else
#define DEDUP_PREFAULT_PRESENT 0

static inline int dedup_prefault_plan(dedup_prefault *pf)
{
    (void)pf;
    return 0;
}

static inline int dedup_prefault_step(dedup_prefault *pf)
{
    (void)pf;
    return 0;
}

static inline int dedup_loader_start(dedup_loader *loader)
{
    (void)loader;
    return 0;
}

static inline void dedup_loader_join(dedup_loader *loader)
{
    (void)loader;
}
#endif

/* Count what a load's faulting did (test hook), once the load is over. */
static inline void dedup_prefault_account(dedup_prefault *pf)
{
    __atomic_fetch_add(&dedup_prefault_bytes, pf->populated, __ATOMIC_RELAXED);
}

/* Mode 0 to 3 (above); the mode in use after (0 where no loader thread can run). */
static inline int dedup_prefault_use(int mode)
{
    dedup_prefault_mode = DEDUP_PREFAULT_PRESENT && mode >= 0 && mode <= 3 ? mode : 0;
    return dedup_prefault_mode;
}

#endif /* DEDUP_PREFAULT_H */
