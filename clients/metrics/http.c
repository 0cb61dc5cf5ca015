/*
 * clients/metrics/http.c - the HTTP face of funnel-metrics, on a pool of
 * MX_HTTP_THREADS libmicrohttpd threads, so a report over a large window
 * does not hold up /healthz or a Prometheus scrape.
 *
 *   GET /              the dashboard (dashboard.html, embedded)
 *   GET /api           the reports and their parameters
 *   GET /api/<report>  a report as JSON (METRICS.md); bad parameters: 400
 *   GET /metrics       Prometheus text exposition
 *   GET /healthz       200 when the view has applied the log's head, else 503
 *
 * Each request reads the view in its own read-only transaction, taken
 * under the service's map lock (for reading) so the runtime never
 * resizes the map under it.  The funnel_query that asks funneld for the
 * head is used by one request at a time (qlock): created on first use,
 * destroyed after the threads have stopped.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "funnel/funnel.h"
#include "funnel/log.h"
#include "metrics.h"
#include "mp.h"

#define HEAD_TIMEOUT_MS 1000
#define MX_HTTP_THREADS 2u

struct mx_http {
	struct MHD_Daemon *d;
	mx_tables t;
	pthread_rwlock_t *map_lock;
	char *query_ep;
	pthread_mutex_t qlock;
	funnel_query *q;          /* under qlock */
};

/* Parameters of one /api request, as MHD hands them over. */
typedef struct params {
	mx_query q;
	int bad;
	char param[64];
	char err[256];
	const char *seen[8];
	int nseen;
} params;

static enum MHD_Result
on_param(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	params *p = cls;
	(void)kind;
	if (p->bad)
		return MHD_NO;
	/* the name goes back in the JSON answer: whole UTF-8 characters only */
	if (mp_utf8_invalid_at(key, strlen(key)) >= 0) {
		snprintf(p->param, sizeof p->param, "(not UTF-8)");
		snprintf(p->err, sizeof p->err, "a parameter name is not valid UTF-8");
		p->bad = 1;
		return MHD_NO;
	}
	size_t n = strlen(key);
	if (n >= sizeof p->param) {
		n = sizeof p->param - 1;
		while (n > 0 && ((unsigned char)key[n] & 0xC0) == 0x80)
			n--;
	}
	memcpy(p->param, key, n);
	p->param[n] = 0;
	for (int i = 0; i < p->nseen; i++) {
		if (strcmp(p->seen[i], key) == 0) {
			snprintf(p->err, sizeof p->err, "parameter given twice");
			p->bad = 1;
			return MHD_NO;
		}
	}
	if (p->nseen < 8)
		p->seen[p->nseen++] = key;
	if (mx_query_param(&p->q, key, value, p->err, sizeof p->err) != 0) {
		p->bad = 1;
		return MHD_NO;
	}
	return MHD_YES;
}

static enum MHD_Result
reply(struct MHD_Connection *c, unsigned status, const char *type, void *body, size_t len,
      int owned)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(
		len, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (r == NULL) {
		if (owned)
			free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type", type);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result
reply_json(struct MHD_Connection *c, unsigned status, cJSON *o)
{
	char *s = o ? cJSON_PrintUnformatted(o) : NULL;
	cJSON_Delete(o);
	if (s == NULL)
		return reply(c, 500, "text/plain", "out of memory\n", 14, 0);
	return reply(c, status, "application/json", s, strlen(s), 1);
}

static enum MHD_Result
reply_error(struct MHD_Connection *c, unsigned status, const char *msg, const char *param)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "error", msg);
	if (param)
		cJSON_AddStringToObject(o, "param", param);
	return reply_json(c, status, o);
}

/* The log's head; 0 with *known = 0 when funneld does not answer. */
static uint64_t
log_head(mx_http *h, int *known)
{
	funnel_status st;
	uint64_t head = 0;
	*known = 0;
	pthread_mutex_lock(&h->qlock);
	if (h->q == NULL && funnel_query_new(&h->q, h->query_ep, HEAD_TIMEOUT_MS) != FUNNEL_OK) {
		h->q = NULL;
	} else if (funnel_status_get(h->q, &st) != FUNNEL_OK) {
		/* a timed-out DEALER may hold a late reply: start afresh next time */
		funnel_query_destroy(&h->q);
	} else {
		*known = 1;
		head = st.head;
	}
	pthread_mutex_unlock(&h->qlock);
	return head;
}

static int
begin_read(mx_http *h, MDB_txn **txn)
{
	pthread_rwlock_rdlock(h->map_lock);
	if (mdb_txn_begin(h->t.env, NULL, MDB_RDONLY, txn) != 0) {
		pthread_rwlock_unlock(h->map_lock);
		return -1;
	}
	return 0;
}

static void
end_read(mx_http *h, MDB_txn **txn)
{
	mdb_txn_abort(*txn);
	*txn = NULL;
	pthread_rwlock_unlock(h->map_lock);
}

static enum MHD_Result
serve_api(mx_http *h, struct MHD_Connection *c, const char *name)
{
	params p;
	MDB_txn *txn;
	cJSON *o = NULL;

	memset(&p, 0, sizeof p);
	p.q.model = MX_MODEL_LINEAR;
	p.q.bucket = MX_BUCKET_WEEK;
	p.q.report = mx_report_parse(name);
	if (p.q.report < 0)
		return reply_error(c, 404, "no such report: see METRICS.md for /api/...", NULL);
	MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, on_param, &p);
	if (p.bad)
		return reply_error(c, 400, p.err, p.param);
	if (begin_read(h, &txn) != 0)
		return reply_error(c, 503, "the view cannot be read", NULL);
	int rc = mx_report(txn, &h->t, &p.q, &o);
	end_read(h, &txn);
	if (rc != FUNNEL_OK)
		return reply_error(c, 500, funnel_strerror(rc), NULL);
	return reply_json(c, 200, o);
}

