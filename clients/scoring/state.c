/*
 * clients/scoring/state.c - a lead's state: its lifecycle, its fields,
 * and its msgpack encoding (sc_lead_encode / sc_lead_decode).  The
 * contract is rules.h.
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

#include "funnel/error.h"
#include "mp.h"
#include "model.h"
#include "compiled.h"
#include "rules.h"
#include "rulesfile.h"
#include "seal.h"

/* A msgpack key equals the n bytes of s. */
int
sc_key_is(const msgpack_object *k, const char *s, size_t n)
{
	return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
	       memcmp(k->via.str.ptr, s, n) == 0;
}

/* ---- per-lead state ---- */

sc_lead *
sc_lead_new(const sc_rules *r)
{
	sc_lead *st = calloc(1, sizeof *st);
	if (st == NULL)
		return NULL;
	st->rules = r;
	if ((st->fields = calloc(r->nfields, sizeof *st->fields)) == NULL ||
	    (st->rs = calloc(r->n ? r->n : 1, sizeof *st->rs)) == NULL ||
	    !(st->has_zone = msgpack_zone_init(&st->zone, 1024)) ||
	    (r->mctx != NULL && (st->md = pcre2_match_data_create(1, NULL)) == NULL))
		sc_lead_destroy(&st);
	return st;
}

void
sc_lead_reset(sc_lead *st)
{
	const sc_rules *r = st->rules;
	/* values are wiped, not just marked unset: erasure means it */
	memset(st->fields, 0, r->nfields * sizeof *st->fields);
	memset(st->rs, 0, r->n * sizeof *st->rs);
	memset(st->fit_tag, 0, sizeof st->fit_tag);
	st->above = 0;
	st->at = 0;
	memset(st->rep, 0, sizeof st->rep);
}

void
sc_lead_destroy(sc_lead **stp)
{
	if (stp == NULL || *stp == NULL)
		return;
	sc_lead *st = *stp;
	if (st->has_zone)
		msgpack_zone_destroy(&st->zone);
	pcre2_match_data_free(st->md);
	free(st->fields);
	free(st->rs);
	free(st);
	*stp = NULL;
}

int
sc_lead_is_empty(const sc_lead *st)
{
	const sc_rules *r = st->rules;
	if (st->above || st->rep[0] || st->rep[1] || st->rep[2])
		return 0;
	for (size_t i = 0; i < r->nfields; i++) {
		if (st->fields[i].set)
			return 0;
	}
	for (size_t i = 0; i < r->n; i++) {
		const sc_rstate *s = &st->rs[i];
		if (s->v != 0 || s->fired || s->matched)
			return 0;
	}
	return 1;
}

int
sc_lead_above(const sc_lead *st)
{
	return st->above;
}

const char *
sc_lead_field(const sc_lead *st, size_t i)
{
	return i < st->rules->nfields && st->fields[i].set ? st->fields[i].text : NULL;
}

/* Set field i to v (at most SC_MAX_VALUE_BYTES bytes; NULL clears it). */
void
sc_lead_set_field(sc_lead *st, size_t i, const char *v, size_t len, int lower)
{
	sc_field *f = &st->fields[i];
	f->set = v != NULL;
	if (v == NULL)
		len = 0;
	memcpy(f->text, v ? v : "", len);
	f->text[len] = '\0';
	for (size_t j = 0; lower && j < len; j++) {
		if (f->text[j] >= 'A' && f->text[j] <= 'Z')
			f->text[j] = (char)(f->text[j] - 'A' + 'a');
	}
}

/* ---- the state as msgpack ---- */

static int
pack_bool(msgpack_packer *pk, int b)
{
	return b ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
}

