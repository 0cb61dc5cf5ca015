/*
 * clients/cli/import.c - `funnel import`: a CRM's history from its CSV
 * exports (a contacts/leads file and a deals/opportunities file) into the
 * log, each fact with its real date (occurred_at), so every view counts
 * it when it happened (PROTOCOL.md §10).
 *
 * A mapping file (JSON; clients/cli/mappings/README.md) says which column holds
 * what: the CRM record id, the create date, the stage and which CRM stage
 * means which funnel step, the date of each step, the lead fields, and
 * how a deal names its lead (or a lead its deal).
 *
 * Three passes, so that a bad row is refused before anything is sent:
 *   1. read: every row of both files (libcsv) into per-lead plans; a row
 *      that cannot be read (unknown stage, missing or bad date, bad
 *      amount, no record id, a second deal for a lead) is refused with its
 *      file, line and reason, and changes no plan;
 *   2. plan: each lead's chain of events in funnel order (captured,
 *      qualified, accepted, opportunity.opened, deal.won | deal.lost, or
 *      lead.disqualified), each step implied by a later one, its time the
 *      step's own date or the previous step's, never earlier than the
 *      previous step (time order per lead);
 *   3. send: whole leads packed into requests of about --batch events.
 *      A request is atomic; one the log refuses (the lead moved on in the
 *      log already, say) is sent again lead by lead, and the leads it
 *      refuses have their rows refused.  Transport failures are retried
 *      with the same ids.
 *
 * Ids are derived from the lead and the step ("import:<lead>:<step>"),
 * and the envelope from the files alone, so importing the same files
 * again stores nothing: every event is a duplicate of its first copy.
 */
#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csv.h>
#include <cjson/cJSON.h>
#include <msgpack.h>

#include "cli.h"
#include "util.h"
#include "mp.h"

static const char import_help[] =
	"usage: funnel import --mapping FILE [--leads CSV] [--deals CSV] [options]\n"
	"\n"
	"Load a CRM's history from its CSV exports.  Each row becomes the events it\n"
	"implies (lead.captured, lead.qualified, lead.accepted, opportunity.opened,\n"
	"deal.won / deal.lost, lead.disqualified), dated by the row (occurred_at),\n"
	"with ids derived from the CRM ids: importing the same files again stores\n"
	"nothing new.  Shipped mappings: clients/cli/mappings/hubspot.json and\n"
	"salesforce.json; the format: clients/cli/mappings/README.md.\n"
	"\n"
	"  --mapping FILE   columns, stages and date formats (JSON)\n"
	"  --leads CSV      the contacts / leads export\n"
	"  --deals CSV      the deals / opportunities export\n"
	"  --rejects FILE   where refused rows go, one \"file:line: reason\" each\n"
	"                   (default funnel-import.rejects; removed again when no\n"
	"                   row was refused)\n"
	"  --batch N        events per request (default 2000, at most 10000)\n"
	"  --dry-run        read and plan, report, send nothing\n"
	"\n"
	"Prints a summary (rows, events, stored, duplicates, refused); a progress\n"
	"line on stderr when it is a terminal.  Exit 0 when every event was stored\n"
	"or was already there, 1 otherwise (refused rows included).\n"
	"\n" CLI_GLOBAL_HELP;

enum { OPT_MAPPING = 400, OPT_LEADS, OPT_DEALS, OPT_REJECTS, OPT_DRY_RUN };

/* The funnel steps a CRM stage can mean, in funnel order; a step implies
 * every one before it (up to S_OPENED). */
enum step { S_CAPTURED, S_QUALIFIED, S_ACCEPTED, S_OPENED, S_WON, S_LOST, S_DISQUALIFIED,
            S_COUNT };
/* The longest lead id an import makes: its events' ids,
 * "import:<lead>:<step>", must fit the log's FUNNEL_MAX_ID_BYTES with the
 * longest step name ("disqualified"). */
#define IMPORT_MAX_LEAD ((int)(FUNNEL_MAX_ID_BYTES - sizeof "import:" - sizeof "disqualified" + 1))
static const char *const step_name[S_COUNT] = {
	"captured", "qualified", "accepted", "opportunity", "won", "lost", "disqualified"
};
static const char *const step_type[S_COUNT] = {
	"lead.captured", "lead.qualified", "lead.accepted", "opportunity.opened", "deal.won",
	"deal.lost", "lead.disqualified"
};

/* ---- a string -> index map (open addressing) ---- */

typedef struct smap {
	char **keys;
	size_t *vals;
	size_t cap, n;
} smap;

static uint64_t
fnv(const char *s)
{
	uint64_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

/* The slot of key: holding it, or the empty one where it goes. */
static size_t
smap_slot(const smap *m, const char *key)
{
	size_t i = fnv(key) & (m->cap - 1);
	while (m->keys[i] != NULL && strcmp(m->keys[i], key) != 0)
		i = (i + 1) & (m->cap - 1);
	return i;
}

static int
smap_get(const smap *m, const char *key, size_t *val)
{
	if (m->cap == 0)
		return 0;
	size_t i = smap_slot(m, key);
	if (m->keys[i] == NULL)
		return 0;
	*val = m->vals[i];
	return 1;
}

static int
smap_put(smap *m, const char *key, size_t val)
{
	if ((m->n + 1) * 2 > m->cap) {
		smap g = { NULL, NULL, m->cap ? m->cap * 2 : 1024, 0 };
		if ((g.keys = calloc(g.cap, sizeof *g.keys)) == NULL ||
		    (g.vals = calloc(g.cap, sizeof *g.vals)) == NULL) {
			free(g.keys);
			return -1;
		}
		for (size_t i = 0; i < m->cap; i++) {
			if (m->keys[i] != NULL) {
				size_t j = smap_slot(&g, m->keys[i]);
				g.keys[j] = m->keys[i];
				g.vals[j] = m->vals[i];
				g.n++;
			}
		}
		free(m->keys);
		free(m->vals);
		*m = g;
	}
	size_t i = smap_slot(m, key);
	if (m->keys[i] == NULL) {
		if ((m->keys[i] = strdup(key)) == NULL)
			return -1;
		m->n++;
	}
	m->vals[i] = val;
	return 0;
}

static void
smap_free(smap *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->keys[i]);
	free(m->keys);
	free(m->vals);
	memset(m, 0, sizeof *m);
}

