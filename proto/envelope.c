/*
 * proto/envelope.c - envelope decoding and validation, record encoding,
 * hash-chain checking.
 */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "envelope.h"
#include "mp.h"

/* Identifiers (type, lead, id) are non-empty and free of control bytes,
 * so they print safely in logs, JSON and terminals. */
static funnel_err
check_ident(const msgpack_object *v, const char *key, size_t max, funnel_str *out, fp_error *err)
{
	if (v->type != MSGPACK_OBJECT_STR)
		return fp_error_set(err, FUNNEL_ETYPE, key, "field '%s' must be a string", key);
	if (v->via.str.size == 0)
		return fp_error_set(err, FUNNEL_EVALUE, key, "field '%s' must not be empty", key);
	if (v->via.str.size > max)
		return fp_error_set(err, FUNNEL_ETOOBIG, key, "field '%s' is %u bytes, the limit is %zu",
		                    key, v->via.str.size, max);
	unsigned high = 0;   /* any byte >= 0x80: only then is UTF-8 checked */
	for (uint32_t i = 0; i < v->via.str.size; i++) {
		unsigned char c = (unsigned char)v->via.str.ptr[i];
		if (c < 0x20 || c == 0x7f)
			return fp_error_set(err, FUNNEL_EVALUE, key,
			                    "field '%s' contains a control character at byte %u", key, i);
		high |= c;
	}
	long bad = high & 0x80 ? mp_utf8_invalid_at(v->via.str.ptr, v->via.str.size) : -1;
	if (bad >= 0)
		return fp_error_set(err, FUNNEL_EVALUE, key, "field '%s' is not valid UTF-8 (byte %ld)",
		                    key, bad);
	out->ptr = v->via.str.ptr;
	out->len = v->via.str.size;
	return FUNNEL_OK;
}

static int strings_valid(const msgpack_object *o);

/* strings_valid() of one value, without a call for the scalars that make
 * up most of a data map. */
static inline int
value_valid(const msgpack_object *o)
{
	if (o->type == MSGPACK_OBJECT_STR)
		return mp_utf8_invalid_at(o->via.str.ptr, o->via.str.size) < 0;
	if (o->type == MSGPACK_OBJECT_ARRAY || o->type == MSGPACK_OBJECT_MAP)
		return strings_valid(o);
	return 1;
}

/* Every string inside a data value (keys and values, at any depth) is
 * UTF-8, so every consumer, in any language, can decode every record. */
static int
strings_valid(const msgpack_object *o)
{
	switch (o->type) {
	case MSGPACK_OBJECT_STR:
		return mp_utf8_invalid_at(o->via.str.ptr, o->via.str.size) < 0;
	case MSGPACK_OBJECT_ARRAY:
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			if (!value_valid(&o->via.array.ptr[i]))
				return 0;
		}
		return 1;
	case MSGPACK_OBJECT_MAP:
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			if (!value_valid(&o->via.map.ptr[i].key) || !value_valid(&o->via.map.ptr[i].val))
				return 0;
		}
		return 1;
	default:
		return 1;
	}
}

/* Order of two str keys (byte-wise, shorter first on a common prefix). */
static int
key_cmp(const msgpack_object *x, const msgpack_object *y)
{
	uint32_t n = x->via.str.size < y->via.str.size ? x->via.str.size : y->via.str.size;
	int c = memcmp(x->via.str.ptr, y->via.str.ptr, n);
	if (c != 0)
		return c;
	return x->via.str.size < y->via.str.size ? -1 : x->via.str.size > y->via.str.size;
}

static int
key_ptr_cmp(const void *a, const void *b)
{
	return key_cmp(*(const msgpack_object *const *)a, *(const msgpack_object *const *)b);
}

/* The first key of a (string-keyed) map that appears twice, or NULL.
 * Decoders disagree on which copy wins, so funnel takes neither.  Small
 * maps are compared pairwise; larger ones sorted. */
