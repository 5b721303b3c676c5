#!/usr/bin/env bash
# make demo: psd2edge end to end, in network namespaces this script creates and removes.
#
#   [tpp namespace 10.77.0.2] --veth--> [gw namespace 10.77.0.1: psd2edged :8443
#                                         -> upstream.py (the bank's API) on 127.0.0.1:8080]
#
# It generates a throwaway PKI, starts the upstream and psd2edged, binds TPP "tpp1" to its
# certificate, then shows with curl: the bound TPP passing, the same TPP claiming another
# client_id refused, an unbound certificate refused, and an untrusted certificate failing the
# handshake, and three hostile requests (a header variant, a look-alike parameter, a path escape)
# refused with 400. Everything is torn down at the end, also on failure or Ctrl-C.
#
# With XDP attached (the default) it also shows the kernel side: the client's slot in the
# pinned BTF-typed map, a deny-listed source dropped before TCP, and a revoke flipping the
# client's state in the map.
#
# Environment: DEMO_BPF_MODE=native|generic|off (default native) attaches the XDP program to
# the gateway's veth; PSD2E_KEEP=1 keeps the temporary directory (logs, config, PKI).
set -uo pipefail

# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/../tests/integration/lib.sh"

BPF_MODE=${DEMO_BPF_MODE:-native}

