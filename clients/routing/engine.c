/*
 * clients/routing/engine.c - the routing decisions: rows of the view
 * encoded and decoded, matching, the smooth weighted round-robin, the SLA
 * timers and escalation, rt_apply.  The contract is routing.h.
 *
 * Invariants kept in the view:
 *   - a rep's `open` is the number of leads whose row says open with that
 *     owner (a decision counts at once, before its lead.assigned returns);
 *   - a lead with deadline != 0 has exactly one row in "due", keyed by
 *     that deadline and the lead, whose value is its assign_seq.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "engine.h"
#include "model.h"
#include "mp.h"
#include "rulesfile.h"

const char *const rt_table_names[RT_NTABLES + 1] = { "leads", "reps", "due", NULL };

/* ---- bytes ---- */

static void
put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static uint32_t
get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A counted string: one length byte, then the bytes (at most 255). */
static size_t
put_str(uint8_t *p, const char *s)
{
	size_t n = strlen(s);
	p[0] = (uint8_t)n;
	memcpy(p + 1, s, n);
	return n + 1;
}

/* Read a counted string into out (cap bytes with the NUL); 0 or -1. */
static int
get_str(const uint8_t **p, const uint8_t *end, char *out, size_t cap)
{
	if (*p >= end || (size_t)**p + 1 > cap || *p + 1 + **p > end)
		return -1;
	size_t n = **p;
	memcpy(out, *p + 1, n);
	out[n] = 0;
	if (memchr(out, 0, n) != NULL)
		return -1;
	*p += n + 1;
	return 0;
}

#define LEAD_FIXED 34
#define LEAD_MAX RT_LEAD_ROW_MAX
#define REP_BYTES 30

/* Encode a lead into buf (LEAD_MAX bytes); returns the length. */
static size_t
lead_encode(const rt_lead *l, uint8_t *buf)
{
	uint8_t *p = buf;
	p[0] = 1;
	p[1] = (uint8_t)l->open;
	put_u32(p + 2, l->escalations);
	put_u32(p + 6, l->breaches);
	fp_put_be64(p + 10, l->routed_seq);
	fp_put_be64(p + 18, l->assign_seq);
	fp_put_be64(p + 26, l->deadline);
	p += LEAD_FIXED;
	p += put_str(p, l->owner);
	p += put_str(p, l->team);
	p += put_str(p, l->rule);
	p += put_str(p, l->reason);
	*p++ = (uint8_t)l->nfields;
	for (size_t i = 0; i < l->nfields; i++) {
		p += put_str(p, l->fields[i].name);
		p += put_str(p, l->fields[i].value);
	}
	return (size_t)(p - buf);
}

int
rt_lead_decode(const void *buf, size_t len, rt_lead *l)
{
	const uint8_t *p = buf, *end = p + len;
	memset(l, 0, sizeof *l);
	if (len < LEAD_FIXED || p[0] != 1 || p[1] > 1)
		return FUNNEL_EMALFORMED;
	l->open = p[1];
	l->escalations = get_u32(p + 2);
	l->breaches = get_u32(p + 6);
	l->routed_seq = fp_get_be64(p + 10);
	l->assign_seq = fp_get_be64(p + 18);
	l->deadline = fp_get_be64(p + 26);
	p += LEAD_FIXED;
	if (get_str(&p, end, l->owner, sizeof l->owner) || get_str(&p, end, l->team, sizeof l->team) ||
	    get_str(&p, end, l->rule, sizeof l->rule) ||
	    get_str(&p, end, l->reason, sizeof l->reason) || p >= end || *p > RT_MAX_FIELDS)
		return FUNNEL_EMALFORMED;
	l->nfields = *p++;
	for (size_t i = 0; i < l->nfields; i++) {
		if (get_str(&p, end, l->fields[i].name, sizeof l->fields[i].name) ||
		    get_str(&p, end, l->fields[i].value, sizeof l->fields[i].value))
			return FUNNEL_EMALFORMED;
	}
	return p == end ? FUNNEL_OK : FUNNEL_EMALFORMED;
}

int
rt_due_decode(const void *key, size_t klen, const void *val, size_t vlen, uint64_t *deadline,
              funnel_str *lead, uint64_t *assignment)
{
	if (klen <= 8 || vlen != 8)
		return FUNNEL_EMALFORMED;
	*deadline = fp_get_be64(key);
	*lead = (funnel_str){ (const char *)key + 8, klen - 8 };
	*assignment = fp_get_be64(val);
	return FUNNEL_OK;
}

static void
rep_encode(const rt_rep *r, uint8_t *p)
{
	p[0] = 1;
	p[1] = (uint8_t)r->unavailable;
	fp_put_be64(p + 2, r->until);
	fp_put_be64(p + 10, (uint64_t)r->capacity);
	put_u32(p + 18, r->open);
	fp_put_be64(p + 22, (uint64_t)r->current);
}

