/*
 * clients/lib/backup.c - the log's files without a daemon: hot backup
 * (the journal copied, then mdb_env_copy2, compacted, one read
 * transaction), restore (write aside, fsync, rename, directory fsync) and
 * the hash chain recomputed over an LMDB environment opened read-only.
 * Contract in funnel.h; the layout's names come from proto/logfmt.h.
 *
 * funneld's data.mdb holds its last checkpoint; the events acknowledged
 * since are in its write-ahead journal (daemon/journal.h), which funneld
 * replays at start.  A backup copies the journal first and the LMDB
 * snapshot after: funneld starts a new journal lap only after a
 * checkpoint that holds the whole lap before it, so the snapshot taken
 * later holds at least what preceded the copied journal's newer lap (a
 * lap is overwritten two checkpoints after it ended), and the
 * two together hold every event acknowledged before the backup started
 * (a journal entry torn by the copy was not acknowledged yet; funneld
 * ignores it).  backup.info names the snapshot's head.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>

#include "dirlock.h"
#include "bytes.h"
#include "envelope.h"
#include "envfile.h"
#include "internal.h"
#include "logfmt.h"

#define COPY_CHUNK (1 << 20)

static int
storage_error(funnel_error_info *err, const char *field, const char *what, const char *path,
              int e)
{
	return fl_set_error(err, FUNNEL_ESTORAGE, -1, field, "%s %s: %s", what, path,
	                    e > 0 ? strerror(e) : mdb_strerror(e));
}

/* Create dir if missing; it must then be empty but for a file named
 * allow (NULL: none).  *created says whether it was made here (its
 * parent then needs an fsync). */
static int
empty_dir(const char *dir, const char *field, const char *allow, int *created,
          funnel_error_info *err)
{
	DIR *d;
	struct dirent *de;

	*created = 0;
	if (mkdir(dir, 0750) == 0)
		*created = 1;
	else if (errno != EEXIST)
		return storage_error(err, field, "cannot create directory", dir, errno);
	if ((d = opendir(dir)) == NULL)
		return storage_error(err, field, "cannot open directory", dir, errno);
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 &&
		    (allow == NULL || strcmp(de->d_name, allow) != 0)) {
			char name[256];
			snprintf(name, sizeof name, "%s", de->d_name);   /* de dies with d */
			closedir(d);
			return fl_set_error(err, FUNNEL_EINVAL, -1, field,
			                    "%s is not empty (found %s): refusing to write over it", dir,
			                    name);
		}
	}
	closedir(d);
	return FUNNEL_OK;
}

static int meta_get(MDB_txn *txn, MDB_dbi meta, const char *key, MDB_val *v);

/* Open the environment in dir read-only (flags add MDB_NOLOCK for a
 * directory nobody writes).  The map size is the file's own. */
static int
env_open(const char *dir, unsigned flags, MDB_env **env, funnel_error_info *err)
{
	char path[PATH_MAX];
	struct stat sb;
	int rc;

	snprintf(path, sizeof path, "%s/%s", dir, FP_LOG_DATA_FILE);
	if (stat(path, &sb) != 0)
		return fl_set_error(err, FUNNEL_ESTORAGE, -1, "dir", "%s: no funnel log here (%s: %s)",
		                    dir, FP_LOG_DATA_FILE, strerror(errno));
	if ((rc = mdb_env_create(env)) != 0 ||
	    (rc = mdb_env_set_maxdbs(*env, FP_LOG_MAX_TABLES)) != 0 ||
	    (rc = mdb_env_open(*env, dir, MDB_RDONLY | flags, 0644)) != 0) {
		if (*env != NULL)
			mdb_env_close(*env);
		*env = NULL;
		return storage_error(err, "dir", "cannot open the log in", dir, rc);
	}
	/* a copy cut short is refused from its meta alone, before any page
	 * is read (envfile.h) */
	char why[PATH_MAX + 128];
	if (fp_envfile_whole(*env, dir, why, sizeof why) != 0) {
		mdb_env_close(*env);
		*env = NULL;
		return fl_set_error(err, FUNNEL_EVALUE, -1, "dir", "%s", why);
	}
	return FUNNEL_OK;
}

/* Whether the open environment holds a funnel log (its format record),
 * before anything is written for it: FUNNEL_OK or FUNNEL_EVALUE naming
 * dir (a service's view, say). */
