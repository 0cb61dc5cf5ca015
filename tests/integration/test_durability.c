/*
 * tests/integration/test_durability.c - what funnel promises when things go
 * wrong: kill -9 under load at random moments for many rounds, a tampered
 * record, a stalled subscriber, a daemon restart under a live subscriber.
 */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>
#include <sodium.h>

#include "funnel/funnel.h"
#include "harness.h"
#include "workload.h"

#define PRODUCERS 4
#define PER_PRODUCER 20000

typedef struct producer_run {
	const char *endpoint;
	int id;
	volatile int *stop;
	uint64_t *acked_seq;      /* per event index: seq once acknowledged, 0 if not */
	size_t attempted;         /* events sent (acknowledged or not) */
} producer_run;

static void
event_id(char *buf, size_t len, int producer, size_t i)
{
	snprintf(buf, len, "p%d-e%zu", producer, i);
}

/* Publish single-event requests until stopped or the daemon goes away. */
static void *
produce(void *arg)
{
	producer_run *pr = arg;
	funnel_producer *p;
	msgpack_sbuffer sb;
	char id[32], lead[32];

	msgpack_sbuffer_init(&sb);
	/* short: after a kill -9 the request in flight waits this long for nothing */
	if (funnel_producer_new(&p, pr->endpoint, 500) != FUNNEL_OK)
		return NULL;
	for (size_t i = 0; i < PER_PRODUCER && !*pr->stop; i++) {
		sb.size = 0;
		wl_lead_data(&sb, (uint64_t)pr->id, i);
		event_id(id, sizeof id, pr->id, i);
		snprintf(lead, sizeof lead, "K-%d-%zu", pr->id, i);
		funnel_event ev = { .type = "lead.captured", .lead = lead, .id = id,
		                    .data = sb.data, .data_len = sb.size };
		funnel_ack ack;
		pr->attempted = i + 1;
		if (funnel_publish(p, &ev, 1, &ack) != FUNNEL_OK)
			break;
		pr->acked_seq[i] = ack.seq;
	}
	funnel_producer_destroy(&p);
	msgpack_sbuffer_destroy(&sb);
	return NULL;
}

/* Every record of the log, in order: checks seqs are gapless from 1 and
 * returns the ids in seq order (ids[seq-1], malloc'd, caller frees). */
static uint64_t
read_ids(funnel_query *q, char ***ids_out)
{
	funnel_replay_req req = { .from = 1, .limit = 10000 };
	funnel_page pg;
	msgpack_zone z;
	size_t cap = 1024, n = 0;
	char **ids = malloc(cap * sizeof *ids);

	msgpack_zone_init(&z, 4096);
	for (;;) {
		assert_int_equal(funnel_replay_page(q, &req, &pg), FUNNEL_OK);
		for (size_t i = 0; i < pg.n; i++) {
			funnel_record r;
			msgpack_zone_clear(&z);
			assert_int_equal(funnel_record_parse(pg.recs[i], pg.lens[i], &z, &r), FUNNEL_OK);
			assert_int_equal(r.seq, n + 1);
			if (n == cap) {
				cap *= 2;
				ids = realloc(ids, cap * sizeof *ids);
			}
			ids[n++] = r.id.ptr ? strndup(r.id.ptr, r.id.len) : strdup("");
		}
		int end = pg.end;
		req.from = pg.next;
		funnel_page_release(&pg);
		if (end)
			break;
	}
	msgpack_zone_destroy(&z);
	*ids_out = ids;
	return n;
}

static void
free_ids(char **ids, uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
}

static int
cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every id in the log is there once (sorted copy, neighbours compared). */
static void
assert_no_duplicate_ids(char **ids, uint64_t n)
{
	char **sorted = malloc((n ? n : 1) * sizeof *sorted);
	memcpy(sorted, ids, n * sizeof *sorted);
	qsort(sorted, n, sizeof *sorted, cmp_str);
	for (uint64_t i = 1; i < n; i++) {
		if (strcmp(sorted[i - 1], sorted[i]) == 0)
			fail_msg("id %s is stored twice", sorted[i]);
	}
	free(sorted);
}

