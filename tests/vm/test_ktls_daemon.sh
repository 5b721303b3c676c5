#!/usr/bin/env bash
# psd2edged with kTLS, inside the vmtest VM (a kernel with the TLS ULP). TAP output.
#   1. TLS 1.2 and TLS 1.3 mTLS connections get kTLS in both directions of the client socket:
#      the daemon's counters (ktls.tx/rx rise, ktls.fallback does not), the kernel's
#      (/proc/net/tls_stat TlsTxSw/TlsRxSw, TlsCurr*Sw while a connection is held open,
#      TlsDecryptError stays 0) and the socket itself (ss: tcp-ulp-tls rxconf/txconf sw).
#   2. A 64 MiB request body and a 64 MiB response body arrive byte-exact (sha256) through
#      the splice path: the kernel's count of bytes the daemon moved with splice(2) (a
#      tracefs histogram on sys_exit_splice) covers each body, twice (socket->pipe->socket).
#   3. The binding check still refuses a wrong client_id on a kTLS connection (401).
#   4. Several requests on one keep-alive kTLS connection, a spliced 1 MiB response among them.
#   5. An https upstream: both sockets (TPP and bank) get kTLS, bodies spliced kTLS->kTLS.
# Environment: KTLS_TEST_MIB (body size in MiB, default 64), KTLS_TEST_HTTPS_MIB (bodies
# through the https upstream, default 16), plus lib.sh's.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/../integration/lib.sh"

MIB=${KTLS_TEST_MIB:-64}
HTTPS_MIB=${KTLS_TEST_HTTPS_MIB:-16}
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

# ---- probes ------------------------------------------------------------------------------------
stats_json() { # OUT
	ctl stats --json >"$1" 2>"$TEST_DIR/stats.err" || die "psd2edgectl stats failed: $(cat "$TEST_DIR/stats.err")"
}
stat_of() { # FILE PATH
	json_get "$1" "$2" 2>/dev/null || echo missing
}
stat_delta() { # BEFORE AFTER PATH
	local a b
	a=$(stat_of "$1" "$3")
	b=$(stat_of "$2" "$3")
	case $a$b in *[!0-9]*) echo "missing" ;; *) echo $((b - a)) ;; esac
}
# splice_bytes anywhere in the stats (the daemon may add such a counter), or "missing".
stat_splice_bytes() {
	python3 - "$1" <<'EOF'
import json, sys
def find(v):
    if isinstance(v, dict):
        for k, x in v.items():
            if k == "splice_bytes" and isinstance(x, int):
                return x
            r = find(x)
            if r is not None:
                return r
    return None
r = find(json.load(open(sys.argv[1])))
print("missing" if r is None else r)
EOF
}
# /proc/net/tls_stat is per network namespace: read the gateway's.
tls_stat() { # FIELD: its value in the gateway namespace's /proc/net/tls_stat
	ns_exec "$GW_NS" cat /proc/net/tls_stat | awk -v f="$1" '$1 == f {print $2}'
}
tls_snap() { # PREFIX: saves every /proc/net/tls_stat field as PREFIX_FIELD
	local k v
	while read -r k v; do
		printf -v "$1_$k" '%s' "$v"
	done < <(ns_exec "$GW_NS" cat /proc/net/tls_stat)
}
# Bytes psd2edged moved with splice(2) so far (each spliced body byte counts twice: into the
# pipe and out of it), from the hist trigger on sys_exit_splice.
splice_sum() {
	awk '/common_pid: psd2edged/ { for (i = 1; i <= NF; i++) if ($i == "ret:") s += $(i + 1) }
		END { printf "%d\n", s }' "$TRACE/events/syscalls/sys_exit_splice/hist"
}
# The body upstream.py sends for /big?bytes=N: "0123456789abcdef" repeated, cut at N bytes.
big_sha256() {
	python3 - "$1" <<'EOF'
import hashlib, sys
n = int(sys.argv[1]); h = hashlib.sha256(); chunk = b"0123456789abcdef" * 4096
while n > 0:
    part = chunk[:min(n, len(chunk))]; h.update(part); n -= len(part)
print(h.hexdigest())
EOF
}
# ss shows the TLS ULP of established sockets on the gateway's port, one line per socket.
gw_tls_sockets() {
	ns_exec "$GW_NS" ss -tni state established "( sport = :$GW_PORT )" 2>/dev/null |
		grep -o 'tcp-ulp-tls.*' || true
}

H=(-H 'X-Client-Id: tpp1')

