#!/usr/bin/env bash
# Run-time XDP rates: `psd2edgectl limit set` writes a client's policing into its entry of the
# pinned `clients` map (pps, bytes_per_sec, burst_pkts, burst_bytes as bpftool prints them) and
# `show` reports it; it is in the registry, so after a restart of the daemon the map still holds
# it; `limit del` returns the entry to the configured default (bpf.client_rate); a tight pps
# limit makes a bulk download's ACKs exceed the rate, so xdp.packets.drop_policed rises; and
# `limit src` (the per-source SYN rate) is stored and survives a restart until
# `limit src --default`. Refusals (unknown client, out of range) exit 1 and leave the map alone.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_cmd bpftool curl
topo_basic
pki_setup
upstream_start
# A configured default for every client, so that "back to the default" is visible in the map.
config_render "$DAEMON_CONFIG" \
	"{\"bpf\": {\"mode\": \"native\", \"interface\": \"$GW_IF\", \"pin_dir\": \"$PIN_DIR\",
	  \"client_rate\": {\"pps\": 50000, \"burst\": 64}}}"
daemon_start
ns_exec "$GW_NS" ip link show dev "$GW_IF" | grep -q 'prog/xdp' ||
	skip "no XDP program on $GW_IF (native XDP on veth unavailable?)"

# xdp_stat REASON: xdp.packets.REASON from `psd2edgectl stats --json` (0 when absent)
xdp_stat() {
	ctl stats --json >"$TEST_DIR/stats.json" || { echo -1; return; }
	json_get "$TEST_DIR/stats.json" "xdp.packets.$1" || echo 0
}

# client_entry CLIENT_ID [SLOT]: "pps bytes_per_sec burst_pkts burst_bytes state drop_policed
# pass_packets" of
# the client's entry in the pinned clients map, as bpftool prints it from the map's BTF. The
# entry is looked up by the client's slot (from `show --json` unless given): a full
# `bpftool map dump` of the 65536-entry array takes half a minute. burst_bytes is 0 in the map
# when bps is 0 (no byte policing).
client_entry() {
	local slot=$2
	if [ -z "$slot" ]; then
		ctl show "$1" --json >"$TEST_DIR/entry.json" || return 1
		slot=$(json_get "$TEST_DIR/entry.json" slot) || return 1
	fi
	# shellcheck disable=SC2046 # four separate key bytes, little-endian
	bpftool -j map lookup pinned "$PIN_DIR/clients" key $(printf '%d %d %d %d' \
		$((slot & 255)) $((slot >> 8 & 255)) $((slot >> 16 & 255)) $((slot >> 24))) \
		2>/dev/null | python3 -c '
import json, sys
e = json.load(sys.stdin)
v = e.get("formatted", e)["value"]
assert v["client_id"] == sys.argv[1], v["client_id"]
print(v["pps"], v["bytes_per_sec"], v["burst_pkts"], v["burst_bytes"], v["state"],
      v["drop_policed"], v["pass_packets"])' "$1"
}

# client_counter CLIENT_ID FIELD: field FIELD of client_entry once it is above 0, or what it is
# after 3 s (the daemon copies the per-CPU client_stats into the clients entry every second).
client_counter() {
	local v
	for _ in 1 2 3 4 5 6; do
		v=$(client_entry "$1" | cut -d' ' -f"$2")
		[ "${v:-0}" -gt 0 ] && break
		sleep 0.5
	done
	echo "$v"
}

ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null || die "bind tpp1"
ctl bind tpp2 "$PKI/tpp2.pem" >/dev/null || die "bind tpp2"
assert_status 200 "tpp1 served before any limit" tpp1 "$GW_URL/x?client_id=tpp1"
ctl show tpp1 --json >"$TEST_DIR/show.json"
slot1=$(json_get "$TEST_DIR/show.json" slot)
entry=$(client_entry tpp1)
assert_contains "$entry" "50000 0 64 0 " "a client without a limit has bpf.client_rate in the map ($entry)"
passed=$(client_counter tpp1 7)
assert_true "the request's packets are counted in tpp1's clients entry ($passed)" test "${passed:-0}" -gt 0
ctl show tpp1 --json >"$TEST_DIR/show.json"
n=$(json_get "$TEST_DIR/show.json" xdp.pass_packets)
assert_true "show --json reports tpp1's XDP packets ($n)" test "${n:-0}" -ge "$passed"
assert_contains "$(ctl show tpp1)" "xdp.pass_packets" "show prints the XDP counters"

# --- limit set: registry, show, map ---------------------------------------------------------
ctl_capture limit set tpp1 --pps 1000 --bps 5000000 --burst 20
assert_eq 0 "$CTL_RC" "limit set tpp1 (stderr: $CTL_ERR)"
assert_contains "$CTL_OUT" "pps 1000, bps 5000000, burst 20, burst_bytes 0" "limit set prints the limit"
assert_eq "1000 5000000 20 30280" "$(client_entry tpp1 | cut -d' ' -f1-4)" \
	"the limit is in tpp1's entry of the pinned clients map (burst_bytes 20 x 1514)"
