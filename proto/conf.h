/*
 * proto/conf.h - the one settings file every funnel program reads
 * (README "Configuration"): YAML, a mapping of sections, each a mapping
 * of a program's long option names to scalar values.
 *
 *   endpoints:          ingest, publish, query: for every program
 *   funneld:            funneld's options (data, no-sync, map-size, ...)
 *   funnel:             the CLI's global options (timeout, ...)
 *   funnel-scoring:     each service's options (rules, view, ...)
 *   funnel-routing:, funnel-metrics:, funnel-gateway:, funnel-mirror:
 *
 * A program reads the endpoints section and its own; it refuses, naming
 * the line, an unknown section, a key given twice in a section, a value
 * that is not a scalar, and in the sections it reads a key that is not
 * one of its long options (help, version and config are not settings).
 * A flag is `name: true` (false leaves it unset).  Precedence, lowest
 * first: built-in defaults, this file, FUNNEL_* environment variables,
 * command-line flags.
 *
 * A file whose top level holds plain values (no sections) is the older
 * flat form of funneld --config: fp_conf_read() says so with FP_CONF_FLAT
 * and reads nothing.
 *
 * Ownership: fp_conf owns its strings until fp_conf_free().
 */
#ifndef FUNNEL_PROTO_CONF_H
#define FUNNEL_PROTO_CONF_H

#include <getopt.h>
#include <stddef.h>

/* The environment variable naming the file when no --config is given. */
#define FP_CONF_ENV "FUNNEL_CONFIG"

typedef struct fp_conf_item {
	const char *key;      /* a long option name of the program */
	const char *value;    /* its value as written ("true" for a flag) */
	size_t line;          /* 1-based line in the file */
	int id;               /* the option's getopt id (struct option val) */
	int has_arg;          /* the option's has_arg */
} fp_conf_item;

typedef struct fp_conf {
	fp_conf_item *items;  /* endpoints first, then the program's section, in file order */
	size_t n;
	char path[4096];
} fp_conf;

enum { FP_CONF_OK = 0, FP_CONF_ERROR = -1, FP_CONF_FLAT = 1 };

/*
 * Read the sections `endpoints` and `prog` of the file at path, checking
 * their keys against opts (a getopt_long table ending with a NULL name;
 * NULL takes every key as an option with a value: how one program reads
 * another's section, e.g. `funnel status` a service's view directory).
 * Returns FP_CONF_OK (out filled), FP_CONF_FLAT (the older flat form;
 * out empty), or FP_CONF_ERROR with "PATH:LINE: problem" in why.
 */
int fp_conf_read(const char *path, const char *prog, const struct option *opts, fp_conf *out,
                 char *why, size_t whylen);

/* The file named by --config FILE / --config=FILE in argv (the last one),
 * else by $FUNNEL_CONFIG, else NULL. */
const char *fp_conf_path(int argc, char **argv);

void fp_conf_free(fp_conf *c);

/*
 * What is wrong with an endpoint a funnel program binds (bind 1) or
 * connects to (bind 0), or NULL when nothing: tcp://HOST:PORT with PORT
 * 1..65535 in decimal ('*' too when binding: a free port), ipc://PATH
 * or inproc://NAME.  Checked before any socket, since ZeroMQ takes a port
 * past 65535 modulo 65536 and says only "Invalid argument" for a name.
 */
const char *fp_endpoint_problem(const char *ep, int bind);

/* A client's three endpoints (NULL ones skipped) checked to connect:
 * 0, or -1 with "the ingest endpoint EP: why" for the first malformed
 * one in msg. */
int fp_endpoints_check(const char *ingest, const char *publish, const char *query, char *msg,
                       size_t len);

#endif /* FUNNEL_PROTO_CONF_H */
