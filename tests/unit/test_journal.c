/*
 * tests/unit/test_journal.c - daemon/journal.c, and the store's replay of
 * it (daemon/store.c), on real files in a temporary directory.
 *
 *   - entries appended are read back in order, with their records, and
 *     a reopened journal continues after the lap it read;
 *   - entries whose flushes run on the flusher thread are read back in
 *     order, and a new lap or the close waits for a flush running;
 *   - a torn last entry (a byte of it not as written) ends the lap
 *     there: the entries before it are read, and the next append
 *     overwrites it;
 *   - laps take the file's two halves by turns: the lap before the
 *     current one is read first, then the current one; a new lap whose
 *     first entry was torn leaves the one before current;
 *   - an entry of the lap two laps back met where the current lap ends
 *     (same offset, whole) is not taken as part of it;
 *   - a group bigger than a half does not fit; through the store it is
 *     made durable by a checkpoint instead, and the log reopened without
 *     the journal holds it;
 *   - a lap continued after its scan (an open that replayed records)
 *     is cleared past its end first, so entries an earlier run left
 *     there are not read as the next ones of what is appended;
 *   - a checkpoint whose commit the map is too small for grows the map
 *     and commits again, and the group it was to make durable is
 *     applied again, not refused;
 *   - the store replays both laps when data.mdb's head is behind both
 *     (a checkpoint's meta page lost), and a format-1 journal (one lap
 *     over the whole file), after which the next lap starts only once
 *     the log is flushed;
 *   - the store replays a journal's records past data.mdb's head at
 *     open: records, idempotency keys, lead history and state (owner by
 *     the same rule as the writer's) and the head;
 *   - a journal that does not continue the log (a gap, a record that
 *     does not chain) is refused at open with the journal and the seqs
 *     named, and nothing is changed.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>
#include <sodium.h>

#include "journal.h"
#include "store.h"
#include "unit.h"

/* Record seq (a lead.captured of lead, or an x.note without one; with
 * assign, a lead.assigned to that owner) chained to prev, into sb. */
static void
make_record(msgpack_sbuffer *sb, uint64_t seq, const uint8_t *prev, const char *lead,
            uint64_t version, const char *owner, uint8_t hash[FUNNEL_HASH_BYTES])
{
	fp_event ev;
	msgpack_zone z;
	msgpack_object data;
	msgpack_sbuffer db;
	char id[32];

	memset(&ev, 0, sizeof ev);
	ev.type.ptr = owner ? "lead.assigned" : lead ? "lead.captured" : "x.note";
	ev.type.len = strlen(ev.type.ptr);
	ev.spec = fp_evspec_lookup(ev.type.ptr, ev.type.len);
	if (lead) {
		ev.lead.ptr = lead;
		ev.lead.len = strlen(lead);
	}
	snprintf(id, sizeof id, "id-%llu", (unsigned long long)seq);
	ev.id.ptr = strdup(id);
	ev.id.len = strlen(id);
	msgpack_sbuffer_init(&db);
	msgpack_zone_init(&z, 256);
	if (owner) {
		msgpack_packer pk;
		msgpack_packer_init(&pk, &db, msgpack_sbuffer_write);
		msgpack_pack_map(&pk, 1);
		msgpack_pack_str_with_body(&pk, "owner", 5);
		msgpack_pack_str_with_body(&pk, owner, strlen(owner));
		assert_int_equal(msgpack_unpack(db.data, db.size, NULL, &z, &data), MSGPACK_UNPACK_SUCCESS);
		ev.data = &data;
	}
	fp_stamp st = { .seq = seq, .ts = 1000 * seq, .has_lead_state = lead != NULL,
	                .stage = owner ? FP_STAGE_INQUIRY : FP_STAGE_INQUIRY, .version = version,
	                .prev = prev };
	sb->size = 0;
	assert_int_equal(fp_record_encode(sb, &ev, &st, hash), FUNNEL_OK);
	free((void *)ev.id.ptr);
	msgpack_zone_destroy(&z);
	msgpack_sbuffer_destroy(&db);
}

/* What a scan met: up to 16 entries of up to 8 records: their seqs. */
typedef struct seen {
	int n;
	uint64_t first[16];
	uint32_t count[16];
	uint64_t seq[16][8];
} seen;

static int
collect(void *ctx, uint64_t first_seq, uint32_t count, const uint8_t *const *recs,
        const uint32_t *lens)
{
	seen *s = ctx;
	assert_true(s->n < 16 && count <= 8);
	s->first[s->n] = first_seq;
	s->count[s->n] = count;
	for (uint32_t i = 0; i < count; i++)
		assert_int_equal(funnel_record_peek(recs[i], lens[i], &s->seq[s->n][i], NULL), FUNNEL_OK);
	s->n++;
	return 0;
}

/* Scan j from offset 0 into *s (cleared first): the scan returns 0 and
 * reads lap `lap` in n entries, end (the seq after its last record) being
 * `end`. */
static void
scan_is(journal *j, seen *s, uint64_t lap, uint64_t end, int n)
{
	uint64_t got_lap, got_end;
	memset(s, 0, sizeof *s);
	assert_int_equal(journal_scan(j, 0, collect, s, &got_lap, &got_end), 0);
	assert_int_equal(got_lap, lap);
	assert_int_equal(got_end, end);
	assert_int_equal(s->n, n);
}

