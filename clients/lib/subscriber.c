/*
 * clients/lib/subscriber.c - funnel_subscriber: every record exactly
 * once, in seq order, with no gap; history first, then live.
 *
 * The ZeroMQ guide's Clone pattern with the log as the snapshot:
 *
 *   SUB  (publish endpoint, subscribed to everything from the start)
 *   DEALER (query endpoint, replay pages)
 *
 *   RESOLVE --(start seq found)--> CATCHUP --(at the head, live)--> LIVE
 *                                     ^   (at the head, not live:     |
 *                                     |    FUNNEL_ENOTFOUND)          |
 *                                     +------- gap on the feed -------+
 *
 * RESOLVE (only with opts.since): one replay {from, since, limit 1}; the
 *   seq of the record it returns (or head+1) becomes `want`.
 * CATCHUP: replay pages over explicit seq ranges [a, a+range-1], range
 *   up to PAGE_EVENTS and sized from the last page so that a range fits
 *   in PAGE_BYTES.  Up to PIPELINE requests are in flight; more than one
 *   only for ranges that start at or below the highest head a page
 *   reported, so a subscriber at the tail asks for one page at a time.
 *   Replies come back in request order on the DEALER.  Records with seq < want are skipped,
 *   seq == want is delivered.  When a page stops short of its range
 *   (page size in bytes, or the range reaches past the head) everything
 *   still in flight is forgotten and paging restarts at want.
 *   Live messages are left in the SUB socket's queue meanwhile: memory
 *   is bounded by the SUB high-water mark and by PIPELINE pages; what
 *   the HWM drops becomes a gap that is paged again later.
 * LIVE: one message at a time from the SUB socket.  seq < want: already
 *   delivered, dropped.  seq == want: delivered.  seq > want, or a
 *   heartbeat whose head >= want: a gap; back to CATCHUP at want.
 *
 * Invariants:
 *  - want is the seq of the next record to deliver; it only grows, by
 *    one per delivered record.
 *  - inflight[0..nreq) are the replay requests whose replies are awaited,
 *    oldest first.  A reply whose rid is not inflight[0].rid is either
 *    stale (a request forgotten after a timeout or a restart of paging)
 *    and dropped, or proof that the replies before it were lost, in which
 *    case paging restarts at want.  rids are never reused.
 *  - The record returned by the last call lives in `page` (replay) or
 *    `live_msg` (feed); neither is released before the next call.
 *  - Every error return leaves the state consistent: the next call
 *    carries on from want.
 */
#include <errno.h>
#include <stdio.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "mp.h"

#define PIPELINE 4
#define PAGE_EVENTS 2000
#define PAGE_BYTES FP_PAGE_MAX_BYTES
#define DEFAULT_RCVHWM 100000
#define ZONE_CHUNK (128 * 1024)

enum mode { M_RESOLVE, M_CATCHUP, M_LIVE };

typedef struct page_req {
	uint64_t rid;
	uint64_t from, to;     /* the seq range asked for (to == 0 for RESOLVE) */
	int64_t sent_ms;
} page_req;

struct funnel_subscriber {
	fl_sock sub;               /* SUB on the publish endpoint; owns the context */
	fl_sock dealer;            /* DEALER on the query endpoint, same context */
	int live;
	int qtimeout_ms;           /* a request unanswered this long is sent again */
	enum mode mode;
	uint64_t want;
	uint64_t from_opt, since;  /* RESOLVE parameters */
	uint64_t next_rid;
	uint64_t known_head;       /* highest head seen in a page or heartbeat */

	page_req inflight[PIPELINE];
	size_t nreq;
	uint64_t next_from;        /* first seq of the next range to ask for */
	uint32_t range;            /* seqs per range, 1..PAGE_EVENTS: sized from the
	                            * last page so a range fits in PAGE_BYTES */

	/* The page being delivered: its frame, decoded events, cursor and
	 * the request it answers. */
	zmq_msg_t page;
	const msgpack_object *ev;  /* the page's bins */
	uint32_t nev, iev;
	int have_page;
	uint64_t page_head, page_next;
	int page_end;
	page_req page_rq;
	uint64_t page_delivered;

	zmq_msg_t live_msg;        /* the last record taken from the feed */

	msgpack_zone zone;         /* the page's decoding */
	msgpack_zone hbzone;       /* heartbeat decoding */
	msgpack_sbuffer sb;
	msgpack_packer pk;
	funnel_sub_stats stats;
	funnel_error_info err;

