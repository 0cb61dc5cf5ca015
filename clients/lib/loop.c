/*
 * clients/lib/loop.c - the service runtime's object and loop
 * (funnel/service.h; runtime.h): funnel_service_new/destroy/run/stop,
 * the feed (a funnel_subscriber from checkpoint + 1), which log funneld
 * serves (check_log), batches (begin, apply, commit with the
 * checkpoint), the tick and the ready file; funnel_service_send (an
 * event outside apply(), after asking which log funneld serves).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "funnel/log.h"
#include "readyfile.h"
#include "runtime.h"

static char *
dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* ---- the feed ---- */

static int
open_feed(funnel_service *svc)
{
	funnel_sub_opts so = {
		.publish = svc->publish,
		.query = svc->query,
		.from = svc->checkpoint + 1,
		.live = !svc->o.until_head,
		.timeout_ms = svc->o.timeout_ms,
		.source = svc->source,
	};
	funnel_subscriber_destroy(&svc->sub);
	return funnel_subscriber_new(&svc->sub, &so);
}

/* ---- which log ---- */

static void
set_log_state(funnel_service *svc, enum log_state st, const char *why)
{
	pthread_mutex_lock(&svc->state_lock);
	svc->log_state = st;
	snprintf(svc->log_why, sizeof svc->log_why, "%s", why ? why : "");
	pthread_mutex_unlock(&svc->state_lock);
}

/*
 * Ask funneld whether it serves the log this view was built from: its
 * head must reach the checkpoint and its record at the checkpoint must
 * have the hash the view kept (committed with the checkpoint).  An
 * empty view fits any log.  Returns FUNNEL_OK (the view's own log),
 * FUNNEL_ECHAIN (another log: why says how it differs), or the error of
 * a funneld that did not answer (nothing is known).
 */
static int
check_log(funnel_service *svc, char *why, size_t whylen)
{
	funnel_status st;
	funnel_page page = { 0 };
	funnel_record rec;
	int rc;

	if (svc->checkpoint == 0)
		return FUNNEL_OK;
	if (svc->probe == NULL &&
	    (rc = funnel_query_new(&svc->probe, svc->query, PROBE_TIMEOUT_MS)) != FUNNEL_OK)
		return rc;
	if ((rc = funnel_status_get(svc->probe, &st)) != FUNNEL_OK)
		goto unanswered;
	if (st.head < svc->checkpoint) {
		snprintf(why, whylen, "its head is seq %" PRIu64 ", behind this view's checkpoint %"
		         PRIu64, st.head, svc->checkpoint);
		return FUNNEL_ECHAIN;
	}
	if (!svc->have_hash)
		return FUNNEL_OK;
	const uint8_t *hash = st.head_hash;
	if (st.head > svc->checkpoint) {
		funnel_replay_req req = { .from = svc->checkpoint, .to = svc->checkpoint, .limit = 1 };
		if ((rc = funnel_replay_page(svc->probe, &req, &page)) != FUNNEL_OK)
			goto unanswered;
		msgpack_zone_clear(&svc->zone);
		if (page.n != 1 ||
		    funnel_record_parse(page.recs[0], page.lens[0], &svc->zone, &rec) != FUNNEL_OK ||
		    rec.seq != svc->checkpoint) {
			funnel_page_release(&page);
			return FUNNEL_EPROTOCOL;
		}
		hash = rec.hash;
	}
	rc = memcmp(hash, svc->last_hash, FUNNEL_HASH_BYTES) == 0 ? FUNNEL_OK : FUNNEL_ECHAIN;
	funnel_page_release(&page);
	if (rc == FUNNEL_ECHAIN)
		snprintf(why, whylen, "its record %" PRIu64 " is not the one this view applied",
		         svc->checkpoint);
	return rc;
unanswered:
	/* a timed-out DEALER may hold a late reply: start afresh next time */
	funnel_query_destroy(&svc->probe);
	return rc;
}

/*
 * check_log and what follows from it: LOG_OWN, or LOG_OTHER (logged
 * once when it starts), or the state unchanged when funneld did not
 * answer.  Returns the new state.
 */
