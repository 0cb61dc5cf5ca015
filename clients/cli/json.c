/*
 * clients/cli/json.c - JSON <-> msgpack conversion (contract in json.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "funnel/error.h"
#include "json.h"
#include "util.h"

/* ------------------------------------------------------------------
 * msgpack -> JSON
 * ---------------------------------------------------------------- */

/* A float as JSON text that reads back as the same value (as a float32
 * when single is not 0) and as a float: "1.5", "1200.0", "1e+300";
 * "null" for NaN and infinities. */
static void
format_double(double d, int single, char *buf, size_t len)
{
	if (!isfinite(d)) {
		snprintf(buf, len, "null");
		return;
	}
	for (int prec = single ? 6 : 15; prec <= 17; prec++) {
		snprintf(buf, len, "%.*g", prec, d);
		if (single ? strtof(buf, NULL) == (float)d : strtod(buf, NULL) == d)
			break;
	}
	if (strpbrk(buf, ".eE") == NULL)
		strncat(buf, ".0", len - strlen(buf) - 1);
}

static cJSON *
raw_u64(uint64_t v)
{
	char buf[24];
	snprintf(buf, sizeof buf, "%" PRIu64, v);
	return cJSON_CreateRaw(buf);
}

static cJSON *
raw_i64(int64_t v)
{
	char buf[24];
	snprintf(buf, sizeof buf, "%" PRId64, v);
	return cJSON_CreateRaw(buf);
}

/* A NUL-terminated copy of s[0..len), for cJSON's C-string API. */
static char *
dup_n(const char *s, size_t len)
{
	char *c = malloc(len + 1);
	if (c == NULL)
		return NULL;
	if (len > 0)
		memcpy(c, s, len);
	c[len] = '\0';
	return c;
}

/* A string holding NUL bytes, as a raw JSON string literal escaped the
 * way cJSON escapes (\u0000 for NUL): cJSON's own strings end at NUL. */
static cJSON *
string_with_nul(const char *s, size_t len)
{
	char *t = malloc(6 * len + 3);
	size_t n = 0;

	if (t == NULL)
		return NULL;
	t[n++] = '"';
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		const char *esc = NULL;
		switch (c) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		default: break;
		}
		if (esc != NULL) {
			memcpy(t + n, esc, 2);
			n += 2;
		} else if (c < 0x20) {
			n += (size_t)sprintf(t + n, "\\u%04x", c);
		} else {
			t[n++] = (char)c;
		}
	}
	t[n++] = '"';
	t[n] = '\0';
	cJSON *it = cJSON_CreateRaw(t);
	free(t);
	return it;
}

static cJSON *
string_n(const char *s, size_t len)
{
	if (len > 0 && memchr(s, '\0', len) != NULL)
		return string_with_nul(s, len);
	char *c = dup_n(s, len);
	if (c == NULL)
		return NULL;
	cJSON *it = cJSON_CreateString(c);
	free(c);
	return it;
}

static cJSON *
hex_string(const void *bytes, size_t len)
{
	char *h = malloc(2 * len + 1);
	if (h == NULL)
		return NULL;
	cli_hex(bytes, len, h);
	cJSON *it = cJSON_CreateString(h);
	free(h);
	return it;
}

/* The text a map key is shown as; malloc'ed, the caller frees. */
static char *
key_text(const msgpack_object *k)
{
	char buf[40];

	switch (k->type) {
	case MSGPACK_OBJECT_STR:
		return dup_n(k->via.str.ptr, k->via.str.size);
	case MSGPACK_OBJECT_BIN: {
		char *h = malloc(2 * (size_t)k->via.bin.size + 1);
		if (h != NULL)
			cli_hex(k->via.bin.ptr, k->via.bin.size, h);
		return h;
	}
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		snprintf(buf, sizeof buf, "%" PRIu64, k->via.u64);
		return strdup(buf);
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		snprintf(buf, sizeof buf, "%" PRId64, k->via.i64);
		return strdup(buf);
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		format_double(k->via.f64, k->type == MSGPACK_OBJECT_FLOAT32, buf, sizeof buf);
		return strdup(buf);
	default: {
		/* nil, bool, array, map, ext: their compact JSON text */
		cJSON *it = fjson_from_msgpack(k);
		char *s = it != NULL ? cJSON_PrintUnformatted(it) : NULL;
		char *copy = s != NULL ? strdup(s) : NULL;
		cJSON_free(s);
		cJSON_Delete(it);
		return copy;
	}
	}
}

