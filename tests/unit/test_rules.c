/*
 * tests/unit/test_rules.c - the scoring rules engine (clients/scoring):
 * the rules file and every error it can hold, conditions, fit,
 * engagement, decay, caps, once, qualification, recycling, erasure, and
 * the state's msgpack encoding.
 *
 * Records are made by the real encoder (fp_record_encode) and read back
 * with funnel_record_parse, as the service receives them.
 */
#include <inttypes.h>
#include <math.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>
#include <sodium.h>

#include "bytes.h"
#include "envelope.h"
#include "mp.h"
#include "funnel/record.h"
#include "model.h"
#include "rules.h"
#include "unit.h"
#include "workload.h"

#define CAPTURED "lead.captured"
#define ACTIVITY "lead.activity"
#define CONTACTED "lead.contacted"
#define QUALIFIED "lead.qualified"
#define RECYCLED "lead.recycled"
#define REJECTED "lead.rejected"
#define ERASED "lead.erased"
#define SCORED "lead.scored"

/* 2026-01-01T00:00:00Z and one day, in ns */
#define T0 1767225600000000000ULL
#define DAY 86400000000000ULL

static uint64_t
at_day(double day)
{
	return T0 + (uint64_t)llround(day * (double)DAY);
}

/* ---- records ---- */

/* The next record rec_make builds carries this occurred_at (0: none). */
static int64_t next_occurred_at;

/* A record and what its parse points into. */
typedef struct trec {
	uint8_t *bytes;
	size_t len;
	msgpack_zone zone;
	funnel_record r;
} trec;

/*
 * Pack a data map from key/value string pairs (kv[0], kv[1], ... up to a
 * NULL key).  A value starting with '=' is typed: "=nil", "=true",
 * "=false", an integer ("=500") or a float ("=1.5").
 */
static void
pack_data(msgpack_sbuffer *sb, const char *const *kv)
{
	msgpack_packer pk;
	size_t n = 0;
	while (kv[2 * n] != NULL)
		n++;
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, n);
	for (size_t i = 0; i < n; i++) {
		const char *k = kv[2 * i], *v = kv[2 * i + 1];
		msgpack_pack_str_with_body(&pk, k, strlen(k));
		if (v[0] != '=')
			msgpack_pack_str_with_body(&pk, v, strlen(v));
		else if (strcmp(v, "=nil") == 0)
			msgpack_pack_nil(&pk);
		else if (strcmp(v, "=true") == 0)
			msgpack_pack_true(&pk);
		else if (strcmp(v, "=false") == 0)
			msgpack_pack_false(&pk);
		else if (strchr(v, '.') != NULL)
			msgpack_pack_double(&pk, strtod(v + 1, NULL));
		else
			msgpack_pack_int64(&pk, strtoll(v + 1, NULL, 10));
	}
}

/* Encode and parse a record; data_kv NULL for no data map, lead NULL for
 * none.  Free with rec_free. */
static void
rec_make(trec *t, uint64_t seq, uint64_t ts, const char *type, const char *lead, fp_stage stage,
         const char *const *data_kv)
{
	msgpack_sbuffer data, sb;
	msgpack_unpacked up;
	fp_event ev;
	uint8_t hash[FUNNEL_HASH_BYTES];

	memset(&ev, 0, sizeof ev);
	ev.type = (funnel_str){ type, strlen(type) };
	ev.spec = fp_evspec_lookup(type, strlen(type));
	if (lead != NULL)
		ev.lead = (funnel_str){ lead, strlen(lead) };
	if (next_occurred_at != 0) {
		ev.has_occurred_at = 1;
		ev.occurred_at = next_occurred_at;
		next_occurred_at = 0;
	}
	msgpack_sbuffer_init(&data);
	msgpack_unpacked_init(&up);
	if (data_kv != NULL) {
		size_t off = 0;
		pack_data(&data, data_kv);
		assert_int_equal(msgpack_unpack_next(&up, data.data, data.size, &off),
		                 MSGPACK_UNPACK_SUCCESS);
		ev.data = &up.data;
	}
	fp_stamp st = { .seq = seq, .ts = ts, .has_lead_state = lead != NULL, .stage = stage,
	                .version = seq };
	msgpack_sbuffer_init(&sb);
	assert_int_equal(fp_record_encode(&sb, &ev, &st, hash), FUNNEL_OK);
	t->bytes = dup_bytes(sb.data, sb.size);
	t->len = sb.size;
	msgpack_sbuffer_destroy(&sb);
	msgpack_unpacked_destroy(&up);
	msgpack_sbuffer_destroy(&data);
	msgpack_zone_init(&t->zone, 1024);
	assert_int_equal(funnel_record_parse(t->bytes, t->len, &t->zone, &t->r), FUNNEL_OK);
}

static void
rec_free(trec *t)
{
	msgpack_zone_destroy(&t->zone);
	free(t->bytes);
}

/* ---- a lead under test ---- */

typedef struct fx {
	sc_rules *r;
	sc_lead *st;
	uint64_t seq;
} fx;

static sc_rules *
parse_ok(const char *text)
{
	char err[512] = "";
	sc_rules *r = NULL;
	int rc = sc_rules_parse(text, strlen(text), "funnel.yaml", &r, err, sizeof err);
	if (rc != FUNNEL_OK)
		fail_msg("rules refused (%d): %s", rc, err);
	assert_non_null(r);
	return r;
}

static void
fx_open(fx *f, const char *rules)
{
	f->r = parse_ok(rules);
	f->st = sc_lead_new(f->r);
	assert_non_null(f->st);
	f->seq = 0;
}

static void
fx_close(fx *f)
{
	sc_lead_destroy(&f->st);
	assert_null(f->st);
	sc_rules_destroy(&f->r);
	assert_null(f->r);
}

/* Apply one record about lead L-1 at `day`; the data pairs follow, NULL
 * ended (a lone NULL: no data map). */
static sc_outcome
feed(fx *f, const char *type, fp_stage stage, double day, ...)
{
	const char *kv[33];
	size_t n = 0;
	va_list ap;
	va_start(ap, day);
	while (n < 32 && (kv[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	kv[n] = NULL;
	assert_true(n % 2 == 0);
	trec t;
	rec_make(&t, ++f->seq, at_day(day), type, "L-1", stage, n ? kv : NULL);
	sc_outcome out;
	assert_int_equal(sc_apply(f->r, f->st, &t.r, &out), FUNNEL_OK);
	rec_free(&t);
	return out;
}

#define assert_scores(o, f, e, t) do { \
	assert_int_equal((o).fit, (f)); \
	assert_int_equal((o).engagement, (e)); \
	assert_int_equal((o).total, (t)); \
} while (0)

/* The encoded state, malloc'd, its size in *len. */
static uint8_t *
encode(const sc_rules *r, const sc_lead *st, size_t *len)
{
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	assert_int_equal(sc_lead_encode(r, st, &sb), FUNNEL_OK);
	uint8_t *b = dup_bytes(sb.data, sb.size);
	*len = sb.size;
	msgpack_sbuffer_destroy(&sb);
	return b;
}

static size_t
rule_index(const sc_rules *r, const char *name)
{
	for (size_t i = 0; i < sc_rules_count(r); i++) {
		if (strcmp(sc_rule_name(r, i), name) == 0)
			return i;
	}
	fail_msg("no rule %s", name);
	return 0;
}

static size_t
field_index(const sc_rules *r, const char *name)
{
	for (size_t i = 0; i < sc_rules_field_count(r); i++) {
		if (strcmp(sc_rules_field_name(r, i), name) == 0)
			return i;
	}
	fail_msg("no field %s", name);
	return 0;
}

/*
 * The rules most tests use.  Rule indexes: 0 senior, 1 sized, 2 demo,
 * 3 views, 4 pricing, 5 trial, 6 free-mail, 7 unsubscribed.  %s takes
 * extra scoring settings.
 */
static const char base_fmt[] =
	"version: test v1\n"
	"scoring:\n"
	"  threshold: 50\n"
	"  decay: { half_life_days: 10 }\n"
	"%s"
	"  fit:\n"
	"    - name: senior\n"
	"      field: title\n"
	"      matches: ^(VP|Head)\n"
	"      points: 20\n"
	"    - name: sized\n"
	"      field: company_size\n"
	"      at_least: 200\n"
	"      points: 10\n"
	"  engagement:\n"
	"    - name: demo\n"
	"      on: demo_request\n"
	"      points: 40\n"
	"    - name: views\n"
	"      on: [page_view, email_click]\n"
	"      points: 2\n"
	"      cap: 5\n"
	"    - name: pricing\n"
	"      on: page_view\n"
	"      when: [{ field: url, matches: /pricing }]\n"
	"      points: 10\n"
	"    - name: trial\n"
	"      on: trial_signup\n"
	"      points: 15\n"
	"      once: true\n"
	"  negative:\n"
	"    - name: free-mail\n"
	"      field: email_domain\n"
	"      in: [gmail.com, web.de]\n"
	"      points: -15\n"
	"    - name: unsubscribed\n"
	"      on: unsubscribe\n"
	"      points: -30\n"
	"      cap: 30\n";

static void
fx_base(fx *f, const char *extra)
{
	char text[2048];
	snprintf(text, sizeof text, base_fmt, extra);
	fx_open(f, text);
}

/* A good-fit lead: senior (20) + sized (10) = 30. */
static sc_outcome
capture_fit(fx *f, fp_stage stage, double day)
{
	return feed(f, CAPTURED, stage, day, "title", "VP Sales", "company_size", "500",
	            "email", "ana@acme.example", NULL);
}

/* ---- the rules file ---- */

static void
test_shipped_file_parses(void **state)
{
	(void)state;
	char err[512] = "";
	sc_rules *r = NULL;
	assert_int_equal(sc_rules_load("funnel.yaml", &r, err, sizeof err), FUNNEL_OK);
	assert_string_equal(err, "");
	assert_string_equal(sc_rules_version(r), "2026-11 v1");
	assert_int_equal(sc_rules_threshold(r), 70);
	int mf = -1;
	assert_int_equal(sc_rules_minimum_fit(r, &mf), 1);
	assert_int_equal(mf, 10);
	assert_true(sc_rules_half_life(r) == 30 * DAY);
	assert_int_equal(sc_rules_resets_on_recycle(r), 1);
	assert_int_equal(sc_rules_count(r), 20);
	assert_string_equal(sc_rule_kind(r, 0), "fit");
	assert_string_equal(sc_rule_kind(r, rule_index(r, "demo-request")), "engagement");
	assert_string_equal(sc_rule_kind(r, rule_index(r, "unsubscribed")), "negative");
	assert_int_equal(sc_rule_on_activity(r, rule_index(r, "unsubscribed")), 1);
	assert_int_equal(sc_rule_on_activity(r, rule_index(r, "free-mail")), 0);
	assert_null(sc_rule_kind(r, 20));
	assert_null(sc_rule_name(r, 20));

	/* the hash is BLAKE2b-256 of the file's exact bytes, and the text is them */
	FILE *fp = fopen("funnel.yaml", "rb");
	assert_non_null(fp);
	static char buf[SC_MAX_FILE_BYTES];
	size_t n = fread(buf, 1, sizeof buf, fp);
	fclose(fp);
	uint8_t want[FUNNEL_HASH_BYTES];
	crypto_generichash(want, sizeof want, (const unsigned char *)buf, n, NULL, 0);
	assert_memory_equal(sc_rules_hash(r), want, sizeof want);
	size_t len = 0;
	const char *text = sc_rules_text(r, &len);
	assert_int_equal(len, n);
	assert_memory_equal(text, buf, n);
	assert_int_equal(text[len], '\0');
	sc_rules_destroy(&r);
	sc_rules_destroy(&r);     /* safe on NULL */
	sc_rules_destroy(NULL);
}

/* The shipped rules on a few realistic leads: each scores as the comments
 * of funnel.yaml say. */
static void
test_shipped_file_scores(void **state)
{
	(void)state;
	fx f;
	f.r = NULL;
	char err[512];
	assert_int_equal(sc_rules_load("funnel.yaml", &f.r, err, sizeof err), FUNNEL_OK);
	f.st = sc_lead_new(f.r);
	f.seq = 0;
	/* decision-maker 20 + size 15 + industry 10 + country 5 + home market 5 */
	sc_outcome o = feed(&f, CAPTURED, FP_STAGE_INQUIRY, 0, "email", "ana@fjord.example",
	                    "title", "Chief Revenue Officer", "company_size", "1200",
	                    "industry", "software", "country", "DE", "source", "organic", NULL);
	assert_scores(o, 55, 0, 55);
	assert_int_equal(o.qualify, 0);     /* fit alone never makes an MQL */
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 1, "kind", "demo_request", NULL);
	assert_scores(o, 55, 40, 95);
	assert_int_equal(o.qualify, 1);
	sc_lead_reset(f.st);
	/* the example of the file: 45 fit points, a webinar and a look at the prices */
	o = feed(&f, CAPTURED, FP_STAGE_INQUIRY, 0, "email", "eva@helios.example", "title",
	         "VP Marketing", "company_size", "800", "industry", "banking", "country", "ES", NULL);
	assert_scores(o, 45, 0, 45);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "webinar", NULL);
	assert_int_equal(o.qualify, 0);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "page_view", "url", "/pricing", NULL);
	assert_scores(o, 45, 26, 71);
	assert_int_equal(o.qualify, 1);
	sc_lead_reset(f.st);
	/* a student on a free mail address: negative fit */
	o = feed(&f, CAPTURED, FP_STAGE_INQUIRY, 0, "email", "bob@gmail.com", "title", "Student",
	         NULL);
	assert_scores(o, -55, 0, -55);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "demo_request", NULL);
	assert_scores(o, -55, 40, -15);
	assert_int_equal(o.qualify, 0);
	fx_close(&f);
}

