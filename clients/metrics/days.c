/*
 * clients/metrics/days.c - the view's per-day pre-aggregates (the days
 * table, metrics.h): written by mx_apply in the view's write transaction
 * (mx_days_fact, mx_days_contact, mx_days_lead), read by the reports
 * (mx_days_read_facts, mx_days_read_leads, report.h).  Pure like the rest
 * of the view: the keys and values depend on the records only, so a
 * rebuild writes the same bytes.
 *
 * Everything is summed per UTC day and per cell: the (source, campaign,
 * owner, team) labels a fact carries, or a lead has now.  A report's
 * filters keep the cells whose labels match, so every window of whole
 * days and every filter is a sum of records; the partial days at a
 * window's edges are read from the facts (aggregate.c).
 */
#include <stdlib.h>
#include <string.h>

#include "report.h"
#include "rulesfile.h"

/* Key types of the days table (metrics.h). */
enum {
	DK_NEXT = 'N', DK_CELL_BY_HASH = 'K', DK_CELL = 'k', DK_SUMS = 'S', DK_DUR = 'D',
	DK_REASON = 'R', DK_ATTR = 'A', DK_COHORT = 'C', DK_BALANCE = 'B',
};

/* Durations kept per chunk value: under LMDB's overflow size. */
#define CHUNK 128

/* Largest key: 'R' day cell ev reason (1 + 4 + 4 + 1 + 200), 'A' (1 + 4
 * + 4 + 1 + 200); a cell's bytes: 4 strings of at most 1 + 200. */
#define KEY_MAX 256
#define CELL_MAX (4 * (1 + MX_STR_MAX))

struct mx_days {
	uint8_t cell[CELL_MAX];       /* the cell being looked up */
	uint8_t rec[CELL_MAX + 64];   /* a 'K' entry being extended */
	uint64_t chunk[CHUNK];
	mx_rows *rows;                /* the batch's rows (the view's) */
	MDB_dbi dbi;                  /* the days table; 0: not looked up yet */
};

int
mx_days_new(mx_days **out, mx_rows *rows)
{
	*out = calloc(1, sizeof **out);
	if (*out == NULL)
		return FUNNEL_ENOMEM;
	(*out)->rows = rows;
	return FUNNEL_OK;
}

void
mx_days_destroy(mx_days **d)
{
	if (d == NULL)
		return;
	free(*d);
	*d = NULL;
}

static void
put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t
get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint32_t
mx_day_of(uint64_t ts)
{
	return (uint32_t)(ts / DAY_NS);
}

/* The cell's bytes: each label cut like every name of the view
 * (mx_clip), as u8 length + bytes. */
static size_t
cell_bytes(uint8_t *out, funnel_str source, funnel_str campaign, funnel_str owner,
           funnel_str team)
{
	funnel_str s[4] = { source, campaign, owner, team };
	size_t n = 0;
	for (int i = 0; i < 4; i++) {
		funnel_str c = mx_clip(s[i]);
		out[n++] = (uint8_t)c.len;
		if (c.len)
			memcpy(out + n, c.ptr, c.len);
		n += c.len;
	}
	return n;
}

static uint64_t
fnv64(const uint8_t *p, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return h;
}

/* funnel_service_get and _put of the days table, on the batch's rows
 * (mx_rows): *val is valid until the next put of the same key. */
static MDB_dbi
days_dbi(funnel_service *svc, mx_days *d)
{
	if (d->dbi == 0)
		d->dbi = funnel_service_table(svc, MX_T_DAYS);
	return d->dbi;
}

static int
days_get(funnel_service *svc, mx_days *d, const void *key, size_t klen, const void **val,
         size_t *vlen)
{
	return mx_rows_get(svc, d->rows, days_dbi(svc, d), key, klen, val, vlen);
}

static int
days_put(funnel_service *svc, mx_days *d, const void *key, size_t klen, const void *val,
         size_t vlen)
{
	return mx_rows_put(svc, d->rows, days_dbi(svc, d), key, klen, val, vlen);
}

/* The id of the cell d->cell[0..n), given one the first time it is seen
 * ('N' the next id; 'K' hash -> the ids and bytes of the cells with that
 * hash; 'k' id -> bytes). */
