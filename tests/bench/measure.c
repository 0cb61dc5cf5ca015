/*
 * tests/bench/measure.c - percentiles, memory sampling and peer server
 * processes for the benchmark (contract in bench.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "funnel/funnel.h"
#include "harness.h"

void
bench_result_init(bench_result *r)
{
	memset(r, 0, sizeof *r);
	r->w1_eps = r->w2_eps = -1;
	r->w3[0] = r->w3[1] = r->w3[2] = -1;
	r->w4[0] = r->w4[1] = -1;
	r->flushes[0] = r->flushes[1] = r->flushes[2] = -1;
	for (int i = 0; i < 3; i++)
		r->dev_bytes[i] = r->dev_flushes[i] = -1;
}

/* ---- the slow disk ---- */

static struct {
	int on;
	long delay_us;
	char dir[256];             /* the watched directory, TMPDIR of the servers */
	char count[300];           /* the current server's counter file */
} disk;

int
bench_disk_setup(void)
{
	const char *v = getenv("BENCH_FLUSH_DELAY_US"), *shim = getenv("BENCH_SHIM");
	const char *build = getenv("BUILD"), *tmp = getenv("TMPDIR");
	char path[512], abs[PATH_MAX];
	char *end;

	if (v == NULL || *v == '\0')
		return 0;
	errno = 0;
	long us = strtol(v, &end, 10);
	if (errno || *end || us < 0 || us > 10000000) {
		fprintf(stderr, "bench: BENCH_FLUSH_DELAY_US=%s is not a number of microseconds "
		        "(0..10000000)\n", v);
		return -1;
	}
	if (shim == NULL || *shim == '\0') {
		snprintf(path, sizeof path, "%s/tests/crashshim.so", build && *build ? build : "build");
		shim = path;
	}
	if (realpath(shim, abs) == NULL) {
		fprintf(stderr, "bench: BENCH_FLUSH_DELAY_US needs the shim %s (make %s): %s\n", shim,
		        shim, strerror(errno));
		return -1;
	}
	snprintf(disk.dir, sizeof disk.dir, "%s/funnel-bench-disk-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(disk.dir) == NULL) {
		fprintf(stderr, "bench: cannot make %s: %s\n", disk.dir, strerror(errno));
		return -1;
	}
	char n[32];
	snprintf(n, sizeof n, "%ld", us);
	setenv("TMPDIR", disk.dir, 1);
	setenv("CRASH_WATCH", disk.dir, 1);
	setenv("CRASH_SYNC_DELAY_US", n, 1);
	setenv("LD_PRELOAD", abs, 1);
	unsetenv("CRASH_TRACE");   /* the slow-disk mode only */
	disk.on = 1;
	disk.delay_us = us;
	bench_disk_server("server");
	return 1;
}

long
bench_disk_delay_us(void)
{
	return disk.on ? disk.delay_us : -1;
}

void
bench_disk_server(const char *name)
{
	if (!disk.on)
		return;
	snprintf(disk.count, sizeof disk.count, "%s/%s.flushes", disk.dir, name);
	int fd = open(disk.count, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0)
		close(fd);
	setenv("CRASH_SYNC_COUNT", disk.count, 1);
}

int64_t
bench_disk_flushes(void)
{
	uint64_t v = 0;
	if (!disk.on)
		return -1;
	int fd = open(disk.count, O_RDONLY);
	if (fd < 0)
		return 0;
	if (pread(fd, &v, sizeof v, 0) != (ssize_t)sizeof v)
		v = 0;   /* no flush yet: the shim makes the file 8 bytes at its first */
	close(fd);
	return (int64_t)v;
}

double
bench_disk_per_event(int64_t before, uint64_t events)
{
	int64_t now = bench_disk_flushes();
	if (before < 0 || now < 0 || events == 0)
		return -1;
	return (double)(now - before) / (double)events;
}

