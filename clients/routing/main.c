/*
 * clients/routing/main.c - funnel-routing: the service that routes every
 * qualified lead (lead.assigned, derived exactly once), keeps the SLA
 * timers in its view and records breaches (lead.sla_breached) from its
 * tick; plus `explain`, `check` and `digest`.  Like funnel-scoring it
 * records the rules file it runs with (rules.changed) before it routes.
 *
 * Time: apply() (rt_apply) reads record timestamps only.  The tick is
 * the one place that reads a clock (routing_now, clock.c: the wall clock, or the
 * --clock-file tests move); what it decides is a lead.sla_breached
 * record with the id "routing:<assignment seq>:breach", sent once per
 * assignment even across restarts, and the escalation follows from
 * applying that record.  A rebuild re-applies the records; it never
 * decides a breach again.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>

#include "funnel/funnel.h"
#include "funnel/log.h"
#include "funnel/service.h"
#include "mp.h"
#include "router.h"
#include "rulesrec.h"

static const char usage_text[] =
	"usage: funnel-routing [COMMAND] [options]\n"
	"\n"
	"Commands:\n"
	"  run                 follow the log, route qualified leads, watch the SLA (the default)\n"
	"  explain LEAD        the rule that matched, who was eligible, why this rep, the SLA\n"
	"  check [FILE]        validate a rules file (default: --rules)\n"
	"  digest              print the view's checkpoint and content digest\n"
	"\n"
	"Options:\n"
	"  --rules FILE        the shared rules file (default funnel.yaml)\n"
	"  --view DIR          the routing view (default var/routing)\n"
	"  --ingest EP --publish EP --query EP   funneld endpoints (else the environment's\n"
	"                      FUNNEL_INGEST, FUNNEL_PUBLISH, FUNNEL_QUERY; else loopback 7400-7402)\n"
	"  --key FILE --server-key FILE   this service's CURVE secret key and funneld.pub,\n"
	"                      for a funneld with --access (else FUNNEL_KEY, FUNNEL_SERVER_KEY)\n"
	"  --source nats://HOST:PORT/STREAM   read the records from a funnel-mirror stream\n"
	"  --rebuild           empty the view and route again from seq 1 (sends nothing twice)\n"
	"  --until-head, --once   stop once the log's head is applied (no SLA tick)\n"
	"  --no-sync           the view does not fsync its commits\n"
	"  --batch N           records per view commit (default 10000)\n"
	"  --tick-ms N         how often SLA timers are checked (default 1000)\n"
	"  --clock-file FILE   SLA time from FILE (ns since the epoch) instead of the wall clock\n"
	"  --ready-file FILE   written once the service follows the log\n"
	"  --json              explain: JSON output\n"
	"  --log-level LEVEL   debug, info, warn, error (default info)\n"
	"  --config FILE       the settings file (sections endpoints: and funnel-routing:;\n"
	"                      env FUNNEL_CONFIG); flags win over it\n"
	"\n"
	"Long options are spelled in full (--rule for --rules is refused).\n"
	"Exit codes: 0 ok, 1 failure, 2 usage or rules-file error.\n";

/* ---- the service ---- */

typedef struct router {
	const rt_rules *rules;
	const char *clock_file;
	funnel_service *svc;
	MDB_dbi dbi[RT_NTABLES];
	msgpack_sbuffer ev;          /* derived event data */
	int clock_warned;
} router;

static funnel_service *the_service;

static void
on_signal(int sig)
{
	(void)sig;
	funnel_service_stop(the_service);
}

/* The view through the service's batch transaction. */
static int
svc_get(void *ctx, int t, const void *k, size_t kl, const void **v, size_t *vl)
{
	router *ro = ctx;
	return funnel_service_get(ro->svc, ro->dbi[t], k, kl, v, vl);
}

static int
svc_put(void *ctx, int t, const void *k, size_t kl, const void *v, size_t vl)
{
	router *ro = ctx;
	return funnel_service_put(ro->svc, ro->dbi[t], k, kl, v, vl);
}

static int
svc_del(void *ctx, int t, const void *k, size_t kl)
{
	router *ro = ctx;
	return funnel_service_del(ro->svc, ro->dbi[t], k, kl);
}

