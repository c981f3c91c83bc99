/* Prefault: a bulk load's new memory faulted in on another core, ahead of the loop that
 * writes it (_state.pyx, bulk loading).
 *
 * A snapshot decode writes every byte of memory the kernel has just mapped: the entries, the
 * timestamp column and the notes of 1,000,000 producers are 128 MB, and the kernel zeroes each
 * page on its first write fault. That zeroing (clear_page_erms) was 12 of a full-format
 * decode's 32.5 ms on this machine, all of it on the decoding thread. Here a short-lived
 * thread asks the kernel for those pages first, with madvise(MADV_POPULATE_WRITE), in the
 * order the loop writes them (a slice of every range per step), while the loop decodes; the
 * loop then mostly writes pages that are there already.
 *
 * MADV_POPULATE_WRITE faults pages in as a write would and writes nothing: a page the loop
 * has written already is left as it is, so the two threads never race on content. The helper
 * only makes first writes cheaper; the result is the same with it, without it, or with it
 * stopped halfway. Linux 5.14 and newer; where madvise refuses (an older kernel) the helper
 * stops at its first call and the loop faults its pages itself, as without it.
 *
 * One CPU (or one allowed by the affinity mask): no helper, since it could only take turns
 * with the loop. Mode 0: never; 1 (the default): ranges of DEDUP_PREFAULT_MIN_BYTES in all and
 * more; 2 (tests): any size; 3 (tests): any size, and every page of every range, racing the
 * loop instead of keeping ahead of it, and not stopped when the loop ends (the join waits).
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
    /* The loop's progress, for the helper to keep ahead of it: `done` of `total` entries
     * (total 0: not known), published now and then by the loop (dedup_prefault_progress). A
     * stale value costs at most pages both fault in. */
    Py_ssize_t done, total;
    int mode;    /* dedup_prefault_mode when the helper started */
    int running; /* a thread was started and is not joined yet */
    int stop;    /* set by the owner (atomically): the helper ends at its next step */
    size_t populated; /* bytes the helper had the kernel populate (read after the join) */
#if defined(__linux__)
    pthread_t thread;
#endif
} dedup_prefault;

static int dedup_prefault_mode = 1;
/* Test hooks: helpers started and bytes populated since the module was loaded. */
static size_t dedup_prefault_threads = 0;
static size_t dedup_prefault_bytes = 0;

#if defined(__linux__) && defined(MADV_POPULATE_WRITE)
#define DEDUP_PREFAULT_PRESENT 1

static int dedup_prefault_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        return CPU_COUNT(&set);
    return (int)sysconf(_SC_NPROCESSORS_ONLN);
}

/* The step of `steps` that the loop's next write falls in (steps: the loop is done). */
static inline size_t dedup_prefault_at(dedup_prefault *pf, size_t steps)
{
    Py_ssize_t done = __atomic_load_n(&pf->done, __ATOMIC_RELAXED);
    if (done <= 0)
        return 0;
    if (done >= pf->total)
        return steps;
    return (size_t)done * steps / (size_t)pf->total;
}

static void *dedup_prefault_run(void *arg)
{
    dedup_prefault *pf = (dedup_prefault *)arg;
    const size_t page = 4096;
    size_t largest = 0, steps, step;
    int r;
    for (r = 0; r < pf->ranges; r++)
        if (pf->length[r] > largest)
            largest = pf->length[r];
    steps = (largest + DEDUP_PREFAULT_STEP - 1) / DEDUP_PREFAULT_STEP;
    for (step = 0; step < steps; step++) {
        if (pf->total > 0 && pf->mode != 3) {
            /* At least two steps past the loop's (the step its next write falls in): pages
             * the loop is about to write, it faults in itself rather than both doing so (the
             * kernel would zero a huge page for each and keep one). This matters when the
             * helper runs late (the other core busy); otherwise it stays ahead by itself. */
            size_t at = dedup_prefault_at(pf, steps);
            if (step < at + 2)
                step = at + 2;
            if (step >= steps)
                break;
        }
        for (r = 0; r < pf->ranges; r++) {
            /* Slice `step` of range r, widened to whole pages: still inside the mapping that
             * holds the range (mappings are whole pages). */
            uintptr_t from = (uintptr_t)pf->start[r] + (uintptr_t)(pf->length[r] / steps * step);
            uintptr_t to = step + 1 == steps ? (uintptr_t)pf->start[r] + pf->length[r]
                                              : (uintptr_t)pf->start[r] + pf->length[r] / steps * (step + 1);
            from &= ~(uintptr_t)(page - 1);
            to = (to + page - 1) & ~(uintptr_t)(page - 1);
            if (pf->mode != 3 && __atomic_load_n(&pf->stop, __ATOMIC_RELAXED))
                return NULL;
            if (to <= from)
                continue;
            if (madvise((void *)from, (size_t)(to - from), MADV_POPULATE_WRITE) != 0)
                return NULL; /* an older kernel, or no memory to spare: the loop faults them */
            pf->populated += (size_t)(to - from);
        }
    }
    return NULL;
}

