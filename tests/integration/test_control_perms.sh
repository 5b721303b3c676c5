#!/usr/bin/env bash
# Who may do what on the control socket, with real users: a throwaway read-only user (member of
# control_readonly_group as a supplementary group) can list, show, audit, read the deny-list,
# the stats, the quota counters and the breakers, and every command that changes state is refused with exit 1 and the registry left
# as it was; a throwaway admin user (control_group as its primary group) can change state; a
# user in neither group is refused. The socket's mode lets both groups connect (0666 with both,
# 0660 and the group's with the read-only group alone). And the socket's directory: a symbolic
# link on the way, or a group-writable directory, makes the daemon refuse to start, naming
# control_socket. The users and groups are created here and removed on exit.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_root
require_cmd useradd userdel groupadd groupdel setpriv stat
topo_basic
pki_setup
upstream_start

RO_GROUP=psd2e-ro-$$
ADMIN_GROUP=psd2e-adm-$$
RO_USER=psd2e-r-$$
ADMIN_USER=psd2e-a-$$
perms_cleanup() {
	local rc=$?
	userdel "$RO_USER" 2>/dev/null
	userdel "$ADMIN_USER" 2>/dev/null
	groupdel "$RO_GROUP" 2>/dev/null
	groupdel "$ADMIN_GROUP" 2>/dev/null
	(exit "$rc")
	lib_cleanup
}
trap perms_cleanup EXIT
groupadd "$RO_GROUP" || die "groupadd $RO_GROUP failed"
groupadd "$ADMIN_GROUP" || die "groupadd $ADMIN_GROUP failed"
useradd -M -N -g nogroup -G "$RO_GROUP" -s /usr/sbin/nologin "$RO_USER" || die "useradd $RO_USER failed"
useradd -M -N -g "$ADMIN_GROUP" -s /usr/sbin/nologin "$ADMIN_USER" || die "useradd $ADMIN_USER failed"

# The other users must reach the socket (not the test directory's other files: none is secret).
chmod 755 "$TEST_DIR"
cp "$PKI/tpp2.pem" "$PKI/tpp3.pem" "$TEST_DIR/" && chmod 644 "$TEST_DIR/tpp2.pem" "$TEST_DIR/tpp3.pem"

# as USER ARGS...: psd2edgectl ARGS as USER with its groups from the user database; sets CTL_RC,
# CTL_OUT, CTL_ERR
as() {
	local user=$1 o e
	shift
	o=$(mktemp "$TEST_DIR/as-out.XXXXXX")
	e=$(mktemp "$TEST_DIR/as-err.XXXXXX")
	setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups \
		"$PSD2EDGECTL" --socket "$CTL_SOCKET" "$@" >"$o" 2>"$e"
	CTL_RC=$?
	CTL_OUT=$(cat "$o")
	CTL_ERR=$(cat "$e")
	rm -f "$o" "$e"
}

# --- the socket's directory ---------------------------------------------------------------------
started_or_gone() { ! kill -0 "$1" 2>/dev/null || unix_listening "$2"; } # PID SOCKET
# refuses_to_start DESC SOCKET WANT: the daemon exits non-zero before it is ready and says WANT
refuses_to_start() {
	local desc=$1 cfg=$TEST_DIR/refuse.json pid st
	config_render "$cfg" "{\"control_socket\": \"$2\"}"
	: >"$TEST_DIR/refuse.log"
	ns_exec "$GW_NS" "$PSD2EDGED" --config "$cfg" >"$TEST_DIR/refuse.log" 2>&1 &
	pid=$!
	LIB_PIDS+=("$pid")
	wait_until 15 started_or_gone "$pid" "$2"
	if kill -0 "$pid" 2>/dev/null; then
		fail "$desc: the daemon started"
		lib_kill "$pid"
		return
	fi
	wait "$pid"
	st=$?
	assert_ne 0 "$st" "$desc: the daemon exits non-zero"
	assert_contains "$(cat "$TEST_DIR/refuse.log")" "$3" "$desc: the error names the key and the directory"
}
mkdir -m 700 "$TEST_DIR/real"
ln -s real "$TEST_DIR/link"
refuses_to_start "socket directory behind a symbolic link" "$TEST_DIR/link/control.sock" \
	"control_socket: $TEST_DIR/link is a symbolic link"
