/*
 * daemon/ingest.h - the write path: receive, validate, append, commit,
 * ack, publish.  Two threads: a receiver that owns the ingest socket and
 * does what needs no log state, and the writer (the main thread, the
 * log's single writer) that does what must be serial.  A group (a batch)
 * is owned by one of them at a time and handed over on an inproc PAIR.
 *
 * One group:
 *   1. receiver: drain every request waiting on the ingest socket (up to
 *      a group limit), decode each once, and check each event as far as
 *      no lead state is needed (envelope, the principal's right to the
 *      type, data already in stored form); hand the batch to the writer
 *      when the writer asks for one, so the next group is received and
 *      decoded while this one is stored.  A writer that holds nothing
 *      waits for a batch; one that holds a group for its flush (step 3)
 *      takes what came by now, or nothing;
 *   2. writer: in one LMDB write transaction, validate (idempotency, lead
 *      state) and append each request's events, a request being atomic:
 *      its events go straight into the transaction, and when one is
 *      refused after others of its request were appended, the group is
 *      redone with a nested transaction per request (apply_request); a
 *      full map grows and the group is redone.  An event the receiver
 *      refused is refused when the writer reaches it, so a request's
 *      error is the one its first refused event gets;
 *   3. writer: commit: the group's pages are written and flushed, its
 *      meta page written but not flushed (store.h: MDB_NOMETASYNC; no
 *      flush at all with --no-sync).  The writer holds the group until
 *      the next flush takes that meta page to the device: the commit of
 *      the next group, when requests came meanwhile (so under load a
 *      commit costs one flush), or else a flush of its own at once
 *      (store_sync: a lone event is acknowledged after two flushes,
 *      never later).  A
 *      group that destroys erased leads' keys is flushed at once.  Then
 *      it raises the store's durable seq, which is what queries show;
 *   4. only then the batch goes back to the receiver, which replies to
 *      every request of it (ack or error),
 *   5. then publishes the group's records, in seq order, on the PUB socket.
 * Batches go back in the order they were stored: the replies of a group
 * (refusals judged on the state a held group left included) never
 * precede the acks of the groups before it.  A flush that fails ends
 * the writer: the groups it was for are answered EINTERNAL (their fate
 * on a power loss unknown), as are duplicates waiting behind them, and
 * ingest_run returns -1.  A commit that fails on an I/O error (not a
 * full disk) while a group is held counts as such a flush: it may have
 * failed in its own flush, which the system reports once, so a later
 * flush proves nothing for the held group.
 * A heartbeat carrying the head seq (the last one published) goes out on
 * the PUB socket every heartbeat period, from the receiver, so
 * subscribers notice what they missed at the tail.
 */
#ifndef FUNNEL_DAEMON_INGEST_H
#define FUNNEL_DAEMON_INGEST_H

#include <signal.h>

#include "config.h"
#include "store.h"

/*
 * Serve until *stop becomes non-zero, then finish the group in hand,
 * answer ESHUTDOWN to requests taken or still queued, and return 0.
 * Returns -1 only when the log can no longer be written at all (logged).
 * Sockets stay owned by the caller; ingest_sock and pub_sock are used
 * by the receiver thread, started and joined inside this call.  ctx is
 * the sockets' context (for the inproc PAIR between the two threads).
 */
int ingest_run(void *ctx, store *s, void *ingest_sock, void *pub_sock, const config *c,
               volatile sig_atomic_t *stop);

#endif
