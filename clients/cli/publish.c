/*
 * clients/cli/publish.c - `funnel publish`: one event from flags, or JSON
 * lines from stdin sent pipelined and reported in input order.
 *
 * Each stdin line is one JSON object, converted to a msgpack envelope as
 * it is: the daemon does all validation, so the CLI accepts exactly what
 * the protocol accepts.  Lines are grouped into requests of --batch
 * events (atomic per request).  A line that is not JSON (or that JSON
 * would store as something else: see json.h) refuses the whole request
 * it belongs to before any of it is sent, so a batch is never stored in
 * part; the request's other lines are named, and never sent.  (A batch
 * larger than BATCH_BYTES goes out as more than one request, each atomic:
 * a bad line then refuses the request it falls in.)  Up to the producer's window of requests
 * are in flight; their outcomes wait in a queue kept in input order and
 * are printed as soon as everything before them is known.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <msgpack.h>

#include "cli.h"
#include "json.h"
#include "mp.h"
#include "seal.h"
#include "util.h"

static const char publish_help[] =
	"usage: funnel publish --type T [--lead L] [--id K] [--data JSON] [--occurred-at TIME]\n"
	"                      [--expected-version N] [--cause SEQ]\n"
	"       funnel publish [--batch N] < events.jsonl\n"
	"\n"
	"Append one event given by flags, or, without --type, one event per line of\n"
	"stdin, each a JSON envelope such as\n"
	"  {\"type\":\"lead.captured\",\"lead\":\"L-1\",\"id\":\"form-123\",\"data\":{\"email\":\"a@b.c\"}}\n"
	"(fields: type, lead, id, occurred_at, expected_version, cause, data).\n"
	"\n"
	"  --type T               event type (lead.captured, deal.won, x.custom, ...)\n"
	"  --lead L               lead id\n"
	"  --id K                 idempotency key: a retry with the same key is stored once\n"
	"  --data JSON            the event's data, a JSON object\n"
	"  --occurred-at TIME     when it happened: ns since the epoch or RFC 3339\n"
	"  --expected-version N   fail unless the lead is at version N\n"
	"  --cause SEQ            the seq of the event that caused this one\n"
	"  --batch N              stdin: N events per atomic request (default 1, max 10000);\n"
	"                         a line that is not JSON refuses its whole request, unsent\n"
	"\n"
	"Prints 'seq N' or 'seq N (duplicate)' per event (--json: {\"seq\":N,\"dup\":false}),\n"
	"in input order.  A duplicate is the same event (type, lead, data, ...) sent\n"
	"again under its id; another event under a stored id is EIDCONFLICT.\n"
	"Errors go to stderr with the input line; exit 1 if any event was not stored.\n"
	"\n"
	CLI_GLOBAL_HELP;

/* Requests are cut at this size, under the daemon's request limit. */
#define BATCH_BYTES (FUNNEL_MAX_REQUEST_BYTES / 2)

enum item_state { ITEM_FILLING, ITEM_SENT, ITEM_DONE };

/* One entry of the output queue: a request (n > 0) or a line that was
 * never sent (n == 0, rc says why). */
struct item {
	struct item *next;
	enum item_state state;
	uint64_t rid;
	int rc;
	int silent;             /* failed with a fatal error already reported */
	int unsent;             /* refused here, before sending: a bad line */
	char msg[600];          /* the failure, worded, when rc != 0 */
	int err_index;          /* offending event in the request, or -1 */
	size_t line;            /* n == 0: the input line */
	size_t n, cap;
	size_t *lines;          /* input line of each event */
	funnel_ack *acks;       /* n of them once done with rc == 0 */
};

struct pub {
	struct cli *g;
	funnel_producer *p;
	int json;
	size_t batch;
	struct item *head, *tail;   /* queue in input order; owned */
	struct item *filling;       /* the request being built, in the queue */
	msgpack_sbuffer sb;         /* envelopes of `filling` */
	msgpack_packer pk;
	funnel_ack *scratch;        /* batch acks for funnel_collect */
	int failed;                 /* some event was not stored */
	int fatal;                  /* the connection is unusable: stop */
};

static void
item_free(struct item **it)
{
	if (it == NULL || *it == NULL)
		return;
	free((*it)->lines);
	free((*it)->acks);
	free(*it);
	*it = NULL;
}

