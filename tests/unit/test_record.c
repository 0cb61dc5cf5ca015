/*
 * tests/unit/test_record.c - the record format: fp_record_encode
 * (proto/envelope.c), funnel_record_parse/peek/hash_ok (proto/record.c)
 * and the hash-chain walker fp_chain_*.
 *
 * Records under test are copied into buffers of their exact size, so a
 * read past the end shows up under AddressSanitizer.
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
#include <msgpack.h>
#include <sodium.h>

#include <dirent.h>

#include "envelope.h"
#include "mp.h"
#include "unit.h"
#include "wire.h"
#include "workload.h"
#include "funnel/record.h"
#include "model.h"

static const uint8_t zeros[FUNNEL_HASH_BYTES];

static funnel_str
fstr(const char *s)
{
	return (funnel_str){ s, s ? strlen(s) : 0 };
}

/* A data map, packed and unpacked; owns its memory. */
struct data {
	msgpack_sbuffer sb;
	msgpack_unpacked up;
};

/* Map of n string keys "k0".. with string values of vlen bytes ('v'). */
static const msgpack_object *
data_make(struct data *d, int n, size_t vlen)
{
	msgpack_packer pk;
	char key[16];
	char *val = malloc(vlen + 1);
	assert_non_null(val);
	memset(val, 'v', vlen);
	msgpack_sbuffer_init(&d->sb);
	msgpack_packer_init(&pk, &d->sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, n);
	for (int i = 0; i < n; i++) {
		snprintf(key, sizeof key, "k%d", i);
		msgpack_pack_str_with_body(&pk, key, strlen(key));
		msgpack_pack_str_with_body(&pk, val, vlen);
	}
	free(val);
	msgpack_unpacked_init(&d->up);
	size_t off = 0;
	assert_int_equal(msgpack_unpack_next(&d->up, d->sb.data, d->sb.size, &off),
	                 MSGPACK_UNPACK_SUCCESS);
	return &d->up.data;
}

static void
data_free(struct data *d)
{
	msgpack_unpacked_destroy(&d->up);
	msgpack_sbuffer_destroy(&d->sb);
}

static void
event_init(fp_event *ev, const char *type, const char *lead)
{
	memset(ev, 0, sizeof *ev);
	ev->type = fstr(type);
	ev->spec = fp_evspec_lookup(ev->type.ptr, ev->type.len);
	if (lead)
		ev->lead = fstr(lead);
}

/* Encode into a fresh buffer of the exact size. */
static uint8_t *
encode(const fp_event *ev, const fp_stamp *st, size_t *len, uint8_t hash[FUNNEL_HASH_BYTES])
{
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	assert_int_equal(fp_record_encode(&sb, ev, st, hash), FUNNEL_OK);
	uint8_t *rec = dup_bytes(sb.data, sb.size);
	*len = sb.size;
	msgpack_sbuffer_destroy(&sb);
	return rec;
}

/* A record with every optional field present. */
static uint8_t *
full_record(size_t *len, uint8_t hash[FUNNEL_HASH_BYTES], struct data *d)
{
	static const uint8_t prev[FUNNEL_HASH_BYTES] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
		13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32 };
	fp_event ev;
	event_init(&ev, "deal.won", "lead-7");
	ev.id = fstr("won-7");
	ev.has_occurred_at = 1;
	ev.occurred_at = -1234567890123LL;
	ev.has_cause = 1;
	ev.cause = 41;
	ev.has_expected_version = 1;     /* not stored: a request condition */
	ev.expected_version = 5;
	ev.data = data_make(d, 2, 3);
	fp_stamp st = {
		.seq = 42, .ts = 1700000000123456789ULL, .producer = fstr("crm"),
		.has_lead_state = 1, .stage = FP_STAGE_WON, .version = 6, .prev = prev,
	};
	return encode(&ev, &st, len, hash);
}

/* ---- encode and parse ---- */

/* The event time (PROTOCOL.md §10): occurred_at when 0 < occurred_at <=
 * ts, else ts; and the out-of-order rule: never before the lead's
 * previous event time. */
static void
test_event_time(void **state)
{
	(void)state;
	static const struct {
		int has;
		int64_t occurred_at;
		uint64_t ts, prev, want, want_after;
	} cases[] = {
		{ 0, 0, 1000, 0, 1000, 1000 },          /* no occurred_at: ts */
		{ 1, 400, 1000, 0, 400, 400 },          /* backdated: occurred_at */
		{ 1, 1000, 1000, 0, 1000, 1000 },       /* equal to ts: kept */
		{ 1, 1001, 1000, 0, 1000, 1000 },       /* later than ts: ts */
		{ 1, 0, 1000, 0, 1000, 1000 },          /* the epoch: ts */
		{ 1, -5, 1000, 0, 1000, 1000 },         /* before the epoch: ts */
		{ 1, INT64_MIN, 1000, 0, 1000, 1000 },
		{ 1, 400, 1000, 700, 400, 700 },        /* before the previous: clamped */
		{ 1, 800, 1000, 700, 800, 800 },        /* after the previous: its own */
		{ 0, 0, 1000, 5000, 1000, 5000 },       /* prev past ts: still never back */
		{ 1, INT64_MAX, UINT64_MAX, 0, (uint64_t)INT64_MAX, (uint64_t)INT64_MAX },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		funnel_record r;
		memset(&r, 0, sizeof r);
		r.ts = cases[i].ts;
		r.has_occurred_at = cases[i].has;
		r.occurred_at = cases[i].occurred_at;
		assert_true(funnel_record_event_time(&r) == cases[i].want);
		assert_true(funnel_record_event_time_after(&r, cases[i].prev) == cases[i].want_after);
	}
}

static void
test_round_trip_all_fields(void **state)
{
	(void)state;
	struct data d;
	size_t len;
	uint8_t hash[FUNNEL_HASH_BYTES];
	uint8_t *rec = full_record(&len, hash, &d);
	msgpack_zone z;
	funnel_record r;
	msgpack_zone_init(&z, 1024);

	assert_int_equal(funnel_record_parse(rec, len, &z, &r), FUNNEL_OK);
	assert_int_equal(r.seq, 42);
	assert_true(r.ts == 1700000000123456789ULL);
	assert_true(str_is(r.type, "deal.won"));
	assert_true(str_is(r.lead, "lead-7"));
	assert_true(str_is(r.id, "won-7"));
	assert_true(str_is(r.producer, "crm"));
	assert_true(str_is(r.stage, "won"));
	assert_int_equal(r.has_occurred_at, 1);
	assert_true(r.occurred_at == -1234567890123LL);
	assert_int_equal(r.has_cause, 1);
	assert_int_equal(r.cause, 41);
	assert_int_equal(r.has_version, 1);
	assert_int_equal(r.version, 6);
	assert_non_null(r.data);
	assert_true(msgpack_object_equal(*r.data, d.up.data));
	assert_non_null(r.prev);
	for (int i = 0; i < FUNNEL_HASH_BYTES; i++)
		assert_int_equal(r.prev[i], i + 1);
	assert_memory_equal(r.hash, hash, FUNNEL_HASH_BYTES);
	assert_ptr_equal(r.bytes, rec);
	assert_int_equal(r.len, len);
	/* views point into the record's bytes */
	assert_true(r.type.ptr > (const char *)rec && r.type.ptr < (const char *)rec + len);
	assert_ptr_equal(r.hash, rec + len - FUNNEL_HASH_BYTES);
	assert_true(funnel_record_hash_ok(rec, len));

	msgpack_zone_destroy(&z);
	data_free(&d);
	free(rec);
}

