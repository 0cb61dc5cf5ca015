/*
 * clients/metrics/aggregate.c - the pass over the view behind every report
 * (report.h): one range scan of the window's facts (by time) and, for the
 * stage balance and the cohorts, one pass over the leads, into an agg.
 * Grouped figures (per source, team, reason, week...) go through gmaps.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"
#include "rulesfile.h"

/* ---- the aggregate ---- */

static funnel_str
fs(const char *s)
{
	funnel_str f = { s, strlen(s) };
	return f;
}

static const funnel_str none = { "", 0 };

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
			funnel_str key = mx_touch_key(&f->touch[i], k);
			unsigned j, m = 0;
			for (j = lo; j < i && !mx_str_eq(mx_touch_key(&f->touch[j], k), key); j++)
				;
			if (j < i)
				continue;    /* credited with its first touch */
			for (j = i; j < hi; j++)
				m += mx_str_eq(mx_touch_key(&f->touch[j], k), key);
			group *g = mx_gmap_get(&a->attr[k], key, none, none, none);
			if (g == NULL)
				return;
			g->nf++;
			g->v[what] += f->amount * (double)m / (double)(hi - lo);
			g->v[what == AT_PIPELINE ? AT_OPPS : AT_WON] += (double)m / (double)(hi - lo);
		}
	}
}

static void
follow(agg *a, gmap *m, funnel_str k1, funnel_str k2, const mx_fact *f)
{
	group *g = mx_gmap_get(m, k1, k2, none, none);
	if (g == NULL)
		return;
	g->nf++;
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
		if (mx_vec_push(&g->d, d) != 0)
			m->oom = 1;
	}
	(void)a;
}

/* A stage change made while the lead was assigned: the rep's
 * acceptance, rejection (and its reasons), pipeline and wins. */
static int
rep_stage(agg *a, const mx_fact *f)
{
	group *g = mx_gmap_get(&a->reps, f->owner, f->team, none, none);
	if (g == NULL)
		return -1;
	g->nf++;
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
		group *r = mx_gmap_get(&a->rep_reasons, f->owner, f->team, ev, f->reason);
		if (r == NULL)
			return -1;
		r->v[0]++;
		r->nf++;
	}
	return 0;
}

static int
add_fact(agg *a, const mx_query *q, uint64_t ts, const mx_fact *f)
{
	int oom = 0;
	if (f->kind == MX_F_ASSIGN || f->kind == MX_F_SLA) {
		if (!mx_wants(q, MX_R_FOLLOWUP))
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
				oom |= mx_vec_push(&a->delay, d);
			}
		}
		follow(a, &a->teams, f->team, none, f);
		follow(a, &a->reps, f->owner, f->team, f);
		return oom;
	}
	if (f->kind != MX_F_STAGE)
		return 0;
	if (mx_wants(q, MX_R_FOLLOWUP) && !q->headline && (f->owner.len || f->team.len))
		oom |= rep_stage(a, f);
	a->entries[f->to]++;
	a->by_ev[f->ev < FP_EV_COUNT ? f->ev : 0]++;
	if (f->from != FP_STAGE_NONE && mx_wants(q, MX_R_VELOCITY))
		oom |= mx_vec_push(&a->in_stage[f->from], f->dur);
	group *g = NULL;
	if (mx_wants(q, MX_R_FUNNEL) || mx_wants(q, MX_R_CLOSED_LOOP))
		g = mx_gmap_get(&a->srccamp, f->source, f->campaign, none, none);
	if (g) {
		g->nf++;
		g->v[SC_ENTRIES + f->to]++;
		g->v[SC_ACCEPTED] += f->ev == FP_EV_ACCEPTED;
		g->v[SC_REJECTED] += f->ev == FP_EV_REJECTED;
	}
	if (mx_closed_loop(f->ev) && mx_wants(q, MX_R_CLOSED_LOOP)) {
		funnel_str ev = fs(fp_evspec_get((fp_evtype)f->ev)->name);
		if ((g = mx_gmap_get(&a->reasons, ev, f->reason, none, none)) != NULL) {
			g->v[0]++;
			g->nf++;
		}
		if ((g = mx_gmap_get(&a->reasons_by, ev, f->reason, f->source, f->campaign)) != NULL) {
			g->v[0]++;
			g->nf++;
		}
	}
	if (f->ev == FP_EV_OPP_OPENED) {
		a->pipeline += f->amount;
		if (mx_wants(q, MX_R_ATTRIBUTION))
			credit(a, f, q->model, AT_PIPELINE);
	} else if (f->ev == FP_EV_DEAL_WON) {
		a->revenue += f->amount;
		if (mx_wants(q, MX_R_VELOCITY))
			oom |= mx_vec_push(&a->to_won, f->since_capture);
		if (mx_wants(q, MX_R_ATTRIBUTION))
			credit(a, f, q->model, AT_REVENUE);
	}
	if (!mx_wants(q, MX_R_TREND))
		return oom;
	group *tg = mx_agg_trend(a, q, ts);
	if (tg) {
		tg->v[f->to]++;
		tg->nf++;
	}
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
		uint64_t t = l->first_entry[mx_pairs[i].from];
		if (!in_window(q, t))
			continue;
		a->cohort_in[i]++;
		a->cohort_on[i] += l->first_entry[mx_pairs[i].to] >= t;
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

