/*
 * tests/unit/test_json.c - the CLI's JSON <-> msgpack converter
 * (clients/common/jsonpack.c and clients/cli/json.c): JSON text -> msgpack -> JSON round trips, exact
 * 64-bit integers, floats, errors with a position, msgpack types JSON
 * has no word for, and records rendered as JSON objects.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>
#include <msgpack.h>
#include <sodium.h>

#include "envelope.h"
#include "funnel/record.h"
#include "model.h"

/*
 * The msgpack -> JSON half belongs to the funnel CLI and is not part of
 * libfunnel,
 * which is all the test binaries link, so its source (and the helpers it
 * calls from util.c) is compiled into this test directly; the JSON ->
 * msgpack half (clients/common/jsonpack.c) comes with the objects every
 * unit test links.
 */
#include "../../clients/cli/json.c"
#include "../../clients/cli/util.c"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------
 * helpers
 * ---------------------------------------------------------------- */

/* A msgpack buffer with its packer. */
struct mp {
	msgpack_sbuffer sb;
	msgpack_packer pk;
};

static void
mp_init(struct mp *m)
{
	msgpack_sbuffer_init(&m->sb);
	msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}

static void
mp_free(struct mp *m)
{
	msgpack_sbuffer_destroy(&m->sb);
}

/* Unpack exactly one value filling buf[0..len). */
static void
unpack_one(msgpack_unpacked *up, const char *buf, size_t len)
{
	size_t off = 0;
	msgpack_unpacked_init(up);
	assert_int_equal(msgpack_unpack_next(up, buf, len, &off), MSGPACK_UNPACK_SUCCESS);
	assert_int_equal(off, len);
}

/* The compact JSON text of a msgpack object; the caller frees. */
static char *
render(const msgpack_object *o)
{
	cJSON *j = fjson_from_msgpack(o);
	assert_non_null(j);
	char *s = cJSON_PrintUnformatted(j);
	assert_non_null(s);
	cJSON_Delete(j);
	char *copy = strdup(s);
	assert_non_null(copy);
	cJSON_free(s);
	return copy;
}

/*
 * JSON text (of exactly its strlen, in a buffer of that size so a read
 * past the end shows under AddressSanitizer) -> msgpack.  Returns the
 * result code; on success m holds the value.
 */
static int
pack(struct mp *m, const char *text, char *err, size_t errlen)
{
	size_t n = strlen(text);
	char *exact = malloc(n ? n : 1);
	assert_non_null(exact);
	memcpy(exact, text, n);
	err[0] = '\0';
	int rc = fjson_pack_text(&m->pk, exact, n, err, errlen);
	free(exact);
	return rc;
}

/* ------------------------------------------------------------------
 * JSON -> msgpack -> JSON
 * ---------------------------------------------------------------- */

struct trip {
	const char *in;
	const char *out;                 /* the rendering of the msgpack value */
	msgpack_object_type type;        /* the msgpack type of the top value */
};

