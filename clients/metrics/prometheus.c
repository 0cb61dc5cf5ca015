/*
 * clients/metrics/prometheus.c - the /metrics exposition text of funnel-metrics:
 * the counters table in key order plus the checkpoint and the log's head
 * (metrics.h, METRICS.md "/metrics"); the sbuf text builder.
 */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"

/* ---- Prometheus ---- */

static const struct metric {
	const char *name, *type, *help, *labels[2];
} metrics[] = {
	{ "funnel_assignments_total", "counter", "Leads assigned to a rep or queue, by team.",
	  { "team", NULL } },
	{ "funnel_closed_loop_total", "counter",
	  "Leads sent back or out with a reason code (rejected, recycled, disqualified, lost).",
	  { "event", "reason" } },
	{ "funnel_contacted_within_total", "counter",
	  "Assignments whose first contact came within 5m, 1h or 24h, by team.",
	  { "team", "within" } },
	{ "funnel_events_by_producer_total", "counter",
	  "Records by the principal funneld stamped as their producer (--access), and type.",
	  { "producer", "type" } },
	{ "funnel_first_contacts_total", "counter",
	  "Assignments followed by a first lead.contacted, by team.", { "team", NULL } },
	{ "funnel_leads", "gauge", "Leads in each stage now.", { "stage", NULL } },
	{ "funnel_pipeline_amount_total", "counter",
	  "Sum of opportunity.opened amounts, by the lead's first-touch source.",
	  { "source", NULL } },
	{ "funnel_revenue_amount_total", "counter",
	  "Sum of deal.won amounts, by the lead's first-touch source.", { "source", NULL } },
	{ "funnel_sla_breaches_total", "counter", "lead.sla_breached events, by team and rep.",
	  { "team", "owner" } },
	{ "funnel_stage_entries_total", "counter",
	  "Leads entering each stage, by the lead's first-touch source.", { "stage", "source" } },
};

void
mx_sb_add(sbuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 4096;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (p == NULL) {
			b->oom = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

void
mx_sb_printf(sbuf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n > 0)
		mx_sb_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A label value with \, " and newline escaped. */
void
mx_sb_label(sbuf *b, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\\')
			mx_sb_add(b, "\\\\", 2);
		else if (s[i] == '"')
			mx_sb_add(b, "\\\"", 2);
		else if (s[i] == '\n')
			mx_sb_add(b, "\\n", 2);
		else
			mx_sb_add(b, s + i, 1);
	}
}

void
mx_sb_value(sbuf *b, double x)
{
	if (x == floor(x) && fabs(x) < 9007199254740992.0)
		mx_sb_printf(b, " %.0f\n", x);
	else
		mx_sb_printf(b, " %.17g\n", x);
}

void
mx_sb_head(sbuf *b, const char *name, const char *type, const char *help)
{
	mx_sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

int
mx_prometheus(MDB_txn *txn, const mx_tables *t, int head_known, uint64_t head, char **out,
              size_t *len)
{
	sbuf b = { 0 };
	MDB_cursor *c;
	MDB_val k, v;
	const struct metric *cur = NULL;
	int rc;

	*out = NULL;
	*len = 0;
	uint64_t cp = mx_checkpoint(txn, t);
	mx_sb_head(&b, "funnel_view_checkpoint_seq", "gauge",
	        "Seq of the last log record applied to the metrics view.");
	mx_sb_printf(&b, "funnel_view_checkpoint_seq %" PRIu64 "\n", cp);
	if (head_known) {
		mx_sb_head(&b, "funnel_log_head_seq", "gauge", "Seq of the last record in the log.");
		mx_sb_printf(&b, "funnel_log_head_seq %" PRIu64 "\n", head);
		mx_sb_head(&b, "funnel_view_lag_records", "gauge",
		        "Records in the log not yet applied to the metrics view.");
		mx_sb_printf(&b, "funnel_view_lag_records %" PRIu64 "\n", head > cp ? head - cp : 0);
	}
	if (mdb_cursor_open(txn, t->counters, &c) != 0) {
		free(b.p);
		return FUNNEL_ESTORAGE;
	}
	for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
		const char *key = k.mv_data, *end = key + k.mv_size;
		const char *nul = memchr(key, 0, k.mv_size);
		size_t nlen = nul ? (size_t)(nul - key) : k.mv_size;
		double x;
		if (v.mv_size != 8)
			continue;
		memcpy(&x, v.mv_data, 8);
		if (cur == NULL || strlen(cur->name) != nlen || memcmp(cur->name, key, nlen) != 0) {
			cur = NULL;
			for (size_t i = 0; i < sizeof metrics / sizeof metrics[0]; i++) {
				if (strlen(metrics[i].name) == nlen && memcmp(metrics[i].name, key, nlen) == 0)
					cur = &metrics[i];
			}
			if (cur == NULL)
				continue;
			mx_sb_head(&b, cur->name, cur->type, cur->help);
		}
		mx_sb_add(&b, cur->name, nlen);
		const char *p = nul ? nul + 1 : end;
		for (int i = 0; i < 2 && cur->labels[i] && nul; i++) {
			const char *q = memchr(p, 0, (size_t)(end - p));
			size_t l = q ? (size_t)(q - p) : (size_t)(end - p);
			mx_sb_printf(&b, "%s%s=\"", i ? "," : "{", cur->labels[i]);
			if (l == 0 && strcmp(cur->labels[i], "team") == 0)
				mx_sb_add(&b, MX_NO_TEAM, strlen(MX_NO_TEAM));
			else
				mx_sb_label(&b, p, l);
			mx_sb_add(&b, "\"", 1);
			p = q ? q + 1 : end;
			if (i == 1 || cur->labels[i + 1] == NULL)
				mx_sb_add(&b, "}", 1);
			else if (q == NULL) {
				mx_sb_printf(&b, ",%s=\"\"}", cur->labels[i + 1]);
				break;
			}
		}
		mx_sb_value(&b, x);
	}
	mdb_cursor_close(c);
	if (b.oom || (rc != MDB_NOTFOUND)) {
		free(b.p);
		return b.oom ? FUNNEL_ENOMEM : FUNNEL_ESTORAGE;
	}
	*out = b.p;
	*len = b.n;
	return FUNNEL_OK;
}