/* Every acknowledged event of run is in the log at the seq it was
 * acknowledged with.  Returns how many were acknowledged. */
static size_t
assert_acked_present(const producer_run *run, char **ids, uint64_t n)
{
	size_t acked = 0;
	for (size_t e = 0; e < run->attempted; e++) {
		uint64_t seq = run->acked_seq[e];
		if (seq == 0)
			continue;
		char id[32];
		event_id(id, sizeof id, run->id, e);
		assert_true(seq <= n);
		assert_string_equal(ids[seq - 1], id);
		acked++;
	}
	return acked;
}

/* Rounds of the kill -9 test: FUNNEL_KILL_ROUNDS, else 30, about 35 s
 * (10 under AddressSanitizer, where everything runs a few times slower). */
static int
kill_rounds(void)
{
	const char *env = getenv("FUNNEL_KILL_ROUNDS");
	if (env && atoi(env) > 0)
		return atoi(env);
#if defined(__SANITIZE_ADDRESS__)
	return 10;
#else
	return 30;
#endif
}

static uint64_t
next_rand(uint64_t *x)
{
	/* xorshift64*: the whole run replays from the printed seed */
	*x ^= *x >> 12;
	*x ^= *x << 25;
	*x ^= *x >> 27;
	return *x * 2685821657736338717ull;
}

/*
 * Producers resend every event they attempted, the same events under the
 * same ids (a retry is the same content, PROTOCOL.md §6), 100 to a
 * request: an acknowledged event comes back as a duplicate at its acked
 * seq, an unacknowledged one is stored now or found stored (its ack was
 * lost with the daemon).  Returns how many were unacknowledged.
 */
static size_t
retry_attempted(const daemon_proc *d, const producer_run *runs, int nruns)
{
	funnel_producer *p;
	funnel_event evs[100];
	funnel_ack acks[100];
	char ids[100][32], leads[100][32];
	msgpack_sbuffer data[100];
	size_t unacked = 0;
	for (int k = 0; k < 100; k++)
		msgpack_sbuffer_init(&data[k]);
	assert_int_equal(funnel_producer_new(&p, d->ingest, 10000), FUNNEL_OK);
	for (int i = 0; i < nruns; i++) {
		const producer_run *r = &runs[i];
		for (size_t e0 = 0; e0 < r->attempted; e0 += 100) {
			size_t n = r->attempted - e0 < 100 ? r->attempted - e0 : 100;
			for (size_t k = 0; k < n; k++) {
				event_id(ids[k], sizeof ids[k], r->id, e0 + k);
				snprintf(leads[k], sizeof leads[k], "K-%d-%zu", r->id, e0 + k);
				data[k].size = 0;
				wl_lead_data(&data[k], (uint64_t)r->id, e0 + k);
				evs[k] = (funnel_event){ .type = "lead.captured", .lead = leads[k], .id = ids[k],
				                         .data = data[k].data, .data_len = data[k].size };
			}
			assert_int_equal(funnel_publish(p, evs, n, acks), FUNNEL_OK);
			for (size_t k = 0; k < n; k++) {
				uint64_t seq = r->acked_seq[e0 + k];
				if (seq) {
					assert_true(acks[k].dup);
					assert_int_equal(acks[k].seq, seq);
				} else {
					unacked++;
				}
			}
		}
	}
	funnel_producer_destroy(&p);
	for (int k = 0; k < 100; k++)
		msgpack_sbuffer_destroy(&data[k]);
	return unacked;
}

/*
 * kill -9 at a random moment while 4 producers publish, many rounds on
 * one log.  After each restart: every acknowledged event is in the log
 * exactly once at the seq it was acknowledged with, seqs are gapless, the
 * chain verifies; then the producers retry everything with the same ids
 * and no id is stored twice.  FUNNEL_KILL_ROUNDS sets the rounds,
 * FUNNEL_KILL_SEED replays a run (the seed is printed).
 */
