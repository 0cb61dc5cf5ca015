/*
 * clients/metrics/http.c - the HTTP face of funnel-metrics, on a pool of
 * MX_HTTP_THREADS server threads (clients/common/httpd.h), so a report
 * over a large window does not hold up /healthz or a Prometheus scrape.
 *
 *   GET /              the dashboard (dashboard.html, embedded)
 *   GET /api           the reports and their parameters
 *   GET /api/<report>  a report as JSON (METRICS.md); bad parameters: 400
 *   GET /metrics       Prometheus text exposition
 *   GET /healthz       200 when the view has applied the log's head, else 503
 *                      (status "different log" when funneld serves another
 *                      log than the view's)
 *
 * Each request reads the view in its own read-only transaction, taken
 * under the service's map lock (for reading) so the runtime never
 * resizes the map under it.  No request ever waits on funneld: the
 * log's head is read by a thread of its own (the prober), every
 * PROBE_MS, each try bounded by HEAD_TIMEOUT_MS, and /healthz and
 * /metrics print the last head it read and how old that is.  The head
 * is the one of where the records come from: funneld's, or with
 * --source the mirror stream's last sequence (funnel_source_head), so a
 * service far from funneld reads no head it cannot reach.  The prober
 * owns its funnel_query; the requests read its findings under plock.
 *
 * Limits (METRICS.md, "HTTP limits"): at most MX_HTTP_MAX_CONNS
 * connections in all and MX_HTTP_MAX_PER_ADDR from one client address
 * (more are closed as they arrive), a connection idle for
 * MX_HTTP_IDLE_S seconds is closed, and a request with more than
 * MX_HTTP_MAX_PARAMS query parameters is answered 400 before any of
 * them is parsed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "funnel/funnel.h"
#include "funnel/log.h"
#include "funnel/service.h"
#include "httpauth.h"
#include "httpd.h"
#include "metrics.h"
#include "mp.h"

#define HEAD_TIMEOUT_MS 1000     /* one status request to funneld, at most */
#define PROBE_MS 500             /* between two reads of the log's head */
#define MX_HTTP_THREADS 2u
#define MX_HTTP_MAX_CONNS 256u   /* open connections, in all */
#define MX_HTTP_MAX_PER_ADDR 32u /* open connections from one client address */
#define MX_HTTP_IDLE_S 10u       /* a connection silent this long is closed */
#define MX_HTTP_MAX_PARAMS 16    /* query parameters of one request (11 exist) */

/* What the prober last learnt about the log (under plock). */
typedef struct probe {
	int reachable;            /* the last try got an answer */
	int known;                /* some try ever got one: head and at are set */
	uint64_t head;            /* the head of the last answer */
	struct timespec at;       /* CLOCK_MONOTONIC of the last answer */
} probe;

struct mx_http {
	httpd *srv;
	mx_tables t;
	pthread_rwlock_t *map_lock;
	funnel_service *svc;      /* for funnel_service_log_state only */
	char *query_ep;
	char currency[4];         /* ISO 4217 code, "" when not set */
	const mx_goals *goals;    /* the caller's, outlives the server; NULL: none */
	char *source;             /* NULL: the head is funneld's (query_ep) */
	pthread_t prober;
	int prober_started;
	pthread_mutex_t plock;
	pthread_cond_t pwake;     /* signalled to stop the prober */
	int stopping;             /* under plock */
	probe last;               /* under plock */
};

/* With --access: the bearer tokens every data path asks for (NULL: open). */
static const http_auth *mx_auth;

void
mx_http_require_tokens(const http_auth *a)
{
	mx_auth = a;
}

/* Parameters of one /api request, as MHD hands them over. */
typedef struct params {
	mx_query q;
	int bad;
	char param[64];
	char err[256];
	const char *seen[MX_HTTP_MAX_PARAMS];
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
	if (p->nseen < MX_HTTP_MAX_PARAMS)
		p->seen[p->nseen++] = key;
	if (mx_query_param(&p->q, key, value, p->err, sizeof p->err) != 0) {
		p->bad = 1;
		return MHD_NO;
	}
	return MHD_YES;
}

/* {"error", "param"?} (METRICS.md) */
static enum MHD_Result
reply_error(mx_http *h, struct MHD_Connection *c, unsigned status, const char *msg,
            const char *param)
{
	return httpd_reply_error(h->srv, c, status, NULL, param, msg, -1, NULL, 0);
}

