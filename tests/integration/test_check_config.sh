#!/usr/bin/env bash
# psd2edged --check-config FILE: 0 for a good file; otherwise non-zero with the first wrong
# key named by its path ("upstream.ca: file not found"). Relative paths are resolved against
# the file's directory, whatever the current directory. Needs no namespace.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_binaries
pki_setup

# check NAME OVERRIDE: render and run --check-config; CHECK_RC and CHECK_OUT (stdout+stderr)
check() {
	config_render "$TEST_DIR/$1.json" "$2"
	CHECK_OUT=$("$PSD2EDGED" --check-config "$TEST_DIR/$1.json" 2>&1)
	CHECK_RC=$?
}

# bad NAME EXPECTED_TEXT OVERRIDE
bad() {
	check "$1" "$3"
	assert_ne 0 "$CHECK_RC" "$1: --check-config fails"
	assert_contains "$CHECK_OUT" "$2" "$1: names the problem"
}

check good '{}'
assert_eq 0 "$CHECK_RC" "good config accepted ($CHECK_OUT)"
check good-https "{\"upstream\": {\"url\": \"https://127.0.0.1:9443\", \"ca\": \"$PKI/bank-ca.pem\",
	\"cert\": \"$PKI/gateway-qwac.pem\", \"key\": \"$PKI/gateway-qwac.key\"},
	\"workers\": 2, \"limits\": {\"max_header_bytes\": 8192, \"header_timeout_ms\": 5000}}"
assert_eq 0 "$CHECK_RC" "good https config accepted ($CHECK_OUT)"
check good-nocrl '{"tls": {"crl": null}}'
assert_eq 0 "$CHECK_RC" "config without a CRL accepted ($CHECK_OUT)"
check good-routes '{"upstreams": {"accounts": {"url": "http://127.0.0.1:8081",
	"circuit_breaker": {"consecutive_failures": 5}}},
	"routes": [{"prefix": "/accounts", "upstream": "accounts",
	            "quota": {"limit": 4, "window": "day", "key": "header:x-account-id"}},
	           {"prefix": "/", "upstream": "default"}]}'
assert_eq 0 "$CHECK_RC" "config with upstreams and routes accepted ($CHECK_OUT)"

bad upstream-ca "upstream.ca: file not found" "{\"upstream\": {\"url\": \"https://127.0.0.1:9443\",
	\"ca\": \"$TEST_DIR/missing-ca.pem\", \"cert\": \"$PKI/gateway-qwac.pem\", \"key\": \"$PKI/gateway-qwac.key\"}}"
bad tls-cert "tls.cert" "{\"tls\": {\"cert\": \"$TEST_DIR/missing.pem\"}}"
bad tls-client-ca "tls.client_ca" "{\"tls\": {\"client_ca\": \"$TEST_DIR/missing.pem\"}}"
bad tls-crl "tls.crl" "{\"tls\": {\"crl\": \"$TEST_DIR/missing.crl\"}}"
bad listen "listen[0]" '{"listen": ["not-an-address"]}'
bad listen2 "listen[1]" '{"listen": ["0.0.0.0:8443", "1.2.3.4:99999"]}'
bad client-id-kind "client_id[0]" '{"client_id": ["cookie:client_id"]}'
bad bpf-mode "bpf.mode" '{"bpf": {"mode": "turbo"}}'
bad upstream-url "upstream.url" '{"upstream": {"url": "ftp://127.0.0.1:21"}}'
bad no-upstream "upstream" '{"upstream": null}'
bad no-tls "tls" '{"tls": null}'
bad limits-type "limits.max_header_bytes" '{"limits": {"max_header_bytes": "big"}}'
bad workers "workers" '{"workers": -1}'
bad route-upstream "routes[1].upstream: unknown upstream 'acounts'" '{"upstreams": {"accounts":
	{"url": "http://127.0.0.1:8081"}}, "routes": [{"prefix": "/", "upstream": "default"},
	{"prefix": "/accounts", "upstream": "acounts"}]}'
bad route-duplicate "routes[1].prefix: duplicate of routes[0]" '{"routes": [
	{"prefix": "/accounts", "upstream": "default"}, {"prefix": "/accounts/", "upstream": "default"}]}'
bad quota-limit "routes[0].quota.limit: must be between 1 and 1000000000" '{"routes": [
	{"prefix": "/", "upstream": "default", "quota": {"limit": 0, "window": "day"}}]}'

printf '{"listen": [' >"$TEST_DIR/broken.json"
"$PSD2EDGED" --check-config "$TEST_DIR/broken.json" >/dev/null 2>&1
assert_ne 0 $? "truncated JSON fails"
"$PSD2EDGED" --check-config "$TEST_DIR/absent.json" >/dev/null 2>&1
assert_ne 0 $? "missing file fails"

# Relative paths: relative to the config file's directory, not the current directory.
mkdir -p "$TEST_DIR/etc"
cp "$PKI"/{server.pem,server.key,tpp-ca.pem,tpp.crl,bank-ca.pem,gateway-qwac.pem,gateway-qwac.key} "$TEST_DIR/etc/"
cat >"$TEST_DIR/etc/rel.json" <<JSON
{
  "listen": ["0.0.0.0:8443"],
  "tls": {"cert": "server.pem", "key": "server.key", "client_ca": "tpp-ca.pem", "crl": "tpp.crl"},
  "upstream": {"url": "https://127.0.0.1:9443", "ca": "bank-ca.pem",
               "cert": "gateway-qwac.pem", "key": "gateway-qwac.key"},
  "client_id": ["form:client_id", "query:client_id", "header:x-client-id"],
  "registry": "registry.db",
  "control_socket": "control.sock",
  "bpf": {"mode": "off"}
}
JSON
out=$(cd / && "$PSD2EDGED" --check-config "$TEST_DIR/etc/rel.json" 2>&1)
assert_eq 0 $? "relative paths resolved against the config's directory ($out)"
rm "$TEST_DIR/etc/bank-ca.pem"
out=$(cd "$PKI" && "$PSD2EDGED" --check-config "$TEST_DIR/etc/rel.json" 2>&1)
assert_ne 0 $? "a relative path is not looked up in the current directory"
assert_contains "$out" "upstream.ca: file not found" "relative upstream.ca missing is named"

finish
