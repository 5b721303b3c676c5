#!/usr/bin/env bash
# Quota and spike arrest (issue 8). A route with a quota of 4 a UTC day per client_id and
# x-account-id: on one keep-alive connection calls 1-4 of account A pass with RateLimit
# headers, the 5th gets 429 JSON with Retry-After (until the next UTC midnight) and the
# connection stays open for account B, which still passes. The count is kept across a SIGTERM
# restart and a kill -9 (pinned `quota` map), reads as named fields in `bpftool map dump`, is
# shown by `psd2edgectl quota show`, and `quota reset` (audited) lets the next call through.
# A second route naming the same quota shares its counters; a re-spelled path ("/ACCOUNTS")
# counts against the same quota. A per-client_id quota with X-RateLimit headers; a spike
# arrest of 2 a second with a burst of 2 refuses the third back-to-back call with 429.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

require_cmd bpftool
topo_basic
pki_setup
upstream_start
config_render "$DAEMON_CONFIG" '{"upstream": null,
	"upstreams": {"bank": {"url": "http://127.0.0.1:8080"}},
	"routes": [
	  {"prefix": "/accounts", "upstream": "bank",
	   "quota": {"limit": 4, "window": "day", "key": "header:x-account-id", "name": "ais",
	             "headers": "draft"}},
	  {"prefix": "/v2/accounts", "upstream": "bank",
	   "quota": {"limit": 4, "window": "day", "key": "header:x-account-id", "name": "ais"}},
	  {"prefix": "/psu", "upstream": "bank",
	   "quota": {"limit": 2, "window": "hour", "headers": "x"}},
	  {"prefix": "/spike", "upstream": "bank",
	   "spike_arrest": {"rate": 2, "per": "second", "burst": 2}}]}'
daemon_start
for c in tpp1 tpp2; do
	ctl bind "$c" "$PKI/$c.pem" >/dev/null || die "bind $c"
done

# The fixed windows must not turn during the test (a UTC day turns on an hour's turn).
left=$((3600 - $(date -u +%s) % 3600))
if [ "$left" -lt 120 ]; then
	note "waiting ${left}s for the UTC hour to turn"
	sleep $((left + 2))
fi

# account_req CLIENT ACCOUNT [PATH]: one line for tlsclient seq
account_req() {
	printf '{"path": "%s", "headers": {"x-client-id": "%s", "x-account-id": "%s"}}\n' \
		"${3:-/accounts/1}" "$1" "$2"
}

# account_call CLIENT ACCOUNT [PATH]: curl on a new connection (LAST_CODE, LAST_BODY)
account_call() {
	gw_request "$1" --path-as-is -D "$TEST_DIR/last-head" -H "x-client-id: $1" -H "x-account-id: $2" \
		"$GW_URL${3:-/accounts/1}"
}

forwarded() { # ACCOUNT: requests of tpp1 with that account the upstream received
	python3 -c 'import json,sys
n = 0
for l in open(sys.argv[1]):
    h = json.loads(l)["h"]
    n += h.get("x-account-id") == [sys.argv[2]] and "tpp1" in h.get("x-client-id", [])
print(n)' "$UPSTREAM_LOG" "$1"
}

# quota_used CLIENT KEY: "used" of the one counter of CLIENT with KEY (psd2edgectl quota show)
quota_used() {
	ctl quota show "$1" --key "$2" --json >"$TEST_DIR/qshow.json" 2>"$TEST_DIR/qshow.err" || return 1
	json_get "$TEST_DIR/qshow.json" 0.used
}

# --- 4 a day per client_id and account, on one connection --------------------------------------
: >"$TEST_DIR/day.req"
for _ in 1 2 3 4 5; do account_req tpp1 A >>"$TEST_DIR/day.req"; done
account_req tpp1 B >>"$TEST_DIR/day.req"
tlsclient tpp1 seq <"$TEST_DIR/day.req" >"$TEST_DIR/day.out" 2>"$TEST_DIR/day.err"
assert_eq 0 $? "six calls answered on one connection ($(tail -n 1 "$TEST_DIR/day.out") $(cat "$TEST_DIR/day.err"))"
midnight=$((86400 - $(date -u +%s) % 86400))
out=$TEST_DIR/day.out
for i in 1 2 3 4; do
	assert_eq 200 "$(json_line "$out" "$i" status)" "account A call $i passes"
	assert_eq "4;w=86400" "$(json_line "$out" "$i" headers.ratelimit-policy)" \
		"account A call $i: RateLimit-Policy"
	assert_contains "$(json_line "$out" "$i" headers.ratelimit)" "limit=4, remaining=$((4 - i)), reset=" \
		"account A call $i: RateLimit says $((4 - i)) remaining"
