/*
 * tests/integration/test_hostile.c - hostile frames at a real funneld's
 * ingest and query ROUTER sockets, sent on raw ZeroMQ DEALER sockets
 * (libfunnel checks its own frames, so it cannot send these).
 *
 * Inputs: random bytes, every truncation of valid requests, huge declared
 * lengths, nesting 10,000 deep, each field of each request and envelope
 * with every wrong msgpack type, single-byte mutations of requests,
 * multipart messages with extra and empty frames, frames over the 2 MiB
 * request limit and over the 8 MiB transport limit; and a query client
 * that sends requests and never reads a reply, beside one that does.
 *
 * For every input the daemon must answer with an error (PROTOCOL.md §1:
 * every frame up to 8 MiB gets a reply; over it the connection is dropped
 * and nothing is answered), keep serving, and leave the log as it was: the
 * head seq and head hash are compared after every group of inputs, then
 * a valid publish must be acknowledged at the next seq and the chain
 * must verify.
 *
 * Every input goes twice: to a funneld without an access file, then to
 * one with --access and --key (group "hostile-curve"), where the raw
 * sockets are CURVE clients of a principal that may publish and read
 * everything: what a holder of a valid key can send must not hurt either.
 *
 * FUNNEL_HOSTILE_SEED fixes the random inputs (the seed is printed);
 * FUNNEL_HOSTILE_RANDOM sets how many random frames go to each endpoint.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "funnel/funnel.h"
#include "harness.h"
#include "mp.h"
#include "wire.h"

#define REPLY_TIMEOUT_MS 10000
#define HOSTILE_RID 4242
#define DEPTH 10000

/* The daemon under attack, a DEALER on each ROUTER, and what the log
 * looked like before the current group of inputs. */
typedef struct hostile {
	daemon_proc d;
	void *zctx;
	void *ingest, *query;          /* DEALER sockets */
	funnel_producer *p;
	funnel_query *q;
	funnel_status before;
	uint64_t rng;
	uint64_t inputs;               /* frames (or multipart messages) sent */
} hostile;

/* The "hostile-curve" group: keys of the client and the daemon (Z85),
 * and the directory holding them and the access file ("" otherwise). */
static struct {
	char dir[64];
	char pub[41], sec[41], srv_pub[41];
} curve;

/* A CURVE client when the group runs against an access file. */
static void
curve_client(void *s)
{
	if (curve.dir[0] == '\0')
		return;
	zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, curve.srv_pub, 40);
	zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, curve.pub, 40);
	zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, curve.sec, 40);
}

static uint64_t
rnd(hostile *h)
{
	/* xorshift64*: reproducible from the printed seed */
	h->rng ^= h->rng >> 12;
	h->rng ^= h->rng << 25;
	h->rng ^= h->rng >> 27;
	return h->rng * 2685821657736338717ull;
}

