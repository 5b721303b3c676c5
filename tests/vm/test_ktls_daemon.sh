#!/usr/bin/env bash
# psd2edged with kTLS, inside the vmtest VM (a kernel with the TLS ULP). TAP output.
#   1. TLS 1.2 and TLS 1.3 mTLS connections get kTLS in both directions of the client socket:
#      the daemon's counters (ktls.tx/rx rise, ktls.fallback does not), the kernel's
#      (/proc/net/tls_stat TlsTxSw/TlsRxSw, TlsCurr*Sw while a connection is held open,
#      TlsDecryptError stays 0) and the socket itself (ss: tcp-ulp-tls rxconf/txconf sw).
#   2. A 64 MiB request body and a 64 MiB response body arrive byte-exact (sha256) through
#      the splice path: the kernel's count of bytes the daemon moved with splice(2) (a
#      tracefs histogram on sys_exit_splice) covers each body, twice (socket->pipe->socket);
#      and the daemon's splice_bytes counter.
#   3. The binding check still refuses a wrong client_id on a kTLS connection (401).
#   4. Several requests on one keep-alive kTLS connection, spliced bodies among them.
#   5. An https upstream: both sockets (TPP and bank) get kTLS, bodies spliced kTLS->kTLS.
# Environment: KTLS_TEST_MIB (body size in MiB, default 64), KTLS_TEST_HTTPS_MIB (bodies
# through the https upstream, default 8), plus lib.sh's. Takes ~2 min in the TCG VM on an
# idle 2-core host.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/../integration/lib.sh"

MIB=${KTLS_TEST_MIB:-64}
HTTPS_MIB=${KTLS_TEST_HTTPS_MIB:-8}
TRACE=/sys/kernel/tracing
SPLICE_TRIGGER='hist:keys=common_pid.execname:vals=hitcount,ret:sort=hitcount if ret > 0'

# ---- TAP on top of lib.sh's assertions ---------------------------------------------------------
pass() {
	LIB_CHECKS=$((LIB_CHECKS + 1))
	echo "ok $LIB_CHECKS - $1"
	return 0
}
fail() {
	LIB_CHECKS=$((LIB_CHECKS + 1))
	LIB_FAILS=$((LIB_FAILS + 1))
	echo "not ok $LIB_CHECKS - $1"
	return 1
}
die() {
	LIB_CHECKS=$((LIB_CHECKS + 1))
	LIB_FAILS=$((LIB_FAILS + 1))
	echo "not ok $LIB_CHECKS - FATAL: $*"
	exit 1
}
skip() { die "cannot run here: $*"; } # inside the VM nothing may be skipped
note() { echo "# $*"; }
section() { echo "# --- $* (${SECONDS}s)"; }
finish() {
	echo "1..$LIB_CHECKS"
	[ "$LIB_FAILS" -eq 0 ] || exit 1
	exit 0
}
tap_cleanup() {
	[ -w "$TRACE/events/syscalls/sys_exit_splice/trigger" ] &&
		echo "!$SPLICE_TRIGGER" >"$TRACE/events/syscalls/sys_exit_splice/trigger" 2>/dev/null
	lib_cleanup
}
trap tap_cleanup EXIT

# ---- slower starts under TCG on a busy host ----------------------------------------------------
# lib.sh waits 10 s for upstream.py and 15 s for psd2edged; with another VM and a compile on
# the same 2 cores, python alone took longer than 10 s to start.
DAEMON_READY_TIMEOUT=${DAEMON_READY_TIMEOUT:-90}
UPSTREAM_READY_TIMEOUT=${UPSTREAM_READY_TIMEOUT:-90}

