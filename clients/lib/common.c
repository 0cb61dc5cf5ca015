/*
 * clients/lib/common.c - sockets, clocks and error reports shared by the
 * libfunnel objects (contract in internal.h).
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "access.h"
#include "internal.h"

int64_t
fl_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
fl_deadline(int timeout_ms)
{
	if (timeout_ms < 0)
		return FL_FOREVER;
	return fl_now_ms() + timeout_ms;
}

long
fl_left_ms(int64_t deadline)
{
	if (deadline == FL_FOREVER)
		return -1;
	int64_t left = deadline - fl_now_ms();
	return left > 0 ? (long)left : 0;
}

void
fl_clear_error(funnel_error_info *ei)
{
	ei->code = FUNNEL_OK;
	ei->index = -1;
	ei->seq = 0;
	ei->field[0] = '\0';
	ei->message[0] = '\0';
}

int
fl_set_error(funnel_error_info *ei, int code, int index, const char *field, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fp_error_setv(ei, code, index, field, fmt, ap);
	va_end(ap);
	return code;
}

int
fl_reply_error(funnel_error_info *ei, const fp_reply *rep)
{
	int code = (int)rep->err.code;

	/* Only wire codes may come from the daemon; anything else would be
	 * mistaken for a client-side condition such as a timeout. */
	if (code <= 0 || code >= FUNNEL_ETIMEDOUT)
		return fl_set_error(ei, FUNNEL_EPROTOCOL, -1, "code",
		                    "reply carries error code %d, outside the wire range", code);
	*ei = rep->err;   /* one struct: fp_error is funnel_error_info */
	return code;
}

/* The process's CURVE keys (funnel_keys_use).  state: 0 not decided,
 * 1 plain, 2 CURVE, -1 the environment named a bad key file. */
static struct {
	pthread_mutex_t lock;
	int state;
	uint8_t pub[FA_KEY_BYTES], sec[FA_KEY_BYTES], srv[FA_KEY_BYTES];
} keys = { .lock = PTHREAD_MUTEX_INITIALIZER };

static int
keys_load(const char *key_flag, const char *server_flag, funnel_error_info *ei)
{
	funnel_error_info dummy;
	char why[512];
	const char *k = key_flag && key_flag[0] ? key_flag : getenv("FUNNEL_KEY");
	const char *sk = server_flag && server_flag[0] ? server_flag : getenv("FUNNEL_SERVER_KEY");
	if (ei == NULL)
		ei = &dummy;
	if (k != NULL && k[0] == '\0')
		k = NULL;
	if (sk != NULL && sk[0] == '\0')
		sk = NULL;
	if (k == NULL && sk == NULL) {
		keys.state = 1;
		return FUNNEL_OK;
	}
	keys.state = -1;
	if (k == NULL || sk == NULL)
		return fl_set_error(ei, FUNNEL_EINVAL, -1, k ? "server-key" : "key",
		                    "CURVE needs both --key (FUNNEL_KEY) and --server-key (FUNNEL_SERVER_KEY); "
		                    "%s is missing", k ? "--server-key" : "--key");
	if (fa_read_key_file(k, keys.sec, why, sizeof why) != 0 ||
	    fa_public_of(keys.sec, keys.pub) != 0)
		return fl_set_error(ei, FUNNEL_EINVAL, -1, "key", "--key %s", why);
	if (fa_read_key_file(sk, keys.srv, why, sizeof why) != 0)
		return fl_set_error(ei, FUNNEL_EINVAL, -1, "server-key", "--server-key %s", why);
	keys.state = 2;
	return FUNNEL_OK;
}

int
funnel_keys_use(const char *key_file, const char *server_key_file, funnel_error_info *ei)
{
	pthread_mutex_lock(&keys.lock);
	int rc = keys_load(key_file, server_key_file, ei);
	pthread_mutex_unlock(&keys.lock);
	return rc;
}

