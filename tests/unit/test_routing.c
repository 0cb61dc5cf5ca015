/*
 * tests/unit/test_routing.c - the routing engine (clients/routing): the
 * rules file and its errors, matching order and the fallback queue, the
 * smooth weighted round-robin over 10,000 leads (one by one and in one
 * burst), capacity, availability, the SLA timers and escalation, a
 * replay that rebuilds the same view, and decisions the log dropped
 * because a person acted first (taken back, made again only when the
 * lead was not acted on), and an owned lead that keeps its owner.
 *
 * The view is a table in memory behind a funnel_store; records are
 * funnel_record values with a msgpack data map, as rt_apply reads them.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "engine.h"
#include "mp.h"
#include "routing.h"
#include "rulesfile.h"
#include "unit.h"

/* 2026-01-01T00:00:00Z, a minute, in ns */
#define T0 1767225600000000000ULL
#define MIN 60000000000ULL

/* ---- the view in memory ---- */

typedef struct row {
	int table;
	uint8_t *key, *val;
	size_t klen, vlen;
} row;

typedef struct mem {
	row *rows;              /* open addressing, cap slots */
	size_t cap, n;
} mem;

static uint64_t
row_hash(int table, const void *key, size_t klen)
{
	uint64_t h = 1469598103934665603ULL ^ (uint64_t)table;
	for (size_t i = 0; i < klen; i++)
		h = (h ^ ((const uint8_t *)key)[i]) * 1099511628211ULL;
	return h;
}

static row *
slot(mem *m, int table, const void *key, size_t klen)
{
	size_t i = row_hash(table, key, klen) & (m->cap - 1);
	for (;; i = (i + 1) & (m->cap - 1)) {
		row *r = &m->rows[i];
		if (r->key == NULL ||
		    (r->table == table && r->klen == klen && memcmp(r->key, key, klen) == 0))
			return r;
	}
}

static void
mem_init(mem *m)
{
	m->cap = 1 << 16;
	m->n = 0;
	m->rows = calloc(m->cap, sizeof *m->rows);
	assert_non_null(m->rows);
}

static void
mem_free(mem *m)
{
	for (size_t i = 0; i < m->cap; i++) {
		free(m->rows[i].key);
		free(m->rows[i].val);
	}
	free(m->rows);
}

static int
m_get(void *ctx, int t, const void *k, size_t kl, const void **v, size_t *vl)
{
	row *r = slot(ctx, t, k, kl);
	if (r->key == NULL || r->val == NULL)
		return FUNNEL_ENOTFOUND;
	*v = r->val;
	*vl = r->vlen;
	return FUNNEL_OK;
}

static int
m_put(void *ctx, int t, const void *k, size_t kl, const void *v, size_t vl)
{
	mem *m = ctx;
	row *r = slot(m, t, k, kl);
	assert_true(m->n < m->cap / 2);
	if (r->key == NULL) {
		r->table = t;
		r->key = dup_bytes(k, kl);
		r->klen = kl;
		m->n++;
	}
	free(r->val);
	r->val = dup_bytes(v, vl);
	r->vlen = vl;
	return FUNNEL_OK;
}

/* A deleted row keeps its key (a tombstone) with no value. */
static int
m_del(void *ctx, int t, const void *k, size_t kl)
{
	row *r = slot(ctx, t, k, kl);
	free(r->val);
	r->val = NULL;
	r->vlen = 0;
	return FUNNEL_OK;
}

static int
row_cmp(const void *a, const void *b)
{
	const row *x = *(row *const *)a, *y = *(row *const *)b;
	if (x->table != y->table)
		return x->table - y->table;
	size_t n = x->klen < y->klen ? x->klen : y->klen;
	int c = memcmp(x->key, y->key, n);
	return c ? c : (x->klen > y->klen) - (x->klen < y->klen);
}

/* Two views hold the same rows with the same bytes. */
static int
mem_equal(mem *a, mem *b)
{
	row **ra = calloc(a->cap, sizeof *ra), **rb = calloc(b->cap, sizeof *rb);
	size_t na = 0, nb = 0;
	for (size_t i = 0; i < a->cap; i++)
		if (a->rows[i].val)
			ra[na++] = &a->rows[i];
	for (size_t i = 0; i < b->cap; i++)
		if (b->rows[i].val)
			rb[nb++] = &b->rows[i];
	int eq = na == nb;
	qsort(ra, na, sizeof *ra, row_cmp);
	qsort(rb, nb, sizeof *rb, row_cmp);
	for (size_t i = 0; eq && i < na; i++)
		eq = row_cmp(&ra[i], &rb[i]) == 0 && ra[i]->vlen == rb[i]->vlen &&
		     memcmp(ra[i]->val, rb[i]->val, ra[i]->vlen) == 0;
	free(ra);
	free(rb);
	return eq;
}

/* ---- records ---- */

/* A fixture: rules, a view, the next seq and ts. */
typedef struct fx {
	rt_rules *r;
	mem m;
	funnel_store st;
	uint64_t seq, ts;
	msgpack_sbuffer sb;
	msgpack_zone zone;
} fx;

static rt_rules *
parse_ok(const char *text)
{
	char err[512] = "";
	rt_rules *r = NULL;
	int rc = rt_rules_parse(text, strlen(text), "t.yaml", &r, err, sizeof err);
	if (rc != FUNNEL_OK)
		fail_msg("rules did not parse: %s", err);
	return r;
}

static void
fx_init(fx *f, const char *rules)
{
	memset(f, 0, sizeof *f);
	f->r = parse_ok(rules);
	mem_init(&f->m);
	f->st = (funnel_store){ &f->m, m_get, m_put, m_del };
	f->seq = 1;
	f->ts = T0;
	msgpack_sbuffer_init(&f->sb);
	msgpack_zone_init(&f->zone, 4096);
}

static void
fx_free(fx *f)
{
	rt_rules_destroy(&f->r);
	mem_free(&f->m);
	msgpack_sbuffer_destroy(&f->sb);
	msgpack_zone_destroy(&f->zone);
}

/*
 * Apply one record at f->ts with the next seq.  The data map is given as
 * a format of one letter per key/value pair: 's' a string, 'u' a
 * uint64_t, 'n' nil; the arguments are key, value pairs.
 */
static rt_outcome
fx_apply(fx *f, const char *type, const char *lead, const char *fmt, ...)
{
	msgpack_packer pk;
	msgpack_object data;
	funnel_record rec = { .seq = f->seq++, .ts = f->ts };
	rt_outcome out;
	va_list ap;

	rec.type = (funnel_str){ type, strlen(type) };
	if (lead)
		rec.lead = (funnel_str){ lead, strlen(lead) };
	if (fmt) {
		f->sb.size = 0;
		msgpack_packer_init(&pk, &f->sb, msgpack_sbuffer_write);
		msgpack_pack_map(&pk, strlen(fmt));
		va_start(ap, fmt);
		for (const char *c = fmt; *c; c++) {
			const char *k = va_arg(ap, const char *);
			msgpack_pack_str_with_body(&pk, k, strlen(k));
			if (*c == 's') {
				const char *v = va_arg(ap, const char *);
				msgpack_pack_str_with_body(&pk, v, strlen(v));
			} else if (*c == 'u') {
				msgpack_pack_uint64(&pk, va_arg(ap, uint64_t));
			} else {
				msgpack_pack_nil(&pk);
			}
		}
		va_end(ap);
		size_t off = 0;
		msgpack_zone_clear(&f->zone);
		assert_int_equal(msgpack_unpack(f->sb.data, f->sb.size, &off, &f->zone, &data),
		                 MSGPACK_UNPACK_SUCCESS);
		rec.data = &data;
	}
	assert_int_equal(rt_apply(f->r, &f->st, &rec, &out), FUNNEL_OK);
	return out;
}

