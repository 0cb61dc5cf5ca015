/*
 * funnel/funnel.h - libfunnel, the client library of the funnel lead log.
 *
 * Three objects, each talking to one endpoint of funneld:
 *
 *   funnel_producer    ingest endpoint (ZeroMQ DEALER -> ROUTER): append
 *                      events, synchronously or pipelined.
 *   funnel_query       query endpoint (DEALER -> ROUTER): replay pages,
 *                      status, lead state, chain verification.
 *   funnel_subscriber  publish endpoint (SUB) + query endpoint: every
 *                      event exactly once, in seq order, with no gap,
 *                      from any starting seq or time, then live.
 *
 * Conventions, as in lmdb.h:
 *  - Every function that can fail returns an int: FUNNEL_OK (0) or a
 *    funnel_err code (funnel/error.h).  When a function fails its out
 *    parameters are left unspecified unless said otherwise.
 *  - `_new` allocates and the caller owns the result; `_destroy` takes a
 *    pointer to the handle, accepts NULL or a NULL handle, frees and sets
 *    the handle to NULL.
 *  - Memory returned as `const` is a view owned by the object that
 *    returned it; how long it stays valid is written beside each function.
 *  - Objects are not thread-safe: use one per thread.  Different objects
 *    may be used from different threads at once.
 *  - No function calls abort() or exit(); out of memory is FUNNEL_ENOMEM.
 */
#ifndef FUNNEL_FUNNEL_H
#define FUNNEL_FUNNEL_H

#include <stddef.h>
#include <stdint.h>

#include "funnel/error.h"
#include "funnel/record.h"

