/*
 * tests/bench/bench_routing.c - the numbers of funnel-routing, measured on
 * the real binaries (funneld, funnel-routing) with the shipped funnel.yaml:
 *
 *   R1  routing decisions/s during a rebuild: a history of
 *       BENCH_ROUTING_LEADS (default 100,000) leads, each captured with a
 *       web form's fields and qualified, and sent back by sales (rejected)
 *       50 leads later, so reps' open leads stay below their caps, as in
 *       a working funnel; the first pass routes them all and records
 *       every lead.assigned; then `funnel-routing --rebuild --until-head`,
 *       wall time of the whole process (replay + apply + view commits):
 *       qualified leads routed per second, and records per second.
 *   R2  live: the same shape of traffic paced at 10,000 events/s for
 *       BENCH_ROUTING_SECS (default 5) seconds with funnel-routing
 *       following; the latency from the lead.qualified commit to the
 *       commit of the lead.assigned it caused (daemon timestamps).
 *       Target: p99 <= 1 ms added.
 *
 * Prints a table and appends it and key=value lines to BENCH_OUT (if set).
 * BENCH_ROUTING_WRAP is put before the rebuild's command line, to profile
 * it: BENCH_ROUTING_WRAP="valgrind --tool=callgrind".
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <msgpack.h>

#include "bench.h"
#include "funnel/funnel.h"
#include "funnel/service.h"
#include "harness.h"
#include "workload.h"

#define RULES "funnel.yaml"
#define CLOSE_AFTER 50             /* a lead is disqualified this many leads later */

/* The k-th event of the stream (3 per lead: captured, qualified, and the
 * rejection of an earlier lead), its data packed into sb. */
static void
stream_event(uint64_t k, const char *prefix, msgpack_sbuffer *sb, char *lead, size_t llen,
             funnel_event *ev)
{
	uint64_t i = k / 3;
	memset(ev, 0, sizeof *ev);
	ev->lead = lead;
	switch (k % 3) {
	case 0:
		snprintf(lead, llen, "%s-%" PRIu64, prefix, i);
		wl_lead_data(sb, 17, i);
		ev->type = "lead.captured";
		break;
	case 1:
		snprintf(lead, llen, "%s-%" PRIu64, prefix, i);
		ev->type = "lead.qualified";
		return;
	default:
		if (i < CLOSE_AFTER) {
			/* nothing to close yet: one more activity instead */
			snprintf(lead, llen, "%s-%" PRIu64, prefix, i);
			wl_kv(sb, "kind", "page_view", NULL);
			ev->type = "lead.activity";
		} else {
			snprintf(lead, llen, "%s-%" PRIu64, prefix, i - CLOSE_AFTER);
			wl_kv(sb, "reason", "no-budget", NULL);
			ev->type = "lead.rejected";
		}
		break;
	}
	ev->data = sb->data;
	ev->data_len = sb->size;
}

/* R1's history: `leads` leads, 1000 events per request, pipelined. */
static int
fill_history(const daemon_proc *d, uint64_t leads)
{
	enum { BATCH = 999 };
	funnel_producer *p;
	static msgpack_sbuffer sb[BATCH];
	static char lead[BATCH][48];
	static funnel_event ev[BATCH];
	uint64_t n = leads * 3;
	int rc = 0;

	if (funnel_producer_new(&p, d->ingest, 30000) != FUNNEL_OK)
		return -1;
	funnel_set_window(p, 8);
	for (int j = 0; j < BATCH; j++)
		msgpack_sbuffer_init(&sb[j]);
	for (uint64_t done = 0; done < n && rc == 0; done += BATCH) {
		size_t k = n - done < BATCH ? (size_t)(n - done) : BATCH;
		for (size_t j = 0; j < k; j++) {
			sb[j].size = 0;
			stream_event(done + j, "h", &sb[j], lead[j], sizeof lead[j], &ev[j]);
		}
		uint64_t rid;
		rc = funnel_send(p, ev, k, &rid) == FUNNEL_OK ? 0 : -1;
		while (rc == 0 && funnel_in_flight(p) >= 8)
			rc = funnel_collect(p, 30000, NULL, NULL, 0, NULL) == FUNNEL_OK ? 0 : -1;
	}
	while (rc == 0 && funnel_in_flight(p) > 0)
		rc = funnel_collect(p, 30000, NULL, NULL, 0, NULL) == FUNNEL_OK ? 0 : -1;
	for (int j = 0; j < BATCH; j++)
		msgpack_sbuffer_destroy(&sb[j]);
	funnel_producer_destroy(&p);
	return rc;
}

