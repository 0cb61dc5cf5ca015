/*
 * clients/common/svcargs.c - the services' shared command line; the
 * contract is svcargs.h.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <systemd/sd-daemon.h>

#include "funnel/log.h"
#include "funnel/service.h"
#include "conf.h"
#include "envfile.h"
#include "longopt.h"
#include "rulesfile.h"
#include "svcargs.h"

enum { O_RULES = 256, O_VIEW, O_INGEST, O_PUBLISH, O_QUERY, O_REBUILD, O_UNTIL, O_NOSYNC,
       O_BATCH, O_READY, O_JSON, O_LEVEL, O_CONFIG, O_KEY, O_SERVER_KEY, O_SOURCE };

static const struct option common[] = {
	{ "rules", required_argument, NULL, O_RULES },
	{ "view", required_argument, NULL, O_VIEW },
	{ "ingest", required_argument, NULL, O_INGEST },
	{ "publish", required_argument, NULL, O_PUBLISH },
	{ "query", required_argument, NULL, O_QUERY },
	{ "source", required_argument, NULL, O_SOURCE },
	{ "rebuild", no_argument, NULL, O_REBUILD },
	{ "until-head", no_argument, NULL, O_UNTIL },
	{ "once", no_argument, NULL, O_UNTIL },
	{ "no-sync", no_argument, NULL, O_NOSYNC },
	{ "batch", required_argument, NULL, O_BATCH },
	{ "ready-file", required_argument, NULL, O_READY },
	{ "json", no_argument, NULL, O_JSON },
	{ "log-level", required_argument, NULL, O_LEVEL },
	{ "config", required_argument, NULL, O_CONFIG },
	{ "key", required_argument, NULL, O_KEY },
	{ "server-key", required_argument, NULL, O_SERVER_KEY },
	{ "help", no_argument, NULL, 'h' },
};
#define NCOMMON (sizeof common / sizeof common[0])
#define MAX_OWN 16

int
svc_usage(const char *prog, const char *usage, const char *fmt, const char *arg)
{
	fprintf(stderr, "%s: ", prog);
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n%s", usage);
	return 2;
}

/* One getopt pass over argv (the command line, or the settings file
 * turned into "--key=value" words). */
static int
parse_pass(int argc, char **argv, const char *prog, const char *usage, svc_args *a,
           const struct option *all, svc_own_fn own_fn, void *ctx)
{
	char *end;
	int c, rc, idx = -1;

	optind = 0;   /* glibc: 0 re-initializes the scanner */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", all, &idx)) != -1) {
		const char *abbrev = longopt_abbrev(argv, all, idx);
		const char *next = longopt_value_is_option(argv, all, idx);
		if (abbrev != NULL)
			return svc_usage(prog, usage, "unknown option '%s' (long options are spelled in "
			                 "full)", abbrev);
		if (next != NULL) {
			char msg[512];
			snprintf(msg, sizeof msg, "option '%s' needs a value (it is followed by the option "
			         "'%s')", argv[optind - 2], next);
			return svc_usage(prog, usage, "%s", msg);
		}
		idx = -1;
		switch (c) {
		case O_RULES: a->rules = optarg; break;
		case O_VIEW: a->view = optarg; break;
		case O_INGEST: a->ingest = optarg; break;
		case O_PUBLISH: a->publish = optarg; break;
		case O_QUERY: a->query = optarg; break;
		case O_SOURCE:
			if (strncmp(optarg, "nats://", 7) != 0)
				return svc_usage(prog, usage, "--source wants nats://HOST:PORT/STREAM, not '%s'",
				                 optarg);
			a->source = optarg;
			break;
		case O_REBUILD: a->rebuild = 1; break;
		case O_UNTIL: a->until_head = 1; break;
		case O_NOSYNC: a->no_sync = 1; break;
		case O_JSON: a->json = 1; break;
		case O_READY: a->ready_file = optarg; break;
		case O_CONFIG: break;   /* read before the flags (svc_parse) */
		case O_KEY: a->key = optarg; break;
		case O_SERVER_KEY: a->server_key = optarg; break;
		case O_BATCH: {
			unsigned long v = strtoul(optarg, &end, 10);
			if (*end || v < 1 || v > 1000000)
				return svc_usage(prog, usage, "--batch wants 1..1000000 records, not '%s'", optarg);
			a->batch = (unsigned)v;
			break;
		}
		case O_LEVEL:
			if (funnel_log_level(optarg) != 0)
				return svc_usage(prog, usage, "--log-level wants debug, info, warn or error, "
				                 "not '%s'", optarg);
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		case ':':
			return svc_usage(prog, usage, "option '%s' needs a value", argv[optind - 1]);
		case '?':
			return svc_usage(prog, usage, "unknown option '%s'", argv[optind - 1]);
		default:
			if (own_fn == NULL || c < SVC_OPT_OWN)
				return svc_usage(prog, usage, "unknown option '%s'", argv[optind - 1]);
			if ((rc = own_fn(c, optarg, ctx)) != 0)
				return rc;
			break;
		}
	}
	return -1;
}

