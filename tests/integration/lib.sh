# shellcheck shell=bash
# shellcheck disable=SC2034 # variables are for the tests that source this file
# tests/integration/lib.sh: the one shared runner for psd2edge's integration tests.
# (Modelled on xdp-tools lib/testing/test_runner.sh.) Source it at the top of a test:
#
#   #!/usr/bin/env bash
#   . "$(dirname "$0")/lib.sh"
#   topo_basic                 # namespaces tpp <-> gw, addresses, loopback up
#   pki_setup                  # $PKI holds the test PKI (scripts/gen-pki.sh)
#   upstream_start             # upstream.py on the gw namespace's loopback
#   config_render "$TEST_DIR/gw.json" '{"limits": {"max_body_bytes": 1024}}'
#   daemon_start "$TEST_DIR/gw.json"
#   ctl bind tpp1 "$PKI/tpp1.pem"
#   assert_status 200 "bound TPP passes" tpp1 "$GW_URL/x?client_id=tpp1"
#   finish
#
# Exit status of a test: 0 passed, 77 a precondition is missing (run.sh counts it as failed
# unless PSD2E_ALLOW_SKIP=1), anything else failed.
# Assertions record a failure and go on; `die` stops the test at once. Whatever happens, the
# EXIT trap kills every process the test started, deletes its namespaces, its BPF pin
# directory and (unless PSD2E_KEEP=1) its temporary directory. On failure it prints the tail of
# the daemon's log.
#
# Environment: PSD2E_KEEP=1 keeps $TEST_DIR; PSD2E_PKI=DIR uses/creates the PKI there
# (default build/test-pki); PSD2E_VERBOSE=1 echoes every check.
#
# ---- API -------------------------------------------------------------------------------
# Variables
#   ROOT BUILD PSD2EDGED PSD2EDGECTL  repository, build dir, binaries
#   TEST_NAME TEST_DIR                this test's name and its private temporary directory
#   PKI                               test PKI directory (after pki_setup)
#   PIN_DIR                           this test's bpffs pin dir (/sys/fs/bpf/psd2e-<pid>),
#                                     used in the default config, removed on exit
#   CTL_SOCKET                        control socket of the default config
#   GW_NS TPP_NS BANK_NS              short namespace names ("gw", "tpp", "bank")
#   GW_IP TPP_IP GW_IF TPP_IF         10.77.0.1 / 10.77.0.2, veth-gw / veth-tpp
#   BANK_GW_IP BANK_IP BANK_GW_IF     10.77.1.1 / 10.77.1.2, veth-bk (after topo_bank)
#   GW_PORT GW_HOST GW_URL            8443, gateway.test, https://gateway.test:8443
#   UPSTREAM_PORT UPSTREAM_TLS_PORT   8080, 9443
#   UPSTREAM_PID UPSTREAM_LOG         after upstream_start (UPSTREAM_LOG: one JSON echo a line)
#   DAEMON_PID DAEMON_LOG DAEMON_CONFIG ACCESS_LOG   after daemon_start
#   LAST_CODE LAST_RC LAST_BODY       after gw_request/assert_status: HTTP code ("000" when
#                                     none), curl's exit code, file holding the response body
# Namespaces (SHORT names; the real one is psd2e-<pid>-SHORT, see ns_name)
#   ns_create SHORT...                create, bring lo up; deleted on exit
#   ns_exec SHORT CMD...              run CMD in the namespace (nsenter --net: same mounts)
#   ns_link NS_A IF_A ADDR_A NS_B IF_B ADDR_B   veth pair, one end in each namespace
#                                     (created inside NS_A, never in the root namespace)
#   topo_basic                        tpp <-> gw
#   topo_bank                         gw <-> bank (call after topo_basic)
# PKI, upstream, daemon
#   pki_setup
#   upstream_start [--ns SHORT] [--tls] [--port P] [--host H] [--name N]   default: gw,
#                                     127.0.0.1:8080; --tls requires the gateway's QWAC (bank
#                                     CA), port 9443; --name N: a further instance, its files
#                                     $TEST_DIR/upstream-N.* (log: upstream_file N log), N in
#                                     its echoes as "upstream"
#   upstream_file [N] KIND            path of an instance's log|accepts|mode|out file
#   upstream_accepts [N]              TCP connections the instance accepted so far
#   upstream_mode MODE [N]            normal, hang (read requests, answer none) or a status
#                                     code every request gets (upstream.py --mode-file)
#   upstream_stop
#   config_render OUT [OVERRIDE_JSON] the default config (absolute paths into $PKI and
#                                     $TEST_DIR, bpf off) deep-merged with OVERRIDE_JSON; a
#                                     null value removes a key
#   daemon_start [CONFIG] [NS]        nsenter --net into NS (default gw), wait until ready (the
#                                     control socket accepts connections); dies on failure
#   daemon_stop [SECONDS]             SIGTERM, wait (default 15 s); returns 1 if it had to
#                                     SIGKILL or the exit status was not 0
#   daemon_kill9                      SIGKILL and reap
#   daemon_alive                      0 when the daemon is still running
#   ctl ARGS...                       build/psd2edgectl --socket $CTL_SOCKET ARGS
#   ctl_capture ARGS...               same; sets CTL_RC, CTL_OUT, CTL_ERR (strings)
# Requests from the TPP namespace
#   gw_curl CERT CURL_ARGS...         curl to the gateway with $PKI/CERT.pem/.key ("none":
#                                     no client certificate); --resolve and --cacert are set
#   gw_request CERT CURL_ARGS...      gw_curl, filling LAST_CODE/LAST_RC/LAST_BODY
#   tlsclient CERT ARGS...            tests/integration/tlsclient.py in the tpp namespace
# Assertions and outcome
#   assert_eq EXPECTED GOT DESC       assert_ne, assert_contains HAYSTACK NEEDLE DESC,
#   assert_not_contains, assert_true DESC CMD..., assert_false DESC CMD...
#   assert_status CODE DESC CERT CURL_ARGS...      HTTP code from gw_request
#   assert_handshake_fails DESC CERT CURL_ARGS...  curl exit 35, 55 or 56 and no HTTP code
#   json_get FILE PATH                print the value at PATH ("h.x-client-id.0", "a.b");
#                                     exit 1 when absent
#   json_valid FILE                   0 when FILE is one JSON document
#   json_line FILE N PATH             json_get on line N (from 1) of a JSON-lines file (e.g.
#                                     tlsclient seq's output); a string holding JSON is entered
#                                     like an object ("body.upstream" of an echoed body)
#   wait_until SECONDS CMD...         poll CMD every 0.1 s; 0 once it succeeds
#   pass DESC / fail DESC / note MSG / skip REASON (exit 77) / die REASON (exit 1)
#   require_root, require_cmd CMD..., require_binaries
#   finish                            end of test: exit 0, or 1 when any check failed
# -----------------------------------------------------------------------------------------

