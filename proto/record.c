/*
 * proto/record.c - reading records (the public half of the record format;
 * writing them is fp_record_encode in envelope.c).
 */
#include <string.h>

#include <sodium.h>

#include "funnel/record.h"
#include "bytes.h"
#include "envelope.h"
#include "mp.h"

/* Fixed prefix of every record: fixmap header, "seq", 0xcf + 8 bytes,
 * "ts", 0xcf + 8 bytes.  SEQ_OFF and TS_OFF are where the values start. */
#define SEQ_OFF 6
#define TS_OFF 18
#define PREFIX_LEN 26

int
funnel_record_peek(const void *buf, size_t len, uint64_t *seq, uint64_t *ts)
{
	const uint8_t *p = buf;
	if (len < PREFIX_LEN || (p[0] & 0xf0) != 0x80 ||
	    memcmp(p + 1, "\xa3seq\xcf", 5) != 0 || memcmp(p + 14, "\xa2ts\xcf", 4) != 0)
		return FUNNEL_EMALFORMED;
	if (seq != NULL)
		*seq = fp_get_be64(p + SEQ_OFF);
	if (ts != NULL)
		*ts = fp_get_be64(p + TS_OFF);
	return FUNNEL_OK;
}

int
funnel_record_hash_ok(const void *buf, size_t len)
{
	uint8_t h[FUNNEL_HASH_BYTES];
	if (len < PREFIX_LEN + FUNNEL_HASH_BYTES)
		return 0;
	crypto_generichash(h, sizeof h, buf, len - FUNNEL_HASH_BYTES, NULL, 0);
	return sodium_memcmp(h, (const uint8_t *)buf + len - FUNNEL_HASH_BYTES, sizeof h) == 0;
}

/* The record's top-level keys funnel_record_parse reads.  Found in one
 * pass over the map (a record has a dozen keys; a lookup per key walked
 * it a dozen times, a twelfth of every service's rebuild); the first of
 * a repeated key counts, as with mp_find. */
enum { K_SEQ, K_TS, K_TYPE, K_PREV, K_LEAD, K_ID, K_PRODUCER, K_STAGE, K_OCCURRED_AT, K_CAUSE,
       K_VERSION, K_DATA, K_COUNT };
static const struct {
	const char *name;
	uint32_t len;
} keys[K_COUNT] = {
	[K_SEQ] = { "seq", 3 }, [K_TS] = { "ts", 2 }, [K_TYPE] = { "type", 4 },
	[K_PREV] = { "prev", 4 }, [K_LEAD] = { "lead", 4 }, [K_ID] = { "id", 2 },
	[K_PRODUCER] = { "producer", 8 }, [K_STAGE] = { "stage", 5 },
	[K_OCCURRED_AT] = { "occurred_at", 11 }, [K_CAUSE] = { "cause", 5 },
	[K_VERSION] = { "version", 7 }, [K_DATA] = { "data", 4 },
};

static void
find_keys(const msgpack_object *map, const msgpack_object *val[K_COUNT])
{
	memset(val, 0, K_COUNT * sizeof *val);
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key;
		if (k->type != MSGPACK_OBJECT_STR || k->via.str.size < 2 || k->via.str.size > 11)
			continue;
		/* its length and first byte rule out most keys before a memcmp */
		for (int f = 0; f < K_COUNT; f++) {
			if (k->via.str.size == keys[f].len && k->via.str.ptr[0] == keys[f].name[0] &&
			    memcmp(k->via.str.ptr, keys[f].name, keys[f].len) == 0) {
				if (val[f] == NULL)
					val[f] = &map->via.map.ptr[i].val;
				break;
			}
		}
	}
}

/* A value found by find_keys, as mp_get_u64 / mp_get_str / mp_get_bin
 * read it: FUNNEL_EMISSING (v NULL), FUNNEL_ETYPE, or FUNNEL_OK. */
static funnel_err
val_u64(const msgpack_object *v, uint64_t *out)
{
	if (v == NULL)
		return FUNNEL_EMISSING;
	if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return FUNNEL_ETYPE;
	*out = v->via.u64;
	return FUNNEL_OK;
}

static funnel_err
val_raw(const msgpack_object *v, msgpack_object_type type, funnel_str *out)
{
	if (v == NULL)
		return FUNNEL_EMISSING;
	if (v->type != type)
		return FUNNEL_ETYPE;
	out->ptr = type == MSGPACK_OBJECT_STR ? v->via.str.ptr : v->via.bin.ptr;
	out->len = type == MSGPACK_OBJECT_STR ? v->via.str.size : v->via.bin.size;
	return FUNNEL_OK;
}

