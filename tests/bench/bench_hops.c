/*
 * tests/bench/bench_hops.c - the floor under W4 on this machine: what one
 * round trip costs with no work and no flush, in the shape of each
 * system's path, so that W4's publish -> ack can be read against it.
 *
 *   tcp        a plain TCP socket echoed by one server thread that reads
 *              and answers itself: the shape of a Redis round trip;
 *   zmq        a DEALER to a ROUTER over loopback TCP, each side in a
 *              ZeroMQ context of its own (its own I/O thread), echoed by
 *              the ROUTER's thread: the transport funnel's W4 uses;
 *   zmq+stage  the same, the ROUTER's thread handing the message to a
 *              second thread over inproc PAIR and taking it back: the
 *              shape of funneld's receiver -> writer -> receiver.
 *
 * Each runs BENCH_HOPS_N round trips of 300 bytes (default 5,000) 200 us
 * apart, as W4 paces its events, three times: with the threads free to
 * run on any CPU, with every thread pinned to one CPU, and free again
 * with one flush in each round trip.  The difference between the first
 * two is what the threads waking each other across CPUs costs; on a
 * virtual machine that is tens of microseconds a wake-up, and funnel's
 * path has more wake-ups than a single-threaded server's
 * (tests/bench/hops.sh counts them in funneld itself).  The third is the
 * floor under W4 itself: the thread that would write (the server thread;
 * the stage, as funneld's writer) appends the message to a file made and
 * flushed beforehand and calls fdatasync before the answer, the one
 * flush both funneld's journal and Redis's `appendfsync always` pay, so
 * W4's p50 less this one is what each system does besides.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <zmq.h>

#include "bench.h"
#include "harness.h"

#define MSG_BYTES 300
#define WARMUP 200
#define GAP_NS 200000u
#define FLUSH_FILE_BYTES (8u << 20)   /* more than WARMUP + n messages of a run */

enum shape { TCP, ZMQ, ZMQ_STAGE, NSHAPES };
static const char *const shape_name[NSHAPES] = { "tcp", "zmq", "zmq+stage" };

/* One server: its listening end and what it needs to answer. */
typedef struct {
	enum shape shape;
	int lfd;              /* tcp: the listening socket */
	void *ctx;            /* zmq: the server's own context */
	void *router;
	char endpoint[128];
} server;

/* The flushed runs' file, open while such a run lasts (-1 otherwise), and
 * where the next message goes; one run at a time, its writing thread
 * alone touches them. */
static int flush_fd = -1;
static off_t flush_off;

/* When a flushed run is on: the message appended to the file and
 * flushed.  0, or -1 when the write or the flush failed. */
static int
flush_one(const char *buf, size_t n)
{
	if (flush_fd < 0)
		return 0;
	if (flush_off + (off_t)n > (off_t)FLUSH_FILE_BYTES)
		flush_off = 0;
	if (pwrite(flush_fd, buf, n, flush_off) != (ssize_t)n || fdatasync(flush_fd) != 0)
		return -1;
	flush_off += (off_t)n;
	return 0;
}

/* A file of FLUSH_FILE_BYTES written and flushed (so the flushes of the
 * run carry data, not the file's size), unlinked at once: its fd, or -1. */
