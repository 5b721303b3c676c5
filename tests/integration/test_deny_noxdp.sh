#!/usr/bin/env bash
# The deny-list holds without XDP: the daemon checks every accepted peer itself. With bpf.mode
# off, a served TPP whose address is then denied gets no TLS handshake on a new connection
# (closed at accept; connections_refused_deny counts it, handshakes_ok does not move), and
# `deny del` restores it; the same when the address is given IPv4-mapped (::ffff:a.b.c.d,
# stored and listed as the IPv4 address, in the audit trail too; a mapped prefix shorter than
# /96 is refused with a reason); the list is loaded from the registry at start. With XDP
# attached to the TPP-facing veth, a source reaching the listener through another interface of
# the gateway (a second veth, and the loopback), where no XDP program runs, is refused too and
# XDP's drop_deny does not move: the daemon's check is what refused it.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

SIDE_NS=side             # a second network on the gateway, without XDP
SIDE_GW_IF=veth-gw2
SIDE_IF=veth-side
SIDE_GW_IP=10.77.2.1
SIDE_IP=10.77.2.2

topo_basic
pki_setup
upstream_start
config_render "$DAEMON_CONFIG"
daemon_start

# figure PATH: a figure of `psd2edgectl stats --json` ("connections_refused_deny",
# "xdp.packets.drop_deny"); 0 when absent
figure() {
	ctl stats --json >"$TEST_DIR/stats.json" || { echo -1; return; }
	json_get "$TEST_DIR/stats.json" "$1" || echo 0
}
assert_eq off "$(figure xdp.mode)" "bpf.mode is off: no XDP anywhere"

# refused_at_accept DESC CURL_ARGS...: the request from $TPP_NS (to $GW_IP) gets no TLS
# handshake, connections_refused_deny rises and handshakes_ok does not. The daemon resets the
# connection right after accept: curl sees that while connecting (exit 7) or at its
# ClientHello (35, 56).
refused_at_accept() {
	local desc=$1 refused ok
	shift
	refused=$(figure connections_refused_deny)
	ok=$(figure handshakes_ok)
	gw_request tpp1 "$@"
	case $LAST_CODE/$LAST_RC in
	000/7 | 000/35 | 000/56) pass "$desc: no TLS handshake" ;;
	*) fail "$desc: no TLS handshake: got curl exit $LAST_RC, HTTP $LAST_CODE ($(head -c 200 "$TEST_DIR/curl.err"))" ;;
	esac
	assert_true "$desc: connections_refused_deny rose" \
		test "$(figure connections_refused_deny)" -gt "$refused"
	assert_eq "$ok" "$(figure handshakes_ok)" "$desc: handshakes_ok did not move"
}

URL="$GW_URL/x?client_id=tpp1"
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null
assert_status 200 "served before any deny (bpf.mode off)" tpp1 "$URL"

# --- the address as such --------------------------------------------------------------------
ctl_capture deny add "$TPP_IP"
assert_eq 0 "$CTL_RC" "deny add $TPP_IP"
refused_at_accept "denied source, bpf.mode off" "$URL"
assert_contains "$(cat "$DAEMON_LOG")" \
	"refused a connection from $TPP_IP: in the deny-list as $TPP_IP/32" "the refusal is logged"
ctl_capture deny del "$TPP_IP"
assert_eq 0 "$CTL_RC" "deny del $TPP_IP"
assert_status 200 "served again after deny del" tpp1 "$URL"

# --- the IPv4-mapped form -------------------------------------------------------------------
ctl_capture deny add "::ffff:$TPP_IP"
assert_eq 0 "$CTL_RC" "deny add ::ffff:$TPP_IP"
assert_eq "added $TPP_IP/32 to the deny-list" "$CTL_OUT" "stored as the IPv4 address"
assert_eq "$TPP_IP/32" "$(ctl deny list)" "deny list shows the IPv4 address"
ctl audit --json >"$TEST_DIR/audit.json"
assert_eq deny-add "$(json_get "$TEST_DIR/audit.json" entries.0.action)" "audit: deny-add"
assert_eq "$TPP_IP/32" "$(json_get "$TEST_DIR/audit.json" entries.0.detail)" \
	"audit: the IPv4 address"