/* The lead filters: the lead's first touch, its owner and team now. */
static int
lead_matches(const mx_query *q, const mx_lead *l)
{
	if (q->source || q->campaign) {
		funnel_str s = l->n_touches ? l->touch[0].source : none;
		funnel_str cp = l->n_touches ? l->touch[0].campaign : none;
		if (!mx_str_is(s, q->source) || !mx_str_is(cp, q->campaign))
			return 0;
	}
	return mx_str_is(l->owner, q->rep) && mx_team_is(l->team, q->team);
}

/* The facts with lo <= ts < hi (hi 0: no end), one by one. */
static int
scan_facts(MDB_txn *txn, const mx_tables *t, const mx_query *q, uint64_t lo, uint64_t hi, agg *a)
{
	MDB_cursor *c = NULL;
	MDB_val k, v;
	uint8_t start[16] = { 0 };
	int rc, oom = 0;

	rf_put_be64(start, lo);
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
		if (hi && ts >= hi)
			break;
		if (mx_fact_decode(v.mv_data, v.mv_size, &f) != FUNNEL_OK)
			continue;
		if (!mx_str_is(f.source, q->source) || !mx_str_is(f.campaign, q->campaign) ||
		    !mx_str_is(f.owner, q->rep) || !mx_team_is(f.team, q->team))
			continue;
		oom |= add_fact(a, q, ts, &f);
	}
	mdb_cursor_close(c);
	if (oom)
		return FUNNEL_ENOMEM;
	return rc == 0 || rc == MDB_NOTFOUND ? FUNNEL_OK : FUNNEL_ESTORAGE;
}

/* Every lead row, one by one: the balance and the cohorts. */
static int
scan_leads(MDB_txn *txn, const mx_tables *t, const mx_query *q, agg *a)
{
	MDB_cursor *c;
	MDB_val k, v;
	int rc;
	if (mdb_cursor_open(txn, t->leads, &c) != 0)
		return FUNNEL_ESTORAGE;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		mx_lead l;
		if (mx_lead_decode(v.mv_data, v.mv_size, &l) != FUNNEL_OK || !lead_matches(q, &l))
			continue;
		add_lead(a, q, &l);
	}
	mdb_cursor_close(c);
	return rc == MDB_NOTFOUND ? FUNNEL_OK : FUNNEL_ESTORAGE;
}

/* The rows of lead id (its row, then the erased ones kept aside under
 * "id\0seq") whose first entry into stage x is at ts and that were not
 * counted yet at this ts (taken: their values' addresses, n of them):
 * the first such row, or NULL. */
