/*
 * clients/common/httpd.h - the HTTP server the services embed
 * (funnel-metrics, funnel-gateway, funnel-mirror): one libmicrohttpd
 * daemon on an IPv4 address with the service's limits, and the answers
 * every service writes the same way.  A service keeps its routes and
 * handlers; how a server starts, is limited, stops, and how its JSON,
 * text and error answers and its bearer-token refusal look is here.
 *
 * Contract:
 *  - httpd_new parses opts->addr ("IPV4:PORT", port 0: any free one),
 *    starts the daemon (internal epoll thread, or a pool of
 *    opts->threads), and from then on calls opts->on_request for every
 *    request, on the server's threads, with MHD's arguments and
 *    per-connection state (*state starts NULL).  A limit left 0 is
 *    libmicrohttpd's default.
 *  - With opts->max_params, a request whose query has more parameters
 *    is answered 400 before any of them is parsed and never reaches
 *    on_request or on_completed (MHD keeps every parameter in the
 *    connection's fixed pool; one that runs out answers nothing).
 *  - Every answer carries the server's style: Cache-Control: no-store
 *    when opts->no_store, a newline after a JSON body when
 *    opts->json_newline, and the JSON error shape of opts->errors.
 *  - httpd_reply_json hands every JSON answer to opts->page first, if
 *    set: a page it returns is answered instead (text/html), for clients
 *    that asked for one (content negotiation).
 *
 * Ownership: opts is copied (name too; addr is not kept); opts->ctx is the
 * caller's and must outlive the server.  httpd_reply_json takes the cJSON
 * object, httpd_reply with HTTPD_TAKE the body, whatever the outcome.
 *
 * Threads: httpd_new, httpd_quiesce and httpd_destroy are the owner's,
 * one at a time.  The server is immutable once started: the httpd_reply*
 * functions and the getters may be called from any of its threads at
 * once, each for the connection it is serving.  httpd_destroy joins the
 * server's threads: no callback runs after it returns.  libmicrohttpd
 * must not stop with a suspended connection (opts->suspend): the owner
 * calls httpd_quiesce (no new connection is accepted), resumes or
 * finishes every suspended one, then httpd_destroy.
 */
#ifndef FUNNEL_HTTPD_H
#define FUNNEL_HTTPD_H

#include <netinet/in.h>
#include <stddef.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "httpauth.h"

typedef struct httpd httpd;

/* A request, or the next call for it (its body, its end, its resumption):
 * MHD's access handler, with the server's ctx. */
typedef enum MHD_Result httpd_request_fn(void *ctx, struct MHD_Connection *c, const char *url,
                                         const char *method, const char *upload,
                                         size_t *upload_len, void **state);
/* The connection's request is over (answered, or the client left): free
 * what *state holds. */
typedef void httpd_completed_fn(void *ctx, struct MHD_Connection *c, void **state);
/* A page to answer instead of the JSON o (status is its status), as a
 * malloc'd body of *len bytes the server frees; NULL: the JSON. */
typedef char *httpd_page_fn(void *ctx, struct MHD_Connection *c, unsigned status, const cJSON *o,
                            size_t *len);

/* The JSON of an error answer, as each service documents it. */
typedef enum httpd_errors {
	HTTPD_ERRORS_CODED = 0,   /* {"code", "field"?, "error", "limit"?} (GATEWAY.md); field
	                           * written when not NULL or "", limit when >= 0 */
	HTTPD_ERRORS_PARAM,       /* {"error", "param"?} (METRICS.md): param is the field,
	                           * written when not NULL; code and limit are not written */
} httpd_errors;

typedef struct httpd_opts {
	const char *name;         /* the service ("metrics"): log lines, the bearer realm */
	const char *addr;         /* "IPV4:PORT" */
	/* limits; 0: libmicrohttpd's default */
	unsigned threads;         /* request threads (a pool); 0: the one epoll thread */
	unsigned max_conns;       /* connections open in all; more are closed as they arrive */
	unsigned max_per_addr;    /* from one client address (0: no limit) */
	unsigned idle_s;          /* a connection silent this long is closed (0: never) */
	size_t conn_memory;       /* per connection: headers and the read buffer */
	unsigned max_params;      /* query parameters of one request (0: MHD's pool decides) */
	int suspend;              /* on_request may suspend connections */
	/* style of the answers */
	int no_store;             /* Cache-Control: no-store on every answer */
	int json_newline;         /* a JSON body ends in "\n" */
	httpd_errors errors;
	/* the service */
	httpd_request_fn *on_request;
	httpd_completed_fn *on_completed;   /* NULL: nothing to free */
	httpd_page_fn *page;                /* NULL: JSON is answered as JSON */
	void *ctx;
} httpd_opts;

