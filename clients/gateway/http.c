/*
 * clients/gateway/http.c - the HTTP face of funnel-gateway, on a pool of
 * libmicrohttpd threads (contract in gateway.h, endpoints and codes in
 * GATEWAY.md):
 *
 *   POST    /forms/{id}      a form submission -> one lead.captured
 *   OPTIONS /forms/{id}      CORS preflight, per form
 *   GET     /forms/{id}.js   the embed script
 *   POST    /v1/events       JSON envelopes, one atomic publish
 *   GET     /metrics         Prometheus text
 *   GET     /healthz         200 when funneld answers, else 503
 *
 * A form post's event goes through the batcher (batch.c), which sends
 * the events of concurrent posts in one request; /v1/events requests go
 * as they are through a funnel_producer of the server thread's own
 * (created on first use; the producer is not thread-safe).  Either way
 * the answer waits for funneld's ack: a 2xx or 303 means the event is in
 * the log.  Everything that can refuse a request (route, origin, rate,
 * size, body, fields) is decided before anything is sent, so a refused
 * request leaves the log as it was.
 */
#include <ctype.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "funnel/funnel.h"
#include "funnel/log.h"
#include "gateway.h"
#include "httpauth.h"
#include "httpd.h"
#include "jsonpack.h"
#include "mp.h"
#include "rulesrec.h"

#define HEALTH_TIMEOUT_MS 1000
#define RETRY_AFTER_S "5"          /* funneld down: when to try again */
#define MAX_THREADS 64

struct gw_http {
	httpd *srv;
	gw_http_opts o;
	char *ingest, *query;
	gw_limiter *limiter;
	gw_stats *stats;
	pthread_mutex_t lock;      /* guards producers[] and q */
	funnel_producer *producers[MAX_THREADS];
	size_t nproducers;
	funnel_query *q;           /* /healthz and the rules record, under lock */
	int log_up;                /* last health answer: 1, 0, -1 unknown */
	int rules_recorded;        /* rules.changed is in the log (atomic) */
	gw_batcher *batcher;       /* the form posts' events */
	/* suspended connections (MHD must not stop with one): under lock */
	int stopping;              /* no post is submitted any more */
	unsigned inflight;         /* posts submitted and not yet answered */
	pthread_cond_t idle;       /* inflight went to 0 */
};

/* This thread's producer (the server's threads only). */
static __thread funnel_producer *my_producer;

/* One request in progress (MHD's per-connection state). */
typedef enum route { R_FORM, R_EVENTS } route;
typedef struct req {
	route r;
	const gw_form *form;       /* R_FORM */
	int answered;              /* a response was queued before the body ended */
	char *body;
	size_t len, cap, limit;
	int too_big;
	const fa_principal *who;   /* R_EVENTS with --access: the bearer token's principal */
	/* R_FORM while its event is with the batcher: the connection is
	 * suspended from gw_batcher_submit until post.done resumes it, and
	 * ev, e and post live here until the answer is queued */
	int waiting;               /* 1 submitted, 2 outcome in (resumed) */
	int counted;               /* holds one of gw_http.inflight */
	gw_event ev;
	funnel_event e;
	gw_post post;
	struct MHD_Connection *conn;
	int64_t t0;
	gw_http *g;
} req;

static int64_t
now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t
mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- answers ---- */

/* A 4xx refusal ({"code","field","error"} in o) as a page for a browser's
 * plain form post (gw_wants_html); NULL for every other client, which
 * gets the JSON.  The server's page hook: every JSON answer passes here. */
static char *
problem_page(void *ctx, struct MHD_Connection *c, unsigned status, const cJSON *o, size_t *len)
{
	(void)ctx;
	if (status < 400 || status >= 500 || o == NULL ||
	    !gw_wants_html(httpd_header_value(c, "Accept"), httpd_header_value(c, "Content-Type")))
		return NULL;
	return gw_problem_page(status, cJSON_GetStringValue(cJSON_GetObjectItem(o, "code")),
	                       cJSON_GetStringValue(cJSON_GetObjectItem(o, "field")),
	                       cJSON_GetStringValue(cJSON_GetObjectItem(o, "error")), len);
}

/* ---- funneld ---- */

static funnel_producer *
producer(gw_http *g)
{
	if (my_producer != NULL)
		return my_producer;
	funnel_producer *p;
	if (funnel_producer_new(&p, g->ingest, g->o.timeout_ms) != FUNNEL_OK)
		return NULL;
	pthread_mutex_lock(&g->lock);
	if (g->nproducers == MAX_THREADS) {
		pthread_mutex_unlock(&g->lock);
		funnel_producer_destroy(&p);
		return NULL;
	}
	g->producers[g->nproducers++] = p;
	pthread_mutex_unlock(&g->lock);
	return my_producer = p;
}

/*
 * Before the first lead.captured: the rules file it was made with is in
 * the log (rules.changed, as the services record theirs before their
 * first decision; once per file, so a restart on the same file records
 * nothing).  A quick status probe first, so that funneld being down is
 * a prompt 503, not the record's patient wait.  FUNNEL_OK or the error.
 */
static int
ensure_rules(void *ctx, funnel_producer *p)
{
	gw_http *g = ctx;
	funnel_status st;
	int rc = FUNNEL_OK;
	if (__atomic_load_n(&g->rules_recorded, __ATOMIC_ACQUIRE))
		return FUNNEL_OK;
	pthread_mutex_lock(&g->lock);
	if (!g->rules_recorded) {
		if (g->q == NULL && (rc = funnel_query_new(&g->q, g->query, g->o.timeout_ms)) != FUNNEL_OK)
			g->q = NULL;
		else if ((rc = funnel_status_get(g->q, &st)) != FUNNEL_OK)
			funnel_query_destroy(&g->q);
		else {
			const gw_forms *f = g->o.forms;
			rr_rules_id id = { GW_NAME, f->hash_hex, f->version, f->text, f->len };
			if ((rc = rr_record_rules_by(g->q, p, &id)) == FUNNEL_OK)
				__atomic_store_n(&g->rules_recorded, 1, __ATOMIC_RELEASE);
			else
				funnel_query_destroy(&g->q);
		}
	}
	pthread_mutex_unlock(&g->lock);
	return rc;
}

