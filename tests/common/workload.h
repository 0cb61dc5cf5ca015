/*
 * tests/common/workload.h - realistic lead events for tests and benchmarks.
 *
 * wl_lead_data() packs the data map of a lead.captured event as a web form
 * would send it (email, name, company, title, country, size, industry,
 * source, campaign, form, UTM fields): about 300 bytes once stored.
 * Deterministic: the same (seed, i) gives the same bytes.
 *
 * wl_funnel is a funnel-shaped event stream: leads are captured, show
 * activity, get qualified, handed over to sales (assigned), accepted or
 * recycled, turned into opportunities, won or lost, in a mix close to a
 * B2B demand waterfall (about 48% activity, 19% captures, the rest the
 * hand-overs and outcomes; test_workload prints the exact mix).  Every
 * event makes sense for its lead's stage under PROTOCOL.md §3-4 when a
 * stream's events reach the log in the order generated; streams with
 * different tags name different leads and ids, so several producers may
 * each send their own stream at once.  Deterministic: the same (seed,
 * tag) gives the same bytes, event for event.
 */
#ifndef FUNNEL_TESTS_WORKLOAD_H
#define FUNNEL_TESTS_WORKLOAD_H

#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>

/* Append the data map of lead i to sb (not cleared first). */
void wl_lead_data(msgpack_sbuffer *sb, uint64_t seed, uint64_t i);

/* Append a data map of string pairs: k1, v1, k2, v2, ..., NULL. */
void wl_kv(msgpack_sbuffer *sb, ...);

/* Event types the funnel stream uses, in wl_event.kind order. */
enum {
	WL_CAPTURED, WL_ACTIVITY, WL_QUALIFIED, WL_ASSIGNED, WL_CONTACTED, WL_ACCEPTED,
	WL_RECYCLED, WL_DISQUALIFIED, WL_OPP_OPENED, WL_DEAL_WON, WL_DEAL_LOST, WL_NKINDS
};

/* Wire name of a kind ("lead.captured", ...), static. */
const char *wl_kind_name(int kind);

/* One event of a set.  Every pointer points into the wl_set that holds
 * it and stays valid until wl_set_release() or the next wl_set_fill(). */
typedef struct wl_event {
	int kind;               /* WL_CAPTURED.. */
	const char *type;       /* wl_kind_name(kind) */
	const char *lead;       /* NUL-terminated */
	const char *id;         /* NUL-terminated, unique per (seed, tag) stream */
	const uint8_t *env;     /* the envelope, PROTOCOL.md §2: map {type, lead, id, data} */
	size_t env_len;
	const uint8_t *data;    /* the data map: the last value inside env */
	size_t data_len;
} wl_event;

/* Generator state.  Plain value, no heap; fields are private. */
#define WL_ACTIVE_LEADS 256
typedef struct wl_funnel {
	uint64_t seed;
	uint64_t rng;
	uint64_t next_lead;     /* leads created so far */
	uint64_t next_id;       /* events generated so far */
	char tag[24];
	struct wl_lead {
		uint64_t num;
		unsigned char stage;    /* 0: slot empty */
		unsigned char assigned; /* handed to a rep since the last qualification */
	} lead[WL_ACTIVE_LEADS];
} wl_funnel;

/* Start a stream.  tag (at most 23 bytes, [A-Za-z0-9_-]) goes into every
 * lead id and event id: "<tag>-L<n>" and "<tag>-<n>". */
void wl_funnel_init(wl_funnel *g, uint64_t seed, const char *tag);

/* n events, each with its envelope bytes, back to back in memory:
 * ev[i + 1].env == ev[i].env + ev[i].env_len, so ev[i..j] can be sent as
 * one packed request. */
typedef struct wl_set {
	size_t n;
	wl_event *ev;
	uint64_t env_bytes;     /* sum of env_len */
	msgpack_sbuffer env_;   /* private */
	msgpack_sbuffer str_;   /* private: lead and id strings */
} wl_set;

/* Zero a set (wl_set s = {0} does the same). */
void wl_set_init(wl_set *s);

/* Replace the set's events with the next n events of g.  Returns 0, or
 * -1 when memory runs out (the set is then empty, g has advanced). */
int wl_set_fill(wl_set *s, wl_funnel *g, size_t n);

/* Free what the set holds; it is empty and reusable afterwards. */
void wl_set_release(wl_set *s);

#endif
