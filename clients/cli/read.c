/*
 * clients/cli/read.c - the commands that read the log: `tail` (live,
 * through funnel_subscriber), `replay` (a range, page by page) and
 * `history` (one lead), and the two ways a record is printed.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "json.h"
#include "util.h"

static const char tail_help[] =
	"usage: funnel tail [--from SEQ | --since TIME] [--type PREFIX] [--lead ID]\n"
	"                   [--count N] [--timeout-idle MS] [--json | --human]\n"
	"\n"
	"Follow the log live, every event once and in order.  By default starts after\n"
	"the current head; --from or --since start in history and continue live\n"
	"without a gap.\n"
	"\n"
	"  --from SEQ           first seq to print\n"
	"  --since TIME         first event at or after TIME: RFC 3339 (2026-11-22T10:00:00Z),\n"
	"                       ns since the epoch, or an age (90s, 10m, 2h, 3d, 1w)\n"
	"  --type PREFIX        only types starting with PREFIX (lead., deal.won)\n"
	"  --lead ID            only this lead's events\n"
	"  --count N            exit after printing N events\n"
	"  --timeout-idle MS    exit after MS without an event to print\n"
	"\n"
	"Output: JSON lines (default when stdout is not a terminal) or one line per\n"
	"event:  #12  2026-11-22T13:10:02.123Z  lead.captured  L-1  [inquiry v1]  {...}\n"
	"Ctrl-C exits cleanly.\n"
	"TIME is the event's own time: its occurred_at when given and not after the\n"
	"time the log recorded it (ts), else ts.  A * after TIME marks an event whose\n"
	"time is not ts (an imported history, an event sent late); --json has both\n"
	"(occurred_at, ts).\n"
	"\n"
	CLI_JSON_HELP
	"\n"
	CLI_GLOBAL_HELP;

static const char replay_help[] =
	"usage: funnel replay [--from SEQ] [--to SEQ] [--since TIME] [--until TIME]\n"
	"                     [--lead ID] [--type PREFIX] [--count N] [--raw | --json | --human]\n"
	"\n"
	"Print a range of the log and exit (the whole log by default).\n"
	"\n"
	"  --from SEQ, --to SEQ      seq range, inclusive\n"
	"  --since TIME              events with ts >= TIME (RFC 3339, ns, or an age: 10m)\n"
	"  --until TIME              events with ts <  TIME\n"
	"  --lead ID                 only this lead's events\n"
	"  --type PREFIX             only types starting with PREFIX\n"
	"  --count N                 stop after N events\n"
	"  --raw                     each record's exact stored bytes, in hex, one per line\n"
	"\n"
	"--human prints one line per event:  #12  TIME  TYPE  LEAD  [STAGE vN]  {...}\n"
	"(a string of data over 200 bytes as its start and \"... (N bytes)\"; --json\n"
	"has it whole).\n"
	"TIME is the event's own time: its occurred_at when given and not after the\n"
	"time the log recorded it (ts), else ts.  A * after TIME marks an event whose\n"
	"time is not ts (an imported history, an event sent late); --json has both\n"
	"(occurred_at, ts).\n"
	"\n"
	CLI_JSON_HELP
	"\n"
	CLI_GLOBAL_HELP;

static const char history_help[] =
	"usage: funnel history LEAD [--json | --human]\n"
	"\n"
	"The lead's events in order (seq, time, type, stage after, version, key data),\n"
	"then its current state.  Key data: cause=SEQ for an event caused by another,\n"
	"every field of a form (lead.captured), and owner, team, total, reason,\n"
	"amount and kind where an event has them.  --json prints each event as a JSON line and ends\n"
	"with {\"current\":{\"lead\",\"stage\",\"version\",\"last_seq\",\"owner\"}}.\n"
	"\n"
	"TIME is the event's own time: its occurred_at when given and not after the\n"
	"time the log recorded it (ts), else ts.  A * after TIME marks an event whose\n"
	"time is not ts (an imported history, an event sent late); --json has both\n"
	"(occurred_at, ts).\n"
	"\n"
	CLI_JSON_HELP
	"\n"
	CLI_GLOBAL_HELP;

enum out_mode { OUT_JSON, OUT_HUMAN, OUT_RAW };

/* How records are filtered and printed. */
struct out {
	struct cli *g;
	enum out_mode mode;
	const char *type;       /* local filter: type prefix, NULL for all */
	const char *lead;       /* local filter: exact lead, NULL for all */
	msgpack_zone zone;      /* for parsing; cleared per record */
	uint64_t printed;
	funnel_query *q;        /* opens sealed personal values; not owned */
};

