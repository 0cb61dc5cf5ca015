/*
 * daemon/vault.h - crypto-shredding of personal data (PROTOCOL.md
 * "Personal data and erasure").
 *
 * The vault keeps one random 32-byte data key per lead in a key file,
 * keys.dat in the data directory, outside LMDB (whose copy-on-write
 * leaves freed pages, and so old bytes, on disk):
 *
 *   header (64 bytes): "FUNNELKEYS1\0", u32 slot size (96), 16-byte check
 *                      of the master key, zeros
 *   slot i (96 bytes, at 64 + 96 i):
 *                      tag (16: keyed BLAKE2b of the lead id) |
 *                      nonce (24) | the data key wrapped under the master
 *                      key (XChaCha20-Poly1305, AD = tag; 32 + 16) | zeros
 *   an all-zero slot is free; the file grows by 4096 free slots at a time
 *   (so most groups' sync writes data blocks, not a new file size).
 *
 * The master key (32 bytes, raw or 64 hex digits in a file named by
 * --master-key / FUNNEL_MASTER_KEY_FILE) never enters the data
 * directory; tags, wrapping and the check are keyed by subkeys of it.
 *
 * The receiver thread seals ahead (vault_preseal, below): an event's
 * data under its lead's key, or a candidate key for a lead without one,
 * while the writer applies the group before.  The write path calls the
 * vault at one step (ingest.c, "seal"):
 *   vault_seal_event()  before an event's record is encoded: replaces the
 *                       personal values of its data by sealed values under
 *                       the lead's key (the data sealed ahead when that
 *                       was under it; for a lead with no key, the
 *                       candidate sealed ahead, or one created here),
 *                       adds a clear email_domain, and for lead.erased
 *                       retires the lead's key (a later capture in the
 *                       same group gets a fresh one);
 *   vault_mark()/vault_rollback()  undo what events refused or a group
 *                       redone did;
 *   vault_prepare()     before the group's records go to the journal
 *                       (store.h): new slots written and fdatasync'ed, and
 *                       the retired slots' tags and the seq of the group's
 *                       last record written to keys.shred and fdatasync'ed
 *                       (only when the group retires keys);
 *                       A group that retires no key is done with there:
 *                       the next group may be applied and prepared while
 *                       its journal entry is flushed;
 *   vault_finish()      after the group is durable (its journal entry
 *                       flushed: store_group_wait), before any ack: the
 *                       retired slots overwritten in place with zeros and
 *                       fdatasync'ed, keys.shred emptied.  While
 *                       vault_finishing() says a group retires keys, no
 *                       other group may be applied before its finish;
 *   vault_abort()       the group was not stored: undo everything.
 * Crash safety: a key on disk whose record never became durable is
 * harmless (no data uses it); a durable record always has its key on
 * disk (prepare syncs first).  A crash between the journal flush of a
 * lead.erased and the zeroing leaves keys.shred naming the slots and the
 * seq; vault_open() (after store_open replayed the journal) finishes the
 * shred when the log's head reached that seq, and drops the file
 * otherwise.
 *
 * Threads: the writer calls everything but vault_key() and the sealing
 * ahead; the query thread calls vault_key(), the receiver thread
 * vault_preseal() with its own vault_sealer.  A mutex guards the table:
 * the writer changes it under the mutex, and reads it without (no other
 * thread changes it); the others read it under the mutex.
 */
#ifndef FUNNEL_DAEMON_VAULT_H
#define FUNNEL_DAEMON_VAULT_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "envelope.h"

typedef struct vault vault;

/* The key file and its shred list, in the data directory.  A data
 * directory that holds VAULT_KEYS_FILE has sealed personal data (or may
 * have): funneld refuses it without the master key (main.c). */
#define VAULT_KEYS_FILE "keys.dat"
#define VAULT_SHRED_FILE "keys.shred"

/* The personal data paths funneld seals by default. */
#define VAULT_DEFAULT_FIELDS "email,name,first_name,last_name,phone,address,ip"

/*
 * Open (or create) keys.dat in dir with the master key read from
 * master_key_file, sealing the comma-separated data paths in fields.
 * head_seq is the log's committed head (for a pending keys.shred).
 * Returns the vault, or NULL with a message in why.
 */
vault *vault_open(const char *dir, const char *master_key_file, const char *fields,
                  uint64_t head_seq, int durable, char *why, size_t whylen);
void vault_close(vault *v);

/* Read master_key_file as vault_open() does, and forget the key: 0 when
 * it holds a master key, else -1 with a message in why.  Touches nothing
 * on disk (funneld checks its settings before it creates anything). */
