/*
 * proto/seal.c - sealed personal values (see seal.h).
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "seal.h"

/* lead | 0x00 | path, into buf (at least FP_MAX... bounded by the caller's sizes). */
static size_t
assoc(uint8_t *buf, size_t cap, funnel_str lead, const char *path, size_t path_len)
{
	if (lead.len + 1 + path_len > cap)
		return 0;
	memcpy(buf, lead.ptr, lead.len);
	buf[lead.len] = 0;
	memcpy(buf + lead.len + 1, path, path_len);
	return lead.len + 1 + path_len;
}

#define AD_CAP (256 + 1 + FP_SEAL_MAX_PATH)

int
fp_seal_pack(msgpack_packer *pk, const uint8_t key[FP_SEAL_KEY_BYTES],
             const uint8_t nonce[FP_SEAL_NONCE_BYTES], funnel_str lead,
             const char *path, size_t path_len, const void *plain, size_t plen)
{
	uint8_t ad[AD_CAP];
	size_t adlen = assoc(ad, sizeof ad, lead, path, path_len);
	size_t n = FP_SEAL_OVERHEAD + plen;
	uint8_t stackbuf[512];
	uint8_t *buf = n <= sizeof stackbuf ? stackbuf : malloc(n);
	unsigned long long clen = 0;
	int rc;

	if (buf == NULL || (adlen == 0 && path_len > 0))
		return -1;
	buf[0] = FP_SEAL_VERSION;
	memcpy(buf + 1, nonce, FP_SEAL_NONCE_BYTES);
	crypto_aead_xchacha20poly1305_ietf_encrypt(buf + 1 + FP_SEAL_NONCE_BYTES, &clen, plain, plen,
	                                           ad, adlen, NULL, buf + 1, key);
	rc = msgpack_pack_ext(pk, n, FP_SEAL_EXT) | msgpack_pack_ext_body(pk, buf, n);
	if (buf != stackbuf)
		free(buf);
	return rc != 0 ? -1 : 0;
}

int
fp_seal_is(const msgpack_object *o)
{
	return o->type == MSGPACK_OBJECT_EXT && o->via.ext.type == FP_SEAL_EXT;
}

int
fp_seal_open(const msgpack_object *o, const uint8_t key[FP_SEAL_KEY_BYTES], funnel_str lead,
             const char *path, size_t path_len, msgpack_zone *z, msgpack_object *out)
{
	uint8_t ad[AD_CAP];
	size_t adlen = assoc(ad, sizeof ad, lead, path, path_len);
	if (!fp_seal_is(o))
		return -1;
	const uint8_t *p = (const uint8_t *)o->via.ext.ptr;
	size_t n = o->via.ext.size;
	if (n < FP_SEAL_OVERHEAD || p[0] != FP_SEAL_VERSION || adlen == 0 || key == NULL)
		return 1;
	size_t plen = n - FP_SEAL_OVERHEAD;
	uint8_t *plain = msgpack_zone_malloc(z, plen ? plen : 1);
	unsigned long long got = 0;
	if (plain == NULL)
		return -1;
	if (crypto_aead_xchacha20poly1305_ietf_decrypt(plain, &got, NULL, p + 1 + FP_SEAL_NONCE_BYTES,
	                                               n - 1 - FP_SEAL_NONCE_BYTES, ad, adlen,
	                                               p + 1, key) != 0)
		return 1;
	size_t off = 0;
	if (msgpack_unpack((const char *)plain, got, &off, z, out) != MSGPACK_UNPACK_SUCCESS || off != got)
		return 1;
	return 0;
}

static void
set_erased(msgpack_object *o)
{
	o->type = MSGPACK_OBJECT_STR;
	o->via.str.ptr = FP_SEAL_ERASED;
	o->via.str.size = sizeof FP_SEAL_ERASED - 1;
}

/* With probe set, nothing is changed and the walk counts the values
 * that do not open (as a negative count below -1 never occurs: returns
 * the number of failures). */
int
fp_seal_path_join(char *path, size_t plen, const msgpack_object *key)
{
	if (key->type != MSGPACK_OBJECT_STR)
		return -1;
	size_t n = plen + (plen ? 1 : 0) + key->via.str.size;
	if (n > FP_SEAL_MAX_PATH)
		return -1;
	if (plen)
		path[plen++] = '.';
	memcpy(path + plen, key->via.str.ptr, key->via.str.size);
	return (int)n;
}

static int
open_walk(msgpack_object *map, const uint8_t *key, funnel_str lead, msgpack_zone *z,
          char *path, size_t plen, int depth, int probe)
{
	int found = 0;
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		msgpack_object_kv *kv = &map->via.map.ptr[i];
		int joined = fp_seal_path_join(path, plen, &kv->key);
		if (joined < 0)
			continue;
		size_t n = (size_t)joined;
		if (fp_seal_is(&kv->val)) {
			msgpack_object clear;
			int rc = key != NULL ? fp_seal_open(&kv->val, key, lead, path, n, z, &clear) : 1;
			if (rc < 0)
				return -1;
			if (probe)
				found += rc != 0;
			else if (rc == 0)
				kv->val = clear;
			else
				set_erased(&kv->val);
			found += !probe;
		} else if (kv->val.type == MSGPACK_OBJECT_MAP && depth + 1 < FP_SEAL_MAX_DEPTH) {
			int rc = open_walk(&kv->val, key, lead, z, path, n, depth + 1, probe);
			if (rc < 0)
				return -1;
			found += rc;
		}
	}
	return found;
}

int
fp_seal_open_all(msgpack_object *data, const uint8_t *key, funnel_str lead, msgpack_zone *z)
{
	char path[FP_SEAL_MAX_PATH + 1];
	if (data == NULL || data->type != MSGPACK_OBJECT_MAP)
		return 0;
	return open_walk(data, key, lead, z, path, 0, 0, 0);
}

int
fp_seal_opens(const msgpack_object *data, const uint8_t key[FP_SEAL_KEY_BYTES], funnel_str lead,
              msgpack_zone *z)
{
	char path[FP_SEAL_MAX_PATH + 1];
	if (data == NULL || data->type != MSGPACK_OBJECT_MAP)
		return 1;
	/* the probe changes nothing: the cast only shares the walk */
	return open_walk((msgpack_object *)data, key, lead, z, path, 0, 0, 1) == 0;
}

static int
any_walk(const msgpack_object *map, int depth)
{
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object *v = &map->via.map.ptr[i].val;
		if (fp_seal_is(v))
			return 1;
		if (v->type == MSGPACK_OBJECT_MAP && depth + 1 < FP_SEAL_MAX_DEPTH && any_walk(v, depth + 1))
			return 1;
	}
	return 0;
}

int
fp_seal_any(const msgpack_object *data)
{
	return data != NULL && data->type == MSGPACK_OBJECT_MAP && any_walk(data, 0);
}