/* Qualify a lead (captured first with a country and a size) and return
 * the decision. */
static rt_outcome
qualify(fx *f, const char *lead)
{
	return fx_apply(f, "lead.qualified", lead, NULL);
}

/* The lead.assigned the service would emit for a decision comes back. */
static uint64_t
confirm(fx *f, const char *lead, const rt_outcome *o)
{
	uint64_t seq = f->seq;
	fx_apply(f, "lead.assigned", lead, "sssu", "owner", o->owner, "team", o->team, "rule", o->rule,
	         "escalation", (uint64_t)o->escalation);
	return seq;
}

static rt_lead
lead_of(fx *f, const char *lead)
{
	const void *v = NULL;
	size_t n = 0;
	rt_lead l;
	assert_int_equal(m_get(&f->m, RT_T_LEADS, lead, strlen(lead), &v, &n), FUNNEL_OK);
	assert_int_equal(rt_lead_decode(v, n, &l), FUNNEL_OK);
	return l;
}

static rt_rep
rep_of(fx *f, const char *rep)
{
	const void *v;
	size_t n;
	rt_rep r = { .capacity = -1 };
	if (m_get(&f->m, RT_T_REPS, rep, strlen(rep), &v, &n) == FUNNEL_OK)
		assert_int_equal(rt_rep_decode(v, n, &r), FUNNEL_OK);
	return r;
}

/* The "due" row of a lead's timer, if any: its assignment seq. */
static int
due_of(fx *f, const char *lead, uint64_t deadline, uint64_t *assignment)
{
	uint8_t key[128];
	const void *v;
	size_t n, len = strlen(lead);
	for (int i = 0; i < 8; i++)
		key[i] = (uint8_t)(deadline >> (56 - 8 * i));
	memcpy(key + 8, lead, len);
	if (m_get(&f->m, RT_T_DUE, key, 8 + len, &v, &n) != FUNNEL_OK)
		return 0;
	assert_int_equal(n, 8);
	*assignment = 0;
	for (int i = 0; i < 8; i++)
		*assignment = *assignment << 8 | ((const uint8_t *)v)[i];
	return 1;
}

/* ---- rules ---- */

static const char BASE[] =
	"version: t1\n"
	"scoring: { ignored: here }\n"
	"routing:\n"
	"  teams:\n"
	"    - name: big\n"
	"      sla_minutes: 60\n"
	"      team_lead: boss\n"
	"      escalation: { to: next_rep, limit: 2 }\n"
	"      reps:\n"
	"        - { name: a, weight: 3 }\n"
	"        - { name: b, weight: 2 }\n"
	"        - { name: c, weight: 1 }\n"
	"    - name: dach\n"
	"      sla_minutes: 30\n"
	"      team_lead: dora\n"
	"      escalation: { to: team_lead, limit: 1 }\n"
	"      reps:\n"
	"        - { name: d1, capacity: 2 }\n"
	"        - { name: d2, capacity: 2 }\n"
	"    - name: rest\n"
	"      reps:\n"
	"        - { name: r1 }\n"
	"        - { name: r2, active: false }\n"
	"  rules:\n"
	"    - name: enterprise\n"
	"      team: big\n"
	"      when: { company_size: { at_least: 1000 } }\n"
	"    - name: german\n"
	"      team: dach\n"
	"      when: { country: [DE, AT, CH] }\n"
	"    - name: software\n"
	"      team: rest\n"
	"      when: { industry: software, country: { in: [FR, ES] } }\n"
	"  fallback: { queue: unrouted, sla_minutes: 120 }\n";

static void
test_shipped_file(void **state)
{
	(void)state;
	char err[512] = "";
	rt_rules *r = NULL;
	if (rt_rules_load("funnel.yaml", &r, err, sizeof err) != FUNNEL_OK)
		fail_msg("funnel.yaml: %s", err);
	assert_true(rt_rules_team_count(r) >= 2);
	assert_true(rt_rules_rule_count(r) >= 2);
	assert_non_null(rt_rules_fallback(r));
	assert_int_equal(strlen(rt_rules_hash_hex(r)), 64);
	rt_rules_destroy(&r);
	rt_rules_destroy(&r);      /* safe twice */
	r = parse_ok(BASE);
	assert_int_equal(rt_rules_sla_ns(r, "big"), 60 * MIN);
	assert_int_equal(rt_rules_sla_ns(r, "unrouted"), 120 * MIN);
	assert_int_equal(rt_rules_sla_ns(r, "rest"), 0);
	assert_int_equal(rt_rules_rep_count(r), 7);
	rt_rules_destroy(&r);
}

/*
 * The rules file's limits are the reader's (clients/common/rulesfile.c),
 * the same for routing as for scoring, and what the log would refuse in
 * rules.changed: over RF_MAX_FILE_BYTES, not UTF-8, nested past
 * RF_MAX_DEPTH (each named by line, refused before libyaml's slow scan).
 */
static void
test_rules_file_limits(void **state)
{
	(void)state;
	char err[512];
	rt_rules *r;
	size_t blen = strlen(BASE);

	/* BASE padded with a comment to exactly the limit: accepted; one more byte: refused */
	char *big = malloc(RF_MAX_FILE_BYTES + 2);
	assert_non_null(big);
	memcpy(big, BASE, blen);
	memset(big + blen, '#', RF_MAX_FILE_BYTES + 1 - blen);
	big[blen] = '\n';
	big[RF_MAX_FILE_BYTES - 1] = '\n';
	big[RF_MAX_FILE_BYTES] = '\n';
	if (rt_rules_parse(big, RF_MAX_FILE_BYTES, "funnel.yaml", &r, err, sizeof err) != FUNNEL_OK)
		fail_msg("a file of exactly the limit: %s", err);
	rt_rules_destroy(&r);
	assert_int_equal(rt_rules_parse(big, RF_MAX_FILE_BYTES + 1, "funnel.yaml", &r, err, sizeof err),
	                 FUNNEL_ETOOBIG);
	assert_null(r);
	assert_string_equal(err, "funnel.yaml:1: 64513 bytes, over the limit of 64512 bytes (the "
	                    "whole file is recorded in rules.changed, one log record of at most 64 KiB)");
	free(big);

	/* UTF-16 (little-endian, with its byte-order mark) */
	assert_int_equal(rt_rules_parse("\xff\xfev\0", 4, "funnel.yaml", &r, err, sizeof err),
	                 FUNNEL_EVALUE);
	assert_string_equal(err, "funnel.yaml:1: not UTF-8 text (byte 0): save the file as UTF-8 "
	                    "(UTF-16 and other encodings are refused)");

	/* 60,000 nested '[' in under 64 KiB */
	char *deep = malloc(RF_MAX_FILE_BYTES);
	assert_non_null(deep);
	size_t n = (size_t)snprintf(deep, RF_MAX_FILE_BYTES, "version: t\nrouting: ");
	memset(deep + n, '[', 60000);
	n += 60000;
	assert_int_equal(rt_rules_parse(deep, n, "funnel.yaml", &r, err, sizeof err), FUNNEL_EVALUE);
	assert_string_equal(err, "funnel.yaml:2: nested deeper than 32 levels of mappings and lists");
	free(deep);
}