/* Start the helper over the ranges set in *pf (each inside one private anonymous mapping of
 * the caller's); 1 if it runs (dedup_prefault_join after, always). */
static inline int dedup_prefault_start(dedup_prefault *pf)
{
    pthread_attr_t attr;
    sigset_t all, before;
    size_t total = 0;
    int r, started, blocked;
    pf->running = 0;
    pf->stop = 0;
    pf->populated = 0;
    pf->done = 0;
    pf->mode = dedup_prefault_mode;
    for (r = 0; r < pf->ranges; r++)
        total += pf->length[r];
    if (pf->mode == 0 || total == 0)
        return 0;
    if (pf->mode == 1 && (total < DEDUP_PREFAULT_MIN_BYTES || dedup_prefault_cpus() < 2))
        return 0;
    if (pthread_attr_init(&attr) != 0)
        return 0;
    (void)pthread_attr_setstacksize(&attr, (size_t)64 << 10);
    /* The helper inherits a mask that blocks every signal: signals stay with the threads
     * that handle them (Python's, in the main thread). */
    (void)sigfillset(&all);
    blocked = pthread_sigmask(SIG_SETMASK, &all, &before) == 0;
    started = pthread_create(&pf->thread, &attr, dedup_prefault_run, pf) == 0;
    if (blocked)
        (void)pthread_sigmask(SIG_SETMASK, &before, NULL);
    (void)pthread_attr_destroy(&attr);
    if (started) {
        pf->running = 1;
        __atomic_fetch_add(&dedup_prefault_threads, 1, __ATOMIC_RELAXED);
    }
    return started;
}

/* The loop has written `done` entries of `total` (a relaxed atomic store: the helper reads it
 * at each step, and nothing else depends on it). */
static inline void dedup_prefault_progress(dedup_prefault *pf, Py_ssize_t done)
{
    __atomic_store_n(&pf->done, done, __ATOMIC_RELAXED);
}

/* Ask the helper to end at its next step, without waiting for it (on a busy machine it may
 * not run again for a while): the ranges must stay mapped until dedup_prefault_join. */
static inline void dedup_prefault_stop(dedup_prefault *pf)
{
    __atomic_store_n(&pf->stop, 1, __ATOMIC_RELAXED);
}

/* Stop the helper (at its next step) and wait for it; nothing if none runs. */
static inline void dedup_prefault_join(dedup_prefault *pf)
{
    if (!pf->running)
        return;
    dedup_prefault_stop(pf);
    (void)pthread_join(pf->thread, NULL);
    pf->running = 0;
    __atomic_fetch_add(&dedup_prefault_bytes, pf->populated, __ATOMIC_RELAXED);
}

#else
#define DEDUP_PREFAULT_PRESENT 0

static inline int dedup_prefault_start(dedup_prefault *pf)
{
    pf->running = 0;
    return 0;
}

static inline void dedup_prefault_progress(dedup_prefault *pf, Py_ssize_t done)
{
    (void)pf;
    (void)done;
}

static inline void dedup_prefault_stop(dedup_prefault *pf)
{
    (void)pf;
}

static inline void dedup_prefault_join(dedup_prefault *pf)
{
    (void)pf;
}
#endif

/* Mode 0 to 3 (above); the mode in use after (0 where the helper cannot run). */
static inline int dedup_prefault_use(int mode)
{
    dedup_prefault_mode = DEDUP_PREFAULT_PRESENT && mode >= 0 && mode <= 3 ? mode : 0;
    return dedup_prefault_mode;
}

#endif /* DEDUP_PREFAULT_H */
