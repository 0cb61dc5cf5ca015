/*
 * daemon/query.c - replay pages, status and lead state.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/eventfd.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <zmq.h>

#include "funnel/limits.h"
#include "clock.h"
#include "log.h"
#include "query.h"
#include "zap.h"
#include "vault.h"
#include "wire.h"

/* A page under construction: views into the read transaction's map. */
typedef struct page {
	MDB_val recs[FP_PAGE_MAX_EVENTS];
	size_t n;
	size_t bytes;
	uint64_t next;
	int end;
} page;

/* Does the record's type start with prefix?  Only filtered replays pay
 * for the decode. */
static int
type_matches(const MDB_val *rec, funnel_str prefix, msgpack_zone *z)
{
	funnel_record r;
	msgpack_zone_clear(z);
	if (funnel_record_parse(rec->mv_data, rec->mv_size, z, &r) != FUNNEL_OK)
		return 0;
	return r.type.len >= prefix.len && memcmp(r.type.ptr, prefix.ptr, prefix.len) == 0;
}

/*
 * Take a record into the page.  Returns 1 when the page is full and the
 * record was not taken (it is where the next page starts).
 */
static int
page_take(page *p, const fp_request *req, const MDB_val *rec)
{
	if (p->n >= req->limit || (p->n > 0 && p->bytes + rec->mv_size > req->max_bytes))
		return 1;
	p->recs[p->n++] = *rec;
	p->bytes += rec->mv_size;
	return 0;
}

/*
 * One record met while scanning, in seq order.  Returns 0 to go on, 1 to
 * stop (page full, or past the range: p->end says which).
 */
static int
page_visit(page *p, const fp_request *req, uint64_t head, uint64_t seq, const MDB_val *rec,
           msgpack_zone *z)
{
	uint64_t ts = 0;
	if (seq > head) {
		/* committed, not yet durable: not shown (store.h); the page
		 * ends as if the log ended at head */
		p->end = 1;
		return 1;
	}
	if (req->to && seq > req->to) {
		p->end = 1;
		return 1;
	}
	if (req->until) {
		funnel_record_peek(rec->mv_data, rec->mv_size, NULL, &ts);
		if (ts >= req->until) {
			p->end = 1;
			return 1;
		}
	}
	if (req->type.ptr == NULL || type_matches(rec, req->type, z)) {
		if (page_take(p, req, rec))
			return 1;
	}
	p->next = seq + 1;
	return 0;
}

/* Fill a page for a replay request in txn, of records up to head (the
 * reader's head: store_read_head). */
static int
build_page(store *st, MDB_txn *txn, const fp_request *req, uint64_t head, page *p,
           msgpack_zone *z)
{
	MDB_cursor *c = NULL;
	MDB_val v;
	uint64_t start = req->from;
	size_t scanned = 0;
	int rc;

	p->n = 0;
	p->bytes = 0;
	p->end = 0;
	if (req->since && (rc = store_seq_at_time(st, txn, start, req->since, &start)) != 0)
		return rc;
	if (req->since && start > head + 1)
		start = head + 1;   /* found among records not yet durable */
	p->next = start;

	if (req->lead.ptr != NULL) {
		/* the lead's own seqs, from its history in the leads table */
		uint64_t seq;
		if ((rc = mdb_cursor_open(txn, st->leads, &c)) != 0)
			return rc;
		rc = store_lead_seek(st, c, req->lead.ptr, req->lead.len, start, &seq);
		while (rc == 0) {
			if ((rc = store_record_get(st, txn, seq, &v)) != 0)
				break;
			if (page_visit(p, req, head, seq, &v, z))
				break;
			if (++scanned >= FP_PAGE_MAX_SCAN)
				break;
			rc = store_lead_next(st, c, req->lead.ptr, req->lead.len, &seq);
		}
		if (rc == MDB_NOTFOUND) {
			p->end = 1;
			rc = 0;
		}
	} else {
		MDB_val sk = { sizeof start, &start };
		if ((rc = mdb_cursor_open(txn, st->log, &c)) != 0)
			return rc;
		rc = mdb_cursor_get(c, &sk, &v, MDB_SET_RANGE);
		while (rc == 0) {
			uint64_t seq;
			memcpy(&seq, sk.mv_data, sizeof seq);
			if (page_visit(p, req, head, seq, &v, z))
				break;
			if (++scanned >= FP_PAGE_MAX_SCAN)
				break;
			rc = mdb_cursor_get(c, &sk, &v, MDB_NEXT);
		}
		if (rc == MDB_NOTFOUND) {
			p->end = 1;
			rc = 0;
		}
	}
	mdb_cursor_close(c);
	if (!p->end && (p->next > head || (req->to && p->next > req->to)))
		p->end = 1;
	return rc;
}