/* Replace the first `from` in BASE by `to`. */
static char *
base_with(const char *from, const char *to)
{
	const char *p = strstr(BASE, from);
	assert_non_null(p);
	size_t n = strlen(BASE) - strlen(from) + strlen(to) + 1;
	char *s = malloc(n);
	assert_non_null(s);
	snprintf(s, n, "%.*s%s%s", (int)(p - BASE), BASE, to, p + strlen(from));
	return s;
}

static void
test_rules_errors(void **state)
{
	(void)state;
	static const struct {
		const char *from, *to, *want;
	} cases[] = {
		{ "weight: 3", "weight: x",
		  "t.yaml:10: routing.teams[0].reps[0].weight: expected a number, got \"x\"" },
		{ "weight: 2", "weight: 0",
		  "t.yaml:11: routing.teams[0].reps[1].weight: expected a whole number from 1 to 1000, got 0" },
		{ "capacity: 2 }\n        - { name: d2", "capacity: -1 }\n        - { name: d2",
		  "t.yaml:18: routing.teams[1].reps[0].capacity: expected a whole number from 0 to 1000000" },
		{ "sla_minutes: 60", "sla_minutes: soon",
		  "t.yaml:6: routing.teams[0].sla_minutes: expected a number, got \"soon\"" },
		{ "to: next_rep", "to: nobody",
		  "t.yaml:8: routing.teams[0].escalation.to: expected next_rep, team_lead or none, "
		  "got \"nobody\"" },
		{ "limit: 2", "limit: 11",
		  "t.yaml:8: routing.teams[0].escalation.limit: expected a whole number from 1 to 10" },
		{ "      team_lead: dora\n", "",
		  "t.yaml:15: routing.teams[1].escalation: escalation to the team lead needs \"team_lead\"" },
		{ "name: c,", "name: a,",
		  "t.yaml:12: routing.teams[0].reps[2].name: rep \"a\" is listed twice" },
		{ "- name: dach\n", "- name: big\n",
		  "t.yaml:13: routing.teams[1].name: team \"big\" is defined twice" },
		{ "team: dach\n", "team: nowhere\n",
		  "t.yaml:29: routing.rules[1].team: no team named \"nowhere\"" },
		{ "      team: dach\n", "",
		  "t.yaml:28: routing.rules[1]: missing \"team\"" },
		{ "- name: german", "- name: enterprise",
		  "t.yaml:28: routing.rules[1].name: rule \"enterprise\" is defined twice" },
		{ "at_least: 1000", "at_least: many",
		  "t.yaml:27: routing.rules[0].when.company_size.at_least: expected a number, got \"many\"" },
		{ "at_least: 1000", "above: 1000",
		  "t.yaml:27: routing.rules[0].when.company_size: unknown key \"above\"" },
		{ "{ queue: unrouted, sla_minutes: 120 }", "{ sla_minutes: 120 }",
		  "t.yaml:34: routing.fallback: missing \"queue\"" },
		{ "  fallback: { queue: unrouted, sla_minutes: 120 }\n", "",
		  "routing: missing \"fallback\"" },
		{ "        - { name: r1 }\n        - { name: r2, active: false }\n", "",
		  "t.yaml:21: routing.teams[2].reps: a team needs one or more reps" },
		{ "active: false", "active: maybe",
		  "t.yaml:23: routing.teams[2].reps[1].active: expected true or false, got \"maybe\"" },
		{ "  rules:", "  rulez:",
		  "routing: unknown key \"rulez\" (expected one of: teams, rules, fallback, keep_owner)" },
		{ "  fallback: { queue: unrouted, sla_minutes: 120 }\n",
		  "  fallback: { queue: unrouted, sla_minutes: 120 }\n  keep_owner: sometimes\n",
		  "t.yaml:35: routing.keep_owner: expected true or false, got \"sometimes\"" },
		{ "version: t1\n", "",
		  "t.yaml:1: missing \"version\"" },
		{ "name: r1 }", "name: r1 ",
		  "t.yaml:23: not valid YAML" },
		{ "queue: unrouted", "queue: a",
		  "t.yaml:34: routing.fallback.queue: \"a\" is a rep" },
		/* a queue named as a team would take the team's SLA and escalation */
		{ "queue: unrouted", "queue: rest",
		  "t.yaml:34: routing.fallback.queue: \"rest\" is a team" },
	};
	int bad = 0;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *text = base_with(cases[i].from, cases[i].to);
		char err[512] = "";
		rt_rules *r = (rt_rules *)1;
		int rc = rt_rules_parse(text, strlen(text), "t.yaml", &r, err, sizeof err);
		if (rc != FUNNEL_EVALUE || r != NULL || strstr(err, cases[i].want) == NULL)
			print_message("case %zu: rc %d, got \"%s\", want \"%s\"\n", i, rc, err, cases[i].want), bad++;
		free(text);
	}
	assert_int_equal(bad, 0);
	/* no routing section at all, and an empty file */
	char err[512];
	rt_rules *r;
	assert_int_equal(rt_rules_parse("version: x\nscoring: {}\n", 23, NULL, &r, err, sizeof err),
	                 FUNNEL_EVALUE);
	assert_non_null(strstr(err, "funnel.yaml:1: missing \"routing\""));
	assert_int_equal(rt_rules_parse("", 0, NULL, &r, err, sizeof err), FUNNEL_EVALUE);
	assert_int_equal(rt_rules_load("/nonexistent/x.yaml", &r, err, sizeof err), FUNNEL_ENOTFOUND);
	assert_non_null(strstr(err, "cannot read"));
}

/* ---- matching ---- */

static void
test_matching_order_and_fallback(void **state)
{
	(void)state;
	fx f;
	fx_init(&f, BASE);
	static const struct {
		const char *country, *size, *industry, *rule, *team;
	} cases[] = {
		{ "DE", "5000", "retail", "enterprise", "big" },      /* first match wins */
		{ "de", "50", "retail", "german", "dach" },           /* values ignore case */
		{ "FR", "50", "Software", "software", "rest" },       /* all conditions hold */
		{ "FR", "50", "retail", "fallback", "unrouted" },     /* nothing matches */
		{ "US", "1000.0", "retail", "enterprise", "big" },    /* numbers as numbers */
		{ "US", "lots", "retail", "fallback", "unrouted" },   /* not a number: no at_least */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char lead[16];
		snprintf(lead, sizeof lead, "L%zu", i);
		fx_apply(&f, "lead.captured", lead, "sss", "country", cases[i].country, "company_size",
		         cases[i].size, "industry", cases[i].industry);
		rt_outcome o = qualify(&f, lead);
		assert_true(o.assign);
		assert_string_equal(o.key, "assigned");
		if (strcmp(o.rule, cases[i].rule) || strcmp(o.team, cases[i].team))
			fail_msg("case %zu: rule %s team %s, want %s %s", i, o.rule, o.team, cases[i].rule,
			         cases[i].team);
		if (strcmp(o.team, "unrouted") == 0)
			assert_string_equal(o.owner, "unrouted");
	}
	/* a lead without fields (never captured here) falls back */
	rt_outcome o = qualify(&f, "nofields");
	assert_string_equal(o.owner, "unrouted");
	assert_string_equal(o.reason, "no rule matched the lead");
	/* a team with nobody eligible: its rule, but the queue */
	fx_apply(&f, "rep.unavailable", NULL, "s", "rep", "r1");
	fx_apply(&f, "lead.captured", "sw", "ss", "country", "ES", "industry", "software");
	o = qualify(&f, "sw");
	assert_string_equal(o.rule, "software");
	assert_string_equal(o.owner, "unrouted");
	assert_non_null(strstr(o.reason, "nobody eligible"));
	assert_non_null(strstr(o.reason, "r1 unavailable"));
	assert_non_null(strstr(o.reason, "r2 inactive"));
	/* a later capture changes the fields */
	fx_apply(&f, "lead.captured", "sw", "s", "country", "AT");
	fx_apply(&f, "lead.recycled", "sw", "s", "reason", "x");
	o = qualify(&f, "sw");
	assert_string_equal(o.rule, "german");
	fx_free(&f);
}