void
bench_dev_read(const char *dir, bench_dev *d)
{
	struct stat st;
	char path[64];
	unsigned long long f[17] = { 0 };
	d->bytes = d->flushes = -1;
	if (stat(dir, &st) != 0)
		return;
	snprintf(path, sizeof path, "/sys/dev/block/%u:%u/stat", major(st.st_dev), minor(st.st_dev));
	FILE *fp = fopen(path, "r");
	if (fp == NULL)
		return;
	int n = 0;
	while (n < 17 && fscanf(fp, "%llu", &f[n]) == 1)
		n++;
	fclose(fp);
	if (n >= 7)
		d->bytes = (int64_t)(f[6] * 512);   /* write sectors, of 512 bytes */
	if (n >= 16)
		d->flushes = (int64_t)f[15];        /* flush requests (Linux 5.5 and later) */
}

void
bench_dev_per_event(const char *dir, const bench_dev *before, uint64_t events, double *bytes,
                    double *flushes)
{
	bench_dev now;
	int64_t last;
	uint64_t deadline = harness_now_ns() + 3000000000ull, stable_since = harness_now_ns();
	bench_dev_read(dir, &now);
	last = now.bytes;
	while (now.bytes >= 0 && harness_now_ns() < deadline &&
	       harness_now_ns() - stable_since < 300000000ull) {
		usleep(100000);
		bench_dev_read(dir, &now);
		if (now.bytes != last)
			stable_since = harness_now_ns();
		last = now.bytes;
	}
	*bytes = before->bytes >= 0 && now.bytes >= 0 && events > 0
	         ? (double)(now.bytes - before->bytes) / (double)events : -1;
	*flushes = before->flushes >= 0 && now.flushes >= 0 && events > 0
	           ? (double)(now.flushes - before->flushes) / (double)events : -1;
}

void
bench_disk_cleanup(void)
{
	if (disk.on && getenv("KEEP_TEST_DIRS") == NULL)
		harness_rmrf(disk.dir);
}

