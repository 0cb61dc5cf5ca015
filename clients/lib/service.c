/*
 * clients/lib/service.c - the service runtime (funnel/service.h): a view
 * in LMDB, records applied in seq order, derived events sent before the
 * checkpoint that covers their cause is committed.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "envfile.h"
#include "funnel/log.h"
#include "funnel/service.h"
#include "dirlock.h"
#include "internal.h"

#define RT_TABLE "_runtime"
#define PENDING_TABLE "_pending"     /* lead id -> 8-byte cause seq + the service's undo bytes */
#define MAX_CHAIN 16                 /* derived events of one record for one lead */
#define DEFAULT_MAP (64u << 20)
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

/* ---- small helpers ---- */

static void
put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t
get_be64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static char *
dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static int
mkdir_p(const char *path)
{
	char tmp[4096];
	size_t n = strlen(path);

	if (n == 0 || n >= sizeof tmp)
		return -1;
	memcpy(tmp, path, n + 1);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(tmp, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

static void
nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* LMDB reports a page write the disk cut short as EIO ("short write,
 * filesystem full?"), not ENOSPC; a short write takes the last free
 * blocks, so a disk with less than 1 MiB left is the full one (as
 * funneld decides for its log). */
static int
view_disk_full(const funnel_service *svc, int rc)
{
	struct statvfs fs;
	if (rc == ENOSPC || rc == EDQUOT)
		return 1;
	return rc == EIO && statvfs(svc->view_dir, &fs) == 0 &&
	       (uint64_t)fs.f_bavail * fs.f_frsize < (1u << 20);
}

/* Map an LMDB failure to FUNNEL_ESTORAGE, noting a full map. */
static int
lmdb_fail(funnel_service *svc, int rc, const char *what)
{
	if (rc == MDB_MAP_FULL) {
		svc->map_full = 1;
	} else if (view_disk_full(svc, rc)) {
		funnel_log(FUNNEL_LOG_ERROR, "%s: view %s: no space left on the view's disk (%s); "
		           "nothing of the batch was kept", svc->name, what, svc->view_dir);
	} else {
		funnel_log(FUNNEL_LOG_ERROR, "%s: view %s: %s", svc->name, what, mdb_strerror(rc));
	}
	return FUNNEL_ESTORAGE;
}

static int grow_if_needed(funnel_service *svc, int force);

/* ---- the runtime table ---- */

static int
rt_get(funnel_service *svc, MDB_txn *txn, const char *key, MDB_val *v)
{
	MDB_val k = { strlen(key), (void *)key };
	return mdb_get(txn, svc->rt, &k, v);
}

static int
rt_put(funnel_service *svc, MDB_txn *txn, const char *key, const void *val, size_t len)
{
	MDB_val k = { strlen(key), (void *)key }, v = { len, (void *)val };
	return mdb_put(txn, svc->rt, &k, &v, 0);
}

static int
rt_put_u64(funnel_service *svc, MDB_txn *txn, const char *key, uint64_t x)
{
	uint8_t b[8];
	put_be64(b, x);
	return rt_put(svc, txn, key, b, 8);
}

static uint64_t
rt_get_u64(funnel_service *svc, MDB_txn *txn, const char *key)
{
	MDB_val v;
	if (rt_get(svc, txn, key, &v) != 0 || v.mv_size != 8)
		return 0;
	return get_be64(v.mv_data);
}

/* Read the committed state into svc. */
static int
load_state(funnel_service *svc)
{
	MDB_txn *txn;
	MDB_val v;
	int rc = mdb_txn_begin(svc->env, NULL, MDB_RDONLY, &txn);
	if (rc != 0)
		return lmdb_fail(svc, rc, "read the checkpoint");
	svc->checkpoint = rt_get_u64(svc, txn, "checkpoint");
	svc->watermark = rt_get_u64(svc, txn, "watermark");
	svc->have_hash = rt_get(svc, txn, "last_hash", &v) == 0 && v.mv_size == FUNNEL_HASH_BYTES;
	if (svc->have_hash)
		memcpy(svc->last_hash, v.mv_data, FUNNEL_HASH_BYTES);
	mdb_txn_abort(txn);
	return FUNNEL_OK;
}

/* Empty the service's tables; the checkpoint goes back to 0 and the
 * watermark keeps the highest checkpoint ever committed. */
static int
rebuild_once(funnel_service *svc)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(svc->env, NULL, 0, &txn);
	if (rc != 0)
		return lmdb_fail(svc, rc, "begin the rebuild");
	uint64_t cp = rt_get_u64(svc, txn, "checkpoint");
	uint64_t wm = rt_get_u64(svc, txn, "watermark");
	for (size_t i = 0; i < svc->ntables && rc == 0; i++)
		rc = mdb_drop(txn, svc->dbi[i], 0);
	if (rc == 0)
		rc = mdb_drop(txn, svc->pend_dbi, 0);
	if (rc == 0)
		rc = rt_put_u64(svc, txn, "watermark", cp > wm ? cp : wm);
	if (rc == 0)
		rc = rt_put_u64(svc, txn, "checkpoint", 0);
	if (rc == 0) {
		MDB_val k = { 9, "last_hash" };
		rc = mdb_del(txn, svc->rt, &k, NULL);
		if (rc == MDB_NOTFOUND)
			rc = 0;
	}
	if (rc == 0)
		rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	if (rc != 0)
		return lmdb_fail(svc, rc, "rebuild");
	funnel_log(FUNNEL_LOG_INFO, "%s: view emptied for a rebuild from seq 1 (was at %" PRIu64 ")",
	           svc->name, cp);
	return FUNNEL_OK;
}

/* Emptying a big view writes a big free list: grow the map when it is
 * full and try again. */
static int
rebuild_view(funnel_service *svc)
{
	int rc = FUNNEL_ESTORAGE;
	for (int tries = 0; tries < 8; tries++) {
		svc->map_full = 0;
		if ((rc = rebuild_once(svc)) == FUNNEL_OK || !svc->map_full)
			return rc;
		if ((rc = grow_if_needed(svc, 1)) != FUNNEL_OK)
			return rc;
	}
	return rc;
}

/* The service's table names, one per line, in the order given. */
static void
table_set(const funnel_service *svc, char *out, size_t n)
{
	size_t used = 0;
	out[0] = 0;
	for (size_t i = 0; i < svc->ntables && used < n; i++)
		used += (size_t)snprintf(out + used, n - used, "%s%s", i ? "\n" : "", svc->tnames[i]);
}

/* "a, b, c" for a message, from a table set. */
static void
table_list(const char *set, size_t len, char *out, size_t n)
{
	size_t j = 0;
	for (size_t i = 0; i < len && j + 3 < n; i++) {
		if (set[i] == '\n') {
			out[j++] = ',';
			out[j++] = ' ';
		} else {
			out[j++] = set[i];
		}
	}
	out[j] = 0;
}

/*
 * A view belongs to the service that wrote it: _runtime keeps its name
 * ("service") and its table set ("tables").  Another service opening it
 * is refused by name; the same service with another table set (a
 * version that changed its tables) must rebuild.  A view from before
 * the owner was recorded is claimed when it holds no table the service
 * does not have.  Returns 0, -1 after logging a refusal, or an LMDB
 * error.
 */
static int
claim_view(funnel_service *svc, MDB_txn *txn)
{
	char mine[FUNNEL_SERVICE_MAX_TABLES * 512], theirs[FUNNEL_SERVICE_MAX_TABLES * 512 + 4];
	MDB_val v;
	int rc, claimed = 0;

	table_set(svc, mine, sizeof mine);
	rc = rt_get(svc, txn, "service", &v);
	if (rc == 0) {
		if (v.mv_size != strlen(svc->name) || memcmp(v.mv_data, svc->name, v.mv_size) != 0) {
			funnel_log(FUNNEL_LOG_ERROR, "%s: view %s belongs to %.*s: refused (give each "
			           "service a view of its own)", svc->name, svc->view_dir,
			           (int)(v.mv_size > 64 ? 64 : v.mv_size), (const char *)v.mv_data);
			return -1;
		}
		if ((rc = rt_get(svc, txn, "tables", &v)) != 0 && rc != MDB_NOTFOUND)
			return rc;
		claimed = rc == 0 && v.mv_size == strlen(mine) && memcmp(v.mv_data, mine, v.mv_size) == 0;
		if (rc == 0 && !claimed) {
			if (!svc->o.rebuild) {
				char was[sizeof theirs], now[sizeof theirs];
				table_list(v.mv_data, v.mv_size, was, sizeof was);
				table_list(mine, strlen(mine), now, sizeof now);
				funnel_log(FUNNEL_LOG_ERROR, "%s: view %s was written with the tables (%s), "
				           "this %s has (%s): rebuild it (--rebuild)", svc->name, svc->view_dir,
				           was, svc->name, now);
				return -1;
			}
			/* a rebuild empties the tables: the new set is the view's now */
		}
	} else if (rc == MDB_NOTFOUND) {
		/* Not claimed yet: refuse a view holding another service's table. */
		MDB_dbi main_dbi, dbi;
		MDB_cursor *cur;
		MDB_val k;
		if ((rc = mdb_dbi_open(txn, NULL, 0, &main_dbi)) != 0 ||
		    (rc = mdb_cursor_open(txn, main_dbi, &cur)) != 0)
			return rc;
		int foreign = 0;
		for (int op = MDB_FIRST; !foreign && mdb_cursor_get(cur, &k, &v, op) == 0; op = MDB_NEXT) {
			if (k.mv_size >= 512)
				continue;
			memcpy(theirs, k.mv_data, k.mv_size);
			theirs[k.mv_size] = 0;
			if (strcmp(theirs, RT_TABLE) == 0 || strcmp(theirs, PENDING_TABLE) == 0 ||
			    mdb_dbi_open(txn, theirs, 0, &dbi) != 0)
				continue;
			foreign = 1;
			for (size_t i = 0; i < svc->ntables; i++)
				if (strcmp(theirs, svc->tnames[i]) == 0)
					foreign = 0;
		}
		mdb_cursor_close(cur);
		if (foreign) {
			funnel_log(FUNNEL_LOG_ERROR, "%s: view %s holds the table '%s', which %s does not "
			           "have: it belongs to another service; refused", svc->name, svc->view_dir,
			           theirs, svc->name);
			return -1;
		}
	} else {
		return rc;
	}
	if (claimed)
		return 0;           /* written nothing: a full map still opens */
	if ((rc = rt_put(svc, txn, "service", svc->name, strlen(svc->name))) != 0)
		return rc;
	return rt_put(svc, txn, "tables", mine, strlen(mine));
}

/* Open the environment, its tables and the committed state. */
static int
open_view(funnel_service *svc)
{
	MDB_txn *txn;
	int rc;

	char why[256];

	if (mkdir_p(svc->view_dir) != 0) {
		funnel_log(FUNNEL_LOG_ERROR, "%s: cannot create the view directory %s: %s", svc->name,
		           svc->view_dir, strerror(errno));
		return FUNNEL_ESTORAGE;
	}
	/* One writer per view, for the life of the service. */
	if ((svc->lock_fd = dirlock_take(svc->view_dir, svc->name, why, sizeof why)) < 0) {
		funnel_log(FUNNEL_LOG_ERROR, "%s: the view %s is %s: refused (one service per view)",
		           svc->name, svc->view_dir, why);
		return FUNNEL_ESTORAGE;
	}
	/* A new view appears in place only once its initial state is durable
	 * (under the lock: one process creates it). */
	if (fp_envfile_prepare(svc->view_dir, why, sizeof why) != 0) {
		funnel_log(FUNNEL_LOG_ERROR, "%s: view: %s", svc->name, why);
		return FUNNEL_ESTORAGE;
	}
	if ((rc = mdb_env_create(&svc->env)) != 0)
		return lmdb_fail(svc, rc, "create");
	mdb_env_set_maxdbs(svc->env, FUNNEL_SERVICE_MAX_TABLES + 2);
	mdb_env_set_mapsize(svc->env, svc->map_size);
	/* One fsync per commit, not two: a crash may undo the last commit
	 * (never corrupt the view), which replays from the checkpoint before
	 * it; the derived events of that replay are duplicates the log drops. */
	unsigned flags = MDB_NOTLS | MDB_NOMETASYNC | (svc->o.no_sync ? MDB_NOSYNC : 0);
	if ((rc = mdb_env_open(svc->env, svc->view_dir, flags, 0644)) != 0) {
		funnel_log(FUNNEL_LOG_ERROR, "%s: cannot open the view in %s: %s", svc->name,
		           svc->view_dir, mdb_strerror(rc));
		mdb_env_close(svc->env);
		svc->env = NULL;
		return FUNNEL_ESTORAGE;
	}
	/* An existing view may have grown past the size asked for. */
	MDB_envinfo info;
	mdb_env_info(svc->env, &info);
	svc->map_size = info.me_mapsize;

	if ((rc = mdb_txn_begin(svc->env, NULL, 0, &txn)) != 0)
		return lmdb_fail(svc, rc, "begin");
	rc = mdb_dbi_open(txn, RT_TABLE, MDB_CREATE, &svc->rt);
	if (rc == 0 && (rc = claim_view(svc, txn)) != 0) {
		mdb_txn_abort(txn);
		return rc < 0 ? FUNNEL_ESTORAGE : lmdb_fail(svc, rc, "record its owner");
	}
	if (rc == 0)
		rc = mdb_dbi_open(txn, PENDING_TABLE, MDB_CREATE, &svc->pend_dbi);
	for (size_t i = 0; i < svc->ntables && rc == 0; i++)
		rc = mdb_dbi_open(txn, svc->tnames[i], MDB_CREATE, &svc->dbi[i]);
	if (rc == 0)
		rc = mdb_txn_commit(txn);
	else
		mdb_txn_abort(txn);
	if (rc != 0)
		return lmdb_fail(svc, rc, "open the tables");
	if ((rc = grow_if_needed(svc, 0)) != FUNNEL_OK)
		return rc;
	if (svc->o.rebuild && (rc = rebuild_view(svc)) != FUNNEL_OK)
		return rc;
	return load_state(svc);
}

/* Double the map until at most half of it is used.  No transaction of
 * this process may be open. */
static int
grow_if_needed(funnel_service *svc, int force)
{
	MDB_envinfo info;
	MDB_stat st;

	mdb_env_info(svc->env, &info);
	mdb_env_stat(svc->env, &st);
	size_t used = (info.me_last_pgno + 1) * (size_t)st.ms_psize;
	if (!force && used * 2 < svc->map_size)
		return FUNNEL_OK;
	size_t want = svc->map_size * 2;
	while (used * 2 >= want)
		want *= 2;
	/* readers in other threads (opts.map_lock) must not see the map move */
	if (svc->o.map_lock)
		pthread_rwlock_wrlock(svc->o.map_lock);
	int rc = mdb_env_set_mapsize(svc->env, want);
	if (svc->o.map_lock)
		pthread_rwlock_unlock(svc->o.map_lock);
	if (rc != 0)
		return lmdb_fail(svc, rc, "grow the map");
	funnel_log(FUNNEL_LOG_INFO, "%s: view map grown to %zu KiB", svc->name, want >> 10);
	svc->map_size = want;
	return FUNNEL_OK;
}

/* ---- the feed ---- */

static int
open_feed(funnel_service *svc)
{
	funnel_sub_opts so = {
		.publish = svc->publish,
		.query = svc->query,
		.from = svc->checkpoint + 1,
		.live = !svc->o.until_head,
		.timeout_ms = svc->o.timeout_ms,
		.source = svc->source,
	};
	funnel_subscriber_destroy(&svc->sub);
	return funnel_subscriber_new(&svc->sub, &so);
}

/* ---- which log ---- */

static void
set_log_state(funnel_service *svc, enum log_state st, const char *why)
{
	pthread_mutex_lock(&svc->state_lock);
	svc->log_state = st;
	snprintf(svc->log_why, sizeof svc->log_why, "%s", why ? why : "");
	pthread_mutex_unlock(&svc->state_lock);
}

/*
 * Ask funneld whether it serves the log this view was built from: its
 * head must reach the checkpoint and its record at the checkpoint must
 * have the hash the view kept (committed with the checkpoint).  An
 * empty view fits any log.  Returns FUNNEL_OK (the view's own log),
 * FUNNEL_ECHAIN (another log: why says how it differs), or the error of
 * a funneld that did not answer (nothing is known).
 */
static int
check_log(funnel_service *svc, char *why, size_t whylen)
{
	funnel_status st;
	funnel_page page = { 0 };
	funnel_record rec;
	int rc;

	if (svc->checkpoint == 0)
		return FUNNEL_OK;
	if (svc->probe == NULL &&
	    (rc = funnel_query_new(&svc->probe, svc->query, PROBE_TIMEOUT_MS)) != FUNNEL_OK)
		return rc;
	if ((rc = funnel_status_get(svc->probe, &st)) != FUNNEL_OK)
		goto unanswered;
	if (st.head < svc->checkpoint) {
		snprintf(why, whylen, "its head is seq %" PRIu64 ", behind this view's checkpoint %"
		         PRIu64, st.head, svc->checkpoint);
		return FUNNEL_ECHAIN;
	}
	if (!svc->have_hash)
		return FUNNEL_OK;
	const uint8_t *hash = st.head_hash;
	if (st.head > svc->checkpoint) {
		funnel_replay_req req = { .from = svc->checkpoint, .to = svc->checkpoint, .limit = 1 };
		if ((rc = funnel_replay_page(svc->probe, &req, &page)) != FUNNEL_OK)
			goto unanswered;
		msgpack_zone_clear(&svc->zone);
		if (page.n != 1 ||
		    funnel_record_parse(page.recs[0], page.lens[0], &svc->zone, &rec) != FUNNEL_OK ||
		    rec.seq != svc->checkpoint) {
			funnel_page_release(&page);
			return FUNNEL_EPROTOCOL;
		}
		hash = rec.hash;
	}
	rc = memcmp(hash, svc->last_hash, FUNNEL_HASH_BYTES) == 0 ? FUNNEL_OK : FUNNEL_ECHAIN;
	funnel_page_release(&page);
	if (rc == FUNNEL_ECHAIN)
		snprintf(why, whylen, "its record %" PRIu64 " is not the one this view applied",
		         svc->checkpoint);
	return rc;
unanswered:
	/* a timed-out DEALER may hold a late reply: start afresh next time */
	funnel_query_destroy(&svc->probe);
	return rc;
}

/*
 * check_log and what follows from it: LOG_OWN, or LOG_OTHER (logged
 * once when it starts), or the state unchanged when funneld did not
 * answer.  Returns the new state.
 */
static enum log_state
probe_log(funnel_service *svc)
{
	char why[200], msg[sizeof svc->log_why];
	svc->next_probe = fl_now_ms() + PROBE_MS;
	int rc = check_log(svc, why, sizeof why);
	if (rc == FUNNEL_OK) {
		if (svc->log_state == LOG_OTHER)
			funnel_log(FUNNEL_LOG_INFO, "%s: funneld serves this view's log again; resuming at "
			           "seq %" PRIu64, svc->name, svc->checkpoint + 1);
		set_log_state(svc, LOG_OWN, NULL);
	} else if (rc == FUNNEL_ECHAIN) {
		snprintf(msg, sizeof msg, "funneld at %s serves a different log than the one this "
		         "view was built from: %s", svc->query, why);
		if (svc->log_state != LOG_OTHER)
			funnel_log(FUNNEL_LOG_ERROR, "%s: %s; nothing is applied or sent until the view's "
			           "own log is back (or rebuild the view: --rebuild)", svc->name, msg);
		set_log_state(svc, LOG_OTHER, msg);
	}
	return svc->log_state;
}

/* ---- derived events ---- */

static void
drop_pending(funnel_service *svc)
{
	for (size_t i = 0; i < svc->npend; i++)
		free(svc->pend[i].buf);
	svc->npend = 0;
	svc->unsent = 0;
	svc->done_upto = 0;
}

/* Copy ev into a pending entry with id "<name>:<cause>:<key>" (or `id`). */
static int
queue_event(funnel_service *svc, const funnel_event *ev, uint64_t cause, const char *key,
            const char *id, int cond, int with_prev)
{
	char idbuf[256];
	if (id == NULL) {
		int n = snprintf(idbuf, sizeof idbuf, "%s:%" PRIu64 ":%s", svc->name, cause, key);
		if (n < 0 || (size_t)n >= sizeof idbuf)
			return FUNNEL_EINVAL;
		id = idbuf;
	}
	if (svc->npend == svc->cappend) {
		size_t cap = svc->cappend ? svc->cappend * 2 : 64;
		pending *p = realloc(svc->pend, cap * sizeof *p);
		if (p == NULL)
			return FUNNEL_ENOMEM;
		svc->pend = p;
		svc->cappend = cap;
	}
	size_t lt = strlen(ev->type) + 1, ll = ev->lead ? strlen(ev->lead) + 1 : 0,
	       li = strlen(id) + 1;
	char *buf = malloc(lt + ll + li + ev->data_len + 1);
	if (buf == NULL)
		return FUNNEL_ENOMEM;
	pending *p = &svc->pend[svc->npend++];
	memset(p, 0, sizeof *p);
	p->ev = *ev;
	p->buf = buf;
	p->ev.type = memcpy(buf, ev->type, lt);
	buf += lt;
	if (ll) {
		p->ev.lead = memcpy(buf, ev->lead, ll);
		buf += ll;
	}
	p->ev.id = memcpy(buf, id, li);
	buf += li;
	if (ev->data_len)
		p->ev.data = memcpy(buf, ev->data, ev->data_len);
	p->ev.cause = cause;
	p->cond = cond;
	p->with_prev = with_prev;
	svc->unsent++;
	return FUNNEL_OK;
}

/* A daemon code that is the log's decision about the event itself
 * (resending the same event gets the same answer).  EIDCONFLICT: the log
 * holds another event under the derived key (derived before a restart
 * under other rules, say); the first copy stands, as for a duplicate. */
static int
is_refusal(int code)
{
	return (code >= FUNNEL_EMALFORMED && code <= FUNNEL_EVERSION) || code == FUNNEL_EIDCONFLICT;
}

/* How the log settled a derived event: S_STORED (a new record),
 * S_DUPLICATE (acked with dup: its id was in the log already, e.g. sent
 * by a run stopped before its checkpoint), S_REFUSED, S_OVERRIDDEN. */
enum { S_STORED, S_DUPLICATE, S_REFUSED, S_OVERRIDDEN };

static void
settle(funnel_service *svc, pending *p, int how)
{
	p->state = P_DONE;
	svc->unsent--;
	if (how == S_DUPLICATE)
		svc->stats.duplicates++;
	else if (how == S_OVERRIDDEN)
		svc->stats.overridden++;
	else if (how == S_REFUSED)
		svc->stats.refused++;
	else
		svc->stats.emitted++;
}

/* Send entry i and the entries chained to it (with_prev) in one request.
 * Returns how many it sent (0: not sent, retry later). */
static size_t
send_chain(funnel_service *svc, size_t i)
{
	funnel_event evs[MAX_CHAIN];
	size_t n = 0;
	uint64_t rid;

	do
		evs[n] = svc->pend[i + n].ev;
	while (++n < MAX_CHAIN && i + n < svc->npend && svc->pend[i + n].with_prev);
	if (funnel_send(svc->prod, evs, n, &rid) != FUNNEL_OK)
		return 0;
	for (size_t j = i; j < i + n; j++) {
		svc->pend[j].state = P_SENT;
		svc->pend[j].rid = rid;
	}
	return n;
}

/*
 * Move derived events along: mark those already sent before a rebuild,
 * send unsent ones while the window has room (one event per request, so a
 * refusal concerns that event only), and take the replies that are in.
 * With wait, keep at it until every event is stored or refused, retrying
 * transient failures (timeouts, transport, ESTORAGE, ESHUTDOWN) with the
 * same ids after a growing pause.  Returns FUNNEL_OK, or FUNNEL_ESHUTDOWN
 * when stopped before all were settled.
 */
static int
pump(funnel_service *svc, int wait)
{
	int backoff = 50;

	for (;;) {
		while (svc->done_upto < svc->npend && svc->pend[svc->done_upto].state == P_DONE)
			svc->done_upto++;
		int retry = 0;
		for (size_t i = svc->done_upto; i < svc->npend && !retry; i++) {
			pending *p = &svc->pend[i];
			if (p->state != P_UNSENT)
				continue;
			if (p->ev.cause != 0 && p->ev.cause <= svc->watermark) {
				p->state = P_DONE;
				svc->unsent--;
				svc->stats.skipped++;
				continue;
			}
			if (funnel_in_flight(svc->prod) >= SEND_WINDOW)
				break;
			size_t sent = send_chain(svc, i);
			if (sent == 0)
				retry = 1;
			else
				i += sent - 1;
		}
		/* replies, in arrival order; the first wait is bounded */
		while (!retry && funnel_in_flight(svc->prod) > 0) {
			uint64_t rid;
			funnel_ack acks[MAX_CHAIN];
			size_t nacks = 0;
			int crc = funnel_collect(svc->prod, wait ? svc->o.timeout_ms : 0, &rid, acks,
			                         MAX_CHAIN, &nacks);
			if (crc == FUNNEL_ETIMEDOUT && !wait)
				break;
			if (crc == FUNNEL_ETIMEDOUT || crc == FUNNEL_ETRANSPORT || crc == FUNNEL_EINVAL) {
				retry = 1;
				break;
			}
			size_t i;
			for (i = svc->done_upto; i < svc->npend; i++)
				if (svc->pend[i].state == P_SENT && svc->pend[i].rid == rid)
					break;
			if (i == svc->npend)
				continue;       /* a reply to an abandoned request */
			/* the request's events: entry i and those chained to it */
			size_t end = i + 1;
			while (end < svc->npend && svc->pend[end].with_prev && svc->pend[end].rid == rid)
				end++;
			pending *p = &svc->pend[i];
			if (crc == FUNNEL_OK) {
				for (size_t j = i; j < end; j++)
					settle(svc, &svc->pend[j],
					       j - i < nacks && acks[j - i].dup ? S_DUPLICATE : S_STORED);
			} else if (crc == FUNNEL_EVERSION && p->cond) {
				/* Someone wrote to the lead after the record this was
				 * decided on: a person acted first.  Dropped for good
				 * (its expected version is past); the view learns it
				 * from the log (funnel_service_dropped). */
				uint64_t nover = svc->stats.overridden + 1;
				if (nover <= 5 || nover % 1000 == 0)
					funnel_log(FUNNEL_LOG_INFO, "%s: %s for lead %s (decided on seq %" PRIu64
					           ") dropped: the lead changed first (%" PRIu64 " dropped so far)",
					           svc->name, p->ev.type, p->ev.lead ? p->ev.lead : "-",
					           p->ev.cause, nover);
				for (size_t j = i; j < end; j++)
					settle(svc, &svc->pend[j], S_OVERRIDDEN);
			} else if (is_refusal(crc)) {
				/* The first few in full, then a count now and then:
				 * a backfill over old history can meet thousands. */
				const funnel_error_info *ei = funnel_producer_error(svc->prod);
				uint64_t nref = svc->stats.refused + 1;
				if (nref <= 5 || nref % 1000 == 0)
					funnel_log(FUNNEL_LOG_INFO, "%s: the log refused %s for lead %s (cause %"
					           PRIu64 "): %s %s (%" PRIu64 " refused so far)", svc->name,
					           p->ev.type, p->ev.lead ? p->ev.lead : "-", p->ev.cause,
					           funnel_errname(crc), ei->message, nref);
				for (size_t j = i; j < end; j++)
					settle(svc, &svc->pend[j], S_REFUSED);
			} else {
				for (size_t j = i; j < end; j++)
					svc->pend[j].state = P_UNSENT;    /* ESTORAGE, ESHUTDOWN, ...: again */
				retry = 1;
			}
			if (!wait)
				continue;
			if (svc->unsent == 0)
				break;
			/* room in the window again: send more before waiting */
			if (funnel_in_flight(svc->prod) < SEND_WINDOW / 2)
				break;
		}
		if (svc->unsent == 0)
			return FUNNEL_OK;
		if (!retry) {
			if (!wait)
				return FUNNEL_OK;
			continue;
		}
		/* Outcome unknown or refused for now: forget what is in flight
		 * and send it all again, same ids, after a pause. */
		funnel_abandon(svc->prod);
		while (funnel_in_flight(svc->prod) > 0 &&
		       funnel_collect(svc->prod, 0, NULL, NULL, 0, NULL) != FUNNEL_ETIMEDOUT)
			;
		for (size_t i = svc->done_upto; i < svc->npend; i++)
			if (svc->pend[i].state == P_SENT)
				svc->pend[i].state = P_UNSENT;
		if (svc->stop)
			return FUNNEL_ESHUTDOWN;
		funnel_log(FUNNEL_LOG_WARN, "%s: %zu derived events not stored yet (%s); retrying",
		           svc->name, svc->unsent, funnel_producer_error(svc->prod)->message);
		for (int waited = 0; waited < backoff && !svc->stop; waited += 10)
			nap_ms(10);
		if (backoff < 2000)
			backoff *= 2;
		if (!wait)
			return FUNNEL_OK;
	}
}

/* ---- batches ---- */

static int
begin_batch(funnel_service *svc)
{
	int rc = grow_if_needed(svc, 0);
	if (rc != FUNNEL_OK)
		return rc;
	if ((rc = mdb_txn_begin(svc->env, NULL, 0, &svc->txn)) != 0) {
		svc->txn = NULL;
		return lmdb_fail(svc, rc, "begin a batch");
	}
	svc->batch_n = 0;
	svc->map_full = 0;
	return FUNNEL_OK;
}

static void
abort_batch(funnel_service *svc)
{
	if (svc->txn)
		mdb_txn_abort(svc->txn);
	svc->txn = NULL;
	svc->batch_n = 0;
	drop_pending(svc);
}

/* The batch hit a full map: throw it away, grow, and read its records
 * again from the checkpoint. */
static int
retry_bigger(funnel_service *svc)
{
	abort_batch(svc);
	int rc = grow_if_needed(svc, 1);
	if (rc == FUNNEL_OK)
		rc = open_feed(svc);
	return rc;
}

/* Send the batch's derived events, then checkpoint and commit.
 * FUNNEL_ESHUTDOWN: stopped while sending; nothing committed. */
static int
commit_batch(funnel_service *svc)
{
	int rc;

	if (svc->txn == NULL)
		return FUNNEL_OK;
	if (svc->batch_n == 0) {
		mdb_txn_abort(svc->txn);
		svc->txn = NULL;
		return FUNNEL_OK;
	}
	if (!svc->o.no_emit && (rc = pump(svc, 1)) != FUNNEL_OK)
		return rc;
	rc = rt_put_u64(svc, svc->txn, "checkpoint", svc->cur);
	if (rc == 0)
		rc = rt_put(svc, svc->txn, "last_hash", svc->cur_hash, FUNNEL_HASH_BYTES);
	if (rc == 0)
		rc = mdb_txn_commit(svc->txn);
	else
		mdb_txn_abort(svc->txn);
	svc->txn = NULL;
	if (rc != 0) {
		lmdb_fail(svc, rc, "commit");
		if (svc->map_full)
			return retry_bigger(svc);
		return FUNNEL_ESTORAGE;
	}
	drop_pending(svc);
	svc->checkpoint = svc->cur;
	memcpy(svc->last_hash, svc->cur_hash, FUNNEL_HASH_BYTES);
	svc->have_hash = 1;
	svc->batch_n = 0;
	svc->stats.commits++;
	return FUNNEL_OK;
}

/*
 * Before apply(): the fate of a decision pending on rec's lead.  The
 * runtime sent it with the lead's version at its cause, so the log
 * stored it only if no other record named the lead in between: the next
 * record naming the lead is either that event (the decision stands) or
 * another one (the log dropped it: svc->dropped, for apply() to read).
 * Live and on a rebuild the log is the same, so is the verdict.
 */
static int
check_pending(funnel_service *svc, const funnel_record *rec)
{
	MDB_val k = { rec->lead.len, (void *)rec->lead.ptr }, v;
	char prefix[128];

	svc->dropped = 0;
	if (rec->lead.ptr == NULL || rec->lead.len == 0)
		return FUNNEL_OK;
	int rc = mdb_get(svc->txn, svc->pend_dbi, &k, &v);
	if (rc == MDB_NOTFOUND)
		return FUNNEL_OK;
	if (rc != 0)
		return lmdb_fail(svc, rc, "read a pending decision");
	uint64_t cause = v.mv_size >= 8 ? get_be64(v.mv_data) : 0;
	int n = snprintf(prefix, sizeof prefix, "%s:%" PRIu64 ":", svc->name, cause);
	int ours = rec->has_cause && rec->cause == cause && rec->id.ptr != NULL && n > 0 &&
	           rec->id.len > (size_t)n && memcmp(rec->id.ptr, prefix, (size_t)n) == 0;
	if (!ours && v.mv_size >= 8) {
		size_t len = v.mv_size - 8;
		if (len > svc->dropped_cap) {
			uint8_t *b = realloc(svc->dropped_undo, len);
			if (b == NULL)
				return FUNNEL_ENOMEM;
			svc->dropped_undo = b;
			svc->dropped_cap = len;
		}
		if (len)
			memcpy(svc->dropped_undo, (const uint8_t *)v.mv_data + 8, len);
		svc->dropped_len = len;
		svc->dropped_cause = cause;
		svc->dropped = 1;
	}
	rc = mdb_del(svc->txn, svc->pend_dbi, &k, NULL);
	return rc == 0 ? FUNNEL_OK : lmdb_fail(svc, rc, "settle a pending decision");
}

/* Apply one delivered record inside the batch. */
static int
apply_record(funnel_service *svc, const uint8_t *buf, size_t len)
{
	funnel_record rec;

	msgpack_zone_clear(&svc->zone);
	int rc = funnel_record_parse(buf, len, &svc->zone, &rec);
	if (rc != FUNNEL_OK) {
		funnel_log(FUNNEL_LOG_ERROR, "%s: a record from the log does not parse (%s)",
		           svc->name, funnel_errname(rc));
		return FUNNEL_EPROTOCOL;
	}
	const uint8_t *prev_hash = svc->batch_n > 0 ? svc->cur_hash
	                         : svc->have_hash ? svc->last_hash : NULL;
	if (prev_hash && memcmp(rec.prev, prev_hash, FUNNEL_HASH_BYTES) != 0) {
		funnel_log(FUNNEL_LOG_ERROR, "%s: record %" PRIu64 " does not chain to the last record "
		           "this view applied: the view was built from another log; rebuild it",
		           svc->name, rec.seq);
		return FUNNEL_ECHAIN;
	}
	if ((rc = check_pending(svc, &rec)) != FUNNEL_OK)
		return rc;
	svc->applying = rec.seq;
	svc->applying_rec = &rec;
	rc = svc->apply(svc, &rec, svc->ctx);
	svc->applying = 0;
	svc->applying_rec = NULL;
	svc->dropped = 0;
	if (rc != FUNNEL_OK)
		return rc;
	if (svc->batch_n++ == 0)
		svc->batch_deadline = fl_now_ms() + svc->o.batch_ms;
	svc->cur = rec.seq;
	memcpy(svc->cur_hash, rec.hash, FUNNEL_HASH_BYTES);
	svc->stats.applied++;
	return FUNNEL_OK;
}

/* Call opts.tick on the committed view when it is due (see
 * funnel_tick_fn).  No batch may be open. */
static int
maybe_tick(funnel_service *svc)
{
	MDB_txn *txn;
	int64_t now = fl_now_ms();

	if (svc->o.tick == NULL || svc->o.until_head || svc->o.no_emit || !svc->caught_up ||
	    now < svc->next_tick)
		return FUNNEL_OK;
	if (!svc->feed_idle && now < svc->next_tick + 10 * (int64_t)svc->o.tick_ms)
		return FUNNEL_OK;
	svc->next_tick = now + svc->o.tick_ms;
	int rc = mdb_txn_begin(svc->env, NULL, MDB_RDONLY, &txn);
	if (rc != 0)
		return lmdb_fail(svc, rc, "begin a read for the tick");
	rc = svc->o.tick(svc, txn, svc->ctx);
	mdb_txn_abort(txn);
	return rc == FUNNEL_ESHUTDOWN ? FUNNEL_OK : rc;
}

static int
write_ready(funnel_service *svc)
{
	char tmp[4200];
	if (svc->ready_file == NULL)
		return FUNNEL_OK;
	snprintf(tmp, sizeof tmp, "%s.tmp", svc->ready_file);
	FILE *f = fopen(tmp, "w");
	if (f == NULL)
		return FUNNEL_ESTORAGE;
	fprintf(f, "service=%s\nview=%s\ncheckpoint=%" PRIu64 "\npid=%d\n", svc->name,
	        svc->view_dir, svc->checkpoint, (int)getpid());
	if (fclose(f) != 0 || rename(tmp, svc->ready_file) != 0)
		return FUNNEL_ESTORAGE;
	return FUNNEL_OK;
}

/* ---- public ---- */

int
funnel_service_new(funnel_service **out, const funnel_service_opts *opts, funnel_apply_fn apply,
                   void *ctx)
{
	int rc;

	if (out == NULL)
		return FUNNEL_EINVAL;
	*out = NULL;
	if (opts == NULL || opts->name == NULL || opts->view_dir == NULL || apply == NULL ||
	    opts->name[0] == 0 || strlen(opts->name) > 64)
		return FUNNEL_EINVAL;
	if (sodium_init() < 0)
		return FUNNEL_EINTERNAL;
	funnel_service *svc = calloc(1, sizeof *svc);
	if (svc == NULL)
		return FUNNEL_ENOMEM;
	svc->o = *opts;
	svc->apply = apply;
	svc->ctx = ctx;
	svc->lock_fd = -1;
	pthread_mutex_init(&svc->state_lock, NULL);
	/* before anything that may fail: destroy releases the zone */
	msgpack_zone_init(&svc->zone, 4096);
	svc->name = strdup(opts->name);
	svc->view_dir = strdup(opts->view_dir);
	svc->ingest = dup_or_null(opts->ingest);
	svc->publish = dup_or_null(opts->publish);
	svc->query = dup_or_null(opts->query);
	svc->ready_file = dup_or_null(opts->ready_file);
	svc->source = dup_or_null(opts->source);
	for (size_t i = 0; i < FUNNEL_SERVICE_MAX_TABLES && opts->tables[i]; i++) {
		if (strcmp(opts->tables[i], RT_TABLE) == 0 || strcmp(opts->tables[i], PENDING_TABLE) == 0) {
			funnel_service_destroy(&svc);
			return FUNNEL_EINVAL;
		}
		svc->tnames[svc->ntables++] = strdup(opts->tables[i]);
	}
	if (svc->o.batch_events == 0)
		svc->o.batch_events = 10000;
	if (svc->o.batch_ms <= 0)
		svc->o.batch_ms = 100;
	if (svc->o.timeout_ms <= 0)
		svc->o.timeout_ms = FL_DEFAULT_TIMEOUT_MS;
	if (svc->o.tick_ms <= 0)
		svc->o.tick_ms = 1000;
	svc->map_size = opts->map_size ? opts->map_size : DEFAULT_MAP;
	if (svc->source != NULL) {
		/* a URL that does not parse is the caller's mistake, said as such
		 * (the subscriber would report it only at its first read) */
		funnel_error_info ei;
		if ((rc = fl_nats_check_url(svc->source, &ei)) != FUNNEL_OK) {
			if (rc == FUNNEL_EINVAL)
				funnel_log(FUNNEL_LOG_ERROR, "%s: --source %s: %s", svc->name ? svc->name :
				           "service", svc->source, ei.message);
			funnel_service_destroy(&svc);
			return rc;
		}
	}
	if (svc->name == NULL || svc->view_dir == NULL) {
		funnel_service_destroy(&svc);
		return FUNNEL_ENOMEM;
	}
	for (size_t i = 0; i < svc->ntables; i++) {
		if (svc->tnames[i] == NULL) {
			funnel_service_destroy(&svc);
			return FUNNEL_ENOMEM;
		}
	}
	if ((rc = open_view(svc)) != FUNNEL_OK ||
	    (rc = funnel_producer_new(&svc->prod, svc->ingest, svc->o.timeout_ms)) != FUNNEL_OK ||
	    (rc = funnel_query_new(&svc->q, svc->query, svc->o.timeout_ms)) != FUNNEL_OK ||
	    (rc = open_feed(svc)) != FUNNEL_OK) {
		funnel_service_destroy(&svc);
		return rc;
	}
	/* Before the caller can send anything (rules.changed): is funneld
	 * serving the view's log?  Unreachable is waited for later. */
	if (probe_log(svc) == LOG_OTHER) {
		funnel_service_destroy(&svc);
		return FUNNEL_ECHAIN;
	}
	funnel_set_window(svc->prod, SEND_WINDOW);
	*out = svc;
	return FUNNEL_OK;
}

void
funnel_service_destroy(funnel_service **psvc)
{
	if (psvc == NULL || *psvc == NULL)
		return;
	funnel_service *svc = *psvc;
	abort_batch(svc);
	free(svc->pend);
	free(svc->dropped_undo);
	funnel_subscriber_destroy(&svc->sub);
	funnel_producer_destroy(&svc->prod);
	funnel_query_destroy(&svc->q);
	funnel_query_destroy(&svc->probe);
	if (svc->env)
		mdb_env_close(svc->env);
	if (svc->lock_fd >= 0)
		close(svc->lock_fd);       /* after the environment: the lock covers it */
	pthread_mutex_destroy(&svc->state_lock);
	msgpack_zone_destroy(&svc->zone);
	for (size_t i = 0; i < svc->ntables; i++)
		free(svc->tnames[i]);
	free(svc->name);
	free(svc->view_dir);
	free(svc->ingest);
	free(svc->publish);
	free(svc->query);
	free(svc->ready_file);
	free(svc->source);
	free(svc);
	*psvc = NULL;
}

void
funnel_service_stop(funnel_service *svc)
{
	if (svc)
		svc->stop = 1;
}

int
funnel_service_run(funnel_service *svc)
{
	const uint8_t *buf;
	size_t len;
	int rc, quiet_errors = 0;

	if (svc == NULL)
		return FUNNEL_EINVAL;
	if (write_ready(svc) != FUNNEL_OK)
		funnel_log(FUNNEL_LOG_WARN, "%s: cannot write the ready file %s", svc->name,
		           svc->ready_file);
	funnel_log(FUNNEL_LOG_INFO, "%s: view %s at seq %" PRIu64 "; following the log%s",
	           svc->name, svc->view_dir, svc->checkpoint, svc->o.until_head ? " to its head" : "");
	for (;;) {
		if (svc->stop) {
			rc = commit_batch(svc);
			abort_batch(svc);
			return rc == FUNNEL_ESHUTDOWN ? FUNNEL_OK : rc;
		}
		/* Between batches, now and then: does funneld still serve the
		 * view's log?  A funneld restarted on another data directory
		 * is invisible to the sockets, which reconnect by themselves.
		 * While it serves another log, nothing is applied or sent. */
		if (svc->txn == NULL && fl_now_ms() >= svc->next_probe) {
			enum log_state was = svc->log_state;
			if (probe_log(svc) == LOG_OWN && was == LOG_OTHER &&
			    (rc = open_feed(svc)) != FUNNEL_OK)
				return rc;
		}
		if (svc->log_state == LOG_OTHER) {
			if (svc->o.until_head)
				return FUNNEL_ECHAIN;
			nap_ms(100);
			continue;
		}
		if (svc->txn == NULL && ((rc = maybe_tick(svc)) != FUNNEL_OK ||
		                         (rc = begin_batch(svc)) != FUNNEL_OK))
			return rc;

		/* Idle: wake up now and then to see the stop flag.  With
		 * records applied: wait for more until the batch is old. */
		int wait = svc->batch_n > 0 ? (int)fl_left_ms(svc->batch_deadline) : 200;
		rc = funnel_subscriber_next(svc->sub, wait, &buf, &len);
		/* nothing more right now, not a history page on its way */
		svc->feed_idle = rc == FUNNEL_ETIMEDOUT && funnel_subscriber_live(svc->sub);
		svc->caught_up |= svc->feed_idle;
		if (rc == FUNNEL_OK) {
			quiet_errors = 0;
			rc = apply_record(svc, buf, len);
			if (rc != FUNNEL_OK) {
				if (svc->map_full) {
					if ((rc = retry_bigger(svc)) != FUNNEL_OK)
						return rc;
					continue;
				}
				abort_batch(svc);
				if (rc == FUNNEL_ECHAIN && !svc->o.until_head) {
					/* another log: wait for the view's own (probe_log) */
					set_log_state(svc, LOG_OTHER, "funneld serves a different log than the "
					              "one this view was built from: a record does not chain to "
					              "the view's last one");
					svc->next_probe = fl_now_ms() + PROBE_MS;
					continue;
				}
				return rc;
			}
			/* Derived events leave at once (their latency is one
			 * trip to funneld, never a view commit); the commit
			 * waits for the log to have them all. */
			if (!svc->o.no_emit && svc->unsent > 0)
				pump(svc, 0);
			if (svc->batch_n < svc->o.batch_events && fl_now_ms() < svc->batch_deadline)
				continue;
		} else if (rc == FUNNEL_ENOTFOUND) {
			/* until_head: the head is applied */
			rc = commit_batch(svc);
			abort_batch(svc);
			if (rc == FUNNEL_OK)
				funnel_log(FUNNEL_LOG_INFO, "%s: at the head (seq %" PRIu64 ")", svc->name,
				           svc->checkpoint);
			return rc == FUNNEL_ESHUTDOWN ? FUNNEL_OK : rc;
		} else if (rc == FUNNEL_EINVAL) {
			const funnel_error_info *ei = funnel_subscriber_error(svc->sub);
			abort_batch(svc);
			if (strcmp(ei->field, "source") == 0) {
				/* the source itself is wrong, not the view's log */
				funnel_log(FUNNEL_LOG_ERROR, "%s: --source %s: %s", svc->name,
				           svc->source ? svc->source : "", ei->message);
				return FUNNEL_EINVAL;
			}
			if (!svc->o.until_head) {
				/* another log: wait for the view's own (probe_log) */
				svc->next_probe = 0;
				probe_log(svc);
				continue;
			}
			funnel_log(FUNNEL_LOG_ERROR, "%s: the view is at seq %" PRIu64 ", past the log's "
			           "head: it was built from another log; rebuild it (%s)", svc->name,
			           svc->checkpoint, ei->message);
			return FUNNEL_ECHAIN;
		} else if (rc != FUNNEL_ETIMEDOUT) {
			/* funneld away or restarting: the subscriber keeps its
			 * position; say it once, then wait and go on. */
			if (quiet_errors++ == 0)
				funnel_log(FUNNEL_LOG_WARN, "%s: reading the log: %s %s", svc->name,
				           funnel_errname(rc), funnel_subscriber_error(svc->sub)->message);
			nap_ms(100);
		}
		if ((rc = commit_batch(svc)) != FUNNEL_OK) {
			if (rc == FUNNEL_ESHUTDOWN)
				continue;
			abort_batch(svc);
			return rc;
		}
	}
}

MDB_txn *
funnel_service_txn(funnel_service *svc)
{
	return svc ? svc->txn : NULL;
}

MDB_dbi
funnel_service_table(funnel_service *svc, const char *name)
{
	for (size_t i = 0; svc && i < svc->ntables; i++)
		if (strcmp(svc->tnames[i], name) == 0)
			return svc->dbi[i];
	return 0;
}

int
funnel_service_get(funnel_service *svc, MDB_dbi dbi, const void *key, size_t klen,
                   const void **val, size_t *vlen)
{
	MDB_val k = { klen, (void *)key }, v;
	int rc = mdb_get(svc->txn, dbi, &k, &v);
	if (rc == MDB_NOTFOUND)
		return FUNNEL_ENOTFOUND;
	if (rc != 0)
		return lmdb_fail(svc, rc, "get");
	*val = v.mv_data;
	*vlen = v.mv_size;
	return FUNNEL_OK;
}

int
funnel_service_put(funnel_service *svc, MDB_dbi dbi, const void *key, size_t klen,
                   const void *val, size_t vlen)
{
	MDB_val k = { klen, (void *)key }, v = { vlen, (void *)val };
	int rc = mdb_put(svc->txn, dbi, &k, &v, 0);
	return rc == 0 ? FUNNEL_OK : lmdb_fail(svc, rc, "put");
}

int
funnel_service_del(funnel_service *svc, MDB_dbi dbi, const void *key, size_t klen)
{
	MDB_val k = { klen, (void *)key };
	int rc = mdb_del(svc->txn, dbi, &k, NULL);
	if (rc == MDB_NOTFOUND)
		return FUNNEL_OK;
	return rc == 0 ? FUNNEL_OK : lmdb_fail(svc, rc, "delete");
}

int
funnel_service_emit_decision(funnel_service *svc, const funnel_event *ev, const char *key,
                             const void *undo, size_t undo_len)
{
	if (svc == NULL || ev == NULL || ev->type == NULL || key == NULL || svc->applying == 0 ||
	    (undo == NULL && undo_len > 0))
		return FUNNEL_EINVAL;
	const funnel_record *rec = svc->applying_rec;
	funnel_event c = *ev;
	int cond = !ev->has_expected_version && ev->lead != NULL && rec->lead.ptr != NULL &&
	           rec->has_version && strlen(ev->lead) == rec->lead.len &&
	           memcmp(ev->lead, rec->lead.ptr, rec->lead.len) == 0;
	int with_prev = 0;
	if (cond) {
		/* The events one record derives for its lead chain their
		 * versions (v, v+1, ...) and travel in one request: all or
		 * none, so none can land after another writer's event. */
		c.has_expected_version = 1;
		c.expected_version = rec->version;
		for (size_t i = svc->npend; i-- > 0;) {
			const pending *q = &svc->pend[i];
			if (q->ev.cause != svc->applying)
				break;
			if (q->cond && strcmp(q->ev.lead, ev->lead) == 0) {
				/* one after the other, and at most MAX_CHAIN */
				if (i + 1 != svc->npend || q->ev.expected_version + 1 - rec->version >= MAX_CHAIN)
					return FUNNEL_EINVAL;
				c.expected_version = q->ev.expected_version + 1;
				with_prev = 1;
				break;
			}
		}
	}
	int rc = queue_event(svc, &c, svc->applying, key, NULL, cond, with_prev);
	if (rc != FUNNEL_OK || !cond || (with_prev && undo_len == 0))
		return rc;
	/* The decision is pending until the log shows its fate: the next
	 * record that names the lead is its own event, or someone else's. */
	uint8_t stackbuf[512];
	uint8_t *val = 8 + undo_len <= sizeof stackbuf ? stackbuf : malloc(8 + undo_len);
	if (val == NULL)
		return FUNNEL_ENOMEM;
	put_be64(val, svc->applying);
	if (undo_len)
		memcpy(val + 8, undo, undo_len);
	MDB_val k = { rec->lead.len, (void *)rec->lead.ptr }, v = { 8 + undo_len, val };
	int mrc = mdb_put(svc->txn, svc->pend_dbi, &k, &v, 0);
	if (val != stackbuf)
		free(val);
	return mrc == 0 ? FUNNEL_OK : lmdb_fail(svc, mrc, "keep a pending decision");
}

int
funnel_service_emit(funnel_service *svc, const funnel_event *ev, const char *key)
{
	if (svc == NULL || ev == NULL || ev->type == NULL || key == NULL || svc->applying == 0)
		return FUNNEL_EINVAL;
	return queue_event(svc, ev, svc->applying, key, NULL, 0, 0);
}

int
funnel_service_dropped(const funnel_service *svc, uint64_t *cause, const void **undo,
                       size_t *undo_len)
{
	if (svc == NULL || svc->applying == 0 || !svc->dropped)
		return 0;
	if (cause)
		*cause = svc->dropped_cause;
	if (undo)
		*undo = svc->dropped_undo;
	if (undo_len)
		*undo_len = svc->dropped_len;
	return 1;
}

int
funnel_service_send(funnel_service *svc, const funnel_event *ev, funnel_ack *ack)
{
	int backoff = 50;

	if (svc == NULL || ev == NULL || ev->type == NULL)
		return FUNNEL_EINVAL;
	if (svc->o.no_emit)
		return FUNNEL_OK;
	for (;;) {
		/* never into another log: ask first, each time (sends outside
		 * apply() are rare: rules.changed, a tick's decision) */
		int rc = FUNNEL_ETRANSPORT;
		enum log_state ls = probe_log(svc);
		if (ls == LOG_OTHER)
			return FUNNEL_ECHAIN;
		if (ls == LOG_OWN)
			rc = funnel_publish(svc->prod, ev, 1, ack);
		if (rc == FUNNEL_OK || is_refusal(rc) || rc == FUNNEL_ENOMEM || rc == FUNNEL_EINVAL)
			return rc;
		if (svc->stop)
			return FUNNEL_ESHUTDOWN;
		funnel_log(FUNNEL_LOG_WARN, "%s: sending %s: %s %s; retrying", svc->name, ev->type,
		           funnel_errname(rc), ls == LOG_OWN ? funnel_producer_error(svc->prod)->message
		           : "funneld does not answer");
		for (int waited = 0; waited < backoff && !svc->stop; waited += 10)
			nap_ms(10);
		if (backoff < 2000)
			backoff *= 2;
	}
}

int
funnel_service_log_state(funnel_service *svc, char *why, size_t whylen)
{
	if (svc == NULL)
		return FUNNEL_EINVAL;
	pthread_mutex_lock(&svc->state_lock);
	int other = svc->log_state == LOG_OTHER;
	if (other && why != NULL && whylen > 0)
		snprintf(why, whylen, "%s", svc->log_why);
	pthread_mutex_unlock(&svc->state_lock);
	return other ? FUNNEL_ECHAIN : FUNNEL_OK;
}

uint64_t
funnel_service_checkpoint(const funnel_service *svc)
{
	return svc ? svc->checkpoint : 0;
}

funnel_query *
funnel_service_query(funnel_service *svc)
{
	return svc ? svc->q : NULL;
}

MDB_env *
funnel_service_env(funnel_service *svc)
{
	return svc ? svc->env : NULL;
}

void
funnel_service_stats_get(const funnel_service *svc, funnel_service_stats *st)
{
	if (svc && st)
		*st = svc->stats;
}

/* ---- digest ---- */

static void
hash_item(crypto_generichash_state *h, const void *p, size_t n)
{
	uint8_t len[8];
	put_be64(len, n);
	crypto_generichash_update(h, len, 8);
	crypto_generichash_update(h, p, n);
}

int
funnel_view_digest(const char *view_dir, uint8_t digest[32], uint64_t *checkpoint)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi main_dbi, dbi;
	MDB_cursor *names = NULL, *cur = NULL;
	MDB_val k, v;
	crypto_generichash_state h;
	char path[4200], name[512];
	int rc;

	snprintf(path, sizeof path, "%s/data.mdb", view_dir);
	if (access(path, F_OK) != 0)
		return FUNNEL_ENOTFOUND;
	if (sodium_init() < 0 || mdb_env_create(&env) != 0)
		return FUNNEL_ESTORAGE;
	mdb_env_set_maxdbs(env, FUNNEL_SERVICE_MAX_TABLES + 2);
	if (mdb_env_open(env, view_dir, MDB_RDONLY | MDB_NOTLS, 0644) != 0 ||
	    mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0) {
		mdb_env_close(env);
		return FUNNEL_ESTORAGE;
	}
	crypto_generichash_init(&h, NULL, 0, 32);
	rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
	if (rc == 0)
		rc = mdb_cursor_open(txn, main_dbi, &names);
	/* The main table lists the named tables, in name order. */
	for (int op = MDB_FIRST; rc == 0; op = MDB_NEXT) {
		rc = mdb_cursor_get(names, &k, &v, op);
		if (rc != 0)
			break;
		if (k.mv_size >= sizeof name)
			continue;
		memcpy(name, k.mv_data, k.mv_size);
		name[k.mv_size] = 0;
		if (mdb_dbi_open(txn, name, 0, &dbi) != 0)
			continue;       /* a plain key of the main table, not a table */
		if (strcmp(name, RT_TABLE) == 0) {
			MDB_val ck = { 10, "checkpoint" }, cv;
			uint64_t cp = 0;
			if (mdb_get(txn, dbi, &ck, &cv) == 0 && cv.mv_size == 8)
				cp = get_be64(cv.mv_data);
			if (checkpoint)
				*checkpoint = cp;
			uint8_t b[8];
			put_be64(b, cp);
			hash_item(&h, "checkpoint", 10);
			hash_item(&h, b, 8);
			continue;
		}
		hash_item(&h, name, strlen(name));
		if ((rc = mdb_cursor_open(txn, dbi, &cur)) != 0)
			break;
		MDB_val tk, tv;
		for (int top = MDB_FIRST; mdb_cursor_get(cur, &tk, &tv, top) == 0; top = MDB_NEXT) {
			hash_item(&h, tk.mv_data, tk.mv_size);
			hash_item(&h, tv.mv_data, tv.mv_size);
		}
		mdb_cursor_close(cur);
	}
	if (names)
		mdb_cursor_close(names);
	mdb_txn_abort(txn);
	mdb_env_close(env);
	if (rc != 0 && rc != MDB_NOTFOUND)
		return FUNNEL_ESTORAGE;
	crypto_generichash_final(&h, digest, 32);
	return FUNNEL_OK;
}

int
funnel_view_checkpoint(const char *view_dir, uint64_t *checkpoint)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = { 10, "checkpoint" }, v;
	char path[4200];
	int rc = FUNNEL_ESTORAGE;

	if (view_dir == NULL || checkpoint == NULL)
		return FUNNEL_EINVAL;
	*checkpoint = 0;
	snprintf(path, sizeof path, "%s/data.mdb", view_dir);
	if (access(path, F_OK) != 0)
		return FUNNEL_ENOTFOUND;
	if (mdb_env_create(&env) != 0)
		return FUNNEL_ESTORAGE;
	mdb_env_set_maxdbs(env, FUNNEL_SERVICE_MAX_TABLES + 1);
	if (mdb_env_open(env, view_dir, MDB_RDONLY | MDB_NOTLS, 0644) == 0 &&
	    mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) == 0) {
		int got = mdb_dbi_open(txn, RT_TABLE, 0, &dbi);
		if (got == 0)
			got = mdb_get(txn, dbi, &k, &v);
		if (got == 0 && v.mv_size == 8)
			*checkpoint = get_be64(v.mv_data);
		/* a view opened but never committed has no checkpoint yet: 0 */
		rc = got == 0 || got == MDB_NOTFOUND ? FUNNEL_OK : FUNNEL_ESTORAGE;
		mdb_txn_abort(txn);
	}
	mdb_env_close(env);
	return rc;
}
