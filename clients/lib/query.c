/*
 * clients/lib/query.c - funnel_query: replay pages, status, lead state
 * and hash-chain verification over the query endpoint.
 *
 * Every call is one request and one reply, matched by rid; replies to
 * earlier calls that timed out carry rids no longer awaited and are
 * dropped.  The DEALER uses ZMQ_IMMEDIATE, so a request is only queued
 * on a live connection: while the daemon is away a call waits for it (up
 * to its timeout) instead of leaving requests behind to be answered
 * later for nobody.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "internal.h"
#include "mp.h"
#include "seal.h"

#define ZONE_CHUNK 65536
#define VERIFY_PAGE FP_PAGE_MAX_EVENTS

struct funnel_query {
	fl_sock s;                 /* DEALER connected to the query endpoint */
	int timeout_ms;
	uint64_t next_rid;
	msgpack_sbuffer sb;        /* the request being built */
	msgpack_packer pk;
	msgpack_zone zone;         /* decoded reply; valid until the next call */
	funnel_error_info err;
	/* data keys fetched for funnel_record_unseal(), round-robin; len 0: empty */
	struct {
		char lead[FP_MAX_LEAD_BYTES];
		size_t len;
		uint8_t key[FP_SEAL_KEY_BYTES];
	} keys[FUNNEL_KEY_CACHE];
	unsigned next_key;
};

/*
 * What a page's priv_ points to: the reply frame the records point into
 * and the two arrays of the page, in one allocation:
 *   struct page_buf | recs[n] | lens[n]
 */
struct page_buf {
	zmq_msg_t msg;
};

int
funnel_query_new(funnel_query **out, const char *endpoint, int timeout_ms)
{
	funnel_query *q;
	int rc;
	fl_sockopts o = { .immediate = 1 };

	if (out == NULL)
		return FUNNEL_EINVAL;
	*out = NULL;
	if ((q = calloc(1, sizeof *q)) == NULL)
		return FUNNEL_ENOMEM;
	if (!msgpack_zone_init(&q->zone, ZONE_CHUNK)) {
		free(q);
		return FUNNEL_ENOMEM;
	}
	msgpack_sbuffer_init(&q->sb);
	msgpack_packer_init(&q->pk, &q->sb, msgpack_sbuffer_write);
	q->timeout_ms = timeout_ms > 0 ? timeout_ms : FL_DEFAULT_TIMEOUT_MS;
	q->next_rid = 1;
	fl_clear_error(&q->err);
	rc = fl_sock_open(&q->s, NULL, ZMQ_DEALER, endpoint ? endpoint : FUNNEL_DEFAULT_QUERY, &o);
	if (rc != FUNNEL_OK) {
		funnel_query_destroy(&q);
		return rc;
	}
	*out = q;
	return FUNNEL_OK;
}

void
funnel_query_destroy(funnel_query **qq)
{
	funnel_query *q;

	if (qq == NULL || (q = *qq) == NULL)
		return;
	fl_sock_close(&q->s);
	msgpack_sbuffer_destroy(&q->sb);
	msgpack_zone_destroy(&q->zone);
	sodium_memzero(q->keys, sizeof q->keys);
	free(q);
	*qq = NULL;
}

const funnel_error_info *
funnel_query_error(const funnel_query *q)
{
	return q ? &q->err : NULL;
}

/*
 * Send the request in q->sb (packed with rid) and wait for its reply.
 * On FUNNEL_OK *m holds the reply frame and *rep its decoding (views
 * into *m and q->zone) and the reply is ok:true; a daemon error reply is
 * returned as its code with q->err filled.  *m is an initialised message
 * owned by the caller in every case.
 */
