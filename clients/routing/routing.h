/*
 * clients/routing/routing.h - the routing engine of funnel-routing: the
 * `routing` section of funnel.yaml, and the function that applies one log
 * record to the routing view (per-lead and per-rep state).
 *
 * A pure library: no I/O but rt_rules_load(), no clock, no globals.  The
 * view is read and written through a funnel_store (funnel/service.h:
 * the service passes its view, explain a read-only one, unit tests a
 * table in memory), and every decision depends
 * only on the rules, the view and the record (time is the record's ts),
 * so a replay from seq 1 reproduces the same view byte for byte.
 *
 * The rules file at the top level holds `version` (a name, required) and
 * `routing` (required here); every other top-level key is another
 * service's section and is skipped.  Under `routing`:
 *
 *   teams: [team]        one or more, names unique
 *     name: T            1..64 bytes
 *     sla_minutes: N     1..525600, optional: an assigned lead must get
 *                        lead.contacted / accepted / rejected within N
 *                        minutes of its lead.assigned (no SLA without it)
 *     team_lead: NAME    optional: who gets a lead on escalation to the lead
 *     escalation: { to: next_rep | team_lead | none, limit: N }
 *                        optional (none): on a breach, reassign to the
 *                        next eligible rep of the team (falling back to the
 *                        team lead when nobody is), or to the team lead, at
 *                        most N (1..10) times per qualification
 *     reps: [rep]        1..RT_MAX_TEAM_REPS; a rep's name is unique in the file
 *       name: R          1..128 bytes
 *       weight: N        1..1000, default 1: share of the team's leads
 *       capacity: N      0..1000000, default 0 (no cap): open leads at most
 *       active: BOOL     default true; an inactive rep never gets a lead
 *   rules: [rule]        in order; the first that matches a lead wins
 *     name: N            1..64 bytes, unique
 *     team: T            a team above
 *     when: { FIELD: COND, ... }   optional (matches every lead); all hold
 *        COND is a value (equals), a list of values (one of), or a mapping
 *        with equals / in / at_least / at_most.  Values compare ignoring
 *        case, numbers as numbers ("1000" included).  A field the lead
 *        does not have fails every condition.
 *   keep_owner: BOOL     default true: a lead that someone owns when it is
 *                        qualified keeps its owner; false: route it again
 *   fallback:            required: where leads that no rule matches, or
 *     queue: Q           whose team has nobody eligible, go (owner Q; a
 *                        name that is no team's and no rep's)
 *     sla_minutes: N     optional, as for a team (a breach is recorded,
 *                        a queue has nobody to escalate to)
 *
 * Lead fields are the lead.captured data keys the rules name (strings,
 * numbers and booleans as text, at most RT_MAX_VALUE bytes); a later
 * capture updates the fields it carries.
 *
 * The view, three tables (RT_T_*):
 *   leads: lead id -> the lead's routing state (rt_lead, encoded)
 *   reps:  rep name -> availability, capacity override, open leads,
 *          current weight of the weighted round-robin (rt_rep, encoded)
 *   due:   8-byte big-endian deadline ns + lead id -> 8-byte big-endian
 *          seq of the lead.assigned whose SLA it is: the timers, in
 *          deadline order, for the service's tick
 *
 * Threads: an rt_rules is immutable once parsed; share it freely.
 */
#ifndef FUNNEL_ROUTING_H
#define FUNNEL_ROUTING_H

#include <stddef.h>
#include <stdint.h>

#include "funnel/error.h"
#include "funnel/record.h"
#include "funnel/service.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RT_MAX_NAME 128          /* team, rep, queue, rule, owner names */
#define RT_MAX_VALUE 128         /* a lead field's value kept */
#define RT_MAX_FIELDS 16         /* lead fields the rules may name */
#define RT_MAX_REASON 240        /* the "why this rep" text */
#define RT_MAX_TEAM_REPS 64      /* reps in one team */
/* The largest "leads" row, and the undo bytes of a decision (a header
 * and the row as it was before it). */
#define RT_LEAD_ROW_MAX (34 + 4 * 256 + 1 + RT_MAX_FIELDS * 2 * 256)
#define RT_UNDO_MAX (13 + RT_LEAD_ROW_MAX)

/* ---- the rules ---- */

typedef struct rt_rules rt_rules;

