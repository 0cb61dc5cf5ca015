/*
 * clients/metrics/main.c - funnel-metrics: keeps the funnel's numbers as
 * a view of the log (view.c) and serves them (http.c): the dashboard,
 * /api/..., /metrics and /healthz.
 *
 *   funnel-metrics [run] [options]      the service (default)
 *   funnel-metrics report [NAME]        a report as JSON from the view, offline
 *   funnel-metrics digest               the view's content digest
 *
 * The service is a description (svcmain.h) of what run.c holds (the
 * goals, the view's engine, the HTTP server) and report.c's command.
 */
#include "metrics.h"

static const char usage_text[] =
	"usage: funnel-metrics [COMMAND] [options]\n"
	"\n"
	"Commands:\n"
	"  run                 follow the log, keep the metrics view, serve HTTP (the default)\n"
	"  report [NAME]       print a report (summary, funnel, conversion, velocity,\n"
	"                      followup, closed-loop, attribution, trend, leads, values) as JSON from the\n"
	"                      view, without funneld; --param KEY=VALUE as in /api\n"
	"  digest              print the view's checkpoint and content digest\n"
	"  check [FILE]        validate the goals: section of a rules file (default: --rules)\n"
	"\n"
	"Options:\n"
	"  --http ADDR:PORT    where to serve the dashboard, /api, /metrics, /healthz\n"
	"                      (default " MX_DEFAULT_HTTP "; port 0 picks a free one)\n"
	"  --access FILE       the access file: /api and /metrics want the bearer token\n"
	"                      of a principal with read (else 401)\n"
	"  --view DIR          the metrics view (default " MX_DEFAULT_VIEW ")\n"
	"  --rules FILE        the shared rules file: its goals: section, if any (default\n"
	"                      funnel.yaml; a missing default file means no goals)\n"
	"  --ingest EP --publish EP --query EP   funneld endpoints (else the environment's\n"
	"                      FUNNEL_INGEST, FUNNEL_PUBLISH, FUNNEL_QUERY; else loopback 7400-7402)\n"
	"  --key FILE --server-key FILE   this service's CURVE secret key and funneld.pub,\n"
	"                      for a funneld with --access (else FUNNEL_KEY, FUNNEL_SERVER_KEY)\n"
	"  --source nats://HOST:PORT/STREAM   read the records from a funnel-mirror stream\n"
	"  --rebuild           empty the view and compute again from seq 1\n"
	"  --until-head, --once   stop once the log's head is applied (no HTTP)\n"
	"  --no-sync           the view does not fsync its commits\n"
	"  --batch N           records per view commit (default 10000)\n"
	"  --map-mb N          initial view map size in MiB (default 256; it grows when full)\n"
	"  --ready-file FILE   written once the service serves and follows the log\n"
	"  --param KEY=VALUE   report: a parameter (from, to, source, campaign, team, rep,\n"
	"                      model, bucket; leads: stage, reason, page)\n"
	"  --currency CODE     the ISO 4217 code of the amounts (EUR, USD...): the dashboard's\n"
	"                      label (default: none; amounts are shown unlabelled)\n"
	"  --json              accepted for symmetry; reports are always JSON\n"
	"  --log-level LEVEL   debug, info, warn, error (default info)\n"
	"  --config FILE       the settings file (sections endpoints: and funnel-metrics:;\n"
	"                      env FUNNEL_CONFIG); flags win over it\n"
	"\n"
	"Long options are spelled in full (--rule for --rules is refused).\n"
	"Exit codes: 0 ok, 1 failure, 2 usage error.\n";

int
main(int argc, char **argv)
{
	static const svc_command commands[] = {
		{ "report", 0, 1, mx_cmd_report },
		{ NULL, 0, 0, NULL },
	};
	static mx_args a = { .c = { .rules = mx_default_rules, .view = MX_DEFAULT_VIEW },
	                     .http = MX_DEFAULT_HTTP, .map_mb = 256 };
	svc_desc d = {
		.name = MX_NAME, .prog = "funnel-metrics", .usage = usage_text,
		.args = &a.c, .ctx = &a, .own = mx_options, .own_fn = mx_option, .prepare = mx_prepare,
		.rules_load = mx_rules_load, .rules_destroy = mx_rules_destroy, .rules_ok = mx_rules_ok,
		.rules_id = mx_rules_id,
		.tables = { MX_T_LEADS, MX_T_FACTS, MX_T_COUNTERS, MX_T_INDEX, MX_T_DAYS },
		.apply = mx_apply, .setup = mx_setup, .serving = mx_serving, .stop = mx_stop,
		.release = mx_release, .commands = commands,
	};
	return svc_main(&d, argc, argv);
}