static int
cell_id(funnel_service *svc, mx_days *d, size_t n, uint32_t *id)
{
	uint8_t hk[9];
	const void *val;
	size_t vlen, have = 0;

	hk[0] = DK_CELL_BY_HASH;
	rf_put_be64(hk + 1, fnv64(d->cell, n));
	int rc = days_get(svc, d, hk, sizeof hk, &val, &vlen);
	if (rc == FUNNEL_OK) {
		const uint8_t *p = val, *end = p + vlen;
		while (end - p >= 6) {
			uint32_t cid;
			size_t len = (size_t)p[4] << 8 | p[5];
			memcpy(&cid, p, 4);
			if ((size_t)(end - p - 6) < len)
				return FUNNEL_EMALFORMED;
			if (len == n && memcmp(p + 6, d->cell, n) == 0) {
				*id = cid;
				return FUNNEL_OK;
			}
			p += 6 + len;
		}
		have = vlen;
		if (have + 6 + n > sizeof d->rec)
			return FUNNEL_ETOOBIG;     /* 2 cells of one hash fit; more never happen */
		memcpy(d->rec, val, have);
	} else if (rc != FUNNEL_ENOTFOUND) {
		return rc;
	}
	uint8_t nk = DK_NEXT;
	uint32_t next = 0;
	if ((rc = days_get(svc, d, &nk, 1, &val, &vlen)) == FUNNEL_OK && vlen == 4)
		memcpy(&next, val, 4);
	else if (rc != FUNNEL_OK && rc != FUNNEL_ENOTFOUND)
		return rc;
	*id = next++;
	memcpy(d->rec + have, id, 4);
	d->rec[have + 4] = (uint8_t)(n >> 8);
	d->rec[have + 5] = (uint8_t)n;
	memcpy(d->rec + have + 6, d->cell, n);
	uint8_t ck[5] = { DK_CELL };
	put_be32(ck + 1, *id);
	if ((rc = days_put(svc, d, &nk, 1, &next, 4)) == FUNNEL_OK &&
	    (rc = days_put(svc, d, hk, sizeof hk, d->rec, have + 6 + n)) == FUNNEL_OK)
		rc = days_put(svc, d, ck, sizeof ck, d->cell, n);
	return rc;
}

/* Add the n doubles of delta to the value at key (absent: zeros). */
static int
add_doubles(funnel_service *svc, mx_days *d, const uint8_t *key, size_t klen, const double *delta, int n)
{
	double x[FP_STAGE_COUNT > 15 ? FP_STAGE_COUNT : 15] = { 0 };
	const void *val;
	size_t vlen;
	int rc = days_get(svc, d, key, klen, &val, &vlen);
	if (rc == FUNNEL_OK && vlen == (size_t)n * sizeof(double))
		memcpy(x, val, vlen);
	else if (rc != FUNNEL_OK && rc != FUNNEL_ENOTFOUND)
		return rc;
	for (int i = 0; i < n; i++)
		x[i] += delta[i];
	return days_put(svc, d, key, klen, x, (size_t)n * sizeof(double));
}

static size_t
sums_key(uint8_t *k, uint32_t day, uint32_t cell)
{
	k[0] = DK_SUMS;
	put_be32(k + 1, day);
	put_be32(k + 5, cell);
	return 9;
}

static int
get_sums(funnel_service *svc, mx_days *d, const uint8_t *k, mx_day_sums *s)
{
	const void *val;
	size_t vlen;
	int rc = days_get(svc, d, k, 9, &val, &vlen);
	memset(s, 0, sizeof *s);
	if (rc == FUNNEL_OK && vlen == sizeof *s)
		memcpy(s, val, sizeof *s);
	else if (rc != FUNNEL_OK && rc != FUNNEL_ENOTFOUND)
		return rc;
	return FUNNEL_OK;
}

/* Append x to the durations of category cat of (day, cell), the n-th. */
static int
add_duration(funnel_service *svc, mx_days *d, uint32_t day, uint32_t cell, int cat, uint32_t n,
             uint64_t x)
{
	uint8_t k[14] = { DK_DUR };
	const void *val;
	size_t vlen = 0;
	put_be32(k + 1, day);
	put_be32(k + 5, cell);
	k[9] = (uint8_t)cat;
	put_be32(k + 10, n / CHUNK);
	size_t have = n % CHUNK;
	if (have) {
		int rc = days_get(svc, d, k, sizeof k, &val, &vlen);
		if (rc != FUNNEL_OK)
			return rc == FUNNEL_ENOTFOUND ? FUNNEL_EMALFORMED : rc;
		if (vlen != have * 8)
			return FUNNEL_EMALFORMED;
		memcpy(d->chunk, val, vlen);
	}
	d->chunk[have] = x;
	return days_put(svc, d, k, sizeof k, d->chunk, (have + 1) * 8);
}

