#!/usr/bin/env bash
# vmtest/run.sh: run one command inside a VM booted with Debian's packaged kernel (which
# has kTLS as a module), with the host root shared read-only under a tmpfs overlay, and
# return the command's stdout, stderr and exit status.
#
#   vmtest/run.sh [--timeout SEC] [--kernel VMLINUZ] [--cwd DIR] [--mem SIZE] [--cpus N]
#                 [--keep] [--console] [--quiet] -- COMMAND [ARG...]
#
# COMMAND runs as root in DIR (default: the current directory, same path as on the host),
# with $VMTEST_OUT pointing at a directory that is writable and shared with the host
# (build/vmtest/runs/run.*; kept with --keep or when the run fails). VMTEST_* variables of
# the caller's environment are passed through. Exit status: COMMAND's own; 124 when the
# time limit (default 600 s) killed the VM; 125 when the VM could not boot or run the
# command (with the console tail on stderr). It never skips: a missing kernel, QEMU or
# busybox is installed with scripts/install-deps.sh, and if that fails the run fails.
#
# Uses vng (virtme-ng) when installed (VMTEST_NO_VNG=1 to bypass), else qemu-system-x86_64
# -accel tcg (VMTEST_ACCEL to override; KVM does not work on these hosts).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
build=${BUILD:-build}
case $build in /*) ;; *) build=$repo/$build ;; esac
vmdir=$build/vmtest

timeout=600 kernel= cwd=$PWD mem=1G cpus=2 keep=0 console=0 quiet=0
usage() {
	sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
	exit 2
}
while [ $# -gt 0 ]; do
	case $1 in
	--timeout) timeout=$2; shift 2 ;;
	--kernel) kernel=$2; shift 2 ;;
	--cwd) cwd=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--cpus) cpus=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	--console) console=1; shift ;;
	--quiet) quiet=1; shift ;;
	--) shift; break ;;
	-h|--help) usage ;;
	*) echo "vmtest: unknown option $1" >&2; usage ;;
	esac
done
[ $# -gt 0 ] || usage
case $timeout in ''|*[!0-9]*) echo "vmtest: --timeout wants seconds" >&2; exit 2 ;; esac
cwd=$(cd "$cwd" && pwd)

fail() { echo "vmtest: ERROR: $*" >&2; exit 125; }
info() { [ "$quiet" = 1 ] || echo "vmtest: $*" >&2; }

# --- what the VM needs, installed if missing ------------------------------------------
find_kernel() {
	local v best=
	for v in /boot/vmlinuz-*; do
		[ -f "$v" ] || continue
		local k=${v#/boot/vmlinuz-}
		[ -f "/lib/modules/$k/modules.dep" ] || continue
		grep -q '/tls\.ko' "/lib/modules/$k/modules.dep" ||
			grep -q '/tls\.ko' "/lib/modules/$k/modules.builtin" 2>/dev/null || continue
		best=$v
	done
	[ -n "$best" ] && echo "$best"
}
have_deps() {
	command -v qemu-system-x86_64 >/dev/null && [ -x /bin/busybox ] &&
		! readelf -l /bin/busybox 2>/dev/null | grep -q 'program interpreter' &&
		{ [ -n "$kernel" ] || [ -n "$(find_kernel)" ]; }
}
if ! have_deps; then
	info "installing the VM's dependencies (scripts/install-deps.sh)"
	"$repo/scripts/install-deps.sh" >&2 || fail "scripts/install-deps.sh failed"
	have_deps || fail "qemu-system-x86_64, busybox-static or a kernel with tls.ko is still missing"
fi
[ -n "$kernel" ] || kernel=$(find_kernel)
[ -r "$kernel" ] || fail "cannot read kernel $kernel"
kver=${kernel##*/vmlinuz-}
[ -d "/lib/modules/$kver" ] || fail "no /lib/modules/$kver for $kernel"

# --- the run directory, shared read-write with the VM ----------------------------------
mkdir -p "$vmdir/runs"
out=$(mktemp -d "$vmdir/runs/run.XXXXXX")
chmod 0755 "$out"
{
	echo "cd $(printf '%q' "$cwd") || exit 126"
	while IFS='=' read -r name _; do
		case $name in VMTEST_OUT|VMTEST) continue ;; VMTEST_*) ;; *) continue ;; esac
		echo "export $name=$(printf '%q' "${!name}")"
	done < <(env)
	printf 'exec'
	printf ' %q' "$@"
	echo
} > "$out/cmd.sh"
{
	echo "VMTEST_OUTDIR=$(printf '%q' "$out")"
	echo "VMTEST_TMPFS_SIZE=${VMTEST_TMPFS_SIZE:-60%}"
} > "$out/vmtest.env"
: > "$out/stdout"
: > "$out/stderr"

