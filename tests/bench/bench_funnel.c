/*
 * tests/bench/bench_funnel.c - the DESIGN.md numbers, measured in one run,
 * side by side with Redis Streams doing the same work with the same events.
 *
 *   W1 durable ingest: 4 producers, pipelined batches, ack after fsync
 *   W2 replay from seq 1 to a subscriber
 *   W3 commit -> subscriber latency at a paced 10,000 events/s
 *   W4 one event, publish -> ack, idle daemon
 *   S  daemon start with a large log
 *   M  daemon private memory (max seen during the run)
 *
 * Sizes come from the environment: BENCH_EVENTS (W1, default 1000000),
 * BENCH_START_EVENTS (S, default 10000000; 0 skips), BENCH_OUT (a file
 * that receives the table too).  Prints one table; never asserts on time.
 */
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "funnel/funnel.h"
#include "harness.h"
#include "workload.h"

#define PRODUCERS 4
#define BATCH 100
#define WINDOW 16
#define POOL 1024     /* distinct data payloads per producer, cycled */

static FILE *out_file;

static void
emit(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
	if (out_file) {
		va_start(ap, fmt);
		vfprintf(out_file, fmt, ap);
		va_end(ap);
		fflush(out_file);
	}
}

static uint64_t
env_u64(const char *name, uint64_t dflt)
{
	const char *v = getenv(name);
	return v && *v ? strtoull(v, NULL, 10) : dflt;
}

static uint64_t
wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static double
pct(uint64_t *v, size_t n, double p)
{
	if (n == 0)
		return 0;
	size_t i = (size_t)(p * (double)(n - 1));
	return (double)v[i] / 1e6;   /* ns -> ms */
}

/* ---- daemon private memory, sampled in the background ---- */

static volatile int sampling;
static volatile uint64_t max_private_kb;
static pid_t sample_pid;

/* Anonymous private memory: what the daemon itself allocated, not the
 * log's pages that LMDB maps from the file (those are shared, reclaimable
 * page cache). */
static uint64_t
anon_kb(pid_t pid)
{
	char path[64], line[256];
	uint64_t kb = 0, v;
	snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return 0;
	while (fgets(line, sizeof line, f)) {
		if (sscanf(line, "Anonymous: %" SCNu64, &v) == 1)
			kb += v;
	}
	fclose(f);
	return kb;
}

static void *
sampler(void *arg)
{
	(void)arg;
	while (sampling) {
		uint64_t kb = anon_kb(sample_pid);
		if (kb > max_private_kb)
			max_private_kb = kb;
		usleep(20000);
	}
	return NULL;
}

/* ---- funnel workloads ---- */

typedef struct prod_arg {
	const char *endpoint;
	int id;
	uint64_t events;
	uint64_t acked;
	int failed;
} prod_arg;

static void *
funnel_producer_run(void *arg)
{
	prod_arg *a = arg;
	funnel_producer *p;
	msgpack_sbuffer pool[POOL];
	funnel_event evs[BATCH];
	char leads[BATCH][32], ids[BATCH][32];
	funnel_ack acks[BATCH];

	for (int i = 0; i < POOL; i++) {
		msgpack_sbuffer_init(&pool[i]);
		wl_lead_data(&pool[i], (uint64_t)a->id, (uint64_t)i);
	}
	if (funnel_producer_new(&p, a->endpoint, 30000) != FUNNEL_OK) {
		a->failed = 1;
		return NULL;
	}
	funnel_set_window(p, WINDOW);
	for (uint64_t sent = 0; sent < a->events; sent += BATCH) {
		for (int i = 0; i < BATCH; i++) {
			uint64_t n = sent + (uint64_t)i;
			snprintf(leads[i], sizeof leads[i], "L-%d-%" PRIu64, a->id, n);
			snprintf(ids[i], sizeof ids[i], "w1-%d-%" PRIu64, a->id, n);
			evs[i] = (funnel_event){ .type = "lead.captured", .lead = leads[i], .id = ids[i],
			                         .data = pool[n % POOL].data, .data_len = pool[n % POOL].size };
		}
		uint64_t rid;
		/* funnel_send collects replies itself when the window is full */
		if (funnel_send(p, evs, BATCH, &rid) != FUNNEL_OK) {
			a->failed = 1;
			break;
		}
		while (funnel_in_flight(p) >= WINDOW) {
			size_t n;
			if (funnel_collect(p, 30000, &rid, acks, BATCH, &n) != FUNNEL_OK) {
				a->failed = 1;
				goto done;
			}
			a->acked += n;
		}
	}
	while (funnel_in_flight(p) > 0) {
		uint64_t rid;
		size_t n;
		if (funnel_collect(p, 30000, &rid, acks, BATCH, &n) != FUNNEL_OK) {
			a->failed = 1;
			break;
		}
		a->acked += n;
	}
done:
	funnel_producer_destroy(&p);
	for (int i = 0; i < POOL; i++)
		msgpack_sbuffer_destroy(&pool[i]);
	return NULL;
}

