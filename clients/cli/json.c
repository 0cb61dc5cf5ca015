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

/* The number and string literals of a JSON text, each kind in document
 * order, which is the order a depth-first walk of cJSON's tree meets them
 * in (an object member's name comes before its value). */
struct lit {
	const char *p;          /* numbers: the literal; strings: after the quote */
	size_t len;             /* strings: the bytes between the quotes */
};

struct lits {
	struct lit *v;
	size_t n, cap, next;
};

/* Walk state: the literals, and the path of the value being packed
 * ("data.tags[2]") for the messages that name a field. */
struct walk {
	struct lits num, str;
	char path[160];
	char *err;
	size_t errlen;
};

static int
lits_push(struct lits *l, const char *p, size_t len)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct lit *v = realloc(l->v, cap * sizeof *v);
		if (v == NULL)
			return -1;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n].p = p;
	l->v[l->n].len = len;
	l->n++;
	return 0;
}

/*
 * Collect the literals of text[0..len), a text cJSON has already
 * accepted: outside strings, a number is the only token that starts with
 * '-' or a digit, and it runs over [0-9+-.eE].
 */
static int
lits_scan(struct walk *w, const char *text, size_t len)
{
	size_t i = 0;

	while (i < len) {
		char c = text[i];
		if (c == '"') {
			size_t start = ++i;
			for (; i < len && text[i] != '"'; i++) {
				if (text[i] == '\\')
					i++;
			}
			if (lits_push(&w->str, text + start, (i < len ? i : len) - start) != 0)
				return -1;
			i++;
		} else if (c == '-' || (c >= '0' && c <= '9')) {
			size_t start = i;
			while (i < len && strchr("0123456789+-.eE", text[i]) != NULL && text[i] != '\0')
				i++;
			if (lits_push(&w->num, text + start, i - start) != 0)
				return -1;
		} else {
			i++;
		}
	}
	return 0;
}

