#!/usr/bin/env bash
# Request paths cannot leave the upstream's path prefix (upstream.url
# http://127.0.0.1:8080/api/v1): every probe is either refused with a 400 JSON error before
# anything reaches the upstream, or arrives normalised (RFC 3986 remove_dot_segments, encoded
# dots read as dots) under /api/v1/, with no dot segment left for the bank's stack to resolve.
# Probes: "/../", "%2e%2e" in any case and mixed with dots, "%2f", "%5c", a raw backslash,
# "%00", ";" path parameters ("/..;/", which Tomcat and Spring strip to ".."), double encoding
# ("%252e%252e"), overlong UTF-8 ("%c0%ae"), and a fragment ("#") in the request target.
# Requests go as raw bytes (tlsclient.py): curl would normalise the path itself.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

topo_basic
pki_setup
upstream_start
config_render "$DAEMON_CONFIG" "{\"upstream\": {\"url\": \"http://127.0.0.1:$UPSTREAM_PORT/api/v1\"}}"
daemon_start
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null
assert_eq 0 $? "bind tpp1"

upstream_requests() { if [ -f "$UPSTREAM_LOG" ]; then wc -l <"$UPSTREAM_LOG"; else echo 0; fi; }

# Whether the path the upstream got, however its stack decodes and resolves it, stays under
# /api/v1/: decoded up to twice, '\' read as '/', ';' parameters stripped, dots resolved.
under_prefix() { # PATH_AS_RECEIVED
	python3 - "$1" <<'EOF'
import posixpath, re, sys, urllib.parse
raw = sys.argv[1].split("?", 1)[0]
views = {raw}
for _ in range(2):
    views |= {urllib.parse.unquote(v) for v in views}
views |= {v.replace("\\", "/") for v in views}
views |= {re.sub(r";[^/]*", "", v) for v in views}
for v in views:
    if any(seg in (".", "..") for seg in v.split("/")[1:]):
        sys.exit(1)  # a dot segment left for the bank to resolve
    if not (posixpath.normpath(v) + "/").startswith("/api/v1/"):
        sys.exit(1)
EOF
}

# probe WANT TARGET [WANT_PATH]: raw GET of TARGET with tpp1's certificate. WANT 400: refused
# with a JSON error and nothing forwarded; 200: the upstream got WANT_PATH.
n=0
probe() {
	local want=$1 target=$2 want_path=${3:-} before got
	n=$((n + 1))
	before=$(upstream_requests)
	printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$target" "$GW_HOST" >"$TEST_DIR/p$n.req"
	tlsclient tpp1 --idle 2 --max 10 raw <"$TEST_DIR/p$n.req" >"$TEST_DIR/p$n.out" 2>"$TEST_DIR/p$n.err"
	assert_contains "$(head -n1 "$TEST_DIR/p$n.out" | tr -d '\r')" " $want" "$target: $want"
	if [ "$want" = 400 ]; then
		assert_contains "$(cat "$TEST_DIR/p$n.out")" '"error":"invalid_request"' "$target: JSON error"
		assert_eq "$before" "$(upstream_requests)" "$target: nothing reached the upstream"
		return
	fi
	got=$(python3 -c 'import json,sys; print(json.loads(sys.stdin.readlines()[-1])["path"])' <"$UPSTREAM_LOG")
	assert_eq "$want_path" "$got" "$target: the upstream got the normalised path"
}

probe 400 '/../admin?client_id=tpp1'
probe 400 '/accounts/../../admin?client_id=tpp1'
probe 400 '/%2e%2e/admin?client_id=tpp1'
probe 400 '/%2E%2E/admin?client_id=tpp1'
probe 400 '/.%2e/admin?client_id=tpp1'
probe 400 '/%2e./admin?client_id=tpp1'
probe 400 '/accounts/%2e%2e/%2e%2e/admin?client_id=tpp1'
probe 400 '/accounts%2f..%2f..%2fadmin?client_id=tpp1'
probe 400 '/accounts%2F..%2F..%2Fadmin?client_id=tpp1'
probe 400 '/accounts%5c..%5c..%5cadmin?client_id=tpp1'
probe 400 '/accounts\..\..\admin?client_id=tpp1'
probe 400 '/accounts%00/x?client_id=tpp1'
probe 400 '/..;/admin?client_id=tpp1'
probe 400 '/accounts/..;/..;/admin?client_id=tpp1'
probe 400 '/accounts;jsessionid=x/balances?client_id=tpp1'
probe 400 '/%252e%252e/admin?client_id=tpp1'
probe 400 '/accounts%252f..%252f..%252fadmin?client_id=tpp1'
probe 400 '/%c0%ae%c0%ae/admin?client_id=tpp1'
probe 400 '/accounts?client_id=tpp1#frag'
probe 400 '/accounts#/../../admin?client_id=tpp1'

probe 200 '/accounts?client_id=tpp1' '/api/v1/accounts?client_id=tpp1'
probe 200 '/accounts/./x/../balances?client_id=tpp1&next=/../%2e%2e' \
	'/api/v1/accounts/balances?client_id=tpp1&next=/../%2e%2e'
probe 200 '/accounts/%2e/x/%2E%2e/balances?client_id=tpp1' '/api/v1/accounts/balances?client_id=tpp1'
probe 200 '/accounts/..?client_id=tpp1' '/api/v1/?client_id=tpp1'

# Whatever reached the upstream, seen the way any stack may read it, stays under /api/v1/.
while IFS= read -r path; do
	assert_true "the upstream's path $path stays under /api/v1/" under_prefix "$path"
done < <(python3 -c 'import json,sys
for l in sys.stdin: print(json.loads(l)["path"])' <"$UPSTREAM_LOG")

finish
