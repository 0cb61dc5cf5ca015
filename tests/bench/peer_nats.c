/*
 * tests/bench/peer_nats.c - NATS JetStream doing the benchmark's work
 * (contract in bench.h): nats-server from Debian (-js, file storage in
 * its own dir) and the C client from Debian (libnats, cnats).
 *
 * One event is one message on subject funnel.events of stream FUNNEL
 * (file storage, one replica): the payload is the event's envelope, the
 * msgpack bytes funnel receives, and Nats-Msg-Id is the event's id, so
 * JetStream deduplicates retries as funnel does (within its 2-minute
 * duplicate window; funnel keeps ids forever).  W1: async publish,
 * BENCH_INFLIGHT unacknowledged at most per producer, acks counted in the
 * ack handler.  W2: an ordered consumer from the first message (faster
 * here than a pull consumer fetching 1000 at a time).  W3: an
 * ordered consumer on new messages.  W4: synchronous publish.
 *
 * Durability: nats-server 2.9 acknowledges once the message is written to
 * the OS, and fsyncs its files every 2 minutes (sync_interval).  2.9 has
 * no setting for a sync on every write (its config rejects
 * sync_interval; the option arrived in 2.10), so there is one JetStream
 * column.
 */
#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "harness.h"

#define SUBJECT "funnel.events"
#define STREAM "FUNNEL"
#define START_MS 10000
#define WAIT_MS 60000

typedef struct nats_srv {
	pid_t pid;
	int port;
	char url[64];
	char dir[256];
	char store[300];
	char log[300];
} nats_srv;

static natsConnection *
connect_to(const char *url)
{
	natsConnection *nc = NULL;
	natsOptions *o = NULL;
	if (natsOptions_Create(&o) != NATS_OK)
		return NULL;
	natsOptions_SetURL(o, url);
	natsOptions_SetTimeout(o, 2000);
	natsOptions_SetAllowReconnect(o, false);
	if (natsConnection_Connect(&nc, o) != NATS_OK)
		nc = NULL;
	natsOptions_Destroy(o);
	return nc;
}

/* A JetStream context on nc; with a handler, async publishes are counted
 * there and at most max_pending are in flight. */
static jsCtx *
js_context(natsConnection *nc, int64_t max_pending, jsPubAckHandler h, void *closure)
{
	jsCtx *js = NULL;
	jsOptions o;
	jsOptions_Init(&o);
	o.Wait = WAIT_MS;
	if (h != NULL) {
		o.PublishAsync.MaxPending = max_pending;
		o.PublishAsync.AckHandler = h;
		o.PublishAsync.AckHandlerClosure = closure;
		o.PublishAsync.StallWait = WAIT_MS;
	}
	if (natsConnection_JetStream(&js, nc, &o) != NATS_OK)
		return NULL;
	return js;
}

static int
add_stream(const char *url, char *why, size_t whylen)
{
	natsConnection *nc = connect_to(url);
	jsCtx *js = nc ? js_context(nc, 0, NULL, NULL) : NULL;
	jsStreamConfig cfg;
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	const char *subjects[] = { SUBJECT };
	natsStatus s = NATS_ERR;

	if (js != NULL) {
		jsStreamConfig_Init(&cfg);
		cfg.Name = STREAM;
		cfg.Subjects = subjects;
		cfg.SubjectsLen = 1;
		cfg.Storage = js_FileStorage;
		cfg.Replicas = 1;
		s = js_AddStream(&si, js, &cfg, NULL, &jerr);
		if (s != NATS_OK)
			snprintf(why, whylen, "js_AddStream: %s (JetStream error %d)", natsStatus_GetText(s), (int)jerr);
		jsStreamInfo_Destroy(si);
	}
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	return s == NATS_OK ? 0 : -1;
}

