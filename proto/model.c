/*
 * proto/model.c - stages, event types and the transition table.
 */
#include <string.h>

#include "model.h"

#define S(x) (1u << FP_STAGE_##x)
/* A lead that exists and can still be worked. */
#define LIVE (S(INQUIRY) | S(MQL) | S(SAL) | S(SQL) | S(NURTURE))
/* A lead that was captured and not erased. */
#define KNOWN (LIVE | S(WON) | S(LOST) | S(DISQUALIFIED))
/* Special "to": inquiry for a new or erased lead, unchanged otherwise. */
#define TO_CAPTURE (-2)

static const fp_evspec unknown_spec = {
	"", FP_EV_UNKNOWN, 0, NULL, NULL, 0, -1
};

/* Indexed by fp_evtype.  Keep in step with PROTOCOL.md "Event types". */
static const fp_evspec specs[FP_EV_COUNT] = {
	[FP_EV_UNKNOWN] = { "", FP_EV_UNKNOWN, 0, NULL, NULL, 0, -1 },
	[FP_EV_CUSTOM] = { "x.*", FP_EV_CUSTOM, 0, NULL, NULL, 0, -1 },
	[FP_EV_CAPTURED] = { "lead.captured", FP_EV_CAPTURED, 1, NULL, NULL,
	                     S(NONE) | KNOWN | S(ERASED), TO_CAPTURE },
	[FP_EV_ACTIVITY] = { "lead.activity", FP_EV_ACTIVITY, 1, "kind", NULL, KNOWN, -1 },
	[FP_EV_SCORED] = { "lead.scored", FP_EV_SCORED, 1, NULL, NULL, KNOWN, -1 },
	[FP_EV_QUALIFIED] = { "lead.qualified", FP_EV_QUALIFIED, 1, NULL, NULL,
	                      S(INQUIRY) | S(NURTURE), FP_STAGE_MQL },
	[FP_EV_ASSIGNED] = { "lead.assigned", FP_EV_ASSIGNED, 1, "owner", NULL, LIVE, -1 },
	[FP_EV_CONTACTED] = { "lead.contacted", FP_EV_CONTACTED, 1, NULL, NULL, KNOWN, -1 },
	[FP_EV_ACCEPTED] = { "lead.accepted", FP_EV_ACCEPTED, 1, NULL, NULL, S(MQL), FP_STAGE_SAL },
	[FP_EV_REJECTED] = { "lead.rejected", FP_EV_REJECTED, 1, "reason", NULL,
	                     S(MQL), FP_STAGE_NURTURE },
	[FP_EV_RECYCLED] = { "lead.recycled", FP_EV_RECYCLED, 1, "reason", NULL,
	                     S(MQL) | S(SAL) | S(SQL) | S(LOST), FP_STAGE_NURTURE },
	[FP_EV_DISQUALIFIED] = { "lead.disqualified", FP_EV_DISQUALIFIED, 1, "reason", NULL,
	                         LIVE | S(LOST), FP_STAGE_DISQUALIFIED },
	[FP_EV_OPP_OPENED] = { "opportunity.opened", FP_EV_OPP_OPENED, 1, NULL, "amount",
	                       S(SAL), FP_STAGE_SQL },
	[FP_EV_DEAL_WON] = { "deal.won", FP_EV_DEAL_WON, 1, NULL, "amount", S(SQL), FP_STAGE_WON },
	[FP_EV_DEAL_LOST] = { "deal.lost", FP_EV_DEAL_LOST, 1, "reason", NULL, S(SQL), FP_STAGE_LOST },
	[FP_EV_SLA_BREACHED] = { "lead.sla_breached", FP_EV_SLA_BREACHED, 1, NULL, NULL, LIVE, -1 },
	[FP_EV_RULES_CHANGED] = { "rules.changed", FP_EV_RULES_CHANGED, 0, "hash", NULL, 0, -1 },
	[FP_EV_ERASED] = { "lead.erased", FP_EV_ERASED, 1, NULL, NULL, KNOWN, FP_STAGE_ERASED },
	/* about a sales rep, not a lead: no funnel checks, data.rep names the rep */
	[FP_EV_REP_AVAILABLE] = { "rep.available", FP_EV_REP_AVAILABLE, 0, "rep", NULL, 0, -1 },
	[FP_EV_REP_UNAVAILABLE] = { "rep.unavailable", FP_EV_REP_UNAVAILABLE, 0, "rep", NULL, 0, -1 },
	[FP_EV_REP_CAPACITY] = { "rep.capacity", FP_EV_REP_CAPACITY, 0, "rep", NULL, 0, -1 },
};

static const char *const stage_names[FP_STAGE_COUNT] = {
	"none", "inquiry", "mql", "sal", "sql", "won", "lost",
	"nurture", "disqualified", "erased"
};

const fp_evspec *
fp_evspec_lookup(const char *name, size_t len)
{
	if (len >= 2 && name[0] == 'x' && name[1] == '.')
		return &specs[FP_EV_CUSTOM];
	for (int t = FP_EV_CAPTURED; t < FP_EV_COUNT; t++) {
		if (strlen(specs[t].name) == len && memcmp(specs[t].name, name, len) == 0)
			return &specs[t];
	}
	return &unknown_spec;
}

const fp_evspec *
fp_evspec_get(fp_evtype t)
{
	if ((int)t <= FP_EV_UNKNOWN || t >= FP_EV_COUNT)
		return &unknown_spec;
	return &specs[t];
}

const char *
fp_stage_name(fp_stage s)
{
	if ((int)s < 0 || s >= FP_STAGE_COUNT)
		return "none";
	return stage_names[s];
}

int
fp_stage_parse(const char *name, size_t len)
{
	for (int s = 0; s < FP_STAGE_COUNT; s++) {
		if (strlen(stage_names[s]) == len && memcmp(stage_names[s], name, len) == 0)
			return s;
	}
	return -1;
}

funnel_err
fp_transition(const fp_evspec *spec, fp_stage from, fp_stage *to)
{
	*to = from;
	if (spec->from_mask == 0)           /* custom and rules.changed: no funnel checks */
		return FUNNEL_OK;
	if (!(spec->from_mask & (1u << from)))
		return from == FP_STAGE_NONE ? FUNNEL_ENOLEAD : FUNNEL_ETRANSITION;
	if (spec->to == TO_CAPTURE)
		*to = (from == FP_STAGE_NONE || from == FP_STAGE_ERASED) ? FP_STAGE_INQUIRY : from;
	else if (spec->to >= 0)
		*to = (fp_stage)spec->to;
	return FUNNEL_OK;
}
