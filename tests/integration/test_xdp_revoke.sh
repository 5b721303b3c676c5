#!/usr/bin/env bash
# XDP cuts a revoked client's established connection at once: on a keep-alive TLS connection
# that already carried one request, the client is revoked with psd2edgectl and a second request
# is sent the moment the command returns. No response may arrive within 100 ms (nor later), the
# connection is closed by the daemon afterwards, and either xdp.packets.drop_revoked counted the
# dropped packets or the flow had already left the pinned flows map. The clients map shows the
# slot revoked; another client's keep-alive connection keeps being served.
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

xdp_stat() { # REASON
	ctl stats --json >"$TEST_DIR/stats.json" || { echo -1; return; }
	json_get "$TEST_DIR/stats.json" "xdp.packets.$1" || echo 0
}

# flow_count PEER_PORT: entries of the pinned flows map whose peer port is PEER_PORT
flow_count() {
	bpftool -j map dump pinned "$PIN_DIR/flows" 2>/dev/null | python3 -c '
import json, socket, sys
n = 0
for e in json.load(sys.stdin):
    f = e.get("formatted", e)
    if socket.ntohs(int(f["key"]["sport"])) == int(sys.argv[1]):
        n += 1
print(n)' "$1"
}

# wait_until re-runs it, so the map is read again on each try.
flow_gone() { # PORT
	[ "$(flow_count "$1")" = 0 ]
}

# client_state CLIENT_ID: the state of CLIENT_ID's slot in the pinned clients map
client_state() {
	bpftool -j map dump pinned "$PIN_DIR/clients" 2>/dev/null | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    f = e.get("formatted", e)
    if f["value"]["client_id"] == sys.argv[1]:
        print(f["value"]["state"])
        break' "$1"
}

for c in tpp1 tpp2; do
	ctl bind "$c" "$PKI/$c.pem" >/dev/null
	assert_eq 0 $? "bind $c"
done

# keepalive NAME CERT CLIENT_ID [REVOKE]: a keep-alive TLS connection from the TPP namespace.
# Sends one request (must be 200), writes its local port to NAME.port, then waits for NAME.go.
# With REVOKE it runs `psd2edgectl revoke REVOKE` itself and sends the second request the moment
# the command returns; otherwise it sends the second request at once. It then records, as JSON
# in NAME.json: the revoke time, what came back within 100 ms, what came back at all, and when
# the connection was closed (at most 5 s).
keepalive() {
	ns_exec "$TPP_NS" python3 - "$GW_IP" "$GW_PORT" "$GW_HOST" "$PKI" "$2" "$3" "$TEST_DIR/$1" \
		"$PSD2EDGECTL" "$CTL_SOCKET" "${4:-}" >"$TEST_DIR/$1.out" 2>&1 <<'EOF' &
import json, os, socket, ssl, subprocess, sys, time
host, port, sni, pki, cert, cid, base, ctl, sock, revoke = sys.argv[1:11]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(os.path.join(pki, "bank-ca.pem"))
ctx.load_cert_chain(os.path.join(pki, cert + ".pem"), os.path.join(pki, cert + ".key"))
s = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=5), server_hostname=sni)
req = ("GET /ka?client_id=%s HTTP/1.1\r\nHost: %s\r\n\r\n" % (cid, sni)).encode()

def read_response(deadline):
    """Bytes received until a full response (headers + Content-Length body), EOF or deadline;
    and whether the peer closed."""
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return buf, False
        s.settimeout(left)
        try:
            d = s.recv(65536)
        except socket.timeout:
            return buf, False
        except (ssl.SSLError, OSError):
            return buf, True
        if not d:
            return buf, True
        buf += d
        head, sep, body = buf.partition(b"\r\n\r\n")
        if sep:
            cl = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    cl = int(v)
            if len(body) >= cl:
                return buf, False

s.sendall(req)
first, closed = read_response(time.monotonic() + 5)
if not first.startswith(b"HTTP/1.1 200"):
    print("first request: %r closed=%s" % (first[:80], closed), file=sys.stderr)
    sys.exit(1)
with open(base + ".port", "w") as f:
    f.write("%d\n" % s.getsockname()[1])
while not os.path.exists(base + ".go"):
    time.sleep(0.01)
res = {}
if revoke:
    rc = subprocess.run([ctl, "--socket", sock, "revoke", revoke], capture_output=True).returncode
    res["revoke_rc"] = rc
t0 = time.monotonic()
try:
    s.sendall(req)
    res["sent"] = True
except (ssl.SSLError, OSError) as e:
    res["sent"] = False
    res["send_error"] = str(e)
early, closed = read_response(t0 + 0.1)
res["early"] = early.decode("latin-1")
res["closed_early"] = closed
late = b""
if not closed:
    late, closed = read_response(t0 + 5)
res["late"] = late.decode("latin-1")
res["closed"] = closed
res["closed_after"] = round(time.monotonic() - t0, 3)
with open(base + ".json", "w") as f:
    json.dump(res, f)
EOF
}

keepalive a tpp1 tpp1 tpp1
pid_a=$!
keepalive b tpp2 tpp2
pid_b=$!
wait_until 10 test -s "$TEST_DIR/a.port" -a -s "$TEST_DIR/b.port" ||
	die "keep-alive connections not established: $(cat "$TEST_DIR/a.out" "$TEST_DIR/b.out")"
port_a=$(cat "$TEST_DIR/a.port")
assert_eq 1 "$(flow_count "$port_a")" "tpp1's connection is in the flows map after its first request"

before=$(xdp_stat drop_revoked)
touch "$TEST_DIR/a.go"
wait "$pid_a"
assert_eq 0 $? "tpp1's client ran ($(tail -n 3 "$TEST_DIR/a.out"))"
res=$TEST_DIR/a.json
assert_eq 0 "$(json_get "$res" revoke_rc)" "psd2edgectl revoke tpp1 succeeded"
assert_eq "" "$(json_get "$res" early)" "no response within 100 ms of the revoke"
assert_eq "" "$(json_get "$res" late)" "no response on the connection at all"
assert_eq true "$(json_get "$res" closed)" \
	"the connection was closed afterwards (after $(json_get "$res" closed_after) s)"
after=$(xdp_stat drop_revoked)
note "second request sent=$(json_get "$res" sent), closed after $(json_get "$res" closed_after) s, drop_revoked $before -> $after"
if [ "$after" -gt "$before" ]; then
	pass "xdp.packets.drop_revoked counted the connection's packets ($before -> $after)"
else
	assert_true "no drop_revoked, so the flow must be gone" wait_until 3 flow_gone "$port_a"
fi
assert_true "tpp1's flow leaves the flows map once the connection is closed" \
	wait_until 3 flow_gone "$port_a"
assert_eq PSD2_CLIENT_REVOKED "$(client_state tpp1)" "tpp1's slot is revoked in the clients map"

touch "$TEST_DIR/b.go"
wait "$pid_b"
assert_eq 0 $? "tpp2's client ran ($(tail -n 3 "$TEST_DIR/b.out"))"
assert_contains "$(json_get "$TEST_DIR/b.json" early)$(json_get "$TEST_DIR/b.json" late)" \
	"HTTP/1.1 200" "tpp2's keep-alive connection is still served"
assert_status 401 "a new connection with the revoked certificate gets 401" tpp1 "$GW_URL/a?client_id=tpp1"

finish
