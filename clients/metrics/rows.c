/*
 * clients/metrics/rows.c - the batch's rows (mx_rows, metrics.h): a
 * write-back copy of the view rows that mx_apply changes many times a
 * batch (the leads, the days table, the counters, the pickers' values).  A row is read from its table
 * the first time a batch asks for it, then read and changed in memory;
 * mx_rows_flush writes each changed row once, inside the batch's
 * transaction before its checkpoint (opts.before_commit), and
 * mx_rows_drop forgets them all when the batch is aborted
 * (opts.on_abort).  A row still changes record by record in the same
 * order, so the bytes written are those the row would have after
 * writing it at every record: the same for any batch size, so a view
 * built live equals its rebuild.
 */
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

/* LMDB's largest key is 511 bytes: every key fits. */
#define ROW_KEY_MAX 511

/* buf holds the key (klen bytes) then the value (vlen bytes): cap
 * bytes, malloc'd; it moves when a longer value is put. */
typedef struct row {
	uint8_t *buf;
	uint32_t cap, vlen;
	MDB_dbi dbi;
	uint16_t klen;
	uint8_t present;              /* 0: not in the table, not written */
	uint8_t dirty;                /* written in the batch: mx_rows_flush puts it */
} row;

/* row[0..n) are the batch's rows (the buffers of row[n..cap) are kept
 * for the next batch); slot[] finds them by (dbi, key): open
 * addressing, row index + 1, 0 empty; nslot a power of two >= 2 n. */
struct mx_rows {
	row *row;
	size_t n, cap;
	uint32_t *slot;
	size_t nslot;
};

int
mx_rows_new(mx_rows **out)
{
	*out = calloc(1, sizeof **out);
	return *out ? FUNNEL_OK : FUNNEL_ENOMEM;
}

void
mx_rows_destroy(mx_rows **pr)
{
	if (pr == NULL || *pr == NULL)
		return;
	for (size_t i = 0; i < (*pr)->cap; i++)
		free((*pr)->row[i].buf);
	free((*pr)->row);
	free((*pr)->slot);
	free(*pr);
	*pr = NULL;
}

static size_t
hash(MDB_dbi dbi, const uint8_t *key, size_t klen)
{
	uint64_t h = 1469598103934665603ull ^ dbi;
	for (size_t i = 0; i < klen; i++)
		h = (h ^ key[i]) * 1099511628211ull;
	return (size_t)(h ^ h >> 29);
}

/* The row of (dbi, key), or NULL with *at the empty slot for it. */
static row *
find(mx_rows *r, MDB_dbi dbi, const uint8_t *key, size_t klen, size_t *at)
{
	size_t mask = r->nslot - 1;
	for (size_t i = hash(dbi, key, klen) & mask;; i = (i + 1) & mask) {
		uint32_t s = r->slot[i];
		if (s == 0) {
			*at = i;
			return NULL;
		}
		row *w = &r->row[s - 1];
		if (w->klen == klen && w->dbi == dbi && memcmp(w->buf, key, klen) == 0)
			return w;
	}
}

/* Room for one more row. */
static int
grow(mx_rows *r)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 1024;
		row *p = realloc(r->row, cap * sizeof *p);
		if (p == NULL)
			return FUNNEL_ENOMEM;
		memset(p + r->cap, 0, (cap - r->cap) * sizeof *p);
		r->row = p;
		r->cap = cap;
	}
	if (2 * (r->n + 1) > r->nslot) {
		size_t nslot = r->nslot ? r->nslot * 2 : 4096;
		uint32_t *s = calloc(nslot, sizeof *s);
		if (s == NULL)
			return FUNNEL_ENOMEM;
		free(r->slot);
		r->slot = s;
		r->nslot = nslot;
		for (size_t j = 0; j < r->n; j++) {
			size_t at;
			find(r, r->row[j].dbi, r->row[j].buf, r->row[j].klen, &at);
			r->slot[at] = (uint32_t)(j + 1);
		}
	}
	return FUNNEL_OK;
}

