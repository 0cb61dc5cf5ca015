/*
 * clients/metrics/report.c - `funnel-metrics report [NAME]`: one report
 * as JSON from the view opened read-only (beside a running service or
 * without one), without funneld.  The reports are query.c's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

int
mx_cmd_report(void *ctx, int argc, char **argv)
{
	static const char *const tables[] = { MX_T_LEADS, MX_T_FACTS, MX_T_COUNTERS, MX_T_INDEX,
	                                      MX_T_DAYS, FUNNEL_SERVICE_RUNTIME_TABLE, NULL };
	const mx_args *a = ctx;
	const char *name = argc ? argv[0] : "summary";
	funnel_view_reader v;
	cJSON *o = NULL;
	char err[256];
	int status = 1;
	mx_query q = { .report = mx_report_parse(name), .model = MX_MODEL_LINEAR,
	               .bucket = MX_BUCKET_WEEK, .list = -1 };

	if (q.report < 0) {
		fprintf(stderr, "funnel-metrics: no report '%s'\n", name);
		return 2;
	}
	for (int i = 0; i < a->nparams; i++) {
		char key[32];
		const char *eq = strchr(a->params[i], '=');
		if (eq == NULL || (size_t)(eq - a->params[i]) >= sizeof key) {
			fprintf(stderr, "funnel-metrics: --param wants KEY=VALUE, not '%s'\n", a->params[i]);
			return 2;
		}
		memcpy(key, a->params[i], (size_t)(eq - a->params[i]));
		key[eq - a->params[i]] = 0;
		if (mx_query_param(&q, key, eq + 1, err, sizeof err) != 0) {
			fprintf(stderr, "funnel-metrics: %s: %s\n", key, err);
			return 2;
		}
	}
	int rc = funnel_view_reader_open(&v, a->c.view, tables, err, sizeof err);
	if (rc != FUNNEL_OK) {
		if (rc == FUNNEL_ENOTFOUND)
			fprintf(stderr, "funnel-metrics: %s is not a metrics view, or one built before "
			        "its days table: rebuild it (--rebuild)\n", a->c.view);
		else
			fprintf(stderr, "funnel-metrics: cannot open the view %s\n", a->c.view);
		return 1;
	}
	mx_tables t = { .env = v.env, .leads = v.dbi[0], .facts = v.dbi[1], .counters = v.dbi[2],
	                .index = v.dbi[3], .days = v.dbi[4], .runtime = v.dbi[5] };
	rc = mx_report(v.txn, &t, &q, &o);
	if (rc != FUNNEL_OK) {
		fprintf(stderr, "funnel-metrics: report: %s\n", funnel_strerror(rc));
	} else {
		char *s = cJSON_Print(o);
		if (s) {
			puts(s);
			free(s);
			status = 0;
		}
	}
	cJSON_Delete(o);
	funnel_view_reader_close(&v);
	return status;
}
