/*
 * tests/unit/test_metrics_params.c - funnel-metrics' query parameters
 * (clients/metrics/query.c, mx_query_param): every time format and its
 * refusals, the window, filters, which report takes model and bucket;
 * report names; and the view's row decoders refusing truncated bytes.
 * Table-driven; the figures themselves are checked end to end by
 * tests/integration/test_metrics.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"
#include "mp.h"

#define NS 1000000000ULL

static const struct tcase {
	int report;
	const char *key, *value;
	int ok;
	uint64_t from, to;       /* expected window after an accepted from/to */
	const char *msg;         /* part of the message of a refusal */
} cases[] = {
	{ MX_R_SUMMARY, "from", "2026-11-29", 1, 1795910400ULL * NS, 0, NULL },
	{ MX_R_SUMMARY, "from", "1970-01-01", 1, 0, 0, NULL },
	{ MX_R_FUNNEL, "to", "2026-11-29T12:30:05Z", 1, 0, 1795955405ULL * NS, NULL },
	{ MX_R_FUNNEL, "from", "1795910400000000001", 1, 1795910400000000001ULL, 0, NULL },
	{ MX_R_FUNNEL, "from", "2024-02-29", 1, 1709164800ULL * NS, 0, NULL },
	{ MX_R_FUNNEL, "from", "2026-02-29", 0, 0, 0, "not a time" },
	{ MX_R_FUNNEL, "from", "2026-13-01", 0, 0, 0, "not a time" },
	{ MX_R_FUNNEL, "from", "2026-11-29T24:00:00Z", 0, 0, 0, "not a time" },
	{ MX_R_FUNNEL, "from", "2026-11-29 10:00:00", 0, 0, 0, "not a time" },
	{ MX_R_FUNNEL, "from", "2026-1-29", 0, 0, 0, "not a time" },
	{ MX_R_FUNNEL, "from", "yesterday", 0, 0, 0, "not a time" },
	{ MX_R_FUNNEL, "from", "", 0, 0, 0, "not a time" },
	{ MX_R_FUNNEL, "from", "-5", 0, 0, 0, "not a time" },
	{ MX_R_FUNNEL, "from", "99999999999999999999", 0, 0, 0, "not a time" },
	{ MX_R_FUNNEL, "to", "0", 0, 0, 0, "the window is empty" },
	{ MX_R_FUNNEL, "from", "0", 1, 0, 0, NULL },
	{ MX_R_FUNNEL, "from", "2026-11-2\xff", 0, 0, 0, "not valid UTF-8" },
	{ MX_R_FUNNEL, "source", "\xc3", 0, 0, 0, "not valid UTF-8" },
	{ MX_R_FUNNEL, "source", "caf\xc3\xa9", 1, 0, 0, NULL },
	{ MX_R_FUNNEL, "source", "webinar", 1, 0, 0, NULL },
	{ MX_R_FUNNEL, "source", "", 0, 0, 0, "1..200 bytes" },
	{ MX_R_FUNNEL, "campaign", "q4", 1, 0, 0, NULL },
	{ MX_R_ATTRIBUTION, "model", "first", 1, 0, 0, NULL },
	{ MX_R_SUMMARY, "model", "last", 1, 0, 0, NULL },
	{ MX_R_ATTRIBUTION, "model", "shapley", 0, 0, 0, "first, last or linear" },
	{ MX_R_FUNNEL, "model", "first", 0, 0, 0, "unknown parameter for /api/funnel" },
	{ MX_R_TREND, "bucket", "day", 1, 0, 0, NULL },
	{ MX_R_TREND, "bucket", "month", 0, 0, 0, "week or day" },
	{ MX_R_VELOCITY, "bucket", "day", 0, 0, 0, "unknown parameter for /api/velocity" },
	{ MX_R_CLOSED_LOOP, "limit", "10", 0, 0, 0, "unknown parameter for /api/closed-loop" },
};

