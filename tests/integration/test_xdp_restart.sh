#!/usr/bin/env bash
# XDP across a restart of psd2edged: SIGTERM leaves the program attached and the maps pinned, so
# the deny-list is enforced while no daemon runs and while the next one starts (a background
# sampler checks every few ms that the interface never loses its XDP program); the next daemon
# reuses the very same pinned maps (same map ids), keeps the deny entry and the revoked client,
# purges the flows of connections that died with the old process, and serves again. Finally
# `psd2edged --detach --config` removes the program and the pins, and the formerly denied
# source's SYNs reach the TCP stack again.
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
MAPS="clients client_stats flows flows_v6 deny_v4 deny_v6 deny_index src_rate src_rate_v6 flow_index flow_index_v6 stats"
TPP_IP2=10.77.0.3
ip -n "$(ns_name "$TPP_NS")" addr add "$TPP_IP2/24" dev "$TPP_IF" || die "cannot add $TPP_IP2"

xdp_attached() { ns_exec "$GW_NS" ip link show dev "$GW_IF" | grep -q 'prog/xdp'; }

# map_ids: "name:id ..." of every pinned map (empty for a missing pin)
map_ids() {
	local m id
	for m in $MAPS; do
		id=$(bpftool -j map show pinned "$PIN_DIR/$m" 2>/dev/null |
			python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' 2>/dev/null)
		printf '%s:%s ' "$m" "$id"
	done
}

# deny_hits ADDR: packets counted by the deny_v4 entry for ADDR (read from the pin, no daemon)
deny_hits() {
	bpftool -j map dump pinned "$PIN_DIR/deny_v4" 2>/dev/null | python3 -c '
import json, sys
n = 0
for e in json.load(sys.stdin):
    f = e.get("formatted", e)
    if [int(x) for x in f["key"]["addr"]] == [int(x) for x in sys.argv[1].split(".")]:
        n += f["value"]["packets"]
print(n)' "$1"
}

flows_total() {
	bpftool -j map dump pinned "$PIN_DIR/flows" 2>/dev/null |
		python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'
}

client_state() { # CLIENT_ID
	bpftool -j map dump pinned "$PIN_DIR/clients" 2>/dev/null | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    f = e.get("formatted", e)
    if f["value"]["client_id"] == sys.argv[1]:
        print(f["value"]["state"])
        break' "$1"
}

# tcp_connect SRC TIMEOUT: "ok", "refused" or "timeout" for a TCP connect from SRC (tpp ns)
tcp_connect() {
	ns_exec "$TPP_NS" python3 - "$1" "$GW_IP" "$GW_PORT" "$2" <<'EOF'
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[4]))
s.bind((sys.argv[1], 0))
try:
    s.connect((sys.argv[2], int(sys.argv[3])))
    print("ok")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("error %s" % e)
EOF
}

# --- state before the restart ---------------------------------------------------------------
for c in tpp1 tpp2; do
	ctl bind "$c" "$PKI/$c.pem" >/dev/null
	assert_eq 0 $? "bind $c"
done
ctl revoke tpp2 >/dev/null
assert_eq 0 $? "revoke tpp2"
ctl deny add "$TPP_IP2/32" >/dev/null
assert_eq 0 $? "deny add $TPP_IP2/32"
assert_eq timeout "$(tcp_connect "$TPP_IP2" 1)" "the denied source is dropped before the restart"
assert_status 200 "tpp1 served before the restart" tpp1 "$GW_URL/x?client_id=tpp1"

# A held keep-alive connection: its flow is in the map when the daemon goes down.
tlsclient tpp1 --path "/hold?client_id=tpp1" --ready-file "$TEST_DIR/hold.ready" --max 30 hold \
	>"$TEST_DIR/hold.out" 2>"$TEST_DIR/hold.err" &
hold_pid=$!
wait_until 10 test -f "$TEST_DIR/hold.ready" || fail "held connection not established: $(cat "$TEST_DIR/hold.err")"
assert_true "the held connection's flow is in the flows map" test "$(flows_total)" -ge 1

ids_before=$(map_ids)
prog_before=$(ns_exec "$GW_NS" ip -j link show dev "$GW_IF" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["xdp"]["prog"]["id"])')

