#!/usr/bin/env bash
# The Prometheus endpoint (metrics.listen, issue 9). Known traffic: tpp1 (bound) sends 3
# requests on /accounts (200) and 3 on /payments, whose quota of 1 refuses 2 (429); tpp2
# (not bound) sends 2 (401); a client without a certificate fails its handshake. A scrape with
# curl then shows exactly those counts: by route and status class, the quota's refusals, the
# route's duration histogram, handshakes by kind and failures by reason, denials by reason;
# the registry's size, the breaker's state, the quota map, the certificates' expiry; and
# `promtool check metrics` accepts the whole text. `psd2edgectl stats --json` shows the same
# series from the same registry. The endpoint: 200 text/plain version 0.0.4 for GET /metrics,
# 404, 405, 400 and 431 otherwise, on the gateway's loopback only (not reachable from the TPP
# side, not on the TPP listener); metrics.listen "off" turns it off; --check-config names a
# wrong metrics key. Fails before issue 9: there was no endpoint.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_cmd curl promtool openssl
pki_setup

# --- configuration errors name the key ----------------------------------------------------------
check_bad() { # NAME EXPECTED OVERRIDE
	config_render "$TEST_DIR/$1.json" "$3"
	local out rc
	out=$("$PSD2EDGED" --check-config "$TEST_DIR/$1.json" 2>&1)
	rc=$?
	assert_ne 0 "$rc" "$1: --check-config fails"
	assert_contains "$out" "$2" "$1: names the problem"
}
check_bad metrics-addr "metrics.listen: invalid address" '{"metrics": {"listen": "localhost:9464"}}'
check_bad metrics-port "metrics.listen: invalid port" '{"metrics": {"listen": "127.0.0.1:0"}}'
check_bad metrics-same "metrics.listen: same address as listen[0]" \
	"{\"metrics\": {\"listen\": \"0.0.0.0:$GW_PORT\"}}"
check_bad metrics-key "metrics.port: unknown key" '{"metrics": {"port": 9464}}'
check_bad metrics-type "metrics: must be an object" '{"metrics": "off"}'

topo_basic
upstream_start
config_render "$DAEMON_CONFIG" '{"upstream": null,
	"upstreams": {"bank": {"url": "http://127.0.0.1:8080",
	                       "circuit_breaker": {"consecutive_failures": 100}}},
	"routes": [
	  {"prefix": "/accounts", "upstream": "bank"},
	  {"prefix": "/payments", "upstream": "bank",
	   "quota": {"limit": 1, "window": "rolling", "rolling_seconds": 3600}}]}'
daemon_start
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null || die "bind tpp1"

# scrape OUT [CURL_ARGS...]: GET the endpoint from the gateway's namespace; headers in OUT.head
scrape() {
	local out=$1
	shift
	ns_exec "$GW_NS" curl -sS --max-time 10 -D "$out.head" -o "$out" -w '%{http_code}' "$@" \
		http://127.0.0.1:9464/metrics
}

# --- known traffic ------------------------------------------------------------------------------
for i in 1 2 3; do
	assert_status 200 "tpp1 /accounts $i" tpp1 "$GW_URL/accounts/$i?client_id=tpp1"
done
assert_status 200 "tpp1 /payments 1: within the quota" tpp1 "$GW_URL/payments/1?client_id=tpp1"
for i in 2 3; do
	assert_status 429 "tpp1 /payments $i: over the quota" tpp1 "$GW_URL/payments/$i?client_id=tpp1"
done
for i in 1 2; do
	assert_status 401 "tpp2 (not bound) $i" tpp2 "$GW_URL/accounts/1?client_id=tpp2"
done
assert_handshake_fails "a client without a certificate" none "$GW_URL/accounts/1"

# The daemon counts the failed handshake once it has sent its alert, which the client may see
# first: wait for that one count before taking the scrape.
failure_counted() {
	scrape "$TEST_DIR/wait.txt" >/dev/null &&
		grep -qFx 'psd2edge_handshake_failures_total{reason="no_certificate"} 1' "$TEST_DIR/wait.txt"
}
assert_true "the failed handshake is counted" wait_until 10 failure_counted

code=$(scrape "$TEST_DIR/m.txt")
assert_eq 200 "$code" "GET /metrics: 200"
assert_contains "$(tr -d '\r' <"$TEST_DIR/m.txt.head")" \
	"Content-Type: text/plain; version=0.0.4; charset=utf-8" "text format 0.0.4"

