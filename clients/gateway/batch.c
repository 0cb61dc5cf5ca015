/*
 * clients/gateway/batch.c - form posts coalesced into publish requests
 * (contract in gateway.h).
 *
 * A post that has a lead.captured to store queues it here (its server
 * thread goes on with other connections meanwhile); one publisher
 * thread sends what is queued as one request (up to GW_BATCH_MAX
 * events), waits for funneld's ack, hands each post its outcome through
 * its done callback and takes the next lot.  So the events of the posts that
 * arrive while a request is in flight share the next request, and one
 * commit of funneld acknowledges them all: the HTTP concurrency becomes
 * batch size, not requests in flight.
 *
 * A request is atomic: when funneld refuses it because of one event, the
 * lot is sent again one event at a time, so each post gets its own
 * answer and no post is refused for another's mistake.  Transport
 * failures (funneld down, timeout) are every event's answer: each post
 * gets its 503 and is retried by its client with the same id.
 */
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>

#include "funnel/funnel.h"
#include "gateway.h"

typedef gw_post item;

struct gw_batcher {
	pthread_mutex_t lock;
	pthread_cond_t queued;     /* the publisher waits for items */
	item *head, *tail;         /* under lock */
	int stopping;              /* under lock */
	int idle_n;                /* publishers waiting on queued (under lock) */
	struct publisher {
		gw_batcher *b;
		pthread_t th;
		funnel_producer *p;    /* this publisher thread's own */
	} pubs[GW_PUBLISHERS];
	size_t npubs;              /* started */
	gw_before_fn before;
	void *ctx;
};

/* 1 for a refusal that names one event of the request (the others may
 * be fine on their own). */
static int
names_one_event(int rc, const funnel_error_info *info)
{
	return rc >= 1 && rc <= 63 && rc != FUNNEL_ESTORAGE && rc != FUNNEL_ESHUTDOWN &&
	       rc != FUNNEL_EINTERNAL && info->index >= 0;
}

static void
fail_all(item **v, size_t n, int rc, const funnel_error_info *info)
{
	for (size_t i = 0; i < n; i++) {
		v[i]->rc = rc;
		if (info)
			v[i]->info = *info;
		else
			memset(&v[i]->info, 0, sizeof v[i]->info);
		v[i]->info.code = rc;
		v[i]->info.index = -1;     /* a position in a request the post never saw */
	}
}

static void
send_lot(gw_batcher *b, funnel_producer *p, item **v, size_t n)
{
	funnel_event evs[GW_BATCH_MAX];
	funnel_ack acks[GW_BATCH_MAX];
	int rc = b->before ? b->before(b->ctx, p) : FUNNEL_OK;
	if (rc != FUNNEL_OK) {
		fail_all(v, n, rc, NULL);
		return;
	}
	for (size_t i = 0; i < n; i++)
		evs[i] = *v[i]->ev;
	rc = funnel_publish(p, evs, n, acks);
	const funnel_error_info *info = funnel_producer_error(p);
	if (rc == FUNNEL_OK) {
		for (size_t i = 0; i < n; i++) {
			v[i]->rc = FUNNEL_OK;
			v[i]->ack = acks[i];
		}
	} else if (n > 1 && names_one_event(rc, info)) {
		for (size_t i = 0; i < n; i++) {
			v[i]->rc = funnel_publish(p, v[i]->ev, 1, &v[i]->ack);
			v[i]->info = *funnel_producer_error(p);
		}
	} else {
		fail_all(v, n, rc, info);
		if (n == 1)
			v[0]->info.index = info->index;
	}
}

static void *
publisher(void *arg)
{
	struct publisher *me = arg;
	gw_batcher *b = me->b;
	item *v[GW_BATCH_MAX];

	pthread_mutex_lock(&b->lock);
	for (;;) {
		while (b->head == NULL && !b->stopping) {
			b->idle_n++;
			pthread_cond_wait(&b->queued, &b->lock);
			b->idle_n--;
		}
		if (b->head == NULL)
			break;          /* stopping, and nothing left to send */
		size_t n = 0;
		while (b->head != NULL && n < GW_BATCH_MAX) {
			v[n++] = b->head;
			b->head = b->head->next;
		}
		if (b->head == NULL)
			b->tail = NULL;
		pthread_mutex_unlock(&b->lock);
		send_lot(b, me->p, v, n);
		/* each post is told alone: no herd of waiters on one condition */
		for (size_t i = 0; i < n; i++)
			v[i]->done(v[i]);
		pthread_mutex_lock(&b->lock);
	}
	pthread_mutex_unlock(&b->lock);
	return NULL;
}

int
gw_batcher_new(gw_batcher **out, const char *ingest, int timeout_ms, gw_before_fn before,
               void *ctx)
{
	*out = NULL;
	gw_batcher *b = calloc(1, sizeof *b);
	if (b == NULL)
		return FUNNEL_ENOMEM;
	b->before = before;
	b->ctx = ctx;
	pthread_mutex_init(&b->lock, NULL);
	pthread_cond_init(&b->queued, NULL);
	int rc = FUNNEL_OK;
	for (size_t i = 0; i < GW_PUBLISHERS && rc == FUNNEL_OK; i++) {
		struct publisher *pub = &b->pubs[i];
		pub->b = b;
		if ((rc = funnel_producer_new(&pub->p, ingest, timeout_ms)) != FUNNEL_OK)
			break;
		if (pthread_create(&pub->th, NULL, publisher, pub) != 0) {
			funnel_producer_destroy(&pub->p);
			rc = FUNNEL_ENOMEM;
			break;
		}
		b->npubs++;
	}
	if (rc != FUNNEL_OK) {
		gw_batcher_destroy(&b);
		return rc;
	}
	*out = b;
	return FUNNEL_OK;
}

void
gw_batcher_destroy(gw_batcher **pb)
{
	if (pb == NULL || *pb == NULL)
		return;
	gw_batcher *b = *pb;
	pthread_mutex_lock(&b->lock);
	b->stopping = 1;
	pthread_cond_broadcast(&b->queued);
	pthread_mutex_unlock(&b->lock);
	for (size_t i = 0; i < b->npubs; i++) {
		pthread_join(b->pubs[i].th, NULL);      /* they send what is queued first */
		funnel_producer_destroy(&b->pubs[i].p);
	}
	pthread_mutex_destroy(&b->lock);
	pthread_cond_destroy(&b->queued);
	free(b);
	*pb = NULL;
}

void
gw_batcher_submit(gw_batcher *b, gw_post *it)
{
	it->next = NULL;
	pthread_mutex_lock(&b->lock);
	if (b->tail)
		b->tail->next = it;
	else
		b->head = it;
	b->tail = it;
	if (b->idle_n > 0)
		pthread_cond_signal(&b->queued);
	pthread_mutex_unlock(&b->lock);
}

typedef struct waiter {
	gw_post post;
	sem_t sem;
} waiter;

static void
wake(gw_post *post)
{
	sem_post(&((waiter *)post->ctx)->sem);
}

int
gw_batcher_publish(gw_batcher *b, const funnel_event *ev, funnel_ack *ack, funnel_error_info *info)
{
	waiter w = { .post = { .ev = ev, .done = wake } };
	w.post.ctx = &w;
	if (sem_init(&w.sem, 0, 0) != 0)
		return FUNNEL_ENOMEM;
	gw_batcher_submit(b, &w.post);
	while (sem_wait(&w.sem) != 0)
		;                   /* EINTR */
	sem_destroy(&w.sem);
	*ack = w.post.ack;
	*info = w.post.info;
	return w.post.rc;
}
