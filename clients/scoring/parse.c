/*
 * clients/scoring/parse.c - the `scoring` section of the rules file read
 * with libyaml (through clients/common/rulesfile.h) into compiled rules
 * (compiled.h), their lifecycle and accessors.  The contract is rules.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <sodium.h>
#include <yaml.h>

#include "funnel/error.h"
#include "mp.h"
#include "model.h"
#include "compiled.h"
#include "rules.h"
#include "rulesfile.h"
#include "seal.h"

static void
cond_free(sc_cond *c)
{
	free(c->field);
	rf_value_release(&c->eq);
	for (size_t i = 0; i < c->n_in; i++)
		rf_value_release(&c->in[i]);
	free(c->in);
	pcre2_code_free(c->re);
}

void
sc_rules_destroy(sc_rules **rp)
{
	if (rp == NULL || *rp == NULL)
		return;
	sc_rules *r = *rp;
	for (size_t i = 0; i < r->n; i++) {
		sc_rule *ru = &r->rules[i];
		free(ru->name);
		for (size_t j = 0; j < ru->n_on; j++)
			free(ru->on[j]);
		free(ru->on);
		for (size_t j = 0; j < ru->n_all; j++)
			cond_free(&ru->all[j]);
		free(ru->all);
		for (size_t j = 0; j < ru->n_any; j++)
			cond_free(&ru->any[j]);
		free(ru->any);
	}
	free(r->rules);
	for (size_t i = 0; i < r->nfields; i++)
		free(r->fields[i]);
	free(r->fields);
	free(r->field_len);
	pcre2_match_context_free(r->mctx);
	free(r->version);
	free(r->text);
	free(r);
	*rp = NULL;
}

/* The slot of a lead field, added if new.  -1 when out of memory. */
static int
field_slot(sc_rules *r, const char *name)
{
	for (size_t i = 0; i < r->nfields; i++) {
		if (strcmp(r->fields[i], name) == 0)
			return (int)i;
	}
	char **f = realloc(r->fields, (r->nfields + 1) * sizeof *f);
	if (f == NULL)
		return -1;
	r->fields = f;
	size_t *fl = realloc(r->field_len, (r->nfields + 1) * sizeof *fl);
	if (fl == NULL)
		return -1;
	r->field_len = fl;
	if ((f[r->nfields] = strdup(name)) == NULL)
		return -1;
	fl[r->nfields] = strlen(name);
	return (int)r->nfields++;
}

/* ---- the YAML document ---- */

typedef struct parser {
	rf_ctx c;                 /* the document, the file's name, the message buffer */
	sc_rules *r;
	size_t name_line[SC_MAX_RULES];   /* where each rule's name is, for duplicates */
} parser;

/* A whole number within +-1e9. */
static int
get_int(parser *p, yaml_node_t *n, const char *path, int *out)
{
	double v;
	int rc = rf_number(&p->c, n, path, &v);
	if (rc != FUNNEL_OK)
		return rc;
	if (v != floor(v) || fabs(v) > 1e9)
		return rf_err(&p->c, n, path, "expected a whole number, got %s", rf_text(n));
	*out = (int)v;
	return FUNNEL_OK;
}

/* ---- conditions and rules ---- */

/* Condition keys first: a rule's own keys start with them, so a rule's
 * inline condition is read from the same slots. */
enum {
	K_FIELD, K_EQUALS, K_IN, K_AT_LEAST, K_AT_MOST, K_ABOVE, K_BELOW, K_MATCHES, K_IGNORE_CASE,
	N_COND_KEYS,
	K_NAME = N_COND_KEYS, K_POINTS, K_WHEN, K_ANY, K_ON, K_ONCE, K_CAP,
	N_RULE_KEYS
};
static const char *const rule_keys[N_RULE_KEYS] = {
	"field", "equals", "in", "at_least", "at_most", "above", "below", "matches", "ignore_case",
	"name", "points", "when", "any", "on", "once", "cap",
};
#define COND_EXPECT "field, equals, in, at_least, at_most, above, below, matches, ignore_case"
#define RULE_EXPECT "name, points, on, once, cap, when, any, " COND_EXPECT

