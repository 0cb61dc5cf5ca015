/*
 * daemon/store.c - the LMDB log and its indexes.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#include "bytes.h"
#include "clock.h"
#include "envfile.h"
#include "journal.h"
#include "log.h"
#include "model.h"
#include "mp.h"
#include "store.h"

/* Layout of a lead's state in the leads table; the owner's bytes follow. */
struct lead_rec {
	uint8_t stage;
	uint8_t pad[7];
	uint64_t version;
	uint64_t last_seq;
};

/* The second part of a key in the leads table (see store.h). */
enum { LEAD_HISTORY = 0x00, LEAD_STATE = 0x01 };
#define LEAD_KEY_MAX (FP_MAX_LEAD_BYTES + 1 + 8)

/* Build the key lead 0x01 (state) or lead 0x00 seq (history) in buf. */
static MDB_val
lead_key(unsigned char buf[LEAD_KEY_MAX], const char *lead, size_t len, int kind, uint64_t seq)
{
	MDB_val k = { len + 1, buf };
	memcpy(buf, lead, len);
	buf[len] = (unsigned char)kind;
	if (kind == LEAD_HISTORY) {
		fp_put_be64(buf + len + 1, seq);
		k.mv_size += 8;
	}
	return k;
}

static int checkpoint(store *s, int flush_meta);

/* A lead id as events carry it: no byte below 0x20, which is what keeps
 * one lead's keys apart from another's.  A query may name any bytes; one
 * that no event could carry matches nothing (PROTOCOL.md, replay). */
static int
lead_ok(const char *lead, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)lead[i] < 0x20)
			return 0;
	return len > 0 && len <= FP_MAX_LEAD_BYTES;
}

/* The seq of a history key of this lead, or 0 when k is another key. */
static uint64_t
history_seq(const MDB_val *k, const char *lead, size_t len)
{
	const unsigned char *b = k->mv_data;
	if (k->mv_size != len + 9 || b[len] != LEAD_HISTORY || memcmp(b, lead, len) != 0)
		return 0;
	return fp_get_be64(b + len + 1);
}

/* Move c by op (from *k for a seek) to a history key of this lead: 0 and
 * *seq, MDB_NOTFOUND past the lead's last one, or an LMDB error. */
static int
history_step(MDB_cursor *c, MDB_val *k, MDB_cursor_op op, const char *lead, size_t len,
             uint64_t *seq)
{
	MDB_val v;
	int rc = mdb_cursor_get(c, k, &v, op);
	if (rc != 0)
		return rc;
	*seq = history_seq(k, lead, len);
	return *seq ? 0 : MDB_NOTFOUND;
}

static int
mkdir_p(const char *path)
{
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
				return -1;
			*p = '/';
		}
	}
	if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
		return -1;
	return 0;
}

static int
meta_get(store *s, MDB_txn *txn, const char *key, MDB_val *v)
{
	MDB_val k = { strlen(key), (void *)key };
	return mdb_get(txn, s->meta, &k, v);
}

static int
meta_put(store *s, MDB_txn *txn, const char *key, const void *val, size_t len)
{
	MDB_val k = { strlen(key), (void *)key };
	MDB_val v = { len, (void *)val };
	return mdb_put(txn, s->meta, &k, &v, 0);
}

/* Read the head (seq, ts, hash) from the last record and the lead count
 * from meta; no scan.  The head hash stored in meta is not compared here:
 * `funnel verify` walks the chain. */
static int
load_head(store *s, MDB_txn *txn, char *why, size_t whylen)
{
	MDB_val v;
	int rc = store_head(s, txn, &s->head_seq);
	if (rc != 0) {
		snprintf(why, whylen, "cannot read the log's head: %s", mdb_strerror(rc));
		return -1;
	}
	memset(s->head_hash, 0, sizeof s->head_hash);
	s->head_ts = 0;
	if ((rc = store_lead_count(s, txn, &s->head_leads)) != 0) {
		snprintf(why, whylen, "cannot read the log's lead count: %s", mdb_strerror(rc));
		return -1;
	}
	if (s->head_seq == 0)
		return 0;
	if ((rc = store_record_get(s, txn, s->head_seq, &v)) != 0 ||
	    v.mv_size < FUNNEL_HASH_BYTES ||
	    funnel_record_peek(v.mv_data, v.mv_size, NULL, &s->head_ts) != FUNNEL_OK) {
		snprintf(why, whylen, "the last record (seq %llu) is unreadable",
		         (unsigned long long)s->head_seq);
		return -1;
	}
	memcpy(s->head_hash, (const uint8_t *)v.mv_data + v.mv_size - FUNNEL_HASH_BYTES,
	       FUNNEL_HASH_BYTES);
	return 0;
}

/* ---- the journal's replay at open ------------------------------------- */

/* What replay() carries from one journal entry to the next. */
typedef struct replay_ctx {
	store *s;
	store_wtxn w;
	msgpack_zone zone;
	uint64_t head, ts, leads;
	uint8_t hash[FUNNEL_HASH_BYTES];
	uint64_t first;           /* the first seq replayed, 0 before one */
	char *why;
	size_t whylen;
} replay_ctx;

#define REPLAY_REFUSED (-30000)   /* not an LMDB code: why says it */

