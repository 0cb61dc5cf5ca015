/*
 * tests/unit/test_envelope.c - envelope decoding and validation
 * (fp_event_decode in proto/envelope.c).
 *
 * Inputs are built with msgpack_pack_* from small tables of key/value
 * descriptions (struct kv), packed into an sbuffer and unpacked again,
 * the way the daemon sees them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "envelope.h"
#include "model.h"
#include "mp.h"
#include "utf8.h"

/* ---- building envelopes ---- */

enum vk { V_END = 0, V_STR, V_LONG, V_INT, V_UINT, V_NIL, V_TRUE, V_F64, V_MAP, V_ARR0, V_BIN };

/* One map entry.  key NULL (with a kind other than V_END) packs the
 * integer key 1.  An array of kv ends at the first V_END (a zeroed kv). */
struct kv {
	const char *key;
	enum vk kind;
	const char *s;          /* V_STR: the value; V_LONG: its prefix */
	size_t n;               /* V_LONG: total length, padded with 'a' */
	int64_t i;              /* V_INT */
	uint64_t u;             /* V_UINT */
	double d;               /* V_F64 */
	const struct kv *sub;   /* V_MAP */
};

#define END { .kind = V_END }
#define S(k, v) { .key = (k), .kind = V_STR, .s = (v) }
#define LONG(k, pre, len) { .key = (k), .kind = V_LONG, .s = (pre), .n = (len) }
#define I(k, v) { .key = (k), .kind = V_INT, .i = (v) }
#define U(k, v) { .key = (k), .kind = V_UINT, .u = (v) }
#define NIL(k) { .key = (k), .kind = V_NIL }
#define TRUE(k) { .key = (k), .kind = V_TRUE }
#define F(k, v) { .key = (k), .kind = V_F64, .d = (v) }
#define ARR0(k) { .key = (k), .kind = V_ARR0 }
#define BIN(k, v) { .key = (k), .kind = V_BIN, .s = (v) }
#define M(k, ...) { .key = (k), .kind = V_MAP, .sub = (const struct kv[]){ __VA_ARGS__, END } }
#define M0(k) { .key = (k), .kind = V_MAP, .sub = (const struct kv[]){ END } }

static void pack_map(msgpack_packer *pk, const struct kv *kvs);

static void
pack_value(msgpack_packer *pk, const struct kv *e)
{
	switch (e->kind) {
	case V_STR:
		msgpack_pack_str_with_body(pk, e->s, strlen(e->s));
		break;
	case V_LONG: {
		char *buf = malloc(e->n);
		size_t pre = strlen(e->s);
		assert_non_null(buf);
		memset(buf, 'a', e->n);
		memcpy(buf, e->s, pre < e->n ? pre : e->n);
		msgpack_pack_str_with_body(pk, buf, e->n);
		free(buf);
		break;
	}
	case V_INT: msgpack_pack_int64(pk, e->i); break;
	case V_UINT: msgpack_pack_uint64(pk, e->u); break;
	case V_NIL: msgpack_pack_nil(pk); break;
	case V_TRUE: msgpack_pack_true(pk); break;
	case V_F64: msgpack_pack_double(pk, e->d); break;
	case V_MAP: pack_map(pk, e->sub); break;
	case V_ARR0: msgpack_pack_array(pk, 0); break;
	case V_BIN: msgpack_pack_bin_with_body(pk, e->s, strlen(e->s)); break;
	case V_END: break;
	}
}

static void
pack_map(msgpack_packer *pk, const struct kv *kvs)
{
	size_t n = 0;
	while (kvs[n].kind != V_END)
		n++;
	msgpack_pack_map(pk, n);
	for (size_t i = 0; i < n; i++) {
		if (kvs[i].key != NULL)
			msgpack_pack_str_with_body(pk, kvs[i].key, strlen(kvs[i].key));
		else
			msgpack_pack_int(pk, 1);
		pack_value(pk, &kvs[i]);
	}
}

/* A packed and unpacked envelope; owns everything. */
struct env {
	msgpack_sbuffer sb;
	msgpack_unpacked up;
};

static const msgpack_object *
env_build(struct env *e, const struct kv *kvs)
{
	msgpack_packer pk;
	msgpack_sbuffer_init(&e->sb);
	msgpack_packer_init(&pk, &e->sb, msgpack_sbuffer_write);
	pack_map(&pk, kvs);
	msgpack_unpacked_init(&e->up);
	size_t off = 0;
	assert_int_equal(msgpack_unpack_next(&e->up, e->sb.data, e->sb.size, &off),
	                 MSGPACK_UNPACK_SUCCESS);
	return &e->up.data;
}

static const msgpack_object *
env_raw(struct env *e, const char *bytes, size_t len)
{
	msgpack_sbuffer_init(&e->sb);
	msgpack_sbuffer_write(&e->sb, bytes, len);
	msgpack_unpacked_init(&e->up);
	size_t off = 0;
	assert_int_equal(msgpack_unpack_next(&e->up, e->sb.data, e->sb.size, &off),
	                 MSGPACK_UNPACK_SUCCESS);
	return &e->up.data;
}

static void
env_free(struct env *e)
{
	msgpack_unpacked_destroy(&e->up);
	msgpack_sbuffer_destroy(&e->sb);
}

