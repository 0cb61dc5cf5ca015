/*
 * clients/metrics/query.c - the reports of funnel-metrics, read from the
 * view in one read-only transaction (METRICS.md defines each figure).
 *
 * A report is one pass over the facts of the window (a range scan by
 * time) and, for the stage balance and the cohorts, one pass over the
 * leads; the passes fill an aggregate, and the report prints the parts
 * of it it was asked for.  Grouped figures (per source, team, reason,
 * week...) go through a small string-keyed hash table of accumulators.
 */
#include <ctype.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics.h"
#include "mp.h"
#include "rulesfile.h"

#define NS_PER_S 1000000000ull
#define DAY_NS (86400ull * NS_PER_S)

static const char *const report_names[MX_R_COUNT] = {
	"summary", "funnel", "conversion", "velocity", "followup", "closed-loop", "attribution",
	"trend", "leads", "values",
};

int
mx_report_parse(const char *name)
{
	for (int i = 0; i < MX_R_COUNT; i++) {
		if (strcmp(name, report_names[i]) == 0)
			return i;
	}
	return -1;
}

const char *
mx_report_name(int report)
{
	return report >= 0 && report < MX_R_COUNT ? report_names[report] : "";
}

/* ---- parameters ---- */

/* ns since the epoch from digits (ns), YYYY-MM-DD or
 * YYYY-MM-DDTHH:MM:SSZ (UTC); -1 if it is neither. */
static int
parse_time(const char *s, uint64_t *out)
{
	size_t n = strlen(s);
	int y, mo, d, h = 0, mi = 0, se = 0, used = 0;

	if (n > 0 && n <= 19 && strspn(s, "0123456789") == n) {
		*out = strtoull(s, NULL, 10);
		return 0;
	}
	if (n == 10) {
		if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &used) != 3 || used != 10)
			return -1;
	} else if (n == 20) {
		if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2dZ%n", &y, &mo, &d, &h, &mi, &se, &used) != 6 ||
		    used != 20)
			return -1;
	} else {
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (strchr("0123456789-T:Z", s[i]) == NULL)
			return -1;
	}
	if (y < 1970 || y > 2200 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
	    se > 59)
		return -1;
	struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
	                 .tm_min = mi, .tm_sec = se };
	time_t t = timegm(&tm);
	struct tm back;
	gmtime_r(&t, &back);
	if (back.tm_mday != d || back.tm_mon != mo - 1)
		return -1;    /* 2026-02-30 */
	*out = (uint64_t)t * NS_PER_S;
	return 0;
}

/* How many bytes of s to quote in a message: at most 60, cut at a
 * UTF-8 character boundary (s is valid UTF-8), so the JSON stays valid. */
static int
quote_len(const char *s)
{
	size_t n = strlen(s);
	if (n > 60) {
		n = 60;
		while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
			n--;
	}
	return (int)n;
}

int
mx_query_param(mx_query *q, const char *key, const char *value, char *err, size_t errlen)
{
	int r = q->report;
	if (value == NULL)
		value = "";
	/* the value is echoed in the answer (window, messages): JSON text */
	if (mp_utf8_invalid_at(value, strlen(value)) >= 0) {
		snprintf(err, errlen, "the value is not valid UTF-8");
		return -1;
	}
	if (strcmp(key, "from") == 0 || strcmp(key, "to") == 0) {
		uint64_t t;
		if (parse_time(value, &t) != 0) {
			snprintf(err, errlen, "'%.*s' is not a time: use YYYY-MM-DD, "
			         "YYYY-MM-DDTHH:MM:SSZ (UTC) or nanoseconds since the epoch",
			         quote_len(value), value);
			return -1;
		}
		if (key[0] == 't' && t == 0) {    /* to 0 means "no end" inside */
			snprintf(err, errlen, "the window is empty: from must be before to");
			return -1;
		}
		if (key[0] == 'f')
			q->from = t;
		else
			q->to = t;
		if (q->to && q->from >= q->to) {
			snprintf(err, errlen, "the window is empty: from must be before to");
			return -1;
		}
		return 0;
	}
	if (r == MX_R_VALUES) {
		snprintf(err, errlen, "unknown parameter for /api/%s", mx_report_name(r));
		return -1;
	}
	if (strcmp(key, "source") == 0 || strcmp(key, "campaign") == 0 ||
	    strcmp(key, "team") == 0 || strcmp(key, "rep") == 0 ||
	    (strcmp(key, "reason") == 0 && r == MX_R_LEADS)) {
		size_t n = strlen(value);
		if (n == 0 || n > MX_STR_MAX) {
			snprintf(err, errlen, "%s must be 1..%d bytes", key, MX_STR_MAX);
			return -1;
		}
		if (key[0] == 's')
			q->source = value;
		else if (key[0] == 'c')
			q->campaign = value;
		else if (key[0] == 't')
			q->team = value;
		else if (key[2] == 'p')
			q->rep = value;
		else
			q->reason = value;
		return 0;
	}
	if (strcmp(key, "stage") == 0 && r == MX_R_LEADS) {
		int st = fp_stage_parse(value, strlen(value));
		if (strcmp(value, "assigned") == 0)
			q->list = MX_IX_ASSIGNED;
		else if (strcmp(value, "sla_breached") == 0)
			q->list = MX_IX_SLA;
		else if (st > FP_STAGE_NONE)
			q->list = st;
		else {
			snprintf(err, errlen, "stage is a stage name (inquiry, mql, ...), assigned or "
			         "sla_breached, not '%.*s'", quote_len(value), value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "page") == 0 && r == MX_R_LEADS) {
		size_t n = strlen(value);
		unsigned long pg = n && n <= 6 && strspn(value, "0123456789") == n ?
		                   strtoul(value, NULL, 10) : 0;
		if (pg < 1) {
			snprintf(err, errlen, "page is 1..999999, not '%.*s'", quote_len(value), value);
			return -1;
		}
		q->page = (unsigned)pg;
		return 0;
	}
	if (strcmp(key, "model") == 0 && (r == MX_R_ATTRIBUTION || r == MX_R_SUMMARY)) {
		static const char *const m[] = { "first", "last", "linear" };
		for (int i = 0; i < 3; i++) {
			if (strcmp(value, m[i]) == 0) {
				q->model = i;
				return 0;
			}
		}
		snprintf(err, errlen, "model is first, last or linear, not '%.*s'", quote_len(value),
		         value);
		return -1;
	}
	if (strcmp(key, "bucket") == 0 && (r == MX_R_TREND || r == MX_R_SUMMARY)) {
		if (strcmp(value, "week") == 0 || strcmp(value, "day") == 0) {
			q->bucket = value[0] == 'w' ? MX_BUCKET_WEEK : MX_BUCKET_DAY;
			return 0;
		}
		snprintf(err, errlen, "bucket is week or day, not '%.*s'", quote_len(value), value);
		return -1;
	}
	snprintf(err, errlen, "unknown parameter for /api/%s", mx_report_name(r));
	return -1;
}

/* ---- growable vectors of durations and a string-keyed table ---- */

typedef struct vec {
	uint64_t *v;
	size_t n, cap;
} vec;

static int
vec_push(vec *a, uint64_t x)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 64;
		uint64_t *p = realloc(a->v, cap * sizeof *p);
		if (p == NULL)
			return -1;
		a->v = p;
		a->cap = cap;
	}
	a->v[a->n++] = x;
	return 0;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted vector: the smallest value with at
 * least p of the values at or below it. */
static uint64_t
rank(const vec *a, double p)
{
	size_t k = (size_t)ceil(p * (double)a->n);
	return a->v[k ? k - 1 : 0];
}

#define NKEYS 4
#define NVALS 12

typedef struct group {
	char *k[NKEYS];
	uint64_t hash;
	double v[NVALS];
	vec d;
} group;

typedef struct gmap {
	group **items;       /* in insertion order */
	size_t n, cap;
	size_t *slots;       /* open addressing: index + 1, 0 empty */
	size_t nslots;
	int oom;
} gmap;

static uint64_t
hash_keys(const funnel_str *k)
{
	uint64_t h = 1469598103934665603ull;
	for (int i = 0; i < NKEYS; i++) {
		for (size_t j = 0; j < k[i].len; j++)
			h = (h ^ (unsigned char)k[i].ptr[j]) * 1099511628211ull;
		h = (h ^ 0xff) * 1099511628211ull;
	}
	return h;
}

static int
keys_eq(const group *g, const funnel_str *k)
{
	for (int i = 0; i < NKEYS; i++) {
		if (strlen(g->k[i]) != k[i].len || memcmp(g->k[i], k[i].ptr, k[i].len) != 0)
			return 0;
	}
	return 1;
}

