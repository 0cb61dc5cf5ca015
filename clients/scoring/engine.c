/*
 * clients/scoring/engine.c - the scoring engine: conditions evaluated on
 * a lead's fields and activities, scores with decay, and sc_apply, which
 * applies one record to a lead's state.  The contract is rules.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <sodium.h>
#include <yaml.h>

#include "bytes.h"
#include "funnel/error.h"
#include "mp.h"
#include "model.h"
#include "compiled.h"
#include "rules.h"
#include "rulesfile.h"
#include "seal.h"

/* v is the field's value, NULL when the lead or activity has none.  A
 * `matches` test that PCRE2 stops (a limit, no memory) does not hold and
 * adds one to *limited (limited may be NULL). */
static int
cond_holds(const sc_rules *r, const sc_lead *st, const sc_cond *c, const char *v,
           uint32_t *limited)
{
	double num = 0;
	if (v == NULL)
		return 0;
	int isnum = c->wants_num && rf_parse_number(v, &num) == 0;
	if (c->has_eq && !rf_value_eq(&c->eq, v, isnum, num))
		return 0;
	if (c->n_in > 0 && !rf_value_in(c->in, c->n_in, v, isnum, num))
		return 0;
	if (c->num_ops != 0) {
		if (!isnum)
			return 0;
		if (((c->num_ops & SC_AT_LEAST) && !(num >= c->at_least)) ||
		    ((c->num_ops & SC_AT_MOST) && !(num <= c->at_most)) ||
		    ((c->num_ops & SC_ABOVE) && !(num > c->above)) ||
		    ((c->num_ops & SC_BELOW) && !(num < c->below)))
			return 0;
	}
	if (c->re == NULL)
		return 1;
	int m = pcre2_match(c->re, (PCRE2_SPTR)v, PCRE2_ZERO_TERMINATED, 0, 0, st->md, r->mctx);
	if (m >= 0)
		return 1;
	if (m != PCRE2_ERROR_NOMATCH && limited != NULL && *limited < UINT32_MAX)
		(*limited)++;
	return 0;
}

/* The value a condition reads: a lead field, or a key of activity data. */
static const char *
cond_value(const sc_cond *c, const sc_lead *st, const msgpack_object *data, char *buf)
{
	if (c->slot >= 0)
		return st->fields[c->slot].set ? st->fields[c->slot].text : NULL;
	const msgpack_object *o = mp_find(data, c->field);
	return o != NULL && rf_value_text(o, buf, SC_MAX_VALUE_BYTES + 1) == 1 ? buf : NULL;
}

/* Rule ru of r holds on the lead's fields (data NULL) or on an activity's
 * data; limited as for cond_holds. */
static int
rule_holds(const sc_rules *r, const sc_rule *ru, const sc_lead *st, const msgpack_object *data,
           uint32_t *limited)
{
	char buf[SC_MAX_VALUE_BYTES + 1];
	for (size_t i = 0; i < ru->n_all; i++) {
		if (!cond_holds(r, st, &ru->all[i], cond_value(&ru->all[i], st, data, buf), limited))
			return 0;
	}
	if (ru->n_any == 0)
		return 1;
	for (size_t i = 0; i < ru->n_any; i++) {
		if (cond_holds(r, st, &ru->any[i], cond_value(&ru->any[i], st, data, buf), limited))
			return 1;
	}
	return 0;
}

static int
rule_on(const sc_rule *ru, funnel_str kind)
{
	for (size_t i = 0; i < ru->n_on; i++) {
		if (strlen(ru->on[i]) == kind.len && memcmp(ru->on[i], kind.ptr, kind.len) == 0)
			return 1;
	}
	return 0;
}

/* The lead fields a lead.captured data map carries. */
static void
capture(const sc_rules *r, sc_lead *st, const msgpack_object *data)
{
	char buf[SC_MAX_VALUE_BYTES + 1];
	if (data->type != MSGPACK_OBJECT_MAP)
		return;
	/* A sealed email (PROTOCOL.md "Personal data and erasure") comes with
	 * the email_domain funneld derived in clear: the domain is read from
	 * there, so no personal value ever enters the view. */
	const msgpack_object *em = mp_find(data, "email"), *dom = mp_find(data, "email_domain");
	if (em != NULL && fp_seal_is(em) && dom != NULL) {
		int t = rf_value_text(dom, buf, sizeof buf);
		if (t == 1 && buf[0] != '\0')
			sc_lead_set_field(st, 0, buf, strlen(buf), 1);
		else
			sc_lead_set_field(st, 0, NULL, 0, 0);
	}
	for (uint32_t k = 0; k < data->via.map.size; k++) {
		const msgpack_object_kv *kv = &data->via.map.ptr[k];
		int t = rf_value_text(&kv->val, buf, sizeof buf);
		if (t < 0)
			continue;
		if (sc_key_is(&kv->key, "email", 5)) {
			const char *at = t == 1 ? strrchr(buf, '@') : NULL;
			if (at != NULL && at[1] != '\0')
				sc_lead_set_field(st, 0, at + 1, strlen(at + 1), 1);
			else
				sc_lead_set_field(st, 0, NULL, 0, 0);
		}
		/* slot 0, email_domain, is only ever derived */
		for (size_t i = 1; i < r->nfields; i++) {
			if (sc_key_is(&kv->key, r->fields[i], r->field_len[i])) {
				sc_lead_set_field(st, i, t == 1 ? buf : NULL, t == 1 ? strlen(buf) : 0, 0);
				break;
			}
		}
	}
}