/* How a funneld refusal or failure answers: the HTTP status and outcome. */
static unsigned
status_of(int rc, gw_outcome *o)
{
	switch (rc) {
	case FUNNEL_ETIMEDOUT: case FUNNEL_ETRANSPORT: case FUNNEL_ESHUTDOWN: case FUNNEL_ESTORAGE:
	case FUNNEL_ENOMEM:
		*o = GW_UNAVAILABLE;
		return 503;
	case FUNNEL_ETOOBIG:
		*o = GW_TOO_LARGE;
		return 413;
	case FUNNEL_EMALFORMED: case FUNNEL_EMISSING: case FUNNEL_ETYPE: case FUNNEL_EVALUE:
	case FUNNEL_EUNKNOWN_TYPE: case FUNNEL_EINVAL:
		*o = GW_INVALID;
		return 400;
	case FUNNEL_ENOLEAD: case FUNNEL_ETRANSITION: case FUNNEL_EVERSION: case FUNNEL_EIDCONFLICT:
		*o = GW_REFUSED;
		return 409;
	default:
		*o = GW_ERROR;
		return 500;
	}
}

/* The answer to a publish that did not succeed. */
static enum MHD_Result
reply_publish_error(gw_http *g, struct MHD_Connection *c, int rc, const funnel_error_info *info,
                    gw_outcome *o, const httpd_header *h, size_t nh)
{
	unsigned status = status_of(rc, o);
	httpd_header all[8];
	size_t n = 0;
	for (size_t i = 0; i < nh && n < 6; i++)
		all[n++] = h[i];
	if (status == 503)
		all[n++] = (httpd_header){ "Retry-After", RETRY_AFTER_S };
	cJSON *j = cJSON_CreateObject();
	cJSON_AddStringToObject(j, "code", funnel_errname(rc));
	if (info && info->field[0])
		cJSON_AddStringToObject(j, "field", info->field);
	if (info && info->index >= 0)
		cJSON_AddNumberToObject(j, "index", info->index);
	cJSON_AddStringToObject(j, "error", status == 503 ?
	                        "the log is not reachable now: nothing was stored; retry with the "
	                        "same submission id" : info && info->message[0] ? info->message :
	                        funnel_strerror(rc));
	return httpd_reply_json(g->srv, c, status, j, all, n);
}

/* ---- bodies ---- */

static int
hexval(char ch)
{
	return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 :
	       ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

/* Percent-decode s[0..n) in place ('+' is a space); returns the length. */
static size_t
url_decode(char *s, size_t n)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%' && i + 2 < n + 0 && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			s[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
		} else {
			s[o++] = s[i] == '+' ? ' ' : s[i];
		}
	}
	return o;
}

static int
parse_urlencoded(char *b, size_t len, gw_submission *s)
{
	for (size_t i = 0; i < len;) {
		size_t e = i;
		while (e < len && b[e] != '&')
			e++;
		size_t eq = i;
		while (eq < e && b[eq] != '=')
			eq++;
		if (e > i) {
			size_t nl = url_decode(b + i, eq - i);
			size_t vl = eq < e ? url_decode(b + eq + 1, e - eq - 1) : 0;
			if (nl > 0 && memchr(b + i, 0, nl) == NULL &&
			    gw_submission_add(s, b + i, nl, eq < e ? b + eq + 1 : "", vl) != FUNNEL_OK)
				return FUNNEL_ENOMEM;
		}
		i = e + 1;
	}
	return FUNNEL_OK;
}

static enum MHD_Result
on_part(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
        const char *content_type, const char *transfer_encoding, const char *data, uint64_t off,
        size_t size)
{
	gw_submission *s = cls;
	(void)kind;
	(void)content_type;
	(void)transfer_encoding;
	if (key == NULL)
		return MHD_YES;
	if (filename != NULL) {
		s->has_file = 1;
		snprintf(s->file_field, sizeof s->file_field, "%s", key);
		return MHD_NO;
	}
	if (memchr(data, 0, size) != NULL)
		return MHD_YES;       /* a NUL is never text: the field is left out */
	int rc = off == 0 ? gw_submission_add(s, key, strlen(key), data, size)
	                  : gw_submission_append(s, key, data, size);
	return rc == FUNNEL_OK ? MHD_YES : MHD_NO;
}

/* A JSON object of scalars -> fields.  Returns FUNNEL_OK, or
 * FUNNEL_EVALUE with pb filled. */
static int
parse_json_fields(const char *b, size_t len, gw_submission *s, gw_problem *pb)
{
	cJSON *o = cJSON_ParseWithLength(b, len);
	int rc = FUNNEL_OK;
	if (o == NULL || !cJSON_IsObject(o)) {
		cJSON_Delete(o);
		pb->status = 400;
		pb->limit = -1;
		pb->code = "malformed_body";
		snprintf(pb->field, sizeof pb->field, "body");
		snprintf(pb->message, sizeof pb->message, "the body is not a JSON object of fields");
		return FUNNEL_EVALUE;
	}
	for (cJSON *it = o->child; it != NULL && rc == FUNNEL_OK; it = it->next) {
		char num[64];
		const char *v = NULL;
		if (cJSON_IsString(it))
			v = it->valuestring;
		else if (cJSON_IsBool(it))
			v = cJSON_IsTrue(it) ? "true" : "false";
		else if (cJSON_IsNumber(it)) {
			snprintf(num, sizeof num, "%.15g", it->valuedouble);
			v = num;
		} else if (cJSON_IsNull(it))
			continue;
		else {
			pb->status = 400;
			pb->code = "invalid_value";
			snprintf(pb->field, sizeof pb->field, "%.*s", GW_MAX_NAME, it->string);
			snprintf(pb->message, sizeof pb->message, "%s: expected text, a number or a "
			         "boolean, not a list or an object", pb->field);
			rc = FUNNEL_EVALUE;
			break;
		}
		rc = gw_submission_add(s, it->string, strlen(it->string), v, strlen(v));
	}
	cJSON_Delete(o);
	return rc;
}