/* GET /api: what there is to ask for. */
static enum MHD_Result
serve_index(struct MHD_Connection *c)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *r = cJSON_AddArrayToObject(o, "reports");
	for (int i = 0; i < MX_R_COUNT; i++)
		cJSON_AddItemToArray(r, cJSON_CreateString(mx_report_name(i)));
	cJSON *p = cJSON_AddObjectToObject(o, "params");
	cJSON_AddStringToObject(p, "from", "YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ (UTC) or ns; included");
	cJSON_AddStringToObject(p, "to", "the same; excluded");
	cJSON_AddStringToObject(p, "source", "the lead's first-touch source");
	cJSON_AddStringToObject(p, "campaign", "the lead's first-touch campaign");
	cJSON_AddStringToObject(p, "model", "attribution, summary: first, last or linear (default)");
	cJSON_AddStringToObject(p, "bucket", "trend, summary: week (default) or day");
	cJSON_AddStringToObject(o, "definitions", "clients/metrics/METRICS.md");
	return reply_json(c, 200, o);
}

static enum MHD_Result
serve_metrics(mx_http *h, struct MHD_Connection *c)
{
	MDB_txn *txn;
	char *text;
	size_t len;
	int known;
	uint64_t head = log_head(h, &known);

	if (begin_read(h, &txn) != 0)
		return reply(c, 503, "text/plain", "the view cannot be read\n", 24, 0);
	int rc = mx_prometheus(txn, &h->t, known, head, &text, &len);
	end_read(h, &txn);
	if (rc != FUNNEL_OK)
		return reply(c, 500, "text/plain", "cannot read the counters\n", 25, 0);
	return reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, 1);
}

static enum MHD_Result
serve_health(mx_http *h, struct MHD_Connection *c)
{
	MDB_txn *txn;
	int known;
	/* the head first: a checkpoint read after it that reaches it is caught up */
	uint64_t head = log_head(h, &known);

	if (begin_read(h, &txn) != 0)
		return reply_error(c, 503, "the view cannot be read", NULL);
	uint64_t cp = mx_checkpoint(txn, &h->t);
	end_read(h, &txn);
	cJSON *o = cJSON_CreateObject();
	const char *status = !known ? "log unreachable" : cp >= head ? "ok" : "catching up";
	cJSON_AddStringToObject(o, "status", status);
	cJSON_AddNumberToObject(o, "checkpoint", (double)cp);
	if (known) {
		cJSON_AddNumberToObject(o, "head", (double)head);
		cJSON_AddNumberToObject(o, "lag", (double)(head > cp ? head - cp : 0));
	} else {
		cJSON_AddNullToObject(o, "head");
		cJSON_AddNullToObject(o, "lag");
	}
	return reply_json(c, known && cp >= head ? 200 : 503, o);
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_size, void **state)
{
	mx_http *h = cls;
	(void)version;
	(void)upload_data;
	(void)state;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return reply_error(c, 405, "only GET and HEAD", NULL);
	if (*upload_size != 0)
		return reply_error(c, 400, "no body expected", NULL);
	if (strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0)
		return reply(c, 200, "text/html; charset=utf-8", (void *)mx_dashboard_html,
		             mx_dashboard_html_len, 0);
	if (strcmp(url, "/api") == 0 || strcmp(url, "/api/") == 0)
		return serve_index(c);
	if (strncmp(url, "/api/", 5) == 0)
		return serve_api(h, c, url + 5);
	if (strcmp(url, "/metrics") == 0)
		return serve_metrics(h, c);
	if (strcmp(url, "/healthz") == 0)
		return serve_health(h, c);
	return reply_error(c, 404, "not found: /, /api/<report>, /metrics, /healthz", NULL);
}

int
mx_http_start(mx_http **out, const char *addr, const mx_tables *t, pthread_rwlock_t *map_lock,
              const char *query_ep)
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
	if (strncmp(host, "127.", 4) != 0)
		funnel_log(FUNNEL_LOG_WARN, "metrics: serving HTTP on %s, beyond loopback: anyone who "
		           "reaches it reads the funnel's numbers", addr);

	mx_http *h = calloc(1, sizeof *h);
	if (h == NULL)
		return FUNNEL_ENOMEM;
	h->t = *t;
	h->map_lock = map_lock;
	pthread_mutex_init(&h->qlock, NULL);
	h->query_ep = strdup(query_ep ? query_ep : FUNNEL_DEFAULT_QUERY);
	if (h->query_ep == NULL) {
		free(h);
		return FUNNEL_ENOMEM;
	}
	h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, (uint16_t)port,
	                        NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, &sa,
	                        MHD_OPTION_THREAD_POOL_SIZE, MX_HTTP_THREADS,
	                        MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
	if (h->d == NULL) {
		funnel_log(FUNNEL_LOG_ERROR, "metrics: cannot serve HTTP on %s", addr);
		pthread_mutex_destroy(&h->qlock);
		free(h->query_ep);
		free(h);
		return FUNNEL_ETRANSPORT;
	}
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
	funnel_log(FUNNEL_LOG_INFO, "metrics: dashboard on http://%s:%u/", host,
	           di ? (unsigned)di->port : (unsigned)port);
	*out = h;
	return FUNNEL_OK;
}

void
mx_http_stop(mx_http **ph)
{
	if (ph == NULL || *ph == NULL)
		return;
	mx_http *h = *ph;
	MHD_stop_daemon(h->d);          /* joins the threads: h->q is ours now */
	funnel_query_destroy(&h->q);
	pthread_mutex_destroy(&h->qlock);
	free(h->query_ep);
	free(h);
	*ph = NULL;
}
