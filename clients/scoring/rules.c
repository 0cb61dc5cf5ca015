/*
 * clients/scoring/rules.c - the scoring rules engine: the rules file read
 * with libyaml (through clients/common/rulesfile.h) into compiled
 * conditions, then per-lead state, its msgpack encoding, and sc_apply.
 * The contract is rules.h.
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
#include "rules.h"
#include "rulesfile.h"
#include "seal.h"

/* ---- the compiled rules ---- */

typedef enum sc_kind { SC_FIT, SC_ENGAGEMENT, SC_NEGATIVE } sc_kind;

enum { SC_AT_LEAST = 1, SC_AT_MOST = 2, SC_ABOVE = 4, SC_BELOW = 8 };

/* One condition: every operator it has must hold on the field's value. */
typedef struct sc_cond {
	char *field;
	int slot;                 /* lead-field slot, -1 for activity data */
	int has_eq;
	rf_value eq;
	rf_value *in;
	size_t n_in;
	unsigned num_ops;         /* SC_AT_LEAST | ... */
	int wants_num;            /* some operator compares numbers */
	double at_least, at_most, above, below;
	pcre2_code *re;           /* `matches`, compiled at load; NULL: none */
} sc_cond;

typedef struct sc_rule {
	char *name;
	size_t name_len;
	sc_kind kind;
	int activity;             /* reads lead.activity (has "on"), else lead fields */
	double points;
	int once;
	double cap;               /* 0: none */
	char **on;
	size_t n_on;
	sc_cond *all;             /* inline condition, then "when": all hold */
	size_t n_all;
	sc_cond *any;             /* "any": one holds (when n_any > 0) */
	size_t n_any;
} sc_rule;

struct sc_rules {
	char *text;               /* the file, NUL-terminated */
	size_t len;
	uint8_t hash[FUNNEL_HASH_BYTES];
	char hash_hex[2 * FUNNEL_HASH_BYTES + 1];
	char *version;
	int threshold;
	int has_min_fit, min_fit;
	uint64_t half_life_ns;    /* 0: no decay */
	int reset_on_recycle;
	sc_rule *rules;           /* SC_MAX_RULES slots, n used */
	size_t n;
	char **fields;            /* lead fields read; [0] is email_domain */
	size_t *field_len;
	size_t nfields;
	/* the limits of every `matches` test; NULL when no rule has one.  Never
	 * changed after parsing, so threads share it (PCRE2 allows that). */
	pcre2_match_context *mctx;
};

/* A state records which rules its fit flags were computed under: the
 * first TAG_BYTES of the rules' hash (zeros: never computed). */
#define TAG_BYTES 8

/* What a lead keeps per rule.  Lead-field rules use matched, fired and
 * last_seq; activity rules v (points at ts t), fired and last_seq. */
typedef struct sc_rstate {
	double v;
	uint64_t t;
	uint32_t fired;
	uint64_t last_seq;
	int matched;
} sc_rstate;

/* A lead field's value, NUL-terminated; set 0 when the lead has none. */
typedef struct sc_field {
	int set;
	char text[SC_MAX_VALUE_BYTES + 1];
} sc_field;

