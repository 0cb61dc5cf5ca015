/*
 * proto/bytes.h - the byte helpers of funnel, in one place: big-endian
 * u64s (keys that sort by number, the record prefix, view rows) and
 * lower-case hex.  Pure functions, no allocation; callers own every
 * buffer.
 */
#ifndef FUNNEL_PROTO_BYTES_H
#define FUNNEL_PROTO_BYTES_H

#include <endian.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A u64 as 8 big-endian bytes at p, and back.  Inline: view rows and
 * keys are packed and read with them in every service's inner loop
 * (a byte swap and a move each). */
static inline void
fp_put_be64(uint8_t *p, uint64_t v)
{
	uint64_t be = htobe64(v);
	memcpy(p, &be, sizeof be);
}

static inline uint64_t
fp_get_be64(const uint8_t *p)
{
	uint64_t be;
	memcpy(&be, p, sizeof be);
	return be64toh(be);
}

/* Lower-case hex of n bytes into out, which holds 2n + 1 bytes (NUL). */
void fp_hex(const void *bytes, size_t n, char *out);

#endif /* FUNNEL_PROTO_BYTES_H */
