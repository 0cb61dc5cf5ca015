/*
 * daemon/vault.c - per-lead data keys and sealing (see vault.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "vault.h"
#include "log.h"
#include "mp.h"
#include "seal.h"

#define HEADER_BYTES 64
#define SLOT_BYTES 96
#define TAG_BYTES 16
#define WRAPPED_BYTES (FP_SEAL_KEY_BYTES + crypto_aead_xchacha20poly1305_ietf_ABYTES)
#define MAGIC "FUNNELKEYS1"
#define SHRED_MAGIC "FUNNELSHRED1"
#define NBUCKETS (1u << 18)
#define NONE UINT32_MAX
#define MAX_FIELDS 64
/* The file grows by this many zero (free) slots at a time, so that most
 * groups' fdatasync writes data blocks only, no new size. */
#define GROW_SLOTS 4096

typedef struct slot {
	uint8_t tag[TAG_BYTES];
	uint8_t key[FP_SEAL_KEY_BYTES];
	uint32_t next;            /* chain in its bucket */
	uint8_t used;             /* holds a key (live or retiring) */
} slot;

enum { OP_FRESH, OP_RETIRE };
typedef struct op {
	int kind;
	uint32_t slot;
	const uint8_t *wrapped;   /* OP_FRESH: the slot as keys.dat holds it, made
	                           * ahead (vault_pre, the batch's memory), or NULL */
} op;

/*
 * What sealing needs besides the vault's read-only keys and fields:
 * random bytes drawn ahead (one getrandom per 4096 bytes; taken bytes
 * are wiped) and scratch buffers.  The writer's is in the vault, the
 * receiver's (vault_sealer_new) its own: each used by one thread.
 */
#define RECENT_SLOTS 8192   /* a power of two */

struct vault_sealer {
	vault *v;                 /* read-only but for its lock (the receiver's key lookups) */
	/* The candidates this sealer made, by the lead's tag (one per
	 * bucket, the latest), while their batch lives (vault_pre_forget
	 * drops them): a later event of a lead captured in a batch the
	 * writer has not applied yet is sealed under the capture's
	 * candidate, which is the lead's key once the capture is applied. */
	const vault_pre *recent[RECENT_SLOTS];
	uint8_t random[4096];
	size_t random_used;
	msgpack_sbuffer out;      /* the sealed data of the last event */
	msgpack_sbuffer plain;    /* one value's encoding */
};

struct vault {
	int fd, shred_fd, durable;
	uint8_t wrap_key[32], tag_key[32];
	char *fields[MAX_FIELDS];
	size_t field_len[MAX_FIELDS];   /* strlen(fields[i]): asked per key of every event */
	size_t nfields;
	pthread_mutex_t lock;     /* slots, buckets: the query thread reads them */
	slot *slots;
	uint32_t nslots, cap;
	uint32_t file_slots;      /* slots the file holds (written, zero or not) */
	uint32_t *buckets;
	uint32_t *free_slots;     /* zeroed slots to reuse; as many as cap */
	uint32_t nfree;
	op *ops;                  /* this group's changes, in order; a group that
	                           * retires no key is done with at vault_prepare,
	                           * one that does at vault_finish (finishing) */
	size_t nops, ops_cap;
	vault_sealer s;           /* the writer's */
	uint8_t *wbuf;            /* prepare: a run of slots to write */
	op *fresh;                /* prepare: the group's new slots, sorted */
	size_t fresh_cap;
	int shred_written;        /* keys.shred names this group's retired slots */
	int finishing;            /* the group prepared last retires keys: its ops wait
	                           * for vault_finish */
	uint64_t finish_seq;      /* ... and the seq it commits (vault_prepare's) */
	uint64_t ahead_taken, ahead_dropped;   /* vault_ahead(): the writer's alone */
};

/* n random bytes (n <= sizeof s->random) into out. */
static void
draw(vault_sealer *s, void *out, size_t n)
{
	if (s->random_used + n > sizeof s->random) {
		randombytes_buf(s->random, sizeof s->random);
		s->random_used = 0;
	}
	memcpy(out, s->random + s->random_used, n);
	sodium_memzero(s->random + s->random_used, n);
	s->random_used += n;
}

/* ---- the table ---- */

static void
lead_tag(const vault *v, const char *lead, size_t len, uint8_t tag[TAG_BYTES])
{
	crypto_generichash(tag, TAG_BYTES, (const uint8_t *)lead, len, v->tag_key, sizeof v->tag_key);
}

static uint32_t
bucket_of(const uint8_t tag[TAG_BYTES])
{
	uint32_t b;
	memcpy(&b, tag, sizeof b);
	return b & (NBUCKETS - 1);
}

static uint32_t
find(const vault *v, const uint8_t tag[TAG_BYTES])
{
	for (uint32_t i = v->buckets[bucket_of(tag)]; i != NONE; i = v->slots[i].next) {
		if (sodium_memcmp(v->slots[i].tag, tag, TAG_BYTES) == 0)
			return i;
	}
	return NONE;
}

static void
link_slot(vault *v, uint32_t i)
{
	uint32_t b = bucket_of(v->slots[i].tag);
	v->slots[i].next = v->buckets[b];
	v->buckets[b] = i;
}

