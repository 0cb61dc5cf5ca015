/*
 * daemon/ingest.c - the write path (see ingest.h for the loop's steps).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
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

/* One request of the group.  ident and body own their frames. */
typedef struct request {
	zmq_msg_t ident;
	int has_delim;            /* a REQ peer: echo the empty delimiter frame */
	zmq_msg_t body;
	fp_request req;           /* decoded into the group zone */
	fp_error err;             /* valid when status != FUNNEL_OK */
	funnel_err status;
	size_t first;             /* index of its first event in the group's ack arrays */
	size_t nev;
	const fa_principal *who;  /* with --access: the sender (in the group's acl) */
	int drop;                 /* with --access: a sender the table no longer has; no reply */
} request;

typedef struct group {
	request reqs[GROUP_MAX_REQUESTS];
	size_t nreqs;
	size_t nevents;
	size_t bytes;
	msgpack_zone zone;        /* decoded requests; cleared after each group */
	uint64_t *seqs;           /* per event: assigned or original seq */
	uint8_t *dups;            /* per event: 1 when a duplicate */
	size_t ack_cap;
	msgpack_sbuffer recs;     /* the group's new records, back to back */
	size_t *rec_end;          /* end offset of each record in recs */
	size_t nrecs, rec_cap;
	msgpack_sbuffer reply;    /* scratch for one reply */
	msgpack_zone cmp_zone;    /* scratch for same_event(): the stored record, parsed */
	msgpack_sbuffer cmp;      /* ... and the new event encoded as that record */
	const fa_table *acl;      /* with --access: the table this group is judged by */
	vault *vault;             /* personal data keys; NULL: data stored as sent */
} group;

/* Writer-side view of the head while a transaction is open. */
typedef struct cursor_state {
	uint64_t seq;             /* next seq to assign */
	uint64_t ts;              /* timestamp for this group */
	uint8_t prev[FUNNEL_HASH_BYTES];
	uint64_t leads;           /* distinct lead ids so far */
	size_t recs_size;
	size_t nrecs;
} cursor_state;

static int
ensure_capacity(group *g, size_t nevents, size_t nrecs)
{
	if (nevents > g->ack_cap) {
		size_t cap = g->ack_cap ? g->ack_cap : 1024;
		while (cap < nevents)
			cap *= 2;
		uint64_t *s = realloc(g->seqs, cap * sizeof *s);
		if (s == NULL)
			return -1;
		g->seqs = s;
		uint8_t *d = realloc(g->dups, cap);
		if (d == NULL)
			return -1;
		g->dups = d;
		g->ack_cap = cap;
	}
	if (nrecs > g->rec_cap) {
		size_t cap = g->rec_cap ? g->rec_cap : 1024;
		while (cap < nrecs)
			cap *= 2;
		size_t *e = realloc(g->rec_end, cap * sizeof *e);
		if (e == NULL)
			return -1;
		g->rec_end = e;
		g->rec_cap = cap;
	}
	return 0;
}

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
reply_error(void *sock, group *g, request *r, const fp_error *err)
{
	msgpack_packer pk;
	g->reply.size = 0;
	msgpack_packer_init(&pk, &g->reply, msgpack_sbuffer_write);
	fp_pack_error(&pk, r->req.rid, err);
	send_reply(sock, r, &g->reply);
}

/* The owner a lead has after an event. */
static void
next_owner(const fp_event *ev, store_lead *st)
{
	if (ev->spec->type == FP_EV_ASSIGNED) {
		const msgpack_object *o = mp_find(ev->data, "owner");
		/* validated: a non-empty string of at most FP_MAX_OWNER_BYTES */
		memcpy(st->owner, o->via.str.ptr, o->via.str.size);
		st->owner[o->via.str.size] = '\0';
	} else if (ev->spec->type == FP_EV_ERASED) {
		st->owner[0] = '\0';
	}
}