/* ---- fairness ---- */

static const char WEIGHTED[] =
	"version: w\n"
	"routing:\n"
	"  teams:\n"
	"    - name: t\n"
	"      reps:\n"
	"        - { name: p, weight: 5 }\n"
	"        - { name: q, weight: 3 }\n"
	"        - { name: r, weight: 1 }\n"
	"        - { name: s, weight: 1 }\n"
	"  rules:\n"
	"    - { name: all, team: t }\n"
	"  fallback: { queue: none }\n";

static int
rep_no(const char *name)
{
	return name[0] - 'p';
}

/* 10,000 leads, weights 5:3:1:1: each rep within 1% of its share, and
 * every window of 10 consecutive decisions is exact.  burst: all
 * qualified first, then the assignments return; otherwise one by one,
 * each lead closed (won) before the next. */
static void
fairness(int burst)
{
	const int n = 10000, w[4] = { 5, 3, 1, 1 };
	int count[4] = { 0 }, window[4] = { 0 };
	char lead[32];
	fx f;
	fx_init(&f, WEIGHTED);
	rt_outcome *outs = calloc(n, sizeof *outs);
	assert_non_null(outs);
	for (int i = 0; i < n; i++) {
		snprintf(lead, sizeof lead, "F%d", i);
		outs[i] = qualify(&f, lead);
		f.ts += 1000;
		int k = rep_no(outs[i].owner);
		assert_true(k >= 0 && k < 4);
		count[k]++;
		window[k]++;
		if (i % 10 == 9) {
			for (int j = 0; j < 4; j++) {
				if (window[j] != w[j])
					fail_msg("decisions %d..%d: %c got %d, want %d", i - 9, i, 'p' + j,
					         window[j], w[j]);
				window[j] = 0;
			}
		}
		if (!burst) {
			confirm(&f, lead, &outs[i]);
			fx_apply(&f, "deal.won", lead, NULL);
		}
	}
	if (burst) {
		for (int i = 0; i < n; i++) {
			snprintf(lead, sizeof lead, "F%d", i);
			confirm(&f, lead, &outs[i]);
		}
	}
	for (int j = 0; j < 4; j++) {
		double share = (double)count[j] / n, want = w[j] / 10.0;
		if (share < want - 0.01 || share > want + 0.01)
			fail_msg("%c: share %.4f, want %.2f", 'p' + j, share, want);
		char name[2] = { (char)('p' + j), 0 };
		assert_int_equal(rep_of(&f, name).open, burst ? (uint32_t)count[j] : 0);
	}
	free(outs);
	fx_free(&f);
}

static void
test_fairness_one_by_one(void **state)
{
	(void)state;
	fairness(0);
}

static void
test_fairness_burst(void **state)
{
	(void)state;
	fairness(1);
}

/* ---- capacity and availability ---- */

static void
test_capacity(void **state)
{
	(void)state;
	fx f;
	char lead[16];
	int got[2] = { 0 };
	fx_init(&f, BASE);
	/* dach: d1, d2 with capacity 2 each: four leads, then the queue */
	for (int i = 0; i < 5; i++) {
		snprintf(lead, sizeof lead, "C%d", i);
		fx_apply(&f, "lead.captured", lead, "s", "country", "DE");
		rt_outcome o = qualify(&f, lead);
		if (i < 4) {
			assert_string_equal(o.team, "dach");
			got[o.owner[1] - '1']++;
		} else {
			assert_string_equal(o.owner, "unrouted");
			assert_non_null(strstr(o.reason, "d1 at capacity 2"));
			assert_non_null(strstr(o.reason, "d2 at capacity 2"));
		}
	}
	assert_int_equal(got[0], 2);
	assert_int_equal(got[1], 2);
	assert_int_equal(rep_of(&f, "d1").open, 2);
	/* a lead of d1 is lost: d1 has room again */
	rt_lead l0 = lead_of(&f, "C0");
	fx_apply(&f, "lead.disqualified", "C0", "s", "reason", "spam");
	assert_int_equal(rep_of(&f, l0.owner).open, 1);
	fx_apply(&f, "lead.captured", "C9", "s", "country", "DE");
	rt_outcome o = qualify(&f, "C9");
	assert_string_equal(o.owner, l0.owner);
	/* rep.capacity raises the cap of d2; nil goes back to the file's */
	fx_apply(&f, "rep.capacity", NULL, "su", "rep", "d2", "capacity", (uint64_t)3);
	fx_apply(&f, "lead.captured", "C10", "s", "country", "DE");
	o = qualify(&f, "C10");
	assert_string_equal(o.owner, "d2");
	fx_apply(&f, "rep.capacity", NULL, "sn", "rep", "d2", "capacity");
	assert_int_equal(rep_of(&f, "d2").capacity, -1);
	fx_apply(&f, "lead.captured", "C11", "s", "country", "DE");
	assert_string_equal(qualify(&f, "C11").owner, "unrouted");
	/* erasure releases and forgets */
	fx_apply(&f, "lead.erased", "C10", NULL);
	assert_int_equal(rep_of(&f, "d2").open, 2);
	const void *v;
	size_t n;
	assert_int_equal(m_get(&f.m, RT_T_LEADS, "C10", 3, &v, &n), FUNNEL_ENOTFOUND);
	fx_free(&f);
}