	fl_nats *nats;             /* opts.source "nats://...": every call goes there */
	int nats_only;             /* the zones were never initialised */
};

int
funnel_subscriber_new(funnel_subscriber **out, const funnel_sub_opts *opts)
{
	funnel_sub_opts dflt = { 0 };
	funnel_subscriber *s;
	fl_sockopts so = { 0 }, qo = { .immediate = 1 };
	int rc;

	if (out == NULL)
		return FUNNEL_EINVAL;
	*out = NULL;
	if (opts == NULL)
		opts = &dflt;
	if ((s = calloc(1, sizeof *s)) == NULL)
		return FUNNEL_ENOMEM;
	if (opts->source != NULL) {
		/* a mirror: none of the ZeroMQ side is used */
		zmq_msg_init(&s->page);
		zmq_msg_init(&s->live_msg);
		fl_clear_error(&s->err);
		msgpack_sbuffer_init(&s->sb);
		s->nats_only = 1;
		rc = fl_nats_open(&s->nats, opts, &s->err);
		if (rc != FUNNEL_OK) {
			funnel_subscriber_destroy(&s);
			return rc;
		}
		*out = s;
		return FUNNEL_OK;
	}
	if (!msgpack_zone_init(&s->zone, ZONE_CHUNK)) {
		free(s);
		return FUNNEL_ENOMEM;
	}
	if (!msgpack_zone_init(&s->hbzone, 256)) {
		msgpack_zone_destroy(&s->zone);
		free(s);
		return FUNNEL_ENOMEM;
	}
	msgpack_sbuffer_init(&s->sb);
	msgpack_packer_init(&s->pk, &s->sb, msgpack_sbuffer_write);
	zmq_msg_init(&s->page);
	zmq_msg_init(&s->live_msg);
	fl_clear_error(&s->err);
	s->live = opts->live;
	s->qtimeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : FL_DEFAULT_TIMEOUT_MS;
	s->next_rid = 1;
	s->from_opt = opts->from > 1 ? opts->from : 1;
	s->since = opts->since;
	s->mode = s->since ? M_RESOLVE : M_CATCHUP;
	s->want = s->since ? 0 : s->from_opt;
	s->next_from = s->want;
	s->range = PAGE_EVENTS;

	/* The feed is subscribed before any page is asked for, so whatever
	 * is committed after the last page is in the SUB queue or shows up
	 * as a gap. */
	so.rcvhwm = opts->rcvhwm > 0 ? opts->rcvhwm : DEFAULT_RCVHWM;
	so.subscribe_all = 1;
	rc = fl_sock_open(&s->sub, NULL, ZMQ_SUB,
	                  opts->publish ? opts->publish : FUNNEL_DEFAULT_PUBLISH, &so);
	if (rc == FUNNEL_OK)
		rc = fl_sock_open(&s->dealer, s->sub.ctx, ZMQ_DEALER,
		                  opts->query ? opts->query : FUNNEL_DEFAULT_QUERY, &qo);
	if (rc != FUNNEL_OK) {
		funnel_subscriber_destroy(&s);
		return rc;
	}
	*out = s;
	return FUNNEL_OK;
}

void
funnel_subscriber_destroy(funnel_subscriber **ss)
{
	funnel_subscriber *s;

	if (ss == NULL || (s = *ss) == NULL)
		return;
	fl_nats_close(&s->nats);
	fl_sock_close(&s->dealer);     /* borrows the context of sub */
	fl_sock_close(&s->sub);
	zmq_msg_close(&s->page);
	zmq_msg_close(&s->live_msg);
	if (!s->nats_only) {
		msgpack_zone_destroy(&s->zone);
		msgpack_zone_destroy(&s->hbzone);
	}
	msgpack_sbuffer_destroy(&s->sb);
	free(s);
	*ss = NULL;
}

uint64_t
funnel_subscriber_position(const funnel_subscriber *s)
{
	if (s && s->nats)
		return fl_nats_position(s->nats);
	return s ? s->want : 0;
}

int
funnel_subscriber_live(const funnel_subscriber *s)
{
	if (s && s->nats)
		return fl_nats_live(s->nats);
	return s != NULL && s->mode == M_LIVE;
}

void
funnel_subscriber_stats(const funnel_subscriber *s, funnel_sub_stats *st)
{
	if (st == NULL)
		return;
	if (s == NULL)
		memset(st, 0, sizeof *st);
	else if (s->nats)
		fl_nats_stats(s->nats, st);
	else
		*st = s->stats;
}