static int
str_eq(funnel_str a, funnel_str b)
{
	return (a.ptr == NULL) == (b.ptr == NULL) && a.len == b.len &&
	       (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/*
 * An event whose id is already stored, at seq orig: the same event sent
 * again (0: a duplicate, acknowledged with orig) or another event under a
 * reused id (1: r->err is EIDCONFLICT carrying orig), or an LMDB error.
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
static int
same_event(store_wtxn *w, group *g, request *r, fp_event *ev, uint64_t orig)
{
	MDB_val v;
	funnel_record rec;
	uint8_t hash[FUNNEL_HASH_BYTES];
	int rc = store_record_find(w, orig, &v);

	if (rc != 0)
		return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc;   /* idem names a seq the log lacks */
	msgpack_zone_clear(&g->cmp_zone);
	if (funnel_record_parse(v.mv_data, v.mv_size, &g->cmp_zone, &rec) != FUNNEL_OK)
		return MDB_CORRUPTED;
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
			return ENOMEM;
		unknowable = vr == 1 && fp_seal_any(rec.data);
	}
	g->cmp.size = 0;
	funnel_err ee = fp_record_encode(&g->cmp, ev, &st, hash);
	if (ee == FUNNEL_ENOMEM)
		return ENOMEM;
	if (ee == FUNNEL_OK && g->cmp.size == v.mv_size && memcmp(g->cmp.data, v.mv_data, v.mv_size) == 0)
		return 0;
	const char *what = !str_eq(rec.type, ev->type) ? "type"
	                 : !str_eq(rec.lead, ev->lead) ? "lead"
	                 : rec.has_cause != ev->has_cause || rec.cause != ev->cause ? "cause"
	                 : "data";
	if (unknowable && strcmp(what, "data") == 0)
		return 0;
	fp_error_set(&r->err, FUNNEL_EIDCONFLICT, "id",
	             "id '%.*s' is already used by seq %" PRIu64 " (%.*s%s%.*s%s) and this event "
	             "differs in %s: an id names one event forever, give this one its own id",
	             (int)(ev->id.len > 64 ? 64 : ev->id.len), ev->id.ptr, orig, (int)rec.type.len,
	             rec.type.ptr, rec.lead.ptr ? " for lead '" : "",
	             (int)(rec.lead.len > 64 ? 64 : rec.lead.len), rec.lead.ptr ? rec.lead.ptr : "",
	             rec.lead.ptr ? "'" : "", what);
	r->err.seq = orig;
	return 1;
}

/*
 * Validate and append event i of request r.  Returns 0 (appended, or a
 * duplicate acknowledged), 1 when the event is refused (r->err filled;
 * an id stored for another event is EIDCONFLICT), or
 * an LMDB error code for a storage failure (MDB_MAP_FULL: grow and redo).
 */
