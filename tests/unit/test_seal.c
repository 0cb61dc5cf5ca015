/*
 * tests/unit/test_seal.c - sealed personal values (proto/seal.c, the
 * format of PROTOCOL.md section 21): a round trip, the associated data
 * binding lead and path, what reads as erased, nested maps, and payloads
 * cut short or tampered with.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>
#include <sodium.h>

#include "seal.h"
#include "unit.h"

static uint8_t key[FP_SEAL_KEY_BYTES], other[FP_SEAL_KEY_BYTES];

static const uint8_t *
nonce(void)
{
	static uint8_t n[FP_SEAL_NONCE_BYTES];
	randombytes_buf(n, sizeof n);
	return n;
}

static funnel_str
fstr(const char *s)
{
	return (funnel_str){ s, strlen(s) };
}

/* {"email": sealed("a@b.c"), "n": 5, "contact": {"phone": sealed(7)}} for lead L1 */
static void
pack_data(msgpack_sbuffer *sb)
{
	msgpack_packer pk, pp;
	msgpack_sbuffer plain;
	msgpack_sbuffer_init(sb);
	msgpack_sbuffer_init(&plain);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_packer_init(&pp, &plain, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	msgpack_pack_str_with_body(&pk, "email", 5);
	msgpack_pack_str_with_body(&pp, "a@b.c", 5);
	assert_int_equal(fp_seal_pack(&pk, key, nonce(), fstr("L1"), "email", 5, plain.data, plain.size), 0);
	msgpack_pack_str_with_body(&pk, "n", 1);
	msgpack_pack_int(&pk, 5);
	msgpack_pack_str_with_body(&pk, "contact", 7);
	msgpack_pack_map(&pk, 1);
	msgpack_pack_str_with_body(&pk, "phone", 5);
	plain.size = 0;
	msgpack_pack_int(&pp, 7);
	assert_int_equal(fp_seal_pack(&pk, key, nonce(), fstr("L1"), "contact.phone", 13, plain.data,
	                              plain.size), 0);
	msgpack_sbuffer_destroy(&plain);
}

static void
unpack(const msgpack_sbuffer *sb, msgpack_zone *z, msgpack_object *o)
{
	size_t off = 0;
	assert_int_equal(msgpack_unpack(sb->data, sb->size, &off, z, o), MSGPACK_UNPACK_SUCCESS);
}

static void
test_round_trip(void **state)
{
	(void)state;
	msgpack_sbuffer sb;
	msgpack_zone z;
	msgpack_object o, clear;
	pack_data(&sb);
	msgpack_zone_init(&z, 1024);
	unpack(&sb, &z, &o);
	const msgpack_object *email = &o.via.map.ptr[0].val;
	assert_true(fp_seal_is(email));
	assert_int_equal(email->via.ext.type, FP_SEAL_EXT);
	assert_int_equal(email->via.ext.size, FP_SEAL_OVERHEAD + 6);   /* fixstr of 5 */
	assert_int_equal((uint8_t)email->via.ext.ptr[0], FP_SEAL_VERSION);
	assert_int_equal(fp_seal_open(email, key, fstr("L1"), "email", 5, &z, &clear), 0);
	assert_int_equal(clear.type, MSGPACK_OBJECT_STR);
	assert_memory_equal(clear.via.str.ptr, "a@b.c", 5);
	/* the associated data binds the lead and the path; the key is the lead's */
	assert_int_equal(fp_seal_open(email, key, fstr("L2"), "email", 5, &z, &clear), 1);
	assert_int_equal(fp_seal_open(email, key, fstr("L1"), "name", 4, &z, &clear), 1);
	assert_int_equal(fp_seal_open(email, other, fstr("L1"), "email", 5, &z, &clear), 1);
	assert_true(fp_seal_any(&o));
	assert_true(fp_seal_opens(&o, key, fstr("L1"), &z));
	assert_false(fp_seal_opens(&o, other, fstr("L1"), &z));
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
}

static void
test_open_all(void **state)
{
	(void)state;
	msgpack_sbuffer sb;
	msgpack_zone z;
	msgpack_object o;
	pack_data(&sb);
	msgpack_zone_init(&z, 1024);

	unpack(&sb, &z, &o);
	assert_int_equal(fp_seal_open_all(&o, key, fstr("L1"), &z), 2);
	assert_memory_equal(o.via.map.ptr[0].val.via.str.ptr, "a@b.c", 5);
	assert_int_equal(o.via.map.ptr[1].val.via.u64, 5);
	const msgpack_object *phone = &o.via.map.ptr[2].val.via.map.ptr[0].val;
	assert_int_equal(phone->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
	assert_int_equal(phone->via.u64, 7);
	assert_false(fp_seal_any(&o));

	/* no key (erased), or another one (a fresh key after erasure): "[erased]" */
	for (int k = 0; k < 2; k++) {
		unpack(&sb, &z, &o);
		assert_int_equal(fp_seal_open_all(&o, k ? other : NULL, fstr("L1"), &z), 2);
		for (int i = 0; i < 2; i++) {
			const msgpack_object *v = i ? &o.via.map.ptr[2].val.via.map.ptr[0].val
			                            : &o.via.map.ptr[0].val;
			assert_int_equal(v->type, MSGPACK_OBJECT_STR);
			assert_int_equal(v->via.str.size, strlen(FP_SEAL_ERASED));
			assert_memory_equal(v->via.str.ptr, FP_SEAL_ERASED, v->via.str.size);
		}
	}
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
}

static void
test_bad_payloads(void **state)
{
	(void)state;
	msgpack_sbuffer sb;
	msgpack_zone z;
	msgpack_object o, clear;
	pack_data(&sb);
	msgpack_zone_init(&z, 1024);
	unpack(&sb, &z, &o);
	msgpack_object e = o.via.map.ptr[0].val;
	uint8_t *copy = dup_bytes(e.via.ext.ptr, e.via.ext.size);
	e.via.ext.ptr = (const char *)copy;
	copy[e.via.ext.size - 1] ^= 1;   /* the tag */
	assert_int_equal(fp_seal_open(&e, key, fstr("L1"), "email", 5, &z, &clear), 1);
	copy[e.via.ext.size - 1] ^= 1;
	copy[0] = 2;                     /* an unknown version */
	assert_int_equal(fp_seal_open(&e, key, fstr("L1"), "email", 5, &z, &clear), 1);
	copy[0] = FP_SEAL_VERSION;
	for (uint32_t n = 0; n < FP_SEAL_OVERHEAD; n++) {   /* cut short */
		e.via.ext.size = n;
		assert_int_equal(fp_seal_open(&e, key, fstr("L1"), "email", 5, &z, &clear), 1);
	}
	msgpack_object s = { .type = MSGPACK_OBJECT_STR };
	assert_int_equal(fp_seal_open(&s, key, fstr("L1"), "email", 5, &z, &clear), -1);
	free(copy);
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&sb);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_open_all),
		cmocka_unit_test(test_bad_payloads),
	};
	if (sodium_init() < 0)
		return 1;
	randombytes_buf(key, sizeof key);
	randombytes_buf(other, sizeof other);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