static const void *
first_entry_row(MDB_txn *txn, const mx_tables *t, const MDB_val *id, int x, uint64_t ts,
                const void *const *taken, size_t n, mx_lead *l)
{
	MDB_val k = *id, v;
	MDB_cursor *c;
	const void *found = NULL;
	int rc;
	if (mdb_get(txn, t->leads, &k, &v) == 0 && mx_lead_decode(v.mv_data, v.mv_size, l) == FUNNEL_OK &&
	    l->first_entry[x] == ts) {
		size_t i;
		for (i = 0; i < n && taken[i] != v.mv_data; i++)
			;
		if (i == n)
			return v.mv_data;
	}
	char aside[MX_STR_MAX + 2];
	if (id->mv_size > MX_STR_MAX || mdb_cursor_open(txn, t->leads, &c) != 0)
		return NULL;
	memcpy(aside, id->mv_data, id->mv_size);
	aside[id->mv_size] = 0;
	k.mv_size = id->mv_size + 1;
	k.mv_data = aside;
	for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 && found == NULL;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		if (k.mv_size <= id->mv_size + 1 || memcmp(k.mv_data, aside, id->mv_size + 1) != 0)
			break;
		if (mx_lead_decode(v.mv_data, v.mv_size, l) != FUNNEL_OK || l->first_entry[x] != ts)
			continue;
		size_t i;
		for (i = 0; i < n && taken[i] != v.mv_data; i++)
			;
		if (i == n)
			found = v.mv_data;
	}
	mdb_cursor_close(c);
	return found;
}

/* The cohorts of the leads whose first entry into a pair's first stage
 * is in [lo, hi), from the index's lists of stage entries (each first
 * entry is one of them) rather than every lead: the edges of a window
 * the days table sums. */
static int
cohort_edge(MDB_txn *txn, const mx_tables *t, const mx_query *q, uint64_t lo, uint64_t hi, agg *a)
{
	static const fp_stage firsts[] = { FP_STAGE_INQUIRY, FP_STAGE_MQL, FP_STAGE_SAL, FP_STAGE_SQL };
	const void **taken = NULL;
	size_t n = 0, cap = 0;
	int rc = FUNNEL_OK;

	for (size_t s = 0; s < sizeof firsts / sizeof firsts[0] && rc == FUNNEL_OK; s++) {
		int x = firsts[s], r;
		uint8_t start[MX_IX_KEY];
		MDB_cursor *c;
		MDB_val k, v;
		uint64_t cur_ts = 0;
		mx_index_key(start, (uint8_t)x, lo, 0);
		k.mv_size = sizeof start;
		k.mv_data = start;
		if (mdb_cursor_open(txn, t->index, &c) != 0) {
			rc = FUNNEL_ESTORAGE;
			break;
		}
		n = 0;
		for (r = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); r == 0;
		     r = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
			const uint8_t *kb = k.mv_data;
			if (k.mv_size != MX_IX_KEY || kb[0] != MX_IX_LIST || kb[1] != (uint8_t)x)
				break;
			uint64_t ts = rf_get_be64(kb + 2);
			if (ts >= hi)
				break;
			if (ts == 0)
				continue;
			if (ts != cur_ts) {
				n = 0;
				cur_ts = ts;
			}
			mx_lead l;
			const void *row = first_entry_row(txn, t, &v, x, ts, taken, n, &l);
			if (row == NULL)
				continue;
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 16;
				const void **p = realloc(taken, nc * sizeof *p);
				if (p == NULL) {
					rc = FUNNEL_ENOMEM;
					break;
				}
				taken = p;
				cap = nc;
			}
			taken[n++] = row;
			if (!lead_matches(q, &l))
				continue;
			for (int i = 0; i < NPAIRS; i++) {
				if ((int)mx_pairs[i].from != x)
					continue;
				a->cohort_in[i]++;
				a->cohort_on[i] += l.first_entry[mx_pairs[i].to] >= ts;
			}
			if (x == FP_STAGE_SQL) {
				a->cohort_sql++;
				if (l.first_entry[FP_STAGE_WON] >= ts)
					a->cohort_won++;
				else if (l.first_entry[FP_STAGE_LOST] >= ts)
					a->cohort_lost++;
			}
		}
		mdb_cursor_close(c);
		if (rc == FUNNEL_OK && r != 0 && r != MDB_NOTFOUND)
			rc = FUNNEL_ESTORAGE;
	}
	free(taken);
	return rc;
}

/* a -= c: x less what c took, to exactly 0 when what is left is a
 * rounding residue of fractions (1e-9 of x), as when nothing is left. */
static double
less(double x, double c)
{
	double r = x - c;
	return fabs(r) <= 1e-9 * fabs(x) ? 0 : r;
}

static int
cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
	return a < b ? -1 : a > b;
}

/* Remove from a the values of c (a multiset difference: c's values are
 * all in a).  c is consumed: sorted, then its distinct values with their
 * counts.  0, or -1 when out of memory. */
