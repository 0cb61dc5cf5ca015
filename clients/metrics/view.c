/*
 * clients/metrics/view.c - the metrics view: apply one record to the
 * leads, facts and counters tables (metrics.h).  Pure: time comes from
 * the records' event times only (funnel_record_event_time), and every effect goes through the runtime's
 * write transaction, so a rebuild writes the same bytes.
 */
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "funnel/log.h"
#include "metrics.h"
#include "mp.h"
#include "rulesfile.h"

struct mx_view {
	msgpack_sbuffer buf;      /* encoding scratch */
	msgpack_sbuffer key;      /* counter key scratch */
	msgpack_sbuffer row;      /* the lead's row being applied */
	msgpack_sbuffer old;      /* the lead's row before the record, for the days table */
	msgpack_sbuffer fact;     /* a fact copied for the days table */
	mx_rows *rows;            /* the batch's days and counters rows */
	mx_days *days;
	MDB_dbi counters;         /* 0: not looked up yet */
};

int
mx_view_new(mx_view **out)
{
	mx_view *v = calloc(1, sizeof *v);
	*out = v;
	if (v == NULL)
		return FUNNEL_ENOMEM;
	msgpack_sbuffer_init(&v->buf);
	msgpack_sbuffer_init(&v->key);
	msgpack_sbuffer_init(&v->row);
	msgpack_sbuffer_init(&v->old);
	msgpack_sbuffer_init(&v->fact);
	int rc = mx_rows_new(&v->rows);
	return rc == FUNNEL_OK ? mx_days_new(&v->days, v->rows) : rc;
}

void
mx_view_destroy(mx_view **pv)
{
	if (pv == NULL || *pv == NULL)
		return;
	msgpack_sbuffer_destroy(&(*pv)->buf);
	msgpack_sbuffer_destroy(&(*pv)->key);
	msgpack_sbuffer_destroy(&(*pv)->row);
	msgpack_sbuffer_destroy(&(*pv)->old);
	msgpack_sbuffer_destroy(&(*pv)->fact);
	mx_days_destroy(&(*pv)->days);
	mx_rows_destroy(&(*pv)->rows);
	free(*pv);
	*pv = NULL;
}

int
mx_view_flush(funnel_service *svc, void *ctx)
{
	mx_view *v = ctx;
	return mx_rows_flush(svc, v->rows);
}

void
mx_view_drop(funnel_service *svc, void *ctx)
{
	mx_view *v = ctx;
	(void)svc;
	mx_rows_drop(v->rows);
}

/* ---- encoding: fixed fields, then strings as u8 length + bytes ---- */

static void
put(msgpack_sbuffer *b, const void *p, size_t n)
{
	msgpack_sbuffer_write(b, p, n);
}

static void
put_u64(msgpack_sbuffer *b, uint64_t v)
{
	put(b, &v, 8);
}

static void
put_str(msgpack_sbuffer *b, funnel_str s)
{
	s = mx_clip(s);
	uint8_t n = (uint8_t)s.len;
	put(b, &n, 1);
	put(b, s.ptr, s.len);
}

typedef struct reader {
	const uint8_t *p, *end;
	int bad;
} reader;

static void
get(reader *r, void *out, size_t n)
{
	if (r->bad || (size_t)(r->end - r->p) < n) {
		r->bad = 1;
		memset(out, 0, n);
		return;
	}
	memcpy(out, r->p, n);
	r->p += n;
}

static funnel_str
get_str(reader *r)
{
	uint8_t n = 0;
	funnel_str s = { "", 0 };
	get(r, &n, 1);
	if (r->bad || (size_t)(r->end - r->p) < n) {
		r->bad = 1;
		return s;
	}
	s.ptr = (const char *)r->p;
	s.len = n;
	r->p += n;
	return s;
}

static void
put_touches(msgpack_sbuffer *b, const mx_touch *t, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		put_str(b, t[i].source);
		put_str(b, t[i].campaign);
		put_str(b, t[i].form);
	}
}

static void
get_touches(reader *r, mx_touch *t, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		t[i].source = get_str(r);
		t[i].campaign = get_str(r);
		t[i].form = get_str(r);
	}
}

