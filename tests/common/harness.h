/*
 * tests/common/harness.h - real funneld processes for integration tests
 * and benchmarks: start one on a fresh temporary data directory on
 * loopback ports below the ephemeral range, learn its endpoints from --ready-file, stop it
 * with SIGTERM or kill it with SIGKILL, start it again on the same data
 * and endpoints.
 *
 * The binary is $FUNNELD, else $BUILD/bin/funneld, else build/bin/funneld.
 * Every wait is bounded; a daemon that does not come up is a test failure,
 * never a hang.
 */
#ifndef FUNNEL_TESTS_HARNESS_H
#define FUNNEL_TESTS_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct daemon_proc {
	pid_t pid;
	char dir[256];        /* temp dir owned by the harness: data/, ready, log */
	char data[300];
	char ready[300];
	char log[300];
	char ingest[256];
	char publish[256];
	char query[256];
	char extra[512];      /* extra flags, space separated */
} daemon_proc;

/* Make a fresh temp dir and start funneld in it on free ports and
 * the given extra flags (may be NULL).  Returns 0 or -1 (message on stderr). */
int harness_start(daemon_proc *d, const char *extra);

/* Start again on the same data dir and the same endpoints as before. */
int harness_restart(daemon_proc *d);

/* SIGTERM and wait (bounded); returns the exit status, or -1. */
int harness_stop(daemon_proc *d);

/* SIGKILL and reap. */
void harness_kill9(daemon_proc *d);

/* Stop if running and remove the temp dir. */
void harness_cleanup(daemon_proc *d);

/* Path of a binary next to funneld (e.g. "funnel"). */
const char *harness_bin(const char *name);

/* Monotonic time in ns. */
uint64_t harness_now_ns(void);

/* Anonymous memory of a process in kB (what it allocated itself: heap,
 * stacks; not the file pages it maps, such as the LMDB log), from
 * /proc/PID/status RssAnon; 0 if unknown. */
uint64_t harness_anon_kb(pid_t pid);

/* Remove a directory tree (used on temp dirs only). */
void harness_rmrf(const char *dir);

#endif
