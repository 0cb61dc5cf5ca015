/*
 * proto/conf.c - the shared settings file (contract in conf.h), read with
 * libyaml's event parser: depth 1 is the sections, depth 2 the settings.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "conf.h"

/* Every section a program of the project reads. */
static const char *const sections[] = {
	"endpoints", "funneld", "funnel", "funnel-scoring", "funnel-routing", "funnel-metrics",
	"funnel-gateway", "funnel-mirror", NULL
};
static const char *const endpoint_keys[] = { "ingest", "publish", "query", NULL };
#define MAX_ITEMS 256

static int
in_list(const char *const *list, const char *s)
{
	for (size_t i = 0; list[i] != NULL; i++)
		if (strcmp(list[i], s) == 0)
			return 1;
	return 0;
}

static const struct option *
find_opt(const struct option *opts, const char *name)
{
	if (strcmp(name, "help") == 0 || strcmp(name, "version") == 0 || strcmp(name, "config") == 0)
		return NULL;
	for (const struct option *o = opts; o->name != NULL; o++)
		if (strcmp(o->name, name) == 0)
			return o;
	return NULL;
}

const char *
fp_conf_path(int argc, char **argv)
{
	const char *path = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			path = argv[++i];
		else if (strncmp(argv[i], "--config=", 9) == 0)
			path = argv[i] + 9;
	}
	if (path == NULL) {
		path = getenv(FP_CONF_ENV);
		if (path != NULL && path[0] == '\0')
			path = NULL;
	}
	return path;
}

void
fp_conf_free(fp_conf *c)
{
	for (size_t i = 0; c->items != NULL && i < c->n; i++) {
		free((char *)c->items[i].key);
		free((char *)c->items[i].value);
	}
	free(c->items);
	c->items = NULL;
	c->n = 0;
}

/* One setting seen in a section, for the duplicate check. */
struct seen {
	char section[32];
	char key[64];
	size_t line;
};

/* A section that starts: known, and not given before. */
static int
check_section(const char *path, const char *section, size_t line, struct seen *seen,
              size_t *nseen, char *why, size_t whylen)
{
	if (!in_list(sections, section)) {
		snprintf(why, whylen, "%s:%zu: unknown section '%s' (endpoints, funneld, funnel, "
		         "funnel-scoring, funnel-routing, funnel-metrics, funnel-gateway, "
		         "funnel-mirror)", path, line, section);
		return -1;
	}
	for (size_t i = 0; i < *nseen; i++) {
		if (seen[i].key[0] == '\0' && strcmp(seen[i].section, section) == 0) {
			snprintf(why, whylen, "%s:%zu: duplicate section '%s' (first on line %zu)", path,
			         line, section, seen[i].line);
			return -1;
		}
	}
	if (*nseen < MAX_ITEMS) {
		snprintf(seen[*nseen].section, sizeof seen[*nseen].section, "%s", section);
		seen[*nseen].key[0] = '\0';
		seen[(*nseen)++].line = line;
	}
	return 0;
}