/* Fixed-size parts only, so that applying and decoding never allocate. */
struct sc_lead {
	const sc_rules *rules;    /* the rules it was made for */
	int above;
	int rep[3];               /* last reported fit, engagement, total */
	uint64_t at;              /* event time of the last record applied (0: none): the
	                           * next one never counts before it */
	uint8_t fit_tag[TAG_BYTES];   /* rules the matched flags are from */
	sc_field *fields;         /* one per lead field */
	sc_rstate *rs;            /* one per rule */
	msgpack_zone zone;        /* scratch for sc_lead_decode */
	int has_zone;
	/* PCRE2's workspace for `matches` tests (NULL when the rules have
	 * none): per state, since a state belongs to one thread.  Scratch only:
	 * matching through a const sc_lead * writes here and nowhere else. */
	pcre2_match_data *md;
};

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
sc_rules_free(sc_rules **rp)
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
		sc_rules_free(&r);
		return rf_enomem(&p.c);
	}
	memcpy(r->text, text, len);
	r->text[len] = '\0';
	r->len = len;
	crypto_generichash(r->hash, sizeof r->hash, (const unsigned char *)text, len, NULL, 0);
	fp_hex(r->hash, sizeof r->hash, r->hash_hex);
	p.r = r;
	if (field_slot(r, "email_domain") != 0) {
		sc_rules_free(&r);
		return rf_enomem(&p.c);
	}
	if ((rc = rf_parse(&p.c, r->text, len, &doc, &root)) != FUNNEL_OK) {
		sc_rules_free(&r);
		return rc;
	}
	if (root == NULL)
		rc = rf_err(&p.c, NULL, "", "the file is empty: expected version and scoring");
	else
		rc = parse_top(&p, root);
	yaml_document_delete(&doc);
	if (rc != FUNNEL_OK) {
		sc_rules_free(&r);
		return rc;
	}
	*out = r;
	return FUNNEL_OK;
}

int
sc_rules_load(const char *path, sc_rules **out, char *err, size_t errlen)
{
	char *text;
	size_t len;
	*out = NULL;
	int rc = rf_read_file(path, &text, &len, err, errlen);
	if (rc != FUNNEL_OK)
		return rc;
	rc = sc_rules_parse(text, len, path, out, err, errlen);
	free(text);
	return rc;
}

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

