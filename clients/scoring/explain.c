/*
 * clients/scoring/explain.c - `funnel-scoring explain LEAD`: the lead's
 * scores as the view holds them, each rule that contributes, and the
 * event that last triggered it (read from funneld when it is reachable).
 *
 * Reads the view in a read-only transaction: safe while the service runs.
 * Scores are given as of the lead's last scored event (decay applied up to
 * that event's ts), which is what the service reported.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <lmdb.h>

#include "funnel/funnel.h"
#include "funnel/service.h"
#include "mp.h"
#include "rulesfile.h"
#include "scoring.h"

/* What the log says about one seq: its type and, for an activity, kind. */
typedef struct event_desc {
	char type[64];
	char kind[64];
	uint64_t ts;
} event_desc;

static void
describe(funnel_query *q, uint64_t seq, event_desc *d)
{
	funnel_replay_req req = { .from = seq, .to = seq, .limit = 1 };
	funnel_page pg;
	msgpack_zone z;
	funnel_record r;
	funnel_str kind;

	memset(d, 0, sizeof *d);
	if (q == NULL || funnel_replay_page(q, &req, &pg) != FUNNEL_OK)
		return;
	msgpack_zone_init(&z, 2048);
	if (pg.n == 1 && funnel_record_parse(pg.recs[0], pg.lens[0], &z, &r) == FUNNEL_OK) {
		snprintf(d->type, sizeof d->type, "%.*s", (int)r.type.len, r.type.ptr);
		d->ts = funnel_record_event_time(&r);
		if (r.data && mp_get_str(r.data, "kind", &kind, NULL) == FUNNEL_OK)
			snprintf(d->kind, sizeof d->kind, "%.*s", (int)kind.len, kind.ptr);
	}
	msgpack_zone_destroy(&z);
	funnel_page_release(&pg);
}

/* Read the lead's row from the view into st; *ts gets its last ts.
 * Returns 0, 1 (no such lead in the view) or -1 (message printed). */
static int
read_state(const scoring_args *a, const sc_rules *rules, const char *lead, sc_lead *st,
           uint64_t *ts)
{
	static const char *const tables[] = { SCORING_TABLE, FUNNEL_SERVICE_RUNTIME_TABLE, NULL };
	static const char runtime_service[] = "service";   /* _runtime's key: the view's owner */
	funnel_view_reader v;
	char why[256];
	int result = -1;

	int rc = funnel_view_reader_open(&v, a->c.view, tables, why, sizeof why);
	if (rc == FUNNEL_ESTORAGE) {
		fprintf(stderr, "funnel-scoring: cannot open the view %s: %s\n", a->c.view, why);
		return -1;
	}
	if (rc != FUNNEL_OK) {
		fprintf(stderr, "funnel-scoring: %s is not a scoring view\n", a->c.view);
		return -1;
	}
	/* another service's view may have a table of the same name (routing's
	 * "leads"): the name the runtime recorded says whose view it is */
	const void *owner;
	size_t olen;
	if (v.store.get(v.store.ctx, 1, runtime_service, sizeof runtime_service - 1, &owner,
	                &olen) == FUNNEL_OK &&
	    (olen != strlen(SCORING_NAME) || memcmp(owner, SCORING_NAME, olen) != 0)) {
		fprintf(stderr, "funnel-scoring: %s is not a scoring view (it is %.*s's)\n", a->c.view,
		        (int)(olen < 64 ? olen : 64), (const char *)owner);
		funnel_view_reader_close(&v);
		return -1;
	}
	rc = sc_row_load(rules, &v.store, (funnel_str){ lead, strlen(lead) }, st, ts);
	if (rc == FUNNEL_ENOTFOUND)
		result = 1;
	else if (rc != FUNNEL_OK)
		fprintf(stderr, "funnel-scoring: the view's state of %s does not decode\n", lead);
	else
		result = 0;
	funnel_view_reader_close(&v);
	return result;
}

