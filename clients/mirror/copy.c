/*
 * clients/mirror/copy.c - funnel-mirror's loop (the contract is
 * mirror.h) and its options.  The loop:
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
 * handler (stream.c) touches only the atomic counters, `failed`,
 * `inflight`/`last_ack_ms` (atomics) and reads `ts_ring` (written by the
 * loop before the publish of the record whose ts it keeps; stream.c).
 */
#include <errno.h>
#include <inttypes.h>
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
#include "httpd.h"
#include "mirror.h"
#include "readyfile.h"
#include "svcmain.h"

static void
nap_ms(long ms)
{
	for (long waited = 0; waited < ms && !svc_stopping(); waited += 10) {
		struct timespec ts = { 0, 10 * 1000000L };
		nanosleep(&ts, NULL);
	}
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


/* Flush, and wait up to wait_ms for what is in flight to be acked. */
static void
drain(mirror *m, int64_t wait_ms)
{
	int64_t until = mirror_now_ms() + wait_ms;
	if (m->nc == NULL)
		return;
	natsConnection_FlushTimeout(m->nc, wait_ms);
	while (__atomic_load_n(&m->inflight, __ATOMIC_ACQUIRE) > 0 && mirror_now_ms() < until &&
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
		if (svc_stopping())
			return 1;
		if (m->nc == NULL && mirror_connect(m) != 0) {
			if (said++ == 0)
				funnel_log(FUNNEL_LOG_WARN, "mirror: NATS %s not reachable yet; waiting",
				           m->a->nats);
			nap_ms(200);
			continue;
		}
		drain(m, 1000);
		new_epoch(m);
		__atomic_store_n(&m->failed, 0, __ATOMIC_RELEASE);
		r = mirror_ensure_stream(m, &last);
		/* what was stored since the last sync without an unbroken run of
		 * acks may hold someone else's message in one of our slots */
		uint64_t good = __atomic_load_n(&m->good_upto, __ATOMIC_ACQUIRE);
		uint64_t from = m->synced && good < last ? good + 1 : last;
		if (r == 0)
			r = mirror_same_log(m, from, last);
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
			.timeout_ms = MIRROR_TIMEOUT_MS,
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
	if (m->a->c.ready_file == NULL || m->ready_written)
		return;
	if (fp_ready_write(m->a->c.ready_file, "service=mirror\nstream=%s\nseq=%" PRIu64 "\npid=%d\n",
	                   m->a->stream, funnel_subscriber_position(m->sub) - 1,
	                   (int)getpid()) == 0)
		m->ready_written = 1;
}

static void
refresh_head(mirror *m)
{
	funnel_status st;
	if (mirror_now_ms() < m->next_head_ms)
		return;
	m->next_head_ms = mirror_now_ms() + MIRROR_HEAD_EVERY_MS;
	if (funnel_status_get(m->q, &st) == FUNNEL_OK) {
		__atomic_store_n(&m->c.head, st.head, __ATOMIC_RELAXED);
		__atomic_store_n(&m->c.head_ts, st.head_ts, __ATOMIC_RELAXED);
	}
}

/*
 * At most --window publishes in flight: wait for acks.  0, or -1 when
 * none came for MIRROR_TIMEOUT_MS (failed is set) or a failure was seen.
 */
static int
wait_window(mirror *m)
{
	while (__atomic_load_n(&m->inflight, __ATOMIC_ACQUIRE) >= m->a->window) {
		if (__atomic_load_n(&m->failed, __ATOMIC_ACQUIRE))
			return -1;
		if (mirror_now_ms() - __atomic_load_n(&m->last_ack_ms, __ATOMIC_RELAXED) > MIRROR_TIMEOUT_MS) {
			mirror_set_failed(m, "publishes not acknowledged in time");
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
			__atomic_store_n(&m->last_ack_ms, mirror_now_ms(), __ATOMIC_RELAXED);
		s = natsConnection_PublishMsg(m->nc, msg);
	}
	natsMsg_Destroy(msg);
	if (s != NATS_OK) {
		char why[200];
		snprintf(why, sizeof why, "publish of seq %s: %s", id, natsStatus_GetText(s));
		mirror_set_failed(m, why);
		return -1;
	}
	return 0;
}

/* Acks that stopped coming while nothing more is published. */
static void
check_acks(mirror *m)
{
	if (__atomic_load_n(&m->inflight, __ATOMIC_ACQUIRE) > 0 &&
	    mirror_now_ms() - __atomic_load_n(&m->last_ack_ms, __ATOMIC_RELAXED) > MIRROR_TIMEOUT_MS)
		mirror_set_failed(m, "publishes not acknowledged in time");
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

		if (svc_stopping()) {
			drain(m, MIRROR_TIMEOUT_MS);
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
			drain(m, MIRROR_TIMEOUT_MS);
			if (__atomic_load_n(&m->failed, __ATOMIC_ACQUIRE))
				continue;
			uint64_t last = 0;
			if (mirror_ensure_stream(m, &last) == 0 && last == seq - 1) {
				funnel_log(FUNNEL_LOG_INFO, "mirror: stream %s holds the log's head (seq %"
				           PRIu64 ")", m->a->stream, last);
				return 0;
			}
			mirror_set_failed(m, "the stream is not at the head");
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


enum { O_NATS = SVC_OPT_OWN, O_STREAM, O_SUBJECT, O_REPLICAS, O_CREDS, O_WINDOW, O_HTTP };

const struct option mirror_options[] = {
	{ "nats", required_argument, NULL, O_NATS },
	{ "stream", required_argument, NULL, O_STREAM },
	{ "subject", required_argument, NULL, O_SUBJECT },
	{ "replicas", required_argument, NULL, O_REPLICAS },
	{ "creds", required_argument, NULL, O_CREDS },
	{ "window", required_argument, NULL, O_WINDOW },
	{ "http", required_argument, NULL, O_HTTP },
	{ NULL, 0, NULL, 0 },
};

int
mirror_option(int id, const char *arg, void *ctx)
{
	mirror_args *a = ctx;
	char *end;
	long v;

	switch (id) {
	case O_NATS:
		if (strncmp(arg, "nats://", 7) != 0)
			return svc_main_usage("--nats wants nats://HOST:PORT, not "
			                 "'%s'", arg);
		a->nats = arg;
		return 0;
	case O_STREAM:
		if (arg[0] == 0 || strpbrk(arg, ".*> /\\") != NULL)
			return svc_main_usage("--stream wants a NATS stream name "
			                 "(no '.', '*', '>', '/', space), not '%s'", arg);
		a->stream = arg;
		return 0;
	case O_SUBJECT:
		if (arg[0] == 0 || strpbrk(arg, "*> ") != NULL)
			return svc_main_usage("--subject wants a plain subject "
			                 "(no wildcard), not '%s'", arg);
		a->subject = arg;
		return 0;
	case O_REPLICAS:
		v = strtol(arg, &end, 10);
		if (*end || v < 1 || v > 5)
			return svc_main_usage("--replicas wants 1..5, not '%s'",
			                 arg);
		a->replicas = (int)v;
		return 0;
	case O_WINDOW:
		v = strtol(arg, &end, 10);
		if (*end || v < 1 || v > 100000)
			return svc_main_usage("--window wants 1..100000, not '%s'",
			                 arg);
		a->window = (int)v;
		return 0;
	case O_CREDS:
		a->creds = arg;
		return 0;
	case O_HTTP: {
		httpd_addr at;   /* a usage error, as every other flag's */
		if (strcmp(arg, "off") != 0 && httpd_addr_parse(&at, arg) != FUNNEL_OK)
			return svc_main_usage("--http wants IPV4:PORT or off, not '%s'", arg);
		a->http = arg;
		return 0;
	}
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
		/* nats://HOST[:PORT], the port 1..65535 (else a server that can
		 * never be reached would be waited for as one not up yet) */
		const char *colon = strrchr(tok + 7, ':'), *host_end = colon ? colon : tok + strlen(tok);
		if (host_end == tok + 7)
			return -1;
		if (colon != NULL) {
			char *end;
			long port = strtol(colon + 1, &end, 10);
			if (colon[1] == '\0' || *end != '\0' || port < 1 || port > 65535)
				return -1;
		}
		m->servers[m->nservers++] = tok;
	}
	return m->nservers > 0 ? 0 : -1;
}

/* `run`: the options checked, the status served, the loop until stopped. */
int
mirror_run(void *ctx)
{
	const mirror_args *a = ctx;
	mirror m = { .a = a };
	mirror_http *http = NULL;
	int status = 1, rc;

	if (a->c.source != NULL)
		return svc_main_usage("--source: the mirror reads funneld, not '%s'", a->c.source);
	if (split_servers(&m) != 0) {
		free(m.serverbuf);
		return svc_main_usage("--nats wants nats://HOST:PORT[,...] (a port 1..65535), not '%s'",
		                      a->nats);
	}
	/* a credentials file that cannot be read is named now, not met at
	 * each connection attempt as a server "not reachable yet" */
	if (a->creds != NULL && access(a->creds, R_OK) != 0) {
		free(m.serverbuf);
		funnel_log(FUNNEL_LOG_ERROR, "mirror: --creds %s: %s", a->creds, strerror(errno));
		return 1;
	}
	if ((m.ts_ring = calloc((size_t)a->window, sizeof *m.ts_ring)) == NULL ||
	    funnel_query_new(&m.q, a->c.query, MIRROR_TIMEOUT_MS) != FUNNEL_OK)
		goto out;
	if (strcmp(a->http, "off") != 0) {
		rc = mirror_http_start(&http, a->http, &m.c);
		if (rc == FUNNEL_EINVAL)
			funnel_log(FUNNEL_LOG_ERROR, "mirror: --http wants IPV4:PORT or off, not '%s'",
			           a->http);
		if (rc != FUNNEL_OK)
			goto out;
	}
	funnel_log(FUNNEL_LOG_INFO, "mirror: log %s -> NATS %s, stream %s, subject %s",
	           a->c.query ? a->c.query : FUNNEL_DEFAULT_QUERY, a->nats, a->stream, a->subject);
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