static void
unlink_slot(vault *v, uint32_t i)
{
	uint32_t *p = &v->buckets[bucket_of(v->slots[i].tag)];
	while (*p != NONE && *p != i)
		p = &v->slots[*p].next;
	if (*p == i)
		*p = v->slots[i].next;
	v->slots[i].next = NONE;
}

/* A free slot index (grown when none), under the lock.  NONE when out of memory. */
static uint32_t
take_slot(vault *v)
{
	if (v->nfree > 0)
		return v->free_slots[--v->nfree];
	if (v->nslots == v->cap) {
		uint32_t cap = v->cap ? v->cap * 2 : 1024;
		slot *s = realloc(v->slots, (size_t)cap * sizeof *s);
		if (s == NULL)
			return NONE;
		v->slots = s;
		uint32_t *f = realloc(v->free_slots, (size_t)cap * sizeof *f);
		if (f == NULL)
			return NONE;
		v->free_slots = f;
		v->cap = cap;
	}
	memset(&v->slots[v->nslots], 0, sizeof v->slots[0]);
	v->slots[v->nslots].next = NONE;
	return v->nslots++;
}

static void
release_slot(vault *v, uint32_t i)
{
	sodium_memzero(&v->slots[i], sizeof v->slots[i]);
	v->slots[i].next = NONE;
	v->free_slots[v->nfree++] = i;
}

static int
push_op(vault *v, int kind, uint32_t i, const uint8_t *wrapped)
{
	if (v->nops == v->ops_cap) {
		size_t cap = v->ops_cap ? v->ops_cap * 2 : 256;
		op *o = realloc(v->ops, cap * sizeof *o);
		if (o == NULL)
			return -1;
		v->ops = o;
		v->ops_cap = cap;
	}
	v->ops[v->nops++] = (op){ kind, i, wrapped };
	return 0;
}

/* A new live slot for the lead of tag: key (NULL: drawn here), wrapped
 * (its keys.dat bytes made ahead, or NULL).  NONE when out of memory. */
static uint32_t
new_key(vault *v, const uint8_t tag[TAG_BYTES], const uint8_t *key, const uint8_t *wrapped)
{
	pthread_mutex_lock(&v->lock);
	uint32_t i = take_slot(v);
	if (i != NONE) {
		memcpy(v->slots[i].tag, tag, TAG_BYTES);
		if (key != NULL)
			memcpy(v->slots[i].key, key, FP_SEAL_KEY_BYTES);
		else
			draw(&v->s, v->slots[i].key, FP_SEAL_KEY_BYTES);
		v->slots[i].used = 1;
		link_slot(v, i);
		if (push_op(v, OP_FRESH, i, wrapped) != 0) {
			unlink_slot(v, i);
			release_slot(v, i);
			i = NONE;
		}
	}
	pthread_mutex_unlock(&v->lock);
	return i;
}

/* The lead's live key slot, created when it has none.  NONE when out of memory. */
static uint32_t
key_for(vault *v, funnel_str lead)
{
	uint8_t tag[TAG_BYTES];
	lead_tag(v, lead.ptr, lead.len, tag);
	uint32_t i = find(v, tag);
	return i != NONE ? i : new_key(v, tag, NULL, NULL);
}

static int
retire(vault *v, funnel_str lead)
{
	uint8_t tag[TAG_BYTES];
	lead_tag(v, lead.ptr, lead.len, tag);
	uint32_t i = find(v, tag);
	if (i == NONE)
		return 0;
	pthread_mutex_lock(&v->lock);
	unlink_slot(v, i);
	int rc = push_op(v, OP_RETIRE, i, NULL);
	if (rc != 0)
		link_slot(v, i);
	pthread_mutex_unlock(&v->lock);
	return rc;
}

/* The live key of the lead of tag into key, from a thread other than
 * the writer's (which changes the table under the lock): 1, 0 when none. */
static int
key_of_tag(vault *v, const uint8_t tag[TAG_BYTES], uint8_t key[FP_SEAL_KEY_BYTES])
{
	int found = 0;
	pthread_mutex_lock(&v->lock);
	uint32_t i = find(v, tag);
	if (i != NONE) {
		memcpy(key, v->slots[i].key, FP_SEAL_KEY_BYTES);
		found = 1;
	}
	pthread_mutex_unlock(&v->lock);
	return found;
}

int
vault_key(vault *v, const char *lead, size_t len, uint8_t key[32])
{
	uint8_t tag[TAG_BYTES];
	lead_tag(v, lead, len, tag);
	return key_of_tag(v, tag, key);
}

/* ---- sealing ---- */

static int
is_personal(const vault *v, const char *path, size_t n)
{
	for (size_t i = 0; i < v->nfields; i++) {
		if (v->field_len[i] == n && memcmp(v->fields[i], path, n) == 0)
			return 1;
	}
	return 0;
}

/* 1 when some personal path lies under path (path + "."). */
static int
has_personal_below(const vault *v, const char *path, size_t n)
{
	for (size_t i = 0; i < v->nfields; i++) {
		if (v->field_len[i] > n + 1 && memcmp(v->fields[i], path, n) == 0 && v->fields[i][n] == '.')
			return 1;
	}
	return 0;
}

