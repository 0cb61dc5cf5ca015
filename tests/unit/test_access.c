/*
 * tests/unit/test_access.c - the access file and key files (proto/access.c):
 * principals, globs, token hashes, and each refusal naming its line.
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
#include <sodium.h>
#include <zmq.h>

#include "access.h"

static char dir[64];
static char pub[41], sec[41], pub2[41], sec2[41];

static const char *
write_file(const char *name, const char *text)
{
	static char path[128];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

static fa_table *
load(const char *text, char *why, size_t whylen)
{
	return fa_load(write_file("access.yaml", text), why, whylen);
}

static void
test_valid_file(void **state)
{
	(void)state;
	char text[1024], why[512] = "", hex[65];
	uint8_t h[32], key[32];
	const char *token = "0123456789abcdef";
	crypto_generichash(h, sizeof h, (const unsigned char *)token, strlen(token), NULL, 0);
	sodium_bin2hex(hex, sizeof hex, h, sizeof h);
	snprintf(text, sizeof text,
	         "principals:\n"
	         "  - name: sales\n    key: \"%s\"\n    publish: [\"lead.*\", deal.won]\n    read: true\n"
	         "  - name: web\n    key: \"%s\"\n    publish: [lead.captured]\n"
	         "  - name: dash\n    token: \"blake2b:%s\"\n    read: yes\n", pub, pub2, hex);
	fa_table *t = load(text, why, sizeof why);
	assert_non_null(t);
	assert_int_equal(t->n, 3);
	assert_non_null(zmq_z85_decode(key, pub));
	const fa_principal *p = fa_by_key(t, key);
	assert_non_null(p);
	assert_string_equal(p->name, "sales");
	assert_true(p->read);
	assert_true(fa_may_publish(p, "lead.qualified", 14));
	assert_true(fa_may_publish(p, "deal.won", 8));
	assert_false(fa_may_publish(p, "deal.lost", 9));
	assert_false(fa_may_publish(p, "x.lead.y", 8));
	p = fa_by_name(t, "web");
	assert_non_null(p);
	assert_false(p->read);                     /* read defaults to false */
	assert_false(fa_may_publish(p, "lead.qualified", 14));
	assert_null(fa_by_name(t, "nobody"));
	p = fa_by_token(t, token, strlen(token));
	assert_non_null(p);
	assert_string_equal(p->name, "dash");
	assert_null(fa_by_token(t, "0123456789abcdeF", 16));
	fa_destroy(t);
}

/* Each refused file: the message starts "PATH:LINE: " and says what. */
static void
refused(const char *text, int line, const char *words)
{
	char why[512] = "", want[160];
	fa_table *t = load(text, why, sizeof why);
	if (t != NULL)
		fail_msg("accepted: %s", text);
	snprintf(want, sizeof want, "access.yaml:%d: ", line);
	if (strstr(why, want) == NULL || strstr(why, words) == NULL)
		fail_msg("message '%s', want line %d and '%s'", why, line, words);
}

static void
test_refusals(void **state)
{
	(void)state;
	char text[1024];
	refused("principal:\n  - name: a\n", 1, "unknown key 'principal'");
	snprintf(text, sizeof text, "principals:\n  - name: a\n    key: \"%s\"\n    publsh: [x]\n", pub);
	refused(text, 4, "unknown key 'publsh'");
	snprintf(text, sizeof text, "principals:\n  - name: a\n    key: \"%s\"\n    name: b\n", pub);
	refused(text, 4, "duplicate key 'name' (first given on line 2)");
	snprintf(text, sizeof text, "principals:\n  - name: a\n    key: \"%s\"\n  - name: a\n    key: \"%s\"\n",
	         pub, pub2);
	refused(text, 4, "principal 'a' is listed twice");
	snprintf(text, sizeof text, "principals:\n  - name: a\n    key: \"%s\"\n  - name: b\n    key: \"%s\"\n",
	         pub, pub);
	refused(text, 4, "have the same key");
	refused("principals:\n  - name: a\n    key: \"tooshort\"\n", 3, "40 Z85 characters");
	refused("principals:\n  - name: a\n    token: \"sha1:00\"\n", 3, "token must be");
	refused("principals:\n  - read: true\n", 2, "needs a name");
	refused("principals:\n  - name: a\n    read: true\n", 2, "neither a key nor a token");
	snprintf(text, sizeof text, "principals:\n  - name: a\n    key: \"%s\"\n    read: maybe\n", pub);
	refused(text, 4, "read must be true or false");
	snprintf(text, sizeof text, "principals:\n  - name: a\n    key: \"%s\"\n    publish: lead.*\n", pub);
	refused(text, 4, "publish must be a list");
	refused("principals:\n  - name: \"a b\"\n    key: x\n", 2, "name must be");
	refused("principals: {}\n", 1, "'principals' must be a list");
}

static void
test_key_files(void **state)
{
	(void)state;
	char why[256];
	uint8_t k[32], want[32], derived[32];
	char text[64];
	snprintf(text, sizeof text, "  %s\n\n", sec);
	assert_int_equal(fa_read_key_file(write_file("a.key", text), k, why, sizeof why), 0);
	assert_non_null(zmq_z85_decode(want, sec));
	assert_memory_equal(k, want, 32);
	assert_int_equal(fa_public_of(k, derived), 0);
	assert_non_null(zmq_z85_decode(want, pub));
	assert_memory_equal(derived, want, 32);
	assert_int_equal(fa_read_key_file(write_file("b.key", "short\n"), k, why, sizeof why), -1);
	assert_non_null(strstr(why, "not a key file"));
	snprintf(text, sizeof text, "%s", dir);
	strcat(text, "/missing.key");
	assert_int_equal(fa_read_key_file(text, k, why, sizeof why), -1);
}

int
main(void)
{
	snprintf(dir, sizeof dir, "/tmp/funnel-test-access-XXXXXX");
	if (mkdtemp(dir) == NULL || sodium_init() < 0 || zmq_curve_keypair(pub, sec) != 0 ||
	    zmq_curve_keypair(pub2, sec2) != 0)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_file),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_key_files),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	const char *names[] = { "access.yaml", "a.key", "b.key" };
	for (int i = 0; i < 3; i++) {
		char p[128];
		snprintf(p, sizeof p, "%s/%s", dir, names[i]);
		unlink(p);
	}
	rmdir(dir);
	return rc;
}
