/*
 * daemon/store.h - the log on disk: one LMDB environment, four tables.
 *
 *   log        seq (uint64, native integer key) -> record bytes, exactly as
 *              published and replayed.  Gapless from 1; appended only
 *              (MDB_APPEND: seqs only grow).
 *   idem       idempotency key -> seq.  Kept forever.
 *   leads      two kinds of key per lead id, next to each other:
 *                lead 0x00 seq (8 bytes, big-endian) -> empty: the lead's
 *                                history, one key per event, in seq order
 *                lead 0x01 -> the lead's state (stage, version, last seq,
 *                             owner)
 *              Lead ids have no byte below 0x20 (PROTOCOL.md §2), so all
 *              keys of a lead sort together, its history first and its
 *              state right after.  An event adds a history key and
 *              rewrites the state key beside it: one B-tree leaf dirtied
 *              per lead per commit, where two tables dirtied two.
 *   meta       "format" -> uint32, "head_seq" -> uint64, "head_hash" -> 32 bytes,
 *              "created" -> uint64 ns, "leads" -> uint64 (distinct lead ids)
 *
 * Every table changes only inside the writer's transaction that appends
 * the records, so the indexes always agree with the log.
 *
 * Format 2 (this layout) replaced format 1 (separate leads and lead_seqs
 * tables); a log in another format is refused at open, not converted.
 *
 * Threads: one writer (the ingest loop) and any number of readers (the
 * query thread).  store_grow() resizes the map and needs no reader
 * inside a transaction: readers bracket their transactions with
 * store_read_begin()/store_read_end(), which take a shared lock that
 * store_grow() takes exclusively.
 *
 * Durability: one device flush per commit.  A durable log is opened with
 * MDB_NOMETASYNC: a commit writes its pages and flushes them
 * (fdatasync), then writes its meta page without flushing it.  So commit
 * k's meta page is on the device only after the next flush: the data
 * flush of commit k+1, or store_sync().  LMDB keeps two meta pages and
 * reuses a page only two commits after it was freed, so whichever meta
 * page a power loss leaves is whole and names pages that were flushed:
 * the log is commit k or commit k-1, never corrupt (MDB_NOSYNC, which
 * drops the data flush too, gives no such promise; it is --no-sync).
 * The store keeps two heads:
 *   head_seq     committed (seen by LMDB transactions), the writer's own;
 *   durable seq  its meta page flushed: what survives a power loss.
 * The writer raises the durable seq (store_set_durable) after the flush
 * that makes a commit durable, and acknowledges and publishes a group
 * only then.  Readers answer as of the durable seq (store_read_head):
 * a record, a lead state or a count past it is not shown, as it may yet
 * be lost.  An ack comes after its durable seq was raised, so a query
 * sent after an ack sees what it acknowledged.
 */
#ifndef FUNNEL_DAEMON_STORE_H
#define FUNNEL_DAEMON_STORE_H

#include <pthread.h>
#include <stdint.h>

#include <lmdb.h>

#include "funnel/record.h"
#include "envelope.h"
#include "logfmt.h"

#define STORE_FORMAT FP_LOG_FORMAT

typedef struct store {
	MDB_env *env;
	MDB_dbi log, idem, leads, meta;
	pthread_rwlock_t resize_lock;
	size_t map_size;
	size_t max_map_size;          /* 0: grow without bound */
	int durable;                  /* 0 only with --no-sync */
	char path[4096];
	/* Committed head, owned by the writer thread. */
	uint64_t head_seq;
	uint64_t head_ts;
	uint8_t head_hash[FUNNEL_HASH_BYTES];
	uint64_t head_leads;          /* distinct lead ids at the head */
	/* The durable head (see the top), raised by the writer, read by any
	 * thread under durable_lock; durable_cond is broadcast when it rises. */
	pthread_mutex_t durable_lock;
	pthread_cond_t durable_cond;
	uint64_t durable_seq;
	uint64_t durable_leads;
	/* An eventfd the durable seq's rise is written to, or -1: set by
	 * store_durable_watch() (the query thread's, which owns the fd), used
	 * by store_set_durable(), under durable_lock. */
	int watch_fd;
	/* The personal data keys (vault.h), NULL without a master key.  Not
	 * the store's: main.c opens and closes it; ingest and query use it. */
	struct vault *vault;
} store;

/* A lead's current state as kept in the leads table. */
typedef struct store_lead {
	fp_stage stage;
	uint64_t version;
	uint64_t last_seq;
	char owner[FP_MAX_OWNER_BYTES + 1];
} store_lead;

/*
 * Open or create the log in directory `path` (created if missing).  The
 * head found is flushed at once (it may be a commit whose meta page a
 * previous run left unflushed) and is the durable seq.  A new
 * log's data.mdb appears only once its empty state is on disk
 * (fp_envfile_prepare, proto/envfile.h), so a power loss during creation
 * leaves no log or an empty one, never one LMDB refuses.
 * Reads the head from the last record: no scan, whatever the log's size.
 * Returns 0, or -1 with a message in why.  On failure *s is released.
 */
int store_open(store *s, const char *path, size_t map_size, size_t max_map_size, int durable,
               char *why, size_t whylen);

/* Close the environment; safe on a store that failed to open. */
void store_release(store *s);

/*
 * Double the map (up to max_map_size).  Called by the writer with no
 * transaction open.  Returns 0, or an LMDB error code (MDB_MAP_FULL when
 * the cap is reached).
 */
int store_grow(store *s);

/* Reader bracket: see the comment at the top. */
int store_read_begin(store *s, MDB_txn **txn);
void store_read_end(store *s, MDB_txn **txn);

