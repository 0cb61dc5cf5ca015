/*
 * clients/scoring/rules.h - the scoring rules engine of funnel-scoring:
 * the `scoring` section of funnel.yaml, per-lead score state, and the
 * function that applies one log record to that state.
 *
 * A pure library: no I/O but sc_rules_load(), no clock, no globals.
 * Scores depend only on the rules and on the records applied, in order
 * (decay reads record timestamps), so a replay from seq 1 reproduces the
 * same states byte for byte.
 *
 * Threads: an sc_rules is immutable once parsed and may be shared by any
 * number of threads; an sc_lead belongs to one thread at a time.
 *
 * Lifecycle: what sc_rules_parse/sc_rules_load or sc_lead_new make is
 * freed with the matching _destroy, which sets the pointer to NULL.
 *
 * Files: parse.c (the rules file into compiled rules), engine.c
 * (conditions, scores, sc_apply), state.c (sc_lead and its encoding);
 * compiled.h is their private layout.
 *
 * The rules file (funnel.yaml) at the top level holds `version` (a name,
 * required), `scoring` (required, read here), and `routing` and `sla`
 * (other services' sections: accepted, not read).  Any other top-level
 * key is an error.  Under `scoring`:
 *
 *   threshold: N               whole number, required: total score of an MQL
 *   minimum_fit: N             whole number, optional: an MQL also needs fit >= N
 *   decay: { half_life_days: N }   or half_life_hours; optional (no decay)
 *   on_recycle: reset_engagement | keep     default reset_engagement
 *   fit: [rules]               on lead fields (from lead.captured data)
 *   engagement: [rules]        on lead.activity events
 *   negative: [rules]          points < 0; on lead fields, or with `on:`
 *                              on activities
 *
 * A rule: `name` (unique across all sections, 1..64 bytes), `points`
 * (> 0 for fit and engagement, < 0 for negative), and conditions.  A
 * condition is `field` plus one or more operators, all of which must hold:
 *   equals: V      in: [V, ...]   numbers compare as numbers (numeric
 *                  strings such as "1234" included), anything else as
 *                  text, ignoring case
 *   at_least / at_most / above / below: N      numeric; a value that is not
 *                  a number fails them
 *   matches: RE    a regular expression (PCRE2 syntax), searched anywhere
 *                  in the value; `ignore_case: true` makes it
 *                  case-insensitive (ASCII letters).  Compiled once, when
 *                  the rules are parsed.  Values are bytes (no UTF mode);
 *                  `.` also matches a newline and `$` only the very end,
 *                  as in POSIX extended expressions (ERE, what this read
 *                  before), so an ERE holds on the same values, but for:
 *                  a backslash inside [...] escapes; \d, \w, \s, \b and
 *                  the like have their PCRE2 meaning; {,n} is literal
 *                  (before PCRE2 10.43; write {0,n}).
 *                  Back-references (\1, \k<name>, ...) are refused:
 *                  matching them can take exponential time.  Any other
 *                  match is bounded: after SC_RE_MATCH_LIMIT steps,
 *                  SC_RE_DEPTH_LIMIT nested backtracking levels or
 *                  SC_RE_HEAP_LIMIT_KIB of backtracking memory it stops,
 *                  and the condition does not hold (sc_outcome.re_limited
 *                  counts it)
 * A rule holds a condition inline (its own `field` and operators), or a
 * list in `when` (all must hold), or a list in `any` (at least one must),
 * or several of these (all of them must then hold).  A field that is
 * absent fails every operator.
 * Activity rules (engagement, and negative rules with `on`) take
 * `on: kind` or `on: [kind, ...]` (data.kind of lead.activity, exact
 * match), optional conditions on the activity's data fields, `once: true`
 * (counts the first time ever only) and `cap: N` (the rule never holds
 * more than N points; a negative rule never less than -N).
 * Lead fields are any lead.captured data keys a rule names, plus
 * `email_domain`: the part of data.email after the last '@', lowercased
 * (a data key named email_domain is ignored).  A later capture updates
 * the fields it carries; a nil value clears a field; maps, arrays and
 * binary values leave it alone.  Field values longer than
 * SC_MAX_VALUE_BYTES are compared by their first SC_MAX_VALUE_BYTES bytes
 * (cut at a UTF-8 character boundary), for activity data as well.
 *
 * Scores: fit is the sum of the points of the lead-field rules that hold
 * on the current field values.  Every activity rule holds a value v and
 * the ts t it was last changed; at time T it is worth
 * v * 0.5^((T - t) / half_life).  When it fires at ts T, its value
 * becomes (decayed value + points), clamped to its cap.  Engagement is the
 * sum of the decayed values.  Reported scores are whole numbers, each
 * rounded half away from zero: fit, engagement, and total = fit +
 * engagement (the two rounded numbers, so a report adds up).
 */
