/*
 * tests/bench/bench_scoring.c - the DESIGN.md numbers of funnel-scoring,
 * measured on the real binaries (funneld, funnel-scoring) with the shipped
 * funnel.yaml:
 *
 *   S1  rebuild of the scoring view from a history of BENCH_SCORING_EVENTS
 *       (default 1,000,000) funnel-shaped events: `funnel-scoring
 *       --rebuild --until-head`, wall time of the whole process (replay +
 *       apply + view commits).  Target >= 200,000 events/s.
 *   S2  live: leads captured and active at a paced 10,000 events/s for
 *       BENCH_SCORING_SECS (default 5) seconds with funnel-scoring
 *       following; the latency from a record's commit to the commit of
 *       the lead.qualified (and lead.scored) it caused, read from the two
 *       records' daemon timestamps.  Target p99 <= 1 ms.
 *
 * Prints a table and appends key=value lines to BENCH_OUT (if set).
 * BENCH_SCORING_WRAP is put before the rebuild's command line, to profile
 * it: BENCH_SCORING_WRAP="perf record -g -o /tmp/perf.data".
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "funnel/funnel.h"
#include "funnel/service.h"
#include "harness.h"
#include "workload.h"

#define RULES "funnel.yaml"

/* S2's load: per lead one capture then activities. */
static void
live_event(uint64_t i, msgpack_sbuffer *sb, char *lead, char *id, funnel_event *ev, void *ctx)
{
	static const char *const kinds[] = { "page_view", "email_click", "webinar", "demo_request" };
	uint64_t l = i / 5, step = i % 5;
	(void)ctx;
	snprintf(lead, 64, "live-%" PRIu64, l);
	snprintf(id, 64, "live-%" PRIu64, i);
	ev->lead = lead;
	ev->id = id;
	if (step == 0) {
		wl_lead_data(sb, 5, l);
		ev->type = "lead.captured";
	} else {
		wl_kv(sb, "kind", kinds[(step - 1) & 3], "url", "https://example.com/pricing", NULL);
		ev->type = "lead.activity";
	}
	ev->data = sb->data;
	ev->data_len = sb->size;
}

int
main(void)
{
	uint64_t n = bench_env_u64("BENCH_SCORING_EVENTS", 1000000);
	uint64_t secs = bench_env_u64("BENCH_SCORING_SECS", 5);
	daemon_proc d;
	char view[400];
	uint8_t dg[32];
	uint64_t head = 0;

	if (access(RULES, R_OK) != 0) {
		fprintf(stderr, "bench_scoring: run from the repository root (needs %s)\n", RULES);
		return 1;
	}
	/* S1 */
	fprintf(stderr, "bench_scoring: S1: %" PRIu64 " events of history...\n", n);
	if (harness_start(&d, NULL) != 0 || bench_fill_history(d.ingest, n) != 0)
		return 1;
	snprintf(view, sizeof view, "%s/scoring", d.dir);
	uint64_t first = bench_service_until_head(&d, "funnel-scoring", RULES, view, "", NULL);
	funnel_view_digest(view, dg, &head);
	uint64_t rebuild = bench_service_until_head(&d, "funnel-scoring", RULES, view, "--rebuild",
	                                            getenv("BENCH_SCORING_WRAP"));
	uint64_t head2 = 0;
	funnel_view_digest(view, dg, &head2);
	harness_cleanup(&d);
	if (!first || !rebuild)
		return 1;
	double rebuild_eps = (double)head2 / ((double)rebuild / 1e9);
	double first_eps = (double)head / ((double)first / 1e9);

	/* S2 */
	fprintf(stderr, "bench_scoring: S2: %" PRIu64 " s at 10,000 events/s...\n", secs);
	if (harness_start(&d, NULL) != 0)
		return 1;
	pid_t svc = bench_service_start(&d, "funnel-scoring", RULES);
	if (svc < 0)
		return 1;
	uint64_t sent = 0;
	sent = secs * 10000;
	int lrc = bench_paced_load(&d, sent, 10000, live_event, NULL);
	bench_wait_settled(&d);
	bench_stop(svc, 10000);
	const double p[3] = { 0.5, 0.99, 0.999 };
	double q[3], s[3];
	uint64_t nq = 0, ns = 0;
	bench_cause_latency(d.query, "lead.qualified", p, q, 3, &nq);
	bench_cause_latency(d.query, "lead.scored", p, s, 3, &ns);
	harness_cleanup(&d);
	if (lrc != 0)
		return 1;

	char tab[2048];
	int k = snprintf(tab, sizeof tab, "\n| funnel-scoring | target | measured |\n|---|---|---|\n");
	k += snprintf(tab + k, sizeof tab - k, "| rebuild the view from %" PRIu64 " records (replay + "
	              "apply + commit) | >= 200,000 ev/s | %.0f ev/s |\n", head2, rebuild_eps);
	k += snprintf(tab + k, sizeof tab - k, "| first pass over the same history, sending each "
	              "derived event | - | %.0f ev/s |\n", first_eps);
	k += snprintf(tab + k, sizeof tab - k, "| record commit -> lead.qualified commit at 10,000 "
	              "ev/s (%" PRIu64 " qualified) | p99 <= 1 ms | p50 %.3f / p99 %.3f / p99.9 %.3f "
	              "ms |\n", nq, q[0], q[1], q[2]);
	snprintf(tab + k, sizeof tab - k, "| record commit -> lead.scored commit at 10,000 ev/s "
	         "(%" PRIu64 " scored) | - | p50 %.3f / p99 %.3f / p99.9 %.3f ms |\n", ns, s[0], s[1],
	         s[2]);
	bench_report(tab, "scoring_rebuild_records=%" PRIu64 "\nscoring_rebuild_eps=%.0f\n"
	             "scoring_first_pass_eps=%.0f\nscoring_live_sent=%" PRIu64 "\n"
	             "scoring_qualified=%" PRIu64 "\nscoring_qualified_p50_ms=%.3f\n"
	             "scoring_qualified_p99_ms=%.3f\nscoring_qualified_p999_ms=%.3f\n"
	             "scoring_scored=%" PRIu64 "\nscoring_scored_p99_ms=%.3f\n",
	             head2, rebuild_eps, first_eps, sent, nq, q[0], q[1], q[2], ns, s[1]);
	return 0;
}