static void
test_round_trip_absent_optionals(void **state)
{
	(void)state;
	fp_event ev;
	event_init(&ev, "x.ping", NULL);
	fp_stamp st = { .seq = 1, .ts = 5 };
	size_t len;
	uint8_t hash[FUNNEL_HASH_BYTES];
	uint8_t *rec = encode(&ev, &st, &len, hash);
	msgpack_zone z;
	funnel_record r;
	msgpack_zone_init(&z, 1024);

	assert_int_equal(funnel_record_parse(rec, len, &z, &r), FUNNEL_OK);
	assert_int_equal(r.seq, 1);
	assert_int_equal(r.ts, 5);
	assert_true(str_is(r.type, "x.ping"));
	assert_null(r.lead.ptr);
	assert_null(r.id.ptr);
	assert_null(r.producer.ptr);
	assert_null(r.stage.ptr);
	assert_int_equal(r.has_occurred_at, 0);
	assert_int_equal(r.has_cause, 0);
	assert_int_equal(r.has_version, 0);
	assert_null(r.data);
	assert_memory_equal(r.prev, zeros, FUNNEL_HASH_BYTES);   /* prev NULL: zeros */
	assert_true(funnel_record_hash_ok(rec, len));

	msgpack_zone_destroy(&z);
	free(rec);
}

/* Keys appear in the documented order; seq and ts are uint 64. */
static void
test_key_order(void **state)
{
	(void)state;
	static const char *const order[] = {
		"seq", "ts", "type", "lead", "id", "occurred_at", "cause", "producer",
		"stage", "version", "data", "prev", "hash",
	};
	struct data d;
	size_t len;
	uint8_t hash[FUNNEL_HASH_BYTES];
	uint8_t *rec = full_record(&len, hash, &d);
	msgpack_unpacked up;
	msgpack_unpacked_init(&up);
	size_t off = 0;
	assert_int_equal(msgpack_unpack_next(&up, (const char *)rec, len, &off), MSGPACK_UNPACK_SUCCESS);
	assert_int_equal(off, len);
	assert_int_equal(up.data.type, MSGPACK_OBJECT_MAP);
	assert_int_equal(up.data.via.map.size, sizeof order / sizeof order[0]);
	for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
		const msgpack_object *k = &up.data.via.map.ptr[i].key;
		assert_int_equal(k->type, MSGPACK_OBJECT_STR);
		if (k->via.str.size != strlen(order[i]) || memcmp(k->via.str.ptr, order[i], k->via.str.size))
			fail_msg("key %zu is '%.*s', want '%s'", i, (int)k->via.str.size, k->via.str.ptr, order[i]);
	}
	assert_int_equal(rec[5], 0xcf);
	assert_int_equal(rec[17], 0xcf);
	/* hash: bin 8 of 32 bytes, last */
	assert_int_equal(rec[len - 34], 0xc4);
	assert_int_equal(rec[len - 33], 32);
	msgpack_unpacked_destroy(&up);
	data_free(&d);
	free(rec);
}

/* The hash is BLAKE2b-256 of every byte before the last 32. */
static void
test_hash_definition(void **state)
{
	(void)state;
	struct data d;
	size_t len;
	uint8_t hash[FUNNEL_HASH_BYTES], want[FUNNEL_HASH_BYTES];
	uint8_t *rec = full_record(&len, hash, &d);
	crypto_generichash(want, sizeof want, rec, len - FUNNEL_HASH_BYTES, NULL, 0);
	assert_memory_equal(hash, want, FUNNEL_HASH_BYTES);
	assert_memory_equal(rec + len - FUNNEL_HASH_BYTES, want, FUNNEL_HASH_BYTES);
	data_free(&d);
	free(rec);
}

/* Records append to an sbuffer at its size on entry. */
static void
test_encode_appends(void **state)
{
	(void)state;
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msgpack_sbuffer_write(&sb, "HEAD", 4);
	size_t start[3];
	uint8_t h[3][FUNNEL_HASH_BYTES];
	for (int i = 0; i < 3; i++) {
		fp_event ev;
		event_init(&ev, "lead.captured", "L");
		fp_stamp st = { .seq = (uint64_t)i + 1, .ts = 100, .has_lead_state = 1,
		                .stage = FP_STAGE_INQUIRY, .version = (uint64_t)i + 1,
		                .prev = i ? h[i - 1] : NULL };
		start[i] = sb.size;
		assert_int_equal(fp_record_encode(&sb, &ev, &st, h[i]), FUNNEL_OK);
	}
	assert_memory_equal(sb.data, "HEAD", 4);
	for (int i = 0; i < 3; i++) {
		size_t end = i < 2 ? start[i + 1] : sb.size;
		const uint8_t *rec = (const uint8_t *)sb.data + start[i];
		uint64_t seq;
		assert_int_equal(funnel_record_peek(rec, end - start[i], &seq, NULL), FUNNEL_OK);
		assert_int_equal(seq, (uint64_t)i + 1);
		assert_true(funnel_record_hash_ok(rec, end - start[i]));
		assert_memory_equal(rec + (end - start[i]) - FUNNEL_HASH_BYTES, h[i], FUNNEL_HASH_BYTES);
	}
	msgpack_sbuffer_destroy(&sb);
}

/* ---- size limit ---- */

/* Record length for a data map of one value of vlen bytes. */
static size_t
len_with_value(size_t vlen, funnel_err *rc, msgpack_sbuffer *sb)
{
	struct data d;
	fp_event ev;
	uint8_t hash[FUNNEL_HASH_BYTES];
	event_init(&ev, "x.big", "L");
	ev.data = data_make(&d, 1, vlen);
	fp_stamp st = { .seq = 9, .ts = 9 };
	size_t before = sb->size;
	*rc = fp_record_encode(sb, &ev, &st, hash);
	data_free(&d);
	return sb->size - before;
}

static void
test_too_big(void **state)
{
	(void)state;
	msgpack_sbuffer sb;
	funnel_err rc;
	msgpack_sbuffer_init(&sb);

	/* a value of 1000 bytes (str 16) gives the fixed overhead */
	size_t overhead = len_with_value(1000, &rc, &sb) - 1000;
	assert_int_equal(rc, FUNNEL_OK);
	sb.size = 0;

	/* exactly at the limit: stored */
	size_t at = FP_MAX_RECORD_BYTES - overhead;
	assert_int_equal(len_with_value(at, &rc, &sb), FP_MAX_RECORD_BYTES);
	assert_int_equal(rc, FUNNEL_OK);
	assert_true(funnel_record_hash_ok(sb.data, sb.size));

	/* one byte over: ETOOBIG, the sbuffer back to its size on entry */
	sb.size = 0;
	msgpack_sbuffer_write(&sb, "keep-me", 7);
	assert_int_equal(len_with_value(at + 1, &rc, &sb), 0);
	assert_int_equal(rc, FUNNEL_ETOOBIG);
	assert_int_equal(sb.size, 7);
	assert_memory_equal(sb.data, "keep-me", 7);

	/* far over */
	assert_int_equal(len_with_value(200000, &rc, &sb), 0);
	assert_int_equal(rc, FUNNEL_ETOOBIG);
	assert_int_equal(sb.size, 7);

	/* and the sbuffer still works */
	assert_int_equal(len_with_value(10, &rc, &sb) > 0, 1);
	assert_int_equal(rc, FUNNEL_OK);
	assert_true(funnel_record_hash_ok(sb.data + 7, sb.size - 7));
	msgpack_sbuffer_destroy(&sb);
}

/* ---- peek ---- */

static void
test_peek_offsets(void **state)
{
	(void)state;
	static const struct {
		uint64_t seq, ts;
	} cases[] = {
		{ 1, 0 }, { 1, 1 }, { 127, 128 }, { 255, 256 }, { 65536, 1ULL << 32 },
		{ 1ULL << 40, 1700000000000000000ULL }, { UINT64_MAX, UINT64_MAX - 1 },
		{ 0x0102030405060708ULL, 0x1112131415161718ULL },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		fp_event ev;
		event_init(&ev, "x.t", NULL);
		fp_stamp st = { .seq = cases[i].seq, .ts = cases[i].ts };
		size_t len;
		uint8_t hash[FUNNEL_HASH_BYTES];
		uint8_t *rec = encode(&ev, &st, &len, hash);
		uint64_t seq = 0, ts = 0;
		assert_int_equal(funnel_record_peek(rec, len, &seq, &ts), FUNNEL_OK);
		assert_true(seq == cases[i].seq);
		assert_true(ts == cases[i].ts);
		/* the fixed offsets: big-endian at 6 and 18 */
		uint64_t bs = 0, bt = 0;
		for (int j = 0; j < 8; j++) {
			bs = bs << 8 | rec[6 + j];
			bt = bt << 8 | rec[18 + j];
		}
		assert_true(bs == cases[i].seq && bt == cases[i].ts);
		assert_int_equal(funnel_record_peek(rec, len, NULL, NULL), FUNNEL_OK);
		seq = 0;
		assert_int_equal(funnel_record_peek(rec, len, &seq, NULL), FUNNEL_OK);
		assert_true(seq == cases[i].seq);
		ts = 0;
		assert_int_equal(funnel_record_peek(rec, len, NULL, &ts), FUNNEL_OK);
		assert_true(ts == cases[i].ts);
		/* parse agrees */
		msgpack_zone z;
		funnel_record r;
		msgpack_zone_init(&z, 256);
		assert_int_equal(funnel_record_parse(rec, len, &z, &r), FUNNEL_OK);
		assert_true(r.seq == cases[i].seq && r.ts == cases[i].ts);
		msgpack_zone_destroy(&z);
		free(rec);
	}
}

