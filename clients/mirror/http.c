/*
 * clients/mirror/http.c - funnel-mirror's status (contract in mirror.h):
 *
 *   GET /healthz   200 "ok ..." when the stream is reachable and holds
 *                  funneld's head as last asked, else 503 with the lag
 *   GET /metrics   Prometheus gauges: mirror seq, head, lag in records
 *                  and in seconds, and counters
 *
 * One server thread (clients/common/httpd.h); each answer reads the
 * counters atomically.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "funnel/funnel.h"
#include "funnel/log.h"
#include "httpd.h"
#include "mirror.h"

struct mirror_http {
	httpd *srv;
	const mirror_counters *c;
};

#define LOAD(f) __atomic_load_n(&h->c->f, __ATOMIC_RELAXED)

static enum MHD_Result
on_request(void *ctx, struct MHD_Connection *conn, const char *url, const char *method,
           const char *upload, size_t *upload_len, void **state)
{
	mirror_http *h = ctx;
	char body[2048];
	(void)upload;
	(void)upload_len;
	(void)state;

	if (strcmp(method, "GET") != 0)
		return httpd_reply_text(h->srv, conn, 405, "text/plain", "GET only\n");
	uint64_t seq = LOAD(acked_seq), head = LOAD(head), ts = LOAD(acked_ts),
	         head_ts = LOAD(head_ts);
	int connected = LOAD(connected);
	uint64_t lag = head > seq ? head - seq : 0;
	double lag_s = lag > 0 && head_ts > ts ? (double)(head_ts - ts) / 1e9 : 0.0;

	if (strcmp(url, "/healthz") == 0) {
		int ok = connected && lag == 0;
		snprintf(body, sizeof body, "%s: mirror seq %" PRIu64 ", head %" PRIu64 ", lag %"
		         PRIu64 " records (%.3f s)%s\n", ok ? "ok" : "behind", seq, head, lag, lag_s,
		         connected ? "" : ", stream not reachable");
		return httpd_reply_text(h->srv, conn, ok ? 200 : 503, "text/plain", body);
	}
	if (strcmp(url, "/metrics") == 0) {
		snprintf(body, sizeof body,
		         "# HELP funnel_mirror_seq The last seq the stream has acknowledged.\n"
		         "# TYPE funnel_mirror_seq gauge\n"
		         "funnel_mirror_seq %" PRIu64 "\n"
		         "# HELP funnel_mirror_head The log's head seq, as funneld last said.\n"
		         "# TYPE funnel_mirror_head gauge\n"
		         "funnel_mirror_head %" PRIu64 "\n"
		         "# HELP funnel_mirror_lag_records Records of the log not in the stream yet.\n"
		         "# TYPE funnel_mirror_lag_records gauge\n"
		         "funnel_mirror_lag_records %" PRIu64 "\n"
		         "# HELP funnel_mirror_lag_seconds Log time between the head and the last "
		         "record mirrored.\n"
		         "# TYPE funnel_mirror_lag_seconds gauge\n"
		         "funnel_mirror_lag_seconds %.6f\n"
		         "# HELP funnel_mirror_up 1 when the stream is reachable and checked.\n"
		         "# TYPE funnel_mirror_up gauge\n"
		         "funnel_mirror_up %d\n"
		         "# HELP funnel_mirror_published_total Messages the stream stored.\n"
		         "# TYPE funnel_mirror_published_total counter\n"
		         "funnel_mirror_published_total %" PRIu64 "\n"
		         "# HELP funnel_mirror_duplicates_total Resends the stream dropped as "
		         "duplicates.\n"
		         "# TYPE funnel_mirror_duplicates_total counter\n"
		         "funnel_mirror_duplicates_total %" PRIu64 "\n"
		         "# HELP funnel_mirror_resyncs_total Restarts from the stream's last seq.\n"
		         "# TYPE funnel_mirror_resyncs_total counter\n"
		         "funnel_mirror_resyncs_total %" PRIu64 "\n",
		         seq, head, lag, lag_s, connected, LOAD(published), LOAD(duplicates),
		         LOAD(resyncs));
		return httpd_reply_text(h->srv, conn, 200, "text/plain; version=0.0.4", body);
	}
	return httpd_reply_text(h->srv, conn, 404, "text/plain", "not found: /healthz, /metrics\n");
}

int
mirror_http_start(mirror_http **out, const char *addr, const mirror_counters *c)
{
	*out = NULL;
	mirror_http *h = calloc(1, sizeof *h);
	if (h == NULL)
		return FUNNEL_ENOMEM;
	h->c = c;
	/* one thread; answers without Cache-Control, as they always were */
	httpd_opts o = { .name = "mirror", .addr = addr, .idle_s = 10, .on_request = on_request,
	                 .ctx = h };
	int rc = httpd_new(&h->srv, &o);
	if (rc != FUNNEL_OK) {
		free(h);
		return rc;
	}
	funnel_log(FUNNEL_LOG_INFO, "mirror: status on http://%s:%u/healthz and /metrics",
	           httpd_host(h->srv), httpd_port(h->srv));
	*out = h;
	return FUNNEL_OK;
}

void
mirror_http_stop(mirror_http **ph)
{
	if (ph == NULL || *ph == NULL)
		return;
	httpd_destroy(&(*ph)->srv);
	free(*ph);
	*ph = NULL;
}
