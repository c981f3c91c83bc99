/* Slabs: the large blocks of a producer-state table (table/storage.pxi): 2 MiB-aligned
 * anonymous mappings advised huge pages on Linux, PyMem_RawMalloc elsewhere, traced by
 * tracemalloc either way. A platform facility (mmap, madvise), not a kernel.
 *
 * Spec: none (where the entries of docs/spec.md §1.1-1.2 live, not what they hold). */
#ifndef DEDUP_SLAB_H
#define DEDUP_SLAB_H

#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
#endif

/* Mapped slabs where the OS has anonymous mappings; PyMem_RawMalloc elsewhere, or in a build
 * with -DDEDUP_NO_SLAB (benchmarks/bar.py measures the slabs that way). */
#if defined(__linux__) && defined(MAP_ANONYMOUS) && !defined(DEDUP_NO_SLAB)
#define DEDUP_SLAB_MAPPED 1
#else
#define DEDUP_SLAB_MAPPED 0
#endif

/* Slabs are traced by tracemalloc under this domain (as numpy traces its arrays' data), so
 * tracemalloc.get_traced_memory() still sees all of a table's memory. */
#define DEDUP_TRACE_DOMAIN 0x64656475u /* "dedu" */

/* The length dedup_slab_alloc maps for `size` bytes (what the block holds in memory). */
static size_t dedup_slab_length(size_t size, int whole_huge_pages)
{
#if DEDUP_SLAB_MAPPED
    const size_t unit = whole_huge_pages ? ((size_t)2 << 20) : (size_t)4096u;
    return (size + unit - 1) & ~(unit - 1);
#else
    (void)whole_huge_pages;
    return size;
#endif
}

/* A block of at least `size` bytes, *mapped set to what dedup_slab_free must be given; NULL
 * if none can be had.
 *
 * On Linux: a private anonymous mapping of `size` rounded up to 4 KiB (to 2 MiB with
 * whole_huge_pages: all of it can then be huge pages) whose start is 2 MiB aligned, advised
 * transparent huge pages. malloc's large blocks start 16 bytes into a
 * mapping the kernel places anywhere, so only some of their 2 MiB ranges can be huge pages;
 * here every whole 2 MiB of the block can be. Huge pages make the table's large blocks
 * cheaper to fault in, to walk (TLB) and to give back: unmapping 2 MiB pages costs the
 * kernel a fraction of what 4 KiB pages do (remove_expired freeing a table's memory after
 * mass expiry). Elsewhere: PyMem_RawMalloc. */
static void *dedup_slab_alloc(size_t size, int whole_huge_pages, size_t *mapped)
{
#if DEDUP_SLAB_MAPPED
    const size_t huge = (size_t)2 << 20;
    size_t length = dedup_slab_length(size, whole_huge_pages);
    char *raw, *start;
    if (length < size || length == 0 || length > SIZE_MAX - huge)
        return NULL;
    raw = (char *)mmap(NULL, length + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    start = (char *)(((uintptr_t)raw + huge - 1) & ~(uintptr_t)(huge - 1));
    if (start > raw)
        (void)munmap(raw, (size_t)(start - raw));
    if (raw + length + huge > start + length)
        (void)munmap(start + length, (size_t)(raw + length + huge - (start + length)));
#if defined(MADV_HUGEPAGE)
    (void)madvise(start, length, MADV_HUGEPAGE);
#endif
    (void)PyTraceMalloc_Track(DEDUP_TRACE_DOMAIN, (uintptr_t)start, length);
    *mapped = length;
    return start;
#else
    (void)whole_huge_pages;
    *mapped = size;
    return PyMem_RawMalloc(size ? size : 1);
#endif
}

/* `count` blocks, each `size` bytes rounded up to 4 KiB (*mapped: that length), one after the
 * other in one mapping advised huge pages like a slab's: each is traced and freed by
 * dedup_slab_free on its own (unmapping part of a mapping), so a table gives them back one
 * by one as it gives back single chunks. NULL if none can be had, and
 * always where there are no mappings (a PyMem_RawMalloc block cannot be freed in parts). */
static void *dedup_page_run_alloc(size_t size, size_t count, size_t *mapped)
{
#if DEDUP_SLAB_MAPPED
    size_t unit = dedup_slab_length(size, 0), k, ignored;
    char *start;
    if (unit < size || unit == 0 || count == 0 || count > (SIZE_MAX >> 1) / unit)
        return NULL;
    start = (char *)dedup_slab_alloc(unit * count, 0, &ignored);
    if (start == NULL)
        return NULL;
    (void)PyTraceMalloc_Untrack(DEDUP_TRACE_DOMAIN, (uintptr_t)start);
    for (k = 0; k < count; k++)
        (void)PyTraceMalloc_Track(DEDUP_TRACE_DOMAIN, (uintptr_t)(start + k * unit), unit);
    *mapped = unit;
    return start;
#else
    (void)size;
    (void)count;
    (void)mapped;
    return NULL;
#endif
}

/* Give back `count` blocks of `unit` bytes (as *mapped said) of dedup_page_run_alloc that lie
 * one after the other from p, in one unmapping: unmapping them one by one splits every huge
 * page of the run on the way (remove_expired of every producer of a 1,000,000-producer table
 * took 2.3 ms instead of 1.3). */
static void dedup_page_run_free(char *p, size_t unit, size_t count)
{
#if DEDUP_SLAB_MAPPED
    size_t k;
    for (k = 0; k < count; k++)
        (void)PyTraceMalloc_Untrack(DEDUP_TRACE_DOMAIN, (uintptr_t)(p + k * unit));
    if (count)
        (void)munmap(p, unit * count);
#else
    (void)p; /* there are no runs without mappings */
    (void)unit;
    (void)count;
#endif
}

/* Give back a block of dedup_slab_alloc or dedup_page_run_alloc (NULL: nothing). */
static void dedup_slab_free(void *p, size_t mapped)
{
    if (p == NULL)
        return;
#if DEDUP_SLAB_MAPPED
    (void)PyTraceMalloc_Untrack(DEDUP_TRACE_DOMAIN, (uintptr_t)p);
    (void)munmap(p, mapped);
#else
    (void)mapped;
    PyMem_RawFree(p);
#endif
}

/* Give the free pages inside the heap back to the system: blocks freed below its top stay
 * resident otherwise (glibc trims only the top). glibc's malloc_trim; nothing elsewhere. */
static void dedup_heap_trim(void)
{
#if defined(__GLIBC__)
    (void)malloc_trim(0);
#endif
}

#endif /* DEDUP_SLAB_H */