static struct item *
item_push(struct pub *pb)
{
	struct item *it = calloc(1, sizeof *it);
	if (it == NULL)
		return NULL;
	it->err_index = -1;
	if (pb->tail != NULL)
		pb->tail->next = it;
	else
		pb->head = it;
	pb->tail = it;
	return it;
}

/* "ENAME (code): message [field F]", or the no-reply sentence. */
static void
describe(const struct cli *g, int rc, const funnel_error_info *info, char *buf, size_t len)
{
	if (rc == FUNNEL_ETIMEDOUT || info == NULL || info->code != rc) {
		cli_describe(g, rc, info, g->ingest, buf, len);
		return;
	}
	int n = snprintf(buf, len, "%s (%d): %s", funnel_errname(rc), rc,
	                 info->message[0] != '\0' ? info->message : funnel_strerror(rc));
	if (info->field[0] != '\0' && n >= 0 && (size_t)n < len)
		snprintf(buf + n, len - (size_t)n, " [field %s]", info->field);
}

static void
print_item(struct pub *pb, const struct item *it)
{
	if (it->rc == FUNNEL_OK) {
		for (size_t i = 0; i < it->n; i++) {
			if (pb->json)
				printf("{\"seq\":%" PRIu64 ",\"dup\":%s}\n", it->acks[i].seq,
				       it->acks[i].dup ? "true" : "false");
			else
				printf("seq %" PRIu64 "%s\n", it->acks[i].seq,
				       it->acks[i].dup ? " (duplicate)" : "");
		}
		return;
	}
	pb->failed = 1;
	if (it->silent)
		return;
	fflush(stdout);
	if (it->n == 0) {
		fprintf(stderr, "funnel: %s: line %zu: %s\n", pb->g->cmd, it->line, it->msg);
		return;
	}
	size_t at = it->err_index >= 0 && (size_t)it->err_index < it->n ? (size_t)it->err_index : 0;
	fprintf(stderr, "funnel: %s: line %zu: %s", pb->g->cmd, it->lines[at], it->msg);
	if (it->n > 1)
		fprintf(stderr, " (request of lines %zu-%zu not %s)", it->lines[0],
		        it->lines[it->n - 1], it->unsent ? "sent" : "stored");
	fputc('\n', stderr);
}

/* Print and drop every finished item at the front of the queue. */
static void
flush_queue(struct pub *pb)
{
	while (pb->head != NULL && pb->head->state == ITEM_DONE) {
		struct item *it = pb->head;
		pb->head = it->next;
		if (pb->head == NULL)
			pb->tail = NULL;
		print_item(pb, it);
		item_free(&it);
	}
}

/* The connection cannot go on: report once, fail every pending request. */
static void
fail_pending(struct pub *pb, const char *msg)
{
	size_t first = 0, last = 0;

	flush_queue(pb);
	for (struct item *it = pb->head; it != NULL; it = it->next) {
		if (it->state == ITEM_DONE)
			continue;
		if (it->n > 0) {
			if (first == 0)
				first = it->lines[0];
			last = it->lines[it->n - 1];
		}
		it->state = ITEM_DONE;
		it->rc = FUNNEL_ETIMEDOUT;
		it->silent = 1;
	}
	pb->filling = NULL;
	pb->fatal = 1;
	pb->failed = 1;
	fflush(stdout);
	if (first != 0 && first == last)
		fprintf(stderr, "funnel: publish: %s (the event of line %zu not confirmed)\n", msg,
		        first);
	else if (first != 0)
		fprintf(stderr, "funnel: publish: %s (events of lines %zu-%zu not confirmed)\n", msg,
		        first, last);
	else
		fprintf(stderr, "funnel: publish: %s\n", msg);
	flush_queue(pb);
}

/* Record the outcome of one collected reply. */
static void
complete(struct pub *pb, int rc, uint64_t rid, size_t n_acks)
{
	struct item *it;
	char msg[600];

	for (it = pb->head; it != NULL; it = it->next) {
		if (it->state == ITEM_SENT && it->rid == rid)
			break;
	}
	if (it == NULL) {
		snprintf(msg, sizeof msg, "%s: a reply for request %" PRIu64 " that was not sent",
		         funnel_errname(FUNNEL_EPROTOCOL), rid);
		fail_pending(pb, msg);
		return;
	}
	it->state = ITEM_DONE;
	it->rc = rc;
	if (rc == FUNNEL_OK && n_acks != it->n) {
		it->rc = FUNNEL_EPROTOCOL;
		snprintf(it->msg, sizeof it->msg, "%s: %zu acks for a request of %zu events",
		         funnel_errname(FUNNEL_EPROTOCOL), n_acks, it->n);
	} else if (rc == FUNNEL_OK) {
		memcpy(it->acks, pb->scratch, it->n * sizeof *it->acks);
	} else {
		const funnel_error_info *info = funnel_producer_error(pb->p);
		it->err_index = info != NULL && info->code == rc ? info->index : -1;
		describe(pb->g, rc, info, it->msg, sizeof it->msg);
	}
}

