/*
 * clients/metrics/metrics.h - funnel-metrics: the funnel's numbers as a
 * view of the log, and the reports read from it.  METRICS.md defines
 * every figure; this header is the contract between its parts:
 *
 *   view.c   mx_apply(): one record -> the view tables, inside the
 *            runtime's write transaction.  Pure: no clock, no I/O but
 *            the view, so a rebuild gives the same bytes.
 *   days.c   the days table's writer (mx_days_*, called by mx_apply)
 *            and reader (report.h).
 *   rows.c   the batch's rows (mx_rows): the days and counters rows a
 *            batch changes, written once per batch before its commit.
 *   params.c, group.c, aggregate.c, json.c, prometheus.c (report.h):
 *            mx_report(), mx_prometheus(): read-only transaction ->
 *            numbers for a window and filters (cJSON / exposition text).
 *   http.c   the HTTP server (libmicrohttpd): dashboard, /api, /metrics,
 *            /healthz.
 *   run.c    the service around them (svcmain.h): options, access file,
 *            the goals as its rules, the HTTP server's life; report.c
 *            `report` on a read-only view; main.c the description.
 *
 * The view's tables:
 *
 *   leads     lead id -> mx_lead (encoded by mx_lead_encode): stage,
 *             stage-entry times, touches (source/campaign/form of each
 *             lead.captured), owner and team, the current assignment,
             the event time of its last record.
 *             A lead erased and then captured again is a new lead: the
 *             erased one's row moves to "lead id\0be64 seq" (seq: the
 *             new capture; no lead id holds a control byte) and stays
 *             in every count, the new one starts a fresh row.
 *   facts     be64 ts || be64 seq -> mx_fact: one per record that moved
 *             a lead between stages, assigned it or recorded an SLA
 *             breach.  Keyed by time, so a window is a range scan.  An
 *             assignment's fact is rewritten once, when the lead's first
 *             contact after it arrives (contact_delay).
 *   counters  "name\0label\0label..." -> 8-byte double: running totals
 *             and gauges for /metrics, in key order (name first).
 *   index     what the dashboard pages and picks from, by key prefix:
 *             'L' kind be64 ts be64 seq -> lead id: one entry per fact
 *               (kind: the stage entered, MX_IX_ASSIGNED, MX_IX_SLA),
 *               so a lead list of a stage and window is a range read;
 *               the fact with the same ts and seq has its labels;
 *             'V' kind name -> "": the sources and campaigns captured,
 *               the teams and reps assigned (MX_VAL_*), non-empty only;
 *             'R' service -> be64 seq, be64 ts, version, hash: the last
 *               rules.changed each service recorded.
 *             A view built before this table existed is refused by the
 *             runtime until it is rebuilt (--rebuild).
 *   days      the pre-aggregates the reports sum (days.c), per UTC day
 *             (be32 day = ts / 86400 s) and per cell, a cell being one
 *             (source, campaign, owner, team) of labels, by key type:
 *               'N' -> the next cell id; 'K' be64 hash -> the cells with
 *               that hash (id, bytes); 'k' be32 id -> the cell's labels;
 *               'S' day cell -> mx_day_sums of the facts of that day
 *               and cell (an assignment's contact counts on the
 *               assignment's day, when it comes);
 *               'D' day cell cat be32 chunk -> up to 128 durations (ns,
 *               u64) of category cat (MX_DUR_*), in the order applied;
 *               'R' day cell ev reason -> count of closed-loop facts;
 *               'A' day cell dim key -> the attribution credit of the
 *               facts of that day and cell, per source (dim 0),
 *               campaign (1) or form (2): (pipeline, revenue,
 *               opportunities, won, facts credited) under first, last,
 *               then linear;
 *               'C' day cell i -> cohort i (report.h, MX_COHORTS) of the
 *               leads whose first entry into the pair's first stage is
 *               on that day, by the lead's cell now (first touch's
 *               source and campaign, owner, team);
 *               'B' cell -> the leads in each stage now, by cell.
 *             Written in the same transaction as the facts and the rows
 *             they sum (mx_days_fact, mx_days_contact, mx_days_lead), so
 *             a rebuild writes the same bytes.  A view built before this
 *             table existed is refused by the runtime until it is
 *             rebuilt (--rebuild).
 *
 * Encodings are native-endian fixed fields then strings (u8 length,
 * bytes): the view is local to one machine, and the digest compares two
 * views built by the same binary.  Strings longer than MX_STR_MAX bytes
 * are cut at a UTF-8 character boundary.
 */
#ifndef FUNNEL_METRICS_H
#define FUNNEL_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <lmdb.h>
#include <cjson/cJSON.h>