static int
has_cond_keys(yaml_node_t *const *vals)
{
	for (int i = 0; i < N_COND_KEYS; i++) {
		if (vals[i] != NULL)
			return 1;
	}
	return 0;
}

/*
 * A `matches` pattern compiled with PCRE2, read as POSIX extended
 * expressions read: bytes (never UTF), `.` matching newlines too, `$`
 * only at the very end.  Back-references are refused (they make matching
 * exponential); what else can backtrack long is cut by the match context's
 * limits, made here with the first pattern.
 */
static int
parse_regex(parser *p, yaml_node_t *n, const char *path, int icase, pcre2_code **out)
{
	char *re = NULL;
	int rc, e;
	PCRE2_SIZE at;
	uint32_t backrefs = 0;

	if ((rc = rf_string(&p->c, n, path, 1024, &re)) != FUNNEL_OK)
		return rc;
	uint32_t opts = PCRE2_DOTALL | PCRE2_DOLLAR_ENDONLY | PCRE2_NEVER_UTF | PCRE2_NEVER_UCP |
	                PCRE2_NEVER_BACKSLASH_C | (icase ? PCRE2_CASELESS : 0);
	*out = pcre2_compile((PCRE2_SPTR)re, PCRE2_ZERO_TERMINATED, opts, &e, &at, NULL);
	if (*out == NULL) {
		PCRE2_UCHAR why[128];
		if (e == PCRE2_ERROR_NOMEMORY) {
			free(re);
			return rf_enomem(&p->c);
		}
		pcre2_get_error_message(e, why, sizeof why);
		rc = rf_err(&p->c, n, path, "bad regular expression \"%s\": %s (at character %zu)", re,
		            (const char *)why, (size_t)at);
		free(re);
		return rc;
	}
	if (pcre2_pattern_info(*out, PCRE2_INFO_BACKREFMAX, &backrefs) != 0 || backrefs > 0) {
		rc = rf_err(&p->c, n, path, "regular expression \"%s\" refers back to a group (\\%u): "
		            "back-references are not supported (matching them can take exponential "
		            "time)", re, backrefs);
		free(re);
		return rc;
	}
	free(re);
	sc_rules *r = p->r;
	if (r->mctx == NULL) {
		if ((r->mctx = pcre2_match_context_create(NULL)) == NULL)
			return rf_enomem(&p->c);
		pcre2_set_match_limit(r->mctx, SC_RE_MATCH_LIMIT);
		pcre2_set_depth_limit(r->mctx, SC_RE_DEPTH_LIMIT);
		pcre2_set_heap_limit(r->mctx, SC_RE_HEAP_LIMIT_KIB);
	}
	return FUNNEL_OK;
}

/* One condition from vals[0..N_COND_KEYS); n is the mapping it is in.
 * Lead-field conditions (activity 0) get a field slot. */
