#!/usr/bin/env python3
"""Where psd2edge's CPU time per keep-alive request goes, from `perf script -F
tid,period,ip,sym,dso` (DWARF call graphs) on stdin, plus the system calls per request of each
peer from `strace -c -f` files. Run by `bench/proxy_bench.sh profile`.

Each sample is charged to the innermost frame that names a step of the request path (a
function of psd2edged, inlined or not), so the shares add up to 100 %; the µs are the shares
of the server CPU per request that the loadgen measured during the perf run.

usage: perf script ... | bench/profile_breakdown.py RUNS.jsonl PERF_LOADGEN.json STRACE-PEER.txt..."""
import json
import os
import re
import sys

# (category, functions that mark it), innermost match wins.
CATEGORIES = [
    ("access log: JSON line + batched write", ("session_log_request", "log_access_commit",
                                                "log_access_flush")),
    ("epoll_ctl: interest set after every step", ("ev_set",)),
    ("binding check (client_id, registry lookup)", ("session_decide", "pipeline_run",
                                                    "clientid_extract", "registry_lookup")),
    ("HTTP parsing (request and response)", ("http_msg_feed", "http_parser_execute")),
    ("forwarded request head", ("http_write_request_head",)),
    ("client read: SSL_read + read()", ("session_read_client",)),
    ("client write: SSL_write + write() (TCP to the client)", ("session_flush_client",)),
    ("upstream read: read()", ("session_read_upstream",)),
    ("upstream write: write() (TCP to the upstream)", ("session_upstream_io",)),
    ("response relay (framing, buffers)", ("session_feed_response",)),
    ("other steps of session_step", ("session_step", "session_on_event")),
    ("timers", ("run_timers",)),
    ("epoll_wait and the loop", ("ev_run",)),
]


def samples(stream):
    """Yields (period, [(sym, dso), ...] leaf first)."""
    period, frames = None, []
    for line in stream:
        line = line.rstrip("\n")
        if not line.strip():
            if period is not None:
                yield period, frames
            period, frames = None, []
            continue
        if not line.startswith(("\t", " ")) or period is None and re.match(r"^\s*\d+\s+\d+\s*$", line):
            parts = line.split()
            period, frames = (int(parts[1]) if len(parts) > 1 else 1), []
            continue
        m = re.match(r"\s*[0-9a-f]+ (.+?) \((.*)\)$", line)
        if m:
            frames.append((m.group(1), m.group(2)))
    if period is not None:
        yield period, frames


def classify(frames):
    names = [re.sub(r"\.(part|isra|constprop|cold)\.\d+$", "", sym) for sym, _ in frames]
    for name in names:
        for cat, funcs in CATEGORIES:
            if name in funcs:
                return cat
    return "outside the request loop (other threads, unknown stacks)"


def strace_per_request(path, requests):
    rows = {}
    for line in open(path):
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d*)\s*(\w+)$", line)
        if m and m.group(3) != "total":
            rows[m.group(3)] = (int(m.group(1)) / requests, int(m.group(2) or 0) / requests)
    return rows


def main():
    runs_path, perf_run_path, straces = sys.argv[1], sys.argv[2], sys.argv[3:]
    perf_run = json.load(open(perf_run_path))
    us = perf_run.get("server_cpu_per_request_us", 0)
    total, kernel_total, by_cat, kernel_by_cat = 0, 0, {}, {}
    for period, frames in samples(sys.stdin):
        cat = classify(frames)
        in_kernel = bool(frames) and frames[0][1] == "[kernel.kallsyms]"
        total += period
        by_cat[cat] = by_cat.get(cat, 0) + period
        if in_kernel:
            kernel_total += period
            kernel_by_cat[cat] = kernel_by_cat.get(cat, 0) + period
    print("psd2edge, keep-alive requests through the binding check: %.1f µs of server CPU per "
          "request during the perf run (%d req/s), %.0f %% of it in the kernel"
          % (us, perf_run.get("rps", 0), 100.0 * kernel_total / max(total, 1)))
    print()
    print("%-58s %6s %8s %8s" % ("where (innermost step of the request path)", "share", "µs/req", "kernel"))
    for cat, period in sorted(by_cat.items(), key=lambda kv: -kv[1]):
        share = period / total
        print("%-58s %5.1f%% %8.1f %7.0f%%" % (cat, 100 * share, share * us,
                                              100.0 * kernel_by_cat.get(cat, 0) / period))

    requests = {}
    for line in open(runs_path):
        r = json.loads(line)
        if r["scenario"] == "profile_strace":
            requests[r["peer"]] = r["result"].get("requests", 0)
    print()
    print("System calls per request (strace -c -f over a fixed number of keep-alive requests; "
          "failed calls in brackets):")
    for path in straces:
        peer = os.path.basename(path)[len("strace-"):-len(".txt")]
        if not requests.get(peer):
            continue
        rows = strace_per_request(path, requests[peer])
        calls = sum(c for c, _ in rows.values())
        detail = ", ".join("%s %.2f%s" % (name, c, " (%.2f)" % e if e >= 0.01 else "")
                           for name, (c, e) in sorted(rows.items(), key=lambda kv: -kv[1][0])
                           if c >= 0.01)
        print("  %-9s %5.1f per request over %d requests: %s" % (peer, calls, requests[peer], detail))


if __name__ == "__main__":
    main()
