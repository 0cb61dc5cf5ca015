/*
 * clients/metrics/report.h - the inside of the reports of funnel-metrics
 * (metrics.h has the outside: mx_report, mx_prometheus, mx_goals_json).
 * Internal to clients/metrics/; one file per job:
 *
 *   params.c      the /api parameters -> mx_query (mx_query_param), the
 *                 report names.
 *   group.c       the containers: vec (durations), gmap (a string-keyed
 *                 table of accumulators), nearest-rank percentiles.
 *   aggregate.c   the pass over the view: mx_agg_fill() sums a window's
 *                 whole UTC days from the days table and reads the facts
 *                 of its edges (or, with compute=facts, every fact and
 *                 lead) into an agg for a query.
 *   days.c        the days table (metrics.h): its writer, and the sums
 *                 of whole days and of the leads' balance and cohorts.
 *   json.c        agg -> the JSON of each report (mx_report), the lead
 *                 lists, a lead's row, the picker values, the rules.
 *   prometheus.c  the counters table -> exposition text (mx_prometheus);
 *                 the sbuf text builder.
 *   goals.c       the goals: section, and each goal's progress (an agg
 *                 of its period and team).
 *
 * Ownership: an agg (and every vec and gmap in it) owns its memory; the
 * caller zeroes it before mx_agg_fill and frees it with mx_agg_release,
 * after a failed fill too.  A gmap's keys are copies (strndup), so an agg
 * outlives the transaction it was filled from.
 *
 * Threads: no state outside the arguments (the tables here are
 * constant), so the HTTP server's threads run reports at once, each on
 * its own agg and its own read-only transaction.
 */
#ifndef FUNNEL_METRICS_REPORT_H
#define FUNNEL_METRICS_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

#define NS_PER_S 1000000000ull
#define DAY_NS (86400ull * NS_PER_S)

/* ---- group.c ---- */

/* A growable vector of durations (ns). */
typedef struct vec {
	uint64_t *v;
	size_t n, cap;
} vec;

/* Append x; 0, or -1 when out of memory (the vector is unchanged). */
int mx_vec_push(vec *a, uint64_t x);
/* qsort comparator of uint64_t. */
int mx_cmp_u64(const void *a, const void *b);
/* Nearest-rank percentile of a non-empty vector: the smallest value
 * with at least p of the values at or below it.  Selects in place (the
 * values' order changes, not the values). */
uint64_t mx_rank(vec *a, double p);

/* A group: up to NKEYS string keys (missing ones ""), NVALS accumulators
 * and a vector of durations. */
#define NKEYS 4
#define NVALS 12

typedef struct group {
	char *k[NKEYS];
	uint64_t hash;
	double v[NVALS];
	double nf;           /* facts that made the group: it exists while > 0 */
	vec d;
} group;

/* A string-keyed table of groups, in insertion order until mx_gmap_sort
 * orders them by their keys. */
typedef struct gmap {
	group **items;       /* in insertion order */
	size_t n, cap;
	size_t *slots;       /* open addressing: index + 1, 0 empty */
	size_t nslots;
	int oom;
} gmap;

/* The group of keys a, b, c, d (missing keys are ""), created at zero;
 * NULL when out of memory (m->oom is set). */
group *mx_gmap_get(gmap *m, funnel_str a, funnel_str b, funnel_str c, funnel_str d);
void mx_gmap_release(gmap *m);
/* Drop the groups no fact makes any more (nf 0, after mx_agg_sub). */
void mx_gmap_prune(gmap *m);
void mx_gmap_sort(gmap *m);

/* ---- facts.c (with mx_clip and mx_closed_loop, metrics.h) ---- */

/* The conversion pairs, in funnel order, and the stages the funnel
 * picture shows, in order. */
#define NPAIRS 4
#define NSHOWN 9
typedef struct mx_pair {
	fp_stage from, to;
	const char *name;
} mx_pair;
extern const mx_pair mx_pairs[NPAIRS];
extern const fp_stage mx_shown[NSHOWN];
/* A touch's label k (0 source, 1 campaign, 2 form), empty if absent. */
funnel_str mx_touch_key(const mx_touch *t, int k);
/* Byte equality of two names. */
int mx_str_eq(funnel_str a, funnel_str b);

/* ---- aggregate.c ---- */

/* Accumulator slots of the grouped tables. */
enum { SC_ENTRIES = 0 /* .. + stage */, SC_ACCEPTED = FP_STAGE_COUNT, SC_REJECTED };
enum { FU_ASSIGNED, FU_CONTACTED, FU_W5M, FU_W1H, FU_W24H, FU_SLA,
       FU_ACCEPTED, FU_REJECTED, FU_PIPELINE, FU_OPPS, FU_WON, FU_REVENUE };
enum { AT_PIPELINE, AT_REVENUE, AT_OPPS, AT_WON };

/* Everything a report prints, for one query.  Groups are ordered by
 * their keys once mx_agg_fill returns; durations are in no order
 * (mx_rank selects). */