static int
srv_start(nats_srv *s, char *why, size_t whylen)
{
	if (bench_tempdir(s->dir, sizeof s->dir, "nats") != 0) {
		snprintf(why, whylen, "cannot make a temp dir: %s", strerror(errno));
		return -1;
	}
	snprintf(s->store, sizeof s->store, "%s/js", s->dir);
	snprintf(s->log, sizeof s->log, "%s/nats.log", s->dir);
	snprintf(why, whylen, "nats-server did not start (see %s)", s->log);
	for (int attempt = 0; attempt < 5; attempt++) {
		char port[16];
		s->port = bench_free_port();
		snprintf(port, sizeof port, "%d", s->port);
		snprintf(s->url, sizeof s->url, "nats://127.0.0.1:%d", s->port);
		char *argv[] = { "nats-server", "-a", "127.0.0.1", "-p", port, "-js", "-sd", s->store, NULL };
		s->pid = bench_spawn(argv, s->log);
		if (s->pid < 0)
			break;
		uint64_t deadline = harness_now_ns() + (uint64_t)START_MS * 1000000u;
		while (harness_now_ns() < deadline && bench_alive(s->pid)) {
			natsConnection *nc = connect_to(s->url);
			if (nc != NULL) {
				natsConnection_Destroy(nc);
				/* JetStream may need a moment more after the port opens */
				while (harness_now_ns() < deadline && bench_alive(s->pid)) {
					if (add_stream(s->url, why, whylen) == 0)
						return 0;
					usleep(50000);
				}
				break;
			}
			usleep(10000);
		}
		bench_stop(s->pid, 2000);
		s->pid = 0;
	}
	return -1;
}

static void
srv_stop(nats_srv *s)
{
	if (s->pid > 0 && bench_stop(s->pid, 10000) != 0)
		fprintf(stderr, "bench: nats-server %d ignored SIGTERM, killed\n", (int)s->pid);
	s->pid = 0;
	if (getenv("KEEP_TEST_DIRS") == NULL)
		harness_rmrf(s->dir);
}

/* ---- W1 ---- */

typedef struct prod {
	const char *url;
	const wl_set *set;
	uint64_t acked, refused;   /* updated by the ack handler's thread */
	char err[160];
} prod;

static void
on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
	prod *a = closure;
	(void)js;
	if (pa != NULL && pae == NULL)
		__atomic_add_fetch(&a->acked, 1, __ATOMIC_RELAXED);
	else
		__atomic_add_fetch(&a->refused, 1, __ATOMIC_RELAXED);
	natsMsg_Destroy(msg);
}

static void *
producer_run(void *arg)
{
	prod *a = arg;
	natsConnection *nc = connect_to(a->url);
	jsCtx *js = nc ? js_context(nc, BENCH_INFLIGHT, on_ack, a) : NULL;
	jsPubOptions po;
	natsStatus s = NATS_OK;
	size_t sent = 0;

	if (js == NULL) {
		snprintf(a->err, sizeof a->err, "cannot connect");
		goto out;
	}
	for (; sent < a->set->n; sent++) {
		const wl_event *e = &a->set->ev[sent];
		jsPubOptions_Init(&po);
		po.MsgId = e->id;
		/* blocks up to StallWait while BENCH_INFLIGHT are unacknowledged */
		s = js_PublishAsync(js, SUBJECT, e->env, (int)e->env_len, &po);
		if (s != NATS_OK) {
			snprintf(a->err, sizeof a->err, "js_PublishAsync: %s", natsStatus_GetText(s));
			break;
		}
	}
	jsPubOptions_Init(&po);
	po.MaxWait = WAIT_MS;
	s = js_PublishAsyncComplete(js, &po);
	if (s != NATS_OK)
		snprintf(a->err, sizeof a->err, "js_PublishAsyncComplete: %s", natsStatus_GetText(s));
out:
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	/* whatever was not acknowledged counts as refused */
	uint64_t acked = __atomic_load_n(&a->acked, __ATOMIC_ACQUIRE);
	a->refused = a->set->n > acked ? a->set->n - acked : 0;
	return NULL;
}

static void
w1(const char *url, const bench_events *ev, bench_result *r)
{
	pthread_t th[BENCH_PRODUCERS];
	prod args[BENCH_PRODUCERS];
	uint64_t t0 = harness_now_ns();
	for (int i = 0; i < BENCH_PRODUCERS; i++) {
		args[i] = (prod){ .url = url, .set = &ev->w1[i] };
		pthread_create(&th[i], NULL, producer_run, &args[i]);
	}
	r->w1_acked = r->w1_refused = 0;
	for (int i = 0; i < BENCH_PRODUCERS; i++) {
		pthread_join(th[i], NULL);
		r->w1_acked += __atomic_load_n(&args[i].acked, __ATOMIC_ACQUIRE);
		r->w1_refused += args[i].refused;
		if (args[i].err[0])
			fprintf(stderr, "bench: JetStream W1 producer %d: %s\n", i, args[i].err);
	}
	r->w1_eps = (double)r->w1_acked / ((double)(harness_now_ns() - t0) / 1e9);
}

