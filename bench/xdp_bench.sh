#!/usr/bin/env bash
# The issue-3 XDP benchmarks: (1) per-path program cost vs xdp-filter under BPF_PROG_TEST_RUN,
# (2) receiver drop rate / CPU per drop through a veth, XDP vs nftables vs iptables-legacy.
# Merges the figures under "xdp" into bench/results.json. usage: bench/xdp_bench.sh (root)
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${XDP_BENCH_REPEAT:-2000000} ROUNDS=${XDP_BENCH_ROUNDS:-7} PACKETS=${XDP_BENCH_PACKETS:-20000000}
B=${BUILD:-build}  # the build folder (make bench passes its own)
mkdir -p "$B/bench"
make -s BUILD="$B" "$B/psd2edge.skel.h" >/dev/null
cc -std=gnu11 -Wall -Wextra -Werror -O2 -g -D_GNU_SOURCE -Iinclude -I"$B" -Ibench \
	-Iuser bench/xdp_cost.c user/flow_index.c -o "$B/bench/xdp_cost" -lbpf -lelf -lz -lpthread
"$B/bench/xdp_cost" "$REPEAT" "$ROUNDS" > "$B/bench/xdp_cost.json"
BUILD=$B bench/xdp_droprate.sh "$PACKETS" > "$B/bench/xdp_droprate.json"
B=$B REPEAT=$REPEAT ROUNDS=$ROUNDS PACKETS=$PACKETS python3 - <<'PY'
import json, os, platform, subprocess, time
path = "bench/results.json"
res = json.load(open(path)) if os.path.exists(path) else {}
res["xdp"] = {
    "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "kernel": platform.release(),
    "cpus": os.cpu_count(),
    "commands": ["bench/xdp_bench.sh",
                 "build/bench/xdp_cost %s %s" % (os.environ["REPEAT"], os.environ["ROUNDS"]),
                 "bench/xdp_droprate.sh %s" % os.environ["PACKETS"]],
    "program_cost": json.load(open(os.environ["B"] + "/bench/xdp_cost.json")),
    "veth_drop": json.load(open(os.environ["B"] + "/bench/xdp_droprate.json")),
}
json.dump(res, open(path, "w"), indent=1)
print(json.dumps({"min_speedup_vs_alw_all": res["xdp"]["program_cost"]["min_speedup_vs_alw_all"],
                  "xdp_vs_nftables_per_cpu": res["xdp"]["veth_drop"]["xdp_vs_nftables_per_cpu"]}))
PY
