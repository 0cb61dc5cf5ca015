/*
 * clients/scoring/whatif.c - `funnel-scoring what-if NEW.yaml`: replay the
 * whole log under the current definition (--rules) and a new one, side by
 * side, and close the loop: how the leads each definition qualified
 * actually ended.  Read-only: sends nothing, touches no view.
 *
 * Model: both definitions see the same records; a definition "qualifies"
 * a lead when the engine says qualify for it.  The engine reads one thing
 * of a record besides its type, data and ts: the lead's stage, since only
 * a lead in inquiry or nurture qualifies.  In the log that stage is what
 * the definition then in force made it (a lead is mql because it was
 * qualified), so each definition sees the stage it would have made:
 *  - a lead the definition qualified is mql for it until the log moves
 *    the lead on (accepted and beyond, sent back, disqualified, erased);
 *    so it does not qualify again while still an MQL, as funneld refuses
 *    a second lead.qualified for an mql lead;
 *  - the current definition (--rules) otherwise sees the log's stage as
 *    it is, exactly what the live service sees: its counts are the
 *    lead.qualified the service recorded running these rules over this
 *    log (tests/integration/test_scoring.py holds them equal, lead by
 *    lead), its own lead.qualified landing later than the decision
 *    included;
 *  - a new definition (another file) sees the log's mql as inquiry, since
 *    the log's MQLs are the current definition's doing.  A new file with
 *    the current file's exact bytes is the current definition.
 * Outcomes (accepted, recycled/rejected with reason, won with amount,
 * lost) are what the log says happened to the lead, whichever definition
 * put it in sales' hands.
 *
 * Per-lead state lives in a temporary LMDB environment (deleted at the
 * end), so memory stays bounded whatever the number of leads.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <lmdb.h>

#include "funnel/funnel.h"
#include "model.h"
#include "mp.h"
#include "scoring.h"

#define MAX_REASONS 64
#define COMMIT_EVERY 20000

/* What the log says happened to one lead, and which definitions
 * qualified it.  Stored as raw bytes in the temporary environment. */
typedef struct lead_sum {
	uint8_t captured;
	uint8_t qualified[2];          /* by current, by new */
	uint8_t mql[2];                /* an MQL for that definition, not yet moved on */
	uint32_t quals[2];             /* lead.qualified each would have sent */
	uint8_t accepted, won, lost, recycled;
	double revenue;
	char reason[48];               /* last recycle/reject reason */
} lead_sum;

typedef struct def_totals {
	uint64_t leads;                /* leads qualified */
	uint64_t qualifications;       /* lead.qualified it would have sent */
	uint64_t accepted, won, lost, recycled;
	double revenue;
	uint64_t reason_count[MAX_REASONS];
	uint64_t only;                 /* leads only this definition qualified */
} def_totals;

typedef struct whatif {
	const sc_rules *rules[2];
	int log_stage[2];              /* 1: the definition sees the log's mql as mql */
	sc_lead *st[2];
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi sum, state[2];
	msgpack_sbuffer sb;
	uint64_t records, last_seq, txn_records;
	def_totals tot[2];
	char *reasons[MAX_REASONS];
	size_t nreasons;
	char why[160];                 /* what stopped the walk, if it was not the log */
} whatif;

static int
txn_renew(whatif *w)
{
	int rc = 0;
	if (w->txn)
		rc = mdb_txn_commit(w->txn);
	w->txn = NULL;
	if (rc == 0)
		rc = mdb_txn_begin(w->env, NULL, 0, &w->txn);
	w->txn_records = 0;
	return rc;
}

static int
open_temp(whatif *w, char *dir, size_t dirlen)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, dirlen, "%s/funnel-whatif-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL)
		return errno;
	int rc = mdb_env_create(&w->env);
	if (rc)
		return rc;
	mdb_env_set_maxdbs(w->env, 4);
	mdb_env_set_mapsize(w->env, (size_t)64 << 30);
	if ((rc = mdb_env_open(w->env, dir, MDB_NOSYNC | MDB_NOTLS, 0600)) != 0)
		return rc;
	if ((rc = txn_renew(w)) != 0)
		return rc;
	if ((rc = mdb_dbi_open(w->txn, "sum", MDB_CREATE, &w->sum)) ||
	    (rc = mdb_dbi_open(w->txn, "current", MDB_CREATE, &w->state[0])) ||
	    (rc = mdb_dbi_open(w->txn, "new", MDB_CREATE, &w->state[1])))
		return rc;
	return 0;
}

