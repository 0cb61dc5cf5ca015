/*
 * daemon/clock.h - wall-clock time in ns since the Unix epoch, the unit of
 * record timestamps.  The writer makes them non-decreasing itself
 * (ingest.c); this only reads the clock.
 */
#ifndef FUNNEL_DAEMON_CLOCK_H
#define FUNNEL_DAEMON_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t
clock_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