static int
gmap_grow(gmap *m)
{
	size_t ns = m->nslots ? m->nslots * 2 : 64;
	size_t *s = calloc(ns, sizeof *s);
	if (s == NULL)
		return -1;
	for (size_t i = 0; i < m->n; i++) {
		size_t j = m->items[i]->hash & (ns - 1);
		while (s[j])
			j = (j + 1) & (ns - 1);
		s[j] = i + 1;
	}
	free(m->slots);
	m->slots = s;
	m->nslots = ns;
	return 0;
}

/* The group of keys a, b, c, d (missing keys are ""), created at zero;
 * NULL when out of memory (m->oom is set). */
static group *
gmap_get(gmap *m, funnel_str a, funnel_str b, funnel_str c, funnel_str d)
{
	funnel_str k[NKEYS] = { a, b, c, d };
	for (int i = 0; i < NKEYS; i++) {
		if (k[i].ptr == NULL)
			k[i].len = 0;
	}
	uint64_t h = hash_keys(k);
	if (m->nslots) {
		for (size_t j = h & (m->nslots - 1); m->slots[j]; j = (j + 1) & (m->nslots - 1)) {
			group *g = m->items[m->slots[j] - 1];
			if (g->hash == h && keys_eq(g, k))
				return g;
		}
	}
	if ((m->n + 1) * 2 > m->nslots && gmap_grow(m) != 0)
		goto oom;
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 32;
		group **p = realloc(m->items, cap * sizeof *p);
		if (p == NULL)
			goto oom;
		m->items = p;
		m->cap = cap;
	}
	group *g = calloc(1, sizeof *g);
	if (g == NULL)
		goto oom;
	g->hash = h;
	for (int i = 0; i < NKEYS; i++) {
		g->k[i] = strndup(k[i].ptr ? k[i].ptr : "", k[i].len);
		if (g->k[i] == NULL) {
			for (int j = 0; j < i; j++)
				free(g->k[j]);
			free(g);
			goto oom;
		}
	}
	m->items[m->n++] = g;
	size_t j = h & (m->nslots - 1);
	while (m->slots[j])
		j = (j + 1) & (m->nslots - 1);
	m->slots[j] = m->n;
	return g;
oom:
	m->oom = 1;
	return NULL;
}

static void
gmap_release(gmap *m)
{
	for (size_t i = 0; i < m->n; i++) {
		for (int j = 0; j < NKEYS; j++)
			free(m->items[i]->k[j]);
		free(m->items[i]->d.v);
		free(m->items[i]);
	}
	free(m->items);
	free(m->slots);
	memset(m, 0, sizeof *m);
}

static int
cmp_group(const void *a, const void *b)
{
	const group *x = *(group *const *)a, *y = *(group *const *)b;
	for (int i = 0; i < NKEYS; i++) {
		int c = strcmp(x->k[i], y->k[i]);
		if (c)
			return c;
	}
	return 0;
}

static void
gmap_sort(gmap *m)
{
	if (m->n > 1)
		qsort(m->items, m->n, sizeof *m->items, cmp_group);
}

/* ---- the aggregate ---- */

/* Conversion pairs, in funnel order. */
static const struct { fp_stage from, to; const char *name; } pairs[] = {
	{ FP_STAGE_INQUIRY, FP_STAGE_MQL, "inquiry_to_mql" },
	{ FP_STAGE_MQL, FP_STAGE_SAL, "mql_to_sal" },
	{ FP_STAGE_SAL, FP_STAGE_SQL, "sal_to_sql" },
	{ FP_STAGE_SQL, FP_STAGE_WON, "sql_to_won" },
};
#define NPAIRS 4

/* The stages the funnel picture shows, in order. */
static const fp_stage shown[] = {
	FP_STAGE_INQUIRY, FP_STAGE_MQL, FP_STAGE_SAL, FP_STAGE_SQL, FP_STAGE_WON, FP_STAGE_LOST,
	FP_STAGE_NURTURE, FP_STAGE_DISQUALIFIED, FP_STAGE_ERASED,
};
#define NSHOWN 9

/* Accumulator slots of the grouped tables. */
enum { SC_ENTRIES = 0 /* .. + stage */, SC_ACCEPTED = FP_STAGE_COUNT, SC_REJECTED };
enum { FU_ASSIGNED, FU_CONTACTED, FU_W5M, FU_W1H, FU_W24H, FU_SLA,
       FU_ACCEPTED, FU_REJECTED, FU_PIPELINE, FU_OPPS, FU_WON, FU_REVENUE };
enum { AT_PIPELINE, AT_REVENUE, AT_OPPS, AT_WON };

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

static void
agg_release(agg *a)
{
	for (int s = 0; s < FP_STAGE_COUNT; s++)
		free(a->in_stage[s].v);
	free(a->to_won.v);
	free(a->delay.v);
	gmap_release(&a->srccamp);
	gmap_release(&a->reasons);
	gmap_release(&a->reasons_by);
	gmap_release(&a->teams);
	gmap_release(&a->reps);
	gmap_release(&a->rep_reasons);
	for (int i = 0; i < 3; i++)
		gmap_release(&a->attr[i]);
	gmap_release(&a->trend);
}

static int
str_is(funnel_str s, const char *c)
{
	return c == NULL || (strlen(c) == s.len && memcmp(s.ptr, c, s.len) == 0);
}

/* The team filter: as str_is, and MX_NO_TEAM names the empty team. */
static int
team_is(funnel_str s, const char *c)
{
	return str_is(s, c) || (s.len == 0 && strcmp(c, MX_NO_TEAM) == 0);
}

static funnel_str
fs(const char *s)
{
	funnel_str f = { s, strlen(s) };
	return f;
}

static const funnel_str none = { "", 0 };

static uint64_t
bucket_start(uint64_t ts, int bucket)
{
	uint64_t day = ts / DAY_NS;
	if (bucket == MX_BUCKET_WEEK)
		day -= (day + 3) % 7;    /* 1970-01-01 was a Thursday: back to Monday */
	return day * DAY_NS;
}

static funnel_str
touch_key(const mx_touch *t, int k)
{
	funnel_str s = k == 0 ? t->source : k == 1 ? t->campaign : t->form;
	if (s.ptr == NULL)
		s.len = 0;
	return s;
}