static int
replay_entry(void *arg, uint64_t first_seq, uint32_t count, const uint8_t *const *recs,
             const uint32_t *lens)
{
	replay_ctx *c = arg;
	const char *jp = journal_path(c->s->journal);
	int rc;

	if (first_seq > c->head + 1) {
		snprintf(c->why, c->whylen, "the journal %s does not continue the log: it holds seqs from "
		         "%llu, the log's head is %llu (seqs %llu to %llu are missing); nothing was "
		         "changed: restore the data directory from a backup, or move the journal away "
		         "to start from the log alone", jp, (unsigned long long)first_seq,
		         (unsigned long long)c->head, (unsigned long long)c->head + 1,
		         (unsigned long long)first_seq - 1);
		return REPLAY_REFUSED;
	}
	for (uint32_t i = 0; i < count; i++) {
		uint64_t seq = first_seq + i;
		funnel_record r;
		if (seq <= c->head)
			continue;   /* checkpointed already */
		msgpack_zone_clear(&c->zone);
		if (funnel_record_parse(recs[i], lens[i], &c->zone, &r) != FUNNEL_OK || r.seq != seq ||
		    !funnel_record_hash_ok(recs[i], lens[i]) ||
		    memcmp(r.prev, c->hash, FUNNEL_HASH_BYTES) != 0) {
			snprintf(c->why, c->whylen, "the journal %s does not continue the log: its record "
			         "of seq %llu %s the log's head %llu; nothing was changed: restore the data "
			         "directory from a backup, or move the journal away to start from the log "
			         "alone", jp, (unsigned long long)seq,
			         r.seq != seq ? "is unreadable or misplaced after" : "does not chain to",
			         (unsigned long long)c->head);
			return REPLAY_REFUSED;
		}
		store_lead st;
		int found = 0;
		memset(&st, 0, sizeof st);
		if (r.lead.ptr != NULL) {
			rc = store_lead_find(&c->w, r.lead.ptr, r.lead.len, &st);
			if (rc != 0 && rc != MDB_NOTFOUND)
				return rc;
			found = rc == 0;
			if (st.version == 0)
				c->leads++;
			int stage = r.stage.ptr ? fp_stage_parse(r.stage.ptr, r.stage.len) : -1;
			store_lead_after(&st, fp_evspec_lookup(r.type.ptr, r.type.len),
			                 stage < 0 ? FP_STAGE_NONE : (fp_stage)stage, r.version, seq, r.data);
		}
		if ((rc = store_append(&c->w, seq, recs[i], lens[i], r.lead.ptr, r.lead.len, &st,
		                       r.id.ptr, r.id.len, found)) != 0)
			return rc;
		memcpy(c->hash, r.hash, FUNNEL_HASH_BYTES);
		c->head = seq;
		c->ts = r.ts;
		if (c->first == 0)
			c->first = seq;
	}
	return 0;
}

/*
 * Rebuild the tail from data.mdb and the journal: a new tail
 * transaction, the head read from data.mdb (its last checkpoint), the
 * journal's lap replayed past it (replay_entry).  The lap is continued
 * when it ends at the head (at_open: and records were replayed from
 * it), else a new one starts (the records it holds are all in data.mdb
 * then).  Returns 0 (s->head_* and the tail set), or -1 with why
 * (REPLAY_REFUSED: nothing changed; else the tail is gone).  A full map
 * grows and the replay is redone.
 */