const funnel_error_info *
funnel_subscriber_error(const funnel_subscriber *s)
{
	return s ? &s->err : NULL;
}

/* ---- catch-up: requests ---- */

/* Forget every request in flight; their replies will be dropped as
 * stale.  Paging resumes at want. */
static void
drop_pipeline(funnel_subscriber *s)
{
	s->nreq = 0;
	s->next_from = s->want;
}

static void
release_page(funnel_subscriber *s)
{
	zmq_msg_close(&s->page);
	zmq_msg_init(&s->page);
	s->have_page = 0;
	s->ev = NULL;
	s->nev = s->iev = 0;
}

/*
 * Try to send one replay request for page_req *r (rid assigned here).
 * Returns 1 when sent, 0 when the DEALER cannot take it now (no
 * connection yet), or -1 with s->err filled.
 */
static int
send_request(funnel_subscriber *s, page_req *r)
{
	funnel_replay_req req = { 0 };

	r->rid = s->next_rid;
	if (s->mode == M_RESOLVE) {
		req.from = s->from_opt;
		req.since = s->since;
		req.limit = 1;
	} else {
		req.from = r->from;
		req.to = r->to;
		req.limit = (uint32_t)(r->to - r->from + 1);
		req.max_bytes = PAGE_BYTES;
	}
	msgpack_sbuffer_clear(&s->sb);
	if (fp_pack_replay(&s->pk, r->rid, &req) != 0) {
		fl_set_error(&s->err, FUNNEL_ENOMEM, -1, "", "out of memory");
		return -1;
	}
	if (zmq_send(s->dealer.sock, s->sb.data, s->sb.size, ZMQ_DONTWAIT) < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		fl_set_error(&s->err, FUNNEL_ETRANSPORT, -1, "", "send to %s: %s",
		             s->dealer.endpoint, zmq_strerror(errno));
		return -1;
	}
	s->next_rid++;
	r->sent_ms = fl_now_ms();
	return 1;
}

/*
 * Keep the pipeline full: always one request when none is in flight,
 * more while their ranges start at or below the known head.  Returns 1
 * if everything wanted was sent, 0 if the socket could not take a
 * request (wait for ZMQ_POLLOUT), -1 on error.
 */
static int
top_up(funnel_subscriber *s)
{
	for (;;) {
		page_req r = { 0 };
		int rc;

		if (s->nreq == PIPELINE)
			return 1;
		if (s->mode == M_RESOLVE) {
			if (s->nreq > 0)
				return 1;
		} else {
			if (s->nreq > 0 && s->next_from > s->known_head)
				return 1;
			r.from = s->next_from;
			r.to = s->next_from + s->range - 1;
		}
		if ((rc = send_request(s, &r)) <= 0)
			return rc;
		s->inflight[s->nreq++] = r;
		if (s->mode == M_RESOLVE)
			return 1;
		s->next_from = r.to + 1;
	}
}

/*
 * Wait (until deadline) for the reply to inflight[0] and make it the
 * current page.  Re-sends requests that went unanswered for qtimeout_ms
 * (a restarted daemon never answers what its predecessor received).
 * Returns FUNNEL_OK with a page in place, FUNNEL_ETIMEDOUT, or an error
 * (daemon error replies included) with s->err filled.
 */
