/*
 * tests/integration/test_soak.c - a bounded soak: a steady stream of
 * funnel-shaped events into a durable funneld with two subscribers
 * attached (one from the start, one that joins a sixth of the way in and
 * catches up from seq 1), while the daemon's memory is sampled.
 *
 * Promised (DESIGN.md): subscribers see every event once, in seq order,
 * with no gap; the daemon's private memory stays under 64 MB and does not
 * grow with the log.  "Private memory" is the RssAnon figure of
 * /proc/PID/status (heap and stacks; the LMDB file pages it maps
 * are the page cache's, and grow with the log by design).  Growth is
 * judged by the largest sample of the last third of the run against the
 * largest of the first third (the warm-up is in the first third), with
 * a slack of 4 MiB.
 *
 * FUNNEL_SOAK_SECONDS (default 90; 15 under AddressSanitizer) and
 * FUNNEL_SOAK_RATE (events/s, default 3000).  Under AddressSanitizer the
 * daemon's memory is the sanitizer's (quarantine, shadow), so the memory
 * test is reported SKIPPED there, never passed; delivery is still
 * checked.  No timing is asserted: a machine too busy to keep the rate
 * sends fewer events, and the run reports the rate it reached.
 */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "funnel/funnel.h"
#include "harness.h"
#include "workload.h"

#define SUBSCRIBERS 2
#define BATCH 30                  /* events per request */
#define SAMPLE_MS 2000
#define MAX_SAMPLES 4096
#define MEM_LIMIT_KB (64u * 1024)
#define MEM_SLACK_KB (4u * 1024)

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#define DEFAULT_SECONDS 15
#else
#define SANITIZED 0
#define DEFAULT_SECONDS 90
#endif

/* One subscriber thread: subscribes after `delay_s`, then reads until it
 * has seen `target` (set once the producer is done) or fails. */
typedef struct reader {
	const daemon_proc *d;
	unsigned delay_s;
	atomic_uint_fast64_t *target;    /* 0 until the head is final */
	uint64_t seen;                   /* last seq delivered */
	char error[200];                 /* "" if fine */
} reader;

/* What the run measured, for the second test. */
static struct soak {
	int ran;
	uint64_t kb[MAX_SAMPLES];
	size_t n;
} soak;

static void *
read_all(void *arg)
{
	reader *r = arg;
	funnel_subscriber *s;
	funnel_sub_opts o = { .publish = r->d->publish, .query = r->d->query, .from = 1, .live = 1 };
	sleep(r->delay_s);
	if (funnel_subscriber_new(&s, &o) != FUNNEL_OK) {
		snprintf(r->error, sizeof r->error, "cannot subscribe");
		return NULL;
	}
	uint64_t idle_since = harness_now_ns();
	for (;;) {
		uint64_t target = atomic_load(r->target);
		if (target && r->seen >= target)
			break;
		const uint8_t *rec;
		size_t len;
		uint64_t seq;
		int rc = funnel_subscriber_next(s, 200, &rec, &len);
		if (rc == FUNNEL_ETIMEDOUT && harness_now_ns() - idle_since < 30000000000ull)
			continue;   /* nothing yet; the target may not be set */
		if (rc != FUNNEL_OK) {
			snprintf(r->error, sizeof r->error, "after seq %" PRIu64 ": %s", r->seen,
			         funnel_errname(rc));
			break;
		}
		if (funnel_record_peek(rec, len, &seq, NULL) != FUNNEL_OK || seq != r->seen + 1) {
			snprintf(r->error, sizeof r->error, "got seq %" PRIu64 " after %" PRIu64, seq, r->seen);
			break;
		}
		r->seen = seq;
		idle_since = harness_now_ns();
	}
	funnel_subscriber_destroy(&s);
	return NULL;
}

static long
env_long(const char *name, long dflt)
{
	const char *v = getenv(name);
	return v && atol(v) > 0 ? atol(v) : dflt;
}

static uint64_t
max_of(const uint64_t *v, size_t from, size_t to)
{
	uint64_t m = 0;
	for (size_t i = from; i < to; i++)
		m = v[i] > m ? v[i] : m;
	return m;
}

