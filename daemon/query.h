/*
 * daemon/query.h - the replay/query endpoint, served by its own thread on
 * read-only LMDB transactions, so readers never block the writer.
 *
 * Every answer is as of the store's durable seq (store.h): a replay page
 * stops there, status counts up to there, and a lead whose state is of
 * a commit not yet flushed is answered once that flush is done.  Acks
 * follow the durable seq, so a query sent after an ack sees it.
 *
 * Each request is answered in full before the next is read: one page
 * (bounded in events and bytes) of records at most, so the memory held
 * for a client is bounded however far behind it is.  The socket's send
 * high-water mark bounds what waits in ZeroMQ's queue per client; a reply
 * dropped there costs the client a timeout and a retry, never a gap.
 */
#ifndef FUNNEL_DAEMON_QUERY_H
#define FUNNEL_DAEMON_QUERY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "config.h"
#include "store.h"

typedef struct query_server {
	store *st;
	void *sock;               /* ROUTER, bound by the caller, used only by the thread */
	const config *cfg;
	char ingest[256], publish[256], query[256];   /* resolved endpoints for status */
	uint64_t started_ns;
	atomic_int stop;
	pthread_t thread;
} query_server;

/* Start the thread.  Returns 0 or an errno value. */
int query_start(query_server *q);

/* Ask the thread to stop and join it. */
void query_stop(query_server *q);

#endif
