/*
 * clients/scoring/apply.c - funnel-scoring as a service (svcmain.h): its
 * rules section, the engine set up from it, and apply(): the engine on
 * the lead's row of the view (sc_apply_row over the runtime's store),
 * then lead.scored and lead.qualified derived from the outcome.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "funnel/funnel.h"
#include "funnel/log.h"
#include "mp.h"
#include "scoring.h"

typedef struct scorer {
	const sc_rules *rules;
	sc_lead *st;
	msgpack_sbuffer sb;           /* state bytes */
	msgpack_sbuffer ev;           /* derived event data */
	uint64_t re_limited;          /* `matches` tests stopped by their limits */
} scorer;

static void
pack_scores(scorer *sc, msgpack_packer *pk, const sc_outcome *o)
{
	mp_pack_key(pk, "fit");
	msgpack_pack_int(pk, o->fit);
	mp_pack_key(pk, "engagement");
	msgpack_pack_int(pk, o->engagement);
	mp_pack_key(pk, "total");
	msgpack_pack_int(pk, o->total);
	mp_pack_key(pk, "rules_version");
	mp_pack_cstr(pk, sc_rules_version(sc->rules));
	mp_pack_key(pk, "rules_hash");
	mp_pack_cstr(pk, sc_rules_hash_hex(sc->rules));
}

/* Derive lead.scored / lead.qualified from one outcome. */
static int
emit_outcome(funnel_service *svc, scorer *sc, const char *lead, const sc_outcome *o)
{
	msgpack_packer pk;
	int rc = FUNNEL_OK;

	msgpack_packer_init(&pk, &sc->ev, msgpack_sbuffer_write);
	if (o->changed) {
		sc->ev.size = 0;
		msgpack_pack_map(&pk, 6);
		pack_scores(sc, &pk, o);
		mp_pack_key(&pk, "rules");
		msgpack_pack_array(&pk, o->n_fired);
		for (size_t i = 0; i < o->n_fired; i++)
			mp_pack_cstr(&pk, sc_rule_name(sc->rules, o->fired[i]));
		funnel_event ev = { .type = "lead.scored", .lead = lead, .data = sc->ev.data,
		                    .data_len = sc->ev.size, .has_occurred_at = 1,
		                    .occurred_at = (int64_t)o->at };
		rc = funnel_service_emit(svc, &ev, "scored");
	}
	if (rc == FUNNEL_OK && o->qualify) {
		int min_fit = 0, has_min = sc_rules_minimum_fit(sc->rules, &min_fit);
		sc->ev.size = 0;
		msgpack_pack_map(&pk, 6 + has_min);
		pack_scores(sc, &pk, o);
		mp_pack_key(&pk, "threshold");
		msgpack_pack_int(&pk, sc_rules_threshold(sc->rules));
		if (has_min) {
			mp_pack_key(&pk, "minimum_fit");
			msgpack_pack_int(&pk, min_fit);
		}
		/* a derived fact happens when its cause did (PROTOCOL.md §10) */
		funnel_event ev = { .type = "lead.qualified", .lead = lead, .data = sc->ev.data,
		                    .data_len = sc->ev.size, .has_occurred_at = 1,
		                    .occurred_at = (int64_t)o->at };
		rc = funnel_service_emit(svc, &ev, "qualified");
	}
	return rc;
}

int
scoring_apply(funnel_service *svc, const funnel_record *rec, void *ctx)
{
	scorer *sc = ctx;
	sc_outcome out;
	char lead[512];

	if (!sc_counts(rec) || rec->lead.len >= sizeof lead)
		return FUNNEL_OK;
	int rc = sc_apply_row(sc->rules, funnel_service_store(svc), sc->st, &sc->sb, rec, &out);
	if (rc == FUNNEL_EMALFORMED)
		funnel_log(FUNNEL_LOG_ERROR, "scoring: the view's state of lead %.*s does not "
		           "decode; rebuild the view", (int)rec->lead.len, rec->lead.ptr);
	if (rc != FUNNEL_OK)
		return rc;
	/* a pattern that backtracks past its limits is a mistake in the rules:
	 * say so, the first time and then every 1000th time, not on every record */
	if (out.re_limited > 0) {
		uint64_t before = sc->re_limited;
		sc->re_limited += out.re_limited;
		if (before == 0 || before / 1000 != sc->re_limited / 1000)
			funnel_log(FUNNEL_LOG_WARN, "scoring: seq %" PRIu64 " (lead %.*s): a matches "
			           "test stopped at its limit and counted as not holding (%" PRIu64
			           " so far): simplify the pattern", rec->seq, (int)rec->lead.len,
			           rec->lead.ptr, sc->re_limited);
	}
	if (!out.changed && !out.qualify)
		return FUNNEL_OK;
	memcpy(lead, rec->lead.ptr, rec->lead.len);
	lead[rec->lead.len] = 0;
	return emit_outcome(svc, sc, lead, &out);
}

/* ---- the rules section ---- */

int
scoring_rules_load(void *ctx, const char *path, int check, void **out)
{
	char err[512];
	sc_rules *r = NULL;
	(void)ctx, (void)check;
	if (sc_rules_load(path, &r, err, sizeof err) != FUNNEL_OK) {
		fprintf(stderr, "funnel-scoring: %s\n", err);
		return 2;
	}
	*out = r;
	return 0;
}

void
scoring_rules_destroy(void *rules)
{
	sc_rules *r = rules;
	sc_rules_destroy(&r);
}

void
scoring_rules_ok(const char *path, const void *rules)
{
	const sc_rules *r = rules;
	int min_fit = 0;
	printf("%s: ok: \"%s\", threshold %d", path, sc_rules_version(r), sc_rules_threshold(r));
	if (sc_rules_minimum_fit(r, &min_fit))
		printf(", minimum fit %d", min_fit);
	printf(", %zu rules\n", sc_rules_count(r));
}

int
scoring_rules_id(const void *rules, rr_rules_id *id)
{
	const sc_rules *r = rules;
	*id = (rr_rules_id){ SCORING_NAME, sc_rules_hash_hex(r), sc_rules_version(r), NULL, 0 };
	id->text = sc_rules_text(r, &id->len);
	return 1;
}

/* ---- the engine's life ---- */

int
scoring_setup(void *ctx, void *rules, funnel_service_opts *o, void **engine)
{
	scorer *sc = calloc(1, sizeof *sc);
	(void)ctx, (void)o;
	if (sc == NULL)
		return FUNNEL_ENOMEM;
	sc->rules = rules;
	msgpack_sbuffer_init(&sc->sb);
	msgpack_sbuffer_init(&sc->ev);
	*engine = sc;
	return (sc->st = sc_lead_new(rules)) ? FUNNEL_OK : FUNNEL_ENOMEM;
}

int
scoring_started(void *ctx, funnel_service *svc, void *engine)
{
	const scoring_args *a = ctx;
	const sc_rules *r = ((scorer *)engine)->rules;
	(void)svc;
	funnel_log(FUNNEL_LOG_INFO, "scoring: rules \"%s\" from %s: threshold %d, %zu rules",
	           sc_rules_version(r), a->c.rules, sc_rules_threshold(r), sc_rules_count(r));
	return FUNNEL_OK;
}

void
scoring_release(void *ctx, void *engine)
{
	(void)ctx;
	scorer *sc = engine;
	if (sc == NULL)
		return;
	sc_lead_destroy(&sc->st);
	msgpack_sbuffer_destroy(&sc->sb);
	msgpack_sbuffer_destroy(&sc->ev);
	free(sc);
}
