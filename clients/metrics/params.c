/*
 * clients/metrics/params.c - the /api parameters of funnel-metrics: a report
 * name and its query parameters -> mx_query (metrics.h, METRICS.md "JSON
 * API").  A bad value is refused with a message naming it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics.h"
#include "mp.h"
#include "report.h"

static const char *const report_names[MX_R_COUNT] = {
	"summary", "funnel", "conversion", "velocity", "followup", "closed-loop", "attribution",
	"trend", "leads", "values",
};

int
mx_report_parse(const char *name)
{
	for (int i = 0; i < MX_R_COUNT; i++) {
		if (strcmp(name, report_names[i]) == 0)
			return i;
	}
	return -1;
}

const char *
mx_report_name(int report)
{
	return report >= 0 && report < MX_R_COUNT ? report_names[report] : "";
}

/* ---- parameters ---- */

/* ns since the epoch from digits (ns), YYYY-MM-DD or
 * YYYY-MM-DDTHH:MM:SSZ (UTC); -1 if it is neither. */
static int
parse_time(const char *s, uint64_t *out)
{
	size_t n = strlen(s);
	int y, mo, d, h = 0, mi = 0, se = 0, used = 0;

	if (n > 0 && n <= 19 && strspn(s, "0123456789") == n) {
		*out = strtoull(s, NULL, 10);
		return 0;
	}
	if (n == 10) {
		if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &used) != 3 || used != 10)
			return -1;
	} else if (n == 20) {
		if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2dZ%n", &y, &mo, &d, &h, &mi, &se, &used) != 6 ||
		    used != 20)
			return -1;
	} else {
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (strchr("0123456789-T:Z", s[i]) == NULL)
			return -1;
	}
	if (y < 1970 || y > 2200 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
	    se > 59)
		return -1;
	struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
	                 .tm_min = mi, .tm_sec = se };
	time_t t = timegm(&tm);
	struct tm back;
	gmtime_r(&t, &back);
	if (back.tm_mday != d || back.tm_mon != mo - 1)
		return -1;    /* 2026-02-30 */
	*out = (uint64_t)t * NS_PER_S;
	return 0;
}

/* How many bytes of s to quote in a message: at most 60, cut at a
 * UTF-8 character boundary (s is valid UTF-8), so the JSON stays valid. */
static int
quote_len(const char *s)
{
	size_t n = strlen(s);
	if (n > 60) {
		n = 60;
		while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
			n--;
	}
	return (int)n;
}