static void
test_soak_every_event_in_order(void **state)
{
	(void)state;
	long seconds = env_long("FUNNEL_SOAK_SECONDS", DEFAULT_SECONDS);
	long rate = env_long("FUNNEL_SOAK_RATE", 3000);
	daemon_proc d;
	assert_int_equal(harness_start(&d, NULL), 0);

	atomic_uint_fast64_t target = 0;
	reader rd[SUBSCRIBERS];
	pthread_t th[SUBSCRIBERS];
	for (int i = 0; i < SUBSCRIBERS; i++) {
		/* the second joins a sixth of the way in (inside the first third,
		 * with the rest of the warm-up): it pages history from seq 1
		 * while the stream goes on, then follows live */
		rd[i] = (reader){ .d = &d, .target = &target, .delay_s = i ? (unsigned)seconds / 6 : 0 };
		pthread_create(&th[i], NULL, read_all, &rd[i]);
	}

	/* the producer paces itself: batch k leaves at start + k * BATCH / rate */
	funnel_producer *p;
	assert_int_equal(funnel_producer_new(&p, d.ingest, 30000), FUNNEL_OK);
	wl_funnel g;
	wl_set set = { 0 };
	wl_funnel_init(&g, 42, "soak");
	uint64_t start = harness_now_ns(), end = start + (uint64_t)seconds * 1000000000u;
	uint64_t period = (uint64_t)BATCH * 1000000000u / (uint64_t)rate;
	uint64_t next_sample = start, head = 0, batches = 0;
	funnel_ack acks[BATCH];
	soak.n = 0;
	for (uint64_t now = start; now < end; now = harness_now_ns()) {
		if (now >= next_sample && soak.n < MAX_SAMPLES) {
			soak.kb[soak.n++] = harness_anon_kb(d.pid);
			next_sample += (uint64_t)SAMPLE_MS * 1000000u;
		}
		uint64_t due = start + batches * period;
		if (now < due) {
			usleep((useconds_t)((due - now) / 1000u));
			continue;
		}
		assert_int_equal(wl_set_fill(&set, &g, BATCH), 0);
		int rc = funnel_publish_packed(p, set.ev[0].env, set.env_bytes, BATCH, acks);
		if (rc != FUNNEL_OK)
			fail_msg("batch %" PRIu64 ": %s: %s", batches, funnel_errname(rc),
			         funnel_producer_error(p)->message);
		head = acks[BATCH - 1].seq;
		batches++;
	}
	double secs = (double)(harness_now_ns() - start) / 1e9;
	wl_set_release(&set);
	funnel_producer_destroy(&p);

	/* every subscriber reaches the head, in order */
	atomic_store(&target, head);
	for (int i = 0; i < SUBSCRIBERS; i++)
		pthread_join(th[i], NULL);
	if (soak.n < MAX_SAMPLES)
		soak.kb[soak.n++] = harness_anon_kb(d.pid);
	funnel_query *q;
	funnel_verify_result vr;
	assert_int_equal(funnel_query_new(&q, d.query, 30000), FUNNEL_OK);
	assert_int_equal(funnel_verify(q, 0, 0, &vr), FUNNEL_OK);
	assert_int_equal(vr.checked, head);
	funnel_query_destroy(&q);
	assert_int_equal(harness_stop(&d), 0);
	harness_cleanup(&d);

	printf("soak: %.0f s at a target of %ld events/s: %" PRIu64 " events (%.0f/s), "
	       "%d subscribers each got all %" PRIu64 " in order, chain verifies\n",
	       secs, rate, head, (double)head / secs, SUBSCRIBERS, head);
	for (int i = 0; i < SUBSCRIBERS; i++) {
		if (rd[i].error[0])
			fail_msg("subscriber %d: %s", i, rd[i].error);
		assert_int_equal(rd[i].seen, head);
	}
	assert_true(head > 0);
	soak.ran = 1;
}

static void
test_soak_daemon_memory_flat(void **state)
{
	(void)state;
	if (!soak.ran || soak.n < 6) {
		printf("soak: SKIPPED: the soak did not complete, no memory samples to judge\n");
		skip();
	}
	size_t third = soak.n / 3;
	uint64_t first = max_of(soak.kb, 0, third), last = max_of(soak.kb, soak.n - third, soak.n);
	uint64_t all = max_of(soak.kb, 0, soak.n), low = soak.kb[0];
	for (size_t i = 0; i < soak.n; i++)
		low = soak.kb[i] < low ? soak.kb[i] : low;
	printf("soak: daemon anonymous memory, %zu samples every %d ms: min %.1f MB, "
	       "max of first third %.1f MB, max of last third %.1f MB, max %.1f MB\n",
	       soak.n, SAMPLE_MS, low / 1024.0, first / 1024.0, last / 1024.0, all / 1024.0);
	printf("soak: samples (MB):");
	for (size_t i = 0; i < soak.n; i++)
		printf(" %.1f", soak.kb[i] / 1024.0);
	printf("\n");
	if (low == 0) {
		/* harness_anon_kb's "unknown": with it the limits below would pass unjudged */
		printf("soak: SKIPPED: a sample without a memory figure (/proc/PID/status "
		       "unreadable)\n");
		skip();
	}
	if (SANITIZED) {
		printf("soak: SKIPPED: memory is not judged under AddressSanitizer "
		       "(its quarantine and shadow are the daemon's memory there)\n");
		skip();
	}
	if (all > MEM_LIMIT_KB)
		fail_msg("the daemon used %.1f MB, over 64 MB", all / 1024.0);
	if (last > first + MEM_SLACK_KB)
		fail_msg("the daemon's memory grew: %.1f MB in the first third, %.1f MB in the last",
		         first / 1024.0, last / 1024.0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_soak_every_event_in_order),
		cmocka_unit_test(test_soak_daemon_memory_flat),
	};
	return cmocka_run_group_tests_name("soak", tests, NULL, NULL);
}
