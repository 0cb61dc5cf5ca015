/*
 * tests/bench/bench_funnel.c - the DESIGN.md numbers, measured in one run,
 * side by side with the peers doing the same work with the same events:
 * Redis Streams (AOF, appendfsync always and everysec) and NATS JetStream
 * (file storage), each started here on loopback (peer_redis.c,
 * peer_nats.c).
 *
 *   W1 durable ingest: 4 producers, pipelined, 1600 events in flight each
 *   W2 replay from the first event to one reader
 *   W3 send -> subscriber latency at a paced 10,000 events/s (funnel also:
 *      commit -> subscriber, from the record's ts, the DESIGN.md figure)
 *   W4 one event, publish -> ack, idle server
 *   S  funnel daemon start with a large log
 *   M  server anonymous memory, max during W4..W2 (and funnel's idle)
 *   C  W1 and W4 again against a funneld with --access (CURVE on every
 *      socket, the producer stamped into each record): what it costs
 *
 * Events: the funnel-shaped stream of tests/common/workload.h (captures,
 * activity, qualification, hand-over, outcomes; ~300-byte envelopes),
 * generated before any clock starts, the same bytes for every system.
 *
 * Knobs (environment; `make bench` passes them through):
 *   BENCH_EVENTS        W1 events per system            (default 1000000)
 *   BENCH_START_EVENTS  log size for S; 0 skips S       (default 10000000)
 *   BENCH_BACKUP_EVENTS W1 events beside a backup of the S log, and the
 *                       same without one (B; runs after S) (default 400000)
 *   BENCH_SEALED        1: W1 again on a funneld with a master key, the
 *                       default personal fields sealed: a capture's email
 *                       and name, an activity's ip, two thirds of the
 *                       events (PROTOCOL.md section 21); 0 skips it
 *                                                       (default 1)
 *   BENCH_W3_SECS       W3 duration at 10,000 events/s  (default 3)
 *   BENCH_W4_EVENTS     W4 events                       (default 3000)
 *   BENCH_PEERS         comma list of redis-always, redis-everysec,
 *                       jetstream; "all" or "none"      (default all)
 *   BENCH_SEED          workload seed                   (default 1)
 *   BENCH_CURVE         0 skips C                       (default 1)
 *   BENCH_OUT           file for the table and the raw key=value figures,
 *                       Markdown (default: none; run.sh sets
 *                       build/bench/RESULTS.md)
 *   BENCH_OUT_APPEND    1: add to BENCH_OUT instead of replacing it
 *   BENCH_FUNNELD_ARGS  extra funneld flags for W1-W4 (e.g. --no-sync, to
 *                       see what is not the flush); the table says them
 *   BENCH_FLUSH_DELAY_US a slower disk, the same for every system: each
 *                       flush of a server's data (fsync, fdatasync,
 *                       msync, O_DSYNC write) sleeps this many us after
 *                       the real one, through tests/crash/shim.c
 *                       preloaded into funneld and the peers' servers,
 *                       and the table adds each system's flushes per
 *                       event (counted by the shim).  0 counts without
 *                       delaying; unset: off (default).  BENCH_SHIM names
 *                       the shim (default $BUILD/tests/crashshim.so).
 *                       nats-server makes its system calls itself (Go):
 *                       the shim neither slows nor counts its flushes.
 * A full run (defaults, all peers) takes a few minutes on 2 cores, half
 * of it filling the 10M-event log for S (about 120,000 events/s without
 * fsync); BENCH_EVENTS=100000 BENCH_START_EVENTS=0 takes under a minute.
 *
 * Prints one table; never asserts on time.  Exit 1 only when funnel
 * itself cannot be started or an input is unusable.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include <zmq.h>

#include "funnel/funnel.h"
#include "harness.h"
#include "workload.h"

#define FILL_CHUNK 50000   /* events generated at a time when filling the log for S */

enum { SYS_FUNNEL, SYS_REDIS_ALWAYS, SYS_REDIS_EVERYSEC, SYS_JETSTREAM, NSYS };

static const struct sysdesc {
	const char *key;       /* BENCH_PEERS name */
	const char *raw;       /* prefix of its raw figures */
	const char *title;     /* table column */
	const char *durability;
} systems[NSYS] = {
	{ "funnel", "funnel", "funnel",
	  "fdatasync (journal entry) before every ack, one per drained group of requests" },
	{ "redis-always", "redis_always", "Redis always",
	  "AOF appendfsync always: fsync before the replies of each event-loop pass" },
	{ "redis-everysec", "redis_everysec", "Redis everysec",
	  "AOF appendfsync everysec: ack before fsync, fsync once a second in the background;\n"
	  "about 1 s of acknowledged writes can be lost on power loss" },
	{ "jetstream", "jetstream", "JetStream",
	  "nats-server 2.9 file storage: ack once written to the OS, fsync every 2 minutes\n"
	  "(sync_interval, not settable in 2.9; `sync_interval: always` came with 2.10);\n"
	  "up to 2 minutes of acknowledged writes can be lost on power loss" },
};

typedef struct config {
	uint64_t w1_events, start_events, w3_secs, w4_events, seed, curve;
	uint64_t backup_w1_events;   /* W1 events beside a backup of the start log (and without) */
	uint64_t sealed;             /* 1: W1 again with personal data sealed */
	int run[NSYS];
	const char *out;
} config;

/* What only funnel measures. */
typedef struct funnel_extra {
	double w3_commit[3];      /* commit (record ts) -> subscriber: p50 p99 p99.9, ms */
	int start_ran;
	int curve_ran;
	bench_result curve;       /* W1 and W4 with CURVE on (C) */
	double start_ms, open_ms;
	uint64_t start_events, mem_idle_kb;
	uint64_t w3_order_errors; /* W3 records that were not the next one sent */
	/* B: `funnel backup` of the start log, alone and under W1 */
	int backup_ran;
	double backup_mb_s, backup_eps;     /* the copy alone */
	double w1_plain_eps, w1_backup_eps; /* W1 on that log without and during a backup */
	uint64_t backup_events;
	/* W1 on a funneld that seals personal data (a master key) */
	int sealed_ran;
	double w1_sealed_eps;
} funnel_extra;

static uint64_t
env_u64(const char *name, uint64_t dflt)
{
	const char *v = getenv(name);
	if (v == NULL || *v == '\0')
		return dflt;
	char *end;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno || *end || *v == '-') {
		fprintf(stderr, "bench: %s=%s is not a number; using %" PRIu64 "\n", name, v, dflt);
		return dflt;
	}
	return x;
}

