/*
 * clients/mirror/http.c - funnel-mirror's status (contract in mirror.h):
 *
 *   GET /healthz   200 "ok ..." when the stream is reachable and holds
 *                  funneld's head as last asked, else 503 with the lag
 *   GET /metrics   Prometheus gauges: mirror seq, head, lag in records
 *                  and in seconds, and counters
 *
 * One libmicrohttpd thread; each answer reads the counters atomically.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "funnel/funnel.h"
#include "funnel/log.h"
#include "mirror.h"

struct mirror_http {
	struct MHD_Daemon *d;
	const mirror_counters *c;
};

#define LOAD(f) __atomic_load_n(&h->c->f, __ATOMIC_RELAXED)

static enum MHD_Result
answer(struct MHD_Connection *conn, unsigned status, const char *type, const char *body)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body,
	                                                         MHD_RESPMEM_MUST_COPY);
	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", type);
	enum MHD_Result ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
           const char *version, const char *upload, size_t *upload_len, void **state)
{
	mirror_http *h = cls;
	char body[2048];
	(void)version;
	(void)upload;
	(void)upload_len;
	(void)state;

	if (strcmp(method, "GET") != 0)
		return answer(conn, 405, "text/plain", "GET only\n");
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
		return answer(conn, ok ? 200 : 503, "text/plain", body);
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
		return answer(conn, 200, "text/plain; version=0.0.4", body);
	}
	return answer(conn, 404, "text/plain", "not found: /healthz, /metrics\n");
}

int
mirror_http_start(mirror_http **out, const char *addr, const mirror_counters *c)
{
	struct sockaddr_in sa;
	char host[64];
	const char *colon = strrchr(addr, ':');
	char *end;

	*out = NULL;
	if (colon == NULL || (size_t)(colon - addr) >= sizeof host)
		return FUNNEL_EINVAL;
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = 0;
	unsigned long port = strtoul(colon + 1, &end, 10);
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	if (*end || colon[1] == 0 || port > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return FUNNEL_EINVAL;
	mirror_http *h = calloc(1, sizeof *h);
	if (h == NULL)
		return FUNNEL_ENOMEM;
	h->c = c;
	h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (uint16_t)port,
	                        NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, &sa,
	                        MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
	if (h->d == NULL) {
		funnel_log(FUNNEL_LOG_ERROR, "mirror: cannot serve HTTP on %s", addr);
		free(h);
		return FUNNEL_ETRANSPORT;
	}
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
	funnel_log(FUNNEL_LOG_INFO, "mirror: status on http://%s:%u/healthz and /metrics", host,
	           di ? (unsigned)di->port : (unsigned)port);
	*out = h;
	return FUNNEL_OK;
}

void
mirror_http_stop(mirror_http **ph)
{
	if (ph == NULL || *ph == NULL)
		return;
	MHD_stop_daemon((*ph)->d);
	free(*ph);
	*ph = NULL;
}