/* The prober: reads the log's head every PROBE_MS until told to stop.
 * Its funnel_query is its own; a try that fails (funneld down, or a
 * timed-out DEALER that may hold a late reply) starts afresh next time. */
static void *
prober_main(void *arg)
{
	mx_http *h = arg;
	funnel_query *q = NULL;
	funnel_status st;

	pthread_mutex_lock(&h->plock);
	while (!h->stopping) {
		pthread_mutex_unlock(&h->plock);
		int ok = 0;
		if (h->source != NULL)
			ok = funnel_source_head(h->source, HEAD_TIMEOUT_MS, &st.head, NULL) == FUNNEL_OK;
		else if (q == NULL && funnel_query_new(&q, h->query_ep, HEAD_TIMEOUT_MS) != FUNNEL_OK)
			q = NULL;
		else if (funnel_status_get(q, &st) != FUNNEL_OK)
			funnel_query_destroy(&q);
		else
			ok = 1;
		struct timespec now, until;
		clock_gettime(CLOCK_MONOTONIC, &now);
		pthread_mutex_lock(&h->plock);
		h->last.reachable = ok;
		if (ok) {
			h->last.known = 1;
			h->last.head = st.head;
			h->last.at = now;
		}
		until = now;
		until.tv_nsec += (long)PROBE_MS * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		while (!h->stopping &&
		       pthread_cond_timedwait(&h->pwake, &h->plock, &until) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&h->plock);
	funnel_query_destroy(&q);
	return NULL;
}

/* The prober's last findings, and their age in ns (0 when never known). */
static probe
last_probe(mx_http *h, uint64_t *age_ns)
{
	struct timespec now;
	pthread_mutex_lock(&h->plock);
	probe p = h->last;
	pthread_mutex_unlock(&h->plock);
	clock_gettime(CLOCK_MONOTONIC, &now);
	*age_ns = 0;
	if (p.known) {
		int64_t d = (int64_t)(now.tv_sec - p.at.tv_sec) * 1000000000LL +
		            (now.tv_nsec - p.at.tv_nsec);
		*age_ns = d > 0 ? (uint64_t)d : 0;
	}
	return p;
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
		return reply_error(h, c, 404, "no such report: see METRICS.md for /api/...", NULL);
	MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, on_param, &p);
	if (p.bad)
		return reply_error(h, c, 400, p.err, p.param);
	if (begin_read(h, &txn) != 0)
		return reply_error(h, c, 503, "the view cannot be read", NULL);
	int rc = mx_report(txn, &h->t, &p.q, &o);
	end_read(h, &txn);
	if (rc != FUNNEL_OK)
		return reply_error(h, c, 500, funnel_strerror(rc), NULL);
	if (p.q.report == MX_R_SUMMARY) {
		if (h->currency[0])
			cJSON_AddStringToObject(o, "currency", h->currency);
		else
			cJSON_AddNullToObject(o, "currency");
	}
	return httpd_reply_json(h->srv, c, 200, o, NULL, 0);
}

/* A msgpack object as JSON (maps with string keys; other keys skipped;
 * binary as null).  Integers past 2^53 are written as their digits. */
static cJSON *
mp_json(const msgpack_object *o)
{
	char digits[24];
	switch (o->type) {
	case MSGPACK_OBJECT_BOOLEAN: return cJSON_CreateBool(o->via.boolean);
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		snprintf(digits, sizeof digits, "%" PRIu64, o->via.u64);
		return cJSON_CreateRaw(digits);
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		snprintf(digits, sizeof digits, "%" PRId64, o->via.i64);
		return cJSON_CreateRaw(digits);
	case MSGPACK_OBJECT_FLOAT32: case MSGPACK_OBJECT_FLOAT64:
		return cJSON_CreateNumber(o->via.f64);
	case MSGPACK_OBJECT_STR: {
		char *t = strndup(o->via.str.ptr, o->via.str.size);
		cJSON *j = cJSON_CreateString(t ? t : "");
		free(t);
		return j;
	}
	case MSGPACK_OBJECT_ARRAY: {
		cJSON *a = cJSON_CreateArray();
		for (uint32_t i = 0; i < o->via.array.size; i++)
			cJSON_AddItemToArray(a, mp_json(&o->via.array.ptr[i]));
		return a;
	}
	case MSGPACK_OBJECT_MAP: {
		cJSON *m = cJSON_CreateObject();
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			const msgpack_object_kv *kv = &o->via.map.ptr[i];
			if (kv->key.type != MSGPACK_OBJECT_STR)
				continue;
			char *k = strndup(kv->key.via.str.ptr, kv->key.via.str.size);
			if (k)
				cJSON_AddItemToObject(m, k, mp_json(&kv->val));
			free(k);
		}
		return m;
	}
	default: return cJSON_CreateNull();
	}
}

