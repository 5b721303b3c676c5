#!/usr/bin/env bash
# Circuit breaker (issue 8), one per upstream, both upstreams served by one upstream.py.
# "flaky" (2 failures, response timeout 300 ms, cool-down 1 s): two 500s from the upstream open
# it; the next call gets 503 JSON with Retry-After and reaches no upstream, while the other
# upstream's route still passes. After the cool-down, with the upstream no longer answering,
# the half-open breaker admits one probe (a second call meanwhile gets 503); the probe times
# out (504) and opens it again; once the upstream answers again and the cool-down has passed,
# one probe closes it.
# "bank" (3 failures, response timeout 300 ms, cool-down 60 s, never waited for): the upstream
# stops answering; three calls get 504, the next 503 at once: no connection attempt (the
# upstream's accept count stays), no request, and no wait for the upstream (the server-side
# time of the 503 is printed and must stay under a generous 100 ms bound: a functional check
# that nothing waited on the upstream, not a benchmark). `bpftool map dump pinned
# .../breakers` shows the state and the failure count as named fields, `psd2edgectl breaker
# list` shows it open, the open breaker survives a SIGTERM restart (same opened_at, still 503
# without a connection attempt), and `psd2edgectl breaker reset` closes it (audited).
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_cmd bpftool
topo_basic
pki_setup
upstream_start
config_render "$DAEMON_CONFIG" '{"upstream": null,
	"upstreams": {
	  "bank": {"url": "http://127.0.0.1:8080", "response_timeout_ms": 300,
	           "circuit_breaker": {"consecutive_failures": 3, "cooldown_ms": 60000, "probes": 1}},
	  "flaky": {"url": "http://127.0.0.1:8080/flaky", "response_timeout_ms": 300,
	            "circuit_breaker": {"consecutive_failures": 2, "cooldown_ms": 1000, "probes": 1}}},
	"routes": [{"prefix": "/", "upstream": "bank"},
	           {"prefix": "/flaky", "upstream": "flaky"}]}'
daemon_start
ctl bind tpp1 "$PKI/tpp1.pem" >/dev/null || die "bind tpp1"

# call PATH: one request on a new connection; LAST_CODE, LAST_BODY, $TEST_DIR/last-head, and
# WAIT_MS: the server's time to the first byte (curl's time_starttransfer - time_pretransfer)
call() {
	local w
	: >"$LAST_BODY"
	w=$(gw_curl tpp1 -o "$LAST_BODY" -D "$TEST_DIR/last-head" -H "x-client-id: tpp1" \
		-w '%{http_code} %{time_pretransfer} %{time_starttransfer}' "$GW_URL$1" 2>"$TEST_DIR/curl.err")
	LAST_CODE=${w%% *}
	WAIT_MS=$(echo "$w" | awk '{printf "%.3f", ($3 - $2) * 1000}')
}

retry_after() { sed -n 's/^[Rr]etry-[Aa]fter: *\([0-9]*\).*/\1/p' "$TEST_DIR/last-head"; }

log_lines() { if [ -f "$UPSTREAM_LOG" ]; then wc -l <"$UPSTREAM_LOG"; else echo 0; fi; }

# breaker NAME FIELD: a field of NAME's entry in the pinned breakers map (bpftool, no daemon;
# its BTF-formatted output is JSON)
breaker() {
	bpftool map dump pinned "$PIN_DIR/breakers" 2>"$TEST_DIR/bpftool.err" | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    v = e.get("formatted", e)["value"]
    if v.get("name") == sys.argv[1]:
        print(v[sys.argv[2]])
        sys.exit(0)
sys.exit(1)' "$1" "$2"
}