# One request on a new connection; checks that it got kTLS both ways (daemon and kernel).
# ktls_request DESC EXPECTED_CODE CURL_ARGS...
ktls_request() {
	local desc=$1 code=$2
	shift 2
	stats_json "$TEST_DIR/a.json"
	tls_snap k0
	assert_status "$code" "$desc: HTTP $code" tpp1 "$@"
	stats_json "$TEST_DIR/b.json"
	tls_snap k1
	assert_eq 1 "$(stat_delta "$TEST_DIR/a.json" "$TEST_DIR/b.json" ktls.tx)" "$desc: daemon reports kTLS TX (ktls.tx +1)"
	assert_eq 1 "$(stat_delta "$TEST_DIR/a.json" "$TEST_DIR/b.json" ktls.rx)" "$desc: daemon reports kTLS RX (ktls.rx +1)"
	assert_eq 0 "$(stat_delta "$TEST_DIR/a.json" "$TEST_DIR/b.json" ktls.fallback)" "$desc: no fallback"
	assert_eq 1 "$((k1_TlsTxSw - k0_TlsTxSw))" "$desc: kernel TlsTxSw +1"
	assert_eq 1 "$((k1_TlsRxSw - k0_TlsRxSw))" "$desc: kernel TlsRxSw +1"
	note "$desc: OpenSSL installed tx $(stat_delta "$TEST_DIR/a.json" "$TEST_DIR/b.json" ktls.tx_openssl) rx $(stat_delta "$TEST_DIR/a.json" "$TEST_DIR/b.json" ktls.rx_openssl); by hand tx $(stat_delta "$TEST_DIR/a.json" "$TEST_DIR/b.json" ktls.tx_manual) rx $(stat_delta "$TEST_DIR/a.json" "$TEST_DIR/b.json" ktls.rx_manual)"
}

# A connection held open after one request: the socket itself and the open gauges.
# ktls_hold DESC [--tls12]
ktls_hold() {
	local desc=$1 pid
	shift
	tls_snap h0
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
	local ss
	ss=$(gw_tls_sockets)
	note "$desc: ss: $ss"
	assert_contains "$ss" "rxconf: sw" "$desc: ss shows kTLS RX on the daemon's socket"
	assert_contains "$ss" "txconf: sw" "$desc: ss shows kTLS TX on the daemon's socket"
	assert_eq $((h0_TlsCurrTxSw + 1)) "$(tls_stat TlsCurrTxSw)" "$desc: kernel TlsCurrTxSw +1 while open"
	assert_eq $((h0_TlsCurrRxSw + 1)) "$(tls_stat TlsCurrRxSw)" "$desc: kernel TlsCurrRxSw +1 while open"
	stats_json "$TEST_DIR/h.json"
	assert_eq 1 "$(stat_of "$TEST_DIR/h.json" ktls.tx_open)" "$desc: daemon: ktls.tx_open 1"
	assert_eq 1 "$(stat_of "$TEST_DIR/h.json" ktls.rx_open)" "$desc: daemon: ktls.rx_open 1"
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	assert_true "$desc: kernel and daemon kTLS gauges back after the close" wait_until 10 hold_gone
}

hold_gone() {
	[ "$(tls_stat TlsCurrTxSw)" = "$h0_TlsCurrTxSw" ] && [ "$(tls_stat TlsCurrRxSw)" = "$h0_TlsCurrRxSw" ] &&
		stats_json "$TEST_DIR/h.json" && [ "$(stat_of "$TEST_DIR/h.json" ktls.tx_open)" = 0 ] &&
		[ "$(stat_of "$TEST_DIR/h.json" ktls.rx_open)" = 0 ]
}

# Request body of BYTES through the gateway, checked at the upstream; SPLICE_MIN: bytes the
# splice counter must grow by at least (0: not checked).  big_upload DESC BYTES [CURL_ARGS...]
big_upload() {
	local desc=$1 bytes=$2 want s0 s1 t0
	shift 2
	head -c "$bytes" /dev/urandom >"$TEST_DIR/req.bin"
	want=$(sha256sum "$TEST_DIR/req.bin" | cut -d' ' -f1)
	stats_json "$TEST_DIR/a.json"
	s0=$(splice_sum)
	t0=$(date +%s%N)
	CURL_MAX_TIME=150 assert_status 200 "$desc: request body sent" tpp1 "${H[@]}" -H 'Expect:' \
		-H 'Content-Type: application/octet-stream' --data-binary "@$TEST_DIR/req.bin" "$@" "$GW_URL/upload"
	note "$desc: $(((bytes >> 20) * 1000000000 / ($(date +%s%N) - t0 + 1))) MiB/s"
	s1=$(splice_sum)
	stats_json "$TEST_DIR/b.json"
	rm -f "$TEST_DIR/req.bin"
	assert_eq "$bytes" "$(json_get "$LAST_BODY" body_length)" "$desc: length at the upstream"
	assert_eq "$want" "$(json_get "$LAST_BODY" body_sha256)" "$desc: sha256 at the upstream"
	splice_check "$desc" "$bytes" "$s0" "$s1"
}

