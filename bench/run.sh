#!/usr/bin/env bash
# make bench: every side-by-side benchmark, each against its peer in the same run. Results go
# to bench/results.json (merged per section, headline ratios at its top level), docs/bench.svg
# draws them, and docs/BENCHMARKS.md says how to read them. Benchmarks measure; they do not
# pass or fail (make check never runs them).
#   bench/run.sh [xdp] [proxy] [ktls]     default: all three (about 6 minutes)
#   BENCH_SKIP_KTLS=1 leaves out the kTLS bench, which boots a VM (about 1.5 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."

sections=("$@")
if [ ${#sections[@]} -eq 0 ]; then
	sections=(xdp proxy)
	[ -n "${BENCH_SKIP_KTLS:-}" ] || sections+=(ktls)
fi

for s in "${sections[@]}"; do
	case "$s" in
	xdp) bench/xdp_bench.sh ;;
	proxy) bench/proxy_bench.sh ;;
	ktls) bench/ktls_bench.sh ;;
	*) echo "bench/run.sh: unknown section '$s' (xdp, proxy, ktls)" >&2; exit 2 ;;
	esac
done
bench/summary.py
echo "results: bench/results.json, docs/bench.svg; write-up: docs/BENCHMARKS.md"
