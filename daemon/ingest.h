/*
 * daemon/ingest.h - the write path: receive, validate, append, commit,
 * ack, publish.  Runs on the main thread, the log's single writer.
 *
 * One turn of the loop (ingest_run):
 *   1. wait for the ingest socket, then drain every request waiting on it
 *      (up to a group limit) and decode each once;
 *   2. in one LMDB write transaction, validate and append each request's
 *      events, a request being atomic: its events go straight into the
 *      transaction, and when one is refused after others of its request
 *      were appended, the group is redone with a nested transaction per
 *      request (apply_request); a full map grows and the group is redone;
 *   3. commit (fsync unless --no-sync);
 *   4. only then reply to every request of the group (ack or error);
 *   5. then publish the group's records, in seq order, on the PUB socket.
 * A heartbeat carrying the head seq goes out on the PUB socket every
 * heartbeat period, so subscribers notice what they missed at the tail.
 */
#ifndef FUNNEL_DAEMON_INGEST_H
#define FUNNEL_DAEMON_INGEST_H

#include <signal.h>

#include "config.h"
#include "store.h"

/*
 * Serve until *stop becomes non-zero, then finish the group in hand,
 * answer ESHUTDOWN to requests still queued, and return 0.  Returns -1
 * only when the log can no longer be written at all (logged).
 * Sockets stay owned by the caller.
 */
int ingest_run(store *s, void *ingest_sock, void *pub_sock, const config *c,
               volatile sig_atomic_t *stop);

#endif
