/* A Python int read from its digits without a call (_state.pyx, as_int64: the
 * arguments of check() and append()). Not a kernel: CPython's int layout, read per version.
 *
 * Spec: none directly; it only speeds up reading the ids, sequences, offsets and timestamps
 * whose ranges docs/spec.md §1.2 and §8.1 give (dedup._args checks them either way). */
#ifndef DEDUP_SMALL_LONG_H
#define DEDUP_SMALL_LONG_H

#include <Python.h>

/* An exact int of at most two 30-bit digits (|v| < 2^60: ids, sequences, offsets and
 * millisecond timestamps) read from its digits, without a call; 0 for anything else,
 * which then takes PyLong_AsLongLongAndOverflow (always, in a build with -DDEDUP_NO_SMALL_LONG:
 * benchmarks/bar.py measures the shortcut so). */
static inline int dedup_small_long(PyObject *o, long long *out)
{
#if defined(DEDUP_NO_SMALL_LONG)
    (void)o; (void)out;
    return 0;
#elif PY_VERSION_HEX >= 0x030C0000
    if (PyUnstable_Long_IsCompact((PyLongObject *)o)) {
        *out = (long long)PyUnstable_Long_CompactValue((PyLongObject *)o);
        return 1;
    }
    return 0;
#elif PYLONG_BITS_IN_DIGIT == 30 && !defined(PYPY_VERSION)
    const digit *d = ((PyLongObject *)o)->ob_digit;
    switch (Py_SIZE(o)) {
    case 0: *out = 0; return 1;
    case 1: *out = (long long)d[0]; return 1;
    case -1: *out = -(long long)d[0]; return 1;
    case 2: *out = (long long)d[0] | ((long long)d[1] << 30); return 1;
    case -2: *out = -((long long)d[0] | ((long long)d[1] << 30)); return 1;
    default: return 0;
    }
#else
    (void)o; (void)out;
    return 0;
#endif
}

#endif /* DEDUP_SMALL_LONG_H */
