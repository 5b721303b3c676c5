#!/usr/bin/env bash
# Certificate expiry (issue 9): `psd2edgectl certs --expiring DAYS` lists the bound client
# certificates, the server certificate and the upstream client certificate (the gateway's QWAC
# towards an https upstream) that expire within DAYS, soonest first; and the daemon logs one
# warning for each within tls.expiry_warning_days when it starts (then once a day), none with 0.
# The test PKI's certificates are valid for 825 days from when it was generated.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

topo_basic
topo_bank
pki_setup
upstream_start --ns "$BANK_NS" --tls --host 0.0.0.0
UP="https://$BANK_IP:$UPSTREAM_TLS_PORT"
render() { # EXPIRY_WARNING_DAYS
	config_render "$DAEMON_CONFIG" "{\"upstream\": {\"url\": \"$UP\", \"ca\": \"$PKI/bank-ca.pem\",
		\"cert\": \"$PKI/gateway-qwac.pem\", \"key\": \"$PKI/gateway-qwac.key\"},
		\"tls\": {\"expiry_warning_days\": $1}}"
}

# The "certificate expiring" lines of the daemon's log since it started, as "KIND OWNER" words.
warnings() {
	sed -n 's/.*certificate expiring: \([a-z]*\) \(.*\)certificate [0-9a-f]\{64\} .*/\1 \2/p' \
		"$DAEMON_LOG" | sed 's/ *$//' | sort | tr '\n' ';'
}

render 3650
daemon_start
assert_eq "server;upstream default;" "$(warnings)" \
	"at start, a warning for the server certificate and the upstream client certificate"
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null || die "bind tpp1"

# --- psd2edgectl certs --expiring DAYS --------------------------------------------------------
ctl certs --expiring 3650 --json >"$TEST_DIR/certs.json" || die "certs --expiring 3650"
assert_eq 3650 "$(json_get "$TEST_DIR/certs.json" days)" "certs --json: the days asked"
assert_true "certs --json: tpp1's certificate, the server certificate and the QWAC, soonest first" \
	python3 - "$TEST_DIR/certs.json" "$(cert_sha256 "$PKI/tpp1.pem")" \
	"$(cert_sha256 "$PKI/server.pem")" "$(cert_sha256 "$PKI/gateway-qwac.pem")" <<'EOF'
import json, sys
certs = json.load(open(sys.argv[1]))["certs"]
got = {(c["kind"], c["owner"]): c for c in certs}
assert set(got) == {("client", "tpp1"), ("server", None), ("upstream", "default")}, got
assert got[("client", "tpp1")]["thumbprint"] == sys.argv[2]
assert got[("server", None)]["thumbprint"] == sys.argv[3]
assert got[("upstream", "default")]["thumbprint"] == sys.argv[4]
assert [c["not_after"] for c in certs] == sorted(c["not_after"] for c in certs)
assert all(0 < c["days_left"] <= 825 for c in certs), certs
EOF
soonest=$(json_get "$TEST_DIR/certs.json" certs.0.days_left)
ctl_capture certs --expiring 3650
assert_eq 0 "$CTL_RC" "certs --expiring 3650"
assert_contains "$CTL_OUT" "KIND" "certs prints a table"
assert_contains "$CTL_OUT" "client    tpp1" "certs names the client"
ctl_capture certs --expiring 30
assert_eq "no certificate expires within 30 days" "$CTL_OUT" "certs --expiring 30: none"
ctl_capture certs
assert_eq 2 "$CTL_RC" "certs without --expiring: usage error"
assert_contains "$CTL_ERR" "certs: --expiring DAYS is required" "the usage error says what is missing"
ctl_capture certs --expiring -1
assert_eq 2 "$CTL_RC" "certs --expiring -1: usage error"
ctl_capture certs --expiring 99999
assert_eq 1 "$CTL_RC" "certs --expiring 99999: refused by the daemon"
assert_contains "$CTL_ERR" "days must be between 0 and 36500" "the refusal gives the bounds"

# --- the warning covers bound certificates, and tls.expiry_warning_days 0 turns it off ----------
daemon_stop || fail "daemon stopped cleanly"
: >"$DAEMON_LOG"
daemon_start
assert_eq "client tpp1;server;upstream default;" "$(warnings)" \
	"after a restart, a warning for tpp1's certificate too"
daemon_stop || fail "daemon stopped cleanly"
: >"$DAEMON_LOG"
render $((soonest - 1))
daemon_start
assert_eq "" "$(warnings)" "nothing expires within $((soonest - 1)) days: no warning"
daemon_stop || fail "daemon stopped cleanly"
: >"$DAEMON_LOG"
render 0
daemon_start
assert_eq "" "$(warnings)" "tls.expiry_warning_days 0: no warning"

finish
