/*
 * proto/error.c - names and messages of funnel_err.  The names are part
 * of the wire contract ("error" field of error replies).
 */
#include <stddef.h>

#include "funnel/error.h"

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