int
rt_rep_decode(const void *buf, size_t len, rt_rep *r)
{
	const uint8_t *p = buf;
	if (len != REP_BYTES || p[0] != 1 || p[1] > 1)
		return FUNNEL_EMALFORMED;
	r->unavailable = p[1];
	r->until = fp_get_be64(p + 2);
	r->capacity = (int64_t)fp_get_be64(p + 10);
	r->open = get_u32(p + 18);
	r->current = (int64_t)fp_get_be64(p + 22);
	return FUNNEL_OK;
}

/* ---- rows in the store ---- */

static int
load_lead(const funnel_store *s, funnel_str id, rt_lead *l, int *found)
{
	const void *v;
	size_t n;
	int rc = s->get(s->ctx, RT_T_LEADS, id.ptr, id.len, &v, &n);
	*found = rc == FUNNEL_OK;
	if (rc == FUNNEL_ENOTFOUND) {
		memset(l, 0, sizeof *l);
		return FUNNEL_OK;
	}
	if (rc != FUNNEL_OK)
		return rc;
	return rt_lead_decode(v, n, l);
}

static int
save_lead(const funnel_store *s, funnel_str id, const rt_lead *l)
{
	uint8_t buf[LEAD_MAX];
	size_t n = lead_encode(l, buf);
	return s->put(s->ctx, RT_T_LEADS, id.ptr, id.len, buf, n);
}

static int
load_rep(const funnel_store *s, const char *name, rt_rep *r)
{
	const void *v;
	size_t n;
	int rc = s->get(s->ctx, RT_T_REPS, name, strlen(name), &v, &n);
	if (rc == FUNNEL_ENOTFOUND) {
		*r = (rt_rep){ .capacity = -1 };
		return FUNNEL_OK;
	}
	return rc != FUNNEL_OK ? rc : rt_rep_decode(v, n, r);
}

static int
save_rep(const funnel_store *s, const char *name, const rt_rep *r)
{
	uint8_t buf[REP_BYTES];
	rep_encode(r, buf);
	return s->put(s->ctx, RT_T_REPS, name, strlen(name), buf, sizeof buf);
}

/* Count a lead in (delta 1) or out of (-1) an owner's open leads. */
static int
count_open(const funnel_store *s, const char *owner, int delta)
{
	rt_rep r;
	int rc = load_rep(s, owner, &r);
	if (rc != FUNNEL_OK)
		return rc;
	if (delta > 0)
		r.open++;
	else if (r.open > 0)
		r.open--;
	return save_rep(s, owner, &r);
}

/* The lead leaves its owner, if it had one. */
static int
release(const funnel_store *s, rt_lead *l)
{
	if (!l->open)
		return FUNNEL_OK;
	l->open = 0;
	return count_open(s, l->owner, -1);
}

static int
timer_stop(const funnel_store *s, funnel_str id, rt_lead *l)
{
	uint8_t key[8 + 512];
	if (l->deadline == 0 || id.len > 512)
		return FUNNEL_OK;
	fp_put_be64(key, l->deadline);
	memcpy(key + 8, id.ptr, id.len);
	l->deadline = 0;
	return s->del(s->ctx, RT_T_DUE, key, 8 + id.len);
}

static int
timer_start(const funnel_store *s, funnel_str id, rt_lead *l, uint64_t deadline)
{
	uint8_t key[8 + 512], val[8];
	if (id.len > 512)
		return FUNNEL_OK;
	fp_put_be64(key, deadline);
	memcpy(key + 8, id.ptr, id.len);
	fp_put_be64(val, l->assign_seq);
	l->deadline = deadline;
	return s->put(s->ctx, RT_T_DUE, key, 8 + id.len, val, 8);
}

/* ---- text ---- */

/* Where to cut UTF-8 text s so that s[0..n) keeps whole characters: n,
 * or less when s[n] continues a character.  The texts here end up in
 * events, and the log refuses a string that is not valid UTF-8. */
static size_t
utf8_cut(const char *s, size_t n)
{
	while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
		n--;
	return n;
}

/* The bounded texts of the reasons (engine.h). */
void
rt_say(char *buf, size_t cap, const char *fmt, ...)
{
	size_t n = strlen(buf);
	if (n + 1 >= cap)
		return;
	va_list ap;
	va_start(ap, fmt);
	int w = vsnprintf(buf + n, cap - n, fmt, ap);
	va_end(ap);
	if (w >= 0 && (size_t)w >= cap - n && cap > 4)
		memcpy(buf + utf8_cut(buf, cap - 4), "...", 4);
}

