/*
 * tests/unit/test_store.c - daemon/store.c on its own: a real LMDB
 * environment in a temporary directory, written and read through the
 * store's functions only (no funneld around it).
 *
 *   - a new log: format and creation time written, head 0, no leads;
 *   - appends: records at their seqs, the idempotency index, a lead's
 *     history and state side by side, the head and lead count in meta;
 *   - store_set_head() is the head the next group stamps from, and a
 *     reopened log reads the same head from its last record;
 *   - lookups that must find nothing: a lead id no event could carry,
 *     an unknown id, a seq past the head;
 *   - store_seq_at_time() over timestamps that repeat;
 *   - readers are shown the durable seq (store_read_head), not a commit
 *     past it, and store_wait_durable() waits for it to rise;
 *     store_durable_watch() returns the durable seq, and a rise after it
 *     writes the watch eventfd (none once the watch is cleared);
 *   - store_grow() doubles the map up to its cap, then MDB_MAP_FULL;
 *   - a log in another format is refused at open, not converted.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "journal.h"
#include "store.h"
#include "unit.h"


static void
open_ok(store *s, const char *dir, size_t map, size_t cap)
{
	char why[256] = "";
	int rc = store_open(s, dir, map, cap, JOURNAL_MIN_SIZE, 1, why, sizeof why);
	if (rc != 0)
		fail_msg("store_open: %s", why);
}

/* One event as the writer appends it: record n (ts = 1000 * (n / 2), so
 * two records share each timestamp), on lead when not NULL, with id. */
typedef struct appended {
	uint64_t seq, ts;
	uint8_t hash[FUNNEL_HASH_BYTES];
} appended;

static void
append_one(store *s, store_wtxn *w, msgpack_sbuffer *sb, uint64_t seq, const uint8_t *prev,
           const char *lead, const char *id, store_lead *state, appended *out)
{
	fp_event ev;
	memset(&ev, 0, sizeof ev);
	ev.type.ptr = lead ? "lead.captured" : "x.note";
	ev.type.len = strlen(ev.type.ptr);
	ev.spec = fp_evspec_lookup(ev.type.ptr, ev.type.len);
	if (lead) {
		ev.lead.ptr = lead;
		ev.lead.len = strlen(lead);
	}
	ev.id.ptr = id;
	ev.id.len = strlen(id);
	fp_stamp st = { .seq = seq, .ts = 1000 * (seq / 2), .has_lead_state = lead != NULL,
	                .stage = FP_STAGE_NONE, .version = 0, .prev = prev };
	if (lead) {
		state->stage = FP_STAGE_INQUIRY;
		state->version++;
		state->last_seq = seq;
		st.stage = state->stage;
		st.version = state->version;
	}
	sb->size = 0;
	assert_int_equal(fp_record_encode(sb, &ev, &st, out->hash), FUNNEL_OK);
	out->seq = seq;
	out->ts = st.ts;
	(void)s;
	assert_int_equal(store_append(w, seq, sb->data, sb->size, ev.lead.ptr, ev.lead.len, state,
	                              id, strlen(id), 0), 0);
}

/* Records 1..n in one transaction, alternating two leads with notes
 * (every third record names no lead); head and lead count committed. */
static void
append_group(store *s, int n, appended *out)
{
	store_wtxn w;
	store_lead la = { 0 }, lb = { 0 };
	msgpack_sbuffer sb;
	uint8_t prev[FUNNEL_HASH_BYTES] = { 0 };
	char id[32];
	msgpack_sbuffer_init(&sb);
	assert_int_equal(store_wtxn_begin(s, NULL, &w), 0);
	for (int i = 1; i <= n; i++) {
		snprintf(id, sizeof id, "id-%d", i);
		const char *lead = i % 3 == 0 ? NULL : i % 3 == 1 ? "lead-a" : "lead-b";
		store_lead *state = i % 3 == 1 ? &la : &lb;
		append_one(s, &w, &sb, (uint64_t)i, prev, lead, id, state, &out[i]);
		memcpy(prev, out[i].hash, sizeof prev);
	}
	assert_int_equal(store_put_head(s, w.txn, (uint64_t)n, prev, 2), 0);
	assert_int_equal(store_wtxn_commit(&w), 0);
	assert_null(w.txn);
	store_set_head(s, (uint64_t)n, out[n].ts, prev, 2);
	msgpack_sbuffer_destroy(&sb);
}