/* ---- the plan ---- */

/* A row that contributed to a lead: refused with the lead if the log
 * refuses it. */
typedef struct rowref {
	int file;          /* 0 leads, 1 deals */
	size_t line;
} rowref;

typedef struct plan {
	char *lead;
	int has_row, has_deal;
	int level;                   /* highest step of the lead row: S_* */
	int deal_result;             /* S_OPENED, S_WON or S_LOST */
	uint64_t at[S_COUNT];        /* a step's own date, 0: none */
	cJSON *fields;               /* lead.captured data (owned) */
	double amount;
	int has_amount;
	char *deal_id, *deal_name, *reason;
	char *row_text;              /* the lead row as read, to tell a copy */
	size_t row_line, deal_line;
	rowref rows[2];
	int n_rows;
	int refused;
} plan;

typedef struct importer {
	struct cli *g;
	cJSON *map;                  /* the mapping (owned) */
	const char *prefix;
	cJSON *formats;              /* array of strptime formats */
	const char *files[2];
	FILE *rejects;
	plan *plans;
	size_t n_plans, cap_plans;
	smap by_lead;                /* lead id -> plan index */
	smap deal_lead;              /* deal id -> lead id's plan index (leads naming their deal) */
	size_t rows, refused_rows, dup_rows, events, stored, dups;
	int fatal;
	/* the CSV row being read */
	char **cells;
	size_t n_cells, cap_cells;
	size_t line;                 /* physical line where the row started */
	size_t cur_line;             /* physical lines seen so far */
	int file;
	char **header;
	size_t n_header;
	int in_header;
} importer;

static void
refuse(importer *im, int file, size_t line, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
refuse(importer *im, int file, size_t line, const char *fmt, ...)
{
	va_list ap;
	im->refused_rows++;
	if (im->rejects == NULL)
		return;
	fprintf(im->rejects, "%s:%zu: ", im->files[file], line);
	va_start(ap, fmt);
	vfprintf(im->rejects, fmt, ap);
	va_end(ap);
	fputc('\n', im->rejects);
}

/* The cell of column `name` in the current row ("" when the row is short
 * or the mapping does not name the column), trimmed of blanks. */
static const char *
cell(importer *im, const char *name)
{
	if (name == NULL)
		return "";
	for (size_t i = 0; i < im->n_header && i < im->n_cells; i++) {
		if (strcmp(im->header[i], name) == 0)
			return im->cells[i];
	}
	return "";
}

static const char *
mstr(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Whether key is one of the NULL-terminated names. */
static int
one_of(const char *key, const char *const *names)
{
	for (; *names != NULL; names++)
		if (strcmp(key, *names) == 0)
			return 1;
	return 0;
}

/* The names as "a, b, c" into buf, for a message. */
static const char *
listed(const char *const *names, char *buf, size_t len)
{
	size_t at = 0;
	buf[0] = '\0';
	for (; *names != NULL && at < len; names++)
		at += (size_t)snprintf(buf + at, len - at, "%s%s", at ? ", " : "", *names);
	return buf;
}

/* A date cell into ns since the epoch (UTC), by the mapping's formats;
 * what follows the format may only be fractional seconds and a 'Z'.
 * Returns 0, 1 for an empty cell, -1 for a date none of them reads. */
static int
parse_date(const importer *im, const char *s, uint64_t *out)
{
	const cJSON *f;
	if (*s == '\0')
		return 1;
	cJSON_ArrayForEach(f, im->formats) {
		struct tm tm;
		if (!cJSON_IsString(f))
			continue;
		memset(&tm, 0, sizeof tm);
		const char *end = strptime(s, f->valuestring, &tm);
		if (end == NULL)
			continue;
		if (*end == '.')
			end += 1 + strspn(end + 1, "0123456789");
		if (*end == 'Z')
			end++;
		if (*end != '\0')
			continue;
		time_t t = timegm(&tm);
		if (t <= 0)
			continue;
		*out = (uint64_t)t * 1000000000ull;
		return 0;
	}
	return -1;
}

/* The step a CRM stage name means: the mapping's table, matched without
 * regard to case.  -1 when unknown. */
static int
stage_step(const cJSON *stages, const char *v)
{
	const cJSON *e;
	if (*v == '\0')
		return S_CAPTURED;
	cJSON_ArrayForEach(e, stages) {
		if (e->string != NULL && strcasecmp(e->string, v) == 0 && cJSON_IsString(e)) {
			for (int s = 0; s < S_COUNT; s++) {
				if (strcmp(e->valuestring, step_name[s]) == 0)
					return s;
			}
		}
	}
	return -1;
}

static plan *
plan_of(importer *im, const char *lead)
{
	size_t i;
	if (smap_get(&im->by_lead, lead, &i))
		return &im->plans[i];
	if (im->n_plans == im->cap_plans) {
		size_t nc = im->cap_plans ? im->cap_plans * 2 : 1024;
		plan *np = realloc(im->plans, nc * sizeof *np);
		if (np == NULL)
			return NULL;
		im->plans = np;
		im->cap_plans = nc;
	}
	plan *p = &im->plans[im->n_plans];
	memset(p, 0, sizeof *p);
	if ((p->lead = strdup(lead)) == NULL || smap_put(&im->by_lead, lead, im->n_plans) != 0) {
		free(p->lead);
		return NULL;
	}
	im->n_plans++;
	return p;
}

static void
add_row(plan *p, int file, size_t line)
{
	if (p->n_rows < 2)
		p->rows[p->n_rows++] = (rowref){ file, line };
}

/* The row as one string, to tell an exact copy of a row from another row
 * with the same record id. */
static char *
row_text(const importer *im)
{
	size_t n = 1;
	for (size_t i = 0; i < im->n_cells; i++)
		n += strlen(im->cells[i]) + 1;
	char *s = malloc(n), *q = s;
	if (s == NULL)
		return NULL;
	for (size_t i = 0; i < im->n_cells; i++) {
		size_t l = strlen(im->cells[i]);
		memcpy(q, im->cells[i], l);
		q += l;
		*q++ = '\x1f';
	}
	*q = 0;
	return s;
}

static void
lead_row(importer *im)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(im->map, "leads");
	const char *idcol = mstr(m, "id"), *id = cell(im, idcol);
	char lead[160];
	uint64_t at[S_COUNT] = { 0 };
	int rc;

	if (*id == '\0') {
		refuse(im, 0, im->line, "no record id in column '%s'", idcol ? idcol : "");
		return;
	}
	if (snprintf(lead, sizeof lead, "%s%s", im->prefix, id) > IMPORT_MAX_LEAD) {
		refuse(im, 0, im->line, "record id '%s' is too long for a lead id (at most %d bytes "
		       "with the prefix)", id, IMPORT_MAX_LEAD);
		return;
	}
	const char *stcol = mstr(m, "stage"), *stv = cell(im, stcol);
	int level = stage_step(cJSON_GetObjectItemCaseSensitive(m, "stages"), stv);
	if (level < 0) {
		refuse(im, 0, im->line, "unknown stage '%s' in column '%s': not in the mapping's "
		       "leads.stages", stv, stcol ? stcol : "");
		return;
	}
	const char *ccol = mstr(m, "created");
	if ((rc = parse_date(im, cell(im, ccol), &at[S_CAPTURED])) != 0) {
		refuse(im, 0, im->line, rc > 0 ? "missing date in column '%s'"
		                               : "date '%s' in column '%s' matches none of the "
		                                 "mapping's date_formats",
		       rc > 0 ? ccol : cell(im, ccol), ccol);
		return;
	}
	const cJSON *dates = cJSON_GetObjectItemCaseSensitive(m, "dates");
	for (int s = S_QUALIFIED; s < S_COUNT; s++) {
		const char *col = mstr(dates, step_name[s]);
		if (col != NULL && parse_date(im, cell(im, col), &at[s]) < 0) {
			refuse(im, 0, im->line, "date '%s' in column '%s' matches none of the "
			       "mapping's date_formats", cell(im, col), col);
			return;
		}
	}
	char *text = row_text(im);
	plan *p = text ? plan_of(im, lead) : NULL;
	if (p == NULL) {
		free(text);
		im->fatal = 1;
		return;
	}
	if (p->has_row) {
		if (strcmp(p->row_text, text) == 0)
			im->dup_rows++;
		else
			refuse(im, 0, im->line, "record id '%s' again, with other values than at line "
			       "%zu", id, p->row_line);
		free(text);
		return;
	}
	p->has_row = 1;
	p->row_text = text;
	p->row_line = im->line;
	p->level = level;
	memcpy(p->at, at, sizeof at);
	if (level == S_DISQUALIFIED)
		p->reason = strdup(stv);
	add_row(p, 0, im->line);
	/* the captured event's data: the mapped columns that have a value */
	p->fields = cJSON_CreateObject();
	const cJSON *f;
	cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(m, "fields")) {
		const char *v = cell(im, f->string);
		if (cJSON_IsString(f) && *v)
			cJSON_AddStringToObject(p->fields, f->valuestring, v);
	}
	cJSON_AddStringToObject(p->fields, "crm_id", id);
	const char *dcol = mstr(m, "deal");
	const char *deal = cell(im, dcol);
	if (*deal && smap_put(&im->deal_lead, deal, (size_t)(p - im->plans)) != 0)
		im->fatal = 1;
}