static int
str_is(funnel_str s, const char *want)
{
	return s.ptr != NULL && s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

/* ---- valid envelopes ---- */

/* A valid envelope of every known type, with the least each needs. */
static const struct vcase {
	const char *name;
	struct kv f[8];
	fp_evtype type;
} valid[] = {
	{ "captured", { S("type", "lead.captured"), S("lead", "L1") }, FP_EV_CAPTURED },
	{ "captured+data", { S("type", "lead.captured"), S("lead", "L1"),
	                     M("data", S("email", "a@b.c"), I("n", -3)) }, FP_EV_CAPTURED },
	{ "activity", { S("type", "lead.activity"), S("lead", "L1"), M("data", S("kind", "page_view")) },
	  FP_EV_ACTIVITY },
	{ "scored", { S("type", "lead.scored"), S("lead", "L1"), M("data", U("fit", 40), F("eng", 1.5)) },
	  FP_EV_SCORED },
	{ "qualified", { S("type", "lead.qualified"), S("lead", "L1") }, FP_EV_QUALIFIED },
	{ "assigned", { S("type", "lead.assigned"), S("lead", "L1"), M("data", S("owner", "rep-7")) },
	  FP_EV_ASSIGNED },
	{ "contacted", { S("type", "lead.contacted"), S("lead", "L1") }, FP_EV_CONTACTED },
	{ "accepted", { S("type", "lead.accepted"), S("lead", "L1") }, FP_EV_ACCEPTED },
	{ "rejected", { S("type", "lead.rejected"), S("lead", "L1"), M("data", S("reason", "no budget")) },
	  FP_EV_REJECTED },
	{ "recycled", { S("type", "lead.recycled"), S("lead", "L1"), M("data", S("reason", "timing")) },
	  FP_EV_RECYCLED },
	{ "disqualified", { S("type", "lead.disqualified"), S("lead", "L1"),
	                    M("data", S("reason", "spam")) }, FP_EV_DISQUALIFIED },
	{ "opp.opened", { S("type", "opportunity.opened"), S("lead", "L1") }, FP_EV_OPP_OPENED },
	{ "opp.opened+amount", { S("type", "opportunity.opened"), S("lead", "L1"),
	                         M("data", U("amount", 12000)) }, FP_EV_OPP_OPENED },
	{ "deal.won", { S("type", "deal.won"), S("lead", "L1"), M("data", F("amount", 99.5)) },
	  FP_EV_DEAL_WON },
	{ "deal.won no amount", { S("type", "deal.won"), S("lead", "L1") }, FP_EV_DEAL_WON },
	{ "deal.won amount 0", { S("type", "deal.won"), S("lead", "L1"), M("data", U("amount", 0)) },
	  FP_EV_DEAL_WON },
	{ "deal.won amount 0.0", { S("type", "deal.won"), S("lead", "L1"), M("data", F("amount", 0.0)) },
	  FP_EV_DEAL_WON },
	{ "deal.won amount max", { S("type", "deal.won"), S("lead", "L1"),
	                           M("data", U("amount", UINT64_MAX)) }, FP_EV_DEAL_WON },
	{ "deal.lost", { S("type", "deal.lost"), S("lead", "L1"), M("data", S("reason", "price")) },
	  FP_EV_DEAL_LOST },
	{ "sla_breached", { S("type", "lead.sla_breached"), S("lead", "L1") }, FP_EV_SLA_BREACHED },
	{ "rules.changed", { S("type", "rules.changed"), M("data", S("hash", "abc123")) },
	  FP_EV_RULES_CHANGED },
	{ "rules.changed+lead", { S("type", "rules.changed"), S("lead", "L1"),
	                          M("data", S("hash", "abc123")) }, FP_EV_RULES_CHANGED },
	{ "erased", { S("type", "lead.erased"), S("lead", "L1") }, FP_EV_ERASED },
	{ "rep available", { S("type", "rep.available"), M("data", S("rep", "ana")) },
	  FP_EV_REP_AVAILABLE },
	{ "rep unavailable until", { S("type", "rep.unavailable"),
	                             M("data", S("rep", "ana"), U("until", 1767225600000000000u)) },
	  FP_EV_REP_UNAVAILABLE },
	{ "rep capacity", { S("type", "rep.capacity"), M("data", S("rep", "ana"), U("capacity", 10)) },
	  FP_EV_REP_CAPACITY },
	{ "x.* no lead", { S("type", "x.thing") }, FP_EV_CUSTOM },
	{ "x.* lead", { S("type", "x.thing"), S("lead", "L1"), M0("data") }, FP_EV_CUSTOM },
	{ "x.* data nil", { S("type", "x.thing"), NIL("data") }, FP_EV_CUSTOM },
	{ "x.* expected_version with lead", { S("type", "x.t"), S("lead", "L"), U("expected_version", 3) },
	  FP_EV_CUSTOM },
	{ "type 64 bytes", { LONG("type", "x.", 64) }, FP_EV_CUSTOM },
	{ "lead 128 bytes", { S("type", "lead.captured"), LONG("lead", "L", 128) }, FP_EV_CAPTURED },
	{ "id 128 bytes", { S("type", "x.t"), LONG("id", "i", 128) }, FP_EV_CUSTOM },
	{ "owner 128 bytes", { S("type", "lead.assigned"), S("lead", "L1"),
	                       M("data", LONG("owner", "o", 128)) }, FP_EV_ASSIGNED },
	{ "reason 128 bytes", { S("type", "deal.lost"), S("lead", "L1"),
	                        M("data", LONG("reason", "r", 128)) }, FP_EV_DEAL_LOST },
	{ "lead utf-8", { S("type", "lead.captured"), S("lead", "l\xc3\xa9" "a") }, FP_EV_CAPTURED },
	{ "occurred_at negative", { S("type", "x.t"), I("occurred_at", -1) }, FP_EV_CUSTOM },
	{ "occurred_at max", { S("type", "x.t"), U("occurred_at", INT64_MAX) }, FP_EV_CUSTOM },
	{ "occurred_at min", { S("type", "x.t"), I("occurred_at", INT64_MIN) }, FP_EV_CUSTOM },
	{ "cause max", { S("type", "x.t"), U("cause", UINT64_MAX) }, FP_EV_CUSTOM },
	{ "expected_version 0", { S("type", "lead.captured"), S("lead", "L"), U("expected_version", 0) },
	  FP_EV_CAPTURED },
	{ "data extra keys", { S("type", "lead.rejected"), S("lead", "L"),
	                       M("data", S("reason", "r"), M("nested", I("a", 1)), ARR0("list")) },
	  FP_EV_REJECTED },
};

static void
test_valid_each_type(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
		struct env e;
		fp_event ev;
		fp_error err = { 0 };
		const msgpack_object *o = env_build(&e, valid[i].f);
		funnel_err rc = fp_event_decode(o, &ev, &err);
		if (rc != FUNNEL_OK)
			fail_msg("%s: %s field '%s': %s", valid[i].name, funnel_errname(rc), err.field,
			         err.message);
		assert_non_null(ev.spec);
		if (ev.spec->type != valid[i].type)
			fail_msg("%s: decoded as type %d", valid[i].name, ev.spec->type);
		assert_non_null(ev.type.ptr);
		env_free(&e);
	}
}

