/*
 * tests/integration/test_daemon.c - funneld as a producer and a reader see
 * it: a real daemon process, real sockets, a real LMDB file.
 */
#include <inttypes.h>
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

#include "funnel/funnel.h"
#include "harness.h"
#include "workload.h"

typedef struct ctx {
	daemon_proc d;
	funnel_producer *p;
	funnel_query *q;
	msgpack_sbuffer sb;
} ctx;

static int
open_clients(ctx *c)
{
	if (funnel_producer_new(&c->p, c->d.ingest, 10000) != FUNNEL_OK)
		return -1;
	if (funnel_query_new(&c->q, c->d.query, 10000) != FUNNEL_OK)
		return -1;
	return 0;
}

static int
setup_with(void **state, const char *extra)
{
	ctx *c = calloc(1, sizeof *c);
	if (c == NULL || harness_start(&c->d, extra) != 0)
		return -1;
	msgpack_sbuffer_init(&c->sb);
	*state = c;
	return open_clients(c);
}

static int
setup(void **state)
{
	return setup_with(state, NULL);
}

static int
teardown(void **state)
{
	ctx *c = *state;
	funnel_producer_destroy(&c->p);
	funnel_query_destroy(&c->q);
	harness_cleanup(&c->d);
	msgpack_sbuffer_destroy(&c->sb);
	free(c);
	return 0;
}

static uint64_t
head(ctx *c)
{
	funnel_status st;
	assert_int_equal(funnel_status_get(c->q, &st), FUNNEL_OK);
	return st.head;
}

/* Publish one event; data is a NULL-terminated list of string pairs. */
static int
pub1(ctx *c, const char *type, const char *lead, const char *id, funnel_ack *ack, ...)
{
	va_list ap;
	const char *kv[16];
	int n = 0;
	va_start(ap, ack);
	while ((kv[n] = va_arg(ap, const char *)) != NULL && n < 14)
		n++;
	va_end(ap);
	c->sb.size = 0;
	if (n == 0)
		wl_kv(&c->sb, NULL);
	else if (n == 2)
		wl_kv(&c->sb, kv[0], kv[1], NULL);
	else
		wl_kv(&c->sb, kv[0], kv[1], kv[2], kv[3], NULL);
	funnel_event ev = { .type = type, .lead = lead, .id = id, .data = c->sb.data,
	                    .data_len = c->sb.size };
	funnel_ack local;
	return funnel_publish(c->p, &ev, 1, ack ? ack : &local);
}

/* Fetch every record of the log. */
static size_t
replay_all(ctx *c, funnel_replay_req *req, uint8_t **recs, size_t *lens, size_t cap)
{
	funnel_page pg;
	size_t n = 0;
	for (;;) {
		assert_int_equal(funnel_replay_page(c->q, req, &pg), FUNNEL_OK);
		for (size_t i = 0; i < pg.n && n < cap; i++, n++) {
			recs[n] = malloc(pg.lens[i]);
			memcpy(recs[n], pg.recs[i], pg.lens[i]);
			lens[n] = pg.lens[i];
		}
		int end = pg.end;
		req->from = pg.next;
		funnel_page_release(&pg);
		if (end)
			return n;
	}
}

static void
test_publish_ack_subscribe_replay_same_bytes(void **state)
{
	ctx *c = *state;
	funnel_subscriber *s;
	funnel_sub_opts o = { .publish = c->d.publish, .query = c->d.query, .from = 1, .live = 1 };
	assert_int_equal(funnel_subscriber_new(&s, &o), FUNNEL_OK);

	funnel_ack ack;
	c->sb.size = 0;
	wl_lead_data(&c->sb, 1, 1);
	funnel_event ev = { .type = "lead.captured", .lead = "L-1", .id = "form-1",
	                    .data = c->sb.data, .data_len = c->sb.size };
	assert_int_equal(funnel_publish(c->p, &ev, 1, &ack), FUNNEL_OK);
	assert_int_equal(ack.seq, 1);
	assert_false(ack.dup);

	const uint8_t *live;
	size_t live_len;
	assert_int_equal(funnel_subscriber_next(s, 5000, &live, &live_len), FUNNEL_OK);
	uint8_t *copy = malloc(live_len);
	memcpy(copy, live, live_len);

	uint8_t *recs[4];
	size_t lens[4];
	funnel_replay_req req = { .from = 1 };
	assert_int_equal(replay_all(c, &req, recs, lens, 4), 1);
	assert_int_equal(lens[0], live_len);
	assert_memory_equal(recs[0], copy, live_len);
	assert_true(funnel_record_hash_ok(recs[0], lens[0]));

	msgpack_zone z;
	msgpack_zone_init(&z, 1024);
	funnel_record r;
	assert_int_equal(funnel_record_parse(recs[0], lens[0], &z, &r), FUNNEL_OK);
	assert_int_equal(r.seq, 1);
	assert_int_equal(r.stage.len, 7);
	assert_memory_equal(r.stage.ptr, "inquiry", 7);
	assert_non_null(r.data);
	msgpack_zone_destroy(&z);
	free(recs[0]);
	free(copy);
	funnel_subscriber_destroy(&s);
	assert_null(s);
}

static void
test_duplicate_returns_original_seq(void **state)
{
	ctx *c = *state;
	funnel_ack a, b;
	assert_int_equal(pub1(c, "lead.captured", "L-1", "k-1", &a, "email", "a@x.example", NULL), FUNNEL_OK);
	assert_int_equal(pub1(c, "lead.captured", "L-2", "k-2", NULL, "email", "b@x.example", NULL), FUNNEL_OK);
	/* an exact retry is the duplicate: the original seq, nothing stored */
	assert_int_equal(pub1(c, "lead.captured", "L-1", "k-1", &b, "email", "a@x.example", NULL), FUNNEL_OK);
	assert_int_equal(b.seq, a.seq);
	assert_true(b.dup);
	/* the same id with other content is no duplicate: EIDCONFLICT, tests below */
	assert_int_equal(pub1(c, "lead.captured", "L-1", "k-1", &b, "email", "changed@x.example", NULL),
	                 FUNNEL_EIDCONFLICT);
	assert_int_equal(head(c), 2);
	/* a duplicate inside one request: the second is acknowledged as a duplicate of the first */
	funnel_event evs[2] = {
		{ .type = "x.note", .id = "same" },
		{ .type = "x.note", .id = "same" },
	};
	funnel_ack acks[2];
	assert_int_equal(funnel_publish(c->p, evs, 2, acks), FUNNEL_OK);
	assert_int_equal(acks[0].seq, 3);
	assert_false(acks[0].dup);
	assert_int_equal(acks[1].seq, 3);
	assert_true(acks[1].dup);
	assert_int_equal(head(c), 3);
}