static size_t
str_key(uint8_t *k, size_t n, funnel_str s)
{
	s = mx_clip(s);
	memcpy(k + n, s.ptr ? s.ptr : "", s.len);
	return n + s.len;
}

/* The credit of an opportunity's or a win's amount under each model, as
 * the reports' credit() gives it (METRICS.md, Attribution): per key of
 * the touches, the three models' (pipeline, revenue, opportunities, won)
 * in one value (a key first or last credits is one linear credits). */
static int
add_credit(funnel_service *svc, mx_days *d, uint32_t day, uint32_t cell, const mx_fact *f, int win)
{
	unsigned n = f->n_touches;
	for (int k = 0; k < 3 && n > 0; k++) {
		for (unsigned i = 0; i < n; i++) {
			funnel_str key = mx_touch_key(&f->touch[i], k);
			unsigned j;
			for (j = 0; j < i && !mx_str_eq(mx_touch_key(&f->touch[j], k), key); j++)
				;
			if (j < i)
				continue;    /* credited with its first touch */
			double delta[3 * 5] = { 0 };
			for (int model = 0; model < 3; model++) {
				unsigned lo = model == MX_MODEL_LAST ? n - 1 : 0;
				unsigned hi = model == MX_MODEL_FIRST ? 1 : n;
				unsigned m = 0, first = hi;
				for (j = lo; j < hi; j++) {
					if (mx_str_eq(mx_touch_key(&f->touch[j], k), key)) {
						m++;
						if (first == hi)
							first = j;
					}
				}
				if (m == 0)
					continue;
				delta[5 * model + (win ? AT_REVENUE : AT_PIPELINE)] =
					f->amount * (double)m / (double)(hi - lo);
				delta[5 * model + (win ? AT_WON : AT_OPPS)] = (double)m / (double)(hi - lo);
				delta[5 * model + 4] = 1;    /* a fact credited the key */
			}
			uint8_t ak[KEY_MAX] = { DK_ATTR };
			put_be32(ak + 1, day);
			put_be32(ak + 5, cell);
			ak[9] = (uint8_t)k;
			size_t kl = str_key(ak, 10, key);
			int rc = add_doubles(svc, d, ak, kl, delta, 15);
			if (rc != FUNNEL_OK)
				return rc;
		}
	}
	return FUNNEL_OK;
}

/* The sums row of the day of ts and of f's cell: its day, cell, key
 * and current value (zero if new). */
static int
fact_sums(funnel_service *svc, mx_days *d, uint64_t ts, const mx_fact *f, uint32_t *day,
          uint32_t *cell, uint8_t sk[9], mx_day_sums *s)
{
	*day = mx_day_of(ts);
	int rc = cell_id(svc, d, cell_bytes(d->cell, f->source, f->campaign, f->owner, f->team),
	                 cell);
	if (rc != FUNNEL_OK)
		return rc;
	sums_key(sk, *day, *cell);
	return get_sums(svc, d, sk, s);
}

int
mx_days_fact(funnel_service *svc, mx_days *d, uint64_t ts, const mx_fact *f)
{
	uint32_t day, cell;
	uint8_t sk[9];
	mx_day_sums s;
	int rc = fact_sums(svc, d, ts, f, &day, &cell, sk, &s);
	if (rc != FUNNEL_OK)
		return rc;
	int cat = -1;
	uint64_t x = 0;
	if (f->kind == MX_F_ASSIGN) {
		s.assigned++;     /* its contact comes later: mx_days_contact */
	} else if (f->kind == MX_F_SLA) {
		s.sla++;
	} else if (f->kind == MX_F_STAGE) {
		s.entries[f->to]++;
		s.by_ev[f->ev < FP_EV_COUNT ? f->ev : 0]++;
		if (f->ev == FP_EV_OPP_OPENED)
			s.pipeline += f->amount;
		else if (f->ev == FP_EV_DEAL_WON)
			s.revenue += f->amount;
		if (f->from != FP_STAGE_NONE) {
			cat = f->from;
			x = f->dur;
		}
	} else {
		return FUNNEL_OK;
	}
	/* the durations: time in the stage left, and capture to win */
	uint32_t n_cat = cat >= 0 ? s.nd[cat]++ : 0;
	uint32_t n_won = f->kind == MX_F_STAGE && f->ev == FP_EV_DEAL_WON ? s.nd[MX_DUR_TO_WON]++ : 0;
	if ((rc = days_put(svc, d, sk, sizeof sk, &s, sizeof s)) != FUNNEL_OK)
		return rc;
	if (cat >= 0 && (rc = add_duration(svc, d, day, cell, cat, n_cat, x)) != FUNNEL_OK)
		return rc;
	if (f->kind == MX_F_STAGE && f->ev == FP_EV_DEAL_WON &&
	    (rc = add_duration(svc, d, day, cell, MX_DUR_TO_WON, n_won, f->since_capture)) != FUNNEL_OK)
		return rc;
	if (f->kind != MX_F_STAGE)
		return FUNNEL_OK;
	if (mx_closed_loop(f->ev)) {
		uint8_t rk[KEY_MAX] = { DK_REASON };
		put_be32(rk + 1, day);
		put_be32(rk + 5, cell);
		rk[9] = f->ev;
		size_t kl = str_key(rk, 10, f->reason);
		double one = 1;
		if ((rc = add_doubles(svc, d, rk, kl, &one, 1)) != FUNNEL_OK)
			return rc;
	}
	if (f->ev == FP_EV_OPP_OPENED || f->ev == FP_EV_DEAL_WON)
		rc = add_credit(svc, d, day, cell, f, f->ev == FP_EV_DEAL_WON);
	return rc;
}