static int
env_is_log(MDB_env *env, const char *dir, funnel_error_info *err)
{
	MDB_txn *txn;
	MDB_dbi meta;
	MDB_val v;
	int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);
	if (rc != 0)
		return storage_error(err, "dir", "cannot read the log in", dir, rc);
	rc = mdb_dbi_open(txn, FP_META_TABLE, 0, &meta) == 0 &&
	     meta_get(txn, meta, FP_META_FORMAT, &v) == 0 ? FUNNEL_OK : FUNNEL_EVALUE;
	mdb_txn_abort(txn);
	if (rc != FUNNEL_OK)
		return fl_set_error(err, FUNNEL_EVALUE, -1, "dir", "%s is not a funnel log (no format "
		                    "record)", dir);
	return FUNNEL_OK;
}

static int
meta_get(MDB_txn *txn, MDB_dbi meta, const char *key, MDB_val *v)
{
	MDB_val k = { strlen(key), (void *)key };
	return mdb_get(txn, meta, &k, v);
}

/* Walk the whole chain of an open environment in one read transaction. */
static int
env_verify(MDB_env *env, const char *dir, funnel_verify_result *res, funnel_log_head *head,
           funnel_error_info *err)
{
	MDB_txn *txn = NULL;
	MDB_cursor *cur = NULL;
	MDB_dbi meta, log;
	MDB_val k, v;
	fp_chain c;
	uint8_t before_last[FUNNEL_HASH_BYTES] = { 0 };
	uint32_t format = 0;
	uint64_t meta_head = 0;
	int rc, ret = FUNNEL_OK;

	memset(res, 0, sizeof *res);
	if ((rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) != 0)
		return storage_error(err, "dir", "cannot read the log in", dir, rc);
	if ((rc = mdb_dbi_open(txn, FP_META_TABLE, 0, &meta)) != 0 ||
	    (rc = meta_get(txn, meta, FP_META_FORMAT, &v)) != 0 || v.mv_size != sizeof format) {
		ret = fl_set_error(err, FUNNEL_EVALUE, -1, "dir", "%s is not a funnel log (no format record)",
		                   dir);
		goto out;
	}
	memcpy(&format, v.mv_data, sizeof format);
	if (format != FP_LOG_FORMAT) {
		ret = fl_set_error(err, FUNNEL_EVALUE, -1, "format",
		                   "%s holds a log in format %" PRIu32 "; this version reads format %d",
		                   dir, format, FP_LOG_FORMAT);
		goto out;
	}
	if ((rc = mdb_dbi_open(txn, FP_LOG_TABLE, MDB_INTEGERKEY, &log)) != 0 ||
	    (rc = mdb_cursor_open(txn, log, &cur)) != 0) {
		ret = storage_error(err, "dir", "cannot open the log table in", dir, rc);
		goto out;
	}
	fp_chain_init(&c, 1, NULL);
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		uint64_t seq = 0;
		if (k.mv_size == sizeof seq)
			memcpy(&seq, k.mv_data, sizeof seq);
		if (seq != c.next_seq) {
			snprintf(res->why, sizeof res->why, "seq %" PRIu64 ": missing (next key is %" PRIu64 ")",
			         c.next_seq, seq);
			res->bad_seq = c.next_seq;
			ret = fl_set_error(err, FUNNEL_ECHAIN, -1, "", "%s", res->why);
			goto out;
		}
		memcpy(before_last, c.head, FUNNEL_HASH_BYTES);
		if (fp_chain_step(&c, v.mv_data, v.mv_size, res->why, sizeof res->why) != FUNNEL_OK) {
			res->bad_seq = seq;
			ret = fl_set_error(err, FUNNEL_ECHAIN, -1, "", "%s", res->why);
			goto out;
		}
		res->checked++;
		res->last_good = seq;
		memcpy(res->head_hash, c.head, FUNNEL_HASH_BYTES);
	}
	if (rc != MDB_NOTFOUND) {
		ret = storage_error(err, "dir", "cannot read the log in", dir, rc);
		goto out;
	}
	/* meta's head must be the last record, as the daemon's status says. */
	if (meta_get(txn, meta, FP_META_HEAD_SEQ, &v) == 0 && v.mv_size == sizeof meta_head)
		memcpy(&meta_head, v.mv_data, sizeof meta_head);
	if (res->last_good != 0 &&
	    (meta_head != res->last_good || meta_get(txn, meta, FP_META_HEAD_HASH, &v) != 0 ||
	     v.mv_size != FUNNEL_HASH_BYTES || memcmp(v.mv_data, c.head, FUNNEL_HASH_BYTES) != 0)) {
		snprintf(res->why, sizeof res->why,
		         "seq %" PRIu64 ": the stored head (seq %" PRIu64 ") and its hash differ from the "
		         "last record", res->last_good, meta_head);
		res->bad_seq = res->last_good;
		res->last_good--;
		res->checked--;
		memcpy(res->head_hash, before_last, FUNNEL_HASH_BYTES);
		ret = fl_set_error(err, FUNNEL_ECHAIN, -1, "", "%s", res->why);
		goto out;
	}
	if (head != NULL) {
		char path[PATH_MAX];
		struct stat sb;
		snprintf(path, sizeof path, "%s/%s", dir, FP_LOG_DATA_FILE);
		head->head = res->last_good;
		memcpy(head->head_hash, res->head_hash, FUNNEL_HASH_BYTES);
		head->format = format;
		head->bytes = stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
	}