#include "funnel/record.h"
#include "funnel/service.h"
#include "model.h"
#include "svcmain.h"

#define MX_NAME "metrics"
#define MX_T_LEADS "leads"
#define MX_T_FACTS "facts"
#define MX_T_COUNTERS "counters"
#define MX_T_INDEX "index"
#define MX_T_DAYS "days"

/* The index table's key prefixes and kinds (above). */
enum { MX_IX_LIST = 'L', MX_IX_VALUE = 'V', MX_IX_RULES = 'R' };
enum { MX_IX_ASSIGNED = 0xF0, MX_IX_SLA = 0xF1 };   /* list kinds past the stages */
enum { MX_VAL_SOURCE = 's', MX_VAL_CAMPAIGN = 'c', MX_VAL_TEAM = 't', MX_VAL_REP = 'r' };
#define MX_IX_KEY 18
#define MX_DEFAULT_VIEW "var/metrics"
#define MX_DEFAULT_HTTP "127.0.0.1:7480"

#define MX_MAX_TOUCHES 32     /* touches kept per lead: the first 31 and the latest */
#define MX_STR_MAX 200

/* Every time below (ts, *_ts, dur, delays, the facts' keys) is an event
 * time (funnel_record_event_time), clamped per lead so that it never goes
 * back (METRICS.md, Out of order). */

/* A touch: one lead.captured of the lead (the first, or a re-inquiry). */
typedef struct mx_touch {
	funnel_str source, campaign, form;
} mx_touch;

/* A lead's row.  Strings point into the bytes it was decoded from, or
 * into memory of whoever filled it; "" is {ptr, 0} or {NULL, 0}. */
typedef struct mx_lead {
	uint8_t stage;                       /* fp_stage */
	uint8_t contacted;                   /* the current assignment had its first contact */
	uint8_t n_touches;
	uint8_t opp_touches;                 /* touches credited by the last opportunity */
	uint64_t captured_ts;                /* first lead.captured (since an erasure) */
	uint64_t entered_ts;                 /* entry into the current stage */
	uint64_t first_entry[FP_STAGE_COUNT]; /* first entry into each stage, 0: never */
	uint64_t assigned_ts, assigned_seq;  /* current assignment (seq 0: none) */
	uint64_t last_ts;                    /* event time of the last record applied: the
	                                      * next one never counts before it */
	funnel_str owner, team;
	mx_touch touch[MX_MAX_TOUCHES];
	mx_touch opp_last;                   /* touch[opp_touches - 1] when the last opportunity
	                                      * opened: with MX_MAX_TOUCHES touches that slot
	                                      * takes every later re-inquiry, and the win is
	                                      * credited to the opportunity's touches */
} mx_lead;

enum { MX_F_STAGE = 1, MX_F_ASSIGN = 2, MX_F_SLA = 3 };

/* A fact.  source/campaign are the lead's first touch when the fact was
 * written (what the source and campaign filters match); owner/team, on a
 * STAGE fact, the lead's assignment when it was written (none: ""). */
typedef struct mx_fact {
	uint8_t kind;            /* MX_F_* */
	uint8_t ev;              /* fp_evtype of the record */
	uint8_t from, to;        /* STAGE: stages before and after */
	uint8_t n_touches;       /* STAGE of an opportunity or a win: touches credited */
	uint64_t dur;            /* STAGE: ns spent in `from` (0 when from is none) */
	uint64_t since_capture;  /* STAGE: ns since the lead's capture */
	uint64_t contact_delay;  /* ASSIGN: 1 + ns from assignment to first contact; 0: none yet */
	double amount;           /* STAGE of opportunity.opened / deal.won: data.amount (0 if absent) */
	funnel_str source, campaign, reason, owner, team;
	mx_touch touch[MX_MAX_TOUCHES];
} mx_fact;

/* Decode a lead row or a fact; strings point into buf.  FUNNEL_OK or
 * FUNNEL_EMALFORMED. */
int mx_lead_decode(const void *buf, size_t len, mx_lead *out);
int mx_fact_decode(const void *buf, size_t len, mx_fact *out);

/* ---- facts.c: the vocabulary the view and the reports share ---- */

/* s cut to MX_STR_MAX bytes at a UTF-8 boundary and before a NUL, as
 * every name the view keeps. */
funnel_str mx_clip(funnel_str s);

/* Whether records of event type ev (fp_evtype) are closed-loop ones:
 * lead.rejected, lead.recycled, lead.disqualified, deal.lost. */
int mx_closed_loop(int ev);

/* ---- view.c ---- */

