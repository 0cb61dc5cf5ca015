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

/* mkdir(2) that also takes an existing directory; an existing name that
 * is not a directory is ENOTDIR (mkdir says EEXIST for any kind). */
static int
mkdir_or_dir(const char *path)
{
	struct stat sb;
	if (mkdir(path, 0755) == 0)
		return 0;
	if (errno != EEXIST)
		return -1;
	if (stat(path, &sb) != 0)
		return -1;
	if (!S_ISDIR(sb.st_mode)) {
		errno = ENOTDIR;
		return -1;
	}
	return 0;
}

int
dirlock_mkdir_p(const char *path)
{
	char tmp[4096];
	size_t n = strlen(path);

	if (n == 0) {
		errno = ENOENT;   /* no name: not "File name too long" */
		return -1;
	}
	if (n >= sizeof tmp) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/' || p[-1] == '/')
			continue;
		*p = 0;
		if (mkdir_or_dir(tmp) != 0)
			return -1;
		*p = '/';
	}
	return mkdir_or_dir(tmp);
}

/* Besides dirlock.h's contract: errno is EWOULDBLOCK after a refusal
 * because another process holds the lock, and only then, so a caller can
 * tell "in use" from a directory it cannot use. */
int
dirlock_take(const char *dir, const char *program, char *why, size_t whylen)
{
	char path[4200], holder[128];

	if (dirlock_mkdir_p(dir) != 0) {
		int err = errno;
		if (err == ENOTDIR)
			snprintf(why, whylen, "%s is not a directory (or a parent of it is not)", dir);
		else
			snprintf(why, whylen, "cannot create the directory %s: %s", dir, strerror(err));
		errno = err == EWOULDBLOCK ? EIO : err;
		return -1;
	}
	snprintf(path, sizeof path, "%s/%s", dir, DIRLOCK_FILE);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		int err = errno;
		snprintf(why, whylen, "cannot open the lock file %s: %s", path, strerror(err));
		errno = err == EWOULDBLOCK ? EIO : err;
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int err = errno;
		ssize_t n = err == EWOULDBLOCK ? pread(fd, holder, sizeof holder - 1, 0) : -1;
		close(fd);
		if (err != EWOULDBLOCK) {
			snprintf(why, whylen, "cannot lock %s: %s", path, strerror(err));
			errno = err;
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
		errno = EWOULDBLOCK;
		return -1;
	}
	int n = snprintf(holder, sizeof holder, "%d %s\n", (int)getpid(), program);
	if (ftruncate(fd, 0) != 0 || pwrite(fd, holder, (size_t)n, 0) != n) {
		int err = errno;
		snprintf(why, whylen, "cannot write the lock file %s: %s", path, strerror(err));
		close(fd);
		errno = err == EWOULDBLOCK ? EIO : err;
		return -1;
	}
	return fd;
}
