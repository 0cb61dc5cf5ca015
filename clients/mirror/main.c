/*
 * clients/mirror/main.c - funnel-mirror: the log, record by record, into
 * a NATS JetStream stream (the contract is mirror.h).
 *
 *   funnel-mirror [run] [options]   copy the log into the stream (default)
 *
 * The loop:
 *
 *   sync:   ask the stream (created if absent, its configuration checked
 *           if present) for its last sequence L; if L > 0, the stream's
 *           message L must be byte for byte funneld's record L, or the
 *           stream belongs to another log and the mirror stops; open a
 *           funnel_subscriber at L + 1.
 *   copy:   each record N the subscriber delivers is published
 *           asynchronously (at most --window unacknowledged) with
 *           Nats-Msg-Id N and Nats-Expected-Last-Sequence N - 1, and
 *           the reply subject INBOX.E.N (E: the epoch, one per sync).
 *           The acks come to one wildcard subscription of the mirror's
 *           own (not libnats' js_PublishMsgAsync, whose per-message
 *           pending map and JSON parse cost twice the rest of the copy):
 *           the subject says which record an ack is for, an ack of an
 *           older epoch is ignored, and the JSON is only searched for
 *           "error", "seq" and "duplicate".
 *   error:  any refused or unacknowledged publish (wrong last sequence,
 *           a server that went away, an ack that did not come in time):
 *           forget what is in flight and sync again.  The stream is the
 *           checkpoint: whatever it stored is never sent twice, whatever
 *           it did not is sent again, and the expected-last-sequence
 *           header makes a gap or a reorder impossible whatever happened.
 *
 * Threads: the loop, and libnats' threads, of which the publish-ack
 * handler (on_ack) touches only the atomic counters, `failed`,
 * `inflight`/`last_ack_ms` (atomics) and reads `ts_ring` (written by the
 * loop before the publish of the record whose ts it keeps).
 */
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>
#include <systemd/sd-daemon.h>

#include "funnel/funnel.h"
#include "funnel/log.h"
#include "mirror.h"
#include "svcargs.h"

static const char usage_text[] =
	"usage: funnel-mirror [run] [options]\n"
	"\n"
	"Copy every record of the log, in seq order and byte for byte, into a NATS\n"
	"JetStream stream: stream sequence N is record N.  Readers elsewhere use\n"
	"--source nats://HOST:PORT/STREAM (funnel tail/replay/verify, every service).\n"
	"\n"
	"Options:\n"
	"  --nats URL          NATS server(s), comma-separated (default " MIRROR_DEFAULT_NATS ")\n"
	"  --stream NAME       the stream (default " MIRROR_DEFAULT_STREAM ")\n"
	"  --subject SUBJ      its one subject (default " MIRROR_DEFAULT_SUBJECT ")\n"
	"  --replicas N        replicas of a stream created here, and checked (default 1)\n"
	"  --creds FILE        NATS credentials file (user JWT and NKey seed)\n"
	"  --window N          publishes awaiting their ack at most (default 1024)\n"
	"  --http ADDR:PORT    /healthz and /metrics (default " MIRROR_DEFAULT_HTTP ", 'off': none)\n"
	"  --publish EP --query EP   funneld endpoints (default loopback 7401, 7402)\n"
	"  --until-head, --once   stop once the log's head is in the stream\n"
	"  --ready-file FILE   written once the stream is checked and copying starts\n"
	"  --log-level LEVEL   debug, info, warn, error (default info)\n"
	"\n"
	"Exit codes: 0 ok, 1 failure (a stream that is not this log's mirror\n"
	"included), 2 usage error.\n";

#define TIMEOUT_MS 5000
#define HEAD_EVERY_MS 500

typedef struct margs {
	svc_args c;
	const char *nats, *stream, *subject, *creds, *http;
	int replicas;
	int window;
} margs;