out:
	if (cur != NULL)
		mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	return ret;
}

int
funnel_log_verify(const char *dir, funnel_verify_result *res, funnel_log_head *head,
                  funnel_error_info *err)
{
	MDB_env *env = NULL;
	int rc;

	if (err == NULL || res == NULL)
		return FUNNEL_EINVAL;
	fl_clear_error(err);
	if (dir == NULL || dir[0] == '\0')
		return fl_set_error(err, FUNNEL_EINVAL, -1, "dir", "a directory is required");
	if ((rc = env_open(dir, MDB_NOLOCK, &env, err)) != FUNNEL_OK)
		return rc;
	rc = env_verify(env, dir, res, head, err);
	mdb_env_close(env);
	return rc;
}

/* Write dir/backup.info: temp file, fsync, rename, directory fsync. */
static int
write_info(const char *dir, const char *source, const funnel_log_head *h, funnel_error_info *err)
{
	char tmp[PATH_MAX + 16], path[PATH_MAX], hash[2 * FUNNEL_HASH_BYTES + 1];
	struct timespec now;
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, FUNNEL_BACKUP_INFO_FILE);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	if ((f = fopen(tmp, "w")) == NULL)
		return storage_error(err, "dest", "cannot write", tmp, errno);
	clock_gettime(CLOCK_REALTIME, &now);
	fp_hex(h->head_hash, FUNNEL_HASH_BYTES, hash);
	fprintf(f, "format=%" PRIu32 "\nhead_seq=%" PRIu64 "\nhead_hash=%s\nbytes=%" PRIu64
	        "\ntaken_at_ns=%" PRIu64 "\nsource=%s\n",
	        h->format, h->head, hash, h->bytes,
	        (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec, source);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
		int e = errno;
		fclose(f);
		return storage_error(err, "dest", "cannot write", tmp, e);
	}
	if (fclose(f) != 0 || rename(tmp, path) != 0 || fp_dir_sync(dir) != 0)
		return storage_error(err, "dest", "cannot write", path, errno);
	return FUNNEL_OK;
}

static int copy_file(const char *src, const char *dst, funnel_error_info *err);

/* funneld's write-ahead journal (daemon/journal.h), when src has one:
 * copied as it is. */
static int
copy_journal(const char *src_dir, const char *dst_dir, funnel_error_info *err)
{
	char src[PATH_MAX], dst[PATH_MAX];
	snprintf(src, sizeof src, "%s/%s", src_dir, FP_LOG_JOURNAL_FILE);
	snprintf(dst, sizeof dst, "%s/%s", dst_dir, FP_LOG_JOURNAL_FILE);
	if (access(src, F_OK) != 0)
		return FUNNEL_OK;
	return copy_file(src, dst, err);
}

/* The key file of sealed personal data (PROTOCOL.md §21), when src has
 * one: copied as it is (keys wrapped by the master key, which is never in
 * a data directory), readable by its owner only. */