static int
hex4(const char *p)
{
	int v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

/*
 * Decode the body of a JSON string literal (already accepted by cJSON)
 * into out, which has room for len bytes (a decoded string is never
 * longer than its literal).  Returns the decoded length; U+0000 becomes a
 * NUL byte like any other character.
 */
static size_t
decode_string(const char *s, size_t len, char *out)
{
	size_t i = 0, n = 0;

	while (i < len) {
		if (s[i] != '\\') {
			out[n++] = s[i++];
			continue;
		}
		if (i + 1 >= len)
			break;
		char e = s[i + 1];
		i += 2;
		switch (e) {
		case 'b': out[n++] = '\b'; break;
		case 'f': out[n++] = '\f'; break;
		case 'n': out[n++] = '\n'; break;
		case 'r': out[n++] = '\r'; break;
		case 't': out[n++] = '\t'; break;
		case 'u': {
			long cp = i + 4 <= len ? hex4(s + i) : -1;
			if (cp < 0)
				return n;
			i += 4;
			if (cp >= 0xD800 && cp <= 0xDBFF && i + 6 <= len && s[i] == '\\' &&
			    s[i + 1] == 'u') {
				long lo = hex4(s + i + 2);
				if (lo >= 0xDC00 && lo <= 0xDFFF) {
					cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					i += 6;
				}
			}
			if (cp < 0x80) {
				out[n++] = (char)cp;
			} else if (cp < 0x800) {
				out[n++] = (char)(0xC0 | (cp >> 6));
				out[n++] = (char)(0x80 | (cp & 0x3F));
			} else if (cp < 0x10000) {
				out[n++] = (char)(0xE0 | (cp >> 12));
				out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
				out[n++] = (char)(0x80 | (cp & 0x3F));
			} else {
				out[n++] = (char)(0xF0 | (cp >> 18));
				out[n++] = (char)(0x80 | ((cp >> 12) & 0x3F));
				out[n++] = (char)(0x80 | ((cp >> 6) & 0x3F));
				out[n++] = (char)(0x80 | (cp & 0x3F));
			}
			break;
		}
		default: out[n++] = e; break;   /* '"', '\\', '/' */
		}
	}
	return n;
}

/* The field a message names: the walk's path, or "the top-level value". */
static const char *
path_name(const struct walk *w)
{
	return w->path[0] != '\0' ? w->path : "(the top-level value)";
}

/* Extend the path by an object member or an array index; returns the old
 * length to restore. */
static size_t
path_push(struct walk *w, const char *key, size_t index)
{
	size_t old = strlen(w->path);
	size_t room = sizeof w->path - old;
	if (key != NULL)
		snprintf(w->path + old, room, "%s%s", old > 0 ? "." : "", key);
	else
		snprintf(w->path + old, room, "[%zu]", index);
	return old;
}

/*
 * The next string literal, decoded: *out points at it and *len is its
 * length.  When the literal holds no U+0000 this is cJSON's own text
 * (fallback); otherwise a malloc'ed copy in *owned (NULL when out of
 * memory: returns -1).  Returns 1 when the string holds a NUL, 0 when not.
 */
static int
next_string(struct walk *w, const char *fallback, const char **out, size_t *len, char **owned)
{
	*owned = NULL;
	*out = fallback;
	*len = strlen(fallback);
	if (w->str.next >= w->str.n)
		return 0;
	const struct lit *l = &w->str.v[w->str.next++];
	/* cJSON stops its text at the first U+0000; a longer literal decode
	 * is only needed when the literal escapes one */
	int has_u0 = 0;
	for (size_t i = 0; i + 5 < l->len + 0 && !has_u0; i++) {
		if (l->p[i] == '\\') {
			if (l->p[i + 1] == 'u' && memcmp(l->p + i + 2, "0000", 4) == 0)
				has_u0 = 1;
			i++;
		}
	}
	if (!has_u0)
		return 0;
	char *buf = malloc(l->len + 1);
	if (buf == NULL)
		return -1;
	size_t n = decode_string(l->p, l->len, buf);
	/* the literal must be the string cJSON parsed, up to its first NUL */
	if (n < *len || memcmp(buf, fallback, *len) != 0 || memchr(buf, '\0', n) == NULL) {
		free(buf);
		return 0;
	}
	*owned = buf;
	*out = buf;
	*len = n;
	return 1;
}

/* Pack a cJSON number, exactly when its literal is an integer. */
static int
pack_number(msgpack_packer *pk, const cJSON *it, struct lits *nl)
{
	char buf[32];
	char *end;

	if (nl->next >= nl->n)
		return msgpack_pack_double(pk, it->valuedouble);
	const struct lit *lit = &nl->v[nl->next++];
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

/* Results of a walk step: packed (or checked), out of memory, refused. */
enum { WALK_OK = 0, WALK_NOMEM = -1, WALK_REFUSED = -2 };

/*
 * Check (pk NULL) or pack one value.  The check pass refuses what JSON
 * text can say but the log must not silently change: a number out of the
 * float64 range (1e999 would be +Inf) and an object member name holding
 * U+0000 (names are shown as C strings); both name the field.  String
 * values holding U+0000 are packed whole (msgpack str has a length).
 * cJSON bounds nesting (CJSON_NESTING_LIMIT), so this recursion is bounded.
 */
static int
walk_item(msgpack_packer *pk, const cJSON *it, struct walk *w)
{
	const cJSON *c;
	size_t n = 0;
	int rc;

	if (cJSON_IsNull(it))
		return pk == NULL || msgpack_pack_nil(pk) == 0 ? WALK_OK : WALK_NOMEM;
	if (cJSON_IsTrue(it))
		return pk == NULL || msgpack_pack_true(pk) == 0 ? WALK_OK : WALK_NOMEM;
	if (cJSON_IsFalse(it))
		return pk == NULL || msgpack_pack_false(pk) == 0 ? WALK_OK : WALK_NOMEM;
	if (cJSON_IsNumber(it)) {
		if (pk == NULL) {
			const struct lit *l = w->num.next < w->num.n ? &w->num.v[w->num.next] : NULL;
			w->num.next++;
			if (!isfinite(it->valuedouble)) {
				snprintf(w->err, w->errlen,
				         "invalid JSON: the number %.*s at field %s is out of the "
				         "float64 range (it would be stored as %sInf)",
				         l != NULL ? (int)(l->len > 40 ? 40 : l->len) : 0,
				         l != NULL ? l->p : "", path_name(w),
				         it->valuedouble < 0 ? "-" : "+");
				return WALK_REFUSED;
			}
			return WALK_OK;
		}
		return pack_number(pk, it, &w->num) == 0 ? WALK_OK : WALK_NOMEM;
	}
	if (cJSON_IsString(it)) {
		const char *s;
		size_t len;
		char *owned;
		if (next_string(w, it->valuestring, &s, &len, &owned) < 0)
			return WALK_NOMEM;
		rc = WALK_OK;
		if (pk != NULL && (msgpack_pack_str(pk, len) != 0 ||
		                   msgpack_pack_str_body(pk, s, len) != 0))
			rc = WALK_NOMEM;
		free(owned);
		return rc;
	}
	if (cJSON_IsArray(it) || cJSON_IsObject(it)) {
		int obj = cJSON_IsObject(it);
		for (c = it->child; c != NULL; c = c->next)
			n++;
		if (pk != NULL && (obj ? msgpack_pack_map(pk, n) : msgpack_pack_array(pk, n)) != 0)
			return WALK_NOMEM;
		n = 0;
		for (c = it->child; c != NULL; c = c->next, n++) {
			size_t old = path_push(w, obj ? c->string : NULL, n);
			if (obj) {
				const char *k;
				size_t klen;
				char *owned;
				int nul = next_string(w, c->string, &k, &klen, &owned);
				if (nul < 0)
					return WALK_NOMEM;
				free(owned);
				if (nul > 0) {
					snprintf(w->err, w->errlen,
					         "invalid JSON: the member name at field %s holds U+0000, "
					         "which names cannot", path_name(w));
					return WALK_REFUSED;
				}
				if (pk != NULL && (msgpack_pack_str(pk, klen) != 0 ||
				                   msgpack_pack_str_body(pk, k, klen) != 0))
					return WALK_NOMEM;
			}
			if ((rc = walk_item(pk, c, w)) != WALK_OK)
				return rc;
			w->path[old] = '\0';
		}
		return WALK_OK;
	}
	return WALK_NOMEM;
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
	struct walk w = { .err = err, .errlen = errlen };
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
	if (lits_scan(&w, text, used) != 0)
		goto nomem;
	/* check everything first, so a refusal appends nothing to pk */
	int wr = walk_item(NULL, root, &w);
	if (wr == WALK_REFUSED) {
		rc = FUNNEL_EJSON;
		goto done;
	}
	w.num.next = w.str.next = 0;
	w.path[0] = '\0';
	if (wr != WALK_OK || walk_item(pk, root, &w) != WALK_OK)
		goto nomem;
	goto done;
nomem:
	snprintf(err, errlen, "out of memory");
	rc = FUNNEL_ENOMEM;
done:
	free(w.num.v);
	free(w.str.v);
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
fjson_print_line(FILE *f, const cJSON *item)
{
	if (fjson_print(f, item) != 0 || putc('\n', f) == EOF)
		return -1;
	return 0;
}