static int
str_eq(funnel_str a, funnel_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static void
credit(agg *a, const mx_fact *f, int model, int what)
{
	unsigned n = f->n_touches;
	if (n == 0)
		return;
	unsigned lo = model == MX_MODEL_LAST ? n - 1 : 0;
	unsigned hi = model == MX_MODEL_FIRST ? 1 : n;
	/* Each distinct key gets its touches' share in one step (m of the
	 * n touches: A * m / n), so a row credited by every touch gets A
	 * exactly, not a sum of n rounded thirds. */
	for (int k = 0; k < 3; k++) {
		for (unsigned i = lo; i < hi; i++) {
			funnel_str key = touch_key(&f->touch[i], k);
			unsigned j, m = 0;
			for (j = lo; j < i && !str_eq(touch_key(&f->touch[j], k), key); j++)
				;
			if (j < i)
				continue;    /* credited with its first touch */
			for (j = i; j < hi; j++)
				m += str_eq(touch_key(&f->touch[j], k), key);
			group *g = gmap_get(&a->attr[k], key, none, none, none);
			if (g == NULL)
				return;
			g->v[what] += f->amount * (double)m / (double)(hi - lo);
			g->v[what == AT_PIPELINE ? AT_OPPS : AT_WON] += (double)m / (double)(hi - lo);
		}
	}
}

static void
follow(agg *a, gmap *m, funnel_str k1, funnel_str k2, const mx_fact *f)
{
	group *g = gmap_get(m, k1, k2, none, none);
	if (g == NULL)
		return;
	if (f->kind == MX_F_SLA) {
		g->v[FU_SLA]++;
		return;
	}
	g->v[FU_ASSIGNED]++;
	if (f->contact_delay) {
		uint64_t d = f->contact_delay - 1;
		g->v[FU_CONTACTED]++;
		g->v[FU_W5M] += d <= 300 * NS_PER_S;
		g->v[FU_W1H] += d <= 3600 * NS_PER_S;
		g->v[FU_W24H] += d <= 86400 * NS_PER_S;
		if (vec_push(&g->d, d) != 0)
			m->oom = 1;
	}
	(void)a;
}

/* Whether the report prints section r (the summary prints them all):
 * the scan skips the groupings nobody will read.  The headline figures
 * (the previous period's) need the follow-up totals only. */
static int
wants(const mx_query *q, int r)
{
	if (q->headline)
		return r == MX_R_FOLLOWUP;
	return q->report == MX_R_SUMMARY || q->report == r;
}

/* A stage change made while the lead was assigned: the rep's
 * acceptance, rejection (and its reasons), pipeline and wins. */
static int
rep_stage(agg *a, const mx_fact *f)
{
	group *g = gmap_get(&a->reps, f->owner, f->team, none, none);
	if (g == NULL)
		return -1;
	g->v[FU_ACCEPTED] += f->ev == FP_EV_ACCEPTED;
	g->v[FU_REJECTED] += f->ev == FP_EV_REJECTED;
	if (f->ev == FP_EV_OPP_OPENED) {
		g->v[FU_PIPELINE] += f->amount;
		g->v[FU_OPPS]++;
	} else if (f->ev == FP_EV_DEAL_WON) {
		g->v[FU_REVENUE] += f->amount;
		g->v[FU_WON]++;
	}
	if (mx_closed_loop(f->ev)) {
		funnel_str ev = fs(fp_evspec_get((fp_evtype)f->ev)->name);
		group *r = gmap_get(&a->rep_reasons, f->owner, f->team, ev, f->reason);
		if (r == NULL)
			return -1;
		r->v[0]++;
	}
	return 0;
}

static int
add_fact(agg *a, const mx_query *q, uint64_t ts, const mx_fact *f)
{
	int oom = 0;
	if (f->kind == MX_F_ASSIGN || f->kind == MX_F_SLA) {
		if (!wants(q, MX_R_FOLLOWUP))
			return 0;
		if (f->kind == MX_F_SLA) {
			a->sla++;
		} else {
			a->assigned++;
			if (f->contact_delay) {
				uint64_t d = f->contact_delay - 1;
				a->contacted++;
				a->within[0] += d <= 300 * NS_PER_S;
				a->within[1] += d <= 3600 * NS_PER_S;
				a->within[2] += d <= 86400 * NS_PER_S;
				oom |= vec_push(&a->delay, d);
			}
		}
		follow(a, &a->teams, f->team, none, f);
		follow(a, &a->reps, f->owner, f->team, f);
		return oom;
	}
	if (f->kind != MX_F_STAGE)
		return 0;
	if (wants(q, MX_R_FOLLOWUP) && !q->headline && (f->owner.len || f->team.len))
		oom |= rep_stage(a, f);
	a->entries[f->to]++;
	a->by_ev[f->ev < FP_EV_COUNT ? f->ev : 0]++;
	if (f->from != FP_STAGE_NONE && wants(q, MX_R_VELOCITY))
		oom |= vec_push(&a->in_stage[f->from], f->dur);
	group *g = NULL;
	if (wants(q, MX_R_FUNNEL) || wants(q, MX_R_CLOSED_LOOP))
		g = gmap_get(&a->srccamp, f->source, f->campaign, none, none);
	if (g) {
		g->v[SC_ENTRIES + f->to]++;
		g->v[SC_ACCEPTED] += f->ev == FP_EV_ACCEPTED;
		g->v[SC_REJECTED] += f->ev == FP_EV_REJECTED;
	}
	if (mx_closed_loop(f->ev) && wants(q, MX_R_CLOSED_LOOP)) {
		funnel_str ev = fs(fp_evspec_get((fp_evtype)f->ev)->name);
		if ((g = gmap_get(&a->reasons, ev, f->reason, none, none)) != NULL)
			g->v[0]++;
		if ((g = gmap_get(&a->reasons_by, ev, f->reason, f->source, f->campaign)) != NULL)
			g->v[0]++;
	}
	if (f->ev == FP_EV_OPP_OPENED) {
		a->pipeline += f->amount;
		if (wants(q, MX_R_ATTRIBUTION))
			credit(a, f, q->model, AT_PIPELINE);
	} else if (f->ev == FP_EV_DEAL_WON) {
		a->revenue += f->amount;
		if (wants(q, MX_R_VELOCITY))
			oom |= vec_push(&a->to_won, f->since_capture);
		if (wants(q, MX_R_ATTRIBUTION))
			credit(a, f, q->model, AT_REVENUE);
	}
	if (!wants(q, MX_R_TREND))
		return oom;
	uint64_t b = bucket_start(ts, q->bucket);
	if (a->last_trend == NULL || b != a->last_bucket) {
		char bk[24];
		snprintf(bk, sizeof bk, "%020" PRIu64, b);
		a->last_trend = gmap_get(&a->trend, fs(bk), none, none, none);
		a->last_bucket = b;
	}
	if (a->last_trend)
		a->last_trend->v[f->to]++;
	return oom;
}

static int
in_window(const mx_query *q, uint64_t ts)
{
	return ts != 0 && ts >= q->from && (q->to == 0 || ts < q->to);
}

static void
add_lead(agg *a, const mx_query *q, const mx_lead *l)
{
	a->balance[l->stage]++;
	for (int i = 0; i < NPAIRS; i++) {
		uint64_t t = l->first_entry[pairs[i].from];
		if (!in_window(q, t))
			continue;
		a->cohort_in[i]++;
		a->cohort_on[i] += l->first_entry[pairs[i].to] >= t;
	}
	uint64_t t = l->first_entry[FP_STAGE_SQL];
	if (in_window(q, t)) {
		a->cohort_sql++;
		if (l->first_entry[FP_STAGE_WON] >= t)
			a->cohort_won++;
		else if (l->first_entry[FP_STAGE_LOST] >= t)
			a->cohort_lost++;
	}
}

static int
needs_leads(int r)
{
	return r == MX_R_SUMMARY || r == MX_R_FUNNEL || r == MX_R_CONVERSION;
}

static int
fill(MDB_txn *txn, const mx_tables *t, const mx_query *q, agg *a)
{
	MDB_cursor *c = NULL;
	MDB_val k, v;
	uint8_t start[16] = { 0 };
	int rc, oom = 0;

	rf_put_be64(start, q->from);
	if (mdb_cursor_open(txn, t->facts, &c) != 0)
		return FUNNEL_ESTORAGE;
	k.mv_size = 16;
	k.mv_data = start;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 && !oom;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		mx_fact f;
		if (k.mv_size != 16)
			continue;
		uint64_t ts = rf_get_be64(k.mv_data);
		if (q->to && ts >= q->to)
			break;
		if (mx_fact_decode(v.mv_data, v.mv_size, &f) != FUNNEL_OK)
			continue;
		if (!str_is(f.source, q->source) || !str_is(f.campaign, q->campaign) ||
		    !str_is(f.owner, q->rep) || !team_is(f.team, q->team))
			continue;
		oom |= add_fact(a, q, ts, &f);
	}
	mdb_cursor_close(c);
	if (rc != 0 && rc != MDB_NOTFOUND && !oom)
		return FUNNEL_ESTORAGE;
	if (!oom && needs_leads(q->report) && !q->headline) {
		if (mdb_cursor_open(txn, t->leads, &c) != 0)
			return FUNNEL_ESTORAGE;
		for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
		     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
			mx_lead l;
			if (mx_lead_decode(v.mv_data, v.mv_size, &l) != FUNNEL_OK)
				continue;
			if (q->source || q->campaign) {
				funnel_str s = l.n_touches ? l.touch[0].source : none;
				funnel_str cp = l.n_touches ? l.touch[0].campaign : none;
				if (!str_is(s, q->source) || !str_is(cp, q->campaign))
					continue;
			}
			if (!str_is(l.owner, q->rep) || !team_is(l.team, q->team))
				continue;
			add_lead(a, q, &l);
		}
		mdb_cursor_close(c);
		if (rc != MDB_NOTFOUND)
			return FUNNEL_ESTORAGE;
	}
	for (int s = 0; s < FP_STAGE_COUNT; s++)
		if (a->in_stage[s].n)
			qsort(a->in_stage[s].v, a->in_stage[s].n, sizeof(uint64_t), cmp_u64);
	if (a->to_won.n)
		qsort(a->to_won.v, a->to_won.n, sizeof(uint64_t), cmp_u64);
	if (a->delay.n)
		qsort(a->delay.v, a->delay.n, sizeof(uint64_t), cmp_u64);
	gmap *maps[] = { &a->srccamp, &a->reasons, &a->reasons_by, &a->teams, &a->reps,
	                 &a->rep_reasons, &a->attr[0], &a->attr[1], &a->attr[2], &a->trend };
	for (size_t i = 0; i < sizeof maps / sizeof maps[0]; i++) {
		oom |= maps[i]->oom;
		gmap_sort(maps[i]);
		for (size_t j = 0; j < maps[i]->n; j++) {
			vec *d = &maps[i]->items[j]->d;
			if (d->n)
				qsort(d->v, d->n, sizeof(uint64_t), cmp_u64);
		}
	}
	return oom ? FUNNEL_ENOMEM : FUNNEL_OK;
}