/* Does map (at path) hold a personal value?  1/0; -1 for a producer's sealed value. */
static int
scan(const vault *v, const msgpack_object *map, char *path, size_t plen, int depth)
{
	int found = 0;
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object_kv *kv = &map->via.map.ptr[i];
		if (fp_seal_is(&kv->val))
			return -1;
		int joined = fp_seal_path_join(path, plen, &kv->key);
		if (joined < 0)
			continue;
		size_t n = (size_t)joined;
		if (is_personal(v, path, n))
			found = 1;
		else if (kv->val.type == MSGPACK_OBJECT_MAP && depth + 1 < FP_SEAL_MAX_DEPTH) {
			/* every map is walked for a producer's sealed value; only those
			 * with a personal path below can hold personal values */
			int rc = scan(v, &kv->val, path, n, depth + 1);
			if (rc < 0)
				return rc;
			if (has_personal_below(v, path, n))
				found |= rc;
		}
	}
	return found;
}

/* The lower-cased domain of a top-level string email, when the map has
 * no email_domain of its own.  *len 0: none. */
static const char *
derive_domain(const vault *v, const msgpack_object *map, size_t *len)
{
	const msgpack_object *e = mp_find(map, "email");
	*len = 0;
	if (e == NULL || e->type != MSGPACK_OBJECT_STR || !is_personal(v, "email", 5) ||
	    mp_find(map, "email_domain") != NULL)
		return NULL;
	const char *at = memrchr(e->via.str.ptr, '@', e->via.str.size);
	if (at == NULL)
		return NULL;
	size_t n = e->via.str.size - (size_t)(at + 1 - e->via.str.ptr);
	if (n == 0 || n > 253)
		return NULL;
	*len = n;
	return at + 1;
}

/* The value under key k in map m (a str key), or NULL. */
static const msgpack_object *
same_key(const msgpack_object *m, const msgpack_object *k)
{
	if (m == NULL || m->type != MSGPACK_OBJECT_MAP || k->type != MSGPACK_OBJECT_STR)
		return NULL;
	for (uint32_t i = 0; i < m->via.map.size; i++) {
		const msgpack_object *mk = &m->via.map.ptr[i].key;
		if (mk->type == MSGPACK_OBJECT_STR && mk->via.str.size == k->via.str.size &&
		    memcmp(mk->via.str.ptr, k->via.str.ptr, k->via.str.size) == 0)
			return &m->via.map.ptr[i].val;
	}
	return NULL;
}

/* Pack map with its personal values sealed.  Nonces are drawn at random,
 * or, with like (a stored data map at the same path), taken from the
 * sealed value at the same path in it, so that the same values give the
 * same bytes (vault_reseal_event). */
static int
pack_sealed(vault_sealer *s, msgpack_packer *pk, const uint8_t *key, funnel_str lead,
            const msgpack_object *map, const msgpack_object *like, char *path, size_t plen,
            int depth)
{
	const vault *v = s->v;
	int rc = 0;
	for (uint32_t i = 0; i < map->via.map.size && rc == 0; i++) {
		const msgpack_object_kv *kv = &map->via.map.ptr[i];
		rc |= msgpack_pack_object(pk, kv->key);
		int joined = fp_seal_path_join(path, plen, &kv->key);
		if (joined < 0) {
			rc |= msgpack_pack_object(pk, kv->val);
			continue;
		}
		size_t n = (size_t)joined;
		const msgpack_object *was = like != NULL ? same_key(like, &kv->key) : NULL;
		if (is_personal(v, path, n)) {
			msgpack_packer pp;
			uint8_t nonce[FP_SEAL_NONCE_BYTES];
			s->plain.size = 0;
			msgpack_packer_init(&pp, &s->plain, msgpack_sbuffer_write);
			rc |= msgpack_pack_object(&pp, kv->val);
			if (was != NULL && fp_seal_is(was) && was->via.ext.size >= FP_SEAL_OVERHEAD)
				memcpy(nonce, was->via.ext.ptr + 1, sizeof nonce);
			else
				draw(s, nonce, sizeof nonce);
			rc |= fp_seal_pack(pk, key, nonce, lead, path, n, s->plain.data, s->plain.size);
			sodium_memzero(s->plain.data, s->plain.size);
		} else if (kv->val.type == MSGPACK_OBJECT_MAP && depth + 1 < FP_SEAL_MAX_DEPTH &&
		           has_personal_below(v, path, n)) {
			rc |= msgpack_pack_map(pk, kv->val.via.map.size);
			rc |= pack_sealed(s, pk, key, lead, &kv->val, was, path, n, depth + 1);
		} else {
			rc |= msgpack_pack_object(pk, kv->val);
		}
	}
	return rc;
}

