/*
 * clients/routing/rules.c - the `routing` section of funnel.yaml, read with
 * libyaml (through clients/common/rulesfile.h) into engine.h's compiled
 * rules.  The contract is routing.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "engine.h"
#include "rulesfile.h"

#define MAX_TEAMS 64
#define MAX_REPS 1024
#define MAX_RULES 256

void
rt_rules_destroy(rt_rules **rp)
{
	if (rp == NULL || *rp == NULL)
		return;
	rt_rules *r = *rp;
	for (size_t i = 0; i < r->nteams; i++) {
		free(r->teams[i].name);
		free(r->teams[i].lead);
	}
	free(r->teams);
	for (size_t i = 0; i < r->nreps; i++)
		free(r->reps[i].name);
	free(r->reps);
	for (size_t i = 0; i < r->nrules; i++) {
		rt_rule_def *ru = &r->rules[i];
		for (size_t j = 0; j < ru->nconds; j++) {
			for (size_t k = 0; k < ru->conds[j].n_in; k++)
				rf_value_release(&ru->conds[j].in[k]);
			free(ru->conds[j].in);
		}
		free(ru->conds);
		free(ru->name);
	}
	free(r->rules);
	for (size_t i = 0; i < r->nfields; i++)
		free(r->fields[i]);
	free(r->fallback);
	free(r->version);
	free(r->text);
	free(r);
	*rp = NULL;
}

/* A name of 1..max bytes without control characters. */
static int
get_name(rf_ctx *c, yaml_node_t *n, const char *path, size_t max, char **out)
{
	int rc = rf_string(c, n, path, max, out);
	if (rc != FUNNEL_OK)
		return rc;
	for (const unsigned char *p = (const unsigned char *)*out; *p; p++) {
		if (*p < 0x20 || *p == 0x7f)
			return rf_err(c, n, path, "a name must not hold control characters");
	}
	return FUNNEL_OK;
}

static int
get_sla(rf_ctx *c, yaml_node_t *n, const char *path, uint64_t *ns)
{
	long min;
	int rc = rf_int(c, n, path, 1, 525600, &min);
	if (rc == FUNNEL_OK)
		*ns = (uint64_t)min * 60000000000u;
	return rc;
}

int
rt_team_index(const rt_rules *r, const char *name)
{
	for (size_t i = 0; i < r->nteams; i++) {
		if (strcmp(r->teams[i].name, name) == 0)
			return (int)i;
	}
	return -1;
}

int
rt_rep_index(const rt_rules *r, const char *name)
{
	for (size_t i = 0; i < r->nreps; i++) {
		if (strcmp(r->reps[i].name, name) == 0)
			return (int)i;
	}
	return -1;
}

static int
parse_rep(rf_ctx *c, rt_rules *r, yaml_node_t *n, const char *path, size_t team)
{
	enum { P_NAME, P_WEIGHT, P_CAPACITY, P_ACTIVE, N_P };
	static const char *const keys[N_P] = { "name", "weight", "capacity", "active" };
	yaml_node_t *v[N_P];
	char kp[RF_PATH_BYTES];
	int rc;

	if ((rc = rf_map(c, n, path, keys, N_P, "name, weight, capacity, active", 0, v)) != FUNNEL_OK)
		return rc;
	if (v[P_NAME] == NULL)
		return rf_err(c, n, path, "missing \"name\" (the rep's owner name)");
	rt_rep_def *rep = &r->reps[r->nreps];
	rf_join(kp, sizeof kp, path, "name");
	if ((rc = get_name(c, v[P_NAME], kp, RT_MAX_NAME, &rep->name)) != FUNNEL_OK)
		return rc;
	if (rt_rep_index(r, rep->name) >= 0) {
		rc = rf_err(c, v[P_NAME], kp, "rep \"%s\" is listed twice (a rep belongs to one team)",
		            rep->name);
		free(rep->name);
		rep->name = NULL;
		return rc;
	}
	r->nreps++;
	rep->team = team;
	rep->weight = 1;
	rep->active = 1;
	if (v[P_WEIGHT] != NULL) {
		rf_join(kp, sizeof kp, path, "weight");
		if ((rc = rf_int(c, v[P_WEIGHT], kp, 1, 1000, &rep->weight)) != FUNNEL_OK)
			return rc;
	}
	if (v[P_CAPACITY] != NULL) {
		rf_join(kp, sizeof kp, path, "capacity");
		if ((rc = rf_int(c, v[P_CAPACITY], kp, 0, 1000000, &rep->capacity)) != FUNNEL_OK)
			return rc;
	}
	if (v[P_ACTIVE] != NULL) {
		rf_join(kp, sizeof kp, path, "active");
		if ((rc = rf_bool(c, v[P_ACTIVE], kp, &rep->active)) != FUNNEL_OK)
			return rc;
	}
	return FUNNEL_OK;
}

