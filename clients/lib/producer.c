/*
 * clients/lib/producer.c - funnel_producer: append events through the
 * ingest endpoint, one request at a time or pipelined.
 *
 * Invariants:
 *  - Request ids come from one counter per producer, starting at 1 and
 *    never reused, so a reply is matched to its request by rid alone.
 *  - A reply is accepted only if its rid is awaited: the rid of the
 *    synchronous call in progress, or one of pend[].  Anything else is
 *    the late answer to a call that timed out or was abandoned, and is
 *    dropped without being decoded further.
 *  - Synchronous calls run only with an empty pipeline (npend == 0 and
 *    no reply waiting in done), so they never have to set aside replies
 *    that belong to pipelined requests.
 *  - funnel_in_flight() == npend + done.len; npend <= window.
 *  - The request buffer (sb), the reply zone and the queues are reused
 *    from call to call: steady-state publishing allocates nothing per
 *    event.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "mp.h"

#define DEFAULT_WINDOW 64
#define MAX_WINDOW 1000
#define SOCK_HWM 1000          /* >= MAX_WINDOW, so sends never wait on the HWM */
#define ZONE_CHUNK 8192

/* A FIFO of received reply frames.  Every slot of v[] is an initialised
 * zmq_msg_t (empty when unused), so moves in and out are plain
 * zmq_msg_move() calls. */
typedef struct msgq {
	zmq_msg_t *v;
	size_t cap, head, len;
} msgq;

struct funnel_producer {
	fl_sock s;                 /* DEALER connected to the ingest endpoint */
	int timeout_ms;
	uint64_t next_rid;
	size_t window;
	uint64_t *pend;            /* rids sent and awaiting a reply, in send order */
	size_t npend, pendcap;
	msgq done;                 /* replies received for pend[] rids, not yet collected */
	msgpack_sbuffer sb;        /* the request being built */
	msgpack_packer pk;
	msgpack_zone zone;         /* reply decoding; cleared before every decode */
	funnel_error_info err;
};

/* ---- reply FIFO ---- */

static int
msgq_push(msgq *q, zmq_msg_t *m)
{
	if (q->len == q->cap) {
		size_t ncap = q->cap ? q->cap * 2 : 16;
		zmq_msg_t *nv = malloc(ncap * sizeof *nv);
		if (nv == NULL)
			return -1;
		for (size_t i = 0; i < ncap; i++)
			zmq_msg_init(&nv[i]);
		for (size_t i = 0; i < q->len; i++)
			zmq_msg_move(&nv[i], &q->v[(q->head + i) % q->cap]);
		for (size_t i = 0; i < q->cap; i++)
			zmq_msg_close(&q->v[i]);
		free(q->v);
		q->v = nv;
		q->cap = ncap;
		q->head = 0;
	}
	zmq_msg_move(&q->v[(q->head + q->len) % q->cap], m);
	q->len++;
	return 0;
}

/* Move the oldest reply into out (an initialised message).  q->len > 0. */
static void
msgq_pop(msgq *q, zmq_msg_t *out)
{
	zmq_msg_move(out, &q->v[q->head]);
	q->head = (q->head + 1) % q->cap;
	q->len--;
}

static void
msgq_free(msgq *q)
{
	for (size_t i = 0; i < q->cap; i++)
		zmq_msg_close(&q->v[i]);
	free(q->v);
	memset(q, 0, sizeof *q);
}

/* ---- awaited rids ---- */

static int
pend_add(funnel_producer *p, uint64_t rid)
{
	if (p->npend == p->pendcap) {
		size_t ncap = p->pendcap ? p->pendcap * 2 : DEFAULT_WINDOW;
		uint64_t *nv = realloc(p->pend, ncap * sizeof *nv);
		if (nv == NULL)
			return -1;
		p->pend = nv;
		p->pendcap = ncap;
	}
	p->pend[p->npend++] = rid;
	return 0;
}

/* Remove rid from pend[]; 1 if it was there.  Replies come back in
 * request order, so the match is almost always pend[0]. */
static int
pend_take(funnel_producer *p, uint64_t rid)
{
	for (size_t i = 0; i < p->npend; i++) {
		if (p->pend[i] == rid) {
			memmove(&p->pend[i], &p->pend[i + 1], (p->npend - i - 1) * sizeof p->pend[0]);
			p->npend--;
			return 1;
		}
	}
	return 0;
}

/* ---- lifecycle ---- */