/* An entry made durable as the writer makes a small group's
 * (store_group_journal, then store_group_wait: store.h): journal_write(),
 * then journal_wait(), which flushes here as no flush was handed over. */
static int
write_durable(journal *j, uint64_t first, size_t count, const void *recs, const size_t *ends)
{
	int rc = journal_write(j, first, count, recs, ends);
	return rc != 0 ? rc : journal_wait(j);
}

/* Append an entry of count x.note records, seqs first...; with
 * write_only, journal_write() alone (the flush is the caller's). */
static int
put_recs(journal *j, uint64_t first, size_t count, int write_only)
{
	msgpack_sbuffer sb, all;
	uint8_t prev[FUNNEL_HASH_BYTES] = { 0 }, h[FUNNEL_HASH_BYTES];
	size_t ends[8];
	msgpack_sbuffer_init(&sb);
	msgpack_sbuffer_init(&all);
	for (size_t i = 0; i < count; i++) {
		make_record(&sb, first + i, prev, NULL, 0, NULL, h);
		msgpack_sbuffer_write(&all, sb.data, sb.size);
		ends[i] = all.size;
	}
	int rc = write_only ? journal_write(j, first, count, all.data, ends)
	                    : write_durable(j, first, count, all.data, ends);
	msgpack_sbuffer_destroy(&sb);
	msgpack_sbuffer_destroy(&all);
	return rc;
}

static int
append_recs(journal *j, uint64_t first, size_t count)
{
	return put_recs(j, first, count, 0);
}

/* An entry's header as journal.h lays it out (JOURNAL_HEADER_BYTES),
 * for the tests that write the file by the format's definition. */
struct disk_head {
	uint32_t magic, format;
	uint64_t lap, first_seq;
	uint32_t count, zero;
	uint64_t len;
	uint8_t sum[16];
};
_Static_assert(sizeof(struct disk_head) == JOURNAL_HEADER_BYTES, "journal.h's header layout");
#define DISK_MAGIC 0x4c4e4a46u   /* "FJNL" */

/* Overwrite n bytes of t->dir's journal at off (what a power loss, an
 * older funneld or a stray write left there); t->path names the file. */
static void
poke(unit_tmp *t, off_t off, const void *buf, size_t n)
{
	snprintf(t->path, sizeof t->path, "%s/%s", t->dir, JOURNAL_FILE);
	int fd = open(t->path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, buf, n, off), (ssize_t)n);
	close(fd);
}

static journal *
open_j(const char *dir, size_t size)
{
	char why[256] = "";
	journal *j = journal_open(dir, size, 1, why, sizeof why);
	if (j == NULL)
		fail_msg("journal_open: %s", why);
	return j;
}

static void
test_append_then_scan(void **state)
{
	unit_tmp *t = *state;
	journal *j = open_j(t->dir, JOURNAL_MIN_SIZE);
	seen s;

	assert_int_equal(journal_size(j), JOURNAL_MIN_SIZE);
	journal_new_lap(j, 1);
	assert_int_equal(append_recs(j, 1, 3), 0);
	assert_int_equal(append_recs(j, 4, 2), 0);
	journal_close(j);

	j = open_j(t->dir, 2 * JOURNAL_MIN_SIZE);   /* an existing file keeps its size */
	assert_int_equal(journal_size(j), JOURNAL_MIN_SIZE);
	scan_is(j, &s, 1, 6, 2);
	assert_int_equal(s.first[0], 1);
	assert_int_equal(s.count[0], 3);
	assert_int_equal(s.seq[0][2], 3);
	assert_int_equal(s.first[1], 4);
	assert_int_equal(s.seq[1][1], 5);
	/* the next append continues the lap */
	assert_int_equal(append_recs(j, 6, 1), 0);
	scan_is(j, &s, 1, 7, 3);
	/* records the log holds (up to 3, then up to 5) are not passed on;
	 * the lap and its end are the same */
	uint64_t got_lap, got_end;
	memset(&s, 0, sizeof s);
	assert_int_equal(journal_scan(j, 3, collect, &s, &got_lap, &got_end), 0);
	assert_int_equal(got_lap, 1);
	assert_int_equal(got_end, 7);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.first[0], 4);
	memset(&s, 0, sizeof s);
	assert_int_equal(journal_scan(j, 5, collect, &s, &got_lap, &got_end), 0);
	assert_int_equal(got_end, 7);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.first[0], 6);
	journal_close(j);
}

/* Entries written with their flushes on the flusher thread
 * (journal_flush_start), each write after the flush before it, read back
 * in order; journal_wait() says 0 and nothing runs after it; a new lap
 * and the close wait for a flush still running. */
static void
test_flushes_on_the_flusher_thread(void **state)
{
	unit_tmp *t = *state;
	journal *j = open_j(t->dir, JOURNAL_MIN_SIZE);
	seen s;

	scan_is(j, &s, 0, 0, 0);   /* a new file: no entry */
	journal_new_lap(j, 1);
	assert_int_equal(journal_wait(j), 0);   /* nothing written: nothing to wait for */
	assert_int_equal(put_recs(j, 1, 2, 1), 0);
	journal_flush_start(j);
	assert_int_equal(put_recs(j, 3, 3, 1), 0);   /* waits for the flush before it */
	journal_flush_start(j);
	assert_int_equal(journal_wait(j), 0);
	assert_false(journal_flushing(j));
	assert_int_equal(put_recs(j, 6, 1, 1), 0);
	assert_int_equal(journal_wait(j), 0);   /* not handed over: flushed here */
	assert_int_equal(put_recs(j, 7, 1, 1), 0);
	journal_flush_start(j);
	journal_close(j);   /* waits for that flush, ends the thread */

	j = open_j(t->dir, JOURNAL_MIN_SIZE);
	scan_is(j, &s, 1, 8, 4);
	assert_int_equal(s.first[1], 3);
	assert_int_equal(s.count[1], 3);
	assert_int_equal(s.seq[3][0], 7);
	journal_new_lap(j, 8);
	assert_int_equal(put_recs(j, 8, 1, 1), 0);
	journal_flush_start(j);
	journal_new_lap(j, 9);   /* after the flush running */
	assert_false(journal_flushing(j));
	assert_int_equal(journal_wait(j), 0);
	journal_close(j);
}