/*
 * A reader's head in txn: the last seq that is both in txn and durable,
 * and the distinct lead ids at that seq (either pointer may be NULL).
 * Readers show nothing past it.  0 or an LMDB error.
 */
int store_read_head(store *s, MDB_txn *txn, uint64_t *seq, uint64_t *leads);

/*
 * Wait until the durable seq reaches seq, for at most timeout_ms: 0 when
 * it did, ETIMEDOUT.  A reader that met a lead state written past its
 * head waits so (the writer flushes at once when it has nothing else).
 */
int store_wait_durable(store *s, uint64_t seq, int timeout_ms);

/*
 * Watch the durable seq: from now on, until called again, every rise of
 * it writes 1 to the eventfd fd (-1: stop watching).  Returns the durable
 * seq as it was when the watch was set, under the same lock, so a rise
 * after the value returned is never missed: it is in the value or it
 * wakes fd.  The fd stays the caller's; a writer that finds no watcher
 * pays no system call.
 */
uint64_t store_durable_watch(store *s, int fd);

/* --- durability, writer thread only --- */

/* Flush what was committed (commit k's meta page: see the top).  0 or an
 * errno value; after a failure nothing committed since the last
 * successful flush may be called durable. */
int store_sync(store *s);

/* The commit of seq (with leads distinct lead ids) is on the device:
 * raise the durable seq and wake the readers waiting for it (the
 * condition variable, and the watch fd when one is set). */
void store_set_durable(store *s, uint64_t seq, uint64_t leads);

/* --- lookups inside any transaction --- */

/* 0 and *out filled, MDB_NOTFOUND (out zeroed, stage NONE; also for an id
 * with a byte below 0x20, which no event carries), or an LMDB error. */
int store_lead_get(store *s, MDB_txn *txn, const char *lead, size_t len, store_lead *out);
/* The record of seq: 0 with a view valid until the transaction ends. */
int store_record_get(store *s, MDB_txn *txn, uint64_t seq, MDB_val *rec);
/* The last seq in the log (0 if empty). */
int store_head(store *s, MDB_txn *txn, uint64_t *seq);
/* Distinct lead ids in the log (meta "leads"). */
int store_lead_count(store *s, MDB_txn *txn, uint64_t *n);
/* A lead's history: position c (opened on s->leads) at the lead's first
 * seq >= from.  0 and *seq, MDB_NOTFOUND when it has none, or an LMDB
 * error.  store_lead_next() steps to its next seq the same way. */
int store_lead_seek(store *s, MDB_cursor *c, const char *lead, size_t len, uint64_t from,
                    uint64_t *seq);
int store_lead_next(store *s, MDB_cursor *c, const char *lead, size_t len, uint64_t *seq);
/* The first seq >= from whose ts >= since, by binary search over the log
 * (timestamps never decrease with seq); head+1 if none. */
int store_seq_at_time(store *s, MDB_txn *txn, uint64_t from, uint64_t since, uint64_t *seq);

/* --- writes, writer thread only, inside its write transaction --- */

/*
 * A write transaction and the writer's cursors on the tables every event
 * reads and updates.  A cursor kept from one call to the next lets LMDB
 * find a key on the leaf it already holds without walking down from the
 * root: a record is appended after the last one, the idempotency key is
 * inserted where its lookup ended, and a lead's history key and state key
 * share a leaf.
 */
typedef struct store_wtxn {
	MDB_txn *txn;
	MDB_cursor *log, *idem, *leads;   /* on txn; LMDB closes them when txn ends */
} store_wtxn;

/* Begin a write transaction, nested in parent's when parent is not NULL.
 * Returns 0 or an LMDB error (w->txn NULL). */
int store_wtxn_begin(store *s, store_wtxn *parent, store_wtxn *w);
/* End it: 0 or an LMDB error; either way w->txn is NULL after. */
int store_wtxn_commit(store_wtxn *w);
void store_wtxn_abort(store_wtxn *w);

/* Through w's cursors: the seq an idempotency key was stored with (0 and
 * *seq, MDB_NOTFOUND, or an LMDB error), and a lead's state as
 * store_lead_get() reads it. */
int store_idem_find(store_wtxn *w, const char *id, size_t len, uint64_t *seq);
int store_lead_find(store_wtxn *w, const char *lead, size_t len, store_lead *out);
/* The record of seq as w sees it (records appended earlier in the same
 * transaction included): 0 with a view valid until w's next write,
 * MDB_NOTFOUND, or an LMDB error. */
int store_record_find(store_wtxn *w, uint64_t seq, MDB_val *rec);

/* Store one record with its index entries.  lead and id may be NULL;
 * state is the lead's state after this record (state->last_seq == seq).
 * Returns 0 or an LMDB error (MDB_MAP_FULL means: abort, grow, retry). */
int store_append(store_wtxn *w, uint64_t seq, const void *rec, size_t len,
                 const char *lead, size_t lead_len, const store_lead *state,
                 const char *id, size_t id_len);

/* Write the head and the lead count into meta (once per group, before
 * commit). */
int store_put_head(store *s, MDB_txn *txn, uint64_t seq, const uint8_t hash[FUNNEL_HASH_BYTES],
                   uint64_t leads);

/* After a commit: the committed head (s->head_*), which the next group
 * stamps its records from. */
void store_set_head(store *s, uint64_t seq, uint64_t ts, const uint8_t hash[FUNNEL_HASH_BYTES],
                    uint64_t leads);

#endif /* FUNNEL_DAEMON_STORE_H */
