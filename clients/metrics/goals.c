/*
 * clients/metrics/goals.c - the goals: section of funnel.yaml, the numbers
 * marketing and sales committed to for a month or a quarter (metrics.h,
 * METRICS.md "Shared goals").  Parsed with the shared reader
 * (clients/common/rulesfile.h), so a mistake is refused naming its line,
 * by `check` and at start-up alike.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "metrics.h"
#include "report.h"
#include "rulesfile.h"

static const struct {
	const char *key;
	int dir;          /* +1: at least the target; -1: at most */
} figures[MX_G_COUNT] = {
	[MX_G_MQLS] = { "mqls", 1 },
	[MX_G_ACCEPTANCE] = { "acceptance_rate", 1 },
	[MX_G_SPEED] = { "speed_to_lead_minutes", -1 },
	[MX_G_PIPELINE] = { "pipeline", 1 },
	[MX_G_REVENUE] = { "revenue", 1 },
};
#define FIGURE_LIST "mqls, acceptance_rate, speed_to_lead_minutes, pipeline, revenue"

const char *
mx_goal_figure_name(int figure)
{
	return figure >= 0 && figure < MX_G_COUNT ? figures[figure].key : "";
}

int
mx_goal_direction(int figure)
{
	return figure >= 0 && figure < MX_G_COUNT ? figures[figure].dir : 1;
}

void
mx_goals_destroy(mx_goals **pg)
{
	if (pg == NULL || *pg == NULL)
		return;
	mx_goals *g = *pg;
	for (size_t i = 0; i < g->n; i++)
		free(g->goal[i].team);
	free(g->goal);
	free(g->text);
	free(g->version);
	free(g);
	*pg = NULL;
}

/* "2026-12" (a month) or "2026-Q4" (a quarter), UTC: [from, to). */
static int
parse_period(const char *s, uint64_t *from, uint64_t *to)
{
	int y, m, used = 0;
	int first, months;
	size_t n = strlen(s);
	if (n == 7 && sscanf(s, "%4d-Q%1d%n", &y, &m, &used) == 2 && used == 7 && m >= 1 && m <= 4) {
		first = (m - 1) * 3;
		months = 3;
	} else if (n == 7 && sscanf(s, "%4d-%2d%n", &y, &m, &used) == 2 && used == 7 && m >= 1 &&
	           m <= 12 && s[4] == '-' && s[5] >= '0' && s[5] <= '9') {
		first = m - 1;
		months = 1;
	} else {
		return -1;
	}
	if (y < 1970 || y > 2200)
		return -1;
	struct tm a = { .tm_year = y - 1900, .tm_mon = first, .tm_mday = 1 };
	struct tm b = { .tm_year = y - 1900, .tm_mon = first + months, .tm_mday = 1 };
	*from = (uint64_t)timegm(&a) * NS_PER_S;
	*to = (uint64_t)timegm(&b) * NS_PER_S;
	return 0;
}

/* The team names routing.teams declares, for the check of goals[].team. */
static int
known_team(rf_ctx *c, yaml_node_t *routing, const char *team)
{
	if (routing == NULL || routing->type != YAML_MAPPING_NODE)
		return 0;
	for (yaml_node_pair_t *kv = routing->data.mapping.pairs.start;
	     kv < routing->data.mapping.pairs.top; kv++) {
		yaml_node_t *k = yaml_document_get_node(c->doc, kv->key);
		yaml_node_t *v = yaml_document_get_node(c->doc, kv->value);
		if (k->type != YAML_SCALAR_NODE || strcmp(rf_text(k), "teams") != 0 ||
		    v->type != YAML_SEQUENCE_NODE)
			continue;
		for (yaml_node_item_t *it = v->data.sequence.items.start;
		     it < v->data.sequence.items.top; it++) {
			yaml_node_t *t = yaml_document_get_node(c->doc, *it);
			if (t == NULL || t->type != YAML_MAPPING_NODE)
				continue;
			for (yaml_node_pair_t *p = t->data.mapping.pairs.start;
			     p < t->data.mapping.pairs.top; p++) {
				yaml_node_t *pk = yaml_document_get_node(c->doc, p->key);
				yaml_node_t *pv = yaml_document_get_node(c->doc, p->value);
				if (pk->type == YAML_SCALAR_NODE && strcmp(rf_text(pk), "name") == 0 &&
				    pv->type == YAML_SCALAR_NODE && strcmp(rf_text(pv), team) == 0)
					return 1;
			}
		}
	}
	return 0;
}