/* The index key of a list entry: 'L' kind be64 ts be64 seq. */
void mx_index_key(uint8_t key[MX_IX_KEY], uint8_t kind, uint64_t ts, uint64_t seq);

/* Decode an 'R' entry of the index (strings point into buf). */
int mx_rules_decode(const void *buf, size_t len, uint64_t *seq, uint64_t *ts,
                    funnel_str *version, funnel_str *hash);

typedef struct mx_view mx_view;

/* State of the apply function: encoding buffers, and the batch's rows
 * (mx_rows) until the batch commits or is aborted.
 * Between batches it holds no view state: everything is in the tables. */
int mx_view_new(mx_view **out);
void mx_view_destroy(mx_view **v);

/* funnel-metrics' opts.before_commit and opts.on_abort (ctx: the
 * mx_view): write the batch's rows (mx_rows_flush), or drop them. */
int mx_view_flush(funnel_service *svc, void *ctx);
void mx_view_drop(funnel_service *svc, void *ctx);

/* The funnel_apply_fn of funnel-metrics; ctx is an mx_view. */
int mx_apply(funnel_service *svc, const funnel_record *rec, void *ctx);

/* Duration categories of the days table: the stage left (time in
 * stage, 0..FP_STAGE_COUNT-1), capture to win, assignment to first
 * contact. */
enum { MX_DUR_TO_WON = FP_STAGE_COUNT, MX_DUR_DELAY, MX_DUR_COUNT };

/* The sums of one day and cell (native layout, like the view's other
 * encodings).  nd: the durations kept per category. */
typedef struct mx_day_sums {
	double entries[FP_STAGE_COUNT];   /* stage facts by the stage entered */
	double by_ev[FP_EV_COUNT];        /* stage facts by event */
	double pipeline, revenue;         /* opportunity.opened, deal.won amounts */
	double assigned, contacted, within[3], sla;
	uint32_t nd[MX_DUR_COUNT];
} mx_day_sums;

/* ---- rows.c: the batch's rows ---- */

/* A write-back copy of the rows mx_apply changes many times a batch
 * (the leads, the days table, the counters, the index's picker values):
 * mx_rows_get and mx_rows_put are
 * funnel_service_get and _put on it (a row is read from the view the
 * first time, *val is valid until the next put of the same key).
 * mx_rows_flush writes each changed row once, inside the batch's
 * transaction before its checkpoint (opts.before_commit), and holds no
 * row afterwards, whatever it returns (FUNNEL_OK or the storage
 * error); mx_rows_drop forgets the rows of an aborted batch
 * (opts.on_abort).  A put of the bytes a row has writes nothing.  Every
 * read and write of a key that goes through it must go through it for
 * the whole batch (the leads, days and counters tables always do; of
 * the index, the picker values).  Between batches it holds no view
 * state. */
typedef struct mx_rows mx_rows;
int mx_rows_new(mx_rows **out);
void mx_rows_destroy(mx_rows **r);
int mx_rows_get(funnel_service *svc, mx_rows *r, MDB_dbi dbi, const void *key, size_t klen,
                const void **val, size_t *vlen);
int mx_rows_put(funnel_service *svc, mx_rows *r, MDB_dbi dbi, const void *key, size_t klen,
                const void *val, size_t vlen);
int mx_rows_flush(funnel_service *svc, mx_rows *r);
void mx_rows_drop(mx_rows *r);

/* ---- days.c: the days table's writer ---- */

/* The writer's scratch; it reads and writes the days table through the
 * batch's rows `rows` (which it does not own). */
typedef struct mx_days mx_days;
int mx_days_new(mx_days **out, mx_rows *rows);
void mx_days_destroy(mx_days **d);

/* Inside apply(): a fact just written at ts; an assignment fact at ts
 * that got its first contact after delay ns; a lead row that was `was`
 * (NULL: none, or an erased row kept aside) and is `now`.  The strings
 * of f, was and now must stay valid across writes (copies, not views of
 * the tables).  FUNNEL_OK or the storage error. */
int mx_days_fact(funnel_service *svc, mx_days *d, uint64_t ts, const mx_fact *f);
int mx_days_contact(funnel_service *svc, mx_days *d, uint64_t ts, const mx_fact *f,
                    uint64_t delay);
int mx_days_lead(funnel_service *svc, mx_days *d, const mx_lead *was, const mx_lead *now);

/* ---- the reports (report.h: params.c, aggregate.c, json.c, prometheus.c) ---- */

/* The view's tables as an HTTP thread sees them (opened once, before the
 * service runs). */
typedef struct mx_tables {
	MDB_env *env;
	MDB_dbi leads, facts, counters, index, days, runtime;
} mx_tables;