set -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-$ROOT/build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
PSD2EDGED=${PSD2EDGED:-$BUILD/psd2edged}
PSD2EDGECTL=${PSD2EDGECTL:-$BUILD/psd2edgectl}
LIB_DIR=$ROOT/tests/integration
TEST_NAME=$(basename "$0" .sh)
PKI=${PSD2E_PKI:-$BUILD/test-pki}

GW_NS=gw
TPP_NS=tpp
BANK_NS=bank
GW_IP=10.77.0.1
TPP_IP=10.77.0.2
GW_IF=veth-gw
TPP_IF=veth-tpp
BANK_GW_IP=10.77.1.1
BANK_IP=10.77.1.2
BANK_GW_IF=veth-bk
BANK_IF=veth-up
GW_PORT=8443
GW_HOST=gateway.test
GW_URL=https://$GW_HOST:$GW_PORT
UPSTREAM_PORT=8080
UPSTREAM_TLS_PORT=9443

LIB_FAILS=0
LIB_CHECKS=0
LIB_NS=()
LIB_PIDS=()
DAEMON_PID=
UPSTREAM_PID=
LAST_CODE=
LAST_RC=
CTL_RC=
CTL_OUT=
CTL_ERR=

TEST_DIR=$(mktemp -d "/tmp/psd2e-$TEST_NAME.XXXXXX") || exit 1
PIN_DIR=/sys/fs/bpf/psd2e-$$
CTL_SOCKET=$TEST_DIR/control.sock
LAST_BODY=$TEST_DIR/last-body
DAEMON_LOG=$TEST_DIR/psd2edged.log
ACCESS_LOG=$TEST_DIR/access.log
UPSTREAM_LOG=$TEST_DIR/upstream.log
DAEMON_CONFIG=$TEST_DIR/gw.json