/* ---- scores ---- */

/* An activity rule's points at time `at`. */
static double
decayed(const sc_rules *r, const sc_rstate *s, uint64_t at)
{
	if (s->v == 0 || r->half_life_ns == 0 || at <= s->t)
		return s->v;
	return s->v * exp2(-((double)(at - s->t) / (double)r->half_life_ns));
}

/* Half away from zero, within +-1e9 so that fit + engagement fits an int. */
static int
round_score(double x)
{
	double y = round(x);
	if (y > 1e9)
		return 1000000000;
	if (y < -1e9)
		return -1000000000;
	return (int)y;
}

/* The matched flags of lead-field rules were computed under these rules.
 * Fields change only with lead.captured, so the flags stay right until
 * the next capture or the next rules. */
static int
fit_fresh(const sc_rules *r, const sc_lead *st)
{
	return memcmp(st->fit_tag, r->hash, TAG_BYTES) == 0;
}

/* Lead-field rule i holds: its flag when fresh, else evaluated now. */
static int
fit_holds(const sc_rules *r, const sc_lead *st, size_t i, int fresh)
{
	return fresh ? st->rs[i].matched : rule_holds(r, &r->rules[i], st, NULL, NULL);
}

/* fit, engagement, total at time `at`, summed in rule order. */
static void
scores_at(const sc_rules *r, const sc_lead *st, uint64_t at, int s[3])
{
	double fit = 0, eng = 0;
	int fresh = fit_fresh(r, st);
	for (size_t i = 0; i < r->n; i++) {
		if (r->rules[i].activity)
			eng += decayed(r, &st->rs[i], at);
		else if (fit_holds(r, st, i, fresh))
			fit += r->rules[i].points;
	}
	s[0] = round_score(fit);
	s[1] = round_score(eng);
	s[2] = s[0] + s[1];
}

void
sc_scores(const sc_rules *r, const sc_lead *st, uint64_t at_ts, int *fit, int *engagement,
          int *total)
{
	int s[3];
	scores_at(r, st, at_ts, s);
	if (fit != NULL)
		*fit = s[0];
	if (engagement != NULL)
		*engagement = s[1];
	if (total != NULL)
		*total = s[2];
}

size_t
sc_contributions(const sc_rules *r, const sc_lead *st, uint64_t at_ts, sc_contrib *out,
                 size_t cap)
{
	size_t n = 0;
	int fresh = fit_fresh(r, st);
	for (size_t i = 0; i < r->n; i++) {
		const sc_rstate *s = &st->rs[i];
		double pts = r->rules[i].activity ? decayed(r, s, at_ts) :
		             fit_holds(r, st, i, fresh) ? r->rules[i].points : 0;
		if (pts == 0)
			continue;
		if (n < cap)
			out[n] = (sc_contrib){ (uint32_t)i, pts, s->fired, s->last_seq };
		n++;
	}
	return n;
}

/* An activity fires a rule at ts t: decay, add, cap. */
static void
fire_activity(const sc_rule *ru, sc_rstate *s, double now, uint64_t t, uint64_t seq)
{
	double v = now + ru->points;
	if (ru->cap > 0) {
		if (ru->points > 0 && v > ru->cap)
			v = ru->cap;
		else if (ru->points < 0 && v < -ru->cap)
			v = -ru->cap;
	}
	s->v = v;
	s->t = t;
	if (s->fired < UINT32_MAX)
		s->fired++;
	s->last_seq = seq;
}

int
sc_counts(const funnel_record *rec)
{
	if (rec->lead.ptr == NULL)
		return 0;
	switch (fp_evspec_lookup(rec->type.ptr, rec->type.len)->type) {
	case FP_EV_CAPTURED:
	case FP_EV_ACTIVITY:
	case FP_EV_RECYCLED:
	case FP_EV_REJECTED:
	case FP_EV_ERASED:
		return 1;
	default:
		return 0;
	}
}