static void
close_temp(whatif *w, const char *dir)
{
	char path[4200];
	if (w->txn)
		mdb_txn_abort(w->txn);
	if (w->env)
		mdb_env_close(w->env);
	snprintf(path, sizeof path, "%s/data.mdb", dir);
	unlink(path);
	snprintf(path, sizeof path, "%s/lock.mdb", dir);
	unlink(path);
	rmdir(dir);
}

static int
str_eq(funnel_str s, const char *lit)
{
	return s.ptr && s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0;
}

/* The stage definition d would have given the lead at this record (the
 * model at the top), and whether the lead is still its MQL. */
static funnel_str
def_stage(const whatif *w, int d, const funnel_record *rec, lead_sum *sum)
{
	static const funnel_str mql = { "mql", 3 }, inquiry = { "inquiry", 7 };
	int stage = rec->stage.ptr ? fp_stage_parse(rec->stage.ptr, rec->stage.len) : -1;
	int type = fp_evspec_lookup(rec->type.ptr, rec->type.len)->type;
	int marketing = stage == FP_STAGE_INQUIRY || stage == FP_STAGE_NURTURE ||
	                stage == FP_STAGE_MQL;
	/* sales took the lead, sent it back, or it is gone: no longer an MQL */
	if (!marketing || type == FP_EV_RECYCLED || type == FP_EV_REJECTED)
		sum->mql[d] = 0;
	if (sum->mql[d])
		return mql;
	if (stage == FP_STAGE_MQL && !w->log_stage[d])
		return inquiry;
	return rec->stage;
}

/* Apply one record under definition d.  Returns an LMDB or funnel code. */
static int
apply_def(whatif *w, int d, const funnel_record *in, lead_sum *sum)
{
	MDB_val k = { in->lead.len, (void *)in->lead.ptr }, v;
	funnel_record rec = *in;
	sc_outcome out;
	int rc;

	sc_lead_reset(w->st[d]);
	rc = mdb_get(w->txn, w->state[d], &k, &v);
	if (rc == 0 && sc_lead_decode(w->rules[d], v.mv_data, v.mv_size, w->st[d]) != FUNNEL_OK)
		return FUNNEL_EMALFORMED;
	if (rc != 0 && rc != MDB_NOTFOUND)
		return rc;
	rec.stage = def_stage(w, d, in, sum);
	if ((rc = sc_apply(w->rules[d], w->st[d], &rec, &out)) != FUNNEL_OK)
		return rc;
	if (out.qualify) {
		sum->qualified[d] = 1;
		sum->mql[d] = 1;
		if (sum->quals[d] < UINT32_MAX)
			sum->quals[d]++;
		w->tot[d].qualifications++;
	}
	if (sc_lead_is_empty(w->st[d])) {
		rc = mdb_del(w->txn, w->state[d], &k, NULL);
		return rc == MDB_NOTFOUND ? 0 : rc;
	}
	w->sb.size = 0;
	if ((rc = sc_lead_encode(w->rules[d], w->st[d], &w->sb)) != FUNNEL_OK)
		return rc;
	v.mv_data = w->sb.data;
	v.mv_size = w->sb.size;
	return mdb_put(w->txn, w->state[d], &k, &v, 0);
}