done
assert_eq 429 "$(json_line "$out" 5 status)" "account A call 5 gets 429"
assert_eq too_many_requests "$(json_line "$out" 5 body.error)" "the 429 is JSON with error too_many_requests"
assert_ne "" "$(json_line "$out" 5 body.error_description)" "the 429 has an error_description"
ra=$(json_line "$out" 5 headers.retry-after)
assert_true "Retry-After ($ra) is within [1, 86400]" test "${ra:-0}" -ge 1 -a "${ra:-0}" -le 86400
assert_true "Retry-After ($ra) is the time to the next UTC midnight (${midnight}s)" \
	test "$((${ra:-0} - midnight))" -ge -120 -a "$((${ra:-0} - midnight))" -le 120
assert_contains "$(json_line "$out" 5 headers.ratelimit)" "remaining=0" "the 429 carries RateLimit, remaining=0"
assert_eq false "$(json_line "$out" 5 closed)" "the 429 keeps the connection open"
assert_eq 200 "$(json_line "$out" 6 status)" "account B passes on the same connection after A's 429"
assert_contains "$(json_line "$out" 6 headers.ratelimit)" "remaining=3" "account B has its own counter"
assert_eq 4 "$(forwarded A)" "the upstream received tpp1's four calls of account A, not the fifth"

account_call tpp2 A
assert_eq 200 "$LAST_CODE" "another client with account A passes (counted per client_id)"

# --- the same quota, re-spelled paths, another route naming it ------------------------------------
account_call tpp1 A /ACCOUNTS/1
assert_eq 429 "$LAST_CODE" "/ACCOUNTS/1 counts against the same quota"
account_call tpp1 A //accounts/1
assert_eq 429 "$LAST_CODE" "//accounts/1 counts against the same quota"
account_call tpp1 A /v2/accounts/1
assert_eq 429 "$LAST_CODE" "a route naming the same quota shares its counter"
assert_eq 4 "$(forwarded A)" "none of them reached the upstream"

# --- what operators read ------------------------------------------------------------------------
assert_eq 4 "$(quota_used tpp1 A)" "psd2edgectl quota show tpp1 --key A: used 4 ($(cat "$TEST_DIR/qshow.err"))"
assert_eq ais "$(json_get "$TEST_DIR/qshow.json" 0.name)" "quota show: name ais"
assert_eq day "$(json_get "$TEST_DIR/qshow.json" 0.window)" "quota show: window day"
assert_eq 0 "$(json_get "$TEST_DIR/qshow.json" 0.remaining)" "quota show: remaining 0"
ctl_capture quota show tpp1
assert_contains "$CTL_OUT" "ais" "quota show tpp1 (table) lists the counters"

# bpftool map dump (its BTF-formatted output is JSON; -j would add every value's raw bytes, 8x
# the size of a 65536-entry map): the counter of (ais, tpp1, A), as named fields
bpftool map dump pinned "$PIN_DIR/quota" >"$TEST_DIR/quota.dump" 2>"$TEST_DIR/bpftool.err"
assert_eq 0 $? "bpftool map dump pinned quota ($(head -c 200 "$TEST_DIR/bpftool.err"))"
quota_entry() { # CLIENT KEY FIELD
	python3 -c '
import json, sys
for e in json.load(open(sys.argv[1])):
    v = e.get("formatted", e)["value"]
    if v.get("client_id") == sys.argv[2] and v.get("key") == sys.argv[3] and v.get("name") == "ais":
        print(v[sys.argv[4]])
        sys.exit(0)
sys.exit(1)' "$TEST_DIR/quota.dump" "$@"
}
assert_eq 4 "$(quota_entry tpp1 A count)" "bpftool map dump pinned quota: name, client_id, key and count as fields"
assert_eq 4 "$(quota_entry tpp1 A limit)" "bpftool map dump pinned quota: the limit"
assert_eq 1 "$(quota_entry tpp2 A count)" "bpftool map dump pinned quota: tpp2's counter of key A is its own"

# --- kept across a SIGTERM restart and a kill -9 ------------------------------------------------------
daemon_stop
assert_eq 0 $? "psd2edged stops cleanly on SIGTERM"
daemon_start
account_call tpp1 A
assert_eq 429 "$LAST_CODE" "after a SIGTERM restart account A still gets 429"
assert_true "its Retry-After is within [1, 86400]" \
	grep -Eiq '^retry-after: ([1-9][0-9]{0,3}|[1-7][0-9]{4}|8[0-5][0-9]{3}|86[0-3][0-9]{2}|86400)\s*$' "$TEST_DIR/last-head"
account_call tpp1 B
assert_eq 200 "$LAST_CODE" "after a SIGTERM restart account B passes (its second call)"

