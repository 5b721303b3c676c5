#!/usr/bin/env bash
# Hub mode end to end (issue 10, /work/hub-api.md), against tests/integration/mock_bank.py in
# the "bank" namespace: three banks, each on its own port, reached over mTLS with the gateway's
# QWAC (gateway-qwac, pinned by each bank), the token store in a SoftHSM2 token of the test's
# own (SOFTHSM2_CONF in $TEST_DIR).
#   alpha (access tokens live 65 s, route /banks/alpha with refresh_margin_s 60: due 5 s after
#         issue): tpp1's backend starts a consent, the user's browser (the gw namespace, no
#         client certificate) follows authorization_url to the bank's /authorize, the backend
#         relays code and state to the callback and gets a handle; GET /banks/alpha/accounts
#         with "Authorization: Hub <handle>" returns the bank's accounts, and the bank saw
#         "Authorization: Bearer <its access token>" (not the handle) from the QWAC. The state
#         twice, a state relayed by another backend: 400. tpp2 with tpp1's handle (GET,
#         DELETE), the handle on another bank's route: 401, no bank reached. Once the token is
#         due, six concurrent calls: all 200, one refresh_token grant, the refreshed token
#         used. DELETE /banks/alpha/_hub/session: 204, then 401; the audit row and the log line.
#   The same bank behind routes whose upstream presents another certificate: one of the bank's
#   CA that is not the pinned QWAC (/banks/wrongcert: the bank answers 401 invalid_client, the
#   callback 502), one of a CA the bank does not trust (/banks/foreign: the handshake fails,
#   502).
#   beta (access tokens live 2 s, refresh_margin_s 0, response timeout 1.5 s): a call after the
#   token expired is refreshed first and passes; a refused refresh (the bank answers 400): 401
#   invalid_token.
#   gamma (response timeout 500 ms, breaker after 2 failures, 60 s cool-down): the bank stops
#   answering; two calls get 504, the next 503 at once without reaching the bank; a consent
#   too.
#   A session outlives a restart; an id_token that does not verify (a route given another
#   bank's keys): 502 bank_error.
#   Consents: at most 1024 pending, then 503; the bank's token endpoint hanging: the callback
#   gets 504 upstream_timeout; a code the bank already redeemed: 502 bank_error.
#   The daemon survives every step (a crash is a failure, and it is restarted so that the rest
#   still runs) and a SIGHUP reload, and stops cleanly on SIGTERM.
#   Finally no code, access token, refresh token, id_token or IBAN the banks issued is in
#   `sqlite3 tokens.db .dump`, in the database's files, in the daemon's error log or in the
#   access log.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

SOFTHSM_MODULE=/usr/lib/softhsm/libsofthsm2.so
require_cmd sqlite3 softhsm2-util sha256sum
[ -r "$SOFTHSM_MODULE" ] || skip "SoftHSM2 module not found: $SOFTHSM_MODULE"

topo_basic
topo_bank
pki_setup

QWAC_SHA=$(cert_sha256 "$PKI/gateway-qwac.pem")
TOKENS_DB=$TEST_DIR/tokens.db
REDIRECT_URI=https://backend.tpp.test/hub/callback
HUB_CLIENT_ID=hub-tpp

# --- another client certificate of the bank's CA: not the QWAC the banks pinned -------------------
printf 'basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\n' \
	>"$TEST_DIR/other-qwac.ext"
if ! { openssl ecparam -name prime256v1 -genkey -noout -out "$TEST_DIR/other-qwac.key" &&
	openssl req -new -key "$TEST_DIR/other-qwac.key" -subj "/C=EU/O=psd2edge test bank/CN=other-qwac.test" \
		-out "$TEST_DIR/other-qwac.csr" &&
	openssl x509 -req -in "$TEST_DIR/other-qwac.csr" -CA "$PKI/bank-ca.pem" -CAkey "$PKI/bank-ca.key" \
		-set_serial "0x$(openssl rand -hex 8)" -days 365 -extfile "$TEST_DIR/other-qwac.ext" \
		-out "$TEST_DIR/other-qwac.pem"; } >"$TEST_DIR/other-qwac.out" 2>&1; then
	die "cannot issue other-qwac: $(tail -n 3 "$TEST_DIR/other-qwac.out")"
fi
OTHER_SHA=$(cert_sha256 "$TEST_DIR/other-qwac.pem")

# --- SoftHSM2: a configuration and a token of this test's own -------------------------------------
mkdir -p "$TEST_DIR/softhsm/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
	"$TEST_DIR/softhsm/tokens" >"$TEST_DIR/softhsm/softhsm2.conf"
export SOFTHSM2_CONF=$TEST_DIR/softhsm/softhsm2.conf
softhsm2-util --init-token --free --label psd2edge --pin 246813 --so-pin 135792 >"$TEST_DIR/softhsm/init.out" 2>&1 ||
	die "softhsm2-util --init-token failed: $(tail -n 3 "$TEST_DIR/softhsm/init.out")"
(umask 077 && printf '246813' >"$TEST_DIR/kek.pin")

# --- the banks ----------------------------------------------------------------------------------
bank_file() { echo "$TEST_DIR/bank-$1.$2"; } # NAME KIND: log, ready, mode, out, jwks

