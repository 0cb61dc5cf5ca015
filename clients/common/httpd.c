/*
 * clients/common/httpd.c - the services' HTTP server (contract in
 * httpd.h).
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "funnel/funnel.h"
#include "funnel/log.h"
#include "httpd.h"

struct httpd {
	struct MHD_Daemon *d;
	httpd_opts o;             /* o.name points to name; o.addr is not kept */
	char name[32];
	httpd_addr a;
	unsigned port;            /* bound */
	MHD_socket quiesced;      /* the listening socket httpd_quiesce took */
};

/* The per-connection state the URI callback gives a request with too
 * many parameters: its address, never dereferenced. */
static char too_many_params;

int
httpd_addr_parse(httpd_addr *a, const char *addr)
{
	const char *colon = strrchr(addr, ':');
	char *end;

	memset(a, 0, sizeof *a);
	if (colon == NULL || (size_t)(colon - addr) >= sizeof a->host)
		return FUNNEL_EINVAL;
	memcpy(a->host, addr, (size_t)(colon - addr));
	a->host[colon - addr] = 0;
	unsigned long port = strtoul(colon + 1, &end, 10);
	a->sa.sin_family = AF_INET;
	a->sa.sin_port = htons((uint16_t)port);
	a->port = (unsigned)port;
	if (*end || colon[1] == 0 || port > 65535 || inet_pton(AF_INET, a->host, &a->sa.sin_addr) != 1)
		return FUNNEL_EINVAL;
	return FUNNEL_OK;
}

/* MHD_OPTION_URI_LOG_CALLBACK: called with the request's URI before MHD
 * parses its query, which is the only moment a request with too many
 * parameters can be refused whole: MHD keeps each parameter in the
 * connection's fixed memory pool, and a pool that runs out leaves the
 * client with no answer at all (libmicrohttpd 0.9.75).  Past the limit
 * the query is cut at its start (the URI lives in MHD's read buffer,
 * and MHD parses the query from the '?' it found before this call, as
 * a C string), so nothing is parsed and on_request answers 400. */
static void *
on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
	const httpd *h = cls;
	(void)c;
	char *query = strchr(uri, '?');
	if (query == NULL || query[1] == 0)
		return NULL;
	unsigned n = 1;
	for (const char *p = query + 1; *p; p++)
		n += *p == '&';
	if (n <= h->o.max_params)
		return NULL;
	query[1] = 0;
	return &too_many_params;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
           const char *version, const char *upload, size_t *upload_len, void **state)
{
	const httpd *h = cls;
	(void)version;
	if (*state == &too_many_params) {
		char msg[96];
		snprintf(msg, sizeof msg, "too many parameters: at most %u in one request",
		         h->o.max_params);
		return httpd_reply_error(h, c, 400, "too_many_parameters", NULL, msg,
		                         (long)h->o.max_params, NULL, 0);
	}
	return h->o.on_request(h->o.ctx, c, url, method, upload, upload_len, state);
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **state, enum MHD_RequestTerminationCode t)
{
	const httpd *h = cls;
	(void)t;
	if (*state == &too_many_params)
		*state = NULL;
	else if (h->o.on_completed != NULL)
		h->o.on_completed(h->o.ctx, c, state);
}

int
httpd_new(httpd **out, const httpd_opts *o)
{
	*out = NULL;
	httpd *h = calloc(1, sizeof *h);
	if (h == NULL)
		return FUNNEL_ENOMEM;
	h->o = *o;
	h->quiesced = MHD_INVALID_SOCKET;
	snprintf(h->name, sizeof h->name, "%s", o->name ? o->name : "http");
	h->o.name = h->name;
	h->o.addr = NULL;
	if (o->addr == NULL || httpd_addr_parse(&h->a, o->addr) != FUNNEL_OK) {
		free(h);
		return FUNNEL_EINVAL;
	}

	/* the limits that are set, and nothing else: 0 leaves MHD's default */
	struct MHD_OptionItem ops[12];
	size_t n = 0;
	ops[n++] = (struct MHD_OptionItem){ MHD_OPTION_SOCK_ADDR, 0, &h->a.sa };
	if (o->threads)
		ops[n++] = (struct MHD_OptionItem){ MHD_OPTION_THREAD_POOL_SIZE, o->threads, NULL };
	if (o->max_conns)
		ops[n++] = (struct MHD_OptionItem){ MHD_OPTION_CONNECTION_LIMIT, o->max_conns, NULL };
	if (o->max_per_addr)
		ops[n++] = (struct MHD_OptionItem){ MHD_OPTION_PER_IP_CONNECTION_LIMIT,
		                                    o->max_per_addr, NULL };
	/* per connection: headers and the read buffer; MHD zeroes it after
	 * every request, so a large one costs time */
	if (o->conn_memory)
		ops[n++] = (struct MHD_OptionItem){ MHD_OPTION_CONNECTION_MEMORY_LIMIT,
		                                    (intptr_t)o->conn_memory, NULL };
	if (o->idle_s)
		ops[n++] = (struct MHD_OptionItem){ MHD_OPTION_CONNECTION_TIMEOUT, o->idle_s, NULL };
	if (o->max_params)
		ops[n++] = (struct MHD_OptionItem){ MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_uri, h };
	if (o->max_params || o->on_completed)
		ops[n++] = (struct MHD_OptionItem){ MHD_OPTION_NOTIFY_COMPLETED,
		                                    (intptr_t)on_completed, h };
	ops[n] = (struct MHD_OptionItem){ MHD_OPTION_END, 0, NULL };

	/* epoll: a connection count past FD_SETSIZE must not break select();
	 * ITC: httpd_quiesce needs it with internal threads (suspend/resume
	 * implies it) */
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC |
	                 MHD_USE_ERROR_LOG;
	if (o->suspend)
		flags |= MHD_ALLOW_SUSPEND_RESUME;
	h->d = MHD_start_daemon(flags, (uint16_t)h->a.port, NULL, NULL, on_request, h,
	                        MHD_OPTION_ARRAY, ops, MHD_OPTION_END);
	if (h->d == NULL) {
		funnel_log(FUNNEL_LOG_ERROR, "%s: cannot serve HTTP on %s", h->name, o->addr);
		free(h);
		return FUNNEL_ETRANSPORT;
	}
	const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
	h->port = di ? (unsigned)di->port : h->a.port;
	*out = h;
	return FUNNEL_OK;
}