/* An optional string: absent leaves out empty, another type sets *rc. */
static void
opt_str(const msgpack_object *v, funnel_str *out, funnel_err *rc)
{
	if (val_raw(v, MSGPACK_OBJECT_STR, out) == FUNNEL_ETYPE)
		*rc = FUNNEL_ETYPE;
}

/* An optional uint: 1 when present (*out set), 0 when absent; another
 * type sets *rc. */
static int
opt_u64(const msgpack_object *v, uint64_t *out, funnel_err *rc)
{
	funnel_err e = val_u64(v, out);
	if (e == FUNNEL_ETYPE)
		*rc = e;
	return e == FUNNEL_OK;
}

int
funnel_record_parse(const void *buf, size_t len, msgpack_zone *zone, funnel_record *r)
{
	msgpack_object o;
	const msgpack_object *val[K_COUNT];
	size_t off = 0;
	funnel_err rc = FUNNEL_OK;
	funnel_str bin;

	memset(r, 0, sizeof *r);
	if (msgpack_unpack(buf, len, &off, zone, &o) != MSGPACK_UNPACK_SUCCESS || off != len ||
	    o.type != MSGPACK_OBJECT_MAP)
		return FUNNEL_EMALFORMED;
	if (funnel_record_peek(buf, len, NULL, NULL) != FUNNEL_OK)
		return FUNNEL_EMALFORMED;
	find_keys(&o, val);
	if ((rc = val_u64(val[K_SEQ], &r->seq)) != FUNNEL_OK ||
	    (rc = val_u64(val[K_TS], &r->ts)) != FUNNEL_OK ||
	    (rc = val_raw(val[K_TYPE], MSGPACK_OBJECT_STR, &r->type)) != FUNNEL_OK)
		return rc;
	if ((rc = val_raw(val[K_PREV], MSGPACK_OBJECT_BIN, &bin)) != FUNNEL_OK)
		return rc;
	if (bin.len != FUNNEL_HASH_BYTES)
		return FUNNEL_EMALFORMED;
	r->prev = (const uint8_t *)bin.ptr;
	/* hash must be the last key, a bin 8 of 32 bytes ending the record */
	if (o.via.map.size == 0)
		return FUNNEL_EMALFORMED;
	const msgpack_object_kv *last = &o.via.map.ptr[o.via.map.size - 1];
	if (!mp_key_is(&last->key, "hash") || last->val.type != MSGPACK_OBJECT_BIN ||
	    last->val.via.bin.size != FUNNEL_HASH_BYTES ||
	    (const uint8_t *)last->val.via.bin.ptr != (const uint8_t *)buf + len - FUNNEL_HASH_BYTES)
		return FUNNEL_EMALFORMED;
	r->hash = (const uint8_t *)last->val.via.bin.ptr;

	opt_str(val[K_LEAD], &r->lead, &rc);
	opt_str(val[K_ID], &r->id, &rc);
	opt_str(val[K_PRODUCER], &r->producer, &rc);
	opt_str(val[K_STAGE], &r->stage, &rc);
	const msgpack_object *at = val[K_OCCURRED_AT];
	if (at != NULL && at->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		r->occurred_at = at->via.i64;
		r->has_occurred_at = 1;
	} else if (at != NULL && at->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
	           at->via.u64 <= INT64_MAX) {
		r->occurred_at = (int64_t)at->via.u64;
		r->has_occurred_at = 1;
	} else if (at != NULL) {
		rc = FUNNEL_ETYPE;
	}
	r->has_cause = opt_u64(val[K_CAUSE], &r->cause, &rc);
	r->has_version = opt_u64(val[K_VERSION], &r->version, &rc);
	const msgpack_object *d = val[K_DATA];
	if (d != NULL) {
		if (d->type != MSGPACK_OBJECT_MAP)
			rc = FUNNEL_ETYPE;
		r->data = d;
	}
	r->bytes = buf;
	r->len = len;
	return rc;
}

uint64_t
funnel_record_event_time(const funnel_record *r)
{
	if (r->has_occurred_at && r->occurred_at > 0 && (uint64_t)r->occurred_at <= r->ts)
		return (uint64_t)r->occurred_at;
	return r->ts;
}

uint64_t
funnel_record_event_time_after(const funnel_record *r, uint64_t prev)
{
	uint64_t t = funnel_record_event_time(r);
	return t < prev ? prev : t;
}
