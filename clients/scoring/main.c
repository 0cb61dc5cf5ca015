/*
 * clients/scoring/main.c - funnel-scoring: applies the agreed definition of
 * a qualified lead (the `scoring` section of funnel.yaml) to every lead
 * event of the log and emits lead.scored and lead.qualified.
 *
 *   funnel-scoring [run] [options]      the service (default)
 *   funnel-scoring explain LEAD         why a lead has its score
 *   funnel-scoring what-if NEW.yaml     the whole history under another definition
 *   funnel-scoring check [FILE]         validate a rules file
 *   funnel-scoring digest               the view's content digest
 *
 * Start-up order of the service: parse the rules (refuse to run on any
 * error), open the view, record rules.changed if the log's last record of
 * the scoring rules has another hash, then follow the log.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "funnel/funnel.h"
#include "funnel/log.h"
#include "funnel/service.h"
#include "mp.h"
#include "rulesfile.h"
#include "rulesrec.h"
#include "scoring.h"

static const char usage_text[] =
	"usage: funnel-scoring [COMMAND] [options]\n"
	"\n"
	"Commands:\n"
	"  run                 follow the log and score every lead (the default)\n"
	"  explain LEAD        the lead's scores and the rules that made them\n"
	"  what-if NEW.yaml    replay all history under the current and the new\n"
	"                      definition, side by side (read-only, sends nothing)\n"
	"  check [FILE]        validate a rules file (default: --rules)\n"
	"  digest              print the view's checkpoint and content digest\n"
	"\n"
	"Options:\n"
	"  --rules FILE        the shared rules file (default funnel.yaml)\n"
	"  --view DIR          the scoring view (default var/scoring)\n"
	"  --ingest EP --publish EP --query EP   funneld endpoints (else the environment's\n"
	"                      FUNNEL_INGEST, FUNNEL_PUBLISH, FUNNEL_QUERY; else loopback 7400-7402)\n"
	"  --key FILE --server-key FILE   this service's CURVE secret key and funneld.pub,\n"
	"                      for a funneld with --access (else FUNNEL_KEY, FUNNEL_SERVER_KEY)\n"
	"  --source nats://HOST:PORT/STREAM   read the records from a funnel-mirror stream\n"
	"  --rebuild           empty the view and score again from seq 1\n"
	"  --until-head, --once   stop once the log's head is applied\n"
	"  --no-sync           the view does not fsync its commits\n"
	"  --batch N           records per view commit (default 10000)\n"
	"  --ready-file FILE   written once the service follows the log\n"
	"  --json              explain/what-if: JSON output\n"
	"  --flips N           what-if: leads listed each way (default 20)\n"
	"  --leads             what-if: lead.qualified per lead under each definition\n"
	"  --log-level LEVEL   debug, info, warn, error (default info)\n"
	"  --config FILE       the settings file (sections endpoints: and funnel-scoring:;\n"
	"                      env FUNNEL_CONFIG); flags win over it\n"
	"\n"
	"Long options are spelled in full (--rule for --rules is refused).\n"
	"Exit codes: 0 ok, 1 failure, 2 usage or rules-file error.\n";

/* ---- the service ---- */

typedef struct scorer {
	const sc_rules *rules;
	sc_lead *st;
	msgpack_sbuffer sb;           /* state bytes */
	msgpack_sbuffer ev;           /* derived event data */
	uint64_t re_limited;          /* `matches` tests stopped by their limits */
} scorer;

static funnel_service *the_service;

static void
on_signal(int sig)
{
	(void)sig;
	funnel_service_stop(the_service);
}

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

static int
score_apply(funnel_service *svc, const funnel_record *rec, void *ctx)
{
	scorer *sc = ctx;
	MDB_dbi t = funnel_service_table(svc, SCORING_TABLE);
	const void *val;
	size_t vlen;
	sc_outcome out;
	char lead[512];
	int rc;

	if (!sc_counts(rec) || rec->lead.len >= sizeof lead)
		return FUNNEL_OK;
	sc_lead_reset(sc->st);
	rc = funnel_service_get(svc, t, rec->lead.ptr, rec->lead.len, &val, &vlen);
	if (rc == FUNNEL_OK) {
		if (vlen < 8 || sc_lead_decode(sc->rules, (const uint8_t *)val + 8, vlen - 8,
		                               sc->st) != FUNNEL_OK) {
			funnel_log(FUNNEL_LOG_ERROR, "scoring: the view's state of lead %.*s does not "
			           "decode; rebuild the view", (int)rec->lead.len, rec->lead.ptr);
			return FUNNEL_EMALFORMED;
		}
	} else if (rc != FUNNEL_ENOTFOUND) {
		return rc;
	}
	if ((rc = sc_apply(sc->rules, sc->st, rec, &out)) != FUNNEL_OK)
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
	if (sc_lead_is_empty(sc->st)) {
		rc = funnel_service_del(svc, t, rec->lead.ptr, rec->lead.len);
	} else {
		sc->sb.size = 0;
		uint8_t ts[8];
		fp_put_be64(ts, out.at);
		msgpack_sbuffer_write(&sc->sb, (const char *)ts, 8);
		if ((rc = sc_lead_encode(sc->rules, sc->st, &sc->sb)) != FUNNEL_OK)
			return rc;
		rc = funnel_service_put(svc, t, rec->lead.ptr, rec->lead.len, sc->sb.data,
		                        sc->sb.size);
	}
	if (rc != FUNNEL_OK || (!out.changed && !out.qualify))
		return rc;
	memcpy(lead, rec->lead.ptr, rec->lead.len);
	lead[rec->lead.len] = 0;
	return emit_outcome(svc, sc, lead, &out);
}