/* Room for w's key and a value of vlen bytes (the key kept). */
static int
room(row *w, size_t klen, size_t vlen)
{
	if (klen + vlen > w->cap) {
		size_t cap = klen + vlen < 128 ? 128 : klen + vlen;
		uint8_t *p = realloc(w->buf, cap);
		if (p == NULL)
			return FUNNEL_ENOMEM;
		w->buf = p;
		w->cap = (uint32_t)cap;
	}
	return FUNNEL_OK;
}

static int
set(row *w, const void *val, size_t vlen)
{
	int rc = room(w, w->klen, vlen);
	if (rc != FUNNEL_OK)
		return rc;
	if (vlen)
		memmove(w->buf + w->klen, val, vlen);
	w->vlen = (uint32_t)vlen;
	return FUNNEL_OK;
}

/* The batch's row of (dbi, key), read from the table the first time. */
static int
get_row(funnel_service *svc, mx_rows *r, MDB_dbi dbi, const void *key, size_t klen, row **out)
{
	const void *val;
	size_t at, vlen;
	row *w;
	int rc;
	if (klen == 0 || klen > ROW_KEY_MAX)
		return FUNNEL_EINVAL;
	if ((rc = grow(r)) != FUNNEL_OK)
		return rc;
	if ((w = find(r, dbi, key, klen, &at)) != NULL) {
		*out = w;
		return FUNNEL_OK;
	}
	w = &r->row[r->n];
	if ((rc = room(w, klen, 0)) != FUNNEL_OK)
		return rc;
	memcpy(w->buf, key, klen);
	w->klen = (uint16_t)klen;
	w->dbi = dbi;
	w->dirty = w->present = 0;
	w->vlen = 0;
	rc = funnel_service_get(svc, dbi, key, klen, &val, &vlen);
	if (rc == FUNNEL_OK) {
		if ((rc = set(w, val, vlen)) != FUNNEL_OK)
			return rc;
		w->present = 1;
	} else if (rc != FUNNEL_ENOTFOUND) {
		return rc;
	}
	r->slot[at] = (uint32_t)(++r->n);
	*out = w;
	return FUNNEL_OK;
}

int
mx_rows_get(funnel_service *svc, mx_rows *r, MDB_dbi dbi, const void *key, size_t klen,
            const void **val, size_t *vlen)
{
	row *w;
	int rc = get_row(svc, r, dbi, key, klen, &w);
	if (rc != FUNNEL_OK)
		return rc;
	if (!w->present)
		return FUNNEL_ENOTFOUND;
	*val = w->buf + w->klen;
	*vlen = w->vlen;
	return FUNNEL_OK;
}

int
mx_rows_put(funnel_service *svc, mx_rows *r, MDB_dbi dbi, const void *key, size_t klen,
            const void *val, size_t vlen)
{
	row *w;
	int rc = get_row(svc, r, dbi, key, klen, &w);
	if (rc != FUNNEL_OK)
		return rc;
	if (w->present && w->vlen == vlen && (vlen == 0 || memcmp(w->buf + w->klen, val, vlen) == 0))
		return FUNNEL_OK;     /* the same bytes: nothing to write */
	if ((rc = set(w, val, vlen)) == FUNNEL_OK)
		w->present = w->dirty = 1;
	return rc;
}

void
mx_rows_drop(mx_rows *r)
{
	if (r->n == 0)
		return;
	r->n = 0;
	memset(r->slot, 0, r->nslot * sizeof *r->slot);
}

int
mx_rows_flush(funnel_service *svc, mx_rows *r)
{
	int rc = FUNNEL_OK;
	for (size_t i = 0; i < r->n && rc == FUNNEL_OK; i++) {
		const row *w = &r->row[i];
		if (w->dirty)
			rc = funnel_service_put(svc, w->dbi, w->buf, w->klen, w->buf + w->klen, w->vlen);
	}
	mx_rows_drop(r);
	return rc;
}
