#!/usr/bin/env python3
"""A small mTLS client for what curl cannot do: raw bytes, slow senders, held connections.

usage: tlsclient.py --host H --port P [--sni NAME] [--cert C --key K] [--ca CA] MODE [opts]

Modes:
  raw        send stdin as one write; print what comes back until the peer closes or
             --idle seconds pass without data (default 2), at most --max seconds (default 10)
  slowloris  send a request line, then one header line every --interval ms and never the
             blank line; stop when the peer closes; prints what came back
  trickle    send stdin's head (up to the blank line) in one write, then its body --chunk bytes
             (default 1) every --interval ms; stop when the peer closes; prints what came back
  hold       one GET --path on a keep-alive connection (prints "status N" on stderr), create
             --ready-file, then wait for the peer to close, at most --max seconds; prints the
             time of the close (unix seconds, float) on stdout
  seq        the requests of stdin, one JSON object a line ({"method": "GET", "path": "/x",
             "headers": {"x-client-id": "tpp1"}, "body": "..."}; method defaults to GET), one
             after the other on one keep-alive connection, each sent once the previous answer
             is in; prints one JSON line per answer: {"status", "headers" (lower-case names;
             repeated ones joined with ", "), "body", "ms" (send to whole answer), "closed" (the
             answer ends the connection)}; a request that gets no answer within --max seconds
             prints {"error": ...} and ends the run (exit 1); exit 0 when every one was answered.
             --between CMD runs CMD with the shell once an answer is in and before the next
             request is sent (e.g. a change to the daemon that the next request must see)

Exit status: 0 the peer closed the connection, 3 it was still open when we gave up,
2 TLS handshake or connect failed, 1 other error. The last line on stderr says what happened
("closed after 1.234s", "open after 10.000s", "handshake failed: ...").
"""
import argparse
import http.client
import itertools
import json
import socket
import ssl
import subprocess
import sys
import time