#ifdef __cplusplus
extern "C" {
#endif

/* FUNNEL_VERSION, the loopback defaults FUNNEL_DEFAULT_* of funneld
 * (clients use them when given NULL) and the protocol's limits. */
#include "funnel/limits.h"
/* the plain values requests and replies carry */
#include "funnel/values.h"

/* Which of funneld's endpoints (funnel_endpoint). */
typedef enum funnel_endpoint_kind {
	FUNNEL_EP_INGEST,      /* env FUNNEL_INGEST */
	FUNNEL_EP_PUBLISH,     /* env FUNNEL_PUBLISH */
	FUNNEL_EP_QUERY        /* env FUNNEL_QUERY */
} funnel_endpoint_kind;

/*
 * The one rule every funnel program follows for an endpoint: the flag
 * when given (not NULL, not empty), else the environment variable
 * FUNNEL_INGEST / FUNNEL_PUBLISH / FUNNEL_QUERY when set and not empty,
 * else the loopback default.  Returns flag, a getenv() string (valid
 * while the environment is not changed) or a static string.
 */
const char *funnel_endpoint(funnel_endpoint_kind kind, const char *flag);

/*
 * CURVE keys for every socket libfunnel opens from then on in this
 * process, for a funneld started with --access.  The rule of
 * funnel_endpoint: the flag when given (not NULL, not empty), else the
 * environment variable FUNNEL_KEY / FUNNEL_SERVER_KEY, else none (plain
 * sockets, as for a funneld without --access).  key_file is this
 * program's secret key (NAME.key of `funnel keygen NAME`), server_key_file
 * funneld's public key (funneld.pub); both or neither.  Returns FUNNEL_OK,
 * or FUNNEL_EINVAL with ei (may be NULL) naming the file and the problem.
 * A process that never calls it gets the environment's keys when its
 * first socket opens (a bad key file then fails that open, FUNNEL_EINVAL).
 * Call it before creating objects, from one thread.
 */
int funnel_keys_use(const char *key_file, const char *server_key_file,
                    struct funnel_error_info *ei);

/* 1 when the sockets opened from now on use CURVE, else 0. */
int funnel_keys_on(void);

/* funnel_error_info, the details of an object's last failure: funnel/error.h. */

/* ---------------------------------------------------------------------
 * Producer
 * ------------------------------------------------------------------ */

typedef struct funnel_producer funnel_producer;

/* Naming: the producer's verbs (funnel_publish, funnel_send,
 * funnel_collect, funnel_abandon, funnel_in_flight, funnel_set_window)
 * carry no object name.  They are the log's own verbs, the producer is
 * the only object that has them, and they are part of libfunnel.so.1's
 * ABI: renaming them to funnel_producer_* would break every program
 * linked against it for no gain in clarity.  Every other function names
 * its object (funnel_query_*, funnel_subscriber_*, funnel_service_*). */

/* funnel_event (one event to append) and funnel_ack (what the log did
 * with it): funnel/values.h. */



/* Connect a producer to an ingest endpoint (NULL: FUNNEL_DEFAULT_INGEST).
 * Connection is asynchronous: this succeeds before the daemon is up.
 * timeout_ms bounds each synchronous call (<= 0: 10000). */
int funnel_producer_new(funnel_producer **out, const char *endpoint, int timeout_ms);

void funnel_producer_destroy(funnel_producer **p);

/*
 * Append n events (1..10000) as one atomic request and wait for the ack:
 * either all are stored (acks[i] filled for each) or none is, and the
 * return code says why (details in funnel_producer_error()).
 * On FUNNEL_ETIMEDOUT the outcome is unknown: retry with the same
 * idempotency keys, and the log stores each event at most once; a late
 * reply to the timed-out request is recognised by its rid and dropped.
 * acks may be NULL; otherwise it has room for n entries.
 * Synchronous and pipelined calls do not mix: with requests in flight
 * (funnel_in_flight() > 0) this returns FUNNEL_EINVAL and sends nothing;
 * collect or abandon them first.  Other codes: FUNNEL_EINVAL (n not in
 * 1..10000, an event without type), FUNNEL_ETOOBIG (request over 2 MiB)
 * and FUNNEL_EMALFORMED (`data` is not one complete msgpack value of
 * data_len bytes), all three found before sending, with the event's
 * index; then daemon codes, FUNNEL_EPROTOCOL, FUNNEL_ETRANSPORT,
 * FUNNEL_ENOMEM.
 */
int funnel_publish(funnel_producer *p, const funnel_event *evs, size_t n, funnel_ack *acks);

/*
 * Like funnel_publish, but the events are already msgpack-encoded
 * envelopes (n maps, concatenated, `len` bytes), as PROTOCOL.md defines
 * them.  Used by the CLI to send JSON it converted.  Bytes that are not
 * exactly n complete msgpack values are FUNNEL_EMALFORMED before
 * sending; whether each value is a valid envelope is the daemon's call.
 */
int funnel_publish_packed(funnel_producer *p, const void *events, size_t len, size_t n,
                          funnel_ack *acks);

/*
 * Pipelined mode.  funnel_send() queues a request and returns at once with
 * its request id in *rid; up to `window` requests may be in flight (the
 * call blocks to collect a reply when the window is full; those replies
 * are queued for funnel_collect).  funnel_collect() waits up to timeout_ms
 * (-1: forever) for the next reply, in arrival order, and fills *rid, the
 * acks (acks_cap entries at most; *n_acks says how many events the
 * request had) and returns its status: FUNNEL_OK, a daemon error code, or
 * FUNNEL_ETIMEDOUT when nothing arrived.
 *
 * funnel_send() returns FUNNEL_ETIMEDOUT, having sent nothing, when the
 * window stays full for the producer's timeout.  Replies it takes off
 * the socket meanwhile stay queued (one small buffer each) until
 * collected: collect as you go.  funnel_collect() returns FUNNEL_EINVAL
 * when nothing is in flight; on a daemon error it sets *rid, *n_acks = 0
 * and funnel_producer_error().  A reply whose request was abandoned is
 * dropped.  acks, rid and n_acks may be NULL.
 */
int funnel_send(funnel_producer *p, const funnel_event *evs, size_t n, uint64_t *rid);
int funnel_send_packed(funnel_producer *p, const void *events, size_t len, size_t n, uint64_t *rid);
int funnel_collect(funnel_producer *p, int timeout_ms, uint64_t *rid, funnel_ack *acks,
                   size_t acks_cap, size_t *n_acks);

/* Requests sent and not yet collected (awaiting a reply, or answered
 * and queued for funnel_collect). */
size_t funnel_in_flight(const funnel_producer *p);

/* Set the pipeline window: requests awaiting a reply at once (default
 * 64, clamped to 1..1000). */
void funnel_set_window(funnel_producer *p, size_t window);

/*
 * Give up on every request still awaiting a reply (after funnel_collect
 * timed out, say, because the daemon went away).  Their outcome is
 * unknown: resend them with the same idempotency keys.  Replies already
 * queued stay collectable; late replies to the abandoned ones are
 * dropped.  Returns how many requests were abandoned.
 */
size_t funnel_abandon(funnel_producer *p);

/* Details of the last failed call (code 0 after a call that succeeded).
 * Valid until the next call on p. */
const funnel_error_info *funnel_producer_error(const funnel_producer *p);

/* ---------------------------------------------------------------------
 * Query: replay pages, status, lead state, verification
 * ------------------------------------------------------------------ */

typedef struct funnel_query funnel_query;

/* Connect to a query endpoint (NULL: FUNNEL_DEFAULT_QUERY).
 * timeout_ms bounds each call (<= 0: 10000). */
int funnel_query_new(funnel_query **out, const char *endpoint, int timeout_ms);
void funnel_query_destroy(funnel_query **q);
const funnel_error_info *funnel_query_error(const funnel_query *q);

/* funnel_replay_req (a replay request), funnel_status (the log's state)
 * and funnel_lead_info (one lead's): funnel/values.h. */


/* One page of records.  recs[i] point into the page's reply buffer. */
typedef struct funnel_page {
	uint64_t head;        /* the log's head seq when the page was read */
	uint64_t next;        /* ask for from = next to continue */
	int end;              /* 1: nothing more in the range (as of head) */
	size_t n;
	const uint8_t **recs; /* n record byte strings */
	const size_t *lens;
	void *priv_;          /* owned reply buffer */
} funnel_page;

/* Fetch one page.  On FUNNEL_OK the caller owns *page and must release it
 * with funnel_page_release(); records are valid until then, whatever
 * else is done with q.  On failure *page is zeroed (releasing it is
 * harmless).  FUNNEL_EINVAL when from > to. */
int funnel_replay_page(funnel_query *q, const funnel_replay_req *req, funnel_page *page);
/* Free the page's buffer and zero *page.  Safe on a zeroed page and on
 * NULL. */
void funnel_page_release(funnel_page *page);

/*
 * Call fn for each record of a replay range, in seq order, paging to the
 * end of the range (req as for funnel_replay_page; from 0 means 1).  The
 * record and what it points to are valid during the call only.  fn
 * returns FUNNEL_OK to go on; anything else stops the walk and is
 * returned.  Otherwise returns FUNNEL_OK at the end of the range, a
 * query error, or FUNNEL_EPROTOCOL for a record that does not parse.
 */
typedef int (*funnel_record_fn)(const funnel_record *rec, void *ctx);
int funnel_replay_each(funnel_query *q, const funnel_replay_req *req, funnel_record_fn fn,
                       void *ctx);


int funnel_status_get(funnel_query *q, funnel_status *st);


/* The lead's current state; FUNNEL_ENOTFOUND if no event named it. */
int funnel_lead_get(funnel_query *q, const char *lead, funnel_lead_info *info);

/*
 * Personal data (PROTOCOL.md "Personal data and erasure"): replace, in
 * r's data, every sealed value by its clear value, the lead's data key
 * fetched from funneld through q (op "key") and kept in q (the last
 * FUNNEL_KEY_CACHE leads).  A value whose key is gone (the lead was
 * erased) reads as the string FUNNEL_ERASED.  r must come from
 * funnel_record_parse() into zone z; the clear values are put in z and r's
 * data objects are changed in place (the record's bytes are not).
 * Returns the number of sealed values met (0: nothing to open), or a
 * negative funnel_err (-FUNNEL_ETIMEOUT, ...; funnel_query_error() says more).
 */
#define FUNNEL_KEY_CACHE 64
#define FUNNEL_ERASED "[erased]"
int funnel_record_unseal(funnel_query *q, funnel_record *r, msgpack_zone *z);

/* Result of a chain verification. */
typedef struct funnel_verify_result {
	uint64_t checked;                       /* records checked */
	uint64_t last_good;                     /* last seq that verified */
	uint64_t bad_seq;                       /* first bad seq, 0 if none */
	uint8_t head_hash[FUNNEL_HASH_BYTES];   /* hash of last_good */
	char why[256];                          /* the problem at bad_seq */
} funnel_verify_result;

/*
 * Recompute the hash chain of records from..to (0: whole log) from the
 * bytes the daemon replays.  Returns FUNNEL_OK when every record
 * verifies, FUNNEL_ECHAIN with res->bad_seq and res->why set otherwise,
 * or a transport error.  When from > 1 the chain is anchored on record
 * from-1's hash, which is itself read, not checked (last_good is from-1
 * until a record verifies).
 * The walk stops at the head reported by a status request made first
 * (a `to` beyond it is cut there), so a growing log gives one answer;
 * when the walk reaches that head, the daemon's head hash must equal the
 * hash of the head record, or bad_seq is the head.  An empty log
 * verifies with checked == 0; from past a non-empty head is
 * FUNNEL_ENOTFOUND, from > to is FUNNEL_EINVAL.
 */
int funnel_verify(funnel_query *q, uint64_t from, uint64_t to, funnel_verify_result *res);

/* ---------------------------------------------------------------------
 * The log's files: hot backup, restore, verification without a daemon
 *
 * These read a data directory directly (LMDB, read-only), so they run on
 * the daemon's machine as a user that may read its data directory;
 * funnel_backup() of a live log also writes LMDB's lock.mdb there (its
 * read transaction takes a slot in the reader table, as every LMDB
 * reader does), so it needs the daemon's user or one that may write that
 * file: reading alone is refused with FUNNEL_ESTORAGE ("Permission
 * denied").  A
 * backup directory holds the compacted copy (data.mdb) and the file
 * FUNNEL_BACKUP_INFO_FILE: lines "key=value" with format, head_seq,
 * head_hash (hex), bytes, taken_at_ns and source, written last.
 * ------------------------------------------------------------------ */

#define FUNNEL_BACKUP_INFO_FILE "backup.info"

/* The head of a log on disk (or of a backup). */
typedef struct funnel_log_head {
	uint64_t head;                          /* last seq, 0 for an empty log */
	uint8_t head_hash[FUNNEL_HASH_BYTES];   /* hash of record `head` */
	uint32_t format;                        /* on-disk format */
	uint64_t bytes;                         /* size of the data file */
} funnel_log_head;

/*
 * Recompute the hash chain of the whole log in directory dir, which no
 * process writes (a backup, or a data directory of a stopped funneld),
 * opened read-only without LMDB's lock file.  The meta head hash must
 * equal the last record's hash, as funnel_verify() checks it.  Returns
 * FUNNEL_OK (res and head filled; head may be NULL), FUNNEL_ECHAIN with
 * res->bad_seq and res->why, or FUNNEL_ESTORAGE / FUNNEL_EVALUE (not a
 * funnel log, another format) with err filled.
 */
int funnel_log_verify(const char *dir, funnel_verify_result *res, funnel_log_head *head,
                      funnel_error_info *err);

/*
 * A consistent copy of the log in data_dir, taken while funneld runs:
 * one LMDB read transaction (mdb_env_copy2 with MDB_CP_COMPACT), so the
 * writer is never waited for and never waits (LMDB's reader semantics;
 * pages the copy still reads are not reused until it ends, so the live
 * file may grow by what is written meanwhile).  dest_dir is created if
 * missing and must be empty.  The copy is fsynced, verified with
 * funnel_log_verify(), then FUNNEL_BACKUP_INFO_FILE is written beside it
 * (temp file, fsync, rename, directory fsync).  Returns FUNNEL_OK with
 * *head the copy's head, FUNNEL_ECHAIN (res says where), or
 * FUNNEL_EINVAL / FUNNEL_ESTORAGE / FUNNEL_EVALUE with err filled.
 */
int funnel_backup(const char *data_dir, const char *dest_dir, funnel_log_head *head,
                  funnel_verify_result *res, funnel_error_info *err);

/*
 * Put a backup made by funnel_backup() in place as data_dir, where
 * funneld can then be started.  data_dir must be absent or empty (but
 * for a funnel.lock nobody holds).  The backup is verified first and its
 * head must match its info file; data_dir is then locked as funneld locks
 * it (a funneld running or started there meanwhile is refused, and so is
 * the restore when one holds it), the data file is written aside
 * (data.mdb.partial), fsynced, renamed to data.mdb, and the directory
 * fsynced, so a crash leaves either no log or the whole one; the lock
 * file is removed before the lock is released.  Returns as
 * funnel_backup().
 */
int funnel_restore(const char *backup_dir, const char *data_dir, funnel_log_head *head,
                   funnel_verify_result *res, funnel_error_info *err);

/* ---------------------------------------------------------------------
 * Subscriber with catch-up
 * ------------------------------------------------------------------ */

typedef struct funnel_subscriber funnel_subscriber;

typedef struct funnel_sub_opts {
	const char *publish;   /* NULL: FUNNEL_DEFAULT_PUBLISH */
	const char *query;     /* NULL: FUNNEL_DEFAULT_QUERY */
	uint64_t from;         /* first seq to deliver (0 or 1: from the start) */
	uint64_t since;        /* if not 0, start at the first event with ts >= since */
	int live;              /* 1: follow the live feed after history; 0: stop at the head */
	int rcvhwm;            /* SUB receive high-water mark, 0: library default */
	int timeout_ms;        /* per query call, <= 0: 10000 */
	/* NULL: funneld (publish + query above).  "nats://HOST:PORT/STREAM":
	 * history and live feed from a JetStream stream that funnel-mirror
	 * fills (stream sequence == seq); more servers of one cluster as
	 * "nats://H1:P1,nats://H2:P2/STREAM"; "?creds=FILE" at the end names
	 * a NATS credentials file.  The stream name defaults to FUNNEL.
	 * publish, query and rcvhwm are then not used. */
	const char *source;
} funnel_sub_opts;

/* Connect (in the background: this succeeds before the daemon is up).
 * opts may be NULL for defaults.  With since, the start seq is found by
 * the first funnel_subscriber_next(). */
int funnel_subscriber_new(funnel_subscriber **out, const funnel_sub_opts *opts);
void funnel_subscriber_destroy(funnel_subscriber **s);

/*
 * The next record in seq order.  Waits up to timeout_ms (-1: forever).
 * Returns FUNNEL_OK with *rec and *len set, FUNNEL_ETIMEDOUT when nothing new
 * arrived in time, FUNNEL_ENOTFOUND when not live and the head was
 * reached, or an error.  *rec is valid until the next call on s.
 * Each seq is delivered exactly once, in order, with no gap, whatever
 * the live feed dropped: a gap is re-read from the query endpoint.
 * The timeout covers the whole call, catching up included.  No return
 * code loses the position: after FUNNEL_ETIMEDOUT, a daemon error or a
 * daemon restart, the next call goes on from the same seq.  Not live,
 * FUNNEL_ENOTFOUND is returned again by each later call until records
 * past the head appear.  FUNNEL_EINVAL when the position is past the
 * log's head + 1 (a checkpoint kept from another log): nothing would
 * ever be delivered.
 */
int funnel_subscriber_next(funnel_subscriber *s, int timeout_ms, const uint8_t **rec, size_t *len);

/* The seq the next delivered record will carry (0 while a `since` start
 * has not been resolved yet). */
uint64_t funnel_subscriber_position(const funnel_subscriber *s);

/* 1 while the subscriber follows the live feed (history was read up to
 * the head it knew of), 0 while it pages history.  A caller batching
 * work uses it to tell "nothing more right now" from "the next page is
 * on its way". */
int funnel_subscriber_live(const funnel_subscriber *s);

/* Counters for tests and monitoring: records read from replay pages,
 * records taken from the live feed, gaps repaired from replay. */
typedef struct funnel_sub_stats {
	uint64_t from_replay;
	uint64_t from_live;
	uint64_t gaps;
} funnel_sub_stats;
void funnel_subscriber_stats(const funnel_subscriber *s, funnel_sub_stats *st);

const funnel_error_info *funnel_subscriber_error(const funnel_subscriber *s);

/*
 * The last seq a source holds: a "nats://..." source as in
 * funnel_sub_opts.source (the stream's last sequence), or NULL / a
 * funneld query endpoint (the log's head).  Returns FUNNEL_OK,
 * FUNNEL_EINVAL (a source URL not of that form), FUNNEL_ENOTFOUND (no
 * such stream), FUNNEL_ETRANSPORT or FUNNEL_ETIMEDOUT; ei (may be NULL)
 * gets the details.
 */
int funnel_source_head(const char *source, int timeout_ms, uint64_t *head,
                       funnel_error_info *ei);

/*
 * funnel_verify over any subscriber (a funneld or a mirror source): read
 * s (opened with live = 0 at the first seq to check) to its head or to
 * `to` (0: the head), and recompute the chain: each record's hash over
 * its bytes, and its prev against the hash of the record before.  The
 * first record's prev is the anchor when it is not seq 1 (32 zero bytes
 * are required at seq 1).  Returns FUNNEL_OK, FUNNEL_ECHAIN with
 * res->bad_seq and res->why, or the subscriber's error (details in
 * funnel_subscriber_error).  res->head_hash is the hash of last_good,
 * so a whole-log check prints the head hash funneld reports.
 */
int funnel_verify_feed(funnel_subscriber *s, uint64_t to, funnel_verify_result *res);

#ifdef __cplusplus
}
#endif
#endif /* FUNNEL_FUNNEL_H */