#ifndef FUNNEL_SCORING_RULES_H
#define FUNNEL_SCORING_RULES_H

#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>

#include "funnel/error.h"
#include "funnel/record.h"
#include "funnel/service.h"
#include "rulesfile.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SC_MAX_RULES 256            /* rules in one file, all sections */
#define SC_MAX_NAME_BYTES 64        /* rule name */
#define SC_MAX_VALUE_BYTES 256      /* field value compared and stored */
#define SC_MAX_FILE_BYTES RF_MAX_FILE_BYTES /* bigger files are refused (rulesfile.h says why) */
#define SC_RE_MATCH_LIMIT 100000    /* PCRE2 match limit of one `matches` test */
#define SC_RE_DEPTH_LIMIT 2000      /* PCRE2 depth limit: backtracking levels */
#define SC_RE_HEAP_LIMIT_KIB 8192   /* PCRE2 heap limit of one test's backtracking */

/* ---- the rules ---- */

typedef struct sc_rules sc_rules;

/*
 * Parse a rules file held in memory.  `text` need not be NUL-terminated;
 * it is copied, so the caller keeps ownership.  `filename` only names the
 * file in messages (NULL: "funnel.yaml").  On success stores a new object
 * in *out (free it with sc_rules_destroy) and returns FUNNEL_OK.  On failure *out is set to NULL,
 * nothing is kept, err (if errlen > 0) receives one line naming the file,
 * the line, the key path and the problem, e.g.
 *   funnel.yaml:14: scoring.fit[2].points: expected a number, got "ten"
 * and the return is FUNNEL_EVALUE (the file is wrong), FUNNEL_ETOOBIG
 * (more than SC_MAX_FILE_BYTES), FUNNEL_ENOMEM, or FUNNEL_EINTERNAL
 * (libsodium failed to initialise).  What the service would refuse when it
 * records rules.changed (size, text that is not UTF-8) is refused here, so
 * `check` refuses it too.
 */
int sc_rules_parse(const char *text, size_t len, const char *filename, sc_rules **out,
                   char *err, size_t errlen);

/* Read the file at `path` (at most SC_MAX_FILE_BYTES) and parse it as
 * sc_rules_parse does, naming it `path` in messages.  A file that cannot
 * be read gives FUNNEL_ENOTFOUND (with "path: cannot read: <reason>"). */
int sc_rules_load(const char *path, sc_rules **out, char *err, size_t errlen);

/* Free the rules and set *r to NULL.  Safe on NULL and on *r == NULL.
 * Every sc_lead made from these rules must be freed first. */
void sc_rules_destroy(sc_rules **r);

/* The `version` of the file.  Valid while the rules live. */
const char *sc_rules_version(const sc_rules *r);

/* BLAKE2b-256 of the exact file text (FUNNEL_HASH_BYTES bytes), for
 * rules.changed and lead.scored.  Valid while the rules live. */
const uint8_t *sc_rules_hash(const sc_rules *r);
/* The same hash as lowercase hex.  Valid while the rules live. */
const char *sc_rules_hash_hex(const sc_rules *r);

/* The exact file text (NUL-terminated as well), its length in *len if len
 * is not NULL.  Valid while the rules live. */
const char *sc_rules_text(const sc_rules *r, size_t *len);

/* scoring.threshold. */
int sc_rules_threshold(const sc_rules *r);

/* scoring.minimum_fit: returns 1 and stores it in *out when the file sets
 * it, 0 when it does not (*out is then left alone). */
int sc_rules_minimum_fit(const sc_rules *r, int *out);

/* The decay half-life in ns, 0 when engagement does not decay. */
uint64_t sc_rules_half_life(const sc_rules *r);

/* 1 when on_recycle is reset_engagement, 0 when keep. */
int sc_rules_resets_on_recycle(const sc_rules *r);

/* Rules, in file order: fit, then engagement, then negative.  Index
 * i < sc_rules_count(r); names and kinds are valid while the rules live. */
size_t sc_rules_count(const sc_rules *r);
const char *sc_rule_name(const sc_rules *r, size_t i);
/* "fit", "engagement" or "negative"; NULL when i is out of range. */
const char *sc_rule_kind(const sc_rules *r, size_t i);
/* 1 when the rule reads activities (engagement, or negative with `on`),
 * 0 when it reads lead fields. */
int sc_rule_on_activity(const sc_rules *r, size_t i);

/* Lead fields the rules read, which are the fields a state keeps.  Index
 * 0 is always "email_domain".  Valid while the rules live. */
