#!/usr/bin/env bash
# kTLS benchmark, run inside the vmtest VM (the host kernel has no kTLS): bulk relay of large
# bodies through kTLS + splice against userspace TLS with read/write, TLS 1.3 then 1.2, plus
# the raw AES-GCM speed of the kernel and of OpenSSL in the same VM (to read the TCG skew).
#   bench/ktls_bench.sh [MiB per body, default 32] [runs per mode, default 3]
# Output on stdout and in build/bench/ktls.txt. Needs build/vm/ktls_bench (make vmtest, or
# make build/vm/ktls_bench).
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-32}
runs=${2:-3}
[ -x build/vm/ktls_bench ] || make build/vm/ktls_bench
mkdir -p build/bench
vmtest/run.sh --timeout "${VMTEST_TIMEOUT:-3600}" -- sh -c "
	echo \"host: \$(nproc) vCPUs under QEMU TCG, kernel \$(uname -r), \$(openssl version)\"
	bench/ktls_cryptospeed.py
	build/vm/ktls_bench -s $size -r $runs -V 1.3
	build/vm/ktls_bench -s $size -r $runs -V 1.2
" | tee build/bench/ktls.txt
