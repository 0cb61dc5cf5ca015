/*
 * clients/cli/info.c - `funnel status` and `funnel verify`: what the
 * daemon reports about itself, and the hash chain recomputed here.
 */
#include <inttypes.h>
#include <string.h>

#include "funnel/service.h"

#include "cli.h"
#include "conf.h"
#include "json.h"
#include "util.h"

static const char status_help[] =
	"usage: funnel status [--json | --human]\n"
	"\n"
	"The daemon's head seq and hash, event and lead counts, data and map size,\n"
	"map use (data size / map size), disk free on the data directory's file\n"
	"system, uptime, version, on-disk format, durability, endpoints and data\n"
	"directory.  With a settings file (--config, FUNNEL_CONFIG), each service\n"
	"whose section names a view: its checkpoint and lag (head - checkpoint),\n"
	"read from the view on this machine.\n"
	"\n"
	CLI_GLOBAL_HELP;

static const char verify_help[] =
	"usage: funnel verify [--from SEQ] [--to SEQ] [--json | --human]\n"
	"\n"
	"Recompute the hash chain over the records the daemon replays (the whole log\n"
	"by default) and print the head hash, to be kept somewhere else for audits:\n"
	"  ok: N records verified, head seq H, head hash <hex>\n"
	"or name the first record that breaks the chain and exit 3:\n"
	"  BROKEN at seq S: <why>\n"
	"With --from S the chain is anchored on record S-1's stored hash.\n"
	"\n"
	CLI_GLOBAL_HELP;