/* The state, deciding it from the environment on first use. */
static int
keys_state(void)
{
	pthread_mutex_lock(&keys.lock);
	if (keys.state == 0)
		(void)keys_load(NULL, NULL, NULL);
	int st = keys.state;
	pthread_mutex_unlock(&keys.lock);
	return st;
}

int
funnel_keys_on(void)
{
	return keys_state() == 2;
}

static int
set_opt_int(void *sock, int opt, int v)
{
	return zmq_setsockopt(sock, opt, &v, sizeof v);
}

void
fl_sock_close(fl_sock *s)
{
	if (s->sock != NULL) {
		(void)set_opt_int(s->sock, ZMQ_LINGER, 0);
		zmq_close(s->sock);
		s->sock = NULL;
	}
	if (s->ctx != NULL && s->own_ctx) {
		while (zmq_ctx_term(s->ctx) != 0 && errno == EINTR)
			;
	}
	s->ctx = NULL;
	s->own_ctx = 0;
}

int
fl_sock_open(fl_sock *s, void *ctx, int type, const char *endpoint, const fl_sockopts *o)
{
	int rc = FUNNEL_OK;

	memset(s, 0, sizeof *s);
	if (endpoint == NULL || endpoint[0] == '\0' ||
	    strlen(endpoint) >= sizeof s->endpoint)
		return FUNNEL_EINVAL;
	snprintf(s->endpoint, sizeof s->endpoint, "%s", endpoint);
	if (ctx != NULL) {
		s->ctx = ctx;
	} else {
		if ((s->ctx = zmq_ctx_new()) == NULL) {
			rc = errno == ENOMEM ? FUNNEL_ENOMEM : FUNNEL_ETRANSPORT;
			goto fail;
		}
		s->own_ctx = 1;
		if (zmq_ctx_set(s->ctx, ZMQ_IO_THREADS, 1) != 0) {
			rc = FUNNEL_ETRANSPORT;
			goto fail;
		}
	}
	if ((s->sock = zmq_socket(s->ctx, type)) == NULL) {
		rc = errno == ENOMEM ? FUNNEL_ENOMEM : FUNNEL_ETRANSPORT;
		goto fail;
	}
	if (set_opt_int(s->sock, ZMQ_LINGER, 0) != 0 ||
	    (o->sndhwm > 0 && set_opt_int(s->sock, ZMQ_SNDHWM, o->sndhwm) != 0) ||
	    (o->rcvhwm > 0 && set_opt_int(s->sock, ZMQ_RCVHWM, o->rcvhwm) != 0) ||
	    (type != ZMQ_SUB && set_opt_int(s->sock, ZMQ_IMMEDIATE, o->immediate) != 0) ||
	    (o->subscribe_all && zmq_setsockopt(s->sock, ZMQ_SUBSCRIBE, "", 0) != 0)) {
		rc = FUNNEL_ETRANSPORT;
		goto fail;
	}
	int ks = keys_state();
	if (ks < 0) {
		rc = FUNNEL_EINVAL;
		goto fail;
	}
	if (ks == 2 &&
	    (zmq_setsockopt(s->sock, ZMQ_CURVE_SERVERKEY, keys.srv, FA_KEY_BYTES) != 0 ||
	     zmq_setsockopt(s->sock, ZMQ_CURVE_PUBLICKEY, keys.pub, FA_KEY_BYTES) != 0 ||
	     zmq_setsockopt(s->sock, ZMQ_CURVE_SECRETKEY, keys.sec, FA_KEY_BYTES) != 0)) {
		rc = FUNNEL_ETRANSPORT;
		goto fail;
	}
	s->rcvtimeo = -1;   /* ZeroMQ's default: fl_recv sets its own */
	if (zmq_connect(s->sock, endpoint) != 0) {
		rc = (errno == EINVAL || errno == EPROTONOSUPPORT || errno == ENOCOMPATPROTO)
		         ? FUNNEL_EINVAL : FUNNEL_ETRANSPORT;
		goto fail;
	}
	return FUNNEL_OK;
fail:
	fl_sock_close(s);
	memset(s, 0, sizeof *s);
	return rc;
}