# ---- probes ------------------------------------------------------------------------------------
# Python starts slowly under TCG: one call per snapshot, not one per counter.
# snap PREFIX: the daemon's stats flattened into PREFIX_<path joined by "_"> (PREFIX_ktls_tx,
# PREFIX_requests; PREFIX_splice_bytes wherever it sits in the stats),
# the gateway namespace's /proc/net/tls_stat into PREFIX_<field> (PREFIX_TlsTxSw, ...: the file
# is per network namespace), and into PREFIX_spliced the bytes psd2edged has moved with
# splice(2) so far (the hist trigger on sys_exit_splice; each spliced body byte counts twice:
# into the pipe and out of it).
snap() {
	local k v
	ctl stats --json >"$TEST_DIR/stats.json" 2>"$TEST_DIR/stats.err" ||
		die "psd2edgectl stats failed: $(cat "$TEST_DIR/stats.err")"
	eval "$(python3 - "$1" "$TEST_DIR/stats.json" <<'PY'
import json, re, sys
p = sys.argv[1]
def walk(v, path):
    if isinstance(v, dict):
        for k, x in v.items():
            walk(x, path + [k])
    elif isinstance(v, (bool, int)) and all(re.fullmatch(r"\w+", k) for k in path):
        val = str(v).lower() if isinstance(v, bool) else v
        print("%s_%s=%s" % (p, "_".join(path), val))
        if path[-1] == "splice_bytes":
            print("%s_splice_bytes=%s" % (p, val))
walk(json.load(open(sys.argv[2])), [])
PY
)" || die "cannot read the stats: $(head -c 300 "$TEST_DIR/stats.json")"
	while read -r k v; do
		printf -v "$1_$k" '%s' "$v"
	done < <(ns_exec "$GW_NS" cat /proc/net/tls_stat)
	v=$(awk '/common_pid: psd2edged/ { for (i = 1; i <= NF; i++) if ($i == "ret:") s += $(i + 1) }
		END { printf "%d\n", s }' "$TRACE/events/syscalls/sys_exit_splice/hist" 2>/dev/null)
	printf -v "$1_spliced" '%s' "$v"
}
# d FIELD: its change from snapshot a to snapshot b ("missing" when either lacks it).
d() {
	local x="a_$1" y="b_$1"
	if [ -n "${!x:-}" ] && [ -n "${!y:-}" ]; then echo $((${!y} - ${!x})); else echo missing; fi
}
# The sha256 of the body upstream.py sends for /big?bytes=N: "0123456789abcdef" repeated.
big_sha256() {
	yes 0123456789abcdef | tr -d '\n' | head -c "$1" | sha256sum | cut -d' ' -f1
}
# "LENGTH SHA256" of the request body, from the upstream's echo in FILE.
echo_body() {
	python3 -c 'import json, sys; e = json.load(open(sys.argv[1])); print(e["body_length"], e["body_sha256"])' \
		"$1" 2>/dev/null || echo "none none"
}
# ss shows the TLS ULP of established sockets on the gateway's port, one line per socket.
gw_tls_sockets() {
	ns_exec "$GW_NS" ss -tni state established "( sport = :$GW_PORT )" 2>/dev/null |
		grep -o 'tcp-ulp-tls.*' || true
}
rate() { # BYTES START_NS: KiB/s since START_NS
	echo "$((($1 >> 10) * 1000000 / (($(date +%s%N) - $2) / 1000 + 1))) KiB/s"
}

H=(-H 'X-Client-Id: tpp1')

# One request on a new connection; checks that it got kTLS both ways (daemon and kernel).
# ktls_request DESC EXPECTED_CODE CURL_ARGS...
ktls_request() {
	local desc=$1 code=$2
	shift 2
	snap a
	assert_status "$code" "$desc: HTTP $code" tpp1 "$@"
	snap b
	assert_eq 1 "$(d ktls_tx)" "$desc: daemon reports kTLS TX (ktls.tx +1)"
	assert_eq 1 "$(d ktls_rx)" "$desc: daemon reports kTLS RX (ktls.rx +1)"
	assert_eq 0 "$(d ktls_fallback)" "$desc: no fallback"
	assert_eq 1 "$(d TlsTxSw)" "$desc: kernel TlsTxSw +1"
	assert_eq 1 "$(d TlsRxSw)" "$desc: kernel TlsRxSw +1"
	note "$desc: installed by OpenSSL tx $(d ktls_tx_openssl) rx $(d ktls_rx_openssl), by hand tx $(d ktls_tx_manual) rx $(d ktls_rx_manual)"
}