/* W1: returns events/s. */
static double
w1_funnel(const daemon_proc *d, uint64_t total, int id_base)
{
	pthread_t th[PRODUCERS];
	prod_arg args[PRODUCERS];
	uint64_t t0 = harness_now_ns();
	for (int i = 0; i < PRODUCERS; i++) {
		args[i] = (prod_arg){ .endpoint = d->ingest, .id = id_base + i, .events = total / PRODUCERS };
		pthread_create(&th[i], NULL, funnel_producer_run, &args[i]);
	}
	uint64_t acked = 0;
	int failed = 0;
	for (int i = 0; i < PRODUCERS; i++) {
		pthread_join(th[i], NULL);
		acked += args[i].acked;
		failed |= args[i].failed;
	}
	double secs = (double)(harness_now_ns() - t0) / 1e9;
	if (failed)
		fprintf(stderr, "bench: a funnel producer failed\n");
	return (double)acked / secs;
}

/* W4: single-event publish -> ack latencies on an idle daemon. */
static void
w4_funnel(const daemon_proc *d, double *p50, double *p99)
{
	enum { N = 3000 };
	static uint64_t lat[N];
	funnel_producer *p;
	msgpack_sbuffer sb;
	char lead[32], id[32];
	msgpack_sbuffer_init(&sb);
	wl_lead_data(&sb, 99, 1);
	funnel_producer_new(&p, d->ingest, 10000);
	for (int i = 0; i < N; i++) {
		snprintf(lead, sizeof lead, "W4-%d", i);
		snprintf(id, sizeof id, "w4-%d", i);
		funnel_event ev = { .type = "lead.captured", .lead = lead, .id = id, .data = sb.data, .data_len = sb.size };
		funnel_ack ack;
		uint64_t t0 = harness_now_ns();
		funnel_publish(p, &ev, 1, &ack);
		lat[i] = harness_now_ns() - t0;
		usleep(200);   /* idle between events */
	}
	qsort(lat, N, sizeof lat[0], cmp_u64);
	*p50 = pct(lat, N, 0.50);
	*p99 = pct(lat, N, 0.99);
	funnel_producer_destroy(&p);
	msgpack_sbuffer_destroy(&sb);
}

typedef struct sub_arg {
	const daemon_proc *d;
	uint64_t from;
	uint64_t count;
	uint64_t *lat;       /* W3: realtime receive - record ts, per event */
	uint64_t got;
	volatile int ready;
} sub_arg;

static void *
w3_subscriber(void *arg)
{
	sub_arg *a = arg;
	funnel_subscriber *s;
	funnel_sub_opts o = { .publish = a->d->publish, .query = a->d->query, .from = a->from, .live = 1 };
	if (funnel_subscriber_new(&s, &o) != FUNNEL_OK)
		return NULL;
	a->ready = 1;
	while (a->got < a->count) {
		const uint8_t *rec;
		size_t len;
		uint64_t ts;
		if (funnel_subscriber_next(s, 10000, &rec, &len) != FUNNEL_OK)
			break;
		uint64_t now = wall_ns();
		funnel_record_peek(rec, len, NULL, &ts);
		a->lat[a->got++] = now > ts ? now - ts : 0;
	}
	funnel_subscriber_destroy(&s);
	return NULL;
}

/* W3: paced 10,000 events/s for `secs`; latency from the record's ts
 * (stamped just before the commit) to the subscriber holding it. */
