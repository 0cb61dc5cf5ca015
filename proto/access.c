/*
 * proto/access.c - key files and the access file (contract in access.h).
 */
#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>
#include <yaml.h>
#include <zmq.h>

#include "access.h"

static int
fail(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int
fail(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
	return -1;
}

/* Z85 text (surrounding whitespace ignored) into 32 bytes. */
static int
z85_key(const char *s, size_t len, uint8_t key[FA_KEY_BYTES])
{
	char buf[FA_Z85_LEN + 1];
	while (len > 0 && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r'))
		s++, len--;
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\n' ||
	                   s[len - 1] == '\r'))
		len--;
	if (len != FA_Z85_LEN)
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return zmq_z85_decode(key, buf) == NULL ? -1 : 0;
}

int
fa_read_key_file(const char *path, uint8_t key[FA_KEY_BYTES], char *why, size_t whylen)
{
	char buf[256];
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return fail(why, whylen, "%s: %s", path, strerror(errno));
	size_t n = fread(buf, 1, sizeof buf, f);
	fclose(f);
	if (n == sizeof buf || z85_key(buf, n, key) != 0) {
		sodium_memzero(buf, sizeof buf);
		return fail(why, whylen, "%s: not a key file (40 Z85 characters, as funnel keygen writes)",
		            path);
	}
	sodium_memzero(buf, sizeof buf);
	return 0;
}

int
fa_public_of(const uint8_t secret[FA_KEY_BYTES], uint8_t pub[FA_KEY_BYTES])
{
	char zs[FA_Z85_LEN + 1], zp[FA_Z85_LEN + 1];
	int rc = -1;
	if (zmq_z85_encode(zs, secret, FA_KEY_BYTES) != NULL && zmq_curve_public(zp, zs) == 0 &&
	    zmq_z85_decode(pub, zp) != NULL)
		rc = 0;
	sodium_memzero(zs, sizeof zs);
	return rc;
}

void
fa_destroy(fa_table *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->n; i++) {
		for (size_t j = 0; j < t->p[i].npublish; j++)
			free(t->p[i].publish[j]);
		free(t->p[i].publish);
	}
	free(t->p);
	free(t);
}

const fa_principal *
fa_by_key(const fa_table *t, const uint8_t key[FA_KEY_BYTES])
{
	for (size_t i = 0; t != NULL && i < t->n; i++) {
		if (t->p[i].has_key && memcmp(t->p[i].key, key, FA_KEY_BYTES) == 0)
			return &t->p[i];
	}
	return NULL;
}

const fa_principal *
fa_by_name(const fa_table *t, const char *name)
{
	for (size_t i = 0; t != NULL && name != NULL && i < t->n; i++) {
		if (strcmp(t->p[i].name, name) == 0)
			return &t->p[i];
	}
	return NULL;
}

const fa_principal *
fa_by_token(const fa_table *t, const char *token, size_t len)
{
	uint8_t h[32];
	const fa_principal *found = NULL;
	if (t == NULL || token == NULL || len == 0)
		return NULL;
	crypto_generichash(h, sizeof h, (const unsigned char *)token, len, NULL, 0);
	for (size_t i = 0; i < t->n; i++) {
		if (t->p[i].has_token && sodium_memcmp(t->p[i].token_hash, h, sizeof h) == 0)
			found = &t->p[i];
	}
	return found;
}

int
fa_may_publish(const fa_principal *p, const char *type, size_t len)
{
	char buf[256];
	if (p == NULL || len >= sizeof buf)
		return 0;
	memcpy(buf, type, len);
	buf[len] = '\0';
	for (size_t i = 0; i < p->npublish; i++) {
		if (fnmatch(p->publish[i], buf, 0) == 0)
			return 1;
	}
	return 0;
}

/* ---- the access file ---------------------------------------------- */

struct ld {
	const char *path;
	yaml_document_t *doc;
	char *why;
	size_t whylen;
};

static size_t
line_of(const yaml_node_t *n)
{
	return n->start_mark.line + 1;
}