static int
parse_cond(parser *p, yaml_node_t *n, yaml_node_t *const *vals, const char *path, int activity,
           sc_cond *c)
{
	char kp[RF_PATH_BYTES];
	int rc;
	static const unsigned numflag[] = { [K_AT_LEAST] = SC_AT_LEAST, [K_AT_MOST] = SC_AT_MOST,
	                                    [K_ABOVE] = SC_ABOVE, [K_BELOW] = SC_BELOW };

	if (vals[K_FIELD] == NULL)
		return rf_err(&p->c, n, path, "missing \"field\" (the field the condition reads)");
	rf_join(kp, sizeof kp, path, "field");
	if ((rc = rf_string(&p->c, vals[K_FIELD], kp, 128, &c->field)) != FUNNEL_OK)
		return rc;
	c->slot = -1;
	if (!activity && (c->slot = field_slot(p->r, c->field)) < 0)
		return rf_enomem(&p->c);
	if (vals[K_EQUALS] != NULL) {
		rf_join(kp, sizeof kp, path, "equals");
		if ((rc = rf_get_value(&p->c, vals[K_EQUALS], kp, SC_MAX_VALUE_BYTES, &c->eq)) !=
		    FUNNEL_OK)
			return rc;
		c->has_eq = 1;
	}
	if (vals[K_IN] != NULL) {
		rf_join(kp, sizeof kp, path, "in");
		if ((rc = rf_get_values(&p->c, vals[K_IN], kp, SC_MAX_VALUE_BYTES, &c->in, &c->n_in)) !=
		    FUNNEL_OK)
			return rc;
	}
	for (int k = K_AT_LEAST; k <= K_BELOW; k++) {
		if (vals[k] == NULL)
			continue;
		double *dst = k == K_AT_LEAST ? &c->at_least : k == K_AT_MOST ? &c->at_most :
		              k == K_ABOVE ? &c->above : &c->below;
		rf_join(kp, sizeof kp, path, rule_keys[k]);
		if ((rc = rf_number(&p->c, vals[k], kp, dst)) != FUNNEL_OK)
			return rc;
		c->num_ops |= numflag[k];
	}
	/* bounds that leave no number make a condition that never holds:
	 * a mistake (at_least 5000 with at_most 200), said here.  The
	 * tighter of each side's bounds; at_least/at_most include theirs. */
	const char *lname = NULL, *hname = NULL;
	double l = 0, h = 0;
	int lincl = 0, hincl = 0;
	if (c->num_ops & SC_AT_LEAST)
		l = c->at_least, lincl = 1, lname = "at_least";
	if ((c->num_ops & SC_ABOVE) && (lname == NULL || c->above >= l))
		l = c->above, lincl = 0, lname = "above";
	if (c->num_ops & SC_AT_MOST)
		h = c->at_most, hincl = 1, hname = "at_most";
	if ((c->num_ops & SC_BELOW) && (hname == NULL || c->below <= h))
		h = c->below, hincl = 0, hname = "below";
	if (lname != NULL && hname != NULL && (l > h || (l == h && !(lincl && hincl))))
		return rf_err(&p->c, n, path, "%s %g and %s %g leave no number: this condition can "
		              "never hold", lname, l, hname, h);
	int icase = 0;
	if (vals[K_IGNORE_CASE] != NULL) {
		rf_join(kp, sizeof kp, path, "ignore_case");
		if ((rc = rf_bool(&p->c, vals[K_IGNORE_CASE], kp, &icase)) != FUNNEL_OK)
			return rc;
		if (vals[K_MATCHES] == NULL)
			return rf_err(&p->c, vals[K_IGNORE_CASE], kp, "ignore_case applies to matches only");
	}
	if (vals[K_MATCHES] != NULL) {
		rf_join(kp, sizeof kp, path, "matches");
		if ((rc = parse_regex(p, vals[K_MATCHES], kp, icase, &c->re)) != FUNNEL_OK)
			return rc;
	}
	c->wants_num = c->num_ops != 0 || (c->has_eq && c->eq.is_num);
	for (size_t i = 0; i < c->n_in; i++)
		c->wants_num |= c->in[i].is_num;
	if (!c->has_eq && c->n_in == 0 && c->num_ops == 0 && c->re == NULL)
		return rf_err(&p->c, n, path, "a condition needs one of equals, in, at_least, at_most, above, "
		            "below or matches");
	return FUNNEL_OK;
}

/* A non-empty list of conditions (when, any): its length in *count. */
static int
cond_list_len(parser *p, yaml_node_t *list, const char *path, size_t *count)
{
	int rc = rf_list(&p->c, list, path, count);
	if (rc == FUNNEL_OK && *count == 0)
		return rf_err(&p->c, list, path, "expected a list of one or more conditions");
	return rc;
}

/* Append the conditions of list (cond_list_len checked it) to dst[*n..]. */
static int
parse_cond_list(parser *p, yaml_node_t *list, const char *path, int activity, sc_cond *dst,
                size_t *n)
{
	size_t count = (size_t)(list->data.sequence.items.top - list->data.sequence.items.start);
	int rc;
	for (size_t i = 0; i < count; i++) {
		char ip[RF_PATH_BYTES];
		yaml_node_t *vals[N_COND_KEYS], *cn = rf_item(&p->c, list, i);
		rf_join_index(ip, sizeof ip, path, i);
		sc_cond *c = &dst[(*n)++];
		if ((rc = rf_map(&p->c, cn, ip, rule_keys, N_COND_KEYS, COND_EXPECT, 0, vals)) != FUNNEL_OK ||
		    (rc = parse_cond(p, cn, vals, ip, activity, c)) != FUNNEL_OK)
			return rc;
	}
	return FUNNEL_OK;
}