static void
test_peek_malformed(void **state)
{
	(void)state;
	fp_event ev;
	event_init(&ev, "x.t", NULL);
	fp_stamp st = { .seq = 3, .ts = 4 };
	size_t len;
	uint8_t hash[FUNNEL_HASH_BYTES];
	uint8_t *rec = encode(&ev, &st, &len, hash);

	/* every prefix shorter than the fixed part, in a buffer of its size */
	for (size_t n = 0; n < 26; n++) {
		uint8_t *p = dup_bytes(rec, n);
		if (funnel_record_peek(p, n, NULL, NULL) != FUNNEL_EMALFORMED)
			fail_msg("peek accepted a %zu-byte prefix", n);
		free(p);
	}
	/* the fixed part alone is enough for peek */
	uint8_t *p = dup_bytes(rec, 26);
	uint64_t seq = 0;
	assert_int_equal(funnel_record_peek(p, 26, &seq, NULL), FUNNEL_OK);
	assert_int_equal(seq, 3);
	free(p);

	/* one byte of the fixed frame changed */
	static const struct {
		size_t off;
		uint8_t val;
	} bad[] = {
		{ 0, 0x90 },    /* array, not map */
		{ 0, 0xde },    /* map 16 */
		{ 1, 0xa4 },    /* key length */
		{ 2, 'S' },     /* "Seq" */
		{ 4, 'Q' },
		{ 5, 0xd3 },    /* int 64, not uint 64 */
		{ 5, 0x03 },    /* fixint */
		{ 14, 0xa3 },
		{ 15, 't' + 1 },
		{ 16, 'S' },
		{ 17, 0xce },   /* uint 32 */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		uint8_t *q = dup_bytes(rec, len);
		q[bad[i].off] = bad[i].val;
		if (funnel_record_peek(q, len, NULL, NULL) != FUNNEL_EMALFORMED)
			fail_msg("peek accepted byte %zu = 0x%02x", bad[i].off, bad[i].val);
		free(q);
	}
	assert_int_equal(funnel_record_peek("hello, world, this is not a record", 34, NULL, NULL),
	                 FUNNEL_EMALFORMED);
	free(rec);
}

/* ---- hash_ok and tampering ---- */

static void
test_hash_ok_short(void **state)
{
	(void)state;
	uint8_t buf[64] = { 0 };
	for (size_t n = 0; n < 58; n++)
		assert_int_equal(funnel_record_hash_ok(buf, n), 0);
	/* 64 zero bytes: hash of 32 zeros is not 32 zeros */
	assert_int_equal(funnel_record_hash_ok(buf, sizeof buf), 0);
}

/* Flipping any bit pattern of any byte is caught by parse or hash_ok. */
static void
test_every_byte_flip(void **state)
{
	(void)state;
	static const uint8_t masks[] = { 0x01, 0x80, 0xff, 0x20 };
	struct data d;
	size_t len;
	uint8_t hash[FUNNEL_HASH_BYTES];
	uint8_t *rec = full_record(&len, hash, &d);
	msgpack_zone z;
	funnel_record r;
	msgpack_zone_init(&z, 1024);
	int undetected = 0;
	for (size_t pos = 0; pos < len; pos++) {
		for (size_t m = 0; m < sizeof masks; m++) {
			uint8_t *q = dup_bytes(rec, len);
			q[pos] ^= masks[m];
			int parsed = funnel_record_parse(q, len, &z, &r) == FUNNEL_OK;
			int hashed = funnel_record_hash_ok(q, len);
			msgpack_zone_clear(&z);
			if (parsed && hashed) {
				print_error("byte %zu ^ 0x%02x not detected\n", pos, masks[m]);
				undetected++;
			}
			free(q);
		}
	}
	assert_int_equal(undetected, 0);
	msgpack_zone_destroy(&z);
	data_free(&d);
	free(rec);
}

/* Every truncation fails to parse (and does not read past the end). */
static void
test_truncated(void **state)
{
	(void)state;
	struct data d;
	size_t len;
	uint8_t hash[FUNNEL_HASH_BYTES];
	uint8_t *rec = full_record(&len, hash, &d);
	msgpack_zone z;
	funnel_record r;
	msgpack_zone_init(&z, 1024);
	for (size_t n = 0; n < len; n++) {
		uint8_t *q = dup_bytes(rec, n);
		if (funnel_record_parse(q, n, &z, &r) == FUNNEL_OK)
			fail_msg("a %zu-byte prefix of a %zu-byte record parsed", n, len);
		assert_int_equal(funnel_record_hash_ok(q, n), 0);
		msgpack_zone_clear(&z);
		free(q);
	}
	/* and one byte too many */
	uint8_t *q = malloc(len + 1);
	memcpy(q, rec, len);
	q[len] = 0xc0;
	assert_int_equal(funnel_record_parse(q, len + 1, &z, &r), FUNNEL_EMALFORMED);
	free(q);
	msgpack_zone_destroy(&z);
	data_free(&d);
	free(rec);
}

/* ---- parse: hand-built records of the wrong shape ---- */

/* One entry of a hand-built record. */
enum rk { R_END = 0, R_FIXU64, R_UINT, R_INT, R_STR, R_BIN, R_MAP0, R_ARR0 };
struct rkv {
	const char *key;
	enum rk kind;
	uint64_t u;          /* R_FIXU64, R_UINT; R_BIN: length */
	int64_t i;
	const char *s;
};

static const struct rkv base_record[] = {
	{ "seq", R_FIXU64, 7 }, { "ts", R_FIXU64, 8 }, { "type", R_STR, .s = "x.t" },
	{ "lead", R_STR, .s = "L" }, { "id", R_STR, .s = "i" }, { "occurred_at", R_INT, .i = -1 },
	{ "cause", R_UINT, 3 }, { "producer", R_STR, .s = "p" }, { "stage", R_STR, .s = "mql" },
	{ "version", R_UINT, 2 }, { "data", R_MAP0 }, { "prev", R_BIN, 32 }, { "hash", R_BIN, 32 },
	{ NULL, R_END },
};

enum rop { OP_NONE, OP_REPLACE, OP_DELETE, OP_SWAP_LAST_TWO, OP_TRAIL };