void
rt_say_strs(char *buf, size_t cap, const char *const *parts, size_t nparts)
{
	size_t n = strlen(buf), w = 0;
	if (n + 1 >= cap)
		return;
	for (size_t i = 0; i < nparts; i++) {
		size_t len = strlen(parts[i]);
		if (n + w + 1 < cap)
			memcpy(buf + n + w, parts[i], n + w + len + 1 <= cap ? len : cap - 1 - n - w);
		w += len;
	}
	buf[n + w + 1 <= cap ? n + w : cap - 1] = 0;
	if (w >= cap - n && cap > 4)
		memcpy(buf + utf8_cut(buf, cap - 4), "...", 4);
}

/* Copy a counted string into a bounded C string (cut between characters). */
static void
copy_str(char *dst, size_t cap, funnel_str s)
{
	size_t n = s.len < cap - 1 ? s.len : utf8_cut(s.ptr, cap - 1);
	memcpy(dst, s.ptr, n);
	dst[n] = 0;
}

/* The same for a C string (not snprintf: hand-overs copy eight of them,
 * and snprintf's setup cost more than the rest of a rebuilt decision). */
static void
copy_cstr(char *dst, size_t cap, const char *s)
{
	copy_str(dst, cap, (funnel_str){ s, strlen(s) });
}

/* ---- lead fields ---- */

static const char *
lead_field(const rt_lead *l, const char *name)
{
	for (size_t i = 0; i < l->nfields; i++) {
		if (strcmp(l->fields[i].name, name) == 0)
			return l->fields[i].value;
	}
	return NULL;
}

/* Set (v != NULL) or clear a field. */
static void
set_field(rt_lead *l, const char *name, const char *v)
{
	size_t i = 0;
	while (i < l->nfields && strcmp(l->fields[i].name, name) != 0)
		i++;
	if (v == NULL) {
		if (i < l->nfields) {
			memmove(&l->fields[i], &l->fields[i + 1], (l->nfields - i - 1) * sizeof l->fields[0]);
			l->nfields--;
		}
		return;
	}
	if (i == l->nfields) {
		if (l->nfields == RT_MAX_FIELDS)
			return;
		l->nfields++;
		copy_cstr(l->fields[i].name, sizeof l->fields[i].name, name);
	}
	copy_cstr(l->fields[i].value, sizeof l->fields[i].value, v);
}

static void
capture(const rt_rules *r, rt_lead *l, const msgpack_object *data)
{
	char buf[RT_MAX_VALUE + 1];
	for (size_t f = 0; f < r->nfields; f++) {
		const msgpack_object *o = mp_find(data, r->fields[f]);
		if (o == NULL)
			continue;
		int t = rf_value_text(o, buf, sizeof buf);
		if (t >= 0)
			set_field(l, r->fields[f], t == 1 ? buf : NULL);
	}
}

/* ---- matching ---- */

static int
cond_holds(const rt_cond *c, const char *v)
{
	double num = 0;
	if (v == NULL)
		return 0;
	int isnum = rf_parse_number(v, &num) == 0;
	if (c->n_in > 0 && !rf_value_in(c->in, c->n_in, v, isnum, num))
		return 0;
	if ((c->has_min || c->has_max) && !isnum)
		return 0;
	return !(c->has_min && num < c->min) && !(c->has_max && num > c->max);
}

static int
rule_matches(const rt_rules *r, const rt_rule_def *ru, const rt_lead *l)
{
	for (size_t i = 0; i < ru->nconds; i++) {
		if (!cond_holds(&ru->conds[i], lead_field(l, r->fields[ru->conds[i].field])))
			return 0;
	}
	return 1;
}

static int
match(const rt_rules *r, const rt_lead *l)
{
	for (size_t i = 0; i < r->nrules; i++) {
		if (rule_matches(r, &r->rules[i], l))
			return (int)i;
	}
	return -1;
}

/* ---- the weighted round-robin ---- */

/* Why rep d is not eligible at ts (into why), or NULL when it is. */
static const char *
not_eligible(const rt_rep_def *d, const rt_rep *st, uint64_t ts, const char *exclude,
             char *why, size_t cap)
{
	int64_t capacity = st->capacity >= 0 ? st->capacity : d->capacity;
	if (!d->active)
		return "inactive";
	if (exclude != NULL && strcmp(d->name, exclude) == 0)
		return "the owner in breach";
	if (st->unavailable && (st->until == 0 || ts < st->until)) {
		if (st->until == 0)
			return "unavailable";
		char when[32];
		rf_iso_time(st->until, when, sizeof when);
		snprintf(why, cap, "unavailable until %s", when);
		return why;
	}
	if (capacity > 0 && st->open >= (uint64_t)capacity) {
		snprintf(why, cap, "at capacity %" PRId64, capacity);
		return why;
	}
	if (st->capacity == 0)
		return "capacity set to 0";
	return NULL;
}