static const msgpack_object *
duplicate_key(const msgpack_object *map)
{
	const msgpack_object_kv *kv = map->via.map.ptr;
	uint32_t n = map->via.map.size;
	if (n <= 32) {
		for (uint32_t i = 0; i < n; i++) {
			const msgpack_object_str *x = &kv[i].key.via.str;
			for (uint32_t j = i + 1; j < n; j++) {
				const msgpack_object_str *y = &kv[j].key.via.str;
				/* the first byte before memcmp(): keys of one length
				 * mostly differ there already */
				if (x->size == y->size &&
				    (x->size == 0 || (x->ptr[0] == y->ptr[0] && memcmp(x->ptr, y->ptr, x->size) == 0)))
					return &kv[i].key;
			}
		}
		return NULL;
	}
	const msgpack_object **keys = malloc(n * sizeof *keys);
	const msgpack_object *dup = NULL;
	if (keys == NULL)
		return NULL;
	for (uint32_t i = 0; i < n; i++)
		keys[i] = &kv[i].key;
	qsort(keys, n, sizeof *keys, key_ptr_cmp);
	for (uint32_t i = 1; i < n && dup == NULL; i++) {
		if (key_cmp(keys[i - 1], keys[i]) == 0)
			dup = keys[i];
	}
	free(keys);
	return dup;
}

/* Per-type requirements on the data map. */
static funnel_err
check_data(const fp_evspec *spec, const msgpack_object *data, fp_error *err)
{
	char field[32];
	if (data != NULL) {
		for (uint32_t i = 0; i < data->via.map.size; i++) {
			if (data->via.map.ptr[i].key.type != MSGPACK_OBJECT_STR)
				return fp_error_set(err, FUNNEL_ETYPE, "data",
				                    "keys of 'data' must be strings (key %u is not)", i);
		}
		const msgpack_object *dup = duplicate_key(data);
		if (dup != NULL)
			return fp_error_set(err, FUNNEL_EVALUE, "data", "key '%.*s' appears twice in 'data'",
			                    (int)(dup->via.str.size > 40 ? 40 : dup->via.str.size), dup->via.str.ptr);
		if (!strings_valid(data))
			return fp_error_set(err, FUNNEL_EVALUE, "data", "'data' holds a string that is not valid UTF-8");
	}
	if (spec->needs_string != NULL) {
		const msgpack_object *v = mp_find(data, spec->needs_string);
		/* the field's name for a message, built only when there is one */
		if (v == NULL || v->type != MSGPACK_OBJECT_STR || v->via.str.size == 0 ||
		    v->via.str.size > FP_MAX_OWNER_BYTES)
			snprintf(field, sizeof field, "data.%s", spec->needs_string);
		if (v == NULL)
			return fp_error_set(err, FUNNEL_EMISSING, field, "%s needs field '%s'",
			                    spec->name, field);
		if (v->type != MSGPACK_OBJECT_STR)
			return fp_error_set(err, FUNNEL_ETYPE, field, "field '%s' must be a string", field);
		if (v->via.str.size == 0)
			return fp_error_set(err, FUNNEL_EVALUE, field, "field '%s' must not be empty", field);
		if (v->via.str.size > FP_MAX_OWNER_BYTES)
			return fp_error_set(err, FUNNEL_ETOOBIG, field, "field '%s' is %u bytes, the limit is %d",
			                    field, v->via.str.size, FP_MAX_OWNER_BYTES);
	}
	if (spec->money_key != NULL) {
		snprintf(field, sizeof field, "data.%s", spec->money_key);
		const msgpack_object *v = mp_find(data, spec->money_key);
		if (v != NULL) {
			int is_float = v->type == MSGPACK_OBJECT_FLOAT64 || v->type == MSGPACK_OBJECT_FLOAT32;
			if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER && v->type != MSGPACK_OBJECT_NEGATIVE_INTEGER &&
			    !is_float)
				return fp_error_set(err, FUNNEL_ETYPE, field, "field '%s' must be a number", field);
			if (is_float && !isfinite(v->via.f64))
				return fp_error_set(err, FUNNEL_EVALUE, field, "field '%s' must be a finite number", field);
			if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER || (is_float && v->via.f64 < 0.0))
				return fp_error_set(err, FUNNEL_EVALUE, field, "field '%s' must not be negative", field);
		}
	}
	return FUNNEL_OK;
}