static int
call(funnel_query *q, uint64_t rid, const char *what, zmq_msg_t *m, fp_reply *rep)
{
	int64_t deadline = fl_deadline(q->timeout_ms);
	int rc;

	if ((rc = fl_send(&q->s, q->sb.data, q->sb.size, deadline, &q->err)) != FUNNEL_OK)
		return rc;
	for (;;) {
		rc = fl_recv(&q->s, m, deadline, &q->err);
		if (rc == FUNNEL_ETIMEDOUT)
			return fl_set_error(&q->err, rc, -1, "", "%s: no reply from %s within %d ms",
			                    what, q->s.endpoint, q->timeout_ms);
		if (rc != FUNNEL_OK)
			return rc;
		msgpack_zone_clear(&q->zone);
		if (fp_reply_decode(zmq_msg_data(m), zmq_msg_size(m), &q->zone, rep) != FUNNEL_OK ||
		    rep->rid != rid)
			continue;       /* not a reply, or a late one for an earlier call */
		if (!rep->ok)
			return fl_reply_error(&q->err, rep);
		return FUNNEL_OK;
	}
}

static int
nomem(funnel_query *q)
{
	return fl_set_error(&q->err, FUNNEL_ENOMEM, -1, "", "out of memory");
}

/* ---- replay ---- */

void
funnel_page_release(funnel_page *page)
{
	struct page_buf *pb;

	if (page == NULL)
		return;
	if ((pb = page->priv_) != NULL) {
		zmq_msg_close(&pb->msg);
		free(pb);
	}
	memset(page, 0, sizeof *page);
}

int
funnel_replay_each(funnel_query *q, const funnel_replay_req *req, funnel_record_fn fn, void *ctx)
{
	funnel_replay_req r = *req;
	funnel_page pg;
	msgpack_zone z;
	int rc;

	if (fn == NULL)
		return FUNNEL_EINVAL;
	if (r.from == 0)
		r.from = 1;
	msgpack_zone_init(&z, 4096);
	for (;;) {
		if ((rc = funnel_replay_page(q, &r, &pg)) != FUNNEL_OK)
			break;
		for (size_t i = 0; i < pg.n && rc == FUNNEL_OK; i++) {
			funnel_record rec;
			msgpack_zone_clear(&z);
			if (funnel_record_parse(pg.recs[i], pg.lens[i], &z, &rec) != FUNNEL_OK)
				rc = fl_set_error(&q->err, FUNNEL_EPROTOCOL, -1, "events",
				                  "replay returned a record that does not parse");
			else
				rc = fn(&rec, ctx);
		}
		int end = pg.end;
		r.from = pg.next;
		funnel_page_release(&pg);
		if (rc != FUNNEL_OK || end)
			break;
	}
	msgpack_zone_destroy(&z);
	return rc;
}

/* Byte offset of lens[] in a page_buf holding n records. */
static size_t
lens_offset(size_t n)
{
	size_t off = sizeof(struct page_buf) + n * sizeof(const uint8_t *);
	size_t a = _Alignof(size_t);
	return (off + a - 1) / a * a;
}

/* Move the reply frame *m into a new page. */
static int
page_adopt(funnel_query *q, zmq_msg_t *m, const fp_reply *rep, funnel_page *page)
{
	const msgpack_object *evs;
	struct page_buf *pb;
	uint64_t head, next;
	int end;
	size_t n;

	if (fp_page_decode(rep, &head, &next, &end, &evs) != FUNNEL_OK)
		return fl_set_error(&q->err, FUNNEL_EPROTOCOL, -1, "events",
		                    "replay reply is missing head/next/end/events");
	n = evs->via.array.size;
	if ((pb = malloc(lens_offset(n) + n * sizeof(size_t))) == NULL)
		return nomem(q);
	zmq_msg_init(&pb->msg);
	const uint8_t **recs = (const uint8_t **)(pb + 1);
	size_t *lens = (size_t *)((char *)pb + lens_offset(n));
	/* The bins are views into the frame (msgpack-c references str and
	 * bin bodies in the buffer it unpacks), so they stay valid while
	 * pb->msg lives. */
	for (size_t i = 0; i < n; i++) {
		recs[i] = (const uint8_t *)evs->via.array.ptr[i].via.bin.ptr;
		lens[i] = evs->via.array.ptr[i].via.bin.size;
	}
	zmq_msg_move(&pb->msg, m);
	page->head = head;
	page->next = next;
	page->end = end;
	page->n = n;
	page->recs = recs;
	page->lens = lens;
	page->priv_ = pb;
	return FUNNEL_OK;
}

