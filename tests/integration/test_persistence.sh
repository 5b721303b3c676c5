#!/usr/bin/env bash
# The registry is durable: a binding survives a graceful restart (SIGTERM) and a crash
# (SIGKILL), including one acknowledged just before the crash; a revocation survives too.
# SIGTERM drains: a request in flight when the signal arrives still gets its response, and the
# daemon exits 0. The database is SQLite in WAL mode with a schema version.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

topo_basic
pki_setup
upstream_start
config_render "$DAEMON_CONFIG"
daemon_start

ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null
assert_eq 0 $? "bind tpp1"
ctl bind tpp2 "$PKI/tpp2.pem" >/dev/null
assert_eq 0 $? "bind tpp2"
assert_status 200 "tpp1 passes before any restart" tpp1 "$GW_URL/a?client_id=tpp1"

# --- graceful restart ------------------------------------------------------------------------
daemon_stop
assert_eq 0 $? "psd2edged exits 0 on SIGTERM"
assert_false "control socket removed after SIGTERM" test -S "$CTL_SOCKET"
daemon_start
assert_status 200 "tpp1 still bound after SIGTERM + restart" tpp1 "$GW_URL/a?client_id=tpp1"
assert_status 401 "tpp1 claiming tpp2 still refused after restart" tpp1 "$GW_URL/a?client_id=tpp2"
assert_status 200 "tpp2 still bound after restart" tpp2 "$GW_URL/a?client_id=tpp2"
assert_status 401 "unbound tpp3 still refused after restart" tpp3 "$GW_URL/a?client_id=tpp3"
assert_contains "$(ctl list 2>&1)" tpp1 "list shows tpp1 after restart"

# --- crash: kill -9, with a bind and a revoke acknowledged just before ------------------------
ctl bind tpp3 "$PKI/tpp3.pem" >/dev/null
assert_eq 0 $? "bind tpp3 right before the crash"
ctl revoke tpp2 >/dev/null
assert_eq 0 $? "revoke tpp2 right before the crash"
daemon_kill9
daemon_start
assert_status 200 "tpp1 still bound after kill -9 + restart" tpp1 "$GW_URL/a?client_id=tpp1"
assert_status 200 "tpp3 (bound just before kill -9) holds" tpp3 "$GW_URL/a?client_id=tpp3"
assert_status 401 "tpp2 (revoked just before kill -9) stays revoked" tpp2 "$GW_URL/a?client_id=tpp2"
ctl bind tpp2 "$PKI/tpp2.pem" >/dev/null 2>&1
assert_eq 1 $? "a revoked certificate cannot be bound again after a crash"

# --- a second crash straight after start (WAL recovery twice in a row) -----------------------
daemon_kill9
daemon_start
assert_status 200 "tpp1 still bound after a second kill -9" tpp1 "$GW_URL/a?client_id=tpp1"

# --- the database itself ----------------------------------------------------------------------
if command -v sqlite3 >/dev/null; then
	assert_eq wal "$(sqlite3 "$TEST_DIR/registry.db" 'PRAGMA journal_mode;' 2>&1)" "registry in WAL mode"
	v=$(sqlite3 "$TEST_DIR/registry.db" 'PRAGMA user_version;' 2>&1)
	assert_true "registry schema has a version (user_version=$v)" test "${v:-0}" -ge 1
fi

# --- SIGTERM drains an in-flight request --------------------------------------------------------
gw_curl tpp1 -o "$TEST_DIR/slow.json" -w '%{http_code}' "$GW_URL/slow?ms=1500&client_id=tpp1" \
	>"$TEST_DIR/slow.code" 2>"$TEST_DIR/slow.err" &
slow_pid=$!
sleep 0.5
t0=$(date +%s%N)
daemon_stop 10
assert_eq 0 $? "psd2edged exits 0 on SIGTERM with a request in flight"
wait "$slow_pid"
assert_eq 200 "$(cat "$TEST_DIR/slow.code")" "the in-flight request completed during the drain ($(cat "$TEST_DIR/slow.err"))"
el=$((($(date +%s%N) - t0) / 1000000))
assert_true "drain did not wait for the whole drain_timeout (${el} ms)" test "$el" -lt 3000
gw_request tpp1 "$GW_URL/a?client_id=tpp1"
assert_eq 000 "$LAST_CODE" "no new connections after the daemon stopped"

finish