static int
apply_record(whatif *w, const funnel_record *in)
{
	MDB_val k = { in->lead.len, (void *)in->lead.ptr }, v;
	lead_sum sum;
	const funnel_record rec = *in;
	funnel_str s;
	int rc;

	if (rec.lead.ptr == NULL || rec.lead.len == 0)
		return 0;
	memset(&sum, 0, sizeof sum);
	rc = mdb_get(w->txn, w->sum, &k, &v);
	if (rc == 0 && v.mv_size == sizeof sum)
		memcpy(&sum, v.mv_data, sizeof sum);
	else if (rc != 0 && rc != MDB_NOTFOUND)
		return rc;

	for (int d = 0; d < 2; d++)
		if ((rc = apply_def(w, d, &rec, &sum)) != 0)
			return rc;

	if (str_eq(rec.type, "lead.captured")) {
		sum.captured = 1;
	} else if (str_eq(rec.type, "lead.accepted")) {
		sum.accepted = 1;
	} else if (str_eq(rec.type, "lead.recycled") || str_eq(rec.type, "lead.rejected")) {
		sum.recycled = 1;
		if (rec.data && mp_get_str(rec.data, "reason", &s, NULL) == FUNNEL_OK)
			snprintf(sum.reason, sizeof sum.reason, "%.*s", (int)s.len, s.ptr);
	} else if (str_eq(rec.type, "deal.won")) {
		double amount = 0;
		sum.won = 1;
		if (rec.data && mp_get_f64(rec.data, "amount", &amount, NULL) == FUNNEL_OK)
			sum.revenue += amount;
	} else if (str_eq(rec.type, "deal.lost")) {
		sum.lost = 1;
	}
	v.mv_data = &sum;
	v.mv_size = sizeof sum;
	return mdb_put(w->txn, w->sum, &k, &v, 0);
}

/* funnel_replay_each callback: one record under both definitions. */
static int
whatif_record(const funnel_record *r, void *ctx)
{
	whatif *w = ctx;
	int rc = apply_record(w, r);
	if (rc == 0 && ++w->txn_records >= COMMIT_EVERY)
		rc = txn_renew(w);
	if (rc != 0) {
		snprintf(w->why, sizeof w->why, "%s", rc < 0 ? mdb_strerror(rc) : funnel_strerror(rc));
		return FUNNEL_ESTORAGE;
	}
	w->records++;
	w->last_seq = r->seq;
	return FUNNEL_OK;
}

static size_t
reason_index(whatif *w, const char *reason)
{
	for (size_t i = 0; i < w->nreasons; i++)
		if (strcmp(w->reasons[i], reason) == 0)
			return i;
	if (w->nreasons == MAX_REASONS - 1)
		return MAX_REASONS - 1;      /* "other" */
	w->reasons[w->nreasons] = strdup(reason);
	return w->nreasons++;
}

/* One pass over the per-lead summaries: totals and flips, and with
 * --leads each lead either definition qualified into by_lead (else NULL). */
static int
tally(whatif *w, const scoring_args *a, uint64_t *captured, cJSON *flips[2], cJSON *by_lead)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_cursor_open(w->txn, w->sum, &cur);
	size_t listed[2] = { 0, 0 };

	if (rc)
		return rc;
	*captured = 0;
	for (int op = MDB_FIRST; mdb_cursor_get(cur, &k, &v, op) == 0; op = MDB_NEXT) {
		lead_sum s;
		if (v.mv_size != sizeof s)
			continue;
		memcpy(&s, v.mv_data, sizeof s);
		*captured += s.captured;
		if (by_lead != NULL && (s.quals[0] || s.quals[1])) {
			char lead[512];
			snprintf(lead, sizeof lead, "%.*s", (int)k.mv_size, (char *)k.mv_data);
			cJSON *row = cJSON_CreateObject();
			cJSON_AddStringToObject(row, "lead", lead);
			cJSON_AddNumberToObject(row, "current", s.quals[0]);
			cJSON_AddNumberToObject(row, "new", s.quals[1]);
			cJSON_AddItemToArray(by_lead, row);
		}
		for (int d = 0; d < 2; d++) {
			if (!s.qualified[d])
				continue;
			def_totals *t = &w->tot[d];
			t->leads++;
			t->accepted += s.accepted;
			t->won += s.won;
			t->lost += s.lost;
			t->revenue += s.revenue;
			if (s.recycled) {
				t->recycled++;
				t->reason_count[reason_index(w, s.reason[0] ? s.reason : "(none)")]++;
			}
			if (!s.qualified[1 - d]) {
				t->only++;
				if (listed[d] < (size_t)a->flips) {
					char lead[512];
					snprintf(lead, sizeof lead, "%.*s", (int)k.mv_size, (char *)k.mv_data);
					cJSON_AddItemToArray(flips[d], cJSON_CreateString(lead));
					listed[d]++;
				}
			}
		}
	}
	mdb_cursor_close(cur);
	return 0;
}

static void
print_row_u(const char *label, uint64_t a, uint64_t b)
{
	printf("  %-34s %12" PRIu64 " %12" PRIu64 " %+12" PRId64 "\n", label, a, b,
	       (int64_t)(b - a));
}