/* Seal ev's data under key into s->out (nonces as pack_sealed says). */
static funnel_err
seal_into(vault_sealer *s, fp_event *ev, const uint8_t *key, const msgpack_object *like,
          fp_error *err)
{
	char path[FP_SEAL_MAX_PATH + 1];
	size_t dlen;
	const char *dom = derive_domain(s->v, ev->data, &dlen);
	msgpack_packer pk;
	s->out.size = 0;
	msgpack_packer_init(&pk, &s->out, msgpack_sbuffer_write);
	int rc = msgpack_pack_map(&pk, ev->data->via.map.size + (dom != NULL));
	rc |= pack_sealed(s, &pk, key, ev->lead, ev->data, like, path, 0, 0);
	if (dom != NULL) {
		char low[256];
		for (size_t k = 0; k < dlen; k++)
			low[k] = (char)((dom[k] >= 'A' && dom[k] <= 'Z') ? dom[k] - 'A' + 'a' : dom[k]);
		rc |= mp_pack_key(&pk, "email_domain");
		rc |= msgpack_pack_str(&pk, dlen) | msgpack_pack_str_body(&pk, low, dlen);
	}
	if (rc != 0)
		return fp_error_set(err, FUNNEL_ENOMEM, "", "out of memory sealing data");
	ev->data_at = s->out.data;
	ev->data_len = s->out.size;
	return FUNNEL_OK;
}

int
vault_reseal_event(vault *v, fp_event *ev, const msgpack_object *stored)
{
	char path[FP_SEAL_MAX_PATH + 1];
	uint8_t tag[TAG_BYTES];
	if (ev->lead.ptr == NULL || ev->data == NULL || ev->data->type != MSGPACK_OBJECT_MAP ||
	    scan(v, ev->data, path, 0, 0) <= 0)
		return 0;
	lead_tag(v, ev->lead.ptr, ev->lead.len, tag);
	uint32_t i = find(v, tag);
	if (i == NONE)
		return 1;
	return seal_into(&v->s, ev, v->slots[i].key, stored, NULL) == FUNNEL_OK ? 0 : -1;
}

/* Is pre's key the lead's now (see vault_seal_event)?  A candidate is
 * made the lead's key here. */
static int
take_pre(vault *v, const vault_pre *pre)
{
	uint32_t i = find(v, pre->tag);
	int taken = pre->fresh ? i == NONE && new_key(v, pre->tag, pre->key, pre->slot) != NONE
	                       : i != NONE && sodium_memcmp(v->slots[i].key, pre->key,
	                                                    FP_SEAL_KEY_BYTES) == 0;
	if (taken)
		v->ahead_taken++;
	else
		v->ahead_dropped++;
	return taken;
}

void
vault_ahead(const vault *v, uint64_t *taken, uint64_t *dropped)
{
	*taken = v->ahead_taken;
	*dropped = v->ahead_dropped;
}

funnel_err
vault_seal_event(vault *v, fp_event *ev, const vault_pre *pre, fp_error *err)
{
	char path[FP_SEAL_MAX_PATH + 1];
	if (ev->lead.ptr == NULL)
		return FUNNEL_OK;
	if (ev->data != NULL && ev->data->type == MSGPACK_OBJECT_MAP) {
		/* a pre-sealing is made only for data with personal values and
		 * no sealed one (vault_preseal) */
		int found = pre != NULL ? 1 : scan(v, ev->data, path, 0, 0);
		if (found < 0)
			return fp_error_set(err, FUNNEL_EVALUE, "data",
			                    "data holds a msgpack ext of type %d, which funnel reserves for "
			                    "sealed personal values", FP_SEAL_EXT);
		/* the sealing ahead is taken when its key is the lead's: the
		 * candidate of a lead without one (which then becomes its key),
		 * or the key the lead had when it was made and still has (not
		 * retired meanwhile); else the data is sealed here */
		if (found && pre != NULL && take_pre(v, pre)) {
			ev->data_at = (const char *)pre->data;
			ev->data_len = pre->len;
		} else if (found) {
			uint32_t i = key_for(v, ev->lead);
			if (i == NONE)
				return fp_error_set(err, FUNNEL_ENOMEM, "", "out of memory creating a data key");
			funnel_err se = seal_into(&v->s, ev, v->slots[i].key, NULL, err);
			if (se != FUNNEL_OK)
				return se;
		}
	}
	if (ev->spec->type == FP_EV_ERASED && retire(v, ev->lead) != 0)
		return fp_error_set(err, FUNNEL_ENOMEM, "", "out of memory retiring a data key");
	return FUNNEL_OK;
}

/* ---- sealing ahead, off the writer ---- */

/* The on-disk form of the slot of tag and key into out (SLOT_BYTES). */
static void
seal_slot(vault_sealer *s, const uint8_t *tag, const uint8_t *key, uint8_t *out)
{
	memset(out, 0, SLOT_BYTES);
	memcpy(out, tag, TAG_BYTES);
	draw(s, out + TAG_BYTES, FP_SEAL_NONCE_BYTES);
	crypto_aead_xchacha20poly1305_ietf_encrypt(out + TAG_BYTES + FP_SEAL_NONCE_BYTES, NULL, key,
	                                           FP_SEAL_KEY_BYTES, tag, TAG_BYTES, NULL,
	                                           out + TAG_BYTES, s->v->wrap_key);
}