const char *
httpd_host(const httpd *h)
{
	return h->a.host;
}

unsigned
httpd_port(const httpd *h)
{
	return h->port;
}

void
httpd_quiesce(httpd *h)
{
	if (h != NULL && h->d != NULL && h->quiesced == MHD_INVALID_SOCKET)
		h->quiesced = MHD_quiesce_daemon(h->d);
}

void
httpd_destroy(httpd **ph)
{
	if (ph == NULL || *ph == NULL)
		return;
	httpd *h = *ph;
	MHD_stop_daemon(h->d);          /* joins the request threads */
	if (h->quiesced != MHD_INVALID_SOCKET)
		close(h->quiesced);
	free(h);
	*ph = NULL;
}

/* ---- answers ---- */

enum MHD_Result
httpd_reply(const httpd *h, struct MHD_Connection *c, unsigned status, const char *type,
            const void *body, size_t len, httpd_mem mem, const httpd_header *hd, size_t nh)
{
	enum MHD_ResponseMemoryMode mode = mem == HTTPD_TAKE ? MHD_RESPMEM_MUST_FREE :
	                                   mem == HTTPD_COPY ? MHD_RESPMEM_MUST_COPY :
	                                   MHD_RESPMEM_PERSISTENT;
	struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, mode);
	if (r == NULL) {
		if (mem == HTTPD_TAKE)
			free((void *)body);
		return MHD_NO;
	}
	if (type)
		MHD_add_response_header(r, "Content-Type", type);
	if (h->o.no_store)
		MHD_add_response_header(r, "Cache-Control", "no-store");
	for (size_t i = 0; i < nh; i++)
		if (hd[i].name && hd[i].value)
			MHD_add_response_header(r, hd[i].name, hd[i].value);
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

enum MHD_Result
httpd_reply_text(const httpd *h, struct MHD_Connection *c, unsigned status, const char *type,
                 const char *text)
{
	return httpd_reply(h, c, status, type, text, strlen(text), HTTPD_COPY, NULL, 0);
}

enum MHD_Result
httpd_reply_nomem(const httpd *h, struct MHD_Connection *c)
{
	static const char msg[] = "out of memory\n";
	return httpd_reply(h, c, 500, "text/plain", msg, sizeof msg - 1, HTTPD_STATIC, NULL, 0);
}

enum MHD_Result
httpd_reply_json(const httpd *h, struct MHD_Connection *c, unsigned status, cJSON *o,
                 const httpd_header *hd, size_t nh)
{
	size_t plen;
	char *page = h->o.page && o ? h->o.page(h->o.ctx, c, status, o, &plen) : NULL;
	if (page != NULL) {
		cJSON_Delete(o);
		return httpd_reply(h, c, status, "text/html; charset=utf-8", page, plen, HTTPD_TAKE,
		                   hd, nh);
	}
	char *s = o ? cJSON_PrintUnformatted(o) : NULL;
	cJSON_Delete(o);
	if (s == NULL)
		return httpd_reply_nomem(h, c);
	size_t n = strlen(s);
	if (h->o.json_newline)
		s[n++] = '\n';      /* cJSON's buffer has room for the NUL we replace */
	return httpd_reply(h, c, status, "application/json", s, n, HTTPD_TAKE, hd, nh);
}

enum MHD_Result
httpd_reply_error(const httpd *h, struct MHD_Connection *c, unsigned status, const char *code,
                  const char *field, const char *msg, long limit, const httpd_header *hd,
                  size_t nh)
{
	cJSON *o = cJSON_CreateObject();
	if (h->o.errors == HTTPD_ERRORS_PARAM) {
		cJSON_AddStringToObject(o, "error", msg);
		if (field)
			cJSON_AddStringToObject(o, "param", field);
	} else {
		if (code)
			cJSON_AddStringToObject(o, "code", code);
		if (field && *field)
			cJSON_AddStringToObject(o, "field", field);
		cJSON_AddStringToObject(o, "error", msg);
		if (limit >= 0)
			cJSON_AddNumberToObject(o, "limit", (double)limit);
	}
	return httpd_reply_json(h, c, status, o, hd, nh);
}

enum MHD_Result
httpd_reply_unauthorized(const httpd *h, struct MHD_Connection *c, const char *code,
                         const char *field, const char *msg)
{
	char realm[64];
	snprintf(realm, sizeof realm, "Bearer realm=\"funnel-%s\"", h->name);
	httpd_header hd[1] = { { "WWW-Authenticate", realm } };
	return httpd_reply_error(h, c, 401, code, field, msg, -1, hd, 1);
}

/* ---- requests ---- */

const char *
httpd_header_value(struct MHD_Connection *c, const char *name)
{
	return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

const fa_principal *
httpd_bearer(const http_auth *a, struct MHD_Connection *c)
{
	return http_auth_check(a, httpd_header_value(c, "Authorization"));
}