# ---- outcome -------------------------------------------------------------------------------

note() { echo "  $TEST_NAME: $*"; }

pass() {
	LIB_CHECKS=$((LIB_CHECKS + 1))
	[ "${PSD2E_VERBOSE:-0}" = 1 ] && echo "  ok   $1"
	return 0
}

fail() {
	LIB_CHECKS=$((LIB_CHECKS + 1))
	LIB_FAILS=$((LIB_FAILS + 1))
	echo "  FAIL $1" >&2
	return 1
}

skip() {
	echo "  SKIP $TEST_NAME: $*"
	exit 77
}

die() {
	echo "  FATAL $TEST_NAME: $*" >&2
	LIB_FAILS=$((LIB_FAILS + 1))
	exit 1
}

finish() {
	if [ "$LIB_FAILS" -gt 0 ]; then
		echo "  $TEST_NAME: $LIB_FAILS of $LIB_CHECKS checks failed"
		exit 1
	fi
	echo "  $TEST_NAME: all $LIB_CHECKS checks passed"
	exit 0
}

require_root() {
	[ "$(id -u)" -eq 0 ] || skip "needs root (namespaces)"
}

require_cmd() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || skip "command not found: $c"
	done
}

# Missing binaries are a failure, not a skip: `make` builds them before the tests run.
require_binaries() {
	[ -x "$PSD2EDGED" ] || die "$PSD2EDGED not built"
	[ -x "$PSD2EDGECTL" ] || die "$PSD2EDGECTL not built"
}

# ---- cleanup -------------------------------------------------------------------------------

lib_kill() { # PID: TERM, then KILL after 3 s
	local pid=$1 i
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null
	for i in $(seq 30); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	return 0
}