static void
w3_funnel(const daemon_proc *d, uint64_t head, int secs, double *p50, double *p99, double *p999)
{
	uint64_t n = 10000u * (uint64_t)secs;
	sub_arg sa = { .d = d, .from = head + 1, .count = n, .lat = calloc(n, sizeof(uint64_t)) };
	pthread_t th;
	pthread_create(&th, NULL, w3_subscriber, &sa);
	while (!sa.ready)
		usleep(1000);
	usleep(300000);   /* let the subscription settle */

	funnel_producer *p;
	msgpack_sbuffer sb;
	char lead[32];
	msgpack_sbuffer_init(&sb);
	wl_lead_data(&sb, 77, 1);
	funnel_producer_new(&p, d->ingest, 10000);
	funnel_set_window(p, 256);
	uint64_t t0 = harness_now_ns();
	for (uint64_t i = 0; i < n; i++) {
		uint64_t due = t0 + i * 100000u;   /* every 100 us */
		/* collect what has come back, then sleep until due: a spinning
		 * producer would take a core from the daemon being measured */
		uint64_t rid;
		funnel_ack ack;
		size_t na;
		while (funnel_in_flight(p) > 0 && funnel_collect(p, 0, &rid, &ack, 1, &na) != FUNNEL_ETIMEDOUT)
			;
		uint64_t now = harness_now_ns();
		if (due > now) {
			struct timespec ts = { 0, (long)(due - now) };
			nanosleep(&ts, NULL);
		}
		snprintf(lead, sizeof lead, "W3-%" PRIu64, i);
		funnel_event ev = { .type = "lead.captured", .lead = lead, .data = sb.data, .data_len = sb.size };
		funnel_send(p, &ev, 1, &rid);
	}
	while (funnel_in_flight(p) > 0) {
		uint64_t rid;
		funnel_ack ack;
		size_t na;
		if (funnel_collect(p, 10000, &rid, &ack, 1, &na) == FUNNEL_ETIMEDOUT)
			break;
	}
	pthread_join(th, NULL);
	qsort(sa.lat, sa.got, sizeof(uint64_t), cmp_u64);
	*p50 = pct(sa.lat, sa.got, 0.50);
	*p99 = pct(sa.lat, sa.got, 0.99);
	*p999 = pct(sa.lat, sa.got, 0.999);
	if (sa.got != n)
		fprintf(stderr, "bench: W3 subscriber got %" PRIu64 " of %" PRIu64 "\n", sa.got, n);
	free(sa.lat);
	funnel_producer_destroy(&p);
	msgpack_sbuffer_destroy(&sb);
}

/* W2: replay everything from seq 1 to a subscriber; events/s. */
static double
w2_funnel(const daemon_proc *d, uint64_t *count)
{
	funnel_subscriber *s;
	funnel_sub_opts o = { .publish = d->publish, .query = d->query, .from = 1, .live = 0 };
	uint64_t n = 0, bytes = 0;
	if (funnel_subscriber_new(&s, &o) != FUNNEL_OK)
		return 0;
	uint64_t t0 = harness_now_ns();
	for (;;) {
		const uint8_t *rec;
		size_t len;
		int rc = funnel_subscriber_next(s, 30000, &rec, &len);
		if (rc != FUNNEL_OK)
			break;
		n++;
		bytes += len;
	}
	double secs = (double)(harness_now_ns() - t0) / 1e9;
	funnel_subscriber_destroy(&s);
	*count = n;
	return (double)n / secs;
}

/* ---- Redis Streams, the same work ---- */

typedef struct redis_proc {
	pid_t pid;
	int port;
	char dir[256];
} redis_proc;