static int
rebuild_tail(store *s, int at_open, char *why, size_t whylen)
{
	replay_ctx c;
	uint64_t lap, end;
	int rc;

	memset(&c, 0, sizeof c);
	if (!msgpack_zone_init(&c.zone, 4096)) {
		snprintf(why, whylen, "out of memory replaying the journal");
		return -1;
	}
	pthread_mutex_lock(&s->tail_lock);
	store_wtxn_abort(&s->tail);
	for (;;) {
		c.s = s;
		c.why = why;
		c.whylen = whylen;
		c.first = 0;
		if ((rc = store_wtxn_begin(s, NULL, &s->tail)) != 0)
			break;
		/* the head of the last checkpoint */
		if (load_head(s, s->tail.txn, why, whylen) != 0) {
			rc = REPLAY_REFUSED;
			break;
		}
		s->ckpt_seq = s->head_seq;
		c.head = s->head_seq;
		c.ts = s->head_ts;
		c.leads = s->head_leads;
		memcpy(c.hash, s->head_hash, FUNNEL_HASH_BYTES);
		c.w = s->tail;
		rc = journal_scan(s->journal, c.head, replay_entry, &c, &lap, &end);
		if (rc == -1)
			rc = errno;
		if (rc == 0 && c.first != 0)
			rc = store_put_head(s, s->tail.txn, c.head, c.hash, c.leads);
		if (rc == MDB_MAP_FULL) {
			store_wtxn_abort(&s->tail);
			/* store_grow takes resize_lock, which readers take before
			 * tail_lock: let go of tail_lock meanwhile (readers that come
			 * wait for the tail, store_read_begin) */
			pthread_mutex_unlock(&s->tail_lock);
			int grown = store_grow(s);
			pthread_mutex_lock(&s->tail_lock);
			if (grown == 0)
				continue;
		}
		break;
	}
	msgpack_zone_destroy(&c.zone);
	/* before any later durable seq is raised (store_set_durable's lock
	 * orders it for the query thread) */
	__atomic_add_fetch(&s->tail_epoch, 1, __ATOMIC_SEQ_CST);
	if (rc != 0) {
		store_wtxn_abort(&s->tail);
		pthread_mutex_unlock(&s->tail_lock);
		if (rc == EPROTO)
			snprintf(why, whylen, "the journal %s is not of format %d (another funneld's?); "
			         "nothing was changed: start the funneld that wrote it, or move the journal "
			         "away to start from the log alone", journal_path(s->journal), JOURNAL_FORMAT);
		else if (rc != REPLAY_REFUSED)
			snprintf(why, whylen, "cannot replay the journal %s into the log: %s",
			         journal_path(s->journal), rc > 0 ? strerror(rc) : mdb_strerror(rc));
		return -1;
	}
	if (c.first != 0) {
		store_set_head(s, c.head, c.ts, c.hash, c.leads);
		log_info("replayed seqs %llu to %llu from the journal %s",
		        (unsigned long long)c.first, (unsigned long long)c.head, journal_path(s->journal));
	}
	if (lap == 0 || end != s->head_seq + 1 || (at_open && c.first == 0)) {
		/* the journal holds nothing past data.mdb's head (replayed
		 * nothing): a new lap may overwrite it once that head is on
		 * the disk (a checkpoint's meta page may not be yet).  At the
		 * open such a lap is not continued even when it ends at the
		 * head: past where its scan ended there may be whole entries
		 * of the same lap that an earlier run wrote (a journal copied
		 * by a backup while it was appended, a --no-sync run's
		 * writeback out of order), and an entry appended that ends
		 * where one of them starts would look like its next one to
		 * the next scan.  (A rebuild while running continues what this
		 * run wrote, which has nothing past its end, or a lap the open
		 * continued: see below.) */
		if (s->durable && s->synced_seq < s->ckpt_seq) {
			if ((rc = store_sync(s)) != 0) {
				s->broken = 1;
				store_wtxn_abort(&s->tail);
				pthread_mutex_unlock(&s->tail_lock);
				snprintf(why, whylen, "cannot flush the log: %s", strerror(rc));
				return -1;
			}
			s->synced_seq = s->ckpt_seq;
		}
		journal_new_lap(s->journal, s->head_seq + 1);
		s->lap_inherited = 0;
	} else if (at_open) {
		/* records replayed, and a new lap would overwrite the older
		 * lap, which may hold some too: continued until the open's
		 * checkpoint starts a new one, which it does unless it fails */
		s->lap_inherited = 1;
	} else if (s->lap_inherited) {
		/* the open's checkpoint failed (a full disk or map): the
		 * writer appends to the lap the open continued, so whatever an
		 * earlier run left past its end goes first (the stale entries
		 * above) */
		if ((rc = journal_clear_rest(s->journal)) != 0) {
			s->broken = 1;
			store_wtxn_abort(&s->tail);
			pthread_mutex_unlock(&s->tail_lock);
			snprintf(why, whylen, "cannot clear the journal %s past its end: %s",
			         journal_path(s->journal), strerror(rc));
			return -1;
		}
		s->lap_inherited = 0;
	}
	s->tail_seq = s->head_seq;
	s->tail_since_ns = clock_now_ns();
	s->tail_events = s->head_seq - s->ckpt_seq;
	s->tail_bytes = 0;
	pthread_mutex_unlock(&s->tail_lock);
	return 0;
}

