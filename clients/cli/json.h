/*
 * clients/cli/json.h - JSON <-> msgpack for the funnel CLI, on cJSON and
 * msgpack-c.
 *
 * JSON -> msgpack (what `funnel publish` sends) is fjson_pack_text in
 * clients/common/jsonpack.h, shared with funnel-gateway.
 *
 * msgpack -> JSON (how records are printed):
 *   ints are printed exactly; floats with up to 17 significant digits and
 *   a ".0" when integral, so they read back as floats; NaN and infinities
 *   as null; bin as a lower-case hex string; ext as null; map keys that
 *   are not strings as their rendering (5 -> "5", true -> "true",
 *   bin -> its hex, anything else -> its compact JSON text).
 *   strings are printed whole (a NUL byte as \u0000); bytes that are not
 *   UTF-8 are copied as they are.  So bin and a hex string, NaN/Inf and
 *   null, ext and null print alike: --raw shows the stored bytes.
 *
 * Ownership: every cJSON tree returned here is new and the caller's, to
 * free with cJSON_Delete().  Nothing here keeps a pointer to its inputs.
 * Functions are reentrant except that cJSON's hooks are process-wide.
 */
#ifndef FUNNEL_CLI_JSON_H
#define FUNNEL_CLI_JSON_H

#include <stddef.h>
#include <stdio.h>

#include <cjson/cJSON.h>
#include <msgpack.h>

#include "funnel/record.h"
#include "jsonpack.h"     /* fjson_pack_text: JSON -> msgpack, shared with funnel-gateway */

/* A new cJSON tree for a msgpack object, or NULL when out of memory. */
cJSON *fjson_from_msgpack(const msgpack_object *o);

/*
 * A new JSON object for a parsed record, fields in record order, absent
 * fields left out:
 *   {"seq","ts","time","type","lead","id","occurred_at","cause","producer",
 *    "stage","version","data","prev","hash"}
 * "time" is ts as RFC 3339 UTC with milliseconds; prev and hash are hex.
 * NULL when out of memory.
 */
cJSON *fjson_record(const funnel_record *r);

/* Write `item` as compact JSON and a newline.  Returns 0, or -1 when out
 * of memory or the write failed. */
int fjson_print_line(FILE *f, const cJSON *item);

/* Write `item` as compact JSON without a newline; same returns. */
int fjson_print(FILE *f, const cJSON *item);

/* For a line a person reads (--human): every string in `item` longer
 * than max bytes becomes its first bytes (whole UTF-8 characters) and
 * "... (N bytes)", so a rules.changed's whole rules text does not fill
 * the screen; --json keeps every byte.  Returns 0, or -1 when out of
 * memory (item then partly shortened, still valid). */
int fjson_shorten(cJSON *item, size_t max);

/* Helpers for building objects: exact integers and strings of a given
 * length (the text is copied).  Return the new item, or NULL when out of
 * memory; on NULL nothing was added. */
cJSON *fjson_add_u64(cJSON *obj, const char *key, uint64_t v);
cJSON *fjson_add_i64(cJSON *obj, const char *key, int64_t v);
cJSON *fjson_add_strn(cJSON *obj, const char *key, const char *s, size_t len);
cJSON *fjson_add_hex(cJSON *obj, const char *key, const void *bytes, size_t len);

#endif /* FUNNEL_CLI_JSON_H */
