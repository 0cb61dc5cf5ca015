/*
 * daemon/journal.h - the write-ahead journal: what makes a group of
 * records durable with one device flush.
 *
 * The log's LMDB file commits rarely (a checkpoint, store.h); between
 * checkpoints each group's records are appended here and flushed, and
 * that flush is what an acknowledgement waits for.  The file, `journal`
 * in the data directory, has a fixed size and is written in laps:
 *
 *   - it is created full of zeros, WRITTEN (not fallocate'd: a flush
 *     after writing into unwritten extents costs the file system a
 *     journal commit of its own), aside as journal.new, flushed, renamed
 *     in and the directory flushed; so it is absent or whole;
 *   - a lap starts at offset 0 after a checkpoint made the log durable
 *     up to seq L-1; L is the lap's number, the first seq it may hold;
 *   - an entry: a header (JOURNAL_HEADER_BYTES, native endian)
 *       u32 magic "FJNL", u32 format (1), u64 lap, u64 first_seq,
 *       u32 count, u32 zero, u64 payload length,
 *       16 bytes: BLAKE2b-128 (crypto_generichash) of the header with
 *       these 16 bytes zeroed, then of each record's length and own
 *       hash (its last 32 bytes, a BLAKE2b-256 of the rest of it:
 *       funnel/record.h), so the checksum and the records' own hashes
 *       together cover every byte;
 *     then the payload: count records, each a u32 length and the
 *     record's bytes exactly as the log stores them, seqs first_seq,
 *     first_seq+1, ...  Entries follow each other with no gap;
 *   - an append is one pwrite over zeroed (or old) blocks at the end of
 *     the lap (journal_write), then one fdatasync (skipped when not
 *     durable), done by the caller (journal_wait) or by a flusher
 *     thread while the caller goes on (journal_flush_start, then
 *     journal_wait): the entry's records are durable once
 *     journal_wait() returned 0 after it.  One flush at a time: a write
 *     waits for the flush before it, and none overlaps a flush.
 *
 * Reading (journal_scan) starts at offset 0 and takes entries while
 * each is whole (its checksum, and each record's own hash), belongs to the lap of the first one and
 * continues it seq by seq (first_seq is the previous entry's first_seq
 * + count, the first entry's first_seq is its lap).  The first entry
 * that fails any of these ends the lap: a torn last append, or an
 * older lap's entry met past the end of the current one.  Which records
 * past the log's head are replayed, and that they chain to it, is the
 * store's business (store.c).
 *
 * Not thread-safe: the writer (and store_open before it) use it alone;
 * the flusher thread, started at the first journal_flush_start(), only
 * flushes the file, and journal_close() ends it.
 */
#ifndef FUNNEL_DAEMON_JOURNAL_H
#define FUNNEL_DAEMON_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "logfmt.h"

#define JOURNAL_FILE FP_LOG_JOURNAL_FILE
#define JOURNAL_DEFAULT_SIZE ((size_t)64 << 20)
#define JOURNAL_MIN_SIZE ((size_t)64 << 10)
#define JOURNAL_HEADER_BYTES 56
#define JOURNAL_FORMAT 1

typedef struct journal journal;

/*
 * Open dir/journal, creating it (size bytes of zeros, as above) when
 * missing.  An existing file keeps its size whatever size says.  When
 * it is missing, a stale dir/journal.new (a crash during creation) is
 * removed first.
 * durable 0 (--no-sync): nothing is flushed.  Returns the journal, or
 * NULL with a message naming the file in why.
 */
journal *journal_open(const char *dir, size_t size, int durable, char *why, size_t whylen);
void journal_close(journal *j);

/* The file's path (for messages) and size. */
const char *journal_path(const journal *j);
size_t journal_size(const journal *j);

/*
 * One entry met by journal_scan(): its first seq, its records (count of
 * them, recs[i] of lens[i] bytes; valid during the call).  Returns 0 to
 * go on, or a value that ends the scan and that journal_scan returns.
 */
typedef int (*journal_fn)(void *ctx, uint64_t first_seq, uint32_t count,
                          const uint8_t *const *recs, const uint32_t *lens);

/*
 * Read the current lap from offset 0 (see the top), calling fn for each
 * entry in order.  *lap is the lap's number (0 when the file holds no
 * whole entry at offset 0), *end the seq after its last record (= lap
 * when empty).  Returns 0, fn's non-zero value, or -1 with errno (a read
 * failed, ENOMEM, or EPROTO: the entry at offset 0 has the magic of a
 * journal and another format, not one this funneld may overwrite).
 * Changes nothing; the next append goes after the lap read.
 */
int journal_scan(journal *j, journal_fn fn, void *ctx, uint64_t *lap, uint64_t *end);

/* Start lap `lap` at offset 0: the log is durable up to lap - 1 (a
 * checkpoint).  Waits for a flush still running (its failure sticks:
 * journal_wait); writes nothing: the next append overwrites offset 0. */
void journal_new_lap(journal *j, uint64_t lap);

/* The lap, and the bytes it uses so far. */
uint64_t journal_lap(const journal *j);
size_t journal_used(const journal *j);

/* Does an entry of count records of total record bytes fit in what is
 * left of the file? */
int journal_fits(const journal *j, size_t count, size_t bytes);

/*
 * Write an entry of count records (seqs first_seq, ...): record i is
 * bytes [ends[i-1], ends[i]) of recs (ends[-1] being 0).  The caller
 * checked journal_fits().  Waits for a flush still running first, then
 * one pwrite; the entry is not durable before journal_wait() returns 0.
 * Returns 0, ENOMEM, EINVAL (a record shorter than a record's hash: not
 * a record), or the errno of the write or of an earlier flush.
 *
 * A failed write or flush sticks: every later journal_write() and
 * journal_wait() returns its errno, as nothing written since the last
 * successful flush may be called durable (Linux reports a failed
 * writeback once, so no later flush could vouch for it).
 */
int journal_write(journal *j, uint64_t first_seq, size_t count, const void *recs,
                  const size_t *ends);

/* Hand the flush of what was written to the flusher thread and return
 * at once (without a thread: journal_wait flushes). */
void journal_flush_start(journal *j);

/* Does the flush started still run (journal_wait would wait)?  Cheap:
 * one atomic load, for polling between other work. */
int journal_flushing(journal *j);

/* Make what was written durable: wait for the flush started, or flush
 * here when none was.  Returns 0, or the (sticky) errno of a failed
 * write or flush.  journal_new_lap() and journal_close() wait too. */
int journal_wait(journal *j);

#endif /* FUNNEL_DAEMON_JOURNAL_H */