int
store_open(store *s, const char *path, size_t map_size, size_t max_map_size, size_t journal_size,
           int durable, char *why, size_t whylen)
{
	MDB_txn *txn = NULL;
	MDB_val v;
	int rc;
	unsigned flags = MDB_NOTLS;

	memset(s, 0, sizeof *s);
	pthread_rwlock_init(&s->resize_lock, NULL);
	pthread_mutex_init(&s->tail_lock, NULL);
	pthread_mutex_init(&s->durable_lock, NULL);
	pthread_cond_init(&s->durable_cond, NULL);
	s->watch_fd = -1;
	snprintf(s->path, sizeof s->path, "%s", path);
	s->max_map_size = max_map_size;
	s->durable = durable;
	/* a checkpoint flushes its pages, then its meta page (store_sync) */
	flags |= durable ? MDB_NOMETASYNC : MDB_NOSYNC;
	if (mkdir_p(path) != 0) {
		snprintf(why, whylen, "cannot create data directory %s: %s", path, strerror(errno));
		goto fail;
	}
	/* The absolute path, as status reports it: `funnel backup` run from
	 * another directory opens it. */
	{
		char abs[PATH_MAX];
		if (realpath(path, abs) != NULL)
			snprintf(s->path, sizeof s->path, "%s", abs);
	}
	/* A new log appears in place only once its initial state is durable. */
	if (fp_envfile_prepare(path, why, whylen) != 0)
		goto fail;
	if ((rc = mdb_env_create(&s->env)) != 0 ||
	    (rc = mdb_env_set_maxdbs(s->env, FP_LOG_MAX_TABLES)) != 0 ||
	    (rc = mdb_env_set_maxreaders(s->env, 126)) != 0) {
		snprintf(why, whylen, "lmdb: %s", mdb_strerror(rc));
		goto fail;
	}
	if (max_map_size && map_size > max_map_size)
		map_size = max_map_size;
	if ((rc = mdb_env_set_mapsize(s->env, map_size)) != 0 ||
	    (rc = mdb_env_open(s->env, path, flags, 0644)) != 0) {
		snprintf(why, whylen, "cannot open the log in %s: %s", path, mdb_strerror(rc));
		goto fail;
	}
	/* An existing file larger than map_size: LMDB adopts the file's size. */
	MDB_envinfo info;
	mdb_env_info(s->env, &info);
	s->map_size = info.me_mapsize;
	/* every page the meta says is in use is in the file, before any read
	 * (a cut copy would be a SIGBUS, envfile.h) */
	if (fp_envfile_whole(s->env, path, why, whylen) != 0) {
		size_t n = strlen(why);
		snprintf(why + n, whylen - n, " (restore it from a backup)");
		goto fail;
	}

	/* The format first: the other tables mean something else in another. */
	if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0 ||
	    (rc = mdb_dbi_open(txn, FP_META_TABLE, MDB_CREATE, &s->meta)) != 0) {
		snprintf(why, whylen, "cannot open the log's tables: %s", mdb_strerror(rc));
		goto fail;
	}
	rc = meta_get(s, txn, FP_META_FORMAT, &v);
	if (rc == MDB_NOTFOUND) {
		uint32_t format = STORE_FORMAT;
		uint64_t created = clock_now_ns();
		if ((rc = meta_put(s, txn, FP_META_FORMAT, &format, sizeof format)) != 0 ||
		    (rc = meta_put(s, txn, "created", &created, sizeof created)) != 0) {
			snprintf(why, whylen, "cannot initialise the log: %s", mdb_strerror(rc));
			goto fail;
		}
	} else if (rc != 0) {
		snprintf(why, whylen, "cannot read the log's format: %s", mdb_strerror(rc));
		goto fail;
	} else {
		uint32_t format;
		if (v.mv_size != sizeof format) {
			snprintf(why, whylen, "%s is not a funnel log (bad format record)", path);
			goto fail;
		}
		memcpy(&format, v.mv_data, sizeof format);
		if (format != STORE_FORMAT) {
			snprintf(why, whylen, "%s holds a log in format %u; this funneld reads format %u "
			         "only and does not convert: start it on a new data directory",
			         path, format, STORE_FORMAT);
			goto fail;
		}
	}
	if ((rc = mdb_dbi_open(txn, FP_LOG_TABLE, MDB_CREATE | MDB_INTEGERKEY, &s->log)) != 0 ||
	    (rc = mdb_dbi_open(txn, "idem", MDB_CREATE, &s->idem)) != 0 ||
	    (rc = mdb_dbi_open(txn, "leads", MDB_CREATE, &s->leads)) != 0) {
		snprintf(why, whylen, "cannot open the log's tables: %s", mdb_strerror(rc));
		goto fail;
	}
	if (load_head(s, txn, why, whylen) != 0)
		goto fail;
	rc = mdb_txn_commit(txn);
	txn = NULL;   /* ended either way */
	if (rc != 0) {
		snprintf(why, whylen, "cannot initialise the log: %s", mdb_strerror(rc));
		goto fail;
	}
	/* what a previous run committed last may have its meta page
	 * unflushed; flushed even with --no-sync, whose checkpoints overwrite
	 * the journal's lap that holds a durable run's acknowledged events */
	if ((rc = store_sync(s)) != 0) {
		snprintf(why, whylen, "cannot flush the log in %s: %s", path, strerror(rc));
		goto fail;
	}
	s->synced_seq = s->head_seq;
	/* the journal's records past the head: replayed, then checkpointed;
	 * on a full disk they stay in the tail (acked events are served from
	 * it; the next checkpoint that finds room takes them) */
	if ((s->journal = journal_open(s->path, journal_size, durable, why, whylen)) == NULL ||
	    rebuild_tail(s, 1, why, whylen) != 0)
		goto fail;
	if ((rc = checkpoint(s, 1)) != 0) {
		if (s->tail.txn == NULL) {
			snprintf(why, whylen, "cannot checkpoint the log in %s: %s", path,
			         rc > 0 ? strerror(rc) : mdb_strerror(rc));
			goto fail;
		}
		log_warn("cannot checkpoint the log in %s (%s): the journal's events "
		        "are served from memory until a checkpoint succeeds", path,
		        rc > 0 ? strerror(rc) : mdb_strerror(rc));
	}
	s->durable_seq = s->head_seq;
	s->durable_leads = s->head_leads;
	return 0;
fail:
	if (txn != NULL)
		mdb_txn_abort(txn);
	store_release(s);
	return -1;
}

void
store_release(store *s)
{
	if (s->env != NULL) {
		/* a tail not checkpointed is in the journal: the next start replays it */
		store_wtxn_abort(&s->tail);
		/* the last checkpoint's meta page (see checkpoint) on the disk */
		if (s->durable && !s->broken && s->synced_seq < s->ckpt_seq && store_sync(s) == 0)
			s->synced_seq = s->ckpt_seq;
		mdb_env_close(s->env);
		s->env = NULL;
		journal_close(s->journal);
		s->journal = NULL;
		pthread_mutex_destroy(&s->tail_lock);
		pthread_rwlock_destroy(&s->resize_lock);
		pthread_mutex_destroy(&s->durable_lock);
		pthread_cond_destroy(&s->durable_cond);
	}
}

int
store_grow(store *s)
{
	size_t want = s->map_size * 2;
	if (s->max_map_size && want > s->max_map_size)
		want = s->max_map_size;
	if (want <= s->map_size)
		return MDB_MAP_FULL;
	pthread_rwlock_wrlock(&s->resize_lock);
	int rc = mdb_env_set_mapsize(s->env, want);
	pthread_rwlock_unlock(&s->resize_lock);
	if (rc == 0)
		s->map_size = want;
	return rc;
}

uint64_t
store_tail_epoch(store *s)
{
	return __atomic_load_n(&s->tail_epoch, __ATOMIC_SEQ_CST);
}

/* This thread's read transaction is the writer's tail (store_read_begin). */
static _Thread_local int reading_tail;

