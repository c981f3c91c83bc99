/* The producer-state table's sizes and index sentinels, as typed C constants (Cython's enums
 * are ints: these are uint32_t and Py_ssize_t). Declared, with what each means, in _state.pyx;
 * used by table/storage.pxi, table/index.pxi and the parts that walk the index.
 *
 * Spec: none directly (the layout is dedup's; docs/spec.md §1.1 only asks for a map). */
#ifndef DEDUP_TABLE_LIMITS_H
#define DEDUP_TABLE_LIMITS_H

#include <stdint.h>

#define DEDUP_SLAB_MIN_CHUNKS 8
#define DEDUP_GATHER_FROM 1
#define DEDUP_GROWTH_FROM 160
#define DEDUP_GROWTH_PAGES 4
#define DEDUP_INDEX_EMPTY ((uint32_t)0xFFFFFFFFu)
#define DEDUP_INDEX_DELETED ((uint32_t)0xFFFFFFFEu)
#define DEDUP_CHUNK_BYTES ((Py_ssize_t)128 * 1024)
#define DEDUP_MAX_PRODUCERS ((Py_ssize_t)2147483646)

#endif /* DEDUP_TABLE_LIMITS_H */
