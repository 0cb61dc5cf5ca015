/*
 * funnel/service.h - the runtime every funnel service is built on: a
 * durable view of the log, a handler applied to each record in seq order,
 * and derived events sent back to the log exactly once.
 *
 * A service is one funnel_service object.  It owns:
 *
 *   - the view: an LMDB environment in its own directory, holding the
 *     service's tables (named by the service) and the runtime's tables
 *     FUNNEL_SERVICE_RUNTIME_TABLE (checkpoint, hash of the last applied record, emit
 *     watermark) and "_pending" (decisions in flight, below);
 *   - a funnel_subscriber that delivers every record exactly once, in seq
 *     order, from checkpoint + 1;
 *   - a funnel_producer for the derived events.
 *
 * The loop (funnel_service_run):
 *
 *   1. open a view write transaction;
 *   2. for each record delivered, call apply(): it reads and writes the
 *      view through funnel_service_txn() and may queue derived events
 *      with funnel_service_emit();
 *   3. derived events are sent as soon as apply() returns, pipelined
 *      (their latency is one trip to funneld, never a view commit);
 *   4. when the batch is full (batch_events) or old (batch_ms), or at
 *      the head with until_head: wait until the log has stored (or
 *      refused) every derived event of the batch, call before_commit
 *      (if any), then write the
 *      checkpoint in the same transaction as the view changes, and
 *      commit (one fsync: MDB_NOMETASYNC; a crash may undo the last
 *      commit, never corrupt the view).
 *
 * Invariants:
 *   - The checkpoint is the seq of the last record whose effects are in
 *     the view; view and checkpoint change in one transaction, so a crash
 *     (kill -9 included) never applies a record twice or skips one.
 *   - A derived event is stored in the log before the checkpoint passes
 *     its cause.  Its idempotency key is "<service>:<cause seq>:<key>",
 *     so a crash after sending and before the commit sends it again on
 *     restart and the log keeps the first copy: never doubled, never lost.
 *   - Rebuild (opts.rebuild) empties the service's tables and replays from
 *     seq 1; apply() must be a pure function of the view and the record
 *     (time from record timestamps, never the wall clock), so the rebuilt
 *     view equals the one built live (funnel_view_digest compares them).
 *     Derived events whose cause is at or below the highest checkpoint
 *     the view ever had are not sent again: they were sent then, and the
 *     log has what became of them.
 *   - The view remembers the hash of the last applied record, committed
 *     with the checkpoint.  Before anything is sent (funnel_service_new,
 *     funnel_service_send) and then every second between batches, the
 *     runtime asks funneld whether it serves the view's log: its head
 *     must reach the checkpoint and its record there must have that
 *     hash.  Another log (funneld restarted on another data directory)
 *     is refused: funnel_service_new returns FUNNEL_ECHAIN; a running
 *     service applies and sends nothing until the view's own log is back
 *     (funnel_service_log_state says so meanwhile; with until_head,
 *     funnel_service_run returns FUNNEL_ECHAIN).  Rebuild the view to
 *     follow the other log.
 *   - One service per view: the view directory is locked (flock on
 *     funnel.lock in it) for the life of the object, and the view records
 *     the service's name and table set in the runtime's table; another service, or
 *     a second process of the same one, is refused (FUNNEL_ESTORAGE,
 *     named in the log line).
 *
 * A derived event the log refuses (ETRANSITION: the lead moved on before
 * it arrived, say; EIDCONFLICT: the log holds another event under its key,
 * derived before a restart under other rules) is logged and dropped: the
 * refusal is the log's decision.  Transport failures, timeouts, ESTORAGE
 * and ESHUTDOWN are retried with the same keys until they succeed or the
 * service is stopped.
 *
 * Services never override people.  A service decides on a record of the
 * past; by the time its decision reaches the log, a person (or anyone)
 * may have acted on the lead.  A decision that people also make (who owns
 * a lead) is sent with funnel_service_emit_decision(): the event names
 * the lead of its cause and the runtime sends it with expected_version =
 * the cause's `version` (the events one record decides for its lead chain
 * v, v+1, ... and travel in one request, all or none).  The log stores it
 * only if no other event named the lead after the cause.  EVERSION means
 * someone acted first: the event is dropped, never retried (its expected
 * version is past for good, so a restart that derives it again gets
 * EVERSION again, or the duplicate if it had been stored), and counted in
 * stats.overridden.  (funnel_service_emit() sends unconditionally: for a
 * fact about the lead's own behaviour, such as a score, which later
 * activity must not cancel; the log's stage checks still refuse it where
 * a person moved the lead on.)
 *
 * The view learns the fate of a decision from the log, never from the
 * reply, so a rebuild reaches the same verdict.  After the cause, the
 * next record that names the lead is either the decision's own event (id
 * "<name>:<cause>:...", with that cause: the decision stands) or another
 * event (the log dropped the decision).  The runtime keeps the decision
 * in flight per lead (table "_pending", part of the view and of its
 * digest) and, when a record shows it was dropped, says so to apply()
 * through funnel_service_dropped() as apply() gets that record.  A
 * service that counted the decision in its view at once (routing's owner,
 * open counts and rotation) takes it back then, and may decide again on
 * that record: a new decision with a new cause and key, so nothing is
 * retried forever and nothing dropped comes back.  The rule reads only
 * the log, so it holds live, after a crash (kill -9 included) and on a
 * rebuild alike: the rebuild meets the person's event in history exactly
 * where the live service met it, before the derived event would have
 * been, and drops the decision too; the digests agree.  With no_emit the
 * decision is never sent, and the next record naming the lead drops it
 * the same way.
 *
 * Conventions are those of funnel/funnel.h.  Not thread-safe, except
 * funnel_service_stop(), which a signal handler may call.
 */