typedef struct agg {
	double entries[FP_STAGE_COUNT];
	double by_ev[FP_EV_COUNT];       /* stage facts by the event that made them */
	double pipeline, revenue;
	vec in_stage[FP_STAGE_COUNT];    /* time in stage, by the stage left */
	vec to_won;
	double assigned, contacted, within[3], sla;
	vec delay;
	double balance[FP_STAGE_COUNT];
	double cohort_in[NPAIRS], cohort_on[NPAIRS];
	double cohort_sql, cohort_won, cohort_lost;
	gmap srccamp;     /* (source, campaign): SC_* */
	gmap reasons;     /* (event, reason): count in v[0] */
	gmap reasons_by;  /* (event, reason, source, campaign): count */
	gmap teams;       /* (team): FU_* , delays */
	gmap reps;        /* (owner, team): FU_*, delays */
	gmap rep_reasons; /* (owner, team, event, reason): count */
	gmap attr[3];     /* by source, campaign, form: AT_* under the query's model */
	gmap trend;       /* (bucket start as 20 digits): entries per stage */
	uint64_t last_bucket;   /* facts come in time order: the bucket of the last one */
	group *last_trend;
} agg;

/* Fill a (zeroed) from the view for q: the facts of the window, then,
 * for the reports that show them, the leads (balance, cohorts).
 * FUNNEL_OK, FUNNEL_ENOMEM, FUNNEL_ESTORAGE; a is the caller's to
 * release either way. */
int mx_agg_fill(MDB_txn *txn, const mx_tables *t, const mx_query *q, agg *a);
/* a -= c, where c is what a part of a's facts and cohorts gave (a
 * multiset of durations removed, groups emptied of facts dropped by
 * mx_gmap_prune).  0, or -1 when out of memory. */
int mx_agg_sub(agg *a, agg *c);

/* ---- group.c: the aggregate container ---- */

void mx_agg_release(agg *a);
/* The trend group of the bucket of ts (created at zero); NULL: no memory. */
group *mx_agg_trend(agg *a, const mx_query *q, uint64_t ts);

/* ---- params.c: what a query asks for ---- */

/* Whether the report prints section r (MX_R_*): the passes skip the
 * groupings nobody will read. */
int mx_wants(const mx_query *q, int r);
/* The filters: s equals c (c NULL: any); mx_team_is also takes
 * MX_NO_TEAM for the empty team. */
int mx_str_is(funnel_str s, const char *c);
int mx_team_is(funnel_str s, const char *c);

/* ---- days.c: reading the days table (metrics.h) ---- */

/* The cohorts kept per lead: the NPAIRS pairs (entered, went_on), then
 * the win rate of the sql cohort (entered, won, lost). */
#define MX_COHORTS (NPAIRS + 1)

uint32_t mx_day_of(uint64_t ts);

/* The cells of the view, by id, with whether the query's filters keep
 * them.  Strings point into the transaction's pages. */
typedef struct mx_cell {
	funnel_str source, campaign, owner, team;
	int match;
} mx_cell;
typedef struct mx_cells {
	mx_cell *cell;
	size_t n, cap;
} mx_cells;
int mx_days_cells(MDB_txn *txn, const mx_tables *t, const mx_query *q, mx_cells *c);
void mx_days_cells_release(mx_cells *c);

/* Add to a what the facts of days [lo, hi) of the matching cells give
 * (everything add_fact gives them one by one, the same figures); and
 * the leads' balance (all) and cohorts whose first entry is on days
 * [lo, hi).  FUNNEL_OK, FUNNEL_ENOMEM, FUNNEL_ESTORAGE. */
int mx_days_read_facts(MDB_txn *txn, const mx_tables *t, const mx_query *q, const mx_cells *c,
                       uint32_t lo, uint32_t hi, agg *a);
int mx_days_read_leads(MDB_txn *txn, const mx_tables *t, const mx_query *q, const mx_cells *c,
                       uint32_t lo, uint32_t hi, agg *a);

/* ---- json.c ---- */

/* A figure: a whole number as its digits, exactly; else a double. */
void mx_json_num(cJSON *o, const char *name, double x);
/* A time in ns as exact digits, null for 0 (no bound). */
void mx_json_time(cJSON *o, const char *name, uint64_t ns);

/* ---- prometheus.c ---- */

/* A growing NUL-terminated text; oom once a growth failed (the text
 * then stays as it was). */
typedef struct sbuf {
	char *p;
	size_t n, cap;
	int oom;
} sbuf;

void mx_sb_add(sbuf *b, const char *s, size_t n);
void mx_sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A label value with \, " and newline escaped. */
void mx_sb_label(sbuf *b, const char *s, size_t n);
/* " value\n": a whole number as digits, else %.17g. */
void mx_sb_value(sbuf *b, double x);
void mx_sb_head(sbuf *b, const char *name, const char *type, const char *help);

#endif