static int
redis_start(redis_proc *r, const char *fsync)
{
	char port[16];
	snprintf(r->dir, sizeof r->dir, "/tmp/funnel-bench-redis-XXXXXX");
	if (mkdtemp(r->dir) == NULL)
		return -1;
	r->port = 12000 + (int)(getpid() % 8000);   /* below the ephemeral range, apart from the harness's */
	snprintf(port, sizeof port, "%d", r->port);
	r->pid = fork();
	if (r->pid == 0) {
		int fd = open("/dev/null", 1);
		dup2(fd, 1);
		execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--dir", r->dir,
		       "--appendonly", "yes", "--appendfsync", fsync, "--save", "", "--protected-mode", "no",
		       (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		redisContext *c = redisConnect("127.0.0.1", r->port);
		if (c && !c->err) {
			redisReply *rep = redisCommand(c, "PING");
			int ok = rep && rep->type == REDIS_REPLY_STATUS;
			freeReplyObject(rep);
			redisFree(c);
			if (ok)
				return 0;
		} else if (c) {
			redisFree(c);
		}
		usleep(10000);
	}
	return -1;
}

static void
redis_stop(redis_proc *r)
{
	if (r->pid > 0) {
		kill(r->pid, SIGKILL);
		waitpid(r->pid, NULL, 0);
	}
	harness_rmrf(r->dir);
}

/* XADD argv for one event: the envelope fields and the data map flattened. */
typedef struct xadd {
	const char *argv[64];
	size_t lens[64];
	int argc;
	char lead[32], id[32];
} xadd;

static void
xadd_build(xadd *x, msgpack_object *data, int producer, uint64_t n)
{
	x->argc = 0;
	snprintf(x->lead, sizeof x->lead, "L-%d-%" PRIu64, producer, n);
	snprintf(x->id, sizeof x->id, "w1-%d-%" PRIu64, producer, n);
#define A(s, l) do { x->argv[x->argc] = (s); x->lens[x->argc++] = (l); } while (0)
	A("XADD", 4); A("funnel", 6); A("*", 1);
	A("type", 4); A("lead.captured", 13);
	A("lead", 4); A(x->lead, strlen(x->lead));
	A("id", 2); A(x->id, strlen(x->id));
	for (uint32_t i = 0; i < data->via.map.size && x->argc < 62; i++) {
		A(data->via.map.ptr[i].key.via.str.ptr, data->via.map.ptr[i].key.via.str.size);
		A(data->via.map.ptr[i].val.via.str.ptr, data->via.map.ptr[i].val.via.str.size);
	}
#undef A
}

typedef struct redis_arg {
	int port;
	int id;
	uint64_t events;
	uint64_t acked;
} redis_arg;

static void *
redis_producer_run(void *arg)
{
	redis_arg *a = arg;
	redisContext *c = redisConnect("127.0.0.1", a->port);
	msgpack_sbuffer pool[POOL];
	msgpack_unpacked up[POOL];
	xadd x;
	if (c == NULL || c->err)
		return NULL;
	for (int i = 0; i < POOL; i++) {
		msgpack_sbuffer_init(&pool[i]);
		wl_lead_data(&pool[i], (uint64_t)a->id, (uint64_t)i);
		msgpack_unpacked_init(&up[i]);
		msgpack_unpack_next(&up[i], pool[i].data, pool[i].size, NULL);
	}
	/* same shape as funnel's W1: batches of BATCH commands, WINDOW batches in flight */
	uint64_t sent = 0, replies = 0;
	while (replies < a->events) {
		while (sent < a->events && sent - replies < (uint64_t)BATCH * WINDOW) {
			for (int i = 0; i < BATCH; i++, sent++) {
				xadd_build(&x, &up[sent % POOL].data, a->id, sent);
				redisAppendCommandArgv(c, x.argc, x.argv, x.lens);
			}
		}
		for (int i = 0; i < BATCH && replies < sent; i++, replies++) {
			redisReply *rep;
			if (redisGetReply(c, (void **)&rep) != REDIS_OK)
				goto out;
			if (rep->type != REDIS_REPLY_ERROR)
				a->acked++;
			freeReplyObject(rep);
		}
	}
out:
	for (int i = 0; i < POOL; i++) {
		msgpack_unpacked_destroy(&up[i]);
		msgpack_sbuffer_destroy(&pool[i]);
	}
	redisFree(c);
	return NULL;
}

static double
w1_redis(int port, uint64_t total)
{
	pthread_t th[PRODUCERS];
	redis_arg args[PRODUCERS];
	uint64_t t0 = harness_now_ns();
	for (int i = 0; i < PRODUCERS; i++) {
		args[i] = (redis_arg){ .port = port, .id = i, .events = total / PRODUCERS };
		pthread_create(&th[i], NULL, redis_producer_run, &args[i]);
	}
	uint64_t acked = 0;
	for (int i = 0; i < PRODUCERS; i++) {
		pthread_join(th[i], NULL);
		acked += args[i].acked;
	}
	return (double)acked / ((double)(harness_now_ns() - t0) / 1e9);
}

static void
w4_redis(int port, double *p50, double *p99)
{
	enum { N = 3000 };
	static uint64_t lat[N];
	redisContext *c = redisConnect("127.0.0.1", port);
	msgpack_sbuffer sb;
	msgpack_unpacked up;
	xadd x;
	msgpack_sbuffer_init(&sb);
	wl_lead_data(&sb, 99, 1);
	msgpack_unpacked_init(&up);
	msgpack_unpack_next(&up, sb.data, sb.size, NULL);
	for (int i = 0; i < N; i++) {
		xadd_build(&x, &up.data, 9, (uint64_t)i);
		uint64_t t0 = harness_now_ns();
		redisReply *rep = redisCommandArgv(c, x.argc, x.argv, x.lens);
		lat[i] = harness_now_ns() - t0;
		freeReplyObject(rep);
		usleep(200);
	}
	qsort(lat, N, sizeof lat[0], cmp_u64);
	*p50 = pct(lat, N, 0.5);
	*p99 = pct(lat, N, 0.99);
	msgpack_unpacked_destroy(&up);
	msgpack_sbuffer_destroy(&sb);
	redisFree(c);
}

/* W2 for Redis: XRANGE pages of 1000 from the start. */
static double
w2_redis(int port, uint64_t *count)
{
	redisContext *c = redisConnect("127.0.0.1", port);
	char start[64] = "-";
	uint64_t n = 0;
	uint64_t t0 = harness_now_ns();
	for (;;) {
		redisReply *rep = redisCommand(c, "XRANGE funnel %s + COUNT 1000", start);
		if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements == 0) {
			freeReplyObject(rep);
			break;
		}
		n += rep->elements;
		redisReply *last = rep->element[rep->elements - 1];
		snprintf(start, sizeof start, "(%s", last->element[0]->str);
		freeReplyObject(rep);
	}
	double secs = (double)(harness_now_ns() - t0) / 1e9;
	redisFree(c);
	*count = n;
	return (double)n / secs;
}

