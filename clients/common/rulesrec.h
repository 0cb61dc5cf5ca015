/*
 * clients/common/rulesrec.h - rules.changed: a service records the rules
 * file it runs with before it applies anything with it, so an audit can
 * always say which rules made a derived event.  The format is
 * PROTOCOL.md's "Events the services send".  Prefix rr_ (the rules
 * file's reader, rulesfile.h, is rf_).
 */
#ifndef FUNNEL_RULESREC_H
#define FUNNEL_RULESREC_H

#include <stddef.h>

#include "funnel/service.h"

/* The rules file a service runs with. */
typedef struct rr_rules_id {
	const char *service;       /* "scoring", "routing", "gateway": data.service */
	const char *hash_hex;      /* BLAKE2b-256 of the text, lowercase hex */
	const char *version;       /* the file's version: */
	const char *text;          /* the whole file */
	size_t len;
} rr_rules_id;

/*
 * Record rules.changed unless the last one the log holds for this service
 * has the same hash.  Asks funneld (waiting for it a while if it is still
 * starting), then sends with funnel_service_send.  Returns FUNNEL_OK,
 * FUNNEL_ESHUTDOWN (stopped while waiting), or the error from funneld.
 */
int rr_record_rules(funnel_service *svc, const rr_rules_id *id);

/* The same for a program that is not a log-following service (the
 * gateway): asks through q, sends through p (one synchronous publish,
 * errors returned as they come; the key makes a retry safe). */
int rr_record_rules_by(funnel_query *q, funnel_producer *p, const rr_rules_id *id);

#endif