int
store_read_begin(store *s, MDB_txn **txn)
{
	for (;;) {
		pthread_rwlock_rdlock(&s->resize_lock);
		/* records past the checkpoint are in the tail transaction only:
		 * read it, holding the writer off until store_read_end() */
		pthread_mutex_lock(&s->tail_lock);
		if (s->tail.txn != NULL && s->tail_seq > s->ckpt_seq) {
			*txn = s->tail.txn;
			reading_tail = 1;
			return 0;
		}
		if (s->tail.txn == NULL && s->tail_seq > s->ckpt_seq) {
			/* records past the checkpoint and no tail: rebuild_tail is
			 * growing the map before it replays them again; data.mdb
			 * alone would show less than was acknowledged */
			pthread_mutex_unlock(&s->tail_lock);
			pthread_rwlock_unlock(&s->resize_lock);
			nanosleep(&(struct timespec){ 0, 1000000L }, NULL);
			continue;
		}
		pthread_mutex_unlock(&s->tail_lock);
		break;
	}
	int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
	if (rc == MDB_MAP_RESIZED) {
		/* another process grew the map: adopt its size */
		mdb_env_set_mapsize(s->env, 0);
		rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
	}
	if (rc != 0) {
		*txn = NULL;
		pthread_rwlock_unlock(&s->resize_lock);
	}
	return rc;
}

void
store_read_end(store *s, MDB_txn **txn)
{
	if (*txn != NULL && reading_tail) {
		/* the reader closed its cursors on it (store.h) */
		reading_tail = 0;
		*txn = NULL;
		pthread_mutex_unlock(&s->tail_lock);
		pthread_rwlock_unlock(&s->resize_lock);
	} else if (*txn != NULL) {
		mdb_txn_abort(*txn);
		*txn = NULL;
		pthread_rwlock_unlock(&s->resize_lock);
	}
}

/* Decode a lead's state value into *out. */
static int
lead_decode(const MDB_val *v, store_lead *out)
{
	struct lead_rec lr;
	if (v->mv_size < sizeof lr || v->mv_size > sizeof lr + FP_MAX_OWNER_BYTES)
		return MDB_CORRUPTED;
	memcpy(&lr, v->mv_data, sizeof lr);
	out->stage = lr.stage < FP_STAGE_COUNT ? (fp_stage)lr.stage : FP_STAGE_NONE;
	out->version = lr.version;
	out->last_seq = lr.last_seq;
	memcpy(out->owner, (const char *)v->mv_data + sizeof lr, v->mv_size - sizeof lr);
	out->owner[v->mv_size - sizeof lr] = '\0';
	return 0;
}

int
store_lead_get(store *s, MDB_txn *txn, const char *lead, size_t len, store_lead *out)
{
	unsigned char kb[LEAD_KEY_MAX];
	MDB_val k, v;
	memset(out, 0, sizeof *out);
	if (!lead_ok(lead, len))
		return MDB_NOTFOUND;
	k = lead_key(kb, lead, len, LEAD_STATE, 0);
	int rc = mdb_get(txn, s->leads, &k, &v);
	return rc != 0 ? rc : lead_decode(&v, out);
}

int
store_lead_find(store_wtxn *w, const char *lead, size_t len, store_lead *out)
{
	unsigned char kb[LEAD_KEY_MAX];
	MDB_val k = lead_key(kb, lead, len, LEAD_STATE, 0), v;
	memset(out, 0, sizeof *out);
	int rc = mdb_cursor_get(w->leads, &k, &v, MDB_SET_KEY);
	return rc != 0 ? rc : lead_decode(&v, out);
}

int
store_lead_count(store *s, MDB_txn *txn, uint64_t *n)
{
	MDB_val v;
	int rc = meta_get(s, txn, "leads", &v);
	*n = 0;
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc == 0 && v.mv_size != sizeof *n)
		return MDB_CORRUPTED;
	if (rc == 0)
		memcpy(n, v.mv_data, sizeof *n);
	return rc;
}

int
store_lead_seek(store *s, MDB_cursor *c, const char *lead, size_t len, uint64_t from,
                uint64_t *seq)
{
	unsigned char kb[LEAD_KEY_MAX];
	MDB_val k;
	(void)s;
	if (!lead_ok(lead, len))
		return MDB_NOTFOUND;
	k = lead_key(kb, lead, len, LEAD_HISTORY, from);
	return history_step(c, &k, MDB_SET_RANGE, lead, len, seq);
}

int
store_lead_next(store *s, MDB_cursor *c, const char *lead, size_t len, uint64_t *seq)
{
	MDB_val k;
	(void)s;
	return history_step(c, &k, MDB_NEXT, lead, len, seq);
}

int
store_idem_find(store_wtxn *w, const char *id, size_t len, uint64_t *seq)
{
	MDB_val k = { len, (void *)id }, v;
	int rc = mdb_cursor_get(w->idem, &k, &v, MDB_SET_KEY);
	if (rc != 0)
		return rc;
	if (v.mv_size != sizeof *seq)
		return MDB_CORRUPTED;
	memcpy(seq, v.mv_data, sizeof *seq);
	return 0;
}

int
store_idem_claim(store_wtxn *w, const char *id, size_t len, uint64_t seq, uint64_t *orig)
{
	MDB_val k = { len, (void *)id }, v = { sizeof seq, &seq };
	int rc = mdb_cursor_put(w->idem, &k, &v, MDB_NOOVERWRITE);
	if (rc != MDB_KEYEXIST)
		return rc;
	/* LMDB points v at the value the key already has */
	if (v.mv_size != sizeof *orig)
		return MDB_CORRUPTED;
	memcpy(orig, v.mv_data, sizeof *orig);
	return MDB_KEYEXIST;
}

int
store_idem_unclaim(store_wtxn *w)
{
	return mdb_cursor_del(w->idem, 0);
}

