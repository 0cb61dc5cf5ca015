/*
 * proto/logfmt.h - the names of the log's on-disk layout that more than
 * the daemon reads: the LMDB tables and meta keys the backup, restore and
 * local verification in libfunnel open read-only.  daemon/store.h owns
 * the layout and describes every table; this header only names it, so
 * libfunnel reads the files without depending on daemon/.
 *
 *   FP_LOG_TABLE   seq (native uint64, MDB_INTEGERKEY) -> record bytes
 *   FP_META_TABLE  FP_META_FORMAT -> uint32, FP_META_HEAD_SEQ -> uint64,
 *                  FP_META_HEAD_HASH -> FUNNEL_HASH_BYTES bytes
 *
 * A log in another format than FP_LOG_FORMAT is refused by every reader.
 */
#ifndef FUNNEL_PROTO_LOGFMT_H
#define FUNNEL_PROTO_LOGFMT_H

#define FP_LOG_FORMAT 2
#define FP_LOG_TABLE "log"
#define FP_META_TABLE "meta"
#define FP_META_FORMAT "format"
#define FP_META_HEAD_SEQ "head_seq"
#define FP_META_HEAD_HASH "head_hash"
/* the LMDB data file inside a data directory */
#define FP_LOG_DATA_FILE "data.mdb"
#define FP_LOG_JOURNAL_FILE "journal"   /* funneld's write-ahead journal (daemon/journal.h) */
/* the tables a log has (daemon/store.h): the env must allow this many */
#define FP_LOG_MAX_TABLES 8

#endif /* FUNNEL_PROTO_LOGFMT_H */