static int
next_reply(funnel_subscriber *s, int64_t deadline)
{
	const msgpack_object *evs;
	fp_reply rep;

	for (;;) {
		int sent = top_up(s);
		if (sent < 0)
			return s->err.code;

		int64_t wait_until = deadline;
		short events = 0;
		if (s->nreq > 0) {
			events |= ZMQ_POLLIN;
			int64_t resend_at = s->inflight[0].sent_ms + s->qtimeout_ms;
			if (resend_at < wait_until)
				wait_until = resend_at;
		}
		if (sent == 0)
			events |= ZMQ_POLLOUT;
		int r = fl_poll1(s->dealer.sock, events, wait_until);
		if (r < 0)
			return fl_set_error(&s->err, FUNNEL_ETRANSPORT, -1, "", "poll %s: %s",
			                    s->dealer.endpoint, zmq_strerror(errno));
		if (r == 0) {
			if (deadline != FL_FOREVER && fl_now_ms() >= deadline)
				return fl_set_error(&s->err, FUNNEL_ETIMEDOUT, -1, "",
				                    "catching up at seq %" PRIu64 ": no replay page "
				                    "from %s in time", s->want, s->dealer.endpoint);
			if (s->nreq > 0 && fl_now_ms() >= s->inflight[0].sent_ms + s->qtimeout_ms)
				drop_pipeline(s);       /* unanswered: ask again */
			continue;
		}
		if (!(r & ZMQ_POLLIN))
			continue;               /* writable: top_up() sends next turn */

		if (zmq_msg_recv(&s->page, s->dealer.sock, ZMQ_DONTWAIT) < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			return fl_set_error(&s->err, FUNNEL_ETRANSPORT, -1, "", "receive from %s: %s",
			                    s->dealer.endpoint, zmq_strerror(errno));
		}
		msgpack_zone_clear(&s->zone);
		if (fp_reply_decode(zmq_msg_data(&s->page), zmq_msg_size(&s->page), &s->zone,
		                    &rep) != FUNNEL_OK)
			continue;               /* not a reply: ignore */
		size_t k;
		for (k = 0; k < s->nreq && s->inflight[k].rid != rep.rid; k++)
			;
		if (k == s->nreq)
			continue;               /* stale */
		if (k > 0) {
			/* The replies before it were lost with a connection. */
			drop_pipeline(s);
			continue;
		}
		s->page_rq = s->inflight[0];
		memmove(&s->inflight[0], &s->inflight[1], (s->nreq - 1) * sizeof s->inflight[0]);
		s->nreq--;
		if (!rep.ok) {
			drop_pipeline(s);
			return fl_reply_error(&s->err, &rep);
		}
		if (fp_page_decode(&rep, &s->page_head, &s->page_next, &s->page_end, &evs) !=
		    FUNNEL_OK) {
			drop_pipeline(s);
			return fl_set_error(&s->err, FUNNEL_EPROTOCOL, -1, "events",
			                    "replay reply is missing head/next/end/events");
		}
		s->have_page = 1;
		s->ev = evs->via.array.ptr;
		s->nev = evs->via.array.size;
		if (s->nev > 0) {
			/* Aim at 3/4 of PAGE_BYTES with records of this page's
			 * average size, so pages are rarely cut short. */
			uint64_t avg = zmq_msg_size(&s->page) / s->nev + 1;
			uint64_t fit = (uint64_t)PAGE_BYTES / 4 * 3 / avg;
			s->range = (uint32_t)(fit < 1 ? 1 : fit > PAGE_EVENTS ? PAGE_EVENTS : fit);
		}
		s->iev = 0;
		s->page_delivered = 0;
		if (s->page_head > s->known_head)
			s->known_head = s->page_head;
		return FUNNEL_OK;
	}
}

/* ---- catch-up: pages ---- */

/* RESOLVE: turn the reply to {from, since, limit 1} into want. */
static int
resolve_start(funnel_subscriber *s)
{
	uint64_t seq;

	if (s->nev > 0) {
		const msgpack_object *b = &s->ev[0];
		if (funnel_record_peek(b->via.bin.ptr, b->via.bin.size, &seq, NULL) != FUNNEL_OK)
			return fl_set_error(&s->err, FUNNEL_EPROTOCOL, -1, "events",
			                    "replay returned a record that does not decode");
		s->want = seq;
	} else if (s->page_end) {
		s->want = s->page_head + 1;
	} else {
		/* The page ran out of its scan budget: go on from where it
		 * stopped. */
		if (s->page_next > s->from_opt)
			s->from_opt = s->page_next;
		return FUNNEL_OK;
	}
	s->mode = M_CATCHUP;
	s->next_from = s->want;
	return FUNNEL_OK;
}

/*
 * Deliver the next record of the current page if it is the one wanted.
 * Returns FUNNEL_OK with *rec set, FUNNEL_ENOTFOUND when the page has no
 * more for us, or FUNNEL_EPROTOCOL.
 */