static void *
dealer(hostile *h, const char *ep)
{
	void *s = zmq_socket(h->zctx, ZMQ_DEALER);
	int linger = 0, tmo = REPLY_TIMEOUT_MS;
	assert_non_null(s);
	zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
	zmq_setsockopt(s, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
	curve_client(s);
	assert_int_equal(zmq_connect(s, ep), 0);
	return s;
}

/* After a reply that did not come, a fresh connection, so that a late
 * reply is not taken for the answer to the next input. */
static void
replace_dealer(hostile *h, void *sock)
{
	void **slot = sock == h->ingest ? &h->ingest : sock == h->query ? &h->query : NULL;
	if (slot == NULL)
		return;
	const char *ep = slot == &h->ingest ? h->d.ingest : h->d.query;
	zmq_close(*slot);
	*slot = dealer(h, ep);
}

/* The log's head now. */
static funnel_status
status_now(hostile *h)
{
	funnel_status st;
	assert_int_equal(funnel_status_get(h->q, &st), FUNNEL_OK);
	return st;
}

/* The log is as it was before the group: same head, same head hash. */
static void
assert_log_unchanged(hostile *h, const char *group)
{
	funnel_status st = status_now(h);
	if (st.head != h->before.head ||
	    memcmp(st.head_hash, h->before.head_hash, FUNNEL_HASH_BYTES) != 0)
		fail_msg("%s: the log changed: head %" PRIu64 " -> %" PRIu64, group, h->before.head,
		         st.head);
}

/* The daemon still takes a valid publish, at the next seq, and the chain
 * verifies; that state is the baseline of the next group. */
static void
assert_still_serving(hostile *h, const char *group)
{
	assert_log_unchanged(h, group);
	char lead[48];
	snprintf(lead, sizeof lead, "after-%s", group);
	funnel_event ev = { .type = "lead.captured", .lead = lead };
	funnel_ack ack;
	int rc = funnel_publish(h->p, &ev, 1, &ack);
	if (rc != FUNNEL_OK)
		fail_msg("%s: a valid publish afterwards failed: %s", group, funnel_errname(rc));
	assert_int_equal(ack.seq, h->before.head + 1);
	funnel_verify_result vr;
	assert_int_equal(funnel_verify(h->q, 0, 0, &vr), FUNNEL_OK);
	assert_int_equal(vr.checked, ack.seq);
	h->before = status_now(h);
}

/* The message that went wrong, in hex, to replay it by hand. */
static void
dump_frames(const void *const *frames, const size_t *lens, size_t nframes)
{
	for (size_t i = 0; i < nframes; i++) {
		const uint8_t *b = frames[i];
		size_t n = lens[i] < 4096 ? lens[i] : 4096;
		printf("frame %zu (%zu bytes):", i, lens[i]);
		for (size_t k = 0; k < n; k++)
			printf("%s%02x", k % 32 ? "" : "\n  ", b[k]);
		printf("\n");
	}
}

/*
 * Send one message of nframes frames on sock and wait for the reply.
 * Returns the reply's error code (0 for ok: true); fails the test when no
 * reply comes or it does not follow PROTOCOL.md.  *field_out (if not
 * NULL) receives the error's field, *rid_out its rid.  A reply to a
 * message that starts with an empty frame followed by others must echo
 * that delimiter.
 */
static int
exchange(hostile *h, void *sock, const void *const *frames, const size_t *lens, size_t nframes,
         char *field_out, uint64_t *rid_out, const char *what)
{
	for (size_t i = 0; i < nframes; i++) {
		int flags = i + 1 < nframes ? ZMQ_SNDMORE : 0;
		if (zmq_send(sock, frames[i], lens[i], flags) < 0)
			fail_msg("%s: send: %s", what, zmq_strerror(zmq_errno()));
	}
	h->inputs++;
	int delim_expected = nframes > 1 && lens[0] == 0;

	zmq_msg_t parts[4];
	size_t nparts = 0;
	int more = 1;
	while (more) {
		zmq_msg_t m;
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, sock, 0) < 0) {
			dump_frames(frames, lens, nframes);
			replace_dealer(h, sock);
			fail_msg("%s: no reply within %d ms (%s)", what, REPLY_TIMEOUT_MS,
			         zmq_strerror(zmq_errno()));
		}
		more = zmq_msg_more(&m);
		if (nparts < 4)
			parts[nparts++] = m;
		else
			zmq_msg_close(&m);
	}
	if (nparts != (size_t)(delim_expected ? 2 : 1))
		fail_msg("%s: reply of %zu frames", what, nparts);
	if (delim_expected)
		assert_int_equal(zmq_msg_size(&parts[0]), 0);

	zmq_msg_t *body = &parts[nparts - 1];
	msgpack_zone z;
	fp_reply rep;
	msgpack_zone_init(&z, 1024);
	if (fp_reply_decode(zmq_msg_data(body), zmq_msg_size(body), &z, &rep) != FUNNEL_OK)
		fail_msg("%s: the reply does not follow PROTOCOL.md", what);
	int code = rep.ok ? 0 : (int)rep.err.code;
	if (!rep.ok && (code < 1 || code > 63 || rep.err.message[0] == '\0'))
		fail_msg("%s: error reply without a code or message", what);
	if (field_out)
		snprintf(field_out, 32, "%s", rep.err.field);
	if (rid_out)
		*rid_out = rep.rid;
	msgpack_zone_destroy(&z);
	for (size_t i = 0; i < nparts; i++)
		zmq_msg_close(&parts[i]);
	return code;
}

/* One frame that must be refused; want 0 accepts any error code. */
static int
refused(hostile *h, void *sock, const void *buf, size_t len, int want, const char *what)
{
	const void *frames[1] = { buf };
	size_t lens[1] = { len };
	int code = exchange(h, sock, frames, lens, 1, NULL, NULL, what);
	if (code == 0)
		fail_msg("%s: accepted (%zu bytes)", what, len);
	if (want && code != want)
		fail_msg("%s: got %s, want %s", what, funnel_errname(code), funnel_errname(want));
	return code;
}

/* ---- fixtures ---- */