static int
parse_escalation(rf_ctx *c, yaml_node_t *n, const char *path, rt_team_def *t)
{
	static const char *const keys[] = { "to", "limit" };
	yaml_node_t *v[2];
	char kp[RF_PATH_BYTES], buf[64];
	int rc;

	if ((rc = rf_map(c, n, path, keys, 2, "to, limit", 0, v)) != FUNNEL_OK)
		return rc;
	if (v[0] == NULL)
		return rf_err(c, n, path, "missing \"to\" (next_rep, team_lead or none)");
	rf_join(kp, sizeof kp, path, "to");
	const char *to = v[0]->type == YAML_SCALAR_NODE ? rf_text(v[0]) : "";
	if (strcmp(to, "next_rep") == 0)
		t->esc = RT_ESC_NEXT_REP;
	else if (strcmp(to, "team_lead") == 0)
		t->esc = RT_ESC_TEAM_LEAD;
	else if (strcmp(to, "none") == 0)
		t->esc = RT_ESC_NONE;
	else
		return rf_err(c, v[0], kp, "expected next_rep, team_lead or none, got %s",
		              rf_desc(v[0], buf, sizeof buf));
	t->esc_limit = t->esc == RT_ESC_NONE ? 0 : 1;
	if (v[1] != NULL) {
		rf_join(kp, sizeof kp, path, "limit");
		if ((rc = rf_int(c, v[1], kp, 1, 10, &t->esc_limit)) != FUNNEL_OK)
			return rc;
	}
	return FUNNEL_OK;
}