/* An id names one event forever: the same id sent with another type,
 * lead, cause or data is EIDCONFLICT carrying the seq that holds the id,
 * and refuses its whole request; a retry that differs only in transport
 * (expected_version, integer widths in data) or in occurred_at is a
 * duplicate. */
static void
test_id_reused_for_another_event_is_eidconflict(void **state)
{
	ctx *c = *state;
	funnel_ack a, acks[3];
	const funnel_error_info *e = funnel_producer_error(c->p);

	/* the README tour: form-123 is L-1's capture */
	assert_int_equal(pub1(c, "lead.captured", "L-1", "form-123", &a, "email", "ana@acme.example",
	                      NULL), FUNNEL_OK);
	assert_int_equal(a.seq, 1);
	assert_int_equal(pub1(c, "lead.captured", "L-123", "form-123", NULL, "email",
	                      "ana@acme.example", NULL), FUNNEL_EIDCONFLICT);
	assert_int_equal(e->code, FUNNEL_EIDCONFLICT);
	assert_int_equal(e->seq, 1);
	assert_int_equal(e->index, 0);
	assert_string_equal(e->field, "id");
	assert_non_null(strstr(e->message, "seq 1"));
	assert_non_null(strstr(e->message, "differs in lead"));
	/* other type, other data, data left out, occurred_at, cause */
	assert_int_equal(pub1(c, "x.form", "L-1", "form-123", NULL, "email", "ana@acme.example", NULL),
	                 FUNNEL_EIDCONFLICT);
	assert_non_null(strstr(e->message, "differs in type"));
	assert_int_equal(pub1(c, "lead.captured", "L-1", "form-123", NULL, "email", "eva@acme.example",
	                      NULL), FUNNEL_EIDCONFLICT);
	assert_non_null(strstr(e->message, "differs in data"));
	funnel_event bare = { .type = "lead.captured", .lead = "L-1", .id = "form-123" };
	assert_int_equal(funnel_publish(c->p, &bare, 1, acks), FUNNEL_EIDCONFLICT);
	c->sb.size = 0;
	wl_kv(&c->sb, "email", "ana@acme.example", NULL);
	funnel_event ev = { .type = "lead.captured", .lead = "L-1", .id = "form-123",
	                    .data = c->sb.data, .data_len = c->sb.size };
	/* occurred_at is not content: a retry stamped later is the duplicate */
	ev.has_occurred_at = 1;
	ev.occurred_at = 42;
	assert_int_equal(funnel_publish(c->p, &ev, 1, acks), FUNNEL_OK);
	assert_int_equal(acks[0].seq, 1);
	assert_true(acks[0].dup);
	ev.has_occurred_at = 0;
	ev.cause = 1;
	assert_int_equal(funnel_publish(c->p, &ev, 1, acks), FUNNEL_EIDCONFLICT);
	assert_non_null(strstr(e->message, "differs in cause"));
	ev.cause = 0;
	/* a retry with a stale expected_version is still the duplicate */
	ev.has_expected_version = 1;
	ev.expected_version = 0;
	assert_int_equal(funnel_publish(c->p, &ev, 1, acks), FUNNEL_OK);
	assert_int_equal(acks[0].seq, 1);
	assert_true(acks[0].dup);
	ev.has_expected_version = 0;
	/* the same data map with an integer sent wider than needed is the same content */
	msgpack_sbuffer narrow, wide;
	msgpack_sbuffer_init(&narrow);
	msgpack_sbuffer_init(&wide);
	msgpack_packer pn, pw;
	msgpack_packer_init(&pn, &narrow, msgpack_sbuffer_write);
	msgpack_packer_init(&pw, &wide, msgpack_sbuffer_write);
	msgpack_pack_map(&pn, 1);
	msgpack_pack_str_with_body(&pn, "n", 1);
	msgpack_pack_uint8(&pn, 7);
	msgpack_pack_map(&pw, 1);
	msgpack_pack_str_with_body(&pw, "n", 1);
	msgpack_pack_fix_uint64(&pw, 7);
	funnel_event xn = { .type = "x.count", .id = "count-1", .data = narrow.data,
	                    .data_len = narrow.size };
	funnel_event xw = xn;
	xw.data = wide.data;
	xw.data_len = wide.size;
	assert_int_equal(funnel_publish(c->p, &xn, 1, acks), FUNNEL_OK);
	assert_int_equal(acks[0].seq, 2);
	assert_int_equal(funnel_publish(c->p, &xw, 1, acks), FUNNEL_OK);
	assert_int_equal(acks[0].seq, 2);
	assert_true(acks[0].dup);
	msgpack_sbuffer_destroy(&narrow);
	msgpack_sbuffer_destroy(&wide);
	assert_int_equal(head(c), 2);

	/* in a request: the conflict refuses the whole request, nothing stored */
	funnel_event batch[3] = {
		{ .type = "lead.captured", .lead = "L-9", .id = "form-9" },
		ev,
		{ .type = "lead.captured", .lead = "L-123", .id = "form-123" },
	};
	assert_int_equal(funnel_publish(c->p, batch, 3, acks), FUNNEL_EIDCONFLICT);
	assert_int_equal(e->index, 2);
	assert_int_equal(e->seq, 1);
	assert_int_equal(head(c), 2);
	/* inside one request, an id given twice to two different events */
	funnel_event twice[2] = {
		{ .type = "x.note", .id = "note-1" },
		{ .type = "x.other", .id = "note-1" },
	};
	assert_int_equal(funnel_publish(c->p, twice, 2, acks), FUNNEL_EIDCONFLICT);
	assert_int_equal(e->index, 1);
	assert_int_equal(e->seq, 3);     /* where event 0 would have been stored */
	assert_int_equal(head(c), 2);
	/* the exact retry of the tour's form, with the batch fixed: stored once */
	batch[2] = ev;
	assert_int_equal(funnel_publish(c->p, batch, 3, acks), FUNNEL_OK);
	assert_int_equal(acks[0].seq, 3);
	assert_false(acks[0].dup);
	assert_int_equal(acks[1].seq, 1);
	assert_true(acks[1].dup);
	assert_int_equal(acks[2].seq, 1);
	assert_true(acks[2].dup);
	assert_int_equal(head(c), 3);
}

