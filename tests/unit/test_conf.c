/*
 * tests/unit/test_conf.c - the shared settings file (proto/conf.c): a
 * program gets the endpoints section and its own, in that order; unknown
 * sections, keys given twice, unknown keys of its own section, non-scalar
 * values and bad flag values are refused naming the line; another
 * program's section is left to that program; the flat funneld form is
 * recognised.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf.h"

static const struct option opts[] = {
	{ "ingest", required_argument, NULL, 1 },
	{ "publish", required_argument, NULL, 2 },
	{ "query", required_argument, NULL, 3 },
	{ "view", required_argument, NULL, 4 },
	{ "rebuild", no_argument, NULL, 5 },
	{ "config", required_argument, NULL, 6 },
	{ "help", no_argument, NULL, 7 },
	{ NULL, 0, NULL, 0 }
};

/* Write text to a temporary file and read it as funnel-scoring. */
static int
read_text(const char *text, fp_conf *c, char *why, size_t len)
{
	char path[] = "/tmp/funnel-conf-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	int rc = fp_conf_read(path, "funnel-scoring", opts, c, why, len);
	unlink(path);
	return rc;
}

/* The file is refused and the message has `want`. */
static void
refused(const char *text, const char *want)
{
	fp_conf c;
	char why[512];
	assert_int_equal(read_text(text, &c, why, sizeof why), FP_CONF_ERROR);
	if (strstr(why, want) == NULL)
		fail_msg("'%s' not in '%s'", want, why);
}

static void
test_sections_in_order(void **state)
{
	(void)state;
	fp_conf c;
	char why[512];
	assert_int_equal(read_text("# settings\n"
	                           "funnel-scoring:\n"
	                           "  view: /var/lib/funnel/scoring\n"
	                           "  rebuild: true\n"
	                           "funneld:\n"
	                           "  data: /var/lib/funnel/log\n"
	                           "  whatever-funneld-says: 1\n"
	                           "endpoints:\n"
	                           "  query: tcp://127.0.0.1:9\n"
	                           "funnel:\n",
	                           &c, why, sizeof why), FP_CONF_OK);
	assert_int_equal(c.n, 3);
	assert_string_equal(c.items[0].key, "query");        /* endpoints first */
	assert_string_equal(c.items[0].value, "tcp://127.0.0.1:9");
	assert_int_equal(c.items[0].line, 9);
	assert_int_equal(c.items[0].id, 3);
	assert_string_equal(c.items[1].key, "view");
	assert_int_equal(c.items[1].line, 3);
	assert_string_equal(c.items[2].key, "rebuild");
	assert_int_equal(c.items[2].has_arg, no_argument);
	fp_conf_free(&c);

	assert_int_equal(read_text("funnel-scoring:\n  rebuild: false\n", &c, why, sizeof why),
	                 FP_CONF_OK);
	assert_int_equal(c.n, 0);                             /* false: not set */
	fp_conf_free(&c);
}

static void
test_refused_naming_the_line(void **state)
{
	(void)state;
	refused("endpoints:\n  query: a\nfunnel-scorin:\n  view: x\n",
	        ":3: unknown section 'funnel-scorin'");
	refused("funnel-scoring:\n  view: a\n  rules2: x\n",
	        ":3: unknown setting funnel-scoring.rules2");
	refused("funnel-scoring:\n  view: a\n  rebuild: true\n  view: b\n",
	        ":4: funnel-scoring.view is given twice (first on line 2)");
	refused("endpoints:\n  ingest: a\nfunnel:\n  timeout: 5\nendpoints:\n  query: b\n",
	        ":5: duplicate section 'endpoints' (first on line 1)");
	refused("endpoints:\n  inget: a\n", ":2: unknown setting endpoints.inget");
	refused("funnel-scoring:\n  view: [a, b]\n", ":2: funnel-scoring.view: settings are plain");
	refused("funnel-scoring:\n  view:\n    deep: x\n", "funnel-scoring.view: settings are plain");
	refused("funnel-scoring:\n  rebuild: yes please\n", ":2: funnel-scoring.rebuild is a flag");
	refused("funnel-scoring:\n  help: true\n", ":2: unknown setting funnel-scoring.help");
	refused("funnel-scoring:\n  config: /etc/x\n", ":2: unknown setting funnel-scoring.config");
	refused("funnel-scoring:\n  view: a\n bad: : indent\n", ":3:");
}

static void
test_flat_form_and_missing_file(void **state)
{
	(void)state;
	fp_conf c;
	char why[512];
	assert_int_equal(read_text("data: /srv/funnel\nheartbeat-ms: 500\n", &c, why, sizeof why),
	                 FP_CONF_FLAT);
	assert_int_equal(c.n, 0);
	assert_int_equal(fp_conf_read("/nonexistent/funnel.conf", "funneld", opts, &c, why,
	                              sizeof why), FP_CONF_ERROR);
	assert_non_null(strstr(why, "/nonexistent/funnel.conf: cannot open"));
}

static void
test_path_from_flag_or_env(void **state)
{
	(void)state;
	char *a1[] = { "p", "--config", "/a", "run", NULL };
	char *a2[] = { "p", "--config=/b", NULL };
	char *a3[] = { "p", "run", NULL };
	unsetenv(FP_CONF_ENV);
	assert_string_equal(fp_conf_path(4, a1), "/a");
	assert_string_equal(fp_conf_path(2, a2), "/b");
	assert_null(fp_conf_path(2, a3));
	setenv(FP_CONF_ENV, "/env", 1);
	assert_string_equal(fp_conf_path(2, a3), "/env");
	assert_string_equal(fp_conf_path(2, a2), "/b");       /* the flag wins */
	unsetenv(FP_CONF_ENV);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sections_in_order),
		cmocka_unit_test(test_refused_naming_the_line),
		cmocka_unit_test(test_flat_form_and_missing_file),
		cmocka_unit_test(test_path_from_flag_or_env),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