/* The media type of a Content-Type value, lowercased, without
 * parameters, into buf. */
static void
media_type(const char *ct, char *buf, size_t cap)
{
	size_t n = 0;
	while (ct && *ct == ' ')
		ct++;
	while (ct && *ct && *ct != ';' && *ct != ' ' && n + 1 < cap)
		buf[n++] = (char)tolower((unsigned char)*ct++);
	buf[n] = 0;
}

/* ---- POST /forms/{id} ---- */

/* Does the client want JSON back (fetch, an app) rather than a page? */
static int
wants_json(struct MHD_Connection *c)
{
	const char *a = httpd_header_value(c, "Accept");
	char mt[64];
	media_type(httpd_header_value(c, "Content-Type"), mt, sizeof mt);
	return (a && strstr(a, "application/json")) || strcmp(mt, "application/json") == 0;
}

static void post_done(gw_post *post);
static enum MHD_Result finish_form(gw_http *g, struct MHD_Connection *c, req *rq, int rc);

static enum MHD_Result
serve_form(gw_http *g, struct MHD_Connection *c, req *rq, int64_t t0)
{
	const gw_form *f = rq->form;
	int fi = (int)(f - g->o.forms->v);
	gw_submission s;
	gw_problem pb = { .limit = -1 };
	gw_event ev;
	char mt[64];
	int rc;
	const char *origin = httpd_header_value(c, "Origin");
	httpd_header cors[2] = { { origin ? "Access-Control-Allow-Origin" : NULL, origin },
	                { "Vary", "Origin" } };

	rq->t0 = t0;
	memset(&s, 0, sizeof s);
	if (rq->too_big) {
		gw_stats_count(g->stats, fi, GW_TOO_LARGE, mono_ns() - t0);
		return httpd_reply_error(g->srv, c, 413, "body_too_large", "body", "the body is over the limit "
		                     "of a form post (bytes)", GW_MAX_FORM_BODY, cors, 2);
	}
	s.idempotency_key = httpd_header_value(c, "Idempotency-Key");
	s.referer = httpd_header_value(c, "Referer");
	media_type(httpd_header_value(c, "Content-Type"), mt, sizeof mt);
	if (strcmp(mt, "application/x-www-form-urlencoded") == 0) {
		rc = parse_urlencoded(rq->body ? rq->body : "", rq->len, &s);
	} else if (strcmp(mt, "multipart/form-data") == 0) {
		struct MHD_PostProcessor *pp = MHD_create_post_processor(c, 4096, on_part, &s);
		rc = FUNNEL_OK;
		if (pp == NULL || MHD_post_process(pp, rq->body ? rq->body : "", rq->len) != MHD_YES) {
			if (!s.has_file) {
				pb = (gw_problem){ .status = 400, .code = "malformed_body", .limit = -1 };
				snprintf(pb.field, sizeof pb.field, "body");
				snprintf(pb.message, sizeof pb.message, "the multipart body cannot be read");
				rc = FUNNEL_EVALUE;
			}
		}
		if (pp)
			MHD_destroy_post_processor(pp);
		if (s.has_file) {
			pb = (gw_problem){ .status = 415, .code = "file_not_accepted", .limit = -1 };
			snprintf(pb.field, sizeof pb.field, "%s", s.file_field);
			snprintf(pb.message, sizeof pb.message, "%s: a file upload; forms take text "
			         "fields only", s.file_field);
			rc = FUNNEL_EVALUE;
		}
	} else if (strcmp(mt, "application/json") == 0) {
		rc = parse_json_fields(rq->body ? rq->body : "", rq->len, &s, &pb);
	} else {
		pb = (gw_problem){ .status = 415, .code = "unsupported_media_type",
		                   .limit = -1 };
		snprintf(pb.field, sizeof pb.field, "Content-Type");
		snprintf(pb.message, sizeof pb.message, "Content-Type: expected "
		         "application/x-www-form-urlencoded, multipart/form-data or application/json");
		rc = FUNNEL_EVALUE;
	}
	if (rc == FUNNEL_OK && s.too_many) {
		pb = (gw_problem){ .status = 400, .code = "too_many_fields", .limit = GW_MAX_INPUT_FIELDS };
		snprintf(pb.field, sizeof pb.field, "body");
		snprintf(pb.message, sizeof pb.message, "more fields than a form post may have");
		rc = FUNNEL_EVALUE;
	}
	if (rc == FUNNEL_OK)
		rc = gw_build(f, &s, g->o.key, g->o.forms->version, now_ns(), &ev, &pb);
	gw_submission_release(&s);
	if (rc == FUNNEL_EVALUE) {
		gw_stats_count(g->stats, fi, GW_INVALID, mono_ns() - t0);
		return httpd_reply_error(g->srv, c, pb.status, pb.code, pb.field, pb.message, pb.limit, cors, 2);
	}
	if (rc != FUNNEL_OK) {
		gw_stats_count(g->stats, fi, GW_ERROR, mono_ns() - t0);
		return httpd_reply_error(g->srv, c, 500, "internal", "", funnel_strerror(rc), -1, cors, 2);
	}

	if (ev.honeypot) {
		rq->ev = ev;
		return finish_form(g, c, rq, FUNNEL_OK);
	}
	/* to the batcher; the connection waits suspended, its thread serves
	 * others meanwhile */
	pthread_mutex_lock(&g->lock);
	int stopping = g->stopping;
	if (!stopping)
		g->inflight++;
	pthread_mutex_unlock(&g->lock);
	rq->ev = ev;
	if (stopping) {
		rq->post.info = (funnel_error_info){ .code = FUNNEL_ESHUTDOWN, .index = -1 };
		return finish_form(g, c, rq, FUNNEL_ESHUTDOWN);
	}
	rq->counted = 1;
	rq->e = (funnel_event){ .type = "lead.captured", .lead = rq->ev.lead, .id = rq->ev.id,
	                        .has_occurred_at = 1, .occurred_at = rq->ev.occurred_at,
	                        .data = rq->ev.data.data, .data_len = rq->ev.data.size };
	rq->post = (gw_post){ .ev = &rq->e, .done = post_done, .ctx = rq };
	rq->conn = c;
	rq->t0 = t0;
	rq->g = g;
	rq->waiting = 1;
	MHD_suspend_connection(c);
	gw_batcher_submit(g->batcher, &rq->post);
	return MHD_YES;
}

