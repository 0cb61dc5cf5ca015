/*
 * tests/crash/shim.c - an LD_PRELOAD library that records what a process
 * writes to its data files and when it flushes them, for the power-loss
 * harness (tests/integration/test_crash.py).
 *
 * Set CRASH_TRACE=FILE and CRASH_WATCH=DIR.  Every call below on a path
 * under DIR (DIR itself included) is done, then appended to FILE as one
 * trace record, in the order the calls returned:
 *
 *   open/openat/creat  OPEN    the fd's file: inode, O_CREAT, O_DSYNC|O_SYNC,
 *                              directory or not, and its path
 *   pwrite/pwritev/write/writev
 *                      WRITE   inode, offset, the bytes written (DSYNC set
 *                              when the fd was opened O_DSYNC or O_SYNC:
 *                              such a write is durable when it returns)
 *   fsync/fdatasync    SYNC    a file's writes so far are durable; on a
 *                              directory: DIRSYNC, its entries are durable
 *   msync              SYNC    of the file mapped there; a shared writable
 *                              mapping of a watched file is MMAPW, whose
 *                              writes the shim cannot see (the checker
 *                              refuses such a trace)
 *   ftruncate/fallocate TRUNC  the file's new size (fallocate: at least)
 *   rename/renameat    RENAME  old path, new path
 *   mkdir, unlink      MKDIR, UNLINK
 *
 * Files whose name ends in "lock" or "lock.mdb" are not traced: LMDB
 * rebuilds its lock file at open, it holds nothing durable.
 *
 * The op counter: CRASH_TRACE.ctr holds a native uint64, the number of
 * records written so far, updated under the same lock right after each
 * record.  A process that reads it (mmap) after something happened knows
 * that every op numbered below the value it read came before that event.
 * The producer of the harness reads it when an ack arrives: a crash point
 * after op k (ops 0..k-1 done, none after) comes after every ack whose
 * counter was <= k.
 *
 * Record layout (native endian): u32 kind, u32 flags, u64 ino, u64 off,
 * u64 len, then len bytes (the data written, or the path(s) with a NUL
 * between old and new for RENAME).  Without CRASH_TRACE the shim only
 * forwards the calls.
 *
 * CRASH_FAIL_SYNC=N (with CRASH_TRACE): the fsync/fdatasync calls on
 * watched files (not directories) after the first N fail with EIO, as a
 * failing disk's do, without flushing and without a trace record: what
 * funneld does when a flush fails (tests/integration/test_crash.py).
 * With CRASH_FAIL_SYNC_ONCE=1 only that one flush (the N+1th) fails and
 * the later ones succeed, as Linux reports a failed writeback once: the
 * pages it could not write are marked clean, so a later flush succeeds
 * without writing them (what was written before the failed flush is of
 * unknown fate however the later ones end).
 * CRASH_SYNC_DELAY_MS=M: each flush of a watched file sleeps M ms first,
 * a slow disk, so a test can have requests arrive while one is under way.
 * CRASH_SYNC_DELAY_FROM=K: only the flushes of watched files after the
 * first K are slowed (a test counts a start's flushes and slows only
 * what comes after it).
 *
 * The slow-disk mode (the benchmark's BENCH_FLUSH_DELAY_US), with
 * CRASH_WATCH=DIR and without CRASH_TRACE: nothing is recorded and no
 * lock is taken; only the flushes of paths under DIR (directories and
 * lock files included: a disk pays for those too) are touched:
 *   fsync, fdatasync, an msync of a shared writable mapping of such a
 *   file, and each write/pwrite/writev/pwritev on an fd opened O_DSYNC
 *   or O_SYNC (one flush per call).
 * CRASH_SYNC_DELAY_US=N: each such flush sleeps N microseconds after the
 * real call returned (timer slack lowered to 1 us for that sleep), a disk
 * whose flush takes N us more than this one's.
 * CRASH_SYNC_COUNT=FILE: FILE holds a native uint64 that each such flush
 * adds one to (atomically, through a shared mapping: the processes that
 * name the same FILE add up, and a reader sees the count at any time);
 * created as 0 when missing.  Both also work together with CRASH_TRACE.
 * Without CRASH_WATCH the shim only forwards the calls, whatever else is
 * set.
 * CRASH_SYNC_ONLY=NAME (with CRASH_TRACE): CRASH_FAIL_SYNC,
 * CRASH_SYNC_DELAY_MS and CRASH_SYNC_DELAY_FROM count, fail and slow only
 * the flushes of files whose name is NAME (e.g. "journal": funneld's
 * write-ahead journal, whose flush is the one an ack waits for); the
 * others are done and traced as usual.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { OP_OPEN = 1, OP_WRITE, OP_SYNC, OP_DIRSYNC, OP_TRUNC, OP_RENAME, OP_MKDIR, OP_UNLINK,
       OP_MMAPW };
enum { F_CREAT = 1, F_DSYNC = 2, F_DIR = 4 };

struct rec {
	uint32_t kind, flags;
	uint64_t ino, off, len;
};

#define MAX_FD 4096
static struct {
	int watched;
	int only;                 /* its name is CRASH_SYNC_ONLY's (or that is unset) */
	int dsync;
	int dir;
	uint64_t ino;
} fds[MAX_FD];

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int trace_fd = -1;
static volatile uint64_t *counter;
static char watch[PATH_MAX];
static size_t watch_len;
static pthread_once_t once = PTHREAD_ONCE_INIT;