static void
test_torn_last_entry(void **state)
{
	unit_tmp *t = *state;
	journal *j = open_j(t->dir, JOURNAL_MIN_SIZE);
	seen s;

	journal_new_lap(j, 10);
	assert_int_equal(append_recs(j, 10, 2), 0);
	size_t first_end = journal_used(j);
	assert_int_equal(append_recs(j, 12, 1), 0);
	journal_close(j);
	/* a byte of the second entry's record never reached the disk (a
	 * byte the checksum itself does not cover: the record's own hash
	 * must catch it) */
	poke(t, (off_t)first_end + JOURNAL_HEADER_BYTES + 4 + 10, "X", 1);

	j = open_j(t->dir, JOURNAL_MIN_SIZE);
	scan_is(j, &s, 10, 12, 1);
	assert_int_equal(journal_used(j), first_end);
	/* the next append goes where the torn one was */
	assert_int_equal(append_recs(j, 12, 2), 0);
	scan_is(j, &s, 10, 14, 2);
	assert_int_equal(s.seq[1][1], 13);
	journal_close(j);
}

static void
test_old_lap_entries_after_a_new_lap(void **state)
{
	unit_tmp *t = *state;
	journal *j = open_j(t->dir, JOURNAL_MIN_SIZE);
	seen s;

	journal_new_lap(j, 1);   /* region 0 */
	assert_int_equal(append_recs(j, 1, 2), 0);
	size_t first_len = journal_used(j);
	assert_int_equal(append_recs(j, 3, 1), 0);
	/* a checkpoint holds 1..3: lap 4 in region 1; another holds 4..5:
	 * lap 6 back in region 0, its first entry as long as lap 1's, so it
	 * ends exactly where lap 1's second begins */
	journal_new_lap(j, 4);
	assert_int_equal(append_recs(j, 4, 2), 0);
	journal_new_lap(j, 6);
	assert_int_equal(append_recs(j, 6, 2), 0);
	assert_int_equal(journal_used(j), first_len);
	journal_close(j);

	/* lap 4 (the one before the last checkpoint), then lap 6 alone */
	j = open_j(t->dir, JOURNAL_MIN_SIZE);
	scan_is(j, &s, 6, 8, 2);
	assert_int_equal(s.first[0], 4);
	assert_int_equal(s.first[1], 6);
	assert_int_equal(s.seq[1][1], 7);
	journal_close(j);
}

/* A new lap goes to the other half of the file, so the lap before it is
 * kept until the next checkpoint: read first, then the new one, which
 * the next append continues; a new lap whose first entry was torn
 * leaves the lap before it the current one. */
static void
test_two_laps_read_in_order(void **state)
{
	unit_tmp *t = *state;
	journal *j = open_j(t->dir, JOURNAL_MIN_SIZE);
	seen s;

	journal_new_lap(j, 1);
	assert_int_equal(append_recs(j, 1, 3), 0);
	journal_new_lap(j, 4);
	assert_int_equal(append_recs(j, 4, 2), 0);
	journal_close(j);

	j = open_j(t->dir, JOURNAL_MIN_SIZE);
	scan_is(j, &s, 4, 6, 2);
	assert_int_equal(s.first[0], 1);
	assert_int_equal(s.count[0], 3);
	assert_int_equal(s.first[1], 4);
	assert_int_equal(journal_lap_room(j), JOURNAL_MIN_SIZE - JOURNAL_MIN_SIZE / 2);
	assert_int_equal(append_recs(j, 6, 1), 0);   /* continues lap 4 */
	/* a checkpoint holds 1..6: lap 7 goes where lap 1 was; its first
	 * entry is torn (a byte of its header never reached the disk) */
	journal_new_lap(j, 7);
	assert_int_equal(journal_lap_room(j), JOURNAL_MIN_SIZE / 2);
	assert_int_equal(append_recs(j, 7, 1), 0);
	journal_close(j);
	poke(t, 20, "X", 1);   /* inside lap 7's first seq */

	j = open_j(t->dir, JOURNAL_MIN_SIZE);
	scan_is(j, &s, 4, 7, 2);   /* lap 4 is the current lap again */
	assert_int_equal(s.first[1], 6);
	journal_close(j);
}

/* A region whose start looks like a lap's first header (a later lap
 * number, first_seq its lap) but holds no whole entry (bytes of a
 * format-1 lap's record met at the file's middle, or any torn header
 * that does not continue the other lap) is not the lap appends
 * continue: the other lap, whose records the store may just have
 * replayed into a tail not yet committed, is, and the next lap goes
 * over the bogus one. */