/* ---- JSON ---- */

void
mx_json_u64(cJSON *o, const char *name, uint64_t v)
{
	char digits[24];
	snprintf(digits, sizeof digits, "%" PRIu64, v);
	cJSON_AddRawToObject(o, name, digits);
}

/* A figure: a whole number (a count, an amount in whole units) is
 * written as its digits, exactly, as far as 2^63; anything else (a
 * rate, a share under linear attribution, seconds) as cJSON writes a
 * double. */
static void
add_num(cJSON *o, const char *name, double x)
{
	if (x == floor(x) && fabs(x) < 9223372036854775808.0) {
		char digits[32];
		snprintf(digits, sizeof digits, "%.0f", x == 0 ? 0.0 : x);
		cJSON_AddRawToObject(o, name, digits);
	} else {
		cJSON_AddNumberToObject(o, name, x);
	}
}

static void
add_rate(cJSON *o, const char *name, double num, double den)
{
	if (den > 0)
		add_num(o, name, num / den);
	else
		cJSON_AddNullToObject(o, name);
}

/* {"n", "median_s", "p90_s"} of a sorted vector (null when empty). */
static cJSON *
durations(const vec *d)
{
	cJSON *o = cJSON_CreateObject();
	add_num(o, "n", (double)d->n);
	if (d->n) {
		add_num(o, "median_s", (double)rank(d, 0.5) / 1e9);
		add_num(o, "p90_s", (double)rank(d, 0.9) / 1e9);
	} else {
		cJSON_AddNullToObject(o, "median_s");
		cJSON_AddNullToObject(o, "p90_s");
	}
	return o;
}

static void
add_time(cJSON *o, const char *name, uint64_t ns)
{
	if (ns == 0) {
		cJSON_AddNullToObject(o, name);
		return;
	}
	mx_json_u64(o, name, ns);
}

static cJSON *
window_json(const mx_query *q)
{
	cJSON *w = cJSON_CreateObject();
	add_time(w, "from", q->from);
	add_time(w, "to", q->to);
	if (q->source)
		cJSON_AddStringToObject(w, "source", q->source);
	else
		cJSON_AddNullToObject(w, "source");
	if (q->campaign)
		cJSON_AddStringToObject(w, "campaign", q->campaign);
	else
		cJSON_AddNullToObject(w, "campaign");
	return w;
}

static cJSON *
funnel_json(const agg *a)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *st = cJSON_AddArrayToObject(o, "stages");
	for (int i = 0; i < NSHOWN; i++) {
		cJSON *s = cJSON_CreateObject();
		cJSON_AddStringToObject(s, "stage", fp_stage_name(shown[i]));
		add_num(s, "entered", a->entries[shown[i]]);
		add_num(s, "now", a->balance[shown[i]]);
		cJSON_AddItemToArray(st, s);
	}
	cJSON *bs = cJSON_AddArrayToObject(o, "by_source");
	for (size_t i = 0; i < a->srccamp.n; i++) {
		const group *g = a->srccamp.items[i];
		cJSON *r = cJSON_CreateObject();
		cJSON_AddStringToObject(r, "source", g->k[0]);
		cJSON_AddStringToObject(r, "campaign", g->k[1]);
		for (int j = 0; j < NSHOWN - 1; j++)
			add_num(r, fp_stage_name(shown[j]), g->v[SC_ENTRIES + shown[j]]);
		cJSON_AddItemToArray(bs, r);
	}
	return o;
}

static cJSON *
conversion_json(const agg *a)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *per = cJSON_AddObjectToObject(o, "period");
	cJSON *coh = cJSON_AddObjectToObject(o, "cohort");
	for (int i = 0; i < NPAIRS; i++) {
		cJSON *p = cJSON_AddObjectToObject(per, pairs[i].name);
		add_num(p, "from_entries", a->entries[pairs[i].from]);
		add_num(p, "to_entries", a->entries[pairs[i].to]);
		add_rate(p, "rate", a->entries[pairs[i].to], a->entries[pairs[i].from]);
		cJSON *c = cJSON_AddObjectToObject(coh, pairs[i].name);
		add_num(c, "entered", a->cohort_in[i]);
		add_num(c, "went_on", a->cohort_on[i]);
		add_rate(c, "rate", a->cohort_on[i], a->cohort_in[i]);
	}
	cJSON *w = cJSON_AddObjectToObject(per, "win_rate");
	add_num(w, "won", a->entries[FP_STAGE_WON]);
	add_num(w, "lost", a->entries[FP_STAGE_LOST]);
	add_rate(w, "rate", a->entries[FP_STAGE_WON],
	         a->entries[FP_STAGE_WON] + a->entries[FP_STAGE_LOST]);
	w = cJSON_AddObjectToObject(coh, "win_rate");
	add_num(w, "entered", a->cohort_sql);
	add_num(w, "won", a->cohort_won);
	add_num(w, "lost", a->cohort_lost);
	add_rate(w, "rate", a->cohort_won, a->cohort_won + a->cohort_lost);
	return o;
}

static cJSON *
velocity_json(const agg *a)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *st = cJSON_AddObjectToObject(o, "time_in_stage");
	for (int i = 0; i < NSHOWN; i++) {
		fp_stage s = shown[i];
		if (s == FP_STAGE_WON || s == FP_STAGE_ERASED || s == FP_STAGE_DISQUALIFIED)
			continue;
		cJSON_AddItemToObject(st, fp_stage_name(s), durations(&a->in_stage[s]));
	}
	cJSON_AddItemToObject(o, "capture_to_won", durations(&a->to_won));
	return o;
}

static void
follow_row(cJSON *r, const group *g)
{
	add_num(r, "assignments", g->v[FU_ASSIGNED]);
	add_num(r, "contacted", g->v[FU_CONTACTED]);
	cJSON_AddItemToObject(r, "speed_to_lead", durations(&g->d));
	add_rate(r, "within_5m", g->v[FU_W5M], g->v[FU_ASSIGNED]);
	add_rate(r, "within_1h", g->v[FU_W1H], g->v[FU_ASSIGNED]);
	add_rate(r, "within_24h", g->v[FU_W24H], g->v[FU_ASSIGNED]);
	add_num(r, "sla_breaches", g->v[FU_SLA]);
}

/* A team as the reports show it: MX_NO_TEAM for none. */
static const char *
team_name(const char *team)
{
	return team[0] != '\0' ? team : MX_NO_TEAM;
}

static cJSON *
followup_json(const agg *a)
{
	cJSON *o = cJSON_CreateObject();
	add_num(o, "assignments", a->assigned);
	add_num(o, "contacted", a->contacted);
	cJSON_AddItemToObject(o, "speed_to_lead", durations(&a->delay));
	add_rate(o, "within_5m", a->within[0], a->assigned);
	add_rate(o, "within_1h", a->within[1], a->assigned);
	add_rate(o, "within_24h", a->within[2], a->assigned);
	add_num(o, "sla_breaches", a->sla);
	cJSON *teams = cJSON_AddArrayToObject(o, "teams");
	for (size_t i = 0; i < a->teams.n; i++) {
		cJSON *r = cJSON_CreateObject();
		cJSON_AddStringToObject(r, "team", team_name(a->teams.items[i]->k[0]));
		follow_row(r, a->teams.items[i]);
		cJSON_AddItemToArray(teams, r);
	}
	cJSON *reps = cJSON_AddArrayToObject(o, "reps");
	size_t k = 0;     /* rep_reasons is sorted like reps: (owner, team) first */
	for (size_t i = 0; i < a->reps.n; i++) {
		const group *g = a->reps.items[i];
		cJSON *r = cJSON_CreateObject();
		cJSON_AddStringToObject(r, "owner", g->k[0]);
		cJSON_AddStringToObject(r, "team", team_name(g->k[1]));
		follow_row(r, g);
		add_num(r, "accepted", g->v[FU_ACCEPTED]);
		add_num(r, "rejected", g->v[FU_REJECTED]);
		add_rate(r, "acceptance_rate", g->v[FU_ACCEPTED], g->v[FU_ACCEPTED] + g->v[FU_REJECTED]);
		add_rate(r, "rejection_rate", g->v[FU_REJECTED], g->v[FU_ACCEPTED] + g->v[FU_REJECTED]);
		add_num(r, "pipeline", g->v[FU_PIPELINE]);
		add_num(r, "opportunities", g->v[FU_OPPS]);
		add_num(r, "won", g->v[FU_WON]);
		add_num(r, "revenue", g->v[FU_REVENUE]);
		cJSON *rs = cJSON_AddArrayToObject(r, "reasons");
		while (k < a->rep_reasons.n) {
			const group *x = a->rep_reasons.items[k];
			int c = strcmp(x->k[0], g->k[0]);
			if (c == 0)
				c = strcmp(x->k[1], g->k[1]);
			if (c > 0)
				break;
			k++;
			if (c < 0)
				continue;
			cJSON *e = cJSON_CreateObject();
			cJSON_AddStringToObject(e, "event", x->k[2]);
			cJSON_AddStringToObject(e, "reason", x->k[3]);
			add_num(e, "count", x->v[0]);
			cJSON_AddItemToArray(rs, e);
		}
		cJSON_AddItemToArray(reps, r);
	}
	return o;
}

