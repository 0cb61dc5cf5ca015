/*
 * tests/unit/test_gateway.c - funnel-gateway's pure parts (clients/gateway
 * forms.c, submit.c, limit.c) and the shared JSON array splitter
 * (clients/common/jsonpack.c): the lead id, the event a submission
 * becomes, event ids (own, header, derived per window), refusals naming
 * the field, the rate limit's bounded table, the client's address behind
 * trusted proxies, array elements.
 */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "gateway.h"
#include "jsonpack.h"
#include "mp.h"

static const char rules[] =
	"version: t1\n"
	"forms:\n"
	"  - id: demo\n"
	"    fields: {email: email, full_name: name, company: company}\n"
	"    required: [email, full_name]\n"
	"    redirect: https://x.example/thanks\n"
	"    origins: [https://x.example]\n"
	"    source: web\n"
	"    honeypot: website\n"
	"    consent: {fields: [ok], version: v7}\n";

#define T0 1767225600000000000LL      /* 2026-01-01, on a 10-minute boundary */

static const uint8_t key[GW_KEY_BYTES] = { 1, 2, 3 };

static gw_forms *
load(void)
{
	gw_forms *f;
	char err[256];
	int rc = gw_forms_parse(rules, sizeof rules - 1, "t.yaml", &f, err, sizeof err);
	if (rc != FUNNEL_OK)
		fail_msg("%s", err);
	return f;
}

static void
add(gw_submission *s, const char *name, const char *value)
{
	assert_int_equal(gw_submission_add(s, name, strlen(name), value, strlen(value)), FUNNEL_OK);
}

/* The data map's value of key as text into buf ("" when absent). */
static const char *
data_str(const gw_event *ev, const char *k, char *buf, size_t cap)
{
	msgpack_unpacked u;
	msgpack_unpacked_init(&u);
	buf[0] = 0;
	assert_int_equal(msgpack_unpack_next(&u, ev->data.data, ev->data.size, NULL),
	                 MSGPACK_UNPACK_SUCCESS);
	const msgpack_object *v = mp_find(&u.data, k);
	if (v && v->type == MSGPACK_OBJECT_STR)
		snprintf(buf, cap, "%.*s", (int)v->via.str.size, v->via.str.ptr);
	else if (v && v->type == MSGPACK_OBJECT_MAP)
		snprintf(buf, cap, "{map %u}", v->via.map.size);
	msgpack_unpacked_destroy(&u);
	return buf;
}

static void
lead_id_normalises(void **st)
{
	(void)st;
	char a[40], b[40], c[40];
	uint8_t other[GW_KEY_BYTES] = { 9 };
	gw_lead_id(key, "Ana@Example.COM", 15, a);
	gw_lead_id(key, "  ana@example.com\t", 18, b);
	gw_lead_id(other, "ana@example.com", 15, c);
	assert_string_equal(a, b);
	assert_string_not_equal(a, c);          /* the key makes the id */
	assert_int_equal(strlen(a), 34);
	assert_memory_equal(a, "L-", 2);
}

static void
builds_the_event(void **st)
{
	(void)st;
	gw_forms *f = load();
	gw_submission s = { 0 };
	gw_event ev;
	gw_problem pb = { .limit = -1 };
	char buf[256];
	add(&s, "email", " Bo@X.example ");
	add(&s, "full_name", "Bo");
	add(&s, "ok", "on");
	add(&s, "page_url", "https://x.example/p?a=1&utm_source=news%20letter&utm_medium=mail#top");
	assert_int_equal(gw_build(&f->v[0], &s, key, f->version, T0 + 5, &ev, &pb), FUNNEL_OK);
	assert_false(ev.honeypot);
	assert_string_equal(data_str(&ev, "email", buf, sizeof buf), "bo@x.example");
	assert_string_equal(data_str(&ev, "name", buf, sizeof buf), "Bo");
	assert_string_equal(data_str(&ev, "form", buf, sizeof buf), "demo");
	assert_string_equal(data_str(&ev, "source", buf, sizeof buf), "news letter");
	assert_string_equal(data_str(&ev, "utm", buf, sizeof buf), "{map 2}");
	assert_string_equal(data_str(&ev, "consent_version", buf, sizeof buf), "v7");
	assert_string_equal(data_str(&ev, "company", buf, sizeof buf), "");   /* empty: left out */
	assert_int_equal(ev.occurred_at, T0 + 5);
	assert_memory_equal(ev.id, "form:demo:auto:", 15);

	/* the same post later in the window: the same id and the same time */
	gw_event ev2;
	assert_int_equal(gw_build(&f->v[0], &s, key, f->version, T0 + 60000000000LL, &ev2, &pb),
	                 FUNNEL_OK);
	assert_string_equal(ev.id, ev2.id);
	assert_int_equal(ev2.occurred_at, T0 + 5);
	gw_event_release(&ev2);
	/* in the next window: another event */
	assert_int_equal(gw_build(&f->v[0], &s, key, f->version, T0 + 601000000000LL, &ev2, &pb),
	                 FUNNEL_OK);
	assert_string_not_equal(ev.id, ev2.id);
	gw_event_release(&ev2);
	gw_event_release(&ev);

	/* a submission id wins over the header */
	s.idempotency_key = "hdr-1";
	assert_int_equal(gw_build(&f->v[0], &s, key, f->version, T0, &ev, &pb), FUNNEL_OK);
	assert_string_equal(ev.id, "form:demo:hdr-1");
	gw_event_release(&ev);
	add(&s, "submission_id", "sub-1");
	assert_int_equal(gw_build(&f->v[0], &s, key, f->version, T0, &ev, &pb), FUNNEL_OK);
	assert_string_equal(ev.id, "form:demo:sub-1");
	gw_event_release(&ev);
	gw_submission_release(&s);
	gw_forms_destroy(&f);
}

