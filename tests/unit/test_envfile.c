/*
 * tests/unit/test_envfile.c - proto/envfile.c: a new LMDB environment is
 * built aside and renamed in; an existing one is left alone; what a crash
 * during creation left behind is replaced.  (That each step is flushed
 * in the right order is what tests/integration/test_crash.py checks, from
 * a trace of the calls.)
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "envfile.h"
#include "unit.h"


static const char *
in(unit_tmp *t, const char *name)
{
	snprintf(t->path, sizeof t->path, "%s/%s", t->dir, name);
	return t->path;
}

static int
exists(unit_tmp *t, const char *name)
{
	struct stat st;
	return stat(in(t, name), &st) == 0;
}

/* LMDB opens dir as an environment and a write transaction commits. */
static void
assert_env_opens(const char *dir)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = { 1, "k" }, v = { 1, "v" };
	assert_int_equal(mdb_env_create(&env), 0);
	assert_int_equal(mdb_env_open(env, dir, MDB_NOTLS, 0644), 0);
	assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
	assert_int_equal(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
	assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
	assert_int_equal(mdb_txn_commit(txn), 0);
	mdb_env_close(env);
}

static void
test_new_environment_renamed_in(void **state)
{
	unit_tmp *t = *state;
	char why[256] = "";
	assert_int_equal(fp_envfile_prepare(t->dir, why, sizeof why), 0);
	assert_true(exists(t, "data.mdb"));
	assert_false(exists(t, "data.mdb.new"));
	assert_false(exists(t, "data.mdb.new-lock"));
	assert_env_opens(t->dir);
}

static void
test_existing_environment_untouched(void **state)
{
	unit_tmp *t = *state;
	char why[256] = "";
	struct stat before, after;
	assert_int_equal(fp_envfile_prepare(t->dir, why, sizeof why), 0);
	assert_env_opens(t->dir);
	assert_int_equal(stat(in(t, "data.mdb"), &before), 0);
	assert_int_equal(fp_envfile_prepare(t->dir, why, sizeof why), 0);
	assert_int_equal(stat(in(t, "data.mdb"), &after), 0);
	assert_int_equal(before.st_ino, after.st_ino);
	assert_int_equal(before.st_size, after.st_size);
	assert_int_equal(before.st_mtime, after.st_mtime);
}

/* A crash during creation: a data.mdb.new of zeros (its meta pages never
 * written) and its lock file; data.mdb never appeared. */
static void
test_unfinished_creation_replaced(void **state)
{
	unit_tmp *t = *state;
	char why[256] = "", zeros[16384] = { 0 };
	FILE *f = fopen(in(t, "data.mdb.new"), "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(zeros, 1, sizeof zeros, f), sizeof zeros);
	fclose(f);
	f = fopen(in(t, "data.mdb.new-lock"), "wb");
	assert_non_null(f);
	fclose(f);
	assert_int_equal(fp_envfile_prepare(t->dir, why, sizeof why), 0);
	assert_false(exists(t, "data.mdb.new"));
	assert_false(exists(t, "data.mdb.new-lock"));
	assert_env_opens(t->dir);
}

static void
test_missing_directory_named(void **state)
{
	unit_tmp *t = *state;
	char why[256] = "";
	assert_int_equal(fp_envfile_prepare(in(t, "absent"), why, sizeof why), -1);
	assert_int_equal(errno, ENOENT);
	assert_non_null(strstr(why, "absent/data.mdb.new"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_new_environment_renamed_in, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_existing_environment_untouched, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_unfinished_creation_replaced, unit_tmp_setup, unit_tmp_teardown),
		cmocka_unit_test_setup_teardown(test_missing_directory_named, unit_tmp_setup, unit_tmp_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
