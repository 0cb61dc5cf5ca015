/*
 * proto/mp.h - small typed accessors over msgpack-c objects, so every
 * decoder in funnel reads maps the same way and reports the same errors.
 *
 * All returned pointers are views into the object passed in.
 */
#ifndef FUNNEL_PROTO_MP_H
#define FUNNEL_PROTO_MP_H

#include <stdint.h>
#include <msgpack.h>

#include "funnel/record.h"   /* funnel_str */
#include "error.h"
#include "utf8.h"            /* mp_utf8_invalid_at, here for the readers that include mp.h */

/* The value stored under a string key in a map, or NULL. */
const msgpack_object *mp_find(const msgpack_object *map, const char *key);

/* Key equality against a C string. */
int mp_key_is(const msgpack_object *k, const char *key);

/*
 * Typed getters.  Each returns FUNNEL_OK and sets *out when the key holds
 * the type, FUNNEL_EMISSING when the key is absent (leaving *out alone) or
 * FUNNEL_ETYPE when it holds another type; errors are described in *err
 * (which may be NULL), naming the key.
 */
funnel_err mp_get_u64(const msgpack_object *map, const char *key, uint64_t *out, fp_error *err);
funnel_err mp_get_i64(const msgpack_object *map, const char *key, int64_t *out, fp_error *err);
funnel_err mp_get_str(const msgpack_object *map, const char *key, funnel_str *out, fp_error *err);
funnel_err mp_get_bool(const msgpack_object *map, const char *key, int *out, fp_error *err);
funnel_err mp_get_bin(const msgpack_object *map, const char *key, funnel_str *out, fp_error *err);
funnel_err mp_get_f64(const msgpack_object *map, const char *key, double *out, fp_error *err);

/*
 * Whether buf[*off..len) starts with one complete msgpack value, judged
 * as msgpack_unpack() judges it (a value it returns SUCCESS or
 * EXTRA_BYTES for; at most MSGPACK_EMBED_STACK_SIZE containers open at
 * once, 0xc1 refused) without building any object: 0 with *off moved
 * past the value, or -1 with *off unchanged.  Reads nothing outside buf.
 */
int mp_check_value(const void *buf, size_t len, size_t *off);

/* Pack helpers: a string key, a C string or a counted string value. */
int mp_pack_key(msgpack_packer *pk, const char *key);
int mp_pack_cstr(msgpack_packer *pk, const char *s);
int mp_pack_str(msgpack_packer *pk, funnel_str s);

#endif /* FUNNEL_PROTO_MP_H */