# listed NAME FIELD: a field of NAME in `psd2edgectl breaker list --json`
listed() {
	ctl breaker list --json >"$TEST_DIR/blist.json" 2>"$TEST_DIR/blist.err" || return 1
	python3 -c '
import json, sys
for b in json.load(open(sys.argv[1])):
    if b["name"] == sys.argv[2]:
        print(b[sys.argv[3]])
        sys.exit(0)
sys.exit(1)' "$TEST_DIR/blist.json" "$1" "$2"
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

past_cooldown() { # NAME COOLDOWN_MS: the breaker opened more than COOLDOWN_MS (+ 100) ago
	local at
	at=$(breaker "$1" opened_at_ms) || return 1
	[ "$(now_ms)" -gt $((at + $2 + 100)) ]
}

# --- flaky: upstream 5xx opens it -----------------------------------------------------------------
call /flaky/x
assert_eq 200 "$LAST_CODE" "flaky: a first call passes"
assert_eq closed "$(listed flaky state)" "breaker list: flaky closed ($(cat "$TEST_DIR/blist.err"))"
for i in 1 2; do
	call "/flaky/status?code=500"
	assert_eq 500 "$LAST_CODE" "flaky: the upstream's 500 ($i) is passed on"
done
lines=$(log_lines)
call /flaky/x
assert_eq 503 "$LAST_CODE" "flaky: after two 500s the next call gets 503"
assert_eq temporarily_unavailable "$(json_get "$LAST_BODY" error)" "the 503 is JSON temporarily_unavailable"
ra=$(retry_after)
assert_true "the 503 has Retry-After ($ra) of the 1 s cool-down" test "${ra:-0}" -eq 1
assert_eq "$lines" "$(log_lines)" "flaky: the refused call reached no upstream"
call /x
assert_eq 200 "$LAST_CODE" "bank's breaker is its own: / still passes"
assert_eq closed "$(listed bank state)" "breaker list: bank still closed"
assert_eq 1 "$(breaker flaky opened_total)" "bpftool: flaky opened once"

# --- flaky half-open: one probe at a time; a failed probe opens it again --------------------------
log_grew() { [ "$(log_lines)" -gt "$1" ]; }
reopened() { [ "$(breaker flaky opened_total)" = 2 ]; }
upstream_mode hang
wait_until 10 past_cooldown flaky 1000 || fail "flaky's cool-down did not pass"
lines=$(log_lines)
gw_curl tpp1 -o /dev/null -w '%{http_code}' -H "x-client-id: tpp1" "$GW_URL/flaky/probe" \
	>"$TEST_DIR/probe.code" 2>/dev/null &
probe_pid=$!
wait_until 5 log_grew "$lines" || fail "the probe did not reach the upstream"
call /flaky/second
assert_eq 503 "$LAST_CODE" "half-open with its one probe in flight: a second call gets 503"
assert_eq $((lines + 1)) "$(log_lines)" "only the probe reached the upstream"
wait "$probe_pid"
assert_eq 504 "$(cat "$TEST_DIR/probe.code")" "the probe to the hanging upstream gets 504"
assert_true "the failed probe opened the breaker again (opened_total 2)" wait_until 2 reopened
assert_eq open "$(listed flaky state)" "breaker list: flaky open again"

# --- flaky: the upstream answers again, one probe closes it ---------------------------------------
upstream_mode normal
wait_until 10 past_cooldown flaky 1000 || fail "flaky's second cool-down did not pass"
call /flaky/probe2
assert_eq 200 "$LAST_CODE" "after the cool-down the probe to an answering upstream passes"
assert_eq closed "$(listed flaky state)" "breaker list: the probe closed flaky"
assert_eq 0 "$(breaker flaky state)" "bpftool: flaky state 0 (closed)"
call /flaky/x
assert_eq 200 "$LAST_CODE" "flaky closed: calls pass again"

# --- bank: the upstream stops answering ----------------------------------------------------------
upstream_mode hang
for i in 1 2 3; do
	call /accounts
	assert_eq 504 "$LAST_CODE" "bank hangs: call $i gets 504 after the response timeout"
done
accepts=$(upstream_accepts)
lines=$(log_lines)
call /accounts
assert_eq 503 "$LAST_CODE" "bank: after three timeouts the next call gets 503"
note "the 503 came ${WAIT_MS} ms after the request was sent (issue: under 10 ms; bound here 100 ms)"
assert_true "the 503 did not wait for the upstream (${WAIT_MS} ms < 100 ms)" \
	awk -v ms="${WAIT_MS:-9999}" 'BEGIN { exit !(ms < 100) }'
ra=$(retry_after)
assert_true "the 503 has Retry-After ($ra) within [1, 60]" test "${ra:-0}" -ge 1 -a "${ra:-0}" -le 60
assert_eq "$accepts" "$(upstream_accepts)" "bank: no connection attempt for the 503 (accept count stays $accepts)"
assert_eq "$lines" "$(log_lines)" "bank: no request reached the upstream"

# What operators read.
opened_at=$(breaker bank opened_at_ms)
assert_eq 1 "$(breaker bank state)" "bpftool map dump pinned breakers: bank state 1 (open) ($(head -c 200 "$TEST_DIR/bpftool.err"))"
assert_true "bpftool: opened_at_ms ($opened_at) is a unix time in ms" test "${opened_at:-0}" -gt 1600000000000
assert_true "bpftool: consecutive_failures counts the failures ($(breaker bank consecutive_failures))" \
	test "$(breaker bank consecutive_failures)" -ge 3
assert_eq 1 "$(breaker bank rejected_total)" "bpftool: rejected_total counts the 503"
assert_eq 1 "$(breaker bank opened_total)" "bpftool: opened_total 1"
assert_eq open "$(listed bank state)" "breaker list --json: bank open"
ctl_capture breaker list
assert_true "breaker list (table): a row 'bank open'" \
	python3 -c 'import re,sys; sys.exit(0 if re.search(r"^bank\s+open\s", sys.argv[1], re.M) else 1)' "$CTL_OUT"

# --- the open breaker survives a SIGTERM restart ---------------------------------------------------
daemon_stop
assert_eq 0 $? "psd2edged stops cleanly on SIGTERM"
assert_eq "1 $opened_at" "$(breaker bank state) $(breaker bank opened_at_ms)" \
	"with no daemon running the map still says open, opened at $opened_at"
daemon_start
call /accounts
assert_eq 503 "$LAST_CODE" "after a SIGTERM restart the open breaker still answers 503"
assert_eq "$accepts" "$(upstream_accepts)" "after the restart still no connection attempt"
assert_eq "1 $opened_at 2" "$(breaker bank state) $(breaker bank opened_at_ms) $(breaker bank rejected_total)" \
	"after the restart: still open, same opened_at_ms, rejected_total 2"

# --- breaker reset -----------------------------------------------------------------------------------
upstream_mode normal
ctl_capture breaker reset bank
assert_eq 0 "$CTL_RC" "breaker reset bank ($CTL_ERR)"
assert_contains "$CTL_OUT" "closed the circuit breaker of upstream bank (was open)" "breaker reset says what it did"
assert_eq closed "$(listed bank state)" "breaker list: bank closed after the reset"
call /accounts
assert_eq 200 "$LAST_CODE" "after the reset calls reach the upstream again"
ctl_capture audit
assert_contains "$CTL_OUT" "breaker-reset" "the reset is in the audit trail"

finish