static void
test_a_bogus_newer_header_is_not_the_current_lap(void **state)
{
	unit_tmp *t = *state;
	journal *j = open_j(t->dir, JOURNAL_MIN_SIZE);
	seen s;

	journal_new_lap(j, 1);   /* region 0 */
	assert_int_equal(append_recs(j, 1, 3), 0);
	journal_close(j);
	struct disk_head h = { DISK_MAGIC, JOURNAL_FORMAT, 99, 99, 1, 0, 40, { 0 } };
	poke(t, JOURNAL_MIN_SIZE / 2, &h, sizeof h);

	j = open_j(t->dir, JOURNAL_MIN_SIZE);
	scan_is(j, &s, 1, 4, 1);
	assert_int_equal(append_recs(j, 4, 1), 0);   /* continues lap 1, in region 0 */
	journal_new_lap(j, 5);                       /* over the bogus header */
	assert_int_equal(append_recs(j, 5, 1), 0);
	journal_close(j);
	j = open_j(t->dir, JOURNAL_MIN_SIZE);
	scan_is(j, &s, 5, 6, 3);
	assert_int_equal(s.first[1], 4);
	journal_close(j);
}

static void
test_bigger_than_the_file_does_not_fit(void **state)
{
	unit_tmp *t = *state;
	journal *j = open_j(t->dir, JOURNAL_MIN_SIZE);
	journal_new_lap(j, 1);
	assert_true(journal_fits(j, 1, 100));
	assert_false(journal_fits(j, 1, JOURNAL_MIN_SIZE));
	assert_false(journal_fits(j, 1000, JOURNAL_MIN_SIZE - JOURNAL_HEADER_BYTES - 1000));
	/* a lap holds half the file */
	assert_false(journal_fits(j, 1, JOURNAL_MIN_SIZE / 2));
	assert_true(journal_fits(j, 1, JOURNAL_MIN_SIZE / 2 - JOURNAL_HEADER_BYTES - 4));
	journal_close(j);
}

/* ---- through the store -------------------------------------------------- */

/* Journal entries for seqs first..first+n-1 of a log whose record
 * first-1 has hash prev: lead "L" captured at first, then notes, then
 * (at the last) L assigned to "ann".  Appended one record per entry in
 * lap `lap`, and from the split-th record on (split > 0) in a new lap,
 * as after a checkpoint whose meta page a power loss took; *last gets
 * the last hash. */
static void
journal_records_split(const char *dir, uint64_t lap, uint64_t first, int n, int split,
                      const uint8_t *prev, uint8_t last[FUNNEL_HASH_BYTES])
{
	journal *j = open_j(dir, JOURNAL_MIN_SIZE);
	msgpack_sbuffer sb;
	uint8_t p[FUNNEL_HASH_BYTES], h[FUNNEL_HASH_BYTES];
	msgpack_sbuffer_init(&sb);
	memcpy(p, prev, sizeof p);
	journal_new_lap(j, lap);
	for (int i = 0; i < n; i++) {
		uint64_t seq = first + (uint64_t)i;
		if (split > 0 && i == split)
			journal_new_lap(j, seq);
		if (i == 0)
			make_record(&sb, seq, p, "L", 1, NULL, h);
		else if (i == n - 1)
			make_record(&sb, seq, p, "L", 2, "ann", h);
		else
			make_record(&sb, seq, p, NULL, 0, NULL, h);
		size_t end = sb.size;
		assert_int_equal(write_durable(j, seq, 1, sb.data, &end), 0);
		memcpy(p, h, sizeof p);
	}
	memcpy(last, p, sizeof p);
	msgpack_sbuffer_destroy(&sb);
	journal_close(j);
}

static void
journal_records(const char *dir, uint64_t lap, uint64_t first, int n, const uint8_t *prev,
                uint8_t last[FUNNEL_HASH_BYTES])
{
	journal_records_split(dir, lap, first, n, 0, prev, last);
}

static void
open_store(store *s, const char *dir)
{
	char why[512] = "";
	if (store_open(s, dir, 1 << 20, 0, JOURNAL_MIN_SIZE, 1, why, sizeof why) != 0)
		fail_msg("store_open: %s", why);
}

static void
test_store_replays_the_journal(void **state)
{
	unit_tmp *t = *state;
	store s;
	uint8_t zero[FUNNEL_HASH_BYTES] = { 0 }, last[FUNNEL_HASH_BYTES];
	MDB_txn *txn;
	store_lead lead;
	MDB_val v;

	open_store(&s, t->dir);   /* creates the log and its journal */
	store_release(&s);
	journal_records(t->dir, 1, 1, 4, zero, last);
	open_store(&s, t->dir);
	assert_int_equal(s.head_seq, 4);
	assert_int_equal(s.head_leads, 1);
	assert_memory_equal(s.head_hash, last, FUNNEL_HASH_BYTES);
	assert_int_equal(store_read_begin(&s, &txn), 0);
	assert_int_equal(store_record_get(&s, txn, 3, &v), 0);
	assert_int_equal(store_lead_get(&s, txn, "L", 1, &lead), 0);
	assert_int_equal(lead.version, 2);
	assert_int_equal(lead.last_seq, 4);
	assert_int_equal(lead.stage, FP_STAGE_INQUIRY);
	assert_string_equal(lead.owner, "ann");   /* store_lead_after, as the writer */
	store_read_end(&s, &txn);
	store_release(&s);
	/* checkpointed: the journal is not needed any more */
	snprintf(t->path, sizeof t->path, "%s/%s", t->dir, JOURNAL_FILE);
	assert_int_equal(unlink(t->path), 0);
	open_store(&s, t->dir);
	assert_int_equal(s.head_seq, 4);
	store_release(&s);
}