static int
append_event(store_wtxn *w, group *g, cursor_state *cs, request *r, size_t i)
{
	const msgpack_object *o = &r->req.events->via.array.ptr[i];
	size_t ack = r->first + i;
	fp_error *err = &r->err;
	fp_event ev;
	store_lead lead;
	fp_stage to;
	uint8_t hash[FUNNEL_HASH_BYTES];
	int rc;

	memset(&lead, 0, sizeof lead);
	if (fp_event_decode(o, &ev, err) != FUNNEL_OK)
		return 1;
	if (r->who != NULL && !fa_may_publish(r->who, ev.type.ptr, ev.type.len)) {
		fp_error_set(err, FUNNEL_EFORBIDDEN, "type", "principal '%s' may not publish %.*s",
		             r->who->name, (int)ev.type.len, ev.type.ptr);
		return 1;
	}
	if (ev.id.ptr != NULL) {
		uint64_t orig;
		rc = store_idem_find(w, ev.id.ptr, ev.id.len, &orig);
		if (rc == 0) {
			if ((rc = same_event(w, g, r, &ev, orig)) != 0)
				return rc;   /* 1: EIDCONFLICT, the request is refused */
			g->seqs[ack] = orig;
			g->dups[ack] = 1;
			return 0;
		}
		if (rc != MDB_NOTFOUND)
			return rc;
	}
	if (ev.lead.ptr != NULL) {
		rc = store_lead_find(w, ev.lead.ptr, ev.lead.len, &lead);
		if (rc != 0 && rc != MDB_NOTFOUND)
			return rc;
		if (ev.has_expected_version && ev.expected_version != lead.version) {
			fp_error_set(err, FUNNEL_EVERSION, "expected_version",
			             "expected version %" PRIu64 ", lead '%.*s' is at version %" PRIu64,
			             ev.expected_version, (int)ev.lead.len, ev.lead.ptr, lead.version);
			return 1;
		}
		funnel_err te = fp_transition(ev.spec, lead.stage, &to);
		if (te == FUNNEL_ENOLEAD) {
			fp_error_set(err, te, "lead", "%s for lead '%.*s', which was never captured",
			             ev.spec->name, (int)ev.lead.len, ev.lead.ptr);
			return 1;
		}
		if (te != FUNNEL_OK) {
			fp_error_set(err, te, "type", "%s is not allowed for lead '%.*s' in stage %s",
			             ev.spec->name, (int)ev.lead.len, ev.lead.ptr, fp_stage_name(lead.stage));
			return 1;
		}
		if (lead.version == 0)
			cs->leads++;   /* the first event that names this lead */
		lead.stage = to;
		lead.version++;
		lead.last_seq = cs->seq;
		next_owner(&ev, &lead);
	}

	fp_stamp st = {
		.seq = cs->seq, .ts = cs->ts,
		.producer = { r->who ? r->who->name : NULL, r->who ? strlen(r->who->name) : 0 },
		.has_lead_state = ev.lead.ptr != NULL, .stage = lead.stage, .version = lead.version,
		.prev = cs->prev,
	};
	/* data already in its stored form is copied, not encoded again */
	fp_event_data_bytes(&ev, zmq_msg_data(&r->body), zmq_msg_size(&r->body));
	/* seal: personal values replaced by sealed ones (vault.h) */
	if (g->vault != NULL) {
		funnel_err se = vault_seal_event(g->vault, &ev, err);
		if (se == FUNNEL_EVALUE)
			return 1;
		if (se != FUNNEL_OK)
			return ENOMEM;
	}
	funnel_err ee = fp_record_encode(&g->recs, &ev, &st, hash);
	if (ee == FUNNEL_ETOOBIG) {
		fp_error_set(err, ee, "data", "event is over %d bytes once stored", FP_MAX_RECORD_BYTES);
		return 1;
	}
	if (ee != FUNNEL_OK)
		return ENOMEM;
	rc = store_append(w, cs->seq, g->recs.data + cs->recs_size, g->recs.size - cs->recs_size,
	                  ev.lead.ptr, ev.lead.len, &lead, ev.id.ptr, ev.id.len);
	if (rc != 0)
		return rc;
	g->rec_end[cs->nrecs++] = g->recs.size;
	cs->recs_size = g->recs.size;
	g->seqs[ack] = cs->seq;
	g->dups[ack] = 0;
	memcpy(cs->prev, hash, FUNNEL_HASH_BYTES);
	cs->seq++;
	return 0;
}

/* apply_request() refused an event after appending others of its request:
 * the group is redone with nested transactions. */
#define APPLY_REDO_NESTED (-1)

/*
 * Apply one request inside txn.  Returns 0 (stored, or refused with
 * r->status set), or an LMDB error that fails the whole group.
 *
 * A request is atomic.  With nested set, a request of several events runs
 * in a nested transaction that a refusal aborts.  Without it (the first
 * attempt at a group) events go straight into txn, which spares LMDB a
 * copy of every page the request touches and a merge of its dirty list
 * per request; a refusal after some of the request's events were appended
 * then returns APPLY_REDO_NESTED, and the caller aborts txn and redoes the
 * group with nested set.  A refusal of the first event needs neither.
 */
