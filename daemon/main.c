/*
 * daemon/main.c - funneld: settings, storage, sockets, the query thread,
 * then the write loop on this thread until SIGTERM or SIGINT.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <systemd/sd-daemon.h>
#include <zmq.h>

#include "clock.h"
#include "config.h"
#include "dirlock.h"
#include "ingest.h"
#include "log.h"
#include "query.h"
#include "readyfile.h"
#include "store.h"
#include "zap.h"
#include "vault.h"

/* Requests bigger than this are cut off by ZeroMQ itself (the peer is
 * disconnected); those between FP_MAX_REQUEST_BYTES and this get ETOOBIG. */
#define HARD_MAX_MSG_BYTES (8 << 20)

static volatile sig_atomic_t stop_flag;

static void
on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static void
on_hup(int sig)
{
	(void)sig;
	zap_request_reload();
}

/* With an access file: funneld's CURVE secret key, for every socket. */
static uint8_t server_secret[FA_KEY_BYTES];
static int curve_on;

static int
is_local(const char *ep)
{
	return strncmp(ep, "tcp://127.", 10) == 0 || strncmp(ep, "tcp://localhost:", 16) == 0 ||
	       strncmp(ep, "tcp://[::1]:", 12) == 0 || strncmp(ep, "ipc://", 6) == 0 ||
	       strncmp(ep, "inproc://", 9) == 0;
}

/* Create and bind one socket; writes the resolved endpoint to `bound`.
 * With CURVE on, it is a CURVE server whose ZAP domain is `what`. */
static void *
open_socket(void *ctx, int type, const char *ep, const char *what, int hwm, char *bound,
            size_t boundlen)
{
	void *sock = zmq_socket(ctx, type);
	int zero = 0, one = 1;
	int64_t maxmsg = HARD_MAX_MSG_BYTES;
	if (sock == NULL)
		return NULL;
	zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
	if (hwm > 0)
		zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
	if (type == ZMQ_ROUTER) {
		zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
		zmq_setsockopt(sock, ZMQ_ROUTER_HANDOVER, &one, sizeof one);
	}
	if (strncmp(ep, "tcp://[", 7) == 0)
		zmq_setsockopt(sock, ZMQ_IPV6, &one, sizeof one);
	if (curve_on &&
	    (zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, what, strlen(what)) != 0 ||
	     zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
	     zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, server_secret, FA_KEY_BYTES) != 0)) {
		log_error("cannot make the %s socket a CURVE server: %s", what, zmq_strerror(errno));
		zmq_close(sock);
		return NULL;
	}
	if (zmq_bind(sock, ep) != 0) {
		log_error("cannot bind the %s endpoint %s: %s", what, ep, zmq_strerror(errno));
		zmq_close(sock);
		return NULL;
	}
	size_t len = boundlen;
	if (zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, bound, &len) != 0)
		snprintf(bound, boundlen, "%s", ep);
	if (!is_local(ep) && !curve_on)
		log_warn("the %s endpoint %s is not on loopback and --insecure is given: anyone who "
		         "reaches it can use it", what, bound);
	return sock;
}

