/*
 * clients/lib/outbox.c - the service runtime's derived events
 * (funnel/service.h; runtime.h): queued by apply() with their derived
 * ids, sent pipelined (a window of SEND_WINDOW requests), settled as the
 * log answers (stored, duplicate, refused, overridden), retried with the
 * same ids while the outcome is unknown; the decisions pending on a lead
 * ("_pending") and what a later record says of them.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bytes.h"
#include "funnel/log.h"
#include "runtime.h"

void
sr_nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* ---- derived events ---- */

void
sr_drop_pending(funnel_service *svc)
{
	for (size_t i = 0; i < svc->npend; i++)
		free(svc->pend[i].buf);
	svc->npend = 0;
	svc->unsent = 0;
	svc->done_upto = 0;
}

/* "<name>:<cause>:" into buf (cap bytes, NUL-terminated): its length,
 * or -1 when it does not fit.  The start of every id the service derives
 * from the record of seq cause; not snprintf, which runs twice for each
 * derived event and whose setup cost more than the rest of the id. */
static int
id_prefix(char *buf, size_t cap, const char *name, uint64_t cause)
{
	char dec[20];             /* UINT64_MAX has 20 digits */
	size_t nd = 0, nn = strlen(name);
	do {
		dec[sizeof dec - 1 - nd++] = (char)('0' + cause % 10);
		cause /= 10;
	} while (cause != 0);
	if (nn + nd + 3 > cap)
		return -1;
	memcpy(buf, name, nn);
	buf[nn] = ':';
	memcpy(buf + nn + 1, dec + sizeof dec - nd, nd);
	buf[nn + 1 + nd] = ':';
	buf[nn + 2 + nd] = 0;
	return (int)(nn + 2 + nd);
}

/* Copy ev into a pending entry with id "<name>:<cause>:<key>" (or `id`). */
static int
queue_event(funnel_service *svc, const funnel_event *ev, uint64_t cause, const char *key,
            const char *id, int cond, int with_prev)
{
	char idbuf[256];
	if (id == NULL) {
		int n = id_prefix(idbuf, sizeof idbuf, svc->name, cause);
		size_t kl = strlen(key);
		if (n < 0 || (size_t)n + kl >= sizeof idbuf)
			return FUNNEL_EINVAL;
		memcpy(idbuf + n, key, kl + 1);
		id = idbuf;
	}
	if (svc->npend == svc->cappend) {
		size_t cap = svc->cappend ? svc->cappend * 2 : 64;
		pending *p = realloc(svc->pend, cap * sizeof *p);
		if (p == NULL)
			return FUNNEL_ENOMEM;
		svc->pend = p;
		svc->cappend = cap;
	}
	size_t lt = strlen(ev->type) + 1, ll = ev->lead ? strlen(ev->lead) + 1 : 0,
	       li = strlen(id) + 1;
	char *buf = malloc(lt + ll + li + ev->data_len + 1);
	if (buf == NULL)
		return FUNNEL_ENOMEM;
	pending *p = &svc->pend[svc->npend++];
	memset(p, 0, sizeof *p);
	p->ev = *ev;
	p->buf = buf;
	p->ev.type = memcpy(buf, ev->type, lt);
	buf += lt;
	if (ll) {
		p->ev.lead = memcpy(buf, ev->lead, ll);
		buf += ll;
	}
	p->ev.id = memcpy(buf, id, li);
	buf += li;
	if (ev->data_len)
		p->ev.data = memcpy(buf, ev->data, ev->data_len);
	p->ev.cause = cause;
	p->cond = cond;
	p->with_prev = with_prev;
	svc->unsent++;
	return FUNNEL_OK;
}

/* A daemon code that is the log's decision about the event itself
 * (resending the same event gets the same answer).  EIDCONFLICT: the log
 * holds another event under the derived key (derived before a restart
 * under other rules, say); the first copy stands, as for a duplicate. */
int
sr_is_refusal(int code)
{
	return (code >= FUNNEL_EMALFORMED && code <= FUNNEL_EVERSION) || code == FUNNEL_EIDCONFLICT;
}

/* How the log settled a derived event: S_STORED (a new record),
 * S_DUPLICATE (acked with dup: its id was in the log already, e.g. sent
 * by a run stopped before its checkpoint), S_REFUSED, S_OVERRIDDEN. */
