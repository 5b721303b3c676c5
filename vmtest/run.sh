#!/usr/bin/env bash
# vmtest/run.sh: run one command inside a VM booted with Debian's packaged kernel (which
# has kTLS as a module), with the host root shared read-only under a tmpfs overlay, and
# return the command's stdout, stderr and exit status.
#
#   vmtest/run.sh [--timeout SEC] [--kernel VMLINUZ] [--cwd DIR] [--mem SIZE] [--cpus N]
#                 [--boot-timeout SEC] [--hang SEC] [--retry N]
#                 [--keep] [--console] [--quiet] -- COMMAND [ARG...]
#
# COMMAND runs as root in DIR (default: the current directory, same path as on the host),
# with $VMTEST_OUT pointing at a directory that is writable and shared with the host
# (build/vmtest/runs/run.*; kept with --keep or when the run fails). VMTEST_* variables of
# the caller's environment are passed through. Exit status: COMMAND's own; 124 when the
# time limit (--timeout, default 600 s) killed the VM; 125 when the VM could not boot or
# run the command, or had not started it --boot-timeout seconds after launch (default
# 120); 123 when the guest stopped making progress: its init writes a heartbeat into the
# result share every 2 s, and none for --hang seconds (default 90; 0: off) means a stuck
# guest kernel (soft lockup, lost IPI under TCG), not a slow test. On 123/125 the console
# tail and any lockup/stall/panic lines are printed. --retry N boots a fresh VM up to N
# more times after a 123 or 125 (never after 124 or the command's own failure) and says so.
# It never skips: a missing kernel, QEMU or busybox is installed with
# scripts/install-deps.sh, and if that fails the run fails.
#
# Kernel command line: quiet, no lockup watchdogs (nowatchdog: under TCG on a loaded host
# they fire spuriously and their reports crawl through the emulated UART), and no crypto
# self-tests (cryptomgr.notests=1: the aesni/gcm self-tests ran in cryptomgr_test threads
# that, overlapping the boot-time TSC clocksource switch (stop_machine), were seen to hang a
# 2-vCPU guest on a busy 2-core host). VMTEST_APPEND adds to it, VMTEST_CMDLINE replaces it.
#
# Uses vng (virtme-ng) when installed (VMTEST_NO_VNG=1 to bypass), else qemu-system-x86_64
# -accel tcg (VMTEST_ACCEL to override; KVM does not work on these hosts).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
build=${BUILD:-build}
case $build in /*) ;; *) build=$repo/$build ;; esac
vmdir=$build/vmtest

timeout=600 kernel= cwd=$PWD mem=1G cpus=${VMTEST_CPUS:-2} keep=0 console=0 quiet=0
boot_timeout=${VMTEST_BOOT_TIMEOUT:-120} hang=${VMTEST_HANG_TIMEOUT:-90} retry=0
orig_args=("$@")
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
	--boot-timeout) boot_timeout=$2; shift 2 ;;
	--hang) hang=$2; shift 2 ;;
	--retry) retry=$2; shift 2 ;;
	--keep) keep=1; shift ;;
	--console) console=1; shift ;;
	--quiet) quiet=1; shift ;;
	--) shift; break ;;
	-h|--help) usage ;;
	*) echo "vmtest: unknown option $1" >&2; usage ;;
	esac
done
[ $# -gt 0 ] || usage
for v in "$timeout" "$boot_timeout" "$hang" "$retry"; do
	case $v in ''|*[!0-9]*) echo "vmtest: --timeout, --boot-timeout, --hang and --retry want numbers" >&2; exit 2 ;; esac
done
cwd=$(cd "$cwd" && pwd)

fail() { echo "vmtest: ERROR: $*" >&2; exit 125; }
info() { [ "$quiet" = 1 ] || echo "vmtest: $*" >&2; }

# --retry: this script runs each attempt as a child (VMTEST_ATTEMPT set) and retries the
# failures that are the VM's, not the command's.
if [ "$retry" -gt 0 ] && [ -z "${VMTEST_ATTEMPT:-}" ]; then
	attempt=1
	while :; do
		rc=0
		VMTEST_ATTEMPT=$attempt "$0" "${orig_args[@]}" || rc=$?
		case $rc in 123|125) ;; *) exit "$rc" ;; esac
		if [ "$attempt" -gt "$retry" ]; then
			echo "vmtest: ERROR: the VM failed (status $rc) on all $attempt attempts: $*" >&2
			exit "$rc"
		fi
		echo "vmtest: RETRY: attempt $attempt failed with status $rc ($( [ "$rc" = 123 ] && echo 'guest hung' || echo 'boot failure')); booting a fresh VM (attempt $((attempt + 1)) of $((retry + 1)))" >&2
		attempt=$((attempt + 1))
	done
fi

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
	echo "VMTEST_REPO=$(printf '%q' "$repo")"
	echo "VMTEST_CWD=$(printf '%q' "$cwd")"
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
	( while sleep 2; do cut -d' ' -f1 /proc/uptime > $(printf '%q' "$out")/heartbeat; done ) &
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
		-append "${VMTEST_CMDLINE:-console=ttyS0 quiet loglevel=4 panic=-1 oops=panic mitigations=off random.trust_cpu=on tsc=reliable no_timer_check 8250.nr_uarts=1 nowatchdog cryptomgr.notests=1} ${VMTEST_APPEND:-}" \
		-virtfs local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap \
		-virtfs "local,path=$out,mount_tag=out,security_model=none,multidevs=remap" \
		< /dev/null > "$out/qemu.log" 2>&1 &
	qemu_pid=$!
fi
info "$mode: kernel $kver, $cpus CPUs, $mem, limit ${timeout}s${VMTEST_ATTEMPT:+, attempt $VMTEST_ATTEMPT}: $*"

# Stream the command's output while it runs.
tail -n +1 -F --pid="$qemu_pid" "$out/stdout" 2>/dev/null &
tails+=($!)
tail -n +1 -F --pid="$qemu_pid" "$out/stderr" >&2 2>/dev/null &
tails+=($!)

# Hard time limit: the VM is killed, whatever runs in it. Also killed: a VM that has not
# started the command boot_timeout s after launch, or whose heartbeat stopped for hang s.
timed_out=0 boot_hung=0 hung=0
launch=$(date +%s)
deadline=$(( launch + timeout ))
t_started= t_done= beat= beat_at=$launch
while kill -0 "$qemu_pid" 2>/dev/null; do
	now=$(date +%s)
	[ -z "$t_started" ] && [ -f "$out/started" ] && { t_started=$(date +%s.%N); beat_at=$now; }
	[ -z "$t_done" ] && [ -f "$out/rc" ] && t_done=$(date +%s.%N)
	if [ "$now" -ge "$deadline" ]; then
		kill -KILL "$qemu_pid" 2>/dev/null || true
		timed_out=1
		break
	fi
	if [ -z "$t_started" ] && [ "$boot_timeout" -gt 0 ] && [ "$now" -ge $((launch + boot_timeout)) ]; then
		kill -KILL "$qemu_pid" 2>/dev/null || true
		boot_hung=1
		break
	fi
	if [ -n "$t_started" ] && [ -z "$t_done" ] && [ "$hang" -gt 0 ]; then
		b=$(cat "$out/heartbeat" 2>/dev/null || true)
		if [ -n "$b" ] && [ "$b" != "$beat" ]; then
			beat=$b beat_at=$now
		elif [ "$now" -ge $((beat_at + hang)) ]; then
			kill -KILL "$qemu_pid" 2>/dev/null || true
			hung=1
			break
		fi
	fi
	sleep 0.2
done
wait "$qemu_pid" 2>/dev/null && qrc=0 || qrc=$?
qemu_pid=
for t in "${tails[@]}"; do wait "$t" 2>/dev/null || true; done
tails=()
t1=$(date +%s.%N)
total=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')

kernel_reports() { # lockups, stalls, panics the guest kernel printed on the console
	local k
	k=$(grep -aE 'soft lockup|hard LOCKUP|rcu.*(stall|self-detected)|blocked for more than|Kernel panic|BUG:|Oops' \
		"$out/console.log" 2>/dev/null | head -n 12 || true)
	[ -z "$k" ] || { echo "vmtest: --- the guest kernel reported ---" >&2; echo "$k" >&2; }
}
console_tail() {
	kernel_reports
	echo "vmtest: --- last console lines ($out/console.log) ---" >&2
	tail -n 40 "$out/console.log" >&2 2>/dev/null || true
	[ -s "$out/qemu.log" ] && { echo "vmtest: --- qemu ---" >&2; cat "$out/qemu.log" >&2; }
	echo "vmtest: ---" >&2
}

if [ "$boot_hung" = 1 ]; then
	echo "vmtest: ERROR: the VM had not started the command ${boot_timeout}s after launch (boot hung), VM killed: $*" >&2
	[ -f "$out/boot-trace" ] && { echo "vmtest: boot trace (guest uptime):" >&2; sed 's/^/  /' "$out/boot-trace" >&2; }
	console_tail
	echo "vmtest: run directory kept: $out" >&2
	exit 125
fi
if [ "$hung" = 1 ]; then
	echo "vmtest: ERROR: the guest stopped: no heartbeat for ${hang}s (last guest uptime ${beat:-none}), $(awk -v a="$t_started" -v b="$t1" 'BEGIN{printf "%.0f", b-a}')s into the command; VM killed: $*" >&2
	console_tail
	echo "vmtest: run directory kept: $out" >&2
	exit 123
fi
if [ "$timed_out" = 1 ]; then
	echo "vmtest: ERROR: time limit of ${timeout}s reached, VM killed: $*" >&2
	if [ -f "$out/started" ]; then kernel_reports; else console_tail; fi
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
