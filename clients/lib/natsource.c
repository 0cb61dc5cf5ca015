/*
 * clients/lib/natsource.c - the subscriber's second source: a NATS
 * JetStream stream filled by funnel-mirror, read with an ordered push
 * consumer (contract in internal.h and funnel.h, funnel_sub_opts.source).
 *
 * The stream holds record seq N at stream sequence N (funnel-mirror
 * publishes with Nats-Expected-Last-Sequence = N - 1), so the stream
 * sequence is the position:
 *
 *   - want is the seq of the next record to deliver; it only grows, by
 *     one per delivered record.
 *   - The consumer is created at want (DeliverByStartSequence).  A
 *     message whose stream sequence is below want was delivered already
 *     and is dropped; one above want is a gap: the consumer is dropped
 *     and created again at want (counted in stats.gaps).  A consumer
 *     that stays silent for IDLE_CHECK_MS while the stream's last
 *     sequence is >= want (a node that died with it, a lost flow
 *     control) is created again too.
 *   - Every message's record must carry the seq of its stream sequence,
 *     or the stream is not a mirror of a funnel log: FUNNEL_EPROTOCOL.
 *   - When a consumer cannot be created (a cluster electing its leaders
 *     after a node died, say), records are read one by one with a get by
 *     sequence (the stream leader answers it) for CONSUMER_RETRY_MS, then
 *     a consumer is tried again: same checks, same order.
 *   - Not live, the head is the stream's last sequence, asked again each
 *     time want passes the head known.
 *   - The message returned by the last call is kept in `msg` until the
 *     next call.  Errors leave want where it was.
 *
 * The connection is made by the first fl_nats_next() and remade after a
 * failure, so opening succeeds before the server is up.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

#include "internal.h"

#define MAX_SERVERS 8
#define DEFAULT_STREAM "FUNNEL"
#define IDLE_CHECK_MS 1000
#define POLL_MS 250
#define API_WAIT_MS 2000        /* a consumer create or a get by seq */
#define CONSUMER_RETRY_MS 5000  /* after a failed create: get by seq that long */

struct fl_nats {
	char *urlbuf;                 /* owns the strings below */
	const char *servers[MAX_SERVERS];
	int nservers;
	const char *stream;
	const char *creds;            /* NULL: none */
	int timeout_ms;
	int live;
	uint64_t since;               /* skip records with ts < since, then 0 */
	int resolving;                /* since: the first record is not found yet */

	natsConnection *nc;
	jsCtx *js;
	natsSubscription *sub;
	char subject[256];            /* the stream's subject, for the consumer */
	natsMsg *msg;                 /* the record returned last */

	uint64_t want;
	uint64_t head;                /* the stream's last sequence, as last asked */
	int64_t last_msg_ms;          /* fl_now_ms() of the last message or consumer start */
	int64_t last_info_ms;
	int64_t consumer_retry_ms;    /* no consumer before this: read by get-by-seq */
	funnel_error_info bad_url;    /* code != 0: the URL did not parse; every next() says so */
	funnel_sub_stats stats;
};

static int
nats_fail(funnel_error_info *ei, int code, const char *what, natsStatus s, jsErrCode jerr)
{
	const char *last = nats_GetLastError(NULL);
	return fl_set_error(ei, code, -1, "source", "%s: %s%s%s (JetStream error %d)", what,
	                    natsStatus_GetText(s), last && *last ? ": " : "", last ? last : "",
	                    (int)jerr);
}