enum { S_STORED, S_DUPLICATE, S_REFUSED, S_OVERRIDDEN };

static void
settle(funnel_service *svc, pending *p, int how)
{
	p->state = P_DONE;
	svc->unsent--;
	if (how == S_DUPLICATE)
		svc->stats.duplicates++;
	else if (how == S_OVERRIDDEN)
		svc->stats.overridden++;
	else if (how == S_REFUSED)
		svc->stats.refused++;
	else
		svc->stats.emitted++;
}

/* Send entry i and the entries chained to it (with_prev) in one request.
 * Returns how many it sent (0: not sent, retry later). */
static size_t
send_chain(funnel_service *svc, size_t i)
{
	funnel_event evs[MAX_CHAIN];
	size_t n = 0;
	uint64_t rid;

	do
		evs[n] = svc->pend[i + n].ev;
	while (++n < MAX_CHAIN && i + n < svc->npend && svc->pend[i + n].with_prev);
	if (funnel_send(svc->prod, evs, n, &rid) != FUNNEL_OK)
		return 0;
	for (size_t j = i; j < i + n; j++) {
		svc->pend[j].state = P_SENT;
		svc->pend[j].rid = rid;
	}
	return n;
}

/*
 * Move derived events along: mark those already sent before a rebuild,
 * send unsent ones while the window has room (one event per request, so a
 * refusal concerns that event only), and take the replies that are in.
 * With wait, keep at it until every event is stored or refused, retrying
 * transient failures (timeouts, transport, ESTORAGE, ESHUTDOWN) with the
 * same ids after a growing pause.  Returns FUNNEL_OK, or FUNNEL_ESHUTDOWN
 * when stopped before all were settled.
 */