enum {
	F_TYPE = 1 << 0, F_LEAD = 1 << 1, F_ID = 1 << 2, F_OCCURRED = 1 << 3,
	F_EXPECTED = 1 << 4, F_CAUSE = 1 << 5, F_DATA = 1 << 6
};

static const char *const field_names[] = {
	"type", "lead", "id", "occurred_at", "expected_version", "cause", "data"
};

/* The index in field_names of key k, or -1: by length first, so a key
 * is compared with at most three names. */
static int
event_field(const msgpack_object *k)
{
	if (k->type != MSGPACK_OBJECT_STR)
		return -1;
	const char *s = k->via.str.ptr;
	switch (k->via.str.size) {
	case 2:
		return memcmp(s, "id", 2) == 0 ? 2 : -1;
	case 4:
		return memcmp(s, "type", 4) == 0 ? 0
		     : memcmp(s, "lead", 4) == 0 ? 1
		     : memcmp(s, "data", 4) == 0 ? 6 : -1;
	case 5:
		return memcmp(s, "cause", 5) == 0 ? 5 : -1;
	case 11:
		return memcmp(s, "occurred_at", 11) == 0 ? 3 : -1;
	case 16:
		return memcmp(s, "expected_version", 16) == 0 ? 4 : -1;
	default:
		return -1;
	}
}