static void
test_params(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct tcase *c = &cases[i];
		mx_query q = { .report = c->report };
		char err[256] = "";
		int rc = mx_query_param(&q, c->key, c->value, err, sizeof err);
		if ((rc == 0) != c->ok)
			fail_msg("case %zu (%s=%s): rc %d, err '%s'", i, c->key, c->value, rc, err);
		if (c->ok) {
			assert_int_equal(q.from, c->from);
			assert_int_equal(q.to, c->to);
		} else if (strstr(err, c->msg) == NULL) {
			fail_msg("case %zu (%s=%s): message '%s' lacks '%s'", i, c->key, c->value, err,
			         c->msg);
		}
	}
}

static void
test_window_order(void **state)
{
	(void)state;
	mx_query q = { .report = MX_R_SUMMARY };
	char err[256];
	assert_int_equal(mx_query_param(&q, "from", "2026-11-02", err, sizeof err), 0);
	assert_int_not_equal(mx_query_param(&q, "to", "2026-11-02", err, sizeof err), 0);
	assert_non_null(strstr(err, "from must be before to"));
	assert_int_equal(mx_query_param(&q, "to", "2026-11-03", err, sizeof err), 0);
	assert_int_equal(q.to - q.from, 86400ULL * NS);
	mx_query r = { .report = MX_R_SUMMARY };
	assert_int_equal(mx_query_param(&r, "to", "2026-11-01", err, sizeof err), 0);
	assert_int_not_equal(mx_query_param(&r, "from", "2026-11-05", err, sizeof err), 0);
}

/* A refused value is quoted cut at a character boundary: the message
 * goes into a JSON answer and must stay UTF-8. */
static void
test_quote_whole_characters(void **state)
{
	(void)state;
	char value[1 + 2 * 40 + 1], err[256];
	value[0] = 'x';                              /* then 40 times U+00E9 */
	for (int i = 0; i < 40; i++)
		memcpy(value + 1 + 2 * i, "\xc3\xa9", 2);
	value[81] = 0;
	mx_query q = { .report = MX_R_ATTRIBUTION };
	assert_int_not_equal(mx_query_param(&q, "from", value, err, sizeof err), 0);
	assert_true(mp_utf8_invalid_at(err, strlen(err)) < 0);
	assert_int_not_equal(mx_query_param(&q, "model", value, err, sizeof err), 0);
	assert_true(mp_utf8_invalid_at(err, strlen(err)) < 0);
}

static void
test_model_and_bucket_values(void **state)
{
	(void)state;
	static const struct { const char *k, *v; int field, want; } t[] = {
		{ "model", "first", 0, MX_MODEL_FIRST }, { "model", "last", 0, MX_MODEL_LAST },
		{ "model", "linear", 0, MX_MODEL_LINEAR }, { "bucket", "week", 1, MX_BUCKET_WEEK },
		{ "bucket", "day", 1, MX_BUCKET_DAY },
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
		mx_query q = { .report = MX_R_SUMMARY, .model = -1, .bucket = -1 };
		char err[256];
		assert_int_equal(mx_query_param(&q, t[i].k, t[i].v, err, sizeof err), 0);
		assert_int_equal(t[i].field ? q.bucket : q.model, t[i].want);
	}
}

static void
test_report_names(void **state)
{
	(void)state;
	static const char *const names[] = { "summary", "funnel", "conversion", "velocity",
	                                     "followup", "closed-loop", "attribution", "trend",
	                                     "leads", "values" };
	for (int i = 0; i < MX_R_COUNT; i++) {
		assert_int_equal(mx_report_parse(names[i]), i);
		assert_string_equal(mx_report_name(i), names[i]);
	}
	assert_int_equal(mx_report_parse("closed_loop"), -1);
	assert_int_equal(mx_report_parse(""), -1);
	assert_string_equal(mx_report_name(MX_R_COUNT), "");
}

