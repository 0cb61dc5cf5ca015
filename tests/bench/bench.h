/*
 * tests/bench/bench.h - what the parts of the benchmark share: the events
 * every system receives, one system's results, and the measuring tools
 * (percentiles, a memory sampler, starting and stopping peer servers).
 *
 * Each system runs the same workloads in the same order on a fresh,
 * empty store: W4 (idle, one event at a time), W1 (4 producers,
 * pipelined), W3 (paced, with a subscriber), W2 (read everything back).
 * The event bytes come from bench_events and are the same for all.
 * Clocks and temp-dir removal are tests/common/harness.h's.
 */
#ifndef FUNNEL_BENCH_H
#define FUNNEL_BENCH_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <msgpack.h>

#include "harness.h"
#include "workload.h"

#define BENCH_PRODUCERS 4
#define BENCH_BATCH 100            /* funnel: events per request; peers: commands per flush */
#define BENCH_WINDOW 16            /* funnel: requests in flight per producer */
#define BENCH_INFLIGHT (BENCH_BATCH * BENCH_WINDOW)   /* events in flight per producer, every system */
#define BENCH_W3_RATE 10000        /* events/s */
#define BENCH_W3_WINDOW 256        /* W3 events in flight at most */
#define BENCH_W4_GAP_US 200        /* idle time between two W4 events */

/* The events of each workload.  w1[i] is producer i's stream; all of
 * them, then w3, then w4 name disjoint leads and ids. */
typedef struct bench_events {
	wl_set w1[BENCH_PRODUCERS];
	wl_set w3;
	wl_set w4;
	uint64_t w1_total;
} bench_events;

/* One system's figures.  Latencies in ms; -1 where not measured. */
typedef struct bench_result {
	int ran;                   /* 1 once the server was up and W4..W2 ran */
	char note[400];            /* why it did not run, or what went wrong */
	double w1_eps;
	uint64_t w1_acked;         /* events acknowledged as stored */
	uint64_t w1_refused;       /* events refused or not acknowledged */
	double w2_eps;
	uint64_t w2_count;         /* events read back in W2 (everything stored) */
	double w3[3];              /* send -> subscriber holds it: p50, p99, p99.9 */
	uint64_t w3_got;           /* events the W3 subscriber saw, of events.w3.n */
	double w4[2];              /* publish -> ack: p50, p99 */
	uint64_t mem_max_kb;       /* server's anonymous memory, max during W4..W2 */
	/* with the slow disk (bench_disk_*): the server's flushes per event
	 * acknowledged, counted by the shim, in W1, W3 and W4; -1 where not
	 * counted */
	double flushes[3];
	/* what the device under the server's data took per event
	 * acknowledged (bench_dev_*), in W1 and W4; -1 where not read */
	double dev_bytes[3];
	double dev_flushes[3];
} bench_result;

enum { BENCH_FL_W1, BENCH_FL_W3, BENCH_FL_W4 };

/*
 * The slow disk (BENCH_FLUSH_DELAY_US): every server the benchmark starts
 * (funneld, redis-server, nats-server) runs with tests/crash/shim.c
 * preloaded in its slow-disk mode, its data under one watched directory,
 * so each fsync/fdatasync/msync (and O_DSYNC write) of its data sleeps
 * the same N us after the real call, and is counted.  nats-server is a
 * Go program that makes its system calls itself: the shim sees none of
 * them (its count stays 0, reported as not counted).
 *
 * bench_disk_setup reads BENCH_FLUSH_DELAY_US (unset or empty: off; a
 * number, 0 included: on, that delay, flushes counted) and BENCH_SHIM
 * (the shim; default $BUILD/tests/crashshim.so).  When on, it makes the
 * watched directory, points TMPDIR there (harness_start and
 * bench_tempdir make the servers' directories under it) and sets
 * LD_PRELOAD and the shim's variables for every process spawned after.
 * Returns 0 (off), 1 (on), or -1 with a line on stderr.
 */
int bench_disk_setup(void);
/* The delay in us, or -1 when off. */
long bench_disk_delay_us(void);
/* Count the flushes of the servers started from now on under `name`
 * (from 0). */
void bench_disk_server(const char *name);
/* The flushes counted under the current name so far, or -1 when off. */
int64_t bench_disk_flushes(void);
/* flushes since `before` (a bench_disk_flushes() value) per event, or -1
 * when off, before is -1, or events is 0. */
double bench_disk_per_event(int64_t before, uint64_t events);
/*
 * What the block device holding a directory took: bytes written and
 * flush requests completed (/sys/dev/block/MAJ:MIN/stat, write sectors
 * and flushes), file system journal and every process included, so read
 * on an idle machine.  Counts, not times: what a system asks of the
 * disk per event, which noise cannot move much.  /proc/PID/io would be
 * per process, but counts a whole folio (up to 64 KiB here) for a write
 * into part of it.
 */
typedef struct bench_dev {
	int64_t bytes, flushes;   /* -1: not readable */
} bench_dev;
void bench_dev_read(const char *dir, bench_dev *d);
/* Wait until the device's bytes written stop growing (checked every
 * 100 ms, stable for 300 ms, 3 s at most: funneld writes its last
 * checkpoint shortly after a load ends), then set *bytes and *flushes to
 * what it took since `before` per event (-1 when not readable or events
 * is 0). */