/* An "IPV4:PORT" address: the socket address and the host part. */
typedef struct httpd_addr {
	struct sockaddr_in sa;
	char host[64];
	unsigned port;
} httpd_addr;

/* Parse addr into a.  FUNNEL_OK, or FUNNEL_EINVAL (no colon, no or a bad
 * port, a host that is not an IPv4 address). */
int httpd_addr_parse(httpd_addr *a, const char *addr);

/*
 * Start serving.  FUNNEL_OK with *out set; FUNNEL_EINVAL (the address,
 * nothing logged), FUNNEL_ENOMEM, or FUNNEL_ETRANSPORT when it cannot
 * listen (logged: "NAME: cannot serve HTTP on ADDR").
 */
int httpd_new(httpd **out, const httpd_opts *o);
/* The address's host part, and the port it listens on (the one picked
 * for port 0). */
const char *httpd_host(const httpd *h);
unsigned httpd_port(const httpd *h);
/* Accept no new connection (the listening socket is closed by
 * httpd_destroy); those open go on being served. */
void httpd_quiesce(httpd *h);
/* Stop serving (joins the threads) and free; *h is set NULL; safe on
 * NULL. */
void httpd_destroy(httpd **h);

/* ---- answers: each queues a response for c and returns MHD's verdict
 * (MHD_NO: none could be made; MHD then closes the connection) ---- */

typedef struct httpd_header {
	const char *name, *value;     /* an entry with either NULL is skipped */
} httpd_header;

typedef enum httpd_mem {
	HTTPD_STATIC,             /* the body outlives the server (a literal, a table) */
	HTTPD_TAKE,               /* malloc'd: the server frees it */
	HTTPD_COPY,               /* copied now */
} httpd_mem;

/* status with body[0..len) of type (NULL: no Content-Type) and the extra
 * headers hd[0..nh). */
enum MHD_Result httpd_reply(const httpd *h, struct MHD_Connection *c, unsigned status,
                            const char *type, const void *body, size_t len, httpd_mem mem,
                            const httpd_header *hd, size_t nh);
/* status with the NUL-terminated text (copied) as type. */
enum MHD_Result httpd_reply_text(const httpd *h, struct MHD_Connection *c, unsigned status,
                                 const char *type, const char *text);
/* 500 "out of memory\n" as text/plain. */
enum MHD_Result httpd_reply_nomem(const httpd *h, struct MHD_Connection *c);
/* status with o as application/json (or the page opts->page makes of
 * it); o is taken (NULL: 500 out of memory). */
enum MHD_Result httpd_reply_json(const httpd *h, struct MHD_Connection *c, unsigned status,
                                 cJSON *o, const httpd_header *hd, size_t nh);
/* The error answer in the server's shape: code (stable, e.g.
 * "not_found"), the field or parameter at fault, the message, the
 * limit passed (< 0: none). */
enum MHD_Result httpd_reply_error(const httpd *h, struct MHD_Connection *c, unsigned status,
                                  const char *code, const char *field, const char *msg,
                                  long limit, const httpd_header *hd, size_t nh);
/* 401 with WWW-Authenticate: Bearer realm="funnel-NAME" (RFC 6750) and
 * the error answer of code, field and msg. */
enum MHD_Result httpd_reply_unauthorized(const httpd *h, struct MHD_Connection *c,
                                         const char *code, const char *field, const char *msg);

/* ---- requests ---- */

/* The value of request header name (case-insensitive), or NULL; valid
 * while the request is. */
const char *httpd_header_value(struct MHD_Connection *c, const char *name);
/* The principal of the request's "Authorization: Bearer <token>" in a,
 * or NULL (no header, not a bearer token, a token a does not know). */
const fa_principal *httpd_bearer(const http_auth *a, struct MHD_Connection *c);

#endif