int
funnel_replay_page(funnel_query *q, const funnel_replay_req *req, funnel_page *page)
{
	zmq_msg_t m;
	fp_reply rep;
	uint64_t rid;
	int rc;

	if (page != NULL)
		memset(page, 0, sizeof *page);
	if (q == NULL)
		return FUNNEL_EINVAL;
	fl_clear_error(&q->err);
	if (req == NULL || page == NULL)
		return fl_set_error(&q->err, FUNNEL_EINVAL, -1, "", "request and page are required");
	if (req->to != 0 && req->from > req->to)
		return fl_set_error(&q->err, FUNNEL_EINVAL, -1, "to",
		                    "from %" PRIu64 " is past to %" PRIu64, req->from, req->to);
	rid = q->next_rid++;
	msgpack_sbuffer_clear(&q->sb);
	if (fp_pack_replay(&q->pk, rid, req) != 0)
		return nomem(q);
	zmq_msg_init(&m);
	rc = call(q, rid, "replay", &m, &rep);
	if (rc == FUNNEL_OK)
		rc = page_adopt(q, &m, &rep, page);
	zmq_msg_close(&m);
	return rc;
}

/* ---- status and lead ---- */

int
funnel_status_get(funnel_query *q, funnel_status *st)
{
	zmq_msg_t m;
	fp_reply rep;
	uint64_t rid;
	int rc;

	if (q == NULL)
		return FUNNEL_EINVAL;
	fl_clear_error(&q->err);
	if (st == NULL)
		return fl_set_error(&q->err, FUNNEL_EINVAL, -1, "", "status out parameter is NULL");
	rid = q->next_rid++;
	msgpack_sbuffer_clear(&q->sb);
	if (fp_pack_simple(&q->pk, rid, "status", NULL) != 0)
		return nomem(q);
	zmq_msg_init(&m);
	rc = call(q, rid, "status", &m, &rep);
	if (rc == FUNNEL_OK && fp_status_decode(&rep, st) != FUNNEL_OK)
		rc = fl_set_error(&q->err, FUNNEL_EPROTOCOL, -1, "head", "status reply has no head");
	zmq_msg_close(&m);
	return rc;
}

int
funnel_lead_get(funnel_query *q, const char *lead, funnel_lead_info *info)
{
	zmq_msg_t m;
	fp_reply rep;
	uint64_t rid;
	int rc;

	if (q == NULL)
		return FUNNEL_EINVAL;
	fl_clear_error(&q->err);
	if (lead == NULL || lead[0] == '\0' || info == NULL)
		return fl_set_error(&q->err, FUNNEL_EINVAL, -1, "lead", "a lead id is required");
	rid = q->next_rid++;
	msgpack_sbuffer_clear(&q->sb);
	if (fp_pack_simple(&q->pk, rid, "lead", lead) != 0)
		return nomem(q);
	zmq_msg_init(&m);
	rc = call(q, rid, "lead", &m, &rep);
	if (rc == FUNNEL_OK && fp_lead_decode(&rep, info) != FUNNEL_OK)
		rc = fl_set_error(&q->err, FUNNEL_EPROTOCOL, -1, "stage",
		                  "lead reply has no stage/version");
	zmq_msg_close(&m);
	return rc;
}

/* ---- personal data ---- */

/* Ask funneld for lead's data key.  1 with key filled, 0 when the lead
 * has none, or a negative funnel_err. */
static int
fetch_key(funnel_query *q, funnel_str lead, uint8_t key[FP_SEAL_KEY_BYTES])
{
	char id[FP_MAX_LEAD_BYTES + 1];
	zmq_msg_t m;
	fp_reply rep;
	int rc, found = 0;

	memcpy(id, lead.ptr, lead.len);
	id[lead.len] = '\0';
	uint64_t rid = q->next_rid++;
	msgpack_sbuffer_clear(&q->sb);
	if (fp_pack_simple(&q->pk, rid, "key", id) != 0)
		return -nomem(q);
	zmq_msg_init(&m);
	rc = call(q, rid, "key", &m, &rep);
	if (rc == FUNNEL_OK) {
		const msgpack_object *k = mp_find(&rep.obj, "key");
		if (k != NULL && k->type == MSGPACK_OBJECT_BIN && k->via.bin.size == FP_SEAL_KEY_BYTES) {
			memcpy(key, k->via.bin.ptr, FP_SEAL_KEY_BYTES);
			found = 1;
		} else if (k == NULL || k->type != MSGPACK_OBJECT_NIL) {
			rc = fl_set_error(&q->err, FUNNEL_EPROTOCOL, -1, "key",
			                  "key reply has no 32-byte key nor nil");
		}
	}
	zmq_msg_close(&m);
	return rc != FUNNEL_OK ? -rc : found;
}