static int
setup_with(void **state, const char *extra)
{
	hostile *h = calloc(1, sizeof *h);
	if (h == NULL || harness_start(&h->d, extra) != 0)
		return -1;
	h->zctx = zmq_ctx_new();
	h->ingest = dealer(h, h->d.ingest);
	h->query = dealer(h, h->d.query);
	if (funnel_producer_new(&h->p, h->d.ingest, REPLY_TIMEOUT_MS) != FUNNEL_OK ||
	    funnel_query_new(&h->q, h->d.query, REPLY_TIMEOUT_MS) != FUNNEL_OK)
		return -1;
	const char *seed = getenv("FUNNEL_HOSTILE_SEED");
	h->rng = seed ? strtoull(seed, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	if (h->rng == 0)
		h->rng = 1;
	printf("hostile: seed %" PRIu64 " (FUNNEL_HOSTILE_SEED=%" PRIu64 " replays it)\n", h->rng,
	       h->rng);
	/* a log that is not empty, so "unchanged" means something */
	funnel_event evs[3] = {
		{ .type = "lead.captured", .lead = "H-1", .id = "h1" },
		{ .type = "lead.qualified", .lead = "H-1" },
		{ .type = "x.note", .id = "h2" },
	};
	funnel_ack acks[3];
	if (funnel_publish(h->p, evs, 3, acks) != FUNNEL_OK)
		return -1;
	h->before = status_now(h);
	*state = h;
	return 0;
}

static int
setup(void **state)
{
	return setup_with(state, NULL);
}

static int teardown(void **state);

/* The same daemon with an access file: keys made here (libzmq), one
 * principal allowed everything, libfunnel's sockets given its keys. */
static int
setup_curve(void **state)
{
	char path[128], srv_sec[41], extra[300];
	FILE *f;
	snprintf(curve.dir, sizeof curve.dir, "/tmp/funnel-hostile-keys-XXXXXX");
	if (mkdtemp(curve.dir) == NULL || zmq_curve_keypair(curve.pub, curve.sec) != 0 ||
	    zmq_curve_keypair(curve.srv_pub, srv_sec) != 0)
		return -1;
	const char *files[][2] = {
		{ "funneld.key", srv_sec }, { "funneld.pub", curve.srv_pub }, { "client.key", curve.sec },
	};
	for (int i = 0; i < 3; i++) {
		snprintf(path, sizeof path, "%s/%s", curve.dir, files[i][0]);
		if ((f = fopen(path, "w")) == NULL)
			return -1;
		fprintf(f, "%s\n", files[i][1]);
		fclose(f);
	}
	snprintf(path, sizeof path, "%s/access.yaml", curve.dir);
	if ((f = fopen(path, "w")) == NULL)
		return -1;
	fprintf(f, "principals:\n  - name: anything\n    key: \"%s\"\n    publish: [\"*\"]\n"
	        "    read: true\n", curve.pub);
	fclose(f);
	char key[128], srv[128];
	snprintf(key, sizeof key, "%s/client.key", curve.dir);
	snprintf(srv, sizeof srv, "%s/funneld.pub", curve.dir);
	if (funnel_keys_use(key, srv, NULL) != FUNNEL_OK)
		return -1;
	snprintf(extra, sizeof extra, "--access %s/access.yaml --key %s/funneld.key", curve.dir,
	         curve.dir);
	return setup_with(state, extra);
}

static int
teardown_curve(void **state)
{
	int rc = teardown(state);
	harness_rmrf(curve.dir);
	curve.dir[0] = '\0';
	(void)funnel_keys_use(NULL, NULL, NULL);
	return rc;
}

static int
teardown(void **state)
{
	hostile *h = *state;
	zmq_close(h->ingest);
	zmq_close(h->query);
	zmq_ctx_term(h->zctx);
	funnel_producer_destroy(&h->p);
	funnel_query_destroy(&h->q);
	harness_cleanup(&h->d);
	free(h);
	return 0;
}

/* ---- requests to break ---- */

static void
pack_publish_one(msgpack_sbuffer *sb, const char *type, const char *lead)
{
	msgpack_packer pk;
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	fp_pack_publish_head(&pk, HOSTILE_RID, 1);
	funnel_event ev = { .type = type, .lead = lead, .id = "hostile-1" };
	fp_pack_event(&pk, &ev);
}

/* Valid requests of each op (the publish is one the log refuses anyway:
 * a deal won for a lead never captured). */
static size_t
valid_requests(msgpack_sbuffer sb[4])
{
	msgpack_packer pk;
	for (int i = 0; i < 4; i++)
		msgpack_sbuffer_init(&sb[i]);
	pack_publish_one(&sb[0], "deal.won", "N-404");
	msgpack_packer_init(&pk, &sb[1], msgpack_sbuffer_write);
	funnel_replay_req rr = { .from = 1, .to = 1000, .lead = "H-1", .type = "lead.", .limit = 5 };
	fp_pack_replay(&pk, HOSTILE_RID, &rr);
	msgpack_packer_init(&pk, &sb[2], msgpack_sbuffer_write);
	fp_pack_simple(&pk, HOSTILE_RID, "status", NULL);
	msgpack_packer_init(&pk, &sb[3], msgpack_sbuffer_write);
	fp_pack_simple(&pk, HOSTILE_RID, "lead", "H-1");
	return 4;
}

/* ---- tests ---- */

static void
test_random_frames(void **state)
{
	hostile *h = *state;
	const char *env = getenv("FUNNEL_HOSTILE_RANDOM");
	long n = env ? atol(env) : 5000;
	uint8_t buf[1024];
	for (int e = 0; e < 2; e++) {
		void *sock = e == 0 ? h->ingest : h->query;
		for (long i = 0; i < n; i++) {
			size_t len = (size_t)(rnd(h) % sizeof buf);
			for (size_t j = 0; j < len; j++)
				buf[j] = (uint8_t)rnd(h);
			/* a first byte that starts a map half of the time, so more
			 * frames get past the first check */
			if (len > 0 && (i & 1))
				buf[0] = (uint8_t)(0x80 | (rnd(h) % 16));
			refused(h, sock, buf, len, 0, e == 0 ? "random frame to ingest" : "random frame to query");
		}
	}
	printf("hostile: %ld random frames to each endpoint\n", n);
	assert_still_serving(h, "random");
}

static void
test_truncated_requests(void **state)
{
	hostile *h = *state;
	msgpack_sbuffer sb[4];
	size_t nreq = valid_requests(sb);
	for (size_t r = 0; r < nreq; r++) {
		void *sock = r == 0 ? h->ingest : h->query;
		for (size_t len = 0; len < sb[r].size; len++)
			refused(h, sock, sb[r].data, len, FUNNEL_EMALFORMED, "truncated request");
		msgpack_sbuffer_destroy(&sb[r]);
	}
	assert_still_serving(h, "truncated");
}

/* One single-byte change of a valid request: any reply is fine from
 * the query endpoint; the ingest one must refuse (its request is one
 * the log refuses whatever one byte becomes). */
static void
test_mutated_requests(void **state)
{
	hostile *h = *state;
	msgpack_sbuffer sb[4];
	size_t nreq = valid_requests(sb);
	for (size_t r = 0; r < nreq; r++) {
		for (int k = 0; k < 300; k++) {
			uint8_t m[512];
			size_t len = sb[r].size < sizeof m ? sb[r].size : sizeof m;
			memcpy(m, sb[r].data, len);
			m[rnd(h) % len] = (uint8_t)rnd(h);
			const void *frames[1] = { m };
			size_t lens[1] = { len };
			int code = exchange(h, r == 0 ? h->ingest : h->query, frames, lens, 1, NULL, NULL,
			                    "mutated request");
			if (r == 0 && code == 0)
				fail_msg("a mutated publish was accepted");
		}
		msgpack_sbuffer_destroy(&sb[r]);
	}
	assert_still_serving(h, "mutated");
}

static void
test_huge_declared_lengths(void **state)
{
	hostile *h = *state;
	static const char pub[] = "\x83\xa2op\xa7publish\xa3rid\x07\xa6" "events";
	static const struct {
		const char *name, *bytes;
		size_t len;
	} heads[] = {
		{ "str32", "\xdb\xff\xff\xff\xff", 5 },
		{ "bin32", "\xc6\xff\xff\xff\xff", 5 },
		{ "ext32", "\xc9\xff\xff\xff\xff\x01", 6 },
		{ "array16", "\xdc\xff\xff", 3 },
		{ "map16", "\xde\xff\xff", 3 },
		{ "array32", "\xdd\xff\xff\xff\xff", 5 },
		{ "map32", "\xdf\xff\xff\xff\xff", 5 },
		{ "array32 of 2^27", "\xdd\x08\x00\x00\x00", 5 },
		{ "map32 of 2^26", "\xdf\x04\x00\x00\x00", 5 },
		{ "str32 of 1 MiB", "\xdb\x00\x10\x00\x00", 5 },
	};
	uint8_t buf[64];
	for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
		/* bare, as the value of events, and as an event's data */
		refused(h, h->ingest, heads[i].bytes, heads[i].len, FUNNEL_EMALFORMED, heads[i].name);
		refused(h, h->query, heads[i].bytes, heads[i].len, FUNNEL_EMALFORMED, heads[i].name);
		memcpy(buf, pub, sizeof pub - 1);
		memcpy(buf + sizeof pub - 1, heads[i].bytes, heads[i].len);
		refused(h, h->ingest, buf, sizeof pub - 1 + heads[i].len, FUNNEL_EMALFORMED, heads[i].name);
		static const char ev[] = "\x91\x82\xa4type\xa3x.t\xa4" "data";
		size_t n = sizeof pub - 1;
		memcpy(buf + n, ev, sizeof ev - 1);
		n += sizeof ev - 1;
		memcpy(buf + n, heads[i].bytes, heads[i].len);
		refused(h, h->ingest, buf, n + heads[i].len, FUNNEL_EMALFORMED, heads[i].name);
	}
	assert_still_serving(h, "huge-lengths");
}