static int
parse_on(parser *p, yaml_node_t *n, const char *path, sc_rule *ru)
{
	int rc;
	if (n->type != YAML_SEQUENCE_NODE) {
		if ((ru->on = calloc(1, sizeof *ru->on)) == NULL)
			return rf_enomem(&p->c);
		ru->n_on = 1;
		return rf_string(&p->c, n, path, 128, &ru->on[0]);
	}
	size_t count;
	if ((rc = rf_list(&p->c, n, path, &count)) != FUNNEL_OK)
		return rc;
	if (count == 0)
		return rf_err(&p->c, n, path, "expected an activity kind or a list of them");
	if ((ru->on = calloc(count, sizeof *ru->on)) == NULL)
		return rf_enomem(&p->c);
	for (size_t i = 0; i < count; i++) {
		char ip[RF_PATH_BYTES];
		rf_join_index(ip, sizeof ip, path, i);
		ru->n_on = i + 1;
		if ((rc = rf_string(&p->c, rf_item(&p->c, n, i), ip, 128, &ru->on[i])) != FUNNEL_OK)
			return rc;
	}
	return FUNNEL_OK;
}

static int
parse_name(parser *p, yaml_node_t *n, const char *path, sc_rule *ru)
{
	int rc = rf_string(&p->c, n, path, SC_MAX_NAME_BYTES, &ru->name);
	if (rc != FUNNEL_OK)
		return rc;
	ru->name_len = strlen(ru->name);
	for (const unsigned char *c = (const unsigned char *)ru->name; *c; c++) {
		if (*c < 0x20 || *c == 0x7f)
			return rf_err(&p->c, n, path, "a rule name must not hold control characters");
	}
	sc_rules *r = p->r;
	for (size_t i = 0; i + 1 < r->n; i++) {
		if (strcmp(r->rules[i].name, ru->name) == 0)
			return rf_err(&p->c, n, path, "duplicate rule name \"%s\" (first at line %zu)", ru->name,
			            p->name_line[i]);
	}
	p->name_line[r->n - 1] = n->start_mark.line + 1;
	return FUNNEL_OK;
}

