/*
 * clients/routing/engine.h - what rules.c (the parser) and engine.c (the
 * decisions) share inside the routing engine: the compiled rules.  Not
 * part of the contract (routing.h).
 */
#ifndef FUNNEL_ROUTING_ENGINE_H
#define FUNNEL_ROUTING_ENGINE_H

#include "routing.h"
#include "rulesfile.h"

enum { RT_ESC_NONE, RT_ESC_NEXT_REP, RT_ESC_TEAM_LEAD };

typedef struct rt_rep_def {
	char *name;
	size_t team;               /* index in teams */
	long weight;               /* >= 1 */
	long capacity;             /* 0: no cap */
	int active;
} rt_rep_def;

typedef struct rt_team_def {
	char *name;
	uint64_t sla_ns;           /* 0: no SLA */
	char *lead;                /* team lead, or NULL */
	int esc;                   /* RT_ESC_* */
	long esc_limit;
	size_t first_rep, nreps;   /* its reps: reps[first_rep .. first_rep + nreps) */
} rt_team_def;

/* One condition on a lead field: one of `in` (if any), and the bounds. */
typedef struct rt_cond {
	size_t field;              /* index in fields */
	rf_value *in;
	size_t n_in;
	int has_min, has_max;
	double min, max;
} rt_cond;

typedef struct rt_rule_def {
	char *name;
	size_t team;
	rt_cond *conds;
	size_t nconds;
} rt_rule_def;

struct rt_rules {
	char *text;
	size_t len;
	char hash_hex[65];
	char *version;
	rt_team_def *teams;
	size_t nteams;
	rt_rep_def *reps;          /* grouped by team, in file order */
	size_t nreps;
	rt_rule_def *rules;
	size_t nrules;
	char *fallback;
	uint64_t fallback_sla_ns;
	int keep_owner;            /* routing.keep_owner: a lead qualified while owned keeps its owner */
	char *fields[RT_MAX_FIELDS];
	size_t nfields;
};

/* The index of the team / rep of that name in r, or -1. */
int rt_team_index(const rt_rules *r, const char *name);
int rt_rep_index(const rt_rules *r, const char *name);

/* Append to the bounded text buf (cap bytes, NUL-terminated): an
 * overflow ends it with "..." after the last whole UTF-8 character that
 * fits (a full buf takes nothing more).  rt_say_strs() appends nparts C
 * strings as rt_say(buf, cap, "%s%s...", parts[0], parts[1], ...) would,
 * byte for byte, without vsnprintf: pick() lists every rep of a team so,
 * and vsnprintf's setup cost more than the rest of a rebuilt decision. */
void rt_say(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void rt_say_strs(char *buf, size_t cap, const char *const *parts, size_t nparts);

#endif
