/*
 * clients/lib/internal.h - private helpers shared by the libfunnel
 * objects (producer.c, query.c, subscriber.c).  Not installed; every
 * name here starts with fl_.
 *
 * Time: deadlines are absolute CLOCK_MONOTONIC milliseconds;
 * FL_FOREVER means "no deadline".  Every wait in the library goes
 * through fl_poll1() or zmq_poll() with a deadline, so no call blocks
 * longer than the caller allowed.
 *
 * Errors: every failure path of a public call goes through
 * fl_set_error() (or fl_reply_error() for a daemon error reply), so
 * funnel_*_error() always describes the code that was returned.
 */
#ifndef FUNNEL_CLIENTS_LIB_INTERNAL_H
#define FUNNEL_CLIENTS_LIB_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "funnel/funnel.h"
#include "wire.h"

#define FL_FOREVER INT64_MAX
#define FL_DEFAULT_TIMEOUT_MS 10000
#define FL_ENDPOINT_MAX 256

/* One socket and the ZeroMQ context it lives in: either a context of
 * its own (one I/O thread) or one borrowed from another fl_sock of the
 * same object.  Owned by the object that embeds it; closed by
 * fl_sock_close(), sockets that borrow a context before its owner. */
typedef struct fl_sock {
	void *ctx;
	void *sock;
	int own_ctx;
	int rcvtimeo;       /* the ZMQ_RCVTIMEO set on sock (fl_recv's) */
	char endpoint[FL_ENDPOINT_MAX];
} fl_sock;

/* Socket options applied before connecting. */
typedef struct fl_sockopts {
	int sndhwm;         /* 0: ZeroMQ default */
	int rcvhwm;         /* 0: ZeroMQ default */
	int immediate;      /* ZMQ_IMMEDIATE: 1 = queue only on a live connection */
	int subscribe_all;  /* SUB only: subscribe to every message */
} fl_sockopts;

/*
 * Create a socket of `type` in ctx (NULL: in a new context of one I/O
 * thread, owned by *s), apply `o`, set ZMQ_LINGER 0 and connect to
 * `endpoint` (connection completes in the background).  Returns
 * FUNNEL_OK, FUNNEL_EINVAL (bad endpoint), FUNNEL_ENOMEM or
 * FUNNEL_ETRANSPORT; on failure nothing is left open and *s is zeroed.
 */
int fl_sock_open(fl_sock *s, void *ctx, int type, const char *endpoint, const fl_sockopts *o);

/* Close the socket, and terminate the context if *s owns it.  Safe on a
 * zeroed or already closed fl_sock. */
void fl_sock_close(fl_sock *s);

/* Monotonic clock in milliseconds. */
int64_t fl_now_ms(void);

/* now + timeout_ms, or FL_FOREVER when timeout_ms < 0. */
int64_t fl_deadline(int timeout_ms);

/* Milliseconds left until deadline for zmq_poll: -1 when FL_FOREVER,
 * 0 when passed. */
long fl_left_ms(int64_t deadline);

/*
 * Wait until `sock` has any of `events` (ZMQ_POLLIN, ZMQ_POLLOUT) or the
 * deadline passes.  Returns the events that are ready (> 0), 0 on
 * timeout, -1 on a ZeroMQ error (errno set).  EINTR is retried.
 */
int fl_poll1(void *sock, short events, int64_t deadline);

/*
 * Send one frame of len bytes (copied by ZeroMQ), waiting for room or a
 * connection until deadline.  Returns FUNNEL_OK, FUNNEL_ETIMEDOUT or
 * FUNNEL_ETRANSPORT, with *ei filled on failure.
 */
int fl_send(fl_sock *s, const void *buf, size_t len, int64_t deadline, funnel_error_info *ei);

/*
 * Receive one frame into msg (an initialised zmq_msg_t, replaced) before
 * deadline, waiting inside the receive: it sets the socket's
 * ZMQ_RCVTIMEO (other receives on an fl_sock use ZMQ_DONTWAIT).  Returns
 * FUNNEL_OK, FUNNEL_ETIMEDOUT or FUNNEL_ETRANSPORT, with *ei filled on
 * failure.  Never fills *ei on FUNNEL_ETIMEDOUT: the
 * caller knows what it was waiting for and says so.
 */
int fl_recv(fl_sock *s, zmq_msg_t *msg, int64_t deadline, funnel_error_info *ei);

/* Reset *ei to "no error" (code 0, index -1, empty strings). */
void fl_clear_error(funnel_error_info *ei);

/* Fill *ei and return code. */
int fl_set_error(funnel_error_info *ei, int code, int index, const char *field,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Copy a daemon error reply into *ei and return its code.  A code the
 * reply carries that is outside the wire range becomes FUNNEL_EPROTOCOL. */
int fl_reply_error(funnel_error_info *ei, const fp_reply *rep);

/* ---- the NATS JetStream source (natsource.c) ----
 *
 * A subscriber whose opts.source is "nats://..." reads a JetStream
 * stream that funnel-mirror fills, instead of funneld: fl_nats holds
 * that reader, and funnel_subscriber_* hand every call to it.  The
 * contract is the subscriber's (funnel.h): every seq once, in order, no
 * gap; stream sequence == record seq is checked on every message. */
typedef struct fl_nats fl_nats;

/* Parse the source URL (see funnel_sub_opts.source) and keep the
 * options; connects on the first fl_nats_next().  A URL that is not of
 * the documented form is FUNNEL_EINVAL, with the reason, from every
 * fl_nats_next(); only FUNNEL_ENOMEM fails here. */
int fl_nats_open(fl_nats **out, const funnel_sub_opts *o, funnel_error_info *ei);
void fl_nats_close(fl_nats **n);
/* Whether url is a source of the documented form: FUNNEL_OK, or
 * FUNNEL_EINVAL with ei naming the part that is wrong (FUNNEL_ENOMEM). */
int fl_nats_check_url(const char *url, funnel_error_info *ei);
int fl_nats_next(fl_nats *n, int timeout_ms, const uint8_t **rec, size_t *len,
                 funnel_error_info *ei);
uint64_t fl_nats_position(const fl_nats *n);
int fl_nats_live(const fl_nats *n);
void fl_nats_stats(const fl_nats *n, funnel_sub_stats *st);

#endif /* FUNNEL_CLIENTS_LIB_INTERNAL_H */
