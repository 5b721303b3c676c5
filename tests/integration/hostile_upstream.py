#!/usr/bin/env python3
"""An upstream that sends more than it was asked for, for test_upstream_leftovers.sh.

Plain HTTP/1.1 with keep-alive, one thread per connection, requests answered in order. Every
request is appended to --log as one JSON line: {"conn": N, "method": "GET", "path": "/x?m=2"}
(N counts connections from 1). The leaf of the path (its last segment) picks the answer; after
the ones marked "+ FAKE" the connection also carries FAKE, a complete response that nobody
asked for:

  /head-body        200, Content-Length and the body in the same write, whatever the method
                    (to a HEAD request the body is FAKE)
  /head-late-body   the same head, then FAKE 300 ms later in a second write
  /extra            200 "ok" (Content-Length: 2) + FAKE in the same write
  /no-content       204 + FAKE in the same write
  /not-modified     304 + FAKE in the same write
  anything else     200 "real conn=N path=PATH" (the request's own answer)

usage: hostile_upstream.py [--host H] [--port P] --log FILE [--ready-file FILE]
"""
import argparse
import json
import os
import socketserver
import threading
import time

FAKE = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED"

LOCK = threading.Lock()
CONN_SEQ = [0]


def read_request(rfile):
    """(method, path) of the next request, its body read and dropped; None at EOF."""
    line = rfile.readline(65537)
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    length = 0
    while True:
        h = rfile.readline(65537)
        if h in (b"\r\n", b"\n", b""):
            break
        name, _, value = h.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length:
        rfile.read(length)
    return method, path


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        with LOCK:
            CONN_SEQ[0] += 1
            conn = CONN_SEQ[0]
        while True:
            req = read_request(self.rfile)
            if req is None:
                return
            method, path = req
            with LOCK, open(self.server.log_path, "a") as f:
                f.write(json.dumps({"conn": conn, "method": method, "path": path}) + "\n")
            leaf = "/" + path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(FAKE)
            if leaf == "/head-body":
                self.wfile.write(head + FAKE)
            elif leaf == "/head-late-body":
                self.wfile.write(head)
                time.sleep(0.3)
                self.wfile.write(FAKE)
            elif leaf == "/extra":
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + FAKE)
            elif leaf == "/no-content":
                self.wfile.write(b"HTTP/1.1 204 No Content\r\n\r\n" + FAKE)
            elif leaf == "/not-modified":
                self.wfile.write(b"HTTP/1.1 304 Not Modified\r\n\r\n" + FAKE)
            else:
                body = b"real conn=%d path=%s" % (conn, path.encode())
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--log", required=True)
    ap.add_argument("--ready-file")
    a = ap.parse_args()
    srv = Server((a.host, a.port), Handler)
    srv.log_path = a.log
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write("%d\n" % os.getpid())
    srv.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
