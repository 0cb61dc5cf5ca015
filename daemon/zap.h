/*
 * daemon/zap.h - funneld's access control: the access table, the ZAP
 * handler that authenticates every CURVE connection, and SIGHUP reloads.
 *
 * With --access, every server socket is a CURVE server with its own ZAP
 * domain (ZAP_DOMAIN_INGEST, _QUERY, _PUBLISH).  The ZAP handler runs on
 * its own thread (REP on inproc://zeromq.zap.01 in funneld's context):
 *   - a key not in the table: status 400, the handshake fails and the peer
 *     never gets a reply; logged once per key (a fixed set of the last
 *     ZAP_LOGGED_KEYS keys, so a flood cannot grow it);
 *   - a principal without read on the publish domain: 400 as well (a PUB
 *     socket cannot refuse message by message);
 *   - otherwise 200 with User-Id = the principal's name and the property
 *     ZAP_KEY_PROPERTY = its key, which every message of the connection
 *     carries (zmq_msg_gets).
 *
 * The table: zap_acquire() returns the current one with a reference
 * taken (NULL without --access); zap_release() drops it.  A reload builds
 * a new table and swaps it in under a lock; the old one is freed by its
 * last holder.  A reload that fails keeps the table in force (logged).
 * A connection made under an old table keeps its User-Id: the ingest and
 * query paths look the name up in the current table for each request and
 * drop, unanswered, a request from a name the table no longer has or
 * that now stands for another key.
 */
#ifndef FUNNEL_DAEMON_ZAP_H
#define FUNNEL_DAEMON_ZAP_H

#include <zmq.h>

#include "access.h"

#define ZAP_DOMAIN_INGEST "ingest"
#define ZAP_DOMAIN_QUERY "query"
#define ZAP_DOMAIN_PUBLISH "publish"
#define ZAP_LOGGED_KEYS 64
/* The connection property holding the client's key (Z85), from the ZAP
 * reply's metadata. */
#define ZAP_KEY_PROPERTY "X-Funnel-Key"

/* Load the access file and start the handler in ctx (binding its
 * socket before returning, so it is in place before any server socket
 * accepts).  Returns 0, or -1 (logged). */
int zap_start(void *ctx, const char *access_path);

/* Stop the handler's thread and free the table (after every socket of
 * the context is closed: zmq_ctx_term waits for the handler's socket). */
void zap_stop(void);

/* Ask for a reload; async-signal-safe (the SIGHUP handler). */
void zap_request_reload(void);

const fa_table *zap_acquire(void);
void zap_release(const fa_table *t);

/* The principal a received frame comes from: its User-Id in table t
 * (NULL when the frame has none or the name is no longer in t). */
const fa_principal *zap_principal(const fa_table *t, zmq_msg_t *msg);

#endif
