/*
 * proto/log.c - the log line format (funnel/log.h): leveled lines on
 * stderr, the same for funneld, libfunnel and the services.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "funnel/log.h"

static enum funnel_log_level min_level = FUNNEL_LOG_INFO;
static const char *program = "funnel";
static const char *const names[] = { "debug", "info", "warn", "error" };

void
funnel_log_program(const char *name)
{
	const char *slash = strrchr(name, '/');
	program = slash ? slash + 1 : name;
}

int
funnel_log_level(const char *name)
{
	for (int i = 0; i < 4; i++) {
		if (strcmp(name, names[i]) == 0) {
			min_level = (enum funnel_log_level)i;
			return 0;
		}
	}
	return -1;
}

void
funnel_log(enum funnel_log_level level, const char *fmt, ...)
{
	char line[1024], stamp[32];
	struct timespec ts;
	struct tm tm;
	va_list ap;

	if (level < min_level)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s.%03ldZ %s[%d] %s %s\n", stamp, ts.tv_nsec / 1000000, program,
	        (int)getpid(), names[level], line);
}
