/*
 * tests/unit/test_model.c - the funnel model (proto/model.c): the stage
 * transition table, event type lookup and stage names.
 *
 * The expected transition table below is written out from the business
 * rules of DESIGN.md "The funnel model", cell by cell, and is not derived
 * from the code under test: a change to the table in proto/model.c must
 * be made here too, on purpose.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "model.h"

/* One cell of the table: the code fp_transition must return and, on
 * success, the stage after the event. */
struct cell {
	funnel_err rc;
	fp_stage to;
};

#define OK(s) { FUNNEL_OK, FP_STAGE_##s }
#define NL { FUNNEL_ENOLEAD, FP_STAGE_NONE }       /* lead never captured */
#define TR { FUNNEL_ETRANSITION, FP_STAGE_NONE }   /* no sense in this stage */

/* Columns, in this order. */
static const fp_stage stages[FP_STAGE_COUNT] = {
	FP_STAGE_NONE, FP_STAGE_INQUIRY, FP_STAGE_MQL, FP_STAGE_SAL, FP_STAGE_SQL,
	FP_STAGE_WON, FP_STAGE_LOST, FP_STAGE_NURTURE, FP_STAGE_DISQUALIFIED, FP_STAGE_ERASED
};

struct trow {
	fp_evtype type;
	const char *name;
	struct cell c[FP_STAGE_COUNT];
};

/*
 * Rules behind each row:
 *  - x.*, rules.changed and the rep.* events: no funnel checks, stage
 *    never changes.
 *  - lead.captured: a new lead (or one erased and seen again) enters as
 *    an inquiry; for a known lead it is a re-inquiry, no stage reset.
 *  - activity, scored, contacted: any captured, not erased lead; no change.
 *  - assigned, sla_breached: a lead still being worked (inquiry, mql,
 *    sal, sql, nurture); no change.
 *  - qualified: inquiry or nurture -> mql.
 *  - accepted: mql -> sal.  rejected: mql -> nurture.
 *  - recycled: back to nurture from mql, sal, sql or a lost deal.
 *  - disqualified: from any worked stage or a lost deal.
 *  - opportunity.opened: sal -> sql.  deal.won / deal.lost: sql -> won / lost.
 *  - erased: any captured lead not yet erased.
 *  - Every lead event but lead.captured on a lead never captured: ENOLEAD.
 */