_Static_assert(sizeof ((vault_pre *)0)->slot == SLOT_BYTES, "vault_pre.slot is a slot");
_Static_assert(sizeof ((vault_pre *)0)->tag == TAG_BYTES, "vault_pre.tag is a tag");
_Static_assert(sizeof ((vault_pre *)0)->key == FP_SEAL_KEY_BYTES, "vault_pre.key is a key");

static void
sealer_init(vault_sealer *s, vault *v)
{
	s->v = v;
	s->random_used = sizeof s->random;   /* drawn at the first use */
	msgpack_sbuffer_init(&s->out);
	msgpack_sbuffer_init(&s->plain);
}

static void
sealer_fini(vault_sealer *s)
{
	sodium_memzero(s->random, sizeof s->random);
	msgpack_sbuffer_destroy(&s->out);
	msgpack_sbuffer_destroy(&s->plain);
}

vault_sealer *
vault_sealer_new(vault *v)
{
	vault_sealer *s = calloc(1, sizeof *s);
	if (s != NULL)
		sealer_init(s, v);
	return s;
}

void
vault_sealer_free(vault_sealer *s)
{
	if (s == NULL)
		return;
	sealer_fini(s);
	free(s);
}

int
vault_preseal(vault_sealer *s, const fp_event *ev, msgpack_zone *z, vault_pre **out)
{
	char path[FP_SEAL_MAX_PATH + 1];
	*out = NULL;
	if (ev->lead.ptr == NULL || ev->data == NULL || ev->data->type != MSGPACK_OBJECT_MAP ||
	    scan(s->v, ev->data, path, 0, 0) <= 0)
		return 0;   /* nothing to seal, or a producer's sealed value: the writer says so */
	vault_pre *p = msgpack_zone_malloc(z, sizeof *p);
	if (p == NULL)
		return -1;
	lead_tag(s->v, ev->lead.ptr, ev->lead.len, p->tag);
	/* under the lead's key when it has one (most events of a known lead),
	 * or the candidate sealed ahead for its capture a batch or two
	 * before, else under a new candidate, with the slot that would keep
	 * it */
	const vault_pre **r = &s->recent[bucket_of(p->tag) & (RECENT_SLOTS - 1)];
	p->fresh = 0;
	if (key_of_tag(s->v, p->tag, p->key))
		;
	else if (*r != NULL && sodium_memcmp((*r)->tag, p->tag, TAG_BYTES) == 0)
		memcpy(p->key, (*r)->key, sizeof p->key);
	else {
		p->fresh = 1;
		draw(s, p->key, sizeof p->key);
	}
	fp_event e = *ev;
	uint8_t *d = NULL;
	if (seal_into(s, &e, p->key, NULL, NULL) != FUNNEL_OK ||
	    (d = msgpack_zone_malloc(z, e.data_len)) == NULL) {
		sodium_memzero(p->key, sizeof p->key);   /* p is in no batch: forget() never sees it */
		return -1;
	}
	memcpy(d, e.data_at, e.data_len);
	p->data = d;
	p->len = e.data_len;
	if (p->fresh) {
		seal_slot(s, p->tag, p->key, p->slot);
		*r = p;
	}
	*out = p;
	return 0;
}

void
vault_pre_forget(vault_sealer *s, vault_pre *p)
{
	if (p == NULL)
		return;
	const vault_pre **r = &s->recent[bucket_of(p->tag) & (RECENT_SLOTS - 1)];
	if (*r == p)
		*r = NULL;
	sodium_memzero(p->key, sizeof p->key);
}

/* ---- the group ---- */

size_t
vault_mark(const vault *v)
{
	return v->nops;
}

void
vault_rollback(vault *v, size_t mark)
{
	pthread_mutex_lock(&v->lock);
	while (v->nops > mark) {
		op o = v->ops[--v->nops];
		if (o.kind == OP_FRESH) {
			unlink_slot(v, o.slot);
			release_slot(v, o.slot);
		} else {
			link_slot(v, o.slot);
		}
	}
	pthread_mutex_unlock(&v->lock);
}

static int
sync_fd(const vault *v, int fd)
{
	return v->durable && fdatasync(fd) != 0 ? errno : 0;
}

void
vault_abort(vault *v)
{
	/* keys.shred names a commit that did not happen, whose seq a later
	 * group will use: it must not outlive this group */
	if (v->shred_written) {
		if (ftruncate(v->shred_fd, 0) != 0 || sync_fd(v, v->shred_fd) != 0)
			log_error("cannot empty keys.shred: %s", strerror(errno));
		v->shred_written = 0;
	}
	v->finishing = 0;
	/* (a group that retired nothing and failed after its prepare keeps
	 * its new keys, on the disk and here: unused, harmless, and the
	 * lead's key should it come again) */
	vault_rollback(v, 0);
}

static int
write_all(int fd, const void *buf, size_t n, off_t at)
{
	const uint8_t *p = buf;
	while (n > 0) {
		ssize_t w = pwrite(fd, p, n, at);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return errno;
		}
		p += w;
		n -= (size_t)w;
		at += w;
	}
	return 0;
}

static off_t
slot_at(uint32_t i)
{
	return HEADER_BYTES + (off_t)i * SLOT_BYTES;
}

