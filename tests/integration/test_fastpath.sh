#!/usr/bin/env bash
# The handshake fast path accepts a bound, active certificate by thumbprint without rebuilding
# its chain, but never lets a certificate through that the full path would refuse: one bound
# while no CRL was configured and revoked by the CRL configured later is re-verified at start
# and refused in the handshake; an unbound certificate still takes the full path.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

topo_basic
pki_setup
upstream_start

stat_of() { # NAME: a top-level counter of `psd2edgectl stats`
	ctl stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# Without a CRL, tpp-revoked is a valid certificate of the TPP CA and can be bound.
config_render "$TEST_DIR/nocrl.json" '{"tls": {"crl": null}}'
daemon_start "$TEST_DIR/nocrl.json"
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null
assert_eq 0 $? "bind tpp1"
ctl bind late "$PKI/tpp-revoked.pem" >/dev/null
assert_eq 0 $? "bind tpp-revoked while no CRL is configured"
assert_status 200 "tpp-revoked passes while no CRL is configured" tpp-revoked "$GW_URL/a?client_id=late"
fast=$(stat_of verify_fast_path)
assert_true "bound certificates took the fast path ($fast)" test "$fast" -ge 1
full_before=$(stat_of verify_full_path)
assert_status 401 "an unbound certificate still gets the HTTP-level 401" tpp2 "$GW_URL/a?client_id=tpp2"
full_after=$(stat_of verify_full_path)
assert_true "the unbound certificate took the full path ($full_before -> $full_after)" \
	test "$full_after" -gt "$full_before"
daemon_stop

# The CRL now revokes it: the binding is still in the registry, the handshake must fail.
config_render "$DAEMON_CONFIG"
daemon_start
assert_contains "$(cat "$DAEMON_LOG")" "no longer verifies" "start-up re-verification names the certificate"
assert_handshake_fails "a bound certificate revoked by the new CRL fails the handshake" \
	tpp-revoked "$GW_URL/a?client_id=late"
assert_status 200 "tpp1 still passes by the fast path" tpp1 "$GW_URL/a?client_id=tpp1"
assert_status 401 "tpp1 claiming another client is still refused" tpp1 "$GW_URL/a?client_id=late"

finish