static int
parse_team(rf_ctx *c, rt_rules *r, yaml_node_t *n, const char *path)
{
	enum { T_NAME, T_SLA, T_LEAD, T_ESC, T_REPS, N_T };
	static const char *const keys[N_T] = { "name", "sla_minutes", "team_lead", "escalation",
	                                       "reps" };
	yaml_node_t *v[N_T];
	char kp[RF_PATH_BYTES];
	size_t count;
	int rc;

	if ((rc = rf_map(c, n, path, keys, N_T, "name, sla_minutes, team_lead, escalation, reps", 0,
	                 v)) != FUNNEL_OK)
		return rc;
	if (v[T_NAME] == NULL)
		return rf_err(c, n, path, "missing \"name\"");
	size_t ti = r->nteams;
	rt_team_def *t = &r->teams[ti];
	rf_join(kp, sizeof kp, path, "name");
	if ((rc = get_name(c, v[T_NAME], kp, 64, &t->name)) != FUNNEL_OK)
		return rc;
	r->nteams++;
	for (size_t i = 0; i < ti; i++) {
		if (strcmp(r->teams[i].name, t->name) == 0)
			return rf_err(c, v[T_NAME], kp, "team \"%s\" is defined twice", t->name);
	}
	if (v[T_SLA] != NULL) {
		rf_join(kp, sizeof kp, path, "sla_minutes");
		if ((rc = get_sla(c, v[T_SLA], kp, &t->sla_ns)) != FUNNEL_OK)
			return rc;
	}
	if (v[T_LEAD] != NULL) {
		rf_join(kp, sizeof kp, path, "team_lead");
		if ((rc = get_name(c, v[T_LEAD], kp, RT_MAX_NAME, &t->lead)) != FUNNEL_OK)
			return rc;
	}
	if (v[T_ESC] != NULL) {
		rf_join(kp, sizeof kp, path, "escalation");
		if ((rc = parse_escalation(c, v[T_ESC], kp, t)) != FUNNEL_OK)
			return rc;
		if (t->esc == RT_ESC_TEAM_LEAD && t->lead == NULL)
			return rf_err(c, v[T_ESC], kp, "escalation to the team lead needs \"team_lead\"");
		if (t->esc != RT_ESC_NONE && t->sla_ns == 0)
			return rf_err(c, v[T_ESC], kp, "escalation needs \"sla_minutes\" (a breach starts it)");
	}
	rf_join(kp, sizeof kp, path, "reps");
	if ((rc = rf_list(c, v[T_REPS], kp, &count)) != FUNNEL_OK)
		return rc;
	if (count == 0)
		return rf_err(c, v[T_REPS] ? v[T_REPS] : n, kp, "a team needs one or more reps");
	if (count > RT_MAX_TEAM_REPS)
		return rf_err(c, v[T_REPS], kp, "a team has at most %d reps", RT_MAX_TEAM_REPS);
	t->first_rep = r->nreps;
	for (size_t i = 0; i < count; i++) {
		char ip[RF_PATH_BYTES];
		rf_join_index(ip, sizeof ip, kp, i);
		if (r->nreps == MAX_REPS)
			return rf_err(c, rf_item(c, v[T_REPS], i), ip, "too many reps (at most %d)", MAX_REPS);
		if ((rc = parse_rep(c, r, rf_item(c, v[T_REPS], i), ip, ti)) != FUNNEL_OK)
			return rc;
	}
	t->nreps = count;
	return FUNNEL_OK;
}

/* The index of a lead field, added if new. */
static int
field_index(rf_ctx *c, rt_rules *r, yaml_node_t *k, const char *path, size_t *out)
{
	const char *name = rf_text(k);
	for (size_t i = 0; i < r->nfields; i++) {
		if (strcmp(r->fields[i], name) == 0) {
			*out = i;
			return FUNNEL_OK;
		}
	}
	if (r->nfields == RT_MAX_FIELDS)
		return rf_err(c, k, path, "the rules may read at most %d lead fields", RT_MAX_FIELDS);
	if (k->data.scalar.length == 0 || k->data.scalar.length > RT_MAX_NAME)
		return rf_err(c, k, path, "expected a field name of 1 to %d characters", RT_MAX_NAME);
	if ((r->fields[r->nfields] = strdup(name)) == NULL)
		return rf_enomem(c);
	*out = r->nfields++;
	return FUNNEL_OK;
}

/* A value, or a list of values, into cond->in. */
static int
get_values(rf_ctx *c, yaml_node_t *n, const char *path, rt_cond *cond)
{
	if (n->type != YAML_SEQUENCE_NODE) {
		if ((cond->in = calloc(1, sizeof *cond->in)) == NULL)
			return rf_enomem(c);
		cond->n_in = 1;
		return rf_get_value(c, n, path, RT_MAX_VALUE, &cond->in[0]);
	}
	return rf_get_values(c, n, path, RT_MAX_VALUE, &cond->in, &cond->n_in);
}