static int
parse_peers(const char *v, int run[NSYS])
{
	run[SYS_FUNNEL] = 1;
	for (int i = 1; i < NSYS; i++)
		run[i] = v == NULL || *v == '\0' || strcmp(v, "all") == 0;
	if (v == NULL || *v == '\0' || strcmp(v, "all") == 0 || strcmp(v, "none") == 0)
		return 0;
	char buf[256];
	snprintf(buf, sizeof buf, "%s", v);
	for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
		int found = 0;
		for (int i = 1; i < NSYS; i++)
			if (strcmp(t, systems[i].key) == 0)
				run[i] = found = 1;
		if (!found) {
			fprintf(stderr, "bench: BENCH_PEERS: unknown peer '%s' (redis-always, redis-everysec, "
			        "jetstream, all, none)\n", t);
			return -1;
		}
	}
	return 0;
}

static double
wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* ---- the events ---- */

static int
events_make(bench_events *ev, const config *c)
{
	char tag[24];
	memset(ev, 0, sizeof *ev);
	ev->w1_total = c->w1_events / BENCH_PRODUCERS * BENCH_PRODUCERS;
	for (int i = 0; i < BENCH_PRODUCERS; i++) {
		wl_funnel g;
		snprintf(tag, sizeof tag, "w1p%d", i);
		wl_funnel_init(&g, c->seed, tag);
		if (wl_set_fill(&ev->w1[i], &g, c->w1_events / BENCH_PRODUCERS) != 0)
			return -1;
	}
	wl_funnel g3, g4;
	wl_funnel_init(&g3, c->seed, "w3");
	wl_funnel_init(&g4, c->seed, "w4");
	if (wl_set_fill(&ev->w3, &g3, c->w3_secs * BENCH_W3_RATE) != 0 ||
	    wl_set_fill(&ev->w4, &g4, c->w4_events) != 0)
		return -1;
	return 0;
}

static void
events_release(bench_events *ev)
{
	for (int i = 0; i < BENCH_PRODUCERS; i++)
		wl_set_release(&ev->w1[i]);
	wl_set_release(&ev->w3);
	wl_set_release(&ev->w4);
}

/* ---- funnel ---- */

typedef struct prod_arg {
	const char *endpoint;
	const wl_set *set;        /* W1: the events to send */
	wl_funnel *gen;           /* or, filling the log: generate gen_events here */
	uint64_t gen_events;
	uint64_t acked, refused;
	char err[300];
} prod_arg;

/* Events per request, by rid, for the requests in flight (the window is
 * far below the ring's size). */
typedef struct rid_ring {
	uint32_t n[1024];
} rid_ring;

static int
collect_one(funnel_producer *p, prod_arg *a, rid_ring *ring, int timeout_ms)
{
	uint64_t rid = 0;
	size_t n = 0;
	int rc = funnel_collect(p, timeout_ms, &rid, NULL, 0, &n);
	if (rc == FUNNEL_OK) {
		a->acked += n;
		return 0;
	}
	if (rc == FUNNEL_ETIMEDOUT || rc == FUNNEL_ETRANSPORT || rc == FUNNEL_EPROTOCOL) {
		snprintf(a->err, sizeof a->err, "%s", funnel_producer_error(p)->message);
		return -1;
	}
	/* the daemon refused the request: none of its events are stored */
	a->refused += ring->n[rid % 1024];
	if (a->err[0] == '\0')
		snprintf(a->err, sizeof a->err, "%s", funnel_producer_error(p)->message);
	return 0;
}

/* Send a set's events in requests of BENCH_BATCH contiguous envelopes,
 * BENCH_WINDOW requests in flight; collects as it goes, not at the end. */
static int
send_set(funnel_producer *p, prod_arg *a, rid_ring *ring, const wl_set *s)
{
	for (size_t i = 0; i < s->n; i += BENCH_BATCH) {
		size_t k = s->n - i < BENCH_BATCH ? s->n - i : BENCH_BATCH;
		size_t len = (size_t)(s->ev[i + k - 1].env + s->ev[i + k - 1].env_len - s->ev[i].env);
		uint64_t rid;
		if (funnel_send_packed(p, s->ev[i].env, len, k, &rid) != FUNNEL_OK) {
			snprintf(a->err, sizeof a->err, "%s", funnel_producer_error(p)->message);
			return -1;
		}
		ring->n[rid % 1024] = (uint32_t)k;
		while (funnel_in_flight(p) >= BENCH_WINDOW)
			if (collect_one(p, a, ring, 30000) != 0)
				return -1;
	}
	return 0;
}

static void *
funnel_producer_run(void *arg)
{
	prod_arg *a = arg;
	funnel_producer *p;
	rid_ring *ring = calloc(1, sizeof *ring);
	wl_set chunk;
	uint64_t total = a->set ? a->set->n : a->gen_events;

	wl_set_init(&chunk);
	if (ring == NULL || funnel_producer_new(&p, a->endpoint, 30000) != FUNNEL_OK) {
		snprintf(a->err, sizeof a->err, "cannot make a producer");
		free(ring);
		a->refused = total;
		return NULL;
	}
	funnel_set_window(p, BENCH_WINDOW);
	if (a->set) {
		if (send_set(p, a, ring, a->set) != 0)
			goto done;
	} else {
		for (uint64_t left = a->gen_events; left > 0;) {
			size_t n = left < FILL_CHUNK ? (size_t)left : FILL_CHUNK;
			if (wl_set_fill(&chunk, a->gen, n) != 0 || send_set(p, a, ring, &chunk) != 0)
				goto done;
			left -= n;
		}
	}
	while (funnel_in_flight(p) > 0)
		if (collect_one(p, a, ring, 30000) != 0)
			break;
done:
	if (a->acked + a->refused < total)
		a->refused = total - a->acked;
	funnel_producer_destroy(&p);
	wl_set_release(&chunk);
	free(ring);
	return NULL;
}

/* W1 with the pre-generated sets (gens NULL), or filling the log with
 * per_gen events from each generator. */
static void
w1_funnel(const daemon_proc *d, const bench_events *ev, wl_funnel *gens, uint64_t per_gen, bench_result *r)
{
	pthread_t th[BENCH_PRODUCERS];
	prod_arg args[BENCH_PRODUCERS];
	uint64_t t0 = harness_now_ns();
	for (int i = 0; i < BENCH_PRODUCERS; i++) {
		args[i] = (prod_arg){ .endpoint = d->ingest };
		if (gens) {
			args[i].gen = &gens[i];
			args[i].gen_events = per_gen;
		} else {
			args[i].set = &ev->w1[i];
		}
		pthread_create(&th[i], NULL, funnel_producer_run, &args[i]);
	}
	r->w1_acked = r->w1_refused = 0;
	for (int i = 0; i < BENCH_PRODUCERS; i++) {
		pthread_join(th[i], NULL);
		r->w1_acked += args[i].acked;
		r->w1_refused += args[i].refused;
		if (args[i].err[0])
			fprintf(stderr, "bench: funnel producer %d: %s\n", i, args[i].err);
	}
	r->w1_eps = (double)r->w1_acked / ((double)(harness_now_ns() - t0) / 1e9);
}

