#!/usr/bin/env bash
# The TLS policy is the daemon's own, whatever the host's openssl.cnf says: the daemon runs with
# OPENSSL_CONF pointing at a file that lowers everything (CipherString DEFAULT@SECLEVEL=0,
# MinProtocol TLSv1, SHA-1 signature algorithms) and still refuses a TPP with an RSA-1024
# client certificate, a client that offers only SHA-1 signature algorithms (for the handshake
# or for its CertificateVerify), TLS 1.0 and 1.1 clients, and an https upstream whose
# certificate has an RSA-1024 key; a normal client passes over TLS 1.3 and 1.2. `bind` refuses
# a certificate with an RSA-1024 key and one signed with SHA-1, naming the reason, and leaves
# the registry unchanged. The clients run with the same permissive file, so that every refusal
# seen here is the daemon's.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

topo_basic
pki_setup
upstream_start

WEAK_CNF=$TEST_DIR/weak-openssl.cnf
cat >"$WEAK_CNF" <<'EOF'
openssl_conf = openssl_init

[openssl_init]
ssl_conf = ssl_sect

[ssl_sect]
system_default = system_default_sect

[system_default_sect]
CipherString = DEFAULT@SECLEVEL=0
MinProtocol = TLSv1
SignatureAlgorithms = ECDSA+SHA1:RSA+SHA1:ECDSA+SHA256:RSA+SHA256:rsa_pss_rsae_sha256
EOF
weak_openssl() { OPENSSL_CONF=$WEAK_CNF openssl "$@"; }

# issue NAME CA KEY DIGEST [SAN]: NAME.pem/.key in $TEST_DIR with a KEY (rsa1024 or p256) key,
# issued by $PKI/CA.pem for TLS client use, or server use when a SAN is given
issue() {
	local name=$1 ca=$2 key=$3 md=$4 san=${5:-} ext=$TEST_DIR/$1.ext keyopt
	case $key in
	rsa1024) keyopt=(-algorithm RSA -pkeyopt rsa_keygen_bits:1024) ;;
	p256) keyopt=(-algorithm EC -pkeyopt ec_paramgen_curve:P-256) ;;
	esac
	if [ -n "$san" ]; then
		printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$san" >"$ext"
	else
		printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' >"$ext"
	fi
	{ weak_openssl genpkey "${keyopt[@]}" -out "$TEST_DIR/$name.key" &&
		weak_openssl req -new -key "$TEST_DIR/$name.key" -subj "/C=DE/O=Test TPP/CN=$name" \
			-out "$TEST_DIR/$name.csr" &&
		weak_openssl x509 -req -in "$TEST_DIR/$name.csr" -CA "$PKI/$ca.pem" -CAkey "$PKI/$ca.key" \
			-set_serial "0x$(openssl rand -hex 8)" -days 30 "-$md" -extfile "$ext" \
			-out "$TEST_DIR/$name.pem"; } >"$TEST_DIR/$name.err" 2>&1 ||
		die "cannot issue $name: $(cat "$TEST_DIR/$name.err")"
}
issue tpp-rsa1024 tpp-ca rsa1024 sha256
issue tpp-sha1 tpp-ca p256 sha1
issue upstream-rsa1024 bank-ca rsa1024 sha256 'IP:127.0.0.1'
assert_contains "$(openssl x509 -in "$TEST_DIR/tpp-rsa1024.pem" -noout -text)" "(1024 bit)" \
	"precondition: the weak certificate has a 1024-bit key"
assert_contains "$(openssl x509 -in "$TEST_DIR/tpp-sha1.pem" -noout -text)" "ecdsa-with-SHA1" \
	"precondition: the SHA-1 certificate is signed with SHA-1"

config_render "$DAEMON_CONFIG"
OPENSSL_CONF=$WEAK_CNF daemon_start

# --- bind --------------------------------------------------------------------------------------
snapshot() { ctl list --json 2>/dev/null; }
# bind_refused DESC CLIENT_ID CERT WANT: exit 1, an error naming WANT, registry unchanged
bind_refused() {
	local before
	before=$(snapshot)
	ctl_capture bind "$2" "$3"
	assert_eq 1 "$CTL_RC" "$1: psd2edgectl exits 1 (stderr: $CTL_ERR)"
	assert_contains "$CTL_ERR" "$4" "$1: the error says why"
	assert_eq "$before" "$(snapshot)" "$1: registry unchanged"
}
bind_refused "bind of an RSA-1024 certificate" weak-rsa "$TEST_DIR/tpp-rsa1024.pem" "key too weak"
bind_refused "bind of a SHA-1-signed certificate" weak-sha1 "$TEST_DIR/tpp-sha1.pem" \
	"digest algorithm too weak"
ctl_capture bind tpp1 "$PKI/tpp1.pem"
assert_eq 0 "$CTL_RC" "bind of a normal certificate (stderr: $CTL_ERR)"

