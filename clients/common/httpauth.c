/*
 * clients/common/httpauth.c - bearer tokens (contract in httpauth.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "httpauth.h"

struct http_auth {
	fa_table *t;
};

http_auth *
http_auth_load(const char *path, char *why, size_t whylen)
{
	if (sodium_init() < 0) {
		snprintf(why, whylen, "cannot initialise libsodium");
		return NULL;
	}
	http_auth *a = calloc(1, sizeof *a);
	if (a == NULL) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	if ((a->t = fa_load(path, why, whylen)) == NULL) {
		free(a);
		return NULL;
	}
	return a;
}

void
http_auth_destroy(http_auth **a)
{
	if (a == NULL || *a == NULL)
		return;
	fa_destroy((*a)->t);
	free(*a);
	*a = NULL;
}

const fa_principal *
http_auth_check(const http_auth *a, const char *authorization)
{
	if (a == NULL || authorization == NULL || strncasecmp(authorization, "Bearer ", 7) != 0)
		return NULL;
	const char *tok = authorization + 7;
	while (*tok == ' ')
		tok++;
	size_t len = strlen(tok);
	while (len > 0 && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
		len--;
	if (len == 0 || len > 512)
		return NULL;
	return fa_by_token(a->t, tok, len);
}