static void
lead_encode(msgpack_sbuffer *b, const mx_lead *l)
{
	uint8_t hdr[4] = { l->stage, l->contacted, l->n_touches, l->opp_touches };
	b->size = 0;
	put(b, hdr, 4);
	put_u64(b, l->captured_ts);
	put_u64(b, l->entered_ts);
	for (int s = 0; s < FP_STAGE_COUNT; s++)
		put_u64(b, l->first_entry[s]);
	put_u64(b, l->assigned_ts);
	put_u64(b, l->assigned_seq);
	put_str(b, l->owner);
	put_str(b, l->team);
	put_touches(b, l->touch, l->n_touches);
	if (l->opp_touches == MX_MAX_TOUCHES)
		put_touches(b, &l->opp_last, 1);
	put_u64(b, l->last_ts);
}

int
mx_lead_decode(const void *buf, size_t len, mx_lead *l)
{
	reader r = { buf, (const uint8_t *)buf + len, 0 };
	uint8_t hdr[4];
	memset(l, 0, sizeof *l);
	get(&r, hdr, 4);
	l->stage = hdr[0];
	l->contacted = hdr[1];
	l->n_touches = hdr[2] > MX_MAX_TOUCHES ? MX_MAX_TOUCHES : hdr[2];
	l->opp_touches = hdr[3];
	get(&r, &l->captured_ts, 8);
	get(&r, &l->entered_ts, 8);
	for (int s = 0; s < FP_STAGE_COUNT; s++)
		get(&r, &l->first_entry[s], 8);
	get(&r, &l->assigned_ts, 8);
	get(&r, &l->assigned_seq, 8);
	l->owner = get_str(&r);
	l->team = get_str(&r);
	get_touches(&r, l->touch, l->n_touches);
	if (l->opp_touches > 0 && l->opp_touches <= l->n_touches)
		l->opp_last = l->touch[l->opp_touches - 1];
	/* a row written before opp_last was kept ends here: the slot's touch
	 * is the best it knows (a rebuild credits the right one) */
	if (l->opp_touches == MX_MAX_TOUCHES && !r.bad && r.p < r.end)
		get_touches(&r, &l->opp_last, 1);
	/* a row written before last_ts was kept ends here: the latest time
	 * it holds stands in for it */
	if (!r.bad && r.end - r.p >= 8) {
		get(&r, &l->last_ts, 8);
	} else {
		l->last_ts = l->entered_ts > l->captured_ts ? l->entered_ts : l->captured_ts;
		if (l->assigned_ts > l->last_ts)
			l->last_ts = l->assigned_ts;
	}
	return r.bad || l->stage >= FP_STAGE_COUNT ? FUNNEL_EMALFORMED : FUNNEL_OK;
}

static void
fact_encode(msgpack_sbuffer *b, const mx_fact *f)
{
	uint8_t hdr[5] = { f->kind, f->ev, f->from, f->to, f->n_touches };
	b->size = 0;
	put(b, hdr, 5);
	put_u64(b, f->dur);
	put_u64(b, f->since_capture);
	put_u64(b, f->contact_delay);
	put(b, &f->amount, 8);
	put_str(b, f->source);
	put_str(b, f->campaign);
	put_str(b, f->reason);
	put_str(b, f->owner);
	put_str(b, f->team);
	put_touches(b, f->touch, f->n_touches);
}

int
mx_fact_decode(const void *buf, size_t len, mx_fact *f)
{
	reader r = { buf, (const uint8_t *)buf + len, 0 };
	uint8_t hdr[5];
	memset(f, 0, sizeof *f);
	get(&r, hdr, 5);
	f->kind = hdr[0];
	f->ev = hdr[1];
	f->from = hdr[2];
	f->to = hdr[3];
	f->n_touches = hdr[4] > MX_MAX_TOUCHES ? MX_MAX_TOUCHES : hdr[4];
	get(&r, &f->dur, 8);
	get(&r, &f->since_capture, 8);
	get(&r, &f->contact_delay, 8);
	get(&r, &f->amount, 8);
	f->source = get_str(&r);
	f->campaign = get_str(&r);
	f->reason = get_str(&r);
	f->owner = get_str(&r);
	f->team = get_str(&r);
	get_touches(&r, f->touch, f->n_touches);
	return r.bad || f->from >= FP_STAGE_COUNT || f->to >= FP_STAGE_COUNT ? FUNNEL_EMALFORMED
	                                                                       : FUNNEL_OK;
}

/* ---- tables ---- */

static void
fact_key(uint8_t key[16], uint64_t ts, uint64_t seq)
{
	rf_put_be64(key, ts);
	rf_put_be64(key + 8, seq);
}

