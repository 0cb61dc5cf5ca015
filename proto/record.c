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

static void
opt_str(const msgpack_object *map, const char *key, funnel_str *out, funnel_err *rc)
{
	out->ptr = NULL;
	out->len = 0;
	funnel_err e = mp_get_str(map, key, out, NULL);
	if (e == FUNNEL_ETYPE)
		*rc = FUNNEL_ETYPE;
}

int
funnel_record_parse(const void *buf, size_t len, msgpack_zone *zone, funnel_record *r)
{
	msgpack_object o;
	size_t off = 0;
	funnel_err rc = FUNNEL_OK;
	funnel_str bin;

	memset(r, 0, sizeof *r);
	if (msgpack_unpack(buf, len, &off, zone, &o) != MSGPACK_UNPACK_SUCCESS || off != len ||
	    o.type != MSGPACK_OBJECT_MAP)
		return FUNNEL_EMALFORMED;
	if (funnel_record_peek(buf, len, NULL, NULL) != FUNNEL_OK)
		return FUNNEL_EMALFORMED;
	if ((rc = mp_get_u64(&o, "seq", &r->seq, NULL)) != FUNNEL_OK ||
	    (rc = mp_get_u64(&o, "ts", &r->ts, NULL)) != FUNNEL_OK ||
	    (rc = mp_get_str(&o, "type", &r->type, NULL)) != FUNNEL_OK)
		return rc;
	if ((rc = mp_get_bin(&o, "prev", &bin, NULL)) != FUNNEL_OK)
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

	opt_str(&o, "lead", &r->lead, &rc);
	opt_str(&o, "id", &r->id, &rc);
	opt_str(&o, "producer", &r->producer, &rc);
	opt_str(&o, "stage", &r->stage, &rc);
	funnel_err e;
	if ((e = mp_get_i64(&o, "occurred_at", &r->occurred_at, NULL)) == FUNNEL_OK)
		r->has_occurred_at = 1;
	else if (e == FUNNEL_ETYPE)
		rc = e;
	if ((e = mp_get_u64(&o, "cause", &r->cause, NULL)) == FUNNEL_OK)
		r->has_cause = 1;
	else if (e == FUNNEL_ETYPE)
		rc = e;
	if ((e = mp_get_u64(&o, "version", &r->version, NULL)) == FUNNEL_OK)
		r->has_version = 1;
	else if (e == FUNNEL_ETYPE)
		rc = e;
	const msgpack_object *d = mp_find(&o, "data");
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
