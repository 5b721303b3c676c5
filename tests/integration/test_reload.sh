#!/usr/bin/env bash
# Reload without restart, with XDP attached (native on the veth):
#  - a garbage CRL file on SIGHUP leaves service unchanged (live connections and new ones), and
#    the log says why, naming the file;
#  - `psd2edgectl reload` with a server key that does not match the certificate answers an
#    error naming tls.key and its file, and service is unchanged; one with a garbage JWK set
#    names jwt.jwks;
#  - a new server certificate: new handshakes present it (on every worker), a connection made
#    before it keeps going;
#  - a CRL revoking bound tpp1's certificate, installed by replacing the CRL file + SIGHUP:
#    tpp1's live keep-alive connection gets no answer to its next request and new handshakes
#    with its certificate are refused; its binding is revoked in the registry (audited, naming
#    the reload) and in the XDP clients map; tpp2's live connection and new ones keep going;
#  - a CRL revoking tpp3 installed with `psd2edgectl reload` run from tpp3's own keep-alive
#    connection, which sends its next request the moment the command returns: no answer, and
#    either XDP dropped the flow's packets (xdp.packets.drop_revoked) or the flow was already
#    gone from the flows map; bind checks against the new CRL from then on.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_cmd bpftool openssl
topo_basic
pki_setup
upstream_start

# The files the daemon reads are copies, so that the test can replace them.
ETC=$TEST_DIR/etc
mkdir -p "$ETC"
cp "$PKI"/{server.pem,server.key,tpp-ca.pem,tpp.crl} "$ETC/"
# A JWK set of one RSA key (n from the modulus in hex, e = 65537).
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TEST_DIR/issuer.key" \
	2>/dev/null || die "cannot make the token issuer's key"
python3 -c '
import base64, json, sys
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
print(json.dumps({"keys": [{"kty": "RSA", "kid": "issuer-1", "alg": "PS256",
                            "n": b64(bytes.fromhex(sys.argv[1])),
                            "e": b64((65537).to_bytes(3, "big"))}]}))' \
	"$(openssl rsa -in "$TEST_DIR/issuer.key" -modulus -noout | cut -d= -f2)" \
	>"$TEST_DIR/jwks.json" || die "cannot write the JWK set"
cp "$TEST_DIR/jwks.json" "$ETC/jwks.json"
config_render "$DAEMON_CONFIG" "{
	\"tls\": {\"cert\": \"$ETC/server.pem\", \"key\": \"$ETC/server.key\",
		\"client_ca\": \"$ETC/tpp-ca.pem\", \"crl\": \"$ETC/tpp.crl\"},
	\"jwt\": {\"jwks\": \"$ETC/jwks.json\", \"audience\": \"psd2edge-test\"},
	\"bpf\": {\"mode\": \"native\", \"interface\": \"$GW_IF\", \"pin_dir\": \"$PIN_DIR\"}}"
daemon_start
ns_exec "$GW_NS" ip link show dev "$GW_IF" | grep -q 'prog/xdp' ||
	skip "no XDP program on $GW_IF (native XDP on veth unavailable?)"

for c in tpp1 tpp2 tpp3; do
	ctl bind "$c" "$PKI/$c.pem" >/dev/null
	assert_eq 0 $? "bind $c"
done

# replace_file SRC NAME: replaces $ETC/NAME in one rename, as an operator's deployment would.
replace_file() {
	cp "$1" "$ETC/$2.new" && mv -f "$ETC/$2.new" "$ETC/$2"
}

# crl_revoking OUT CERT...: a CRL of the TPP CA revoking tpp-revoked and the given
# certificates, made with `openssl ca` on a database of its own.
crl_revoking() {
	local out=$1 db=$TEST_DIR/ca-$RANDOM c
	shift
	mkdir -p "$db"
	: >"$db/index.txt"
	echo 2000 >"$db/crlnumber"
	cat >"$db/ca.cnf" <<EOF
[ ca ]
default_ca = tpp
[ tpp ]
database = $db/index.txt
crlnumber = $db/crlnumber
certificate = $PKI/tpp-ca.pem
private_key = $PKI/tpp-ca.key
default_md = sha256
default_crl_days = 30
EOF
	for c in tpp-revoked "$@"; do
		openssl ca -config "$db/ca.cnf" -batch -revoke "$PKI/$c.pem" -crl_reason keyCompromise \
			2>>"$db/log" || die "openssl ca -revoke $c: $(tail -n 3 "$db/log")"
	done
	openssl ca -config "$db/ca.cnf" -batch -gencrl -out "$out" 2>>"$db/log" ||
		die "openssl ca -gencrl: $(tail -n 3 "$db/log")"
}

