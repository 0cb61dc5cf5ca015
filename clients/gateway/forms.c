/*
 * clients/gateway/forms.c - the `forms:` section of funnel.yaml (contract
 * in gateway.h; what each key means is GATEWAY.md "Forms").  Every
 * mistake is reported by the shared reader (rulesfile.h) naming the line.
 */
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "gateway.h"
#include "rulesfile.h"

/* Names the submission itself uses: a form may not map or hide them. */
static int
reserved_field(const char *name)
{
	return strcmp(name, "submission_id") == 0 || strcmp(name, "page_url") == 0 ||
	       strcmp(name, "referrer") == 0 || strncmp(name, "utm_", 4) == 0;
}

/* Data keys the gateway writes itself. */
static int
reserved_key(const char *key)
{
	static const char *const k[] = { "form", "utm", "page_url", "referrer", "consent",
	                                 "consent_version", "rules_version" };
	for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
		if (strcmp(key, k[i]) == 0)
			return 1;
	return 0;
}

/* [A-Za-z0-9_.-] and, with brackets, [] (field names like "a[b]"). */
static int
word_ok(const char *s, int brackets)
{
	for (; *s; s++) {
		char c = *s;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-' || c == '.' || (brackets && (c == '[' || c == ']'))))
			return 0;
	}
	return 1;
}

static int
get_name(rf_ctx *c, yaml_node_t *n, const char *path, size_t max, int brackets, char **out)
{
	int rc = rf_string(c, n, path, max, out);
	if (rc != FUNNEL_OK)
		return rc;
	if (!word_ok(*out, brackets))
		return rf_err(c, n, path, "\"%s\" may hold letters, digits, _ - .%s only", *out,
		              brackets ? " [ ]" : "");
	return FUNNEL_OK;
}

/* A list of field names of the form into dst (max entries). */
static int
get_names(rf_ctx *c, yaml_node_t *n, const char *path, char **dst, size_t max, size_t *count)
{
	char ip[RF_PATH_BYTES];
	size_t k;
	int rc = rf_list(c, n, path, &k);
	if (rc != FUNNEL_OK)
		return rc;
	if (k > max)
		return rf_err(c, n, path, "at most %zu names, got %zu", max, k);
	for (size_t i = 0; i < k; i++) {
		rf_join_index(ip, sizeof ip, path, i);
		*count = i + 1;         /* counted first: released on failure */
		if ((rc = get_name(c, rf_item(c, n, i), ip, GW_MAX_NAME, 1, &dst[i])) != FUNNEL_OK)
			return rc;
	}
	return FUNNEL_OK;
}

/* http(s)://host[:port][/...] with no spaces or control characters. */
static int
url_ok(const char *u, int origin_only)
{
	const char *p;
	if (strncmp(u, "https://", 8) == 0)
		p = u + 8;
	else if (strncmp(u, "http://", 7) == 0)
		p = u + 7;
	else
		return 0;
	if (*p == 0 || *p == '/' || *p == ':')
		return 0;
	for (const char *q = u; *q; q++)
		if ((unsigned char)*q <= 0x20 || *q == 0x7f || *q == '"' || *q == '<' || *q == '>')
			return 0;
	if (origin_only)
		return strchr(p, '/') == NULL && strchr(p, '?') == NULL && strchr(p, '#') == NULL;
	return 1;
}