funnel_err
fp_event_decode(const msgpack_object *o, fp_event *ev, fp_error *err)
{
	funnel_err rc;
	unsigned seen = 0;

	memset(ev, 0, sizeof *ev);
	if (o->type != MSGPACK_OBJECT_MAP)
		return fp_error_set(err, FUNNEL_EMALFORMED, "", "an event must be a msgpack map");

	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object *k = &o->via.map.ptr[i].key;
		const msgpack_object *v = &o->via.map.ptr[i].val;
		int f = event_field(k);
		if (f < 0) {
			/* the source of a fact is what funneld authenticated, never what
			 * the event says (PROTOCOL.md "Identity and access") */
			if (mp_key_is(k, "producer"))
				return fp_error_set(err, FUNNEL_EFORBIDDEN, "producer",
				                    "field 'producer' is written by funneld from the sender's key; "
				                    "an event may not carry it");
			if (k->type == MSGPACK_OBJECT_STR)
				return fp_error_set(err, FUNNEL_EVALUE, "", "unknown field '%.*s' in event",
				                    (int)(k->via.str.size > 40 ? 40 : k->via.str.size), k->via.str.ptr);
			return fp_error_set(err, FUNNEL_ETYPE, "", "event keys must be strings");
		}
		if (seen & (1u << f))
			return fp_error_set(err, FUNNEL_EVALUE, field_names[f], "field '%s' appears twice",
			                    field_names[f]);
		seen |= 1u << f;
		const char *name = field_names[f];
		switch (1 << f) {
		case F_TYPE:
			if ((rc = check_ident(v, name, FP_MAX_TYPE_BYTES, &ev->type, err)) != FUNNEL_OK)
				return rc;
			break;
		case F_LEAD:
			if ((rc = check_ident(v, name, FP_MAX_LEAD_BYTES, &ev->lead, err)) != FUNNEL_OK)
				return rc;
			break;
		case F_ID:
			if ((rc = check_ident(v, name, FP_MAX_ID_BYTES, &ev->id, err)) != FUNNEL_OK)
				return rc;
			break;
		case F_OCCURRED:
			if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
				ev->occurred_at = v->via.i64;
			else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= INT64_MAX)
				ev->occurred_at = (int64_t)v->via.u64;
			else
				return fp_error_set(err, FUNNEL_ETYPE, name,
				                    "field 'occurred_at' must be an integer (ns since the epoch)");
			ev->has_occurred_at = 1;
			break;
		case F_EXPECTED:
			if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
				return fp_error_set(err, FUNNEL_EVALUE, name,
				                    "field 'expected_version' must not be negative");
			if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
				return fp_error_set(err, FUNNEL_ETYPE, name,
				                    "field 'expected_version' must be a non-negative integer");
			ev->expected_version = v->via.u64;
			ev->has_expected_version = 1;
			break;
		case F_CAUSE:
			if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
				return fp_error_set(err, FUNNEL_EVALUE, name, "field 'cause' must be a seq >= 1");
			if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
				return fp_error_set(err, FUNNEL_ETYPE, name,
				                    "field 'cause' must be a positive integer (a seq)");
			if (v->via.u64 == 0)
				return fp_error_set(err, FUNNEL_EVALUE, name, "field 'cause' must be a seq >= 1");
			ev->cause = v->via.u64;
			ev->has_cause = 1;
			break;
		case F_DATA:
			if (v->type == MSGPACK_OBJECT_NIL)
				break;
			if (v->type != MSGPACK_OBJECT_MAP)
				return fp_error_set(err, FUNNEL_ETYPE, name, "field 'data' must be a map");
			ev->data = v;
			ev->data_at = k->via.str.ptr + k->via.str.size;   /* a value follows its key */
			break;
		}
	}

	if (!(seen & F_TYPE))
		return fp_error_set(err, FUNNEL_EMISSING, "type", "event has no 'type'");
	ev->spec = fp_evspec_lookup(ev->type.ptr, ev->type.len);
	if (ev->spec->type == FP_EV_UNKNOWN)
		return fp_error_set(err, FUNNEL_EUNKNOWN_TYPE, "type",
		                    "unknown event type '%.*s' (custom types start with 'x.')",
		                    (int)ev->type.len, ev->type.ptr);
	if (ev->spec->needs_lead && ev->lead.ptr == NULL)
		return fp_error_set(err, FUNNEL_EMISSING, "lead", "%s needs field 'lead'", ev->spec->name);
	if (ev->has_expected_version && ev->lead.ptr == NULL)
		return fp_error_set(err, FUNNEL_EVALUE, "expected_version",
		                    "'expected_version' needs a 'lead'");
	return check_data(ev->spec, ev->data, err);
}

/* The header msgpack_pack_object() writes for o (type byte, then length
 * or value, big-endian) into h; its size, or 0 for a type it has none of
 * here (ext: left to msgpack_pack_object()). */