static double
pct(uint64_t n, uint64_t d)
{
	return d ? 100.0 * (double)n / (double)d : 0.0;
}

static cJSON *
totals_json(const whatif *w, int d, uint64_t captured, const char *file, cJSON *flips)
{
	const def_totals *t = &w->tot[d];
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "file", file);
	cJSON_AddStringToObject(o, "version", sc_rules_version(w->rules[d]));
	cJSON_AddStringToObject(o, "hash", sc_rules_hash_hex(w->rules[d]));
	cJSON_AddNumberToObject(o, "mql_leads", (double)t->leads);
	cJSON_AddNumberToObject(o, "mql_rate", captured ? (double)t->leads / (double)captured : 0);
	cJSON_AddNumberToObject(o, "qualifications", (double)t->qualifications);
	cJSON_AddNumberToObject(o, "accepted", (double)t->accepted);
	cJSON_AddNumberToObject(o, "recycled", (double)t->recycled);
	cJSON *r = cJSON_AddObjectToObject(o, "recycle_reasons");
	for (size_t i = 0; i < MAX_REASONS; i++)
		if (t->reason_count[i])
			cJSON_AddNumberToObject(r, i < w->nreasons ? w->reasons[i] : "(other)",
			                        (double)t->reason_count[i]);
	cJSON_AddNumberToObject(o, "won", (double)t->won);
	cJSON_AddNumberToObject(o, "revenue", t->revenue);
	cJSON_AddNumberToObject(o, "lost", (double)t->lost);
	cJSON_AddNumberToObject(o, "only_this_definition", (double)t->only);
	cJSON_AddItemToObject(o, "only_this_definition_leads", flips);
	return o;
}