/* The publisher thread: the outcome is in, the connection goes on. */
static void
post_done(gw_post *post)
{
	req *rq = post->ctx;
	rq->waiting = 2;
	MHD_resume_connection(rq->conn);
}

/* The post no longer holds a place in inflight. */
static void
uncount(gw_http *g, req *rq)
{
	if (!rq->counted)
		return;
	rq->counted = 0;
	pthread_mutex_lock(&g->lock);
	if (--g->inflight == 0)
		pthread_cond_broadcast(&g->idle);
	pthread_mutex_unlock(&g->lock);
}

/* The answer to a form post whose event is built (rq->ev, released
 * here): rc is the publish outcome (FUNNEL_OK for a honeypot). */
static enum MHD_Result
finish_form(gw_http *g, struct MHD_Connection *c, req *rq, int rc)
{
	const gw_form *f = rq->form;
	int fi = (int)(f - g->o.forms->v);
	const char *origin = httpd_header_value(c, "Origin");
	httpd_header cors[2] = { { origin ? "Access-Control-Allow-Origin" : NULL, origin },
	                { "Vary", "Origin" } };
	funnel_ack ack = { 0 };
	gw_outcome out = GW_HONEYPOT;
	enum MHD_Result ret;

	uncount(g, rq);
	if (!rq->ev.honeypot) {
		if (rc != FUNNEL_OK) {
			if (rc != FUNNEL_ETIMEDOUT)
				funnel_log(FUNNEL_LOG_WARN, "gateway: form %s: %s: %s", f->id,
				           funnel_errname(rc), rq->post.info.message);
			ret = reply_publish_error(g, c, rc, &rq->post.info, &out, cors, 2);
			gw_stats_count(g->stats, fi, out, mono_ns() - rq->t0);
			gw_event_release(&rq->ev);
			return ret;
		}
		ack = rq->post.ack;
		out = ack.dup ? GW_DUPLICATE : GW_STORED;
	}
	if (wants_json(c)) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddNumberToObject(o, "seq", (double)ack.seq);
		cJSON_AddStringToObject(o, "lead", rq->ev.lead);
		cJSON_AddBoolToObject(o, "duplicate", ack.dup != 0);
		cJSON_AddStringToObject(o, "message", f->message);
		ret = httpd_reply_json(g->srv, c, 200, o, cors, 2);
	} else {
		httpd_header h[3] = { cors[0], cors[1], { "Location", f->redirect } };
		ret = httpd_reply(g->srv, c, 303, "text/plain; charset=utf-8", "See Other\n", 10,
		                  HTTPD_STATIC, h, 3);
	}
	gw_stats_count(g->stats, fi, out, mono_ns() - rq->t0);
	gw_event_release(&rq->ev);
	return ret;
}

/* ---- POST /v1/events ---- */

typedef struct packing {
	msgpack_packer pk;
	size_t n;
	char err[256];
	size_t bad;
} packing;

static int
pack_one(const char *elem, size_t len, size_t index, void *ctx)
{
	packing *pc = ctx;
	pc->bad = index;
	if (pc->n == 10000) {
		snprintf(pc->err, sizeof pc->err, "more than 10000 events in one request");
		return FUNNEL_ETOOBIG;
	}
	int rc = fjson_pack_text(&pc->pk, elem, len, pc->err, sizeof pc->err);
	if (rc == FUNNEL_OK)
		pc->n++;
	return rc;
}

