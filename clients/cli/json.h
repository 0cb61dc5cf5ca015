/*
 * clients/cli/json.h - JSON <-> msgpack for the funnel CLI, on cJSON and
 * msgpack-c.
 *
 * JSON -> msgpack (what `funnel publish` sends):
 *   integer literals -> msgpack int (uint64 when >= 0, int64 when < 0;
 *                       a literal out of the 64-bit range becomes float64)
 *   literals with a fraction or an exponent -> float64
 *   strings, true/false, null, arrays, objects -> the same msgpack types
 *   (object members keep their order, duplicates included); a string
 *   holding U+0000 is stored whole, NUL byte included.
 * Refused with FUNNEL_EJSON, naming the field (data.price, tags[2]):
 *   a number out of the float64 range (1e999: it would be +Inf), and an
 *   object member name holding U+0000.
 * cJSON keeps every number as a double, which would round integers above
 * 2^53 (nanosecond timestamps are such integers), so the exact integer is
 * taken from the number's literal in the text the tree was parsed from.
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

/*
 * Parse the JSON text of len bytes (no NUL needed) and append it to pk as
 * one msgpack value.  Only whitespace may follow the value.  Returns
 * FUNNEL_OK; FUNNEL_EJSON with a sentence in err naming the byte where the
 * text went wrong, or the field holding a value refused above (nothing
 * was appended to pk); or FUNNEL_ENOMEM (pk may
 * hold part of the value: the caller discards its buffer or rolls it back).
 */
int fjson_pack_text(msgpack_packer *pk, const char *text, size_t len, char *err, size_t errlen);

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

/* Helpers for building objects: exact integers and strings of a given
 * length (the text is copied).  Return the new item, or NULL when out of
 * memory; on NULL nothing was added. */
cJSON *fjson_add_u64(cJSON *obj, const char *key, uint64_t v);
cJSON *fjson_add_i64(cJSON *obj, const char *key, int64_t v);
cJSON *fjson_add_strn(cJSON *obj, const char *key, const char *s, size_t len);
cJSON *fjson_add_hex(cJSON *obj, const char *key, const void *bytes, size_t len);

#endif /* FUNNEL_CLI_JSON_H */
