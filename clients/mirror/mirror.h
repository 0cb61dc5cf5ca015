/*
 * clients/mirror/mirror.h - funnel-mirror: copies every record of the log,
 * in seq order and byte for byte, into a NATS JetStream stream, so that
 * readers beyond this machine read the stream (libfunnel's
 * --source nats://HOST:PORT/STREAM) instead of funneld.
 *
 * Guarantees (main.c):
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

typedef struct mirror_http mirror_http;

/* Serve /healthz and /metrics on addr (IPV4:PORT, port 0: any) from c,
 * which must outlive the server.  FUNNEL_EINVAL for a bad address,
 * FUNNEL_ETRANSPORT when it cannot listen. */
int mirror_http_start(mirror_http **out, const char *addr, const mirror_counters *c);
void mirror_http_stop(mirror_http **h);

#endif