static const struct trip trips[] = {
	/* scalars */
	{ "true", "true", MSGPACK_OBJECT_BOOLEAN },
	{ "false", "false", MSGPACK_OBJECT_BOOLEAN },
	{ "null", "null", MSGPACK_OBJECT_NIL },
	{ "0", "0", MSGPACK_OBJECT_POSITIVE_INTEGER },
	{ "42", "42", MSGPACK_OBJECT_POSITIVE_INTEGER },
	{ "-1", "-1", MSGPACK_OBJECT_NEGATIVE_INTEGER },
	{ "\"\"", "\"\"", MSGPACK_OBJECT_STR },
	{ "\"lead.captured\"", "\"lead.captured\"", MSGPACK_OBJECT_STR },
	/* 64-bit integers are exact, beyond the 2^53 of a double */
	{ "9007199254740993", "9007199254740993", MSGPACK_OBJECT_POSITIVE_INTEGER },
	{ "9223372036854775807", "9223372036854775807", MSGPACK_OBJECT_POSITIVE_INTEGER },
	{ "18446744073709551615", "18446744073709551615", MSGPACK_OBJECT_POSITIVE_INTEGER },
	{ "-9223372036854775808", "-9223372036854775808", MSGPACK_OBJECT_NEGATIVE_INTEGER },
	{ "1700000000123456789", "1700000000123456789", MSGPACK_OBJECT_POSITIVE_INTEGER },
	/* out of the 64-bit range: a float */
	{ "18446744073709551616", "1.8446744073709552e+19", MSGPACK_OBJECT_FLOAT64 },
	{ "-9223372036854775809", "-9.223372036854776e+18", MSGPACK_OBJECT_FLOAT64 },
	/* floats read back as floats */
	{ "1.5", "1.5", MSGPACK_OBJECT_FLOAT64 },
	{ "-0.25", "-0.25", MSGPACK_OBJECT_FLOAT64 },
	{ "0.1", "0.1", MSGPACK_OBJECT_FLOAT64 },
	{ "1.0", "1.0", MSGPACK_OBJECT_FLOAT64 },
	{ "1e3", "1000.0", MSGPACK_OBJECT_FLOAT64 },
	{ "1E3", "1000.0", MSGPACK_OBJECT_FLOAT64 },
	{ "2.5e-7", "2.5e-07", MSGPACK_OBJECT_FLOAT64 },
	{ "1e300", "1e+300", MSGPACK_OBJECT_FLOAT64 },
	{ "3.141592653589793", "3.141592653589793", MSGPACK_OBJECT_FLOAT64 },
	{ "1200.50", "1200.5", MSGPACK_OBJECT_FLOAT64 },
	/* strings: escapes and unicode (escaped and raw UTF-8) */
	{ "\"a\\\"b\\\\c\\/d\\n\\t\"", "\"a\\\"b\\\\c/d\\n\\t\"", MSGPACK_OBJECT_STR },
	{ "\"h\\u00e9llo \\u2603 \\ud83d\\ude00\"", "\"h\xc3\xa9llo \xe2\x98\x83 \xf0\x9f\x98\x80\"",
	  MSGPACK_OBJECT_STR },
	{ "\"\xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80\"",
	  "\"\xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80\"", MSGPACK_OBJECT_STR },
	/* U+0000 is stored whole, NUL byte included, and printed back escaped;
	 * an escaped backslash before "u0000" is no NUL */
	{ "\"a\\u0000b\"", "\"a\\u0000b\"", MSGPACK_OBJECT_STR },
	{ "{\"s\":\"\\u0000\",\"t\":\"x\\n\\u0000\\u00e9\\\"\"}",
	  "{\"s\":\"\\u0000\",\"t\":\"x\\n\\u0000\xc3\xa9\\\"\"}", MSGPACK_OBJECT_MAP },
	{ "\"\\\\u0000\"", "\"\\\\u0000\"", MSGPACK_OBJECT_STR },
	/* empty containers */
	{ "{}", "{}", MSGPACK_OBJECT_MAP },
	{ "[]", "[]", MSGPACK_OBJECT_ARRAY },
	{ "[{},[],{\"a\":[]}]", "[{},[],{\"a\":[]}]", MSGPACK_OBJECT_ARRAY },
	/* objects and arrays */
	{ "{\"email\":\"ana@acme.example\",\"score\":87}",
	  "{\"email\":\"ana@acme.example\",\"score\":87}", MSGPACK_OBJECT_MAP },
	{ "[1,-2,3.5,\"x\",true,false,null]", "[1,-2,3.5,\"x\",true,false,null]",
	  MSGPACK_OBJECT_ARRAY },
	/* members keep their order, duplicates included */
	{ "{\"z\":1,\"a\":2,\"m\":3}", "{\"z\":1,\"a\":2,\"m\":3}", MSGPACK_OBJECT_MAP },
	{ "{\"a\":1,\"a\":2}", "{\"a\":1,\"a\":2}", MSGPACK_OBJECT_MAP },
	/* nested, with every integer still exact at depth */
	{ "{\"a\":{\"b\":[1,{\"c\":null,\"d\":[18446744073709551615,-9223372036854775808]}]}}",
	  "{\"a\":{\"b\":[1,{\"c\":null,\"d\":[18446744073709551615,-9223372036854775808]}]}}",
	  MSGPACK_OBJECT_MAP },
	/* numbers in strings and keys do not shift the literal of a later number */
	{ "{\"12\":\"-3e5\",\"k\\\"9\":\"\\\\\",\"n\":9223372036854775807,\"f\":[0.5,7]}",
	  "{\"12\":\"-3e5\",\"k\\\"9\":\"\\\\\",\"n\":9223372036854775807,\"f\":[0.5,7]}",
	  MSGPACK_OBJECT_MAP },
	/* whitespace around and inside the value */
	{ " \t{ \"a\" : [ 1 , 2 ] ,\n\"b\" : { } }\r\n ", "{\"a\":[1,2],\"b\":{}}", MSGPACK_OBJECT_MAP },
};