int
scoring_explain(const scoring_args *a, const char *lead)
{
	sc_rules *rules = NULL;
	sc_lead *st = NULL;
	funnel_query *q = NULL;
	sc_contrib contrib[SC_MAX_RULES];
	char err[512], when[32];
	uint64_t ts = 0;
	int status = 1;

	if (sc_rules_load(a->c.rules, &rules, err, sizeof err) != FUNNEL_OK) {
		fprintf(stderr, "funnel-scoring: %s\n", err);
		return 2;
	}
	if ((st = sc_lead_new(rules)) == NULL)
		goto out;
	int found = read_state(a, rules, lead, st, &ts);
	if (found < 0)
		goto out;
	if (found == 1) {
		fprintf(stderr, "funnel-scoring: lead %s has no score in %s (never captured, erased, "
		        "or not scored yet)\n", lead, a->c.view);
		goto out;
	}
	int fit, eng, total, min_fit = 0, has_min = sc_rules_minimum_fit(rules, &min_fit);
	sc_scores(rules, st, ts, &fit, &eng, &total);
	size_t n = sc_contributions(rules, st, ts, contrib, SC_MAX_RULES);
	funnel_lead_info info;
	int have_info = 0;
	if (funnel_query_new(&q, a->c.query, 2000) == FUNNEL_OK)
		have_info = funnel_lead_get(q, lead, &info) == FUNNEL_OK;
	if (!have_info)
		funnel_query_destroy(&q);       /* funneld away: explain from the view alone */
	rf_iso_time(ts, when, sizeof when);
	const char *hash = sc_rules_hash_hex(rules);

	if (a->c.json) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "lead", lead);
		if (have_info)
			cJSON_AddStringToObject(o, "stage", info.stage);
		cJSON_AddNumberToObject(o, "fit", fit);
		cJSON_AddNumberToObject(o, "engagement", eng);
		cJSON_AddNumberToObject(o, "total", total);
		cJSON_AddNumberToObject(o, "threshold", sc_rules_threshold(rules));
		if (has_min)
			cJSON_AddNumberToObject(o, "minimum_fit", min_fit);
		cJSON_AddBoolToObject(o, "above", sc_lead_above(st));
		cJSON_AddNumberToObject(o, "as_of_ts", (double)ts);
		cJSON_AddStringToObject(o, "as_of", when);
		cJSON_AddStringToObject(o, "rules_version", sc_rules_version(rules));
		cJSON_AddStringToObject(o, "rules_hash", hash);
		cJSON *f = cJSON_AddObjectToObject(o, "fields");
		for (size_t i = 0; i < sc_rules_field_count(rules); i++) {
			const char *v = sc_lead_field(st, i);
			if (v)
				cJSON_AddStringToObject(f, sc_rules_field_name(rules, i), v);
		}
		cJSON *arr = cJSON_AddArrayToObject(o, "rules");
		for (size_t i = 0; i < n; i++) {
			event_desc d;
			describe(q, contrib[i].last_seq, &d);
			cJSON *r = cJSON_CreateObject();
			cJSON_AddStringToObject(r, "name", sc_rule_name(rules, contrib[i].rule));
			cJSON_AddStringToObject(r, "kind", sc_rule_kind(rules, contrib[i].rule));
			cJSON_AddNumberToObject(r, "points", contrib[i].points);
			cJSON_AddNumberToObject(r, "fired", contrib[i].fired);
			cJSON_AddNumberToObject(r, "last_seq", (double)contrib[i].last_seq);
			if (d.type[0])
				cJSON_AddStringToObject(r, "last_type", d.type);
			if (d.kind[0])
				cJSON_AddStringToObject(r, "last_kind", d.kind);
			cJSON_AddItemToArray(arr, r);
		}
		char *s = cJSON_PrintUnformatted(o);
		if (s)
			puts(s);
		free(s);
		cJSON_Delete(o);
	} else {
		printf("lead %s%s%s: fit %d + engagement %d = total %d (threshold %d", lead,
		       have_info ? ", stage " : "", have_info ? info.stage : "", fit, eng, total,
		       sc_rules_threshold(rules));
		if (has_min)
			printf(", minimum fit %d", min_fit);
		printf(") %s\n", sc_lead_above(st) ? "at or above the threshold"
		                                   : "below the threshold");
		printf("as of its last event, %s; rules \"%s\" (%.12s)\n", when,
		       sc_rules_version(rules), hash);
		printf("fields:");
		for (size_t i = 0; i < sc_rules_field_count(rules); i++) {
			const char *v = sc_lead_field(st, i);
			if (v)
				printf(" %s=%s", sc_rules_field_name(rules, i), v);
		}
		printf("\n\n%-28s %-10s %8s %6s  %s\n", "rule", "kind", "points", "fired",
		       "last triggered by");
		for (size_t i = 0; i < n; i++) {
			event_desc d;
			describe(q, contrib[i].last_seq, &d);
			printf("%-28s %-10s %8.1f %6u  seq %" PRIu64 "%s%s%s%s\n",
			       sc_rule_name(rules, contrib[i].rule), sc_rule_kind(rules, contrib[i].rule),
			       contrib[i].points, contrib[i].fired, contrib[i].last_seq,
			       d.type[0] ? " " : "", d.type, d.kind[0] ? " " : "", d.kind);
		}
		if (n == 0)
			printf("(no rule contributes)\n");
	}
	status = 0;
out:
	funnel_query_destroy(&q);
	sc_lead_destroy(&st);
	sc_rules_destroy(&rules);
	return status;
}