int
scoring_whatif(const scoring_args *a, const char *new_rules)
{
	whatif w;
	sc_rules *rules[2] = { NULL, NULL };
	funnel_query *q = NULL;
	char err[512], dir[4096] = "";
	int status = 1, rc;

	memset(&w, 0, sizeof w);
	msgpack_sbuffer_init(&w.sb);
	const char *files[2] = { a->c.rules, new_rules };
	for (int d = 0; d < 2; d++) {
		if (sc_rules_load(files[d], &rules[d], err, sizeof err) != FUNNEL_OK) {
			fprintf(stderr, "funnel-scoring: %s\n", err);
			status = 2;
			goto out;
		}
		w.rules[d] = rules[d];
		if ((w.st[d] = sc_lead_new(rules[d])) == NULL)
			goto out;
	}
	/* the log's stages are the current definition's doing (see the top) */
	w.log_stage[0] = 1;
	w.log_stage[1] = memcmp(sc_rules_hash(rules[0]), sc_rules_hash(rules[1]),
	                        FUNNEL_HASH_BYTES) == 0;
	if ((rc = open_temp(&w, dir, sizeof dir)) != 0) {
		fprintf(stderr, "funnel-scoring: cannot make a temporary store in %s: %s\n", dir,
		        rc > 0 && rc < 200 ? strerror(rc) : mdb_strerror(rc));
		goto out;
	}
	if ((rc = funnel_query_new(&q, a->c.query, 10000)) != FUNNEL_OK)
		goto out;

	funnel_replay_req req = { .from = 1, .limit = 10000 };
	if ((rc = funnel_replay_each(q, &req, whatif_record, &w)) != FUNNEL_OK) {
		if (w.why[0])
			fprintf(stderr, "funnel-scoring: what-if at seq %" PRIu64 ": %s\n",
			        w.last_seq + 1, w.why);
		else
			fprintf(stderr, "funnel-scoring: reading the log: %s %s\n", funnel_errname(rc),
			        funnel_query_error(q)->message);
		goto out;
	}

	uint64_t captured = 0;
	cJSON *flips[2] = { cJSON_CreateArray(), cJSON_CreateArray() };
	cJSON *by_lead = a->leads ? cJSON_CreateArray() : NULL;
	if ((rc = tally(&w, a, &captured, flips, by_lead)) != 0) {
		cJSON_Delete(flips[0]);
		cJSON_Delete(flips[1]);
		cJSON_Delete(by_lead);
		goto out;
	}
	if (a->c.json) {
		cJSON *o = cJSON_CreateObject();
		cJSON_AddNumberToObject(o, "records", (double)w.records);
		cJSON_AddNumberToObject(o, "last_seq", (double)w.last_seq);
		cJSON_AddNumberToObject(o, "leads_captured", (double)captured);
		cJSON_AddItemToObject(o, "current", totals_json(&w, 0, captured, files[0], flips[0]));
		cJSON_AddItemToObject(o, "new", totals_json(&w, 1, captured, files[1], flips[1]));
		if (by_lead != NULL)
			cJSON_AddItemToObject(o, "leads", by_lead);
		char *s = cJSON_PrintUnformatted(o);
		if (s)
			puts(s);
		free(s);
		cJSON_Delete(o);
	} else {
		const def_totals *c = &w.tot[0], *n = &w.tot[1];
		printf("what-if over the whole log: %" PRIu64 " records (seq 1..%" PRIu64 "), %"
		       PRIu64 " leads captured\n", w.records, w.last_seq, captured);
		printf("  current: \"%s\" (%s)\n  new:     \"%s\" (%s)\n\n", sc_rules_version(rules[0]),
		       files[0], sc_rules_version(rules[1]), files[1]);
		printf("  %-34s %12s %12s %12s\n", "", "current", "new", "change");
		print_row_u("MQLs (leads qualified)", c->leads, n->leads);
		printf("  %-34s %11.1f%% %11.1f%% %+11.1f%%\n", "MQL rate (of leads captured)",
		       pct(c->leads, captured), pct(n->leads, captured),
		       pct(n->leads, captured) - pct(c->leads, captured));
		print_row_u("lead.qualified events", c->qualifications, n->qualifications);
		printf("\n  how the qualified leads ended:\n");
		print_row_u("accepted by sales", c->accepted, n->accepted);
		printf("  %-34s %11.1f%% %11.1f%%\n", "acceptance rate (of MQLs)",
		       pct(c->accepted, c->leads), pct(n->accepted, n->leads));
		print_row_u("recycled or rejected", c->recycled, n->recycled);
		for (size_t i = 0; i < MAX_REASONS; i++)
			if (c->reason_count[i] || n->reason_count[i]) {
				char label[80];
				snprintf(label, sizeof label, "  reason: %s",
				         i < w.nreasons ? w.reasons[i] : "(other)");
				print_row_u(label, c->reason_count[i], n->reason_count[i]);
			}
		print_row_u("won", c->won, n->won);
		printf("  %-34s %12.2f %12.2f %+12.2f\n", "revenue won", c->revenue, n->revenue,
		       n->revenue - c->revenue);
		print_row_u("lost", c->lost, n->lost);
		for (int d = 0; d < 2; d++) {
			printf("\n  leads only the %s definition qualifies: %" PRIu64 "%s",
			       d ? "new" : "current", w.tot[d].only,
			       cJSON_GetArraySize(flips[d]) ? "\n   " : "\n");
			cJSON *it;
			cJSON_ArrayForEach(it, flips[d])
				printf(" %s", it->valuestring);
			if ((uint64_t)cJSON_GetArraySize(flips[d]) < w.tot[d].only)
				printf(" ...");
			if (cJSON_GetArraySize(flips[d]))
				printf("\n");
		}
		if (by_lead != NULL) {
			printf("\n  lead.qualified by lead:\n  %-34s %12s %12s\n", "lead", "current", "new");
			cJSON *it;
			cJSON_ArrayForEach(it, by_lead)
				printf("  %-34s %12d %12d\n", cJSON_GetObjectItem(it, "lead")->valuestring,
				       cJSON_GetObjectItem(it, "current")->valueint,
				       cJSON_GetObjectItem(it, "new")->valueint);
		}
		cJSON_Delete(flips[0]);
		cJSON_Delete(flips[1]);
		cJSON_Delete(by_lead);
	}
	status = 0;
out:
	funnel_query_destroy(&q);
	if (dir[0] && strstr(dir, "XXXXXX") == NULL)
		close_temp(&w, dir);
	for (size_t i = 0; i < w.nreasons; i++)
		free(w.reasons[i]);
	for (int d = 0; d < 2; d++) {
		sc_lead_destroy(&w.st[d]);
		sc_rules_destroy(&rules[d]);
	}
	msgpack_sbuffer_destroy(&w.sb);
	return status;
}
