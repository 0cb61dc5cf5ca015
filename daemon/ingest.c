/*
 * daemon/ingest.c - the write path (see ingest.h for the loop's steps).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zmq.h>

#include "ingest.h"
#include "clock.h"
#include "log.h"
#include "mp.h"
#include "seal.h"
#include "vault.h"
#include "wire.h"
#include "zap.h"

/* A group stops taking requests past either bound; a request is never
 * split.  The event bound keeps a transaction's dirty pages well under
 * LMDB's limit even with a full request of FP_MAX_BATCH events on top. */
#define GROUP_MAX_REQUESTS 1024
#define GROUP_MAX_EVENTS 4096
#define GROUP_MAX_BYTES (2u << 20)   /* decoded requests held at once; see FP_MAX_REQUEST_BYTES */

/* One request of a group.  ident and body own their frames. */
typedef struct request {
	zmq_msg_t ident;
	int has_delim;            /* a REQ peer: echo the empty delimiter frame */
	zmq_msg_t body;
	fp_request req;           /* decoded into the batch's zone */
	fp_error err;             /* valid when status != FUNNEL_OK */
	funnel_err status;
	size_t first;             /* index of its first event in the batch's event and ack arrays */
	size_t nev;
	size_t bad;               /* the first event the receiver refused (pre), nev when none */
	fp_error pre;             /* why event bad was refused: no lead state needed to know it */
	const fa_principal *who;  /* with --access: the sender (in the batch's acl) */
	int drop;                 /* with --access: a sender the table no longer has; no reply */
} request;

/*
 * A group as the receiver took it off the ingest socket and decoded it.
 * Owned by one thread at a time, handed over on the stage socket: the
 * receiver fills it, the writer stores it and fills in the outcomes
 * (status, err, seqs, dups), the receiver acks and recycles it.
 */
typedef struct batch {
	request reqs[GROUP_MAX_REQUESTS];
	size_t nreqs;
	size_t nevents;
	size_t bytes;
	msgpack_zone zone;        /* decoded requests; cleared when the batch is recycled */
	fp_event *events;         /* per event (below its request's bad): decoded, validated */
	uint64_t *seqs;           /* per event: assigned or original seq */
	uint8_t *dups;            /* per event: 1 when a duplicate */
	msgpack_sbuffer reply;    /* scratch for one reply */
	const fa_table *acl;      /* with --access: the table this group is judged by */
	msgpack_sbuffer recs;     /* the writer's: the group's new records, back to back */
	size_t *rec_end;          /* end offset of each record in recs */
	size_t nrecs;             /* committed records (0 when the group failed) */
	uint64_t head_seq;        /* the head once this batch is committed */
	uint64_t head_leads;      /* ... and the distinct lead ids there */
	uint64_t first_seq;       /* the seq of its first record */
	vault_pre **pre;          /* per event: its pre-sealing (vault.h) or NULL */
	vault_sealer *sealer;     /* the receiver's, for pre; NULL without a vault */
} batch;

/*
 * What a step of storing a group came to: validating an event
 * (validate_event), appending it (append_event), applying a request
 * (apply_request) or storing the whole group (store_group).
 */
typedef enum outcome {
	OUT_OK,          /* done: appended, applied, or the group stored */
	OUT_DUPLICATE,   /* validate_event: this event is stored already (an ack with its seq) */
	OUT_REFUSED,     /* the event (so its request) is refused: r->err says why */
	OUT_REDO_NESTED, /* refused after others of its request went straight into the
	                  * transaction: abort and redo the group with nested transactions */
	OUT_MAP_FULL,    /* the map is full: grow it and redo the group (store_group: at its cap) */
	OUT_FAILED,      /* a storage failure: g->error is the LMDB or errno code */
	OUT_UNFLUSHED,   /* store_group: a checkpoint failed (g->error): the tail is
	                  * lost (the journal has what was acked) and funneld stops */
} outcome;

/* The writer's own state: what it needs while storing a batch. */
typedef struct group {
	batch *b;                 /* the batch being stored (the writer holds it) */
	msgpack_zone cmp_zone;    /* scratch for same_event(): the stored record, parsed */
	msgpack_sbuffer cmp;      /* ... and the new event encoded as that record */
	vault *vault;             /* personal data keys; NULL: data stored as sent */
	int error;                /* the code behind the last OUT_FAILED */
	/* The group before, written to the journal, its flush running while
	 * this one is applied: acked as soon as the flush is done, between
	 * two requests of this one (finish_pending), or after it. */
	batch *pending;
	void *stage;              /* the writer's end of the stage socket */
	int pending_failed;       /* its flush failed (frc) or the stage socket did */
	int frc;
} group;

static int finish_pending(store *s, group *g);

/* The outcome of an LMDB or errno code rc != 0. */
static outcome
failed(group *g, int rc)
{
	if (rc == MDB_MAP_FULL)
		return OUT_MAP_FULL;
	g->error = rc;
	return OUT_FAILED;
}

#define BATCH_EVENTS (GROUP_MAX_EVENTS + FP_MAX_BATCH)

/* The next group must have this many events for the flush of the one
 * before to run beside its apply (on the journal's flusher thread);
 * below it the writer flushes first itself (about 3 us of apply an event
 * against a thread hand-over or two). */
#ifndef OVERLAP_MIN_EVENTS   /* -DOVERLAP_MIN_EVENTS=1: every group overlaps (a test build) */
#define OVERLAP_MIN_EVENTS 64
#endif

/* Writer-side view of the head while a transaction is open. */
typedef struct cursor_state {
	uint64_t seq;             /* next seq to assign */
	uint64_t ts;              /* timestamp for this group */
	uint8_t prev[FUNNEL_HASH_BYTES];
	uint64_t leads;           /* distinct lead ids so far */
	size_t recs_size;
	size_t nrecs;
} cursor_state;


/* Receive one request (all its frames) without waiting.  Returns 1 when
 * one was taken, 0 when none is waiting, -1 on a socket error. */
static int
recv_request(void *sock, request *r)
{
	zmq_msg_init(&r->ident);
	zmq_msg_init(&r->body);
	r->has_delim = 0;
	if (zmq_msg_recv(&r->ident, sock, ZMQ_DONTWAIT) < 0) {
		zmq_msg_close(&r->ident);
		zmq_msg_close(&r->body);
		return errno == EAGAIN ? 0 : -1;
	}
	/* Frames after the routing id: [empty delimiter] body [extra frames ignored] */
	int more = zmq_msg_more(&r->ident);
	int nframes = 0;
	while (more) {
		zmq_msg_t f;
		zmq_msg_init(&f);
		if (zmq_msg_recv(&f, sock, 0) < 0) {
			zmq_msg_close(&f);
			break;
		}
		more = zmq_msg_more(&f);
		if (nframes == 0 && zmq_msg_size(&f) == 0 && more) {
			r->has_delim = 1;
			zmq_msg_close(&f);
			continue;
		}
		if (nframes++ == 0)
			zmq_msg_move(&r->body, &f);   /* releases the empty body first */
		zmq_msg_close(&f);
	}
	return 1;
}