static void
test_unavailable_until(void **state)
{
	(void)state;
	fx f;
	char lead[16];
	fx_init(&f, BASE);
	/* big: a 3, b 2, c 1; a away for an hour */
	fx_apply(&f, "rep.unavailable", NULL, "su", "rep", "a", "until", T0 + 60 * MIN);
	for (int i = 0; i < 30; i++) {
		snprintf(lead, sizeof lead, "U%d", i);
		fx_apply(&f, "lead.captured", lead, "s", "company_size", "2000");
		rt_outcome o = qualify(&f, lead);
		assert_string_not_equal(o.owner, "a");
		if (i == 0)
			assert_non_null(strstr(o.reason, "a unavailable until 2026-01-01T01:00:00Z"));
	}
	/* at the until-time (the record's ts, not a clock) a is back */
	f.ts = T0 + 60 * MIN;
	int a = 0;
	for (int i = 30; i < 36; i++) {
		snprintf(lead, sizeof lead, "U%d", i);
		fx_apply(&f, "lead.captured", lead, "s", "company_size", "2000");
		a += strcmp(qualify(&f, lead).owner, "a") == 0;
	}
	assert_true(a >= 3);
	/* unavailable without a time: until rep.available */
	fx_apply(&f, "rep.unavailable", NULL, "s", "rep", "b");
	f.ts += 1000 * MIN;
	for (int i = 40; i < 60; i++) {
		snprintf(lead, sizeof lead, "U%d", i);
		fx_apply(&f, "lead.captured", lead, "s", "company_size", "2000");
		assert_string_not_equal(qualify(&f, lead).owner, "b");
	}
	fx_apply(&f, "rep.available", NULL, "s", "rep", "b");
	int b = 0;
	for (int i = 60; i < 66; i++) {
		snprintf(lead, sizeof lead, "U%d", i);
		fx_apply(&f, "lead.captured", lead, "s", "company_size", "2000");
		b += strcmp(qualify(&f, lead).owner, "b") == 0;
	}
	assert_true(b >= 2);
	/* until as an RFC 3339 time: c away for two hours from now */
	fx_apply(&f, "rep.unavailable", NULL, "ss", "rep", "c", "until", "2026-01-01T18:40:00Z");
	assert_int_equal(rep_of(&f, "c").until, T0 + 1120 * MIN);
	fx_apply(&f, "rep.unavailable", NULL, "ss", "rep", "c", "until", "tomorrow");
	assert_int_equal(rep_of(&f, "c").until, 0);                 /* unreadable: until available */
	fx_apply(&f, "rep.available", NULL, "s", "rep", "c");
	/* an inactive rep never gets a lead */
	for (int i = 0; i < 10; i++) {
		snprintf(lead, sizeof lead, "S%d", i);
		fx_apply(&f, "lead.captured", lead, "ss", "country", "FR", "industry", "software");
		assert_string_equal(qualify(&f, lead).owner, "r1");
	}
	fx_free(&f);
}

/* ---- SLA ---- */

static void
test_sla_timers(void **state)
{
	(void)state;
	fx f;
	uint64_t as;
	fx_init(&f, BASE);
	fx_apply(&f, "lead.captured", "S", "s", "company_size", "5000");
	rt_outcome o = qualify(&f, "S");
	assert_string_equal(o.owner, "a");
	rt_lead l = lead_of(&f, "S");
	assert_int_equal(l.deadline, 0);             /* no timer before the assignment is recorded */
	assert_int_equal(l.assign_seq, 0);
	f.ts = T0 + 5 * MIN;
	uint64_t seq = confirm(&f, "S", &o);
	l = lead_of(&f, "S");
	assert_int_equal(l.assign_seq, seq);
	assert_int_equal(l.deadline, T0 + 65 * MIN);
	assert_true(due_of(&f, "S", T0 + 65 * MIN, &as));
	assert_int_equal(as, seq);
	assert_int_equal(rep_of(&f, "a").open, 1);   /* counted once, at the decision */
	/* contacted in time: the timer stops, nothing else */
	f.ts = T0 + 30 * MIN;
	rt_outcome c = fx_apply(&f, "lead.contacted", "S", NULL);
	assert_false(c.assign);
	assert_int_equal(lead_of(&f, "S").deadline, 0);
	assert_false(due_of(&f, "S", T0 + 65 * MIN, &as));
	/* a breach for that assignment arriving late is stale: nothing */
	c = fx_apply(&f, "lead.sla_breached", "S", "u", "assignment", seq);
	assert_false(c.assign);
	assert_int_equal(lead_of(&f, "S").breaches, 0);
	fx_free(&f);
}

static void
test_escalation_chain(void **state)
{
	(void)state;
	fx f;
	uint64_t as;
	fx_init(&f, BASE);
	fx_apply(&f, "lead.captured", "E", "s", "company_size", "5000");
	rt_outcome o = qualify(&f, "E");
	assert_string_equal(o.owner, "a");
	uint64_t seq = confirm(&f, "E", &o);
	/* a breach of another assignment is not this one's */
	f.ts = T0 + 61 * MIN;
	assert_false(fx_apply(&f, "lead.sla_breached", "E", "u", "assignment", seq + 100).assign);
	/* the breach: to the next eligible rep (not a), escalation 1 */
	o = fx_apply(&f, "lead.sla_breached", "E", "u", "assignment", seq);
	assert_true(o.assign);
	assert_string_equal(o.key, "escalated");
	assert_string_not_equal(o.owner, "a");
	assert_string_equal(o.previous, "a");
	assert_int_equal(o.escalation, 1);
	assert_string_equal(o.rule, "enterprise");
	assert_non_null(strstr(o.reason, "escalation 1 of 2 after a missed the SLA"));
	assert_int_equal(rep_of(&f, "a").open, 0);
	assert_int_equal(rep_of(&f, o.owner).open, 1);
	rt_lead l = lead_of(&f, "E");
	assert_int_equal(l.breaches, 1);
	assert_int_equal(l.deadline, 0);
	/* the escalated assignment starts its own timer */
	f.ts = T0 + 62 * MIN;
	uint64_t seq2 = confirm(&f, "E", &o);
	assert_true(due_of(&f, "E", T0 + 122 * MIN, &as));
	assert_int_equal(as, seq2);
	/* second breach: escalation 2, again someone other than the owner */
	char prev[RT_MAX_NAME + 1];
	snprintf(prev, sizeof prev, "%s", o.owner);
	f.ts = T0 + 123 * MIN;
	o = fx_apply(&f, "lead.sla_breached", "E", "u", "assignment", seq2);
	assert_true(o.assign);
	assert_int_equal(o.escalation, 2);
	assert_string_equal(o.previous, prev);
	assert_string_not_equal(o.owner, prev);
	uint64_t seq3 = confirm(&f, "E", &o);
	/* third breach: the limit (2) is reached; recorded, nothing more */
	f.ts = T0 + 200 * MIN;
	o = fx_apply(&f, "lead.sla_breached", "E", "u", "assignment", seq3);
	assert_false(o.assign);
	l = lead_of(&f, "E");
	assert_int_equal(l.breaches, 3);
	assert_int_equal(l.deadline, 0);
	assert_int_equal(l.escalations, 2);
	/* recycled and qualified again: routed again, escalations start over */
	fx_apply(&f, "lead.recycled", "E", "s", "reason", "timing");
	assert_int_equal(rep_of(&f, l.owner).open, 0);
	o = qualify(&f, "E");
	assert_true(o.assign);
	assert_string_equal(o.key, "assigned");
	assert_int_equal(o.escalation, 0);
	assert_int_equal(lead_of(&f, "E").escalations, 0);

	/* escalation to the team lead (dach), limit 1 */
	fx_apply(&f, "lead.captured", "G", "s", "country", "DE");
	o = qualify(&f, "G");
	seq = confirm(&f, "G", &o);
	f.ts += 31 * MIN;
	o = fx_apply(&f, "lead.sla_breached", "G", "u", "assignment", seq);
	assert_string_equal(o.owner, "dora");
	assert_string_equal(o.team, "dach");
	seq = confirm(&f, "G", &o);
	f.ts += 31 * MIN;
	assert_false(fx_apply(&f, "lead.sla_breached", "G", "u", "assignment", seq).assign);

	/* next_rep with nobody else eligible goes to the team lead */
	fx_apply(&f, "rep.unavailable", NULL, "s", "rep", "b");
	fx_apply(&f, "rep.unavailable", NULL, "s", "rep", "c");
	fx_apply(&f, "lead.captured", "H", "s", "company_size", "5000");
	o = qualify(&f, "H");
	assert_string_equal(o.owner, "a");
	seq = confirm(&f, "H", &o);
	f.ts += 61 * MIN;
	o = fx_apply(&f, "lead.sla_breached", "H", "u", "assignment", seq);
	assert_string_equal(o.owner, "boss");
	assert_non_null(strstr(o.reason, "to the team lead"));
	fx_free(&f);
}

