#!/usr/bin/env bash
# run-fuzz.sh SECONDS FUZZER...: runs each libFuzzer binary for SECONDS.
#
# Seeds: tests/fuzz/corpus/<name>/ (name = binary name without "fuzz_") when present, and a
# dictionary tests/fuzz/<name>.dict or tests/fuzz/fuzz_<name>.dict when present.
# The working corpus is build/fuzz/corpus/<name>/ (kept between runs, outside the sources), or
# a temporary copy when PSD2E_FUZZ_TMP_CORPUS=1 (what `make check` uses, so a run never grows
# anything). Crash/leak/timeout inputs are written to build/fuzz/artifacts/<name>/.
# Ends with "N passed, N failed"; exits 1 when any fuzzer found a problem.
set -uo pipefail

if [ $# -lt 2 ]; then
	echo "usage: $0 SECONDS FUZZER..." >&2
	exit 2
fi
SECS=$1
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac

tmp=$(mktemp -d /tmp/psd2e-fuzz.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

passed=0
failed=0
for fz in "$@"; do
	name=$(basename "$fz")
	short=${name#fuzz_}
	if [ ! -x "$fz" ]; then
		echo "FAIL $name: not built ($fz)"
		failed=$((failed + 1))
		continue
	fi
	seeds=$ROOT/tests/fuzz/corpus/$short
	if [ "${PSD2E_FUZZ_TMP_CORPUS:-0}" = 1 ]; then
		corpus=$tmp/corpus-$short
	else
		corpus=$BUILD/fuzz/corpus/$short
	fi
	mkdir -p "$corpus"
	if [ -d "$seeds" ]; then
		cp -a "$seeds/." "$corpus/"
	fi
	artifacts=$BUILD/fuzz/artifacts/$short
	mkdir -p "$artifacts"
	args=(-max_total_time="$SECS" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1
		-artifact_prefix="$artifacts/")
	for d in "$ROOT/tests/fuzz/$short.dict" "$ROOT/tests/fuzz/$name.dict"; do
		[ -f "$d" ] && args+=(-dict="$d")
	done
	log=$tmp/$name.log
	echo "--- $name: ${SECS}s, corpus $corpus"
	"$fz" "${args[@]}" "$corpus" >"$log" 2>&1
	rc=$?
	if [ "$rc" -eq 0 ]; then
		passed=$((passed + 1))
		grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|Done [0-9]+ runs)' "$log" | tail -n 2
		echo "PASS $name"
	else
		failed=$((failed + 1))
		tail -n 60 "$log"
		echo "FAIL $name (exit $rc); inputs in $artifacts/"
	fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