int
mx_days_contact(funnel_service *svc, mx_days *d, uint64_t ts, const mx_fact *f, uint64_t delay)
{
	uint32_t day, cell;
	uint8_t sk[9];
	mx_day_sums s;
	int rc = fact_sums(svc, d, ts, f, &day, &cell, sk, &s);
	if (rc != FUNNEL_OK)
		return rc;
	s.contacted++;
	s.within[0] += delay <= 300 * NS_PER_S;
	s.within[1] += delay <= 3600 * NS_PER_S;
	s.within[2] += delay <= 86400 * NS_PER_S;
	uint32_t n = s.nd[MX_DUR_DELAY]++;
	if ((rc = days_put(svc, d, sk, sizeof sk, &s, sizeof s)) != FUNNEL_OK)
		return rc;
	return add_duration(svc, d, day, cell, MX_DUR_DELAY, n, delay);
}

/* A lead row's part of the lead sums: its cell (first touch's source
 * and campaign, owner and team now), its stage, its first entries. */
typedef struct lead_part {
	funnel_str label[4];
	uint8_t stage;
	uint64_t first[FP_STAGE_COUNT];
	uint32_t cell;
	int has_cell;
} lead_part;

static void
lead_part_of(const mx_lead *l, lead_part *p)
{
	static const funnel_str none = { "", 0 };
	memset(p, 0, sizeof *p);
	p->stage = l->stage;
	memcpy(p->first, l->first_entry, sizeof p->first);
	p->label[0] = mx_clip(l->n_touches ? l->touch[0].source : none);
	p->label[1] = mx_clip(l->n_touches ? l->touch[0].campaign : none);
	p->label[2] = mx_clip(l->owner);
	p->label[3] = mx_clip(l->team);
}

static int
same_labels(const lead_part *a, const lead_part *b)
{
	for (int i = 0; i < 4; i++) {
		if (a->label[i].len != b->label[i].len ||
		    (a->label[i].len && memcmp(a->label[i].ptr, b->label[i].ptr, a->label[i].len)))
			return 0;
	}
	return 1;
}

static int
part_cell(funnel_service *svc, mx_days *d, lead_part *p)
{
	if (p->has_cell)
		return FUNNEL_OK;
	p->has_cell = 1;
	size_t n = cell_bytes(d->cell, p->label[0], p->label[1], p->label[2], p->label[3]);
	return cell_id(svc, d, n, &p->cell);
}

/* Cohort i of a part: whether the lead is in it (its first entry into
 * the pair's first stage), that entry's time, and what it adds:
 * (entered, went_on) of a pair, (entered, won, lost) of the win rate. */
static int
cohort_of(const lead_part *p, int i, uint64_t *t, double c[3])
{
	c[0] = c[1] = c[2] = 0;
	if (i < NPAIRS) {
		*t = p->first[mx_pairs[i].from];
		c[1] = p->first[mx_pairs[i].to] >= *t;
	} else {
		*t = p->first[FP_STAGE_SQL];
		if (p->first[FP_STAGE_WON] >= *t)
			c[1] = 1;
		else if (p->first[FP_STAGE_LOST] >= *t)
			c[2] = 1;
	}
	c[0] = 1;
	return *t != 0;
}

