/*
 * clients/lib/runtime.h - what the three files of the service runtime
 * (funnel/service.h) share: the funnel_service object and the calls one
 * file makes into another.  Not installed; shared names start with sr_.
 *
 *   view.c    the view: LMDB environment, the runtime's tables, map
 *             growth, rebuild, the store, read-only readers, digest;
 *   outbox.c  derived events: queued, sent pipelined, settled, and the
 *             decisions pending in "_pending";
 *   loop.c    the object's life and the loop: the feed, which log
 *             funneld serves, batches, the tick, the ready file, and
 *             funnel_service_send (asks which log first).
 *
 * Ownership: every field of funnel_service is the loop's thread's,
 * except log_state/log_why (under state_lock) and stop (a signal may set
 * it).
 */
#ifndef FUNNEL_CLIENTS_LIB_RUNTIME_H
#define FUNNEL_CLIENTS_LIB_RUNTIME_H

#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>

#include "funnel/service.h"
#include "internal.h"

#define PENDING_TABLE "_pending"     /* lead id -> 8-byte cause seq + the service's undo bytes */
#define MAX_CHAIN 16                 /* derived events of one record for one lead */
#define DEFAULT_MAP (64u << 20)
/* Every environment of a view, written or read: room for the service's
 * tables and the runtime's two. */
#define VIEW_MAXDBS (FUNNEL_SERVICE_MAX_TABLES + 2)
#define SEND_WINDOW 256
/* How often a running service asks funneld whether it still serves the
 * view's log, and how long it waits for the answer. */
#define PROBE_MS 1000
#define PROBE_TIMEOUT_MS 1000

/* What the service knows of the log funneld serves (see check_log). */
enum log_state {
	LOG_UNCHECKED,     /* not asked yet, or funneld did not answer */
	LOG_OWN,           /* the log the view was built from (or the view is empty) */
	LOG_OTHER          /* another log: nothing is applied or sent */
};

/* One derived event of the batch in hand, from queued to settled
 * (stored or refused by the log).  buf owns every string and the data of
 * ev. */
enum pend_state { P_UNSENT, P_SENT, P_DONE };
typedef struct pending {
	funnel_event ev;
	char *buf;
	uint64_t rid;                    /* the request carrying it, while P_SENT */
	enum pend_state state;
	int cond;                        /* sent with expected_version set by the runtime */
	int with_prev;                   /* travels in the request of the entry before it
	                                  * (the same cause and lead: expected versions chain) */
} pending;

struct funnel_service {
	funnel_service_opts o;           /* strings point into the copies below */
	char *name, *view_dir, *ingest, *publish, *query, *ready_file, *source;
	char *tnames[FUNNEL_SERVICE_MAX_TABLES];
	size_t ntables;
	funnel_apply_fn apply;
	void *ctx;
	funnel_store store;              /* the tables over txn (funnel_service_store) */

	MDB_env *env;
	MDB_dbi rt;
	MDB_dbi pend_dbi;                /* PENDING_TABLE: decisions whose fate the log has not shown */
	MDB_dbi dbi[FUNNEL_SERVICE_MAX_TABLES];
	MDB_txn *txn;                    /* the batch's write transaction, or NULL */
	size_t map_size;
	int map_full;                    /* an LMDB call of this batch hit MDB_MAP_FULL */

	funnel_subscriber *sub;
	funnel_producer *prod;
	funnel_query *q;
	funnel_query *probe;             /* check_log's, with a short timeout */
	msgpack_zone zone;
	int lock_fd;                     /* holds the view directory's lock; -1: none */

	/* The log behind funneld's endpoints.  log_state and log_why are
	 * written by the loop's thread under state_lock, read by any thread
	 * (funnel_service_log_state). */
	enum log_state log_state;
	char log_why[512];
	pthread_mutex_t state_lock;
	int64_t next_probe;              /* fl_now_ms() of the next check_log */

	/* Committed state (what _runtime says). */
	uint64_t checkpoint;
	uint64_t watermark;              /* derived events with cause <= this were sent before */
	uint8_t last_hash[FUNNEL_HASH_BYTES];
	int have_hash;

	/* The batch in hand. */
	uint64_t cur;                    /* seq of the last record applied in the batch */
	uint64_t applying;               /* seq of the record inside apply(), 0 outside */
	const funnel_record *applying_rec; /* that record, inside apply() */
	int dropped;                     /* inside apply(): the record dropped a decision ... */
	uint64_t dropped_cause;          /* ... made on this seq, */
	uint8_t *dropped_undo;           /* ... with these undo bytes (owned, dropped_cap) */
	size_t dropped_len, dropped_cap;
	uint8_t cur_hash[FUNNEL_HASH_BYTES];
	unsigned batch_n;
	int64_t batch_deadline;
	pending *pend;
	size_t npend, cappend;
	size_t unsent;                   /* entries of pend not yet settled */
	size_t done_upto;                /* every entry before this one is settled */

	/* The tick (opts.tick). */
	int64_t next_tick;               /* fl_now_ms() of the next tick due */
	int feed_idle;                   /* the last wait timed out with the feed live */
	int caught_up;                   /* the feed has been idle once: the view has met the log */

	volatile sig_atomic_t stop;
	funnel_service_stats stats;
};


/* ---- view.c ---- */

/* Map an LMDB failure to FUNNEL_ESTORAGE, noting a full map (map_full)
 * and logging any other failure, with what was being done. */
int sr_lmdb_fail(funnel_service *svc, int rc, const char *what);

/* Double the map until at most half of it is used (force: at least
 * once).  No transaction of this process may be open. */
int sr_grow_map(funnel_service *svc, int force);

/* Create, lock, claim and open the view, its tables and the committed
 * state (checkpoint, watermark, last hash); a rebuild empties it first. */
int sr_open_view(funnel_service *svc);

/* Write a key of the runtime table in txn: LMDB's code. */
int sr_runtime_put(funnel_service *svc, MDB_txn *txn, const char *key, const void *val,
                   size_t len);
int sr_runtime_put_u64(funnel_service *svc, MDB_txn *txn, const char *key, uint64_t x);

/* Fill svc->store (the tables by index over svc->txn). */
void sr_store_init(funnel_service *svc);

/* ---- outbox.c ---- */

/* Forget every derived event of the batch in hand. */
void sr_drop_pending(funnel_service *svc);

/* Send what is unsent and take the replies that are in; with wait,
 * until every event of the batch is settled.  FUNNEL_OK, or
 * FUNNEL_ESHUTDOWN when stopped first. */
int sr_pump(funnel_service *svc, int wait);

/* Before apply(): whether rec shows that the log dropped the decision
 * pending on its lead (svc->dropped and the undo bytes), and settle it. */
int sr_check_pending(funnel_service *svc, const funnel_record *rec);

/* A daemon code that is the log's decision about the event itself
 * (resending it gets the same answer): not retried. */
int sr_is_refusal(int code);

/* Sleep ms milliseconds. */
void sr_nap_ms(long ms);

/* loop.c calls into outbox.c and view.c, outbox.c into view.c, view.c
 * into neither: no circle. */

#endif /* FUNNEL_CLIENTS_LIB_RUNTIME_H */
