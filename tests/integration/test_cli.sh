#!/usr/bin/env bash
# psd2edgectl against a running daemon: exit codes (0 ok, 1 refused, 2 usage, 3 unreachable),
# --json output that parses, every bind refusal leaving the registry unchanged (another CA,
# expired, CRL-revoked, not a certificate, bound to another client, second without --rotate,
# third with --rotate, already revoked), rotation, unbind of one certificate and of a client,
# revoke, deny-list, stats, quota show/reset and breaker list/reset (output, unknown names,
# audit), and an audit trail that records the uid. Also the control socket
# itself: mode 0600, malformed JSON answered with ok:false, other users refused.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

topo_basic
pki_setup
upstream_start
# A circuit breaker on the upstream: the quota and breaker commands need the policy store.
config_render "$DAEMON_CONFIG" '{"upstream": {"circuit_breaker": {"consecutive_failures": 5}}}'
daemon_start

# expect RC DESC ARGS...: run ctl, compare its exit status; on refusals stderr is one line
expect() {
	local want=$1 desc=$2
	shift 2
	ctl_capture "$@"
	if [ "$CTL_RC" = "$want" ]; then
		pass "$desc"
	else
		fail "$desc: psd2edgectl $* exited $CTL_RC, expected $want (stderr: $CTL_ERR; stdout: ${CTL_OUT:0:200})"
	fi
	if [ "$want" != 0 ] && [ "$CTL_RC" = "$want" ]; then
		assert_eq 1 "$(printf '%s\n' "$CTL_ERR" | grep -c .)" "$desc: one error line on stderr"
	fi
}

snapshot() { ctl list --json 2>/dev/null; }
# refused DESC ARGS...: exit 1 and the client list is exactly what it was
refused() {
	local desc=$1 before
	shift
	before=$(snapshot)
	expect 1 "$desc" "$@"
	assert_eq "$before" "$(snapshot)" "$desc: registry unchanged"
}

json_ok() { printf '%s' "$1" | python3 -c 'import json,sys; json.load(sys.stdin)' 2>/dev/null; }

# --- usage and reachability ---------------------------------------------------------------------
expect 0 "--help" --help
expect 2 "unknown command" frobnicate
expect 2 "bind without a certificate argument" bind tpp1
expect 2 "unknown option" list --bogus
expect 2 "unreadable certificate file" bind tpp1 "$TEST_DIR/does-not-exist.pem"
"$PSD2EDGECTL" --socket "$TEST_DIR/nothing-here.sock" stats >/dev/null 2>&1
assert_eq 3 $? "no daemon at the socket: exit 3"

# --- bind, list, show ---------------------------------------------------------------------------
expect 0 "bind tpp1" bind tpp1 "$PKI/tpp1.pem"
expect 0 "bind tpp2" bind tpp2 "$PKI/tpp2.pem" --json
assert_true "bind --json parses" json_ok "$CTL_OUT"
assert_contains "$CTL_OUT" "$(cert_sha256 "$PKI/tpp2.pem")" "bind --json reports the thumbprint"
expect 0 "list" list
assert_contains "$CTL_OUT" tpp1 "list shows tpp1"
expect 0 "list --json" list --json
assert_true "list --json parses" json_ok "$CTL_OUT"
expect 0 "show tpp1 --json" show tpp1 --json
assert_true "show --json parses" json_ok "$CTL_OUT"
assert_contains "$CTL_OUT" "$(cert_sha256 "$PKI/tpp1.pem")" "show lists tpp1's thumbprint"
expect 1 "show an unknown client" show nobody