enum { MX_R_SUMMARY, MX_R_FUNNEL, MX_R_CONVERSION, MX_R_VELOCITY, MX_R_FOLLOWUP,
       MX_R_CLOSED_LOOP, MX_R_ATTRIBUTION, MX_R_TREND, MX_R_LEADS, MX_R_VALUES, MX_R_COUNT };
#define MX_PAGE_SIZE 50     /* leads in one page of /api/leads */
enum { MX_MODEL_FIRST, MX_MODEL_LAST, MX_MODEL_LINEAR };
enum { MX_BUCKET_WEEK, MX_BUCKET_DAY };

/* What a report covers: facts with from <= ts < to (to 0: no end), of
 * leads whose first touch has this source / campaign, and facts made
 * while the lead was assigned to this team / rep (NULL: any). */
typedef struct mx_query {
	int report;                  /* MX_R_* */
	uint64_t from, to;
	const char *source, *campaign, *team, *rep;
	int model;                   /* MX_MODEL_*, attribution */
	int bucket;                  /* MX_BUCKET_*, trend */
	int list;                    /* leads: the stage entered, MX_IX_ASSIGNED or MX_IX_SLA; -1 none */
	const char *reason;          /* leads: only facts with this data.reason */
	unsigned page;               /* leads: 1.. */
	int headline;                /* internal: the headline figures only (previous period) */
	int facts_only;              /* compute=facts: from the facts and leads, not the days table */
} mx_query;

/* Report names as in /api/<name>; -1 for an unknown name. */
int mx_report_parse(const char *name);
const char *mx_report_name(int report);

/*
 * Parse one query parameter of /api into q.  Returns 0, or -1 with a
 * message in err (naming the value) for a bad value or a parameter that
 * report does not take (the caller names the parameter).
 */
int mx_query_param(mx_query *q, const char *key, const char *value, char *err, size_t errlen);

/* The report as JSON, from a read-only transaction; the caller frees
 * *out with cJSON_Delete.  FUNNEL_OK, FUNNEL_ENOMEM, FUNNEL_ESTORAGE. */
int mx_report(MDB_txn *txn, const mx_tables *t, const mx_query *q, cJSON **out);

/* The view's row of lead id as fields of o (stage, captured, first
 * entries, touches, assignment and its first contact, SLA clock).
 * FUNNEL_OK, FUNNEL_ENOTFOUND. */
int mx_lead_json(MDB_txn *txn, const mx_tables *t, const char *id, cJSON *o);

/* Add v to o as a JSON integer written exactly (seqs and ns exceed
 * the 2^53 a double holds): the digits, never an exponent. */
void mx_json_u64(cJSON *o, const char *name, uint64_t v);

/* The view's checkpoint (last applied seq) as the transaction sees it. */
uint64_t mx_checkpoint(MDB_txn *txn, const mx_tables *t);

/* The name shown for assignments and SLA breaches that carry no team
 * (a lead.assigned without data.team): the view keeps the team as the
 * empty string; the reports' "team" fields and the Prometheus `team`
 * label show it as this, so JSON, /metrics and the dashboard agree. */
#define MX_NO_TEAM "(no team)"

/* Prometheus text exposition of the counters table plus the view's
 * checkpoint and, if head_known, the log's head.  *out is malloc'd,
 * NUL-terminated, *len bytes. */
int mx_prometheus(MDB_txn *txn, const mx_tables *t, int head_known, uint64_t head,
                  char **out, size_t *len);

/* ---- goals.c ---- */

/* The goals: section of funnel.yaml (METRICS.md, "Shared goals"): one
 * mx_goal per (period, team, figure) committed to. */
enum { MX_G_MQLS, MX_G_ACCEPTANCE, MX_G_SPEED, MX_G_PIPELINE, MX_G_REVENUE, MX_G_COUNT };

typedef struct mx_goal {
	int figure;             /* MX_G_* */
	char period[16];        /* as written: "2026-12", "2026-Q4" */
	uint64_t from, to;      /* the period, ns, UTC, to excluded */
	char *team;             /* NULL: every team */
	double target;
	int line;               /* of the figure in the file */
} mx_goal;

typedef struct mx_goals {
	int present;            /* the file has a goals: section */
	char *version;          /* the file's version: (when present) */
	char hash_hex[65];      /* BLAKE2b-256 of the text */
	char *text;
	size_t len;
	mx_goal *goal;
	size_t n, cap;
} mx_goals;

/* Parse / read a rules file's goals: section.  A file without one gives
 * goals with present 0 and n 0.  FUNNEL_OK, FUNNEL_EVALUE ("file:line:
 * goals[i].key: problem" in err: an unknown figure, a team that is not
 * one of routing.teams, a bad period or target), FUNNEL_ENOTFOUND,
 * FUNNEL_ETOOBIG, FUNNEL_ENOMEM. */
