/*
 * clients/gateway/gateway.h - funnel-gateway: web forms and apps publish
 * leads over HTTP.  The modules, in reading order:
 *
 *   forms.c    the `forms:` section of funnel.yaml -> gw_forms
 *   submit.c   one form submission (its fields) -> one lead.captured
 *              envelope: field mapping, marketing context, lead id,
 *              event id, occurred_at
 *   batch.c    form posts' events coalesced into publish requests
 *   limit.c    the client's address (behind trusted proxies too) and the
 *              per-client-address rate limit (bounded memory)
 *   stats.c    counters and the latency histogram for /metrics
 *   page.c     the HTML page a browser's plain form post gets for a 4xx
 *   http.c     the HTTP server (libmicrohttpd): routes, bodies, answers,
 *              publishing through one funnel_producer per server thread
 *   run.c      the program as the services' main runs it (svcmain.h):
 *              its options, the access file, `check`, `run`
 *   main.c     its description (usage text, defaults) handed to svc_main
 *
 * GATEWAY.md is the user's documentation (endpoints, error codes, limits,
 * lead id and event id derivation).
 */
#ifndef FUNNEL_GATEWAY_H
#define FUNNEL_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "funnel/funnel.h"
#include "svcargs.h"

#define GW_NAME "gateway"
#define GW_DEFAULT_HTTP "127.0.0.1:7490"
#define GW_DEFAULT_KEY_FILE "var/gateway.key"

/* Limits of the forms section. */
#define GW_MAX_FORMS 64
#define GW_MAX_FIELDS 32          /* mapped fields of one form */
#define GW_MAX_ORIGINS 16
#define GW_MAX_CONSENT 8
#define GW_MAX_ID 48              /* form id bytes */
#define GW_MAX_NAME 64            /* form field name bytes */
#define GW_MAX_KEY 40             /* lead data key bytes */

/* Limits of a submission (GATEWAY.md "Limits"). */
#define GW_MAX_FORM_BODY (32u << 10)     /* POST /forms/{id} body: 413 above */
#define GW_MAX_EVENTS_BODY (2u << 20)    /* POST /v1/events body: 413 above */
#define GW_MAX_VALUE 1000                /* bytes of one field value */
#define GW_MAX_URL 2000                  /* page_url, referrer */
#define GW_MAX_SUBMISSION_ID 64          /* submission_id / Idempotency-Key */
#define GW_MAX_INPUT_FIELDS 100          /* fields in one submission */
#define GW_DEDUP_WINDOW_S 600            /* derived ids: identical posts in one window */
#define GW_CONN_MEMORY (16u << 10)       /* a connection's request headers and read
                                            buffer (MHD answers 431 past it) */

/* ---- forms (forms.c) ---- */

typedef struct gw_map {
	char *field;              /* the form's field name */
	char *key;                /* the lead data key it becomes */
} gw_map;

typedef struct gw_form {
	char *id;
	gw_map fields[GW_MAX_FIELDS];
	size_t nfields;
	size_t email;             /* index in fields of the one mapped to "email" */
	char *required[GW_MAX_FIELDS];
	size_t nrequired;
	char *redirect;           /* thank-you URL, http(s) */
	char *origins[GW_MAX_ORIGINS];
	size_t norigins;
	char *source, *campaign;  /* defaults when no utm_* says; NULL: none */
	char *honeypot;           /* NULL: none */
	char *consent[GW_MAX_CONSENT];
	size_t nconsent;
	char *consent_version;    /* NULL when no consent fields */
	char *message;            /* shown inline by the embed script */
} gw_form;

typedef struct gw_forms {
	gw_form *v;               /* n forms, owned */
	size_t n;
	char *version;            /* the file's version: */
	char hash_hex[65];        /* BLAKE2b-256 of the file's text */
	char *text;               /* the whole file (for rules.changed) */
	size_t len;
} gw_forms;

/*
 * Parse the forms section of a rules file's text.  Other sections are
 * left alone (they are other services').  A mistake is FUNNEL_EVALUE
 * with "file:line: forms[i].key: problem" in err; no forms section is
 * FUNNEL_EVALUE too (the gateway would serve nothing).  *out is the
 * caller's: gw_forms_destroy.
 */
int gw_forms_parse(const char *text, size_t len, const char *filename, gw_forms **out, char *err,
                   size_t errlen);