# A connection held open after one request: the socket itself and the open gauges.
# ktls_hold DESC [--tls12]
ktls_hold() {
	local desc=$1 pid ss
	shift
	snap a
	rm -f "$TEST_DIR/hold.ready"
	# Not through lib.sh's tlsclient (a function): $! must be the client itself.
	nsenter --net="/run/netns/$(ns_name "$TPP_NS")" -- python3 "$LIB_DIR/tlsclient.py" \
		--host "$GW_IP" --port "$GW_PORT" --sni "$GW_HOST" --ca "$PKI/bank-ca.pem" \
		--cert "$PKI/tpp1.pem" --key "$PKI/tpp1.key" "$@" --path /hold \
		--header 'X-Client-Id: tpp1' --max 60 --ready-file "$TEST_DIR/hold.ready" hold \
		>/dev/null 2>"$TEST_DIR/hold.err" &
	pid=$!
	if ! wait_until 60 test -e "$TEST_DIR/hold.ready"; then
		fail "$desc: held connection got its response ($(tail -n 2 "$TEST_DIR/hold.err"))"
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		return
	fi
	pass "$desc: held connection got its response"
	ss=$(gw_tls_sockets)
	note "$desc: ss: $ss"
	assert_contains "$ss" "rxconf: sw" "$desc: ss shows kTLS RX on the daemon's socket"
	assert_contains "$ss" "txconf: sw" "$desc: ss shows kTLS TX on the daemon's socket"
	snap b
	assert_eq 1 "$(d TlsCurrTxSw)" "$desc: kernel TlsCurrTxSw +1 while open"
	assert_eq 1 "$(d TlsCurrRxSw)" "$desc: kernel TlsCurrRxSw +1 while open"
	assert_eq 1 "$(d ktls_tx_open)" "$desc: daemon ktls.tx_open +1 while open"
	assert_eq 1 "$(d ktls_rx_open)" "$desc: daemon ktls.rx_open +1 while open"
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	assert_true "$desc: kernel and daemon kTLS gauges back after the close" wait_until 20 hold_gone
}
hold_gone() {
	snap b
	[ "$(d TlsCurrTxSw)/$(d TlsCurrRxSw)/$(d ktls_tx_open)/$(d ktls_rx_open)" = 0/0/0/0 ]
}

# A request body of BYTES through the gateway, checked at the upstream and for splice.
# big_upload DESC BYTES [CURL_ARGS...]
big_upload() {
	local desc=$1 bytes=$2 want t0 got
	shift 2
	head -c "$bytes" /dev/urandom >"$TEST_DIR/req.bin"
	want=$(sha256sum "$TEST_DIR/req.bin" | cut -d' ' -f1)
	snap a
	t0=$(date +%s%N)
	# curl sends "Expect: 100-continue" (the daemon answers 100 itself) before the body.
	CURL_MAX_TIME=150 assert_status 200 "$desc: request body sent" tpp1 "${H[@]}" \
		-H 'Content-Type: application/octet-stream' --data-binary "@$TEST_DIR/req.bin" "$@" "$GW_URL/upload"
	note "$desc: $(rate "$bytes" "$t0")"
	snap b
	rm -f "$TEST_DIR/req.bin"
	got=$(echo_body "$LAST_BODY")
	assert_eq "$bytes $want" "$got" "$desc: length and sha256 at the upstream"
	splice_check "$desc" "$bytes"
}

big_download() { # DESC BYTES [CURL_ARGS...]
	local desc=$1 bytes=$2 t0
	shift 2
	snap a
	t0=$(date +%s%N)
	CURL_MAX_TIME=150 gw_request tpp1 "${H[@]}" "$@" "$GW_URL/big?bytes=$bytes"
	note "$desc: $(rate "$bytes" "$t0")"
	snap b
	assert_eq 200 "$LAST_CODE" "$desc: HTTP 200 (curl exit $LAST_RC)"
	assert_eq "$bytes $(big_sha256 "$bytes")" "$(stat -c %s "$LAST_BODY") $(sha256sum "$LAST_BODY" | cut -d' ' -f1)" \
		"$desc: length and sha256 received"
	: >"$LAST_BODY"
	splice_check "$desc" "$bytes"
}

