#!/usr/bin/env bash
# make vmtest: runs the tests that need a kernel with kTLS inside the vmtest VM and ends
# with one line "N passed, N failed". Exit 0 only when nothing failed and something ran;
# a VM that cannot boot is a failure, never a skip.
#
# Tests, in order (inside the VM, from the repository directory):
#   $BUILD/vm/ktls_selftest          kTLS install/recv/send/splice against OpenSSL peers
#   tests/vm/test_*.sh               daemon-level kTLS integration tests (executable)
# A test printing TAP ("ok N - ...", "not ok N - ...") counts one per line; a test without
# TAP counts one by its exit status; a non-zero exit without a "not ok" line adds a failure.
#   vmtest/run-tests.sh [--timeout SEC] [TEST...]   (TEST: paths, to run only those)
# Limits: the whole VM run VMTEST_TIMEOUT (default 600 s; an idle host needs ~2 min, a loaded one ~7), each
# test inside it VMTEST_TEST_TIMEOUT (default 480 s: two VMs and a compile on 2 cores took
# test_ktls_daemon.sh to ~330 s). A guest that stops (no heartbeat for
# VMTEST_HANG_TIMEOUT s, default 90) or does not boot is killed and booted once more
# (vmtest/run.sh --retry 1); a second failure counts as one failed test. Worst case about
# 2 x VMTEST_TIMEOUT.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo" || exit 1
per_test=${VMTEST_TEST_TIMEOUT:-480}
# The build folder (make's BUILD, default build), relative to the repository or absolute; the
# guest sees the repository at the same path and gets it passed on.
build=${BUILD:-build}

if [ "${VMTEST:-0}" != 1 ]; then
	timeout=${VMTEST_TIMEOUT:-600}
	if [ "${1:-}" = --timeout ]; then timeout=$2; shift 2; fi
	for prog in "$build"/vm/ktls_selftest "$build"/psd2edged "$build"/psd2edgectl \
		"$build"/asan/test_xdp "$build"/asan/test_dataplane "$build"/asan/test_policy_store; do
		[ -x "$prog" ] || { echo "vmtest: $prog is not built (run: make vmtest)" >&2
			echo "0 passed, 1 failed"; exit 1; }
	done
	# The test PKI is made here: in the VM it would land in the throwaway overlay, every run.
	scripts/gen-pki.sh "${PSD2E_PKI:-$build/test-pki}" >/dev/null ||
		{ echo "vmtest: scripts/gen-pki.sh failed" >&2; echo "0 passed, 1 failed"; exit 1; }
	t0=$(date +%s)
	"$here/run.sh" --timeout "$timeout" --retry 1 -- env BUILD="$build" vmtest/run-tests.sh "$@"
	rc=$?
	case $rc in
	123|124|125)
		why=([123]="the guest hung (no heartbeat)" [124]="time limit of ${timeout}s reached"
			[125]="the VM did not boot or could not run the tests")
		echo "vmtest: ERROR: the VM did not complete the tests: ${why[$rc]} (status $rc, $(( $(date +%s) - t0 ))s)" >&2
		echo "0 passed, 1 failed"
		exit 1
		;;
	esac
	exit "$rc"
fi

# --- inside the VM ------------------------------------------------------------------------
if [ $# -gt 0 ]; then
	tests=("$@")
else
	# The BPF unit tests again, so the program passes the verifier of Debian's 6.1 kernel too
	# and its maps (the policy state's too) are created there.
	tests=("$build"/vm/ktls_selftest "$build"/asan/test_xdp "$build"/asan/test_dataplane
		"$build"/asan/test_policy_store)
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
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		echo "=== $t: TIMED OUT after ${per_test}s (VMTEST_TEST_TIMEOUT), counted as failed"
	fi
	echo "=== $t: $ok passed, $nok failed, exit $rc, $(( $(date +%s) - start ))s"
	passed=$((passed + ok))
	failed=$((failed + nok))
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
