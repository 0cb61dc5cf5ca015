/*
 * clients/scoring/compiled.h - inside the scoring engine: the compiled
 * rules (struct sc_rules) and the per-lead state (struct sc_lead) that
 * parse.c builds, engine.c evaluates and state.c keeps and encodes.  Not
 * part of the contract (rules.h is): nothing outside clients/scoring's
 * parse.c, engine.c and state.c includes it.
 *
 * Calls between the three go one way: engine.c -> state.c (the lead's
 * fields); parse.c and state.c call neither other.
 */
#ifndef FUNNEL_SCORING_COMPILED_H
#define FUNNEL_SCORING_COMPILED_H

#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <msgpack.h>
#include <pcre2.h>

#include "funnel/record.h"
#include "rules.h"
#include "rulesfile.h"

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

/* ---- shared by engine.c and state.c (defined in state.c) ---- */

/* A msgpack key equals the n bytes of s. */
int sc_key_is(const msgpack_object *k, const char *s, size_t n);

/* Set field i of st to the len bytes at v (at most SC_MAX_VALUE_BYTES;
 * NULL clears it), lower-cased when lower. */
void sc_lead_set_field(sc_lead *st, size_t i, const char *v, size_t len, int lower);

#endif /* FUNNEL_SCORING_COMPILED_H */
