/*
 * clients/gateway/stats.c - what /metrics reports (contract in
 * gateway.h; the names are GATEWAY.md "Metrics"): submissions by form and
 * outcome, and the request latency histogram.  Counters are updated with
 * relaxed atomics from every server thread; a scrape reads them without
 * a lock (each number is exact, the set is not one instant).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

static const char *const outcome_names[GW_N_OUTCOMES] = {
	"stored", "duplicate", "honeypot", "invalid", "forbidden", "rate_limited",
	"too_large", "unavailable", "refused", "error",
};

/* Upper bounds of the latency buckets, in seconds (+Inf implied). */
static const double bounds[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                 0.5, 1, 2.5, 5, 10 };
#define N_BOUNDS (sizeof bounds / sizeof bounds[0])

struct gw_stats {
	const gw_forms *forms;
	size_t rows;                          /* forms->n + 2: /v1/events, unknown form */
	uint64_t (*counts)[GW_N_OUTCOMES];    /* rows x outcomes */
	uint64_t buckets[N_BOUNDS + 1];
	uint64_t sum_ns, count;
};

const char *
gw_outcome_name(gw_outcome o)
{
	return o < GW_N_OUTCOMES ? outcome_names[o] : "error";
}

int
gw_stats_new(gw_stats **out, const gw_forms *forms)
{
	gw_stats *s = calloc(1, sizeof *s);
	*out = NULL;
	if (s == NULL)
		return FUNNEL_ENOMEM;
	s->forms = forms;
	s->rows = forms->n + 2;
	if ((s->counts = calloc(s->rows, sizeof *s->counts)) == NULL) {
		free(s);
		return FUNNEL_ENOMEM;
	}
	*out = s;
	return FUNNEL_OK;
}

void
gw_stats_destroy(gw_stats **ps)
{
	if (ps == NULL || *ps == NULL)
		return;
	free((*ps)->counts);
	free(*ps);
	*ps = NULL;
}

void
gw_stats_count(gw_stats *s, int form, gw_outcome o, int64_t dur_ns)
{
	size_t row = form >= 0 ? (size_t)form : form == -1 ? s->rows - 2 : s->rows - 1;
	if (row >= s->rows || o >= GW_N_OUTCOMES)
		return;
	__atomic_add_fetch(&s->counts[row][o], 1, __ATOMIC_RELAXED);
	double sec = dur_ns > 0 ? (double)dur_ns / 1e9 : 0;
	size_t b = 0;
	while (b < N_BOUNDS && sec > bounds[b])
		b++;
	__atomic_add_fetch(&s->buckets[b], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&s->sum_ns, (uint64_t)(dur_ns > 0 ? dur_ns : 0), __ATOMIC_RELAXED);
	__atomic_add_fetch(&s->count, 1, __ATOMIC_RELAXED);
}

/* A growing text buffer; on failure p is NULL and stays so. */
typedef struct buf {
	char *p;
	size_t len, cap;
} buf;

static void
put(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
put(buf *b, const char *fmt, ...)
{
	va_list ap;
	if (b->p == NULL)
		return;
	for (;;) {
		va_start(ap, fmt);
		int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			free(b->p);
			b->p = NULL;
			return;
		}
		if ((size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		char *q = realloc(b->p, b->cap * 2 + (size_t)n);
		if (q == NULL) {
			free(b->p);
			b->p = NULL;
			return;
		}
		b->p = q;
		b->cap = b->cap * 2 + (size_t)n;
	}
}

static uint64_t
get(const uint64_t *v)
{
	return __atomic_load_n(v, __ATOMIC_RELAXED);
}

char *
gw_stats_prometheus(gw_stats *s, int log_up, size_t *len)
{
	buf b = { .p = malloc(4096), .cap = 4096 };
	put(&b, "# HELP funnel_gateway_submissions_total Requests to POST /forms/{id} and "
	        "/v1/events by form and outcome.\n# TYPE funnel_gateway_submissions_total counter\n");
	for (size_t r = 0; r < s->rows; r++) {
		const char *form = r < s->forms->n ? s->forms->v[r].id :
		                   r == s->rows - 2 ? "/v1/events" : "(unknown)";
		for (int o = 0; o < GW_N_OUTCOMES; o++) {
			uint64_t v = get(&s->counts[r][o]);
			if (v == 0 && r >= s->forms->n)
				continue;       /* the two pseudo-forms show what happened only */
			put(&b, "funnel_gateway_submissions_total{form=\"%s\",outcome=\"%s\"} %llu\n", form,
			    outcome_names[o], (unsigned long long)v);
		}
	}
	put(&b, "# HELP funnel_gateway_request_seconds Time from a POST's last byte to its answer "
	        "(funneld's ack included).\n# TYPE funnel_gateway_request_seconds histogram\n");
	uint64_t cum = 0;
	for (size_t i = 0; i <= N_BOUNDS; i++) {
		cum += get(&s->buckets[i]);
		if (i < N_BOUNDS)
			put(&b, "funnel_gateway_request_seconds_bucket{le=\"%g\"} %llu\n", bounds[i],
			    (unsigned long long)cum);
		else
			put(&b, "funnel_gateway_request_seconds_bucket{le=\"+Inf\"} %llu\n",
			    (unsigned long long)cum);
	}
	put(&b, "funnel_gateway_request_seconds_sum %.9f\nfunnel_gateway_request_seconds_count %llu\n",
	    (double)get(&s->sum_ns) / 1e9, (unsigned long long)get(&s->count));
	put(&b, "# HELP funnel_gateway_log_up 1 when funneld answered the last status request.\n"
	        "# TYPE funnel_gateway_log_up gauge\nfunnel_gateway_log_up %d\n", log_up > 0);
	*len = b.p ? b.len : 0;
	return b.p;
}