qemu_pid= tails=()
cleanup() {
	[ -n "$qemu_pid" ] && kill -KILL "$qemu_pid" 2>/dev/null || true
	for t in "${tails[@]}"; do kill "$t" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'cleanup; echo "vmtest: interrupted" >&2; exit 130' INT TERM

t0=$(date +%s.%N)
if command -v vng >/dev/null && [ "${VMTEST_NO_VNG:-0}" != 1 ]; then
	# virtme-ng shares the host root copy-on-write itself; the result directory is a
	# read-write share, and the wrapper records the status like our own init does.
	mode=vng
	cat > "$out/vng-cmd.sh" <<-VNG
	ip link set lo up 2>/dev/null
	mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
	cut -d' ' -f1 /proc/uptime > $(printf '%q' "$out")/started
	VMTEST=1 VMTEST_OUT=$(printf '%q' "$out") bash $(printf '%q' "$out/cmd.sh") </dev/null \
		>$(printf '%q' "$out")/stdout 2>$(printf '%q' "$out")/stderr
	echo \$? > $(printf '%q' "$out")/rc
	VNG
	vng --run "$kernel" --disable-kvm --disable-microvm --cpus "$cpus" --memory "$mem" \
		--rwdir "$out" --exec "bash $(printf '%q' "$out/vng-cmd.sh")" \
		> "$out/console.log" 2>&1 &
	qemu_pid=$!
else
	mode=qemu
	initrd=$vmdir/initramfs-$kver.cpio.gz
	"$here/mkinitramfs.sh" "$kver" "$initrd" || fail "cannot build the initramfs"
	# Boot the uncompressed kernel through its PVH entry when we can: no firmware boot
	# loader and no xz decompression under emulation (VMTEST_PVH=0 to boot vmlinuz).
	boot_image=$kernel
	if [ "${VMTEST_PVH:-1}" = 1 ]; then
		vmlinux=$vmdir/vmlinux-$kver
		if [ ! -s "$vmlinux" ] || [ "$vmlinux" -ot "$kernel" ]; then
			"$here/extract-vmlinux.py" "$kernel" "$vmlinux" ||
				info "cannot extract vmlinux from $kernel; booting it compressed"
		fi
		[ -s "$vmlinux" ] && boot_image=$vmlinux
	fi
	serial=(-serial "file:$out/console.log")
	[ "$console" = 1 ] && serial=(-serial stdio)
	qemu-system-x86_64 -name vmtest -accel "${VMTEST_ACCEL:-tcg}" -cpu max \
		-smp "$cpus" -m "$mem" -nodefaults -no-user-config -display none -vga none \
		-no-reboot "${serial[@]}" \
		-kernel "$boot_image" -initrd "$initrd" \
		-append "console=ttyS0 quiet loglevel=4 panic=-1 oops=panic mitigations=off random.trust_cpu=on tsc=reliable no_timer_check 8250.nr_uarts=1 ${VMTEST_APPEND:-}" \
		-virtfs local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap \
		-virtfs "local,path=$out,mount_tag=out,security_model=none,multidevs=remap" \
		< /dev/null > "$out/qemu.log" 2>&1 &
	qemu_pid=$!
fi
info "$mode: kernel $kver, $cpus CPUs, $mem, limit ${timeout}s: $*"

# Stream the command's output while it runs.
tail -n +1 -F --pid="$qemu_pid" "$out/stdout" 2>/dev/null &
tails+=($!)
tail -n +1 -F --pid="$qemu_pid" "$out/stderr" >&2 2>/dev/null &
tails+=($!)

# Hard time limit: the VM is killed, whatever runs in it.
timed_out=0
deadline=$(( $(date +%s) + timeout ))
t_started= t_done=
while kill -0 "$qemu_pid" 2>/dev/null; do
	[ -z "$t_started" ] && [ -f "$out/started" ] && t_started=$(date +%s.%N)
	[ -z "$t_done" ] && [ -f "$out/rc" ] && t_done=$(date +%s.%N)
	if [ "$(date +%s)" -ge "$deadline" ]; then
		kill -KILL "$qemu_pid" 2>/dev/null || true
		timed_out=1
		break
	fi
	sleep 0.2
done
wait "$qemu_pid" 2>/dev/null && qrc=0 || qrc=$?
qemu_pid=
for t in "${tails[@]}"; do wait "$t" 2>/dev/null || true; done
tails=()
t1=$(date +%s.%N)
total=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')

console_tail() {
	echo "vmtest: --- last console lines ($out/console.log) ---" >&2
	tail -n 40 "$out/console.log" >&2 2>/dev/null || true
	[ -s "$out/qemu.log" ] && { echo "vmtest: --- qemu ---" >&2; cat "$out/qemu.log" >&2; }
	echo "vmtest: ---" >&2
}

if [ "$timed_out" = 1 ]; then
	echo "vmtest: ERROR: time limit of ${timeout}s reached, VM killed: $*" >&2
	[ -f "$out/started" ] || console_tail
	echo "vmtest: run directory kept: $out" >&2
	exit 124
fi
if [ -f "$out/fatal" ]; then
	echo "vmtest: ERROR: the VM failed before running the command: $(cat "$out/fatal")" >&2
	console_tail
	echo "vmtest: run directory kept: $out" >&2
	exit 125
fi
if [ ! -f "$out/rc" ]; then
	if [ -f "$out/started" ]; then
		echo "vmtest: ERROR: the VM stopped before the command finished (qemu status $qrc)" >&2
	else
		echo "vmtest: ERROR: the VM did not boot (qemu status $qrc)" >&2
	fi
	console_tail
	echo "vmtest: run directory kept: $out" >&2
	exit 125
fi
rc=$(cat "$out/rc")
started=$(cat "$out/started" 2>/dev/null || echo '?')
finished=$(cat "$out/finished" 2>/dev/null || echo '?')
boot=$(awk -v a="$t0" -v b="${t_started:-$t1}" 'BEGIN{printf "%.1f", b-a}')
down=$(awk -v a="${t_done:-$t1}" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
info "exit $rc; command started ${boot}s after launch (guest uptime ${started}s), ran $(awk -v a="$started" -v b="$finished" 'BEGIN{printf "%.1f", b-a}')s; VM exit ${down}s after; whole run ${total}s"
if [ "$keep" = 1 ] || [ "$rc" != 0 ]; then
	info "run directory kept: $out"
else
	rm -rf "$out"
fi
exit "$rc"