static size_t
shortest_header(const msgpack_object *o, unsigned char h[9])
{
	uint64_t u = 0;
	size_t n = 0;       /* bytes of u after the type byte */
	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		h[0] = 0xc0;
		return 1;
	case MSGPACK_OBJECT_BOOLEAN:
		h[0] = o->via.boolean ? 0xc3 : 0xc2;
		return 1;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		u = o->via.u64;
		if (u < 0x80) {
			h[0] = (unsigned char)u;
			return 1;
		}
		h[0] = u < 0x100 ? 0xcc : u < 0x10000 ? 0xcd : u < 0x100000000ull ? 0xce : 0xcf;
		n = u < 0x100 ? 1 : u < 0x10000 ? 2 : u < 0x100000000ull ? 4 : 8;
		break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: {
		int64_t d = o->via.i64;
		if (d >= -32) {
			h[0] = (unsigned char)(int8_t)d;
			return 1;
		}
		h[0] = d >= -128 ? 0xd0 : d >= -32768 ? 0xd1 : d >= INT32_MIN ? 0xd2 : 0xd3;
		n = d >= -128 ? 1 : d >= -32768 ? 2 : d >= INT32_MIN ? 4 : 8;
		u = (uint64_t)d;
		break;
	}
	case MSGPACK_OBJECT_FLOAT32: {
		float f = (float)o->via.f64;
		uint32_t b;
		memcpy(&b, &f, sizeof b);
		h[0] = 0xca;
		u = b;
		n = 4;
		break;
	}
	case MSGPACK_OBJECT_FLOAT64:
		memcpy(&u, &o->via.f64, sizeof u);
		h[0] = 0xcb;
		n = 8;
		break;
	case MSGPACK_OBJECT_STR:
		u = o->via.str.size;
		if (u < 32) {
			h[0] = (unsigned char)(0xa0 | u);
			return 1;
		}
		h[0] = u < 0x100 ? 0xd9 : u < 0x10000 ? 0xda : 0xdb;
		n = u < 0x100 ? 1 : u < 0x10000 ? 2 : 4;
		break;
	case MSGPACK_OBJECT_BIN:
		u = o->via.bin.size;
		h[0] = u < 0x100 ? 0xc4 : u < 0x10000 ? 0xc5 : 0xc6;
		n = u < 0x100 ? 1 : u < 0x10000 ? 2 : 4;
		break;
	case MSGPACK_OBJECT_ARRAY:
	case MSGPACK_OBJECT_MAP: {
		int map = o->type == MSGPACK_OBJECT_MAP;
		u = map ? o->via.map.size : o->via.array.size;
		if (u < 16) {
			h[0] = (unsigned char)((map ? 0x80 : 0x90) | u);
			return 1;
		}
		h[0] = u < 0x10000 ? (map ? 0xde : 0xdc) : (map ? 0xdf : 0xdd);
		n = u < 0x10000 ? 2 : 4;
		break;
	}
	default:
		return 0;
	}
	for (size_t i = 0; i < n; i++)
		h[1 + i] = (unsigned char)(u >> (8 * (n - 1 - i)));
	return 1 + n;
}

static size_t shortest_span(const msgpack_object *o, const char *p, const char *end);

/* shortest_span() with the cases most data is made of inline: a string
 * of under 32 bytes (a fixstr) and a positive fixint. */
static inline size_t
span_one(const msgpack_object *o, const char *p, const char *end)
{
	if (o->type == MSGPACK_OBJECT_STR && o->via.str.size < 32) {
		uint32_t size = o->via.str.size;
		if (p < end && (unsigned char)*p == (0xa0 | size) && o->via.str.ptr == p + 1 &&
		    (size_t)(end - p) - 1 >= size)
			return 1 + (size_t)size;
		return 0;
	}
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 < 0x80)
		return p < end && (unsigned char)*p == o->via.u64 ? 1 : 0;
	return shortest_span(o, p, end);
}

/* If the bytes at p (before end) are what msgpack_pack_object(o) writes,
 * their number; else 0.  Strings and bins must also be the very bytes o
 * points at, which ties the walk to the buffer o was unpacked from. */
static size_t
shortest_span(const msgpack_object *o, const char *p, const char *end)
{
	unsigned char h[9];
	size_t hl = shortest_header(o, h), total;
	if (hl == 0 || (size_t)(end - p) < hl)
		return 0;
	for (size_t i = 0; i < hl; i++)   /* mostly one byte: no call to memcmp */
		if ((unsigned char)p[i] != h[i])
			return 0;
	total = hl;
	switch (o->type) {
	case MSGPACK_OBJECT_STR:
	case MSGPACK_OBJECT_BIN: {
		const char *body = o->type == MSGPACK_OBJECT_STR ? o->via.str.ptr : o->via.bin.ptr;
		size_t size = o->type == MSGPACK_OBJECT_STR ? o->via.str.size : o->via.bin.size;
		if (body != p + hl || (size_t)(end - body) < size)
			return 0;
		return hl + size;
	}
	case MSGPACK_OBJECT_ARRAY:
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			size_t n = span_one(&o->via.array.ptr[i], p + total, end);
			if (n == 0)
				return 0;
			total += n;
		}
		return total;
	case MSGPACK_OBJECT_MAP:
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			size_t n = span_one(&o->via.map.ptr[i].key, p + total, end);
			size_t m = n ? span_one(&o->via.map.ptr[i].val, p + total + n, end) : 0;
			if (m == 0)
				return 0;
			total += n + m;
		}
		return total;
	default:
		return total;
	}
}