/* Every known type appears among the valid cases. */
static void
test_valid_covers_types(void **state)
{
	(void)state;
	for (int t = FP_EV_CUSTOM; t < FP_EV_COUNT; t++) {
		int seen = 0;
		for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++)
			seen |= valid[i].type == (fp_evtype)t;
		if (!seen)
			fail_msg("no valid envelope of type %d", t);
	}
}

static void
test_decode_all_fields(void **state)
{
	(void)state;
	const struct kv f[] = {
		S("type", "lead.captured"), S("lead", "L-1"), S("id", "form-42"),
		I("occurred_at", -5), U("expected_version", 7), U("cause", 9),
		M("data", S("email", "a@b.c")), END
	};
	struct env e;
	fp_event ev;
	fp_error err = { 0 };
	assert_int_equal(fp_event_decode(env_build(&e, f), &ev, &err), FUNNEL_OK);
	assert_int_equal(ev.spec->type, FP_EV_CAPTURED);
	assert_true(str_is(ev.type, "lead.captured"));
	assert_true(str_is(ev.lead, "L-1"));
	assert_true(str_is(ev.id, "form-42"));
	assert_int_equal(ev.has_occurred_at, 1);
	assert_true(ev.occurred_at == -5);
	assert_int_equal(ev.has_expected_version, 1);
	assert_int_equal(ev.expected_version, 7);
	assert_int_equal(ev.has_cause, 1);
	assert_int_equal(ev.cause, 9);
	assert_non_null(ev.data);
	assert_int_equal(ev.data->type, MSGPACK_OBJECT_MAP);
	assert_int_equal(ev.data->via.map.size, 1);
	/* views point into the decoded object */
	assert_ptr_equal(ev.data, &e.up.data.via.map.ptr[6].val);
	env_free(&e);
}

static void
test_decode_absent_optionals(void **state)
{
	(void)state;
	const struct kv f[] = { S("type", "x.ping"), END };
	struct env e;
	fp_event ev;
	memset(&ev, 0xa5, sizeof ev);
	assert_int_equal(fp_event_decode(env_build(&e, f), &ev, NULL), FUNNEL_OK);
	assert_int_equal(ev.spec->type, FP_EV_CUSTOM);
	assert_true(str_is(ev.type, "x.ping"));
	assert_null(ev.lead.ptr);
	assert_null(ev.id.ptr);
	assert_int_equal(ev.has_occurred_at, 0);
	assert_int_equal(ev.has_expected_version, 0);
	assert_int_equal(ev.has_cause, 0);
	assert_null(ev.data);
	env_free(&e);

	/* data: nil is the same as no data */
	const struct kv g[] = { S("type", "x.ping"), NIL("data"), END };
	assert_int_equal(fp_event_decode(env_build(&e, g), &ev, NULL), FUNNEL_OK);
	assert_null(ev.data);
	env_free(&e);
}

/* ---- invalid envelopes: code and field ---- */