static void
free_buffer(void *data, void *hint)
{
	(void)hint;
	free(data);
}

/*
 * The query socket is ROUTER_MANDATORY (query_start): a reply to a client
 * whose queue looks full comes back EAGAIN instead of vanishing.  ZeroMQ
 * learns that a peer has read its replies only from commands this thread
 * takes in now and then, so under load "full" can be stale even for a
 * client that waits for each reply, and the reply used to be dropped
 * (tests/integration/test_hostile.c found it: a synchronous client
 * timing out).  Such a reply takes in the pending commands and tries
 * again, for up to REPLY_WAIT_MS; a client that really stopped reading
 * (QUERY_SNDHWM replies queued) loses it then, as PROTOCOL.md §12 says.
 */
#define REPLY_WAIT_MS 10

/*
 * Peers whose last reply was dropped after that wait.  A reply to one of
 * them is tried without the wait (once, and once more after taking in
 * pending commands, for a "full" that is stale): a client that stopped
 * reading and keeps sending requests would otherwise cost this thread
 * REPLY_WAIT_MS per request, and every other client waits behind it.  A
 * reply that goes through takes the peer off the list.  Only the query
 * thread touches it.
 */
#define STALLED_MAX 64
static struct stalled {
	size_t len;                   /* 0: a free slot */
	unsigned char id[256];        /* ZeroMQ routing ids are 1..255 bytes */
} stalled[STALLED_MAX];
static unsigned stalled_next;

static struct stalled *
stalled_find(zmq_msg_t *ident)
{
	size_t len = zmq_msg_size(ident);
	for (int i = 0; i < STALLED_MAX; i++) {
		if (stalled[i].len == len && len > 0 && memcmp(stalled[i].id, zmq_msg_data(ident), len) == 0)
			return &stalled[i];
	}
	return NULL;
}

