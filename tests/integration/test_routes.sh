#!/usr/bin/env bash
# Routes (issue 8): two routes reach two upstreams (two upstream.py instances, A under a base
# path). One keep-alive connection alternating between them: every request lands on its own
# upstream and every answer is that upstream's, never the other's (a session must not reuse
# route A's upstream connection for route B). Matching is by longest prefix on a segment
# boundary, after the path is normalised: "/payments/../accounts/1" (or with encoded dots) is
# A's, "/accountsx" is nobody's, "/PAYMENTS" and "//payments" are B's (route.h); encoded slashes and paths above the root are refused before
# any route sees them. A path without a route gets 404 JSON, reaches no upstream, and keeps the
# connection open.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

topo_basic
pki_setup
upstream_start --name a --port 8081
upstream_start --name b --port 8082
config_render "$DAEMON_CONFIG" '{"upstream": null,
	"upstreams": {"a": {"url": "http://127.0.0.1:8081/bank-a"},
	              "b": {"url": "http://127.0.0.1:8082"}},
	"routes": [{"prefix": "/accounts", "upstream": "a"},
	           {"prefix": "/payments", "upstream": "b"},
	           {"prefix": "/accounts/special", "upstream": "b"}]}'
daemon_start
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null || die "bind tpp1"

log_lines() { # NAME: requests upstream NAME has logged
	local f
	f=$(upstream_file "$1" log)
	if [ -f "$f" ]; then wc -l <"$f"; else echo 0; fi
}

# routed DESC CURL_PATH UPSTREAM FORWARDED_PATH: the request reaches UPSTREAM (a, b) and only
# it, as FORWARDED_PATH ("-": not checked), and the answer is that upstream's
routed() {
	local desc=$1 path=$2 want=$3 fwd=$4 na nb
	na=$(log_lines a)
	nb=$(log_lines b)
	assert_status 200 "$desc: 200" tpp1 --path-as-is -H "x-client-id: tpp1" "$GW_URL$path"
	assert_eq "$want" "$(json_get "$LAST_BODY" upstream)" "$desc: answered by upstream $want"
	[ "$fwd" = - ] || assert_eq "$fwd" "$(json_get "$LAST_BODY" path)" "$desc: forwarded as $fwd"
	if [ "$want" = a ]; then na=$((na + 1)); else nb=$((nb + 1)); fi
	assert_eq "$na $nb" "$(log_lines a) $(log_lines b)" "$desc: only upstream $want saw it"
}

# refused CODE DESC CURL_PATH: answered by the gateway with CODE; no upstream sees it
refused() {
	local code=$1 desc=$2 path=$3 before
	before="$(log_lines a) $(log_lines b)"
	assert_status "$code" "$desc: $code" tpp1 --path-as-is -H "x-client-id: tpp1" "$GW_URL$path"
	assert_eq "$before" "$(log_lines a) $(log_lines b)" "$desc: no upstream saw it"
}

# --- one keep-alive connection alternating A, B, A, B ... ------------------------------------
: >"$TEST_DIR/alt.req"
for i in 1 2 3 4 5 6 7 8; do
	if [ $((i % 2)) = 1 ]; then p=/accounts/1; else p=/payments/1; fi
	printf '{"path": "%s?m=%s", "headers": {"x-client-id": "tpp1"}}\n' "$p" "$i" >>"$TEST_DIR/alt.req"
done
tlsclient tpp1 seq <"$TEST_DIR/alt.req" >"$TEST_DIR/alt.out" 2>"$TEST_DIR/alt.err"
assert_eq 0 $? "8 alternating requests answered on one connection ($(tail -n 1 "$TEST_DIR/alt.out") $(cat "$TEST_DIR/alt.err"))"
for i in 1 2 3 4 5 6 7 8; do
	if [ $((i % 2)) = 1 ]; then want=a fwd=/bank-a/accounts/1; else want=b fwd=/payments/1; fi
	assert_eq 200 "$(json_line "$TEST_DIR/alt.out" "$i" status)" "alternating request $i: 200"
	assert_eq "$want" "$(json_line "$TEST_DIR/alt.out" "$i" body.upstream)" \
		"alternating request $i: answered by upstream $want"
	assert_eq "$fwd?m=$i" "$(json_line "$TEST_DIR/alt.out" "$i" body.path)" \
		"alternating request $i: the answer is to this request"
	assert_eq false "$(json_line "$TEST_DIR/alt.out" "$i" closed)" \
		"alternating request $i: the connection stays open"