# has LINE DESC: the scrape holds exactly that sample line
has() {
	if grep -qFx -- "$1" "$TEST_DIR/m.txt"; then
		pass "$2"
	else
		fail "$2: no line '$1' in the scrape; $(grep -F -- "${1%% *}" "$TEST_DIR/m.txt" | head -n 5)"
	fi
}
A='route="/accounts",upstream="bank"'
P='route="/payments",upstream="bank"'
has "psd2edge_route_requests_total{$A} 3" "/accounts: 3 requests"
has "psd2edge_route_responses_total{$A,class=\"2xx\"} 3" "/accounts: 3 x 2xx"
has "psd2edge_route_responses_total{$A,class=\"4xx\"} 0" "/accounts: no 4xx"
has "psd2edge_route_requests_total{$P} 3" "/payments: 3 requests"
has "psd2edge_route_responses_total{$P,class=\"2xx\"} 1" "/payments: 1 x 2xx"
has "psd2edge_route_responses_total{$P,class=\"4xx\"} 2" "/payments: 2 x 4xx"
has "psd2edge_route_policy_decisions_total{$P,policy=\"quota\",decision=\"passed\"} 1" \
	"/payments: the quota passed 1"
has "psd2edge_route_policy_decisions_total{$P,policy=\"quota\",decision=\"refused\"} 2" \
	"/payments: the quota refused 2 (its 429s)"
has "psd2edge_route_policy_decisions_total{$A,policy=\"circuit_breaker\",decision=\"passed\"} 3" \
	"/accounts: the breaker passed 3"
has "psd2edge_request_duration_seconds_count{$A} 3" "/accounts: 3 durations"
has "psd2edge_request_duration_seconds_bucket{$A,le=\"+Inf\"} 3" "/accounts: +Inf bucket holds all 3"
has "psd2edge_request_duration_seconds_count{$P} 3" "/payments: 3 durations (refusals too)"
has "psd2edge_requests_total 8" "8 requests"
has 'psd2edge_responses_total{class="2xx"} 4' "4 responses 2xx"
has 'psd2edge_responses_total{class="4xx"} 4' "4 responses 4xx (2 x 429, 2 x 401)"
has 'psd2edge_requests_denied_total{reason="unbound_cert"} 2' "2 denials: unbound certificate"
has 'psd2edge_connections_accepted_total 9' "9 connections accepted"
has 'psd2edge_handshakes_total{result="ok"} 8' "8 handshakes ok"
has 'psd2edge_handshakes_total{result="failed"} 1' "1 handshake failed"
has 'psd2edge_handshake_failures_total{reason="no_certificate"} 1' "failed: no certificate"
has 'psd2edge_handshake_verifications_total{path="fast"} 6' "6 fast-path verifications (tpp1)"
has 'psd2edge_handshake_verifications_total{path="full"} 2' "2 full verifications (tpp2)"
has 'psd2edge_registry_clients 1' "registry: 1 client"
has 'psd2edge_registry_certificates{state="active"} 1' "registry: 1 active certificate"
has 'psd2edge_breaker_state{upstream="bank"} 0' "breaker of bank: closed"
has 'psd2edge_quota_map_entries 1' "quota map: 1 counter"
has 'psd2edge_xdp_info{mode="off"} 1' "xdp: off"
has 'psd2edge_ktls_kernel_available 0' "kTLS: not in this kernel"
has 'psd2edge_ktls_connections_total 8' "kTLS setup: 8 handshakes"
server_left=$(sed -n 's/^psd2edge_certificate_expiry_seconds{kind="server",name="tls"} //p' "$TEST_DIR/m.txt")
server_end=$(date -d "$(openssl x509 -in "$PKI/server.pem" -noout -enddate | cut -d= -f2)" +%s)
assert_true "server certificate: seconds to expiry ($server_left) match its notAfter" \
	test "$((server_end - $(date +%s) - ${server_left:-0}))" -ge -5 -a \
	"$((server_end - $(date +%s) - ${server_left:-0}))" -le 5
thumb=$(openssl x509 -in "$PKI/tpp1.pem" -outform DER | sha256sum | cut -d' ' -f1)
assert_true "tpp1's certificate: seconds to expiry" \
	grep -qE "^psd2edge_client_certificate_expiry_seconds\{client_id=\"tpp1\",sha256=\"$thumb\"\} [0-9]+$" \
	"$TEST_DIR/m.txt"

promtool check metrics <"$TEST_DIR/m.txt" >"$TEST_DIR/promtool.out" 2>&1
assert_eq 0 $? "promtool check metrics accepts the scrape ($(head -c 400 "$TEST_DIR/promtool.out"))"