/* W4: one event at a time, publish -> ack, idle daemon. */
static void
w4_funnel(const daemon_proc *d, const bench_events *ev, bench_result *r)
{
	const wl_set *s = &ev->w4;
	uint64_t *lat = calloc(s->n ? s->n : 1, sizeof *lat);
	static const double q[2] = { 0.50, 0.99 };
	funnel_producer *p = NULL;
	size_t n = 0;

	if (lat == NULL || funnel_producer_new(&p, d->ingest, 10000) != FUNNEL_OK)
		goto out;
	for (size_t i = 0; i < s->n; i++) {
		funnel_ack ack;
		uint64_t t0 = harness_now_ns();
		int rc = funnel_publish_packed(p, s->ev[i].env, s->ev[i].env_len, 1, &ack);
		uint64_t t1 = harness_now_ns();
		if (rc != FUNNEL_OK) {
			fprintf(stderr, "bench: funnel W4: %s\n", funnel_producer_error(p)->message);
			break;
		}
		lat[n++] = t1 - t0;
		usleep(BENCH_W4_GAP_US);
	}
	bench_quantiles_ms(lat, n, q, r->w4, 2);
out:
	funnel_producer_destroy(&p);
	free(lat);
}

typedef struct sub_arg {
	const daemon_proc *d;
	uint64_t from;               /* first seq of W3 */
	size_t count;
	const uint64_t *sent_ns;     /* written by the producer before each send */
	uint64_t *lat_send;          /* monotonic receive - send */
	uint64_t *lat_commit;        /* realtime receive - record ts */
	size_t got;
	uint64_t order_errors;
	volatile int ready;
} sub_arg;

static void *
w3_subscriber(void *arg)
{
	sub_arg *a = arg;
	funnel_subscriber *s;
	funnel_sub_opts o = { .publish = a->d->publish, .query = a->d->query, .from = a->from, .live = 1 };
	if (funnel_subscriber_new(&s, &o) != FUNNEL_OK) {
		a->ready = 1;
		return NULL;
	}
	a->ready = 1;
	while (a->got < a->count) {
		const uint8_t *rec;
		size_t len;
		uint64_t seq, ts;
		if (funnel_subscriber_next(s, 10000, &rec, &len) != FUNNEL_OK)
			break;
		uint64_t now = harness_now_ns();
		double wnow = wall_ns();
		funnel_record_peek(rec, len, &seq, &ts);
		if (seq != a->from + a->got)
			a->order_errors++;
		uint64_t sent = __atomic_load_n(&a->sent_ns[a->got], __ATOMIC_ACQUIRE);
		a->lat_send[a->got] = now > sent ? now - sent : 0;
		a->lat_commit[a->got] = wnow > (double)ts ? (uint64_t)(wnow - (double)ts) : 0;
		a->got++;
	}
	funnel_subscriber_destroy(&s);
	return NULL;
}

/* W3: one producer paced at BENCH_W3_RATE, a live subscriber. */
static void
w3_funnel(const daemon_proc *d, uint64_t head, const bench_events *ev, bench_result *r, funnel_extra *x)
{
	const wl_set *s = &ev->w3;
	size_t n = s->n ? s->n : 1;
	uint64_t *sent_ns = calloc(n, sizeof *sent_ns);
	sub_arg sa = { .d = d, .from = head + 1, .count = s->n, .sent_ns = sent_ns,
	               .lat_send = calloc(n, sizeof(uint64_t)), .lat_commit = calloc(n, sizeof(uint64_t)) };
	static const double q[3] = { 0.50, 0.99, 0.999 };
	funnel_producer *p = NULL;
	pthread_t th;

	if (sent_ns == NULL || sa.lat_send == NULL || sa.lat_commit == NULL ||
	    funnel_producer_new(&p, d->ingest, 10000) != FUNNEL_OK)
		goto out;
	funnel_set_window(p, BENCH_W3_WINDOW);
	pthread_create(&th, NULL, w3_subscriber, &sa);
	while (!sa.ready)
		usleep(1000);
	usleep(300000);   /* let the subscription settle */

	uint64_t t0 = harness_now_ns();
	for (size_t i = 0; i < s->n; i++) {
		uint64_t rid;
		size_t na;
		/* sleep until due (a spinning producer would take a core from the
		 * daemon being measured), then collect what has come back: not
		 * right after a send, where that work would keep the CPU from
		 * the producer's I/O thread, which sends the event */
		bench_sleep_until(t0 + i * (1000000000u / BENCH_W3_RATE));
		while (funnel_in_flight(p) > 0 && funnel_collect(p, 0, &rid, NULL, 0, &na) != FUNNEL_ETIMEDOUT)
			;
		__atomic_store_n(&sent_ns[i], harness_now_ns(), __ATOMIC_RELEASE);
		if (funnel_send_packed(p, s->ev[i].env, s->ev[i].env_len, 1, &rid) != FUNNEL_OK) {
			fprintf(stderr, "bench: funnel W3: %s\n", funnel_producer_error(p)->message);
			break;
		}
	}
	while (funnel_in_flight(p) > 0) {
		uint64_t rid;
		size_t na;
		if (funnel_collect(p, 10000, &rid, NULL, 0, &na) == FUNNEL_ETIMEDOUT)
			break;
	}
	pthread_join(th, NULL);
	r->w3_got = sa.got;
	x->w3_order_errors = sa.order_errors;
	bench_quantiles_ms(sa.lat_send, sa.got, q, r->w3, 3);
	bench_quantiles_ms(sa.lat_commit, sa.got, q, x->w3_commit, 3);
out:
	funnel_producer_destroy(&p);
	free(sent_ns);
	free(sa.lat_send);
	free(sa.lat_commit);
}

/* W2: replay everything from seq 1 to a subscriber. */
static void
w2_funnel(const daemon_proc *d, bench_result *r)
{
	funnel_subscriber *s;
	funnel_sub_opts o = { .publish = d->publish, .query = d->query, .from = 1, .live = 0 };
	uint64_t n = 0;
	if (funnel_subscriber_new(&s, &o) != FUNNEL_OK)
		return;
	uint64_t t0 = harness_now_ns();
	for (;;) {
		const uint8_t *rec;
		size_t len;
		if (funnel_subscriber_next(s, 30000, &rec, &len) != FUNNEL_OK)
			break;
		n++;
	}
	r->w2_eps = (double)n / ((double)(harness_now_ns() - t0) / 1e9);
	r->w2_count = n;
	funnel_subscriber_destroy(&s);
}