static void
deal_row(importer *im)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(im->map, "deals");
	const char *idcol = mstr(m, "id"), *id = cell(im, idcol);
	char lead[160], first[160];
	uint64_t opened = 0, closed = 0;
	double amount = 0;
	int rc;
	size_t pi;

	if (*id == '\0') {
		refuse(im, 1, im->line, "no record id in column '%s'", idcol ? idcol : "");
		return;
	}
	const char *stcol = mstr(m, "stage"), *stv = cell(im, stcol);
	int result = stage_step(cJSON_GetObjectItemCaseSensitive(m, "stages"), stv);
	if (result != S_OPENED && result != S_WON && result != S_LOST) {
		refuse(im, 1, im->line, "unknown deal stage '%s' in column '%s': not in the mapping's "
		       "deals.stages as opportunity, won or lost", stv, stcol ? stcol : "");
		return;
	}
	const char *ccol = mstr(m, "created");
	if ((rc = parse_date(im, cell(im, ccol), &opened)) != 0) {
		refuse(im, 1, im->line, rc > 0 ? "missing date in column '%s'"
		                               : "date '%s' in column '%s' matches none of the "
		                                 "mapping's date_formats",
		       rc > 0 ? ccol : cell(im, ccol), ccol);
		return;
	}
	const char *kcol = mstr(m, "closed");
	if (result != S_OPENED && (rc = parse_date(im, cell(im, kcol), &closed)) < 0) {
		refuse(im, 1, im->line, "date '%s' in column '%s' matches none of the mapping's "
		       "date_formats", cell(im, kcol), kcol);
		return;
	}
	const char *acol = mstr(m, "amount"), *av = cell(im, acol);
	if (*av) {
		char *end;
		errno = 0;
		amount = strtod(av, &end);
		if (errno || *end || end == av) {
			refuse(im, 1, im->line, "amount '%s' in column '%s' is not a number", av, acol);
			return;
		}
	}
	/* the deal's lead: named by a lead row (ConvertedOpportunityId), or
	 * naming it (the first of "Associated Contact IDs") */
	if (smap_get(&im->deal_lead, id, &pi)) {
		snprintf(lead, sizeof lead, "%s", im->plans[pi].lead);
	} else {
		const char *lcol = mstr(m, "lead"), *lv = cell(im, lcol);
		size_t n = strcspn(lv, ";,");
		while (n > 0 && isspace((unsigned char)lv[n - 1]))
			n--;
		if (n == 0) {
			refuse(im, 1, im->line, "deal '%s' names no lead (column '%s') and no lead row "
			       "names it", id, lcol ? lcol : "");
			return;
		}
		if (n >= 120) {
			refuse(im, 1, im->line, "lead id of deal '%s' is too long", id);
			return;
		}
		memcpy(first, lv, n);
		first[n] = 0;
		/* as for a lead row: never cut short, never past IMPORT_MAX_LEAD */
		if (snprintf(lead, sizeof lead, "%s%s", im->prefix, first) > IMPORT_MAX_LEAD) {
			refuse(im, 1, im->line, "lead id of deal '%s' is longer than %d bytes (%s%s)", id,
			       IMPORT_MAX_LEAD, im->prefix, first);
			return;
		}
	}
	plan *p = plan_of(im, lead);
	if (p == NULL) {
		im->fatal = 1;
		return;
	}
	if (p->has_deal) {
		refuse(im, 1, im->line, "lead '%s' has a deal already (line %zu); one opportunity per "
		       "lead is imported", lead, p->deal_line);
		return;
	}
	p->has_deal = 1;
	p->deal_line = im->line;
	if (!p->has_row)
		p->at[S_CAPTURED] = opened;     /* a lead known by its deal only */
	p->deal_result = result;
	p->at[S_OPENED] = opened;
	if (result != S_OPENED)
		p->at[result] = closed;
	if (*av) {
		p->amount = amount;
		p->has_amount = 1;
	}
	p->deal_id = strdup(id);
	const char *nv = cell(im, mstr(m, "name"));
	p->deal_name = *nv ? strdup(nv) : NULL;
	if (result == S_LOST) {
		const char *rv = cell(im, mstr(m, "lost_reason"));
		free(p->reason);
		p->reason = strdup(*rv ? rv : "lost");
	}
	add_row(p, 1, im->line);
}