typedef struct mirror {
	const margs *a;
	const char *servers[8];
	int nservers;
	char *serverbuf;

	natsConnection *nc;
	jsCtx *js;
	natsSubscription *acks;   /* INBOX.> : the acks of our publishes */
	char inbox[64];           /* this connection's reply prefix */
	uint32_t epoch;           /* atomic: acks of another epoch are stale */
	int64_t inflight;         /* atomic: publishes of this epoch not acked yet */
	int64_t last_ack_ms;      /* atomic: now_ms() of the last ack, or of the
	                           * publish that made inflight non-zero */
	uint64_t *ts_ring;        /* [window]: ts of record seq at seq % window */
	funnel_subscriber *sub;
	funnel_query *q;
	mirror_counters c;

	int failed;               /* atomic: a publish was refused or not acknowledged */
	uint64_t good_upto;       /* atomic: every seq up to this one is known to be ours in the
	                           * stream (checked at sync, or acked in an unbroken run since) */
	char failmsg[256];        /* written by whoever sets failed first */
	int64_t next_head_ms;
	int ready_written;
	int synced;               /* a sync succeeded: good_upto means something */
} mirror;

static volatile sig_atomic_t stop_flag;

static void
on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static int64_t
now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
nap_ms(long ms)
{
	for (long waited = 0; waited < ms && !stop_flag; waited += 10) {
		struct timespec ts = { 0, 10 * 1000000L };
		nanosleep(&ts, NULL);
	}
}

static void
atomic_max(uint64_t *p, uint64_t v)
{
	uint64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
	while (cur < v && !__atomic_compare_exchange_n(p, &cur, v, false, __ATOMIC_RELAXED,
	                                               __ATOMIC_RELAXED))
		;
}

/* The first failure since the last sync wins the message. */
static void
set_failed(mirror *m, const char *msg)
{
	int expected = 0;
	if (__atomic_compare_exchange_n(&m->failed, &expected, 1, false, __ATOMIC_ACQ_REL,
	                                __ATOMIC_ACQUIRE))
		snprintf(m->failmsg, sizeof m->failmsg, "%s", msg);
}

