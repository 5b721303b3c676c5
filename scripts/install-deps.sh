#!/usr/bin/env bash
# Installs the Debian packages psd2edge needs to build, test, demo and benchmark.
# Idempotent: only missing packages are installed; safe without a TTY (CI).
set -euo pipefail

packages=(
  build-essential make pkg-config clang llvm lld libclang-rt-14-dev
  libbpf-dev bpftool libelf-dev zlib1g-dev
  libssl-dev openssl libjansson-dev libcmocka-dev libsqlite3-dev sqlite3
  softhsm2 libp11-kit-dev
  libhttp-parser-dev libnl-3-dev libnl-route-3-dev
  iproute2 curl xdp-tools nftables iptables ethtool procps psmisc util-linux
  python3 nginx-light haproxy gnuplot-nox linux-perf strace
  prometheus
  qemu-system-x86 linux-image-amd64 busybox-static
)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: must run as root (apt-get)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q </dev/null
apt-get install -y -q --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  "${missing[@]}" </dev/null
