/*
 * daemon/zap.c - the access table and the ZAP handler (see zap.h).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "log.h"
#include "zap.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_MAX_FRAMES 8

/* A table and its holders.  `live` lists every table still held; the
 * first one is the current table.  Guarded by lock. */
typedef struct held {
	fa_table *t;
	unsigned refs;            /* the current table holds one for itself */
	struct held *next;
} held;

static struct {
	pthread_mutex_t lock;
	held *live;
	char path[4096];
	void *sock;               /* REP, used only by the thread once started */
	pthread_t thread;
	int running;
	atomic_int stop;
	volatile sig_atomic_t reload;
	/* keys already logged as refused: the last ZAP_LOGGED_KEYS */
	uint8_t logged[ZAP_LOGGED_KEYS][FA_KEY_BYTES + 1];
	unsigned nlogged, next_logged;
} z = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void
drop_ref(held *h)
{
	/* with lock held */
	if (--h->refs > 0)
		return;
	for (held **pp = &z.live; *pp; pp = &(*pp)->next) {
		if (*pp == h) {
			*pp = h->next;
			break;
		}
	}
	fa_destroy(h->t);
	free(h);
}

static void
install(fa_table *t)
{
	held *h = calloc(1, sizeof *h);
	if (h == NULL) {
		log_error("access: out of memory installing the table; the old one stays in force");
		fa_destroy(t);
		return;
	}
	h->t = t;
	h->refs = 1;
	pthread_mutex_lock(&z.lock);
	held *old = z.live;
	h->next = old;
	z.live = h;
	if (old != NULL)
		drop_ref(old);
	pthread_mutex_unlock(&z.lock);
}

const fa_table *
zap_acquire(void)
{
	const fa_table *t = NULL;
	pthread_mutex_lock(&z.lock);
	if (z.live != NULL) {
		z.live->refs++;
		t = z.live->t;
	}
	pthread_mutex_unlock(&z.lock);
	return t;
}

void
zap_release(const fa_table *t)
{
	if (t == NULL)
		return;
	pthread_mutex_lock(&z.lock);
	for (held *h = z.live; h; h = h->next) {
		if (h->t == t) {
			drop_ref(h);
			break;
		}
	}
	pthread_mutex_unlock(&z.lock);
}

const fa_principal *
zap_principal(const fa_table *t, zmq_msg_t *msg)
{
	uint8_t key[FA_KEY_BYTES];
	if (t == NULL)
		return NULL;
	const char *who = zmq_msg_gets(msg, "User-Id");
	const char *z85 = zmq_msg_gets(msg, ZAP_KEY_PROPERTY);
	const fa_principal *p = who != NULL && who[0] != '\0' ? fa_by_name(t, who) : NULL;
	/* the name may now stand for another key: the connection's must still be it */
	if (p == NULL || !p->has_key || z85 == NULL || strlen(z85) != FA_Z85_LEN ||
	    zmq_z85_decode(key, z85) == NULL || memcmp(key, p->key, FA_KEY_BYTES) != 0)
		return NULL;
	return p;
}

void
zap_request_reload(void)
{
	z.reload = 1;
}

static void
reload(void)
{
	char why[512];
	fa_table *t = fa_load(z.path, why, sizeof why);
	if (t == NULL) {
		log_error("access: reload refused, the table in force stays: %s", why);
		return;
	}
	log_info("access: reloaded %s: %zu principals", z.path, t->n);
	install(t);
	/* a key refused before may be in the new file, and a key revoked now
	 * is worth a line again */
	z.nlogged = z.next_logged = 0;
}

/* Log a refusal once per key and domain, in a bounded set. */
static void
log_refusal(const uint8_t key[FA_KEY_BYTES], const char *domain, const char *address,
            const char *what)
{
	uint8_t tag[FA_KEY_BYTES + 1];
	char z85[FA_Z85_LEN + 1];
	memcpy(tag, key, FA_KEY_BYTES);
	tag[FA_KEY_BYTES] = (uint8_t)domain[0];
	for (unsigned i = 0; i < z.nlogged; i++) {
		if (memcmp(z.logged[i], tag, sizeof tag) == 0)
			return;
	}
	memcpy(z.logged[z.next_logged], tag, sizeof tag);
	z.next_logged = (z.next_logged + 1) % ZAP_LOGGED_KEYS;
	if (z.nlogged < ZAP_LOGGED_KEYS)
		z.nlogged++;
	if (zmq_z85_encode(z85, key, FA_KEY_BYTES) == NULL)
		snprintf(z85, sizeof z85, "?");
	log_warn("access: refused a connection to %s from %s: key %s %s", domain, address, z85, what);
}

static void
send_str(void *s, const char *str, size_t len, int more)
{
	zmq_send(s, str, len, more ? ZMQ_SNDMORE : 0);
}

