/*
 * clients/common/jsonpack.c - JSON text -> msgpack, for what sends JSON
 * envelopes to funneld (`funnel publish`, funnel-gateway's /v1/events);
 * the contract is jsonpack.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "funnel/error.h"
#include "jsonpack.h"

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

static int
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int
fjson_array_each(const char *text, size_t len, fjson_elem_fn fn, void *ctx, char *err,
                 size_t errlen)
{
	size_t i = 0, end = len;
	while (i < len && is_space(text[i]))
		i++;
	while (end > i && is_space(text[end - 1]))
		end--;
	if (i >= end || text[i] != '[' || text[end - 1] != ']' || end - i < 2) {
		snprintf(err, errlen, "invalid JSON: expected an array of events [...]");
		return FUNNEL_EJSON;
	}
	size_t start = ++i, index = 0;
	int depth = 0, in_str = 0;
	end--;                          /* the closing ']' */
	size_t k = start;
	while (k < end && is_space(text[k]))
		k++;
	if (k == end)
		return FUNNEL_OK;       /* [] : no element */
	for (; i <= end; i++) {
		char c = i < end ? text[i] : ',';
		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = 0;
			continue;
		}
		if (c == '"') {
			in_str = 1;
		} else if (c == '[' || c == '{') {
			depth++;
		} else if (c == ']' || c == '}') {
			if (--depth < 0)
				break;
		} else if (c == ',' && depth == 0) {
			size_t a = start;
			while (a < i && is_space(text[a]))
				a++;
			if (a == i) {
				snprintf(err, errlen, "invalid JSON: empty element %zu of the array", index);
				return FUNNEL_EJSON;
			}
			int rc = fn(text + start, i - start, index++, ctx);
			if (rc != 0)
				return rc;
			start = i + 1;
		}
	}
	if (in_str || depth != 0) {
		snprintf(err, errlen, "invalid JSON: the array is not closed where the text ends");
		return FUNNEL_EJSON;
	}
	return FUNNEL_OK;
}