/* "nats://h:p[,nats://h2:p2...][/STREAM][?creds=FILE]" into n. */
static int
parse_url(fl_nats *n, const char *url, funnel_error_info *ei)
{
	if (url == NULL || strncmp(url, "nats://", 7) != 0)
		return fl_set_error(ei, FUNNEL_EINVAL, -1, "source",
		                    "a source is nats://HOST:PORT/STREAM, not '%s'", url ? url : "");
	if ((n->urlbuf = strdup(url)) == NULL)
		return fl_set_error(ei, FUNNEL_ENOMEM, -1, "", "out of memory");
	char *q = strchr(n->urlbuf, '?');
	if (q != NULL) {
		*q++ = 0;
		if (strncmp(q, "creds=", 6) != 0 || q[6] == 0)
			return fl_set_error(ei, FUNNEL_EINVAL, -1, "source",
			                    "the only source parameter is ?creds=FILE, not '?%s'", q);
		n->creds = q + 6;
	}
	/* the stream is the path after the last server */
	char *last = strrchr(n->urlbuf, ',');
	char *hostpart = strstr(last ? last : n->urlbuf, "://");
	char *slash = hostpart ? strchr(hostpart + 3, '/') : NULL;
	n->stream = DEFAULT_STREAM;
	if (slash != NULL) {
		*slash = 0;
		if (slash[1])
			n->stream = slash + 1;
	}
	for (const char *c = n->stream; *c; c++)
		if (*c == '.' || *c == '*' || *c == '>' || *c == '/' || *c == ' ')
			return fl_set_error(ei, FUNNEL_EINVAL, -1, "source",
			                    "stream name '%s' has '%c', which NATS does not allow",
			                    n->stream, *c);
	for (char *tok = strtok(n->urlbuf, ","); tok; tok = strtok(NULL, ",")) {
		if (n->nservers == MAX_SERVERS)
			return fl_set_error(ei, FUNNEL_EINVAL, -1, "source",
			                    "at most %d servers in a source", MAX_SERVERS);
		if (strncmp(tok, "nats://", 7) != 0 || tok[7] == 0)
			return fl_set_error(ei, FUNNEL_EINVAL, -1, "source",
			                    "each server of a source is nats://HOST:PORT, not '%s'", tok);
		n->servers[n->nservers++] = tok;
	}
	return FUNNEL_OK;
}

int
fl_nats_check_url(const char *url, funnel_error_info *ei)
{
	fl_nats n = { 0 };
	fl_clear_error(ei);
	int rc = parse_url(&n, url, ei);
	free(n.urlbuf);
	return rc;
}

static void
drop_sub(fl_nats *n)
{
	if (n->sub) {
		natsSubscription_Unsubscribe(n->sub);
		natsSubscription_Destroy(n->sub);
		n->sub = NULL;
	}
}

static void
disconnect(fl_nats *n)
{
	drop_sub(n);
	jsCtx_Destroy(n->js);
	n->js = NULL;
	natsConnection_Destroy(n->nc);
	n->nc = NULL;
}

/* Ask for the stream's state: head, first seq, subject. */
static int
stream_info(fl_nats *n, funnel_error_info *ei)
{
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	natsStatus s = js_GetStreamInfo(&si, n->js, n->stream, NULL, &jerr);

	n->last_info_ms = fl_now_ms();
	if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr)
		return fl_set_error(ei, FUNNEL_ENOTFOUND, -1, "source", "no stream %s on %s",
		                    n->stream, n->servers[0]);
	if (s != NATS_OK)
		return nats_fail(ei, s == NATS_TIMEOUT ? FUNNEL_ETIMEDOUT : FUNNEL_ETRANSPORT,
		                 "stream info", s, jerr);
	int rc = FUNNEL_OK;
	if (si->Config->SubjectsLen != 1)
		rc = fl_set_error(ei, FUNNEL_EPROTOCOL, -1, "source", "stream %s has %d subjects; a "
		                  "funnel mirror has one", n->stream, si->Config->SubjectsLen);
	else
		snprintf(n->subject, sizeof n->subject, "%s", si->Config->Subjects[0]);
	n->head = si->State.LastSeq;
	if (rc == FUNNEL_OK && si->State.Msgs > 0 && si->State.FirstSeq > 1)
		rc = fl_set_error(ei, FUNNEL_EPROTOCOL, -1, "source", "stream %s starts at seq %" PRIu64
		                  ": records before it were removed; a funnel mirror keeps all",
		                  n->stream, si->State.FirstSeq);
	jsStreamInfo_Destroy(si);
	return rc;
}