void bench_dev_per_event(const char *dir, const bench_dev *before, uint64_t events,
                         double *bytes, double *flushes);
/* Remove the watched directory (KEEP_TEST_DIRS keeps it). */
void bench_disk_cleanup(void);

/* Set every figure of r to "not measured". */
void bench_result_init(bench_result *r);

/* Sleep until the monotonic time t (ns, harness_now_ns()); returns at
 * once if past. */
void bench_sleep_until(uint64_t t);

/* Sort ns[0..n) and write the p-quantiles (p in 0..1) of it, in ms, to
 * out[0..np); -1 when n is 0. */
void bench_quantiles_ms(uint64_t *ns, size_t n, const double *p, double *out, size_t np);

/* The number in environment variable `name`, or def. */
uint64_t bench_env_u64(const char *name, uint64_t def);

/* A service bench's report: its markdown table `tab` to stdout and, when
 * BENCH_OUT names a file, appended there with the key=value lines that
 * raw_fmt gives (each ending in a newline) in a ``` block. */
void bench_report(const char *tab, const char *raw_fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Run a service binary (e.g. "funnel-scoring", next to funneld) against
 * d with --rules, --view, the endpoints, --until-head --log-level warn
 * and `extra`; `wrap` (may be NULL) goes before the command, to profile
 * it.  Returns the wall time in ns, or 0 when it failed (said on
 * stderr). */
uint64_t bench_service_until_head(const daemon_proc *d, const char *binary, const char *rules,
                                  const char *view, const char *extra, const char *wrap);

/* The k-th event of a paced load: fill *ev (its lead and id may point
 * into lead and id, 64 bytes each; its data into sb, emptied before). */
struct funnel_event;
typedef void (*bench_event_fn)(uint64_t k, msgpack_sbuffer *sb, char *lead, char *id,
                               struct funnel_event *ev, void *ctx);

/* Send n events made by make, one per request, paced at rate/s, up to
 * 256 in flight, and wait for every ack.  Returns 0, or -1 when a send
 * or an ack failed. */
int bench_paced_load(const daemon_proc *d, uint64_t n, uint64_t rate, bench_event_fn make,
                     void *ctx);

/* Start a service binary (e.g. "funnel-routing") following d with
 * --rules, a view in d's directory named after the binary, its log and
 * ready file there too, at log level warn; returns its pid once the
 * ready file is written (5 s at most), or -1. */
pid_t bench_service_start(const daemon_proc *d, const char *binary, const char *rules);

/* Wait until d's head stops moving (sampled every 200 ms, 20 s at most):
 * the services following it are done. */
void bench_wait_settled(const daemon_proc *d);

/* Latency from each record's cause to the record, for every record of
 * type `type` in the log behind the query endpoint (both daemon
 * timestamps: commit to commit): the p-quantiles in ms into out[0..np),
 * how many in *n.  Records caused by a seq beyond the first 2^21 are
 * left out.  Returns 0 or -1. */
int bench_cause_latency(const char *query, const char *type, const double *p, double *out,
                        size_t np, uint64_t *n);

/* A thread that samples harness_anon_kb(pid) every 20 ms and keeps the
 * maximum.  start returns 0 or -1; stop joins and returns the max. */
typedef struct bench_sampler {
	pthread_t th;
	pid_t pid;
	volatile int on;
	volatile uint64_t max_kb;
} bench_sampler;
int bench_sampler_start(bench_sampler *s, pid_t pid);
uint64_t bench_sampler_stop(bench_sampler *s);

/* A loopback TCP port that nothing listens on now, from 12000..19999
 * (below the ephemeral range, apart from the harness's 20000..31999), or
 * -1.  Another process may still take it before the server binds it:
 * callers check that their server came up and try another port. */
int bench_free_port(void);

/* A fresh temporary directory named after what it is for; 0 or -1. */
int bench_tempdir(char *dir, size_t len, const char *what);

/* Start argv[0] (searched in PATH) with stdout and stderr appended to
 * log_path; returns its pid or -1. */
pid_t bench_spawn(char *const argv[], const char *log_path);

/* 1 while pid runs; 0 once it has exited (and is reaped). */
int bench_alive(pid_t pid);

/* SIGTERM, wait up to timeout_ms, then SIGKILL; always reaps pid.
 * Returns 0 when it exited on SIGTERM, 1 when it had to be killed. */
int bench_stop(pid_t pid, int timeout_ms);

/* Run a shell command line to its end; its wall time in ns, or 0 (and a
 * line on stderr) when it failed.  The services' rebuild timings. */
uint64_t bench_run_timed(const char *cmd);

/* Publish n funnel-shaped events (wl_funnel, seed 11, tag "h") to the
 * ingest endpoint: packed requests of 1000, 16 in flight.  0 or -1.
 * The services' benchmarks fill their history with it. */
int bench_fill_history(const char *ingest, uint64_t n);

/* The peers.  Each starts its server on loopback (a free port, its own
 * temp dir), runs W4, W1, W3, W2 with ev, stops the server by its pid and
 * removes the dir.  Returns 0, or -1 when the server could not be started
 * or reached (r->ran is then 0 and r->note says why).
 *
 * appendfsync: "always" or "everysec" (Redis's AOF modes). */
int peer_redis_run(const char *appendfsync, const bench_events *ev, bench_result *r);
int peer_nats_run(const bench_events *ev, bench_result *r);

#endif
