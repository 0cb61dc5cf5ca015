/*
 * daemon/query.h - the replay/query endpoint, served by its own thread on
 * read-only LMDB transactions, so readers never block the writer.
 *
 * Every answer is as of the store's durable seq (store.h): a replay page
 * stops there, status counts up to there.  Acks follow the durable seq,
 * so a query sent after an ack sees it.
 *
 * A lead whose state is of a commit not yet flushed: the state it had at
 * the durable seq is not kept, so its reply is packed at once from the
 * state read and parked until the writer raises the durable seq to that
 * commit (the writer writes wake_fd then, store_durable_watch), or
 * answered EINTERNAL 5 s after its request came.  The thread goes on
 * serving other clients meanwhile.  A connection's replies keep the
 * order of its requests (PROTOCOL.md §1), so the later replies of that
 * client are parked behind it.  Parked replies are bounded in number,
 * bytes and per client (query.c); one past a bound is dropped, as one to
 * a client whose queue is full is.  At stop (after the writer returned)
 * every parked reply is sent: its reply if durable, else EINTERNAL.
 *
 * Each request is answered in full before the next is read: one page
 * (bounded in events and bytes) of records at most, so the memory held
 * for a client is bounded however far behind it is.  The socket's send
 * high-water mark (QUERY_SNDHWM) bounds what waits in ZeroMQ's queue per
 * client; a reply dropped there costs the client a timeout and a retry,
 * never a gap.
 */
#ifndef FUNNEL_DAEMON_QUERY_H
#define FUNNEL_DAEMON_QUERY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "config.h"
#include "store.h"

/* Replies waiting for one slow query client, at most (its send
 * high-water mark, and its parked replies). */
#define QUERY_SNDHWM 16

typedef struct query_server {
	store *st;
	void *sock;               /* ROUTER, bound by the caller, used only by the thread */
	const config *cfg;
	char ingest[256], publish[256], query[256];   /* resolved endpoints for status */
	uint64_t started_ns;
	int wake_fd;              /* eventfd, query_start's: the durable seq rose */
	atomic_int stop;
	pthread_t thread;
} query_server;

/* Start the thread.  Returns 0 or an errno value. */
int query_start(query_server *q);

/* Ask the thread to stop and join it. */
void query_stop(query_server *q);

#endif