int
funnel_record_unseal(funnel_query *q, funnel_record *r, msgpack_zone *z)
{
	uint8_t key[FP_SEAL_KEY_BYTES];
	int have = 0, cached = -1;

	if (q == NULL || r == NULL || z == NULL)
		return -FUNNEL_EINVAL;
	if (r->data == NULL || r->lead.ptr == NULL || r->lead.len > FP_MAX_LEAD_BYTES ||
	    !fp_seal_any(r->data))
		return 0;
	for (unsigned i = 0; i < FUNNEL_KEY_CACHE; i++) {
		if (q->keys[i].len == r->lead.len && memcmp(q->keys[i].lead, r->lead.ptr, r->lead.len) == 0) {
			cached = (int)i;
			break;
		}
	}
	/* A cached key that no longer opens the record (the lead was erased
	 * and captured again since): ask again. */
	if (cached >= 0 && fp_seal_opens(r->data, q->keys[cached].key, r->lead, z)) {
		memcpy(key, q->keys[cached].key, sizeof key);
		have = 1;
	} else {
		int rc = fetch_key(q, r->lead, key);
		if (rc < 0)
			return rc;
		have = rc;
		unsigned slot = cached >= 0 ? (unsigned)cached : q->next_key++ % FUNNEL_KEY_CACHE;
		if (have) {
			memcpy(q->keys[slot].lead, r->lead.ptr, r->lead.len);
			q->keys[slot].len = r->lead.len;
			memcpy(q->keys[slot].key, key, sizeof key);
		} else if (cached >= 0) {
			sodium_memzero(&q->keys[slot], sizeof q->keys[slot]);
		}
	}
	/* the objects live in z, the caller's: changing them in place is theirs to allow */
	int n = fp_seal_open_all((msgpack_object *)r->data, have ? key : NULL, r->lead, z);
	sodium_memzero(key, sizeof key);
	return n < 0 ? -nomem(q) : n;
}

/* ---- verification ---- */

/* Record an ECHAIN finding in res and q->err. */
static int
chain_broken(funnel_query *q, funnel_verify_result *res, uint64_t seq)
{
	res->bad_seq = seq;
	return fl_set_error(&q->err, FUNNEL_ECHAIN, -1, "", "%s", res->why);
}

/* Read record seq's hash (the anchor of a walk that starts at seq+1). */
static int
read_anchor(funnel_query *q, uint64_t seq, uint8_t hash[FUNNEL_HASH_BYTES])
{
	funnel_replay_req req = { .from = seq, .to = seq, .limit = 1 };
	funnel_page page;
	funnel_record r;
	msgpack_zone z;
	int rc;

	if ((rc = funnel_replay_page(q, &req, &page)) != FUNNEL_OK)
		return rc;
	if (!msgpack_zone_init(&z, 2048)) {
		funnel_page_release(&page);
		return nomem(q);
	}
	if (page.n != 1)
		rc = fl_set_error(&q->err, FUNNEL_ENOTFOUND, -1, "from",
		                  "record %" PRIu64 " (the anchor of the range) is not in the log",
		                  seq);
	else if (funnel_record_parse(page.recs[0], page.lens[0], &z, &r) != FUNNEL_OK || r.seq != seq)
		rc = fl_set_error(&q->err, FUNNEL_EPROTOCOL, -1, "events",
		                  "record %" PRIu64 " (the anchor of the range) does not decode", seq);
	else
		memcpy(hash, r.hash, FUNNEL_HASH_BYTES);
	msgpack_zone_destroy(&z);
	funnel_page_release(&page);
	return rc;
}

