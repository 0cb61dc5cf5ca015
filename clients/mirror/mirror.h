/*
 * clients/mirror/mirror.h - funnel-mirror: copies every record of the log,
 * in seq order and byte for byte, into a NATS JetStream stream, so that
 * readers beyond this machine read the stream (libfunnel's
 * --source nats://HOST:PORT/STREAM) instead of funneld.
 *
 * Guarantees (copy.c, stream.c):
 *  - stream sequence N holds exactly the bytes of record N: each record
 *    is published with Nats-Msg-Id = N and Nats-Expected-Last-Sequence =
 *    N - 1, so JetStream itself refuses a gap or a reorder and drops a
 *    resend;
 *  - the checkpoint is the stream's last sequence, nothing else: at start
 *    and after any publish error the mirror asks the stream and goes on
 *    from last + 1;
 *  - a stream whose configuration is not a mirror's (file storage, the
 *    replicas asked for, limits retention with no limit, one subject) or
 *    whose record at its last sequence is not funneld's record at that
 *    seq (another log) is refused, never written to.
 *
 * The status (http.c): GET /healthz and GET /metrics (Prometheus) from
 * the counters below, which the loop and the publish-ack thread update.
 */
#ifndef FUNNEL_MIRROR_H
#define FUNNEL_MIRROR_H

#include <stdint.h>

#include <nats/nats.h>

#include "funnel/funnel.h"
#include "svcmain.h"

#define MIRROR_NAME "mirror"
#define MIRROR_DEFAULT_NATS "nats://127.0.0.1:4222"
#define MIRROR_DEFAULT_STREAM "FUNNEL"
#define MIRROR_DEFAULT_SUBJECT "funnel.log"
#define MIRROR_DEFAULT_HTTP "127.0.0.1:7491"

/* What the status endpoint shows.  Every field is read and written with
 * __atomic builtins (relaxed): writers are the loop (head, connected)
 * and the ack thread (acked_seq, acked_ts). */
typedef struct mirror_counters {
	uint64_t acked_seq;       /* the highest seq the stream has acknowledged */
	uint64_t acked_ts;        /* its record's ts (ns) */
	uint64_t head;            /* funneld's head, as last asked */
	uint64_t head_ts;         /* its record's ts (ns) */
	uint64_t published;       /* messages acknowledged as stored (not duplicates) */
	uint64_t duplicates;      /* acknowledged as duplicates of a resend */
	uint64_t resyncs;         /* times the mirror went back to the stream's last seq */
	int connected;            /* 1: the stream is reachable and checked */
} mirror_counters;

#define MIRROR_TIMEOUT_MS 5000
#define MIRROR_HEAD_EVERY_MS 500

typedef struct mirror_args {
	svc_args c;
	const char *nats, *stream, *subject, *creds, *http;
	int replicas;
	int window;
} mirror_args;

typedef struct mirror {
	const mirror_args *a;
	const char *servers[8];
	int nservers;
	char *serverbuf;

	natsConnection *nc;
	jsCtx *js;
	natsSubscription *acks;   /* INBOX.> : the acks of our publishes */
	char inbox[64];           /* this connection's reply prefix */
	uint32_t epoch;           /* atomic: acks of another epoch are stale */
	int64_t inflight;         /* atomic: publishes of this epoch not acked yet */
	int64_t last_ack_ms;      /* atomic: now_ms() of the last ack, or of the
	                           * publish that made inflight non-zero */
	uint64_t *ts_ring;        /* [window]: ts of record seq at seq % window */
	funnel_subscriber *sub;
	funnel_query *q;
	mirror_counters c;

	int failed;               /* atomic: a publish was refused or not acknowledged */
	uint64_t good_upto;       /* atomic: every seq up to this one is known to be ours in the
	                           * stream (checked at sync, or acked in an unbroken run since) */
	char failmsg[256];        /* written by whoever sets failed first */
	int64_t next_head_ms;
	int ready_written;
	int synced;               /* a sync succeeded: good_upto means something */
} mirror;

/* ---- the loop (copy.c) ---- */

/* funnel-mirror's own options (svc_desc.own, .own_fn). */
extern const struct option mirror_options[];
int mirror_option(int id, const char *arg, void *ctx);

/* `run` (svc_desc.run): ctx is the mirror_args.  Exit status. */
int mirror_run(void *ctx);

/* ---- NATS (stream.c) ---- */

/* Monotonic milliseconds. */
int64_t mirror_now_ms(void);
/* *p = max(*p, v), atomically. */
void mirror_atomic_max(uint64_t *p, uint64_t v);
/* The first failure since the last sync wins the message (m->failmsg). */
void mirror_set_failed(mirror *m, const char *msg);
/* Connect to NATS with the acks' subscription and a JetStream context:
 * 0, or -1 (nothing left open). */
int mirror_connect(mirror *m);
/* Make sure the stream exists and is a mirror's; *last = its last seq.
 * Returns 0, 1 to try again later (the server is not there), or -1 for
 * a stream that must not be used (logged). */
int mirror_ensure_stream(mirror *m, uint64_t *last);
/* The stream's messages from..last must be funneld's records from..last.
 * Returns 0 (same log, or an empty stream), 1 to try again later, -1
 * for another log (logged). */
int mirror_same_log(mirror *m, uint64_t from, uint64_t last);

/* ---- the status (http.c) ---- */

typedef struct mirror_http mirror_http;

/* Serve /healthz and /metrics on addr (IPV4:PORT, port 0: any) from c,
 * which must outlive the server.  FUNNEL_EINVAL for a bad address,
 * FUNNEL_ETRANSPORT when it cannot listen. */
int mirror_http_start(mirror_http **out, const char *addr, const mirror_counters *c);
void mirror_http_stop(mirror_http **h);

#endif