static enum MHD_Result
serve_events(gw_http *g, struct MHD_Connection *c, req *rq, int64_t t0)
{
	msgpack_sbuffer sb;
	packing pc = { .n = 0 };
	char mt[64];
	int rc = FUNNEL_OK;
	enum MHD_Result ret;

	if (rq->too_big) {
		gw_stats_count(g->stats, -1, GW_TOO_LARGE, mono_ns() - t0);
		return httpd_reply_error(g->srv, c, 413, "body_too_large", "body", "the body is over the limit "
		                     "of one /v1/events request (bytes)", GW_MAX_EVENTS_BODY, NULL, 0);
	}
	media_type(httpd_header_value(c, "Content-Type"), mt, sizeof mt);
	if (strcmp(mt, "application/json") != 0 && strcmp(mt, "application/x-ndjson") != 0) {
		gw_stats_count(g->stats, -1, GW_INVALID, mono_ns() - t0);
		return httpd_reply_error(g->srv, c, 415, "unsupported_media_type", "Content-Type", "Content-Type: "
		                     "expected application/json (an envelope or an array of them) or "
		                     "application/x-ndjson (one envelope a line)", -1, NULL, 0);
	}
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pc.pk, &sb, msgpack_sbuffer_write);
	const char *b = rq->body ? rq->body : "";
	size_t i = 0;
	while (i < rq->len && isspace((unsigned char)b[i]))
		i++;
	if (i < rq->len && b[i] == '[') {
		rc = fjson_array_each(b, rq->len, pack_one, &pc, pc.err, sizeof pc.err);
	} else if (strcmp(mt, "application/json") == 0) {
		if (i < rq->len)
			rc = pack_one(b, rq->len, 0, &pc);      /* one envelope */
	} else {
		/* application/x-ndjson: one envelope a line, blank lines skipped */
		for (size_t s = 0; s < rq->len && rc == FUNNEL_OK;) {
			const char *nl = memchr(b + s, '\n', rq->len - s);
			size_t e = nl ? (size_t)(nl - b) : rq->len, k = s;
			while (k < e && isspace((unsigned char)b[k]))
				k++;
			if (k < e)
				rc = pack_one(b + s, e - s, pc.n, &pc);
			s = e + 1;
		}
	}
	if (rc == FUNNEL_OK && pc.n == 0) {
		snprintf(pc.err, sizeof pc.err, "no event in the body");
		rc = FUNNEL_EJSON;
	}
	if (rc != FUNNEL_OK) {
		msgpack_sbuffer_destroy(&sb);
		gw_stats_count(g->stats, -1, rc == FUNNEL_ETOOBIG ? GW_TOO_LARGE : GW_INVALID,
		               mono_ns() - t0);
		if (rc == FUNNEL_ENOMEM)
			return httpd_reply_error(g->srv, c, 503, "ENOMEM", "", "out of memory", -1, NULL, 0);
		cJSON *j = cJSON_CreateObject();
		cJSON_AddStringToObject(j, "code", rc == FUNNEL_ETOOBIG ? "ETOOBIG" : "EJSON");
		cJSON_AddNumberToObject(j, "index", (double)pc.bad);
		cJSON_AddStringToObject(j, "error", pc.err);
		if (rc == FUNNEL_ETOOBIG)
			cJSON_AddNumberToObject(j, "limit", 10000);
		return httpd_reply_json(g->srv, c, rc == FUNNEL_ETOOBIG ? 413 : 400, j, NULL, 0);
	}
	/* the token's principal may send only the types its globs grant, as
	 * funneld judges a key (PROTOCOL.md §19): the request is refused whole */
	if (rq->who != NULL) {
		msgpack_unpacked u;
		size_t off = 0, k = 0;
		const char *denied = NULL;
		funnel_str t = { NULL, 0 };
		msgpack_unpacked_init(&u);
		while (denied == NULL && msgpack_unpack_next(&u, sb.data, sb.size, &off) ==
		                         MSGPACK_UNPACK_SUCCESS) {
			if (mp_get_str(&u.data, "type", &t, NULL) == FUNNEL_OK &&
			    !fa_may_publish(rq->who, t.ptr, t.len))
				denied = rq->who->name;
			else
				k++;
		}
		if (denied != NULL) {
			char msg[256];
			snprintf(msg, sizeof msg, "principal '%s' may not publish %.*s", denied,
			         (int)(t.len > 64 ? 64 : t.len), t.ptr);
			msgpack_unpacked_destroy(&u);
			msgpack_sbuffer_destroy(&sb);
			gw_stats_count(g->stats, -1, GW_FORBIDDEN, mono_ns() - t0);
			cJSON *j = cJSON_CreateObject();
			cJSON_AddStringToObject(j, "code", "EFORBIDDEN");
			cJSON_AddStringToObject(j, "field", "type");
			cJSON_AddNumberToObject(j, "index", (double)k);
			cJSON_AddStringToObject(j, "error", msg);
			return httpd_reply_json(g->srv, c, 403, j, NULL, 0);
		}
		msgpack_unpacked_destroy(&u);
	}
	funnel_ack *acks = malloc(pc.n * sizeof *acks);
	funnel_producer *p = producer(g);
	rc = acks && p ? funnel_publish_packed(p, sb.data, sb.size, pc.n, acks) : FUNNEL_ENOMEM;
	msgpack_sbuffer_destroy(&sb);
	gw_outcome out;
	if (rc != FUNNEL_OK) {
		ret = reply_publish_error(g, c, rc, p ? funnel_producer_error(p) : NULL, &out, NULL, 0);
	} else {
		cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "acks");
		out = GW_STORED;
		for (size_t k = 0; k < pc.n; k++) {
			cJSON *a = cJSON_CreateObject();
			cJSON_AddNumberToObject(a, "seq", (double)acks[k].seq);
			cJSON_AddBoolToObject(a, "duplicate", acks[k].dup != 0);
			cJSON_AddItemToArray(arr, a);
		}
		ret = httpd_reply_json(g->srv, c, 200, o, NULL, 0);
	}
	free(acks);
	gw_stats_count(g->stats, -1, out, mono_ns() - t0);
	return ret;
}

/* ---- the small ones ---- */

static enum MHD_Result
serve_health(gw_http *g, struct MHD_Connection *c)
{
	funnel_status st;
	int known = 0;
	uint64_t head = 0;
	pthread_mutex_lock(&g->lock);
	if (g->q == NULL && funnel_query_new(&g->q, g->query, HEALTH_TIMEOUT_MS) != FUNNEL_OK)
		g->q = NULL;
	else if (funnel_status_get(g->q, &st) != FUNNEL_OK)
		funnel_query_destroy(&g->q);   /* a late reply must not answer the next one */
	else {
		known = 1;
		head = st.head;
	}
	g->log_up = known;
	pthread_mutex_unlock(&g->lock);
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "status", known ? "ok" : "log unreachable");
	cJSON_AddNumberToObject(o, "forms", (double)g->o.forms->n);
	if (known)
		cJSON_AddNumberToObject(o, "head", (double)head);
	else
		cJSON_AddNullToObject(o, "head");
	return httpd_reply_json(g->srv, c, known ? 200 : 503, o, NULL, 0);
}