/* Options of a command that has only the global ones and --from/--to. */
static int
parse_simple(struct cli *g, int argc, char **argv, const char *help, uint64_t *from,
             uint64_t *to)
{
	static const struct option plain[] = {
		CLI_GLOBAL_OPTIONS,
		{ NULL, 0, NULL, 0 }
	};
	static const struct option ranged[] = {
		CLI_GLOBAL_OPTIONS,
		{ "from", required_argument, NULL, OPT_FROM },
		{ "to", required_argument, NULL, OPT_TO },
		{ NULL, 0, NULL, 0 }
	};
	int c;

	cli_getopt_begin();
	while ((c = cli_getopt(g, argc, argv, from != NULL ? ranged : plain)) != -1) {
		switch (c) {
		case OPT_HELP:
			fputs(help, stdout);
			return -1;
		case OPT_FROM:
		case OPT_TO:
			if (cli_parse_u64(optarg, c == OPT_FROM ? from : to) != 0 ||
			    (c == OPT_FROM ? *from : *to) == 0)
				return cli_usage(g, "--%s wants a seq (>= 1), not '%s'",
				                 c == OPT_FROM ? "from" : "to", optarg);
			break;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (optind < argc)
		return cli_usage(g, "unexpected argument '%s'", argv[optind]);
	if (from != NULL && *from != 0 && *to != 0 && *to < *from)
		return cli_usage(g, "--to %" PRIu64 " is before --from %" PRIu64, *to, *from);
	return 0;
}

/* The share of the map the log fills (0..1): when it is full, funneld
 * doubles it, up to --max-map-size and what the disk has free. */
static double
map_use(const funnel_status *st)
{
	return st->map_bytes ? (double)st->data_bytes / (double)st->map_bytes : 0.0;
}

/* A service named in the settings file, and how far its view is behind. */
struct svc_lag {
	const char *name;
	char view[4096];
	uint64_t checkpoint;
	int rc;            /* FUNNEL_OK, or why the view could not be read */
	char owner[64];    /* the service the view records, when not this one
	                    * (a settings file naming another's view): rc EVALUE */
};

static const char *const services[] = { "funnel-scoring", "funnel-routing", "funnel-metrics" };
#define NSERVICES (sizeof services / sizeof services[0])

/* The services whose section in the settings file at path (NULL: none)
 * names a view: their checkpoints, read from the views on this machine.
 * Returns how many. */
static size_t
service_lags(const char *path, struct svc_lag out[NSERVICES])
{
	size_t n = 0;

	for (size_t i = 0; path != NULL && i < NSERVICES; i++) {
		fp_conf conf;
		char why[512];
		if (fp_conf_read(path, services[i], NULL, &conf, why, sizeof why) != FP_CONF_OK)
			continue;
		for (size_t j = 0; j < conf.n; j++) {
			if (strcmp(conf.items[j].key, "view") != 0)
				continue;
			out[n].name = services[i];
			snprintf(out[n].view, sizeof out[n].view, "%s", conf.items[j].value);
			out[n].rc = funnel_view_checkpoint(out[n].view, &out[n].checkpoint);
			out[n].owner[0] = '\0';
			if (out[n].rc == FUNNEL_OK &&
			    (out[n].rc = funnel_view_owner(out[n].view, out[n].owner,
			                                   sizeof out[n].owner)) == FUNNEL_OK &&
			    out[n].owner[0] != '\0' && strcmp(out[n].owner, services[i] + 7) != 0)
				out[n].rc = FUNNEL_EVALUE;   /* its checkpoint is another service's */
			else
				out[n].owner[0] = '\0';
			n++;
			break;
		}
		fp_conf_free(&conf);
	}
	return n;
}

static int
status_json(const funnel_status *st, const struct svc_lag *lags, size_t nlags)
{
	char when[CLI_TIME_LEN];
	cJSON *o = cJSON_CreateObject();
	int rc = -1;

	cli_format_time(st->head_ts, when);
	if (o == NULL || fjson_add_u64(o, "head", st->head) == NULL ||
	    fjson_add_hex(o, "head_hash", st->head_hash, sizeof st->head_hash) == NULL ||
	    fjson_add_u64(o, "head_ts", st->head_ts) == NULL ||
	    (st->head != 0 && cJSON_AddStringToObject(o, "head_time", when) == NULL) ||
	    fjson_add_u64(o, "count", st->count) == NULL ||
	    fjson_add_u64(o, "leads", st->leads) == NULL ||
	    fjson_add_u64(o, "data_bytes", st->data_bytes) == NULL ||
	    fjson_add_u64(o, "map_bytes", st->map_bytes) == NULL ||
	    cJSON_AddNumberToObject(o, "map_use", map_use(st)) == NULL ||
	    fjson_add_u64(o, "disk_free_bytes", st->disk_free_bytes) == NULL ||
	    fjson_add_u64(o, "disk_bytes", st->disk_bytes) == NULL ||
	    fjson_add_u64(o, "uptime_ms", st->uptime_ms) == NULL ||
	    cJSON_AddStringToObject(o, "version", st->version) == NULL ||
	    fjson_add_u64(o, "format", st->format) == NULL ||
	    cJSON_AddBoolToObject(o, "durable", st->durable) == NULL ||
	    cJSON_AddStringToObject(o, "ingest", st->ingest) == NULL ||
	    cJSON_AddStringToObject(o, "publish", st->publish) == NULL ||
	    cJSON_AddStringToObject(o, "query", st->query) == NULL ||
	    cJSON_AddStringToObject(o, "data_dir", st->data_dir) == NULL)
		goto done;
	if (nlags > 0) {
		cJSON *arr = cJSON_AddArrayToObject(o, "services");
		if (arr == NULL)
			goto done;
		for (size_t i = 0; i < nlags; i++) {
			cJSON *s = cJSON_CreateObject();
			if (s == NULL || !cJSON_AddItemToArray(arr, s) ||
			    cJSON_AddStringToObject(s, "name", lags[i].name) == NULL ||
			    cJSON_AddStringToObject(s, "view", lags[i].view) == NULL)
				goto done;
			if (lags[i].rc != FUNNEL_OK) {
				if (cJSON_AddStringToObject(s, "error", funnel_errname(lags[i].rc)) == NULL ||
				    (lags[i].owner[0] != '\0' &&
				     cJSON_AddStringToObject(s, "owner", lags[i].owner) == NULL))
					goto done;
				continue;
			}
			if (fjson_add_u64(s, "checkpoint", lags[i].checkpoint) == NULL ||
			    fjson_add_u64(s, "lag", st->head > lags[i].checkpoint
			                                ? st->head - lags[i].checkpoint : 0) == NULL)
				goto done;
		}
	}
	rc = fjson_print_line(stdout, o);
done:
	cJSON_Delete(o);
	return rc;
}

static void
status_human(const funnel_status *st, const struct svc_lag *lags, size_t nlags)
{
	char hash[2 * FUNNEL_HASH_BYTES + 1], when[CLI_TIME_LEN], data[32], map[32], up[48];
	char dfree[32], dsize[32];

	cli_hex(st->head_hash, sizeof st->head_hash, hash);
	cli_format_time(st->head_ts, when);
	cli_human_bytes(st->data_bytes, data, sizeof data);
	cli_human_bytes(st->map_bytes, map, sizeof map);
	cli_human_duration(st->uptime_ms, up, sizeof up);
	cli_human_bytes(st->disk_free_bytes, dfree, sizeof dfree);
	cli_human_bytes(st->disk_bytes, dsize, sizeof dsize);
	printf("head seq    %" PRIu64 "\n", st->head);
	printf("head hash   %s\n", hash);
	printf("head time   %s\n", st->head != 0 ? when : "-");
	printf("events      %" PRIu64 "\n", st->count);
	printf("leads       %" PRIu64 "\n", st->leads);
	printf("data size   %s\n", data);
	printf("map size    %s\n", map);
	printf("map use     %.1f%%\n", 100.0 * map_use(st));
	if (st->disk_bytes != 0)
		printf("disk free   %s of %s\n", dfree, dsize);
	else
		printf("disk free   -\n");
	printf("uptime      %s\n", up);
	printf("version     %s\n", st->version);
	printf("format      %" PRIu32 "\n", st->format);
	printf("durable     %s\n", st->durable ? "yes (fsync before every ack)" : "no (--no-sync)");
	printf("ingest      %s\n", st->ingest);
	printf("publish     %s\n", st->publish);
	printf("query       %s\n", st->query);
	printf("data dir    %s\n", st->data_dir);
	for (size_t i = 0; i < nlags; i++) {
		if (lags[i].owner[0] != '\0')
			printf("%-11s view %s belongs to %s: not this service's view (check the "
			       "settings file)\n", lags[i].name + 7, lags[i].view, lags[i].owner);
		else if (lags[i].rc != FUNNEL_OK)
			printf("%-11s view %s: %s\n", lags[i].name + 7, lags[i].view,
			       funnel_strerror(lags[i].rc));
		else
			printf("%-11s checkpoint %" PRIu64 ", lag %" PRIu64 " events\n", lags[i].name + 7,
			       lags[i].checkpoint,
			       st->head > lags[i].checkpoint ? st->head - lags[i].checkpoint : 0);
	}
}

int
cmd_status(struct cli *g, int argc, char **argv)
{
	funnel_query *q = NULL;
	funnel_status st;
	struct svc_lag lags[NSERVICES];
	size_t nlags;
	int rc, ret;

	if ((ret = parse_simple(g, argc, argv, status_help, NULL, NULL)) != 0)
		return ret < 0 ? CLI_EXIT_OK : ret;
	ret = CLI_EXIT_FAIL;
	if ((q = cli_query_open(g)) == NULL)
		goto done;
	memset(&st, 0, sizeof st);
	if ((rc = funnel_status_get(q, &st)) != FUNNEL_OK) {
		cli_fail(g, rc, funnel_query_error(q), g->query);
		goto done;
	}
	nlags = service_lags(g->config, lags);
	if (cli_json(g)) {
		if (status_json(&st, lags, nlags) != 0) {
			cli_fail(g, FUNNEL_ENOMEM, NULL, NULL);
			goto done;
		}
	} else {
		status_human(&st, lags, nlags);
	}
	ret = fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
done:
	funnel_query_destroy(&q);
	return ret;
}

int
cmd_verify(struct cli *g, int argc, char **argv)
{
	funnel_query *q = NULL;
	funnel_subscriber *s = NULL;
	funnel_verify_result res;
	uint64_t from = 0, to = 0;
	char hash[2 * FUNNEL_HASH_BYTES + 1];
	int rc, ret, json;

	if ((ret = parse_simple(g, argc, argv, verify_help, &from, &to)) != 0)
		return ret < 0 ? CLI_EXIT_OK : ret;
	ret = CLI_EXIT_FAIL;
	json = cli_json(g);
	memset(&res, 0, sizeof res);
	if (g->source != NULL) {
		/* the whole chain from the mirror alone */
		funnel_sub_opts so = { .source = g->source, .from = from, .timeout_ms = g->timeout_ms };
		if ((rc = funnel_subscriber_new(&s, &so)) == FUNNEL_OK)
			rc = funnel_verify_feed(s, to, &res);
		if (rc == FUNNEL_OK && res.checked == 0 && from > 1) {
			cli_error(g, "%s: from %" PRIu64 " is past the stream's head",
			          funnel_errname(FUNNEL_ENOTFOUND), from);
			goto done;
		}
		if (rc != FUNNEL_OK && rc != FUNNEL_ECHAIN) {
			cli_fail(g, rc, s ? funnel_subscriber_error(s) : NULL, g->source);
			goto done;
		}
	} else {
		if ((q = cli_query_open(g)) == NULL)
			goto done;
		rc = funnel_verify(q, from, to, &res);
		if (rc != FUNNEL_OK && rc != FUNNEL_ECHAIN) {
			cli_fail(g, rc, funnel_query_error(q), g->query);
			goto done;
		}
	}
	cli_hex(res.head_hash, sizeof res.head_hash, hash);
	if (json) {
		cJSON *o = cJSON_CreateObject();
		int ok = o != NULL && cJSON_AddBoolToObject(o, "ok", rc == FUNNEL_OK) != NULL &&
		         fjson_add_u64(o, "checked", res.checked) != NULL &&
		         fjson_add_u64(o, "head", res.last_good) != NULL &&
		         cJSON_AddStringToObject(o, "head_hash", hash) != NULL;
		if (ok && rc == FUNNEL_ECHAIN)
			ok = fjson_add_u64(o, "bad_seq", res.bad_seq) != NULL &&
			     cJSON_AddStringToObject(o, "why", res.why) != NULL;
		ok = ok && fjson_print_line(stdout, o) == 0;
		cJSON_Delete(o);
		if (!ok) {
			cli_fail(g, FUNNEL_ENOMEM, NULL, NULL);
			goto done;
		}
	} else if (rc == FUNNEL_OK) {
		printf("ok: %" PRIu64 " records verified, head seq %" PRIu64 ", head hash %s\n",
		       res.checked, res.last_good, hash);
	} else {
		/* the library's sentence may start with the seq: say it once */
		char prefix[32];
		const char *why = res.why;
		int n = snprintf(prefix, sizeof prefix, "seq %" PRIu64 ": ", res.bad_seq);
		if (n > 0 && strncmp(why, prefix, (size_t)n) == 0)
			why += n;
		printf("BROKEN at seq %" PRIu64 ": %s\n", res.bad_seq, why);
		printf("last good seq %" PRIu64 ", hash %s\n", res.last_good, hash);
	}
	if (fflush(stdout) != 0)
		goto done;
	ret = rc == FUNNEL_OK ? CLI_EXIT_OK : CLI_EXIT_BROKEN;
done:
	funnel_subscriber_destroy(&s);
	funnel_query_destroy(&q);
	return ret;
}