/* data.mdb at seq 0, the journal's older lap 1..3 and newer lap 4..5:
 * a checkpoint of 1..3 whose meta page never reached the disk.  Both
 * laps are replayed, in order. */
static void
test_store_replays_two_laps(void **state)
{
	unit_tmp *t = *state;
	store s;
	uint8_t zero[FUNNEL_HASH_BYTES] = { 0 }, last[FUNNEL_HASH_BYTES];
	store_lead lead;
	MDB_txn *txn;

	open_store(&s, t->dir);
	store_release(&s);
	journal_records_split(t->dir, 1, 1, 5, 3, zero, last);
	open_store(&s, t->dir);
	assert_int_equal(s.head_seq, 5);
	assert_memory_equal(s.head_hash, last, FUNNEL_HASH_BYTES);
	assert_int_equal(store_read_begin(&s, &txn), 0);
	assert_int_equal(store_lead_get(&s, txn, "L", 1, &lead), 0);
	assert_int_equal(lead.last_seq, 5);
	assert_string_equal(lead.owner, "ann");
	store_read_end(&s, &txn);
	/* both laps held records data.mdb lacked when it opened: the open's
	 * checkpoint flushed its meta page before a new lap took a region */
	assert_int_equal(s.synced_seq, 5);
	assert_int_equal(journal_lap(s.journal), 6);
	store_release(&s);
}

/* A format-1 journal (one lap from offset 0, which may run past half
 * the file), as funneld wrote before the two halves: its records are
 * replayed, and the first new lap starts only once they are on the
 * disk in data.mdb.  The entries are written here by the format's
 * definition (journal.h), not by journal.c. */
static void
test_a_format_1_journal_is_replayed(void **state)
{
	unit_tmp *t = *state;
	store s;
	msgpack_sbuffer sb, payload;
	uint8_t prev[FUNNEL_HASH_BYTES] = { 0 }, h[FUNNEL_HASH_BYTES];
	enum { ENTRIES = 40, PER = 10 };   /* ~100 bytes a record: past half of 64 KiB */
	struct disk_head hd;
	size_t off = 0;

	open_store(&s, t->dir);
	store_release(&s);
	msgpack_sbuffer_init(&sb);
	msgpack_sbuffer_init(&payload);
	for (int e = 0; e < ENTRIES; e++) {
		crypto_generichash_state st;
		payload.size = 0;
		memset(&hd, 0, sizeof hd);
		hd.magic = DISK_MAGIC;
		hd.format = JOURNAL_FORMAT_V1;
		hd.lap = 1;
		hd.first_seq = 1 + (uint64_t)e * PER;
		hd.count = PER;
		crypto_generichash_init(&st, NULL, 0, 16);
		for (int i = 0; i < PER; i++) {
			make_record(&sb, hd.first_seq + (uint64_t)i, prev, NULL, 0, NULL, h);
			uint32_t n = (uint32_t)sb.size;
			msgpack_sbuffer_write(&payload, (const char *)&n, 4);
			msgpack_sbuffer_write(&payload, sb.data, sb.size);
			memcpy(prev, h, sizeof prev);
		}
		hd.len = payload.size;
		crypto_generichash_update(&st, (const uint8_t *)&hd, sizeof hd);
		for (size_t p = 0; p < payload.size;) {
			uint32_t n;
			memcpy(&n, payload.data + p, 4);
			crypto_generichash_update(&st, (const uint8_t *)payload.data + p, 4);
			crypto_generichash_update(&st, (const uint8_t *)payload.data + p + 4 + n -
			                          FUNNEL_HASH_BYTES, FUNNEL_HASH_BYTES);
			p += 4 + n;
		}
		crypto_generichash_final(&st, hd.sum, sizeof hd.sum);
		poke(t, (off_t)off, &hd, sizeof hd);
		poke(t, (off_t)(off + sizeof hd), payload.data, payload.size);
		off += sizeof hd + payload.size;
	}
	assert_true(off > JOURNAL_MIN_SIZE / 2);
	msgpack_sbuffer_destroy(&sb);
	msgpack_sbuffer_destroy(&payload);

	open_store(&s, t->dir);
	assert_int_equal(s.head_seq, ENTRIES * PER);
	assert_memory_equal(s.head_hash, prev, FUNNEL_HASH_BYTES);
	assert_int_equal(s.synced_seq, ENTRIES * PER);   /* flushed before the new lap */
	assert_int_equal(journal_lap(s.journal), ENTRIES * PER + 1);
	assert_int_equal(journal_lap_room(s.journal), JOURNAL_MIN_SIZE / 2);   /* region 0 */
	assert_false(journal_lap_spans(s.journal));
	store_release(&s);
	assert_int_equal(unlink(t->path), 0);
	open_store(&s, t->dir);
	assert_int_equal(s.head_seq, ENTRIES * PER);
	store_release(&s);
}

/*
 * A lap whose scan ends before entries of the same lap that are whole
 * (a journal copied by a backup while it was appended, so a block in
 * the middle holds older bytes; or a --no-sync run whose writeback put
 * a later entry on the disk and not an earlier one).  data.mdb already
 * holds the records before the gap, so the open replays nothing.  The
 * open must not continue that lap at the gap: a record appended there
 * that ends where a stale entry starts makes the stale entry look like
 * the lap's next one, and the next open refuses the log ("does not
 * continue") although the journal holds every acknowledged event.
 */
