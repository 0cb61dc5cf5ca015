/*
 * clients/common/svcargs.h - the command line every funnel service shares:
 * the common flags (--rules, --view, the funneld endpoints, --source, --rebuild,
 * --until-head/--once, --no-sync, --batch, --ready-file, --json,
 * --log-level, --config, --key, --server-key, --help), usage errors, the
 * `digest` command, the run with its closing log line, and the signals that stop a
 * service or a program.
 *
 * Strings in svc_args point into argv (or are the defaults the service
 * set): valid for the life of the process.
 *
 * Threads: svc_parse uses getopt's globals and svc_catch_stop installs
 * process-wide signal handlers: both are the main thread's, before it
 * starts others.  svc_stopping may be read from any thread.
 */
#ifndef FUNNEL_SVCARGS_H
#define FUNNEL_SVCARGS_H

#include <getopt.h>

/* What the common flags set.  The service fills in its defaults first. */
typedef struct svc_args {
	const char *rules;         /* the shared rules file */
	const char *view;          /* the view directory */
	const char *ingest, *publish, *query;   /* after svc_parse: the flag, else the
	                                          * environment, else the settings
	                                          * file, else loopback
	                                          * (funnel_endpoint) */
	const char *source;        /* --source nats://HOST:PORT/STREAM: records from a mirror */
	const char *ready_file;
	const char *key, *server_key;   /* CURVE key files; svc_parse hands them to
	                                 * funnel_keys_use (flag, else environment,
	                                 * else the settings file) */
	int rebuild, until_head, no_sync, json;
	unsigned batch;            /* 0: the runtime's default */
} svc_args;

/* getopt_long ids: a service numbers its own options from SVC_OPT_OWN. */
enum { SVC_OPT_OWN = 512 };

/* A service's own option: handle id with its argument (NULL for a flag).
 * Return 0, or svc_usage(...)'s 2 for a bad value. */
typedef int (*svc_own_fn)(int id, const char *arg, void *ctx);

/*
 * The settings file (--config FILE, else $FUNNEL_CONFIG; proto/conf.h)
 * is read first: its endpoints section and the section named prog, each
 * key a long option; then argv, so a flag wins over the file (and for the
 * endpoints and the keys FUNNEL_INGEST/... and FUNNEL_KEY/... do too).
 *
 * Parse argv into a (the common flags) and through own_fn (the entries of
 * `own`, up to 16, ending with a NULL name; may be NULL).  prog names
 * the program in messages, usage is printed on --help and after a usage
 * error.  Long options must be spelled in full (a prefix is a usage
 * error).  Returns -1 when the caller goes on (optind is at the command),
 * else the exit status: 0 after --help, 2 after a usage error (the
 * message is on stderr).
 */
int svc_parse(int argc, char **argv, const char *prog, const char *usage, svc_args *a,
              const struct option *own, svc_own_fn own_fn, void *ctx);

/* "prog: <fmt with arg>" and the usage text on stderr; returns 2. */
int svc_usage(const char *prog, const char *usage, const char *fmt, const char *arg);

/* The `digest` command of the service named service: "checkpoint N
 * digest HEX" for the view, exit status 0, or 1 with a message (also
 * for a view another service wrote: refused, as a run would be). */
int svc_digest(const char *prog, const char *service, const char *view);

/* The common flags into the runtime's options: view_dir, the endpoints, source,
 * rebuild, until_head, no_sync, batch_events and ready_file.  The rest
 * of *o (name, tables, ...) is the service's. */
struct funnel_service_opts;
void svc_opts(const svc_args *a, struct funnel_service_opts *o);

/* funnel_service_run, then one log line with where it stopped and its
 * counters ("<name>: stopped at seq N: ..."); returns the run's code.
 * Tells systemd READY=1 before the run and STOPPING=1 after it (no-ops
 * outside a Type=notify unit). */
struct funnel_service;
int svc_run(struct funnel_service *svc, const char *name);

/* From now on SIGTERM and SIGINT ask the program to stop: svc_stopping()
 * turns 1 and the service in *svc, if any (read when the signal comes;
 * svc may be NULL), is stopped (funnel_service_stop).  SIGPIPE is
 * ignored. */
void svc_catch_stop(struct funnel_service *volatile *svc);

/* 1 once SIGTERM or SIGINT came (after svc_catch_stop).
 * Async-signal-safe. */
int svc_stopping(void);

#endif