/* COND: a value, a list of values, or { equals, in, at_least, at_most }. */
static int
parse_cond(rf_ctx *c, yaml_node_t *n, const char *path, rt_cond *cond)
{
	static const char *const keys[] = { "equals", "in", "at_least", "at_most" };
	yaml_node_t *v[4];
	char kp[RF_PATH_BYTES];
	int rc;

	if (n->type != YAML_MAPPING_NODE)
		return get_values(c, n, path, cond);
	if ((rc = rf_map(c, n, path, keys, 4, "equals, in, at_least, at_most", 0, v)) != FUNNEL_OK)
		return rc;
	if ((v[0] != NULL) + (v[1] != NULL) > 1)
		return rf_err(c, n, path, "equals and in: one or the other");
	for (int i = 0; i < 2; i++) {
		if (v[i] == NULL)
			continue;
		rf_join(kp, sizeof kp, path, keys[i]);
		if (i == 0 && v[i]->type == YAML_SEQUENCE_NODE)
			return rf_err(c, v[i], kp, "expected one value (a list goes under \"in\")");
		if ((rc = get_values(c, v[i], kp, cond)) != FUNNEL_OK)
			return rc;
	}
	if (v[2] != NULL) {
		rf_join(kp, sizeof kp, path, "at_least");
		if ((rc = rf_number(c, v[2], kp, &cond->min)) != FUNNEL_OK)
			return rc;
		cond->has_min = 1;
	}
	if (v[3] != NULL) {
		rf_join(kp, sizeof kp, path, "at_most");
		if ((rc = rf_number(c, v[3], kp, &cond->max)) != FUNNEL_OK)
			return rc;
		cond->has_max = 1;
	}
	if (cond->n_in == 0 && !cond->has_min && !cond->has_max)
		return rf_err(c, n, path, "a condition needs one of equals, in, at_least, at_most");
	if (cond->has_min && cond->has_max && cond->min > cond->max)
		return rf_err(c, n, path, "at_least is above at_most: nothing can match");
	return FUNNEL_OK;
}

static int
parse_rule(rf_ctx *c, rt_rules *r, yaml_node_t *n, const char *path)
{
	static const char *const keys[] = { "name", "team", "when" };
	yaml_node_t *v[3];
	char kp[RF_PATH_BYTES], buf[64];
	int rc;

	if ((rc = rf_map(c, n, path, keys, 3, "name, team, when", 0, v)) != FUNNEL_OK)
		return rc;
	if (v[0] == NULL)
		return rf_err(c, n, path, "missing \"name\"");
	rt_rule_def *ru = &r->rules[r->nrules];
	rf_join(kp, sizeof kp, path, "name");
	if ((rc = get_name(c, v[0], kp, 64, &ru->name)) != FUNNEL_OK)
		return rc;
	r->nrules++;
	for (size_t i = 0; i + 1 < r->nrules; i++) {
		if (strcmp(r->rules[i].name, ru->name) == 0)
			return rf_err(c, v[0], kp, "rule \"%s\" is defined twice", ru->name);
	}
	if (v[1] == NULL)
		return rf_err(c, n, path, "missing \"team\" (the team that gets the leads it matches)");
	rf_join(kp, sizeof kp, path, "team");
	if (v[1]->type != YAML_SCALAR_NODE)
		return rf_err(c, v[1], kp, "expected a team name, got %s", rf_desc(v[1], buf, sizeof buf));
	for (ru->team = 0; ru->team < r->nteams; ru->team++) {
		if (strcmp(r->teams[ru->team].name, rf_text(v[1])) == 0)
			break;
	}
	if (ru->team == r->nteams)
		return rf_err(c, v[1], kp, "no team named %s", rf_desc(v[1], buf, sizeof buf));
	if (v[2] == NULL || rf_is_null(v[2]))
		return FUNNEL_OK;        /* matches every lead */
	rf_join(kp, sizeof kp, path, "when");
	if (v[2]->type != YAML_MAPPING_NODE)
		return rf_err(c, v[2], kp, "expected a mapping of field: condition, got %s",
		              rf_desc(v[2], buf, sizeof buf));
	size_t count = (size_t)(v[2]->data.mapping.pairs.top - v[2]->data.mapping.pairs.start);
	if (count > 0 && (ru->conds = calloc(count, sizeof *ru->conds)) == NULL)
		return rf_enomem(c);
	for (size_t i = 0; i < count; i++) {
		yaml_node_pair_t *kv = &v[2]->data.mapping.pairs.start[i];
		yaml_node_t *k = yaml_document_get_node(c->doc, kv->key);
		char fp[RF_PATH_BYTES];
		if (k->type != YAML_SCALAR_NODE)
			return rf_err(c, k, kp, "a field name must be a plain word, got %s",
			              rf_desc(k, buf, sizeof buf));
		rf_join(fp, sizeof fp, kp, rf_text(k));
		rt_cond *cond = &ru->conds[ru->nconds++];
		if ((rc = field_index(c, r, k, fp, &cond->field)) != FUNNEL_OK)
			return rc;
		for (size_t j = 0; j + 1 < ru->nconds; j++) {
			if (ru->conds[j].field == cond->field)
				return rf_err(c, k, fp, "duplicate field");
		}
		if ((rc = parse_cond(c, yaml_document_get_node(c->doc, kv->value), fp, cond)) != FUNNEL_OK)
			return rc;
	}
	return FUNNEL_OK;
}