int
mx_query_param(mx_query *q, const char *key, const char *value, char *err, size_t errlen)
{
	int r = q->report;
	if (value == NULL)
		value = "";
	/* the value is echoed in the answer (window, messages): JSON text */
	if (mp_utf8_invalid_at(value, strlen(value)) >= 0) {
		snprintf(err, errlen, "the value is not valid UTF-8");
		return -1;
	}
	if (strcmp(key, "from") == 0 || strcmp(key, "to") == 0) {
		uint64_t t;
		if (parse_time(value, &t) != 0) {
			snprintf(err, errlen, "'%.*s' is not a time: use YYYY-MM-DD, "
			         "YYYY-MM-DDTHH:MM:SSZ (UTC) or nanoseconds since the epoch",
			         quote_len(value), value);
			return -1;
		}
		if (key[0] == 't' && t == 0) {    /* to 0 means "no end" inside */
			snprintf(err, errlen, "the window is empty: from must be before to");
			return -1;
		}
		if (key[0] == 'f')
			q->from = t;
		else
			q->to = t;
		if (q->to && q->from >= q->to) {
			snprintf(err, errlen, "the window is empty: from must be before to");
			return -1;
		}
		return 0;
	}
	if (r == MX_R_VALUES) {
		snprintf(err, errlen, "unknown parameter for /api/%s", mx_report_name(r));
		return -1;
	}
	if (strcmp(key, "source") == 0 || strcmp(key, "campaign") == 0 ||
	    strcmp(key, "team") == 0 || strcmp(key, "rep") == 0 ||
	    (strcmp(key, "reason") == 0 && r == MX_R_LEADS)) {
		size_t n = strlen(value);
		if (n == 0 || n > MX_STR_MAX) {
			snprintf(err, errlen, "%s must be 1..%d bytes", key, MX_STR_MAX);
			return -1;
		}
		if (key[0] == 's')
			q->source = value;
		else if (key[0] == 'c')
			q->campaign = value;
		else if (key[0] == 't')
			q->team = value;
		else if (key[2] == 'p')
			q->rep = value;
		else
			q->reason = value;
		return 0;
	}
	if (strcmp(key, "stage") == 0 && r == MX_R_LEADS) {
		int st = fp_stage_parse(value, strlen(value));
		if (strcmp(value, "assigned") == 0)
			q->list = MX_IX_ASSIGNED;
		else if (strcmp(value, "sla_breached") == 0)
			q->list = MX_IX_SLA;
		else if (st > FP_STAGE_NONE)
			q->list = st;
		else {
			snprintf(err, errlen, "stage is a stage name (inquiry, mql, ...), assigned or "
			         "sla_breached, not '%.*s'", quote_len(value), value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "page") == 0 && r == MX_R_LEADS) {
		size_t n = strlen(value);
		unsigned long pg = n && n <= 6 && strspn(value, "0123456789") == n ?
		                   strtoul(value, NULL, 10) : 0;
		if (pg < 1) {
			snprintf(err, errlen, "page is 1..999999, not '%.*s'", quote_len(value), value);
			return -1;
		}
		q->page = (unsigned)pg;
		return 0;
	}
	if (strcmp(key, "model") == 0 && (r == MX_R_ATTRIBUTION || r == MX_R_SUMMARY)) {
		static const char *const m[] = { "first", "last", "linear" };
		for (int i = 0; i < 3; i++) {
			if (strcmp(value, m[i]) == 0) {
				q->model = i;
				return 0;
			}
		}
		snprintf(err, errlen, "model is first, last or linear, not '%.*s'", quote_len(value),
		         value);
		return -1;
	}
	if (strcmp(key, "compute") == 0 && r != MX_R_LEADS) {
		/* the reference path: the same figures from the facts and the
		 * leads one by one, not from the days table (METRICS.md) */
		if (strcmp(value, "facts") == 0 || strcmp(value, "days") == 0) {
			q->facts_only = value[0] == 'f';
			return 0;
		}
		snprintf(err, errlen, "compute is days or facts, not '%.*s'", quote_len(value), value);
		return -1;
	}
	if (strcmp(key, "bucket") == 0 && (r == MX_R_TREND || r == MX_R_SUMMARY)) {
		if (strcmp(value, "week") == 0 || strcmp(value, "day") == 0) {
			q->bucket = value[0] == 'w' ? MX_BUCKET_WEEK : MX_BUCKET_DAY;
			return 0;
		}
		snprintf(err, errlen, "bucket is week or day, not '%.*s'", quote_len(value), value);
		return -1;
	}
	snprintf(err, errlen, "unknown parameter for /api/%s", mx_report_name(r));
	return -1;
}

/* ---- what a query asks for: its filters and its sections ---- */

/* The filters: s equals c (c NULL: any). */
int
mx_str_is(funnel_str s, const char *c)
{
	return c == NULL || (strlen(c) == s.len && memcmp(s.ptr, c, s.len) == 0);
}

/* The team filter: as str_is, and MX_NO_TEAM names the empty team. */
int
mx_team_is(funnel_str s, const char *c)
{
	return mx_str_is(s, c) || (s.len == 0 && strcmp(c, MX_NO_TEAM) == 0);
}

/* Whether the report prints section r (the summary prints them all):
 * the scan skips the groupings nobody will read.  The headline figures
 * (the previous period's) need the follow-up totals only. */
int
mx_wants(const mx_query *q, int r)
{
	if (q->headline)
		return r == MX_R_FOLLOWUP;
	return q->report == MX_R_SUMMARY || q->report == r;
}