static int
put_fact(funnel_service *svc, mx_view *v, uint64_t ts, uint64_t seq, const mx_fact *f)
{
	uint8_t key[16];
	fact_key(key, ts, seq);
	fact_encode(&v->buf, f);
	int rc = funnel_service_put(svc, funnel_service_table(svc, MX_T_FACTS), key, 16, v->buf.data,
	                            v->buf.size);
	if (rc != FUNNEL_OK)
		return rc;
	/* the day's sums: f's strings point into the record and the row
	 * being applied (v->row), never into the tables, so they stay
	 * valid across the writes (mx_days_fact clips them as encoding
	 * does) */
	return mx_days_fact(svc, v->days, ts, f);
}

/* Add delta to counter `name` with label values (NULL-terminated list
 * of funnel_str pointers). */
static int
bump(funnel_service *svc, mx_view *v, const char *name, double delta, const funnel_str *l1,
     const funnel_str *l2)
{
	const void *val;
	size_t vlen;
	double x = 0;
	char zero = 0;

	if (v->counters == 0)
		v->counters = funnel_service_table(svc, MX_T_COUNTERS);

	v->key.size = 0;
	put(&v->key, name, strlen(name));
	const funnel_str *labels[2] = { l1, l2 };
	for (int i = 0; i < 2 && labels[i]; i++) {
		funnel_str s = mx_clip(*labels[i]);
		put(&v->key, &zero, 1);
		put(&v->key, s.ptr, s.len);
	}
	/* on the batch's rows: one write per counter and batch */
	int rc = mx_rows_get(svc, v->rows, v->counters, v->key.data, v->key.size, &val, &vlen);
	if (rc == FUNNEL_OK && vlen == 8)
		memcpy(&x, val, 8);
	else if (rc != FUNNEL_OK && rc != FUNNEL_ENOTFOUND)
		return rc;
	x += delta;
	return mx_rows_put(svc, v->rows, v->counters, v->key.data, v->key.size, &x, 8);
}

static funnel_str
cstr(const char *s)
{
	funnel_str f = { s, strlen(s) };
	return f;
}

static funnel_str
data_str(const funnel_record *rec, const char *key)
{
	funnel_str s = { "", 0 };
	if (rec->data == NULL || mp_get_str(rec->data, key, &s, NULL) != FUNNEL_OK) {
		s.ptr = "";
		s.len = 0;
	}
	return s;
}

/* A lead.captured: a new touch.  Past MX_MAX_TOUCHES the latest one
 * replaces the last kept. */
static void
add_touch(mx_lead *l, const funnel_record *rec)
{
	unsigned i = l->n_touches < MX_MAX_TOUCHES ? l->n_touches++ : MX_MAX_TOUCHES - 1;
	l->touch[i].source = data_str(rec, "source");
	l->touch[i].campaign = data_str(rec, "campaign");
	l->touch[i].form = data_str(rec, "form");
}

/* Which events the view reads at all (the others leave it unchanged). */
static int
counts(fp_evtype t)
{
	switch (t) {
	case FP_EV_CAPTURED: case FP_EV_QUALIFIED: case FP_EV_ASSIGNED: case FP_EV_CONTACTED:
	case FP_EV_ACCEPTED: case FP_EV_REJECTED: case FP_EV_RECYCLED: case FP_EV_DISQUALIFIED:
	case FP_EV_OPP_OPENED: case FP_EV_DEAL_WON: case FP_EV_DEAL_LOST: case FP_EV_SLA_BREACHED:
	case FP_EV_ERASED:
		return 1;
	default:
		return 0;
	}
}

/* ---- the index table (metrics.h): drill-down lists, picker values,
 * the rules in force ---- */

/* The entry of a fact in the lead lists: kind || be64 et || be64 seq ->
 * lead id (the fact has the same key: the event time et and seq). */
static int
index_entry(funnel_service *svc, uint8_t kind, const funnel_record *rec, uint64_t et)
{
	uint8_t key[MX_IX_KEY];
	mx_index_key(key, kind, et, rec->seq);
	funnel_str lead = mx_clip(rec->lead);
	return funnel_service_put(svc, funnel_service_table(svc, MX_T_INDEX), key, sizeof key,
	                          lead.ptr ? lead.ptr : "", lead.len);
}

/* A value the pickers offer: 'V' || kind || name -> nothing.  Written
 * again whenever seen; the put of an equal value changes no byte. */