/* ---- W4 ---- */

static void
w4(const char *url, const bench_events *ev, bench_result *r)
{
	const wl_set *set = &ev->w4;
	natsConnection *nc = connect_to(url);
	jsCtx *js = nc ? js_context(nc, 0, NULL, NULL) : NULL;
	uint64_t *lat = calloc(set->n ? set->n : 1, sizeof *lat);
	static const double q[2] = { 0.50, 0.99 };
	size_t n = 0;

	if (js == NULL || lat == NULL)
		goto out;
	for (size_t i = 0; i < set->n; i++) {
		const wl_event *e = &set->ev[i];
		jsPubOptions po;
		jsPubAck *pa = NULL;
		jsErrCode jerr = 0;
		jsPubOptions_Init(&po);
		po.MsgId = e->id;
		uint64_t t0 = harness_now_ns();
		natsStatus s = js_Publish(&pa, js, SUBJECT, e->env, (int)e->env_len, &po, &jerr);
		uint64_t t1 = harness_now_ns();
		jsPubAck_Destroy(pa);
		if (s != NATS_OK) {
			fprintf(stderr, "bench: JetStream W4: %s\n", natsStatus_GetText(s));
			break;
		}
		lat[n++] = t1 - t0;
		usleep(BENCH_W4_GAP_US);
	}
	bench_quantiles_ms(lat, n, q, r->w4, 2);
out:
	free(lat);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
}

/* ---- W3 ---- */

typedef struct sub_arg {
	natsSubscription *sub;
	size_t count;
	const uint64_t *sent_ns;   /* written by the producer before each publish */
	uint64_t *lat;
	size_t got;
} sub_arg;

static void *
subscriber_run(void *arg)
{
	sub_arg *a = arg;
	while (a->got < a->count) {
		natsMsg *m = NULL;
		if (natsSubscription_NextMsg(&m, a->sub, 5000) != NATS_OK)
			break;
		uint64_t now = harness_now_ns();
		uint64_t sent = __atomic_load_n(&a->sent_ns[a->got], __ATOMIC_ACQUIRE);
		a->lat[a->got++] = now > sent ? now - sent : 0;
		natsMsg_Destroy(m);
	}
	return NULL;
}

static void
w3(const char *url, const bench_events *ev, bench_result *r)
{
	const wl_set *set = &ev->w3;
	prod acks = { .set = set };
	natsConnection *nc = connect_to(url), *snc = connect_to(url);
	jsCtx *js = nc ? js_context(nc, BENCH_W3_WINDOW, on_ack, &acks) : NULL;
	jsCtx *sjs = snc ? js_context(snc, 0, NULL, NULL) : NULL;
	uint64_t *sent_ns = calloc(set->n ? set->n : 1, sizeof *sent_ns);
	sub_arg sa = { .count = set->n, .sent_ns = sent_ns, .lat = calloc(set->n ? set->n : 1, sizeof(uint64_t)) };
	static const double q[3] = { 0.50, 0.99, 0.999 };
	jsSubOptions so;
	jsErrCode jerr = 0;
	pthread_t th;

	if (js == NULL || sjs == NULL || sent_ns == NULL || sa.lat == NULL)
		goto out;
	jsSubOptions_Init(&so);
	so.Ordered = true;
	so.Config.DeliverPolicy = js_DeliverNew;
	if (js_SubscribeSync(&sa.sub, sjs, SUBJECT, NULL, &so, &jerr) != NATS_OK) {
		fprintf(stderr, "bench: JetStream W3: cannot subscribe (JetStream error %d)\n", (int)jerr);
		goto out;
	}
	pthread_create(&th, NULL, subscriber_run, &sa);
	usleep(300000);   /* let the consumer settle, as for the others */

	uint64_t t0 = harness_now_ns();
	for (size_t i = 0; i < set->n; i++) {
		const wl_event *e = &set->ev[i];
		jsPubOptions po;
		bench_sleep_until(t0 + i * (1000000000u / BENCH_W3_RATE));
		jsPubOptions_Init(&po);
		po.MsgId = e->id;
		__atomic_store_n(&sent_ns[i], harness_now_ns(), __ATOMIC_RELEASE);
		if (js_PublishAsync(js, SUBJECT, e->env, (int)e->env_len, &po) != NATS_OK)
			break;
	}
	jsPubOptions po;
	jsPubOptions_Init(&po);
	po.MaxWait = WAIT_MS;
	js_PublishAsyncComplete(js, &po);
	pthread_join(th, NULL);
	r->w3_got = sa.got;
	bench_quantiles_ms(sa.lat, sa.got, q, r->w3, 3);
out:
	if (sa.sub) {
		natsSubscription_Unsubscribe(sa.sub);
		natsSubscription_Destroy(sa.sub);
	}
	free(sent_ns);
	free(sa.lat);
	jsCtx_Destroy(js);
	jsCtx_Destroy(sjs);
	natsConnection_Destroy(nc);
	natsConnection_Destroy(snc);
}

