/*
 * clients/cli/util.h - small pure helpers of the funnel CLI: times,
 * numbers, hex, human units.  No allocation; callers own every buffer.
 */
#ifndef FUNNEL_CLI_UTIL_H
#define FUNNEL_CLI_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "bytes.h"

/* Bytes a formatted time needs, NUL included. */
#define CLI_TIME_LEN 40

/* ns since the epoch as RFC 3339 UTC with milliseconds:
 * "2026-11-22T13:10:02.123Z". */
void cli_format_time(uint64_t ns, char buf[CLI_TIME_LEN]);

/* The smallest positive integer taken as ns since the epoch
 * (1970-01-12T13:46:40Z): below it, a count of seconds or ms typed where
 * ns belong ("1796395363") is refused, not read as a time in 1970. */
#define CLI_MIN_NS_TIME INT64_C(1000000000000000)

/*
 * Parse a point in time into ns since the epoch:
 *   - an integer: ns since the epoch ("1763816400000000000"); 0, a
 *     negative count, or at least CLI_MIN_NS_TIME;
 *   - RFC 3339: "2026-11-22T10:00:00Z", "2026-11-22T10:00:00.5+01:00",
 *     or a bare date "2026-11-22" (midnight UTC);
 *   - when relative is not 0, an age before now: "90s", "10m", "2h",
 *     "3d", "1w".
 * Returns 0 and sets *out, or -1 when s is none of these.
 */
int cli_parse_time(const char *s, int relative, int64_t *out);

/* The wall clock, ns since the epoch. */
int64_t cli_now_ns(void);

/* A whole decimal number, nothing else around it.  Returns 0 or -1. */
int cli_parse_u64(const char *s, uint64_t *out);

/* Lower-case hex of n bytes into out, which holds 2n+1 bytes: proto's. */
#define cli_hex(bytes, n, out) fp_hex((bytes), (n), (out))

/* "512 B", "1.5 KiB", "64.0 MiB", ... */
void cli_human_bytes(uint64_t n, char *buf, size_t len);

/* "3d 4h 5m 6s", "1.250s" for short ones. */
void cli_human_duration(uint64_t ms, char *buf, size_t len);

#endif /* FUNNEL_CLI_UTIL_H */