static int
index_value(funnel_service *svc, mx_view *v, uint8_t kind, funnel_str name)
{
	name = mx_clip(name);
	if (name.len == 0)
		return FUNNEL_OK;    /* no value to pick: the filters take 1..200 bytes */
	v->key.size = 0;
	uint8_t hdr[2] = { MX_IX_VALUE, kind };
	put(&v->key, hdr, 2);
	put(&v->key, name.ptr, name.len);
	/* on the batch's rows: an equal put writes nothing (mx_rows_put) */
	return mx_rows_put(svc, v->rows, funnel_service_table(svc, MX_T_INDEX), v->key.data,
	                   v->key.size, "", 0);
}

/* rules.changed: 'R' || service -> be64 seq, be64 ts, version, hash
 * (put_str each): the last rules each service recorded. */
static int
rules_changed(funnel_service *svc, mx_view *v, const funnel_record *rec)
{
	funnel_str service = mx_clip(data_str(rec, "service"));
	v->key.size = 0;
	uint8_t hdr = MX_IX_RULES, be[8];
	put(&v->key, &hdr, 1);
	put(&v->key, service.ptr, service.len);
	v->buf.size = 0;
	rf_put_be64(be, rec->seq);
	put(&v->buf, be, 8);
	rf_put_be64(be, rec->ts);
	put(&v->buf, be, 8);
	put_str(&v->buf, data_str(rec, "version"));
	put_str(&v->buf, data_str(rec, "hash"));
	return funnel_service_put(svc, funnel_service_table(svc, MX_T_INDEX), v->key.data,
	                          v->key.size, v->buf.data, v->buf.size);
}

void
mx_index_key(uint8_t key[MX_IX_KEY], uint8_t kind, uint64_t ts, uint64_t seq)
{
	key[0] = MX_IX_LIST;
	key[1] = kind;
	rf_put_be64(key + 2, ts);
	rf_put_be64(key + 10, seq);
}

int
mx_rules_decode(const void *buf, size_t len, uint64_t *seq, uint64_t *ts, funnel_str *version,
                funnel_str *hash)
{
	reader r = { buf, (const uint8_t *)buf + len, 0 };
	uint8_t be[8];
	get(&r, be, 8);
	*seq = rf_get_be64(be);
	get(&r, be, 8);
	*ts = rf_get_be64(be);
	*version = get_str(&r);
	*hash = get_str(&r);
	return r.bad ? FUNNEL_EMALFORMED : FUNNEL_OK;
}

/* The stage change of one record: its fact and counters. */
static int
stage_change(funnel_service *svc, mx_view *v, const funnel_record *rec, uint64_t et,
             fp_evtype ev, mx_lead *l, fp_stage to)
{
	fp_stage from = l->stage;
	mx_fact f = { .kind = MX_F_STAGE, .ev = (uint8_t)ev, .from = (uint8_t)from,
	              .to = (uint8_t)to };
	funnel_str stage_from = cstr(fp_stage_name(from)), stage_to = cstr(fp_stage_name(to));
	int rc = FUNNEL_OK;

	f.dur = from != FP_STAGE_NONE && et > l->entered_ts ? et - l->entered_ts : 0;
	f.since_capture = et > l->captured_ts ? et - l->captured_ts : 0;
	f.reason = data_str(rec, "reason");
	if (l->n_touches > 0) {
		f.source = l->touch[0].source;
		f.campaign = l->touch[0].campaign;
	}
	/* the lead's current assignment: whose stage change it was (the rep
	 * table's acceptance, rejection, pipeline and won) */
	f.owner = l->owner;
	f.team = l->team;
	if (ev == FP_EV_OPP_OPENED || ev == FP_EV_DEAL_WON) {
		if (rec->data == NULL || mp_get_f64(rec->data, "amount", &f.amount, NULL) != FUNNEL_OK)
			f.amount = 0;
		if (ev == FP_EV_OPP_OPENED) {
			l->opp_touches = l->n_touches;
			if (l->n_touches > 0)
				l->opp_last = l->touch[l->n_touches - 1];
		}
		/* the touches of the opportunity: the first ones never move;
		 * the last may have been replaced by a later re-inquiry since
		 * (the slot past MX_MAX_TOUCHES - 1 takes the latest), so it
		 * comes from opp_last */
		f.n_touches = l->opp_touches <= l->n_touches ? l->opp_touches : l->n_touches;
		memcpy(f.touch, l->touch, f.n_touches * sizeof f.touch[0]);
		if (f.n_touches > 0 && f.n_touches == l->opp_touches)
			f.touch[f.n_touches - 1] = l->opp_last;
	}
	if ((rc = put_fact(svc, v, et, rec->seq, &f)) != FUNNEL_OK)
		return rc;
	if ((rc = index_entry(svc, (uint8_t)to, rec, et)) != FUNNEL_OK)
		return rc;
	l->stage = (uint8_t)to;
	l->entered_ts = et;
	if (l->first_entry[to] == 0)
		l->first_entry[to] = et;

	if (from != FP_STAGE_NONE)
		rc = bump(svc, v, "funnel_leads", -1, &stage_from, NULL);
	if (rc == FUNNEL_OK)
		rc = bump(svc, v, "funnel_leads", 1, &stage_to, NULL);
	if (rc == FUNNEL_OK)
		rc = bump(svc, v, "funnel_stage_entries_total", 1, &stage_to, &f.source);
	if (rc == FUNNEL_OK && mx_closed_loop(ev)) {
		funnel_str evname = cstr(fp_evspec_get(ev)->name);
		rc = bump(svc, v, "funnel_closed_loop_total", 1, &evname, &f.reason);
	}
	if (rc == FUNNEL_OK && ev == FP_EV_OPP_OPENED)
		rc = bump(svc, v, "funnel_pipeline_amount_total", f.amount, &f.source, NULL);
	if (rc == FUNNEL_OK && ev == FP_EV_DEAL_WON)
		rc = bump(svc, v, "funnel_revenue_amount_total", f.amount, &f.source, NULL);
	return rc;
}

