/*
 * clients/common/rulesrec.c - recording rules.changed; the contract is
 * rulesrec.h.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <msgpack.h>

#include "funnel/log.h"
#include "mp.h"
#include "rulesrec.h"

/* The last rules.changed record of one service, as the walk finds it. */
typedef struct last_rules {
	const char *service;
	char hash[2 * FUNNEL_HASH_BYTES + 1];
	uint64_t seq;
} last_rules;

static int
note_rules(const funnel_record *r, void *ctx)
{
	last_rules *lr = ctx;
	funnel_str svc, h;

	if (r->data != NULL && mp_get_str(r->data, "service", &svc, NULL) == FUNNEL_OK &&
	    svc.len == strlen(lr->service) && memcmp(svc.ptr, lr->service, svc.len) == 0 &&
	    mp_get_str(r->data, "hash", &h, NULL) == FUNNEL_OK && h.len == 2 * FUNNEL_HASH_BYTES) {
		memcpy(lr->hash, h.ptr, h.len);
		lr->hash[h.len] = 0;
		lr->seq = r->seq;
	}
	return FUNNEL_OK;
}

/* The hash of the rules the log last recorded for the service ("" if
 * none) and that record's seq (0).  Reads every rules.changed (few). */
static int
last_recorded_rules(funnel_query *q, const char *service, last_rules *lr)
{
	funnel_replay_req req = { .from = 1, .type = "rules.changed", .limit = 1000 };
	memset(lr, 0, sizeof *lr);
	lr->service = service;
	return funnel_replay_each(q, &req, note_rules, lr);
}

/* How the record is sent: through a service's runtime or a producer. */
typedef int (*send_fn)(void *to, const funnel_event *ev, funnel_ack *ack);

static int
send_by_service(void *to, const funnel_event *ev, funnel_ack *ack)
{
	return funnel_service_send(to, ev, ack);
}

static int
send_by_producer(void *to, const funnel_event *ev, funnel_ack *ack)
{
	return funnel_publish(to, ev, 1, ack);
}

static int
record_rules(funnel_query *q, send_fn send, void *to, const rr_rules_id *id)
{
	last_rules lr;
	char key[128];
	int rc;

	/* funneld may still be starting: wait for it like the feed does */
	for (int tries = 0;; tries++) {
		rc = last_recorded_rules(q, id->service, &lr);
		if (rc == FUNNEL_OK)
			break;
		if (tries == 0)
			funnel_log(FUNNEL_LOG_WARN, "%s: asking the log for the rules in force: %s; "
			           "waiting for funneld", id->service, funnel_errname(rc));
		if (tries >= 30)
			return rc;
	}
	if (strcmp(lr.hash, id->hash_hex) == 0) {
		funnel_log(FUNNEL_LOG_INFO, "%s: rules \"%s\" (%.12s) are the ones the log "
		           "recorded at seq %" PRIu64, id->service, id->version, id->hash_hex, lr.seq);
		return FUNNEL_OK;
	}
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 5);
	mp_pack_key(&pk, "service");
	mp_pack_cstr(&pk, id->service);
	mp_pack_key(&pk, "hash");
	mp_pack_cstr(&pk, id->hash_hex);
	mp_pack_key(&pk, "version");
	mp_pack_cstr(&pk, id->version);
	mp_pack_key(&pk, "previous_hash");
	mp_pack_cstr(&pk, lr.hash);
	mp_pack_key(&pk, "text");
	msgpack_pack_str_with_body(&pk, id->text, id->len);
	/* The key names what it follows, so a crash after sending finds the
	 * record on restart and a later return to these rules records again. */
	snprintf(key, sizeof key, "%s:rules:%.16s:after:%" PRIu64, id->service, id->hash_hex,
	         lr.seq);
	funnel_event ev = { .type = "rules.changed", .id = key, .data = sb.data,
	                    .data_len = sb.size };
	funnel_ack ack = { 0 };
	rc = send(to, &ev, &ack);
	msgpack_sbuffer_destroy(&sb);
	if (rc != FUNNEL_OK) {
		if (rc != FUNNEL_ESHUTDOWN)
			funnel_log(FUNNEL_LOG_ERROR, "%s: cannot record rules.changed: %s", id->service,
			           funnel_errname(rc));
		return rc;
	}
	funnel_log(FUNNEL_LOG_INFO, "%s: recorded rules.changed for \"%s\" (%.12s) at seq %"
	           PRIu64, id->service, id->version, id->hash_hex, ack.seq);
	return FUNNEL_OK;
}

int
rr_record_rules(funnel_service *svc, const rr_rules_id *id)
{
	return record_rules(funnel_service_query(svc), send_by_service, svc, id);
}

int
rr_record_rules_by(funnel_query *q, funnel_producer *p, const rr_rules_id *id)
{
	return record_rules(q, send_by_producer, p, id);
}
