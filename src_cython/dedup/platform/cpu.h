/* Which instruction sets the kernels may use: the one question every run-time dispatcher in
 * kernels/ asks (dedup_cpu_has), answered from the CPU and from one process-wide switch,
 * DEDUP_DISABLE_CPU_FEATURES, read once (as numpy's NPY_DISABLE_CPU_FEATURES):
 *
 *   DEDUP_DISABLE_CPU_FEATURES="avx512f avx2 sse4.2" python ...
 *
 * A feature named there is treated as absent, so every kernel that needs it takes its scalar
 * (or narrower) path; names are separated by spaces or commas, unknown names are ignored.
 * The names are GCC's (__builtin_cpu_supports), those the kernels ask for: sse4.2, popcnt,
 * avx2, avx512f, avx512vl, avx512bw, avx512vbmi on x86-64; crc32 on ARMv8. Every AVX-512 kernel
 * needs avx512f, so "avx512f" alone forces all of them off (a CPU without AVX-512).
 * A platform facility, not a kernel; static, so each module that includes it reads the
 * variable once for itself (all read the same environment).
 *
 * Spec: none (which instructions compute a result, never the result). */
#ifndef DEDUP_CPU_H
#define DEDUP_CPU_H

#include <stdlib.h>
#include <string.h>
#if defined(__aarch64__) && defined(__GNUC__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#endif

#define DEDUP_CPU_DISABLE_VARIABLE "DEDUP_DISABLE_CPU_FEATURES"

/* The names dedup_cpu_has knows, in the order of their bits in dedup_cpu_disabled. */
static const char *const dedup_cpu_names[] = {"sse4.2", "popcnt", "avx2", "avx512f", "avx512vl",
                                              "avx512bw", "avx512vbmi", "crc32"};
#define DEDUP_CPU_NAMES ((int)(sizeof(dedup_cpu_names) / sizeof(dedup_cpu_names[0])))

/* Bit i: dedup_cpu_names[i] is disabled; -1 before the variable is read. Every thread that
 * reads it computes the same value, so the race of two first calls is benign. */
static int dedup_cpu_disabled = -1;

static int dedup_cpu_index(const char *name, size_t length)
{
    int i;
    for (i = 0; i < DEDUP_CPU_NAMES; i++)
        if (strlen(dedup_cpu_names[i]) == length && memcmp(dedup_cpu_names[i], name, length) == 0)
            return i;
    return -1;
}

/* The features DEDUP_DISABLE_CPU_FEATURES names, as bits (read once). */
static int dedup_cpu_disabled_mask(void)
{
    if (dedup_cpu_disabled < 0) {
        const char *p = getenv(DEDUP_CPU_DISABLE_VARIABLE);
        int mask = 0;
        while (p != NULL && *p) {
            size_t length = strcspn(p, " ,\t");
            int i = dedup_cpu_index(p, length);
            if (i >= 0)
                mask |= 1 << i;
            p += length;
            p += strspn(p, " ,\t");
        }
        dedup_cpu_disabled = mask;
    }
    return dedup_cpu_disabled;
}

/* 1 if the CPU has the feature (a name above) and the switch does not disable it; else 0. */
static int dedup_cpu_has(const char *name)
{
    int i = dedup_cpu_index(name, strlen(name));
    if (i < 0 || (dedup_cpu_disabled_mask() >> i) & 1)
        return 0;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    switch (i) {
    case 0: return __builtin_cpu_supports("sse4.2") != 0;
    case 1: return __builtin_cpu_supports("popcnt") != 0;
    case 2: return __builtin_cpu_supports("avx2") != 0;
    case 3: return __builtin_cpu_supports("avx512f") != 0;
    case 4: return __builtin_cpu_supports("avx512vl") != 0;
    case 5: return __builtin_cpu_supports("avx512bw") != 0;
    case 6: return __builtin_cpu_supports("avx512vbmi") != 0;
    default: return 0;
    }
#elif defined(__aarch64__) && defined(__GNUC__) && defined(__linux__)
    return i == 7 && (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
#else
    return 0;
#endif
}

#endif /* DEDUP_CPU_H */
