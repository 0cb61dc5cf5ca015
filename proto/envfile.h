/*
 * proto/envfile.h - a new LMDB environment appears in place only once its
 * initial state is on disk.
 *
 * mdb_env_open() on a directory without data.mdb creates the file and
 * writes its two meta pages without a flush, and nothing flushes the
 * directory that holds it.  A power loss before the first commit's flush
 * (or one that keeps that commit's pages but not the meta pages, which
 * the disk may write in any order) leaves a data.mdb that LMDB refuses
 * for good (MDB_INVALID: "File is not an LMDB file"), or no data.mdb at
 * all after acknowledgements were sent.
 *
 * fp_envfile_prepare() is called before mdb_env_open() on a directory
 * (the daemon's log, every service's view).  When dir/data.mdb is
 * missing it builds the empty environment aside, as dir/data.mdb.new (a
 * stale one, left by a crash during creation, is removed first: it was
 * never in place, so it holds nothing anyone was told about), flushes
 * it, renames it to dir/data.mdb and flushes dir; dir's own entry is
 * flushed in its parent too (and the parent's in its own, as far up as
 * the directories can be opened: callers may have just created them).  After a power loss at any point, then,
 * dir/data.mdb is either absent or a valid empty environment.
 *
 * Depends on LMDB and POSIX only, so daemon/ and clients/lib/ may both
 * call it.
 */
#ifndef FUNNEL_PROTO_ENVFILE_H
#define FUNNEL_PROTO_ENVFILE_H

#include <stddef.h>

#include <lmdb.h>

/*
 * Make dir/data.mdb exist with a durable initial state, as above; dir
 * must exist.  Nothing is done when dir/data.mdb exists.  Returns 0, or
 * -1 with errno set and a message naming the step and the path in why.
 */
int fp_envfile_prepare(const char *dir, char *why, size_t whylen);

/*
 * Whether the open environment's file under dir holds every page its
 * newest meta page says is in use.  The map is memory over the file, and
 * a page past its end is a SIGBUS at the first touch (a copy cut short, a
 * restore onto a full disk), not an error LMDB could return: so after
 * mdb_env_open(), before any read.  Returns 0, or -1 with "DIR/data.mdb
 * is truncated: N bytes, the log needs M" (or why it could not look) in
 * why.
 */
int fp_envfile_whole(MDB_env *env, const char *dir, char *why, size_t whylen);

/* Whether dir is funneld's data directory (it holds the log's journal):
 * no service may take it for a view. */
int fp_is_log_dir(const char *dir);

/* fsync a directory (its entries: files created, renamed or removed in
 * it).  Returns 0 or -1 with errno set. */
int fp_dir_sync(const char *dir);

/* fsync a file (its data and size).  Returns 0 or -1 with errno set. */
int fp_file_sync(const char *path);

/* The directory that holds path, into out ("." for a bare name, "/" for
 * a name in the root; trailing slashes of path are ignored). */
void fp_path_parent(const char *path, char *out, size_t outlen);

#endif /* FUNNEL_PROTO_ENVFILE_H */