/* A hand-over by someone else (a manager) moves the counts and the timer. */
static void
test_manual_assignment(void **state)
{
	(void)state;
	fx f;
	uint64_t as;
	fx_init(&f, BASE);
	fx_apply(&f, "lead.captured", "M", "s", "company_size", "5000");
	rt_outcome o = qualify(&f, "M");
	confirm(&f, "M", &o);
	f.ts += MIN;
	uint64_t seq = f.seq;
	fx_apply(&f, "lead.assigned", "M", "s", "owner", "d1");
	assert_int_equal(rep_of(&f, o.owner).open, 0);
	assert_int_equal(rep_of(&f, "d1").open, 1);
	rt_lead l = lead_of(&f, "M");
	assert_string_equal(l.owner, "d1");
	assert_string_equal(l.team, "dach");          /* the rep's team: its SLA */
	assert_int_equal(l.deadline, f.ts + 30 * MIN);
	assert_true(due_of(&f, "M", f.ts + 30 * MIN, &as));
	assert_int_equal(as, seq);
	/* our decision's record arriving after the lead was sent back: no effect */
	fx_apply(&f, "lead.captured", "N", "s", "country", "DE");
	o = qualify(&f, "N");
	uint32_t had = rep_of(&f, o.owner).open - 1;
	fx_apply(&f, "lead.rejected", "N", "s", "reason", "not now");
	assert_int_equal(rep_of(&f, o.owner).open, had);
	funnel_record late = { .seq = f.seq++, .ts = f.ts, .has_cause = 1,
	                       .cause = lead_of(&f, "N").routed_seq };
	late.type = (funnel_str){ "lead.assigned", 13 };
	late.lead = (funnel_str){ "N", 1 };
	msgpack_sbuffer_clear(&f.sb);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &f.sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	msgpack_pack_str_with_body(&pk, "owner", 5);
	msgpack_pack_str_with_body(&pk, o.owner, strlen(o.owner));
	msgpack_object data;
	size_t off = 0;
	assert_int_equal(msgpack_unpack(f.sb.data, f.sb.size, &off, &f.zone, &data),
	                 MSGPACK_UNPACK_SUCCESS);
	late.data = &data;
	rt_outcome lo;
	assert_int_equal(rt_apply(f.r, &f.st, &late, &lo), FUNNEL_OK);
	assert_int_equal(rep_of(&f, o.owner).open, had);
	assert_false(lead_of(&f, "N").open);
	assert_int_equal(lead_of(&f, "N").deadline, 0);
	/* unknown owner, no team: no SLA */
	fx_apply(&f, "lead.assigned", "M", "s", "owner", "someone");
	assert_int_equal(lead_of(&f, "M").deadline, 0);
	assert_int_equal(rep_of(&f, "d1").open, 0);
	fx_free(&f);
}

/* The same records applied to an empty view give the same bytes, and
 * the same decisions. */
static void
test_replay_identical(void **state)
{
	(void)state;
	fx a, b;
	fx *both[2] = { &a, &b };
	fx_init(&a, BASE);
	fx_init(&b, BASE);
	for (int k = 0; k < 2; k++) {
		fx *f = both[k];
		char lead[16];
		for (int i = 0; i < 200; i++) {
			snprintf(lead, sizeof lead, "R%d", i);
			f->ts = T0 + (uint64_t)i * MIN;
			static const char *const countries[] = { "DE", "FR", "US" };
			fx_apply(f, "lead.captured", lead, "ssss", "country", countries[i % 3],
			         "company_size", i % 4 ? "50" : "3000", "industry", "software", "email", "x");
			if (i == 50)
				fx_apply(f, "rep.unavailable", NULL, "su", "rep", "b", "until", T0 + 120 * MIN);
			rt_outcome o = qualify(f, lead);
			uint64_t seq = confirm(f, lead, &o);
			if (i % 5 == 0)
				fx_apply(f, "lead.contacted", lead, NULL);
			else if (i % 7 == 0) {
				f->ts += 100 * MIN;
				o = fx_apply(f, "lead.sla_breached", lead, "u", "assignment", seq);
				if (o.assign)
					confirm(f, lead, &o);
			}
			if (i % 11 == 0)
				fx_apply(f, "lead.recycled", lead, "s", "reason", "r");
		}
	}
	assert_true(mem_equal(&a.m, &b.m));
	/* and a view that differs is told apart */
	fx_apply(&b, "rep.available", NULL, "s", "rep", "zed");
	assert_false(mem_equal(&a.m, &b.m));
	fx_free(&a);
	fx_free(&b);
}

static void
test_decode_garbage(void **state)
{
	(void)state;
	rt_lead l;
	rt_rep r;
	uint8_t junk[64] = { 1, 0 };
	assert_int_equal(rt_lead_decode(junk, 3, &l), FUNNEL_EMALFORMED);
	assert_int_equal(rt_lead_decode(junk, sizeof junk, &l), FUNNEL_EMALFORMED);
	junk[0] = 2;
	assert_int_equal(rt_lead_decode(junk, sizeof junk, &l), FUNNEL_EMALFORMED);
	assert_int_equal(rt_rep_decode(junk, 29, &r), FUNNEL_EMALFORMED);
	assert_int_equal(rt_rep_decode(junk, 30, &r), FUNNEL_EMALFORMED);
}

/* Records routing does not read change nothing and derive nothing. */
static void
test_ignored_records(void **state)
{
	(void)state;
	fx f;
	fx_init(&f, BASE);
	rt_outcome o = fx_apply(&f, "lead.activity", "I", "s", "kind", "page_view");
	assert_false(o.assign);
	o = fx_apply(&f, "x.custom", "I", NULL);
	assert_false(o.assign);
	o = fx_apply(&f, "lead.contacted", "I", NULL);     /* a lead never routed */
	assert_false(o.assign);
	o = fx_apply(&f, "rep.available", NULL, NULL);     /* no data: no rep */
	assert_int_equal(f.m.n, 0);
	fx_free(&f);
}

/* ---- text for the log ---- */

/* Reps whose names are several-byte UTF-8 characters, enough of them that
 * the reasons run past RT_MAX_REASON and are cut. */