int
store_record_find(store_wtxn *w, uint64_t seq, MDB_val *rec)
{
	/* a plain get: the log cursor stays where the appends left it */
	MDB_val k = { sizeof seq, &seq };
	return mdb_get(w->txn, mdb_cursor_dbi(w->log), &k, rec);
}

int
store_wtxn_begin(store *s, store_wtxn *parent, store_wtxn *w)
{
	MDB_txn *ptxn = parent ? parent->txn : NULL;
	int rc = mdb_txn_begin(s->env, ptxn, 0, &w->txn);
	if (rc == MDB_MAP_RESIZED && ptxn == NULL) {
		/* another process grew the map: adopt its size */
		mdb_env_set_mapsize(s->env, 0);
		rc = mdb_txn_begin(s->env, NULL, 0, &w->txn);
	}
	if (rc != 0) {
		w->txn = NULL;
		return rc;
	}
	if ((rc = mdb_cursor_open(w->txn, s->log, &w->log)) != 0 ||
	    (rc = mdb_cursor_open(w->txn, s->idem, &w->idem)) != 0 ||
	    (rc = mdb_cursor_open(w->txn, s->leads, &w->leads)) != 0)
		store_wtxn_abort(w);
	return rc;
}

int
store_wtxn_commit(store_wtxn *w)
{
	int rc = mdb_txn_commit(w->txn);
	w->txn = NULL;
	return rc;
}

void
store_wtxn_abort(store_wtxn *w)
{
	if (w->txn != NULL)
		mdb_txn_abort(w->txn);
	w->txn = NULL;
}

int
store_record_get(store *s, MDB_txn *txn, uint64_t seq, MDB_val *rec)
{
	MDB_val k = { sizeof seq, &seq };
	return mdb_get(txn, s->log, &k, rec);
}

int
store_head(store *s, MDB_txn *txn, uint64_t *seq)
{
	MDB_cursor *c;
	MDB_val k, v;
	int rc = mdb_cursor_open(txn, s->log, &c);
	if (rc != 0)
		return rc;
	rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
	mdb_cursor_close(c);
	if (rc == MDB_NOTFOUND) {
		*seq = 0;
		return 0;
	}
	if (rc == 0)
		memcpy(seq, k.mv_data, sizeof *seq);
	return rc;
}

static int
ts_of(store *s, MDB_txn *txn, uint64_t seq, uint64_t *ts)
{
	MDB_val v;
	int rc = store_record_get(s, txn, seq, &v);
	if (rc != 0)
		return rc;
	return funnel_record_peek(v.mv_data, v.mv_size, NULL, ts) == FUNNEL_OK ? 0 : MDB_CORRUPTED;
}

int
store_seq_at_time(store *s, MDB_txn *txn, uint64_t from, uint64_t since, uint64_t *seq)
{
	uint64_t head, ts;
	int rc = store_head(s, txn, &head);
	if (rc != 0)
		return rc;
	/* invariant: every seq in [from, lo) has ts < since; every seq in [hi, head] has ts >= since */
	uint64_t lo = from ? from : 1, hi = head + 1;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		if ((rc = ts_of(s, txn, mid, &ts)) != 0)
			return rc;
		if (ts < since)
			lo = mid + 1;
		else
			hi = mid;
	}
	*seq = lo;
	return 0;
}

int
store_append(store_wtxn *w, uint64_t seq, const void *rec, size_t len,
             const char *lead, size_t lead_len, const store_lead *state,
             const char *id, size_t id_len, int state_at_cursor)
{
	MDB_val k = { sizeof seq, &seq }, v = { len, (void *)rec };
	int rc = mdb_cursor_put(w->log, &k, &v, MDB_APPEND);
	if (rc != 0)
		return rc;
	if (id != NULL) {
		uint64_t orig;   /* MDB_KEYEXIST: the id names another record */
		if ((rc = store_idem_claim(w, id, id_len, seq, &orig)) != 0)
			return rc;
	}
	if (lead != NULL) {
		unsigned char kb[LEAD_KEY_MAX], hb[LEAD_KEY_MAX];
		unsigned char buf[sizeof(struct lead_rec) + FP_MAX_OWNER_BYTES];
		struct lead_rec lr = { 0 };
		size_t olen = strlen(state->owner);
		lr.stage = (uint8_t)state->stage;
		lr.version = state->version;
		lr.last_seq = state->last_seq;
		memcpy(buf, &lr, sizeof lr);
		memcpy(buf + sizeof lr, state->owner, olen);
		MDB_val sk = lead_key(kb, lead, lead_len, LEAD_STATE, 0), sv = { sizeof lr + olen, buf };
		MDB_val hk = lead_key(hb, lead, lead_len, LEAD_HISTORY, seq), hv = { 0, NULL };
		/* the state first when the cursor is on it (no search), then the
		 * history key, which sorts just before it; else in key order */
		if (state_at_cursor && (rc = mdb_cursor_put(w->leads, &sk, &sv, MDB_CURRENT)) != 0)
			return rc;
		if ((rc = mdb_cursor_put(w->leads, &hk, &hv, 0)) != 0)
			return rc;
		if (!state_at_cursor && (rc = mdb_cursor_put(w->leads, &sk, &sv, 0)) != 0)
			return rc;
	}
	return 0;
}

