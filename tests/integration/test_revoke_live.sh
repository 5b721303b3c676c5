#!/usr/bin/env bash
# Revoking a client stops its live connections at once: a keep-alive connection that already
# passed a request is closed by the daemon (within 2 s of the acknowledgement), while another
# client's connection stays open; a new connection with the revoked certificate gets 401.
# Unbinding a client also cuts its connections.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

topo_basic
pki_setup
upstream_start
config_render "$DAEMON_CONFIG"
daemon_start

for c in tpp1 tpp2 tpp3; do
	ctl bind "$c" "$PKI/$c.pem" >/dev/null
	assert_eq 0 $? "bind $c"
done

# hold NAME CERT CLIENT_ID MAX: a held keep-alive connection in the background
hold() {
	tlsclient "$2" --path "/hold?client_id=$3" --ready-file "$TEST_DIR/$1.ready" --max "$4" hold \
		>"$TEST_DIR/$1.out" 2>"$TEST_DIR/$1.err" &
	eval "pid_$1=\$!"
}

hold a tpp1 tpp1 10
hold b tpp2 tpp2 6
wait_until 10 test -f "$TEST_DIR/a.ready" -a -f "$TEST_DIR/b.ready" ||
	fail "held connections not established: $(cat "$TEST_DIR/a.err" "$TEST_DIR/b.err")"

t_revoke=$(date +%s.%N)
ctl revoke tpp1 >/dev/null
assert_eq 0 $? "revoke tpp1 while it is connected"
# shellcheck disable=SC2154 # set by eval in hold
wait "$pid_a"
rc=$?
assert_eq 0 "$rc" "tpp1's keep-alive connection was closed by the daemon ($(tail -n1 "$TEST_DIR/a.err"))"
if [ "$rc" = 0 ]; then
	t_close=$(tail -n1 "$TEST_DIR/a.out")
	ms=$(python3 -c "print(int((float('$t_close') - float('$t_revoke')) * 1000))")
	assert_true "closed promptly after the revoke (${ms} ms)" test "$ms" -lt 2000
fi
# shellcheck disable=SC2154
wait "$pid_b"
assert_eq 3 $? "tpp2's connection was left open ($(tail -n1 "$TEST_DIR/b.err"))"

assert_status 401 "a new connection with the revoked certificate gets 401" tpp1 "$GW_URL/a?client_id=tpp1"
assert_invalid_client_body "revoked certificate on a new connection"
assert_status 200 "tpp2 still served" tpp2 "$GW_URL/a?client_id=tpp2"

# --- unbind also cuts --------------------------------------------------------------------------
hold c tpp3 tpp3 10
wait_until 10 test -f "$TEST_DIR/c.ready" || fail "held tpp3 connection not established: $(cat "$TEST_DIR/c.err")"
ctl unbind tpp3 >/dev/null
assert_eq 0 $? "unbind tpp3 while it is connected"
# shellcheck disable=SC2154
wait "$pid_c"
assert_eq 0 $? "tpp3's connection was closed by the unbind ($(tail -n1 "$TEST_DIR/c.err"))"
assert_status 401 "tpp3 unbound: 401 on a new connection" tpp3 "$GW_URL/a?client_id=tpp3"

finish
