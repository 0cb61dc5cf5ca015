/*
 * clients/routing/router.h - the parts of funnel-routing around the
 * routing engine (routing.h): the live service with its SLA tick
 * (main.c) and `explain` (explain.c).
 *
 * The routing view has the engine's three tables (routing.h: leads,
 * reps, due), each row as the engine encodes it.
 */
#ifndef FUNNEL_ROUTER_H
#define FUNNEL_ROUTER_H

#include <stdint.h>

#include "routing.h"
#include "svcargs.h"

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

/* `funnel-routing explain LEAD`: exit status. */
int routing_explain(const routing_args *a, const char *lead);

#endif
