/*
 * tests/integration/test_diskfull.c - a real full disk under funneld.
 *
 * The test mounts a 16 MiB tmpfs over the daemon's data directory and
 * leaves funneld's map at its default (1 GiB): the map may grow, the disk
 * cannot, so LMDB's page writes come up short at commit.  Four producers
 * publish atomic batches of 50 at once until the disk is full.  Promised
 * (DESIGN.md, PROTOCOL.md §8, §16):
 *  - every reply is an ack or an ESTORAGE error saying the disk is full
 *    and nothing was stored;
 *  - the log holds whole batches only, every acknowledged event at its
 *    seq, and the hash chain verifies, also after a kill -9 and restart
 *    on the full disk;
 *  - once space returns (the tmpfs is remounted larger), the same
 *    daemon takes the refused batches again and more, and the chain
 *    still verifies.
 * And a service view on a full disk (a 1 MiB tmpfs under the view) stops
 * with FUNNEL_ESTORAGE and says "no space left on the view's disk", not
 * LMDB's "Input/output error".
 *
 * Mounting needs root (CAP_SYS_ADMIN).  Without it the test is reported
 * SKIPPED, with the reason, never passed.  The tmpfs is unmounted in the
 * teardown, which cmocka runs whether the test passed or not.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "funnel/funnel.h"
#include "funnel/service.h"
#include "harness.h"
#include "workload.h"

#define BATCH 50
#define MAX_BATCHES 4000          /* bound: 16 MiB holds far fewer */
#define FULL_AFTER 5              /* refusals in a row that mean "the disk is full" */
#define FILLERS 4                 /* producers filling the disk at once */

typedef struct diskfull {
	daemon_proc d;
	int mounted;
	int skipped;
	char why[256];
	funnel_producer *p;
	funnel_query *q;
	uint64_t *acked;              /* per batch: seq of its first event, 0 if refused */
	size_t nbatches;
} diskfull;

/* Stop the daemon, unmount, remove the temp dir: whatever state the test
 * or the setup left. */
static int
teardown(void **state)
{
	diskfull *t = *state;
	if (t == NULL)
		return 0;
	funnel_producer_destroy(&t->p);
	funnel_query_destroy(&t->q);
	if (t->d.pid > 0)
		harness_kill9(&t->d);
	if (t->mounted && umount(t->d.data) != 0 && umount2(t->d.data, MNT_DETACH) != 0)
		fprintf(stderr, "diskfull: could not unmount %s: %s\n", t->d.data, strerror(errno));
	harness_cleanup(&t->d);
	free(t->acked);
	free(t);
	return 0;
}

static int
setup(void **state)
{
	diskfull *t = calloc(1, sizeof *t);
	*state = t;
	if (t == NULL || (t->acked = calloc(MAX_BATCHES, sizeof *t->acked)) == NULL)
		goto fail;
	/* start once to learn the endpoints, then put the data on the tmpfs
	 * (a 1 MiB journal: the default 64 MiB would not fit on it) */
	if (harness_start(&t->d, "--journal-size 1M") != 0 || harness_stop(&t->d) != 0)
		goto fail;
	harness_rmrf(t->d.data);
	if (mkdir(t->d.data, 0755) != 0)
		goto fail;
	if (mount("funnel-diskfull", t->d.data, "tmpfs", 0, "size=16m,mode=0755") != 0) {
		t->skipped = 1;
		snprintf(t->why, sizeof t->why, "cannot mount a tmpfs (%s): needs root", strerror(errno));
		return 0;
	}
	t->mounted = 1;
	if (harness_restart(&t->d) != 0 ||
	    funnel_producer_new(&t->p, t->d.ingest, 15000) != FUNNEL_OK ||
	    funnel_query_new(&t->q, t->d.query, 15000) != FUNNEL_OK)
		goto fail;
	return 0;
fail:
	teardown(state);   /* cmocka runs no teardown after a failed setup */
	*state = NULL;
	return -1;
}