static void
test_new_log_is_empty(void **state)
{
	unit_tmp *t = *state;
	store s;
	MDB_txn *txn;
	uint64_t head = 99, leads = 99;
	char sub[300];
	snprintf(sub, sizeof sub, "%s/a/b", t->dir);   /* missing parents are created */
	open_ok(&s, sub, 1 << 20, 0);
	assert_int_equal(s.head_seq, 0);
	assert_int_equal(s.head_leads, 0);
	assert_true(access(sub, F_OK) == 0);
	assert_int_equal(store_read_begin(&s, &txn), 0);
	assert_int_equal(store_head(&s, txn, &head), 0);
	assert_int_equal(head, 0);
	assert_int_equal(store_lead_count(&s, txn, &leads), 0);
	assert_int_equal(leads, 0);
	MDB_val v;
	assert_int_equal(store_record_get(&s, txn, 1, &v), MDB_NOTFOUND);
	store_lead sl;
	assert_int_equal(store_lead_get(&s, txn, "x", 1, &sl), MDB_NOTFOUND);
	assert_int_equal(sl.stage, FP_STAGE_NONE);
	store_read_end(&s, &txn);
	assert_null(txn);
	store_release(&s);
	store_release(&s);   /* released twice: harmless */
}

static void
test_appends_and_indexes(void **state)
{
	unit_tmp *t = *state;
	store s;
	MDB_txn *txn;
	MDB_cursor *c;
	appended recs[11];
	uint64_t head, leads, seq;
	open_ok(&s, t->dir, 1 << 20, 0);
	append_group(&s, 10, recs);
	assert_int_equal(s.head_seq, 10);
	assert_int_equal(s.head_ts, recs[10].ts);
	assert_memory_equal(s.head_hash, recs[10].hash, FUNNEL_HASH_BYTES);
	assert_int_equal(s.head_leads, 2);

	assert_int_equal(store_read_begin(&s, &txn), 0);
	assert_int_equal(store_head(&s, txn, &head), 0);
	assert_int_equal(head, 10);
	assert_int_equal(store_lead_count(&s, txn, &leads), 0);
	assert_int_equal(leads, 2);
	for (uint64_t i = 1; i <= 10; i++) {
		MDB_val v;
		funnel_record r;
		msgpack_zone z;
		assert_int_equal(store_record_get(&s, txn, i, &v), 0);
		assert_true(msgpack_zone_init(&z, 1024));
		assert_int_equal(funnel_record_parse(v.mv_data, v.mv_size, &z, &r), FUNNEL_OK);
		assert_int_equal(r.seq, i);
		assert_int_equal(r.ts, recs[i].ts);
		msgpack_zone_destroy(&z);
	}
	/* lead-a is records 1, 4, 7, 10: its state and its history */
	store_lead sl;
	assert_int_equal(store_lead_get(&s, txn, "lead-a", 6, &sl), 0);
	assert_int_equal(sl.version, 4);
	assert_int_equal(sl.last_seq, 10);
	assert_int_equal(mdb_cursor_open(txn, s.leads, &c), 0);
	uint64_t want[] = { 1, 4, 7, 10 };
	int rc = store_lead_seek(&s, c, "lead-a", 6, 0, &seq);
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(rc, 0);
		assert_int_equal(seq, want[i]);
		rc = store_lead_next(&s, c, "lead-a", 6, &seq);
	}
	assert_int_equal(rc, MDB_NOTFOUND);   /* stops at its own state key, not lead-b's keys */
	assert_int_equal(store_lead_seek(&s, c, "lead-a", 6, 5, &seq), 0);
	assert_int_equal(seq, 7);
	assert_int_equal(store_lead_seek(&s, c, "lead-a", 6, 11, &seq), MDB_NOTFOUND);
	/* a prefix of a lead id is another lead, and has no history */
	assert_int_equal(store_lead_seek(&s, c, "lead-", 5, 0, &seq), MDB_NOTFOUND);
	/* an id no event could carry matches nothing */
	assert_int_equal(store_lead_seek(&s, c, "lead\x01", 5, 0, &seq), MDB_NOTFOUND);
	assert_int_equal(store_lead_get(&s, txn, "lead\x01", 5, &sl), MDB_NOTFOUND);
	assert_int_equal(store_lead_get(&s, txn, "", 0, &sl), MDB_NOTFOUND);
	mdb_cursor_close(c);
	/* timestamps 0,1000,1000,2000,2000,...: the first seq at or after */
	assert_int_equal(store_seq_at_time(&s, txn, 0, 1000, &seq), 0);
	assert_int_equal(seq, 2);
	assert_int_equal(store_seq_at_time(&s, txn, 0, 1001, &seq), 0);
	assert_int_equal(seq, 4);
	assert_int_equal(store_seq_at_time(&s, txn, 5, 0, &seq), 0);
	assert_int_equal(seq, 5);
	assert_int_equal(store_seq_at_time(&s, txn, 0, 999999, &seq), 0);
	assert_int_equal(seq, 11);   /* none: head + 1 */
	store_read_end(&s, &txn);

	/* the writer's view: idempotency keys, a lead's state, a record */
	store_wtxn w;
	MDB_val v;
	assert_int_equal(store_wtxn_begin(&s, NULL, &w), 0);
	assert_int_equal(store_idem_find(&w, "id-7", 4, &seq), 0);
	assert_int_equal(seq, 7);
	assert_int_equal(store_idem_find(&w, "id-70", 5, &seq), MDB_NOTFOUND);
	assert_int_equal(store_lead_find(&w, "lead-b", 6, &sl), 0);
	assert_int_equal(sl.last_seq, 8);
	assert_int_equal(sl.version, 3);
	assert_int_equal(store_record_find(&w, 3, &v), 0);
	assert_int_equal(store_record_find(&w, 11, &v), MDB_NOTFOUND);
	/* an id is stored once: a second record under it is refused */
	assert_int_equal(store_append(&w, 11, "x", 1, NULL, 0, NULL, "id-7", 4, 0), MDB_KEYEXIST);
	store_wtxn_abort(&w);

	/* a claim: a known id says the seq it names and changes nothing; a new
	 * one names the seq given until it is taken back */
	assert_int_equal(store_wtxn_begin(&s, NULL, &w), 0);
	seq = 0;
	assert_int_equal(store_idem_claim(&w, "id-7", 4, 11, &seq), MDB_KEYEXIST);
	assert_int_equal(seq, 7);
	assert_int_equal(store_idem_find(&w, "id-7", 4, &seq), 0);
	assert_int_equal(seq, 7);
	assert_int_equal(store_idem_claim(&w, "id-70", 5, 11, &seq), 0);
	assert_int_equal(store_idem_find(&w, "id-70", 5, &seq), 0);
	assert_int_equal(seq, 11);
	assert_int_equal(store_idem_claim(&w, "id-71", 5, 12, &seq), 0);
	assert_int_equal(store_idem_unclaim(&w), 0);
	assert_int_equal(store_idem_find(&w, "id-71", 5, &seq), MDB_NOTFOUND);
	assert_int_equal(store_idem_find(&w, "id-70", 5, &seq), 0);   /* the other claim stays */
	assert_int_equal(seq, 11);
	/* the state rewritten where store_lead_find left the cursor: the same
	 * state and history as by a search, a longer value (an owner) too */
	store_lead after;
	assert_int_equal(store_lead_find(&w, "lead-b", 6, &sl), 0);
	after = sl;
	after.version = sl.version + 1;
	after.last_seq = 11;
	snprintf(after.owner, sizeof after.owner, "%s", "rep-with-a-long-name");
	assert_int_equal(store_append(&w, 11, "x", 1, "lead-b", 6, &after, NULL, 0, 1), 0);
	assert_int_equal(store_lead_find(&w, "lead-b", 6, &sl), 0);
	assert_int_equal(sl.version, 4);
	assert_int_equal(sl.last_seq, 11);
	assert_string_equal(sl.owner, "rep-with-a-long-name");
	assert_int_equal(store_lead_find(&w, "lead-a", 6, &sl), 0);   /* its neighbour untouched */
	assert_int_equal(sl.version, 4);
	/* and a shorter one again (the owner dropped, as an erasure does) */
	assert_int_equal(store_lead_find(&w, "lead-b", 6, &sl), 0);
	after = sl;
	after.version = sl.version + 1;
	after.last_seq = 12;
	after.owner[0] = '\0';
	assert_int_equal(store_append(&w, 12, "y", 1, "lead-b", 6, &after, NULL, 0, 1), 0);
	assert_int_equal(store_lead_find(&w, "lead-b", 6, &sl), 0);
	assert_int_equal(sl.version, 5);
	assert_int_equal(sl.last_seq, 12);
	assert_string_equal(sl.owner, "");
	assert_int_equal(store_lead_find(&w, "lead-a", 6, &sl), 0);
	assert_int_equal(sl.version, 4);
	{
		MDB_cursor *hc;
		uint64_t hs, last = 0;
		int n = 0;
		assert_int_equal(mdb_cursor_open(w.txn, s.leads, &hc), 0);
		for (int hr = store_lead_seek(&s, hc, "lead-b", 6, 0, &hs); hr == 0;
		     hr = store_lead_next(&s, hc, "lead-b", 6, &hs)) {
			assert_true(hs > last);
			last = hs;
			n++;
		}
		mdb_cursor_close(hc);
		assert_int_equal(n, 5);
		assert_int_equal(last, 12);
	}
	store_wtxn_abort(&w);
	assert_null(w.txn);
	store_release(&s);
}

