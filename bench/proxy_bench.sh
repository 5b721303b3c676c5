#!/usr/bin/env bash
# The issue-11 gateway benchmark: psd2edge, HAProxy and NGINX (Debian's packages) side by side,
# in the same run, from the same certificates, behind the same upstream, each with one worker
# pinned to CPU 0; the load generator (bench/loadgen.c) and the upstream (NGINX, fixed 200,
# keep-alive) on CPU 1. Everything runs on the loopback of a network namespace created here
# and deleted on exit. The figure of merit is the server's own CPU time per handshake and per
# request (utime + stime of /proc/PID/stat over the measured window); throughput is secondary
# on a shared machine.
#
# Scenarios (PROXY_BENCH_SECONDS each, default 5, after a 1 s warm-up):
#   1 handshake  new connection, full mTLS handshake + one request: ECDSA P-256 and RSA-2048,
#                TLS 1.3 and 1.2
#   2 keepalive  requests on keep-alive connections through the binding check
#   3 half_load  latency at a fixed offered load of half the slowest peer's scenario-2 rate
#   4 nocheck    scenario 2 on a route without the binding check (HAProxy and NGINX; psd2edge
#                has no such route: its check is in every request's pipeline)
#   5 idle       server memory per idle keep-alive connection, PROXY_BENCH_IDLE connections
#                (default 10000)
#   6 routes     psd2edge alone: scenario 2 on two routes of one psd2edged to the same upstream,
#                /plain (no policy) and /limited (a quota per client_id and X-Account-Id, limit
#                1e9 a day, and a spike arrest of 1e6 a second, burst 1e6: neither ever refuses
#                here), alternately for PROXY_BENCH_ROUNDS rounds (default 3), the order swapped
#                every round; the figure is the ratio of the medians, limited / plain. Its
#                quota map is pinned on a bpffs mounted in the namespace's own mount namespace
#                (ip netns exec makes one) and removed with psd2edged --detach on exit. Every
#                response must be a 200 (access log, warm-up included), and the quota must have
#                counted each /limited request; anything else fails the run.
# usage: bench/proxy_bench.sh (root). Raw loadgen output: $BUILD/bench/proxy_runs.jsonl;
# bench/proxy_report.py turns it into bench/results.json ("proxy") and docs/BENCHMARKS.md.
#
# Quick A/B (for measuring one change; no report, results.json untouched):
#   PROXY_BENCH_ONLY="keepalive idle half_load handshake routes" runs only those scenarios (also
#   keepalive_idle: scenario 2 while PROXY_BENCH_IDLE_HELD, default 2000, idle connections are
#   held open by another loadgen; rounds:
#   PROXY_BENCH_ROUNDS, default 1; half_load at PROXY_BENCH_RATE req/s, default 5000) and prints
#   the median per peer (routes: per route, and the ratio); raw lines in
#   $BUILD/bench/proxy_runs_only.jsonl.
#   PROXY_BENCH_BASELINE=DIR adds DIR/psd2edged as the peer psd2edge_base (the binary before the
#   change), run right before psd2edge in every scenario but 6, so both see the same host load.
#
# bench/proxy_bench.sh profile: psd2edge alone under scenario 2, profiled instead of compared:
# `strace -c -f` over PROFILE_REQUESTS (20000) requests (system calls per request), then
# the system calls of 4 requests on one connection in order (strace-sequence.txt), then
# `perf record` (cpu-clock, DWARF call graphs) for PROFILE_SECONDS (8) and
# bench/profile_breakdown.py over it; reports in $BUILD/bench/profile/ (strace.txt,
# perf-self.txt, perf-children.txt, perf-dso.txt, breakdown.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=${BUILD:-build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
SECONDS_PER_RUN=${PROXY_BENCH_SECONDS:-5}
IDLE_CONNS=${PROXY_BENCH_IDLE:-10000}
CONNS=${PROXY_BENCH_CONNS:-16}
OUT=$BUILD/bench
RUNS=$OUT/proxy_runs.jsonl