static cJSON *
closed_loop_json(const agg *a)
{
	cJSON *o = cJSON_CreateObject();
	double acc = a->by_ev[FP_EV_ACCEPTED], rej = a->by_ev[FP_EV_REJECTED];
	double rec = a->by_ev[FP_EV_RECYCLED];
	add_num(o, "mql_entries", a->entries[FP_STAGE_MQL]);
	add_num(o, "accepted", acc);
	add_num(o, "rejected", rej);
	add_num(o, "recycled", rec);
	add_num(o, "disqualified", a->by_ev[FP_EV_DISQUALIFIED]);
	add_num(o, "lost", a->by_ev[FP_EV_DEAL_LOST]);
	add_rate(o, "rejection_rate", rej, acc + rej);
	add_rate(o, "recycle_rate", rec, a->entries[FP_STAGE_MQL]);
	cJSON *rs = cJSON_AddArrayToObject(o, "reasons");
	for (size_t i = 0; i < a->reasons.n; i++) {
		const group *g = a->reasons.items[i];
		cJSON *r = cJSON_CreateObject();
		cJSON_AddStringToObject(r, "event", g->k[0]);
		cJSON_AddStringToObject(r, "reason", g->k[1]);
		add_num(r, "count", g->v[0]);
		cJSON_AddItemToArray(rs, r);
	}
	cJSON *bs = cJSON_AddArrayToObject(o, "by_source");
	for (size_t i = 0; i < a->srccamp.n; i++) {
		const group *g = a->srccamp.items[i];
		double gacc = g->v[SC_ACCEPTED], grej = g->v[SC_REJECTED];
		double gmql = g->v[SC_ENTRIES + FP_STAGE_MQL];
		cJSON *r = cJSON_CreateObject();
		cJSON_AddStringToObject(r, "source", g->k[0]);
		cJSON_AddStringToObject(r, "campaign", g->k[1]);
		add_num(r, "mql_entries", gmql);
		add_num(r, "accepted", gacc);
		add_num(r, "rejected", grej);
		add_num(r, "recycled", g->v[SC_ENTRIES + FP_STAGE_NURTURE] - grej);
		add_rate(r, "rejection_rate", grej, gacc + grej);
		add_rate(r, "recycle_rate", g->v[SC_ENTRIES + FP_STAGE_NURTURE] - grej, gmql);
		cJSON_AddItemToArray(bs, r);
	}
	cJSON *rb = cJSON_AddArrayToObject(o, "reasons_by_source");
	for (size_t i = 0; i < a->reasons_by.n; i++) {
		const group *g = a->reasons_by.items[i];
		cJSON *r = cJSON_CreateObject();
		cJSON_AddStringToObject(r, "event", g->k[0]);
		cJSON_AddStringToObject(r, "reason", g->k[1]);
		cJSON_AddStringToObject(r, "source", g->k[2]);
		cJSON_AddStringToObject(r, "campaign", g->k[3]);
		add_num(r, "count", g->v[0]);
		cJSON_AddItemToArray(rb, r);
	}
	return o;
}

static cJSON *
attribution_json(const agg *a, int model)
{
	static const char *const models[] = { "first", "last", "linear" };
	static const char *const dims[] = { "source", "campaign", "form" };
	static const char *const lists[] = { "by_source", "by_campaign", "by_form" };
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "model", models[model]);
	add_num(o, "pipeline", a->pipeline);
	add_num(o, "revenue", a->revenue);
	add_num(o, "opportunities", a->by_ev[FP_EV_OPP_OPENED]);
	add_num(o, "won", a->by_ev[FP_EV_DEAL_WON]);
	for (int d = 0; d < 3; d++) {
		cJSON *arr = cJSON_AddArrayToObject(o, lists[d]);
		for (size_t i = 0; i < a->attr[d].n; i++) {
			const group *g = a->attr[d].items[i];
			cJSON *r = cJSON_CreateObject();
			cJSON_AddStringToObject(r, dims[d], g->k[0]);
			add_num(r, "pipeline", g->v[AT_PIPELINE]);
			add_num(r, "revenue", g->v[AT_REVENUE]);
			add_num(r, "opportunities", g->v[AT_OPPS]);
			add_num(r, "won", g->v[AT_WON]);
			cJSON_AddItemToArray(arr, r);
		}
	}
	return o;
}

static cJSON *
trend_json(const agg *a, int bucket)
{
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "bucket", bucket == MX_BUCKET_WEEK ? "week" : "day");
	cJSON *arr = cJSON_AddArrayToObject(o, "series");
	for (size_t i = 0; i < a->trend.n; i++) {
		const group *g = a->trend.items[i];
		uint64_t ns = strtoull(g->k[0], NULL, 10);
		time_t t = (time_t)(ns / NS_PER_S);
		struct tm tm;
		char day[16];
		gmtime_r(&t, &tm);
		strftime(day, sizeof day, "%Y-%m-%d", &tm);
		cJSON *r = cJSON_CreateObject();
		cJSON_AddStringToObject(r, "start", day);
		mx_json_u64(r, "start_ns", ns);
		cJSON *e = cJSON_AddObjectToObject(r, "entered");
		for (int j = 0; j < NSHOWN; j++)
			add_num(e, fp_stage_name(shown[j]), g->v[shown[j]]);
		cJSON_AddItemToArray(arr, r);
	}
	return o;
}

/* The figures the dashboard compares with the previous period. */
static cJSON *
headline_json(const agg *a)
{
	cJSON *o = cJSON_CreateObject();
	static const fp_stage st[] = { FP_STAGE_INQUIRY, FP_STAGE_MQL, FP_STAGE_SAL, FP_STAGE_SQL,
	                               FP_STAGE_WON, FP_STAGE_LOST, FP_STAGE_DISQUALIFIED };
	for (size_t i = 0; i < sizeof st / sizeof st[0]; i++)
		add_num(o, fp_stage_name(st[i]), a->entries[st[i]]);
	add_rate(o, "win_rate", a->entries[FP_STAGE_WON],
	         a->entries[FP_STAGE_WON] + a->entries[FP_STAGE_LOST]);
	add_rate(o, "mql_to_sal", a->entries[FP_STAGE_SAL], a->entries[FP_STAGE_MQL]);
	add_num(o, "pipeline", a->pipeline);
	add_num(o, "revenue", a->revenue);
	double acc = a->by_ev[FP_EV_ACCEPTED], rej = a->by_ev[FP_EV_REJECTED];
	add_rate(o, "rejection_rate", rej, acc + rej);
	add_rate(o, "recycle_rate", a->by_ev[FP_EV_RECYCLED], a->entries[FP_STAGE_MQL]);
	add_num(o, "assignments", a->assigned);
	if (a->delay.n)
		add_num(o, "speed_to_lead_median_s", (double)rank(&a->delay, 0.5) / 1e9);
	else
		cJSON_AddNullToObject(o, "speed_to_lead_median_s");
	add_rate(o, "within_5m", a->within[0], a->assigned);
	add_rate(o, "within_1h", a->within[1], a->assigned);
	add_num(o, "sla_breaches", a->sla);
	return o;
}

/* The last rules.changed of each service, from the index. */
static cJSON *
rules_json(MDB_txn *txn, const mx_tables *t)
{
	cJSON *arr = cJSON_CreateArray();
	MDB_cursor *c;
	MDB_val k = { 1, "R" }, v;
	if (mdb_cursor_open(txn, t->index, &c) != 0)
		return arr;
	for (int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
	     rc == 0 && k.mv_size >= 1 && ((const char *)k.mv_data)[0] == MX_IX_RULES;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		uint64_t seq, ts;
		funnel_str ver, hash;
		if (mx_rules_decode(v.mv_data, v.mv_size, &seq, &ts, &ver, &hash) != FUNNEL_OK)
			continue;
		cJSON *r = cJSON_CreateObject();
		char name[256];
		size_t n = k.mv_size - 1 < sizeof name - 1 ? k.mv_size - 1 : sizeof name - 1;
		memcpy(name, (const char *)k.mv_data + 1, n);
		name[n] = 0;
		cJSON_AddStringToObject(r, "service", name);
		char *vs = strndup(ver.ptr ? ver.ptr : "", ver.len), *hs = strndup(hash.ptr ? hash.ptr : "", hash.len);
		cJSON_AddStringToObject(r, "version", vs ? vs : "");
		cJSON_AddStringToObject(r, "hash", hs ? hs : "");
		free(vs);
		free(hs);
		mx_json_u64(r, "seq", seq);
		mx_json_u64(r, "ts", ts);
		cJSON_AddItemToArray(arr, r);
	}
	mdb_cursor_close(c);
	return arr;
}