#ifndef FUNNEL_SERVICE_H
#define FUNNEL_SERVICE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <lmdb.h>

#include "funnel/funnel.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FUNNEL_SERVICE_MAX_TABLES 16
/* The runtime's own table in every view (checkpoint, last hash, emit
 * watermark, owner): no service table may have this name. */
#define FUNNEL_SERVICE_RUNTIME_TABLE "_runtime"

/*
 * The view as an engine sees it: get, put and del on the service's
 * tables, named by their index in funnel_service_opts.tables.  An engine
 * written over a funnel_store is pure over it: the runtime hands it the
 * view's batch transaction (funnel_service_store), `explain` a read-only
 * one (funnel_view_reader), a unit test a table in memory.
 *
 * get returns FUNNEL_OK with a view of the value valid until the next
 * put or del, or FUNNEL_ENOTFOUND; del of a missing key is FUNNEL_OK.
 * Any other code (FUNNEL_ESTORAGE, FUNNEL_EINVAL for a write to a
 * read-only store) is the engine's to pass up.
 */
typedef struct funnel_store {
	void *ctx;
	int (*get)(void *ctx, int table, const void *key, size_t klen, const void **val,
	           size_t *vlen);
	int (*put)(void *ctx, int table, const void *key, size_t klen, const void *val,
	           size_t vlen);
	int (*del)(void *ctx, int table, const void *key, size_t klen);
} funnel_store;

typedef struct funnel_service funnel_service;

/*
 * Called once per record, in seq order, inside the view's write
 * transaction.  `rec` and everything it points to are valid during the
 * call only.  Return FUNNEL_OK, or an error code to stop the service:
 * the batch is then aborted (neither the view changes nor the derived
 * events of the batch are kept), and funnel_service_run returns that
 * code.
 */
typedef int (*funnel_apply_fn)(funnel_service *svc, const funnel_record *rec, void *ctx);

/*
 * Optional: called now and then between batches, for decisions that
 * depend on the current time (an SLA timer that ran out).  `view` is a
 * read-only transaction on the committed view (checkpoint included),
 * valid during the call only.  The tick decides from the time and the
 * view and records what it decided as events with funnel_service_send
 * (ids of its own, so a decision sent twice is stored once); the
 * records then come back through the feed to apply(), which stays a
 * pure function of view and record: a replay re-applies the decisions,
 * it never makes them again.
 *
 * When: every tick_ms, at a point where no batch is open, once the feed
 * has had nothing more to deliver (the view is as fresh as the log), or
 * regardless when the tick is 10 x tick_ms late (a feed that is never
 * idle); never before the feed was idle once after start (a view still
 * catching up would decide on stale state).  Never with until_head or
 * no_emit.  Return FUNNEL_OK, or an error code to stop the service
 * (funnel_service_run returns it); FUNNEL_ESHUTDOWN from
 * funnel_service_send is a stop, not an error.
 */
typedef int (*funnel_tick_fn)(funnel_service *svc, MDB_txn *view, void *ctx);