static enum log_state
probe_log(funnel_service *svc)
{
	char why[200], msg[sizeof svc->log_why];
	svc->next_probe = fl_now_ms() + PROBE_MS;
	int rc = check_log(svc, why, sizeof why);
	if (rc == FUNNEL_OK) {
		if (svc->log_state == LOG_OTHER)
			funnel_log(FUNNEL_LOG_INFO, "%s: funneld serves this view's log again; resuming at "
			           "seq %" PRIu64, svc->name, svc->checkpoint + 1);
		set_log_state(svc, LOG_OWN, NULL);
	} else if (rc == FUNNEL_ECHAIN) {
		snprintf(msg, sizeof msg, "funneld at %s serves a different log than the one this "
		         "view was built from: %s", svc->query, why);
		if (svc->log_state != LOG_OTHER)
			funnel_log(FUNNEL_LOG_ERROR, "%s: %s; nothing is applied or sent until the view's "
			           "own log is back (or rebuild the view: --rebuild)", svc->name, msg);
		set_log_state(svc, LOG_OTHER, msg);
	}
	return svc->log_state;
}

/* ---- batches ---- */

static int
begin_batch(funnel_service *svc)
{
	int rc = sr_grow_map(svc, 0);
	if (rc != FUNNEL_OK)
		return rc;
	if ((rc = mdb_txn_begin(svc->env, NULL, 0, &svc->txn)) != 0) {
		svc->txn = NULL;
		return sr_lmdb_fail(svc, rc, "begin a batch");
	}
	svc->batch_n = 0;
	svc->map_full = 0;
	return FUNNEL_OK;
}

static void
abort_batch(funnel_service *svc)
{
	/* a batch thrown away (even one whose first apply() failed): the
	 * service drops what it held for it */
	if (svc->txn && svc->o.on_abort)
		svc->o.on_abort(svc, svc->ctx);
	if (svc->txn)
		mdb_txn_abort(svc->txn);
	svc->txn = NULL;
	svc->batch_n = 0;
	sr_drop_pending(svc);
}

/* The batch hit a full map: throw it away, grow, and read its records
 * again from the checkpoint. */
static int
retry_bigger(funnel_service *svc)
{
	abort_batch(svc);
	int rc = sr_grow_map(svc, 1);
	if (rc == FUNNEL_OK)
		rc = open_feed(svc);
	return rc;
}

/* commit_batch's answer when the map filled before the commit: the
 * batch was thrown away, the map grown and the feed opened again at the
 * checkpoint; its records are to be applied again (not an error, not a
 * FUNNEL_ code). */
#define BATCH_AGAIN 1

/* Send the batch's derived events, then checkpoint and commit.
 * FUNNEL_ESHUTDOWN: stopped while sending; nothing committed.
 * BATCH_AGAIN: the map was full (above). */
static int
commit_batch(funnel_service *svc)
{
	int rc;

	if (svc->txn == NULL)
		return FUNNEL_OK;
	if (svc->batch_n == 0) {
		if (svc->o.on_abort)
			svc->o.on_abort(svc, svc->ctx);
		mdb_txn_abort(svc->txn);
		svc->txn = NULL;
		return FUNNEL_OK;
	}
	if (!svc->o.no_emit && (rc = sr_pump(svc, 1)) != FUNNEL_OK)
		return rc;
	/* the service's last writes of the batch, in its transaction; it
	 * holds nothing afterwards, whatever it returns */
	if (svc->o.before_commit && (rc = svc->o.before_commit(svc, svc->ctx)) != FUNNEL_OK) {
		mdb_txn_abort(svc->txn);
		svc->txn = NULL;
		svc->batch_n = 0;
		if (svc->map_full)
			return (rc = retry_bigger(svc)) == FUNNEL_OK ? BATCH_AGAIN : rc;
		return rc;
	}
	rc = sr_runtime_put_u64(svc, svc->txn, "checkpoint", svc->cur);
	if (rc == 0)
		rc = sr_runtime_put(svc, svc->txn, "last_hash", svc->cur_hash, FUNNEL_HASH_BYTES);
	if (rc == 0)
		rc = mdb_txn_commit(svc->txn);
	else
		mdb_txn_abort(svc->txn);
	svc->txn = NULL;
	if (rc != 0) {
		sr_lmdb_fail(svc, rc, "commit");
		if (svc->map_full)
			return (rc = retry_bigger(svc)) == FUNNEL_OK ? BATCH_AGAIN : rc;
		return FUNNEL_ESTORAGE;
	}
	sr_drop_pending(svc);
	svc->checkpoint = svc->cur;
	memcpy(svc->last_hash, svc->cur_hash, FUNNEL_HASH_BYTES);
	svc->have_hash = 1;
	svc->batch_n = 0;
	svc->stats.commits++;
	return FUNNEL_OK;
}

