/*
 * clients/common/svcmain.c - the one main of the services; the contract
 * is svcmain.h.
 */
#include <stdio.h>
#include <string.h>

#include "funnel/log.h"
#include "svcmain.h"

/* The service the signals stop (svc_catch_stop; NULL outside `run`). */
static funnel_service *volatile the_service;

/* The description svc_main runs (for svc_main_usage). */
static const svc_desc *the_desc;

static int
usage(const svc_desc *d, const char *fmt, const char *arg)
{
	return svc_usage(d->prog, d->usage, fmt, arg);
}

int
svc_main_usage(const char *fmt, const char *arg)
{
	return usage(the_desc, fmt, arg);
}

/* `run` on the view. */
static int
run_view(const svc_desc *d)
{
	void *rules = NULL, *engine = NULL;
	funnel_service *svc = NULL;
	int status = 1, rc;

	if (d->rules_load && (rc = d->rules_load(d->ctx, d->args->rules, 0, &rules)) != 0)
		return rc;
	funnel_service_opts o = { .name = d->name, .tick = d->tick };
	memcpy(o.tables, d->tables, sizeof o.tables);
	svc_opts(d->args, &o);
	rc = d->setup ? d->setup(d->ctx, rules, &o, &engine) : FUNNEL_OK;
	if (rc == FUNNEL_OK)
		rc = funnel_service_new(&svc, &o, d->apply, engine);
	if (rc != FUNNEL_OK) {
		funnel_log(FUNNEL_LOG_ERROR, "%s: cannot start: %s", d->name, rc == FUNNEL_ESTORAGE ?
		           "the view cannot be opened or written (see above)" : funnel_strerror(rc));
		goto out;
	}
	the_service = svc;
	svc_catch_stop(&the_service);
	if (d->started && d->started(d->ctx, svc, engine) != FUNNEL_OK)
		goto out;
	/* the rules are on record before the first decision made with them */
	rr_rules_id id;
	if (d->rules_id && d->rules_id(rules, &id)) {
		rc = rr_record_rules(svc, &id);
		if (rc == FUNNEL_ESHUTDOWN)
			status = 0;
		if (rc != FUNNEL_OK)
			goto out;
	}
	if (d->serving && d->serving(d->ctx, svc, engine) != FUNNEL_OK)
		goto out;
	status = svc_run(svc, d->name) == FUNNEL_OK ? 0 : 1;
out:
	if (d->stop)
		d->stop(d->ctx, engine);
	the_service = NULL;
	funnel_service_destroy(&svc);
	if (d->release)
		d->release(d->ctx, engine);
	if (d->rules_destroy)
		d->rules_destroy(rules);
	return status;
}

static int
check(const svc_desc *d, const char *path)
{
	void *rules = NULL;
	int rc = d->rules_load(d->ctx, path, 1, &rules);
	if (rc != 0)
		return rc;
	d->rules_ok(path, rules);
	d->rules_destroy(rules);
	return 0;
}

int
svc_main(const svc_desc *d, int argc, char **argv)
{
	the_desc = d;
	funnel_log_program(d->prog);
	int rc = svc_parse(argc, argv, d->prog, d->usage, d->args, d->own, d->own_fn, d->ctx);
	if (rc >= 0)
		return rc;
	if (d->prepare && (rc = d->prepare(d->ctx)) >= 0)
		return rc;
	const char *cmd = optind < argc ? argv[optind++] : "run";
	int nargs = argc - optind;
	if (strcmp(cmd, "run") == 0 && nargs != 0)
		return usage(d, "wrong number of arguments for '%s'", cmd);
	if (strcmp(cmd, "run") == 0 && d->run) {
		svc_catch_stop(&the_service);   /* the_service stays NULL: d->run polls */
		return d->run(d->ctx);
	}
	if (strcmp(cmd, "run") == 0)
		return run_view(d);
	if (strcmp(cmd, "digest") == 0 && d->run == NULL)
		return nargs == 0 ? svc_digest(d->prog, d->name, d->args->view)
		                  : usage(d, "wrong number of arguments for '%s'", cmd);
	if (strcmp(cmd, "check") == 0 && d->rules_load)
		return nargs <= 1 ? check(d, nargs ? argv[optind] : d->args->rules)
		                  : usage(d, "wrong number of arguments for '%s'", cmd);
	for (const svc_command *c = d->commands; c && c->name; c++) {
		if (strcmp(cmd, c->name) != 0)
			continue;
		if (nargs < c->min_args || nargs > c->max_args)
			return usage(d, "wrong number of arguments for '%s'", cmd);
		return c->fn(d->ctx, nargs, argv + optind);
	}
	return usage(d, "unknown command '%s'", cmd);
}