static void
test_bad_inputs_rejected_log_unchanged(void **state)
{
	ctx *c = *state;
	const funnel_error_info *e;
	assert_int_equal(pub1(c, "lead.captured", "L-1", "c1", NULL, NULL), FUNNEL_OK);
	uint64_t h = head(c);

	struct {
		const char *type, *lead;
		const char *k, *v;
		int code;
		const char *field;
	} cases[] = {
		{ "lead.bogus", "L-1", NULL, NULL, FUNNEL_EUNKNOWN_TYPE, "type" },
		{ "deal.won", "L-404", NULL, NULL, FUNNEL_ENOLEAD, "lead" },
		{ "deal.won", "L-1", NULL, NULL, FUNNEL_ETRANSITION, "type" },
		{ "lead.accepted", "L-1", NULL, NULL, FUNNEL_ETRANSITION, "type" },
		{ "lead.qualified", NULL, NULL, NULL, FUNNEL_EMISSING, "lead" },
		{ "lead.rejected", "L-1", NULL, NULL, FUNNEL_EMISSING, "data.reason" },
		{ "lead.assigned", "L-1", "owner", "", FUNNEL_EVALUE, "data.owner" },
		{ "", "L-1", NULL, NULL, FUNNEL_EVALUE, "type" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int rc = cases[i].k ? pub1(c, cases[i].type, cases[i].lead, NULL, NULL, cases[i].k, cases[i].v, NULL)
		                    : pub1(c, cases[i].type, cases[i].lead, NULL, NULL, NULL);
		e = funnel_producer_error(c->p);
		if (rc != cases[i].code)
			fail_msg("case %zu (%s): got %s, want %s: %s", i, cases[i].type, funnel_errname(rc),
			         funnel_errname(cases[i].code), e->message);
		assert_string_equal(e->field, cases[i].field);
		assert_true(strlen(e->message) > 10);
		assert_int_equal(e->index, 0);
	}
	/* expected version */
	funnel_event ev = { .type = "lead.activity", .lead = "L-1", .has_expected_version = 1,
	                    .expected_version = 7 };
	c->sb.size = 0;
	wl_kv(&c->sb, "kind", "page_view", NULL);
	ev.data = c->sb.data;
	ev.data_len = c->sb.size;
	funnel_ack ack;
	assert_int_equal(funnel_publish(c->p, &ev, 1, &ack), FUNNEL_EVERSION);
	assert_non_null(strstr(funnel_producer_error(c->p)->message, "version 1"));
	ev.expected_version = 1;
	assert_int_equal(head(c), h);
	assert_int_equal(funnel_publish(c->p, &ev, 1, &ack), FUNNEL_OK);
	assert_int_equal(ack.seq, h + 1);

	/* malformed bytes straight on the wire: not msgpack, wrong shapes */
	static const struct {
		const char *bytes;
		size_t len;
		int code;
	} raw[] = {
		{ "\xc1", 1, FUNNEL_EMALFORMED },                      /* never-used msgpack byte */
		{ "\x93\x01\x02\x03", 4, FUNNEL_EMALFORMED },          /* an array, not an event map */
		{ "\x81\xa4type\x07", 7, FUNNEL_ETYPE },                /* type is an int */
		{ "\x82\xa4type\xa7x.thing\xa4""data\x05", 20, FUNNEL_ETYPE },  /* data not a map */
	};
	for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) {
		int rc = funnel_publish_packed(c->p, raw[i].bytes, raw[i].len, 1, &ack);
		if (rc != raw[i].code)
			fail_msg("raw case %zu: got %s, want %s", i, funnel_errname(rc), funnel_errname(raw[i].code));
	}
	assert_int_equal(head(c), h + 1);
}

static void
test_batch_is_atomic(void **state)
{
	ctx *c = *state;
	funnel_event evs[4] = {
		{ .type = "lead.captured", .lead = "B-1", .id = "b1" },
		{ .type = "lead.qualified", .lead = "B-1" },
		{ .type = "lead.captured", .lead = "B-2", .id = "b2" },
		{ .type = "deal.won", .lead = "B-2" },      /* makes no sense: B-2 is an inquiry */
	};
	funnel_ack acks[4];
	assert_int_equal(funnel_publish(c->p, evs, 4, acks), FUNNEL_ETRANSITION);
	assert_int_equal(funnel_producer_error(c->p)->index, 3);
	assert_int_equal(head(c), 0);
	funnel_lead_info li;
	assert_int_equal(funnel_lead_get(c->q, "B-1", &li), FUNNEL_ENOTFOUND);
	/* the ids of the refused batch were not kept: the same events now go in */
	evs[3].type = "lead.qualified";
	assert_int_equal(funnel_publish(c->p, evs, 4, acks), FUNNEL_OK);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(acks[i].seq, (uint64_t)i + 1);
		assert_false(acks[i].dup);
	}
	assert_int_equal(funnel_lead_get(c->q, "B-2", &li), FUNNEL_OK);
	assert_string_equal(li.stage, "mql");
	assert_int_equal(li.version, 2);
}

