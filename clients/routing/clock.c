/*
 * clients/routing/clock.c - the one place funnel-routing reads a clock
 * (router.h: routing_now), shared by the live service (main.c) and
 * `explain` (explain.c), so neither calls into the other.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "router.h"

int
routing_now(const char *clock_file, uint64_t *now)
{
	if (clock_file == NULL) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		*now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
		return 0;
	}
	FILE *f = fopen(clock_file, "r");
	char buf[64], *end;
	if (f == NULL)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	/* digits only: strtoull would take "-1" as 2^64 - 1 (every timer late) */
	if (buf[0] < '0' || buf[0] > '9')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(buf, &end, 10);
	while (*end == '\n' || *end == ' ')
		end++;
	if (*end != 0 || errno != 0)
		return -1;
	*now = v;
	return 0;
}