int
main(int argc, char **argv)
{
	config cfg;
	store st;
	query_server qs;
	void *ctx = NULL, *ingest = NULL, *pub = NULL;
	char why[512];
	int status = 1, query_running = 0;
	struct timespec t0, t1;

	funnel_log_program("funneld");
	int crc = config_load(&cfg, argc, argv);
	if (crc != 0)
		return crc > 0 ? 0 : 2;
	/* Beyond loopback, every socket is CURVE with the access file, unless
	 * the operator says in so many words that it need not be. */
	if (cfg.access[0] == '\0' && !cfg.insecure) {
		const char *eps[] = { cfg.ingest, cfg.publish, cfg.query };
		for (int i = 0; i < 3; i++) {
			if (!is_local(eps[i])) {
				log_error("the endpoint %s is not on loopback: give --access FILE and --key FILE "
				          "(CURVE), or --insecure to serve it to anyone who reaches it", eps[i]);
				return 2;
			}
		}
	}
	if (cfg.access[0] != '\0') {
		if (fa_read_key_file(cfg.key, server_secret, why, sizeof why) != 0) {
			log_error("--key: %s", why);
			return 2;
		}
		curve_on = 1;
	}
	memset(&qs, 0, sizeof qs);
	memset(&st, 0, sizeof st);

	/* libsodium picks its fastest BLAKE2b for this CPU here; without it every
	 * record's hash runs the portable reference code. */
	if (sodium_init() < 0) {
		log_error("cannot initialise libsodium");
		return 1;
	}
	/* One funneld per data directory, for the life of the process: a
	 * second writer on the same LMDB log would fork its sequence. */
	if (dirlock_take(cfg.data_dir, "funneld", why, sizeof why) < 0) {
		log_error("the data directory %s is %s: refused (one funneld per data directory)",
		          cfg.data_dir, why);
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (store_open(&st, cfg.data_dir, cfg.map_size, cfg.max_map_size, cfg.journal_size, cfg.durable, why,
	               sizeof why) != 0) {
		log_error("%s", why);
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	log_info("opened %s: head seq %llu, map %zu MiB, %s, in %.1f ms", cfg.data_dir,
	         (unsigned long long)st.head_seq, st.map_size >> 20,
	         cfg.durable ? "durable (fsync before ack)" : "NO FSYNC (--no-sync)",
	         (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
	/* Personal data: sealed under per-lead keys when a master key is given. */
	if (cfg.master_key[0]) {
		st.vault = vault_open(cfg.data_dir, cfg.master_key, cfg.personal_fields, st.head_seq,
		                      cfg.durable, why, sizeof why);
		if (st.vault == NULL) {
			log_error("%s", why);
			store_release(&st);
			return 1;
		}
		log_info("personal data sealed (%s); keys in %s/keys.dat", cfg.personal_fields,
		         cfg.data_dir);
	} else {
		log_warn("no master key (--master-key): personal data is stored as sent, and "
		         "lead.erased cannot make it unreadable");
	}

	ctx = zmq_ctx_new();
	if (ctx == NULL) {
		log_error("cannot create a ZeroMQ context: %s", zmq_strerror(errno));
		goto out;
	}
	if (curve_on && zap_start(ctx, cfg.access) != 0)
		goto out;
	qs.st = &st;
	qs.cfg = &cfg;
	qs.started_ns = clock_now_ns();
	ingest = open_socket(ctx, ZMQ_ROUTER, cfg.ingest, "ingest", 0, qs.ingest, sizeof qs.ingest);
	pub = open_socket(ctx, ZMQ_PUB, cfg.publish, "publish", cfg.pub_hwm, qs.publish,
	                  sizeof qs.publish);
	qs.sock = open_socket(ctx, ZMQ_ROUTER, cfg.query, "query", QUERY_SNDHWM, qs.query,
	                      sizeof qs.query);
	if (ingest == NULL || pub == NULL || qs.sock == NULL)
		goto out;

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_hup;
	sigaction(SIGHUP, &sa, NULL);   /* without --access: nothing to reload */
	signal(SIGPIPE, SIG_IGN);

	if (query_start(&qs) != 0) {
		log_error("cannot start the query thread");
		goto out;
	}
	query_running = 1;
	if (cfg.ready_file[0] && fp_ready_write(cfg.ready_file, "ingest=%s\npublish=%s\nquery=%s\npid=%d\n",
	                                       qs.ingest, qs.publish, qs.query, (int)getpid()) != 0) {
		log_error("cannot write the ready file %s: %s", cfg.ready_file, strerror(errno));
		goto out;
	}
	log_info("ready: ingest %s, publish %s, query %s", qs.ingest, qs.publish, qs.query);
	/* Under systemd (Type=notify): every endpoint is bound and served. */
	sd_notify(0, "READY=1");

	status = ingest_run(ctx, &st, ingest, pub, &cfg, &stop_flag) == 0 ? 0 : 1;
	sd_notify(0, "STOPPING=1");
	log_info("stopping: head seq %llu", (unsigned long long)st.head_seq);
out:
	if (query_running)
		query_stop(&qs);
	if (qs.sock)
		zmq_close(qs.sock);
	if (pub)
		zmq_close(pub);
	if (ingest)
		zmq_close(ingest);
	zap_stop();
	sodium_memzero(server_secret, sizeof server_secret);
	if (ctx)
		zmq_ctx_term(ctx);
	vault_close(st.vault);
	store_release(&st);
	return status;
}
