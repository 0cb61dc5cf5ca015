/*
 * tests/bench/bench_metrics.c - the numbers of funnel-metrics, measured on
 * the real binaries (funneld, funnel-metrics):
 *
 *   M1  rebuild of the metrics view from a history of BENCH_METRICS_EVENTS
 *       (default 1,000,000) funnel-shaped events: `funnel-metrics
 *       --rebuild --until-head`, wall time of the whole process (replay +
 *       apply + view commits).  Target >= 200,000 events/s.
 *   M2  with that large view served: response time of /api/summary (every
 *       report: one pass over all the facts and all the leads), /api/funnel
 *       with a source filter, /api/followup over one day, and /metrics,
 *       BENCH_METRICS_REQUESTS (default 30) sequential GETs each over a
 *       fresh loopback connection; p50 and p99 in ms.  Also /api/summary
 *       over a window of one day (with its previous day), a page of the
 *       lead list of MQL entries (the dashboard's drill-down) and a lead's
 *       timeline (/api/lead/ID, which asks funneld for the lead's events).
 *       The numbers are /api/summary (all time, and one whole UTC
 *       day), the lead list page and the timeline; /api/summary over the
 *       day up to 23:59:59 reads that partial day from the facts, and
 *       /api/summary?compute=facts is the reference path (every fact and
 *       lead, as before the days table), both for comparison.
 *
 * Prints a table and appends it to BENCH_OUT (if set).
 * BENCH_METRICS_WRAP is put before the rebuild's command line, to profile
 * it: BENCH_METRICS_WRAP="valgrind --tool=callgrind".
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "funnel/funnel.h"
#include "funnel/service.h"
#include "harness.h"

/* One GET over a fresh connection: the HTTP status, or -1; *bytes is the
 * size of the whole answer. */
static int
http_get(int port, const char *path, size_t *bytes)
{
	static char buf[1 << 16];
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), status = -1;
	size_t total = 0;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0)
		return -1;
	struct timeval tv = { .tv_sec = 30 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
		char req[512];
		int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
		                 "Connection: close\r\n\r\n", path);
		if (write(fd, req, (size_t)n) == n) {
			ssize_t r;
			while ((r = read(fd, buf, sizeof buf)) > 0) {
				if (total == 0 && r > 12)
					status = atoi(buf + 9);
				total += (size_t)r;
			}
		}
	}
	close(fd);
	*bytes = total;
	return status;
}

/* p50, p99 (ms) and the answer size of n GETs of path. */
static int
time_gets(int port, const char *path, uint64_t n, double q[2], size_t *bytes)
{
	const double p[2] = { 0.5, 0.99 };
	uint64_t *ns = calloc(n, sizeof *ns);
	int rc = 0;
	if (ns == NULL)
		return -1;
	for (uint64_t i = 0; i < n && rc == 0; i++) {
		uint64_t t0 = harness_now_ns();
		if (http_get(port, path, bytes) != 200)
			rc = -1;
		ns[i] = harness_now_ns() - t0;
	}
	bench_quantiles_ms(ns, n, p, q, 2);
	free(ns);
	if (rc != 0)
		fprintf(stderr, "bench_metrics: GET %s failed\n", path);
	return rc;
}