/* /api/values: the non-empty sources, campaigns, teams and reps seen. */
static cJSON *
values_json(MDB_txn *txn, const mx_tables *t)
{
	static const struct { char kind; const char *name; } lists[] = {
		{ MX_VAL_SOURCE, "sources" }, { MX_VAL_CAMPAIGN, "campaigns" },
		{ MX_VAL_TEAM, "teams" }, { MX_VAL_REP, "reps" },
	};
	cJSON *o = cJSON_CreateObject();
	MDB_cursor *c;
	if (mdb_cursor_open(txn, t->index, &c) != 0)
		return o;
	for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
		cJSON *arr = cJSON_AddArrayToObject(o, lists[i].name);
		char pre[2] = { MX_IX_VALUE, lists[i].kind };
		MDB_val k = { 2, pre }, v;
		for (int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
		     rc == 0 && k.mv_size >= 2 && memcmp(k.mv_data, pre, 2) == 0;
		     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
			char name[MX_STR_MAX + 1];
			size_t n = k.mv_size - 2 > MX_STR_MAX ? MX_STR_MAX : k.mv_size - 2;
			memcpy(name, (const char *)k.mv_data + 2, n);
			name[n] = 0;
			cJSON_AddItemToArray(arr, cJSON_CreateString(name));
		}
	}
	mdb_cursor_close(c);
	return o;
}

static void
add_strn(cJSON *o, const char *name, funnel_str s)
{
	char buf[256];
	size_t n = s.ptr && s.len < sizeof buf ? s.len : 0;
	if (n)
		memcpy(buf, s.ptr, n);
	buf[n] = 0;
	cJSON_AddStringToObject(o, name, buf);
}

/* "team": the assignment's team, MX_NO_TEAM for none. */
static void
add_team(cJSON *o, funnel_str team)
{
	if (team.len == 0)
		cJSON_AddStringToObject(o, "team", MX_NO_TEAM);
	else
		add_strn(o, "team", team);
}

/* /api/leads: one page of the index's list for the kind and window, the
 * facts' labels filtered as the reports filter them.  Reads the entries
 * before the page (to skip them) and the page, never the whole view. */
static int
leads_json(MDB_txn *txn, const mx_tables *t, const mx_query *q, cJSON *o)
{
	uint8_t start[MX_IX_KEY];
	MDB_cursor *c;
	MDB_val k, v;
	unsigned page = q->page ? q->page : 1;
	size_t skip = (size_t)(page - 1) * MX_PAGE_SIZE, taken = 0;
	int more = 0, rc;

	if (q->list <= FP_STAGE_NONE) {
		cJSON_AddStringToObject(o, "stage", "");
		cJSON_AddArrayToObject(o, "leads");
		return FUNNEL_OK;
	}
	cJSON_AddStringToObject(o, "stage", q->list == MX_IX_ASSIGNED ? "assigned" :
	                        q->list == MX_IX_SLA ? "sla_breached" : fp_stage_name(q->list));
	add_num(o, "page", page);
	add_num(o, "page_size", MX_PAGE_SIZE);
	cJSON *arr = cJSON_AddArrayToObject(o, "leads");
	mx_index_key(start, (uint8_t)q->list, q->from, 0);
	if (mdb_cursor_open(txn, t->index, &c) != 0)
		return FUNNEL_ESTORAGE;
	k.mv_size = sizeof start;
	k.mv_data = start;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		const uint8_t *kb = k.mv_data;
		if (k.mv_size != MX_IX_KEY || kb[0] != MX_IX_LIST || kb[1] != (uint8_t)q->list)
			break;
		uint64_t ts = rf_get_be64(kb + 2);
		if (q->to && ts >= q->to)
			break;
		MDB_val fk = { 16, (void *)(kb + 2) }, fv;
		mx_fact f;
		if (mdb_get(txn, t->facts, &fk, &fv) != 0 ||
		    mx_fact_decode(fv.mv_data, fv.mv_size, &f) != FUNNEL_OK)
			continue;
		if (!str_is(f.source, q->source) || !str_is(f.campaign, q->campaign) ||
		    !str_is(f.owner, q->rep) || !team_is(f.team, q->team) ||
		    !str_is(f.reason, q->reason))
			continue;
		if (skip) {
			skip--;
			continue;
		}
		if (taken == MX_PAGE_SIZE) {
			more = 1;
			break;
		}
		taken++;
		cJSON *r = cJSON_CreateObject();
		char id[256];
		size_t n = v.mv_size < sizeof id ? v.mv_size : sizeof id - 1;
		memcpy(id, v.mv_data, n);
		id[n] = 0;
		cJSON_AddStringToObject(r, "lead", id);
		mx_json_u64(r, "ts", ts);
		mx_json_u64(r, "seq", rf_get_be64(kb + 10));
		cJSON_AddStringToObject(r, "event", fp_evspec_get((fp_evtype)(f.ev < FP_EV_COUNT ? f.ev : 0))->name);
		cJSON_AddStringToObject(r, "from", fp_stage_name(f.from));
		add_strn(r, "source", f.source);
		add_strn(r, "campaign", f.campaign);
		add_strn(r, "owner", f.owner);
		add_team(r, f.team);
		add_strn(r, "reason", f.reason);
		if (f.ev == FP_EV_OPP_OPENED || f.ev == FP_EV_DEAL_WON)
			add_num(r, "amount", f.amount);
		MDB_val lk = { n, id }, lv;
		mx_lead l;
		if (mdb_get(txn, t->leads, &lk, &lv) == 0 &&
		    mx_lead_decode(lv.mv_data, lv.mv_size, &l) == FUNNEL_OK)
			cJSON_AddStringToObject(r, "stage_now", fp_stage_name(l.stage));
		cJSON_AddItemToArray(arr, r);
	}
	mdb_cursor_close(c);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return FUNNEL_ESTORAGE;
	cJSON_AddBoolToObject(o, "more", more);
	return FUNNEL_OK;
}

int
mx_lead_json(MDB_txn *txn, const mx_tables *t, const char *id, cJSON *o)
{
	MDB_val k = { strlen(id), (void *)id }, v;
	mx_lead l;
	if (mdb_get(txn, t->leads, &k, &v) != 0 || mx_lead_decode(v.mv_data, v.mv_size, &l) != FUNNEL_OK)
		return FUNNEL_ENOTFOUND;
	cJSON *w = cJSON_AddObjectToObject(o, "view");
	cJSON_AddStringToObject(w, "stage", fp_stage_name(l.stage));
	add_time(w, "captured_ts", l.captured_ts);
	add_time(w, "entered_ts", l.entered_ts);
	cJSON *fe = cJSON_AddObjectToObject(w, "first_entry");
	for (int i = 0; i < NSHOWN; i++)
		if (l.first_entry[shown[i]])
			mx_json_u64(fe, fp_stage_name(shown[i]), l.first_entry[shown[i]]);
	cJSON *tt = cJSON_AddArrayToObject(w, "touches");
	for (unsigned i = 0; i < l.n_touches; i++) {
		cJSON *x = cJSON_CreateObject();
		add_strn(x, "source", l.touch[i].source);
		add_strn(x, "campaign", l.touch[i].campaign);
		add_strn(x, "form", l.touch[i].form);
		cJSON_AddItemToArray(tt, x);
	}
	if (l.assigned_seq == 0) {
		cJSON_AddNullToObject(w, "assignment");
		return FUNNEL_OK;
	}
	cJSON *as = cJSON_AddObjectToObject(w, "assignment");
	add_strn(as, "owner", l.owner);
	add_team(as, l.team);
	mx_json_u64(as, "ts", l.assigned_ts);
	mx_json_u64(as, "seq", l.assigned_seq);
	/* the SLA clock: assignment to first contact (null: still running) */
	uint8_t fk[16];
	rf_put_be64(fk, l.assigned_ts);
	rf_put_be64(fk + 8, l.assigned_seq);
	MDB_val kk = { 16, fk }, fv;
	mx_fact f;
	if (mdb_get(txn, t->facts, &kk, &fv) == 0 && mx_fact_decode(fv.mv_data, fv.mv_size, &f) == FUNNEL_OK &&
	    f.contact_delay)
		add_num(as, "first_contact_s", (double)(f.contact_delay - 1) / 1e9);
	else
		cJSON_AddNullToObject(as, "first_contact_s");
	return FUNNEL_OK;
}

