/*
 * clients/common/rulesfile.c - reading the shared rules file; the contract
 * is rulesfile.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/stat.h>

#include "mp.h"
#include "rulesfile.h"

/* What every message about the size says: the limit and why. */
#define SIZE_WHY "the whole file is recorded in rules.changed, one log record of at most " \
	"64 KiB"

int
rf_read_file(const char *path, char **text, size_t *len, char *err, size_t errlen)
{
	*text = NULL;
	*len = 0;
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		return FUNNEL_ENOTFOUND;
	}
	char *buf = malloc(RF_MAX_FILE_BYTES + 1);
	if (buf == NULL) {
		fclose(f);
		return FUNNEL_ENOMEM;
	}
	size_t n = fread(buf, 1, RF_MAX_FILE_BYTES + 1, f);
	int rc = FUNNEL_OK;
	if (ferror(f)) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
		rc = FUNNEL_ENOTFOUND;
	} else if (n > RF_MAX_FILE_BYTES) {
		struct stat sb;
		if (err != NULL && errlen > 0 && fstat(fileno(f), &sb) == 0 && S_ISREG(sb.st_mode))
			snprintf(err, errlen, "%s: %jd bytes, over the limit of %u bytes (%s)", path,
			         (intmax_t)sb.st_size, RF_MAX_FILE_BYTES, SIZE_WHY);
		else if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s: over the limit of %u bytes (%s)", path,
			         RF_MAX_FILE_BYTES, SIZE_WHY);
		rc = FUNNEL_ETOOBIG;
	}
	fclose(f);
	if (rc != FUNNEL_OK) {
		free(buf);
		return rc;
	}
	buf[n] = '\0';
	*text = buf;
	*len = n;
	return FUNNEL_OK;
}

int
rf_err(rf_ctx *c, const yaml_node_t *n, const char *path, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (c->err != NULL && c->errlen > 0)
		snprintf(c->err, c->errlen, "%s:%zu: %s%s%s", c->file, n ? n->start_mark.line + 1 : 1,
		         path, path[0] ? ": " : "", msg);
	return FUNNEL_EVALUE;
}

int
rf_enomem(rf_ctx *c)
{
	if (c->err != NULL && c->errlen > 0)
		snprintf(c->err, c->errlen, "%s: out of memory", c->file);
	return FUNNEL_ENOMEM;
}