static void
test_an_open_does_not_continue_a_lap_before_stale_entries(void **state)
{
	unit_tmp *t = *state;
	store s;
	msgpack_sbuffer sb;
	uint8_t zero[FUNNEL_HASH_BYTES] = { 0 }, h[5][FUNNEL_HASH_BYTES], h3[FUNNEL_HASH_BYTES];
	uint8_t last[FUNNEL_HASH_BYTES];
	size_t offs[6];
	store_lead lead;
	MDB_txn *txn;

	/* data.mdb holds seqs 1 and 2 */
	open_store(&s, t->dir);
	store_release(&s);
	journal_records(t->dir, 1, 1, 2, zero, last);
	open_store(&s, t->dir);
	assert_int_equal(s.head_seq, 2);
	store_release(&s);
	/* lap 1 in region 0: 1, 2, 3 (lead L), 4, 5, all the same size; then
	 * the bytes of 3 lost (zeros) */
	msgpack_sbuffer_init(&sb);
	journal *j = open_j(t->dir, JOURNAL_MIN_SIZE);
	journal_new_lap(j, 1);
	for (int i = 0; i < 5; i++) {
		uint64_t seq = (uint64_t)i + 1;
		/* 3 chains to the log's head (1 and 2 are taken on their headers) */
		make_record(&sb, seq, i == 0 ? zero : i == 2 ? last : h[i - 1], seq == 3 ? "L" : NULL,
		            seq == 3 ? 1 : 0, NULL, h[i]);
		size_t end = sb.size;
		offs[i] = journal_used(j);
		assert_int_equal(write_durable(j, seq, 1, sb.data, &end), 0);
	}
	offs[5] = journal_used(j);
	journal_close(j);
	static const uint8_t zeros[4096];
	assert_true(offs[3] - offs[2] <= sizeof zeros);
	poke(t, (off_t)offs[2], zeros, offs[3] - offs[2]);

	/* the open replays nothing (data.mdb holds 1 and 2): a new lap */
	open_store(&s, t->dir);
	assert_int_equal(s.head_seq, 2);
	assert_int_equal(journal_used(s.journal), 0);
	/* an acknowledged seq 3 (lead M: as long as the lost L), journaled
	 * as the writer journals it; the stop leaves it to the journal */
	make_record(&sb, 3, last, "M", 1, NULL, h3);
	size_t end = sb.size;
	assert_int_equal(offs[3] - offs[2], JOURNAL_HEADER_BYTES + 4 + end);
	assert_int_equal(write_durable(s.journal, 3, 1, sb.data, &end), 0);
	store_release(&s);
	msgpack_sbuffer_destroy(&sb);

	open_store(&s, t->dir);
	assert_int_equal(s.head_seq, 3);
	assert_memory_equal(s.head_hash, h3, FUNNEL_HASH_BYTES);
	assert_int_equal(store_read_begin(&s, &txn), 0);
	assert_int_equal(store_lead_get(&s, txn, "M", 1, &lead), 0);
	store_read_end(&s, &txn);
	store_release(&s);
}

/*
 * The same stale entries, for a lap that is continued (an open that
 * replayed records continues its lap; when the open's checkpoint fails
 * the writer appends to it): journal_clear_rest() zeroes the region past
 * the lap's end, so an entry appended that ends where a stale one
 * started is the lap's last.
 */
static void
test_a_continued_lap_is_cleared_past_its_end(void **state)
{
	unit_tmp *t = *state;
	msgpack_sbuffer sb;
	uint8_t zero[FUNNEL_HASH_BYTES] = { 0 }, h[5][FUNNEL_HASH_BYTES];
	size_t offs[6];
	seen got;
	static const uint8_t zeros[4096];

	msgpack_sbuffer_init(&sb);
	journal *j = open_j(t->dir, JOURNAL_MIN_SIZE);
	journal_new_lap(j, 1);
	for (int i = 0; i < 5; i++) {
		uint64_t seq = (uint64_t)i + 1;
		make_record(&sb, seq, i == 0 ? zero : h[i - 1], NULL, 0, NULL, h[i]);
		size_t end = sb.size;
		offs[i] = journal_used(j);
		assert_int_equal(write_durable(j, seq, 1, sb.data, &end), 0);
	}
	offs[5] = journal_used(j);
	journal_close(j);
	/* the bytes of seq 3 lost; 4 and 5 whole after them */
	assert_true(offs[3] - offs[2] <= sizeof zeros);
	poke(t, (off_t)offs[2], zeros, offs[3] - offs[2]);

	j = open_j(t->dir, JOURNAL_MIN_SIZE);
	scan_is(j, &got, 1, 3, 2);   /* the lap ends at the lost entry */
	assert_int_equal(journal_clear_rest(j), 0);
	/* seq 3 appended again, as long as the lost one: it ends where 4 began */
	make_record(&sb, 3, h[1], NULL, 0, NULL, h[2]);
	size_t end = sb.size;
	assert_int_equal(write_durable(j, 3, 1, sb.data, &end), 0);
	assert_int_equal(journal_used(j), offs[3]);
	journal_close(j);

	j = open_j(t->dir, JOURNAL_MIN_SIZE);
	scan_is(j, &got, 1, 4, 3);   /* 1, 2, 3: not the stale 4 and 5 */
	journal_close(j);
	msgpack_sbuffer_destroy(&sb);
}

