/*
 * tests/bench/bench_mirror.c - the numbers of funnel-mirror and of reading
 * the mirror, on the real binaries (funneld, funnel-mirror) and Debian's
 * nats-server (-js, file storage in a temp dir, loopback):
 *
 *   M0  ingest: BENCH_MIRROR_EVENTS (default 200,000) funnel-shaped events
 *       into funneld, packed 1000 a request, 16 in flight: the log's
 *       ingest rate in this run, which the mirror must keep up with.
 *   M1  `funnel-mirror --until-head` copying that log into an R1 stream
 *       (one server) and into an R3 stream (a three-node cluster on
 *       loopback): records/s, wall time of the whole process.
 *   M2  lag: funnel-mirror following live while events arrive paced at
 *       10,000/s for BENCH_MIRROR_SECS (default 5) s, one per request:
 *       per record, the stream's store time minus the record's ts (taken
 *       by funneld before the commit and its fsync, so the fsync is in
 *       it; both wall clocks of this machine): p50 / p99 / p99.9.
 *   M3  replay: a subscriber (live = 0) reading the whole log from
 *       funneld, then from the R1 stream (--source): records/s.
 *
 * Prints a table and appends it and key=value lines to BENCH_OUT (if set).
 */
#include <inttypes.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <msgpack.h>

#include "bench.h"
#include "funnel/funnel.h"
#include "harness.h"
#include "workload.h"

#define START_MS 15000

typedef struct node {
	pid_t pid;
	int port, cport;
	char url[64];
} node;

/* Start n nats-servers in dir (a cluster when n > 1); 0 or -1. */
static int
nats_start(node *nodes, int n, const char *dir)
{
	for (int i = 0; i < n; i++) {
		nodes[i].port = bench_free_port();
		nodes[i].cport = bench_free_port();
		snprintf(nodes[i].url, sizeof nodes[i].url, "nats://127.0.0.1:%d", nodes[i].port);
	}
	for (int i = 0; i < n; i++) {
		char port[16], cl[64], routes[256] = "", store[400], log[400], name[16];
		snprintf(port, sizeof port, "%d", nodes[i].port);
		snprintf(cl, sizeof cl, "nats://127.0.0.1:%d", nodes[i].cport);
		for (int j = 0, k = 0; j < n; j++)
			if (j != i)
				k += snprintf(routes + k, sizeof routes - k, "%snats://127.0.0.1:%d",
				              k ? "," : "", nodes[j].cport);
		/* the R1 server and the cluster's nodes each have a store of their
		 * own (a node sharing the R1 server's would find its stream full) */
		snprintf(store, sizeof store, "%s/%s%d", dir, n > 1 ? "c" : "s", i);
		snprintf(log, sizeof log, "%s/%s%d.log", dir, n > 1 ? "c" : "s", i);
		snprintf(name, sizeof name, "n%d", i);
		char *one[] = { "nats-server", "-a", "127.0.0.1", "-p", port, "-js", "-sd", store, "-n",
		                name, NULL };
		char *many[] = { "nats-server", "-a", "127.0.0.1", "-p", port, "-js", "-sd", store,
		                 "-n", name, "--cluster_name", "bench", "--cluster", cl, "--routes",
		                 routes, NULL };
		if ((nodes[i].pid = bench_spawn(n > 1 ? many : one, log)) < 0)
			return -1;
	}
	uint64_t deadline = harness_now_ns() + (uint64_t)START_MS * 1000000u;
	for (int i = 0; i < n; i++) {
		for (;;) {
			natsConnection *nc = NULL;
			if (natsConnection_ConnectTo(&nc, nodes[i].url) == NATS_OK) {
				natsConnection_Destroy(nc);
				break;
			}
			if (harness_now_ns() > deadline || !bench_alive(nodes[i].pid))
				return -1;
			usleep(20000);
		}
	}
	return 0;
}

static void
nats_stop(node *nodes, int n)
{
	for (int i = 0; i < n; i++)
		if (nodes[i].pid > 0)
			bench_stop(nodes[i].pid, 10000);
}

/* Create the stream as funnel-mirror would (so the timed run measures
 * copying, not a cluster electing its first leaders); 0 or -1. */
static int
create_stream(const char *url, int replicas)
{
	uint64_t deadline = harness_now_ns() + (uint64_t)START_MS * 1000000u;
	const char *subjects[] = { "funnel.log" };
	while (harness_now_ns() < deadline) {
		natsConnection *nc = NULL;
		jsCtx *js = NULL;
		jsStreamInfo *si = NULL;
		jsStreamConfig cfg;
		jsErrCode jerr = 0;
		natsStatus s = natsConnection_ConnectTo(&nc, url);
		if (s == NATS_OK)
			s = natsConnection_JetStream(&js, nc, NULL);
		if (s == NATS_OK) {
			jsStreamConfig_Init(&cfg);
			cfg.Name = "FUNNEL";
			cfg.Subjects = subjects;
			cfg.SubjectsLen = 1;
			cfg.Storage = js_FileStorage;
			cfg.Replicas = replicas;
			cfg.MaxMsgs = -1;
			cfg.MaxBytes = -1;
			s = js_AddStream(&si, js, &cfg, NULL, &jerr);
			jsStreamInfo_Destroy(si);
			si = NULL;
			/* a leader to take the first message */
			if (s == NATS_OK && replicas > 1)
				s = js_GetStreamInfo(&si, js, "FUNNEL", NULL, &jerr) == NATS_OK &&
				    si->Cluster && si->Cluster->Leader ? NATS_OK : NATS_ERR;
		}
		jsStreamInfo_Destroy(si);
		jsCtx_Destroy(js);
		natsConnection_Destroy(nc);
		if (s == NATS_OK)
			return 0;
		usleep(100000);
	}
	return -1;
}