refused_at_accept "denied as ::ffff:$TPP_IP" "$URL"
ctl_capture deny add "::ffff:$TPP_IP/95"
assert_eq 1 "$CTL_RC" "a mapped prefix shorter than /96 is refused"
assert_contains "$CTL_ERR" "needs N of 96 or more" "with the reason"
ctl_capture deny del "::ffff:$TPP_IP"
assert_eq "removed $TPP_IP/32 from the deny-list" "$CTL_OUT" "deny del takes the mapped form"
assert_status 200 "served again after deny del ::ffff:$TPP_IP" tpp1 "$URL"

# --- loaded from the registry at start ----------------------------------------------------------
ctl deny add "10.77.0.0/24" >/dev/null
daemon_stop || fail "daemon stopped cleanly"
daemon_start
refused_at_accept "a /24 denied before the restart" "$URL"
ctl deny del "10.77.0.0/24" >/dev/null
assert_status 200 "served after the /24 is removed" tpp1 "$URL"

# --- XDP on the TPP-facing veth; the listener reached through another interface ----------------
daemon_stop || fail "daemon stopped cleanly"
ns_create "$SIDE_NS"
ns_link "$GW_NS" "$SIDE_GW_IF" "$SIDE_GW_IP/24" "$SIDE_NS" "$SIDE_IF" "$SIDE_IP/24"
wait_until 5 link_up "$GW_NS" "$SIDE_GW_IF" || die "$SIDE_GW_IF has no carrier"
wait_until 5 link_up "$SIDE_NS" "$SIDE_IF" || die "$SIDE_IF has no carrier"
config_render "$DAEMON_CONFIG" \
	"{\"bpf\": {\"mode\": \"native\", \"interface\": \"$GW_IF\", \"pin_dir\": \"$PIN_DIR\"}}"
daemon_start
ns_exec "$GW_NS" ip link show dev "$GW_IF" | grep -q 'prog/xdp' ||
	skip "no XDP program on $GW_IF (native XDP on veth unavailable?)"
ns_exec "$GW_NS" ip link show dev "$SIDE_GW_IF" | grep -q 'prog/xdp' &&
	die "an XDP program on $SIDE_GW_IF: the test needs an interface without one"

# side_request CURL_ARGS...: the request from the side network, to the gateway's address there
side_request() { TPP_NS=$SIDE_NS GW_IP=$SIDE_GW_IP "$@"; }

side_request assert_status 200 "served through the interface without XDP" tpp1 "$URL"
ctl_capture deny add "$SIDE_IP"
assert_eq 0 "$CTL_RC" "deny add $SIDE_IP"
drops=$(figure xdp.packets.drop_deny)
side_request refused_at_accept "denied source through the interface without XDP" "$URL"
assert_eq "$drops" "$(figure xdp.packets.drop_deny)" \
	"XDP dropped nothing: the daemon's own check refused it"
assert_status 200 "the TPP through the XDP interface is still served" tpp1 "$URL"
ctl deny del "$SIDE_IP" >/dev/null
side_request assert_status 200 "served through the interface without XDP after deny del" \
	tpp1 "$URL"

# The gateway's loopback: no XDP either.
lo_request() { ns_exec "$GW_NS" curl -sS -o /dev/null -w '%{http_code}' --max-time 10 \
	--cacert "$PKI/bank-ca.pem" --resolve "$GW_HOST:$GW_PORT:127.0.0.1" \
	--cert "$PKI/tpp1.pem" --key "$PKI/tpp1.key" "$URL" 2>/dev/null; }
assert_eq 200 "$(lo_request)" "served through the loopback"
ctl deny add 127.0.0.0/8 >/dev/null
refused=$(figure connections_refused_deny)
assert_eq 000 "$(lo_request)" "a denied loopback source gets no response"
assert_true "connections_refused_deny rose for the loopback source" \
	test "$(figure connections_refused_deny)" -gt "$refused"
ctl deny del 127.0.0.0/8 >/dev/null
assert_eq 200 "$(lo_request)" "served through the loopback after deny del"
assert_eq "" "$(ctl deny list)" "deny list empty at the end"

finish
