#!/bin/sh
# tests/bench/hops.sh - the thread hops of one W4 event (publish -> ack)
# or of W3's records (send -> subscriber), measured: bench_funnel runs
# alone (no peer), `perf record` takes 1 s of scheduler events while the
# workload runs, and tests/bench/hops.py prints the median of each hop.
# Needs perf (linux-perf) and root or kernel.perf_event_paranoid <= 1;
# a manual tool, not part of make bench.
#
# usage: sh tests/bench/hops.sh w4|w3
# BENCH_FUNNELD_ARGS=--no-sync leaves the flush out.
# Thread roles: app (the producer's thread), cIO (its ZeroMQ I/O thread),
# dIO (funneld's I/O thread), recv (funneld's receiver thread), writer
# (funneld's main thread, the log's writer), sub and sIO (W3's subscriber
# thread and its I/O thread).
set -e
BUILD=${BUILD:-build}
what=${1:-w4}
dir=$(mktemp -d /tmp/funnel-hops-XXXXXX)
[ -n "$HOPS_KEEP" ] || trap 'rm -rf "$dir"' EXIT; echo "files in $dir"
case "$what" in
w4) sizes="BENCH_W4_EVENTS=8000 BENCH_W3_SECS=1"; wait_s=1 ;;
w3) sizes="BENCH_W4_EVENTS=1 BENCH_W3_SECS=5"; wait_s=2 ;;
*) echo "usage: $0 w4|w3" >&2; exit 2 ;;
esac
env $sizes BENCH_PEERS=none BENCH_EVENTS=4 BENCH_START_EVENTS=0 BENCH_BACKUP_EVENTS=0 \
	BENCH_SEALED=0 BENCH_CURVE=0 FUNNELD="$BUILD/bin/funneld" \
	"$BUILD/bench/bench_funnel" >"$dir/bench.out" 2>&1 &
bench=$!
sleep "$wait_s"
daemon=$(pgrep -P "$bench" funneld | head -1)
# tids in creation order, by name
tids() { for t in $(ls "/proc/$1/task" | sort -n); do
	[ "$(cat "/proc/$1/task/$t/comm")" = "$2" ] && echo "$t"; done; true; }
{
	echo "$bench app"
	echo "$daemon writer"
	echo "$(tids "$daemon" ZMQbg/IO/0 | head -1) dIO"
	echo "$(tids "$daemon" funneld | tail -1) recv"   # started last, by ingest_run
	if [ "$what" = w4 ]; then
		echo "$(tids "$bench" ZMQbg/IO/0 | head -1) cIO"
	else   # W3: the query's context, the producer's, the subscriber's
		echo "$(tids "$bench" ZMQbg/IO/0 | sed -n 2p) cIO"
		echo "$(tids "$bench" ZMQbg/IO/0 | sed -n 3p) sIO"
		echo "$(tids "$bench" bench_funnel | tail -1) sub"
	fi
} >"$dir/roles"
perf record -q -o "$dir/perf.data" -e sched:sched_switch,sched:sched_waking -a -- sleep 1 \
	>/dev/null 2>&1
wait "$bench" || true
perf script -i "$dir/perf.data" -F tid,cpu,time,event,trace >"$dir/script" 2>/dev/null
grep -E "W[34] |flags" "$dir/bench.out" || true
if [ "$what" = w4 ]; then
	echo "a lone event: the writer applies it, writes and flushes the journal (none with"
	echo "--no-sync) and hands it back; its run below includes the flush, the hand-back and"
	echo "the receiver's replies:"
	/usr/bin/python3 tests/bench/hops.py "$dir/script" "$dir/roles" \
		"app>cIO,cIO>dIO,dIO>recv,recv>writer,recv>dIO,dIO>cIO,cIO>app" || true
else
	/usr/bin/python3 tests/bench/hops.py "$dir/script" "$dir/roles" "app>cIO,cIO>dIO,dIO>recv,recv>writer"
	/usr/bin/python3 tests/bench/hops.py "$dir/script" "$dir/roles" "writer>recv,recv>dIO,dIO>sIO,sIO>sub"
fi
