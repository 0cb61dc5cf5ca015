/*
 * clients/routing/router.h - the parts of funnel-routing around the
 * routing engine (routing.h): the service as svcmain.h describes one,
 * with its SLA tick (apply.c; the description and the options are
 * main.c's), and `explain` (explain.c).
 *
 * The routing view has the engine's three tables (routing.h: leads,
 * reps, due), each row as the engine encodes it.
 */
#ifndef FUNNEL_ROUTER_H
#define FUNNEL_ROUTER_H

#include <stdint.h>

#include "routing.h"
#include "svcmain.h"

#define ROUTING_NAME "routing"
#define ROUTING_DEFAULT_VIEW "var/routing"
#define ROUTING_DEFAULT_RULES "funnel.yaml"

/* Settings shared by the subcommands (flags in main.c). */
typedef struct routing_args {
	svc_args c;                /* the flags every service takes */
	const char *clock_file;    /* the SLA tick's clock: ns since the epoch in a file */
	int tick_ms;
} routing_args;

/* The current time in ns for SLA decisions: the number in clock_file
 * when one is given (tests move time with it), else the wall clock.
 * Returns 0, or -1 when the file does not hold one (decimal digits, no sign). */
int routing_now(const char *clock_file, uint64_t *now);

/* The service's hooks (svc_desc; apply.c).  The engine of run: the
 * rules, the clock file and a buffer, made by routing_setup. */
int routing_rules_load(void *ctx, const char *path, int check, void **rules);
void routing_rules_destroy(void *rules);
void routing_rules_ok(const char *path, const void *rules);
int routing_rules_id(const void *rules, rr_rules_id *id);
int routing_setup(void *ctx, void *rules, funnel_service_opts *o, void **engine);
int routing_started(void *ctx, funnel_service *svc, void *engine);
void routing_release(void *ctx, void *engine);
int routing_apply(funnel_service *svc, const funnel_record *rec, void *engine);
int routing_tick(funnel_service *svc, MDB_txn *view, void *engine);

/* `funnel-routing explain LEAD`: exit status. */
int routing_explain(const routing_args *a, const char *lead);

#endif
