/*
 * tests/common/workload.c - realistic lead events.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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

/* ---- the funnel-shaped stream ---- */

static const char *const kind_names[WL_NKINDS] = {
	[WL_CAPTURED] = "lead.captured",
	[WL_ACTIVITY] = "lead.activity",
	[WL_QUALIFIED] = "lead.qualified",
	[WL_ASSIGNED] = "lead.assigned",
	[WL_CONTACTED] = "lead.contacted",
	[WL_ACCEPTED] = "lead.accepted",
	[WL_RECYCLED] = "lead.recycled",
	[WL_DISQUALIFIED] = "lead.disqualified",
	[WL_OPP_OPENED] = "opportunity.opened",
	[WL_DEAL_WON] = "deal.won",
	[WL_DEAL_LOST] = "deal.lost",
};

const char *
wl_kind_name(int kind)
{
	return kind >= 0 && kind < WL_NKINDS ? kind_names[kind] : "x.unknown";
}

/* The generator's own view of a lead's stage, written from the waterfall
 * and not taken from proto/model.c, so that test_workload checking it
 * against fp_transition() is a real check. */
enum { S_EMPTY, S_INQUIRY, S_MQL, S_SAL, S_SQL, S_WON, S_LOST, S_NURTURE, S_DISQUALIFIED };

static const char *const kinds_of_activity[] = { "page_view", "email_click", "download", "webinar_attended",
	"demo_request", "pricing_view", "page_view", "email_open" };
static const char *const paths[] = { "/pricing", "/product/tour", "/resources/ebook-waterfall", "/blog/lead-scoring",
	"/webinars/q4-launch", "/customers/fjord", "/demo", "/integrations/crm" };
static const char *const agents[] = {
	"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
	"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
	"Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
	"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148" };
static const char *const reps[] = { "rep.amara", "rep.bjorn", "rep.carla", "rep.devi", "rep.emil", "rep.fatima",
	"rep.goran", "rep.hana" };
static const char *const queues[] = { "emea-smb", "emea-mid-market", "emea-enterprise", "na-smb", "na-mid-market",
	"na-enterprise", "apac-all", "partners" };
static const char *const channels[] = { "call", "email", "linkedin", "meeting" };
static const char *const outcomes[] = { "connected", "left voicemail", "no answer", "replied", "meeting booked" };
static const char *const recycle_reasons[] = { "no_budget", "bad_timing", "no_response", "not_decision_maker" };
static const char *const disq_reasons[] = { "student", "competitor", "spam", "out_of_territory" };
static const char *const lost_reasons[] = { "price", "competitor", "no_decision", "timing" };
static const char *const competitors[] = { "Northwind CRM", "Contoso Leads", "Initech Pipeline", "none" };
static const char *const products[] = { "funnel-cloud-team", "funnel-cloud-business", "funnel-on-prem", "funnel-cloud-enterprise" };

static uint64_t
rnd(wl_funnel *g)
{
	g->rng += 0x9e3779b97f4a7c15ULL;   /* splitmix64 */
	return mix(g->rng);
}

static void
kvi(msgpack_packer *pk, const char *k, int64_t v)
{
	msgpack_pack_str(pk, strlen(k));
	msgpack_pack_str_body(pk, k, strlen(k));
	msgpack_pack_int64(pk, v);
}