static enum MHD_Result
serve_metrics(gw_http *g, struct MHD_Connection *c)
{
	size_t len;
	pthread_mutex_lock(&g->lock);
	int up = g->log_up;
	pthread_mutex_unlock(&g->lock);
	char *t = gw_stats_prometheus(g->stats, up, &len);
	if (t == NULL)
		return httpd_reply_nomem(g->srv, c);
	return httpd_reply(g->srv, c, 200, "text/plain; version=0.0.4; charset=utf-8", t, len,
	                   HTTPD_TAKE, NULL, 0);
}

/* GET /forms/{id}.js: embed.js called with the form's settings. */
static enum MHD_Result
serve_script(gw_http *g, struct MHD_Connection *c, const gw_form *f)
{
	cJSON *cfg = cJSON_CreateObject();
	cJSON_AddStringToObject(cfg, "form", f->id);
	cJSON_AddStringToObject(cfg, "message", f->message);
	char *j = cJSON_PrintUnformatted(cfg);
	cJSON_Delete(cfg);
	if (j == NULL)
		return httpd_reply_nomem(g->srv, c);
	/* the JSON goes into a script: no "</" may close the element, so
	 * each '<' is written as the six bytes \u003c (room for all of them) */
	size_t jl = strlen(j);
	char *body = malloc(gw_embed_js_len + 6 * jl + 4);
	if (body == NULL) {
		free(j);
		return httpd_reply_nomem(g->srv, c);
	}
	size_t o = 0;
	memcpy(body, gw_embed_js, gw_embed_js_len);
	o = gw_embed_js_len;
	while (o > 0 && (body[o - 1] == '\n' || body[o - 1] == ';'))
		o--;
	body[o++] = '(';
	for (size_t i = 0; i < jl; i++) {
		if (j[i] == '<') {
			memcpy(body + o, "\\u003c", 6);
			o += 6;
		} else {
			body[o++] = j[i];
		}
	}
	memcpy(body + o, ");\n", 3);
	o += 3;
	free(j);
	httpd_header h[1] = { { "Access-Control-Allow-Origin", "*" } };
	return httpd_reply(g->srv, c, 200, "application/javascript; charset=utf-8", body, o,
	                   HTTPD_TAKE, h, 1);
}

static enum MHD_Result
serve_preflight(gw_http *g, struct MHD_Connection *c, const gw_form *f)
{
	const char *origin = httpd_header_value(c, "Origin");
	if (origin == NULL || !gw_form_origin_ok(f, origin))
		return httpd_reply_error(g->srv, c, 403, "origin_not_allowed", "Origin", "Origin: not one of "
		                     "the form's origins", -1, NULL, 0);
	httpd_header h[5] = { { "Access-Control-Allow-Origin", origin },
	             { "Access-Control-Allow-Methods", "POST, OPTIONS" },
	             { "Access-Control-Allow-Headers", "Content-Type, Accept, Idempotency-Key" },
	             { "Access-Control-Max-Age", "600" },
	             { "Vary", "Origin" } };
	return httpd_reply(g->srv, c, 204, NULL, "", 0, HTTPD_STATIC, h, 5);
}

/* ---- routing ---- */

typedef struct xff_join {
	char *s;                   /* malloc'd; NULL when there is none */
	size_t len;
	int nomem;
} xff_join;

static enum MHD_Result
on_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	xff_join *x = cls;
	(void)kind;
	if (key == NULL || value == NULL || strcasecmp(key, "X-Forwarded-For") != 0)
		return MHD_YES;
	size_t n = strlen(value);
	char *b = realloc(x->s, x->len + n + 2);
	if (b == NULL) {
		x->nomem = 1;
		return MHD_NO;
	}
	if (x->len)
		b[x->len++] = ',';
	memcpy(b + x->len, value, n + 1);
	x->len += n;
	x->s = b;
	return MHD_YES;
}

/*
 * The client's address: the TCP peer, or behind a trusted proxy the
 * X-Forwarded-For hop it vouches for (gw_client_addr).  -1 when the
 * peer's address is unknown.
 */
static int
client_addr(gw_http *g, struct MHD_Connection *c, gw_addr *out)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	gw_addr peer = { .len = 0 };
	if (ci == NULL || ci->client_addr == NULL)
		return -1;
	if (ci->client_addr->sa_family == AF_INET6) {
		memcpy(peer.b, &((const struct sockaddr_in6 *)ci->client_addr)->sin6_addr, 16);
		peer.len = 16;
	} else if (ci->client_addr->sa_family == AF_INET) {
		memcpy(peer.b, &((const struct sockaddr_in *)ci->client_addr)->sin_addr, 4);
		peer.len = 4;
	} else {
		return -1;
	}
	*out = peer;
	if (g->o.ntrusted == 0 || !gw_net_match(g->o.trusted, g->o.ntrusted, &peer))
		return 0;
	xff_join x = { NULL, 0, 0 };
	MHD_get_connection_values(c, MHD_HEADER_KIND, on_header, &x);
	if (!x.nomem)
		gw_client_addr(g->o.trusted, g->o.ntrusted, &peer, x.s, out);
	free(x.s);
	return 0;
}