/* rf_read_file + gw_forms_parse. */
int gw_forms_load(const char *path, gw_forms **out, char *err, size_t errlen);
void gw_forms_destroy(gw_forms **f);
/* The form with this id (len bytes), or NULL. */
const gw_form *gw_form_find(const gw_forms *f, const char *id, size_t len);
/* 1 when origin is one of the form's origins. */
int gw_form_origin_ok(const gw_form *form, const char *origin);

/* ---- one submission (submit.c) ---- */

/* A field as it came in: name and value, NUL-terminated, owned by the
 * submission. */
typedef struct gw_field {
	char *name;
	char *value;
	size_t len;
} gw_field;

typedef struct gw_submission {
	gw_field v[GW_MAX_INPUT_FIELDS];
	size_t n;
	int too_many;             /* more than GW_MAX_INPUT_FIELDS came */
	int has_file;             /* a multipart part carried a file */
	char file_field[GW_MAX_NAME + 1];
	/* from the request's headers (may be NULL) */
	const char *idempotency_key;
	const char *referer;
} gw_submission;

/* Add a field (copies).  FUNNEL_OK, FUNNEL_ENOMEM.  A name seen before
 * keeps its first value (a repeated name is not a second answer). */
int gw_submission_add(gw_submission *s, const char *name, size_t nlen, const char *value,
                      size_t vlen);
/* Append more bytes to the last value named `name` (multipart chunks). */
int gw_submission_append(gw_submission *s, const char *name, const char *more, size_t len);
void gw_submission_release(gw_submission *s);

/* Why a submission is refused: a stable code, the field it names (or
 * the limit) and a sentence; status is the HTTP status. */
typedef struct gw_problem {
	unsigned status;
	const char *code;         /* "missing_field", "invalid_email", ... (GATEWAY.md) */
	char field[GW_MAX_NAME + 1];
	char message[256];
	long limit;               /* the limit broken (bytes, fields), or -1 */
} gw_problem;

/* What a submission becomes. */
typedef struct gw_event {
	int honeypot;             /* 1: answer like a success, store nothing */
	char lead[40];            /* "L-" + 32 hex */
	char id[160];             /* the event id */
	int64_t occurred_at;      /* ns */
	msgpack_sbuffer data;     /* the data map; gw_event_release */
} gw_event;

/* The secret of the lead id (GATEWAY.md "Lead id"). */
#define GW_KEY_BYTES 32

/*
 * Build the lead.captured of a submission to form at time now_ns:
 * FUNNEL_OK with *ev filled (release it), FUNNEL_EVALUE with *pb filled,
 * FUNNEL_ENOMEM.  A filled honeypot is FUNNEL_OK with ev->honeypot set
 * (and the lead id, so the answer looks like any other).  Pure but for
 * the occurred_at memory (gw_times), which makes a retried submission
 * carry the time of its first attempt.
 */
int gw_build(const gw_form *form, const gw_submission *s, const uint8_t key[GW_KEY_BYTES],
             const char *rules_version, int64_t now_ns, gw_event *ev, gw_problem *pb);
void gw_event_release(gw_event *ev);

/* The lead id of an e-mail address: "L-" + hex of a keyed BLAKE2b-128 of
 * the address lowercased and trimmed.  out holds 35 bytes. */
void gw_lead_id(const uint8_t key[GW_KEY_BYTES], const char *email, size_t len, char *out);

/* ---- coalescing (batch.c) ---- */

#define GW_BATCH_MAX 512          /* events in one publish request at most */
/* Publisher threads, each with a request in flight at most.  One: funneld
 * commits what waits at each drain anyway, and a second request in flight
 * only splits the waiting posts into more, smaller commits (measured with
 * bench_gateway: no more posts/s, and a higher p50 at 1,000 posts/s). */
#define GW_PUBLISHERS 1

typedef struct gw_batcher gw_batcher;

/* Called by the publisher thread before each request, with its producer
 * (the gateway records its rules file there); not FUNNEL_OK fails every
 * event of the request with that code. */
typedef int (*gw_before_fn)(void *ctx, funnel_producer *p);

/* A post's event waiting for its request: the caller's memory, which it
 * keeps (with ev) until done is called. */