static int
parse_fallback(rf_ctx *c, rt_rules *r, yaml_node_t *n)
{
	static const char *const keys[] = { "queue", "sla_minutes" };
	yaml_node_t *v[2];
	int rc;

	if ((rc = rf_map(c, n, "routing.fallback", keys, 2, "queue, sla_minutes", 0, v)) != FUNNEL_OK)
		return rc;
	if (v[0] == NULL)
		return rf_err(c, n, "routing.fallback", "missing \"queue\" (the owner of unrouted leads)");
	if ((rc = get_name(c, v[0], "routing.fallback.queue", RT_MAX_NAME, &r->fallback)) != FUNNEL_OK)
		return rc;
	if (rt_rep_index(r, r->fallback) >= 0)
		return rf_err(c, v[0], "routing.fallback.queue", "\"%s\" is a rep: a queue needs a name "
		              "of its own", r->fallback);
	/* leads are told apart by their team's name: a queue named as a team
	 * would get that team's SLA and escalation instead of its own */
	if (rt_team_index(r, r->fallback) >= 0)
		return rf_err(c, v[0], "routing.fallback.queue", "\"%s\" is a team: a queue needs "
		              "a name of its own", r->fallback);
	if (v[1] != NULL &&
	    (rc = get_sla(c, v[1], "routing.fallback.sla_minutes", &r->fallback_sla_ns)) != FUNNEL_OK)
		return rc;
	return FUNNEL_OK;
}

static int
parse_routing(rf_ctx *c, rt_rules *r, yaml_node_t *n)
{
	static const char *const keys[] = { "teams", "rules", "fallback", "keep_owner" };
	yaml_node_t *v[4];
	size_t count;
	int rc;

	if ((rc = rf_map(c, n, "routing", keys, 4, "teams, rules, fallback, keep_owner", 0, v)) !=
	    FUNNEL_OK)
		return rc;
	r->keep_owner = 1;
	if (v[3] != NULL && (rc = rf_bool(c, v[3], "routing.keep_owner", &r->keep_owner)) != FUNNEL_OK)
		return rc;
	if ((rc = rf_list(c, v[0], "routing.teams", &count)) != FUNNEL_OK)
		return rc;
	if (count == 0)
		return rf_err(c, v[0] ? v[0] : n, "routing.teams", "expected one or more teams");
	for (size_t i = 0; i < count; i++) {
		char ip[RF_PATH_BYTES];
		rf_join_index(ip, sizeof ip, "routing.teams", i);
		if (r->nteams == MAX_TEAMS)
			return rf_err(c, rf_item(c, v[0], i), ip, "too many teams (at most %d)", MAX_TEAMS);
		if ((rc = parse_team(c, r, rf_item(c, v[0], i), ip)) != FUNNEL_OK)
			return rc;
	}
	if ((rc = rf_list(c, v[1], "routing.rules", &count)) != FUNNEL_OK)
		return rc;
	for (size_t i = 0; i < count; i++) {
		char ip[RF_PATH_BYTES];
		rf_join_index(ip, sizeof ip, "routing.rules", i);
		if (r->nrules == MAX_RULES)
			return rf_err(c, rf_item(c, v[1], i), ip, "too many rules (at most %d)", MAX_RULES);
		if ((rc = parse_rule(c, r, rf_item(c, v[1], i), ip)) != FUNNEL_OK)
			return rc;
	}
	if (v[2] == NULL)
		return rf_err(c, n, "routing", "missing \"fallback\" (where leads no rule matches go)");
	return parse_fallback(c, r, v[2]);
}

