#!/usr/bin/env bash
# JWT (issue 9): a route with verify_jwt and the jwt:client_id source next to the
# X-Client-Id header. The issuer's RSA key and its JWK set are made here; tokens are PS256,
# signed with `openssl dgst -sign` (PSS, salt of 32 bytes), and bound (RFC 8705 §3, cnf
# x5t#S256) to a TPP's certificate. tpp1 (A) and tpp2 (B) are both bound. A token bound to A's
# certificate is accepted from A and refused from B with 401 invalid_token and
# WWW-Authenticate: Bearer error="invalid_token", even when everything else about B's request
# is right (its client_id sources agree on B's own, bound id); B's own token passes. Also: no
# token on the verify_jwt route (401, a bare Bearer challenge) and on a route without it (the
# header decides), a claim that disagrees with the header, an expired token, alg HS256 keyed
# with the issuer's public key, and a token another key signed. None of the refused requests
# reaches the upstream. --check-config names a JWK set's key that is too weak. The issuer's
# keys change with psd2edgectl reload: the old key's tokens are refused from then on, the new
# key's accepted; a JWK set that does not load is refused and the keys in use stay.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

topo_basic
pki_setup
upstream_start

ISSUER=https://as.bank.test
AUDIENCE=psd2edge-test
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TEST_DIR/issuer.key" 2>/dev/null ||
	die "cannot make the issuer's key"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TEST_DIR/other.key" 2>/dev/null ||
	die "cannot make another key"
openssl pkey -in "$TEST_DIR/issuer.key" -pubout -out "$TEST_DIR/issuer.pub" || die "issuer.pub"

b64url() { # stdin -> base64url without padding
	base64 -w0 | tr '+/' '-_' | tr -d '='
}

# jwks KEY KID > FILE: a JWK set of KEY's public key (n from the modulus in hex, e = 65537)
jwks() {
	python3 - "$(openssl rsa -in "$1" -modulus -noout | cut -d= -f2)" "$2" <<'EOF'
import base64, json, sys
n = bytes.fromhex(sys.argv[1])
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
print(json.dumps({"keys": [{"kty": "RSA", "kid": sys.argv[2], "use": "sig", "alg": "PS256",
                            "n": b64(n), "e": b64((65537).to_bytes(3, "big"))}]}))
EOF
}
jwks "$TEST_DIR/issuer.key" issuer-1 >"$TEST_DIR/jwks.json" || die "cannot write the JWK set"

x5t() { # CERT.pem -> base64url SHA-256 of its DER
	openssl x509 -in "$1" -outform DER | openssl dgst -sha256 -binary | b64url
}
X5T_A=$(x5t "$PKI/tpp1.pem")
X5T_B=$(x5t "$PKI/tpp2.pem")
NOW=$(date +%s)

# mint CLIENT_ID X5T [EXP_OFFSET [KEY [ALG [KID]]]]: a token for CLIENT_ID bound to X5T,
# expiring EXP_OFFSET seconds from now (default 600), signed PS256 by KEY (default the
# issuer's) under KID (default issuer-1); ALG HS256 signs it with HMAC-SHA256 keyed with the
# issuer's public key PEM instead.
mint() {
	local cid=$1 x5t=$2 exp=$((NOW + ${3:-600})) key=${4:-$TEST_DIR/issuer.key} alg=${5:-PS256}
	local kid=${6:-issuer-1} header payload input
	header=$(printf '{"alg":"%s","kid":"%s","typ":"at+jwt"}' "$alg" "$kid" | b64url)
	payload=$(printf '{"iss":"%s","aud":"%s","exp":%d,"iat":%d,"client_id":"%s","cnf":{"x5t#S256":"%s"}}' \
		"$ISSUER" "$AUDIENCE" "$exp" "$NOW" "$cid" "$x5t" | b64url)
	input=$header.$payload
	if [ "$alg" = HS256 ]; then
		printf '%s' "$input" | openssl dgst -sha256 -binary -mac HMAC \
			-macopt "key:$(cat "$TEST_DIR/issuer.pub")" | b64url
	else
		printf '%s' "$input" | openssl dgst -sha256 -binary -sign "$key" \
			-sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 | b64url
	fi | { read -r sig; printf '%s.%s' "$input" "$sig"; }
}

