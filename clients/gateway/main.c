/*
 * clients/gateway/main.c - funnel-gateway: web forms and apps publish
 * leads over HTTP (http.c), as the forms section of the rules file says
 * (forms.c).
 *
 *   funnel-gateway [run] [options]      serve (default)
 *   funnel-gateway check [FILE]         validate the forms section
 *
 * Start-up order: read the forms and the lead id key, then serve (the
 * rules file is recorded in the log before the first lead.captured made
 * with it: http.c).  SIGTERM or SIGINT stops serving; answers in progress
 * finish first.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <systemd/sd-daemon.h>

#include "funnel/funnel.h"
#include "funnel/log.h"
#include "gateway.h"
#include "httpauth.h"
#include "rulesfile.h"
#include "svcargs.h"

static const char usage_text[] =
	"usage: funnel-gateway [COMMAND] [options]\n"
	"\n"
	"Commands:\n"
	"  run                 serve POST /forms/{id}, /forms/{id}.js, /v1/events, /metrics,\n"
	"                      /healthz (the default)\n"
	"  check [FILE]        validate the forms section of a rules file (default: --rules)\n"
	"\n"
	"Options:\n"
	"  --http ADDR:PORT    where to serve (default " GW_DEFAULT_HTTP "; port 0 picks one)\n"
	"  --rules FILE        the shared rules file with the forms section (default funnel.yaml)\n"
	"  --ingest EP --query EP   funneld endpoints (default loopback 7400, 7402)\n"
	"  --key FILE --server-key FILE   the gateway's CURVE secret key and funneld.pub, for a\n"
	"                      funneld with --access (else FUNNEL_KEY, FUNNEL_SERVER_KEY)\n"
	"  --access FILE       the access file: POST /v1/events wants a bearer token of it, from\n"
	"                      any address, and sends only the types its principal may publish\n"
	"  --lead-key FILE     the secret of the lead ids, 64 hex digits; created when missing\n"
	"                      (default " GW_DEFAULT_KEY_FILE "; keep it: a new key, new lead ids)\n"
	"  --threads N         server threads (default 4); a post waiting for funneld\n"
	"                      holds none\n"
	"  --timeout-ms N      wait for funneld's ack at most this long, then 503 (default 3000)\n"
	"  --rate-limit N      form posts per minute per client address, 0: none (default 60)\n"
	"  --rate-burst N      posts an address may send at once (default 20)\n"
	"  --trusted-proxy ADDR[/BITS][,...]  a reverse proxy in front (repeatable): from its\n"
	"                      connections the client is the last X-Forwarded-For hop that is\n"
	"                      not a trusted proxy (rate limit, loopback check)\n"
	"  --ready-file FILE   written once serving: http=ADDR:PORT\n"
	"  --log-level LEVEL   debug, info, warn, error (default info)\n"
	"  --config FILE       the settings file (sections endpoints: and funnel-gateway:;\n"
	"                      env FUNNEL_CONFIG); flags win over it\n"
	"\n"
	"Long options are spelled in full (--rule for --rules is refused).\n"
	"Exit codes: 0 ok, 1 failure, 2 usage error.\n";

typedef struct args {
	svc_args c;
	gw_http_opts h;
	const char *key_file;
	const char *access;       /* --access: bearer tokens for /v1/events */
} args;

static int
usage(const char *fmt, const char *arg)
{
	return svc_usage("funnel-gateway", usage_text, fmt, arg);
}

