#!/usr/bin/env bash
# HTTP/1.1 framing at the edge (RFC 9112 §6; request smuggling must not pass):
#  - Content-Length + Transfer-Encoding, differing duplicate Content-Length, a bad chunk size,
#    a Transfer-Encoding that is not chunked, whitespace before a colon: 400, the connection is
#    closed and nothing reaches the upstream
#  - headers over limits.max_header_bytes: 431; a body over limits.max_body_bytes: 413
#    (Content-Length and chunked)
#  - slowloris: a head still incomplete after limits.header_timeout_ms is cut off (408 or close)
#  - pipelining: two requests in one write get two responses, in order
#  - sane bodies (Content-Length, chunked) and big/chunked responses pass through intact
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

topo_basic
pki_setup
upstream_start
config_render "$DAEMON_CONFIG" \
	'{"limits": {"max_header_bytes": 4096, "max_body_bytes": 65536, "header_timeout_ms": 2000}}'
daemon_start
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null
assert_eq 0 $? "bind tpp1"

upstream_requests() { if [ -f "$UPSTREAM_LOG" ]; then wc -l <"$UPSTREAM_LOG"; else echo 0; fi; }

# raw NAME <FILE: send stdin as one write (not from a pipe: RAW_RC must reach this shell) with tpp1's certificate; output in $TEST_DIR/NAME.out,
# RAW_RC: 0 the daemon closed, 3 still open after 2 s of silence
raw() {
	tlsclient tpp1 --idle 2 --max 10 raw >"$TEST_DIR/$1.out" 2>"$TEST_DIR/$1.err"
	RAW_RC=$?
}

status_line() { head -n1 "$TEST_DIR/$1.out" | tr -d '\r'; }

H="Host: $GW_HOST"
# bad_framing DESC NAME REQUEST: 400, connection closed, upstream untouched
bad_framing() {
	local before
	before=$(upstream_requests)
	printf '%b' "$3" >"$TEST_DIR/$2.req"
	raw "$2" <"$TEST_DIR/$2.req"
	assert_contains "$(status_line "$2")" " 400" "$1: 400"
	assert_eq 0 "$RAW_RC" "$1: connection closed after the 400 ($(tail -n1 "$TEST_DIR/$2.err"))"
	assert_eq "$before" "$(upstream_requests)" "$1: nothing reached the upstream"
}

bad_framing "Content-Length with Transfer-Encoding" clte \
	"POST /a?client_id=tpp1 HTTP/1.1\r\n$H\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled?client_id=tpp1 HTTP/1.1\r\n$H\r\n\r\n"
bad_framing "Transfer-Encoding with Content-Length (other order)" tecl \
	"POST /a?client_id=tpp1 HTTP/1.1\r\n$H\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST /a HTTP/1.1\r\n\r\n0\r\n\r\n"
bad_framing "two different Content-Length headers" dupcl \
	"POST /a?client_id=tpp1 HTTP/1.1\r\n$H\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
bad_framing "Content-Length list with different values" listcl \
	"POST /a?client_id=tpp1 HTTP/1.1\r\n$H\r\nContent-Length: 5, 6\r\n\r\nhello!"
bad_framing "invalid chunk size" badchunk \
	"POST /a?client_id=tpp1 HTTP/1.1\r\n$H\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
bad_framing "Transfer-Encoding that does not end in chunked" tegzip \
	"POST /a?client_id=tpp1 HTTP/1.1\r\n$H\r\nTransfer-Encoding: gzip\r\n\r\nhello"
bad_framing "whitespace between a header name and its colon" wscolon \
	"POST /a?client_id=tpp1 HTTP/1.1\r\n$H\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello"
bad_framing "negative Content-Length" negcl \
	"POST /a?client_id=tpp1 HTTP/1.1\r\n$H\r\nContent-Length: -1\r\n\r\nhello"

# --- limits ----------------------------------------------------------------------------------
big=$(head -c 8000 /dev/zero | tr '\0' a)
assert_status 431 "headers beyond max_header_bytes" tpp1 -H "X-Big: $big" "$GW_URL/a?client_id=tpp1"
assert_status 200 "headers within max_header_bytes" tpp1 -H "X-Big: ${big:0:2000}" "$GW_URL/a?client_id=tpp1"
head -c 60000 /dev/urandom >"$TEST_DIR/body-ok"
head -c 70000 /dev/urandom >"$TEST_DIR/body-big"
assert_status 200 "body within max_body_bytes (Content-Length)" tpp1 -H 'Content-Type: application/octet-stream' \
	--data-binary @"$TEST_DIR/body-ok" "$GW_URL/upload?client_id=tpp1"
assert_eq 60000 "$(json_get "$LAST_BODY" body_length)" "60000-byte body reaches the upstream whole"
assert_eq "$(sha256sum <"$TEST_DIR/body-ok" | cut -d' ' -f1)" "$(json_get "$LAST_BODY" body_sha256)" \
	"60000-byte body reaches the upstream unchanged"