static void
send_reply(void *sock, request *r, const msgpack_sbuffer *body)
{
	/* ROUTER drops a reply to a peer that went away: nothing to handle. */
	zmq_msg_send(&r->ident, sock, ZMQ_SNDMORE);
	if (r->has_delim)
		zmq_send(sock, "", 0, ZMQ_SNDMORE);
	zmq_send(sock, body->data, body->size, 0);
}

static void
reply_error(void *sock, batch *b, request *r, const fp_error *err)
{
	msgpack_packer pk;
	b->reply.size = 0;
	msgpack_packer_init(&pk, &b->reply, msgpack_sbuffer_write);
	fp_pack_error(&pk, r->req.rid, err);
	send_reply(sock, r, &b->reply);
}

static int
str_eq(funnel_str a, funnel_str b)
{
	return (a.ptr == NULL) == (b.ptr == NULL) && a.len == b.len &&
	       (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/*
 * An event whose id is already stored, at seq orig: the same event sent
 * again (OUT_DUPLICATE, acknowledged with orig) or another event under a
 * reused id (OUT_REFUSED: r->err is EIDCONFLICT carrying orig), or
 * OUT_FAILED.
 * Called only when the id is found, so a new id pays nothing for it.
 *
 * The same event is the same record: ev, stamped with the stored
 * record's seq, ts, stage, version and prev, encodes to exactly the
 * stored bytes.  So type, lead, occurred_at, cause and data (in its
 * stored form: the same keys in the same order with the same values;
 * how wide an integer was sent does not matter) must all be equal.
 * expected_version (a condition, not stored) and the request's rid are
 * transport, not content, and are not compared (PROTOCOL.md §6).
 */
static outcome
same_event(store_wtxn *w, group *g, request *r, fp_event *ev, uint64_t orig)
{
	MDB_val v;
	funnel_record rec;
	uint8_t hash[FUNNEL_HASH_BYTES];
	int rc = store_record_find(w, orig, &v);

	if (rc != 0)   /* MDB_NOTFOUND: idem names a seq the log lacks */
		return failed(g, rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc);
	msgpack_zone_clear(&g->cmp_zone);
	if (funnel_record_parse(v.mv_data, v.mv_size, &g->cmp_zone, &rec) != FUNNEL_OK)
		return failed(g, MDB_CORRUPTED);
	int stage = rec.stage.ptr ? fp_stage_parse(rec.stage.ptr, rec.stage.len) : FP_STAGE_NONE;
	fp_stamp st = {
		.seq = rec.seq, .ts = rec.ts, .producer = rec.producer,
		.has_lead_state = ev->lead.ptr != NULL, .stage = stage < 0 ? FP_STAGE_NONE : stage,
		.version = rec.version, .prev = rec.prev,
	};
	fp_event_data_bytes(ev, zmq_msg_data(&r->body), zmq_msg_size(&r->body));
	/* occurred_at is not content (PROTOCOL.md §6): a producer that stamps
	 * it when it sends (a form gateway retrying after a restart) resends
	 * the same event; the stored record keeps the first one's. ev is not
	 * stored after this call (a duplicate or a refusal), so it may change. */
	ev->has_occurred_at = rec.has_occurred_at;
	ev->occurred_at = rec.occurred_at;
	/* seal as the stored record was sealed (vault.h): the same event, the
	 * same bytes.  Once the lead's key is gone its personal values cannot
	 * be compared: the rest of the event must match (PROTOCOL.md §21). */
	int unknowable = 0;
	if (g->vault != NULL && rec.data != NULL) {
		int vr = vault_reseal_event(g->vault, ev, rec.data);
		if (vr < 0)
			return failed(g, ENOMEM);
		unknowable = vr == 1 && fp_seal_any(rec.data);
	}
	g->cmp.size = 0;
	funnel_err ee = fp_record_encode(&g->cmp, ev, &st, hash);
	if (ee == FUNNEL_ENOMEM)
		return failed(g, ENOMEM);
	if (ee == FUNNEL_OK && g->cmp.size == v.mv_size && memcmp(g->cmp.data, v.mv_data, v.mv_size) == 0)
		return OUT_DUPLICATE;
	const char *what = !str_eq(rec.type, ev->type) ? "type"
	                 : !str_eq(rec.lead, ev->lead) ? "lead"
	                 : rec.has_cause != ev->has_cause || rec.cause != ev->cause ? "cause"
	                 : "data";
	if (unknowable && strcmp(what, "data") == 0)
		return OUT_DUPLICATE;
	fp_error_set(&r->err, FUNNEL_EIDCONFLICT, "id",
	             "id '%.*s' is already used by seq %" PRIu64 " (%.*s%s%.*s%s) and this event "
	             "differs in %s: an id names one event forever, give this one its own id",
	             (int)(ev->id.len > 64 ? 64 : ev->id.len), ev->id.ptr, orig, (int)rec.type.len,
	             rec.type.ptr, rec.lead.ptr ? " for lead '" : "",
	             (int)(rec.lead.len > 64 ? 64 : rec.lead.len), rec.lead.ptr ? rec.lead.ptr : "",
	             rec.lead.ptr ? "'" : "", what);
	r->err.seq = orig;
	return OUT_REFUSED;
}

/*
 * Refuse an event that passed the idempotency check: its id, which
 * validate_event() claimed there (store_idem_claim), is taken back first,
 * so it stays free for the event sent again.  The idem cursor is still on
 * the claim: nothing between the claim and here uses it.
 */
static outcome
refuse_claimed(store_wtxn *w, group *g, const fp_event *ev)
{
	int rc = ev->id.ptr != NULL ? store_idem_unclaim(w) : 0;
	return rc != 0 ? failed(g, rc) : OUT_REFUSED;
}

/*
 * Validate event i of request r against the log as w sees it: what the
 * receiver found (decode_events), the idempotency key, the lead's state.
 * ev is the writer's copy of the event (sealing and same_event() change
 * it, and a redone group starts over from the receiver's).  Returns
 * OUT_OK with *lead the lead's state after the event (zeroed for an event
 * without a lead; cs->leads counts a new lead), its id claimed for
 * cs->seq, and *found set when the lead had a state (w's leads cursor is
 * on it: store_append's state_at_cursor); OUT_DUPLICATE (the seq is in
 * the batch's seqs), OUT_REFUSED (r->err filled, no claim left), or a
 * failure.
 */
static outcome
validate_event(store_wtxn *w, group *g, cursor_state *cs, request *r, size_t i, fp_event *ev,
               store_lead *lead, int *found)
{
	size_t ack = r->first + i;
	fp_error *err = &r->err;
	fp_stage to;
	int rc;

	*found = 0;
	if (i == r->bad) {
		*err = r->pre;
		return OUT_REFUSED;
	}
	memset(lead, 0, sizeof *lead);
	if (ev->has_cause && ev->cause >= cs->seq) {
		/* a cause names a record already in the log, never this one or a
		 * later one (checked before the id is claimed: nothing to take back) */
		fp_error_set(err, FUNNEL_EVALUE, "cause", "cause %" PRIu64 " is not an earlier record: "
		             "this event would be seq %" PRIu64, ev->cause, cs->seq);
		return OUT_REFUSED;
	}
	if (ev->id.ptr != NULL) {
		uint64_t orig;
		rc = store_idem_claim(w, ev->id.ptr, ev->id.len, cs->seq, &orig);
		if (rc == MDB_KEYEXIST) {
			outcome o = same_event(w, g, r, ev, orig);
			if (o == OUT_DUPLICATE) {
				g->b->seqs[ack] = orig;
				g->b->dups[ack] = 1;
			}
			return o;   /* OUT_REFUSED: EIDCONFLICT */
		}
		if (rc != 0)
			return failed(g, rc);
		/* the id now names cs->seq: taken back if the event is refused,
		 * here or in append_event (refuse_claimed) */
	}
	if (ev->lead.ptr == NULL)
		return OUT_OK;
	rc = store_lead_find(w, ev->lead.ptr, ev->lead.len, lead);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return failed(g, rc);
	*found = rc == 0;   /* the leads cursor is on its state (store_append) */
	if (ev->has_expected_version && ev->expected_version != lead->version) {
		fp_error_set(err, FUNNEL_EVERSION, "expected_version",
		             "expected version %" PRIu64 ", lead '%.*s' is at version %" PRIu64,
		             ev->expected_version, (int)ev->lead.len, ev->lead.ptr, lead->version);
		return refuse_claimed(w, g, ev);
	}
	funnel_err te = fp_transition(ev->spec, lead->stage, &to);
	if (te == FUNNEL_ENOLEAD) {
		fp_error_set(err, te, "lead", "%s for lead '%.*s', which was never captured",
		             ev->spec->name, (int)ev->lead.len, ev->lead.ptr);
		return refuse_claimed(w, g, ev);
	}
	if (te != FUNNEL_OK) {
		fp_error_set(err, te, "type", "%s is not allowed for lead '%.*s' in stage %s",
		             ev->spec->name, (int)ev->lead.len, ev->lead.ptr, fp_stage_name(lead->stage));
		return refuse_claimed(w, g, ev);
	}
	if (lead->version == 0)
		cs->leads++;   /* the first event that names this lead */
	/* the rule the journal's replay applies too (store.h) */
	store_lead_after(lead, ev->spec, to, lead->version + 1, cs->seq, ev->data);
	return OUT_OK;
}

/*
 * Validate and append event i of request r: OUT_OK (appended, or a
 * duplicate acknowledged), OUT_REFUSED (r->err filled), OUT_MAP_FULL or
 * OUT_FAILED.
 */
static outcome
append_event(store_wtxn *w, group *g, cursor_state *cs, request *r, size_t i)
{
	size_t ack = r->first + i;
	fp_error *err = &r->err;
	store_lead lead;
	uint8_t hash[FUNNEL_HASH_BYTES];
	fp_event ev;
	int rc, found;

	if (i != r->bad)
		ev = g->b->events[ack];   /* decoded and checked by the receiver */
	else
		memset(&ev, 0, sizeof ev);   /* refused by the receiver: validate_event says so */
	outcome o = validate_event(w, g, cs, r, i, &ev, &lead, &found);
	if (o != OUT_OK)
		return o == OUT_DUPLICATE ? OUT_OK : o;

	fp_stamp st = {
		.seq = cs->seq, .ts = cs->ts,
		.producer = { r->who ? r->who->name : NULL, r->who ? strlen(r->who->name) : 0 },
		.has_lead_state = ev.lead.ptr != NULL, .stage = lead.stage, .version = lead.version,
		.prev = cs->prev,
	};
	/* seal: personal values replaced by sealed ones (vault.h) */
	if (g->vault != NULL) {
		funnel_err se = vault_seal_event(g->vault, &ev, i != r->bad ? g->b->pre[ack] : NULL, err);
		if (se == FUNNEL_EVALUE)
			return refuse_claimed(w, g, &ev);
		if (se != FUNNEL_OK)
			return failed(g, ENOMEM);
	}
	funnel_err ee = fp_record_encode(&g->b->recs, &ev, &st, hash);
	if (ee == FUNNEL_ETOOBIG) {
		fp_error_set(err, ee, "data", "event is over %d bytes once stored", FP_MAX_RECORD_BYTES);
		return refuse_claimed(w, g, &ev);
	}
	if (ee != FUNNEL_OK)
		return failed(g, ENOMEM);
	/* the id was claimed in validate_event: no id here */
	rc = store_append(w, cs->seq, g->b->recs.data + cs->recs_size, g->b->recs.size - cs->recs_size,
	                  ev.lead.ptr, ev.lead.len, &lead, NULL, 0, found);
	if (rc != 0)
		return failed(g, rc);
	g->b->rec_end[cs->nrecs++] = g->b->recs.size;
	cs->recs_size = g->b->recs.size;
	g->b->seqs[ack] = cs->seq;
	g->b->dups[ack] = 0;
	memcpy(cs->prev, hash, FUNNEL_HASH_BYTES);
	cs->seq++;
	return OUT_OK;
}

/*
 * Apply one request inside w.  Returns OUT_OK (stored, or refused with
 * r->status set), OUT_REDO_NESTED, or OUT_MAP_FULL / OUT_FAILED, which
 * fail the whole attempt at the group.
 *
 * A request is atomic.  With nested set, a request of several events runs
 * in a nested transaction that a refusal aborts.  Without it (the first
 * attempt at a group) events go straight into w, which spares LMDB a
 * copy of every page the request touches and a merge of its dirty list
 * per request; a refusal after some of the request's events were appended
 * then returns OUT_REDO_NESTED, and the caller aborts w and redoes the
 * group with nested set.  A refusal of the first event needs neither.
 */
static outcome
apply_request(store *s, store_wtxn *w, group *g, cursor_state *cs, request *r, int nested)
{
	cursor_state saved = *cs;
	size_t vmark = g->vault != NULL ? vault_mark(g->vault) : 0;
	store_wtxn child = { NULL, NULL, NULL, NULL };
	int rc;

	if (nested && r->nev > 1 && (rc = store_wtxn_begin(s, w, &child)) != 0)
		return failed(g, rc);
	for (size_t i = 0; i < r->nev; i++) {
		outcome o = append_event(child.txn ? &child : w, g, cs, r, i);
		if (o == OUT_REFUSED) {
			r->err.index = (int)i;
			r->status = r->err.code;
			if (child.txn)
				store_wtxn_abort(&child);
			else if (cs->seq != saved.seq)
				return OUT_REDO_NESTED;
			if (g->vault != NULL)
				vault_rollback(g->vault, vmark);
			g->b->recs.size = saved.recs_size;
			*cs = saved;
			return OUT_OK;
		}
		if (o != OUT_OK) {
			store_wtxn_abort(&child);
			return o;
		}
	}
	if (child.txn && (rc = store_wtxn_commit(&child)) != 0)
		return failed(g, rc);
	r->status = FUNNEL_OK;
	return OUT_OK;
}

/* Void the outcomes of an attempt at the group that was not committed:
 * the requests it refused are judged again. */
static void
forget_outcomes(group *g)
{
	for (size_t i = 0; i < g->b->nreqs; i++) {
		request *r = &g->b->reqs[i];
		if (r->req.op == FP_OP_PUBLISH && r->status != FUNNEL_OK && r->err.index >= 0) {
			r->status = FUNNEL_OK;
			memset(&r->err, 0, sizeof r->err);
			r->err.index = -1;
		}
	}
}

/*
 * Store the group into the tail (store.h): validate and append in a
 * child of the tail transaction, committed into it.  Returns OUT_OK when
 * every request has its outcome in r->status (the stored ones in the
 * tail: g->b->nrecs records, not yet durable: store_group_journal is
 * next), OUT_MAP_FULL when the map is at its cap, OUT_FAILED (g->error)
 * when the whole group failed (nothing stored), or OUT_UNFLUSHED when
 * the checkpoint before a map growth failed (g->error: the writer
 * stops; what was acked is in the journal).
 */
static outcome
store_group(store *s, group *g)
{
	int nested = 0;
	for (;;) {
		store_wtxn w;
		cursor_state cs = { .seq = s->head_seq + 1, .leads = s->head_leads, .recs_size = 0,
		                    .nrecs = 0 };
		uint64_t now = clock_now_ns();
		cs.ts = now > s->head_ts ? now : s->head_ts;
		memcpy(cs.prev, s->head_hash, FUNNEL_HASH_BYTES);
		g->b->recs.size = 0;

		int rc = store_group_begin(s, &w);
		if (rc != 0)
			return failed(g, rc);
		outcome o = OUT_OK;
		for (size_t i = 0; i < g->b->nreqs && o == OUT_OK; i++) {
			request *r = &g->b->reqs[i];
			if (r->req.op != FP_OP_PUBLISH || r->status != FUNNEL_OK)
				continue;
			o = apply_request(s, &w, g, &cs, r, nested);
			/* the group before: acked as soon as its flush is done */
			if (g->pending != NULL && !store_group_flushing(s))
				finish_pending(s, g);   /* a failure: the writer sees pending_failed */
		}
		if (o == OUT_OK && cs.nrecs > 0 &&
		    (rc = store_put_head(s, w.txn, cs.seq - 1, cs.prev, cs.leads)) != 0)
			o = failed(g, rc);
		/* the group's new keys reach the key file before its records the journal */
		if (o == OUT_OK && cs.nrecs > 0 && g->vault != NULL &&
		    (rc = vault_prepare(g->vault, cs.seq - 1)) != 0)
			o = failed(g, rc);
		size_t n = o == OUT_OK ? cs.nrecs : 0;
		if ((rc = store_group_end(s, &w, cs.seq - 1, n, cs.recs_size)) != 0)
			o = failed(g, rc);
		if (g->vault != NULL && (o != OUT_OK || cs.nrecs == 0))
			vault_abort(g->vault);
		switch (o) {
		case OUT_REDO_NESTED:
			nested = 1;
			forget_outcomes(g);
			continue;
		case OUT_MAP_FULL:
			/* Outcomes of this attempt are void: checkpoint the tail (the
			 * map cannot grow under a transaction), grow, redo the group. */
			if ((rc = store_checkpoint(s)) != 0) {
				g->error = rc;
				if (s->broken)
					return OUT_UNFLUSHED;
				return rc == MDB_MAP_FULL ? OUT_MAP_FULL : OUT_FAILED;
			}
			if (store_grow(s) != 0)
				return OUT_MAP_FULL;
			log_info("map full: grew the map to %zu MiB and redid the group", s->map_size >> 20);
			forget_outcomes(g);
			continue;
		case OUT_OK:
			g->b->nrecs = cs.nrecs;
			g->b->first_seq = s->head_seq + 1;
			if (cs.nrecs > 0)
				store_set_head(s, cs.seq - 1, cs.ts, cs.prev, cs.leads);
			return o;
		default:
			return o;   /* OUT_FAILED */
		}
	}
}

/* ---- the receiver: receive, decode and check, ack ----------------------- */

/*
 * Decode request r's events into b->events and check what needs no lead
 * state: the envelope (fp_event_decode), the principal's right to the
 * type, whether the data is already in its stored form.  Stops at the
 * first refused event: r->bad is its index and r->pre its error, which
 * the writer reports when it reaches that event (an earlier event refused
 * for a reason of lead state wins, as when one thread did everything).
 */
static void
decode_events(batch *b, request *r)
{
	r->bad = r->nev;
	for (size_t i = 0; i < r->nev; i++) {
		fp_event *ev = &b->events[r->first + i];
		if (fp_event_decode(&r->req.events->via.array.ptr[i], ev, &r->pre) != FUNNEL_OK) {
			r->bad = i;
			return;
		}
		if (r->who != NULL && !fa_may_publish(r->who, ev->type.ptr, ev->type.len)) {
			fp_error_set(&r->pre, FUNNEL_EFORBIDDEN, "type", "principal '%s' may not publish %.*s",
			             r->who->name, (int)ev->type.len, ev->type.ptr);
			r->bad = i;
			return;
		}
		/* data already in its stored form is copied, not encoded again */
		fp_event_data_bytes(ev, zmq_msg_data(&r->body), zmq_msg_size(&r->body));
		/* its personal values sealed here, beside the writer (vault.h);
		 * out of memory leaves it to the writer */
		if (b->sealer != NULL)
			vault_preseal(b->sealer, ev, &b->zone, &b->pre[r->first + i]);
	}
}

/* Decode a request once and count its events into the batch. */
static void
decode_request(batch *b, request *r)
{
	memset(&r->err, 0, sizeof r->err);
	r->err.index = -1;
	r->who = NULL;
	r->drop = 0;
	r->bad = 0;
	if (b->acl != NULL && (r->who = zap_principal(b->acl, &r->body)) == NULL) {
		/* authenticated under a table that had it, revoked since */
		r->drop = 1;
		r->status = fp_error_set(&r->err, FUNNEL_EFORBIDDEN, "", "revoked");
		r->first = b->nevents;
		r->nev = 0;
		return;
	}
	r->status = fp_request_decode(zmq_msg_data(&r->body), zmq_msg_size(&r->body), &b->zone,
	                              &r->req, &r->err);
	if (r->status == FUNNEL_OK && r->req.op != FP_OP_PUBLISH) {
		r->status = fp_error_set(&r->err, FUNNEL_EOP, "op",
		                         "the ingest endpoint takes only 'publish'; send queries to the query endpoint");
	}
	r->first = b->nevents;
	r->nev = r->status == FUNNEL_OK ? r->req.events->via.array.size : 0;
	if (b->sealer != NULL)   /* without a vault b->pre stays all NULL (batch_new) */
		memset(b->pre + r->first, 0, r->nev * sizeof *b->pre);
	b->nevents += r->nev;
	b->bytes += zmq_msg_size(&r->body);
	decode_events(b, r);
}

static void
reply_all(void *sock, batch *b)
{
	msgpack_packer pk;
	for (size_t i = 0; i < b->nreqs; i++) {
		request *r = &b->reqs[i];
		if (r->drop)
			continue;
		if (r->status != FUNNEL_OK) {
			reply_error(sock, b, r, &r->err);
			continue;
		}
		b->reply.size = 0;
		msgpack_packer_init(&pk, &b->reply, msgpack_sbuffer_write);
		if (fp_pack_ack(&pk, r->req.rid, b->seqs + r->first, b->dups + r->first, r->nev) != 0) {
			fp_error e;
			fp_error_set(&e, FUNNEL_EINTERNAL, "", "out of memory building the ack");
			reply_error(sock, b, r, &e);
			continue;
		}
		send_reply(sock, r, &b->reply);
	}
}

static void
release_requests(batch *b)
{
	for (size_t i = 0; b->sealer != NULL && i < b->nevents; i++)
		vault_pre_forget(b->sealer, b->pre[i]);   /* keys do not outlive the batch */
	for (size_t i = 0; i < b->nreqs; i++) {
		zmq_msg_close(&b->reqs[i].ident);
		zmq_msg_close(&b->reqs[i].body);
	}
	b->nreqs = 0;
	b->nevents = 0;
	b->bytes = 0;
	b->nrecs = 0;
	msgpack_zone_clear(&b->zone);
	zap_release(b->acl);
	b->acl = NULL;
}

/* Every request of b gets ESHUTDOWN: taken, but not stored. */
static void
shut_batch(batch *b)
{
	for (size_t i = 0; i < b->nreqs; i++) {
		request *r = &b->reqs[i];
		if (!r->drop)
			r->status = fp_error_set(&r->err, FUNNEL_ESHUTDOWN, "",
			                         "funneld is shutting down; nothing was stored, retry later");
	}
}

static batch *
batch_new(void)
{
	batch *b = calloc(1, sizeof *b);
	if (b == NULL)
		return NULL;
	b->events = malloc(BATCH_EVENTS * sizeof *b->events);
	b->seqs = malloc(BATCH_EVENTS * sizeof *b->seqs);
	b->dups = malloc(BATCH_EVENTS);
	b->rec_end = malloc(BATCH_EVENTS * sizeof *b->rec_end);
	b->pre = calloc(BATCH_EVENTS, sizeof *b->pre);
	msgpack_sbuffer_init(&b->reply);
	msgpack_sbuffer_init(&b->recs);
	if (b->events == NULL || b->seqs == NULL || b->dups == NULL || b->rec_end == NULL ||
	    b->pre == NULL || !msgpack_zone_init(&b->zone, 64 * 1024)) {
		free(b->pre);
		free(b->events);
		free(b->seqs);
		free(b->dups);
		free(b->rec_end);
		free(b);
		return NULL;
	}
	return b;
}

static void
batch_destroy(batch *b)
{
	if (b == NULL)
		return;
	release_requests(b);
	msgpack_sbuffer_destroy(&b->reply);
	msgpack_sbuffer_destroy(&b->recs);
	msgpack_zone_destroy(&b->zone);
	free(b->rec_end);
	free(b->pre);
	free(b->events);
	free(b->seqs);
	free(b->dups);
	free(b);
}

/*
 * A batch pointer over the stage socket (inproc PAIR); NULL is "stop".
 * The writer asks for work with STAGE_WANT as soon as it took a batch
 * of OVERLAP_MIN_EVENTS or more, else once it holds none but the pending
 * one (and when idle); the receiver answers with the batch it fills once
 * that has a request.  So the next batch is there when the writer is
 * done applying one, and its flush can run beside that next one.  When
 * the writer asks it holds at most two batches (the one it applies and
 * the pending one), and every batch it handed back before is back here
 * (the PAIR keeps order), so the receiver has a spare of NBUFS.
 */
static char stage_tags[1];
#define STAGE_WANT ((batch *)&stage_tags[0])

static int
stage_send(void *stage, batch *b)
{
	return zmq_send(stage, &b, sizeof b, 0) == (int)sizeof b ? 0 : -1;
}

static int
stage_recv(void *stage, batch **b, int flags)
{
	return zmq_recv(stage, b, sizeof *b, flags) == (int)sizeof *b ? 0 : -1;
}

/* The batch's committed records, in seq order. */
static void
publish_all(void *pub, const batch *b)
{
	size_t start = 0;
	for (size_t i = 0; i < b->nrecs; i++) {
		zmq_send(pub, b->recs.data + start, b->rec_end[i] - start, 0);
		start = b->rec_end[i];
	}
}

static void
send_heartbeat(void *pub, uint64_t head_seq)
{
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	mp_pack_key(&pk, "heartbeat");
	msgpack_pack_uint64(&pk, head_seq);
	mp_pack_key(&pk, "ts");
	msgpack_pack_uint64(&pk, clock_now_ns());
	zmq_send(pub, sb.data, sb.size, ZMQ_DONTWAIT);
	msgpack_sbuffer_destroy(&sb);
}

/* Batches: one the writer applies, one whose flush runs (the writer's
 * pending one), one filling here, one on its way back. */
#define NBUFS 4

typedef struct receiver {
	void *sock;               /* the ingest ROUTER: the receiver's alone while it runs */
	void *pub;                /* the PUB socket: the receiver's alone while it runs */
	uint64_t head_seq;        /* the head last published (heartbeats carry it) */
	int heartbeat_ms;
	void *stage;              /* PAIR to the writer */
	batch *bufs[NBUFS];       /* filling here, free here, or with the writer */
	int access;               /* --access given: judge each batch by the current table */
	vault_sealer *sealer;     /* with a vault: the receiver's sealing ahead */
	pthread_t thread;
} receiver;

/*
 * The receiver thread.  It owns the ingest socket: it drains what is
 * waiting into the batch it fills (up to the group bounds; past them it
 * stops reading, so producers feel the writer's pace), decodes each
 * request once, and hands the batch to the writer when the writer asks
 * for one (stage_send).  A batch the writer hands back is stored
 * and durable (or refused as a whole): only then are its replies sent,
 * and then its records published.  Heartbeats go out from here too, so one
 * never announces a head whose records were not yet published.
 * When the writer sends "stop", the receiver waits for the batch the
 * writer may still hold, answers ESHUTDOWN to what it has taken and to
 * what is queued, sends "stop" back and ends.
 */
static void *
receiver_main(void *arg)
{
	receiver *rv = arg;
	batch *fill = rv->bufs[0], *spare[NBUFS];
	batch *want = NULL;       /* the writer's request not yet answered, or NULL */
	int nspare = 0, inflight = 0, stopping = 0;
	uint64_t next_hb = 0;
	sigset_t set;

	/* signals belong to the main thread */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	for (int i = 1; i < NBUFS; i++)
		spare[nspare++] = rv->bufs[i];

	for (;;) {
		if (stopping && inflight == 0)
			break;
		uint64_t now = clock_now_ns();
		if (now >= next_hb) {
			send_heartbeat(rv->pub, rv->head_seq);
			next_hb = now + (uint64_t)rv->heartbeat_ms * 1000000u;
		}
		long wait_ms = (long)((next_hb - now) / 1000000u) + 1;
		int room = !stopping && fill->nreqs < GROUP_MAX_REQUESTS &&
		           fill->nevents < GROUP_MAX_EVENTS && fill->bytes < GROUP_MAX_BYTES;
		zmq_pollitem_t items[2] = { { rv->stage, 0, ZMQ_POLLIN, 0 },
		                            { rv->sock, 0, (short)(room ? ZMQ_POLLIN : 0), 0 } };
		if (zmq_poll(items, 2, wait_ms) < 0) {
			if (errno == EINTR)
				continue;
			log_error("receiver: poll failed: %s", zmq_strerror(errno));
			break;   /* the writer notices: its stage socket gets no more batches */
		}
		batch *done;
		while ((items[0].revents & ZMQ_POLLIN) &&
		       stage_recv(rv->stage, &done, ZMQ_DONTWAIT) == 0) {
			if (done == NULL) {
				stopping = 1;
			} else if (done == STAGE_WANT) {
				want = done;
			} else {
				/* 4. ack, 5. publish: the writer hands a batch back once
				 * it is durable (nrecs 0 when the group failed) */
				reply_all(rv->sock, done);
				publish_all(rv->pub, done);
				if (done->nrecs > 0)
					rv->head_seq = done->head_seq;
				release_requests(done);
				spare[nspare++] = done;
				inflight--;
			}
		}
		if (room && (items[1].revents & ZMQ_POLLIN)) {
			/* 1. receive: drain what is waiting, decode each request once */
			if (fill->nreqs == 0 && fill->acl == NULL && rv->access)
				fill->acl = zap_acquire();
			while (fill->nreqs < GROUP_MAX_REQUESTS && fill->nevents < GROUP_MAX_EVENTS &&
			       fill->bytes < GROUP_MAX_BYTES) {
				request *r = &fill->reqs[fill->nreqs];
				if (recv_request(rv->sock, r) <= 0)
					break;
				fill->nreqs++;
				decode_request(fill, r);
			}
			if (fill->nreqs == 0) {
				zap_release(fill->acl);   /* nothing came: the next batch takes the table afresh */
				fill->acl = NULL;
			}
		}
		/* the writer asked: the batch once it holds a request; the writer
		 * asks only when it holds at most two batches, so a spare is here */
		if (!stopping && want != NULL && fill->nreqs > 0 && stage_send(rv->stage, fill) == 0) {
			inflight++;
			fill = spare[--nspare];
			want = NULL;
		}
	}

	/* Requests taken but not handed over, then those still queued. */
	shut_batch(fill);
	reply_all(rv->sock, fill);
	release_requests(fill);
	for (int drained = 0; drained < 100000; drained++) {
		request *r = &fill->reqs[0];
		if (recv_request(rv->sock, r) <= 0)
			break;
		fill->nreqs = 1;
		fill->acl = rv->access ? zap_acquire() : NULL;
		decode_request(fill, r);
		shut_batch(fill);
		reply_all(rv->sock, fill);
		release_requests(fill);
	}
	stage_send(rv->stage, NULL);
	return NULL;
}

/* ---- the writer: validate, append, commit, publish ------------------------ */

/*
 * A group whose journal flush (or checkpoint) failed: every request
 * stored in it gets EINTERNAL, as whether its events survive a power
 * loss is unknown (a retry with the same ids after a restart is told
 * which).  Its records are not published.
 */
static void
fail_unflushed(batch *b, int rc)
{
	for (size_t i = 0; i < b->nreqs; i++) {
		request *r = &b->reqs[i];
		if (r->status != FUNNEL_OK || r->req.op != FP_OP_PUBLISH)
			continue;
		r->err.index = -1;
		r->status = fp_error_set(&r->err, FUNNEL_EINTERNAL, "",
		                         "the log could not be flushed (%s): these events may or may not "
		                         "survive a power loss; funneld stops, retry with the same ids "
		                         "once it runs again", rc > 0 ? strerror(rc) : mdb_strerror(rc));
	}
	b->nrecs = 0;
}

/*
 * The whole group b was not stored (rc: why, an LMDB code or errno
 * value): log it, map rc to the reply every request gets, and leave b
 * with no record to make durable (b->nrecs 0).
 */
static void
fail_group(batch *b, int rc, const store *s)
{
	int full = rc != MDB_MAP_FULL && store_full(s, rc);
	log_error("group of %zu requests not stored: %s", b->nreqs,
	          rc > 0 ? strerror(rc) : mdb_strerror(rc));
	for (size_t i = 0; i < b->nreqs; i++) {
		request *r = &b->reqs[i];
		if (r->status != FUNNEL_OK && r->err.index < 0)
			continue;   /* already refused for its own reasons */
		r->err.index = -1;
		if (rc == MDB_MAP_FULL)
			r->status = fp_error_set(&r->err, FUNNEL_ESTORAGE, "",
			                         "the log is full (map at its cap of %zu MiB); nothing was stored",
			                         s->map_size >> 20);
		else if (full)
			r->status = fp_error_set(&r->err, FUNNEL_ESTORAGE, "",
			                         "no space left on the log's disk; nothing was stored");
		else
			r->status = fp_error_set(&r->err, FUNNEL_ESTORAGE, "",
			                         "the log could not be written (%s); nothing was stored",
			                         mdb_strerror(rc));
	}
	b->nrecs = 0;
}

/*
 * Where the writer's time goes (and with a master key, how many events
 * sealed ahead it took), printed at its end when the environment
 * has FUNNELD_WRITER_STATS (for measuring the write path; off otherwise:
 * the clock reads cost a few tens of ns per group).
 */
typedef struct wstats {
	int on;
	uint64_t groups, events, reqs, max_events;
	uint64_t wait_ns, apply_ns, flush_ns, ckpt_ns;
} wstats;

static uint64_t
wstats_lap(const wstats *ws, uint64_t *t, uint64_t *acc)
{
	if (!ws->on)
		return 0;
	uint64_t now = clock_now_ns();
	*acc += now - *t;
	*t = now;
	return now;
}

static void
wstats_print(wstats *ws, uint64_t total_ns, const vault *v)
{
	if (!ws->on || ws->groups == 0)
		return;
	double t = (double)total_ns / 1e9;
	char ahead[96] = "";
	if (v != NULL) {
		uint64_t taken, dropped;
		vault_ahead(v, &taken, &dropped);
		snprintf(ahead, sizeof ahead, "; since the start, sealed ahead and taken %" PRIu64
		         ", sealed again %" PRIu64, taken, dropped);
	}
	log_info("writer: %" PRIu64 " groups, %.1f events and %.1f requests a group (max %" PRIu64
	         "); of %.2f s: waiting for a batch %.2f, applying %.2f, journal flush %.2f, "
	         "checkpoints %.2f%s", ws->groups, (double)ws->events / (double)ws->groups,
	         (double)ws->reqs / (double)ws->groups, ws->max_events, t, ws->wait_ns / 1e9,
	         ws->apply_ns / 1e9, ws->flush_ns / 1e9, ws->ckpt_ns / 1e9, ahead);
	*ws = (wstats){ .on = 1 };
}

/*
 * Finish the pending group (g->pending, written to the journal): wait
 * for its flush (store_group_wait: it started at store_group_flush_start,
 * or runs here); once durable raise the durable seq, destroy erased
 * leads' keys, and hand it back to the receiver, which acks and
 * publishes it.  Returns 0 (also when none is pending), or -1 when the
 * writer must stop, now or earlier (g->pending_failed): the flush failed
 * (g->frc its errno; the group is answered EINTERNAL) or the stage socket
 * did (g->frc 0).  g->pending is NULL after.
 */
static int
finish_pending(store *s, group *g)
{
	batch *b = g->pending;
	if (g->pending_failed)
		return -1;
	if (b == NULL)
		return 0;
	g->pending = NULL;
	g->frc = store_group_wait(s);
	if (g->frc != 0) {
		log_error("cannot flush the log: %s; stopping", strerror(g->frc));
		fail_unflushed(b, g->frc);   /* keys.shred stays for the next start */
		stage_send(g->stage, b);
		g->pending_failed = 1;
		return -1;
	}
	store_set_durable(s, b->head_seq, b->head_leads);
	/* erased leads' keys destroyed on disk before any ack */
	int vrc = g->vault != NULL ? vault_finish(g->vault, b->head_seq) : 0;
	if (vrc != 0)
		log_error("erased keys not yet destroyed on disk (%s); funneld finishes "
		          "at its next start (keys.shred)", strerror(vrc));
	/* 4. ack, 5. publish: the receiver does both, in that order */
	if (stage_send(g->stage, b) != 0) {
		log_error("cannot hand a batch back to the receiver: %s", zmq_strerror(errno));
		g->pending_failed = 1;
		return -1;
	}
	return 0;
}

/* Checkpoint (store.h).  Returns -1 when the writer must stop (logged);
 * a checkpoint that failed on a full disk or map is logged and is not
 * such a failure: the tail was rebuilt from the journal. */
static int
checkpoint(store *s)
{
	int rc = store_checkpoint(s);
	if (rc == 0)
		return 0;
	if (s->broken) {
		log_error("cannot checkpoint the log: %s; stopping (the journal keeps what was "
		          "acknowledged)", rc > 0 ? strerror(rc) : mdb_strerror(rc));
		return -1;
	}
	log_warn("cannot checkpoint the log: %s; the journal keeps what was acknowledged, "
	         "retrying in a second", rc > 0 ? strerror(rc) : mdb_strerror(rc));
	return 0;
}

int
ingest_run(void *ctx, store *s, void *sock, void *pub, const config *c,
           volatile sig_atomic_t *stop)
{
	group *g = calloc(1, sizeof *g);
	receiver rv = { .sock = sock, .pub = pub, .head_seq = s->head_seq,
	                .heartbeat_ms = c->heartbeat_ms, .access = c->access[0] != '\0' };
	void *stage = NULL;
	int result = 0, started = 0, receiver_gone = 0, zone_ok = 0;
	char ep[64];

	snprintf(ep, sizeof ep, "inproc://funneld-stage-%p", (void *)g);
	if (g == NULL || !(zone_ok = msgpack_zone_init(&g->cmp_zone, 4096)) ||
	    (rv.bufs[0] = batch_new()) == NULL || (rv.bufs[1] = batch_new()) == NULL ||
	    (rv.bufs[2] = batch_new()) == NULL || (rv.bufs[3] = batch_new()) == NULL) {
		log_error("out of memory starting the writer");
		result = -1;
		goto out;
	}
	msgpack_sbuffer_init(&g->cmp);
	g->vault = s->vault;
	if (s->vault != NULL) {
		if ((rv.sealer = vault_sealer_new(s->vault)) == NULL) {
			log_error("out of memory starting the writer");
			result = -1;
			goto out;
		}
		for (int i = 0; i < NBUFS; i++)
			rv.bufs[i]->sealer = rv.sealer;
	}
	if ((stage = zmq_socket(ctx, ZMQ_PAIR)) == NULL || zmq_bind(stage, ep) != 0 ||
	    (rv.stage = zmq_socket(ctx, ZMQ_PAIR)) == NULL || zmq_connect(rv.stage, ep) != 0 ||
	    pthread_create(&rv.thread, NULL, receiver_main, &rv) != 0) {
		log_error("cannot start the receiver thread: %s", zmq_strerror(errno));
		result = -1;
		goto out;
	}
	started = 1;
	g->stage = stage;

	int asked = 0;   /* a request for work sent, not yet answered */
	/* The group written to the journal and not yet acked: its flush runs
	 * (the flusher thread's) while the writer applies the next group, or
	 * is done here when no next group is waiting.  At most one. */
	uint64_t idle_since = clock_now_ns();
	wstats ws = { .on = getenv("FUNNELD_WRITER_STATS") != NULL };
	uint64_t t_start = clock_now_ns(), t = t_start;
	while (!*stop) {
		if (!asked && stage_send(stage, STAGE_WANT) == 0)
			asked = 1;
		/* idle: wake for the checkpoint the tail is due (store.h); with a
		 * group pending, only look whether the next one is there */
		int wait_ms = g->pending != NULL ? 0
		            : s->tail.txn != NULL ? (int)(STORE_IDLE_NS / 1000000u) : 1000;
		zmq_pollitem_t item = { stage, 0, ZMQ_POLLIN, 0 };
		int n = zmq_poll(&item, 1, wait_ms);   /* a signal interrupts it: *stop is seen */
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_error("poll on the stage socket failed: %s", zmq_strerror(errno));
			result = -1;
			break;
		}
		if (n == 0 && g->pending != NULL) {
			/* nothing to apply meanwhile: flush here, then ack */
			wstats_lap(&ws, &t, &ws.wait_ns);
			if (finish_pending(s, g) != 0) {
				result = -1;
				break;
			}
			wstats_lap(&ws, &t, &ws.flush_ns);
			continue;
		}
		if (n == 0) {
			wstats_lap(&ws, &t, &ws.wait_ns);
			uint64_t now = clock_now_ns();
			if (store_checkpoint_due(s, now, now - idle_since) && checkpoint(s) != 0) {
				result = -1;
				break;
			}
			wstats_lap(&ws, &t, &ws.ckpt_ns);
			continue;
		}

		/* 1. the receiver's batch: received, decoded, checked */
		if (stage_recv(stage, &g->b, 0) != 0)
			continue;
		wstats_lap(&ws, &t, &ws.wait_ns);
		asked = 0;
		/* a large group: ask for the next one now, so it fills and comes
		 * while this one is applied, and this one's flush runs beside
		 * the next's apply; a small one asks once it is handed back or
		 * pending (a lone event should not wake the receiver twice) */
		if (g->b != NULL && g->b->nevents >= OVERLAP_MIN_EVENTS &&
		    stage_send(stage, STAGE_WANT) == 0)
			asked = 1;
		if (g->b == NULL) {
			log_error("the receiver thread stopped");
			receiver_gone = 1;
			result = -1;
			break;
		}
		if (g->pending != NULL) {
			if (g->b->nevents >= OVERLAP_MIN_EVENTS &&
			    (g->vault == NULL || !vault_finishing(g->vault))) {
				store_group_flush_start(s);   /* 3. of the group before, beside 2. of this one */
			} else if (finish_pending(s, g) != 0) {
				/* a small group: the flush here costs no thread hand-over
				 * (a loaded machine may be slow to run the flusher) and
				 * would overlap little.  A group that erased keys destroys
				 * them before the next group is applied (vault.h) */
				shut_batch(g->b);
				stage_send(stage, g->b);
				g->b = NULL;
				result = -1;
				break;
			}
		}
		outcome o;
	apply:
		g->b->nrecs = 0;
		/* 2. validate, append into the tail */
		o = store_group(s, g);
		batch *b = g->b;
		g->b = NULL;
		wstats_lap(&ws, &t, &ws.apply_ns);
		ws.groups++;
		ws.events += b->nevents;
		ws.reqs += b->nreqs;
		if (b->nevents > ws.max_events)
			ws.max_events = b->nevents;
		/* 4. the group before is acked (once durable) before this one */
		if (finish_pending(s, g) != 0) {
			/* this group's records are in the tail only, behind a failed
			 * flush: whatever it came to, its fate is as unknown */
			if (o == OUT_OK && b->nrecs > 0 && g->vault != NULL)
				vault_abort(g->vault);
			fail_unflushed(b, g->frc ? g->frc : EIO);
			stage_send(stage, b);
			result = -1;
			break;
		}
		if (o == OUT_UNFLUSHED) {
			fail_unflushed(b, g->error);
			stage_send(stage, b);
			result = -1;
			break;
		}
		if (o != OUT_OK)
			fail_group(b, o == OUT_MAP_FULL ? MDB_MAP_FULL : g->error, s);
		b->head_seq = s->head_seq;
		b->head_leads = s->head_leads;
		/* 3. durable: the journal's append; its flush (store.h) runs while
		 * the next group is applied, or here when none is waiting */
		if (b->nrecs > 0) {
			int rc = store_group_journal(s, b->first_seq, b->nrecs, b->recs.data, b->rec_end);
			if (rc == STORE_REDO) {
				/* the checkpoint that was to take it grew the map and
				 * rebuilt the tail without it: apply it again */
				if (g->vault != NULL)
					vault_abort(g->vault);
				g->b = b;
				forget_outcomes(g);
				goto apply;
			}
			if (rc != 0 && !s->broken) {
				/* its entry did not fit, and the checkpoint that was to
				 * take it failed on a full disk or map: the tail was
				 * rebuilt from the journal without it (store.h) */
				log_error("group of %zu requests not stored: %s", b->nreqs,
				          rc > 0 ? strerror(rc) : mdb_strerror(rc));
				if (g->vault != NULL)
					vault_abort(g->vault);
				fail_group(b, rc, s);
				b->head_seq = s->head_seq;
				b->head_leads = s->head_leads;
			} else if (rc != 0) {
				log_error("cannot write the log's journal: %s; stopping",
				          rc > 0 ? strerror(rc) : mdb_strerror(rc));
				fail_unflushed(b, rc);   /* keys.shred stays for the next start */
				stage_send(stage, b);
				result = -1;
				break;
			}
		}
		if (b->nrecs > 0) {
			g->pending = b;
			/* a small group (or one that erased keys) is flushed here
			 * and acked at once, before the writer asks for more: a
			 * lone event costs what it did before the overlap */
			if ((b->nevents < OVERLAP_MIN_EVENTS ||
			     (g->vault != NULL && vault_finishing(g->vault))) &&
			    finish_pending(s, g) != 0) {
				result = -1;
				break;
			}
		} else if (stage_send(stage, b) != 0) {   /* 4., 5.: nothing to flush */
			log_error("cannot hand a batch back to the receiver: %s", zmq_strerror(errno));
			result = -1;
			break;
		}
		wstats_lap(&ws, &t, &ws.flush_ns);
		idle_since = clock_now_ns();
		if (store_checkpoint_due(s, idle_since, 0)) {
			/* a checkpoint comes after every flush (journal_new_lap) */
			if (finish_pending(s, g) != 0) {
				result = -1;
				break;
			}
			wstats_lap(&ws, &t, &ws.flush_ns);
			if (checkpoint(s) != 0) {
				result = -1;
				break;
			}
		}
		wstats_lap(&ws, &t, &ws.ckpt_ns);
		if (ws.on && t - t_start >= 1000000000u) {   /* a line a second while busy */
			wstats_print(&ws, t - t_start, g->vault);
			t_start = t;
		}
	}
	wstats_print(&ws, clock_now_ns() - t_start, g->vault);
	/* the group still pending is acked, or answered EINTERNAL */
	if (g->pending != NULL) {
		if (receiver_gone)
			store_group_wait(s);
		else if (finish_pending(s, g) != 0)
			result = -1;
	}

	/* Stop the receiver: a batch it sent that was not taken is answered
	 * ESHUTDOWN, then it answers what it holds and what is queued. */
	if (started && !receiver_gone && stage_send(stage, NULL) == 0) {
		for (;;) {
			batch *b;
			if (stage_recv(stage, &b, 0) != 0 || b == NULL)
				break;
			shut_batch(b);
			stage_send(stage, b);
		}
	}
	if (started)
		pthread_join(rv.thread, NULL);
	/* the tail into data.mdb: the journal's lap is not needed at the next start */
	if (result == 0 && checkpoint(s) != 0)
		result = -1;
out:
	if (stage)
		zmq_close(stage);
	if (rv.stage)
		zmq_close(rv.stage);
	for (int i = 0; i < NBUFS; i++)
		batch_destroy(rv.bufs[i]);
	vault_sealer_free(rv.sealer);
	if (g != NULL) {
		msgpack_sbuffer_destroy(&g->cmp);
		if (zone_ok)
			msgpack_zone_destroy(&g->cmp_zone);
		free(g);
	}
	return result;
}