static void
test_round_trips(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMS(trips); i++) {
		struct mp m;
		char err[256];
		mp_init(&m);
		int rc = pack(&m, trips[i].in, err, sizeof err);
		if (rc != FUNNEL_OK)
			fail_msg("case %zu %s: rc %d (%s)", i, trips[i].in, rc, err);
		msgpack_unpacked up;
		unpack_one(&up, m.sb.data, m.sb.size);
		if (up.data.type != trips[i].type)
			fail_msg("case %zu %s: msgpack type %d, want %d", i, trips[i].in, up.data.type,
			         trips[i].type);
		char *out = render(&up.data);
		if (strcmp(out, trips[i].out) != 0)
			fail_msg("case %zu %s: rendered %s, want %s", i, trips[i].in, out, trips[i].out);

		/* the rendering is itself JSON that packs to the same bytes */
		struct mp again;
		mp_init(&again);
		rc = pack(&again, out, err, sizeof err);
		if (rc != FUNNEL_OK)
			fail_msg("case %zu: the rendering %s does not pack: %s", i, out, err);
		if (again.sb.size != m.sb.size || memcmp(again.sb.data, m.sb.data, m.sb.size) != 0)
			fail_msg("case %zu %s: packing the rendering %s gives other bytes", i,
			         trips[i].in, out);
		free(out);
		msgpack_unpacked_destroy(&up);
		mp_free(&again);
		mp_free(&m);
	}
}

/* The exact values and msgpack encodings of the 64-bit edges. */
static void
test_integer_edges(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		int negative;
		uint64_t u;
		int64_t i;
		uint8_t first;     /* msgpack type byte */
	} cases[] = {
		{ "127", 0, 127, 0, 0x7f },
		{ "255", 0, 255, 0, 0xcc },
		{ "4294967296", 0, 4294967296ULL, 0, 0xcf },
		{ "9223372036854775807", 0, 9223372036854775807ULL, 0, 0xcf },
		{ "18446744073709551615", 0, UINT64_MAX, 0, 0xcf },
		{ "-32", 1, 0, -32, 0xe0 },
		{ "-33", 1, 0, -33, 0xd0 },
		{ "-2147483649", 1, 0, -2147483649LL, 0xd3 },
		{ "-9223372036854775808", 1, 0, INT64_MIN, 0xd3 },
	};
	for (size_t i = 0; i < N_ELEMS(cases); i++) {
		struct mp m;
		char err[256];
		mp_init(&m);
		assert_int_equal(pack(&m, cases[i].in, err, sizeof err), FUNNEL_OK);
		assert_true(m.sb.size > 0);
		if ((uint8_t)m.sb.data[0] != cases[i].first)
			fail_msg("%s: first byte %02x, want %02x", cases[i].in, (uint8_t)m.sb.data[0],
			         cases[i].first);
		msgpack_unpacked up;
		unpack_one(&up, m.sb.data, m.sb.size);
		if (cases[i].negative) {
			assert_int_equal(up.data.type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
			assert_true(up.data.via.i64 == cases[i].i);
		} else {
			assert_int_equal(up.data.type, MSGPACK_OBJECT_POSITIVE_INTEGER);
			assert_true(up.data.via.u64 == cases[i].u);
		}
		msgpack_unpacked_destroy(&up);
		mp_free(&m);
	}
}

/* A string holding U+0000 is packed with its length: every byte is kept. */
static void
test_nul_kept(void **state)
{
	(void)state;
	struct mp m;
	char err[256];
	mp_init(&m);
	assert_int_equal(pack(&m, "{\"s\":\"a\\u0000b\"}", err, sizeof err), FUNNEL_OK);
	msgpack_unpacked up;
	unpack_one(&up, m.sb.data, m.sb.size);
	assert_int_equal(up.data.type, MSGPACK_OBJECT_MAP);
	assert_int_equal(up.data.via.map.size, 1);
	const msgpack_object *v = &up.data.via.map.ptr[0].val;
	assert_int_equal(v->type, MSGPACK_OBJECT_STR);
	assert_int_equal(v->via.str.size, 3);
	assert_memory_equal(v->via.str.ptr, "a\0b", 3);
	msgpack_unpacked_destroy(&up);
	mp_free(&m);
}