/*
 * Parse a rules file held in memory (text need not be NUL-terminated; it
 * is copied).  filename names the file in messages (NULL: funnel.yaml).
 * On success *out holds new rules (rt_rules_destroy) and FUNNEL_OK is
 * returned.  On failure *out is NULL, err gets one line naming the file,
 * the line, the key path and the problem, e.g.
 *   funnel.yaml:40: routing.teams[1].reps[0].weight: expected a whole number from 1 to 1000, got x
 * and the return is FUNNEL_EVALUE, FUNNEL_ETOOBIG (more than
 * RF_MAX_FILE_BYTES), FUNNEL_ENOMEM or FUNNEL_EINTERNAL.  The file's
 * limits (size, UTF-8, nesting) are rulesfile.h's, the same as scoring's,
 * so `check` refuses what recording rules.changed would.
 */
int rt_rules_parse(const char *text, size_t len, const char *filename, rt_rules **out,
                   char *err, size_t errlen);

/* Read and parse the file at path, naming it path in messages;
 * FUNNEL_ENOTFOUND / FUNNEL_ETOOBIG when it cannot be read. */
int rt_rules_load(const char *path, rt_rules **out, char *err, size_t errlen);

/* Free and set *r to NULL; safe on NULL. */
void rt_rules_destroy(rt_rules **r);

/* `version`, the BLAKE2b-256 of the file text as lowercase hex, counts.
 * Valid while the rules live. */
const char *rt_rules_version(const rt_rules *r);
const char *rt_rules_hash_hex(const rt_rules *r);
/* The exact file text, its length in *len. */
const char *rt_rules_text(const rt_rules *r, size_t *len);
size_t rt_rules_team_count(const rt_rules *r);
size_t rt_rules_rule_count(const rt_rules *r);
size_t rt_rules_rep_count(const rt_rules *r);
const char *rt_rules_fallback(const rt_rules *r);

/* The SLA of the team or queue named `team`, in ns (0: none or unknown). */
uint64_t rt_rules_sla_ns(const rt_rules *r, const char *team);

/* ---- the view ---- */

enum { RT_T_LEADS, RT_T_REPS, RT_T_DUE, RT_NTABLES };
/* "leads", "reps", "due", then NULL (a funnel_view_reader's list) */
extern const char *const rt_table_names[RT_NTABLES + 1];

/* The engine reads and writes the view through a funnel_store
 * (funnel/service.h) whose table i is rt_table_names[i]; a store error
 * other than FUNNEL_ENOTFOUND is passed up by rt_apply. */

/* A lead's routing state, as the "leads" table holds it. */
typedef struct rt_lead {
	int open;                      /* owner holds it: counts in the owner's open leads */
	uint32_t escalations;          /* escalations since it was last routed */
	uint32_t breaches;             /* SLA breaches recorded, ever */
	uint64_t routed_seq;           /* the record the last decision was made on (lead.qualified,
	                                  or the lead.sla_breached of an escalation) */
	uint64_t assign_seq;           /* the lead.assigned in force (0: decided, not yet recorded) */
	uint64_t deadline;             /* SLA deadline, ns (0: no timer running) */
	char owner[RT_MAX_NAME + 1];   /* "" when nobody */
	char team[RT_MAX_NAME + 1];
	char rule[RT_MAX_NAME + 1];
	char reason[RT_MAX_REASON + 1];
	size_t nfields;
	struct {
		char name[RT_MAX_NAME + 1];
		char value[RT_MAX_VALUE + 1];
	} fields[RT_MAX_FIELDS];
} rt_lead;

/* A rep's state, as the "reps" table holds it. */
typedef struct rt_rep {
	int unavailable;               /* rep.unavailable seen, no rep.available since */
	uint64_t until;                /* ...until this ts (0: until rep.available) */
	int64_t capacity;              /* rep.capacity override, -1: the file's */
	uint32_t open;                 /* open leads owned */
	int64_t current;               /* smooth weighted round-robin current weight */
} rt_rep;

/* Decode a row; FUNNEL_EMALFORMED if it is not one. */
int rt_lead_decode(const void *buf, size_t len, rt_lead *out);
int rt_rep_decode(const void *buf, size_t len, rt_rep *out);
/* A "due" row: the deadline, the lead id (a view into key) and the seq
 * of the lead.assigned whose timer it is. */
int rt_due_decode(const void *key, size_t klen, const void *val, size_t vlen, uint64_t *deadline,
                  funnel_str *lead, uint64_t *assignment);

/* ---- applying records ---- */

