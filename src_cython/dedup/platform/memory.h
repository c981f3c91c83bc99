/* Memory hints shared by the compiled modules: transparent huge pages for a large new block
 * (the snapshot encoders' output, _snapshot.pyx). A platform facility (Linux madvise), not a
 * kernel.
 *
 * Spec: none (a hint changes no result). */
#ifndef DEDUP_MEMORY_H
#define DEDUP_MEMORY_H

#include <stddef.h>
#include <stdint.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

/* Transparent huge pages for a large new block, asked for before it is first written (as
 * numpy does for its arrays): the kernel then faults it in 2 MiB at a time instead of 4 KiB,
 * about 4x faster for a 150 MB table or snapshot here. Only a hint: ignored where THP is off
 * or unknown, and any error is ignored too; blocks under 4 MiB are left alone. A build with
 * -DDEDUP_NO_HUGE_PAGE_HINT leaves every block alone (benchmarks/bar.py measures it so). */
static void dedup_advise_huge_pages(void *p, size_t size)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE) && !defined(DEDUP_NO_HUGE_PAGE_HINT)
    size_t offset = (size_t)((4096u - (uintptr_t)p % 4096u) % 4096u);
    if (size >= ((size_t)4 << 20) && size > offset)
        (void)madvise((char *)p + offset, (size - offset) & ~(size_t)4095u, MADV_HUGEPAGE);
#else
    (void)p;
    (void)size;
#endif
}

#endif /* DEDUP_MEMORY_H */