# sighup_reloads: how many SIGHUP reloads the daemon has ended so far (done or refused)
sighup_reloads() {
	grep -c 'reload (SIGHUP) \(done\|refused\)' "$DAEMON_LOG"
}

sighup_reloads_above() { # N
	[ "$(sighup_reloads)" -gt "$1" ]
}

# sighup: SIGHUP, then wait for the line that ends the reload.
sighup() {
	local before
	before=$(sighup_reloads)
	kill -HUP "$DAEMON_PID"
	wait_until 10 sighup_reloads_above "$before" || die "the daemon logged no reload after SIGHUP"
}

# session NAME CERT CLIENT_ID [BETWEEN]: two requests on one keep-alive connection from the TPP
# namespace, in the background: the first at once, the second once the shell command BETWEEN
# has run (default: wait for the file NAME.go). One JSON line per answer in NAME.out.
session() {
	local name=$1 between=${4:-"while [ ! -e '$TEST_DIR/$1.go' ]; do sleep 0.05; done"}
	printf '{"path": "/s?client_id=%s"}\n{"path": "/s?client_id=%s"}\n' "$3" "$3" |
		tlsclient "$2" --max 5 --between "$between" seq >"$TEST_DIR/$name.out" \
			2>"$TEST_DIR/$name.err" &
	eval "pid_$name=\$!"
	wait_until 10 test -s "$TEST_DIR/$name.out" ||
		die "session $name: no first answer: $(cat "$TEST_DIR/$name.err")"
	assert_eq 200 "$(json_line "$TEST_DIR/$name.out" 1 status)" "session $name: first request"
}

# session_end NAME: lets the second request go and waits for the client.
session_end() {
	touch "$TEST_DIR/$1.go"
	eval "wait \$pid_$1"
}

# client_state CLIENT_ID: the state of CLIENT_ID's slot in the pinned clients map (looked up by
# the slot `psd2edgectl show` gives: a dump of the 65536 entries takes half a minute here)
client_state() {
	local slot
	ctl show "$1" --json >"$TEST_DIR/state.json" && slot=$(json_get "$TEST_DIR/state.json" slot) ||
		return
	# shellcheck disable=SC2046 # the key's four bytes, little-endian
	bpftool -j map lookup pinned "$PIN_DIR/clients" key $(printf '%d %d %d %d' \
		$((slot & 255)) $((slot >> 8 & 255)) $((slot >> 16 & 255)) $((slot >> 24))) |
		python3 -c 'import json, sys; e = json.load(sys.stdin); print(e.get("formatted", e)["value"]["state"])'
}

# no_flows_of SLOT: no entry of the pinned flows map belongs to the client in SLOT
no_flows_of() {
	bpftool -j map dump pinned "$PIN_DIR/flows" 2>/dev/null | python3 -c '
import json, sys
sys.exit(any(int(e.get("formatted", e)["value"]["slot"]) == int(sys.argv[1])
             for e in json.load(sys.stdin)))' "$1"
}

xdp_stat() { # REASON
	ctl stats --json >"$TEST_DIR/stats.json" || { echo -1; return; }
	json_get "$TEST_DIR/stats.json" "xdp.packets.$1" || echo 0
}

thumb_of() { # CERT
	openssl x509 -in "$PKI/$1.pem" -outform DER | sha256sum | cut -d' ' -f1
}