static int
apply_request(store *s, store_wtxn *w, group *g, cursor_state *cs, request *r, int nested)
{
	cursor_state saved = *cs;
	size_t vmark = g->vault != NULL ? vault_mark(g->vault) : 0;
	store_wtxn child = { NULL, NULL, NULL, NULL };
	int rc;

	if (nested && r->nev > 1 && (rc = store_wtxn_begin(s, w, &child)) != 0)
		return rc;
	for (size_t i = 0; i < r->nev; i++) {
		rc = append_event(child.txn ? &child : w, g, cs, r, i);
		if (rc == 1) {
			r->err.index = (int)i;
			r->status = r->err.code;
			if (child.txn)
				store_wtxn_abort(&child);
			else if (cs->seq != saved.seq)
				return APPLY_REDO_NESTED;
			if (g->vault != NULL)
				vault_rollback(g->vault, vmark);
			g->recs.size = saved.recs_size;
			*cs = saved;
			return 0;
		}
		if (rc != 0) {
			store_wtxn_abort(&child);
			return rc;
		}
	}
	if (child.txn && (rc = store_wtxn_commit(&child)) != 0)
		return rc;
	r->status = FUNNEL_OK;
	return 0;
}

/* Void the outcomes of an attempt at the group that was not committed:
 * the requests it refused are judged again. */
static void
forget_outcomes(group *g)
{
	for (size_t i = 0; i < g->nreqs; i++) {
		request *r = &g->reqs[i];
		if (r->req.op == FP_OP_PUBLISH && r->status != FUNNEL_OK && r->err.index >= 0) {
			r->status = FUNNEL_OK;
			memset(&r->err, 0, sizeof r->err);
			r->err.index = -1;
		}
	}
}

/*
 * Store the group.  Returns 0 when every request has its outcome in
 * r->status (the stored ones committed), or an LMDB error when the whole
 * group failed (nothing stored).
 */
static int
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
		g->recs.size = 0;

		int rc = store_wtxn_begin(s, NULL, &w);
		if (rc != 0)
			return rc;
		for (size_t i = 0; i < g->nreqs && rc == 0; i++) {
			request *r = &g->reqs[i];
			if (r->req.op != FP_OP_PUBLISH || r->status != FUNNEL_OK)
				continue;
			rc = apply_request(s, &w, g, &cs, r, nested);
		}
		if (rc == 0 && cs.nrecs > 0)
			rc = store_put_head(s, w.txn, cs.seq - 1, cs.prev, cs.leads);
		/* the group's new keys reach the key file before its records commit */
		if (rc == 0 && cs.nrecs > 0 && g->vault != NULL)
			rc = vault_prepare(g->vault, cs.seq - 1);
		if (rc == 0 && cs.nrecs > 0) {
			rc = store_wtxn_commit(&w);
		} else {
			store_wtxn_abort(&w);
		}
		if (g->vault != NULL) {
			if (rc == 0 && cs.nrecs > 0) {
				/* erased leads' keys destroyed on disk before any ack */
				int vrc = vault_finish(g->vault);
				if (vrc != 0)
					log_error("erased keys not yet destroyed on disk (%s); funneld finishes "
					          "at its next start (keys.shred)", strerror(vrc));
			} else {
				vault_abort(g->vault);
			}
		}
		if (rc == APPLY_REDO_NESTED) {
			nested = 1;
			forget_outcomes(g);
			continue;
		}
		if (rc == MDB_MAP_FULL) {
			/* Outcomes of this attempt are void: redo the group on a bigger map. */
			int grc = store_grow(s);
			if (grc != 0)
				return MDB_MAP_FULL;
			log_info("map full: grew the map to %zu MiB and redid the group", s->map_size >> 20);
			forget_outcomes(g);
			continue;
		}
		if (rc != 0)
			return rc;
		g->nrecs = cs.nrecs;
		if (cs.nrecs > 0) {
			s->head_seq = cs.seq - 1;
			s->head_ts = cs.ts;
			s->head_leads = cs.leads;
			memcpy(s->head_hash, cs.prev, FUNNEL_HASH_BYTES);
		}
		return 0;
	}
}