static int
assignment(funnel_service *svc, mx_view *v, const funnel_record *rec, uint64_t et, mx_lead *l)
{
	mx_fact f = { .kind = MX_F_ASSIGN, .ev = FP_EV_ASSIGNED, .from = l->stage, .to = l->stage };
	l->owner = data_str(rec, "owner");
	l->team = data_str(rec, "team");
	l->assigned_ts = et;
	l->assigned_seq = rec->seq;
	l->contacted = 0;
	f.owner = l->owner;
	f.team = l->team;
	if (l->n_touches > 0) {
		f.source = l->touch[0].source;
		f.campaign = l->touch[0].campaign;
	}
	int rc = put_fact(svc, v, et, rec->seq, &f);
	if (rc == FUNNEL_OK)
		rc = index_entry(svc, MX_IX_ASSIGNED, rec, et);
	if (rc == FUNNEL_OK && f.team.len)
		rc = index_value(svc, v, MX_VAL_TEAM, f.team);
	if (rc == FUNNEL_OK && f.owner.len)
		rc = index_value(svc, v, MX_VAL_REP, f.owner);
	return rc == FUNNEL_OK ? bump(svc, v, "funnel_assignments_total", 1, &f.team, NULL) : rc;
}

/* The first contact after an assignment completes that assignment's
 * fact with the delay. */
static int
first_contact(funnel_service *svc, mx_view *v, uint64_t et, mx_lead *l)
{
	MDB_dbi t = funnel_service_table(svc, MX_T_FACTS);
	uint8_t key[16];
	const void *val;
	size_t vlen;
	mx_fact f;

	if (l->assigned_seq == 0 || l->contacted)
		return FUNNEL_OK;
	l->contacted = 1;
	fact_key(key, l->assigned_ts, l->assigned_seq);
	int rc = funnel_service_get(svc, t, key, 16, &val, &vlen);
	if (rc == FUNNEL_ENOTFOUND)
		return FUNNEL_OK;
	if (rc != FUNNEL_OK)
		return rc;
	if (mx_fact_decode(val, vlen, &f) != FUNNEL_OK)
		return FUNNEL_EMALFORMED;
	uint64_t delay = et - l->assigned_ts;     /* et >= assigned_ts: the lead's times never go back */
	f.contact_delay = delay + 1;
	/* f's strings point into val, which the put below may move: encode first */
	fact_encode(&v->buf, &f);
	fact_encode(&v->fact, &f);
	mx_fact c;
	if (mx_fact_decode(v->fact.data, v->fact.size, &c) != FUNNEL_OK)
		return FUNNEL_EINTERNAL;
	char teambuf[256];      /* a decoded string is at most 255 bytes */
	funnel_str team = { teambuf, f.team.len };
	memcpy(teambuf, f.team.ptr, f.team.len);
	if ((rc = funnel_service_put(svc, t, key, 16, v->buf.data, v->buf.size)) != FUNNEL_OK)
		return rc;
	if ((rc = mx_days_contact(svc, v->days, l->assigned_ts, &c, delay)) != FUNNEL_OK)
		return rc;
	rc = bump(svc, v, "funnel_first_contacts_total", 1, &team, NULL);
	static const struct { uint64_t ns; const char *name; } within[] = {
		{ 300000000000ull, "5m" }, { 3600000000000ull, "1h" }, { 86400000000000ull, "24h" },
	};
	for (int i = 0; i < 3 && rc == FUNNEL_OK; i++) {
		if (delay <= within[i].ns) {
			funnel_str w = cstr(within[i].name);
			rc = bump(svc, v, "funnel_contacted_within_total", 1, &team, &w);
		}
	}
	return rc;
}