# --- `stats` shows the same series ---------------------------------------------------------------
ctl stats --json >"$TEST_DIR/stats.json" || die "psd2edgectl stats"
same() { # JSON_PATH SAMPLE
	local want
	want=$(grep -F -- "$2 " "$TEST_DIR/m.txt" | grep -vF '#' | head -n 1)
	assert_eq "${want##* }" "$(json_get "$TEST_DIR/stats.json" "$1")" "stats $1 = $2"
}
assert_eq /accounts "$(json_get "$TEST_DIR/stats.json" routes.0.prefix)" "stats: routes[0] is /accounts"
same routes.0.requests "psd2edge_route_requests_total{$A}"
same routes.1.responses.4xx "psd2edge_route_responses_total{$P,class=\"4xx\"}"
same routes.1.policies.quota.refused \
	"psd2edge_route_policy_decisions_total{$P,policy=\"quota\",decision=\"refused\"}"
same routes.0.duration_seconds.count "psd2edge_request_duration_seconds_count{$A}"
same handshakes_ok 'psd2edge_handshakes_total{result="ok"}'
same handshake_failures.no_certificate 'psd2edge_handshake_failures_total{reason="no_certificate"}'
same verify_fast_path 'psd2edge_handshake_verifications_total{path="fast"}'
same denied_unbound_cert 'psd2edge_requests_denied_total{reason="unbound_cert"}'
same responses_4xx 'psd2edge_responses_total{class="4xx"}'
same breakers.bank.state 'psd2edge_breaker_state{upstream="bank"}'
same quota_map_entries psd2edge_quota_map_entries
same ktls.connections psd2edge_ktls_connections_total
same clients psd2edge_registry_clients
same certs_active 'psd2edge_registry_certificates{state="active"}'
assert_eq off "$(json_get "$TEST_DIR/stats.json" xdp.mode)" "stats: xdp.mode"

# --- the endpoint's other answers ----------------------------------------------------------------
code=$(ns_exec "$GW_NS" curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9464/other)
assert_eq 404 "$code" "GET /other: 404"
code=$(ns_exec "$GW_NS" curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:9464/metrics)
assert_eq 405 "$code" "POST /metrics: 405"
code=$(scrape "$TEST_DIR/m10.txt" --http1.0)
assert_eq 200 "$code" "HTTP/1.0 GET /metrics: 200"
code=$(scrape "$TEST_DIR/mq.txt" -G -d name=x)
assert_eq 200 "$code" "GET /metrics?name=x: 200 (the query is ignored)"
# raw REQUEST: the status line the endpoint answers a raw request with
raw() {
	ns_exec "$GW_NS" python3 - "$1" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", 9464), timeout=10)
try:
    s.sendall(sys.argv[1].encode().decode("unicode_escape").encode("latin-1"))
    print(s.makefile("rb").readline().decode().strip())
except OSError as e:
    print("error", e)
EOF
}
assert_eq "HTTP/1.1 400 Bad Request" "$(raw 'GARBAGE\r\n\r\n')" "a malformed request line: 400"
assert_eq "HTTP/1.1 400 Bad Request" "$(raw 'GET /metrics HTTP/2.0\r\n\r\n')" "HTTP/2.0: 400"
big=$(python3 -c 'print("x" * 5000)')
assert_eq "HTTP/1.1 431 Request Header Fields Too Large" \
	"$(raw "GET /metrics HTTP/1.1\\r\\nX-Big: $big\\r\\n\\r\\n")" "a head over 4096 bytes: 431"

# Loopback only: not from the TPP side, and not on the TPP listener.
ns_exec "$TPP_NS" curl -s -o /dev/null --max-time 5 "http://$GW_IP:9464/metrics"
assert_eq 7 $? "the endpoint is not reachable from the TPP namespace (connection refused)"
gw_request tpp1 "$GW_URL/metrics?client_id=tpp1"
assert_not_contains "$(cat "$LAST_BODY")" "psd2edge_" "the TPP listener does not serve the metrics"

# --- metrics.listen "off" ---------------------------------------------------------------------------
daemon_stop || fail "daemon stopped"
config_render "$TEST_DIR/off.json" '{"metrics": {"listen": "off"}}'
daemon_start "$TEST_DIR/off.json"
ns_exec "$GW_NS" curl -s -o /dev/null --max-time 5 http://127.0.0.1:9464/metrics
assert_eq 7 $? "metrics.listen off: nothing listens"
ctl stats --json >"$TEST_DIR/stats-off.json"
assert_eq 0 "$(json_get "$TEST_DIR/stats-off.json" requests)" "metrics.listen off: stats still served"

finish