# --- bind refusals ---------------------------------------------------------------------------------
refused "bind a certificate from another CA" bind tpp9 "$PKI/untrusted.pem"
refused "bind an expired certificate" bind tpp9 "$PKI/tpp-expired.pem"
refused "bind a certificate revoked by the CRL" bind tpp9 "$PKI/tpp-revoked.pem"
refused "bind a private key instead of a certificate" bind tpp9 "$PKI/tpp3.key"
refused "bind two certificates in one file" bind tpp9 "$PKI/bundle-all-tpp-ca.pem"
refused "bind a certificate already bound to another client" bind tpp9 "$PKI/tpp1.pem"
refused "bind the same certificate twice to the same client" bind tpp1 "$PKI/tpp1.pem"
refused "bind a second certificate without --rotate" bind tpp1 "$PKI/tpp1-next.pem"
ctl_capture bind 'bad id' "$PKI/tpp3.pem"
assert_true "invalid client_id refused (exit $CTL_RC)" test "$CTL_RC" = 1 -o "$CTL_RC" = 2

# --- rotation -------------------------------------------------------------------------------------
expect 0 "bind a second certificate with --rotate" bind tpp1 "$PKI/tpp1-next.pem" --rotate
refused "a third certificate, even with --rotate" bind tpp1 "$PKI/tpp3.pem" --rotate
assert_status 200 "old certificate works during the rotation" tpp1 "$GW_URL/a?client_id=tpp1"
assert_status 200 "new certificate works during the rotation" tpp1-next "$GW_URL/a?client_id=tpp1"
expect 0 "unbind the old certificate" unbind tpp1 --cert "$PKI/tpp1.pem"
assert_status 401 "old certificate refused after its unbind" tpp1 "$GW_URL/a?client_id=tpp1"
assert_status 200 "new certificate still works" tpp1-next "$GW_URL/a?client_id=tpp1"
expect 1 "unbind a certificate that is not bound" unbind tpp1 --cert "$PKI/tpp4.pem"

# --- unbind a client, enrol it again ---------------------------------------------------------------
expect 0 "unbind client tpp1" unbind tpp1
expect 1 "show tpp1 after unbind" show tpp1
assert_status 401 "tpp1-next refused after the client's unbind" tpp1-next "$GW_URL/a?client_id=tpp1"
expect 0 "enrol tpp1 again with its first certificate" bind tpp1 "$PKI/tpp1.pem"
assert_status 200 "tpp1 passes again" tpp1 "$GW_URL/a?client_id=tpp1"
expect 1 "unbind an unknown client" unbind nobody

# --- revoke ----------------------------------------------------------------------------------------
expect 0 "revoke tpp2" revoke tpp2
refused "bind a revoked certificate again" bind tpp2 "$PKI/tpp2.pem"
refused "bind a revoked certificate to another client" bind tpp9 "$PKI/tpp2.pem"
expect 1 "revoke an unknown client" revoke nobody
expect 0 "show tpp2 --json" show tpp2 --json
assert_contains "$CTL_OUT" revoked "show reports the revoked certificate"

# --- deny-list ---------------------------------------------------------------------------------------
expect 0 "deny add" deny add 192.0.2.7/24
expect 0 "deny list" deny list
assert_contains "$CTL_OUT" 192.0.2.0/24 "deny list shows the canonical CIDR"
expect 1 "deny add garbage" deny add not-a-cidr
expect 0 "deny del" deny del 192.0.2.0/24
expect 0 "deny list --json" deny list --json
assert_true "deny list --json parses" json_ok "$CTL_OUT"
assert_not_contains "$CTL_OUT" 192.0.2.0 "deny list empty again"

# --- stats, audit -------------------------------------------------------------------------------------
expect 0 "stats" stats
expect 0 "stats --json" stats --json
assert_true "stats --json parses" json_ok "$CTL_OUT"
expect 0 "audit --json" audit --json
assert_true "audit --json parses" json_ok "$CTL_OUT"
if printf '%s' "$CTL_OUT" | python3 -c '
import json, sys
r = json.load(sys.stdin)
e = r["entries"] if isinstance(r, dict) else r
acts = {x["action"] for x in e}
need = {"bind", "rotate", "unbind-cert", "unbind", "revoke", "deny-add", "deny-del"}
ok = need <= acts and all(x["uid"] == 0 for x in e)
print(sorted(acts), file=sys.stderr)
sys.exit(0 if ok else 1)' 2>"$TEST_DIR/audit.err"; then
	pass "audit records every kind of change with uid 0"
