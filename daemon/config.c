/*
 * daemon/config.c - defaults, YAML config file (libyaml), flags.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "funnel/limits.h"
#include "conf.h"
#include "config.h"
#include "journal.h"
#include "log.h"
#include "longopt.h"
#include "vault.h"

static const char usage[] =
	"usage: funneld [options]\n"
	"\n"
	"The funnel lead-event log daemon.  Defaults need no setup: data in\n"
	"./var/funnel, endpoints on loopback.\n"
	"\n"
	"  --data DIR           data directory (default ./var/funnel)\n"
	"  --ingest EP          ingest ROUTER endpoint (default " FUNNEL_DEFAULT_INGEST ")\n"
	"  --publish EP         publish PUB endpoint (default " FUNNEL_DEFAULT_PUBLISH ")\n"
	"  --query EP           replay/query ROUTER endpoint (default " FUNNEL_DEFAULT_QUERY ")\n"
	"                       a port of * picks a free port; see --ready-file\n"
	"  --config FILE        the settings file every funnel program reads (YAML;\n"
	"                       sections endpoints: and funneld:, keys are the long\n"
	"                       option names: data, no-sync, ...; env FUNNEL_CONFIG)\n"
	"  --no-sync            do NOT fsync before acknowledging: faster, but a\n"
	"                       power loss or OS crash can lose acknowledged events\n"
	"  --pub-hwm N          publish high-water mark in messages (default 100000)\n"
	"  --heartbeat-ms N     heartbeat period on the publish socket (default 1000)\n"
	"  --map-size BYTES     initial LMDB map size (default 1 GiB; it grows)\n"
	"  --max-map-size BYTES never grow the map past this (default: no cap; at\n"
	"                       least 1 MiB, and not below --map-size)\n"
	"  --journal-size BYTES size of the write-ahead journal created in the data\n"
	"                       directory (default 64 MiB, at least 64 KiB, at most\n"
	"                       16 GiB and what the file system has free; an\n"
	"                       existing journal keeps its size)\n"
	"  --ready-file PATH    once serving, write the bound endpoints and pid here\n"
	"  --log-level LEVEL    debug, info, warn or error (default info)\n"
	"  --access FILE        the access file: CURVE on every socket, each key a\n"
	"                       principal stamped into its records (needs --key);\n"
	"                       SIGHUP reloads it\n"
	"  --key FILE           funneld's CURVE secret key (funnel keygen funneld)\n"
	"  --insecure           allow an endpoint beyond loopback without --access\n"
	"  --master-key FILE    seal personal data under per-lead keys wrapped by\n"
	"                       this key (32 bytes or 64 hex digits; keep it OUT of\n"
	"                       the data directory; env FUNNEL_MASTER_KEY_FILE)\n"
	"  --personal-fields LIST  the data paths sealed, comma-separated (default\n"
	"                       " VAULT_DEFAULT_FIELDS ")\n"
	"  --help, --version\n"
	"\n"
	"Long options are spelled in full: a prefix (--dat for --data) is refused.\n"
	"A data directory is used by one funneld at a time (funnel.lock in it).\n"
	"Endpoints are tcp://HOST:PORT (PORT 1-65535, or *), ipc://PATH or inproc://NAME.\n"
	"\n"
	"Exit status: 0 after SIGTERM or SIGINT; 2 a setting refused (nothing is\n"
	"created on disk); 1 any other failure (the data directory, its lock, a\n"
	"port, the disk).  A start refused after the data directory was opened\n"
	"removes what it created there.\n";

enum {
	OPT_DATA = 1000, OPT_INGEST, OPT_PUBLISH, OPT_QUERY, OPT_CONFIG, OPT_NOSYNC, OPT_PUBHWM,
	OPT_HEARTBEAT, OPT_MAPSIZE, OPT_MAXMAP, OPT_JOURNAL, OPT_READY, OPT_LOGLEVEL, OPT_ACCESS, OPT_KEY, OPT_INSECURE, OPT_MASTERKEY, OPT_PERSONAL, OPT_HELP, OPT_VERSION
};

static const struct option options[] = {
	{ "data", required_argument, NULL, OPT_DATA },
	{ "ingest", required_argument, NULL, OPT_INGEST },
	{ "publish", required_argument, NULL, OPT_PUBLISH },
	{ "query", required_argument, NULL, OPT_QUERY },
	{ "config", required_argument, NULL, OPT_CONFIG },
	{ "no-sync", no_argument, NULL, OPT_NOSYNC },
	{ "pub-hwm", required_argument, NULL, OPT_PUBHWM },
	{ "heartbeat-ms", required_argument, NULL, OPT_HEARTBEAT },
	{ "map-size", required_argument, NULL, OPT_MAPSIZE },
	{ "max-map-size", required_argument, NULL, OPT_MAXMAP },
	{ "journal-size", required_argument, NULL, OPT_JOURNAL },
	{ "ready-file", required_argument, NULL, OPT_READY },
	{ "log-level", required_argument, NULL, OPT_LOGLEVEL },
	{ "access", required_argument, NULL, OPT_ACCESS },
	{ "key", required_argument, NULL, OPT_KEY },
	{ "insecure", no_argument, NULL, OPT_INSECURE },
	{ "master-key", required_argument, NULL, OPT_MASTERKEY },
	{ "personal-fields", required_argument, NULL, OPT_PERSONAL },
	{ "help", no_argument, NULL, OPT_HELP },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ NULL, 0, NULL, 0 }
};

static int
parse_size(const char *s, size_t *out)
{
	char *end;
	errno = 0;
	unsigned shift = 0;
	if (*s == '-' || *s == '+')
		return -1;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || end == s)
		return -1;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	}
	/* a size that does not fit 64 bits is refused, not wrapped */
	if (v > (ULLONG_MAX >> shift) || (v << shift) > SIZE_MAX)
		return -1;
	v <<= shift;
	if (*end == 'i' || *end == 'B')   /* accept KiB, MB, ... */
		end++;
	if (*end == 'B')
		end++;
	if (*end != '\0')
		return -1;
	*out = (size_t)v;
	return 0;
}