if [ -t 1 ]; then B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' D=$'\e[2m' N=$'\e[0m'; else B='' G='' R='' D='' N=''; fi
step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
say() { printf '   %s\n' "$*"; }
show_cmd() { printf '%s   $ %s%s\n' "$D" "$*" "$N"; }
ok() { printf '   %s✔ %s%s\n' "$G" "$*" "$N"; }
bad() { printf '   %s✘ %s%s\n' "$R" "$*" "$N"; DEMO_BAD=$((DEMO_BAD + 1)); }
DEMO_BAD=0

require_root
require_binaries

step "Throwaway PKI (scripts/gen-pki.sh)"
PKI=$TEST_DIR/pki
pki_setup
say "TPP CA + CRL, TPP certificates tpp1 and tpp2, an untrusted CA, the bank's CA, server cert"
say "in $PKI"

step "Network namespaces: tpp ($TPP_IP) <-> gw ($GW_IP), veth ends inside them only"
topo_basic
say "$(ns_name "$TPP_NS") and $(ns_name "$GW_NS")"

step "The bank's API (tests/integration/upstream.py) on the gateway's loopback :$UPSTREAM_PORT"
upstream_start
say "it answers every request with a JSON echo of what it received"

step "psd2edged (bpf mode: $BPF_MODE)"
# The XDP program goes on the gateway's veth ($GW_IF); its maps are pinned under $PIN_DIR.
# Two routes to the bank: /payments with a quota of 2 calls a UTC day per account, the rest plain.
config_render "$DAEMON_CONFIG" "{\"bpf\": {\"mode\": \"$BPF_MODE\"},
  \"routes\": [{\"prefix\": \"/payments\", \"upstream\": \"default\",
                \"quota\": {\"limit\": 2, \"window\": \"day\", \"key\": \"header:x-account-id\"}},
               {\"prefix\": \"/\", \"upstream\": \"default\"}]}"
show_cmd "psd2edged --config $DAEMON_CONFIG   (in the gw namespace)"
daemon_start
say "ready: control socket $CTL_SOCKET"

step "Bind TPP tpp1's certificate to client_id tpp1"
show_cmd "psd2edgectl bind tpp1 tpp1.pem"
ctl bind tpp1 "$PKI/tpp1.pem" | sed 's/^/   /'
say "thumbprint (sha256 of the DER): $(cert_sha256 "$PKI/tpp1.pem")"

# demo_request DESC EXPECTED CERT URL [curl args]: shows the curl line and the outcome
demo_request() {
	local desc=$1 want=$2 cert=$3 url=$4
	shift 4
	step "$desc"
	show_cmd "curl --cert $cert.pem --key $cert.key ${*:+$* }'$url'"
	gw_request "$cert" "$@" "$url"
}

# expect_refusal CODE: the last request got CODE and its JSON error body
expect_refusal() {
	if [ "$LAST_CODE" = "$1" ]; then
		ok "HTTP $1: $(cat "$LAST_BODY")"
	else
		bad "expected $1, got HTTP $LAST_CODE $(head -c 300 "$LAST_BODY")"
	fi
}

demo_request "The bound TPP (tpp1's certificate, client_id=tpp1) passes" 200 tpp1 \
	"$GW_URL/accounts?client_id=tpp1"
if [ "$LAST_CODE" = 200 ]; then
	ok "HTTP $LAST_CODE; the upstream received:"
	say "  X-Client-Id:          $(json_get "$LAST_BODY" h.x-client-id.0)"
	say "  X-Client-Cert-Sha256: $(json_get "$LAST_BODY" h.x-client-cert-sha256.0)"
	say "  X-Forwarded-For:      $(json_get "$LAST_BODY" h.x-forwarded-for.0)"
	say "  X-Request-Id:         $(json_get "$LAST_BODY" h.x-request-id.0)"
else
	bad "expected 200, got HTTP $LAST_CODE (curl exit $LAST_RC) $(head -c 300 "$LAST_BODY")"
fi

demo_request "The same TPP claiming another client_id (tpp2) is refused" 401 tpp1 \
	"$GW_URL/accounts?client_id=tpp2"
expect_refusal 401

demo_request "A valid but unbound certificate (tpp2) is refused" 401 tpp2 \
	"$GW_URL/accounts?client_id=tpp2"
expect_refusal 401

# What the gateway would check one way and the bank's application could read another.
demo_request "Hostile input: X_Client_Id (Rack and CGI stacks read it as X-Client-Id)" 400 tpp1 \
	"$GW_URL/accounts?client_id=tpp1" -H 'X_Client_Id: tpp2'
expect_refusal 400
demo_request "Hostile input: a look-alike parameter name (CLIENT_ID)" 400 tpp1 \
	"$GW_URL/accounts?client_id=tpp1&CLIENT_ID=tpp2"
expect_refusal 400
demo_request "Hostile input: a path that climbs out of the API (/..;/ as Tomcat reads it)" 400 tpp1 \
	"$GW_URL/accounts/..;/admin?client_id=tpp1" --path-as-is
expect_refusal 400

# A bank limits calls per account; going over it gets the TPP's certificate blocked there.
for call in 1 2 3; do
	want=200
	[ "$call" = 3 ] && want=429
	demo_request "Quota: payments call $call today for account DE01 (2 a day per account)" $want tpp1 \
		"$GW_URL/payments?client_id=tpp1" -H 'x-account-id: DE01' -D "$TEST_DIR/demo-head"
	limit=$(grep -i '^ratelimit:' "$TEST_DIR/demo-head" | tr -d '\r')
	if [ "$LAST_CODE" = "$want" ] && [ "$want" = 200 ]; then
		ok "HTTP 200, $limit"
	elif [ "$LAST_CODE" = "$want" ]; then
		ok "HTTP 429, $(grep -i '^retry-after:' "$TEST_DIR/demo-head" | tr -d '\r'), $limit: $(cat "$LAST_BODY")"
	else
		bad "expected $want, got HTTP $LAST_CODE $(head -c 300 "$LAST_BODY")"
	fi
done
show_cmd "psd2edgectl quota show tpp1"
ctl quota show tpp1 | sed 's/^/   /'

# TLS 1.2 here so that curl reports the gateway's alert inside the handshake (with TLS 1.3 the
# client's side of the handshake is already over when the alert arrives).
demo_request "A certificate from an untrusted CA fails the TLS handshake" 000 untrusted \
	"$GW_URL/accounts?client_id=tpp1" --tls-max 1.2
if [ "$LAST_CODE" = 000 ]; then
	ok "no HTTP at all; curl exit $LAST_RC: $(head -n1 "$TEST_DIR/curl.err")"
else
	bad "expected a failed handshake, got HTTP $LAST_CODE"
fi

# xdp_counter NAME: one of the XDP per-reason packet counters, summed over CPUs
xdp_counter() {
	ctl stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["xdp"]["packets"][sys.argv[1]])' "$1"
}

demo_xdp() {
	step "XDP on $GW_IF: the kernel's copy of the binding"
	show_cmd "ip link show $GW_IF"
	ns_exec "$GW_NS" ip link show "$GW_IF" | grep -o 'prog/xdp.*' | sed 's/^/   /'
	sleep 1.1 # the daemon copies the per-CPU packet counters into the clients entry every second
	show_cmd "bpftool map lookup pinned $PIN_DIR/clients key 0 0 0 0   (slot 0)"
	bpftool map lookup pinned "$PIN_DIR/clients" key 0 0 0 0 2>&1 |
		grep -E '"(client_id|state|pass_packets)"' | sed 's/^ */   /'

	step "A deny-listed source is dropped in XDP, before TCP or TLS see it"
	show_cmd "psd2edgectl deny add $TPP_IP/32"
	ctl deny add "$TPP_IP/32" | sed 's/^/   /'
	local before after
	before=$(xdp_counter drop_deny)
	gw_request tpp1 --max-time 2 "$GW_URL/accounts?client_id=tpp1"
	after=$(xdp_counter drop_deny)
	if [ "$LAST_CODE" = 000 ] && [ "$after" -gt "$before" ]; then
		ok "no answer (curl exit $LAST_RC); xdp drop_deny went from $before to $after"
	else
		bad "expected drops in XDP, got HTTP $LAST_CODE, drop_deny $before -> $after"
	fi
	show_cmd "psd2edgectl deny del $TPP_IP/32"
	ctl deny del "$TPP_IP/32" | sed 's/^/   /'
	gw_request tpp1 "$GW_URL/accounts?client_id=tpp1"
	if [ "$LAST_CODE" = 200 ]; then ok "HTTP 200 again"; else bad "expected 200, got $LAST_CODE"; fi

	step "Revoking tpp1 flips its state in the kernel map at once"
	show_cmd "psd2edgectl revoke tpp1"
	ctl revoke tpp1 | sed 's/^/   /'
	local state
	state=$(bpftool map lookup pinned "$PIN_DIR/clients" key 0 0 0 0 2>/dev/null |
		grep -o 'PSD2_CLIENT_[A-Z]*')
	if [ "$state" = PSD2_CLIENT_REVOKED ]; then
		ok "clients[0].state = $state: packets of tpp1's live flows are dropped in XDP"
	else
		bad "expected PSD2_CLIENT_REVOKED in the map, got '$state'"
	fi
	gw_request tpp1 "$GW_URL/accounts?client_id=tpp1"
	if [ "$LAST_CODE" = 401 ]; then
		ok "a new connection gets HTTP 401: $(cat "$LAST_BODY")"
	else
		bad "expected 401 after the revoke, got $LAST_CODE"
	fi
}
if [ "$BPF_MODE" != off ]; then
	demo_xdp
fi

step "Audit trail"
show_cmd "psd2edgectl audit"
ctl audit | sed 's/^/   /'

step "Tearing down (daemon, upstream, namespaces, temporary files)"
daemon_stop
if [ "$DEMO_BAD" -gt 0 ]; then
	printf '\n%sdemo: %d step(s) did not show what they should%s\n' "$R" "$DEMO_BAD" "$N"
	exit 1
fi
printf '\n%sdemo: done%s\n' "$G" "$N"
exit 0