/* Settings read back; routing and sla are taken whatever they hold. */
static void
test_parse_settings(void **state)
{
	(void)state;
	sc_rules *r = parse_ok("# a comment\n"
	                       "version: 7\n"
	                       "scoring:\n"
	                       "  threshold: \"40\"\n"
	                       "  decay:\n"
	                       "    half_life_hours: 12\n"
	                       "  on_recycle: keep\n"
	                       "  fit:\n"
	                       "  engagement: ~\n"
	                       "  negative: []\n"
	                       "routing: [1, { any: [thing] }]\n"
	                       "sla:\n"
	                       "  first_touch: { hours: 4 }\n");
	assert_string_equal(sc_rules_version(r), "7");
	assert_int_equal(sc_rules_threshold(r), 40);
	int mf = 12345;
	assert_int_equal(sc_rules_minimum_fit(r, &mf), 0);
	assert_int_equal(mf, 12345);
	assert_true(sc_rules_half_life(r) == 12 * 3600000000000ULL);
	assert_int_equal(sc_rules_resets_on_recycle(r), 0);
	assert_int_equal(sc_rules_count(r), 0);
	assert_int_equal(sc_rules_field_count(r), 1);
	assert_string_equal(sc_rules_field_name(r, 0), "email_domain");
	assert_null(sc_rules_field_name(r, 1));
	sc_rules_destroy(&r);

	r = parse_ok("version: v\nscoring:\n  threshold: -5\n  minimum_fit: 0\n");
	assert_int_equal(sc_rules_threshold(r), -5);
	assert_int_equal(sc_rules_minimum_fit(r, &mf), 1);
	assert_int_equal(mf, 0);
	assert_true(sc_rules_half_life(r) == 0);
	assert_int_equal(sc_rules_resets_on_recycle(r), 1);
	sc_rules_destroy(&r);
}

static const struct {
	const char *yaml;
	const char *msg;
} bad_files[] = {
	{ "", "funnel.yaml:1: the file is empty: expected version and scoring" },
	{ "version: t\nscoring: [\n",
	  "funnel.yaml:3: not valid YAML: did not find expected node content (while parsing a flow node)" },
	{ "version: t\nscoring:\n  threshold: 1\n  fit:\n\t- name: x\n",
	  "funnel.yaml:5: not valid YAML: found character that cannot start any token "
	  "(while scanning for the next token)" },
	{ "- version\n- scoring\n", "funnel.yaml:1: expected a mapping, got a list" },
	{ "version: t\nscoring:\n  threshold: 10\nrouting: {}\nscore: 1\n",
	  "funnel.yaml:5: unknown key \"score\" (expected one of: version, scoring, routing, sla, forms, goals)" },
	{ "scoring:\n  threshold: 10\n",
	  "funnel.yaml:1: missing \"version\" (a name for this edition of the rules)" },
	{ "version: t\n", "funnel.yaml:1: missing \"scoring\"" },
	{ "version: [1, 2]\nscoring:\n  threshold: 1\n",
	  "funnel.yaml:1: version: expected a word or text, got a list" },
	{ "version: t\nversion: u\nscoring:\n  threshold: 1\n", "funnel.yaml:2: version: duplicate key" },
	{ "version: t\nscoring:\n  threshold: 1\n---\nversion: u\n",
	  "funnel.yaml:5: a second document: the file must hold one" },
	{ "version: t\nscoring: 12\n", "funnel.yaml:2: scoring: expected a mapping, got \"12\"" },
	{ "version: t\nscoring:\n  treshold: 10\n",
	  "funnel.yaml:3: scoring: unknown key \"treshold\" (expected one of: threshold, minimum_fit, "
	  "decay, on_recycle, fit, engagement, negative)" },
	{ "version: t\nscoring:\n  threshold: 1\n  [a, b]: 1\n",
	  "funnel.yaml:4: scoring: a key must be a plain word, got a list" },
	{ "version: t\nscoring:\n  fit: []\n",
	  "funnel.yaml:3: scoring: missing \"threshold\" (the score that makes a lead an MQL)" },
	{ "version: t\nscoring:\n  threshold: high\n",
	  "funnel.yaml:3: scoring.threshold: expected a number, got \"high\"" },
	{ "version: t\nscoring:\n  threshold: 50.5\n",
	  "funnel.yaml:3: scoring.threshold: expected a whole number, got 50.5" },
	{ "version: t\nscoring:\n  threshold:\n", "funnel.yaml:3: scoring.threshold: expected a number, got nothing" },
	{ "version: t\nscoring:\n  threshold: 0x10\n",
	  "funnel.yaml:3: scoring.threshold: expected a number, got \"0x10\"" },
	{ "version: t\nscoring:\n  threshold: .inf\n",
	  "funnel.yaml:3: scoring.threshold: expected a number, got \".inf\"" },
	{ "version: t\nscoring:\n  threshold: [50]\n",
	  "funnel.yaml:3: scoring.threshold: expected a number, got a list" },
	{ "version: t\nscoring:\n  threshold: 10\n  minimum_fit: lots\n",
	  "funnel.yaml:4: scoring.minimum_fit: expected a number, got \"lots\"" },
	{ "version: t\nscoring:\n  threshold: 10\n  decay: { half_life_days: 1, half_life_hours: 2 }\n",
	  "funnel.yaml:4: scoring.decay: expected one of half_life_days or half_life_hours" },
	{ "version: t\nscoring:\n  threshold: 10\n  decay: {}\n",
	  "funnel.yaml:4: scoring.decay: expected one of half_life_days or half_life_hours" },
	{ "version: t\nscoring:\n  threshold: 10\n  decay: { half_life_days: 0 }\n",
	  "funnel.yaml:4: scoring.decay.half_life_days: expected a duration above zero and at most "
	  "100 years, got 0" },
	{ "version: t\nscoring:\n  threshold: 10\n  decay: { half_life_hours: soon }\n",
	  "funnel.yaml:4: scoring.decay.half_life_hours: expected a number, got \"soon\"" },
	{ "version: t\nscoring:\n  threshold: 10\n  decay:\n    half_life_weeks: 2\n",
	  "funnel.yaml:5: scoring.decay: unknown key \"half_life_weeks\" (expected one of: "
	  "half_life_days, half_life_hours)" },
	{ "version: t\nscoring:\n  threshold: 10\n  decay: 30\n",
	  "funnel.yaml:4: scoring.decay: expected a mapping, got \"30\"" },
	{ "version: t\nscoring:\n  threshold: 10\n  on_recycle: forget\n",
	  "funnel.yaml:4: scoring.on_recycle: expected reset_engagement or keep, got \"forget\"" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit: { name: a }\n",
	  "funnel.yaml:4: scoring.fit: expected a list, got a mapping" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n    - just-a-word\n",
	  "funnel.yaml:5: scoring.fit[0]: expected a mapping, got \"just-a-word\"" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      field: x\n      equals: 1\n      pionts: 5\n",
	  "funnel.yaml:8: scoring.fit[0]: unknown key \"pionts\" (expected one of: name, points, on, "
	  "once, cap, when, any, field, equals, in, at_least, at_most, above, below, matches, "
	  "ignore_case)" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n    - field: x\n      equals: 1\n      points: 5\n",
	  "funnel.yaml:5: scoring.fit[0]: missing \"name\"" },
	/* the example of the header: line 14, third fit rule */
	{ "version: t\n"
	  "scoring:\n"
	  "  threshold: 10\n"
	  "  fit:\n"
	  "    - name: a\n"
	  "      field: title\n"
	  "      matches: VP\n"
	  "      points: 10\n"
	  "    - name: b\n"
	  "      field: country\n"
	  "      equals: DE\n"
	  "      points: 5\n"
	  "    - name: c\n"
	  "      points: ten\n"
	  "      field: industry\n"
	  "      equals: software\n",
	  "funnel.yaml:14: scoring.fit[2].points: expected a number, got \"ten\"" },
	{ "version: t\nscoring:\n  threshold: 10\n"
	  "  fit:\n    - name: a\n      field: x\n      equals: 1\n      points: 5\n"
	  "  engagement:\n    - name: b\n      on: x\n      points: 1\n"
	  "  negative:\n    - name: a\n      on: y\n      points: -1\n",
	  "funnel.yaml:14: scoring.negative[0].name: duplicate rule name \"a\" (first at line 5)" },
	{ "version: t\nscoring:\n  threshold: 10\n  engagement:\n"
	  "    - name: 12345678901234567890123456789012345678901234567890123456789012345\n"
	  "      on: x\n      points: 1\n",
	  "funnel.yaml:5: scoring.engagement[0].name: expected 1 to 64 characters, got 65" },
	{ "version: t\nscoring:\n  threshold: 10\n  engagement:\n    - name: \"a\\tb\"\n",
	  "funnel.yaml:5: scoring.engagement[0].name: a rule name must not hold control characters" },
	{ "version: t\nscoring:\n  threshold: 10\n  engagement:\n    - name: \"\"\n",
	  "funnel.yaml:5: scoring.engagement[0].name: expected 1 to 64 characters, got 0" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n    - name: a\n      field: x\n      equals: 1\n",
	  "funnel.yaml:5: scoring.fit[0]: missing \"points\"" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      field: x\n      equals: 1\n      points: -5\n",
	  "funnel.yaml:8: scoring.fit[0].points: expected points above zero, got -5 (penalties belong "
	  "under negative)" },
	{ "version: t\nscoring:\n  threshold: 10\n  engagement:\n"
	  "    - name: a\n      on: x\n      points: 0\n",
	  "funnel.yaml:7: scoring.engagement[0].points: expected points above zero, got 0 (penalties "
	  "belong under negative)" },
	{ "version: t\nscoring:\n  threshold: 10\n  negative:\n"
	  "    - name: a\n      field: x\n      equals: 1\n      points: 5\n",
	  "funnel.yaml:8: scoring.negative[0].points: a negative rule needs points below zero, got 5" },
	{ "version: t\nscoring:\n  threshold: 10\n  negative:\n"
	  "    - name: a\n      on: x\n      points: 0\n",
	  "funnel.yaml:7: scoring.negative[0].points: a negative rule needs points below zero, got 0" },
	{ "version: t\nscoring:\n  threshold: 10\n  engagement:\n"
	  "    - name: a\n      on: x\n      points: 2000000\n",
	  "funnel.yaml:7: scoring.engagement[0].points: expected at most 1000000 points either way, "
	  "got 2000000" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      on: page_view\n      points: 5\n",
	  "funnel.yaml:6: scoring.fit[0]: a fit rule reads lead fields and takes no \"on\": rules on "
	  "activities belong under engagement" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      field: x\n      equals: 1\n      points: 5\n      cap: 10\n",
	  "funnel.yaml:9: scoring.fit[0].cap: cap applies to rules on activities (with \"on\") only" },
	{ "version: t\nscoring:\n  threshold: 10\n  negative:\n"
	  "    - name: a\n      field: x\n      equals: 1\n      points: -5\n      once: true\n",
	  "funnel.yaml:9: scoring.negative[0].once: once applies to rules on activities (with \"on\") only" },
	{ "version: t\nscoring:\n  threshold: 10\n  engagement:\n    - name: a\n      points: 5\n",
	  "funnel.yaml:5: scoring.engagement[0]: missing \"on\" (the activity kind or kinds that score)" },
	{ "version: t\nscoring:\n  threshold: 10\n  engagement:\n    - name: a\n      on: []\n      points: 5\n",
	  "funnel.yaml:6: scoring.engagement[0].on: expected an activity kind or a list of them" },
	{ "version: t\nscoring:\n  threshold: 10\n  engagement:\n"
	  "    - name: a\n      on: [x, {y: z}]\n      points: 5\n",
	  "funnel.yaml:6: scoring.engagement[0].on[1]: expected a word or text, got a mapping" },
	{ "version: t\nscoring:\n  threshold: 10\n  engagement:\n"
	  "    - name: a\n      on: x\n      points: 5\n      once: sometimes\n",
	  "funnel.yaml:8: scoring.engagement[0].once: expected true or false, got \"sometimes\"" },
	{ "version: t\nscoring:\n  threshold: 10\n  engagement:\n"
	  "    - name: a\n      on: x\n      points: 5\n      cap: 0\n",
	  "funnel.yaml:8: scoring.engagement[0].cap: expected a number of points above zero, got 0" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n    - name: a\n      points: 5\n",
	  "funnel.yaml:5: scoring.fit[0]: a rule on lead fields needs a condition (field, when or any)" },
	{ "version: t\nscoring:\n  threshold: 10\n  negative:\n    - name: a\n      points: -5\n",
	  "funnel.yaml:5: scoring.negative[0]: a rule on lead fields needs a condition (field, when or "
	  "any)" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n    - name: a\n      equals: x\n      points: 5\n",
	  "funnel.yaml:5: scoring.fit[0]: missing \"field\" (the field the condition reads)" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n    - name: a\n      field: x\n      points: 5\n",
	  "funnel.yaml:5: scoring.fit[0]: a condition needs one of equals, in, at_least, at_most, "
	  "above, below or matches" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      field: [x]\n      equals: 1\n      points: 5\n",
	  "funnel.yaml:6: scoring.fit[0].field: expected a word or text, got a list" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      field: x\n      equals: { a: b }\n      points: 5\n",
	  "funnel.yaml:7: scoring.fit[0].equals: expected a word or a number, got a mapping" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      field: country\n      in: DE\n      points: 5\n",
	  "funnel.yaml:7: scoring.fit[0].in: expected a list, got \"DE\"" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      field: country\n      in: []\n      points: 5\n",
	  "funnel.yaml:7: scoring.fit[0].in: expected a list of one or more values" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      field: country\n      in: [DE, [FR]]\n      points: 5\n",
	  "funnel.yaml:7: scoring.fit[0].in[1]: expected a word or a number, got a list" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      field: company_size\n      at_least: many\n      points: 5\n",
	  "funnel.yaml:7: scoring.fit[0].at_least: expected a number, got \"many\"" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      field: company_size\n      below: 1,000\n      points: 5\n",
	  "funnel.yaml:7: scoring.fit[0].below: expected a number, got \"1,000\"" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      field: title\n      matches: \"([a-z\"\n      points: 5\n",
	  "funnel.yaml:7: scoring.fit[0].matches: bad regular expression \"([a-z\": missing "
	  "terminating ] for character class (at character 5)" },
	/* back-references are refused, numbered or named, naming the line */
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      field: title\n      matches: \"(.*)(.*)(.*)(.*)(.*)\\\\5x\"\n"
	  "      points: 5\n",
	  "funnel.yaml:7: scoring.fit[0].matches: regular expression \"(.*)(.*)(.*)(.*)(.*)\\5x\" "
	  "refers back to a group (\\5): back-references are not supported (matching them can "
	  "take exponential time)" },
	{ "version: t\nscoring:\n  threshold: 10\n  engagement:\n"
	  "    - name: a\n      on: page_view\n      when:\n"
	  "        - { field: url, matches: \"(?<w>[a-z]+)/\\\\k<w>\" }\n      points: 5\n",
	  "funnel.yaml:8: scoring.engagement[0].when[0].matches: regular expression "
	  "\"(?<w>[a-z]+)/\\k<w>\" refers back to a group (\\1): back-references are not "
	  "supported (matching them can take exponential time)" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      field: title\n      matches: \"\"\n      points: 5\n",
	  "funnel.yaml:7: scoring.fit[0].matches: expected 1 to 1024 characters, got 0" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      field: title\n      equals: VP\n      ignore_case: true\n      points: 5\n",
	  "funnel.yaml:8: scoring.fit[0].ignore_case: ignore_case applies to matches only" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      field: title\n      matches: VP\n      ignore_case: maybe\n      points: 5\n",
	  "funnel.yaml:8: scoring.fit[0].ignore_case: expected true or false, got \"maybe\"" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      when: { field: x, equals: 1 }\n      points: 5\n",
	  "funnel.yaml:6: scoring.fit[0].when: expected a list, got a mapping" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n    - name: a\n      when: []\n      points: 5\n",
	  "funnel.yaml:6: scoring.fit[0].when: expected a list of one or more conditions" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      when:\n        - { field: x, equals: 1 }\n"
	  "        - { field: y, equals: 2, points: 3 }\n      points: 5\n",
	  "funnel.yaml:8: scoring.fit[0].when[1]: unknown key \"points\" (expected one of: field, "
	  "equals, in, at_least, at_most, above, below, matches, ignore_case)" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      when:\n        - { equals: 1 }\n      points: 5\n",
	  "funnel.yaml:7: scoring.fit[0].when[0]: missing \"field\" (the field the condition reads)" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n    - name: a\n      any: [a]\n      points: 5\n",
	  "funnel.yaml:6: scoring.fit[0].any[0]: expected a mapping, got \"a\"" },
	{ "version: t\nscoring:\n  threshold: 10\n  engagement:\n"
	  "    - name: a\n      on: page_view\n      any:\n        - { field: url, matches: \"(\" }\n"
	  "      points: 5\n",
	  "funnel.yaml:8: scoring.engagement[0].any[0].matches: bad regular expression \"(\": "
	  "missing closing parenthesis (at character 1)" },
	{ "version: t\nscoring:\n  threshold: 10\n  fit:\n"
	  "    - name: a\n      field: x\n      equals: 1\n      points: 5\n      points: 6\n",
	  "funnel.yaml:9: scoring.fit[0].points: duplicate key" },
};

