/*
 * proto/bytes.h - the byte helpers of funnel, in one place: big-endian
 * u64s (keys that sort by number, the record prefix, view rows) and
 * lower-case hex.  Pure functions, no allocation; callers own every
 * buffer.
 */
#ifndef FUNNEL_PROTO_BYTES_H
#define FUNNEL_PROTO_BYTES_H

#include <stddef.h>
#include <stdint.h>

/* A u64 as 8 big-endian bytes at p, and back. */
void fp_put_be64(uint8_t *p, uint64_t v);
uint64_t fp_get_be64(const uint8_t *p);

/* Lower-case hex of n bytes into out, which holds 2n + 1 bytes (NUL). */
void fp_hex(const void *bytes, size_t n, char *out);

#endif /* FUNNEL_PROTO_BYTES_H */
