#!/usr/bin/env bash
# eIDAS PSD2 roles (issue 9): bind reads the roles of a certificate's ETSI TS 119 495 PSD2
# QCStatement and its organizationIdentifier (show, list and --json print them) and refuses a
# QCStatement whose role OID and name disagree. A route's require_roles lets through only
# certificates with every listed role: a PSP_AI-only certificate gets 403 JSON on the PSP_PI
# route (/payments), reaching no upstream, and 200 on the PSP_AI route (/accounts); a PSP_PI and
# PSP_AI certificate passes both; a certificate without a QCStatement passes only the route
# that requires nothing. The upstream receives X-Client-Psd2-Roles (the TPP's own copy never),
# and none for a certificate without roles. The roles survive a restart (the registry).
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

topo_basic
pki_setup
upstream_start
config_render "$DAEMON_CONFIG" '{"upstream": null,
	"upstreams": {"bank": {"url": "http://127.0.0.1:8080"}},
	"routes": [{"prefix": "/accounts", "upstream": "bank", "require_roles": ["PSP_AI"]},
	           {"prefix": "/payments", "upstream": "bank", "require_roles": ["PSP_PI"]},
	           {"prefix": "/", "upstream": "bank"}]}'
daemon_start

# --- bind: the roles read, shown, and a mislabelled QCStatement refused ---------------------
ctl_capture bind tpp-ai "$PKI/tpp-ai.pem"
assert_eq 0 "$CTL_RC" "bind the PSP_AI certificate ($CTL_ERR)"
assert_contains "$CTL_OUT" "roles     PSP_AI" "bind prints its roles"
ctl bind tpp-pi-ai "$PKI/tpp-pi-ai.pem" >/dev/null || die "bind tpp-pi-ai"
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null || die "bind tpp1"

ctl show tpp-ai --json >"$TEST_DIR/show.json" || die "show tpp-ai"
assert_eq '["PSP_AI"]' "$(json_get "$TEST_DIR/show.json" certs.0.psd2_roles)" "show --json: psd2_roles"
assert_eq PSDGB-FCA-000101 "$(json_get "$TEST_DIR/show.json" certs.0.organization_identifier)" \
	"show --json: organizationIdentifier"
assert_eq GB-FCA "$(json_get "$TEST_DIR/show.json" certs.0.nca_id)" "show --json: NCA id"
assert_eq "Financial Conduct Authority" "$(json_get "$TEST_DIR/show.json" certs.0.nca_name)" \
	"show --json: NCA name"
ctl show tpp1 --json >"$TEST_DIR/show1.json" || die "show tpp1"
assert_eq '[] null' "$(json_get "$TEST_DIR/show1.json" certs.0.psd2_roles) $(json_get "$TEST_DIR/show1.json" certs.0.organization_identifier)" \
	"show --json: a certificate without a QCStatement has no roles"
assert_contains "$(ctl show tpp-pi-ai)" "PSP_PI,PSP_AI  PSDGB-FCA-000102  GB-FCA" "show prints roles, organizationIdentifier and NCA"
assert_true "list shows each client's roles" python3 - "$(ctl list)" <<'EOF'
import sys
rows = {l.split()[0]: l.split() for l in sys.argv[1].splitlines()[1:] if l.strip()}
assert rows["tpp-ai"][5] == "PSP_AI", rows
assert rows["tpp-pi-ai"][5] == "PSP_PI,PSP_AI", rows
assert rows["tpp1"][5] == "-", rows
EOF

before=$(ctl list --json)
ctl_capture bind tpp-qc "$PKI/tpp-qc-mislabelled.pem"
assert_eq 1 "$CTL_RC" "bind of a QCStatement whose role OID and name disagree: refused (exit 1)"
assert_contains "$CTL_ERR" "certificate refused: PSD2 QCStatement: rolesOfPSP[0]: OID 0.4.0.19495.1.2 is PSP_PI but its name is 'PSP_AI'" \
	"the refusal names the problem"
assert_eq "$before" "$(ctl list --json)" "the refused bind changed nothing"

# --- routes requiring roles -------------------------------------------------------------------
upstream_lines() { if [ -f "$UPSTREAM_LOG" ]; then wc -l <"$UPSTREAM_LOG"; else echo 0; fi; }

# The values of header NAME the upstream received for the last request (its echo), "|"-joined.
upstream_header() {
	python3 - "$LAST_BODY" "$1" <<'EOF'
import json, sys
h = json.load(open(sys.argv[1]))["headers"]
print("|".join(v for k, v in h if k.lower() == sys.argv[2].lower()))
EOF
}

# forbidden DESC CERT PATH MISSING: 403 JSON naming the missing roles; no upstream contact
forbidden() {
	local desc=$1 cert=$2 path=$3 missing=$4 n
	n=$(upstream_lines)
	assert_status 403 "$desc: 403" "$cert" -H "x-client-id: $cert" "$GW_URL$path"
	assert_eq forbidden "$(json_get "$LAST_BODY" error)" "$desc: error forbidden"
	assert_eq "the certificate's PSD2 roles lack $missing" \
		"$(json_get "$LAST_BODY" error_description)" "$desc: the description names $missing"
	assert_eq "$n" "$(upstream_lines)" "$desc: the upstream never saw it"
}

# allowed DESC CERT PATH ROLES_HEADER: 200 from the upstream, which received ROLES_HEADER
# ("" for none) as X-Client-Psd2-Roles, whatever the TPP sent
allowed() {
	local desc=$1 cert=$2 path=$3 roles=$4
	assert_status 200 "$desc: 200" "$cert" -H "x-client-id: $cert" \
		-H "X-Client-Psd2-Roles: PSP_AS,PSP_PI,PSP_AI,PSP_IC" "$GW_URL$path"
	assert_eq "$roles" "$(upstream_header X-Client-Psd2-Roles)" \
		"$desc: the upstream received X-Client-Psd2-Roles '$roles' only"
}

forbidden "PSP_AI-only certificate on the PSP_PI route" tpp-ai /payments/sepa PSP_PI
allowed "PSP_AI-only certificate on the PSP_AI route" tpp-ai /accounts/1 PSP_AI
allowed "PSP_AI-only certificate on a route requiring nothing" tpp-ai /other PSP_AI
allowed "PSP_PI and PSP_AI certificate on the PSP_PI route" tpp-pi-ai /payments/sepa PSP_PI,PSP_AI
allowed "PSP_PI and PSP_AI certificate on the PSP_AI route" tpp-pi-ai /accounts/1 PSP_PI,PSP_AI
forbidden "certificate without a QCStatement on the PSP_AI route" tpp1 /accounts/1 PSP_AI
forbidden "certificate without a QCStatement on the PSP_PI route" tpp1 /payments/sepa PSP_PI
allowed "certificate without a QCStatement on a route requiring nothing" tpp1 /other ""

# --- the roles come back from the registry after a restart ------------------------------------
daemon_stop || fail "daemon stopped cleanly"
daemon_start
forbidden "after a restart, PSP_AI-only certificate on the PSP_PI route" tpp-ai /payments/sepa PSP_PI
allowed "after a restart, PSP_AI-only certificate on the PSP_AI route" tpp-ai /accounts/1 PSP_AI

finish