/*
 * Smooth weighted round-robin over team t's eligible reps at ts (nginx):
 * each eligible rep's current weight grows by its weight; the highest
 * (the first in file order on a tie) is chosen and gives back the total.
 * Ineligible reps keep their current weight, so shares stay fair over
 * time.  *chosen is the rep's index in r->reps, or -1 when nobody is
 * eligible.  `why` receives the reason.  With commit, the new current
 * weights are written.
 */
enum { DECIDED_ROUTE = 1, DECIDED_ESCALATION = 2 };

/* What a committed pick changed in the rotation, to take it back: the
 * team, the chosen rep and the eligible reps (bit i: the team's rep i). */
typedef struct rotation {
	int team;                  /* -1: no pick was committed */
	int chosen;                /* index in the team */
	uint64_t eligible;
} rotation;

static int
pick(const rt_rules *r, const funnel_store *s, size_t t, uint64_t ts, const char *exclude,
     int commit, int *chosen, char *why, rotation *rot)
{
	const rt_team_def *team = &r->teams[t];
	rt_rep st[RT_MAX_TEAM_REPS];
	int elig[RT_MAX_TEAM_REPS];
	char eligible[RT_MAX_REASON + 1] = "", others[RT_MAX_REASON + 1] = "", tmp[64];
	int64_t total = 0;
	int best = -1;
	int rc;

	*chosen = -1;
	why[0] = 0;
	size_t n = team->nreps;
	for (size_t i = 0; i < n; i++) {
		const rt_rep_def *d = &r->reps[team->first_rep + i];
		if ((rc = load_rep(s, d->name, &st[i])) != FUNNEL_OK)
			return rc;
		const char *no = not_eligible(d, &st[i], ts, exclude, tmp, sizeof tmp);
		elig[i] = no == NULL;
		if (no != NULL) {
			const char *part[] = { others[0] ? ", " : "", d->name, " ", no };
			rt_say_strs(others, sizeof others, part, 4);
			continue;
		}
		const char *part[] = { eligible[0] ? ", " : "", d->name };
		rt_say_strs(eligible, sizeof eligible, part, 2);
		st[i].current += d->weight;
		total += d->weight;
		if (best < 0 || st[i].current > st[best].current)
			best = (int)i;
	}
	if (best < 0) {
		rt_say(why, RT_MAX_REASON + 1, "team %s: nobody eligible (%s)", team->name, others);
		return FUNNEL_OK;
	}
	const rt_rep_def *b = &r->reps[team->first_rep + best];
	rt_say(why, RT_MAX_REASON + 1, "weighted round-robin: %s had the highest current weight %"
	         PRId64 " (weight %ld) of eligible %s", b->name, st[best].current, b->weight, eligible);
	if (others[0])
		rt_say(why, RT_MAX_REASON + 1, "; not eligible: %s", others);
	st[best].current -= total;
	*chosen = (int)(team->first_rep + best);
	for (size_t i = 0; commit && i < n; i++) {
		if (elig[i] && (rc = save_rep(s, r->reps[team->first_rep + i].name, &st[i])) != FUNNEL_OK)
			return rc;
	}
	if (commit && rot != NULL) {
		rot->team = (int)t;
		rot->chosen = best;
		rot->eligible = 0;
		for (size_t i = 0; i < n; i++)
			rot->eligible |= (uint64_t)elig[i] << i;
	}
	return FUNNEL_OK;
}

/* Hand the lead to a new owner: counts move, the decision is kept in the
 * row and described in out (which the caller emits).  The strings must
 * not point into l. */
static int
hand_over(const funnel_store *s, rt_lead *l, const char *owner, const char *team, const char *rule,
          const char *reason, rt_outcome *out)
{
	int rc;
	if ((rc = release(s, l)) != FUNNEL_OK)
		return rc;
	copy_cstr(l->owner, sizeof l->owner, owner);
	copy_cstr(l->team, sizeof l->team, team);
	copy_cstr(l->rule, sizeof l->rule, rule);
	copy_cstr(l->reason, sizeof l->reason, reason);
	l->open = 1;
	l->assign_seq = 0;
	if ((rc = count_open(s, owner, 1)) != FUNNEL_OK)
		return rc;
	out->assign = 1;
	copy_cstr(out->owner, sizeof out->owner, owner);
	copy_cstr(out->team, sizeof out->team, team);
	copy_cstr(out->rule, sizeof out->rule, rule);
	copy_cstr(out->reason, sizeof out->reason, reason);
	out->escalation = l->escalations;
	return FUNNEL_OK;
}

