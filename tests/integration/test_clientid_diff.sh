#!/usr/bin/env bash
# Issue 7's client_id differentials, end to end. tpp1 (bound, its own certificate) sends
# requests that carry its id where the gateway checks it and the victim's id (tpp2, bound too)
# where the bank's application could read it instead: a parameter name in another case, with
# brackets, a NUL, a dot, padding or %uXXXX; a ';' separator; a cookie; a multipart, gzip-encoded
# or UTF-16/EBCDIC/UTF-7 form; a POST without Content-Type; a Content-Type with a comma; a
# fragment; a query client_id when only form and header are configured, a form one when only
# query and header are. Each gets 400 invalid_request or 401 invalid_client, none reaches the
# upstream, and the upstream never sees "tpp2" at all. The same shapes with tpp1 everywhere
# pass, so the refusals are not the gateway refusing everything.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

topo_basic
pki_setup
upstream_start

ctl_bind_both() {
	ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null
	assert_eq 0 $? "bind tpp1"
	ctl bind tpp2 "$PKI/tpp2.pem" >/dev/null
	assert_eq 0 $? "bind tpp2 (the victim)"
}

upstream_requests() { [ -f "$UPSTREAM_LOG" ] && wc -l <"$UPSTREAM_LOG" || echo 0; }

# Restarts the daemon with client_id sources SOURCES_JSON (the registry persists).
with_sources() { # SOURCES_JSON
	daemon_stop
	config_render "$DAEMON_CONFIG" "{\"client_id\": $1}"
	daemon_start
}

# probe CODE DESC CURL_ARGS...: tpp1's certificate; 400 must say invalid_request, 401
# invalid_client.
probe() {
	local want=$1 desc=$2 error
	shift 2
	assert_status "$want" "$desc" tpp1 "$@"
	case $want in
	400) error=invalid_request ;;
	*) error=invalid_client ;;
	esac
	assert_eq "$error" "$(json_get "$LAST_BODY" error 2>/dev/null)" "$desc: error is $error"
}

FORM_CT='Content-Type: application/x-www-form-urlencoded'
printf 'client_id=tpp2' >"$TEST_DIR/victim.form"
python3 - "$TEST_DIR" <<'EOF' || die "cannot write the encoded bodies"
import gzip, sys
d = sys.argv[1]
open(d + "/victim.gz", "wb").write(gzip.compress(b"client_id=tpp2"))
open(d + "/victim.utf16", "wb").write("client_id=tpp2".encode("utf-16-le"))
open(d + "/victim.ibm037", "wb").write("client_id=tpp2".encode("cp037"))
open(d + "/victim.utf7", "wb").write(b"client+AF8-id=tpp2")
EOF

config_render "$DAEMON_CONFIG"
daemon_start
ctl_bind_both

# --- all three sources (form, query, header) ---------------------------------------------------
assert_status 200 "control: tpp1 in the query" tpp1 "$GW_URL/a?client_id=tpp1"
assert_status 200 "control: a UTF-8 form" tpp1 -H "$FORM_CT; charset=utf-8" \
	--data-binary 'client_id=tpp1' "$GW_URL/token"
assert_status 200 "control: a ';' away from client_id" tpp1 "$GW_URL/a?x=1;y=2&client_id=tpp1"
assert_status 200 "control: other cookies" tpp1 -H 'Cookie: session=1' "$GW_URL/a?client_id=tpp1"
assert_status 200 "control: a JSON body without client_id" tpp1 -H 'Content-Type: application/json' \
	--data-binary '{"amount": {"currency": "EUR", "amount": "12.00"}}' "$GW_URL/payments?client_id=tpp1"

before=$(upstream_requests)
probe 400 "query name in another case" -g "$GW_URL/a?client_id=tpp1&Client_Id=tpp2"
probe 400 "query name in capitals" -g "$GW_URL/a?client_id=tpp1&CLIENT_ID=tpp2"
probe 400 "form name in another case" -H "$FORM_CT" --data-binary 'client_id=tpp1&Client_Id=tpp2' \
	"$GW_URL/token"
probe 400 "query name with []" -g "$GW_URL/a?client_id=tpp1&client_id[]=tpp2"
probe 400 "query name in brackets" -g "$GW_URL/a?client_id=tpp1&[client_id]=tpp2"
probe 400 "query name with an encoded NUL" "$GW_URL/a?client_id=tpp1&client_id%00=tpp2"
probe 400 "query name with a dot (PHP reads client_id)" "$GW_URL/a?client_id=tpp1&client.id=tpp2"
probe 400 "query name with a leading +" "$GW_URL/a?client_id=tpp1&+client_id=tpp2"
probe 400 "query name with a trailing space" "$GW_URL/a?client_id=tpp1&client_id%20=tpp2"
probe 400 "query name with %u005F (IIS)" "$GW_URL/a?client_id=tpp1&client%u005Fid=tpp2"
probe 400 "query name with a dotless i (Java equalsIgnoreCase)" \
	"$GW_URL/a?client_id=tpp1&cl%C4%B1ent_id=tpp2"