double
sc_rule_points(const sc_rules *r, size_t i)
{
	return i < r->n ? r->rules[i].points : 0;
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


/* ---- evaluating conditions ---- */

/* A msgpack key equals the n bytes of s. */
static int
key_is(const msgpack_object *k, const char *s, size_t n)
{
	return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
	       memcmp(k->via.str.ptr, s, n) == 0;
}

/* v is the field's value, NULL when the lead or activity has none.  A
 * `matches` test that PCRE2 stops (a limit, no memory) does not hold and
 * adds one to *limited (limited may be NULL). */
static int
cond_holds(const sc_rules *r, const sc_lead *st, const sc_cond *c, const char *v,
           uint32_t *limited)
{
	double num = 0;
	if (v == NULL)
		return 0;
	int isnum = c->wants_num && rf_parse_number(v, &num) == 0;
	if (c->has_eq && !rf_value_eq(&c->eq, v, isnum, num))
		return 0;
	if (c->n_in > 0 && !rf_value_in(c->in, c->n_in, v, isnum, num))
		return 0;
	if (c->num_ops != 0) {
		if (!isnum)
			return 0;
		if (((c->num_ops & SC_AT_LEAST) && !(num >= c->at_least)) ||
		    ((c->num_ops & SC_AT_MOST) && !(num <= c->at_most)) ||
		    ((c->num_ops & SC_ABOVE) && !(num > c->above)) ||
		    ((c->num_ops & SC_BELOW) && !(num < c->below)))
			return 0;
	}
	if (c->re == NULL)
		return 1;
	int m = pcre2_match(c->re, (PCRE2_SPTR)v, PCRE2_ZERO_TERMINATED, 0, 0, st->md, r->mctx);
	if (m >= 0)
		return 1;
	if (m != PCRE2_ERROR_NOMATCH && limited != NULL && *limited < UINT32_MAX)
		(*limited)++;
	return 0;
}

/* The value a condition reads: a lead field, or a key of activity data. */
static const char *
cond_value(const sc_cond *c, const sc_lead *st, const msgpack_object *data, char *buf)
{
	if (c->slot >= 0)
		return st->fields[c->slot].set ? st->fields[c->slot].text : NULL;
	const msgpack_object *o = mp_find(data, c->field);
	return o != NULL && rf_value_text(o, buf, SC_MAX_VALUE_BYTES + 1) == 1 ? buf : NULL;
}

/* Rule ru of r holds on the lead's fields (data NULL) or on an activity's
 * data; limited as for cond_holds. */
static int
rule_holds(const sc_rules *r, const sc_rule *ru, const sc_lead *st, const msgpack_object *data,
           uint32_t *limited)
{
	char buf[SC_MAX_VALUE_BYTES + 1];
	for (size_t i = 0; i < ru->n_all; i++) {
		if (!cond_holds(r, st, &ru->all[i], cond_value(&ru->all[i], st, data, buf), limited))
			return 0;
	}
	if (ru->n_any == 0)
		return 1;
	for (size_t i = 0; i < ru->n_any; i++) {
		if (cond_holds(r, st, &ru->any[i], cond_value(&ru->any[i], st, data, buf), limited))
			return 1;
	}
	return 0;
}

static int
rule_on(const sc_rule *ru, funnel_str kind)
{
	for (size_t i = 0; i < ru->n_on; i++) {
		if (strlen(ru->on[i]) == kind.len && memcmp(ru->on[i], kind.ptr, kind.len) == 0)
			return 1;
	}
	return 0;
}

/* ---- per-lead state ---- */

sc_lead *
sc_lead_new(const sc_rules *r)
{
	sc_lead *st = calloc(1, sizeof *st);
	if (st == NULL)
		return NULL;
	st->rules = r;
	if ((st->fields = calloc(r->nfields, sizeof *st->fields)) == NULL ||
	    (st->rs = calloc(r->n ? r->n : 1, sizeof *st->rs)) == NULL ||
	    !(st->has_zone = msgpack_zone_init(&st->zone, 1024)) ||
	    (r->mctx != NULL && (st->md = pcre2_match_data_create(1, NULL)) == NULL))
		sc_lead_free(&st);
	return st;
}

void
sc_lead_reset(sc_lead *st)
{
	const sc_rules *r = st->rules;
	/* values are wiped, not just marked unset: erasure means it */
	memset(st->fields, 0, r->nfields * sizeof *st->fields);
	memset(st->rs, 0, r->n * sizeof *st->rs);
	memset(st->fit_tag, 0, sizeof st->fit_tag);
	st->above = 0;
	st->at = 0;
	memset(st->rep, 0, sizeof st->rep);
}

void
sc_lead_free(sc_lead **stp)
{
	if (stp == NULL || *stp == NULL)
		return;
	sc_lead *st = *stp;
	if (st->has_zone)
		msgpack_zone_destroy(&st->zone);
	pcre2_match_data_free(st->md);
	free(st->fields);
	free(st->rs);
	free(st);
	*stp = NULL;
}

int
sc_lead_is_empty(const sc_lead *st)
{
	const sc_rules *r = st->rules;
	if (st->above || st->rep[0] || st->rep[1] || st->rep[2])
		return 0;
	for (size_t i = 0; i < r->nfields; i++) {
		if (st->fields[i].set)
			return 0;
	}
	for (size_t i = 0; i < r->n; i++) {
		const sc_rstate *s = &st->rs[i];
		if (s->v != 0 || s->fired || s->matched)
			return 0;
	}
	return 1;
}

int
sc_lead_above(const sc_lead *st)
{
	return st->above;
}

const char *
sc_lead_field(const sc_lead *st, size_t i)
{
	return i < st->rules->nfields && st->fields[i].set ? st->fields[i].text : NULL;
}

/* Set field i to v (at most SC_MAX_VALUE_BYTES bytes; NULL clears it). */
static void
set_field(sc_lead *st, size_t i, const char *v, size_t len, int lower)
{
	sc_field *f = &st->fields[i];
	f->set = v != NULL;
	if (v == NULL)
		len = 0;
	memcpy(f->text, v ? v : "", len);
	f->text[len] = '\0';
	for (size_t j = 0; lower && j < len; j++) {
		if (f->text[j] >= 'A' && f->text[j] <= 'Z')
			f->text[j] = (char)(f->text[j] - 'A' + 'a');
	}
}

/* The lead fields a lead.captured data map carries. */
static void
capture(const sc_rules *r, sc_lead *st, const msgpack_object *data)
{
	char buf[SC_MAX_VALUE_BYTES + 1];
	if (data->type != MSGPACK_OBJECT_MAP)
		return;
	/* A sealed email (PROTOCOL.md "Personal data and erasure") comes with
	 * the email_domain funneld derived in clear: the domain is read from
	 * there, so no personal value ever enters the view. */
	const msgpack_object *em = mp_find(data, "email"), *dom = mp_find(data, "email_domain");
	if (em != NULL && fp_seal_is(em) && dom != NULL) {
		int t = rf_value_text(dom, buf, sizeof buf);
		if (t == 1 && buf[0] != '\0')
			set_field(st, 0, buf, strlen(buf), 1);
		else
			set_field(st, 0, NULL, 0, 0);
	}
	for (uint32_t k = 0; k < data->via.map.size; k++) {
		const msgpack_object_kv *kv = &data->via.map.ptr[k];
		int t = rf_value_text(&kv->val, buf, sizeof buf);
		if (t < 0)
			continue;
		if (key_is(&kv->key, "email", 5)) {
			const char *at = t == 1 ? strrchr(buf, '@') : NULL;
			if (at != NULL && at[1] != '\0')
				set_field(st, 0, at + 1, strlen(at + 1), 1);
			else
				set_field(st, 0, NULL, 0, 0);
		}
		/* slot 0, email_domain, is only ever derived */
		for (size_t i = 1; i < r->nfields; i++) {
			if (key_is(&kv->key, r->fields[i], r->field_len[i])) {
				set_field(st, i, t == 1 ? buf : NULL, t == 1 ? strlen(buf) : 0, 0);
				break;
			}
		}
	}
}

/* ---- scores ---- */

/* An activity rule's points at time `at`. */
static double
decayed(const sc_rules *r, const sc_rstate *s, uint64_t at)
{
	if (s->v == 0 || r->half_life_ns == 0 || at <= s->t)
		return s->v;
	return s->v * exp2(-((double)(at - s->t) / (double)r->half_life_ns));
}

/* Half away from zero, within +-1e9 so that fit + engagement fits an int. */
static int
round_score(double x)
{
	double y = round(x);
	if (y > 1e9)
		return 1000000000;
	if (y < -1e9)
		return -1000000000;
	return (int)y;
}

/* The matched flags of lead-field rules were computed under these rules.
 * Fields change only with lead.captured, so the flags stay right until
 * the next capture or the next rules. */
static int
fit_fresh(const sc_rules *r, const sc_lead *st)
{
	return memcmp(st->fit_tag, r->hash, TAG_BYTES) == 0;
}

/* Lead-field rule i holds: its flag when fresh, else evaluated now. */
static int
fit_holds(const sc_rules *r, const sc_lead *st, size_t i, int fresh)
{
	return fresh ? st->rs[i].matched : rule_holds(r, &r->rules[i], st, NULL, NULL);
}

/* fit, engagement, total at time `at`, summed in rule order. */
static void
scores_at(const sc_rules *r, const sc_lead *st, uint64_t at, int s[3])
{
	double fit = 0, eng = 0;
	int fresh = fit_fresh(r, st);
	for (size_t i = 0; i < r->n; i++) {
		if (r->rules[i].activity)
			eng += decayed(r, &st->rs[i], at);
		else if (fit_holds(r, st, i, fresh))
			fit += r->rules[i].points;
	}
	s[0] = round_score(fit);
	s[1] = round_score(eng);
	s[2] = s[0] + s[1];
}

void
sc_scores(const sc_rules *r, const sc_lead *st, uint64_t at_ts, int *fit, int *engagement,
          int *total)
{
	int s[3];
	scores_at(r, st, at_ts, s);
	if (fit != NULL)
		*fit = s[0];
	if (engagement != NULL)
		*engagement = s[1];
	if (total != NULL)
		*total = s[2];
}

size_t
sc_contributions(const sc_rules *r, const sc_lead *st, uint64_t at_ts, sc_contrib *out,
                 size_t cap)
{
	size_t n = 0;
	int fresh = fit_fresh(r, st);
	for (size_t i = 0; i < r->n; i++) {
		const sc_rstate *s = &st->rs[i];
		double pts = r->rules[i].activity ? decayed(r, s, at_ts) :
		             fit_holds(r, st, i, fresh) ? r->rules[i].points : 0;
		if (pts == 0)
			continue;
		if (n < cap)
			out[n] = (sc_contrib){ (uint32_t)i, pts, s->fired, s->last_seq };
		n++;
	}
	return n;
}

/* An activity fires a rule at ts t: decay, add, cap. */
static void
fire_activity(const sc_rule *ru, sc_rstate *s, double now, uint64_t t, uint64_t seq)
{
	double v = now + ru->points;
	if (ru->cap > 0) {
		if (ru->points > 0 && v > ru->cap)
			v = ru->cap;
		else if (ru->points < 0 && v < -ru->cap)
			v = -ru->cap;
	}
	s->v = v;
	s->t = t;
	if (s->fired < UINT32_MAX)
		s->fired++;
	s->last_seq = seq;
}

int
sc_counts(const funnel_record *rec)
{
	if (rec->lead.ptr == NULL)
		return 0;
	switch (fp_evspec_lookup(rec->type.ptr, rec->type.len)->type) {
	case FP_EV_CAPTURED:
	case FP_EV_ACTIVITY:
	case FP_EV_RECYCLED:
	case FP_EV_REJECTED:
	case FP_EV_ERASED:
		return 1;
	default:
		return 0;
	}
}

int
sc_apply(const sc_rules *r, sc_lead *st, const funnel_record *rec, sc_outcome *out)
{
	uint8_t fired[SC_MAX_RULES] = { 0 };

	out->changed = out->qualify = 0;
	out->n_fired = 0;
	out->re_limited = 0;
	out->at = funnel_record_event_time(rec);
	out->fit = st->rep[0];
	out->engagement = st->rep[1];
	out->total = st->rep[2];
	if (st->rules != r)
		return FUNNEL_EINVAL;
	if (!sc_counts(rec))
		return FUNNEL_OK;
	const fp_evspec *spec = fp_evspec_lookup(rec->type.ptr, rec->type.len);
	if (spec->type == FP_EV_ERASED) {
		sc_lead_reset(st);
		out->fit = out->engagement = out->total = 0;
		return FUNNEL_OK;
	}
	/* decay runs on event time; a record dated before the lead's last one
	 * counts at that one's time, so no score is decayed backwards (a state
	 * written before `at` was kept: its rules' latest time stands in) */
	uint64_t prev = st->at;
	for (size_t i = 0; i < r->n; i++) {
		if (st->rs[i].t > prev)
			prev = st->rs[i].t;
	}
	const uint64_t t = funnel_record_event_time_after(rec, prev);
	out->at = st->at = t;
	const int captured = spec->type == FP_EV_CAPTURED;
	const int sent_back = spec->type == FP_EV_RECYCLED || spec->type == FP_EV_REJECTED;
	if (captured && rec->data != NULL)
		capture(r, st, rec->data);
	if (sent_back && r->reset_on_recycle) {
		for (size_t i = 0; i < r->n; i++) {
			if (r->rules[i].activity) {
				st->rs[i].v = 0;
				st->rs[i].t = t;
			}
		}
	}
	if (spec->type == FP_EV_ACTIVITY) {
		funnel_str kind = { NULL, 0 };
		if (mp_get_str(rec->data, "kind", &kind, NULL) == FUNNEL_OK) {
			for (size_t i = 0; i < r->n; i++) {
				const sc_rule *ru = &r->rules[i];
				sc_rstate *s = &st->rs[i];
				if (!ru->activity || !rule_on(ru, kind) || (ru->once && s->fired > 0) ||
				    !rule_holds(r, ru, st, rec->data, &out->re_limited))
					continue;
				fire_activity(ru, s, decayed(r, s, t), t, rec->seq);
				fired[i] = 1;
			}
		}
	}
	if (captured || !fit_fresh(r, st)) {
		for (size_t i = 0; i < r->n; i++) {
			sc_rstate *s = &st->rs[i];
			if (r->rules[i].activity)
				continue;
			int m = rule_holds(r, &r->rules[i], st, NULL, &out->re_limited);
			if (m && !s->matched) {
				if (s->fired < UINT32_MAX)
					s->fired++;
				s->last_seq = rec->seq;
				fired[i] = 1;
			}
			s->matched = m;
		}
		memcpy(st->fit_tag, r->hash, TAG_BYTES);
	}

	int sc[3];
	scores_at(r, st, t, sc);
	/* "above" follows the score on every record, the one that sends the
	 * lead back included: a lead sent back qualifies again only once it
	 * crosses from below, which that record itself never counts as */
	int above = sc[2] >= r->threshold && (!r->has_min_fit || sc[0] >= r->min_fit);
	if (above && !st->above && !sent_back) {
		int stage = rec->stage.ptr ? fp_stage_parse(rec->stage.ptr, rec->stage.len) : -1;
		out->qualify = stage == FP_STAGE_INQUIRY || stage == FP_STAGE_NURTURE;
	}
	st->above = above;
	out->changed = sc[0] != st->rep[0] || sc[1] != st->rep[1] || sc[2] != st->rep[2];
	memcpy(st->rep, sc, sizeof st->rep);
	out->fit = sc[0];
	out->engagement = sc[1];
	out->total = sc[2];
	for (size_t i = 0; i < r->n; i++) {
		if (fired[i])
			out->fired[out->n_fired++] = (uint32_t)i;
	}
	return FUNNEL_OK;
}

/* ---- the state as msgpack ---- */

static int
pack_bool(msgpack_packer *pk, int b)
{
	return b ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
}

int
sc_lead_encode(const sc_rules *r, const sc_lead *st, msgpack_sbuffer *out)
{
	msgpack_packer pk;
	int e = 0;
	uint32_t nf = 0, nfit = 0, neng = 0;

	if (st->rules != r)
		return FUNNEL_EINVAL;
	for (size_t i = 0; i < r->nfields; i++)
		nf += st->fields[i].set != 0;
	for (size_t i = 0; i < r->n; i++) {
		const sc_rstate *s = &st->rs[i];
		if (r->rules[i].activity)
			neng += s->v != 0 || s->fired != 0;
		else
			nfit += s->matched || s->fired != 0;
	}
	msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
	e |= msgpack_pack_map(&pk, 7 + (st->at != 0));
	e |= mp_pack_key(&pk, "v");
	e |= msgpack_pack_uint8(&pk, 1);
	if (st->at != 0) {
		e |= mp_pack_key(&pk, "at");
		e |= msgpack_pack_uint64(&pk, st->at);
	}
	e |= mp_pack_key(&pk, "rules");
	e |= msgpack_pack_bin_with_body(&pk, st->fit_tag, TAG_BYTES);
	e |= mp_pack_key(&pk, "above");
	e |= pack_bool(&pk, st->above);
	e |= mp_pack_key(&pk, "scores");
	e |= msgpack_pack_array(&pk, 3);
	for (int i = 0; i < 3; i++)
		e |= msgpack_pack_int(&pk, st->rep[i]);
	e |= mp_pack_key(&pk, "fields");
	e |= msgpack_pack_map(&pk, nf);
	for (size_t i = 0; i < r->nfields; i++) {
		if (!st->fields[i].set)
			continue;
		e |= msgpack_pack_str_with_body(&pk, r->fields[i], r->field_len[i]);
		e |= mp_pack_cstr(&pk, st->fields[i].text);
	}
	e |= mp_pack_key(&pk, "fit");
	e |= msgpack_pack_map(&pk, nfit);
	for (size_t i = 0; i < r->n; i++) {
		const sc_rstate *s = &st->rs[i];
		if (r->rules[i].activity || !(s->matched || s->fired != 0))
			continue;
		e |= msgpack_pack_str_with_body(&pk, r->rules[i].name, r->rules[i].name_len);
		e |= msgpack_pack_array(&pk, 3);
		e |= pack_bool(&pk, s->matched);
		e |= msgpack_pack_uint32(&pk, s->fired);
		e |= msgpack_pack_uint64(&pk, s->last_seq);
	}
	e |= mp_pack_key(&pk, "eng");
	e |= msgpack_pack_map(&pk, neng);
	for (size_t i = 0; i < r->n; i++) {
		const sc_rstate *s = &st->rs[i];
		if (!r->rules[i].activity || !(s->v != 0 || s->fired != 0))
			continue;
		e |= msgpack_pack_str_with_body(&pk, r->rules[i].name, r->rules[i].name_len);
		e |= msgpack_pack_array(&pk, 4);
		e |= msgpack_pack_double(&pk, s->v);
		e |= msgpack_pack_uint64(&pk, s->t);
		e |= msgpack_pack_uint32(&pk, s->fired);
		e |= msgpack_pack_uint64(&pk, s->last_seq);
	}
	return e ? FUNNEL_ENOMEM : FUNNEL_OK;
}

static int
get_uint(const msgpack_object *o, uint64_t max, uint64_t *out)
{
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max)
		return -1;
	*out = o->via.u64;
	return 0;
}

