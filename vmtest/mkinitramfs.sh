#!/usr/bin/env bash
# Builds the vmtest initramfs for one kernel version: busybox-static, vmtest/init,
# vmtest/modprobe and the modules that 9p and overlayfs need, in load order.
# Usage: vmtest/mkinitramfs.sh KVER OUTPUT.cpio.gz
# Cached: OUTPUT is rebuilt only when an input changed (OUTPUT.inputs holds the key).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
kver=$1
out=$2
moddir=/lib/modules/$kver
busybox=${VMTEST_BUSYBOX:-/bin/busybox}

# Load order matters: insmod does not resolve dependencies.
modules=(netfs fscache 9pnet virtio_ring virtio virtio_pci_legacy_dev
	virtio_pci_modern_dev virtio_pci virtio_mmio 9pnet_virtio 9p overlay)
# Loaded when the CPU allows (insmod failures ignored): the AES-GCM drivers that udev's
# coldplug would load, so kTLS uses generic-gcm-aesni as on a real host, not aes-generic.
optional=(cryptd crypto_simd aesni-intel ghash-clmulni-intel)

die() { echo "vmtest: mkinitramfs: $*" >&2; exit 1; }

[ -d "$moddir" ] || die "no $moddir (is linux-image-$kver installed?)"
[ -x "$busybox" ] || die "no $busybox (install busybox-static)"
if readelf -l "$busybox" 2>/dev/null | grep -q 'Requesting program interpreter'; then
	die "$busybox is dynamically linked (install busybox-static)"
fi

# Module paths from modules.dep; a module missing there is built in (or absent) and skipped.
modpaths=()
for m in "${modules[@]}"; do
	p=$(grep -E "(^|/)${m}\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | head -n1 | cut -d: -f1 || true)
	[ -n "$p" ] && modpaths+=("$p")
done
optpaths=()
for m in "${optional[@]}"; do
	p=$(grep -E "(^|/)${m}\.ko:" "$moddir/modules.dep" | head -n1 | cut -d: -f1 || true)
	[ -n "$p" ] && optpaths+=("$p")
done
for p in "${modpaths[@]}" "${optpaths[@]}"; do
	case $p in *.ko) ;; *) die "compressed module $p not supported (busybox insmod)";; esac
done

key=$( {
	echo "kver=$kver modules=${modpaths[*]} optional=${optpaths[*]}"
	sha256sum "$here/init" "$here/modprobe" "$0" "$busybox"
	for p in "${modpaths[@]}" "${optpaths[@]}"; do stat -c '%n %s %Y' "$moddir/$p"; done
} | sha256sum | cut -d' ' -f1)

if [ -f "$out" ] && [ -f "$out.inputs" ] && [ "$(cat "$out.inputs")" = "$key" ]; then
	exit 0
fi

mkdir -p "$(dirname "$out")"
stage=$(mktemp -d "$(dirname "$out")/stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,etc,proc,sys,dev,tmp,lower,rw,newroot,out}
cp "$busybox" "$stage/bin/busybox"
for a in sh mount umount insmod mkdir cat cut grep sync poweroff sleep ip hostname chroot mv echo uname rm ls dmesg ln; do
	ln -s busybox "$stage/bin/$a"
done
cp "$here/init" "$stage/init"
cp "$here/modprobe" "$stage/sbin/modprobe"
chmod 0755 "$stage/init" "$stage/sbin/modprobe"
: > "$stage/etc/vmtest-modules"
: > "$stage/etc/vmtest-modules-optional"
for p in "${modpaths[@]}" "${optpaths[@]}"; do
	mkdir -p "$stage/lib/modules/$kver/$(dirname "$p")"
	cp "$moddir/$p" "$stage/lib/modules/$kver/$p"
done
printf '%s\n' "${modpaths[@]}" > "$stage/etc/vmtest-modules"
[ ${#optpaths[@]} -eq 0 ] || printf '%s\n' "${optpaths[@]}" > "$stage/etc/vmtest-modules-optional"

if command -v cpio >/dev/null; then
	cpio_cmd=(cpio --quiet -o -H newc)
else
	cpio_cmd=("$busybox" cpio -o -H newc)
fi
tmp=$(mktemp "$out.XXXXXX")
(cd "$stage" && find . -print | LC_ALL=C sort | "${cpio_cmd[@]}") | gzip -1 > "$tmp"
mv -f "$tmp" "$out"
echo "$key" > "$out.inputs.tmp.$$" && mv -f "$out.inputs.tmp.$$" "$out.inputs"
echo "vmtest: built $out ($(du -k "$out" | cut -f1) KiB, ${#modpaths[@]}+${#optpaths[@]} modules)" >&2