/* Decode a request once and size the group's arrays for it. */
static void
decode_request(group *g, request *r)
{
	memset(&r->err, 0, sizeof r->err);
	r->err.index = -1;
	r->who = NULL;
	r->drop = 0;
	if (g->acl != NULL && (r->who = zap_principal(g->acl, &r->body)) == NULL) {
		/* authenticated under a table that had it, revoked since */
		r->drop = 1;
		r->status = fp_error_set(&r->err, FUNNEL_EFORBIDDEN, "", "revoked");
		r->first = g->nevents;
		r->nev = 0;
		return;
	}
	r->status = fp_request_decode(zmq_msg_data(&r->body), zmq_msg_size(&r->body), &g->zone,
	                              &r->req, &r->err);
	if (r->status == FUNNEL_OK && r->req.op != FP_OP_PUBLISH) {
		r->status = fp_error_set(&r->err, FUNNEL_EOP, "op",
		                         "the ingest endpoint takes only 'publish'; send queries to the query endpoint");
	}
	r->first = g->nevents;
	r->nev = r->status == FUNNEL_OK ? r->req.events->via.array.size : 0;
	g->nevents += r->nev;
	g->bytes += zmq_msg_size(&r->body);
}

static void
reply_all(void *sock, group *g)
{
	msgpack_packer pk;
	for (size_t i = 0; i < g->nreqs; i++) {
		request *r = &g->reqs[i];
		if (r->drop)
			continue;
		if (r->status != FUNNEL_OK) {
			reply_error(sock, g, r, &r->err);
			continue;
		}
		g->reply.size = 0;
		msgpack_packer_init(&pk, &g->reply, msgpack_sbuffer_write);
		if (fp_pack_ack(&pk, r->req.rid, g->seqs + r->first, g->dups + r->first, r->nev) != 0) {
			fp_error e;
			fp_error_set(&e, FUNNEL_EINTERNAL, "", "out of memory building the ack");
			reply_error(sock, g, r, &e);
			continue;
		}
		send_reply(sock, r, &g->reply);
	}
}

static void
publish_all(void *pub, group *g)
{
	size_t start = 0;
	for (size_t i = 0; i < g->nrecs; i++) {
		zmq_send(pub, g->recs.data + start, g->rec_end[i] - start, 0);
		start = g->rec_end[i];
	}
}

static void
send_heartbeat(void *pub, const store *s)
{
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	msgpack_packer pk;
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	mp_pack_key(&pk, "heartbeat");
	msgpack_pack_uint64(&pk, s->head_seq);
	mp_pack_key(&pk, "ts");
	msgpack_pack_uint64(&pk, clock_now_ns());
	zmq_send(pub, sb.data, sb.size, ZMQ_DONTWAIT);
	msgpack_sbuffer_destroy(&sb);
}

static void
release_requests(group *g)
{
	for (size_t i = 0; i < g->nreqs; i++) {
		zmq_msg_close(&g->reqs[i].ident);
		zmq_msg_close(&g->reqs[i].body);
	}
	g->nreqs = 0;
	g->nevents = 0;
	g->bytes = 0;
	g->nrecs = 0;
	msgpack_zone_clear(&g->zone);
	zap_release(g->acl);
	g->acl = NULL;
}

/* LMDB reports a page write that the disk cut short as EIO ("short
 * write, filesystem full?"), not ENOSPC.  A short write takes the last
 * free blocks, so a disk with less than 1 MiB left is the full one. */
