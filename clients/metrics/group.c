/*
 * clients/metrics/group.c - the containers of the reports (report.h): a
 * growable vector of durations with nearest-rank percentiles, a small
 * string-keyed hash table of accumulators (gmap), and the aggregate (agg)
 * that holds them: its release and its trend buckets.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"

/* ---- growable vectors of durations and a string-keyed table ---- */

int
mx_vec_push(vec *a, uint64_t x)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 64;
		uint64_t *p = realloc(a->v, cap * sizeof *p);
		if (p == NULL)
			return -1;
		a->v = p;
		a->cap = cap;
	}
	a->v[a->n++] = x;
	return 0;
}

int
mx_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* The k-th smallest (0-based) of v[0..n): quickselect with a
 * three-way partition (runs of equal durations stay linear); reorders
 * v, never changes its values. */
static uint64_t
select_kth(uint64_t *v, size_t n, size_t k)
{
	size_t lo = 0, hi = n;     /* the k-th is in v[lo..hi) */
	while (hi - lo > 1) {
		uint64_t a = v[lo], b = v[lo + (hi - lo) / 2], c = v[hi - 1];
		uint64_t pivot = a < b ? (b < c ? b : a < c ? c : a) : (a < c ? a : b < c ? c : b);
		size_t lt = lo, i = lo, gt = hi;    /* [lo,lt) < pivot, [lt,i) ==, [gt,hi) > */
		while (i < gt) {
			uint64_t x = v[i];
			if (x < pivot) {
				v[i++] = v[lt];
				v[lt++] = x;
			} else if (x > pivot) {
				v[i] = v[--gt];
				v[gt] = x;
			} else {
				i++;
			}
		}
		if (k < lt)
			hi = lt;
		else if (k >= gt)
			lo = gt;
		else
			return pivot;
	}
	return v[lo];
}

/* Nearest-rank percentile of a non-empty vector: the smallest value with
 * at least p of the values at or below it (what the sorted vector has at
 * rank ceil(p n)).  Selects in place: the order of the values changes. */
uint64_t
mx_rank(vec *a, double p)
{
	size_t k = (size_t)ceil(p * (double)a->n);
	return select_kth(a->v, a->n, k ? k - 1 : 0);
}

static uint64_t
hash_keys(const funnel_str *k)
{
	uint64_t h = 1469598103934665603ull;
	for (int i = 0; i < NKEYS; i++) {
		for (size_t j = 0; j < k[i].len; j++)
			h = (h ^ (unsigned char)k[i].ptr[j]) * 1099511628211ull;
		h = (h ^ 0xff) * 1099511628211ull;
	}
	return h;
}

static int
keys_eq(const group *g, const funnel_str *k)
{
	for (int i = 0; i < NKEYS; i++) {
		if (strlen(g->k[i]) != k[i].len || memcmp(g->k[i], k[i].ptr, k[i].len) != 0)
			return 0;
	}
	return 1;
}

static int
gmap_grow(gmap *m)
{
	size_t ns = m->nslots ? m->nslots * 2 : 64;
	size_t *s = calloc(ns, sizeof *s);
	if (s == NULL)
		return -1;
	for (size_t i = 0; i < m->n; i++) {
		size_t j = m->items[i]->hash & (ns - 1);
		while (s[j])
			j = (j + 1) & (ns - 1);
		s[j] = i + 1;
	}
	free(m->slots);
	m->slots = s;
	m->nslots = ns;
	return 0;
}

/* The group of keys a, b, c, d (missing keys are ""), created at zero;
 * NULL when out of memory (m->oom is set). */