/* One funnel_backup() of a daemon's log into a fresh directory, timed. */
struct backup_arg {
	const daemon_proc *d;
	char dest[400];
	funnel_log_head head;
	double secs;
	int rc;
};

static void *
backup_run(void *arg)
{
	struct backup_arg *b = arg;
	funnel_verify_result res;
	funnel_error_info err;
	uint64_t t0 = harness_now_ns();
	b->rc = funnel_backup(b->d->data, b->dest, &b->head, &res, &err);
	b->secs = (double)(harness_now_ns() - t0) / 1e9;
	if (b->rc != FUNNEL_OK)
		fprintf(stderr, "bench: backup: %s: %s\n", funnel_errname(b->rc), err.message);
	return NULL;
}

/* B: the copy's rate alone (MB/s of the compacted copy, events/s), then
 * W1 with fresh events (per_gen from each producer) without a backup, and
 * again with a backup started beside it (a copy much shorter than the W1
 * run understates its effect: size BENCH_BACKUP_EVENTS to the log). */
static void
backup_bench(const daemon_proc *d, uint64_t seed, uint64_t per_gen, funnel_extra *x)
{
	struct backup_arg b = { .d = d };
	wl_funnel gens[BENCH_PRODUCERS];
	bench_result w1;
	pthread_t th;
	int n = 0;

	snprintf(b.dest, sizeof b.dest, "%s/backup-%d", d->dir, n++);
	backup_run(&b);
	if (b.rc != FUNNEL_OK)
		return;
	x->backup_events = b.head.head;
	x->backup_mb_s = (double)b.head.bytes / 1048576.0 / b.secs;
	x->backup_eps = (double)b.head.head / b.secs;
	harness_rmrf(b.dest);
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < BENCH_PRODUCERS; i++) {
			char tag[24];
			snprintf(tag, sizeof tag, "bk%dp%d", pass, i);
			wl_funnel_init(&gens[i], seed, tag);
		}
		if (pass == 1) {
			snprintf(b.dest, sizeof b.dest, "%s/backup-%d", d->dir, n++);
			pthread_create(&th, NULL, backup_run, &b);
		}
		w1_funnel(d, NULL, gens, per_gen, &w1);
		if (pass == 1) {
			pthread_join(th, NULL);
			harness_rmrf(b.dest);
		}
		if (pass == 0)
			x->w1_plain_eps = w1.w1_eps;
		else
			x->w1_backup_eps = w1.w1_eps;
	}
	x->backup_ran = 1;
}

/* S: restart on the log in hand and time spawn -> serving; the daemon's
 * own log line gives the store's open time ("... in X ms").  The log is
 * put on the disk first (syncfs): the fill ran with --no-sync, and a
 * durable funneld flushes what it opens before it serves it, which would
 * time the fill's gigabytes, not the start. */