/* Publish batch b (50 lead.captured with ids "df-b-i") on p.  Returns
 * the producer's code, or -1 when the acked seqs are not consecutive; on
 * FUNNEL_OK sets acked[b] to the batch's first seq.  Thread-safe for
 * distinct p and b. */
static int
publish_batch(funnel_producer *p, size_t b, uint64_t *acked)
{
	funnel_event evs[BATCH];
	funnel_ack acks[BATCH];
	msgpack_sbuffer data[BATCH];
	char ids[BATCH][32], leads[BATCH][32];
	for (int i = 0; i < BATCH; i++) {
		msgpack_sbuffer_init(&data[i]);
		wl_lead_data(&data[i], 11, (uint64_t)b * BATCH + (uint64_t)i);
		snprintf(ids[i], sizeof ids[i], "df-%zu-%d", b, i);
		snprintf(leads[i], sizeof leads[i], "DF-%zu-%d", b, i);
		evs[i] = (funnel_event){ .type = "lead.captured", .lead = leads[i], .id = ids[i],
		                         .data = data[i].data, .data_len = data[i].size };
	}
	int rc = funnel_publish(p, evs, BATCH, acks);
	for (int i = 0; i < BATCH; i++)
		msgpack_sbuffer_destroy(&data[i]);
	if (rc != FUNNEL_OK)
		return rc;
	for (int i = 1; i < BATCH; i++) {
		if (acks[i].seq != acks[0].seq + (uint64_t)i || acks[i].dup)
			return -1;
	}
	acked[b] = acks[0].seq;
	return FUNNEL_OK;
}

/* The clear refusal: ESTORAGE, saying the disk is full and nothing was
 * stored.  Returns 1 if e is one. */
static int
clear_refusal(int rc, const funnel_error_info *e)
{
	return rc == FUNNEL_ESTORAGE && strstr(e->message, "no space left") != NULL &&
	       strstr(e->message, "nothing was stored") != NULL;
}

/* One of the producers that fill the disk together. */
typedef struct filler {
	diskfull *t;
	atomic_size_t *next;          /* the next batch number to send */
	size_t refusals;
	int bad_rc;                   /* a reply that is neither an ack nor a clear refusal */
	char bad_msg[300];
} filler;

static void *
fill(void *arg)
{
	filler *f = arg;
	funnel_producer *p;
	size_t in_row = 0;
	if (funnel_producer_new(&p, f->t->d.ingest, 15000) != FUNNEL_OK) {
		f->bad_rc = FUNNEL_ETRANSPORT;
		return NULL;
	}
	while (in_row < FULL_AFTER) {
		size_t b = atomic_fetch_add(f->next, 1);
		if (b >= MAX_BATCHES)
			break;
		int rc = publish_batch(p, b, f->t->acked);
		if (rc == FUNNEL_OK) {
			in_row = 0;
		} else if (clear_refusal(rc, funnel_producer_error(p))) {
			in_row++;
			f->refusals++;
		} else {
			f->bad_rc = rc;
			snprintf(f->bad_msg, sizeof f->bad_msg, "batch %zu: %s: %s", b,
			         rc < 0 ? "acks not consecutive" : funnel_errname(rc),
			         funnel_producer_error(p)->message);
			break;
		}
	}
	funnel_producer_destroy(&p);
	return NULL;
}

typedef struct check_ctx {
	const diskfull *t;
	uint64_t n;
} check_ctx;

