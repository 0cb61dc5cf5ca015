#!/bin/sh
# tests/bench/run.sh - run the benchmarks and keep the table.
# BENCH_EVENTS and BENCH_START_EVENTS size the runs (see bench_funnel.c).
BUILD=${BUILD:-build}
export BUILD
export FUNNELD="$BUILD/bin/funneld"
export BENCH_OUT="${BENCH_OUT:-$BUILD/bench/results.txt}"
"$BUILD/bench/bench_funnel" || exit 1
echo "table saved in $BENCH_OUT"