/* Send the routing id of a reply: 0, or -1 when the reply is dropped. */
static int
send_ident(void *sock, zmq_msg_t *ident)
{
	struct stalled *known = stalled_find(ident);
	int wait_ms = known ? 1 : REPLY_WAIT_MS;

	for (int waited = 0;; waited++) {
		if (zmq_msg_send(ident, sock, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0) {
			if (known)
				known->len = 0;
			return 0;
		}
		if (errno != EAGAIN || waited >= wait_ms)
			break;   /* the client is gone, or not reading */
		if (waited > 0)
			usleep(1000);
		uint32_t events;
		size_t elen = sizeof events;
		zmq_getsockopt(sock, ZMQ_EVENTS, &events, &elen);   /* takes in the commands */
	}
	/* a failed send leaves ident as it was */
	size_t len = zmq_msg_size(ident);
	if (errno == EAGAIN && known == NULL && len > 0 && len <= sizeof stalled[0].id) {
		struct stalled *slot = &stalled[stalled_next++ % STALLED_MAX];
		slot->len = len;
		memcpy(slot->id, zmq_msg_data(ident), len);
	}
	return -1;
}

/* Send a reply: ident [delim] body, body being data (malloc'd; ZeroMQ
 * frees it, or this does when the reply is dropped). */
static void
send_reply(void *sock, zmq_msg_t *ident, int has_delim, char *data, size_t size)
{
	zmq_msg_t body;
	/* hand the buffer to ZeroMQ: no copy of a page */
	zmq_msg_init_data(&body, data, size, free_buffer, NULL);
	if (send_ident(sock, ident) != 0) {
		zmq_msg_close(&body);
		return;
	}
	if (has_delim)
		zmq_send(sock, "", 0, ZMQ_SNDMORE);
	if (zmq_msg_send(&body, sock, 0) < 0)
		zmq_msg_close(&body);
}

/* How long a lead reply waits for a commit to become durable: the writer
 * flushes at once when it has nothing else to do, so this is a bound for
 * a stuck disk, not a wait anyone should see. */
#define LEAD_DURABLE_WAIT_MS 5000

/*
 * Parked replies (query.h): a lead state read from a commit not yet
 * durable waits here, packed, until the durable seq reaches that commit
 * (want), or LEAD_DURABLE_WAIT_MS after its request came (EINTERNAL
 * then); and the replies of the same client that came behind it wait
 * behind it (want 0), since a connection's replies keep the order of its
 * requests (PROTOCOL.md §1).  Entries are kept in the order their
 * requests came; only the query thread touches them.
 *
 * Bounded: PARKED_MAX replies and PARKED_MAX_BYTES bytes in all, and
 * QUERY_SNDHWM replies per client (what ZeroMQ would queue for it).  A
 * reply past a bound is dropped, as a reply to a client whose queue is
 * full is (PROTOCOL.md §12: the client times out and asks again), rather
 * than waited for on this thread, which would hold up every client.
 */
#define PARKED_MAX 256
#define PARKED_MAX_BYTES (32u << 20)

typedef struct parked {
	size_t idlen;
	unsigned char id[256];        /* the client's routing id */
	int has_delim;
	uint64_t rid;
	uint64_t want;                /* send once the durable seq is >= want */
	uint64_t epoch;               /* the tail's epoch it was read in (store.h) */
	uint64_t deadline_ms;         /* want > 0: EINTERNAL instead past it (mono_ms) */
	char *data;                   /* the packed reply, malloc'd; owned here */
	size_t size;
} parked;

static parked parked_q[PARKED_MAX];
static size_t parked_n, parked_bytes;
static uint64_t parked_dropped_ms;   /* when a drop was last logged */

static uint64_t
mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Replies parked for the client of this routing id. */
static size_t
parked_for(const void *id, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < parked_n; i++)
		n += parked_q[i].idlen == len && memcmp(parked_q[i].id, id, len) == 0;
	return n;
}

/* Park a reply (data, size: malloc'd, taken over either way), to be sent
 * once the durable seq is >= want, behind the client's parked ones. */
static void
park(zmq_msg_t *ident, int has_delim, uint64_t rid, uint64_t want, uint64_t epoch,
     uint64_t deadline_ms, char *data, size_t size)
{
	size_t len = zmq_msg_size(ident);
	if (parked_n >= PARKED_MAX || parked_bytes + size > PARKED_MAX_BYTES || len == 0 ||
	    len > sizeof parked_q[0].id || parked_for(zmq_msg_data(ident), len) >= QUERY_SNDHWM) {
		uint64_t now = mono_ms();
		if (now - parked_dropped_ms >= 1000) {
			log_warn("query: a reply dropped: %zu replies (%zu bytes) wait for a flush",
			         parked_n, parked_bytes);
			parked_dropped_ms = now;
		}
		free(data);
		return;
	}
	parked *e = &parked_q[parked_n++];
	e->idlen = len;
	memcpy(e->id, zmq_msg_data(ident), len);
	e->has_delim = has_delim;
	e->rid = rid;
	e->want = want;
	e->epoch = epoch;
	e->deadline_ms = deadline_ms;
	e->data = data;
	e->size = size;
	parked_bytes += size;
}