declare -A BANK_PORT=([alpha]=9444 [beta]=9445 [gamma]=9446)

bank_start() { # NAME ACCESS_TTL
	local name=$1 ttl=$2
	rm -f "$(bank_file "$name" ready)"
	# nsenter itself, not ns_exec: $! is then the bank's own pid (nsenter execs it), which the
	# cleanup's SIGTERM reaches (mock_bank.py then removes its temporary signing key)
	nsenter --net="/run/netns/$(ns_name "$BANK_NS")" -- python3 "$LIB_DIR/mock_bank.py" --host 0.0.0.0 --port "${BANK_PORT[$name]}" \
		--cert "$PKI/upstream.pem" --key "$PKI/upstream.key" --client-ca "$PKI/bank-ca.pem" \
		--qwac-sha256 "$QWAC_SHA" --client-id "$HUB_CLIENT_ID" --issuer "https://bank-$name.test" \
		--access-ttl "$ttl" --jwks-out "$(bank_file "$name" jwks)" --log "$(bank_file "$name" log)" \
		--mode-file "$(bank_file "$name" mode)" --ready-file "$(bank_file "$name" ready)" \
		>>"$(bank_file "$name" out)" 2>&1 &
	LIB_PIDS+=($!)
	wait_until 10 test -s "$(bank_file "$name" ready)" ||
		die "mock bank $name did not start: $(tail -n 5 "$(bank_file "$name" out)")"
}

bank_mode() { # NAME MODE: normal, hang or a status code (mock_bank.py --mode-file)
	local f
	f=$(bank_file "$1" mode)
	if [ "$2" = normal ]; then rm -f "$f"; else echo "$2" >"$f.tmp" && mv "$f.tmp" "$f"; fi
}

# bank_q NAME EXPR: a Python expression over L, the bank's log entries (one dict a request)
bank_q() {
	python3 - "$(bank_file "$1" log)" "$2" <<'EOF'
import json, os, sys
L = [json.loads(l) for l in open(sys.argv[1]) if l.strip()] if os.path.exists(sys.argv[1]) else []
try:
    v = eval(sys.argv[2])
except (IndexError, KeyError, TypeError):
    sys.exit(1)
print(v if isinstance(v, str) else json.dumps(v))
EOF
}

bank_lines() { bank_q "$1" 'len(L)'; }
grants() { bank_q "$1" "sum(1 for e in L if e['grant_type'] == '$2')"; } # NAME GRANT_TYPE
last_accounts() { bank_q "$1" "[e for e in L if e['path'].endswith('/accounts')][-1]['$2']"; }
last_grant() { bank_q "$1" "[e for e in L if e['grant_type'] == '$2'][-1]$3"; } # NAME GRANT PY-SUFFIX

bank_start alpha 65
bank_start beta 2
bank_start gamma 300

bank_url() { echo "https://$BANK_IP:${BANK_PORT[$1]}"; }

