#!/usr/bin/env bash
# Two workers (SO_REUSEPORT): keep-alive connections of one client spread over both workers;
# a revoke closes every one of them, on both workers, and leaves another client's alone.
# (With 12 connections the chance that all land on one worker is 1 in 2048; when `stats`
# reports per-worker session counts the spread is checked directly.)
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

N=12
topo_basic
pki_setup
upstream_start
config_render "$DAEMON_CONFIG" '{"workers": 2}'
daemon_start

ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null
assert_eq 0 $? "bind tpp1"
ctl bind tpp2 "$PKI/tpp2.pem" >/dev/null
assert_eq 0 $? "bind tpp2"

ctl stats --json >"$TEST_DIR/stats0.json"
assert_eq 2 "$(json_get "$TEST_DIR/stats0.json" workers)" "stats reports 2 workers"

pids=()
for i in $(seq "$N"); do
	tlsclient tpp1 --path "/hold?client_id=tpp1" --ready-file "$TEST_DIR/a$i.ready" --max 15 hold \
		>"$TEST_DIR/a$i.out" 2>"$TEST_DIR/a$i.err" &
	pids+=($!)
done
tlsclient tpp2 --path "/hold?client_id=tpp2" --ready-file "$TEST_DIR/b.ready" --max 8 hold \
	>"$TEST_DIR/b.out" 2>"$TEST_DIR/b.err" &
pid_b=$!

all_ready() {
	local i
	for i in $(seq "$N"); do [ -f "$TEST_DIR/a$i.ready" ] || return 1; done
	[ -f "$TEST_DIR/b.ready" ]
}
wait_until 20 all_ready || fail "not all held connections were established: $(cat "$TEST_DIR"/a*.err | sort | uniq -c)"

established() {
	ns_exec "$GW_NS" ss -Htn state established "( sport = :$GW_PORT )" | wc -l
}
assert_eq $((N + 1)) "$(established)" "$((N + 1)) connections established at the gateway"

# Per-worker figures, when the daemon offers them (any array of per-worker objects).
ctl stats --json >"$TEST_DIR/stats1.json"
spread=$(python3 - "$TEST_DIR/stats1.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
for k, v in s.items():
    if isinstance(v, list) and len(v) == 2 and all(isinstance(w, dict) for w in v):
        for key in ("sessions", "connections", "connections_open", "n_sessions"):
            if all(key in w for w in v):
                print(" ".join(str(w[key]) for w in v))
                sys.exit(0)
PY
)
if [ -n "$spread" ]; then
	note "sessions per worker: $spread"
	# shellcheck disable=SC2086
	set -- $spread
	assert_true "both workers hold connections ($spread)" test "$1" -gt 0 -a "$2" -gt 0
else
	note "stats has no per-worker session counts; relying on $N connections over SO_REUSEPORT"
fi

t_revoke=$(date +%s.%N)
ctl revoke tpp1 >/dev/null
assert_eq 0 $? "revoke tpp1 with $N live connections"
closed=0
for i in $(seq "$N"); do
	if wait "${pids[$((i - 1))]}"; then
		closed=$((closed + 1))
	else
		note "connection $i: $(tail -n1 "$TEST_DIR/a$i.err")"
	fi
done
assert_eq "$N" "$closed" "every tpp1 connection was closed, on both workers"
last=$(cat "$TEST_DIR"/a*.out 2>/dev/null | sort -n | tail -n1)
if [ -n "$last" ]; then
	ms=$(python3 -c "print(int((float('$last') - float('$t_revoke')) * 1000))")
	assert_true "the last one closed promptly (${ms} ms after the revoke)" test "$ms" -lt 2000
fi
assert_eq 1 "$(established)" "only tpp2's connection remains"
wait "$pid_b"
assert_eq 3 $? "tpp2's connection was left open ($(tail -n1 "$TEST_DIR/b.err"))"

# A fresh tpp1 connection, whichever worker takes it, is refused.
for i in 1 2 3 4; do
	assert_status 401 "revoked tpp1 refused on a new connection ($i)" tpp1 "$GW_URL/a?client_id=tpp1"
done
assert_status 200 "tpp2 still served" tpp2 "$GW_URL/a?client_id=tpp2"

finish
