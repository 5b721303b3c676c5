#!/usr/bin/env bash
# kTLS unavailable (the development host: no TLS ULP in the kernel): the connections that
# tests/vm/test_ktls_daemon.sh runs with kTLS inside the VM work the same in userspace TLS,
# and `psd2edgectl stats` counts every one of them as a fallback with reason no_kernel.
#   - TLS 1.2 and TLS 1.3 mTLS connections: 200, ktls.tx/rx stay 0, fallback rises by one each
#   - an 8 MiB request body and an 8 MiB response body arrive byte-exact (sha256)
#   - a wrong client_id is still refused (401 invalid_client)
#   - several requests on one keep-alive connection, one of them a large response
# Skips (77) when the kernel does have kTLS: that case is the VM test's.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

BODY_BYTES=$((8 << 20))

stats_json() { # OUT: psd2edgectl stats --json into OUT
	ctl stats --json >"$1" 2>"$TEST_DIR/stats.err" || die "psd2edgectl stats failed: $(cat "$TEST_DIR/stats.err")"
}

stat_of() { # FILE PATH: the counter's value, or "missing"
	json_get "$1" "$2" 2>/dev/null || echo missing
}

# The body upstream.py sends for /big?bytes=N: "0123456789abcdef" repeated, cut at N bytes.
big_sha256() {
	python3 - "$1" <<'EOF'
import hashlib, sys
n = int(sys.argv[1]); h = hashlib.sha256(); chunk = b"0123456789abcdef" * 4096
while n > 0:
    part = chunk[:min(n, len(chunk))]; h.update(part); n -= len(part)
print(h.hexdigest())
EOF
}

topo_basic
pki_setup
grep -qw '^tls' /proc/modules 2>/dev/null && skip "this kernel has the TLS ULP loaded: the VM test covers kTLS"
upstream_start
config_render "$DAEMON_CONFIG" '{"limits": {"max_body_bytes": 134217728},
	"client_id": ["header:x-client-id"]}'
daemon_start
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null
assert_eq 0 $? "bind tpp1"

stats_json "$TEST_DIR/s0.json"
assert_eq false "$(stat_of "$TEST_DIR/s0.json" ktls.kernel_available)" "stats: ktls.kernel_available is false"
if [ "$(stat_of "$TEST_DIR/s0.json" ktls.kernel_available)" = true ]; then
	skip "the daemon found kTLS in this kernel: the VM test covers it"
fi

H=(-H 'X-Client-Id: tpp1')

# --- TLS 1.2 and 1.3: served in userspace TLS, counted as fallbacks -------------------------
assert_status 200 "TLS 1.2 request without kTLS" tpp1 --tlsv1.2 --tls-max 1.2 "${H[@]}" "$GW_URL/v12"
assert_status 200 "TLS 1.3 request without kTLS" tpp1 --tlsv1.3 "${H[@]}" "$GW_URL/v13"
stats_json "$TEST_DIR/s1.json"
assert_eq 2 "$(stat_of "$TEST_DIR/s1.json" ktls.connections)" "two handshakes passed to kTLS setup"
assert_eq 2 "$(stat_of "$TEST_DIR/s1.json" ktls.fallback)" "both counted as fallback"
assert_eq 2 "$(stat_of "$TEST_DIR/s1.json" ktls.fallback_by_reason.no_kernel)" "fallback reason: no_kernel"
assert_eq 0 "$(stat_of "$TEST_DIR/s1.json" ktls.tx)" "no kTLS TX"
assert_eq 0 "$(stat_of "$TEST_DIR/s1.json" ktls.rx)" "no kTLS RX"
assert_eq 0 "$(stat_of "$TEST_DIR/s1.json" ktls.tx_open)" "no open kTLS TX connection"

# --- large bodies, byte-exact -----------------------------------------------------------------
head -c "$BODY_BYTES" /dev/urandom >"$TEST_DIR/req.bin"
want=$(sha256sum "$TEST_DIR/req.bin" | cut -d' ' -f1)
CURL_MAX_TIME=60 assert_status 200 "8 MiB request body" tpp1 "${H[@]}" -H 'Expect:' \
	-H 'Content-Type: application/octet-stream' --data-binary "@$TEST_DIR/req.bin" "$GW_URL/upload"
assert_eq "$BODY_BYTES" "$(json_get "$LAST_BODY" body_length)" "request body length at the upstream"
assert_eq "$want" "$(json_get "$LAST_BODY" body_sha256)" "request body sha256 at the upstream"

CURL_MAX_TIME=60 gw_request tpp1 "${H[@]}" "$GW_URL/big?bytes=$BODY_BYTES"
assert_eq 200 "$LAST_CODE" "8 MiB response body: status"
assert_eq "$BODY_BYTES" "$(stat -c %s "$LAST_BODY")" "response body length"
assert_eq "$(big_sha256 "$BODY_BYTES")" "$(sha256sum "$LAST_BODY" | cut -d' ' -f1)" "response body sha256"

# --- the binding is still enforced ------------------------------------------------------------
assert_status 401 "wrong client_id refused" tpp1 -H 'X-Client-Id: tpp2' "$GW_URL/x"
assert_invalid_client_body "wrong client_id"

# --- keep-alive: several requests on one connection, a large response in the middle -------------
out=$(gw_curl tpp1 "${H[@]}" -w '%{http_code}/%{num_connects}\n' \
	-o "$TEST_DIR/k1.json" "$GW_URL/k1" \
	-o "$TEST_DIR/k2.bin" "$GW_URL/big?bytes=1048576" \
	-o "$TEST_DIR/k3.json" "$GW_URL/k3" 2>"$TEST_DIR/curl.err")
assert_eq "200/1 200/0 200/0" "$(echo $out)" "keep-alive: three 200s on one connection"
assert_eq "$(big_sha256 1048576)" "$(sha256sum "$TEST_DIR/k2.bin" | cut -d' ' -f1)" \
	"keep-alive: the 1 MiB response is byte-exact"
assert_eq "$(json_get "$TEST_DIR/k1.json" conn)" "$(json_get "$TEST_DIR/k3.json" conn)" \
	"keep-alive: the upstream saw one connection"
assert_eq /k3 "$(json_get "$TEST_DIR/k3.json" path)" "keep-alive: the request after the large body is parsed"

stats_json "$TEST_DIR/s2.json"
n=$(stat_of "$TEST_DIR/s2.json" ktls.connections)
assert_eq 6 "$n" "six connections passed to kTLS setup"
assert_eq "$n" "$(stat_of "$TEST_DIR/s2.json" ktls.fallback)" "every connection counted as fallback"
assert_eq "$n" "$(stat_of "$TEST_DIR/s2.json" ktls.fallback_by_reason.no_kernel)" \
	"every fallback for reason no_kernel"
assert_eq 0 "$(stat_of "$TEST_DIR/s2.json" ktls.tx)" "still no kTLS TX"
assert_eq 0 "$(stat_of "$TEST_DIR/s2.json" ktls.rx)" "still no kTLS RX"

finish