void
bench_sleep_until(uint64_t t)
{
	uint64_t now = harness_now_ns();
	if (t > now) {
		struct timespec ts = { (time_t)((t - now) / 1000000000u), (long)((t - now) % 1000000000u) };
		nanosleep(&ts, NULL);
	}
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

void
bench_quantiles_ms(uint64_t *ns, size_t n, const double *p, double *out, size_t np)
{
	if (n > 0)
		qsort(ns, n, sizeof ns[0], cmp_u64);
	for (size_t i = 0; i < np; i++)
		out[i] = n == 0 ? -1 : (double)ns[(size_t)(p[i] * (double)(n - 1))] / 1e6;
}

uint64_t
bench_service_until_head(const daemon_proc *d, const char *binary, const char *rules,
                         const char *view, const char *extra, const char *wrap)
{
	char cmd[2048];
	snprintf(cmd, sizeof cmd, "%s %s --rules %s --view %s --ingest %s --publish %s --query %s "
	         "--until-head --log-level warn %s", wrap ? wrap : "", harness_bin(binary), rules,
	         view, d->ingest, d->publish, d->query, extra);
	return bench_run_timed(cmd);
}

int
bench_paced_load(const daemon_proc *d, uint64_t n, uint64_t rate, bench_event_fn make, void *ctx)
{
	funnel_producer *p;
	msgpack_sbuffer sb;
	char lead[64], id[64];
	uint64_t gap = 1000000000u / rate;

	if (funnel_producer_new(&p, d->ingest, 10000) != FUNNEL_OK)
		return -1;
	funnel_set_window(p, 256);
	msgpack_sbuffer_init(&sb);
	uint64_t t = harness_now_ns();
	int rc = 0;
	for (uint64_t k = 0; k < n && rc == 0; k++) {
		funnel_event ev = { 0 };
		sb.size = 0;
		make(k, &sb, lead, id, &ev, ctx);
		bench_sleep_until(t += gap);
		uint64_t rid;
		rc = funnel_send(p, &ev, 1, &rid) == FUNNEL_OK ? 0 : -1;
		while (rc == 0 && funnel_collect(p, 0, NULL, NULL, 0, NULL) == FUNNEL_OK)
			;
	}
	while (rc == 0 && funnel_in_flight(p) > 0)
		rc = funnel_collect(p, 10000, NULL, NULL, 0, NULL) == FUNNEL_OK ? 0 : -1;
	msgpack_sbuffer_destroy(&sb);
	funnel_producer_destroy(&p);
	return rc;
}

pid_t
bench_service_start(const daemon_proc *d, const char *binary, const char *rules)
{
	char view[400], ready[400], log[400];
	snprintf(view, sizeof view, "%s/%s.view", d->dir, binary);
	snprintf(ready, sizeof ready, "%s/%s.ready", d->dir, binary);
	snprintf(log, sizeof log, "%s/%s.log", d->dir, binary);
	char *const argv[] = { (char *)harness_bin(binary), "--rules", (char *)rules, "--view", view,
	                       "--ingest", (char *)d->ingest, "--publish", (char *)d->publish,
	                       "--query", (char *)d->query, "--ready-file", ready,
	                       "--log-level", "warn", NULL };
	pid_t pid = bench_spawn(argv, log);
	for (int i = 0; pid > 0 && i < 500 && access(ready, F_OK) != 0; i++)
		usleep(10000);
	if (pid > 0 && access(ready, F_OK) != 0) {
		fprintf(stderr, "bench: %s did not start (see %s)\n", binary, log);
		bench_stop(pid, 1000);
		return -1;
	}
	return pid;
}

void
bench_wait_settled(const daemon_proc *d)
{
	funnel_query *qc;
	funnel_status st;
	uint64_t last = 0;
	if (funnel_query_new(&qc, d->query, 5000) != FUNNEL_OK)
		return;
	for (int i = 0; i < 100; i++) {
		usleep(200000);
		if (funnel_status_get(qc, &st) != FUNNEL_OK || st.head == last)
			break;
		last = st.head;
	}
	funnel_query_destroy(&qc);
}

/* Timestamps by seq, and the latencies cause -> record of one type. */
typedef struct cause_walk {
	const char *type;
	size_t tlen;
	uint64_t cap, *ts, *lat, n;
} cause_walk;

static int
cause_record(const funnel_record *r, void *ctx)
{
	cause_walk *w = ctx;
	if (r->seq >= w->cap)
		return FUNNEL_OK;
	w->ts[r->seq] = r->ts;
	if (r->has_cause && r->cause < w->cap && w->ts[r->cause] != 0 && r->type.len == w->tlen &&
	    memcmp(r->type.ptr, w->type, w->tlen) == 0)
		w->lat[w->n++] = r->ts - w->ts[r->cause];
	return FUNNEL_OK;
}

int
bench_cause_latency(const char *query, const char *type, const double *p, double *out,
                    size_t np, uint64_t *n)
{
	funnel_query *qc = NULL;
	funnel_replay_req req = { .from = 1, .limit = 10000 };
	cause_walk w = { .type = type, .tlen = strlen(type), .cap = 1 << 21 };
	int rc = -1;

	w.ts = calloc(w.cap, sizeof *w.ts);
	w.lat = malloc(w.cap * sizeof *w.lat);
	if (w.ts && w.lat && funnel_query_new(&qc, query, 10000) == FUNNEL_OK &&
	    funnel_replay_each(qc, &req, cause_record, &w) == FUNNEL_OK)
		rc = 0;
	funnel_query_destroy(&qc);
	bench_quantiles_ms(w.lat, w.n, p, out, np);
	*n = w.n;
	free(w.ts);
	free(w.lat);
	return rc;
}

static void *
sampler_run(void *arg)
{
	bench_sampler *s = arg;
	while (s->on) {
		uint64_t kb = harness_anon_kb(s->pid);
		if (kb > s->max_kb)
			s->max_kb = kb;
		usleep(20000);
	}
	return NULL;
}

int
bench_sampler_start(bench_sampler *s, pid_t pid)
{
	s->pid = pid;
	s->on = 1;
	s->max_kb = harness_anon_kb(pid);
	if (pthread_create(&s->th, NULL, sampler_run, s) != 0) {
		s->on = 0;
		return -1;
	}
	return 0;
}

uint64_t
bench_sampler_stop(bench_sampler *s)
{
	if (s->on) {
		s->on = 0;
		pthread_join(s->th, NULL);
	}
	uint64_t kb = harness_anon_kb(s->pid);
	return kb > s->max_kb ? kb : s->max_kb;
}

int
bench_free_port(void)
{
	static unsigned counter;
	for (unsigned attempt = 0; attempt < 200; attempt++) {
		unsigned port = 12000 + ((unsigned)getpid() * 17u + (counter++) * 101u) % 8000u;
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
		if (fd < 0)
			return -1;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
		close(fd);
		if (ok)
			return (int)port;
	}
	return -1;
}

int
bench_tempdir(char *dir, size_t len, const char *what)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, len, "%s/funnel-bench-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", what);
	return mkdtemp(dir) ? 0 : -1;
}