static void
test_rules_errors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++) {
		char err[512] = "unset";
		sc_rules *r = (sc_rules *)&err;   /* must come back NULL */
		int rc = sc_rules_parse(bad_files[i].yaml, strlen(bad_files[i].yaml), "funnel.yaml", &r,
		                        err, sizeof err);
		if (rc != FUNNEL_EVALUE || r != NULL || strcmp(err, bad_files[i].msg) != 0)
			fail_msg("case %zu: rc %d\n got: %s\nwant: %s", i, rc, err, bad_files[i].msg);
	}
}

/* Messages fit the buffer given, and no buffer at all is fine. */
static void
test_rules_error_buffer(void **state)
{
	(void)state;
	const char *text = "version: t\nscoring:\n  threshold: high\n";
	char small[16];
	sc_rules *r;
	memset(small, 'x', sizeof small);
	assert_int_equal(sc_rules_parse(text, strlen(text), "funnel.yaml", &r, small, sizeof small),
	                 FUNNEL_EVALUE);
	assert_string_equal(small, "funnel.yaml:3: ");
	assert_int_equal(sc_rules_parse(text, strlen(text), "funnel.yaml", &r, NULL, 0), FUNNEL_EVALUE);
	assert_null(r);
	/* the text need not be NUL-terminated: only len bytes are read */
	const char good[] = "version: t\nscoring:\n  threshold: 1\nXXXX";
	char *exact = (char *)dup_bytes(good, sizeof good - 5);
	assert_int_equal(sc_rules_parse(exact, sizeof good - 5, "f", &r, NULL, 0), FUNNEL_OK);
	assert_int_equal(sc_rules_threshold(r), 1);
	sc_rules_destroy(&r);
	free(exact);
}

static void
test_too_many_rules(void **state)
{
	(void)state;
	size_t cap = 64 * (SC_MAX_RULES + 2);
	char *text = malloc(cap);
	assert_non_null(text);
	size_t n = (size_t)snprintf(text, cap, "version: t\nscoring:\n  threshold: 1\n  engagement:\n");
	for (int i = 0; i < SC_MAX_RULES; i++)
		n += (size_t)snprintf(text + n, cap - n, "    - name: r%d\n      on: x\n      points: 1\n", i);
	sc_rules *r = parse_ok(text);
	assert_int_equal(sc_rules_count(r), SC_MAX_RULES);
	sc_rules_destroy(&r);
	/* one more: rule 256 starts on line 5 + 3 * 256 */
	snprintf(text + n, cap - n, "    - name: r%d\n      on: x\n      points: 1\n", SC_MAX_RULES);
	char err[256];
	assert_int_equal(sc_rules_parse(text, strlen(text), "funnel.yaml", &r, err, sizeof err),
	                 FUNNEL_EVALUE);
	assert_string_equal(err, "funnel.yaml:773: scoring.engagement[256]: too many rules (at most 256)");
	free(text);
}

static void
test_load_errors(void **state)
{
	(void)state;
	char err[256];
	sc_rules *r = (sc_rules *)&err;
	assert_int_equal(sc_rules_load("/nonexistent/funnel.yaml", &r, err, sizeof err),
	                 FUNNEL_ENOTFOUND);
	assert_null(r);
	assert_string_equal(err, "/nonexistent/funnel.yaml: cannot read: No such file or directory");
	/* a bad file names its path */
	char path[] = "/tmp/funnel-rules-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	FILE *fp = fdopen(fd, "w");
	fputs("version: t\nscoring:\n  threshold: 1\n  fit: 3\n", fp);
	fclose(fp);
	assert_int_equal(sc_rules_load(path, &r, err, sizeof err), FUNNEL_EVALUE);
	char want[256];
	snprintf(want, sizeof want, "%s:4: scoring.fit: expected a list, got \"3\"", path);
	assert_string_equal(err, want);
	remove(path);
}

/*
 * What the service would have refused when recording rules.changed is
 * refused when the file is read, so `check` refuses it too: more than
 * SC_MAX_FILE_BYTES (the log's record limit less the record's other
 * keys), text that is not UTF-8 (UTF-16, with or without a byte-order
 * mark), and nesting past RF_MAX_DEPTH, found before libyaml's quadratic
 * scan of a deep file.
 */
static void
test_file_limits(void **state)
{
	(void)state;
	char err[512];
	sc_rules *r;
	static const char head[] = "version: t\nscoring:\n  threshold: 1\n";

	/* exactly the limit: accepted; one byte more: refused, in memory and on disk */
	char *big = malloc(SC_MAX_FILE_BYTES + 2);
	assert_non_null(big);
	memset(big, '#', SC_MAX_FILE_BYTES + 1);
	memcpy(big, head, sizeof head - 1);
	big[SC_MAX_FILE_BYTES - 1] = '\n';
	big[SC_MAX_FILE_BYTES] = '\n';
	assert_int_equal(sc_rules_parse(big, SC_MAX_FILE_BYTES, "funnel.yaml", &r, err, sizeof err),
	                 FUNNEL_OK);
	sc_rules_destroy(&r);
	r = (sc_rules *)&err;
	assert_int_equal(sc_rules_parse(big, SC_MAX_FILE_BYTES + 1, "funnel.yaml", &r, err, sizeof err),
	                 FUNNEL_ETOOBIG);
	assert_null(r);
	assert_string_equal(err, "funnel.yaml:1: 64513 bytes, over the limit of 64512 bytes (the "
	                    "whole file is recorded in rules.changed, one log record of at most 64 KiB)");
	char path[] = "/tmp/funnel-rules-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	FILE *fp = fdopen(fd, "w");
	fwrite(big, 1, SC_MAX_FILE_BYTES + 1, fp);
	fclose(fp);
	assert_int_equal(sc_rules_load(path, &r, err, sizeof err), FUNNEL_ETOOBIG);
	char want[512];
	snprintf(want, sizeof want, "%s: 64513 bytes, over the limit of 64512 bytes (the whole file "
	         "is recorded in rules.changed, one log record of at most 64 KiB)", path);
	assert_string_equal(err, want);
	remove(path);
	free(big);

	/* not UTF-8: the line of the first bad byte */
	static const struct {
		const char *text;
		size_t len;
		const char *msg;
	} enc[] = {
		{ "\xff\xfev\0e\0r\0", 8, "funnel.yaml:1: not UTF-8 text (byte 0): save the file as UTF-8 "
		  "(UTF-16 and other encodings are refused)" },
		{ "v\0e\0r\0", 6, "funnel.yaml:1: a NUL byte (byte 1): save the file as UTF-8 text "
		  "(UTF-16 and other encodings are refused)" },
		{ "version: t\nscoring:\n  threshold: 1\n# caf\xe9\n", 42, "funnel.yaml:4: not UTF-8 "
		  "text (byte 40): save the file as UTF-8 (UTF-16 and other encodings are refused)" },
	};
	for (size_t i = 0; i < sizeof enc / sizeof enc[0]; i++) {
		r = (sc_rules *)&err;
		int rc = sc_rules_parse(enc[i].text, enc[i].len, "funnel.yaml", &r, err, sizeof err);
		if (rc != FUNNEL_EVALUE || r != NULL || strcmp(err, enc[i].msg) != 0)
			fail_msg("encoding case %zu: rc %d\n got: %s\nwant: %s", i, rc, err, enc[i].msg);
	}
	/* UTF-8 with a byte-order mark is UTF-8 */
	static const char bom[] = "\xef\xbb\xbfversion: t\nscoring:\n  threshold: 1\n";
	r = parse_ok(bom);
	sc_rules_destroy(&r);

	/* nesting: 32 levels are fine, 33 are not (the line of the 33rd); a
	 * 60 KB file of '[' (quadratic in libyaml: seconds) is refused at once */
	char *deep = malloc(SC_MAX_FILE_BYTES + 1);
	assert_non_null(deep);
	for (int levels = 32; levels <= 33; levels++) {
		size_t n = (size_t)snprintf(deep, SC_MAX_FILE_BYTES, "%sx:\n", head);
		for (int i = 2; i <= levels; i++)
			n += (size_t)snprintf(deep + n, SC_MAX_FILE_BYTES - n, "%*s[\n", i, "");
		for (int i = levels; i >= 2; i--)
			n += (size_t)snprintf(deep + n, SC_MAX_FILE_BYTES - n, "%*s]\n", i, "");
		int rc = sc_rules_parse(deep, n, "funnel.yaml", &r, err, sizeof err);
		assert_int_equal(rc, FUNNEL_EVALUE);
		if (levels == 32)
			assert_string_equal(err, "funnel.yaml:4: unknown key \"x\" (expected one of: version, "
			                    "scoring, routing, sla, forms, goals)");
		else
			assert_string_equal(err, "funnel.yaml:36: nested deeper than 32 levels of mappings "
			                    "and lists");
	}
	size_t n = (size_t)snprintf(deep, SC_MAX_FILE_BYTES, "%sx: ", head);
	memset(deep + n, '[', 60000);
	n += 60000;
	deep[n] = 0;
	assert_int_equal(sc_rules_parse(deep, n, "funnel.yaml", &r, err, sizeof err), FUNNEL_EVALUE);
	assert_string_equal(err, "funnel.yaml:4: nested deeper than 32 levels of mappings and lists");
	free(deep);
}

/* ---- conditions ---- */