# The body went through splice(2) (snapshots a and b around it): the kernel saw psd2edged
# splice nearly all of it twice (socket->pipe, pipe->socket; what the proxy had already
# buffered with the head, at most a few hundred KiB, goes through userspace), and the
# daemon's splice_bytes counter grew by nearly the body as well.
splice_check() { # DESC BYTES
	local desc=$1 min=$(($2 - (1 << 20))) n
	n=$(d spliced)
	assert_true "$desc: spliced by psd2edged (kernel: $n bytes through splice(2), want >= 2 x $min)" \
		test "$n" -ge $((2 * min))
	n=$(d splice_bytes)
	assert_true "$desc: daemon's splice_bytes grew by $n (want >= $min)" test "$n" -ge "$min" 2>/dev/null
}

# ==== setup ===================================================================================
[ "${VMTEST:-0}" = 1 ] || note "not in the vmtest VM (VMTEST unset); the kernel needs the TLS ULP"
modprobe tls 2>/dev/null
[ -r /proc/net/tls_stat ] || die "no /proc/net/tls_stat: the kernel has no TLS ULP"
pass "kernel has the TLS ULP (/proc/net/tls_stat)"
if echo "$SPLICE_TRIGGER" >"$TRACE/events/syscalls/sys_exit_splice/trigger" 2>"$TEST_DIR/trace.err"; then
	pass "splice(2) accounting through a tracefs histogram"
else
	fail "cannot set a hist trigger on sys_exit_splice ($(cat "$TEST_DIR/trace.err")): splice checks will fail"
fi

topo_basic
pki_setup
upstream_start
config_render "$DAEMON_CONFIG" '{"limits": {"max_body_bytes": 134217728, "upstream_timeout_ms": 120000},
	"client_id": ["header:x-client-id"]}'
daemon_start
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null
assert_eq 0 $? "bind tpp1"
snap a
assert_eq true "$a_ktls_kernel_available" "daemon: ktls.kernel_available"

# ==== 1. kTLS on both directions, TLS 1.2 and 1.3 ===============================================
section "kTLS on both directions"
ktls_request "TLS 1.2" 200 --tlsv1.2 --tls-max 1.2 "${H[@]}" "$GW_URL/v12"
ktls_request "TLS 1.3" 200 --tlsv1.3 "${H[@]}" "$GW_URL/v13"
ktls_hold "TLS 1.2 held" --tls12
ktls_hold "TLS 1.3 held"

# ==== 2. 64 MiB each way through the splice path ================================================
section "large bodies through splice"
big_upload "$MIB MiB request body (TLS 1.3)" $((MIB << 20)) --tlsv1.3
big_download "$MIB MiB response body (TLS 1.3)" $((MIB << 20)) --tlsv1.3
big_download "4 MiB response body (TLS 1.2)" $((4 << 20)) --tlsv1.2 --tls-max 1.2

# ==== 3. the binding check on a kTLS connection =================================================
section "binding check"
ktls_request "wrong client_id" 401 -H 'X-Client-Id: tpp2' "$GW_URL/x"
assert_invalid_client_body "wrong client_id on kTLS"

# ==== 4. keep-alive ===========================================================================
section "keep-alive"
# curl reuses the connection across --next; the options are per group, hence repeated.
head -c 1048576 /dev/urandom >"$TEST_DIR/k4.bin"
C=(--max-time 60 --cacert "$PKI/bank-ca.pem" --resolve "$GW_HOST:$GW_PORT:$GW_IP"
	--cert "$PKI/tpp1.pem" --key "$PKI/tpp1.key" "${H[@]}" -w '%{http_code}/%{num_connects}\n')
