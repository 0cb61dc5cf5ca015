/*
 * clients/cli/util.c - times, numbers, hex and human units for the CLI.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

#define NS_PER_SEC INT64_C(1000000000)

void
cli_format_time(uint64_t ns, char buf[CLI_TIME_LEN])
{
	time_t sec = (time_t)(ns / (uint64_t)NS_PER_SEC);
	unsigned ms = (unsigned)(ns % (uint64_t)NS_PER_SEC / 1000000u);
	struct tm tm;
	char day[32];

	if (gmtime_r(&sec, &tm) == NULL || strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
		snprintf(buf, CLI_TIME_LEN, "%" PRIu64, ns);
		return;
	}
	snprintf(buf, CLI_TIME_LEN, "%s.%03uZ", day, ms);
}

int64_t
cli_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * NS_PER_SEC + ts.tv_nsec;
}

int
cli_parse_u64(const char *s, uint64_t *out)
{
	char *end;
	if (s == NULL || !isdigit((unsigned char)s[0]))
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

/* Exactly n decimal digits at p, into *v. */
static int
digits(const char *p, int n, int *v)
{
	*v = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)p[i]))
			return -1;
		*v = *v * 10 + (p[i] - '0');
	}
	return 0;
}

/* RFC 3339 (or a bare date) into ns since the epoch. */
static int
parse_rfc3339(const char *p, int64_t *out)
{
	struct tm tm = { 0 };
	int y, mo, d, h = 0, mi = 0, s = 0;
	int64_t frac = 0, offset = 0;

	if (digits(p, 4, &y) || p[4] != '-' || digits(p + 5, 2, &mo) || p[7] != '-' ||
	    digits(p + 8, 2, &d))
		return -1;
	p += 10;
	if (*p != '\0') {
		if (*p != 'T' && *p != 't' && *p != ' ')
			return -1;
		p++;
		if (digits(p, 2, &h) || p[2] != ':' || digits(p + 3, 2, &mi) || p[5] != ':' ||
		    digits(p + 6, 2, &s))
			return -1;
		p += 8;
		if (*p == '.') {
			int nd = 0;
			for (p++; isdigit((unsigned char)*p); p++, nd++) {
				if (nd < 9)
					frac = frac * 10 + (*p - '0');
			}
			if (nd == 0)
				return -1;
			for (; nd < 9; nd++)
				frac *= 10;
		}
		if (*p == 'Z' || *p == 'z') {
			p++;
		} else if (*p == '+' || *p == '-') {
			int oh, om;
			if (digits(p + 1, 2, &oh) || p[3] != ':' || digits(p + 4, 2, &om) || oh > 23 ||
			    om > 59)
				return -1;
			offset = (oh * 3600 + om * 60) * (*p == '-' ? -1 : 1);
			p += 6;
		} else {
			return -1;
		}
		if (*p != '\0')
			return -1;
	}
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60)
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = s;
	time_t t = timegm(&tm);
	/* timegm normalizes Feb 30 into March: refuse dates that moved. */
	if (tm.tm_mday != d || tm.tm_mon != mo - 1)
		return -1;
	int64_t sec = (int64_t)t - offset;
	if (sec < INT64_MIN / NS_PER_SEC + 1 || sec > INT64_MAX / NS_PER_SEC - 1)
		return -1;
	*out = sec * NS_PER_SEC + frac;
	return 0;
}

/* "10m" and friends: that long before now. */
static int
parse_age(const char *s, int64_t *out)
{
	char *end;
	int64_t unit;

	if (!isdigit((unsigned char)s[0]))
		return -1;
	errno = 0;
	unsigned long long n = strtoull(s, &end, 10);
	if (errno != 0 || end[0] == '\0' || end[1] != '\0')
		return -1;
	switch (end[0]) {
	case 's': unit = 1; break;
	case 'm': unit = 60; break;
	case 'h': unit = 3600; break;
	case 'd': unit = 86400; break;
	case 'w': unit = 7 * 86400; break;
	default: return -1;
	}
	int64_t now = cli_now_ns();
	if (n > (unsigned long long)(now / NS_PER_SEC / unit))
		return -1;
	*out = now - (int64_t)n * unit * NS_PER_SEC;
	return 0;
}

int
cli_parse_time(const char *s, int relative, int64_t *out)
{
	const char *p = s;
	char *end;

	if (s == NULL || *s == '\0')
		return -1;
	if (*p == '-')
		p++;
	if (isdigit((unsigned char)*p)) {
		size_t n = strspn(p, "0123456789");
		if (p[n] == '\0') {
			errno = 0;
			long long v = strtoll(s, &end, 10);
			/* ns since the epoch: a time after 1970-01-12 has 16 digits or
			 * more; a shorter count is seconds or ms typed for ns */
			if (errno != 0 || *end != '\0' || (v > 0 && v < CLI_MIN_NS_TIME))
				return -1;
			*out = v;
			return 0;
		}
	}
	if (relative && parse_age(s, out) == 0)
		return 0;
	return parse_rfc3339(s, out);
}

void
cli_human_bytes(uint64_t n, char *buf, size_t len)
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)n;
	int u = -1;

	if (n < 1024) {
		snprintf(buf, len, "%" PRIu64 " B", n);
		return;
	}
	while (v >= 1024.0 && u < 4) {
		v /= 1024.0;
		u++;
	}
	snprintf(buf, len, "%.1f %s", v, units[u]);
}

void
cli_human_duration(uint64_t ms, char *buf, size_t len)
{
	uint64_t s = ms / 1000;

	if (s < 60) {
		snprintf(buf, len, "%" PRIu64 ".%03us", s, (unsigned)(ms % 1000));
	} else if (s < 3600) {
		snprintf(buf, len, "%" PRIu64 "m %" PRIu64 "s", s / 60, s % 60);
	} else if (s < 86400) {
		snprintf(buf, len, "%" PRIu64 "h %" PRIu64 "m %" PRIu64 "s", s / 3600, s / 60 % 60,
		         s % 60);
	} else {
		snprintf(buf, len, "%" PRIu64 "d %" PRIu64 "h %" PRIu64 "m", s / 86400,
		         s / 3600 % 24, s / 60 % 60);
	}
}