int
funnel_producer_new(funnel_producer **out, const char *endpoint, int timeout_ms)
{
	funnel_producer *p;
	int rc;
	/* Queue while disconnected (ZMQ_IMMEDIATE 0): a producer may start
	 * before the daemon and rides through a short restart; a request that
	 * is not answered in time is reported as ETIMEDOUT (outcome unknown)
	 * and its late reply is dropped by rid. */
	fl_sockopts o = { .sndhwm = SOCK_HWM, .rcvhwm = SOCK_HWM, .immediate = 0 };

	if (out == NULL)
		return FUNNEL_EINVAL;
	*out = NULL;
	if ((p = calloc(1, sizeof *p)) == NULL)
		return FUNNEL_ENOMEM;
	if (!msgpack_zone_init(&p->zone, ZONE_CHUNK)) {
		free(p);
		return FUNNEL_ENOMEM;
	}
	msgpack_sbuffer_init(&p->sb);
	msgpack_packer_init(&p->pk, &p->sb, msgpack_sbuffer_write);
	p->timeout_ms = timeout_ms > 0 ? timeout_ms : FL_DEFAULT_TIMEOUT_MS;
	p->next_rid = 1;
	p->window = DEFAULT_WINDOW;
	fl_clear_error(&p->err);
	rc = fl_sock_open(&p->s, NULL, ZMQ_DEALER, endpoint ? endpoint : FUNNEL_DEFAULT_INGEST, &o);
	if (rc != FUNNEL_OK)
		goto fail;
	*out = p;
	return FUNNEL_OK;
fail:
	funnel_producer_destroy(&p);
	return rc;
}

void
funnel_producer_destroy(funnel_producer **pp)
{
	funnel_producer *p;

	if (pp == NULL || (p = *pp) == NULL)
		return;
	fl_sock_close(&p->s);
	msgq_free(&p->done);
	free(p->pend);
	msgpack_sbuffer_destroy(&p->sb);
	msgpack_zone_destroy(&p->zone);
	free(p);
	*pp = NULL;
}

/* ---- requests ---- */

/*
 * Bytes the caller hands over are spliced into the request as they are,
 * so they must be exactly `count` complete msgpack values: otherwise the
 * whole frame is not msgpack, the daemon cannot read its rid to answer,
 * and the caller would wait for a timeout instead of getting an error.
 * Whether the values have the right shape is the daemon's to say.
 * Returns the index of the first bad value (count when bytes are left
 * over), or -1 when all are good.
 */
static long
check_msgpack(const void *buf, size_t len, size_t count)
{
	size_t off = 0;

	/* what msgpack_unpack() would accept, without building the objects */
	for (size_t i = 0; i < count; i++) {
		if (mp_check_value(buf, len, &off) != 0)
			return (long)i;
	}
	return off == len ? -1 : (long)count;
}

/* Build {op:"publish", rid, events:[...]} in p->sb from either evs[] or
 * n already-packed envelopes. */
static int
pack_request(funnel_producer *p, uint64_t rid, const funnel_event *evs, const void *packed,
             size_t len, size_t n)
{
	long bad;

	msgpack_sbuffer_clear(&p->sb);
	if (fp_pack_publish_head(&p->pk, rid, n) != 0)
		goto nomem;
	if (evs != NULL) {
		for (size_t i = 0; i < n; i++) {
			if (evs[i].type == NULL)
				return fl_set_error(&p->err, FUNNEL_EINVAL, (int)i, "type",
				                    "event %zu has no type", i);
			if (evs[i].data != NULL &&
			    check_msgpack(evs[i].data, evs[i].data_len, 1) >= 0)
				return fl_set_error(&p->err, FUNNEL_EMALFORMED, (int)i, "data",
				                    "event %zu: data is not one msgpack value of "
				                    "data_len (%zu) bytes", i, evs[i].data_len);
			if (fp_pack_event(&p->pk, &evs[i]) != 0)
				goto nomem;
		}
	} else {
		if ((bad = check_msgpack(packed, len, n)) >= 0)
			return fl_set_error(&p->err, FUNNEL_EMALFORMED, bad < (long)n ? (int)bad : -1,
			                    "events",
			                    bad < (long)n ? "packed event %ld is not valid msgpack"
			                                  : "packed events hold more than %ld values",
			                    bad);
		if (msgpack_sbuffer_write(&p->sb, packed, len) != 0)
			goto nomem;
	}
	if (p->sb.size > FP_MAX_REQUEST_BYTES)
		return fl_set_error(&p->err, FUNNEL_ETOOBIG, -1, "events",
		                    "request is %zu bytes, the limit is %u", p->sb.size,
		                    FP_MAX_REQUEST_BYTES);
	return FUNNEL_OK;
nomem:
	return fl_set_error(&p->err, FUNNEL_ENOMEM, -1, "", "out of memory building a request");
}

/* What every request checks first, sync or pipelined: a producer, 1..10000
 * events given either as structs or as non-empty packed bytes.  Clears the
 * last error. */