int
funnel_verify(funnel_query *q, uint64_t from, uint64_t to, funnel_verify_result *res)
{
	funnel_status st;
	funnel_page page = { 0 };
	uint8_t anchor[FUNNEL_HASH_BYTES] = { 0 };
	uint8_t before_last[FUNNEL_HASH_BYTES];
	fp_chain c;
	uint64_t end;
	int rc;

	if (q == NULL)
		return FUNNEL_EINVAL;
	fl_clear_error(&q->err);
	if (res == NULL)
		return fl_set_error(&q->err, FUNNEL_EINVAL, -1, "", "result out parameter is NULL");
	memset(res, 0, sizeof *res);
	if (from == 0)
		from = 1;
	if (to != 0 && to < from)
		return fl_set_error(&q->err, FUNNEL_EINVAL, -1, "to",
		                    "from %" PRIu64 " is past to %" PRIu64, from, to);
	/* The walk ends at the head as of now, so a log that keeps growing
	 * still gives one answer, and the daemon's own head hash can be
	 * checked against the chain when the walk reaches it. */
	if ((rc = funnel_status_get(q, &st)) != FUNNEL_OK)
		return rc;
	end = (to != 0 && to < st.head) ? to : st.head;
	if (from > st.head) {
		if (from == 1)
			return FUNNEL_OK;       /* empty log: nothing to check */
		return fl_set_error(&q->err, FUNNEL_ENOTFOUND, -1, "from",
		                    "seq %" PRIu64 " is past the head %" PRIu64, from, st.head);
	}
	if (from > 1 && (rc = read_anchor(q, from - 1, anchor)) != FUNNEL_OK)
		return rc;
	fp_chain_init(&c, from, anchor);
	res->last_good = from - 1;
	memcpy(res->head_hash, anchor, FUNNEL_HASH_BYTES);
	memcpy(before_last, anchor, FUNNEL_HASH_BYTES);

	while (c.next_seq <= end) {
		funnel_replay_req req = {
			.from = c.next_seq, .to = end, .limit = VERIFY_PAGE, .max_bytes = FP_PAGE_MAX_BYTES,
		};
		if ((rc = funnel_replay_page(q, &req, &page)) != FUNNEL_OK)
			return rc;
		if (page.n == 0) {
			snprintf(res->why, sizeof res->why,
			         "seq %" PRIu64 ": missing from replay (head %" PRIu64 ")",
			         c.next_seq, page.head);
			rc = page.end ? chain_broken(q, res, c.next_seq)
			              : fl_set_error(&q->err, FUNNEL_EPROTOCOL, -1, "events",
			                             "replay from %" PRIu64 " returned an empty page",
			                             c.next_seq);
			funnel_page_release(&page);
			return rc;
		}
		for (size_t i = 0; i < page.n && c.next_seq <= end; i++) {
			uint64_t seq = c.next_seq;
			memcpy(before_last, c.head, FUNNEL_HASH_BYTES);
			if (fp_chain_step(&c, page.recs[i], page.lens[i], res->why,
			                  sizeof res->why) != FUNNEL_OK) {
				funnel_page_release(&page);
				return chain_broken(q, res, seq);
			}
			res->checked++;
			res->last_good = seq;
			memcpy(res->head_hash, c.head, FUNNEL_HASH_BYTES);
		}
		funnel_page_release(&page);
	}

	/* The daemon keeps the head hash in its meta table; a tail rewritten
	 * with recomputed hashes shows up as a disagreement here. */
	if (end == st.head && memcmp(c.head, st.head_hash, FUNNEL_HASH_BYTES) != 0) {
		snprintf(res->why, sizeof res->why,
		         "seq %" PRIu64 ": the daemon's head hash differs from the record's hash",
		         end);
		res->last_good = end - 1;
		res->checked--;
		memcpy(res->head_hash, before_last, FUNNEL_HASH_BYTES);
		return chain_broken(q, res, end);
	}
	return FUNNEL_OK;
}
