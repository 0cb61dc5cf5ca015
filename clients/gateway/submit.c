/*
 * clients/gateway/submit.c - one form submission -> one lead.captured
 * (contract in gateway.h; the event's shape is GATEWAY.md "The event").
 *
 * Invariants:
 *  - Nothing is published unless every check passed: a refused
 *    submission leaves the log as it was.
 *  - The same submission (same submission id, or for a derived id the
 *    same form, fields and dedup window) gives the same event id, and
 *    within this process's memory of recent ids (TIMES_SLOTS) the same
 *    occurred_at, so a retry is the same event byte for byte.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "gateway.h"
#include "mp.h"
#include "rulesfile.h"

/* ---- the submission's fields ---- */

static gw_field *
find(const gw_submission *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->v[i].name, name) == 0)
			return (gw_field *)&s->v[i];
	return NULL;
}

int
gw_submission_add(gw_submission *s, const char *name, size_t nlen, const char *value, size_t vlen)
{
	for (size_t i = 0; i < s->n; i++)
		if (strlen(s->v[i].name) == nlen && memcmp(s->v[i].name, name, nlen) == 0)
			return FUNNEL_OK;       /* the first value of a repeated name counts */
	if (s->n == GW_MAX_INPUT_FIELDS) {
		s->too_many = 1;
		return FUNNEL_OK;
	}
	gw_field *f = &s->v[s->n];
	f->name = malloc(nlen + 1);
	f->value = malloc(vlen + 1);
	if (f->name == NULL || f->value == NULL) {
		free(f->name);
		free(f->value);
		f->name = f->value = NULL;
		return FUNNEL_ENOMEM;
	}
	memcpy(f->name, name, nlen);
	f->name[nlen] = 0;
	if (vlen)
		memcpy(f->value, value, vlen);
	f->value[vlen] = 0;
	f->len = vlen;
	s->n++;
	return FUNNEL_OK;
}

int
gw_submission_append(gw_submission *s, const char *name, const char *more, size_t len)
{
	if (s->n == 0 || strcmp(s->v[s->n - 1].name, name) != 0)
		return FUNNEL_OK;       /* a repeated name's later value: ignored */
	gw_field *f = &s->v[s->n - 1];
	if (f->len + len > GW_MAX_FORM_BODY)
		return FUNNEL_OK;       /* cannot happen under the body limit */
	char *v = realloc(f->value, f->len + len + 1);
	if (v == NULL)
		return FUNNEL_ENOMEM;
	memcpy(v + f->len, more, len);
	f->len += len;
	v[f->len] = 0;
	f->value = v;
	return FUNNEL_OK;
}

void
gw_submission_release(gw_submission *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->v[i].name);
		free(s->v[i].value);
	}
	s->n = 0;
}

/* ---- checks ---- */

static int
problem(gw_problem *pb, unsigned status, const char *code, const char *field, const char *fmt,
        const char *arg)
{
	pb->status = status;
	pb->code = code;
	pb->limit = -1;
	snprintf(pb->field, sizeof pb->field, "%s", field ? field : "");
	snprintf(pb->message, sizeof pb->message, fmt, arg);
	return FUNNEL_EVALUE;
}

/* The value without surrounding white space: *p, *n. */
static void
trim(const char *v, size_t len, const char **p, size_t *n)
{
	while (len > 0 && isspace((unsigned char)*v)) {
		v++;
		len--;
	}
	while (len > 0 && isspace((unsigned char)v[len - 1]))
		len--;
	*p = v;
	*n = len;
}

/* UTF-8 and no control characters but tab and line breaks. */
static int
text_ok(const char *v, size_t n)
{
	if (mp_utf8_invalid_at(v, n) >= 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f)
			return 0;
	}
	return 1;
}

/* A field's trimmed value checked for text and size: 1 present, 0
 * absent or empty, -1 refused (pb filled). */
static int
value_of(const gw_submission *s, const char *name, size_t max, const char **p, size_t *n,
         gw_problem *pb)
{
	const gw_field *f = find(s, name);
	if (f == NULL)
		return 0;
	trim(f->value, f->len, p, n);
	if (*n == 0)
		return 0;
	if (*n > max) {
		char lim[96];
		snprintf(lim, sizeof lim, "%%s: longer than %zu bytes", max);
		problem(pb, 400, "value_too_long", name, lim, name);
		pb->limit = (long)max;
		return -1;
	}
	if (!text_ok(*p, *n)) {
		problem(pb, 400, "invalid_text", name, "%s: not UTF-8 text (or holds control "
		        "characters)", name);
		return -1;
	}
	return 1;
}

