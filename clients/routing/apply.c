/*
 * clients/routing/apply.c - funnel-routing as a service (svcmain.h): its
 * rules section, apply() (rt_apply over the runtime's store, then the
 * lead.assigned it decides, sent as a decision: dropped if a person acted
 * first) and the SLA tick.
 *
 * Time: apply() reads record timestamps only.  The tick is the one place
 * that reads a clock (routing_now, clock.c: the wall clock, or the
 * --clock-file tests move); what it decides is a lead.sla_breached
 * record with the id "routing:<assignment seq>:breach", sent once per
 * assignment even across restarts, and the escalation follows from
 * applying that record.  A rebuild re-applies the records; it never
 * decides a breach again.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "funnel/funnel.h"
#include "funnel/log.h"
#include "mp.h"
#include "router.h"

typedef struct router {
	const rt_rules *rules;
	const char *clock_file;
	msgpack_sbuffer ev;          /* derived event data */
	int clock_warned;
} router;

int
routing_apply(funnel_service *svc, const funnel_record *rec, void *ctx)
{
	router *ro = ctx;
	const funnel_store *st = funnel_service_store(svc);
	rt_outcome out;
	char lead[512];
	msgpack_packer pk;
	const void *undo;
	size_t undo_len;
	int rc;

	/* a record that shows the log dropped our last decision on its lead
	 * (someone acted first) is applied whatever its type */
	int dropped = funnel_service_dropped(svc, NULL, &undo, &undo_len);
	if ((!dropped && !rt_counts(rec)) || rec->lead.len >= sizeof lead)
		return FUNNEL_OK;
	rc = dropped ? rt_apply_dropped(ro->rules, st, rec, undo, undo_len, &out)
	             : rt_apply(ro->rules, st, rec, &out);
	if (rc != FUNNEL_OK) {
		if (rc == FUNNEL_EMALFORMED)
			funnel_log(FUNNEL_LOG_ERROR, "routing: the view's row for %.*s does not decode; "
			           "rebuild the view", (int)rec->lead.len, rec->lead.ptr);
		return rc;
	}
	if (!out.assign)
		return FUNNEL_OK;
	memcpy(lead, rec->lead.ptr, rec->lead.len);
	lead[rec->lead.len] = 0;
	ro->ev.size = 0;
	msgpack_packer_init(&pk, &ro->ev, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 7 + (out.previous[0] != 0));
	mp_pack_key(&pk, "owner");
	mp_pack_cstr(&pk, out.owner);
	mp_pack_key(&pk, "team");
	mp_pack_cstr(&pk, out.team);
	mp_pack_key(&pk, "rule");
	mp_pack_cstr(&pk, out.rule);
	mp_pack_key(&pk, "reason");
	mp_pack_cstr(&pk, out.reason);
	mp_pack_key(&pk, "escalation");
	msgpack_pack_uint32(&pk, out.escalation);
	if (out.previous[0]) {
		mp_pack_key(&pk, "previous_owner");
		mp_pack_cstr(&pk, out.previous);
	}
	mp_pack_key(&pk, "rules_version");
	mp_pack_cstr(&pk, rt_rules_version(ro->rules));
	mp_pack_key(&pk, "rules_hash");
	mp_pack_cstr(&pk, rt_rules_hash_hex(ro->rules));
	/* a derived fact happens when its cause did (PROTOCOL.md §10) */
	funnel_event ev = { .type = "lead.assigned", .lead = lead, .data = ro->ev.data,
	                    .data_len = ro->ev.size, .has_occurred_at = 1,
	                    .occurred_at = (int64_t)funnel_record_event_time(rec) };
	/* sent only if nobody touched the lead since rec (expected_version) */
	return funnel_service_emit_decision(svc, &ev, out.key, out.undo, out.undo_len);
}

/* Record the breach of one timer that ran out. */
static int
send_breach(funnel_service *svc, router *ro, const char *lead, uint64_t assignment, uint64_t deadline, uint64_t now,
            MDB_txn *txn)
{
	MDB_val k = { strlen(lead), (void *)lead }, v;
	rt_lead l;
	msgpack_packer pk;
	char id[64];

	if (mdb_get(txn, funnel_service_table(svc, rt_table_names[RT_T_LEADS]), &k, &v) != 0 ||
	    rt_lead_decode(v.mv_data, v.mv_size, &l) != FUNNEL_OK)
		return FUNNEL_OK;
	ro->ev.size = 0;
	msgpack_packer_init(&pk, &ro->ev, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 6);
	mp_pack_key(&pk, "owner");
	mp_pack_cstr(&pk, l.owner);
	mp_pack_key(&pk, "team");
	mp_pack_cstr(&pk, l.team);
	mp_pack_key(&pk, "assignment");
	msgpack_pack_uint64(&pk, assignment);
	mp_pack_key(&pk, "deadline");
	msgpack_pack_uint64(&pk, deadline);
	mp_pack_key(&pk, "minutes_late");
	msgpack_pack_uint64(&pk, (now - deadline) / 60000000000u);
	mp_pack_key(&pk, "escalation");
	msgpack_pack_uint32(&pk, l.escalations);
	snprintf(id, sizeof id, "%s:%" PRIu64 ":breach", ROUTING_NAME, assignment);
	funnel_event ev = { .type = "lead.sla_breached", .lead = lead, .id = id,
	                    .cause = assignment, .data = ro->ev.data, .data_len = ro->ev.size };
	funnel_ack ack = { 0 };
	int rc = funnel_service_send(svc, &ev, &ack);
	if (rc == FUNNEL_OK && !ack.dup)
		funnel_log(FUNNEL_LOG_INFO, "routing: lead %s: %s missed the SLA by %" PRIu64
		           " min (seq %" PRIu64 ")", lead, l.owner, (now - deadline) / 60000000000u,
		           ack.seq);
	else if (rc != FUNNEL_OK && rc != FUNNEL_ESHUTDOWN)
		funnel_log(FUNNEL_LOG_INFO, "routing: the log refused the breach of lead %s: %s", lead,
		           funnel_errname(rc));
	return rc == FUNNEL_ESHUTDOWN ? rc : FUNNEL_OK;
}