# --- handshakes ----------------------------------------------------------------------------------
# s_client CERT_PEM KEY OPTS...: one GET for tpp1 with openssl s_client (permissive settings) from
# the TPP namespace; prints the status line, or nothing when the handshake or the request failed
s_client() {
	local cert=$1 key=$2
	shift 2
	printf 'GET /policy?client_id=tpp1 HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$GW_HOST" |
		ns_exec "$TPP_NS" env OPENSSL_CONF="$WEAK_CNF" timeout 20 openssl s_client -quiet \
			-connect "$GW_IP:$GW_PORT" -servername "$GW_HOST" -CAfile "$PKI/bank-ca.pem" \
			-cert "$cert" -key "$key" "$@" 2>>"$TEST_DIR/s_client.err" |
		grep -a -m1 '^HTTP/1.1 ' | tr -d '\r'
}
# refused DESC REASON CERT KEY OPTS...: no HTTP answer, and the daemon logs REASON for it
refused() {
	local desc=$1 reason=$2 got seen
	shift 2
	seen=$(wc -l <"$DAEMON_LOG")
	got=$(s_client "$@")
	assert_eq "" "$got" "$desc: no HTTP answer"
	if wait_until 5 log_since "$seen" "$reason"; then
		pass "$desc: the daemon logs '$reason'"
	else
		fail "$desc: the daemon does not log '$reason': $(tail -n +"$((seen + 1))" "$DAEMON_LOG")"
	fi
}
log_since() { tail -n +"$(($1 + 1))" "$DAEMON_LOG" | grep -qF "$2"; }

TPP1=("$PKI/tpp1.pem" "$PKI/tpp1.key")
assert_eq "HTTP/1.1 200 OK" "$(s_client "${TPP1[@]}")" "normal client, TLS 1.3"
assert_eq "HTTP/1.1 200 OK" "$(s_client "${TPP1[@]}" -tls1_2)" "normal client, TLS 1.2"
RSA1024=("$TEST_DIR/tpp-rsa1024.pem" "$TEST_DIR/tpp-rsa1024.key")
refused "RSA-1024 client certificate, TLS 1.3" "EE certificate key too weak" "${RSA1024[@]}"
refused "RSA-1024 client certificate, TLS 1.2" "EE certificate key too weak" "${RSA1024[@]}" -tls1_2
refused "client offering only SHA-1 signature algorithms" "no shared signature algorithms" \
	"${TPP1[@]}" -tls1_2 -sigalgs 'ECDSA+SHA1:RSA+SHA1'
# No algorithm the server asks for in its CertificateRequest is left, so no certificate is sent.
refused "client signing its CertificateVerify only with SHA-1" "peer did not return a certificate" \
	"${TPP1[@]}" -tls1_2 -client_sigalgs 'ECDSA+SHA1:RSA+SHA1'
refused "TLS 1.0 client" "unsupported protocol" "${TPP1[@]}" -tls1 -cipher 'DEFAULT@SECLEVEL=0'
refused "TLS 1.1 client" "unsupported protocol" "${TPP1[@]}" -tls1_1 -cipher 'DEFAULT@SECLEVEL=0'
assert_eq "HTTP/1.1 200 OK" "$(s_client "${TPP1[@]}")" "a normal client still passes afterwards"

# --- upstream ---------------------------------------------------------------------------------------
# An https upstream presenting an RSA-1024 certificate that the bank CA issued: 502. (openssl
# s_server, as Python's ssl module insists on security level 2 itself.)
daemon_stop || fail "daemon stopped cleanly"
weak_up_port=9444
ns_exec "$GW_NS" env OPENSSL_CONF="$WEAK_CNF" openssl s_server -quiet -www -accept "127.0.0.1:$weak_up_port" \
	-cert "$TEST_DIR/upstream-rsa1024.pem" -key "$TEST_DIR/upstream-rsa1024.key" \
	-Verify 1 -CAfile "$PKI/bank-ca.pem" >>"$TEST_DIR/weak-upstream.out" 2>&1 </dev/null &
LIB_PIDS+=("$!")
listening() { ns_exec "$GW_NS" ss -Htln "sport = :$1" | grep -q .; }
wait_until 10 listening "$weak_up_port" ||
	die "weak upstream did not start: $(tail -n 5 "$TEST_DIR/weak-upstream.out")"
config_render "$DAEMON_CONFIG" "{\"upstream\": {\"url\": \"https://127.0.0.1:$weak_up_port\",
	\"ca\": \"$PKI/bank-ca.pem\", \"cert\": \"$PKI/gateway-qwac.pem\", \"key\": \"$PKI/gateway-qwac.key\"}}"
OPENSSL_CONF=$WEAK_CNF daemon_start
seen=$(wc -l <"$DAEMON_LOG")
assert_eq "HTTP/1.1 502 Bad Gateway" "$(s_client "${TPP1[@]}")" \
	"upstream with an RSA-1024 certificate: 502"
assert_true "the daemon logs why the upstream was refused" \
	wait_until 5 log_since "$seen" "upstream default: TLS handshake failed: certificate verify failed: EE certificate key too weak"

finish
