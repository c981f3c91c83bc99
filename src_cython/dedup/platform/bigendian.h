/* Big-endian loads and stores at any alignment: Kafka's batch headers and snapshot files
 * are big-endian with fixed widths (docs/spec.md §4.2, §8.1). memcpy keeps them free of
 * alignment and aliasing traps; the compiler turns each into one load (or store) and a byte
 * swap. A platform facility (byte order), not a kernel: nothing is chosen at run time. */
#ifndef DEDUP_BIGENDIAN_H
#define DEDUP_BIGENDIAN_H

#include <stdint.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define DEDUP_BE16(x) (x)
#define DEDUP_BE32(x) (x)
#define DEDUP_BE64(x) (x)
#else
#define DEDUP_BE16(x) __builtin_bswap16(x)
#define DEDUP_BE32(x) __builtin_bswap32(x)
#define DEDUP_BE64(x) __builtin_bswap64(x)
#endif

static inline uint16_t dedup_load_be16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return DEDUP_BE16(v); }
static inline uint32_t dedup_load_be32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return DEDUP_BE32(v); }
static inline uint64_t dedup_load_be64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return DEDUP_BE64(v); }
static inline void dedup_store_be16(unsigned char *p, uint16_t v) { v = DEDUP_BE16(v); memcpy(p, &v, 2); }
static inline void dedup_store_be32(unsigned char *p, uint32_t v) { v = DEDUP_BE32(v); memcpy(p, &v, 4); }
static inline void dedup_store_be64(unsigned char *p, uint64_t v) { v = DEDUP_BE64(v); memcpy(p, &v, 8); }

#endif /* DEDUP_BIGENDIAN_H */
