#!/usr/bin/env bash
# run-all.sh: every test `make check` runs, after the build (make check-run builds first).
#   1. unit tests: each build/asan/test_* (cmocka, ASan+UBSan) counts as one pass or failure
#   2. fuzz smoke: each build/fuzz/fuzz_* for PSD2E_FUZZ_SECONDS (default 5) on a temporary
#      copy of its corpus (tests/run-fuzz.sh)
#   3. integration tests in network namespaces (tests/integration/run.sh): each test counts
#   4. VM tests (vmtest/run-tests.sh): its "N passed, N failed" line when it prints one,
#      otherwise one pass or failure by exit status; missing counts as one failure
# Ends with "N passed, N failed" (", N skipped" when any) summing all; exits 1 on any failure.
# A test whose precondition is missing fails here. --fast (make test-fast) runs sections 1 and 2
# only and lets such tests skip (PSD2E_ALLOW_SKIP=1): the inner loop, without root or the VM.
set -uo pipefail

fast=0
if [ "${1:-}" = --fast ]; then
	fast=1
	export PSD2E_ALLOW_SKIP=1
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
cd "$ROOT" || exit 1

passed=0
failed=0
skipped=0
failures=()

# Adds the counts of a "N passed, N failed[, N skipped]" line in file $2 (section $1); when the
# file has none, counts one pass or failure from exit status $3.
add_counts() {
	local section=$1 file=$2 rc=$3 line p f s
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$file" | tail -n 1)
	if [ -n "$line" ]; then
		p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
		f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
		s=$(echo "$line" | sed -nE 's/.*, ([0-9]+) skipped.*/\1/p')
		passed=$((passed + p))
		failed=$((failed + f))
		skipped=$((skipped + ${s:-0}))
		if [ "$f" -gt 0 ] || { [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; }; then
			failures+=("$section")
			# Non-zero exit with no failure counted (e.g. the runner crashed): count it.
			[ "$f" -eq 0 ] && failed=$((failed + 1))
		fi
	elif [ "$rc" -eq 0 ]; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures+=("$section")
	fi
}

tmp=$(mktemp -d /tmp/psd2e-run-all.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# --- 1. unit tests ---------------------------------------------------------------------
echo "=== unit tests (ASan + UBSan)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
n_unit=0
for t in "$BUILD"/asan/test_*; do
	[ -f "$t" ] && [ -x "$t" ] || continue
	n_unit=$((n_unit + 1))
	name=$(basename "$t")
	echo "--- $name"
	timeout --kill-after=10 300 "$t"
	rc=$?
	if [ "$rc" -eq 0 ]; then
		passed=$((passed + 1))
		echo "PASS $name"
	else
		failed=$((failed + 1))
		failures+=("unit:$name")
		echo "FAIL $name (exit $rc)"
	fi
done
if [ "$n_unit" -eq 0 ]; then
	echo "FAIL no unit test binaries in $BUILD/asan"
	failed=$((failed + 1))
	failures+=("unit:none")
fi

# --- 2. fuzz smoke -------------------------------------------------------------------------
echo "=== fuzz targets (${PSD2E_FUZZ_SECONDS:-5}s each)"
fuzzers=()
for f in "$BUILD"/fuzz/fuzz_*; do
	[ -f "$f" ] && [ -x "$f" ] && fuzzers+=("$f")
done
if [ "${#fuzzers[@]}" -gt 0 ]; then
	for f in "${fuzzers[@]}"; do
		PSD2E_FUZZ_TMP_CORPUS=1 "$ROOT/tests/run-fuzz.sh" "${PSD2E_FUZZ_SECONDS:-5}" "$f" \
			2>&1 | tee "$tmp/fuzz.log"
		add_counts "fuzz:$(basename "$f")" "$tmp/fuzz.log" "${PIPESTATUS[0]}"
	done
else
	echo "(no fuzz targets built in $BUILD/fuzz)"
fi

if [ "$fast" = 1 ]; then
	echo "=== fast tier: integration and VM tests not run"
	[ "${#failures[@]}" -gt 0 ] && echo "failures in: ${failures[*]}"
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit
fi

# --- 3. integration --------------------------------------------------------------------------
echo "=== integration tests"
"$ROOT/tests/integration/run.sh" 2>&1 | tee "$tmp/integration.log"
add_counts integration "$tmp/integration.log" "${PIPESTATUS[0]}"

# --- 4. VM tests ---------------------------------------------------------------------------
echo "=== VM tests"
if [ -x "$ROOT/vmtest/run-tests.sh" ]; then
	"$ROOT/vmtest/run-tests.sh" 2>&1 | tee "$tmp/vmtest.log"
	add_counts vmtest "$tmp/vmtest.log" "${PIPESTATUS[0]}"
else
	echo "FAIL vmtest/run-tests.sh missing"
	failed=$((failed + 1))
	failures+=("vmtest:missing")
fi

echo "==="
[ "${#failures[@]}" -gt 0 ] && echo "failures in: ${failures[*]}"
if [ "$skipped" -gt 0 ]; then
	echo "$passed passed, $failed failed, $skipped skipped"
else
	echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