static const struct {
	const char *cond;          /* rule lines after name and points */
	const char *k1, *v1, *k2, *v2;   /* lead.captured data */
	int holds;
} conds[] = {
	/* equals: text ignoring case, numbers as numbers */
	{ "      field: country\n      equals: de\n", "country", "DE", NULL, NULL, 1 },
	{ "      field: country\n      equals: DE\n", "country", "DEU", NULL, NULL, 0 },
	{ "      field: company_size\n      equals: 500\n", "company_size", "500.0", NULL, NULL, 1 },
	{ "      field: company_size\n      equals: 500\n", "company_size", "=500", NULL, NULL, 1 },
	{ "      field: company_size\n      equals: 500\n", "company_size", "501", NULL, NULL, 0 },
	{ "      field: vip\n      equals: true\n", "vip", "=true", NULL, NULL, 1 },
	{ "      field: vip\n      equals: true\n", "vip", "=false", NULL, NULL, 0 },
	/* in */
	{ "      field: country\n      in: [DE, FR]\n", "country", "fr", NULL, NULL, 1 },
	{ "      field: country\n      in: [DE, FR]\n", "country", "ES", NULL, NULL, 0 },
	{ "      field: seats\n      in: [10, 20]\n", "seats", "20", NULL, NULL, 1 },
	{ "      field: seats\n      in: [10, 20]\n", "seats", "=10", NULL, NULL, 1 },
	{ "      field: seats\n      in: [10, 20]\n", "seats", "15", NULL, NULL, 0 },
	/* numeric: numbers and numeric strings; anything else fails */
	{ "      field: company_size\n      at_least: 200\n", "company_size", "200", NULL, NULL, 1 },
	{ "      field: company_size\n      at_least: 200\n", "company_size", "199", NULL, NULL, 0 },
	{ "      field: company_size\n      at_least: 200\n", "company_size", "=300", NULL, NULL, 1 },
	{ "      field: company_size\n      at_least: 200\n", "company_size", "=250.5", NULL, NULL, 1 },
	{ "      field: company_size\n      at_least: 200\n", "company_size", "lots", NULL, NULL, 0 },
	{ "      field: company_size\n      at_least: 200\n", "company_size", "1e3", NULL, NULL, 1 },
	{ "      field: company_size\n      at_least: 200\n", "company_size", "", NULL, NULL, 0 },
	{ "      field: company_size\n      at_most: 50\n", "company_size", "50", NULL, NULL, 1 },
	{ "      field: company_size\n      at_most: 50\n", "company_size", "=-3", NULL, NULL, 1 },
	{ "      field: company_size\n      at_most: 50\n", "company_size", "51", NULL, NULL, 0 },
	{ "      field: company_size\n      above: 200\n", "company_size", "200", NULL, NULL, 0 },
	{ "      field: company_size\n      above: 200\n", "company_size", "201", NULL, NULL, 1 },
	{ "      field: company_size\n      below: 200\n", "company_size", "200", NULL, NULL, 0 },
	{ "      field: company_size\n      below: 200\n", "company_size", "199.9", NULL, NULL, 1 },
	{ "      field: company_size\n      at_least: 200\n      at_most: 5000\n", "company_size", "5000",
	  NULL, NULL, 1 },
	{ "      field: company_size\n      at_least: 200\n      at_most: 5000\n", "company_size", "5001",
	  NULL, NULL, 0 },
	/* matches: found anywhere, case counts unless ignore_case */
	{ "      field: title\n      matches: ^VP\n", "title", "VP Sales", NULL, NULL, 1 },
	{ "      field: title\n      matches: ^VP\n", "title", "vp sales", NULL, NULL, 0 },
	{ "      field: title\n      matches: ^VP\n      ignore_case: true\n", "title", "vp sales", NULL,
	  NULL, 1 },
	{ "      field: title\n      matches: Sales\n", "title", "VP Sales EMEA", NULL, NULL, 1 },
	{ "      field: title\n      matches: \"^(a|b)+$\"\n", "title", "abba", NULL, NULL, 1 },
	{ "      field: title\n      matches: \"^(a|b)+$\"\n", "title", "abc", NULL, NULL, 0 },
	/* several operators in one condition: all hold */
	{ "      field: title\n      matches: Sales\n      in: [vp sales, head of sales]\n", "title",
	  "Head of Sales", NULL, NULL, 1 },
	{ "      field: title\n      matches: Sales\n      in: [vp sales]\n", "title", "Head of Sales",
	  NULL, NULL, 0 },
	/* absent fields fail every operator */
	{ "      field: title\n      matches: \".*\"\n", "company", "Acme", NULL, NULL, 0 },
	{ "      field: title\n      below: 10\n", NULL, NULL, NULL, NULL, 0 },
	{ "      field: title\n      equals: x\n", "title", "=nil", NULL, NULL, 0 },
	/* when: all hold */
	{ "      when:\n        - { field: country, in: [DE, NL] }\n"
	  "        - { field: company_size, at_least: 1000 }\n",
	  "country", "NL", "company_size", "1000", 1 },
	{ "      when:\n        - { field: country, in: [DE, NL] }\n"
	  "        - { field: company_size, at_least: 1000 }\n",
	  "country", "NL", "company_size", "999", 0 },
	/* any: one holds */
	{ "      any:\n        - { field: title, matches: student }\n"
	  "        - { field: email_domain, matches: \"\\\\.edu$\" }\n",
	  "email", "kim@mit.edu", "title", "Engineer", 1 },
	{ "      any:\n        - { field: title, matches: student }\n"
	  "        - { field: email_domain, matches: \"\\\\.edu$\" }\n",
	  "email", "kim@mit.com", "title", "Engineer", 0 },
	/* inline, when and any together: all of them */
	{ "      field: country\n      equals: DE\n      any:\n        - { field: title, matches: VP }\n"
	  "        - { field: title, matches: Head }\n",
	  "country", "DE", "title", "Head of IT", 1 },
	{ "      field: country\n      equals: DE\n      any:\n        - { field: title, matches: VP }\n",
	  "country", "FR", "title", "VP IT", 0 },
	/* email_domain: after the last @, lowercased */
	{ "      field: email_domain\n      equals: example.com\n", "email", "Ana@Example.COM", NULL, NULL, 1 },
	{ "      field: email_domain\n      matches: ^example\\.com$\n", "email", "a@b@EXAMPLE.com", NULL,
	  NULL, 1 },
	{ "      field: email_domain\n      matches: .\n", "email", "no-at-sign", NULL, NULL, 0 },
	{ "      field: email_domain\n      matches: .\n", "email", "trailing@", NULL, NULL, 0 },
	/* a data key named email_domain is not the derived field */
	{ "      field: email_domain\n      equals: web.de\n", "email_domain", "web.de", NULL, NULL, 0 },
	/* the raw email field can be read too */
	{ "      field: email\n      matches: ^ceo@\n", "email", "ceo@acme.example", NULL, NULL, 1 },
	/* maps and arrays are not read: the field stays absent */
};

static void
test_conditions(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof conds / sizeof conds[0]; i++) {
		char text[1024];
		snprintf(text, sizeof text,
		         "version: c\nscoring:\n  threshold: 1000\n  fit:\n    - name: r\n      points: 10\n%s",
		         conds[i].cond);
		fx f;
		fx_open(&f, text);
		sc_outcome o = feed(&f, CAPTURED, FP_STAGE_INQUIRY, 0, conds[i].k1, conds[i].v1,
		                    conds[i].k2, conds[i].v2, NULL);
		if (o.fit != (conds[i].holds ? 10 : 0))
			fail_msg("case %zu: fit %d, want %d\n%s", i, o.fit, conds[i].holds ? 10 : 0, conds[i].cond);
		fx_close(&f);
	}
}

/* Conditions on an activity's data, and the kinds in `on`. */
static void
test_activity_conditions(void **state)
{
	(void)state;
	fx f;
	fx_base(&f, "");
	size_t views = rule_index(f.r, "views"), pricing = rule_index(f.r, "pricing");
	sc_outcome o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "page_view", "url", "/blog", NULL);
	assert_scores(o, 0, 2, 2);
	assert_int_equal(o.n_fired, 1);
	assert_int_equal(o.fired[0], views);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "page_view", "url", "/en/pricing?x=1", NULL);
	assert_scores(o, 0, 14, 14);
	assert_int_equal(o.n_fired, 2);
	assert_int_equal(o.fired[0], views);
	assert_int_equal(o.fired[1], pricing);
	/* the other kind of the list */
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "email_click", "url", "/pricing", NULL);
	assert_scores(o, 0, 15, 15);
	assert_int_equal(o.n_fired, 1);
	/* a kind no rule names, a kind that differs in case, no kind at all */
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "webinar", NULL);
	assert_int_equal(o.n_fired, 0);
	assert_int_equal(o.changed, 0);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "Page_View", "url", "/pricing", NULL);
	assert_int_equal(o.n_fired, 0);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "url", "/pricing", NULL);
	assert_int_equal(o.n_fired, 0);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "=3", NULL);
	assert_int_equal(o.n_fired, 0);
	/* a url that is not text: the condition does not hold */
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "page_view", "url", "=7", NULL);
	assert_int_equal(o.n_fired, 1);
	assert_int_equal(o.fired[0], views);
	/* activity data never sets lead fields */
	for (size_t i = 0; i < sc_rules_field_count(f.r); i++)
		assert_null(sc_lead_field(f.st, i));
	fx_close(&f);
}

/* Long values are compared by their first SC_MAX_VALUE_BYTES bytes, cut on
 * a character boundary. */
static void
test_long_values(void **state)
{
	(void)state;
	fx f;
	fx_open(&f, "version: c\nscoring:\n  threshold: 1000\n  fit:\n"
	            "    - name: head\n      field: title\n      matches: ^x+$\n      points: 1\n"
	            "    - name: tail\n      field: title\n      matches: \"y$\"\n      points: 2\n");
	char title[SC_MAX_VALUE_BYTES + 64];
	/* 255 x, then a 2-byte character that would straddle byte 256, then y */
	memset(title, 'x', SC_MAX_VALUE_BYTES - 1);
	strcpy(title + SC_MAX_VALUE_BYTES - 1, "\xc3\xa9yyy");
	sc_outcome o = feed(&f, CAPTURED, FP_STAGE_INQUIRY, 0, "title", title, NULL);
	assert_int_equal(o.fit, 1);
	const char *kept = sc_lead_field(f.st, field_index(f.r, "title"));
	assert_non_null(kept);
	assert_int_equal(strlen(kept), SC_MAX_VALUE_BYTES - 1);
	fx_close(&f);
}

/*
 * `matches` is PCRE2 read as POSIX extended expressions read: each pattern
 * of the shipped funnel.yaml (and a few more ERE forms) holds on exactly
 * the values on which glibc's regexec (REG_EXTENDED, REG_ICASE with
 * ignore_case) finds it, newlines and case included.
 */
static void
test_regex_posix_compatible(void **state)
{
	(void)state;
	static const struct {
		const char *re;
		int icase;
	} pats[] = {
		/* funnel.yaml, as written there */
		{ "^(vp|vice president|head of|chief|director)|^c[a-z]o$", 1 },
		{ "manager|lead|specialist", 1 },
		{ "/pricing", 0 },
		{ "rival|other ?vendor", 1 },
		{ "student|intern|phd", 1 },
		{ "\\.(edu|ac\\.[a-z]+)$", 0 },
		{ "/(careers|jobs)", 0 },
		/* more ERE: anchors, classes, bounds, dot and newlines */
		{ "^a.c$", 0 },
		{ "c$", 0 },
		{ "^[[:upper:]][[:digit:]]{2,3}$", 0 },
		{ "[^a-z ]", 0 },
		{ "(ab|a)(bc|c)?x", 0 },
		{ "x*", 0 },
		{ "^$", 0 },
		{ "[.]com$", 1 },
	};
	static const char *const values[] = {
		"VP Sales", "vp sales", "Vice President", "Head of IT", "CTO", "cto", "ceo of acme",
		"Chief", "Product Manager", "Team Lead", "Engineer", "https://acme.example/pricing",
		"/PRICING", "/careers/open", "/jobs", "Rival Corp", "OtherVendor", "other vendor",
		"PhD Student", "mit.edu", "ox.ac.uk", "ac.uk", "abc", "a\nc", "abc\n", "c\n", "A12",
		"A1234", "a12", "abcx", "abx", "ax", "", "x", "acme.COM", "acme.com\n", "lowercase only",
	};
	for (size_t i = 0; i < sizeof pats / sizeof pats[0]; i++) {
		regex_t posix;
		assert_int_equal(regcomp(&posix, pats[i].re,
		                         REG_EXTENDED | REG_NOSUB | (pats[i].icase ? REG_ICASE : 0)), 0);
		char text[1024], quoted[256];
		size_t q = 0;
		for (const char *c = pats[i].re; *c; c++) {
			if (*c == '\\' || *c == '"')
				quoted[q++] = '\\';
			quoted[q++] = *c;
		}
		quoted[q] = 0;
		snprintf(text, sizeof text, "version: c\nscoring:\n  threshold: 1000\n  fit:\n"
		         "    - name: r\n      field: v\n      matches: \"%s\"\n%s      points: 1\n",
		         quoted, pats[i].icase ? "      ignore_case: true\n" : "");
		fx f;
		fx_open(&f, text);
		for (size_t j = 0; j < sizeof values / sizeof values[0]; j++) {
			int want = regexec(&posix, values[j], 0, NULL, 0) == 0;
			sc_outcome o = feed(&f, CAPTURED, FP_STAGE_INQUIRY, 0, "v", values[j], NULL);
			if (o.fit != want)
				fail_msg("/%s/ on \"%s\": holds %d, POSIX says %d", pats[i].re, values[j], o.fit,
				         want);
			assert_int_equal(o.re_limited, 0);
		}
		fx_close(&f);
		regfree(&posix);
	}
}

/*
 * A pattern that backtracks exponentially on a long value stops at its
 * limits: the record is applied at once (the test binary's timeout is the
 * only clock), the condition does not hold, the outcome counts it, and
 * the same pattern still matches where it matches quickly.  On lead fields
 * and on activity data alike.
 */
static void
test_regex_limits(void **state)
{
	(void)state;
	fx f;
	fx_open(&f, "version: c\nscoring:\n  threshold: 1000\n  fit:\n"
	            "    - name: slow\n      field: title\n      matches: \"(a+)+[bc]\"\n      points: 1\n"
	            "  engagement:\n"
	            "    - name: slow-url\n      on: page_view\n"
	            "      when: [{ field: url, matches: \"^(.*a){12}[bc]\" }]\n      points: 5\n");
	char longv[SC_MAX_VALUE_BYTES + 1];
	memset(longv, 'a', SC_MAX_VALUE_BYTES);
	longv[SC_MAX_VALUE_BYTES] = 0;
	for (int round = 0; round < 3; round++) {
		sc_outcome o = feed(&f, CAPTURED, FP_STAGE_INQUIRY, 0, "title", longv, NULL);
		assert_int_equal(o.fit, 0);
		assert_int_equal(o.re_limited, 1);
		o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "page_view", "url", longv, NULL);
		assert_int_equal(o.engagement, 0);
		assert_int_equal(o.re_limited, 1);
	}
	sc_outcome o = feed(&f, CAPTURED, FP_STAGE_INQUIRY, 0, "title", "aaab", NULL);
	assert_int_equal(o.fit, 1);
	assert_int_equal(o.re_limited, 0);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "page_view", "url",
	         "aaaaaaaaaaaac", NULL);
	assert_int_equal(o.engagement, 5);
	assert_int_equal(o.re_limited, 0);
	fx_close(&f);
}

/* ---- fields ---- */