lib_cleanup() {
	local rc=$? pid ns
	trap - EXIT INT TERM
	[ "$rc" -eq 0 ] && [ "$LIB_FAILS" -gt 0 ] && rc=1
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ] && [ -s "$DAEMON_LOG" ]; then
		echo "  --- last lines of $TEST_NAME's psd2edged log ---" >&2
		tail -n 25 "$DAEMON_LOG" | sed 's/^/  | /' >&2
	fi
	for pid in "${LIB_PIDS[@]}"; do
		lib_kill "$pid"
	done
	# Anything else still running inside our namespaces (e.g. a helper a test forgot).
	for ns in "${LIB_NS[@]}"; do
		for pid in $(ip netns pids "$ns" 2>/dev/null); do
			kill -KILL "$pid" 2>/dev/null
		done
	done
	for ns in "${LIB_NS[@]}"; do
		ip netns del "$ns" 2>/dev/null
	done
	if [ -d "$PIN_DIR" ]; then
		rm -rf "$PIN_DIR"
	fi
	if [ "${PSD2E_KEEP:-0}" = 1 ]; then
		echo "  $TEST_NAME: kept $TEST_DIR" >&2
	else
		rm -rf "$TEST_DIR"
	fi
	exit "$rc"
}
trap lib_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Removes namespaces and pin dirs left behind by test processes that no longer exist (e.g. a
# test killed with SIGKILL). Called by run.sh before the tests.
lib_cleanup_stale() {
	local ns pid d
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^psd2e-[0-9]*-'); do
		pid=${ns#psd2e-}
		pid=${pid%%-*}
		kill -0 "$pid" 2>/dev/null || ip netns del "$ns" 2>/dev/null
	done
	for d in /sys/fs/bpf/psd2e-[0-9]*; do
		[ -d "$d" ] || continue
		pid=${d##*/psd2e-}
		kill -0 "$pid" 2>/dev/null || rm -rf "$d"
	done
	return 0
}

# ---- namespaces ----------------------------------------------------------------------------

ns_name() { echo "psd2e-$$-$1"; }

ns_create() {
	local short ns
	for short in "$@"; do
		ns=$(ns_name "$short")
		ip netns add "$ns" || die "cannot create namespace $ns"
		LIB_NS+=("$ns")
		ip -n "$ns" link set lo up || die "cannot bring lo up in $ns"
	done
}

ns_exec() {
	local ns
	ns=$(ns_name "$1")
	shift
	nsenter --net="/run/netns/$ns" -- "$@"
}

# ns_link NS_A IF_A ADDR_A NS_B IF_B ADDR_B (addresses with prefix length, e.g. 10.77.0.1/24)
ns_link() {
	local a b
	a=$(ns_name "$1")
	b=$(ns_name "$4")
	ip -n "$a" link add "$2" type veth peer name "$5" netns "$b" ||
		die "cannot create veth $2/$5"
	ip -n "$a" addr add "$3" dev "$2" || die "cannot address $2"
	ip -n "$b" addr add "$6" dev "$5" || die "cannot address $5"
	ip -n "$a" link set "$2" up || die "cannot bring $2 up"
	ip -n "$b" link set "$5" up || die "cannot bring $5 up"
}

link_up() { # SHORT_NS IF: the link is up with carrier
	ip -n "$(ns_name "$1")" link show dev "$2" 2>/dev/null | head -n1 | grep -q 'LOWER_UP' &&
		! ip -n "$(ns_name "$1")" link show dev "$2" | head -n1 | grep -q 'NO-CARRIER'
}

topo_basic() {
	require_root
	require_cmd ip nsenter curl openssl python3 timeout
	ns_create "$GW_NS" "$TPP_NS"
	ns_link "$GW_NS" "$GW_IF" "$GW_IP/24" "$TPP_NS" "$TPP_IF" "$TPP_IP/24"
	wait_until 5 link_up "$GW_NS" "$GW_IF" || die "$GW_IF has no carrier"
	wait_until 5 link_up "$TPP_NS" "$TPP_IF" || die "$TPP_IF has no carrier"
}

topo_bank() {
	ns_create "$BANK_NS"
	ns_link "$GW_NS" "$BANK_GW_IF" "$BANK_GW_IP/24" "$BANK_NS" "$BANK_IF" "$BANK_IP/24"
	wait_until 5 link_up "$GW_NS" "$BANK_GW_IF" || die "$BANK_GW_IF has no carrier"
	wait_until 5 link_up "$BANK_NS" "$BANK_IF" || die "$BANK_IF has no carrier"
}

# ---- helpers -------------------------------------------------------------------------------

wait_until() { # SECONDS CMD...
	local deadline=$(($(date +%s%N) + $1 * 1000000000))
	shift
	while :; do
		"$@" && return 0
		[ "$(date +%s%N)" -ge "$deadline" ] && return 1
		sleep 0.1
	done
}

json_get() { # FILE PATH
	python3 - "$1" "$2" <<'EOF'
import json, sys
try:
    v = json.load(open(sys.argv[1]))
    for k in sys.argv[2].split(".") if sys.argv[2] else []:
        v = v[int(k)] if isinstance(v, list) else v[k]
except Exception:
    sys.exit(1)
print(v if isinstance(v, str) else json.dumps(v))
EOF
}

json_line() { # FILE N PATH
	python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
try:
    v = json.loads(open(sys.argv[1]).read().splitlines()[int(sys.argv[2]) - 1])
    for k in sys.argv[3].split(".") if sys.argv[3] else []:
        if isinstance(v, str):
            v = json.loads(v)
        v = v[int(k)] if isinstance(v, list) else v[k]
except Exception:
    sys.exit(1)
print(v if isinstance(v, str) else json.dumps(v))
EOF
}

json_valid() {
	python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$1" 2>/dev/null
}

unix_listening() { # PATH: something accepts connections there
	python3 -c 'import socket,sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])' "$1" 2>/dev/null
}

# ---- PKI, upstream, config, daemon -------------------------------------------------------------

pki_setup() {
	"$ROOT/scripts/gen-pki.sh" "$PKI" >/dev/null || die "gen-pki.sh failed"
	PKI=$(cd "$PKI" && pwd)
}

upstream_file() { # [NAME] KIND: the default instance's files are upstream.KIND
	if [ $# -gt 1 ]; then echo "$TEST_DIR/upstream-$1.$2"; else echo "$TEST_DIR/upstream.$1"; fi
}

upstream_start() {
	local ns=$GW_NS tls=0 host=127.0.0.1 port='' name='' args=() f=()
	while [ $# -gt 0 ]; do
		case $1 in
		--ns) ns=$2; shift ;;
		--tls) tls=1 ;;
		--port) port=$2; shift ;;
		--host) host=$2; shift ;;
		--name) name=$2; args+=(--name "$2"); shift ;;
		*) die "upstream_start: unknown option $1" ;;
		esac
		shift
	done
	if [ "$tls" = 1 ]; then
		port=${port:-$UPSTREAM_TLS_PORT}
		args+=(--tls --cert "$PKI/upstream.pem" --key "$PKI/upstream.key" --client-ca "$PKI/bank-ca.pem")
	else
		port=${port:-$UPSTREAM_PORT}
	fi
	[ -n "$name" ] && f=("$name")
	rm -f "$(upstream_file "${f[@]}" ready)"
	nsenter --net="/run/netns/$(ns_name "$ns")" -- python3 "$LIB_DIR/upstream.py" --host "$host" --port "$port" \
		--log "$(upstream_file "${f[@]}" log)" --ready-file "$(upstream_file "${f[@]}" ready)" \
		--accept-log "$(upstream_file "${f[@]}" accepts)" --mode-file "$(upstream_file "${f[@]}" mode)" \
		"${args[@]}" >>"$(upstream_file "${f[@]}" out)" 2>&1 &
	UPSTREAM_PID=$!
	LIB_PIDS+=("$UPSTREAM_PID")
	wait_until "${UPSTREAM_READY_TIMEOUT:-10}" test -s "$(upstream_file "${f[@]}" ready)" ||
		die "upstream did not start in ${UPSTREAM_READY_TIMEOUT:-10} s: $(tail -n 5 "$(upstream_file "${f[@]}" out)")"
}

