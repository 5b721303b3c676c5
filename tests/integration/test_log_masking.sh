#!/usr/bin/env bash
# Masked logs (issue 10), on the daemon's real output: requests carry an IBAN, a PAN (plain and
# in dashed groups), a JWT and a name in their paths, and a garbage-speaking upstream answers
# with a token in its bytes; a configured pattern (logs.mask) hides a name. Neither the access
# log nor the daemon's stderr (the error log) holds any of them afterwards, and the masked
# forms are there. The control socket's path carries an IBAN and a PAN too, so that the
# "ready" line of the error log goes through the built-ins. A bad pattern is refused at load.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

IBAN=DE89370400440532013000
PAN=4111111111111111
PAN_DASHED=5500-0000-0000-0004
JWT=eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJqYW5lIn0.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg
UPSTREAM_TOKEN=2YotnFZFEjr1zCsicMWpAA
GARBAGE_PORT=8081

topo_basic
pki_setup
upstream_start
# An upstream that answers garbage: no status line, a token in its bytes.
ns_exec "$GW_NS" python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
while True:
    c, _ = s.accept(); c.recv(65536)
    c.sendall(b"NOT HTTP access_token=" + sys.argv[2].encode() + b" Bearer " + sys.argv[3].encode() + b"\r\n\r\n")
    c.close()
' "$GARBAGE_PORT" "$UPSTREAM_TOKEN" "$JWT" >/dev/null 2>&1 &
LIB_PIDS+=("$!")
wait_until 5 ns_exec "$GW_NS" bash -c "exec 3<>/dev/tcp/127.0.0.1/$GARBAGE_PORT" 2>/dev/null ||
	die "the garbage upstream did not start"

sock_dir="$TEST_DIR/ctl-$IBAN-$PAN"
mkdir -p "$sock_dir"
CTL_SOCKET="$sock_dir/control.sock"

# A pattern that is no regex is refused at load, naming the key.
config_render "$TEST_DIR/bad.json" '{"logs": {"mask": ["Jane Doe", "(unclosed"]}}'
out=$("$PSD2EDGED" --check-config "$TEST_DIR/bad.json" 2>&1)
assert_ne 0 $? "--check-config refuses a bad logs.mask pattern"
assert_contains "$out" "logs.mask[1]: not a POSIX extended regex" "the refusal names logs.mask[1]"

config_render "$DAEMON_CONFIG" "{\"control_socket\": \"$CTL_SOCKET\",
	\"upstream\": null,
	\"upstreams\": {\"default\": {\"url\": \"http://127.0.0.1:$UPSTREAM_PORT\"},
	                \"jane-doe-bank\": {\"url\": \"http://127.0.0.1:$GARBAGE_PORT\"}},
	\"routes\": [{\"prefix\": \"/garbage\", \"upstream\": \"jane-doe-bank\"},
	           {\"prefix\": \"/\", \"upstream\": \"default\"}],
	\"logs\": {\"mask\": [\"[Jj]ane([ -]|%20)[Dd]oe\"]}}"
daemon_start
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null || die "bind tpp1"

assert_status 200 "an IBAN in the path" tpp1 -H 'x-client-id: tpp1' "$GW_URL/accounts/$IBAN/balances"
assert_status 200 "a PAN in the path" tpp1 -H 'x-client-id: tpp1' "$GW_URL/cards/$PAN/transactions"
assert_status 200 "a PAN in dashed groups" tpp1 -H 'x-client-id: tpp1' "$GW_URL/cards/$PAN_DASHED"
assert_status 200 "a JWT in the path and the Authorization header" tpp1 -H 'x-client-id: tpp1' \
	-H "Authorization: Bearer $JWT" "$GW_URL/tokens/$JWT"
assert_status 200 "a name in the path" tpp1 -H 'x-client-id: tpp1' "$GW_URL/payees/Jane%20Doe"
assert_status 401 "an IBAN as the client_id" tpp1 -H "x-client-id: $IBAN" "$GW_URL/accounts"
assert_status 502 "the garbage upstream" tpp1 -H 'x-client-id: tpp1' "$GW_URL/garbage/x"

daemon_stop || fail "daemon stops cleanly"

access=$(cat "$ACCESS_LOG")
errors=$(cat "$DAEMON_LOG")
assert_eq 7 "$(grep -c '"request_id"' "$ACCESS_LOG")" "one access-log line per request"
for secret in "$IBAN" "$PAN" "$PAN_DASHED" "$JWT" "$UPSTREAM_TOKEN" "Jane%20Doe" "jane-doe"; do
	assert_not_contains "$access" "$secret" "the access log does not hold $secret"
	assert_not_contains "$errors" "$secret" "the error log does not hold $secret"
done
assert_contains "$access" '"path":"/accounts/DE89****3000/balances"' "access log: the IBAN masked"
assert_contains "$access" '"path":"/cards/************1111/transactions"' "access log: the PAN masked"
assert_contains "$access" '"path":"/cards/****-****-****-0004"' "access log: the dashed PAN masked"
assert_contains "$access" '"path":"/tokens/[token:' "access log: the JWT hashed"
assert_contains "$access" '"path":"/payees/***"' "access log: the name hidden by logs.mask"
assert_contains "$access" '"client_id":"DE89****3000"' "access log: the IBAN claimed as client_id masked"
assert_contains "$access" '"route":"/garbage"' "access log: the garbage upstream's request"
assert_contains "$errors" "upstream ***-bank: invalid response from upstream" \
	"error log: the upstream's failure, its name hidden by logs.mask"
assert_contains "$errors" "ctl-DE89****3000-************1111/control.sock" \
	"error log: the ready line's socket path masked"
finish
