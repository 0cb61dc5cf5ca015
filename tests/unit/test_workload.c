/*
 * tests/unit/test_workload.c - the funnel-shaped event stream of
 * tests/common/workload.c, which every benchmark sends to every system.
 *
 * Each generated envelope is decoded and validated by the daemon's own
 * code (fp_event_decode) and walked through the transition table
 * (fp_transition) lead by lead, as funneld would: a stream the daemon
 * would refuse any event of fails here, not in the middle of a benchmark.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "envelope.h"
#include "model.h"
#include "workload.h"

#define N 200000

/* Lead ids are "<tag>-L<n>": the n. */
static uint64_t
lead_num(const char *tag, const char *lead)
{
	size_t t = strlen(tag);
	assert_int_equal(strncmp(lead, tag, t), 0);
	assert_int_equal(lead[t], '-');
	assert_int_equal(lead[t + 1], 'L');
	return strtoull(lead + t + 2, NULL, 10);
}

static int
str_eq(funnel_str s, const char *c)
{
	return s.ptr != NULL && s.len == strlen(c) && memcmp(s.ptr, c, s.len) == 0;
}

/* Every event is a valid envelope, makes sense for its lead's stage, and
 * the set's layout promises hold (contiguous envelopes, data at the end). */
static void
test_stream_valid_for_funneld(void **state)
{
	(void)state;
	wl_funnel g;
	wl_set s;
	unsigned char *stage = calloc(N + 1, 1);   /* fp_stage per lead; leads <= events */
	size_t count[WL_NKINDS] = { 0 };
	char want_id[64];

	assert_non_null(stage);
	wl_set_init(&s);
	wl_funnel_init(&g, 42, "t0");
	assert_int_equal(wl_set_fill(&s, &g, N), 0);
	assert_int_equal(s.n, N);
	for (size_t i = 0; i < s.n; i++) {
		const wl_event *e = &s.ev[i];
		msgpack_unpacked up;
		size_t off = 0;
		fp_event ev;
		fp_error err;

		if (i + 1 < s.n)
			assert_ptr_equal(e->env + e->env_len, s.ev[i + 1].env);
		assert_ptr_equal(e->data + e->data_len, e->env + e->env_len);
		msgpack_unpacked_init(&up);
		assert_int_equal(msgpack_unpack_next(&up, (const char *)e->env, e->env_len, &off),
		                 MSGPACK_UNPACK_SUCCESS);
		assert_int_equal(off, e->env_len);
		assert_int_equal(fp_event_decode(&up.data, &ev, &err), FUNNEL_OK);
		assert_true(str_eq(ev.type, e->type));
		assert_true(str_eq(ev.lead, e->lead));
		assert_true(str_eq(ev.id, e->id));
		snprintf(want_id, sizeof want_id, "t0-%zu", i);
		assert_string_equal(e->id, want_id);
		assert_non_null(ev.data);
		assert_int_equal(ev.spec->type, fp_evspec_lookup(e->type, strlen(e->type))->type);

		uint64_t n = lead_num("t0", e->lead);
		assert_true(n <= N);
		fp_stage to;
		funnel_err rc = fp_transition(ev.spec, (fp_stage)stage[n], &to);
		if (rc != FUNNEL_OK)
			fail_msg("event %zu (%s) refused for %s in stage %s", i, e->type, e->lead,
			         fp_stage_name((fp_stage)stage[n]));
		stage[n] = (unsigned char)to;
		count[e->kind]++;
		msgpack_unpacked_destroy(&up);
	}

	/* the shape of a demand waterfall: every kind occurs, engagement and
	 * captures dominate, each step down the funnel is rarer than the last */
	for (int k = 0; k < WL_NKINDS; k++) {
		print_message("%-20s %6.2f%%\n", wl_kind_name(k), 100.0 * (double)count[k] / N);
		assert_true(count[k] > 0);
	}
	print_message("mean envelope %.0f bytes\n", (double)s.env_bytes / N);
	assert_true(count[WL_ACTIVITY] > count[WL_CAPTURED]);
	assert_true(count[WL_CAPTURED] > count[WL_QUALIFIED]);
	assert_true(count[WL_QUALIFIED] > count[WL_ACCEPTED]);
	assert_true(count[WL_ACCEPTED] > count[WL_OPP_OPENED]);
	assert_true(count[WL_OPP_OPENED] > count[WL_DEAL_WON]);
	assert_true(count[WL_CAPTURED] > N / 10 && count[WL_CAPTURED] < N / 2);
	wl_set_release(&s);
	free(stage);
}

/* Same seed and tag: the same bytes, whether generated at once or in
 * two fills; another tag: other bytes. */
static void
test_stream_deterministic(void **state)
{
	(void)state;
	wl_funnel g1, g2, g3;
	wl_set a, b1, b2, c;

	wl_set_init(&a);
	wl_set_init(&b1);
	wl_set_init(&b2);
	wl_set_init(&c);
	wl_funnel_init(&g1, 7, "p1");
	wl_funnel_init(&g2, 7, "p1");
	wl_funnel_init(&g3, 7, "p2");
	assert_int_equal(wl_set_fill(&a, &g1, 20000), 0);
	assert_int_equal(wl_set_fill(&b1, &g2, 12345), 0);
	assert_int_equal(wl_set_fill(&b2, &g2, 20000 - 12345), 0);
	assert_int_equal(wl_set_fill(&c, &g3, 20000), 0);
	assert_int_equal(a.env_bytes, b1.env_bytes + b2.env_bytes);
	assert_memory_equal(a.ev[0].env, b1.ev[0].env, b1.env_bytes);
	assert_memory_equal(a.ev[12345].env, b2.ev[0].env, b2.env_bytes);
	assert_string_equal(a.ev[19999].id, b2.ev[b2.n - 1].id);
	size_t same = 0;
	for (size_t i = 0; i < 20000; i++)
		same += a.ev[i].kind == c.ev[i].kind;
	assert_true(same < 20000);
	assert_string_not_equal(a.ev[0].lead, c.ev[0].lead);
	wl_set_release(&a);
	wl_set_release(&b1);
	wl_set_release(&b2);
	wl_set_release(&c);
}

/* A set can be refilled and released twice; an empty fill is empty. */
static void
test_set_reuse(void **state)
{
	(void)state;
	wl_funnel g;
	wl_set s;
	wl_set_init(&s);
	wl_funnel_init(&g, 1, "r");
	assert_int_equal(wl_set_fill(&s, &g, 10), 0);
	assert_int_equal(s.n, 10);
	assert_int_equal(wl_set_fill(&s, &g, 0), 0);
	assert_int_equal(s.n, 0);
	assert_int_equal(s.env_bytes, 0);
	assert_int_equal(wl_set_fill(&s, &g, 3), 0);
	assert_string_equal(s.ev[0].id, "r-10");
	wl_set_release(&s);
	wl_set_release(&s);
	assert_int_equal(s.n, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stream_valid_for_funneld),
		cmocka_unit_test(test_stream_deterministic),
		cmocka_unit_test(test_set_reuse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