/*
 * Optional, for an apply() that keeps a batch's changes in memory and
 * writes them once per batch (funnel-metrics' days table):
 *
 * before_commit is called once per batch that applied records, inside
 * the batch's write transaction, after its last apply() and before the
 * checkpoint is written: what it writes (funnel_service_get/put/del, as
 * in apply()) commits with the checkpoint, so view and checkpoint still
 * change together.  It must write everything it held for the batch and
 * hold nothing afterwards, whatever it returns.  Return FUNNEL_OK, or an
 * error code: the batch is aborted (a full map is grown and the batch
 * applied again, as for apply()), and funnel_service_run returns it.
 *
 * on_abort is called when a batch's transaction is thrown away instead
 * of committed (apply() or the view failed, a full map, a stop while
 * sending, a batch that applied nothing): the service drops what it
 * held for the batch; its records are applied again from the
 * checkpoint (or never, once stopped).  Before a failed before_commit
 * it is not called (that hook holds nothing afterwards).
 *
 * ctx is apply's.  With neither hook, apply() keeps everything in the
 * view, as funnel_service_get's contract asks.
 */
typedef int (*funnel_before_commit_fn)(funnel_service *svc, void *ctx);
typedef void (*funnel_on_abort_fn)(funnel_service *svc, void *ctx);

typedef struct funnel_service_opts {
	const char *name;          /* required: "scoring"; starts every derived idempotency key */
	const char *view_dir;      /* required: the view's directory (created if missing) */
	const char *ingest;        /* funneld endpoints; NULL: the loopback defaults */
	const char *publish;
	const char *query;
	const char *tables[FUNNEL_SERVICE_MAX_TABLES]; /* the service's tables, NULL-terminated */
	size_t map_size;           /* initial view map size; 0: 64 MiB (it grows when full) */
	int rebuild;               /* 1: empty the tables and start again from seq 1 */
	int until_head;            /* 1: stop once the head seen at start is applied */
	int no_emit;               /* 1: never send (read-only runs); emit() still succeeds */
	int no_sync;               /* 1: the view does not fsync its commits (kill -9 safe, power loss not) */
	unsigned batch_events;     /* records per view commit at most; 0: 10000 */
	int batch_ms;              /* age of a batch before it is committed anyway; 0: 100 */
	int timeout_ms;            /* per call to funneld; 0: 10000 */
	const char *ready_file;    /* written once the view is open and the feed connected */
	pthread_rwlock_t *map_lock; /* if set: held for writing while the view's map is resized;
	                             * another thread reading the view (funnel_service_env) holds
	                             * it for reading around each of its transactions, so the map
	                             * never moves under a reader.  NULL: no other thread reads. */
	funnel_tick_fn tick;       /* optional: time-based decisions (see funnel_tick_fn); ctx as apply */
	int tick_ms;               /* period of tick; 0: 1000 */
	const char *source;        /* NULL: the feed is funneld's; "nats://HOST:PORT/STREAM": the
	                            * records come from a funnel-mirror stream (funnel_sub_opts.source);
	                            * derived events still go to funneld's ingest */
	funnel_before_commit_fn before_commit; /* optional: see funnel_before_commit_fn */
	funnel_on_abort_fn on_abort;           /* optional: see funnel_before_commit_fn */
} funnel_service_opts;

/*
 * Open the view (creating it, or emptying the service's tables for a
 * rebuild) and connect to funneld.  The handler and ctx are kept.
 * Returns FUNNEL_OK, FUNNEL_EINVAL (missing name or view_dir, a table
 * named FUNNEL_SERVICE_RUNTIME_TABLE or "_pending", a source that is not a
 * nats://HOST:PORT/STREAM URL: the log line names the part of the URL
 * that is wrong), FUNNEL_ESTORAGE (the view cannot be opened, is in
 * use by another process, or belongs to another service: *out is NULL
 * and the reason is in the log lines), FUNNEL_ECHAIN (funneld answers
 * and serves another log than the view's), FUNNEL_ENOMEM,
 * FUNNEL_ETRANSPORT.
 */
int funnel_service_new(funnel_service **out, const funnel_service_opts *opts,
                       funnel_apply_fn apply, void *ctx);

/* Commit nothing more, close the view and the sockets.  Queued derived
 * events of an uncommitted batch are dropped (they will be derived
 * again from the checkpoint). */
void funnel_service_destroy(funnel_service **svc);

/*
 * Run the loop until funnel_service_stop() is called (FUNNEL_OK, after
 * committing the batch in hand), until the head is applied with
 * until_head (FUNNEL_OK), or until apply() or the view fails (that
 * code; the batch in hand is aborted).  Unreachable funneld is waited
 * for, not an error.
 */