int
fp_conf_read(const char *path, const char *prog, const struct option *opts, fp_conf *out,
             char *why, size_t whylen)
{
	FILE *f;
	yaml_parser_t parser;
	yaml_event_t ev;
	struct seen *seen = NULL;
	size_t nseen = 0, line = 0, section_line = 0;
	char section[32] = "", key[64] = "";
	int depth = 0, want_key = 1, done = 0, rc = FP_CONF_ERROR, have_key = 0;
	fp_conf_item *ends = NULL, *own = NULL;
	size_t nends = 0, nown = 0;

	memset(out, 0, sizeof *out);
	snprintf(out->path, sizeof out->path, "%s", path);
	if ((f = fopen(path, "rb")) == NULL) {
		snprintf(why, whylen, "%s: cannot open: %s", path, strerror(errno));
		return FP_CONF_ERROR;
	}
	seen = calloc(MAX_ITEMS, sizeof *seen);
	ends = calloc(MAX_ITEMS, sizeof *ends);
	own = calloc(MAX_ITEMS, sizeof *own);
	if (seen == NULL || ends == NULL || own == NULL) {
		snprintf(why, whylen, "%s: out of memory", path);
		fclose(f);
		free(seen);
		free(ends);
		free(own);
		return FP_CONF_ERROR;
	}
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_file(&parser, f);
	while (!done) {
		if (!yaml_parser_parse(&parser, &ev)) {
			snprintf(why, whylen, "%s:%zu:%zu: %s", path, parser.problem_mark.line + 1,
			         parser.problem_mark.column + 1,
			         parser.problem ? parser.problem : "YAML error");
			goto out;
		}
		line = ev.start_mark.line + 1;
		switch (ev.type) {
		case YAML_MAPPING_START_EVENT:
			if (depth == 1 && !have_key) {
				snprintf(why, whylen, "%s:%zu: a mapping cannot be a key", path, line);
				goto bad;
			}
			if (depth >= 2) {
				snprintf(why, whylen, "%s:%zu: %s.%s: settings are plain values, not mappings",
				         path, line, section, key);
				goto bad;
			}
			if (depth == 1 && check_section(path, section, section_line, seen, &nseen, why,
			                                 whylen) != 0)
				goto bad;
			depth++;
			want_key = 1;
			have_key = 0;
			break;
		case YAML_MAPPING_END_EVENT:
			depth--;
			want_key = 1;
			have_key = 0;
			break;
		case YAML_SEQUENCE_START_EVENT:
			snprintf(why, whylen, "%s:%zu: %s%s%s: settings are plain values, not lists", path,
			         line, section, depth >= 2 ? "." : "", depth >= 2 ? key : "");
			goto bad;
		case YAML_ALIAS_EVENT:
			snprintf(why, whylen, "%s:%zu: aliases are not allowed", path, line);
			goto bad;
		case YAML_SCALAR_EVENT: {
			const char *val = (const char *)ev.data.scalar.value;
			if (depth == 0) {
				snprintf(why, whylen, "%s:%zu: expected a mapping of sections", path, line);
				goto bad;
			}
			if (depth == 1) {
				if (want_key) {
					snprintf(section, sizeof section, "%.*s", (int)(sizeof section - 1), val);
					section_line = line;
					want_key = 0;
					have_key = 1;
				} else if (val[0] == '\0' && in_list(sections, section)) {
					/* "funneld:" with nothing under it: an empty section */
					if (check_section(path, section, section_line, seen, &nseen, why,
					                  whylen) != 0)
						goto bad;
					want_key = 1;
					have_key = 0;
				} else {
					/* a plain value at the top: the older flat form */
					rc = FP_CONF_FLAT;
					yaml_event_delete(&ev);
					goto out;
				}
				break;
			}
			/* depth 2: a setting of `section` */
			if (want_key) {
				snprintf(key, sizeof key, "%.*s", (int)(sizeof key - 1), val);
				want_key = 0;
				for (size_t i = 0; i < nseen; i++) {
					if (strcmp(seen[i].section, section) == 0 && strcmp(seen[i].key, key) == 0) {
						snprintf(why, whylen, "%s:%zu: %s.%s is given twice (first on line %zu)",
						         path, line, section, key, seen[i].line);
						goto bad;
					}
				}
				if (nseen >= MAX_ITEMS) {
					snprintf(why, whylen, "%s:%zu: more than %d settings", path, line, MAX_ITEMS);
					goto bad;
				}
				snprintf(seen[nseen].section, sizeof seen[nseen].section, "%s", section);
				snprintf(seen[nseen].key, sizeof seen[nseen].key, "%s", key);
				seen[nseen++].line = line;
				break;
			}
			want_key = 1;
			int is_ends = strcmp(section, "endpoints") == 0;
			if (is_ends && !in_list(endpoint_keys, key)) {
				snprintf(why, whylen, "%s:%zu: unknown setting endpoints.%s (ingest, publish, "
				         "query)", path, line, key);
				goto bad;
			}
			if (!is_ends && strcmp(section, prog) != 0)
				break;   /* another program's: it checks its own */
			/* opts NULL: another program's section, read as it is */
			const struct option any = { key, required_argument, NULL, 0 };
			const struct option *o = opts != NULL ? find_opt(opts, key) : &any;
			if (o == NULL) {
				snprintf(why, whylen, "%s:%zu: unknown setting %s.%s (not an option of %s)",
				         path, line, section, key, prog);
				goto bad;
			}
			if (o->has_arg == no_argument && strcmp(val, "true") != 0 &&
			    strcmp(val, "false") != 0) {
				snprintf(why, whylen, "%s:%zu: %s.%s is a flag: true or false, not '%s'", path,
				         line, section, key, val);
				goto bad;
			}
			if (o->has_arg == no_argument && strcmp(val, "false") == 0)
				break;
			fp_conf_item *it = is_ends ? &ends[nends++] : &own[nown++];
			it->key = strdup(key);
			it->value = strdup(val);
			it->line = line;
			it->id = o->val;
			it->has_arg = o->has_arg;
			if (it->key == NULL || it->value == NULL) {
				snprintf(why, whylen, "%s: out of memory", path);
				goto bad;
			}
			break;
		}
		case YAML_STREAM_END_EVENT:
			done = 1;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	/* endpoints first, then the program's own settings */
	out->items = calloc(nends + nown + 1, sizeof *out->items);
	if (out->items == NULL) {
		snprintf(why, whylen, "%s: out of memory", path);
		goto out;
	}
	memcpy(out->items, ends, nends * sizeof *ends);
	memcpy(out->items + nends, own, nown * sizeof *own);
	out->n = nends + nown;
	nends = nown = 0;
	rc = FP_CONF_OK;
	goto out;
bad:
	yaml_event_delete(&ev);
out:
	for (size_t i = 0; i < nends; i++) {
		free((char *)ends[i].key);
		free((char *)ends[i].value);
	}
	for (size_t i = 0; i < nown; i++) {
		free((char *)own[i].key);
		free((char *)own[i].value);
	}
	free(ends);
	free(own);
	free(seen);
	yaml_parser_delete(&parser);
	fclose(f);
	if (rc != FP_CONF_OK) {
		fp_conf_free(out);
		if (rc == FP_CONF_FLAT)
			why[0] = '\0';
	}
	return rc;
}

const char *
fp_endpoint_problem(const char *ep, int bind)
{
	if (strncmp(ep, "ipc://", 6) == 0)
		return ep[6] != '\0' ? NULL : "the endpoint names no path: ipc://PATH";
	if (strncmp(ep, "inproc://", 9) == 0)
		return ep[9] != '\0' ? NULL : "the endpoint names nothing: inproc://NAME";
	if (strncmp(ep, "tcp://", 6) != 0)
		return "the transport must be tcp://, ipc:// or inproc://";
	const char *host = ep + 6, *colon;
	if (host[0] == '[') {   /* [IPv6]:PORT */
		const char *close = strchr(host, ']');
		colon = close != NULL && close[1] == ':' ? close + 1 : NULL;
	} else {
		colon = strrchr(host, ':');
	}
	if (colon == NULL)
		return "the endpoint has no port: tcp://HOST:PORT";
	if (colon == host)
		return "the endpoint has no host: tcp://HOST:PORT";
	const char *port = colon + 1;
	if (strcmp(port, "*") == 0)
		return bind ? NULL : "a client connects to a port number, not *";
	size_t n = strspn(port, "0123456789");
	if (n == 0 || port[n] != '\0' || n > 5 || atol(port) < 1 || atol(port) > 65535)
		return bind ? "the port must be * or a number from 1 to 65535"
		            : "the port must be a number from 1 to 65535";
	return NULL;
}

int
fp_endpoints_check(const char *ingest, const char *publish, const char *query, char *msg,
                   size_t len)
{
	const char *const eps[3][2] = { { "ingest", ingest }, { "publish", publish },
	                                { "query", query } };
	for (int i = 0; i < 3; i++) {
		const char *why = eps[i][1] != NULL ? fp_endpoint_problem(eps[i][1], 0) : NULL;
		if (why != NULL) {
			snprintf(msg, len, "the %s endpoint %s: %s", eps[i][0], eps[i][1], why);
			return -1;
		}
	}
	return 0;
}