/* The state of the rule named `name` that reads activities (activity 1)
 * or lead fields, or NULL.  The search starts at *hint, just past the
 * last rule found: states list rules in rule order. */
static sc_rstate *
rule_state(const sc_rules *r, sc_lead *st, const msgpack_object *name, int activity,
           size_t *hint)
{
	for (size_t j = 0; j < r->n; j++) {
		size_t i = (*hint + j) % r->n;
		const sc_rule *ru = &r->rules[i];
		if (ru->activity == activity && key_is(name, ru->name, ru->name_len)) {
			*hint = i + 1;
			return &st->rs[i];
		}
	}
	return NULL;
}

static int
decode_fields(const sc_rules *r, const msgpack_object *o, sc_lead *st)
{
	size_t hint = 0;
	if (o->type != MSGPACK_OBJECT_MAP)
		return FUNNEL_EMALFORMED;
	for (uint32_t k = 0; k < o->via.map.size; k++) {
		const msgpack_object_kv *kv = &o->via.map.ptr[k];
		if (kv->key.type != MSGPACK_OBJECT_STR || kv->val.type != MSGPACK_OBJECT_STR ||
		    kv->val.via.str.size > SC_MAX_VALUE_BYTES ||
		    memchr(kv->val.via.str.ptr, '\0', kv->val.via.str.size) != NULL)
			return FUNNEL_EMALFORMED;
		for (size_t j = 0; j < r->nfields; j++) {
			size_t i = (hint + j) % r->nfields;
			if (key_is(&kv->key, r->fields[i], r->field_len[i])) {
				set_field(st, i, kv->val.via.str.ptr, kv->val.via.str.size, 0);
				hint = i + 1;
				break;
			}
		}
	}
	return FUNNEL_OK;
}