/* Collect replies: those already here (timeout_ms 0), or all of them. */
static void
drain(struct pub *pb, int timeout_ms)
{
	char msg[600];

	while (!pb->fatal && funnel_in_flight(pb->p) > 0) {
		uint64_t rid = 0;
		size_t n_acks = 0;
		int rc = funnel_collect(pb->p, timeout_ms, &rid, pb->scratch, pb->batch, &n_acks);
		if (rc == FUNNEL_ETIMEDOUT) {
			if (timeout_ms == 0)
				break;
			cli_describe(pb->g, rc, NULL, pb->g->ingest, msg, sizeof msg);
			fail_pending(pb, msg);
			break;
		}
		if (rid == 0) {
			describe(pb->g, rc, funnel_producer_error(pb->p), msg, sizeof msg);
			fail_pending(pb, msg);
			break;
		}
		complete(pb, rc, rid, n_acks);
	}
	flush_queue(pb);
}

/* The request being built holds a bad line: it is done, refused whole,
 * and nothing of it is sent. */
static void
refuse_filling(struct pub *pb)
{
	struct item *it = pb->filling;

	msgpack_sbuffer_clear(&pb->sb);
	pb->filling = NULL;
	it->state = ITEM_DONE;
	flush_queue(pb);
}

static void
send_filling(struct pub *pb)
{
	struct item *it = pb->filling;
	char msg[600];
	uint64_t rid = 0;

	if (it == NULL || it->n == 0)
		return;
	if (it->unsent) {
		refuse_filling(pb);
		return;
	}
	int rc = funnel_send_packed(pb->p, pb->sb.data, pb->sb.size, it->n, &rid);
	msgpack_sbuffer_clear(&pb->sb);
	pb->filling = NULL;
	if (rc != FUNNEL_OK) {
		describe(pb->g, rc, funnel_producer_error(pb->p), msg, sizeof msg);
		if (rc == FUNNEL_ETIMEDOUT || rc == FUNNEL_ETRANSPORT || rc == FUNNEL_ENOMEM) {
			fail_pending(pb, msg);
			return;
		}
		it->state = ITEM_DONE;
		it->rc = rc;
		snprintf(it->msg, sizeof it->msg, "%s", msg);
	} else {
		it->state = ITEM_SENT;
		it->rid = rid;
	}
	drain(pb, 0);
}

/* Queue a line that will not be sent. */
static int
reject_line(struct pub *pb, size_t lineno, int rc, const char *why)
{
	struct item *it = item_push(pb);
	if (it == NULL)
		return -1;
	it->state = ITEM_DONE;
	it->rc = rc;
	it->line = lineno;
	snprintf(it->msg, sizeof it->msg, "%s (%d): %s", funnel_errname(rc), rc, why);
	return 0;
}

/* Add one input line to the request being built.  Returns -1 when out
 * of memory. */