/* The data map of one event for lead `l`; h is this event's random word. */
static void
pack_data(msgpack_sbuffer *sb, const wl_funnel *g, int kind, uint64_t lead, uint64_t h)
{
	msgpack_packer pk;
	char buf[160], buf2[64];
	const char *rep = reps[mix(g->seed ^ lead) & 7];

	if (kind == WL_CAPTURED) {
		wl_lead_data(sb, g->seed, lead);
		return;
	}
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	switch (kind) {
	case WL_ACTIVITY:
		msgpack_pack_map(&pk, 9);
		kv(&pk, "kind", kinds_of_activity[h & 7]);
		snprintf(buf, sizeof buf, "https://www.funnel.example%s?utm_source=%s&utm_campaign=%s", paths[(h >> 3) & 7],
		         sources[(h >> 6) & 7], campaigns[(h >> 9) & 7]);
		kv(&pk, "url", buf);
		kv(&pk, "referrer", (h >> 12) & 1 ? "https://www.search.example/" : "https://news.example/");
		kv(&pk, "campaign", campaigns[(h >> 9) & 7]);
		snprintf(buf2, sizeof buf2, "s-%016llx", (unsigned long long)(h >> 16 ^ lead));
		kv(&pk, "session", buf2);
		kv(&pk, "user_agent", agents[(h >> 13) & 3]);
		snprintf(buf2, sizeof buf2, "198.51.100.%u", (unsigned)((h >> 24) & 255));
		kv(&pk, "ip", buf2);
		kvi(&pk, "duration_s", (int64_t)((h >> 32) % 600));
		kvi(&pk, "pages", (int64_t)(1 + (h >> 42) % 12));
		break;
	case WL_QUALIFIED:
		msgpack_pack_map(&pk, 6);
		kvi(&pk, "fit", (int64_t)(60 + (h & 31)));
		kvi(&pk, "engagement", (int64_t)(50 + ((h >> 5) & 63)));
		kvi(&pk, "threshold", 100);
		kv(&pk, "rules_version", "funnel.yaml@3f9c2a1");
		kv(&pk, "model", "fit+engagement v3, decay 14d");
		kv(&pk, "reasons", (h >> 11) & 1 ? "title:VP, size:200+, demo_request" : "industry:software, webinar, pricing_view");
		break;
	case WL_ASSIGNED:
		msgpack_pack_map(&pk, 6);
		snprintf(buf, sizeof buf, "%s@sales.funnel.example", rep);
		kv(&pk, "owner", buf);
		kv(&pk, "queue", queues[(h >> 3) & 7]);
		snprintf(buf, sizeof buf, "territory:%s/size:%s", countries[(h >> 6) & 7], (h >> 9) & 1 ? "200-1000" : "1000+");
		kv(&pk, "rule", buf);
		kv(&pk, "rules_version", "funnel.yaml@3f9c2a1");
		kvi(&pk, "sla_minutes", (h >> 10) & 1 ? 60 : 240);
		kv(&pk, "reason", "round robin within territory, capacity 40 open leads");
		break;
	case WL_CONTACTED:
		msgpack_pack_map(&pk, 4);
		kv(&pk, "channel", channels[h & 3]);
		kv(&pk, "by", rep);
		kv(&pk, "outcome", outcomes[(h >> 2) % 5]);
		kvi(&pk, "touch", (int64_t)(1 + ((h >> 8) & 7)));
		break;
	case WL_ACCEPTED:
		msgpack_pack_map(&pk, 3);
		kv(&pk, "by", rep);
		kv(&pk, "note", (h & 1) ? "budget confirmed, discovery call booked" : "pain confirmed, champion identified");
		kvi(&pk, "response_minutes", (int64_t)(5 + (h >> 1) % 300));
		break;
	case WL_RECYCLED:
		msgpack_pack_map(&pk, 4);
		kv(&pk, "reason", recycle_reasons[h & 3]);
		kv(&pk, "by", rep);
		kv(&pk, "note", "back to marketing nurture; revisit next quarter");
		kvi(&pk, "recycle_after_days", (int64_t)(30 + (h >> 2) % 90));
		break;
	case WL_DISQUALIFIED:
		msgpack_pack_map(&pk, 2);
		kv(&pk, "reason", disq_reasons[h & 3]);
		kv(&pk, "by", rep);
		break;
	case WL_OPP_OPENED:
		msgpack_pack_map(&pk, 5);
		kvi(&pk, "amount", (int64_t)(12000 + (h % 240) * 1000));
		kv(&pk, "currency", "EUR");
		snprintf(buf2, sizeof buf2, "OPP-%s-%llu", g->tag, (unsigned long long)lead);
		kv(&pk, "opportunity", buf2);
		kv(&pk, "product", products[(h >> 8) & 3]);
		kv(&pk, "close_quarter", (h >> 10) & 1 ? "2026-Q3" : "2026-Q4");
		break;
	case WL_DEAL_WON:
		msgpack_pack_map(&pk, 4);
		kvi(&pk, "amount", (int64_t)(10000 + (h % 240) * 1000));
		kv(&pk, "currency", "EUR");
		snprintf(buf2, sizeof buf2, "OPP-%s-%llu", g->tag, (unsigned long long)lead);
		kv(&pk, "opportunity", buf2);
		kvi(&pk, "contract_months", (h >> 8) & 1 ? 12 : 36);
		break;
	case WL_DEAL_LOST:
		msgpack_pack_map(&pk, 3);
		kv(&pk, "reason", lost_reasons[h & 3]);
		kv(&pk, "competitor", competitors[(h >> 2) & 3]);
		snprintf(buf2, sizeof buf2, "OPP-%s-%llu", g->tag, (unsigned long long)lead);
		kv(&pk, "opportunity", buf2);
		break;
	}
}