static int
add_goal(rf_ctx *c, mx_goals *g, const mx_goal *x)
{
	if (g->n == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 8;
		mx_goal *p = realloc(g->goal, cap * sizeof *p);
		if (p == NULL)
			return rf_enomem(c);
		g->goal = p;
		g->cap = cap;
	}
	g->goal[g->n] = *x;
	if (x->team && (g->goal[g->n].team = strdup(x->team)) == NULL)
		return rf_enomem(c);
	g->n++;
	return FUNNEL_OK;
}

/* goals[i]: {period, team?, and one or more figures}. */
static int
parse_goal(rf_ctx *c, mx_goals *g, yaml_node_t *n, const char *path, yaml_node_t *routing)
{
	static const char *const keys[] = { "period", "team", "mqls", "acceptance_rate",
	                                    "speed_to_lead_minutes", "pipeline", "revenue" };
	yaml_node_t *v[7];
	char kp[RF_PATH_BYTES], *period = NULL, *team = NULL;
	mx_goal x;
	int rc, any = 0;

	memset(&x, 0, sizeof x);
	if ((rc = rf_map(c, n, path, keys, 7, "period, team, " FIGURE_LIST, 0, v)) != FUNNEL_OK)
		return rc;
	if (v[0] == NULL)
		return rf_err(c, n, path, "missing \"period\" (a month, 2026-12, or a quarter, 2026-Q4)");
	rf_join(kp, sizeof kp, path, "period");
	if ((rc = rf_string(c, v[0], kp, 16, &period)) != FUNNEL_OK)
		return rc;
	if (parse_period(period, &x.from, &x.to) != 0) {
		rc = rf_err(c, v[0], kp, "expected a month (2026-12) or a quarter (2026-Q4), got \"%s\"",
		            period);
		free(period);
		return rc;
	}
	snprintf(x.period, sizeof x.period, "%s", period);
	free(period);
	if (v[1] != NULL) {
		rf_join(kp, sizeof kp, path, "team");
		if ((rc = rf_string(c, v[1], kp, MX_STR_MAX, &team)) != FUNNEL_OK)
			return rc;
		if (!known_team(c, routing, team)) {
			rc = rf_err(c, v[1], kp, "unknown team \"%s\" (not one of routing.teams)", team);
			free(team);
			return rc;
		}
	}
	x.team = team;
	for (int f = 0; f < MX_G_COUNT && rc == FUNNEL_OK; f++) {
		yaml_node_t *fn = v[2 + f];
		if (fn == NULL)
			continue;
		rf_join(kp, sizeof kp, path, figures[f].key);
		if ((rc = rf_number(c, fn, kp, &x.target)) != FUNNEL_OK)
			break;
		if (x.target < 0 || (f == MX_G_ACCEPTANCE && x.target > 1))
			rc = rf_err(c, fn, kp, f == MX_G_ACCEPTANCE ? "expected a share from 0 to 1"
			                                            : "expected a number of 0 or more");
		else {
			x.figure = f;
			x.line = (int)fn->start_mark.line + 1;
			rc = add_goal(c, g, &x);
			any = 1;
		}
	}
	free(team);
	if (rc == FUNNEL_OK && !any)
		rc = rf_err(c, n, path, "no figure: give one or more of " FIGURE_LIST);
	return rc;
}

