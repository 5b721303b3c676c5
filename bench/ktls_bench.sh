#!/usr/bin/env bash
# kTLS benchmark, run inside the vmtest VM (the host kernel has no kTLS): bulk relay of large
# bodies through kTLS + splice against userspace TLS with read/write, TLS 1.3 then 1.2, plus
# the raw AES-GCM speed of the kernel and of OpenSSL in the same VM (to read the TCG skew).
#   bench/ktls_bench.sh [MiB per body, default 32] [runs per mode, default 3]
# Output on stdout and in $BUILD/bench/ktls.txt (BUILD defaults to build; it builds
# $BUILD/vm/ktls_bench when missing); medians and ratios merged under "ktls" in
# bench/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-32}
runs=${2:-3}
B=${BUILD:-build}  # the build folder (make bench passes its own)
[ -x "$B/vm/ktls_bench" ] || make BUILD="$B" "$B/vm/ktls_bench"
mkdir -p "$B/bench"
vmtest/run.sh --timeout "${VMTEST_TIMEOUT:-3600}" -- sh -c "
	echo \"host: \$(nproc) vCPUs under QEMU TCG, kernel \$(uname -r), \$(openssl version)\"
	bench/ktls_cryptospeed.py
	$B/vm/ktls_bench -s $size -r $runs -V 1.3
	$B/vm/ktls_bench -s $size -r $runs -V 1.2
" | tee "$B/bench/ktls.txt"
# Merge the medians and ratios under "ktls" in bench/results.json.
B=$B SIZE=$size RUNS=$runs python3 - <<'PY'
import json, os, re, time
path = "bench/results.json"
res = json.load(open(path)) if os.path.exists(path) else {}
text = open(os.environ["B"] + "/bench/ktls.txt").read()
sec = {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "commands": ["bench/ktls_bench.sh %s %s" % (os.environ["SIZE"], os.environ["RUNS"])],
       "host": (re.search(r"^host: (.*)$", text, re.M) or [None, None])[1]}
for block in re.split(r"^ktls_bench: ", text, flags=re.M)[1:]:
    version = "tls1.3" if block.startswith("TLSv1.3") else "tls1.2"
    med = dict(re.findall(r"^median (\w+):\s+([\d.]+) MiB/s", block, re.M))
    cpu = dict(re.findall(r"^median (\w+):.*proxy ([\d.]+) CPU-s/GiB", block, re.M))
    ratio = re.search(r"proxy CPU per GiB ([\d.]+)x", block)
    sec[version] = {"mib_per_s": {k: float(v) for k, v in med.items()},
                    "proxy_cpu_s_per_gib": {k: float(v) for k, v in cpu.items()},
                    "cpu_per_gib_vs_userspace": float(ratio[1]) if ratio else None}
res["ktls"] = sec
json.dump(res, open(path, "w"), indent=1)
PY