static int
decode_rules(const sc_rules *r, const msgpack_object *o, sc_lead *st, int activity)
{
	size_t hint = 0;
	if (o->type != MSGPACK_OBJECT_MAP)
		return FUNNEL_EMALFORMED;
	for (uint32_t k = 0; k < o->via.map.size; k++) {
		const msgpack_object_kv *kv = &o->via.map.ptr[k];
		const msgpack_object *a = kv->val.via.array.ptr;
		sc_rstate s = { 0 };
		uint64_t fired;
		if (kv->key.type != MSGPACK_OBJECT_STR || kv->val.type != MSGPACK_OBJECT_ARRAY ||
		    kv->val.via.array.size != (activity ? 4u : 3u))
			return FUNNEL_EMALFORMED;
		if (activity) {
			if ((a[0].type != MSGPACK_OBJECT_FLOAT64 && a[0].type != MSGPACK_OBJECT_FLOAT32) ||
			    !isfinite(a[0].via.f64) || get_uint(&a[1], UINT64_MAX, &s.t) != 0)
				return FUNNEL_EMALFORMED;
			s.v = a[0].via.f64;
			a += 2;
		} else {
			if (a[0].type != MSGPACK_OBJECT_BOOLEAN)
				return FUNNEL_EMALFORMED;
			s.matched = a[0].via.boolean;
			a += 1;
		}
		if (get_uint(&a[0], UINT32_MAX, &fired) != 0 || get_uint(&a[1], UINT64_MAX, &s.last_seq) != 0)
			return FUNNEL_EMALFORMED;
		s.fired = (uint32_t)fired;
		sc_rstate *dst = rule_state(r, st, &kv->key, activity, &hint);
		if (dst != NULL)
			*dst = s;
	}
	return FUNNEL_OK;
}