static int
cohort_add(funnel_service *svc, mx_days *d, uint64_t t, uint32_t cell, int i, const double c[3])
{
	uint8_t k[10] = { DK_COHORT };
	put_be32(k + 1, mx_day_of(t));
	put_be32(k + 5, cell);
	k[9] = (uint8_t)i;
	return add_doubles(svc, d, k, 10, c, 3);
}

int
mx_days_lead(funnel_service *svc, mx_days *d, const mx_lead *was, const mx_lead *now)
{
	lead_part a, b;
	uint8_t k[5] = { DK_BALANCE };
	double bal[FP_STAGE_COUNT] = { 0 };
	int rc;

	lead_part_of(now, &b);
	if (was == NULL) {
		memset(&a, 0, sizeof a);
	} else {
		lead_part_of(was, &a);
		if (a.stage == b.stage && memcmp(a.first, b.first, sizeof a.first) == 0 &&
		    same_labels(&a, &b))
			return FUNNEL_OK;     /* most records: nothing the sums see */
	}
	int moved = was == NULL || !same_labels(&a, &b);
	if ((rc = part_cell(svc, d, &b)) != FUNNEL_OK)
		return rc;
	if (was != NULL && !moved) {
		a.cell = b.cell;     /* the same labels: the same cell */
		a.has_cell = 1;
	} else if (was != NULL && (rc = part_cell(svc, d, &a)) != FUNNEL_OK) {
		return rc;
	}
	/* the balance: one write when the cell stays */
	put_be32(k + 1, b.cell);
	if (!moved) {
		bal[a.stage] -= 1;
		bal[b.stage] += 1;
		if (a.stage != b.stage && (rc = add_doubles(svc, d, k, 5, bal, FP_STAGE_COUNT)) != FUNNEL_OK)
			return rc;
	} else {
		if (was != NULL) {
			uint8_t ka[5] = { DK_BALANCE };
			double neg[FP_STAGE_COUNT] = { 0 };
			put_be32(ka + 1, a.cell);
			neg[a.stage] = -1;
			if ((rc = add_doubles(svc, d, ka, 5, neg, FP_STAGE_COUNT)) != FUNNEL_OK)
				return rc;
		}
		bal[b.stage] = 1;
		if ((rc = add_doubles(svc, d, k, 5, bal, FP_STAGE_COUNT)) != FUNNEL_OK)
			return rc;
	}
	/* the cohorts: only those that changed, one write when the day and
	 * cell stay */
	for (int i = 0; i < MX_COHORTS; i++) {
		uint64_t ta = 0, tb;
		double ca[3] = { 0 }, cb[3];
		int ina = was != NULL && cohort_of(&a, i, &ta, ca);
		int inb = cohort_of(&b, i, &tb, cb);
		if (ina && inb && !moved && mx_day_of(ta) == mx_day_of(tb)) {
			double dl[3] = { cb[0] - ca[0], cb[1] - ca[1], cb[2] - ca[2] };
			if ((dl[0] != 0 || dl[1] != 0 || dl[2] != 0) &&
			    (rc = cohort_add(svc, d, tb, b.cell, i, dl)) != FUNNEL_OK)
				return rc;
			continue;
		}
		if (ina) {
			double neg[3] = { -ca[0], -ca[1], -ca[2] };
			if ((rc = cohort_add(svc, d, ta, a.cell, i, neg)) != FUNNEL_OK)
				return rc;
		}
		if (inb && (rc = cohort_add(svc, d, tb, b.cell, i, cb)) != FUNNEL_OK)
			return rc;
	}
	return FUNNEL_OK;
}

/* ---- reading: the reports' sums of whole days ---- */

static funnel_str
get_str(const uint8_t **p, const uint8_t *end, int *bad)
{
	funnel_str s = { "", 0 };
	if (*p >= end || (size_t)(end - *p - 1) < **p) {
		*bad = 1;
		return s;
	}
	s.len = **p;
	s.ptr = (const char *)*p + 1;
	*p += 1 + s.len;
	return s;
}

