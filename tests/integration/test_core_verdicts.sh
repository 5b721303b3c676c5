#!/usr/bin/env bash
# Issue 2's verdicts, end to end: a real psd2edged between a TPP namespace and an upstream.
#  - a bound TPP passes; the upstream sees X-Client-Id, X-Client-Cert-Sha256 (DER SHA-256),
#    X-Forwarded-For, X-Request-Id; client-sent copies of the first two are removed
#  - form, query and header sources each work; the body reaches the upstream intact
#  - 401 invalid_client: another client's id, unbound certificate, no client_id, sources that
#    disagree, a revoked binding; refused requests never reach the upstream
#  - handshake fails: untrusted CA, no certificate, expired, revoked by the CRL
#  - an RSA TPP certificate over TLS 1.2; the access log is JSON lines
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

topo_basic
pki_setup
upstream_start
config_render "$DAEMON_CONFIG"
daemon_start

ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null
assert_eq 0 $? "bind tpp1"
ctl bind tpp2 "$PKI/tpp2.pem" >/dev/null
assert_eq 0 $? "bind tpp2"
ctl bind tpprsa "$PKI/tpp-rsa.pem" >/dev/null
assert_eq 0 $? "bind tpprsa (RSA key)"

upstream_requests() { [ -f "$UPSTREAM_LOG" ] && wc -l <"$UPSTREAM_LOG" || echo 0; }
tpp1_sha=$(cert_sha256 "$PKI/tpp1.pem")

# --- bound TPP passes, with the identity headers -------------------------------------------
assert_status 200 "bound tpp1, client_id in the query" tpp1 \
	-H 'X-Client-Id: tpp1' -H 'X-Client-Cert-Sha256: 0000forged' \
	"$GW_URL/accounts?client_id=tpp1"
cp "$LAST_BODY" "$TEST_DIR/echo1.json"
assert_eq /accounts?client_id=tpp1 "$(json_get "$TEST_DIR/echo1.json" path)" "upstream sees the path and query"
assert_eq '["tpp1"]' "$(json_get "$TEST_DIR/echo1.json" h.x-client-id)" \
	"upstream sees exactly one X-Client-Id, the proven one"
assert_eq "[\"$tpp1_sha\"]" "$(json_get "$TEST_DIR/echo1.json" h.x-client-cert-sha256)" \
	"upstream sees exactly one X-Client-Cert-Sha256 = sha256(DER of tpp1.pem); the forged copy is gone"
assert_contains "$(json_get "$TEST_DIR/echo1.json" h.x-forwarded-for)" "$TPP_IP" \
	"X-Forwarded-For carries the TPP's address"
rid1=$(json_get "$TEST_DIR/echo1.json" h.x-request-id.0)
assert_ne "" "$rid1" "X-Request-Id is present"
assert_status 200 "bound tpp1 again" tpp1 "$GW_URL/accounts?client_id=tpp1"
rid2=$(json_get "$LAST_BODY" h.x-request-id.0)
assert_ne "$rid1" "$rid2" "X-Request-Id differs between requests"

# --- each source on its own -------------------------------------------------------------------
assert_status 200 "client_id from a header" tpp1 -H 'X-Client-Id: tpp1' "$GW_URL/accounts"
assert_eq '["tpp1"]' "$(json_get "$LAST_BODY" h.x-client-id)" "header source: one X-Client-Id upstream"
form='grant_type=client_credentials&client_id=tpp1&scope=accounts'
assert_status 200 "client_id from an urlencoded form" tpp1 \
	-H 'Content-Type: application/x-www-form-urlencoded' --data-binary "$form" "$GW_URL/token"
assert_eq "${#form}" "$(json_get "$LAST_BODY" body_length)" "form body reaches the upstream whole"
assert_eq "$(printf '%s' "$form" | sha256sum | cut -d' ' -f1)" "$(json_get "$LAST_BODY" body_sha256)" \
	"form body reaches the upstream unchanged"
assert_eq POST "$(json_get "$LAST_BODY" method)" "method is kept"
assert_status 200 "sources that agree (query + header + form)" tpp1 -H 'X-Client-Id: tpp1' \
	-H 'Content-Type: application/x-www-form-urlencoded' --data-binary 'client_id=tpp1' \
	"$GW_URL/token?client_id=tpp1"
assert_status 200 "second bound TPP" tpp2 "$GW_URL/accounts?client_id=tpp2"
assert_eq '["tpp2"]' "$(json_get "$LAST_BODY" h.x-client-id)" "tpp2's id upstream"