static int
add_line(struct pub *pb, const char *line, size_t len, size_t lineno)
{
	char why[256];
	struct item *it = pb->filling;

	size_t i = 0;
	while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r' || line[i] == '\n'))
		i++;
	if (i == len)
		return 0;   /* blank lines are not events */
	size_t mark = pb->sb.size;
	int rc = fjson_pack_text(&pb->pk, line, len, why, sizeof why);
	if (rc == FUNNEL_EJSON && pb->batch == 1)
		return reject_line(pb, lineno, rc, why);
	if (rc != FUNNEL_OK && rc != FUNNEL_EJSON) {
		pb->sb.size = mark;
		return -1;
	}
	if (rc == FUNNEL_EJSON && it != NULL && it->unsent) {
		/* a second bad line in a request already refused: named too */
		if (reject_line(pb, lineno, rc, why) != 0)
			return -1;
	}
	if (it == NULL) {
		if ((it = item_push(pb)) == NULL)
			return -1;
		it->state = ITEM_FILLING;
		pb->filling = it;
		it->cap = pb->batch;
		it->lines = malloc(it->cap * sizeof *it->lines);
		it->acks = malloc(it->cap * sizeof *it->acks);
		if (it->lines == NULL || it->acks == NULL)
			return -1;
	}
	if (rc == FUNNEL_EJSON && !it->unsent) {
		it->unsent = 1;
		it->rc = rc;
		it->err_index = (int)it->n;
		snprintf(it->msg, sizeof it->msg, "%s (%d): %s", funnel_errname(rc), rc, why);
	}
	it->lines[it->n++] = lineno;
	if (it->unsent)
		msgpack_sbuffer_clear(&pb->sb);   /* nothing of a refused request is sent */
	if (it->n == pb->batch || pb->sb.size >= BATCH_BYTES)
		send_filling(pb);
	return 0;
}

/*
 * Lines of stdin, read with read(2) so the reader knows when no input is
 * waiting: before it blocks for more, it collects every reply in flight
 * and flushes stdout, so a producer feeding lines slowly (a pipe from a
 * live source, a terminal) sees each outcome without waiting for the
 * next line.  Input that is always ready (a file) keeps the pipeline full.
 */
struct linereader {
	int fd;
	char *buf;              /* owned */
	size_t cap, start, end; /* unread bytes are buf[start..end) */
	int eof;
};

#define READ_CHUNK 65536

/*
 * The next line, newline included if there is one, as a view into lr
 * valid until the next call.  Returns 1, 0 at the end of input, or -1
 * (errno set).
 */
static int
next_line(struct linereader *lr, struct pub *pb, const char **line, size_t *len)
{
	size_t scanned = lr->start;

	for (;;) {
		char *nl = lr->end > scanned ? memchr(lr->buf + scanned, '\n', lr->end - scanned) : NULL;
		if (nl != NULL || (lr->eof && lr->end > lr->start)) {
			size_t stop = nl != NULL ? (size_t)(nl - lr->buf) + 1 : lr->end;
			*line = lr->buf + lr->start;
			*len = stop - lr->start;
			lr->start = stop;
			return 1;
		}
		if (lr->eof)
			return 0;
		scanned = lr->end;
		/* make room: move the partial line down, grow if it fills buf */
		if (lr->start > 0) {
			memmove(lr->buf, lr->buf + lr->start, lr->end - lr->start);
			lr->end -= lr->start;
			scanned -= lr->start;
			lr->start = 0;
		}
		if (lr->cap - lr->end < READ_CHUNK) {
			size_t cap = lr->cap ? lr->cap * 2 : 2 * READ_CHUNK;
			char *b = realloc(lr->buf, cap);
			if (b == NULL) {
				errno = ENOMEM;
				return -1;
			}
			lr->buf = b;
			lr->cap = cap;
		}
		struct pollfd pfd = { .fd = lr->fd, .events = POLLIN };
		if (poll(&pfd, 1, 0) == 0) {
			drain(pb, pb->g->timeout_ms);
			fflush(stdout);
		}
		ssize_t n = read(lr->fd, lr->buf + lr->end, lr->cap - lr->end);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			lr->eof = 1;
		lr->end += (size_t)n;
	}
}

