/*
 * clients/gateway/page.c - the page a browser's plain form post gets
 * instead of the JSON body of a refusal (GATEWAY.md "Limits and error
 * codes"): the same status, the refusal's message and what the visitor
 * can do about it, in a small self-contained HTML page (no script, no
 * stylesheet, image or font from elsewhere).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

int
gw_wants_html(const char *accept, const char *content_type)
{
	if (accept == NULL || strstr(accept, "text/html") == NULL)
		return 0;
	if (strstr(accept, "application/json") != NULL)
		return 0;
	/* a JSON body comes from a script, whatever it accepts */
	return content_type == NULL || strstr(content_type, "json") == NULL;
}

/* What a visitor can do about a refusal, by its code. */
static const char *
what_to_do(unsigned status, const char *code)
{
	static const struct {
		const char *code, *text;
	} hints[] = {
		{ "missing_field", "Go back, fill in the field named below and send the form again." },
		{ "invalid_email", "Go back, check your e-mail address and send the form again." },
		{ "value_too_long", "Go back, shorten the answer named below and send the form again." },
		{ "invalid_text", "Go back, retype the answer named below (plain text only) and send "
		                  "the form again." },
		{ "body_too_large", "Go back, shorten your answers and send the form again." },
		{ "file_not_accepted", "This form takes text only: go back, remove the file and send "
		                       "the form again." },
		{ "origin_not_allowed", "This form does not take posts from the page you sent it from. "
		                        "Please let the site's owner know: the form's origins must "
		                        "list this site." },
		{ "rate_limited", "Too many forms were sent from your address just now. Wait a minute, "
		                  "then go back and send the form again." },
		{ "unknown_form", "The page points at a form that does not exist. Please let the "
		                  "site's owner know." },
		{ "EIDCONFLICT", "This form was already sent with other answers. Reload the form's "
		                 "page, fill it in and send it again." },
	};
	for (size_t i = 0; code && i < sizeof hints / sizeof hints[0]; i++)
		if (strcmp(code, hints[i].code) == 0)
			return hints[i].text;
	if (status == 404 || status == 405)
		return "The page sends its form to the wrong address. Please let the site's owner know.";
	return "Go back and send the form again. If this keeps happening, please let the site's "
	       "owner know.";
}

/* A bounded page buffer: once something does not fit, full is set and
 * nothing more is added. */
typedef struct page {
	char buf[8192];
	size_t n;
	int full;
} page;

static void
put_raw(page *pg, const char *s)
{
	size_t l = strlen(s);
	if (pg->full || pg->n + l >= sizeof pg->buf) {
		pg->full = 1;
		return;
	}
	memcpy(pg->buf + pg->n, s, l);
	pg->n += l;
}

/* s with &, <, >, " and ' escaped. */
static void
put_text(page *pg, const char *s)
{
	char one[2] = { 0, 0 };
	for (; s && *s && !pg->full; s++) {
		switch (*s) {
		case '&': put_raw(pg, "&amp;"); break;
		case '<': put_raw(pg, "&lt;"); break;
		case '>': put_raw(pg, "&gt;"); break;
		case '"': put_raw(pg, "&quot;"); break;
		case '\'': put_raw(pg, "&#39;"); break;
		default: one[0] = *s; put_raw(pg, one); break;
		}
	}
}

char *
gw_problem_page(unsigned status, const char *code, const char *field, const char *message,
                size_t *len)
{
	page *pg = calloc(1, sizeof *pg);
	char st[16];
	char *out;

	if (pg == NULL)
		return NULL;
	put_raw(pg, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
	        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
	        "<title>Your form was not sent</title>\n"
	        "<style>body{font-family:system-ui,sans-serif;max-width:36em;margin:3em auto;"
	        "padding:0 1em;line-height:1.5;color:#222}small{color:#666}</style>\n"
	        "</head><body>\n<h1>Your form was not sent</h1>\n<p>");
	put_text(pg, message);
	put_raw(pg, "</p>\n");
	if (field && *field) {
		put_raw(pg, "<p>Field: <strong>");
		put_text(pg, field);
		put_raw(pg, "</strong></p>\n");
	}
	put_raw(pg, "<p>");
	put_text(pg, what_to_do(status, code));
	put_raw(pg, "</p>\n<p><small>");
	snprintf(st, sizeof st, "%u ", status);
	put_raw(pg, st);
	put_text(pg, code);
	put_raw(pg, "</small></p>\n</body></html>\n");
	if (pg->full) {
		free(pg);
		return NULL;
	}
	/* the page itself, as one malloc'd string the caller frees */
	out = malloc(pg->n + 1);
	if (out != NULL) {
		memcpy(out, pg->buf, pg->n);
		out[pg->n] = '\0';
		*len = pg->n;
	}
	free(pg);
	return out;
}