int
sr_pump(funnel_service *svc, int wait)
{
	int backoff = 50;

	for (;;) {
		while (svc->done_upto < svc->npend && svc->pend[svc->done_upto].state == P_DONE)
			svc->done_upto++;
		int retry = 0;
		for (size_t i = svc->done_upto; i < svc->npend && !retry; i++) {
			pending *p = &svc->pend[i];
			if (p->state != P_UNSENT)
				continue;
			if (p->ev.cause != 0 && p->ev.cause <= svc->watermark) {
				p->state = P_DONE;
				svc->unsent--;
				svc->stats.skipped++;
				continue;
			}
			if (funnel_in_flight(svc->prod) >= SEND_WINDOW)
				break;
			size_t sent = send_chain(svc, i);
			if (sent == 0)
				retry = 1;
			else
				i += sent - 1;
		}
		/* replies, in arrival order; the first wait is bounded */
		while (!retry && funnel_in_flight(svc->prod) > 0) {
			uint64_t rid;
			funnel_ack acks[MAX_CHAIN];
			size_t nacks = 0;
			int crc = funnel_collect(svc->prod, wait ? svc->o.timeout_ms : 0, &rid, acks,
			                         MAX_CHAIN, &nacks);
			if (crc == FUNNEL_ETIMEDOUT && !wait)
				break;
			if (crc == FUNNEL_ETIMEDOUT || crc == FUNNEL_ETRANSPORT || crc == FUNNEL_EINVAL) {
				retry = 1;
				break;
			}
			size_t i;
			for (i = svc->done_upto; i < svc->npend; i++)
				if (svc->pend[i].state == P_SENT && svc->pend[i].rid == rid)
					break;
			if (i == svc->npend)
				continue;       /* a reply to an abandoned request */
			/* the request's events: entry i and those chained to it */
			size_t end = i + 1;
			while (end < svc->npend && svc->pend[end].with_prev && svc->pend[end].rid == rid)
				end++;
			pending *p = &svc->pend[i];
			if (crc == FUNNEL_OK) {
				for (size_t j = i; j < end; j++)
					settle(svc, &svc->pend[j],
					       j - i < nacks && acks[j - i].dup ? S_DUPLICATE : S_STORED);
			} else if (crc == FUNNEL_EVERSION && p->cond) {
				/* Someone wrote to the lead after the record this was
				 * decided on: a person acted first.  Dropped for good
				 * (its expected version is past); the view learns it
				 * from the log (funnel_service_dropped). */
				uint64_t nover = svc->stats.overridden + 1;
				if (nover <= 5 || nover % 1000 == 0)
					funnel_log(FUNNEL_LOG_INFO, "%s: %s for lead %s (decided on seq %" PRIu64
					           ") dropped: the lead changed first (%" PRIu64 " dropped so far)",
					           svc->name, p->ev.type, p->ev.lead ? p->ev.lead : "-",
					           p->ev.cause, nover);
				for (size_t j = i; j < end; j++)
					settle(svc, &svc->pend[j], S_OVERRIDDEN);
			} else if (sr_is_refusal(crc)) {
				/* The first few in full, then a count now and then:
				 * a backfill over old history can meet thousands. */
				const funnel_error_info *ei = funnel_producer_error(svc->prod);
				uint64_t nref = svc->stats.refused + 1;
				if (nref <= 5 || nref % 1000 == 0)
					funnel_log(FUNNEL_LOG_INFO, "%s: the log refused %s for lead %s (cause %"
					           PRIu64 "): %s %s (%" PRIu64 " refused so far)", svc->name,
					           p->ev.type, p->ev.lead ? p->ev.lead : "-", p->ev.cause,
					           funnel_errname(crc), ei->message, nref);
				for (size_t j = i; j < end; j++)
					settle(svc, &svc->pend[j], S_REFUSED);
			} else {
				for (size_t j = i; j < end; j++)
					svc->pend[j].state = P_UNSENT;    /* ESTORAGE, ESHUTDOWN, ...: again */
				retry = 1;
			}
			if (!wait)
				continue;
			if (svc->unsent == 0)
				break;
			/* room in the window again: send more before waiting */
			if (funnel_in_flight(svc->prod) < SEND_WINDOW / 2)
				break;
		}
		if (svc->unsent == 0)
			return FUNNEL_OK;
		if (!retry) {
			if (!wait)
				return FUNNEL_OK;
			continue;
		}
		/* Outcome unknown or refused for now: forget what is in flight
		 * and send it all again, same ids, after a pause. */
		funnel_abandon(svc->prod);
		while (funnel_in_flight(svc->prod) > 0 &&
		       funnel_collect(svc->prod, 0, NULL, NULL, 0, NULL) != FUNNEL_ETIMEDOUT)
			;
		for (size_t i = svc->done_upto; i < svc->npend; i++)
			if (svc->pend[i].state == P_SENT)
				svc->pend[i].state = P_UNSENT;
		if (svc->stop)
			return FUNNEL_ESHUTDOWN;
		funnel_log(FUNNEL_LOG_WARN, "%s: %zu derived events not stored yet (%s); retrying",
		           svc->name, svc->unsent, funnel_producer_error(svc->prod)->message);
		for (int waited = 0; waited < backoff && !svc->stop; waited += 10)
			sr_nap_ms(10);
		if (backoff < 2000)
			backoff *= 2;
		if (!wait)
			return FUNNEL_OK;
	}
}

/*
 * Before apply(): the fate of a decision pending on rec's lead.  The
 * runtime sent it with the lead's version at its cause, so the log
 * stored it only if no other record named the lead in between: the next
 * record naming the lead is either that event (the decision stands) or
 * another one (the log dropped it: svc->dropped, for apply() to read).
 * Live and on a rebuild the log is the same, so is the verdict.
 */