#define REAL(name) static __typeof__(name) *real_##name
REAL(open); REAL(openat); REAL(pwrite); REAL(pwritev); REAL(write); REAL(writev);
REAL(fsync); REAL(fdatasync); REAL(msync); REAL(ftruncate); REAL(fallocate); REAL(rename);
REAL(renameat); REAL(mkdir); REAL(unlink); REAL(close); REAL(mmap);

static void
bind(void)
{
#define BIND(name) real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)
	BIND(open); BIND(openat); BIND(pwrite); BIND(pwritev); BIND(write); BIND(writev);
	BIND(fsync); BIND(fdatasync); BIND(msync); BIND(ftruncate); BIND(fallocate); BIND(rename);
	BIND(renameat); BIND(mkdir); BIND(unlink); BIND(close); BIND(mmap);
}

/* Open the trace and the counter named by the environment.  Done by the
 * constructor, and again on a call that comes before it (a sanitizer's
 * runtime may call in before the environment is read): it takes effect
 * once, the first time CRASH_TRACE and CRASH_WATCH are both set. */
static pthread_mutex_t setup_mu = PTHREAD_MUTEX_INITIALIZER;
static volatile int set_up;
static long fail_sync_after = -1;   /* CRASH_FAIL_SYNC; -1: never */
static long file_syncs;             /* under mu */
static int fail_sync_once;          /* CRASH_FAIL_SYNC_ONCE */
static long sync_delay_ms;          /* CRASH_SYNC_DELAY_MS */
static long sync_delay_from;        /* CRASH_SYNC_DELAY_FROM */
static long delay_syncs;            /* flushes of watched files met, atomic */
static int active;                  /* CRASH_WATCH set: paths under it are watched */
static long sync_delay_us;          /* CRASH_SYNC_DELAY_US */
static volatile uint64_t *flushes;  /* CRASH_SYNC_COUNT's mapping, or NULL */

