#!/usr/bin/env bash
# make vmtest: runs the tests that need a kernel with kTLS inside the vmtest VM and ends
# with one line "N passed, N failed". Exit 0 only when nothing failed and something ran;
# a VM that cannot boot is a failure, never a skip.
#
# Tests, in order (inside the VM, from the repository directory):
#   build/vm/ktls_selftest           kTLS install/recv/send/splice against OpenSSL peers
#   tests/vm/test_*.sh               daemon-level kTLS integration tests (executable)
# A test printing TAP ("ok N - ...", "not ok N - ...") counts one per line; a test without
# TAP counts one by its exit status; a non-zero exit without a "not ok" line adds a failure.
#   vmtest/run-tests.sh [--timeout SEC] [TEST...]   (TEST: paths, to run only those)
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo" || exit 1
per_test=${VMTEST_TEST_TIMEOUT:-900}

if [ "${VMTEST:-0}" != 1 ]; then
	timeout=${VMTEST_TIMEOUT:-2400}
	if [ "${1:-}" = --timeout ]; then timeout=$2; shift 2; fi
	for prog in build/vm/ktls_selftest; do
		[ -x "$prog" ] || { echo "vmtest: $prog is not built (run: make vmtest)" >&2
			echo "0 passed, 1 failed"; exit 1; }
	done
	"$here/run.sh" --timeout "$timeout" -- vmtest/run-tests.sh "$@"
	rc=$?
	if [ "$rc" = 124 ] || [ "$rc" = 125 ]; then
		echo "vmtest: the VM did not complete the tests (status $rc)" >&2
		echo "0 passed, 1 failed"
		exit 1
	fi
	exit "$rc"
fi

# --- inside the VM ------------------------------------------------------------------------
if [ $# -gt 0 ]; then
	tests=("$@")
else
	tests=(build/vm/ktls_selftest)
	for t in tests/vm/test_*.sh; do
		[ -x "$t" ] && tests+=("$t")
	done
fi

logdir=${VMTEST_OUT:-/tmp}/logs
mkdir -p "$logdir"
passed=0 failed=0
for t in "${tests[@]}"; do
	name=$(basename "$t")
	log=$logdir/$name.log
	echo "=== $t"
	start=$(date +%s)
	timeout -k 10 "$per_test" "$t" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	ok=$(grep -c '^ok ' "$log")
	nok=$(grep -c '^not ok ' "$log")
	if [ $((ok + nok)) -eq 0 ]; then
		if [ "$rc" = 0 ]; then ok=1; else nok=1; fi
	elif [ "$rc" != 0 ] && [ "$nok" = 0 ]; then
		nok=1
	fi
	[ "$rc" = 124 ] && echo "=== $t: timed out after ${per_test}s"
	echo "=== $t: $ok passed, $nok failed, exit $rc, $(( $(date +%s) - start ))s"
	passed=$((passed + ok))
	failed=$((failed + nok))
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
