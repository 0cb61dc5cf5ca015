/*
 * proto/longopt.h - long options spelled in full.  getopt_long takes any
 * unambiguous prefix of a long option ("--dat" for "--data", "--rule"
 * for "--rules"); every funnel program refuses that, so an option typed
 * short never means something the operator did not write.
 *
 * Use: set idx = -1, call getopt_long(..., opts, &idx); when it returned
 * a long option (idx >= 0), longopt_abbrev() says whether argv spelled
 * it in full, and longopt_value_is_option() whether its value is the next
 * option (a value forgotten).  Header only: funneld, libfunnel's programs
 * and the services all include it.
 */
#ifndef FUNNEL_PROTO_LONGOPT_H
#define FUNNEL_PROTO_LONGOPT_H

#include <getopt.h>
#include <string.h>

/* NULL when the long option opts[idx] just returned by getopt_long was
 * written in full (or idx < 0: a short option), else the argv element
 * as written ("--dat" or "--dat=DIR"), for the message. */
static inline const char *
longopt_abbrev(char *const argv[], const struct option *opts, int idx)
{
	if (idx < 0 || optind < 1)
		return NULL;
	/* A separate value was argv[optind - 1]; the option is before it. */
	const char *arg = optarg != NULL && optind >= 2 && optarg == argv[optind - 1]
	                ? argv[optind - 2] : argv[optind - 1];
	if (strncmp(arg, "--", 2) != 0)
		return NULL;
	size_t n = strcspn(arg + 2, "=");
	return strlen(opts[idx].name) == n && strncmp(opts[idx].name, arg + 2, n) == 0 ? NULL : arg;
}

/* When the long option opts[idx] just returned took as its separate value
 * the next option (`--view --rules X`: the value of --view forgotten),
 * that option as written, for the message; else NULL.  Only a value that
 * names one of opts in full counts: any other text may be a value. */
static inline const char *
longopt_value_is_option(char *const argv[], const struct option *opts, int idx)
{
	if (idx < 0 || opts[idx].has_arg != required_argument || optarg == NULL || optind < 2 ||
	    optarg != argv[optind - 1] || strncmp(optarg, "--", 2) != 0)
		return NULL;
	size_t n = strcspn(optarg + 2, "=");
	for (const struct option *o = opts; o->name != NULL; o++)
		if (strlen(o->name) == n && strncmp(o->name, optarg + 2, n) == 0)
			return optarg;
	return NULL;
}

#endif
