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
 *      type, data already in stored form), and with a master key seal
 *      each event's personal values ahead under a candidate key for its
 *      lead (vault.h); hand the batch to the writer
 *      when the writer asks for one (as soon as it took a large one, else
 *      once it handed that back or made it the pending one, below; it
 *      holds at most two), so the
 *      next group is received and decoded while this one is stored;
 *   2. writer: in a child of the tail transaction (store.h), validate
 *      (idempotency, lead state) and append each request's events, a
 *      request being atomic: its events go straight into the child, and
 *      when one is refused after others of its request were appended,
 *      the group is redone with a nested transaction per request
 *      (apply_request); a full map checkpoints, grows and redoes the
 *      group.  An event the receiver refused is refused when the writer
 *      reaches it, so a request's error is the one its first refused
 *      event gets.  The child commits into the tail;
 *   3. writer: the group's records go to the journal, one write
 *      (store_group_journal), then one flush (none with --no-sync).  When
 *      this group and the next batch, already there, are both not small
 *      (ingest.c: OVERLAP_MIN_EVENTS) and this one erases no key, the flush
 *      runs on the journal's flusher thread (store_group_flush_start)
 *      while the writer applies that next group (step 2 of group k+1
 *      beside step 3 of group k); else the writer flushes itself, as
 *      soon as the group is written.  At most one group is so pending.
 *      Once its flush is done (store_group_wait; checked between the
 *      next group's requests and after it) the group is durable, and the
 *      writer raises the store's durable seq, which is what queries show;
 *      erased leads' keys are destroyed (vault.h; the flush of a group
 *      that erases keys is not overlapped: they go before the next group
 *      is applied);
 *   4. only then the batch goes back to the receiver, which replies to
 *      every request of it (ack or error): a group is acked only after
 *      its own flush and every earlier group's, and before any later
 *      group (one without records too: its duplicates may name records
 *      of the pending one);
 *   5. then publishes the group's records, in seq order, on the PUB socket.
 * Between groups the writer checkpoints when store_checkpoint_due() says
 * (and, idle, wakes for it), and at the stop, each after the pending
 * group was flushed and acked.  Batches go back in the order they were
 * stored.  A journal write or flush that fails, or a checkpoint that
 * fails on anything but a full disk or map, ends the writer: the group
 * it was for is answered EINTERNAL (its fate on a power loss unknown;
 * Linux reports a failed writeback once, so no later flush could vouch
 * for it), and so is the group applied behind a failed flush (its
 * records in the tail only); the requests behind them ESHUTDOWN, and
 * ingest_run returns -1; what was acknowledged is in the journal.
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
 * answer ESHUTDOWN to requests taken or still queued, checkpoint, and
 * return 0.
 * Returns -1 only when the log can no longer be written at all (logged).
 * Sockets stay owned by the caller; ingest_sock and pub_sock are used
 * by the receiver thread, started and joined inside this call.  ctx is
 * the sockets' context (for the inproc PAIR between the two threads).
 */
int ingest_run(void *ctx, store *s, void *ingest_sock, void *pub_sock, const config *c,
               volatile sig_atomic_t *stop);

#endif
