#!/usr/bin/env bash
# make bench: every side-by-side benchmark, each against its peer in the same run. Results go
# to bench/results.json (merged per section) and docs/BENCHMARKS.md says how to read them.
# Benchmarks measure; they do not pass or fail (make check never runs them).
#   bench/run.sh [xdp] [ktls]     default: all
set -euo pipefail
cd "$(dirname "$0")/.."

sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(xdp ktls)

for s in "${sections[@]}"; do
	case "$s" in
	xdp) bench/xdp_bench.sh ;;
	ktls) bench/ktls_bench.sh ;;
	*) echo "bench/run.sh: unknown section '$s' (xdp, ktls)" >&2; exit 2 ;;
	esac
done
echo "results: bench/results.json; write-up: docs/BENCHMARKS.md"