static int
route_apply(funnel_service *svc, const funnel_record *rec, void *ctx)
{
	router *ro = ctx;
	rt_store st = { ro, svc_get, svc_put, svc_del };
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
	rc = dropped ? rt_apply_dropped(ro->rules, &st, rec, undo, undo_len, &out)
	             : rt_apply(ro->rules, &st, rec, &out);
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
send_breach(router *ro, const char *lead, uint64_t assignment, uint64_t deadline, uint64_t now,
            MDB_txn *txn)
{
	MDB_val k = { strlen(lead), (void *)lead }, v;
	rt_lead l;
	msgpack_packer pk;
	char id[64];

	if (mdb_get(txn, ro->dbi[RT_T_LEADS], &k, &v) != 0 ||
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
	int rc = funnel_service_send(ro->svc, &ev, &ack);
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
static int
route_tick(funnel_service *svc, MDB_txn *txn, void *ctx)
{
	router *ro = ctx;
	MDB_cursor *cur;
	MDB_val k, v;
	uint64_t now;
	char lead[513];
	int rc = FUNNEL_OK, n = 0;

	(void)svc;
	if (routing_now(ro->clock_file, &now) != 0) {
		if (!ro->clock_warned++)
			funnel_log(FUNNEL_LOG_WARN, "routing: cannot read the clock file %s; SLA "
			           "timers wait", ro->clock_file);
		return FUNNEL_OK;
	}
	ro->clock_warned = 0;
	if (mdb_cursor_open(txn, ro->dbi[RT_T_DUE], &cur) != 0)
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
		if ((rc = send_breach(ro, lead, assignment, deadline, now, txn)) != FUNNEL_OK)
			break;
		n++;
	}
	mdb_cursor_close(cur);
	return rc;
}

static int
load_rules(const char *path, rt_rules **out)
{
	char err[512];
	if (rt_rules_load(path, out, err, sizeof err) != FUNNEL_OK) {
		fprintf(stderr, "funnel-routing: %s\n", err);
		return 2;
	}
	return 0;
}

static int
cmd_run(const routing_args *a)
{
	rt_rules *rules = NULL;
	router ro = { .clock_file = a->clock_file };
	int rc;

	if ((rc = load_rules(a->c.rules, &rules)) != 0)
		return rc;
	ro.rules = rules;
	msgpack_sbuffer_init(&ro.ev);
	funnel_service_opts o = {
		.name = ROUTING_NAME,
		.tables = { rt_table_names[0], rt_table_names[1], rt_table_names[2] },
		.tick = route_tick,
		.tick_ms = a->tick_ms,
	};
	svc_opts(&a->c, &o);
	int status = 1;
	rc = funnel_service_new(&the_service, &o, route_apply, &ro);
	if (rc != FUNNEL_OK) {
		funnel_log(FUNNEL_LOG_ERROR, "routing: cannot start: %s", rc == FUNNEL_ESTORAGE ?
		           "the view cannot be opened or written (see above)" : funnel_strerror(rc));
		goto out;
	}
	ro.svc = the_service;
	for (int i = 0; i < RT_NTABLES; i++)
		ro.dbi[i] = funnel_service_table(the_service, rt_table_names[i]);
	svc_on_signals(on_signal);
	funnel_log(FUNNEL_LOG_INFO, "routing: rules \"%s\" (%.12s) from %s: %zu teams, %zu reps, "
	           "%zu rules, fallback %s", rt_rules_version(rules), rt_rules_hash_hex(rules),
	           a->c.rules, rt_rules_team_count(rules), rt_rules_rep_count(rules),
	           rt_rules_rule_count(rules), rt_rules_fallback(rules));
	/* the rules are on record before the first decision made with them */
	size_t len;
	const char *text = rt_rules_text(rules, &len);
	rf_rules_id id = { ROUTING_NAME, rt_rules_hash_hex(rules), rt_rules_version(rules), text,
	                   len };
	if ((rc = rf_record_rules(the_service, &id)) != FUNNEL_OK && rc != FUNNEL_ESHUTDOWN)
		goto out;
	rc = rc == FUNNEL_ESHUTDOWN ? FUNNEL_OK : svc_run(the_service, "routing");
	status = rc == FUNNEL_OK ? 0 : 1;
out:
	funnel_service_destroy(&the_service);
	msgpack_sbuffer_destroy(&ro.ev);
	rt_rules_free(&rules);
	return status;
}

static int
cmd_check(const char *path)
{
	rt_rules *rules = NULL;
	int rc = load_rules(path, &rules);
	if (rc != 0)
		return rc;
	printf("%s: ok: \"%s\", %zu teams, %zu reps, %zu rules, fallback %s\n", path,
	       rt_rules_version(rules), rt_rules_team_count(rules), rt_rules_rep_count(rules),
	       rt_rules_rule_count(rules), rt_rules_fallback(rules));
	rt_rules_free(&rules);
	return 0;
}

/* --tick-ms and --clock-file. */
enum { O_TICK = SVC_OPT_OWN, O_CLOCK };

static int
own_option(int id, const char *arg, void *ctx)
{
	routing_args *a = ctx;
	char *end;
	if (id == O_CLOCK) {
		a->clock_file = arg;
		return 0;
	}
	long v = strtol(arg, &end, 10);
	if (*end || v < 10 || v > 3600000)
		return svc_usage("funnel-routing", usage_text, "--tick-ms wants 10..3600000 ms, not '%s'",
		                 arg);
	a->tick_ms = (int)v;
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option own[] = {
		{ "tick-ms", required_argument, NULL, O_TICK },
		{ "clock-file", required_argument, NULL, O_CLOCK },
		{ NULL, 0, NULL, 0 },
	};
	routing_args a = { .c = { .rules = ROUTING_DEFAULT_RULES, .view = ROUTING_DEFAULT_VIEW } };

	funnel_log_program("funnel-routing");
	int rc = svc_parse(argc, argv, "funnel-routing", usage_text, &a.c, own, own_option, &a);
	if (rc >= 0)
		return rc;
	const char *cmd = optind < argc ? argv[optind++] : "run";
	int nargs = argc - optind;
	if (strcmp(cmd, "run") == 0 && nargs == 0)
		return cmd_run(&a);
	if (strcmp(cmd, "explain") == 0 && nargs == 1)
		return routing_explain(&a, argv[optind]);
	if (strcmp(cmd, "check") == 0 && nargs <= 1)
		return cmd_check(nargs ? argv[optind] : a.c.rules);
	if (strcmp(cmd, "digest") == 0 && nargs == 0)
		return svc_digest("funnel-routing", a.c.view);
	if (strcmp(cmd, "run") && strcmp(cmd, "explain") && strcmp(cmd, "check") &&
	    strcmp(cmd, "digest"))
		return svc_usage("funnel-routing", usage_text, "unknown command '%s'", cmd);
	return svc_usage("funnel-routing", usage_text, "wrong number of arguments for '%s'", cmd);
}