#define LEAD_EVENTS_MAX 2000     /* events of one lead the timeline shows */

static void
add_str(cJSON *o, const char *name, funnel_str s)
{
	char *t = strndup(s.ptr ? s.ptr : "", s.ptr ? s.len : 0);
	cJSON_AddStringToObject(o, name, t ? t : "");
	free(t);
}

static int
timeline_event(const funnel_record *r, void *ctx)
{
	cJSON *arr = ctx;
	if (cJSON_GetArraySize(arr) >= LEAD_EVENTS_MAX)
		return FUNNEL_ETOOBIG;
	cJSON *e = cJSON_CreateObject();
	mx_json_u64(e, "seq", r->seq);
	mx_json_u64(e, "ts", r->ts);
	add_str(e, "type", r->type);
	if (r->producer.ptr)
		add_str(e, "producer", r->producer);
	if (r->id.ptr)
		add_str(e, "id", r->id);
	if (r->has_cause)
		mx_json_u64(e, "cause", r->cause);
	if (r->has_occurred_at) {
		char d[24];
		snprintf(d, sizeof d, "%" PRId64, r->occurred_at);
		cJSON_AddRawToObject(e, "occurred_at", d);
	}
	if (r->stage.ptr)
		add_str(e, "stage", r->stage);
	if (r->data)
		cJSON_AddItemToObject(e, "data", mp_json(r->data));
	cJSON_AddItemToArray(arr, e);
	return FUNNEL_OK;
}

/* GET /api/lead/ID: what the view keeps of the lead and its events from
 * funneld's per-lead index, each call bounded by HEAD_TIMEOUT_MS: the
 * view's part is answered whatever funneld does ("log": "log
 * unreachable" and no events then). */
static enum MHD_Result
serve_lead(mx_http *h, struct MHD_Connection *c, const char *id)
{
	size_t n = strlen(id);
	MDB_txn *txn;
	if (n == 0 || n > 128 || mp_utf8_invalid_at(id, n) >= 0)
		return reply_error(h, c, 400, "a lead id is 1..128 bytes of UTF-8", "lead");
	if (begin_read(h, &txn) != 0)
		return reply_error(h, c, 503, "the view cannot be read", NULL);
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "report", "lead");
	cJSON_AddStringToObject(o, "lead", id);
	mx_json_u64(o, "checkpoint", mx_checkpoint(txn, &h->t));
	int rc = mx_lead_json(txn, &h->t, id, o);
	end_read(h, &txn);
	if (rc == FUNNEL_ENOTFOUND) {
		cJSON_Delete(o);
		return reply_error(h, c, 404, "the view has no lead with this id", "lead");
	}
	cJSON *events = cJSON_AddArrayToObject(o, "events");
	funnel_query *q = NULL;
	funnel_replay_req req = { .lead = id, .limit = 500 };
	rc = funnel_query_new(&q, h->query_ep, HEAD_TIMEOUT_MS);
	if (rc == FUNNEL_OK)
		rc = funnel_replay_each(q, &req, timeline_event, events);
	funnel_query_destroy(&q);
	cJSON_AddStringToObject(o, "log", rc == FUNNEL_OK ? "ok" : rc == FUNNEL_ETOOBIG ?
	                        "cut: the first 2000 events" : "log unreachable");
	return httpd_reply_json(h->srv, c, 200, o, NULL, 0);
}

static uint64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* GET /api/goals: the goals' progress at the wall clock's now. */
static enum MHD_Result
serve_goals(mx_http *h, struct MHD_Connection *c)
{
	MDB_txn *txn;
	cJSON *o = NULL;
	if (MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, NULL, NULL) > 0)
		return reply_error(h, c, 400, "unknown parameter for /api/goals: it takes none", NULL);
	if (begin_read(h, &txn) != 0)
		return reply_error(h, c, 503, "the view cannot be read", NULL);
	int rc = mx_goals_json(txn, &h->t, h->goals, now_ns(), &o);
	end_read(h, &txn);
	if (rc != FUNNEL_OK)
		return reply_error(h, c, 500, funnel_strerror(rc), NULL);
	return httpd_reply_json(h->srv, c, 200, o, NULL, 0);
}

