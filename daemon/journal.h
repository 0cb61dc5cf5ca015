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
 *   - the file is two regions, [0, size/2) and [size/2, size); a lap
 *     starts at the start of one after a checkpoint committed the log up
 *     to seq L-1 (L is the lap's number, the first seq it may hold), in
 *     the region the lap before did not use, so that lap stays readable
 *     until the next checkpoint: a checkpoint's meta page is not
 *     flushed by the checkpoint itself but by the next one (store.h),
 *     and until then a power loss may take data.mdb back to the
 *     checkpoint before, whose later records are in that lap;
 *   - an entry: a header (JOURNAL_HEADER_BYTES, native endian)
 *       u32 magic "FJNL", u32 format (2), u64 lap, u64 first_seq,
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
 * Reading (journal_scan) reads the lap that starts each region, the
 * older first.  A lap's entries are taken while each is whole (its
 * checksum, and each record's own hash), belongs to the lap and
 * continues it seq by seq (first_seq is the previous entry's first_seq
 * + count, the first entry's first_seq is its lap) within its region.
 * The first entry that fails any of these ends the lap: a torn last
 * append, or an entry of the lap two laps back met past the end of the
 * current one.  The newer lap is the one appends continue; the older
 * is, when the newer's first entry was torn (its header too: the region
 * then starts no lap), or when the newer holds no whole entry and its
 * number is not the seq after the older's last (a header that only looks
 * like a lap's first must not make the next lap overwrite the older).
 * Which records past the log's head are replayed, and that they chain
 * to it, is the store's business (store.c).
 *
 * Format 1 (funneld before the two regions) had one lap at a time, from
 * offset 0 and up to the file's end.  Such a lap is read (to the end of
 * the file) and continued; the next lap starts only once the log is
 * durable up to its end (journal_lap_spans), at offset 0, in format 2,
 * so a funneld that knows format 1 only refuses the file from then on
 * instead of missing its second region.
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
#define JOURNAL_FORMAT 2
#define JOURNAL_FORMAT_V1 1   /* one lap at a time, from offset 0: read, not written */

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
 * Read the two laps (see the top), the older first, calling fn for each
 * entry in order that holds a record past seq `known` (entries of
 * records up to it, which the log holds, are taken on their headers:
 * neither read nor checked further, nor passed to fn).  *lap is the
 * newer lap's number (0 when neither region starts with a whole entry),
 * *end the seq after its last record.
 * Returns 0, fn's non-zero value, or -1 with errno (a read failed,
 * ENOMEM, or EPROTO: a region starts with the magic of a journal and a
 * format this funneld does not know, not one it may overwrite).
 * Changes nothing; the next append goes after the newer lap.
 */
int journal_scan(journal *j, uint64_t known, journal_fn fn, void *ctx, uint64_t *lap,
                 uint64_t *end);

/* Start lap `lap` at the start of the region the current lap does not
 * use (region 0 after a format-1 lap): the log is committed up to
 * lap - 1 (a checkpoint) and durable up to the start of the current lap
 * (all the lap overwritten holds: the caller's to ensure).  Waits for a
 * flush still running (its failure sticks: journal_wait); writes
 * nothing: the next append overwrites the region's start. */
void journal_new_lap(journal *j, uint64_t lap);

/* Zero what follows the current lap's end in its region, so that no
 * entry an earlier run left there (a journal copied while appended, a
 * --no-sync run's writeback out of order) can follow the next append
 * as if it were the lap's next one.  For a lap continued from a scan;
 * the zeros reach the disk with the next flush.  0 or an errno value. */
int journal_clear_rest(journal *j);

/* The lap, the bytes it uses so far, and the bytes its region holds. */
uint64_t journal_lap(const journal *j);
size_t journal_used(const journal *j);
size_t journal_lap_room(const journal *j);

/* Is the current lap a format-1 one, which may run into the region the
 * next lap takes (so that lap may start only once the log is durable up
 * to this one's end)? */
int journal_lap_spans(const journal *j);

/* Does an entry of count records of total record bytes fit in what is
 * left of the lap's region? */
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
