/*
 * tests/bench/peer_redis.c - Redis Streams doing the benchmark's work
 * (contract in bench.h): redis-server from Debian with the append-only
 * file on, in the appendfsync mode asked for, and hiredis.
 *
 * One event is one stream entry: XADD funnel * type T lead L id I data D,
 * where D is the event's msgpack data map, byte for byte what funnel
 * receives.  W1: XADD pipelined, BENCH_INFLIGHT commands in flight per
 * connection.  W2: XRANGE pages of 1000.  W3: a second connection in
 * XREAD BLOCK.  W4: one XADD, wait for its reply.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "bench.h"
#include "harness.h"

#define STREAM "funnel"
#define START_MS 10000
#define IO_TIMEOUT_S 60

typedef struct redis_srv {
	pid_t pid;
	int port;
	char dir[256];
	char log[300];
} redis_srv;

static redisContext *
redis_connect(int port)
{
	struct timeval tv = { IO_TIMEOUT_S, 0 };
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, (struct timeval){ 2, 0 });
	if (c == NULL)
		return NULL;
	if (c->err || redisSetTimeout(c, tv) != REDIS_OK) {
		redisFree(c);
		return NULL;
	}
	return c;
}

static int
redis_ping(int port)
{
	redisContext *c = redis_connect(port);
	if (c == NULL)
		return -1;
	redisReply *rep = redisCommand(c, "PING");
	int ok = rep && rep->type == REDIS_REPLY_STATUS;
	freeReplyObject(rep);
	redisFree(c);
	return ok ? 0 : -1;
}

static int
srv_start(redis_srv *s, const char *appendfsync, char *why, size_t whylen)
{
	if (bench_tempdir(s->dir, sizeof s->dir, "redis") != 0) {
		snprintf(why, whylen, "cannot make a temp dir: %s", strerror(errno));
		return -1;
	}
	snprintf(s->log, sizeof s->log, "%s/redis.log", s->dir);
	/* the port may be taken between the check and the bind: try others */
	for (int attempt = 0; attempt < 5; attempt++) {
		char port[16];
		s->port = bench_free_port();
		snprintf(port, sizeof port, "%d", s->port);
		char *argv[] = { "redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", s->dir,
			"--appendonly", "yes", "--appendfsync", (char *)appendfsync, "--save", "",
			"--protected-mode", "no", "--daemonize", "no", "--logfile", "", NULL };
		s->pid = bench_spawn(argv, s->log);
		if (s->pid < 0)
			break;
		uint64_t deadline = harness_now_ns() + (uint64_t)START_MS * 1000000u;
		while (harness_now_ns() < deadline && bench_alive(s->pid)) {
			if (redis_ping(s->port) == 0)
				return 0;
			usleep(10000);
		}
		bench_stop(s->pid, 2000);
		s->pid = 0;
	}
	snprintf(why, whylen, "redis-server did not start (see %s)", s->log);
	return -1;
}

static void
srv_stop(redis_srv *s)
{
	if (s->pid > 0 && bench_stop(s->pid, 10000) != 0)
		fprintf(stderr, "bench: redis-server %d ignored SIGTERM, killed\n", (int)s->pid);
	s->pid = 0;
	if (getenv("KEEP_TEST_DIRS") == NULL)
		harness_rmrf(s->dir);
}

/* The XADD of one event. */
static void
xadd_argv(const wl_event *e, const char *argv[11], size_t lens[11])
{
	argv[0] = "XADD"; argv[1] = STREAM; argv[2] = "*";
	argv[3] = "type"; argv[4] = e->type;
	argv[5] = "lead"; argv[6] = e->lead;
	argv[7] = "id"; argv[8] = e->id;
	argv[9] = "data"; argv[10] = (const char *)e->data;
	for (int i = 0; i < 10; i++)
		lens[i] = strlen(argv[i]);
	lens[10] = e->data_len;
}

/* ---- W1 ---- */

typedef struct prod {
	int port;
	const wl_set *set;
	uint64_t acked, refused;
	char err[128];
} prod;

static void *
producer_run(void *arg)
{
	prod *a = arg;
	redisContext *c = redis_connect(a->port);
	const char *argv[11];
	size_t lens[11];
	uint64_t sent = 0, replies = 0, n = a->set->n;

	if (c == NULL) {
		snprintf(a->err, sizeof a->err, "cannot connect");
		a->refused = n;
		return NULL;
	}
	while (replies < n) {
		/* top the pipeline up to BENCH_INFLIGHT, a batch at a time */
		while (sent < n && sent - replies + BENCH_BATCH <= BENCH_INFLIGHT) {
			for (int i = 0; i < BENCH_BATCH && sent < n; i++, sent++) {
				xadd_argv(&a->set->ev[sent], argv, lens);
				redisAppendCommandArgv(c, 11, argv, lens);
			}
		}
		/* redisGetReply writes what is buffered, then reads */
		for (int i = 0; i < BENCH_BATCH && replies < sent; i++, replies++) {
			redisReply *rep;
			if (redisGetReply(c, (void **)&rep) != REDIS_OK) {
				snprintf(a->err, sizeof a->err, "%s", c->errstr);
				goto out;
			}
			if (rep->type == REDIS_REPLY_ERROR) {
				a->refused++;
				snprintf(a->err, sizeof a->err, "%s", rep->str);
			} else {
				a->acked++;
			}
			freeReplyObject(rep);
		}
	}
out:
	a->refused += n - a->acked - a->refused;
	redisFree(c);
	return NULL;
}