static int
flush_file_open(void)
{
	const char *tmp = getenv("TMPDIR");
	char path[4096];
	snprintf(path, sizeof path, "%s/funnel-hops-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	int fd = mkstemp(path);
	if (fd < 0)
		return -1;
	unlink(path);
	static char zeros[1u << 16];
	for (size_t at = 0; at < FLUSH_FILE_BYTES; at += sizeof zeros)
		if (write(fd, zeros, sizeof zeros) != (ssize_t)sizeof zeros) {
			close(fd);
			return -1;
		}
	if (fsync(fd) != 0) {
		close(fd);
		return -1;
	}
	flush_off = 0;
	return fd;
}

static int
read_full(int fd, char *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = read(fd, buf + got, n - got);
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

/* The stage thread: takes each message over inproc and hands it back;
 * a 1-byte message ends it. */
static void *
stage_main(void *arg)
{
	void *pair = zmq_socket(arg, ZMQ_PAIR);
	char buf[MSG_BYTES];
	zmq_connect(pair, "inproc://stage");
	for (;;) {
		int n = zmq_recv(pair, buf, sizeof buf, 0);
		if (n < 0 || (n > 1 && flush_one(buf, (size_t)n) != 0))
			break;
		zmq_send(pair, buf, (size_t)n, 0);
		if (n == 1)
			break;
	}
	zmq_close(pair);
	return NULL;
}

/* The server thread: echoes until a 1-byte message, which it answers. */
static void *
server_main(void *arg)
{
	server *sv = arg;
	char buf[MSG_BYTES], id[256];
	if (sv->shape == TCP) {
		int fd = accept(sv->lfd, NULL, NULL), one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		for (;;) {
			if (read_full(fd, buf, 1) != 0)
				break;
			if (buf[0] == 'q') {
				(void)!write(fd, buf, 1);
				break;
			}
			if (read_full(fd, buf + 1, MSG_BYTES - 1) != 0 || flush_one(buf, MSG_BYTES) != 0 ||
			    write(fd, buf, MSG_BYTES) != MSG_BYTES)
				break;
		}
		close(fd);
		return NULL;
	}
	void *pair = NULL;
	pthread_t stage;
	if (sv->shape == ZMQ_STAGE) {
		pair = zmq_socket(sv->ctx, ZMQ_PAIR);
		zmq_bind(pair, "inproc://stage");
		pthread_create(&stage, NULL, stage_main, sv->ctx);
	}
	for (;;) {
		int il = zmq_recv(sv->router, id, sizeof id, 0);
		int n = il < 0 ? -1 : zmq_recv(sv->router, buf, sizeof buf, 0);
		if (n < 0 || (pair == NULL && n > 1 && flush_one(buf, (size_t)n) != 0))
			break;
		if (pair != NULL && (zmq_send(pair, buf, (size_t)n, 0) < 0 ||
		                     (n = zmq_recv(pair, buf, sizeof buf, 0)) < 0))
			break;
		zmq_send(sv->router, id, (size_t)il, ZMQ_SNDMORE);
		zmq_send(sv->router, buf, (size_t)n, 0);
		if (n == 1)
			break;
	}
	if (pair != NULL) {
		pthread_join(stage, NULL);
		zmq_close(pair);
	}
	return NULL;
}

/* Round trips of one shape; p50 and p99 in ms to q.  Threads (and
 * ZeroMQ's I/O threads) inherit the caller's CPU affinity. */
static int
run_shape(enum shape shape, size_t n, double q[2])
{
	server sv = { .shape = shape, .lfd = -1 };
	void *cctx = NULL, *dealer = NULL;
	int cfd = -1, one = 1;
	char buf[MSG_BYTES];
	memset(buf, 'x', sizeof buf);

	if (shape == TCP) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		socklen_t al = sizeof a;
		sv.lfd = socket(AF_INET, SOCK_STREAM, 0);
		if (sv.lfd < 0 || bind(sv.lfd, (struct sockaddr *)&a, sizeof a) != 0 ||
		    listen(sv.lfd, 1) != 0 || getsockname(sv.lfd, (struct sockaddr *)&a, &al) != 0)
			return -1;
		cfd = socket(AF_INET, SOCK_STREAM, 0);
		if (cfd < 0 || connect(cfd, (struct sockaddr *)&a, sizeof a) != 0)
			return -1;
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	} else {
		size_t len = sizeof sv.endpoint;
		sv.ctx = zmq_ctx_new();
		sv.router = zmq_socket(sv.ctx, ZMQ_ROUTER);
		if (zmq_bind(sv.router, "tcp://127.0.0.1:*") != 0 ||
		    zmq_getsockopt(sv.router, ZMQ_LAST_ENDPOINT, sv.endpoint, &len) != 0)
			return -1;
		cctx = zmq_ctx_new();
		dealer = zmq_socket(cctx, ZMQ_DEALER);
		if (zmq_connect(dealer, sv.endpoint) != 0)
			return -1;
	}
	pthread_t st;
	if (pthread_create(&st, NULL, server_main, &sv) != 0)
		return -1;

	uint64_t *lat = calloc(n, sizeof *lat);
	int rc = lat == NULL ? -1 : 0;
	uint64_t next = harness_now_ns();
	for (size_t i = 0; rc == 0 && i < WARMUP + n; i++) {
		bench_sleep_until(next);   /* GAP_NS after the answer before, as W4 */
		uint64_t t = harness_now_ns();
		if (shape == TCP)
			rc = write(cfd, buf, sizeof buf) == (ssize_t)sizeof buf ? read_full(cfd, buf, sizeof buf) : -1;
		else
			rc = zmq_send(dealer, buf, sizeof buf, 0) == (int)sizeof buf &&
			     zmq_recv(dealer, buf, sizeof buf, 0) == (int)sizeof buf ? 0 : -1;
		uint64_t done = harness_now_ns();
		if (i >= WARMUP)
			lat[i - WARMUP] = done - t;
		next = done + GAP_NS;
	}
	/* the 1-byte message ends the server (and its stage) */
	if (shape == TCP) {
		(void)!write(cfd, "q", 1);
		(void)!read(cfd, buf, 1);
		close(cfd);
	} else {
		zmq_send(dealer, "q", 1, 0);
		zmq_recv(dealer, buf, sizeof buf, 0);
	}
	pthread_join(st, NULL);
	if (shape == TCP) {
		close(sv.lfd);
	} else {
		int zero = 0;
		zmq_setsockopt(dealer, ZMQ_LINGER, &zero, sizeof zero);
		zmq_close(dealer);
		zmq_close(sv.router);
		zmq_ctx_term(cctx);
		zmq_ctx_term(sv.ctx);
	}
	static const double p[2] = { 0.50, 0.99 };
	if (rc == 0)
		bench_quantiles_ms(lat, n, p, q, 2);
	free(lat);
	return rc;
}

/* The runs, in the order they go, and the table's columns. */
enum variant { FREE, ONE_CPU, FLUSHED, NVARIANTS };

int
main(void)
{
	size_t n = (size_t)bench_env_u64("BENCH_HOPS_N", 5000);
	cpu_set_t all, one;
	double q[NVARIANTS][NSHAPES][2];   /* [variant][shape][p50, p99] */

	if (sched_getaffinity(0, sizeof all, &all) != 0) {
		perror("bench_hops: sched_getaffinity");
		return 1;
	}
	CPU_ZERO(&one);
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &all)) {
			CPU_SET(c, &one);
			break;
		}
	fprintf(stderr, "bench_hops: %zu round trips a shape, free, on one CPU, and free with a flush...\n",
	        n);
	for (int v = 0; v < NVARIANTS; v++) {
		if (sched_setaffinity(0, sizeof all, v == ONE_CPU ? &one : &all) != 0) {
			perror("bench_hops: sched_setaffinity");
			return 1;
		}
		for (int s = 0; s < NSHAPES; s++) {
			if (v == FLUSHED && (flush_fd = flush_file_open()) < 0) {
				perror("bench_hops: the flushed runs' file");
				return 1;
			}
			int rc = run_shape((enum shape)s, n, q[v][s]);
			if (flush_fd >= 0)
				close(flush_fd);
			flush_fd = -1;
			if (rc != 0) {
				fprintf(stderr, "bench_hops: %s failed\n", shape_name[s]);
				return 1;
			}
		}
	}

	char tab[2048];
	int k = snprintf(tab, sizeof tab, "\n| one round trip (%zu, 200 us apart) | no work, threads on any "
	                 "CPU p50 / p99, ms | all on one CPU | any CPU, one 300-byte write + "
	                 "fdatasync |\n|---|---|---|---|\n", n);
	static const char *const what[NSHAPES] = {
		"tcp: one server thread reads and answers (a Redis round trip's shape)",
		"zmq: DEALER -> ROUTER, each side's ZeroMQ I/O thread (W4's transport)",
		"zmq+stage: the ROUTER's thread hands over to a second and back (funneld's)",
	};
	for (int s = 0; s < NSHAPES; s++)
		k += snprintf(tab + k, sizeof tab - k, "| %s | %.3f / %.3f | %.3f / %.3f | %.3f / %.3f |\n",
		              what[s], q[FREE][s][0], q[FREE][s][1], q[ONE_CPU][s][0], q[ONE_CPU][s][1],
		              q[FLUSHED][s][0], q[FLUSHED][s][1]);
	snprintf(tab + k, sizeof tab - k, "\nfunneld's shape over a single-threaded server's, p50: "
	         "+%.3f ms with threads on any CPU, +%.3f ms on one CPU (the rest is waking "
	         "threads across CPUs), +%.3f ms with a flush\n",
	         q[FREE][ZMQ_STAGE][0] - q[FREE][TCP][0], q[ONE_CPU][ZMQ_STAGE][0] - q[ONE_CPU][TCP][0],
	         q[FLUSHED][ZMQ_STAGE][0] - q[FLUSHED][TCP][0]);
	bench_report(tab, "hops_tcp_p50=%.4f\nhops_zmq_p50=%.4f\nhops_zmq_stage_p50=%.4f\n"
	             "hops_tcp_p50_one_cpu=%.4f\nhops_zmq_p50_one_cpu=%.4f\n"
	             "hops_zmq_stage_p50_one_cpu=%.4f\nhops_tcp_flush_p50=%.4f\n"
	             "hops_zmq_flush_p50=%.4f\nhops_zmq_stage_flush_p50=%.4f\n",
	             q[FREE][TCP][0], q[FREE][ZMQ][0], q[FREE][ZMQ_STAGE][0], q[ONE_CPU][TCP][0],
	             q[ONE_CPU][ZMQ][0], q[ONE_CPU][ZMQ_STAGE][0], q[FLUSHED][TCP][0],
	             q[FLUSHED][ZMQ][0], q[FLUSHED][ZMQ_STAGE][0]);
	return 0;
}