uint64_t
mx_checkpoint(MDB_txn *txn, const mx_tables *t)
{
	MDB_val k = { 10, "checkpoint" }, v;
	if (mdb_get(txn, t->runtime, &k, &v) != 0 || v.mv_size != 8)
		return 0;
	return rf_get_be64(v.mv_data);
}

int
mx_report(MDB_txn *txn, const mx_tables *t, const mx_query *q, cJSON **out)
{
	agg a;
	memset(&a, 0, sizeof a);
	*out = NULL;
	if (q->report == MX_R_LEADS || q->report == MX_R_VALUES) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "report", mx_report_name(q->report));
		mx_json_u64(o, "checkpoint", mx_checkpoint(txn, t));
		int rc = FUNNEL_OK;
		if (q->report == MX_R_VALUES) {
			cJSON_AddItemToObject(o, "values", values_json(txn, t));
		} else {
			cJSON_AddItemToObject(o, "window", window_json(q));
			rc = leads_json(txn, t, q, o);
		}
		if (rc != FUNNEL_OK)
			cJSON_Delete(o);
		else
			*out = o;
		return rc;
	}
	int rc = fill(txn, t, q, &a);
	if (rc != FUNNEL_OK) {
		agg_release(&a);
		return rc;
	}
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "report", mx_report_name(q->report));
	mx_json_u64(o, "checkpoint", mx_checkpoint(txn, t));
	cJSON_AddItemToObject(o, "window", window_json(q));
	switch (q->report) {
	case MX_R_FUNNEL: cJSON_AddItemToObject(o, "funnel", funnel_json(&a)); break;
	case MX_R_CONVERSION: cJSON_AddItemToObject(o, "conversion", conversion_json(&a)); break;
	case MX_R_VELOCITY: cJSON_AddItemToObject(o, "velocity", velocity_json(&a)); break;
	case MX_R_FOLLOWUP: cJSON_AddItemToObject(o, "followup", followup_json(&a)); break;
	case MX_R_CLOSED_LOOP: cJSON_AddItemToObject(o, "closed_loop", closed_loop_json(&a)); break;
	case MX_R_ATTRIBUTION:
		cJSON_AddItemToObject(o, "attribution", attribution_json(&a, q->model));
		break;
	case MX_R_TREND: cJSON_AddItemToObject(o, "trend", trend_json(&a, q->bucket)); break;
	default:
		cJSON_AddItemToObject(o, "funnel", funnel_json(&a));
		cJSON_AddItemToObject(o, "conversion", conversion_json(&a));
		cJSON_AddItemToObject(o, "velocity", velocity_json(&a));
		cJSON_AddItemToObject(o, "followup", followup_json(&a));
		cJSON_AddItemToObject(o, "closed_loop", closed_loop_json(&a));
		cJSON_AddItemToObject(o, "attribution", attribution_json(&a, q->model));
		cJSON_AddItemToObject(o, "trend", trend_json(&a, q->bucket));
		cJSON_AddItemToObject(o, "headline", headline_json(&a));
		cJSON_AddItemToObject(o, "rules", rules_json(txn, t));
		/* the period of the same length just before a closed window */
		if (q->from && q->to) {
			mx_query p = *q;
			agg b;
			memset(&b, 0, sizeof b);
			p.headline = 1;
			p.to = q->from;
			p.from = q->from > q->to - q->from ? 2 * q->from - q->to : 0;
			if (p.from == 0)
				p.from = 1;
			rc = fill(txn, t, &p, &b);
			cJSON *prev = cJSON_AddObjectToObject(o, "previous");
			cJSON *w = cJSON_AddObjectToObject(prev, "window");
			add_time(w, "from", p.from);
			add_time(w, "to", p.to);
			cJSON_AddItemToObject(prev, "headline", headline_json(&b));
			agg_release(&b);
			if (rc != FUNNEL_OK) {
				agg_release(&a);
				cJSON_Delete(o);
				return rc;
			}
		} else {
			cJSON_AddNullToObject(o, "previous");
		}
	}
	agg_release(&a);
	*out = o;
	return o ? FUNNEL_OK : FUNNEL_ENOMEM;
}

/* ---- Prometheus ---- */

static const struct metric {
	const char *name, *type, *help, *labels[2];
} metrics[] = {
	{ "funnel_assignments_total", "counter", "Leads assigned to a rep or queue, by team.",
	  { "team", NULL } },
	{ "funnel_closed_loop_total", "counter",
	  "Leads sent back or out with a reason code (rejected, recycled, disqualified, lost).",
	  { "event", "reason" } },
	{ "funnel_contacted_within_total", "counter",
	  "Assignments whose first contact came within 5m, 1h or 24h, by team.",
	  { "team", "within" } },
	{ "funnel_events_by_producer_total", "counter",
	  "Records by the principal funneld stamped as their producer (--access), and type.",
	  { "producer", "type" } },
	{ "funnel_first_contacts_total", "counter",
	  "Assignments followed by a first lead.contacted, by team.", { "team", NULL } },
	{ "funnel_leads", "gauge", "Leads in each stage now.", { "stage", NULL } },
	{ "funnel_pipeline_amount_total", "counter",
	  "Sum of opportunity.opened amounts, by the lead's first-touch source.",
	  { "source", NULL } },
	{ "funnel_revenue_amount_total", "counter",
	  "Sum of deal.won amounts, by the lead's first-touch source.", { "source", NULL } },
	{ "funnel_sla_breaches_total", "counter", "lead.sla_breached events, by team and rep.",
	  { "team", "owner" } },
	{ "funnel_stage_entries_total", "counter",
	  "Leads entering each stage, by the lead's first-touch source.", { "stage", "source" } },
};

typedef struct sbuf {
	char *p;
	size_t n, cap;
	int oom;
} sbuf;