static void
out_init(struct out *o, struct cli *g, enum out_mode mode)
{
	memset(o, 0, sizeof *o);
	o->g = g;
	o->mode = mode;
	msgpack_zone_init(&o->zone, 4096);
}

static void
out_release(struct out *o)
{
	msgpack_zone_destroy(&o->zone);
}

static int
str_eq(funnel_str s, const char *c)
{
	size_t n = strlen(c);
	return s.ptr != NULL && s.len == n && memcmp(s.ptr, c, n) == 0;
}

static int
str_prefix(funnel_str s, const char *c)
{
	size_t n = strlen(c);
	return s.ptr != NULL && s.len >= n && memcmp(s.ptr, c, n) == 0;
}

/* The TIME a human reads: the event's own time (funnel_record_event_time:
 * occurred_at when given and not after ts, else ts), so an imported
 * history shows the dates it happened.  Returns the two characters that
 * follow it: "* " when that time is not ts (the log recorded the event
 * later: --json has both), "  " otherwise, so columns stay aligned. */
static const char *
event_when(const funnel_record *r, char when[CLI_TIME_LEN])
{
	uint64_t t = funnel_record_event_time(r);

	cli_format_time(t, when);
	return t != r->ts ? "* " : "  ";
}

/* A --human line shows a string of data up to this many bytes whole
 * (longer: its start and its size, fjson_shorten). */
#define HUMAN_STRING_MAX 200

static int
print_human(FILE *f, const funnel_record *r)
{
	char when[CLI_TIME_LEN];
	const char *mark = event_when(r, when);

	fprintf(f, "#%" PRIu64 "  %s%s%.*s  ", r->seq, when, mark, (int)r->type.len, r->type.ptr);
	if (r->lead.ptr != NULL)
		fprintf(f, "%.*s", (int)r->lead.len, r->lead.ptr);
	else
		fputc('-', f);
	if (r->stage.ptr != NULL || r->has_version) {
		fputs("  [", f);
		if (r->stage.ptr != NULL)
			fprintf(f, "%.*s%s", (int)r->stage.len, r->stage.ptr, r->has_version ? " " : "");
		if (r->has_version)
			fprintf(f, "v%" PRIu64, r->version);
		fputc(']', f);
	}
	if (r->producer.ptr != NULL)   /* a funneld with --access stamped it */
		fprintf(f, "  by %.*s", (int)r->producer.len, r->producer.ptr);
	if (r->data != NULL) {
		cJSON *d = fjson_from_msgpack(r->data);
		fputs("  ", f);
		int rc = d != NULL && fjson_shorten(d, HUMAN_STRING_MAX) == 0 ? fjson_print(f, d) : -1;
		cJSON_Delete(d);
		if (rc != 0)
			return -1;
	}
	return putc('\n', f) == EOF ? -1 : 0;
}

/* The record's bytes in hex, a line.  Returns 1, or -1 (reported). */
static int
print_raw(struct out *o, const uint8_t *rec, size_t len)
{
	char *hex = malloc(2 * len + 1);
	if (hex == NULL) {
		cli_fail(o->g, FUNNEL_ENOMEM, NULL, NULL);
		return -1;
	}
	cli_hex(rec, len, hex);
	int rc = puts(hex);
	free(hex);
	if (rc < 0) {
		cli_error(o->g, "cannot write to stdout");
		return -1;
	}
	o->printed++;
	return 1;
}