int
fl_poll1(void *sock, short events, int64_t deadline)
{
	zmq_pollitem_t it = { .socket = sock, .events = events };

	for (;;) {
		int n = zmq_poll(&it, 1, fl_left_ms(deadline));
		if (n > 0)
			return it.revents;
		if (n == 0)
			return 0;
		if (errno != EINTR)
			return -1;
		if (deadline != FL_FOREVER && fl_now_ms() >= deadline)
			return 0;
	}
}

int
fl_send(fl_sock *s, const void *buf, size_t len, int64_t deadline, funnel_error_info *ei)
{
	for (;;) {
		if (zmq_send(s->sock, buf, len, ZMQ_DONTWAIT) >= 0)
			return FUNNEL_OK;
		if (errno != EAGAIN && errno != EINTR)
			break;
		/* No room, or (ZMQ_IMMEDIATE) no connection yet: wait for one. */
		int r = fl_poll1(s->sock, ZMQ_POLLOUT, deadline);
		if (r == 0)
			return fl_set_error(ei, FUNNEL_ETIMEDOUT, -1, "",
			                    "could not send to %s in time (daemon unreachable?)",
			                    s->endpoint);
		if (r < 0)
			break;
	}
	return fl_set_error(ei, FUNNEL_ETRANSPORT, -1, "", "send to %s: %s", s->endpoint,
	                    zmq_strerror(errno));
}

/*
 * The wait is inside the receive (ZMQ_RCVTIMEO set to what is left of
 * the deadline), not in zmq_poll: libzmq then sleeps on the socket's
 * mailbox at once and takes the message when woken, without zmq_poll's
 * extra rounds of ZMQ_FD/ZMQ_EVENTS checks (each a poll(2) and a
 * getpid(2)).  A reply round trip costs the calling thread 4 system calls
 * fewer, and a deadline already passed is one attempt that does not wait.
 * The timeout is only set when it changed (s->rcvtimeo caches it).
 */
int
fl_recv(fl_sock *s, zmq_msg_t *msg, int64_t deadline, funnel_error_info *ei)
{
	for (;;) {
		long left = fl_left_ms(deadline);
		int timeout = left > INT_MAX ? INT_MAX : (int)left;
		if (timeout != s->rcvtimeo) {
			if (set_opt_int(s->sock, ZMQ_RCVTIMEO, timeout) != 0)
				break;
			s->rcvtimeo = timeout;
		}
		if (zmq_msg_recv(msg, s->sock, 0) >= 0)
			return FUNNEL_OK;
		if (errno == EAGAIN) {
			if (timeout == 0)
				return FUNNEL_ETIMEDOUT;
			continue;   /* the ms rounding: the next turn is the last, at 0 */
		}
		if (errno != EINTR)
			break;
	}
	return fl_set_error(ei, FUNNEL_ETRANSPORT, -1, "", "receive from %s: %s", s->endpoint,
	                    zmq_strerror(errno));
}

const char *
funnel_endpoint(funnel_endpoint_kind kind, const char *flag)
{
	static const char *const env[] = { "FUNNEL_INGEST", "FUNNEL_PUBLISH", "FUNNEL_QUERY" };
	static const char *const dflt[] = { FUNNEL_DEFAULT_INGEST, FUNNEL_DEFAULT_PUBLISH,
	                                    FUNNEL_DEFAULT_QUERY };
	if ((unsigned)kind > FUNNEL_EP_QUERY)
		return NULL;
	if (flag != NULL && flag[0] != '\0')
		return flag;
	const char *e = getenv(env[kind]);
	return e != NULL && e[0] != '\0' ? e : dflt[kind];
}