/* Pack base_record with one change, then hash it as the encoder would. */
static uint8_t *
build_record(enum rop op, const char *key, const struct rkv *with, size_t *len)
{
	struct rkv e[16];
	size_t n = 0;
	for (const struct rkv *b = base_record; b->kind != R_END; b++) {
		if (key && strcmp(b->key, key) == 0) {
			if (op == OP_DELETE)
				continue;
			if (op == OP_REPLACE) {
				e[n] = *with;
				e[n++].key = b->key;
				continue;
			}
		}
		e[n++] = *b;
	}
	if (op == OP_SWAP_LAST_TWO) {
		struct rkv t = e[n - 1];
		e[n - 1] = e[n - 2];
		e[n - 2] = t;
	}
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, n);
	for (size_t i = 0; i < n; i++) {
		msgpack_pack_str_with_body(&pk, e[i].key, strlen(e[i].key));
		switch (e[i].kind) {
		case R_FIXU64: msgpack_pack_fix_uint64(&pk, e[i].u); break;
		case R_UINT: msgpack_pack_uint64(&pk, e[i].u); break;
		case R_INT: msgpack_pack_int64(&pk, e[i].i); break;
		case R_STR: msgpack_pack_str_with_body(&pk, e[i].s, strlen(e[i].s)); break;
		case R_BIN:
			msgpack_pack_bin(&pk, e[i].u);
			for (uint64_t j = 0; j < e[i].u; j++)
				msgpack_sbuffer_write(&sb, "\0", 1);
			break;
		case R_MAP0: msgpack_pack_map(&pk, 0); break;
		case R_ARR0: msgpack_pack_array(&pk, 0); break;
		case R_END: break;
		}
	}
	if (op == OP_TRAIL)
		msgpack_sbuffer_write(&sb, "\xc0", 1);
	if (sb.size > FUNNEL_HASH_BYTES)
		crypto_generichash((uint8_t *)sb.data + sb.size - FUNNEL_HASH_BYTES, FUNNEL_HASH_BYTES,
		                   (const uint8_t *)sb.data, sb.size - FUNNEL_HASH_BYTES, NULL, 0);
	uint8_t *rec = dup_bytes(sb.data, sb.size);
	*len = sb.size;
	msgpack_sbuffer_destroy(&sb);
	return rec;
}

static void
test_parse_shapes(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		enum rop op;
		const char *key;
		struct rkv with;
		int rc;
	} cases[] = {
		{ "base", OP_NONE, NULL, { 0 }, FUNNEL_OK },
		{ "type int", OP_REPLACE, "type", { NULL, R_UINT, 1 }, FUNNEL_ETYPE },
		{ "type missing", OP_DELETE, "type", { 0 }, FUNNEL_EMISSING },
		{ "lead int", OP_REPLACE, "lead", { NULL, R_UINT, 1 }, FUNNEL_ETYPE },
		{ "id bin", OP_REPLACE, "id", { NULL, R_BIN, 2 }, FUNNEL_ETYPE },
		{ "producer map", OP_REPLACE, "producer", { NULL, R_MAP0 }, FUNNEL_ETYPE },
		{ "stage int", OP_REPLACE, "stage", { NULL, R_UINT, 2 }, FUNNEL_ETYPE },
		{ "occurred_at string", OP_REPLACE, "occurred_at", { NULL, R_STR, .s = "1" }, FUNNEL_ETYPE },
		{ "cause negative", OP_REPLACE, "cause", { NULL, R_INT, .i = -3 }, FUNNEL_ETYPE },
		{ "version string", OP_REPLACE, "version", { NULL, R_STR, .s = "2" }, FUNNEL_ETYPE },
		{ "data array", OP_REPLACE, "data", { NULL, R_ARR0 }, FUNNEL_ETYPE },
		{ "ts missing", OP_DELETE, "ts", { 0 }, FUNNEL_EMALFORMED },
		{ "seq fixint", OP_REPLACE, "seq", { NULL, R_UINT, 7 }, FUNNEL_EMALFORMED },
		{ "prev 31 bytes", OP_REPLACE, "prev", { NULL, R_BIN, 31 }, FUNNEL_EMALFORMED },
		{ "prev 33 bytes", OP_REPLACE, "prev", { NULL, R_BIN, 33 }, FUNNEL_EMALFORMED },
		{ "prev string", OP_REPLACE, "prev", { NULL, R_STR, .s = "0123456789abcdef0123456789abcdef" },
		  FUNNEL_ETYPE },
		{ "prev missing", OP_DELETE, "prev", { 0 }, FUNNEL_EMISSING },
		{ "hash 31 bytes", OP_REPLACE, "hash", { NULL, R_BIN, 31 }, FUNNEL_EMALFORMED },
		{ "hash missing", OP_DELETE, "hash", { 0 }, FUNNEL_EMALFORMED },
		{ "hash not last", OP_SWAP_LAST_TWO, NULL, { 0 }, FUNNEL_EMALFORMED },
		{ "trailing byte", OP_TRAIL, NULL, { 0 }, FUNNEL_EMALFORMED },
	};
	int failures = 0;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		size_t len;
		uint8_t *rec = build_record(cases[i].op, cases[i].key, &cases[i].with, &len);
		msgpack_zone z;
		funnel_record r;
		msgpack_zone_init(&z, 256);
		int rc = funnel_record_parse(rec, len, &z, &r);
		if (rc != cases[i].rc) {
			print_error("%s: got %s, want %s\n", cases[i].name, funnel_errname(rc),
			            funnel_errname(cases[i].rc));
			failures++;
		}
		msgpack_zone_destroy(&z);
		free(rec);
	}
	assert_int_equal(failures, 0);
}

/* Inputs that are no record at all. */
static void
test_parse_garbage(void **state)
{
	(void)state;
	static const struct {
		const char *b;
		size_t n;
	} g[] = {
		{ "", 0 }, { "\xc0", 1 }, { "\x80", 1 }, { "\x90", 1 }, { "\xc1", 1 },
		{ "\xdb\xff\xff\xff\xff", 5 }, { "\xc6\xff\xff\xff\xff", 5 },
		{ "hello world, not a record at all, just text......................", 66 },
	};
	for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
		uint8_t *b = dup_bytes(g[i].b, g[i].n);
		msgpack_zone z;
		funnel_record r;
		msgpack_zone_init(&z, 256);
		if (funnel_record_parse(b, g[i].n, &z, &r) == FUNNEL_OK)
			fail_msg("garbage %zu parsed", i);
		assert_int_equal(funnel_record_hash_ok(b, g[i].n), 0);
		msgpack_zone_destroy(&z);
		free(b);
	}
}

/* ---- the hash chain ---- */

#define CHAIN_LEN 50

struct chain {
	uint8_t *rec[CHAIN_LEN + 2];      /* rec[k]: the record with seq k */
	size_t len[CHAIN_LEN + 2];
	uint8_t hash[CHAIN_LEN + 2][FUNNEL_HASH_BYTES];   /* hash[0]: zeros */
};

/* Record k of the chain, with an explicit prev. */
static uint8_t *
chain_record(uint64_t k, const uint8_t *prev, size_t *len, uint8_t hash[FUNNEL_HASH_BYTES])
{
	char lead[32], id[32];
	struct data d;
	fp_event ev;
	snprintf(lead, sizeof lead, "lead-%" PRIu64, k % 7);
	snprintf(id, sizeof id, "evt-%" PRIu64, k);
	event_init(&ev, k % 3 ? "lead.captured" : "x.note", lead);
	ev.id = fstr(id);
	ev.data = data_make(&d, (int)(k % 4), 5);
	fp_stamp st = { .seq = k, .ts = 1000000 + k * 10, .has_lead_state = 1,
	                .stage = FP_STAGE_INQUIRY, .version = k, .prev = prev };
	uint8_t *rec = encode(&ev, &st, len, hash);
	data_free(&d);
	return rec;
}

static int
chain_setup(void **state)
{
	struct chain *c = calloc(1, sizeof *c);
	if (c == NULL)
		return -1;
	for (uint64_t k = 1; k <= CHAIN_LEN; k++)
		c->rec[k] = chain_record(k, k == 1 ? NULL : c->hash[k - 1], &c->len[k], c->hash[k]);
	*state = c;
	return 0;
}

static int
chain_teardown(void **state)
{
	struct chain *c = *state;
	for (int k = 0; k < CHAIN_LEN + 2; k++)
		free(c->rec[k]);
	free(c);
	return 0;
}

static int
starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void
test_chain_good(void **state)
{
	struct chain *c = *state;
	fp_chain w;
	char why[256] = "";
	fp_chain_init(&w, 1, NULL);
	for (uint64_t k = 1; k <= CHAIN_LEN; k++) {
		if (fp_chain_step(&w, c->rec[k], c->len[k], why, sizeof why) != FUNNEL_OK)
			fail_msg("seq %" PRIu64 ": %s", k, why);
		assert_int_equal(w.next_seq, k + 1);
		assert_memory_equal(w.head, c->hash[k], FUNNEL_HASH_BYTES);
	}
	/* prev chaining as parsed */
	msgpack_zone z;
	funnel_record r;
	msgpack_zone_init(&z, 256);
	for (uint64_t k = 1; k <= CHAIN_LEN; k++) {
		assert_int_equal(funnel_record_parse(c->rec[k], c->len[k], &z, &r), FUNNEL_OK);
		assert_memory_equal(r.prev, k == 1 ? zeros : c->hash[k - 1], FUNNEL_HASH_BYTES);
		msgpack_zone_clear(&z);
	}
	msgpack_zone_destroy(&z);
}