ONLY=${PROXY_BENCH_ONLY:-}
BASELINE=${PROXY_BENCH_BASELINE:-}
case $BASELINE in /*|'') ;; *) BASELINE=$ROOT/$BASELINE ;; esac

MODE=bench
[ -n "$ONLY" ] && RUNS=$OUT/proxy_runs_only.jsonl
[ "${1:-}" = profile ] && { MODE=profile; RUNS=$OUT/profile/runs.jsonl; }
[ "${2:-}" = profile ] && MODE=profile RUNS=$OUT/profile/runs.jsonl

if [ "${1:-}" != --inside ]; then
	[ "$(id -u)" = 0 ] || { echo "proxy_bench: needs root (network namespace)" >&2; exit 1; }
	tools=(haproxy nginx openssl taskset python3)
	[ $MODE = profile ] && tools+=(perf strace)
	for t in "${tools[@]}"; do
		command -v "$t" >/dev/null || { echo "proxy_bench: $t missing (scripts/install-deps.sh)" >&2; exit 1; }
	done
	for b in psd2edged psd2edgectl bench/loadgen; do
		[ -x "$BUILD/$b" ] || { echo "proxy_bench: $BUILD/$b missing (make BUILD=$BUILD bench)" >&2; exit 1; }
	done
	[ -z "$BASELINE" ] || [ -x "$BASELINE/psd2edged" ] ||
		{ echo "proxy_bench: $BASELINE/psd2edged missing (PROXY_BENCH_BASELINE)" >&2; exit 1; }
	[ "$(nproc)" -ge 2 ] || { echo "proxy_bench: needs 2 CPUs (server on 0, load on 1)" >&2; exit 1; }
	NS=psd2e-bench-$$
	ip netns add "$NS"
	trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
	ip -n "$NS" link set lo up
	# Namespaced sysctls: room for 10 000 idle connections and the closed handshake sockets.
	ip netns exec "$NS" sysctl -qw net.ipv4.ip_local_port_range="10000 65000" \
		net.ipv4.tcp_tw_reuse=1 net.core.somaxconn=8192 net.ipv4.tcp_max_syn_backlog=8192
	mkdir -p "$(dirname "$RUNS")"
	: >"$RUNS"
	load_before=$(cut -d' ' -f1-3 /proc/loadavg)
	ip netns exec "$NS" "$0" --inside $MODE
	[ $MODE = profile ] && exit 0
	[ -n "$ONLY" ] && exit 0
	python3 bench/proxy_report.py "$RUNS" "$load_before" "$(cut -d' ' -f1-3 /proc/loadavg)"
	exit 0
fi

# ---- inside the namespace -------------------------------------------------------------------
# psd2edge keeps its upstream connection with each idle client connection: two descriptors
# per connection must fit under the hard limit (20 000 in some containers, which root cannot
# raise without CAP_SYS_RESOURCE).
ulimit -n "$(ulimit -Hn)"
fd_room=$((($(ulimit -n) - 1000) / 2))
if [ "$IDLE_CONNS" -gt "$fd_room" ]; then
	echo "proxy_bench: idle connections $IDLE_CONNS -> $fd_room (open-file limit $(ulimit -n))" >&2
	IDLE_CONNS=$fd_room
fi
T=$(mktemp -d /tmp/psd2e-bench.XXXXXX)
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	# Scenario 6's pins, then their bpffs (it would also go with this mount namespace).
	if mountpoint -q "$T/bpffs"; then
		"$BUILD/psd2edged" --detach --config "$T/psd2edge_routes.json" >/dev/null 2>&1 || true
		umount "$T/bpffs" || true
	fi
	[ -n "${PROXY_BENCH_KEEP:-}" ] && echo "proxy_bench: kept $T" >&2 || rm -rf "$T"
}
trap cleanup EXIT

UPSTREAM_PORT=18080
declare -A PORT=([psd2edge]=18443 [haproxy]=18444 [nginx]=18445 [psd2edge_base]=18446
	[psd2edge_routes]=18447)
PEERS=(psd2edge haproxy nginx)
[ -n "$BASELINE" ] && PEERS=(psd2edge_base "${PEERS[@]}")
PKI=$BUILD/test-pki
LOADGEN=$BUILD/bench/loadgen

# ---- certificates: the test PKI plus an RSA-2048 server certificate for the RSA rows -------
scripts/gen-pki.sh "$PKI" >/dev/null
cp "$PKI"/{server.pem,server.key,tpp-ca.pem,tpp.crl,tpp1.pem,tpp1.key,tpp-rsa.pem,tpp-rsa.key} "$T/"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$T/server-rsa.key" 2>/dev/null
openssl req -new -key "$T/server-rsa.key" -subj "/C=EU/O=psd2edge test bank/CN=gateway.test" \
	-out "$T/server-rsa.csr"
openssl x509 -req -in "$T/server-rsa.csr" -CA "$PKI/bank-ca.pem" -CAkey "$PKI/bank-ca.key" \
	-CAcreateserial -CAserial "$T/bank-ca.srl" -days 30 -sha256 -out "$T/server-rsa.pem" \
	-extfile <(printf 'subjectAltName=DNS:gateway.test,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n') \
	2>/dev/null
# Bound clients: tpp1 (ECDSA P-256 certificate) and tpprsa (RSA-2048).
: >"$T/bindings-sha256.map"
: >"$T/bindings-sha1.map"
for pair in tpp1:tpp1 tpprsa:tpp-rsa; do
	id=${pair%%:*} cert=$T/${pair#*:}.pem
	sha256=$(openssl x509 -in "$cert" -outform DER | sha256sum | cut -d' ' -f1)
	sha1=$(openssl x509 -in "$cert" -outform DER | sha1sum | cut -d' ' -f1)
	echo "$sha256 $id" >>"$T/bindings-sha256.map"
	echo "\"$sha1:$id\" 1;" >>"$T/bindings-sha1.map"
done

render() { # TEMPLATE OUT KEY=VALUE...
	local tpl=$1 out=$2 args=()
	shift 2
	for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
	sed "${args[@]}" "$tpl" >"$out"
}

wait_port() { # PORT: until something accepts on 127.0.0.1:PORT
	local i
	for i in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "proxy_bench: nothing listens on port $1; logs in $T" >&2
	exit 1
}

# ---- the upstream, on CPU 1 ------------------------------------------------------------------
render bench/peers/upstream.conf.in "$T/upstream.conf" DIR="$T" UPSTREAM_PORT=$UPSTREAM_PORT \
	MAX_FILES="$(ulimit -n)"
taskset -c 1 nginx -c "$T/upstream.conf" -p "$T" >"$T/upstream.out" 2>&1 &
PIDS+=($!)
wait_port $UPSTREAM_PORT

# ---- the three peers, on CPU 0 -----------------------------------------------------------------
declare -A SERVER_PIDS=()
# start_psd2edge NAME BUILD_DIR CERT KEY [PIN_DIR]: one psd2edged with its own registry, control
# socket and access log; tpp1 and tpprsa bound. With PIN_DIR: scenario 6's routes /plain and
# /limited instead of the one route /, the quota map pinned under PIN_DIR.
start_psd2edge() {
	local name=$1 bin=$2/psd2edged cert=$3 key=$4 pin_dir=${5:-} i
	python3 - "$T/$name.json" "$pin_dir" <<EOF
import json, sys
config = {
    "listen": ["127.0.0.1:${PORT[$name]}"],
    "tls": {"cert": "$cert", "key": "$key", "client_ca": "$T/tpp-ca.pem", "crl": "$T/tpp.crl"},
    "upstream": {"url": "http://127.0.0.1:$UPSTREAM_PORT"},
    "client_id": ["form:client_id", "query:client_id", "header:x-client-id"],
    "registry": "$T/$name-registry.db",
    "control_socket": "$T/$name-control.sock",
    "bpf": {"mode": "off"},
    "workers": 1,
    "access_log": "$T/$name-access.log",
    "limits": {"max_connections": $((fd_room + 100))},
}
if sys.argv[2]:
    config["bpf"]["pin_dir"] = sys.argv[2]
    config["routes"] = [
        {"prefix": "/plain", "upstream": "default"},
        {"prefix": "/limited", "upstream": "default",
         "quota": {"limit": 1000000000, "window": "day", "key": "header:x-account-id"},
         "spike_arrest": {"rate": 1000000, "per": "second", "burst": 1000000}}]
json.dump(config, open(sys.argv[1], "w"), indent=1)
EOF
	rm -f "$T/$name-control.sock"
	taskset -c 0 "$bin" --config "$T/$name.json" >>"$T/$name.log" 2>&1 &
	SERVER_PIDS[$name]=$!
	PIDS+=($!)
	for i in $(seq 150); do [ -S "$T/$name-control.sock" ] && break; sleep 0.1; done
	[ -S "$T/$name-control.sock" ] ||
		{ echo "proxy_bench: $name not ready: $(tail -3 "$T/$name.log")" >&2; exit 1; }
	if [ ! -e "$T/$name-bound" ]; then
		"$BUILD/psd2edgectl" --socket "$T/$name-control.sock" bind tpp1 "$T/tpp1.pem" >/dev/null
		"$BUILD/psd2edgectl" --socket "$T/$name-control.sock" bind tpprsa "$T/tpp-rsa.pem" >/dev/null
		touch "$T/$name-bound"
	fi
}

start_peers() { # ecdsa|rsa
	local kt=$1 cert key
	if [ "$kt" = rsa ]; then cert=$T/server-rsa.pem key=$T/server-rsa.key; else
		cert=$T/server.pem key=$T/server.key; fi

	start_psd2edge psd2edge "$BUILD" "$cert" "$key"
	[ -z "$BASELINE" ] || start_psd2edge psd2edge_base "$BASELINE" "$cert" "$key"

	cat "$cert" "$key" >"$T/haproxy-server.pem"
	render bench/peers/haproxy.cfg.in "$T/haproxy.cfg" PORT="${PORT[haproxy]}" \
		SERVER_PEM="$T/haproxy-server.pem" CLIENT_CA="$T/tpp-ca.pem" CRL="$T/tpp.crl" \
		MAP="$T/bindings-sha256.map" UPSTREAM_PORT=$UPSTREAM_PORT MAXCONN=$((fd_room + 100))
	taskset -c 0 haproxy -db -f "$T/haproxy.cfg" >>"$T/haproxy-access.log" 2>>"$T/haproxy.err" &
	SERVER_PIDS[haproxy]=$!
	PIDS+=($!)

	render bench/peers/nginx.conf.in "$T/nginx.conf" DIR="$T" PORT="${PORT[nginx]}" \
		SERVER_CERT="$cert" SERVER_KEY="$key" CLIENT_CA="$T/tpp-ca.pem" CRL="$T/tpp.crl" \
		MAP="$T/bindings-sha1.map" UPSTREAM_PORT=$UPSTREAM_PORT MAX_FILES="$(ulimit -n)"
	taskset -c 0 nginx -c "$T/nginx.conf" -p "$T" -g 'daemon off;' >>"$T/nginx.out" 2>&1 &
	local master=$!
	PIDS+=($master)
	wait_port "${PORT[haproxy]}"
	wait_port "${PORT[nginx]}"
	local worker
	worker=$(pgrep -P "$master" | head -1)
	SERVER_PIDS[nginx]=$master,$worker
}

stop_server() { # NAME
	kill "${SERVER_PIDS[$1]%%,*}" 2>/dev/null || true
	wait "${SERVER_PIDS[$1]%%,*}" 2>/dev/null || true
}

stop_peers() {
	local p
	for p in "${PEERS[@]}"; do stop_server "$p"; done
}

# run SCENARIO PEER ROW LOADGEN_ARGS...: one loadgen run on CPU 1, appended to $RUNS with labels.
run() {
	local scen=$1 peer=$2 row=$3 client=tpp1 id=tpp1 line
	shift 3
	case $row in rsa*) client=tpp-rsa id=tpprsa ;; esac
	line=$(taskset -c 1 "$LOADGEN" -p "${PORT[$peer]}" --sni gateway.test \
		--cert "$T/$client.pem" --key "$T/$client.key" --client-id "$id" \
		--server-pid "${SERVER_PIDS[$peer]}" "$@") || true
	[ -n "$line" ] || line='{"errors_total":-1}'
	printf '{"scenario":"%s","peer":"%s","row":"%s","args":"%s","result":%s}\n' \
		"$scen" "$peer" "$row" "$*" "$line" >>"$RUNS"
	python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("  %-9s %-8s %-14s %9.1f req/s %8.1f hs/s  server %s  p99 %s ms  errors %s" % (sys.argv[2], sys.argv[3], sys.argv[4], r.get("rps",0), r.get("handshakes_per_s",0), ("%.3f ms/hs" % r["server_cpu_per_handshake_ms"]) if "server_cpu_per_handshake_ms" in r else ("%.1f us/req" % r.get("server_cpu_per_request_us",0)), r.get("latency_ms",{}).get("p99"), r.get("errors_total")))' \
		"$line" "$scen" "$peer" "$row" >&2
}

D=(-d "$SECONDS_PER_RUN" -w 1)

# ---- scenario 6: /plain and /limited of one psd2edged ---------------------------------------
routes_start() {
	mkdir -p "$T/bpffs"
	mount -t bpf bpf "$T/bpffs"
	start_psd2edge psd2edge_routes "$BUILD" "$T/server.pem" "$T/server.key" "$T/bpffs/psd2edge"
}

routes_round() { # ROUND: both routes, the order swapped every round against the host's drift
	local order=(plain limited) route
	[ $(($1 % 2)) = 1 ] || order=(limited plain)
	for route in "${order[@]}"; do
		run routes psd2edge_routes "$route" -c "$CONNS" --path "/$route" \
			--header "X-Account-Id: bench-account" "${D[@]}"
	done
}

# Stops the daemon, then fails the run unless every response of both routes (warm-ups included,
# from the access log) was a 200 and the quota counted each /limited one; prints the medians.
routes_finish() {
	local quota
	quota=$("$BUILD/psd2edgectl" --socket "$T/psd2edge_routes-control.sock" --json \
		quota show tpp1 --key bench-account)
	stop_server psd2edge_routes
	python3 bench/proxy_report.py --routes "$RUNS" "$T/psd2edge_routes-access.log" "$quota" >&2
}

if [ $MODE = profile ]; then
	start_peers ecdsa
	P=$OUT/profile
	# System calls per request of every peer: strace -c over a fixed number of requests.
	for p in "${PEERS[@]}"; do
		strace -c -f -q -o "$P/strace-$p.txt" -p "${SERVER_PIDS[$p]##*,}" &
		spid=$!
		sleep 1
		run profile_strace "$p" ecdsa -c "$CONNS" -n "${PROFILE_REQUESTS:-20000}"
		kill -INT "$spid"
		wait "$spid" || true
	done
	pid=${SERVER_PIDS[psd2edge]}
	# The exact sequence for a few requests on one warm connection (after its handshake).
	strace -f -q -tt -e trace='!futex' -o "$P/strace-sequence.txt" -p "$pid" &
	spid=$!
	sleep 1
	run profile_sequence psd2edge ecdsa -c 1 -n 4
	kill -INT "$spid"
	wait "$spid" || true
	# Where psd2edge's CPU goes: DWARF call graphs deep enough for the 16 KiB read buffers
	# on the stack.
	secs=${PROFILE_SECONDS:-6}
	taskset -c 1 "$LOADGEN" -p "${PORT[psd2edge]}" --cert "$T/tpp1.pem" --key "$T/tpp1.key" \
		--server-pid "$pid" -c "$CONNS" -d $((secs + 3)) >"$P/perf-loadgen.json" &
	lpid=$!
	sleep 2
	perf record -q -e cpu-clock -F 499 --call-graph dwarf,32768 -p "$pid" -o "$P/perf.data" \
		-- sleep "$secs" 2>"$P/perf-record.err"
	wait "$lpid" || true
	perf report -i "$P/perf.data" --no-children --sort dso,symbol --stdio -g none \
		--percent-limit 0.3 >"$P/perf-self.txt" 2>/dev/null
	perf report -i "$P/perf.data" --children --sort symbol --stdio -g none \
		--percent-limit 1 >"$P/perf-children.txt" 2>/dev/null
	perf script -i "$P/perf.data" -F tid,period,ip,sym,dso 2>/dev/null |
		python3 bench/profile_breakdown.py "$RUNS" "$P/perf-loadgen.json" "$P"/strace-{psd2edge,haproxy,nginx}.txt \
		>"$P/breakdown.txt"
	cat "$P/breakdown.txt" >&2
	echo "proxy_bench: profile in $P" >&2
	exit 0
fi

if [ -n "$ONLY" ]; then
	start_peers ecdsa
	case " $ONLY " in *" routes "*) routes_start ;; esac
	for round in $(seq "${PROXY_BENCH_ROUNDS:-1}"); do
		for scen in $ONLY; do
			[ "$scen" != routes ] || { routes_round "$round"; continue; }
			for p in "${PEERS[@]}"; do
				case $scen in
				keepalive) run keepalive "$p" ecdsa -c "$CONNS" "${D[@]}" ;;
				half_load) run half_load "$p" ecdsa -c "$CONNS" --rate "${PROXY_BENCH_RATE:-5000}" "${D[@]}" ;;
				idle) run idle "$p" ecdsa --idle "$IDLE_CONNS" -c 64 -d 120 --hold 1 ;;
				handshake) run handshake "$p" ecdsa_tls1.3 --new-conn --tls 1.3 -c "$CONNS" "${D[@]}" ;;
				keepalive_idle)
					taskset -c 1 "$LOADGEN" -p "${PORT[$p]}" --cert "$T/tpp1.pem" --key "$T/tpp1.key" \
						--idle "${PROXY_BENCH_IDLE_HELD:-2000}" -c 64 -d 60 \
						--hold $((SECONDS_PER_RUN + 30)) >/dev/null 2>&1 &
					held=$!
					sleep "${PROXY_BENCH_IDLE_OPEN_S:-8}" # time to open them (~700 handshakes/s)
					run keepalive_idle "$p" ecdsa -c "$CONNS" "${D[@]}"
					kill "$held" 2>/dev/null || true
					wait "$held" 2>/dev/null || true ;;
				*) echo "proxy_bench: PROXY_BENCH_ONLY: unknown scenario '$scen' (keepalive idle half_load handshake keepalive_idle routes)" >&2
				   exit 2 ;;
				esac
			done
		done
	done
	stop_peers
	case " $ONLY " in *" routes "*) routes_finish ;; esac
	python3 - "$RUNS" >&2 <<'EOF'
import json, statistics, sys
rows = {}
for r in map(json.loads, open(sys.argv[1])):
    res, scen = r["result"], r["scenario"]
    if scen.startswith("routes"):
        continue  # routes_finish printed them
    fig = (res.get("server_bytes_per_idle_conn", 0) / 1024 if scen == "idle" else
           res.get("server_cpu_per_handshake_ms", 0) if scen == "handshake" else
           res.get("server_cpu_per_request_us", 0))
    rows.setdefault((r["scenario"], r["peer"]), []).append((fig, res.get("latency_ms", {}).get("p99", 0)))
for (scen, peer), v in rows.items():
    fmt = "%.3f" if scen == "handshake" else "%.1f"
    unit = {"idle": "KiB/conn", "handshake": "ms/hs"}.get(scen, "us/req")
    print("median %-9s %-14s %7s %s  p99 %6.2f ms  (runs: %s)" % (
        scen, peer, fmt % statistics.median(f for f, _ in v), unit,
        statistics.median(p for _, p in v), " ".join(fmt % f for f, _ in v)))
EOF
	exit 0
fi

echo "proxy_bench: ECDSA P-256 peers" >&2
start_peers ecdsa
# Every peer must really check the binding: tpp1's certificate claiming tpprsa gets a 401.
for p in "${PEERS[@]}"; do
	verdict=$(taskset -c 1 "$LOADGEN" -p "${PORT[$p]}" --cert "$T/tpp1.pem" --key "$T/tpp1.key" \
		--client-id tpprsa -n 1 -c 1 2>/dev/null) || true
	case $verdict in
	*'"status_4xx":1'*) ;;
	*) echo "proxy_bench: $p did not refuse a client_id bound to another certificate: $verdict" >&2
	   exit 1 ;;
	esac
done
# 5: memory per idle keep-alive connection, on freshly started servers
for p in "${PEERS[@]}"; do
	run idle "$p" ecdsa --idle "$IDLE_CONNS" -c 64 -d 120 --hold 1
done
# 1: new mTLS handshake + one request
for v in 1.3 1.2; do
	for p in "${PEERS[@]}"; do
		run handshake "$p" "ecdsa_tls$v" --new-conn --tls "$v" -c "$CONNS" "${D[@]}"
	done
done
# 2: keep-alive through the binding check, and 4: right after it the same route without the
# check (HAProxy and NGINX only), so that the host's load drifts as little as possible between
# the two
for p in "${PEERS[@]}"; do
	run keepalive "$p" ecdsa -c "$CONNS" "${D[@]}"
	[ "$p" = psd2edge ] || run nocheck "$p" ecdsa -c "$CONNS" --path /nocheck "${D[@]}"
done
# 3: latency at half the slowest peer's keep-alive rate
half=$(python3 -c '
import json, sys
rates = [r["result"].get("rps", 0) for r in map(json.loads, open(sys.argv[1]))
         if r["scenario"] == "keepalive"]
print(int(min(rates) / 2))' "$RUNS")
for p in "${PEERS[@]}"; do
	run half_load "$p" ecdsa -c "$CONNS" --rate "$half" "${D[@]}"
done
stop_peers
echo "proxy_bench: scenario 6, routes with and without policies (psd2edge alone)" >&2
routes_start
for round in $(seq "${PROXY_BENCH_ROUNDS:-3}"); do routes_round "$round"; done
routes_finish

echo "proxy_bench: RSA-2048 peers" >&2
start_peers rsa
for v in 1.3 1.2; do
	for p in "${PEERS[@]}"; do
		run handshake "$p" "rsa_tls$v" --new-conn --tls "$v" -c "$CONNS" "${D[@]}"
	done
done
stop_peers