/* A native u64 in a file, mapped shared; NULL when it cannot be had. */
static volatile uint64_t *
map_counter(const char *path)
{
	int cfd = (int)syscall(SYS_open, path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	struct stat st;
	if (cfd < 0)
		return NULL;
	if (syscall(SYS_fstat, cfd, &st) != 0 || (st.st_size < 8 && syscall(SYS_ftruncate, cfd, 8) != 0)) {
		syscall(SYS_close, cfd);
		return NULL;
	}
	void *m = (void *)syscall(SYS_mmap, NULL, 8, PROT_READ | PROT_WRITE, MAP_SHARED, cfd, 0);
	syscall(SYS_close, cfd);
	return m == MAP_FAILED ? NULL : m;
}
static char sync_only[NAME_MAX + 1];  /* CRASH_SYNC_ONLY; "": every file */

static void
setup(void)
{
	pthread_mutex_lock(&setup_mu);
	const char *t = getenv("CRASH_TRACE"), *w = getenv("CRASH_WATCH");
	if (set_up || w == NULL || *w == '\0') {
		pthread_mutex_unlock(&setup_mu);
		return;
	}
	char ctr[PATH_MAX];
	snprintf(watch, sizeof watch, "%s", w);
	watch_len = strlen(watch);
	while (watch_len > 1 && watch[watch_len - 1] == '/')
		watch[--watch_len] = '\0';
	const char *f = getenv("CRASH_FAIL_SYNC");
	if (f != NULL && *f != '\0')
		fail_sync_after = strtol(f, NULL, 10);
	f = getenv("CRASH_FAIL_SYNC_ONCE");
	fail_sync_once = f != NULL && *f != '\0' && *f != '0';
	f = getenv("CRASH_SYNC_DELAY_MS");
	if (f != NULL && *f != '\0')
		sync_delay_ms = strtol(f, NULL, 10);
	f = getenv("CRASH_SYNC_DELAY_FROM");
	if (f != NULL && *f != '\0')
		sync_delay_from = strtol(f, NULL, 10);
	f = getenv("CRASH_SYNC_ONLY");
	if (f != NULL)
		snprintf(sync_only, sizeof sync_only, "%s", f);
	f = getenv("CRASH_SYNC_DELAY_US");
	if (f != NULL && *f != '\0')
		sync_delay_us = strtol(f, NULL, 10);
	f = getenv("CRASH_SYNC_COUNT");
	if (f != NULL && *f != '\0' && (flushes = map_counter(f)) == NULL)
		abort();
	active = 1;
	if (t == NULL) {
		/* the slow-disk mode: no trace */
		set_up = 1;
		pthread_mutex_unlock(&setup_mu);
		return;
	}
	snprintf(ctr, sizeof ctr, "%s.ctr", t);
	int cfd = (int)syscall(SYS_open, ctr, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (cfd < 0 || syscall(SYS_ftruncate, cfd, 8) != 0)
		abort();
	void *m = (void *)syscall(SYS_mmap, NULL, 8, PROT_READ | PROT_WRITE, MAP_SHARED, cfd, 0);
	if (m == MAP_FAILED)
		abort();
	counter = m;
	syscall(SYS_close, cfd);
	trace_fd = (int)syscall(SYS_open, t, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (trace_fd < 0)
		abort();
	set_up = 1;
	pthread_mutex_unlock(&setup_mu);
}

__attribute__((constructor)) static void
shim_init(void)
{
	pthread_once(&once, bind);
	setup();
}

static void
ensure(void)
{
	pthread_once(&once, bind);
	if (!set_up)
		setup();
}

static void
put_all(const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = syscall(SYS_write, trace_fd, p, len);
		if (n <= 0)
			abort();
		p += n;
		len -= (size_t)n;
	}
}

/* Append one record; the caller holds mu. */
static void
emit(uint32_t kind, uint32_t flags, uint64_t ino, uint64_t off, const void *data, size_t len)
{
	struct rec r = { kind, flags, ino, off, len };
	if (trace_fd < 0)
		return;
	put_all(&r, sizeof r);
	if (len)
		put_all(data, len);
	__atomic_store_n(counter, *counter + 1, __ATOMIC_SEQ_CST);
}

static void
emit_iov(uint32_t flags, uint64_t ino, uint64_t off, const struct iovec *iov, int n, size_t total)
{
	struct rec r = { OP_WRITE, flags, ino, off, total };
	if (trace_fd < 0)
		return;
	put_all(&r, sizeof r);
	for (int i = 0; i < n && total > 0; i++) {
		size_t l = iov[i].iov_len < total ? iov[i].iov_len : total;
		put_all(iov[i].iov_base, l);
		total -= l;
	}
	__atomic_store_n(counter, *counter + 1, __ATOMIC_SEQ_CST);
}

/* An absolute path for path relative to dirfd (AT_FDCWD: the cwd). */
static void
abspath(int dirfd, const char *path, char *out, size_t outlen)
{
	char base[PATH_MAX];
	if (path[0] == '/') {
		snprintf(out, outlen, "%s", path);
		return;
	}
	if (dirfd == AT_FDCWD) {
		if (getcwd(base, sizeof base) == NULL)
			base[0] = '\0';
	} else {
		char link[64];
		snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
		ssize_t n = readlink(link, base, sizeof base - 1);
		base[n > 0 ? n : 0] = '\0';
	}
	snprintf(out, outlen, "%s/%s", base, path);
}

static int
is_lock(const char *p)
{
	size_t n = strlen(p);
	return (n >= 4 && strcmp(p + n - 4, "lock") == 0) ||
	       (n >= 8 && strcmp(p + n - 8, "lock.mdb") == 0);
}

static int
watched(const char *abs)
{
	if (!active || strncmp(abs, watch, watch_len) != 0 ||
	    (abs[watch_len] != '\0' && abs[watch_len] != '/'))
		return 0;
	/* the trace leaves lock files out; a slow disk flushes them too */
	return trace_fd < 0 || !is_lock(abs);
}

/* The open is done under mu so that the OPEN record comes before any
 * record of what is done on the fd. */
static int
traced_open(int dirfd, const char *path, int flags, mode_t mode)
{
	char abs[PATH_MAX];
	ensure();
	abspath(dirfd, path, abs, sizeof abs);
	if (!watched(abs))
		return real_openat(dirfd, path, flags, mode);
	pthread_mutex_lock(&mu);
	struct stat st;
	int existed = stat(abs, &st) == 0;
	int fd = real_openat(dirfd, path, flags, mode);
	if (fd >= 0 && fd < MAX_FD && fstat(fd, &st) == 0) {
		fds[fd].watched = 1;
		const char *base = strrchr(abs, '/');
		fds[fd].only = sync_only[0] == '\0' || strcmp(base ? base + 1 : abs, sync_only) == 0;
		fds[fd].dsync = (flags & O_DSYNC) != 0;
		fds[fd].dir = S_ISDIR(st.st_mode);
		fds[fd].ino = st.st_ino;
		uint32_t f = (!existed && (flags & O_CREAT) ? F_CREAT : 0) |
		             (fds[fd].dsync ? F_DSYNC : 0) | (fds[fd].dir ? F_DIR : 0);
		emit(OP_OPEN, f, st.st_ino, (flags & O_TRUNC) ? 1 : 0, abs, strlen(abs));
	}
	pthread_mutex_unlock(&mu);
	return fd;
}

static mode_t
mode_arg(int flags, va_list ap)
{
	return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

int
open(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t m = mode_arg(flags, ap);
	va_end(ap);
	return traced_open(AT_FDCWD, path, flags, m);
}
int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int
openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t m = mode_arg(flags, ap);
	va_end(ap);
	return traced_open(dirfd, path, flags, m);
}
int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));