static int
decode_state(const sc_rules *r, const msgpack_object *o, sc_lead *st)
{
	static const char *const keys[] = { "v", "rules", "above", "scores", "fields", "fit", "eng",
	                                    "at" };
	static const size_t klen[] = { 1, 5, 5, 6, 6, 3, 3, 2 };
	enum { NKEYS = sizeof keys / sizeof keys[0] };
	unsigned seen = 0;
	uint64_t u;
	int rc;

	if (o->type != MSGPACK_OBJECT_MAP)
		return FUNNEL_EMALFORMED;
	for (uint32_t k = 0; k < o->via.map.size; k++) {
		const msgpack_object_kv *kv = &o->via.map.ptr[k];
		const msgpack_object *v = &kv->val;
		unsigned i = 0;
		while (i < NKEYS && !key_is(&kv->key, keys[i], klen[i]))
			i++;
		if (i == NKEYS || (seen & (1u << i)))
			return FUNNEL_EMALFORMED;
		seen |= 1u << i;
		switch (i) {
		case 0:
			if (get_uint(v, UINT64_MAX, &u) != 0 || u != 1)
				return FUNNEL_EMALFORMED;
			break;
		case 1:
			if (v->type != MSGPACK_OBJECT_BIN || v->via.bin.size != TAG_BYTES)
				return FUNNEL_EMALFORMED;
			memcpy(st->fit_tag, v->via.bin.ptr, TAG_BYTES);
			break;
		case 2:
			if (v->type != MSGPACK_OBJECT_BOOLEAN)
				return FUNNEL_EMALFORMED;
			st->above = v->via.boolean;
			break;
		case 3:
			if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size != 3)
				return FUNNEL_EMALFORMED;
			for (int j = 0; j < 3; j++) {
				const msgpack_object *x = &v->via.array.ptr[j];
				if (x->type == MSGPACK_OBJECT_POSITIVE_INTEGER && x->via.u64 <= 2000000000u)
					st->rep[j] = (int)x->via.u64;
				else if (x->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && x->via.i64 >= -2000000000)
					st->rep[j] = (int)x->via.i64;
				else
					return FUNNEL_EMALFORMED;
			}
			break;
		case 4:
			if ((rc = decode_fields(r, v, st)) != FUNNEL_OK)
				return rc;
			break;
		case 7:
			if (get_uint(v, UINT64_MAX, &u) != 0)
				return FUNNEL_EMALFORMED;
			st->at = u;
			break;
		default:
			if ((rc = decode_rules(r, v, st, i == 6)) != FUNNEL_OK)
				return rc;
			break;
		}
	}
	/* every key but "at" (absent in a state written before it was kept) */
	return (seen | (1u << 7)) == (1u << NKEYS) - 1 ? FUNNEL_OK : FUNNEL_EMALFORMED;
}

int
sc_lead_decode(const sc_rules *r, const void *buf, size_t len, sc_lead *st)
{
	msgpack_object o;
	size_t off = 0;
	int rc = FUNNEL_EMALFORMED;

	if (st->rules != r)
		return FUNNEL_EINVAL;
	sc_lead_reset(st);
	msgpack_zone_clear(&st->zone);
	if (buf != NULL &&
	    msgpack_unpack(buf, len, &off, &st->zone, &o) == MSGPACK_UNPACK_SUCCESS && off == len)
		rc = decode_state(r, &o, st);
	msgpack_zone_clear(&st->zone);
	if (rc != FUNNEL_OK)
		sc_lead_reset(st);
	return rc;
}
