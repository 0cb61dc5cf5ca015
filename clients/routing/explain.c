/*
 * clients/routing/explain.c - `funnel-routing explain LEAD`: the routing
 * decision as the view holds it (the rule that matched, the owner and the
 * reason recorded with it: who was eligible, why this rep), the SLA timer
 * and its breaches, and what the rules would decide for the lead now.
 *
 * Reads the view in a read-only transaction: safe while the service runs.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <lmdb.h>

#include "funnel/funnel.h"
#include "funnel/service.h"
#include "router.h"
#include "rulesfile.h"

static void
print_json(const char *id, const rt_lead *l, uint64_t now, const rt_rules *r, int rule_now,
           const char *why_now)
{
	cJSON *o = cJSON_CreateObject();
	char when[32];
	cJSON_AddStringToObject(o, "lead", id);
	cJSON_AddStringToObject(o, "owner", l->owner);
	cJSON_AddStringToObject(o, "team", l->team);
	cJSON_AddStringToObject(o, "rule", l->rule);
	cJSON_AddStringToObject(o, "reason", l->reason);
	cJSON_AddBoolToObject(o, "open", l->open);
	cJSON_AddNumberToObject(o, "routed_seq", (double)l->routed_seq);
	cJSON_AddNumberToObject(o, "assignment_seq", (double)l->assign_seq);
	cJSON_AddNumberToObject(o, "escalations", l->escalations);
	cJSON_AddNumberToObject(o, "breaches", l->breaches);
	if (l->deadline) {
		rf_iso_time(l->deadline, when, sizeof when);
		cJSON_AddStringToObject(o, "sla_deadline", when);
		cJSON_AddNumberToObject(o, "sla_deadline_ns", (double)l->deadline);
		cJSON_AddBoolToObject(o, "sla_passed", now >= l->deadline);
	} else {
		cJSON_AddNullToObject(o, "sla_deadline");
	}
	cJSON *f = cJSON_AddObjectToObject(o, "fields");
	for (size_t i = 0; i < l->nfields; i++)
		cJSON_AddStringToObject(f, l->fields[i].name, l->fields[i].value);
	cJSON *n = cJSON_AddObjectToObject(o, "now");
	if (rule_now >= 0) {
		cJSON_AddStringToObject(n, "rule", rt_rule_name(r, (size_t)rule_now));
		cJSON_AddStringToObject(n, "team", rt_rule_team(r, (size_t)rule_now));
	} else {
		cJSON_AddNullToObject(n, "rule");
	}
	cJSON_AddStringToObject(n, "would", why_now);
	char *s = cJSON_Print(o);
	if (s)
		puts(s);
	free(s);
	cJSON_Delete(o);
}

static void
print_human(const char *id, const rt_lead *l, uint64_t now, const rt_rules *r, int rule_now,
            const char *why_now)
{
	char when[32];
	if (l->owner[0])
		printf("lead %s: owner %s (team %s), %s\n", id, l->owner, l->team[0] ? l->team : "-",
		       l->open ? "open" : "no longer open (sent back, closed or won)");
	else
		printf("lead %s: not routed\n", id);
	if (l->rule[0])
		printf("  rule matched:  %s\n", l->rule);
	if (l->reason[0])
		printf("  why this rep:  %s\n", l->reason);
	if (l->routed_seq)
		printf("  routed on seq %" PRIu64 "%s\n", l->routed_seq,
		       l->assign_seq ? "" : "; the lead.assigned is not back yet");
	if (l->assign_seq)
		printf("  assignment:    seq %" PRIu64 "\n", l->assign_seq);
	if (l->deadline) {
		rf_iso_time(l->deadline, when, sizeof when);
		if (now >= l->deadline)
			printf("  SLA:           deadline %s, passed %" PRIu64 " min ago\n", when,
			       (now - l->deadline) / 60000000000u);
		else
			printf("  SLA:           deadline %s, %" PRIu64 " min left\n", when,
			       (l->deadline - now) / 60000000000u);
	} else {
		printf("  SLA:           no timer running\n");
	}
	printf("  breaches %" PRIu32 ", escalations %" PRIu32 "\n", l->breaches, l->escalations);
	if (l->nfields) {
		printf("  fields:       ");
		for (size_t i = 0; i < l->nfields; i++)
			printf(" %s=%s", l->fields[i].name, l->fields[i].value);
		printf("\n");
	}
	if (rule_now >= 0)
		printf("  if routed now: rule %s (team %s): %s\n", rt_rule_name(r, (size_t)rule_now),
		       rt_rule_team(r, (size_t)rule_now), why_now);
	else
		printf("  if routed now: %s\n", why_now);
}

int
routing_explain(const routing_args *a, const char *id)
{
	rt_rules *rules = NULL;
	funnel_view_reader v = { 0 };
	rt_lead *l = calloc(1, sizeof *l);
	char err[512], why[RT_MAX_REASON + 1];
	uint64_t now = 0;
	int rc, status = 1, rule_now = -1;

	if (l == NULL)
		return 1;
	if (rt_rules_load(a->c.rules, &rules, err, sizeof err) != FUNNEL_OK) {
		fprintf(stderr, "funnel-routing: %s\n", err);
		free(l);
		return 2;
	}
	routing_now(a->clock_file, &now);
	rc = funnel_view_reader_open(&v, a->c.view, rt_table_names, err, sizeof err);
	if (rc == FUNNEL_ESTORAGE) {
		fprintf(stderr, "funnel-routing: cannot open the view %s: %s\n", a->c.view, err);
		goto out;
	}
	if (rc != FUNNEL_OK) {
		fprintf(stderr, "funnel-routing: %s is not a routing view\n", a->c.view);
		goto out;
	}
	const void *row;
	size_t rowlen;
	if ((rc = v.store.get(v.store.ctx, RT_T_LEADS, id, strlen(id), &row, &rowlen)) ==
	    FUNNEL_ENOTFOUND) {
		fprintf(stderr, "funnel-routing: lead %s is not in the routing view\n", id);
		goto out;
	}
	if (rc != FUNNEL_OK || rt_lead_decode(row, rowlen, l) != FUNNEL_OK) {
		fprintf(stderr, "funnel-routing: the view's row of %s does not decode\n", id);
		goto out;
	}
	if (rt_explain_match(rules, &v.store, l, now, &rule_now, why) != FUNNEL_OK)
		snprintf(why, sizeof why, "(cannot read the reps)");
	if (a->c.json)
		print_json(id, l, now, rules, rule_now, why);
	else
		print_human(id, l, now, rules, rule_now, why);
	status = 0;
out:
	funnel_view_reader_close(&v);
	rt_rules_destroy(&rules);
	free(l);
	return status;
}