static void
w1(int port, const bench_events *ev, bench_result *r)
{
	pthread_t th[BENCH_PRODUCERS];
	prod args[BENCH_PRODUCERS];
	uint64_t t0 = harness_now_ns();
	for (int i = 0; i < BENCH_PRODUCERS; i++) {
		args[i] = (prod){ .port = port, .set = &ev->w1[i] };
		pthread_create(&th[i], NULL, producer_run, &args[i]);
	}
	r->w1_acked = r->w1_refused = 0;
	for (int i = 0; i < BENCH_PRODUCERS; i++) {
		pthread_join(th[i], NULL);
		r->w1_acked += args[i].acked;
		r->w1_refused += args[i].refused;
		if (args[i].err[0])
			fprintf(stderr, "bench: Redis W1 producer %d: %s\n", i, args[i].err);
	}
	r->w1_eps = (double)r->w1_acked / ((double)(harness_now_ns() - t0) / 1e9);
}

/* ---- W4 ---- */

static void
w4(int port, const bench_events *ev, bench_result *r)
{
	redisContext *c = redis_connect(port);
	const wl_set *s = &ev->w4;
	uint64_t *lat = calloc(s->n ? s->n : 1, sizeof *lat);
	const char *argv[11];
	size_t lens[11], n = 0;
	static const double q[2] = { 0.50, 0.99 };

	if (c == NULL || lat == NULL)
		goto out;
	for (size_t i = 0; i < s->n; i++) {
		xadd_argv(&s->ev[i], argv, lens);
		uint64_t t0 = harness_now_ns();
		redisReply *rep = redisCommandArgv(c, 11, argv, lens);
		uint64_t t1 = harness_now_ns();
		if (rep == NULL)
			break;
		if (rep->type != REDIS_REPLY_ERROR)
			lat[n++] = t1 - t0;
		freeReplyObject(rep);
		usleep(BENCH_W4_GAP_US);
	}
	bench_quantiles_ms(lat, n, q, r->w4, 2);
out:
	free(lat);
	if (c)
		redisFree(c);
}

/* ---- W3 ---- */

typedef struct sub_arg {
	int port;
	char from[64];             /* the last entry id before W3 */
	size_t count;
	const uint64_t *sent_ns;   /* written by the producer before each send */
	uint64_t *lat;
	size_t got;
	volatile int ready;
} sub_arg;

static void *
subscriber_run(void *arg)
{
	sub_arg *a = arg;
	redisContext *c = redis_connect(a->port);
	char from[64];
	int idle = 0;

	a->ready = 1;
	if (c == NULL)
		return NULL;
	snprintf(from, sizeof from, "%s", a->from);
	while (a->got < a->count && idle < 5) {
		redisReply *rep = redisCommand(c, "XREAD COUNT 1000 BLOCK 2000 STREAMS " STREAM " %s", from);
		uint64_t now = harness_now_ns();
		if (rep == NULL)
			break;
		if (rep->type != REDIS_REPLY_ARRAY || rep->elements == 0) {
			idle++;   /* a 2 s timeout: nothing came */
			freeReplyObject(rep);
			continue;
		}
		idle = 0;
		/* [[stream, [[id, [fields]], ...]]] */
		redisReply *entries = rep->element[0]->element[1];
		for (size_t i = 0; i < entries->elements && a->got < a->count; i++) {
			uint64_t sent = __atomic_load_n(&a->sent_ns[a->got], __ATOMIC_ACQUIRE);
			a->lat[a->got++] = now > sent ? now - sent : 0;
		}
		snprintf(from, sizeof from, "%s", entries->element[entries->elements - 1]->element[0]->str);
		freeReplyObject(rep);
	}
	redisFree(c);
	return NULL;
}

/* Take every reply already here without blocking; returns how many. */
static size_t
drain_replies(redisContext *c)
{
	struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
	size_t n = 0;
	void *rep;
	if (poll(&pfd, 1, 0) == 1 && redisBufferRead(c) != REDIS_OK)
		return 0;
	while (redisGetReplyFromReader(c, &rep) == REDIS_OK && rep != NULL) {
		freeReplyObject(rep);
		n++;
	}
	return n;
}