/* Personal values in clear, or "[erased]" (PROTOCOL.md "Personal data
 * and erasure").  Returns 0, or -1 (reported). */
static int
unseal(struct out *o, funnel_record *r)
{
	int rc = o->q != NULL ? funnel_record_unseal(o->q, r, &o->zone) : 0;
	if (rc < 0) {
		cli_fail(o->g, -rc, funnel_query_error(o->q), o->g->query);
		return -1;
	}
	return 0;
}

/*
 * Filter and print one record to stdout.  Returns 1 when printed, 0 when
 * the filters left it out, -1 on a record that does not parse or output
 * that failed (reported).
 */
static int
emit(struct out *o, const uint8_t *rec, size_t len)
{
	funnel_record r;
	uint64_t seq = 0;
	int rc;

	if (o->mode == OUT_RAW && o->type == NULL && o->lead == NULL)
		return print_raw(o, rec, len);
	msgpack_zone_clear(&o->zone);
	if ((rc = funnel_record_parse(rec, len, &o->zone, &r)) != FUNNEL_OK) {
		funnel_record_peek(rec, len, &seq, NULL);
		cli_error(o->g, "%s: record %" PRIu64 " (%zu bytes) does not parse: %s",
		          funnel_errname(rc), seq, len, funnel_strerror(rc));
		return -1;
	}
	if ((o->type != NULL && !str_prefix(r.type, o->type)) ||
	    (o->lead != NULL && !str_eq(r.lead, o->lead)))
		return 0;
	if (o->mode == OUT_RAW)
		return print_raw(o, rec, len);
	if (unseal(o, &r) != 0)
		return -1;
	if (o->mode == OUT_HUMAN) {
		rc = print_human(stdout, &r);
	} else {
		cJSON *j = fjson_record(&r);
		rc = j != NULL ? fjson_print_line(stdout, j) : -1;
		cJSON_Delete(j);
	}
	if (rc != 0) {
		cli_error(o->g, "cannot write record %" PRIu64, r.seq);
		return -1;
	}
	o->printed++;
	return 1;
}

/* ------------------------------------------------------------------
 * tail
 * ---------------------------------------------------------------- */

static volatile sig_atomic_t stop_requested;

static void
on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static int64_t
mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The longest a single wait lasts, so a signal is noticed soon. */
#define TAIL_POLL_MS 200

