/*
 * tests/integration/test_durability.c - what funnel promises when things go
 * wrong: kill -9 under load, a tampered record, a stalled subscriber, a
 * daemon restart under a live subscriber.
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
	if (funnel_producer_new(&p, pr->endpoint, 2000) != FUNNEL_OK)
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

static void
test_kill9_under_load_loses_no_acked_event(void **state)
{
	(void)state;
	daemon_proc d;
	assert_int_equal(harness_start(&d, NULL), 0);

	for (int round = 0; round < 3; round++) {
		volatile int stop = 0;
		producer_run runs[PRODUCERS];
		pthread_t th[PRODUCERS];
		for (int i = 0; i < PRODUCERS; i++) {
			runs[i] = (producer_run){ .endpoint = d.ingest, .id = round * 10 + i, .stop = &stop,
			                          .acked_seq = calloc(PER_PRODUCER, sizeof(uint64_t)) };
			pthread_create(&th[i], NULL, produce, &runs[i]);
		}
		usleep(300000 + (useconds_t)(rand() % 400000));
		harness_kill9(&d);
		stop = 1;
		for (int i = 0; i < PRODUCERS; i++)
			pthread_join(th[i], NULL);
		assert_int_equal(harness_restart(&d), 0);

		funnel_query *q;
		assert_int_equal(funnel_query_new(&q, d.query, 10000), FUNNEL_OK);
		char **ids;
		uint64_t n = read_ids(q, &ids);
		size_t acked = 0;
		for (int i = 0; i < PRODUCERS; i++)
			acked += assert_acked_present(&runs[i], ids, n);
		assert_true(acked > 0);
		funnel_verify_result vr;
		assert_int_equal(funnel_verify(q, 0, 0, &vr), FUNNEL_OK);
		assert_int_equal(vr.checked, n);
		free_ids(ids, n);

		/* producers retry everything they attempted, same keys: no duplicates */
		funnel_producer *p;
		assert_int_equal(funnel_producer_new(&p, d.ingest, 10000), FUNNEL_OK);
		for (int i = 0; i < PRODUCERS; i++) {
			for (size_t e = 0; e < runs[i].attempted; e++) {
				char id[32], lead[32];
				event_id(id, sizeof id, runs[i].id, e);
				snprintf(lead, sizeof lead, "K-%d-%zu", runs[i].id, e);
				funnel_event ev = { .type = "lead.captured", .lead = lead, .id = id };
				funnel_ack ack;
				assert_int_equal(funnel_publish(p, &ev, 1, &ack), FUNNEL_OK);
				if (runs[i].acked_seq[e]) {
					assert_true(ack.dup);
					assert_int_equal(ack.seq, runs[i].acked_seq[e]);
				}
			}
			free(runs[i].acked_seq);
		}
		funnel_producer_destroy(&p);
		n = read_ids(q, &ids);
		assert_no_duplicate_ids(ids, n);
		free_ids(ids, n);
		funnel_query_destroy(&q);
	}
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