static int
parse_fields(rf_ctx *c, yaml_node_t *n, const char *path, gw_form *f)
{
	char buf[64], kp[RF_PATH_BYTES];
	int rc;
	if (n == NULL)
		return rf_err(c, NULL, path, "missing (form field -> lead data key, e.g. {email: email})");
	if (n->type != YAML_MAPPING_NODE)
		return rf_err(c, n, path, "expected a mapping of form field -> lead data key, got %s",
		              rf_desc(n, buf, sizeof buf));
	f->email = (size_t)-1;
	for (yaml_node_pair_t *kv = n->data.mapping.pairs.start; kv < n->data.mapping.pairs.top; kv++) {
		yaml_node_t *k = yaml_document_get_node(c->doc, kv->key);
		yaml_node_t *v = yaml_document_get_node(c->doc, kv->value);
		if (f->nfields == GW_MAX_FIELDS)
			return rf_err(c, k, path, "at most %d fields", GW_MAX_FIELDS);
		gw_map *m = &f->fields[f->nfields++];   /* counted first: released on failure */
		if ((rc = get_name(c, k, path, GW_MAX_NAME, 1, &m->field)) != FUNNEL_OK)
			return rc;
		rf_join(kp, sizeof kp, path, m->field);
		if (reserved_field(m->field))
			return rf_err(c, k, kp, "the gateway reads this field itself (submission_id, "
			              "page_url, referrer, utm_*): do not map it");
		for (size_t i = 0; i + 1 < f->nfields; i++)
			if (strcmp(f->fields[i].field, m->field) == 0)
				return rf_err(c, k, kp, "duplicate key");
		if ((rc = get_name(c, v, kp, GW_MAX_KEY, 0, &m->key)) != FUNNEL_OK)
			return rc;
		if (reserved_key(m->key))
			return rf_err(c, v, kp, "\"%s\" is a key the gateway writes itself (form, utm, "
			              "page_url, referrer, consent, consent_version, rules_version)", m->key);
		for (size_t i = 0; i + 1 < f->nfields; i++)
			if (strcmp(f->fields[i].key, m->key) == 0)
				return rf_err(c, v, kp, "two fields map to \"%s\"", m->key);
		if (strcmp(m->key, "email") == 0)
			f->email = f->nfields - 1;
	}
	if (f->email == (size_t)-1)
		return rf_err(c, n, path, "no field maps to \"email\": the lead id is made from it");
	return FUNNEL_OK;
}

static int
mapped(const gw_form *f, const char *field)
{
	for (size_t i = 0; i < f->nfields; i++)
		if (strcmp(f->fields[i].field, field) == 0)
			return 1;
	return 0;
}

static int
parse_consent(rf_ctx *c, yaml_node_t *n, const char *path, gw_form *f)
{
	static const char *const keys[] = { "fields", "version" };
	yaml_node_t *v[2];
	char kp[RF_PATH_BYTES];
	int rc;
	if ((rc = rf_map(c, n, path, keys, 2, "fields, version", 0, v)) != FUNNEL_OK)
		return rc;
	rf_join(kp, sizeof kp, path, "fields");
	if (v[0] == NULL)
		return rf_err(c, n, path, "missing \"fields\" (the consent checkboxes' names)");
	if ((rc = get_names(c, v[0], kp, f->consent, GW_MAX_CONSENT, &f->nconsent)) != FUNNEL_OK)
		return rc;
	if (f->nconsent == 0)
		return rf_err(c, v[0], kp, "expected at least one field");
	for (size_t i = 0; i < f->nconsent; i++) {
		char ip[RF_PATH_BYTES];
		rf_join_index(ip, sizeof ip, kp, i);
		if (mapped(f, f->consent[i]) || reserved_field(f->consent[i]))
			return rf_err(c, rf_item(c, v[0], i), ip, "\"%s\" is a mapped or reserved field, "
			              "not a consent checkbox", f->consent[i]);
	}
	rf_join(kp, sizeof kp, path, "version");
	if (v[1] == NULL)
		return rf_err(c, n, path, "missing \"version\" (the version of the consent text shown)");
	return rf_string(c, v[1], kp, 64, &f->consent_version);
}