/* "file:line: " and the message; returns code. */
static int
file_err(rf_ctx *c, size_t line, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int
file_err(rf_ctx *c, size_t line, int code, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (c->err != NULL && c->errlen > 0)
		snprintf(c->err, c->errlen, "%s:%zu: %s", c->file, line, msg);
	return code;
}

/* The line of byte offset off in text. */
static size_t
line_of(const char *text, size_t off)
{
	size_t line = 1;
	for (size_t i = 0; i < off; i++)
		line += text[i] == '\n';
	return line;
}

/*
 * What the log would refuse in rules.changed, refused before parsing:
 * the size, and text that is not UTF-8 (libyaml itself would read a
 * UTF-16 file with a byte-order mark, then funneld would refuse it).
 */
static int
check_text(rf_ctx *c, const char *text, size_t len)
{
	if (len > RF_MAX_FILE_BYTES)
		return file_err(c, 1, FUNNEL_ETOOBIG, "%zu bytes, over the limit of %u bytes (%s)", len,
		                RF_MAX_FILE_BYTES, SIZE_WHY);
	const char *nul = memchr(text, '\0', len);
	long bad = mp_utf8_invalid_at(text, nul ? (size_t)(nul - text) : len);
	if (bad >= 0)
		return file_err(c, line_of(text, (size_t)bad), FUNNEL_EVALUE,
		                "not UTF-8 text (byte %ld): save the file as UTF-8 (UTF-16 and other "
		                "encodings are refused)", bad);
	if (nul != NULL)
		return file_err(c, line_of(text, (size_t)(nul - text)), FUNNEL_EVALUE,
		                "a NUL byte (byte %zu): save the file as UTF-8 text (UTF-16 and other "
		                "encodings are refused)", (size_t)(nul - text));
	return FUNNEL_OK;
}

/*
 * Walk the file's events once, only counting how deep mappings and lists
 * nest, and stop past RF_MAX_DEPTH: libyaml's scanner checks every open
 * level at each token, so a deep file would take quadratic time to load.
 * The walk stops there long before that cost shows.  A YAML error is left
 * for the loader to report.
 */
static int
check_depth(rf_ctx *c, const char *text, size_t len)
{
	yaml_parser_t yp;
	yaml_event_t ev;
	int depth = 0, rc = FUNNEL_OK;

	if (!yaml_parser_initialize(&yp))
		return rf_enomem(c);
	yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
	for (;;) {
		if (!yaml_parser_parse(&yp, &ev))
			break;
		yaml_event_type_t t = ev.type;
		if (t == YAML_SEQUENCE_START_EVENT || t == YAML_MAPPING_START_EVENT) {
			if (++depth > RF_MAX_DEPTH)
				rc = file_err(c, ev.start_mark.line + 1, FUNNEL_EVALUE,
				              "nested deeper than %d levels of mappings and lists",
				              RF_MAX_DEPTH);
		} else if (t == YAML_SEQUENCE_END_EVENT || t == YAML_MAPPING_END_EVENT) {
			depth--;
		}
		yaml_event_delete(&ev);
		if (rc != FUNNEL_OK || t == YAML_STREAM_END_EVENT)
			break;
	}
	yaml_parser_delete(&yp);
	return rc;
}

int
rf_parse(rf_ctx *c, const char *text, size_t len, yaml_document_t *doc, yaml_node_t **root)
{
	yaml_parser_t yp;
	yaml_document_t extra;
	int rc;

	*root = NULL;
	if ((rc = check_text(c, text, len)) != FUNNEL_OK ||
	    (rc = check_depth(c, text, len)) != FUNNEL_OK)
		return rc;
	yaml_parser_initialize(&yp);
	yaml_parser_set_input_string(&yp, (const unsigned char *)text, len);
	if (!yaml_parser_load(&yp, doc)) {
		if (c->err != NULL && c->errlen > 0)
			snprintf(c->err, c->errlen, "%s:%zu: not valid YAML: %s%s%s%s", c->file,
			         yp.problem_mark.line + 1, yp.problem ? yp.problem : "syntax error",
			         yp.context ? " (" : "", yp.context ? yp.context : "", yp.context ? ")" : "");
		rc = yp.error == YAML_MEMORY_ERROR ? FUNNEL_ENOMEM : FUNNEL_EVALUE;
		yaml_parser_delete(&yp);
		return rc;
	}
	c->doc = doc;
	/* a second document ("---") would be ignored silently: refuse it */
	if (!yaml_parser_load(&yp, &extra)) {
		rc = FUNNEL_EVALUE;
		if (c->err != NULL && c->errlen > 0)
			snprintf(c->err, c->errlen, "%s:%zu: not valid YAML: %s", c->file,
			         yp.problem_mark.line + 1, yp.problem ? yp.problem : "syntax error");
	} else {
		yaml_node_t *x = yaml_document_get_root_node(&extra);
		if (x != NULL)
			rc = rf_err(c, x, "", "a second document: the file must hold one");
		yaml_document_delete(&extra);
	}
	yaml_parser_delete(&yp);
	if (rc != FUNNEL_OK) {
		yaml_document_delete(doc);
		c->doc = NULL;
		return rc;
	}
	*root = yaml_document_get_root_node(doc);
	return FUNNEL_OK;
}

const char *
rf_text(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

int
rf_is_null(const yaml_node_t *n)
{
	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return 0;
	const char *s = rf_text(n);
	return s[0] == '\0' || strcmp(s, "~") == 0 || strcasecmp(s, "null") == 0;
}

const char *
rf_desc(const yaml_node_t *n, char *buf, size_t cap)
{
	if (n->type == YAML_SEQUENCE_NODE)
		return "a list";
	if (n->type == YAML_MAPPING_NODE)
		return "a mapping";
	if (rf_is_null(n))
		return "nothing";
	if (n->data.scalar.length > 40)
		snprintf(buf, cap, "\"%.37s...\"", rf_text(n));
	else
		snprintf(buf, cap, "\"%s\"", rf_text(n));
	return buf;
}

void
rf_join(char *buf, size_t cap, const char *path, const char *key)
{
	snprintf(buf, cap, "%.150s%s%.30s", path, path[0] ? "." : "", key);
}

void
rf_join_index(char *buf, size_t cap, const char *path, size_t i)
{
	snprintf(buf, cap, "%.150s[%zu]", path, i);
}

yaml_node_t *
rf_item(rf_ctx *c, yaml_node_t *seq, size_t i)
{
	return yaml_document_get_node(c->doc, seq->data.sequence.items.start[i]);
}

int
rf_map(rf_ctx *c, yaml_node_t *n, const char *path, const char *const *keys, size_t nkeys,
       const char *expect, int skip_unknown, yaml_node_t **vals)
{
	char buf[64];
	for (size_t i = 0; i < nkeys; i++)
		vals[i] = NULL;
	if (n->type != YAML_MAPPING_NODE)
		return rf_err(c, n, path, "expected a mapping, got %s", rf_desc(n, buf, sizeof buf));
	for (yaml_node_pair_t *kv = n->data.mapping.pairs.start; kv < n->data.mapping.pairs.top; kv++) {
		yaml_node_t *k = yaml_document_get_node(c->doc, kv->key);
		yaml_node_t *v = yaml_document_get_node(c->doc, kv->value);
		if (k->type != YAML_SCALAR_NODE)
			return rf_err(c, k, path, "a key must be a plain word, got %s",
			              rf_desc(k, buf, sizeof buf));
		size_t i = 0;
		while (i < nkeys && strcmp(keys[i], rf_text(k)) != 0)
			i++;
		if (i == nkeys) {
			if (skip_unknown)
				continue;
			return rf_err(c, k, path, "unknown key %s (expected one of: %s)",
			              rf_desc(k, buf, sizeof buf), expect);
		}
		if (vals[i] != NULL) {
			char kp[RF_PATH_BYTES];
			rf_join(kp, sizeof kp, path, keys[i]);
			return rf_err(c, k, kp, "duplicate key");
		}
		vals[i] = v;
	}
	return FUNNEL_OK;
}

int
rf_string(rf_ctx *c, yaml_node_t *n, const char *path, size_t max, char **out)
{
	char buf[64];
	if (n->type != YAML_SCALAR_NODE || rf_is_null(n))
		return rf_err(c, n, path, "expected a word or text, got %s", rf_desc(n, buf, sizeof buf));
	size_t len = n->data.scalar.length;
	if (len == 0 || len > max)
		return rf_err(c, n, path, "expected 1 to %zu characters, got %zu", max, len);
	if (strlen(rf_text(n)) != len)
		return rf_err(c, n, path, "text must not hold a NUL character");
	if ((*out = strdup(rf_text(n))) == NULL)
		return rf_enomem(c);
	return FUNNEL_OK;
}

int
rf_parse_number(const char *s, double *out)
{
	char *end;
	/* strtod also reads hex, inf, nan and leading spaces: none is a number here */
	if (s[0] == '\0' || strpbrk(s, "xXnNiI_ \t\r\n") != NULL)
		return -1;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || *end != '\0' || errno == ERANGE || !isfinite(v))
		return -1;
	*out = v;
	return 0;
}

int
rf_number(rf_ctx *c, yaml_node_t *n, const char *path, double *out)
{
	char buf[64];
	if (n->type != YAML_SCALAR_NODE || rf_parse_number(rf_text(n), out) != 0)
		return rf_err(c, n, path, "expected a number, got %s", rf_desc(n, buf, sizeof buf));
	return FUNNEL_OK;
}

int
rf_int(rf_ctx *c, yaml_node_t *n, const char *path, long min, long max, long *out)
{
	double v;
	int rc = rf_number(c, n, path, &v);
	if (rc != FUNNEL_OK)
		return rc;
	if (v != floor(v) || v < (double)min || v > (double)max)
		return rf_err(c, n, path, "expected a whole number from %ld to %ld, got %s", min, max,
		              rf_text(n));
	*out = (long)v;
	return FUNNEL_OK;
}

int
rf_bool(rf_ctx *c, yaml_node_t *n, const char *path, int *out)
{
	char buf[64];
	if (n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
		const char *s = rf_text(n);
		if (strcasecmp(s, "true") == 0 || strcasecmp(s, "yes") == 0) {
			*out = 1;
			return FUNNEL_OK;
		}
		if (strcasecmp(s, "false") == 0 || strcasecmp(s, "no") == 0) {
			*out = 0;
			return FUNNEL_OK;
		}
	}
	return rf_err(c, n, path, "expected true or false, got %s", rf_desc(n, buf, sizeof buf));
}

int
rf_list(rf_ctx *c, yaml_node_t *n, const char *path, size_t *count)
{
	char buf[64];
	*count = 0;
	if (n == NULL || rf_is_null(n))
		return FUNNEL_OK;
	if (n->type != YAML_SEQUENCE_NODE)
		return rf_err(c, n, path, "expected a list, got %s", rf_desc(n, buf, sizeof buf));
	*count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
	return FUNNEL_OK;
}

int
rf_get_value(rf_ctx *c, yaml_node_t *n, const char *path, size_t max, rf_value *v)
{
	char buf[64];
	if (n->type != YAML_SCALAR_NODE || rf_is_null(n))
		return rf_err(c, n, path, "expected a word or a number, got %s",
		              rf_desc(n, buf, sizeof buf));
	if (n->data.scalar.length > max)
		return rf_err(c, n, path, "expected at most %zu characters, got %zu", max,
		              n->data.scalar.length);
	if ((v->text = strdup(rf_text(n))) == NULL)
		return rf_enomem(c);
	v->is_num = rf_parse_number(v->text, &v->num) == 0;
	return FUNNEL_OK;
}

int
rf_get_values(rf_ctx *c, yaml_node_t *n, const char *path, size_t max, rf_value **out,
              size_t *count)
{
	size_t len;
	int rc;
	if ((rc = rf_list(c, n, path, &len)) != FUNNEL_OK)
		return rc;
	if (len == 0)
		return rf_err(c, n, path, "expected a list of one or more values");
	if ((*out = calloc(len, sizeof **out)) == NULL)
		return rf_enomem(c);
	for (size_t i = 0; i < len; i++) {
		char ip[RF_PATH_BYTES];
		rf_join_index(ip, sizeof ip, path, i);
		*count = i + 1;
		if ((rc = rf_get_value(c, rf_item(c, n, i), ip, max, &(*out)[i])) != FUNNEL_OK)
			return rc;
	}
	return FUNNEL_OK;
}

void
rf_value_release(rf_value *v)
{
	free(v->text);
	v->text = NULL;
}

int
rf_value_eq(const rf_value *want, const char *v, int isnum, double num)
{
	if (want->is_num && isnum)
		return want->num == num;
	return strcasecmp(want->text, v) == 0;
}

int
rf_value_in(const rf_value *set, size_t n, const char *v, int isnum, double num)
{
	for (size_t i = 0; i < n; i++)
		if (rf_value_eq(&set[i], v, isnum, num))
			return 1;
	return 0;
}

void
rf_iso_time(uint64_t ns, char *out, size_t len)
{
	time_t s = (time_t)(ns / 1000000000u);
	struct tm tm;
	gmtime_r(&s, &tm);
	strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int
rf_value_text(const msgpack_object *o, char *buf, size_t cap)
{
	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		return 0;
	case MSGPACK_OBJECT_BOOLEAN:
		snprintf(buf, cap, "%s", o->via.boolean ? "true" : "false");
		return 1;
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		snprintf(buf, cap, "%" PRIu64, o->via.u64);
		return 1;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		snprintf(buf, cap, "%" PRId64, o->via.i64);
		return 1;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		snprintf(buf, cap, "%.15g", o->via.f64);
		return 1;
	case MSGPACK_OBJECT_STR: {
		size_t n = o->via.str.size;
		if (n > cap - 1) {
			n = cap - 1;
			while (n > 0 && ((unsigned char)o->via.str.ptr[n] & 0xc0) == 0x80)
				n--;
		}
		memcpy(buf, o->via.str.ptr, n);
		buf[n] = '\0';
		return 1;
	}
	default:
		return -1;
	}
}