/* Answer one ZAP request (frames f[0..n)). */
static void
answer(zmq_msg_t *f, int n)
{
	const char *status = "400", *text = "refused";
	const char *user = "";
	char domain[32] = "", address[64] = "";
	/* ZMTP metadata: the client key as a connection property */
	uint8_t meta[1 + sizeof ZAP_KEY_PROPERTY - 1 + 4 + FA_Z85_LEN];
	size_t metalen = 0;
	const fa_table *t = zap_acquire();

	if (n >= 6) {
		snprintf(domain, sizeof domain, "%.*s", (int)zmq_msg_size(&f[2]), (char *)zmq_msg_data(&f[2]));
		snprintf(address, sizeof address, "%.*s", (int)zmq_msg_size(&f[3]),
		         (char *)zmq_msg_data(&f[3]));
	}
	if (n >= 7 && zmq_msg_size(&f[5]) == 5 && memcmp(zmq_msg_data(&f[5]), "CURVE", 5) == 0 &&
	    zmq_msg_size(&f[6]) == FA_KEY_BYTES) {
		const uint8_t *key = zmq_msg_data(&f[6]);
		const fa_principal *p = fa_by_key(t, key);
		if (p == NULL) {
			log_refusal(key, domain, address, "is not in the access file");
		} else if (strcmp(domain, ZAP_DOMAIN_PUBLISH) == 0 && !p->read) {
			log_refusal(key, domain, address, "belongs to a principal without read");
			text = "no read right";
		} else {
			status = "200";
			text = "OK";
			user = p->name;
			size_t nl = sizeof ZAP_KEY_PROPERTY - 1;
			meta[0] = (uint8_t)nl;
			memcpy(meta + 1, ZAP_KEY_PROPERTY, nl);
			memcpy(meta + 1 + nl, "\0\0\0\x28", 4);   /* value length 40, big-endian */
			char z85[FA_Z85_LEN + 1];
			if (zmq_z85_encode(z85, key, FA_KEY_BYTES) != NULL) {
				memcpy(meta + 1 + nl + 4, z85, FA_Z85_LEN);
				metalen = sizeof meta;
			}
		}
	} else if (n >= 6) {
		log_warn("access: refused a connection to %s from %s: not CURVE", domain, address);
	}
	/* version, request id, status code, status text, user id, metadata */
	send_str(z.sock, "1.0", 3, 1);
	if (n >= 2)
		zmq_send(z.sock, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
	else
		send_str(z.sock, "", 0, 1);
	send_str(z.sock, status, 3, 1);
	send_str(z.sock, text, strlen(text), 1);
	send_str(z.sock, user, strlen(user), 1);
	zmq_send(z.sock, meta, metalen, 0);
	zap_release(t);
}

static void *
run(void *arg)
{
	(void)arg;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	while (!atomic_load(&z.stop)) {
		if (z.reload) {
			z.reload = 0;
			reload();
		}
		zmq_pollitem_t it = { z.sock, 0, ZMQ_POLLIN, 0 };
		if (zmq_poll(&it, 1, 100) <= 0)
			continue;
		zmq_msg_t f[ZAP_MAX_FRAMES];
		int n = 0, more = 1;
		while (more) {
			zmq_msg_t m;
			zmq_msg_init(&m);
			if (zmq_msg_recv(&m, z.sock, 0) < 0) {
				zmq_msg_close(&m);
				break;
			}
			more = zmq_msg_more(&m);
			if (n < ZAP_MAX_FRAMES) {
				zmq_msg_init(&f[n]);
				zmq_msg_move(&f[n++], &m);
			}
			zmq_msg_close(&m);
		}
		answer(f, n);
		for (int i = 0; i < n; i++)
			zmq_msg_close(&f[i]);
	}
	return NULL;
}

int
zap_start(void *ctx, const char *access_path)
{
	char why[512];
	int zero = 0;
	snprintf(z.path, sizeof z.path, "%s", access_path);
	fa_table *t = fa_load(access_path, why, sizeof why);
	if (t == NULL) {
		log_error("access: %s", why);
		return -1;
	}
	log_info("access: %s: %zu principals; CURVE on every socket", access_path, t->n);
	install(t);
	z.sock = zmq_socket(ctx, ZMQ_REP);
	if (z.sock == NULL || zmq_setsockopt(z.sock, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
	    zmq_bind(z.sock, ZAP_ENDPOINT) != 0) {
		log_error("access: cannot bind the ZAP handler: %s", zmq_strerror(errno));
		if (z.sock)
			zmq_close(z.sock);
		z.sock = NULL;
		return -1;
	}
	atomic_store(&z.stop, 0);
	if (pthread_create(&z.thread, NULL, run, NULL) != 0) {
		log_error("access: cannot start the ZAP thread");
		zmq_close(z.sock);
		z.sock = NULL;
		return -1;
	}
	z.running = 1;
	return 0;
}

void
zap_stop(void)
{
	if (z.running) {
		atomic_store(&z.stop, 1);
		pthread_join(z.thread, NULL);
		z.running = 0;
	}
	if (z.sock != NULL) {
		zmq_close(z.sock);
		z.sock = NULL;
	}
	pthread_mutex_lock(&z.lock);
	while (z.live != NULL) {
		held *h = z.live;
		z.live = h->next;
		fa_destroy(h->t);
		free(h);
	}
	pthread_mutex_unlock(&z.lock);
}