static int
sla_breach(funnel_service *svc, mx_view *v, const funnel_record *rec, uint64_t et,
           const mx_lead *l)
{
	mx_fact f = { .kind = MX_F_SLA, .ev = FP_EV_SLA_BREACHED, .from = l->stage, .to = l->stage };
	f.owner = data_str(rec, "owner");
	f.team = data_str(rec, "team");
	if (f.owner.len == 0)
		f.owner = l->owner;
	if (f.team.len == 0)
		f.team = l->team;
	if (l->n_touches > 0) {
		f.source = l->touch[0].source;
		f.campaign = l->touch[0].campaign;
	}
	int rc = put_fact(svc, v, et, rec->seq, &f);
	if (rc == FUNNEL_OK)
		rc = index_entry(svc, MX_IX_SLA, rec, et);
	return rc == FUNNEL_OK ? bump(svc, v, "funnel_sla_breaches_total", 1, &f.team, &f.owner) : rc;
}

/* The row of an erased lead captured again, kept under "lead\0be64 seq"
 * (seq of the new capture; a lead id holds no control byte, so the key
 * is no lead's).  The row is encoded first: l's strings point into the
 * table, which the put may move. */
static int
archive(funnel_service *svc, mx_view *v, const funnel_record *rec, const mx_lead *l)
{
	lead_encode(&v->buf, l);
	v->key.size = 0;
	put(&v->key, rec->lead.ptr, rec->lead.len);
	uint8_t sep = 0, seq[8];
	rf_put_be64(seq, rec->seq);
	put(&v->key, &sep, 1);
	put(&v->key, seq, 8);
	return mx_rows_put(svc, v->rows, funnel_service_table(svc, MX_T_LEADS), v->key.data,
	                   v->key.size, v->buf.data, v->buf.size);
}

