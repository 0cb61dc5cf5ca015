/*
 * clients/routing/main.c - funnel-routing: the service that routes every
 * qualified lead (lead.assigned, derived exactly once), keeps the SLA
 * timers in its view and records breaches (lead.sla_breached) from its
 * tick; plus `explain`, `check` and `digest`.  Like funnel-scoring it
 * records the rules file it runs with (rules.changed) before it routes.
 *
 * The service is a description (svcmain.h) of what apply.c holds: the
 * rules section, apply() and the SLA tick.
 */
#include <stdlib.h>

#include "router.h"

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

static int
cmd_explain(void *ctx, int argc, char **argv)
{
	(void)argc;
	return routing_explain(ctx, argv[0]);
}

int
main(int argc, char **argv)
{
	static const struct option own[] = {
		{ "tick-ms", required_argument, NULL, O_TICK },
		{ "clock-file", required_argument, NULL, O_CLOCK },
		{ NULL, 0, NULL, 0 },
	};
	static const svc_command commands[] = {
		{ "explain", 1, 1, cmd_explain },
		{ NULL, 0, 0, NULL },
	};
	routing_args a = { .c = { .rules = ROUTING_DEFAULT_RULES, .view = ROUTING_DEFAULT_VIEW } };
	svc_desc d = {
		.name = ROUTING_NAME, .prog = "funnel-routing", .usage = usage_text,
		.args = &a.c, .ctx = &a, .own = own, .own_fn = own_option,
		.rules_load = routing_rules_load, .rules_destroy = routing_rules_destroy,
		.rules_ok = routing_rules_ok, .rules_id = routing_rules_id,
		.tables = { rt_table_names[0], rt_table_names[1], rt_table_names[2] },
		.apply = routing_apply, .tick = routing_tick, .setup = routing_setup,
		.started = routing_started, .release = routing_release, .commands = commands,
	};
	return svc_main(&d, argc, argv);
}