/* Apply one delivered record inside the batch. */
static int
apply_record(funnel_service *svc, const uint8_t *buf, size_t len)
{
	funnel_record rec;

	msgpack_zone_clear(&svc->zone);
	int rc = funnel_record_parse(buf, len, &svc->zone, &rec);
	if (rc != FUNNEL_OK) {
		funnel_log(FUNNEL_LOG_ERROR, "%s: a record from the log does not parse (%s)",
		           svc->name, funnel_errname(rc));
		return FUNNEL_EPROTOCOL;
	}
	const uint8_t *prev_hash = svc->batch_n > 0 ? svc->cur_hash
	                         : svc->have_hash ? svc->last_hash : NULL;
	if (prev_hash && memcmp(rec.prev, prev_hash, FUNNEL_HASH_BYTES) != 0) {
		funnel_log(FUNNEL_LOG_ERROR, "%s: record %" PRIu64 " does not chain to the last record "
		           "this view applied: the view was built from another log; rebuild it",
		           svc->name, rec.seq);
		return FUNNEL_ECHAIN;
	}
	if ((rc = sr_check_pending(svc, &rec)) != FUNNEL_OK)
		return rc;
	svc->applying = rec.seq;
	svc->applying_rec = &rec;
	rc = svc->apply(svc, &rec, svc->ctx);
	svc->applying = 0;
	svc->applying_rec = NULL;
	svc->dropped = 0;
	if (rc != FUNNEL_OK)
		return rc;
	if (svc->batch_n++ == 0)
		svc->batch_deadline = fl_now_ms() + svc->o.batch_ms;
	svc->cur = rec.seq;
	memcpy(svc->cur_hash, rec.hash, FUNNEL_HASH_BYTES);
	svc->stats.applied++;
	return FUNNEL_OK;
}

/* Call opts.tick on the committed view when it is due (see
 * funnel_tick_fn).  No batch may be open. */
static int
maybe_tick(funnel_service *svc)
{
	MDB_txn *txn;
	int64_t now = fl_now_ms();

	if (svc->o.tick == NULL || svc->o.until_head || svc->o.no_emit || !svc->caught_up ||
	    now < svc->next_tick)
		return FUNNEL_OK;
	if (!svc->feed_idle && now < svc->next_tick + 10 * (int64_t)svc->o.tick_ms)
		return FUNNEL_OK;
	svc->next_tick = now + svc->o.tick_ms;
	int rc = mdb_txn_begin(svc->env, NULL, MDB_RDONLY, &txn);
	if (rc != 0)
		return sr_lmdb_fail(svc, rc, "begin a read for the tick");
	rc = svc->o.tick(svc, txn, svc->ctx);
	mdb_txn_abort(txn);
	return rc == FUNNEL_ESHUTDOWN ? FUNNEL_OK : rc;
}

static int
write_ready(funnel_service *svc)
{
	if (svc->ready_file == NULL)
		return FUNNEL_OK;
	return fp_ready_write(svc->ready_file, "service=%s\nview=%s\ncheckpoint=%" PRIu64 "\npid=%d\n",
	                      svc->name, svc->view_dir, svc->checkpoint, (int)getpid()) == 0
	       ? FUNNEL_OK : FUNNEL_ESTORAGE;
}

/* ---- public ---- */