static const struct ecase {
	const char *name;
	struct kv f[8];
	funnel_err code;
	const char *field;
} bad[] = {
	{ "non-string key", { S("type", "x.t"), S(NULL, "v") }, FUNNEL_ETYPE, "" },
	{ "non-string key first", { S(NULL, "v"), S("type", "x.t") }, FUNNEL_ETYPE, "" },
	{ "unknown field", { S("type", "x.t"), U("bogus", 1) }, FUNNEL_EVALUE, "" },
	{ "unknown field seq", { S("type", "x.t"), U("seq", 1) }, FUNNEL_EVALUE, "" },
	{ "unknown field Type", { S("Type", "x.t") }, FUNNEL_EVALUE, "" },
	{ "duplicate type", { S("type", "x.a"), S("type", "x.b") }, FUNNEL_EVALUE, "type" },
	{ "duplicate lead", { S("type", "x.a"), S("lead", "a"), S("lead", "a") }, FUNNEL_EVALUE, "lead" },
	{ "duplicate id", { S("type", "x.a"), S("id", "a"), S("id", "b") }, FUNNEL_EVALUE, "id" },
	{ "duplicate data", { S("type", "x.a"), M0("data"), M0("data") }, FUNNEL_EVALUE, "data" },
	{ "duplicate cause", { S("type", "x.a"), U("cause", 1), U("cause", 1) }, FUNNEL_EVALUE, "cause" },
	{ "empty map", { END }, FUNNEL_EMISSING, "type" },
	{ "missing type", { S("lead", "L1"), M0("data") }, FUNNEL_EMISSING, "type" },
	{ "type int", { U("type", 5) }, FUNNEL_ETYPE, "type" },
	{ "type nil", { NIL("type") }, FUNNEL_ETYPE, "type" },
	{ "type bin", { BIN("type", "x.t") }, FUNNEL_ETYPE, "type" },
	{ "type map", { M0("type") }, FUNNEL_ETYPE, "type" },
	{ "type empty", { S("type", "") }, FUNNEL_EVALUE, "type" },
	{ "type 65 bytes", { LONG("type", "x.", 65) }, FUNNEL_ETOOBIG, "type" },
	{ "type 65 bytes lead.*", { LONG("type", "lead.captured", 65), S("lead", "L") },
	  FUNNEL_ETOOBIG, "type" },
	{ "type control char", { S("type", "x.a\nb") }, FUNNEL_EVALUE, "type" },
	{ "lead control 0x01", { S("type", "lead.captured"), S("lead", "ab\x01") }, FUNNEL_EVALUE, "lead" },
	{ "lead control 0x1f", { S("type", "lead.captured"), S("lead", "\x1f" "ab") }, FUNNEL_EVALUE, "lead" },
	{ "lead DEL", { S("type", "lead.captured"), S("lead", "a\x7f") }, FUNNEL_EVALUE, "lead" },
	{ "lead newline", { S("type", "lead.captured"), S("lead", "a\nb") }, FUNNEL_EVALUE, "lead" },
	{ "lead tab", { S("type", "x.t"), S("lead", "a\tb") }, FUNNEL_EVALUE, "lead" },
	{ "lead empty", { S("type", "lead.captured"), S("lead", "") }, FUNNEL_EVALUE, "lead" },
	{ "lead int", { S("type", "lead.captured"), U("lead", 12) }, FUNNEL_ETYPE, "lead" },
	{ "lead 129 bytes", { S("type", "lead.captured"), LONG("lead", "L", 129) }, FUNNEL_ETOOBIG, "lead" },
	{ "id 129 bytes", { S("type", "x.t"), LONG("id", "i", 129) }, FUNNEL_ETOOBIG, "id" },
	{ "id empty", { S("type", "x.t"), S("id", "") }, FUNNEL_EVALUE, "id" },
	{ "id control char", { S("type", "x.t"), S("id", "a\rb") }, FUNNEL_EVALUE, "id" },
	{ "id int", { S("type", "x.t"), U("id", 1) }, FUNNEL_ETYPE, "id" },
	{ "occurred_at string", { S("type", "x.t"), S("occurred_at", "2024-01-01") },
	  FUNNEL_ETYPE, "occurred_at" },
	{ "occurred_at float", { S("type", "x.t"), F("occurred_at", 1.5) }, FUNNEL_ETYPE, "occurred_at" },
	{ "occurred_at nil", { S("type", "x.t"), NIL("occurred_at") }, FUNNEL_ETYPE, "occurred_at" },
	{ "occurred_at > int64", { S("type", "x.t"), U("occurred_at", (uint64_t)INT64_MAX + 1) },
	  FUNNEL_ETYPE, "occurred_at" },
	{ "expected_version string", { S("type", "lead.captured"), S("lead", "L"),
	                               S("expected_version", "3") }, FUNNEL_ETYPE, "expected_version" },
	{ "expected_version float", { S("type", "lead.captured"), S("lead", "L"),
	                              F("expected_version", 3.0) }, FUNNEL_ETYPE, "expected_version" },
	{ "cause 0", { S("type", "x.t"), U("cause", 0) }, FUNNEL_EVALUE, "cause" },
	{ "cause string", { S("type", "x.t"), S("cause", "1") }, FUNNEL_ETYPE, "cause" },
	{ "data array", { S("type", "x.t"), ARR0("data") }, FUNNEL_ETYPE, "data" },
	{ "data string", { S("type", "x.t"), S("data", "{}") }, FUNNEL_ETYPE, "data" },
	{ "data true", { S("type", "x.t"), TRUE("data") }, FUNNEL_ETYPE, "data" },
	{ "data non-string key", { S("type", "x.t"), M("data", S(NULL, "v")) }, FUNNEL_ETYPE, "data" },
	{ "data non-string key 2nd", { S("type", "lead.rejected"), S("lead", "L"),
	                               M("data", S("reason", "r"), S(NULL, "v")) }, FUNNEL_ETYPE, "data" },
	{ "rejected no data", { S("type", "lead.rejected"), S("lead", "L") }, FUNNEL_EMISSING, "data.reason" },
	{ "rejected no reason", { S("type", "lead.rejected"), S("lead", "L"), M("data", S("why", "x")) },
	  FUNNEL_EMISSING, "data.reason" },
	{ "rejected data nil", { S("type", "lead.rejected"), S("lead", "L"), NIL("data") },
	  FUNNEL_EMISSING, "data.reason" },
	{ "recycled no reason", { S("type", "lead.recycled"), S("lead", "L"), M0("data") },
	  FUNNEL_EMISSING, "data.reason" },
	{ "disqualified no reason", { S("type", "lead.disqualified"), S("lead", "L") },
	  FUNNEL_EMISSING, "data.reason" },
	{ "deal.lost no reason", { S("type", "deal.lost"), S("lead", "L"), M("data", U("amount", 5)) },
	  FUNNEL_EMISSING, "data.reason" },
	{ "reason int", { S("type", "deal.lost"), S("lead", "L"), M("data", U("reason", 5)) },
	  FUNNEL_ETYPE, "data.reason" },
	{ "reason empty", { S("type", "deal.lost"), S("lead", "L"), M("data", S("reason", "")) },
	  FUNNEL_EVALUE, "data.reason" },
	{ "reason 129 bytes", { S("type", "lead.recycled"), S("lead", "L"), M("data", LONG("reason", "r", 129)) },
	  FUNNEL_ETOOBIG, "data.reason" },
	{ "assigned no owner", { S("type", "lead.assigned"), S("lead", "L"), M("data", S("queue", "q")) },
	  FUNNEL_EMISSING, "data.owner" },
	{ "assigned no data", { S("type", "lead.assigned"), S("lead", "L") }, FUNNEL_EMISSING, "data.owner" },
	{ "owner nil", { S("type", "lead.assigned"), S("lead", "L"), M("data", NIL("owner")) },
	  FUNNEL_ETYPE, "data.owner" },
	{ "owner 129 bytes", { S("type", "lead.assigned"), S("lead", "L"), M("data", LONG("owner", "o", 129)) },
	  FUNNEL_ETOOBIG, "data.owner" },
	{ "activity no kind", { S("type", "lead.activity"), S("lead", "L") }, FUNNEL_EMISSING, "data.kind" },
	{ "rules.changed no hash", { S("type", "rules.changed"), M0("data") }, FUNNEL_EMISSING, "data.hash" },
	{ "rep.unavailable no rep", { S("type", "rep.unavailable"), M0("data") }, FUNNEL_EMISSING,
	  "data.rep" },
	{ "rep.available rep 129 bytes", { S("type", "rep.available"), M("data", LONG("rep", "r", 129)) },
	  FUNNEL_ETOOBIG, "data.rep" },
	{ "won amount -1", { S("type", "deal.won"), S("lead", "L"), M("data", I("amount", -1)) },
	  FUNNEL_EVALUE, "data.amount" },
	{ "won amount -0.5", { S("type", "deal.won"), S("lead", "L"), M("data", F("amount", -0.5)) },
	  FUNNEL_EVALUE, "data.amount" },
	{ "won amount string", { S("type", "deal.won"), S("lead", "L"), M("data", S("amount", "10")) },
	  FUNNEL_ETYPE, "data.amount" },
	{ "won amount nil", { S("type", "deal.won"), S("lead", "L"), M("data", NIL("amount")) },
	  FUNNEL_ETYPE, "data.amount" },
	{ "won amount bool", { S("type", "deal.won"), S("lead", "L"), M("data", TRUE("amount")) },
	  FUNNEL_ETYPE, "data.amount" },
	{ "opp amount -100", { S("type", "opportunity.opened"), S("lead", "L"),
	                       M("data", I("amount", -100)) }, FUNNEL_EVALUE, "data.amount" },
	{ "opp amount -1e9", { S("type", "opportunity.opened"), S("lead", "L"),
	                       M("data", F("amount", -1e9)) }, FUNNEL_EVALUE, "data.amount" },
	{ "opp amount string", { S("type", "opportunity.opened"), S("lead", "L"),
	                         M("data", S("amount", "lots")) }, FUNNEL_ETYPE, "data.amount" },
	{ "opp amount map", { S("type", "opportunity.opened"), S("lead", "L"),
	                      M("data", M0("amount")) }, FUNNEL_ETYPE, "data.amount" },
	{ "expected_version no lead (x.*)", { S("type", "x.t"), U("expected_version", 1) },
	  FUNNEL_EVALUE, "expected_version" },
	{ "expected_version no lead (rules)", { S("type", "rules.changed"), U("expected_version", 0),
	                                        M("data", S("hash", "h")) }, FUNNEL_EVALUE, "expected_version" },
	{ "unknown type", { S("type", "lead.bogus"), S("lead", "L") }, FUNNEL_EUNKNOWN_TYPE, "type" },
	{ "unknown type no lead", { S("type", "lead.bogus") }, FUNNEL_EUNKNOWN_TYPE, "type" },
	{ "unknown type x", { S("type", "x") }, FUNNEL_EUNKNOWN_TYPE, "type" },
	{ "unknown type X.y", { S("type", "X.y") }, FUNNEL_EUNKNOWN_TYPE, "type" },
	{ "unknown type 64 bytes", { LONG("type", "lead.", 64) }, FUNNEL_EUNKNOWN_TYPE, "type" },
};