/* The tick: every timer whose deadline has passed gets its breach. */
int
routing_tick(funnel_service *svc, MDB_txn *txn, void *ctx)
{
	router *ro = ctx;
	MDB_cursor *cur;
	MDB_val k, v;
	uint64_t now;
	char lead[513];
	int rc = FUNNEL_OK, n = 0;

	if (routing_now(ro->clock_file, &now) != 0) {
		if (!ro->clock_warned++)
			funnel_log(FUNNEL_LOG_WARN, "routing: cannot read the clock file %s; SLA "
			           "timers wait", ro->clock_file);
		return FUNNEL_OK;
	}
	ro->clock_warned = 0;
	if (mdb_cursor_open(txn, funnel_service_table(svc, rt_table_names[RT_T_DUE]), &cur) != 0)
		return FUNNEL_ESTORAGE;
	/* in deadline order: stop at the first still running; a bounded
	 * number per tick so that records keep flowing */
	for (int op = MDB_FIRST; n < 1000 && mdb_cursor_get(cur, &k, &v, op) == 0; op = MDB_NEXT) {
		uint64_t deadline, assignment;
		funnel_str id;
		if (rt_due_decode(k.mv_data, k.mv_size, v.mv_data, v.mv_size, &deadline, &id,
		                  &assignment) != FUNNEL_OK || id.len >= sizeof lead)
			continue;
		if (deadline > now)
			break;
		memcpy(lead, id.ptr, id.len);
		lead[id.len] = 0;
		if ((rc = send_breach(svc, ro, lead, assignment, deadline, now, txn)) != FUNNEL_OK)
			break;
		n++;
	}
	mdb_cursor_close(cur);
	return rc;
}

/* ---- the rules section ---- */

int
routing_rules_load(void *ctx, const char *path, int check, void **out)
{
	char err[512];
	rt_rules *r = NULL;
	(void)ctx, (void)check;
	if (rt_rules_load(path, &r, err, sizeof err) != FUNNEL_OK) {
		fprintf(stderr, "funnel-routing: %s\n", err);
		return 2;
	}
	*out = r;
	return 0;
}

void
routing_rules_destroy(void *rules)
{
	rt_rules *r = rules;
	rt_rules_destroy(&r);
}

void
routing_rules_ok(const char *path, const void *rules)
{
	const rt_rules *r = rules;
	printf("%s: ok: \"%s\", %zu teams, %zu reps, %zu rules, fallback %s\n", path,
	       rt_rules_version(r), rt_rules_team_count(r), rt_rules_rep_count(r),
	       rt_rules_rule_count(r), rt_rules_fallback(r));
}

int
routing_rules_id(const void *rules, rr_rules_id *id)
{
	const rt_rules *r = rules;
	*id = (rr_rules_id){ ROUTING_NAME, rt_rules_hash_hex(r), rt_rules_version(r), NULL, 0 };
	id->text = rt_rules_text(r, &id->len);
	return 1;
}

/* ---- the engine's life ---- */

int
routing_setup(void *ctx, void *rules, funnel_service_opts *o, void **engine)
{
	const routing_args *a = ctx;
	router *ro = calloc(1, sizeof *ro);
	if (ro == NULL)
		return FUNNEL_ENOMEM;
	ro->rules = rules;
	ro->clock_file = a->clock_file;
	msgpack_sbuffer_init(&ro->ev);
	o->tick_ms = a->tick_ms;
	*engine = ro;
	return FUNNEL_OK;
}

int
routing_started(void *ctx, funnel_service *svc, void *engine)
{
	const routing_args *a = ctx;
	const rt_rules *r = ((router *)engine)->rules;
	(void)svc;
	funnel_log(FUNNEL_LOG_INFO, "routing: rules \"%s\" (%.12s) from %s: %zu teams, %zu reps, "
	           "%zu rules, fallback %s", rt_rules_version(r), rt_rules_hash_hex(r),
	           a->c.rules, rt_rules_team_count(r), rt_rules_rep_count(r),
	           rt_rules_rule_count(r), rt_rules_fallback(r));
	return FUNNEL_OK;
}

void
routing_release(void *ctx, void *engine)
{
	(void)ctx;
	router *ro = engine;
	if (ro == NULL)
		return;
	msgpack_sbuffer_destroy(&ro->ev);
	free(ro);
}