upstream_accepts() { # [NAME]
	local f
	f=$(upstream_file "$@" accepts)
	if [ -f "$f" ]; then wc -l <"$f"; else echo 0; fi
}

upstream_mode() { # MODE [NAME]
	local f
	f=$(upstream_file "${@:2}" mode)
	if [ "$1" = normal ]; then rm -f "$f"; else echo "$1" >"$f.tmp" && mv "$f.tmp" "$f"; fi
}

upstream_stop() {
	[ -n "$UPSTREAM_PID" ] && lib_kill "$UPSTREAM_PID"
	UPSTREAM_PID=
}

config_render() { # OUT [OVERRIDE_JSON]
	local out=$1 override=${2:-"{}"}
	python3 - "$out" "$override" <<EOF || die "config_render: bad override: $override"
import json, sys
base = {
    "listen": ["0.0.0.0:$GW_PORT"],
    "tls": {"cert": "$PKI/server.pem", "key": "$PKI/server.key",
            "client_ca": "$PKI/tpp-ca.pem", "crl": "$PKI/tpp.crl"},
    "upstream": {"url": "http://127.0.0.1:$UPSTREAM_PORT"},
    "client_id": ["form:client_id", "query:client_id", "header:x-client-id"],
    "registry": "$TEST_DIR/registry.db",
    "control_socket": "$CTL_SOCKET",
    "bpf": {"pin_dir": "$PIN_DIR", "interface": "$GW_IF", "mode": "off"},
    "limits": {"drain_timeout_ms": 3000},
    "access_log": "$ACCESS_LOG",
}
def merge(a, b):
    for k, v in b.items():
        if v is None:
            a.pop(k, None)
        elif isinstance(v, dict) and isinstance(a.get(k), dict):
            merge(a[k], v)
        else:
            a[k] = v
    return a
cfg = merge(base, json.loads(sys.argv[2]))
with open(sys.argv[1], "w") as f:
    json.dump(cfg, f, indent=2)
    f.write("\n")
EOF
}

