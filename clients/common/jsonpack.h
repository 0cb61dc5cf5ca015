/*
 * clients/common/jsonpack.h - JSON text -> msgpack, on cJSON and
 * msgpack-c: how `funnel publish` and funnel-gateway's POST /v1/events
 * turn a JSON envelope into the msgpack one funneld validates.
 *
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
 * Nothing here keeps a pointer to its inputs; reentrant (cJSON's hooks
 * are process-wide).
 */
#ifndef FUNNEL_JSONPACK_H
#define FUNNEL_JSONPACK_H

#include <stddef.h>

#include <msgpack.h>

/*
 * Parse the JSON text of len bytes (no NUL needed) and append it to pk as
 * one msgpack value.  Only whitespace may follow the value.  Returns
 * FUNNEL_OK; FUNNEL_EJSON with a sentence in err naming the byte where the
 * text went wrong, or the field holding a value refused above (nothing
 * was appended to pk); or FUNNEL_ENOMEM (pk may hold part of the value:
 * the caller discards its buffer or rolls it back).
 */
int fjson_pack_text(msgpack_packer *pk, const char *text, size_t len, char *err, size_t errlen);

/*
 * The elements of a JSON array text, without parsing them: calls fn with
 * each element's text (a view into text, surrounding whitespace left
 * in) and its index.  text[0..len) must start (after whitespace) with
 * '[' and end with its ']'.  Strings and nesting are followed, so commas
 * inside them do not cut.  Returns FUNNEL_OK, FUNNEL_EJSON (not an
 * array, unbalanced, an empty element) with a sentence in err, or what
 * fn returned when it was not FUNNEL_OK (the walk stops there).
 */
typedef int (*fjson_elem_fn)(const char *elem, size_t len, size_t index, void *ctx);
int fjson_array_each(const char *text, size_t len, fjson_elem_fn fn, void *ctx, char *err,
                     size_t errlen);

#endif /* FUNNEL_JSONPACK_H */
