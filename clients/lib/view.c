/*
 * clients/lib/view.c - the service runtime's view (funnel/service.h;
 * runtime.h says how the runtime's files divide the work): the LMDB
 * environment in the view directory, its owner and tables, map growth,
 * rebuild, get/put/del and the store over the batch's transaction,
 * read-only readers, the digest and the checkpoint.
 *
 * The runtime's table FUNNEL_SERVICE_RUNTIME_TABLE holds "checkpoint"
 * and "watermark" (8-byte big-endian), "last_hash", "service" and
 * "tables" (the owner, see claim_view).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <sodium.h>

#include "bytes.h"
#include "dirlock.h"
#include "envfile.h"
#include "funnel/log.h"
#include "runtime.h"

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

int
sr_lmdb_fail(funnel_service *svc, int rc, const char *what)
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

/* ---- the runtime table ---- */

static int
runtime_get(funnel_service *svc, MDB_txn *txn, const char *key, MDB_val *v)
{
	MDB_val k = { strlen(key), (void *)key };
	return mdb_get(txn, svc->rt, &k, v);
}

int
sr_runtime_put(funnel_service *svc, MDB_txn *txn, const char *key, const void *val, size_t len)
{
	MDB_val k = { strlen(key), (void *)key }, v = { len, (void *)val };
	return mdb_put(txn, svc->rt, &k, &v, 0);
}

int
sr_runtime_put_u64(funnel_service *svc, MDB_txn *txn, const char *key, uint64_t x)
{
	uint8_t b[8];
	fp_put_be64(b, x);
	return sr_runtime_put(svc, txn, key, b, 8);
}

static uint64_t
runtime_get_u64(funnel_service *svc, MDB_txn *txn, const char *key)
{
	MDB_val v;
	if (runtime_get(svc, txn, key, &v) != 0 || v.mv_size != 8)
		return 0;
	return fp_get_be64(v.mv_data);
}

