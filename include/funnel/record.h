/*
 * funnel/record.h - a stored event ("record") as the log keeps it,
 * publishes it and replays it: the same bytes everywhere.
 *
 * A record is one msgpack map whose keys appear in this order (absent
 * optional keys are simply left out; see proto/PROTOCOL.md "Records"):
 *
 *   seq, ts, type, lead?, id?, occurred_at?, cause?, producer?,
 *   stage?, version?, data?, prev, hash
 *
 * `seq` and `ts` are always encoded as msgpack uint 64 (0xcf), so they sit
 * at fixed offsets; `hash` is always last, a bin 8 of 32 bytes, and is the
 * BLAKE2b-256 of every byte of the record before those 32 bytes.  `prev`
 * is the `hash` of the record with seq-1 (32 zero bytes for seq 1).
 */
#ifndef FUNNEL_RECORD_H
#define FUNNEL_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FUNNEL_HASH_BYTES 32

/* A byte string that is a view into someone else's buffer: not
 * NUL-terminated; ptr is NULL when the field is absent. */
typedef struct funnel_str {
	const char *ptr;
	size_t len;
} funnel_str;

/* A parsed record.  Every pointer is a view: into the record's bytes
 * (strings, prev, hash) or into the msgpack zone given to the parser
 * (data).  The view is valid while both the bytes and the zone live and
 * the zone is not cleared. */
typedef struct funnel_record {
	uint64_t seq;            /* gapless, from 1 */
	uint64_t ts;             /* daemon time, ns since the Unix epoch, never decreasing */
	funnel_str type;         /* e.g. "lead.captured", "x.custom" */
	funnel_str lead;         /* lead id, if the event names one */
	funnel_str id;           /* producer's idempotency key, if given */
	funnel_str producer;     /* authenticated producer identity, if any */
	funnel_str stage;        /* the lead's stage after this event, if a lead */
	int has_occurred_at;
	int64_t occurred_at;     /* producer's own time, ns since the epoch */
	int has_cause;
	uint64_t cause;          /* seq of the event that caused this one */
	int has_version;
	uint64_t version;        /* the lead's version after this event */
	const msgpack_object *data;   /* the event's data map, NULL if absent */
	const uint8_t *prev;     /* FUNNEL_HASH_BYTES: hash of record seq-1 */
	const uint8_t *hash;     /* FUNNEL_HASH_BYTES: hash of this record */
	const uint8_t *bytes;    /* the whole record */
	size_t len;
} funnel_record;

/* Parse a record.  `zone` (caller-owned, reusable after msgpack_zone_clear)
 * receives the decoded data map.  Checks the shape only; the hash is
 * checked by funnel_record_hash_ok().
 * Returns FUNNEL_OK, FUNNEL_EMALFORMED, FUNNEL_EMISSING or FUNNEL_ETYPE. */
int funnel_record_parse(const void *buf, size_t len, msgpack_zone *zone,
                        funnel_record *out);

/* Read seq and ts from their fixed offsets without decoding the rest.
 * Returns FUNNEL_OK, or FUNNEL_EMALFORMED if the bytes do not start like
 * a record.  Either out pointer may be NULL. */
int funnel_record_peek(const void *buf, size_t len, uint64_t *seq, uint64_t *ts);

/* Recompute a record's hash over its bytes and compare it with the stored
 * one.  Returns 1 if they match, 0 if not (or if the record is too short
 * to hold a hash). */
int funnel_record_hash_ok(const void *buf, size_t len);

/*
 * The record's event time (PROTOCOL.md §10, "Event time"): when the fact
 * happened, in ns since the Unix epoch.  It is the producer's
 * `occurred_at` when the record has one with 0 < occurred_at <= ts, else
 * the daemon's `ts`: a fact cannot be recorded before it happened, and
 * the views count time from the epoch.  Every view that reads time
 * (windows, cohorts, durations, decay) reads this one value; it is a
 * function of the record's bytes, so a rebuild gives the same view.
 */
uint64_t funnel_record_event_time(const funnel_record *r);

/*
 * The rule for event times out of order (PROTOCOL.md §10): a view keeps,
 * per lead, the event time of the last record it applied (`prev`, 0 for
 * none); a record whose event time is before it counts at `prev`, so a
 * duration between two of the lead's records is never negative.  Returns
 * max(funnel_record_event_time(r), prev).
 */
uint64_t funnel_record_event_time_after(const funnel_record *r, uint64_t prev);

#ifdef __cplusplus
}
#endif
#endif /* FUNNEL_RECORD_H */