/* A value appended after what the packer already holds, as publish
 * packs one envelope after another. */
static void
test_appends(void **state)
{
	(void)state;
	struct mp m;
	char err[256];
	mp_init(&m);
	assert_int_equal(pack(&m, "{\"type\":\"x.a\"}", err, sizeof err), FUNNEL_OK);
	size_t first = m.sb.size;
	assert_int_equal(pack(&m, "[1,2]", err, sizeof err), FUNNEL_OK);
	assert_true(m.sb.size > first);

	msgpack_unpacked up;
	size_t off = 0;
	msgpack_unpacked_init(&up);
	assert_int_equal(msgpack_unpack_next(&up, m.sb.data, m.sb.size, &off), MSGPACK_UNPACK_SUCCESS);
	assert_int_equal(off, first);
	assert_int_equal(up.data.type, MSGPACK_OBJECT_MAP);
	assert_int_equal(msgpack_unpack_next(&up, m.sb.data, m.sb.size, &off), MSGPACK_UNPACK_SUCCESS);
	assert_int_equal(off, m.sb.size);
	assert_int_equal(up.data.type, MSGPACK_OBJECT_ARRAY);
	msgpack_unpacked_destroy(&up);
	mp_free(&m);
}

/* ------------------------------------------------------------------
 * invalid JSON
 * ---------------------------------------------------------------- */

struct bad {
	const char *in;
	const char *want;     /* a substring of the message */
};

static const struct bad bads[] = {
	{ "", "unexpected end of input" },
	{ "   \n", "unexpected end of input" },
	{ "{\"a\":}", "near byte 6 (at '}')" },
	{ "{\"a\":1,}", "near byte 8 (at '}')" },
	{ "[1 2]", "near byte 4 (at '2]')" },
	{ "{'a':1}", "invalid JSON near byte " },
	{ "{\"type\":lead.captured}", "near byte 9 (at 'lead.capture')" },
	/* a line cut short, as publish reads it (newline included) */
	{ "{\"a\":1\n", "unexpected end of input" },
	{ "[1,2\n", "unexpected end of input" },
	{ "{\"a\":\n", "unexpected end of input" },
	{ "nul", "invalid JSON" },
	{ "tru", "invalid JSON" },
	{ "\"abc", "invalid JSON" },
	{ "{\"a\":1", "invalid JSON" },
	{ "[1,2", "invalid JSON" },
	{ "{\"a\":1} x", "unexpected text after the value at byte 9" },
	{ "{\"a\":1}{\"b\":2}", "unexpected text after the value at byte 8" },
	{ "1 2", "unexpected text after the value at byte 3" },
	/* what would be stored as something else is refused, naming the field */
	{ "1e999", "the number 1e999 at field (the top-level value) is out of the float64 range "
	           "(it would be stored as +Inf)" },
	{ "{\"big\":1e999}", "the number 1e999 at field big is out of the float64 range" },
	{ "{\"a\":{\"b\":[1,-1e400]}}", "the number -1e400 at field a.b[1] is out of the float64 range "
	                           "(it would be stored as -Inf)" },
	{ "{\"k\\u0000x\":1}", "the member name at field k holds U+0000" },
};

static void
test_invalid(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMS(bads); i++) {
		struct mp m;
		char err[256];
		mp_init(&m);
		/* something already packed must stay as it was */
		msgpack_pack_true(&m.pk);
		int rc = pack(&m, bads[i].in, err, sizeof err);
		if (rc != FUNNEL_EJSON)
			fail_msg("case %zu '%s': rc %d, want FUNNEL_EJSON", i, bads[i].in, rc);
		if (strstr(err, bads[i].want) == NULL)
			fail_msg("case %zu '%s': message '%s' lacks '%s'", i, bads[i].in, err, bads[i].want);
		if (m.sb.size != 1)
			fail_msg("case %zu '%s': %zu bytes were appended", i, bads[i].in, m.sb.size - 1);
		mp_free(&m);
	}
}

/* The message fits any buffer, cut but terminated. */
static void
test_invalid_small_buffer(void **state)
{
	(void)state;
	struct mp m;
	char err[8];
	mp_init(&m);
	memset(err, 'x', sizeof err);
	assert_int_equal(pack(&m, "{\"a\":}", err, sizeof err), FUNNEL_EJSON);
	assert_int_equal(strlen(err), sizeof err - 1);
	mp_free(&m);
}