cJSON *
fjson_from_msgpack(const msgpack_object *o)
{
	char buf[40];
	cJSON *it = NULL;

	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
	case MSGPACK_OBJECT_EXT:
		return cJSON_CreateNull();
	case MSGPACK_OBJECT_BOOLEAN:
		return cJSON_CreateBool(o->via.boolean);
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		return raw_u64(o->via.u64);
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		return raw_i64(o->via.i64);
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		format_double(o->via.f64, o->type == MSGPACK_OBJECT_FLOAT32, buf, sizeof buf);
		return cJSON_CreateRaw(buf);
	case MSGPACK_OBJECT_STR:
		return string_n(o->via.str.ptr, o->via.str.size);
	case MSGPACK_OBJECT_BIN:
		return hex_string(o->via.bin.ptr, o->via.bin.size);
	case MSGPACK_OBJECT_ARRAY:
		if ((it = cJSON_CreateArray()) == NULL)
			return NULL;
		for (uint32_t i = 0; i < o->via.array.size; i++) {
			cJSON *c = fjson_from_msgpack(&o->via.array.ptr[i]);
			if (c == NULL || !cJSON_AddItemToArray(it, c)) {
				cJSON_Delete(c);
				goto fail;
			}
		}
		return it;
	case MSGPACK_OBJECT_MAP:
		if ((it = cJSON_CreateObject()) == NULL)
			return NULL;
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			const msgpack_object_kv *kv = &o->via.map.ptr[i];
			char *key = key_text(&kv->key);
			cJSON *c = key != NULL ? fjson_from_msgpack(&kv->val) : NULL;
			int ok = c != NULL && cJSON_AddItemToObject(it, key, c);
			free(key);
			if (!ok) {
				cJSON_Delete(c);
				goto fail;
			}
		}
		return it;
	}
	return cJSON_CreateNull();
fail:
	cJSON_Delete(it);
	return NULL;
}

/* Add item under key, or free it; NULL when item was NULL or the add
 * failed. */
static cJSON *
add(cJSON *obj, const char *key, cJSON *item)
{
	if (item == NULL)
		return NULL;
	if (!cJSON_AddItemToObject(obj, key, item)) {
		cJSON_Delete(item);
		return NULL;
	}
	return item;
}

cJSON *
fjson_add_u64(cJSON *obj, const char *key, uint64_t v)
{
	return add(obj, key, raw_u64(v));
}

cJSON *
fjson_add_i64(cJSON *obj, const char *key, int64_t v)
{
	return add(obj, key, raw_i64(v));
}

cJSON *
fjson_add_strn(cJSON *obj, const char *key, const char *s, size_t len)
{
	return add(obj, key, string_n(s, len));
}

cJSON *
fjson_add_hex(cJSON *obj, const char *key, const void *bytes, size_t len)
{
	return add(obj, key, hex_string(bytes, len));
}

cJSON *
fjson_record(const funnel_record *r)
{
	char when[CLI_TIME_LEN];
	cJSON *o = cJSON_CreateObject();

	if (o == NULL)
		return NULL;
	cli_format_time(r->ts, when);
	if (fjson_add_u64(o, "seq", r->seq) == NULL || fjson_add_u64(o, "ts", r->ts) == NULL ||
	    cJSON_AddStringToObject(o, "time", when) == NULL ||
	    fjson_add_strn(o, "type", r->type.ptr, r->type.len) == NULL)
		goto fail;
	if (r->lead.ptr != NULL && fjson_add_strn(o, "lead", r->lead.ptr, r->lead.len) == NULL)
		goto fail;
	if (r->id.ptr != NULL && fjson_add_strn(o, "id", r->id.ptr, r->id.len) == NULL)
		goto fail;
	if (r->has_occurred_at && fjson_add_i64(o, "occurred_at", r->occurred_at) == NULL)
		goto fail;
	if (r->has_cause && fjson_add_u64(o, "cause", r->cause) == NULL)
		goto fail;
	if (r->producer.ptr != NULL &&
	    fjson_add_strn(o, "producer", r->producer.ptr, r->producer.len) == NULL)
		goto fail;
	if (r->stage.ptr != NULL && fjson_add_strn(o, "stage", r->stage.ptr, r->stage.len) == NULL)
		goto fail;
	if (r->has_version && fjson_add_u64(o, "version", r->version) == NULL)
		goto fail;
	if (r->data != NULL && add(o, "data", fjson_from_msgpack(r->data)) == NULL)
		goto fail;
	if (fjson_add_hex(o, "prev", r->prev, FUNNEL_HASH_BYTES) == NULL ||
	    fjson_add_hex(o, "hash", r->hash, FUNNEL_HASH_BYTES) == NULL)
		goto fail;
	return o;
fail:
	cJSON_Delete(o);
	return NULL;
}

int
fjson_print(FILE *f, const cJSON *item)
{
	char *s = cJSON_PrintUnformatted(item);
	if (s == NULL)
		return -1;
	int rc = fputs(s, f) < 0 ? -1 : 0;
	cJSON_free(s);
	return rc;
}

int
fjson_shorten(cJSON *item, size_t max)
{
	if (cJSON_IsString(item)) {
		size_t n = strlen(item->valuestring);
		if (n <= max)
			return 0;
		size_t keep = max;
		while (keep > 0 && ((unsigned char)item->valuestring[keep] & 0xC0) == 0x80)
			keep--;   /* not inside a UTF-8 character */
		char *s = malloc(keep + 48);
		if (s == NULL)
			return -1;
		snprintf(s, keep + 48, "%.*s... (%zu bytes)", (int)keep, item->valuestring, n);
		/* cJSON owns valuestring: swap it for ours, freed with the item */
		cJSON_free(item->valuestring);
		item->valuestring = s;
		return 0;
	}
	for (cJSON *c = item->child; c != NULL; c = c->next)
		if (fjson_shorten(c, max) != 0)
			return -1;
	return 0;
}

int
fjson_print_line(FILE *f, const cJSON *item)
{
	if (fjson_print(f, item) != 0 || putc('\n', f) == EOF)
		return -1;
	return 0;
}
