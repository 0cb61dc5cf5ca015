/*
 * clients/common/httpauth.h - bearer tokens for the HTTP surfaces
 * (funnel-metrics' dashboard, API and /metrics; the gateway's
 * authenticated endpoints), from the same access file as funneld's keys.
 *
 * A request carries "Authorization: Bearer <token>"; the token's
 * BLAKE2b-256 is compared, in constant time, with the `token:` hashes of
 * the access file (proto/access.h, `funnel token NAME`).  What the
 * principal may then do is the caller's to decide: fa_principal.read for
 * reading, fa_may_publish() for sending events.
 *
 * The table is loaded once and immutable: a principal returned stays
 * valid until http_auth_destroy.  The functions may be called from any
 * number of threads at once.
 */
#ifndef FUNNEL_HTTPAUTH_H
#define FUNNEL_HTTPAUTH_H

#include <stddef.h>

#include "access.h"

typedef struct http_auth http_auth;

/* Load the access file.  Returns NULL with the problem ("PATH:LINE: ...")
 * in why. */
http_auth *http_auth_load(const char *path, char *why, size_t whylen);
void http_auth_destroy(http_auth **a);

/*
 * The principal of an Authorization header value ("Bearer <token>", the
 * scheme matched without regard to case), or NULL when the header is
 * absent (NULL), not a bearer token, or a token the file does not know.
 * The caller answers NULL with 401 and "WWW-Authenticate: Bearer".
 */
const fa_principal *http_auth_check(const http_auth *a, const char *authorization);

#endif