static int
check_bad(const struct ecase *c, const msgpack_object *o)
{
	fp_event ev;
	fp_error err;
	memset(&err, 0, sizeof err);
	err.index = 12345;
	funnel_err rc = fp_event_decode(o, &ev, &err);
	int ok = 1;
	if (rc != c->code || err.code != (int)c->code || strcmp(err.field, c->field) != 0) {
		print_error("%s: got %s field '%s' (%s), want %s field '%s'\n", c->name,
		            funnel_errname(rc), err.field, err.message, funnel_errname(c->code), c->field);
		ok = 0;
	} else if (err.message[0] == '\0' || err.index != -1) {
		print_error("%s: message '%s', index %d\n", c->name, err.message, err.index);
		ok = 0;
	}
	/* the code is the same without an fp_error */
	if (fp_event_decode(o, &ev, NULL) != c->code) {
		print_error("%s: code differs with err NULL\n", c->name);
		ok = 0;
	}
	return ok;
}

static void
test_invalid_table(void **state)
{
	(void)state;
	int failures = 0;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct env e;
		failures += !check_bad(&bad[i], env_build(&e, bad[i].f));
		env_free(&e);
	}
	assert_int_equal(failures, 0);
}

/* The message of an unknown field names it. */
static void
test_unknown_field_message(void **state)
{
	(void)state;
	const struct kv f[] = { S("type", "x.t"), U("colour", 1), END };
	struct env e;
	fp_event ev;
	fp_error err;
	assert_int_equal(fp_event_decode(env_build(&e, f), &ev, &err), FUNNEL_EVALUE);
	assert_non_null(strstr(err.message, "colour"));
	env_free(&e);
}