/* One rule of section `kind`; the rule was appended to r->rules already. */
static int
parse_rule(parser *p, yaml_node_t *n, const char *path, sc_kind kind, sc_rule *ru)
{
	yaml_node_t *v[N_RULE_KEYS];
	char kp[RF_PATH_BYTES];
	int rc;

	if ((rc = rf_map(&p->c, n, path, rule_keys, N_RULE_KEYS, RULE_EXPECT, 0, v)) != FUNNEL_OK)
		return rc;
	ru->kind = kind;
	if (v[K_NAME] == NULL)
		return rf_err(&p->c, n, path, "missing \"name\"");
	rf_join(kp, sizeof kp, path, "name");
	if ((rc = parse_name(p, v[K_NAME], kp, ru)) != FUNNEL_OK)
		return rc;

	/* what the rule reads: activities (with on) or lead fields */
	if (kind == SC_ENGAGEMENT && v[K_ON] == NULL)
		return rf_err(&p->c, n, path, "missing \"on\" (the activity kind or kinds that score)");
	if (kind == SC_FIT && v[K_ON] != NULL)
		return rf_err(&p->c, v[K_ON], path, "a fit rule reads lead fields and takes no \"on\": "
		            "rules on activities belong under engagement");
	ru->activity = v[K_ON] != NULL;
	if (ru->activity) {
		rf_join(kp, sizeof kp, path, "on");
		if ((rc = parse_on(p, v[K_ON], kp, ru)) != FUNNEL_OK)
			return rc;
	}
	for (int k = K_ONCE; k <= K_CAP; k++) {
		if (v[k] != NULL && !ru->activity) {
			rf_join(kp, sizeof kp, path, rule_keys[k]);
			return rf_err(&p->c, v[k], kp, "%s applies to rules on activities (with \"on\") only",
			            rule_keys[k]);
		}
	}

	if (v[K_POINTS] == NULL)
		return rf_err(&p->c, n, path, "missing \"points\"");
	rf_join(kp, sizeof kp, path, "points");
	if ((rc = rf_number(&p->c, v[K_POINTS], kp, &ru->points)) != FUNNEL_OK)
		return rc;
	if (fabs(ru->points) > 1e6)
		return rf_err(&p->c, v[K_POINTS], kp, "expected at most 1000000 points either way, got %s",
		            rf_text(v[K_POINTS]));
	if (kind == SC_NEGATIVE && !(ru->points < 0))
		return rf_err(&p->c, v[K_POINTS], kp, "a negative rule needs points below zero, got %s",
		            rf_text(v[K_POINTS]));
	if (kind != SC_NEGATIVE && !(ru->points > 0))
		return rf_err(&p->c, v[K_POINTS], kp, "expected points above zero, got %s "
		            "(penalties belong under negative)", rf_text(v[K_POINTS]));
	if (v[K_ONCE] != NULL) {
		rf_join(kp, sizeof kp, path, "once");
		if ((rc = rf_bool(&p->c, v[K_ONCE], kp, &ru->once)) != FUNNEL_OK)
			return rc;
	}
	if (v[K_CAP] != NULL) {
		rf_join(kp, sizeof kp, path, "cap");
		if ((rc = rf_number(&p->c, v[K_CAP], kp, &ru->cap)) != FUNNEL_OK)
			return rc;
		if (!(ru->cap > 0) || ru->cap > 1e9)
			return rf_err(&p->c, v[K_CAP], kp, "expected a number of points above zero, got %s",
			            rf_text(v[K_CAP]));
	}

	/* conditions: inline, then when (all hold), then any (one holds) */
	size_t n_when = 0, n_any = 0;
	char wp[RF_PATH_BYTES], ap[RF_PATH_BYTES];
	rf_join(wp, sizeof wp, path, "when");
	rf_join(ap, sizeof ap, path, "any");
	if (v[K_WHEN] != NULL && (rc = cond_list_len(p, v[K_WHEN], wp, &n_when)) != FUNNEL_OK)
		return rc;
	if (v[K_ANY] != NULL && (rc = cond_list_len(p, v[K_ANY], ap, &n_any)) != FUNNEL_OK)
		return rc;
	int inline_cond = has_cond_keys(v);
	if (inline_cond + n_when > 0 &&
	    (ru->all = calloc((size_t)inline_cond + n_when, sizeof *ru->all)) == NULL)
		return rf_enomem(&p->c);
	if (n_any > 0 && (ru->any = calloc(n_any, sizeof *ru->any)) == NULL)
		return rf_enomem(&p->c);
	if (inline_cond) {
		ru->n_all = 1;
		if ((rc = parse_cond(p, n, v, path, ru->activity, &ru->all[0])) != FUNNEL_OK)
			return rc;
	}
	if (n_when > 0 &&
	    (rc = parse_cond_list(p, v[K_WHEN], wp, ru->activity, ru->all, &ru->n_all)) != FUNNEL_OK)
		return rc;
	if (n_any > 0 &&
	    (rc = parse_cond_list(p, v[K_ANY], ap, ru->activity, ru->any, &ru->n_any)) != FUNNEL_OK)
		return rc;
	if (!ru->activity && ru->n_all == 0 && ru->n_any == 0)
		return rf_err(&p->c, n, path, "a rule on lead fields needs a condition (field, when or any)");
	return FUNNEL_OK;
}

static int
parse_section(parser *p, yaml_node_t *list, const char *name, sc_kind kind)
{
	char path[RF_PATH_BYTES];
	size_t count;
	int rc;
	rf_join(path, sizeof path, "scoring", name);
	if ((rc = rf_list(&p->c, list, path, &count)) != FUNNEL_OK)
		return rc;
	for (size_t i = 0; i < count; i++) {
		char ip[RF_PATH_BYTES];
		yaml_node_t *n = rf_item(&p->c, list, i);
		rf_join_index(ip, sizeof ip, path, i);
		if (p->r->n == SC_MAX_RULES)
			return rf_err(&p->c, n, ip, "too many rules (at most %d)", SC_MAX_RULES);
		sc_rule *ru = &p->r->rules[p->r->n++];
		if ((rc = parse_rule(p, n, ip, kind, ru)) != FUNNEL_OK)
			return rc;
	}
	return FUNNEL_OK;
}