int
creat(const char *path, mode_t mode)
{
	return traced_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode);
}

static int
is_watched_fd(int fd)
{
	return active && fd >= 0 && fd < MAX_FD && fds[fd].watched;
}

/* The slow-disk mode's part of one flush of a watched file, after the
 * real call: count it, then sleep CRASH_SYNC_DELAY_US with the thread's
 * timer slack at 1 us (put back after), so the sleep is what was asked. */
static void
flushed(void)
{
	if (flushes != NULL)
		__atomic_fetch_add(flushes, 1, __ATOMIC_SEQ_CST);
	if (sync_delay_us <= 0)
		return;
	int saved = errno;
	long slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
	struct timespec d = { sync_delay_us / 1000000, (sync_delay_us % 1000000) * 1000L };
	prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
	while (nanosleep(&d, &d) != 0 && errno == EINTR)
		;
	if (slack > 0)
		prctl(PR_SET_TIMERSLACK, (unsigned long)slack, 0, 0, 0);
	errno = saved;
}

/* Whether a write on fd is a flush (an fd opened O_DSYNC or O_SYNC). */
static int
dsync_fd(int fd)
{
	return fds[fd].dsync;
}

int
close(int fd)
{
	ensure();
	if (is_watched_fd(fd)) {
		pthread_mutex_lock(&mu);
		fds[fd].watched = 0;
		int rc = real_close(fd);
		pthread_mutex_unlock(&mu);
		return rc;
	}
	return real_close(fd);
}

ssize_t
pwrite(int fd, const void *buf, size_t len, off_t off)
{
	ensure();
	if (!is_watched_fd(fd))
		return real_pwrite(fd, buf, len, off);
	if (trace_fd < 0) {
		ssize_t n = real_pwrite(fd, buf, len, off);
		if (dsync_fd(fd))
			flushed();
		return n;
	}
	pthread_mutex_lock(&mu);
	ssize_t n = real_pwrite(fd, buf, len, off);
	if (n > 0)
		emit(OP_WRITE, fds[fd].dsync ? F_DSYNC : 0, fds[fd].ino, (uint64_t)off, buf, (size_t)n);
	pthread_mutex_unlock(&mu);
	if (dsync_fd(fd))
		flushed();
	return n;
}
ssize_t pwrite64(int fd, const void *buf, size_t len, off_t off) __attribute__((alias("pwrite")));