static void
test_fields_update(void **state)
{
	(void)state;
	fx f;
	fx_base(&f, "");
	/* only fields some rule reads are kept, plus email_domain */
	assert_int_equal(sc_rules_field_count(f.r), 3);
	assert_string_equal(sc_rules_field_name(f.r, 0), "email_domain");
	assert_string_equal(sc_rules_field_name(f.r, 1), "title");
	assert_string_equal(sc_rules_field_name(f.r, 2), "company_size");
	size_t dom = 0, title = 1, size = 2;

	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	wl_lead_data(&sb, 3, 7);      /* a realistic form: 13 fields */
	msgpack_unpacked up;
	msgpack_unpacked_init(&up);
	size_t off = 0;
	assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
	fp_event ev = { .type = { CAPTURED, strlen(CAPTURED) }, .lead = { "L-1", 3 }, .data = &up.data };
	ev.spec = fp_evspec_lookup(ev.type.ptr, ev.type.len);
	fp_stamp stamp = { .seq = 1, .ts = T0, .has_lead_state = 1, .stage = FP_STAGE_INQUIRY, .version = 1 };
	msgpack_sbuffer rb;
	msgpack_sbuffer_init(&rb);
	uint8_t hash[FUNNEL_HASH_BYTES];
	assert_int_equal(fp_record_encode(&rb, &ev, &stamp, hash), FUNNEL_OK);
	msgpack_zone z;
	funnel_record rec;
	msgpack_zone_init(&z, 1024);
	assert_int_equal(funnel_record_parse(rb.data, rb.size, &z, &rec), FUNNEL_OK);
	sc_outcome o;
	assert_int_equal(sc_apply(f.r, f.st, &rec, &o), FUNNEL_OK);
	f.seq = 1;
	funnel_str email;
	assert_int_equal(mp_get_str(&up.data, "email", &email, NULL), FUNNEL_OK);
	const char *at = memchr(email.ptr, '@', email.len);
	assert_non_null(at);
	const char *got = sc_lead_field(f.st, dom);
	assert_non_null(got);
	assert_int_equal(strlen(got), email.len - (size_t)(at + 1 - email.ptr));
	assert_memory_equal(got, at + 1, strlen(got));
	assert_non_null(strstr(got, ".example"));
	assert_non_null(sc_lead_field(f.st, title));
	assert_non_null(sc_lead_field(f.st, size));
	assert_null(sc_lead_field(f.st, 3));
	/* the state holds no field no rule reads */
	size_t len;
	uint8_t *b = encode(f.r, f.st, &len);
	assert_null(memmem(b, len, "campaign", 8));
	assert_null(memmem(b, len, "utm_", 4));
	assert_null(memmem(b, len, "form-", 5));
	assert_null(memmem(b, len, "\xa5" "email", 6));    /* no "email" key, only the domain */
	free(b);
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&rb);
	msgpack_unpacked_destroy(&up);
	msgpack_sbuffer_destroy(&sb);

	/* a later capture updates what it carries and keeps the rest */
	o = feed(&f, CAPTURED, FP_STAGE_INQUIRY, 1, "title", "Head of IT", "company_size", "=800",
	         "email", "Kim@Web.DE", NULL);
	assert_scores(o, 15, 0, 15);            /* senior 20 + sized 10 - free-mail 15 */
	assert_string_equal(sc_lead_field(f.st, dom), "web.de");
	o = feed(&f, CAPTURED, FP_STAGE_INQUIRY, 2, "title", "Engineer", NULL);
	assert_scores(o, -5, 0, -5);
	assert_string_equal(sc_lead_field(f.st, size), "800");
	assert_string_equal(sc_lead_field(f.st, dom), "web.de");
	/* nil clears; maps and arrays leave the field alone */
	o = feed(&f, CAPTURED, FP_STAGE_INQUIRY, 3, "company_size", "=nil", "email", "=nil", NULL);
	assert_null(sc_lead_field(f.st, size));
	assert_null(sc_lead_field(f.st, dom));
	assert_scores(o, 0, 0, 0);
	fx_close(&f);
}

/* ---- engagement: decay, caps, once ---- */

static void
test_decay(void **state)
{
	(void)state;
	fx f;
	fx_base(&f, "");
	sc_outcome o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "demo_request", NULL);
	assert_scores(o, 0, 40, 40);
	/* any record about the lead scores it at its own ts: one half-life halves */
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 10, "kind", "no_rule_reads_this", NULL);
	assert_scores(o, 0, 20, 20);
	assert_int_equal(o.changed, 1);
	assert_int_equal(o.n_fired, 0);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 20, "kind", "no_rule_reads_this", NULL);
	assert_scores(o, 0, 10, 10);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 20, "kind", "no_rule_reads_this", NULL);
	assert_int_equal(o.changed, 0);
	/* sc_scores at any time, without changing the state */
	int fit = -1, eng = -1, total = -1;
	sc_scores(f.r, f.st, at_day(15), &fit, &eng, &total);
	assert_int_equal(eng, 14);          /* 40 * 2^-1.5 = 14.14 */
	sc_scores(f.r, f.st, at_day(30), NULL, &eng, NULL);
	assert_int_equal(eng, 5);
	sc_scores(f.r, f.st, at_day(0), NULL, &eng, NULL);
	assert_int_equal(eng, 40);          /* no decay backwards */
	/* a rule that fires again adds to its decayed value */
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 30, "kind", "demo_request", NULL);
	assert_scores(o, 0, 45, 45);
	fx_close(&f);

	/* without decay nothing fades */
	fx_open(&f, "version: n\nscoring:\n  threshold: 50\n  engagement:\n"
	            "    - name: demo\n      on: demo_request\n      points: 40\n");
	feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "demo_request", NULL);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 3650, "kind", "no_rule_reads_this", NULL);
	assert_scores(o, 0, 40, 40);
	assert_int_equal(o.changed, 0);
	fx_close(&f);
}

/* Decay runs on event time (PROTOCOL.md §10): occurred_at when it is not
 * after ts; a record dated before the lead's latest time counts at that
 * time, so a score is never decayed backwards. */
static void
test_decay_event_time(void **state)
{
	(void)state;
	fx f;
	fx_base(&f, "");
	/* recorded on day 100 and 101, happened on days 0 and 10: one half-life */
	next_occurred_at = (int64_t)at_day(0);
	sc_outcome o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 100, "kind", "demo_request", NULL);
	assert_scores(o, 0, 40, 40);
	assert_true(o.at == at_day(0));
	next_occurred_at = (int64_t)at_day(10);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 101, "kind", "no_rule_reads_this", NULL);
	assert_scores(o, 0, 20, 20);
	assert_true(o.at == at_day(10));
	/* dated day 5, after the day-10 record: counts at day 10 */
	next_occurred_at = (int64_t)at_day(5);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 102, "kind", "demo_request", NULL);
	assert_true(o.at == at_day(10));
	assert_scores(o, 0, 60, 60);      /* 20 at day 10, + 40: not 28 + 40 */
	/* dated after its ts: counts at ts (day 103, 93 days after day 10) */
	next_occurred_at = (int64_t)at_day(500);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 103, "kind", "no_rule_reads_this", NULL);
	assert_true(o.at == at_day(103));
	assert_scores(o, 0, 0, 0);        /* 60 * 2^-9.3 rounds to 0 */
	fx_close(&f);
}

/* The same records give the same scores and the same state bytes, however
 * often they are replayed: only record timestamps count. */
static void
test_replay_deterministic(void **state)
{
	(void)state;
	static const struct {
		const char *type;
		double day;
		const char *k, *v, *k2, *v2;
	} script[] = {
		{ CAPTURED, 0, "title", "VP Sales", "email", "ana@gmail.com" },
		{ ACTIVITY, 0.3, "kind", "page_view", "url", "/pricing" },
		{ ACTIVITY, 1.7, "kind", "email_click", NULL, NULL },
		{ ACTIVITY, 2.9, "kind", "demo_request", NULL, NULL },
		{ CONTACTED, 13.1, NULL, NULL, NULL, NULL },
		{ ACTIVITY, 17.0, "kind", "unsubscribe", NULL, NULL },
		{ ACTIVITY, 40.2, "kind", "page_view", "url", "/pricing/enterprise" },
	};
	sc_outcome first[7];
	uint8_t *bytes[2];
	size_t len[2];
	for (int run = 0; run < 2; run++) {
		fx f;
		fx_base(&f, "");
		for (size_t i = 0; i < 7; i++) {
			sc_outcome o = feed(&f, script[i].type, FP_STAGE_INQUIRY, script[i].day, script[i].k,
			                    script[i].v, script[i].k2, script[i].v2, NULL);
			if (run == 0) {
				first[i] = o;
			} else {
				assert_scores(o, first[i].fit, first[i].engagement, first[i].total);
				assert_int_equal(o.changed, first[i].changed);
				assert_int_equal(o.qualify, first[i].qualify);
				assert_int_equal(o.n_fired, first[i].n_fired);
			}
		}
		bytes[run] = encode(f.r, f.st, &len[run]);
		fx_close(&f);
	}
	assert_int_equal(len[0], len[1]);
	assert_memory_equal(bytes[0], bytes[1], len[0]);
	free(bytes[0]);
	free(bytes[1]);
}

/* ---- the engine over a store (rules.h: the view's rows) ---- */

/* A store of one table holding at most one row, in memory: what the
 * engine writes, without LMDB.  puts and dels are counted. */
typedef struct row_store {
	char key[64];
	uint8_t val[4096];
	size_t klen, vlen;
	int present, puts, dels;
} row_store;

static int
rs_get(void *ctx, int t, const void *k, size_t kl, const void **v, size_t *vl)
{
	row_store *m = ctx;
	assert_int_equal(t, 0);
	if (!m->present || kl != m->klen || memcmp(k, m->key, kl) != 0)
		return FUNNEL_ENOTFOUND;
	*v = m->val;
	*vl = m->vlen;
	return FUNNEL_OK;
}

static int
rs_put(void *ctx, int t, const void *k, size_t kl, const void *v, size_t vl)
{
	row_store *m = ctx;
	assert_int_equal(t, 0);
	assert_true(kl <= sizeof m->key && vl <= sizeof m->val);
	memcpy(m->key, k, kl);
	memcpy(m->val, v, vl);
	m->klen = kl;
	m->vlen = vl;
	m->present = 1;
	m->puts++;
	return FUNNEL_OK;
}

static int
rs_del(void *ctx, int t, const void *k, size_t kl)
{
	row_store *m = ctx;
	assert_int_equal(t, 0);
	if (m->present && kl == m->klen && memcmp(k, m->key, kl) == 0)
		m->present = 0;
	m->dels++;
	return FUNNEL_OK;
}

/* sc_apply_row over a store gives sc_apply's outcomes on the state it
 * keeps in the row (8-byte big-endian event time, then the state bytes),
 * which sc_row_load reads back; a record that does not count touches
 * nothing; lead.erased deletes the row; a row that does not decode is
 * FUNNEL_EMALFORMED. */
static void
test_apply_row_store(void **state)
{
	(void)state;
	static const struct {
		const char *type;
		double day;
		const char *k, *v;
	} script[] = {
		{ CAPTURED, 0, "title", "VP Sales" },
		{ ACTIVITY, 0.3, "kind", "page_view" },
		{ CONTACTED, 1.0, NULL, NULL },
		{ ACTIVITY, 2.9, "kind", "demo_request" },
	};
	row_store m = { .present = 0 };
	funnel_store st = { &m, rs_get, rs_put, rs_del };
	msgpack_sbuffer sb;
	fx plain, viarow;
	uint64_t ts = 0;

	msgpack_sbuffer_init(&sb);
	fx_base(&plain, "");
	fx_base(&viarow, "");
	for (size_t i = 0; i < sizeof script / sizeof script[0]; i++) {
		sc_outcome want = feed(&plain, script[i].type, FP_STAGE_INQUIRY, script[i].day,
		                       script[i].k, script[i].v, NULL);
		const char *kv[] = { script[i].k, script[i].v, NULL };
		trec t;
		sc_outcome got;
		int puts = m.puts;
		rec_make(&t, i + 1, at_day(script[i].day), script[i].type, "L-1", FP_STAGE_INQUIRY,
		         script[i].k ? kv : NULL);
		int counts = sc_counts(&t.r);
		assert_int_equal(sc_apply_row(viarow.r, &st, viarow.st, &sb, &t.r, &got), FUNNEL_OK);
		rec_free(&t);
		if (!counts) {
			assert_int_equal(m.puts, puts);
			assert_int_equal(got.changed, 0);
			continue;
		}
		assert_int_equal(m.puts, puts + 1);
		assert_scores(got, want.fit, want.engagement, want.total);
		assert_int_equal(got.changed, want.changed);
		assert_int_equal(got.qualify, want.qualify);
		assert_int_equal(fp_get_be64(m.val), got.at);
	}
	/* the row holds the plain run's state */
	size_t len;
	uint8_t *bytes = encode(plain.r, plain.st, &len);
	assert_int_equal(m.vlen, 8 + len);
	assert_memory_equal(m.val + 8, bytes, len);
	free(bytes);
	assert_int_equal(sc_row_load(viarow.r, &st, (funnel_str){ "L-1", 3 }, viarow.st, &ts),
	                 FUNNEL_OK);
	assert_int_equal(ts, at_day(2.9));
	assert_int_equal(sc_row_load(viarow.r, &st, (funnel_str){ "L-2", 3 }, viarow.st, NULL),
	                 FUNNEL_ENOTFOUND);
	assert_true(sc_lead_is_empty(viarow.st));
	/* erased: the row goes */
	trec t;
	sc_outcome got;
	rec_make(&t, 9, at_day(3), ERASED, "L-1", FP_STAGE_INQUIRY, NULL);
	assert_int_equal(sc_apply_row(viarow.r, &st, viarow.st, &sb, &t.r, &got), FUNNEL_OK);
	assert_int_equal(m.present, 0);
	assert_int_equal(m.dels, 1);
	/* a row that is not one */
	assert_int_equal(rs_put(&m, 0, "L-1", 3, "\x00\x01", 2), FUNNEL_OK);
	assert_int_equal(sc_apply_row(viarow.r, &st, viarow.st, &sb, &t.r, &got), FUNNEL_EMALFORMED);
	rec_free(&t);
	fx_close(&plain);
	fx_close(&viarow);
	msgpack_sbuffer_destroy(&sb);
}

static void
test_caps(void **state)
{
	(void)state;
	fx f;
	fx_base(&f, "");
	/* views: 2 points, cap 5 */
	sc_outcome o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "page_view", NULL);
	assert_int_equal(o.engagement, 2);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "page_view", NULL);
	assert_int_equal(o.engagement, 4);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "page_view", NULL);
	assert_int_equal(o.engagement, 5);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "page_view", NULL);
	assert_int_equal(o.engagement, 5);
	assert_int_equal(o.changed, 0);
	assert_int_equal(o.n_fired, 1);     /* it fired, it just holds no more */
	/* the cap applies after decay: 5 halves to 2.5, + 2 = 4.5, reported 5 */
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 10, "kind", "email_click", NULL);
	assert_int_equal(o.engagement, 5);
	sc_contrib c[8];
	assert_int_equal(sc_contributions(f.r, f.st, at_day(10), c, 8), 1);
	assert_true(c[0].points == 4.5);
	assert_int_equal(c[0].fired, 5);
	/* a negative rule's cap is a floor: -30 twice is -30 */
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 10, "kind", "unsubscribe", NULL);
	assert_int_equal(o.engagement, -26);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 10, "kind", "unsubscribe", NULL);
	assert_int_equal(o.engagement, -26);
	fx_close(&f);
}