/* ---- CSV (libcsv callbacks) ---- */

static void
on_field(void *s, size_t len, void *ctx)
{
	importer *im = ctx;
	if (im->n_cells == im->cap_cells) {
		size_t nc = im->cap_cells ? im->cap_cells * 2 : 32;
		char **n = realloc(im->cells, nc * sizeof *n);
		if (n == NULL) {
			im->fatal = 1;
			return;
		}
		im->cells = n;
		im->cap_cells = nc;
	}
	char *c = malloc(len + 1);
	if (c == NULL) {
		im->fatal = 1;
		return;
	}
	memcpy(c, s, len);
	c[len] = 0;
	/* trim blanks, and the UTF-8 byte order mark a spreadsheet may write */
	char *b = c;
	if (im->in_header && im->n_cells == 0 && len >= 3 && memcmp(b, "\xef\xbb\xbf", 3) == 0)
		b += 3;
	while (*b == ' ' || *b == '\t')
		b++;
	size_t l = strlen(b);
	while (l > 0 && (b[l - 1] == ' ' || b[l - 1] == '\t'))
		b[--l] = 0;
	memmove(c, b, l + 1);
	im->cells[im->n_cells++] = c;
}

static void
clear_cells(importer *im)
{
	for (size_t i = 0; i < im->n_cells; i++)
		free(im->cells[i]);
	im->n_cells = 0;
}

/* Whether the header has the column col (NULL: no). */
static int
has_column(const importer *im, const char *col)
{
	for (size_t i = 0; col != NULL && i < im->n_header; i++)
		if (strcmp(im->header[i], col) == 0)
			return 1;
	return 0;
}

/* The columns a row cannot do without (record id, create date, stage)
 * must be in the header: a file that is not the export the mapping
 * describes stops the import before any row is read.  Every other column
 * the mapping names (a field, a step's date, the amount, ...) may be
 * missing, as in an export of chosen columns, but is named on stderr
 * before anything is sent: a column name misspelled in the mapping would
 * otherwise leave its values out without a word. */
static void
check_header(importer *im)
{
	static const char *const need[] = { "id", "created", "stage" };
	const char *sec = im->file ? "deals" : "leads";
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(im->map, sec), *e;
	for (size_t k = 0; k < 3 && !im->fatal; k++) {
		const char *col = mstr(m, need[k]);
		if (!has_column(im, col)) {
			cli_error(im->g, "%s: no column '%s' (the mapping's %s.%s) in the header: not the "
			          "export this mapping reads", im->files[im->file], col ? col : "", sec,
			          need[k]);
			im->fatal = 1;
		}
	}
	if (im->fatal)
		return;
	cJSON_ArrayForEach(e, m) {   /* check_mapping made every value a string or an object */
		const cJSON *c = NULL;
		int by_key = strcmp(e->string, "fields") == 0;    /* column -> data key */
		if (strcmp(e->string, "stages") == 0 || one_of(e->string, (const char *const[]){
		        "id", "created", "stage", NULL }))
			continue;
		if (cJSON_IsString(e) && !has_column(im, e->valuestring))
			cli_error(im->g, "warning: %s has no column '%s' (the mapping's %s.%s): its values "
			          "are left out", im->files[im->file], e->valuestring, sec, e->string);
		if (!cJSON_IsObject(e))
			continue;
		cJSON_ArrayForEach(c, e) {
			const char *col = by_key ? c->string : c->valuestring;
			if (!has_column(im, col))
				cli_error(im->g, "warning: %s has no column '%s' (the mapping's %s.%s.%s): its "
				          "values are left out", im->files[im->file], col, sec, e->string,
				          c->string);
		}
	}
}