static int
copy_keys(const char *src_dir, const char *dst_dir, funnel_error_info *err)
{
	char src[PATH_MAX], dst[PATH_MAX];
	snprintf(src, sizeof src, "%s/keys.dat", src_dir);
	snprintf(dst, sizeof dst, "%s/keys.dat", dst_dir);
	if (access(src, F_OK) != 0)
		return FUNNEL_OK;
	int rc = copy_file(src, dst, err);
	if (rc == FUNNEL_OK && chmod(dst, 0600) != 0)
		rc = storage_error(err, "dest", "cannot restrict", dst, errno);
	return rc;
}

/* A backup that failed leaves nothing: the files it wrote into dest_dir
 * (empty before it: empty_dir), and dest_dir itself when it made it.
 * Returns rc, the failure's code. */
static int
backup_undo(const char *dest_dir, int created, int rc)
{
	static const char *const written[] = { FP_LOG_DATA_FILE, FP_LOG_JOURNAL_FILE, "keys.dat",
	                                       FUNNEL_BACKUP_INFO_FILE,
	                                       FUNNEL_BACKUP_INFO_FILE ".tmp", NULL };
	char path[PATH_MAX];
	for (const char *const *f = written; *f != NULL; f++) {
		snprintf(path, sizeof path, "%s/%s", dest_dir, *f);
		unlink(path);
	}
	if (created)
		rmdir(dest_dir);
	return rc;
}

int
funnel_backup(const char *data_dir, const char *dest_dir, funnel_log_head *head,
              funnel_verify_result *res, funnel_error_info *err)
{
	MDB_env *live = NULL, *copy = NULL;
	funnel_log_head h;
	char path[PATH_MAX], parent[PATH_MAX], source[PATH_MAX];
	int rc, created;

	if (err == NULL || res == NULL)
		return FUNNEL_EINVAL;
	fl_clear_error(err);
	memset(res, 0, sizeof *res);
	if (data_dir == NULL || data_dir[0] == '\0')
		return fl_set_error(err, FUNNEL_EINVAL, -1, "data", "the data directory is required");
	if (dest_dir == NULL || dest_dir[0] == '\0')
		return fl_set_error(err, FUNNEL_EINVAL, -1, "dest", "a backup directory is required");
	if (realpath(data_dir, source) == NULL)
		return storage_error(err, "data", "cannot find", data_dir, errno);
	/* a backup inside the directory it copies would go with it */
	fp_path_parent(dest_dir, parent, sizeof parent);
	size_t sl = strlen(source);
	if (realpath(parent, path) != NULL && strncmp(path, source, sl) == 0 &&
	    (path[sl] == '\0' || path[sl] == '/'))
		return fl_set_error(err, FUNNEL_EINVAL, -1, "dest", "%s is inside the data directory %s: "
		                    "a backup goes outside it (on another disk, best)", dest_dir, data_dir);
	/* A reader of the live environment, with LMDB's lock file: the copy
	 * is one read transaction (taken below, after the journal's copy),
	 * and the writer goes on beside it.  Opened first, so that a source
	 * that is no log (a file, a service's view, a cut copy) is refused
	 * before the backup directory is made. */
	if ((rc = env_open(data_dir, 0, &live, err)) != FUNNEL_OK)
		return rc;
	if ((rc = env_is_log(live, data_dir, err)) != FUNNEL_OK ||
	    (rc = empty_dir(dest_dir, "dest", NULL, &created, err)) != FUNNEL_OK) {
		mdb_env_close(live);
		return rc;
	}
	/* The journal before the snapshot (see the top). */
	if ((rc = copy_journal(source, dest_dir, err)) != FUNNEL_OK) {
		mdb_env_close(live);
		return backup_undo(dest_dir, created, rc);
	}
	rc = mdb_env_copy2(live, dest_dir, MDB_CP_COMPACT);
	mdb_env_close(live);
	if (rc != 0)
		return backup_undo(dest_dir, created,
		                   storage_error(err, "dest", "cannot copy the log to", dest_dir, rc));
	/* The snapshot copied may be a checkpoint whose meta page funneld
	 * has written but not yet flushed (it flushes it right after:
	 * PROTOCOL.md §16).  Flushing the live file now makes it durable
	 * there too, so a backup never holds events the log could lose. */
	char live_file[PATH_MAX + sizeof FP_LOG_DATA_FILE + 1];
	snprintf(live_file, sizeof live_file, "%s/%s", source, FP_LOG_DATA_FILE);
	if (fp_file_sync(live_file) != 0)
		return backup_undo(dest_dir, created,
		                   storage_error(err, "data", "cannot fsync", live_file, errno));
	snprintf(path, sizeof path, "%s/%s", dest_dir, FP_LOG_DATA_FILE);
	fp_path_parent(dest_dir, parent, sizeof parent);
	if (fp_file_sync(path) != 0 || fp_dir_sync(dest_dir) != 0 ||
	    (created && fp_dir_sync(parent) != 0))
		return backup_undo(dest_dir, created,
		                   storage_error(err, "dest", "cannot fsync", path, errno));
	if ((rc = env_open(dest_dir, MDB_NOLOCK, &copy, err)) != FUNNEL_OK)
		return backup_undo(dest_dir, created, rc);
	rc = env_verify(copy, dest_dir, res, &h, err);
	mdb_env_close(copy);
	if (rc != FUNNEL_OK)
		return backup_undo(dest_dir, created, rc);
	/* after the log's snapshot: every key its records use is there, less
	 * the keys erased since (those stay erased in the copy) */
	if ((rc = copy_keys(data_dir, dest_dir, err)) != FUNNEL_OK ||
	    (rc = write_info(dest_dir, source, &h, err)) != FUNNEL_OK)
		return backup_undo(dest_dir, created, rc);
	if (head != NULL)
		*head = h;
	return FUNNEL_OK;
}

