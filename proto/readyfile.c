/*
 * proto/readyfile.c - the atomic ready file (readyfile.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "readyfile.h"

int
fp_ready_write(const char *path, const char *fmt, ...)
{
	char tmp[4200];
	if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
		errno = ENAMETOOLONG;
		return -1;
	}
	FILE *f = fopen(tmp, "w");
	if (f == NULL)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	if (fclose(f) != 0)
		return -1;
	return rename(tmp, path);
}