static void
test_lead_state_history_and_owner(void **state)
{
	ctx *c = *state;
	funnel_lead_info li;
	assert_int_equal(pub1(c, "lead.captured", "H-1", NULL, NULL, NULL), FUNNEL_OK);
	assert_int_equal(pub1(c, "x.other", "H-2", NULL, NULL, NULL), FUNNEL_OK);
	assert_int_equal(pub1(c, "lead.qualified", "H-1", NULL, NULL, NULL), FUNNEL_OK);
	assert_int_equal(pub1(c, "lead.assigned", "H-1", NULL, NULL, "owner", "rep-ann", NULL), FUNNEL_OK);
	assert_int_equal(pub1(c, "lead.accepted", "H-1", NULL, NULL, NULL), FUNNEL_OK);
	assert_int_equal(pub1(c, "lead.recycled", "H-1", NULL, NULL, "reason", "no-budget", NULL), FUNNEL_OK);
	assert_int_equal(pub1(c, "lead.qualified", "H-1", NULL, NULL, NULL), FUNNEL_OK);
	assert_int_equal(funnel_lead_get(c->q, "H-1", &li), FUNNEL_OK);
	assert_string_equal(li.stage, "mql");
	assert_int_equal(li.version, 6);
	assert_int_equal(li.last_seq, 7);
	assert_string_equal(li.owner, "rep-ann");
	/* a custom event names a lead that was never captured: stage none */
	assert_int_equal(funnel_lead_get(c->q, "H-2", &li), FUNNEL_OK);
	assert_string_equal(li.stage, "none");

	uint8_t *recs[16];
	size_t lens[16];
	funnel_replay_req req = { .lead = "H-1", .limit = 2 };
	size_t n = replay_all(c, &req, recs, lens, 16);
	assert_int_equal(n, 6);
	const char *stages[] = { "inquiry", "mql", "mql", "sal", "nurture", "mql" };
	msgpack_zone z;
	msgpack_zone_init(&z, 1024);
	for (size_t i = 0; i < n; i++) {
		funnel_record r;
		assert_int_equal(funnel_record_parse(recs[i], lens[i], &z, &r), FUNNEL_OK);
		assert_int_equal(r.lead.len, 3);
		assert_int_equal(r.version, i + 1);
		assert_int_equal(r.stage.len, strlen(stages[i]));
		assert_memory_equal(r.stage.ptr, stages[i], r.stage.len);
		free(recs[i]);
	}
	/* type prefix filter */
	funnel_replay_req tq = { .type = "lead.qualified" };
	n = replay_all(c, &tq, recs, lens, 16);
	assert_int_equal(n, 2);
	for (size_t i = 0; i < n; i++)
		free(recs[i]);
	msgpack_zone_destroy(&z);
}

/* Requests pipelined so that they reach one group: a multi-event request
 * refused after its first events stores none of them, and the requests
 * around it in the same group keep their outcomes (the writer redoes such
 * a group with nested transactions). */
static void
test_refused_request_in_a_group_stores_nothing(void **state)
{
	ctx *c = *state;
	funnel_event r1[2] = {
		{ .type = "lead.captured", .lead = "G-1", .id = "g1" },
		{ .type = "lead.qualified", .lead = "G-1", .id = "g2" },
	};
	funnel_event r2[3] = {
		{ .type = "lead.captured", .lead = "G-2", .id = "g3" },
		{ .type = "lead.captured", .lead = "G-3", .id = "g4" },
		{ .type = "deal.won", .lead = "G-2", .id = "g5" },   /* G-2 is an inquiry */
	};
	funnel_event r3[3] = {
		{ .type = "lead.accepted", .lead = "G-1", .id = "g6" },
		{ .type = "lead.qualified", .lead = "G-1", .id = "g2" },   /* dup of r1's */
		{ .type = "x.note", .lead = "G-3", .id = "g7" },
	};
	uint64_t rids[3], rid;
	funnel_ack acks[3];
	size_t n;
	for (int round = 0; round < 20; round++) {
		/* each round on fresh ids, so every round is judged afresh */
		char ids[8][32], leads[3][32];
		funnel_event *all[8] = { &r1[0], &r1[1], &r2[0], &r2[1], &r2[2], &r3[0], &r3[1], &r3[2] };
		static const int id_of[8] = { 1, 2, 3, 4, 5, 6, 2, 7 };
		static const int lead_of[8] = { 1, 1, 2, 3, 2, 1, 1, 3 };
		for (int i = 0; i < 3; i++)
			snprintf(leads[i], sizeof leads[i], "G%d-%d", round, i + 1);
		for (int i = 0; i < 8; i++) {
			snprintf(ids[i], sizeof ids[i], "g%d-%d", round, id_of[i]);
			all[i]->id = ids[i];
			all[i]->lead = leads[lead_of[i] - 1];
		}
		uint64_t base = head(c);
		assert_int_equal(funnel_send(c->p, r1, 2, &rids[0]), FUNNEL_OK);
		assert_int_equal(funnel_send(c->p, r2, 3, &rids[1]), FUNNEL_OK);
		assert_int_equal(funnel_send(c->p, r3, 3, &rids[2]), FUNNEL_OK);
		for (int k = 0; k < 3; k++) {
			int rc = funnel_collect(c->p, 10000, &rid, acks, 3, &n);
			if (rid == rids[0]) {
				assert_int_equal(rc, FUNNEL_OK);
				assert_int_equal(acks[0].seq, base + 1);
				assert_int_equal(acks[1].seq, base + 2);
			} else if (rid == rids[1]) {
				assert_int_equal(rc, FUNNEL_ETRANSITION);
				assert_int_equal(funnel_producer_error(c->p)->index, 2);
			} else {
				assert_int_equal(rid, rids[2]);
				assert_int_equal(rc, FUNNEL_OK);
				assert_int_equal(acks[0].seq, base + 3);
				assert_false(acks[0].dup);
				assert_int_equal(acks[1].seq, base + 2);
				assert_true(acks[1].dup);
				assert_int_equal(acks[2].seq, base + 4);
			}
		}
		assert_int_equal(head(c), base + 4);
		funnel_lead_info li;
		assert_int_equal(funnel_lead_get(c->q, leads[1], &li), FUNNEL_ENOTFOUND);
		assert_int_equal(funnel_lead_get(c->q, leads[0], &li), FUNNEL_OK);
		assert_string_equal(li.stage, "sal");
		assert_int_equal(li.version, 3);
		assert_int_equal(li.last_seq, base + 3);
		/* G-3's capture went with its refused request: x.note alone names it */
		assert_int_equal(funnel_lead_get(c->q, leads[2], &li), FUNNEL_OK);
		assert_string_equal(li.stage, "none");
		assert_int_equal(li.version, 1);
	}
	funnel_status st;
	assert_int_equal(funnel_status_get(c->q, &st), FUNNEL_OK);
	assert_int_equal(st.leads, 40);
	funnel_verify_result vr;
	assert_int_equal(funnel_verify(c->q, 0, 0, &vr), FUNNEL_OK);
	assert_int_equal(vr.bad_seq, 0);
}