int
main(void)
{
	uint64_t n = bench_env_u64("BENCH_METRICS_EVENTS", 1000000);
	uint64_t reqs = bench_env_u64("BENCH_METRICS_REQUESTS", 30);
	daemon_proc d;
	char view[400];
	uint8_t dg[32], dg2[32];
	uint64_t head = 0, head2 = 0;

	if (reqs == 0)
		reqs = 1;
	/* M1 */
	fprintf(stderr, "bench_metrics: M1: %" PRIu64 " events of history...\n", n);
	if (harness_start(&d, NULL) != 0 || bench_fill_history(d.ingest, n) != 0)
		return 1;
	snprintf(view, sizeof view, "%s/metrics", d.dir);
	uint64_t first = bench_service_until_head(&d, "funnel-metrics", "funnel.yaml", view, "", NULL);
	funnel_view_digest(view, dg, &head);
	uint64_t rebuild = bench_service_until_head(&d, "funnel-metrics", "funnel.yaml", view, "--rebuild",
	                                            getenv("BENCH_METRICS_WRAP"));
	funnel_view_digest(view, dg2, &head2);
	if (!first || !rebuild) {
		harness_cleanup(&d);
		return 1;
	}
	double rebuild_eps = (double)head2 / ((double)rebuild / 1e9);
	double first_eps = (double)head / ((double)first / 1e9);
	int same = head == head2 && memcmp(dg, dg2, 32) == 0;

	/* M2: the same large view, served */
	fprintf(stderr, "bench_metrics: M2: %" PRIu64 " requests per endpoint...\n", reqs);
	int port = bench_free_port();
	char http[64], ready[400], log[400];
	snprintf(http, sizeof http, "127.0.0.1:%d", port);
	snprintf(ready, sizeof ready, "%s/metrics.ready", d.dir);
	snprintf(log, sizeof log, "%s/metrics.log", d.dir);
	char *const argv[] = { (char *)harness_bin("funnel-metrics"), "--view", view, "--http", http,
	                       "--ingest", d.ingest, "--publish", d.publish, "--query", d.query,
	                       "--ready-file", ready, "--log-level", "warn", NULL };
	pid_t svc = bench_spawn(argv, log);
	for (int i = 0; i < 1000 && access(ready, F_OK) != 0; i++)
		usleep(10000);
	/* a day of the history: the facts of its first 24 h */
	char day[128];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	snprintf(day, sizeof day, "/api/followup?from=%04d-%02d-%02d", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday);
	char sday[128], list[128];
	snprintf(sday, sizeof sday, "/api/summary?from=%04d-%02d-%02d&to=%04d-%02d-%02dT23:59:59Z",
	         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday);
	snprintf(list, sizeof list, "/api/leads?stage=mql&page=3");
	/* the same day as whole UTC days: read from the days table alone */
	char wday[128];
	time_t next = now + 86400;
	struct tm tn;
	gmtime_r(&next, &tn);
	snprintf(wday, sizeof wday, "/api/summary?from=%04d-%02d-%02d&to=%04d-%02d-%02d",
	         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tn.tm_year + 1900, tn.tm_mon + 1,
	         tn.tm_mday);
#define NPATHS 9
	static const char *paths[NPATHS];
	paths[0] = "/api/summary";
	paths[1] = "/api/funnel?source=webinar";
	paths[2] = day;
	paths[3] = "/metrics";
	paths[4] = sday;
	paths[5] = list;
	paths[6] = "/api/lead/h-L0";
	paths[7] = wday;
	/* the reference path: every fact and lead one by one (what /api/summary
	 * read before the days table) */
	paths[8] = "/api/summary?compute=facts";
	double q[NPATHS][2];
	size_t size[NPATHS] = { 0 };
	int rc = 0;
	for (int i = 0; i < NPATHS && rc == 0; i++)
		rc = time_gets(port, paths[i], reqs, q[i], &size[i]);
	bench_stop(svc, 10000);
	harness_cleanup(&d);
	if (rc != 0)
		return 1;

	char tab[8192];
	int k = snprintf(tab, sizeof tab, "\n| funnel-metrics | target | measured |\n|---|---|---|\n");
	k += snprintf(tab + k, sizeof tab - k, "| rebuild the view from %" PRIu64 " records (replay + "
	              "apply + commit) | >= 200,000 ev/s | %.0f ev/s%s |\n", head2, rebuild_eps,
	              same ? "" : " (DIGEST DIFFERS from the first pass)");
	k += snprintf(tab + k, sizeof tab - k, "| first pass over the same history | - | %.0f ev/s |\n",
	              first_eps);
	for (int i = 0; i < NPATHS; i++)
		k += snprintf(tab + k, sizeof tab - k, "| GET %s on that view (%" PRIu64 " requests, "
		              "%zu bytes) | - | p50 %.1f / p99 %.1f ms |\n", paths[i], reqs, size[i],
		              q[i][0], q[i][1]);
	bench_report(tab, "metrics_rebuild_records=%" PRIu64 "\nmetrics_rebuild_eps=%.0f\n"
	             "metrics_first_pass_eps=%.0f\nmetrics_rebuild_same_digest=%d\n"
	             "metrics_summary_p50_ms=%.1f\nmetrics_summary_p99_ms=%.1f\n"
	             "metrics_prometheus_p50_ms=%.1f\nmetrics_prometheus_p99_ms=%.1f\n"
	             "metrics_leads_page_p50_ms=%.1f\nmetrics_leads_page_p99_ms=%.1f\n"
	             "metrics_lead_timeline_p50_ms=%.1f\nmetrics_lead_timeline_p99_ms=%.1f\n"
	             "metrics_summary_day_p50_ms=%.1f\nmetrics_summary_day_p99_ms=%.1f\n"
	             "metrics_summary_facts_p50_ms=%.1f\nmetrics_summary_facts_p99_ms=%.1f\n",
	             head2, rebuild_eps, first_eps, same, q[0][0], q[0][1], q[3][0], q[3][1],
	             q[5][0], q[5][1], q[6][0], q[6][1], q[7][0], q[7][1], q[8][0], q[8][1]);
	return same ? 0 : 1;
}