static const char WIDE[] =
	"version: wide\n"
	"routing:\n"
	"  teams:\n"
	"    - name: t\n"
	"      sla_minutes: 10\n"
	"      escalation: { to: next_rep, limit: 3 }\n"
	"      reps:\n"
	"        - { name: \"Jürgen Größe-Müller €€€€€€€€€€€€ ä\", weight: 3 }\n"
	"        - { name: \"Zoë Ørsted-Åkesson €€€€€€€€€€€€€ é\", weight: 2 }\n"
	"        - { name: \"Łukasz Świątek-Żółć €€€€€€€€€€€€ ö\" }\n"
	"        - { name: \"Ярослава Ковальчук €€€€€€€€€€€€ й\" }\n"
	"        - { name: \"北京市 朝阳区 销售代表 €€€€€€€€ 一\", capacity: 1 }\n"
	"  rules:\n"
	"    - { name: all, team: t }\n"
	"  fallback: { queue: \"Warteschlange €\" }\n";

static int
utf8_ok(const char *s)
{
	return mp_utf8_invalid_at(s, strlen(s)) < 0;
}

/* The daemon refuses a data string that is not valid UTF-8: a reason cut
 * in the middle of a character would lose the lead.assigned (the view
 * counting a lead its rep was never given). */
static void
test_reasons_stay_utf8(void **state)
{
	(void)state;
	fx f;
	char lead[16];
	int cut = 0;
	fx_init(&f, WIDE);
	fx_apply(&f, "rep.unavailable", NULL, "su", "rep", "Ярослава Ковальчук €€€€€€€€€€€€ й",
	         "until", T0 + 5 * MIN);
	for (int i = 0; i < 40; i++) {
		snprintf(lead, sizeof lead, "W%d", i);
		f.ts = T0 + (uint64_t)i * MIN;
		rt_outcome o = qualify(&f, lead);
		assert_true(o.assign);
		cut += strlen(o.reason) >= RT_MAX_REASON - 3;
		if (!utf8_ok(o.reason))
			fail_msg("decision %d: reason not UTF-8: %s", i, o.reason);
		uint64_t seq = confirm(&f, lead, &o);
		f.ts += 11 * MIN;
		o = fx_apply(&f, "lead.sla_breached", lead, "u", "assignment", seq);
		if (o.assign && !utf8_ok(o.reason))
			fail_msg("escalation %d: reason not UTF-8: %s", i, o.reason);
		assert_true(utf8_ok(lead_of(&f, lead).reason));
	}
	assert_true(cut > 0);       /* the long reasons were cut */
	fx_free(&f);
}

/* rt_say_strs() writes what rt_say() with "%s%s..." writes, byte for
 * byte, overflow and cut included: random pieces of one- to four-byte
 * characters appended to buffers of every size up to 40 bytes, from
 * empty, part full and full. */
static void
test_say_strs_is_say(void **state)
{
	(void)state;
	static const char *const chars[] = { "a", ", ", "\xc3\xa4", "\xe2\x82\xac", "\xf0\x9f\x98\x80" };
	unsigned seed = 12345;
	char parts[4][24];
	for (int round = 0; round < 20000; round++) {
		const char *pp[4];
		size_t np = 1 + (size_t)(rand_r(&seed) % 4);
		for (size_t i = 0; i < np; i++) {
			size_t k = 0, want = (size_t)(rand_r(&seed) % 6);
			parts[i][0] = 0;
			while (want-- > 0) {
				const char *c = chars[rand_r(&seed) % 5];
				memcpy(parts[i] + k, c, strlen(c) + 1);
				k += strlen(c);
			}
			pp[i] = parts[i];
		}
		size_t cap = 1 + (size_t)(rand_r(&seed) % 40);
		char a[64], b[64];
		memset(a, 'x', sizeof a);
		/* what buf holds already: 'p's, or a two-byte character then 'p's
		 * (a cut may land in text that was there before) */
		size_t pre = (size_t)(rand_r(&seed) % (cap + 1));
		for (size_t i = 0; i + 1 < pre && i + 1 < cap; i++)
			a[i] = 'p';
		if (pre >= 3 && rand_r(&seed) % 2)
			memcpy(a, "\xc3\xa4", 2);
		a[pre < cap ? (pre ? pre - 1 : 0) : cap - 1] = 0;
		memcpy(b, a, sizeof a);
		rt_say_strs(a, cap, pp, np);
		switch (np) {
		case 1: rt_say(b, cap, "%s", pp[0]); break;
		case 2: rt_say(b, cap, "%s%s", pp[0], pp[1]); break;
		case 3: rt_say(b, cap, "%s%s%s", pp[0], pp[1], pp[2]); break;
		default: rt_say(b, cap, "%s%s%s%s", pp[0], pp[1], pp[2], pp[3]); break;
		}
		/* the whole buffers: a write past cap would show in the 'x's */
		if (memcmp(a, b, sizeof a) != 0)
			fail_msg("round %d, cap %zu: rt_say_strs wrote '%.*s', rt_say '%.*s'", round, cap,
			         (int)cap, a, (int)cap, b);
	}
}

/* ---- decisions the log dropped (a person acted first) ---- */

/* Apply a record that carries the lead's stage (as the log's records do),
 * telling the engine, when `dropped` is given, that the log dropped that
 * decision on the lead before this record. */
static rt_outcome
fx_after(fx *f, const char *type, const char *lead, const char *stage, const rt_outcome *dropped,
         const char *owner)
{
	funnel_record rec = { .seq = f->seq++, .ts = f->ts };
	rt_outcome out;
	msgpack_object data;
	rec.type = (funnel_str){ type, strlen(type) };
	rec.lead = (funnel_str){ lead, strlen(lead) };
	rec.stage = (funnel_str){ stage, strlen(stage) };
	if (owner != NULL) {
		msgpack_packer pk;
		size_t off = 0;
		f->sb.size = 0;
		msgpack_packer_init(&pk, &f->sb, msgpack_sbuffer_write);
		msgpack_pack_map(&pk, 1);
		msgpack_pack_str_with_body(&pk, "owner", 5);
		msgpack_pack_str_with_body(&pk, owner, strlen(owner));
		msgpack_zone_clear(&f->zone);
		assert_int_equal(msgpack_unpack(f->sb.data, f->sb.size, &off, &f->zone, &data),
		                 MSGPACK_UNPACK_SUCCESS);
		rec.data = &data;
	}
	assert_int_equal(rt_apply_dropped(f->r, &f->st, &rec, dropped ? dropped->undo : NULL,
	                                  dropped ? dropped->undo_len : 0, &out), FUNNEL_OK);
	return out;
}

/* The lead's row as stored, copied into buf (0 if none). */
static size_t
row_bytes(fx *f, const char *lead, uint8_t *buf, size_t cap)
{
	const void *v;
	size_t n;
	if (m_get(&f->m, RT_T_LEADS, lead, strlen(lead), &v, &n) != FUNNEL_OK)
		return 0;
	assert_true(n <= cap);
	memcpy(buf, v, n);
	return n;
}