probe 400 "query name padded past 64 bytes" \
	"$GW_URL/a?client_id=tpp1&$(printf '%080d' 0 | tr 0 +)client_id=tpp2"
probe 400 "query ';' separator" "$GW_URL/a?client_id=tpp1&a=1;client_id=tpp2"
probe 400 "form ';' separator" -H "$FORM_CT" --data-binary 'client_id=tpp1&a=1;client_id=tpp2' \
	"$GW_URL/token"
probe 400 "cookie named client_id (PHP's \$_REQUEST)" -H 'Cookie: client_id=tpp2' \
	"$GW_URL/a?client_id=tpp1"
probe 400 "multipart body" -F client_id=tpp2 "$GW_URL/token?client_id=tpp1"
probe 400 "gzip-encoded form" -H "$FORM_CT" -H 'Content-Encoding: gzip' \
	--data-binary "@$TEST_DIR/victim.gz" "$GW_URL/token?client_id=tpp1"
probe 400 "UTF-16 form" -H "$FORM_CT; charset=utf-16" --data-binary "@$TEST_DIR/victim.utf16" \
	"$GW_URL/token?client_id=tpp1"
probe 400 "EBCDIC form" -H "$FORM_CT; charset=ibm037" --data-binary "@$TEST_DIR/victim.ibm037" \
	"$GW_URL/token?client_id=tpp1"
probe 400 "UTF-7 form" -H "$FORM_CT; charset=utf-7" --data-binary "@$TEST_DIR/victim.utf7" \
	"$GW_URL/token?client_id=tpp1"
probe 400 "Content-Type with a comma (Rack and PHP read a form)" \
	-H 'Content-Type: application/x-www-form-urlencoded, text/plain' \
	--data-binary "@$TEST_DIR/victim.form" "$GW_URL/token?client_id=tpp1"
probe 400 "fragment in the target" --request-target '/a?client_id=tpp1#&client_id=tpp2' "$GW_URL/"
probe 401 "POST without Content-Type (Rack reads a form)" -H 'Content-Type:' \
	--data-binary "@$TEST_DIR/victim.form" "$GW_URL/token?client_id=tpp1"
probe 401 "query name percent-encoded" "$GW_URL/a?client_id=tpp1&client%5Fid=tpp2"
probe 401 "value with an encoded NUL" "$GW_URL/a?client_id=tpp1&client_id=tpp2%00"
probe 401 "the same parameter twice" "$GW_URL/a?client_id=tpp1&client_id=tpp2"
probe 401 "JSON member (Rails merges it into params)" -H 'Content-Type: application/json' \
	--data-binary '{"client_id": "tpp2"}' "$GW_URL/payments?client_id=tpp1"
probe 400 "JSON member repeated" -H 'Content-Type: application/json' \
	--data-binary '{"client_id": "tpp1", "client_id": "tpp2"}' "$GW_URL/payments?client_id=tpp1"
probe 400 "JSON member look-alike" -H 'Content-Type: application/vnd.api+json' \
	--data-binary '{"Client_Id": "tpp2"}' "$GW_URL/payments?client_id=tpp1"
assert_eq "$before" "$(upstream_requests)" "no probe reached the upstream (all three sources)"

# --- form and header only: a query client_id is still read by applications -------------------
with_sources '["form:client_id", "header:x-client-id"]'
assert_status 200 "control: query agrees with the header" tpp1 -H 'X-Client-Id: tpp1' \
	"$GW_URL/a?client_id=tpp1"
before=$(upstream_requests)
probe 401 "query client_id where only form and header are read" -H 'X-Client-Id: tpp1' \
	"$GW_URL/a?client_id=tpp2"
probe 400 "query look-alike where only form and header are read" -H 'X-Client-Id: tpp1' \
	"$GW_URL/a?CLIENT_ID=tpp2"
assert_eq "$before" "$(upstream_requests)" "no probe reached the upstream (form and header)"

# --- query and header only: a form client_id is still read by applications --------------------
with_sources '["query:client_id", "header:x-client-id"]'
assert_status 200 "control: form agrees with the query" tpp1 -H "$FORM_CT" \
	--data-binary 'client_id=tpp1' "$GW_URL/token?client_id=tpp1"
before=$(upstream_requests)
probe 401 "form client_id where only query and header are read" -H "$FORM_CT" \
	--data-binary "@$TEST_DIR/victim.form" "$GW_URL/token?client_id=tpp1"
probe 400 "multipart where no form source is configured" -F client_id=tpp2 \
	"$GW_URL/token?client_id=tpp1"
probe 400 "UTF-16 form where no form source is configured" -H "$FORM_CT; charset=utf-16" \
	--data-binary "@$TEST_DIR/victim.utf16" "$GW_URL/token?client_id=tpp1"
assert_eq "$before" "$(upstream_requests)" "no probe reached the upstream (query and header)"

assert_not_contains "$(cat "$UPSTREAM_LOG" 2>/dev/null)" tpp2 \
	"the upstream never saw the victim's id (path, query, headers)"
finish