/* Send a parked reply, or instead an EINTERNAL error saying why not. */
static void
parked_send(void *sock, parked *e, const char *why)
{
	zmq_msg_t ident;
	char *data = e->data;
	size_t size = e->size;
	parked_bytes -= e->size;
	e->data = NULL;
	if (why != NULL) {
		msgpack_sbuffer sb;
		msgpack_packer pk;
		fp_error err;
		free(data);
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		fp_error_set(&err, FUNNEL_EINTERNAL, "", "%s", why);
		fp_pack_error(&pk, e->rid, &err);
		size = sb.size;
		data = msgpack_sbuffer_release(&sb);
	}
	if (zmq_msg_init_size(&ident, e->idlen) != 0) {
		free(data);
		return;
	}
	memcpy(zmq_msg_data(&ident), e->id, e->idlen);
	send_reply(sock, &ident, e->has_delim, data, size);
	zmq_msg_close(&ident);
}

/*
 * Send what can go, in order: a reply whose want is durable, and one past
 * its deadline as EINTERNAL (every one not durable when final: the
 * writer has stopped).  A reply waits while an earlier one of its client
 * does.  Returns the earliest deadline of what stays (0: none).
 */
static uint64_t
parked_flush(void *sock, uint64_t durable, uint64_t epoch, int final)
{
	uint64_t now = mono_ms(), next = 0;
	size_t kept = 0;
	for (size_t i = 0; i < parked_n; i++) {
		parked *e = &parked_q[i];
		int behind = 0;
		for (size_t j = 0; j < kept && !behind; j++)
			behind = parked_q[j].idlen == e->idlen && memcmp(parked_q[j].id, e->id, e->idlen) == 0;
		if (!behind && e->want > 0 && e->want <= durable && e->epoch != epoch) {
			/* read from a tail rebuilt since: its state may never have
			 * been stored (store.h, tail_epoch) */
			parked_send(sock, e, "the log's unflushed part was dropped after a full disk; "
			                     "try again");
		} else if (!behind && e->want <= durable) {
			parked_send(sock, e, NULL);
		} else if (!behind && (final || now >= e->deadline_ms)) {
			char why[96];
			snprintf(why, sizeof why, final ? "funneld stopped before the log was flushed; "
			                                  "try again once it is back"
			                                : "the log was not flushed within %d ms; try again",
			         LEAD_DURABLE_WAIT_MS);
			parked_send(sock, e, why);
		} else {
			if (e->want > durable && (next == 0 || e->deadline_ms < next))
				next = e->deadline_ms;
			if (kept != i)
				parked_q[kept] = *e;
			kept++;
		}
	}
	parked_n = kept;
	return next;
}

static void
answer_replay(query_server *q, MDB_txn *txn, const fp_request *req, msgpack_packer *pk,
              page *p, msgpack_zone *z, fp_error *err)
{
	uint64_t head;
	int rc = store_read_head(q->st, txn, &head, NULL);
	if (rc == 0)
		rc = build_page(q->st, txn, req, head, p, z);
	if (rc != 0) {
		fp_error_set(err, FUNNEL_EINTERNAL, "", "replay failed: %s", mdb_strerror(rc));
		fp_pack_error(pk, req->rid, err);
		return;
	}
	fp_pack_page_head(pk, req->rid, head, p->next, p->end, p->n);
	for (size_t i = 0; i < p->n; i++) {
		msgpack_pack_bin(pk, p->recs[i].mv_size);
		msgpack_pack_bin_body(pk, p->recs[i].mv_data, p->recs[i].mv_size);
	}
}

