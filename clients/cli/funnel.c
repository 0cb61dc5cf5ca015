/*
 * clients/cli/funnel.c - `funnel`, the command-line client of funneld:
 * global options, dispatch, and the error reporting every command uses.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "conf.h"
#include "longopt.h"
#include "util.h"

static const char usage_text[] =
	"usage: funnel [global options] COMMAND [options]\n"
	"\n"
	"Commands:\n"
	"  publish    append events: one from flags, or JSON lines from stdin\n"
	"  erase      erase a lead: lead.erased, its personal data unreadable\n"
	"  tail       follow the log live (from the head, a seq or a time)\n"
	"  replay     print a range of the log and exit\n"
	"  history    one lead's events and its current state\n"
	"  verify     recompute the hash chain and print the head hash\n"
	"  status     the daemon's head, sizes, endpoints and settings\n"
	"  backup     copy the log while funneld runs, verified (on its machine)\n"
	"  restore    put a backup in place as a new data directory\n"
	"  import     load a CRM's history from CSV exports, with its real dates\n"
	"  keygen     write a CURVE key pair NAME.key (secret) and NAME.pub\n"
	"  token      write an HTTP bearer token NAME.token and print its hash\n"
	"\n"
	CLI_GLOBAL_OPTIONS_HELP
	"  --version       print the version\n"
	CLI_LONGOPT_NOTE
	"\n"
	"'funnel COMMAND --help' describes a command.\n"
	"Exit codes: 0 ok, 1 failure, 2 usage error, 3 broken chain (verify).\n";

struct command {
	const char *name;
	int (*run)(struct cli *g, int argc, char **argv);
};

static const struct command commands[] = {
	{ "publish", cmd_publish },
	{ "erase", cmd_erase },
	{ "tail", cmd_tail },
	{ "replay", cmd_replay },
	{ "history", cmd_history },
	{ "verify", cmd_verify },
	{ "status", cmd_status },
	{ "backup", cmd_backup },
	{ "restore", cmd_restore },
	{ "import", cmd_import },
	{ "keygen", cmd_keygen },
	{ "token", cmd_token },
};

void
cli_error(const struct cli *g, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "funnel: %s: ", g->cmd ? g->cmd : "funnel");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int
cli_usage(const struct cli *g, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "funnel: %s%s", g->cmd ? g->cmd : "", g->cmd ? ": " : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'funnel %s%s--help'.\n", g->cmd ? g->cmd : "", g->cmd ? " " : "");
	return CLI_EXIT_USAGE;
}

void
cli_describe(const struct cli *g, int rc, const funnel_error_info *info, const char *endpoint,
             char *buf, size_t len)
{
	if (rc == FUNNEL_ETIMEDOUT && endpoint != NULL) {
		/* a CURVE handshake funneld refuses is silence too: with keys,
		 * say which mistakes look like a funneld that is not there */
		snprintf(buf, len, "%s: no reply from %s within %d ms: is funneld running%s?",
		         funnel_errname(rc), endpoint, g->timeout_ms,
		         g->key != NULL || g->server_key != NULL
		             ? ", is --key's public key in its access file, and is --server-key "
		               "its funneld.pub"
		             : " (one started with --access answers only clients with --key and "
		               "--server-key)");
		return;
	}
	const char *msg = info != NULL && info->code == rc && info->message[0] != '\0'
	                  ? info->message : funnel_strerror(rc);
	int n = snprintf(buf, len, "%s: %s", funnel_errname(rc), msg);
	if (info != NULL && info->code == rc && info->field[0] != '\0' && n >= 0 && (size_t)n < len)
		snprintf(buf + n, len - (size_t)n, " [field %s]", info->field);
}

int
cli_fail(const struct cli *g, int rc, const funnel_error_info *info, const char *endpoint)
{
	char msg[512];

	cli_describe(g, rc, info, endpoint, msg, sizeof msg);
	cli_error(g, "%s", msg);
	return CLI_EXIT_FAIL;
}

funnel_query *
cli_query_open(const struct cli *g)
{
	funnel_query *q = NULL;
	int rc = funnel_query_new(&q, g->query, g->timeout_ms);

	if (rc != FUNNEL_OK) {
		cli_error(g, "%s: cannot open the query endpoint %s: %s", funnel_errname(rc), g->query,
		          funnel_strerror(rc));
		return NULL;
	}
	return q;
}