/* Many leads whose ids share prefixes ("P", "P ", "P0", "P00", ...), their
 * events interleaved: replay by lead returns exactly each lead's seqs, in
 * order, from any start, across pages and a restart. */
static void
test_lead_history_interleaved_prefixes(void **state)
{
	ctx *c = *state;
	static const char *const names[] = { "P", "P ", "P0", "P00", "P0 0", "Pa", "P~", "P\xc3\xa9" };
	enum { NL = sizeof names / sizeof names[0], NE = 600 };
	uint64_t seqs[NL][NE];
	size_t count[NL] = { 0 };
	funnel_event evs[50];
	funnel_ack acks[50];

	/* requests of 50 events, the lead picked by a fixed pseudo-random walk */
	uint64_t x = 12345;
	for (int b = 0; b < NE / 50; b++) {
		int which[50];
		for (int i = 0; i < 50; i++) {
			x = x * 6364136223846793005ull + 1442695040888963407ull;
			which[i] = (int)((x >> 33) % NL);
			evs[i] = (funnel_event){ .type = "x.touch", .lead = names[which[i]] };
		}
		assert_int_equal(funnel_publish(c->p, evs, 50, acks), FUNNEL_OK);
		for (int i = 0; i < 50; i++)
			seqs[which[i]][count[which[i]]++] = acks[i].seq;
	}
	for (int pass = 0; pass < 2; pass++) {
		for (int l = 0; l < NL; l++) {
			funnel_lead_info li;
			assert_int_equal(funnel_lead_get(c->q, names[l], &li), FUNNEL_OK);
			assert_int_equal(li.version, count[l]);
			assert_int_equal(li.last_seq, seqs[l][count[l] - 1]);
			/* from the start, and from inside the history, in small pages */
			size_t starts[3] = { 0, count[l] / 2, count[l] - 1 };
			for (int k = 0; k < 3; k++) {
				uint8_t *recs[NE];
				size_t lens[NE];
				funnel_replay_req req = { .lead = names[l], .limit = 7,
				                          .from = k ? seqs[l][starts[k]] : 0 };
				size_t n = replay_all(c, &req, recs, lens, NE);
				assert_int_equal(n, count[l] - starts[k]);
				for (size_t i = 0; i < n; i++) {
					uint64_t seq;
					assert_int_equal(funnel_record_peek(recs[i], lens[i], &seq, NULL), FUNNEL_OK);
					assert_int_equal(seq, seqs[l][starts[k] + i]);
					free(recs[i]);
				}
			}
		}
		/* past a lead's last seq: nothing */
		uint8_t *recs[1];
		size_t lens[1];
		funnel_replay_req req = { .lead = "P", .from = seqs[0][count[0] - 1] + 1 };
		assert_int_equal(replay_all(c, &req, recs, lens, 1), 0);
		/* a lead that is only a prefix of others has no history */
		funnel_replay_req none = { .lead = "P0 " };
		assert_int_equal(replay_all(c, &none, recs, lens, 1), 0);
		/* control bytes, which no event's lead carries, match nothing */
		funnel_replay_req ctl = { .lead = "P\x01" };
		assert_int_equal(replay_all(c, &ctl, recs, lens, 1), 0);
		funnel_lead_info nli;
		assert_int_equal(funnel_lead_get(c->q, "P\x01", &nli), FUNNEL_ENOTFOUND);
		funnel_status st;
		assert_int_equal(funnel_status_get(c->q, &st), FUNNEL_OK);
		assert_int_equal(st.leads, NL);
		assert_int_equal(st.format, 2);
		if (pass == 0) {
			assert_int_equal(harness_stop(&c->d), 0);
			assert_int_equal(harness_restart(&c->d), 0);
		}
	}
}

/* A data directory in another on-disk format is refused with a message
 * that names both formats; nothing in it changes. */
static void
test_other_format_is_refused(void **state)
{
	ctx *c = *state;
	assert_int_equal(pub1(c, "x.tick", NULL, NULL, NULL, NULL), FUNNEL_OK);
	assert_int_equal(harness_stop(&c->d), 0);

	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi meta;
	uint32_t old = 1;
	MDB_val k = { 6, "format" }, v = { sizeof old, &old };
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
	assert_int_equal(mdb_env_open(env, c->d.data, 0, 0644), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
	assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);

	char cmd[1024], out[4096] = "";
	snprintf(cmd, sizeof cmd, "%s --data %s 2>&1", harness_bin("funneld"), c->d.data);
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	size_t got = fread(out, 1, sizeof out - 1, f);
	out[got] = '\0';
	int st = pclose(f);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) != 0);
	assert_non_null(strstr(out, "format 1"));
	assert_non_null(strstr(out, "format 2"));
}