/* A walk may start in the middle, anchored on the previous hash. */
static void
test_chain_from_middle(void **state)
{
	struct chain *c = *state;
	fp_chain w;
	char why[256] = "";
	fp_chain_init(&w, 20, c->hash[19]);
	for (uint64_t k = 20; k <= CHAIN_LEN; k++)
		assert_int_equal(fp_chain_step(&w, c->rec[k], c->len[k], why, sizeof why), FUNNEL_OK);

	/* anchored on the wrong hash: the first record is named */
	fp_chain_init(&w, 20, c->hash[18]);
	assert_int_equal(fp_chain_step(&w, c->rec[20], c->len[20], why, sizeof why), FUNNEL_ECHAIN);
	assert_true(starts_with(why, "seq 20:"));
	/* NULL prev means zeros: wrong for seq 20 */
	fp_chain_init(&w, 20, NULL);
	assert_int_equal(fp_chain_step(&w, c->rec[20], c->len[20], why, sizeof why), FUNNEL_ECHAIN);
	assert_true(starts_with(why, "seq 20:"));
}

/* Walk records 1..k-1, then return the walker ready for seq k. */
static void
walk_to(const struct chain *c, fp_chain *w, uint64_t k)
{
	char why[256];
	fp_chain_init(w, 1, NULL);
	for (uint64_t j = 1; j < k; j++)
		assert_int_equal(fp_chain_step(w, c->rec[j], c->len[j], why, sizeof why), FUNNEL_OK);
}

/* Any altered byte of record k stops the walk at seq k, and the walk
 * can go on with the true record. */
static void
test_chain_altered(void **state)
{
	struct chain *c = *state;
	static const uint64_t ks[] = { 1, 2, 25, CHAIN_LEN };
	char why[256], prefix[32];
	for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
		uint64_t k = ks[i];
		fp_chain w;
		walk_to(c, &w, k);
		snprintf(prefix, sizeof prefix, "seq %" PRIu64 ":", k);
		for (size_t pos = 0; pos < c->len[k]; pos++) {
			uint8_t *q = dup_bytes(c->rec[k], c->len[k]);
			q[pos] ^= 0x01;
			why[0] = '\0';
			if (fp_chain_step(&w, q, c->len[k], why, sizeof why) != FUNNEL_ECHAIN)
				fail_msg("seq %" PRIu64 " byte %zu altered, chain step passed", k, pos);
			if (!starts_with(why, prefix))
				fail_msg("seq %" PRIu64 " byte %zu: why '%s'", k, pos, why);
			assert_int_equal(w.next_seq, k);
			free(q);
		}
		assert_int_equal(fp_chain_step(&w, c->rec[k], c->len[k], why, sizeof why), FUNNEL_OK);
	}
}

/* A change inside a string value keeps the record decodable: the
 * walker says the record was altered. */
static void
test_chain_altered_message(void **state)
{
	struct chain *c = *state;
	uint64_t k = 17;
	fp_chain w;
	char why[256] = "";
	walk_to(c, &w, k);
	uint8_t *q = dup_bytes(c->rec[k], c->len[k]);
	uint8_t *l = memmem(q, c->len[k], "lead-", 5);
	assert_non_null(l);
	l[0] = 'L';
	assert_int_equal(fp_chain_step(&w, q, c->len[k], why, sizeof why), FUNNEL_ECHAIN);
	assert_true(starts_with(why, "seq 17:"));
	assert_non_null(strstr(why, "record altered"));
	free(q);
}

/* A record that hashes right but names the wrong prev. */
static void
test_chain_wrong_prev(void **state)
{
	struct chain *c = *state;
	uint64_t k = 30;
	uint8_t bogus[FUNNEL_HASH_BYTES], h[FUNNEL_HASH_BYTES];
	memset(bogus, 0x5a, sizeof bogus);
	size_t len;
	uint8_t *forged = chain_record(k, bogus, &len, h);
	assert_true(funnel_record_hash_ok(forged, len));
	fp_chain w;
	char why[256] = "";
	walk_to(c, &w, k);
	assert_int_equal(fp_chain_step(&w, forged, len, why, sizeof why), FUNNEL_ECHAIN);
	assert_true(starts_with(why, "seq 30:"));
	assert_non_null(strstr(why, "prev"));
	assert_int_equal(w.next_seq, k);
	free(forged);

	/* record 1 must name zeros */
	forged = chain_record(1, bogus, &len, h);
	fp_chain_init(&w, 1, NULL);
	assert_int_equal(fp_chain_step(&w, forged, len, why, sizeof why), FUNNEL_ECHAIN);
	assert_true(starts_with(why, "seq 1:"));
	free(forged);
}

static void
test_chain_wrong_seq(void **state)
{
	struct chain *c = *state;
	fp_chain w;
	char why[256] = "";

	/* a gap: seq 11 where 10 was due */
	walk_to(c, &w, 10);
	assert_int_equal(fp_chain_step(&w, c->rec[11], c->len[11], why, sizeof why), FUNNEL_ECHAIN);
	assert_true(starts_with(why, "seq 10:"));
	assert_non_null(strstr(why, "11"));

	/* a repeat: seq 9 again */
	assert_int_equal(fp_chain_step(&w, c->rec[9], c->len[9], why, sizeof why), FUNNEL_ECHAIN);
	assert_true(starts_with(why, "seq 10:"));

	/* the walk goes on with the right one */
	assert_int_equal(fp_chain_step(&w, c->rec[10], c->len[10], why, sizeof why), FUNNEL_OK);

	/* a record with the right prev but a different seq number */
	uint8_t h[FUNNEL_HASH_BYTES];
	size_t len;
	fp_event ev;
	event_init(&ev, "x.t", NULL);
	fp_stamp st = { .seq = 12, .ts = 1, .prev = c->hash[10] };
	uint8_t *r = encode(&ev, &st, &len, h);
	assert_int_equal(fp_chain_step(&w, r, len, why, sizeof why), FUNNEL_ECHAIN);
	assert_true(starts_with(why, "seq 11:"));
	free(r);
}

static void
test_chain_garbage(void **state)
{
	struct chain *c = *state;
	fp_chain w;
	char why[256] = "";
	static const struct {
		const char *b;
		size_t n;
	} g[] = {
		{ "", 0 }, { "\x00", 1 }, { "garbage bytes, not msgpack", 26 },
		{ "\x81\xa3seq\x01", 6 }, { "\xdb\xff\xff\xff\xff", 5 },
	};
	walk_to(c, &w, 5);
	for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
		uint8_t *b = dup_bytes(g[i].b, g[i].n);
		assert_int_equal(fp_chain_step(&w, b, g[i].n, why, sizeof why), FUNNEL_ECHAIN);
		if (!starts_with(why, "seq 5:"))
			fail_msg("garbage %zu: why '%s'", i, why);
		free(b);
	}
	/* a record cut short */
	uint8_t *b = dup_bytes(c->rec[5], c->len[5] - 1);
	assert_int_equal(fp_chain_step(&w, b, c->len[5] - 1, why, sizeof why), FUNNEL_ECHAIN);
	assert_true(starts_with(why, "seq 5:"));
	free(b);
	/* the why buffer is bounded */
	char small[8];
	assert_int_equal(fp_chain_step(&w, "", 0, small, sizeof small), FUNNEL_ECHAIN);
	assert_true(strlen(small) < sizeof small);
	assert_int_equal(w.next_seq, 5);
}