static void
on_row(int term, void *ctx)
{
	importer *im = ctx;
	(void)term;
	if (im->in_header) {
		im->header = im->cells;
		im->n_header = im->n_cells;
		im->cells = NULL;
		im->n_cells = im->cap_cells = 0;
		im->in_header = 0;
		check_header(im);
	} else if (!(im->n_cells == 1 && im->cells[0][0] == 0)) {     /* a blank line is no row */
		im->rows++;
		if (im->file == 0)
			lead_row(im);
		else
			deal_row(im);
	}
	clear_cells(im);
	im->line = im->cur_line + 2;     /* the next row starts on the next line */
}

/* Read one CSV file through the callbacks.  Returns 0 or -1 (said). */
static int
read_csv(importer *im, int file)
{
	struct csv_parser csv;
	char buf[65536];
	size_t n;
	int ret = 0;
	FILE *f = fopen(im->files[file], "rb");

	if (f == NULL) {
		cli_error(im->g, "cannot open %s: %s", im->files[file], strerror(errno));
		return -1;
	}
	if (csv_init(&csv, CSV_APPEND_NULL) != 0) {
		fclose(f);
		return -1;
	}
	im->file = file;
	im->in_header = 1;
	im->line = 1;
	im->cur_line = 0;
	while (!im->fatal && (n = fread(buf, 1, sizeof buf, f)) > 0) {
		/* rows are fed line by line so that a refusal names its line */
		size_t off = 0;
		while (off < n && !im->fatal) {
			char *nl = memchr(buf + off, '\n', n - off);
			size_t chunk = nl ? (size_t)(nl - (buf + off)) + 1 : n - off;
			if (csv_parse(&csv, buf + off, chunk, on_field, on_row, im) != chunk) {
				cli_error(im->g, "%s:%zu: %s", im->files[file], im->cur_line + 1,
				          csv_strerror(csv_error(&csv)));
				ret = -1;
				goto done;
			}
			if (nl)
				im->cur_line++;
			off += chunk;
		}
	}
	if (ferror(f)) {
		cli_error(im->g, "cannot read %s: %s", im->files[file], strerror(errno));
		ret = -1;
	} else {
		csv_fini(&csv, on_field, on_row, im);
	}
done:
	csv_free(&csv);
	fclose(f);
	clear_cells(im);
	for (size_t i = 0; i < im->n_header; i++)
		free(im->header[i]);
	free(im->header);
	im->header = NULL;
	im->n_header = 0;
	return im->fatal ? -1 : ret;
}

/* ---- events ---- */

typedef struct ibatch {
	funnel_event ev[FUNNEL_MAX_BATCH];
	size_t n;
	msgpack_sbuffer data;        /* every event's data, concatenated */
	size_t off[FUNNEL_MAX_BATCH], len[FUNNEL_MAX_BATCH];
	char ids[FUNNEL_MAX_BATCH][160];
	size_t plan_first, plan_end; /* the leads in the ibatch */
} ibatch;

static void
pack_str(msgpack_packer *pk, const char *k, const char *v)
{
	mp_pack_key(pk, k);
	mp_pack_cstr(pk, v);
}

/* The chain of one lead into b: the steps the plan implies, in funnel
 * order, each dated by its own date or the previous one's, never before
 * it.  Returns the number of events. */
static size_t
chain(const importer *im, const plan *p, ibatch *b)
{
	int steps[S_COUNT], n = 0;
	int top = p->has_deal ? p->deal_result : p->level;
	if (p->has_deal && p->has_row && p->level == S_WON && top == S_OPENED)
		top = S_WON;
	steps[n++] = S_CAPTURED;
	if (top == S_DISQUALIFIED) {
		steps[n++] = S_DISQUALIFIED;
	} else {
		int upto = top >= S_OPENED ? S_OPENED : top;
		for (int s = S_QUALIFIED; s <= upto; s++)
			steps[n++] = s;
		if (top == S_WON || top == S_LOST)
			steps[n++] = top;
	}
	uint64_t t = 0;
	msgpack_packer pk;
	msgpack_packer_init(&pk, &b->data, msgpack_sbuffer_write);
	for (int i = 0; i < n; i++) {
		int s = steps[i];
		if (p->at[s] > t)
			t = p->at[s];
		size_t k = b->n++;
		funnel_event *e = &b->ev[k];
		memset(e, 0, sizeof *e);
		e->type = step_type[s];
		e->lead = p->lead;
		snprintf(b->ids[k], sizeof b->ids[k], "import:%s:%s", p->lead, step_name[s]);
		e->id = b->ids[k];
		e->has_occurred_at = 1;
		e->occurred_at = (int64_t)t;
		b->off[k] = b->data.size;
		switch (s) {
		case S_CAPTURED: {
			const cJSON *f;
			size_t nf = 0;
			if (p->fields != NULL)
				nf = (size_t)cJSON_GetArraySize(p->fields);
			msgpack_pack_map(&pk, nf + 1);
			pack_str(&pk, "import", mstr(im->map, "name") ? mstr(im->map, "name") : "csv");
			if (p->fields != NULL)
				cJSON_ArrayForEach(f, p->fields) pack_str(&pk, f->string, f->valuestring);
			break;
		}
		case S_OPENED:
		case S_WON:
		case S_LOST: {
			size_t nk = (p->deal_id != NULL) + (p->deal_name != NULL && s == S_OPENED) +
			            (p->has_amount && s != S_LOST) + (s == S_LOST);
			msgpack_pack_map(&pk, nk);
			if (p->deal_id)
				pack_str(&pk, "deal", p->deal_id);
			if (p->deal_name && s == S_OPENED)
				pack_str(&pk, "name", p->deal_name);
			if (p->has_amount && s != S_LOST) {
				mp_pack_key(&pk, "amount");
				msgpack_pack_double(&pk, p->amount);
			}
			if (s == S_LOST)
				pack_str(&pk, "reason", p->reason ? p->reason : "lost");
			break;
		}
		case S_DISQUALIFIED:
			msgpack_pack_map(&pk, 1);
			pack_str(&pk, "reason", p->reason && *p->reason ? p->reason : "disqualified");
			break;
		default:
			break;
		}
		b->len[k] = b->data.size - b->off[k];
	}
	return (size_t)n;
}

