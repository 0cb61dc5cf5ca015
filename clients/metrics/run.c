/*
 * clients/metrics/run.c - funnel-metrics as a service (svcmain.h): its
 * options, the access file, the goals: section (its rules), the view's engine
 * (mx_apply, view.c) and the HTTP server (http.c) around the run.
 *
 * Start-up order: open the view, record the goals (rules.changed) if
 * there are any, open the view's tables for the HTTP thread, start
 * serving, then follow the log.  The HTTP server stops before the view
 * closes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "funnel/funnel.h"
#include "funnel/log.h"
#include "httpd.h"
#include "httpauth.h"
#include "metrics.h"

const char mx_default_rules[] = "funnel.yaml";

/* --http, --map-mb, --param, --access and --currency. */
enum { O_HTTP = SVC_OPT_OWN, O_MAP, O_PARAM, O_ACCESS, O_CURRENCY };

const struct option mx_options[] = {
	{ "http", required_argument, NULL, O_HTTP },
	{ "map-mb", required_argument, NULL, O_MAP },
	{ "param", required_argument, NULL, O_PARAM },
	{ "access", required_argument, NULL, O_ACCESS },
	{ "currency", required_argument, NULL, O_CURRENCY },
	{ NULL, 0, NULL, 0 },
};

int
mx_option(int id, const char *arg, void *ctx)
{
	mx_args *a = ctx;
	char *end;

	switch (id) {
	case O_HTTP: {
		httpd_addr at;   /* a usage error, as every other flag's */
		if (httpd_addr_parse(&at, arg) != FUNNEL_OK)
			return svc_main_usage("--http wants IPV4:PORT, not '%s'", arg);
		a->http = arg;
		return 0;
	}
	case O_ACCESS:
		a->access = arg;
		return 0;
	case O_CURRENCY:
		if (strlen(arg) != 3 || strspn(arg, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != 3)
			return svc_main_usage("--currency wants an ISO 4217 code of 3 capitals (EUR, USD), "
			                      "not '%s'", arg);
		a->currency = arg;
		return 0;
	case O_PARAM:
		if (a->nparams == 16)
			return svc_main_usage("at most 16 --param, not more ('%s')", arg);
		a->params[a->nparams++] = arg;
		return 0;
	default: {
		unsigned long v = strtoul(arg, &end, 10);
		if (*end || v < 1 || v > 1048576)
			return svc_main_usage("--map-mb wants 1..1048576 MiB, not '%s'", arg);
		a->map_mb = v;
		return 0;
	}
	}
}

int
mx_prepare(void *ctx)
{
	const mx_args *a = ctx;
	/* the tokens are read once; a changed access file needs a restart */
	static http_auth *auth;
	if (a->access != NULL) {
		char why[512];
		if ((auth = http_auth_load(a->access, why, sizeof why)) == NULL) {
			fprintf(stderr, "funnel-metrics: --access %s\n", why);
			return 2;
		}
		mx_http_require_tokens(auth);
	}
	return -1;
}

/* The goals of the rules file.  For `run`: the default file may be
 * missing (no goals), a file given with --rules must be there, a bad
 * goals: section is refused naming its line (logged, exit 1).  For
 * `check`: any failure is said on stderr (exit 1). */
int
mx_rules_load(void *ctx, const char *path, int check, void **out)
{
	mx_goals *g = NULL;
	char err[512];
	(void)ctx;
	int rc = mx_goals_load(path, &g, err, sizeof err);
	if (check) {
		if (rc != FUNNEL_OK) {
			fprintf(stderr, "%s\n", err[0] ? err : funnel_strerror(rc));
			return 1;
		}
	} else if (rc == FUNNEL_ENOTFOUND && path == mx_default_rules) {
		funnel_log(FUNNEL_LOG_INFO, "metrics: no %s here: no goals", path);
	} else if (rc != FUNNEL_OK) {
		funnel_log(FUNNEL_LOG_ERROR, "metrics: %s", err[0] ? err : funnel_strerror(rc));
		return 1;
	}
	*out = g;
	return 0;
}

void
mx_rules_destroy(void *goals)
{
	mx_goals *g = goals;
	mx_goals_destroy(&g);
}

void
mx_rules_ok(const char *path, const void *goals)
{
	const mx_goals *g = goals;
	if (g->present)
		printf("%s: ok: \"%s\", %zu goals\n", path, g->version, g->n);
	else
		printf("%s: ok: no goals: section\n", path);
}

/* the goals are rules like the others: recorded before they are used */
int
mx_rules_id(const void *goals, rr_rules_id *id)
{
	const mx_goals *g = goals;
	if (g == NULL || !g->present)
		return 0;
	*id = (rr_rules_id){ MX_NAME, g->hash_hex, g->version, g->text, g->len };
	return 1;
}

int
mx_setup(void *ctx, void *goals, funnel_service_opts *o, void **engine)
{
	mx_args *a = ctx;
	const mx_goals *g = goals;
	a->goals = g;
	pthread_rwlock_init(&a->map_lock, NULL);
	o->map_size = a->map_mb << 20;
	o->no_emit = g == NULL || !g->present;   /* sends only its rules.changed */
	o->map_lock = &a->map_lock;
	o->before_commit = mx_view_flush;   /* the batch's days rows, with its checkpoint */
	o->on_abort = mx_view_drop;
	return mx_view_new((mx_view **)engine);
}

/* The view's tables for readers in other threads, the runtime's included
 * (the handles are the service's, valid for the environment's life). */
static int
open_tables(funnel_service *svc, mx_tables *t)
{
	t->env = funnel_service_env(svc);
	t->leads = funnel_service_table(svc, MX_T_LEADS);
	t->facts = funnel_service_table(svc, MX_T_FACTS);
	t->counters = funnel_service_table(svc, MX_T_COUNTERS);
	t->index = funnel_service_table(svc, MX_T_INDEX);
	t->days = funnel_service_table(svc, MX_T_DAYS);
	t->runtime = funnel_service_runtime_table(svc);
	return t->env && t->leads && t->facts && t->counters && t->index && t->days && t->runtime
	       ? FUNNEL_OK : FUNNEL_ESTORAGE;
}

int
mx_serving(void *ctx, funnel_service *svc, void *engine)
{
	mx_args *a = ctx;
	(void)engine;
	if (a->c.until_head)
		return FUNNEL_OK;
	if (open_tables(svc, &a->tables) != FUNNEL_OK) {
		funnel_log(FUNNEL_LOG_ERROR, "metrics: cannot open the view's tables");
		return FUNNEL_ESTORAGE;
	}
	int rc = mx_http_start(&a->server, a->http, &a->tables, &a->map_lock, a->c.query,
	                       a->c.source, svc, a->currency, a->goals);
	if (rc == FUNNEL_EINVAL)
		funnel_log(FUNNEL_LOG_ERROR, "metrics: --http wants IPV4:PORT, not '%s'", a->http);
	return rc;
}

void
mx_stop(void *ctx, void *engine)
{
	mx_args *a = ctx;
	(void)engine;
	mx_http_stop(&a->server);
}

void
mx_release(void *ctx, void *engine)
{
	mx_view *v = engine;
	(void)ctx;
	mx_view_destroy(&v);
}