# --- identity refusals: 401 invalid_client, nothing forwarded --------------------------------------
before=$(upstream_requests)
assert_status 401 "tpp1's certificate claiming tpp2" tpp1 "$GW_URL/accounts?client_id=tpp2"
assert_invalid_client_body "tpp1 claiming tpp2"
assert_status 401 "tpp1's certificate claiming an unknown client" tpp1 "$GW_URL/accounts?client_id=nobody"
assert_invalid_client_body "unknown client"
assert_status 401 "unbound certificate (tpp3)" tpp3 "$GW_URL/accounts?client_id=tpp1"
assert_invalid_client_body "unbound certificate"
assert_status 401 "unbound certificate claiming its own name" tpp3 "$GW_URL/accounts?client_id=tpp3"
assert_status 401 "no client_id at all" tpp1 "$GW_URL/accounts"
assert_invalid_client_body "no client_id"
assert_status 401 "empty client_id" tpp1 "$GW_URL/accounts?client_id="
assert_status 401 "query and header disagree" tpp1 -H 'X-Client-Id: tpp2' "$GW_URL/accounts?client_id=tpp1"
assert_invalid_client_body "conflicting sources"
assert_status 401 "form and query disagree" tpp1 -H 'Content-Type: application/x-www-form-urlencoded' \
	--data-binary 'client_id=tpp2' "$GW_URL/token?client_id=tpp1"
assert_status 401 "the same query parameter twice with different values" tpp1 \
	"$GW_URL/accounts?client_id=tpp1&client_id=tpp2"
assert_status 401 "two X-Client-Id headers that disagree" tpp1 -H 'X-Client-Id: tpp1' \
	-H 'X-Client-Id: tpp2' "$GW_URL/accounts"
assert_eq "$before" "$(upstream_requests)" "no refused request reached the upstream"

# --- handshake failures ------------------------------------------------------------------------
assert_handshake_fails "certificate from an untrusted CA" untrusted "$GW_URL/accounts?client_id=tpp1"
assert_handshake_fails "no client certificate" none "$GW_URL/accounts?client_id=tpp1"
assert_handshake_fails "expired certificate" tpp-expired "$GW_URL/accounts?client_id=tpp1"
assert_handshake_fails "certificate revoked by the CRL" tpp-revoked "$GW_URL/accounts?client_id=tpp1"
assert_handshake_fails "TLS 1.1 is refused" tpp1 --tlsv1.1 --tls-max 1.1 --ciphers DEFAULT@SECLEVEL=0 "$GW_URL/accounts?client_id=tpp1"

# --- TLS 1.2 with an RSA certificate and an ECDSA one ---------------------------------------------
assert_status 200 "RSA TPP certificate over TLS 1.2" tpp-rsa --tls-max 1.2 "$GW_URL/a?client_id=tpprsa"
assert_status 200 "EC TPP certificate over TLS 1.2" tpp1 --tls-max 1.2 "$GW_URL/a?client_id=tpp1"
assert_handshake_fails "TLS 1.2 with only a CBC suite is refused" tpp1 --tls-max 1.2 \
	--ciphers ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256 "$GW_URL/a?client_id=tpp1"

# --- revoked binding --------------------------------------------------------------------------------
ctl revoke tpp2 >/dev/null
assert_eq 0 $? "revoke tpp2"
assert_status 401 "revoked certificate" tpp2 "$GW_URL/accounts?client_id=tpp2"
assert_invalid_client_body "revoked certificate"
assert_status 200 "tpp1 unaffected by tpp2's revocation" tpp1 "$GW_URL/accounts?client_id=tpp1"

# --- access log: one JSON object a line --------------------------------------------------------------
if [ -s "$ACCESS_LOG" ]; then
	if python3 - "$ACCESS_LOG" <<'PY'
import json, sys
n = 0
for line in open(sys.argv[1]):
    json.loads(line)
    n += 1
sys.exit(0 if n > 10 else 1)
PY
	then pass "access log lines are JSON"; else fail "access log lines are not all JSON: $(head -n 3 "$ACCESS_LOG")"; fi
	assert_contains "$(cat "$ACCESS_LOG")" "401" "access log records the 401s"
	assert_not_contains "$(cat "$ACCESS_LOG")" "grant_type=client_credentials" "access log holds no bodies"
else
	fail "access log $ACCESS_LOG is empty"
fi

# --- stripping with a query-only configuration: X-Client-Id sent by the client is not a source
daemon_stop
config_render "$DAEMON_CONFIG" '{"client_id": ["query:client_id"]}'
daemon_start
assert_status 200 "query-only config: a client-sent X-Client-Id does not matter" tpp1 \
	-H 'X-Client-Id: tpp2' -H "X-Client-Cert-Sha256: $(cert_sha256 "$PKI/tpp2.pem")" \
	"$GW_URL/accounts?client_id=tpp1"
assert_eq '["tpp1"]' "$(json_get "$LAST_BODY" h.x-client-id)" "client-sent X-Client-Id stripped"
assert_eq "[\"$tpp1_sha\"]" "$(json_get "$LAST_BODY" h.x-client-cert-sha256)" \
	"client-sent X-Client-Cert-Sha256 stripped"
assert_status 401 "query-only config: the header alone is not enough" tpp1 -H 'X-Client-Id: tpp1' "$GW_URL/accounts"

finish
