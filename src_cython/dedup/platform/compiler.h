/* Compiler builtins the table's loops use, by name (table/columns.pxi, table/expiry.pxi).
 * Not kernels: a branch hint and a bit scan, nothing chosen at run time.
 *
 * Spec: none (they change no result). */
#ifndef DEDUP_COMPILER_H
#define DEDUP_COMPILER_H

/* The condition, hinted as usually true (the client fast path of append_many); no hint in a
 * build with -DDEDUP_NO_LIKELY (benchmarks/bar.py measures the hint so). */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(DEDUP_NO_LIKELY)
#define dedup_likely(x) __builtin_expect(!!(x), 1)
#else
#define dedup_likely(x) (x)
#endif

/* The position of the lowest set bit of a non-zero 32-bit word (GCC and clang only, as
 * before: every compiler the project builds with has it). */
#define dedup_lowest_bit(word) ((Py_ssize_t)__builtin_ctz(word))

#endif /* DEDUP_COMPILER_H */
