/*
 * clients/scoring/scoring.h - the parts of funnel-scoring around the rules
 * engine (rules.h): the service as svcmain.h describes one (apply.c; the
 * description and the options are main.c's), `explain` (explain.c) and
 * `what-if` (whatif.c).
 *
 * The scoring view has one table, SC_TABLE_LEADS (rules.h: the rows and
 * the engine over them).
 */
#ifndef FUNNEL_SCORING_H
#define FUNNEL_SCORING_H

#include <stddef.h>
#include <stdint.h>

#include "rules.h"
#include "svcmain.h"

#define SCORING_NAME "scoring"
#define SCORING_TABLE SC_TABLE_LEADS
#define SCORING_DEFAULT_VIEW "var/scoring"
#define SCORING_DEFAULT_RULES "funnel.yaml"

/* Settings shared by the subcommands (flags in main.c). */
typedef struct scoring_args {
	svc_args c;                /* the flags every service takes */
	int flips;                 /* what-if: leads listed each way */
	int leads;                 /* what-if --leads: lead.qualified per lead */
} scoring_args;

/* The service's hooks (svc_desc; apply.c).  The engine of run: the
 * rules, a lead's state and buffers, made by scoring_setup. */
int scoring_rules_load(void *ctx, const char *path, int check, void **rules);
void scoring_rules_destroy(void *rules);
void scoring_rules_ok(const char *path, const void *rules);
int scoring_rules_id(const void *rules, rr_rules_id *id);
int scoring_setup(void *ctx, void *rules, funnel_service_opts *o, void **engine);
int scoring_started(void *ctx, funnel_service *svc, void *engine);
void scoring_release(void *ctx, void *engine);
int scoring_apply(funnel_service *svc, const funnel_record *rec, void *engine);

/* `funnel-scoring explain LEAD`: exit status. */
int scoring_explain(const scoring_args *a, const char *lead);

/* `funnel-scoring what-if NEW.yaml`: exit status. */
int scoring_whatif(const scoring_args *a, const char *new_rules);

#endif