/* GET /api: what there is to ask for. */
static enum MHD_Result
serve_index(mx_http *h, struct MHD_Connection *c)
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
	cJSON_AddStringToObject(p, "team", "the team the lead was assigned to when the fact happened");
	cJSON_AddStringToObject(p, "rep", "the rep (owner) the lead was assigned to when the fact happened");
	cJSON_AddStringToObject(p, "stage", "leads: the stage entered, assigned or sla_breached");
	cJSON_AddStringToObject(p, "reason", "leads: the fact's data.reason");
	cJSON_AddStringToObject(p, "page", "leads: 1.. (50 leads a page)");
	cJSON_AddStringToObject(p, "compute", "days (default) or facts: the same figures from every "
	                        "fact and lead, the reference (slow on a large view)");
	cJSON_AddStringToObject(o, "lead", "/api/lead/ID: the lead's row and its events from funneld");
	cJSON_AddStringToObject(o, "goals", "/api/goals: the goals of funnel.yaml and their progress");
	cJSON_AddStringToObject(o, "definitions", "clients/metrics/METRICS.md");
	return httpd_reply_json(h->srv, c, 200, o, NULL, 0);
}

static enum MHD_Result
serve_metrics(mx_http *h, struct MHD_Connection *c)
{
	MDB_txn *txn;
	char *text;
	size_t len;
	uint64_t age;
	probe p = last_probe(h, &age);

	if (begin_read(h, &txn) != 0)
		return httpd_reply_text(h->srv, c, 503, "text/plain", "the view cannot be read\n");
	int rc = mx_prometheus(txn, &h->t, p.reachable, p.head, &text, &len);
	if (rc == FUNNEL_OK && (rc = mx_goals_prometheus(txn, &h->t, h->goals, now_ns(), &text,
	                                                 &len)) != FUNNEL_OK)
		free(text);
	end_read(h, &txn);
	if (rc != FUNNEL_OK)
		return httpd_reply_text(h->srv, c, 500, "text/plain", "cannot read the counters\n");
	return httpd_reply(h->srv, c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len,
	                   HTTPD_TAKE, NULL, 0);
}

/* What the view and the prober know, at once: never waits on funneld.
 * 200 only when the last try reached the log and the view has applied
 * the head it read (that head was read before this checkpoint). */
static enum MHD_Result
serve_health(mx_http *h, struct MHD_Connection *c)
{
	MDB_txn *txn;
	uint64_t age;
	probe p = last_probe(h, &age);

	if (begin_read(h, &txn) != 0)
		return reply_error(h, c, 503, "the view cannot be read", NULL);
	uint64_t cp = mx_checkpoint(txn, &h->t);
	end_read(h, &txn);
	int ok = p.reachable && cp >= p.head;
	cJSON *o = cJSON_CreateObject();
	/* funneld serving another log: the view is not behind, it is elsewhere */
	char why[512];
	int other = funnel_service_log_state(h->svc, why, sizeof why) == FUNNEL_ECHAIN;
	ok = ok && !other;
	cJSON_AddStringToObject(o, "status", other ? "different log" : !p.reachable ?
	                        "log unreachable" : ok ? "ok" : "catching up");
	if (other)
		cJSON_AddStringToObject(o, "error", why);
	mx_json_u64(o, "checkpoint", cp);
	if (p.known) {
		mx_json_u64(o, "head", p.head);
		mx_json_u64(o, "lag", p.head > cp ? p.head - cp : 0);
		cJSON_AddNumberToObject(o, "head_age_s", (double)(age / 1000000) / 1e3);
	} else {
		cJSON_AddNullToObject(o, "head");
		cJSON_AddNullToObject(o, "lag");
		cJSON_AddNullToObject(o, "head_age_s");
	}
	return httpd_reply_json(h->srv, c, ok ? 200 : 503, o, NULL, 0);
}

