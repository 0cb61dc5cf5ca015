/*
 * tests/fuzz/fuzz_envelope.c - libFuzzer target: one frame as funneld
 * receives it on the ingest or the query endpoint.
 *
 * The input goes through what the daemon runs on a frame before it
 * touches the log: fp_request_decode() (both endpoints share it), then,
 * for a publish, fp_event_decode() on every event.  Each event the
 * validator accepts is then stamped and encoded as the writer would
 * (fp_record_encode) and the record is read back the way every reader
 * does (funnel_record_parse, the fixed offsets, the hash chain).
 *
 * Invariants checked, beyond "no crash, no sanitizer report":
 *  - a decode that fails names a stable code (1..63) and a message;
 *  - a request that decodes has a known op and, for a publish, 1..10000
 *    events;
 *  - an accepted event that encodes (FUNNEL_OK; FUNNEL_ETOOBIG is the
 *    daemon's size refusal) gives a record that parses, carries the seq
 *    and ts it was stamped with and the same type, lead and id, and
 *    passes the chain walker with the prev it was given.
 * A broken invariant calls abort(), which libFuzzer reports with the
 * input that caused it.
 *
 * Build and run: `make fuzz FUZZ_SECONDS=60` (clang,
 * -fsanitize=fuzzer,address,undefined); seeds in tests/fuzz/corpus/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <sodium.h>

#include "envelope.h"
#include "wire.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                           \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "fuzz_envelope: invariant broken: %s (%s:%d)\n", \
			        #cond, __FILE__, __LINE__);                   \
			abort();                                              \
		}                                                             \
	} while (0)

static int
str_same(funnel_str a, funnel_str b)
{
	if (a.ptr == NULL || b.ptr == NULL)
		return a.ptr == b.ptr;
	return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

static void
check_error(funnel_err rc, const fp_error *err)
{
	CHECK(rc >= 1 && rc <= 63);
	CHECK(err->code == rc);
	CHECK(err->message[0] != '\0');
}

/* Encode an accepted event as the writer would and read it back. */
static void
check_record(const fp_event *ev, uint64_t seq, const uint8_t prev[FUNNEL_HASH_BYTES],
             msgpack_sbuffer *sb, msgpack_zone *rz)
{
	uint8_t hash[FUNNEL_HASH_BYTES];
	fp_stage to = FP_STAGE_NONE;
	/* a stage the event is allowed from, when there is one: the record
	 * then carries the stage the transition table gives */
	fp_stage from = FP_STAGE_NONE;
	if (ev->lead.ptr != NULL) {
		for (int s = 0; s < FP_STAGE_COUNT; s++) {
			if (fp_transition(ev->spec, (fp_stage)s, &to) == FUNNEL_OK) {
				from = (fp_stage)s;
				break;
			}
		}
		fp_transition(ev->spec, from, &to);
	}
	fp_stamp st = {
		.seq = seq, .ts = 1700000000000000000ull + seq, .producer = { NULL, 0 },
		.has_lead_state = ev->lead.ptr != NULL, .stage = to, .version = seq, .prev = prev,
	};
	sb->size = 0;
	funnel_err rc = fp_record_encode(sb, ev, &st, hash);
	if (rc == FUNNEL_ETOOBIG) {
		CHECK(sb->size == 0);   /* restored to its size on entry */
		return;
	}
	CHECK(rc == FUNNEL_OK);
	CHECK(sb->size <= FP_MAX_RECORD_BYTES);

	funnel_record r;
	msgpack_zone_clear(rz);
	CHECK(funnel_record_parse(sb->data, sb->size, rz, &r) == FUNNEL_OK);
	CHECK(r.seq == seq && r.ts == st.ts);
	CHECK(str_same(r.type, ev->type));
	CHECK(str_same(r.lead, ev->lead));
	CHECK(str_same(r.id, ev->id));
	CHECK(memcmp(r.hash, hash, FUNNEL_HASH_BYTES) == 0);
	uint64_t pseq, pts;
	CHECK(funnel_record_peek(sb->data, sb->size, &pseq, &pts) == FUNNEL_OK);
	CHECK(pseq == seq && pts == st.ts);

	fp_chain c;
	char why[256];
	fp_chain_init(&c, seq, prev);
	CHECK(fp_chain_step(&c, sb->data, sb->size, why, sizeof why) == FUNNEL_OK);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return sodium_init() < 0 ? -1 : 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A copy of exactly `size` bytes, so a read past the frame is caught
	 * as it would be on a ZeroMQ message buffer. */
	uint8_t *frame = malloc(size ? size : 1);
	if (frame == NULL)
		return 0;
	memcpy(frame, data, size);

	msgpack_zone z, rz;
	msgpack_sbuffer sb;
	fp_request req;
	fp_error err;
	msgpack_zone_init(&z, 4096);
	msgpack_zone_init(&rz, 4096);
	msgpack_sbuffer_init(&sb);

	funnel_err rc = fp_request_decode(frame, size, &z, &req, &err);
	if (rc != FUNNEL_OK) {
		check_error(rc, &err);
		goto out;
	}
	CHECK(req.op == FP_OP_PUBLISH || req.op == FP_OP_REPLAY || req.op == FP_OP_STATUS ||
	      req.op == FP_OP_LEAD);
	if (req.op == FP_OP_REPLAY) {
		CHECK(req.from >= 1);
		CHECK(req.limit >= 1 && req.limit <= FP_PAGE_MAX_EVENTS);
		CHECK(req.max_bytes >= 1 && req.max_bytes <= FP_PAGE_MAX_BYTES);
	}
	if (req.op != FP_OP_PUBLISH)
		goto out;
	CHECK(req.events != NULL && req.events->type == MSGPACK_OBJECT_ARRAY);
	CHECK(req.events->via.array.size >= 1 && req.events->via.array.size <= FP_MAX_BATCH);

	uint8_t prev[FUNNEL_HASH_BYTES] = { 0 };
	for (uint32_t i = 0; i < req.events->via.array.size; i++) {
		fp_event ev;
		memset(&err, 0, sizeof err);
		rc = fp_event_decode(&req.events->via.array.ptr[i], &ev, &err);
		if (rc != FUNNEL_OK) {
			check_error(rc, &err);
			continue;
		}
		CHECK(ev.spec != NULL && ev.type.ptr != NULL && ev.type.len >= 1);
		CHECK(ev.type.len <= FP_MAX_TYPE_BYTES);
		CHECK(ev.lead.ptr == NULL || (ev.lead.len >= 1 && ev.lead.len <= FP_MAX_LEAD_BYTES));
		CHECK(ev.id.ptr == NULL || (ev.id.len >= 1 && ev.id.len <= FP_MAX_ID_BYTES));
		CHECK(ev.data == NULL || ev.data->type == MSGPACK_OBJECT_MAP);
		check_record(&ev, (uint64_t)i + 1, prev, &sb, &rz);
		prev[i % FUNNEL_HASH_BYTES] ^= (uint8_t)(i + 1);   /* vary the chain's anchor */
	}
out:
	msgpack_sbuffer_destroy(&sb);
	msgpack_zone_destroy(&rz);
	msgpack_zone_destroy(&z);
	free(frame);
	return 0;
}