size_t sc_rules_field_count(const sc_rules *r);
const char *sc_rules_field_name(const sc_rules *r, size_t i);

/* ---- per-lead state ---- */

typedef struct sc_lead sc_lead;

/* A new, empty state for leads scored under r (NULL when out of memory).
 * The state may only be used with r; every function taking both checks
 * it.  It holds room for every field the rules read (about 260 bytes
 * each), so applying and decoding never allocate: make one and reuse it
 * for lead after lead (sc_lead_decode or sc_lead_reset in between). */
sc_lead *sc_lead_new(const sc_rules *r);

/* Free and set *st to NULL.  Safe on NULL and on *st == NULL. */
void sc_lead_destroy(sc_lead **st);

/* Back to empty, as sc_lead_new left it (fields, rule states, scores). */
void sc_lead_reset(sc_lead *st);

/* 1 when the state is empty (a new lead, or one just erased): the service
 * may then delete the stored state rather than write it. */
int sc_lead_is_empty(const sc_lead *st);

/* 1 when the lead was at or above the threshold at its last record. */
int sc_lead_above(const sc_lead *st);

/* The current value of field i (see sc_rules_field_name), NUL-terminated,
 * or NULL when the lead has none.  Valid until the next call that changes
 * st. */
const char *sc_lead_field(const sc_lead *st, size_t i);

/*
 * Append the state to `out` as one msgpack map:
 *   { "v": 1, "rules": bin 8, "above": bool, "scores": [fit, engagement, total],
 *     "fields": { name: string, ... },
 *     "fit": { rule name: [matched bool, fired, last_seq], ... },
 *     "eng": { rule name: [value float64, ts, fired, last_seq], ... } }
 * "rules" is the start of the hash of the rules under which the "matched"
 * flags were last computed (zeros: never); under other rules they are
 * computed again from the fields.  "scores" are the last reported ones.
 * Fields and rules appear in rule file order; fields without a value and
 * rules with nothing to keep are left out.  Rule states are keyed by
 * name, so bytes written under older rules decode under newer ones.
 * Deterministic: equal states under the same rules give equal bytes.
 * Returns FUNNEL_OK, FUNNEL_EINVAL (st was made for other rules; nothing
 * written) or FUNNEL_ENOMEM (the buffer may then hold part of the map:
 * the caller discards it).
 */
int sc_lead_encode(const sc_rules *r, const sc_lead *st, msgpack_sbuffer *out);

/*
 * Replace *st by the state encoded in buf (len bytes, exactly one map as
 * sc_lead_encode writes it).  Fields and rules that r does not know are
 * dropped; rules of r that the bytes do not name start empty, as does a
 * rule whose name now belongs to another kind (fit <-> activity).
 * Bytes written under other rules are scored under r from the lead's
 * fields at once, and its next record counts lead-field rules that now
 * hold as fired.  A field that only the new rules read is empty until the
 * lead's next capture (a rebuild from seq 1 fills it).
 * Returns FUNNEL_OK, FUNNEL_EMALFORMED (not such a map: *st is then left
 * empty) or FUNNEL_EINVAL (st was made for other rules; untouched).
 */
int sc_lead_decode(const sc_rules *r, const void *buf, size_t len, sc_lead *st);

/* ---- applying records ---- */

typedef struct sc_outcome {
	int changed;          /* 1: fit, engagement or total differ from the last values
	                         reported for this lead (they now count as reported) */
	int qualify;          /* 1: the lead just crossed the threshold: emit lead.qualified */
	int fit, engagement, total;   /* the lead's scores after the record */
	size_t n_fired;
	uint32_t fired[SC_MAX_RULES]; /* rules that fired on this record, in rule order:
	                                 activity rules that took points, lead-field rules
	                                 that began to hold */
	uint32_t re_limited;  /* `matches` tests on this record that hit SC_RE_MATCH_LIMIT
	                         or SC_RE_DEPTH_LIMIT (or PCRE2 ran out of memory): each
	                         counted as not holding */
	uint64_t at;          /* the time the scores are at: the record's event time
	                         (funnel_record_event_time), never before the latest time
	                         the lead's state holds (PROTOCOL.md §10, out of order);
	                         derived events carry it as occurred_at */
} sc_outcome;

/*
 * 1 when a record can change a lead's score: lead.captured (fields),
 * lead.activity (engagement), lead.recycled and lead.rejected (the reset),
 * lead.erased (the wipe), each naming a lead.  Every other record
 * (assignments, contacts, outcomes, the scoring service's own
 * lead.scored and lead.qualified, rules.changed, x.*) leaves the state
 * alone, so the service need not even load it; decay is applied when the
 * next record that counts arrives, so scores change, and lead.scored is
 * sent, only on records that count.
 */