pid_t
bench_spawn(char *const argv[], const char *log_path)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;   /* the child's pid, or -1 */
	int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (fd >= 0) {
		dup2(fd, 1);
		dup2(fd, 2);
		close(fd);
	}
	execvp(argv[0], argv);
	fprintf(stderr, "bench: cannot run %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

int
bench_alive(pid_t pid)
{
	return pid > 0 && waitpid(pid, NULL, WNOHANG) == 0;
}

int
bench_stop(pid_t pid, int timeout_ms)
{
	if (pid <= 0)
		return 0;
	kill(pid, SIGTERM);
	uint64_t deadline = harness_now_ns() + (uint64_t)timeout_ms * 1000000u;
	while (harness_now_ns() < deadline) {
		pid_t w = waitpid(pid, NULL, WNOHANG);
		if (w == pid || (w < 0 && errno == ECHILD))
			return 0;
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return 1;
}

uint64_t
bench_env_u64(const char *name, uint64_t def)
{
	const char *v = getenv(name);
	return v && *v ? strtoull(v, NULL, 10) : def;
}

void
bench_report(const char *tab, const char *raw_fmt, ...)
{
	const char *out = getenv("BENCH_OUT");
	fputs(tab, stdout);
	if (!out)
		return;
	FILE *f = fopen(out, "a");
	if (!f)
		return;
	fputs(tab, f);
	fputs("\n```\n", f);
	va_list ap;
	va_start(ap, raw_fmt);
	vfprintf(f, raw_fmt, ap);
	va_end(ap);
	fputs("```\n", f);
	fclose(f);
}

int
bench_fill_history(const char *ingest, uint64_t n)
{
	funnel_producer *p;
	wl_funnel g;
	wl_set s;
	const size_t batch = 1000;

	if (funnel_producer_new(&p, ingest, 30000) != FUNNEL_OK)
		return -1;
	funnel_set_window(p, 16);
	wl_funnel_init(&g, 11, "h");
	wl_set_init(&s);
	int rc = 0;
	for (uint64_t done = 0; done < n && rc == 0; done += batch) {
		size_t k = n - done < batch ? (size_t)(n - done) : batch;
		if (wl_set_fill(&s, &g, k) != 0) {
			rc = -1;
			break;
		}
		uint64_t rid;
		/* the set's envelopes are back to back: one packed request */
		rc = funnel_send_packed(p, s.ev[0].env, s.env_bytes, k, &rid) == FUNNEL_OK ? 0 : -1;
		while (rc == 0 && funnel_in_flight(p) >= 16)
			rc = funnel_collect(p, 30000, NULL, NULL, 0, NULL) == FUNNEL_OK ? 0 : -1;
	}
	while (rc == 0 && funnel_in_flight(p) > 0)
		rc = funnel_collect(p, 30000, NULL, NULL, 0, NULL) == FUNNEL_OK ? 0 : -1;
	wl_set_release(&s);
	funnel_producer_destroy(&p);
	return rc;
}

uint64_t
bench_run_timed(const char *cmd)
{
	uint64_t t0 = harness_now_ns();
	int st = system(cmd);
	uint64_t t1 = harness_now_ns();
	if (st != 0) {
		fprintf(stderr, "bench: '%s' failed (%d)\n", cmd, st);
		return 0;
	}
	return t1 - t0;
}