static void
test_time_range_replay(void **state)
{
	ctx *c = *state;
	uint64_t mid_ts = 0;
	for (int i = 0; i < 30; i++) {
		char lead[16];
		snprintf(lead, sizeof lead, "T-%d", i);
		assert_int_equal(pub1(c, "lead.captured", lead, NULL, NULL, NULL), FUNNEL_OK);
		if (i == 14) {
			funnel_status st;
			assert_int_equal(funnel_status_get(c->q, &st), FUNNEL_OK);
			mid_ts = st.head_ts;   /* ts of seq 15 */
		}
		usleep(2000);
	}
	uint8_t *recs[64];
	size_t lens[64];
	funnel_replay_req req = { .since = mid_ts, .limit = 4 };
	size_t n = replay_all(c, &req, recs, lens, 64);
	assert_int_equal(n, 16);   /* seqs 15..30 */
	uint64_t seq, ts;
	assert_int_equal(funnel_record_peek(recs[0], lens[0], &seq, &ts), FUNNEL_OK);
	assert_int_equal(seq, 15);
	for (size_t i = 0; i < n; i++)
		free(recs[i]);
	funnel_replay_req req2 = { .until = mid_ts };
	n = replay_all(c, &req2, recs, lens, 64);
	assert_int_equal(n, 14);
	for (size_t i = 0; i < n; i++)
		free(recs[i]);
}

static void
test_restart_keeps_data_and_seq_continues(void **state)
{
	ctx *c = *state;
	funnel_ack ack;
	for (int i = 0; i < 10; i++)
		assert_int_equal(pub1(c, "x.tick", NULL, NULL, NULL, NULL), FUNNEL_OK);
	funnel_status before, after;
	assert_int_equal(funnel_status_get(c->q, &before), FUNNEL_OK);
	assert_int_equal(harness_stop(&c->d), 0);   /* clean exit on SIGTERM */
	assert_int_equal(harness_restart(&c->d), 0);
	assert_int_equal(funnel_status_get(c->q, &after), FUNNEL_OK);
	assert_int_equal(after.head, 10);
	assert_memory_equal(after.head_hash, before.head_hash, FUNNEL_HASH_BYTES);
	assert_int_equal(pub1(c, "x.tick", NULL, NULL, &ack, NULL), FUNNEL_OK);
	assert_int_equal(ack.seq, 11);
	funnel_verify_result vr;
	assert_int_equal(funnel_verify(c->q, 0, 0, &vr), FUNNEL_OK);
	assert_int_equal(vr.checked, 11);
	assert_int_equal(vr.bad_seq, 0);
}

static void
test_map_grows_when_full(void **state)
{
	ctx *c = *state;
	/* 1 MiB map to start with: ~8,000 events of ~300 bytes need it to grow several times */
	funnel_event evs[100];
	funnel_ack acks[100];
	msgpack_sbuffer bufs[100];
	char leads[100][32];
	for (int r = 0; r < 80; r++) {
		for (int i = 0; i < 100; i++) {
			msgpack_sbuffer_init(&bufs[i]);
			wl_lead_data(&bufs[i], 7, (uint64_t)r * 100 + (uint64_t)i);
			snprintf(leads[i], sizeof leads[i], "G-%d-%d", r, i);
			evs[i] = (funnel_event){ .type = "lead.captured", .lead = leads[i],
			                         .data = bufs[i].data, .data_len = bufs[i].size };
		}
		int rc = funnel_publish(c->p, evs, 100, acks);
		for (int i = 0; i < 100; i++)
			msgpack_sbuffer_destroy(&bufs[i]);
		assert_int_equal(rc, FUNNEL_OK);
	}
	funnel_status st;
	assert_int_equal(funnel_status_get(c->q, &st), FUNNEL_OK);
	assert_int_equal(st.head, 8000);
	assert_true(st.map_bytes > (1u << 20));
	funnel_verify_result vr;
	assert_int_equal(funnel_verify(c->q, 0, 0, &vr), FUNNEL_OK);
	assert_int_equal(vr.checked, 8000);
}

/* Groups that both need a bigger map and hold a request refused after
 * its first event: the attempt without nested transactions is redone
 * with them, and that redo itself may run out of map and be redone on a
 * bigger one.  Whatever the order, each group stores exactly its valid
 * requests: seqs gapless, the refused captures absent, the lead count
 * right (also after a restart, from meta), the chain whole. */
static void
test_refused_request_while_the_map_grows(void **state)
{
	ctx *c = *state;
	enum { ROUNDS = 40, BIG = 100 };
	static funnel_event evs[BIG];
	static funnel_ack acks[BIG];
	static msgpack_sbuffer bufs[BIG];
	static char leads[BIG][32];
	char bad_lead[32], bad_lead2[32];
	uint64_t expect_head = head(c), rid[3], got;
	size_t n;
	for (int r = 0; r < ROUNDS; r++) {
		for (int i = 0; i < BIG; i++) {
			msgpack_sbuffer_init(&bufs[i]);
			wl_lead_data(&bufs[i], 11, (uint64_t)r * BIG + (uint64_t)i);
			snprintf(leads[i], sizeof leads[i], "M-%d-%d", r, i);
			evs[i] = (funnel_event){ .type = "lead.captured", .lead = leads[i],
			                         .data = bufs[i].data, .data_len = bufs[i].size };
		}
		snprintf(bad_lead, sizeof bad_lead, "MB-%d", r);
		snprintf(bad_lead2, sizeof bad_lead2, "MC-%d", r);
		funnel_event bad[3] = {
			{ .type = "lead.captured", .lead = bad_lead, .data = bufs[0].data, .data_len = bufs[0].size },
			{ .type = "lead.captured", .lead = bad_lead2 },
			{ .type = "deal.won", .lead = bad_lead },   /* an inquiry: refused */
		};
		/* pipelined: the three requests mostly reach one group */
		assert_int_equal(funnel_send(c->p, evs, BIG / 2, &rid[0]), FUNNEL_OK);
		assert_int_equal(funnel_send(c->p, bad, 3, &rid[1]), FUNNEL_OK);
		assert_int_equal(funnel_send(c->p, evs + BIG / 2, BIG / 2, &rid[2]), FUNNEL_OK);
		for (int k = 0; k < 3; k++) {
			int rc = funnel_collect(c->p, 10000, &got, acks, BIG, &n);
			if (got == rid[1]) {
				assert_int_equal(rc, FUNNEL_ETRANSITION);
				assert_int_equal(funnel_producer_error(c->p)->index, 2);
			} else {
				assert_int_equal(rc, FUNNEL_OK);
				assert_int_equal(n, BIG / 2);
				uint64_t first = expect_head + 1 + (got == rid[2] ? BIG / 2 : 0);
				for (size_t i = 0; i < n; i++)
					assert_int_equal(acks[i].seq, first + i);
			}
		}
		for (int i = 0; i < BIG; i++)
			msgpack_sbuffer_destroy(&bufs[i]);
		expect_head += BIG;
		assert_int_equal(head(c), expect_head);
		funnel_lead_info li;
		assert_int_equal(funnel_lead_get(c->q, bad_lead, &li), FUNNEL_ENOTFOUND);
		assert_int_equal(funnel_lead_get(c->q, bad_lead2, &li), FUNNEL_ENOTFOUND);
	}
	funnel_status st;
	for (int pass = 0; pass < 2; pass++) {
		assert_int_equal(funnel_status_get(c->q, &st), FUNNEL_OK);
		assert_int_equal(st.head, expect_head);
		assert_int_equal(st.leads, ROUNDS * BIG);
		assert_true(st.map_bytes > (1u << 20));
		funnel_verify_result vr;
		assert_int_equal(funnel_verify(c->q, 0, 0, &vr), FUNNEL_OK);
		assert_int_equal(vr.checked, expect_head);
		assert_int_equal(vr.bad_seq, 0);
		if (pass == 0) {
			funnel_producer_destroy(&c->p);
			funnel_query_destroy(&c->q);
			assert_int_equal(harness_stop(&c->d), 0);
			assert_int_equal(harness_restart(&c->d), 0);
			assert_int_equal(open_clients(c), 0);
		}
	}
}