void
fp_event_data_bytes(fp_event *ev, const void *buf, size_t len)
{
	const char *b = buf, *end = b + len;
	ev->data_len = 0;
	if (ev->data == NULL || ev->data_at == NULL || ev->data_at < b || ev->data_at >= end)
		return;
	ev->data_len = shortest_span(ev->data, ev->data_at, end);
}

/*
 * Record encoding writes the bytes msgpack-c's packer writes for the same
 * calls (msgpack_pack_map, a fixstr per key, msgpack_pack_fix_uint64 for
 * seq and ts, msgpack_pack_str, msgpack_pack_int64, msgpack_pack_uint64,
 * msgpack_pack_bin), but straight into the buffer: the record's size is
 * bounded first, the sbuffer grown once, and every field stored with a
 * pointer instead of a callback per header and per body.  test_record
 * checks it byte for byte against the packer on many events.
 */

/* Bytes a string of n bytes takes (header and body), at most. */
#define STR_MAX(n) (5 + (size_t)(n))

static inline unsigned char *
put_be(unsigned char *p, uint64_t v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(v >> (8 * (n - 1 - i)));
	return p + n;
}

/* A key: a fixstr of n < 32 bytes. */
static inline unsigned char *
put_key(unsigned char *p, const char *k, size_t n)
{
	*p++ = (unsigned char)(0xa0 | n);
	memcpy(p, k, n);
	return p + n;
}
#define PUT_KEY(p, lit) put_key((p), (lit), sizeof(lit) - 1)

/* msgpack_pack_str() + msgpack_pack_str_body() */
static inline unsigned char *
put_str(unsigned char *p, const char *s, size_t n)
{
	if (n < 32) {
		*p++ = (unsigned char)(0xa0 | n);
	} else if (n < 0x100) {
		*p++ = 0xd9;
		p = put_be(p, n, 1);
	} else if (n < 0x10000) {
		*p++ = 0xda;
		p = put_be(p, n, 2);
	} else {
		*p++ = 0xdb;
		p = put_be(p, n, 4);
	}
	if (n > 0)
		memcpy(p, s, n);
	return p + n;
}

/* msgpack_pack_uint64(): the shortest form */
static inline unsigned char *
put_uint(unsigned char *p, uint64_t u)
{
	if (u < 0x80) {
		*p++ = (unsigned char)u;
		return p;
	}
	if (u < 0x100) {
		*p++ = 0xcc;
		return put_be(p, u, 1);
	}
	if (u < 0x10000) {
		*p++ = 0xcd;
		return put_be(p, u, 2);
	}
	if (u < 0x100000000ull) {
		*p++ = 0xce;
		return put_be(p, u, 4);
	}
	*p++ = 0xcf;
	return put_be(p, u, 8);
}

/* msgpack_pack_int64(): a non-negative value as put_uint(), a negative
 * one in the shortest signed form */
static inline unsigned char *
put_int(unsigned char *p, int64_t d)
{
	if (d >= 0)
		return put_uint(p, (uint64_t)d);
	if (d >= -32) {
		*p++ = (unsigned char)(int8_t)d;
		return p;
	}
	if (d >= -128) {
		*p++ = 0xd0;
		return put_be(p, (uint64_t)d, 1);
	}
	if (d >= -32768) {
		*p++ = 0xd1;
		return put_be(p, (uint64_t)d, 2);
	}
	if (d >= INT32_MIN) {
		*p++ = 0xd2;
		return put_be(p, (uint64_t)d, 4);
	}
	*p++ = 0xd3;
	return put_be(p, (uint64_t)d, 8);
}