daemon_alive() {
	[ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null
}

# Ready means: the control socket accepts connections (a stale socket file left by a killed
# daemon refuses them, so it is not mistaken for readiness).
daemon_start() { # [CONFIG] [NS]
	local cfg=${1:-$DAEMON_CONFIG} ns=${2:-$GW_NS} sock deadline
	require_binaries
	[ -f "$cfg" ] || config_render "$cfg"
	sock=$(json_get "$cfg" control_socket) || die "no control_socket in $cfg"
	echo "=== start $(date +%T.%N) $cfg" >>"$DAEMON_LOG"
	nsenter --net="/run/netns/$(ns_name "$ns")" -- "$PSD2EDGED" --config "$cfg" \
		>>"$DAEMON_LOG" 2>&1 &
	DAEMON_PID=$!
	LIB_PIDS+=("$DAEMON_PID")
	deadline=$(($(date +%s) + ${DAEMON_READY_TIMEOUT:-15}))
	while :; do
		if ! daemon_alive; then
			wait "$DAEMON_PID" 2>/dev/null
			local st=$?
			DAEMON_PID=
			die "psd2edged exited with status $st before ready: $(tail -n 5 "$DAEMON_LOG")"
		fi
		[ -S "$sock" ] && unix_listening "$sock" && break
		[ "$(date +%s)" -ge "$deadline" ] && die "psd2edged not ready after ${DAEMON_READY_TIMEOUT:-15}s"
		sleep 0.05
	done
	return 0
}

daemon_stop() { # [SECONDS]
	local secs=${1:-15} _ st
	[ -n "$DAEMON_PID" ] || return 0
	kill -TERM "$DAEMON_PID" 2>/dev/null
	for _ in $(seq $((secs * 10))); do
		daemon_alive || break
		sleep 0.1
	done
	if daemon_alive; then
		note "psd2edged still running ${secs}s after SIGTERM; killing it"
		kill -KILL "$DAEMON_PID"
		wait "$DAEMON_PID" 2>/dev/null
		DAEMON_PID=
		return 1
	fi
	wait "$DAEMON_PID" 2>/dev/null
	st=$?
	DAEMON_PID=
	if [ "$st" -ne 0 ]; then
		note "psd2edged exited with status $st after SIGTERM"
		return 1
	fi
	return 0
}

daemon_kill9() {
	[ -n "$DAEMON_PID" ] || return 0
	kill -KILL "$DAEMON_PID" 2>/dev/null
	wait "$DAEMON_PID" 2>/dev/null
	DAEMON_PID=
	return 0
}

ctl() {
	"$PSD2EDGECTL" --socket "$CTL_SOCKET" "$@"
}

ctl_capture() {
	local o e
	o=$(mktemp "$TEST_DIR/ctl-out.XXXXXX")
	e=$(mktemp "$TEST_DIR/ctl-err.XXXXXX")
	"$PSD2EDGECTL" --socket "$CTL_SOCKET" "$@" >"$o" 2>"$e"
	CTL_RC=$?
	CTL_OUT=$(cat "$o")
	CTL_ERR=$(cat "$e")
	rm -f "$o" "$e"
	return "$CTL_RC"
}

# ---- requests ----------------------------------------------------------------------------------

gw_curl() { # CERT CURL_ARGS...
	local cert=$1 certargs=()
	shift
	if [ "$cert" != none ]; then
		certargs=(--cert "$PKI/$cert.pem" --key "$PKI/$cert.key")
	fi
	ns_exec "$TPP_NS" curl -sS --max-time "${CURL_MAX_TIME:-10}" --cacert "$PKI/bank-ca.pem" \
		--resolve "$GW_HOST:$GW_PORT:$GW_IP" "${certargs[@]}" "$@"
}

gw_request() { # CERT CURL_ARGS...
	local cert=$1
	shift
	: >"$LAST_BODY"
	LAST_CODE=$(gw_curl "$cert" -o "$LAST_BODY" -w '%{http_code}' "$@" 2>"$TEST_DIR/curl.err")
	LAST_RC=$?
	[ -n "$LAST_CODE" ] || LAST_CODE=000
}

tlsclient() { # CERT ARGS...
	local cert=$1 certargs=()
	shift
	if [ "$cert" != none ]; then
		certargs=(--cert "$PKI/$cert.pem" --key "$PKI/$cert.key")
	fi
	ns_exec "$TPP_NS" python3 "$LIB_DIR/tlsclient.py" --host "$GW_IP" --port "$GW_PORT" \
		--sni "$GW_HOST" --ca "$PKI/bank-ca.pem" "${certargs[@]}" "$@"
}

# ---- assertions --------------------------------------------------------------------------------

assert_eq() {
	if [ "$1" = "$2" ]; then pass "$3"; else fail "$3: expected '$1', got '$2'"; fi
}

assert_ne() {
	if [ "$1" != "$2" ]; then pass "$3"; else fail "$3: did not expect '$2'"; fi
}

assert_contains() {
	case $1 in
	*"$2"*) pass "$3" ;;
	*) fail "$3: '$2' not found in: $(printf '%s' "$1" | head -c 400)" ;;
	esac
}