TOKEN_A=$(mint tpp1 "$X5T_A")            # A's token
TOKEN_B=$(mint tpp2 "$X5T_B")            # B's token
TOKEN_B_ON_A=$(mint tpp2 "$X5T_A")       # B's client_id, bound to A's certificate
TOKEN_EXPIRED=$(mint tpp1 "$X5T_A" -120) # beyond the 30 s leeway
TOKEN_HS256=$(mint tpp1 "$X5T_A" 600 "" HS256)
TOKEN_OTHER_KEY=$(mint tpp1 "$X5T_A" 600 "$TEST_DIR/other.key")
for t in "$TOKEN_A" "$TOKEN_B" "$TOKEN_B_ON_A" "$TOKEN_EXPIRED" "$TOKEN_HS256" "$TOKEN_OTHER_KEY"; do
	case $t in *.*.?*) ;; *) die "a token was not minted: '$t'" ;; esac
done

# --check-config reads the keys as the start does: a 1024-bit key is named.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "$TEST_DIR/weak.key" 2>/dev/null ||
	die "cannot make a 1024-bit key"
python3 - "$(openssl rsa -in "$TEST_DIR/weak.key" -modulus -noout | cut -d= -f2)" \
	>"$TEST_DIR/weak-jwks.json" <<'EOF' || die "cannot write the weak JWK set"
import base64, json, sys
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
print(json.dumps({"keys": [{"kty": "RSA", "n": b64(bytes.fromhex(sys.argv[1])), "e": "AQAB"}]}))
EOF
config_render "$TEST_DIR/weak.json" "{\"jwt\": {\"jwks\": \"$TEST_DIR/weak-jwks.json\", \"audience\": \"a\"}}"
check_out=$("$PSD2EDGED" --check-config "$TEST_DIR/weak.json" 2>&1)
assert_eq "1 psd2edged: jwt.jwks: keys[0].n: 1024 bits, at least 2048 are needed" "$? $check_out" \
	"--check-config names the weak key"