static double
start_ms(daemon_proc *d, double *open_ms)
{
	harness_stop(d);
	int dfd = open(d->data, O_RDONLY | O_DIRECTORY);
	if (dfd >= 0) {
		syncfs(dfd);
		close(dfd);
	}
	uint64_t t0 = harness_now_ns();
	if (harness_restart(d) != 0)
		return -1;
	double ms = (double)(harness_now_ns() - t0) / 1e6;
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

/* W1 with the same events on a fresh funneld with a master key: the email
 * and name of every capture sealed under its lead's key (a new key per
 * lead), and the ip of every activity under its lead's key. */
static void
sealed_w1(const bench_events *ev, funnel_extra *x)
{
	char keyfile[] = "/tmp/funnel-bench-mk-XXXXXX", extra[128];
	uint8_t mk[32];
	daemon_proc d;
	bench_result r;
	int fd = mkstemp(keyfile);

	if (fd < 0 || getentropy(mk, sizeof mk) != 0 || write(fd, mk, sizeof mk) != (ssize_t)sizeof mk) {
		if (fd >= 0) {
			close(fd);
			unlink(keyfile);
		}
		return;
	}
	close(fd);
	snprintf(extra, sizeof extra, "--master-key %s", keyfile);
	bench_result_init(&r);
	if (harness_start(&d, extra) == 0) {
		fprintf(stderr, "bench: funnel W1 with personal data sealed, %" PRIu64 " events\n",
		        ev->w1_total);
		w1_funnel(&d, ev, NULL, 0, &r);
		x->w1_sealed_eps = r.w1_eps;
		x->sealed_ran = r.w1_eps > 0;
		harness_cleanup(&d);
	}
	unlink(keyfile);
}

static int
funnel_run(const config *c, const bench_events *ev, bench_result *r, funnel_extra *x)
{
	daemon_proc d;
	bench_sampler mem;
	funnel_query *q = NULL;
	funnel_status st = { 0 };

	bench_result_init(r);
	memset(x, 0, sizeof *x);
	x->w3_commit[0] = x->w3_commit[1] = x->w3_commit[2] = -1;
	bench_disk_server("funnel");
	if (harness_start(&d, getenv("BENCH_FUNNELD_ARGS")) != 0) {
		snprintf(r->note, sizeof r->note, "funneld did not start");
		return -1;
	}
	bench_sampler_start(&mem, d.pid);
	fprintf(stderr, "bench: funnel W4\n");
	int64_t f0 = bench_disk_flushes();
	bench_dev dev0;
	bench_dev_read(d.dir, &dev0);
	w4_funnel(&d, ev, r);
	bench_dev_per_event(d.dir, &dev0, ev->w4.n, &r->dev_bytes[BENCH_FL_W4],
	                    &r->dev_flushes[BENCH_FL_W4]);
	r->flushes[BENCH_FL_W4] = bench_disk_per_event(f0, ev->w4.n);
	fprintf(stderr, "bench: funnel W1, %" PRIu64 " events\n", ev->w1_total);
	f0 = bench_disk_flushes();
	bench_dev_read(d.dir, &dev0);
	w1_funnel(&d, ev, NULL, 0, r);
	r->flushes[BENCH_FL_W1] = bench_disk_per_event(f0, r->w1_acked);
	bench_dev_per_event(d.dir, &dev0, r->w1_acked, &r->dev_bytes[BENCH_FL_W1],
	                    &r->dev_flushes[BENCH_FL_W1]);
	funnel_query_new(&q, d.query, 10000);
	funnel_status_get(q, &st);
	fprintf(stderr, "bench: funnel W3\n");
	f0 = bench_disk_flushes();
	w3_funnel(&d, st.head, ev, r, x);
	r->flushes[BENCH_FL_W3] = bench_disk_per_event(f0, ev->w3.n);
	fprintf(stderr, "bench: funnel W2\n");
	w2_funnel(&d, r);
	r->mem_max_kb = bench_sampler_stop(&mem);
	r->ran = 1;
	if (c->sealed)
		sealed_w1(ev, x);

	/* S: fill fast (no fsync) up to the size asked, then time a restart */
	if (c->start_events > 0) {
		harness_stop(&d);
		snprintf(d.extra, sizeof d.extra, "--no-sync");
		if (harness_restart(&d) == 0 && funnel_status_get(q, &st) == FUNNEL_OK) {
			if (st.head < c->start_events) {
				wl_funnel gens[BENCH_PRODUCERS];
				bench_result fill;
				uint64_t per = (c->start_events - st.head + BENCH_PRODUCERS - 1) / BENCH_PRODUCERS;
				for (int i = 0; i < BENCH_PRODUCERS; i++) {
					char tag[24];
					snprintf(tag, sizeof tag, "fillp%d", i);
					wl_funnel_init(&gens[i], c->seed, tag);
				}
				fprintf(stderr, "bench: filling the log to %" PRIu64 " events (--no-sync)\n",
				        c->start_events);
				w1_funnel(&d, NULL, gens, per, &fill);
				fprintf(stderr, "bench: filled at %.0f events/s\n", fill.w1_eps);
			}
			d.extra[0] = '\0';
			x->start_ms = start_ms(&d, &x->open_ms);
			if (x->start_ms >= 0 && funnel_status_get(q, &st) == FUNNEL_OK) {
				x->start_events = st.head;
				usleep(200000);
				x->mem_idle_kb = harness_anon_kb(d.pid);
				x->start_ran = 1;
				fprintf(stderr, "bench: funnel backup of %" PRIu64 " events\n", st.head);
				backup_bench(&d, c->seed, c->backup_w1_events / BENCH_PRODUCERS, x);
			}
		}
	}
	funnel_query_destroy(&q);
	harness_cleanup(&d);
	return 0;
}

/* C: W1 and W4 against a funneld with an access file, every socket
 * CURVE (keys made here; one principal may publish every type). */
static void
funnel_curve_run(const bench_events *ev, funnel_extra *x)
{
	char dir[64] = "/tmp/funnel-bench-keys-XXXXXX", path[128], extra[300];
	char pub[41], sec[41], spub[41], ssec[41];
	const char *what[][2] = { { "funneld.key", ssec }, { "funneld.pub", spub }, { "bench.key", sec } };
	daemon_proc d;
	FILE *f;

	bench_result_init(&x->curve);
	if (mkdtemp(dir) == NULL || zmq_curve_keypair(pub, sec) != 0 ||
	    zmq_curve_keypair(spub, ssec) != 0) {
		fprintf(stderr, "bench: cannot make CURVE keys\n");
		return;
	}
	for (int i = 0; i < 3; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, what[i][0]);
		if ((f = fopen(path, "w")) == NULL)
			goto out;
		fprintf(f, "%s\n", what[i][1]);
		fclose(f);
	}
	snprintf(path, sizeof path, "%s/access.yaml", dir);
	if ((f = fopen(path, "w")) == NULL)
		goto out;
	fprintf(f, "principals:\n  - name: bench\n    key: \"%s\"\n    publish: [\"*\"]\n"
	        "    read: true\n", pub);
	fclose(f);
	char key[128], srv[128];
	snprintf(key, sizeof key, "%s/bench.key", dir);
	snprintf(srv, sizeof srv, "%s/funneld.pub", dir);
	snprintf(extra, sizeof extra, "--access %s/access.yaml --key %s/funneld.key", dir, dir);
	if (funnel_keys_use(key, srv, NULL) != FUNNEL_OK || harness_start(&d, extra) != 0) {
		fprintf(stderr, "bench: funneld with --access did not start\n");
		goto out;
	}
	fprintf(stderr, "bench: funnel W4 with CURVE\n");
	w4_funnel(&d, ev, &x->curve);
	fprintf(stderr, "bench: funnel W1 with CURVE, %" PRIu64 " events\n", ev->w1_total);
	w1_funnel(&d, ev, NULL, 0, &x->curve);
	x->curve_ran = 1;
	harness_cleanup(&d);
out:
	(void)funnel_keys_use(NULL, NULL, NULL);
	harness_rmrf(dir);
}

/* ---- the report ---- */

static FILE *out_file;

static void
emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
emit(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	if (out_file) {
		va_start(ap, fmt);
		vfprintf(out_file, fmt, ap);
		va_end(ap);
	}
}

