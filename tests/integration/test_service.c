/*
 * tests/integration/test_service.c - the service runtime (funnel/service.h)
 * against a real funneld: a small service that counts each lead's events
 * in its view and derives one x.echo event per lead.captured, a tick
 * that records how many leads the committed view holds, and a decider
 * whose decisions (x.claim) a person's earlier event makes the log drop;
 * the same count through the runtime's funnel_store, read back by a
 * funnel_view_reader.
 *
 * Services run in forked children, so they can be killed with SIGKILL for
 * real; views are real LMDB environments in the daemon's temp dir.
 */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "funnel/funnel.h"
#include "funnel/service.h"
#include "harness.h"
#include "bytes.h"
#include "mp.h"
#include "workload.h"

/* ---- the test service ---- */

/* counts: lead -> u64 (events naming the lead, x.* excluded).  Every
 * lead.captured derives x.echo {lead, n} with key "echo". */
static int
count_apply(funnel_service *svc, const funnel_record *rec, void *ctx)
{
	char lead[160];
	uint64_t n = 0;
	const void *v;
	size_t vlen;
	(void)ctx;

	if (rec->lead.ptr == NULL || rec->type.len < 2 || memcmp(rec->type.ptr, "x.", 2) == 0)
		return FUNNEL_OK;
	MDB_dbi t = funnel_service_table(svc, "counts");
	if (funnel_service_get(svc, t, rec->lead.ptr, rec->lead.len, &v, &vlen) == FUNNEL_OK &&
	    vlen == sizeof n)
		memcpy(&n, v, sizeof n);
	n++;
	int rc = funnel_service_put(svc, t, rec->lead.ptr, rec->lead.len, &n, sizeof n);
	if (rc != FUNNEL_OK)
		return rc;
	if (rec->type.len == 13 && memcmp(rec->type.ptr, "lead.captured", 13) == 0) {
		msgpack_sbuffer sb;
		msgpack_packer pk;
		snprintf(lead, sizeof lead, "%.*s", (int)rec->lead.len, rec->lead.ptr);
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		msgpack_pack_map(&pk, 2);
		msgpack_pack_str_with_body(&pk, "lead", 4);
		msgpack_pack_str_with_body(&pk, lead, strlen(lead));
		msgpack_pack_str_with_body(&pk, "n", 1);
		msgpack_pack_uint64(&pk, n);
		funnel_event ev = { .type = "x.echo", .data = sb.data, .data_len = sb.size };
		rc = funnel_service_emit(svc, &ev, "echo");
		msgpack_sbuffer_destroy(&sb);
	}
	return rc;
}

/* The same counts kept in memory for the batch (the leads it changed,
 * counts[0..n)) and written by opts.before_commit; opts.on_abort drops
 * them.  Each hook call is counted: a batch thrown away must have been
 * dropped, or its counts would be added twice when it is applied again.
 * No derived events: count_apply's run sends them, with the same ids. */
#define HELD_MAX 8192
static struct {
	char lead[HELD_MAX][64];
	uint64_t n[HELD_MAX];
	size_t count;
	unsigned flushes, aborts;
} held;

static int
held_apply(funnel_service *svc, const funnel_record *rec, void *ctx)
{
	const void *v;
	size_t vlen, i;
	(void)ctx;
	if (rec->lead.ptr == NULL || rec->type.len < 2 || memcmp(rec->type.ptr, "x.", 2) == 0)
		return FUNNEL_OK;
	if (rec->lead.len >= sizeof held.lead[0])
		return FUNNEL_EINVAL;
	for (i = 0; i < held.count; i++)
		if (strlen(held.lead[i]) == rec->lead.len &&
		    memcmp(held.lead[i], rec->lead.ptr, rec->lead.len) == 0)
			break;
	if (i == held.count) {
		if (held.count == HELD_MAX)
			return FUNNEL_ETOOBIG;
		memcpy(held.lead[i], rec->lead.ptr, rec->lead.len);
		held.lead[i][rec->lead.len] = 0;
		held.n[i] = 0;
		if (funnel_service_get(svc, funnel_service_table(svc, "counts"), rec->lead.ptr,
		                       rec->lead.len, &v, &vlen) == FUNNEL_OK && vlen == sizeof held.n[i])
			memcpy(&held.n[i], v, vlen);
		held.count++;
		/* the row as it was, written back: pages written in apply(),
		 * so the map also fills there (held_flush writes the count) */
		int rc = funnel_service_put(svc, funnel_service_table(svc, "counts"), rec->lead.ptr,
		                            rec->lead.len, &held.n[i], sizeof held.n[i]);
		if (rc != FUNNEL_OK)
			return rc;
	}
	held.n[i]++;
	return FUNNEL_OK;
}