int sc_counts(const funnel_record *rec);

/*
 * Apply one record of the log to the state of the lead it names.  The
 * caller passes each lead's records in seq order.  Records for which
 * sc_counts() is 0 change nothing.  Every other record is scored at its
 * `ts`:
 *  - lead.captured first updates the lead's fields from its data;
 *  - lead.activity fires the activity rules whose `on` holds its
 *    data.kind and whose conditions hold on its data (`once` rules only
 *    if they never fired);
 *  - lead.recycled and lead.rejected, with on_recycle reset_engagement,
 *    zero every activity rule's value;
 *  - lead.erased empties the state (fields included) and reports nothing
 *    (changed 0, scores 0).
 * Then the lead-field rules are evaluated on the current fields and the
 * scores computed.  The lead is "above" when total >= threshold (and fit
 * >= minimum_fit, if set).  "above" is set or cleared on every record that
 * counts, whatever the stage and whatever the record, the
 * lead.recycled/lead.rejected record included.  Qualification is
 * edge-triggered: qualify is 1 when the lead is above after the record,
 * was not above before it, the record's stage is inquiry or nurture, and
 * the record is not the lead.recycled/lead.rejected that sent it back.
 * So a lead sent back crosses the threshold again to qualify again: with
 * reset_engagement its engagement restarts from zero, which normally
 * takes it below; a lead still above after being sent back (keep, or fit
 * alone at the threshold) first has to fall below it.
 * On return *out describes the lead (for a record that changes nothing:
 * changed 0, qualify 0, the last reported scores, nothing fired).
 * Returns FUNNEL_OK, or FUNNEL_EINVAL when st was made for other rules
 * (st unchanged).  Never allocates, but for `matches` tests: PCRE2 may grow
 * the state's match workspace (bounded by SC_RE_DEPTH_LIMIT); if it cannot,
 * the test counts as not holding (re_limited).
 */
int sc_apply(const sc_rules *r, sc_lead *st, const funnel_record *rec, sc_outcome *out);

/* The scores the state gives at time at_ts (decay applied; fit from the
 * lead's current fields), without changing it.  Any out pointer may be
 * NULL.  For explain and what-if: at_ts need not be a record's ts. */
void sc_scores(const sc_rules *r, const sc_lead *st, uint64_t at_ts, int *fit,
               int *engagement, int *total);

/* One rule's part in a lead's score. */
typedef struct sc_contrib {
	uint32_t rule;        /* rule index */
	double points;        /* points it holds at at_ts, decay applied */
	uint32_t fired;       /* times it fired for this lead */
	uint64_t last_seq;    /* seq of the record it last fired on */
} sc_contrib;

/* Every rule contributing to the lead's score at at_ts (points != 0), in
 * rule order, for `explain`.  Writes at most cap entries to out (out may
 * be NULL when cap is 0) and returns how many rules contribute, which is
 * never more than sc_rules_count(r). */
size_t sc_contributions(const sc_rules *r, const sc_lead *st, uint64_t at_ts,
                        sc_contrib *out, size_t cap);

/* ---- the view's rows, over a funnel_store (funnel/service.h) ---- */

/* The scoring view's one table, index 0 of its store: lead id -> an
 * 8-byte big-endian ts of the last record applied to the lead, then the
 * state bytes (sc_lead_encode).  A lead without state has no row. */
#define SC_TABLE_LEADS "leads"

/* Read the lead's row into st (reset first) and its ts into *ts (may be
 * NULL).  Returns FUNNEL_OK, FUNNEL_ENOTFOUND (no row: st is empty),
 * FUNNEL_EMALFORMED (the row does not decode), or the store's error. */
int sc_row_load(const sc_rules *r, const funnel_store *s, funnel_str lead, sc_lead *st,
                uint64_t *ts);

/* sc_apply on the row of the lead rec names: read it (sc_row_load),
 * apply, and write it back (deleted when the state is empty).  A record
 * for which sc_counts() is 0 reads and writes nothing (*out: nothing
 * changed).  st and sb are the caller's scratch.  Returns FUNNEL_OK,
 * FUNNEL_EMALFORMED (the row does not decode: nothing written), or
 * sc_apply's, sc_lead_encode's or the store's error. */
int sc_apply_row(const sc_rules *r, const funnel_store *s, sc_lead *st, msgpack_sbuffer *sb,
                 const funnel_record *rec, sc_outcome *out);

#ifdef __cplusplus
}
#endif
#endif /* FUNNEL_SCORING_RULES_H */