static enum MHD_Result
on_request(void *ctx, struct MHD_Connection *c, const char *url, const char *method,
           const char *upload_data, size_t *upload_size, void **state)
{
	mx_http *h = ctx;
	(void)upload_data;
	(void)state;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return reply_error(h, c, 405, "only GET and HEAD", NULL);
	if (*upload_size != 0)
		return reply_error(h, c, 400, "no body expected", NULL);
	if (strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0)
		return httpd_reply(h->srv, c, 200, "text/html; charset=utf-8", mx_dashboard_html,
		                   mx_dashboard_html_len, HTTPD_STATIC, NULL, 0);
	/* The page above holds no figure; everything else but the liveness
	 * probe reads the view, and with --access needs a read token. */
	if (mx_auth != NULL && strcmp(url, "/healthz") != 0) {
		const fa_principal *who = httpd_bearer(mx_auth, c);
		if (who == NULL || !who->read)
			return httpd_reply_unauthorized(h->srv, c, NULL, NULL, "a bearer token of a "
			                                "principal with read is needed (Authorization: "
			                                "Bearer <token>; funnel token NAME)");
	}
	if (strcmp(url, "/api") == 0 || strcmp(url, "/api/") == 0)
		return serve_index(h, c);
	if (strcmp(url, "/api/goals") == 0)
		return serve_goals(h, c);
	if (strncmp(url, "/api/lead/", 10) == 0)
		return serve_lead(h, c, url + 10);
	if (strncmp(url, "/api/", 5) == 0)
		return serve_api(h, c, url + 5);
	if (strcmp(url, "/metrics") == 0)
		return serve_metrics(h, c);
	if (strcmp(url, "/healthz") == 0)
		return serve_health(h, c);
	return reply_error(h, c, 404, "not found: /, /api/<report>, /metrics, /healthz", NULL);
}

/* Stop the prober (if it runs) and free h; the server is stopped. */
static void
http_free(mx_http *h)
{
	if (h->prober_started) {
		pthread_mutex_lock(&h->plock);
		h->stopping = 1;
		pthread_cond_signal(&h->pwake);
		pthread_mutex_unlock(&h->plock);
		pthread_join(h->prober, NULL);   /* a try in flight ends within HEAD_TIMEOUT_MS */
	}
	pthread_cond_destroy(&h->pwake);
	pthread_mutex_destroy(&h->plock);
	free(h->query_ep);
	free(h->source);
	free(h);
}

int
mx_http_start(mx_http **out, const char *addr, const mx_tables *t, pthread_rwlock_t *map_lock,
              const char *query_ep, const char *source, funnel_service *svc,
              const char *currency, const mx_goals *goals)
{
	httpd_addr a;

	*out = NULL;
	if (httpd_addr_parse(&a, addr) != FUNNEL_OK)
		return FUNNEL_EINVAL;
	if (strncmp(a.host, "127.", 4) != 0)
		funnel_log(FUNNEL_LOG_WARN, "metrics: serving HTTP on %s, beyond loopback: anyone who "
		           "reaches it reads the funnel's numbers", addr);

	mx_http *h = calloc(1, sizeof *h);
	if (h == NULL)
		return FUNNEL_ENOMEM;
	h->t = *t;
	h->map_lock = map_lock;
	h->svc = svc;
	h->goals = goals;
	if (currency)
		snprintf(h->currency, sizeof h->currency, "%s", currency);
	pthread_mutex_init(&h->plock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&h->pwake, &ca);
	pthread_condattr_destroy(&ca);
	h->query_ep = strdup(query_ep ? query_ep : FUNNEL_DEFAULT_QUERY);
	h->source = source ? strdup(source) : NULL;
	if (h->query_ep == NULL || (source && h->source == NULL)) {
		http_free(h);
		return FUNNEL_ENOMEM;
	}
	if (pthread_create(&h->prober, NULL, prober_main, h) != 0) {
		funnel_log(FUNNEL_LOG_ERROR, "metrics: cannot start the thread that reads the log's head");
		http_free(h);
		return FUNNEL_ENOMEM;
	}
	h->prober_started = 1;
	httpd_opts o = { .name = "metrics", .addr = addr, .threads = MX_HTTP_THREADS,
	                 .max_conns = MX_HTTP_MAX_CONNS, .max_per_addr = MX_HTTP_MAX_PER_ADDR,
	                 .idle_s = MX_HTTP_IDLE_S, .max_params = MX_HTTP_MAX_PARAMS,
	                 .no_store = 1, .errors = HTTPD_ERRORS_PARAM, .on_request = on_request,
	                 .ctx = h };
	int rc = httpd_new(&h->srv, &o);
	if (rc != FUNNEL_OK) {
		http_free(h);
		return rc;
	}
	funnel_log(FUNNEL_LOG_INFO, "metrics: dashboard on http://%s:%u/", httpd_host(h->srv),
	           httpd_port(h->srv));
	*out = h;
	return FUNNEL_OK;
}

void
mx_http_stop(mx_http **ph)
{
	if (ph == NULL || *ph == NULL)
		return;
	mx_http *h = *ph;
	httpd_destroy(&h->srv);         /* joins the request threads */
	http_free(h);
	*ph = NULL;
}
