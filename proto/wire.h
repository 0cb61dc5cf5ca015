/*
 * proto/wire.h - requests and replies on the ingest and query endpoints
 * (PROTOCOL.md "Requests").  Each request and each reply is one ZeroMQ
 * frame holding one msgpack map; replies echo the request's "rid".
 *
 * Encoders append to a msgpack packer and return 0 or -1 (out of
 * memory).  Decoders return a funnel_err and views into the object or
 * buffer they were given.
 */
#ifndef FUNNEL_PROTO_WIRE_H
#define FUNNEL_PROTO_WIRE_H

#include <stdint.h>
#include <msgpack.h>

#include "funnel/values.h"
#include "envelope.h"

typedef enum fp_op {
	FP_OP_NONE = 0,
	FP_OP_PUBLISH,     /* ingest endpoint */
	FP_OP_REPLAY,      /* query endpoint */
	FP_OP_STATUS,      /* query endpoint */
	FP_OP_LEAD,        /* query endpoint */
	FP_OP_KEY          /* query endpoint: a lead's data key (PROTOCOL.md "Personal data") */
} fp_op;

/* Page bounds (PROTOCOL.md "Replay"). */
#define FP_PAGE_DEFAULT_EVENTS 1000u
#define FP_PAGE_MAX_EVENTS 10000u
#define FP_PAGE_DEFAULT_BYTES (1u << 20)
#define FP_PAGE_MAX_BYTES (8u << 20)
#define FP_PAGE_MAX_SCAN 100000u   /* records a filtered page may pass over */

/* A decoded request.  Views into the object it came from. */
typedef struct fp_request {
	fp_op op;
	uint64_t rid;
	const msgpack_object *events;    /* publish: the events array */
	uint64_t from, to, since, until; /* replay */
	funnel_str lead;                 /* replay filter, lead op */
	funnel_str type;                 /* replay filter (prefix) */
	uint32_t limit, max_bytes;       /* replay, clamped to the bounds above */
} fp_request;

/*
 * Decode a request frame.  `z` receives the objects.  On failure *err
 * names the problem and req->rid holds the rid if one could be read, so
 * the error reply can still echo it.
 */
funnel_err fp_request_decode(const void *buf, size_t len, msgpack_zone *z, fp_request *req,
                             fp_error *err);

/* --- client side: requests --- */

/* {op:"publish", rid, events:[ ...n ]}: the caller packs the n events next. */
int fp_pack_publish_head(msgpack_packer *pk, uint64_t rid, size_t n);
/* One envelope from a funnel_event.  data must be a complete msgpack value. */
int fp_pack_event(msgpack_packer *pk, const funnel_event *ev);
int fp_pack_replay(msgpack_packer *pk, uint64_t rid, const funnel_replay_req *r);
/* {op, rid} or {op, rid, lead}: status and lead requests. */
int fp_pack_simple(msgpack_packer *pk, uint64_t rid, const char *op, const char *lead);

/* --- daemon side: replies --- */

int fp_pack_error(msgpack_packer *pk, uint64_t rid, const fp_error *err);
int fp_pack_ack(msgpack_packer *pk, uint64_t rid, const uint64_t *seqs, const uint8_t *dup,
                size_t n);
/* {rid, ok, head, next, end, events:[ ...n ]}: the caller packs n bins next. */
int fp_pack_page_head(msgpack_packer *pk, uint64_t rid, uint64_t head, uint64_t next, int end,
                      size_t n);
int fp_pack_status(msgpack_packer *pk, uint64_t rid, const funnel_status *st);
int fp_pack_lead(msgpack_packer *pk, uint64_t rid, const char *lead, size_t lead_len,
                 const funnel_lead_info *li);
/* {rid, ok, lead, key}: key is 32 bytes, or NULL (packed as nil: none). */
int fp_pack_key(msgpack_packer *pk, uint64_t rid, const char *lead, size_t lead_len,
                const uint8_t *key);

/* --- client side: replies --- */

/* A decoded reply: rid, ok and, when !ok, the error; obj is the map. */
typedef struct fp_reply {
	uint64_t rid;
	int ok;
	fp_error err;
	msgpack_object obj;
} fp_reply;

/* Returns FUNNEL_OK when the frame is a well-formed reply (whatever its
 * ok flag) or FUNNEL_EPROTOCOL. */
funnel_err fp_reply_decode(const void *buf, size_t len, msgpack_zone *z, fp_reply *rep);

/* The acks of a publish reply: *n_acks events; at most cap written. */
funnel_err fp_ack_decode(const fp_reply *rep, funnel_ack *acks, size_t cap, size_t *n_acks);

/* A page: its fields and the events array (each a bin). */
funnel_err fp_page_decode(const fp_reply *rep, uint64_t *head, uint64_t *next, int *end,
                          const msgpack_object **events);

funnel_err fp_status_decode(const fp_reply *rep, funnel_status *st);
funnel_err fp_lead_decode(const fp_reply *rep, funnel_lead_info *li);

#endif /* FUNNEL_PROTO_WIRE_H */