void
wl_funnel_init(wl_funnel *g, uint64_t seed, const char *tag)
{
	memset(g, 0, sizeof *g);
	g->seed = seed;
	g->rng = mix(seed ^ 0x66756e6e656cULL);
	snprintf(g->tag, sizeof g->tag, "%s", tag);
	for (size_t i = 0; i < strlen(g->tag); i++)
		g->rng = mix(g->rng ^ (uint64_t)(unsigned char)g->tag[i]);
}

/*
 * The waterfall.  Pick one of the active leads at random and take its
 * next step; p is a percentage draw.  A lead that leaves the funnel (won,
 * disqualified, gone quiet) frees its slot, and the slot's next event is
 * the capture of a new lead.  Stage after each step, by the rules of
 * DESIGN.md: qualified inquiry|nurture -> mql; accepted mql -> sal;
 * recycled mql|sal|lost -> nurture; opportunity sal -> sql; won/lost from
 * sql; disqualified from a worked stage.
 */
static int
step(wl_funnel *g, struct wl_lead *l, unsigned p)
{
	switch (l->stage) {
	case S_INQUIRY:
		if (p < 65) return WL_ACTIVITY;
		if (p < 70) return WL_CAPTURED;           /* a re-inquiry */
		if (p < 78) { l->stage = S_MQL; l->assigned = 0; return WL_QUALIFIED; }
		if (p < 81) { l->assigned = 1; return WL_ASSIGNED; }   /* an SDR queue */
		if (p < 86) { l->stage = S_DISQUALIFIED; return WL_DISQUALIFIED; }
		break;                                       /* gone quiet */
	case S_MQL:
		if (!l->assigned) {
			if (p < 70) { l->assigned = 1; return WL_ASSIGNED; }   /* the hand-over */
			return WL_ACTIVITY;
		}
		if (p < 45) { l->stage = S_SAL; return WL_ACCEPTED; }
		if (p < 60) { l->stage = S_NURTURE; return WL_RECYCLED; }
		if (p < 80) return WL_ACTIVITY;
		return WL_CONTACTED;
	case S_SAL:
		if (p < 35) { l->stage = S_SQL; return WL_OPP_OPENED; }
		if (p < 55) return WL_CONTACTED;
		if (p < 75) return WL_ACTIVITY;
		if (p < 90) { l->stage = S_NURTURE; return WL_RECYCLED; }
		l->stage = S_DISQUALIFIED;
		return WL_DISQUALIFIED;
	case S_SQL:
		if (p < 25) { l->stage = S_WON; return WL_DEAL_WON; }
		if (p < 50) { l->stage = S_LOST; return WL_DEAL_LOST; }
		if (p < 75) return WL_ACTIVITY;
		return WL_CONTACTED;
	case S_LOST:
		if (p < 30) { l->stage = S_NURTURE; return WL_RECYCLED; }
		break;
	case S_NURTURE:
		if (p < 50) return WL_ACTIVITY;
		if (p < 70) { l->stage = S_MQL; l->assigned = 0; return WL_QUALIFIED; }
		break;
	default:   /* empty slot, won, disqualified */
		break;
	}
	/* the lead leaves; a new one is captured in its slot */
	l->num = g->next_lead++;
	l->stage = S_INQUIRY;
	l->assigned = 0;
	return WL_CAPTURED;
}