static int
connect_now(fl_nats *n, funnel_error_info *ei)
{
	natsOptions *o = NULL;
	natsStatus s = natsOptions_Create(&o);
	if (s == NATS_OK)
		s = natsOptions_SetServers(o, n->servers, n->nservers);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(o, n->timeout_ms);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(o, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(o, 100);
	if (s == NATS_OK && n->creds)
		s = natsOptions_SetUserCredentialsFromFiles(o, n->creds, NULL);
	if (s == NATS_OK)
		s = natsConnection_Connect(&n->nc, o);
	natsOptions_Destroy(o);
	if (s != NATS_OK) {
		n->nc = NULL;
		return nats_fail(ei, FUNNEL_ETRANSPORT, "connect to the source", s, 0);
	}
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.Wait = n->timeout_ms;
	if ((s = natsConnection_JetStream(&n->js, n->nc, &jo)) != NATS_OK) {
		disconnect(n);
		return nats_fail(ei, FUNNEL_ETRANSPORT, "JetStream context", s, 0);
	}
	int rc = stream_info(n, ei);
	if (rc != FUNNEL_OK)
		disconnect(n);
	return rc;
}

static int
subscribe_at_want(fl_nats *n, funnel_error_info *ei)
{
	jsSubOptions so;
	jsErrCode jerr = 0;

	jsSubOptions_Init(&so);
	so.Stream = n->stream;
	so.Ordered = true;
	so.Config.DeliverPolicy = js_DeliverByStartSequence;
	so.Config.OptStartSeq = n->want;
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.Wait = API_WAIT_MS;
	natsStatus s = js_SubscribeSync(&n->sub, n->js, n->subject, &jo, &so, &jerr);
	if (s != NATS_OK) {
		n->sub = NULL;
		return nats_fail(ei, FUNNEL_ETRANSPORT, "ordered consumer", s, jerr);
	}
	natsSubscription_SetPendingLimits(n->sub, -1, 256 << 20);
	n->last_msg_ms = fl_now_ms();
	return FUNNEL_OK;
}

int
fl_nats_open(fl_nats **out, const funnel_sub_opts *o, funnel_error_info *ei)
{
	fl_nats *n = calloc(1, sizeof *n);
	if (n == NULL)
		return fl_set_error(ei, FUNNEL_ENOMEM, -1, "", "out of memory");
	/* A URL that does not parse is reported by the first fl_nats_next(),
	 * where the caller can read the reason (funnel_subscriber_error). */
	fl_clear_error(&n->bad_url);
	int rc = parse_url(n, o->source, &n->bad_url);
	if (rc == FUNNEL_ENOMEM) {
		fl_nats_close(&n);
		return fl_set_error(ei, rc, -1, "", "out of memory");
	}
	n->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : FL_DEFAULT_TIMEOUT_MS;
	n->live = o->live;
	n->want = o->from > 1 ? o->from : 1;
	n->since = o->since;
	n->resolving = o->since != 0;
	*out = n;
	return FUNNEL_OK;
}

void
fl_nats_close(fl_nats **pn)
{
	fl_nats *n;
	if (pn == NULL || (n = *pn) == NULL)
		return;
	natsMsg_Destroy(n->msg);
	disconnect(n);
	free(n->urlbuf);
	free(n);
	*pn = NULL;
}

uint64_t
fl_nats_position(const fl_nats *n)
{
	return n->resolving ? 0 : n->want;
}

int
fl_nats_live(const fl_nats *n)
{
	/* live once the stream's last sequence known has been delivered */
	return n->nc != NULL && n->want > n->head;
}

void
fl_nats_stats(const fl_nats *n, funnel_sub_stats *st)
{
	*st = n->stats;
}

/* At or past the head, not live: ENOTFOUND, or EINVAL for a position
 * the stream can never reach. */
static int
at_head(fl_nats *n, funnel_error_info *ei)
{
	if (n->want > n->head + 1)
		return fl_set_error(ei, FUNNEL_EINVAL, -1, "from", "position %" PRIu64 " is past the "
		                    "stream's last seq %" PRIu64 " + 1: is this checkpoint from "
		                    "another log?", n->want, n->head);
	return fl_set_error(ei, FUNNEL_ENOTFOUND, -1, "", "reached the head (seq %" PRIu64 ")",
	                    n->head);
}

/*
 * Take message m, the stream's message sseq, if it is the one wanted.
 * Returns FUNNEL_OK (delivered: m is kept), 1 (not for the caller: m
 * destroyed; a gap drops the consumer), or FUNNEL_EPROTOCOL.
 */
static int
take(fl_nats *n, natsMsg *m, uint64_t sseq, const uint8_t **rec, size_t *len,
     funnel_error_info *ei)
{
	if (sseq < n->want) {
		natsMsg_Destroy(m);
		return 1;
	}
	if (sseq > n->want) {
		n->stats.gaps++;
		natsMsg_Destroy(m);
		drop_sub(n);
		return 1;
	}
	const uint8_t *data = (const uint8_t *)natsMsg_GetData(m);
	size_t size = (size_t)natsMsg_GetDataLength(m);
	uint64_t seq = 0, ts = 0;
	if (funnel_record_peek(data, size, &seq, &ts) != FUNNEL_OK || seq != sseq) {
		natsMsg_Destroy(m);
		drop_sub(n);
		return fl_set_error(ei, FUNNEL_EPROTOCOL, -1, "source", "stream %s seq %" PRIu64
		                    " does not hold funnel record %" PRIu64 ": not a funnel mirror",
		                    n->stream, sseq, sseq);
	}
	n->want++;
	if (n->want - 1 > n->head)
		n->head = n->want - 1;
	if (n->resolving) {
		if (ts < n->since) {
			natsMsg_Destroy(m);
			return 1;
		}
		n->resolving = 0;
	}
	n->stats.from_replay++;
	n->msg = m;
	*rec = data;
	*len = size;
	return FUNNEL_OK;
}

static void
nap(int64_t deadline, long ms)
{
	long left = fl_left_ms(deadline);
	if (left >= 0 && left < ms)
		ms = left;
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* No consumer: the record want by a get by sequence.  FUNNEL_OK,
 * 1 (nothing yet, or not for the caller), or an error. */
static int
get_by_seq(fl_nats *n, int64_t deadline, const uint8_t **rec, size_t *len,
           funnel_error_info *ei)
{
	natsMsg *m = NULL;
	jsErrCode jerr = 0;
	jsOptions jo;
	int rc;

	if (n->want > n->head) {
		if (fl_now_ms() - n->last_info_ms >= POLL_MS &&
		    (rc = stream_info(n, ei)) != FUNNEL_OK)
			return rc;
		if (n->want > n->head) {
			nap(deadline, POLL_MS);
			return 1;
		}
	}
	jsOptions_Init(&jo);
	jo.Wait = API_WAIT_MS;
	natsStatus s = js_GetMsg(&m, n->js, n->stream, n->want, &jo, &jerr);
	if (s != NATS_OK)
		return nats_fail(ei, s == NATS_TIMEOUT ? FUNNEL_ETIMEDOUT : FUNNEL_ETRANSPORT,
		                 "get by seq", s, jerr);
	return take(n, m, n->want, rec, len, ei);
}

/*
 * The stream sequence of a consumer's message, from its reply subject:
 * $JS.ACK.STREAM.CONSUMER.DELIVERED.SSEQ.CSEQ.TS.PENDING (9 tokens), or
 * with a domain $JS.ACK.DOMAIN.ACCOUNT.STREAM.CONSUMER.DELIVERED.SSEQ...
 * (11 or 12).  Read in place: natsMsg_GetMetaData allocates and copies
 * every field, a fifth of the cost of a record read from the mirror.
 * 0, or -1 for a message that is not a stream message.
 */
static int
stream_seq(natsMsg *m, uint64_t *sseq)
{
	const char *r = natsMsg_GetReply(m);
	const char *tok[13];
	int ntok = 0;

	if (r == NULL || strncmp(r, "$JS.ACK.", 8) != 0)
		return -1;
	tok[ntok++] = r;
	for (const char *c = r; *c && ntok < 13; c++)
		if (*c == '.')
			tok[ntok++] = c + 1;
	const char *t = ntok == 9 ? tok[5] : ntok == 11 || ntok == 12 ? tok[7] : NULL;
	if (t == NULL || *t < '0' || *t > '9') {
		jsMsgMetaData *md = NULL;       /* a form not known here: libnats' parse */
		if (natsMsg_GetMetaData(&md, m) != NATS_OK)
			return -1;
		*sseq = md->Sequence.Stream;
		jsMsgMetaData_Destroy(md);
		return 0;
	}
	uint64_t v = 0;
	for (; *t >= '0' && *t <= '9'; t++)
		v = v * 10 + (uint64_t)(*t - '0');
	*sseq = v;
	return 0;
}

int
fl_nats_next(fl_nats *n, int timeout_ms, const uint8_t **rec, size_t *len,
             funnel_error_info *ei)
{
	int64_t deadline = fl_deadline(timeout_ms);
	int rc;

	natsMsg_Destroy(n->msg);
	n->msg = NULL;
	if (n->bad_url.code != FUNNEL_OK) {
		*ei = n->bad_url;
		return ei->code;
	}
	for (;;) {
		if (n->nc == NULL) {
			if ((rc = connect_now(n, ei)) != FUNNEL_OK)
				return rc;
			if (!n->live && n->want > n->head)
				return at_head(n, ei);
		}
		if (!n->live && n->want > n->head) {
			if ((rc = stream_info(n, ei)) != FUNNEL_OK)
				return rc;
			if (n->want > n->head)
				return at_head(n, ei);
		}
		if (n->sub == NULL && fl_now_ms() >= n->consumer_retry_ms &&
		    subscribe_at_want(n, ei) != FUNNEL_OK) {
			if (natsConnection_IsClosed(n->nc)) {
				disconnect(n);
				return ei->code;
			}
			n->consumer_retry_ms = fl_now_ms() + CONSUMER_RETRY_MS;
		}
		if (n->sub == NULL) {
			rc = get_by_seq(n, deadline, rec, len, ei);
			if (rc == FUNNEL_OK || rc == FUNNEL_EPROTOCOL || rc == FUNNEL_ENOTFOUND)
				return rc;
			if (rc != 1) {
				/* a cluster between leaders: again until the deadline */
				if (deadline != FL_FOREVER && fl_now_ms() >= deadline)
					return rc;
				nap(deadline, POLL_MS);
			}
			if (deadline != FL_FOREVER && fl_now_ms() >= deadline)
				return fl_set_error(ei, FUNNEL_ETIMEDOUT, -1, "", "no new record at seq %"
				                    PRIu64 " in time", n->want);
			continue;
		}
		long left = fl_left_ms(deadline);
		int64_t wait = left < 0 || left > POLL_MS ? POLL_MS : left;
		natsMsg *m = NULL;
		natsStatus s = natsSubscription_NextMsg(&m, n->sub, wait);
		if (s == NATS_TIMEOUT) {
			int64_t now = fl_now_ms();
			if (now - n->last_msg_ms >= IDLE_CHECK_MS && now - n->last_info_ms >= IDLE_CHECK_MS) {
				/* silent: is there something the consumer should have sent? */
				rc = stream_info(n, ei);
				if (rc == FUNNEL_EPROTOCOL || rc == FUNNEL_ENOTFOUND)
					return rc;
				if (rc == FUNNEL_OK && n->head >= n->want) {
					n->stats.gaps++;
					drop_sub(n);
				}
			}
			if (deadline != FL_FOREVER && fl_now_ms() >= deadline)
				return fl_set_error(ei, FUNNEL_ETIMEDOUT, -1, "", "no new record at seq %"
				                    PRIu64 " in time", n->want);
			continue;
		}
		if (s != NATS_OK) {
			rc = nats_fail(ei, FUNNEL_ETRANSPORT, "reading the stream", s, 0);
			if (natsConnection_IsClosed(n->nc))
				disconnect(n);
			else
				drop_sub(n);
			return rc;
		}
		n->last_msg_ms = fl_now_ms();
		uint64_t sseq = 0;
		if (stream_seq(m, &sseq) != 0) {
			natsMsg_Destroy(m);          /* not a stream message */
			continue;
		}
		rc = take(n, m, sseq, rec, len, ei);
		if (rc != 1)
			return rc;
	}
}

int
funnel_source_head(const char *source, int timeout_ms, uint64_t *head, funnel_error_info *ei)
{
	funnel_error_info local;
	int rc;

	if (ei == NULL)
		ei = &local;
	fl_clear_error(ei);
	if (head == NULL)
		return fl_set_error(ei, FUNNEL_EINVAL, -1, "", "head is required");
	if (source == NULL || strncmp(source, "nats://", 7) != 0) {
		funnel_query *q = NULL;
		funnel_status st;
		if ((rc = funnel_query_new(&q, source, timeout_ms)) != FUNNEL_OK)
			return fl_set_error(ei, rc, -1, "", "cannot open %s", source ? source : "");
		rc = funnel_status_get(q, &st);
		if (rc != FUNNEL_OK)
			*ei = *funnel_query_error(q);
		else
			*head = st.head;
		funnel_query_destroy(&q);
		return rc;
	}
	funnel_sub_opts o = { .source = source, .timeout_ms = timeout_ms };
	fl_nats *n = NULL;
	if ((rc = fl_nats_open(&n, &o, ei)) != FUNNEL_OK)
		return rc;
	if (n->bad_url.code != FUNNEL_OK) {
		*ei = n->bad_url;
		rc = ei->code;
	} else {
		rc = connect_now(n, ei);
	}
	if (rc == FUNNEL_OK)
		*head = n->head;
	fl_nats_close(&n);
	return rc;
}
