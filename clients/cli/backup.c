/*
 * clients/cli/backup.c - `funnel backup` and `funnel restore`: the log's
 * files copied while funneld runs and put back, each verified (the work
 * is libfunnel's funnel_backup() / funnel_restore()).
 */
#include <inttypes.h>
#include <string.h>

#include "cli.h"
#include "json.h"
#include "util.h"

static const char backup_help[] =
	"usage: funnel backup [--data DIR] DEST\n"
	"\n"
	"Copy the log while funneld runs into DEST (created, must be empty): one\n"
	"LMDB read transaction, compacted, so producers are not held up.  The copy\n"
	"is verified (the whole hash chain) and DEST/" FUNNEL_BACKUP_INFO_FILE " records its head\n"
	"seq and head hash.  Run it on the daemon's machine as a user that can read\n"
	"its data directory and write its lock.mdb (LMDB's table of readers: the\n"
	"daemon's user does).  Prints: ok: backup of N records, head seq H, head hash <hex>\n"
	"\n"
	"  --data DIR      the data directory (default: the one funneld reports on\n"
	"                  the query endpoint)\n"
	"\n"
	CLI_GLOBAL_HELP;

static const char restore_help[] =
	"usage: funnel restore BACKUP DATA_DIR\n"
	"\n"
	"Verify the backup BACKUP (made by `funnel backup`) and put it in place as\n"
	"DATA_DIR (created, must be empty; locked as funneld locks it, so a funneld\n"
	"started there meanwhile is refused): written aside, fsynced, renamed.  Start\n"
	"funneld with --data DATA_DIR afterwards.  Services rebuild their views.\n"
	"\n"
	CLI_GLOBAL_HELP;

/* One result line, JSON or human, for backup and restore. */
static int
report(struct cli *g, int rc, const char *what, const funnel_log_head *h,
       const funnel_verify_result *res, const funnel_error_info *err)
{
	char hash[2 * FUNNEL_HASH_BYTES + 1];

	if (rc == FUNNEL_ECHAIN) {
		cli_hex(res->head_hash, sizeof res->head_hash, hash);
		printf("BROKEN at seq %" PRIu64 ": %s\n", res->bad_seq, res->why);
		printf("last good seq %" PRIu64 ", hash %s\n", res->last_good, hash);
		fflush(stdout);
		return CLI_EXIT_BROKEN;
	}
	if (rc != FUNNEL_OK)
		return cli_fail(g, rc, err, NULL);
	cli_hex(h->head_hash, sizeof h->head_hash, hash);
	if (cli_json(g)) {
		cJSON *o = cJSON_CreateObject();
		int ok = o != NULL && cJSON_AddBoolToObject(o, "ok", 1) != NULL &&
		         fjson_add_u64(o, "checked", res->checked) != NULL &&
		         fjson_add_u64(o, "head", h->head) != NULL &&
		         cJSON_AddStringToObject(o, "head_hash", hash) != NULL &&
		         fjson_add_u64(o, "bytes", h->bytes) != NULL &&
		         fjson_print_line(stdout, o) == 0;
		cJSON_Delete(o);
		if (!ok)
			return cli_fail(g, FUNNEL_ENOMEM, NULL, NULL);
	} else {
		printf("ok: %s of %" PRIu64 " records, head seq %" PRIu64 ", head hash %s\n", what,
		       res->checked, h->head, hash);
	}
	return fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
}

int
cmd_backup(struct cli *g, int argc, char **argv)
{
	static const struct option opts[] = {
		CLI_GLOBAL_OPTIONS,
		{ "data", required_argument, NULL, OPT_DATA },
		{ NULL, 0, NULL, 0 }
	};
	const char *data = NULL;
	funnel_status st;
	funnel_log_head h;
	funnel_verify_result res;
	funnel_error_info err;
	int c, rc;

	cli_getopt_begin();
	while ((c = cli_getopt(g, argc, argv, opts)) != -1) {
		switch (c) {
		case OPT_HELP:
			fputs(backup_help, stdout);
			return CLI_EXIT_OK;
		case OPT_DATA:
			data = optarg;
			break;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return cli_usage(g, optind == argc ? "the backup directory DEST is required"
		                                   : "unexpected argument '%s'", argv[argc - 1]);
	if (data == NULL) {
		funnel_query *q = cli_query_open(g);
		if (q == NULL)
			return CLI_EXIT_FAIL;
		memset(&st, 0, sizeof st);
		rc = funnel_status_get(q, &st);
		if (rc != FUNNEL_OK) {
			cli_fail(g, rc, funnel_query_error(q), g->query);
			funnel_query_destroy(&q);
			return CLI_EXIT_FAIL;
		}
		funnel_query_destroy(&q);
		data = st.data_dir;
	}
	rc = funnel_backup(data, argv[optind], &h, &res, &err);
	return report(g, rc, "backup", &h, &res, &err);
}

int
cmd_restore(struct cli *g, int argc, char **argv)
{
	static const struct option opts[] = {
		CLI_GLOBAL_OPTIONS,
		{ NULL, 0, NULL, 0 }
	};
	funnel_log_head h;
	funnel_verify_result res;
	funnel_error_info err;
	int c, rc;

	cli_getopt_begin();
	while ((c = cli_getopt(g, argc, argv, opts)) != -1) {
		if (c == OPT_HELP) {
			fputs(restore_help, stdout);
			return CLI_EXIT_OK;
		}
		return CLI_EXIT_USAGE;
	}
	if (argc - optind != 2)
		return cli_usage(g, "wants BACKUP and DATA_DIR (%d argument%s given)", argc - optind,
		                 argc - optind == 1 ? "" : "s");
	rc = funnel_restore(argv[optind], argv[optind + 1], &h, &res, &err);
	return report(g, rc, "restore", &h, &res, &err);
}