/* local@domain.tld-ish: one @, no spaces, a dot in the domain. */
static int
email_ok(const char *e, size_t n)
{
	const char *at = memchr(e, '@', n);
	if (at == NULL || at == e || at == e + n - 1 || n > 254 || memchr(at + 1, '@', e + n - at - 1))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (isspace((unsigned char)e[i]) || e[i] == '<' || e[i] == '>' || e[i] == ',')
			return 0;
	const char *dot = memchr(at + 1, '.', e + n - at - 1);
	return dot != NULL && dot != at + 1 && dot != e + n - 1;
}

static int
sid_ok(const char *v, size_t n)
{
	if (n == 0 || n > GW_MAX_SUBMISSION_ID)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = v[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.' || c == ':'))
			return 0;
	}
	return 1;
}

void
gw_lead_id(const uint8_t key[GW_KEY_BYTES], const char *email, size_t len, char *out)
{
	uint8_t h[16];
	char norm[256];
	const char *p;
	size_t n;
	trim(email, len, &p, &n);
	if (n > sizeof norm)
		n = sizeof norm;
	for (size_t i = 0; i < n; i++)
		norm[i] = (char)tolower((unsigned char)p[i]);
	crypto_generichash(h, sizeof h, (const unsigned char *)norm, n, key, GW_KEY_BYTES);
	memcpy(out, "L-", 2);
	fp_hex(h, sizeof h, out + 2);
}

/* ---- marketing context ---- */

static const char *const utm_names[] = { "source", "medium", "campaign", "term", "content" };
static const char *const utm_fields[] = { "utm_source", "utm_medium", "utm_campaign", "utm_term",
                                          "utm_content" };
#define N_UTM 5

static int
hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
	       c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The value of utm_<name> in a URL's query, percent-decoded into buf
 * (cap bytes): its length, or 0 when absent. */
static size_t
url_param(const char *url, size_t ulen, const char *name, char *buf, size_t cap)
{
	const char *q = memchr(url, '?', ulen), *end = url + ulen;
	const char *hash = memchr(url, '#', ulen);
	if (q == NULL)
		return 0;
	if (hash != NULL && hash > q)
		end = hash;
	size_t nl = strlen(name);
	for (const char *p = q + 1; p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *e = amp ? amp : end;
		if ((size_t)(e - p) > nl + 4 && memcmp(p, "utm_", 4) == 0 && memcmp(p + 4, name, nl) == 0 &&
		    p[4 + nl] == '=') {
			size_t n = 0;
			for (const char *v = p + 5 + nl; v < e && n + 1 < cap; v++) {
				if (*v == '%' && e - v >= 3 && hexval(v[1]) >= 0 && hexval(v[2]) >= 0) {
					buf[n++] = (char)(hexval(v[1]) * 16 + hexval(v[2]));
					v += 2;
				} else {
					buf[n++] = *v == '+' ? ' ' : *v;
				}
			}
			buf[n] = 0;
			return n;
		}
		p = e + 1;
	}
	return 0;
}

/* ---- occurred_at of recent event ids ---- */

#define TIMES_SLOTS 65536u
static struct {
	uint64_t id_hash;
	int64_t at;
} times[TIMES_SLOTS];
static pthread_mutex_t times_lock = PTHREAD_MUTEX_INITIALIZER;

/* The time first seen for this event id (now if new, or forgotten). */
static int64_t
first_time(const char *id, int64_t now)
{
	uint64_t h;
	crypto_generichash((uint8_t *)&h, sizeof h, (const unsigned char *)id, strlen(id), NULL, 0);
	h |= 1;                 /* 0 marks an empty slot */
	pthread_mutex_lock(&times_lock);
	unsigned i = (unsigned)(h % TIMES_SLOTS);
	if (times[i].id_hash == h && now - times[i].at < (int64_t)GW_DEDUP_WINDOW_S * 2000000000LL)
		now = times[i].at;
	else {
		times[i].id_hash = h;
		times[i].at = now;
	}
	pthread_mutex_unlock(&times_lock);
	return now;
}

/* ---- the event ---- */

/* v[0..n) is the word w, ignoring case. */
static int
word_is(const char *v, size_t n, const char *w)
{
	return strlen(w) == n && strncasecmp(v, w, n) == 0;
}

static void
pack_strn(msgpack_packer *pk, const char *s, size_t n)
{
	msgpack_pack_str_with_body(pk, s, n);
}