int funnel_service_run(funnel_service *svc);

/* Ask the loop to stop after the batch in hand.  Async-signal-safe. */
void funnel_service_stop(funnel_service *svc);

/* Inside apply(): the view's write transaction and a service table by
 * the name given in opts.tables (0 for an unknown name). */
MDB_txn *funnel_service_txn(funnel_service *svc);
MDB_dbi funnel_service_table(funnel_service *svc, const char *name);

/* The handle of the runtime's table (FUNNEL_SERVICE_RUNTIME_TABLE), for
 * another thread reading the checkpoint in a transaction of its own. */
MDB_dbi funnel_service_runtime_table(funnel_service *svc);

/* Inside apply(): the service's tables as a funnel_store over the
 * batch's write transaction (funnel_service_get/put/del by table index).
 * The pointer is the service's, valid for its life; use it inside
 * apply() only. */
const funnel_store *funnel_service_store(funnel_service *svc);

/*
 * Inside apply(): read, write and delete in a service table.  get
 * returns FUNNEL_OK with a view of the value valid until the next write
 * in the batch, or FUNNEL_ENOTFOUND.  Any LMDB failure is
 * FUNNEL_ESTORAGE: apply() returns it.  A full map is handled by the
 * runtime: it aborts the batch, grows the map and applies the batch
 * again, so apply() must keep its state in the view (not in memory that
 * outlives a call), or be able to see a record again after an abort
 * (opts.before_commit and opts.on_abort: memory that lives one batch).
 */
int funnel_service_get(funnel_service *svc, MDB_dbi dbi, const void *key, size_t klen,
                       const void **val, size_t *vlen);
int funnel_service_put(funnel_service *svc, MDB_dbi dbi, const void *key, size_t klen,
                       const void *val, size_t vlen);
int funnel_service_del(funnel_service *svc, MDB_dbi dbi, const void *key, size_t klen);

/*
 * Inside apply(): queue a derived event caused by the record being
 * applied.  ev->cause and ev->id are set by the runtime (cause = the
 * record's seq, id = "<name>:<seq>:<key>"): `key` tells apart the
 * events one record derives ("scored", "qualified").  The event is sent
 * at once; the library copies what it needs.  Returns FUNNEL_OK,
 * FUNNEL_EINVAL (no type, key too long), FUNNEL_ENOMEM.
 */
int funnel_service_emit(funnel_service *svc, const funnel_event *ev, const char *key);

/*
 * Inside apply(): the same for a decision on the record's own lead
 * (ev->lead equal to the record's lead, no expected_version of the
 * caller's; otherwise this is funnel_service_emit): the event is
 * conditional and the decision pending (see "Services never override
 * people" above).  Emit a record's decisions for its lead one after the
 * other.  `undo` (undo_len bytes, copied; NULL with 0 for none) is kept
 * with the pending decision and given back by funnel_service_dropped()
 * if the log drops it; a later decision of the same record with
 * undo_len 0 keeps the bytes given before.  Returns as
 * funnel_service_emit, and FUNNEL_EINVAL (decisions for the lead not one
 * after the other, or more than 16), FUNNEL_ESTORAGE (the view: apply()
 * returns it).
 */
int funnel_service_emit_decision(funnel_service *svc, const funnel_event *ev, const char *key,
                                 const void *undo, size_t undo_len);

/*
 * Inside apply(): 1 when the record being applied shows that the log
 * dropped this service's pending decision on the record's lead (the
 * record names the lead and is not the decision's own event), with the
 * seq the decision was made on and the undo bytes given to
 * funnel_service_emit_decision() (length 0 if none; valid during apply()
 * only); 0 otherwise.  Any pointer may be NULL.
 */
int funnel_service_dropped(const funnel_service *svc, uint64_t *cause, const void **undo,
                           size_t *undo_len);

/*
 * Send an event now, outside apply() (a service's own start-up record,
 * such as rules.changed), with the idempotency key `id` as given, and
 * wait until the log stores it.  Retries like the derived events; a
 * refusal by the log is returned, FUNNEL_ECHAIN when funneld serves
 * another log than the view's (nothing sent).  With no_emit it sends
 * nothing.
 */
int funnel_service_send(funnel_service *svc, const funnel_event *ev, funnel_ack *ack);

/* FUNNEL_OK while funneld serves the view's log (or has not answered
 * yet); FUNNEL_ECHAIN while it serves another one (nothing is applied or
 * sent meanwhile), with the reason in why.  Safe from any thread. */