static int
begin_request(funnel_producer *p, const funnel_event *evs, const void *packed, size_t len,
              size_t n)
{
	if (p == NULL)
		return FUNNEL_EINVAL;
	fl_clear_error(&p->err);
	if ((evs == NULL && packed == NULL) || n == 0 || n > FP_MAX_BATCH)
		return fl_set_error(&p->err, FUNNEL_EINVAL, -1, "events",
		                    "a request carries 1..%d events, not %zu", FP_MAX_BATCH, n);
	if (evs == NULL && len == 0)
		return fl_set_error(&p->err, FUNNEL_EINVAL, -1, "events", "packed events are empty");
	return FUNNEL_OK;
}

/* Decode a reply frame into p->zone.  FUNNEL_OK with *rep filled, or
 * FUNNEL_EPROTOCOL for a frame that is not a reply at all. */
static int
decode_reply(funnel_producer *p, const zmq_msg_t *m, fp_reply *rep)
{
	msgpack_zone_clear(&p->zone);
	return fp_reply_decode(zmq_msg_data((zmq_msg_t *)m), zmq_msg_size((zmq_msg_t *)m),
	                       &p->zone, rep);
}

/* Turn a decoded reply into acks or an error code.  expect_n > 0 also
 * checks that the daemon acked exactly that many events. */
static int
finish_reply(funnel_producer *p, const fp_reply *rep, size_t expect_n, funnel_ack *acks,
             size_t cap, size_t *n_acks)
{
	size_t n = 0;

	if (!rep->ok)
		return fl_reply_error(&p->err, rep);
	if (fp_ack_decode(rep, acks, acks ? cap : 0, &n) != FUNNEL_OK)
		return fl_set_error(&p->err, FUNNEL_EPROTOCOL, -1, "seqs",
		                    "publish reply %llu has no valid seqs/dup arrays",
		                    (unsigned long long)rep->rid);
	if (expect_n != 0 && n != expect_n)
		return fl_set_error(&p->err, FUNNEL_EPROTOCOL, -1, "seqs",
		                    "publish reply %llu acks %zu events, the request had %zu",
		                    (unsigned long long)rep->rid, n, expect_n);
	if (n_acks != NULL)
		*n_acks = n;
	return FUNNEL_OK;
}

/* Send the request in p->sb and wait for the reply to rid. */
static int
call_sync(funnel_producer *p, uint64_t rid, size_t n, funnel_ack *acks)
{
	int64_t deadline = fl_deadline(p->timeout_ms);
	zmq_msg_t m;
	fp_reply rep;
	int rc;

	if ((rc = fl_send(&p->s, p->sb.data, p->sb.size, deadline, &p->err)) != FUNNEL_OK)
		return rc;
	zmq_msg_init(&m);
	for (;;) {
		rc = fl_recv(&p->s, &m, deadline, &p->err);
		if (rc == FUNNEL_ETIMEDOUT) {
			rc = fl_set_error(&p->err, rc, -1, "",
			                  "no reply from %s within %d ms: outcome unknown, "
			                  "retry with the same idempotency keys",
			                  p->s.endpoint, p->timeout_ms);
			break;
		}
		if (rc != FUNNEL_OK)
			break;
		/* A frame that is not a reply, or the reply to an earlier call
		 * that timed out: not ours, keep waiting. */
		if (decode_reply(p, &m, &rep) != FUNNEL_OK || rep.rid != rid)
			continue;
		rc = finish_reply(p, &rep, n, acks, n, NULL);
		break;
	}
	zmq_msg_close(&m);
	return rc;
}

static int
publish(funnel_producer *p, const funnel_event *evs, const void *packed, size_t len, size_t n,
        funnel_ack *acks)
{
	uint64_t rid;
	int rc;

	if ((rc = begin_request(p, evs, packed, len, n)) != FUNNEL_OK)
		return rc;
	if (p->npend + p->done.len != 0)
		return fl_set_error(&p->err, FUNNEL_EINVAL, -1, "",
		                    "synchronous publish with %zu pipelined requests not yet "
		                    "collected: collect (or abandon) them first",
		                    p->npend + p->done.len);
	rid = p->next_rid++;
	if ((rc = pack_request(p, rid, evs, packed, len, n)) != FUNNEL_OK)
		return rc;
	return call_sync(p, rid, n, acks);
}

int
funnel_publish(funnel_producer *p, const funnel_event *evs, size_t n, funnel_ack *acks)
{
	return publish(p, evs, NULL, 0, n, acks);
}

int
funnel_publish_packed(funnel_producer *p, const void *events, size_t len, size_t n,
                      funnel_ack *acks)
{
	return publish(p, NULL, events, len, n, acks);
}

/* ---- pipelined mode ---- */

/*
 * Receive one frame before deadline; if it answers an awaited rid, move
 * it to the done queue.  Frames for other rids are dropped.  Returns
 * FUNNEL_OK (something was received, maybe dropped), FUNNEL_ETIMEDOUT,
 * FUNNEL_ETRANSPORT or FUNNEL_ENOMEM.
 */
