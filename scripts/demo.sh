#!/usr/bin/env bash
# make demo: psd2edge end to end, in network namespaces this script creates and removes.
#
#   [tpp namespace 10.77.0.2] --veth--> [gw namespace 10.77.0.1: psd2edged :8443
#                                         -> upstream.py (the bank's API) on 127.0.0.1:8080]
#
# It generates a throwaway PKI, starts the upstream and psd2edged, binds TPP "tpp1" to its
# certificate, then shows with curl: the bound TPP passing, the same TPP claiming another
# client_id refused, an unbound certificate refused, and an untrusted certificate failing the
# handshake. Everything is torn down at the end, also on failure or Ctrl-C.
#
# Environment: DEMO_BPF_MODE=off|generic|native (default off) attaches the XDP program to the
# gateway's veth; PSD2E_KEEP=1 keeps the temporary directory (logs, config, PKI).
set -uo pipefail

# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/../tests/integration/lib.sh"

BPF_MODE=${DEMO_BPF_MODE:-off}

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
# --- XDP -----------------------------------------------------------------------------------
# With DEMO_BPF_MODE=native (or generic) the XDP program is attached to the gateway's veth
# ($GW_IF) and its maps are pinned under $PIN_DIR. The steps that show XDP at work (deny-list
# drop, revoked client's flows cut in the kernel, `bpftool map dump pinned $PIN_DIR/stats`)
# go in demo_xdp below.
config_render "$DAEMON_CONFIG" "{\"bpf\": {\"mode\": \"$BPF_MODE\"}}"
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
if [ "$LAST_CODE" = 401 ]; then
	ok "HTTP 401: $(cat "$LAST_BODY")"
else
	bad "expected 401, got HTTP $LAST_CODE $(head -c 300 "$LAST_BODY")"
fi

demo_request "A valid but unbound certificate (tpp2) is refused" 401 tpp2 \
	"$GW_URL/accounts?client_id=tpp2"
if [ "$LAST_CODE" = 401 ]; then
	ok "HTTP 401: $(cat "$LAST_BODY")"
else
	bad "expected 401, got HTTP $LAST_CODE $(head -c 300 "$LAST_BODY")"
fi

# TLS 1.2 here so that curl reports the gateway's alert inside the handshake (with TLS 1.3 the
# client's side of the handshake is already over when the alert arrives).
demo_request "A certificate from an untrusted CA fails the TLS handshake" 000 untrusted \
	"$GW_URL/accounts?client_id=tpp1" --tls-max 1.2
if [ "$LAST_CODE" = 000 ]; then
	ok "no HTTP at all; curl exit $LAST_RC: $(head -n1 "$TEST_DIR/curl.err")"
else
	bad "expected a failed handshake, got HTTP $LAST_CODE"
fi

demo_xdp() {
	# Placeholder for the XDP part of the demo (issue: XDP data plane). Runs only when the
	# daemon attached the program; show e.g.:
	#   psd2edgectl deny add $TPP_IP/32 -> curl times out (dropped in XDP); deny del
	#   bpftool map dump pinned $PIN_DIR/stats
	step "XDP on $GW_IF ($BPF_MODE)"
	show_cmd "bpftool map dump pinned $PIN_DIR/stats"
	bpftool map dump pinned "$PIN_DIR/stats" 2>&1 | head -n 20 | sed 's/^/   /'
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