static int
parse_int(const char *s, int min, int *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > 1000000000L)
		return -1;
	*out = (int)v;
	return 0;
}

/* Apply one setting; `src` names where it came from for the message. */
static int
apply(config *c, int opt, const char *val, const char *src)
{
	switch (opt) {
	case OPT_DATA: snprintf(c->data_dir, sizeof c->data_dir, "%s", val); return 0;
	case OPT_INGEST: snprintf(c->ingest, sizeof c->ingest, "%s", val); return 0;
	case OPT_PUBLISH: snprintf(c->publish, sizeof c->publish, "%s", val); return 0;
	case OPT_QUERY: snprintf(c->query, sizeof c->query, "%s", val); return 0;
	case OPT_READY: snprintf(c->ready_file, sizeof c->ready_file, "%s", val); return 0;
	case OPT_MASTERKEY: snprintf(c->master_key, sizeof c->master_key, "%s", val); return 0;
	case OPT_PERSONAL:
		if (strlen(val) < sizeof c->personal_fields) {
			snprintf(c->personal_fields, sizeof c->personal_fields, "%s", val);
			return 0;
		}
		break;
	case OPT_ACCESS: snprintf(c->access, sizeof c->access, "%s", val); return 0;
	case OPT_KEY: snprintf(c->key, sizeof c->key, "%s", val); return 0;
	case OPT_INSECURE:
		if (val == NULL || strcmp(val, "true") == 0 || strcmp(val, "yes") == 0) {
			c->insecure = 1;
			return 0;
		}
		if (strcmp(val, "false") == 0 || strcmp(val, "no") == 0) {
			c->insecure = 0;
			return 0;
		}
		break;
	case OPT_NOSYNC:
		if (val == NULL || strcmp(val, "true") == 0 || strcmp(val, "yes") == 0) {
			c->durable = 0;
			return 0;
		}
		if (strcmp(val, "false") == 0 || strcmp(val, "no") == 0) {
			c->durable = 1;
			return 0;
		}
		break;
	case OPT_PUBHWM:
		if (parse_int(val, 0, &c->pub_hwm) == 0)
			return 0;
		break;
	case OPT_HEARTBEAT:
		if (parse_int(val, 10, &c->heartbeat_ms) == 0)
			return 0;
		break;
	case OPT_MAPSIZE:
		if (parse_size(val, &c->map_size) == 0 && c->map_size >= (1u << 20)) {
			c->map_size_given = 1;
			return 0;
		}
		break;
	case OPT_MAXMAP:
		/* 0: no cap; else at least the smallest --map-size */
		if (parse_size(val, &c->max_map_size) == 0 &&
		    (c->max_map_size == 0 || c->max_map_size >= (1u << 20)))
			return 0;
		break;
	case OPT_JOURNAL:
		if (parse_size(val, &c->journal_size) != 0 || c->journal_size < JOURNAL_MIN_SIZE)
			break;
		if (c->journal_size > CONFIG_MAX_JOURNAL_SIZE) {
			fprintf(stderr, "funneld: %s: '%s' (%zu bytes) is more than the largest journal, "
			        "%zu bytes (16 GiB)\n", src, val, c->journal_size, CONFIG_MAX_JOURNAL_SIZE);
			return -1;
		}
		return 0;
	case OPT_LOGLEVEL:
		if (log_set_level(val) == 0) {
			snprintf(c->log_level, sizeof c->log_level, "%s", val);
			return 0;
		}
		break;
	}
	fprintf(stderr, "funneld: %s: invalid value '%s'\n", src, val ? val : "");
	return -1;
}