int
cmd_tail(struct cli *g, int argc, char **argv)
{
	static const struct option opts[] = {
		CLI_GLOBAL_OPTIONS,
		{ "from", required_argument, NULL, OPT_FROM },
		{ "since", required_argument, NULL, OPT_SINCE },
		{ "type", required_argument, NULL, OPT_TYPE },
		{ "lead", required_argument, NULL, OPT_LEAD },
		{ "count", required_argument, NULL, OPT_COUNT },
		{ "timeout-idle", required_argument, NULL, OPT_TIMEOUT_IDLE },
		{ NULL, 0, NULL, 0 }
	};
	funnel_sub_opts so = { 0 };
	funnel_status st;
	funnel_subscriber *s = NULL;
	funnel_query *q = NULL;
	struct out o;
	uint64_t from = 0, count = 0, idle = 0;
	int64_t since = 0;
	int has_from = 0, has_since = 0, c, rc, ret = CLI_EXIT_FAIL;
	struct sigaction sa, old_int, old_term;

	out_init(&o, g, OUT_JSON);
	cli_getopt_begin();
	while ((c = cli_getopt(g, argc, argv, opts)) != -1) {
		switch (c) {
		case OPT_HELP:
			fputs(tail_help, stdout);
			ret = CLI_EXIT_OK;
			goto done;
		case OPT_FROM:
			if (cli_parse_u64(optarg, &from) != 0 || from == 0) {
				ret = cli_usage(g, "--from wants a seq (>= 1), not '%s'", optarg);
				goto done;
			}
			has_from = 1;
			break;
		case OPT_SINCE:
			if (cli_parse_time(optarg, 1, &since) != 0 || since <= 0) {
				ret = cli_usage(g, "--since wants an RFC 3339 time, ns since the epoch or "
				                "an age like 10m, not '%s'", optarg);
				goto done;
			}
			has_since = 1;
			break;
		case OPT_TYPE:
			o.type = optarg;
			break;
		case OPT_LEAD:
			o.lead = optarg;
			break;
		case OPT_COUNT:
			if (cli_parse_u64(optarg, &count) != 0 || count == 0) {
				ret = cli_usage(g, "--count wants a number >= 1, not '%s'", optarg);
				goto done;
			}
			break;
		case OPT_TIMEOUT_IDLE:
			if (cli_parse_u64(optarg, &idle) != 0 || idle == 0 || idle > INT32_MAX) {
				ret = cli_usage(g, "--timeout-idle wants milliseconds >= 1, not '%s'", optarg);
				goto done;
			}
			break;
		default:
			ret = CLI_EXIT_USAGE;
			goto done;
		}
	}
	if (optind < argc) {
		ret = cli_usage(g, "unexpected argument '%s'", argv[optind]);
		goto done;
	}
	if (has_from && has_since) {
		ret = cli_usage(g, "--from and --since both say where to start: give one");
		goto done;
	}
	o.mode = cli_json(g) ? OUT_JSON : OUT_HUMAN;

	/* Ask for the head first, whatever the start: a daemon that is not
	 * there is reported now rather than waited for in silence. */
	if (g->source != NULL) {
		funnel_error_info ei;
		memset(&st, 0, sizeof st);
		if ((rc = funnel_source_head(g->source, g->timeout_ms, &st.head, &ei)) != FUNNEL_OK) {
			cli_fail(g, rc, &ei, g->source);
			goto done;
		}
	} else {
		if ((q = cli_query_open(g)) == NULL)
			goto done;
		if ((rc = funnel_status_get(q, &st)) != FUNNEL_OK) {
			cli_fail(g, rc, funnel_query_error(q), g->query);
			goto done;
		}
		/* q stays open: it fetches the data keys of sealed values */
		o.q = q;
	}
	if (has_from)
		so.from = from;
	else if (has_since)
		so.since = (uint64_t)since;
	else
		so.from = st.head + 1;   /* live only: after the head as it is now */
	so.publish = g->publish;
	so.query = g->query;
	so.source = g->source;
	so.live = 1;
	so.timeout_ms = g->timeout_ms;
	if ((rc = funnel_subscriber_new(&s, &so)) != FUNNEL_OK) {
		cli_error(g, "%s: cannot subscribe to %s (query %s): %s", funnel_errname(rc), g->publish,
		          g->query, funnel_strerror(rc));
		goto done;
	}

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);

	int64_t last = mono_ms();
	ret = CLI_EXIT_OK;
	while (!stop_requested) {
		const uint8_t *rec;
		size_t len;
		int wait = TAIL_POLL_MS;
		if (idle != 0) {
			int64_t left = last + (int64_t)idle - mono_ms();
			if (left <= 0)
				break;
			if (left < wait)
				wait = (int)left;
		}
		/* Flush only when caught up, so a long catch-up is not a write
		 * per record. */
		rc = funnel_subscriber_next(s, 0, &rec, &len);
		if (rc == FUNNEL_ETIMEDOUT) {
			fflush(stdout);
			rc = funnel_subscriber_next(s, wait, &rec, &len);
		}
		if (rc == FUNNEL_ETIMEDOUT)
			continue;
		if (rc != FUNNEL_OK) {
			if (stop_requested)
				break;
			ret = cli_fail(g, rc, funnel_subscriber_error(s), g->source ? g->source : g->query);
			break;
		}
		int r = emit(&o, rec, len);
		if (r < 0) {
			ret = CLI_EXIT_FAIL;
			break;
		}
		if (r == 1) {
			last = mono_ms();
			if (count != 0 && o.printed >= count)
				break;
		}
	}
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	if (fflush(stdout) != 0)
		ret = CLI_EXIT_FAIL;