/* Make room in the file for slots below n: zero slots, GROW_SLOTS at a time. */
static int
extend(vault *v, uint32_t n)
{
	static const uint8_t zeros[SLOT_BYTES * 64];
	if (n <= v->file_slots)
		return 0;
	uint32_t want = (n + GROW_SLOTS - 1) / GROW_SLOTS * GROW_SLOTS;
	for (uint32_t i = v->file_slots; i < want; i += 64) {
		int rc = write_all(v->fd, zeros, sizeof zeros, slot_at(i));
		if (rc != 0)
			return rc;
	}
	v->file_slots = want;
	return 0;
}

static int
cmp_slot(const void *a, const void *b)
{
	uint32_t x = ((const op *)a)->slot, y = ((const op *)b)->slot;
	return x < y ? -1 : x > y;
}

#define RUN_SLOTS 256

int
vault_prepare(vault *v, uint64_t commit_seq)
{
	int fresh = 0, rc;
	size_t retired = 0, nfresh = 0;
	if ((rc = extend(v, v->nslots)) != 0)
		return rc;
	if (v->nops > v->fresh_cap) {
		op *f = realloc(v->fresh, v->nops * sizeof *f);
		if (f == NULL)
			return ENOMEM;
		v->fresh = f;
		v->fresh_cap = v->nops;
	}
	if (v->wbuf == NULL && (v->wbuf = malloc(RUN_SLOTS * SLOT_BYTES)) == NULL)
		return ENOMEM;
	for (size_t k = 0; k < v->nops; k++) {
		if (v->ops[k].kind == OP_RETIRE)
			retired++;
		else
			v->fresh[nfresh++] = v->ops[k];
	}
	/* new slots in file order, each run of neighbours in one write */
	if (nfresh > 1)     /* v->fresh is NULL while no group has had an op */
		qsort(v->fresh, nfresh, sizeof *v->fresh, cmp_slot);
	for (size_t k = 0; k < nfresh;) {
		size_t n = 0;
		while (k + n < nfresh && n < RUN_SLOTS && v->fresh[k + n].slot == v->fresh[k].slot + n) {
			const op *o = &v->fresh[k + n];
			if (o->wrapped != NULL)
				memcpy(v->wbuf + n * SLOT_BYTES, o->wrapped, SLOT_BYTES);
			else
				seal_slot(&v->s, v->slots[o->slot].tag, v->slots[o->slot].key,
				          v->wbuf + n * SLOT_BYTES);
			n++;
		}
		if ((rc = write_all(v->fd, v->wbuf, n * SLOT_BYTES, slot_at(v->fresh[k].slot))) != 0)
			return rc;
		k += n;
		fresh = 1;
	}
	if (fresh && (rc = sync_fd(v, v->fd)) != 0)
		return rc;
	if (retired == 0) {
		/* its keys are on the disk: nothing is left to finish, and the
		 * next group may be applied before this one is durable (its
		 * ops then are the next group's alone) */
		v->nops = 0;
		return 0;
	}
	v->finishing = 1;
	v->finish_seq = commit_seq;
	/* keys.shred: magic, the seq the group commits, n, then n (slot, tag) */
	size_t len = 12 + 8 + 4 + retired * (4 + TAG_BYTES);
	uint8_t *buf = malloc(len), *p = buf;
	if (buf == NULL)
		return ENOMEM;
	memcpy(p, SHRED_MAGIC, 12);
	memcpy(p + 12, &commit_seq, 8);
	uint32_t n32 = (uint32_t)retired;
	memcpy(p + 20, &n32, 4);
	p += 24;
	for (size_t k = 0; k < v->nops; k++) {
		if (v->ops[k].kind != OP_RETIRE)
			continue;
		memcpy(p, &v->ops[k].slot, 4);
		memcpy(p + 4, v->slots[v->ops[k].slot].tag, TAG_BYTES);
		p += 4 + TAG_BYTES;
	}
	v->shred_written = 1;
	rc = write_all(v->shred_fd, buf, len, 0);
	free(buf);
	if (rc == 0 && ftruncate(v->shred_fd, (off_t)len) != 0)
		rc = errno;
	if (rc == 0)
		rc = sync_fd(v, v->shred_fd);
	return rc;
}

/* Overwrite slot i with zeros on disk (not synced). */
static int
zero_slot(vault *v, uint32_t i)
{
	static const uint8_t zeros[SLOT_BYTES];
	return write_all(v->fd, zeros, sizeof zeros, slot_at(i));
}

int
vault_finishing(const vault *v)
{
	return v->finishing;
}

int
vault_finish(vault *v, uint64_t commit_seq)
{
	int retired = 0, rc = 0;
	/* a group done with at its prepare, or one before the group prepared
	 * last (finished while that one was applied: its ops are the later
	 * group's, whose records are not durable yet) */
	if (!v->finishing || commit_seq < v->finish_seq)
		return 0;
	v->finishing = 0;
	for (size_t k = 0; k < v->nops && rc == 0; k++) {
		if (v->ops[k].kind == OP_RETIRE) {
			rc = zero_slot(v, v->ops[k].slot);
			retired = 1;
		}
	}
	if (retired) {
		/* keys are destroyed on disk before they are forgotten in memory */
		if (rc == 0)
			rc = sync_fd(v, v->fd);
		if (rc == 0 && ftruncate(v->shred_fd, 0) != 0)
			rc = errno;
		if (rc == 0)
			rc = sync_fd(v, v->shred_fd);
		/* committed: should the zeroing have failed, keys.shred stays for
		 * the next start to finish; no later abort may empty it */
		v->shred_written = 0;
		pthread_mutex_lock(&v->lock);
		for (size_t k = 0; k < v->nops; k++) {
			if (v->ops[k].kind == OP_RETIRE)
				release_slot(v, v->ops[k].slot);
		}
		pthread_mutex_unlock(&v->lock);
	}
	v->nops = 0;
	return rc;
}

