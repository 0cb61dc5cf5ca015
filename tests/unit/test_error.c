/*
 * tests/unit/test_error.c - funnel_strerror() and funnel_errname()
 * (proto/error.c).  The names are part of the wire contract ("error" field
 * of error replies) and the numbers of codes 1..63 never change, so both
 * are written out here.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "funnel/error.h"

static const struct {
	int code;
	int value;
	const char *name;
} codes[] = {
	{ FUNNEL_OK, 0, "OK" },
	{ FUNNEL_EMALFORMED, 1, "EMALFORMED" },
	{ FUNNEL_EMISSING, 2, "EMISSING" },
	{ FUNNEL_ETYPE, 3, "ETYPE" },
	{ FUNNEL_EVALUE, 4, "EVALUE" },
	{ FUNNEL_ETOOBIG, 5, "ETOOBIG" },
	{ FUNNEL_EUNKNOWN_TYPE, 6, "EUNKNOWN_TYPE" },
	{ FUNNEL_ENOLEAD, 7, "ENOLEAD" },
	{ FUNNEL_ETRANSITION, 8, "ETRANSITION" },
	{ FUNNEL_EVERSION, 9, "EVERSION" },
	{ FUNNEL_EOP, 10, "EOP" },
	{ FUNNEL_ESTORAGE, 11, "ESTORAGE" },
	{ FUNNEL_ESHUTDOWN, 12, "ESHUTDOWN" },
	{ FUNNEL_ENOTFOUND, 13, "ENOTFOUND" },
	{ FUNNEL_EINTERNAL, 14, "EINTERNAL" },
	{ FUNNEL_EIDCONFLICT, 15, "EIDCONFLICT" },
	{ FUNNEL_EFORBIDDEN, 16, "EFORBIDDEN" },
	{ FUNNEL_ETIMEDOUT, 64, "ETIMEDOUT" },
	{ FUNNEL_ETRANSPORT, 65, "ETRANSPORT" },
	{ FUNNEL_ENOMEM, 66, "ENOMEM" },
	{ FUNNEL_EPROTOCOL, 67, "EPROTOCOL" },
	{ FUNNEL_ECHAIN, 68, "ECHAIN" },
	{ FUNNEL_EINVAL, 69, "EINVAL" },
	{ FUNNEL_EJSON, 70, "EJSON" },
};

#define NCODES (sizeof codes / sizeof codes[0])

static void
test_names(void **state)
{
	(void)state;
	for (size_t i = 0; i < NCODES; i++) {
		assert_int_equal(codes[i].code, codes[i].value);
		assert_string_equal(funnel_errname(codes[i].code), codes[i].name);
	}
}

/* Every defined code has its own message, never the fallback. */
static void
test_messages(void **state)
{
	(void)state;
	const char *unknown = funnel_strerror(-1);
	for (size_t i = 0; i < NCODES; i++) {
		const char *m = funnel_strerror(codes[i].code);
		assert_non_null(m);
		assert_true(strlen(m) > 0);
		if (strcmp(m, unknown) == 0)
			fail_msg("%s has the fallback message", codes[i].name);
		for (size_t j = 0; j < i; j++) {
			if (strcmp(m, funnel_strerror(codes[j].code)) == 0)
				fail_msg("%s and %s share a message", codes[i].name, codes[j].name);
		}
	}
}

static void
test_unknown_codes(void **state)
{
	(void)state;
	static const int unknown[] = { -1, -14, 17, 18, 63, 71, 100, 1000, INT_MAX, INT_MIN };
	for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
		const char *n = funnel_errname(unknown[i]);
		const char *m = funnel_strerror(unknown[i]);
		assert_non_null(n);
		assert_non_null(m);
		assert_string_equal(n, "EUNKNOWN");
		assert_true(strlen(m) > 0);
	}
	/* every value between the defined ranges is unknown too */
	for (int c = -300; c < 300; c++) {
		int defined = 0;
		for (size_t i = 0; i < NCODES; i++)
			defined |= codes[i].code == c;
		if (!defined && strcmp(funnel_errname(c), "EUNKNOWN") != 0)
			fail_msg("code %d has name %s", c, funnel_errname(c));
	}
}

/* Wire codes stay below 64; client-side ones are 64 and up. */
static void
test_code_ranges(void **state)
{
	(void)state;
	for (int c = FUNNEL_EMALFORMED; c <= FUNNEL_EINTERNAL; c++)
		assert_true(c < 64);
	for (int c = FUNNEL_ETIMEDOUT; c <= FUNNEL_EJSON; c++)
		assert_string_not_equal(funnel_errname(c), "EUNKNOWN");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_messages),
		cmocka_unit_test(test_unknown_codes),
		cmocka_unit_test(test_code_ranges),
	};
	return cmocka_run_group_tests_name("error", tests, NULL, NULL);
}
