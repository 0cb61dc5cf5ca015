/*
 * tests/common/harness.c - start, stop and kill real funneld processes.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define START_TIMEOUT_MS 15000
#define STOP_TIMEOUT_MS 15000

uint64_t
harness_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

const char *
harness_bin(const char *name)
{
	static char path[1024];
	const char *build = getenv("BUILD");
	if (strcmp(name, "funneld") == 0 && getenv("FUNNELD"))
		return getenv("FUNNELD");
	snprintf(path, sizeof path, "%s/bin/%s", build && *build ? build : "build", name);
	return path;
}

uint64_t
harness_anon_kb(pid_t pid)
{
	char path[64], line[256];
	uint64_t kb = 0, v;
	/* RssAnon of /proc/PID/status: the kernel's counter of the process's
	 * anonymous pages, read without walking its page tables (which
	 * smaps_rollup does, under the process's mmap lock: sampled every
	 * 20 ms during a benchmark, that walk cost the measured daemon time) */
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	while (fgets(line, sizeof line, f)) {
		if (sscanf(line, "RssAnon: %" SCNu64, &v) == 1)
			kb += v;
	}
	fclose(f);
	return kb;
}

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb; (void)flag; (void)ftw;
	return remove(path);
}

void
harness_rmrf(const char *dir)
{
	if (dir[0])
		nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int
read_ready(daemon_proc *d)
{
	FILE *f = fopen(d->ready, "r");
	char line[256];
	int got = 0;
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, "ingest=", 7) == 0) {
			snprintf(d->ingest, sizeof d->ingest, "%s", line + 7);
			got++;
		} else if (strncmp(line, "publish=", 8) == 0) {
			snprintf(d->publish, sizeof d->publish, "%s", line + 8);
			got++;
		} else if (strncmp(line, "query=", 6) == 0) {
			snprintf(d->query, sizeof d->query, "%s", line + 6);
			got++;
		}
	}
	fclose(f);
	return got == 3 ? 0 : -1;
}

static int
spawn(daemon_proc *d, const char *ingest, const char *publish, const char *query)
{
	char *argv[64];
	int argc = 0;
	char extra[512];

	unlink(d->ready);
	argv[argc++] = (char *)harness_bin("funneld");
	argv[argc++] = "--data";
	argv[argc++] = d->data;
	argv[argc++] = "--ingest";
	argv[argc++] = (char *)ingest;
	argv[argc++] = "--publish";
	argv[argc++] = (char *)publish;
	argv[argc++] = "--query";
	argv[argc++] = (char *)query;
	argv[argc++] = "--ready-file";
	argv[argc++] = d->ready;
	snprintf(extra, sizeof extra, "%s", d->extra);
	for (char *tok = strtok(extra, " "); tok && argc < 62; tok = strtok(NULL, " "))
		argv[argc++] = tok;
	argv[argc] = NULL;

	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 2);
			dup2(fd, 1);
			close(fd);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	d->pid = pid;
	uint64_t deadline = harness_now_ns() + (uint64_t)START_TIMEOUT_MS * 1000000u;
	while (harness_now_ns() < deadline) {
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			fprintf(stderr, "harness: funneld exited during start (see %s)\n", d->log);
			d->pid = 0;
			return -1;
		}
		if (read_ready(d) == 0)
			return 0;
		usleep(5000);
	}
	fprintf(stderr, "harness: funneld not ready within %d ms (see %s)\n", START_TIMEOUT_MS, d->log);
	harness_kill9(d);
	return -1;
}

/*
 * Ports come from below the kernel's ephemeral range (32768 and up on
 * Debian): a client reconnecting to a stopped daemon's ephemeral port can
 * be handed that very port as its own source port (a TCP self-connect),
 * and the restarted daemon then cannot bind it.
 */
static int
pick_ports(char *in, char *pub, char *q, size_t len, unsigned attempt)
{
	static unsigned counter;
	unsigned base = 20000 + ((unsigned)getpid() * 31u + (counter++) * 3u + attempt * 7919u) % 12000u;
	snprintf(in, len, "tcp://127.0.0.1:%u", base);
	snprintf(pub, len, "tcp://127.0.0.1:%u", base + 1);
	snprintf(q, len, "tcp://127.0.0.1:%u", base + 2);
	return 0;
}

int
harness_start(daemon_proc *d, const char *extra)
{
	memset(d, 0, sizeof *d);
	const char *tmp = getenv("TMPDIR");
	snprintf(d->dir, sizeof d->dir, "%s/funnel-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(d->dir) == NULL) {
		perror("harness: mkdtemp");
		return -1;
	}
	snprintf(d->data, sizeof d->data, "%s/data", d->dir);
	snprintf(d->ready, sizeof d->ready, "%s/ready", d->dir);
	snprintf(d->log, sizeof d->log, "%s/funneld.log", d->dir);
	snprintf(d->extra, sizeof d->extra, "%s", extra ? extra : "");
	/* a port already taken makes funneld exit at once: try other ports */
	for (unsigned attempt = 0; attempt < 20; attempt++) {
		char in[64], pub[64], q[64];
		pick_ports(in, pub, q, sizeof in, attempt);
		if (spawn(d, in, pub, q) == 0)
			return 0;
	}
	return -1;
}

int
harness_restart(daemon_proc *d)
{
	char in[256], pub[256], q[256];
	snprintf(in, sizeof in, "%s", d->ingest);
	snprintf(pub, sizeof pub, "%s", d->publish);
	snprintf(q, sizeof q, "%s", d->query);
	/* the old ports were just released; retry a little if one is still held */
	for (int i = 0; i < 50; i++) {
		if (spawn(d, in, pub, q) == 0)
			return 0;
		usleep(100000);
	}
	return -1;
}

int
harness_stop(daemon_proc *d)
{
	int st = 0;
	if (d->pid <= 0)
		return -1;
	kill(d->pid, SIGTERM);
	uint64_t deadline = harness_now_ns() + (uint64_t)STOP_TIMEOUT_MS * 1000000u;
	while (harness_now_ns() < deadline) {
		if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
			d->pid = 0;
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		}
		usleep(5000);
	}
	fprintf(stderr, "harness: funneld ignored SIGTERM for %d ms\n", STOP_TIMEOUT_MS);
	harness_kill9(d);
	return -1;
}

void
harness_kill9(daemon_proc *d)
{
	if (d->pid > 0) {
		kill(d->pid, SIGKILL);
		waitpid(d->pid, NULL, 0);
		d->pid = 0;
	}
}

void
harness_cleanup(daemon_proc *d)
{
	if (d->pid > 0)
		harness_stop(d);
	if (getenv("KEEP_TEST_DIRS") == NULL)
		harness_rmrf(d->dir);
}