int funnel_service_log_state(funnel_service *svc, char *why, size_t whylen);

/* The seq of the last record applied and committed (0: none). */
uint64_t funnel_service_checkpoint(const funnel_service *svc);

/* The service's query client (for start-up questions to funneld). */
funnel_query *funnel_service_query(funnel_service *svc);

/* The view environment (to read it outside apply(), e.g. `explain`:
 * open a read-only transaction of your own; from another thread while
 * the service runs, hold opts.map_lock for reading around it). */
MDB_env *funnel_service_env(funnel_service *svc);

/* Counters since start: records applied, view commits, derived events
 * stored (new records), acked as duplicates (their id was in the log
 * already: sent by an earlier run before it stopped, not counted in
 * emitted), refused by the log, skipped as already sent (rebuild), and
 * dropped because the lead changed after their cause (EVERSION: a person
 * acted first). */
typedef struct funnel_service_stats {
	uint64_t applied;
	uint64_t commits;
	uint64_t emitted;
	uint64_t refused;
	uint64_t skipped;
	uint64_t overridden;
	uint64_t duplicates;
} funnel_service_stats;
void funnel_service_stats_get(const funnel_service *svc, funnel_service_stats *st);

/*
 * The BLAKE2b-256 of a view's content: every table of the service and
 * the runtime's "_pending" (name, then each key and value in key order)
 * and the checkpoint, in a fixed
 * encoding, so two views built from the same log by the same code have
 * the same digest whatever their LMDB page layout.  The runtime's emit
 * watermark is left out.  Opens view_dir read-only.  Returns FUNNEL_OK,
 * FUNNEL_ENOTFOUND (no view there), FUNNEL_ESTORAGE.
 */
int funnel_view_digest(const char *view_dir, uint8_t digest[32], uint64_t *checkpoint);

/*
 * A view's checkpoint alone (what `funnel status` compares with the head
 * for a service's lag): one read of the runtime table, read-only, beside
 * a running service.  Returns FUNNEL_OK, FUNNEL_ENOTFOUND (no view
 * there), FUNNEL_ESTORAGE (cannot be opened, e.g. not readable).
 */
int funnel_view_checkpoint(const char *view_dir, uint64_t *checkpoint);

/*
 * The service a view belongs to, as its runtime table records it (the
 * name the service's funnel_service_opts gave), into name (cap bytes,
 * NUL-terminated, cut if longer); "" for a view that records no owner
 * yet.  Read-only, beside a running service.  So a read-only command
 * (`digest`) refuses another service's view as the service itself does.
 * Returns FUNNEL_OK, FUNNEL_ENOTFOUND (no view there), FUNNEL_ESTORAGE,
 * FUNNEL_EINVAL (a NULL argument or cap 0).
 */
int funnel_view_owner(const char *view_dir, char *name, size_t cap);

/*
 * A view opened read-only, beside a running service or without one
 * (`explain`, `report`): the environment, one read transaction for the
 * reader's life, the handles of the tables asked for, and those tables
 * as a funnel_store (table i = tables[i]; put and del are FUNNEL_EINVAL).
 * Owned by the caller; funnel_view_reader_close releases it.  store.ctx
 * is the reader itself: it must not move (be copied) while open.  One
 * thread at a time (the environment is opened MDB_NOTLS, so not
 * necessarily the one that opened it); values read are valid until the
 * reader is closed.
 */
typedef struct funnel_view_reader {
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi[FUNNEL_SERVICE_MAX_TABLES + 1];
	size_t ntables;
	funnel_store store;
} funnel_view_reader;

/*
 * Open view_dir read-only with the tables named in `tables`
 * (NULL-terminated, at most FUNNEL_SERVICE_MAX_TABLES + 1; the runtime's
 * FUNNEL_SERVICE_RUNTIME_TABLE may be one of them).  Returns FUNNEL_OK;
 * FUNNEL_ESTORAGE when the view cannot be opened or read (why: LMDB's
 * reason); FUNNEL_ENOTFOUND when it lacks one of the tables (it is not
 * this service's view; why names the table); FUNNEL_EINVAL (a NULL
 * argument, or more tables than that: why says so, nothing is opened).
 * On failure *r is closed.
 */
int funnel_view_reader_open(funnel_view_reader *r, const char *view_dir,
                            const char *const *tables, char *why, size_t whylen);
void funnel_view_reader_close(funnel_view_reader *r);

#ifdef __cplusplus
}
#endif
#endif /* FUNNEL_SERVICE_H */