static int
parse_decay(parser *p, yaml_node_t *n)
{
	static const char *const keys[] = { "half_life_days", "half_life_hours" };
	static const double ns[] = { 86400e9, 3600e9 };
	yaml_node_t *v[2];
	char kp[RF_PATH_BYTES];
	int rc;
	if ((rc = rf_map(&p->c, n, "scoring.decay", keys, 2, "half_life_days, half_life_hours", 0, v)) !=
	    FUNNEL_OK)
		return rc;
	if ((v[0] == NULL) == (v[1] == NULL))
		return rf_err(&p->c, n, "scoring.decay", "expected one of half_life_days or half_life_hours");
	int k = v[0] != NULL ? 0 : 1;
	double d;
	rf_join(kp, sizeof kp, "scoring.decay", keys[k]);
	if ((rc = rf_number(&p->c, v[k], kp, &d)) != FUNNEL_OK)
		return rc;
	/* above zero, at most about a century */
	if (!(d > 0) || d * ns[k] > 3.2e18)
		return rf_err(&p->c, v[k], kp, "expected a duration above zero and at most 100 years, got %s",
		            rf_text(v[k]));
	p->r->half_life_ns = (uint64_t)(d * ns[k]);
	if (p->r->half_life_ns == 0)
		p->r->half_life_ns = 1;
	return FUNNEL_OK;
}

static int
parse_scoring(parser *p, yaml_node_t *n)
{
	enum { S_THRESHOLD, S_MINFIT, S_DECAY, S_RECYCLE, S_FIT, S_ENG, S_NEG, N_S };
	static const char *const keys[N_S] = {
		"threshold", "minimum_fit", "decay", "on_recycle", "fit", "engagement", "negative",
	};
	yaml_node_t *v[N_S];
	sc_rules *r = p->r;
	int rc;

	if ((rc = rf_map(&p->c, n, "scoring", keys, N_S,
	                 "threshold, minimum_fit, decay, on_recycle, fit, engagement, negative", 0,
	                 v)) != FUNNEL_OK)
		return rc;
	if (v[S_THRESHOLD] == NULL)
		return rf_err(&p->c, n, "scoring", "missing \"threshold\" (the score that makes a lead an MQL)");
	if ((rc = get_int(p, v[S_THRESHOLD], "scoring.threshold", &r->threshold)) != FUNNEL_OK)
		return rc;
	if (v[S_MINFIT] != NULL) {
		if ((rc = get_int(p, v[S_MINFIT], "scoring.minimum_fit", &r->min_fit)) != FUNNEL_OK)
			return rc;
		r->has_min_fit = 1;
	}
	if (v[S_DECAY] != NULL && (rc = parse_decay(p, v[S_DECAY])) != FUNNEL_OK)
		return rc;
	r->reset_on_recycle = 1;
	if (v[S_RECYCLE] != NULL) {
		char buf[64];
		yaml_node_t *o = v[S_RECYCLE];
		if (o->type == YAML_SCALAR_NODE && strcmp(rf_text(o), "reset_engagement") == 0)
			r->reset_on_recycle = 1;
		else if (o->type == YAML_SCALAR_NODE && strcmp(rf_text(o), "keep") == 0)
			r->reset_on_recycle = 0;
		else
			return rf_err(&p->c, o, "scoring.on_recycle", "expected reset_engagement or keep, got %s",
			            rf_desc(o, buf, sizeof buf));
	}
	if ((rc = parse_section(p, v[S_FIT], "fit", SC_FIT)) != FUNNEL_OK ||
	    (rc = parse_section(p, v[S_ENG], "engagement", SC_ENGAGEMENT)) != FUNNEL_OK ||
	    (rc = parse_section(p, v[S_NEG], "negative", SC_NEGATIVE)) != FUNNEL_OK)
		return rc;
	return FUNNEL_OK;
}

