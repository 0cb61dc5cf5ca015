/*
 * clients/cli/cli.h - what the subcommands of `funnel` share: the global
 * options, error reporting with one format, and record printing.
 *
 * Exit codes: 0 success, 1 a command or an event failed, 2 usage error,
 * 3 `verify` found a broken chain.
 *
 * Every error goes to stderr as one line starting "funnel: <command>: ".
 */
#ifndef FUNNEL_CLI_CLI_H
#define FUNNEL_CLI_CLI_H

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

#include "funnel/funnel.h"

enum {
	CLI_EXIT_OK = 0,
	CLI_EXIT_FAIL = 1,
	CLI_EXIT_USAGE = 2,
	CLI_EXIT_BROKEN = 3
};

#define CLI_DEFAULT_TIMEOUT_MS 5000

enum cli_format {
	CLI_FMT_AUTO = 0,   /* JSON unless stdout is a terminal */
	CLI_FMT_JSON,
	CLI_FMT_HUMAN
};

/* Settings every command sees.  Strings point into argv or environ. */
struct cli {
	const char *cmd;        /* subcommand name, for messages */
	const char *ingest;
	const char *publish;
	const char *query;
	const char *key;        /* --key (else FUNNEL_KEY): CURVE secret key file */
	const char *server_key; /* --server-key (else FUNNEL_SERVER_KEY): funneld.pub */
	int no_keys;            /* the command opens no socket (keygen, token) */
	const char *source;     /* NULL: funneld; "nats://...": tail, replay, verify read a mirror */
	int timeout_ms;
	enum cli_format format;
	const char *config;     /* the settings file read, NULL if none */
};

/* Long option values; the global ones are accepted by every command,
 * before or after its name. */
enum {
	OPT_INGEST = 256, OPT_PUBLISH, OPT_QUERY, OPT_TIMEOUT, OPT_JSON, OPT_HUMAN, OPT_HELP,
	OPT_VERSION, OPT_CONFIG, OPT_KEY, OPT_SERVER_KEY, OPT_SOURCE,
	/* command options */
	OPT_TYPE, OPT_LEAD, OPT_ID, OPT_DATA, OPT_OCCURRED_AT, OPT_EXPECTED_VERSION, OPT_CAUSE,
	OPT_BATCH, OPT_FROM, OPT_TO, OPT_SINCE, OPT_UNTIL, OPT_COUNT, OPT_TIMEOUT_IDLE, OPT_RAW,
	OPT_REASON
};

#define CLI_GLOBAL_OPTIONS \
	{ "ingest", required_argument, NULL, OPT_INGEST }, \
	{ "publish", required_argument, NULL, OPT_PUBLISH }, \
	{ "query", required_argument, NULL, OPT_QUERY }, \
	{ "source", required_argument, NULL, OPT_SOURCE }, \
	{ "timeout", required_argument, NULL, OPT_TIMEOUT }, \
	{ "json", no_argument, NULL, OPT_JSON }, \
	{ "human", no_argument, NULL, OPT_HUMAN }, \
	{ "config", required_argument, NULL, OPT_CONFIG }, \
	{ "help", no_argument, NULL, OPT_HELP }, \
	{ "key", required_argument, NULL, OPT_KEY }, \
	{ "server-key", required_argument, NULL, OPT_SERVER_KEY }

/* How records print as JSON, for the reading commands' --help. */
#define CLI_JSON_HELP \
	"JSON output: one object per record, data as it was stored, except what JSON\n" \
	"cannot say: msgpack bin -> a lower-case hex string (it reads like text), NaN\n" \
	"and +-Inf floats -> null, ext -> null, map keys that are not strings -> their\n" \
	"text (5 -> \"5\"), a NUL in a string -> \\u0000.  `funnel replay --raw` shows\n" \
	"the stored bytes; `funnel publish` refuses numbers JSON would store as Inf.\n"

#define CLI_GLOBAL_HELP CLI_GLOBAL_OPTIONS_HELP CLI_LONGOPT_NOTE
/* The options alone and the note on spelling, for a help that adds an
 * option of its own between them (funnel --help: --version). */