static void
test_deep_nesting(void **state)
{
	hostile *h = *state;
	static const char pub[] = "\x83\xa2op\xa7publish\xa3rid\x07\xa6" "events";
	static const char ev[] = "\x91\x82\xa4type\xa3x.t\xa4" "data\x81\xa1k";
	uint8_t *b = malloc(sizeof pub + sizeof ev + 2 * DEPTH + 1);
	assert_non_null(b);
	/* arrays, maps ({nil: {nil: ...}}), inside events, inside data */
	memset(b, 0x91, DEPTH);
	b[DEPTH] = 0xc0;
	refused(h, h->ingest, b, DEPTH + 1, FUNNEL_EMALFORMED, "10k nested arrays");
	refused(h, h->query, b, DEPTH + 1, FUNNEL_EMALFORMED, "10k nested arrays");
	for (size_t i = 0; i < DEPTH; i++) {
		b[2 * i] = 0x81;
		b[2 * i + 1] = 0xc0;
	}
	b[2 * DEPTH] = 0xc0;
	refused(h, h->ingest, b, 2 * DEPTH + 1, FUNNEL_EMALFORMED, "10k nested maps");
	refused(h, h->query, b, 2 * DEPTH + 1, FUNNEL_EMALFORMED, "10k nested maps");
	size_t n = sizeof pub - 1;
	memcpy(b, pub, n);
	memset(b + n, 0x91, DEPTH);
	b[n + DEPTH] = 0xc0;
	refused(h, h->ingest, b, n + DEPTH + 1, FUNNEL_EMALFORMED, "10k nested events");
	memcpy(b + n, ev, sizeof ev - 1);
	n += sizeof ev - 1;
	memset(b + n, 0x91, DEPTH);
	b[n + DEPTH] = 0xc0;
	refused(h, h->ingest, b, n + DEPTH + 1, FUNNEL_EMALFORMED, "10k nested data");
	/* just over the documented limit of 32 */
	memset(b, 0x91, 33);
	b[33] = 0xc0;
	refused(h, h->ingest, b, 34, FUNNEL_EMALFORMED, "33 nested arrays");
	free(b);
	assert_still_serving(h, "deep-nesting");
}