def make_ctx(a):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if a.ca:
        ctx.load_verify_locations(a.ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if a.cert:
        ctx.load_cert_chain(a.cert, a.key)
    if a.tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def connect(a):
    raw = socket.create_connection((a.host, a.port), timeout=5)
    try:
        s = make_ctx(a).wrap_socket(raw, server_hostname=a.sni or a.host)
    except (ssl.SSLError, OSError) as e:
        print("handshake failed: %s" % e, file=sys.stderr)
        sys.exit(2)
    return s


def read_until_close(s, idle, deadline, out):
    """Returns True when the peer closed (EOF, reset or a TLS alert)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        s.settimeout(min(idle, left) if idle else left)
        try:
            data = s.recv(65536)
        except socket.timeout:
            return False
        except (ssl.SSLError, ConnectionError, OSError) as e:
            print("recv: %s" % e, file=sys.stderr)
            return True
        if not data:
            return True
        out.write(data)
        out.flush()


def mode_raw(a):
    s = connect(a)
    data = sys.stdin.buffer.read()
    t0 = time.monotonic()
    try:
        s.sendall(data)
    except (ssl.SSLError, OSError) as e:
        print("send: %s" % e, file=sys.stderr)
    closed = read_until_close(s, a.idle, t0 + a.max, sys.stdout.buffer)
    return report_close(closed, t0)


def send_paced(s, pieces, deadline, interval_ms, out):
    """Sends each piece, waiting interval_ms after it for a close or an answer (e.g. 408).
    True when the server closed (or an answer ended the connection) before the deadline."""
    for piece in pieces:
        if time.monotonic() >= deadline:
            return False
        try:
            s.sendall(piece)
        except (ssl.SSLError, OSError) as e:
            print("send: %s" % e, file=sys.stderr)
            return True
        if read_until_close(s, None, min(deadline, time.monotonic() + interval_ms / 1000.0), out):
            return True
    return False


def report_close(closed, t0):
    el = time.monotonic() - t0
    print(("closed after %.3fs" if closed else "open after %.3fs") % el, file=sys.stderr)
    return 0 if closed else 3


def mode_slowloris(a):
    s = connect(a)
    t0 = time.monotonic()
    deadline = t0 + a.max
    out = sys.stdout.buffer
    head = [b"GET / HTTP/1.1\r\n", b"Host: %s\r\n" % a.host.encode()]
    lines = (head[i] if i < len(head) else b"X-Slow-%d: %s\r\n" % (i, b"a" * 8)
             for i in itertools.count())
    closed = send_paced(s, lines, deadline, a.interval, out)
    if closed:
        # Drain whatever the server said before closing.
        read_until_close(s, 0.5, time.monotonic() + 1, out)
    return report_close(closed, t0)


def mode_trickle(a):
    s = connect(a)
    data = sys.stdin.buffer.read()
    end = data.find(b"\r\n\r\n")
    end = len(data) if end < 0 else end + 4
    t0 = time.monotonic()
    deadline = t0 + a.max
    out = sys.stdout.buffer
    pieces = [data[:end]] + [data[i:i + a.chunk] for i in range(end, len(data), a.chunk)]
    closed = send_paced(s, pieces, deadline, a.interval, out)
    if closed:
        read_until_close(s, 0.5, time.monotonic() + 1, out)
    else:
        closed = read_until_close(s, a.idle, deadline, out)
    return report_close(closed, t0)


def mode_hold(a):
    s = connect(a)
    conn = http.client.HTTPConnection(a.host, a.port)
    conn.sock = s
    hdrs = {"Host": a.sni or a.host}
    for h in a.header or []:
        k, v = h.split(":", 1)
        hdrs[k.strip()] = v.strip()
    try:
        conn.request("GET", a.path, headers=hdrs)
        r = conn.getresponse()
        r.read()
    except (OSError, http.client.HTTPException) as e:
        print("request failed: %s" % e, file=sys.stderr)
        return 1
    print("status %d" % r.status, file=sys.stderr)
    if r.status != 200 or r.getheader("Connection", "").lower() == "close":
        print("not held: status %d" % r.status, file=sys.stderr)
        return 1
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write("ready\n")
    t0 = time.monotonic()
    closed = read_until_close(s, None, t0 + a.max, sys.stderr.buffer)
    print("%.3f" % time.time())
    return report_close(closed, t0)


def mode_seq(a):
    s = connect(a)
    conn = http.client.HTTPConnection(a.host, a.port, timeout=a.max)
    conn.sock = s
    conn.auto_open = 0  # a closed connection must show, not be replaced by a plain TCP one
    s.settimeout(a.max)
    first = True
    for line in sys.stdin:
        if not line.strip():
            continue
        if not first and a.between:
            subprocess.run(a.between, shell=True, check=False)
        first = False
        rq = json.loads(line)
        hdrs = {"Host": a.sni or a.host}
        hdrs.update(rq.get("headers", {}))
        body = rq.get("body")
        t0 = time.monotonic()
        try:
            conn.request(rq.get("method", "GET"), rq["path"],
                         body=body.encode() if body is not None else None, headers=hdrs)
            r = conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as e:
            print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}), flush=True)
            return 1
        got = {}
        for k, v in r.getheaders():
            k = k.lower()
            got[k] = got[k] + ", " + v if k in got else v
        print(json.dumps({"status": r.status, "headers": got,
                          "body": data.decode("utf-8", "replace"),
                          "ms": round((time.monotonic() - t0) * 1000.0, 3),
                          "closed": bool(r.will_close)}), flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sni")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--ca")
    ap.add_argument("--tls12", action="store_true", help="at most TLS 1.2")
    ap.add_argument("--idle", type=float, default=2.0)
    ap.add_argument("--max", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=1000.0, help="ms (slowloris, trickle)")
    ap.add_argument("--chunk", type=int, default=1, help="body bytes per interval (trickle)")
    ap.add_argument("--path", default="/hold?client_id=x")
    ap.add_argument("--header", action="append", help="NAME: VALUE (hold)")
    ap.add_argument("--ready-file")
    ap.add_argument("--between", metavar="CMD", help="shell command between two requests (seq)")
    ap.add_argument("mode", choices=["raw", "slowloris", "trickle", "hold", "seq"])
    a = ap.parse_args()
    modes = {"raw": mode_raw, "slowloris": mode_slowloris, "trickle": mode_trickle,
             "hold": mode_hold, "seq": mode_seq}
    return modes[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