static void
sb_add(sbuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 4096;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (p == NULL) {
			b->oom = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

static void
sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#include <stdarg.h>
static void
sb_printf(sbuf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n > 0)
		sb_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A label value with \, " and newline escaped. */
static void
sb_label(sbuf *b, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\\')
			sb_add(b, "\\\\", 2);
		else if (s[i] == '"')
			sb_add(b, "\\\"", 2);
		else if (s[i] == '\n')
			sb_add(b, "\\n", 2);
		else
			sb_add(b, s + i, 1);
	}
}

static void
sb_value(sbuf *b, double x)
{
	if (x == floor(x) && fabs(x) < 9007199254740992.0)
		sb_printf(b, " %.0f\n", x);
	else
		sb_printf(b, " %.17g\n", x);
}

static void
sb_head(sbuf *b, const char *name, const char *type, const char *help)
{
	sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

int
mx_prometheus(MDB_txn *txn, const mx_tables *t, int head_known, uint64_t head, char **out,
              size_t *len)
{
	sbuf b = { 0 };
	MDB_cursor *c;
	MDB_val k, v;
	const struct metric *cur = NULL;
	int rc;

	*out = NULL;
	*len = 0;
	uint64_t cp = mx_checkpoint(txn, t);
	sb_head(&b, "funnel_view_checkpoint_seq", "gauge",
	        "Seq of the last log record applied to the metrics view.");
	sb_printf(&b, "funnel_view_checkpoint_seq %" PRIu64 "\n", cp);
	if (head_known) {
		sb_head(&b, "funnel_log_head_seq", "gauge", "Seq of the last record in the log.");
		sb_printf(&b, "funnel_log_head_seq %" PRIu64 "\n", head);
		sb_head(&b, "funnel_view_lag_records", "gauge",
		        "Records in the log not yet applied to the metrics view.");
		sb_printf(&b, "funnel_view_lag_records %" PRIu64 "\n", head > cp ? head - cp : 0);
	}
	if (mdb_cursor_open(txn, t->counters, &c) != 0) {
		free(b.p);
		return FUNNEL_ESTORAGE;
	}
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		const char *key = k.mv_data, *end = key + k.mv_size;
		const char *nul = memchr(key, 0, k.mv_size);
		size_t nlen = nul ? (size_t)(nul - key) : k.mv_size;
		double x;
		if (v.mv_size != 8)
			continue;
		memcpy(&x, v.mv_data, 8);
		if (cur == NULL || strlen(cur->name) != nlen || memcmp(cur->name, key, nlen) != 0) {
			cur = NULL;
			for (size_t i = 0; i < sizeof metrics / sizeof metrics[0]; i++) {
				if (strlen(metrics[i].name) == nlen && memcmp(metrics[i].name, key, nlen) == 0)
					cur = &metrics[i];
			}
			if (cur == NULL)
				continue;
			sb_head(&b, cur->name, cur->type, cur->help);
		}
		sb_add(&b, cur->name, nlen);
		const char *p = nul ? nul + 1 : end;
		for (int i = 0; i < 2 && cur->labels[i] && nul; i++) {
			const char *q = memchr(p, 0, (size_t)(end - p));
			size_t l = q ? (size_t)(q - p) : (size_t)(end - p);
			sb_printf(&b, "%s%s=\"", i ? "," : "{", cur->labels[i]);
			if (l == 0 && strcmp(cur->labels[i], "team") == 0)
				sb_add(&b, MX_NO_TEAM, strlen(MX_NO_TEAM));
			else
				sb_label(&b, p, l);
			sb_add(&b, "\"", 1);
			p = q ? q + 1 : end;
			if (i == 1 || cur->labels[i + 1] == NULL)
				sb_add(&b, "}", 1);
			else if (q == NULL) {
				sb_printf(&b, ",%s=\"\"}", cur->labels[i + 1]);
				break;
			}
		}
		sb_value(&b, x);
	}
	mdb_cursor_close(c);
	if (b.oom || (rc != MDB_NOTFOUND)) {
		free(b.p);
		return b.oom ? FUNNEL_ENOMEM : FUNNEL_ESTORAGE;
	}
	*out = b.p;
	*len = b.n;
	return FUNNEL_OK;
}

/* ---- goals (METRICS.md, "Shared goals") ---- */

typedef struct goal_state {
	int has_value;
	double value, elapsed, expected, pace;
	int has_pace;
	const char *status;
} goal_state;

/* One goal's progress at now_ns: its figure over [from, min(to, now)) of
 * its team's facts, against its target and the share of the period gone. */
static int
goal_eval(MDB_txn *txn, const mx_tables *t, const mx_goal *g, uint64_t now_ns, goal_state *s)
{
	memset(s, 0, sizeof *s);
	if (now_ns <= g->from) {
		s->status = "not started";
		s->has_value = g->figure != MX_G_ACCEPTANCE && g->figure != MX_G_SPEED;
		return FUNNEL_OK;
	}
	mx_query q = { .report = MX_R_SUMMARY, .headline = 1, .from = g->from,
	               .to = now_ns < g->to ? now_ns : g->to, .team = g->team, .list = -1 };
	agg a;
	memset(&a, 0, sizeof a);
	int rc = fill(txn, t, &q, &a);
	if (rc != FUNNEL_OK) {
		agg_release(&a);
		return rc;
	}
	double acc = a.by_ev[FP_EV_ACCEPTED], rej = a.by_ev[FP_EV_REJECTED];
	s->has_value = 1;
	switch (g->figure) {
	case MX_G_MQLS: s->value = a.entries[FP_STAGE_MQL]; break;
	case MX_G_PIPELINE: s->value = a.pipeline; break;
	case MX_G_REVENUE: s->value = a.revenue; break;
	case MX_G_ACCEPTANCE:
		s->has_value = acc + rej > 0;
		s->value = s->has_value ? acc / (acc + rej) : 0;
		break;
	default:
		s->has_value = a.delay.n > 0;
		s->value = s->has_value ? (double)rank(&a.delay, 0.5) / 1e9 / 60 : 0;
	}
	agg_release(&a);
	int over = now_ns >= g->to;
	s->elapsed = over ? 1 : (double)(now_ns - g->from) / (double)(g->to - g->from);
	if (g->figure == MX_G_MQLS || g->figure == MX_G_PIPELINE || g->figure == MX_G_REVENUE) {
		s->expected = g->target * s->elapsed;
		if (!over) {
			double days = (double)(g->to - now_ns) / (double)DAY_NS;
			s->pace = (g->target > s->value ? g->target - s->value : 0) / days;
			s->has_pace = 1;
		}
		s->status = s->value >= g->target ? "met" : over ? "missed" :
		            s->value >= s->expected ? "on track" : "behind";
	} else {
		s->expected = g->target;
		int ok = mx_goal_direction(g->figure) > 0 ? s->value >= g->target : s->value <= g->target;
		s->status = !s->has_value ? "no data" : over ? (ok ? "met" : "missed") :
		            ok ? "on track" : "behind";
	}
	return FUNNEL_OK;
}

int
mx_goals_json(MDB_txn *txn, const mx_tables *t, const mx_goals *g, uint64_t now_ns, cJSON **out)
{
	cJSON *o = cJSON_CreateObject();
	*out = NULL;
	cJSON_AddStringToObject(o, "report", "goals");
	mx_json_u64(o, "checkpoint", mx_checkpoint(txn, t));
	mx_json_u64(o, "now", now_ns);
	if (g && g->present) {
		cJSON_AddStringToObject(o, "version", g->version ? g->version : "");
		cJSON_AddStringToObject(o, "hash", g->hash_hex);
	} else {
		cJSON_AddNullToObject(o, "version");
		cJSON_AddNullToObject(o, "hash");
	}
	cJSON *arr = cJSON_AddArrayToObject(o, "goals");
	for (size_t i = 0; g && i < g->n; i++) {
		const mx_goal *x = &g->goal[i];
		goal_state s;
		int rc = goal_eval(txn, t, x, now_ns, &s);
		if (rc != FUNNEL_OK) {
			cJSON_Delete(o);
			return rc;
		}
		cJSON *r = cJSON_CreateObject();
		cJSON_AddStringToObject(r, "period", x->period);
		mx_json_u64(r, "from", x->from);
		mx_json_u64(r, "to", x->to);
		if (x->team)
			cJSON_AddStringToObject(r, "team", x->team);
		else
			cJSON_AddNullToObject(r, "team");
		cJSON_AddStringToObject(r, "figure", mx_goal_figure_name(x->figure));
		cJSON_AddStringToObject(r, "direction",
		                        mx_goal_direction(x->figure) > 0 ? "at least" : "at most");
		add_num(r, "target", x->target);
		if (s.has_value)
			add_num(r, "value", s.value);
		else
			cJSON_AddNullToObject(r, "value");
		add_num(r, "elapsed_share", s.elapsed);
		add_num(r, "expected_by_now", s.expected);
		if (s.has_pace)
			add_num(r, "pace_per_day", s.pace);
		else
			cJSON_AddNullToObject(r, "pace_per_day");
		cJSON_AddStringToObject(r, "status", s.status);
		add_num(r, "line", x->line);
		cJSON_AddItemToArray(arr, r);
	}
	*out = o;
	return FUNNEL_OK;
}

int
mx_goals_prometheus(MDB_txn *txn, const mx_tables *t, const mx_goals *g, uint64_t now_ns,
                    char **text, size_t *len)
{
	static const char *const names[3] = { "funnel_goal_target", "funnel_goal_value",
	                                      "funnel_goal_on_track" };
	static const char *const help[3] = {
		"The target of a goal of funnel.yaml's goals: section.",
		"A goal's figure so far in its period (absent without data).",
		"1 while a goal is on track or met, else 0.",
	};
	if (g == NULL || g->n == 0)
		return FUNNEL_OK;
	sbuf b = { *text, *len, *len + 1, 0 };
	goal_state *st = calloc(g->n, sizeof *st);
	if (st == NULL)
		return FUNNEL_ENOMEM;
	for (size_t i = 0; i < g->n; i++) {
		int rc = goal_eval(txn, t, &g->goal[i], now_ns, &st[i]);
		if (rc != FUNNEL_OK) {
			free(st);
			return rc;
		}
	}
	for (int m = 0; m < 3; m++) {
		sb_head(&b, names[m], "gauge", help[m]);
		for (size_t i = 0; i < g->n; i++) {
			const mx_goal *x = &g->goal[i];
			if (m == 1 && !st[i].has_value)
				continue;
			sb_printf(&b, "%s{period=\"", names[m]);
			sb_label(&b, x->period, strlen(x->period));
			sb_add(&b, "\",team=\"", 8);
			if (x->team)
				sb_label(&b, x->team, strlen(x->team));
			sb_printf(&b, "\",figure=\"%s\"}", mx_goal_figure_name(x->figure));
			double v = m == 0 ? x->target : m == 1 ? st[i].value :
			           strcmp(st[i].status, "on track") == 0 || strcmp(st[i].status, "met") == 0;
			sb_value(&b, v);
		}
	}
	free(st);
	/* the buffer may have moved, also before a failed growth */
	*text = b.p;
	*len = b.n;
	return b.oom ? FUNNEL_ENOMEM : FUNNEL_OK;
}
