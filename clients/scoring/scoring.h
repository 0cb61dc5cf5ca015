/*
 * clients/scoring/scoring.h - the parts of funnel-scoring around the rules
 * engine (rules.h): the live service (main.c), `explain` (explain.c) and
 * `what-if` (whatif.c).
 *
 * The scoring view has one table, "leads": lead id -> an 8-byte big-endian
 * ts of the last record applied to the lead, then the engine's state
 * bytes (sc_lead_encode).  A lead without state has no row.
 */
#ifndef FUNNEL_SCORING_H
#define FUNNEL_SCORING_H

#include <stddef.h>
#include <stdint.h>

#include "rules.h"
#include "svcargs.h"

#define SCORING_NAME "scoring"
#define SCORING_TABLE "leads"
#define SCORING_DEFAULT_VIEW "var/scoring"
#define SCORING_DEFAULT_RULES "funnel.yaml"

/* Settings shared by the subcommands (flags in main.c). */
typedef struct scoring_args {
	svc_args c;                /* the flags every service takes */
	int flips;                 /* what-if: leads listed each way */
	int leads;                 /* what-if --leads: lead.qualified per lead */
} scoring_args;

/* `funnel-scoring explain LEAD`: exit status. */
int scoring_explain(const scoring_args *a, const char *lead);

/* `funnel-scoring what-if NEW.yaml`: exit status. */
int scoring_whatif(const scoring_args *a, const char *new_rules);

#endif