/* A row cut anywhere is refused, never read past its end. */
static void
test_truncated_rows(void **state)
{
	(void)state;
	uint8_t row[200];
	memset(row, 0, sizeof row);
	row[0] = FP_STAGE_MQL;
	for (size_t n = 0; n < 4 + 8 * (2 + FP_STAGE_COUNT + 2); n++) {
		mx_lead l;
		assert_int_equal(mx_lead_decode(row, n, &l), FUNNEL_EMALFORMED);
	}
	/* header, ten times, owner and team: a whole row with no touches */
	mx_lead l;
	assert_int_equal(mx_lead_decode(row, 4 + 8 * (2 + FP_STAGE_COUNT + 2) + 2, &l), FUNNEL_OK);
	assert_int_equal(l.stage, FP_STAGE_MQL);
	row[0] = FP_STAGE_COUNT;   /* no such stage */
	assert_int_equal(mx_lead_decode(row, 4 + 8 * (2 + FP_STAGE_COUNT + 2) + 2, &l),
	                 FUNNEL_EMALFORMED);
	uint8_t fact[64];
	memset(fact, 0, sizeof fact);
	fact[0] = MX_F_STAGE;
	size_t whole = 5 + 8 * 4 + 5;
	for (size_t n = 0; n < whole; n++) {
		mx_fact f;
		assert_int_equal(mx_fact_decode(fact, n, &f), FUNNEL_EMALFORMED);
	}
	mx_fact f;
	assert_int_equal(mx_fact_decode(fact, whole, &f), FUNNEL_OK);
	fact[4] = 1;               /* one touch announced, none there */
	assert_int_equal(mx_fact_decode(fact, whole, &f), FUNNEL_EMALFORMED);
}

/* Seqs and ns are written digit for digit: past 2^53 a double would
 * print 1792367758326749417 as 1.7923677583267494e+18. */
static void
test_json_u64_exact(void **state)
{
	(void)state;
	static const uint64_t v[] = { 0, 1792367758326749417ULL, 9007199254740993ULL,
	                              UINT64_MAX };
	static const char *const want[] = { "{\"n\":0}", "{\"n\":1792367758326749417}",
	                                    "{\"n\":9007199254740993}",
	                                    "{\"n\":18446744073709551615}" };
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
		cJSON *o = cJSON_CreateObject();
		mx_json_u64(o, "n", v[i]);
		char *s = cJSON_PrintUnformatted(o);
		assert_string_equal(s, want[i]);
		free(s);
		cJSON_Delete(o);
	}
}

/* A lead whose opportunity had MX_MAX_TOUCHES touches keeps the touch
 * the opportunity was credited to (opp_last) after the row's last slot
 * took a later re-inquiry; a row written without it falls back to that
 * slot. */
static void
test_opportunity_last_touch(void **state)
{
	(void)state;
	uint8_t row[512];
	size_t fixed = 4 + 8 * (2 + FP_STAGE_COUNT + 2) + 2;
	memset(row, 0, sizeof row);
	row[0] = FP_STAGE_SQL;
	row[2] = MX_MAX_TOUCHES;          /* touches */
	row[3] = MX_MAX_TOUCHES;          /* of which the opportunity's */
	size_t n = fixed + 3 * (MX_MAX_TOUCHES - 1);
	memcpy(row + n, "\004late\0\0", 7);   /* the last slot: a later re-inquiry */
	n += 7;
	mx_lead l;
	assert_int_equal(mx_lead_decode(row, n, &l), FUNNEL_OK);
	assert_int_equal(l.opp_last.source.len, 4);      /* no opp_last kept: the slot */
	memcpy(row + n, "\003opp\0\0", 6);
	assert_int_equal(mx_lead_decode(row, n + 6, &l), FUNNEL_OK);
	assert_int_equal(l.opp_last.source.len, 3);
	assert_memory_equal(l.opp_last.source.ptr, "opp", 3);
	assert_memory_equal(l.touch[MX_MAX_TOUCHES - 1].source.ptr, "late", 4);
	assert_int_equal(mx_lead_decode(row, n + 3, &l), FUNNEL_EMALFORMED);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_params),
		cmocka_unit_test(test_window_order),
		cmocka_unit_test(test_quote_whole_characters),
		cmocka_unit_test(test_model_and_bucket_values),
		cmocka_unit_test(test_report_names),
		cmocka_unit_test(test_truncated_rows),
		cmocka_unit_test(test_json_u64_exact),
		cmocka_unit_test(test_opportunity_last_touch),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