static void
point_data(ibatch *b)
{
	for (size_t k = 0; k < b->n; k++) {
		b->ev[k].data = b->len[k] ? b->data.data + b->off[k] : NULL;
		b->ev[k].data_len = b->len[k];
	}
}

/* Send b, retrying transport failures with the same ids.  Returns
 * FUNNEL_OK, or the log's refusal, or a transport error after the tries. */
static int
send_batch(importer *im, funnel_producer **pp, ibatch *b, funnel_ack *acks)
{
	int rc = FUNNEL_ETIMEDOUT;
	point_data(b);
	for (int attempt = 0; attempt < 5; attempt++) {
		if (*pp == NULL && (rc = funnel_producer_new(pp, im->g->ingest, im->g->timeout_ms)) !=
		                       FUNNEL_OK)
			return rc;
		rc = funnel_publish(*pp, b->ev, b->n, acks);
		if (rc != FUNNEL_ETIMEDOUT && rc != FUNNEL_ETRANSPORT)
			return rc;
		funnel_producer_destroy(pp);
	}
	return rc;
}

static void
count_acks(importer *im, const funnel_ack *acks, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (acks[i].dup)
			im->dups++;
		else
			im->stored++;
	}
}

static void
refuse_plan(importer *im, plan *p, const char *why)
{
	for (int i = 0; i < p->n_rows; i++)
		refuse(im, p->rows[i].file, p->rows[i].line, "lead %s refused by the log: %s", p->lead,
		       why);
	p->refused = 1;
}

static void
progress(importer *im, size_t done_rows, double t0, int last)
{
	static double shown;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	double now = ts.tv_sec + ts.tv_nsec / 1e9;
	if (!last && now - shown < 0.1)
		return;
	shown = now;
	double el = now - t0 > 1e-6 ? now - t0 : 1e-6;
	double rate = done_rows / el;
	double eta = rate > 0 ? (im->rows - done_rows) / rate : 0;
	int width = 24, fill = im->rows ? (int)(width * done_rows / im->rows) : width;
	fprintf(stderr, "\rimport [%.*s%*s] %zu/%zu rows  %zu events  %.0f rows/s  ETA %.0fs  ",
	        fill, "########################", width - fill, "", done_rows, im->rows,
	        im->stored + im->dups, rate, eta);
	if (last)
		fputc('\n', stderr);
}

/* Pass 3: the plans, in the order their leads first appeared, in
 * requests of about batch_size events. */