static int
parse_form(rf_ctx *c, yaml_node_t *n, const char *path, gw_forms *fs, gw_form *f)
{
	enum { F_ID, F_FIELDS, F_REQUIRED, F_REDIRECT, F_ORIGINS, F_SOURCE, F_CAMPAIGN, F_HONEYPOT,
	       F_CONSENT, F_MESSAGE, N_F };
	static const char *const keys[N_F] = { "id", "fields", "required", "redirect", "origins",
	                                       "source", "campaign", "honeypot", "consent",
	                                       "message" };
	static const char expect[] = "id, fields, required, redirect, origins, source, campaign, "
	                             "honeypot, consent, message";
	yaml_node_t *v[N_F];
	char kp[RF_PATH_BYTES], ip[RF_PATH_BYTES];
	int rc;

	if ((rc = rf_map(c, n, path, keys, N_F, expect, 0, v)) != FUNNEL_OK)
		return rc;
	rf_join(kp, sizeof kp, path, "id");
	if (v[F_ID] == NULL)
		return rf_err(c, n, path, "missing \"id\" (the form's name in /forms/{id})");
	if ((rc = get_name(c, v[F_ID], kp, GW_MAX_ID, 0, &f->id)) != FUNNEL_OK)
		return rc;
	for (gw_form *o = fs->v; o < f; o++)
		if (strcmp(o->id, f->id) == 0)
			return rf_err(c, v[F_ID], kp, "a form \"%s\" is defined above already", f->id);
	rf_join(kp, sizeof kp, path, "fields");
	if ((rc = parse_fields(c, v[F_FIELDS], kp, f)) != FUNNEL_OK)
		return rc;
	rf_join(kp, sizeof kp, path, "required");
	if ((rc = get_names(c, v[F_REQUIRED], kp, f->required, GW_MAX_FIELDS, &f->nrequired)) !=
	    FUNNEL_OK)
		return rc;
	for (size_t i = 0; i < f->nrequired; i++) {
		rf_join_index(ip, sizeof ip, kp, i);
		if (!mapped(f, f->required[i]))
			return rf_err(c, rf_item(c, v[F_REQUIRED], i), ip, "\"%s\" is not one of the "
			              "form's fields", f->required[i]);
	}
	rf_join(kp, sizeof kp, path, "redirect");
	if (v[F_REDIRECT] == NULL)
		return rf_err(c, n, path, "missing \"redirect\" (the thank-you page's URL)");
	if ((rc = rf_string(c, v[F_REDIRECT], kp, GW_MAX_URL, &f->redirect)) != FUNNEL_OK)
		return rc;
	if (!url_ok(f->redirect, 0))
		return rf_err(c, v[F_REDIRECT], kp, "expected an http:// or https:// URL, got \"%s\"",
		              f->redirect);
	rf_join(kp, sizeof kp, path, "origins");
	if (v[F_ORIGINS] == NULL)
		return rf_err(c, n, path, "missing \"origins\" (the sites whose pages may post)");
	size_t k;
	if ((rc = rf_list(c, v[F_ORIGINS], kp, &k)) != FUNNEL_OK)
		return rc;
	if (k == 0 || k > GW_MAX_ORIGINS)
		return rf_err(c, v[F_ORIGINS], kp, "expected 1 to %d origins, got %zu", GW_MAX_ORIGINS, k);
	for (size_t i = 0; i < k; i++) {
		yaml_node_t *o = rf_item(c, v[F_ORIGINS], i);
		rf_join_index(ip, sizeof ip, kp, i);
		f->norigins = i + 1;
		if ((rc = rf_string(c, o, ip, 256, &f->origins[i])) != FUNNEL_OK)
			return rc;
		if (!url_ok(f->origins[i], 1))
			return rf_err(c, o, ip, "expected an origin such as https://www.example.com "
			              "(scheme, host, port; no path), got \"%s\"", f->origins[i]);
	}
	rf_join(kp, sizeof kp, path, "source");
	if (v[F_SOURCE] && (rc = rf_string(c, v[F_SOURCE], kp, 128, &f->source)) != FUNNEL_OK)
		return rc;
	rf_join(kp, sizeof kp, path, "campaign");
	if (v[F_CAMPAIGN] && (rc = rf_string(c, v[F_CAMPAIGN], kp, 128, &f->campaign)) != FUNNEL_OK)
		return rc;
	rf_join(kp, sizeof kp, path, "honeypot");
	if (v[F_HONEYPOT]) {
		if ((rc = get_name(c, v[F_HONEYPOT], kp, GW_MAX_NAME, 1, &f->honeypot)) != FUNNEL_OK)
			return rc;
		if (mapped(f, f->honeypot) || reserved_field(f->honeypot))
			return rf_err(c, v[F_HONEYPOT], kp, "\"%s\" is a mapped or reserved field: the "
			              "honeypot must be a field people leave empty", f->honeypot);
	}
	rf_join(kp, sizeof kp, path, "consent");
	if (v[F_CONSENT] && (rc = parse_consent(c, v[F_CONSENT], kp, f)) != FUNNEL_OK)
		return rc;
	for (size_t i = 0; f->honeypot && i < f->nconsent; i++)
		if (strcmp(f->consent[i], f->honeypot) == 0)
			return rf_err(c, v[F_CONSENT], kp, "\"%s\" is the honeypot", f->honeypot);
	rf_join(kp, sizeof kp, path, "message");
	if (v[F_MESSAGE])
		return rf_string(c, v[F_MESSAGE], kp, 500, &f->message);
	f->message = strdup("Thank you! We will be in touch.");
	return f->message ? FUNNEL_OK : rf_enomem(c);
}