/* funnel-mirror against d into the stream at urls, with extra flags. */
static uint64_t
mirror_until_head(const daemon_proc *d, const char *urls, const char *extra, const char *log)
{
	char cmd[2048];
	snprintf(cmd, sizeof cmd, "%s --nats %s --publish %s --query %s --http off --until-head "
	         "--log-level warn %s 2>>%s", harness_bin("funnel-mirror"), urls, d->publish,
	         d->query, extra, log);
	return bench_run_timed(cmd);
}

static void
live_event(uint64_t i, msgpack_sbuffer *sb, char *lead, char *id, funnel_event *ev, void *ctx)
{
	(void)ctx;
	snprintf(lead, 64, "live-%" PRIu64, i);
	snprintf(id, 64, "live-%" PRIu64, i);
	wl_lead_data(sb, 5, i);
	ev->type = "lead.captured";
	ev->lead = lead;
	ev->id = id;
	ev->data = sb->data;
	ev->data_len = sb->size;
}

/* Store time minus commit time of stream messages from..to: quantiles. */
static int
stream_lag(const char *url, uint64_t from, uint64_t to, const double *p, double *out, size_t np)
{
	natsConnection *nc = NULL;
	jsCtx *js = NULL;
	natsSubscription *sub = NULL;
	jsSubOptions so;
	jsErrCode jerr = 0;
	uint64_t n = to - from + 1, got = 0;
	uint64_t *lag = calloc(n, sizeof *lag);
	int rc = -1;

	if (lag == NULL || natsConnection_ConnectTo(&nc, url) != NATS_OK ||
	    natsConnection_JetStream(&js, nc, NULL) != NATS_OK)
		goto out;
	jsSubOptions_Init(&so);
	so.Stream = "FUNNEL";
	so.Ordered = true;
	so.Config.DeliverPolicy = js_DeliverByStartSequence;
	so.Config.OptStartSeq = from;
	if (js_SubscribeSync(&sub, js, "funnel.log", NULL, &so, &jerr) != NATS_OK)
		goto out;
	while (got < n) {
		natsMsg *m = NULL;
		jsMsgMetaData *md = NULL;
		uint64_t ts = 0;
		if (natsSubscription_NextMsg(&m, sub, 10000) != NATS_OK)
			goto out;
		if (natsMsg_GetMetaData(&md, m) == NATS_OK &&
		    funnel_record_peek(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m), NULL,
		                       &ts) == FUNNEL_OK)
			lag[got++] = md->Timestamp > (int64_t)ts ? (uint64_t)md->Timestamp - ts : 0;
		jsMsgMetaData_Destroy(md);
		natsMsg_Destroy(m);
	}
	bench_quantiles_ms(lag, got, p, out, np);
	rc = 0;
out:
	natsSubscription_Destroy(sub);
	jsCtx_Destroy(js);
	natsConnection_Destroy(nc);
	free(lag);
	return rc;
}

/* Read the whole log through a subscriber (live = 0): records/s, 0 on
 * failure. */
static double
replay_rate(const daemon_proc *d, const char *source, uint64_t head)
{
	funnel_sub_opts so = { .publish = d->publish, .query = d->query, .source = source };
	funnel_subscriber *s = NULL;
	const uint8_t *rec;
	size_t len;
	uint64_t n = 0, t0 = harness_now_ns();

	if (funnel_subscriber_new(&s, &so) != FUNNEL_OK)
		return 0;
	while (funnel_subscriber_next(s, 10000, &rec, &len) == FUNNEL_OK)
		n++;
	funnel_subscriber_destroy(&s);
	if (n != head) {
		fprintf(stderr, "bench_mirror: replay from %s read %" PRIu64 " of %" PRIu64 "\n",
		        source ? source : "funneld", n, head);
		return 0;
	}
	return (double)n / ((double)(harness_now_ns() - t0) / 1e9);
}

