/* Cache prefetch hints for the table's loops (table/columns.pxi, table/expiry.pxi). A platform facility, not a kernel: one compiler builtin, or nothing.
 *
 * Spec: none (a hint changes no result). */
#ifndef DEDUP_PREFETCH_H
#define DEDUP_PREFETCH_H

/* Start loading the cache line at p, to be read (dedup_prefetch) or written
 * (dedup_prefetch_write) soon; kept in every cache level. A hint only: it never faults, on an
 * address outside any mapping included, and compilers without the builtin drop it (as does a
 * build with -DDEDUP_NO_PREFETCH: benchmarks/bar.py measures the hints that way). */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(DEDUP_NO_PREFETCH)
#define dedup_prefetch(p) __builtin_prefetch((const void *)(p), 0, 3)
#define dedup_prefetch_write(p) __builtin_prefetch((const void *)(p), 1, 3)
#else
#define dedup_prefetch(p) ((void)(p))
#define dedup_prefetch_write(p) ((void)(p))
#endif

#endif /* DEDUP_PREFETCH_H */