int
gw_build(const gw_form *form, const gw_submission *s, const uint8_t key[GW_KEY_BYTES],
         const char *rules_version, int64_t now_ns, gw_event *ev, gw_problem *pb)
{
	const char *vals[GW_MAX_FIELDS] = { 0 }, *p;
	size_t lens[GW_MAX_FIELDS], n;
	char utm[N_UTM][GW_MAX_VALUE + 1];
	size_t utm_len[N_UTM];
	const char *page = NULL, *ref = NULL;
	size_t page_len = 0, ref_len = 0;
	int r;

	memset(ev, 0, sizeof *ev);
	msgpack_sbuffer_init(&ev->data);

	/* the honeypot first: a bot's post is answered like any other */
	if (form->honeypot && value_of(s, form->honeypot, GW_MAX_FORM_BODY, &p, &n, pb) != 0)
		ev->honeypot = 1;
	for (size_t i = 0; i < form->nfields; i++) {
		r = value_of(s, form->fields[i].field, GW_MAX_VALUE, &vals[i], &lens[i], pb);
		if (r < 0 && !ev->honeypot)
			return FUNNEL_EVALUE;
		if (r <= 0)
			vals[i] = NULL;
	}
	const char *email = vals[form->email];
	if (ev->honeypot) {
		gw_lead_id(key, email ? email : "", email ? lens[form->email] : 0, ev->lead);
		return FUNNEL_OK;
	}
	for (size_t i = 0; i < form->nrequired; i++) {
		for (size_t j = 0; j < form->nfields; j++)
			if (strcmp(form->fields[j].field, form->required[i]) == 0 && vals[j] == NULL)
				return problem(pb, 400, "missing_field", form->required[i],
				               "%s: required, and missing or empty", form->required[i]);
	}
	const char *ef = form->fields[form->email].field;
	if (email == NULL)
		return problem(pb, 400, "missing_field", ef, "%s: the e-mail address is required", ef);
	if (!email_ok(email, lens[form->email]))
		return problem(pb, 400, "invalid_email", ef, "%s: not an e-mail address", ef);
	gw_lead_id(key, email, lens[form->email], ev->lead);

	/* context: page, referrer, UTM (fields first, then the page's query) */
	if ((r = value_of(s, "page_url", GW_MAX_URL, &page, &page_len, pb)) < 0)
		return FUNNEL_EVALUE;
	if (r == 0 && s->referer && *s->referer) {
		trim(s->referer, strlen(s->referer), &page, &page_len);
		if (page_len > GW_MAX_URL || !text_ok(page, page_len))
			page = NULL;
	} else if (r == 0) {
		page = NULL;
	}
	if ((r = value_of(s, "referrer", GW_MAX_URL, &ref, &ref_len, pb)) < 0)
		return FUNNEL_EVALUE;
	if (r == 0)
		ref = NULL;
	for (int u = 0; u < N_UTM; u++) {
		if ((r = value_of(s, utm_fields[u], GW_MAX_VALUE, &p, &n, pb)) < 0)
			return FUNNEL_EVALUE;
		if (r > 0) {
			memcpy(utm[u], p, n);
			utm[u][n] = 0;
			utm_len[u] = n;
		} else {
			utm_len[u] = page ? url_param(page, page_len, utm_names[u], utm[u], sizeof utm[u]) : 0;
			if (utm_len[u] && !text_ok(utm[u], utm_len[u]))
				utm_len[u] = 0;
		}
	}

	/* the event id: the submission's own, or derived from its content */
	const char *sid = NULL;
	size_t sid_len = 0;
	if ((r = value_of(s, "submission_id", GW_MAX_SUBMISSION_ID, &sid, &sid_len, pb)) < 0)
		return FUNNEL_EVALUE;
	if (r == 0 && s->idempotency_key != NULL) {
		sid = s->idempotency_key;
		sid_len = strlen(sid);
		if (!sid_ok(sid, sid_len))
			return problem(pb, 400, "invalid_submission_id", "Idempotency-Key",
			               "%s: 1 to 64 of A-Z a-z 0-9 - _ . :", "Idempotency-Key");
	} else if (r > 0 && !sid_ok(sid, sid_len)) {
		return problem(pb, 400, "invalid_submission_id", "submission_id",
		               "%s: 1 to 64 of A-Z a-z 0-9 - _ . :", "submission_id");
	}
	if (sid != NULL && sid_len > 0) {
		snprintf(ev->id, sizeof ev->id, "form:%s:%.*s", form->id, (int)sid_len, sid);
	} else {
		crypto_generichash_state st;
		uint8_t h[16];
		char hex[33], win[24];
		crypto_generichash_init(&st, NULL, 0, sizeof h);
		crypto_generichash_update(&st, (const uint8_t *)form->id, strlen(form->id) + 1);
		for (size_t i = 0; i < s->n; i++) {
			crypto_generichash_update(&st, (const uint8_t *)s->v[i].name, strlen(s->v[i].name) + 1);
			crypto_generichash_update(&st, (const uint8_t *)s->v[i].value, s->v[i].len + 1);
		}
		snprintf(win, sizeof win, "%lld", (long long)(now_ns / (GW_DEDUP_WINDOW_S * 1000000000LL)));
		crypto_generichash_update(&st, (const uint8_t *)win, strlen(win));
		crypto_generichash_final(&st, h, sizeof h);
		fp_hex(h, sizeof h, hex);
		snprintf(ev->id, sizeof ev->id, "form:%s:auto:%s", form->id, hex);
	}
	ev->occurred_at = first_time(ev->id, now_ns);

	/* the data map */
	msgpack_packer pk;
	msgpack_packer_init(&pk, &ev->data, msgpack_sbuffer_write);
	size_t nkeys = 2, nutm = 0, nmapped = 0;   /* form, rules_version */
	for (size_t i = 0; i < form->nfields; i++)
		nmapped += vals[i] != NULL;
	for (int u = 0; u < N_UTM; u++)
		nutm += utm_len[u] > 0;
	const char *source = utm_len[0] ? utm[0] : form->source;
	const char *campaign = utm_len[2] ? utm[2] : form->campaign;
	nkeys += nmapped + (source != NULL) + (campaign != NULL) + (nutm > 0) + (page != NULL) +
	         (ref != NULL) + (form->nconsent ? 2 : 0);
	msgpack_pack_map(&pk, nkeys);
	mp_pack_key(&pk, "form");
	mp_pack_cstr(&pk, form->id);
	for (size_t i = 0; i < form->nfields; i++) {
		if (vals[i] == NULL)
			continue;
		mp_pack_key(&pk, form->fields[i].key);
		if (i == form->email) {
			char low[256];
			for (size_t k = 0; k < lens[i]; k++)
				low[k] = (char)tolower((unsigned char)vals[i][k]);
			pack_strn(&pk, low, lens[i]);
		} else {
			pack_strn(&pk, vals[i], lens[i]);
		}
	}
	if (source) {
		mp_pack_key(&pk, "source");
		mp_pack_cstr(&pk, source);
	}
	if (campaign) {
		mp_pack_key(&pk, "campaign");
		mp_pack_cstr(&pk, campaign);
	}
	if (nutm) {
		mp_pack_key(&pk, "utm");
		msgpack_pack_map(&pk, nutm);
		for (int u = 0; u < N_UTM; u++) {
			if (!utm_len[u])
				continue;
			mp_pack_key(&pk, utm_names[u]);
			pack_strn(&pk, utm[u], utm_len[u]);
		}
	}
	if (page) {
		mp_pack_key(&pk, "page_url");
		pack_strn(&pk, page, page_len);
	}
	if (ref) {
		mp_pack_key(&pk, "referrer");
		pack_strn(&pk, ref, ref_len);
	}
	if (form->nconsent) {
		mp_pack_key(&pk, "consent");
		msgpack_pack_map(&pk, form->nconsent);
		for (size_t i = 0; i < form->nconsent; i++) {
			const gw_field *f = find(s, form->consent[i]);
			int yes = 0;
			if (f != NULL) {
				trim(f->value, f->len, &p, &n);
				yes = n > 0 && !word_is(p, n, "0") && !word_is(p, n, "false") &&
				      !word_is(p, n, "off") && !word_is(p, n, "no");
			}
			mp_pack_key(&pk, form->consent[i]);
			if (yes)
				msgpack_pack_true(&pk);
			else
				msgpack_pack_false(&pk);
		}
		mp_pack_key(&pk, "consent_version");
		mp_pack_cstr(&pk, form->consent_version);
	}
	mp_pack_key(&pk, "rules_version");
	mp_pack_cstr(&pk, rules_version);
	if (ev->data.data == NULL) {
		gw_event_release(ev);
		return FUNNEL_ENOMEM;
	}
	return FUNNEL_OK;
}

void
gw_event_release(gw_event *ev)
{
	msgpack_sbuffer_destroy(&ev->data);
	memset(&ev->data, 0, sizeof ev->data);
}
