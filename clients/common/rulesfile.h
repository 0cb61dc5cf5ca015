/*
 * clients/common/rulesfile.h - reading the shared rules file (funnel.yaml)
 * the services own a section each of: the file read with a size cap,
 * parsed with libyaml into one document, and typed getters over its
 * nodes that all report a problem the same way:
 *
 *   funnel.yaml:14: routing.teams[1].reps[0].weight: expected a number, got "x"
 *
 * i.e. "<file>:<line>: <key path>: <problem>".  Every getter returns
 * FUNNEL_OK, or FUNNEL_EVALUE / FUNNEL_ENOMEM with that line written to
 * the context's err buffer (the first problem found wins: callers return
 * at once).  Strings a getter returns are malloc'd and the caller's.
 *
 * What the services refuse in a rules file, this reader refuses, so that
 * `check` and the services agree (one place): more than RF_MAX_FILE_BYTES
 * (the whole text goes into one rules.changed record, which the log caps
 * at FP_MAX_RECORD_BYTES), text that is not UTF-8 or holds a NUL byte
 * (the log takes UTF-8 strings only: a UTF-16 file is refused here, not
 * by funneld), and nesting deeper than RF_MAX_DEPTH (libyaml's scanner
 * is quadratic in the nesting depth).
 *
 * Also the few small helpers the services share (big-endian u64,
 * ISO time, the text of a lead field).  Pure but for rf_read_file(); no
 * globals.  A context belongs to one thread.
 */
#ifndef FUNNEL_RULESFILE_H
#define FUNNEL_RULESFILE_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>
#include <yaml.h>

#include "bytes.h"
#include "envelope.h"
#include "funnel/error.h"

/* rules.changed carries the whole file in one record of at most
 * FP_MAX_RECORD_BYTES; the record's other keys (seq, ts, type, id, prev,
 * hash and data's service, hash, version of at most 64 bytes,
 * previous_hash) take under 600 bytes, so 1 KiB is kept for them. */
#define RF_RECORD_OVERHEAD 1024u
#define RF_MAX_FILE_BYTES (FP_MAX_RECORD_BYTES - RF_RECORD_OVERHEAD)   /* 64512 */
#define RF_MAX_DEPTH 32                /* nested mappings and lists; funnel.yaml uses 6 */
#define RF_PATH_BYTES 192              /* key paths in messages; never cut */

/* One parse: the document, the file's name for messages, where the
 * message goes. */
typedef struct rf_ctx {
	yaml_document_t *doc;
	const char *file;
	char *err;
	size_t errlen;
} rf_ctx;

/*
 * Read the file at path (at most RF_MAX_FILE_BYTES) into a new
 * NUL-terminated buffer *text of *len bytes (free() it).  Returns
 * FUNNEL_OK, FUNNEL_ENOTFOUND ("path: cannot read: <reason>" in err),
 * FUNNEL_ETOOBIG ("path: N bytes, over the limit of ..." in err) or
 * FUNNEL_ENOMEM.
 */
int rf_read_file(const char *path, char **text, size_t *len, char *err, size_t errlen);

/*
 * The `_load` of a section's parser, defined once for all of them:
 *
 *   RF_DEFINE_LOAD(sc_rules_load, sc_rules, sc_rules_parse)
 *
 * defines int sc_rules_load(const char *path, sc_rules **out, char *err,
 * size_t errlen): the file read (rf_read_file, its codes and messages),
 * then parse(text, len, path, out, err, errlen) on its text; *out is
 * NULL on every failure.  A macro so that each section keeps its typed
 * result (no casts through void **).  The file using it includes
 * <stdlib.h>.
 */
#define RF_DEFINE_LOAD(name, type, parse)                                   \
	int name(const char *path, type **out, char *err, size_t errlen)    \
	{                                                                   \
		char *text_;                                                \
		size_t len_;                                                \
		*out = NULL;                                                \
		int rc_ = rf_read_file(path, &text_, &len_, err, errlen);   \
		if (rc_ != FUNNEL_OK)                                       \
			return rc_;                                         \
		rc_ = parse(text_, len_, path, out, err, errlen);           \
		free(text_);                                                \
		return rc_;                                                 \
	}

/*
 * Parse text (len bytes, NUL-terminated) into *doc, which must then be
 * released with yaml_document_delete.  Refused, with the line in the
 * message: more than RF_MAX_FILE_BYTES (FUNNEL_ETOOBIG), bytes that are
 * not UTF-8 or a NUL byte (FUNNEL_EVALUE), mappings and lists nested
 * deeper than RF_MAX_DEPTH (FUNNEL_EVALUE, found before the document is
 * built), a second document (it would be ignored silently), and YAML
 * errors.  *root is the root node, NULL for an empty file.  On failure
 * nothing is left to release.
 */