int
main(void)
{
	uint64_t n = bench_env_u64("BENCH_MIRROR_EVENTS", 200000);
	uint64_t secs = bench_env_u64("BENCH_MIRROR_SECS", 5);
	daemon_proc d;
	node r1[1] = { 0 }, r3[3] = { 0 };
	char dir[256], log[400], urls[256], src[128];
	int ret = 1;

	if (bench_tempdir(dir, sizeof dir, "mirror") != 0)
		return 1;
	snprintf(log, sizeof log, "%s/mirror.log", dir);
	fprintf(stderr, "bench_mirror: M0: %" PRIu64 " events into funneld...\n", n);
	if (harness_start(&d, NULL) != 0)
		return 1;
	uint64_t t0 = harness_now_ns();
	if (bench_fill_history(d.ingest, n) != 0)
		goto out;
	double ingest = (double)n / ((double)(harness_now_ns() - t0) / 1e9);

	fprintf(stderr, "bench_mirror: M1: into an R1 stream, then an R3 stream...\n");
	if (nats_start(r1, 1, dir) != 0) {
		fprintf(stderr, "bench_mirror: nats-server did not start (see %s)\n", dir);
		goto out;
	}
	uint64_t w1 = create_stream(r1[0].url, 1) == 0 ? mirror_until_head(&d, r1[0].url, "", log) : 0;
	if (nats_start(r3, 3, dir) != 0 || create_stream(r3[0].url, 3) != 0) {
		fprintf(stderr, "bench_mirror: the three-node cluster did not start (see %s)\n", dir);
		goto out;
	}
	snprintf(urls, sizeof urls, "%s,%s,%s", r3[0].url, r3[1].url, r3[2].url);
	uint64_t w3 = mirror_until_head(&d, urls, "--replicas 3", log);
	nats_stop(r3, 3);
	if (!w1 || !w3)
		goto out;
	double m1 = (double)n / ((double)w1 / 1e9), m3 = (double)n / ((double)w3 / 1e9);

	fprintf(stderr, "bench_mirror: M3: replay from funneld and from the mirror...\n");
	snprintf(src, sizeof src, "%s/FUNNEL", r1[0].url);
	double rf = replay_rate(&d, NULL, n), rm = replay_rate(&d, src, n);

	fprintf(stderr, "bench_mirror: M2: %" PRIu64 " s at 10,000 events/s, mirror following...\n",
	        secs);
	char *margv[] = { (char *)harness_bin("funnel-mirror"), "--nats", r1[0].url, "--publish",
	                  d.publish, "--query", d.query, "--http", "off", "--log-level", "warn",
	                  NULL };
	pid_t mp = bench_spawn(margv, log);
	if (mp < 0)
		goto out;
	uint64_t sent = secs * 10000;
	int lrc = bench_paced_load(&d, sent, 10000, live_event, NULL);
	bench_wait_settled(&d);
	sleep(1);
	bench_stop(mp, 10000);
	const double p[3] = { 0.5, 0.99, 0.999 };
	double q[3] = { 0 };
	if (lrc != 0 || stream_lag(r1[0].url, n + 1, n + sent, p, q, 3) != 0) {
		fprintf(stderr, "bench_mirror: M2 failed (see %s)\n", log);
		goto out;
	}

	char tab[2048];
	int k = snprintf(tab, sizeof tab, "\n| funnel-mirror (NATS JetStream) | target | measured |\n"
	                 "|---|---|---|\n");
	k += snprintf(tab + k, sizeof tab - k, "| ingest into funneld in this run (%" PRIu64 " events, "
	              "packed, pipelined) | - | %.0f ev/s |\n", n, ingest);
	k += snprintf(tab + k, sizeof tab - k, "| mirror into an R1 stream (whole process) | keeps up "
	              "with ingest | %.0f rec/s |\n", m1);
	k += snprintf(tab + k, sizeof tab - k, "| mirror into an R3 stream, 3 nodes on loopback | - | "
	              "%.0f rec/s |\n", m3);
	k += snprintf(tab + k, sizeof tab - k, "| record ts (taken before funneld's fsync) -> stored "
	              "in the stream, 10,000 ev/s (%" PRIu64 " records) | - | p50 %.3f / p99 %.3f / "
	              "p99.9 %.3f ms |\n", sent, q[0], q[1], q[2]);
	snprintf(tab + k, sizeof tab - k, "| replay %" PRIu64 " records: from funneld / from the "
	         "mirror | - | %.0f / %.0f rec/s |\n", n, rf, rm);
	bench_report(tab, "mirror_events=%" PRIu64 "\nmirror_ingest_eps=%.0f\nmirror_r1_rps=%.0f\n"
	             "mirror_r3_rps=%.0f\nmirror_lag_p50_ms=%.3f\nmirror_lag_p99_ms=%.3f\n"
	             "mirror_lag_p999_ms=%.3f\nmirror_replay_funneld_rps=%.0f\n"
	             "mirror_replay_mirror_rps=%.0f\n", n, ingest, m1, m3, q[0], q[1], q[2], rf, rm);
	ret = 0;
out:
	nats_stop(r1, 1);
	nats_stop(r3, 3);
	harness_cleanup(&d);
	if (ret == 0 && getenv("KEEP_TEST_DIRS") == NULL)
		harness_rmrf(dir);
	return ret;
}