int
mx_goals_parse(const char *text, size_t len, const char *file, mx_goals **out, char *err,
               size_t errlen)
{
	rf_ctx c = { .file = file ? file : "funnel.yaml", .err = err, .errlen = errlen };
	static const char *const keys[] = { "version", "goals", "routing" };
	yaml_document_t doc;
	yaml_node_t *root, *v[3];
	uint8_t hash[32];
	size_t count = 0;
	int rc;

	*out = NULL;
	if (err && errlen)
		err[0] = 0;
	if (sodium_init() < 0)
		return FUNNEL_EINTERNAL;
	mx_goals *g = calloc(1, sizeof *g);
	if (g == NULL || (g->text = malloc(len + 1)) == NULL) {
		mx_goals_destroy(&g);
		return rf_enomem(&c);
	}
	memcpy(g->text, text, len);
	g->text[len] = 0;
	g->len = len;
	crypto_generichash(hash, sizeof hash, (const unsigned char *)text, len, NULL, 0);
	fp_hex(hash, sizeof hash, g->hash_hex);
	if ((rc = rf_parse(&c, g->text, len, &doc, &root)) != FUNNEL_OK) {
		mx_goals_destroy(&g);
		return rc;
	}
	c.doc = &doc;
	if (root == NULL || (rc = rf_map(&c, root, "", keys, 3, "", 1, v)) != FUNNEL_OK || v[1] == NULL)
		;    /* no goals: section (or the error rf_map wrote) */
	else if (v[0] == NULL)
		rc = rf_err(&c, root, "", "missing \"version\" (a name for this edition of the rules)");
	else if ((rc = rf_string(&c, v[0], "version", 64, &g->version)) != FUNNEL_OK)
		;
	else if ((rc = rf_list(&c, v[1], "goals", &count)) == FUNNEL_OK) {
		g->present = 1;
		for (size_t i = 0; i < count && rc == FUNNEL_OK; i++) {
			char ip[RF_PATH_BYTES];
			rf_join_index(ip, sizeof ip, "goals", i);
			rc = parse_goal(&c, g, rf_item(&c, v[1], i), ip, v[2]);
		}
	}
	yaml_document_delete(&doc);
	if (rc != FUNNEL_OK) {
		mx_goals_destroy(&g);
		return rc;
	}
	*out = g;
	return FUNNEL_OK;
}

RF_DEFINE_LOAD(mx_goals_load, mx_goals, mx_goals_parse)

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
	int rc = mx_agg_fill(txn, t, &q, &a);
	if (rc != FUNNEL_OK) {
		mx_agg_release(&a);
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
		s->value = s->has_value ? (double)mx_rank(&a.delay, 0.5) / 1e9 / 60 : 0;
	}
	mx_agg_release(&a);
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
		mx_json_num(r, "target", x->target);
		if (s.has_value)
			mx_json_num(r, "value", s.value);
		else
			cJSON_AddNullToObject(r, "value");
		mx_json_num(r, "elapsed_share", s.elapsed);
		mx_json_num(r, "expected_by_now", s.expected);
		if (s.has_pace)
			mx_json_num(r, "pace_per_day", s.pace);
		else
			cJSON_AddNullToObject(r, "pace_per_day");
		cJSON_AddStringToObject(r, "status", s.status);
		mx_json_num(r, "line", x->line);
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
		mx_sb_head(&b, names[m], "gauge", help[m]);
		for (size_t i = 0; i < g->n; i++) {
			const mx_goal *x = &g->goal[i];
			if (m == 1 && !st[i].has_value)
				continue;
			mx_sb_printf(&b, "%s{period=\"", names[m]);
			mx_sb_label(&b, x->period, strlen(x->period));
			mx_sb_add(&b, "\",team=\"", 8);
			if (x->team)
				mx_sb_label(&b, x->team, strlen(x->team));
			mx_sb_printf(&b, "\",figure=\"%s\"}", mx_goal_figure_name(x->figure));
			double v = m == 0 ? x->target : m == 1 ? st[i].value :
			           strcmp(st[i].status, "on track") == 0 || strcmp(st[i].status, "met") == 0;
			mx_sb_value(&b, v);
		}
	}
	free(st);
	/* the buffer may have moved, also before a failed growth */
	*text = b.p;
	*len = b.n;
	return b.oom ? FUNNEL_ENOMEM : FUNNEL_OK;
}