# Sampler: every ~5 ms, "1" when the program is attached, "0" when not.
(
	while [ ! -e "$TEST_DIR/sampler.stop" ]; do
		if xdp_attached; then echo 1; else echo 0; fi
		sleep 0.005
	done
) >"$TEST_DIR/samples" 2>/dev/null &
sampler_pid=$!
LIB_PIDS+=("$sampler_pid")

# --- SIGTERM: nothing runs, enforcement stays ------------------------------------------------
daemon_stop
assert_eq 0 $? "psd2edged stopped cleanly on SIGTERM"
wait "$hold_pid" 2>/dev/null
assert_true "program still attached with no daemon running (ip link shows prog/xdp)" xdp_attached
for m in $MAPS; do
	assert_true "map $m still pinned (bpftool map show pinned)" \
		bpftool map show pinned "$PIN_DIR/$m" >/dev/null
done
hits0=$(deny_hits "$TPP_IP2")
assert_eq timeout "$(tcp_connect "$TPP_IP2" 1)" "the denied source is still dropped with no daemon"
hits1=$(deny_hits "$TPP_IP2")
assert_true "the deny entry counted those drops ($hits0 -> $hits1)" test "$hits1" -gt "$hits0"
assert_eq refused "$(tcp_connect "$TPP_IP" 1)" "an allowed source reaches the stack (RST: no listener)"

# --- start again: during and after -----------------------------------------------------------
ids_dying=$(map_ids)
(
	# While the new daemon starts: the denied source keeps being dropped.
	for _ in 1 2 3; do tcp_connect "$TPP_IP2" 0.5; done >"$TEST_DIR/during.out"
) &
during_pid=$!
daemon_start
wait "$during_pid"
assert_eq "" "$(grep -v '^timeout$' "$TEST_DIR/during.out")" \
	"the denied source is dropped while the daemon starts ($(tr '\n' ' ' <"$TEST_DIR/during.out"))"
touch "$TEST_DIR/sampler.stop"
wait "$sampler_pid"
n=$(wc -l <"$TEST_DIR/samples")
gaps=$(grep -c '^0$' "$TEST_DIR/samples")
assert_eq 0 "$gaps" "the XDP program stayed attached across the restart ($n samples)"
assert_true "enough samples taken ($n)" test "$n" -ge 10

assert_eq "$ids_before" "$(map_ids)" "the new daemon reuses the same pinned maps (ids)"
assert_eq "$ids_before" "$ids_dying" "the maps were the same while no daemon ran"
prog_after=$(ns_exec "$GW_NS" ip -j link show dev "$GW_IF" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["xdp"]["prog"]["id"])')
note "program id $prog_before before, $prog_after after the restart"
assert_true "program attached after the restart" xdp_attached
assert_eq 0 "$(flows_total)" "flows of the dead process were purged at start"
assert_eq PSD2_CLIENT_REVOKED "$(client_state tpp2)" "tpp2 is still revoked in the clients map"
assert_eq PSD2_CLIENT_ACTIVE "$(client_state tpp1)" "tpp1 is still active in the clients map"
assert_contains "$(ctl deny list)" "$TPP_IP2/32" "the deny entry survived the restart"
hits1=$(deny_hits "$TPP_IP2")
assert_eq timeout "$(tcp_connect "$TPP_IP2" 1)" "the denied source is dropped after the restart"
hits2=$(deny_hits "$TPP_IP2")
assert_true "the deny entry kept its counter and counts on ($hits1 -> $hits2)" test "$hits2" -gt "$hits1"
assert_status 200 "tpp1 served after the restart" tpp1 "$GW_URL/x?client_id=tpp1"
assert_status 401 "tpp2 still refused after the restart" tpp2 "$GW_URL/x?client_id=tpp2"

# --- stop, then --detach removes program and pins --------------------------------------------
daemon_stop
assert_eq 0 $? "psd2edged stopped cleanly"
ns_exec "$GW_NS" "$PSD2EDGED" --detach --config "$DAEMON_CONFIG" >"$TEST_DIR/detach.out" 2>&1
assert_eq 0 $? "psd2edged --detach --config ($(cat "$TEST_DIR/detach.out"))"
assert_false "no XDP program on $GW_IF after --detach" xdp_attached
for m in $MAPS; do
	assert_false "pin $m removed by --detach" test -e "$PIN_DIR/$m"
done
assert_eq refused "$(tcp_connect "$TPP_IP2" 1)" "the formerly denied source reaches the stack after --detach"

finish
