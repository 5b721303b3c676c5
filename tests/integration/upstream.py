#!/usr/bin/env python3
"""A real upstream ("the bank's API") for psd2edge's integration tests and demo.

HTTP/1.1 with keep-alive (threaded, stdlib only), optionally TLS that requires a client
certificate signed by --client-ca (the gateway's QWAC). Every request is answered with a JSON
echo, and the same echo is appended as one line to --log when given:

  {"method": "POST", "path": "/x?y=1", "version": "HTTP/1.1",
   "headers": [["Host", "..."], ...],          # all of them, as received, in order
   "h": {"host": ["..."], ...},                 # the same, lowercased names
   "body_length": 12, "body_sha256": "...",
   "conn": 3, "conn_requests": 1,               # connection number, requests on it so far
   "peer": "127.0.0.1:50000",
   "upstream": "a",                             # --name, when given
   "client_cert_sha256": "...", "client_cert_subject": "CN=..."}   # TLS only

Special paths (query parameters):
  /slow?ms=N         wait N ms before answering
  /big?bytes=N       answer N bytes of text (Content-Length), not an echo
  /chunked?chunks=N  the echo, sent with Transfer-Encoding: chunked in N pieces
  /status?code=N     the echo with status N
  /close             the echo with "Connection: close", then close

What the tests control from outside (checked per request, after the request is read and logged):
  --mode-file FILE   absent or empty: answer as above; "hang": accept and read requests but
                     answer none until the file says otherwise; a status code such as "503":
                     answer every request with the echo and that status
  --accept-log FILE  one line per accepted TCP connection (count them: wc -l)

usage: upstream.py [--host H] [--port P] [--tls --cert C --key K --client-ca CA]
                   [--log FILE] [--ready-file FILE] [--name NAME] [--mode-file FILE]
                   [--accept-log FILE]
"""
import argparse
import hashlib
import http.server
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse

LOG_LOCK = threading.Lock()
CONN_LOCK = threading.Lock()
CONN_SEQ = [0]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "psd2edge-test-upstream"
    sys_version = ""
    timeout = 300

    def setup(self):
        if self.server.accept_log:
            with LOG_LOCK, open(self.server.accept_log, "a") as f:
                f.write("%s:%s\n" % self.client_address[:2])
        ctx = self.server.ssl_ctx
        if ctx is not None:
            self.request.settimeout(10)
            self.request = ctx.wrap_socket(self.request, server_side=True)
            self.request.settimeout(None)
        with CONN_LOCK:
            CONN_SEQ[0] += 1
            self.conn_id = CONN_SEQ[0]
        self.conn_requests = 0
        super().setup()

    def log_message(self, fmt, *args):  # quiet: tests read --log instead
        if self.server.verbose:
            sys.stderr.write("upstream: " + (fmt % args) + "\n")

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if te.lower() == "chunked":
            body = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("eof in chunk size")
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while True:  # trailers up to the blank line
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline(3)
        n = int(self.headers.get("Content-Length", "0") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def echo(self, body):
        headers = [[k, v] for k, v in self.headers.items()]
        h = {}
        for k, v in headers:
            h.setdefault(k.lower(), []).append(v)
        e = {
            "method": self.command,
            "path": self.path,
            "version": self.request_version,
            "headers": headers,
            "h": h,
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "conn": self.conn_id,
            "conn_requests": self.conn_requests,
            "peer": "%s:%s" % self.client_address[:2],
        }
        if self.server.name:
            e["upstream"] = self.server.name
        if isinstance(self.request, ssl.SSLSocket):
            der = self.request.getpeercert(binary_form=True)
            if der:
                e["client_cert_sha256"] = hashlib.sha256(der).hexdigest()
                subj = self.request.getpeercert().get("subject", ())
                e["client_cert_subject"] = ",".join(
                    "%s=%s" % kv for rdn in subj for kv in rdn)
        if self.server.log_path:
            with LOG_LOCK, open(self.server.log_path, "a") as f:
                f.write(json.dumps(e) + "\n")
        return e

    def send_body(self, status, body, ctype="application/json", close=False):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def mode(self):
        if not self.server.mode_file:
            return ""
        try:
            with open(self.server.mode_file) as f:
                return f.read().strip()
        except FileNotFoundError:
            return ""

    def handle_any(self):
        self.conn_requests += 1
        body = self.read_body()
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        path = url.path
        # The gateway may add a base path; match on the last segment.
        leaf = "/" + path.rstrip("/").rsplit("/", 1)[-1] if path else "/"
        e = self.echo(body)
        mode = self.mode()
        while mode == "hang":
            time.sleep(0.05)
            mode = self.mode()
        if mode.isdigit():
            self.send_body(int(mode), (json.dumps(e, indent=1) + "\n").encode())
            return
        if leaf == "/slow":
            time.sleep(int(q.get("ms", "1000")) / 1000.0)
        if leaf == "/big":
            n = int(q.get("bytes", "1048576"))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = (b"0123456789abcdef" * 4096)
            left = n
            while left > 0:
                part = chunk[:min(left, len(chunk))]
                self.wfile.write(part)
                left -= len(part)
            return
        out = (json.dumps(e, indent=1) + "\n").encode()
        if leaf == "/chunked":
            pieces = max(1, int(q.get("chunks", "3")))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            step = max(1, (len(out) + pieces - 1) // pieces)
            for i in range(0, len(out), step):
                part = out[i:i + step]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
                time.sleep(0.01)
            self.wfile.write(b"0\r\n\r\n")
            return
        status = int(q.get("code", "200")) if leaf == "/status" else 200
        self.send_body(status, out, close=(leaf == "/close"))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        if self.verbose:
            super().handle_error(request, client_address)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--client-ca", help="require a client certificate signed by this CA")
    ap.add_argument("--log", help="append each request's echo as a JSON line")
    ap.add_argument("--ready-file", help="created once listening")
    ap.add_argument("--name", help="put into every echo as \"upstream\"")
    ap.add_argument("--mode-file", help="hang or answer a fixed status while it says so")
    ap.add_argument("--accept-log", help="append a line per accepted connection")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()

    family = socket.AF_INET6 if ":" in a.host else socket.AF_INET
    Server.address_family = family
    srv = Server((a.host, a.port), Handler)
    srv.verbose = a.verbose
    srv.log_path = a.log
    srv.name = a.name
    srv.mode_file = a.mode_file
    srv.accept_log = a.accept_log
    srv.ssl_ctx = None
    if a.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(a.cert, a.key)
        if a.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(a.client_ca)
        srv.ssl_ctx = ctx
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write("%d\n" % os.getpid())
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
