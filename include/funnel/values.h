/*
 * funnel/values.h - the plain values that funnel's requests and replies
 * carry (proto/PROTOCOL.md "Requests"): an event to append, its ack, a
 * replay request, the log's status and a lead's state.  No functions:
 * the wire code (proto/) and funneld use these without the client API
 * (funnel/funnel.h, which includes this header).  The strings of
 * funnel_event and funnel_replay_req are borrowed from the caller.
 */
#ifndef FUNNEL_VALUES_H
#define FUNNEL_VALUES_H

#include <stddef.h>
#include <stdint.h>

#include "funnel/record.h"   /* FUNNEL_HASH_BYTES */

#ifdef __cplusplus
extern "C" {
#endif

/* One event to append.  Strings are NUL-terminated; NULL means absent.
 * `data`, if not NULL, is a msgpack-encoded map of data_len bytes.  The
 * library copies everything it needs before returning. */
typedef struct funnel_event {
	const char *type;               /* required: "lead.captured", "x.thing", ... */
	const char *lead;               /* lead id; required for lead events */
	const char *id;                 /* idempotency key; strongly advised */
	int has_occurred_at;
	int64_t occurred_at;            /* producer's own time, ns since the epoch */
	int has_expected_version;
	uint64_t expected_version;      /* optimistic concurrency on the lead */
	uint64_t cause;                 /* seq that caused this event, 0 = none */
	const void *data;
	size_t data_len;
} funnel_event;

/* What the log did with one event. */
typedef struct funnel_ack {
	uint64_t seq;     /* the event's seq (the original one for a duplicate) */
	int dup;          /* 1 if the idempotency key was already stored */
} funnel_ack;

/* A replay request.  Zero means "no bound" for every number; NULL means
 * "no filter" for lead and type (type matches as a prefix: "lead." ). */
typedef struct funnel_replay_req {
	uint64_t from;        /* first seq (default 1) */
	uint64_t to;          /* last seq, inclusive */
	uint64_t since;       /* only events with ts >= since (ns) */
	uint64_t until;       /* only events with ts <  until (ns) */
	const char *lead;     /* only this lead's events */
	const char *type;     /* only types starting with this */
	uint32_t limit;       /* events per page (default 1000, max 10000) */
	uint32_t max_bytes;   /* bytes per page (default 1 MiB, max 8 MiB) */
} funnel_replay_req;

/* The log's state (op "status"). */
typedef struct funnel_status {
	uint64_t head;                          /* last seq, 0 for an empty log */
	uint8_t head_hash[FUNNEL_HASH_BYTES];   /* hash of record `head` (zeros if empty) */
	uint64_t head_ts;
	uint64_t count;                         /* events stored (== head) */
	uint64_t data_bytes;                    /* bytes of the data file in use */
	uint64_t map_bytes;                     /* current LMDB map size */
	uint64_t disk_free_bytes;               /* free to funneld on the data dir's file system */
	uint64_t disk_bytes;                    /* size of that file system */
	uint64_t uptime_ms;
	uint64_t leads;                         /* distinct leads */
	uint32_t format;                        /* on-disk format version */
	int durable;                            /* 1: fsync before every ack */
	char version[32];
	char ingest[256];
	char publish[256];
	char query[256];
	char data_dir[4096];
} funnel_status;

/* One lead's state (op "lead"). */
typedef struct funnel_lead_info {
	char stage[16];
	uint64_t version;       /* events that named this lead */
	uint64_t last_seq;
	char owner[129];        /* "" when nobody owns it */
} funnel_lead_info;

#ifdef __cplusplus
}
#endif
#endif /* FUNNEL_VALUES_H */