/* bin 8 of FUNNEL_HASH_BYTES */
static inline unsigned char *
put_hash(unsigned char *p, const uint8_t *h)
{
	*p++ = 0xc4;
	*p++ = FUNNEL_HASH_BYTES;
	memcpy(p, h, FUNNEL_HASH_BYTES);
	return p + FUNNEL_HASH_BYTES;
}

/* Room for len more bytes after sb->size, grown as msgpack_sbuffer_write()
 * grows it.  0, or -1 when out of memory (sb unchanged). */
static int
sbuffer_reserve(msgpack_sbuffer *sb, size_t len)
{
	if (sb->alloc - sb->size >= len)
		return 0;
	size_t nsize = sb->alloc ? sb->alloc * 2 : MSGPACK_SBUFFER_INIT_SIZE;
	while (nsize < sb->size + len) {
		size_t twice = nsize * 2;
		if (twice <= nsize) {
			nsize = sb->size + len;
			break;
		}
		nsize = twice;
	}
	void *tmp = realloc(sb->data, nsize);
	if (tmp == NULL)
		return -1;
	sb->data = tmp;
	sb->alloc = nsize;
	return 0;
}

funnel_err
fp_record_encode(msgpack_sbuffer *sb, const fp_event *ev, const fp_stamp *st,
                 uint8_t hash_out[FUNNEL_HASH_BYTES])
{
	static const uint8_t zeros[FUNNEL_HASH_BYTES];
	size_t start = sb->size;
	const char *stage = st->has_lead_state ? fp_stage_name(st->stage) : NULL;
	size_t stage_len = stage ? strlen(stage) : 0;
	int copy_data = ev->data != NULL && ev->data_len > 0;

	size_t n = 5;   /* seq ts type prev hash */
	n += ev->lead.ptr != NULL;
	n += ev->id.ptr != NULL;
	n += ev->has_occurred_at;
	n += ev->has_cause;
	n += st->producer.ptr != NULL;
	n += st->has_lead_state ? 2 : 0;
	n += ev->data != NULL;

	/* everything before the data, at most (n <= 13: a fixmap) */
	size_t head = 1 + 4 + 9 + 3 + 9 + 5 + STR_MAX(ev->type.len) +
	              (ev->lead.ptr ? 5 + STR_MAX(ev->lead.len) : 0) +
	              (ev->id.ptr ? 3 + STR_MAX(ev->id.len) : 0) +
	              (ev->has_occurred_at ? 12 + 9 : 0) + (ev->has_cause ? 6 + 9 : 0) +
	              (st->producer.ptr ? 9 + STR_MAX(st->producer.len) : 0) +
	              (stage ? 6 + STR_MAX(stage_len) + 8 + 9 : 0) + (ev->data ? 5 : 0);
	size_t tail = 2 * (5 + 2 + FUNNEL_HASH_BYTES);   /* prev, hash */
	if (sbuffer_reserve(sb, head + (copy_data ? ev->data_len : 0) + tail) != 0)
		return FUNNEL_ENOMEM;

	unsigned char *p = (unsigned char *)sb->data + sb->size;
	*p++ = (unsigned char)(0x80 | n);
	p = PUT_KEY(p, "seq");
	*p++ = 0xcf;
	p = put_be(p, st->seq, 8);
	p = PUT_KEY(p, "ts");
	*p++ = 0xcf;
	p = put_be(p, st->ts, 8);
	p = PUT_KEY(p, "type");
	p = put_str(p, ev->type.ptr, ev->type.len);
	if (ev->lead.ptr != NULL) {
		p = PUT_KEY(p, "lead");
		p = put_str(p, ev->lead.ptr, ev->lead.len);
	}
	if (ev->id.ptr != NULL) {
		p = PUT_KEY(p, "id");
		p = put_str(p, ev->id.ptr, ev->id.len);
	}
	if (ev->has_occurred_at) {
		p = PUT_KEY(p, "occurred_at");
		p = put_int(p, ev->occurred_at);
	}
	if (ev->has_cause) {
		p = PUT_KEY(p, "cause");
		p = put_uint(p, ev->cause);
	}
	if (st->producer.ptr != NULL) {
		p = PUT_KEY(p, "producer");
		p = put_str(p, st->producer.ptr, st->producer.len);
	}
	if (stage != NULL) {
		p = PUT_KEY(p, "stage");
		p = put_str(p, stage, stage_len);
		p = PUT_KEY(p, "version");
		p = put_uint(p, st->version);
	}
	if (ev->data != NULL) {
		p = PUT_KEY(p, "data");
		if (copy_data) {   /* the same bytes, found in place (fp_event_data_bytes) */
			memcpy(p, ev->data_at, ev->data_len);
			p += ev->data_len;
		} else {
			/* encoded again by the packer, then room for the tail */
			msgpack_packer pk;
			msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
			sb->size = (size_t)((char *)p - sb->data);
			if (msgpack_pack_object(&pk, *ev->data) != 0 || sbuffer_reserve(sb, tail) != 0) {
				sb->size = start;
				return FUNNEL_ENOMEM;
			}
			p = (unsigned char *)sb->data + sb->size;
		}
	}
	p = PUT_KEY(p, "prev");
	p = put_hash(p, st->prev ? st->prev : zeros);
	p = PUT_KEY(p, "hash");
	p = put_hash(p, zeros);
	sb->size = (size_t)((char *)p - sb->data);

	size_t len = sb->size - start;
	if (len > FP_MAX_RECORD_BYTES) {
		sb->size = start;
		return FUNNEL_ETOOBIG;
	}
	uint8_t *rec = (uint8_t *)sb->data + start;
	crypto_generichash(hash_out, FUNNEL_HASH_BYTES, rec, len - FUNNEL_HASH_BYTES, NULL, 0);
	memcpy(rec + len - FUNNEL_HASH_BYTES, hash_out, FUNNEL_HASH_BYTES);
	return FUNNEL_OK;
}