static void
answer_status(query_server *q, MDB_txn *txn, const fp_request *req, msgpack_packer *pk)
{
	funnel_status stt;
	MDB_envinfo info;
	MDB_stat ms;
	MDB_val v;

	memset(&stt, 0, sizeof stt);
	store_read_head(q->st, txn, &stt.head, &stt.leads);
	stt.count = stt.head;
	if (stt.head > 0 && store_record_get(q->st, txn, stt.head, &v) == 0 &&
	    v.mv_size >= FUNNEL_HASH_BYTES) {
		memcpy(stt.head_hash, (const uint8_t *)v.mv_data + v.mv_size - FUNNEL_HASH_BYTES,
		       FUNNEL_HASH_BYTES);
		funnel_record_peek(v.mv_data, v.mv_size, NULL, &stt.head_ts);
	}
	mdb_env_info(q->st->env, &info);
	mdb_env_stat(q->st->env, &ms);
	stt.data_bytes = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize;
	stt.map_bytes = info.me_mapsize;
	/* what the map can still grow into: space an unprivileged writer may use */
	struct statvfs fs;
	if (statvfs(q->st->path, &fs) == 0) {
		stt.disk_free_bytes = (uint64_t)fs.f_bavail * fs.f_frsize;
		stt.disk_bytes = (uint64_t)fs.f_blocks * fs.f_frsize;
	}
	stt.uptime_ms = (clock_now_ns() - q->started_ns) / 1000000u;
	stt.format = STORE_FORMAT;
	stt.durable = q->st->durable;
	snprintf(stt.version, sizeof stt.version, "%s", FUNNEL_VERSION);
	snprintf(stt.ingest, sizeof stt.ingest, "%s", q->ingest);
	snprintf(stt.publish, sizeof stt.publish, "%s", q->publish);
	snprintf(stt.query, sizeof stt.query, "%s", q->query);
	snprintf(stt.data_dir, sizeof stt.data_dir, "%s", q->st->path);
	fp_pack_status(pk, req->rid, &stt);
}

/* The lead's state as txn has it, which may be of a commit not yet
 * durable: *want is then that commit's seq (the reply waits for it, see
 * parked), else 0.  The state a lead had at the durable head is not kept,
 * and the one read is what the lead is once that commit is durable. */
static void
answer_lead(query_server *q, MDB_txn *txn, const fp_request *req, msgpack_packer *pk,
            fp_error *err, uint64_t *want)
{
	store_lead sl;
	funnel_lead_info li;
	uint64_t head = 0;
	int rc = store_read_head(q->st, txn, &head, NULL);
	if (rc == 0)
		rc = store_lead_get(q->st, txn, req->lead.ptr, req->lead.len, &sl);
	if (rc == 0 && sl.last_seq > head)
		*want = sl.last_seq;
	if (rc == MDB_NOTFOUND) {
		fp_error_set(err, FUNNEL_ENOTFOUND, "lead", "no event names lead '%.*s'",
		             (int)(req->lead.len > 128 ? 128 : req->lead.len), req->lead.ptr);
		fp_pack_error(pk, req->rid, err);
		return;
	}
	if (rc != 0) {
		fp_error_set(err, FUNNEL_EINTERNAL, "", "lead lookup failed: %s", mdb_strerror(rc));
		fp_pack_error(pk, req->rid, err);
		return;
	}
	memset(&li, 0, sizeof li);
	snprintf(li.stage, sizeof li.stage, "%s", fp_stage_name(sl.stage));
	li.version = sl.version;
	li.last_seq = sl.last_seq;
	snprintf(li.owner, sizeof li.owner, "%s", sl.owner);
	fp_pack_lead(pk, req->rid, req->lead.ptr, req->lead.len, &li);
}

/* A lead's data key, for a reader allowed to read (serve_one refuses the
 * op, like every query, to a principal without read).  nil when the lead has none: no personal data
 * sealed yet, erased, or no master key. */
