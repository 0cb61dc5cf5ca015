/*
 * tests/common/unit.h - small helpers shared by the cmocka unit tests.
 * Include after <cmocka.h>.
 */
#ifndef FUNNEL_TESTS_UNIT_H
#define FUNNEL_TESTS_UNIT_H

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

#endif
