/*
 * tests/common/workload.c - realistic lead events.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "workload.h"

static const char *const firsts[] = { "ana", "ben", "chloe", "dmitri", "eva", "farid", "gita", "hugo" };
static const char *const lasts[] = { "almeida", "brown", "chen", "dubois", "evans", "fischer", "garcia", "horvat" };
static const char *const companies[] = { "Acme Logistics", "Blue Harbor Bank", "Cobalt Health", "Delta Retail Group",
	"Evergreen Energy", "Fjord Software", "Granite Insurance", "Helios Media" };
static const char *const titles[] = { "VP Marketing", "Head of Sales Operations", "CTO", "Marketing Manager",
	"Demand Generation Lead", "Student", "Procurement Officer", "Chief Revenue Officer" };
static const char *const countries[] = { "DE", "FR", "US", "GB", "NL", "ES", "PL", "SE" };
static const char *const industries[] = { "logistics", "banking", "healthcare", "retail", "energy", "software", "insurance", "media" };
static const char *const sources[] = { "webinar", "paid-search", "organic", "event", "partner", "content", "social", "referral" };
static const char *const campaigns[] = { "q4-launch", "spring-promo", "brand-2026", "retargeting", "ebook-funnel", "field-events", "abm-tier1", "newsletter" };

static uint64_t
mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

static void
kv(msgpack_packer *pk, const char *k, const char *v)
{
	msgpack_pack_str(pk, strlen(k));
	msgpack_pack_str_body(pk, k, strlen(k));
	msgpack_pack_str(pk, strlen(v));
	msgpack_pack_str_body(pk, v, strlen(v));
}

void
wl_lead_data(msgpack_sbuffer *sb, uint64_t seed, uint64_t i)
{
	msgpack_packer pk;
	char email[96], name[64], form[32], size[16];
	uint64_t h = mix(seed * 1000003u + i);
	const char *f = firsts[h & 7], *l = lasts[(h >> 3) & 7];
	const char *co = companies[(h >> 6) & 7];

	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	snprintf(email, sizeof email, "%s.%s.%llu@%s.example", f, l, (unsigned long long)i,
	         industries[(h >> 6) & 7]);
	snprintf(name, sizeof name, "%c%s %c%s", f[0] - 32, f + 1, l[0] - 32, l + 1);
	snprintf(form, sizeof form, "form-%llu", (unsigned long long)(h >> 40) % 40);
	snprintf(size, sizeof size, "%llu", (unsigned long long)(10 + (h >> 20) % 5000));
	msgpack_pack_map(&pk, 13);
	kv(&pk, "email", email);
	kv(&pk, "name", name);
	kv(&pk, "company", co);
	kv(&pk, "title", titles[(h >> 9) & 7]);
	kv(&pk, "country", countries[(h >> 12) & 7]);
	kv(&pk, "company_size", size);
	kv(&pk, "industry", industries[(h >> 6) & 7]);
	kv(&pk, "source", sources[(h >> 15) & 7]);
	kv(&pk, "campaign", campaigns[(h >> 18) & 7]);
	kv(&pk, "form", form);
	kv(&pk, "utm_source", sources[(h >> 15) & 7]);
	kv(&pk, "utm_medium", (h >> 21) & 1 ? "cpc" : "email");
	kv(&pk, "utm_campaign", campaigns[(h >> 18) & 7]);
}

void
wl_kv(msgpack_sbuffer *sb, ...)
{
	msgpack_packer pk;
	va_list ap;
	size_t n = 0;

	va_start(ap, sb);
	while (va_arg(ap, const char *) != NULL)
		n++;
	va_end(ap);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, n / 2);
	va_start(ap, sb);
	for (size_t i = 0; i + 1 < n + 1 && i < n; i += 2) {
		const char *k = va_arg(ap, const char *);
		const char *v = va_arg(ap, const char *);
		kv(&pk, k, v);
	}
	va_end(ap);
}
