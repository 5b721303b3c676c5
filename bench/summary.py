#!/usr/bin/env python3
"""The headline figures of bench/results.json, computed from its sections ("proxy", "xdp",
"ktls") and written at its top level with the machine they came from; then docs/bench.svg
(bench/bench.gp) from them. Ratios are psd2edge over the peer, higher is better; a section
not measured leaves its keys null. usage: bench/summary.py"""
import json
import os
import subprocess
import tempfile

RESULTS = "bench/results.json"
SVG = "docs/bench.svg"


def dig(d, *path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def main():
    res = json.load(open(RESULTS))
    proxy = res.get("proxy", {})
    r = proxy.get("ratios", {})
    ktls = [v for v in (dig(res, "ktls", "tls1.3", "cpu_per_gib_vs_userspace"),
                        dig(res, "ktls", "tls1.2", "cpu_per_gib_vs_userspace")) if v is not None]
    summary = {
        "handshakes_vs_nginx": r.get("handshakes_vs_nginx"),
        "handshakes_vs_haproxy": r.get("handshakes_vs_haproxy"),
        "keepalive_rps_vs_nginx": r.get("keepalive_rps_vs_nginx"),
        "keepalive_rps_vs_haproxy": r.get("keepalive_rps_vs_haproxy"),
        "p99_at_half_load_vs_nginx": r.get("p99_at_half_load_vs_nginx"),
        "p99_at_half_load_vs_haproxy": r.get("p99_at_half_load_vs_haproxy"),
        "server_cpu_per_handshake_ms": {
            p: dig(proxy, "scenarios", "handshake", "ecdsa_tls1.3", p, "server_cpu_per_handshake_ms")
            for p in ("psd2edge", "haproxy", "nginx")},
        "server_cpu_per_request_us": {
            p: dig(proxy, "scenarios", "keepalive", "ecdsa", p, "server_cpu_per_request_us")
            for p in ("psd2edge", "haproxy", "nginx")},
        "xdp_ns_vs_xdp_filter": dig(res, "xdp", "program_cost", "min_speedup_vs_alw_all"),
        "xdp_drop_vs_nftables": dig(res, "xdp", "veth_drop", "xdp_vs_nftables_per_cpu"),
        "ktls_cpu_per_gib_vs_userspace": min(ktls) if ktls else None,
        "machine": proxy.get("machine"),
        "definitions": {
            "handshakes_vs_*": "server CPU per new mTLS handshake + request (ECDSA P-256, TLS 1.3), peer ÷ psd2edge; wall-clock handshakes/s ratios in proxy.ratios",
            "keepalive_rps_vs_*": "server CPU per keep-alive request through the binding check, peer ÷ psd2edge (requests per server CPU-second, psd2edge over peer); wall-clock in proxy.ratios",
            "p99_at_half_load_vs_*": "p99 latency at half the slowest peer's keep-alive rate, peer ÷ psd2edge",
            "server_cpu_per_*": "the server's own utime + stime per handshake (ECDSA, TLS 1.3) and per keep-alive request",
            "xdp_ns_vs_xdp_filter": "xdp-filter ns ÷ psd2edge ns per packet on psd2edge's slowest path (xdp.program_cost)",
            "xdp_drop_vs_nftables": "drops per receiver CPU-second, XDP ÷ nftables (xdp.veth_drop)",
            "ktls_cpu_per_gib_vs_userspace": "proxy CPU per GiB relayed, userspace TLS ÷ kTLS + splice, the lower of TLS 1.3 and 1.2 (in a TCG VM: see docs/BENCHMARKS.md)",
        },
    }
    for k in list(res):
        if k not in ("xdp", "ktls", "proxy"):
            del res[k]
    res = {**summary, **res}
    with open(RESULTS, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")

    bars = [("handshakes vs NGINX", summary["handshakes_vs_nginx"]),
            ("handshakes vs HAProxy", summary["handshakes_vs_haproxy"]),
            ("keep-alive vs NGINX", summary["keepalive_rps_vs_nginx"]),
            ("keep-alive vs HAProxy", summary["keepalive_rps_vs_haproxy"]),
            ("p99 at half load vs NGINX", summary["p99_at_half_load_vs_nginx"]),
            ("p99 at half load vs HAProxy", summary["p99_at_half_load_vs_haproxy"]),
            ("XDP slowest path vs xdp-filter", summary["xdp_ns_vs_xdp_filter"]),
            ("XDP drop vs nftables", summary["xdp_drop_vs_nftables"]),
            ("kTLS CPU/GiB vs userspace", summary["ktls_cpu_per_gib_vs_userspace"])]
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as data:
        for label, v in bars:
            data.write("%s\t%s\t%s\n" % (label, 0 if v is None else v,
                                           "not run" if v is None else "%.2f" % v))
    try:
        subprocess.run(["gnuplot", "-e", "data='%s'; out='%s'; when='%s'" % (
            data.name, SVG, dig(proxy, "measured_at") or ""), "bench/bench.gp"], check=True)
    finally:
        os.unlink(data.name)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("machine", "definitions")}))


if __name__ == "__main__":
    main()
