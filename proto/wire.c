/*
 * proto/wire.c - request and reply frames.
 */
#include <stdio.h>
#include <string.h>

#include "wire.h"
#include "mp.h"

static const struct {
	const char *name;
	fp_op op;
} ops[] = {
	{ "publish", FP_OP_PUBLISH },
	{ "replay", FP_OP_REPLAY },
	{ "status", FP_OP_STATUS },
	{ "lead", FP_OP_LEAD },
	{ "key", FP_OP_KEY },
};

/* An optional unsigned field: absent leaves *out alone. */
static funnel_err
opt_u64(const msgpack_object *o, const char *key, uint64_t *out, fp_error *err)
{
	funnel_err rc = mp_get_u64(o, key, out, err);
	return rc == FUNNEL_EMISSING ? FUNNEL_OK : rc;
}

/* A lead named in a query obeys the same length rule as in an event. */
static funnel_err
check_query_lead(funnel_str lead, fp_error *err)
{
	if (lead.len == 0)
		return fp_error_set(err, FUNNEL_EVALUE, "lead", "field 'lead' must not be empty");
	if (lead.len > FP_MAX_LEAD_BYTES)
		return fp_error_set(err, FUNNEL_ETOOBIG, "lead", "field 'lead' is %zu bytes, the limit is %d",
		                    lead.len, FP_MAX_LEAD_BYTES);
	return FUNNEL_OK;
}

static funnel_err
decode_replay(const msgpack_object *o, fp_request *req, fp_error *err)
{
	funnel_err rc;
	uint64_t limit = FP_PAGE_DEFAULT_EVENTS, max_bytes = FP_PAGE_DEFAULT_BYTES;

	req->from = 1;
	if ((rc = opt_u64(o, "from", &req->from, err)) != FUNNEL_OK ||
	    (rc = opt_u64(o, "to", &req->to, err)) != FUNNEL_OK ||
	    (rc = opt_u64(o, "since", &req->since, err)) != FUNNEL_OK ||
	    (rc = opt_u64(o, "until", &req->until, err)) != FUNNEL_OK ||
	    (rc = opt_u64(o, "limit", &limit, err)) != FUNNEL_OK ||
	    (rc = opt_u64(o, "max_bytes", &max_bytes, err)) != FUNNEL_OK)
		return rc;
	if (req->from == 0)
		req->from = 1;
	rc = mp_get_str(o, "lead", &req->lead, err);
	if (rc != FUNNEL_OK && rc != FUNNEL_EMISSING)
		return rc;
	if (rc == FUNNEL_OK && (rc = check_query_lead(req->lead, err)) != FUNNEL_OK)
		return rc;
	rc = mp_get_str(o, "type", &req->type, err);
	if (rc != FUNNEL_OK && rc != FUNNEL_EMISSING)
		return rc;
	if (limit == 0)
		limit = FP_PAGE_DEFAULT_EVENTS;
	if (max_bytes == 0)
		max_bytes = FP_PAGE_DEFAULT_BYTES;
	req->limit = (uint32_t)(limit > FP_PAGE_MAX_EVENTS ? FP_PAGE_MAX_EVENTS : limit);
	req->max_bytes = (uint32_t)(max_bytes > FP_PAGE_MAX_BYTES ? FP_PAGE_MAX_BYTES : max_bytes);
	return FUNNEL_OK;
}

