/*
 * clients/gateway/limit.c - the per-client-address rate limit: a token
 * bucket per address in a fixed table of GW_LIMIT_SLOTS buckets (contract
 * in gateway.h).
 *
 * Memory is bounded whatever the number of addresses: an address hashes
 * to two slots (keyed hash, so a sender cannot aim at a victim's slots);
 * it uses the one holding its address, else takes over the one whose
 * bucket is fullest (the most idle address loses its state, which only
 * ever lets that address send a burst again).
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "gateway.h"

typedef struct slot {
	uint8_t addr[16];
	uint8_t used;
	double tokens;
	int64_t last_ns;
} slot;

struct gw_limiter {
	pthread_mutex_t lock;
	double per_ns;            /* tokens added per ns */
	double burst;
	uint8_t key[16];
	slot slots[GW_LIMIT_SLOTS];
};

int
gw_limiter_new(gw_limiter **out, unsigned per_minute, unsigned burst)
{
	*out = NULL;
	if (per_minute == 0)
		return FUNNEL_OK;       /* no limit: a NULL limiter allows all */
	gw_limiter *l = calloc(1, sizeof *l);
	if (l == NULL)
		return FUNNEL_ENOMEM;
	pthread_mutex_init(&l->lock, NULL);
	l->per_ns = per_minute / 60e9;
	l->burst = burst ? burst : 1;
	randombytes_buf(l->key, sizeof l->key);
	*out = l;
	return FUNNEL_OK;
}

void
gw_limiter_destroy(gw_limiter **pl)
{
	if (pl == NULL || *pl == NULL)
		return;
	pthread_mutex_destroy(&(*pl)->lock);
	free(*pl);
	*pl = NULL;
}

static void
refill(gw_limiter *l, slot *s, int64_t now)
{
	if (now > s->last_ns) {
		s->tokens += (double)(now - s->last_ns) * l->per_ns;
		if (s->tokens > l->burst)
			s->tokens = l->burst;
		s->last_ns = now;
	}
}

unsigned
gw_limit_take(gw_limiter *l, const void *addr, size_t addr_len, int64_t now_ns)
{
	uint8_t a[16] = { 0 };
	uint32_t h[2];
	if (l == NULL)
		return 0;
	memcpy(a, addr, addr_len > 16 ? 16 : addr_len);
	crypto_generichash((uint8_t *)h, sizeof h, a, sizeof a, l->key, sizeof l->key);
	pthread_mutex_lock(&l->lock);
	slot *s1 = &l->slots[h[0] % GW_LIMIT_SLOTS], *s2 = &l->slots[h[1] % GW_LIMIT_SLOTS];
	slot *s = NULL;
	if (s1->used && memcmp(s1->addr, a, 16) == 0)
		s = s1;
	else if (s2->used && memcmp(s2->addr, a, 16) == 0)
		s = s2;
	else {
		if (s1->used)
			refill(l, s1, now_ns);
		if (s2->used)
			refill(l, s2, now_ns);
		s = !s1->used ? s1 : !s2->used ? s2 : s1->tokens >= s2->tokens ? s1 : s2;
		memcpy(s->addr, a, 16);
		s->used = 1;
		s->tokens = l->burst;
		s->last_ns = now_ns;
	}
	refill(l, s, now_ns);
	unsigned wait = 0;
	if (s->tokens >= 1.0) {
		s->tokens -= 1.0;
	} else {
		double ns = (1.0 - s->tokens) / l->per_ns;
		wait = (unsigned)(ns / 1e9) + 1;
	}
	pthread_mutex_unlock(&l->lock);
	return wait;
}
