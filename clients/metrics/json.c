/*
 * clients/metrics/json.c - the reports of funnel-metrics as JSON (metrics.h,
 * METRICS.md defines each figure): an agg printed per report, the lead
 * lists read from the index, a lead's row, the picker values and the
 * rules in force, each from one read-only transaction.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "report.h"
#include "rulesfile.h"

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
void
mx_json_num(cJSON *o, const char *name, double x)
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
		mx_json_num(o, name, num / den);
	else
		cJSON_AddNullToObject(o, name);
}

/* {"n", "median_s", "p90_s"} of a sorted vector (null when empty). */
static cJSON *
durations(vec *d)
{
	cJSON *o = cJSON_CreateObject();
	mx_json_num(o, "n", (double)d->n);
	if (d->n) {
		mx_json_num(o, "median_s", (double)mx_rank(d, 0.5) / 1e9);
		mx_json_num(o, "p90_s", (double)mx_rank(d, 0.9) / 1e9);
	} else {
		cJSON_AddNullToObject(o, "median_s");
		cJSON_AddNullToObject(o, "p90_s");
	}
	return o;
}

void
mx_json_time(cJSON *o, const char *name, uint64_t ns)
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
	mx_json_time(w, "from", q->from);
	mx_json_time(w, "to", q->to);
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
		cJSON_AddStringToObject(s, "stage", fp_stage_name(mx_shown[i]));
		mx_json_num(s, "entered", a->entries[mx_shown[i]]);
		mx_json_num(s, "now", a->balance[mx_shown[i]]);
		cJSON_AddItemToArray(st, s);
	}
	cJSON *bs = cJSON_AddArrayToObject(o, "by_source");
	for (size_t i = 0; i < a->srccamp.n; i++) {
		const group *g = a->srccamp.items[i];
		cJSON *r = cJSON_CreateObject();
		cJSON_AddStringToObject(r, "source", g->k[0]);
		cJSON_AddStringToObject(r, "campaign", g->k[1]);
		for (int j = 0; j < NSHOWN - 1; j++)
			mx_json_num(r, fp_stage_name(mx_shown[j]), g->v[SC_ENTRIES + mx_shown[j]]);
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
		cJSON *p = cJSON_AddObjectToObject(per, mx_pairs[i].name);
		mx_json_num(p, "from_entries", a->entries[mx_pairs[i].from]);
		mx_json_num(p, "to_entries", a->entries[mx_pairs[i].to]);
		add_rate(p, "rate", a->entries[mx_pairs[i].to], a->entries[mx_pairs[i].from]);
		cJSON *c = cJSON_AddObjectToObject(coh, mx_pairs[i].name);
		mx_json_num(c, "entered", a->cohort_in[i]);
		mx_json_num(c, "went_on", a->cohort_on[i]);
		add_rate(c, "rate", a->cohort_on[i], a->cohort_in[i]);
	}
	cJSON *w = cJSON_AddObjectToObject(per, "win_rate");
	mx_json_num(w, "won", a->entries[FP_STAGE_WON]);
	mx_json_num(w, "lost", a->entries[FP_STAGE_LOST]);
	add_rate(w, "rate", a->entries[FP_STAGE_WON],
	         a->entries[FP_STAGE_WON] + a->entries[FP_STAGE_LOST]);
	w = cJSON_AddObjectToObject(coh, "win_rate");
	mx_json_num(w, "entered", a->cohort_sql);
	mx_json_num(w, "won", a->cohort_won);
	mx_json_num(w, "lost", a->cohort_lost);
	add_rate(w, "rate", a->cohort_won, a->cohort_won + a->cohort_lost);
	return o;
}

static cJSON *
velocity_json(agg *a)
{
	cJSON *o = cJSON_CreateObject();
	cJSON *st = cJSON_AddObjectToObject(o, "time_in_stage");
	for (int i = 0; i < NSHOWN; i++) {
		fp_stage s = mx_shown[i];
		if (s == FP_STAGE_WON || s == FP_STAGE_ERASED || s == FP_STAGE_DISQUALIFIED)
			continue;
		cJSON_AddItemToObject(st, fp_stage_name(s), durations(&a->in_stage[s]));
	}
	cJSON_AddItemToObject(o, "capture_to_won", durations(&a->to_won));
	return o;
}

static void
follow_row(cJSON *r, group *g)
{
	mx_json_num(r, "assignments", g->v[FU_ASSIGNED]);
	mx_json_num(r, "contacted", g->v[FU_CONTACTED]);
	cJSON_AddItemToObject(r, "speed_to_lead", durations(&g->d));
	add_rate(r, "within_5m", g->v[FU_W5M], g->v[FU_ASSIGNED]);
	add_rate(r, "within_1h", g->v[FU_W1H], g->v[FU_ASSIGNED]);
	add_rate(r, "within_24h", g->v[FU_W24H], g->v[FU_ASSIGNED]);
	mx_json_num(r, "sla_breaches", g->v[FU_SLA]);
}