int
sc_lead_encode(const sc_rules *r, const sc_lead *st, msgpack_sbuffer *out)
{
	msgpack_packer pk;
	int e = 0;
	uint32_t nf = 0, nfit = 0, neng = 0;

	if (st->rules != r)
		return FUNNEL_EINVAL;
	for (size_t i = 0; i < r->nfields; i++)
		nf += st->fields[i].set != 0;
	for (size_t i = 0; i < r->n; i++) {
		const sc_rstate *s = &st->rs[i];
		if (r->rules[i].activity)
			neng += s->v != 0 || s->fired != 0;
		else
			nfit += s->matched || s->fired != 0;
	}
	msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
	e |= msgpack_pack_map(&pk, 7 + (st->at != 0));
	e |= mp_pack_key(&pk, "v");
	e |= msgpack_pack_uint8(&pk, 1);
	if (st->at != 0) {
		e |= mp_pack_key(&pk, "at");
		e |= msgpack_pack_uint64(&pk, st->at);
	}
	e |= mp_pack_key(&pk, "rules");
	e |= msgpack_pack_bin_with_body(&pk, st->fit_tag, TAG_BYTES);
	e |= mp_pack_key(&pk, "above");
	e |= pack_bool(&pk, st->above);
	e |= mp_pack_key(&pk, "scores");
	e |= msgpack_pack_array(&pk, 3);
	for (int i = 0; i < 3; i++)
		e |= msgpack_pack_int(&pk, st->rep[i]);
	e |= mp_pack_key(&pk, "fields");
	e |= msgpack_pack_map(&pk, nf);
	for (size_t i = 0; i < r->nfields; i++) {
		if (!st->fields[i].set)
			continue;
		e |= msgpack_pack_str_with_body(&pk, r->fields[i], r->field_len[i]);
		e |= mp_pack_cstr(&pk, st->fields[i].text);
	}
	e |= mp_pack_key(&pk, "fit");
	e |= msgpack_pack_map(&pk, nfit);
	for (size_t i = 0; i < r->n; i++) {
		const sc_rstate *s = &st->rs[i];
		if (r->rules[i].activity || !(s->matched || s->fired != 0))
			continue;
		e |= msgpack_pack_str_with_body(&pk, r->rules[i].name, r->rules[i].name_len);
		e |= msgpack_pack_array(&pk, 3);
		e |= pack_bool(&pk, s->matched);
		e |= msgpack_pack_uint32(&pk, s->fired);
		e |= msgpack_pack_uint64(&pk, s->last_seq);
	}
	e |= mp_pack_key(&pk, "eng");
	e |= msgpack_pack_map(&pk, neng);
	for (size_t i = 0; i < r->n; i++) {
		const sc_rstate *s = &st->rs[i];
		if (!r->rules[i].activity || !(s->v != 0 || s->fired != 0))
			continue;
		e |= msgpack_pack_str_with_body(&pk, r->rules[i].name, r->rules[i].name_len);
		e |= msgpack_pack_array(&pk, 4);
		e |= msgpack_pack_double(&pk, s->v);
		e |= msgpack_pack_uint64(&pk, s->t);
		e |= msgpack_pack_uint32(&pk, s->fired);
		e |= msgpack_pack_uint64(&pk, s->last_seq);
	}
	return e ? FUNNEL_ENOMEM : FUNNEL_OK;
}

static int
get_uint(const msgpack_object *o, uint64_t max, uint64_t *out)
{
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max)
		return -1;
	*out = o->via.u64;
	return 0;
}

/* The state of the rule named `name` that reads activities (activity 1)
 * or lead fields, or NULL.  The search starts at *hint, just past the
 * last rule found: states list rules in rule order. */
static sc_rstate *
rule_state(const sc_rules *r, sc_lead *st, const msgpack_object *name, int activity,
           size_t *hint)
{
	for (size_t j = 0; j < r->n; j++) {
		size_t i = (*hint + j) % r->n;
		const sc_rule *ru = &r->rules[i];
		if (ru->activity == activity && sc_key_is(name, ru->name, ru->name_len)) {
			*hint = i + 1;
			return &st->rs[i];
		}
	}
	return NULL;
}

static int
decode_fields(const sc_rules *r, const msgpack_object *o, sc_lead *st)
{
	size_t hint = 0;
	if (o->type != MSGPACK_OBJECT_MAP)
		return FUNNEL_EMALFORMED;
	for (uint32_t k = 0; k < o->via.map.size; k++) {
		const msgpack_object_kv *kv = &o->via.map.ptr[k];
		if (kv->key.type != MSGPACK_OBJECT_STR || kv->val.type != MSGPACK_OBJECT_STR ||
		    kv->val.via.str.size > SC_MAX_VALUE_BYTES ||
		    memchr(kv->val.via.str.ptr, '\0', kv->val.via.str.size) != NULL)
			return FUNNEL_EMALFORMED;
		for (size_t j = 0; j < r->nfields; j++) {
			size_t i = (hint + j) % r->nfields;
			if (sc_key_is(&kv->key, r->fields[i], r->field_len[i])) {
				sc_lead_set_field(st, i, kv->val.via.str.ptr, kv->val.via.str.size, 0);
				hint = i + 1;
				break;
			}
		}
	}
	return FUNNEL_OK;
}