static int
disk_full(int rc, const store *s)
{
	struct statvfs fs;
	if (rc == ENOSPC || rc == EDQUOT)
		return 1;
	return rc == EIO && statvfs(s->path, &fs) == 0 &&
	       (uint64_t)fs.f_bavail * fs.f_frsize < (1u << 20);
}

/* Map a whole-group storage failure to the reply every request gets. */
static void
fail_group(group *g, int rc, const store *s)
{
	int full = disk_full(rc, s);
	for (size_t i = 0; i < g->nreqs; i++) {
		request *r = &g->reqs[i];
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
}

int
ingest_run(store *s, void *sock, void *pub, const config *c, volatile sig_atomic_t *stop)
{
	group *g = calloc(1, sizeof *g);
	uint64_t next_hb = 0;
	int result = 0;

	if (g == NULL || !msgpack_zone_init(&g->zone, 64 * 1024) ||
	    !msgpack_zone_init(&g->cmp_zone, 4096) ||
	    ensure_capacity(g, GROUP_MAX_EVENTS + FP_MAX_BATCH, GROUP_MAX_EVENTS + FP_MAX_BATCH) != 0) {
		log_error("out of memory starting the writer");
		free(g);
		return -1;
	}
	msgpack_sbuffer_init(&g->recs);
	msgpack_sbuffer_init(&g->reply);
	msgpack_sbuffer_init(&g->cmp);
	g->vault = s->vault;

	while (!*stop) {
		uint64_t now = clock_now_ns();
		if (now >= next_hb) {
			send_heartbeat(pub, s);
			next_hb = now + (uint64_t)c->heartbeat_ms * 1000000u;
		}
		zmq_pollitem_t item = { sock, 0, ZMQ_POLLIN, 0 };
		long wait_ms = (long)((next_hb - now) / 1000000u) + 1;
		int n = zmq_poll(&item, 1, wait_ms);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			log_error("poll on the ingest socket failed: %s", zmq_strerror(errno));
			result = -1;
			break;
		}
		if (n == 0)
			continue;

		/* 1. drain what is waiting */
		g->acl = c->access[0] ? zap_acquire() : NULL;
		while (g->nreqs < GROUP_MAX_REQUESTS && g->nevents < GROUP_MAX_EVENTS &&
		       g->bytes < GROUP_MAX_BYTES) {
			request *r = &g->reqs[g->nreqs];
			int got = recv_request(sock, r);
			if (got <= 0)
				break;
			g->nreqs++;
			decode_request(g, r);
		}
		if (g->nreqs == 0) {
			release_requests(g);   /* gives the table back */
			continue;
		}
		/* 2-3. validate, append, commit */
		int rc = store_group(s, g);
		if (rc != 0) {
			log_error("group of %zu requests not stored: %s", g->nreqs, mdb_strerror(rc));
			fail_group(g, rc, s);
		}
		/* 4. ack, 5. publish */
		reply_all(sock, g);
		if (rc == 0)
			publish_all(pub, g);
		release_requests(g);
	}

	/* Requests that arrived but were not taken: tell their producers. */
	for (int drained = 0; drained < 100000; drained++) {
		request *r = &g->reqs[0];
		if (recv_request(sock, r) <= 0)
			break;
		g->nreqs = 1;
		g->acl = c->access[0] ? zap_acquire() : NULL;
		decode_request(g, r);
		fp_error e;
		fp_error_set(&e, FUNNEL_ESHUTDOWN, "", "funneld is shutting down; nothing was stored, retry later");
		if (!r->drop)
			reply_error(sock, g, r, &e);
		release_requests(g);
	}

	msgpack_sbuffer_destroy(&g->recs);
	msgpack_sbuffer_destroy(&g->reply);
	msgpack_sbuffer_destroy(&g->cmp);
	msgpack_zone_destroy(&g->zone);
	msgpack_zone_destroy(&g->cmp_zone);
	free(g->seqs);
	free(g->dups);
	free(g->rec_end);
	free(g);
	return result;
}