static int
page_take(funnel_subscriber *s, const uint8_t **rec, size_t *len)
{
	while (s->iev < s->nev) {
		const msgpack_object *b = &s->ev[s->iev];
		uint64_t seq;

		if (funnel_record_peek(b->via.bin.ptr, b->via.bin.size, &seq, NULL) != FUNNEL_OK) {
			s->iev = s->nev;
			return fl_set_error(&s->err, FUNNEL_EPROTOCOL, -1, "events",
			                    "replay page holds a record that does not decode "
			                    "(near seq %" PRIu64 ")", s->want);
		}
		if (seq < s->want) {
			s->iev++;
			continue;
		}
		if (seq > s->want) {
			/* The page skipped seqs: leave it, re-page from want. */
			s->iev = s->nev;
			break;
		}
		s->iev++;
		s->want++;
		s->page_delivered++;
		s->stats.from_replay++;
		*rec = (const uint8_t *)b->via.bin.ptr;
		*len = b->via.bin.size;
		return FUNNEL_OK;
	}
	return FUNNEL_ENOTFOUND;
}

/* What to do once the current page is spent. */
enum after { A_CONTINUE, A_AT_HEAD };

static int
page_spent(funnel_subscriber *s, enum after *next)
{
	const page_req *r = &s->page_rq;

	*next = A_CONTINUE;
	if (s->want > r->to)
		return FUNNEL_OK;               /* range done: the pipeline goes on */
	if (s->page_end && s->want > s->page_head) {
		drop_pipeline(s);
		/* want only grows by delivering records that exist, so this
		 * is a start position (a checkpoint) from another log. */
		if (s->want > s->page_head + 1)
			return fl_set_error(&s->err, FUNNEL_EINVAL, -1, "from",
			                    "position %" PRIu64 " is past the log's head %" PRIu64
			                    " + 1: is this checkpoint from another log?",
			                    s->want, s->page_head);
		*next = A_AT_HEAD;
		return FUNNEL_OK;
	}
	/* The page stopped short of its range while records remain (big
	 * records filled PAGE_BYTES): the following ranges would leave a
	 * hole, so start again from want. */
	drop_pipeline(s);
	if (s->page_delivered == 0 && r->from == s->want)
		return fl_set_error(&s->err, FUNNEL_EPROTOCOL, -1, "events",
		                    "replay from %" PRIu64 " returned no record although the "
		                    "head is %" PRIu64, s->want, s->page_head);
	return FUNNEL_OK;
}

/* ---- live ---- */

/*
 * Take one message from the feed.  Returns FUNNEL_OK with *rec set; 1
 * when the message gave the caller nothing (already delivered, a
 * heartbeat, or a gap that switched the mode to CATCHUP); or
 * FUNNEL_ETIMEDOUT / FUNNEL_ETRANSPORT with s->err filled.
 */
static int
live_step(funnel_subscriber *s, int64_t deadline, const uint8_t **rec, size_t *len)
{
	uint64_t seq, head;
	int rc;

	rc = fl_recv(&s->sub, &s->live_msg, deadline, &s->err);
	if (rc == FUNNEL_ETIMEDOUT)
		return fl_set_error(&s->err, rc, -1, "", "no new record at seq %" PRIu64 " in time",
		                    s->want);
	if (rc != FUNNEL_OK)
		return rc;
	const void *data = zmq_msg_data(&s->live_msg);
	size_t size = zmq_msg_size(&s->live_msg);

	if (funnel_record_peek(data, size, &seq, NULL) == FUNNEL_OK) {
		if (seq == s->want) {
			s->want++;
			s->stats.from_live++;
			*rec = data;
			*len = size;
			return FUNNEL_OK;
		}
		if (seq > s->want) {
			/* Dropped by a high-water mark or sent before we were
			 * subscribed: page the hole; this record comes again. */
			s->stats.gaps++;
			if (seq - 1 > s->known_head)
				s->known_head = seq - 1;
			s->mode = M_CATCHUP;
			drop_pipeline(s);
		}
		return 1;
	}

	/* Not a record: a heartbeat {"heartbeat": head, "ts": ns} tells a
	 * subscriber at the tail what it missed.  Anything else is ignored. */
	msgpack_object o;
	size_t off = 0;
	msgpack_zone_clear(&s->hbzone);
	if (msgpack_unpack(data, size, &off, &s->hbzone, &o) == MSGPACK_UNPACK_SUCCESS &&
	    o.type == MSGPACK_OBJECT_MAP && mp_get_u64(&o, "heartbeat", &head, NULL) == FUNNEL_OK) {
		if (head > s->known_head)
			s->known_head = head;
		if (head >= s->want) {
			s->stats.gaps++;
			s->mode = M_CATCHUP;
			drop_pipeline(s);
		}
	}
	return 1;
}

/* ---- the state machine ---- */