typedef struct gw_post {
	const funnel_event *ev;
	/* the outcome, set before done is called */
	int rc;                   /* FUNNEL_OK with ack, or the code with info */
	funnel_ack ack;
	funnel_error_info info;   /* index -1 unless funneld named this event alone */
	/* called once with the outcome in, from the publisher thread; the
	 * batcher does not touch the post after that */
	void (*done)(struct gw_post *post);
	void *ctx;                /* the caller's */
	struct gw_post *next;     /* the batcher's */
} gw_post;

/* Start the publisher thread with a producer of its own on ingest
 * (timeout_ms per request).  FUNNEL_OK, FUNNEL_ENOMEM, FUNNEL_ETRANSPORT. */
int gw_batcher_new(gw_batcher **out, const char *ingest, int timeout_ms, gw_before_fn before,
                   void *ctx);
/* Send what is queued, stop the thread, free.  No gw_batcher_submit may
 * be running or start.  Safe on NULL. */
void gw_batcher_destroy(gw_batcher **b);
/* Queue post->ev for the next request; post->done gets the outcome.
 * Thread-safe, never blocks on funneld. */
void gw_batcher_submit(gw_batcher *b, gw_post *post);
/*
 * gw_batcher_submit and wait: FUNNEL_OK with *ack, or the code with
 * *info (index -1 unless funneld named this event alone).
 */
int gw_batcher_publish(gw_batcher *b, const funnel_event *ev, funnel_ack *ack,
                       funnel_error_info *info);

/* ---- rate limit (limit.c) ---- */

typedef struct gw_limiter gw_limiter;

/* per_minute posts per client address, bursts of `burst`; 0: no limit
 * (gw_limit_take always allows).  Memory is fixed (GW_LIMIT_SLOTS). */
#define GW_LIMIT_SLOTS 8192
int gw_limiter_new(gw_limiter **out, unsigned per_minute, unsigned burst);
void gw_limiter_destroy(gw_limiter **l);
/* Take one token for the address (addr_len bytes: 4 or 16).  0: allowed;
 * otherwise the seconds until a token is back (>= 1).  Thread-safe. */
unsigned gw_limit_take(gw_limiter *l, const void *addr, size_t addr_len, int64_t now_ns);

/* ---- the client's address (limit.c) ---- */

/* An address (4 bytes IPv4, 16 IPv6) or a network of them. */
typedef struct gw_addr {
	uint8_t b[16];
	uint8_t len;              /* 4 or 16 */
} gw_addr;
typedef struct gw_net {
	gw_addr a;
	unsigned bits;            /* prefix length: 32 or 128 for one address */
} gw_net;

#define GW_MAX_PROXIES 32     /* --trusted-proxy entries */
#define GW_MAX_HOPS 64        /* X-Forwarded-For entries looked at */

/* "ADDR" or "ADDR/BITS", IPv4 or IPv6.  0, or -1 when it is neither. */
int gw_net_parse(const char *s, size_t len, gw_net *out);
/* One address, IPv4 or IPv6 (not a network).  0, or -1. */
int gw_addr_parse(const char *s, size_t len, gw_addr *out);
/* 1 when a is in one of the n networks (an IPv4-mapped IPv6 address
 * counts as its IPv4 address). */
int gw_net_match(const gw_net *nets, size_t n, const gw_addr *a);
/*
 * The client's address, for the rate limit and the loopback check: the
 * TCP peer, unless the peer is one of the trusted proxies; then the last
 * hop of xff (the X-Forwarded-For values joined by commas, in order; NULL
 * when there is none) that is not a trusted proxy, walking from the right.
 * When every hop is trusted, the leftmost; a hop that is not an address
 * ends the walk at the hop to its right.  (GATEWAY.md "Behind a reverse
 * proxy".)
 */
void gw_client_addr(const gw_net *trusted, size_t ntrusted, const gw_addr *peer, const char *xff,
                    gw_addr *out);

/* ---- counters (stats.c) ---- */

typedef enum gw_outcome {
	GW_STORED, GW_DUPLICATE, GW_HONEYPOT, GW_INVALID, GW_FORBIDDEN, GW_RATE_LIMITED,
	GW_TOO_LARGE, GW_UNAVAILABLE, GW_REFUSED, GW_ERROR, GW_N_OUTCOMES
} gw_outcome;