static const struct trow table[] = {
	/*                          none         inquiry      mql          sal          sql          won          lost         nurture      disqualified      erased */
	{ FP_EV_CUSTOM, "x.*", {
		OK(NONE), OK(INQUIRY), OK(MQL), OK(SAL), OK(SQL), OK(WON), OK(LOST), OK(NURTURE), OK(DISQUALIFIED), OK(ERASED) } },
	{ FP_EV_CAPTURED, "lead.captured", {
		OK(INQUIRY), OK(INQUIRY), OK(MQL), OK(SAL), OK(SQL), OK(WON), OK(LOST), OK(NURTURE), OK(DISQUALIFIED), OK(INQUIRY) } },
	{ FP_EV_ACTIVITY, "lead.activity", {
		NL, OK(INQUIRY), OK(MQL), OK(SAL), OK(SQL), OK(WON), OK(LOST), OK(NURTURE), OK(DISQUALIFIED), TR } },
	{ FP_EV_SCORED, "lead.scored", {
		NL, OK(INQUIRY), OK(MQL), OK(SAL), OK(SQL), OK(WON), OK(LOST), OK(NURTURE), OK(DISQUALIFIED), TR } },
	{ FP_EV_QUALIFIED, "lead.qualified", {
		NL, OK(MQL), TR, TR, TR, TR, TR, OK(MQL), TR, TR } },
	{ FP_EV_ASSIGNED, "lead.assigned", {
		NL, OK(INQUIRY), OK(MQL), OK(SAL), OK(SQL), TR, TR, OK(NURTURE), TR, TR } },
	{ FP_EV_CONTACTED, "lead.contacted", {
		NL, OK(INQUIRY), OK(MQL), OK(SAL), OK(SQL), OK(WON), OK(LOST), OK(NURTURE), OK(DISQUALIFIED), TR } },
	{ FP_EV_ACCEPTED, "lead.accepted", {
		NL, TR, OK(SAL), TR, TR, TR, TR, TR, TR, TR } },
	{ FP_EV_REJECTED, "lead.rejected", {
		NL, TR, OK(NURTURE), TR, TR, TR, TR, TR, TR, TR } },
	{ FP_EV_RECYCLED, "lead.recycled", {
		NL, TR, OK(NURTURE), OK(NURTURE), OK(NURTURE), TR, OK(NURTURE), TR, TR, TR } },
	{ FP_EV_DISQUALIFIED, "lead.disqualified", {
		NL, OK(DISQUALIFIED), OK(DISQUALIFIED), OK(DISQUALIFIED), OK(DISQUALIFIED), TR,
		OK(DISQUALIFIED), OK(DISQUALIFIED), TR, TR } },
	{ FP_EV_OPP_OPENED, "opportunity.opened", {
		NL, TR, TR, OK(SQL), TR, TR, TR, TR, TR, TR } },
	{ FP_EV_DEAL_WON, "deal.won", {
		NL, TR, TR, TR, OK(WON), TR, TR, TR, TR, TR } },
	{ FP_EV_DEAL_LOST, "deal.lost", {
		NL, TR, TR, TR, OK(LOST), TR, TR, TR, TR, TR } },
	{ FP_EV_SLA_BREACHED, "lead.sla_breached", {
		NL, OK(INQUIRY), OK(MQL), OK(SAL), OK(SQL), TR, TR, OK(NURTURE), TR, TR } },
	{ FP_EV_RULES_CHANGED, "rules.changed", {
		OK(NONE), OK(INQUIRY), OK(MQL), OK(SAL), OK(SQL), OK(WON), OK(LOST), OK(NURTURE), OK(DISQUALIFIED), OK(ERASED) } },
	{ FP_EV_ERASED, "lead.erased", {
		NL, OK(ERASED), OK(ERASED), OK(ERASED), OK(ERASED), OK(ERASED), OK(ERASED), OK(ERASED), OK(ERASED), TR } },
	{ FP_EV_REP_AVAILABLE, "rep.available", {
		OK(NONE), OK(INQUIRY), OK(MQL), OK(SAL), OK(SQL), OK(WON), OK(LOST), OK(NURTURE), OK(DISQUALIFIED), OK(ERASED) } },
	{ FP_EV_REP_UNAVAILABLE, "rep.unavailable", {
		OK(NONE), OK(INQUIRY), OK(MQL), OK(SAL), OK(SQL), OK(WON), OK(LOST), OK(NURTURE), OK(DISQUALIFIED), OK(ERASED) } },
	{ FP_EV_REP_CAPACITY, "rep.capacity", {
		OK(NONE), OK(INQUIRY), OK(MQL), OK(SAL), OK(SQL), OK(WON), OK(LOST), OK(NURTURE), OK(DISQUALIFIED), OK(ERASED) } },
};

#define NROWS (sizeof table / sizeof table[0])

/* The table above names every event type exactly once. */
static void
test_table_is_complete(void **state)
{
	(void)state;
	assert_int_equal(NROWS, FP_EV_COUNT - FP_EV_CUSTOM);
	for (int t = FP_EV_CUSTOM; t < FP_EV_COUNT; t++) {
		int seen = 0;
		for (size_t i = 0; i < NROWS; i++)
			seen += table[i].type == (fp_evtype)t;
		if (seen != 1)
			fail_msg("event type %d appears %d times in the expected table", t, seen);
	}
}

static void
test_transition_table(void **state)
{
	(void)state;
	int failures = 0;
	for (size_t i = 0; i < NROWS; i++) {
		const fp_evspec *spec = fp_evspec_get(table[i].type);
		assert_int_equal(spec->type, table[i].type);
		for (int s = 0; s < FP_STAGE_COUNT; s++) {
			const struct cell *want = &table[i].c[s];
			fp_stage to = (fp_stage)-1;
			funnel_err rc = fp_transition(spec, stages[s], &to);
			if (rc != want->rc || (rc == FUNNEL_OK && to != want->to)) {
				print_error("%s from %s: got %s -> %s, want %s -> %s\n", table[i].name,
				            fp_stage_name(stages[s]), funnel_errname(rc),
				            rc == FUNNEL_OK ? fp_stage_name(to) : "-",
				            funnel_errname(want->rc),
				            want->rc == FUNNEL_OK ? fp_stage_name(want->to) : "-");
				failures++;
			}
		}
	}
	assert_int_equal(failures, 0);
}