done:
	funnel_subscriber_destroy(&s);
	funnel_query_destroy(&q);
	out_release(&o);
	return ret;
}

/* ------------------------------------------------------------------
 * replay and history
 * ---------------------------------------------------------------- */

/*
 * Page through req until the end of the range (or max records when not
 * 0), handing each record to fn.  fn returns 0 to go on, -1 to stop with
 * a failure.  Returns a CLI exit code; failures are reported.
 */
static int
page_through(struct cli *g, funnel_query *q, funnel_replay_req *req, uint64_t max,
              int (*fn)(void *arg, const uint8_t *rec, size_t len, uint64_t *taken), void *arg)
{
	uint64_t taken = 0;

	for (;;) {
		funnel_page page = { 0 };
		int rc = funnel_replay_page(q, req, &page);
		if (rc != FUNNEL_OK)
			return cli_fail(g, rc, funnel_query_error(q), g->query);
		for (size_t i = 0; i < page.n && (max == 0 || taken < max); i++) {
			if (fn(arg, page.recs[i], page.lens[i], &taken) != 0) {
				funnel_page_release(&page);
				return CLI_EXIT_FAIL;
			}
		}
		int end = page.end || (max != 0 && taken >= max);
		uint64_t next = page.next;
		funnel_page_release(&page);
		if (end)
			return CLI_EXIT_OK;
		if (next <= req->from) {
			cli_error(g, "%s: replay did not advance past seq %" PRIu64,
			          funnel_errname(FUNNEL_EPROTOCOL), req->from);
			return CLI_EXIT_FAIL;
		}
		req->from = next;
	}
}

static int
replay_one(void *arg, const uint8_t *rec, size_t len, uint64_t *taken)
{
	struct out *o = arg;
	int r = emit(o, rec, len);
	if (r < 0)
		return -1;
	*taken += (uint64_t)r;
	return 0;
}

/*
 * replay from a mirror (--source): a subscriber that stops at the
 * stream's head, with the filters applied here (funneld applies them
 * itself).  Returns a CLI exit code; failures are reported.
 */
static int
replay_source(struct cli *g, const funnel_replay_req *req, uint64_t count, struct out *o)
{
	funnel_sub_opts so = { .source = g->source, .from = req->from, .timeout_ms = g->timeout_ms };
	funnel_subscriber *s = NULL;
	int rc, ret = CLI_EXIT_OK;

	o->type = req->type;
	o->lead = req->lead;
	if ((rc = funnel_subscriber_new(&s, &so)) != FUNNEL_OK) {
		cli_error(g, "%s: cannot read %s: %s", funnel_errname(rc), g->source,
		          funnel_strerror(rc));
		return CLI_EXIT_FAIL;
	}
	for (;;) {
		const uint8_t *rec;
		size_t len;
		uint64_t seq = 0, ts = 0;
		if (req->to != 0 && funnel_subscriber_position(s) > req->to)
			break;
		rc = funnel_subscriber_next(s, g->timeout_ms, &rec, &len);
		if (rc == FUNNEL_ENOTFOUND)
			break;
		if (rc != FUNNEL_OK) {
			ret = cli_fail(g, rc, funnel_subscriber_error(s), g->source);
			break;
		}
		funnel_record_peek(rec, len, &seq, &ts);
		if (req->since != 0 && ts < req->since)
			continue;
		if (req->until != 0 && ts >= req->until)
			break;   /* ts never decreases along the log */
		if (emit(o, rec, len) < 0) {
			ret = CLI_EXIT_FAIL;
			break;
		}
		if (count != 0 && o->printed >= count)
			break;
	}
	funnel_subscriber_destroy(&s);
	return ret;
}