/* Read backup.info into *h (format, head_seq, head_hash). */
static int
read_info(const char *dir, funnel_log_head *h, funnel_error_info *err)
{
	char path[PATH_MAX], line[PATH_MAX + 32];
	int have = 0;
	FILE *f;

	memset(h, 0, sizeof *h);
	snprintf(path, sizeof path, "%s/%s", dir, FUNNEL_BACKUP_INFO_FILE);
	if ((f = fopen(path, "r")) == NULL)
		return fl_set_error(err, FUNNEL_EVALUE, -1, "backup",
		                    "%s: %s (not a complete backup): %s", dir, FUNNEL_BACKUP_INFO_FILE,
		                    strerror(errno));
	while (fgets(line, sizeof line, f) != NULL) {
		char *eq = strchr(line, '=');
		if (eq == NULL)
			continue;
		*eq++ = '\0';
		eq[strcspn(eq, "\n")] = '\0';
		if (strcmp(line, "format") == 0) {
			h->format = (uint32_t)strtoul(eq, NULL, 10);
			have |= 1;
		} else if (strcmp(line, "head_seq") == 0) {
			h->head = strtoull(eq, NULL, 10);
			have |= 2;
		} else if (strcmp(line, "head_hash") == 0 && strlen(eq) == 2 * FUNNEL_HASH_BYTES) {
			for (int i = 0; i < FUNNEL_HASH_BYTES; i++) {
				unsigned x;
				if (sscanf(eq + 2 * i, "%2x", &x) != 1)
					break;
				h->head_hash[i] = (uint8_t)x;
			}
			have |= 4;
		} else if (strcmp(line, "bytes") == 0) {
			h->bytes = strtoull(eq, NULL, 10);
		}
	}
	fclose(f);
	if (have != 7)
		return fl_set_error(err, FUNNEL_EVALUE, -1, "backup",
		                    "%s lacks format, head_seq or head_hash", path);
	return FUNNEL_OK;
}

/* Copy src to dst (created, must not exist), fsync it. */
static int
copy_file(const char *src, const char *dst, funnel_error_info *err)
{
	int in = -1, out = -1, ret = FUNNEL_OK;
	char *buf = malloc(COPY_CHUNK);

	if (buf == NULL)
		return fl_set_error(err, FUNNEL_ENOMEM, -1, "", "out of memory");
	if ((in = open(src, O_RDONLY)) < 0) {
		ret = storage_error(err, "backup", "cannot read", src, errno);
		goto out;
	}
	if ((out = open(dst, O_WRONLY | O_CREAT | O_EXCL, 0640)) < 0) {
		ret = storage_error(err, "data", "cannot create", dst, errno);
		goto out;
	}
	for (;;) {
		ssize_t n = read(in, buf, COPY_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = storage_error(err, "backup", "cannot read", src, errno);
			goto out;
		}
		if (n == 0)
			break;
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(out, buf + off, (size_t)(n - off));
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				ret = storage_error(err, "data", "cannot write", dst, errno);
				goto out;
			}
			off += w;
		}
	}
	if (fsync(out) != 0)
		ret = storage_error(err, "data", "cannot fsync", dst, errno);