static int
parse_top(rf_ctx *c, yaml_node_t *root, gw_forms *fs)
{
	static const char *const keys[] = { "version", "forms" };
	yaml_node_t *v[2];
	size_t k;
	int rc;

	if ((rc = rf_map(c, root, "", keys, 2, "version, forms", 1, v)) != FUNNEL_OK)
		return rc;
	if (v[0] == NULL)
		return rf_err(c, root, "", "missing \"version\" (a name for this edition of the rules)");
	if ((rc = rf_string(c, v[0], "version", 64, &fs->version)) != FUNNEL_OK)
		return rc;
	if (v[1] == NULL)
		return rf_err(c, root, "", "missing \"forms\" (the forms the gateway accepts)");
	if ((rc = rf_list(c, v[1], "forms", &k)) != FUNNEL_OK)
		return rc;
	if (k == 0 || k > GW_MAX_FORMS)
		return rf_err(c, v[1], "forms", "expected 1 to %d forms, got %zu", GW_MAX_FORMS, k);
	if ((fs->v = calloc(k, sizeof *fs->v)) == NULL)
		return rf_enomem(c);
	for (size_t i = 0; i < k; i++) {
		char ip[RF_PATH_BYTES];
		rf_join_index(ip, sizeof ip, "forms", i);
		fs->n = i + 1;
		if ((rc = parse_form(c, rf_item(c, v[1], i), ip, fs, &fs->v[i])) != FUNNEL_OK)
			return rc;
	}
	return FUNNEL_OK;
}

int
gw_forms_parse(const char *text, size_t len, const char *filename, gw_forms **out, char *err,
               size_t errlen)
{
	rf_ctx c = { .file = filename ? filename : "funnel.yaml", .err = err, .errlen = errlen };
	yaml_document_t doc;
	yaml_node_t *root;
	uint8_t hash[32];
	int rc;

	*out = NULL;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (sodium_init() < 0)
		return FUNNEL_EINTERNAL;
	gw_forms *fs = calloc(1, sizeof *fs);
	if (fs == NULL || (fs->text = malloc(len + 1)) == NULL) {
		gw_forms_destroy(&fs);
		return rf_enomem(&c);
	}
	memcpy(fs->text, text, len);
	fs->text[len] = '\0';
	fs->len = len;
	crypto_generichash(hash, sizeof hash, (const unsigned char *)text, len, NULL, 0);
	fp_hex(hash, sizeof hash, fs->hash_hex);
	if ((rc = rf_parse(&c, fs->text, len, &doc, &root)) != FUNNEL_OK) {
		gw_forms_destroy(&fs);
		return rc;
	}
	if (root == NULL)
		rc = rf_err(&c, NULL, "", "the file is empty: expected version and forms");
	else
		rc = parse_top(&c, root, fs);
	yaml_document_delete(&doc);
	if (rc != FUNNEL_OK) {
		gw_forms_destroy(&fs);
		return rc;
	}
	*out = fs;
	return FUNNEL_OK;
}

RF_DEFINE_LOAD(gw_forms_load, gw_forms, gw_forms_parse)

static void
form_release(gw_form *f)
{
	free(f->id);
	for (size_t i = 0; i < f->nfields; i++) {
		free(f->fields[i].field);
		free(f->fields[i].key);
	}
	for (size_t i = 0; i < f->nrequired; i++)
		free(f->required[i]);
	free(f->redirect);
	for (size_t i = 0; i < f->norigins; i++)
		free(f->origins[i]);
	free(f->source);
	free(f->campaign);
	free(f->honeypot);
	for (size_t i = 0; i < f->nconsent; i++)
		free(f->consent[i]);
	free(f->consent_version);
	free(f->message);
}

void
gw_forms_destroy(gw_forms **pf)
{
	if (pf == NULL || *pf == NULL)
		return;
	gw_forms *f = *pf;
	for (size_t i = 0; i < f->n; i++)
		form_release(&f->v[i]);
	free(f->v);
	free(f->version);
	free(f->text);
	free(f);
	*pf = NULL;
}

const gw_form *
gw_form_find(const gw_forms *f, const char *id, size_t len)
{
	for (size_t i = 0; i < f->n; i++)
		if (strlen(f->v[i].id) == len && memcmp(f->v[i].id, id, len) == 0)
			return &f->v[i];
	return NULL;
}

int
gw_form_origin_ok(const gw_form *form, const char *origin)
{
	for (size_t i = 0; i < form->norigins; i++)
		if (strcmp(form->origins[i], origin) == 0)
			return 1;
	return 0;
}
