/*
 * clients/mirror/stream.c - funnel-mirror's side of NATS (mirror.h): the
 * connection with its one wildcard subscription for the publish acks
 * (mirror_on_ack, on libnats' thread), the stream created or checked,
 * and whether the stream holds this log (its messages byte for byte
 * funneld's records).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

#include "funnel/funnel.h"
#include "funnel/log.h"
#include "mirror.h"

int64_t
mirror_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
mirror_atomic_max(uint64_t *p, uint64_t v)
{
	uint64_t cur = __atomic_load_n(p, __ATOMIC_RELAXED);
	while (cur < v && !__atomic_compare_exchange_n(p, &cur, v, false, __ATOMIC_RELAXED,
	                                               __ATOMIC_RELAXED))
		;
}


/* The first failure since the last sync wins the message. */
void
mirror_set_failed(mirror *m, const char *msg)
{
	int expected = 0;
	if (__atomic_compare_exchange_n(&m->failed, &expected, 1, false, __ATOMIC_ACQ_REL,
	                                __ATOMIC_ACQUIRE))
		snprintf(m->failmsg, sizeof m->failmsg, "%s", msg);
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
	__atomic_store_n(&m->last_ack_ms, mirror_now_ms(), __ATOMIC_RELAXED);
	if (natsMsg_IsNoResponders(msg) || len == 0) {
		mirror_set_failed(m, "publish not acknowledged: no JetStream stream takes the subject");
	} else if (memmem(data, len, "\"error\"", 7) != NULL) {
		char why[200];
		snprintf(why, sizeof why, "publish of seq %" PRIu64 " refused: %.*s", seq,
		         (int)(len > 150 ? 150 : len), data);
		mirror_set_failed(m, why);
	} else if (json_u64(data, len, "\"seq\"") != seq) {
		char why[200];
		snprintf(why, sizeof why, "publish of seq %" PRIu64 " stored at stream seq %" PRIu64,
		         seq, json_u64(data, len, "\"seq\""));
		mirror_set_failed(m, why);
	} else {
		uint64_t ts = __atomic_load_n(&m->ts_ring[seq % (uint64_t)m->a->window],
		                              __ATOMIC_RELAXED);
		/* acks come in publish order on one connection: ts follows seq */
		mirror_atomic_max(&m->c.acked_seq, seq);
		mirror_atomic_max(&m->c.acked_ts, ts);
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


int
mirror_connect(mirror *m)
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
	jo.Wait = MIRROR_TIMEOUT_MS;
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
config_mismatch(const mirror_args *a, const jsStreamConfig *cfg, char *why, size_t n)
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
int
mirror_ensure_stream(mirror *m, uint64_t *last)
{
	const mirror_args *a = m->a;
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
int
mirror_same_log(mirror *m, uint64_t from, uint64_t last)
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
				mirror_atomic_max(&m->c.acked_seq, last);
				mirror_atomic_max(&m->c.acked_ts, ts);
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