/* Every lead.* (and deal/opportunity) type needs a lead. */
static void
test_lead_required(void **state)
{
	(void)state;
	static const char *const types[] = {
		"lead.captured", "lead.activity", "lead.scored", "lead.qualified", "lead.assigned",
		"lead.contacted", "lead.accepted", "lead.rejected", "lead.recycled",
		"lead.disqualified", "opportunity.opened", "deal.won", "deal.lost",
		"lead.sla_breached", "lead.erased",
	};
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
		/* data satisfies every type, so only the lead is missing */
		struct kv f[] = {
			S("type", types[i]),
			M("data", S("kind", "k"), S("owner", "o"), S("reason", "r"), U("amount", 1)),
			END
		};
		struct ecase c = { types[i], { { 0 } }, FUNNEL_EMISSING, "lead" };
		struct env e;
		if (!check_bad(&c, env_build(&e, f)))
			fail_msg("%s without lead accepted or misreported", types[i]);
		env_free(&e);
	}
}

/* Inputs that are not maps at all. */
static void
test_not_a_map(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		const char *bytes;
		size_t len;
	} raw[] = {
		{ "array", "\x91\xa3x.t", 5 },
		{ "empty array", "\x90", 1 },
		{ "string", "\xa3x.t", 4 },
		{ "nil", "\xc0", 1 },
		{ "int", "\x01", 1 },
		{ "bin", "\xc4\x01x", 3 },
	};
	for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
		struct ecase c = { raw[i].name, { { 0 } }, FUNNEL_EMALFORMED, "" };
		struct env e;
		if (!check_bad(&c, env_raw(&e, raw[i].bytes, raw[i].len)))
			fail_msg("%s", raw[i].name);
		env_free(&e);
	}
}

/*
 * Negative integers are an EVALUE, not an ETYPE: funnel/error.h defines
 * EVALUE as "a field's value is not allowed (empty, negative, unknown
 * field)" and ETYPE as "the wrong msgpack type", and data.amount follows
 * that.  BUG (proto/envelope.c fp_event_decode, cases F_EXPECTED and
 * F_CAUSE): a negative expected_version or cause is reported as ETYPE.
 */
static void
test_negative_integers_are_evalue(void **state)
{
	(void)state;
	static const struct ecase neg[] = {
		{ "expected_version -1", { S("type", "lead.captured"), S("lead", "L"), I("expected_version", -1) },
		  FUNNEL_EVALUE, "expected_version" },
		{ "cause -1", { S("type", "x.t"), I("cause", -1) }, FUNNEL_EVALUE, "cause" },
	};
	int failures = 0;
	for (size_t i = 0; i < sizeof neg / sizeof neg[0]; i++) {
		struct env e;
		failures += !check_bad(&neg[i], env_build(&e, neg[i].f));
		env_free(&e);
	}
	assert_int_equal(failures, 0);
}

/* The UTF-8 check reads ASCII eight bytes at a time: every sequence, valid
 * or not, at every offset in a longer ASCII string gives the answer of a
 * byte-at-a-time walk (the position of the first bad sequence, or -1). */
static void
test_utf8_at_every_offset(void **state)
{
	(void)state;
	static const struct { const char *bytes; int bad; } seqs[] = {
		{ "\xc3\xa9", 0 },             /* é */
		{ "\xe2\x82\xac", 0 },         /* € */
		{ "\xf0\x9f\x98\x80", 0 },     /* U+1F600 */
		{ "\xc3", 1 },                 /* truncated */
		{ "\xe2\x82", 1 },
		{ "\xc0\xaf", 1 },             /* overlong */
		{ "\xe0\x80\xaf", 1 },
		{ "\xed\xa0\x80", 1 },         /* surrogate */
		{ "\xf4\x90\x80\x80", 1 },     /* past U+10FFFF */
		{ "\x80", 1 },                 /* lone continuation */
		{ "\xff", 1 },
	};
	char buf[64];
	for (size_t q = 0; q < sizeof seqs / sizeof seqs[0]; q++) {
		size_t sl = strlen(seqs[q].bytes);
		for (size_t at = 0; at + sl <= 40; at++) {
			for (size_t len = at + sl; len <= 40; len += 3) {
				memset(buf, 'a', sizeof buf);
				memcpy(buf + at, seqs[q].bytes, sl);
				long want = seqs[q].bad ? (long)at : -1;
				assert_int_equal(mp_utf8_invalid_at(buf, len), want);
			}
		}
	}
	memset(buf, 'a', sizeof buf);
	for (size_t len = 0; len <= sizeof buf; len++)
		assert_int_equal(mp_utf8_invalid_at(buf, len), -1);
	/* a sequence cut by the end of the string */
	memcpy(buf + 13, "\xe2\x82\xac", 3);
	assert_int_equal(mp_utf8_invalid_at(buf, 15), 13);
	assert_int_equal(mp_utf8_invalid_at(buf, 16), -1);
}