/* ---- opening ---- */

static int
read_master(const char *path, uint8_t master[32], char *why, size_t whylen)
{
	char buf[130];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(why, whylen, "cannot open the master key %s: %s", path, strerror(errno));
		return -1;
	}
	ssize_t n = read(fd, buf, sizeof buf);
	close(fd);
	if (n == 32) {
		memcpy(master, buf, 32);
		sodium_memzero(buf, sizeof buf);
		return 0;
	}
	size_t bin_len = 0;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		n--;
	if (n == 64 && sodium_hex2bin(master, 32, buf, 64, NULL, &bin_len, NULL) == 0 && bin_len == 32) {
		sodium_memzero(buf, sizeof buf);
		return 0;
	}
	sodium_memzero(buf, sizeof buf);
	snprintf(why, whylen, "the master key %s must hold 32 bytes, or 64 hex digits", path);
	return -1;
}

int
vault_check_master(const char *master_key_file, char *why, size_t whylen)
{
	uint8_t master[32];
	int rc = read_master(master_key_file, master, why, whylen);
	sodium_memzero(master, sizeof master);
	return rc;
}

static int
parse_fields(vault *v, const char *fields, char *why, size_t whylen)
{
	const char *p = fields;
	while (*p != '\0') {
		const char *e = strchr(p, ',');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		while (n > 0 && *p == ' ') {
			p++;
			n--;
		}
		while (n > 0 && p[n - 1] == ' ')
			n--;
		if (n == 5 && memcmp(p, "owner", 5) == 0) {
			/* the lead's state holds its owner in clear (queries, routing,
			 * and the journal's replay rebuild it from the record) */
			snprintf(why, whylen, "personal-fields: owner cannot be sealed: it names the rep "
			         "who owns the lead and is kept in clear in the lead's state");
			return -1;
		}
		if (n > 0) {
			if (v->nfields == MAX_FIELDS || n > FP_SEAL_MAX_PATH) {
				snprintf(why, whylen, "personal-fields: at most %d paths of at most %d bytes",
				         MAX_FIELDS, FP_SEAL_MAX_PATH);
				return -1;
			}
			v->fields[v->nfields] = strndup(p, n);
			if (v->fields[v->nfields] == NULL) {
				snprintf(why, whylen, "out of memory");
				return -1;
			}
			v->field_len[v->nfields] = strlen(v->fields[v->nfields]);
			v->nfields++;
		}
		if (e == NULL)
			break;
		p = e + 1;
	}
	return 0;
}