/* Nesting past cJSON's limit is an error, not a stack overflow. */
static void
test_too_deep(void **state)
{
	(void)state;
	size_t depth = CJSON_NESTING_LIMIT + 10;
	char *text = malloc(2 * depth + 1);
	assert_non_null(text);
	memset(text, '[', depth);
	memset(text + depth, ']', depth);
	text[2 * depth] = '\0';
	struct mp m;
	char err[256];
	mp_init(&m);
	assert_int_equal(fjson_pack_text(&m.pk, text, 2 * depth, err, sizeof err), FUNNEL_EJSON);
	assert_int_equal(m.sb.size, 0);
	mp_free(&m);
	free(text);
}

/* ------------------------------------------------------------------
 * msgpack -> JSON for what JSON has no word for
 * ---------------------------------------------------------------- */

typedef void (*packfn)(msgpack_packer *pk);

static void
p_bin(msgpack_packer *pk)
{
	msgpack_pack_bin_with_body(pk, "\x00\x01\xab\xff", 4);
}

static void
p_ext(msgpack_packer *pk)
{
	msgpack_pack_ext_with_body(pk, "\x01\x02", 2, 7);
}

static void
p_float32(msgpack_packer *pk)
{
	msgpack_pack_float(pk, 0.1f);
}

static void
p_float32_whole(msgpack_packer *pk)
{
	msgpack_pack_float(pk, 3.0f);
}

static void
p_nan(msgpack_packer *pk)
{
	msgpack_pack_array(pk, 3);
	msgpack_pack_double(pk, NAN);
	msgpack_pack_double(pk, INFINITY);
	msgpack_pack_double(pk, -INFINITY);
}

static void
p_keys(msgpack_packer *pk)
{
	msgpack_pack_map(pk, 6);
	msgpack_pack_uint64(pk, 5);
	msgpack_pack_str_with_body(pk, "a", 1);
	msgpack_pack_int64(pk, -7);
	msgpack_pack_str_with_body(pk, "b", 1);
	msgpack_pack_true(pk);
	msgpack_pack_str_with_body(pk, "c", 1);
	msgpack_pack_nil(pk);
	msgpack_pack_str_with_body(pk, "d", 1);
	msgpack_pack_bin_with_body(pk, "\x0f\xf0", 2);
	msgpack_pack_str_with_body(pk, "e", 1);
	msgpack_pack_array(pk, 2);
	msgpack_pack_uint64(pk, 1);
	msgpack_pack_uint64(pk, 2);
	msgpack_pack_str_with_body(pk, "f", 1);
}

static void
p_float_key(msgpack_packer *pk)
{
	msgpack_pack_map(pk, 1);
	msgpack_pack_double(pk, 1.5);
	msgpack_pack_uint64(pk, 1);
}

static void
p_nul_in_string(msgpack_packer *pk)
{
	msgpack_pack_str_with_body(pk, "ab\0cd", 5);
}

static const struct {
	const char *name;
	packfn fn;
	const char *want;
} renders[] = {
	{ "bin is hex", p_bin, "\"0001abff\"" },
	{ "ext is null", p_ext, "null" },
	{ "float32", p_float32, "0.1" },
	{ "float32 whole", p_float32_whole, "3.0" },
	{ "nan and infinities", p_nan, "[null,null,null]" },
	{ "keys that are not strings", p_keys,
	  "{\"5\":\"a\",\"-7\":\"b\",\"true\":\"c\",\"null\":\"d\",\"0ff0\":\"e\",\"[1,2]\":\"f\"}" },
	{ "float key", p_float_key, "{\"1.5\":1}" },
	{ "string with a NUL, whole", p_nul_in_string, "\"ab\\u0000cd\"" },
};

static void
test_render_other_types(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMS(renders); i++) {
		struct mp m;
		mp_init(&m);
		renders[i].fn(&m.pk);
		msgpack_unpacked up;
		unpack_one(&up, m.sb.data, m.sb.size);
		char *out = render(&up.data);
		if (strcmp(out, renders[i].want) != 0)
			fail_msg("%s: rendered %s, want %s", renders[i].name, out, renders[i].want);
		free(out);
		msgpack_unpacked_destroy(&up);
		mp_free(&m);
	}
}