static void
test_reopen_reads_the_head(void **state)
{
	unit_tmp *t = *state;
	store s;
	appended recs[8];
	open_ok(&s, t->dir, 1 << 20, 0);
	append_group(&s, 7, recs);
	store_release(&s);
	open_ok(&s, t->dir, 1 << 20, 0);
	assert_int_equal(s.head_seq, 7);
	assert_int_equal(s.head_ts, recs[7].ts);
	assert_memory_equal(s.head_hash, recs[7].hash, FUNNEL_HASH_BYTES);
	assert_int_equal(s.head_leads, 2);
	assert_true(s.path[0] == '/');
	store_release(&s);
}

/* Readers are shown the durable seq, not the committed head (store.h). */
static void
test_readers_see_the_durable_head(void **state)
{
	unit_tmp *t = *state;
	store s;
	MDB_txn *txn;
	appended recs[11];
	uint64_t head, leads;
	open_ok(&s, t->dir, 1 << 20, 0);
	append_group(&s, 6, recs);
	store_set_durable(&s, 6, 2);
	store_release(&s);
	open_ok(&s, t->dir, 1 << 20, 0);   /* a reopened log is flushed: all of it is durable */
	assert_int_equal(store_read_begin(&s, &txn), 0);
	assert_int_equal(store_read_head(&s, txn, &head, &leads), 0);
	assert_int_equal(head, 6);
	assert_int_equal(leads, 2);
	store_read_end(&s, &txn);

	/* a second group, committed and not yet durable */
	store_wtxn w;
	msgpack_sbuffer sb;
	store_lead lc = { 0 };
	msgpack_sbuffer_init(&sb);
	assert_int_equal(store_wtxn_begin(&s, NULL, &w), 0);
	append_one(&s, &w, &sb, 7, recs[6].hash, "lead-c", "id-7", &lc, &recs[7]);
	assert_int_equal(store_put_head(&s, w.txn, 7, recs[7].hash, 3), 0);
	assert_int_equal(store_wtxn_commit(&w), 0);
	store_set_head(&s, 7, recs[7].ts, recs[7].hash, 3);
	msgpack_sbuffer_destroy(&sb);

	assert_int_equal(store_read_begin(&s, &txn), 0);
	assert_int_equal(store_read_head(&s, txn, &head, &leads), 0);
	assert_int_equal(head, 6);    /* record 7 is in txn, but not durable */
	assert_int_equal(leads, 2);   /* the count at 6, not the one in meta */
	assert_int_equal(store_wait_durable(&s, 7, 10), ETIMEDOUT);
	int efd = eventfd(0, EFD_NONBLOCK);
	uint64_t cnt = 0;
	assert_true(efd >= 0);
	assert_int_equal(store_durable_watch(&s, efd), 6);
	assert_int_equal(read(efd, &cnt, sizeof cnt), -1);   /* no rise yet */
	assert_int_equal(store_sync(&s), 0);
	store_set_durable(&s, 7, 3);
	assert_int_equal(read(efd, &cnt, sizeof cnt), (ssize_t)sizeof cnt);   /* the rise woke it */
	assert_int_equal(store_durable_watch(&s, -1), 7);
	assert_int_equal(store_wait_durable(&s, 7, 0), 0);
	/* the same transaction: its own head is durable now, and its count */
	assert_int_equal(store_read_head(&s, txn, &head, &leads), 0);
	assert_int_equal(head, 7);
	assert_int_equal(leads, 3);
	store_read_end(&s, &txn);
	store_set_durable(&s, 5, 1);   /* never lowered */
	assert_int_equal(read(efd, &cnt, sizeof cnt), -1);   /* not watched any more */
	close(efd);
	assert_int_equal(store_read_begin(&s, &txn), 0);
	assert_int_equal(store_read_head(&s, txn, &head, NULL), 0);
	assert_int_equal(head, 7);
	store_read_end(&s, &txn);
	store_release(&s);
}

