/*
 * tests/bench/bench_gateway.c - the numbers of funnel-gateway, measured on
 * the real binaries (funneld, funnel-gateway) with the repository's
 * funnel.yaml:
 *
 *   G1  form posts per second through the gateway: BENCH_GATEWAY_POSTS
 *       (default 100,000) urlencoded posts to /forms/demo-request, each a
 *       new lead with its submission_id, from BENCH_GATEWAY_CLIENTS
 *       (default 64) keep-alive connections to a gateway with its default
 *       server threads, each waiting for its answer
 *       (303: funneld acked) before the next post.  Target >= 20,000/s.
 *   G0  next to it, in the same run and on the same funneld: the same
 *       number of lead.captured events published directly over ZeroMQ
 *       by as many producers, one synchronous publish each at a time.
 *   G2  post -> answer latency at BENCH_GATEWAY_RATE posts/s (default
 *       1,000) for BENCH_GATEWAY_PACED posts (default 10,000), open loop:
 *       each post is due at a fixed time and its latency is counted from
 *       then, so a slow answer also delays the posts behind it.  p50 and
 *       p99; target p99 <= 5 ms.  BENCH_GATEWAY_PACED=0 leaves G2 out.
 *
 * BENCH_GATEWAY_WRAP is put before the gateway's command line (words
 * split at spaces), to profile it: BENCH_GATEWAY_WRAP="valgrind
 * --tool=callgrind --callgrind-out-file=/tmp/gw.%p.out" counts its
 * instructions; two runs with different BENCH_GATEWAY_POSTS give the
 * instructions per post (tests/bench/gateway_ipp.sh does that).
 *
 * Prints a table and appends it to BENCH_OUT (if set).
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <msgpack.h>

#include "bench.h"
#include "funnel/funnel.h"
#include "harness.h"

#define PACED_CLIENTS 16

typedef struct job {
	int port;
	const char *ingest;
	uint64_t first, n;          /* posts first .. first + n - 1 */
	uint64_t rate;              /* G2: posts/s of this client; 0: as fast as answered */
	uint64_t t0;                /* G2: when post 0 is due */
	uint64_t stride;            /* G2: post k of this client is global k * stride + first */
	uint64_t *lat;              /* G2: n latencies (ns) */
	uint64_t ok, failed;
} job;