config_render "$DAEMON_CONFIG" "{
	\"jwt\": {\"jwks\": \"$TEST_DIR/jwks.json\", \"issuer\": \"$ISSUER\",
	        \"audience\": \"$AUDIENCE\"},
	\"routes\": [{\"prefix\": \"/accounts\", \"upstream\": \"default\", \"verify_jwt\": true},
	           {\"prefix\": \"/\", \"upstream\": \"default\"}],
	\"client_id\": [\"header:x-client-id\", \"jwt:client_id\"]}"
daemon_start
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null || die "bind tpp1"
ctl bind tpp2 "$PKI/tpp2.pem" >/dev/null || die "bind tpp2"

upstream_lines() {
	if [ -f "$UPSTREAM_LOG" ]; then wc -l <"$UPSTREAM_LOG"; else echo 0; fi
}

# call CODE DESC CERT CLIENT_ID TOKEN PATH [CURL_ARGS...]: the request with X-Client-Id (none
# when "-") and Authorization: Bearer TOKEN (none when "-"); HTTP CODE, its response headers
# in $TEST_DIR/headers
call() {
	local code=$1 desc=$2 cert=$3 cid=$4 token=$5 path=$6 args=(-D "$TEST_DIR/headers")
	shift 6
	[ "$cid" = - ] || args+=(-H "x-client-id: $cid")
	[ "$token" = - ] || args+=(-H "Authorization: Bearer $token")
	assert_status "$code" "$desc" "$cert" "${args[@]}" "$@" "$GW_URL$path"
}

# refused CODE ERROR CHALLENGE DESC CERT CLIENT_ID TOKEN PATH [CURL_ARGS...]: answered with
# CODE and {"error": ERROR}, WWW-Authenticate CHALLENGE ("-": none), the upstream never asked
refused() {
	local code=$1 error=$2 challenge=$3 desc=$4 before
	shift 4
	before=$(upstream_lines)
	call "$code" "$desc: $code" "$@"
	assert_eq "$error" "$(json_get "$LAST_BODY" error)" "$desc: error $error"
	local got
	got=$(grep -i '^www-authenticate:' "$TEST_DIR/headers" | tr -d '\r' | cut -d' ' -f2-)
	if [ "$challenge" = - ]; then
		assert_eq "" "$got" "$desc: no WWW-Authenticate"
	else
		assert_eq "$challenge" "$got" "$desc: WWW-Authenticate $challenge"
	fi
	assert_eq "$before" "$(upstream_lines)" "$desc: the upstream did not see it"
}

# --- A's token: accepted from A, refused from B ----------------------------------------------
call 200 "A with its token on the verify_jwt route" tpp1 tpp1 "$TOKEN_A" /accounts/1
assert_eq '["tpp1"]' "$(json_get "$LAST_BODY" h.x-client-id)" "A's request forwarded as tpp1"
refused 401 invalid_token 'Bearer error="invalid_token"' "B with A's token" \
	tpp2 tpp1 "$TOKEN_A" /accounts/1
assert_eq "token is bound to another certificate" "$(json_get "$LAST_BODY" error_description)" \
	"B with A's token: the reason is the binding"
refused 401 invalid_token 'Bearer error="invalid_token"' "B with A's token, no X-Client-Id" \
	tpp2 - "$TOKEN_A" /accounts/1
# B's client_id in the token, B's header, B's bound certificate: only the binding is wrong.
refused 401 invalid_token 'Bearer error="invalid_token"' \
	"B with a token for B's client_id bound to A's certificate" tpp2 tpp2 "$TOKEN_B_ON_A" /accounts/1
refused 401 invalid_token 'Bearer error="invalid_token"' \
	"the same token on a route without verify_jwt (jwt:client_id reads it)" \
	tpp2 tpp2 "$TOKEN_B_ON_A" /other
call 200 "B with its own token" tpp2 tpp2 "$TOKEN_B" /accounts/1
assert_eq '["tpp2"]' "$(json_get "$LAST_BODY" h.x-client-id)" "B's request forwarded as tpp2"
call 200 "B with its own token, the claim alone names it" tpp2 - "$TOKEN_B" /accounts/1
assert_eq '["tpp2"]' "$(json_get "$LAST_BODY" h.x-client-id)" "the claim's client_id forwarded"

# --- no token, other refusals ---------------------------------------------------------------
refused 401 invalid_token Bearer "no token on the verify_jwt route" tpp1 tpp1 - /accounts/1
call 200 "no token on a route without verify_jwt: the header decides" tpp1 tpp1 - /other
refused 401 invalid_client - "the token's client_id and the header disagree" \
	tpp1 tpp2 "$TOKEN_A" /accounts/1
refused 401 invalid_client - "a token for B's client_id, bound to A's certificate, from A" \
	tpp1 tpp2 "$TOKEN_B_ON_A" /accounts/1
refused 401 invalid_token 'Bearer error="invalid_token"' "an expired token" \
	tpp1 tpp1 "$TOKEN_EXPIRED" /accounts/1
refused 401 invalid_token 'Bearer error="invalid_token"' "HS256 keyed with the issuer's public key" \
	tpp1 tpp1 "$TOKEN_HS256" /accounts/1
refused 401 invalid_token 'Bearer error="invalid_token"' "a token another key signed" \
	tpp1 tpp1 "$TOKEN_OTHER_KEY" /accounts/1
refused 401 invalid_token 'Bearer error="invalid_token"' "two Authorization headers" \
	tpp1 tpp1 "$TOKEN_A" /accounts/1 -H "Authorization: Bearer $TOKEN_A"

# --- reload: the issuer's keys change without a restart --------------------------------------
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TEST_DIR/issuer2.key" 2>/dev/null ||
	die "cannot make the issuer's next key"
TOKEN_NEXT=$(mint tpp1 "$X5T_A" 600 "$TEST_DIR/issuer2.key" PS256 issuer-2)
refused 401 invalid_token 'Bearer error="invalid_token"' "a token of the next key, before the reload" \
	tpp1 tpp1 "$TOKEN_NEXT" /accounts/1
jwks "$TEST_DIR/issuer2.key" issuer-2 >"$TEST_DIR/jwks.json" || die "cannot write the next JWK set"
ctl_capture reload
assert_eq 0 "$CTL_RC" "psd2edgectl reload with the next JWK set ($CTL_ERR)"
assert_contains "$CTL_OUT" jwt.jwks "the reload names the JWK set"
call 200 "a token of the next key, after the reload" tpp1 tpp1 "$TOKEN_NEXT" /accounts/1
refused 401 invalid_token 'Bearer error="invalid_token"' "a token of the old key, after the reload" \
	tpp1 tpp1 "$TOKEN_A" /accounts/1
echo '{"keys": [{"kty": "RSA", "kid": "x", "n": "AAAA", "e": "AQAB"}]}' >"$TEST_DIR/jwks.json"
ctl_capture reload
assert_eq 1 "$CTL_RC" "a reload with a bad JWK set is refused"
assert_contains "$CTL_ERR" "jwt.jwks: keys[0]: not a valid RSA public key" "the refusal names the key"
call 200 "the keys in use stay after a refused reload" tpp1 tpp1 "$TOKEN_NEXT" /accounts/1
assert_true "psd2edged still runs" daemon_alive

finish
