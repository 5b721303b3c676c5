#!/usr/bin/env bash
# A bound TPP must not hold a connection (and the upstream connection behind it) by trickling
# its request body: below limits.min_body_rate bytes per second over limits.body_rate_window_ms
# it gets 408 with verdict body_too_slow and the connection is closed, both while the body is
# buffered to read a form client_id and while it is streamed to the upstream. The same bodies
# sent at a normal rate get 200.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

topo_basic
pki_setup
upstream_start
config_render "$DAEMON_CONFIG" '{"limits": {"min_body_rate": 100, "body_rate_window_ms": 1000}}'
daemon_start
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null || die "bind tpp1"

pad=$(head -c 1000 /dev/zero | tr '\0' a)
form_body="client_id=tpp1&pad=${pad:0:981}"
# request NAME PATH CONTENT_TYPE BODY: the request in $TEST_DIR/NAME.req
request() {
	printf 'POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
		"$2" "$GW_HOST" "$3" "${#4}" "$4" >"$TEST_DIR/$1.req"
}
request streamed "/upload?client_id=tpp1" application/octet-stream "$pad"
request form "/token" application/x-www-form-urlencoded "$form_body"

# trickle NAME CHUNK INTERVAL_MS: sends NAME.req's body CHUNK bytes every INTERVAL_MS; the answer
# in NAME-CHUNK.out, TRICKLE_RC 0 when the gateway closed the connection, 3 when it was still
# open after 20 s (the slow sends below would take 200 s)
trickle() {
	tlsclient tpp1 --chunk "$2" --interval "$3" --idle 3 --max 20 trickle \
		<"$TEST_DIR/$1.req" >"$TEST_DIR/$1-$2.out" 2>"$TEST_DIR/$1-$2.err"
	TRICKLE_RC=$?
}

for name in streamed form; do
	# 1 byte every 200 ms: 5 bytes/s against a minimum of 100.
	trickle "$name" 1 200
	out=$(cat "$TEST_DIR/$name-1.out")
	assert_contains "$(head -n1 <<<"$out")" " 408" "$name body at 5 B/s: 408"
	assert_contains "$out" '"error":"invalid_request"' "$name body at 5 B/s: JSON error body"
	assert_eq 0 "$TRICKLE_RC" "$name body at 5 B/s: connection closed ($(tail -n1 "$TEST_DIR/$name-1.err"))"

	# 100 bytes every 100 ms: 1000 bytes/s.
	trickle "$name" 100 100
	assert_contains "$(head -n1 "$TEST_DIR/$name-100.out")" " 200" "$name body at 1000 B/s: 200"
done
assert_eq 2 "$(grep -c '"verdict":"body_too_slow"' "$ACCESS_LOG")" "the access log has both cut-offs as body_too_slow"
finish