static int
is_loopback(gw_http *g, struct MHD_Connection *c)
{
	static const uint8_t lo6[16] = { [15] = 1 };
	gw_addr a;
	if (client_addr(g, c, &a) != 0)
		return 0;
	if (a.len == 4)
		return a.b[0] == 127;
	return memcmp(a.b, lo6, 16) == 0 ||
	       (memcmp(a.b, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0 && a.b[12] == 127);
}

/* Rate limit on the client's address: 0 allowed, else seconds to wait. */
static unsigned
rate_wait(gw_http *g, struct MHD_Connection *c)
{
	gw_addr a;
	if (g->limiter == NULL || client_addr(g, c, &a) != 0)
		return 0;
	return gw_limit_take(g->limiter, a.b, a.len, mono_ns());
}

/* The first call of a POST: decide what can be decided from the headers
 * and either refuse (a response queued, rq->answered) or take the body. */
static enum MHD_Result
begin_post(gw_http *g, struct MHD_Connection *c, req *rq)
{
	const char *cl = httpd_header_value(c, "Content-Length");
	if (rq->r == R_FORM) {
		int fi = (int)(rq->form - g->o.forms->v);
		const char *origin = httpd_header_value(c, "Origin");
		if (origin != NULL && !gw_form_origin_ok(rq->form, origin)) {
			rq->answered = 1;
			gw_stats_count(g->stats, fi, GW_FORBIDDEN, 0);
			return httpd_reply_error(g->srv, c, 403, "origin_not_allowed", "Origin", "Origin: not one of "
			                     "the form's origins", -1, NULL, 0);
		}
		unsigned wait = rate_wait(g, c);
		if (wait > 0) {
			char ra[16];
			snprintf(ra, sizeof ra, "%u", wait);
			httpd_header h[3] = { { "Retry-After", ra },
			             { origin ? "Access-Control-Allow-Origin" : NULL, origin },
			             { "Vary", "Origin" } };
			rq->answered = 1;
			gw_stats_count(g->stats, fi, GW_RATE_LIMITED, 0);
			return httpd_reply_error(g->srv, c, 429, "rate_limited", "client address", "too many posts "
			                     "from this address: see Retry-After (posts per minute)",
			                     (long)g->o.rate_per_minute, h, 3);
		}
		rq->limit = GW_MAX_FORM_BODY;
	} else if (g->o.auth != NULL) {
		/* with an access file the token is the proof, whatever the address */
		if ((rq->who = httpd_bearer(g->o.auth, c)) == NULL) {
			rq->answered = 1;
			gw_stats_count(g->stats, -1, GW_FORBIDDEN, 0);
			return httpd_reply_unauthorized(g->srv, c, "unauthorized", "Authorization",
			                                "/v1/events wants a bearer token of the access "
			                                "file (Authorization: Bearer <token>)");
		}
		rq->limit = GW_MAX_EVENTS_BODY;
	} else {
		if (!is_loopback(g, c)) {
			rq->answered = 1;
			gw_stats_count(g->stats, -1, GW_FORBIDDEN, 0);
			return httpd_reply_error(g->srv, c, 403, "loopback_only", "client address", "/v1/events is "
			                     "served to loopback clients only", -1, NULL, 0);
		}
		rq->limit = GW_MAX_EVENTS_BODY;
	}
	if (cl != NULL && strtoull(cl, NULL, 10) > rq->limit) {
		/* refused before reading it: MHD closes the connection after the answer */
		rq->answered = 1;
		int fi = rq->r == R_FORM ? (int)(rq->form - g->o.forms->v) : -1;
		gw_stats_count(g->stats, fi, GW_TOO_LARGE, 0);
		return httpd_reply_error(g->srv, c, 413, "body_too_large", "body", rq->r == R_FORM ?
		                     "the body is over the limit of a form post (bytes)" :
		                     "the body is over the limit of one /v1/events request (bytes)",
		                     (long)rq->limit, NULL, 0);
	}
	return MHD_YES;   /* a body without Content-Length is cut at the limit as it comes */
}

static enum MHD_Result
on_request(void *ctx, struct MHD_Connection *c, const char *url, const char *method,
           const char *upload_data, size_t *upload_size, void **state)
{
	gw_http *g = ctx;
	req *rq = *state;

	if (rq != NULL) {
		/* the body of a POST, then its end */
		if (*upload_size > 0) {
			if (!rq->answered && !rq->too_big) {
				if (rq->len + *upload_size > rq->limit) {
					rq->too_big = 1;
				} else {
					if (rq->len + *upload_size > rq->cap) {
						size_t cap = rq->cap ? rq->cap : 4096;
						while (cap < rq->len + *upload_size)
							cap *= 2;
						char *b = realloc(rq->body, cap);
						if (b == NULL)
							return MHD_NO;
						rq->body = b;
						rq->cap = cap;
					}
					memcpy(rq->body + rq->len, upload_data, *upload_size);
					rq->len += *upload_size;
				}
			}
			*upload_size = 0;
			return MHD_YES;
		}
		if (rq->answered)
			return MHD_YES;
		if (rq->waiting == 2) {
			rq->waiting = 0;
			rq->answered = 1;
			return finish_form(g, c, rq, rq->post.rc);
		}
		if (rq->waiting)
			return MHD_YES;     /* cannot happen: suspended until the outcome */
		int64_t t0 = mono_ns();
		return rq->r == R_FORM ? serve_form(g, c, rq, t0) : serve_events(g, c, rq, t0);
	}

	int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
	int post = strcmp(method, "POST") == 0;
	if (strncmp(url, "/forms/", 7) == 0) {
		const char *id = url + 7;
		size_t n = strlen(id);
		int js = n > 3 && strcmp(id + n - 3, ".js") == 0;
		const gw_form *f = gw_form_find(g->o.forms, id, js ? n - 3 : n);
		if (f == NULL) {
			if (post)
				gw_stats_count(g->stats, -2, GW_INVALID, 0);
			return httpd_reply_error(g->srv, c, 404, "unknown_form", "form", "no form with this id in the "
			                     "forms section of the rules file", -1, NULL, 0);
		}
		if (js && get)
			return serve_script(g, c, f);
		if (!js && strcmp(method, "OPTIONS") == 0)
			return serve_preflight(g, c, f);
		if (js || !post) {
			httpd_header h[1] = { { "Allow", js ? "GET, HEAD" : "POST, OPTIONS" } };
			return httpd_reply_error(g->srv, c, 405, "method_not_allowed", "method", js ? "GET only" :
			                     "POST (or OPTIONS) only", -1, h, 1);
		}
		if ((rq = calloc(1, sizeof *rq)) == NULL)
			return MHD_NO;
		rq->r = R_FORM;
		rq->form = f;
		*state = rq;
		return begin_post(g, c, rq);
	}
	if (strcmp(url, "/v1/events") == 0) {
		if (!post) {
			httpd_header h[1] = { { "Allow", "POST" } };
			return httpd_reply_error(g->srv, c, 405, "method_not_allowed", "method", "POST only", -1, h, 1);
		}
		if ((rq = calloc(1, sizeof *rq)) == NULL)
			return MHD_NO;
		rq->r = R_EVENTS;
		*state = rq;
		return begin_post(g, c, rq);
	}
	if (get && strcmp(url, "/healthz") == 0)
		return serve_health(g, c);
	if (get && strcmp(url, "/metrics") == 0)
		return serve_metrics(g, c);
	return httpd_reply_error(g->srv, c, 404, "not_found", "path", "not found: POST /forms/{id}, "
	                     "GET /forms/{id}.js, POST /v1/events, GET /metrics, GET /healthz", -1,
	                     NULL, 0);
}

static void
on_completed(void *ctx, struct MHD_Connection *c, void **state)
{
	req *rq = *state;
	(void)c;
	if (rq != NULL) {
		uncount(ctx, rq);
		if (rq->waiting)
			gw_event_release(&rq->ev);
		free(rq->body);
		free(rq);
		*state = NULL;
	}
}

/* ---- start, stop ---- */

int
gw_http_start(gw_http **out, const gw_http_opts *o)
{
	httpd_addr a;
	int rc;

	*out = NULL;
	if (httpd_addr_parse(&a, o->addr) != FUNNEL_OK)
		return FUNNEL_EINVAL;

	gw_http *g = calloc(1, sizeof *g);
	if (g == NULL)
		return FUNNEL_ENOMEM;
	g->o = *o;
	g->log_up = -1;
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->idle, NULL);
	g->ingest = strdup(o->ingest ? o->ingest : FUNNEL_DEFAULT_INGEST);
	g->query = strdup(o->query ? o->query : FUNNEL_DEFAULT_QUERY);
	if (g->ingest == NULL || g->query == NULL ||
	    (rc = gw_limiter_new(&g->limiter, o->rate_per_minute, o->rate_burst)) != FUNNEL_OK ||
	    (rc = gw_stats_new(&g->stats, o->forms)) != FUNNEL_OK ||
	    (rc = gw_batcher_new(&g->batcher, g->ingest, o->timeout_ms, ensure_rules, g)) !=
	    FUNNEL_OK) {
		gw_http_stop(&g);
		return FUNNEL_ENOMEM;
	}
	unsigned threads = o->threads < 1 ? 1 : o->threads > MAX_THREADS ? MAX_THREADS : o->threads;
	httpd_opts ho = { .name = "gateway", .addr = o->addr, .threads = threads,
	                  .max_conns = 4096, .idle_s = 30, .conn_memory = GW_CONN_MEMORY,
	                  .suspend = 1, .no_store = 1, .json_newline = 1,
	                  .errors = HTTPD_ERRORS_CODED, .on_request = on_request,
	                  .on_completed = on_completed, .page = problem_page, .ctx = g };
	if ((rc = httpd_new(&g->srv, &ho)) != FUNNEL_OK) {
		gw_http_stop(&g);
		return rc;
	}
	unsigned bound = httpd_port(g->srv);
	funnel_log(FUNNEL_LOG_INFO, "gateway: %zu forms on http://%s:%u/forms/{id}", o->forms->n,
	           a.host, bound);
	if (o->ready_file) {
		FILE *f = fopen(o->ready_file, "w");
		if (f) {
			fprintf(f, "http=%s:%u\n", a.host, bound);
			fclose(f);
		}
	}
	*out = g;
	return FUNNEL_OK;
}

void
gw_http_stop(gw_http **pg)
{
	if (pg == NULL || *pg == NULL)
		return;
	gw_http *g = *pg;
	if (g->srv) {
		/* MHD must not stop with a connection suspended: no new post is
		 * submitted, and those submitted get their answer first (each
		 * within the batcher's timeout) */
		httpd_quiesce(g->srv);
		pthread_mutex_lock(&g->lock);
		g->stopping = 1;
		while (g->inflight > 0)
			pthread_cond_wait(&g->idle, &g->lock);
		pthread_mutex_unlock(&g->lock);
		httpd_destroy(&g->srv);     /* joins the threads: the producers are ours now */
	}
	gw_batcher_destroy(&g->batcher);   /* no post waits on it any more */
	for (size_t i = 0; i < g->nproducers; i++)
		funnel_producer_destroy(&g->producers[i]);
	funnel_query_destroy(&g->q);
	gw_limiter_destroy(&g->limiter);
	gw_stats_destroy(&g->stats);
	pthread_cond_destroy(&g->idle);
	pthread_mutex_destroy(&g->lock);
	free(g->ingest);
	free(g->query);
	free(g);
	*pg = NULL;
}
