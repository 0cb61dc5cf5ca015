/*
 * daemon/main.c - funneld: settings, storage, sockets, the query thread,
 * then the write loop on this thread until SIGTERM or SIGINT.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

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

/*
 * The longest leading part of path that exists, into out ("." for a
 * relative path none of whose parts exists, "/" for an absolute one);
 * *rest points at what follows it in path ("" when path exists).
 * 0, or -1 with errno set when a part exists but cannot be looked at (a
 * file where a directory should be: ENOTDIR).
 */
static int
existing_part(const char *path, char *out, size_t outlen, const char **rest)
{
	struct stat sb;
	size_t n = strlen(path);
	if (n == 0 || n >= outlen) {
		errno = n ? ENAMETOOLONG : ENOENT;
		return -1;
	}
	memcpy(out, path, n + 1);
	for (;;) {
		while (n > 1 && out[n - 1] == '/')   /* "a/b/" is "a/b" */
			out[--n] = '\0';
		if (stat(out, &sb) == 0) {
			*rest = path + n + (path[n] == '/');
			while (**rest == '/')
				(*rest)++;
			return 0;
		}
		if (errno != ENOENT)
			return -1;
		char *slash = strrchr(out, '/');
		if (slash == NULL) {
			snprintf(out, outlen, ".");
			*rest = path;
			return 0;
		}
		n = slash == out ? 1 : (size_t)(slash - out);
		out[n] = '\0';
	}
}

/* The real path of path, which may not exist yet: its existing part
 * resolved (symbolic links, "..") and the rest appended as given. */
static int
real_path_of(const char *path, char *out, size_t outlen)
{
	char part[PATH_MAX], real[PATH_MAX];
	const char *rest;
	if (existing_part(path, part, sizeof part, &rest) != 0 || realpath(part, real) == NULL)
		return -1;
	int n = snprintf(out, outlen, "%s%s%s", real, rest[0] && strcmp(real, "/") ? "/" : "",
	                 rest);
	return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

/*
 * Every setting that can be wrong, checked before the data directory or
 * anything in it is created (the endpoints' form and the sizes were
 * checked by config_load): a refused start leaves the disk as it was.
 * What only the start itself can find out (a port in use, a log that does
 * not open) is undone instead (created_undo).  Returns 0, or the exit
 * status after logging the problem: 2 for a setting, 1 for the disk.
 */
static int
check_start(const config *cfg)
{
	char why[512], path[PATH_MAX + 64];
	struct stat sb;

	/* Beyond loopback, every socket is CURVE with the access file, unless
	 * the operator says in so many words that it need not be. */
	if (cfg->access[0] == '\0' && !cfg->insecure) {
		const char *eps[] = { cfg->ingest, cfg->publish, cfg->query };
		for (int i = 0; i < 3; i++) {
			if (!is_local(eps[i])) {
				log_error("the endpoint %s is not on loopback: give --access FILE and --key FILE "
				          "(CURVE), or --insecure to serve it to anyone who reaches it", eps[i]);
				return 2;
			}
		}
	}
	if (cfg->access[0] != '\0') {
		fa_table *t = fa_load(cfg->access, why, sizeof why);
		if (t == NULL) {
			log_error("access: %s", why);
			return 2;
		}
		fa_destroy(t);
	}
	if (stat(cfg->data_dir, &sb) == 0) {
		if (!S_ISDIR(sb.st_mode)) {
			log_error("--data %s is not a directory", cfg->data_dir);
			return 2;
		}
	} else if (errno == ENOTDIR) {
		log_error("--data %s: a part of its path is not a directory", cfg->data_dir);
		return 2;
	} else if (errno != ENOENT) {
		log_error("--data %s: %s", cfg->data_dir, strerror(errno));
		return 2;
	}
	snprintf(path, sizeof path, "%s/%s", cfg->data_dir, VAULT_KEYS_FILE);
	if (cfg->master_key[0] == '\0' && lstat(path, &sb) == 0) {
		log_error("%s holds personal data sealed under a master key: give --master-key FILE "
		          "(or FUNNEL_MASTER_KEY_FILE); without it sealed values cannot be read and "
		          "lead.erased would destroy no key", path);
		return 2;
	}
	if (cfg->master_key[0] != '\0') {
		char key_real[PATH_MAX], data_real[PATH_MAX];
		if (vault_check_master(cfg->master_key, why, sizeof why) != 0) {
			log_error("--master-key: %s", why);
			return 2;
		}
		/* by real path: a symbolic link or ".." does not hide it */
		if (realpath(cfg->master_key, key_real) == NULL ||
		    real_path_of(cfg->data_dir, data_real, sizeof data_real) != 0) {
			log_error("--master-key %s: cannot resolve its path or the data directory's: %s",
			          cfg->master_key, strerror(errno));
			return 2;
		}
		size_t n = strlen(data_real);
		if (strcmp(data_real, "/") == 0 ||
		    (strncmp(key_real, data_real, n) == 0 && key_real[n] == '/')) {
			log_error("the master key %s is inside the data directory %s: keep it out of it "
			          "(a copy or backup of the data directory would carry the key to its "
			          "personal data)", cfg->master_key, cfg->data_dir);
			return 2;
		}
	}
	if (cfg->ready_file[0] != '\0') {
		char dir[PATH_MAX];
		snprintf(dir, sizeof dir, "%s", cfg->ready_file);
		char *slash = strrchr(dir, '/');
		if (slash == NULL)
			snprintf(dir, sizeof dir, ".");
		else
			slash[slash == dir] = '\0';   /* "/ready": "/" */
		if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode) || access(dir, W_OK | X_OK) != 0) {
			log_error("--ready-file %s: its directory %s %s", cfg->ready_file, dir,
			          stat(dir, &sb) != 0 ? "does not exist" :
			          !S_ISDIR(sb.st_mode) ? "is not a directory" : "is not writable");
			return 2;
		}
		if (stat(cfg->ready_file, &sb) == 0 && S_ISDIR(sb.st_mode)) {
			log_error("--ready-file %s is a directory", cfg->ready_file);
			return 2;
		}
	}
	/* A new journal is written in full at the open: it must fit. */
	snprintf(path, sizeof path, "%s/%s", cfg->data_dir, FP_LOG_JOURNAL_FILE);
	if (stat(path, &sb) != 0 && errno == ENOENT) {
		char part[PATH_MAX];
		const char *rest;
		struct statvfs fs;
		if (existing_part(cfg->data_dir, part, sizeof part, &rest) == 0 &&
		    statvfs(part, &fs) == 0) {
			unsigned long long avail = (unsigned long long)fs.f_bavail * fs.f_frsize;
			if (cfg->journal_size > avail) {
				log_error("the journal (--journal-size %zu bytes) does not fit in %s: its file "
				          "system has %llu bytes free", cfg->journal_size, cfg->data_dir, avail);
				return 1;
			}
		}
	}
	return 0;
}