/* A lead.assigned to derive. */
typedef struct rt_outcome {
	int assign;                    /* 1: emit lead.assigned with what follows */
	const char *key;               /* idempotency key part: "assigned" or "escalated" */
	char owner[RT_MAX_NAME + 1];
	char team[RT_MAX_NAME + 1];
	char rule[RT_MAX_NAME + 1];
	char reason[RT_MAX_REASON + 1];
	char previous[RT_MAX_NAME + 1];   /* escalation: the owner it is taken from */
	uint32_t escalation;           /* 0 for routing, 1.. for escalations */
	/* With assign: what takes the decision back if the log drops it (give
	 * it to rt_apply_dropped with the record that shows the drop). */
	size_t undo_len;
	uint8_t undo[RT_UNDO_MAX];
} rt_outcome;

/* 1 when the record can change the routing view (rt_apply does nothing
 * with the others; the service skips them). */
int rt_counts(const funnel_record *rec);

/*
 * Apply one record of the log, in seq order:
 *  - lead.captured: keep the lead fields the rules name;
 *  - lead.qualified: a lead someone owns (open) keeps its owner and its
 *    timer, unless the rules say keep_owner: false; otherwise route the
 *    lead: the first rule that matches, then
 *    the smooth weighted round-robin (nginx's) over the team's eligible
 *    reps (active in the file, available at rec->ts, below capacity);
 *    the fallback queue when no rule matches or nobody is eligible.
 *    The lead is counted open for its owner at once, so a burst of
 *    qualifications respects capacity before the assignments return;
 *  - lead.assigned (ours or anyone's): the owner of record; open counts
 *    move if the owner changed; the SLA timer starts at rec->ts (live
 *    clock), unless the assignment's event time is already older than
 *    the SLA then (a backfill: not timed, PROTOCOL.md §10).  The
 *    record of our last decision (cause = routed_seq) arriving after the
 *    lead left its owner changes nothing;
 *  - lead.contacted, lead.accepted: the timer stops;
 *  - lead.rejected, recycled, disqualified, deal.won, deal.lost: the
 *    lead leaves its owner (open count) and the timer stops;
 *    lead.erased also forgets the lead;
 *  - lead.sla_breached naming the assignment in force (data.assignment)
 *    with its timer running: the timer stops, and the team's escalation
 *    decides a new owner (up to its limit);
 *  - rep.available, rep.unavailable (data.until, optional: ns since the
 *    epoch or "2026-12-01T09:00:00Z"; compared with rec->ts),
 *    rep.capacity (data.capacity: N, or nil for the file's).
 * On return *out says whether to emit lead.assigned (rec names the lead).
 * Returns FUNNEL_OK or the store's error code.
 */
int rt_apply(const rt_rules *r, const funnel_store *s, const funnel_record *rec, rt_outcome *out);

/*
 * rt_apply for a record that shows the log dropped the service's last
 * decision on its lead (funnel_service_dropped: someone's event came
 * before the decision's lead.assigned; `dropped` holds the undo bytes of
 * that decision's rt_outcome).  First the decision is taken back: the
 * lead's row as it was before it, the owner's open count, the rotation
 * as if that pick never happened.  Then the record is applied.  Then, if
 * the record does not handle the lead (lead.captured, lead.activity,
 * lead.scored, x.*: the lead browsed, it was not acted on) and the
 * reason still holds (a route: the lead is mql and nobody holds it; an
 * escalation: the owner in breach still holds it), the decision is made
 * again on this record (cause this record's seq).  With dropped NULL it
 * is rt_apply.
 */
int rt_apply_dropped(const rt_rules *r, const funnel_store *s, const funnel_record *rec,
                     const void *dropped, size_t dropped_len, rt_outcome *out);

/*
 * What routing a lead with these fields at time ts would decide, without
 * changing anything: for explain.  *rule_index is the matching rule (-1:
 * none); `why` (RT_MAX_REASON + 1 bytes) says who was eligible and why
 * the others were not.  Returns FUNNEL_OK or the store's error.
 */
int rt_explain_match(const rt_rules *r, const funnel_store *s, const rt_lead *lead, uint64_t ts,
                     int *rule_index, char *why);

/* Rule i's name and team (NULL out of range). */
const char *rt_rule_name(const rt_rules *r, size_t i);
const char *rt_rule_team(const rt_rules *r, size_t i);

#ifdef __cplusplus
}
#endif
#endif