int
cmd_replay(struct cli *g, int argc, char **argv)
{
	static const struct option opts[] = {
		CLI_GLOBAL_OPTIONS,
		{ "from", required_argument, NULL, OPT_FROM },
		{ "to", required_argument, NULL, OPT_TO },
		{ "since", required_argument, NULL, OPT_SINCE },
		{ "until", required_argument, NULL, OPT_UNTIL },
		{ "lead", required_argument, NULL, OPT_LEAD },
		{ "type", required_argument, NULL, OPT_TYPE },
		{ "count", required_argument, NULL, OPT_COUNT },
		{ "raw", no_argument, NULL, OPT_RAW },
		{ NULL, 0, NULL, 0 }
	};
	funnel_replay_req req = { 0 };
	funnel_query *q = NULL;
	struct out o;
	uint64_t count = 0;
	int64_t t;
	int raw = 0, c, ret = CLI_EXIT_FAIL;

	out_init(&o, g, OUT_JSON);
	cli_getopt_begin();
	while ((c = cli_getopt(g, argc, argv, opts)) != -1) {
		switch (c) {
		case OPT_HELP:
			fputs(replay_help, stdout);
			ret = CLI_EXIT_OK;
			goto done;
		case OPT_FROM:
		case OPT_TO:
			if (cli_parse_u64(optarg, c == OPT_FROM ? &req.from : &req.to) != 0 ||
			    (c == OPT_FROM ? req.from : req.to) == 0) {
				ret = cli_usage(g, "--%s wants a seq (>= 1), not '%s'",
				                c == OPT_FROM ? "from" : "to", optarg);
				goto done;
			}
			break;
		case OPT_SINCE:
		case OPT_UNTIL:
			if (cli_parse_time(optarg, 1, &t) != 0 || t <= 0) {
				ret = cli_usage(g, "--%s wants an RFC 3339 time, ns since the epoch or an "
				                "age like 10m, not '%s'", c == OPT_SINCE ? "since" : "until",
				                optarg);
				goto done;
			}
			if (c == OPT_SINCE)
				req.since = (uint64_t)t;
			else
				req.until = (uint64_t)t;
			break;
		case OPT_LEAD:
			req.lead = optarg;
			break;
		case OPT_TYPE:
			req.type = optarg;
			break;
		case OPT_COUNT:
			if (cli_parse_u64(optarg, &count) != 0 || count == 0) {
				ret = cli_usage(g, "--count wants a number >= 1, not '%s'", optarg);
				goto done;
			}
			break;
		case OPT_RAW:
			raw = 1;
			break;
		default:
			ret = CLI_EXIT_USAGE;
			goto done;
		}
	}
	if (optind < argc) {
		ret = cli_usage(g, "unexpected argument '%s'", argv[optind]);
		goto done;
	}
	if (req.from != 0 && req.to != 0 && req.to < req.from) {
		ret = cli_usage(g, "--to %" PRIu64 " is before --from %" PRIu64, req.to, req.from);
		goto done;
	}
	if (req.since != 0 && req.until != 0 && req.until <= req.since) {
		ret = cli_usage(g, "--until is not after --since: no time is in that window");
		goto done;
	}
	o.mode = raw ? OUT_RAW : cli_json(g) ? OUT_JSON : OUT_HUMAN;
	if (g->source != NULL) {
		ret = replay_source(g, &req, count, &o);
		goto done;
	}
	if ((q = cli_query_open(g)) == NULL)
		goto done;
	o.q = q;
	/* The daemon applies lead and type; records come back filtered. */
	ret = page_through(g, q, &req, count, replay_one, &o);
	if (fflush(stdout) != 0 && ret == CLI_EXIT_OK) {
		cli_error(g, "cannot write to stdout");
		ret = CLI_EXIT_FAIL;
	}
done:
	funnel_query_destroy(&q);
	out_release(&o);
	return ret;
}

/* The data keys `history` shows in its table (a form shows all of its). */
static const char *const key_fields[] = { "owner", "team", "total", "reason", "amount", "kind" };