# --- the gateway -----------------------------------------------------------------------------------
upstream_json() { # BANK CERT_PEM KEY [EXTRA_JSON_MEMBERS]
	echo "{\"url\": \"$(bank_url "$1")\", \"ca\": \"$PKI/bank-ca.pem\", \"cert\": \"$2\", \"key\": \"$3\"${4:+, $4}}"
}
hub_json() { # BANK MARGIN [JWKS_OF_BANK]
	echo "{\"authorization_endpoint\": \"$(bank_url "$1")/authorize\", \"token_endpoint\": \"/token\",
	 \"client_id\": \"$HUB_CLIENT_ID\", \"redirect_uri\": \"$REDIRECT_URI\", \"scopes\": [\"openid\", \"accounts\"],
	 \"jwks\": \"$(bank_file "${3:-$1}" jwks)\", \"issuer\": \"https://bank-$1.test\", \"refresh_margin_s\": $2}"
}
QWAC=("$PKI/gateway-qwac.pem" "$PKI/gateway-qwac.key")
config_render "$DAEMON_CONFIG" "{\"upstream\": null, \"log_level\": \"debug\",
	\"upstreams\": {
	  \"alpha\": $(upstream_json alpha "${QWAC[@]}"),
	  \"alphawrong\": $(upstream_json alpha "$TEST_DIR/other-qwac.pem" "$TEST_DIR/other-qwac.key"),
	  \"alphaforeign\": $(upstream_json alpha "$PKI/untrusted.pem" "$PKI/untrusted.key"),
	  \"beta\": $(upstream_json beta "${QWAC[@]}" '"response_timeout_ms": 1500'),
	  \"gamma\": $(upstream_json gamma "${QWAC[@]}" '"response_timeout_ms": 500,
	             "circuit_breaker": {"consecutive_failures": 2, "cooldown_ms": 60000, "probes": 1}')},
	\"routes\": [
	  {\"prefix\": \"/banks/alpha\", \"upstream\": \"alpha\", \"hub\": $(hub_json alpha 60)},
	  {\"prefix\": \"/banks/wrongcert\", \"upstream\": \"alphawrong\", \"hub\": $(hub_json alpha 60)},
	  {\"prefix\": \"/banks/foreign\", \"upstream\": \"alphaforeign\", \"hub\": $(hub_json alpha 60)},
	  {\"prefix\": \"/banks/badkeys\", \"upstream\": \"alpha\", \"hub\": $(hub_json alpha 60 beta)},
	  {\"prefix\": \"/banks/beta\", \"upstream\": \"beta\", \"hub\": $(hub_json beta 0)},
	  {\"prefix\": \"/banks/gamma\", \"upstream\": \"gamma\", \"hub\": $(hub_json gamma 60)}],
	\"token_store\": {\"path\": \"$TOKENS_DB\", \"pkcs11_module\": \"$SOFTHSM_MODULE\",
	  \"token_label\": \"psd2edge\", \"pin_file\": \"$TEST_DIR/kek.pin\", \"key_label\": \"psd2edge-kek\"}}"
"$PSD2EDGED" --check-config "$DAEMON_CONFIG" >"$TEST_DIR/check.out" 2>&1
assert_eq 0 $? "--check-config accepts the hub configuration ($(head -c 300 "$TEST_DIR/check.out"))"
daemon_start
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null || die "bind tpp1"
ctl bind tpp2 "$PKI/tpp2.pem" >/dev/null || die "bind tpp2"

# --- the backend's and the browser's requests ------------------------------------------------------
# hub CERT CLIENT_ID METHOD PATH [CURL_ARGS...]: a backend's request; LAST_CODE, LAST_BODY and
# the response head in $TEST_DIR/last-head
hub() {
	local cert=$1 cid=$2 method=$3 path=$4
	shift 4
	: >"$TEST_DIR/last-head"
	gw_request "$cert" -X "$method" -D "$TEST_DIR/last-head" -H "X-Client-Id: $cid" "$@" "$GW_URL$path"
}
head_value() { # NAME: a header of the last response
	tr -d '\r' <"$TEST_DIR/last-head" | sed -n "s/^$1: *//Ip" | head -n 1
}
body() { json_get "$LAST_BODY" "$1"; }
with_handle() { echo "Authorization: Hub $1"; }

# consent CERT CLIENT_ID PREFIX USER: POST PREFIX/_hub/consents; STATE and AUTH_URL
consent() {
	STATE='' AUTH_URL=''
	hub "$1" "$2" POST "$3/_hub/consents" -H "X-Hub-User: $4" --data ''
	[ "$LAST_CODE" = 201 ] || return 1
	STATE=$(body state) && AUTH_URL=$(body authorization_url)
}

# browse URL: the user's browser (the gw namespace, no client certificate) opens the bank's
# authorization URL; the bank redirects it to the redirect_uri. CODE and CB_STATE from there.
browse() {
	local loc
	CODE='' CB_STATE=''
	loc=$(ns_exec "$GW_NS" curl -sS --max-time 10 --cacert "$PKI/bank-ca.pem" -o "$TEST_DIR/browse.json" \
		-w '%{http_code} %{redirect_url}' "$1" 2>"$TEST_DIR/browse.err")
	BROWSE_CODE=${loc%% *}
	loc=${loc#* }
	case $loc in "$REDIRECT_URI"\?*) ;; *) return 1 ;; esac
	CODE=$(python3 -c 'import sys, urllib.parse as u
print(dict(u.parse_qsl(u.urlsplit(sys.argv[1]).query))[sys.argv[2]])' "$loc" code) &&
		CB_STATE=$(python3 -c 'import sys, urllib.parse as u
print(dict(u.parse_qsl(u.urlsplit(sys.argv[1]).query))[sys.argv[2]])' "$loc" state)
}

# callback CERT CLIENT_ID PREFIX STATE CODE: the backend relays the redirect; HANDLE on 201
callback() {
	HANDLE=
	hub "$1" "$2" GET "$3/_hub/callback?state=$4&code=$5"
	[ "$LAST_CODE" = 201 ] && HANDLE=$(body handle)
}

# session CERT CLIENT_ID PREFIX USER: the whole flow, checked; HANDLE
session() {
	consent "$1" "$2" "$3" "$4" || { fail "$3: consent for $4: HTTP $LAST_CODE $(head -c 300 "$LAST_BODY")"; return 1; }
	browse "$AUTH_URL" || { fail "$3: the bank's /authorize did not redirect (HTTP $BROWSE_CODE) $(head -c 300 "$TEST_DIR/browse.json")"; return 1; }
	callback "$1" "$2" "$3" "$CB_STATE" "$CODE" ||
		{ fail "$3: callback: HTTP $LAST_CODE $(head -c 300 "$LAST_BODY")"; return 1; }
	pass "$3: consent, authorization and callback for $4 give a handle"
}

url_param() { # URL NAME
	python3 -c 'import sys, urllib.parse as u
q = u.parse_qs(u.urlsplit(sys.argv[1]).query)
print(q[sys.argv[2]][0] if len(q.get(sys.argv[2], [])) == 1 else sys.exit(1))' "$1" "$2"
}
# survived WHAT: the daemon is still running; if not, a failure and a restart, so that the
# rest of the test still tells something (the token store keeps the handles; pending consents
# are lost)
survived() {
	local st
	if daemon_alive; then
		pass "psd2edged still running after $1"
		return 0
	fi
	wait "$DAEMON_PID" 2>/dev/null
	st=$?
	DAEMON_PID=
	fail "psd2edged died (exit status $st) during: $1"
	daemon_start
}

has_param() { url_param "$@" >/dev/null; }
b64url43() { [[ $1 =~ ^[A-Za-z0-9_-]{43}$ ]]; }

# ==== alpha: consent -> authorize -> callback -> proxied call ======================================
hub tpp3 tpp3 POST /banks/alpha/_hub/consents -H "X-Hub-User: alice" --data ''
assert_eq 401 "$LAST_CODE" "consent from an unbound certificate: identity first (401)"
hub tpp1 tpp1 POST /banks/alpha/_hub/consents --data ''
assert_eq "400 invalid_request" "$LAST_CODE $(body error)" "consent without X-Hub-User: 400 invalid_request"
hub tpp1 tpp1 POST /banks/alpha/_hub/consents -H "X-Hub-User: $(printf 'u%.0s' $(seq 129))" --data ''
assert_eq "400 invalid_request" "$LAST_CODE $(body error)" "consent with a 129-byte X-Hub-User: 400 invalid_request"
hub tpp1 tpp1 POST /banks/alpha/_hub/consents -H "X-Hub-User: ali ce" --data ''
assert_eq "400 invalid_request" "$LAST_CODE $(body error)" "consent with a space in X-Hub-User: 400 invalid_request"

consent tpp1 tpp1 /banks/alpha alice
assert_eq 201 "$LAST_CODE" "POST /banks/alpha/_hub/consents: 201 ($(head -c 300 "$LAST_BODY"))"
assert_true "the consent's state is 43 base64url characters ($STATE)" b64url43 "$STATE"
assert_eq 600 "$(body expires_in)" "the consent expires in 600 s"
assert_contains "$AUTH_URL" "$(bank_url alpha)/authorize?" "authorization_url is the bank's authorization endpoint"
assert_eq code "$(url_param "$AUTH_URL" response_type)" "authorization_url: response_type=code"
assert_eq "$HUB_CLIENT_ID" "$(url_param "$AUTH_URL" client_id)" "authorization_url: client_id is hub.client_id"
assert_eq "$REDIRECT_URI" "$(url_param "$AUTH_URL" redirect_uri)" "authorization_url: redirect_uri"
assert_eq "openid accounts" "$(url_param "$AUTH_URL" scope)" "authorization_url: the scopes, space-separated"
assert_eq "$STATE" "$(url_param "$AUTH_URL" state)" "authorization_url: the state answered"
assert_eq S256 "$(url_param "$AUTH_URL" code_challenge_method)" "authorization_url: code_challenge_method=S256"
assert_true "authorization_url: a code_challenge (43 base64url characters)" b64url43 "$(url_param "$AUTH_URL" code_challenge)"
assert_true "authorization_url: a nonce" has_param "$AUTH_URL" nonce

browse "$AUTH_URL"
assert_eq 302 "$BROWSE_CODE" "the browser, without a client certificate, is redirected by the bank's /authorize"
assert_eq "$STATE" "$CB_STATE" "the bank's redirect carries the state back"
assert_eq null "$(bank_q alpha "[e for e in L if e['path'] == '/authorize'][-1]['client_cert_sha256']")" \
	"the bank saw no client certificate at /authorize"

ALPHA_STATE=$STATE ALPHA_CODE=$CODE
callback tpp1 tpp1 /banks/alpha "$ALPHA_STATE" "$ALPHA_CODE"
assert_eq 201 "$LAST_CODE" "GET /banks/alpha/_hub/callback: 201 ($(head -c 300 "$LAST_BODY"))"
T_ALPHA=$(date +%s)
H1=$HANDLE
assert_true "the handle is 43 base64url characters" b64url43 "$H1"
ei=$(body expires_in)
assert_true "the callback's expires_in ($ei) is the access token's lifetime (65 s)" test "${ei:-0}" -ge 60 -a "${ei:-0}" -le 65
assert_eq "200 $QWAC_SHA" "$(last_grant alpha authorization_code "['status']") $(last_grant alpha authorization_code "['client_cert_sha256']")" \
	"the bank's token endpoint saw the code grant from the pinned QWAC"
A1=$(last_grant alpha authorization_code "['issued']['access_token']")

hub tpp1 tpp1 GET /banks/alpha/accounts -H "$(with_handle "$H1")"
assert_eq 200 "$LAST_CODE" "GET /banks/alpha/accounts with the handle: 200 ($(head -c 300 "$LAST_BODY"))"
assert_eq DE89370400440532013000 "$(body accounts.0.iban)" "the bank's accounts come back to the backend"
assert_eq "Bearer $A1" "$(last_accounts alpha authorization)" "the bank saw Authorization: Bearer <its access token>"
assert_not_contains "$(last_accounts alpha authorization)" "$H1" "the bank never saw the handle"
assert_eq "$QWAC_SHA" "$(last_accounts alpha client_cert_sha256)" "the bank saw the gateway's QWAC on the proxied call"
assert_eq 200 "$(last_accounts alpha status)" "the bank answered the proxied call"
note "the bank saw the proxied call as $(last_accounts alpha path)"
assert_eq 0 "$(grants alpha refresh_token)" "a fresh token is not refreshed"

# ---- handles and states are single-use and the backend's own ---------------------------------
callback tpp1 tpp1 /banks/alpha "$ALPHA_STATE" "$ALPHA_CODE"
assert_eq "400 invalid_request" "$LAST_CODE $(body error)" "the same state twice: 400 invalid_request"
assert_eq 1 "$(grants alpha authorization_code)" "the used state did not reach the bank again"
callback tpp1 tpp1 /banks/alpha "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" "$ALPHA_CODE"
assert_eq "400 invalid_request" "$LAST_CODE $(body error)" "an unknown state: 400 invalid_request"

if consent tpp1 tpp1 /banks/alpha ivan; then
	callback tpp1 tpp1 /banks/alpha "$STATE" "$ALPHA_CODE"
	assert_eq "502 bank_error" "$LAST_CODE $(body error)" "a fresh state with a code the bank already redeemed: 502 bank_error"
	assert_contains "$(body error_description)" invalid_grant "... its description has the bank's error"
	assert_eq "400 invalid_grant" "$(last_grant alpha authorization_code "['status']") $(last_grant alpha authorization_code "['error']")" \
		"the bank refused the code with invalid_grant"
else
	fail "consent for ivan: HTTP $LAST_CODE"
fi

if consent tpp1 tpp1 /banks/alpha bob && browse "$AUTH_URL"; then
	callback tpp2 tpp2 /banks/alpha "$CB_STATE" "$CODE"
	assert_eq "400 invalid_request" "$LAST_CODE $(body error)" "a state tpp1 started, relayed by tpp2: 400 invalid_request"
else
	fail "consent for bob: HTTP $LAST_CODE / browser $BROWSE_CODE"
fi

lines=$(bank_lines alpha)
hub tpp2 tpp2 GET /banks/alpha/accounts -H "$(with_handle "$H1")"
assert_eq "401 invalid_token" "$LAST_CODE $(body error)" "tpp2 with tpp1's handle: 401 invalid_token"
hub tpp2 tpp2 DELETE /banks/alpha/_hub/session -H "$(with_handle "$H1")"
assert_eq "401 invalid_token" "$LAST_CODE $(body error)" "tpp2 cannot revoke tpp1's handle: 401 invalid_token"
blines=$(bank_lines beta)
hub tpp1 tpp1 GET /banks/beta/accounts -H "$(with_handle "$H1")"
assert_eq "401 invalid_token" "$LAST_CODE $(body error)" "tpp1's alpha handle on beta's route: 401 invalid_token (unknown there)"
assert_eq "$blines" "$(bank_lines beta)" "... and beta never saw alpha's token"
hub tpp1 tpp1 GET /banks/alpha/accounts
assert_eq "401 invalid_token" "$LAST_CODE $(body error)" "no Authorization header: 401 invalid_token"
assert_contains "$(head_value WWW-Authenticate)" Hub "... with WWW-Authenticate: Hub"
hub tpp1 tpp1 GET /banks/alpha/accounts -H "Authorization: Hub not-a-handle"
assert_eq "401 invalid_token" "$LAST_CODE $(body error)" "a malformed handle: 401 invalid_token"
hub tpp1 tpp1 GET /banks/alpha/accounts -H "Authorization: Bearer $H1"
assert_eq "401 invalid_token" "$LAST_CODE $(body error)" "the handle as a Bearer credential: 401 invalid_token"
hub tpp1 tpp1 GET /banks/alpha/accounts -H "Authorization: Hub AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
assert_eq "401 invalid_token" "$LAST_CODE $(body error)" "an unknown handle: 401 invalid_token"
assert_eq "$lines" "$(bank_lines alpha)" "none of the refused calls reached the bank"
survived "the refused states and handles"

# ==== the bank refuses a certificate that is not the pinned QWAC ====================================
last_token() { bank_q alpha "[e for e in L if e['path'] == '/token'][-1]['$1']"; }
if consent tpp1 tpp1 /banks/wrongcert carol && browse "$AUTH_URL"; then
	callback tpp1 tpp1 /banks/wrongcert "$CB_STATE" "$CODE"
	assert_eq 502 "$LAST_CODE" "callback through an upstream presenting another certificate of the bank's CA: 502 ($(head -c 300 "$LAST_BODY"))"
	assert_eq bank_error "$(body error)" "... error bank_error"
	assert_contains "$(body error_description)" invalid_client "... its description has the bank's error"
	assert_eq "401 invalid_client $OTHER_SHA" "$(last_token status) $(last_token error) $(last_token client_cert_sha256)" \
		"the bank answered 401 invalid_client to the other certificate"
else
	fail "/banks/wrongcert: consent HTTP $LAST_CODE / browser $BROWSE_CODE"
fi
lines=$(bank_q alpha "sum(1 for e in L if e['path'] == '/token')")
if consent tpp1 tpp1 /banks/foreign carol && browse "$AUTH_URL"; then
	callback tpp1 tpp1 /banks/foreign "$CB_STATE" "$CODE"
	assert_eq 502 "$LAST_CODE" "callback through an upstream presenting a certificate of a CA the bank does not trust: 502 ($(head -c 300 "$LAST_BODY"))"
	assert_eq "$lines" "$(bank_q alpha "sum(1 for e in L if e['path'] == '/token')")" \
		"... the handshake failed: no token request reached the bank"
else
	fail "/banks/foreign: consent HTTP $LAST_CODE / browser $BROWSE_CODE"
fi

survived "the callbacks with another certificate"

# ==== beta: tokens that expire (2 s, refresh_margin_s 0) ============================================
if session tpp1 tpp1 /banks/beta dave; then
	H_BETA=$HANDLE
	T_BETA=$(date +%s)
	assert_eq 2 "$(body expires_in)" "beta: the callback's expires_in is the bank's 2 s"
	hub tpp1 tpp1 GET /banks/beta/accounts -H "$(with_handle "$H_BETA")"
	assert_eq 200 "$LAST_CODE" "beta: a call at once passes ($(head -c 200 "$LAST_BODY"))"
fi

# ==== alpha: once the token is due, concurrent calls cause one refresh ==============================
while [ "$(date +%s)" -lt $((T_ALPHA + 7)) ]; do sleep 0.2; done # due 5 s after issue
pids=()
for i in 1 2 3 4 5 6; do
	gw_curl tpp1 -o "$TEST_DIR/conc-$i.json" -w '%{http_code}' -H "X-Client-Id: tpp1" \
		-H "$(with_handle "$H1")" "$GW_URL/banks/alpha/accounts" >"$TEST_DIR/conc-$i.code" 2>/dev/null &
	pids+=($!)
done
wait "${pids[@]}"
codes=$(for i in 1 2 3 4 5 6; do printf '%s ' "$(cat "$TEST_DIR/conc-$i.code")"; done)
assert_eq "200 200 200 200 200 200 " "$codes" "six concurrent calls with a token due for refresh all pass"
assert_eq 1 "$(grants alpha refresh_token)" "... and caused exactly one refresh_token grant"
assert_eq "200 $QWAC_SHA" "$(last_grant alpha refresh_token "['status']") $(last_grant alpha refresh_token "['client_cert_sha256']")" \
	"the refresh was granted, asked with the QWAC"
A2=$(last_grant alpha refresh_token "['issued']['access_token']")
assert_eq 6 "$(bank_q alpha "sum(1 for e in L if e['path'].endswith('/accounts') and e['authorization'] == 'Bearer $A2')")" \
	"the six calls reached the bank with the refreshed access token"
survived "the concurrent refresh"

# ==== beta: a call after the token expired is refreshed first =======================================
if [ -n "${H_BETA:-}" ]; then
	while [ "$(date +%s)" -lt $((T_BETA + 4)) ]; do sleep 0.2; done
	hub tpp1 tpp1 GET /banks/beta/accounts -H "$(with_handle "$H_BETA")"
	assert_eq 200 "$LAST_CODE" "beta: a call after the access token expired passes ($(head -c 200 "$LAST_BODY"))"
	assert_eq 1 "$(grants beta refresh_token)" "beta: one refresh_token grant"
	assert_eq "Bearer $(last_grant beta refresh_token "['issued']['access_token']")" "$(last_accounts beta authorization)" \
		"beta: the bank saw the refreshed access token"
	sleep 3 # expired again
	bank_mode beta 400
	hub tpp1 tpp1 GET /banks/beta/accounts -H "$(with_handle "$H_BETA")"
	assert_eq "401 invalid_token" "$LAST_CODE $(body error)" "beta: the bank refuses the refresh (400): 401 invalid_token"
	bank_mode beta normal
	survived "beta's refreshes"
fi
if consent tpp1 tpp1 /banks/beta heidi && browse "$AUTH_URL"; then
	bank_mode beta hang
	# While beta's token call hangs, alpha's sessions go on: each bank has its own hub thread.
	(
		sleep 0.4
		t1=$(date +%s%N)
		code=$(gw_curl tpp1 -o "$TEST_DIR/alpha-during-hang.body" -w '%{http_code}' -H "X-Client-Id: tpp1" \
			-H "$(with_handle "$H1")" "$GW_URL/banks/alpha/accounts" 2>/dev/null)
		echo "${code:-000} $((($(date +%s%N) - t1) / 1000000))" >"$TEST_DIR/alpha-during-hang"
	) &
	alpha_pid=$!
	t0=$(date +%s%N)
	callback tpp1 tpp1 /banks/beta "$CB_STATE" "$CODE"
	el=$((($(date +%s%N) - t0) / 1000000))
	wait "$alpha_pid"
	bank_mode beta normal
	assert_eq "504 upstream_timeout" "$LAST_CODE $(body error)" "beta hangs at the token endpoint: the callback gets 504 upstream_timeout"
	assert_true "... after beta's response timeout of 1500 ms (${el} ms)" test "$el" -ge 1200 -a "$el" -lt 5000
	read -r a_code a_ms <"$TEST_DIR/alpha-during-hang"
	assert_eq 200 "$a_code" "alpha's session answers while beta's token call hangs"
	assert_true "... without waiting for beta (${a_ms} ms, beta's call took ${el} ms)" test "$a_ms" -lt 1000
else
	fail "/banks/beta: consent for heidi: HTTP $LAST_CODE / browser $BROWSE_CODE"
fi
survived "beta's timeout"

# ==== revocation ========================================================================================
hub tpp1 tpp1 GET /banks/alpha/accounts -H "$(with_handle "$H1")"
assert_eq 200 "$LAST_CODE" "tpp1's handle still works before its revocation"
hub tpp1 tpp1 DELETE /banks/alpha/_hub/session -H "$(with_handle "$H1")"
assert_eq 204 "$LAST_CODE" "DELETE /banks/alpha/_hub/session: 204 ($(head -c 200 "$LAST_BODY"))"
lines=$(bank_lines alpha)
hub tpp1 tpp1 GET /banks/alpha/accounts -H "$(with_handle "$H1")"
assert_eq "401 invalid_token" "$LAST_CODE $(body error)" "the revoked handle: 401 invalid_token"
assert_eq "$lines" "$(bank_lines alpha)" "the revoked handle's call did not reach the bank"
hub tpp1 tpp1 DELETE /banks/alpha/_hub/session -H "$(with_handle "$H1")"
assert_eq 401 "$LAST_CODE" "revoking it again: 401"
revoked_line() { grep -q "hub: session .* revoked by tpp1" "$DAEMON_LOG"; }
assert_true "the daemon logged 'hub: session ... revoked by tpp1' (the log has: $(grep -m 1 'revoked' "$DAEMON_LOG"))" \
	wait_until 3 revoked_line
H1_SHA=$(printf '%s' "$H1" | sha256sum | cut -c1-64)
assert_eq tpp1 "$(sqlite3 "$TOKENS_DB" "SELECT actor FROM audit WHERE action = 'revoked' AND lower(hex(handle_hash)) = '$H1_SHA';" 2>&1)" \
	"the token store's audit has the revocation by tpp1"
assert_eq tpp1 "$(sqlite3 "$TOKENS_DB" "SELECT actor FROM audit WHERE action = 'created' AND lower(hex(handle_hash)) = '$H1_SHA';" 2>&1)" \
	"... and the handle's creation by tpp1"
survived "the revocation"

# ==== gamma: the breaker opens when the bank stops answering ============================================
if session tpp1 tpp1 /banks/gamma erin; then
	H_GAMMA=$HANDLE
	hub tpp1 tpp1 GET /banks/gamma/accounts -H "$(with_handle "$H_GAMMA")"
	assert_eq 200 "$LAST_CODE" "gamma: a call passes while the bank answers"
	bank_mode gamma hang
	for i in 1 2; do
		hub tpp1 tpp1 GET /banks/gamma/accounts -H "$(with_handle "$H_GAMMA")"
		assert_eq 504 "$LAST_CODE" "gamma hangs: call $i gets 504 after the 500 ms response timeout"
	done
	lines=$(bank_lines gamma)
	w=$(gw_curl tpp1 -o "$LAST_BODY" -D "$TEST_DIR/last-head" -H "X-Client-Id: tpp1" -H "$(with_handle "$H_GAMMA")" \
		-w '%{http_code} %{time_pretransfer} %{time_starttransfer}' "$GW_URL/banks/gamma/accounts" 2>"$TEST_DIR/curl.err")
	wait_ms=$(echo "$w" | awk '{printf "%.1f", ($3 - $2) * 1000}')
	assert_eq 503 "${w%% *}" "gamma: after two timeouts the next call gets 503"
	assert_true "the 503 came at once (${wait_ms} ms < 100 ms)" awk -v ms="${wait_ms:-9999}" 'BEGIN { exit !(ms < 100) }'
	assert_true "the 503 has Retry-After ($(head_value Retry-After))" test -n "$(head_value Retry-After)"
	hub tpp1 tpp1 POST /banks/gamma/_hub/consents -H "X-Hub-User: erin" --data ''
	assert_eq 503 "$LAST_CODE" "gamma: a consent while the breaker is open: 503"
	sleep 0.3
	assert_eq "$lines" "$(bank_lines gamma)" "gamma: nothing reached the bank while the breaker was open"
	bank_mode gamma normal
	survived "the breaker"
fi

# ==== a SIGHUP reloads; the hub goes on ====================================================================
kill -HUP "$DAEMON_PID"
sleep 1
survived "SIGHUP (a reload)"

# ==== a stored session outlives the daemon ===============================================================
if session tpp1 tpp1 /banks/alpha frank; then
	H_FRANK=$HANDLE
	daemon_stop
	assert_eq 0 $? "psd2edged stops cleanly on SIGTERM"
	daemon_start
	hub tpp1 tpp1 GET /banks/alpha/accounts -H "$(with_handle "$H_FRANK")"
	assert_eq 200 "$LAST_CODE" "after a restart a stored session still works (its DEK unwrapped by the token's KEK) ($(head -c 200 "$LAST_BODY"))"
fi

# ==== KEK rotation with the daemon running: every session still works, new ones use the new KEK ============
if [ -n "${H_FRANK:-}" ]; then
	ctl_capture rotate-kek psd2e-kek-2
	assert_eq 0 "$CTL_RC" "psd2edgectl rotate-kek psd2e-kek-2 ($CTL_ERR)"
	assert_contains "$CTL_OUT" "wrapped by KEK psd2e-kek-2" "... says which KEK wraps the data keys now"
	labels=$(sqlite3 "$TOKENS_DB" "SELECT DISTINCT kek_label FROM tokens WHERE state = 'active'" 2>&1)
	assert_eq psd2e-kek-2 "$labels" "every active record names the new KEK"
	hub tpp1 tpp1 GET /banks/alpha/accounts -H "$(with_handle "$H_FRANK")"
	assert_eq 200 "$LAST_CODE" "a session stored before the rotation still works ($(head -c 200 "$LAST_BODY"))"
	if session tpp1 tpp1 /banks/alpha heidi; then
		assert_eq psd2e-kek-2 "$(sqlite3 "$TOKENS_DB" "SELECT kek_label FROM tokens ORDER BY created_at DESC, rowid DESC LIMIT 1")" \
			"a session opened after the rotation is wrapped by the new KEK"
	fi
	assert_contains "$(ctl audit --limit 1)" "rotate-kek" "the rotation is in the registry's audit trail"
	ctl_capture rotate-kek ""
	assert_eq 1 "$CTL_RC" "rotate-kek with an empty label is refused ($CTL_ERR)"
	survived "the KEK rotation"
fi

# ==== a bad id_token: the route verifies it with another bank's keys ======================================
if consent tpp1 tpp1 /banks/badkeys grace && browse "$AUTH_URL"; then
	callback tpp1 tpp1 /banks/badkeys "$CB_STATE" "$CODE"
	assert_eq "502 bank_error" "$LAST_CODE $(body error)" "an id_token that does not verify: 502 bank_error ($(head -c 200 "$LAST_BODY"))"
else
	fail "/banks/badkeys: consent HTTP $LAST_CODE / browser $BROWSE_CODE"
fi
survived "the bad id_token"

# ==== at most 1024 pending consents ==================================================================
# 1030 consents on one connection (a curl config file: one url and output each)
for i in $(seq 1030); do
	printf 'url = "%s/banks/alpha/_hub/consents"\noutput = "/dev/null"\n' "$GW_URL"
done >"$TEST_DIR/consents.curl"
CURL_MAX_TIME=120 gw_curl tpp1 -K "$TEST_DIR/consents.curl" -X POST -H "X-Client-Id: tpp1" -H "X-Hub-User: mallory" \
	-H "Content-Length: 0" -w '%{http_code}\n' >"$TEST_DIR/consents.codes" 2>"$TEST_DIR/consents.err"
n201=$(grep -c '^201$' "$TEST_DIR/consents.codes")
n503=$(grep -c '^503$' "$TEST_DIR/consents.codes")
assert_eq 1030 "$((n201 + n503))" "1030 consents: each 201 or 503 ($n201 + $n503; $(sort "$TEST_DIR/consents.codes" | uniq -c | tr '\n' ' '))"
assert_true "at most 1024 consents pending ($n201 more accepted), then 503" test "$n201" -le 1024 -a "$n201" -ge 1000 -a "$n503" -ge 6
assert_eq 201 "$(head -n 1 "$TEST_DIR/consents.codes")" "the first of them was accepted"
assert_eq 503 "$(tail -n 1 "$TEST_DIR/consents.codes")" "the last of them was refused"
survived "1030 consents"

# ==== nothing the banks issued is written in plaintext ===================================================
daemon_stop
assert_eq 0 $? "psd2edged stops cleanly on SIGTERM (after the restart)"
for b in alpha beta gamma; do
	bank_q "$b" "'\n'.join(v for e in L if e.get('issued') for v in e['issued'].values())"
done | sort -u | sed '/^$/d' >"$TEST_DIR/secrets"
n=$(wc -l <"$TEST_DIR/secrets")
assert_true "the banks issued codes, tokens and an IBAN to look for ($n values)" test "$n" -ge 15
printf '%s\n' "$H1" "${H_BETA:-}" "${H_GAMMA:-}" "${H_FRANK:-}" | sed '/^$/d' >"$TEST_DIR/handles"

sqlite3 "$TOKENS_DB" .dump >"$TEST_DIR/tokens.dump" 2>"$TEST_DIR/tokens.dump.err"
assert_eq 0 $? "sqlite3 tokens.db .dump ($(head -c 200 "$TEST_DIR/tokens.dump.err"))"
assert_contains "$(cat "$TEST_DIR/tokens.dump")" "INSERT INTO tokens" "the dump holds the stored sessions"
leaks() { # FILE...: the secrets found in them
	grep -a -o -F -f "$TEST_DIR/secrets" "$@" 2>/dev/null | sort -u | head -c 400
}
assert_eq "" "$(leaks "$TEST_DIR/tokens.dump")" "sqlite3 tokens.db .dump holds no code, token or IBAN in plaintext"
assert_eq "" "$(leaks "$TOKENS_DB"*)" "the token store's files hold no code, token or IBAN in plaintext"
assert_eq "" "$(grep -a -o -F -f "$TEST_DIR/handles" "$TEST_DIR/tokens.dump" "$TOKENS_DB"* | head -c 300)" \
	"the token store holds no handle"
assert_true "the access log has the hub requests" grep -q '_hub/callback' "$ACCESS_LOG"
assert_eq "" "$(leaks "$ACCESS_LOG")" "the access log holds no code, token or IBAN"
assert_eq "" "$(leaks "$DAEMON_LOG")" "the daemon's error log holds no code, token or IBAN"
note "lines holding a session handle: access log $(grep -a -c -F -f "$TEST_DIR/handles" "$ACCESS_LOG"), error log $(grep -a -c -F -f "$TEST_DIR/handles" "$DAEMON_LOG")"

finish