/* lead.qualified: the first rule that matches, then its team's rotation;
 * the fallback queue otherwise. */
static int
route(const rt_rules *r, const funnel_store *s, const funnel_record *rec, rt_lead *l, rt_outcome *out,
      rotation *rot)
{
	char why[RT_MAX_REASON + 1];
	int chosen = -1, rc;
	int ri = match(r, l);

	l->escalations = 0;
	l->routed_seq = rec->seq;
	out->key = "assigned";
	if (ri < 0)
		return hand_over(s, l, r->fallback, r->fallback, "fallback", "no rule matched the lead",
		                 out);
	const rt_rule_def *ru = &r->rules[ri];
	if ((rc = pick(r, s, ru->team, rec->ts, NULL, 1, &chosen, why, rot)) != FUNNEL_OK)
		return rc;
	if (chosen < 0)
		return hand_over(s, l, r->fallback, r->fallback, ru->name, why, out);
	return hand_over(s, l, r->reps[chosen].name, r->teams[ru->team].name, ru->name, why, out);
}

/* lead.sla_breached for the assignment in force: the team's escalation. */
static int
escalate(const rt_rules *r, const funnel_store *s, const funnel_record *rec, rt_lead *l,
         rt_outcome *out, rotation *rot)
{
	char why[RT_MAX_REASON + 1], reason[RT_MAX_REASON + 1], prev[RT_MAX_NAME + 1];
	char rule[RT_MAX_NAME + 1];
	int ti = rt_team_index(r, l->team), chosen = -1, rc;

	if (ti < 0)
		return FUNNEL_OK;            /* a queue, or a team no longer in the rules */
	const rt_team_def *t = &r->teams[ti];
	if (t->esc == RT_ESC_NONE || l->escalations >= (uint32_t)t->esc_limit)
		return FUNNEL_OK;
	const char *to = NULL;
	why[0] = 0;
	if (t->esc == RT_ESC_NEXT_REP) {
		if ((rc = pick(r, s, (size_t)ti, rec->ts, l->owner, 1, &chosen, why, rot)) != FUNNEL_OK)
			return rc;
		if (chosen >= 0)
			to = r->reps[chosen].name;
	}
	if (to == NULL && t->lead != NULL && strcmp(t->lead, l->owner) != 0) {
		to = t->lead;
		if (why[0])
			rt_say(why, sizeof why, "; to the team lead");
		else
			snprintf(why, sizeof why, "to the team lead");
	}
	if (to == NULL)
		return FUNNEL_OK;
	/* hand_over rewrites the row: copies, not views into it */
	copy_cstr(prev, sizeof prev, l->owner);
	copy_cstr(rule, sizeof rule, l->rule);
	l->escalations++;
	l->routed_seq = rec->seq;
	reason[0] = 0;
	rt_say(reason, sizeof reason, "escalation %" PRIu32 " of %ld after %s missed the SLA: %s",
	         l->escalations, t->esc_limit, prev, why);
	out->key = "escalated";
	if ((rc = hand_over(s, l, to, t->name, rule, reason, out)) != FUNNEL_OK)
		return rc;
	copy_cstr(out->previous, sizeof out->previous, prev);
	return FUNNEL_OK;
}

/* lead.assigned, whoever sent it: the owner of record, and the timer. */
static int
assigned(const rt_rules *r, const funnel_store *s, const funnel_record *rec, rt_lead *l)
{
	funnel_str owner, v;
	uint64_t u;
	int rc;
	char name[RT_MAX_NAME + 1];

	if (mp_get_str(rec->data, "owner", &owner, NULL) != FUNNEL_OK || owner.len > RT_MAX_NAME)
		return FUNNEL_OK;
	/* The record of our own last decision, arriving after the lead left
	 * its owner (sent back, closed): the hand-over never took effect. */
	if (rec->has_cause && l->routed_seq != 0 && rec->cause == l->routed_seq && !l->open)
		return FUNNEL_OK;
	copy_str(name, sizeof name, owner);
	if (!(l->open && strcmp(l->owner, name) == 0)) {
		/* not the decision in hand: someone else's, or a later one */
		if ((rc = release(s, l)) != FUNNEL_OK)
			return rc;
		copy_cstr(l->owner, sizeof l->owner, name);
		l->open = 1;
		if ((rc = count_open(s, name, 1)) != FUNNEL_OK)
			return rc;
		int ri = rt_rep_index(r, name);
		copy_cstr(l->team, sizeof l->team, ri >= 0 ? r->teams[r->reps[ri].team].name : "");
		l->rule[0] = l->reason[0] = 0;
	}
	if (mp_get_str(rec->data, "team", &v, NULL) == FUNNEL_OK)
		copy_str(l->team, sizeof l->team, v);
	if (mp_get_str(rec->data, "rule", &v, NULL) == FUNNEL_OK)
		copy_str(l->rule, sizeof l->rule, v);
	if (mp_get_str(rec->data, "reason", &v, NULL) == FUNNEL_OK)
		copy_str(l->reason, sizeof l->reason, v);
	if (mp_get_u64(rec->data, "escalation", &u, NULL) == FUNNEL_OK && u <= UINT32_MAX)
		l->escalations = (uint32_t)u;
	if ((rc = timer_stop(s, rec->lead, l)) != FUNNEL_OK)
		return rc;
	l->assign_seq = rec->seq;
	/* The timer runs on the live clock, from ts.  An assignment whose
	 * event time is already older than the SLA when recorded (imported,
	 * backfilled) is not timed: nobody can follow it up in time any more
	 * (PROTOCOL.md §10). */
	uint64_t sla = rt_rules_sla_ns(r, l->team);
	if (sla == 0 || rec->ts - funnel_record_event_time(rec) >= sla)
		return FUNNEL_OK;
	return timer_start(s, rec->lead, l, rec->ts + sla);
}

