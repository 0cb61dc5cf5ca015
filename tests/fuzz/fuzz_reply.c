/*
 * tests/fuzz/fuzz_reply.c - libFuzzer target: one frame as libfunnel
 * receives it from funneld, a reply on the ingest or query endpoint or a
 * message on the publish socket.
 *
 * The input goes through what the client library runs on such a frame:
 * fp_reply_decode(), then the decoder of each reply kind (acks, a replay
 * page, status, lead); every record of a page, and the frame itself as a
 * published record, through funnel_record_peek, funnel_record_parse,
 * funnel_record_hash_ok and the chain walker (what a subscriber and
 * `funnel verify` do).  A daemon that is not funneld, or a corrupted
 * link, must get FUNNEL_EPROTOCOL or a refused record, never a crash.
 *
 * Invariants checked, beyond "no crash, no sanitizer report":
 *  - every event of a page that decodes is a bin;
 *  - a record that parses carries the seq and ts funnel_record_peek reads
 *    at the fixed offsets, and its prev and hash point inside it;
 *  - the chain walker accepts a record only if its hash verifies.
 * Build and run: `make fuzz` (both targets); seeds in
 * tests/fuzz/corpus/reply/.
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
			fprintf(stderr, "fuzz_reply: invariant broken: %s (%s:%d)\n", \
			        #cond, __FILE__, __LINE__);                   \
			abort();                                              \
		}                                                             \
	} while (0)

#define MAX_ACKS 64

/* One record as a subscriber reads it. */
static void
check_record(const uint8_t *rec, size_t len, msgpack_zone *z)
{
	uint64_t pseq = 0, pts = 0;
	int peek = funnel_record_peek(rec, len, &pseq, &pts);
	funnel_record r;
	msgpack_zone_clear(z);
	if (funnel_record_parse(rec, len, z, &r) == FUNNEL_OK) {
		CHECK(peek == FUNNEL_OK && r.seq == pseq && r.ts == pts);
		CHECK(r.prev >= rec && r.prev + FUNNEL_HASH_BYTES <= rec + len);
		CHECK(r.hash >= rec && r.hash + FUNNEL_HASH_BYTES <= rec + len);
		CHECK(r.bytes == rec && r.len == len);
	}
	int hash_ok = funnel_record_hash_ok(rec, len);
	fp_chain c;
	char why[256];
	/* anchored on the record's own prev, so only the record is judged */
	fp_chain_init(&c, pseq, len >= 71 ? rec + len - 71 : NULL);
	if (fp_chain_step(&c, rec, len, why, sizeof why) == FUNNEL_OK) {
		CHECK(hash_ok);
		CHECK(c.next_seq == pseq + 1);
	} else {
		CHECK(why[0] != '\0');
	}
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
	uint8_t *frame = malloc(size ? size : 1);   /* exactly size bytes, for ASan */
	if (frame == NULL)
		return 0;
	memcpy(frame, data, size);
	msgpack_zone z, rz;
	msgpack_zone_init(&z, 4096);
	msgpack_zone_init(&rz, 4096);

	/* a message on the publish socket: a record (or a heartbeat) */
	check_record(frame, size, &rz);

	fp_reply rep;
	if (fp_reply_decode(frame, size, &z, &rep) == FUNNEL_OK) {
		if (rep.ok) {
			/* each decoder in turn, as if the reply answered its request */
			funnel_ack acks[MAX_ACKS];
			size_t n;
			fp_ack_decode(&rep, acks, MAX_ACKS, &n);   /* writes MAX_ACKS at most */
			uint64_t head, next;
			int end;
			const msgpack_object *evs;
			if (fp_page_decode(&rep, &head, &next, &end, &evs) == FUNNEL_OK) {
				for (uint32_t i = 0; i < evs->via.array.size; i++) {
					const msgpack_object *e = &evs->via.array.ptr[i];
					CHECK(e->type == MSGPACK_OBJECT_BIN);
					check_record((const uint8_t *)e->via.bin.ptr, e->via.bin.size, &rz);
				}
			}
			funnel_status st;
			fp_status_decode(&rep, &st);
			funnel_lead_info li;
			fp_lead_decode(&rep, &li);
		}
	}
	msgpack_zone_destroy(&rz);
	msgpack_zone_destroy(&z);
	free(frame);
	return 0;
}