static int
send_all(importer *im, size_t batch_size, int dry_run)
{
	ibatch *b = calloc(1, sizeof *b);
	funnel_ack *acks = calloc(FUNNEL_MAX_BATCH, sizeof *acks);
	funnel_producer *p = NULL;
	int ret = 0, tty = !dry_run && isatty(STDERR_FILENO);
	size_t done_rows = 0;
	struct timespec ts;

	if (b == NULL || acks == NULL) {
		free(b);
		free(acks);
		return -1;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	double t0 = ts.tv_sec + ts.tv_nsec / 1e9;
	msgpack_sbuffer_init(&b->data);
	size_t i = 0;
	while (i < im->n_plans && ret == 0) {
		b->n = 0;
		b->data.size = 0;
		b->plan_first = i;
		while (i < im->n_plans && b->n + S_COUNT <= batch_size) {
			if (!im->plans[i].refused)
				im->events += chain(im, &im->plans[i], b);
			i++;
		}
		b->plan_end = i;
		size_t rows_here = 0;
		for (size_t k = b->plan_first; k < b->plan_end; k++)
			rows_here += (size_t)im->plans[k].n_rows;
		if (dry_run || b->n == 0) {
			done_rows += rows_here;
			continue;
		}
		int rc = send_batch(im, &p, b, acks);
		if (rc == FUNNEL_OK) {
			count_acks(im, acks, b->n);
		} else if (rc == FUNNEL_ETIMEDOUT || rc == FUNNEL_ETRANSPORT || rc == FUNNEL_ESHUTDOWN ||
		           rc == FUNNEL_ESTORAGE) {
			cli_fail(im->g, rc, p ? funnel_producer_error(p) : NULL, im->g->ingest);
			ret = -1;
			break;
		} else {
			/* refused as a whole: lead by lead, so only the leads the log
			 * refuses are refused */
			ibatch *one = calloc(1, sizeof *one);
			if (one == NULL) {
				ret = -1;
				break;
			}
			msgpack_sbuffer_init(&one->data);
			for (size_t k = b->plan_first; k < b->plan_end && ret == 0; k++) {
				plan *pl = &im->plans[k];
				if (pl->refused)
					continue;
				one->n = 0;
				one->data.size = 0;
				chain(im, pl, one);
				rc = send_batch(im, &p, one, acks);
				if (rc == FUNNEL_OK) {
					count_acks(im, acks, one->n);
				} else if (rc == FUNNEL_ETIMEDOUT || rc == FUNNEL_ETRANSPORT ||
				           rc == FUNNEL_ESHUTDOWN || rc == FUNNEL_ESTORAGE) {
					cli_fail(im->g, rc, p ? funnel_producer_error(p) : NULL, im->g->ingest);
					ret = -1;
				} else {
					char msg[600];
					cli_describe(im->g, rc, p ? funnel_producer_error(p) : NULL, NULL, msg,
					             sizeof msg);
					refuse_plan(im, pl, msg);
				}
			}
			msgpack_sbuffer_destroy(&one->data);
			free(one);
		}
		done_rows += rows_here;
		if (tty)
			progress(im, done_rows, t0, 0);
	}
	/* Every row read is accounted for once the last request is answered:
	 * rows refused before planning, exact copies and rows past a plan's
	 * second are in im->rows but in no plan's n_rows, so the final line
	 * shows im->rows, not the sum of the plans'. */
	if (tty)
		progress(im, ret == 0 ? im->rows : done_rows, t0, 1);
	msgpack_sbuffer_destroy(&b->data);
	free(b);
	free(acks);
	funnel_producer_destroy(&p);
	return ret;
}

/* ---- the mapping's shape ---- */

/* An object of strings (column -> key, step -> column, stage -> step) at
 * where; with steps non-NULL each value must be one of them. */
static int
check_strings(struct cli *g, const char *path, const char *where, const cJSON *o,
              const char *const *keys, const char *const *steps)
{
	char names[256];
	const cJSON *e;
	if (!cJSON_IsObject(o)) {
		cli_error(g, "the mapping %s: %s is not an object", path, where);
		return -1;
	}
	cJSON_ArrayForEach(e, o) {
		if (!cJSON_IsString(e) || e->valuestring[0] == '\0') {
			cli_error(g, "the mapping %s: %s.%s is not a non-empty string", path, where, e->string);
			return -1;
		}
		if (keys != NULL && !one_of(e->string, keys)) {
			cli_error(g, "the mapping %s: %s has no key '%s' (it has %s)", path, where, e->string,
			          listed(keys, names, sizeof names));
			return -1;
		}
		if (steps != NULL && !one_of(e->valuestring, steps)) {
			cli_error(g, "the mapping %s: %s.%s is '%s', not a step (%s)", path, where, e->string,
			          e->valuestring, listed(steps, names, sizeof names));
			return -1;
		}
	}
	return 0;
}

/* The mapping's keys and types, before any file is read: a misspelled
 * key or a stage mapped to no step would otherwise import rows without
 * what it meant to give them, which a second import cannot mend (the
 * events' ids are taken).  The format: mappings/README.md.  0 or -1
 * (reported). */
static int
check_mapping(struct cli *g, const char *path, const cJSON *map)
{
	static const char *const top[] = { "name", "about", "lead_prefix", "date_formats", "leads",
	                                   "deals", NULL };
	static const char *const lead_keys[] = { "id", "created", "stage", "fields", "dates", "stages",
	                                         "deal", NULL };
	static const char *const deal_keys[] = { "id", "name", "lead", "created", "closed", "stage",
	                                         "amount", "lost_reason", "stages", NULL };
	static const char *const lead_steps[] = { "captured", "qualified", "accepted", "opportunity",
	                                          "won", "lost", "disqualified", NULL };
	static const char *const date_steps[] = { "qualified", "accepted", "opportunity", "won", "lost",
	                                          "disqualified", NULL };
	static const char *const deal_steps[] = { "opportunity", "won", "lost", NULL };
	char names[256];
	const cJSON *e;

	cJSON_ArrayForEach(e, map) {
		if (!one_of(e->string, top)) {
			cli_error(g, "the mapping %s has no key '%s' (it has %s)", path, e->string,
			          listed(top, names, sizeof names));
			return -1;
		}
		int obj = strcmp(e->string, "leads") == 0 || strcmp(e->string, "deals") == 0;
		int list = strcmp(e->string, "date_formats") == 0;
		if (obj ? !cJSON_IsObject(e) : list ? !cJSON_IsArray(e) : !cJSON_IsString(e)) {
			cli_error(g, "the mapping %s: %s is not %s", path, e->string,
			          obj ? "an object" : list ? "a list of strptime formats" : "a string");
			return -1;
		}
	}
	cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(map, "date_formats"))
		if (!cJSON_IsString(e)) {
			cli_error(g, "the mapping %s: date_formats holds a value that is not a string", path);
			return -1;
		}
	for (int d = 0; d < 2; d++) {
		const char *sec = d ? "deals" : "leads";
		const char *const *keys = d ? deal_keys : lead_keys;
		const cJSON *m = cJSON_GetObjectItemCaseSensitive(map, sec);
		char where[32];
		if (m == NULL)
			continue;
		cJSON_ArrayForEach(e, m) {
			if (!one_of(e->string, keys)) {
				cli_error(g, "the mapping %s: %s has no key '%s' (it has %s)", path, sec,
				          e->string, listed(keys, names, sizeof names));
				return -1;
			}
			snprintf(where, sizeof where, "%s.%s", sec, e->string);
			int rc = strcmp(e->string, "fields") == 0 ? check_strings(g, path, where, e, NULL, NULL)
			       : strcmp(e->string, "dates") == 0 ? check_strings(g, path, where, e, date_steps, NULL)
			       : strcmp(e->string, "stages") == 0
			           ? check_strings(g, path, where, e, NULL, d ? deal_steps : lead_steps)
			       : 0;
			if (rc != 0)
				return -1;
			if (strcmp(e->string, "fields") != 0 && strcmp(e->string, "dates") != 0 &&
			    strcmp(e->string, "stages") != 0 && (!cJSON_IsString(e) || e->valuestring[0] == '\0')) {
				cli_error(g, "the mapping %s: %s is not a column name", path, where);
				return -1;
			}
		}
	}
	return 0;
}

static cJSON *
read_mapping(struct cli *g, const char *path)
{
	FILE *f = fopen(path, "rb");
	char *text = NULL;
	size_t len = 0;
	if (f == NULL) {
		cli_error(g, "cannot open the mapping %s: %s", path, strerror(errno));
		return NULL;
	}
	if (fseek(f, 0, SEEK_END) == 0 && (len = (size_t)ftell(f)) < (1u << 20) &&
	    fseek(f, 0, SEEK_SET) == 0 && (text = malloc(len + 1)) != NULL &&
	    fread(text, 1, len, f) == len)
		text[len] = 0;
	else {
		free(text);
		text = NULL;
	}
	fclose(f);
	if (text == NULL) {
		cli_error(g, "cannot read the mapping %s (at most 1 MiB)", path);
		return NULL;
	}
	cJSON *m = cJSON_Parse(text);
	free(text);
	if (!cJSON_IsObject(m)) {
		cli_error(g, "the mapping %s is not a JSON object", path);
		cJSON_Delete(m);
		return NULL;
	}
	if (check_mapping(g, path, m) != 0) {
		cJSON_Delete(m);
		return NULL;
	}
	return m;
}