static void
answer_key(query_server *q, const fp_request *req, msgpack_packer *pk)
{
	uint8_t key[32];
	int have = q->st->vault != NULL && vault_key(q->st->vault, req->lead.ptr, req->lead.len, key);
	fp_pack_key(pk, req->rid, req->lead.ptr, req->lead.len, have ? key : NULL);
	sodium_memzero(key, sizeof key);
}

/* Answer one request whose frames are ident [delim] body.  z holds the
 * decoded request; scratch (a separate zone, since the request's strings
 * must outlive it) serves the page's type filter. */
static void
serve_one(query_server *q, zmq_msg_t *ident, int has_delim, zmq_msg_t *body, page *p,
          msgpack_zone *z, msgpack_zone *scratch)
{
	fp_request req;
	fp_error err;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	MDB_txn *txn = NULL;
	uint64_t want = 0, epoch = 0, came_ms = mono_ms();

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_zone_clear(z);
	const fa_table *acl = q->cfg->access[0] ? zap_acquire() : NULL;
	const fa_principal *who = zap_principal(acl, body);
	if (acl != NULL && who == NULL) {
		/* authenticated under a table that had it, revoked since: no reply */
		zap_release(acl);
		msgpack_sbuffer_destroy(&sb);
		return;
	}
	funnel_err rc = fp_request_decode(zmq_msg_data(body), zmq_msg_size(body), z, &req, &err);
	if (rc == FUNNEL_OK && req.op == FP_OP_PUBLISH)
		rc = fp_error_set(&err, FUNNEL_EOP, "op",
		                  "the query endpoint does not take 'publish'; send it to the ingest endpoint");
	if (rc == FUNNEL_OK && who != NULL && !who->read)
		rc = fp_error_set(&err, FUNNEL_EFORBIDDEN, "op", "principal '%s' may not read (%s)",
		                  who->name, req.op == FP_OP_REPLAY ? "replay"
		                             : req.op == FP_OP_STATUS ? "status" : "lead");
	zap_release(acl);
	if (rc != FUNNEL_OK) {
		fp_pack_error(&pk, req.rid, &err);
		goto send;
	}
	int lrc = store_read_begin(q->st, &txn);
	if (lrc != 0) {
		fp_error_set(&err, FUNNEL_EINTERNAL, "", "cannot read the log: %s", mdb_strerror(lrc));
		fp_pack_error(&pk, req.rid, &err);
		goto send;
	}
	switch (req.op) {
	case FP_OP_REPLAY: answer_replay(q, txn, &req, &pk, p, scratch, &err); break;
	case FP_OP_STATUS: answer_status(q, txn, &req, &pk); break;
	case FP_OP_LEAD:
		answer_lead(q, txn, &req, &pk, &err, &want);
		epoch = store_tail_epoch(q->st);   /* read under the tail's lock */
		break;
	case FP_OP_KEY: answer_key(q, &req, &pk); break;
	default: break;
	}
	store_read_end(q->st, &txn);
send:
	/* a reply waits while its lead state is not durable, or while an
	 * earlier reply to the same client waits (parked) */
	if (want > 0 || (parked_n > 0 && parked_for(zmq_msg_data(ident), zmq_msg_size(ident)) > 0)) {
		size_t size = sb.size;
		park(ident, has_delim, req.rid, want, epoch, came_ms + LEAD_DURABLE_WAIT_MS,
		     msgpack_sbuffer_release(&sb), size);
	} else {
		size_t size = sb.size;
		send_reply(q->sock, ident, has_delim, msgpack_sbuffer_release(&sb), size);
	}
	msgpack_sbuffer_destroy(&sb);
}