/* The add helpers print exact integers. */
static void
test_add_helpers(void **state)
{
	(void)state;
	cJSON *o = cJSON_CreateObject();
	assert_non_null(o);
	assert_non_null(fjson_add_u64(o, "u", UINT64_MAX));
	assert_non_null(fjson_add_i64(o, "i", INT64_MIN));
	assert_non_null(fjson_add_strn(o, "s", "abcdef", 3));
	assert_non_null(fjson_add_hex(o, "h", "\x01\xfe", 2));
	char *s = cJSON_PrintUnformatted(o);
	assert_non_null(s);
	assert_string_equal(s, "{\"u\":18446744073709551615,\"i\":-9223372036854775808,"
	                       "\"s\":\"abc\",\"h\":\"01fe\"}");
	cJSON_free(s);
	cJSON_Delete(o);
}

/* ------------------------------------------------------------------
 * records
 * ---------------------------------------------------------------- */

static funnel_str
fstr(const char *s)
{
	return (funnel_str){ s, s ? strlen(s) : 0 };
}

struct rec_case {
	const char *name;
	const char *type;
	const char *lead;          /* NULL: no lead, so no stage or version */
	const char *id;
	const char *data;          /* JSON text of the data map, or NULL */
	int has_occurred_at;
	int64_t occurred_at;
	uint64_t cause;            /* 0: none */
	const char *producer;
	fp_stage stage;
	uint64_t version;
	uint64_t seq, ts;
	const char *time;          /* ts as RFC 3339 */
	uint8_t prev_fill;         /* prev is 32 bytes of this */
	/* the JSON keys, in order */
	const char *keys[16];
};

static const struct rec_case recs[] = {
	{
		.name = "captured", .type = "lead.captured", .lead = "L-1", .id = "form-123",
		.data = "{\"email\":\"ana@acme.example\",\"score\":87,\"big\":18446744073709551615,"
		        "\"tags\":[\"webinar\",\"q4\"],\"ratio\":0.5,\"name\":\"Jos\xc3\xa9\"}",
		.stage = FP_STAGE_INQUIRY, .version = 1,
		.seq = 1, .ts = 1700000000123456789ULL, .time = "2023-11-14T22:13:20.123Z",
		.prev_fill = 0,
		.keys = { "seq", "ts", "time", "type", "lead", "id", "stage", "version", "data",
		          "prev", "hash" },
	},
	{
		.name = "every field", .type = "deal.won", .lead = "L-7", .id = "won-7",
		.data = "{\"amount\":1200.5}", .has_occurred_at = 1, .occurred_at = -1234567890123LL,
		.cause = 41, .producer = "crm", .stage = FP_STAGE_WON, .version = 6,
		.seq = 9007199254740993ULL, .ts = 1763816400000000000ULL,
		.time = "2025-11-22T13:00:00.000Z", .prev_fill = 0xab,
		.keys = { "seq", "ts", "time", "type", "lead", "id", "occurred_at", "cause",
		          "producer", "stage", "version", "data", "prev", "hash" },
	},
	{
		.name = "no lead", .type = "x.ping", .seq = 3, .ts = 999,
		.time = "1970-01-01T00:00:00.000Z", .prev_fill = 0x01,
		.keys = { "seq", "ts", "time", "type", "prev", "hash" },
	},
	{
		.name = "empty data", .type = "rules.changed", .data = "{}", .seq = 4,
		.ts = 1000000000ULL, .time = "1970-01-01T00:00:01.000Z", .prev_fill = 0xff,
		.keys = { "seq", "ts", "time", "type", "data", "prev", "hash" },
	},
};

/* The literal of key in the compact JSON text, e.g. `"ts":1700...` ->
 * "1700...", to compare integers beyond a double's precision. */
static void
assert_literal(const char *text, const char *key, const char *want)
{
	char pat[64];
	snprintf(pat, sizeof pat, "\"%s\":", key);
	const char *p = strstr(text, pat);
	if (p == NULL)
		fail_msg("no %s in %s", pat, text);
	p += strlen(pat);
	size_t n = strcspn(p, ",}");
	if (n != strlen(want) || memcmp(p, want, n) != 0)
		fail_msg("%s is %.*s, want %s", key, (int)n, p, want);
}

static void
assert_str_field(const cJSON *o, const char *key, const char *want)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
	if (!cJSON_IsString(it))
		fail_msg("%s is not a string", key);
	if (strcmp(it->valuestring, want) != 0)
		fail_msg("%s is '%s', want '%s'", key, it->valuestring, want);
}

