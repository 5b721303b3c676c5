#!/usr/bin/env bash
# XDP deny-list: a deny-listed source cannot even open a TCP connection to the listener (its
# SYNs die in XDP: the connect times out, no RST), xdp.packets.drop_deny and the entry's own hit
# counter in the pinned deny_v4 trie rise, a prefix that does not cover the source changes
# nothing, a covering /24 blocks as the /32 did, and `deny del` restores service. Non-listener
# traffic from the denied source (a SYN to a closed port) still passes: the program acts on listener ports only.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_cmd bpftool
topo_basic
pki_setup
upstream_start
config_render "$DAEMON_CONFIG" \
	"{\"bpf\": {\"mode\": \"native\", \"interface\": \"$GW_IF\", \"pin_dir\": \"$PIN_DIR\"}}"
daemon_start
ns_exec "$GW_NS" ip link show dev "$GW_IF" | grep -q 'prog/xdp' ||
	skip "no XDP program on $GW_IF (native XDP on veth unavailable?)"

# xdp_stat REASON: xdp.packets.REASON from `psd2edgectl stats --json` (0 when absent)
xdp_stat() {
	ctl stats --json >"$TEST_DIR/stats.json" || { echo -1; return; }
	json_get "$TEST_DIR/stats.json" "xdp.packets.$1" || echo 0
}

# tcp_connect SRC_NS TIMEOUT [PORT]: "ok", "refused" or "timeout" for a plain TCP connect to
# the listener (no TLS), so that a drop in XDP (timeout) is told apart from a RST (refused).
tcp_connect() {
	ns_exec "$1" python3 - "$GW_IP" "${3:-$GW_PORT}" "$2" <<'EOF'
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("ok")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("error %s" % e)
EOF
}

# deny_hits CIDR_ADDR: packets counted in the deny_v4 entry whose address is CIDR_ADDR
deny_hits() {
	bpftool -j map dump pinned "$PIN_DIR/deny_v4" 2>/dev/null | python3 -c '
import json, sys
want = [int(x) for x in sys.argv[1].split(".")]
n = 0
for e in json.load(sys.stdin):
    f = e.get("formatted", e)
    k, v = f.get("key"), f.get("value")
    if isinstance(k, dict) and [int(x) for x in k["addr"]] == want:
        n += v["packets"]
print(n)' "$1"
}

ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null
assert_status 200 "served before any deny" tpp1 "$GW_URL/x?client_id=tpp1"

# --- a prefix that does not cover the source changes nothing --------------------------------
ctl deny add 10.77.0.128/25 >/dev/null
assert_eq 0 $? "deny add 10.77.0.128/25"
assert_status 200 "a deny of another prefix does not block the TPP" tpp1 "$GW_URL/x?client_id=tpp1"
ctl deny del 10.77.0.128/25 >/dev/null

# --- /32 of the source ------------------------------------------------------------------------
before=$(xdp_stat drop_deny)
ctl deny add "$TPP_IP/32" >/dev/null
assert_eq 0 $? "deny add $TPP_IP/32"
assert_contains "$(ctl deny list)" "$TPP_IP/32" "deny list shows the entry"
assert_contains "$(bpftool map dump pinned "$PIN_DIR/deny_v4" 2>&1)" "prefixlen" \
	"the entry is in the pinned deny_v4 trie"

assert_eq timeout "$(tcp_connect "$TPP_NS" 1.5)" "a TCP connect from the denied source times out (SYN dropped, no RST)"
CURL_MAX_TIME=3 assert_status 000 "an HTTPS request from the denied source gets nothing" \
	tpp1 "$GW_URL/x?client_id=tpp1"
after=$(xdp_stat drop_deny)
assert_true "xdp.packets.drop_deny rose ($before -> $after)" test "$after" -gt "$before"
hits=$(deny_hits "$TPP_IP")
assert_true "the deny_v4 entry counted its hits ($hits)" test "${hits:-0}" -gt 0
assert_eq refused "$(tcp_connect "$TPP_NS" 2 8444)" \
	"a non-listener port still answers the denied source (RST: XDP let the SYN through)"

ctl deny del "$TPP_IP/32" >/dev/null
assert_eq 0 $? "deny del $TPP_IP/32"
assert_eq ok "$(tcp_connect "$TPP_NS" 2)" "TCP connect works again after deny del"
assert_status 200 "served again after deny del" tpp1 "$GW_URL/x?client_id=tpp1"

# --- a covering /24 ---------------------------------------------------------------------------
before=$(xdp_stat drop_deny)
ctl deny add 10.77.0.0/24 >/dev/null
assert_eq 0 $? "deny add 10.77.0.0/24"
assert_eq timeout "$(tcp_connect "$TPP_NS" 1.5)" "a covering /24 blocks the source too"
after=$(xdp_stat drop_deny)
assert_true "drop_deny rose under the /24 ($before -> $after)" test "$after" -gt "$before"
ctl deny del 10.77.0.0/24 >/dev/null
assert_status 200 "served after the /24 is removed" tpp1 "$GW_URL/x?client_id=tpp1"
assert_eq "" "$(ctl deny list)" "deny list empty at the end"

finish