static void
test_kill9_under_load_loses_no_acked_event(void **state)
{
	(void)state;
	daemon_proc d;
	int rounds = kill_rounds();
	const char *env = getenv("FUNNEL_KILL_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0) : ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
	uint64_t rng = seed ? seed : 1;
	uint64_t total_acked = 0, total_unacked = 0;
	printf("kill9: %d rounds, seed %" PRIu64 " (FUNNEL_KILL_SEED=%" PRIu64 " replays the delays)\n",
	       rounds, seed, seed);
	assert_int_equal(harness_start(&d, NULL), 0);

	for (int round = 0; round < rounds; round++) {
		volatile int stop = 0;
		producer_run runs[PRODUCERS];
		pthread_t th[PRODUCERS];
		/* between 100 ms and 1.1 s of load, then kill -9 */
		useconds_t delay = 100000 + (useconds_t)(next_rand(&rng) % 1000000);
		for (int i = 0; i < PRODUCERS; i++) {
			runs[i] = (producer_run){ .endpoint = d.ingest, .id = round * 10 + i, .stop = &stop,
			                          .acked_seq = calloc(PER_PRODUCER, sizeof(uint64_t)) };
			pthread_create(&th[i], NULL, produce, &runs[i]);
		}
		usleep(delay);
		harness_kill9(&d);
		stop = 1;
		for (int i = 0; i < PRODUCERS; i++)
			pthread_join(th[i], NULL);
		assert_int_equal(harness_restart(&d), 0);

		funnel_query *q;
		assert_int_equal(funnel_query_new(&q, d.query, 10000), FUNNEL_OK);
		char **ids;
		uint64_t n = read_ids(q, &ids);   /* gapless from 1 */
		size_t acked = 0;
		for (int i = 0; i < PRODUCERS; i++)
			acked += assert_acked_present(&runs[i], ids, n);
		assert_no_duplicate_ids(ids, n);   /* a round may end before any ack: that is no fault */
		funnel_verify_result vr;
		assert_int_equal(funnel_verify(q, 0, 0, &vr), FUNNEL_OK);
		assert_int_equal(vr.checked, n);
		free_ids(ids, n);

		size_t unacked = retry_attempted(&d, runs, PRODUCERS);
		n = read_ids(q, &ids);
		assert_no_duplicate_ids(ids, n);
		assert_int_equal(funnel_verify(q, 0, 0, &vr), FUNNEL_OK);
		assert_int_equal(vr.checked, n);
		free_ids(ids, n);
		funnel_query_destroy(&q);
		for (int i = 0; i < PRODUCERS; i++)
			free(runs[i].acked_seq);
		printf("kill9: round %d: killed after %u ms; %zu acked events all present once, "
		       "%zu unacked retried; log %" PRIu64 " records, chain verifies\n",
		       round + 1, (unsigned)(delay / 1000), acked, unacked, n);
		total_acked += acked;
		total_unacked += unacked;
	}
	assert_true(total_acked > 0);
	printf("kill9: %d rounds survived: %" PRIu64 " acknowledged events, 0 lost, 0 duplicated; "
	       "%" PRIu64 " unacknowledged retried without duplicates\n",
	       rounds, total_acked, total_unacked);
	harness_cleanup(&d);
}

/* Overwrite record `seq` in the LMDB file with `patch` applied. */
static void
tamper(const char *data_dir, uint64_t seq, int recompute_hash)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = { sizeof seq, &seq }, v;

	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
	assert_int_equal(mdb_env_set_mapsize(env, (size_t)1 << 30), 0);
	assert_int_equal(mdb_env_open(env, data_dir, 0, 0644), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "log", MDB_INTEGERKEY, &dbi), 0);
	assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
	uint8_t *copy = malloc(v.mv_size);
	memcpy(copy, v.mv_data, v.mv_size);
	/* change one character of the lead's email: "@" -> "#" */
	uint8_t *at = memchr(copy, '@', v.mv_size);
	assert_non_null(at);
	*at = '#';
	if (recompute_hash)
		crypto_generichash(copy + v.mv_size - 32, 32, copy, v.mv_size - 32, NULL, 0);
	MDB_val nv = { v.mv_size, copy };
	assert_int_equal(mdb_put(txn, dbi, &k, &nv, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	free(copy);
}

/* Run `funnel verify` and capture its output; returns the exit status. */
static int
run_verify(const daemon_proc *d, char *out, size_t outlen)
{
	char cmd[1024];
	snprintf(cmd, sizeof cmd, "%s verify --query %s 2>&1", harness_bin("funnel"), d->query);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	size_t n = fread(out, 1, outlen - 1, f);
	out[n] = '\0';
	int st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void
test_tampered_record_is_named(void **state)
{
	(void)state;
	daemon_proc d;
	funnel_producer *p;
	msgpack_sbuffer sb;
	char out[4096], lead[32];

	assert_int_equal(harness_start(&d, NULL), 0);
	assert_int_equal(funnel_producer_new(&p, d.ingest, 10000), FUNNEL_OK);
	msgpack_sbuffer_init(&sb);
	for (int i = 0; i < 200; i++) {
		sb.size = 0;
		wl_lead_data(&sb, 3, (uint64_t)i);
		snprintf(lead, sizeof lead, "V-%d", i);
		funnel_event ev = { .type = "lead.captured", .lead = lead, .data = sb.data, .data_len = sb.size };
		funnel_ack ack;
		assert_int_equal(funnel_publish(p, &ev, 1, &ack), FUNNEL_OK);
	}
	msgpack_sbuffer_destroy(&sb);
	funnel_producer_destroy(&p);

	assert_int_equal(run_verify(&d, out, sizeof out), 0);
	assert_non_null(strstr(out, "200"));

	/* alter record 137's content in place */
	assert_int_equal(harness_stop(&d), 0);
	tamper(d.data, 137, 0);
	assert_int_equal(harness_restart(&d), 0);
	int rc = run_verify(&d, out, sizeof out);
	assert_int_not_equal(rc, 0);
	if (strstr(out, "137") == NULL)
		fail_msg("verify did not name seq 137: %s", out);

	funnel_query *q;
	funnel_verify_result vr;
	assert_int_equal(funnel_query_new(&q, d.query, 10000), FUNNEL_OK);
	assert_int_equal(funnel_verify(q, 0, 0, &vr), FUNNEL_ECHAIN);
	assert_int_equal(vr.bad_seq, 137);
	assert_int_equal(vr.last_good, 136);

	/* a forger who also recomputes the record's own hash breaks the link to 138 */
	assert_int_equal(harness_stop(&d), 0);
	tamper(d.data, 50, 1);
	assert_int_equal(harness_restart(&d), 0);
	assert_int_equal(funnel_verify(q, 0, 0, &vr), FUNNEL_ECHAIN);
	assert_int_equal(vr.bad_seq, 51);
	funnel_query_destroy(&q);
	harness_cleanup(&d);
}

static void
expect_in_order(funnel_subscriber *s, uint64_t from, uint64_t to)
{
	for (uint64_t want = from; want <= to; want++) {
		const uint8_t *rec;
		size_t len;
		uint64_t seq;
		int rc = funnel_subscriber_next(s, 10000, &rec, &len);
		if (rc != FUNNEL_OK)
			fail_msg("waiting for seq %" PRIu64 ": %s", want, funnel_errname(rc));
		assert_int_equal(funnel_record_peek(rec, len, &seq, NULL), FUNNEL_OK);
		if (seq != want)
			fail_msg("got seq %" PRIu64 ", want %" PRIu64, seq, want);
	}
}

static void
publish_n(const daemon_proc *d, int n, int batch)
{
	funnel_producer *p;
	funnel_event evs[100];
	funnel_ack acks[100];
	assert_int_equal(funnel_producer_new(&p, d->ingest, 10000), FUNNEL_OK);
	for (int i = 0; i < 100; i++)
		evs[i] = (funnel_event){ .type = "x.tick" };
	for (int i = 0; i < n; i += batch)
		assert_int_equal(funnel_publish(p, evs, (size_t)batch, acks), FUNNEL_OK);
	funnel_producer_destroy(&p);
}

static void
test_stalled_subscriber_gets_everything_in_order(void **state)
{
	(void)state;
	daemon_proc d;
	funnel_subscriber *s;
	assert_int_equal(harness_start(&d, "--pub-hwm 50"), 0);
	funnel_sub_opts o = { .publish = d.publish, .query = d.query, .from = 1, .live = 1, .rcvhwm = 50 };
	assert_int_equal(funnel_subscriber_new(&s, &o), FUNNEL_OK);
	publish_n(&d, 10, 10);
	expect_in_order(s, 1, 10);      /* now live */
	publish_n(&d, 20000, 100);      /* the subscriber reads nothing meanwhile */
	expect_in_order(s, 11, 20010);
	funnel_sub_stats st;
	funnel_subscriber_stats(s, &st);
	assert_true(st.from_replay > 0);   /* what the high-water mark dropped came from replay */
	funnel_subscriber_destroy(&s);
	harness_cleanup(&d);
}

static void
test_subscriber_survives_daemon_kill9(void **state)
{
	(void)state;
	daemon_proc d;
	funnel_subscriber *s;
	assert_int_equal(harness_start(&d, NULL), 0);
	funnel_sub_opts o = { .publish = d.publish, .query = d.query, .from = 1, .live = 1 };
	assert_int_equal(funnel_subscriber_new(&s, &o), FUNNEL_OK);
	publish_n(&d, 300, 100);
	expect_in_order(s, 1, 150);
	harness_kill9(&d);
	assert_int_equal(harness_restart(&d), 0);
	publish_n(&d, 300, 100);
	expect_in_order(s, 151, 600);
	/* nothing more than what was published */
	const uint8_t *rec;
	size_t len;
	assert_int_equal(funnel_subscriber_next(s, 300, &rec, &len), FUNNEL_ETIMEDOUT);
	funnel_subscriber_destroy(&s);
	harness_cleanup(&d);
}

static void
test_sigterm_acks_batch_in_hand(void **state)
{
	(void)state;
	daemon_proc d;
	assert_int_equal(harness_start(&d, NULL), 0);
	volatile int stop = 0;
	producer_run runs[2];
	pthread_t th[2];
	for (int i = 0; i < 2; i++) {
		runs[i] = (producer_run){ .endpoint = d.ingest, .id = 90 + i, .stop = &stop,
		                          .acked_seq = calloc(PER_PRODUCER, sizeof(uint64_t)) };
		pthread_create(&th[i], NULL, produce, &runs[i]);
	}
	usleep(300000);
	assert_int_equal(harness_stop(&d), 0);   /* exits 0 */
	stop = 1;
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(harness_restart(&d), 0);
	funnel_query *q;
	assert_int_equal(funnel_query_new(&q, d.query, 10000), FUNNEL_OK);
	char **ids;
	uint64_t n = read_ids(q, &ids);
	size_t acked = 0;
	for (int i = 0; i < 2; i++) {
		acked += assert_acked_present(&runs[i], ids, n);
		free(runs[i].acked_seq);
	}
	assert_true(acked > 0);
	assert_no_duplicate_ids(ids, n);
	free_ids(ids, n);
	funnel_query_destroy(&q);
	harness_cleanup(&d);
}

int
main(void)
{
	srand((unsigned)getpid());
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_kill9_under_load_loses_no_acked_event),
		cmocka_unit_test(test_tampered_record_is_named),
		cmocka_unit_test(test_stalled_subscriber_gets_everything_in_order),
		cmocka_unit_test(test_subscriber_survives_daemon_kill9),
		cmocka_unit_test(test_sigterm_acks_batch_in_hand),
	};
	return cmocka_run_group_tests_name("durability", tests, NULL, NULL);
}