/* Values of every msgpack type. */
enum wrong { W_NIL, W_TRUE, W_NEG, W_UINT, W_FLOAT, W_STR, W_BIN, W_ARRAY, W_MAP, W_EXT, W_COUNT };
#define OK_(w) (1u << (w))

static void
pack_wrong(msgpack_packer *pk, enum wrong w)
{
	switch (w) {
	case W_NIL: msgpack_pack_nil(pk); break;
	case W_TRUE: msgpack_pack_true(pk); break;
	case W_NEG: msgpack_pack_int64(pk, -5); break;
	case W_UINT: msgpack_pack_uint64(pk, 7); break;
	case W_FLOAT: msgpack_pack_double(pk, 3.5); break;
	case W_STR: mp_pack_cstr(pk, "nope"); break;
	case W_BIN: msgpack_pack_bin_with_body(pk, "\x00\x01", 2); break;
	case W_ARRAY: msgpack_pack_array(pk, 1); msgpack_pack_uint64(pk, 1); break;
	case W_MAP: msgpack_pack_map(pk, 1); mp_pack_cstr(pk, "a"); msgpack_pack_uint64(pk, 1); break;
	case W_EXT: msgpack_pack_ext_with_body(pk, "xy", 2, 5); break;
	case W_COUNT: break;
	}
}

/* One field of a request or of its event, with the value types that are
 * right for it (skipped: they are not hostile). */
struct field {
	const char *op;        /* "publish": an envelope field unless top */
	int top;               /* a key of the request map itself */
	const char *name;
	unsigned right;
};

static int
is(const char *a, const char *b)
{
	return strcmp(a, b) == 0;
}

/* The envelope for an envelope field f set to w: a lead.captured of H-1
 * with the field added (or replacing type or lead); data.owner and
 * data.amount go in the data of the types that check them. */