static void
refusals_name_the_field(void **st)
{
	(void)st;
	gw_forms *f = load();
	static const struct {
		const char *fields[8];
		const char *code, *field;
	} cases[] = {
		{ { "email", "a@b.co", NULL }, "missing_field", "full_name" },
		{ { "email", "nope", "full_name", "x", NULL }, "invalid_email", "email" },
		{ { "email", "a@b.co", "full_name", "x\001y", NULL }, "invalid_text", "full_name" },
		{ { "email", "a@b.co", "full_name", "x", "submission_id", "a/b", NULL },
		  "invalid_submission_id", "submission_id" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		gw_submission s = { 0 };
		gw_event ev;
		gw_problem pb = { .limit = -1 };
		for (int k = 0; cases[i].fields[k]; k += 2)
			add(&s, cases[i].fields[k], cases[i].fields[k + 1]);
		assert_int_equal(gw_build(&f->v[0], &s, key, f->version, T0, &ev, &pb), FUNNEL_EVALUE);
		assert_int_equal(pb.status, 400);
		assert_string_equal(pb.code, cases[i].code);
		assert_string_equal(pb.field, cases[i].field);
		gw_event_release(&ev);
		gw_submission_release(&s);
	}
	/* the honeypot: like a success, nothing to store, whatever else is wrong */
	gw_submission s = { 0 };
	gw_event ev;
	gw_problem pb = { .limit = -1 };
	add(&s, "website", "http://spam");
	add(&s, "email", "nope");
	assert_int_equal(gw_build(&f->v[0], &s, key, f->version, T0, &ev, &pb), FUNNEL_OK);
	assert_true(ev.honeypot);
	gw_event_release(&ev);
	gw_submission_release(&s);
	gw_forms_destroy(&f);
}

static void
rate_limit_is_bounded(void **st)
{
	(void)st;
	gw_limiter *l;
	assert_int_equal(gw_limiter_new(&l, 60, 2), FUNNEL_OK);
	uint8_t a[4] = { 10, 0, 0, 1 };
	assert_int_equal(gw_limit_take(l, a, 4, T0), 0);
	assert_int_equal(gw_limit_take(l, a, 4, T0), 0);
	unsigned w = gw_limit_take(l, a, 4, T0);
	assert_true(w >= 1 && w <= 2);                 /* one a second comes back */
	assert_int_equal(gw_limit_take(l, a, 4, T0 + 1000000000LL), 0);
	/* many more addresses than slots: each still served, memory fixed */
	for (uint32_t i = 0; i < 3 * GW_LIMIT_SLOTS; i++)
		assert_int_equal(gw_limit_take(l, &i, 4, T0 + 2000000000LL), 0);
	gw_limiter_destroy(&l);
	assert_null(l);
	assert_int_equal(gw_limiter_new(&l, 0, 0), FUNNEL_OK);   /* no limit */
	assert_int_equal(gw_limit_take(l, a, 4, T0), 0);
}

static gw_addr
addr(const char *s)
{
	gw_addr a;
	assert_int_equal(gw_addr_parse(s, strlen(s), &a), 0);
	return a;
}

/* The client's address for a peer and an X-Forwarded-For, as text. */
static const char *
client(const gw_net *nets, size_t n, const char *peer, const char *xff)
{
	static char out[64];
	gw_addr p = addr(peer), c;
	gw_client_addr(nets, n, &p, xff, &c);
	inet_ntop(c.len == 4 ? AF_INET : AF_INET6, c.b, out, sizeof out);
	return out;
}

static void
client_behind_trusted_proxies(void **st)
{
	(void)st;
	gw_net nets[3];
	const char *spec[] = { "127.0.0.1", "10.0.0.0/8", "2001:db8::/32" };
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(gw_net_parse(spec[i], strlen(spec[i]), &nets[i]), 0);
	static const char *bad[] = { "", "10.0.0.0/33", "10.0.0.0/", "host.example", "1.2.3",
	                             "::1/129", "10.0.0.0/8x" };
	gw_net x;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(gw_net_parse(bad[i], strlen(bad[i]), &x), -1);

	/* an untrusted peer: the header means nothing */
	assert_string_equal(client(nets, 3, "192.0.2.1", "203.0.113.7"), "192.0.2.1");
	/* no proxies named: the peer */
	assert_string_equal(client(nets, 0, "127.0.0.1", "203.0.113.7"), "127.0.0.1");
	/* a trusted peer: the last untrusted hop, walking from the right */
	assert_string_equal(client(nets, 3, "127.0.0.1", NULL), "127.0.0.1");
	assert_string_equal(client(nets, 3, "127.0.0.1", "203.0.113.7"), "203.0.113.7");
	assert_string_equal(client(nets, 3, "127.0.0.1", "198.51.100.1, 203.0.113.7, 10.1.1.1"),
	                    "203.0.113.7");
	assert_string_equal(client(nets, 3, "10.2.3.4", "203.0.113.7,2001:db8::9"), "203.0.113.7");
	assert_string_equal(client(nets, 3, "::ffff:127.0.0.1", " [2001:db8:1::1] , 2001:db9::2"),
	                    "2001:db9::2");
	/* every hop trusted: the leftmost */
	assert_string_equal(client(nets, 3, "127.0.0.1", "10.0.0.2, 10.0.0.3"), "10.0.0.2");
	/* a hop that is not an address ends the walk at the one to its right */
	assert_string_equal(client(nets, 3, "127.0.0.1", "203.0.113.7, unknown, 10.0.0.3"),
	                    "10.0.0.3");
	assert_string_equal(client(nets, 3, "127.0.0.1", "10.0.0.3,"), "127.0.0.1");
	/* a network's prefix, not its address alone */
	gw_addr in = addr("10.255.0.1"), out = addr("11.0.0.1");
	assert_true(gw_net_match(nets, 3, &in));
	assert_false(gw_net_match(nets, 3, &out));
}

typedef struct elems {
	char v[8][32];
	size_t n;
} elems;

static int
take(const char *e, size_t len, size_t index, void *ctx)
{
	elems *x = ctx;
	assert_int_equal(index, x->n);
	snprintf(x->v[x->n++], 32, "%.*s", (int)len, e);
	return 0;
}

static void
array_elements(void **st)
{
	(void)st;
	char err[128];
	elems x = { .n = 0 };
	const char *t = " [ {\"a\":\"x,]\"} , [1,{\"b\":2}],\"q\\\"]\" ] ";
	assert_int_equal(fjson_array_each(t, strlen(t), take, &x, err, sizeof err), FUNNEL_OK);
	assert_int_equal(x.n, 3);
	assert_string_equal(x.v[0], " {\"a\":\"x,]\"} ");
	assert_string_equal(x.v[1], " [1,{\"b\":2}]");
	x.n = 0;
	assert_int_equal(fjson_array_each("[]", 2, take, &x, err, sizeof err), FUNNEL_OK);
	assert_int_equal(x.n, 0);
	static const char *bad[] = { "{}", "[1,,2]", "[1", "[\"a]", "[{]", "[1,]" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		x.n = 0;
		assert_int_equal(fjson_array_each(bad[i], strlen(bad[i]), take, &x, err, sizeof err),
		                 FUNNEL_EJSON);
	}
}


/* Which clients get a page for a refusal, and that the page escapes
 * what it shows. */
static void
problem_page_for_browsers(void **state)
{
	(void)state;
	const char *nav = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
	assert_int_equal(gw_wants_html(nav, "application/x-www-form-urlencoded"), 1);
	assert_int_equal(gw_wants_html(nav, "multipart/form-data; boundary=x"), 1);
	assert_int_equal(gw_wants_html(nav, "application/json"), 0);
	assert_int_equal(gw_wants_html("*/*", "application/x-www-form-urlencoded"), 0);
	assert_int_equal(gw_wants_html("text/html, application/json", NULL), 0);
	assert_int_equal(gw_wants_html(NULL, NULL), 0);

	size_t len = 0;
	char *p = gw_problem_page(400, "missing_field", "<x>", "a \"quoted\" & <b>", &len);
	assert_non_null(p);
	assert_int_equal(strlen(p), len);
	assert_non_null(strstr(p, "a &quot;quoted&quot; &amp; &lt;b&gt;"));
	assert_non_null(strstr(p, "<strong>&lt;x&gt;</strong>"));
	assert_non_null(strstr(p, "fill in the field"));
	assert_non_null(strstr(p, "400 missing_field"));
	assert_null(strstr(p, "<b>"));
	free(p);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(lead_id_normalises),
		cmocka_unit_test(builds_the_event),
		cmocka_unit_test(refusals_name_the_field),
		cmocka_unit_test(rate_limit_is_bounded),
		cmocka_unit_test(client_behind_trusted_proxies),
		cmocka_unit_test(array_elements),
		cmocka_unit_test(problem_page_for_browsers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