int
sr_check_pending(funnel_service *svc, const funnel_record *rec)
{
	MDB_val k = { rec->lead.len, (void *)rec->lead.ptr }, v;
	char prefix[128];

	svc->dropped = 0;
	if (rec->lead.ptr == NULL || rec->lead.len == 0)
		return FUNNEL_OK;
	int rc = mdb_get(svc->txn, svc->pend_dbi, &k, &v);
	if (rc == MDB_NOTFOUND)
		return FUNNEL_OK;
	if (rc != 0)
		return sr_lmdb_fail(svc, rc, "read a pending decision");
	uint64_t cause = v.mv_size >= 8 ? fp_get_be64(v.mv_data) : 0;
	int n = id_prefix(prefix, sizeof prefix, svc->name, cause);
	int ours = rec->has_cause && rec->cause == cause && rec->id.ptr != NULL && n > 0 &&
	           rec->id.len > (size_t)n && memcmp(rec->id.ptr, prefix, (size_t)n) == 0;
	if (!ours && v.mv_size >= 8) {
		size_t len = v.mv_size - 8;
		if (len > svc->dropped_cap) {
			uint8_t *b = realloc(svc->dropped_undo, len);
			if (b == NULL)
				return FUNNEL_ENOMEM;
			svc->dropped_undo = b;
			svc->dropped_cap = len;
		}
		if (len)
			memcpy(svc->dropped_undo, (const uint8_t *)v.mv_data + 8, len);
		svc->dropped_len = len;
		svc->dropped_cause = cause;
		svc->dropped = 1;
	}
	rc = mdb_del(svc->txn, svc->pend_dbi, &k, NULL);
	return rc == 0 ? FUNNEL_OK : sr_lmdb_fail(svc, rc, "settle a pending decision");
}


int
funnel_service_emit_decision(funnel_service *svc, const funnel_event *ev, const char *key,
                             const void *undo, size_t undo_len)
{
	if (svc == NULL || ev == NULL || ev->type == NULL || key == NULL || svc->applying == 0 ||
	    (undo == NULL && undo_len > 0))
		return FUNNEL_EINVAL;
	const funnel_record *rec = svc->applying_rec;
	funnel_event c = *ev;
	int cond = !ev->has_expected_version && ev->lead != NULL && rec->lead.ptr != NULL &&
	           rec->has_version && strlen(ev->lead) == rec->lead.len &&
	           memcmp(ev->lead, rec->lead.ptr, rec->lead.len) == 0;
	int with_prev = 0;
	if (cond) {
		/* The events one record derives for its lead chain their
		 * versions (v, v+1, ...) and travel in one request: all or
		 * none, so none can land after another writer's event. */
		c.has_expected_version = 1;
		c.expected_version = rec->version;
		for (size_t i = svc->npend; i-- > 0;) {
			const pending *q = &svc->pend[i];
			if (q->ev.cause != svc->applying)
				break;
			if (q->cond && strcmp(q->ev.lead, ev->lead) == 0) {
				/* one after the other, and at most MAX_CHAIN */
				if (i + 1 != svc->npend || q->ev.expected_version + 1 - rec->version >= MAX_CHAIN)
					return FUNNEL_EINVAL;
				c.expected_version = q->ev.expected_version + 1;
				with_prev = 1;
				break;
			}
		}
	}
	int rc = queue_event(svc, &c, svc->applying, key, NULL, cond, with_prev);
	if (rc != FUNNEL_OK || !cond || (with_prev && undo_len == 0))
		return rc;
	/* The decision is pending until the log shows its fate: the next
	 * record that names the lead is its own event, or someone else's. */
	uint8_t stackbuf[512];
	uint8_t *val = 8 + undo_len <= sizeof stackbuf ? stackbuf : malloc(8 + undo_len);
	if (val == NULL)
		return FUNNEL_ENOMEM;
	fp_put_be64(val, svc->applying);
	if (undo_len)
		memcpy(val + 8, undo, undo_len);
	MDB_val k = { rec->lead.len, (void *)rec->lead.ptr }, v = { 8 + undo_len, val };
	int mrc = mdb_put(svc->txn, svc->pend_dbi, &k, &v, 0);
	if (val != stackbuf)
		free(val);
	return mrc == 0 ? FUNNEL_OK : sr_lmdb_fail(svc, mrc, "keep a pending decision");
}

int
funnel_service_emit(funnel_service *svc, const funnel_event *ev, const char *key)
{
	if (svc == NULL || ev == NULL || ev->type == NULL || key == NULL || svc->applying == 0)
		return FUNNEL_EINVAL;
	return queue_event(svc, ev, svc->applying, key, NULL, 0, 0);
}

int
funnel_service_dropped(const funnel_service *svc, uint64_t *cause, const void **undo,
                       size_t *undo_len)
{
	if (svc == NULL || svc->applying == 0 || !svc->dropped)
		return 0;
	if (cause)
		*cause = svc->dropped_cause;
	if (undo)
		*undo = svc->dropped_undo;
	if (undo_len)
		*undo_len = svc->dropped_len;
	return 1;
}