static int
dial(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	if (fd < 0)
		return -1;
	struct timeval tv = { .tv_sec = 30 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* One post on a keep-alive connection: the status, or -1. */
static int
post(int fd, uint64_t k)
{
	char body[256], req[640], buf[2048];
	int bl = snprintf(body, sizeof body, "email=bench%" PRIu64 "%%40example.com&full_name=Bench+%"
	                  PRIu64 "&company=Acme&job_title=VP+Sales&company_size=250&submission_id=b-%"
	                  PRIu64, k, k, k);
	int rl = snprintf(req, sizeof req, "POST /forms/demo-request HTTP/1.1\r\nHost: 127.0.0.1\r\n"
	                  "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n"
	                  "\r\n%s", bl, body);
	if (write(fd, req, (size_t)rl) != rl)
		return -1;
	size_t got = 0;
	for (;;) {
		ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
		if (r <= 0)
			return -1;
		got += (size_t)r;
		buf[got] = 0;
		char *end = strstr(buf, "\r\n\r\n");
		if (end == NULL)
			continue;
		char *cl = strcasestr(buf, "Content-Length:");
		size_t want = (size_t)(end + 4 - buf) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
		if (got >= want)
			return atoi(buf + 9);
	}
}

static void *
client(void *arg)
{
	job *j = arg;
	int fd = dial(j->port);
	for (uint64_t i = 0; i < j->n; i++) {
		uint64_t k = j->rate ? j->first + i * j->stride : j->first + i;
		uint64_t due = j->rate ? j->t0 + i * (1000000000ull / j->rate) : 0;
		if (j->rate)
			bench_sleep_until(due);
		if (fd < 0 && (fd = dial(j->port)) < 0) {
			j->failed++;
			continue;
		}
		int st = post(fd, k);
		if (j->lat)
			j->lat[i] = harness_now_ns() - due;
		if (st == 303) {
			j->ok++;
		} else {
			j->failed++;
			close(fd);
			fd = -1;
		}
	}
	if (fd >= 0)
		close(fd);
	return NULL;
}

/* G0: lead.captured straight to funneld, one synchronous publish each. */
static void *
direct(void *arg)
{
	job *j = arg;
	funnel_producer *p;
	if (funnel_producer_new(&p, j->ingest, 10000) != FUNNEL_OK) {
		j->failed = j->n;
		return NULL;
	}
	msgpack_sbuffer sb;
	msgpack_packer pk;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	for (uint64_t i = 0; i < j->n; i++) {
		char lead[64], id[64], email[64];
		uint64_t k = j->first + i;
		snprintf(lead, sizeof lead, "direct-%" PRIu64, k);
		snprintf(id, sizeof id, "direct:%" PRIu64, k);
		int el = snprintf(email, sizeof email, "direct%" PRIu64 "@example.com", k);
		sb.size = 0;
		msgpack_pack_map(&pk, 5);
		msgpack_pack_str_with_body(&pk, "email", 5);
		msgpack_pack_str_with_body(&pk, email, (size_t)el);
		msgpack_pack_str_with_body(&pk, "name", 4);
		msgpack_pack_str_with_body(&pk, "Bench", 5);
		msgpack_pack_str_with_body(&pk, "company", 7);
		msgpack_pack_str_with_body(&pk, "Acme", 4);
		msgpack_pack_str_with_body(&pk, "title", 5);
		msgpack_pack_str_with_body(&pk, "VP Sales", 8);
		msgpack_pack_str_with_body(&pk, "form", 4);
		msgpack_pack_str_with_body(&pk, "demo-request", 12);
		funnel_event ev = { .type = "lead.captured", .lead = lead, .id = id, .data = sb.data,
		                    .data_len = sb.size };
		if (funnel_publish(p, &ev, 1, NULL) == FUNNEL_OK)
			j->ok++;
		else
			j->failed++;
	}
	msgpack_sbuffer_destroy(&sb);
	funnel_producer_destroy(&p);
	return NULL;
}

/* Run n jobs of fn over `total` items; returns the wall time in ns. */
static uint64_t
run_jobs(void *(*fn)(void *), job *jobs, size_t n, uint64_t total, int port, const char *ingest,
         uint64_t first, uint64_t *ok, uint64_t *failed)
{
	pthread_t *th = calloc(n, sizeof *th);
	uint64_t t0 = harness_now_ns();
	for (size_t i = 0; i < n; i++) {
		uint64_t share = total / n + (i < total % n);
		jobs[i] = (job){ .port = port, .ingest = ingest, .first = first, .n = share };
		first += share;
		pthread_create(&th[i], NULL, fn, &jobs[i]);
	}
	*ok = *failed = 0;
	for (size_t i = 0; i < n; i++) {
		pthread_join(th[i], NULL);
		*ok += jobs[i].ok;
		*failed += jobs[i].failed;
	}
	free(th);
	return harness_now_ns() - t0;
}

int
main(void)
{
	uint64_t posts = bench_env_u64("BENCH_GATEWAY_POSTS", 100000);
	uint64_t nclients = bench_env_u64("BENCH_GATEWAY_CLIENTS", 64);
	uint64_t rate = bench_env_u64("BENCH_GATEWAY_RATE", 1000);
	uint64_t paced = bench_env_u64("BENCH_GATEWAY_PACED", 10000);
	daemon_proc d;
	uint64_t ok, failed, dok, dfailed;

	if (nclients < 1)
		nclients = 1;
	if (rate < PACED_CLIENTS)
		rate = PACED_CLIENTS;
	if (harness_start(&d, NULL) != 0)
		return 1;
	int port = bench_free_port();
	char http[64], ready[400], log[400], key[400];
	snprintf(http, sizeof http, "127.0.0.1:%d", port);
	snprintf(ready, sizeof ready, "%s/gateway.ready", d.dir);
	snprintf(log, sizeof log, "%s/gateway.log", d.dir);
	snprintf(key, sizeof key, "%s/gateway.key", d.dir);
	char *const gw_argv[] = { (char *)harness_bin("funnel-gateway"), "--rules", "funnel.yaml",
	                          "--http", http, "--ingest", d.ingest, "--query", d.query,
	                          "--lead-key", key, "--rate-limit", "0",
	                          "--ready-file", ready, "--log-level", "warn", NULL };
	char *argv[64], wrap[512];
	size_t na = 0;
	snprintf(wrap, sizeof wrap, "%s", getenv("BENCH_GATEWAY_WRAP") ? getenv("BENCH_GATEWAY_WRAP") : "");
	for (char *save = NULL, *w = strtok_r(wrap, " ", &save); w && na < 40;
	     w = strtok_r(NULL, " ", &save))
		argv[na++] = w;
	for (size_t i = 0; gw_argv[i] != NULL; i++)
		argv[na++] = gw_argv[i];
	argv[na] = NULL;
	pid_t gw = bench_spawn(argv, log);
	for (int i = 0; i < 3000 && access(ready, F_OK) != 0; i++)
		usleep(10000);
	if (gw < 0 || access(ready, F_OK) != 0) {
		fprintf(stderr, "bench_gateway: funnel-gateway did not start (see %s)\n", log);
		harness_cleanup(&d);
		return 1;
	}
	job *jobs = calloc(nclients > PACED_CLIENTS ? nclients : PACED_CLIENTS, sizeof *jobs);

	fprintf(stderr, "bench_gateway: G0: %" PRIu64 " direct publishes, %" PRIu64 " producers...\n",
	        posts, nclients);
	uint64_t g0 = run_jobs(direct, jobs, nclients, posts, port, d.ingest, 0, &dok, &dfailed);
	fprintf(stderr, "bench_gateway: G1: %" PRIu64 " form posts, %" PRIu64 " clients...\n", posts,
	        nclients);
	uint64_t g1 = run_jobs(client, jobs, nclients, posts, port, d.ingest, 0, &ok, &failed);

	/* G2: paced; post k is due at t0 + k / rate, client k % PACED_CLIENTS sends it */
	fprintf(stderr, "bench_gateway: G2: %" PRIu64 " posts at %" PRIu64 "/s...\n", paced, rate);
	pthread_t th[PACED_CLIENTS];
	uint64_t t0 = harness_now_ns() + 50000000ull, pok = 0, pfailed = 0, nl = 0;
	uint64_t *lat = calloc(paced + PACED_CLIENTS, sizeof *lat);
	for (int i = 0; i < PACED_CLIENTS && paced > 0; i++) {
		uint64_t share = paced / PACED_CLIENTS + ((uint64_t)i < paced % PACED_CLIENTS);
		jobs[i] = (job){ .port = port, .first = posts + (uint64_t)i, .n = share,
		                 .rate = rate / PACED_CLIENTS, .stride = PACED_CLIENTS,
		                 .t0 = t0 + (uint64_t)i * (1000000000ull / rate), .lat = lat + nl };
		nl += share;
		pthread_create(&th[i], NULL, client, &jobs[i]);
	}
	for (int i = 0; i < PACED_CLIENTS && paced > 0; i++) {
		pthread_join(th[i], NULL);
		pok += jobs[i].ok;
		pfailed += jobs[i].failed;
	}
	const double p[4] = { 0.5, 0.99, 0.9, 0.999 };
	double q[4];
	bench_quantiles_ms(lat, nl, p, q, 4);
	free(lat);
	free(jobs);
	bench_stop(gw, 60000);     /* a profiler writes its file on the way out */
	harness_cleanup(&d);

	double g1_pps = (double)ok / ((double)g1 / 1e9), g0_eps = (double)dok / ((double)g0 / 1e9);
	char tab[2048];
	int k = snprintf(tab, sizeof tab, "\n| funnel-gateway | target | measured |\n|---|---|---|\n");
	k += snprintf(tab + k, sizeof tab - k, "| form posts through the gateway, %" PRIu64
	              " keep-alive clients (%" PRIu64 " posts%s) | >= 20,000 posts/s | %.0f posts/s |\n",
	              nclients, posts, failed ? ", SOME FAILED" : "", g1_pps);
	k += snprintf(tab + k, sizeof tab - k, "| the same events published directly over ZeroMQ, %"
	              PRIu64 " producers, one at a time | - | %.0f events/s |\n", nclients, g0_eps);
	k += snprintf(tab + k, sizeof tab - k, "| post -> answer at %" PRIu64 " posts/s (%" PRIu64
	              " posts%s) | p99 <= 5 ms | p50 %.2f / p99 %.2f ms |\n", rate, paced,
	              pfailed ? ", SOME FAILED" : "", q[0], q[1]);
	bench_report(tab, "gateway_posts_per_s=%.0f\ngateway_failed=%" PRIu64 "\ndirect_events_per_s="
	             "%.0f\ngateway_paced_rate=%" PRIu64 "\ngateway_p50_ms=%.2f\ngateway_p90_ms=%.2f\n"
	             "gateway_p99_ms=%.2f\ngateway_p999_ms=%.2f\n",
	             g1_pps, failed + pfailed + dfailed, g0_eps, rate, q[0], q[2], q[1], q[3]);
	return failed + pfailed + dfailed ? 1 : 0;
}