assert_not_contains() {
	case $1 in
	*"$2"*) fail "$3: '$2' unexpectedly found in: $(printf '%s' "$1" | head -c 400)" ;;
	*) pass "$3" ;;
	esac
}

assert_true() { # DESC CMD...
	local d=$1
	shift
	if "$@"; then pass "$d"; else fail "$d (command failed: $*)"; fi
}

assert_false() { # DESC CMD...
	local d=$1
	shift
	if "$@"; then fail "$d (command unexpectedly succeeded: $*)"; else pass "$d"; fi
}

assert_status() { # CODE DESC CERT CURL_ARGS...
	local want=$1 desc=$2
	shift 2
	gw_request "$@"
	if [ "$LAST_CODE" = "$want" ]; then
		pass "$desc"
	else
		fail "$desc: expected HTTP $want, got $LAST_CODE (curl exit $LAST_RC: $(head -c 200 "$TEST_DIR/curl.err")) body: $(head -c 300 "$LAST_BODY")"
	fi
}

# The TLS handshake (or, with TLS 1.3, the first read after it) must fail and no HTTP status
# be seen. curl exits 35 (handshake), 56 (receive failure: with TLS 1.3 the server's alert
# arrives after the client's Finished) or 55 (with TLS 1.3 the client considers the handshake
# done, sends its request, and the server, which has already sent its alert and closed,
# answers with a reset; curl's getpeername() then fails with ENOTCONN).
assert_handshake_fails() { # DESC CERT CURL_ARGS...
	local desc=$1
	shift
	gw_request "$@"
	case $LAST_CODE/$LAST_RC in
	000/35 | 000/55 | 000/56) pass "$desc" ;;
	*) fail "$desc: expected a failed handshake (curl exit 35/55/56), got curl exit $LAST_RC, HTTP $LAST_CODE ($(head -c 200 "$TEST_DIR/curl.err"))" ;;
	esac
}

# The body of the last request is the contract's identity error.
assert_invalid_client_body() { # DESC
	local e
	e=$(json_get "$LAST_BODY" error)
	assert_eq invalid_client "$e" "$1: body has error=invalid_client"
	if json_get "$LAST_BODY" error_description >/dev/null; then
		pass "$1: body has error_description"
	else
		fail "$1: body lacks error_description: $(head -c 300 "$LAST_BODY")"
	fi
}

# DER SHA-256 of a PEM certificate, lowercase hex.
cert_sha256() {
	openssl x509 -in "$1" -outform DER | sha256sum | cut -d' ' -f1
}
