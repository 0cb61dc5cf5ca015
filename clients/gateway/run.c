/*
 * clients/gateway/run.c - funnel-gateway as the services' main runs it
 * (svcmain.h; the contract is gateway.h): its options, the access file
 * read once before any command, `check` of the forms section, and `run`
 * (read the forms and the lead id key, then serve until SIGTERM/SIGINT;
 * answers in progress finish first).
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <systemd/sd-daemon.h>

#include "funnel/log.h"
#include "gateway.h"
#include "httpauth.h"
#include "httpd.h"
#include "rulesfile.h"
#include "svcmain.h"

/* The lead id key: read from path, or made and written there (0600). */
static int
load_key(const char *path, uint8_t key[GW_KEY_BYTES])
{
	char hex[2 * GW_KEY_BYTES + 2];
	struct stat sb;
	if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) {
		funnel_log(FUNNEL_LOG_ERROR, "gateway: %s is not a file (the lead id key is one file of "
		           "%d hex digits)", path, 2 * GW_KEY_BYTES);
		return -1;
	}
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
	fp_hex(key, GW_KEY_BYTES, hex);
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
	/* said loudly: a new key gives every address a new lead id, so a
	 * --lead-key typo would split each person's leads in two */
	funnel_log(FUNNEL_LOG_WARN, "gateway: made a new lead id key in %s (there was none): form "
	           "posts get lead ids of this key from now on; if a key was meant to be there, "
	           "stop and give its path", path);
	return 0;
}

int
gw_run(void *ctx)
{
	gw_args *a = ctx;
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
	gw_forms_destroy(&forms);
	sodium_memzero(key, sizeof key);
	return status;
}

int
gw_prepare(void *ctx)
{
	gw_args *a = ctx;
	/* the tokens are read once; a changed access file needs a restart */
	static http_auth *auth;
	if (a->access == NULL)
		return -1;
	char why[512];
	if ((auth = http_auth_load(a->access, why, sizeof why)) == NULL) {
		fprintf(stderr, "funnel-gateway: --access %s\n", why);
		return 2;
	}
	a->h.auth = auth;
	return -1;
}

/* `check` only: `run` reads the forms itself (gw_run). */
int
gw_check_load(void *ctx, const char *path, int check, void **rules)
{
	(void)ctx;
	(void)check;
	gw_forms *forms;
	char err[512];
	if (gw_forms_load(path, &forms, err, sizeof err) != FUNNEL_OK) {
		fprintf(stderr, "funnel-gateway: %s\n", err);
		return 1;
	}
	*rules = forms;
	return 0;
}

void
gw_check_destroy(void *rules)
{
	gw_forms *forms = rules;
	gw_forms_destroy(&forms);
}

void
gw_check_ok(const char *path, const void *rules)
{
	const gw_forms *forms = rules;
	printf("%s: ok: \"%s\", %zu form%s:", path, forms->version, forms->n, forms->n == 1 ? "" : "s");
	for (size_t i = 0; i < forms->n; i++)
		printf(" %s", forms->v[i].id);
	printf("\n");
}

enum { O_HTTP = SVC_OPT_OWN, O_KEY, O_THREADS, O_TIMEOUT, O_RATE, O_BURST, O_ACCESS,
       O_PROXY };

const struct option gw_options[] = {
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

int
gw_option(int id, const char *arg, void *ctx)
{
	gw_args *a = ctx;
	char *end;
	if (id == O_HTTP) {
		httpd_addr at;   /* a usage error, as every other flag's */
		if (httpd_addr_parse(&at, arg) != FUNNEL_OK)
			return svc_main_usage("--http wants IPV4:PORT, not '%s'", arg);
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
				return svc_main_usage("--trusted-proxy: more than 32 addresses, at '%s'", p);
			if (gw_net_parse(p, n, &a->h.trusted[a->h.ntrusted]) != 0)
				return svc_main_usage("--trusted-proxy wants IPV4 or IPV6 addresses or "
				                      "ADDR/BITS networks, comma separated, not '%s'", arg);
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
			return svc_main_usage("--threads wants 1..64, not '%s'", arg);
		a->h.threads = (unsigned)v;
		return 0;
	case O_TIMEOUT:
		if (bad || v < 10 || v > 600000)
			return svc_main_usage("--timeout-ms wants 10..600000, not '%s'", arg);
		a->h.timeout_ms = (int)v;
		return 0;
	case O_RATE:
		if (bad || v > 1000000)
			return svc_main_usage("--rate-limit wants 0..1000000 posts per minute, not '%s'",
			                      arg);
		a->h.rate_per_minute = (unsigned)v;
		return 0;
	default:
		if (bad || v < 1 || v > 1000000)
			return svc_main_usage("--rate-burst wants 1..1000000, not '%s'", arg);
		a->h.rate_burst = (unsigned)v;
		return 0;
	}
}
