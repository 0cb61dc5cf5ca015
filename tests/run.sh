#!/bin/sh
# tests/run.sh - run test binaries (cmocka) and the protocol conformance
# test, then print one summary line: "tests: N passed, N failed", with
# ", N skipped" when a test could not run here (a skipped test is never
# counted as passed; the names are listed above the line).
#
# usage: BUILD=build sh tests/run.sh [test ...]
# Runs exactly the tests named, in that order: programs (e.g.
# build/tests/test_daemon) and Python integration tests (e.g.
# tests/integration/test_cli.py).  With none named it runs every test
# program built in $BUILD/tests, then every tests/integration/test_*.py.
# (`make check` names its programs and the Python tests itself.)
# Each program gets at most TEST_TIMEOUT seconds (default 900).
BUILD=${BUILD:-build}
TEST_TIMEOUT=${TEST_TIMEOUT:-900}
export BUILD
export FUNNELD="$BUILD/bin/funneld"
# msgpack-c sizes arrays from their declared length before reading them;
# a hostile length must be an allocation failure, not a sanitizer abort.
# Over 1 GiB, ASan fails the allocation at once as a smaller machine
# would; it would otherwise map it and then spend seconds poisoning the
# shadow of a 96 GiB block on free (a daemon under test_hostile stalled so).
export ASAN_OPTIONS="${ASAN_OPTIONS:-allocator_may_return_null=1:max_allocation_size_mb=1024:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

passed=0
failed=0
skipped=0
broken=""
skipped_names=""
out=$(mktemp)
trap 'rm -f "$out"' EXIT

count() {
	# $1: program output; cmocka prints "[  PASSED  ] N test(s)." and
	# "[  FAILED  ] N test(s)"; the Python test prints "N passed, N failed".
	p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$1" | awk '{s+=$1} END {print s+0}')
	f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$1" | awk '{s+=$1} END {print s+0}')
	pp=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$1" | tail -1)
	pf=$(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$1" | tail -1)
	s=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$1" | awk '{s+=$1} END {print s+0}')
	echo "$((p + ${pp:-0})) $((f + ${pf:-0})) $s"
}

run_one() {
	name=$(basename "$1")
	echo "=== $name"
	start=$(date +%s)
	case "$1" in
	*.py) timeout "$TEST_TIMEOUT" /usr/bin/python3 "$1" >"$out" 2>&1 ;;
	*) timeout "$TEST_TIMEOUT" "$1" >"$out" 2>&1 ;;
	esac
	rc=$?
	cat "$out"
	set -- $(count "$out")
	p=$1 f=$2 s=$3
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		# crashed, timed out or failed without a count: one failure
		f=1
		echo "!!! $name exited with status $rc"
	fi
	passed=$((passed + p))
	failed=$((failed + f))
	skipped=$((skipped + s))
	[ "$f" -gt 0 ] && broken="$broken $name"
	[ "$s" -gt 0 ] && skipped_names="$skipped_names $name"
	echo "--- $name: $p passed, $f failed$([ "$s" -gt 0 ] && echo ", $s skipped") ($(( $(date +%s) - start ))s)"
}

if [ "$#" -eq 0 ]; then
	for t in "$BUILD"/tests/test_*; do
		[ -f "$t" ] && [ -x "$t" ] && run_one "$t"
	done
	for t in tests/integration/test_*.py; do
		[ -f "$t" ] && run_one "$t"
	done
fi
for t in "$@"; do
	run_one "$t"
done

[ -n "$broken" ] && echo "failing:$broken"
[ -n "$skipped_names" ] && echo "skipped in:$skipped_names"
echo "tests: $passed passed, $failed failed$([ "$skipped" -gt 0 ] && echo ", $skipped skipped")"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
