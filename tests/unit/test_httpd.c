/*
 * tests/unit/test_httpd.c - the services' HTTP server
 * (clients/common/httpd.c) on a real loopback socket: the address, the
 * parameter limit answered before the handler, the two error shapes and
 * the answers' style, the bearer challenge, the page hook, a busy port.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "funnel/funnel.h"
#include "httpd.h"

/* What the handler saw (the server's threads write, the test reads). */
typedef struct seen {
	int requests;
	int completed;
} seen;

static int
load(const int *p)
{
	return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

/* One request on a fresh connection, the whole answer (up to cap - 1
 * bytes, NUL-terminated) read until the server closes; each read is
 * bounded by 5 s. */
static void
fetch(const httpd *h, const char *request, char *out, size_t cap)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)httpd_port(h)) };
	struct timeval tv = { .tv_sec = 5 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	size_t n = strlen(request);
	assert_int_equal(write(fd, request, n), (ssize_t)n);
	size_t len = 0;
	ssize_t r;
	while (len + 1 < cap && (r = read(fd, out + len, cap - 1 - len)) > 0)
		len += (size_t)r;
	out[len] = 0;
	close(fd);
}

/* The body of an answer (after the blank line). */
static const char *
body_of(const char *answer)
{
	const char *b = strstr(answer, "\r\n\r\n");
	assert_non_null(b);
	return b + 4;
}

static void
wait_completed(const seen *s, int want)
{
	for (int i = 0; i < 200 && load(&s->completed) < want; i++)
		usleep(10000);
	assert_int_equal(load(&s->completed), want);
}

/* The handler: /error answers the common error, /auth the 401, anything
 * else 200 "hello\n". */
static httpd *srv_of_test;     /* the server on_request answers for */

static enum MHD_Result
on_request(void *ctx, struct MHD_Connection *c, const char *url, const char *method,
           const char *upload, size_t *upload_len, void **state)
{
	seen *s = ctx;
	(void)method;
	(void)upload;
	(void)upload_len;
	(void)state;
	__atomic_add_fetch(&s->requests, 1, __ATOMIC_SEQ_CST);
	if (strcmp(url, "/error") == 0)
		return httpd_reply_error(srv_of_test, c, 404, "not_found", "path", "no such <thing>", 7,
		                         NULL, 0);
	if (strcmp(url, "/auth") == 0)
		return httpd_reply_unauthorized(srv_of_test, c, "unauthorized", "Authorization",
		                                "a token is needed");
	return httpd_reply_text(srv_of_test, c, 200, "text/plain", "hello\n");
}

static void
on_completed(void *ctx, struct MHD_Connection *c, void **state)
{
	seen *s = ctx;
	(void)c;
	(void)state;
	__atomic_add_fetch(&s->completed, 1, __ATOMIC_SEQ_CST);
}

static char *
page(void *ctx, struct MHD_Connection *c, unsigned status, const cJSON *o, size_t *len)
{
	(void)ctx;
	(void)c;
	if (status != 404)
		return NULL;
	char *p = malloc(64);
	assert_non_null(p);
	*len = (size_t)snprintf(p, 64, "<p>%s</p>\n",
	                        cJSON_GetStringValue(cJSON_GetObjectItem(o, "code")));
	return p;
}

