#!/usr/bin/env bash
# An upstream that sends more than one response's worth of bytes must not get the next request
# on that connection: the extra bytes would be read as the next response and hand a TPP's
# request someone else's answer (response desync). hostile_upstream.py answers a HEAD with a
# body (in the same write, or 300 ms later), sends bytes beyond Content-Length, and a body after
# 204 and 304; the extra bytes are always FAKE, a complete "200 SMUGGLED" response. A TPP
# pipelines that request and a second one on one connection: the second answer must be the
# upstream's real answer to the second request, which must have come on a new upstream
# connection; the stats count each response that was followed by extra bytes.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

topo_basic
pki_setup
rm -f "$TEST_DIR/upstream.ready"
ns_exec "$GW_NS" python3 "$LIB_DIR/hostile_upstream.py" --host 127.0.0.1 --port "$UPSTREAM_PORT" \
	--log "$UPSTREAM_LOG" --ready-file "$TEST_DIR/upstream.ready" >>"$TEST_DIR/upstream.out" 2>&1 &
LIB_PIDS+=($!)
wait_until 10 test -s "$TEST_DIR/upstream.ready" ||
	die "hostile upstream did not start: $(tail -n 5 "$TEST_DIR/upstream.out")"
config_render "$DAEMON_CONFIG"
daemon_start
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null || die "bind tpp1"

# upstream_conn MARKER: the upstream connection number that carried the request with m=MARKER
upstream_conn() {
	python3 - "$UPSTREAM_LOG" "m=$1" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["path"].endswith(sys.argv[2]):
        print(e["conn"])
        sys.exit(0)
sys.exit(1)
EOF
}

leftovers() {
	ctl stats --json >"$TEST_DIR/stats.json" || die "stats"
	json_get "$TEST_DIR/stats.json" upstream_leftovers || echo absent
}

# pipelined NAME METHOD LEAF: METHOD /LEAF (marker NAME-1) then GET /echo (marker NAME-2) in one
# write; what came back in $TEST_DIR/NAME.out
pipelined() {
	local h="Host: $GW_HOST"
	printf '%s /%s?client_id=tpp1&m=%s-1 HTTP/1.1\r\n%s\r\n\r\nGET /echo?client_id=tpp1&m=%s-2 HTTP/1.1\r\n%s\r\nConnection: close\r\n\r\n' \
		"$2" "$3" "$1" "$h" "$1" "$h" >"$TEST_DIR/$1.req"
	tlsclient tpp1 --idle 3 --max 10 raw <"$TEST_DIR/$1.req" >"$TEST_DIR/$1.out" 2>"$TEST_DIR/$1.err"
}

# An honest upstream keeps its connection: what the other cases assert is not a side effect.
pipelined honest GET echo
out=$(cat "$TEST_DIR/honest.out")
assert_contains "$out" "path=/echo?client_id=tpp1&m=honest-2" "honest upstream: second answer is the second request's"
assert_eq "$(upstream_conn honest-1)" "$(upstream_conn honest-2)" \
	"honest upstream: both requests on one upstream connection"
assert_eq 0 "$(leftovers)" "honest upstream: upstream_leftovers stays 0"

# check NAME METHOD LEAF COUNTED DESC
check() {
	local before out c1 c2
	before=$(leftovers)
	pipelined "$1" "$2" "$3"
	out=$(cat "$TEST_DIR/$1.out")
	assert_not_contains "$out" SMUGGLED "$5: the extra bytes never reach the TPP"
	assert_contains "$out" "path=/echo?client_id=tpp1&m=$1-2" \
		"$5: the second answer is the upstream's answer to the second request"
	c1=$(upstream_conn "$1-1")
	c2=$(upstream_conn "$1-2")
	assert_true "$5: the second request went on a new upstream connection ($c1 then $c2)" \
		test -n "$c1" -a -n "$c2" -a "$c1" != "$c2"
	if [ "$4" = counted ]; then
		assert_eq $((before + 1)) "$(leftovers)" "$5: counted in upstream_leftovers"
	fi
}

check headbody HEAD head-body counted "HEAD answered with a body"
check headlate HEAD head-late-body uncounted "HEAD answered with a Content-Length, body 300 ms later"
check extra GET extra counted "bytes beyond Content-Length"
check nocontent GET no-content counted "204 with a body"
check notmodified GET not-modified counted "304 with a body"

assert_contains "$(cat "$DAEMON_LOG")" "beyond a complete response" "the daemon logs the extra bytes"
finish
