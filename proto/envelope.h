/*
 * proto/envelope.h - producer envelopes in, records out.
 *
 * An envelope is what a producer sends for one event (a msgpack map:
 * type, lead, id, occurred_at, expected_version, cause, data).  The daemon
 * decodes and validates it here, then stamps it (seq, ts, stage, version,
 * prev) into a record, the bytes that are stored, published and replayed.
 * Chain checking of records also lives here, so the daemon, the library
 * and `funnel verify` share one definition of a valid record.
 */
#ifndef FUNNEL_PROTO_ENVELOPE_H
#define FUNNEL_PROTO_ENVELOPE_H

#include <stdint.h>
#include <msgpack.h>

#include "funnel/error.h"
#include "funnel/limits.h"
#include "funnel/record.h"
#include "error.h"
#include "model.h"

/* Limits, documented in PROTOCOL.md "Limits": the public values of
 * funnel/limits.h under proto's names. */
#define FP_MAX_TYPE_BYTES FUNNEL_MAX_TYPE_BYTES
#define FP_MAX_LEAD_BYTES FUNNEL_MAX_LEAD_BYTES
#define FP_MAX_ID_BYTES FUNNEL_MAX_ID_BYTES
#define FP_MAX_PRODUCER_BYTES FUNNEL_MAX_PRODUCER_BYTES
#define FP_MAX_OWNER_BYTES FUNNEL_MAX_OWNER_BYTES
#define FP_MAX_RECORD_BYTES FUNNEL_MAX_RECORD_BYTES
#define FP_MAX_REQUEST_BYTES FUNNEL_MAX_REQUEST_BYTES
#define FP_MAX_BATCH FUNNEL_MAX_BATCH

/* A decoded envelope.  Strings and data are views into the msgpack object
 * it was decoded from: valid while that object's zone lives. */
typedef struct fp_event {
	const fp_evspec *spec;
	funnel_str type;
	funnel_str lead;         /* ptr NULL when absent */
	funnel_str id;           /* ptr NULL when absent */
	int has_occurred_at;
	int64_t occurred_at;
	int has_expected_version;
	uint64_t expected_version;
	int has_cause;
	uint64_t cause;
	const msgpack_object *data;   /* a map, or NULL */
	/* Where data's value starts in the buffer the envelope was unpacked
	 * from (msgpack_unpack() leaves strings, keys included, in place), and
	 * its length once fp_event_data_bytes() has found those bytes to be
	 * exactly what the record encoder would write; 0 until then. */
	const char *data_at;
	size_t data_len;
} fp_event;

/*
 * Decode and validate one envelope: field types, lengths, known type,
 * the data keys its type requires.  Stage checks need the lead's state
 * and are the caller's (fp_transition).  On failure fills *err (index left
 * as -1 for the caller to set) and returns its code.
 */
funnel_err fp_event_decode(const msgpack_object *o, fp_event *ev, fp_error *err);

/*
 * For an event decoded from buf[0..len) by fp_event_decode(): when the
 * bytes of its data map, read in place, are the shortest encoding of every
 * value (what msgpack_pack_object() writes, and what PROTOCOL.md asks of a
 * record's data), set ev->data_len so that fp_record_encode() copies them
 * instead of encoding the map again.  Otherwise, or when the data does not
 * lie in buf, leave it 0.  Reads nothing outside buf.
 */
void fp_event_data_bytes(fp_event *ev, const void *buf, size_t len);

/* What the daemon adds to an event to make it a record. */
typedef struct fp_stamp {
	uint64_t seq;
	uint64_t ts;
	funnel_str producer;     /* ptr NULL when unauthenticated */
	int has_lead_state;      /* 1 when the event names a lead */
	fp_stage stage;          /* the lead's stage after the event */
	uint64_t version;        /* the lead's version after the event */
	const uint8_t *prev;     /* FUNNEL_HASH_BYTES */
} fp_stamp;

/*
 * Append the record for (ev, st) to sb and write its hash to hash_out.
 * The record starts at the sbuffer's size on entry.  Returns FUNNEL_OK,
 * FUNNEL_ETOOBIG (sb is then restored to its size on entry) or
 * FUNNEL_ENOMEM.
 */
funnel_err fp_record_encode(msgpack_sbuffer *sb, const fp_event *ev,
                            const fp_stamp *st, uint8_t hash_out[FUNNEL_HASH_BYTES]);

/* Hash-chain walker used by `funnel verify` and the tests.  Feed it
 * records in seq order; it checks that each decodes, carries the seq
 * expected, hashes to its stored hash, and names the previous record's
 * hash as prev. */
typedef struct fp_chain {
	uint64_t next_seq;                 /* seq the next record must carry */
	uint8_t head[FUNNEL_HASH_BYTES];   /* hash of the last record accepted */
} fp_chain;

/* Start a walk at first_seq; prev is the hash of record first_seq-1
 * (NULL means zeros, right for first_seq == 1). */
void fp_chain_init(fp_chain *c, uint64_t first_seq, const uint8_t *prev);

/* Check the next record.  Returns FUNNEL_OK, or FUNNEL_ECHAIN with a
 * sentence in why naming the seq and the problem. */
funnel_err fp_chain_step(fp_chain *c, const void *rec, size_t len,
                         char *why, size_t whylen);

#endif /* FUNNEL_PROTO_ENVELOPE_H */
