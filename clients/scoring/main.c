/*
 * clients/scoring/main.c - funnel-scoring: applies the agreed definition of
 * a qualified lead (the `scoring` section of funnel.yaml) to every lead
 * event of the log and emits lead.scored and lead.qualified.
 *
 *   funnel-scoring [run] [options]      the service (default)
 *   funnel-scoring explain LEAD         why a lead has its score
 *   funnel-scoring what-if NEW.yaml     the whole history under another definition
 *   funnel-scoring check [FILE]         validate a rules file
 *   funnel-scoring digest               the view's content digest
 *
 * The service is a description (svcmain.h) of what apply.c holds: the
 * rules section, the engine over the view and what it derives.  Start-up
 * order: parse the rules (refuse to run on any error), open the view,
 * record rules.changed if the log's last record of the scoring rules has
 * another hash, then follow the log.
 */
#include <stdlib.h>

#include "scoring.h"

static const char usage_text[] =
	"usage: funnel-scoring [COMMAND] [options]\n"
	"\n"
	"Commands:\n"
	"  run                 follow the log and score every lead (the default)\n"
	"  explain LEAD        the lead's scores and the rules that made them\n"
	"  what-if NEW.yaml    replay all history under the current and the new\n"
	"                      definition, side by side (read-only, sends nothing)\n"
	"  check [FILE]        validate a rules file (default: --rules)\n"
	"  digest              print the view's checkpoint and content digest\n"
	"\n"
	"Options:\n"
	"  --rules FILE        the shared rules file (default funnel.yaml)\n"
	"  --view DIR          the scoring view (default var/scoring)\n"
	"  --ingest EP --publish EP --query EP   funneld endpoints (else the environment's\n"
	"                      FUNNEL_INGEST, FUNNEL_PUBLISH, FUNNEL_QUERY; else loopback 7400-7402)\n"
	"  --key FILE --server-key FILE   this service's CURVE secret key and funneld.pub,\n"
	"                      for a funneld with --access (else FUNNEL_KEY, FUNNEL_SERVER_KEY)\n"
	"  --source nats://HOST:PORT/STREAM   read the records from a funnel-mirror stream\n"
	"  --rebuild           empty the view and score again from seq 1\n"
	"  --until-head, --once   stop once the log's head is applied\n"
	"  --no-sync           the view does not fsync its commits\n"
	"  --batch N           records per view commit (default 10000)\n"
	"  --ready-file FILE   written once the service follows the log\n"
	"  --json              explain/what-if: JSON output\n"
	"  --flips N           what-if: leads listed each way (default 20)\n"
	"  --leads             what-if: lead.qualified per lead under each definition\n"
	"  --log-level LEVEL   debug, info, warn, error (default info)\n"
	"  --config FILE       the settings file (sections endpoints: and funnel-scoring:;\n"
	"                      env FUNNEL_CONFIG); flags win over it\n"
	"\n"
	"Long options are spelled in full (--rule for --rules is refused).\n"
	"Exit codes: 0 ok, 1 failure, 2 usage or rules-file error.\n";

/* --flips, --leads. */
enum { O_FLIPS = SVC_OPT_OWN, O_LEADS };

static int
own_option(int id, const char *arg, void *ctx)
{
	scoring_args *a = ctx;
	char *end;
	if (id == O_LEADS) {
		a->leads = 1;
		return 0;
	}
	long v = strtol(arg, &end, 10);
	if (*end || v < 0 || v > 1000000)
		return svc_usage("funnel-scoring", usage_text, "--flips wants 0..1000000 leads, not '%s'",
		                 arg);
	a->flips = (int)v;
	return 0;
}

static int
cmd_explain(void *ctx, int argc, char **argv)
{
	(void)argc;
	return scoring_explain(ctx, argv[0]);
}

static int
cmd_whatif(void *ctx, int argc, char **argv)
{
	(void)argc;
	return scoring_whatif(ctx, argv[0]);
}

int
main(int argc, char **argv)
{
	static const struct option own[] = {
		{ "flips", required_argument, NULL, O_FLIPS },
		{ "leads", no_argument, NULL, O_LEADS },
		{ NULL, 0, NULL, 0 },
	};
	static const svc_command commands[] = {
		{ "explain", 1, 1, cmd_explain },
		{ "what-if", 1, 1, cmd_whatif },
		{ NULL, 0, 0, NULL },
	};
	scoring_args a = { .c = { .rules = SCORING_DEFAULT_RULES, .view = SCORING_DEFAULT_VIEW },
	                   .flips = 20 };
	svc_desc d = {
		.name = SCORING_NAME, .prog = "funnel-scoring", .usage = usage_text,
		.args = &a.c, .ctx = &a, .own = own, .own_fn = own_option,
		.rules_load = scoring_rules_load, .rules_destroy = scoring_rules_destroy,
		.rules_ok = scoring_rules_ok, .rules_id = scoring_rules_id,
		.tables = { SCORING_TABLE }, .apply = scoring_apply, .setup = scoring_setup,
		.started = scoring_started, .release = scoring_release, .commands = commands,
	};
	return svc_main(&d, argc, argv);
}