static void
test_a_gap_is_refused(void **state)
{
	unit_tmp *t = *state;
	store s;
	char why[512] = "";
	uint8_t zero[FUNNEL_HASH_BYTES] = { 0 }, last[FUNNEL_HASH_BYTES];

	open_store(&s, t->dir);
	store_release(&s);
	/* a lap from seq 5 on an empty log: 1 to 4 are missing */
	journal_records(t->dir, 5, 5, 2, zero, last);
	assert_int_equal(store_open(&s, t->dir, 1 << 20, 0, JOURNAL_MIN_SIZE, 1, why, sizeof why), -1);
	assert_non_null(strstr(why, "/journal does not continue the log"));
	assert_non_null(strstr(why, "seqs 1 to 4 are missing"));
	/* a lap from 1 whose first record does not chain (another prev) */
	memset(zero, 7, sizeof zero);
	journal_records(t->dir, 1, 1, 2, zero, last);
	assert_int_equal(store_open(&s, t->dir, 1 << 20, 0, JOURNAL_MIN_SIZE, 1, why, sizeof why), -1);
	assert_non_null(strstr(why, "record of seq 1 does not chain to the log's head 0"));
	/* nothing changed: without the journal the log is as it was */
	snprintf(t->path, sizeof t->path, "%s/%s", t->dir, JOURNAL_FILE);
	assert_int_equal(unlink(t->path), 0);
	open_store(&s, t->dir);
	assert_int_equal(s.head_seq, 0);
	store_release(&s);
}

static void
test_a_group_bigger_than_the_journal(void **state)
{
	unit_tmp *t = *state;
	store s;
	store_wtxn w;
	store_lead st = { 0 };
	msgpack_sbuffer sb, all;
	uint8_t prev[FUNNEL_HASH_BYTES] = { 0 }, h[FUNNEL_HASH_BYTES];
	enum { N = 1200 };   /* ~100 bytes each: more than the 64 KiB journal */
	size_t *ends = calloc(N, sizeof *ends);

	assert_non_null(ends);
	msgpack_sbuffer_init(&sb);
	msgpack_sbuffer_init(&all);
	open_store(&s, t->dir);
	assert_int_equal(store_group_begin(&s, &w), 0);
	for (int i = 0; i < N; i++) {
		char id[32];
		make_record(&sb, (uint64_t)i + 1, prev, NULL, 0, NULL, h);
		snprintf(id, sizeof id, "id-%d", i + 1);
		assert_int_equal(store_append(&w, (uint64_t)i + 1, sb.data, sb.size, NULL, 0, &st,
		                              id, strlen(id), 0), 0);
		msgpack_sbuffer_write(&all, sb.data, sb.size);
		ends[i] = all.size;
		memcpy(prev, h, sizeof prev);
	}
	assert_true(all.size > JOURNAL_MIN_SIZE);
	assert_int_equal(store_put_head(&s, w.txn, N, prev, 0), 0);
	assert_int_equal(store_group_end(&s, &w, N, N, all.size), 0);
	store_set_head(&s, N, 1000 * N, prev, 0);
	assert_int_equal(store_group_journal(&s, 1, N, all.data, ends), 0);
	assert_int_equal(store_group_wait(&s), 0);
	assert_int_equal(s.ckpt_seq, N);   /* a checkpoint made it durable */
	store_release(&s);
	snprintf(t->path, sizeof t->path, "%s/%s", t->dir, JOURNAL_FILE);
	assert_int_equal(unlink(t->path), 0);
	open_store(&s, t->dir);
	assert_int_equal(s.head_seq, N);
	store_release(&s);
	msgpack_sbuffer_destroy(&sb);
	msgpack_sbuffer_destroy(&all);
	free(ends);
}

/*
 * Apply x.note records first..first+n-1 as the writer applies a group
 * (daemon/ingest.c): into a child of the tail, then into the journal.  A
 * full map is handled as the writer does: the attempt aborted, the tail
 * checkpointed, the map grown, the group applied again; STORE_REDO (the
 * checkpoint that was to take the group grew the map and rebuilt the
 * tail without it) applies it again too.  Returns how many times
 * STORE_REDO came.
 */
static int
writer_group(store *s, uint64_t first, int n, msgpack_sbuffer *all, size_t *ends)
{
	int redone = 0;
	msgpack_sbuffer sb;
	msgpack_sbuffer_init(&sb);
	for (;;) {
		store_wtxn w;
		store_lead st = { 0 };
		uint8_t prev[FUNNEL_HASH_BYTES], h[FUNNEL_HASH_BYTES];
		int rc = 0;
		memcpy(prev, s->head_hash, sizeof prev);
		all->size = 0;
		assert_int_equal(store_group_begin(s, &w), 0);
		for (int i = 0; i < n && rc == 0; i++) {
			char id[32];
			make_record(&sb, first + (uint64_t)i, prev, NULL, 0, NULL, h);
			snprintf(id, sizeof id, "id-%llu", (unsigned long long)(first + (uint64_t)i));
			rc = store_append(&w, first + (uint64_t)i, sb.data, sb.size, NULL, 0, &st, id,
			                  strlen(id), 0);
			msgpack_sbuffer_write(all, sb.data, sb.size);
			ends[i] = all->size;
			memcpy(prev, h, sizeof prev);
		}
		if (rc == 0)
			rc = store_put_head(s, w.txn, first + (uint64_t)n - 1, prev, 0);
		if (rc == MDB_MAP_FULL) {
			assert_int_equal(store_group_end(s, &w, 0, 0, 0), 0);
			assert_int_equal(store_checkpoint(s), 0);
			assert_int_equal(store_grow(s), 0);
			continue;
		}
		assert_int_equal(rc, 0);
		uint64_t last = first + (uint64_t)n - 1;
		assert_int_equal(store_group_end(s, &w, last, (size_t)n, all->size), 0);
		store_set_head(s, last, 1000 * last, prev, 0);
		rc = store_group_journal(s, first, (size_t)n, all->data, ends);
		if (rc == STORE_REDO) {
			redone++;
			continue;
		}
		assert_int_equal(rc, 0);
		assert_int_equal(store_group_wait(s), 0);
		msgpack_sbuffer_destroy(&sb);
		return redone;
	}
}