int
funnel_service_new(funnel_service **out, const funnel_service_opts *opts, funnel_apply_fn apply,
                   void *ctx)
{
	int rc;

	if (out == NULL)
		return FUNNEL_EINVAL;
	*out = NULL;
	if (opts == NULL || opts->name == NULL || opts->view_dir == NULL || apply == NULL ||
	    opts->name[0] == 0 || strlen(opts->name) > 64)
		return FUNNEL_EINVAL;
	if (sodium_init() < 0)
		return FUNNEL_EINTERNAL;
	funnel_service *svc = calloc(1, sizeof *svc);
	if (svc == NULL)
		return FUNNEL_ENOMEM;
	svc->o = *opts;
	svc->apply = apply;
	svc->ctx = ctx;
	svc->lock_fd = -1;
	sr_store_init(svc);
	pthread_mutex_init(&svc->state_lock, NULL);
	/* before anything that may fail: destroy releases the zone */
	msgpack_zone_init(&svc->zone, 4096);
	svc->name = strdup(opts->name);
	svc->view_dir = strdup(opts->view_dir);
	svc->ingest = dup_or_null(opts->ingest);
	svc->publish = dup_or_null(opts->publish);
	svc->query = dup_or_null(opts->query);
	svc->ready_file = dup_or_null(opts->ready_file);
	svc->source = dup_or_null(opts->source);
	for (size_t i = 0; i < FUNNEL_SERVICE_MAX_TABLES && opts->tables[i]; i++) {
		if (strcmp(opts->tables[i], FUNNEL_SERVICE_RUNTIME_TABLE) == 0 || strcmp(opts->tables[i], PENDING_TABLE) == 0) {
			funnel_service_destroy(&svc);
			return FUNNEL_EINVAL;
		}
		svc->tnames[svc->ntables++] = strdup(opts->tables[i]);
	}
	if (svc->o.batch_events == 0)
		svc->o.batch_events = 10000;
	if (svc->o.batch_ms <= 0)
		svc->o.batch_ms = 100;
	if (svc->o.timeout_ms <= 0)
		svc->o.timeout_ms = FL_DEFAULT_TIMEOUT_MS;
	if (svc->o.tick_ms <= 0)
		svc->o.tick_ms = 1000;
	svc->map_size = opts->map_size ? opts->map_size : DEFAULT_MAP;
	if (svc->source != NULL) {
		/* a URL that does not parse is the caller's mistake, said as such
		 * (the subscriber would report it only at its first read) */
		funnel_error_info ei;
		if ((rc = fl_nats_check_url(svc->source, &ei)) != FUNNEL_OK) {
			if (rc == FUNNEL_EINVAL)
				funnel_log(FUNNEL_LOG_ERROR, "%s: --source %s: %s", svc->name ? svc->name :
				           "service", svc->source, ei.message);
			funnel_service_destroy(&svc);
			return rc;
		}
	}
	if (svc->name == NULL || svc->view_dir == NULL) {
		funnel_service_destroy(&svc);
		return FUNNEL_ENOMEM;
	}
	for (size_t i = 0; i < svc->ntables; i++) {
		if (svc->tnames[i] == NULL) {
			funnel_service_destroy(&svc);
			return FUNNEL_ENOMEM;
		}
	}
	if ((rc = sr_open_view(svc)) != FUNNEL_OK ||
	    (rc = funnel_producer_new(&svc->prod, svc->ingest, svc->o.timeout_ms)) != FUNNEL_OK ||
	    (rc = funnel_query_new(&svc->q, svc->query, svc->o.timeout_ms)) != FUNNEL_OK ||
	    (rc = open_feed(svc)) != FUNNEL_OK) {
		funnel_service_destroy(&svc);
		return rc;
	}
	/* Before the caller can send anything (rules.changed): is funneld
	 * serving the view's log?  Unreachable is waited for later. */
	if (probe_log(svc) == LOG_OTHER) {
		funnel_service_destroy(&svc);
		return FUNNEL_ECHAIN;
	}
	funnel_set_window(svc->prod, SEND_WINDOW);
	*out = svc;
	return FUNNEL_OK;
}

void
funnel_service_destroy(funnel_service **psvc)
{
	if (psvc == NULL || *psvc == NULL)
		return;
	funnel_service *svc = *psvc;
	abort_batch(svc);
	free(svc->pend);
	free(svc->dropped_undo);
	funnel_subscriber_destroy(&svc->sub);
	funnel_producer_destroy(&svc->prod);
	funnel_query_destroy(&svc->q);
	funnel_query_destroy(&svc->probe);
	if (svc->env)
		mdb_env_close(svc->env);
	if (svc->lock_fd >= 0)
		close(svc->lock_fd);       /* after the environment: the lock covers it */
	pthread_mutex_destroy(&svc->state_lock);
	msgpack_zone_destroy(&svc->zone);
	for (size_t i = 0; i < svc->ntables; i++)
		free(svc->tnames[i]);
	free(svc->name);
	free(svc->view_dir);
	free(svc->ingest);
	free(svc->publish);
	free(svc->query);
	free(svc->ready_file);
	free(svc->source);
	free(svc);
	*psvc = NULL;
}