int
cmd_import(struct cli *g, int argc, char **argv)
{
	static const struct option opts[] = {
		CLI_GLOBAL_OPTIONS,
		{ "mapping", required_argument, NULL, OPT_MAPPING },
		{ "leads", required_argument, NULL, OPT_LEADS },
		{ "deals", required_argument, NULL, OPT_DEALS },
		{ "rejects", required_argument, NULL, OPT_REJECTS },
		{ "batch", required_argument, NULL, OPT_BATCH },
		{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
		{ NULL, 0, NULL, 0 }
	};
	importer im = { .g = g };
	const char *mapping = NULL, *rejects = "funnel-import.rejects";
	uint64_t batch = 2000;
	int dry_run = 0, c, ret = CLI_EXIT_FAIL;
	static const char *const default_formats[] = {
		"%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%m/%d/%Y %H:%M",
		"%m/%d/%Y"
	};

	cli_getopt_begin();
	while ((c = cli_getopt(g, argc, argv, opts)) != -1) {
		switch (c) {
		case OPT_HELP:
			fputs(import_help, stdout);
			return CLI_EXIT_OK;
		case OPT_MAPPING: mapping = optarg; break;
		case OPT_LEADS: im.files[0] = optarg; break;
		case OPT_DEALS: im.files[1] = optarg; break;
		case OPT_REJECTS: rejects = optarg; break;
		case OPT_DRY_RUN: dry_run = 1; break;
		case OPT_BATCH:
			if (cli_parse_u64(optarg, &batch) != 0 || batch < S_COUNT || batch > FUNNEL_MAX_BATCH)
				return cli_usage(g, "--batch wants %d to %d events, not '%s'", S_COUNT,
				                 FUNNEL_MAX_BATCH, optarg);
			break;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (optind < argc)
		return cli_usage(g, "unexpected argument '%s'", argv[optind]);
	if (mapping == NULL)
		return cli_usage(g, "--mapping FILE is required");
	if (im.files[0] == NULL && im.files[1] == NULL)
		return cli_usage(g, "give --leads CSV, --deals CSV or both");
	if ((im.map = read_mapping(g, mapping)) == NULL)
		return CLI_EXIT_FAIL;
	im.prefix = mstr(im.map, "lead_prefix") ? mstr(im.map, "lead_prefix") : "";
	im.formats = cJSON_GetObjectItemCaseSensitive(im.map, "date_formats");
	if (!cJSON_IsArray(im.formats)) {
		im.formats = cJSON_CreateStringArray(default_formats, 6);
		cJSON_AddItemToObject(im.map, "date_formats", im.formats);
	}
	if ((im.rejects = fopen(rejects, "w")) == NULL) {
		cli_error(g, "cannot write the rejects file %s: %s", rejects, strerror(errno));
		goto done;
	}
	/* leads first: a lead row may name its deal (ConvertedOpportunityId) */
	for (int f = 0; f < 2; f++) {
		if (im.files[f] != NULL && read_csv(&im, f) != 0)
			goto done;
	}
	if (send_all(&im, (size_t)batch, dry_run) != 0)
		goto done;
	ret = im.refused_rows ? CLI_EXIT_FAIL : CLI_EXIT_OK;
	if (cli_json(g)) {
		cJSON *path = im.refused_rows ? cJSON_CreateString(rejects) : cJSON_CreateNull();
		char *quoted = path != NULL ? cJSON_PrintUnformatted(path) : NULL;
		cJSON_Delete(path);
		if (quoted == NULL) {
			cli_error(g, "out of memory");
			ret = CLI_EXIT_FAIL;
			goto done;
		}
		printf("{\"rows\":%zu,\"leads\":%zu,\"events\":%zu,\"stored\":%zu,\"duplicates\":%zu,"
		       "\"duplicate_rows\":%zu,\"refused\":%zu,\"rejects\":%s,\"dry_run\":%s}\n",
		       im.rows, im.n_plans, im.events, im.stored, im.dups, im.dup_rows,
		       im.refused_rows, quoted, dry_run ? "true" : "false");
		free(quoted);
	} else {
		printf("%s: %zu rows read (%zu leads), %zu events%s\n", dry_run ? "dry run" : "import",
		       im.rows, im.n_plans, im.events, dry_run ? " planned, nothing sent" : "");
		if (!dry_run)
			printf("  stored %zu, duplicates %zu (already in the log)\n", im.stored, im.dups);
		if (im.refused_rows)
			printf("  rows refused %zu (see %s), rows given twice %zu\n", im.refused_rows,
			       rejects, im.dup_rows);
		else
			printf("  rows refused 0, rows given twice %zu\n", im.dup_rows);
	}
	if (fflush(stdout) != 0)
		ret = CLI_EXIT_FAIL;
done:
	if (im.rejects != NULL && fclose(im.rejects) != 0)
		ret = CLI_EXIT_FAIL;
	/* no row refused: no rejects file left behind (an empty regular file
	 * this run truncated; never a device such as /dev/null) */
	struct stat st;
	if (im.rejects != NULL && im.refused_rows == 0 && stat(rejects, &st) == 0 &&
	    S_ISREG(st.st_mode) && st.st_size == 0)
		unlink(rejects);
	for (size_t i = 0; i < im.n_plans; i++) {
		plan *p = &im.plans[i];
		free(p->lead);
		free(p->deal_id);
		free(p->deal_name);
		free(p->reason);
		free(p->row_text);
		cJSON_Delete(p->fields);
	}
	free(im.plans);
	free(im.cells);
	smap_free(&im.by_lead);
	smap_free(&im.deal_lead);
	cJSON_Delete(im.map);
	return ret;
}
