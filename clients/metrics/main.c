/*
 * clients/metrics/main.c - funnel-metrics: keeps the funnel's numbers as
 * a view of the log (view.c) and serves them (http.c): the dashboard,
 * /api/..., /metrics and /healthz.
 *
 *   funnel-metrics [run] [options]      the service (default)
 *   funnel-metrics report [NAME]        a report as JSON from the view, offline
 *   funnel-metrics digest               the view's content digest
 *
 * Start-up order: open the view, open its tables for the HTTP thread,
 * start serving, then follow the log.  The HTTP server stops before the
 * view closes.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "funnel/funnel.h"
#include "funnel/log.h"
#include "funnel/service.h"
#include "httpauth.h"
#include "metrics.h"
#include "rulesrec.h"
#include "svcargs.h"

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
	"  --access FILE       the access file: /api and /metrics want the bearer token\n"
	"                      of a principal with read (else 401)\n"
	"                      (default " MX_DEFAULT_HTTP "; port 0 picks a free one)\n"
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

/* The common service flags (svcargs.h) and funnel-metrics' own. */
typedef struct args {
	svc_args c;
	const char *http;
	const char *access;       /* --access: HTTP bearer tokens */
	const char *currency;
	size_t map_mb;
	const char *params[16];
	int nparams;
} args;

static funnel_service *the_service;
static const char default_rules[] = "funnel.yaml";

/* The goals of the rules file.  The default file may be missing (no
 * goals); a file given with --rules must be there.  A bad goals:
 * section is refused, naming its line.  0, or 1 after the message. */
static int
load_goals(const char *path, mx_goals **out)
{
	char err[512];
	int rc = mx_goals_load(path, out, err, sizeof err);
	if (rc == FUNNEL_ENOTFOUND && path == default_rules) {
		funnel_log(FUNNEL_LOG_INFO, "metrics: no %s here: no goals", path);
		return 0;
	}
	if (rc != FUNNEL_OK) {
		funnel_log(FUNNEL_LOG_ERROR, "metrics: %s", err[0] ? err : funnel_strerror(rc));
		return 1;
	}
	return 0;
}

static int
cmd_check(const char *path)
{
	mx_goals *g = NULL;
	char err[512];
	int rc = mx_goals_load(path, &g, err, sizeof err);
	if (rc != FUNNEL_OK) {
		fprintf(stderr, "%s\n", err[0] ? err : funnel_strerror(rc));
		return 1;
	}
	if (g->present)
		printf("%s: ok: \"%s\", %zu goals\n", path, g->version, g->n);
	else
		printf("%s: ok: no goals: section\n", path);
	mx_goals_free(&g);
	return 0;
}

static void
on_signal(int sig)
{
	(void)sig;
	funnel_service_stop(the_service);
}

static int
usage(const char *fmt, const char *arg)
{
	return svc_usage("funnel-metrics", usage_text, fmt, arg);
}

/* The handles of the view's tables, the runtime's included, in txn:
 * nonzero when one is missing. */
static int
open_dbis(MDB_txn *txn, mx_tables *t)
{
	return mdb_dbi_open(txn, MX_T_LEADS, 0, &t->leads) ||
	       mdb_dbi_open(txn, MX_T_FACTS, 0, &t->facts) ||
	       mdb_dbi_open(txn, MX_T_COUNTERS, 0, &t->counters) ||
	       mdb_dbi_open(txn, MX_T_INDEX, 0, &t->index) ||
	       mdb_dbi_open(txn, "_runtime", 0, &t->runtime);
}

/* Open the view's tables for readers in other threads (the names exist:
 * the runtime created them). */
static int
open_tables(MDB_env *env, mx_tables *t)
{
	MDB_txn *txn;
	t->env = env;
	if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0)
		return FUNNEL_ESTORAGE;
	int rc = open_dbis(txn, t);
	if (rc == 0)
		rc = mdb_txn_commit(txn);     /* keeps the handles for the environment */
	else
		mdb_txn_abort(txn);
	return rc ? FUNNEL_ESTORAGE : FUNNEL_OK;
}