/*
 * Huge declared lengths: an error, no crash.  msgpack-c allocates the
 * declared element count of an array or map up front (24 bytes per array
 * element, 48 per map entry), so 0xdd/0xdf ff ff ff ff ask malloc for
 * 128 GiB and 256 GiB.  Plain malloc fails and the parse fails cleanly;
 * under AddressSanitizer the default allocator_may_return_null=0 aborts
 * the process ("allocator is out of memory trying to allocate
 * 0x2000000008 bytes").  This test runs last for that reason.
 */
static void
test_huge_declared_lengths(void **state)
{
	(void)state;
	static const struct {
		const char *b;
		size_t n;
	} g[] = {
		{ "\xdd\xff\xff\xff\xff", 5 }, { "\xdf\xff\xff\xff\xff", 5 },
		{ "\x8d\xa3seq\xcf\0\0\0\0\0\0\0\x01\xa2ts\xcf\0\0\0\0\0\0\0\x01\xa4type\xdd\xff\xff\xff\xff", 36 },
	};
	for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
		uint8_t *b = dup_bytes(g[i].b, g[i].n);
		msgpack_zone z;
		funnel_record r;
		fp_chain w;
		char why[256] = "";
		msgpack_zone_init(&z, 256);
		if (funnel_record_parse(b, g[i].n, &z, &r) == FUNNEL_OK)
			fail_msg("input %zu parsed", i);
		msgpack_zone_destroy(&z);
		fp_chain_init(&w, 1, NULL);
		assert_int_equal(fp_chain_step(&w, b, g[i].n, why, sizeof why), FUNNEL_ECHAIN);
		assert_true(starts_with(why, "seq 1:"));
		free(b);
	}
}

/* ---- data copied in place (fp_event_data_bytes) ---- */

/* Encode the record of the envelope {type: "x.t", data: <data bytes>} twice,
 * once with data's bytes copied in place when fp_event_data_bytes() allows
 * it and once re-encoded; the records must be the same bytes.  Returns
 * whether the copy was taken. */
static int
data_copy_case(const unsigned char *data, size_t dlen)
{
	unsigned char env[2048];
	size_t n = 0;
	env[n++] = 0x82;
	env[n++] = 0xa4;
	memcpy(env + n, "type", 4), n += 4;
	env[n++] = 0xa3;
	memcpy(env + n, "x.t", 3), n += 3;
	env[n++] = 0xa4;
	memcpy(env + n, "data", 4), n += 4;
	assert_true(n + dlen <= sizeof env);
	memcpy(env + n, data, dlen), n += dlen;

	msgpack_zone z;
	msgpack_object o;
	size_t off = 0;
	msgpack_zone_init(&z, 4096);
	assert_int_equal(msgpack_unpack((const char *)env, n, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);
	assert_int_equal(off, n);
	fp_event ev;
	fp_error err;
	assert_int_equal(fp_event_decode(&o, &ev, &err), FUNNEL_OK);
	fp_stamp st = { .seq = 7, .ts = 1234567890123ull };
	uint8_t h1[FUNNEL_HASH_BYTES], h2[FUNNEL_HASH_BYTES];
	msgpack_sbuffer a, b;
	msgpack_sbuffer_init(&a);
	msgpack_sbuffer_init(&b);
	assert_int_equal(fp_record_encode(&a, &ev, &st, h1), FUNNEL_OK);   /* re-encoded */
	fp_event_data_bytes(&ev, env, n);
	int copied = ev.data_len > 0;
	if (copied)
		assert_int_equal(ev.data_len, dlen);
	assert_int_equal(fp_record_encode(&b, &ev, &st, h2), FUNNEL_OK);
	assert_int_equal(a.size, b.size);
	assert_memory_equal(a.data, b.data, a.size);
	assert_memory_equal(h1, h2, FUNNEL_HASH_BYTES);
	/* outside the buffer it was unpacked from: never copied */
	fp_event_data_bytes(&ev, env + n, 0);
	assert_int_equal(ev.data_len, 0);
	fp_event_data_bytes(&ev, env, n - 1);
	assert_int_equal(ev.data_len, 0);
	msgpack_sbuffer_destroy(&a);
	msgpack_sbuffer_destroy(&b);
	msgpack_zone_destroy(&z);
	return copied;
}

/* Pack a data map with msgpack-c (shortest encodings throughout). */
static void
pack_sample(msgpack_sbuffer *sb, int variant)
{
	msgpack_packer pk;
	char big[300];
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	memset(big, 'q', sizeof big);
	static const int64_t ints[] = { 0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295ll,
	                                4294967296ll, INT64_MAX, -1, -32, -33, -128, -129, -32768,
	                                -32769, INT32_MIN, (int64_t)INT32_MIN - 1, INT64_MIN };
	switch (variant) {
	case 0:
		msgpack_pack_map(&pk, 0);
		break;
	case 1:   /* every scalar */
		msgpack_pack_map(&pk, 6);
		msgpack_pack_str_with_body(&pk, "nil", 3), msgpack_pack_nil(&pk);
		msgpack_pack_str_with_body(&pk, "t", 1), msgpack_pack_true(&pk);
		msgpack_pack_str_with_body(&pk, "f", 1), msgpack_pack_false(&pk);
		msgpack_pack_str_with_body(&pk, "f32", 3), msgpack_pack_float(&pk, 1.5f);
		msgpack_pack_str_with_body(&pk, "f64", 3), msgpack_pack_double(&pk, -2.25e300);
		msgpack_pack_str_with_body(&pk, "bin", 3), msgpack_pack_bin_with_body(&pk, "\0\1\2", 3);
		break;
	case 2:   /* integers at every width boundary: a map of more than 15 */
		msgpack_pack_map(&pk, sizeof ints / sizeof ints[0]);
		for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
			char k[8];
			snprintf(k, sizeof k, "i%zu", i);
			msgpack_pack_str_with_body(&pk, k, strlen(k));
			if (ints[i] >= 0)
				msgpack_pack_uint64(&pk, (uint64_t)ints[i]);
			else
				msgpack_pack_int64(&pk, ints[i]);
		}
		break;
	case 3:   /* strings of 31, 32, 255, 256 bytes; nested arrays and maps */
		msgpack_pack_map(&pk, 3);
		msgpack_pack_str_with_body(&pk, big, 31), msgpack_pack_str_with_body(&pk, big, 32);
		msgpack_pack_str_with_body(&pk, big, 255), msgpack_pack_str_with_body(&pk, big, 256);
		msgpack_pack_str_with_body(&pk, "nest", 4);
		msgpack_pack_array(&pk, 17);
		for (int i = 0; i < 16; i++)
			msgpack_pack_int(&pk, i - 8);
		msgpack_pack_map(&pk, 1);
		msgpack_pack_str_with_body(&pk, "empty", 5);
		msgpack_pack_array(&pk, 0);
		break;
	}
}