static void
test_records(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMS(recs); i++) {
		const struct rec_case *c = &recs[i];
		struct mp data;
		msgpack_unpacked dup;
		char err[256], num[32], hexbuf[2 * FUNNEL_HASH_BYTES + 1];
		uint8_t prev[FUNNEL_HASH_BYTES], hash[FUNNEL_HASH_BYTES];
		fp_event ev;

		memset(&ev, 0, sizeof ev);
		memset(prev, c->prev_fill, sizeof prev);
		ev.type = fstr(c->type);
		ev.spec = fp_evspec_lookup(ev.type.ptr, ev.type.len);
		ev.lead = fstr(c->lead);
		ev.id = fstr(c->id);
		ev.has_occurred_at = c->has_occurred_at;
		ev.occurred_at = c->occurred_at;
		ev.has_cause = c->cause != 0;
		ev.cause = c->cause;
		mp_init(&data);
		msgpack_unpacked_init(&dup);
		if (c->data != NULL) {
			assert_int_equal(pack(&data, c->data, err, sizeof err), FUNNEL_OK);
			msgpack_unpacked_destroy(&dup);
			unpack_one(&dup, data.sb.data, data.sb.size);
			ev.data = &dup.data;
		}
		fp_stamp st = {
			.seq = c->seq, .ts = c->ts, .producer = fstr(c->producer),
			.has_lead_state = c->lead != NULL, .stage = c->stage, .version = c->version,
			.prev = prev,
		};

		/* encode into a buffer of its exact size, then parse */
		msgpack_sbuffer sb;
		msgpack_sbuffer_init(&sb);
		assert_int_equal(fp_record_encode(&sb, &ev, &st, hash), FUNNEL_OK);
		uint8_t *rec = malloc(sb.size);
		assert_non_null(rec);
		memcpy(rec, sb.data, sb.size);
		size_t len = sb.size;
		msgpack_sbuffer_destroy(&sb);
		msgpack_zone zone;
		funnel_record r;
		msgpack_zone_init(&zone, 1024);
		assert_int_equal(funnel_record_parse(rec, len, &zone, &r), FUNNEL_OK);

		cJSON *j = fjson_record(&r);
		assert_non_null(j);
		char *text = cJSON_PrintUnformatted(j);
		assert_non_null(text);
		cJSON_Delete(j);
		cJSON *o = cJSON_Parse(text);
		if (o == NULL)
			fail_msg("%s: the rendering is not JSON: %s", c->name, text);
		assert_true(cJSON_IsObject(o));

		/* exactly these keys, in record order */
		size_t k = 0;
		for (const cJSON *it = o->child; it != NULL; it = it->next, k++) {
			if (c->keys[k] == NULL || strcmp(it->string, c->keys[k]) != 0)
				fail_msg("%s: key %zu is '%s', want '%s'", c->name, k, it->string,
				         c->keys[k] ? c->keys[k] : "(end)");
		}
		if (c->keys[k] != NULL)
			fail_msg("%s: key '%s' is missing", c->name, c->keys[k]);

		/* integers, exactly */
		assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "seq")));
		assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(o, "ts")));
		snprintf(num, sizeof num, "%" PRIu64, c->seq);
		assert_literal(text, "seq", num);
		snprintf(num, sizeof num, "%" PRIu64, c->ts);
		assert_literal(text, "ts", num);
		if (c->has_occurred_at) {
			snprintf(num, sizeof num, "%" PRId64, c->occurred_at);
			assert_literal(text, "occurred_at", num);
		}
		if (c->cause != 0) {
			snprintf(num, sizeof num, "%" PRIu64, c->cause);
			assert_literal(text, "cause", num);
		}

		/* strings */
		assert_str_field(o, "time", c->time);
		assert_str_field(o, "type", c->type);
		if (c->lead != NULL) {
			assert_str_field(o, "lead", c->lead);
			assert_str_field(o, "stage", fp_stage_name(c->stage));
			const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "version");
			assert_true(cJSON_IsNumber(v));
			assert_true(v->valuedouble == (double)c->version);
		}
		if (c->id != NULL)
			assert_str_field(o, "id", c->id);
		if (c->producer != NULL)
			assert_str_field(o, "producer", c->producer);

		/* data renders as the JSON it was packed from */
		if (c->data != NULL) {
			const cJSON *d = cJSON_GetObjectItemCaseSensitive(o, "data");
			assert_true(cJSON_IsObject(d));
			const char *p = strstr(text, "\"data\":");
			assert_non_null(p);
			p += strlen("\"data\":");
			if (strncmp(p, c->data, strlen(c->data)) != 0)
				fail_msg("%s: data is %s, want %s", c->name, p, c->data);
		}

		/* prev and hash as lower-case hex */
		cli_hex(prev, sizeof prev, hexbuf);
		assert_str_field(o, "prev", hexbuf);
		cli_hex(hash, sizeof hash, hexbuf);
		assert_str_field(o, "hash", hexbuf);
		cli_hex(rec + len - FUNNEL_HASH_BYTES, FUNNEL_HASH_BYTES, hexbuf);
		assert_str_field(o, "hash", hexbuf);

		cJSON_Delete(o);
		cJSON_free(text);
		msgpack_zone_destroy(&zone);
		free(rec);
		msgpack_unpacked_destroy(&dup);
		mp_free(&data);
	}
}