assert_status 200 "chunked body within max_body_bytes" tpp1 -H 'Transfer-Encoding: chunked' \
	-H 'Content-Type: application/octet-stream' --data-binary @"$TEST_DIR/body-ok" "$GW_URL/upload?client_id=tpp1"
assert_eq "$(sha256sum <"$TEST_DIR/body-ok" | cut -d' ' -f1)" "$(json_get "$LAST_BODY" body_sha256)" \
	"chunked body reaches the upstream unchanged"
assert_status 413 "body beyond max_body_bytes (Content-Length)" tpp1 -H 'Content-Type: application/octet-stream' \
	--data-binary @"$TEST_DIR/body-big" "$GW_URL/upload?client_id=tpp1"
assert_status 413 "chunked body beyond max_body_bytes" tpp1 -H 'Transfer-Encoding: chunked' \
	-H 'Content-Type: application/octet-stream' --data-binary @"$TEST_DIR/body-big" "$GW_URL/upload?client_id=tpp1"

# --- slowloris ------------------------------------------------------------------------------------
tlsclient tpp1 --interval 300 --max 10 slowloris >"$TEST_DIR/slow.out" 2>"$TEST_DIR/slow.err"
rc=$?
assert_eq 0 "$rc" "a head sent slowly is cut off ($(tail -n1 "$TEST_DIR/slow.err"))"
if [ "$rc" = 0 ]; then
	secs=$(tail -n1 "$TEST_DIR/slow.err" | sed -E 's/closed after ([0-9.]+)s/\1/')
	assert_true "cut off near header_timeout_ms=2000 (after ${secs}s)" \
		python3 -c "import sys; sys.exit(0 if 1.5 <= $secs <= 4.0 else 1)"
	first=$(head -n1 "$TEST_DIR/slow.out" | tr -d '\r')
	if [ -n "$first" ]; then
		assert_contains "$first" " 408" "the answer to a slow head, if any, is 408"
	fi
fi

# --- pipelining ----------------------------------------------------------------------------------
printf 'GET /p1?client_id=tpp1 HTTP/1.1\r\n%s\r\n\r\nGET /p2?client_id=tpp1 HTTP/1.1\r\n%s\r\n\r\n' "$H" "$H" | raw pipe
assert_eq 2 "$(grep -c '^HTTP/1.1 200' "$TEST_DIR/pipe.out")" "two pipelined requests get two 200s"
p1=$(grep -bo '"/p1?client_id=tpp1"' "$TEST_DIR/pipe.out" | head -n1 | cut -d: -f1)
p2=$(grep -bo '"/p2?client_id=tpp1"' "$TEST_DIR/pipe.out" | head -n1 | cut -d: -f1)
assert_true "responses come back in request order (p1 at ${p1:-none}, p2 at ${p2:-none})" \
	test -n "$p1" -a -n "$p2" -a "${p1:-0}" -lt "${p2:-0}"
printf 'GET /p1?client_id=tpp1 HTTP/1.1\r\n%s\r\n\r\nGET /p2?client_id=tpp2 HTTP/1.1\r\n%s\r\n\r\nGET /p3?client_id=tpp1 HTTP/1.1\r\n%s\r\n\r\n' "$H" "$H" "$H" | raw pipe2
assert_eq "HTTP/1.1 200|HTTP/1.1 401" "$(grep '^HTTP/1.1 ' "$TEST_DIR/pipe2.out" | head -n2 | cut -c1-12 | tr -d '\r' | paste -sd'|')" \
	"pipelined: 200 then 401 for the request claiming another client_id"

# --- responses ------------------------------------------------------------------------------------
n=$(gw_curl tpp1 "$GW_URL/big?bytes=5000000&client_id=tpp1" | wc -c)
assert_eq 5000000 "$n" "a 5 MB response passes through whole"
assert_status 200 "a chunked response passes through" tpp1 "$GW_URL/chunked?chunks=5&client_id=tpp1"
assert_true "the chunked response body is intact JSON" json_valid "$LAST_BODY"
codes=$(gw_curl tpp1 -o /dev/null -o /dev/null -o /dev/null -w '%{http_code}/%{num_connects} ' \
	"$GW_URL/k1?client_id=tpp1" "$GW_URL/k2?client_id=tpp1" "$GW_URL/k3?client_id=tpp1")
assert_eq "200/1 200/0 200/0 " "$codes" "keep-alive: three requests on one connection (code/new connections)"
# Idle between requests (0.5 s apart), the connection gives back its buffers and OpenSSL's; the
# next request on it must find them again.
codes=$(gw_curl tpp1 --rate 2/s -o "$TEST_DIR/i1.json" -o "$TEST_DIR/i2.json" -o "$TEST_DIR/i3.json" \
	-w '%{http_code}/%{num_connects} ' "$GW_URL/i1?client_id=tpp1" "$GW_URL/i2?client_id=tpp1" \
	"$GW_URL/i3?client_id=tpp1")
assert_eq "200/1 200/0 200/0 " "$codes" "keep-alive: requests after idle pauses on one connection"
assert_eq "/i3?client_id=tpp1" "$(json_get "$TEST_DIR/i3.json" path)" \
	"keep-alive: the request after an idle pause reaches the upstream whole"

finish