/* The flag, else FUNNEL_INGEST/..., else the settings file's (from_file,
 * NULL if none), else loopback: funnel_endpoint()'s rule with the file
 * standing in for the default. */
static const char *
endpoint(funnel_endpoint_kind kind, const char *env, const char *flag, const char *from_file)
{
	const char *e = getenv(env);
	if ((flag == NULL || flag[0] == '\0') && (e == NULL || e[0] == '\0') && from_file != NULL)
		return from_file;
	return funnel_endpoint(kind, flag);
}

/* A key file by the same rule: the flag, else the environment's (NULL
 * here: funnel_keys_use reads it), else the settings file's. */
static const char *
keyfile(const char *env, const char *flag, const char *from_file)
{
	const char *e = getenv(env);
	if (flag != NULL && flag[0] != '\0')
		return flag;
	return e != NULL && e[0] != '\0' ? NULL : from_file;
}

/* The settings file's endpoints and prog sections as the words of a
 * command line, parsed before the real one so that flags win.  The words
 * are never freed: svc_args points into them for the life of the process. */
static int
parse_config(const char *path, const char *prog, const char *usage, svc_args *a,
             const struct option *all, svc_own_fn own_fn, void *ctx)
{
	fp_conf conf;
	char why[512];
	int rc = fp_conf_read(path, prog, all, &conf, why, sizeof why);

	if (rc == FP_CONF_FLAT)
		snprintf(why, sizeof why, "%s: expected sections (endpoints:, %s:, ...), found plain "
		         "values at the top", path, prog);
	if (rc != FP_CONF_OK) {
		fprintf(stderr, "%s: %s\n", prog, why);
		return 2;
	}
	static char **words;   /* svc_args points into it until exit */
	words = calloc(conf.n + 2, sizeof *words);
	if (words == NULL) {
		fp_conf_free(&conf);
		fprintf(stderr, "%s: out of memory\n", prog);
		return 1;
	}
	words[0] = (char *)prog;
	for (size_t i = 0; i < conf.n; i++) {
		const fp_conf_item *it = &conf.items[i];
		/* a one-time action is no setting: in the file, --rebuild would
		 * empty the view at every start */
		if (strcmp(it->key, "rebuild") == 0) {
			fprintf(stderr, "%s: %s:%zu: rebuild is a one-time action, not a setting: give "
			        "--rebuild on the command line\n", prog, path, it->line);
			fp_conf_free(&conf);
			return 2;
		}
		size_t len = strlen(it->key) + strlen(it->value) + 4;
		if ((words[i + 1] = malloc(len)) == NULL) {
			fp_conf_free(&conf);
			fprintf(stderr, "%s: out of memory\n", prog);
			return 1;
		}
		if (it->has_arg == no_argument)
			snprintf(words[i + 1], len, "--%s", it->key);
		else
			snprintf(words[i + 1], len, "--%s=%s", it->key, it->value);
	}
	int n = (int)conf.n + 1;
	rc = parse_pass(n, words, prog, usage, a, all, own_fn, ctx);
	/* a value refused is said in the flag's words: name where it is */
	if (rc != -1 && optind >= 2 && (size_t)optind - 2 < conf.n)
		fprintf(stderr, "%s: (that is %s:%zu, %s: %s)\n", prog, path,
		        conf.items[optind - 2].line, conf.items[optind - 2].key,
		        conf.items[optind - 2].value);
	fp_conf_free(&conf);
	return rc;
}