static int
vec_sub(vec *a, vec *c)
{
	if (c->n == 0)
		return 0;
	qsort(c->v, c->n, sizeof *c->v, cmp_u64);
	size_t *cnt = calloc(c->n, sizeof *cnt), k = 0;
	if (cnt == NULL)
		return -1;
	for (size_t i = 0; i < c->n; i++) {
		if (i == 0 || c->v[i] != c->v[k - 1])
			c->v[k++] = c->v[i];
		cnt[k - 1]++;
	}
	uint64_t lo = c->v[0], hi = c->v[k - 1];
	size_t j = 0;
	for (size_t i = 0; i < a->n; i++) {
		uint64_t x = a->v[i];
		if (x >= lo && x <= hi) {
			size_t l = 0, h = k;
			while (l < h) {
				size_t m = l + (h - l) / 2;
				if (c->v[m] < x)
					l = m + 1;
				else
					h = m;
			}
			if (l < k && c->v[l] == x && cnt[l] > 0) {
				cnt[l]--;
				continue;
			}
		}
		a->v[j++] = x;
	}
	a->n = j;
	c->n = 0;
	free(cnt);
	return 0;
}

int
mx_agg_sub(agg *a, agg *c)
{
	int oom = 0;
	for (int i = 0; i < FP_STAGE_COUNT; i++) {
		a->entries[i] -= c->entries[i];
		oom |= vec_sub(&a->in_stage[i], &c->in_stage[i]);
	}
	for (int i = 0; i < FP_EV_COUNT; i++)
		a->by_ev[i] -= c->by_ev[i];
	a->pipeline = less(a->pipeline, c->pipeline);
	a->revenue = less(a->revenue, c->revenue);
	oom |= vec_sub(&a->to_won, &c->to_won);
	a->assigned -= c->assigned;
	a->contacted -= c->contacted;
	for (int i = 0; i < 3; i++)
		a->within[i] -= c->within[i];
	a->sla -= c->sla;
	oom |= vec_sub(&a->delay, &c->delay);
	for (int i = 0; i < NPAIRS; i++) {
		a->cohort_in[i] -= c->cohort_in[i];
		a->cohort_on[i] -= c->cohort_on[i];
	}
	a->cohort_sql -= c->cohort_sql;
	a->cohort_won -= c->cohort_won;
	a->cohort_lost -= c->cohort_lost;
	gmap *am[] = { &a->srccamp, &a->reasons, &a->reasons_by, &a->teams, &a->reps,
	               &a->rep_reasons, &a->attr[0], &a->attr[1], &a->attr[2], &a->trend };
	gmap *cm[] = { &c->srccamp, &c->reasons, &c->reasons_by, &c->teams, &c->reps,
	               &c->rep_reasons, &c->attr[0], &c->attr[1], &c->attr[2], &c->trend };
	for (size_t i = 0; i < sizeof am / sizeof am[0]; i++) {
		for (size_t j = 0; j < cm[i]->n; j++) {
			group *x = cm[i]->items[j];
			group *g = mx_gmap_get(am[i], fs(x->k[0]), fs(x->k[1]), fs(x->k[2]), fs(x->k[3]));
			if (g == NULL)
				return -1;
			for (int v = 0; v < NVALS; v++)
				g->v[v] = less(g->v[v], x->v[v]);
			g->nf -= x->nf;
			oom |= vec_sub(&g->d, &x->d);
		}
		mx_gmap_prune(am[i]);
	}
	return oom ? -1 : 0;
}

/* The part [lo, hi) of a day: its facts and, for the reports that show
 * them, its cohorts, added to a. */
static int
part(MDB_txn *txn, const mx_tables *t, const mx_query *q, uint64_t lo, uint64_t hi, agg *a)
{
	int rc = scan_facts(txn, t, q, lo, hi, a);
	if (rc == FUNNEL_OK && needs_leads(q->report) && !q->headline)
		rc = cohort_edge(txn, t, q, lo, hi, a);
	return rc;
}

/* The window from the days table: whole UTC days summed from it; the
 * part of a day at an edge of the window from the facts, either itself,
 * or, when the rest of that day is shorter, as the whole day from the
 * days table less that rest.  The balance from the per-cell sums. */