/* The rendering of a record carrying data JSON cannot say exactly (a bin
 * value, a non-string key) is still valid JSON. */
static void
test_record_odd_data(void **state)
{
	(void)state;
	struct mp data;
	msgpack_unpacked up;
	uint8_t hash[FUNNEL_HASH_BYTES];
	fp_event ev;

	mp_init(&data);
	msgpack_pack_map(&data.pk, 2);
	msgpack_pack_str_with_body(&data.pk, "blob", 4);
	msgpack_pack_bin_with_body(&data.pk, "\xde\xad", 2);
	msgpack_pack_str_with_body(&data.pk, "f", 1);
	msgpack_pack_double(&data.pk, 2.0);
	unpack_one(&up, data.sb.data, data.sb.size);
	memset(&ev, 0, sizeof ev);
	ev.type = fstr("x.odd");
	ev.spec = fp_evspec_lookup(ev.type.ptr, ev.type.len);
	ev.data = &up.data;
	fp_stamp st = { .seq = 2, .ts = 5 };
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	assert_int_equal(fp_record_encode(&sb, &ev, &st, hash), FUNNEL_OK);
	msgpack_zone zone;
	funnel_record r;
	msgpack_zone_init(&zone, 256);
	assert_int_equal(funnel_record_parse(sb.data, sb.size, &zone, &r), FUNNEL_OK);
	cJSON *j = fjson_record(&r);
	assert_non_null(j);
	char *text = cJSON_PrintUnformatted(j);
	assert_non_null(text);
	assert_non_null(strstr(text, "\"data\":{\"blob\":\"dead\",\"f\":2.0}"));
	assert_non_null(strstr(text, "\"prev\":\"" "0000000000000000000000000000000000000000000000000000000000000000\""));
	cJSON *o = cJSON_Parse(text);
	assert_non_null(o);
	cJSON_Delete(o);
	cJSON_free(text);
	cJSON_Delete(j);
	msgpack_zone_destroy(&zone);
	msgpack_sbuffer_destroy(&sb);
	msgpack_unpacked_destroy(&up);
	mp_free(&data);
}

/* fjson_print_line writes compact JSON and a newline. */
static void
test_print_line(void **state)
{
	(void)state;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	cJSON *o = cJSON_CreateObject();
	assert_non_null(o);
	assert_non_null(fjson_add_u64(o, "seq", 7));
	assert_non_null(cJSON_AddStringToObject(o, "type", "x.a"));
	assert_int_equal(fjson_print_line(f, o), 0);
	assert_int_equal(fjson_print(f, o), 0);
	assert_int_equal(fclose(f), 0);
	assert_string_equal(buf, "{\"seq\":7,\"type\":\"x.a\"}\n{\"seq\":7,\"type\":\"x.a\"}");
	free(buf);
	cJSON_Delete(o);
}

int
main(void)
{
	if (sodium_init() < 0)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trips),
		cmocka_unit_test(test_integer_edges),
		cmocka_unit_test(test_appends),
		cmocka_unit_test(test_nul_kept),
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_invalid_small_buffer),
		cmocka_unit_test(test_too_deep),
		cmocka_unit_test(test_render_other_types),
		cmocka_unit_test(test_add_helpers),
		cmocka_unit_test(test_records),
		cmocka_unit_test(test_record_odd_data),
		cmocka_unit_test(test_print_line),
	};
	return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