#define CLI_LONGOPT_NOTE "Long options are spelled in full (--quer for --query is refused).\n"
#define CLI_GLOBAL_OPTIONS_HELP \
	"Global options (before or after the command):\n" \
	"  --ingest EP     ingest endpoint  (env FUNNEL_INGEST,  default " FUNNEL_DEFAULT_INGEST ")\n" \
	"  --publish EP    publish endpoint (env FUNNEL_PUBLISH, default " FUNNEL_DEFAULT_PUBLISH ")\n" \
	"  --query EP      query endpoint   (env FUNNEL_QUERY,   default " FUNNEL_DEFAULT_QUERY ")\n" \
	"  --source URL    tail, replay, verify: read a funnel-mirror stream,\n" \
	"                  nats://HOST:PORT/STREAM (env FUNNEL_SOURCE)\n" \
	"  --timeout MS    wait this long for each reply (default 5000)\n" \
	"  --key FILE      CURVE secret key of this client (env FUNNEL_KEY), for a\n" \
	"                  funneld with --access; with --server-key\n" \
	"  --server-key FILE funneld's public key, funneld.pub (env FUNNEL_SERVER_KEY)\n" \
	"  --json          JSON output (default when stdout is not a terminal)\n" \
	"  --human         human output (default on a terminal)\n" \
	"  --config FILE   settings file: sections endpoints: and funnel: (env\n" \
	"                  FUNNEL_CONFIG; below the env variables and flags)\n" \
	"  --help          this help\n"

/*
 * Apply a global option (opt is a getopt_long result).  Returns 1 when
 * it was one, 0 when it is not a global option, or -1 after printing a
 * usage error for a bad value.
 */
int cli_global_option(struct cli *g, int opt, const char *arg);

/*
 * Run getopt_long over a command's arguments with cli's conventions:
 * call cli_getopt_begin once, then cli_getopt until it returns -1.
 * Global options are applied inside; the command sees only its own
 * (and OPT_HELP).  '?' means a usage error was printed.
 */
void cli_getopt_begin(void);
int cli_getopt(struct cli *g, int argc, char **argv, const struct option *opts);

/* 1 when records should be written as JSON lines. */
int cli_json(const struct cli *g);

/* "funnel: <cmd>: <formatted>" on stderr. */
void cli_error(const struct cli *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A usage error: the message and a pointer to --help.  Returns 2. */
int cli_usage(const struct cli *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Report a failed library call as "funnel: <cmd>: ENAME: message
 * [field F]".  info may be NULL; endpoint names the endpoint that did not
 * answer for FUNNEL_ETIMEDOUT.  Returns CLI_EXIT_FAIL.
 */
int cli_fail(const struct cli *g, int rc, const funnel_error_info *info, const char *endpoint);

/* The message of a library failure, as cli_fail words it, into buf. */
void cli_describe(const struct cli *g, int rc, const funnel_error_info *info,
                  const char *endpoint, char *buf, size_t len);

/* Open a query connection; on failure reports it and returns NULL. */
funnel_query *cli_query_open(const struct cli *g);

/* Subcommands: argv[0] is the command's name. */
int cmd_publish(struct cli *g, int argc, char **argv);
int cmd_erase(struct cli *g, int argc, char **argv);
int cmd_tail(struct cli *g, int argc, char **argv);
int cmd_replay(struct cli *g, int argc, char **argv);
int cmd_history(struct cli *g, int argc, char **argv);
int cmd_verify(struct cli *g, int argc, char **argv);
int cmd_status(struct cli *g, int argc, char **argv);
int cmd_backup(struct cli *g, int argc, char **argv);
int cmd_restore(struct cli *g, int argc, char **argv);
int cmd_import(struct cli *g, int argc, char **argv);
int cmd_keygen(struct cli *g, int argc, char **argv);
int cmd_token(struct cli *g, int argc, char **argv);

#endif /* FUNNEL_CLI_CLI_H */