/* Finish a shred a crash interrupted (see vault.h). */
static int
recover_shred(vault *v, uint64_t head_seq, char *why, size_t whylen)
{
	struct stat sb;
	if (fstat(v->shred_fd, &sb) != 0 || sb.st_size == 0)
		return 0;
	uint8_t *buf = malloc((size_t)sb.st_size);
	if (buf == NULL || pread(v->shred_fd, buf, (size_t)sb.st_size, 0) != sb.st_size) {
		free(buf);
		snprintf(why, whylen, "cannot read keys.shred");
		return -1;
	}
	uint64_t seq;
	uint32_t n;
	memcpy(&seq, buf + 12, 8);
	memcpy(&n, buf + 20, 4);
	int valid = sb.st_size >= 24 && memcmp(buf, SHRED_MAGIC, 12) == 0 &&
	            (uint64_t)sb.st_size == 24 + (uint64_t)n * (4 + TAG_BYTES);
	if (valid && head_seq >= seq) {
		for (uint32_t k = 0; k < n; k++) {
			uint32_t i;
			memcpy(&i, buf + 24 + k * (4 + TAG_BYTES), 4);
			const uint8_t *tag = buf + 24 + k * (4 + TAG_BYTES) + 4;
			if (i < v->nslots && v->slots[i].used && memcmp(v->slots[i].tag, tag, TAG_BYTES) == 0) {
				unlink_slot(v, i);
				zero_slot(v, i);
				release_slot(v, i);
			}
		}
		log_info("finished the erasure of %u data keys that a stop interrupted", n);
	}
	free(buf);
	if (sync_fd(v, v->fd) != 0 || ftruncate(v->shred_fd, 0) != 0 || sync_fd(v, v->shred_fd) != 0) {
		snprintf(why, whylen, "cannot finish keys.shred: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static int
load_slots(vault *v, char *why, size_t whylen)
{
	uint8_t buf[SLOT_BYTES];
	static const uint8_t zeros[SLOT_BYTES];
	for (uint32_t i = 0;; i++) {
		ssize_t n = pread(v->fd, buf, sizeof buf, slot_at(i));
		if (n == 0)
			return 0;
		if (n != SLOT_BYTES) {
			/* a growth cut short by a crash before its sync: no record uses it */
			if (ftruncate(v->fd, slot_at(i)) != 0)
				return -1;
			return 0;
		}
		v->file_slots = i + 1;
		uint32_t s = take_slot(v);
		if (s == NONE) {
			snprintf(why, whylen, "out of memory loading keys.dat");
			return -1;
		}
		if (memcmp(buf, zeros, sizeof buf) == 0) {
			release_slot(v, s);
			continue;
		}
		memcpy(v->slots[s].tag, buf, TAG_BYTES);
		if (crypto_aead_xchacha20poly1305_ietf_decrypt(v->slots[s].key, NULL, NULL,
		                                               buf + TAG_BYTES + FP_SEAL_NONCE_BYTES,
		                                               WRAPPED_BYTES, buf, TAG_BYTES,
		                                               buf + TAG_BYTES, v->wrap_key) != 0) {
			snprintf(why, whylen, "keys.dat slot %u does not open under the master key", i);
			return -1;
		}
		v->slots[s].used = 1;
		link_slot(v, s);
	}
}

vault *
vault_open(const char *dir, const char *master_key_file, const char *fields, uint64_t head_seq,
           int durable, char *why, size_t whylen)
{
	uint8_t master[32], check[16], hdr[HEADER_BYTES];
	char path[4200];
	vault *v = calloc(1, sizeof *v);

	if (v == NULL || sodium_init() < 0) {
		free(v);
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	v->fd = v->shred_fd = -1;
	v->durable = durable;
	sealer_init(&v->s, v);
	pthread_mutex_init(&v->lock, NULL);

	v->buckets = malloc(NBUCKETS * sizeof *v->buckets);
	if (v->buckets == NULL)
		goto fail_nomem;
	memset(v->buckets, 0xff, NBUCKETS * sizeof *v->buckets);
	if (parse_fields(v, fields, why, whylen) != 0)
		goto fail;
	if (read_master(master_key_file, master, why, whylen) != 0)
		goto fail;
	crypto_kdf_derive_from_key(v->wrap_key, 32, 1, "funnelvk", master);
	crypto_kdf_derive_from_key(v->tag_key, 32, 2, "funnelvk", master);
	crypto_generichash(check, sizeof check, (const uint8_t *)"check", 5, master, sizeof master);
	sodium_memzero(master, sizeof master);

	snprintf(path, sizeof path, "%s/%s", dir, VAULT_KEYS_FILE);
	v->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (v->fd < 0) {
		snprintf(why, whylen, "cannot open %s: %s", path, strerror(errno));
		goto fail;
	}
	ssize_t n = pread(v->fd, hdr, sizeof hdr, 0);
	if (n == 0) {
		memset(hdr, 0, sizeof hdr);
		memcpy(hdr, MAGIC, sizeof MAGIC);
		uint32_t ss = SLOT_BYTES;
		memcpy(hdr + 12, &ss, 4);
		memcpy(hdr + 16, check, sizeof check);
		if (write_all(v->fd, hdr, sizeof hdr, 0) != 0 || fsync(v->fd) != 0) {
			snprintf(why, whylen, "cannot write %s: %s", path, strerror(errno));
			goto fail;
		}
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
	} else if (n != HEADER_BYTES || memcmp(hdr, MAGIC, sizeof MAGIC) != 0) {
		snprintf(why, whylen, "%s is not a funnel key file", path);
		goto fail;
	} else if (sodium_memcmp(hdr + 16, check, sizeof check) != 0) {
		snprintf(why, whylen, "%s was made under another master key", path);
		goto fail;
	}
	if (load_slots(v, why, whylen) != 0)
		goto fail;
	snprintf(path, sizeof path, "%s/%s", dir, VAULT_SHRED_FILE);
	v->shred_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (v->shred_fd < 0) {
		snprintf(why, whylen, "cannot open %s: %s", path, strerror(errno));
		goto fail;
	}
	if (recover_shred(v, head_seq, why, whylen) != 0)
		goto fail;
	return v;
fail_nomem:
	snprintf(why, whylen, "out of memory");
fail:
	sodium_memzero(master, sizeof master);
	vault_close(v);
	return NULL;
}

void
vault_close(vault *v)
{
	if (v == NULL)
		return;
	if (v->slots != NULL)
		sodium_memzero(v->slots, (size_t)v->cap * sizeof *v->slots);
	sodium_memzero(v->wrap_key, sizeof v->wrap_key);
	sodium_memzero(v->tag_key, sizeof v->tag_key);
	if (v->fd >= 0)
		close(v->fd);
	if (v->shred_fd >= 0)
		close(v->shred_fd);
	for (size_t i = 0; i < v->nfields; i++)
		free(v->fields[i]);
	free(v->slots);
	free(v->free_slots);
	free(v->buckets);
	free(v->ops);
	free(v->wbuf);
	free(v->fresh);
	sealer_fini(&v->s);
	pthread_mutex_destroy(&v->lock);
	free(v);
}