static int
fill_days(MDB_txn *txn, const mx_tables *t, const mx_query *q, agg *a)
{
	uint64_t lo_day = q->from ? (q->from + DAY_NS - 1) / DAY_NS : 0;
	uint64_t hi_day = q->to ? q->to / DAY_NS : UINT32_MAX;
	int leads = needs_leads(q->report) && !q->headline;
	uint64_t add[2][2], rest[2][2];      /* parts added / taken off, [lo, hi) */
	int nadd = 0, nrest = 0, rc;
	mx_cells cells;
	agg c;

	if (lo_day > hi_day) {
		/* inside one day, touching neither end */
		uint64_t ds = hi_day * DAY_NS, de = ds + DAY_NS;
		if ((q->from - ds) + (de - q->to) < q->to - q->from) {
			rest[nrest][0] = ds, rest[nrest++][1] = q->from;
			rest[nrest][0] = q->to, rest[nrest++][1] = de;
			lo_day = hi_day;
			hi_day++;
		} else {
			add[nadd][0] = q->from, add[nadd++][1] = q->to;
			lo_day = hi_day = 0;
		}
	} else {
		if (q->from && q->from < lo_day * DAY_NS) {
			uint64_t e = lo_day * DAY_NS;
			if (q->from - (e - DAY_NS) < e - q->from) {
				rest[nrest][0] = e - DAY_NS, rest[nrest++][1] = q->from;
				lo_day--;
			} else {
				add[nadd][0] = q->from, add[nadd++][1] = e;
			}
		}
		if (q->to && q->to > hi_day * DAY_NS) {
			uint64_t s = hi_day * DAY_NS;
			if (s + DAY_NS - q->to < q->to - s) {
				rest[nrest][0] = q->to, rest[nrest++][1] = s + DAY_NS;
				hi_day++;
			} else {
				add[nadd][0] = s, add[nadd++][1] = q->to;
			}
		}
	}
	if ((rc = mx_days_cells(txn, t, q, &cells)) != FUNNEL_OK)
		return rc;
	if (lo_day < hi_day)
		rc = mx_days_read_facts(txn, t, q, &cells, (uint32_t)lo_day, (uint32_t)hi_day, a);
	if (rc == FUNNEL_OK && leads)
		rc = mx_days_read_leads(txn, t, q, &cells, (uint32_t)lo_day, (uint32_t)hi_day, a);
	mx_days_cells_release(&cells);
	for (int i = 0; i < nadd && rc == FUNNEL_OK; i++)
		rc = part(txn, t, q, add[i][0], add[i][1], a);
	if (rc != FUNNEL_OK || nrest == 0)
		return rc;
	memset(&c, 0, sizeof c);
	for (int i = 0; i < nrest && rc == FUNNEL_OK; i++)
		rc = part(txn, t, q, rest[i][0], rest[i][1], &c);
	if (rc == FUNNEL_OK && (c.srccamp.oom || c.reasons.oom || c.reasons_by.oom || c.teams.oom ||
	                        c.reps.oom || c.rep_reasons.oom || c.attr[0].oom || c.attr[1].oom ||
	                        c.attr[2].oom || c.trend.oom || mx_agg_sub(a, &c) != 0))
		rc = FUNNEL_ENOMEM;
	mx_agg_release(&c);
	return rc;
}

int
mx_agg_fill(MDB_txn *txn, const mx_tables *t, const mx_query *q, agg *a)
{
	int rc;
	if (q->facts_only) {
		rc = scan_facts(txn, t, q, q->from, q->to, a);
		if (rc == FUNNEL_OK && needs_leads(q->report) && !q->headline)
			rc = scan_leads(txn, t, q, a);
	} else {
		rc = fill_days(txn, t, q, a);
	}
	if (rc != FUNNEL_OK)
		return rc;
	/* durations stay unsorted: mx_rank selects */
	int oom = 0;
	gmap *maps[] = { &a->srccamp, &a->reasons, &a->reasons_by, &a->teams, &a->reps,
	                 &a->rep_reasons, &a->attr[0], &a->attr[1], &a->attr[2], &a->trend };
	for (size_t i = 0; i < sizeof maps / sizeof maps[0]; i++) {
		oom |= maps[i]->oom;
		mx_gmap_sort(maps[i]);
	}
	return oom ? FUNNEL_ENOMEM : FUNNEL_OK;
}