snap a
out=$(ns_exec "$TPP_NS" curl -sS "${C[@]}" -o "$TEST_DIR/k1.json" "$GW_URL/k1" \
	-o "$TEST_DIR/k2.bin" "$GW_URL/big?bytes=1048576" -o "$TEST_DIR/k3.json" "$GW_URL/k3" \
	--next "${C[@]}" -H 'Expect:' --data-binary "@$TEST_DIR/k4.bin" -o "$TEST_DIR/k4.json" "$GW_URL/k4" \
	--next "${C[@]}" -o "$TEST_DIR/k5.json" "$GW_URL/k5" 2>"$TEST_DIR/curl.err")
snap b
assert_eq "200/1 200/0 200/0 200/0 200/0" "$(echo $out)" "keep-alive: five 200s on one connection $(head -c 200 "$TEST_DIR/curl.err")"
assert_eq 1 "$(d ktls_connections)" "keep-alive: one kTLS connection"
assert_eq 1/1 "$(d ktls_tx)/$(d ktls_rx)" "keep-alive: with kTLS TX and RX"
assert_eq 1/1 "$(d TlsTxSw)/$(d TlsRxSw)" "keep-alive: kernel TlsTxSw/TlsRxSw +1"
assert_eq 5 "$(d requests)" "keep-alive: five requests counted"
assert_eq "$(big_sha256 1048576)" "$(sha256sum "$TEST_DIR/k2.bin" | cut -d' ' -f1)" \
	"keep-alive: a 1 MiB response is byte-exact"
assert_contains "$(cat "$TEST_DIR/k3.json")" '"path": "/k3"' "keep-alive: the request after a spliced response is parsed"
assert_eq "1048576 $(sha256sum "$TEST_DIR/k4.bin" | cut -d' ' -f1)" "$(echo_body "$TEST_DIR/k4.json")" \
	"keep-alive: a 1 MiB request body after it is byte-exact"
assert_contains "$(cat "$TEST_DIR/k5.json")" '"path": "/k5"' "keep-alive: the request after a spliced request body is parsed"
assert_true "keep-alive: the 1 MiB bodies went through splice(2) ($(d spliced) bytes)" \
	test "$(d spliced)" -ge 1048576

# ==== 5. https upstream: kTLS on both sockets, kTLS -> kTLS splice ==================================
section "https upstream"
daemon_stop || fail "psd2edged stopped cleanly"
upstream_stop
topo_bank
upstream_start --ns "$BANK_NS" --tls --host 0.0.0.0
config_render "$DAEMON_CONFIG" "{\"upstream\": {\"url\": \"https://$BANK_IP:$UPSTREAM_TLS_PORT\",
	\"ca\": \"$PKI/bank-ca.pem\", \"cert\": \"$PKI/gateway-qwac.pem\", \"key\": \"$PKI/gateway-qwac.key\"},
	\"limits\": {\"max_body_bytes\": 134217728, \"upstream_timeout_ms\": 120000},
	\"client_id\": [\"header:x-client-id\"]}"
daemon_start
snap a
assert_status 200 "https upstream: request" tpp1 "${H[@]}" "$GW_URL/u1"
snap b
assert_eq 2/2 "$(d ktls_tx)/$(d ktls_rx)" "https upstream: ktls.tx and ktls.rx +2 (TPP and bank sockets)"
assert_eq 0 "$(d ktls_fallback)" "https upstream: no fallback"
assert_eq 2/2 "$(d TlsTxSw)/$(d TlsRxSw)" "https upstream: kernel TlsTxSw/TlsRxSw +2"
assert_contains "$(cat "$LAST_BODY")" "\"client_cert_sha256\": \"$(cert_sha256 "$PKI/gateway-qwac.pem")\"" \
	"https upstream: the bank sees the gateway's QWAC"
big_upload "https upstream: $HTTPS_MIB MiB request body kTLS->kTLS" $((HTTPS_MIB << 20))
big_download "https upstream: $HTTPS_MIB MiB response body kTLS->kTLS" $((HTTPS_MIB << 20))

snap b
assert_eq 0 "$b_TlsDecryptError" "kernel: TlsDecryptError 0"
daemon_stop || fail "psd2edged stopped cleanly at the end"
section "done"
finish