static int
parse_top(parser *p, yaml_node_t *root)
{
	enum { T_VERSION, T_SCORING, T_ROUTING, T_SLA, T_FORMS, T_GOALS, N_T };
	static const char *const keys[N_T] = { "version", "scoring", "routing", "sla", "forms", "goals" };
	yaml_node_t *v[N_T];
	int rc;

	if ((rc = rf_map(&p->c, root, "", keys, N_T, "version, scoring, routing, sla, forms, goals", 0, v)) != FUNNEL_OK)
		return rc;
	if (v[T_VERSION] == NULL)
		return rf_err(&p->c, root, "", "missing \"version\" (a name for this edition of the rules)");
	if ((rc = rf_string(&p->c, v[T_VERSION], "version", 64, &p->r->version)) != FUNNEL_OK)
		return rc;
	if (v[T_SCORING] == NULL)
		return rf_err(&p->c, root, "", "missing \"scoring\"");
	/* routing, sla, forms and goals belong to other services: not read here */
	return parse_scoring(p, v[T_SCORING]);
}

int
sc_rules_parse(const char *text, size_t len, const char *filename, sc_rules **out, char *err,
               size_t errlen)
{
	parser p = { .c = { .file = filename ? filename : "funnel.yaml", .err = err,
	                    .errlen = errlen } };
	yaml_document_t doc;
	yaml_node_t *root;
	int rc;

	*out = NULL;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (sodium_init() < 0)
		return FUNNEL_EINTERNAL;
	sc_rules *r = calloc(1, sizeof *r);
	if (r == NULL || (r->text = malloc(len + 1)) == NULL ||
	    (r->rules = calloc(SC_MAX_RULES, sizeof *r->rules)) == NULL) {
		sc_rules_destroy(&r);
		return rf_enomem(&p.c);
	}
	memcpy(r->text, text, len);
	r->text[len] = '\0';
	r->len = len;
	crypto_generichash(r->hash, sizeof r->hash, (const unsigned char *)text, len, NULL, 0);
	fp_hex(r->hash, sizeof r->hash, r->hash_hex);
	p.r = r;
	if (field_slot(r, "email_domain") != 0) {
		sc_rules_destroy(&r);
		return rf_enomem(&p.c);
	}
	if ((rc = rf_parse(&p.c, r->text, len, &doc, &root)) != FUNNEL_OK) {
		sc_rules_destroy(&r);
		return rc;
	}
	if (root == NULL)
		rc = rf_err(&p.c, NULL, "", "the file is empty: expected version and scoring");
	else
		rc = parse_top(&p, root);
	yaml_document_delete(&doc);
	if (rc != FUNNEL_OK) {
		sc_rules_destroy(&r);
		return rc;
	}
	*out = r;
	return FUNNEL_OK;
}

RF_DEFINE_LOAD(sc_rules_load, sc_rules, sc_rules_parse)

/* ---- accessors ---- */

const char *
sc_rules_version(const sc_rules *r)
{
	return r->version;
}

const uint8_t *
sc_rules_hash(const sc_rules *r)
{
	return r->hash;
}

const char *
sc_rules_hash_hex(const sc_rules *r)
{
	return r->hash_hex;
}

const char *
sc_rules_text(const sc_rules *r, size_t *len)
{
	if (len != NULL)
		*len = r->len;
	return r->text;
}

int
sc_rules_threshold(const sc_rules *r)
{
	return r->threshold;
}

int
sc_rules_minimum_fit(const sc_rules *r, int *out)
{
	if (r->has_min_fit)
		*out = r->min_fit;
	return r->has_min_fit;
}

uint64_t
sc_rules_half_life(const sc_rules *r)
{
	return r->half_life_ns;
}

int
sc_rules_resets_on_recycle(const sc_rules *r)
{
	return r->reset_on_recycle;
}

size_t
sc_rules_count(const sc_rules *r)
{
	return r->n;
}

const char *
sc_rule_name(const sc_rules *r, size_t i)
{
	return i < r->n ? r->rules[i].name : NULL;
}

const char *
sc_rule_kind(const sc_rules *r, size_t i)
{
	static const char *const names[] = { "fit", "engagement", "negative" };
	return i < r->n ? names[r->rules[i].kind] : NULL;
}

int
sc_rule_on_activity(const sc_rules *r, size_t i)
{
	return i < r->n ? r->rules[i].activity : 0;
}

size_t
sc_rules_field_count(const sc_rules *r)
{
	return r->nfields;
}

const char *
sc_rules_field_name(const sc_rules *r, size_t i)
{
	return i < r->nfields ? r->fields[i] : NULL;
}