funnel_err
fp_request_decode(const void *buf, size_t len, msgpack_zone *z, fp_request *req, fp_error *err)
{
	msgpack_object o;
	size_t off = 0;
	funnel_str op;
	funnel_err rc;

	memset(req, 0, sizeof *req);
	if (len > FP_MAX_REQUEST_BYTES)
		return fp_error_set(err, FUNNEL_ETOOBIG, "", "request is %zu bytes, the limit is %u",
		                    len, FP_MAX_REQUEST_BYTES);
	msgpack_unpack_return ur = msgpack_unpack(buf, len, &off, z, &o);
	if (ur != MSGPACK_UNPACK_SUCCESS && ur != MSGPACK_UNPACK_EXTRA_BYTES)
		return fp_error_set(err, FUNNEL_EMALFORMED, "",
		                    ur == MSGPACK_UNPACK_NOMEM_ERROR
		                        ? "request is not valid msgpack (nested too deep or too large)"
		                        : "request is not valid msgpack");
	if (off != len)
		return fp_error_set(err, FUNNEL_EMALFORMED, "",
		                    "request has %zu trailing bytes after the msgpack map", len - off);
	if (o.type != MSGPACK_OBJECT_MAP)
		return fp_error_set(err, FUNNEL_EMALFORMED, "", "request must be a msgpack map");
	if ((rc = opt_u64(&o, "rid", &req->rid, err)) != FUNNEL_OK)
		return rc;
	rc = mp_get_str(&o, "op", &op, err);
	if (rc == FUNNEL_EMISSING)
		return fp_error_set(err, rc, "op", "request has no 'op'");
	if (rc != FUNNEL_OK)
		return rc;
	for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
		if (strlen(ops[i].name) == op.len && memcmp(ops[i].name, op.ptr, op.len) == 0)
			req->op = ops[i].op;
	}
	switch (req->op) {
	case FP_OP_NONE:
		return fp_error_set(err, FUNNEL_EOP, "op", "unknown op '%.*s'",
		                    (int)(op.len > 32 ? 32 : op.len), op.ptr);
	case FP_OP_PUBLISH:
		req->events = mp_find(&o, "events");
		if (req->events == NULL)
			return fp_error_set(err, FUNNEL_EMISSING, "events", "publish has no 'events'");
		if (req->events->type != MSGPACK_OBJECT_ARRAY)
			return fp_error_set(err, FUNNEL_ETYPE, "events", "field 'events' must be an array");
		if (req->events->via.array.size == 0)
			return fp_error_set(err, FUNNEL_EVALUE, "events", "field 'events' is empty");
		if (req->events->via.array.size > FP_MAX_BATCH)
			return fp_error_set(err, FUNNEL_ETOOBIG, "events",
			                    "request has %u events, the limit is %d",
			                    req->events->via.array.size, FP_MAX_BATCH);
		return FUNNEL_OK;
	case FP_OP_REPLAY:
		return decode_replay(&o, req, err);
	case FP_OP_STATUS:
		return FUNNEL_OK;
	case FP_OP_LEAD:
	case FP_OP_KEY:
		rc = mp_get_str(&o, "lead", &req->lead, err);
		if (rc == FUNNEL_EMISSING)
			return fp_error_set(err, rc, "lead", "%s request has no 'lead'",
			                    req->op == FP_OP_KEY ? "key" : "lead");
		if (rc != FUNNEL_OK)
			return rc;
		return check_query_lead(req->lead, err);
	}
	return FUNNEL_OK;
}

/* ---- client side: requests ---- */

int
fp_pack_publish_head(msgpack_packer *pk, uint64_t rid, size_t n)
{
	int rc = msgpack_pack_map(pk, 3);
	rc |= mp_pack_key(pk, "op");
	rc |= mp_pack_cstr(pk, "publish");
	rc |= mp_pack_key(pk, "rid");
	rc |= msgpack_pack_uint64(pk, rid);
	rc |= mp_pack_key(pk, "events");
	rc |= msgpack_pack_array(pk, n);
	return rc ? -1 : 0;
}

int
fp_pack_event(msgpack_packer *pk, const funnel_event *ev)
{
	size_t n = 1 + (ev->lead != NULL) + (ev->id != NULL) + (ev->has_occurred_at != 0) +
	           (ev->has_expected_version != 0) + (ev->cause != 0) + (ev->data != NULL);
	int rc = msgpack_pack_map(pk, n);
	rc |= mp_pack_key(pk, "type");
	rc |= mp_pack_cstr(pk, ev->type ? ev->type : "");
	if (ev->lead) {
		rc |= mp_pack_key(pk, "lead");
		rc |= mp_pack_cstr(pk, ev->lead);
	}
	if (ev->id) {
		rc |= mp_pack_key(pk, "id");
		rc |= mp_pack_cstr(pk, ev->id);
	}
	if (ev->has_occurred_at) {
		rc |= mp_pack_key(pk, "occurred_at");
		rc |= msgpack_pack_int64(pk, ev->occurred_at);
	}
	if (ev->has_expected_version) {
		rc |= mp_pack_key(pk, "expected_version");
		rc |= msgpack_pack_uint64(pk, ev->expected_version);
	}
	if (ev->cause) {
		rc |= mp_pack_key(pk, "cause");
		rc |= msgpack_pack_uint64(pk, ev->cause);
	}
	if (ev->data) {
		rc |= mp_pack_key(pk, "data");
		/* already msgpack: append the bytes as they are */
		rc |= pk->callback(pk->data, ev->data, ev->data_len);
	}
	return rc ? -1 : 0;
}

