#!/usr/bin/env bash
# XDP per-source new-connection rate: a source that opens TCP connections faster than its bucket
# allows is throttled in XDP (xdp.packets.drop_syn_rate rises, its bucket in the pinned src_rate
# map counts the drops, connects beyond the burst time out), while another source on the same
# link is not affected, and the throttled source is served again once its bucket has refilled.
#
# The rate comes from the configuration (bpf.src_rate.per_sec / burst). When --check-config does
# not know those keys (older config.c), the test falls back to the data plane's defaults
# (DATAPLANE_SRC_PER_SEC_DEFAULT 50/s, burst 100) and opens more connections.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_cmd bpftool
topo_basic
TPP_IP2=10.77.0.3
ip -n "$(ns_name "$TPP_NS")" addr add "$TPP_IP2/24" dev "$TPP_IF" || die "cannot add $TPP_IP2"
pki_setup
upstream_start

bpf_base="\"mode\": \"native\", \"interface\": \"$GW_IF\", \"pin_dir\": \"$PIN_DIR\""
config_render "$DAEMON_CONFIG" "{\"bpf\": {$bpf_base, \"src_rate\": {\"per_sec\": 5, \"burst\": 10}}}"
if ns_exec "$GW_NS" "$PSD2EDGED" --check-config "$DAEMON_CONFIG" >"$TEST_DIR/check.out" 2>&1; then
	RATE=5 BURST=10 FLOOD=60
	note "bpf.src_rate from the configuration: $RATE/s, burst $BURST"
else
	note "--check-config refuses bpf.src_rate ($(tail -n1 "$TEST_DIR/check.out")): using the defaults"
	config_render "$DAEMON_CONFIG" "{\"bpf\": {$bpf_base}}"
	RATE=50 BURST=100 FLOOD=300
fi
daemon_start
ns_exec "$GW_NS" ip link show dev "$GW_IF" | grep -q 'prog/xdp' ||
	skip "no XDP program on $GW_IF (native XDP on veth unavailable?)"

xdp_stat() { # REASON
	ctl stats --json >"$TEST_DIR/stats.json" || { echo -1; return; }
	json_get "$TEST_DIR/stats.json" "xdp.packets.$1" || echo 0
}

# flood SRC N WAIT: opens N TCP connections to the listener from SRC as fast as possible
# (non-blocking), waits at most WAIT seconds (less than the first SYN retransmission, 1 s) and
# prints "ESTABLISHED FAILED"; the connections are closed at exit.
flood() {
	ns_exec "$TPP_NS" python3 - "$1" "$GW_IP" "$GW_PORT" "$2" "$3" <<'EOF'
import errno, select, socket, sys, time
src, dst, port, n, wait = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
pending = {}
for _ in range(n):
    s = socket.socket()
    s.setblocking(False)
    s.bind((src, 0))
    rc = s.connect_ex((dst, port))
    if rc not in (0, errno.EINPROGRESS):
        print("connect: %s" % errno.errorcode.get(rc, rc), file=sys.stderr)
    pending[s.fileno()] = s
ok = failed = 0
deadline = time.monotonic() + wait
while pending and time.monotonic() < deadline:
    _, w, _ = select.select([], list(pending), [], max(0, deadline - time.monotonic()))
    for fd in w:
        s = pending.pop(fd)
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            ok += 1
        else:
            failed += 1
        s.close()
failed += len(pending)
print(ok, failed)
EOF
}

# bucket SRC FIELD: FIELD of SRC's bucket in the pinned src_rate map (IPv4 sources), or 0
bucket() {
	bpftool -j map dump pinned "$PIN_DIR/src_rate" 2>/dev/null | python3 -c '
import json, sys
want = [int(x) for x in sys.argv[1].split(".")]
for e in json.load(sys.stdin):
    f = e.get("formatted", e)
    if [int(x) for x in f["key"]["addr"]] == want:
        print(f["value"][sys.argv[2]])
        break
else:
    print(0)' "$1" "$2"
}

ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null
assert_status 200 "served before the flood" tpp1 "$GW_URL/x?client_id=tpp1"
sleep "$(python3 -c "print($BURST / $RATE + 0.2)")" # the request's SYN refills before the flood

before=$(xdp_stat drop_syn_rate)
read -r est failed < <(flood "$TPP_IP" "$FLOOD" 0.8)
after=$(xdp_stat drop_syn_rate)
note "flood of $FLOOD connects from $TPP_IP: $est established, $failed failed; drop_syn_rate $before -> $after"
assert_true "xdp.packets.drop_syn_rate rose ($before -> $after)" test "$after" -gt "$before"
assert_true "some connects failed ($failed of $FLOOD)" test "${failed:-0}" -gt 0
# At most the burst plus what the rate refills during the flood (generous: 1 s of rate + 2).
max_ok=$((BURST + RATE + 2))
assert_true "established connections stay within burst + rate ($est <= $max_ok)" \
	test "${est:-999}" -le "$max_ok"
assert_true "the burst itself passed ($est >= $((BURST / 2)))" test "${est:-0}" -ge "$((BURST / 2))"
dropped=$(bucket "$TPP_IP" syn_dropped)
assert_true "the source's bucket in src_rate counted the drops ($dropped)" test "${dropped:-0}" -gt 0

read -r est2 failed2 < <(flood "$TPP_IP2" 3 0.8)
assert_eq "3 0" "$est2 $failed2" "another source ($TPP_IP2) connects unthrottled"

sleep "$(python3 -c "print($BURST / $RATE + 0.3)")"
assert_status 200 "the throttled source is served again after its bucket refilled" \
	tpp1 "$GW_URL/x?client_id=tpp1"

finish