static void
test_dropped_route_is_taken_back(void **state)
{
	(void)state;
	fx f;
	static uint8_t before[RT_LEAD_ROW_MAX], after[RT_LEAD_ROW_MAX];
	rt_rep reps[3];
	const char *names[3] = { "a", "b", "c" };
	fx_init(&f, BASE);
	/* a rotation already under way */
	for (int i = 0; i < 2; i++) {
		char id[16];
		snprintf(id, sizeof id, "W%d", i);
		fx_apply(&f, "lead.captured", id, "s", "company_size", "5000");
		rt_outcome w = qualify(&f, id);
		confirm(&f, id, &w);
	}
	fx_apply(&f, "lead.captured", "P", "s", "company_size", "5000");
	size_t nb = row_bytes(&f, "P", before, sizeof before);
	for (int i = 0; i < 3; i++)
		reps[i] = rep_of(&f, names[i]);
	rt_outcome o = qualify(&f, "P");
	assert_true(o.assign);
	assert_true(o.undo_len > 0);
	assert_int_equal(rep_of(&f, o.owner).open, reps[o.owner[0] - 'a'].open + 1);
	/* the README race: sales accepts before the assignment is recorded */
	rt_outcome a = fx_after(&f, "lead.accepted", "P", "sal", &o, NULL);
	assert_false(a.assign);                       /* a person acted: not decided again */
	size_t na = row_bytes(&f, "P", after, sizeof after);
	assert_int_equal(na, nb);
	assert_memory_equal(after, before, nb);       /* the row as before the decision */
	for (int i = 0; i < 3; i++) {
		rt_rep r = rep_of(&f, names[i]);
		assert_int_equal(r.open, reps[i].open);   /* nobody holds P */
		assert_int_equal(r.current, reps[i].current);   /* the pick never happened */
	}
	/* the next lead gets the rep the dropped decision had picked */
	fx_apply(&f, "lead.captured", "Q", "s", "company_size", "5000");
	assert_string_equal(qualify(&f, "Q").owner, o.owner);
	fx_free(&f);
}

static void
test_readme_tour_hand_assignment_wins(void **state)
{
	(void)state;
	fx f;
	uint64_t as;
	fx_init(&f, BASE);
	fx_apply(&f, "lead.captured", "L-1", "s", "company_size", "5000");
	rt_outcome o = qualify(&f, "L-1");
	assert_string_equal(o.owner, "a");
	/* rep-ben's hand assignment lands first; the decision is dropped */
	rt_outcome h = fx_after(&f, "lead.assigned", "L-1", "mql", &o, "rep-ben");
	assert_false(h.assign);
	assert_false(fx_after(&f, "lead.accepted", "L-1", "sal", NULL, NULL).assign);
	rt_lead l = lead_of(&f, "L-1");
	assert_string_equal(l.owner, "rep-ben");
	assert_true(l.open);
	assert_int_equal(l.deadline, 0);              /* rep-ben has no team: no SLA timer */
	assert_int_equal(rep_of(&f, "a").open, 0);
	assert_false(due_of(&f, "L-1", T0 + 60 * MIN, &as));
	fx_free(&f);
}

static void
test_dropped_route_decided_again_after_activity(void **state)
{
	(void)state;
	fx f;
	fx_init(&f, BASE);
	fx_apply(&f, "lead.captured", "B", "s", "company_size", "5000");
	rt_outcome o = qualify(&f, "B");
	/* the lead browsed before the assignment was recorded: not a person
	 * acting on it, so it is routed again on that record */
	uint64_t act = f.seq;
	rt_outcome again = fx_after(&f, "lead.activity", "B", "mql", &o, NULL);
	assert_true(again.assign);
	assert_string_equal(again.key, "assigned");
	assert_string_equal(again.owner, o.owner);    /* the rotation was put back first */
	assert_int_equal(rep_of(&f, o.owner).open, 1);
	rt_lead l = lead_of(&f, "B");
	assert_int_equal(l.routed_seq, act);
	/* not mql any more (a person disqualified it): nothing decided again */
	rt_outcome d = fx_after(&f, "lead.disqualified", "B", "disqualified", &again, NULL);
	assert_false(d.assign);
	assert_int_equal(rep_of(&f, o.owner).open, 0);
	fx_free(&f);
}

static void
test_dropped_escalation_goes_back(void **state)
{
	(void)state;
	fx f;
	fx_init(&f, BASE);
	fx_apply(&f, "lead.captured", "E", "s", "company_size", "5000");
	rt_outcome o = qualify(&f, "E");
	uint64_t seq = confirm(&f, "E", &o);
	f.ts = T0 + 61 * MIN;
	rt_outcome e = fx_apply(&f, "lead.sla_breached", "E", "u", "assignment", seq);
	assert_true(e.assign);
	assert_string_equal(e.previous, "a");
	/* the late owner calls before the escalation is recorded: it is dropped,
	 * the lead stays with a, and no one else counts it */
	rt_outcome c = fx_after(&f, "lead.contacted", "E", "mql", &e, NULL);
	assert_false(c.assign);
	rt_lead l = lead_of(&f, "E");
	assert_string_equal(l.owner, "a");
	assert_true(l.open);
	assert_int_equal(l.assign_seq, seq);
	assert_int_equal(l.escalations, 0);
	assert_int_equal(l.breaches, 1);              /* the breach happened */
	assert_int_equal(rep_of(&f, "a").open, 1);
	assert_int_equal(rep_of(&f, e.owner).open, 0);
	fx_free(&f);
}

static void
test_owned_lead_keeps_owner(void **state)
{
	(void)state;
	fx f;
	fx_init(&f, BASE);
	fx_apply(&f, "lead.captured", "K", "s", "company_size", "5000");
	f.ts = T0 + MIN;
	fx_apply(&f, "lead.assigned", "K", "s", "owner", "b");
	rt_lead l = lead_of(&f, "K");
	uint64_t deadline = l.deadline;
	assert_true(deadline != 0);
	rt_outcome o = qualify(&f, "K");
	assert_false(o.assign);
	l = lead_of(&f, "K");
	assert_string_equal(l.owner, "b");
	assert_int_equal(l.deadline, deadline);       /* b's timer runs on */
	assert_int_equal(rep_of(&f, "b").open, 1);
	fx_free(&f);
	/* keep_owner: false routes it again */
	char rules[sizeof BASE + 64];
	snprintf(rules, sizeof rules, "%s  keep_owner: false\n", BASE);
	fx_init(&f, rules);
	fx_apply(&f, "lead.captured", "K", "s", "company_size", "5000");
	fx_apply(&f, "lead.assigned", "K", "s", "owner", "b");
	o = qualify(&f, "K");
	assert_true(o.assign);
	assert_string_equal(o.owner, "a");
	assert_int_equal(rep_of(&f, "b").open, 0);
	fx_free(&f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shipped_file),
		cmocka_unit_test(test_rules_errors),
		cmocka_unit_test(test_rules_file_limits),
		cmocka_unit_test(test_matching_order_and_fallback),
		cmocka_unit_test(test_fairness_one_by_one),
		cmocka_unit_test(test_fairness_burst),
		cmocka_unit_test(test_capacity),
		cmocka_unit_test(test_unavailable_until),
		cmocka_unit_test(test_sla_timers),
		cmocka_unit_test(test_escalation_chain),
		cmocka_unit_test(test_manual_assignment),
		cmocka_unit_test(test_replay_identical),
		cmocka_unit_test(test_decode_garbage),
		cmocka_unit_test(test_ignored_records),
		cmocka_unit_test(test_reasons_stay_utf8),
		cmocka_unit_test(test_say_strs_is_say),
		cmocka_unit_test(test_dropped_route_is_taken_back),
		cmocka_unit_test(test_readme_tour_hand_assignment_wins),
		cmocka_unit_test(test_dropped_route_decided_again_after_activity),
		cmocka_unit_test(test_dropped_escalation_goes_back),
		cmocka_unit_test(test_owned_lead_keeps_owner),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