static void
test_data_copied_in_place_or_reencoded(void **state)
{
	(void)state;
	for (int v = 0; v < 4; v++) {
		msgpack_sbuffer sb;
		msgpack_sbuffer_init(&sb);
		pack_sample(&sb, v);
		assert_true(data_copy_case((const unsigned char *)sb.data, sb.size));
		msgpack_sbuffer_destroy(&sb);
	}
	/* not the shortest form: re-encoded (the same record either way) */
	static const struct { const char *bytes; size_t len; } longer[] = {
		{ "\x81\xa1" "a" "\xcc\x05", 5 },            /* 5 as uint 8 */
		{ "\x81\xa1" "a" "\xd0\x05", 5 },            /* 5 as int 8 */
		{ "\x81\xa1" "a" "\xd1\xff\x80", 6 },        /* -128 as int 16 */
		{ "\x81\xd9\x01" "a" "\x01", 5 },            /* a short key as str 8 */
		{ "\xde\x00\x01\xa1" "a" "\x01", 6 },        /* one pair as map 16 */
		{ "\x81\xa1" "a" "\xdc\x00\x01\x01", 7 },    /* one item as array 16 */
		{ "\x81\xa1" "a" "\xd4\x01\x00", 6 },        /* ext: always encoded again */
		{ "\x82\xa1" "a" "\x01\xa1" "b" "\xcd\x00\x10", 9 },   /* the second pair only */
	};
	for (size_t i = 0; i < sizeof longer / sizeof longer[0]; i++)
		assert_false(data_copy_case((const unsigned char *)longer[i].bytes, longer[i].len));

	/* more encodings a producer may send: each either copied or encoded
	 * again, the record the same bytes both ways (data_copy_case) */
	static const struct { const char *bytes; size_t len; int copied; } more[] = {
		{ "\x81\xa1" "a" "\xcb\x3f\xf8\0\0\0\0\0\0", 12, 1 },   /* 1.5 as float 64 stays 64 */
		{ "\x81\xa1" "a" "\xca\x3f\xc0\0\0", 8, 1 },               /* 1.5 as float 32 stays 32 */
		{ "\x81\xa1" "a" "\xcf\0\0\0\0\0\0\0\x05", 12, 0 },    /* 5 as uint 64 */
		{ "\x81\xa1" "a" "\xd3\0\0\0\0\0\0\0\x05", 12, 0 },    /* 5 as int 64 */
		{ "\x81\xa1" "a" "\xd3\xff\xff\xff\xff\xff\xff\xff\xff", 12, 0 },   /* -1 as int 64 */
		{ "\x81\xa1" "a" "\xd0\xe0", 5, 0 },                        /* -32 as int 8 */
		{ "\x81\xa1" "a" "\xe0", 4, 1 },                             /* -32 as fixint */
		{ "\x81\xa1" "a" "\xda\0\x01" "b", 7, 0 },                  /* a short str as str 16 */
		{ "\x81\xa1" "a" "\xdb\0\0\0\x01" "b", 9, 0 },            /* ... as str 32 */
		{ "\x81\xa1" "a" "\xc4\x01" "b", 6, 1 },                    /* bin 8, not str */
		{ "\x81\xa1" "a" "\xc5\0\x01" "b", 7, 0 },                  /* a short bin as bin 16 */
		{ "\xdf\0\0\0\x01\xa1" "a" "\x01", 8, 0 },                /* one pair as map 32 */
		{ "\x81\xa1" "a" "\xdd\0\0\0\x01\x01", 9, 0 },           /* one item as array 32 */
		{ "\x81\xa1" "a" "\x91\xd4\x01\0", 7, 0 },                 /* ext nested in an array */
		{ "\x81\xa1" "a" "\xd6\xff\0\0\0\x01", 9, 0 },           /* the timestamp ext */
		{ "\x81\xa1" "a" "\x81\xcd\0\x05\xc0", 8, 0 },            /* nested int key, longer form */
		{ "\x81\xa1" "a" "\x81\x05\xc0", 6, 1 },                    /* nested int key */
		{ "\x81\xa1" "a" "\x82\xa1" "b" "\x01\xa1" "b" "\x02", 10, 1 },   /* nested key twice (§2) */
		{ "\x81\xa1" "a" "\x81\xa1" "b" "\x81\xa1" "c" "\xcc\x01", 11, 0 },   /* deep, longer */
	};
	for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) {
		if (data_copy_case((const unsigned char *)more[i].bytes, more[i].len) != more[i].copied)
			fail_msg("case %zu: copied %d, expected %d", i, !more[i].copied, more[i].copied);
	}
	/* a signalling NaN as float 32: quietened on its way through a double,
	 * so copied or not depends on the CPU; the record is the same either way */
	data_copy_case((const unsigned char *)"\x81\xa1" "a" "\xca\x7f\x80\0\x01", 8);
}

/*
 * The record as msgpack-c's packer writes it: fp_record_encode() before
 * it wrote the bytes itself, kept here as the definition the direct
 * encoder must match byte for byte.
 */
static funnel_err
ref_record_encode(msgpack_sbuffer *sb, const fp_event *ev, const fp_stamp *st,
                  uint8_t hash_out[FUNNEL_HASH_BYTES])
{
	size_t start = sb->size;
	msgpack_packer pk;
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	size_t n = 5 + (ev->lead.ptr != NULL) + (ev->id.ptr != NULL) + (size_t)ev->has_occurred_at +
	           (size_t)ev->has_cause + (st->producer.ptr != NULL) + (st->has_lead_state ? 2 : 0) +
	           (ev->data != NULL);
	int rc = msgpack_pack_map(&pk, n);
	rc |= mp_pack_key(&pk, "seq");
	rc |= msgpack_pack_fix_uint64(&pk, st->seq);
	rc |= mp_pack_key(&pk, "ts");
	rc |= msgpack_pack_fix_uint64(&pk, st->ts);
	rc |= mp_pack_key(&pk, "type");
	rc |= mp_pack_str(&pk, ev->type);
	if (ev->lead.ptr != NULL) {
		rc |= mp_pack_key(&pk, "lead");
		rc |= mp_pack_str(&pk, ev->lead);
	}
	if (ev->id.ptr != NULL) {
		rc |= mp_pack_key(&pk, "id");
		rc |= mp_pack_str(&pk, ev->id);
	}
	if (ev->has_occurred_at) {
		rc |= mp_pack_key(&pk, "occurred_at");
		rc |= msgpack_pack_int64(&pk, ev->occurred_at);
	}
	if (ev->has_cause) {
		rc |= mp_pack_key(&pk, "cause");
		rc |= msgpack_pack_uint64(&pk, ev->cause);
	}
	if (st->producer.ptr != NULL) {
		rc |= mp_pack_key(&pk, "producer");
		rc |= mp_pack_str(&pk, st->producer);
	}
	if (st->has_lead_state) {
		rc |= mp_pack_key(&pk, "stage");
		rc |= mp_pack_cstr(&pk, fp_stage_name(st->stage));
		rc |= mp_pack_key(&pk, "version");
		rc |= msgpack_pack_uint64(&pk, st->version);
	}
	if (ev->data != NULL) {
		rc |= mp_pack_key(&pk, "data");
		if (ev->data_len > 0)
			rc |= msgpack_sbuffer_write(sb, ev->data_at, ev->data_len);
		else
			rc |= msgpack_pack_object(&pk, *ev->data);
	}
	rc |= mp_pack_key(&pk, "prev");
	rc |= msgpack_pack_bin(&pk, FUNNEL_HASH_BYTES);
	rc |= msgpack_pack_bin_body(&pk, st->prev ? st->prev : zeros, FUNNEL_HASH_BYTES);
	rc |= mp_pack_key(&pk, "hash");
	rc |= msgpack_pack_bin(&pk, FUNNEL_HASH_BYTES);
	rc |= msgpack_pack_bin_body(&pk, zeros, FUNNEL_HASH_BYTES);
	if (rc != 0) {
		sb->size = start;
		return FUNNEL_ENOMEM;
	}
	size_t len = sb->size - start;
	if (len > FP_MAX_RECORD_BYTES) {
		sb->size = start;
		return FUNNEL_ETOOBIG;
	}
	uint8_t *rec = (uint8_t *)sb->data + start;
	crypto_generichash(hash_out, FUNNEL_HASH_BYTES, rec, len - FUNNEL_HASH_BYTES, NULL, 0);
	memcpy(rec + len - FUNNEL_HASH_BYTES, hash_out, FUNNEL_HASH_BYTES);
	return FUNNEL_OK;
}

/* Integers at every width boundary msgpack has, both signs. */
static const int64_t edge_ints[] = {
	0, 1, 31, 32, 127, 128, 255, 256, 65535, 65536, 4294967295ll, 4294967296ll, INT64_MAX,
	-1, -31, -32, -33, -127, -128, -129, -32767, -32768, -32769, INT32_MIN, (int64_t)INT32_MIN - 1,
	INT64_MIN, 1700000000123456789ll,
};
#define NEDGE (sizeof edge_ints / sizeof edge_ints[0])

/* Encode ev under stamp k (of many: seqs, versions, stages, producers and
 * integers at each width) with both encoders, after `pre` bytes already
 * in each buffer, and compare.  Returns the records compared. */