/* Read the committed state into svc. */
static int
load_state(funnel_service *svc)
{
	MDB_txn *txn;
	MDB_val v;
	int rc = mdb_txn_begin(svc->env, NULL, MDB_RDONLY, &txn);
	if (rc != 0)
		return sr_lmdb_fail(svc, rc, "read the checkpoint");
	svc->checkpoint = runtime_get_u64(svc, txn, "checkpoint");
	svc->watermark = runtime_get_u64(svc, txn, "watermark");
	svc->have_hash = runtime_get(svc, txn, "last_hash", &v) == 0 && v.mv_size == FUNNEL_HASH_BYTES;
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
		return sr_lmdb_fail(svc, rc, "begin the rebuild");
	uint64_t cp = runtime_get_u64(svc, txn, "checkpoint");
	uint64_t wm = runtime_get_u64(svc, txn, "watermark");
	for (size_t i = 0; i < svc->ntables && rc == 0; i++)
		rc = mdb_drop(txn, svc->dbi[i], 0);
	if (rc == 0)
		rc = mdb_drop(txn, svc->pend_dbi, 0);
	if (rc == 0)
		rc = sr_runtime_put_u64(svc, txn, "watermark", cp > wm ? cp : wm);
	if (rc == 0)
		rc = sr_runtime_put_u64(svc, txn, "checkpoint", 0);
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
		return sr_lmdb_fail(svc, rc, "rebuild");
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
		if ((rc = sr_grow_map(svc, 1)) != FUNNEL_OK)
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
	rc = runtime_get(svc, txn, "service", &v);
	if (rc == 0) {
		if (v.mv_size != strlen(svc->name) || memcmp(v.mv_data, svc->name, v.mv_size) != 0) {
			funnel_log(FUNNEL_LOG_ERROR, "%s: view %s belongs to %.*s: refused (give each "
			           "service a view of its own)", svc->name, svc->view_dir,
			           (int)(v.mv_size > 64 ? 64 : v.mv_size), (const char *)v.mv_data);
			return -1;
		}
		if ((rc = runtime_get(svc, txn, "tables", &v)) != 0 && rc != MDB_NOTFOUND)
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
			if (strcmp(theirs, FUNNEL_SERVICE_RUNTIME_TABLE) == 0 || strcmp(theirs, PENDING_TABLE) == 0 ||
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
	if ((rc = sr_runtime_put(svc, txn, "service", svc->name, strlen(svc->name))) != 0)
		return rc;
	return sr_runtime_put(svc, txn, "tables", mine, strlen(mine));
}

/* Open the environment, its tables and the committed state. */
int
sr_open_view(funnel_service *svc)
{
	MDB_txn *txn;
	int rc;

	char why[256];

	/* funneld's data directory is no view: refused before the lock, so
	 * nothing is made in it */
	if (fp_is_log_dir(svc->view_dir)) {
		funnel_log(FUNNEL_LOG_ERROR, "%s: %s is funneld's data directory (it holds the log's "
		           "journal), not a view: refused (give the service a directory of its own)",
		           svc->name, svc->view_dir);
		return FUNNEL_ESTORAGE;
	}
	if (dirlock_mkdir_p(svc->view_dir) != 0) {
		funnel_log(FUNNEL_LOG_ERROR, "%s: cannot create the view directory %s: %s", svc->name,
		           svc->view_dir, strerror(errno));
		return FUNNEL_ESTORAGE;
	}
	/* One writer per view, for the life of the service. */
	if ((svc->lock_fd = dirlock_take(svc->view_dir, svc->name, why, sizeof why)) < 0) {
		/* dirlock.h: "in use by ..." when another process holds it, else
		 * the system's reason */
		if (strncmp(why, "in use by ", 10) == 0)
			funnel_log(FUNNEL_LOG_ERROR, "%s: the view %s is %s: refused (one service per "
			           "view)", svc->name, svc->view_dir, why);
		else
			funnel_log(FUNNEL_LOG_ERROR, "%s: the view %s cannot be locked: %s", svc->name,
			           svc->view_dir, why);
		return FUNNEL_ESTORAGE;
	}
	/* A new view appears in place only once its initial state is durable
	 * (under the lock: one process creates it). */
	if (fp_envfile_prepare(svc->view_dir, why, sizeof why) != 0) {
		funnel_log(FUNNEL_LOG_ERROR, "%s: view: %s", svc->name, why);
		return FUNNEL_ESTORAGE;
	}
	if ((rc = mdb_env_create(&svc->env)) != 0)
		return sr_lmdb_fail(svc, rc, "create");
	mdb_env_set_maxdbs(svc->env, VIEW_MAXDBS);
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
		return sr_lmdb_fail(svc, rc, "begin");
	rc = mdb_dbi_open(txn, FUNNEL_SERVICE_RUNTIME_TABLE, MDB_CREATE, &svc->rt);
	if (rc == 0 && (rc = claim_view(svc, txn)) != 0) {
		mdb_txn_abort(txn);
		return rc < 0 ? FUNNEL_ESTORAGE : sr_lmdb_fail(svc, rc, "record its owner");
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
		return sr_lmdb_fail(svc, rc, "open the tables");
	if ((rc = sr_grow_map(svc, 0)) != FUNNEL_OK)
		return rc;
	if (svc->o.rebuild && (rc = rebuild_view(svc)) != FUNNEL_OK)
		return rc;
	return load_state(svc);
}

/* Double the map until at most half of it is used.  No transaction of
 * this process may be open. */
int
sr_grow_map(funnel_service *svc, int force)
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
		return sr_lmdb_fail(svc, rc, "grow the map");
	funnel_log(FUNNEL_LOG_INFO, "%s: view map grown to %zu KiB", svc->name, want >> 10);
	svc->map_size = want;
	return FUNNEL_OK;
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
		return sr_lmdb_fail(svc, rc, "get");
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
	return rc == 0 ? FUNNEL_OK : sr_lmdb_fail(svc, rc, "put");
}

int
funnel_service_del(funnel_service *svc, MDB_dbi dbi, const void *key, size_t klen)
{
	MDB_val k = { klen, (void *)key };
	int rc = mdb_del(svc->txn, dbi, &k, NULL);
	if (rc == MDB_NOTFOUND)
		return FUNNEL_OK;
	return rc == 0 ? FUNNEL_OK : sr_lmdb_fail(svc, rc, "delete");
}
/* ---- the store ---- */

static int
store_get(void *ctx, int t, const void *k, size_t kl, const void **v, size_t *vl)
{
	funnel_service *svc = ctx;
	if (t < 0 || (size_t)t >= svc->ntables)
		return FUNNEL_EINVAL;
	return funnel_service_get(svc, svc->dbi[t], k, kl, v, vl);
}

static int
store_put(void *ctx, int t, const void *k, size_t kl, const void *v, size_t vl)
{
	funnel_service *svc = ctx;
	if (t < 0 || (size_t)t >= svc->ntables)
		return FUNNEL_EINVAL;
	return funnel_service_put(svc, svc->dbi[t], k, kl, v, vl);
}

static int
store_del(void *ctx, int t, const void *k, size_t kl)
{
	funnel_service *svc = ctx;
	if (t < 0 || (size_t)t >= svc->ntables)
		return FUNNEL_EINVAL;
	return funnel_service_del(svc, svc->dbi[t], k, kl);
}

void
sr_store_init(funnel_service *svc)
{
	svc->store = (funnel_store){ svc, store_get, store_put, store_del };
}

const funnel_store *
funnel_service_store(funnel_service *svc)
{
	return svc ? &svc->store : NULL;
}

MDB_dbi
funnel_service_runtime_table(funnel_service *svc)
{
	return svc ? svc->rt : 0;
}

/* ---- read-only ---- */

/*
 * The one read-only open of a view (the reader, the digest, the
 * checkpoint): the environment with room for every table a view may hold
 * (the service's, the runtime's two) and one read transaction.  Returns
 * 0 or LMDB's code (nothing left open).
 */
static int
open_readonly(const char *view_dir, MDB_env **env, MDB_txn **txn)
{
	int rc = mdb_env_create(env);
	if (rc != 0)
		return rc;
	mdb_env_set_maxdbs(*env, VIEW_MAXDBS);
	if ((rc = mdb_env_open(*env, view_dir, MDB_RDONLY | MDB_NOTLS, 0644)) == 0 &&
	    (rc = mdb_txn_begin(*env, NULL, MDB_RDONLY, txn)) == 0)
		return 0;
	mdb_env_close(*env);
	*env = NULL;
	return rc;
}

static int
reader_get(void *ctx, int t, const void *k, size_t kl, const void **v, size_t *vl)
{
	funnel_view_reader *r = ctx;
	MDB_val key = { kl, (void *)k }, val;
	if (t < 0 || (size_t)t >= r->ntables)
		return FUNNEL_EINVAL;
	int rc = mdb_get(r->txn, r->dbi[t], &key, &val);
	if (rc == MDB_NOTFOUND)
		return FUNNEL_ENOTFOUND;
	if (rc != 0)
		return FUNNEL_ESTORAGE;
	*v = val.mv_data;
	*vl = val.mv_size;
	return FUNNEL_OK;
}

static int
reader_put(void *ctx, int t, const void *k, size_t kl, const void *v, size_t vl)
{
	(void)ctx, (void)t, (void)k, (void)kl, (void)v, (void)vl;
	return FUNNEL_EINVAL;
}

static int
reader_del(void *ctx, int t, const void *k, size_t kl)
{
	(void)ctx, (void)t, (void)k, (void)kl;
	return FUNNEL_EINVAL;
}

int
funnel_view_reader_open(funnel_view_reader *r, const char *view_dir, const char *const *tables,
                        char *why, size_t whylen)
{
	int rc;

	if (r == NULL)
		return FUNNEL_EINVAL;
	memset(r, 0, sizeof *r);
	if (view_dir == NULL || tables == NULL)
		return FUNNEL_EINVAL;
	for (size_t n = 0; tables[n] != NULL; n++)
		if (n == FUNNEL_SERVICE_MAX_TABLES + 1) {
			if (why && whylen)
				snprintf(why, whylen, "more than %d tables", FUNNEL_SERVICE_MAX_TABLES + 1);
			return FUNNEL_EINVAL;
		}
	if ((rc = open_readonly(view_dir, &r->env, &r->txn)) != 0) {
		if (why && whylen)
			snprintf(why, whylen, "%s", mdb_strerror(rc));
		return FUNNEL_ESTORAGE;
	}
	for (; tables[r->ntables] != NULL; r->ntables++) {
		if (mdb_dbi_open(r->txn, tables[r->ntables], 0, &r->dbi[r->ntables]) != 0) {
			if (why && whylen)
				snprintf(why, whylen, "no table '%s'", tables[r->ntables]);
			funnel_view_reader_close(r);
			return FUNNEL_ENOTFOUND;
		}
	}
	r->store = (funnel_store){ r, reader_get, reader_put, reader_del };
	return FUNNEL_OK;
}

void
funnel_view_reader_close(funnel_view_reader *r)
{
	if (r == NULL)
		return;
	if (r->txn)
		mdb_txn_abort(r->txn);
	if (r->env)
		mdb_env_close(r->env);
	memset(r, 0, sizeof *r);
}

/* ---- digest ---- */

static void
hash_item(crypto_generichash_state *h, const void *p, size_t n)
{
	uint8_t len[8];
	fp_put_be64(len, n);
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
	if (sodium_init() < 0 || open_readonly(view_dir, &env, &txn) != 0)
		return FUNNEL_ESTORAGE;
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
		if (strcmp(name, FUNNEL_SERVICE_RUNTIME_TABLE) == 0) {
			MDB_val ck = { 10, "checkpoint" }, cv;
			uint64_t cp = 0;
			if (mdb_get(txn, dbi, &ck, &cv) == 0 && cv.mv_size == 8)
				cp = fp_get_be64(cv.mv_data);
			if (checkpoint)
				*checkpoint = cp;
			uint8_t b[8];
			fp_put_be64(b, cp);
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

/*
 * One value of a view's runtime table, read-only: up to cap bytes of it
 * copied to out and its whole size to *len (0 when the view has no
 * runtime table or no such key: a view opened but never committed, or
 * from before the key was kept).  Returns FUNNEL_OK, FUNNEL_ENOTFOUND (no
 * view there) or FUNNEL_ESTORAGE.
 */
static int
runtime_value(const char *view_dir, const char *key, void *out, size_t cap, size_t *len)
{
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = { strlen(key), (void *)key }, v;
	char path[4200];
	int rc = FUNNEL_ESTORAGE;

	*len = 0;
	snprintf(path, sizeof path, "%s/data.mdb", view_dir);
	if (access(path, F_OK) != 0)
		return FUNNEL_ENOTFOUND;
	if (open_readonly(view_dir, &env, &txn) == 0) {
		int got = mdb_dbi_open(txn, FUNNEL_SERVICE_RUNTIME_TABLE, 0, &dbi);
		if (got == 0)
			got = mdb_get(txn, dbi, &k, &v);
		if (got == 0) {
			memcpy(out, v.mv_data, v.mv_size < cap ? v.mv_size : cap);
			*len = v.mv_size;
		}
		rc = got == 0 || got == MDB_NOTFOUND ? FUNNEL_OK : FUNNEL_ESTORAGE;
		mdb_txn_abort(txn);
		mdb_env_close(env);
	}
	return rc;
}

int
funnel_view_owner(const char *view_dir, char *name, size_t cap)
{
	size_t n;

	if (view_dir == NULL || name == NULL || cap == 0)
		return FUNNEL_EINVAL;
	int rc = runtime_value(view_dir, "service", name, cap - 1, &n);
	name[n < cap - 1 ? n : cap - 1] = '\0';   /* n is 0 when rc is not FUNNEL_OK */
	return rc;
}

int
funnel_view_checkpoint(const char *view_dir, uint64_t *checkpoint)
{
	uint8_t b[8];
	size_t n;

	if (view_dir == NULL || checkpoint == NULL)
		return FUNNEL_EINVAL;
	int rc = runtime_value(view_dir, "checkpoint", b, sizeof b, &n);
	*checkpoint = rc == FUNNEL_OK && n == 8 ? fp_get_be64(b) : 0;   /* none committed yet: 0 */
	return rc;
}