/*
 * What a start made in the data directory, noted before it takes the
 * lock: a start refused after that removes the files that were not there
 * before (never an existing log's) and the directories it created, so
 * that it leaves the disk as it found it.  Only before funneld serves:
 * from then on the files may hold events.
 */
static const char *const start_files[] = {
	DIRLOCK_FILE, FP_LOG_DATA_FILE, FP_LOG_DATA_FILE ".new", FP_LOG_DATA_FILE ".new-lock",
	"lock.mdb", FP_LOG_JOURNAL_FILE, FP_LOG_JOURNAL_FILE ".new", VAULT_KEYS_FILE,
	VAULT_SHRED_FILE,
};
#define N_START_FILES (sizeof start_files / sizeof start_files[0])

typedef struct created {
	char first[PATH_MAX];         /* the outermost directory created ("": none) */
	int existed[N_START_FILES];
} created;

static void
created_note(created *cr, const char *dir)
{
	char part[PATH_MAX], path[PATH_MAX + 64];
	const char *rest;
	struct stat sb;

	memset(cr, 0, sizeof *cr);
	if (existing_part(dir, part, sizeof part, &rest) == 0 && rest[0] != '\0') {
		/* the first missing part of dir: everything from it on is this start's */
		size_t n = (size_t)(rest - dir) + strcspn(rest, "/");
		if (n < sizeof cr->first)
			snprintf(cr->first, sizeof cr->first, "%.*s", (int)n, dir);
	}
	for (size_t i = 0; i < N_START_FILES; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, start_files[i]);
		cr->existed[i] = lstat(path, &sb) == 0;
	}
}

static void
created_undo(const created *cr, const char *dir)
{
	char path[PATH_MAX + 64];
	for (size_t i = 0; i < N_START_FILES; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, start_files[i]);
		if (!cr->existed[i] && unlink(path) != 0 && errno != ENOENT)
			log_warn("cannot remove %s, which this start created: %s", path, strerror(errno));
	}
	if (cr->first[0] == '\0')
		return;
	/* dir and its parents up to the first one created, innermost first;
	 * rmdir leaves a directory something else put a file in */
	snprintf(path, sizeof path, "%s", dir);
	for (;;) {
		size_t n = strlen(path);
		while (n > 1 && path[n - 1] == '/')
			path[--n] = '\0';
		if (rmdir(path) != 0)
			return;
		if (strcmp(path, cr->first) == 0)
			return;
		char *slash = strrchr(path, '/');
		if (slash == NULL || slash == path)
			return;
		*slash = '\0';
	}
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
	int status = 1, query_running = 0, served = 0, lock_fd = -1;
	struct timespec t0, t1;
	created cr;

	funnel_log_program("funneld");
	int crc = config_load(&cfg, argc, argv);
	if (crc != 0)
		return crc > 0 ? 0 : 2;
	int rc = check_start(&cfg);
	if (rc != 0)
		return rc;
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
	created_note(&cr, cfg.data_dir);
	if ((lock_fd = dirlock_take(cfg.data_dir, "funneld", why, sizeof why)) < 0) {
		if (errno == EWOULDBLOCK) {
			log_error("the data directory %s is %s: refused (one funneld per data directory)",
			          cfg.data_dir, why);
		} else {
			log_error("--data %s: %s", cfg.data_dir, why);
			/* the lock file is not ours: only directories this start made */
			for (size_t i = 0; i < N_START_FILES; i++)
				cr.existed[i] = 1;
			created_undo(&cr, cfg.data_dir);
		}
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (store_open(&st, cfg.data_dir, cfg.map_size, cfg.max_map_size, cfg.journal_size, cfg.durable, why,
	               sizeof why) != 0) {
		log_error("%s", why);
		goto out;
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
			goto out;
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

	served = 1;
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
	if (!served && lock_fd >= 0)
		created_undo(&cr, cfg.data_dir);   /* still holding the lock */
	if (lock_fd >= 0)
		close(lock_fd);
	return status;
}
