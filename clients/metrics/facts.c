/*
 * clients/metrics/facts.c - the vocabulary the view and the reports share
 * (metrics.h, report.h): which events close the loop, the conversion
 * steps and the stages the funnel shows, names clipped to the view's
 * size, the labels of a touch.  Tables and pure functions; no state.
 */
#include <string.h>

#include "report.h"

/* Conversion pairs, in funnel order. */
const mx_pair mx_pairs[NPAIRS] = {
	{ FP_STAGE_INQUIRY, FP_STAGE_MQL, "inquiry_to_mql" },
	{ FP_STAGE_MQL, FP_STAGE_SAL, "mql_to_sal" },
	{ FP_STAGE_SAL, FP_STAGE_SQL, "sal_to_sql" },
	{ FP_STAGE_SQL, FP_STAGE_WON, "sql_to_won" },
};

/* The stages the funnel picture shows, in order. */
const fp_stage mx_shown[NSHOWN] = {
	FP_STAGE_INQUIRY, FP_STAGE_MQL, FP_STAGE_SAL, FP_STAGE_SQL, FP_STAGE_WON, FP_STAGE_LOST,
	FP_STAGE_NURTURE, FP_STAGE_DISQUALIFIED, FP_STAGE_ERASED,
};

/* s cut to MX_STR_MAX bytes at a UTF-8 character boundary, and before
 * its first NUL: counter keys separate labels with NUL and the reports
 * keep names as C strings, so a name holding U+0000 (valid UTF-8, let
 * through by the daemon) would otherwise print as a shorter name and
 * split into rows and series with the same labels. */
funnel_str
mx_clip(funnel_str s)
{
	const char *nul;
	if (s.ptr == NULL)
		s.len = 0;
	if (s.len > 0 && (nul = memchr(s.ptr, 0, s.len)) != NULL)
		s.len = (size_t)(nul - s.ptr);
	if (s.len > MX_STR_MAX) {
		s.len = MX_STR_MAX;
		while (s.len > 0 && ((unsigned char)s.ptr[s.len] & 0xC0) == 0x80)
			s.len--;
	}
	return s;
}

/* The events of the closed loop: the ones funnel_closed_loop_total and
 * the closed-loop reasons count (METRICS.md).  Their reason is required
 * by the protocol; a reason on any other event is not a closed-loop one. */
int
mx_closed_loop(int ev)
{
	return ev == FP_EV_REJECTED || ev == FP_EV_RECYCLED || ev == FP_EV_DISQUALIFIED ||
	       ev == FP_EV_DEAL_LOST;
}

/* A touch's label k: 0 source, 1 campaign, 2 form (empty if absent). */
funnel_str
mx_touch_key(const mx_touch *t, int k)
{
	funnel_str s = k == 0 ? t->source : k == 1 ? t->campaign : t->form;
	if (s.ptr == NULL)
		s.len = 0;
	return s;
}

/* Byte equality of two names (an absent name is the empty one). */
int
mx_str_eq(funnel_str a, funnel_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}