static int
cmd_run(const args *a)
{
	static pthread_rwlock_t map_lock = PTHREAD_RWLOCK_INITIALIZER;
	mx_view *view = NULL;
	mx_http *http = NULL;
	mx_tables t;
	mx_goals *goals = NULL;
	int status = 1, rc;

	if (load_goals(a->c.rules, &goals) != 0)
		return 1;
	funnel_service_opts o = {
		.name = MX_NAME,
		.tables = { MX_T_LEADS, MX_T_FACTS, MX_T_COUNTERS, MX_T_INDEX },
		.map_size = a->map_mb << 20,
		.no_emit = goals == NULL || !goals->present,   /* sends only its rules.changed */
		.map_lock = &map_lock,
	};
	svc_opts(&a->c, &o);
	if ((rc = mx_view_new(&view)) == FUNNEL_OK)
		rc = funnel_service_new(&the_service, &o, mx_apply, view);
	if (rc != FUNNEL_OK) {
		funnel_log(FUNNEL_LOG_ERROR, "metrics: cannot start: %s", rc == FUNNEL_ESTORAGE ?
		           "the view cannot be opened or written (see above)" : funnel_strerror(rc));
		goto out;
	}
	svc_on_signals(on_signal);
	if (goals && goals->present) {
		/* the goals are rules like the others: recorded before they are used */
		rf_rules_id id = { MX_NAME, goals->hash_hex, goals->version, goals->text, goals->len };
		rc = rf_record_rules(the_service, &id);
		if (rc == FUNNEL_ESHUTDOWN) {
			status = 0;
			goto out;
		}
		if (rc != FUNNEL_OK)
			goto out;
	}
	if (!a->c.until_head) {
		if (open_tables(funnel_service_env(the_service), &t) != FUNNEL_OK) {
			funnel_log(FUNNEL_LOG_ERROR, "metrics: cannot open the view's tables");
			goto out;
		}
		rc = mx_http_start(&http, a->http, &t, &map_lock, a->c.query, a->c.source,
		                   the_service, a->currency, goals);
		if (rc == FUNNEL_EINVAL)
			funnel_log(FUNNEL_LOG_ERROR, "metrics: --http wants IPV4:PORT, not '%s'", a->http);
		if (rc != FUNNEL_OK)
			goto out;
	}
	rc = svc_run(the_service, "metrics");
	status = rc == FUNNEL_OK ? 0 : 1;
out:
	mx_http_stop(&http);
	funnel_service_destroy(&the_service);
	mx_view_destroy(&view);
	mx_goals_free(&goals);
	return status;
}

/* `report`: the view opened read-only, one report printed. */
static int
cmd_report(const args *a, const char *name)
{
	MDB_env *env = NULL;
	MDB_txn *txn = NULL;
	mx_tables t;
	cJSON *o = NULL;
	char err[256];
	int status = 1;
	mx_query q = { .report = mx_report_parse(name), .model = MX_MODEL_LINEAR,
	               .bucket = MX_BUCKET_WEEK, .list = -1 };

	if (q.report < 0) {
		fprintf(stderr, "funnel-metrics: no report '%s'\n", name);
		return 2;
	}
	for (int i = 0; i < a->nparams; i++) {
		char key[32];
		const char *eq = strchr(a->params[i], '=');
		if (eq == NULL || (size_t)(eq - a->params[i]) >= sizeof key) {
			fprintf(stderr, "funnel-metrics: --param wants KEY=VALUE, not '%s'\n", a->params[i]);
			return 2;
		}
		memcpy(key, a->params[i], (size_t)(eq - a->params[i]));
		key[eq - a->params[i]] = 0;
		if (mx_query_param(&q, key, eq + 1, err, sizeof err) != 0) {
			fprintf(stderr, "funnel-metrics: %s: %s\n", key, err);
			return 2;
		}
	}
	if (mdb_env_create(&env) != 0 || mdb_env_set_maxdbs(env, FUNNEL_SERVICE_MAX_TABLES + 2) ||
	    mdb_env_open(env, a->c.view, MDB_RDONLY | MDB_NOTLS, 0644) != 0 ||
	    mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0) {
		fprintf(stderr, "funnel-metrics: cannot open the view %s\n", a->c.view);
		goto out;
	}
	t.env = env;
	if (open_dbis(txn, &t)) {
		fprintf(stderr, "funnel-metrics: %s is not a metrics view\n", a->c.view);
		goto out;
	}
	int rc = mx_report(txn, &t, &q, &o);
	if (rc != FUNNEL_OK) {
		fprintf(stderr, "funnel-metrics: report: %s\n", funnel_strerror(rc));
		goto out;
	}
	char *s = cJSON_Print(o);
	if (s) {
		puts(s);
		free(s);
		status = 0;
	}
out:
	cJSON_Delete(o);
	if (txn)
		mdb_txn_abort(txn);
	if (env)
		mdb_env_close(env);
	return status;
}