static int
publish_stdin(struct cli *g, size_t batch)
{
	struct pub pb = { .g = g, .json = cli_json(g), .batch = batch };
	struct linereader lr = { .fd = STDIN_FILENO };
	const char *line;
	size_t len, lineno = 0;
	int rc, more = 0;

	msgpack_sbuffer_init(&pb.sb);
	msgpack_packer_init(&pb.pk, &pb.sb, msgpack_sbuffer_write);
	if ((pb.scratch = calloc(batch, sizeof *pb.scratch)) == NULL)
		goto nomem;
	if ((rc = funnel_producer_new(&pb.p, g->ingest, g->timeout_ms)) != FUNNEL_OK) {
		cli_error(g, "%s: cannot open the ingest endpoint %s: %s", funnel_errname(rc),
		          g->ingest, funnel_strerror(rc));
		pb.failed = 1;
		goto done;
	}
	while (!pb.fatal && (more = next_line(&lr, &pb, &line, &len)) > 0) {
		lineno++;
		if (add_line(&pb, line, len, lineno) != 0)
			goto nomem;
	}
	if (!pb.fatal && more < 0) {
		cli_error(g, "cannot read stdin after line %zu: %s", lineno, strerror(errno));
		pb.failed = 1;
	}
	if (!pb.fatal)
		send_filling(&pb);
	drain(&pb, g->timeout_ms);
	goto done;
nomem:
	fail_pending(&pb, "ENOMEM: out of memory");
done:
	while (pb.head != NULL) {
		struct item *it = pb.head;
		pb.head = it->next;
		item_free(&it);
	}
	free(lr.buf);
	free(pb.scratch);
	msgpack_sbuffer_destroy(&pb.sb);
	funnel_producer_destroy(&pb.p);
	if (fflush(stdout) != 0)
		pb.failed = 1;
	return pb.failed ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

static int
publish_one(struct cli *g, funnel_event *ev, const char *data_json)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	funnel_producer *p = NULL;
	funnel_ack ack;
	char msg[600];
	int rc, ret = CLI_EXIT_FAIL;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (data_json != NULL) {
		rc = fjson_pack_text(&pk, data_json, strlen(data_json), msg, sizeof msg);
		if (rc == FUNNEL_EJSON) {
			ret = cli_usage(g, "--data: %s", msg);
			goto done;
		}
		if (rc != FUNNEL_OK) {
			cli_fail(g, rc, NULL, NULL);
			goto done;
		}
		ev->data = sb.data;
		ev->data_len = sb.size;
	}
	if ((rc = funnel_producer_new(&p, g->ingest, g->timeout_ms)) != FUNNEL_OK) {
		cli_error(g, "%s: cannot open the ingest endpoint %s: %s", funnel_errname(rc), g->ingest,
		          funnel_strerror(rc));
		goto done;
	}
	rc = funnel_publish(p, ev, 1, &ack);
	if (rc != FUNNEL_OK) {
		const funnel_error_info *info = funnel_producer_error(p);
		describe(g, rc, info, msg, sizeof msg);
		cli_error(g, "%s", msg);
		goto done;
	}
	if (cli_json(g))
		printf("{\"seq\":%" PRIu64 ",\"dup\":%s}\n", ack.seq, ack.dup ? "true" : "false");
	else
		printf("seq %" PRIu64 "%s\n", ack.seq, ack.dup ? " (duplicate)" : "");
	ret = fflush(stdout) == 0 ? CLI_EXIT_OK : CLI_EXIT_FAIL;
done:
	funnel_producer_destroy(&p);
	msgpack_sbuffer_destroy(&sb);
	return ret;
}