int
cli_json(const struct cli *g)
{
	if (g->format == CLI_FMT_AUTO)
		return !isatty(STDOUT_FILENO);
	return g->format == CLI_FMT_JSON;
}

int
cli_global_option(struct cli *g, int opt, const char *arg)
{
	uint64_t v;

	switch (opt) {
	case OPT_INGEST:
		g->ingest = arg;
		return 1;
	case OPT_PUBLISH:
		g->publish = arg;
		return 1;
	case OPT_QUERY:
		g->query = arg;
		return 1;
	case OPT_SOURCE:
		if (strncmp(arg, "nats://", 7) != 0) {
			cli_usage(g, "--source wants nats://HOST:PORT/STREAM, not '%s'", arg);
			return -1;
		}
		g->source = arg;
		return 1;
	case OPT_TIMEOUT:
		if (cli_parse_u64(arg, &v) != 0 || v == 0 || v > 86400000) {
			cli_usage(g, "--timeout wants milliseconds between 1 and 86400000, not '%s'", arg);
			return -1;
		}
		g->timeout_ms = (int)v;
		return 1;
	case OPT_CONFIG:
		return 1;   /* read before the flags (main) */
	case OPT_JSON:
		g->format = CLI_FMT_JSON;
		return 1;
	case OPT_HUMAN:
		g->format = CLI_FMT_HUMAN;
		return 1;
	case OPT_KEY:
		g->key = arg;
		return 1;
	case OPT_SERVER_KEY:
		g->server_key = arg;
		return 1;
	}
	return 0;
}

void
cli_getopt_begin(void)
{
	optind = 0;   /* glibc: 0 re-initializes the scanner */
	opterr = 0;   /* errors are worded by cli_getopt */
}

int
cli_getopt(struct cli *g, int argc, char **argv, const struct option *opts)
{
	for (;;) {
		int idx = -1;
		int c = getopt_long(argc, argv, ":h", opts, &idx);
		const char *abbrev = longopt_abbrev(argv, opts, idx);
		const char *next = longopt_value_is_option(argv, opts, idx);
		if (abbrev != NULL) {
			cli_usage(g, "unknown option '%s' (long options are spelled in full)", abbrev);
			return '?';
		}
		if (next != NULL) {
			cli_usage(g, "option '%s' needs a value (it is followed by the option '%s')",
			          argv[optind - 2], next);
			return '?';
		}
		switch (c) {
		case -1:
			/* every option is read: the keys of every socket the command opens */
			if (!g->no_keys) {
				funnel_error_info ei;
				if (funnel_keys_use(g->key, g->server_key, &ei) != FUNNEL_OK) {
					cli_usage(g, "%s", ei.message);
					return '?';
				}
				/* and their endpoints, from a flag, the environment or the
				 * settings file: a malformed one is a usage error */
				char msg[512];
				if (fp_endpoints_check(g->ingest, g->publish, g->query, msg, sizeof msg) != 0) {
					cli_usage(g, "%s", msg);
					return '?';
				}
			}
			return -1;
		case 'h':
			return OPT_HELP;
		case ':':
			cli_usage(g, "option '%s' needs a value", argv[optind - 1]);
			return '?';
		case '?':
			if (optopt != 0)
				cli_usage(g, "unknown option '-%c'", optopt);
			else
				cli_usage(g, "unknown option '%s'", argv[optind - 1]);
			return '?';
		}
		int r = cli_global_option(g, c, optarg);
		if (r < 0)
			return '?';
		if (r == 0)
			return c;
	}
}

/* The environment's endpoint when set, else the settings file's
 * (from_file, NULL if it has none), else funnel_endpoint()'s default. */
static const char *
endpoint(funnel_endpoint_kind kind, const char *env, const char *from_file)
{
	const char *e = getenv(env);
	if ((e == NULL || e[0] == '\0') && from_file != NULL)
		return from_file;
	return funnel_endpoint(kind, NULL);
}

/* The settings file's endpoints and funnel sections into g (proto/conf.h).
 * Its strings are kept for the life of the process (never freed). */