/* Write to the file only (the raw figures). */
static void
emit_file(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
emit_file(const char *fmt, ...)
{
	va_list ap;
	if (out_file == NULL)
		return;
	va_start(ap, fmt);
	vfprintf(out_file, fmt, ap);
	va_end(ap);
}

/* One row: the metric of each system, formatted by fmt, and funnel /
 * the best peer (highest for throughput, lowest for latency). */
typedef double (*metric_fn)(const bench_result *r);
static double m_w1(const bench_result *r) { return r->w1_eps; }
static double m_w2(const bench_result *r) { return r->w2_eps; }
static double m_w3_50(const bench_result *r) { return r->w3[0]; }
static double m_w3_99(const bench_result *r) { return r->w3[1]; }
static double m_w3_999(const bench_result *r) { return r->w3[2]; }
static double m_w4_50(const bench_result *r) { return r->w4[0]; }
static double m_w4_99(const bench_result *r) { return r->w4[1]; }
static double m_mem(const bench_result *r) { return r->mem_max_kb ? (double)r->mem_max_kb / 1024 : -1; }
static double m_fl_w1(const bench_result *r) { return r->flushes[BENCH_FL_W1]; }
static double m_fl_w3(const bench_result *r) { return r->flushes[BENCH_FL_W3]; }
static double m_fl_w4(const bench_result *r) { return r->flushes[BENCH_FL_W4]; }
static double m_by_w1(const bench_result *r) { return r->dev_bytes[BENCH_FL_W1]; }
static double m_by_w4(const bench_result *r) { return r->dev_bytes[BENCH_FL_W4]; }
static double m_df_w1(const bench_result *r) { return r->dev_flushes[BENCH_FL_W1]; }
static double m_df_w4(const bench_result *r) { return r->dev_flushes[BENCH_FL_W4]; }

#define COLW 15

static void
cell(const bench_result *r, double v, const char *unit_fmt)
{
	char buf[32];
	if (!r->ran)
		snprintf(buf, sizeof buf, "%s", r->note[0] ? "failed" : "skipped");
	else if (v < 0)
		snprintf(buf, sizeof buf, "-");
	else
		snprintf(buf, sizeof buf, unit_fmt, v);
	emit(" %*s", COLW, buf);
}

static void
row(const char *name, const char *target, const bench_result res[NSYS], metric_fn m, const char *fmt,
    int higher_better)
{
	double best = -1;
	emit("%-34s %12s", name, target);
	for (int i = 0; i < NSYS; i++) {
		double v = res[i].ran ? m(&res[i]) : -1;
		cell(&res[i], v, fmt);
		if (i > 0 && v > 0 && (best < 0 || (higher_better ? v > best : v < best)))
			best = v;
	}
	double f = res[SYS_FUNNEL].ran ? m(&res[SYS_FUNNEL]) : -1;
	if (f > 0 && best > 0)
		emit(" %9.2fx\n", f / best);
	else
		emit(" %10s\n", "-");
}

/* A funnel-only row: the other columns say n/a. */
static void
row_funnel(const char *name, const char *target, double v, const char *fmt, int ran)
{
	char buf[32];
	emit("%-34s %12s", name, target);
	if (ran && v >= 0)
		snprintf(buf, sizeof buf, fmt, v);
	else
		snprintf(buf, sizeof buf, "-");
	emit(" %*s", COLW, buf);
	for (int i = 1; i < NSYS; i++)
		emit(" %*s", COLW, "n/a");
	emit(" %10s\n", "-");
}

static void
raw(const char *sys, const char *key, double v)
{
	if (v < 0)
		emit_file("%s.%s=\n", sys, key);
	else if (v == (double)(uint64_t)v)
		emit_file("%s.%s=%" PRIu64 "\n", sys, key, (uint64_t)v);
	else
		emit_file("%s.%s=%.4f\n", sys, key, v);
}

static void
report(const config *c, const bench_events *ev, const bench_result res[NSYS], const funnel_extra *x)
{
	char host[128] = "", when[64] = "";
	time_t now = time(NULL);
	size_t kinds[WL_NKINDS] = { 0 };
	uint64_t env_bytes = 0;

	gethostname(host, sizeof host);
	strftime(when, sizeof when, "%Y-%m-%d %H:%M UTC", gmtime(&now));
	for (int p = 0; p < BENCH_PRODUCERS; p++) {
		env_bytes += ev->w1[p].env_bytes;
		for (size_t i = 0; i < ev->w1[p].n; i++)
			kinds[ev->w1[p].ev[i].kind]++;
	}
	double tot = ev->w1_total ? (double)ev->w1_total : 1;

	long delay = bench_disk_delay_us();
	printf("\n");
	if (getenv("BENCH_OUT_APPEND") && strcmp(getenv("BENCH_OUT_APPEND"), "1") == 0)
		emit_file("\n## On a disk whose flush takes %.3g ms more (BENCH_FLUSH_DELAY_US=%ld)\n\n```\n",
		          (double)delay / 1000, delay);
	else
		emit_file("# funnel benchmark results\n\n"
		          "Written by `make bench` / `make bench-peers` (tests/bench/bench_funnel.c).\n\n```\n");
	emit("funnel bench on %s, %ld cores, %s\n", host, sysconf(_SC_NPROCESSORS_ONLN), when);
	emit("events: funnel stream, seed %" PRIu64 ", mean envelope %.0f bytes; W1 mix:", c->seed,
	     (double)env_bytes / tot);
	for (int k = 0; k < WL_NKINDS; k++)
		emit("%s %s %.1f%%", k ? "," : "", wl_kind_name(k), 100.0 * (double)kinds[k] / tot);
	emit("\nW1: %" PRIu64 " events, %d producers, %d events in flight each (funnel: %d requests of %d)\n",
	     ev->w1_total, BENCH_PRODUCERS, BENCH_INFLIGHT, BENCH_WINDOW, BENCH_BATCH);
	emit("W3: %zu events at %d/s; W4: %zu events, %d us apart\n", ev->w3.n, BENCH_W3_RATE, ev->w4.n,
	     BENCH_W4_GAP_US);
	const char *fargs = getenv("BENCH_FUNNELD_ARGS");
	if (fargs && *fargs)
		emit("funneld flags for W1-W4 (BENCH_FUNNELD_ARGS): %s\n", fargs);
	if (delay < 0)
		emit("disk: this machine's as it is (BENCH_FLUSH_DELAY_US unset)\n\n");
	else
		emit("disk: every flush of a server's data (fsync, fdatasync, O_DSYNC write) sleeps %ld us\n"
		     "after the real one (BENCH_FLUSH_DELAY_US, tests/crash/shim.c), the same for every system\n\n",
		     delay);

	emit("%-34s %12s", "workload", "target");
	for (int i = 0; i < NSYS; i++)
		emit(" %*s", COLW, systems[i].title);
	emit(" %10s\n", "funnel/best");
	row("W1 durable ingest, events/s", ">= 500000", res, m_w1, "%.0f", 1);
	row("W2 replay from the start, ev/s", ">= 2000000", res, m_w2, "%.0f", 1);
	row("W3 send->subscriber p50, ms", "-", res, m_w3_50, "%.3f", 0);
	row("W3 send->subscriber p99, ms", "-", res, m_w3_99, "%.3f", 0);
	row("W3 send->subscriber p99.9, ms", "-", res, m_w3_999, "%.3f", 0);
	row_funnel("W3 commit->subscriber p50, ms", "-", x->w3_commit[0], "%.3f", res[0].ran);
	row_funnel("W3 commit->subscriber p99, ms", "<= 1", x->w3_commit[1], "%.3f", res[0].ran);
	row_funnel("W3 commit->subscriber p99.9, ms", "-", x->w3_commit[2], "%.3f", res[0].ran);
	if (c->sealed) {
		row_funnel("W1 personal data sealed, events/s", "-", x->w1_sealed_eps, "%.0f",
		           x->sealed_ran);
		row_funnel("  sealed / plain W1", ">= 0.8", res[SYS_FUNNEL].w1_eps > 0 ?
		           x->w1_sealed_eps / res[SYS_FUNNEL].w1_eps : 0, "%.2f", x->sealed_ran);
	}
	row("W4 publish->ack p50, ms", "<= 0.5", res, m_w4_50, "%.3f", 0);
	row("W4 publish->ack p99, ms", "<= 2", res, m_w4_99, "%.3f", 0);
	row("memory max during W4-W2, MB", "<= 64", res, m_mem, "%.1f", 0);
	row("W1 bytes the disk took per event", "-", res, m_by_w1, "%.0f", 0);
	row("W1 disk flushes per event", "-", res, m_df_w1, "%.4f", 0);
	row("W4 bytes the disk took per event", "-", res, m_by_w4, "%.0f", 0);
	row("W4 disk flushes per event", "-", res, m_df_w4, "%.3f", 0);
	if (delay >= 0) {
		row("W1 flushes per event", "-", res, m_fl_w1, "%.4f", 0);
		row("W3 flushes per event", "-", res, m_fl_w3, "%.3f", 0);
		row("W4 flushes per event", "-", res, m_fl_w4, "%.3f", 0);
	}
	if (c->start_events > 0) {
		char name[64];
		snprintf(name, sizeof name, "start with %" PRIu64 " events, ms", x->start_events);
		row_funnel(name, "<= 100", x->start_ms, "%.1f", x->start_ran);
		row_funnel("  of which store open, ms", "-", x->open_ms, "%.1f", x->start_ran);
		row_funnel("memory idle after start, MB", "<= 64", (double)x->mem_idle_kb / 1024, "%.1f",
		           x->start_ran);
		snprintf(name, sizeof name, "backup of %" PRIu64 " events, MB/s", x->backup_events);
		row_funnel(name, "-", x->backup_mb_s, "%.0f", x->backup_ran);
		row_funnel("  the same, events/s", "-", x->backup_eps, "%.0f", x->backup_ran);
		row_funnel("W1 on that log, events/s", "-", x->w1_plain_eps, "%.0f", x->backup_ran);
		row_funnel("W1 while a backup runs, events/s", "-", x->w1_backup_eps, "%.0f",
		           x->backup_ran);
	}
	if (x->curve_ran) {
		row_funnel("W1 with CURVE (--access), ev/s", "-", x->curve.w1_eps, "%.0f", 1);
		row_funnel("W4 with CURVE p50, ms", "-", x->curve.w4[0], "%.3f", 1);
		row_funnel("W4 with CURVE p99, ms", "-", x->curve.w4[1], "%.3f", 1);
	}
	emit("\nfunnel/best: funnel divided by the best peer (the highest rate, the lowest latency or\n"
	     "memory): above 1 funnel is ahead on rates, below 1 it is ahead on times and memory.\n");
	if (res[SYS_FUNNEL].ran && res[SYS_REDIS_ALWAYS].ran && res[SYS_REDIS_ALWAYS].w1_eps > 0)
		emit("W1 funnel / Redis always = %.2fx (DESIGN.md target: >= 2x, 3x excellent)\n",
		     res[SYS_FUNNEL].w1_eps / res[SYS_REDIS_ALWAYS].w1_eps);
	emit("W3 send->subscriber: from the producer's send call to the subscriber holding the event,\n"
	     "one clock. commit->subscriber: from the record's ts (stamped before the commit) to the\n"
	     "subscriber, the DESIGN.md definition; funnel only, the peers have no such stamp.\n");
	emit("memory: the server's anonymous memory (not the file pages it maps); Redis keeps every\n"
	     "entry in RAM.\n");
	emit("the disk per event: what the block device under the server's data took (write sectors and\n"
	     "flush requests in /sys/dev/block/*/stat, the file system's journal included) per event\n"
	     "acknowledged, read once writing stopped after the load (funneld's last checkpoint\n"
	     "included); the whole device, so other processes' writes count too: run on an idle machine.\n"
	     "JetStream leaves its writes to the OS (flushed every 2 minutes): within the window its\n"
	     "data has mostly not reached the disk yet, so its figures are not what it will cost.\n");
	if (delay >= 0)
		emit("flushes per event: fsync/fdatasync/msync calls and O_DSYNC writes on the server's data\n"
		     "(directories included), counted by the shim, per event acknowledged; JetStream's are not\n"
		     "seen (Go makes its system calls itself), so its column says '-' and pays no delay.\n");
	emit("\ndurability, as run:\n");
	for (int i = 0; i < NSYS; i++) {
		if (!res[i].ran)
			continue;
		const char *d = systems[i].durability;
		emit("  %-15s ", systems[i].title);
		for (const char *nl; (nl = strchr(d, '\n')) != NULL; d = nl + 1)
			emit("%.*s\n  %-15s ", (int)(nl - d), d, "");
		emit("%s\n", d);
	}
	if (x->curve_ran && x->curve.w1_eps > 0 && res[SYS_FUNNEL].w1_eps > 0)
		emit("CURVE costs %.2f us per event in W1 (1/rate with CURVE - 1/rate without; W1 %.0f%% of\n"
		     "the plain rate) and %+.3f ms on a W4 round trip (p50); the same run, the same events.\n",
		     1e6 / x->curve.w1_eps - 1e6 / res[SYS_FUNNEL].w1_eps,
		     100.0 * x->curve.w1_eps / res[SYS_FUNNEL].w1_eps, x->curve.w4[0] - res[SYS_FUNNEL].w4[0]);
	emit("events read back in W2:");
	for (int i = 0; i < NSYS; i++)
		if (res[i].ran)
			emit(" %s %" PRIu64 ";", systems[i].title, res[i].w2_count);
	emit("\n");
	for (int i = 0; i < NSYS; i++) {
		if (res[i].ran && res[i].w1_refused)
			emit("%s: %" PRIu64 " W1 events refused or not acknowledged\n", systems[i].title,
			     res[i].w1_refused);
		if (res[i].ran && res[i].w3_got != ev->w3.n)
			emit("%s: the W3 subscriber saw %" PRIu64 " of %zu events\n", systems[i].title,
			     res[i].w3_got, ev->w3.n);
		if (!res[i].ran && res[i].note[0])
			emit("%s: %s\n", systems[i].title, res[i].note);
	}
	if (x->w3_order_errors)
		emit("funnel: %" PRIu64 " W3 records out of send order\n", x->w3_order_errors);

	/* the raw figures, key=value, empty value = not measured */
	emit_file("```\n\nRaw figures (key=value; rates in events/s, times in ms, memory in kB):\n\n```\n");
	if (delay >= 0)
		emit_file("run.flush_delay_us=%ld\n", delay);
	emit_file("run.host=%s\nrun.cores=%ld\nrun.date=%s\nrun.seed=%" PRIu64 "\nrun.w1_events=%" PRIu64
	          "\nrun.w3_events=%zu\nrun.w4_events=%zu\nrun.mean_envelope_bytes=%.1f\n", host,
	          sysconf(_SC_NPROCESSORS_ONLN), when, c->seed, ev->w1_total, ev->w3.n, ev->w4.n,
	          (double)env_bytes / tot);
	for (int i = 0; i < NSYS; i++) {
		const bench_result *r = &res[i];
		const char *k = systems[i].raw;
		emit_file("%s.ran=%d\n", k, r->ran);
		if (!r->ran)
			continue;
		raw(k, "w1_eps", r->w1_eps);
		raw(k, "w1_acked", (double)r->w1_acked);
		raw(k, "w1_refused", (double)r->w1_refused);
		raw(k, "w2_eps", r->w2_eps);
		raw(k, "w2_count", (double)r->w2_count);
		raw(k, "w3_send_p50_ms", r->w3[0]);
		raw(k, "w3_send_p99_ms", r->w3[1]);
		raw(k, "w3_send_p999_ms", r->w3[2]);
		raw(k, "w3_got", (double)r->w3_got);
		raw(k, "w4_p50_ms", r->w4[0]);
		raw(k, "w4_p99_ms", r->w4[1]);
		raw(k, "mem_max_kb", (double)r->mem_max_kb);
		raw(k, "w1_dev_bytes_per_event", r->dev_bytes[BENCH_FL_W1]);
		raw(k, "w1_dev_flushes_per_event", r->dev_flushes[BENCH_FL_W1]);
		raw(k, "w4_dev_bytes_per_event", r->dev_bytes[BENCH_FL_W4]);
		raw(k, "w4_dev_flushes_per_event", r->dev_flushes[BENCH_FL_W4]);
		if (delay >= 0) {
			raw(k, "w1_flushes_per_event", r->flushes[BENCH_FL_W1]);
			raw(k, "w3_flushes_per_event", r->flushes[BENCH_FL_W3]);
			raw(k, "w4_flushes_per_event", r->flushes[BENCH_FL_W4]);
		}
	}
	if (res[SYS_FUNNEL].ran) {
		raw("funnel", "w3_commit_p50_ms", x->w3_commit[0]);
		raw("funnel", "w3_commit_p99_ms", x->w3_commit[1]);
		raw("funnel", "w3_commit_p999_ms", x->w3_commit[2]);
	}
	if (x->curve_ran) {
		raw("funnel", "curve_w1_eps", x->curve.w1_eps);
		raw("funnel", "curve_w1_refused", (double)x->curve.w1_refused);
		raw("funnel", "curve_w4_p50_ms", x->curve.w4[0]);
		raw("funnel", "curve_w4_p99_ms", x->curve.w4[1]);
	}
	if (x->start_ran) {
		raw("funnel", "start_ms", x->start_ms);
		raw("funnel", "start_open_ms", x->open_ms);
		raw("funnel", "start_events", (double)x->start_events);
		if (x->backup_ran) {
			raw("funnel", "backup_events", (double)x->backup_events);
			raw("funnel", "backup_mb_s", x->backup_mb_s);
			raw("funnel", "backup_eps", x->backup_eps);
			raw("funnel", "backup_w1_plain_eps", x->w1_plain_eps);
			raw("funnel", "backup_w1_during_eps", x->w1_backup_eps);
		}
		raw("funnel", "mem_idle_kb", (double)x->mem_idle_kb);
	}
	if (x->sealed_ran)
		raw("funnel", "w1_sealed_eps", x->w1_sealed_eps);
	emit_file("```\n");
	fflush(stdout);
}

int
main(void)
{
	config c = {
		.w1_events = env_u64("BENCH_EVENTS", 1000000),
		.start_events = env_u64("BENCH_START_EVENTS", 10000000),
		.backup_w1_events = env_u64("BENCH_BACKUP_EVENTS", 400000),
		.sealed = env_u64("BENCH_SEALED", 1),
		.w3_secs = env_u64("BENCH_W3_SECS", 3),
		.w4_events = env_u64("BENCH_W4_EVENTS", 3000),
		.seed = env_u64("BENCH_SEED", 1),
		.curve = env_u64("BENCH_CURVE", 1),
		.out = getenv("BENCH_OUT"),
	};
	static bench_events ev;
	bench_result res[NSYS];
	funnel_extra x;

	signal(SIGPIPE, SIG_IGN);
	if (parse_peers(getenv("BENCH_PEERS"), c.run) != 0)
		return 1;
	if (bench_disk_setup() < 0)
		return 1;
	if (c.w1_events < BENCH_PRODUCERS || c.w3_secs == 0 || c.w4_events == 0) {
		fprintf(stderr, "bench: BENCH_EVENTS >= %d, BENCH_W3_SECS >= 1 and BENCH_W4_EVENTS >= 1 please\n",
		        BENCH_PRODUCERS);
		return 1;
	}
	fprintf(stderr, "bench: generating the events\n");
	if (events_make(&ev, &c) != 0) {
		fprintf(stderr, "bench: out of memory generating the events\n");
		return 1;
	}
	for (int i = 0; i < NSYS; i++)
		bench_result_init(&res[i]);

	if (funnel_run(&c, &ev, &res[SYS_FUNNEL], &x) != 0) {
		fprintf(stderr, "bench: %s\n", res[SYS_FUNNEL].note);
		events_release(&ev);
		bench_disk_cleanup();
		return 1;
	}
	if (c.curve)
		funnel_curve_run(&ev, &x);
	if (c.run[SYS_REDIS_ALWAYS] && peer_redis_run("always", &ev, &res[SYS_REDIS_ALWAYS]) != 0)
		fprintf(stderr, "bench: Redis (always): %s\n", res[SYS_REDIS_ALWAYS].note);
	if (c.run[SYS_REDIS_EVERYSEC] && peer_redis_run("everysec", &ev, &res[SYS_REDIS_EVERYSEC]) != 0)
		fprintf(stderr, "bench: Redis (everysec): %s\n", res[SYS_REDIS_EVERYSEC].note);
	if (c.run[SYS_JETSTREAM] && peer_nats_run(&ev, &res[SYS_JETSTREAM]) != 0)
		fprintf(stderr, "bench: JetStream: %s\n", res[SYS_JETSTREAM].note);

	if (c.out) {
		const char *app = getenv("BENCH_OUT_APPEND");
		out_file = fopen(c.out, app && strcmp(app, "1") == 0 ? "a" : "w");
		if (out_file == NULL)
			fprintf(stderr, "bench: cannot write %s: %s\n", c.out, strerror(errno));
	}
	report(&c, &ev, res, &x);
	if (out_file)
		fclose(out_file);
	events_release(&ev);
	bench_disk_cleanup();
	return 0;
}