int mx_goals_parse(const char *text, size_t len, const char *file, mx_goals **out, char *err,
                   size_t errlen);
int mx_goals_load(const char *path, mx_goals **out, char *err, size_t errlen);
void mx_goals_destroy(mx_goals **g);
const char *mx_goal_figure_name(int figure);
/* +1: the goal is to reach at least the target; -1: at most. */
int mx_goal_direction(int figure);

/* /api/goals: each goal's progress at now_ns (the wall clock), the pace
 * it needs by its period's end and its status (METRICS.md). */
int mx_goals_json(MDB_txn *txn, const mx_tables *t, const mx_goals *g, uint64_t now_ns,
                  cJSON **out);
/* The same as Prometheus gauges, appended to *text (malloc'd, *len; *text stays
 * the caller's to free, after a failure too). */
int mx_goals_prometheus(MDB_txn *txn, const mx_tables *t, const mx_goals *g, uint64_t now_ns,
                        char **text, size_t *len);

/* ---- http.c ---- */

typedef struct mx_http mx_http;

/* Serve the dashboard and the APIs on addr ("HOST:PORT", loopback by
 * default) from a small pool of libmicrohttpd threads.  Each request reads the
 * view in its own read-only transaction, under map_lock for reading;
 * query_ep is funneld's query endpoint, which a thread of the server
 * asks for the head every half second (/healthz and /metrics print its
 * last answer: no request waits on funneld); with source (a --source
 * nats://... URL, else NULL) the head is the stream's last sequence
 * instead (funnel_source_head); svc is the running service,
 * asked by /healthz whether funneld serves the view's log
 * (funnel_service_log_state).  Connections and query parameters are
 * capped (METRICS.md, HTTP limits).  currency (an ISO 4217 code, or
 * NULL) labels the summary's amounts; goals (or NULL) are served by
 * /api/goals and /metrics and outlive the server.  Returns FUNNEL_OK, FUNNEL_EINVAL
 * (bad address), FUNNEL_ENOMEM, FUNNEL_ETRANSPORT (cannot listen;
 * logged).  mx_http_stop joins every thread it started. */
struct funnel_service;
int mx_http_start(mx_http **out, const char *addr, const mx_tables *t,
                  pthread_rwlock_t *map_lock, const char *query_ep,
                  const char *source, struct funnel_service *svc, const char *currency,
                  const mx_goals *goals);
void mx_http_stop(mx_http **h);

/* With --access, before mx_http_start: every path but /, /index.html and
 * /healthz answers 401 unless the request carries the bearer token of a
 * principal with read (clients/common/httpauth.h).  a outlives the
 * server. */
struct http_auth;
void mx_http_require_tokens(const struct http_auth *a);

/* ---- the service (run.c, report.c; main.c describes it, svcmain.h) ---- */

/* The common service flags (svcargs.h), funnel-metrics' own, and what
 * `run` keeps while it runs (the HTTP server reads tables and map_lock
 * until mx_stop). */
typedef struct mx_args {
	svc_args c;
	const char *http;
	const char *access;       /* --access: HTTP bearer tokens */
	const char *currency;
	size_t map_mb;
	const char *params[16];
	int nparams;

	const mx_goals *goals;    /* run: the goals (svc_main owns them), or NULL */
	pthread_rwlock_t map_lock;
	mx_tables tables;
	mx_http *server;
} mx_args;

/* The default --rules: a missing default file means no goals. */
extern const char mx_default_rules[];

/* The service's own options and hooks (svc_desc; run.c). */
extern const struct option mx_options[];
int mx_option(int id, const char *arg, void *ctx);
int mx_prepare(void *ctx);
int mx_rules_load(void *ctx, const char *path, int check, void **goals);
void mx_rules_destroy(void *goals);
void mx_rules_ok(const char *path, const void *goals);
int mx_rules_id(const void *goals, rr_rules_id *id);
int mx_setup(void *ctx, void *goals, funnel_service_opts *o, void **engine);
int mx_serving(void *ctx, funnel_service *svc, void *engine);
void mx_stop(void *ctx, void *engine);
void mx_release(void *ctx, void *engine);

/* `funnel-metrics report [NAME]` (report.c): exit status. */
int mx_cmd_report(void *ctx, int argc, char **argv);

/* The dashboard page, embedded at build time (dashboard.html). */
extern const unsigned char mx_dashboard_html[];
extern const unsigned int mx_dashboard_html_len;

#endif