out:
	if (in >= 0)
		close(in);
	if (out >= 0 && close(out) != 0 && ret == FUNNEL_OK)
		ret = storage_error(err, "data", "cannot write", dst, errno);
	free(buf);
	return ret;
}

int
funnel_restore(const char *backup_dir, const char *data_dir, funnel_log_head *head,
               funnel_verify_result *res, funnel_error_info *err)
{
	funnel_log_head want, got;
	char src[PATH_MAX], tmp[PATH_MAX + 16], dst[PATH_MAX], parent[PATH_MAX];
	int rc, created;

	if (err == NULL || res == NULL)
		return FUNNEL_EINVAL;
	fl_clear_error(err);
	memset(res, 0, sizeof *res);
	if (backup_dir == NULL || backup_dir[0] == '\0')
		return fl_set_error(err, FUNNEL_EINVAL, -1, "backup", "a backup directory is required");
	if (data_dir == NULL || data_dir[0] == '\0')
		return fl_set_error(err, FUNNEL_EINVAL, -1, "data", "the data directory is required");
	if ((rc = read_info(backup_dir, &want, err)) != FUNNEL_OK)
		return rc;
	if ((rc = funnel_log_verify(backup_dir, res, &got, err)) != FUNNEL_OK)
		return rc;
	if (got.head != want.head || memcmp(got.head_hash, want.head_hash, FUNNEL_HASH_BYTES) != 0)
		return fl_set_error(err, FUNNEL_EVALUE, -1, "backup",
		                    "%s: the copy's head (seq %" PRIu64 ") is not the one %s names "
		                    "(seq %" PRIu64 ")", backup_dir, got.head, FUNNEL_BACKUP_INFO_FILE,
		                    want.head);
	/* The lock funneld takes (dirlock.h), held until the log is in place:
	 * a funneld started meanwhile is refused, rather than creating a log
	 * of its own that the rename would then take from under it.  The
	 * directory is checked again under the lock. */
	if ((rc = empty_dir(data_dir, "data", DIRLOCK_FILE, &created, err)) != FUNNEL_OK)
		return rc;
	char why[256];
	int lock = dirlock_take(data_dir, "funnel-restore", why, sizeof why);
	if (lock < 0)
		return fl_set_error(err, FUNNEL_ESTORAGE, -1, "data", "%s is %s: refused (stop funneld "
		                    "before a restore)", data_dir, why);
	int again;
	if ((rc = empty_dir(data_dir, "data", DIRLOCK_FILE, &again, err)) != FUNNEL_OK)
		goto out;
	snprintf(src, sizeof src, "%s/%s", backup_dir, FP_LOG_DATA_FILE);
	snprintf(tmp, sizeof tmp, "%s/%s.partial", data_dir, FP_LOG_DATA_FILE);
	snprintf(dst, sizeof dst, "%s/%s", data_dir, FP_LOG_DATA_FILE);
	/* the keys and the journal first: the log never appears without them */
	if ((rc = copy_keys(backup_dir, data_dir, err)) != FUNNEL_OK ||
	    (rc = copy_journal(backup_dir, data_dir, err)) != FUNNEL_OK)
		goto out;
	if ((rc = copy_file(src, tmp, err)) != FUNNEL_OK) {
		unlink(tmp);
		goto out;
	}
	fp_path_parent(data_dir, parent, sizeof parent);
	if (rename(tmp, dst) != 0 || fp_dir_sync(data_dir) != 0 ||
	    (created && fp_dir_sync(parent) != 0)) {
		rc = storage_error(err, "data", "cannot put the log in place in", data_dir, errno);
		goto out;
	}
	if (head != NULL)
		*head = got;
out:
	/* The directory holds the log alone, as before the restore: the lock
	 * file goes while it is held (a funneld that opened it meanwhile was
	 * refused; the next one makes its own). */
	snprintf(tmp, sizeof tmp, "%s/%s", data_dir, DIRLOCK_FILE);
	unlink(tmp);
	close(lock);
	return rc;
}