daemon_kill9
daemon_start
account_call tpp1 A
assert_eq 429 "$LAST_CODE" "after kill -9 and a start account A still gets 429"
assert_eq 4 "$(quota_used tpp1 A)" "after kill -9 quota show still says used 4"
assert_eq 2 "$(quota_used tpp1 B)" "after kill -9 account B's count is 2"
assert_eq 4 "$(forwarded A)" "account A never got past the quota"

# --- reset ---------------------------------------------------------------------------------------------
ctl_capture quota reset tpp1 --key A
assert_eq 0 "$CTL_RC" "quota reset tpp1 --key A ($CTL_ERR)"
assert_contains "$CTL_OUT" "reset 1 quota counter of tpp1 with key A" "quota reset says what it reset"
account_call tpp1 A
assert_eq 200 "$LAST_CODE" "after quota reset account A passes"
assert_eq 1 "$(quota_used tpp1 A)" "after reset and one call: used 1"
assert_eq 2 "$(quota_used tpp1 B)" "the reset of key A left key B alone"
ctl_capture audit tpp1
assert_contains "$CTL_OUT" "quota-reset" "the reset is in the audit trail"

# --- a quota per client_id, X-RateLimit headers -----------------------------------------------------
printf '{"path": "/psu/%s", "headers": {"x-client-id": "tpp1"}}\n' 1 2 3 4 >"$TEST_DIR/psu.req"
tlsclient tpp1 seq <"$TEST_DIR/psu.req" >"$TEST_DIR/psu.out" 2>"$TEST_DIR/psu.err"
assert_eq 0 $? "per-client quota: four calls answered on one connection ($(tail -n 1 "$TEST_DIR/psu.out"))"
out=$TEST_DIR/psu.out
assert_eq "200 200 429 429" "$(for i in 1 2 3 4; do json_line "$out" "$i" status; done | tr '\n' ' ' | sed 's/ $//')" \
	"per-client quota of 2 an hour: 200 200 429 429"
assert_eq 2 "$(json_line "$out" 1 headers.x-ratelimit-limit)" "X-RateLimit-Limit: 2"
assert_eq "1 0 0" "$(for i in 1 2 3; do json_line "$out" "$i" headers.x-ratelimit-remaining; done | tr '\n' ' ' | sed 's/ $//')" \
	"X-RateLimit-Remaining 1, 0, 0"
reset=$(json_line "$out" 1 headers.x-ratelimit-reset)
assert_true "X-RateLimit-Reset ($reset) is within [1, 3600]" test "${reset:-0}" -ge 1 -a "${reset:-0}" -le 3600
ra=$(json_line "$out" 3 headers.retry-after)
assert_true "Retry-After of the hourly quota ($ra) is within [1, 3600]" test "${ra:-0}" -ge 1 -a "${ra:-0}" -le 3600
assert_eq "" "$(json_line "$out" 1 headers.ratelimit)" "no draft RateLimit header on an \"x\" route"
ctl quota show tpp1 --key "" --json >"$TEST_DIR/psu.json"
assert_eq "/psu 2" "$(json_get "$TEST_DIR/psu.json" 0.name) $(json_get "$TEST_DIR/psu.json" 0.used)" \
	"quota show --key \"\": the per-client counter, named by its prefix, used 2"

# --- spike arrest: rate 2 a second, burst 2 ------------------------------------------------------------
before=$(wc -l <"$UPSTREAM_LOG")
printf '{"path": "/spike/%s", "headers": {"x-client-id": "tpp1"}}\n' 1 2 3 >"$TEST_DIR/spike.req"
tlsclient tpp1 seq <"$TEST_DIR/spike.req" >"$TEST_DIR/spike.out" 2>"$TEST_DIR/spike.err"
assert_eq 0 $? "spike arrest: three calls answered on one connection ($(tail -n 1 "$TEST_DIR/spike.out"))"
out=$TEST_DIR/spike.out
assert_eq "200 200 429" "$(for i in 1 2 3; do json_line "$out" "$i" status; done | tr '\n' ' ' | sed 's/ $//')" \
	"three back-to-back calls against a burst of 2: 200 200 429"
assert_eq too_many_requests "$(json_line "$out" 3 body.error)" "the spike arrest's 429 is JSON too_many_requests"
ra=$(json_line "$out" 3 headers.retry-after)
assert_true "the spike arrest's Retry-After ($ra) is 1 s" test "${ra:-0}" -eq 1
assert_eq $((before + 2)) "$(wc -l <"$UPSTREAM_LOG")" "the arrested call did not reach the upstream"
account_call tpp2 A /spike/1
assert_eq 200 "$LAST_CODE" "spike arrest is per client: tpp2 passes meanwhile"

finish