/* The same table through the lookup by wire name, as the daemon uses it. */
static void
test_transition_by_name(void **state)
{
	(void)state;
	for (size_t i = 0; i < NROWS; i++) {
		const char *name = table[i].type == FP_EV_CUSTOM ? "x.anything" : table[i].name;
		const fp_evspec *spec = fp_evspec_lookup(name, strlen(name));
		assert_int_equal(spec->type, table[i].type);
		for (int s = 0; s < FP_STAGE_COUNT; s++) {
			fp_stage to;
			funnel_err rc = fp_transition(spec, stages[s], &to);
			if (rc != table[i].c[s].rc)
				fail_msg("%s from %s: %s", name, fp_stage_name(stages[s]), funnel_errname(rc));
			if (rc == FUNNEL_OK)
				assert_int_equal(to, table[i].c[s].to);
		}
	}
}

/* A lead's life from capture to a won deal and on to erasure. */
static void
test_transition_walk(void **state)
{
	(void)state;
	static const struct {
		const char *type;
		funnel_err rc;
		fp_stage after;
	} walk[] = {
		{ "lead.activity", FUNNEL_ENOLEAD, FP_STAGE_NONE },
		{ "x.web.visit", FUNNEL_OK, FP_STAGE_NONE },
		{ "lead.captured", FUNNEL_OK, FP_STAGE_INQUIRY },
		{ "lead.accepted", FUNNEL_ETRANSITION, FP_STAGE_INQUIRY },
		{ "lead.qualified", FUNNEL_OK, FP_STAGE_MQL },
		{ "lead.qualified", FUNNEL_ETRANSITION, FP_STAGE_MQL },
		{ "lead.rejected", FUNNEL_OK, FP_STAGE_NURTURE },
		{ "lead.qualified", FUNNEL_OK, FP_STAGE_MQL },
		{ "lead.accepted", FUNNEL_OK, FP_STAGE_SAL },
		{ "lead.captured", FUNNEL_OK, FP_STAGE_SAL },
		{ "opportunity.opened", FUNNEL_OK, FP_STAGE_SQL },
		{ "deal.won", FUNNEL_OK, FP_STAGE_WON },
		{ "lead.qualified", FUNNEL_ETRANSITION, FP_STAGE_WON },
		{ "deal.lost", FUNNEL_ETRANSITION, FP_STAGE_WON },
		{ "lead.erased", FUNNEL_OK, FP_STAGE_ERASED },
		{ "lead.activity", FUNNEL_ETRANSITION, FP_STAGE_ERASED },
		{ "lead.captured", FUNNEL_OK, FP_STAGE_INQUIRY },
	};
	fp_stage cur = FP_STAGE_NONE;
	for (size_t i = 0; i < sizeof walk / sizeof walk[0]; i++) {
		const fp_evspec *spec = fp_evspec_lookup(walk[i].type, strlen(walk[i].type));
		fp_stage to = cur;
		funnel_err rc = fp_transition(spec, cur, &to);
		if (rc != walk[i].rc)
			fail_msg("step %zu (%s from %s): %s", i, walk[i].type, fp_stage_name(cur),
			         funnel_errname(rc));
		if (rc == FUNNEL_OK)
			cur = to;
		assert_int_equal(cur, walk[i].after);
	}
}