static int
held_flush(funnel_service *svc, void *ctx)
{
	int rc = FUNNEL_OK;
	(void)ctx;
	held.flushes++;
	for (size_t i = 0; i < held.count && rc == FUNNEL_OK; i++)
		rc = funnel_service_put(svc, funnel_service_table(svc, "counts"), held.lead[i],
		                        strlen(held.lead[i]), &held.n[i], sizeof held.n[i]);
	held.count = 0;
	return rc;
}

static void
held_drop(funnel_service *svc, void *ctx)
{
	(void)svc;
	(void)ctx;
	held.aborts++;
	held.count = 0;
}

/* The tick: the number of leads in the committed view, recorded as
 * x.tick {leads: n} with the id "tick-<n>" (once per count). */
static int
count_tick(funnel_service *svc, MDB_txn *view, void *ctx)
{
	MDB_stat st;
	char id[64];
	(void)ctx;
	if (mdb_stat(view, funnel_service_table(svc, "counts"), &st) != 0)
		return FUNNEL_ESTORAGE;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	msgpack_pack_str_with_body(&pk, "leads", 5);
	msgpack_pack_uint64(&pk, st.ms_entries);
	snprintf(id, sizeof id, "tick-%zu", (size_t)st.ms_entries);
	funnel_event ev = { .type = "x.tick", .id = id, .data = sb.data, .data_len = sb.size };
	int rc = funnel_service_send(svc, &ev, NULL);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

typedef struct svc_args {
	const daemon_proc *d;
	const char *view;
	int rebuild, until_head, batch;
	const char *ready;
	size_t map_size;
	int tick;                 /* 1: count_tick every 50 ms */
} svc_args;

static funnel_service *child_svc;

static void
on_term(int sig)
{
	(void)sig;
	funnel_service_stop(child_svc);
}

/* Run the service in this process; returns the run's code. */
static int
run_service(const svc_args *a)
{
	funnel_service_opts o = {
		.name = "counter",
		.view_dir = a->view,
		.ingest = a->d->ingest,
		.publish = a->d->publish,
		.query = a->d->query,
		.tables = { "counts" },
		.rebuild = a->rebuild,
		.until_head = a->until_head,
		.batch_events = a->batch ? (unsigned)a->batch : 0,
		.timeout_ms = 2000,
		.ready_file = a->ready,
		.map_size = a->map_size,
		.tick = a->tick ? count_tick : NULL,
		.tick_ms = 50,
	};
	int rc = funnel_service_new(&child_svc, &o, count_apply, NULL);
	if (rc != FUNNEL_OK)
		return rc;
	signal(SIGTERM, on_term);
	rc = funnel_service_run(child_svc);
	funnel_service_destroy(&child_svc);
	return rc;
}

static pid_t
spawn_service(const svc_args *a)
{
	pid_t pid = fork();
	if (pid == 0)
		_exit(run_service(a));
	return pid;
}

/* Run to the head in a child; returns its exit code. */
static int
service_until_head_map(const daemon_proc *d, const char *view, int rebuild, size_t map_size)
{
	svc_args a = { d, view, rebuild, 1, 0, NULL, map_size };
	pid_t pid = spawn_service(&a);
	int st;
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

static int
service_until_head(const daemon_proc *d, const char *view, int rebuild)
{
	return service_until_head_map(d, view, rebuild, 0);
}

/* ---- log helpers ---- */

static void
publish_leads(const daemon_proc *d, const char *prefix, int from, int n, int activities)
{
	funnel_producer *p;
	msgpack_sbuffer sb;
	char lead[64], id[96];

	assert_int_equal(funnel_producer_new(&p, d->ingest, 5000), FUNNEL_OK);
	msgpack_sbuffer_init(&sb);
	for (int i = from; i < from + n; i++) {
		snprintf(lead, sizeof lead, "%s-%d", prefix, i);
		sb.size = 0;
		wl_lead_data(&sb, 7, (uint64_t)i);
		snprintf(id, sizeof id, "cap-%s", lead);
		funnel_event ev = { .type = "lead.captured", .lead = lead, .id = id,
		                    .data = sb.data, .data_len = sb.size };
		assert_int_equal(funnel_publish(p, &ev, 1, NULL), FUNNEL_OK);
		for (int k = 0; k < activities; k++) {
			sb.size = 0;
			wl_kv(&sb, "kind", "page_view", "url", "/pricing", NULL);
			snprintf(id, sizeof id, "act-%s-%d", lead, k);
			funnel_event ac = { .type = "lead.activity", .lead = lead, .id = id,
			                    .data = sb.data, .data_len = sb.size };
			assert_int_equal(funnel_publish(p, &ac, 1, NULL), FUNNEL_OK);
		}
	}
	msgpack_sbuffer_destroy(&sb);
	funnel_producer_destroy(&p);
}

/* What count_echoes learns from the log, seq by seq. */
typedef struct echo_walk {
	uint64_t echoes, captures;
	uint8_t is_capture[1 << 16], caused[1 << 16];
} echo_walk;

static int
echo_record(const funnel_record *r, void *ctx)
{
	echo_walk *w = ctx;
	assert_true(r->seq < sizeof w->is_capture);
	if (r->type.len == 13 && memcmp(r->type.ptr, "lead.captured", 13) == 0) {
		w->is_capture[r->seq] = 1;
		w->captures++;
	} else if (r->type.len == 6 && memcmp(r->type.ptr, "x.echo", 6) == 0) {
		assert_true(r->has_cause);
		assert_true(r->cause < r->seq);
		assert_true(w->is_capture[r->cause]);
		assert_false(w->caused[r->cause]);       /* never doubled */
		w->caused[r->cause] = 1;
		w->echoes++;
	}
	return FUNNEL_OK;
}

/* Count x.echo records in the log; every one must have a distinct cause
 * that is a lead.captured record.  Returns the number of x.echo records;
 * *captures gets the number of lead.captured records. */
static uint64_t
count_echoes(const daemon_proc *d, uint64_t *captures)
{
	funnel_query *q;
	funnel_replay_req req = { .from = 1, .limit = 10000 };
	echo_walk *w = calloc(1, sizeof *w);

	assert_non_null(w);
	assert_int_equal(funnel_query_new(&q, d->query, 5000), FUNNEL_OK);
	assert_int_equal(funnel_replay_each(q, &req, echo_record, w), FUNNEL_OK);
	funnel_query_destroy(&q);
	uint64_t echoes = w->echoes;
	*captures = w->captures;
	free(w);
	return echoes;
}

typedef struct pub_args {
	const daemon_proc *d;
	int from, n;
} pub_args;

static void *
publish_thread(void *arg)
{
	pub_args *pa = arg;
	publish_leads(pa->d, "K", pa->from, pa->n, 1);
	return NULL;
}

static void
digest_of(const char *view, uint8_t out[32], uint64_t *cp)
{
	assert_int_equal(funnel_view_digest(view, out, cp), FUNNEL_OK);
}

/* ---- tests ---- */

static void
test_until_head_rebuild_identical(void **state)
{
	daemon_proc d;
	char view[400], view2[400];
	uint8_t a[32], b[32], c[32];
	uint64_t cpa, cpb, cpc, caps;
	(void)state;

	assert_int_equal(harness_start(&d, NULL), 0);
	snprintf(view, sizeof view, "%s/view", d.dir);
	snprintf(view2, sizeof view2, "%s/view2", d.dir);
	publish_leads(&d, "A", 0, 200, 2);

	assert_int_equal(service_until_head(&d, view, 0), 0);
	assert_int_equal(count_echoes(&d, &caps), 200);
	/* Once more: the echoes are now in the log; the view reaches the
	 * new head and derives nothing new. */
	assert_int_equal(service_until_head(&d, view, 0), 0);
	digest_of(view, a, &cpa);
	funnel_query *q;
	funnel_status st;
	assert_int_equal(funnel_query_new(&q, d.query, 5000), FUNNEL_OK);
	assert_int_equal(funnel_status_get(q, &st), FUNNEL_OK);
	assert_int_equal(cpa, st.head);

	/* --rebuild: same view, nothing sent again. */
	assert_int_equal(service_until_head(&d, view, 1), 0);
	digest_of(view, b, &cpb);
	assert_int_equal(cpb, cpa);
	assert_memory_equal(a, b, 32);
	/* A view built from nothing elsewhere (no memory of what was sent):
	 * its derived events are duplicates the log drops. */
	assert_int_equal(service_until_head(&d, view2, 0), 0);
	digest_of(view2, c, &cpc);
	assert_int_equal(cpc, cpa);
	assert_memory_equal(a, c, 32);
	assert_int_equal(count_echoes(&d, &caps), 200);
	assert_int_equal(caps, 200);
	assert_int_equal(funnel_status_get(q, &st), FUNNEL_OK);
	assert_int_equal(st.head, cpa);          /* nothing appended */

	/* A different log under the same view is refused. */
	funnel_query_destroy(&q);
	daemon_proc d2;
	assert_int_equal(harness_start(&d2, NULL), 0);
	publish_leads(&d2, "B", 0, 1000, 0);
	assert_int_equal(service_until_head(&d2, view2, 0), FUNNEL_ECHAIN);
	digest_of(view2, c, &cpc);
	assert_int_equal(cpc, cpa);              /* and left as it was */
	harness_cleanup(&d2);
	harness_cleanup(&d);
}

/* kill -9 of the service at random moments while events arrive: after
 * the last restart, each capture has exactly one echo, and the view
 * equals a rebuild from scratch. */
static void
test_kill9_service_equals_rebuild(void **state)
{
	daemon_proc d;
	char view[400], fresh[400], ready[400];
	uint8_t a[32], b[32];
	uint64_t cpa, cpb, caps;
	(void)state;

	assert_int_equal(harness_start(&d, NULL), 0);
	snprintf(view, sizeof view, "%s/view", d.dir);
	snprintf(fresh, sizeof fresh, "%s/fresh", d.dir);
	snprintf(ready, sizeof ready, "%s/svc.ready", d.dir);
	srand(42);
	int rounds = 8, per_round = 300;
	for (int r = 0; r < rounds; r++) {
		svc_args sa = { &d, view, 0, 0, 7, ready };
		pid_t pid = spawn_service(&sa);
		assert_true(pid > 0);
		/* the service follows the log live while leads arrive, and
		 * dies at a random moment of it */
		pub_args pa = { &d, r * per_round, per_round };
		pthread_t th;
		assert_int_equal(pthread_create(&th, NULL, publish_thread, &pa), 0);
		usleep((useconds_t)(rand() % 150000));
		kill(pid, SIGKILL);
		pthread_join(th, NULL);
		int st;
		assert_int_equal(waitpid(pid, &st, 0), pid);
		assert_true(WIFSIGNALED(st));
	}
	assert_int_equal(service_until_head(&d, view, 0), 0);
	assert_int_equal(count_echoes(&d, &caps), (uint64_t)rounds * per_round);
	assert_int_equal(caps, (uint64_t)rounds * per_round);

	/* settle: the view has seen the last echoes */
	assert_int_equal(service_until_head(&d, view, 0), 0);
	assert_int_equal(service_until_head(&d, fresh, 0), 0);
	digest_of(view, a, &cpa);
	digest_of(fresh, b, &cpb);
	assert_int_equal(cpa, cpb);
	assert_memory_equal(a, b, 32);
	harness_cleanup(&d);
}

/* SIGTERM: the batch in hand is committed, exit 0, resume from there. */
static void
test_sigterm_and_resume(void **state)
{
	daemon_proc d;
	char view[400], ready[400];
	uint64_t cp, caps;
	uint8_t dg[32];
	(void)state;

	assert_int_equal(harness_start(&d, NULL), 0);
	snprintf(view, sizeof view, "%s/view", d.dir);
	snprintf(ready, sizeof ready, "%s/svc.ready", d.dir);
	publish_leads(&d, "T", 0, 100, 0);
	svc_args sa = { &d, view, 0, 0, 0, ready };
	pid_t pid = spawn_service(&sa);
	for (int i = 0; i < 500 && access(ready, F_OK) != 0; i++)
		usleep(10000);
	assert_int_equal(access(ready, F_OK), 0);
	/* wait until all 100 echoes are stored (bounded) */
	for (int i = 0; i < 500 && count_echoes(&d, &caps) < 100; i++)
		usleep(10000);
	assert_int_equal(count_echoes(&d, &caps), 100);
	kill(pid, SIGTERM);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	digest_of(view, dg, &cp);
	assert_true(cp >= 100);
	publish_leads(&d, "T", 100, 50, 0);
	assert_int_equal(service_until_head(&d, view, 0), 0);
	assert_int_equal(count_echoes(&d, &caps), 150);
	harness_cleanup(&d);
}

/* The highest x.tick {leads} in the log, and how many x.tick records. */
static uint64_t
max_tick(const daemon_proc *d, uint64_t *nticks)
{
	funnel_query *q;
	funnel_replay_req req = { .from = 1, .type = "x.tick", .limit = 1000 };
	funnel_page pg;
	msgpack_zone z;
	funnel_record r;
	uint64_t max = 0, leads;

	*nticks = 0;
	assert_int_equal(funnel_query_new(&q, d->query, 5000), FUNNEL_OK);
	assert_int_equal(funnel_replay_page(q, &req, &pg), FUNNEL_OK);
	msgpack_zone_init(&z, 1024);
	for (size_t i = 0; i < pg.n; i++) {
		assert_int_equal(funnel_record_parse(pg.recs[i], pg.lens[i], &z, &r), FUNNEL_OK);
		assert_int_equal(mp_get_u64(r.data, "leads", &leads, NULL), FUNNEL_OK);
		if (leads > max)
			max = leads;
		(*nticks)++;
	}
	msgpack_zone_destroy(&z);
	funnel_page_release(&pg);
	funnel_query_destroy(&q);
	return max;
}

/* The tick runs on the committed view once the feed has caught up, sends
 * what it decides, and never runs in a bounded run to the head. */
static void
test_tick(void **state)
{
	daemon_proc d;
	char view[400], ready[400];
	uint64_t n = 0;
	(void)state;

	assert_int_equal(harness_start(&d, NULL), 0);
	snprintf(view, sizeof view, "%s/view", d.dir);
	snprintf(ready, sizeof ready, "%s/svc.ready", d.dir);
	publish_leads(&d, "Q", 0, 20, 0);
	svc_args until = { &d, view, 0, 1, 0, NULL, 0, 1 };
	pid_t pid = spawn_service(&until);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_int_equal(max_tick(&d, &n), 0);
	assert_int_equal(n, 0);                         /* no tick with until_head */
	svc_args live = { &d, view, 0, 0, 0, ready, 0, 1 };
	pid = spawn_service(&live);
	publish_leads(&d, "Q", 20, 10, 0);
	for (int i = 0; i < 500 && max_tick(&d, &n) < 30; i++)
		usleep(10000);
	assert_int_equal(max_tick(&d, &n), 30);         /* it saw the committed view */
	kill(pid, SIGTERM);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	harness_cleanup(&d);
}

/* A view that starts with a map far too small: the batch that fills it
 * is applied again in a bigger map, a rebuild that fills it likewise, and
 * the result equals a view that never had to grow. */
static void
test_view_map_grows(void **state)
{
	daemon_proc d;
	char small[400], big[400];
	uint8_t a[32], b[32];
	uint64_t cpa, cpb, caps;
	(void)state;

	assert_int_equal(harness_start(&d, NULL), 0);
	snprintf(small, sizeof small, "%s/small", d.dir);
	snprintf(big, sizeof big, "%s/big", d.dir);
	publish_leads(&d, "G-with-a-rather-long-lead-id-to-fill-pages", 0, 3000, 0);
	assert_int_equal(service_until_head_map(&d, small, 0, 64 << 10), 0);
	assert_int_equal(count_echoes(&d, &caps), 3000);
	assert_int_equal(service_until_head_map(&d, small, 0, 64 << 10), 0);
	assert_int_equal(service_until_head_map(&d, small, 1, 64 << 10), 0);
	assert_int_equal(service_until_head(&d, big, 0), 0);
	digest_of(small, a, &cpa);
	digest_of(big, b, &cpb);
	assert_int_equal(cpa, cpb);
	assert_memory_equal(a, b, 32);
	harness_cleanup(&d);
}

/* before_commit and on_abort: a service that keeps its batch's counts
 * in memory, in a map that starts at 64 KiB (full in apply() and in
 * before_commit, batches thrown away and applied again), builds the
 * view count_apply builds in a large map.  The child exits 0 only if
 * the hooks were called: a flush per commit, and a drop at least once. */
static int
held_until_head(const daemon_proc *d, const char *view)
{
	pid_t pid = fork();
	if (pid == 0) {
		funnel_service_opts o = {
			.name = "counter", .view_dir = view, .ingest = d->ingest,
			.publish = d->publish, .query = d->query, .tables = { "counts" },
			.until_head = 1, .no_emit = 1, .batch_events = 1000000, .timeout_ms = 2000,
			.map_size = 64 << 10, .before_commit = held_flush, .on_abort = held_drop,
		};
		funnel_service *svc;
		funnel_service_stats st;
		int rc = funnel_service_new(&svc, &o, held_apply, NULL);
		if (rc == FUNNEL_OK)
			rc = funnel_service_run(svc);
		if (rc == FUNNEL_OK) {
			funnel_service_stats_get(svc, &st);
			if (held.flushes < st.commits || held.aborts == 0)
				rc = 99;
		}
		funnel_service_destroy(&svc);
		_exit(rc);
	}
	int st;
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
		return -1;
	return WEXITSTATUS(st);
}

static void
test_batch_hooks(void **state)
{
	daemon_proc d;
	char held_view[400], big[400];
	uint8_t a[32], b[32];
	uint64_t cpa, cpb;
	(void)state;

	assert_int_equal(harness_start(&d, NULL), 0);
	snprintf(held_view, sizeof held_view, "%s/held", d.dir);
	snprintf(big, sizeof big, "%s/big", d.dir);
	publish_leads(&d, "H-with-a-rather-long-lead-id-to-fill-pages", 0, 3000, 1);
	/* count_apply's view; its x.echo events are in the log once it is
	 * at the head the second time */
	assert_int_equal(service_until_head(&d, big, 0), 0);
	assert_int_equal(service_until_head(&d, big, 0), 0);
	assert_int_equal(held_until_head(&d, held_view), 0);
	digest_of(held_view, a, &cpa);
	digest_of(big, b, &cpb);
	assert_int_equal(cpa, cpb);
	assert_memory_equal(a, b, 32);
	harness_cleanup(&d);
}

/* A service may not name a table "_runtime" (the runtime's own): the
 * refusal is FUNNEL_EINVAL, before anything is opened. */
static void
test_runtime_table_name_refused(void **state)
{
	(void)state;
	funnel_service *svc = (funnel_service *)&svc;
	funnel_service_opts o = { .name = "counter", .view_dir = "/nonexistent/view",
	                          .tables = { "counts", "_runtime" } };
	assert_int_equal(funnel_service_new(&svc, &o, count_apply, NULL), FUNNEL_EINVAL);
	assert_null(svc);
	assert_int_equal(access("/nonexistent/view", F_OK), -1);
}

/* ---- the store ---- */

/* count_apply's view, written through the runtime's store (table 0 is
 * "counts"): no emit. */
static int
store_apply(funnel_service *svc, const funnel_record *rec, void *ctx)
{
	const funnel_store *st = funnel_service_store(svc);
	uint64_t n = 0;
	const void *v;
	size_t vlen;
	(void)ctx;

	if (rec->lead.ptr == NULL || rec->type.len < 2 || memcmp(rec->type.ptr, "x.", 2) == 0)
		return FUNNEL_OK;
	if (st->get(st->ctx, 0, rec->lead.ptr, rec->lead.len, &v, &vlen) == FUNNEL_OK &&
	    vlen == sizeof n)
		memcpy(&n, v, sizeof n);
	n++;
	return st->put(st->ctx, 0, rec->lead.ptr, rec->lead.len, &n, sizeof n);
}

/* An engine over funnel_service_store builds the view the same calls by
 * handle build (equal digests), and a funnel_view_reader reads it back:
 * its rows, the runtime's checkpoint; it refuses writes, a view without
 * the table, more tables than a view holds, no view at all. */
static void
test_store_and_reader(void **state)
{
	(void)state;
	static const char *const tables[] = { "counts", FUNNEL_SERVICE_RUNTIME_TABLE, NULL };
	static const char *const other[] = { "counts", "nope", NULL };
	daemon_proc d;
	char va[512], vb[512], why[256];
	uint8_t a[32], b[32];
	uint64_t cpa, cpb, n = 0;
	funnel_service *svc;
	funnel_view_reader r;
	const void *v;
	size_t vlen;

	assert_int_equal(harness_start(&d, NULL), 0);
	snprintf(va, sizeof va, "%s/by-handle", d.dir);
	snprintf(vb, sizeof vb, "%s/by-store", d.dir);
	publish_leads(&d, "S", 0, 50, 2);
	assert_int_equal(service_until_head(&d, va, 0), 0);
	funnel_service_opts o = { .name = "counter", .view_dir = vb, .ingest = d.ingest,
	                          .publish = d.publish, .query = d.query, .tables = { "counts" },
	                          .until_head = 1, .no_emit = 1, .timeout_ms = 2000 };
	assert_int_equal(funnel_service_new(&svc, &o, store_apply, NULL), FUNNEL_OK);
	assert_int_equal(funnel_service_run(svc), FUNNEL_OK);
	funnel_service_destroy(&svc);
	assert_int_equal(service_until_head(&d, va, 0), 0);   /* past the echoes too */
	digest_of(va, a, &cpa);
	digest_of(vb, b, &cpb);
	assert_int_equal(cpa, cpb);
	assert_memory_equal(a, b, 32);

	assert_int_equal(funnel_view_reader_open(&r, vb, tables, why, sizeof why), FUNNEL_OK);
	assert_int_equal(r.ntables, 2);
	assert_int_equal(r.store.get(r.store.ctx, 0, "S-7", 3, &v, &vlen), FUNNEL_OK);
	assert_int_equal(vlen, sizeof n);
	memcpy(&n, v, sizeof n);
	assert_int_equal(n, 3);                               /* captured + 2 activities */
	assert_int_equal(r.store.get(r.store.ctx, 0, "S-none", 6, &v, &vlen), FUNNEL_ENOTFOUND);
	assert_int_equal(r.store.get(r.store.ctx, 1, "checkpoint", 10, &v, &vlen), FUNNEL_OK);
	assert_int_equal(vlen, 8);
	assert_int_equal(fp_get_be64(v), cpb);
	assert_int_equal(r.store.put(r.store.ctx, 0, "S-7", 3, &n, sizeof n), FUNNEL_EINVAL);
	assert_int_equal(r.store.del(r.store.ctx, 0, "S-7", 3), FUNNEL_EINVAL);
	funnel_view_reader_close(&r);
	assert_null(r.env);

	assert_int_equal(funnel_view_reader_open(&r, vb, other, why, sizeof why), FUNNEL_ENOTFOUND);
	assert_non_null(strstr(why, "nope"));
	assert_null(r.env);
	const char *many[FUNNEL_SERVICE_MAX_TABLES + 3];
	for (size_t i = 0; i < FUNNEL_SERVICE_MAX_TABLES + 2; i++)
		many[i] = "counts";
	many[FUNNEL_SERVICE_MAX_TABLES + 2] = NULL;
	assert_int_equal(funnel_view_reader_open(&r, vb, many, why, sizeof why), FUNNEL_EINVAL);
	assert_non_null(strstr(why, "tables"));
	assert_null(r.env);
	snprintf(vb, sizeof vb, "%s/no-view-here", d.dir);
	assert_int_equal(funnel_view_reader_open(&r, vb, tables, why, sizeof why), FUNNEL_ESTORAGE);
	assert_true(why[0] != 0);
	harness_cleanup(&d);
}

/* ---- decisions: a person acts first ---- */

/* The decider: each lead.captured decides x.claim for its lead (a
 * conditional decision, undo bytes "undo-<seq>").  When the log shows a
 * claim was dropped, it records what the runtime said as x.dropped
 * {cause, undo} (unconditional), so the test reads it from the log. */
static int
decide_apply(funnel_service *svc, const funnel_record *rec, void *ctx)
{
	char lead[160], undo_want[32];
	const void *undo;
	size_t undo_len;
	uint64_t cause;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int rc = FUNNEL_OK;
	(void)ctx;

	if (rec->lead.ptr == NULL || rec->lead.len >= sizeof lead)
		return FUNNEL_OK;
	snprintf(lead, sizeof lead, "%.*s", (int)rec->lead.len, rec->lead.ptr);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (funnel_service_dropped(svc, &cause, &undo, &undo_len)) {
		snprintf(undo_want, sizeof undo_want, "undo-%" PRIu64, cause);
		msgpack_pack_map(&pk, 2);
		msgpack_pack_str_with_body(&pk, "cause", 5);
		msgpack_pack_uint64(&pk, cause);
		msgpack_pack_str_with_body(&pk, "undo_ok", 7);
		if (undo_len == strlen(undo_want) && memcmp(undo, undo_want, undo_len) == 0)
			msgpack_pack_true(&pk);
		else
			msgpack_pack_false(&pk);
		funnel_event ev = { .type = "x.dropped", .data = sb.data, .data_len = sb.size };
		rc = funnel_service_emit(svc, &ev, "dropped");
		sb.size = 0;
	}
	if (rc == FUNNEL_OK && rec->type.len == 13 && memcmp(rec->type.ptr, "lead.captured", 13) == 0) {
		snprintf(undo_want, sizeof undo_want, "undo-%" PRIu64, rec->seq);
		msgpack_pack_map(&pk, 0);
		funnel_event ev = { .type = "x.claim", .lead = lead, .data = sb.data,
		                    .data_len = sb.size };
		rc = funnel_service_emit_decision(svc, &ev, "claim", undo_want, strlen(undo_want));
	}
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

/* Run the decider to the head in a child; its stats.overridden goes into
 * *overridden.  Returns the child's exit code. */
static int
decider_until_head(const daemon_proc *d, const char *view, int rebuild, uint64_t *overridden)
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t pid = fork();
	if (pid == 0) {
		funnel_service_opts o = {
			.name = "decider", .view_dir = view, .ingest = d->ingest, .publish = d->publish,
			.query = d->query, .tables = { "none" }, .rebuild = rebuild, .until_head = 1,
			.timeout_ms = 2000,
		};
		funnel_service *svc;
		funnel_service_stats st = { 0 };
		int rc = funnel_service_new(&svc, &o, decide_apply, NULL);
		if (rc == FUNNEL_OK) {
			rc = funnel_service_run(svc);
			funnel_service_stats_get(svc, &st);
			funnel_service_destroy(&svc);
		}
		if (write(fds[1], &st.overridden, sizeof st.overridden) != sizeof st.overridden)
			rc = 99;
		_exit(rc);
	}
	close(fds[1]);
	int status;
	*overridden = UINT64_MAX;
	if (read(fds[0], overridden, sizeof *overridden) != sizeof *overridden)
		*overridden = UINT64_MAX;
	close(fds[0]);
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

typedef struct claim_walk {
	int claims_a, claims_b, dropped_b, undo_ok;
	uint64_t cap_b, claim_a_cause, dropped_cause;
} claim_walk;

static int
claim_record(const funnel_record *r, void *ctx)
{
	claim_walk *w = ctx;
	int is_a = r->lead.len == 1 && r->lead.ptr[0] == 'A';
	int is_b = r->lead.len == 1 && r->lead.ptr[0] == 'B';
	if (r->type.len == 13 && memcmp(r->type.ptr, "lead.captured", 13) == 0 && is_b)
		w->cap_b = r->seq;
	if (r->type.len == 7 && memcmp(r->type.ptr, "x.claim", 7) == 0) {
		w->claims_a += is_a;
		w->claims_b += is_b;
		if (is_a)
			w->claim_a_cause = r->cause;
	}
	if (r->type.len == 9 && memcmp(r->type.ptr, "x.dropped", 9) == 0) {
		int ok = 0;
		w->dropped_b++;
		mp_get_u64(r->data, "cause", &w->dropped_cause, NULL);
		mp_get_bool(r->data, "undo_ok", &ok, NULL);
		w->undo_ok = ok;
	}
	return FUNNEL_OK;
}

static claim_walk
walk_claims(const daemon_proc *d)
{
	funnel_query *q;
	funnel_replay_req req = { .from = 1 };
	claim_walk w = { 0 };
	assert_int_equal(funnel_query_new(&q, d->query, 5000), FUNNEL_OK);
	assert_int_equal(funnel_replay_each(q, &req, claim_record, &w), FUNNEL_OK);
	funnel_query_destroy(&q);
	return w;
}

/* A decision on lead B made on its capture, when someone else wrote to B
 * first: the log refuses it (EVERSION), the runtime counts it, tells
 * apply() with the undo bytes on the record that came first, and neither
 * a restart nor a rebuild nor a fresh view brings it back; A's decision,
 * with nobody in between, is stored. */
static void
test_decision_dropped_when_a_person_acts_first(void **state)
{
	daemon_proc d;
	funnel_producer *p;
	char view[400], fresh[400];
	uint8_t a[32], b[32];
	uint64_t cpa, cpb, over;
	(void)state;

	assert_int_equal(harness_start(&d, NULL), 0);
	snprintf(view, sizeof view, "%s/decider", d.dir);
	snprintf(fresh, sizeof fresh, "%s/decider-fresh", d.dir);
	assert_int_equal(funnel_producer_new(&p, d.ingest, 5000), FUNNEL_OK);
	funnel_event evs[3] = {
		{ .type = "lead.captured", .lead = "A", .id = "cap-A" },
		{ .type = "lead.captured", .lead = "B", .id = "cap-B" },
		{ .type = "lead.contacted", .lead = "B", .id = "call-B" },   /* a person, first */
	};
	assert_int_equal(funnel_publish(p, evs, 3, NULL), FUNNEL_OK);

	assert_int_equal(decider_until_head(&d, view, 0, &over), 0);
	assert_int_equal(over, 1);
	claim_walk w = walk_claims(&d);
	assert_int_equal(w.claims_a, 1);
	assert_int_equal(w.claim_a_cause, 1);
	assert_int_equal(w.claims_b, 0);           /* dropped, not stored */
	assert_int_equal(w.dropped_b, 1);          /* apply() was told, on call-B */
	assert_int_equal(w.dropped_cause, w.cap_b);
	assert_true(w.undo_ok);
	/* again (the x.dropped and x.claim records come back), a restart
	 * with nothing new, a rebuild, a fresh view: B's claim never returns */
	assert_int_equal(decider_until_head(&d, view, 0, &over), 0);
	assert_int_equal(decider_until_head(&d, view, 0, &over), 0);
	assert_int_equal(over, 0);
	digest_of(view, a, &cpa);
	assert_int_equal(decider_until_head(&d, view, 1, &over), 0);
	assert_int_equal(over, 0);                  /* a rebuild sends nothing */
	digest_of(view, b, &cpb);
	assert_int_equal(cpb, cpa);
	assert_memory_equal(a, b, 32);
	assert_int_equal(decider_until_head(&d, fresh, 0, &over), 0);
	assert_int_equal(over, 1);                  /* derived again, refused again */
	digest_of(fresh, b, &cpb);
	assert_int_equal(cpb, cpa);
	assert_memory_equal(a, b, 32);
	w = walk_claims(&d);
	assert_int_equal(w.claims_a, 1);
	assert_int_equal(w.claims_b, 0);
	assert_int_equal(w.dropped_b, 1);
	funnel_producer_destroy(&p);
	harness_cleanup(&d);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_until_head_rebuild_identical),
		cmocka_unit_test(test_kill9_service_equals_rebuild),
		cmocka_unit_test(test_sigterm_and_resume),
		cmocka_unit_test(test_view_map_grows),
		cmocka_unit_test(test_batch_hooks),
		cmocka_unit_test(test_tick),
		cmocka_unit_test(test_runtime_table_name_refused),
		cmocka_unit_test(test_store_and_reader),
		cmocka_unit_test(test_decision_dropped_when_a_person_acts_first),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