/* --http, --map-mb, --param, --access and --currency. */
enum { O_HTTP = SVC_OPT_OWN, O_MAP, O_PARAM, O_ACCESS, O_CURRENCY };

static int
own_option(int id, const char *arg, void *ctx)
{
	args *a = ctx;
	char *end;

	switch (id) {
	case O_HTTP:
		a->http = arg;
		return 0;
	case O_ACCESS:
		a->access = arg;
		return 0;
	case O_CURRENCY:
		if (strlen(arg) != 3 || strspn(arg, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != 3)
			return usage("--currency wants an ISO 4217 code of 3 capitals (EUR, USD), not '%s'",
			             arg);
		a->currency = arg;
		return 0;
	case O_PARAM:
		if (a->nparams == 16)
			return usage("at most 16 --param, not more ('%s')", arg);
		a->params[a->nparams++] = arg;
		return 0;
	default: {
		unsigned long v = strtoul(arg, &end, 10);
		if (*end || v < 1 || v > 1048576)
			return usage("--map-mb wants 1..1048576 MiB, not '%s'", arg);
		a->map_mb = v;
		return 0;
	}
	}
}

int
main(int argc, char **argv)
{
	static const struct option own[] = {
		{ "http", required_argument, NULL, O_HTTP },
		{ "map-mb", required_argument, NULL, O_MAP },
		{ "param", required_argument, NULL, O_PARAM },
		{ "access", required_argument, NULL, O_ACCESS },
		{ "currency", required_argument, NULL, O_CURRENCY },
		{ NULL, 0, NULL, 0 },
	};
	args a = { .c = { .rules = default_rules, .view = MX_DEFAULT_VIEW },
	           .http = MX_DEFAULT_HTTP, .map_mb = 256 };

	funnel_log_program("funnel-metrics");
	int rc = svc_parse(argc, argv, "funnel-metrics", usage_text, &a.c, own, own_option, &a);
	if (rc >= 0)
		return rc;
	/* the tokens are read once; a changed access file needs a restart */
	static http_auth *auth;
	if (a.access != NULL) {
		char why[512];
		if ((auth = http_auth_load(a.access, why, sizeof why)) == NULL) {
			fprintf(stderr, "funnel-metrics: --access %s\n", why);
			return 2;
		}
		mx_http_require_tokens(auth);
	}
	const char *cmd = optind < argc ? argv[optind++] : "run";
	int nargs = argc - optind;
	if (strcmp(cmd, "run") == 0 && nargs == 0)
		return cmd_run(&a);
	if (strcmp(cmd, "report") == 0 && nargs <= 1)
		return cmd_report(&a, nargs ? argv[optind] : "summary");
	if (strcmp(cmd, "digest") == 0 && nargs == 0)
		return svc_digest("funnel-metrics", a.c.view);
	if (strcmp(cmd, "check") == 0 && nargs <= 1)
		return cmd_check(nargs ? argv[optind] : a.c.rules);
	if (strcmp(cmd, "run") && strcmp(cmd, "report") && strcmp(cmd, "digest") &&
	    strcmp(cmd, "check"))
		return usage("unknown command '%s'", cmd);
	return usage("wrong number of arguments for '%s'", cmd);
}