static void
pack_envelope_with_wrong(msgpack_packer *pk, const char *name, enum wrong w)
{
	if (is(name, "data.owner") || is(name, "data.amount")) {
		int owner = is(name, "data.owner");
		msgpack_pack_map(pk, 3);
		mp_pack_key(pk, "type");
		mp_pack_cstr(pk, owner ? "lead.assigned" : "deal.won");
		mp_pack_key(pk, "lead");
		mp_pack_cstr(pk, "H-1");
		mp_pack_key(pk, "data");
		msgpack_pack_map(pk, 1);
		mp_pack_cstr(pk, owner ? "owner" : "amount");
		pack_wrong(pk, w);
		return;
	}
	int replaces = is(name, "type") || is(name, "lead");
	msgpack_pack_map(pk, replaces ? 2 : 3);
	mp_pack_key(pk, "type");
	if (is(name, "type"))
		pack_wrong(pk, w);
	else
		mp_pack_cstr(pk, "lead.captured");
	mp_pack_key(pk, "lead");
	if (is(name, "lead"))
		pack_wrong(pk, w);
	else
		mp_pack_cstr(pk, "H-1");
	if (!replaces) {
		mp_pack_key(pk, name);
		pack_wrong(pk, w);
	}
}

/* A request of f->op with field f->name (of the request, or of its one
 * event) set to a value of type w and every other field right:
 * {op, rid, [lead | events | the replay field]}. */
static void
pack_with_wrong(msgpack_sbuffer *sb, const struct field *f, enum wrong w)
{
	msgpack_packer pk;
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	int own = f->top && !is(f->name, "op") && !is(f->name, "rid");   /* a key of the op */
	int publish = is(f->op, "publish"), lead_op = is(f->op, "lead");
	msgpack_pack_map(&pk, 2 + (publish || lead_op || own));
	mp_pack_key(&pk, "op");
	if (f->top && is(f->name, "op"))
		pack_wrong(&pk, w);
	else
		mp_pack_cstr(&pk, f->op);
	mp_pack_key(&pk, "rid");
	if (f->top && is(f->name, "rid"))
		pack_wrong(&pk, w);
	else
		msgpack_pack_uint64(&pk, HOSTILE_RID);
	if (publish) {
		mp_pack_key(&pk, "events");
		if (own) {
			pack_wrong(&pk, w);
		} else if (f->top) {
			msgpack_pack_array(&pk, 0);
		} else {
			msgpack_pack_array(&pk, 1);
			pack_envelope_with_wrong(&pk, f->name, w);
		}
	} else if (lead_op) {
		mp_pack_key(&pk, "lead");
		if (own)
			pack_wrong(&pk, w);
		else
			mp_pack_cstr(&pk, "H-1");
	} else if (own) {
		mp_pack_key(&pk, f->name);
		pack_wrong(&pk, w);
	}
}

static void
test_wrong_types_everywhere(void **state)
{
	hostile *h = *state;
	static const struct field fields[] = {
		{ "status", 1, "rid", OK_(W_UINT) },
		{ "status", 1, "op", 0 },
		{ "publish", 1, "rid", OK_(W_UINT) },
		{ "publish", 1, "op", 0 },
		{ "publish", 1, "events", 0 },
		{ "publish", 0, "type", 0 },
		{ "publish", 0, "lead", OK_(W_STR) },
		{ "publish", 0, "id", OK_(W_STR) },
		{ "publish", 0, "occurred_at", OK_(W_NEG) | OK_(W_UINT) },
		{ "publish", 0, "expected_version", 0 },   /* 7 is EVERSION: the lead is at 2 */
		{ "publish", 0, "cause", OK_(W_UINT) },
		{ "publish", 0, "data", OK_(W_NIL) | OK_(W_MAP) },
		{ "publish", 0, "data.owner", 0 },          /* "nope" is a fine owner, */
		{ "publish", 0, "data.amount", OK_(W_UINT) | OK_(W_FLOAT) },
		{ "replay", 1, "from", OK_(W_UINT) },
		{ "replay", 1, "to", OK_(W_UINT) },
		{ "replay", 1, "since", OK_(W_UINT) },
		{ "replay", 1, "until", OK_(W_UINT) },
		{ "replay", 1, "limit", OK_(W_UINT) },
		{ "replay", 1, "max_bytes", OK_(W_UINT) },
		{ "replay", 1, "lead", OK_(W_STR) },
		{ "replay", 1, "type", OK_(W_STR) },
		{ "lead", 1, "lead", 0 },                   /* "nope" is ENOTFOUND */
	};
	int tried = 0;
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
		const struct field *f = &fields[i];
		for (int w = 0; w < W_COUNT; w++) {
			if (f->right & OK_(w))
				continue;
			/* a str owner on a lead in mql is a fine assignment: skip it */
			if (is(f->name, "data.owner") && w == W_STR)
				continue;
			msgpack_sbuffer sb;
			msgpack_sbuffer_init(&sb);
			pack_with_wrong(&sb, f, (enum wrong)w);
			int publish = is(f->op, "publish");
			void *sock = publish ? h->ingest : h->query;
			char field[32], what[96];
			uint64_t rid;
			snprintf(what, sizeof what, "%s %s = wrong type %d", f->op, f->name, w);
			const void *frames[1] = { sb.data };
			size_t lens[1] = { sb.size };
			int code = exchange(h, sock, frames, lens, 1, field, &rid, what);
			if (code == 0)
				fail_msg("%s: accepted", what);
			/* the field is named, and the rid echoed once it could be read */
			int rid_bad = f->top && is(f->name, "rid");
			if (code != FUNNEL_EMALFORMED && code != FUNNEL_ETRANSITION && !is(field, f->name))
				fail_msg("%s: %s names field '%s'", what, funnel_errname(code), field);
			assert_int_equal(rid, rid_bad ? 0 : HOSTILE_RID);
			msgpack_sbuffer_destroy(&sb);
			tried++;
		}
	}
	printf("hostile: %d wrong-type requests, each refused naming its field\n", tried);
	assert_still_serving(h, "wrong-types");
}

