/*
 * tests/common/workload.h - realistic lead events for tests and benchmarks.
 *
 * wl_lead_data() packs the data map of a lead.captured event as a web form
 * would send it (email, name, company, title, country, size, industry,
 * source, campaign, form, UTM fields): about 300 bytes once stored.
 * Deterministic: the same (seed, i) gives the same bytes.
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

#endif