void
wl_set_init(wl_set *s)
{
	memset(s, 0, sizeof *s);
}

void
wl_set_release(wl_set *s)
{
	free(s->ev);
	msgpack_sbuffer_destroy(&s->env_);
	msgpack_sbuffer_destroy(&s->str_);
	wl_set_init(s);
}

/* msgpack_sbuffer_write returns -1 when realloc fails and leaves the buffer as it was. */
static int
put_str(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);
	return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n) ? -1 : 0;
}

int
wl_set_fill(wl_set *s, wl_funnel *g, size_t n)
{
	msgpack_sbuffer data;
	msgpack_packer pk, ps;
	char lead[48], id[48];
	int rc = 0;

	wl_set_release(s);
	s->ev = calloc(n ? n : 1, sizeof *s->ev);
	if (s->ev == NULL)
		return -1;
	msgpack_sbuffer_init(&data);
	msgpack_packer_init(&pk, &s->env_, msgpack_sbuffer_write);
	msgpack_packer_init(&ps, &s->str_, msgpack_sbuffer_write);
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct wl_lead *l = &g->lead[rnd(g) % WL_ACTIVE_LEADS];
		unsigned p = (unsigned)(rnd(g) % 100);
		int kind = step(g, l, p);
		wl_event *e = &s->ev[i];

		snprintf(lead, sizeof lead, "%s-L%llu", g->tag, (unsigned long long)l->num);
		snprintf(id, sizeof id, "%s-%llu", g->tag, (unsigned long long)g->next_id++);
		data.size = 0;
		pack_data(&data, g, kind, l->num, rnd(g));
		size_t start = s->env_.size;
		rc |= msgpack_pack_map(&pk, 4);
		rc |= put_str(&pk, "type") | put_str(&pk, kind_names[kind]);
		rc |= put_str(&pk, "lead") | put_str(&pk, lead);
		rc |= put_str(&pk, "id") | put_str(&pk, id);
		rc |= put_str(&pk, "data");
		rc |= msgpack_sbuffer_write(&s->env_, data.data, data.size);
		/* lead and id, NUL-terminated, back to back */
		rc |= msgpack_sbuffer_write(&s->str_, lead, strlen(lead) + 1);
		rc |= msgpack_sbuffer_write(&s->str_, id, strlen(id) + 1);
		e->kind = kind;
		e->type = kind_names[kind];
		e->env_len = s->env_.size - start;
		e->data_len = data.size;
		s->env_bytes += e->env_len;
	}
	msgpack_sbuffer_destroy(&data);
	if (rc != 0) {
		wl_set_release(s);
		return -1;
	}
	/* the buffers moved while growing: point into them only now */
	const char *env = s->env_.data, *str = s->str_.data;
	for (size_t i = 0; i < n; i++) {
		wl_event *e = &s->ev[i];
		e->env = (const uint8_t *)env;
		e->data = e->env + e->env_len - e->data_len;
		env += e->env_len;
		e->lead = str;
		str += strlen(str) + 1;
		e->id = str;
		str += strlen(str) + 1;
	}
	s->n = n;
	return 0;
}
