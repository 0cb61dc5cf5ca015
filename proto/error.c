/*
 * proto/error.c - names and messages of funnel_err (the names are part
 * of the wire contract: "error" field of error replies) and the one
 * setter of the error struct (error.h).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "utf8.h"

struct errdesc {
	int code;
	const char *name;
	const char *message;
};

static const struct errdesc errs[] = {
	{ FUNNEL_OK, "OK", "success" },
	{ FUNNEL_EMALFORMED, "EMALFORMED", "malformed message: not msgpack or not the expected shape" },
	{ FUNNEL_EMISSING, "EMISSING", "a required field is missing" },
	{ FUNNEL_ETYPE, "ETYPE", "a field has the wrong type" },
	{ FUNNEL_EVALUE, "EVALUE", "a field has a value that is not allowed" },
	{ FUNNEL_ETOOBIG, "ETOOBIG", "an event or request is over a size limit" },
	{ FUNNEL_EUNKNOWN_TYPE, "EUNKNOWN_TYPE", "unknown event type (custom types start with x.)" },
	{ FUNNEL_ENOLEAD, "ENOLEAD", "the lead was never captured" },
	{ FUNNEL_ETRANSITION, "ETRANSITION", "event makes no sense for the lead's stage" },
	{ FUNNEL_EVERSION, "EVERSION", "expected version does not match the lead's version" },
	{ FUNNEL_EOP, "EOP", "unknown request op" },
	{ FUNNEL_ESTORAGE, "ESTORAGE", "the log could not be written; nothing was stored" },
	{ FUNNEL_ESHUTDOWN, "ESHUTDOWN", "the daemon is shutting down" },
	{ FUNNEL_ENOTFOUND, "ENOTFOUND", "not found" },
	{ FUNNEL_EINTERNAL, "EINTERNAL", "internal error" },
	{ FUNNEL_EIDCONFLICT, "EIDCONFLICT", "the id was already used for a different event" },
	{ FUNNEL_EFORBIDDEN, "EFORBIDDEN", "the principal is not allowed to do this (access file)" },
	{ FUNNEL_ETIMEDOUT, "ETIMEDOUT", "timed out waiting for a reply" },
	{ FUNNEL_ETRANSPORT, "ETRANSPORT", "transport (ZeroMQ) error" },
	{ FUNNEL_ENOMEM, "ENOMEM", "out of memory" },
	{ FUNNEL_EPROTOCOL, "EPROTOCOL", "reply does not follow the protocol" },
	{ FUNNEL_ECHAIN, "ECHAIN", "hash chain broken" },
	{ FUNNEL_EINVAL, "EINVAL", "invalid argument" },
	{ FUNNEL_EJSON, "EJSON", "invalid JSON input" },
};

static const struct errdesc *
find(int err)
{
	for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
		if (errs[i].code == err)
			return &errs[i];
	}
	return NULL;
}

const char *
funnel_strerror(int err)
{
	const struct errdesc *d = find(err);
	return d ? d->message : "unknown error";
}

const char *
funnel_errname(int err)
{
	const struct errdesc *d = find(err);
	return d ? d->name : "EUNKNOWN";
}

/* Messages quote what the producer sent, maybe cut mid-character: make
 * them valid UTF-8 without control bytes, so every client can decode the
 * reply and print it. */
static void
scrub(char *m)
{
	size_t len = strlen(m), i = 0;
	for (size_t k = 0; k < len; k++) {
		if ((unsigned char)m[k] < 0x20 || m[k] == 0x7f)
			m[k] = '?';
	}
	while (i < len) {
		long bad = mp_utf8_invalid_at(m + i, len - i);
		if (bad < 0)
			break;
		m[i + (size_t)bad] = '?';
		i += (size_t)bad + 1;
	}
}

int
fp_error_setv(fp_error *err, int code, int index, const char *field, const char *fmt, va_list ap)
{
	if (err == NULL)
		return code;
	err->code = code;
	err->index = index;
	err->seq = 0;
	snprintf(err->field, sizeof err->field, "%s", field ? field : "");
	vsnprintf(err->message, sizeof err->message, fmt, ap);
	scrub(err->message);
	return code;
}

funnel_err
fp_error_set(fp_error *err, funnel_err code, const char *field, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fp_error_setv(err, (int)code, -1, field, fmt, ap);
	va_end(ap);
	return code;
}