int vault_check_master(const char *master_key_file, char *why, size_t whylen);

/*
 * Sealing ahead, on another thread (the receiver's, while the writer
 * applies the group before): for an event with a lead and personal
 * values, the event's data sealed under the lead's key as the table
 * holds it then (read under the table's lock) or, for a lead with none,
 * under the candidate key this sealer made for an earlier event of the
 * lead whose batch is still alive (a capture not applied yet), else a
 * new candidate key, with the slot that would keep it in keys.dat.
 * The writer takes the sealed data when that key is the lead's when it
 * applies the event (vault_seal_event): a candidate for a lead that
 * still has no key becomes its key; the key read ahead if the lead
 * still has it (not retired by an erasure meanwhile).  Otherwise the
 * pre-sealing is dropped and the writer seals as it would without.
 * So sealing costs the writer nothing for most events: a capture's
 * new lead, and every later event of a known lead.
 * A vault_sealer is one thread's (random bytes, scratch); besides the
 * table it reads the vault's wrapping keys and fields, which do not
 * change after vault_open.
 */
typedef struct vault_sealer vault_sealer;
typedef struct vault_pre {
	uint8_t tag[16];              /* the lead's tag */
	uint8_t key[32];              /* a copy: wiped by vault_pre_forget */
	int fresh;                    /* 1: a candidate key, slot set; 0: the lead's key */
	const uint8_t *data;          /* the data sealed under key */
	size_t len;
	uint8_t slot[96];             /* fresh: the key's slot in keys.dat */
} vault_pre;

vault_sealer *vault_sealer_new(vault *v);   /* NULL when out of memory */
void vault_sealer_free(vault_sealer *s);
/* *out: the event's pre-sealing, in z's memory, or NULL when the event
 * has nothing to seal (or a producer's sealed value, which the writer
 * refuses).  0, or -1 when out of memory (*out NULL: the writer seals). */
int vault_preseal(vault_sealer *s, const fp_event *ev, msgpack_zone *z, vault_pre **out);
/* Wipe p's key and forget p (p may be NULL): once the writer is done
 * with its batch; by the thread of s, which made p.  So a copy of a
 * lead's key lives in the pre-sealings of the batches decoded before
 * the writer applied its erasure, until they are released, a few
 * groups after the erasure's ack (as the query thread's vault_key()
 * copies live until its reply is sent); keys.dat is what the erasure
 * empties at once. */
void vault_pre_forget(vault_sealer *s, vault_pre *p);

/* Events sealed ahead that the writer took, and those it sealed again
 * (their key was not the lead's any more: an erasure or a refused
 * capture came between), since vault_open.  The writer's thread. */
void vault_ahead(const vault *v, uint64_t *taken, uint64_t *dropped);

/*
 * Seal ev's personal values (ev->data_at/data_len then point at the new
 * data bytes, owned by the vault until the next call, or pre's) and
 * retire the lead's key when ev is lead.erased.  pre (may be NULL) is
 * ev's pre-sealing: taken when the lead has no key.  Events without a
 * lead or without personal values are left as they are.  Returns
 * FUNNEL_OK, FUNNEL_EVALUE (err filled: a sealed value sent by a
 * producer), or FUNNEL_ENOMEM / FUNNEL_ESTORAGE.
 */
funnel_err vault_seal_event(vault *v, fp_event *ev, const vault_pre *pre, fp_error *err);

/*
 * For an event whose id is already stored (ingest.c, same_event): seal
 * ev's personal values as vault_seal_event() would, but with the lead's
 * current key and the nonces of the sealed values at the same paths of
 * stored (the stored record's data), so that the same event gives the
 * same bytes.  Creates no key.  Returns 0 (ev->data_at/data_len set when
 * there was something to seal), 1 when the lead has no key any more (it
 * was erased: its personal values cannot be compared), -1 when out of
 * memory.
 */
int vault_reseal_event(vault *v, fp_event *ev, const msgpack_object *stored);

size_t vault_mark(const vault *v);
void vault_rollback(vault *v, size_t mark);
int vault_prepare(vault *v, uint64_t commit_seq);   /* 0 or an errno value */
/* The group that committed commit_seq is durable: when it is the group
 * prepared last and retires keys, they are destroyed (else nothing: a
 * group finished while the next was applied leaves the next's ops). */
int vault_finish(vault *v, uint64_t commit_seq);   /* 0 or an errno value */
int vault_finishing(const vault *v);               /* 1: the group prepared last retires keys */
void vault_abort(vault *v);

/* The lead's current data key into key: 1, 0 when it has none. */
int vault_key(vault *v, const char *lead, size_t len, uint8_t key[32]);

#endif