int
store_put_head(store *s, MDB_txn *txn, uint64_t seq, const uint8_t hash[FUNNEL_HASH_BYTES],
               uint64_t leads)
{
	int rc = meta_put(s, txn, FP_META_HEAD_SEQ, &seq, sizeof seq);
	if (rc == 0)
		rc = meta_put(s, txn, FP_META_HEAD_HASH, hash, FUNNEL_HASH_BYTES);
	if (rc == 0)
		rc = meta_put(s, txn, "leads", &leads, sizeof leads);
	return rc;
}

void
store_set_head(store *s, uint64_t seq, uint64_t ts, const uint8_t hash[FUNNEL_HASH_BYTES],
               uint64_t leads)
{
	s->head_seq = seq;
	s->head_ts = ts;
	s->head_leads = leads;
	memcpy(s->head_hash, hash, FUNNEL_HASH_BYTES);
}

int
store_sync(store *s)
{
	return mdb_env_sync(s->env, 1);
}

void
store_set_durable(store *s, uint64_t seq, uint64_t leads)
{
	pthread_mutex_lock(&s->durable_lock);
	if (seq > s->durable_seq) {
		s->durable_seq = seq;
		s->durable_leads = leads;
		pthread_cond_broadcast(&s->durable_cond);
		if (s->watch_fd >= 0) {
			/* an eventfd: the write only fails when its counter would
			 * overflow, and then it is readable anyway */
			uint64_t one = 1;
			ssize_t w = write(s->watch_fd, &one, sizeof one);
			(void)w;
		}
	}
	pthread_mutex_unlock(&s->durable_lock);
}

uint64_t
store_durable_watch(store *s, int fd)
{
	pthread_mutex_lock(&s->durable_lock);
	s->watch_fd = fd;
	uint64_t seq = s->durable_seq;
	pthread_mutex_unlock(&s->durable_lock);
	return seq;
}

int
store_read_head(store *s, MDB_txn *txn, uint64_t *seq, uint64_t *leads)
{
	uint64_t head, dseq, dleads;
	pthread_mutex_lock(&s->durable_lock);
	dseq = s->durable_seq;
	dleads = s->durable_leads;
	pthread_mutex_unlock(&s->durable_lock);
	int rc = store_head(s, txn, &head);
	if (rc != 0)
		return rc;
	if (head > dseq) {
		/* txn holds a group not yet flushed: show the durable head */
		head = dseq;
	} else if (leads != NULL) {
		/* txn began before the durable seq rose past its head (or at it):
		 * its own count is the one at its head */
		if ((rc = store_lead_count(s, txn, &dleads)) != 0)
			return rc;
	}
	if (seq != NULL)
		*seq = head;
	if (leads != NULL)
		*leads = dleads;
	return 0;
}

int
store_wait_durable(store *s, uint64_t seq, int timeout_ms)
{
	struct timespec until;
	int rc = 0;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&s->durable_lock);
	while (s->durable_seq < seq && rc == 0)
		rc = pthread_cond_timedwait(&s->durable_cond, &s->durable_lock, &until);
	rc = s->durable_seq >= seq ? 0 : ETIMEDOUT;
	pthread_mutex_unlock(&s->durable_lock);
	return rc;
}

/* ---- the lead rule, the tail and checkpoints ---------------------------- */

void
store_lead_after(store_lead *st, const fp_evspec *spec, fp_stage to, uint64_t version,
                 uint64_t seq, const msgpack_object *data)
{
	st->stage = to;
	st->version = version;
	st->last_seq = seq;
	if (spec->type == FP_EV_ASSIGNED) {
		const msgpack_object *o = mp_find(data, "owner");
		/* validated when stored: a string of at most FP_MAX_OWNER_BYTES */
		if (o != NULL && o->type == MSGPACK_OBJECT_STR && o->via.str.size <= FP_MAX_OWNER_BYTES) {
			memcpy(st->owner, o->via.str.ptr, o->via.str.size);
			st->owner[o->via.str.size] = '\0';
		}
	} else if (spec->type == FP_EV_ERASED) {
		st->owner[0] = '\0';
	}
}

int
store_full(const store *s, int rc)
{
	struct statvfs fs;
	if (rc == MDB_MAP_FULL || rc == ENOSPC || rc == EDQUOT)
		return 1;
	return rc == EIO && statvfs(s->path, &fs) == 0 &&
	       (uint64_t)fs.f_bavail * fs.f_frsize < (1u << 20);
}

int
store_group_begin(store *s, store_wtxn *w)
{
	int rc = 0;
	pthread_mutex_lock(&s->tail_lock);
	if (s->tail.txn == NULL) {
		rc = mdb_txn_begin(s->env, NULL, 0, &s->tail.txn);
		if (rc == MDB_MAP_RESIZED) {
			/* another process grew the map: adopt its size */
			mdb_env_set_mapsize(s->env, 0);
			rc = mdb_txn_begin(s->env, NULL, 0, &s->tail.txn);
		}
		if (rc != 0)
			s->tail.txn = NULL;
		else
			s->tail_since_ns = clock_now_ns();
	}
	if (rc == 0)
		rc = store_wtxn_begin(s, &s->tail, w);
	if (rc != 0)
		pthread_mutex_unlock(&s->tail_lock);
	return rc;
}

int
store_group_end(store *s, store_wtxn *w, uint64_t head, size_t nrecs, size_t bytes)
{
	int rc = 0;
	if (nrecs > 0) {
		rc = store_wtxn_commit(w);
		if (rc == 0) {
			s->tail_seq = head;
			s->tail_events += nrecs;
			s->tail_bytes += bytes;
		}
	} else {
		store_wtxn_abort(w);
	}
	pthread_mutex_unlock(&s->tail_lock);
	return rc;
}