/* Decimal digits of v into buf (at least 21 bytes); returns the length. */
static size_t
u64_dec(char *buf, uint64_t v)
{
	char tmp[20];
	size_t n = 0, i = 0;
	do
		tmp[n++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	while (n > 0)
		buf[i++] = tmp[--n];
	buf[i] = 0;
	return i;
}

/* The unsigned number after `"key":` in json (len bytes), or 0. */
static uint64_t
json_u64(const char *json, size_t len, const char *key)
{
	const char *p = memmem(json, len, key, strlen(key));
	uint64_t v = 0;
	if (p == NULL)
		return 0;
	for (p += strlen(key); p < json + len && (*p == ' ' || *p == ':'); p++)
		;
	for (; p < json + len && *p >= '0' && *p <= '9'; p++)
		v = v * 10 + (uint64_t)(*p - '0');
	return v;
}

/* libnats' thread: the ack of one publish, on INBOX.EPOCH.SEQ. */
static void
on_ack(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
	mirror *m = closure;
	const char *subj = natsMsg_GetSubject(msg);
	const char *data = natsMsg_GetData(msg);
	size_t len = (size_t)natsMsg_GetDataLength(msg);
	char *end;
	(void)nc;
	(void)sub;

	/* INBOX.EPOCH.SEQ: the inbox has no digits-only last token */
	const char *dot = strrchr(subj, '.');
	if (dot == NULL || dot - subj < 2)
		goto out;
	const char *e = dot - 1;
	while (e > subj && *e != '.')
		e--;
	uint32_t epoch = (uint32_t)strtoul(e + 1, &end, 10);
	uint64_t seq = strtoull(dot + 1, &end, 10);
	if (epoch != __atomic_load_n(&m->epoch, __ATOMIC_ACQUIRE))
		goto out;                  /* before the last sync: forgotten */
	__atomic_store_n(&m->last_ack_ms, now_ms(), __ATOMIC_RELAXED);
	if (natsMsg_IsNoResponders(msg) || len == 0) {
		set_failed(m, "publish not acknowledged: no JetStream stream takes the subject");
	} else if (memmem(data, len, "\"error\"", 7) != NULL) {
		char why[200];
		snprintf(why, sizeof why, "publish of seq %" PRIu64 " refused: %.*s", seq,
		         (int)(len > 150 ? 150 : len), data);
		set_failed(m, why);
	} else if (json_u64(data, len, "\"seq\"") != seq) {
		char why[200];
		snprintf(why, sizeof why, "publish of seq %" PRIu64 " stored at stream seq %" PRIu64,
		         seq, json_u64(data, len, "\"seq\""));
		set_failed(m, why);
	} else {
		uint64_t ts = __atomic_load_n(&m->ts_ring[seq % (uint64_t)m->a->window],
		                              __ATOMIC_RELAXED);
		/* acks come in publish order on one connection: ts follows seq */
		atomic_max(&m->c.acked_seq, seq);
		atomic_max(&m->c.acked_ts, ts);
		/* ours for sure only in an unbroken run: after a refusal, a later
		 * ack may be for a slot shifted by someone else's message */
		uint64_t good = seq - 1;
		if (!__atomic_load_n(&m->failed, __ATOMIC_ACQUIRE))
			__atomic_compare_exchange_n(&m->good_upto, &good, seq, false,
			                            __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
		int dup = memmem(data, len, "\"duplicate\":true", 16) != NULL;
		__atomic_add_fetch(dup ? &m->c.duplicates : &m->c.published, 1, __ATOMIC_RELAXED);
	}
	/* never below 0: an ack read just before a new epoch may land after it */
	int64_t cur = __atomic_load_n(&m->inflight, __ATOMIC_ACQUIRE);
	while (cur > 0 && !__atomic_compare_exchange_n(&m->inflight, &cur, cur - 1, false,
	                                               __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		;
out:
	natsMsg_Destroy(msg);
}

/* ---- the stream ---- */

static int
nats_connect(mirror *m)
{
	natsOptions *o = NULL;
	natsStatus s = natsOptions_Create(&o);
	if (s == NATS_OK)
		s = natsOptions_SetServers(o, m->servers, m->nservers);
	if (s == NATS_OK)
		s = natsOptions_SetTimeout(o, 2000);
	if (s == NATS_OK)
		s = natsOptions_SetMaxReconnect(o, -1);
	if (s == NATS_OK)
		s = natsOptions_SetReconnectWait(o, 100);
	if (s == NATS_OK && m->a->creds)
		s = natsOptions_SetUserCredentialsFromFiles(o, m->a->creds, NULL);
	if (s == NATS_OK)
		s = natsConnection_Connect(&m->nc, o);
	natsOptions_Destroy(o);
	if (s != NATS_OK) {
		m->nc = NULL;
		return -1;
	}
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.Wait = TIMEOUT_MS;
	natsInbox *inbox = NULL;
	char wild[80];
	s = natsInbox_Create(&inbox);
	if (s == NATS_OK) {
		snprintf(m->inbox, sizeof m->inbox, "%s", (const char *)inbox);
		natsInbox_Destroy(inbox);
		snprintf(wild, sizeof wild, "%s.>", m->inbox);
		s = natsConnection_Subscribe(&m->acks, m->nc, wild, on_ack, m);
	}
	if (s == NATS_OK)
		s = natsSubscription_SetPendingLimits(m->acks, -1, -1);
	if (s == NATS_OK)
		s = natsConnection_JetStream(&m->js, m->nc, &jo);
	if (s != NATS_OK) {
		natsSubscription_Destroy(m->acks);
		m->acks = NULL;
		natsConnection_Destroy(m->nc);
		m->nc = NULL;
		return -1;
	}
	return 0;
}

/* Why cfg is not a mirror stream's configuration, or NULL. */
static const char *
config_mismatch(const margs *a, const jsStreamConfig *cfg, char *why, size_t n)
{
	if (cfg->Storage != js_FileStorage)
		return "storage is memory, not file";
	if (cfg->Replicas != a->replicas && !(cfg->Replicas == 0 && a->replicas == 1)) {
		snprintf(why, n, "replicas is %" PRId64 ", not %d (--replicas)", cfg->Replicas,
		         a->replicas);
		return why;
	}
	if (cfg->Retention != js_LimitsPolicy)
		return "retention is interest or work queue: records would be removed";
	if (cfg->MaxMsgs > 0 || cfg->MaxBytes > 0 || cfg->MaxAge > 0 || cfg->MaxMsgsPerSubject > 0)
		return "it has a limit (max msgs, bytes, age or msgs per subject): records would be "
		       "removed; a mirror keeps everything";
	if (cfg->SubjectsLen != 1 || strcmp(cfg->Subjects[0], a->subject) != 0) {
		snprintf(why, n, "its subjects are not just '%s' (--subject)", a->subject);
		return why;
	}
	if (cfg->Sealed)
		return "it is sealed";
	return NULL;
}

/*
 * Make sure the stream exists and is a mirror's; *last = its last seq.
 * Returns 0, 1 to try again later (the server is not there), or -1 for a
 * stream that must not be used (logged).
 */
static int
ensure_stream(mirror *m, uint64_t *last)
{
	const margs *a = m->a;
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	char why[256];

	natsStatus s = js_GetStreamInfo(&si, m->js, a->stream, NULL, &jerr);
	if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
		jsStreamConfig cfg;
		const char *subjects[] = { a->subject };
		jsStreamConfig_Init(&cfg);
		cfg.Name = a->stream;
		cfg.Description = "funnel log mirror: stream sequence N is record N";
		cfg.Subjects = subjects;
		cfg.SubjectsLen = 1;
		cfg.Storage = js_FileStorage;
		cfg.Replicas = a->replicas;
		cfg.Retention = js_LimitsPolicy;
		cfg.MaxMsgs = -1;
		cfg.MaxBytes = -1;
		cfg.MaxAge = 0;
		jerr = 0;
		s = js_AddStream(&si, m->js, &cfg, NULL, &jerr);
		if (s != NATS_OK) {
			funnel_log(FUNNEL_LOG_WARN, "mirror: cannot create stream %s: %s (JetStream error "
			           "%d)", a->stream, natsStatus_GetText(s), (int)jerr);
			return jerr != 0 && s != NATS_TIMEOUT ? -1 : 1;
		}
		funnel_log(FUNNEL_LOG_INFO, "mirror: created stream %s (subject %s, file storage, %d "
		           "replica%s, keep everything)", a->stream, a->subject, a->replicas,
		           a->replicas == 1 ? "" : "s");
	} else if (s != NATS_OK) {
		return 1;
	}
	const char *bad = config_mismatch(a, si->Config, why, sizeof why);
	if (bad != NULL) {
		funnel_log(FUNNEL_LOG_ERROR, "mirror: stream %s is not a funnel mirror's: %s; refusing "
		           "to write to it", a->stream, bad);
		jsStreamInfo_Destroy(si);
		return -1;
	}
	if (si->State.Msgs > 0 && si->State.FirstSeq > 1) {
		funnel_log(FUNNEL_LOG_ERROR, "mirror: stream %s starts at seq %" PRIu64 ": records "
		           "were removed from it; refusing to write to it", a->stream, si->State.FirstSeq);
		jsStreamInfo_Destroy(si);
		return -1;
	}
	*last = si->State.LastSeq;
	jsStreamInfo_Destroy(si);
	return 0;
}

/*
 * The stream's messages from..last must be funneld's records from..last
 * (from: the first seq not known to be ours; at start `last` alone).
 * Returns 0 (same log, or an empty stream), 1 to try again later
 * (funneld or the stream not reachable), -1 for another log (logged).
 */
static int
same_log(mirror *m, uint64_t from, uint64_t last)
{
	funnel_replay_req req = { .from = from, .to = last };
	uint64_t seq = from;
	int ret = 1;

	if (last == 0)
		return 0;
	while (seq <= last) {
		funnel_page page = { 0 };
		req.from = seq;
		if (funnel_replay_page(m->q, &req, &page) != FUNNEL_OK)
			return 1;
		if (page.head < last) {
			funnel_log(FUNNEL_LOG_ERROR, "mirror: stream %s holds %" PRIu64 " records but the "
			           "log's head is %" PRIu64 ": the stream mirrors another log; refusing to "
			           "write to it", m->a->stream, last, page.head);
			funnel_page_release(&page);
			return -1;
		}
		for (size_t i = 0; i < page.n; i++, seq++) {
			natsMsg *msg = NULL;
			jsErrCode jerr = 0;
			if (js_GetMsg(&msg, m->js, m->a->stream, seq, NULL, &jerr) != NATS_OK) {
				funnel_page_release(&page);
				return 1;
			}
			int same = page.lens[i] == (size_t)natsMsg_GetDataLength(msg) &&
			           memcmp(page.recs[i], natsMsg_GetData(msg), page.lens[i]) == 0;
			natsMsg_Destroy(msg);
			if (!same) {
				funnel_log(FUNNEL_LOG_ERROR, "mirror: stream %s seq %" PRIu64 " is not the "
				           "log's record %" PRIu64 ": the stream mirrors another log or was "
				           "written by someone else; refusing to write to it", m->a->stream,
				           seq, seq);
				funnel_page_release(&page);
				return -1;
			}
			if (seq == last) {
				uint64_t ts = 0;
				funnel_record_peek(page.recs[i], page.lens[i], NULL, &ts);
				atomic_max(&m->c.acked_seq, last);
				atomic_max(&m->c.acked_ts, ts);
				ret = 0;
			}
		}
		size_t got = page.n;
		funnel_page_release(&page);
		if (got == 0)
			return 1;
	}
	return ret;
}

/* Flush, and wait up to wait_ms for what is in flight to be acked. */
static void
drain(mirror *m, int64_t wait_ms)
{
	int64_t until = now_ms() + wait_ms;
	if (m->nc == NULL)
		return;
	natsConnection_FlushTimeout(m->nc, wait_ms);
	while (__atomic_load_n(&m->inflight, __ATOMIC_ACQUIRE) > 0 && now_ms() < until &&
	       !__atomic_load_n(&m->failed, __ATOMIC_ACQUIRE)) {
		struct timespec ts = { 0, 1000000L };
		nanosleep(&ts, NULL);
	}
}

/* Forget what is in flight: its acks, if any come, are stale. */
static void
new_epoch(mirror *m)
{
	__atomic_add_fetch(&m->epoch, 1, __ATOMIC_ACQ_REL);
	__atomic_store_n(&m->inflight, 0, __ATOMIC_RELEASE);
}

/*
 * Find where the stream is and follow the log from there.  Returns 0,
 * -1 for a stream that must not be used, or 1 when stopped.
 */
static int
sync_to_stream(mirror *m)
{
	int said = 0;

	for (;;) {
		uint64_t last = 0;
		int r = 1;
		if (stop_flag)
			return 1;
		if (m->nc == NULL && nats_connect(m) != 0) {
			if (said++ == 0)
				funnel_log(FUNNEL_LOG_WARN, "mirror: NATS %s not reachable yet; waiting",
				           m->a->nats);
			nap_ms(200);
			continue;
		}
		drain(m, 1000);
		new_epoch(m);
		__atomic_store_n(&m->failed, 0, __ATOMIC_RELEASE);
		r = ensure_stream(m, &last);
		/* what was stored since the last sync without an unbroken run of
		 * acks may hold someone else's message in one of our slots */
		uint64_t good = __atomic_load_n(&m->good_upto, __ATOMIC_ACQUIRE);
		uint64_t from = m->synced && good < last ? good + 1 : last;
		if (r == 0)
			r = same_log(m, from, last);
		if (r < 0)
			return -1;
		if (r > 0) {
			__atomic_store_n(&m->c.connected, 0, __ATOMIC_RELAXED);
			if (said++ == 0)
				funnel_log(FUNNEL_LOG_WARN, "mirror: stream %s or funneld not reachable; "
				           "waiting", m->a->stream);
			nap_ms(200);
			continue;
		}
		funnel_sub_opts so = {
			.publish = m->a->c.publish,
			.query = m->a->c.query,
			.from = last + 1,
			.live = !m->a->c.until_head,
			.timeout_ms = TIMEOUT_MS,
		};
		funnel_subscriber_destroy(&m->sub);
		if (funnel_subscriber_new(&m->sub, &so) != FUNNEL_OK) {
			nap_ms(200);
			continue;
		}
		__atomic_store_n(&m->good_upto, last, __ATOMIC_RELEASE);
		m->synced = 1;
		__atomic_store_n(&m->c.connected, 1, __ATOMIC_RELAXED);
		funnel_log(said ? FUNNEL_LOG_INFO : FUNNEL_LOG_DEBUG, "mirror: stream %s at seq %"
		           PRIu64 "; copying from %" PRIu64, m->a->stream, last, last + 1);
		return 0;
	}
}

static void
write_ready(mirror *m)
{
	char tmp[4200];
	const char *path = m->a->c.ready_file;
	if (path == NULL || m->ready_written)
		return;
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (f == NULL)
		return;
	fprintf(f, "service=mirror\nstream=%s\nseq=%" PRIu64 "\npid=%d\n", m->a->stream,
	        funnel_subscriber_position(m->sub) - 1, (int)getpid());
	if (fclose(f) == 0 && rename(tmp, path) == 0)
		m->ready_written = 1;
}

static void
refresh_head(mirror *m)
{
	funnel_status st;
	if (now_ms() < m->next_head_ms)
		return;
	m->next_head_ms = now_ms() + HEAD_EVERY_MS;
	if (funnel_status_get(m->q, &st) == FUNNEL_OK) {
		__atomic_store_n(&m->c.head, st.head, __ATOMIC_RELAXED);
		__atomic_store_n(&m->c.head_ts, st.head_ts, __ATOMIC_RELAXED);
	}
}

/*
 * At most --window publishes in flight: wait for acks.  0, or -1 when
 * none came for TIMEOUT_MS (failed is set) or a failure was seen.
 */
static int
wait_window(mirror *m)
{
	while (__atomic_load_n(&m->inflight, __ATOMIC_ACQUIRE) >= m->a->window) {
		if (__atomic_load_n(&m->failed, __ATOMIC_ACQUIRE))
			return -1;
		if (now_ms() - __atomic_load_n(&m->last_ack_ms, __ATOMIC_RELAXED) > TIMEOUT_MS) {
			set_failed(m, "publishes not acknowledged in time");
			return -1;
		}
		struct timespec ts = { 0, 200000L };
		nanosleep(&ts, NULL);
	}
	return 0;
}

/* Publish record seq (len bytes).  0, or -1 when it could not be queued. */
static int
publish(mirror *m, const uint8_t *rec, size_t len, uint64_t seq)
{
	natsMsg *msg = NULL;
	char id[24], exp[24], reply[112];
	uint64_t ts = 0;

	if (wait_window(m) != 0)
		return -1;
	u64_dec(id, seq);
	u64_dec(exp, seq - 1);
	size_t k = (size_t)snprintf(reply, sizeof reply, "%s.%u.", m->inbox,
	                            __atomic_load_n(&m->epoch, __ATOMIC_RELAXED));
	memcpy(reply + k, id, strlen(id) + 1);
	funnel_record_peek(rec, len, NULL, &ts);
	__atomic_store_n(&m->ts_ring[seq % (uint64_t)m->a->window], ts, __ATOMIC_RELAXED);
	natsStatus s = natsMsg_Create(&msg, m->a->subject, reply, (const char *)rec, (int)len);
	/* set as headers: the expected last sequence of record 1 is 0, an
	 * empty stream */
	if (s == NATS_OK)
		s = natsMsgHeader_Set(msg, "Nats-Msg-Id", id);
	if (s == NATS_OK)
		s = natsMsgHeader_Set(msg, "Nats-Expected-Last-Sequence", exp);
	if (s == NATS_OK) {
		if (__atomic_fetch_add(&m->inflight, 1, __ATOMIC_ACQ_REL) == 0)
			__atomic_store_n(&m->last_ack_ms, now_ms(), __ATOMIC_RELAXED);
		s = natsConnection_PublishMsg(m->nc, msg);
	}
	natsMsg_Destroy(msg);
	if (s != NATS_OK) {
		char why[200];
		snprintf(why, sizeof why, "publish of seq %s: %s", id, natsStatus_GetText(s));
		set_failed(m, why);
		return -1;
	}
	return 0;
}

/* Acks that stopped coming while nothing more is published. */
static void
check_acks(mirror *m)
{
	if (__atomic_load_n(&m->inflight, __ATOMIC_ACQUIRE) > 0 &&
	    now_ms() - __atomic_load_n(&m->last_ack_ms, __ATOMIC_RELAXED) > TIMEOUT_MS)
		set_failed(m, "publishes not acknowledged in time");
}

static int
run(mirror *m)
{
	int quiet = 0;
	int r = sync_to_stream(m);
	if (r != 0)
		return r < 0 ? 1 : 0;
	for (;;) {
		const uint8_t *rec;
		size_t len;

		if (stop_flag) {
			drain(m, TIMEOUT_MS);
			return 0;
		}
		write_ready(m);
		refresh_head(m);
		check_acks(m);
		if (__atomic_load_n(&m->failed, __ATOMIC_ACQUIRE)) {
			funnel_log(FUNNEL_LOG_WARN, "mirror: %s; going back to the stream's last seq",
			           m->failmsg);
			__atomic_add_fetch(&m->c.resyncs, 1, __ATOMIC_RELAXED);
			if ((r = sync_to_stream(m)) != 0)
				return r < 0 ? 1 : 0;
			continue;
		}
		uint64_t seq = funnel_subscriber_position(m->sub);
		int rc = funnel_subscriber_next(m->sub, 200, &rec, &len);
		if (rc == FUNNEL_OK) {
			quiet = 0;
			publish(m, rec, len, seq);
			continue;
		}
		if (rc == FUNNEL_ENOTFOUND) {
			/* --until-head: the head is read; is it stored? */
			drain(m, TIMEOUT_MS);
			if (__atomic_load_n(&m->failed, __ATOMIC_ACQUIRE))
				continue;
			uint64_t last = 0;
			if (ensure_stream(m, &last) == 0 && last == seq - 1) {
				funnel_log(FUNNEL_LOG_INFO, "mirror: stream %s holds the log's head (seq %"
				           PRIu64 ")", m->a->stream, last);
				return 0;
			}
			set_failed(m, "the stream is not at the head");
			continue;
		}
		if (rc == FUNNEL_EINVAL) {
			funnel_log(FUNNEL_LOG_ERROR, "mirror: stream %s is past the log's head: it mirrors "
			           "another log (%s)", m->a->stream, funnel_subscriber_error(m->sub)->message);
			return 1;
		}
		if (rc != FUNNEL_ETIMEDOUT) {
			if (quiet++ == 0)
				funnel_log(FUNNEL_LOG_WARN, "mirror: reading the log: %s %s",
				           funnel_errname(rc), funnel_subscriber_error(m->sub)->message);
			nap_ms(100);
		}
	}
}

/* ---- options ---- */

enum { O_NATS = SVC_OPT_OWN, O_STREAM, O_SUBJECT, O_REPLICAS, O_CREDS, O_WINDOW, O_HTTP };

static int
own_option(int id, const char *arg, void *ctx)
{
	margs *a = ctx;
	char *end;
	long v;

	switch (id) {
	case O_NATS:
		if (strncmp(arg, "nats://", 7) != 0)
			return svc_usage("funnel-mirror", usage_text, "--nats wants nats://HOST:PORT, not "
			                 "'%s'", arg);
		a->nats = arg;
		return 0;
	case O_STREAM:
		if (arg[0] == 0 || strpbrk(arg, ".*> /\\") != NULL)
			return svc_usage("funnel-mirror", usage_text, "--stream wants a NATS stream name "
			                 "(no '.', '*', '>', '/', space), not '%s'", arg);
		a->stream = arg;
		return 0;
	case O_SUBJECT:
		if (arg[0] == 0 || strpbrk(arg, "*> ") != NULL)
			return svc_usage("funnel-mirror", usage_text, "--subject wants a plain subject "
			                 "(no wildcard), not '%s'", arg);
		a->subject = arg;
		return 0;
	case O_REPLICAS:
		v = strtol(arg, &end, 10);
		if (*end || v < 1 || v > 5)
			return svc_usage("funnel-mirror", usage_text, "--replicas wants 1..5, not '%s'",
			                 arg);
		a->replicas = (int)v;
		return 0;
	case O_WINDOW:
		v = strtol(arg, &end, 10);
		if (*end || v < 1 || v > 100000)
			return svc_usage("funnel-mirror", usage_text, "--window wants 1..100000, not '%s'",
			                 arg);
		a->window = (int)v;
		return 0;
	case O_CREDS:
		a->creds = arg;
		return 0;
	case O_HTTP:
		a->http = arg;
		return 0;
	}
	return 2;
}

static int
split_servers(mirror *m)
{
	if ((m->serverbuf = strdup(m->a->nats)) == NULL)
		return -1;
	for (char *tok = strtok(m->serverbuf, ","); tok; tok = strtok(NULL, ",")) {
		if (m->nservers == 8 || strncmp(tok, "nats://", 7) != 0)
			return -1;
		m->servers[m->nservers++] = tok;
	}
	return m->nservers > 0 ? 0 : -1;
}

int
main(int argc, char **argv)
{
	static const struct option own[] = {
		{ "nats", required_argument, NULL, O_NATS },
		{ "stream", required_argument, NULL, O_STREAM },
		{ "subject", required_argument, NULL, O_SUBJECT },
		{ "replicas", required_argument, NULL, O_REPLICAS },
		{ "creds", required_argument, NULL, O_CREDS },
		{ "window", required_argument, NULL, O_WINDOW },
		{ "http", required_argument, NULL, O_HTTP },
		{ NULL, 0, NULL, 0 },
	};
	margs a = { .nats = MIRROR_DEFAULT_NATS, .stream = MIRROR_DEFAULT_STREAM,
	            .subject = MIRROR_DEFAULT_SUBJECT, .http = MIRROR_DEFAULT_HTTP, .replicas = 1,
	            .window = 1024 };
	mirror m = { .a = &a };
	mirror_http *http = NULL;
	int status = 1;

	funnel_log_program("funnel-mirror");
	int rc = svc_parse(argc, argv, "funnel-mirror", usage_text, &a.c, own, own_option, &a);
	if (rc >= 0)
		return rc;
	if (optind < argc && strcmp(argv[optind], "run") == 0)
		optind++;
	if (optind < argc)
		return svc_usage("funnel-mirror", usage_text, "unknown command '%s'", argv[optind]);
	if (a.c.source != NULL)
		return svc_usage("funnel-mirror", usage_text, "--source: the mirror reads funneld, not "
		                 "'%s'", a.c.source);
	if (split_servers(&m) != 0) {
		free(m.serverbuf);
		return svc_usage("funnel-mirror", usage_text, "--nats wants nats://HOST:PORT[,...], "
		                 "not '%s'", a.nats);
	}
	svc_on_signals(on_signal);
	if ((m.ts_ring = calloc((size_t)a.window, sizeof *m.ts_ring)) == NULL ||
	    funnel_query_new(&m.q, a.c.query, TIMEOUT_MS) != FUNNEL_OK)
		goto out;
	if (strcmp(a.http, "off") != 0) {
		rc = mirror_http_start(&http, a.http, &m.c);
		if (rc == FUNNEL_EINVAL)
			funnel_log(FUNNEL_LOG_ERROR, "mirror: --http wants IPV4:PORT or off, not '%s'",
			           a.http);
		if (rc != FUNNEL_OK)
			goto out;
	}
	funnel_log(FUNNEL_LOG_INFO, "mirror: log %s -> NATS %s, stream %s, subject %s",
	           a.c.query ? a.c.query : FUNNEL_DEFAULT_QUERY, a.nats, a.stream, a.subject);
	/* Under systemd (Type=notify): the status is served and the loop runs;
	 * a NATS server or funneld not there yet is waited for, and said on
	 * /healthz, not by a start that never ends. */
	sd_notify(0, "READY=1");
	status = run(&m);
	sd_notify(0, "STOPPING=1");
	funnel_log(FUNNEL_LOG_INFO, "mirror: stopped at seq %" PRIu64 ": %" PRIu64 " stored, %"
	           PRIu64 " duplicates, %" PRIu64 " resyncs", m.c.acked_seq, m.c.published,
	           m.c.duplicates, m.c.resyncs);
out:
	mirror_http_stop(&http);
	funnel_subscriber_destroy(&m.sub);
	funnel_query_destroy(&m.q);
	if (m.acks != NULL)
		natsSubscription_Unsubscribe(m.acks);
	natsSubscription_Destroy(m.acks);
	jsCtx_Destroy(m.js);
	natsConnection_Destroy(m.nc);
	free(m.ts_ring);
	free(m.serverbuf);
	return status;
}
