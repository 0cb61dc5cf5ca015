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
 * JSON -> msgpack
 * ---------------------------------------------------------------- */

/* The number literals of a JSON text in document order, which is the
 * order a depth-first walk of cJSON's tree meets its numbers in. */
struct numlit {
	const char *p;
	size_t len;
};

struct numlits {
	struct numlit *v;
	size_t n, cap, next;
};

/*
 * Collect the number literals of text[0..len), a text cJSON has already
 * accepted: outside strings, a number is the only token that starts with
 * '-' or a digit, and it runs over [0-9+-.eE].
 */
static int
numlits_scan(struct numlits *nl, const char *text, size_t len)
{
	size_t i = 0;

	while (i < len) {
		char c = text[i];
		if (c == '"') {
			for (i++; i < len && text[i] != '"'; i++) {
				if (text[i] == '\\')
					i++;
			}
			i++;
		} else if (c == '-' || (c >= '0' && c <= '9')) {
			size_t start = i;
			while (i < len && strchr("0123456789+-.eE", text[i]) != NULL && text[i] != '\0')
				i++;
			if (nl->n == nl->cap) {
				size_t cap = nl->cap ? nl->cap * 2 : 16;
				struct numlit *v = realloc(nl->v, cap * sizeof *v);
				if (v == NULL)
					return -1;
				nl->v = v;
				nl->cap = cap;
			}
			nl->v[nl->n].p = text + start;
			nl->v[nl->n].len = i - start;
			nl->n++;
		} else {
			i++;
		}
	}
	return 0;
}

/* Pack a cJSON number, exactly when its literal is an integer. */
static int
pack_number(msgpack_packer *pk, const cJSON *it, struct numlits *nl)
{
	char buf[32];
	char *end;

	if (nl->next >= nl->n)
		return msgpack_pack_double(pk, it->valuedouble);
	const struct numlit *lit = &nl->v[nl->next++];
	if (lit->len >= sizeof buf || memchr(lit->p, '.', lit->len) != NULL ||
	    memchr(lit->p, 'e', lit->len) != NULL || memchr(lit->p, 'E', lit->len) != NULL)
		return msgpack_pack_double(pk, it->valuedouble);
	memcpy(buf, lit->p, lit->len);
	buf[lit->len] = '\0';
	errno = 0;
	if (buf[0] == '-') {
		long long v = strtoll(buf, &end, 10);
		if (errno == 0 && *end == '\0')
			return msgpack_pack_int64(pk, v);
	} else {
		unsigned long long v = strtoull(buf, &end, 10);
		if (errno == 0 && *end == '\0')
			return msgpack_pack_uint64(pk, v);
	}
	return msgpack_pack_double(pk, it->valuedouble);
}

static int
pack_cstr(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);
	if (msgpack_pack_str(pk, n) != 0)
		return -1;
	return msgpack_pack_str_body(pk, s, n);
}

/* cJSON bounds nesting (CJSON_NESTING_LIMIT), so this recursion is bounded. */
static int
pack_item(msgpack_packer *pk, const cJSON *it, struct numlits *nl)
{
	const cJSON *c;
	size_t n = 0;

	if (cJSON_IsNull(it))
		return msgpack_pack_nil(pk);
	if (cJSON_IsTrue(it))
		return msgpack_pack_true(pk);
	if (cJSON_IsFalse(it))
		return msgpack_pack_false(pk);
	if (cJSON_IsNumber(it))
		return pack_number(pk, it, nl);
	if (cJSON_IsString(it))
		return pack_cstr(pk, it->valuestring);
	if (cJSON_IsArray(it) || cJSON_IsObject(it)) {
		for (c = it->child; c != NULL; c = c->next)
			n++;
		if ((cJSON_IsArray(it) ? msgpack_pack_array(pk, n) : msgpack_pack_map(pk, n)) != 0)
			return -1;
		for (c = it->child; c != NULL; c = c->next) {
			if (cJSON_IsObject(it) && pack_cstr(pk, c->string) != 0)
				return -1;
			if (pack_item(pk, c, nl) != 0)
				return -1;
		}
		return 0;
	}
	return -1;
}

/* How much of the text at an error to quote: up to 12 bytes of one line. */
static size_t
snippet_len(const char *p, size_t left)
{
	size_t n = 0;
	while (n < left && n < 12 && p[n] != '\n' && p[n] != '\r' && p[n] != '\0')
		n++;
	return n;
}

int
fjson_pack_text(msgpack_packer *pk, const char *text, size_t len, char *err, size_t errlen)
{
	const char *end = NULL;
	struct numlits nl = { 0 };
	int rc = FUNNEL_OK;

	cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
	if (root == NULL) {
		size_t at = end != NULL && end >= text ? (size_t)(end - text) : 0;
		while (at < len && (text[at] == ' ' || text[at] == '\t' || text[at] == '\r' ||
		                    text[at] == '\n'))
			at++;
		if (at >= len)
			snprintf(err, errlen, "invalid JSON: unexpected end of input");
		else
			snprintf(err, errlen, "invalid JSON near byte %zu (at '%.*s')", at + 1,
			         (int)snippet_len(text + at, len - at), text + at);
		return FUNNEL_EJSON;
	}
	size_t used = (size_t)(end - text);
	for (size_t i = used; i < len; i++) {
		if (text[i] != ' ' && text[i] != '\t' && text[i] != '\r' && text[i] != '\n') {
			snprintf(err, errlen, "invalid JSON: unexpected text after the value at byte %zu",
			         i + 1);
			rc = FUNNEL_EJSON;
			goto done;
		}
	}
	if (numlits_scan(&nl, text, used) != 0 || pack_item(pk, root, &nl) != 0) {
		snprintf(err, errlen, "out of memory");
		rc = FUNNEL_ENOMEM;
	}
done:
	free(nl.v);
	cJSON_Delete(root);
	return rc;
}

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

static cJSON *
string_n(const char *s, size_t len)
{
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
fjson_print_line(FILE *f, const cJSON *item)
{
	if (fjson_print(f, item) != 0 || putc('\n', f) == EOF)
		return -1;
	return 0;
}