const char *gw_outcome_name(gw_outcome o);

typedef struct gw_stats gw_stats;
/* nforms forms, plus one row for POST /v1/events. */
int gw_stats_new(gw_stats **out, const gw_forms *forms);
void gw_stats_destroy(gw_stats **s);
/* Count one request of form index `form` (-1: /v1/events, -2: unknown
 * form, not counted by form) and its duration.  Thread-safe. */
void gw_stats_count(gw_stats *s, int form, gw_outcome o, int64_t dur_ns);
/* Prometheus text, malloc'd (free it); NULL when out of memory.
 * log_up: 1/0 funneld answered the last health probe, -1 unknown. */
char *gw_stats_prometheus(gw_stats *s, int log_up, size_t *len);

/* ---- refusals as a page (page.c) ---- */

/* Does a request with these headers (either may be NULL) want a page
 * rather than JSON?  1 when Accept names text/html and not
 * application/json and the body is not JSON (a browser's plain form
 * post, no script); 0 for fetch, apps, curl. */
int gw_wants_html(const char *accept, const char *content_type);

/* A small self-contained HTML page for a 4xx refusal: the message, the
 * field when there is one, what the visitor can do (by code) and
 * "STATUS code"; every value HTML-escaped.  Returns a malloc'd,
 * NUL-terminated page of *len bytes the caller frees, or NULL (out of
 * memory, or a message too long for the page's 8 KiB). */
char *gw_problem_page(unsigned status, const char *code, const char *field, const char *message,
                      size_t *len);

/* ---- HTTP (http.c) ---- */

typedef struct gw_http gw_http;

typedef struct gw_http_opts {
	const char *addr;         /* "IPV4:PORT" */
	const char *ingest, *query;   /* funneld; NULL: loopback defaults */
	unsigned threads;         /* server threads, each with its producer */
	int timeout_ms;           /* per publish to funneld */
	unsigned rate_per_minute, rate_burst;
	const gw_forms *forms;    /* kept, not owned: outlives the server */
	const uint8_t *key;       /* GW_KEY_BYTES, kept */
	const char *ready_file;   /* written once serving: "http=ADDR:PORT" */
	const struct http_auth *auth;   /* --access: /v1/events wants a bearer token of the
	                                 * access file (httpauth.h) from any address, and
	                                 * each event's type in the principal's publish
	                                 * globs; NULL: loopback clients only.  Kept. */
	gw_net trusted[GW_MAX_PROXIES];   /* --trusted-proxy */
	size_t ntrusted;
} gw_http_opts;

/* Start serving.  FUNNEL_OK, FUNNEL_EINVAL (addr), FUNNEL_ETRANSPORT
 * (cannot bind), FUNNEL_ENOMEM. */
int gw_http_start(gw_http **out, const gw_http_opts *o);
/* Stop serving (answers in progress finish) and free; safe on NULL. */
void gw_http_stop(gw_http **h);

/* ---- the program (run.c), as svc_main runs it (svcmain.h) ---- */

/* The settings: the common flags, the server's options, the lead id key
 * file and the access file (strings point into argv or are defaults). */
typedef struct gw_args {
	svc_args c;
	gw_http_opts h;
	const char *key_file;
	const char *access;       /* --access: bearer tokens for /v1/events */
} gw_args;

/* The own options (svc_desc.own, .own_fn); ctx is the gw_args. */
extern const struct option gw_options[];
int gw_option(int id, const char *arg, void *ctx);
/* svc_desc.prepare: read the access file once (a changed one needs a
 * restart); -1 to go on, 2 with a message when it cannot be read. */
int gw_prepare(void *ctx);
/* svc_desc.rules_load/_free/_ok for `check` of the forms section
 * (exit status 1 with "funnel-gateway: <problem>" on stderr). */
int gw_check_load(void *ctx, const char *path, int check, void **rules);
void gw_check_destroy(void *rules);
void gw_check_ok(const char *path, const void *rules);
/* svc_desc.run: read the forms and the lead id key, serve until
 * SIGTERM/SIGINT.  Exit status. */
int gw_run(void *ctx);

/* The embed script (embed.js, compiled in). */
extern const unsigned char gw_embed_js[];
extern const unsigned int gw_embed_js_len;

#endif /* FUNNEL_GATEWAY_H */