static void
test_once(void **state)
{
	(void)state;
	fx f;
	fx_base(&f, "");
	size_t trial = rule_index(f.r, "trial");
	sc_outcome o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "trial_signup", NULL);
	assert_int_equal(o.engagement, 15);
	assert_int_equal(o.n_fired, 1);
	assert_int_equal(o.fired[0], trial);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "trial_signup", NULL);
	assert_int_equal(o.engagement, 15);
	assert_int_equal(o.n_fired, 0);
	/* "ever": not even after a recycle reset its points */
	feed(&f, RECYCLED, FP_STAGE_NURTURE, 1, "reason", "no-budget", NULL);
	o = feed(&f, ACTIVITY, FP_STAGE_NURTURE, 2, "kind", "trial_signup", NULL);
	assert_int_equal(o.engagement, 0);
	assert_int_equal(o.n_fired, 0);
	sc_contrib c;
	assert_int_equal(sc_contributions(f.r, f.st, at_day(2), &c, 1), 0);
	fx_close(&f);
}

/* Scores are whole numbers rounded half away from zero; total is the sum
 * of the two rounded scores. */
static void
test_rounding(void **state)
{
	(void)state;
	fx f;
	fx_open(&f, "version: r\nscoring:\n  threshold: 100\n"
	            "  fit:\n    - name: half\n      field: x\n      equals: y\n      points: 0.5\n"
	            "  engagement:\n    - name: plus\n      on: a\n      points: 2.5\n"
	            "  negative:\n    - name: minus\n      on: b\n      points: -2.5\n");
	sc_outcome o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "b", NULL);
	assert_scores(o, 0, -3, -3);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "a", NULL);
	assert_scores(o, 0, 0, 0);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "a", NULL);
	assert_scores(o, 0, 3, 3);
	o = feed(&f, CAPTURED, FP_STAGE_INQUIRY, 0, "x", "y", NULL);
	assert_scores(o, 1, 3, 4);
	fx_close(&f);
}

/* ---- qualification ---- */

static void
test_threshold_crossing(void **state)
{
	(void)state;
	fx f;
	fx_base(&f, "");
	sc_outcome o = capture_fit(&f, FP_STAGE_INQUIRY, 0);
	assert_scores(o, 30, 0, 30);
	assert_int_equal(o.changed, 1);
	assert_int_equal(o.qualify, 0);
	assert_int_equal(o.n_fired, 2);
	assert_int_equal(o.fired[0], 0);
	assert_int_equal(o.fired[1], 1);
	assert_int_equal(sc_lead_above(f.st), 0);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "page_view", "url", "/pricing", NULL);
	assert_scores(o, 30, 12, 42);
	assert_int_equal(o.qualify, 0);
	/* 40 + decayed views and pricing: crosses 50 */
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 1, "kind", "demo_request", NULL);
	assert_scores(o, 30, 51, 81);
	assert_int_equal(o.qualify, 1);
	assert_int_equal(sc_lead_above(f.st), 1);
	/* staying above does not qualify again, even before the daemon moved the stage */
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 1, "kind", "email_click", NULL);
	assert_int_equal(o.qualify, 0);
	assert_int_equal(o.changed, 1);
	/* the service's own events change nothing */
	o = feed(&f, QUALIFIED, FP_STAGE_MQL, 1, NULL);
	assert_int_equal(o.changed, 0);
	assert_int_equal(o.qualify, 0);
	assert_scores(o, 30, 53, 83);
	o = feed(&f, SCORED, FP_STAGE_MQL, 1, "fit", "=30", NULL);
	assert_int_equal(o.changed, 0);
	assert_scores(o, 30, 53, 83);
	/* a second capture while above: no new qualification */
	o = capture_fit(&f, FP_STAGE_MQL, 1);
	assert_int_equal(o.qualify, 0);
	assert_int_equal(o.n_fired, 0);     /* the fit rules held already */
	fx_close(&f);
}

/* Crossing at a stage past inquiry/nurture sets "above" without qualifying. */
static void
test_stage_gating(void **state)
{
	(void)state;
	static const struct {
		fp_stage stage;
		int qualify;
	} stages[] = {
		{ FP_STAGE_INQUIRY, 1 }, { FP_STAGE_NURTURE, 1 }, { FP_STAGE_MQL, 0 }, { FP_STAGE_SAL, 0 },
		{ FP_STAGE_SQL, 0 }, { FP_STAGE_WON, 0 }, { FP_STAGE_LOST, 0 }, { FP_STAGE_DISQUALIFIED, 0 },
	};
	for (size_t i = 0; i < sizeof stages / sizeof stages[0]; i++) {
		fx f;
		fx_base(&f, "");
		capture_fit(&f, stages[i].stage, 0);
		sc_outcome o = feed(&f, ACTIVITY, stages[i].stage, 0, "kind", "demo_request", NULL);
		assert_scores(o, 30, 40, 70);
		if (o.qualify != stages[i].qualify)
			fail_msg("stage %s: qualify %d", fp_stage_name(stages[i].stage), o.qualify);
		assert_int_equal(sc_lead_above(f.st), 1);
		/* and later, back in nurture but never below: no qualification */
		o = feed(&f, ACTIVITY, FP_STAGE_NURTURE, 0, "kind", "email_click", NULL);
		assert_int_equal(o.qualify, 0);
		fx_close(&f);
	}
}

/* Sent back with reset_engagement: engagement restarts from zero and the
 * lead must cross again. */
static void
test_recycle_reset(void **state)
{
	(void)state;
	static const char *const back[] = { RECYCLED, REJECTED };
	for (int b = 0; b < 2; b++) {
		fx f;
		fx_base(&f, "  on_recycle: reset_engagement\n");
		capture_fit(&f, FP_STAGE_INQUIRY, 0);
		sc_outcome o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "demo_request", NULL);
		assert_int_equal(o.qualify, 1);
		feed(&f, QUALIFIED, FP_STAGE_MQL, 0, NULL);
		o = feed(&f, back[b], FP_STAGE_NURTURE, 2, "reason", "not-ready", NULL);
		assert_scores(o, 30, 0, 30);
		assert_int_equal(o.changed, 1);
		assert_int_equal(o.qualify, 0);
		assert_int_equal(sc_lead_above(f.st), 0);
		o = feed(&f, ACTIVITY, FP_STAGE_NURTURE, 3, "kind", "page_view", "url", "/pricing", NULL);
		assert_int_equal(o.qualify, 0);
		o = feed(&f, ACTIVITY, FP_STAGE_NURTURE, 3, "kind", "demo_request", NULL);
		assert_scores(o, 30, 52, 82);
		assert_int_equal(o.qualify, 1);
		/* fired counts survive the reset */
		sc_contrib c[8];
		size_t n = sc_contributions(f.r, f.st, at_day(3), c, 8);
		assert_int_equal(n, 5);
		assert_int_equal(c[2].rule, rule_index(f.r, "demo"));
		assert_int_equal(c[2].fired, 2);
		fx_close(&f);
	}
}

/* Sent back with keep: the points stay, so the lead must first fall below
 * the threshold and then cross it again. */
static void
test_recycle_keep(void **state)
{
	(void)state;
	fx f;
	fx_base(&f, "  on_recycle: keep\n");
	capture_fit(&f, FP_STAGE_INQUIRY, 0);
	sc_outcome o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "demo_request", NULL);
	assert_int_equal(o.qualify, 1);
	feed(&f, QUALIFIED, FP_STAGE_MQL, 0, NULL);
	o = feed(&f, RECYCLED, FP_STAGE_NURTURE, 2, "reason", "not-ready", NULL);
	assert_scores(o, 30, 35, 65);      /* 40 * 2^-0.2 */
	assert_int_equal(o.qualify, 0);
	assert_int_equal(sc_lead_above(f.st), 1);
	o = feed(&f, ACTIVITY, FP_STAGE_NURTURE, 3, "kind", "email_click", NULL);
	assert_int_equal(o.qualify, 0);
	/* fades below the threshold */
	o = feed(&f, ACTIVITY, FP_STAGE_NURTURE, 100, "kind", "no_rule_reads_this", NULL);
	assert_scores(o, 30, 0, 30);
	assert_int_equal(o.qualify, 0);
	assert_int_equal(sc_lead_above(f.st), 0);
	/* and crosses again */
	o = feed(&f, ACTIVITY, FP_STAGE_NURTURE, 101, "kind", "demo_request", NULL);
	assert_scores(o, 30, 40, 70);
	assert_int_equal(o.qualify, 1);
	fx_close(&f);
}

/* The record that sends a lead back never re-qualifies it, even when fit
 * alone reaches the threshold; nor does the next one: the lead is still
 * above, so it has to fall below the threshold and cross it again
 * (funnel.yaml: "it has to cross the threshold again, from below").
 * Recycled and rejected alike, with reset_engagement and with keep. */
static void
test_recycle_record_never_qualifies(void **state)
{
	(void)state;
	static const char *const back[] = { RECYCLED, REJECTED };
	static const char *const how[] = { "  on_recycle: reset_engagement\n", "  on_recycle: keep\n" };
	for (int b = 0; b < 2; b++) {
		for (int h = 0; h < 2; h++) {
			fx f;
			char text[2048];
			snprintf(text, sizeof text, base_fmt, how[h]);
			char *th = strstr(text, "threshold: 50");
			memcpy(th, "threshold: 25", 13);
			fx_open(&f, text);
			sc_outcome o = capture_fit(&f, FP_STAGE_INQUIRY, 0);
			assert_int_equal(o.qualify, 1);
			feed(&f, QUALIFIED, FP_STAGE_MQL, 0, NULL);
			o = feed(&f, back[b], FP_STAGE_NURTURE, 1, "reason", "no-budget", NULL);
			assert_int_equal(o.qualify, 0);
			/* fit alone (30) is still at the threshold: "above" stays */
			assert_int_equal(sc_lead_above(f.st), 1);
			o = feed(&f, ACTIVITY, FP_STAGE_NURTURE, 2, "kind", "page_view", "url", "/", NULL);
			if (o.qualify != 0)
				fail_msg("%s, %s: qualified again without going below the threshold", back[b],
				         how[h]);
			/* below (the title changes: fit 10), then across again: qualifies */
			o = feed(&f, CAPTURED, FP_STAGE_NURTURE, 300, "title", "Engineer", NULL);
			assert_scores(o, 10, 0, 10);
			assert_int_equal(o.qualify, 0);
			assert_int_equal(sc_lead_above(f.st), 0);
			o = feed(&f, CAPTURED, FP_STAGE_NURTURE, 300, "title", "Head of IT", NULL);
			assert_int_equal(o.fit, 30);
			assert_int_equal(o.qualify, 1);
			fx_close(&f);
		}
	}
}

/* A lead sent back while below the threshold whose reset takes it above
 * (a negative activity rule's points are zeroed too) does not qualify on
 * that record, nor on the next: it crossed on the record that sent it back,
 * which never counts; it qualifies after falling below and crossing again. */
static void
test_sent_back_reset_above(void **state)
{
	(void)state;
	fx f;
	char text[2048];
	snprintf(text, sizeof text, base_fmt, "  on_recycle: reset_engagement\n");
	char *th = strstr(text, "threshold: 50");
	memcpy(th, "threshold: 25", 13);
	fx_open(&f, text);
	sc_outcome o = capture_fit(&f, FP_STAGE_INQUIRY, 0);
	assert_int_equal(o.qualify, 1);
	feed(&f, QUALIFIED, FP_STAGE_MQL, 0, NULL);
	o = feed(&f, ACTIVITY, FP_STAGE_MQL, 0, "kind", "unsubscribe", NULL);
	assert_scores(o, 30, -30, 0);
	assert_int_equal(sc_lead_above(f.st), 0);
	o = feed(&f, REJECTED, FP_STAGE_NURTURE, 0, "reason", "not-ready", NULL);
	assert_scores(o, 30, 0, 30);
	assert_int_equal(o.qualify, 0);
	assert_int_equal(sc_lead_above(f.st), 1);
	o = feed(&f, ACTIVITY, FP_STAGE_NURTURE, 1, "kind", "page_view", "url", "/", NULL);
	assert_int_equal(o.qualify, 0);
	o = feed(&f, ACTIVITY, FP_STAGE_NURTURE, 1, "kind", "unsubscribe", NULL);
	assert_int_equal(sc_lead_above(f.st), 0);
	o = feed(&f, CAPTURED, FP_STAGE_NURTURE, 1000, "title", "VP Sales", NULL);
	assert_int_equal(o.qualify, 1);
	fx_close(&f);
}

static void
test_minimum_fit(void **state)
{
	(void)state;
	fx f;
	fx_base(&f, "  minimum_fit: 25\n");
	sc_outcome o = feed(&f, CAPTURED, FP_STAGE_INQUIRY, 0, "company_size", "500", NULL);
	assert_int_equal(o.fit, 10);
	feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "demo_request", NULL);
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "trial_signup", NULL);
	assert_scores(o, 10, 55, 65);
	assert_int_equal(o.qualify, 0);
	assert_int_equal(sc_lead_above(f.st), 0);
	/* the fit arrives with a new capture: now it qualifies */
	o = feed(&f, CAPTURED, FP_STAGE_INQUIRY, 1, "title", "VP Marketing", NULL);
	assert_scores(o, 30, 51, 81);
	assert_int_equal(o.qualify, 1);
	/* a free-mail address drops fit below the minimum: "above" clears */
	o = feed(&f, CAPTURED, FP_STAGE_MQL, 1, "email", "x@gmail.com", NULL);
	assert_int_equal(o.fit, 15);
	assert_int_equal(sc_lead_above(f.st), 0);
	fx_close(&f);
}

/* ---- records that change nothing, erasure ---- */