int
mx_apply(funnel_service *svc, const funnel_record *rec, void *ctx)
{
	mx_view *v = ctx;
	MDB_dbi leads = funnel_service_table(svc, MX_T_LEADS);
	const void *val;
	size_t vlen;
	mx_lead l, was;
	int rc, had = 0;

	/* who sends what: only a funneld with --access stamps a producer, so a
	 * view of a log without one is what it always was */
	if (rec->producer.ptr != NULL &&
	    (rc = bump(svc, v, "funnel_events_by_producer_total", 1, &rec->producer, &rec->type)) != FUNNEL_OK)
		return rc;
	fp_evtype ev = fp_evspec_lookup(rec->type.ptr, rec->type.len)->type;
	if (ev == FP_EV_RULES_CHANGED)
		return rules_changed(svc, v, rec);
	if (rec->lead.ptr == NULL || rec->lead.len == 0)
		return FUNNEL_OK;
	if (!counts(ev))
		return FUNNEL_OK;
	/* the leads table on the batch's rows: a lead's row is read and
	 * written once per batch */
	rc = mx_rows_get(svc, v->rows, leads, rec->lead.ptr, rec->lead.len, &val, &vlen);
	if (rc == FUNNEL_OK) {
		if (mx_lead_decode(val, vlen, &l) != FUNNEL_OK) {
			funnel_log(FUNNEL_LOG_ERROR, "metrics: the view's row of lead %.*s does not "
			           "decode; rebuild the view", (int)rec->lead.len, rec->lead.ptr);
			return FUNNEL_EMALFORMED;
		}
		/* the row as it was, for the days table's lead sums */
		lead_encode(&v->old, &l);
		had = 1;
	} else if (rc == FUNNEL_ENOTFOUND) {
		if (ev != FP_EV_CAPTURED)
			return FUNNEL_OK;    /* a lead the funnel never captured */
		memset(&l, 0, sizeof l);
	} else {
		return rc;
	}
	/* The row's strings point into val: put() may invalidate it, so the
	 * row is encoded before anything is written. */
	fp_stage to = (fp_stage)l.stage;
	if (rec->stage.ptr) {
		int s = fp_stage_parse(rec->stage.ptr, rec->stage.len);
		if (s >= 0)
			to = (fp_stage)s;
	}
	if (ev == FP_EV_CAPTURED && (l.stage == FP_STAGE_NONE || l.stage == FP_STAGE_ERASED)) {
		/* a new lead, or one erased and captured again: a new lead too
		 * (METRICS.md, Erasure).  The erased one keeps its row, moved
		 * aside, so it stays in the balance, the erased gauge and its
		 * cohorts; the new one starts from no stage. */
		if (l.stage == FP_STAGE_ERASED && (rc = archive(svc, v, rec, &l)) != FUNNEL_OK)
			return rc;
		if (l.stage == FP_STAGE_ERASED)
			had = 0;     /* the row kept aside keeps its part of the sums */
		memset(&l, 0, sizeof l);
		l.captured_ts = funnel_record_event_time(rec);
		l.entered_ts = l.captured_ts;
	}
	/* the record's time for this lead: its event time, never before the
	 * lead's previous one (METRICS.md, Out of order) */
	const uint64_t et = funnel_record_event_time_after(rec, l.last_ts);
	l.last_ts = et;
	if (ev == FP_EV_CAPTURED)
		add_touch(&l, rec);
	if (ev == FP_EV_ERASED) {
		/* the person asked to be forgotten: the row keeps its timings and
		 * stage, not how they reached us or who worked them.  The first
		 * touch's source and campaign stay (channel names, not personal
		 * data, as on the facts): the source/campaign filters match them,
		 * so an erasure changes no filtered balance or cohort. */
		mx_touch first = l.touch[0];
		memset(l.touch, 0, sizeof l.touch);
		if (l.n_touches > 0) {
			l.touch[0].source = first.source;
			l.touch[0].campaign = first.campaign;
			l.n_touches = 1;
		}
		l.opp_touches = 0;
		memset(&l.opp_last, 0, sizeof l.opp_last);
		l.owner.len = l.team.len = 0;
	}

	/* Copy the row's strings out of val before any write moves it. */
	lead_encode(&v->row, &l);
	if (mx_lead_decode(v->row.data, v->row.size, &l) != FUNNEL_OK)
		return FUNNEL_EINTERNAL;
	/* assignment() points the row's owner/team at the record; every
	 * string now lives in row or in the record, both stable below. */
	if (to != l.stage)
		rc = stage_change(svc, v, rec, et, ev, &l, to);
	else
		rc = FUNNEL_OK;
	if (rc == FUNNEL_OK && ev == FP_EV_ASSIGNED)
		rc = assignment(svc, v, rec, et, &l);
	else if (rc == FUNNEL_OK && ev == FP_EV_CONTACTED)
		rc = first_contact(svc, v, et, &l);
	else if (rc == FUNNEL_OK && ev == FP_EV_SLA_BREACHED)
		rc = sla_breach(svc, v, rec, et, &l);
	if (rc == FUNNEL_OK) {
		lead_encode(&v->buf, &l);
		rc = mx_rows_put(svc, v->rows, leads, rec->lead.ptr, rec->lead.len, v->buf.data,
		                 v->buf.size);
	}
	if (rc == FUNNEL_OK && had && mx_lead_decode(v->old.data, v->old.size, &was) != FUNNEL_OK)
		rc = FUNNEL_EINTERNAL;
	if (rc == FUNNEL_OK)
		rc = mx_days_lead(svc, v->days, had ? &was : NULL, &l);
	/* the pickers' values come from the record: written after the row,
	 * whose strings the puts above no longer need */
	if (rc == FUNNEL_OK && ev == FP_EV_CAPTURED &&
	    (rc = index_value(svc, v, MX_VAL_SOURCE, data_str(rec, "source"))) == FUNNEL_OK)
		rc = index_value(svc, v, MX_VAL_CAMPAIGN, data_str(rec, "campaign"));
	return rc;
}