int
svc_parse(int argc, char **argv, const char *prog, const char *usage, svc_args *a,
          const struct option *own, svc_own_fn own_fn, void *ctx)
{
	struct option all[NCOMMON + MAX_OWN + 1];
	size_t n = NCOMMON;
	const char *path = fp_conf_path(argc, argv);
	const char *file_ingest = NULL, *file_publish = NULL, *file_query = NULL;
	const char *file_key = NULL, *file_server_key = NULL;
	int rc;

	memcpy(all, common, sizeof common);
	for (size_t i = 0; own != NULL && own[i].name != NULL && i < MAX_OWN; i++)
		all[n++] = own[i];
	memset(&all[n], 0, sizeof all[n]);
	if (path != NULL) {
		if ((rc = parse_config(path, prog, usage, a, all, own_fn, ctx)) != -1)
			return rc;
		/* the file's endpoints rank below FUNNEL_INGEST/...: kept apart */
		file_ingest = a->ingest;
		file_publish = a->publish;
		file_query = a->query;
		file_key = a->key;
		file_server_key = a->server_key;
		a->ingest = a->publish = a->query = NULL;
		a->key = a->server_key = NULL;
	}
	if ((rc = parse_pass(argc, argv, prog, usage, a, all, own_fn, ctx)) != -1)
		return rc;
	a->ingest = endpoint(FUNNEL_EP_INGEST, "FUNNEL_INGEST", a->ingest, file_ingest);
	a->publish = endpoint(FUNNEL_EP_PUBLISH, "FUNNEL_PUBLISH", a->publish, file_publish);
	a->query = endpoint(FUNNEL_EP_QUERY, "FUNNEL_QUERY", a->query, file_query);
	char msg[512];
	if (fp_endpoints_check(a->ingest, a->publish, a->query, msg, sizeof msg) != 0)
		return svc_usage(prog, usage, "%s", msg);
	/* the same rule for the CURVE keys of every socket the service opens:
	 * the flag, else FUNNEL_KEY/FUNNEL_SERVER_KEY, else the settings file */
	a->key = keyfile("FUNNEL_KEY", a->key, file_key);
	a->server_key = keyfile("FUNNEL_SERVER_KEY", a->server_key, file_server_key);
	funnel_error_info ei;
	if (funnel_keys_use(a->key, a->server_key, &ei) != FUNNEL_OK)
		return svc_usage(prog, usage, "%s", ei.message);
	return -1;
}

int
svc_digest(const char *prog, const char *service, const char *view)
{
	uint8_t d[32];
	char hex[65], owner[128];
	uint64_t cp = 0;
	if (fp_is_log_dir(view)) {
		fprintf(stderr, "%s: %s is funneld's data directory (it holds the log's journal), not "
		        "a view: refused\n", prog, view);
		return 1;
	}
	int rc = funnel_view_owner(view, owner, sizeof owner);
	if (rc == FUNNEL_OK && owner[0] != '\0' && strcmp(owner, service) != 0) {
		fprintf(stderr, "%s: view %s belongs to %s: refused (give each service a view of "
		        "its own)\n", prog, view, owner);
		return 1;
	}
	if (rc == FUNNEL_OK)
		rc = funnel_view_digest(view, d, &cp);
	if (rc != FUNNEL_OK) {
		fprintf(stderr, "%s: digest of %s: %s\n", prog, view, funnel_strerror(rc));
		return 1;
	}
	fp_hex(d, sizeof d, hex);
	printf("checkpoint %" PRIu64 " digest %s\n", cp, hex);
	return 0;
}

void
svc_opts(const svc_args *a, funnel_service_opts *o)
{
	o->view_dir = a->view;
	o->ingest = a->ingest;
	o->publish = a->publish;
	o->query = a->query;
	o->rebuild = a->rebuild;
	o->until_head = a->until_head;
	o->no_sync = a->no_sync;
	o->batch_events = a->batch;
	o->ready_file = a->ready_file;
	o->source = a->source;
}

int
svc_run(funnel_service *svc, const char *name)
{
	funnel_service_stats st;
	/* Under systemd (Type=notify): the view is open, the feed connected
	 * and any HTTP server listening, as when the ready file is written. */
	sd_notify(0, "READY=1");
	int rc = funnel_service_run(svc);
	sd_notify(0, "STOPPING=1");
	funnel_service_stats_get(svc, &st);
	funnel_log(FUNNEL_LOG_INFO, "%s: stopped at seq %" PRIu64 ": %" PRIu64 " applied, %" PRIu64
	           " derived events stored, %" PRIu64 " duplicates (already in the log), %" PRIu64
	           " refused, %" PRIu64 " dropped (a person acted first), %" PRIu64 " already sent",
	           name, funnel_service_checkpoint(svc), st.applied, st.emitted, st.duplicates,
	           st.refused, st.overridden, st.skipped);
	return rc;
}

/* The signals' doing: the flag, and the service they stop. */
static volatile sig_atomic_t stop_flag;
static struct funnel_service *volatile *stop_svc;

static void
on_stop_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
	if (stop_svc != NULL)
		funnel_service_stop(*stop_svc);
}

void
svc_catch_stop(funnel_service *volatile *svc)
{
	struct sigaction sa;
	stop_svc = svc;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_stop_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

int
svc_stopping(void)
{
	return stop_flag != 0;
}
