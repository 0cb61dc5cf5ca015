#!/bin/sh
# tests/fuzz/fuzz.sh - run each libFuzzer target for a bounded time and
# report each as one test, ending with the line tests/run.sh counts:
# "N passed, N failed".
#
# usage: BUILD=build FUZZ_SECONDS=60 [FUZZ_TARGETS="envelope reply"] sh tests/fuzz/fuzz.sh
# The seeds are tests/fuzz/corpus/<target> (read only); inputs a run finds
# interesting go to $BUILD/fuzz/corpus-<target>, kept between runs; a
# crash leaves its input in $BUILD/fuzz/ (crash-*, oom-*, leak-*), to
# replay with: $BUILD/fuzz/fuzz_<target> $BUILD/fuzz/crash-...
BUILD=${BUILD:-build}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_TARGETS=${FUZZ_TARGETS:-envelope reply}
here=$(dirname "$0")
passed=0
failed=0

for t in $FUZZ_TARGETS; do
	bin="$BUILD/fuzz/fuzz_$t"
	work="$BUILD/fuzz/corpus-$t"
	out="$BUILD/fuzz/last-run-$t.txt"
	if [ ! -x "$bin" ]; then
		echo "fuzz_$t: $bin is not built (make $bin; needs clang and libclang-rt-14-dev)"
		failed=$((failed + 1))
		continue
	fi
	mkdir -p "$work"
	# msgpack-c allocates a declared array length up front (24 bytes an
	# element): a 5-byte 0xdd ff ff ff ff asks malloc for 96 GiB, which
	# must fail and come back as an error.  ASan returns NULL for anything
	# over 256 MiB (as a daemon's malloc would on a smaller machine), which
	# keeps the fuzzer fast and its memory low; libFuzzer's own limits stay
	# on and report memory really used (-rss_limit_mb) or a smaller
	# allocation it did not expect (-malloc_limit_mb) as failures.  These
	# options come last, so they win over the ones tests/run.sh exports.
	ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}allocator_may_return_null=1:max_allocation_size_mb=256:detect_leaks=1" \
	UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
		"$bin" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 -timeout=10 \
		-rss_limit_mb=2048 -malloc_limit_mb=512 -max_len=8192 \
		-artifact_prefix="$BUILD/fuzz/" "$work" "$here/corpus/$t" >"$out" 2>&1
	rc=$?
	# the summary: seeds, coverage, how many inputs
	grep -E '^INFO: (Seed|seed corpus)|^#[0-9]+[[:space:]]+(INITED|DONE)' "$out" | sed "s/^/fuzz_$t: /" | tail -4
	grep -E '^stat::' "$out" | sed "s/^/fuzz_$t: /"
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out")
	if [ "$rc" -eq 0 ]; then
		echo "fuzz_$t: ${execs:-?} inputs in ${FUZZ_SECONDS}s, no crash, no sanitizer report, invariants held"
		passed=$((passed + 1))
	else
		tail -60 "$out"
		echo "fuzz_$t: failed (exit $rc); the input is in $BUILD/fuzz/ (see above)"
		failed=$((failed + 1))
	fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