static size_t
compare_encoders(fp_event ev, unsigned k, msgpack_sbuffer *a, msgpack_sbuffer *b)
{
	static const char long_name[] = "producer-with-a-name-longer-than-thirty-two-bytes";
	char big[300];
	uint8_t prev[FUNNEL_HASH_BYTES], ha[FUNNEL_HASH_BYTES], hb[FUNNEL_HASH_BYTES];
	memset(big, 'p', sizeof big);
	for (size_t i = 0; i < sizeof prev; i++)
		prev[i] = (uint8_t)(k * 7 + i);
	uint64_t e = (uint64_t)edge_ints[k % NEDGE];
	fp_stamp st = {
		.seq = k % 3 == 0 ? e : k + 1, .ts = k % 5 == 0 ? e : 1700000000000000000ull + k,
		.has_lead_state = ev.lead.ptr != NULL || k % 4 == 1,
		.stage = (fp_stage)(k % FP_STAGE_COUNT), .version = e, .prev = k % 6 ? prev : NULL,
	};
	switch (k % 4) {
	case 1: st.producer = fstr("web"); break;
	case 2: st.producer = fstr(long_name); break;
	case 3: st.producer = (funnel_str){ big, 200 + k % 100 }; break;
	default: break;
	}
	if (k % 7 == 3) {
		ev.has_occurred_at = 1;
		ev.occurred_at = edge_ints[(k / 7) % NEDGE];
	}
	if (k % 9 == 4) {
		ev.has_cause = 1;
		ev.cause = (uint64_t)edge_ints[(k / 9) % NEDGE];
	}
	if (k % 2)
		ev.data_len = 0;   /* the data encoded again, not copied */
	size_t pre = k % 3 ? 0 : 17 + k % 50;
	a->size = b->size = 0;
	for (size_t i = 0; i < pre; i++) {
		msgpack_sbuffer_write(a, "x", 1);
		msgpack_sbuffer_write(b, "x", 1);
	}
	funnel_err ra = fp_record_encode(a, &ev, &st, ha);
	funnel_err rb = ref_record_encode(b, &ev, &st, hb);
	assert_int_equal(ra, rb);
	assert_int_equal(a->size, b->size);
	assert_memory_equal(a->data, b->data, a->size);
	if (ra == FUNNEL_OK)
		assert_memory_equal(ha, hb, sizeof ha);
	return 1;
}

/* Every event of a request frame that fp_event_decode() accepts, under
 * several stamps.  Returns the records compared. */
static size_t
compare_request(const void *buf, size_t len, msgpack_zone *z, msgpack_sbuffer *a,
                msgpack_sbuffer *b)
{
	fp_request req;
	fp_error err;
	size_t n = 0;
	msgpack_zone_clear(z);
	if (fp_request_decode(buf, len, z, &req, &err) != FUNNEL_OK || req.op != FP_OP_PUBLISH)
		return 0;
	for (uint32_t i = 0; i < req.events->via.array.size; i++) {
		fp_event ev;
		if (fp_event_decode(&req.events->via.array.ptr[i], &ev, &err) != FUNNEL_OK)
			continue;
		fp_event_data_bytes(&ev, buf, len);
		for (unsigned k = 0; k < 64; k++)
			n += compare_encoders(ev, k + i, a, b);
	}
	return n;
}

/*
 * fp_record_encode() writes what the packer wrote, byte for byte: over
 * the fuzz seeds (every shape an envelope may take), a long funnel-shaped
 * stream (tests/common/workload.h), and hand-made events at every integer
 * and string width, with and without producer, lead state and copied data.
 */
static void
test_direct_encoder_matches_packer(void **state)
{
	(void)state;
	msgpack_sbuffer a, b, req;
	msgpack_zone z;
	msgpack_packer pk;
	size_t compared = 0, files = 0;
	msgpack_sbuffer_init(&a);
	msgpack_sbuffer_init(&b);
	msgpack_sbuffer_init(&req);
	assert_true(msgpack_zone_init(&z, 4096));

	/* the fuzz seeds, from the source tree (tests run at its root) */
	DIR *d = opendir("tests/fuzz/corpus/envelope");
	assert_non_null(d);
	for (struct dirent *de; (de = readdir(d)) != NULL;) {
		char path[512];
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "tests/fuzz/corpus/envelope/%s", de->d_name);
		FILE *f = fopen(path, "rb");
		assert_non_null(f);
		static char buf[1 << 20];
		size_t len = fread(buf, 1, sizeof buf, f);
		fclose(f);
		compared += compare_request(buf, len, &z, &a, &b);
		files++;
	}
	closedir(d);
	assert_true(files >= 20);

	/* the bench's stream: 5000 events, in requests of 100 */
	wl_funnel g;
	wl_set set;
	wl_funnel_init(&g, 7, "enc");
	wl_set_init(&set);
	assert_int_equal(wl_set_fill(&set, &g, 5000), 0);
	for (size_t i = 0; i < set.n; i += 100) {
		size_t k = set.n - i < 100 ? set.n - i : 100;
		req.size = 0;
		msgpack_packer_init(&pk, &req, msgpack_sbuffer_write);
		assert_int_equal(fp_pack_publish_head(&pk, i + 1, k), 0);
		msgpack_sbuffer_write(&req, (const char *)set.ev[i].env,
		                      (size_t)(set.ev[i + k - 1].env + set.ev[i + k - 1].env_len - set.ev[i].env));
		compared += compare_request(req.data, req.size, &z, &a, &b);
	}
	wl_set_release(&set);

	/* strings at each header width, data of several sizes */
	static const size_t lens[] = { 1, 31, 32, 64, 127, 128 };
	for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
		char s[129];
		memset(s, 'a' + (int)i, sizeof s);
		for (int nd = 0; nd < 3; nd++) {
			struct data dd;
			fp_event ev = { 0 };
			ev.type = fstr("x.note");
			ev.lead = (funnel_str){ s, lens[i] };
			ev.id = (funnel_str){ s, lens[i] };
			ev.spec = fp_evspec_lookup(ev.type.ptr, ev.type.len);
			if (nd > 0) {
				ev.data = data_make(&dd, nd * 3, nd == 1 ? 40 : 70000);
				ev.data_at = dd.sb.data;
				ev.data_len = dd.sb.size;
			}
			for (unsigned k = 0; k < 2 * NEDGE * 9; k++)
				compared += compare_encoders(ev, k, &a, &b);
			if (nd > 0) {
				msgpack_unpacked_destroy(&dd.up);
				msgpack_sbuffer_destroy(&dd.sb);
			}
		}
	}
	assert_true(compared > 50000);
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&req);
	msgpack_sbuffer_destroy(&a);
	msgpack_sbuffer_destroy(&b);
}

int
main(void)
{
	if (sodium_init() < 0)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_event_time),
		cmocka_unit_test(test_round_trip_all_fields),
		cmocka_unit_test(test_round_trip_absent_optionals),
		cmocka_unit_test(test_key_order),
		cmocka_unit_test(test_hash_definition),
		cmocka_unit_test(test_encode_appends),
		cmocka_unit_test(test_direct_encoder_matches_packer),
		cmocka_unit_test(test_too_big),
		cmocka_unit_test(test_peek_offsets),
		cmocka_unit_test(test_peek_malformed),
		cmocka_unit_test(test_hash_ok_short),
		cmocka_unit_test(test_every_byte_flip),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_parse_shapes),
		cmocka_unit_test(test_parse_garbage),
		cmocka_unit_test_setup_teardown(test_chain_good, chain_setup, chain_teardown),
		cmocka_unit_test_setup_teardown(test_chain_from_middle, chain_setup, chain_teardown),
		cmocka_unit_test_setup_teardown(test_chain_altered, chain_setup, chain_teardown),
		cmocka_unit_test_setup_teardown(test_chain_altered_message, chain_setup, chain_teardown),
		cmocka_unit_test_setup_teardown(test_chain_wrong_prev, chain_setup, chain_teardown),
		cmocka_unit_test_setup_teardown(test_chain_wrong_seq, chain_setup, chain_teardown),
		cmocka_unit_test_setup_teardown(test_chain_garbage, chain_setup, chain_teardown),
		/* last: may abort under AddressSanitizer, see the test */
		cmocka_unit_test(test_huge_declared_lengths),
		cmocka_unit_test(test_data_copied_in_place_or_reencoded),
	};
	return cmocka_run_group_tests_name("record", tests, NULL, NULL);
}
