/*
 * proto/model.h - the funnel model: stages, event types and the stage
 * transition table.  This table is the one place that decides which
 * event makes sense for which stage; PROTOCOL.md prints the same table.
 *
 * Depends on nothing but funnel/error.h.  All functions are pure.
 */
#ifndef FUNNEL_PROTO_MODEL_H
#define FUNNEL_PROTO_MODEL_H

#include <stddef.h>

#include "funnel/error.h"

/* Stages of a lead.  FP_STAGE_NONE is "never captured" (a lead id that
 * only custom x.* events named).  Values are stored in the daemon's lead
 * index: never renumber, only append. */
typedef enum fp_stage {
	FP_STAGE_NONE = 0,
	FP_STAGE_INQUIRY = 1,
	FP_STAGE_MQL = 2,
	FP_STAGE_SAL = 3,
	FP_STAGE_SQL = 4,
	FP_STAGE_WON = 5,
	FP_STAGE_LOST = 6,
	FP_STAGE_NURTURE = 7,
	FP_STAGE_DISQUALIFIED = 8,
	FP_STAGE_ERASED = 9,
	FP_STAGE_COUNT
} fp_stage;

/* Event types the log knows.  FP_EV_CUSTOM is any "x." type.  Append
 * only: never renumber. */
typedef enum fp_evtype {
	FP_EV_UNKNOWN = 0,
	FP_EV_CUSTOM,
	FP_EV_CAPTURED,
	FP_EV_ACTIVITY,
	FP_EV_SCORED,
	FP_EV_QUALIFIED,
	FP_EV_ASSIGNED,
	FP_EV_CONTACTED,
	FP_EV_ACCEPTED,
	FP_EV_REJECTED,
	FP_EV_RECYCLED,
	FP_EV_DISQUALIFIED,
	FP_EV_OPP_OPENED,
	FP_EV_DEAL_WON,
	FP_EV_DEAL_LOST,
	FP_EV_SLA_BREACHED,
	FP_EV_RULES_CHANGED,
	FP_EV_ERASED,
	FP_EV_REP_AVAILABLE,       /* a sales rep takes leads again (funnel-routing) */
	FP_EV_REP_UNAVAILABLE,     /* a sales rep takes no leads, for now or until a time */
	FP_EV_REP_CAPACITY,        /* a sales rep's cap on open leads changes */
	FP_EV_COUNT
} fp_evtype;

/* What an event type requires of its envelope. */
typedef struct fp_evspec {
	const char *name;          /* wire name, e.g. "lead.captured" */
	fp_evtype type;
	int needs_lead;            /* 1: "lead" is required */
	const char *needs_string;  /* a data key that must be a non-empty string, or NULL */
	const char *money_key;     /* a data key that, if present, must be a number >= 0, or NULL */
	unsigned from_mask;        /* stages (bit 1<<stage) the event is allowed from; 0 = any */
	int to;                    /* stage after the event, or -1 for "unchanged" */
} fp_evspec;

/* Look an event type up by its wire name.  Names starting with "x." map
 * to FP_EV_CUSTOM; names not in the table to FP_EV_UNKNOWN.  Never NULL:
 * the returned spec is static. */
const fp_evspec *fp_evspec_lookup(const char *name, size_t len);

/* The spec of a known type (FP_EV_CUSTOM..FP_EV_COUNT-1), static. */
const fp_evspec *fp_evspec_get(fp_evtype t);

/* Wire name of a stage ("inquiry", "mql", ...); "none" for FP_STAGE_NONE. */
const char *fp_stage_name(fp_stage s);

/* Parse a stage name; returns -1 if unknown. */
int fp_stage_parse(const char *name, size_t len);

/*
 * Decide the stage after event `spec` for a lead now in stage `from`.
 * Returns FUNNEL_OK and sets *to, FUNNEL_ENOLEAD when the event needs a
 * captured lead and `from` is FP_STAGE_NONE, or FUNNEL_ETRANSITION.
 * Custom (x.*) events never change the stage and are always allowed.
 */
funnel_err fp_transition(const fp_evspec *spec, fp_stage from, fp_stage *to);

#endif /* FUNNEL_PROTO_MODEL_H */