void
fp_chain_init(fp_chain *c, uint64_t first_seq, const uint8_t *prev)
{
	c->next_seq = first_seq;
	if (prev != NULL)
		memcpy(c->head, prev, FUNNEL_HASH_BYTES);
	else
		memset(c->head, 0, FUNNEL_HASH_BYTES);
}

funnel_err
fp_chain_step(fp_chain *c, const void *rec, size_t len, char *why, size_t whylen)
{
	funnel_record r;
	msgpack_zone zone;
	funnel_err rc = FUNNEL_OK;

	msgpack_zone_init(&zone, 2048);
	if (funnel_record_parse(rec, len, &zone, &r) != FUNNEL_OK) {
		snprintf(why, whylen, "seq %" PRIu64 ": record does not decode", c->next_seq);
		rc = FUNNEL_ECHAIN;
	} else if (r.seq != c->next_seq) {
		snprintf(why, whylen, "seq %" PRIu64 ": record carries seq %" PRIu64,
		         c->next_seq, r.seq);
		rc = FUNNEL_ECHAIN;
	} else if (!funnel_record_hash_ok(rec, len)) {
		snprintf(why, whylen, "seq %" PRIu64 ": record bytes do not match its hash (record altered)",
		         r.seq);
		rc = FUNNEL_ECHAIN;
	} else if (memcmp(r.prev, c->head, FUNNEL_HASH_BYTES) != 0) {
		snprintf(why, whylen, "seq %" PRIu64 ": prev does not match the hash of seq %" PRIu64
		         " (chain broken)", r.seq, r.seq - 1);
		rc = FUNNEL_ECHAIN;
	} else {
		memcpy(c->head, r.hash, FUNNEL_HASH_BYTES);
		c->next_seq++;
	}
	msgpack_zone_destroy(&zone);
	return rc;
}