static int
bad(struct ld *l, const yaml_node_t *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int
bad(struct ld *l, const yaml_node_t *n, const char *fmt, ...)
{
	char msg[300];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	snprintf(l->why, l->whylen, "%s:%zu: %s", l->path, n ? line_of(n) : (size_t)1, msg);
	return -1;
}

static const char *
scalar(const yaml_node_t *n)
{
	return n != NULL && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int
name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > FA_MAX_NAME)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

static int
hex32(const char *s, uint8_t out[32])
{
	if (strlen(s) != 64)
		return -1;
	for (int i = 0; i < 32; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		char c0 = s[2 * i], c1 = s[2 * i + 1];
		if (!(((c0 >= '0' && c0 <= '9') || (c0 >= 'a' && c0 <= 'f')) &&
		      ((c1 >= '0' && c1 <= '9') || (c1 >= 'a' && c1 <= 'f'))))
			return -1;
		out[i] = (uint8_t)v;
	}
	return 0;
}

static int
parse_principal(struct ld *l, yaml_node_t *m, fa_principal *p)
{
	static const char *const keys[] = { "name", "key", "publish", "read", "token" };
	size_t seen[5] = { 0 };

	if (m->type != YAML_MAPPING_NODE)
		return bad(l, m, "a principal is a mapping (name, key, publish, read, token)");
	for (yaml_node_pair_t *pr = m->data.mapping.pairs.start; pr < m->data.mapping.pairs.top; pr++) {
		yaml_node_t *k = yaml_document_get_node(l->doc, pr->key);
		yaml_node_t *v = yaml_document_get_node(l->doc, pr->value);
		const char *ks = scalar(k);
		int which = -1;
		for (int i = 0; ks != NULL && i < 5; i++) {
			if (strcmp(ks, keys[i]) == 0)
				which = i;
		}
		if (which < 0)
			return bad(l, k, "unknown key '%s' in a principal (name, key, publish, read, token)",
			           ks ? ks : "?");
		if (seen[which])
			return bad(l, k, "duplicate key '%s' (first given on line %zu)", ks, seen[which]);
		seen[which] = line_of(k);
		const char *vs = scalar(v);
		switch (which) {
		case 0:
			if (vs == NULL || !name_ok(vs))
				return bad(l, v, "name must be 1..%d characters of A-Z a-z 0-9 . _ -",
				           FA_MAX_NAME);
			snprintf(p->name, sizeof p->name, "%s", vs);
			break;
		case 1:
			if (vs == NULL || z85_key(vs, strlen(vs), p->key) != 0)
				return bad(l, v, "key must be a CURVE public key: 40 Z85 characters (NAME.pub)");
			p->has_key = 1;
			break;
		case 2:
			if (v->type != YAML_SEQUENCE_NODE)
				return bad(l, v, "publish must be a list of event types or globs");
			size_t n = (size_t)(v->data.sequence.items.top - v->data.sequence.items.start);
			if (n > FA_MAX_GLOBS)
				return bad(l, v, "publish lists more than %d patterns", FA_MAX_GLOBS);
			p->publish = calloc(n ? n : 1, sizeof *p->publish);
			if (p->publish == NULL)
				return bad(l, v, "out of memory");
			for (size_t i = 0; i < n; i++) {
				yaml_node_t *it = yaml_document_get_node(l->doc, v->data.sequence.items.start[i]);
				const char *g = scalar(it);
				if (g == NULL || g[0] == '\0' || strlen(g) > 128)
					return bad(l, it ? it : v, "publish patterns are non-empty strings of at most 128 bytes");
				if ((p->publish[p->npublish] = strdup(g)) == NULL)
					return bad(l, v, "out of memory");
				p->npublish++;
			}
			break;
		case 3:
			if (vs != NULL && (strcmp(vs, "true") == 0 || strcmp(vs, "yes") == 0))
				p->read = 1;
			else if (vs != NULL && (strcmp(vs, "false") == 0 || strcmp(vs, "no") == 0))
				p->read = 0;
			else
				return bad(l, v, "read must be true or false");
			break;
		case 4:
			if (vs == NULL || strncmp(vs, FA_TOKEN_PREFIX, strlen(FA_TOKEN_PREFIX)) != 0 ||
			    hex32(vs + strlen(FA_TOKEN_PREFIX), p->token_hash) != 0)
				return bad(l, v, "token must be \"" FA_TOKEN_PREFIX
				           "<64 lowercase hex>\", as funnel token prints it");
			p->has_token = 1;
			break;
		}
	}
	if (!seen[0])
		return bad(l, m, "a principal needs a name");
	if (!seen[1] && !seen[4])
		return bad(l, m, "principal '%s' has neither a key nor a token", p->name);
	return 0;
}

static int
parse_doc(struct ld *l, fa_table *t)
{
	yaml_node_t *root = yaml_document_get_root_node(l->doc);
	yaml_node_t *list = NULL;
	size_t list_line = 0;

	if (root == NULL)
		return bad(l, NULL, "empty access file: expected 'principals:'");
	if (root->type != YAML_MAPPING_NODE)
		return bad(l, root, "expected a mapping with 'principals:'");
	for (yaml_node_pair_t *pr = root->data.mapping.pairs.start; pr < root->data.mapping.pairs.top;
	     pr++) {
		yaml_node_t *k = yaml_document_get_node(l->doc, pr->key);
		const char *ks = scalar(k);
		if (ks == NULL || strcmp(ks, "principals") != 0)
			return bad(l, k, "unknown key '%s' (the access file has 'principals:')", ks ? ks : "?");
		if (list != NULL)
			return bad(l, k, "duplicate key 'principals' (first given on line %zu)", list_line);
		list = yaml_document_get_node(l->doc, pr->value);
		list_line = line_of(k);
	}
	if (list == NULL)
		return bad(l, root, "no 'principals:'");
	if (list->type != YAML_SEQUENCE_NODE)
		return bad(l, list, "'principals' must be a list");
	size_t n = (size_t)(list->data.sequence.items.top - list->data.sequence.items.start);
	if (n > FA_MAX_PRINCIPALS)
		return bad(l, list, "more than %d principals", FA_MAX_PRINCIPALS);
	t->p = calloc(n ? n : 1, sizeof *t->p);
	if (t->p == NULL)
		return bad(l, list, "out of memory");
	for (size_t i = 0; i < n; i++) {
		yaml_node_t *m = yaml_document_get_node(l->doc, list->data.sequence.items.start[i]);
		fa_principal *p = &t->p[t->n++];
		if (parse_principal(l, m, p) != 0)
			return -1;
		for (size_t j = 0; j + 1 < t->n; j++) {
			const fa_principal *o = &t->p[j];
			if (strcmp(o->name, p->name) == 0)
				return bad(l, m, "principal '%s' is listed twice", p->name);
			if (p->has_key && o->has_key && memcmp(o->key, p->key, FA_KEY_BYTES) == 0)
				return bad(l, m, "principals '%s' and '%s' have the same key", o->name, p->name);
			if (p->has_token && o->has_token && memcmp(o->token_hash, p->token_hash, 32) == 0)
				return bad(l, m, "principals '%s' and '%s' have the same token", o->name, p->name);
		}
	}
	return 0;
}

fa_table *
fa_load(const char *path, char *why, size_t whylen)
{
	struct ld l = { path, NULL, why, whylen };
	yaml_parser_t parser;
	yaml_document_t doc;
	struct stat sb;
	fa_table *t = NULL;
	FILE *f = fopen(path, "rb");

	if (f == NULL) {
		fail(why, whylen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fileno(f), &sb) != 0 || sb.st_size > (off_t)FA_MAX_FILE_BYTES) {
		fail(why, whylen, "%s: over %u bytes, or unreadable", path, FA_MAX_FILE_BYTES);
		fclose(f);
		return NULL;
	}
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_file(&parser, f);
	if (!yaml_parser_load(&parser, &doc)) {
		fail(why, whylen, "%s:%zu:%zu: %s", path, parser.problem_mark.line + 1,
		     parser.problem_mark.column + 1, parser.problem ? parser.problem : "YAML error");
		yaml_parser_delete(&parser);
		fclose(f);
		return NULL;
	}
	l.doc = &doc;
	t = calloc(1, sizeof *t);
	if (t == NULL) {
		fail(why, whylen, "out of memory");
	} else if (parse_doc(&l, t) != 0) {
		fa_destroy(t);
		t = NULL;
	}
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	fclose(f);
	return t;
}