/* In a group redone with nested transactions, requests of one event go
 * straight into the group's transaction through the writer's cursors,
 * those of several through a nested transaction's own cursors.  Here a
 * one-event request appends to the log, a request of 40 events (each
 * over 300 bytes) splits the log's last page from the nested
 * transaction, and another one-event request appends after it: its
 * record must land after theirs, so the log reads back in seq order
 * and every seq is found where it belongs. */
static void
test_appends_around_a_nested_request(void **state)
{
	ctx *c = *state;
	enum { ROUNDS = 30, BIG = 40 };
	static funnel_event big[BIG];
	static funnel_ack acks[BIG];
	static msgpack_sbuffer bufs[BIG];
	static char ids[BIG][32];
	char bad_lead[32], one_a[32], one_b[32];
	uint64_t rid[4], got;
	size_t n;
	for (int r = 0; r < ROUNDS; r++) {
		for (int i = 0; i < BIG; i++) {
			msgpack_sbuffer_init(&bufs[i]);
			wl_lead_data(&bufs[i], 13, (uint64_t)r * BIG + (uint64_t)i);
			snprintf(ids[i], sizeof ids[i], "N-%d-%d", r, i);
			big[i] = (funnel_event){ .type = "x.page", .id = ids[i], .data = bufs[i].data,
			                         .data_len = bufs[i].size };
		}
		snprintf(bad_lead, sizeof bad_lead, "NB-%d", r);
		snprintf(one_a, sizeof one_a, "NA-%d", r);
		snprintf(one_b, sizeof one_b, "NZ-%d", r);
		funnel_event bad[2] = {
			{ .type = "lead.captured", .lead = bad_lead },
			{ .type = "deal.won", .lead = bad_lead },   /* an inquiry: refused */
		};
		funnel_event a = { .type = "x.one", .id = one_a, .data = bufs[0].data,
		                   .data_len = bufs[0].size };
		funnel_event b = { .type = "x.one", .id = one_b, .data = bufs[1].data,
		                   .data_len = bufs[1].size };
		uint64_t base = head(c);
		assert_int_equal(funnel_send(c->p, bad, 2, &rid[0]), FUNNEL_OK);
		assert_int_equal(funnel_send(c->p, &a, 1, &rid[1]), FUNNEL_OK);
		assert_int_equal(funnel_send(c->p, big, BIG, &rid[2]), FUNNEL_OK);
		assert_int_equal(funnel_send(c->p, &b, 1, &rid[3]), FUNNEL_OK);
		for (int k = 0; k < 4; k++) {
			int rc = funnel_collect(c->p, 10000, &got, acks, BIG, &n);
			if (got == rid[0]) {
				assert_int_equal(rc, FUNNEL_ETRANSITION);
			} else {
				assert_int_equal(rc, FUNNEL_OK);
				uint64_t first = base + (got == rid[1] ? 1 : got == rid[2] ? 2 : 2 + BIG);
				for (size_t i = 0; i < n; i++)
					assert_int_equal(acks[i].seq, first + i);
			}
		}
		for (int i = 0; i < BIG; i++)
			msgpack_sbuffer_destroy(&bufs[i]);
		assert_int_equal(head(c), base + 2 + BIG);
	}
	/* every seq where it belongs: the walk in key order, and each one sought */
	uint64_t h = head(c);
	funnel_verify_result vr;
	assert_int_equal(funnel_verify(c->q, 0, 0, &vr), FUNNEL_OK);
	assert_int_equal(vr.bad_seq, 0);
	assert_int_equal(vr.checked, h);
	for (uint64_t seq = 1; seq <= h; seq++) {
		funnel_page pg;
		funnel_replay_req req = { .from = seq, .limit = 1 };
		assert_int_equal(funnel_replay_page(c->q, &req, &pg), FUNNEL_OK);
		assert_int_equal(pg.n, 1);
		uint64_t s2 = 0;
		assert_int_equal(funnel_record_peek(pg.recs[0], pg.lens[0], &s2, NULL), FUNNEL_OK);
		if (s2 != seq)
			fail_msg("replay from seq %" PRIu64 " starts at seq %" PRIu64, seq, s2);
		funnel_page_release(&pg);
	}
}