big_download() { # DESC BYTES [CURL_ARGS...]
	local desc=$1 bytes=$2 s0 s1 t0
	shift 2
	stats_json "$TEST_DIR/a.json"
	s0=$(splice_sum)
	t0=$(date +%s%N)
	CURL_MAX_TIME=150 gw_request tpp1 "${H[@]}" "$@" "$GW_URL/big?bytes=$bytes"
	note "$desc: $(((bytes >> 20) * 1000000000 / ($(date +%s%N) - t0 + 1))) MiB/s"
	s1=$(splice_sum)
	stats_json "$TEST_DIR/b.json"
	assert_eq 200 "$LAST_CODE" "$desc: HTTP 200 (curl exit $LAST_RC)"
	assert_eq "$bytes" "$(stat -c %s "$LAST_BODY")" "$desc: length received"
	assert_eq "$(big_sha256 "$bytes")" "$(sha256sum "$LAST_BODY" | cut -d' ' -f1)" "$desc: sha256 received"
	: >"$LAST_BODY"
	splice_check "$desc" "$bytes" "$s0" "$s1"
}

# The body went through splice(2): the kernel saw psd2edged splice nearly all of it twice
# (socket->pipe, pipe->socket; what the proxy had already buffered with the head, at most a
# few hundred KiB, goes through userspace),
# and, when the daemon has a splice_bytes counter, that grew by nearly the body as well.
splice_check() { # DESC BYTES SUM_BEFORE SUM_AFTER
	local desc=$1 bytes=$2 d min=$(( $2 - (1 << 20) )) sb
	d=$(($4 - $3))
	assert_true "$desc: spliced by psd2edged (kernel: $d bytes through splice(2), want >= 2 x $min)" \
		test "$d" -ge $((2 * min))
	sb=$(stat_splice_bytes "$TEST_DIR/b.json")
	if [ "$sb" = missing ]; then
		note "$desc: the daemon's stats have no splice_bytes counter"
	else
		sb=$((sb - $(stat_splice_bytes "$TEST_DIR/a.json")))
		assert_true "$desc: daemon's splice_bytes grew by $sb (want >= $min)" test "$sb" -ge "$min"
	fi
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
stats_json "$TEST_DIR/s0.json"
assert_eq true "$(stat_of "$TEST_DIR/s0.json" ktls.kernel_available)" "daemon: ktls.kernel_available"

# ==== 1. kTLS on both directions, TLS 1.2 and 1.3 ===============================================
ktls_request "TLS 1.2" 200 --tlsv1.2 --tls-max 1.2 "${H[@]}" "$GW_URL/v12"
ktls_request "TLS 1.3" 200 --tlsv1.3 "${H[@]}" "$GW_URL/v13"
ktls_hold "TLS 1.2 held" --tls12
ktls_hold "TLS 1.3 held"

# ==== 2. 64 MiB each way through the splice path ================================================
big_upload "$MIB MiB request body (TLS 1.3)" $((MIB << 20)) --tlsv1.3
big_download "$MIB MiB response body (TLS 1.3)" $((MIB << 20)) --tlsv1.3
big_download "4 MiB response body (TLS 1.2)" $((4 << 20)) --tls-max 1.2

# ==== 3. the binding check on a kTLS connection =================================================
ktls_request "wrong client_id" 401 -H 'X-Client-Id: tpp2' "$GW_URL/x"
assert_invalid_client_body "wrong client_id on kTLS"

# ==== 4. keep-alive ===========================================================================
stats_json "$TEST_DIR/a.json"
tls_snap k0
s0=$(splice_sum)
# curl reuses the connection across --next; the options are per group, hence repeated.
head -c 1048576 /dev/urandom >"$TEST_DIR/k4.bin"
C=(--max-time 60 --cacert "$PKI/bank-ca.pem" --resolve "$GW_HOST:$GW_PORT:$GW_IP"
	--cert "$PKI/tpp1.pem" --key "$PKI/tpp1.key" "${H[@]}" -w '%{http_code}/%{num_connects}\n')
out=$(ns_exec "$TPP_NS" curl -sS "${C[@]}" -o "$TEST_DIR/k1.json" "$GW_URL/k1" \
	-o "$TEST_DIR/k2.bin" "$GW_URL/big?bytes=1048576" -o "$TEST_DIR/k3.json" "$GW_URL/k3" \
	--next "${C[@]}" -H 'Expect:' --data-binary "@$TEST_DIR/k4.bin" -o "$TEST_DIR/k4.json" "$GW_URL/k4" \
	--next "${C[@]}" -o "$TEST_DIR/k5.json" "$GW_URL/k5" 2>"$TEST_DIR/curl.err")
s1=$(splice_sum)
stats_json "$TEST_DIR/b.json"
tls_snap k1
assert_eq "200/1 200/0 200/0 200/0 200/0" "$(echo $out)" "keep-alive: five 200s on one connection ($(head -c 200 "$TEST_DIR/curl.err"))"
assert_eq 1 "$(stat_delta "$TEST_DIR/a.json" "$TEST_DIR/b.json" ktls.connections)" "keep-alive: one kTLS connection"
assert_eq 1 "$(stat_delta "$TEST_DIR/a.json" "$TEST_DIR/b.json" ktls.rx)" "keep-alive: with kTLS RX"
assert_eq 1 "$((k1_TlsTxSw - k0_TlsTxSw))" "keep-alive: kernel TlsTxSw +1"
assert_eq 5 "$(stat_delta "$TEST_DIR/a.json" "$TEST_DIR/b.json" requests)" "keep-alive: five requests counted"
assert_eq "$(big_sha256 1048576)" "$(sha256sum "$TEST_DIR/k2.bin" | cut -d' ' -f1)" \
	"keep-alive: the 1 MiB response is byte-exact"
assert_eq "$(sha256sum "$TEST_DIR/k4.bin" | cut -d' ' -f1)" "$(json_get "$TEST_DIR/k4.json" body_sha256)" \
	"keep-alive: a 1 MiB request body after it is byte-exact"
assert_eq /k5 "$(json_get "$TEST_DIR/k5.json" path)" "keep-alive: the request after a spliced request body is parsed"
assert_eq /k3 "$(json_get "$TEST_DIR/k3.json" path)" "keep-alive: the request after a spliced body is parsed"
assert_true "keep-alive: the 1 MiB bodies went through splice(2) ($((s1 - s0)) bytes)" \
	test $((s1 - s0)) -ge 1048576

# ==== 5. https upstream: kTLS on both sockets, kTLS -> kTLS splice ==================================
daemon_stop || fail "psd2edged stopped cleanly"
upstream_stop
topo_bank
upstream_start --ns "$BANK_NS" --tls --host 0.0.0.0
config_render "$DAEMON_CONFIG" "{\"upstream\": {\"url\": \"https://$BANK_IP:$UPSTREAM_TLS_PORT\",
	\"ca\": \"$PKI/bank-ca.pem\", \"cert\": \"$PKI/gateway-qwac.pem\", \"key\": \"$PKI/gateway-qwac.key\"},
	\"limits\": {\"max_body_bytes\": 134217728, \"upstream_timeout_ms\": 120000},
	\"client_id\": [\"header:x-client-id\"]}"
daemon_start
stats_json "$TEST_DIR/a.json"
tls_snap k0
assert_status 200 "https upstream: request" tpp1 "${H[@]}" "$GW_URL/u1"
stats_json "$TEST_DIR/b.json"
tls_snap k1
assert_eq 2 "$(stat_delta "$TEST_DIR/a.json" "$TEST_DIR/b.json" ktls.tx)" "https upstream: ktls.tx +2 (TPP and bank sockets)"
assert_eq 2 "$(stat_delta "$TEST_DIR/a.json" "$TEST_DIR/b.json" ktls.rx)" "https upstream: ktls.rx +2"
assert_eq 0 "$(stat_delta "$TEST_DIR/a.json" "$TEST_DIR/b.json" ktls.fallback)" "https upstream: no fallback"
assert_eq 2 "$((k1_TlsTxSw - k0_TlsTxSw))" "https upstream: kernel TlsTxSw +2"
assert_eq 2 "$((k1_TlsRxSw - k0_TlsRxSw))" "https upstream: kernel TlsRxSw +2"
assert_eq "$(cert_sha256 "$PKI/gateway-qwac.pem")" "$(json_get "$LAST_BODY" client_cert_sha256)" \
	"https upstream: the bank sees the gateway's QWAC"
big_upload "https upstream: $HTTPS_MIB MiB request body kTLS->kTLS" $((HTTPS_MIB << 20))
big_download "https upstream: $HTTPS_MIB MiB response body kTLS->kTLS" $((HTTPS_MIB << 20))

assert_eq 0 "$(tls_stat TlsDecryptError)" "kernel: TlsDecryptError 0"
daemon_stop || fail "psd2edged stopped cleanly at the end"
finish