/* data.until of rep.unavailable: ns since the epoch, or an RFC 3339 UTC
 * time ("2026-12-01T09:00:00Z").  0 when absent or unreadable (then the
 * rep is away until rep.available). */
static uint64_t
until_of(const msgpack_object *data)
{
	const msgpack_object *o = mp_find(data, "until");
	char buf[40];
	struct tm tm;
	if (o != NULL && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		return o->via.u64;
	if (o == NULL || o->type != MSGPACK_OBJECT_STR || o->via.str.size >= sizeof buf)
		return 0;
	memcpy(buf, o->via.str.ptr, o->via.str.size);
	buf[o->via.str.size] = 0;
	memset(&tm, 0, sizeof tm);
	const char *end = strptime(buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
	time_t t = end != NULL && *end == 0 ? timegm(&tm) : -1;
	return t > 0 ? (uint64_t)t * 1000000000u : 0;
}

static int
rep_event(const funnel_store *s, fp_evtype type, const funnel_record *rec)
{
	funnel_str name;
	char rep[RT_MAX_NAME + 1];
	rt_rep st;
	uint64_t u;
	int rc;

	if (mp_get_str(rec->data, "rep", &name, NULL) != FUNNEL_OK || name.len > RT_MAX_NAME)
		return FUNNEL_OK;
	copy_str(rep, sizeof rep, name);
	if ((rc = load_rep(s, rep, &st)) != FUNNEL_OK)
		return rc;
	if (type == FP_EV_REP_AVAILABLE) {
		st.unavailable = 0;
		st.until = 0;
	} else if (type == FP_EV_REP_UNAVAILABLE) {
		st.unavailable = 1;
		st.until = until_of(rec->data);
	}
	if (type != FP_EV_REP_UNAVAILABLE) {
		const msgpack_object *c = mp_find(rec->data, "capacity");
		if (c != NULL && c->type == MSGPACK_OBJECT_NIL)
			st.capacity = -1;
		else if (mp_get_u64(rec->data, "capacity", &u, NULL) == FUNNEL_OK && u <= 1000000)
			st.capacity = (int64_t)u;
	}
	return save_rep(s, rep, &st);
}

int
rt_counts(const funnel_record *rec)
{
	switch (fp_evspec_lookup(rec->type.ptr, rec->type.len)->type) {
	case FP_EV_REP_AVAILABLE:
	case FP_EV_REP_UNAVAILABLE:
	case FP_EV_REP_CAPACITY:
		return rec->data != NULL;
	case FP_EV_CAPTURED:
	case FP_EV_QUALIFIED:
	case FP_EV_ASSIGNED:
	case FP_EV_CONTACTED:
	case FP_EV_ACCEPTED:
	case FP_EV_REJECTED:
	case FP_EV_RECYCLED:
	case FP_EV_DISQUALIFIED:
	case FP_EV_DEAL_WON:
	case FP_EV_DEAL_LOST:
	case FP_EV_SLA_BREACHED:
	case FP_EV_ERASED:
		return rec->lead.ptr != NULL && rec->lead.len > 0;
	default:
		return 0;
	}
}

/* ---- decisions and taking them back ---- */

/* Undo bytes: kind (1), team (2, big-endian; 0xffff: no pick), chosen
 * rep in the team (1), eligible reps (8), the row existed (1), then the
 * row as it was before the decision. */
#define UNDO_HEAD 13

/*
 * Route or escalate the lead l (as found in the view) on rec, and write
 * into out the undo bytes that take the decision back: what the rotation
 * did and the row as it was.  Nothing to undo when no decision is made.
 */
static int
decide(const rt_rules *r, const funnel_store *s, const funnel_record *rec, rt_lead *l, int found,
       int kind, rt_outcome *out)
{
	rotation rot = { .team = -1 };
	uint8_t *u = out->undo;
	size_t n = lead_encode(l, u + UNDO_HEAD);
	int rc = kind == DECIDED_ROUTE ? route(r, s, rec, l, out, &rot)
	                               : escalate(r, s, rec, l, out, &rot);
	if (rc != FUNNEL_OK || !out->assign)
		return rc;
	u[0] = (uint8_t)kind;
	u[1] = rot.team < 0 ? 0xff : (uint8_t)(rot.team >> 8);
	u[2] = rot.team < 0 ? 0xff : (uint8_t)rot.team;
	u[3] = rot.team < 0 ? 0 : (uint8_t)rot.chosen;
	fp_put_be64(u + 4, rot.team < 0 ? 0 : rot.eligible);
	u[12] = (uint8_t)found;
	out->undo_len = UNDO_HEAD + n;
	return FUNNEL_OK;
}

/*
 * The log dropped our last decision on this lead: the record being
 * applied names the lead and came before the decision's lead.assigned
 * (a person acted first).  Put back what the decision changed: the owner's
 * open count, the rotation (as if the pick never happened, with the
 * weights of the rules in force) and the row as it was.  *kind: the
 * decision taken back (0: the bytes are not ours, nothing done).
 */
static int
take_back(const rt_rules *r, const funnel_store *s, funnel_str id, const uint8_t *u, size_t n,
          int *kind)
{
	rt_lead now, before;
	int found, rc;

	*kind = 0;
	if (n <= UNDO_HEAD || (u[0] != DECIDED_ROUTE && u[0] != DECIDED_ESCALATION) ||
	    rt_lead_decode(u + UNDO_HEAD, n - UNDO_HEAD, &before) != FUNNEL_OK)
		return FUNNEL_OK;
	*kind = u[0];
	if ((rc = load_lead(s, id, &now, &found)) != FUNNEL_OK)
		return rc;
	if (found && ((rc = release(s, &now)) != FUNNEL_OK || (rc = timer_stop(s, id, &now)) != FUNNEL_OK))
		return rc;
	size_t team = (size_t)u[1] << 8 | u[2];
	if (team < r->nteams) {
		const rt_team_def *t = &r->teams[team];
		uint64_t elig = fp_get_be64(u + 4);
		int64_t total = 0;
		for (size_t i = 0; i < t->nreps && i < 64; i++)
			if (elig >> i & 1)
				total += r->reps[t->first_rep + i].weight;
		for (size_t i = 0; i < t->nreps && i < 64; i++) {
			const rt_rep_def *d = &r->reps[t->first_rep + i];
			rt_rep st;
			if (!(elig >> i & 1))
				continue;
			if ((rc = load_rep(s, d->name, &st)) != FUNNEL_OK)
				return rc;
			st.current -= d->weight;
			if (i == u[3])
				st.current += total;
			if ((rc = save_rep(s, d->name, &st)) != FUNNEL_OK)
				return rc;
		}
	}
	if (before.open && (rc = count_open(s, before.owner, 1)) != FUNNEL_OK)
		return rc;
	if (before.deadline != 0 && (rc = timer_start(s, id, &before, before.deadline)) != FUNNEL_OK)
		return rc;
	if (!u[12])
		return s->del(s->ctx, RT_T_LEADS, id.ptr, id.len);
	return save_lead(s, id, &before);
}

/* Records that act on the lead's handling (ownership, follow-up, stage):
 * after one of them, a dropped decision is not made again. */
static int
handles_lead(const funnel_record *rec)
{
	switch (fp_evspec_lookup(rec->type.ptr, rec->type.len)->type) {
	case FP_EV_CAPTURED:
	case FP_EV_ACTIVITY:
	case FP_EV_SCORED:
	case FP_EV_SLA_BREACHED:   /* a stale breach: rt_apply ignores it */
		return 0;
	default:
		return rec->type.len < 2 || memcmp(rec->type.ptr, "x.", 2) != 0;
	}
}

int
rt_apply_dropped(const rt_rules *r, const funnel_store *s, const funnel_record *rec,
                 const void *dropped, size_t dropped_len, rt_outcome *out)
{
	rt_lead l;
	int kind = 0, found, rc;

	if (dropped != NULL && rec->lead.ptr != NULL && rec->lead.len > 0 &&
	    (rc = take_back(r, s, rec->lead, dropped, dropped_len, &kind)) != FUNNEL_OK)
		return rc;
	if ((rc = rt_apply(r, s, rec, out)) != FUNNEL_OK || kind == 0 || out->assign ||
	    handles_lead(rec))
		return rc;
	/* The decision was dropped for an event that does not handle the lead
	 * (it browsed, was scored): the reason for it still holds, so decide
	 * again on this record: a new decision, with this record as cause. */
	if ((rc = load_lead(s, rec->lead, &l, &found)) != FUNNEL_OK || !found)
		return rc;
	if (kind == DECIDED_ROUTE) {
		if (l.open || rec->stage.len != 3 || memcmp(rec->stage.ptr, "mql", 3) != 0)
			return FUNNEL_OK;
	} else if (!l.open || l.deadline != 0) {
		return FUNNEL_OK;
	}
	if ((rc = decide(r, s, rec, &l, found, kind, out)) != FUNNEL_OK)
		return rc;
	return out->assign ? save_lead(s, rec->lead, &l) : FUNNEL_OK;
}

int
rt_apply(const rt_rules *r, const funnel_store *s, const funnel_record *rec, rt_outcome *out)
{
	rt_lead l;
	int found, rc;
	uint64_t u;

	memset(out, 0, offsetof(rt_outcome, undo_len));   /* the undo buffer is big */
	out->undo_len = 0;
	if (!rt_counts(rec))
		return FUNNEL_OK;
	fp_evtype type = fp_evspec_lookup(rec->type.ptr, rec->type.len)->type;
	if (type == FP_EV_REP_AVAILABLE || type == FP_EV_REP_UNAVAILABLE || type == FP_EV_REP_CAPACITY)
		return rep_event(s, type, rec);
	if ((rc = load_lead(s, rec->lead, &l, &found)) != FUNNEL_OK)
		return rc;
	switch (type) {
	case FP_EV_CAPTURED:
		if (rec->data == NULL)
			return FUNNEL_OK;
		capture(r, &l, rec->data);
		break;
	case FP_EV_QUALIFIED:
		/* someone owns it already (a manager handed it over): the
		 * owner stays, and so does the owner's SLA timer */
		if (l.open && r->keep_owner)
			return FUNNEL_OK;
		if ((rc = timer_stop(s, rec->lead, &l)) != FUNNEL_OK ||
		    (rc = decide(r, s, rec, &l, found, DECIDED_ROUTE, out)) != FUNNEL_OK)
			return rc;
		break;
	case FP_EV_ASSIGNED:
		if (rec->data == NULL)
			return FUNNEL_OK;
		if ((rc = assigned(r, s, rec, &l)) != FUNNEL_OK)
			return rc;
		break;
	case FP_EV_CONTACTED:
	case FP_EV_ACCEPTED:
		if (!found || l.deadline == 0)
			return FUNNEL_OK;
		if ((rc = timer_stop(s, rec->lead, &l)) != FUNNEL_OK)
			return rc;
		break;
	case FP_EV_SLA_BREACHED:
		if (!found || l.deadline == 0 || rec->data == NULL ||
		    mp_get_u64(rec->data, "assignment", &u, NULL) != FUNNEL_OK || u != l.assign_seq)
			return FUNNEL_OK;     /* followed up, reassigned, or not ours: stale */
		l.breaches++;
		if ((rc = timer_stop(s, rec->lead, &l)) != FUNNEL_OK ||
		    (rc = decide(r, s, rec, &l, found, DECIDED_ESCALATION, out)) != FUNNEL_OK)
			return rc;
		break;
	case FP_EV_ERASED:
		if (!found)
			return FUNNEL_OK;
		if ((rc = release(s, &l)) != FUNNEL_OK || (rc = timer_stop(s, rec->lead, &l)) != FUNNEL_OK)
			return rc;
		return s->del(s->ctx, RT_T_LEADS, rec->lead.ptr, rec->lead.len);
	default:   /* rejected, recycled, disqualified, won, lost: the lead leaves its owner */
		if (!found)
			return FUNNEL_OK;
		if ((rc = release(s, &l)) != FUNNEL_OK || (rc = timer_stop(s, rec->lead, &l)) != FUNNEL_OK)
			return rc;
		break;
	}
	return save_lead(s, rec->lead, &l);
}

int
rt_explain_match(const rt_rules *r, const funnel_store *s, const rt_lead *lead, uint64_t ts,
                 int *rule_index, char *why)
{
	int chosen;
	*rule_index = match(r, lead);
	if (*rule_index < 0) {
		snprintf(why, RT_MAX_REASON + 1, "no rule matches: the fallback queue %s", r->fallback);
		return FUNNEL_OK;
	}
	return pick(r, s, r->rules[*rule_index].team, ts, NULL, 0, &chosen, why, NULL);
}