static void
w3(int port, const bench_events *ev, bench_result *r)
{
	const wl_set *s = &ev->w3;
	redisContext *c = redis_connect(port);
	uint64_t *sent_ns = calloc(s->n ? s->n : 1, sizeof *sent_ns);
	sub_arg sa = { .port = port, .count = s->n, .sent_ns = sent_ns, .lat = calloc(s->n ? s->n : 1, sizeof(uint64_t)) };
	static const double q[3] = { 0.50, 0.99, 0.999 };
	pthread_t th;
	const char *argv[11];
	size_t lens[11];

	if (c == NULL || sent_ns == NULL || sa.lat == NULL)
		goto out;
	redisReply *last = redisCommand(c, "XREVRANGE " STREAM " + - COUNT 1");
	snprintf(sa.from, sizeof sa.from, "%s",
	         last && last->type == REDIS_REPLY_ARRAY && last->elements == 1 ? last->element[0]->element[0]->str : "0-0");
	freeReplyObject(last);
	pthread_create(&th, NULL, subscriber_run, &sa);
	while (!sa.ready)
		usleep(1000);
	usleep(300000);   /* let the XREAD BLOCK reach the server */

	uint64_t t0 = harness_now_ns(), sent = 0, replies = 0;
	for (size_t i = 0; i < s->n; i++) {
		/* the same order as funnel's W3: sleep until due, then collect */
		bench_sleep_until(t0 + i * (1000000000u / BENCH_W3_RATE));
		replies += drain_replies(c);
		while (sent - replies >= BENCH_W3_WINDOW) {
			void *rep;
			if (redisGetReply(c, &rep) != REDIS_OK)
				goto join;
			freeReplyObject(rep);
			replies++;
		}
		xadd_argv(&s->ev[i], argv, lens);
		__atomic_store_n(&sent_ns[i], harness_now_ns(), __ATOMIC_RELEASE);
		redisAppendCommandArgv(c, 11, argv, lens);
		int done = 0;
		while (!done)
			if (redisBufferWrite(c, &done) != REDIS_OK)
				goto join;
		sent++;
	}
	while (replies < sent) {
		void *rep;
		if (redisGetReply(c, &rep) != REDIS_OK)
			break;
		freeReplyObject(rep);
		replies++;
	}
join:
	pthread_join(th, NULL);
	r->w3_got = sa.got;
	bench_quantiles_ms(sa.lat, sa.got, q, r->w3, 3);
out:
	free(sent_ns);
	free(sa.lat);
	if (c)
		redisFree(c);
}

/* ---- W2 ---- */

static void
w2(int port, bench_result *r)
{
	redisContext *c = redis_connect(port);
	char start[64] = "-";
	uint64_t n = 0;
	if (c == NULL)
		return;
	uint64_t t0 = harness_now_ns();
	for (;;) {
		redisReply *rep = redisCommand(c, "XRANGE " STREAM " %s + COUNT 1000", start);
		if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements == 0) {
			freeReplyObject(rep);
			break;
		}
		n += rep->elements;
		snprintf(start, sizeof start, "(%s", rep->element[rep->elements - 1]->element[0]->str);
		freeReplyObject(rep);
	}
	r->w2_eps = (double)n / ((double)(harness_now_ns() - t0) / 1e9);
	r->w2_count = n;
	redisFree(c);
}

int
peer_redis_run(const char *appendfsync, const bench_events *ev, bench_result *r)
{
	redis_srv s = { 0 };
	bench_sampler mem;

	bench_result_init(r);
	bench_disk_server(strcmp(appendfsync, "always") == 0 ? "redis_always" : "redis_everysec");
	if (srv_start(&s, appendfsync, r->note, sizeof r->note) != 0) {
		srv_stop(&s);
		return -1;
	}
	bench_sampler_start(&mem, s.pid);
	fprintf(stderr, "bench: Redis (appendfsync %s) W4\n", appendfsync);
	int64_t f0 = bench_disk_flushes();
	bench_dev dev0;
	bench_dev_read(s.dir, &dev0);
	w4(s.port, ev, r);
	bench_dev_per_event(s.dir, &dev0, ev->w4.n, &r->dev_bytes[BENCH_FL_W4],
	                    &r->dev_flushes[BENCH_FL_W4]);
	r->flushes[BENCH_FL_W4] = bench_disk_per_event(f0, ev->w4.n);
	fprintf(stderr, "bench: Redis (appendfsync %s) W1, %" PRIu64 " events\n", appendfsync, ev->w1_total);
	f0 = bench_disk_flushes();
	bench_dev_read(s.dir, &dev0);
	w1(s.port, ev, r);
	r->flushes[BENCH_FL_W1] = bench_disk_per_event(f0, r->w1_acked);
	bench_dev_per_event(s.dir, &dev0, r->w1_acked, &r->dev_bytes[BENCH_FL_W1],
	                    &r->dev_flushes[BENCH_FL_W1]);
	fprintf(stderr, "bench: Redis (appendfsync %s) W3\n", appendfsync);
	f0 = bench_disk_flushes();
	w3(s.port, ev, r);
	r->flushes[BENCH_FL_W3] = bench_disk_per_event(f0, ev->w3.n);
	fprintf(stderr, "bench: Redis (appendfsync %s) W2\n", appendfsync);
	w2(s.port, r);
	r->mem_max_kb = bench_sampler_stop(&mem);
	r->ran = 1;
	srv_stop(&s);
	return 0;
}