static void
test_addr(void **state)
{
	(void)state;
	httpd_addr a;
	assert_int_equal(httpd_addr_parse(&a, "127.0.0.1:8080"), FUNNEL_OK);
	assert_string_equal(a.host, "127.0.0.1");
	assert_int_equal(a.port, 8080);
	assert_int_equal(ntohs(a.sa.sin_port), 8080);
	static const char *const bad[] = {
		"127.0.0.1", "127.0.0.1:", ":80", "localhost:80", "127.0.0.1:65536", "127.0.0.1:80x",
		"::1:80", "1111111111111111111111111111111111111111111111111111111111111111:1",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (httpd_addr_parse(&a, bad[i]) != FUNNEL_EINVAL)
			fail_msg("'%s' parsed", bad[i]);
	httpd *h = (httpd *)1;
	httpd_opts o = { .name = "t", .addr = "localhost:0", .on_request = on_request };
	assert_int_equal(httpd_new(&h, &o), FUNNEL_EINVAL);
	assert_null(h);
}

/* More query parameters than max_params: 400 in the server's error
 * shape, before (and without) the handler or the completion hook. */
static void
test_max_params(void **state)
{
	(void)state;
	seen s = { 0 };
	char ans[4096];
	httpd_opts o = { .name = "t", .addr = "127.0.0.1:0", .max_params = 3, .no_store = 1,
	                 .errors = HTTPD_ERRORS_PARAM, .on_request = on_request,
	                 .on_completed = on_completed, .ctx = &s };
	assert_int_equal(httpd_new(&srv_of_test, &o), FUNNEL_OK);
	assert_true(httpd_port(srv_of_test) > 0);
	assert_string_equal(httpd_host(srv_of_test), "127.0.0.1");

	fetch(srv_of_test, "GET /x?a=1&b=2&c=3&d=4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
	      ans, sizeof ans);
	assert_true(strncmp(ans, "HTTP/1.1 400 ", 13) == 0);
	assert_non_null(strstr(ans, "Cache-Control: no-store\r\n"));
	assert_string_equal(body_of(ans), "{\"error\":\"too many parameters: at most 3 in one request\"}");
	assert_int_equal(load(&s.requests), 0);

	fetch(srv_of_test, "GET /x?a=1&b=2&c=3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
	      ans, sizeof ans);
	assert_true(strncmp(ans, "HTTP/1.1 200 ", 13) == 0);
	assert_string_equal(body_of(ans), "hello\n");
	assert_int_equal(load(&s.requests), 1);
	wait_completed(&s, 1);            /* the refused one never counted */
	httpd_destroy(&srv_of_test);
	assert_null(srv_of_test);
	httpd_destroy(&srv_of_test);      /* safe on NULL */
}

/* The coded shape with a newline and no-store; the param shape without
 * either; the bearer challenge names the service. */
static void
test_error_shapes(void **state)
{
	(void)state;
	seen s = { 0 };
	char ans[4096];
	httpd_opts o = { .name = "gw", .addr = "127.0.0.1:0", .threads = 2, .no_store = 1,
	                 .json_newline = 1, .errors = HTTPD_ERRORS_CODED, .on_request = on_request,
	                 .ctx = &s };
	assert_int_equal(httpd_new(&srv_of_test, &o), FUNNEL_OK);
	fetch(srv_of_test, "GET /error HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", ans,
	      sizeof ans);
	assert_true(strncmp(ans, "HTTP/1.1 404 ", 13) == 0);
	assert_non_null(strstr(ans, "Content-Type: application/json\r\n"));
	assert_non_null(strstr(ans, "Cache-Control: no-store\r\n"));
	assert_string_equal(body_of(ans), "{\"code\":\"not_found\",\"field\":\"path\","
	                    "\"error\":\"no such <thing>\",\"limit\":7}\n");
	fetch(srv_of_test, "GET /auth HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", ans,
	      sizeof ans);
	assert_true(strncmp(ans, "HTTP/1.1 401 ", 13) == 0);
	assert_non_null(strstr(ans, "WWW-Authenticate: Bearer realm=\"funnel-gw\"\r\n"));
	assert_string_equal(body_of(ans), "{\"code\":\"unauthorized\",\"field\":\"Authorization\","
	                    "\"error\":\"a token is needed\"}\n");

	/* the same port again: cannot listen */
	char addr[32];
	httpd *other = NULL;
	snprintf(addr, sizeof addr, "127.0.0.1:%u", httpd_port(srv_of_test));
	httpd_opts o2 = { .name = "t", .addr = addr, .on_request = on_request, .ctx = &s };
	assert_int_equal(httpd_new(&other, &o2), FUNNEL_ETRANSPORT);
	assert_null(other);
	httpd_quiesce(srv_of_test);
	httpd_destroy(&srv_of_test);

	o = (httpd_opts){ .name = "mx", .addr = "127.0.0.1:0", .errors = HTTPD_ERRORS_PARAM,
	                  .on_request = on_request, .ctx = &s };
	assert_int_equal(httpd_new(&srv_of_test, &o), FUNNEL_OK);
	fetch(srv_of_test, "GET /error HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", ans,
	      sizeof ans);
	assert_true(strncmp(ans, "HTTP/1.1 404 ", 13) == 0);
	assert_null(strstr(ans, "Cache-Control"));
	assert_string_equal(body_of(ans), "{\"error\":\"no such <thing>\",\"param\":\"path\"}");
	httpd_destroy(&srv_of_test);
}

/* The page hook answers a page in place of the JSON it is shown. */
static void
test_page(void **state)
{
	(void)state;
	seen s = { 0 };
	char ans[4096];
	httpd_opts o = { .name = "t", .addr = "127.0.0.1:0", .on_request = on_request,
	                 .page = page, .ctx = &s };
	assert_int_equal(httpd_new(&srv_of_test, &o), FUNNEL_OK);
	fetch(srv_of_test, "GET /error HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", ans,
	      sizeof ans);
	assert_true(strncmp(ans, "HTTP/1.1 404 ", 13) == 0);
	assert_non_null(strstr(ans, "Content-Type: text/html; charset=utf-8\r\n"));
	assert_string_equal(body_of(ans), "<p>not_found</p>\n");
	fetch(srv_of_test, "GET /auth HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", ans,
	      sizeof ans);
	assert_non_null(strstr(ans, "Content-Type: application/json\r\n"));   /* 401: not a page */
	httpd_destroy(&srv_of_test);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addr),
		cmocka_unit_test(test_max_params),
		cmocka_unit_test(test_error_shapes),
		cmocka_unit_test(test_page),
	};
	return cmocka_run_group_tests_name("httpd", tests, NULL, NULL);
}