/* Every record is an acknowledged batch's event, at its acked seq. */
static int
check_record(const funnel_record *r, void *arg)
{
	check_ctx *c = arg;
	size_t b;
	int i;
	char want[32];
	if (r->id.ptr == NULL || sscanf(r->id.ptr, "df-%zu-%d", &b, &i) != 2 || b >= c->t->nbatches)
		fail_msg("seq %" PRIu64 ": an event nobody sent (%.*s)", r->seq, (int)r->id.len,
		         r->id.ptr ? r->id.ptr : "");
	snprintf(want, sizeof want, "df-%zu-%d", b, i);
	if (r->id.len != strlen(want) || memcmp(r->id.ptr, want, r->id.len) != 0)
		fail_msg("seq %" PRIu64 ": id %.*s", r->seq, (int)r->id.len, r->id.ptr);
	if (c->t->acked[b] + (uint64_t)i != r->seq)
		fail_msg("seq %" PRIu64 ": %s was acknowledged at %" PRIu64 " (0: refused)", r->seq, want,
		         c->t->acked[b] ? c->t->acked[b] + (uint64_t)i : 0);
	c->n++;
	return FUNNEL_OK;
}

/* The log is exactly the acknowledged batches, gapless, chain intact.
 * Returns the head. */
static uint64_t
assert_log_is_the_acked_batches(diskfull *t)
{
	uint64_t acked = 0;
	for (size_t b = 0; b < t->nbatches; b++)
		acked += t->acked[b] ? BATCH : 0;
	check_ctx c = { t, 0 };
	funnel_replay_req req = { .from = 1 };
	assert_int_equal(funnel_replay_each(t->q, &req, check_record, &c), FUNNEL_OK);
	assert_int_equal(c.n, acked);
	funnel_verify_result vr;
	int rc = funnel_verify(t->q, 0, 0, &vr);
	if (rc != FUNNEL_OK)
		fail_msg("verify: %s: bad seq %" PRIu64 ": %s", funnel_errname(rc), vr.bad_seq, vr.why);
	assert_int_equal(vr.checked, acked);
	return acked;
}

static void
test_disk_full_is_an_error_then_the_daemon_continues(void **state)
{
	diskfull *t = *state;
	if (t->skipped) {
		printf("diskfull: SKIPPED: %s\n", t->why);
		skip();
	}

	/* 1. fill the disk, FILLERS producers at once, so groups of several
	 * requests fail together */
	filler fl[FILLERS];
	pthread_t th[FILLERS];
	atomic_size_t next = 0;
	size_t refusals = 0;
	for (int i = 0; i < FILLERS; i++) {
		fl[i] = (filler){ .t = t, .next = &next };
		pthread_create(&th[i], NULL, fill, &fl[i]);
	}
	for (int i = 0; i < FILLERS; i++)
		pthread_join(th[i], NULL);
	t->nbatches = atomic_load(&next) < MAX_BATCHES ? atomic_load(&next) : MAX_BATCHES;
	for (int i = 0; i < FILLERS; i++) {
		if (fl[i].bad_rc)
			fail_msg("producer %d: %s", i, fl[i].bad_msg);
		refusals += fl[i].refusals;
	}
	assert_true(t->nbatches < MAX_BATCHES);
	uint64_t head = assert_log_is_the_acked_batches(t);
	printf("diskfull: 16 MiB tmpfs full after %" PRIu64 " events (%zu batches of %d from %d "
	       "producers); %zu batches refused with ESTORAGE (no space left), none half-stored\n",
	       head, t->nbatches, BATCH, FILLERS, refusals);
	assert_true(head > 0);
	funnel_status st;
	assert_int_equal(funnel_status_get(t->q, &st), FUNNEL_OK);   /* the query side serves */

	/* 2. kill -9 on the full disk: the log on disk is whole */
	harness_kill9(&t->d);
	assert_int_equal(harness_restart(&t->d), 0);
	assert_int_equal(assert_log_is_the_acked_batches(t), head);

	/* 3. space returns: the refused batches go in, then more */
	assert_int_equal(mount("funnel-diskfull", t->d.data, "tmpfs", MS_REMOUNT, "size=64m"), 0);
	size_t retried = 0;
	for (size_t b = 0; b < t->nbatches; b++) {
		if (t->acked[b])
			continue;
		int rc = publish_batch(t->p, b, t->acked);
		if (rc != FUNNEL_OK)
			fail_msg("batch %zu after space returned: %s: %s", b, funnel_errname(rc),
			         funnel_producer_error(t->p)->message);
		retried++;
	}
	for (int k = 0; k < 40; k++) {
		size_t b = t->nbatches++;
		assert_int_equal(publish_batch(t->p, b, t->acked), FUNNEL_OK);
	}
	uint64_t after = assert_log_is_the_acked_batches(t);
	printf("diskfull: remounted at 64 MiB: %zu refused batches retried and stored, "
	       "40 more; head %" PRIu64 ", chain verifies\n", retried, after);
	assert_int_equal(after, head + (retried + 40) * BATCH);
}