static int
decode_rules(const sc_rules *r, const msgpack_object *o, sc_lead *st, int activity)
{
	size_t hint = 0;
	if (o->type != MSGPACK_OBJECT_MAP)
		return FUNNEL_EMALFORMED;
	for (uint32_t k = 0; k < o->via.map.size; k++) {
		const msgpack_object_kv *kv = &o->via.map.ptr[k];
		const msgpack_object *a = kv->val.via.array.ptr;
		sc_rstate s = { 0 };
		uint64_t fired;
		if (kv->key.type != MSGPACK_OBJECT_STR || kv->val.type != MSGPACK_OBJECT_ARRAY ||
		    kv->val.via.array.size != (activity ? 4u : 3u))
			return FUNNEL_EMALFORMED;
		if (activity) {
			if ((a[0].type != MSGPACK_OBJECT_FLOAT64 && a[0].type != MSGPACK_OBJECT_FLOAT32) ||
			    !isfinite(a[0].via.f64) || get_uint(&a[1], UINT64_MAX, &s.t) != 0)
				return FUNNEL_EMALFORMED;
			s.v = a[0].via.f64;
			a += 2;
		} else {
			if (a[0].type != MSGPACK_OBJECT_BOOLEAN)
				return FUNNEL_EMALFORMED;
			s.matched = a[0].via.boolean;
			a += 1;
		}
		if (get_uint(&a[0], UINT32_MAX, &fired) != 0 || get_uint(&a[1], UINT64_MAX, &s.last_seq) != 0)
			return FUNNEL_EMALFORMED;
		s.fired = (uint32_t)fired;
		sc_rstate *dst = rule_state(r, st, &kv->key, activity, &hint);
		if (dst != NULL)
			*dst = s;
	}
	return FUNNEL_OK;
}

static int
decode_state(const sc_rules *r, const msgpack_object *o, sc_lead *st)
{
	static const char *const keys[] = { "v", "rules", "above", "scores", "fields", "fit", "eng",
	                                    "at" };
	static const size_t klen[] = { 1, 5, 5, 6, 6, 3, 3, 2 };
	enum { NKEYS = sizeof keys / sizeof keys[0] };
	unsigned seen = 0;
	uint64_t u;
	int rc;

	if (o->type != MSGPACK_OBJECT_MAP)
		return FUNNEL_EMALFORMED;
	for (uint32_t k = 0; k < o->via.map.size; k++) {
		const msgpack_object_kv *kv = &o->via.map.ptr[k];
		const msgpack_object *v = &kv->val;
		unsigned i = 0;
		while (i < NKEYS && !sc_key_is(&kv->key, keys[i], klen[i]))
			i++;
		if (i == NKEYS || (seen & (1u << i)))
			return FUNNEL_EMALFORMED;
		seen |= 1u << i;
		switch (i) {
		case 0:
			if (get_uint(v, UINT64_MAX, &u) != 0 || u != 1)
				return FUNNEL_EMALFORMED;
			break;
		case 1:
			if (v->type != MSGPACK_OBJECT_BIN || v->via.bin.size != TAG_BYTES)
				return FUNNEL_EMALFORMED;
			memcpy(st->fit_tag, v->via.bin.ptr, TAG_BYTES);
			break;
		case 2:
			if (v->type != MSGPACK_OBJECT_BOOLEAN)
				return FUNNEL_EMALFORMED;
			st->above = v->via.boolean;
			break;
		case 3:
			if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size != 3)
				return FUNNEL_EMALFORMED;
			for (int j = 0; j < 3; j++) {
				const msgpack_object *x = &v->via.array.ptr[j];
				if (x->type == MSGPACK_OBJECT_POSITIVE_INTEGER && x->via.u64 <= 2000000000u)
					st->rep[j] = (int)x->via.u64;
				else if (x->type == MSGPACK_OBJECT_NEGATIVE_INTEGER && x->via.i64 >= -2000000000)
					st->rep[j] = (int)x->via.i64;
				else
					return FUNNEL_EMALFORMED;
			}
			break;
		case 4:
			if ((rc = decode_fields(r, v, st)) != FUNNEL_OK)
				return rc;
			break;
		case 7:
			if (get_uint(v, UINT64_MAX, &u) != 0)
				return FUNNEL_EMALFORMED;
			st->at = u;
			break;
		default:
			if ((rc = decode_rules(r, v, st, i == 6)) != FUNNEL_OK)
				return rc;
			break;
		}
	}
	/* every key but "at" (absent in a state written before it was kept) */
	return (seen | (1u << 7)) == (1u << NKEYS) - 1 ? FUNNEL_OK : FUNNEL_EMALFORMED;
}

int
sc_lead_decode(const sc_rules *r, const void *buf, size_t len, sc_lead *st)
{
	msgpack_object o;
	size_t off = 0;
	int rc = FUNNEL_EMALFORMED;

	if (st->rules != r)
		return FUNNEL_EINVAL;
	sc_lead_reset(st);
	msgpack_zone_clear(&st->zone);
	if (buf != NULL &&
	    msgpack_unpack(buf, len, &off, &st->zone, &o) == MSGPACK_UNPACK_SUCCESS && off == len)
		rc = decode_state(r, &o, st);
	msgpack_zone_clear(&st->zone);
	if (rc != FUNNEL_OK)
		sc_lead_reset(st);
	return rc;
}