/* The config file: one YAML mapping of option name -> scalar. */
static int
load_file(config *c, const char *path)
{
	FILE *f = fopen(path, "rb");
	yaml_parser_t parser;
	yaml_event_t ev;
	char key[64] = "";
	int depth = 0, want_key = 1, rc = -1, done = 0;
	size_t seen[OPT_VERSION - OPT_DATA + 1] = { 0 };  /* line of each setting, 0: not yet */

	if (f == NULL) {
		fprintf(stderr, "funneld: cannot open config %s: %s\n", path, strerror(errno));
		return -1;
	}
	yaml_parser_initialize(&parser);
	yaml_parser_set_input_file(&parser, f);
	while (!done) {
		if (!yaml_parser_parse(&parser, &ev)) {
			fprintf(stderr, "funneld: %s:%zu:%zu: %s\n", path, parser.problem_mark.line + 1,
			        parser.problem_mark.column + 1, parser.problem ? parser.problem : "YAML error");
			goto out;
		}
		size_t line = ev.start_mark.line + 1;
		switch (ev.type) {
		case YAML_MAPPING_START_EVENT:
			if (++depth > 1) {
				fprintf(stderr, "funneld: %s:%zu: settings must be plain values, not mappings\n",
				        path, line);
				yaml_event_delete(&ev);
				goto out;
			}
			break;
		case YAML_SEQUENCE_START_EVENT:
			fprintf(stderr, "funneld: %s:%zu: settings must be plain values, not lists\n", path, line);
			yaml_event_delete(&ev);
			goto out;
		case YAML_MAPPING_END_EVENT:
			depth--;
			break;
		case YAML_SCALAR_EVENT: {
			const char *val = (const char *)ev.data.scalar.value;
			if (depth != 1) {
				fprintf(stderr, "funneld: %s:%zu: expected a mapping of settings\n", path, line);
				yaml_event_delete(&ev);
				goto out;
			}
			if (want_key) {
				snprintf(key, sizeof key, "%s", val);
				want_key = 0;
				break;
			}
			want_key = 1;
			int opt = 0;
			for (const struct option *o = options; o->name; o++) {
				if (strcmp(o->name, key) == 0)
					opt = o->val;
			}
			char src[4200];
			snprintf(src, sizeof src, "%s:%zu: %s", path, line, key);
			if (opt == 0 || opt == OPT_CONFIG || opt == OPT_HELP || opt == OPT_VERSION) {
				fprintf(stderr, "funneld: %s:%zu: unknown setting '%s'\n", path, line, key);
				yaml_event_delete(&ev);
				goto out;
			}
			if (seen[opt - OPT_DATA] != 0) {
				fprintf(stderr, "funneld: %s:%zu: duplicate key '%s' (first given on line %zu)\n",
				        path, line, key, seen[opt - OPT_DATA]);
				yaml_event_delete(&ev);
				goto out;
			}
			seen[opt - OPT_DATA] = line;
			if (apply(c, opt, val, src) != 0) {
				yaml_event_delete(&ev);
				goto out;
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
	rc = 0;
out:
	yaml_parser_delete(&parser);
	fclose(f);
	return rc;
}

int
config_load(config *c, int argc, char **argv)
{
	memset(c, 0, sizeof *c);
	snprintf(c->data_dir, sizeof c->data_dir, "var/funnel");
	snprintf(c->ingest, sizeof c->ingest, FUNNEL_DEFAULT_INGEST);
	snprintf(c->publish, sizeof c->publish, FUNNEL_DEFAULT_PUBLISH);
	snprintf(c->query, sizeof c->query, FUNNEL_DEFAULT_QUERY);
	snprintf(c->log_level, sizeof c->log_level, "info");
	c->durable = 1;
	c->pub_hwm = 100000;
	c->heartbeat_ms = 1000;
	c->map_size = (size_t)1 << 30;
	c->journal_size = JOURNAL_DEFAULT_SIZE;
	snprintf(c->personal_fields, sizeof c->personal_fields, "%s", VAULT_DEFAULT_FIELDS);

	/* The config file first, so flags override it: the shared settings
	 * file (its endpoints and funneld sections), or the older flat form. */
	const char *path = fp_conf_path(argc, argv);
	if (path != NULL) {
		fp_conf conf;
		char why[512];
		int rc = fp_conf_read(path, "funneld", options, &conf, why, sizeof why);
		if (rc == FP_CONF_ERROR) {
			fprintf(stderr, "funneld: %s\n", why);
			return -1;
		}
		if (rc == FP_CONF_FLAT && load_file(c, path) != 0)
			return -1;
		for (size_t i = 0; rc == FP_CONF_OK && i < conf.n; i++) {
			char src[4200];
			snprintf(src, sizeof src, "%s:%zu: %s", path, conf.items[i].line, conf.items[i].key);
			if (apply(c, conf.items[i].id, conf.items[i].value, src) != 0) {
				fp_conf_free(&conf);
				return -1;
			}
		}
		if (rc == FP_CONF_OK)
			fp_conf_free(&conf);
	}
	/* the environment over the file, flags over both */
	const char *mk = getenv("FUNNEL_MASTER_KEY_FILE");
	if (mk != NULL && mk[0] != '\0')
		snprintf(c->master_key, sizeof c->master_key, "%s", mk);
	optind = 1;
	int opt, idx = -1;
	while ((opt = getopt_long(argc, argv, "", options, &idx)) != -1) {
		const char *abbrev = longopt_abbrev(argv, options, idx);
		idx = -1;
		if (abbrev != NULL) {
			fprintf(stderr, "funneld: unknown option '%s' (long options are spelled in full)\n%s",
			        abbrev, usage);
			return -1;
		}
		switch (opt) {
		case OPT_HELP:
			fputs(usage, stdout);
			return 1;
		case OPT_VERSION:
			printf("funneld %s\n", FUNNEL_VERSION);
			return 1;
		case OPT_CONFIG:
			break;
		case '?':
			fputs(usage, stderr);
			return -1;
		default: {
			char src[64];
			snprintf(src, sizeof src, "option --%s", options[opt - OPT_DATA].name);
			if (apply(c, opt, optarg, src) != 0)
				return -1;
		}
		}
	}
	if (optind < argc) {
		fprintf(stderr, "funneld: unexpected argument '%s'\n%s", argv[optind], usage);
		return -1;
	}
	/* Each endpoint is checked before anything is created (main.c). */
	const struct { const char *flag, *ep; } eps[] = {
		{ "--ingest", c->ingest }, { "--publish", c->publish }, { "--query", c->query },
	};
	for (size_t i = 0; i < sizeof eps / sizeof eps[0]; i++) {
		const char *why = fp_endpoint_problem(eps[i].ep, 1);
		if (why != NULL) {
			fprintf(stderr, "funneld: %s %s: %s\n", eps[i].flag, eps[i].ep, why);
			return -1;
		}
	}
	if (c->data_dir[0] == '\0') {
		fprintf(stderr, "funneld: the data directory is empty: give --data DIR (or data: in "
		        "the settings file)\n");
		return -1;
	}
	/* A cap below the default map lowers the map; below one given, the
	 * two settings contradict each other. */
	if (c->max_map_size && c->max_map_size < c->map_size) {
		if (c->map_size_given) {
			fprintf(stderr, "funneld: --max-map-size %zu is below --map-size %zu: the map "
			        "could never be as large as asked\n", c->max_map_size, c->map_size);
			return -1;
		}
		c->map_size = c->max_map_size;
	}
	if ((c->access[0] != '\0') != (c->key[0] != '\0')) {
		fprintf(stderr, "funneld: --access and --key go together: %s\n",
		        c->access[0] ? "--access needs --key (funneld's secret key file)"
		                     : "--key is used only with --access");
		return -1;
	}
	return 0;
}
