/*
 * clients/gateway/limit.c - the client's address (gw_client_addr: the TCP
 * peer, or behind a trusted proxy the X-Forwarded-For hop it vouches for)
 * and the per-client-address rate limit: a token
 * bucket per address in a fixed table of GW_LIMIT_SLOTS buckets (contract
 * in gateway.h).
 *
 * Memory is bounded whatever the number of addresses: an address hashes
 * to two slots (keyed hash, so a sender cannot aim at a victim's slots);
 * it uses the one holding its address, else takes over the one whose
 * bucket is fullest (the most idle address loses its state, which only
 * ever lets that address send a burst again).
 */
#include <arpa/inet.h>
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

/* ---- the client's address ---- */

int
gw_addr_parse(const char *s, size_t len, gw_addr *out)
{
	char buf[64];
	while (len > 0 && (*s == ' ' || *s == '\t')) {
		s++;
		len--;
	}
	while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {     /* [v6] */
		s++;
		len -= 2;
	}
	if (len == 0 || len >= sizeof buf)
		return -1;
	memcpy(buf, s, len);
	buf[len] = 0;
	memset(out, 0, sizeof *out);
	if (inet_pton(AF_INET, buf, out->b) == 1) {
		out->len = 4;
		return 0;
	}
	if (inet_pton(AF_INET6, buf, out->b) == 1) {
		out->len = 16;
		return 0;
	}
	return -1;
}

int
gw_net_parse(const char *s, size_t len, gw_net *out)
{
	const char *slash = memchr(s, '/', len);
	if (gw_addr_parse(s, slash ? (size_t)(slash - s) : len, &out->a) != 0)
		return -1;
	unsigned max = out->a.len * 8u;
	out->bits = max;
	if (slash != NULL) {
		unsigned bits = 0;
		size_t i = (size_t)(slash - s) + 1;
		if (i == len || len - i > 3)
			return -1;
		for (; i < len; i++) {
			if (s[i] < '0' || s[i] > '9')
				return -1;
			bits = bits * 10 + (unsigned)(s[i] - '0');
		}
		if (bits > max)
			return -1;
		out->bits = bits;
	}
	return 0;
}

/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d) as IPv4. */
static gw_addr
unmapped(const gw_addr *a)
{
	static const uint8_t prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	gw_addr r = *a;
	if (a->len == 16 && memcmp(a->b, prefix, 12) == 0) {
		memset(&r, 0, sizeof r);
		memcpy(r.b, a->b + 12, 4);
		r.len = 4;
	}
	return r;
}

int
gw_net_match(const gw_net *nets, size_t n, const gw_addr *addr)
{
	gw_addr a = unmapped(addr);
	for (size_t i = 0; i < n; i++) {
		gw_addr na = unmapped(&nets[i].a);
		unsigned bits = nets[i].bits;
		if (nets[i].a.len == 16 && na.len == 4)
			bits = bits > 96 ? bits - 96 : 0;     /* ::ffff:a.b.c.d/N */
		if (na.len != a.len)
			continue;
		unsigned full = bits / 8, rest = bits % 8;
		if (memcmp(na.b, a.b, full) != 0)
			continue;
		if (rest && ((na.b[full] ^ a.b[full]) & (uint8_t)(0xff << (8 - rest))) != 0)
			continue;
		return 1;
	}
	return 0;
}

void
gw_client_addr(const gw_net *trusted, size_t ntrusted, const gw_addr *peer, const char *xff,
               gw_addr *out)
{
	*out = *peer;
	if (ntrusted == 0 || xff == NULL || !gw_net_match(trusted, ntrusted, peer))
		return;
	/* from the right: each hop was appended by the one after it, and the
	 * peer is trusted, so the last hop is as the trusted proxy saw it */
	size_t end = strlen(xff);
	for (int hops = 0; hops < GW_MAX_HOPS && end > 0; hops++) {
		size_t start = end;
		while (start > 0 && xff[start - 1] != ',')
			start--;
		gw_addr a;
		if (gw_addr_parse(xff + start, end - start, &a) != 0)
			return;             /* not an address: the hop to its right it is */
		*out = a;
		if (!gw_net_match(trusted, ntrusted, &a))
			return;             /* the first hop no trusted proxy stands for */
		end = start > 0 ? start - 1 : 0;
	}
}
