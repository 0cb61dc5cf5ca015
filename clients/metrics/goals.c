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
#include "rulesfile.h"

#define NS_PER_S 1000000000ull

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
mx_goals_free(mx_goals **pg)
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
		mx_goals_free(&g);
		return rf_enomem(&c);
	}
	memcpy(g->text, text, len);
	g->text[len] = 0;
	g->len = len;
	crypto_generichash(hash, sizeof hash, (const unsigned char *)text, len, NULL, 0);
	rf_hex(hash, sizeof hash, g->hash_hex);
	if ((rc = rf_parse(&c, g->text, len, &doc, &root)) != FUNNEL_OK) {
		mx_goals_free(&g);
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
		mx_goals_free(&g);
		return rc;
	}
	*out = g;
	return FUNNEL_OK;
}

int
mx_goals_load(const char *path, mx_goals **out, char *err, size_t errlen)
{
	char *text;
	size_t len;
	*out = NULL;
	int rc = rf_read_file(path, &text, &len, err, errlen);
	if (rc != FUNNEL_OK)
		return rc;
	rc = mx_goals_parse(text, len, path, out, err, errlen);
	free(text);
	return rc;
}
