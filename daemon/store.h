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
 * Durability: one device flush per group, the journal's (journal.h).
 * LMDB commits only at a checkpoint, and durably: the writer keeps one
 * write transaction, the tail, open across groups; each group is a
 * child of it (store_group_begin/end), and once the child committed
 * into the tail the group's records are appended to the journal and
 * flushed (store_group_journal, then store_group_flush_start and/or
 * store_group_wait): from then on a power loss keeps them,
 * replayed from the journal at the next open.  A checkpoint
 * (store_checkpoint) commits the tail: one flush, of its pages (the log
 * is opened MDB_NOMETASYNC, so its meta page is written after that
 * flush and not flushed), and the journal starts a new lap in its other
 * region.  That flush also put the previous checkpoint's meta page on
 * the disk, so the lap it overwrites, which holds nothing past the
 * previous checkpoint, is not needed any more, while the lap just ended
 * stays until the next checkpoint: a power loss before it may take
 * data.mdb back to the previous checkpoint, and the journal then holds
 * everything after it.  So the journal never loses a record data.mdb
 * does not hold on the disk (synced_seq).  The meta page is flushed
 * explicitly (store_sync) where that is not enough: when the open
 * replayed records of both laps, after a format-1 journal (journal.h),
 * for a group too large for a lap (it is made durable by the
 * checkpoint), and at the stop.  LMDB alone cannot give one flush per
 * group: commits between flushes (MDB_NOSYNC) overwrite its two meta
 * pages unflushed, and a power loss can leave one naming pages that
 * never reached the disk.  Checkpoints come when store_checkpoint_due()
 * says (the lap used half its region, the tail 100 ms old or large, the
 * writer idle), before the map grows, at the stop, and when a group's
 * entry does not fit in what is left of the lap's region (the
 * checkpoint then makes that group durable: a group larger than the
 * whole journal works too).
 * --no-sync: the same, with no flush at all.
 *
 * The store keeps two heads:
 *   head_seq     committed into the tail: the writer's own;
 *   durable seq  journaled and flushed (or checkpointed): what survives
 *                a power loss.
 * The writer raises the durable seq (store_set_durable) after the flush
 * that makes a group durable, and acknowledges and publishes it only
 * then.  Readers see the tail: store_read_begin() gives the reader the
 * tail transaction itself, under tail_lock, while it holds records past
 * the last checkpoint (else a read transaction of its own); the writer
 * takes tail_lock only while a group's child is open, while the tail
 * commits, and while it rebuilds the tail from the journal (at open, and
 * after a checkpoint failed on a full disk or map: rebuild_tail, which
 * lets go of it while the map grows; a reader that comes meanwhile waits
 * for the rebuilt tail rather than read data.mdb alone), so a reader
 * waits at most for one group's apply (not its flush), and the writer at
 * most for one query's page.  A reader must
 * close the cursors it opened before store_read_end() and must not
 * write.  Readers answer as of the durable seq (store_read_head): a
 * record, a lead state or a count past it is not shown, as it may yet be
 * lost.  An ack comes after its durable seq was raised, so a query sent
 * after an ack sees what it acknowledged.
 *
 * Other processes opening data.mdb (`funnel verify --data`, `funnel
 * backup`'s snapshot) see the last checkpoint only; `funnel backup`
 * copies the journal first (clients/lib/backup.c).
 */
#ifndef FUNNEL_DAEMON_STORE_H
#define FUNNEL_DAEMON_STORE_H

#include <pthread.h>
#include <stdint.h>

#include <lmdb.h>

#include "funnel/record.h"
#include "envelope.h"
#include "logfmt.h"
#include "model.h"

#define STORE_FORMAT FP_LOG_FORMAT

/* When the writer checkpoints (store_checkpoint_due): the tail's age,
 * the writer idle this long, and the tail's size, which bounds the
 * dirty pages it holds in memory (DESIGN: funneld's anonymous memory).
 * Ingest waits while a checkpoint runs, for about 0.5 ms plus 4-6 us a
 * page it writes, and on a grown log each event's lead and id keys are
 * on leaves of their own, 2-3 pages an event: the age bounds that wait
 * under a steady moderate load, a heavy one reaches the size bounds
 * first.  At 1,000 form posts/s on a log of 200,000 events a tail of a
 * second (1,024 events) held posts up for 15-25 ms (the gateway's p99
 * 6.4-12.0 ms); one of 100 ms and at least 128 events, a few ms (p99
 * 3.3-5.9 ms, tests/bench/bench_gateway.c, alternated), at the price of
 * more checkpoints for a moderate load (one event at a time at ~2,500/s:
 * the disk took 6,100 -> 6,600-6,800 bytes an event, 1.001 -> 1.007
 * flushes).
 * A tail of fewer than STORE_TAIL_AGE_EVENTS events waits until
 * STORE_TAIL_OLDEST_NS: events that come one at a time, a flush apart,
 * would otherwise meet a checkpoint (a flush of data.mdb) every 100 ms.
 * When checkpoints come changes only how much a power loss leaves to
 * replay, never what it keeps.  A checkpoint that failed is retried
 * after STORE_CKPT_RETRY_NS. */
#define STORE_TAIL_MAX_AGE_NS 100000000ull
#define STORE_TAIL_AGE_EVENTS 128
#define STORE_TAIL_OLDEST_NS 1000000000ull
#define STORE_CKPT_RETRY_NS 1000000000ull
#define STORE_IDLE_NS 50000000ull
#define STORE_TAIL_MAX_EVENTS 32768
#define STORE_TAIL_MAX_BYTES ((size_t)16 << 20)

struct journal;

/*
 * A write transaction and the writer's cursors on the tables every event
 * reads and updates.  A cursor kept from one call to the next lets LMDB
 * find a key on the leaf it already holds without walking down from the
 * root: a record is appended after the last one, a lead's history key
 * and state key share a leaf (its state is rewritten where its lookup
 * left the cursor), and the idempotency key's one put (store_idem_claim)
 * both finds and inserts it.
 */
typedef struct store_wtxn {
	MDB_txn *txn;
	MDB_cursor *log, *idem, *leads;   /* on txn; LMDB closes them when txn ends */
} store_wtxn;

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
	/* The tail (see the top): the writer's long write transaction, and
	 * what it holds.  tail_lock guards tail.txn's use, tail_seq and
	 * ckpt_seq; the writer alone changes them. */
	pthread_mutex_t tail_lock;
	store_wtxn tail;              /* txn NULL between a checkpoint and the next group */
	uint64_t tail_seq;            /* the last seq in the tail */
	uint64_t ckpt_seq;            /* the last seq data.mdb holds (its last commit) */
	uint64_t synced_seq;          /* ... and holds on the disk: its meta page flushed */
	uint64_t tail_since_ns;       /* when the tail began */
	size_t tail_events, tail_bytes;
	uint64_t ckpt_retry_ns;       /* after a failed checkpoint: no due one before this */
	int broken;                   /* a checkpoint failed for good: the writer stops */
	int lap_inherited;            /* the journal's lap is an earlier run's, continued at the
	                               * open: its region past the end not yet cleared */
	/* Raised (under tail_lock) each time the tail is rebuilt from the
	 * journal while funneld runs: a group not in the journal (its entry
	 * did not fit and the checkpoint that was to make it durable failed)
	 * is gone, and its seqs will be those of other events.  A reply read
	 * from the tail before the rebuild may show a state never stored:
	 * store_tail_epoch() tells the query thread (query.c, parked). */
	uint64_t tail_epoch;
	struct journal *journal;      /* the writer's (journal.h) */
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
 * Open or create the log in directory `path` (created if missing), and
 * its journal (journal_size bytes when created): the journal's records
 * past LMDB's head are replayed, each checked to chain to the head, and
 * checkpointed; a journal that does not continue the log (a gap, a
 * record that does not chain) is refused with a message naming it and
 * the seqs, and nothing is changed.  The head found is flushed at once
 * (with --no-sync too: a durable run's events may be in the journal)
 * and is the durable seq.  A new
 * log's data.mdb appears only once its empty state is on disk
 * (fp_envfile_prepare, proto/envfile.h), so a power loss during creation
 * leaves no log or an empty one, never one LMDB refuses.
 * Reads the head from the last record: no scan, whatever the log's size.
 * Returns 0, or -1 with a message in why.  On failure *s is released.
 */
int store_open(store *s, const char *path, size_t map_size, size_t max_map_size,
               size_t journal_size, int durable, char *why, size_t whylen);

/* Close the environment; safe on a store that failed to open.  A tail
 * not checkpointed is dropped (the journal holds it); the last
 * checkpoint's meta page is flushed (when durable and not broken). */
void store_release(store *s);

/*
 * Double the map (up to max_map_size).  Called by the writer with no
 * transaction open (checkpoint first: the tail is one).  Returns 0, or an LMDB error code (MDB_MAP_FULL when
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
 * head waits so (the writer flushes each group's journal entry at once).
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

/* The tail's epoch (tail_epoch above), from any thread. */
uint64_t store_tail_epoch(store *s);

/* Flush what LMDB committed (its meta page: see the top).  0 or an
 * errno value. */
int store_sync(store *s);

/* A group: begin its transaction w, a child of the tail (begun first
 * when there is none), holding tail_lock.  0, or an LMDB error (no lock
 * held then). */
int store_group_begin(store *s, store_wtxn *w);
/* End it: with nrecs > 0 commit w into the tail (head: its last seq,
 * bytes: its records' size), else abort it; release tail_lock.  0 or an
 * LMDB error (the group is then not in the tail). */
int store_group_end(store *s, store_wtxn *w, uint64_t head, size_t nrecs, size_t bytes);
/* Make the group just committed into the tail durable, in steps, so the
 * writer can apply the next group while the flush runs:
 * store_group_journal() writes its count records (seqs first_seq...,
 * record i ending at ends[i] in recs) to the journal, or checkpoints
 * when they do not fit in what is left of it, and returns without
 * flushing; store_group_flush_start() hands the flush to the journal's
 * flusher thread; store_group_wait() waits for it (or flushes, when none
 * was started): 0 once every group written is durable;
 * store_group_flushing() says, without waiting, whether it would wait.
 * store_group_journal() returns STORE_REDO when that checkpoint had to
 * grow the map: the group is not stored, and is to be applied again.
 * A failure of any of them (an errno / LMDB code) leaves the group's
 * fate on a power loss unknown, and sticks (journal.h): the writer must
 * stop, except when store_group_journal's checkpoint failed on a full
 * disk or map and s->broken is unset (store_checkpoint).  A checkpoint
 * waits for a flush still running (journal_new_lap). */
int store_group_journal(store *s, uint64_t first_seq, size_t count, const void *recs,
                        const size_t *ends);
void store_group_flush_start(store *s);
int store_group_flushing(store *s);   /* the flush started still runs (one atomic load) */
int store_group_wait(store *s);
/* store_group_journal's checkpoint grew the map and rebuilt the tail
 * without the group (its entry was not in the journal): apply the group
 * again.  Not an LMDB code. */
#define STORE_REDO (-30001)
/* Commit the tail (one flush: see the top) and start a new journal lap;
 * a tail with nothing stored is dropped without a flush.  0, or an LMDB /
 * errno code.  On a full disk or map (store_full) the tail is rebuilt
 * from data.mdb and the journal, so it holds exactly what the journal
 * holds (a group whose entry did not fit is gone: refuse it) and the
 * writer goes on; s->broken set means it could not be, or the failure
 * was another (a flush: Linux reports it once), and the writer must
 * stop: what was acknowledged is in the journal, replayed at the next
 * start.  A commit the map is too small for grows the map (up to its
 * cap) and is tried again on a tail rebuilt the same way. */
int store_checkpoint(store *s);
/* Is rc (LMDB or errno) a full map or disk?  LMDB reports a page write
 * the disk cut short as EIO: with less than 1 MiB left it is the disk. */
int store_full(const store *s, int rc);
/* Is a checkpoint due now, the writer idle for idle_ns (0: busy)? */
int store_checkpoint_due(const store *s, uint64_t now_ns, uint64_t idle_ns);

/* The state a lead has after an event of spec's type at seq that takes
 * it to stage `to` and version `version`, from *st (its state before):
 * the owner from an assignment's data, none after an erasure.  The one
 * rule the writer and the journal's replay both use. */
void store_lead_after(store_lead *st, const fp_evspec *spec, fp_stage to, uint64_t version,
                      uint64_t seq, const msgpack_object *data);

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


/* Begin a write transaction, nested in parent's when parent is not NULL
 * (the writer's groups go through store_group_begin instead).
 * Returns 0 or an LMDB error (w->txn NULL). */
int store_wtxn_begin(store *s, store_wtxn *parent, store_wtxn *w);
/* End it: 0 or an LMDB error; either way w->txn is NULL after. */
int store_wtxn_commit(store_wtxn *w);
void store_wtxn_abort(store_wtxn *w);

/* Through w's cursors: the seq an idempotency key was stored with (0 and
 * *seq, MDB_NOTFOUND, or an LMDB error; the writer claims ids instead,
 * below), and a lead's state as store_lead_get() reads it.
 * store_lead_find() returning 0 leaves w's leads cursor on the lead's
 * state: see store_append's state_at_cursor. */
int store_idem_find(store_wtxn *w, const char *id, size_t len, uint64_t *seq);
int store_lead_find(store_wtxn *w, const char *lead, size_t len, store_lead *out);

/* Claim an idempotency key for the record seq is about to hold: one
 * search, where a lookup and then store_append's put took two.  0 (the
 * key now names seq: pass no id to store_append), MDB_KEYEXIST and *orig
 * the seq the key already names (nothing changed), or an LMDB error.  A
 * claim whose record is then not appended is taken back at once with
 * store_idem_unclaim(), before w's idem cursor is used again (it is
 * still on the key). */
int store_idem_claim(store_wtxn *w, const char *id, size_t len, uint64_t seq, uint64_t *orig);
int store_idem_unclaim(store_wtxn *w);
/* The record of seq as w sees it (records appended earlier in the same
 * transaction included): 0 with a view valid until w's next write,
 * MDB_NOTFOUND, or an LMDB error. */
int store_record_find(store_wtxn *w, uint64_t seq, MDB_val *rec);

/* Store one record with its index entries.  lead and id may be NULL;
 * state is the lead's state after this record (state->last_seq == seq).
 * state_at_cursor: w's leads cursor is still where store_lead_find() left
 * it, on this lead's state (found, and no put on the leads table since):
 * the state is then rewritten in place there, without a search.
 * Returns 0 or an LMDB error (MDB_MAP_FULL means: abort, grow, retry). */
int store_append(store_wtxn *w, uint64_t seq, const void *rec, size_t len,
                 const char *lead, size_t lead_len, const store_lead *state,
                 const char *id, size_t id_len, int state_at_cursor);

/* Write the head and the lead count into meta (once per group, before
 * commit). */
int store_put_head(store *s, MDB_txn *txn, uint64_t seq, const uint8_t hash[FUNNEL_HASH_BYTES],
                   uint64_t leads);

/* After a commit: the committed head (s->head_*), which the next group
 * stamps its records from. */
void store_set_head(store *s, uint64_t seq, uint64_t ts, const uint8_t hash[FUNNEL_HASH_BYTES],
                    uint64_t leads);

#endif /* FUNNEL_DAEMON_STORE_H */