/* ---- W2 ---- */

static void
w2(const char *url, bench_result *r)
{
	natsConnection *nc = connect_to(url);
	jsCtx *js = nc ? js_context(nc, 0, NULL, NULL) : NULL;
	natsSubscription *sub = NULL;
	jsStreamInfo *si = NULL;
	jsSubOptions so;
	jsErrCode jerr = 0;
	uint64_t n = 0, total;

	if (js == NULL || js_GetStreamInfo(&si, js, STREAM, NULL, &jerr) != NATS_OK)
		goto out;
	total = si->State.Msgs;
	jsSubOptions_Init(&so);
	so.Ordered = true;
	so.Config.DeliverPolicy = js_DeliverAll;
	uint64_t t0 = harness_now_ns();
	if (js_SubscribeSync(&sub, js, SUBJECT, NULL, &so, &jerr) != NATS_OK)
		goto out;
	/* unbounded client-side buffer: flow control is the server's */
	natsSubscription_SetPendingLimits(sub, -1, -1);
	while (n < total) {
		natsMsg *m = NULL;
		if (natsSubscription_NextMsg(&m, sub, 10000) != NATS_OK)
			break;
		n++;
		natsMsg_Destroy(m);
	}
	r->w2_eps = (double)n / ((double)(harness_now_ns() - t0) / 1e9);
	r->w2_count = n;
out:
	if (sub) {
		natsSubscription_Unsubscribe(sub);
		natsSubscription_Destroy(sub);
	}
	jsStreamInfo_Destroy(si);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
}

int
peer_nats_run(const bench_events *ev, bench_result *r)
{
	nats_srv s = { 0 };
	bench_sampler mem;

	bench_result_init(r);
	bench_disk_server("jetstream");   /* its flushes are not seen: nothing to count */
	if (srv_start(&s, r->note, sizeof r->note) != 0) {
		srv_stop(&s);
		return -1;
	}
	bench_sampler_start(&mem, s.pid);
	fprintf(stderr, "bench: JetStream W4\n");
	bench_dev dev0;
	bench_dev_read(s.dir, &dev0);
	w4(s.url, ev, r);
	bench_dev_per_event(s.dir, &dev0, ev->w4.n, &r->dev_bytes[BENCH_FL_W4],
	                    &r->dev_flushes[BENCH_FL_W4]);
	fprintf(stderr, "bench: JetStream W1, %" PRIu64 " events\n", ev->w1_total);
	bench_dev_read(s.dir, &dev0);
	w1(s.url, ev, r);
	bench_dev_per_event(s.dir, &dev0, r->w1_acked, &r->dev_bytes[BENCH_FL_W1],
	                    &r->dev_flushes[BENCH_FL_W1]);
	fprintf(stderr, "bench: JetStream W3\n");
	w3(s.url, ev, r);
	fprintf(stderr, "bench: JetStream W2\n");
	w2(s.url, r);
	r->mem_max_kb = bench_sampler_stop(&mem);
	r->ran = 1;
	srv_stop(&s);
	/* the library's own threads and memory, now that nothing uses it */
	nats_CloseAndWait(5000);
	return 0;
}