static int
read_config(struct cli *g, int argc, char **argv)
{
	static const struct option opts[] = {
		CLI_GLOBAL_OPTIONS,
		{ NULL, 0, NULL, 0 }
	};
	static fp_conf conf;   /* g points into it until exit */
	const char *path = fp_conf_path(argc, argv);
	char why[512];
	int rc;

	if (path == NULL)
		return 0;
	g->config = path;
	rc = fp_conf_read(path, "funnel", opts, &conf, why, sizeof why);
	if (rc == FP_CONF_FLAT)
		snprintf(why, sizeof why, "%s: expected sections (endpoints:, funnel:, ...), found "
		         "plain values at the top", path);
	if (rc != FP_CONF_OK) {
		fprintf(stderr, "funnel: %s\n", why);
		return -1;
	}
	for (size_t i = 0; i < conf.n; i++) {
		if (cli_global_option(g, conf.items[i].id, conf.items[i].value) < 0) {
			fprintf(stderr, "funnel: %s:%zu: %s: invalid value '%s'\n", path,
			        conf.items[i].line, conf.items[i].key, conf.items[i].value);
			return -1;
		}
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		CLI_GLOBAL_OPTIONS,
		{ "version", no_argument, NULL, OPT_VERSION },
		{ NULL, 0, NULL, 0 }
	};
	struct cli g = {
		.cmd = NULL,
		.ingest = NULL,
		.publish = NULL,
		.query = NULL,
		.source = getenv("FUNNEL_SOURCE"),
		.timeout_ms = CLI_DEFAULT_TIMEOUT_MS,
		.format = CLI_FMT_AUTO,
	};
	int c, idx = -1;

	/* flag, else environment, else the settings file, else default: the
	 * file's endpoints stand in for the default of funnel_endpoint() */
	if (read_config(&g, argc, argv) != 0)
		return CLI_EXIT_USAGE;
	g.ingest = endpoint(FUNNEL_EP_INGEST, "FUNNEL_INGEST", g.ingest);
	g.publish = endpoint(FUNNEL_EP_PUBLISH, "FUNNEL_PUBLISH", g.publish);
	g.query = endpoint(FUNNEL_EP_QUERY, "FUNNEL_QUERY", g.query);
	/* the CURVE keys by the same rule: FUNNEL_KEY / FUNNEL_SERVER_KEY rank
	 * above the file (funnel_keys_use reads them when given NULL) */
	const char *ek = getenv("FUNNEL_KEY"), *esk = getenv("FUNNEL_SERVER_KEY");
	if (ek != NULL && ek[0] != '\0')
		g.key = NULL;
	if (esk != NULL && esk[0] != '\0')
		g.server_key = NULL;
	if (g.source != NULL && g.source[0] == '\0')
		g.source = NULL;

	/* Global options stop at the command name ('+'). */
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:hV", opts, &idx)) != -1) {
		const char *abbrev = longopt_abbrev(argv, opts, idx);
		const char *next = longopt_value_is_option(argv, opts, idx);
		idx = -1;
		if (abbrev != NULL)
			return cli_usage(&g, "unknown option '%s' (long options are spelled in full)", abbrev);
		if (next != NULL)
			return cli_usage(&g, "option '%s' needs a value (it is followed by the option '%s')",
			                 argv[optind - 2], next);
		switch (c) {
		case 'h':
		case OPT_HELP:
			fputs(usage_text, stdout);
			return CLI_EXIT_OK;
		case 'V':
		case OPT_VERSION:
			printf("funnel %s\n", FUNNEL_VERSION);
			return CLI_EXIT_OK;
		case ':':
			return cli_usage(&g, "option '%s' needs a value", argv[optind - 1]);
		case '?':
			if (optopt != 0)
				return cli_usage(&g, "unknown option '-%c'", optopt);
			return cli_usage(&g, "unknown option '%s'", argv[optind - 1]);
		default:
			if (cli_global_option(&g, c, optarg) < 0)
				return CLI_EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		fputs(usage_text, stderr);
		return CLI_EXIT_USAGE;
	}
	const char *name = argv[optind];
	if (strcmp(name, "help") == 0) {
		if (optind + 1 >= argc) {
			fputs(usage_text, stdout);
			return CLI_EXIT_OK;
		}
		/* "funnel help CMD" is "funnel CMD --help" */
		static char help_opt[] = "--help";
		char *sub[3] = { argv[optind + 1], help_opt, NULL };
		name = sub[0];
		for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
			if (strcmp(name, commands[i].name) == 0) {
				g.cmd = commands[i].name;
				return commands[i].run(&g, 2, sub);
			}
		}
		return cli_usage(&g, "unknown command '%s'", name);
	}
	for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
		if (strcmp(name, commands[i].name) == 0) {
			g.cmd = commands[i].name;
			return commands[i].run(&g, argc - optind, argv + optind);
		}
	}
	return cli_usage(&g, "unknown command '%s'", name);
}