int
fp_pack_replay(msgpack_packer *pk, uint64_t rid, const funnel_replay_req *r)
{
	size_t n = 2 + (r->from != 0) + (r->to != 0) + (r->since != 0) + (r->until != 0) +
	           (r->lead != NULL) + (r->type != NULL) + (r->limit != 0) + (r->max_bytes != 0);
	int rc = msgpack_pack_map(pk, n);
	rc |= mp_pack_key(pk, "op");
	rc |= mp_pack_cstr(pk, "replay");
	rc |= mp_pack_key(pk, "rid");
	rc |= msgpack_pack_uint64(pk, rid);
#define U(field)                                            \
	if (r->field) {                                         \
		rc |= mp_pack_key(pk, #field);                      \
		rc |= msgpack_pack_uint64(pk, r->field);            \
	}
	U(from) U(to) U(since) U(until) U(limit) U(max_bytes)
#undef U
	if (r->lead) {
		rc |= mp_pack_key(pk, "lead");
		rc |= mp_pack_cstr(pk, r->lead);
	}
	if (r->type) {
		rc |= mp_pack_key(pk, "type");
		rc |= mp_pack_cstr(pk, r->type);
	}
	return rc ? -1 : 0;
}

int
fp_pack_simple(msgpack_packer *pk, uint64_t rid, const char *op, const char *lead)
{
	int rc = msgpack_pack_map(pk, lead ? 3 : 2);
	rc |= mp_pack_key(pk, "op");
	rc |= mp_pack_cstr(pk, op);
	rc |= mp_pack_key(pk, "rid");
	rc |= msgpack_pack_uint64(pk, rid);
	if (lead) {
		rc |= mp_pack_key(pk, "lead");
		rc |= mp_pack_cstr(pk, lead);
	}
	return rc ? -1 : 0;
}

/* ---- daemon side: replies ---- */

static int
pack_ok_head(msgpack_packer *pk, uint64_t rid, size_t nfields)
{
	int rc = msgpack_pack_map(pk, nfields + 2);
	rc |= mp_pack_key(pk, "rid");
	rc |= msgpack_pack_uint64(pk, rid);
	rc |= mp_pack_key(pk, "ok");
	rc |= msgpack_pack_true(pk);
	return rc;
}

int
fp_pack_error(msgpack_packer *pk, uint64_t rid, const fp_error *err)
{
	int rc = msgpack_pack_map(pk, 6 + (err->index >= 0) + (err->seq != 0));
	rc |= mp_pack_key(pk, "rid");
	rc |= msgpack_pack_uint64(pk, rid);
	rc |= mp_pack_key(pk, "ok");
	rc |= msgpack_pack_false(pk);
	rc |= mp_pack_key(pk, "code");
	rc |= msgpack_pack_uint32(pk, (uint32_t)err->code);
	rc |= mp_pack_key(pk, "error");
	rc |= mp_pack_cstr(pk, funnel_errname(err->code));
	rc |= mp_pack_key(pk, "field");
	rc |= mp_pack_cstr(pk, err->field);
	rc |= mp_pack_key(pk, "message");
	rc |= mp_pack_cstr(pk, err->message);
	if (err->index >= 0) {
		rc |= mp_pack_key(pk, "index");
		rc |= msgpack_pack_uint32(pk, (uint32_t)err->index);
	}
	if (err->seq != 0) {
		rc |= mp_pack_key(pk, "seq");
		rc |= msgpack_pack_uint64(pk, err->seq);
	}
	return rc ? -1 : 0;
}

int
fp_pack_ack(msgpack_packer *pk, uint64_t rid, const uint64_t *seqs, const uint8_t *dup, size_t n)
{
	int rc = pack_ok_head(pk, rid, 2);
	rc |= mp_pack_key(pk, "seqs");
	rc |= msgpack_pack_array(pk, n);
	for (size_t i = 0; i < n; i++)
		rc |= msgpack_pack_uint64(pk, seqs[i]);
	rc |= mp_pack_key(pk, "dup");
	rc |= msgpack_pack_array(pk, n);
	for (size_t i = 0; i < n; i++)
		rc |= dup[i] ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
	return rc ? -1 : 0;
}

int
fp_pack_page_head(msgpack_packer *pk, uint64_t rid, uint64_t head, uint64_t next, int end, size_t n)
{
	int rc = pack_ok_head(pk, rid, 4);
	rc |= mp_pack_key(pk, "head");
	rc |= msgpack_pack_uint64(pk, head);
	rc |= mp_pack_key(pk, "next");
	rc |= msgpack_pack_uint64(pk, next);
	rc |= mp_pack_key(pk, "end");
	rc |= end ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
	rc |= mp_pack_key(pk, "events");
	rc |= msgpack_pack_array(pk, n);
	return rc ? -1 : 0;
}

int
fp_pack_status(msgpack_packer *pk, uint64_t rid, const funnel_status *st)
{
	int rc = pack_ok_head(pk, rid, 17);
#define U(field)                                  \
	rc |= mp_pack_key(pk, #field);                \
	rc |= msgpack_pack_uint64(pk, st->field);
#define S(field)                                  \
	rc |= mp_pack_key(pk, #field);                \
	rc |= mp_pack_cstr(pk, st->field);
	U(head) U(head_ts) U(count) U(data_bytes) U(map_bytes) U(disk_free_bytes) U(disk_bytes)
	U(uptime_ms) U(leads) U(format)
	S(version) S(ingest) S(publish) S(query) S(data_dir)
#undef U
#undef S
	rc |= mp_pack_key(pk, "head_hash");
	rc |= msgpack_pack_bin(pk, FUNNEL_HASH_BYTES);
	rc |= msgpack_pack_bin_body(pk, st->head_hash, FUNNEL_HASH_BYTES);
	rc |= mp_pack_key(pk, "durable");
	rc |= st->durable ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
	return rc ? -1 : 0;
}

int
fp_pack_key(msgpack_packer *pk, uint64_t rid, const char *lead, size_t lead_len,
            const uint8_t *key)
{
	int rc = pack_ok_head(pk, rid, 2);
	rc |= mp_pack_key(pk, "lead");
	rc |= mp_pack_str(pk, (funnel_str){ lead, lead_len });
	rc |= mp_pack_key(pk, "key");
	if (key != NULL)
		rc |= msgpack_pack_bin(pk, 32) | msgpack_pack_bin_body(pk, key, 32);
	else
		rc |= msgpack_pack_nil(pk);
	return rc ? -1 : 0;
}

int
fp_pack_lead(msgpack_packer *pk, uint64_t rid, const char *lead, size_t lead_len,
             const funnel_lead_info *li)
{
	int rc = pack_ok_head(pk, rid, 5);
	rc |= mp_pack_key(pk, "lead");
	rc |= mp_pack_str(pk, (funnel_str){ lead, lead_len });
	rc |= mp_pack_key(pk, "stage");
	rc |= mp_pack_cstr(pk, li->stage);
	rc |= mp_pack_key(pk, "version");
	rc |= msgpack_pack_uint64(pk, li->version);
	rc |= mp_pack_key(pk, "last_seq");
	rc |= msgpack_pack_uint64(pk, li->last_seq);
	rc |= mp_pack_key(pk, "owner");
	if (li->owner[0])
		rc |= mp_pack_cstr(pk, li->owner);
	else
		rc |= msgpack_pack_nil(pk);
	return rc ? -1 : 0;
}

/* ---- client side: replies ---- */

static void
copy_str(char *dst, size_t cap, funnel_str s)
{
	size_t n = s.len < cap - 1 ? s.len : cap - 1;
	if (s.ptr)
		memcpy(dst, s.ptr, n);
	dst[s.ptr ? n : 0] = '\0';
}

funnel_err
fp_reply_decode(const void *buf, size_t len, msgpack_zone *z, fp_reply *rep)
{
	size_t off = 0;
	memset(rep, 0, sizeof *rep);
	rep->err.index = -1;
	if (msgpack_unpack(buf, len, &off, z, &rep->obj) != MSGPACK_UNPACK_SUCCESS ||
	    rep->obj.type != MSGPACK_OBJECT_MAP)
		return FUNNEL_EPROTOCOL;
	if (mp_get_u64(&rep->obj, "rid", &rep->rid, NULL) != FUNNEL_OK ||
	    mp_get_bool(&rep->obj, "ok", &rep->ok, NULL) != FUNNEL_OK)
		return FUNNEL_EPROTOCOL;
	if (!rep->ok) {
		uint64_t code = 0, index;
		funnel_str s = { 0 };
		if (mp_get_u64(&rep->obj, "code", &code, NULL) != FUNNEL_OK || code == 0)
			return FUNNEL_EPROTOCOL;
		rep->err.code = (funnel_err)code;
		if (mp_get_str(&rep->obj, "message", &s, NULL) == FUNNEL_OK)
			copy_str(rep->err.message, sizeof rep->err.message, s);
		if (mp_get_str(&rep->obj, "field", &s, NULL) == FUNNEL_OK)
			copy_str(rep->err.field, sizeof rep->err.field, s);
		if (mp_get_u64(&rep->obj, "index", &index, NULL) == FUNNEL_OK)
			rep->err.index = (int)index;
		if (mp_get_u64(&rep->obj, "seq", &index, NULL) == FUNNEL_OK)
			rep->err.seq = index;
	}
	return FUNNEL_OK;
}

funnel_err
fp_ack_decode(const fp_reply *rep, funnel_ack *acks, size_t cap, size_t *n_acks)
{
	const msgpack_object *seqs = mp_find(&rep->obj, "seqs");
	const msgpack_object *dup = mp_find(&rep->obj, "dup");
	if (seqs == NULL || seqs->type != MSGPACK_OBJECT_ARRAY || dup == NULL ||
	    dup->type != MSGPACK_OBJECT_ARRAY || dup->via.array.size != seqs->via.array.size)
		return FUNNEL_EPROTOCOL;
	*n_acks = seqs->via.array.size;
	for (size_t i = 0; i < seqs->via.array.size && i < cap; i++) {
		const msgpack_object *s = &seqs->via.array.ptr[i];
		const msgpack_object *d = &dup->via.array.ptr[i];
		if (s->type != MSGPACK_OBJECT_POSITIVE_INTEGER || d->type != MSGPACK_OBJECT_BOOLEAN)
			return FUNNEL_EPROTOCOL;
		acks[i].seq = s->via.u64;
		acks[i].dup = d->via.boolean;
	}
	return FUNNEL_OK;
}

funnel_err
fp_page_decode(const fp_reply *rep, uint64_t *head, uint64_t *next, int *end,
               const msgpack_object **events)
{
	if (mp_get_u64(&rep->obj, "head", head, NULL) != FUNNEL_OK ||
	    mp_get_u64(&rep->obj, "next", next, NULL) != FUNNEL_OK ||
	    mp_get_bool(&rep->obj, "end", end, NULL) != FUNNEL_OK)
		return FUNNEL_EPROTOCOL;
	*events = mp_find(&rep->obj, "events");
	if (*events == NULL || (*events)->type != MSGPACK_OBJECT_ARRAY)
		return FUNNEL_EPROTOCOL;
	for (uint32_t i = 0; i < (*events)->via.array.size; i++) {
		if ((*events)->via.array.ptr[i].type != MSGPACK_OBJECT_BIN)
			return FUNNEL_EPROTOCOL;
	}
	return FUNNEL_OK;
}

funnel_err
fp_status_decode(const fp_reply *rep, funnel_status *st)
{
	const msgpack_object *o = &rep->obj;
	funnel_str s;
	uint64_t format = 0;
	memset(st, 0, sizeof *st);
	if (mp_get_u64(o, "head", &st->head, NULL) != FUNNEL_OK)
		return FUNNEL_EPROTOCOL;
	(void)mp_get_u64(o, "head_ts", &st->head_ts, NULL);
	(void)mp_get_u64(o, "count", &st->count, NULL);
	(void)mp_get_u64(o, "data_bytes", &st->data_bytes, NULL);
	(void)mp_get_u64(o, "map_bytes", &st->map_bytes, NULL);
	(void)mp_get_u64(o, "disk_free_bytes", &st->disk_free_bytes, NULL);
	(void)mp_get_u64(o, "disk_bytes", &st->disk_bytes, NULL);
	(void)mp_get_u64(o, "uptime_ms", &st->uptime_ms, NULL);
	(void)mp_get_u64(o, "leads", &st->leads, NULL);
	(void)mp_get_u64(o, "format", &format, NULL);
	st->format = (uint32_t)format;
	(void)mp_get_bool(o, "durable", &st->durable, NULL);
	if (mp_get_bin(o, "head_hash", &s, NULL) == FUNNEL_OK && s.len == FUNNEL_HASH_BYTES)
		memcpy(st->head_hash, s.ptr, FUNNEL_HASH_BYTES);
#define S(field)                                                          \
	if (mp_get_str(o, #field, &s, NULL) == FUNNEL_OK)                     \
		copy_str(st->field, sizeof st->field, s);
	S(version) S(ingest) S(publish) S(query) S(data_dir)
#undef S
	return FUNNEL_OK;
}

funnel_err
fp_lead_decode(const fp_reply *rep, funnel_lead_info *li)
{
	funnel_str s;
	memset(li, 0, sizeof *li);
	if (mp_get_str(&rep->obj, "stage", &s, NULL) != FUNNEL_OK ||
	    mp_get_u64(&rep->obj, "version", &li->version, NULL) != FUNNEL_OK)
		return FUNNEL_EPROTOCOL;
	copy_str(li->stage, sizeof li->stage, s);
	(void)mp_get_u64(&rep->obj, "last_seq", &li->last_seq, NULL);
	if (mp_get_str(&rep->obj, "owner", &s, NULL) == FUNNEL_OK)
		copy_str(li->owner, sizeof li->owner, s);
	return FUNNEL_OK;
}