# --- a garbage CRL on SIGHUP: refused, nothing changes --------------------------------------
session a tpp1 tpp1
session b tpp2 tpp2
echo "this is not a CRL" >"$TEST_DIR/garbage.crl"
replace_file "$TEST_DIR/garbage.crl" tpp.crl
sighup
log=$(cat "$DAEMON_LOG")
assert_contains "$log" "reload (SIGHUP) refused, nothing changed: $ETC/tpp.crl" \
	"the log says the reload was refused and names the CRL file"
session_end a
session_end b
assert_eq 200 "$(json_line "$TEST_DIR/a.out" 2 status)" "tpp1's live connection still served"
assert_eq 200 "$(json_line "$TEST_DIR/b.out" 2 status)" "tpp2's live connection still served"
assert_status 200 "tpp1 still served on a new connection" tpp1 "$GW_URL/a?client_id=tpp1"
assert_status 200 "tpp2 still served on a new connection" tpp2 "$GW_URL/a?client_id=tpp2"
replace_file "$PKI/tpp.crl" tpp.crl

# --- psd2edgectl reload with a server key that does not match: refused, naming it -------------
replace_file "$PKI/tpp2.key" server.key
ctl_capture reload
assert_eq 1 "$CTL_RC" "psd2edgectl reload with a wrong server key is refused"
assert_contains "$CTL_ERR" "tls.key ($ETC/server.key)" "the error names tls.key and its file"
assert_contains "$CTL_ERR" "nothing changed" "the error says nothing changed"
assert_status 200 "tpp1 still served after the refused reload" tpp1 "$GW_URL/a?client_id=tpp1"
replace_file "$PKI/server.key" server.key
echo '{"keys": "not a JWK set"}' >"$TEST_DIR/garbage-jwks.json"
replace_file "$TEST_DIR/garbage-jwks.json" jwks.json
ctl_capture reload
assert_eq 1 "$CTL_RC" "psd2edgectl reload with a garbage JWK set is refused"
assert_contains "$CTL_ERR" "nothing changed: jwt.jwks" "the error names jwt.jwks"
replace_file "$TEST_DIR/jwks.json" jwks.json
ctl_capture reload
assert_eq 0 "$CTL_RC" "psd2edgectl reload with the right files succeeds ($CTL_ERR)"
assert_contains "$CTL_OUT" "tls.crl" "its answer lists the files it read"
assert_contains "$CTL_OUT" "jwt.jwks" "its answer lists the JWK set"
assert_status 200 "tpp1 served after a reload of the same files" tpp1 "$GW_URL/a?client_id=tpp1"

# --- a new server certificate ------------------------------------------------------------------
# served_serial: the serial of the server certificate a new handshake gets
served_serial() {
	ns_exec "$TPP_NS" openssl s_client -connect "$GW_IP:$GW_PORT" -servername "$GW_HOST" \
		-cert "$PKI/tpp2.pem" -key "$PKI/tpp2.key" </dev/null 2>/dev/null |
		openssl x509 -noout -serial
}
printf 'subjectAltName = DNS:gateway.test, DNS:localhost, IP:10.77.0.1, IP:127.0.0.1\n' \
	>"$TEST_DIR/san.cnf"
openssl req -new -key "$PKI/server.key" -subj "/CN=gateway.test" 2>/dev/null |
	openssl x509 -req -CA "$PKI/bank-ca.pem" -CAkey "$PKI/bank-ca.key" -set_serial 0x5e12e10ad \
		-days 30 -extfile "$TEST_DIR/san.cnf" -out "$TEST_DIR/server-next.pem" 2>/dev/null ||
	die "cannot issue the next server certificate"
session f tpp2 tpp2
replace_file "$TEST_DIR/server-next.pem" server.pem
ctl_capture reload
assert_eq 0 "$CTL_RC" "psd2edgectl reload with a new server certificate ($CTL_ERR)"
for i in 1 2 3 4 5 6; do
	assert_eq serial=05E12E10AD "$(served_serial)" "new handshake $i gets the new server certificate"
done
session_end f
assert_eq 200 "$(json_line "$TEST_DIR/f.out" 2 status)" \
	"a connection made with the old certificate keeps going"