/* ---- start time with a large log ---- */

static double
start_ms(daemon_proc *d, double *open_ms)
{
	harness_stop(d);
	uint64_t t0 = harness_now_ns();
	if (harness_restart(d) != 0)
		return -1;
	double ms = (double)(harness_now_ns() - t0) / 1e6;
	/* the daemon logs the store's own open time: "... in X ms" */
	FILE *f = fopen(d->log, "r");
	char line[512];
	*open_ms = -1;
	while (f && fgets(line, sizeof line, f)) {
		char *p = strstr(line, ", in ");
		if (strstr(line, "opened") && p)
			*open_ms = strtod(p + 5, NULL);
	}
	if (f)
		fclose(f);
	return ms;
}

int
main(void)
{
	uint64_t w1_events = env_u64("BENCH_EVENTS", 1000000);
	uint64_t start_events = env_u64("BENCH_START_EVENTS", 10000000);
	const char *outp = getenv("BENCH_OUT");
	daemon_proc d;
	pthread_t samp;
	double f_w1, f_w2, f_w4_50, f_w4_99, f_w3_50, f_w3_99, f_w3_999;
	double r_w1 = -1, r_w1e = -1, r_w2 = -1, r_w4_50 = -1, r_w4_99 = -1;
	uint64_t n2 = 0, rn2 = 0;
	char host[128] = "";

	signal(SIGPIPE, SIG_IGN);
	if (outp)
		out_file = fopen(outp, "w");
	gethostname(host, sizeof host);

	/* funnel, durable (the default) */
	if (harness_start(&d, NULL) != 0)
		return 1;
	sample_pid = d.pid;
	sampling = 1;
	pthread_create(&samp, NULL, sampler, NULL);
	fprintf(stderr, "bench: W4 funnel\n");
	w4_funnel(&d, &f_w4_50, &f_w4_99);
	fprintf(stderr, "bench: W1 funnel (%" PRIu64 " events)\n", w1_events);
	f_w1 = w1_funnel(&d, w1_events, 0);
	funnel_query *q;
	funnel_status st;
	funnel_query_new(&q, d.query, 10000);
	funnel_status_get(q, &st);
	fprintf(stderr, "bench: W3 funnel\n");
	w3_funnel(&d, st.head, 3, &f_w3_50, &f_w3_99, &f_w3_999);
	fprintf(stderr, "bench: W2 funnel\n");
	f_w2 = w2_funnel(&d, &n2);
	uint64_t mem_run_kb = max_private_kb;
	sampling = 0;
	pthread_join(samp, NULL);

	/* a large log for the start time: fill fast (no fsync), then measure a restart */
	double s_ms = -1, s_open = -1;
	uint64_t s_events = 0, mem_idle_kb = 0;
	if (start_events > 0) {
		harness_stop(&d);
		snprintf(d.extra, sizeof d.extra, "--no-sync");
		harness_restart(&d);
		funnel_status_get(q, &st);
		if (st.head < start_events) {
			fprintf(stderr, "bench: filling the log to %" PRIu64 " events\n", start_events);
			w1_funnel(&d, start_events - st.head, 100);
		}
		d.extra[0] = '\0';
		s_ms = start_ms(&d, &s_open);
		funnel_status_get(q, &st);
		s_events = st.head;
		usleep(200000);
		mem_idle_kb = anon_kb(d.pid);
	}
	funnel_query_destroy(&q);
	harness_cleanup(&d);

	/* Redis Streams */
	redis_proc r;
	if (redis_start(&r, "always") == 0) {
		fprintf(stderr, "bench: Redis (appendfsync always)\n");
		w4_redis(r.port, &r_w4_50, &r_w4_99);
		r_w1 = w1_redis(r.port, w1_events);
		r_w2 = w2_redis(r.port, &rn2);
		redis_stop(&r);
	} else {
		fprintf(stderr, "bench: redis-server did not start; Redis columns left empty\n");
	}
	if (redis_start(&r, "everysec") == 0) {
		fprintf(stderr, "bench: Redis (appendfsync everysec)\n");
		r_w1e = w1_redis(r.port, w1_events);
		redis_stop(&r);
	}

	emit("\nfunnel bench on %s, %ld cores; funnel durable: fsync before every ack\n", host,
	     sysconf(_SC_NPROCESSORS_ONLN));
	emit("events: ~300-byte lead.captured, 4 producers, batches of %d, %d batches in flight\n",
	     BATCH, WINDOW);
	emit("%-44s %16s %14s %18s %18s %8s\n", "workload", "funnel", "target", "Redis always",
	     "Redis everysec", "ratio");
	emit("%-44s %12.0f/s %14s %16.0f/s %16.0f/s %7.1fx\n", "W1 durable ingest (events)", f_w1,
	     ">= 500000/s", r_w1, r_w1e, r_w1 > 0 ? f_w1 / r_w1 : 0);
	emit("%-44s %12.0f/s %14s %16.0f/s %18s %7.1fx\n", "W2 replay from seq 1 (events)", f_w2,
	     ">= 2000000/s", r_w2, "-", r_w2 > 0 ? f_w2 / r_w2 : 0);
	emit("%-44s %13.3fms %14s %18s %18s\n", "W3 commit->subscriber p50 @10k/s", f_w3_50, "-", "-", "-");
	emit("%-44s %13.3fms %14s %18s %18s\n", "W3 commit->subscriber p99 @10k/s", f_w3_99, "<= 1 ms", "-", "-");
	emit("%-44s %13.3fms %14s %18s %18s\n", "W3 commit->subscriber p99.9 @10k/s", f_w3_999, "-", "-", "-");
	emit("%-44s %13.3fms %14s %16.3fms %18s\n", "W4 publish->ack p50, idle", f_w4_50, "<= 0.5 ms",
	     r_w4_50, "-");
	emit("%-44s %13.3fms %14s %16.3fms %18s\n", "W4 publish->ack p99, idle", f_w4_99, "<= 2 ms",
	     r_w4_99, "-");
	if (start_events > 0) {
		emit("%-44s %13.1fms %14s   (log open %.1f ms, %" PRIu64 " events)\n",
		     "daemon start, spawn -> serving", s_ms, "<= 100 ms", s_open, s_events);
		emit("%-44s %12.1fMB %14s\n", "daemon memory, idle after start (anon)",
		     (double)mem_idle_kb / 1024, "<= 64 MB");
	}
	emit("%-44s %12.1fMB %14s\n", "daemon memory, max during W1-W4 (anon)",
	     (double)mem_run_kb / 1024, "<= 64 MB");
	emit("W2 counted %" PRIu64 " funnel events and %" PRIu64 " Redis entries\n", n2, rn2);
	if (out_file)
		fclose(out_file);
	return 0;
}