void
funnel_service_stop(funnel_service *svc)
{
	if (svc)
		svc->stop = 1;
}

int
funnel_service_run(funnel_service *svc)
{
	const uint8_t *buf;
	size_t len;
	int rc, quiet_errors = 0;

	if (svc == NULL)
		return FUNNEL_EINVAL;
	if (write_ready(svc) != FUNNEL_OK)
		funnel_log(FUNNEL_LOG_WARN, "%s: cannot write the ready file %s", svc->name,
		           svc->ready_file);
	funnel_log(FUNNEL_LOG_INFO, "%s: view %s at seq %" PRIu64 "; following the log%s",
	           svc->name, svc->view_dir, svc->checkpoint, svc->o.until_head ? " to its head" : "");
	for (;;) {
		if (svc->stop) {
			/* a batch thrown away for a full map is applied again
			 * from the checkpoint by the next run */
			rc = commit_batch(svc);
			abort_batch(svc);
			return rc == FUNNEL_ESHUTDOWN || rc == BATCH_AGAIN ? FUNNEL_OK : rc;
		}
		/* Between batches, now and then: does funneld still serve the
		 * view's log?  A funneld restarted on another data directory
		 * is invisible to the sockets, which reconnect by themselves.
		 * While it serves another log, nothing is applied or sent. */
		if (svc->txn == NULL && fl_now_ms() >= svc->next_probe) {
			enum log_state was = svc->log_state;
			if (probe_log(svc) == LOG_OWN && was == LOG_OTHER &&
			    (rc = open_feed(svc)) != FUNNEL_OK)
				return rc;
		}
		if (svc->log_state == LOG_OTHER) {
			if (svc->o.until_head)
				return FUNNEL_ECHAIN;
			sr_nap_ms(100);
			continue;
		}
		if (svc->txn == NULL && ((rc = maybe_tick(svc)) != FUNNEL_OK ||
		                         (rc = begin_batch(svc)) != FUNNEL_OK))
			return rc;

		/* Idle: wake up now and then to see the stop flag.  With
		 * records applied: wait for more until the batch is old. */
		int wait = svc->batch_n > 0 ? (int)fl_left_ms(svc->batch_deadline) : 200;
		rc = funnel_subscriber_next(svc->sub, wait, &buf, &len);
		/* nothing more right now, not a history page on its way */
		svc->feed_idle = rc == FUNNEL_ETIMEDOUT && funnel_subscriber_live(svc->sub);
		svc->caught_up |= svc->feed_idle;
		if (rc == FUNNEL_OK) {
			quiet_errors = 0;
			rc = apply_record(svc, buf, len);
			if (rc != FUNNEL_OK) {
				if (svc->map_full) {
					if ((rc = retry_bigger(svc)) != FUNNEL_OK)
						return rc;
					continue;
				}
				abort_batch(svc);
				if (rc == FUNNEL_ECHAIN && !svc->o.until_head) {
					/* another log: wait for the view's own (probe_log) */
					set_log_state(svc, LOG_OTHER, "funneld serves a different log than the "
					              "one this view was built from: a record does not chain to "
					              "the view's last one");
					svc->next_probe = fl_now_ms() + PROBE_MS;
					continue;
				}
				return rc;
			}
			/* Derived events leave at once (their latency is one
			 * trip to funneld, never a view commit); the commit
			 * waits for the log to have them all. */
			if (!svc->o.no_emit && svc->unsent > 0)
				sr_pump(svc, 0);
			if (svc->batch_n < svc->o.batch_events && fl_now_ms() < svc->batch_deadline)
				continue;
		} else if (rc == FUNNEL_ENOTFOUND) {
			/* until_head: the head is applied, unless the map
			 * filled before the commit: then apply it again */
			rc = commit_batch(svc);
			if (rc == BATCH_AGAIN)
				continue;
			abort_batch(svc);
			if (rc == FUNNEL_OK)
				funnel_log(FUNNEL_LOG_INFO, "%s: at the head (seq %" PRIu64 ")", svc->name,
				           svc->checkpoint);
			return rc == FUNNEL_ESHUTDOWN ? FUNNEL_OK : rc;
		} else if (rc == FUNNEL_EINVAL) {
			const funnel_error_info *ei = funnel_subscriber_error(svc->sub);
			abort_batch(svc);
			if (strcmp(ei->field, "source") == 0) {
				/* the source itself is wrong, not the view's log */
				funnel_log(FUNNEL_LOG_ERROR, "%s: --source %s: %s", svc->name,
				           svc->source ? svc->source : "", ei->message);
				return FUNNEL_EINVAL;
			}
			if (!svc->o.until_head) {
				/* another log: wait for the view's own (probe_log) */
				svc->next_probe = 0;
				probe_log(svc);
				continue;
			}
			funnel_log(FUNNEL_LOG_ERROR, "%s: the view is at seq %" PRIu64 ", past the log's "
			           "head: it was built from another log; rebuild it (%s)", svc->name,
			           svc->checkpoint, ei->message);
			return FUNNEL_ECHAIN;
		} else if (rc != FUNNEL_ETIMEDOUT) {
			/* funneld away or restarting: the subscriber keeps its
			 * position; say it once, then wait and go on. */
			if (quiet_errors++ == 0)
				funnel_log(FUNNEL_LOG_WARN, "%s: reading the log: %s %s", svc->name,
				           funnel_errname(rc), funnel_subscriber_error(svc->sub)->message);
			sr_nap_ms(100);
		}
		if ((rc = commit_batch(svc)) != FUNNEL_OK) {
			if (rc == FUNNEL_ESHUTDOWN || rc == BATCH_AGAIN)
				continue;
			abort_batch(svc);
			return rc;
		}
	}
}