/* ---- the fast paths against their definitions ---- */

/* The UTF-8 check as first written: byte by byte, eight ASCII bytes at a
 * time.  mp_utf8_invalid_at() must answer the same for every input. */
static long
ref_utf8_invalid_at(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;
	while (i < len) {
		unsigned char c = s[i];
		size_t n;
		uint32_t cp;
		uint64_t w;
		if (i + 8 <= len && (memcpy(&w, s + i, 8), (w & 0x8080808080808080ull) == 0)) {
			i += 8;
			continue;
		}
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return (long)i;
		}
		for (size_t k = 1; k <= n; k++) {
			if (i + k >= len || (s[i + k] & 0xc0) != 0x80)
				return (long)i;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return (long)i;
		i += n + 1;
	}
	return -1;
}

/* A small deterministic generator (xorshift). */
static uint64_t
rnd(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/* Random text: mostly ASCII, some valid multi-byte sequences, now and
 * then a byte that breaks UTF-8 (a lone continuation, a cut sequence, an
 * overlong, a surrogate). */
static size_t
random_text(uint64_t *x, char *buf, size_t cap)
{
	static const char *const pieces[] = {
		"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xd0\x96", "\x80", "\xc3",
		"\xe2\x82", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xff", "\xef\xbf\xbf",
	};
	size_t len = (size_t)(rnd(x) % cap), n = 0;
	int mode = (int)(rnd(x) % 4);   /* 0: ASCII only; else some non-ASCII */
	while (n < len) {
		uint64_t r = rnd(x);
		if (mode == 0 || r % 8 != 0) {
			buf[n++] = (char)(0x20 + r % 95);
			continue;
		}
		const char *p = pieces[(r >> 8) % (mode == 1 ? 4 : sizeof pieces / sizeof pieces[0])];
		size_t pl = strlen(p);
		if (n + pl > len)
			break;
		memcpy(buf + n, p, pl);
		n += pl;
	}
	return n;
}

static void
test_utf8_matches_reference(void **state)
{
	(void)state;
	uint64_t x = 0x9e3779b97f4a7c15ull;
	char buf[96];
	for (int i = 0; i < 300000; i++) {
		size_t len = random_text(&x, buf, sizeof buf);
		long want = ref_utf8_invalid_at(buf, len);
		if (mp_utf8_invalid_at(buf, len) != want)
			fail_msg("string %d (%zu bytes): %ld, the reference says %ld", i, len,
			         mp_utf8_invalid_at(buf, len), want);
	}
}

/* Pack a random value, choosing among the encodings msgpack allows for
 * it (the shortest or a longer one), depth at most 3. */
static void
random_value(uint64_t *x, msgpack_sbuffer *sb, int depth)
{
	char text[64];
	uint64_t r = rnd(x);
	unsigned char h[9];
	int kind = depth >= 3 ? (int)(r % 5) : (int)(r % 7);
	int longer = (r >> 8) % 5 == 0;   /* a longer form than needed */
	switch (kind) {
	case 0: case 1: {   /* a string */
		size_t n = random_text(x, text, (r >> 16) % 2 ? 12 : 60);
		if (!longer && n < 32) {
			h[0] = (unsigned char)(0xa0 | n);
			msgpack_sbuffer_write(sb, (char *)h, 1);
		} else {
			h[0] = 0xd9;
			h[1] = (unsigned char)n;
			msgpack_sbuffer_write(sb, (char *)h, 2);
		}
		msgpack_sbuffer_write(sb, text, n);
		break;
	}
	case 2: {   /* an integer */
		int64_t v = (int64_t)(rnd(x) >> (rnd(x) % 64));
		if ((r >> 20) % 2)
			v = -v;
		if (longer) {
			h[0] = 0xd3;
			for (int i = 0; i < 8; i++)
				h[1 + i] = (unsigned char)((uint64_t)v >> (56 - 8 * i));
			msgpack_sbuffer_write(sb, (char *)h, 9);
		} else {
			msgpack_packer pk;
			msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
			msgpack_pack_int64(&pk, v);
		}
		break;
	}
	case 3: {   /* nil, a bool, a float */
		msgpack_packer pk;
		msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
		int w = (int)((r >> 12) % 4);
		if (w == 0)
			msgpack_pack_nil(&pk);
		else if (w == 1)
			msgpack_pack_true(&pk);
		else if (w == 2)
			msgpack_pack_double(&pk, (double)(int64_t)r / 7.0);
		else
			msgpack_pack_float(&pk, 1.5f);
		break;
	}
	case 4: {   /* bin */
		size_t n = (r >> 16) % 20;
		h[0] = longer ? 0xc5 : 0xc4;
		h[1] = longer ? 0 : (unsigned char)n;
		h[2] = (unsigned char)n;
		msgpack_sbuffer_write(sb, (char *)h, longer ? 3 : 2);
		msgpack_sbuffer_write(sb, "0123456789abcdefghij", n);
		break;
	}
	default: {   /* a map (string keys) or an array */
		int map = kind == 5;
		size_t n = (r >> 16) % 6;
		h[0] = (unsigned char)((longer ? (map ? 0xde : 0xdc) : (map ? 0x80 : 0x90)) | (longer ? 0 : n));
		h[1] = 0;
		h[2] = (unsigned char)n;
		msgpack_sbuffer_write(sb, (char *)h, longer ? 3 : 1);
		for (size_t i = 0; i < n; i++) {
			if (map) {
				char key[8];
				int kl = snprintf(key, sizeof key, "k%zu", i);
				h[0] = (unsigned char)(0xa0 | kl);
				msgpack_sbuffer_write(sb, (char *)h, 1);
				msgpack_sbuffer_write(sb, key, (size_t)kl);
			}
			random_value(x, sb, depth + 1);
		}
		break;
	}
	}
}

/* Every string in o is valid UTF-8: the definition, recursively. */
static int
ref_strings_valid(const msgpack_object *o)
{
	if (o->type == MSGPACK_OBJECT_STR)
		return ref_utf8_invalid_at(o->via.str.ptr, o->via.str.size) < 0;
	if (o->type == MSGPACK_OBJECT_ARRAY) {
		for (uint32_t i = 0; i < o->via.array.size; i++)
			if (!ref_strings_valid(&o->via.array.ptr[i]))
				return 0;
	}
	if (o->type == MSGPACK_OBJECT_MAP) {
		for (uint32_t i = 0; i < o->via.map.size; i++)
			if (!ref_strings_valid(&o->via.map.ptr[i].key) ||
			    !ref_strings_valid(&o->via.map.ptr[i].val))
				return 0;
	}
	return 1;
}

/* An empty string or bin anywhere in o: msgpack-c does not point those
 * into the buffer, so data holding one is never found in place. */
static int
has_empty(const msgpack_object *o)
{
	if (o->type == MSGPACK_OBJECT_STR || o->type == MSGPACK_OBJECT_BIN)
		return o->via.str.size == 0;
	if (o->type == MSGPACK_OBJECT_ARRAY) {
		for (uint32_t i = 0; i < o->via.array.size; i++)
			if (has_empty(&o->via.array.ptr[i]))
				return 1;
	}
	if (o->type == MSGPACK_OBJECT_MAP) {
		for (uint32_t i = 0; i < o->via.map.size; i++)
			if (has_empty(&o->via.map.ptr[i].key) || has_empty(&o->via.map.ptr[i].val))
				return 1;
	}
	return 0;
}

/*
 * On random data maps, fp_event_decode() refuses exactly those holding a
 * string that is not UTF-8 (ref_strings_valid), and fp_event_data_bytes()
 * finds the data in place exactly when its bytes are what the packer
 * writes for it (msgpack_pack_object(), the definition in envelope.h)
 * and every string lies in them.
 */
static void
test_data_checks_match_definition(void **state)
{
	(void)state;
	uint64_t x = 0x2545f4914f6cdd1dull;
	msgpack_sbuffer env, re;
	msgpack_zone z;
	size_t copied = 0, refused = 0;
	msgpack_sbuffer_init(&env);
	msgpack_sbuffer_init(&re);
	assert_true(msgpack_zone_init(&z, 4096));
	for (int i = 0; i < 40000; i++) {
		env.size = 0;
		msgpack_sbuffer_write(&env, "\x82\xa4type\xa6x.test\xa4" "data", 18);
		/* the data: a map of 1..12 random values */
		size_t n = 1 + rnd(&x) % 12;
		unsigned char h = (unsigned char)(0x80 | n);
		msgpack_sbuffer_write(&env, (char *)&h, 1);
		for (size_t k = 0; k < n; k++) {
			char key[8];
			int kl = snprintf(key, sizeof key, "f%zu", k);
			h = (unsigned char)(0xa0 | kl);
			msgpack_sbuffer_write(&env, (char *)&h, 1);
			msgpack_sbuffer_write(&env, key, (size_t)kl);
			random_value(&x, &env, 1);
		}
		msgpack_object o;
		size_t off = 0;
		msgpack_zone_clear(&z);
		assert_int_equal(msgpack_unpack(env.data, env.size, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);
		fp_event ev;
		fp_error err;
		funnel_err rc = fp_event_decode(&o, &ev, &err);
		const msgpack_object *data = mp_find(&o, "data");
		if (!ref_strings_valid(data)) {
			assert_int_equal(rc, FUNNEL_EVALUE);
			refused++;
			continue;
		}
		assert_int_equal(rc, FUNNEL_OK);
		fp_event_data_bytes(&ev, env.data, env.size);
		re.size = 0;
		msgpack_packer pk;
		msgpack_packer_init(&pk, &re, msgpack_sbuffer_write);
		assert_int_equal(msgpack_pack_object(&pk, *data), 0);
		size_t at = (size_t)(ev.data_at - env.data);
		int same = env.size - at >= re.size && memcmp(env.data + at, re.data, re.size) == 0 &&
		           !has_empty(data);
		if (same) {
			assert_int_equal(ev.data_len, re.size);
			copied++;
		} else {
			assert_int_equal(ev.data_len, 0);
		}
	}
	/* the generator reaches every outcome */
	assert_true(copied > 1000 && refused > 1000 && copied + refused < 39000);
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&re);
	msgpack_sbuffer_destroy(&env);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_each_type),
		cmocka_unit_test(test_valid_covers_types),
		cmocka_unit_test(test_decode_all_fields),
		cmocka_unit_test(test_decode_absent_optionals),
		cmocka_unit_test(test_invalid_table),
		cmocka_unit_test(test_unknown_field_message),
		cmocka_unit_test(test_lead_required),
		cmocka_unit_test(test_not_a_map),
		cmocka_unit_test(test_negative_integers_are_evalue),
		cmocka_unit_test(test_utf8_at_every_offset),
		cmocka_unit_test(test_utf8_matches_reference),
		cmocka_unit_test(test_data_checks_match_definition),
	};
	return cmocka_run_group_tests_name("envelope", tests, NULL, NULL);
}
