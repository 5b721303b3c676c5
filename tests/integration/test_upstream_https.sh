#!/usr/bin/env bash
# An https upstream with mutual TLS in a separate "bank" namespace: the upstream requires a
# client certificate from the bank CA and sees the gateway's QWAC; the gateway verifies the
# upstream against upstream.ca (a wrong CA gives 502); keep-alive towards the upstream;
# upstream down: 502; upstream slower than limits.upstream_timeout_ms: 504.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

topo_basic
topo_bank
pki_setup
upstream_start --ns "$BANK_NS" --tls --host 0.0.0.0
UP="https://$BANK_IP:$UPSTREAM_TLS_PORT"
config_render "$DAEMON_CONFIG" "{\"upstream\": {\"url\": \"$UP\", \"ca\": \"$PKI/bank-ca.pem\",
	\"cert\": \"$PKI/gateway-qwac.pem\", \"key\": \"$PKI/gateway-qwac.key\"},
	\"limits\": {\"upstream_timeout_ms\": 1500}}"
daemon_start
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null
assert_eq 0 $? "bind tpp1"

assert_status 200 "bound TPP through an https upstream" tpp1 "$GW_URL/accounts?client_id=tpp1"
assert_eq "$(cert_sha256 "$PKI/gateway-qwac.pem")" "$(json_get "$LAST_BODY" client_cert_sha256)" \
	"the upstream sees the gateway's QWAC"
assert_contains "$(json_get "$LAST_BODY" client_cert_subject)" gateway-qwac.test "QWAC subject"
assert_eq '["tpp1"]' "$(json_get "$LAST_BODY" h.x-client-id)" "X-Client-Id over https"
assert_eq "[\"$(cert_sha256 "$PKI/tpp1.pem")\"]" "$(json_get "$LAST_BODY" h.x-client-cert-sha256)" \
	"X-Client-Cert-Sha256 is the TPP's certificate, not the QWAC"
assert_contains "$(json_get "$LAST_BODY" peer)" "$BANK_GW_IP" "the upstream is reached over the bank link"

# Keep-alive towards the upstream: consecutive requests reuse one upstream connection
# (Two requests on one TPP connection, so that one worker, with its own pool, serves both.)
gw_curl tpp1 -o "$TEST_DIR/k1.json" -o "$TEST_DIR/k2.json" "$GW_URL/k1?client_id=tpp1" \
	"$GW_URL/k2?client_id=tpp1"
c1=$(json_get "$TEST_DIR/k1.json" conn)
c2=$(json_get "$TEST_DIR/k2.json" conn)
assert_eq "$c1" "$c2" "keep-alive upstream: two requests on one upstream connection"

assert_status 200 "a POST body over https" tpp1 -H 'Content-Type: application/x-www-form-urlencoded' \
	--data-binary 'client_id=tpp1&x=1' "$GW_URL/token"
assert_eq 18 "$(json_get "$LAST_BODY" body_length)" "body length over https"

# --- slow upstream: 504 ----------------------------------------------------------------------
t0=$(date +%s%N)
assert_status 504 "upstream slower than upstream_timeout_ms" tpp1 "$GW_URL/slow?ms=5000&client_id=tpp1"
el=$((($(date +%s%N) - t0) / 1000000))
assert_true "504 came near upstream_timeout_ms=1500 (${el} ms)" test "$el" -ge 1200 -a "$el" -lt 4500
assert_status 200 "fast requests still pass after a timeout" tpp1 "$GW_URL/a?client_id=tpp1"

# --- upstream down: 502 -----------------------------------------------------------------------
upstream_stop
assert_status 502 "upstream down" tpp1 "$GW_URL/a?client_id=tpp1"
assert_status 401 "identity is still checked first when the upstream is down" tpp1 "$GW_URL/a?client_id=tpp2"
upstream_start --ns "$BANK_NS" --tls --host 0.0.0.0
assert_status 200 "upstream back" tpp1 "$GW_URL/a?client_id=tpp1"

# --- the gateway verifies the upstream: a CA that did not issue its certificate -> 502 -----------
daemon_stop
config_render "$DAEMON_CONFIG" "{\"upstream\": {\"url\": \"$UP\", \"ca\": \"$PKI/tpp-ca.pem\",
	\"cert\": \"$PKI/gateway-qwac.pem\", \"key\": \"$PKI/gateway-qwac.key\"}}"
daemon_start
assert_status 502 "upstream certificate not trusted by upstream.ca" tpp1 "$GW_URL/a?client_id=tpp1"

# --- ... and presents its QWAC: an upstream that trusts another CA refuses the gateway -> 502 ----
daemon_stop
config_render "$DAEMON_CONFIG" "{\"upstream\": {\"url\": \"$UP\", \"ca\": \"$PKI/bank-ca.pem\",
	\"cert\": \"$PKI/tpp4.pem\", \"key\": \"$PKI/tpp4.key\"}}"
daemon_start
assert_status 502 "upstream refuses a client certificate from another CA" tpp1 "$GW_URL/a?client_id=tpp1"

finish