/* A checkpoint whose commit needs more pages than the map has (LMDB
 * saves its free list then) grows the map and commits again, and the
 * group whose entry did not fit in the journal, which that checkpoint
 * was to make durable, is applied again: none is refused, every record
 * is in the log reopened without the journal. */
static void
test_a_checkpoint_grows_a_full_map(void **state)
{
	unit_tmp *t = *state;
	store s;
	msgpack_sbuffer all;
	enum { GROUPS = 60, MAXN = 700 };
	size_t *ends = calloc(MAXN, sizeof *ends);
	uint64_t seq = 1;
	int redone = 0;
	char why[512] = "";

	assert_non_null(ends);
	msgpack_sbuffer_init(&all);
	if (store_open(&s, t->dir, 64 << 10, 0, JOURNAL_MIN_SIZE, 1, why, sizeof why) != 0)
		fail_msg("store_open: %s", why);
	for (int g = 0; g < GROUPS; g++) {
		/* small groups that fit a lap, and groups larger than one */
		int n = g % 3 == 0 ? 40 : 300 + (g * 37) % 400;
		redone += writer_group(&s, seq, n, &all, ends);
		seq += (uint64_t)n;
	}
	print_message("map grown to %zu KiB; %d groups applied again after a checkpoint grew it\n",
	              s.map_size >> 10, redone);
	assert_true(redone > 0);
	store_release(&s);
	snprintf(t->path, sizeof t->path, "%s/%s", t->dir, JOURNAL_FILE);
	assert_int_equal(unlink(t->path), 0);
	if (store_open(&s, t->dir, 64 << 10, 0, JOURNAL_MIN_SIZE, 1, why, sizeof why) != 0)
		fail_msg("store_open: %s", why);
	assert_int_equal(s.head_seq, seq - 1);
	MDB_txn *txn;
	MDB_val v;
	assert_int_equal(store_read_begin(&s, &txn), 0);
	for (uint64_t q = 1; q < seq; q++)
		assert_int_equal(store_record_get(&s, txn, q, &v), 0);
	store_read_end(&s, &txn);
	store_release(&s);
	msgpack_sbuffer_destroy(&all);
	free(ends);
}

/* A journal of another format (a newer funneld's) at offset 0 is not a
 * torn append: its records may be acknowledged events the log lacks, so
 * the store refuses it rather than start a new lap over them. */
static void
test_another_format_is_refused(void **state)
{
	unit_tmp *t = *state;
	store s;
	char why[512] = "";
	uint8_t zero[FUNNEL_HASH_BYTES] = { 0 }, last[FUNNEL_HASH_BYTES];

	open_store(&s, t->dir);
	store_release(&s);
	journal_records(t->dir, 1, 1, 3, zero, last);
	uint32_t format = JOURNAL_FORMAT + 1;   /* the u32 after the magic */
	poke(t, 4, &format, sizeof format);
	assert_int_equal(store_open(&s, t->dir, 1 << 20, 0, JOURNAL_MIN_SIZE, 1, why, sizeof why), -1);
	assert_non_null(strstr(why, "format"));
	/* nothing changed: the journal's bytes are still there */
	int fd = open(t->path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &format, sizeof format, 4), (ssize_t)sizeof format);
	close(fd);
	assert_int_equal(format, JOURNAL_FORMAT + 1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_append_then_scan, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_flushes_on_the_flusher_thread, unit_tmp_setup,
		                                unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_torn_last_entry, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_old_lap_entries_after_a_new_lap, unit_tmp_setup,
		                                unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_a_bogus_newer_header_is_not_the_current_lap,
		                                unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_two_laps_read_in_order, unit_tmp_setup,
		                                unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_bigger_than_the_file_does_not_fit, unit_tmp_setup,
		                                unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_store_replays_the_journal, unit_tmp_setup,
		                                unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_store_replays_two_laps, unit_tmp_setup,
		                                unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_a_format_1_journal_is_replayed, unit_tmp_setup,
		                                unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_a_continued_lap_is_cleared_past_its_end,
		                                unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_a_gap_is_refused, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_an_open_does_not_continue_a_lap_before_stale_entries,
		                                unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_another_format_is_refused, unit_tmp_setup,
		                                unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_a_checkpoint_grows_a_full_map, unit_tmp_setup,
		                                unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_a_group_bigger_than_the_journal, unit_tmp_setup,
		                                unit_tmp_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