/* What each known type requires of its envelope. */
static const struct {
	const char *name;
	fp_evtype type;
	int needs_lead;
	const char *needs_string;
	const char *money_key;
} specs[] = {
	{ "lead.captured", FP_EV_CAPTURED, 1, NULL, NULL },
	{ "lead.activity", FP_EV_ACTIVITY, 1, "kind", NULL },
	{ "lead.scored", FP_EV_SCORED, 1, NULL, NULL },
	{ "lead.qualified", FP_EV_QUALIFIED, 1, NULL, NULL },
	{ "lead.assigned", FP_EV_ASSIGNED, 1, "owner", NULL },
	{ "lead.contacted", FP_EV_CONTACTED, 1, NULL, NULL },
	{ "lead.accepted", FP_EV_ACCEPTED, 1, NULL, NULL },
	{ "lead.rejected", FP_EV_REJECTED, 1, "reason", NULL },
	{ "lead.recycled", FP_EV_RECYCLED, 1, "reason", NULL },
	{ "lead.disqualified", FP_EV_DISQUALIFIED, 1, "reason", NULL },
	{ "opportunity.opened", FP_EV_OPP_OPENED, 1, NULL, "amount" },
	{ "deal.won", FP_EV_DEAL_WON, 1, NULL, "amount" },
	{ "deal.lost", FP_EV_DEAL_LOST, 1, "reason", NULL },
	{ "lead.sla_breached", FP_EV_SLA_BREACHED, 1, NULL, NULL },
	{ "rules.changed", FP_EV_RULES_CHANGED, 0, "hash", NULL },
	{ "lead.erased", FP_EV_ERASED, 1, NULL, NULL },
	{ "rep.available", FP_EV_REP_AVAILABLE, 0, "rep", NULL },
	{ "rep.unavailable", FP_EV_REP_UNAVAILABLE, 0, "rep", NULL },
	{ "rep.capacity", FP_EV_REP_CAPACITY, 0, "rep", NULL },
};

static int
str_eq_or_null(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static void
test_lookup_known(void **state)
{
	(void)state;
	assert_int_equal(sizeof specs / sizeof specs[0], FP_EV_COUNT - FP_EV_CAPTURED);
	for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
		const fp_evspec *s = fp_evspec_lookup(specs[i].name, strlen(specs[i].name));
		assert_non_null(s);
		if (s->type != specs[i].type)
			fail_msg("%s: type %d, want %d", specs[i].name, s->type, specs[i].type);
		assert_string_equal(s->name, specs[i].name);
		assert_int_equal(s->needs_lead, specs[i].needs_lead);
		if (!str_eq_or_null(s->needs_string, specs[i].needs_string))
			fail_msg("%s: needs_string %s", specs[i].name, s->needs_string ? s->needs_string : "NULL");
		if (!str_eq_or_null(s->money_key, specs[i].money_key))
			fail_msg("%s: money_key %s", specs[i].name, s->money_key ? s->money_key : "NULL");
		assert_ptr_equal(fp_evspec_get(specs[i].type), s);
	}
}

/* The name is a counted string: no NUL needed, no read past len. */
static void
test_lookup_counted(void **state)
{
	(void)state;
	static const char buf[] = "lead.capturedXYZ";
	assert_int_equal(fp_evspec_lookup(buf, 13)->type, FP_EV_CAPTURED);
	assert_int_equal(fp_evspec_lookup(buf, 12)->type, FP_EV_UNKNOWN);
	assert_int_equal(fp_evspec_lookup(buf, 16)->type, FP_EV_UNKNOWN);
	static const char nul[] = "lead.captured\0x";
	assert_int_equal(fp_evspec_lookup(nul, sizeof nul - 1)->type, FP_EV_UNKNOWN);
	assert_int_equal(fp_evspec_lookup("x.yz", 2)->type, FP_EV_CUSTOM);
	assert_int_equal(fp_evspec_lookup("x.yz", 1)->type, FP_EV_UNKNOWN);
}

static void
test_lookup_custom(void **state)
{
	(void)state;
	static const char *const names[] = {
		"x.a", "x.thing", "x.web.page_view", "x.lead.captured", "x.*", "x.X",
	};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		const fp_evspec *s = fp_evspec_lookup(names[i], strlen(names[i]));
		if (s->type != FP_EV_CUSTOM)
			fail_msg("'%s' is not custom", names[i]);
		assert_int_equal(s->needs_lead, 0);
		assert_null(s->needs_string);
		assert_null(s->money_key);
	}
}

