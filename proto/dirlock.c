/*
 * proto/dirlock.c - one writer per directory; the contract is dirlock.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dirlock.h"

int
dirlock_mkdir_p(const char *path)
{
	char tmp[4096];
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof tmp) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

int
dirlock_take(const char *dir, const char *program, char *why, size_t whylen)
{
	char path[4200], holder[128];

	if (dirlock_mkdir_p(dir) != 0) {
		snprintf(why, whylen, "cannot create %s: %s", dir, strerror(errno));
		return -1;
	}
	snprintf(path, sizeof path, "%s/%s", dir, DIRLOCK_FILE);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		snprintf(why, whylen, "cannot open the lock file %s: %s", path, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int err = errno;
		ssize_t n = err == EWOULDBLOCK ? pread(fd, holder, sizeof holder - 1, 0) : -1;
		close(fd);
		if (err != EWOULDBLOCK) {
			snprintf(why, whylen, "cannot lock %s: %s", path, strerror(err));
			return -1;
		}
		int pid = 0;
		char prog[64] = "";
		if (n > 0) {
			holder[n] = 0;
			sscanf(holder, "%d %63s", &pid, prog);
		}
		if (pid > 0)
			snprintf(why, whylen, "in use by %s (pid %d)", prog[0] ? prog : "another process",
			         pid);
		else
			snprintf(why, whylen, "in use by another process (its pid is not written yet)");
		return -1;
	}
	int n = snprintf(holder, sizeof holder, "%d %s\n", (int)getpid(), program);
	if (ftruncate(fd, 0) != 0 || pwrite(fd, holder, (size_t)n, 0) != n) {
		snprintf(why, whylen, "cannot write the lock file %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}