ssize_t
write(int fd, const void *buf, size_t len)
{
	ensure();
	if (!is_watched_fd(fd))
		return real_write(fd, buf, len);
	if (trace_fd < 0) {
		ssize_t n = real_write(fd, buf, len);
		if (dsync_fd(fd))
			flushed();
		return n;
	}
	pthread_mutex_lock(&mu);
	off_t off = lseek(fd, 0, SEEK_CUR);
	ssize_t n = real_write(fd, buf, len);
	if (n > 0)
		emit(OP_WRITE, fds[fd].dsync ? F_DSYNC : 0, fds[fd].ino, (uint64_t)off, buf, (size_t)n);
	pthread_mutex_unlock(&mu);
	if (dsync_fd(fd))
		flushed();
	return n;
}

ssize_t
pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
	ensure();
	if (!is_watched_fd(fd))
		return real_pwritev(fd, iov, n, off);
	if (trace_fd < 0) {
		ssize_t w = real_pwritev(fd, iov, n, off);
		if (dsync_fd(fd))
			flushed();
		return w;
	}
	pthread_mutex_lock(&mu);
	ssize_t w = real_pwritev(fd, iov, n, off);
	if (w > 0)
		emit_iov(fds[fd].dsync ? F_DSYNC : 0, fds[fd].ino, (uint64_t)off, iov, n, (size_t)w);
	pthread_mutex_unlock(&mu);
	if (dsync_fd(fd))
		flushed();
	return w;
}
ssize_t pwritev64(int fd, const struct iovec *iov, int n, off_t off) __attribute__((alias("pwritev")));

ssize_t
writev(int fd, const struct iovec *iov, int n)
{
	ensure();
	if (!is_watched_fd(fd))
		return real_writev(fd, iov, n);
	if (trace_fd < 0) {
		ssize_t w = real_writev(fd, iov, n);
		if (dsync_fd(fd))
			flushed();
		return w;
	}
	pthread_mutex_lock(&mu);
	off_t off = lseek(fd, 0, SEEK_CUR);
	ssize_t w = real_writev(fd, iov, n);
	if (w > 0)
		emit_iov(fds[fd].dsync ? F_DSYNC : 0, fds[fd].ino, (uint64_t)off, iov, n, (size_t)w);
	pthread_mutex_unlock(&mu);
	if (dsync_fd(fd))
		flushed();
	return w;
}

static int
traced_sync(int fd, int (*fn)(int))
{
	ensure();
	if (!is_watched_fd(fd))
		return fn(fd);
	if (trace_fd < 0) {
		int rc = fn(fd);
		flushed();
		return rc;
	}
	if (!fds[fd].dir && fds[fd].only && sync_delay_ms > 0 &&
	    __atomic_fetch_add(&delay_syncs, 1, __ATOMIC_RELAXED) >= sync_delay_from) {
		struct timespec d = { sync_delay_ms / 1000, (sync_delay_ms % 1000) * 1000000L };
		while (nanosleep(&d, &d) != 0 && errno == EINTR)
			;
	}
	pthread_mutex_lock(&mu);
	if (!fds[fd].dir && fds[fd].only && fail_sync_after >= 0 && file_syncs++ >= fail_sync_after &&
	    (!fail_sync_once || file_syncs == fail_sync_after + 1)) {
		pthread_mutex_unlock(&mu);
		errno = EIO;
		return -1;
	}
	int rc = fn(fd);
	if (rc == 0)
		emit(fds[fd].dir ? OP_DIRSYNC : OP_SYNC, 0, fds[fd].ino, 0, NULL, 0);
	pthread_mutex_unlock(&mu);
	flushed();
	return rc;
}

int
fsync(int fd)
{
	ensure();
	return traced_sync(fd, real_fsync);
}

int
fdatasync(int fd)
{
	ensure();
	return traced_sync(fd, real_fdatasync);
}

/* Shared writable mappings of watched files, to name the file msync flushes. */
#define MAX_MAPS 64
static struct {
	uintptr_t lo, hi;
	uint64_t ino;
} maps[MAX_MAPS];

