/*
 * funnel/limits.h - the constants every funnel program may know without
 * the client API: the version, funneld's loopback endpoints and the
 * protocol's limits (proto/PROTOCOL.md "Limits").  funnel/funnel.h
 * includes it; funneld and proto/ include it alone.  Plain macros, no
 * code: a value changes only with the protocol.
 */
#ifndef FUNNEL_LIMITS_H
#define FUNNEL_LIMITS_H

#define FUNNEL_VERSION "0.1.0"

/* Loopback defaults of funneld; clients use them when given NULL. */
#define FUNNEL_DEFAULT_INGEST "tcp://127.0.0.1:7400"
#define FUNNEL_DEFAULT_PUBLISH "tcp://127.0.0.1:7401"
#define FUNNEL_DEFAULT_QUERY "tcp://127.0.0.1:7402"

/* Limits of one event and one request (PROTOCOL.md "Limits"). */
#define FUNNEL_MAX_TYPE_BYTES 64
#define FUNNEL_MAX_LEAD_BYTES 128
#define FUNNEL_MAX_ID_BYTES 128
#define FUNNEL_MAX_PRODUCER_BYTES 128
#define FUNNEL_MAX_OWNER_BYTES 128         /* data.owner, data.reason, data.kind, ... */
#define FUNNEL_MAX_RECORD_BYTES 65536      /* one stored record */
/* One request frame.  Decoding costs up to 24 bytes of memory per
 * encoded byte (a msgpack object per nil), so this also bounds what one
 * hostile request can make the daemon allocate. */
#define FUNNEL_MAX_REQUEST_BYTES (2u << 20)
#define FUNNEL_MAX_BATCH 10000             /* events in one publish request */

#endif /* FUNNEL_LIMITS_H */