assert_contains "$(client_entry tpp2)" "50000 0 64 0 " "tpp2 keeps the default"
assert_contains "$(ctl show tpp1)" "pps 1000, bps 5000000, burst 20, burst_bytes 0" "show reports the limit"
ctl show tpp1 --json >"$TEST_DIR/show.json"
assert_eq 1000 "$(json_get "$TEST_DIR/show.json" limit.pps)" "show --json: limit.pps"
ctl list --json >"$TEST_DIR/list.json"
assert_eq 20 "$(json_get "$TEST_DIR/list.json" clients.0.limit.burst)" "list --json: the limit of tpp1"
assert_eq null "$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["clients"][1]["limit"]))' "$TEST_DIR/list.json")" \
	"list --json: tpp2 has limit null"
assert_status 200 "tpp1 still served under a loose limit" tpp1 "$GW_URL/x?client_id=tpp1"

# --- refusals change nothing ------------------------------------------------------------------
ctl_capture limit set nobody --pps 5
assert_eq 1 "$CTL_RC" "limit set for an unknown client is refused"
ctl_capture limit set tpp1 --burst 0
assert_eq 1 "$CTL_RC" "burst 0 is refused"
ctl_capture limit set tpp1 --pps lots
assert_eq 2 "$CTL_RC" "a non-numeric --pps is a usage error"
assert_eq "1000 5000000 20 30280" "$(client_entry tpp1 | cut -d' ' -f1-4)" "the map is unchanged by refusals"

# --- limit src ---------------------------------------------------------------------------------
ctl_capture limit src --per-sec 500 --burst 200
assert_eq 0 "$CTL_RC" "limit src (stderr: $CTL_ERR)"
ctl list --json >"$TEST_DIR/list.json"
assert_eq 500 "$(json_get "$TEST_DIR/list.json" src_rate.per_sec)" "list --json: src_rate"

# --- restart: the limit is still in the map -----------------------------------------------------
daemon_stop || fail "daemon stopped cleanly"
assert_eq "1000 5000000 20 30280" "$(client_entry tpp1 "$slot1" | cut -d' ' -f1-4)" "the limit stays in the pinned map while the daemon is down"
daemon_start
assert_eq "1000 5000000 20 30280" "$(client_entry tpp1 | cut -d' ' -f1-4)" "after a restart the limit is still in the map"
assert_contains "$(client_entry tpp2)" "50000 0 64 0 " "after a restart tpp2 has the default"
assert_contains "$(ctl show tpp1)" "pps 1000, bps 5000000, burst 20" "after a restart show reports the limit"
assert_contains "$(cat "$DAEMON_LOG")" "source rate 500/s burst 200" "after a restart the stored source rate is applied"
assert_status 200 "tpp1 served after the restart" tpp1 "$GW_URL/x?client_id=tpp1"

# --- a tight pps limit polices a bulk download ----------------------------------------------------
# XDP sees what the client sends: for a download, its ACKs. ACKs are cumulative, so with large
# TCP windows the download may still finish; what must show is that packets were policed.
ctl limit set tpp1 --pps 20 --burst 5 >/dev/null
assert_eq 0 $? "limit set tpp1 --pps 20 --burst 5"
assert_eq "20 0 5 0" "$(client_entry tpp1 | cut -d' ' -f1-4)" "the tight limit is in the map"
before=$(xdp_stat drop_policed)
CURL_MAX_TIME=6 gw_request tpp1 "$GW_URL/big?bytes=50000000&client_id=tpp1"
after=$(xdp_stat drop_policed)
note "bulk download under 20 pps: HTTP $LAST_CODE, curl exit $LAST_RC, drop_policed $before -> $after"
assert_true "xdp.packets.drop_policed rose under the tight limit ($before -> $after)" test "$after" -gt "$before"
policed=$(client_counter tpp1 6)
assert_true "tpp1's own drop_policed counter in the clients map rose ($policed)" test "${policed:-0}" -gt 0

# --- limit del: back to the configured default -----------------------------------------------------
ctl_capture limit del tpp1
assert_eq 0 "$CTL_RC" "limit del tpp1"
assert_contains "$(client_entry tpp1)" "50000 0 64 0 " "after limit del the map holds the default again"
assert_contains "$(ctl show tpp1)" "default" "show reports the default"
ctl_capture limit del tpp1
assert_eq 1 "$CTL_RC" "a second limit del is refused"
before=$(xdp_stat drop_policed)
CURL_MAX_TIME=20 assert_status 200 "the bulk download completes without the tight limit" \
	tpp1 "$GW_URL/big?bytes=5000000&client_id=tpp1"

# --- limit src --default: the configuration's source rate again -------------------------------------
ctl_capture limit src --default
assert_eq 0 "$CTL_RC" "limit src --default (stderr: $CTL_ERR)"
ctl list --json >"$TEST_DIR/list.json"
assert_eq null "$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["src_rate"]))' "$TEST_DIR/list.json")" \
	"list --json: src_rate null after --default"
ctl_capture limit src --default
assert_eq 1 "$CTL_RC" "a second limit src --default is refused"

# --- the audit trail ---------------------------------------------------------------------------------
audit=$(ctl audit --limit 20)
for a in limit-set limit-del src-rate-set src-rate-del; do
	assert_contains "$audit" "$a" "audit records $a"
done

finish