/* The lead id key: read from path, or made and written there (0600). */
static int
load_key(const char *path, uint8_t key[GW_KEY_BYTES])
{
	char hex[2 * GW_KEY_BYTES + 2];
	FILE *f = fopen(path, "r");
	if (f != NULL) {
		size_t n = fread(hex, 1, sizeof hex - 1, f);
		fclose(f);
		while (n > 0 && (hex[n - 1] == '\n' || hex[n - 1] == '\r'))
			n--;
		hex[n] = 0;
		size_t got = 0;
		if (n != 2 * GW_KEY_BYTES ||
		    sodium_hex2bin(key, GW_KEY_BYTES, hex, n, NULL, &got, NULL) != 0 ||
		    got != GW_KEY_BYTES) {
			funnel_log(FUNNEL_LOG_ERROR, "gateway: %s: expected %d hex digits (the lead id "
			           "key)", path, 2 * GW_KEY_BYTES);
			return -1;
		}
		return 0;
	}
	if (errno != ENOENT) {
		funnel_log(FUNNEL_LOG_ERROR, "gateway: cannot read %s: %s", path, strerror(errno));
		return -1;
	}
	randombytes_buf(key, GW_KEY_BYTES);
	rf_hex(key, GW_KEY_BYTES, hex);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (fd < 0 || write(fd, hex, 2 * GW_KEY_BYTES) != 2 * GW_KEY_BYTES || write(fd, "\n", 1) != 1 ||
	    fsync(fd) != 0) {
		funnel_log(FUNNEL_LOG_ERROR, "gateway: cannot write a new lead id key to %s: %s", path,
		           strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	funnel_log(FUNNEL_LOG_INFO, "gateway: made a new lead id key in %s", path);
	return 0;
}

static int
cmd_run(args *a)
{
	gw_forms *forms = NULL;
	gw_http *http = NULL;
	uint8_t key[GW_KEY_BYTES];
	char err[512];
	int status = 1;

	if (sodium_init() < 0)
		return 1;
	if (gw_forms_load(a->c.rules, &forms, err, sizeof err) != FUNNEL_OK) {
		funnel_log(FUNNEL_LOG_ERROR, "gateway: %s", err);
		return 1;
	}
	svc_catch_stop(NULL);
	if (load_key(a->key_file, key) != 0)
		goto out;
	a->h.forms = forms;
	a->h.key = key;
	a->h.ingest = a->c.ingest;
	a->h.query = a->c.query;
	a->h.ready_file = a->c.ready_file;
	int rc = gw_http_start(&http, &a->h);
	if (rc == FUNNEL_EINVAL)
		funnel_log(FUNNEL_LOG_ERROR, "gateway: --http wants IPV4:PORT, not '%s'", a->h.addr);
	if (rc != FUNNEL_OK)
		goto out;
	sd_notify(0, "READY=1");      /* under systemd (Type=notify): serving */
	while (!svc_stopping()) {
		struct timespec ts = { 0, 100 * 1000000L };
		nanosleep(&ts, NULL);
	}
	sd_notify(0, "STOPPING=1");
	funnel_log(FUNNEL_LOG_INFO, "gateway: stopping");
	status = 0;
out:
	gw_http_stop(&http);
	gw_forms_free(&forms);
	sodium_memzero(key, sizeof key);
	return status;
}

static int
cmd_check(const char *path)
{
	gw_forms *forms;
	char err[512];
	if (gw_forms_load(path, &forms, err, sizeof err) != FUNNEL_OK) {
		fprintf(stderr, "funnel-gateway: %s\n", err);
		return 1;
	}
	printf("%s: ok: \"%s\", %zu form%s:", path, forms->version, forms->n, forms->n == 1 ? "" : "s");
	for (size_t i = 0; i < forms->n; i++)
		printf(" %s", forms->v[i].id);
	printf("\n");
	gw_forms_free(&forms);
	return 0;
}

enum { O_HTTP = SVC_OPT_OWN, O_KEY, O_THREADS, O_TIMEOUT, O_RATE, O_BURST, O_ACCESS,
       O_PROXY };

static int
own_option(int id, const char *arg, void *ctx)
{
	args *a = ctx;
	char *end;
	if (id == O_HTTP) {
		a->h.addr = arg;
		return 0;
	}
	if (id == O_KEY) {
		a->key_file = arg;
		return 0;
	}
	if (id == O_ACCESS) {
		a->access = arg;
		return 0;
	}
	if (id == O_PROXY) {
		for (const char *p = arg;;) {
			const char *comma = strchr(p, ',');
			size_t n = comma ? (size_t)(comma - p) : strlen(p);
			if (a->h.ntrusted == GW_MAX_PROXIES)
				return usage("--trusted-proxy: more than 32 addresses, at '%s'", p);
			if (gw_net_parse(p, n, &a->h.trusted[a->h.ntrusted]) != 0)
				return usage("--trusted-proxy wants IPV4 or IPV6 addresses or ADDR/BITS "
				             "networks, comma separated, not '%s'", arg);
			a->h.ntrusted++;
			if (comma == NULL)
				return 0;
			p = comma + 1;
		}
	}
	unsigned long v = strtoul(arg, &end, 10);
	int bad = *end || *arg == 0 || *arg == '-';
	switch (id) {
	case O_THREADS:
		if (bad || v < 1 || v > 64)
			return usage("--threads wants 1..64, not '%s'", arg);
		a->h.threads = (unsigned)v;
		return 0;
	case O_TIMEOUT:
		if (bad || v < 10 || v > 600000)
			return usage("--timeout-ms wants 10..600000, not '%s'", arg);
		a->h.timeout_ms = (int)v;
		return 0;
	case O_RATE:
		if (bad || v > 1000000)
			return usage("--rate-limit wants 0..1000000 posts per minute, not '%s'", arg);
		a->h.rate_per_minute = (unsigned)v;
		return 0;
	default:
		if (bad || v < 1 || v > 1000000)
			return usage("--rate-burst wants 1..1000000, not '%s'", arg);
		a->h.rate_burst = (unsigned)v;
		return 0;
	}
}

int
main(int argc, char **argv)
{
	static const struct option own[] = {
		{ "http", required_argument, NULL, O_HTTP },
		{ "lead-key", required_argument, NULL, O_KEY },
		{ "threads", required_argument, NULL, O_THREADS },
		{ "timeout-ms", required_argument, NULL, O_TIMEOUT },
		{ "rate-limit", required_argument, NULL, O_RATE },
		{ "rate-burst", required_argument, NULL, O_BURST },
		{ "access", required_argument, NULL, O_ACCESS },
		{ "trusted-proxy", required_argument, NULL, O_PROXY },
		{ NULL, 0, NULL, 0 },
	};
	args a = { .c = { .rules = "funnel.yaml" },
	           .h = { .addr = GW_DEFAULT_HTTP, .threads = 4, .timeout_ms = 3000,
	                  .rate_per_minute = 60, .rate_burst = 20 },
	           .key_file = GW_DEFAULT_KEY_FILE };

	funnel_log_program("funnel-gateway");
	int rc = svc_parse(argc, argv, "funnel-gateway", usage_text, &a.c, own, own_option, &a);
	if (rc >= 0)
		return rc;
	/* the tokens are read once; a changed access file needs a restart */
	static http_auth *auth;
	if (a.access != NULL) {
		char why[512];
		if ((auth = http_auth_load(a.access, why, sizeof why)) == NULL) {
			fprintf(stderr, "funnel-gateway: --access %s\n", why);
			return 2;
		}
		a.h.auth = auth;
	}
	const char *cmd = optind < argc ? argv[optind++] : "run";
	int nargs = argc - optind;
	if (strcmp(cmd, "run") == 0 && nargs == 0)
		return cmd_run(&a);
	if (strcmp(cmd, "check") == 0 && nargs <= 1)
		return cmd_check(nargs ? argv[optind] : a.c.rules);
	if (strcmp(cmd, "run") && strcmp(cmd, "check"))
		return usage("unknown command '%s'", cmd);
	return usage("wrong number of arguments for '%s'", cmd);
}