void *
mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	ensure();
	void *p = real_mmap(addr, len, prot, flags, fd, off);
	if (p != MAP_FAILED && is_watched_fd(fd) && (prot & PROT_WRITE) && (flags & MAP_SHARED)) {
		pthread_mutex_lock(&mu);
		for (int i = 0; i < MAX_MAPS; i++)
			if (maps[i].hi == 0) {
				maps[i].lo = (uintptr_t)p;
				maps[i].hi = (uintptr_t)p + len;
				maps[i].ino = fds[fd].ino;
				break;
			}
		emit(OP_MMAPW, 0, fds[fd].ino, (uint64_t)off, NULL, 0);
		pthread_mutex_unlock(&mu);
	}
	return p;
}
void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
	__attribute__((alias("mmap")));

int
msync(void *addr, size_t len, int flags)
{
	int hit = 0;
	ensure();
	pthread_mutex_lock(&mu);
	int rc = real_msync(addr, len, flags);
	for (int i = 0; rc == 0 && active && i < MAX_MAPS; i++)
		if (maps[i].hi && (uintptr_t)addr >= maps[i].lo && (uintptr_t)addr < maps[i].hi) {
			emit(OP_SYNC, 0, maps[i].ino, 0, NULL, 0);
			hit = 1;
		}
	pthread_mutex_unlock(&mu);
	if (hit && (flags & MS_SYNC))
		flushed();
	(void)len;
	return rc;
}

int
ftruncate(int fd, off_t len)
{
	ensure();
	if (!is_watched_fd(fd))
		return real_ftruncate(fd, len);
	pthread_mutex_lock(&mu);
	int rc = real_ftruncate(fd, len);
	if (rc == 0)
		emit(OP_TRUNC, 0, fds[fd].ino, (uint64_t)len, NULL, 0);
	pthread_mutex_unlock(&mu);
	return rc;
}
int ftruncate64(int fd, off_t len) __attribute__((alias("ftruncate")));

int
fallocate(int fd, int mode, off_t off, off_t len)
{
	ensure();
	if (!is_watched_fd(fd))
		return real_fallocate(fd, mode, off, len);
	pthread_mutex_lock(&mu);
	int rc = real_fallocate(fd, mode, off, len);
	if (rc == 0 && mode == 0)
		emit(OP_TRUNC, 1, fds[fd].ino, (uint64_t)(off + len), NULL, 0);
	pthread_mutex_unlock(&mu);
	return rc;
}
int fallocate64(int fd, int mode, off_t off, off_t len) __attribute__((alias("fallocate")));

static int
traced_rename(int odir, const char *oldp, int ndir, const char *newp)
{
	char a[PATH_MAX], b[PATH_MAX], both[2 * PATH_MAX];
	ensure();
	abspath(odir, oldp, a, sizeof a);
	abspath(ndir, newp, b, sizeof b);
	if (!watched(a) && !watched(b))
		return real_renameat(odir, oldp, ndir, newp);
	pthread_mutex_lock(&mu);
	int rc = real_renameat(odir, oldp, ndir, newp);
	if (rc == 0) {
		size_t la = strlen(a), lb = strlen(b);
		memcpy(both, a, la + 1);
		memcpy(both + la + 1, b, lb);
		emit(OP_RENAME, 0, 0, 0, both, la + 1 + lb);
	}
	pthread_mutex_unlock(&mu);
	return rc;
}

int
rename(const char *oldp, const char *newp)
{
	return traced_rename(AT_FDCWD, oldp, AT_FDCWD, newp);
}

int
renameat(int odir, const char *oldp, int ndir, const char *newp)
{
	return traced_rename(odir, oldp, ndir, newp);
}

int
mkdir(const char *path, mode_t mode)
{
	char a[PATH_MAX];
	ensure();
	abspath(AT_FDCWD, path, a, sizeof a);
	if (!watched(a))
		return real_mkdir(path, mode);
	pthread_mutex_lock(&mu);
	int rc = real_mkdir(path, mode);
	if (rc == 0)
		emit(OP_MKDIR, 0, 0, 0, a, strlen(a));
	pthread_mutex_unlock(&mu);
	return rc;
}

int
unlink(const char *path)
{
	char a[PATH_MAX];
	ensure();
	abspath(AT_FDCWD, path, a, sizeof a);
	if (!watched(a))
		return real_unlink(path);
	pthread_mutex_lock(&mu);
	int rc = real_unlink(path);
	if (rc == 0)
		emit(OP_UNLINK, 0, 0, 0, a, strlen(a));
	pthread_mutex_unlock(&mu);
	return rc;
}