/* A team as the reports show it: MX_NO_TEAM for none. */
static const char *
team_name(const char *team)
{
	return team[0] != '\0' ? team : MX_NO_TEAM;
}

static cJSON *
followup_json(agg *a)
{
	cJSON *o = cJSON_CreateObject();
	mx_json_num(o, "assignments", a->assigned);
	mx_json_num(o, "contacted", a->contacted);
	cJSON_AddItemToObject(o, "speed_to_lead", durations(&a->delay));
	add_rate(o, "within_5m", a->within[0], a->assigned);
	add_rate(o, "within_1h", a->within[1], a->assigned);
	add_rate(o, "within_24h", a->within[2], a->assigned);
	mx_json_num(o, "sla_breaches", a->sla);
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
		group *g = a->reps.items[i];
		cJSON *r = cJSON_CreateObject();
		cJSON_AddStringToObject(r, "owner", g->k[0]);
		cJSON_AddStringToObject(r, "team", team_name(g->k[1]));
		follow_row(r, g);
		mx_json_num(r, "accepted", g->v[FU_ACCEPTED]);
		mx_json_num(r, "rejected", g->v[FU_REJECTED]);
		add_rate(r, "acceptance_rate", g->v[FU_ACCEPTED], g->v[FU_ACCEPTED] + g->v[FU_REJECTED]);
		add_rate(r, "rejection_rate", g->v[FU_REJECTED], g->v[FU_ACCEPTED] + g->v[FU_REJECTED]);
		mx_json_num(r, "pipeline", g->v[FU_PIPELINE]);
		mx_json_num(r, "opportunities", g->v[FU_OPPS]);
		mx_json_num(r, "won", g->v[FU_WON]);
		mx_json_num(r, "revenue", g->v[FU_REVENUE]);
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
			mx_json_num(e, "count", x->v[0]);
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
	mx_json_num(o, "mql_entries", a->entries[FP_STAGE_MQL]);
	mx_json_num(o, "accepted", acc);
	mx_json_num(o, "rejected", rej);
	mx_json_num(o, "recycled", rec);
	mx_json_num(o, "disqualified", a->by_ev[FP_EV_DISQUALIFIED]);
	mx_json_num(o, "lost", a->by_ev[FP_EV_DEAL_LOST]);
	add_rate(o, "rejection_rate", rej, acc + rej);
	add_rate(o, "recycle_rate", rec, a->entries[FP_STAGE_MQL]);
	cJSON *rs = cJSON_AddArrayToObject(o, "reasons");
	for (size_t i = 0; i < a->reasons.n; i++) {
		const group *g = a->reasons.items[i];
		cJSON *r = cJSON_CreateObject();
		cJSON_AddStringToObject(r, "event", g->k[0]);
		cJSON_AddStringToObject(r, "reason", g->k[1]);
		mx_json_num(r, "count", g->v[0]);
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
		mx_json_num(r, "mql_entries", gmql);
		mx_json_num(r, "accepted", gacc);
		mx_json_num(r, "rejected", grej);
		mx_json_num(r, "recycled", g->v[SC_ENTRIES + FP_STAGE_NURTURE] - grej);
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
		mx_json_num(r, "count", g->v[0]);
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
	mx_json_num(o, "pipeline", a->pipeline);
	mx_json_num(o, "revenue", a->revenue);
	mx_json_num(o, "opportunities", a->by_ev[FP_EV_OPP_OPENED]);
	mx_json_num(o, "won", a->by_ev[FP_EV_DEAL_WON]);
	for (int d = 0; d < 3; d++) {
		cJSON *arr = cJSON_AddArrayToObject(o, lists[d]);
		for (size_t i = 0; i < a->attr[d].n; i++) {
			const group *g = a->attr[d].items[i];
			cJSON *r = cJSON_CreateObject();
			cJSON_AddStringToObject(r, dims[d], g->k[0]);
			mx_json_num(r, "pipeline", g->v[AT_PIPELINE]);
			mx_json_num(r, "revenue", g->v[AT_REVENUE]);
			mx_json_num(r, "opportunities", g->v[AT_OPPS]);
			mx_json_num(r, "won", g->v[AT_WON]);
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
			mx_json_num(e, fp_stage_name(mx_shown[j]), g->v[mx_shown[j]]);
		cJSON_AddItemToArray(arr, r);
	}
	return o;
}

/* The figures the dashboard compares with the previous period. */
static cJSON *
headline_json(agg *a)
{
	cJSON *o = cJSON_CreateObject();
	static const fp_stage st[] = { FP_STAGE_INQUIRY, FP_STAGE_MQL, FP_STAGE_SAL, FP_STAGE_SQL,
	                               FP_STAGE_WON, FP_STAGE_LOST, FP_STAGE_DISQUALIFIED };
	for (size_t i = 0; i < sizeof st / sizeof st[0]; i++)
		mx_json_num(o, fp_stage_name(st[i]), a->entries[st[i]]);
	add_rate(o, "win_rate", a->entries[FP_STAGE_WON],
	         a->entries[FP_STAGE_WON] + a->entries[FP_STAGE_LOST]);
	add_rate(o, "mql_to_sal", a->entries[FP_STAGE_SAL], a->entries[FP_STAGE_MQL]);
	mx_json_num(o, "pipeline", a->pipeline);
	mx_json_num(o, "revenue", a->revenue);
	double acc = a->by_ev[FP_EV_ACCEPTED], rej = a->by_ev[FP_EV_REJECTED];
	add_rate(o, "rejection_rate", rej, acc + rej);
	add_rate(o, "recycle_rate", a->by_ev[FP_EV_RECYCLED], a->entries[FP_STAGE_MQL]);
	mx_json_num(o, "assignments", a->assigned);
	if (a->delay.n)
		mx_json_num(o, "speed_to_lead_median_s", (double)mx_rank(&a->delay, 0.5) / 1e9);
	else
		cJSON_AddNullToObject(o, "speed_to_lead_median_s");
	add_rate(o, "within_5m", a->within[0], a->assigned);
	add_rate(o, "within_1h", a->within[1], a->assigned);
	mx_json_num(o, "sla_breaches", a->sla);
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
	int filtered = q->source || q->campaign || q->rep || q->team || q->reason;

	if (q->list <= FP_STAGE_NONE) {
		cJSON_AddStringToObject(o, "stage", "");
		cJSON_AddArrayToObject(o, "leads");
		return FUNNEL_OK;
	}
	cJSON_AddStringToObject(o, "stage", q->list == MX_IX_ASSIGNED ? "assigned" :
	                        q->list == MX_IX_SLA ? "sla_breached" : fp_stage_name(q->list));
	mx_json_num(o, "page", page);
	mx_json_num(o, "page_size", MX_PAGE_SIZE);
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
		if (skip && !filtered) {
			skip--;     /* every entry has its fact: no need to read it */
			continue;
		}
		MDB_val fk = { 16, (void *)(kb + 2) }, fv;
		mx_fact f;
		if (mdb_get(txn, t->facts, &fk, &fv) != 0 ||
		    mx_fact_decode(fv.mv_data, fv.mv_size, &f) != FUNNEL_OK)
			continue;
		if (!mx_str_is(f.source, q->source) || !mx_str_is(f.campaign, q->campaign) ||
		    !mx_str_is(f.owner, q->rep) || !mx_team_is(f.team, q->team) ||
		    !mx_str_is(f.reason, q->reason))
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
			mx_json_num(r, "amount", f.amount);
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
	mx_json_time(w, "captured_ts", l.captured_ts);
	mx_json_time(w, "entered_ts", l.entered_ts);
	cJSON *fe = cJSON_AddObjectToObject(w, "first_entry");
	for (int i = 0; i < NSHOWN; i++)
		if (l.first_entry[mx_shown[i]])
			mx_json_u64(fe, fp_stage_name(mx_shown[i]), l.first_entry[mx_shown[i]]);
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
		mx_json_num(as, "first_contact_s", (double)(f.contact_delay - 1) / 1e9);
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
	int rc = mx_agg_fill(txn, t, q, &a);
	if (rc != FUNNEL_OK) {
		mx_agg_release(&a);
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
			rc = mx_agg_fill(txn, t, &p, &b);
			cJSON *prev = cJSON_AddObjectToObject(o, "previous");
			cJSON *w = cJSON_AddObjectToObject(prev, "window");
			mx_json_time(w, "from", p.from);
			mx_json_time(w, "to", p.to);
			cJSON_AddItemToObject(prev, "headline", headline_json(&b));
			mx_agg_release(&b);
			if (rc != FUNNEL_OK) {
				mx_agg_release(&a);
				cJSON_Delete(o);
				return rc;
			}
		} else {
			cJSON_AddNullToObject(o, "previous");
		}
	}
	mx_agg_release(&a);
	*out = o;
	return o ? FUNNEL_OK : FUNNEL_ENOMEM;
}