static void
test_lookup_unknown(void **state)
{
	(void)state;
	static const char *const names[] = {
		"lead.bogus", "", "x", "X.y", "lead", "lead.", "LEAD.CAPTURED", "lead.captured ",
		" lead.captured", "lead.Captured", "deal", "deal.", "opportunity", "rules",
		"xx.y", ".x.y", "x-y", "y.x",
	};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		const fp_evspec *s = fp_evspec_lookup(names[i], strlen(names[i]));
		assert_non_null(s);
		if (s->type != FP_EV_UNKNOWN)
			fail_msg("'%s' looked up as type %d", names[i], s->type);
	}
}

static void
test_evspec_get_bounds(void **state)
{
	(void)state;
	for (int t = FP_EV_CUSTOM; t < FP_EV_COUNT; t++)
		assert_int_equal(fp_evspec_get((fp_evtype)t)->type, t);
	assert_int_equal(fp_evspec_get(FP_EV_UNKNOWN)->type, FP_EV_UNKNOWN);
	assert_int_equal(fp_evspec_get(FP_EV_COUNT)->type, FP_EV_UNKNOWN);
	assert_int_equal(fp_evspec_get((fp_evtype)-1)->type, FP_EV_UNKNOWN);
	assert_int_equal(fp_evspec_get((fp_evtype)1000)->type, FP_EV_UNKNOWN);
}

/* Stage values are stored in the daemon's index: they and their names
 * never change. */
static const struct {
	fp_stage stage;
	int value;
	const char *name;
} stage_names[] = {
	{ FP_STAGE_NONE, 0, "none" },
	{ FP_STAGE_INQUIRY, 1, "inquiry" },
	{ FP_STAGE_MQL, 2, "mql" },
	{ FP_STAGE_SAL, 3, "sal" },
	{ FP_STAGE_SQL, 4, "sql" },
	{ FP_STAGE_WON, 5, "won" },
	{ FP_STAGE_LOST, 6, "lost" },
	{ FP_STAGE_NURTURE, 7, "nurture" },
	{ FP_STAGE_DISQUALIFIED, 8, "disqualified" },
	{ FP_STAGE_ERASED, 9, "erased" },
};

static void
test_stage_names(void **state)
{
	(void)state;
	assert_int_equal(sizeof stage_names / sizeof stage_names[0], FP_STAGE_COUNT);
	for (size_t i = 0; i < sizeof stage_names / sizeof stage_names[0]; i++) {
		assert_int_equal(stage_names[i].stage, stage_names[i].value);
		assert_string_equal(fp_stage_name(stage_names[i].stage), stage_names[i].name);
		assert_int_equal(fp_stage_parse(stage_names[i].name, strlen(stage_names[i].name)),
		                 stage_names[i].value);
	}
	for (int s = 0; s < FP_STAGE_COUNT; s++) {
		const char *n = fp_stage_name((fp_stage)s);
		assert_int_equal(fp_stage_parse(n, strlen(n)), s);
	}
}

static void
test_stage_parse_unknown(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"", "Inquiry", "MQL", "won ", " won", "wo", "wonn", "bogus", "nurtured", "x.mql",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (fp_stage_parse(bad[i], strlen(bad[i])) != -1)
			fail_msg("'%s' parsed as a stage", bad[i]);
	}
	/* counted: a prefix of a longer buffer */
	assert_int_equal(fp_stage_parse("sqlite", 3), FP_STAGE_SQL);
	assert_int_equal(fp_stage_parse("sqlite", 6), -1);
}

static void
test_stage_name_out_of_range(void **state)
{
	(void)state;
	assert_string_equal(fp_stage_name(FP_STAGE_COUNT), "none");
	assert_string_equal(fp_stage_name((fp_stage)-1), "none");
	assert_string_equal(fp_stage_name((fp_stage)999), "none");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_is_complete),
		cmocka_unit_test(test_transition_table),
		cmocka_unit_test(test_transition_by_name),
		cmocka_unit_test(test_transition_walk),
		cmocka_unit_test(test_lookup_known),
		cmocka_unit_test(test_lookup_counted),
		cmocka_unit_test(test_lookup_custom),
		cmocka_unit_test(test_lookup_unknown),
		cmocka_unit_test(test_evspec_get_bounds),
		cmocka_unit_test(test_stage_names),
		cmocka_unit_test(test_stage_parse_unknown),
		cmocka_unit_test(test_stage_name_out_of_range),
	};
	return cmocka_run_group_tests_name("model", tests, NULL, NULL);
}