int
mx_days_cells(MDB_txn *txn, const mx_tables *t, const mx_query *q, mx_cells *c)
{
	MDB_cursor *cur;
	MDB_val k = { 1, "k" }, v;
	int rc;
	memset(c, 0, sizeof *c);
	if (mdb_cursor_open(txn, t->days, &cur) != 0)
		return FUNNEL_ESTORAGE;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	     rc == 0 && k.mv_size == 5 && ((const uint8_t *)k.mv_data)[0] == DK_CELL;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		uint32_t id = get_be32((const uint8_t *)k.mv_data + 1);
		if (id >= c->cap) {
			size_t cap = c->cap ? c->cap * 2 : 256;
			while (cap <= id)
				cap *= 2;
			mx_cell *p = realloc(c->cell, cap * sizeof *p);
			if (p == NULL) {
				mdb_cursor_close(cur);
				return FUNNEL_ENOMEM;
			}
			memset(p + c->cap, 0, (cap - c->cap) * sizeof *p);
			c->cell = p;
			c->cap = cap;
		}
		const uint8_t *p = v.mv_data, *end = p + v.mv_size;
		int bad = 0;
		mx_cell *x = &c->cell[id];
		x->source = get_str(&p, end, &bad);
		x->campaign = get_str(&p, end, &bad);
		x->owner = get_str(&p, end, &bad);
		x->team = get_str(&p, end, &bad);
		x->match = !bad && mx_str_is(x->source, q->source) && mx_str_is(x->campaign, q->campaign) &&
		           mx_str_is(x->owner, q->rep) && mx_team_is(x->team, q->team);
		if (id >= c->n)
			c->n = id + 1;
	}
	mdb_cursor_close(cur);
	return rc == 0 || rc == MDB_NOTFOUND ? FUNNEL_OK : FUNNEL_ESTORAGE;
}

void
mx_days_cells_release(mx_cells *c)
{
	free(c->cell);
	memset(c, 0, sizeof *c);
}

static const mx_cell *
cell_at(const mx_cells *c, const uint8_t *be)
{
	uint32_t id = get_be32(be);
	return id < c->n && c->cell[id].match ? &c->cell[id] : NULL;
}

/* Walk the keys of type `type` whose day (at offset `at`, after `pre`
 * bytes of prefix) is in [lo, hi): fn(key, val) for each. */
typedef int (*walk_fn)(agg *a, const mx_query *q, const mx_cells *c, const uint8_t *k,
                       size_t klen, const void *v, size_t vlen);

static int
walk(MDB_txn *txn, const mx_tables *t, const uint8_t *pre, size_t npre, uint32_t lo,
     uint32_t hi, walk_fn fn, agg *a, const mx_query *q, const mx_cells *c)
{
	MDB_cursor *cur;
	uint8_t start[8];
	MDB_val k, v;
	int rc, err = 0;
	memcpy(start, pre, npre);
	put_be32(start + npre, lo);
	k.mv_size = npre + 4;
	k.mv_data = start;
	if (mdb_cursor_open(txn, t->days, &cur) != 0)
		return FUNNEL_ESTORAGE;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && !err;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		const uint8_t *kb = k.mv_data;
		if (k.mv_size < npre + 8 || memcmp(kb, pre, npre) != 0 || get_be32(kb + npre) >= hi)
			break;
		err = fn(a, q, c, kb, k.mv_size, v.mv_data, v.mv_size);
	}
	mdb_cursor_close(cur);
	if (err)
		return FUNNEL_ENOMEM;
	return rc == 0 || rc == MDB_NOTFOUND ? FUNNEL_OK : FUNNEL_ESTORAGE;
}

static const funnel_str none = { "", 0 };