int rf_parse(rf_ctx *c, const char *text, size_t len, yaml_document_t *doc,
             yaml_node_t **root);

/* Write "file:line: path: problem" and return FUNNEL_EVALUE.  n may be
 * NULL (line 1); path may be "" (no "path: "). */
int rf_err(rf_ctx *c, const yaml_node_t *n, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
int rf_enomem(rf_ctx *c);

/* A scalar's text, NUL-terminated. */
const char *rf_text(const yaml_node_t *n);
/* An empty plain scalar, "~" or "null". */
int rf_is_null(const yaml_node_t *n);
/* How a node reads in a message: "ten" quoted and cut, nothing, a list,
 * a mapping.  buf holds at least 48 bytes. */
const char *rf_desc(const yaml_node_t *n, char *buf, size_t cap);

/* path.key and path[i] into buf (RF_PATH_BYTES). */
void rf_join(char *buf, size_t cap, const char *path, const char *key);
void rf_join_index(char *buf, size_t cap, const char *path, size_t i);

/* Item i of a sequence node. */
yaml_node_t *rf_item(rf_ctx *c, yaml_node_t *seq, size_t i);

/*
 * n must be a mapping whose keys are plain scalars from keys[0..nkeys),
 * each at most once; vals[i] receives the value of keys[i] (or NULL).
 * `expect` lists the keys for the message about an unknown one.  With
 * skip_unknown, keys not in the list are left alone instead (a section
 * of the file another service reads).
 */
int rf_map(rf_ctx *c, yaml_node_t *n, const char *path, const char *const *keys, size_t nkeys,
           const char *expect, int skip_unknown, yaml_node_t **vals);

/* Text of 1..max bytes, no NUL. */
int rf_string(rf_ctx *c, yaml_node_t *n, const char *path, size_t max, char **out);
/* A decimal number (no hex, inf, nan). */
int rf_number(rf_ctx *c, yaml_node_t *n, const char *path, double *out);
/* A whole number in [min, max]. */
int rf_int(rf_ctx *c, yaml_node_t *n, const char *path, long min, long max, long *out);
/* true/yes or false/no. */
int rf_bool(rf_ctx *c, yaml_node_t *n, const char *path, int *out);
/* A list, or nothing (an empty list); *count is its length. */
int rf_list(rf_ctx *c, yaml_node_t *n, const char *path, size_t *count);

/* A value written in the rules to compare a field with: its text, and
 * its number when it is one ("1000", "2.5"). */
typedef struct rf_value {
	char *text;                /* malloc'd; rf_value_release */
	int is_num;
	double num;
} rf_value;

/* A word or number of at most max bytes into v. */
int rf_get_value(rf_ctx *c, yaml_node_t *n, const char *path, size_t max, rf_value *v);
/*
 * A list of one or more such values (an `in:` list) into a new array
 * *out of *count.  *out and *count are set as the list is read, so after
 * a failure too the caller releases every value of *out[0..*count) and
 * frees *out.
 */
int rf_get_values(rf_ctx *c, yaml_node_t *n, const char *path, size_t max, rf_value **out,
                  size_t *count);
/* Free v's text; safe twice. */
void rf_value_release(rf_value *v);
/* A field's value v (and its number num when isnum) equals want: as
 * numbers when both are numbers, else as text ignoring case. */
int rf_value_eq(const rf_value *want, const char *v, int isnum, double num);
/* rf_value_eq with one of set[0..n). */
int rf_value_in(const rf_value *set, size_t n, const char *v, int isnum, double num);

/* A decimal number, all of s (no hex, inf, nan or spaces): 0, or -1. */
int rf_parse_number(const char *s, double *out);

/* ---- small helpers the services share ---- */

/* The byte helpers are proto's (bytes.h: fp_hex, fp_put_be64,
 * fp_get_be64); these names stay for the callers not yet moved to them. */
#define rf_put_be64(p, v) fp_put_be64((p), (v))
#define rf_get_be64(p) fp_get_be64(p)

/* ns since the epoch as "2026-01-01T00:00:00Z" (len >= 21). */
void rf_iso_time(uint64_t ns, char *out, size_t len);

/*
 * The text rules read from a msgpack value (a lead field, an activity's
 * detail), written to buf (cap bytes with the NUL): strings cut at cap - 1
 * bytes on a character boundary, numbers in decimal, booleans as
 * true/false.  Returns 1 (text in buf), 0 for nil, -1 for values rules
 * do not read (maps, arrays, binary, extensions).
 */
int rf_value_text(const msgpack_object *o, char *buf, size_t cap);

#endif
