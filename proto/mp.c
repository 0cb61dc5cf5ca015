/*
 * proto/mp.c - typed accessors over msgpack-c objects.
 */
#include <string.h>

#include "mp.h"
#include <msgpack/unpack_define.h>   /* MSGPACK_EMBED_STACK_SIZE: the unpacker's depth */

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

/* Big-endian n (1, 2 or 4) bytes at p. */
static uint32_t
be_len(const unsigned char *p, int n)
{
	uint32_t v = 0;
	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

int
mp_check_value(const void *buf, size_t len, size_t *off)
{
	const unsigned char *b = buf;
	size_t p = *off;
	uint64_t left[MSGPACK_EMBED_STACK_SIZE];   /* values still to come in each open container */
	int top = 0;

	for (;;) {
		if (p >= len)
			return -1;
		unsigned c = b[p++];
		uint64_t skip = 0;   /* bytes after the header (and its length field) */
		int lenb = 0;        /* bytes of the length field that follows */
		int cont = 0;        /* a container: 1 array, 2 map */
		uint64_t count = 0;
		if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
			/* fixints, nil, booleans */
		} else if (c >= 0xa0 && c <= 0xbf) {
			skip = c & 0x1f;
		} else if (c >= 0x90 && c <= 0x9f) {
			cont = 1;
			count = c & 0x0f;
		} else if (c >= 0x80 && c <= 0x8f) {
			cont = 2;
			count = c & 0x0f;
		} else {
			switch (c) {
			case 0xc4: case 0xd9: lenb = 1; break;          /* bin 8, str 8 */
			case 0xc5: case 0xda: lenb = 2; break;          /* bin 16, str 16 */
			case 0xc6: case 0xdb: lenb = 4; break;          /* bin 32, str 32 */
			case 0xc7: lenb = 1; skip = 1; break;           /* ext 8: + type */
			case 0xc8: lenb = 2; skip = 1; break;
			case 0xc9: lenb = 4; skip = 1; break;
			case 0xca: case 0xce: case 0xd2: skip = 4; break;
			case 0xcb: case 0xcf: case 0xd3: skip = 8; break;
			case 0xcc: case 0xd0: skip = 1; break;
			case 0xcd: case 0xd1: skip = 2; break;
			case 0xd4: skip = 2; break;                     /* fixext: type + data */
			case 0xd5: skip = 3; break;
			case 0xd6: skip = 5; break;
			case 0xd7: skip = 9; break;
			case 0xd8: skip = 17; break;
			case 0xdc: cont = 1; lenb = 2; break;
			case 0xdd: cont = 1; lenb = 4; break;
			case 0xde: cont = 2; lenb = 2; break;
			case 0xdf: cont = 2; lenb = 4; break;
			default: return -1;                             /* 0xc1: never used */
			}
			if (lenb > 0) {
				if (len - p < (size_t)lenb)
					return -1;
				if (cont)
					count = be_len(b + p, lenb);
				else
					skip += be_len(b + p, lenb);
				p += (size_t)lenb;
			}
		}
		if (cont) {
			/* msgpack-c refuses a container, even an empty one, once
			 * MSGPACK_EMBED_STACK_SIZE are open */
			if (top >= MSGPACK_EMBED_STACK_SIZE)
				return -1;
			if (count > 0) {
				left[top++] = cont == 2 ? 2 * count : count;
				continue;
			}
		} else {
			if (len - p < skip)
				return -1;
			p += (size_t)skip;
		}
		/* a value is complete: count it into the containers it closes */
		while (top > 0 && --left[top - 1] == 0)
			top--;
		if (top == 0) {
			*off = p;
			return 0;
		}
	}
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