/* R2's load: the stream, one event per request. */
static void
live_event(uint64_t k, msgpack_sbuffer *sb, char *lead, char *id, funnel_event *ev, void *ctx)
{
	(void)id, (void)ctx;
	stream_event(k, "live", sb, lead, 64, ev);
}

int
main(void)
{
	uint64_t leads = bench_env_u64("BENCH_ROUTING_LEADS", 100000);
	uint64_t secs = bench_env_u64("BENCH_ROUTING_SECS", 5);
	const double p[3] = { 0.5, 0.99, 0.999 };
	daemon_proc d;
	char view[400];
	uint8_t dg[32];
	uint64_t head = 0, nq = 0;
	double q[3];

	if (access(RULES, R_OK) != 0) {
		fprintf(stderr, "bench_routing: run from the repository root (needs %s)\n", RULES);
		return 1;
	}
	/* R1 */
	fprintf(stderr, "bench_routing: R1: %" PRIu64 " leads of history...\n", leads);
	if (harness_start(&d, NULL) != 0 || fill_history(&d, leads) != 0)
		return 1;
	snprintf(view, sizeof view, "%s/routing", d.dir);
	uint64_t first = bench_service_until_head(&d, "funnel-routing", RULES, view, "", NULL);
	bench_wait_settled(&d);
	uint64_t rebuild = bench_service_until_head(&d, "funnel-routing", RULES, view, "--rebuild",
	                                            getenv("BENCH_ROUTING_WRAP"));
	funnel_view_digest(view, dg, &head);
	harness_cleanup(&d);
	if (!first || !rebuild)
		return 1;
	double decisions = (double)leads / ((double)rebuild / 1e9);
	double records = (double)head / ((double)rebuild / 1e9);
	double first_dps = (double)leads / ((double)first / 1e9);

	/* R2 */
	fprintf(stderr, "bench_routing: R2: %" PRIu64 " s at 10,000 events/s...\n", secs);
	if (harness_start(&d, NULL) != 0)
		return 1;
	pid_t svc = bench_service_start(&d, "funnel-routing", RULES);
	if (svc < 0)
		return 1;
	int lrc = bench_paced_load(&d, secs * 10000, 10000, live_event, NULL);
	bench_wait_settled(&d);
	bench_stop(svc, 10000);
	bench_cause_latency(d.query, "lead.assigned", p, q, 3, &nq);
	harness_cleanup(&d);
	if (lrc != 0)
		return 1;

	char tab[2048];
	int k = snprintf(tab, sizeof tab, "\n| funnel-routing | target | measured |\n|---|---|---|\n");
	k += snprintf(tab + k, sizeof tab - k, "| routing decisions during a rebuild (%" PRIu64
	              " qualified leads, %" PRIu64 " records) | - | %.0f decisions/s (%.0f "
	              "records/s) |\n", leads, head, decisions, records);
	k += snprintf(tab + k, sizeof tab - k, "| first pass over the same history, sending each "
	              "lead.assigned | - | %.0f decisions/s |\n", first_dps);
	snprintf(tab + k, sizeof tab - k, "| lead.qualified commit -> lead.assigned commit at "
	         "10,000 ev/s (%" PRIu64 " assigned) | p99 <= 1 ms | p50 %.3f / p99 %.3f / p99.9 "
	         "%.3f ms |\n", nq, q[0], q[1], q[2]);
	bench_report(tab, "routing_rebuild_leads=%" PRIu64 "\nrouting_rebuild_records=%"
	             PRIu64 "\nrouting_rebuild_decisions_per_s=%.0f\nrouting_rebuild_records_per_s="
	             "%.0f\nrouting_first_pass_decisions_per_s=%.0f\nrouting_assigned=%" PRIu64
	             "\nrouting_assigned_p50_ms=%.3f\nrouting_assigned_p99_ms=%.3f\n"
	             "routing_assigned_p999_ms=%.3f\n",
	             leads, head, decisions, records, first_dps, nq, q[0], q[1], q[2]);
	return 0;
}