else
	fail "audit misses actions or uids: $(cat "$TEST_DIR/audit.err")"
fi
expect 0 "audit tpp1" audit tpp1
assert_contains "$CTL_OUT" bind "human audit output shows the actions"
expect 0 "audit tpp1 --json" audit tpp1 --json
assert_not_contains "$CTL_OUT" '"client_id": "tpp2"' "audit CLIENT_ID is filtered"

# --- quota and circuit breaker state (the pinned maps under bpf.pin_dir) -----------------------------
expect 0 "quota show of a client with no counters" quota show tpp1
assert_eq "" "$CTL_OUT" "quota show: no counters, no output"
expect 0 "quota show --json" quota show tpp1 --json
assert_eq "[]" "$CTL_OUT" "quota show --json: no counters, []"
refused "quota show of an unknown client" quota show nobody
assert_contains "$CTL_ERR" "no such client 'nobody'" "quota show names the unknown client"
refused "quota reset of an unknown client" quota reset nobody
expect 0 "quota reset" quota reset tpp1 --key A
assert_eq "reset 0 quota counters of tpp1 with key A" "$CTL_OUT" "quota reset says what it reset"
expect 2 "quota without show or reset" quota
expect 0 "breaker list" breaker list
assert_true "breaker list: a row 'default closed' under its header" python3 -c '
import re, sys
sys.exit(0 if re.search(r"^UPSTREAM\s+STATE\s.*\n^default\s+closed\s", sys.argv[1], re.M) else 1)' "$CTL_OUT"
refused "breaker reset of an unknown upstream" breaker reset nope
assert_contains "$CTL_ERR" "no such upstream 'nope'" "breaker reset names the unknown upstream"
expect 0 "breaker reset" breaker reset default
assert_eq "closed the circuit breaker of upstream default (was closed)" "$CTL_OUT" \
	"breaker reset says what it did"
ctl audit --limit 2 --json >"$TEST_DIR/audit-policy.json"
assert_eq "breaker-reset upstream default (was closed)" \
	"$(json_get "$TEST_DIR/audit-policy.json" entries.0.action) $(json_get "$TEST_DIR/audit-policy.json" entries.0.detail)" \
	"breaker reset is in the audit trail"
assert_eq "quota-reset tpp1 quota counters of key 'A'" \
	"$(json_get "$TEST_DIR/audit-policy.json" entries.1.action) $(json_get "$TEST_DIR/audit-policy.json" entries.1.client_id) $(json_get "$TEST_DIR/audit-policy.json" entries.1.detail)" \
	"quota reset is in the audit trail"

# --- the socket ---------------------------------------------------------------------------------------
assert_eq 600 "$(stat -c %a "$CTL_SOCKET")" "control socket mode 0600"
raw_ctl() { # LINE -> response line
	python3 - "$CTL_SOCKET" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
s.settimeout(5)
buf = b""
while not buf.endswith(b"\n"):
    d = s.recv(4096)
    if not d:
        break
    buf += d
print(buf.decode().strip())
PY
}
before=$(snapshot)
r=$(raw_ctl 'this is not json' | tr -d ' ')
assert_contains "$r" '"ok":false' "malformed JSON gets ok:false"
r=$(raw_ctl '{"cmd":"frob"}' | tr -d ' ')
assert_contains "$r" '"ok":false' "unknown command gets ok:false"
r=$(raw_ctl '{"cmd":"bind","client_id":"x","cert_pem":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}' | tr -d ' ')
assert_contains "$r" '"ok":false' "garbage PEM gets ok:false"
assert_eq "$before" "$(snapshot)" "registry unchanged by malformed requests"
expect 0 "daemon still answers after malformed requests" list
if command -v setpriv >/dev/null; then
	chmod 755 "$TEST_DIR"
	setpriv --reuid=65534 --regid=65534 --clear-groups "$PSD2EDGECTL" --socket "$CTL_SOCKET" list \
		>/dev/null 2>&1
	rc=$?
	assert_true "an unprivileged user cannot use the socket (exit $rc)" test "$rc" -ne 0
fi

finish
