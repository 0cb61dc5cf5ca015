#!/bin/sh
# tests/bench/run.sh - run the benchmarks and keep the table.
# BENCH_PEERS, BENCH_EVENTS, BENCH_START_EVENTS, BENCH_W3_SECS,
# BENCH_W4_EVENTS, BENCH_SEED size and shape the run (see bench_funnel.c);
# BENCH_SCORING_EVENTS and BENCH_SCORING_SECS size bench_scoring.c;
# BENCH_ROUTING_LEADS and BENCH_ROUTING_SECS size bench_routing.c;
# BENCH_METRICS_EVENTS and BENCH_METRICS_REQUESTS size bench_metrics.c;
# BENCH_GATEWAY_POSTS, BENCH_GATEWAY_CLIENTS, BENCH_GATEWAY_RATE and
# BENCH_GATEWAY_PACED size bench_gateway.c;
# BENCH_IMPORT_ROWS and BENCH_DEMO_LEADS size bench_history.py;
# BENCH_MIRROR_EVENTS and BENCH_MIRROR_SECS size bench_mirror.c;
# BENCH_HOPS_N sizes bench_hops.c;
# BENCH_SLOW_DISK, BENCH_SLOW_DISK_US and BENCH_SLOW_DISK_EVENTS shape the
# second bench_funnel run, on a slower disk (below);
# BENCH_OUT is where the table and the raw figures go.
BUILD=${BUILD:-build}
export BUILD
export FUNNELD="$BUILD/bin/funneld"
export BENCH_OUT="${BENCH_OUT:-$BUILD/bench/RESULTS.md}"
mkdir -p "$(dirname "$BENCH_OUT")"
nice "$BUILD/bench/bench_funnel" || exit 1
# the same on a disk whose flush takes 1 ms more (BENCH_FLUSH_DELAY_US,
# tests/crash/shim.c preloaded into funneld and redis-server): W1, W3, W4
# and each one's flushes per event against Redis always, appended (about
# a minute; BENCH_SLOW_DISK=0 skips it, BENCH_SLOW_DISK_US sets the delay)
if [ "${BENCH_SLOW_DISK:-1}" != 0 ]; then
	BENCH_FLUSH_DELAY_US=${BENCH_SLOW_DISK_US:-1000} BENCH_OUT_APPEND=1 BENCH_PEERS=redis-always \
	BENCH_EVENTS=${BENCH_SLOW_DISK_EVENTS:-200000} BENCH_START_EVENTS=0 BENCH_BACKUP_EVENTS=0 \
	BENCH_SEALED=0 BENCH_CURVE=0 nice "$BUILD/bench/bench_funnel" || exit 1
fi
# the floor under W4 on this machine: one round trip over a plain socket
# (Redis's shape) next to ZeroMQ's and funneld's hand-over, with no work
# (threads free and on one CPU) and with one write + fdatasync, the flush
# W4 pays (BENCH_HOPS_N), appended
nice "$BUILD/bench/bench_hops" || exit 1
# the services' numbers (BENCH_SCORING_EVENTS, BENCH_SCORING_SECS), appended
nice "$BUILD/bench/bench_scoring" || exit 1
# funnel-routing's (BENCH_ROUTING_LEADS, BENCH_ROUTING_SECS), appended
nice "$BUILD/bench/bench_routing" || exit 1
# funnel-metrics: view rebuild, then /api and /metrics on the large view
# (BENCH_METRICS_EVENTS, BENCH_METRICS_REQUESTS), appended
nice "$BUILD/bench/bench_metrics" || exit 1
# funnel-gateway: form posts/s (64 keep-alive clients) next to direct
# ZeroMQ publishing, and post -> answer latency at 1,000 posts/s, appended
# (its instructions per post, noise-free: sh tests/bench/gateway_ipp.sh)
nice "$BUILD/bench/bench_gateway" || exit 1
# a history's loading: funnel import's rows/s and events/s, make demo's
# time (BENCH_IMPORT_ROWS, BENCH_DEMO_LEADS), appended
nice /usr/bin/python3 tests/bench/bench_history.py || exit 1
# funnel-mirror into NATS JetStream R1 and R3, its lag at 10,000 ev/s, and
# replay from the mirror next to replay from funneld, appended
nice "$BUILD/bench/bench_mirror" || exit 1
echo "table and raw figures saved in $BENCH_OUT"