/* ---- a service view on a full disk ---- */

/* Each record takes 2 KiB of the view: a 1 MiB disk is full soon. */
static int
fat_apply(funnel_service *svc, const funnel_record *rec, void *ctx)
{
	static const uint8_t pad[2048];
	(void)ctx;
	return funnel_service_put(svc, funnel_service_table(svc, "fat"), &rec->seq, sizeof rec->seq,
	                          pad, sizeof pad);
}

static void
test_view_disk_full_says_so(void **state)
{
	(void)state;
	daemon_proc d;
	char view[400], errpath[400], text[65536];

	assert_int_equal(harness_start(&d, NULL), 0);
	snprintf(view, sizeof view, "%s/view", d.dir);
	snprintf(errpath, sizeof errpath, "%s/service.log", d.dir);
	assert_int_equal(mkdir(view, 0755), 0);
	if (mount("funnel-viewfull", view, "tmpfs", 0, "size=1m,mode=0755") != 0) {
		printf("diskfull: SKIPPED: cannot mount a tmpfs (%s): needs root\n", strerror(errno));
		harness_cleanup(&d);
		skip();
	}
	funnel_producer *p;
	uint64_t acked[20];
	assert_int_equal(funnel_producer_new(&p, d.ingest, 15000), FUNNEL_OK);
	for (size_t b = 0; b < 20; b++)         /* 1000 records: 2 MiB of view */
		assert_int_equal(publish_batch(p, b, acked), FUNNEL_OK);
	funnel_producer_destroy(&p);

	/* the service in a child, its log lines in a file */
	pid_t pid = fork();
	if (pid == 0) {
		int fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		dup2(fd, 2);
		funnel_service *svc;
		funnel_service_opts o = { .name = "fat", .view_dir = view, .ingest = d.ingest,
		                          .publish = d.publish, .query = d.query,
		                          .tables = { "fat" }, .until_head = 1, .no_emit = 1,
		                          .batch_events = 100, .timeout_ms = 5000 };
		int rc = funnel_service_new(&svc, &o, fat_apply, NULL);
		if (rc == FUNNEL_OK)
			rc = funnel_service_run(svc);
		funnel_service_destroy(&svc);
		_exit(rc);
	}
	int st = -1;
	pid_t waited = waitpid(pid, &st, 0);
	int umounted = umount(view) == 0 || umount2(view, MNT_DETACH) == 0;
	FILE *f = fopen(errpath, "r");
	size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
	if (f)
		fclose(f);
	text[n] = 0;
	harness_cleanup(&d);     /* before the checks: a failed one leaves nothing running */
	assert_int_equal(waited, pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), FUNNEL_ESTORAGE);
	if (strstr(text, "no space left on the view's disk") == NULL)
		fail_msg("the service's log does not say the disk is full:\n%s", text);
	assert_true(umounted);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_disk_full_is_an_error_then_the_daemon_continues,
		                                setup, teardown),
		cmocka_unit_test(test_view_disk_full_says_so),
	};
	return cmocka_run_group_tests_name("diskfull", tests, NULL, NULL);
}