/* Record rules.changed unless the log's last record says these rules. */
static int
record_rules(funnel_service *svc, scorer *sc)
{
	size_t len;
	const char *text = sc_rules_text(sc->rules, &len);
	rf_rules_id id = { SCORING_NAME, sc_rules_hash_hex(sc->rules), sc_rules_version(sc->rules),
	                   text, len };
	return rf_record_rules(svc, &id);
}

static int
load_rules(const char *path, sc_rules **out)
{
	char err[512];
	if (sc_rules_load(path, out, err, sizeof err) != FUNNEL_OK) {
		fprintf(stderr, "funnel-scoring: %s\n", err);
		return 2;
	}
	return 0;
}

static int
cmd_run(const scoring_args *a)
{
	sc_rules *rules = NULL;
	scorer sc = { 0 };
	int rc;

	if ((rc = load_rules(a->c.rules, &rules)) != 0)
		return rc;
	sc.rules = rules;
	sc.st = sc_lead_new(rules);
	msgpack_sbuffer_init(&sc.sb);
	msgpack_sbuffer_init(&sc.ev);

	funnel_service_opts o = {
		.name = SCORING_NAME,
		.tables = { SCORING_TABLE },
	};
	svc_opts(&a->c, &o);
	int status = 1;
	rc = sc.st ? funnel_service_new(&the_service, &o, score_apply, &sc) : FUNNEL_ENOMEM;
	if (rc != FUNNEL_OK) {
		funnel_log(FUNNEL_LOG_ERROR, "scoring: cannot start: %s", rc == FUNNEL_ESTORAGE ?
		           "the view cannot be opened or written (see above)" : funnel_strerror(rc));
		goto out;
	}
	svc_on_signals(on_signal);
	funnel_log(FUNNEL_LOG_INFO, "scoring: rules \"%s\" from %s: threshold %d, %zu rules",
	           sc_rules_version(rules), a->c.rules, sc_rules_threshold(rules),
	           sc_rules_count(rules));
	if ((rc = record_rules(the_service, &sc)) != FUNNEL_OK && rc != FUNNEL_ESHUTDOWN)
		goto out;
	rc = rc == FUNNEL_ESHUTDOWN ? FUNNEL_OK : svc_run(the_service, "scoring");
	status = rc == FUNNEL_OK ? 0 : 1;
out:
	funnel_service_destroy(&the_service);
	sc_lead_destroy(&sc.st);
	msgpack_sbuffer_destroy(&sc.sb);
	msgpack_sbuffer_destroy(&sc.ev);
	sc_rules_destroy(&rules);
	return status;
}

static int
cmd_check(const char *path)
{
	sc_rules *rules = NULL;
	int rc = load_rules(path, &rules);
	if (rc != 0)
		return rc;
	int min_fit = 0;
	printf("%s: ok: \"%s\", threshold %d", path, sc_rules_version(rules),
	       sc_rules_threshold(rules));
	if (sc_rules_minimum_fit(rules, &min_fit))
		printf(", minimum fit %d", min_fit);
	printf(", %zu rules\n", sc_rules_count(rules));
	sc_rules_destroy(&rules);
	return 0;
}

/* --flips, --leads. */
enum { O_FLIPS = SVC_OPT_OWN, O_LEADS };

static int
own_option(int id, const char *arg, void *ctx)
{
	scoring_args *a = ctx;
	char *end;
	if (id == O_LEADS) {
		a->leads = 1;
		return 0;
	}
	long v = strtol(arg, &end, 10);
	if (*end || v < 0 || v > 1000000)
		return svc_usage("funnel-scoring", usage_text, "--flips wants 0..1000000 leads, not '%s'",
		                 arg);
	a->flips = (int)v;
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option own[] = {
		{ "flips", required_argument, NULL, O_FLIPS },
		{ "leads", no_argument, NULL, O_LEADS },
		{ NULL, 0, NULL, 0 },
	};
	scoring_args a = { .c = { .rules = SCORING_DEFAULT_RULES, .view = SCORING_DEFAULT_VIEW },
	                   .flips = 20 };

	funnel_log_program("funnel-scoring");
	int rc = svc_parse(argc, argv, "funnel-scoring", usage_text, &a.c, own, own_option, &a);
	if (rc >= 0)
		return rc;
	const char *cmd = optind < argc ? argv[optind++] : "run";
	int nargs = argc - optind;
	if (strcmp(cmd, "run") == 0 && nargs == 0)
		return cmd_run(&a);
	if (strcmp(cmd, "explain") == 0 && nargs == 1)
		return scoring_explain(&a, argv[optind]);
	if (strcmp(cmd, "what-if") == 0 && nargs == 1)
		return scoring_whatif(&a, argv[optind]);
	if (strcmp(cmd, "check") == 0 && nargs <= 1)
		return cmd_check(nargs ? argv[optind] : a.c.rules);
	if (strcmp(cmd, "digest") == 0 && nargs == 0)
		return svc_digest("funnel-scoring", a.c.view);
	if (strcmp(cmd, "run") && strcmp(cmd, "explain") && strcmp(cmd, "what-if") &&
	    strcmp(cmd, "check") && strcmp(cmd, "digest"))
		return svc_usage("funnel-scoring", usage_text, "unknown command '%s'", cmd);
	return svc_usage("funnel-scoring", usage_text, "wrong number of arguments for '%s'", cmd);
}