group *
mx_gmap_get(gmap *m, funnel_str a, funnel_str b, funnel_str c, funnel_str d)
{
	funnel_str k[NKEYS] = { a, b, c, d };
	for (int i = 0; i < NKEYS; i++) {
		if (k[i].ptr == NULL)
			k[i].len = 0;
	}
	uint64_t h = hash_keys(k);
	if (m->nslots) {
		for (size_t j = h & (m->nslots - 1); m->slots[j]; j = (j + 1) & (m->nslots - 1)) {
			group *g = m->items[m->slots[j] - 1];
			if (g->hash == h && keys_eq(g, k))
				return g;
		}
	}
	if ((m->n + 1) * 2 > m->nslots && gmap_grow(m) != 0)
		goto oom;
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 32;
		group **p = realloc(m->items, cap * sizeof *p);
		if (p == NULL)
			goto oom;
		m->items = p;
		m->cap = cap;
	}
	group *g = calloc(1, sizeof *g);
	if (g == NULL)
		goto oom;
	g->hash = h;
	for (int i = 0; i < NKEYS; i++) {
		g->k[i] = strndup(k[i].ptr ? k[i].ptr : "", k[i].len);
		if (g->k[i] == NULL) {
			for (int j = 0; j < i; j++)
				free(g->k[j]);
			free(g);
			goto oom;
		}
	}
	m->items[m->n++] = g;
	size_t j = h & (m->nslots - 1);
	while (m->slots[j])
		j = (j + 1) & (m->nslots - 1);
	m->slots[j] = m->n;
	return g;
oom:
	m->oom = 1;
	return NULL;
}

void
mx_gmap_release(gmap *m)
{
	for (size_t i = 0; i < m->n; i++) {
		for (int j = 0; j < NKEYS; j++)
			free(m->items[i]->k[j]);
		free(m->items[i]->d.v);
		free(m->items[i]);
	}
	free(m->items);
	free(m->slots);
	memset(m, 0, sizeof *m);
}

static int
cmp_group(const void *a, const void *b)
{
	const group *x = *(group *const *)a, *y = *(group *const *)b;
	for (int i = 0; i < NKEYS; i++) {
		int c = strcmp(x->k[i], y->k[i]);
		if (c)
			return c;
	}
	return 0;
}

void
mx_gmap_sort(gmap *m)
{
	if (m->n > 1)
		qsort(m->items, m->n, sizeof *m->items, cmp_group);
}

void
mx_gmap_prune(gmap *m)
{
	size_t j = 0;
	for (size_t i = 0; i < m->n; i++) {
		group *g = m->items[i];
		if (g->nf > 0) {
			m->items[j++] = g;
			continue;
		}
		for (int k = 0; k < NKEYS; k++)
			free(g->k[k]);
		free(g->d.v);
		free(g);
	}
	m->n = j;
	/* the slots index items that moved: rebuilt, or none */
	size_t ns = 32;
	while (ns < 2 * m->n)
		ns *= 2;
	free(m->slots);
	m->slots = NULL;
	m->nslots = ns;      /* gmap_grow doubles it: at most a quarter full */
	if (gmap_grow(m) != 0)
		m->oom = 1;
}

/* ---- the aggregate (agg) itself: its release and its trend buckets ---- */

void
mx_agg_release(agg *a)
{
	for (int s = 0; s < FP_STAGE_COUNT; s++)
		free(a->in_stage[s].v);
	free(a->to_won.v);
	free(a->delay.v);
	mx_gmap_release(&a->srccamp);
	mx_gmap_release(&a->reasons);
	mx_gmap_release(&a->reasons_by);
	mx_gmap_release(&a->teams);
	mx_gmap_release(&a->reps);
	mx_gmap_release(&a->rep_reasons);
	for (int i = 0; i < 3; i++)
		mx_gmap_release(&a->attr[i]);
	mx_gmap_release(&a->trend);
}

/* The start of ts's trend bucket: its UTC day, or the Monday of its week. */
static uint64_t
bucket_start(uint64_t ts, int bucket)
{
	uint64_t day = ts / DAY_NS;
	if (bucket == MX_BUCKET_WEEK)
		day -= (day + 3) % 7;    /* 1970-01-01 was a Thursday: back to Monday */
	return day * DAY_NS;
}

group *
mx_agg_trend(agg *a, const mx_query *q, uint64_t ts)
{
	uint64_t b = bucket_start(ts, q->bucket);
	if (a->last_trend == NULL || b != a->last_bucket) {
		char bk[24];
		snprintf(bk, sizeof bk, "%020" PRIu64, b);
		funnel_str key = { bk, strlen(bk) }, none = { "", 0 };
		a->last_trend = mx_gmap_get(&a->trend, key, none, none, none);
		a->last_bucket = b;
	}
	return a->last_trend;
}