assert_false "nothing was created behind the link" test -e "$TEST_DIR/real/control.sock"
mkdir -m 770 "$TEST_DIR/gw"
refuses_to_start "group-writable socket directory" "$TEST_DIR/gw/control.sock" \
	"control_socket: directory $TEST_DIR/gw is group-writable"
assert_false "nothing was created in it" test -e "$TEST_DIR/gw/control.sock"

# --- both groups ------------------------------------------------------------------------------------
config_render "$DAEMON_CONFIG" "{\"control_group\": \"$ADMIN_GROUP\", \"control_readonly_group\": \"$RO_GROUP\",
	\"upstream\": {\"circuit_breaker\": {\"consecutive_failures\": 5}}}"
daemon_start
assert_eq 666 "$(stat -c %a "$CTL_SOCKET")" "with both groups the socket is 0666"
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null
assert_eq 0 $? "root binds tpp1"

snapshot() { ctl list --json 2>/dev/null; ctl deny list --json 2>/dev/null; ctl audit --json 2>/dev/null; }
before=$(snapshot)
reads() { # DESC ARGS...: the read-only user may
	local desc=$1
	shift
	as "$RO_USER" "$@"
	assert_eq 0 "$CTL_RC" "read-only user: $desc (stderr: $CTL_ERR)"
}
refused() { # DESC ARGS...: the read-only user may not; exit 1, permission denied
	local desc=$1
	shift
	as "$RO_USER" "$@"
	assert_eq 1 "$CTL_RC" "read-only user: $desc is refused with exit 1 (stderr: $CTL_ERR)"
	assert_contains "$CTL_ERR" "permission denied" "read-only user: $desc: permission denied"
}
reads "list" list
assert_contains "$CTL_OUT" tpp1 "read-only user: list shows tpp1"
reads "show" show tpp1
reads "audit" audit
reads "deny list" deny list
reads "stats" stats
reads "quota show" quota show tpp1
reads "breaker list" breaker list
refused "bind" bind tpp2 "$TEST_DIR/tpp2.pem"
refused "bind --rotate" bind tpp1 "$TEST_DIR/tpp3.pem" --rotate
refused "unbind" unbind tpp1
refused "revoke" revoke tpp1
refused "deny add" deny add 192.0.2.0/24
refused "limit set" limit set tpp1 --pps 10
refused "limit src" limit src --per-sec 10 --burst 5
refused "quota reset" quota reset tpp1
refused "breaker reset" breaker reset default
assert_eq "$before" "$(snapshot)" "the read-only user changed nothing (clients, deny-list, audit)"

as "$ADMIN_USER" bind tpp2 "$TEST_DIR/tpp2.pem"
assert_eq 0 "$CTL_RC" "admin user: bind (stderr: $CTL_ERR)"
ctl audit tpp2 --json >"$TEST_DIR/audit.json"
assert_eq "$(id -u "$ADMIN_USER")" "$(json_get "$TEST_DIR/audit.json" entries.0.uid)" \
	"the audit trail records the admin user's uid"
setpriv --reuid=nobody --regid=nogroup --clear-groups "$PSD2EDGECTL" --socket "$CTL_SOCKET" list \
	>/dev/null 2>"$TEST_DIR/nobody.err"
rc=$?
assert_eq 1 "$rc" "a user in neither group is refused with exit 1"
assert_contains "$(cat "$TEST_DIR/nobody.err")" "permission denied" "a user in neither group: permission denied"
daemon_stop || fail "daemon stopped cleanly"

# --- the read-only group alone: the socket is that group's ------------------------------------------
config_render "$DAEMON_CONFIG" "{\"control_readonly_group\": \"$RO_GROUP\"}"
daemon_start
assert_eq "660 $RO_GROUP" "$(stat -c '%a %G' "$CTL_SOCKET")" "with the read-only group alone the socket is 0660 and its"
reads "list, group access by file mode" list
refused "bind, group access by file mode" bind tpp3 "$TEST_DIR/tpp3.pem"

finish