static int
walk_sums(agg *a, const mx_query *q, const mx_cells *c, const uint8_t *k, size_t klen,
          const void *v, size_t vlen)
{
	const mx_cell *x = cell_at(c, k + 5);
	mx_day_sums s;
	(void)klen;
	if (x == NULL || vlen != sizeof s)
		return 0;
	memcpy(&s, v, sizeof s);
	double stage_facts = 0;
	for (int i = 0; i < FP_STAGE_COUNT; i++)
		stage_facts += s.entries[i];
	int wants_followup = mx_wants(q, MX_R_FOLLOWUP);
	group *g;
	if (wants_followup && s.assigned + s.sla > 0) {
		a->assigned += s.assigned;
		a->contacted += s.contacted;
		for (int i = 0; i < 3; i++)
			a->within[i] += s.within[i];
		a->sla += s.sla;
		for (int r = 0; r < 2; r++) {
			g = r == 0 ? mx_gmap_get(&a->teams, x->team, none, none, none)
			           : mx_gmap_get(&a->reps, x->owner, x->team, none, none);
			if (g == NULL)
				return -1;
			g->v[FU_ASSIGNED] += s.assigned;
			g->v[FU_CONTACTED] += s.contacted;
			g->v[FU_W5M] += s.within[0];
			g->v[FU_W1H] += s.within[1];
			g->v[FU_W24H] += s.within[2];
			g->v[FU_SLA] += s.sla;
			g->nf += s.assigned + s.sla;
		}
	}
	if (stage_facts == 0)
		return 0;
	if (wants_followup && !q->headline && (x->owner.len || x->team.len)) {
		if ((g = mx_gmap_get(&a->reps, x->owner, x->team, none, none)) == NULL)
			return -1;
		g->v[FU_ACCEPTED] += s.by_ev[FP_EV_ACCEPTED];
		g->v[FU_REJECTED] += s.by_ev[FP_EV_REJECTED];
		g->v[FU_PIPELINE] += s.pipeline;
		g->v[FU_OPPS] += s.by_ev[FP_EV_OPP_OPENED];
		g->v[FU_REVENUE] += s.revenue;
		g->v[FU_WON] += s.by_ev[FP_EV_DEAL_WON];
		g->nf += stage_facts;
	}
	for (int i = 0; i < FP_STAGE_COUNT; i++)
		a->entries[i] += s.entries[i];
	for (int i = 0; i < FP_EV_COUNT; i++)
		a->by_ev[i] += s.by_ev[i];
	a->pipeline += s.pipeline;
	a->revenue += s.revenue;
	if (mx_wants(q, MX_R_FUNNEL) || mx_wants(q, MX_R_CLOSED_LOOP)) {
		if ((g = mx_gmap_get(&a->srccamp, x->source, x->campaign, none, none)) == NULL)
			return -1;
		for (int i = 0; i < FP_STAGE_COUNT; i++)
			g->v[SC_ENTRIES + i] += s.entries[i];
		g->v[SC_ACCEPTED] += s.by_ev[FP_EV_ACCEPTED];
		g->v[SC_REJECTED] += s.by_ev[FP_EV_REJECTED];
		g->nf += stage_facts;
	}
	if (mx_wants(q, MX_R_TREND)) {
		if ((g = mx_agg_trend(a, q, (uint64_t)get_be32(k + 1) * DAY_NS)) == NULL)
			return -1;
		for (int i = 0; i < FP_STAGE_COUNT; i++)
			g->v[i] += s.entries[i];
		g->nf += stage_facts;
	}
	return 0;
}

static int
push_all(vec *d, const void *v, size_t n)
{
	const uint8_t *p = v;
	for (size_t i = 0; i < n; i++) {
		uint64_t x;
		memcpy(&x, p + 8 * i, 8);
		if (mx_vec_push(d, x) != 0)
			return -1;
	}
	return 0;
}

static int
walk_durations(agg *a, const mx_query *q, const mx_cells *c, const uint8_t *k, size_t klen,
               const void *v, size_t vlen)
{
	const mx_cell *x = cell_at(c, k + 5);
	if (x == NULL || klen != 14)
		return 0;
	int cat = k[9];
	size_t n = vlen / 8;
	if (cat < FP_STAGE_COUNT || cat == MX_DUR_TO_WON) {
		if (!mx_wants(q, MX_R_VELOCITY))
			return 0;
		return push_all(cat == MX_DUR_TO_WON ? &a->to_won : &a->in_stage[cat], v, n);
	}
	if (cat != MX_DUR_DELAY || !mx_wants(q, MX_R_FOLLOWUP))
		return 0;
	group *tg = mx_gmap_get(&a->teams, x->team, none, none, none);
	group *rg = mx_gmap_get(&a->reps, x->owner, x->team, none, none);
	if (tg == NULL || rg == NULL)
		return -1;
	return push_all(&a->delay, v, n) | push_all(&tg->d, v, n) | push_all(&rg->d, v, n);
}

static int
walk_reasons(agg *a, const mx_query *q, const mx_cells *c, const uint8_t *k, size_t klen,
             const void *v, size_t vlen)
{
	const mx_cell *x = cell_at(c, k + 5);
	double n;
	if (x == NULL || klen < 10 || vlen != 8)
		return 0;
	memcpy(&n, v, 8);
	funnel_str ev = { fp_evspec_get((fp_evtype)k[9])->name, 0 };
	funnel_str reason = { (const char *)k + 10, klen - 10 };
	group *g;
	ev.len = strlen(ev.ptr);
	if (mx_wants(q, MX_R_CLOSED_LOOP)) {
		if ((g = mx_gmap_get(&a->reasons, ev, reason, none, none)) == NULL)
			return -1;
		g->v[0] += n;
		g->nf += n;
		if ((g = mx_gmap_get(&a->reasons_by, ev, reason, x->source, x->campaign)) == NULL)
			return -1;
		g->v[0] += n;
		g->nf += n;
	}
	if (mx_wants(q, MX_R_FOLLOWUP) && !q->headline && (x->owner.len || x->team.len)) {
		if ((g = mx_gmap_get(&a->rep_reasons, x->owner, x->team, ev, reason)) == NULL)
			return -1;
		g->v[0] += n;
		g->nf += n;
	}
	return 0;
}