/* Outside apply(): ask which log first, each time, then send and wait. */
int
funnel_service_send(funnel_service *svc, const funnel_event *ev, funnel_ack *ack)
{
	int backoff = 50;

	if (svc == NULL || ev == NULL || ev->type == NULL)
		return FUNNEL_EINVAL;
	if (svc->o.no_emit)
		return FUNNEL_OK;
	for (;;) {
		/* never into another log: ask first, each time (sends outside
		 * apply() are rare: rules.changed, a tick's decision) */
		int rc = FUNNEL_ETRANSPORT;
		enum log_state ls = probe_log(svc);
		if (ls == LOG_OTHER)
			return FUNNEL_ECHAIN;
		if (ls == LOG_OWN)
			rc = funnel_publish(svc->prod, ev, 1, ack);
		if (rc == FUNNEL_OK || sr_is_refusal(rc) || rc == FUNNEL_ENOMEM || rc == FUNNEL_EINVAL)
			return rc;
		if (svc->stop)
			return FUNNEL_ESHUTDOWN;
		funnel_log(FUNNEL_LOG_WARN, "%s: sending %s: %s %s; retrying", svc->name, ev->type,
		           funnel_errname(rc), ls == LOG_OWN ? funnel_producer_error(svc->prod)->message
		           : "funneld does not answer");
		for (int waited = 0; waited < backoff && !svc->stop; waited += 10)
			sr_nap_ms(10);
		if (backoff < 2000)
			backoff *= 2;
	}
}

int
funnel_service_log_state(funnel_service *svc, char *why, size_t whylen)
{
	if (svc == NULL)
		return FUNNEL_EINVAL;
	pthread_mutex_lock(&svc->state_lock);
	int other = svc->log_state == LOG_OTHER;
	if (other && why != NULL && whylen > 0)
		snprintf(why, whylen, "%s", svc->log_why);
	pthread_mutex_unlock(&svc->state_lock);
	return other ? FUNNEL_ECHAIN : FUNNEL_OK;
}

uint64_t
funnel_service_checkpoint(const funnel_service *svc)
{
	return svc ? svc->checkpoint : 0;
}

funnel_query *
funnel_service_query(funnel_service *svc)
{
	return svc ? svc->q : NULL;
}

MDB_env *
funnel_service_env(funnel_service *svc)
{
	return svc ? svc->env : NULL;
}

void
funnel_service_stats_get(const funnel_service *svc, funnel_service_stats *st)
{
	if (svc && st)
		*st = svc->stats;
}

