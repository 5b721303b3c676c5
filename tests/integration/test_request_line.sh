#!/usr/bin/env bash
# Methods and head sizes:
#  - TRACE, and any method outside http.methods (default GET HEAD POST PUT PATCH DELETE
#    OPTIONS), gets 405 with Allow listing the allowed methods and a JSON error; nothing
#    reaches the upstream
#  - one huge request line (20 KB) gets 414, before the head's 431; a target within
#    limits.max_uri_bytes passes
#  - many small header fields (200 x "A: b") get 431, as does one huge field
#  - a configured http.methods and limits.max_uri_bytes apply
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

topo_basic
pki_setup
upstream_start
config_render "$DAEMON_CONFIG"
daemon_start
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null
assert_eq 0 $? "bind tpp1"

upstream_requests() { if [ -f "$UPSTREAM_LOG" ]; then wc -l <"$UPSTREAM_LOG"; else echo 0; fi; }
H="Host: $GW_HOST"

# refused STATUS DESC NAME: the raw request in $TEST_DIR/NAME.req gets STATUS with a JSON
# error, the connection closes and nothing reaches the upstream.
refused() {
	local before
	before=$(upstream_requests)
	tlsclient tpp1 --idle 2 --max 10 raw <"$TEST_DIR/$3.req" >"$TEST_DIR/$3.out" 2>"$TEST_DIR/$3.err"
	local rc=$?
	assert_contains "$(head -n1 "$TEST_DIR/$3.out" | tr -d '\r')" " $1" "$2: $1"
	assert_contains "$(cat "$TEST_DIR/$3.out")" '"error":"invalid_request"' "$2: JSON error"
	assert_eq 0 "$rc" "$2: the connection is closed ($(tail -n1 "$TEST_DIR/$3.err"))"
	assert_eq "$before" "$(upstream_requests)" "$2: nothing reached the upstream"
}

header_of() { grep -i "^$1:" "$TEST_DIR/$2.out" | head -n1 | tr -d '\r'; }

# --- methods ----------------------------------------------------------------------------------
printf 'TRACE /accounts?client_id=tpp1 HTTP/1.1\r\n%s\r\nX-Secret: token\r\n\r\n' "$H" >"$TEST_DIR/trace.req"
refused 405 "TRACE" trace
assert_eq "Allow: DELETE, GET, HEAD, POST, PUT, OPTIONS, PATCH" "$(header_of Allow trace)" \
	"TRACE: Allow lists the default methods"
assert_not_contains "$(cat "$TEST_DIR/trace.out")" "token" "TRACE: the request is not reflected"
printf 'PROPFIND /accounts?client_id=tpp1 HTTP/1.1\r\n%s\r\n\r\n' "$H" >"$TEST_DIR/propfind.req"
refused 405 "PROPFIND (not in the default methods)" propfind
for m in GET POST PUT PATCH DELETE OPTIONS; do
	assert_status 200 "$m passes" tpp1 -X "$m" "$GW_URL/accounts?client_id=tpp1"
done
assert_status 200 "HEAD passes" tpp1 -I "$GW_URL/accounts?client_id=tpp1"

# --- sizes ------------------------------------------------------------------------------------
long=$(head -c 20000 /dev/zero | tr '\0' a)
printf 'GET /%s?client_id=tpp1 HTTP/1.1\r\n%s\r\n\r\n' "$long" "$H" >"$TEST_DIR/uri20k.req"
refused 414 "a 20 KB request line" uri20k
assert_status 200 "an 8000-byte target passes (limits.max_uri_bytes 8192)" tpp1 \
	"$GW_URL/${long:0:7970}?client_id=tpp1"
{
	printf 'GET /accounts?client_id=tpp1 HTTP/1.1\r\n%s\r\n' "$H"
	for _ in $(seq 200); do printf 'A: b\r\n'; done
	printf '\r\n'
} >"$TEST_DIR/many.req"
refused 431 "200 small header fields" many
printf 'GET /accounts?client_id=tpp1 HTTP/1.1\r\n%s\r\nX-Big: %s\r\n\r\n' "$H" "$long" >"$TEST_DIR/bigfield.req"
refused 431 "one 20 KB header field" bigfield

# --- configured -------------------------------------------------------------------------------
daemon_stop
config_render "$DAEMON_CONFIG" '{"http": {"methods": ["GET", "DELETE"]}, "limits": {"max_uri_bytes": 1024}}'
daemon_start
printf 'POST /accounts?client_id=tpp1 HTTP/1.1\r\n%s\r\nContent-Length: 0\r\n\r\n' "$H" >"$TEST_DIR/post.req"
refused 405 "POST outside http.methods" post
assert_eq "Allow: DELETE, GET" "$(header_of Allow post)" "Allow lists http.methods"
assert_status 200 "DELETE in http.methods passes" tpp1 -X DELETE "$GW_URL/accounts?client_id=tpp1"
printf 'GET /%s?client_id=tpp1 HTTP/1.1\r\n%s\r\n\r\n' "${long:0:1100}" "$H" >"$TEST_DIR/uri1100.req"
refused 414 "a target over limits.max_uri_bytes 1024" uri1100
assert_status 200 "a target within limits.max_uri_bytes passes" tpp1 "$GW_URL/${long:0:990}?client_id=tpp1"

finish