static void
test_ignored_records(void **state)
{
	(void)state;
	fx f;
	fx_base(&f, "");
	capture_fit(&f, FP_STAGE_INQUIRY, 0);
	feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "demo_request", NULL);
	size_t len0, len;
	uint8_t *before = encode(f.r, f.st, &len0);
	static const struct {
		const char *type;
		const char *lead;
	} ignored[] = {
		{ SCORED, "L-1" }, { QUALIFIED, "L-1" }, { "x.note", "L-1" }, { "rules.changed", NULL },
		{ ACTIVITY, NULL }, { "lead.unheard_of", "L-1" }, { CONTACTED, "L-1" },
		{ "lead.assigned", "L-1" }, { "lead.accepted", "L-1" }, { "deal.won", "L-1" },
	};
	for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++) {
		static const char *const kv[] = { "kind", "demo_request", "hash", "h", NULL };
		trec t;
		/* far in the future: had it been scored, engagement would have decayed */
		rec_make(&t, 100 + i, at_day(365), ignored[i].type, ignored[i].lead, FP_STAGE_INQUIRY, kv);
		sc_outcome o;
		o.changed = o.qualify = 7;
		assert_int_equal(sc_apply(f.r, f.st, &t.r, &o), FUNNEL_OK);
		assert_int_equal(o.changed, 0);
		assert_int_equal(o.qualify, 0);
		assert_int_equal(o.n_fired, 0);
		assert_scores(o, 30, 40, 70);
		rec_free(&t);
		uint8_t *after = encode(f.r, f.st, &len);
		assert_int_equal(len, len0);
		assert_memory_equal(after, before, len);
		free(after);
	}
	free(before);
	fx_close(&f);
}

static void
test_erased_wipes(void **state)
{
	(void)state;
	fx f;
	fx_base(&f, "");
	size_t len0, len;
	uint8_t *fresh = encode(f.r, f.st, &len0);
	assert_int_equal(sc_lead_is_empty(f.st), 1);
	capture_fit(&f, FP_STAGE_INQUIRY, 0);
	feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "trial_signup", NULL);
	sc_outcome o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "demo_request", NULL);
	assert_int_equal(o.qualify, 1);
	assert_int_equal(sc_lead_is_empty(f.st), 0);
	o = feed(&f, ERASED, FP_STAGE_ERASED, 1, NULL);
	assert_int_equal(o.changed, 0);
	assert_int_equal(o.qualify, 0);
	assert_scores(o, 0, 0, 0);
	assert_int_equal(sc_lead_is_empty(f.st), 1);
	assert_int_equal(sc_lead_above(f.st), 0);
	for (size_t i = 0; i < sc_rules_field_count(f.r); i++)
		assert_null(sc_lead_field(f.st, i));
	uint8_t *after = encode(f.r, f.st, &len);
	assert_int_equal(len, len0);
	assert_memory_equal(after, fresh, len);
	assert_null(memmem(after, len, "acme", 4));
	free(after);
	free(fresh);
	/* captured again, the lead starts over: even a `once` rule counts again */
	o = feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 2, "kind", "trial_signup", NULL);
	assert_int_equal(o.engagement, 15);
	assert_int_equal(o.n_fired, 1);
	fx_close(&f);
}

/* ---- explain ---- */

static void
test_contributions(void **state)
{
	(void)state;
	fx f;
	fx_base(&f, "");
	capture_fit(&f, FP_STAGE_INQUIRY, 0);                                              /* seq 1 */
	feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "page_view", "url", "/pricing", NULL); /* 2 */
	feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "page_view", NULL);                /* 3 */
	feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "webinar", NULL);                  /* 4 */
	sc_contrib c[8];
	memset(c, 0, sizeof c);
	assert_int_equal(sc_contributions(f.r, f.st, at_day(0), c, 8), 4);
	static const struct {
		const char *rule;
		double points;
		uint32_t fired;
		uint64_t last_seq;
	} want[] = {
		{ "senior", 20, 1, 1 }, { "sized", 10, 1, 1 }, { "views", 4, 2, 3 }, { "pricing", 10, 1, 2 },
	};
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(c[i].rule, rule_index(f.r, want[i].rule));
		assert_true(c[i].points == want[i].points);
		assert_int_equal(c[i].fired, want[i].fired);
		assert_int_equal(c[i].last_seq, want[i].last_seq);
	}
	/* decay applied at the time asked; fit does not fade */
	assert_int_equal(sc_contributions(f.r, f.st, at_day(10), c, 8), 4);
	assert_true(c[0].points == 20);
	assert_true(c[2].points == 2);
	assert_true(c[3].points == 5);
	/* a short buffer: the count is still the whole */
	memset(c, 0xff, sizeof c);
	assert_int_equal(sc_contributions(f.r, f.st, at_day(0), c, 2), 4);
	assert_int_equal(c[1].rule, 1);
	assert_int_equal(c[2].rule, UINT32_MAX);     /* untouched */
	assert_int_equal(sc_contributions(f.r, f.st, at_day(0), NULL, 0), 4);
	/* a fit rule that stops holding stops contributing, and fires again when
	 * it holds again */
	feed(&f, CAPTURED, FP_STAGE_INQUIRY, 1, "title", "Engineer", NULL);   /* 5 */
	sc_outcome o = capture_fit(&f, FP_STAGE_INQUIRY, 1);                  /* 6 */
	assert_int_equal(o.n_fired, 1);
	assert_int_equal(sc_contributions(f.r, f.st, at_day(1), c, 8), 4);
	assert_int_equal(c[0].fired, 2);
	assert_int_equal(c[0].last_seq, 6);
	fx_close(&f);
}

/* ---- the state's bytes ---- */

static void
test_encode_round_trip(void **state)
{
	(void)state;
	fx f;
	fx_base(&f, "");
	capture_fit(&f, FP_STAGE_INQUIRY, 0);
	feed(&f, CAPTURED, FP_STAGE_INQUIRY, 0, "email", "kim@gmail.com", NULL);
	feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0.5, "kind", "page_view", "url", "/pricing", NULL);
	feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 1.25, "kind", "unsubscribe", NULL);
	feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 2, "kind", "demo_request", NULL);
	size_t len, len2;
	uint8_t *b = encode(f.r, f.st, &len);
	assert_true(len < 300);

	sc_lead *copy = sc_lead_new(f.r);
	assert_int_equal(sc_lead_decode(f.r, b, len, copy), FUNNEL_OK);
	uint8_t *b2 = encode(f.r, copy, &len2);
	assert_int_equal(len2, len);
	assert_memory_equal(b2, b, len);
	free(b2);
	assert_int_equal(sc_lead_above(copy), sc_lead_above(f.st));
	for (size_t i = 0; i < sc_rules_field_count(f.r); i++) {
		const char *x = sc_lead_field(f.st, i), *y = sc_lead_field(copy, i);
		assert_true((x == NULL) == (y == NULL));
		if (x != NULL)
			assert_string_equal(x, y);
	}
	sc_contrib c1[8], c2[8];
	size_t n = sc_contributions(f.r, f.st, at_day(5), c1, 8);
	assert_int_equal(sc_contributions(f.r, copy, at_day(5), c2, 8), n);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(c1[i].rule, c2[i].rule);
		assert_true(c1[i].points == c2[i].points);
		assert_int_equal(c1[i].fired, c2[i].fired);
		assert_int_equal(c1[i].last_seq, c2[i].last_seq);
	}

	/* the next record does the same to both */
	trec t;
	static const char *const kv[] = { "kind", "page_view", NULL };
	rec_make(&t, 99, at_day(9), ACTIVITY, "L-1", FP_STAGE_INQUIRY, kv);
	sc_outcome o1, o2;
	assert_int_equal(sc_apply(f.r, f.st, &t.r, &o1), FUNNEL_OK);
	assert_int_equal(sc_apply(f.r, copy, &t.r, &o2), FUNNEL_OK);
	assert_int_equal(o1.changed, o2.changed);
	assert_int_equal(o1.qualify, o2.qualify);
	assert_scores(o2, o1.fit, o1.engagement, o1.total);
	rec_free(&t);
	free(b);
	b = encode(f.r, f.st, &len);
	b2 = encode(f.r, copy, &len2);
	assert_int_equal(len2, len);
	assert_memory_equal(b2, b, len);
	free(b);
	free(b2);

	/* an empty state round-trips too, and decoding replaces what was there */
	sc_lead *empty = sc_lead_new(f.r);
	b = encode(f.r, empty, &len);
	assert_int_equal(sc_lead_decode(f.r, b, len, copy), FUNNEL_OK);
	assert_int_equal(sc_lead_is_empty(copy), 1);
	free(b);
	sc_lead_destroy(&empty);
	sc_lead_destroy(&copy);
	sc_lead_destroy(&copy);
	sc_lead_destroy(NULL);
	fx_close(&f);
}

/* State written under older rules, read under newer ones. */
static void
test_decode_changed_rules(void **state)
{
	(void)state;
	fx f;
	fx_base(&f, "");
	capture_fit(&f, FP_STAGE_INQUIRY, 0);
	feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "page_view", NULL);
	feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "demo_request", NULL);
	size_t len;
	uint8_t *b = encode(f.r, f.st, &len);

	/* senior and demo kept; sized gone; views is now a fit rule; new-fit new */
	sc_rules *r2 = parse_ok("version: test v2\nscoring:\n  threshold: 50\n"
	                        "  decay: { half_life_days: 10 }\n"
	                        "  fit:\n"
	                        "    - name: new-fit\n      field: industry\n      equals: software\n"
	                        "      points: 5\n"
	                        "    - name: views\n      field: country\n      equals: DE\n      points: 1\n"
	                        "    - name: senior\n      field: title\n      matches: ^VP\n      points: 25\n"
	                        "  engagement:\n"
	                        "    - name: demo\n      on: demo_request\n      points: 40\n");
	sc_lead *st2 = sc_lead_new(r2);
	/* a state belongs to its rules */
	assert_int_equal(sc_lead_decode(f.r, b, len, st2), FUNNEL_EINVAL);
	assert_int_equal(sc_lead_decode(r2, b, len, st2), FUNNEL_OK);
	sc_contrib c[8];
	assert_int_equal(sc_contributions(r2, st2, at_day(0), c, 8), 2);
	assert_int_equal(c[0].rule, rule_index(r2, "senior"));
	assert_true(c[0].points == 25);      /* the new rules' points */
	assert_int_equal(c[0].fired, 1);
	assert_int_equal(c[1].rule, rule_index(r2, "demo"));
	assert_true(c[1].points == 40);
	/* fields: title and email_domain stay, company_size is no longer kept */
	assert_int_equal(sc_rules_field_count(r2), 4);
	assert_string_equal(sc_lead_field(st2, field_index(r2, "title")), "VP Sales");
	assert_string_equal(sc_lead_field(st2, 0), "acme.example");
	assert_null(sc_lead_field(st2, field_index(r2, "country")));
	/* the renamed-kind rule starts empty and fires when it holds */
	sc_outcome o;
	trec t;
	static const char *const kv[] = { "country", "DE", NULL };
	rec_make(&t, 9, at_day(0), CAPTURED, "L-1", FP_STAGE_INQUIRY, kv);
	assert_int_equal(sc_apply(f.r, st2, &t.r, &o), FUNNEL_EINVAL);
	assert_int_equal(sc_apply(r2, st2, &t.r, &o), FUNNEL_OK);
	assert_scores(o, 26, 40, 66);
	assert_int_equal(o.n_fired, 1);
	assert_int_equal(o.fired[0], rule_index(r2, "views"));
	/* its old engagement state was not carried over: it fired once, now */
	assert_int_equal(sc_contributions(r2, st2, at_day(0), c, 8), 3);
	assert_int_equal(c[0].rule, rule_index(r2, "views"));
	assert_int_equal(c[0].fired, 1);
	assert_int_equal(c[0].last_seq, 9);
	assert_int_equal(o.qualify, 0);      /* it was above already, under the old rules */
	assert_int_equal(sc_lead_above(st2), 1);
	rec_free(&t);
	sc_lead_destroy(&st2);
	sc_rules_destroy(&r2);
	free(b);
	fx_close(&f);
}

/* New rules score a stored state from its fields at once; its next record
 * counts the lead-field rules that now hold as fired. */
static void
test_rules_change_reevaluates(void **state)
{
	(void)state;
	static const char a_rules[] =
		"version: a\nscoring:\n  threshold: 100\n  fit:\n"
		"    - name: senior\n      field: title\n      matches: ^VP\n      points: 20\n";
	static const char b_rules[] =
		"version: b\nscoring:\n  threshold: 100\n  fit:\n"
		"    - name: senior\n      field: title\n      matches: ^Head\n      points: 20\n"
		"    - name: titled\n      field: title\n      matches: .\n      points: 5\n";
	/* the same rules with one more comment: another hash */
	static const char a_commented[] =
		"# reviewed\nversion: a\nscoring:\n  threshold: 100\n  fit:\n"
		"    - name: senior\n      field: title\n      matches: ^VP\n      points: 20\n";
	fx f;
	fx_open(&f, a_rules);
	sc_outcome o = feed(&f, CAPTURED, FP_STAGE_INQUIRY, 0, "title", "VP Sales", NULL);
	assert_int_equal(o.fit, 20);
	size_t len;
	uint8_t *b = encode(f.r, f.st, &len);

	sc_rules *rb = parse_ok(b_rules);
	sc_lead *st = sc_lead_new(rb);
	assert_int_equal(sc_lead_decode(rb, b, len, st), FUNNEL_OK);
	int fit = -1;
	sc_scores(rb, st, at_day(0), &fit, NULL, NULL);
	assert_int_equal(fit, 5);            /* senior no longer holds, titled does */
	sc_contrib c[4];
	assert_int_equal(sc_contributions(rb, st, at_day(0), c, 4), 1);
	assert_int_equal(c[0].rule, 1);
	assert_int_equal(c[0].fired, 0);     /* not yet: no record under these rules */
	static const char *const no_rule_kind[] = { "kind", "no_rule_reads_this", NULL };
	trec t;
	rec_make(&t, 2, at_day(1), ACTIVITY, "L-1", FP_STAGE_INQUIRY, no_rule_kind);
	assert_int_equal(sc_apply(rb, st, &t.r, &o), FUNNEL_OK);
	assert_scores(o, 5, 0, 5);
	assert_int_equal(o.changed, 1);
	assert_int_equal(o.n_fired, 1);
	assert_int_equal(o.fired[0], 1);
	assert_int_equal(sc_contributions(rb, st, at_day(1), c, 4), 1);
	assert_int_equal(c[0].fired, 1);
	assert_int_equal(c[0].last_seq, 2);
	/* once re-evaluated, encoded and decoded, the next record changes nothing */
	size_t len2;
	uint8_t *b2 = encode(rb, st, &len2);
	assert_int_equal(sc_lead_decode(rb, b2, len2, st), FUNNEL_OK);
	assert_int_equal(sc_apply(rb, st, &t.r, &o), FUNNEL_OK);
	assert_int_equal(o.changed, 0);
	assert_int_equal(o.n_fired, 0);
	free(b2);
	sc_lead_destroy(&st);
	sc_rules_destroy(&rb);

	/* a change that leaves the rules' meaning alone changes no score */
	sc_rules *rc = parse_ok(a_commented);
	assert_memory_not_equal(sc_rules_hash(rc), sc_rules_hash(f.r), FUNNEL_HASH_BYTES);
	st = sc_lead_new(rc);
	assert_int_equal(sc_lead_decode(rc, b, len, st), FUNNEL_OK);
	assert_int_equal(sc_apply(rc, st, &t.r, &o), FUNNEL_OK);
	assert_int_equal(o.changed, 0);
	assert_int_equal(o.n_fired, 0);
	assert_int_equal(o.fit, 20);
	rec_free(&t);
	sc_lead_destroy(&st);
	sc_rules_destroy(&rc);
	free(b);
	fx_close(&f);
}