/* " key=value" (no space first when f is empty); a string as it is,
 * anything else as compact JSON.  Returns 0 or -1. */
static int
put_field(FILE *f, const char *key, size_t klen, const msgpack_object *v)
{
	int rc = 0;

	fprintf(f, "%s%.*s=", ftell(f) > 0 ? " " : "", (int)klen, key);
	if (v->type == MSGPACK_OBJECT_STR) {
		fprintf(f, "%.*s", (int)v->via.str.size, v->via.str.ptr);
	} else {
		cJSON *j = fjson_from_msgpack(v);
		if (j == NULL || fjson_print(f, j) != 0)
			rc = -1;
		cJSON_Delete(j);
	}
	return rc;
}

/*
 * The key data of a record as "cause=5 owner=alice amount=1200" in a new
 * string (*out, the caller frees; "" when none): the cause, then every
 * string-keyed field of a form (lead.captured), else the key_fields it
 * has.  Returns 0 or -1.
 */
static int
key_data(const funnel_record *r, char **out, size_t *len)
{
	FILE *f = open_memstream(out, len);
	int rc = 0;

	if (f == NULL)
		return -1;
	if (r->has_cause)
		fprintf(f, "cause=%" PRIu64, r->cause);
	int form = r->type.len == strlen("lead.captured") &&
	           memcmp(r->type.ptr, "lead.captured", r->type.len) == 0;
	if (form && r->data != NULL && r->data->type == MSGPACK_OBJECT_MAP) {
		for (uint32_t i = 0; i < r->data->via.map.size; i++) {
			const msgpack_object_kv *kv = &r->data->via.map.ptr[i];
			if (kv->key.type == MSGPACK_OBJECT_STR &&
			    put_field(f, kv->key.via.str.ptr, kv->key.via.str.size, &kv->val) != 0)
				rc = -1;
		}
	}
	for (size_t k = 0; !form && r->data != NULL && r->data->type == MSGPACK_OBJECT_MAP &&
	                   k < sizeof key_fields / sizeof key_fields[0]; k++) {
		const msgpack_object *v = NULL;
		for (uint32_t i = 0; i < r->data->via.map.size && v == NULL; i++) {
			const msgpack_object_kv *kv = &r->data->via.map.ptr[i];
			size_t kl = strlen(key_fields[k]);
			if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == kl &&
			    memcmp(kv->key.via.str.ptr, key_fields[k], kl) == 0)
				v = &kv->val;
		}
		if (v != NULL && put_field(f, key_fields[k], strlen(key_fields[k]), v) != 0)
			rc = -1;
	}
	if (fclose(f) != 0)
		rc = -1;
	if (rc != 0) {
		free(*out);
		*out = NULL;
	}
	return rc;
}

struct hist {
	struct out *o;
	int json;
	int header_done;        /* the table's header line is out */
};

static int
history_one(void *arg, const uint8_t *rec, size_t len, uint64_t *taken)
{
	struct hist *h = arg;
	struct out *o = h->o;
	funnel_record r;
	char when[CLI_TIME_LEN], ver[24] = "";
	char *data = NULL;
	size_t dlen = 0;
	int rc;

	if (h->json)
		return replay_one(o, rec, len, taken);
	msgpack_zone_clear(&o->zone);
	if ((rc = funnel_record_parse(rec, len, &o->zone, &r)) != FUNNEL_OK) {
		cli_error(o->g, "%s: a record of %zu bytes does not parse", funnel_errname(rc), len);
		return -1;
	}
	if (unseal(o, &r) != 0)
		return -1;
	if (!h->header_done) {
		printf("%-8s  %-24s  %-20s  %-12s  %-4s  %s\n", "SEQ", "TIME", "TYPE", "STAGE", "VER",
		       "DATA");
		h->header_done = 1;
	}
	if (key_data(&r, &data, &dlen) != 0) {
		cli_fail(o->g, FUNNEL_ENOMEM, NULL, NULL);
		return -1;
	}
	const char *mark = event_when(&r, when);
	if (r.has_version)
		snprintf(ver, sizeof ver, "%" PRIu64, r.version);
	if (dlen > 0)
		printf("%-8" PRIu64 "  %s%s%-20.*s  %-12.*s  %-4s  %s", r.seq, when, mark,
		       (int)r.type.len, r.type.ptr, (int)(r.stage.ptr ? r.stage.len : 1),
		       r.stage.ptr ? r.stage.ptr : "-", ver, data);
	else
		printf("%-8" PRIu64 "  %s%s%-20.*s  %-12.*s  %s", r.seq, when, mark, (int)r.type.len,
		       r.type.ptr, (int)(r.stage.ptr ? r.stage.len : 1), r.stage.ptr ? r.stage.ptr : "-",
		       ver);
	/* the principal a funneld with --access stamped */
	if (r.producer.ptr != NULL)
		printf("  by %.*s", (int)r.producer.len, r.producer.ptr);
	putchar('\n');
	free(data);
	(*taken)++;
	return 0;
}

