/*
 * clients/common/svcmain.h - the one main of every funnel service.  A
 * service is a description (svc_desc): its name, its tables, its rules
 * section, apply and an optional tick (the engine over the view), its own
 * options and commands; svc_main does the rest, the same for all:
 *
 *   - the command line (svcargs.h: the common flags, the settings file,
 *     the service's own options, --help, usage errors);
 *   - the commands: `run` (the default), `check [FILE]` when the service
 *     has a rules section, `digest`, and the service's own (explain,
 *     what-if, report...), with "unknown command" and "wrong number of
 *     arguments" said the same way everywhere;
 *   - `run` on the view: the rules parsed (refused before anything
 *     opens), the engine set up, funnel_service_new with the one
 *     "<name>: cannot start: ..." line, the signals that stop the service,
 *     rules.changed recorded before the first decision (rulesrec.h), then
 *     funnel_service_run with its closing line (svc_run);
 *   - the one signal handler and "the service" it stops.
 *
 * A program without a view (the mirror, the gateway) gives `run`
 * instead of apply: svc_main parses, dispatches (`run`, `check` when it
 * has a rules section, its own commands; no `digest`; the same "unknown
 * command" and "wrong number of arguments") and sets the signals before
 * `run`, which polls svc_stopping() (svcargs.h).
 *
 * svcargs.[ch] and svcmain.[ch] are one module, the service runner, in
 * two layers (prefix svc_): svcargs is the command line and the signals;
 * svcmain is the main on top.
 *
 * Every pointer in svc_desc must outlive svc_main; `ctx` is the
 * service's own settings (a struct that embeds the svc_args `args`
 * points to), handed to every hook.  svc_main owns what rules_load and
 * setup made and hands it back to rules_destroy and release on every path
 * out of `run`, a failed start included.
 *
 * Threads: svc_main is the program's main, called once per process on
 * its main thread (getopt's globals, the signal handlers and the one
 * service the signals stop are process-wide); every hook runs on that
 * thread, apply and tick inside funnel_service_run.
 */
#ifndef FUNNEL_SVCMAIN_H
#define FUNNEL_SVCMAIN_H

#include "funnel/service.h"
#include "rulesrec.h"
#include "svcargs.h"

/* A command of the service's own: argv[0..argc-1] are its arguments
 * (min_args..max_args of them).  Returns the exit status. */
typedef struct svc_command {
	const char *name;
	int min_args, max_args;
	int (*fn)(void *ctx, int argc, char **argv);
} svc_command;

typedef struct svc_desc {
	const char *name;          /* "scoring": the runtime's name, starts every log line */
	const char *prog;          /* "funnel-scoring": messages and the settings file's section */
	const char *usage;         /* --help and after a usage error */
	svc_args *args;            /* the common flags, the service's defaults filled in */
	void *ctx;                 /* the service's settings, for every hook below */
	const struct option *own;  /* the service's options (ids from SVC_OPT_OWN), or NULL */
	svc_own_fn own_fn;
	/* After the flags, before any command (e.g. read an access file):
	 * -1 to go on, else the exit status.  Optional. */
	int (*prepare)(void *ctx);

	/* The rules section, or rules_load NULL (no `check`, nothing
	 * recorded).  rules_load parses path (check: for `check`, else for
	 * `run`) into *rules (NULL allowed: no rules here) and returns 0, or
	 * the exit status after its message.  rules_ok prints check's line.
	 * rules_id: 1 and *id filled when the rules go on record
	 * (rules.changed) before the service decides anything, else 0. */
	int (*rules_load)(void *ctx, const char *path, int check, void **rules);
	void (*rules_destroy)(void *rules);
	void (*rules_ok)(const char *path, const void *rules);
	int (*rules_id)(const void *rules, rr_rules_id *id);

	/* `run` on a view.  setup makes the engine from the rules (its
	 * *engine is apply's and tick's ctx) and sets the options that are
	 * the service's (tick_ms, map_size, no_emit, map_lock); a failure is
	 * the "cannot start" line.  started: after the view opened, before
	 * the rules are recorded (say what runs); serving: after (start
	 * serving HTTP); each FUNNEL_OK to go on.  stop: before the view
	 * closes; release: after.  All optional but apply. */
	const char *tables[FUNNEL_SERVICE_MAX_TABLES];
	funnel_apply_fn apply;
	funnel_tick_fn tick;
	int (*setup)(void *ctx, void *rules, funnel_service_opts *o, void **engine);
	int (*started)(void *ctx, funnel_service *svc, void *engine);
	int (*serving)(void *ctx, funnel_service *svc, void *engine);
	void (*stop)(void *ctx, void *engine);
	void (*release)(void *ctx, void *engine);

	/* Instead of apply: `run` for a program without a view (rules_load,
	 * if any, then serves `check` only).  Exit status. */
	int (*run)(void *ctx);

	const svc_command *commands;   /* ending with a NULL name; may be NULL */
} svc_desc;

/* The program: returns its exit status (0 ok, 1 failure, 2 usage or
 * rules-file error). */
int svc_main(const svc_desc *d, int argc, char **argv);

/* A usage error of the program svc_main runs, for an own_fn that lives
 * apart from the usage text: svc_usage with its prog and usage. */
int svc_main_usage(const char *fmt, const char *arg);

#endif