static void *
run(void *arg)
{
	query_server *q = arg;
	page *p = malloc(sizeof *p);
	msgpack_zone *z = msgpack_zone_new(64 * 1024);
	msgpack_zone *scratch = msgpack_zone_new(4096);
	sigset_t set;

	/* signals belong to the main thread */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (p == NULL || z == NULL || scratch == NULL) {
		log_error("query thread: out of memory");
		goto out;
	}
	while (!atomic_load(&q->stop)) {
		/* with replies parked: watch the durable seq (a rise wakes the
		 * poll through wake_fd), send what it allows, and poll no longer
		 * than the earliest deadline */
		long timeout = 100;
		uint64_t durable = store_durable_watch(q->st, parked_n > 0 ? q->wake_fd : -1);
		if (parked_n > 0) {
			uint64_t next = parked_flush(q->sock, durable, store_tail_epoch(q->st), 0);
			if (parked_n == 0)
				continue;   /* and stop watching */
			uint64_t now = mono_ms();
			if (next > 0 && next <= now)
				timeout = 0;
			else if (next > 0 && next - now < (uint64_t)timeout)
				timeout = (long)(next - now);
		}
		zmq_pollitem_t items[2] = {
			{ q->sock, 0, ZMQ_POLLIN, 0 },
			{ NULL, q->wake_fd, ZMQ_POLLIN, 0 },
		};
		int n = zmq_poll(items, 2, timeout);
		if (n <= 0)
			continue;
		if (items[1].revents & ZMQ_POLLIN) {
			uint64_t cnt;
			ssize_t r = read(q->wake_fd, &cnt, sizeof cnt);   /* resets it */
			(void)r;
		}
		if (!(items[0].revents & ZMQ_POLLIN))
			continue;
		for (int burst = 0; burst < 64; burst++) {
			zmq_msg_t ident, f, body;
			int has_delim = 0, nframes = 0;
			zmq_msg_init(&ident);
			zmq_msg_init(&body);
			if (zmq_msg_recv(&ident, q->sock, ZMQ_DONTWAIT) < 0) {
				zmq_msg_close(&ident);
				zmq_msg_close(&body);
				break;
			}
			int more = zmq_msg_more(&ident);
			while (more) {
				zmq_msg_init(&f);
				if (zmq_msg_recv(&f, q->sock, 0) < 0) {
					zmq_msg_close(&f);
					break;
				}
				more = zmq_msg_more(&f);
				if (nframes == 0 && zmq_msg_size(&f) == 0 && more) {
					has_delim = 1;
				} else if (nframes++ == 0) {
					zmq_msg_close(&body);
					zmq_msg_init(&body);
					zmq_msg_move(&body, &f);
				}
				zmq_msg_close(&f);
			}
			serve_one(q, &ident, has_delim, &body, p, z, scratch);
			zmq_msg_close(&ident);
			zmq_msg_close(&body);
		}
	}
	/* Stopping: the writer has returned (main.c stops this thread after
	 * ingest_run), having flushed what it committed, so what is parked
	 * is answered now: its reply if durable, else EINTERNAL.  The socket
	 * lingers a moment so that close does not drop them. */
	store_durable_watch(q->st, -1);
	if (parked_n > 0) {
		int linger = 1000;
		parked_flush(q->sock, store_durable_watch(q->st, -1), store_tail_epoch(q->st), 1);
		zmq_setsockopt(q->sock, ZMQ_LINGER, &linger, sizeof linger);
	}
out:
	if (scratch)
		msgpack_zone_free(scratch);
	if (z)
		msgpack_zone_free(z);
	free(p);
	return NULL;
}

int
query_start(query_server *q)
{
	int one = 1;   /* see send_ident */
	zmq_setsockopt(q->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
	atomic_store(&q->stop, 0);
	q->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (q->wake_fd < 0)
		return errno;
	int rc = pthread_create(&q->thread, NULL, run, q);
	if (rc != 0) {
		close(q->wake_fd);
		q->wake_fd = -1;
	}
	return rc;
}

void
query_stop(query_server *q)
{
	atomic_store(&q->stop, 1);
	pthread_join(q->thread, NULL);
	close(q->wake_fd);
	q->wake_fd = -1;
}
