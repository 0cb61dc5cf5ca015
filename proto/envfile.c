/*
 * proto/envfile.c - durable creation of an LMDB environment (envfile.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>

#include "envfile.h"
#include "logfmt.h"

int
fp_dir_sync(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	int e = errno;
	close(fd);
	errno = e;
	return rc;
}

int
fp_file_sync(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	int e = errno;
	close(fd);
	errno = e;
	return rc;
}

void
fp_path_parent(const char *path, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s", path);
	size_t n = strlen(out);
	while (n > 1 && out[n - 1] == '/')
		out[--n] = '\0';
	char *slash = strrchr(out, '/');
	if (slash == NULL)
		snprintf(out, outlen, ".");
	else if (slash == out)
		out[1] = '\0';
	else
		*slash = '\0';
}

static int
fail(char *why, size_t whylen, const char *step, const char *path, int err)
{
	snprintf(why, whylen, "cannot %s %s: %s", step, path, err > 0 ? strerror(err) :
	         mdb_strerror(err));
	errno = err > 0 ? err : EIO;
	return -1;
}

int
fp_envfile_prepare(const char *dir, char *why, size_t whylen)
{
	char final[PATH_MAX], tmp[PATH_MAX], lock[PATH_MAX], up[PATH_MAX];
	struct stat st;
	MDB_env *env = NULL;
	int rc;

	if (snprintf(final, sizeof final, "%s/data.mdb", dir) >= (int)sizeof final ||
	    snprintf(tmp, sizeof tmp, "%s/data.mdb.new", dir) >= (int)sizeof tmp ||
	    snprintf(lock, sizeof lock, "%s/data.mdb.new-lock", dir) >= (int)sizeof lock)
		return fail(why, whylen, "create the environment in", dir, ENAMETOOLONG);
	if (stat(final, &st) == 0)
		return 0;
	if (errno != ENOENT)
		return fail(why, whylen, "stat", final, errno);
	/* A stale one was never renamed in: nobody was told about its contents. */
	if ((unlink(tmp) != 0 && errno != ENOENT) || (unlink(lock) != 0 && errno != ENOENT))
		return fail(why, whylen, "remove the unfinished", tmp, errno);
	/* mdb_env_open writes the two meta pages of a new file (no flush). */
	if ((rc = mdb_env_create(&env)) != 0 ||
	    (rc = mdb_env_open(env, tmp, MDB_NOSUBDIR | MDB_NOTLS, 0644)) != 0) {
		if (env != NULL)
			mdb_env_close(env);
		return fail(why, whylen, "create the environment", tmp, rc);
	}
	mdb_env_close(env);
	if (unlink(lock) != 0 && errno != ENOENT)
		return fail(why, whylen, "remove", lock, errno);
	/* Its pages and size on disk, then its name, before it takes the real one. */
	if (fp_file_sync(tmp) != 0)
		return fail(why, whylen, "flush", tmp, errno);
	if (fp_dir_sync(dir) != 0)
		return fail(why, whylen, "flush the directory", dir, errno);
	if (rename(tmp, final) != 0)
		return fail(why, whylen, "rename into place", tmp, errno);
	if (fp_dir_sync(dir) != 0)
		return fail(why, whylen, "flush the directory", dir, errno);
	/* dir itself may be new: its entry in its parent, and so on up
	 * (best effort above the parent, which may not be ours to open). */
	fp_path_parent(dir, up, sizeof up);
	if (fp_dir_sync(up) != 0)
		return fail(why, whylen, "flush the directory", up, errno);
	while (strcmp(up, "/") != 0 && strcmp(up, ".") != 0) {
		char next[PATH_MAX];
		fp_path_parent(up, next, sizeof next);
		if (strcmp(next, up) == 0 || fp_dir_sync(next) != 0)
			break;
		snprintf(up, sizeof up, "%s", next);
	}
	return 0;
}

int
fp_envfile_whole(MDB_env *env, const char *dir, char *why, size_t whylen)
{
	MDB_envinfo info;
	MDB_stat ms;
	struct stat sb;
	char file[PATH_MAX + 16];
	int rc;

	snprintf(file, sizeof file, "%s/%s", dir, FP_LOG_DATA_FILE);
	if ((rc = mdb_env_info(env, &info)) != 0 || (rc = mdb_env_stat(env, &ms)) != 0 ||
	    stat(file, &sb) != 0) {
		snprintf(why, whylen, "cannot look at %s: %s", file,
		         rc != 0 ? mdb_strerror(rc) : strerror(errno));
		return -1;
	}
	unsigned long long need = ((unsigned long long)info.me_last_pgno + 1) * ms.ms_psize;
	if ((unsigned long long)sb.st_size < need) {
		snprintf(why, whylen, "%s is truncated: %lld bytes, the log needs %llu", file,
		         (long long)sb.st_size, need);
		return -1;
	}
	return 0;
}

int
fp_is_log_dir(const char *dir)
{
	char path[PATH_MAX + 16];
	snprintf(path, sizeof path, "%s/%s", dir, FP_LOG_JOURNAL_FILE);
	return access(path, F_OK) == 0;
}
