#!/bin/sh
# tests/fuzz/fuzz.sh - run the libFuzzer target for a bounded time and
# report it as one test: "1 passed, 0 failed" or "0 passed, 1 failed"
# (the line tests/run.sh counts).
#
# usage: BUILD=build FUZZ_SECONDS=60 sh tests/fuzz/fuzz.sh
# The seeds are tests/fuzz/corpus/envelope (read only); inputs the run
# finds interesting go to $BUILD/fuzz/corpus, kept between runs; a crash
# leaves its input in $BUILD/fuzz/ (crash-*, oom-*, leak-*), to replay
# with: $BUILD/fuzz/fuzz_envelope $BUILD/fuzz/crash-...
BUILD=${BUILD:-build}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
here=$(dirname "$0")
bin="$BUILD/fuzz/fuzz_envelope"
work="$BUILD/fuzz/corpus"
out="$BUILD/fuzz/last-run.txt"

if [ ! -x "$bin" ]; then
	echo "fuzz: $bin is not built (make $bin; needs clang and libclang-rt-14-dev)"
	echo "0 passed, 1 failed"
	exit 1
fi
mkdir -p "$work"
# msgpack-c allocates a declared array length up front (24 bytes an
# element): a 5-byte 0xdd ff ff ff ff asks malloc for 96 GiB, which must
# fail and come back as EMALFORMED.  ASan returns NULL for anything over
# 256 MiB (as a daemon's malloc would on a smaller machine), which keeps
# the fuzzer fast and its memory low; libFuzzer's own limits stay on and
# report memory really used (-rss_limit_mb) or a smaller allocation it
# did not expect (-malloc_limit_mb) as failures.
# These come last, so they win over the ones tests/run.sh exports.
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}allocator_may_return_null=1:max_allocation_size_mb=256:detect_leaks=1" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
	"$bin" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 -timeout=10 \
	-rss_limit_mb=2048 -malloc_limit_mb=512 -max_len=8192 \
	-artifact_prefix="$BUILD/fuzz/" "$work" "$here/corpus/envelope" >"$out" 2>&1
rc=$?
# the summary: what was run, how many inputs, what coverage
grep -E '^INFO: (Seed|seed corpus)|^#[0-9]+[[:space:]]+(INITED|DONE)' "$out" | tail -4
grep -E '^stat::' "$out"
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out")
if [ "$rc" -eq 0 ]; then
	echo "fuzz: ${execs:-?} inputs in ${FUZZ_SECONDS}s, no crash, no sanitizer report, invariants held"
	echo "1 passed, 0 failed"
	exit 0
fi
tail -60 "$out"
echo "fuzz: failed (exit $rc); the input is in $BUILD/fuzz/ (see above)"
echo "0 passed, 1 failed"
exit 1