int
sc_apply(const sc_rules *r, sc_lead *st, const funnel_record *rec, sc_outcome *out)
{
	uint8_t fired[SC_MAX_RULES] = { 0 };

	out->changed = out->qualify = 0;
	out->n_fired = 0;
	out->re_limited = 0;
	out->at = funnel_record_event_time(rec);
	out->fit = st->rep[0];
	out->engagement = st->rep[1];
	out->total = st->rep[2];
	if (st->rules != r)
		return FUNNEL_EINVAL;
	if (!sc_counts(rec))
		return FUNNEL_OK;
	const fp_evspec *spec = fp_evspec_lookup(rec->type.ptr, rec->type.len);
	if (spec->type == FP_EV_ERASED) {
		sc_lead_reset(st);
		out->fit = out->engagement = out->total = 0;
		return FUNNEL_OK;
	}
	/* decay runs on event time; a record dated before the lead's last one
	 * counts at that one's time, so no score is decayed backwards (a state
	 * written before `at` was kept: its rules' latest time stands in) */
	uint64_t prev = st->at;
	for (size_t i = 0; i < r->n; i++) {
		if (st->rs[i].t > prev)
			prev = st->rs[i].t;
	}
	const uint64_t t = funnel_record_event_time_after(rec, prev);
	out->at = st->at = t;
	const int captured = spec->type == FP_EV_CAPTURED;
	const int sent_back = spec->type == FP_EV_RECYCLED || spec->type == FP_EV_REJECTED;
	if (captured && rec->data != NULL)
		capture(r, st, rec->data);
	if (sent_back && r->reset_on_recycle) {
		for (size_t i = 0; i < r->n; i++) {
			if (r->rules[i].activity) {
				st->rs[i].v = 0;
				st->rs[i].t = t;
			}
		}
	}
	if (spec->type == FP_EV_ACTIVITY) {
		funnel_str kind = { NULL, 0 };
		if (mp_get_str(rec->data, "kind", &kind, NULL) == FUNNEL_OK) {
			for (size_t i = 0; i < r->n; i++) {
				const sc_rule *ru = &r->rules[i];
				sc_rstate *s = &st->rs[i];
				if (!ru->activity || !rule_on(ru, kind) || (ru->once && s->fired > 0) ||
				    !rule_holds(r, ru, st, rec->data, &out->re_limited))
					continue;
				fire_activity(ru, s, decayed(r, s, t), t, rec->seq);
				fired[i] = 1;
			}
		}
	}
	if (captured || !fit_fresh(r, st)) {
		for (size_t i = 0; i < r->n; i++) {
			sc_rstate *s = &st->rs[i];
			if (r->rules[i].activity)
				continue;
			int m = rule_holds(r, &r->rules[i], st, NULL, &out->re_limited);
			if (m && !s->matched) {
				if (s->fired < UINT32_MAX)
					s->fired++;
				s->last_seq = rec->seq;
				fired[i] = 1;
			}
			s->matched = m;
		}
		memcpy(st->fit_tag, r->hash, TAG_BYTES);
	}

	int sc[3];
	scores_at(r, st, t, sc);
	/* "above" follows the score on every record, the one that sends the
	 * lead back included: a lead sent back qualifies again only once it
	 * crosses from below, which that record itself never counts as */
	int above = sc[2] >= r->threshold && (!r->has_min_fit || sc[0] >= r->min_fit);
	if (above && !st->above && !sent_back) {
		int stage = rec->stage.ptr ? fp_stage_parse(rec->stage.ptr, rec->stage.len) : -1;
		out->qualify = stage == FP_STAGE_INQUIRY || stage == FP_STAGE_NURTURE;
	}
	st->above = above;
	out->changed = sc[0] != st->rep[0] || sc[1] != st->rep[1] || sc[2] != st->rep[2];
	memcpy(st->rep, sc, sizeof st->rep);
	out->fit = sc[0];
	out->engagement = sc[1];
	out->total = sc[2];
	for (size_t i = 0; i < r->n; i++) {
		if (fired[i])
			out->fired[out->n_fired++] = (uint32_t)i;
	}
	return FUNNEL_OK;
}

/* ---- the view's rows ---- */

int
sc_row_load(const sc_rules *r, const funnel_store *s, funnel_str lead, sc_lead *st,
            uint64_t *ts)
{
	const void *val;
	size_t vlen;

	sc_lead_reset(st);
	int rc = s->get(s->ctx, 0, lead.ptr, lead.len, &val, &vlen);
	if (rc != FUNNEL_OK)
		return rc;
	if (vlen < 8 || sc_lead_decode(r, (const uint8_t *)val + 8, vlen - 8, st) != FUNNEL_OK)
		return FUNNEL_EMALFORMED;
	if (ts)
		*ts = fp_get_be64(val);
	return FUNNEL_OK;
}

int
sc_apply_row(const sc_rules *r, const funnel_store *s, sc_lead *st, msgpack_sbuffer *sb,
             const funnel_record *rec, sc_outcome *out)
{
	uint8_t ts[8];

	if (!sc_counts(rec)) {
		memset(out, 0, sizeof *out);
		return FUNNEL_OK;
	}
	int rc = sc_row_load(r, s, rec->lead, st, NULL);
	if (rc != FUNNEL_OK && rc != FUNNEL_ENOTFOUND)
		return rc;
	if ((rc = sc_apply(r, st, rec, out)) != FUNNEL_OK)
		return rc;
	if (sc_lead_is_empty(st))
		return s->del(s->ctx, 0, rec->lead.ptr, rec->lead.len);
	sb->size = 0;
	fp_put_be64(ts, out->at);
	msgpack_sbuffer_write(sb, (const char *)ts, 8);
	if ((rc = sc_lead_encode(r, st, sb)) != FUNNEL_OK)
		return rc;
	return s->put(s->ctx, 0, rec->lead.ptr, rec->lead.len, sb->data, sb->size);
}