int
funnel_subscriber_next(funnel_subscriber *s, int timeout_ms, const uint8_t **rec, size_t *len)
{
	int64_t deadline = fl_deadline(timeout_ms);
	enum after next;
	int rc;

	if (s == NULL)
		return FUNNEL_EINVAL;
	fl_clear_error(&s->err);
	if (rec == NULL || len == NULL)
		return fl_set_error(&s->err, FUNNEL_EINVAL, -1, "", "rec and len are required");
	if (s->nats)
		return fl_nats_next(s->nats, timeout_ms, rec, len, &s->err);
	/* The record returned last time is no longer needed. */
	zmq_msg_close(&s->live_msg);
	zmq_msg_init(&s->live_msg);

	for (;;) {
		if (s->mode == M_LIVE) {
			rc = live_step(s, deadline, rec, len);
			if (rc != 1)
				return rc;
			continue;
		}
		if (s->have_page) {
			if (s->mode == M_RESOLVE) {
				rc = resolve_start(s);
				release_page(s);
				if (rc != FUNNEL_OK)
					return rc;
				continue;
			}
			rc = page_take(s, rec, len);
			if (rc != FUNNEL_ENOTFOUND)
				return rc;
			rc = page_spent(s, &next);
			release_page(s);
			if (rc != FUNNEL_OK)
				return rc;
			if (next == A_AT_HEAD) {
				if (s->live) {
					s->mode = M_LIVE;
					continue;
				}
				return fl_set_error(&s->err, FUNNEL_ENOTFOUND, -1, "",
				                    "reached the head (seq %" PRIu64 ")", s->want - 1);
			}
		}
		if ((rc = next_reply(s, deadline)) != FUNNEL_OK)
			return rc;
	}
}

/* ---- verification over any feed ---- */

int
funnel_verify_feed(funnel_subscriber *s, uint64_t to, funnel_verify_result *res)
{
	const uint8_t *rec;
	size_t len;
	uint8_t prev[FUNNEL_HASH_BYTES];
	msgpack_zone zone;
	int have_prev = 0, rc;

	if (s == NULL || res == NULL)
		return FUNNEL_EINVAL;
	memset(res, 0, sizeof *res);
	if (!msgpack_zone_init(&zone, 4096))
		return FUNNEL_ENOMEM;
	for (;;) {
		if (to != 0 && funnel_subscriber_position(s) > to) {
			rc = FUNNEL_OK;
			break;
		}
		rc = funnel_subscriber_next(s, -1, &rec, &len);
		if (rc == FUNNEL_ENOTFOUND) {
			rc = FUNNEL_OK;        /* the head */
			break;
		}
		if (rc != FUNNEL_OK)
			break;
		funnel_record r;
		uint64_t seq = 0;
		funnel_record_peek(rec, len, &seq, NULL);
		msgpack_zone_clear(&zone);
		if (funnel_record_parse(rec, len, &zone, &r) != FUNNEL_OK) {
			res->bad_seq = seq;
			snprintf(res->why, sizeof res->why, "seq %" PRIu64 ": the record does not parse",
			         seq);
			rc = FUNNEL_ECHAIN;
			break;
		}
		if (!funnel_record_hash_ok(rec, len)) {
			res->bad_seq = seq;
			snprintf(res->why, sizeof res->why, "seq %" PRIu64 ": the stored hash is not the "
			         "hash of the record's bytes (the record was altered)", seq);
			rc = FUNNEL_ECHAIN;
			break;
		}
		static const uint8_t zero[FUNNEL_HASH_BYTES];
		const uint8_t *want_prev = have_prev ? prev : seq == 1 ? zero : NULL;
		if (want_prev && memcmp(r.prev, want_prev, FUNNEL_HASH_BYTES) != 0) {
			res->bad_seq = seq;
			snprintf(res->why, sizeof res->why, "seq %" PRIu64 ": prev is not the hash of "
			         "record %" PRIu64, seq, seq - 1);
			rc = FUNNEL_ECHAIN;
			break;
		}
		if (!have_prev && seq > 1) {
			res->last_good = seq - 1;
			memcpy(res->head_hash, r.prev, FUNNEL_HASH_BYTES);
		}
		memcpy(prev, r.hash, FUNNEL_HASH_BYTES);
		have_prev = 1;
		res->checked++;
		res->last_good = seq;
		memcpy(res->head_hash, r.hash, FUNNEL_HASH_BYTES);
	}
	msgpack_zone_destroy(&zone);
	return rc;
}