static int
walk_credit(agg *a, const mx_query *q, const mx_cells *c, const uint8_t *k, size_t klen,
            const void *v, size_t vlen)
{
	const mx_cell *x = cell_at(c, k + 5);
	double d[3 * 5];
	if (x == NULL || klen < 10 || k[9] > 2 || vlen != sizeof d)
		return 0;
	memcpy(d, v, sizeof d);
	const double *m = d + 5 * q->model;
	if (m[4] == 0)
		return 0;     /* a key this model never credited */
	funnel_str key = { (const char *)k + 10, klen - 10 };
	group *g = mx_gmap_get(&a->attr[k[9]], key, none, none, none);
	if (g == NULL)
		return -1;
	for (int i = 0; i < 4; i++)
		g->v[i] += m[i];
	g->nf += m[4];
	return 0;
}

int
mx_days_read_facts(MDB_txn *txn, const mx_tables *t, const mx_query *q, const mx_cells *c,
                   uint32_t lo, uint32_t hi, agg *a)
{
	uint8_t pre[2] = { DK_SUMS };
	int rc = walk(txn, t, pre, 1, lo, hi, walk_sums, a, q, c);
	if (rc == FUNNEL_OK && (mx_wants(q, MX_R_VELOCITY) || mx_wants(q, MX_R_FOLLOWUP))) {
		pre[0] = DK_DUR;
		rc = walk(txn, t, pre, 1, lo, hi, walk_durations, a, q, c);
	}
	if (rc == FUNNEL_OK && (mx_wants(q, MX_R_CLOSED_LOOP) ||
	                        (mx_wants(q, MX_R_FOLLOWUP) && !q->headline))) {
		pre[0] = DK_REASON;
		rc = walk(txn, t, pre, 1, lo, hi, walk_reasons, a, q, c);
	}
	if (rc == FUNNEL_OK && mx_wants(q, MX_R_ATTRIBUTION)) {
		pre[0] = DK_ATTR;
		rc = walk(txn, t, pre, 1, lo, hi, walk_credit, a, q, c);
	}
	return rc;
}

static int
walk_cohorts(agg *a, const mx_query *q, const mx_cells *c, const uint8_t *k, size_t klen,
             const void *v, size_t vlen)
{
	const mx_cell *x = cell_at(c, k + 5);
	double n[3];
	(void)q;
	if (x == NULL || klen != 10 || vlen != sizeof n || k[9] >= MX_COHORTS)
		return 0;
	memcpy(n, v, sizeof n);
	if (k[9] < NPAIRS) {
		a->cohort_in[k[9]] += n[0];
		a->cohort_on[k[9]] += n[1];
	} else {
		a->cohort_sql += n[0];
		a->cohort_won += n[1];
		a->cohort_lost += n[2];
	}
	return 0;
}

int
mx_days_read_leads(MDB_txn *txn, const mx_tables *t, const mx_query *q, const mx_cells *c,
                   uint32_t lo, uint32_t hi, agg *a)
{
	MDB_cursor *cur;
	uint8_t b = DK_BALANCE;
	MDB_val k = { 1, &b }, v;
	int rc;
	if (mdb_cursor_open(txn, t->days, &cur) != 0)
		return FUNNEL_ESTORAGE;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	     rc == 0 && k.mv_size == 5 && ((const uint8_t *)k.mv_data)[0] == DK_BALANCE;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		double n[FP_STAGE_COUNT];
		if (cell_at(c, (const uint8_t *)k.mv_data + 1) == NULL || v.mv_size != sizeof n)
			continue;
		memcpy(n, v.mv_data, sizeof n);
		for (int i = 0; i < FP_STAGE_COUNT; i++)
			a->balance[i] += n[i];
	}
	mdb_cursor_close(cur);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return FUNNEL_ESTORAGE;
	uint8_t pre[1] = { DK_COHORT };
	return lo < hi ? walk(txn, t, pre, 1, lo, hi, walk_cohorts, a, q, c) : FUNNEL_OK;
}
