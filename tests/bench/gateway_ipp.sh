#!/bin/sh
# tests/bench/gateway_ipp.sh - funnel-gateway's instructions per form post,
# counted by callgrind (noise-free, unlike posts/s on a shared machine):
# bench_gateway's G1 twice with the gateway under callgrind, N1 and N2
# posts, and (instructions(N2) - instructions(N1)) / (N2 - N1), so that
# start-up and shutdown cancel out.  Needs valgrind.
#
# usage: BUILD=build sh tests/bench/gateway_ipp.sh [N1 [N2]]
#        (defaults 1000 and 4000; BENCH_GATEWAY_CLIENTS as bench_gateway)
BUILD=${BUILD:-build}
export BUILD
export FUNNELD="$BUILD/bin/funneld"
N1=${1:-1000}
N2=${2:-4000}
out=$(mktemp -d "${TMPDIR:-/tmp}/gateway_ipp.XXXXXX") || exit 1
trap 'rm -rf "$out"' EXIT
instr() {
	BENCH_GATEWAY_POSTS=$1 BENCH_GATEWAY_PACED=0 BENCH_OUT= \
	BENCH_GATEWAY_WRAP="valgrind --tool=callgrind --callgrind-out-file=$out/$1.out" \
		nice "$BUILD/bench/bench_gateway" >"$out/$1.log" 2>&1 ||
		{ echo "gateway_ipp: bench_gateway with $1 posts failed:" >&2; cat "$out/$1.log" >&2; exit 1; }
	sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$out/$1.out"
}
i1=$(instr "$N1") || exit 1
i2=$(instr "$N2") || exit 1
echo "gateway instructions: $N1 posts $i1, $N2 posts $i2"
echo "gateway_instructions_per_post=$(( (i2 - i1) / (N2 - N1) ))"
