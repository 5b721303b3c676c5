#!/usr/bin/env bash
# Identity and forwarding headers smuggled by a bound TPP never reach the bank:
#  - a header name with '_' (X_Client_Id: CGI-style stacks such as Rack and gunicorn read it as
#    X-Client-Id) is refused with 400 and nothing reaches the upstream
#  - the gateway's own headers in any case (X-CLIENT-ID, X-Client-Cert-SHA256, X-Forwarded-For,
#    Forwarded, X-Request-Id) and the client-certificate and forwarding headers of other proxies
#    (X-Forwarded-Client-Cert, X-SSL-Client-Cert, X-Real-IP, X-Original-URL, ...) are dropped:
#    the upstream's echo holds none of the smuggled values and exactly the gateway's own
#    X-Client-Id
#  - http.drop_headers replaces the second list; the gateway's own headers stay dropped
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

topo_basic
pki_setup
upstream_start
# The client_id comes from the query only, so that every X-Client-Id header is a smuggle.
config_render "$DAEMON_CONFIG" '{"client_id": ["query:client_id"]}'
daemon_start
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null
assert_eq 0 $? "bind tpp1"

upstream_requests() { if [ -f "$UPSTREAM_LOG" ]; then wc -l <"$UPSTREAM_LOG"; else echo 0; fi; }

# smuggle CODE NAME: one request from tpp1 carrying "NAME: smuggled-<NAME>"; CODE 200: the
# upstream got it without that value and with X-Client-Id tpp1 once; CODE 400: it got nothing.
smuggle() {
	local want=$1 name=$2 before
	before=$(upstream_requests)
	assert_status "$want" "$name: $want" tpp1 -H "$name: smuggled-$name" "$GW_URL/accounts?client_id=tpp1"
	if [ "$want" = 400 ]; then
		assert_eq invalid_request "$(json_get "$LAST_BODY" error)" "$name: JSON error invalid_request"
		assert_eq "$before" "$(upstream_requests)" "$name: nothing reached the upstream"
		return
	fi
	assert_not_contains "$(cat "$LAST_BODY")" "smuggled-" "$name: the upstream did not see the value"
	assert_eq '["tpp1"]' "$(json_get "$LAST_BODY" h.x-client-id)" \
		"$name: the upstream saw the gateway's X-Client-Id only"
}

# Names CGI-style stacks fold into the identity headers.
for name in X_Client_Id x_client_id X-Client_Id X_CLIENT_ID X_Client_Cert_Sha256 \
	X_Forwarded_For X_Request_Id X_Real_IP X_Forwarded_Client_Cert SSL_CLIENT_CERT; do
	smuggle 400 "$name"
done
# The gateway's own headers, in odd case.
for name in X-CLIENT-ID x-client-id X-Client-Cert-SHA256 x-forwarded-for Forwarded X-REQUEST-ID; do
	smuggle 200 "$name"
done
# What other proxies use for the client certificate and the original address, host, URL.
for name in X-Forwarded-Client-Cert X-SSL-Client-Cert ssl-client-cert X-Client-Cert X-Real-IP \
	True-Client-IP X-Forwarded-Host X-Forwarded-Proto X-Forwarded-Prefix X-Original-URL \
	X-Rewrite-URL x-real-ip; do
	smuggle 200 "$name"
done

# All of them at once in one request (raw bytes, as sent), plus a harmless header that must pass.
{
	printf 'GET /all?client_id=tpp1 HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n' "$GW_HOST"
	for name in X-Client-Id X-Client-Cert-Sha256 X-Forwarded-For Forwarded X-Request-Id \
		X-Forwarded-Client-Cert X-SSL-Client-Cert ssl-client-cert X-Client-Cert X-Real-IP \
		True-Client-IP X-Forwarded-Host X-Forwarded-Proto X-Forwarded-Prefix X-Original-URL \
		X-Rewrite-URL; do
		printf '%s: smuggled-%s\r\n' "$name" "$name"
	done
	printf 'X-Tpp-Trace: kept\r\n\r\n'
} >"$TEST_DIR/all.req"
tlsclient tpp1 --idle 2 --max 10 raw <"$TEST_DIR/all.req" >"$TEST_DIR/all.out" 2>"$TEST_DIR/all.err"
assert_contains "$(head -n1 "$TEST_DIR/all.out")" " 200" "all smuggled headers in one request: 200"
last=$(tail -n1 "$UPSTREAM_LOG")
assert_not_contains "$last" "smuggled-" "all at once: the upstream saw none of the smuggled values"
assert_contains "$last" '"x-tpp-trace": ["kept"]' "all at once: an ordinary header still passes"
assert_contains "$last" '"x-client-id": ["tpp1"]' "all at once: the gateway's X-Client-Id"
assert_contains "$last" "\"x-forwarded-for\": [\"$TPP_IP\"]" "all at once: the gateway's X-Forwarded-For"
assert_not_contains "$(cat "$UPSTREAM_LOG")" "smuggled-" "the upstream never saw a smuggled value"

# http.drop_headers replaces the list of other proxies' headers; the gateway's own stay dropped.
daemon_stop
config_render "$DAEMON_CONFIG" \
	'{"client_id": ["query:client_id"], "http": {"drop_headers": ["X-Bank_Internal", "x-real-ip"]}}'
daemon_start
smuggle 200 X-Bank-Internal
smuggle 200 X-CLIENT-ID
smuggle 200 X-Real-IP
assert_status 200 "a header the list no longer names passes" tpp1 -H "True-Client-IP: 192.0.2.9" \
	"$GW_URL/accounts?client_id=tpp1"
assert_eq '["192.0.2.9"]' "$(json_get "$LAST_BODY" h.true-client-ip)" "True-Client-IP forwarded when not listed"

finish