done
# Each upstream's log holds its own requests and nothing else.
assert_eq "/bank-a/accounts/1?m=1 /bank-a/accounts/1?m=3 /bank-a/accounts/1?m=5 /bank-a/accounts/1?m=7" \
	"$(python3 -c 'import json,sys; print(" ".join(json.loads(l)["path"] for l in open(sys.argv[1])))' \
		"$(upstream_file a log)")" "upstream A received exactly the A requests, in order"
assert_eq "/payments/1?m=2 /payments/1?m=4 /payments/1?m=6 /payments/1?m=8" \
	"$(python3 -c 'import json,sys; print(" ".join(json.loads(l)["path"] for l in open(sys.argv[1])))' \
		"$(upstream_file b log)")" "upstream B received exactly the B requests, in order"
# The worker's pool keeps one connection per upstream alive between the requests.
for u in a b; do
	assert_eq 1 "$(python3 -c 'import json,sys; print(len({json.loads(l)["conn"] for l in open(sys.argv[1])}))' \
		"$(upstream_file "$u" log)")" "upstream $u: its four requests came on one pooled connection"
done

# --- matching -----------------------------------------------------------------------------------
routed "the prefix itself" /accounts a /bank-a/accounts
routed "a path under the prefix" /accounts/x/y a /bank-a/accounts/x/y
routed "the prefix with a query" "/accounts?q=1" a "/bank-a/accounts?q=1"
routed "the longest prefix wins" /accounts/special/1 b /accounts/special/1
routed "a longer prefix matches on a segment boundary only" /accounts/specialx a /bank-a/accounts/specialx
routed "/payments/../accounts/1 is normalised before matching" /payments/../accounts/1 a /bank-a/accounts/1
routed "/accounts/../payments/1 is normalised before matching" /accounts/../payments/1 b /payments/1
routed "/accounts/./x is normalised before matching" /accounts/./x a /bank-a/accounts/x
routed "encoded dot-segments are normalised before matching" /payments/%2e%2e/accounts/1 a /bank-a/accounts/1
# Re-spellings some upstream stack reads as the same path take the same route (route.h).
routed "letters match in either case" /PAYMENTS/1 b /PAYMENTS/1
routed "an escaped unreserved character matches as itself" /%70ayments/1 b -
routed "a run of slashes matches as one" //payments//1 b -

refused 404 "a path without a route" /other/1
assert_eq not_found "$(json_get "$LAST_BODY" error)" "no route: error not_found"
assert_eq "no route for this path" "$(json_get "$LAST_BODY" error_description)" "no route: error_description"
refused 404 "/accountsx does not match /accounts" /accountsx
refused 404 "/ has no route" /
refused 400 "a path climbing above the root is refused" /accounts/../../payments/1
refused 400 "an encoded slash is refused" /payments/..%2faccounts/1

# --- a 404 keeps the connection -----------------------------------------------------------------
printf '%s\n' '{"path": "/other", "headers": {"x-client-id": "tpp1"}}' \
	'{"path": "/accounts/2", "headers": {"x-client-id": "tpp1"}}' >"$TEST_DIR/nf.req"
tlsclient tpp1 seq <"$TEST_DIR/nf.req" >"$TEST_DIR/nf.out" 2>"$TEST_DIR/nf.err"
assert_eq 0 $? "a request after a 404 on the same connection is answered ($(tail -n 1 "$TEST_DIR/nf.out"))"
assert_eq "404 200" "$(json_line "$TEST_DIR/nf.out" 1 status) $(json_line "$TEST_DIR/nf.out" 2 status)" \
	"404 then 200 on one connection"
assert_eq false "$(json_line "$TEST_DIR/nf.out" 1 closed)" "the 404 does not close the connection"

finish
