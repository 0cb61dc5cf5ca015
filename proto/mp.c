/*
 * proto/mp.c - typed accessors over msgpack-c objects.
 */
#include <string.h>

#include "mp.h"

int
mp_key_is(const msgpack_object *k, const char *key)
{
	size_t n = strlen(key);
	return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
	       memcmp(k->via.str.ptr, key, n) == 0;
}

const msgpack_object *
mp_find(const msgpack_object *map, const char *key)
{
	if (map == NULL || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	size_t n = strlen(key);   /* once, not once per key of the map */
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object *k = &map->via.map.ptr[i].key;
		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
		    memcmp(k->via.str.ptr, key, n) == 0)
			return &map->via.map.ptr[i].val;
	}
	return NULL;
}

static funnel_err
wrong_type(fp_error *err, const char *key, const char *want)
{
	return fp_error_set(err, FUNNEL_ETYPE, key, "field '%s' must be %s", key, want);
}

funnel_err
mp_get_u64(const msgpack_object *map, const char *key, uint64_t *out, fp_error *err)
{
	const msgpack_object *v = mp_find(map, key);
	if (v == NULL)
		return FUNNEL_EMISSING;
	if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return wrong_type(err, key, "a non-negative integer");
	*out = v->via.u64;
	return FUNNEL_OK;
}

funnel_err
mp_get_i64(const msgpack_object *map, const char *key, int64_t *out, fp_error *err)
{
	const msgpack_object *v = mp_find(map, key);
	if (v == NULL)
		return FUNNEL_EMISSING;
	if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		*out = v->via.i64;
	} else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= INT64_MAX) {
		*out = (int64_t)v->via.u64;
	} else {
		return wrong_type(err, key, "an integer (int64)");
	}
	return FUNNEL_OK;
}

funnel_err
mp_get_str(const msgpack_object *map, const char *key, funnel_str *out, fp_error *err)
{
	const msgpack_object *v = mp_find(map, key);
	if (v == NULL)
		return FUNNEL_EMISSING;
	if (v->type != MSGPACK_OBJECT_STR)
		return wrong_type(err, key, "a string");
	out->ptr = v->via.str.ptr;
	out->len = v->via.str.size;
	return FUNNEL_OK;
}

funnel_err
mp_get_bin(const msgpack_object *map, const char *key, funnel_str *out, fp_error *err)
{
	const msgpack_object *v = mp_find(map, key);
	if (v == NULL)
		return FUNNEL_EMISSING;
	if (v->type != MSGPACK_OBJECT_BIN)
		return wrong_type(err, key, "binary");
	out->ptr = v->via.bin.ptr;
	out->len = v->via.bin.size;
	return FUNNEL_OK;
}

funnel_err
mp_get_bool(const msgpack_object *map, const char *key, int *out, fp_error *err)
{
	const msgpack_object *v = mp_find(map, key);
	if (v == NULL)
		return FUNNEL_EMISSING;
	if (v->type != MSGPACK_OBJECT_BOOLEAN)
		return wrong_type(err, key, "a boolean");
	*out = v->via.boolean ? 1 : 0;
	return FUNNEL_OK;
}

funnel_err
mp_get_f64(const msgpack_object *map, const char *key, double *out, fp_error *err)
{
	const msgpack_object *v = mp_find(map, key);
	if (v == NULL)
		return FUNNEL_EMISSING;
	switch (v->type) {
	case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)v->via.u64; break;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)v->via.i64; break;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64: *out = v->via.f64; break;
	default: return wrong_type(err, key, "a number");
	}
	return FUNNEL_OK;
}

int
mp_pack_key(msgpack_packer *pk, const char *key)
{
	return mp_pack_cstr(pk, key);
}

/* A string of under 32 bytes is a fixstr: its header byte and its bytes
 * go to the writer in one call (the same bytes msgpack_pack_str() and
 * msgpack_pack_str_body() write; keys and most values are this short). */
static int
pack_short_str(msgpack_packer *pk, const char *s, size_t n)
{
	char buf[32];
	buf[0] = (char)(0xa0 | n);
	if (n > 0)
		memcpy(buf + 1, s, n);
	return pk->callback(pk->data, buf, n + 1);
}

int
mp_pack_cstr(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);
	if (n < 32)
		return pack_short_str(pk, s, n);
	if (msgpack_pack_str(pk, n) != 0)
		return -1;
	return msgpack_pack_str_body(pk, s, n);
}

int
mp_pack_str(msgpack_packer *pk, funnel_str s)
{
	if (s.len < 32)
		return pack_short_str(pk, s.ptr, s.len);
	if (msgpack_pack_str(pk, s.len) != 0)
		return -1;
	return msgpack_pack_str_body(pk, s.ptr, s.len);
}