int
store_group_journal(store *s, uint64_t first_seq, size_t count, const void *recs,
                    const size_t *ends)
{
	if (count == 0)
		return 0;
	if (!journal_fits(s->journal, count, ends[count - 1]))
		return checkpoint(s, 1);   /* makes it durable, and the lap new */
	int rc = journal_write(s->journal, first_seq, count, recs, ends);
	if (rc != 0)
		s->broken = 1;   /* a write or flush of unknown fate: no later flush proves it */
	return rc;
}

void
store_group_flush_start(store *s)
{
	journal_flush_start(s->journal);
}

int
store_group_flushing(store *s)
{
	return journal_flushing(s->journal);
}

int
store_group_wait(store *s)
{
	int rc = journal_wait(s->journal);
	if (rc != 0)
		s->broken = 1;
	return rc;
}

/*
 * Commit the tail; with flush_meta, its meta page flushed too.  A new
 * lap then goes to the journal's other region, overwriting the lap
 * before the current one: its records are all in data.mdb's previous
 * commit, whose meta page this commit's own flush (of its pages, before
 * its meta page: MDB_NOMETASYNC) put on the disk.  When that is not
 * enough (synced_seq short of the current lap's start: after an open
 * that replayed both laps, or a format-1 lap spanning both regions), the
 * meta page is flushed first.
 */
static int
checkpoint(store *s, int flush_meta)
{
	int rc = 0, dropped = 0;
	char why[512];
	pthread_mutex_lock(&s->tail_lock);
	if (s->tail.txn != NULL && s->tail_seq == s->ckpt_seq) {
		/* nothing stored since the last one (refused groups leave no
		 * change in it): no commit, no flush, the lap stays empty */
		store_wtxn_abort(&s->tail);
		pthread_mutex_unlock(&s->tail_lock);
		return 0;
	}
	while (s->tail.txn != NULL) {
		uint64_t before = s->ckpt_seq, tail_seq = s->tail_seq;
		rc = store_wtxn_commit(&s->tail);   /* its pages flushed, its meta page written */
		s->tail_events = 0;
		s->tail_bytes = 0;
		if (rc == 0) {
			s->ckpt_seq = s->tail_seq;
			if (s->synced_seq < before)
				s->synced_seq = before;   /* the previous commit's meta page: flushed */
			break;
		}
		/* A commit can need pages the map does not have (LMDB saves
		 * its free list then): grow the map, rebuild the tail from
		 * data.mdb (the last checkpoint) and the journal, commit again.
		 * store_grow takes resize_lock, which readers take before
		 * tail_lock (they wait for the tail meanwhile, store_read_begin). */
		if (rc != MDB_MAP_FULL || s->broken)
			break;
		pthread_mutex_unlock(&s->tail_lock);
		if (store_grow(s) != 0) {
			pthread_mutex_lock(&s->tail_lock);
			break;   /* at its cap: refused below */
		}
		log_info("map full at a checkpoint: grew the map to %zu MiB", s->map_size >> 20);
		if (rebuild_tail(s, 0, why, sizeof why) != 0) {
			log_error("%s", why);
			s->broken = 1;
			return rc;
		}
		/* what the journal did not hold (a group whose entry did not
		 * fit: store_group_journal) is gone from the tail */
		if (s->tail_seq < tail_seq)
			dropped = 1;
		pthread_mutex_lock(&s->tail_lock);
	}
	if (rc == 0 && s->durable &&
	    (flush_meta || journal_lap_spans(s->journal) ||
	     s->synced_seq + 1 < journal_lap(s->journal))) {
		if ((rc = store_sync(s)) != 0)
			s->broken = 1;   /* a meta page of unknown fate: no later flush proves it */
		else
			s->synced_seq = s->ckpt_seq;
	}
	pthread_mutex_unlock(&s->tail_lock);
	if (rc == 0) {
		journal_new_lap(s->journal, s->head_seq + 1);
		s->lap_inherited = 0;
		return dropped ? STORE_REDO : 0;
	}
	/* The commit failed before its meta page: data.mdb is the last
	 * checkpoint.  On a full disk or map the tail is rebuilt from it and
	 * the journal (what the journal does not hold is gone: a group whose
	 * entry did not fit), and the writer goes on; the next checkpoint is
	 * tried a second later. */
	s->ckpt_retry_ns = clock_now_ns() + STORE_CKPT_RETRY_NS;
	if (!s->broken && store_full(s, rc) && rebuild_tail(s, 0, why, sizeof why) != 0) {
		log_error("%s", why);
		s->broken = 1;
	}
	if (!store_full(s, rc))
		s->broken = 1;
	return rc;
}

int
store_checkpoint(store *s)
{
	return checkpoint(s, 0);
}

int
store_checkpoint_due(const store *s, uint64_t now_ns, uint64_t idle_ns)
{
	if (s->tail.txn == NULL || now_ns < s->ckpt_retry_ns)
		return 0;
	if (s->tail_seq == s->ckpt_seq)
		return now_ns - s->tail_since_ns >= STORE_TAIL_MAX_AGE_NS;   /* nothing in it: end it */
	uint64_t age = now_ns - s->tail_since_ns;
	return journal_used(s->journal) > journal_lap_room(s->journal) / 2 ||
	       (age >= STORE_TAIL_MAX_AGE_NS && s->tail_events >= STORE_TAIL_AGE_EVENTS) ||
	       age >= STORE_TAIL_OLDEST_NS || idle_ns >= STORE_IDLE_NS ||
	       s->tail_events >= STORE_TAIL_MAX_EVENTS || s->tail_bytes >= STORE_TAIL_MAX_BYTES;
}