int
cmd_publish(struct cli *g, int argc, char **argv)
{
	static const struct option opts[] = {
		CLI_GLOBAL_OPTIONS,
		{ "type", required_argument, NULL, OPT_TYPE },
		{ "lead", required_argument, NULL, OPT_LEAD },
		{ "id", required_argument, NULL, OPT_ID },
		{ "data", required_argument, NULL, OPT_DATA },
		{ "occurred-at", required_argument, NULL, OPT_OCCURRED_AT },
		{ "expected-version", required_argument, NULL, OPT_EXPECTED_VERSION },
		{ "cause", required_argument, NULL, OPT_CAUSE },
		{ "batch", required_argument, NULL, OPT_BATCH },
		{ NULL, 0, NULL, 0 }
	};
	funnel_event ev = { 0 };
	const char *data = NULL;
	int flags = 0;   /* event flags other than --type were given */
	uint64_t batch = 0, v;
	int64_t t;
	int c;

	cli_getopt_begin();
	while ((c = cli_getopt(g, argc, argv, opts)) != -1) {
		switch (c) {
		case OPT_HELP:
			fputs(publish_help, stdout);
			return CLI_EXIT_OK;
		case OPT_TYPE:
			ev.type = optarg;
			break;
		case OPT_LEAD:
			ev.lead = optarg;
			flags = 1;
			break;
		case OPT_ID:
			ev.id = optarg;
			flags = 1;
			break;
		case OPT_DATA:
			data = optarg;
			flags = 1;
			break;
		case OPT_OCCURRED_AT:
			if (cli_parse_time(optarg, 1, &t) != 0)
				return cli_usage(g, "--occurred-at wants ns since the epoch (16 digits or "
				                 "more: seconds or ms are refused) or an RFC 3339 time, not "
				                 "'%s'", optarg);
			ev.has_occurred_at = 1;
			ev.occurred_at = t;
			flags = 1;
			break;
		case OPT_EXPECTED_VERSION:
			if (cli_parse_u64(optarg, &v) != 0)
				return cli_usage(g, "--expected-version wants a number, not '%s'", optarg);
			ev.has_expected_version = 1;
			ev.expected_version = v;
			flags = 1;
			break;
		case OPT_CAUSE:
			if (cli_parse_u64(optarg, &v) != 0 || v == 0)
				return cli_usage(g, "--cause wants a seq (>= 1), not '%s'", optarg);
			ev.cause = v;
			flags = 1;
			break;
		case OPT_BATCH:
			if (cli_parse_u64(optarg, &batch) != 0 || batch < 1 || batch > FUNNEL_MAX_BATCH)
				return cli_usage(g, "--batch wants 1 to %d events, not '%s'", FUNNEL_MAX_BATCH,
				                 optarg);
			break;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (optind < argc)
		return cli_usage(g, "unexpected argument '%s'", argv[optind]);
	if (ev.type != NULL) {
		if (batch != 0)
			return cli_usage(g, "--batch is for events on stdin, not with --type");
		return publish_one(g, &ev, data);
	}
	if (flags)
		return cli_usage(g, "--lead, --id, --data, --occurred-at, --expected-version and "
		                 "--cause describe one event and need --type");
	return publish_stdin(g, batch ? (size_t)batch : 1);
}

static const char erase_help[] =
	"usage: funnel erase LEAD --reason TEXT [--id K]\n"
	"\n"
	"Publish lead.erased for LEAD with data {\"reason\": TEXT}.  When funneld\n"
	"seals personal data (--master-key), it destroys the lead's data key before\n"
	"it acknowledges: every personal value of the lead's earlier events then\n"
	"reads as \"" FP_SEAL_ERASED "\" everywhere, while the events, the chain and every\n"
	"figure stay (PROTOCOL.md \"Personal data and erasure\").\n"
	"\n"
	"  --reason TEXT   why (the request, the ticket): kept in the log, so no\n"
	"                  personal data here; at most 128 bytes\n"
	"  --id K          idempotency key: a retry with the same key is stored once\n"
	"\n"
	"Prints 'seq N' like publish.\n"
	"\n"
	CLI_GLOBAL_HELP;

int
cmd_erase(struct cli *g, int argc, char **argv)
{
	static const struct option opts[] = {
		CLI_GLOBAL_OPTIONS,
		{ "reason", required_argument, NULL, OPT_REASON },
		{ "id", required_argument, NULL, OPT_ID },
		{ NULL, 0, NULL, 0 }
	};
	funnel_event ev = { .type = "lead.erased" };
	const char *reason = NULL;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	int c, ret;

	cli_getopt_begin();
	while ((c = cli_getopt(g, argc, argv, opts)) != -1) {
		switch (c) {
		case OPT_HELP:
			fputs(erase_help, stdout);
			return CLI_EXIT_OK;
		case OPT_REASON:
			reason = optarg;
			break;
		case OPT_ID:
			ev.id = optarg;
			break;
		default:
			return CLI_EXIT_USAGE;
		}
	}
	if (optind + 1 != argc)
		return cli_usage(g, optind >= argc ? "which lead? (funnel erase LEAD --reason TEXT)"
		                                   : "one lead at a time");
	if (reason == NULL || reason[0] == '\0')
		return cli_usage(g, "--reason is required: say why the lead is erased");
	if (strlen(reason) > FUNNEL_MAX_OWNER_BYTES)
		return cli_usage(g, "--reason is %zu bytes, at most %d: name the request or the ticket, "
		                 "not its text", strlen(reason), FUNNEL_MAX_OWNER_BYTES);
	ev.lead = argv[optind];
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (msgpack_pack_map(&pk, 1) != 0 || mp_pack_key(&pk, "reason") != 0 ||
	    mp_pack_cstr(&pk, reason) != 0) {
		msgpack_sbuffer_destroy(&sb);
		return cli_fail(g, FUNNEL_ENOMEM, NULL, NULL);
	}
	ev.data = sb.data;
	ev.data_len = sb.size;
	ret = publish_one(g, &ev, NULL);
	msgpack_sbuffer_destroy(&sb);
	return ret;
}
