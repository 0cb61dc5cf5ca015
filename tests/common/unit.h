/*
 * tests/common/unit.h - small helpers shared by the cmocka unit tests.
 * Include after <cmocka.h>.
 */
#ifndef FUNNEL_TESTS_UNIT_H
#define FUNNEL_TESTS_UNIT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "funnel/record.h"

/* A malloc'd copy of n bytes (so ASan sees reads past the end); caller frees. */
static inline uint8_t *
dup_bytes(const void *p, size_t n)
{
	uint8_t *b = malloc(n ? n : 1);
	assert_non_null(b);
	memcpy(b, p, n);
	return b;
}

/* A counted string equals a C string. */
static inline int
str_is(funnel_str s, const char *want)
{
	return s.ptr != NULL && s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

/* A fresh directory under /tmp for one test, as a cmocka fixture:
 * unit_tmp_setup makes *state a unit_tmp whose dir exists (path is the
 * test's scratch for names in it); unit_tmp_teardown removes the tree. */
typedef struct unit_tmp {
	char dir[256];
	char path[512];
} unit_tmp;

static inline int
unit_tmp_setup(void **state)
{
	unit_tmp *t = calloc(1, sizeof *t);
	if (t == NULL)
		return -1;
	snprintf(t->dir, sizeof t->dir, "/tmp/funnel-unit-XXXXXX");
	if (mkdtemp(t->dir) == NULL) {
		free(t);
		return -1;
	}
	*state = t;
	return 0;
}

static inline int
unit_tmp_teardown(void **state)
{
	unit_tmp *t = *state;
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", t->dir);
	if (system(cmd) != 0)
		return -1;
	free(t);
	return 0;
}

#endif