/*
 * Lead states as data: a case is an optional head (the map of `head`
 * entries that starts every state: v, rules, above, scores, fields),
 * then msgpack items in order, up to the first P_END.
 */
typedef enum pk_kind { P_END, P_STR, P_MAP, P_ARRAY, P_NIL, P_TRUE, P_INT, P_DOUBLE, P_ZEROS } pk_kind;

typedef struct pk_item {
	pk_kind k;
	const char *s;            /* P_STR */
	uint64_t n;               /* P_MAP, P_ARRAY: entries; P_INT: the value; P_ZEROS: bytes */
	double d;                 /* P_DOUBLE */
} pk_item;

#define S(x) { P_STR, .s = (x) }
#define MAP(x) { P_MAP, .n = (x) }
#define ARRAY(x) { P_ARRAY, .n = (x) }
#define NIL { P_NIL }
#define YES { P_TRUE }
#define INT(x) { P_INT, .n = (x) }
#define DOUBLE(x) { P_DOUBLE, .d = (x) }
#define ZEROS(x) { P_ZEROS, .n = (x) }   /* a bin of x zero bytes */

typedef struct state_case {
	const char *what;
	unsigned head;            /* entries of the state map after the head's; 0: no head */
	int v;                    /* the head's version */
	pk_item rest[16];
} state_case;

static void
pack_case(msgpack_packer *pk, const state_case *c)
{
	static const uint8_t zeros[8];
	if (c->head) {
		msgpack_pack_map(pk, c->head);
		msgpack_pack_str_with_body(pk, "v", 1);
		msgpack_pack_int(pk, c->v);
		msgpack_pack_str_with_body(pk, "rules", 5);
		msgpack_pack_bin_with_body(pk, zeros, sizeof zeros);
		msgpack_pack_str_with_body(pk, "above", 5);
		msgpack_pack_false(pk);
		msgpack_pack_str_with_body(pk, "scores", 6);
		msgpack_pack_array(pk, 3);
		for (int i = 0; i < 3; i++)
			msgpack_pack_int(pk, 0);
		msgpack_pack_str_with_body(pk, "fields", 6);
		msgpack_pack_map(pk, 0);
	}
	for (const pk_item *it = c->rest; it->k != P_END; it++) {
		switch (it->k) {
		case P_STR: msgpack_pack_str_with_body(pk, it->s, strlen(it->s)); break;
		case P_MAP: msgpack_pack_map(pk, (size_t)it->n); break;
		case P_ARRAY: msgpack_pack_array(pk, (size_t)it->n); break;
		case P_NIL: msgpack_pack_nil(pk); break;
		case P_TRUE: msgpack_pack_true(pk); break;
		case P_INT: msgpack_pack_uint64(pk, it->n); break;
		case P_DOUBLE: msgpack_pack_double(pk, it->d); break;
		case P_ZEROS: msgpack_pack_bin_with_body(pk, zeros, (size_t)it->n); break;
		case P_END: break;
		}
	}
}

/* The shape the bad ones below depart from: decodes. */
static const state_case minimal_state =
	{ "minimal", 7, 1, { S("fit"), MAP(0), S("eng"), MAP(0) } };

/* Each refused whole (FUNNEL_EMALFORMED). */
static const state_case bad_states[] = {
	{ "bad version", 7, 2, { S("fit"), MAP(0), S("eng"), MAP(0) } },
	{ "missing eng", 6, 1, { S("fit"), MAP(0) } },
	{ "unknown key", 8, 1, { S("fit"), MAP(0), S("eng"), MAP(0), S("extra"), NIL } },
	{ "eng of the wrong shape (3 of 4)", 7, 1,
	  { S("fit"), MAP(0), S("eng"), MAP(1), S("demo"), ARRAY(3), DOUBLE(1), INT(1), INT(1) } },
	{ "eng not finite", 7, 1,
	  { S("fit"), MAP(0), S("eng"), MAP(1), S("demo"), ARRAY(4), DOUBLE(NAN), INT(1), INT(1),
	    INT(1) } },
	{ "fit fired too often for a u32", 7, 1,
	  { S("fit"), MAP(1), S("senior"), ARRAY(3), YES, INT(1ULL << 32), INT(1), S("eng"),
	    MAP(0) } },
	{ "a field that is not text", 0, 0, { MAP(1), S("fields"), MAP(1), S("title"), INT(3) } },
	{ "a duplicate key", 7, 1, { S("fit"), MAP(0), S("fit"), MAP(0) } },
	{ "a rules tag of 7 bytes", 0, 0, { MAP(1), S("rules"), ZEROS(7) } },
};

#undef S
#undef MAP
#undef ARRAY
#undef NIL
#undef YES
#undef INT
#undef DOUBLE
#undef ZEROS

static void
test_decode_garbage(void **state)
{
	(void)state;
	fx f;
	fx_base(&f, "");
	capture_fit(&f, FP_STAGE_INQUIRY, 0);
	feed(&f, ACTIVITY, FP_STAGE_INQUIRY, 0, "kind", "demo_request", NULL);
	size_t len;
	uint8_t *good = encode(f.r, f.st, &len);

	sc_lead *st = sc_lead_new(f.r);
	{
		msgpack_sbuffer sb;
		msgpack_packer pk;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		pack_case(&pk, &minimal_state);
		assert_int_equal(sc_lead_decode(f.r, sb.data, sb.size, st), FUNNEL_OK);
		assert_int_equal(sc_lead_is_empty(st), 1);
		msgpack_sbuffer_destroy(&sb);
	}
	for (size_t i = 0; i < sizeof bad_states / sizeof bad_states[0]; i++) {
		msgpack_sbuffer sb;
		msgpack_packer pk;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		pack_case(&pk, &bad_states[i]);
		assert_int_equal(sc_lead_decode(f.r, good, len, st), FUNNEL_OK);
		uint8_t *b = dup_bytes(sb.data, sb.size);
		if (sc_lead_decode(f.r, b, sb.size, st) != FUNNEL_EMALFORMED)
			fail_msg("bad state %zu decoded (%s)", i, bad_states[i].what);
		assert_int_equal(sc_lead_is_empty(st), 1);      /* nothing partial kept */
		free(b);
		msgpack_sbuffer_destroy(&sb);
	}
	static const struct {
		const char *b;
		size_t n;
	} raw[] = {
		{ "", 0 }, { "garbage", 7 }, { "\x01", 1 }, { "\x80", 1 }, { "\x90", 1 },
		{ "\xc1", 1 }, { "\x86\xa1v\x01", 4 },
	};
	for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
		uint8_t *b = dup_bytes(raw[i].b, raw[i].n);
		assert_int_equal(sc_lead_decode(f.r, b, raw[i].n, st), FUNNEL_EMALFORMED);
		free(b);
	}
	/* every cut of a good state, and a good state with a byte after it */
	for (size_t n = 0; n < len; n++) {
		uint8_t *b = dup_bytes(good, n);
		if (sc_lead_decode(f.r, b, n, st) != FUNNEL_EMALFORMED)
			fail_msg("a %zu-byte prefix of a %zu-byte state decoded", n, len);
		free(b);
	}
	uint8_t *more = malloc(len + 1);
	memcpy(more, good, len);
	more[len] = 0xc0;
	assert_int_equal(sc_lead_decode(f.r, more, len + 1, st), FUNNEL_EMALFORMED);
	free(more);
	assert_int_equal(sc_lead_decode(f.r, NULL, 0, st), FUNNEL_EMALFORMED);
	sc_lead_destroy(&st);
	free(good);
	fx_close(&f);
}

/* Many realistic leads under the shipped rules: states stay small and
 * round-trip byte for byte. */
static void
test_workload_states(void **state)
{
	(void)state;
	static const char *const kinds[] = { "page_view", "email_click", "download", "webinar",
	                                     "demo_request", "unsubscribe", "trial_signup", "visit" };
	fx f;
	char err[512];
	f.r = NULL;
	assert_int_equal(sc_rules_load("funnel.yaml", &f.r, err, sizeof err), FUNNEL_OK);
	sc_lead *copy = sc_lead_new(f.r);
	size_t max = 0, sum = 0, qualified = 0;
	for (uint64_t lead = 0; lead < 300; lead++) {
		f.st = sc_lead_new(f.r);
		msgpack_sbuffer sb;
		msgpack_sbuffer_init(&sb);
		wl_lead_data(&sb, 11, lead);
		msgpack_unpacked up;
		msgpack_unpacked_init(&up);
		size_t off = 0;
		assert_int_equal(msgpack_unpack_next(&up, sb.data, sb.size, &off), MSGPACK_UNPACK_SUCCESS);
		fp_event ev = { .type = { CAPTURED, strlen(CAPTURED) }, .lead = { "L", 1 }, .data = &up.data };
		ev.spec = fp_evspec_lookup(ev.type.ptr, ev.type.len);
		fp_stamp stamp = { .seq = 1, .ts = T0, .has_lead_state = 1, .stage = FP_STAGE_INQUIRY };
		msgpack_sbuffer rb;
		msgpack_sbuffer_init(&rb);
		uint8_t hash[FUNNEL_HASH_BYTES];
		assert_int_equal(fp_record_encode(&rb, &ev, &stamp, hash), FUNNEL_OK);
		msgpack_zone z;
		funnel_record rec;
		msgpack_zone_init(&z, 1024);
		assert_int_equal(funnel_record_parse(rb.data, rb.size, &z, &rec), FUNNEL_OK);
		sc_outcome o;
		assert_int_equal(sc_apply(f.r, f.st, &rec, &o), FUNNEL_OK);
		msgpack_zone_destroy(&z);
		msgpack_sbuffer_destroy(&rb);
		msgpack_unpacked_destroy(&up);
		msgpack_sbuffer_destroy(&sb);
		f.seq = 1;
		fp_stage stage = FP_STAGE_INQUIRY;
		for (uint64_t k = 0; k < 12; k++) {
			const char *kind = kinds[(lead * 7 + k * 3) % 8];
			o = feed(&f, ACTIVITY, stage, (double)k * 1.5, "kind", kind, "url",
			         k % 3 ? "/pricing" : "/careers", NULL);
			if (o.qualify) {
				qualified++;
				stage = FP_STAGE_MQL;
			}
		}
		size_t len, len2;
		uint8_t *b = encode(f.r, f.st, &len);
		if (len > max)
			max = len;
		sum += len;
		assert_int_equal(sc_lead_decode(f.r, b, len, copy), FUNNEL_OK);
		uint8_t *b2 = encode(f.r, copy, &len2);
		assert_int_equal(len2, len);
		assert_memory_equal(b2, b, len);
		free(b);
		free(b2);
		sc_lead_destroy(&f.st);
	}
	print_message("300 leads, 12 activities each: %zu qualified, state %zu bytes on average, "
	              "%zu at most\n", qualified, sum / 300, max);
	/* 7 fields and 15 of the 20 rules at most: a few hundred bytes */
	assert_true(max <= 700);
	assert_true(qualified > 0 && qualified < 300);
	sc_lead_destroy(&copy);
	sc_rules_destroy(&f.r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shipped_file_parses),
		cmocka_unit_test(test_shipped_file_scores),
		cmocka_unit_test(test_parse_settings),
		cmocka_unit_test(test_rules_errors),
		cmocka_unit_test(test_rules_error_buffer),
		cmocka_unit_test(test_too_many_rules),
		cmocka_unit_test(test_load_errors),
		cmocka_unit_test(test_file_limits),
		cmocka_unit_test(test_conditions),
		cmocka_unit_test(test_activity_conditions),
		cmocka_unit_test(test_long_values),
		cmocka_unit_test(test_regex_posix_compatible),
		cmocka_unit_test(test_regex_limits),
		cmocka_unit_test(test_fields_update),
		cmocka_unit_test(test_decay),
		cmocka_unit_test(test_decay_event_time),
		cmocka_unit_test(test_replay_deterministic),
		cmocka_unit_test(test_apply_row_store),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_once),
		cmocka_unit_test(test_rounding),
		cmocka_unit_test(test_threshold_crossing),
		cmocka_unit_test(test_stage_gating),
		cmocka_unit_test(test_recycle_reset),
		cmocka_unit_test(test_recycle_keep),
		cmocka_unit_test(test_recycle_record_never_qualifies),
		cmocka_unit_test(test_sent_back_reset_above),
		cmocka_unit_test(test_minimum_fit),
		cmocka_unit_test(test_ignored_records),
		cmocka_unit_test(test_erased_wipes),
		cmocka_unit_test(test_contributions),
		cmocka_unit_test(test_encode_round_trip),
		cmocka_unit_test(test_decode_changed_rules),
		cmocka_unit_test(test_rules_change_reevaluates),
		cmocka_unit_test(test_decode_garbage),
		cmocka_unit_test(test_workload_states),
	};
	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests_name("rules", tests, NULL, NULL);
}