static void
test_grow_to_the_cap(void **state)
{
	unit_tmp *t = *state;
	store s;
	open_ok(&s, t->dir, 1 << 20, 3 << 20);
	assert_int_equal(s.map_size, 1 << 20);
	assert_int_equal(store_grow(&s), 0);
	assert_int_equal(s.map_size, 2 << 20);
	assert_int_equal(store_grow(&s), 0);
	assert_int_equal(s.map_size, 3 << 20);   /* doubled, but not past the cap */
	assert_int_equal(store_grow(&s), MDB_MAP_FULL);
	assert_int_equal(s.map_size, 3 << 20);
	store_release(&s);
	/* reopened with a smaller map: LMDB keeps the file's size */
	open_ok(&s, t->dir, 1 << 20, 0);
	assert_true(s.map_size >= (1 << 20));
	store_release(&s);
}

/* A tail under a busy writer is checkpointed at its age (which bounds
 * how long one checkpoint holds ingest up), a small one only at the
 * oldest age; an idle writer checkpoints it at once. */
static void
test_checkpoint_due_by_age(void **state)
{
	unit_tmp *t = *state;
	store s;
	store_wtxn w;
	msgpack_sbuffer sb;
	store_lead la = { 0 };
	appended rec;
	uint8_t prev[FUNNEL_HASH_BYTES] = { 0 };
	open_ok(&s, t->dir, 8 << 20, 0);
	msgpack_sbuffer_init(&sb);
	assert_int_equal(store_group_begin(&s, &w), 0);
	append_one(&s, &w, &sb, 1, prev, "lead-a", "id-1", &la, &rec);
	assert_int_equal(store_put_head(&s, w.txn, 1, rec.hash, 1), 0);
	assert_int_equal(store_group_end(&s, &w, 1, 1, sb.size), 0);
	msgpack_sbuffer_destroy(&sb);
	uint64_t since = s.tail_since_ns;
	assert_true(STORE_TAIL_MAX_AGE_NS <= 200000000ull);
	assert_false(store_checkpoint_due(&s, since + STORE_TAIL_MAX_AGE_NS, 0));   /* one event */
	assert_false(store_checkpoint_due(&s, since + STORE_TAIL_OLDEST_NS - 1, 0));
	assert_true(store_checkpoint_due(&s, since + STORE_TAIL_OLDEST_NS, 0));
	s.tail_events = STORE_TAIL_AGE_EVENTS;   /* as many as a steady load brings */
	assert_false(store_checkpoint_due(&s, since + STORE_TAIL_MAX_AGE_NS - 1, 0));
	assert_true(store_checkpoint_due(&s, since + STORE_TAIL_MAX_AGE_NS, 0));
	assert_true(store_checkpoint_due(&s, since + 1, STORE_IDLE_NS));   /* idle */
	assert_int_equal(store_checkpoint(&s), 0);
	assert_int_equal(s.ckpt_seq, 1);
	store_release(&s);
}

static void
test_other_format_refused(void **state)
{
	unit_tmp *t = *state;
	store s;
	char why[512] = "";
	open_ok(&s, t->dir, 1 << 20, 0);
	store_release(&s);
	/* rewrite the format record as another version would */
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi meta;
	uint32_t other = STORE_FORMAT + 1;
	MDB_val k = { strlen(FP_META_FORMAT), (void *)FP_META_FORMAT }, v = { sizeof other, &other };
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, FP_LOG_MAX_TABLES), 0);
	assert_int_equal(mdb_env_open(env, t->dir, 0, 0644), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, FP_META_TABLE, 0, &meta), 0);
	assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
	assert_int_equal(store_open(&s, t->dir, 1 << 20, 0, JOURNAL_MIN_SIZE, 1, why, sizeof why), -1);
	assert_non_null(strstr(why, "format"));
	assert_null(s.env);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_new_log_is_empty, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_appends_and_indexes, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_reopen_reads_the_head, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_readers_see_the_durable_head, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_grow_to_the_cap, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_other_format_refused, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_checkpoint_due_by_age, unit_tmp_setup,
		                                unit_tmp_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