int
rt_rules_parse(const char *text, size_t len, const char *filename, rt_rules **out, char *err,
               size_t errlen)
{
	rf_ctx c = { .file = filename ? filename : "funnel.yaml", .err = err, .errlen = errlen };
	yaml_document_t doc;
	yaml_node_t *root, *v[2];
	static const char *const keys[] = { "version", "routing" };
	uint8_t hash[32];
	int rc;

	*out = NULL;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (sodium_init() < 0)
		return FUNNEL_EINTERNAL;
	rt_rules *r = calloc(1, sizeof *r);
	if (r == NULL || (r->text = malloc(len + 1)) == NULL ||
	    (r->teams = calloc(MAX_TEAMS, sizeof *r->teams)) == NULL ||
	    (r->reps = calloc(MAX_REPS, sizeof *r->reps)) == NULL ||
	    (r->rules = calloc(MAX_RULES, sizeof *r->rules)) == NULL) {
		rt_rules_destroy(&r);
		return rf_enomem(&c);
	}
	memcpy(r->text, text, len);
	r->text[len] = '\0';
	r->len = len;
	crypto_generichash(hash, sizeof hash, (const unsigned char *)text, len, NULL, 0);
	fp_hex(hash, sizeof hash, r->hash_hex);

	if ((rc = rf_parse(&c, r->text, len, &doc, &root)) != FUNNEL_OK) {
		rt_rules_destroy(&r);
		return rc;
	}
	if (root == NULL)
		rc = rf_err(&c, NULL, "", "the file is empty: expected version and routing");
	else if ((rc = rf_map(&c, root, "", keys, 2, "version, routing", 1, v)) != FUNNEL_OK)
		;
	else if (v[0] == NULL)
		rc = rf_err(&c, root, "", "missing \"version\" (a name for this edition of the rules)");
	else if ((rc = rf_string(&c, v[0], "version", 64, &r->version)) != FUNNEL_OK)
		;
	else if (v[1] == NULL)
		rc = rf_err(&c, root, "", "missing \"routing\"");
	else
		rc = parse_routing(&c, r, v[1]);
	yaml_document_delete(&doc);
	if (rc != FUNNEL_OK) {
		rt_rules_destroy(&r);
		return rc;
	}
	*out = r;
	return FUNNEL_OK;
}

RF_DEFINE_LOAD(rt_rules_load, rt_rules, rt_rules_parse)

const char *
rt_rules_version(const rt_rules *r)
{
	return r->version;
}

const char *
rt_rules_hash_hex(const rt_rules *r)
{
	return r->hash_hex;
}

const char *
rt_rules_text(const rt_rules *r, size_t *len)
{
	*len = r->len;
	return r->text;
}

size_t
rt_rules_team_count(const rt_rules *r)
{
	return r->nteams;
}

size_t
rt_rules_rule_count(const rt_rules *r)
{
	return r->nrules;
}

size_t
rt_rules_rep_count(const rt_rules *r)
{
	return r->nreps;
}

const char *
rt_rules_fallback(const rt_rules *r)
{
	return r->fallback;
}

uint64_t
rt_rules_sla_ns(const rt_rules *r, const char *team)
{
	int ti = rt_team_index(r, team);
	if (ti >= 0)
		return r->teams[ti].sla_ns;
	return strcmp(r->fallback, team) == 0 ? r->fallback_sla_ns : 0;
}

const char *
rt_rule_name(const rt_rules *r, size_t i)
{
	return i < r->nrules ? r->rules[i].name : NULL;
}

const char *
rt_rule_team(const rt_rules *r, size_t i)
{
	return i < r->nrules ? r->teams[r->rules[i].team].name : NULL;
}
