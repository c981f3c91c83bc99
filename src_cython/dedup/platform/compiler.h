/* A compiler builtin the table's loops use, by name (table/expiry.pxi). Not a kernel: a bit
 * scan, nothing chosen at run time.
 *
 * Spec: none (they change no result). */
#ifndef DEDUP_COMPILER_H
#define DEDUP_COMPILER_H

/* The position of the lowest set bit of a non-zero 32-bit word (GCC and clang only, as
 * before: every compiler the project builds with has it). */
#define dedup_lowest_bit(word) ((Py_ssize_t)__builtin_ctz(word))

#endif /* DEDUP_COMPILER_H */