int
cmd_history(struct cli *g, int argc, char **argv)
{
	static const struct option opts[] = {
		CLI_GLOBAL_OPTIONS,
		{ NULL, 0, NULL, 0 }
	};
	funnel_replay_req req = { 0 };
	funnel_lead_info li;
	funnel_query *q = NULL;
	struct out o;
	struct hist h = { .o = &o };
	int c, rc, ret = CLI_EXIT_FAIL;

	out_init(&o, g, OUT_JSON);
	cli_getopt_begin();
	while ((c = cli_getopt(g, argc, argv, opts)) != -1) {
		if (c == OPT_HELP) {
			fputs(history_help, stdout);
			ret = CLI_EXIT_OK;
			goto done;
		}
		ret = CLI_EXIT_USAGE;
		goto done;
	}
	if (optind + 1 != argc) {
		ret = cli_usage(g, optind >= argc ? "which lead? (funnel history LEAD)"
		                                  : "one lead at a time");
		goto done;
	}
	req.lead = argv[optind];
	h.json = cli_json(g);
	if ((q = cli_query_open(g)) == NULL)
		goto done;
	o.q = q;
	if ((ret = page_through(g, q, &req, 0, history_one, &h)) != CLI_EXIT_OK)
		goto done;
	ret = CLI_EXIT_FAIL;
	if ((rc = funnel_lead_get(q, req.lead, &li)) != FUNNEL_OK) {
		if (rc == FUNNEL_ENOTFOUND)
			cli_error(g, "%s: no event names lead '%s'", funnel_errname(rc), req.lead);
		else
			cli_fail(g, rc, funnel_query_error(q), g->query);
		goto done;
	}
	if (h.json) {
		cJSON *cur = cJSON_CreateObject(), *st = cJSON_AddObjectToObject(cur, "current");
		int ok = st != NULL && cJSON_AddStringToObject(st, "lead", req.lead) != NULL &&
		         cJSON_AddStringToObject(st, "stage", li.stage) != NULL &&
		         fjson_add_u64(st, "version", li.version) != NULL &&
		         fjson_add_u64(st, "last_seq", li.last_seq) != NULL &&
		         (li.owner[0] == '\0' ? cJSON_AddNullToObject(st, "owner")
		                              : cJSON_AddStringToObject(st, "owner", li.owner)) != NULL &&
		         fjson_print_line(stdout, cur) == 0;
		cJSON_Delete(cur);
		if (!ok) {
			cli_fail(g, FUNNEL_ENOMEM, NULL, NULL);
			goto done;
		}
	} else {
		printf("\ncurrent: stage %s, version %" PRIu64 ", last seq %" PRIu64 ", owner %s\n",
		       li.stage, li.version, li.last_seq, li.owner[0] ? li.owner : "(none)");
	}
	ret = fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
done:
	funnel_query_destroy(&q);
	out_release(&o);
	return ret;
}