# --- a CRL revoking tpp1, installed with SIGHUP -------------------------------------------------
session c tpp1 tpp1
session d tpp2 tpp2
crl_revoking "$TEST_DIR/revokes-tpp1.crl" tpp1
replace_file "$TEST_DIR/revokes-tpp1.crl" tpp.crl
sighup
tpp1_thumb=$(thumb_of tpp1)
assert_contains "$(cat "$DAEMON_LOG")" \
	"reload (SIGHUP): certificate $tpp1_thumb of client tpp1 no longer verifies" \
	"the log names tpp1's certificate"
session_end c
assert_eq 1 $? "tpp1's live connection: the second request got no answer ($(tail -n 1 "$TEST_DIR/c.out"))"
assert_true "tpp1's live connection: no status for the second request" \
	test -z "$(json_line "$TEST_DIR/c.out" 2 status 2>/dev/null)"
session_end d
assert_eq 200 "$(json_line "$TEST_DIR/d.out" 2 status)" "tpp2's live connection keeps going"
assert_handshake_fails "a new connection with tpp1's certificate is refused" \
	tpp1 "$GW_URL/a?client_id=tpp1"
assert_status 200 "tpp2 served on a new connection" tpp2 "$GW_URL/a?client_id=tpp2"
ctl show tpp1 --json >"$TEST_DIR/show.json"
assert_eq revoked "$(json_get "$TEST_DIR/show.json" state)" "tpp1 is revoked in the registry"
ctl audit tpp1 --json >"$TEST_DIR/audit.json"
assert_eq revoke "$(json_get "$TEST_DIR/audit.json" entries.0.action)" "the audit trail has the revocation"
assert_eq "$tpp1_thumb" "$(json_get "$TEST_DIR/audit.json" entries.0.thumbprint)" \
	"the audit row names tpp1's certificate"
assert_contains "$(json_get "$TEST_DIR/audit.json" entries.0.detail)" "reload (SIGHUP)" \
	"the audit row names the reload"
assert_eq PSD2_CLIENT_REVOKED "$(client_state tpp1)" "tpp1's slot is revoked in the clients map"
assert_eq PSD2_CLIENT_ACTIVE "$(client_state tpp2)" "tpp2's slot is still active"

# --- a CRL revoking tpp3, installed with psd2edgectl reload from tpp3's own connection --------
crl_revoking "$TEST_DIR/revokes-tpp3.crl" tpp1 tpp3 tpp4
ctl show tpp3 --json >"$TEST_DIR/show3.json"
slot3=$(json_get "$TEST_DIR/show3.json" slot)
before=$(xdp_stat drop_revoked)
session e tpp3 tpp3 "cp '$TEST_DIR/revokes-tpp3.crl' '$ETC/tpp.crl.new' &&
	mv -f '$ETC/tpp.crl.new' '$ETC/tpp.crl' &&
	'$PSD2EDGECTL' --socket '$CTL_SOCKET' reload --json >'$TEST_DIR/e.reload'"
# shellcheck disable=SC2154 # set by eval in session
wait "$pid_e"
assert_eq 1 $? "tpp3's connection: the request sent right after the reload got no answer ($(tail -n 1 "$TEST_DIR/e.out"))"
assert_eq tpp3 "$(json_get "$TEST_DIR/e.reload" revoked.0.client_id)" \
	"psd2edgectl reload reports tpp3's certificate revoked"
after=$(xdp_stat drop_revoked)
if [ "$after" -gt "$before" ]; then
	pass "XDP dropped the revoked flow's packets (drop_revoked $before -> $after)"
else
	note "no drop_revoked ($before -> $after): the daemon closed the connection first"
fi
assert_true "tpp3's flow leaves the flows map" wait_until 3 no_flows_of "$slot3"
assert_eq PSD2_CLIENT_REVOKED "$(client_state tpp3)" "tpp3's slot is revoked in the clients map"
ctl_capture bind tpp4 "$PKI/tpp4.pem"
assert_eq 1 "$CTL_RC" "bind checks against the reloaded CRL: tpp4, listed in it, is refused"
assert_contains "$CTL_ERR" "certificate rejected by the client_ca CRL" "bind names the CRL"
assert_status 200 "tpp2 still served" tpp2 "$GW_URL/a?client_id=tpp2"

finish