static int
pump(funnel_producer *p, int64_t deadline)
{
	zmq_msg_t m;
	fp_reply rep;
	int rc;

	zmq_msg_init(&m);
	rc = fl_recv(&p->s, &m, deadline, &p->err);
	if (rc == FUNNEL_OK && decode_reply(p, &m, &rep) == FUNNEL_OK && pend_take(p, rep.rid) &&
	    msgq_push(&p->done, &m) != 0) {
		/* The rid is no longer awaited and its reply cannot be kept:
		 * its outcome is lost, say so. */
		rc = fl_set_error(&p->err, FUNNEL_ENOMEM, -1, "",
		                  "out of memory queueing the reply to request %llu",
		                  (unsigned long long)rep.rid);
	}
	zmq_msg_close(&m);
	return rc;
}

static int
send_async(funnel_producer *p, const funnel_event *evs, const void *packed, size_t len, size_t n,
           uint64_t *rid_out)
{
	int64_t deadline;
	uint64_t rid;
	int rc;

	if ((rc = begin_request(p, evs, packed, len, n)) != FUNNEL_OK)
		return rc;
	deadline = fl_deadline(p->timeout_ms);
	while (p->npend >= p->window) {
		rc = pump(p, deadline);
		if (rc == FUNNEL_ETIMEDOUT)
			return fl_set_error(&p->err, rc, -1, "",
			                    "window of %zu requests full and no reply from %s within "
			                    "%d ms; nothing sent", p->window, p->s.endpoint,
			                    p->timeout_ms);
		if (rc != FUNNEL_OK)
			return rc;
	}
	if (pend_add(p, p->next_rid) != 0)
		return fl_set_error(&p->err, FUNNEL_ENOMEM, -1, "", "out of memory");
	rid = p->next_rid++;
	rc = pack_request(p, rid, evs, packed, len, n);
	if (rc == FUNNEL_OK)
		rc = fl_send(&p->s, p->sb.data, p->sb.size, deadline, &p->err);
	if (rc != FUNNEL_OK) {
		(void)pend_take(p, rid);
		return rc;
	}
	if (rid_out != NULL)
		*rid_out = rid;
	return FUNNEL_OK;
}

int
funnel_send(funnel_producer *p, const funnel_event *evs, size_t n, uint64_t *rid)
{
	return send_async(p, evs, NULL, 0, n, rid);
}

int
funnel_send_packed(funnel_producer *p, const void *events, size_t len, size_t n, uint64_t *rid)
{
	return send_async(p, NULL, events, len, n, rid);
}

int
funnel_collect(funnel_producer *p, int timeout_ms, uint64_t *rid, funnel_ack *acks,
               size_t acks_cap, size_t *n_acks)
{
	int64_t deadline;
	zmq_msg_t m;
	fp_reply rep;
	int rc;

	if (p == NULL)
		return FUNNEL_EINVAL;
	fl_clear_error(&p->err);
	if (n_acks != NULL)
		*n_acks = 0;
	if (p->done.len == 0 && p->npend == 0)
		return fl_set_error(&p->err, FUNNEL_EINVAL, -1, "", "no request in flight");
	deadline = fl_deadline(timeout_ms);
	while (p->done.len == 0) {
		rc = pump(p, deadline);
		if (rc == FUNNEL_ETIMEDOUT)
			return fl_set_error(&p->err, rc, -1, "",
			                    "no reply from %s within %d ms (%zu requests in flight)",
			                    p->s.endpoint, timeout_ms, p->npend);
		if (rc != FUNNEL_OK)
			return rc;
	}
	zmq_msg_init(&m);
	msgq_pop(&p->done, &m);
	/* pump() decoded it once already, so this cannot fail to decode. */
	rc = decode_reply(p, &m, &rep);
	if (rc == FUNNEL_OK) {
		if (rid != NULL)
			*rid = rep.rid;
		rc = finish_reply(p, &rep, 0, acks, acks_cap, n_acks);
	} else {
		rc = fl_set_error(&p->err, FUNNEL_EPROTOCOL, -1, "", "reply does not decode");
	}
	zmq_msg_close(&m);
	return rc;
}

size_t
funnel_in_flight(const funnel_producer *p)
{
	return p ? p->npend + p->done.len : 0;
}

void
funnel_set_window(funnel_producer *p, size_t window)
{
	if (p == NULL)
		return;
	if (window < 1)
		window = 1;
	if (window > MAX_WINDOW)
		window = MAX_WINDOW;
	p->window = window;
}

size_t
funnel_abandon(funnel_producer *p)
{
	size_t n;

	if (p == NULL)
		return 0;
	n = p->npend;
	p->npend = 0;
	return n;
}

const funnel_error_info *
funnel_producer_error(const funnel_producer *p)
{
	return p ? &p->err : NULL;
}