static void
test_multipart_and_empty_frames(void **state)
{
	hostile *h = *state;
	static const char bad[] = "\x81\xa2op\x05";          /* {op: 5}: ETYPE */
	enum { B = sizeof bad - 1 };
	msgpack_sbuffer st;
	msgpack_packer pk;
	msgpack_sbuffer_init(&st);
	msgpack_packer_init(&pk, &st, msgpack_sbuffer_write);
	fp_pack_simple(&pk, HOSTILE_RID, "status", NULL);
	const struct {
		const char *what;
		size_t n;
		const char *f[4];
		size_t len[4];
		int want;    /* -1: ok (a valid status, extra frames ignored) */
	} cases[] = {
		{ "one empty frame", 1, { "" }, { 0 }, FUNNEL_EMALFORMED },
		{ "delimiter, empty body", 2, { "", "" }, { 0, 0 }, FUNNEL_EMALFORMED },
		{ "delimiter, bad body", 2, { "", bad }, { 0, B }, FUNNEL_ETYPE },
		{ "bad body, extra frames", 3, { bad, "junk", "" }, { B, 4, 0 }, FUNNEL_ETYPE },
		{ "delimiter, empty body, extra", 3, { "", "", "\xc1" }, { 0, 0, 1 }, FUNNEL_EMALFORMED },
		{ "delimiter, bad body, extra", 4, { "", bad, "x", "y" }, { 0, B, 1, 1 }, FUNNEL_ETYPE },
		{ "status, then junk frames", 3, { st.data, "\xc1", "zz" }, { st.size, 1, 2 }, -1 },
		{ "delimiter, status, junk", 3, { "", st.data, "\xc1" }, { 0, st.size, 1 }, -1 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		for (int e = 0; e < 2; e++) {
			void *sock = e == 0 ? h->ingest : h->query;
			int want = cases[i].want;
			if (want == -1 && e == 0)
				want = FUNNEL_EOP;   /* status is not an ingest op */
			const void *frames[4];
			for (size_t k = 0; k < cases[i].n; k++)
				frames[k] = cases[i].f[k];
			int code = exchange(h, sock, frames, cases[i].len, cases[i].n, NULL, NULL, cases[i].what);
			if (code != (want == -1 ? 0 : want))
				fail_msg("%s (%s): got %s", cases[i].what, e ? "query" : "ingest",
				         code ? funnel_errname(code) : "ok");
		}
	}
	msgpack_sbuffer_destroy(&st);
	assert_still_serving(h, "multipart");
}

static void
test_ops_at_the_wrong_endpoint(void **state)
{
	hostile *h = *state;
	msgpack_sbuffer sb[4];
	size_t nreq = valid_requests(sb);
	msgpack_sbuffer ok;
	msgpack_sbuffer_init(&ok);
	pack_publish_one(&ok, "x.would-be-stored", NULL);
	refused(h, h->query, ok.data, ok.size, FUNNEL_EOP, "publish at the query endpoint");
	for (size_t r = 1; r < nreq; r++)
		refused(h, h->ingest, sb[r].data, sb[r].size, FUNNEL_EOP, "query op at the ingest endpoint");
	for (size_t r = 0; r < nreq; r++)
		msgpack_sbuffer_destroy(&sb[r]);
	msgpack_sbuffer_destroy(&ok);
	assert_still_serving(h, "wrong-endpoint");
}

static void
test_oversized_frames(void **state)
{
	hostile *h = *state;
	/* just over the 2 MiB request limit: ETOOBIG, answered */
	size_t big = (2u << 20) + 1;
	uint8_t *b = calloc(1, (9u << 20));
	assert_non_null(b);
	refused(h, h->ingest, b, big, FUNNEL_ETOOBIG, "2 MiB + 1 to ingest");
	refused(h, h->query, b, big, FUNNEL_ETOOBIG, "2 MiB + 1 to query");
	/* a valid-looking publish of 4 MiB: also ETOOBIG, nothing stored */
	b[0] = 0x83;
	refused(h, h->ingest, b, 4u << 20, FUNNEL_ETOOBIG, "4 MiB publish");
	/* over 8 MiB: ZeroMQ drops the connection, no reply; the daemon goes on */
	for (int e = 0; e < 2; e++) {
		void *s = dealer(h, e == 0 ? h->d.ingest : h->d.query);
		int tmo = 1000;
		zmq_setsockopt(s, ZMQ_RCVTIMEO, &tmo, sizeof tmo);
		assert_int_equal(zmq_send(s, b, 9u << 20, 0), (int)(9u << 20));
		h->inputs++;
		char r[64];
		assert_int_equal(zmq_recv(s, r, sizeof r, 0), -1);
		zmq_close(s);
	}
	free(b);
	assert_still_serving(h, "oversized");
}

/* A query client that sends requests and never reads a reply: once its
 * queue is full its replies are dropped (PROTOCOL.md §12), and it must not
 * slow everyone else down.  Each reply to it used to hold the query thread
 * for the full wait meant for a stale "full" (10 ms), so a client reading
 * its own replies, served in turn with it, got at most one reply per
 * 10 ms: 400 status requests took over 4 s. */
static void
test_reader_that_stops_reading(void **state)
{
	hostile *h = *state;
	/* pages of 50 records of ~300 bytes: the slow client's socket buffers
	 * fill after a few, and building one costs next to nothing, so the
	 * time measured below is the time spent waiting on that client */
	char pad[300];
	msgpack_sbuffer data;
	msgpack_packer pk;
	memset(pad, 'p', sizeof pad);
	msgpack_sbuffer_init(&data);
	msgpack_packer_init(&pk, &data, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	mp_pack_key(&pk, "pad");
	msgpack_pack_str_with_body(&pk, pad, sizeof pad);
	static funnel_event evs[100];
	static funnel_ack acks[100];
	for (int i = 0; i < 100; i++)
		evs[i] = (funnel_event){ .type = "x.pad", .data = data.data, .data_len = data.size };
	assert_int_equal(funnel_publish(h->p, evs, 100, acks), FUNNEL_OK);

	void *slow = zmq_socket(h->zctx, ZMQ_DEALER);
	int one = 1, small = 4096, linger = 0;
	zmq_setsockopt(slow, ZMQ_RCVHWM, &one, sizeof one);
	zmq_setsockopt(slow, ZMQ_RCVBUF, &small, sizeof small);
	zmq_setsockopt(slow, ZMQ_LINGER, &linger, sizeof linger);
	curve_client(slow);
	assert_int_equal(zmq_connect(slow, h->d.query), 0);
	msgpack_sbuffer rq;
	msgpack_sbuffer_init(&rq);
	msgpack_packer_init(&pk, &rq, msgpack_sbuffer_write);
	funnel_replay_req rr = { .from = 1, .limit = 50 };
	fp_pack_replay(&pk, HOSTILE_RID, &rr);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(zmq_send(slow, rq.data, rq.size, 0), (int)rq.size);
	h->inputs += 1000;
	usleep(200 * 1000);   /* its first replies fill the queues */

	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < 400; i++)
		status_now(h);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("hostile: 400 status requests beside a client that stopped reading: %.2f s\n", s);
	assert_true(s < 2.0);

	zmq_close(slow);
	msgpack_sbuffer_destroy(&rq);
	msgpack_sbuffer_destroy(&data);
	h->before = status_now(h);
	assert_still_serving(h, "stopped-reading");
}

/* Runs last: the tally of everything thrown at the daemon. */
static void
test_tally(void **state)
{
	hostile *h = *state;
	printf("hostile: %" PRIu64 " inputs tried, every one answered as PROTOCOL.md says, "
	       "log unchanged after each group, daemon serving throughout (head %" PRIu64 ")\n",
	       h->inputs, h->before.head);
	assert_true(h->inputs > 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_random_frames),
		cmocka_unit_test(test_truncated_requests),
		cmocka_unit_test(test_mutated_requests),
		cmocka_unit_test(test_huge_declared_lengths),
		cmocka_unit_test(test_deep_nesting),
		cmocka_unit_test(test_wrong_types_everywhere),
		cmocka_unit_test(test_multipart_and_empty_frames),
		cmocka_unit_test(test_ops_at_the_wrong_endpoint),
		cmocka_unit_test(test_oversized_frames),
		cmocka_unit_test(test_reader_that_stops_reading),
		cmocka_unit_test(test_tally),
	};
	int failed = cmocka_run_group_tests_name("hostile", tests, setup, teardown);
	return failed + cmocka_run_group_tests_name("hostile-curve", tests, setup_curve, teardown_curve);
}