static int
setup_small_map(void **state)
{
	return setup_with(state, "--map-size 1MiB");
}

static int
setup_capped_map(void **state)
{
	return setup_with(state, "--map-size 1MiB --max-map-size 2MiB");
}

static void
test_full_log_is_an_error_not_corruption(void **state)
{
	ctx *c = *state;
	funnel_event evs[50];
	funnel_ack acks[50];
	msgpack_sbuffer bufs[50];
	char leads[50][32];
	int rc = FUNNEL_OK, batches = 0;
	for (int r = 0; r < 200 && rc == FUNNEL_OK; r++, batches++) {
		for (int i = 0; i < 50; i++) {
			msgpack_sbuffer_init(&bufs[i]);
			wl_lead_data(&bufs[i], 9, (uint64_t)r * 50 + (uint64_t)i);
			snprintf(leads[i], sizeof leads[i], "F-%d-%d", r, i);
			evs[i] = (funnel_event){ .type = "lead.captured", .lead = leads[i],
			                         .data = bufs[i].data, .data_len = bufs[i].size };
		}
		rc = funnel_publish(c->p, evs, 50, acks);
		for (int i = 0; i < 50; i++)
			msgpack_sbuffer_destroy(&bufs[i]);
	}
	assert_int_equal(rc, FUNNEL_ESTORAGE);
	assert_non_null(strstr(funnel_producer_error(c->p)->message, "nothing was stored"));
	/* whole batches only, and a chain that verifies */
	uint64_t h = head(c);
	assert_int_equal(h % 50, 0);
	assert_int_equal(h, (uint64_t)(batches - 1) * 50);
	funnel_verify_result vr;
	assert_int_equal(funnel_verify(c->q, 0, 0, &vr), FUNNEL_OK);
	assert_int_equal(vr.checked, h);
	/* still serving: a small event fits in what is left, or is refused the same way */
	rc = pub1(c, "x.small", NULL, NULL, NULL, NULL);
	assert_true(rc == FUNNEL_OK || rc == FUNNEL_ESTORAGE);
	funnel_status st;
	assert_int_equal(funnel_status_get(c->q, &st), FUNNEL_OK);
}

static void
test_query_endpoint_errors(void **state)
{
	ctx *c = *state;
	funnel_lead_info li;
	assert_int_equal(funnel_lead_get(c->q, "nobody", &li), FUNNEL_ENOTFOUND);
	funnel_page pg;
	funnel_replay_req req = { .from = 100 };
	assert_int_equal(funnel_replay_page(c->q, &req, &pg), FUNNEL_OK);
	assert_int_equal(pg.n, 0);
	assert_true(pg.end);
	funnel_page_release(&pg);
}

/* Run funneld with a config file and no other settings; returns its exit
 * status and what it printed. */
static int
run_with_config(const char *yaml, char *out, size_t outlen)
{
	char dir[] = "/tmp/funnel-config-XXXXXX", path[128], cmd[512];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/funneld.yaml", dir);
	FILE *f = fopen(path, "w");
	fputs(yaml, f);
	fclose(f);
	snprintf(cmd, sizeof cmd, "timeout 10 %s --config %s --help 2>&1; echo \"exit=$?\"",
	         harness_bin("funneld"), path);
	FILE *p = popen(cmd, "r");
	size_t n = fread(out, 1, outlen - 1, p);
	out[n] = '\0';
	pclose(p);
	harness_rmrf(dir);
	char *e = strstr(out, "exit=");
	return e ? atoi(e + 5) : -1;
}

static void
test_config_file(void **state)
{
	ctx *c = *state;
	char out[8192];
	/* a bad file is refused before anything starts, naming the line */
	assert_int_equal(run_with_config("# settings\ndata: /tmp/x\nheartbeat: 5\n", out, sizeof out), 2);
	assert_non_null(strstr(out, ":3: unknown setting 'heartbeat'"));
	assert_int_equal(run_with_config("heartbeat-ms: often\n", out, sizeof out), 2);
	assert_non_null(strstr(out, "heartbeat-ms"));
	assert_int_equal(run_with_config("data: [a, b]\n", out, sizeof out), 2);
	assert_int_equal(run_with_config("data: x\n  bad: : indent\n", out, sizeof out), 2);
	/* a good file is read: a daemon started with it runs without fsync */
	char path[300];
	snprintf(path, sizeof path, "%s/funneld.yaml", c->d.dir);
	FILE *f = fopen(path, "w");
	fputs("# funneld settings\nlog-level: warn\nheartbeat-ms: 50\nno-sync: true\n", f);
	fclose(f);
	funnel_status st;
	assert_int_equal(funnel_status_get(c->q, &st), FUNNEL_OK);
	assert_true(st.durable);
	assert_int_equal(harness_stop(&c->d), 0);
	snprintf(c->d.extra, sizeof c->d.extra, "--config %s", path);
	assert_int_equal(harness_restart(&c->d), 0);
	assert_int_equal(funnel_status_get(c->q, &st), FUNNEL_OK);
	assert_false(st.durable);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_publish_ack_subscribe_replay_same_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicate_returns_original_seq, setup, teardown),
		cmocka_unit_test_setup_teardown(test_id_reused_for_another_event_is_eidconflict, setup,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_bad_inputs_rejected_log_unchanged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_is_atomic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lead_state_history_and_owner, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused_request_in_a_group_stores_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lead_history_interleaved_prefixes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_other_format_is_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_time_range_replay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restart_keeps_data_and_seq_continues, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_grows_when_full, setup_small_map, teardown),
		cmocka_unit_test_setup_teardown(test_refused_request_while_the_map_grows, setup_small_map,
		                                teardown),
		cmocka_unit_test_setup_teardown(test_appends_around_a_nested_request, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_log_is_an_error_not_corruption, setup_capped_map, teardown),
		cmocka_unit_test_setup_teardown(test_query_endpoint_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_config_file, setup, teardown),
	};
	return cmocka_run_group_tests_name("funneld", tests, NULL, NULL);
}
